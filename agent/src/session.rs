//! The agent's life: dial out to the broker, say hello, then pull work, run it
//! through the [`Executor`] as resources allow, report results in batches until
//! they are acknowledged, and leave on idle timeout, lifetime, SIGTERM or
//! the broker's word.
//!
//! Single-threaded (a current-thread runtime) on purpose: the cores belong to
//! the tasks. Processes are reaped on the executor's own thread.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use scalable_common::frame::{read_frame, write_frame};
use scalable_common::protocol::{
    AgentHello, AgentId, Assignment, AttemptEnd, AttemptId, AttemptResult, FromAgent, Hello,
    HelloReply, Started, ToAgent, MESSAGE_BYTES_MAX, PROTOCOL_VERSION,
};
use scalable_common::resources::Resources;
use scalable_common::tls;
use tokio::sync::mpsc;

use crate::cpuset::CpuPool;
use crate::event_log::EventLog;
use crate::executor::{ExecConfig, ExecEvent, Executor, Placement};
use crate::gpus::GpuPool;
use crate::limits::LimitMode;
use crate::log_event;
use crate::runtime::Runtime;
use crate::stage::Stage;

/// Results kept for a broker that is away, at most.
const UNACKED_RESULTS_MAX: usize = 1_000_000;
/// Reconnect backoff: the first wait, and the default cap (`--reconnect-max`).
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const RECONNECT_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(10);
/// Results per `Events` message at most, to stay well under the frame cap.
const RESULTS_PER_MESSAGE_MAX: usize = 2_000;
/// A queued task that has not fitted for this long stops smaller ones starting.
/// Long on purpose: best-fit packing often keeps a large task waiting a few
/// seconds (a 1 s hold cost 6% packing efficiency, 3 s about 5%); this bounds starvation
/// of a task prefetched behind a stream, the broker's reservation does the rest.
const HOLD_AFTER: Duration = Duration::from_secs(3);
/// SPEC §6: an agent exits within this long of SIGTERM. The drain's parts below
/// add up to well inside it (`drain_fits_in_the_sigterm_deadline`).
pub const SIGTERM_EXIT_MAX: Duration = Duration::from_secs(5);
/// SIGTERM → SIGKILL grace of the attempts a drain hands back.
const DRAIN_KILL_GRACE: Duration = Duration::from_secs(2);
/// From the start of a drain, how long the agent waits for its running attempts
/// to end and for the broker to acknowledge the last results; then it leaves
/// regardless (what is still unacknowledged the broker finds lost).
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(3);
/// How long the last `Leaving` may take to be acknowledged by the transport.
const LEAVE_FLUSH_WAIT_MAX: Duration = Duration::from_millis(300);
/// Never wait less than this for the broker's next word after a silence check
/// (a message already read waits to be handled; no busy loop).
const SILENCE_RECHECK_MIN: Duration = Duration::from_millis(5);
/// How long a result may wait to be sent with others.
const FLUSH_DELAY: Duration = Duration::from_millis(2);
/// Send at once when this many starts and results wait.
const FLUSH_EARLY_EVENTS: usize = 512;
/// Bytes of results per `Events` message, about; half the frame cap.
const MESSAGE_BYTES_BUDGET: usize = MESSAGE_BYTES_MAX / 2;

/// What the agent was told on its command line.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub broker: String,
    pub fingerprint: [u8; 32],
    pub token: String,
    pub name: String,
    pub hostname: String,
    pub resources: Resources,
    pub tags: Vec<String>,
    pub idle_timeout: Option<Duration>,
    pub lifetime: Option<Duration>,
    pub workdir: PathBuf,
    pub noop: bool,
    /// How long to keep trying to reach the broker before giving up.
    pub connect_timeout: Duration,
    /// The longest wait between reconnect tries (`--reconnect-max`); a restarted
    /// broker waits `heartbeat timeout + this` for agents to reclaim attempts.
    pub reconnect_max: Duration,
    pub orphan_guard: Option<std::sync::Arc<crate::orphan_guard::OrphanGuard>>,
    /// Kill a task above its memory request × this.
    pub memory_margin: f64,
    /// How memory limits are enforced (advertised as `limit_mode`).
    pub limits: LimitMode,
    /// Usable container runtimes, the one that runs tasks first.
    pub runtimes: Vec<Runtime>,
    /// GPU ids the agent hands out (`resources.gpus` of them).
    pub gpu_ids: Vec<String>,
    /// Cores to bind tasks to; `None`: tasks are not bound (see `cpuset`).
    pub cpu_binding: Option<CpuPool>,
    /// `--event-log`: one line per spawn, kill, result, ack, promotion (`event_log`).
    pub event_log: Option<Arc<EventLog>>,
    /// TEST HOOK (fault F13 of research/reliability.md), from
    /// `SCALABLE_TEST_DUPLICATE_RESULTS=1`: send every result twice, in two
    /// `Events` messages, so tests can check the broker counts it once. Never
    /// set it for real work: it doubles the result traffic.
    pub test_duplicate_results: bool,
}

/// The env var of the duplicate-delivery test hook (`test_duplicate_results`).
pub const TEST_DUPLICATE_RESULTS_ENV: &str = "SCALABLE_TEST_DUPLICATE_RESULTS";

/// How the agent ended, for the exit code.
#[derive(Debug)]
pub enum Exit {
    /// Left normally (idle, lifetime, drained, broker said so).
    Done(String),
    /// The broker refused us (token, version): exit 3.
    Refused(String),
    /// Could not reach the broker in time: exit 3.
    Unreachable(String),
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// An attempt that runs: what it took, and where its outputs are staged.
struct Held {
    resources: Resources,
    place: Placement,
    stage: Option<Stage>,
}

/// A result the broker has not acknowledged yet, and what its ack will need:
/// the stage to promote (counted) or discard (ignored).
struct Unacked {
    result: AttemptResult,
    stage: Option<Stage>,
}

/// Work the agent holds: queued assignments, what runs, what awaits an ack.
struct Work {
    free: Resources,
    /// Free GPU ids; as many as `free.gpus`.
    gpus: GpuPool,
    /// Free cores when tasks are bound; at least `free.cpus` of them.
    cpus: Option<CpuPool>,
    /// All the agent offers (what `free` is when nothing runs).
    capacity: Resources,
    queue: VecDeque<Assignment>,
    /// When each queued assignment arrived (for holding the agent for one that
    /// has waited too long, see `best_fit`).
    queued_at: HashMap<AttemptId, Instant>,
    running: HashMap<AttemptId, Held>,
    /// Results sent (or to send) and not yet acknowledged; resent on reconnect.
    unacked: HashMap<AttemptId, Unacked>,
    out_started: Vec<Started>,
    out_finished: Vec<AttemptResult>,
    /// Results of tasks killed by SIGTERM/SIGKILL from outside, held back for
    /// `EXTERNAL_KILL_GRACE`: when the agent itself is told to drain meanwhile,
    /// the signal was the pilot's teardown (scancel, preemption, node
    /// shutdown signals every process of the job at once), not the task's
    /// fault, and they are handed back as `Drained`.
    suspects: Vec<(AttemptResult, Instant)>,
    /// Set when the drain starts: an outside kill reaped after it is the
    /// same teardown.
    draining: bool,
    last_busy: Instant,
}

/// How long a task killed by an outside SIGTERM/SIGKILL waits to see whether
/// its agent is being torn down with it.
const EXTERNAL_KILL_GRACE: Duration = Duration::from_secs(1);

impl Work {
    fn idle(&self) -> bool {
        self.queue.is_empty() && self.running.is_empty()
    }

    /// Every attempt the agent still holds, for the hello after a reconnect:
    /// running, queued (assigned, not started) and finished but unacknowledged.
    /// The broker cancels those it no longer considers ours.
    fn held(&self) -> Vec<AttemptId> {
        let mut held: Vec<AttemptId> = self.running.keys().copied().collect();
        held.extend(self.queue.iter().map(|a| a.attempt));
        held.extend(self.unacked.keys().copied());
        held.sort_unstable();
        held.dedup();
        held
    }

    fn new(free: Resources, gpu_ids: Vec<String>, cpus: Option<CpuPool>) -> Work {
        Work {
            capacity: free.clone(),
            free,
            gpus: GpuPool::new(gpu_ids),
            cpus,
            queue: VecDeque::new(),
            queued_at: HashMap::new(),
            running: HashMap::new(),
            unacked: HashMap::new(),
            out_started: Vec::new(),
            out_finished: Vec::new(),
            suspects: Vec::new(),
            draining: false,
            last_busy: Instant::now(),
        }
    }

    fn finished(&mut self, mut r: AttemptResult) {
        if self.draining && matches!(r.end, AttemptEnd::Signalled { signal: 15 | 9 }) {
            // Killed from outside while we drain: the pilot's teardown.
            r.end = AttemptEnd::Drained;
        }
        let mut stage = None;
        if let Some(held) = self.running.remove(&r.attempt) {
            self.free.give(&held.resources);
            if let Some(ids) = held.place.gpus {
                self.gpus.give(ids);
            }
            if let (Some(pool), Some(cores)) = (&mut self.cpus, &held.place.cpus) {
                pool.give(cores);
            }
            stage = held.stage;
        }
        if self.unacked.len() < UNACKED_RESULTS_MAX {
            let result = r.clone();
            self.unacked.insert(r.attempt, Unacked { result, stage });
        }
        self.last_busy = Instant::now();
        if matches!(r.end, AttemptEnd::Signalled { signal: 15 | 9 }) {
            self.suspects
                .push((r, Instant::now() + EXTERNAL_KILL_GRACE));
            return;
        }
        self.out_finished.push(r);
    }

    /// Held-back results whose grace is over go out as they are.
    fn release_suspects(&mut self, now: Instant) {
        while let Some(i) = self.suspects.iter().position(|(_, due)| *due <= now) {
            let (r, _) = self.suspects.swap_remove(i);
            self.out_finished.push(r);
        }
    }

    /// The agent is draining: held-back outside kills were its teardown.
    fn suspects_drained(&mut self) {
        self.draining = true;
        for (mut r, _) in std::mem::take(&mut self.suspects) {
            r.end = AttemptEnd::Drained;
            if let Some(u) = self.unacked.get_mut(&r.attempt) {
                u.result.end = AttemptEnd::Drained;
            }
            self.out_finished.push(r);
        }
    }

    /// Starts queued assignments while any fits: each time the largest one that
    /// fits (best fit, queue order on ties), so small tasks fill the gaps large
    /// ones leave instead of taking the room a large queued task waits for.
    fn start_what_fits(&mut self, exec: &Executor, noop: bool) {
        if noop {
            self.complete_noop();
            return;
        }
        // A resent assignment of a running attempt (after a reconnect): its result
        // is coming; taking its resources, cores and GPUs again would leak them.
        let running = &self.running;
        self.queue.retain(|a| !running.contains_key(&a.attempt));
        let now = Instant::now();
        for a in &self.queue {
            self.queued_at.entry(a.attempt).or_insert(now);
        }
        while self.free.cpus > 0 {
            let Some(i) = self.best_fit() else { break };
            let a = self.queue.remove(i).expect("index from best_fit");
            self.queued_at.remove(&a.attempt);
            self.free.take(&a.resources);
            let place = self.place(&a.resources);
            exec.start_placed(&a, &place);
            let held = Held {
                stage: exec.stage_of(&a),
                resources: a.resources,
                place,
            };
            self.running.insert(a.attempt, held);
            self.last_busy = Instant::now();
        }
    }

    fn best_fit(&self) -> Option<usize> {
        // Anti-starvation on the agent: a queued task that has waited HOLD_AFTER
        // without fitting holds the agent, nothing else starts until it fits
        // (the broker's reservation is the same idea one level up).
        let held = self.queue.iter().any(|a| {
            !a.resources.fits_in(&self.free)
                && a.resources.fits_in(&self.capacity)
                && self
                    .queued_at
                    .get(&a.attempt)
                    .is_some_and(|t| t.elapsed() >= HOLD_AFTER)
        });
        if held {
            return None;
        }
        let size = |r: &Resources| (r.gpus, r.cpus, r.memory_bytes);
        let mut best: Option<usize> = None;
        for (i, a) in self.queue.iter().enumerate() {
            if !a.resources.fits_in(&self.free) {
                continue;
            }
            if best.is_none_or(|b| size(&a.resources) > size(&self.queue[b].resources)) {
                best = Some(i);
                if a.resources.cpus == self.free.cpus {
                    break; // a perfect fit of the cpus: nothing larger can fit
                }
            }
        }
        best
    }

    /// --noop: complete every queued assignment at once without spawning, to
    /// measure the broker alone.
    fn complete_noop(&mut self) {
        while let Some(a) = self.queue.pop_front() {
            let now = unix_us();
            self.out_started.push(Started {
                attempt: a.attempt,
                at_us: now,
            });
            self.finished(AttemptResult::bare(
                a.attempt,
                AttemptEnd::Exited { code: 0 },
                now,
                now,
            ));
        }
    }

    /// The task's own cores and GPUs out of the free-lists. `free` already had
    /// room, so the lists do too (they track the same counts).
    fn place(&mut self, req: &Resources) -> Placement {
        let gpus = if self.gpus.has_gpus() {
            let ids = self.gpus.take(req.gpus);
            debug_assert!(ids.is_some(), "gpu free-list out of step with free.gpus");
            Some(ids.unwrap_or_default())
        } else {
            None
        };
        let cpus = self.cpus.as_mut().and_then(|p| p.take(req.cpus));
        Placement { cpus, gpus }
    }

    fn unstarted_result(a: &Assignment, end: AttemptEnd) -> AttemptResult {
        let now = unix_us();
        AttemptResult::bare(a.attempt, end, 0, now)
    }

    /// The broker committed these results. A counted attempt's staged outputs
    /// are promoted before its result is forgotten (so a crash in between
    /// resends the result rather than losing the outputs); an ignored one's
    /// stage is thrown away. Acks for results no longer held (a duplicate ack)
    /// change nothing.
    fn acked(&mut self, counted: &[AttemptId], ignored: &[AttemptId], log: Option<&EventLog>) {
        for &id in counted {
            log_event!(log, "ack {id} counted");
            if let Some(u) = self.unacked.get(&id) {
                if let Some(stage) = &u.stage {
                    stage.promote(log);
                }
                self.unacked.remove(&id);
            }
        }
        for &id in ignored {
            log_event!(log, "ack {id} ignored");
            if let Some(u) = self.unacked.remove(&id) {
                if let Some(stage) = &u.stage {
                    stage.discard(log);
                }
            }
        }
    }

    /// Removes queued attempts named in `ids`, reporting them with `end`.
    fn drop_queued(&mut self, ids: &[AttemptId], end: &AttemptEnd) -> Vec<AttemptId> {
        let mut not_queued = Vec::new();
        for id in ids {
            if let Some(pos) = self.queue.iter().position(|a| a.attempt == *id) {
                let a = self.queue.remove(pos).expect("position found");
                self.queued_at.remove(&a.attempt);
                let r = Self::unstarted_result(&a, end.clone());
                self.finished(r);
            } else {
                not_queued.push(*id);
            }
        }
        not_queued
    }
}

/// Runs the agent until it leaves. Reconnects when the broker goes away.
pub async fn run(cfg: AgentConfig) -> Exit {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let exec = match Executor::new(
        ExecConfig {
            log_dir: cfg.workdir.clone(),
            tail_bytes: 64 << 10,
            output_bytes_max: 256 << 20,
            kill_grace: Duration::from_secs(5),
            orphan_guard: cfg.orphan_guard.clone(),
            memory_margin: cfg.memory_margin,
            limits: cfg.limits.clone(),
            runtime: cfg.runtimes.first().cloned(),
            event_log: cfg.event_log.clone(),
        },
        ev_tx,
    ) {
        Ok(e) => e,
        Err(e) => {
            return Exit::Done(format!(
                "cannot set up the executor in {}: {e}",
                cfg.workdir.display()
            ))
        }
    };
    let mut work = Work::new(
        cfg.resources.clone(),
        cfg.gpu_ids.clone(),
        cfg.cpu_binding.clone(),
    );
    let born = Instant::now();
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => return Exit::Done(format!("cannot install the SIGTERM handler: {e}")),
    };
    let backoff_min = RECONNECT_BACKOFF_MIN.min(cfg.reconnect_max);
    let mut backoff = backoff_min;
    let mut first_failure: Option<Instant> = None;
    let mut ever_connected = false;
    // The id of the last Welcome: sent back so the broker resumes this agent.
    let mut agent_id: Option<AgentId> = None;
    let exit = loop {
        let connected = tokio::select! {
            c = connect(&cfg, &work, born, agent_id) => c,
            _ = sigterm.recv() => break Exit::Done("SIGTERM while connecting".into()),
        };
        let conn = match connected {
            Ok(c) => c,
            Err(ConnectError::Refused(m)) => break Exit::Refused(m),
            Err(ConnectError::Retry(m)) => {
                let since = *first_failure.get_or_insert_with(Instant::now);
                if since.elapsed() > cfg.connect_timeout {
                    break Exit::Unreachable(m);
                }
                if !ever_connected {
                    tracing::info!("{m}; retrying in {backoff:?}");
                } else {
                    tracing::warn!("{m}; retrying in {backoff:?}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = sigterm.recv() => break Exit::Done("SIGTERM while disconnected".into()),
                }
                backoff = (backoff * 2).min(cfg.reconnect_max);
                // Keep collecting results of running tasks while away.
                while let Ok(ev) = ev_rx.try_recv() {
                    apply_exec_event(&mut work, ev);
                }
                continue;
            }
        };
        ever_connected = true;
        first_failure = None;
        backoff = backoff_min;
        agent_id = Some(conn.agent_id);
        match serve(&cfg, &exec, &mut work, conn, &mut ev_rx, &mut sigterm, born).await {
            Served::Leave(why) => break Exit::Done(why),
            Served::Lost(why) => {
                tracing::warn!("lost the broker: {why}; reconnecting");
                // Results go out again after reconnecting; the broker dedupes.
                work.out_finished = work.unacked.values().map(|u| u.result.clone()).collect();
                continue;
            }
        }
    };
    exec.kill_all_now();
    exit
}

fn apply_exec_event(work: &mut Work, ev: ExecEvent) {
    match ev {
        ExecEvent::Started(s) => work.out_started.push(s),
        ExecEvent::Finished(r) => work.finished(r),
    }
}

enum ConnectError {
    Refused(String),
    Retry(String),
}

struct Conn {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    heartbeat: Duration,
    /// The broker is lost after this long without a message (`None`: no limit).
    silence_max: Option<Duration>,
    agent_id: AgentId,
    _endpoint: quinn::Endpoint,
}

async fn connect(
    cfg: &AgentConfig,
    work: &Work,
    born: Instant,
    resume_agent: Option<AgentId>,
) -> Result<Conn, ConnectError> {
    let addr = tokio::net::lookup_host(&cfg.broker)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            ConnectError::Retry(format!("cannot resolve broker address {}", cfg.broker))
        })?;
    let endpoint = tls::client_endpoint(&addr).map_err(|e| ConnectError::Retry(e.to_string()))?;
    let conn = tls::connect(&endpoint, &cfg.broker, cfg.fingerprint)
        .await
        .map_err(|e| {
            let m = e.to_string();
            if m.contains("fingerprint") || m.contains("protocol version") {
                ConnectError::Refused(m)
            } else {
                ConnectError::Retry(m)
            }
        })?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| ConnectError::Retry(format!("broker at {}: {e}", cfg.broker)))?;
    let lifetime_ms = cfg
        .lifetime
        .map(|l| l.saturating_sub(born.elapsed()).as_millis() as u64);
    let held = work.held();
    let hello = Hello::Agent(AgentHello {
        protocol: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        token: cfg.token.clone(),
        name: cfg.name.clone(),
        hostname: cfg.hostname.clone(),
        resources: cfg.resources.clone(),
        tags: cfg.tags.clone(),
        runtimes: cfg
            .runtimes
            .iter()
            .map(|r| r.kind.name().to_string())
            .collect(),
        limit_mode: cfg.limits.name().to_string(),
        lifetime_ms,
        held_attempts: held,
        pilot_id: std::env::var("SCALABLE_PILOT_ID").ok(),
        resume_agent,
    });
    write_frame(&mut send, &hello)
        .await
        .map_err(|e| ConnectError::Retry(format!("broker at {}: {e}", cfg.broker)))?;
    match read_frame::<_, HelloReply>(&mut recv, 64 << 10).await {
        Ok(Some(HelloReply::Welcome {
            agent_id,
            heartbeat_interval_ms,
            heartbeat_timeout_ms,
        })) => {
            match resume_agent {
                Some(old) if old != agent_id => tracing::info!(
                    "connected to {} as agent {agent_id} (was {old}: not resumed)",
                    cfg.broker
                ),
                _ => tracing::info!("connected to {} as agent {agent_id}", cfg.broker),
            }
            Ok(Conn {
                conn,
                send,
                recv,
                agent_id,
                heartbeat: Duration::from_millis(heartbeat_interval_ms.clamp(100, 60_000)),
                silence_max: (heartbeat_timeout_ms > 0)
                    .then(|| Duration::from_millis(heartbeat_timeout_ms)),
                _endpoint: endpoint,
            })
        }
        Ok(Some(HelloReply::Refused { reason })) => Err(ConnectError::Refused(format!(
            "broker at {} refused this agent: {reason}",
            cfg.broker
        ))),
        Ok(None) => Err(ConnectError::Retry(format!(
            "broker at {} closed the connection during the handshake",
            cfg.broker
        ))),
        Err(e) => Err(ConnectError::Retry(format!(
            "broker at {}: {e}",
            cfg.broker
        ))),
    }
}

enum Served {
    Leave(String),
    Lost(String),
}

/// What to do when the silence timer fires (heartbeats both ways: the broker
/// sends one every interval, so silence means it is gone or cut off).
#[derive(Debug, PartialEq, Eq)]
enum Silence {
    /// Nothing from the broker for `silence_max`: the connection is lost.
    Lost(Duration),
    /// Check again at this instant.
    RecheckAt(tokio::time::Instant),
    /// The timer fired far too late: the agent itself was stalled (SIGSTOP,
    /// suspend, swap), so the broker's silence proves nothing. Like a stalled
    /// broker (reliability rule 3.6), start a fresh window from now.
    Stalled,
}

/// Pure: `due` is when the timer was set to fire, `now` when it did, `pending`
/// whether a message from the broker is already waiting to be handled.
fn silence_check(
    last_heard: tokio::time::Instant,
    due: tokio::time::Instant,
    now: tokio::time::Instant,
    silence_max: Duration,
    pending: bool,
) -> Silence {
    if now.saturating_duration_since(due) > silence_max / 2 {
        return Silence::Stalled;
    }
    let deadline = last_heard + silence_max;
    if now >= deadline && !pending {
        return Silence::Lost(now - last_heard);
    }
    Silence::RecheckAt(deadline.max(now + SILENCE_RECHECK_MIN))
}

async fn serve(
    cfg: &AgentConfig,
    exec: &Executor,
    work: &mut Work,
    c: Conn,
    ev_rx: &mut mpsc::UnboundedReceiver<ExecEvent>,
    sigterm: &mut tokio::signal::unix::Signal,
    born: Instant,
) -> Served {
    let Conn {
        conn,
        mut send,
        mut recv,
        heartbeat,
        silence_max,
        ..
    } = c;
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Result<ToAgent, String>>();
    // Reading on its own task keeps a half-read frame safe from `select!` cancellation.
    let reader = tokio::spawn(async move {
        loop {
            match read_frame::<_, ToAgent>(&mut recv, MESSAGE_BYTES_MAX).await {
                Ok(Some(m)) => {
                    if in_tx.send(Ok(m)).is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    let _ = in_tx.send(Err("the broker closed the connection".into()));
                    break;
                }
                Err(e) => {
                    let _ = in_tx.send(Err(e.to_string()));
                    break;
                }
            }
        }
    });
    let mut hb = tokio::time::interval(heartbeat);
    hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining: Option<String> = None;
    let mut flush_due: Option<tokio::time::Instant> = None;
    let mut drain_started: Option<Instant> = None;
    // Wakes the loop when the drain's time is up, even if nothing else happens.
    let mut drain_due: Option<tokio::time::Instant> = None;
    let mut leaving_told = false;
    let mut last_heard = tokio::time::Instant::now();
    let mut silence_due = last_heard + silence_max.unwrap_or(Duration::ZERO);
    let silence = tokio::time::sleep_until(silence_due);
    tokio::pin!(silence);
    let outcome = loop {
        tokio::select! {
            biased;
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { break Served::Leave("executor stopped".into()) };
                apply_exec_event(work, ev);
                while let Ok(ev) = ev_rx.try_recv() {
                    apply_exec_event(work, ev);
                }
                if draining.is_none() {
                    work.start_what_fits(exec, cfg.noop);
                }
            }
            msg = in_rx.recv() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => break Served::Lost(e),
                    None => break Served::Lost("connection reader stopped".into()),
                };
                last_heard = tokio::time::Instant::now();
                match msg {
                    ToAgent::Assign(list) => {
                        if draining.is_some() {
                            let ids: Vec<AttemptId> = list.iter().map(|a| a.attempt).collect();
                            work.queue.extend(list);
                            work.drop_queued(&ids, &AttemptEnd::Drained);
                        } else {
                            work.queue.extend(list);
                            work.start_what_fits(exec, cfg.noop);
                        }
                    }
                    ToAgent::Ack { counted, ignored } => {
                        work.acked(&counted, &ignored, cfg.event_log.as_deref());
                    }
                    ToAgent::Heartbeat => {}
                    ToAgent::Cancel(ids) => {
                        for id in work.drop_queued(&ids, &AttemptEnd::Cancelled) {
                            if work.running.contains_key(&id) {
                                exec.stop(id, AttemptEnd::Cancelled);
                            }
                        }
                    }
                    ToAgent::Return(ids) => {
                        work.drop_queued(&ids, &AttemptEnd::Returned);
                    }
                    ToAgent::Shutdown { reason } => {
                        start_drain(work, exec, &mut draining, format!("broker asked: {reason}"));
                    }
                }
            }
            _ = hb.tick() => {
                let msg = FromAgent::Heartbeat {
                    running: work.running.len() as u32,
                    queued: work.queue.len() as u32,
                };
                if let Err(e) = write_frame(&mut send, &msg).await {
                    break Served::Lost(e.to_string());
                }
                if draining.is_none() {
                    if let Some(limit) = cfg.idle_timeout {
                        if work.idle() && work.last_busy.elapsed() >= limit {
                            start_drain(work, exec, &mut draining, format!("idle for {limit:?}"));
                        }
                    }
                    if let Some(life) = cfg.lifetime {
                        if born.elapsed() >= life {
                            start_drain(work, exec, &mut draining, "lifetime reached".into());
                        }
                    }
                }
            }
            _ = sigterm.recv() => {
                start_drain(work, exec, &mut draining, "SIGTERM".into());
            }
            _ = sleep_until_due(flush_due) => {}
            _ = sleep_until_due(drain_due) => {}
            _ = &mut silence, if silence_max.is_some() => {
                let limit = silence_max.unwrap_or_default();
                // Let the connection's tasks hand over what already arrived.
                tokio::task::yield_now().await;
                let now = tokio::time::Instant::now();
                match silence_check(last_heard, silence_due, now, limit, !in_rx.is_empty()) {
                    Silence::Lost(quiet) => {
                        break Served::Lost(format!(
                            "broker silent for {:.1}s (limit {limit:?})",
                            quiet.as_secs_f64()
                        ));
                    }
                    Silence::Stalled => {
                        tracing::warn!(
                            "the agent was stalled for {:?}; giving the broker a fresh {limit:?}",
                            now - silence_due
                        );
                        last_heard = now;
                        silence_due = now + limit;
                    }
                    Silence::RecheckAt(at) => silence_due = at,
                }
                silence.as_mut().reset(silence_due);
            }
        }
        // Coalesce: results go out at most FLUSH_DELAY after the first of them, or
        // at once when many wait or the agent is leaving. The broker's prefetched
        // queue covers the delay, and fewer, larger messages save both sides cpu.
        work.release_suspects(Instant::now());
        let pending = work.out_started.len() + work.out_finished.len();
        if pending == 0 {
            // Wake for the first held-back result, if any.
            flush_due = work
                .suspects
                .iter()
                .map(|(_, due)| tokio::time::Instant::from_std(*due))
                .min();
        }
        if pending > 0 {
            let due = *flush_due.get_or_insert_with(|| tokio::time::Instant::now() + FLUSH_DELAY);
            if pending >= FLUSH_EARLY_EVENTS
                || draining.is_some()
                || tokio::time::Instant::now() >= due
            {
                let log = cfg.event_log.as_deref();
                if let Err(e) = flush(&mut send, work, log, cfg.test_duplicate_results).await {
                    break Served::Lost(e);
                }
                flush_due = None;
            }
        }
        if let Some(why) = &draining {
            // Tell the broker at once so it assigns nothing more (SPEC §6 drain).
            let started = *drain_started.get_or_insert_with(|| {
                leaving_told = false;
                drain_due = Some(tokio::time::Instant::now() + DRAIN_WAIT_MAX);
                Instant::now()
            });
            if !leaving_told {
                let msg = FromAgent::Leaving {
                    reason: why.clone(),
                };
                if let Err(e) = write_frame(&mut send, &msg).await {
                    break Served::Lost(e.to_string());
                }
                leaving_told = true;
            }
            let done = work.running.is_empty() && work.unacked.is_empty();
            if done || started.elapsed() >= DRAIN_WAIT_MAX {
                if !work.running.is_empty() {
                    tracing::warn!(
                        "{} attempts still running after {DRAIN_WAIT_MAX:?} of draining; killing them",
                        work.running.len()
                    );
                }
                break Served::Leave(why.clone());
            }
        }
    };
    if let Served::Leave(why) = &outcome {
        let _ = write_frame(
            &mut send,
            &FromAgent::Leaving {
                reason: why.clone(),
            },
        )
        .await;
        let _ = send.finish();
        let _ = tokio::time::timeout(LEAVE_FLUSH_WAIT_MAX, send.stopped()).await;
        conn.close(0u32.into(), b"agent leaving");
    }
    reader.abort();
    match (outcome, draining) {
        // A draining agent does not reconnect: it was leaving anyway, and the
        // SIGTERM deadline does not wait for a broker to come back.
        (Served::Lost(e), Some(why)) => {
            Served::Leave(format!("{why} (lost the broker while draining: {e})"))
        }
        (outcome, _) => outcome,
    }
}

/// Resolves at `due`, or never when nothing waits to be flushed.
async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Drain (SPEC §6): take nothing new, hand queued and running attempts back.
fn start_drain(work: &mut Work, exec: &Executor, draining: &mut Option<String>, why: String) {
    if draining.is_some() {
        return;
    }
    tracing::info!("draining: {why}");
    work.suspects_drained();
    let queued: Vec<AttemptId> = work.queue.iter().map(|a| a.attempt).collect();
    work.drop_queued(&queued, &AttemptEnd::Drained);
    exec.stop_all_within(AttemptEnd::Drained, DRAIN_KILL_GRACE);
    *draining = Some(why);
}

/// Sends whatever started/finished since the last flush, in bounded messages.
/// `duplicate`: the F13 test hook, every result goes out a second time in its
/// own `Events` message right after the first.
async fn flush(
    send: &mut quinn::SendStream,
    work: &mut Work,
    log: Option<&EventLog>,
    duplicate: bool,
) -> Result<(), String> {
    while !work.out_started.is_empty() || !work.out_finished.is_empty() {
        // Bounded by count and by bytes (log tails), far below the frame cap.
        let mut n = 0;
        let mut bytes = 0;
        while n < work.out_finished.len()
            && n < RESULTS_PER_MESSAGE_MAX
            && bytes < MESSAGE_BYTES_BUDGET
        {
            let r = &work.out_finished[n];
            bytes += 256 + r.stdout_tail.len() + r.stderr_tail.len();
            n += 1;
        }
        let finished: Vec<AttemptResult> = work.out_finished.drain(..n).collect();
        if log.is_some() {
            for r in &finished {
                log_event!(log, "result {} {}", r.attempt, r.end.class());
            }
        }
        let started = std::mem::take(&mut work.out_started);
        let free = work.free.clone();
        let again = (duplicate && !finished.is_empty()).then(|| FromAgent::Events {
            started: Vec::new(),
            finished: finished.clone(),
            free: free.clone(),
        });
        write_frame(
            send,
            &FromAgent::Events {
                started,
                finished,
                free,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        if let Some(msg) = again {
            if let FromAgent::Events { finished, .. } = &msg {
                for r in finished {
                    log_event!(log, "result {} {}", r.attempt, r.end.class());
                }
            }
            write_frame(send, &msg).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn assignment(attempt: AttemptId, resources: Resources, argv: &[&str]) -> Assignment {
        Assignment {
            attempt,
            task: attempt,
            run: 1,
            attempt_number: 1,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            cwd: String::new(),
            resources,
            walltime_ms: None,
            outputs: Vec::new(),
            container: None,
            inputs: Vec::new(),
        }
    }

    /// Runs everything queued in `work` to the end, as the session loop does;
    /// returns each attempt's stdout.
    fn drain(
        work: &mut Work,
        exec: &Executor,
        rx: &mut mpsc::UnboundedReceiver<ExecEvent>,
    ) -> HashMap<AttemptId, String> {
        let mut out = HashMap::new();
        work.start_what_fits(exec, false);
        let until = Instant::now() + Duration::from_secs(30);
        while !work.idle() {
            assert!(Instant::now() < until, "tasks did not finish");
            match rx.try_recv() {
                Ok(ev) => {
                    if let ExecEvent::Finished(r) = &ev {
                        assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{r:?}");
                        out.insert(r.attempt, String::from_utf8_lossy(&r.stdout_tail).into());
                    }
                    apply_exec_event(work, ev);
                    work.start_what_fits(exec, false);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        out
    }

    /// Rule 3.7: a counted attempt's staged output is renamed into place, an
    /// ignored (stale) attempt's is thrown away and never touches the final place.
    #[test]
    fn counted_ack_promotes_and_ignored_ack_discards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = tempfile::tempdir().expect("tempdir");
        let log_path = logs.path().join("events.log");
        let log = EventLog::open(&log_path).expect("log");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let exec = Executor::new(ExecConfig::new(logs.path()), tx).expect("executor");
        let mut work = Work::new(Resources::cpus(2), Vec::new(), None);
        let write = [
            "sh",
            "-c",
            "mkdir -p \"$SCALABLE_STAGE_DIR/out\" && echo $SCALABLE_ATTEMPT_ID > \"$SCALABLE_STAGE_DIR/out/r.txt\"",
        ];
        for attempt in [1, 2] {
            let mut a = assignment(attempt, Resources::cpus(1), &write);
            a.cwd = dir.path().to_string_lossy().into_owned();
            a.outputs = vec!["out/r.txt".into()];
            work.queue.push_back(a);
        }
        drain(&mut work, &exec, &mut rx);
        assert_eq!(work.unacked.len(), 2);
        let final_path = dir.path().join("out/r.txt");
        assert!(!final_path.exists(), "nothing promoted before the ack");
        work.acked(&[2], &[1], Some(&log));
        assert!(work.unacked.is_empty());
        assert_eq!(
            std::fs::read_to_string(&final_path).expect("promoted"),
            "2\n"
        );
        let stages = dir.path().join(".scalable-stage");
        assert_eq!(
            std::fs::read_dir(&stages).expect("dir").count(),
            0,
            "stages removed"
        );
        // A duplicate ack is a no-op.
        work.acked(&[2], &[1], None);
        assert_eq!(
            std::fs::read_to_string(&log_path).expect("log"),
            format!(
                "ack 2 counted\npromote 2 {}\nack 1 ignored\ndiscard 1\n",
                final_path.display()
            )
        );
    }

    /// Acceptance: a fake `nvidia-smi` on PATH drives detection, and tasks that
    /// run at once get distinct `CUDA_VISIBLE_DEVICES`.
    #[test]
    fn fake_nvidia_smi_gives_tasks_distinct_devices() {
        let bin = tempfile::tempdir().expect("tempdir");
        let smi = bin.path().join("nvidia-smi");
        std::fs::write(
            &smi,
            "#!/bin/sh\necho '0, GPU-aaaa'\necho '1, GPU-bbbb'\necho '2, GPU-cccc'\n",
        )
        .expect("write");
        std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let gpus = crate::gpus::detect(
            crate::gpus::GpuFlag::Auto,
            None,
            Some(bin.path().as_os_str()),
        );
        assert_eq!(gpus.ids, vec!["0", "1", "2"], "{gpus:?}");

        let logs = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let exec = Executor::new(ExecConfig::new(logs.path()), tx).expect("executor");
        let free = Resources {
            cpus: 8,
            memory_bytes: 1 << 30,
            gpus: gpus.ids.len() as u32,
            custom: Vec::new(),
        };
        let mut work = Work::new(free, gpus.ids, None);
        let gpu = |n: u32| Resources {
            gpus: n,
            ..Resources::cpus(1)
        };
        // Three at once (2 + 1 devices), then one more when the first ends.
        let long = ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES; sleep 0.5"];
        work.queue.extend([
            assignment(1, gpu(2), &long),
            assignment(2, gpu(1), &long),
            assignment(3, gpu(1), &["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"]),
            assignment(4, gpu(0), &["sh", "-c", "echo \"[$CUDA_VISIBLE_DEVICES]\""]),
        ]);
        let out = drain(&mut work, &exec, &mut rx);
        let first: Vec<&str> = out[&1].trim().split(',').collect();
        let second = out[&2].trim();
        assert_eq!(first.len(), 2, "{out:?}");
        assert!(!first.contains(&second), "overlapping devices: {out:?}");
        let mut all: Vec<&str> = first.clone();
        all.push(second);
        all.sort();
        assert_eq!(all, vec!["0", "1", "2"], "{out:?}");
        // Task 3 waited for a device and got one of the freed ones.
        assert!(["0", "1", "2"].contains(&out[&3].trim()), "{out:?}");
        assert_eq!(out[&4], "[]\n", "a task without GPUs sees none");
        assert_eq!(work.gpus.free(), 3, "every device came back");
        assert_eq!(work.free.gpus, 3);
    }

    /// SPEC §6 / F12: everything a drain may wait for, one after the other,
    /// still ends well inside the SIGTERM deadline.
    #[test]
    fn drain_fits_in_the_sigterm_deadline() {
        assert!(
            DRAIN_KILL_GRACE < DRAIN_WAIT_MAX,
            "tasks are killed before the wait ends"
        );
        let worst = DRAIN_WAIT_MAX + LEAVE_FLUSH_WAIT_MAX + crate::executor::KILL_ALL_WAIT_MAX;
        assert!(
            worst + Duration::from_millis(500) <= SIGTERM_EXIT_MAX,
            "{worst:?} leaves too little of {SIGTERM_EXIT_MAX:?}"
        );
    }

    /// A drained task that ignores SIGTERM is handed back as Drained within the
    /// drain's grace, not the executor's usual one.
    #[test]
    fn drain_hands_back_a_stubborn_task_within_its_grace() {
        let logs = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut cfg = ExecConfig::new(logs.path());
        cfg.kill_grace = Duration::from_secs(60);
        let exec = Executor::new(cfg, tx).expect("executor");
        let mut work = Work::new(Resources::cpus(1), Vec::new(), None);
        let stubborn = ["sh", "-c", "trap '' TERM; echo up; sleep 30"];
        work.queue
            .push_back(assignment(1, Resources::cpus(1), &stubborn));
        work.queue
            .push_back(assignment(2, Resources::cpus(1), &["true"]));
        work.start_what_fits(&exec, false);
        // Wait until the shell has installed its trap.
        let until = Instant::now() + Duration::from_secs(30);
        while !matches!(rx.try_recv(), Ok(ExecEvent::Started(_))) {
            assert!(Instant::now() < until, "not started");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut draining = None;
        let t0 = Instant::now();
        start_drain(&mut work, &exec, &mut draining, "SIGTERM".into());
        assert_eq!(
            work.unacked[&2].result.end,
            AttemptEnd::Drained,
            "queued: handed back"
        );
        while !work.running.is_empty() {
            assert!(
                t0.elapsed() < DRAIN_WAIT_MAX,
                "still running after the drain's wait"
            );
            match rx.try_recv() {
                Ok(ev) => apply_exec_event(&mut work, ev),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert!(
            t0.elapsed() >= DRAIN_KILL_GRACE / 2,
            "it did ignore SIGTERM"
        );
        assert_eq!(work.unacked[&1].result.end, AttemptEnd::Drained);
    }

    #[test]
    fn silence_check_decides_lost_recheck_or_stalled() {
        let t0 = tokio::time::Instant::now();
        let max = Duration::from_secs(4);
        let s = Duration::from_secs;
        // Heard at t0, timer due at t0+4 fires on time: lost.
        assert_eq!(
            silence_check(t0, t0 + s(4), t0 + s(4), max, false),
            Silence::Lost(s(4))
        );
        // ... unless a message is already waiting: look again very soon.
        assert_eq!(
            silence_check(t0, t0 + s(4), t0 + s(4), max, true),
            Silence::RecheckAt(t0 + s(4) + SILENCE_RECHECK_MIN)
        );
        // Heard since: wait until that message is `max` old.
        assert_eq!(
            silence_check(t0 + s(3), t0 + s(4), t0 + s(4), max, false),
            Silence::RecheckAt(t0 + s(7))
        );
        // A little late (a loaded machine) still counts.
        let late = t0 + s(4) + Duration::from_millis(300);
        assert_eq!(
            silence_check(t0, t0 + s(4), late, max, false),
            Silence::Lost(late - t0)
        );
        // Fired long after it was due: the agent was stopped, not the broker.
        assert_eq!(
            silence_check(t0, t0 + s(4), t0 + s(30), max, false),
            Silence::Stalled
        );
    }

    /// A reconnecting agent claims everything it holds: running, queued and
    /// finished-but-unacknowledged attempts, each once.
    #[test]
    fn held_lists_running_queued_and_unacked() {
        let logs = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let exec = Executor::new(ExecConfig::new(logs.path()), tx).expect("executor");
        let mut work = Work::new(Resources::cpus(1), Vec::new(), None);
        work.queue
            .push_back(assignment(5, Resources::cpus(1), &["true"]));
        drain(&mut work, &exec, &mut rx);
        work.queue
            .push_back(assignment(3, Resources::cpus(1), &["sleep", "30"]));
        work.queue
            .push_back(assignment(9, Resources::cpus(1), &["true"]));
        work.start_what_fits(&exec, false);
        assert_eq!(work.running.len(), 1, "one cpu: 3 runs, 9 waits");
        assert_eq!(work.held(), vec![3, 5, 9]);
        exec.kill_all_now();
    }

    /// Regression guard: a resent assignment of a running attempt must not take
    /// its GPU (or resources) a second time.
    #[test]
    fn resent_running_assignment_takes_nothing_twice() {
        let logs = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let exec = Executor::new(ExecConfig::new(logs.path()), tx).expect("executor");
        let free = Resources {
            cpus: 2,
            memory_bytes: 1 << 30,
            gpus: 2,
            custom: Vec::new(),
        };
        let mut work = Work::new(free, vec!["0".into(), "1".into()], None);
        let a = assignment(
            1,
            Resources {
                gpus: 1,
                ..Resources::cpus(1)
            },
            &["sleep", "0.3"],
        );
        work.queue.push_back(a.clone());
        work.start_what_fits(&exec, false);
        work.queue.push_back(a);
        drain(&mut work, &exec, &mut rx);
        assert_eq!(
            (work.free.cpus, work.free.gpus, work.gpus.free()),
            (2, 2, 2)
        );
    }

    #[test]
    fn concurrent_tasks_get_distinct_cores() {
        let own = crate::cpuset::own_cpus().expect("mask");
        if own.len() < 2 {
            // One core: nothing to tell apart, and the agent would not bind.
            assert!(CpuPool::plan(&own, 1).is_err());
            return;
        }
        let logs = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let exec = Executor::new(ExecConfig::new(logs.path()), tx).expect("executor");
        let cpus = own.len() as u32;
        let pool = CpuPool::plan(&own, cpus).expect("binds");
        let free = Resources {
            cpus,
            memory_bytes: 1 << 30,
            ..Default::default()
        };
        let mut work = Work::new(free, Vec::new(), Some(pool));
        let show = [
            "sh",
            "-c",
            "echo $SCALABLE_CPUS $SCALABLE_CPU_LIST $(grep Cpus_allowed_list /proc/$$/status | cut -f2); sleep 0.3",
        ];
        work.queue
            .extend((1..=cpus as u64).map(|i| assignment(i, Resources::cpus(1), &show)));
        let out = drain(&mut work, &exec, &mut rx);
        let mut cores: Vec<String> = out
            .values()
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(f.len(), 3, "{line}");
                assert_eq!(f[0], "1");
                assert_eq!(f[1], f[2], "the kernel mask is the advertised list");
                f[1].to_string()
            })
            .collect();
        cores.sort();
        cores.dedup();
        assert_eq!(cores.len(), own.len(), "distinct cores: {out:?}");
        assert_eq!(work.cpus.as_ref().map(CpuPool::free), Some(own.len()));
    }

    #[test]
    fn an_outside_kill_waits_to_see_whether_it_was_the_pilots_teardown() {
        let bare = |a, end| AttemptResult::bare(a, end, 1, 2);
        let mut work = Work::new(Resources::cpus(2), Vec::new(), None);
        work.finished(bare(1, AttemptEnd::Signalled { signal: 15 }));
        work.finished(bare(2, AttemptEnd::Exited { code: 3 }));
        assert_eq!(work.out_finished.len(), 1, "the exit goes out at once");
        work.release_suspects(Instant::now());
        assert_eq!(work.out_finished.len(), 1, "the SIGTERM waits");
        // The agent is told to drain within the grace: a teardown, not a failure.
        work.suspects_drained();
        assert_eq!(work.out_finished[1].end, AttemptEnd::Drained);
        assert_eq!(work.unacked[&1].result.end, AttemptEnd::Drained);
        // Reaped after the drain began: the same teardown.
        work.finished(bare(3, AttemptEnd::Signalled { signal: 15 }));
        assert_eq!(work.out_finished[2].end, AttemptEnd::Drained);
        // Without a drain, it goes out as it was once the grace is over.
        let mut fresh = Work::new(Resources::cpus(1), Vec::new(), None);
        fresh.finished(bare(4, AttemptEnd::Signalled { signal: 9 }));
        fresh.release_suspects(Instant::now() + EXTERNAL_KILL_GRACE);
        assert_eq!(
            fresh.out_finished[0].end,
            AttemptEnd::Signalled { signal: 9 }
        );
    }
}
