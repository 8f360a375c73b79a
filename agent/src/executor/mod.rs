//! Runs assignments as child processes, as fast as the kernel allows.
//!
//! Owns: spawning tasks, their stdout/stderr files, walltime and output-size
//! enforcement, reaping, and turning each exit into one [`AttemptResult`]. It does
//! not decide what to run (the caller checked resources) and does no network I/O:
//! every start and every ending is reported as an [`ExecEvent`] on one channel.
//!
//! # Layout
//!
//! - this file: the public face ([`ExecConfig`], [`ExecEvent`], [`Executor`]) and
//!   the state every part shares (`Inner`, `Running`);
//! - `spawn`: the spawn path, [`Executor::start_placed`] as named steps;
//! - `command`: what the child is (argv, container wrapping, environment, cwd);
//! - `launch`: starting it (raw `clone`/`execve`, the child binds its cores);
//! - `placement`: [`Placement`], a task's cores and GPUs;
//! - `output`: the stdout/stderr files, their size cap, tails and reuse;
//! - `watchdog`: walltimes, SIGKILL escalation, memory sampling, the size cap;
//! - `stop`: stopping and killing tasks (and podman/docker containers);
//! - `reaper`: the process-wide reapers (the general one, spawn tickets);
//! - `home_reaper`: one reaper pinned to each core, for the tasks bound there;
//! - `escapees`: processes that left their task's group, killed after it;
//! - `finish`: one reaped leader into one `Finished` event;
//! - `handover`: a queued successor started on a leader's cores the moment it
//!   is reaped, on the reaper thread.
//!
//! # Why tasks do not outlive the agent (the choice)
//!
//! Without `pre_exec` (see `spawn`) a child cannot be given `PR_SET_PDEATHSIG`,
//! and that flag would be wrong for us anyway: it fires when the *thread* that
//! spawned the child exits, and callers may start tasks from short-lived runtime
//! threads. So instead:
//! - [`Executor::new`] makes the agent a child subreaper (`PR_SET_CHILD_SUBREAPER`),
//!   so a task's daemonised grandchildren re-parent to the agent, not to init, and
//!   are reaped here;
//! - after a task's leader exits its whole process group gets SIGKILL;
//! - processes that left the group (`setsid`) are found among the agent's
//!   children once re-parented, tied to their attempt by the
//!   `SCALABLE_ATTEMPT_ID` they inherited, and killed when it has ended
//!   (`escapees`);
//! - every agent exit path calls [`Executor::kill_all_now`] (so does `Drop`).
//!
//! A SIGKILL of the agent itself gives none of these a chance to run; that case
//! is the orphan guard's (`orphan_guard`, [`ExecConfig::orphan_guard`]), told of
//! each task's group at its spawn and at its end, except a task spawned in the
//! moment before the guard hears of it. Under a batch system the job's cgroup is
//! also torn down with the allocation.
//!
//! Invariant: because the reaper waits for any child, nothing else in the agent
//! process may run child processes through `std::process` or `tokio::process`
//! once an `Executor` exists (their `wait` would find the child already reaped);
//! run them through an `Executor` instead. The reaper is shared by all executors
//! of the process for the same reason.
//!
//! # Limits, placement and containers
//!
//! Memory limits follow `limits` (cgroup v2 per task, or the watchdog sampling the
//! RSS of each task's process group); `ending` turns what was observed into the
//! attempt's end. A [`Placement`] from the session binds the task to its cores
//! (`launch`: the child binds itself before `execve`, so it is bound from
//! birth) and sets its `CUDA_VISIBLE_DEVICES`. A task with a container runs as the argv `runtime::wrap` builds. Podman and docker keep the
//! container outside the client's process group, so stopping such a task also
//! runs `<runtime> stop`, and the agent's exit `<runtime> rm -f`, as *helpers*:
//! processes spawned here, in their own group, registered with the reaper like
//! tasks (so the invariant above holds), whose exit is reaped and ignored.
//!
//! Nothing of this costs a task that uses none of it more than a few branches:
//! no `/proc` scan per spawn, no cgroup without a memory request.

mod command;
mod escapees;
mod finish;
mod handover;
pub mod helper;
mod home_reaper;
mod launch;
mod output;
mod placement;
mod reaper;
mod spawn;
mod stop;
mod watchdog;

#[cfg(test)]
mod test_env;

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use scalable_common::protocol::{Assignment, AttemptEnd, AttemptId, AttemptResult, Started};
use tokio::sync::mpsc::UnboundedSender;

use crate::event_log::EventLog;
use crate::limits::{self, LimitMode, TaskCgroup};
use crate::runtime::Runtime;
use crate::usage::UsageSeries;

use output::Stream;
pub use placement::Placement;
use reaper::REAPER;

/// Default bytes of the end of stdout and of stderr that go into a result.
pub const TAIL_BYTES_DEFAULT: usize = 64 << 10;
/// Default cap of one stream file on disk.
pub const OUTPUT_BYTES_MAX_DEFAULT: u64 = 256 << 20;
/// Default time between SIGTERM and SIGKILL when we stop a task.
pub const KILL_GRACE_DEFAULT: Duration = Duration::from_secs(5);
/// How long `kill_all_now` waits for the killed tasks to be reaped.
pub const KILL_ALL_WAIT_MAX: Duration = Duration::from_secs(1);
/// Cap of any deadline's distance, so `Instant` arithmetic cannot overflow.
const LATER_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How the executor runs tasks.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Where the stdout/stderr files live (local disk; they are anonymous).
    pub log_dir: PathBuf,
    /// Bytes of the end of stdout and of stderr that go into the result.
    pub tail_bytes: usize,
    /// Cap per stream file on disk; beyond it the start of the file is freed
    /// (`output`: the count stays exact and the tail is kept).
    pub output_bytes_max: u64,
    /// SIGTERM → SIGKILL grace for walltime and stop.
    pub kill_grace: Duration,
    /// Kills the tasks' groups if the agent dies without cleaning up.
    pub orphan_guard: Option<std::sync::Arc<crate::orphan_guard::OrphanGuard>>,
    /// A task is killed above its memory request × this (`--memory-margin`).
    pub memory_margin: f64,
    /// How memory limits are enforced (`limits::detect`).
    pub limits: LimitMode,
    /// The container runtime for tasks with an image; `None`: such tasks fail.
    pub runtime: Option<Runtime>,
    /// `--event-log`: spawn and kill lines (see `event_log`).
    pub event_log: Option<Arc<EventLog>>,
}

impl ExecConfig {
    /// The defaults, with stream files in `log_dir`.
    pub fn new(log_dir: impl Into<PathBuf>) -> ExecConfig {
        ExecConfig {
            log_dir: log_dir.into(),
            tail_bytes: TAIL_BYTES_DEFAULT,
            output_bytes_max: OUTPUT_BYTES_MAX_DEFAULT,
            kill_grace: KILL_GRACE_DEFAULT,
            orphan_guard: None,
            memory_margin: limits::MEMORY_MARGIN_DEFAULT,
            limits: LimitMode::Sampling,
            runtime: None,
            event_log: None,
        }
    }
}

/// What the executor reports. For one attempt, `Started` (if it started at all)
/// always comes before its `Finished`.
// `Finished` is most of the traffic: boxing it would add an allocation per
// task to save bytes on the rarer `Started`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Started(Started),
    Finished(AttemptResult),
    /// `to`, chained after `from` ([`Executor::chain`]), starts on the cores,
    /// GPUs and resources `from` held. Sent before `from`'s `Finished`, so its
    /// room is never free in between; `to`'s own `Started` (or only its
    /// `Finished`, if it cannot start) follows.
    Handover {
        from: AttemptId,
        to: AttemptId,
    },
}

/// Runs attempts as child processes. `Send + Sync`; all methods take `&self`.
pub struct Executor {
    inner: Arc<Inner>,
    watchdog: Option<JoinHandle<()>>,
}

struct Inner {
    cfg: ExecConfig,
    events: UnboundedSender<ExecEvent>,
    /// The agent's cwd when the executor was made; relative task cwds join onto it.
    base_cwd: PathBuf,
    state: Mutex<State>,
    /// Wakes the watchdog early: a nearer deadline, a stop, shutdown.
    watchdog_cv: Condvar,
    /// Notified when `running` becomes empty (`kill_all_now` waits for it).
    idle_cv: Condvar,
    /// Emptied output files kept for the next tasks (at most `SPARE_FILES_MAX`).
    spare_files: Mutex<Vec<File>>,
}

struct State {
    running: FxHashMap<AttemptId, Running>,
    /// When the watchdog will next wake on its own.
    watchdog_wake: Instant,
    /// A task ended since the last sweep for escaped processes (`escapees`).
    sweep_due: bool,
    /// Groups that escaped running tasks, as the orphan guard was told.
    guarded_escapees: BTreeSet<libc::pid_t>,
    /// Running attempt → the assignment to start on its placement when it
    /// exits (`handover`).
    successors: FxHashMap<AttemptId, (Assignment, Placement)>,
    /// Successors the reaper took and has not registered as running yet, with
    /// a stop asked for meanwhile (applied once they run).
    handing: FxHashMap<AttemptId, Option<(AttemptEnd, Duration)>>,
    /// Set by `kill_all_now`: nothing starts after it.
    refuse_successors: bool,
    shutdown: bool,
}

struct Running {
    /// Pid of the leader, which is also the process-group id.
    pid: libc::pid_t,
    started_at_us: u64,
    started: Instant,
    deadline: Option<Instant>,
    /// Set once we asked the task to stop (walltime, stop, kill_all_now): the end
    /// to report regardless of the exit status.
    stopping: Option<Stopping>,
    stdout: Stream,
    stderr: Stream,
    cwd: PathBuf,
    outputs: Vec<String>,
    /// Request × margin, if the task has a memory request.
    memory_limit: Option<u64>,
    /// Its processes are in its process group, so the sampler can see them.
    sampled: bool,
    /// The sampler kills it above `memory_limit` (no cgroup or runtime does).
    enforce_by_sampling: bool,
    /// Largest sampled RSS of its process group.
    peak_sampled_bytes: u64,
    /// Its usage over time (fed by the watchdog's samples).
    usage: UsageSeries,
    /// The sizes of its declared inputs when it started.
    input_bytes: Vec<u64>,
    /// Its cgroup (cgroup-v2 mode, tasks with a memory limit).
    cgroup: Option<TaskCgroup>,
    /// Runs in a podman/docker container (`scalable-<attempt>`).
    detached_container: bool,
    /// ... with a `--memory` limit.
    container_memory_limited: bool,
}

struct Stopping {
    end: AttemptEnd,
    /// When to escalate to SIGKILL; `None` once it was sent.
    kill_at: Option<Instant>,
}

impl Executor {
    /// Makes the agent a child subreaper, starts the process-wide reaper (once) and
    /// this executor's watchdog thread.
    pub fn new(cfg: ExecConfig, events: UnboundedSender<ExecEvent>) -> io::Result<Executor> {
        // SAFETY: prctl with integer arguments only; no memory is passed.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(io::Error::other(format!(
                "cannot become a child subreaper: {}",
                io::Error::last_os_error()
            )));
        }
        if !cfg.log_dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("log dir {}: not a directory", cfg.log_dir.display()),
            ));
        }
        REAPER.ensure_thread()?;
        let base_cwd = std::env::current_dir()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read the current dir: {e}")))?;
        let inner = Arc::new(Inner {
            cfg,
            events,
            base_cwd,
            state: Mutex::new(State {
                running: FxHashMap::default(),
                watchdog_wake: Instant::now(),
                sweep_due: false,
                guarded_escapees: BTreeSet::new(),
                successors: FxHashMap::default(),
                handing: FxHashMap::default(),
                refuse_successors: false,
                shutdown: false,
            }),
            watchdog_cv: Condvar::new(),
            idle_cv: Condvar::new(),
            spare_files: Mutex::new(Vec::new()),
        });
        let watchdog_inner = inner.clone();
        let watchdog = std::thread::Builder::new()
            .name("exec-watchdog".into())
            .spawn(move || watchdog_inner.watchdog())?;
        Ok(Executor {
            inner,
            watchdog: Some(watchdog),
        })
    }

    /// Attempts started and not yet reaped.
    pub fn running(&self) -> usize {
        self.inner.lock().running.len()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Tasks must not outlive the executor that enforces their limits.
        if self.running() > 0 {
            self.kill_all_now();
        } else {
            escapees::sweep_until_quiet();
        }
        self.inner.lock().shutdown = true;
        self.inner.watchdog_cv.notify_one();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not wedge the agent; the state stays consistent
        // because no critical section leaves it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, ev: ExecEvent) {
        // A closed channel means the agent is shutting down; nobody wants the event.
        let _ = self.events.send(ev);
    }
}

/// `now + d` that cannot overflow: absurd durations (a walltime of u64::MAX ms)
/// are capped at `LATER_MAX`, which is "never" for an agent.
fn later(now: Instant, d: Duration) -> Instant {
    now + d.min(LATER_MAX)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executor_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Executor>();
    }
}
