//! The event loop of one connection: results from the executor, messages from
//! the broker, heartbeats, the silence timer, SIGTERM, and after each wake the
//! batching of results and the progress of a drain.
//!
//! Owns: the loop and the reader task of one connection, and `Loop`, its state.
//! Each wake-up has its own function (one per message kind of the broker); the
//! `select!` in [`serve`] only routes. It must not block (one thread serves
//! everything) and must not lose a result: what is unacknowledged when the
//! connection goes is resent after the reconnect.

use std::time::{Duration, Instant};

use scalable_common::frame::{read_frame, write_frame};
use scalable_common::protocol::{
    Assignment, AttemptEnd, AttemptId, FromAgent, ToAgent, MESSAGE_BYTES_MAX,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::batch::{flush, flush_delay, FLUSH_EARLY_EVENTS};
use super::connect::Conn;
use super::drain::{start_drain, DRAIN_WAIT_MAX, LEAVE_FLUSH_WAIT_MAX};
use super::silence::{silence_check, Silence};
use super::stage_flow::{StageFlow, StagingEvent};
use super::work::Work;
use super::AgentConfig;
use crate::executor::{ExecEvent, Executor};

/// How one connection ended.
pub(super) enum Served {
    /// The agent leaves (drained, told to, or its executor stopped).
    Leave(String),
    /// The broker is gone; reconnect.
    Lost(String),
}

/// What the broker sent, or why nothing more will come.
type Incoming = Result<ToAgent, String>;

/// The state of one connection's loop.
struct Loop<'a> {
    cfg: &'a AgentConfig,
    exec: &'a Executor,
    work: &'a mut Work,
    flow: &'a mut StageFlow,
    send: quinn::SendStream,
    born: Instant,
    /// Why the agent leaves, once it drains.
    draining: Option<String>,
    /// When waiting results must go out.
    flush_due: Option<tokio::time::Instant>,
    /// Since when results and starts have been waiting.
    pending_since: Option<tokio::time::Instant>,
    drain_started: Option<Instant>,
    /// Wakes the loop when the drain's time is up, even if nothing else happens.
    drain_due: Option<tokio::time::Instant>,
    leaving_told: bool,
    last_heard: tokio::time::Instant,
    silence_due: tokio::time::Instant,
}

/// The executor's events and the staging tasks' events.
pub(super) type Channels<'c> = (
    &'c mut mpsc::UnboundedReceiver<ExecEvent>,
    &'c mut mpsc::UnboundedReceiver<StagingEvent>,
);

/// Serves one connection until the agent leaves or the broker is lost.
pub(super) async fn serve(
    cfg: &AgentConfig,
    exec: &Executor,
    (work, flow): (&mut Work, &mut StageFlow),
    c: Conn,
    (ev_rx, stage_rx): Channels<'_>,
    sigterm: &mut tokio::signal::unix::Signal,
    born: Instant,
) -> Served {
    let Conn {
        conn,
        send,
        recv,
        heartbeat,
        silence_max,
        ..
    } = c;
    let (reader, mut in_rx) = spawn_reader(recv);
    let mut hb = tokio::time::interval(heartbeat);
    hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lp = Loop::new(cfg, exec, (work, flow), send, born, silence_max);
    let silence = tokio::time::sleep_until(lp.silence_due);
    tokio::pin!(silence);
    let outcome = loop {
        tokio::select! {
            biased;
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { break Served::Leave("executor stopped".into()) };
                lp.on_exec_events(ev, ev_rx);
            }
            Some(ev) = stage_rx.recv() => lp.on_staging(ev),
            msg = in_rx.recv() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => break Served::Lost(e),
                    None => break Served::Lost("connection reader stopped".into()),
                };
                lp.last_heard = tokio::time::Instant::now();
                lp.on_message(msg);
            }
            _ = hb.tick() => {
                if let Err(e) = lp.on_heartbeat_tick().await {
                    break Served::Lost(e);
                }
            }
            _ = sigterm.recv() => {
                lp.drain("SIGTERM".into());
            }
            _ = sleep_until_due(lp.flush_due) => {}
            _ = sleep_until_due(lp.drain_due) => {}
            _ = &mut silence, if silence_max.is_some() => {
                let limit = silence_max.unwrap_or_default();
                // Let the connection's tasks hand over what already arrived.
                tokio::task::yield_now().await;
                if let Some(lost) = lp.on_silence(limit, !in_rx.is_empty()) {
                    break lost;
                }
                silence.as_mut().reset(lp.silence_due);
            }
        }
        if let Err(e) = lp.flush_when_due().await {
            break Served::Lost(e);
        }
        if let Some(outcome) = lp.drain_progress().await {
            break outcome;
        }
    };
    match &outcome {
        Served::Leave(why) => leave(&mut lp.send, &conn, why).await,
        // Staging transfers still waiting on this connection fail at once and
        // go on over the next one, instead of at its idle timeout.
        Served::Lost(_) => conn.close(0u32.into(), b"broker lost"),
    }
    reader.abort();
    match (outcome, lp.draining) {
        // A draining agent does not reconnect: it was leaving anyway, and the
        // SIGTERM deadline does not wait for a broker to come back.
        (Served::Lost(e), Some(why)) => {
            Served::Leave(format!("{why} (lost the broker while draining: {e})"))
        }
        (outcome, _) => outcome,
    }
}

/// Reads the broker's messages on a task of their own, which keeps a half-read
/// frame safe from `select!` cancellation. The last item says why it stopped.
fn spawn_reader(
    mut recv: quinn::RecvStream,
) -> (JoinHandle<()>, mpsc::UnboundedReceiver<Incoming>) {
    let (in_tx, in_rx) = mpsc::unbounded_channel::<Incoming>();
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
    (reader, in_rx)
}

/// The last word of a leaving agent: `Leaving`, the stream finished, a short
/// wait for the transport to deliver it, then the connection closed.
async fn leave(send: &mut quinn::SendStream, conn: &quinn::Connection, why: &str) {
    let _ = write_frame(
        send,
        &FromAgent::Leaving {
            reason: why.to_string(),
        },
    )
    .await;
    let _ = send.finish();
    let _ = tokio::time::timeout(LEAVE_FLUSH_WAIT_MAX, send.stopped()).await;
    conn.close(0u32.into(), b"agent leaving");
}

impl<'a> Loop<'a> {
    /// A fresh loop: nothing to flush, not draining, the broker just heard.
    fn new(
        cfg: &'a AgentConfig,
        exec: &'a Executor,
        (work, flow): (&'a mut Work, &'a mut StageFlow),
        send: quinn::SendStream,
        born: Instant,
        silence_max: Option<Duration>,
    ) -> Loop<'a> {
        let last_heard = tokio::time::Instant::now();
        Loop {
            cfg,
            exec,
            work,
            flow,
            send,
            born,
            draining: None,
            flush_due: None,
            pending_since: None,
            drain_started: None,
            drain_due: None,
            leaving_told: false,
            last_heard,
            silence_due: last_heard + silence_max.unwrap_or(Duration::ZERO),
        }
    }

    /// Started and finished attempts from the executor (this one and any already
    /// waiting); freed room starts queued work unless the agent drains.
    fn on_exec_events(&mut self, ev: ExecEvent, ev_rx: &mut mpsc::UnboundedReceiver<ExecEvent>) {
        self.flow.route_exec_event(ev, self.work);
        while let Ok(ev) = ev_rx.try_recv() {
            self.flow.route_exec_event(ev, self.work);
        }
        if self.draining.is_none() {
            self.work.start_what_fits(self.exec, self.cfg.noop);
        }
    }

    /// One message of the broker, to the function for its kind.
    fn on_message(&mut self, msg: ToAgent) {
        match msg {
            ToAgent::Assign(list) => self.on_assign(list),
            ToAgent::Ack { counted, ignored } => self.on_ack(&counted, &ignored),
            ToAgent::Heartbeat => {}
            ToAgent::Cancel(ids) => self.on_cancel(&ids),
            ToAgent::Return(ids) => self.on_return(&ids),
            ToAgent::Shutdown { reason } => self.drain(format!("broker asked: {reason}")),
        }
    }

    /// A staging task ended: an attempt whose inputs arrived is queued (or
    /// handed back while draining), an ended one is reported and its room
    /// used.
    fn on_staging(&mut self, ev: StagingEvent) {
        // An attempt whose outputs went back frees its room: queued work may
        // start now, as after any end.
        let ready = self.flow.on_event(ev, self.work);
        self.queue(ready.into_iter().collect());
    }

    /// New work: queued and started as it fits; handed straight back while the
    /// agent drains. Without a shared filesystem, staged in first.
    fn on_assign(&mut self, list: Vec<Assignment>) {
        let list = match self.draining {
            Some(_) => list,
            None => self.flow.take(list, self.work),
        };
        self.queue(list);
    }

    /// Assignments ready to run: queued and started as they fit.
    fn queue(&mut self, list: Vec<Assignment>) {
        if self.draining.is_some() {
            let ids: Vec<AttemptId> = list.iter().map(|a| a.attempt).collect();
            self.work.queue.extend(list);
            self.work.drop_queued(self.exec, &ids, &AttemptEnd::Drained);
        } else {
            self.work.queue.extend(list);
            self.work.start_what_fits(self.exec, self.cfg.noop);
        }
    }

    /// The broker committed these results: promote or discard their stages.
    fn on_ack(&mut self, counted: &[AttemptId], ignored: &[AttemptId]) {
        self.work
            .acked(counted, ignored, self.cfg.event_log.as_deref());
        self.flow.forget(counted);
        self.flow.forget(ignored);
    }

    /// Cancelled attempts: queued ones end at once, running ones are stopped.
    fn on_cancel(&mut self, ids: &[AttemptId]) {
        let ids = self
            .flow
            .stop_staging_in(ids, &AttemptEnd::Cancelled, self.work);
        for id in self
            .work
            .drop_queued(self.exec, &ids, &AttemptEnd::Cancelled)
        {
            // A chained successor handed over meanwhile: stopped once it runs.
            if self.work.running.contains_key(&id) || self.work.chained_after(id).is_some() {
                self.exec.stop(id, AttemptEnd::Cancelled);
            }
        }
    }

    /// The broker takes queued attempts back (to run them elsewhere). One
    /// already started (or ended) is kept: its result answers the broker.
    fn on_return(&mut self, ids: &[AttemptId]) {
        let ids = self
            .flow
            .stop_staging_in(ids, &AttemptEnd::Returned, self.work);
        let kept = self
            .work
            .drop_queued(self.exec, &ids, &AttemptEnd::Returned);
        if let Some(log) = self.cfg.event_log.as_deref() {
            for id in kept {
                log.line(format_args!("keep {id}"));
            }
        }
    }

    /// Starts the drain (once; see `drain`).
    fn drain(&mut self, why: String) {
        if self.draining.is_none() {
            self.flow
                .stop_all_staging_in(&AttemptEnd::Drained, self.work);
        }
        start_drain(self.work, self.exec, &mut self.draining, why);
    }

    /// Our heartbeat to the broker, then the agent's own limits: idle timeout and
    /// lifetime start the drain. An error is the lost connection.
    async fn on_heartbeat_tick(&mut self) -> Result<(), String> {
        let msg = FromAgent::Heartbeat {
            running: self.work.running.len() as u32,
            queued: (self.work.queue.len() + self.work.chained.len()) as u32,
        };
        write_frame(&mut self.send, &msg)
            .await
            .map_err(|e| e.to_string())?;
        if self.draining.is_none() {
            if let Some(limit) = self.cfg.idle_timeout {
                if self.work.idle() && self.work.last_busy.elapsed() >= limit {
                    self.drain(format!("idle for {limit:?}"));
                }
            }
            if let Some(life) = self.cfg.lifetime {
                if self.born.elapsed() >= life {
                    self.drain("lifetime reached".into());
                }
            }
        }
        Ok(())
    }

    /// The silence timer fired: the broker is lost, or the timer moves on (see
    /// `silence`). `pending`: a message of the broker already waits.
    fn on_silence(&mut self, limit: Duration, pending: bool) -> Option<Served> {
        let now = tokio::time::Instant::now();
        match silence_check(self.last_heard, self.silence_due, now, limit, pending) {
            Silence::Lost(quiet) => {
                return Some(Served::Lost(format!(
                    "broker silent for {:.1}s (limit {limit:?})",
                    quiet.as_secs_f64()
                )));
            }
            Silence::Stalled => {
                tracing::warn!(
                    "the agent was stalled for {:?}; giving the broker a fresh {limit:?}",
                    now - self.silence_due
                );
                self.last_heard = now;
                self.silence_due = now + limit;
            }
            Silence::RecheckAt(at) => self.silence_due = at,
        }
        None
    }

    /// Coalesce: results go out at most `flush_delay` after the first of them,
    /// or at once when many wait or the agent is leaving. The broker's
    /// prefetched queue covers the delay, and fewer, larger messages save both
    /// sides cpu.
    async fn flush_when_due(&mut self) -> Result<(), String> {
        self.work.release_suspects(Instant::now());
        let pending = self.work.out_started.len() + self.work.out_finished.len();
        if pending == 0 {
            // Wake for the first held-back result, if any.
            self.pending_since = None;
            self.flush_due = self
                .work
                .suspects
                .iter()
                .map(|(_, due)| tokio::time::Instant::from_std(*due))
                .min();
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        let since = *self.pending_since.get_or_insert(now);
        // Recomputed each time: the delay shrinks when the queue runs dry or a
        // long task's result arrives.
        let due = since + flush_delay(self.work);
        self.flush_due = Some(due);
        if pending >= FLUSH_EARLY_EVENTS || self.draining.is_some() || now >= due {
            let log = self.cfg.event_log.as_deref();
            flush(
                &mut self.send,
                self.work,
                log,
                self.cfg.test_duplicate_results,
            )
            .await?;
            self.flush_due = None;
            self.pending_since = None;
        }
        Ok(())
    }

    /// While draining: tell the broker at once so it assigns nothing more (SPEC
    /// §6 drain), and leave when everything ended and was acknowledged, or when
    /// the drain's time is up. `None`: go on serving.
    async fn drain_progress(&mut self) -> Option<Served> {
        let why = self.draining.as_ref()?;
        let started = *self.drain_started.get_or_insert_with(|| {
            self.leaving_told = false;
            self.drain_due = Some(tokio::time::Instant::now() + DRAIN_WAIT_MAX);
            Instant::now()
        });
        if !self.leaving_told {
            let msg = FromAgent::Leaving {
                reason: why.clone(),
            };
            if let Err(e) = write_frame(&mut self.send, &msg).await {
                return Some(Served::Lost(e.to_string()));
            }
            self.leaving_told = true;
        }
        let done = self.work.running.is_empty() && self.work.unacked.is_empty();
        if done || started.elapsed() >= DRAIN_WAIT_MAX {
            if !self.work.running.is_empty() {
                tracing::warn!(
                    "{} attempts still running after {DRAIN_WAIT_MAX:?} of draining; killing them",
                    self.work.running.len()
                );
            }
            return Some(Served::Leave(why.clone()));
        }
        None
    }
}

/// Resolves at `due`, or never when nothing waits to be flushed.
async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
