//! Runs assignments as child processes, as fast as the kernel allows.
//!
//! Owns: spawning tasks, their stdout/stderr files, walltime and output-size
//! enforcement, reaping, and turning each exit into one [`AttemptResult`]. It does
//! not decide what to run (the caller checked resources) and does no network I/O:
//! every start and every ending is reported as an [`ExecEvent`] on one channel.
//!
//! # How a task is started
//!
//! `std::process::Command` with `process_group(0)` (each task leads its own group),
//! stdin from `/dev/null`, stdout/stderr to anonymous files in `log_dir`. There is
//! deliberately no `pre_exec` closure: any closure forces std off its
//! posix_spawn/vfork path onto a full fork, which costs 10-20% of the spawn rate
//! here and more as the agent's heap grows (research/spawn-cost.md; re-measured
//! while writing this: a no-op closure cost 10-30% of bare `Command` spawns).
//!
//! # Why tasks do not outlive the agent (the choice)
//!
//! Without `pre_exec` a child cannot be given `PR_SET_PDEATHSIG`, and that flag would
//! be wrong for us anyway: it fires when the *thread* that spawned the child exits,
//! and callers may start tasks from short-lived runtime threads. So instead:
//! - [`Executor::new`] makes the agent a child subreaper (`PR_SET_CHILD_SUBREAPER`),
//!   so a task's daemonised grandchildren re-parent to the agent, not to init, and
//!   are reaped here;
//! - after a task's leader exits its whole process group gets SIGKILL;
//! - every agent exit path calls [`Executor::kill_all_now`] (so does `Drop`).
//!
//! What this does not cover: a SIGKILL of the agent itself leaves running tasks
//! behind (re-parented to the agent's parent). Under a batch system the job's
//! cgroup is torn down with the allocation, which covers that case.
//!
//! # Reaping
//!
//! One process-wide reaper thread waits for *any* child. It first peeks with
//! `waitid(P_ALL, WEXITED | WNOWAIT)` and only then reaps that pid with
//! `wait4(pid, .., &mut rusage)`, which gives the exit status, the peak RSS and the
//! cpu time of the task and its waited-for descendants. Peeking first keeps the
//! exited leader a zombie while we look it up, kill its group and reap it, so its
//! pid (and so its process-group id) cannot be reused by a new task in between,
//! and a child that exits before `start` has recorded its pid simply waits as a
//! zombie until the record exists. With no children at all the reaper sleeps on a
//! condvar until the next spawn (no busy loop). Unknown pids (orphans re-parented to
//! the subreaper) are reaped and ignored.
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
//! (`cpuset`: the spawning thread is narrowed around the spawn, so the child is
//! bound from birth) and sets its `CUDA_VISIBLE_DEVICES`. A task with a
//! container runs as the argv `runtime::wrap` builds. Podman and docker keep the
//! container outside the client's process group, so stopping such a task also
//! runs `<runtime> stop`, and the agent's exit `<runtime> rm -f`, as *helpers*:
//! processes spawned here, in their own group, registered with the reaper like
//! tasks (so the invariant below holds), whose exit is reaped and ignored.
//!
//! Nothing of this costs a task that uses none of it more than a few branches:
//! no `/proc` scan per spawn, no cgroup without a memory request.
//!
//! # Staged outputs
//!
//! A task with declared outputs gets its attempt's stage (`stage`) created
//! before the spawn and `SCALABLE_STAGE_DIR` pointing at it; an output counts as
//! present in the stage or at its final place. Promoting or discarding the stage
//! is the session's business (it follows the broker's ack). Tasks without
//! outputs get neither the directory nor the variable.
//!
//! # Output files
//!
//! Each stream is an `O_TMPFILE` in `log_dir` (no name, nothing to unlink; falls
//! back to create + unlink where unsupported) opened `O_RDWR | O_APPEND`: the child
//! always appends, so when a file grows past `output_bytes_max` the watchdog can
//! truncate it to 0 and the child carries on at the new end. Dropped bytes are
//! still counted in `stdout_bytes`/`stderr_bytes`, and the tail then starts with
//! `[scalable: earlier output dropped]`.
//!
//! Creating and freeing an ext4 inode per stream cost about a tenth of the CPU a
//! `/bin/true` task takes, so emptied files are reused (at most `SPARE_FILES_MAX`
//! spares). To make that safe the child gets its *own* open file description
//! (reopened through `/proc/self/fd`), and a file is reused only if the kernel
//! grants us a write lease on it, which it does only when no other description
//! exists: a process that escaped the task's group and still holds its stdout
//! makes the file unusable, never another task's output.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use scalable_common::protocol::{Assignment, AttemptEnd, AttemptId, AttemptResult, Started};
use tokio::sync::mpsc::UnboundedSender;

use crate::ending::{self, Observed};
use crate::event_log::EventLog;
use crate::limits::{self, LimitMode, TaskCgroup};
use crate::log_event;
use crate::runtime::{self, Runtime};
use crate::stage::{self, Stage};

/// Default bytes of the end of stdout and of stderr that go into a result.
pub const TAIL_BYTES_DEFAULT: usize = 64 << 10;
/// Default cap of one stream file on disk.
pub const OUTPUT_BYTES_MAX_DEFAULT: u64 = 256 << 20;
/// Default time between SIGTERM and SIGKILL when we stop a task.
pub const KILL_GRACE_DEFAULT: Duration = Duration::from_secs(5);
/// How often the watchdog compares output files against `output_bytes_max`.
const SIZE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long `kill_all_now` waits for the killed tasks to be reaped.
pub const KILL_ALL_WAIT_MAX: Duration = Duration::from_secs(1);
/// Cap of any deadline's distance, so `Instant` arithmetic cannot overflow.
const LATER_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Emptied output files an executor keeps for reuse.
const SPARE_FILES_MAX: usize = 64;
/// Starts a tail whose beginning was truncated away by the size cap.
const DROPPED_NOTE: &[u8] = b"[scalable: earlier output dropped]\n";

/// How the executor runs tasks.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Where the stdout/stderr files live (local disk; they are anonymous).
    pub log_dir: PathBuf,
    /// Bytes of the end of stdout and of stderr that go into the result.
    pub tail_bytes: usize,
    /// Cap per stream file on disk; beyond it the file is truncated to 0.
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

/// Where a task runs on this agent: its cores and GPUs (the session's free-lists).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Cores to bind the task to; `None`: not bound.
    pub cpus: Option<Vec<usize>>,
    /// The task's `CUDA_VISIBLE_DEVICES` ids; `None`: leave the variable alone
    /// (an agent without GPUs), `Some([])`: hide every GPU.
    pub gpus: Option<Vec<String>>,
}

/// The agent's variables every task gets (SPEC §4), passed into containers by name.
const TASK_ENV_NAMES: [&str; 5] = [
    "SCALABLE_RUN_ID",
    "SCALABLE_TASK_ID",
    "SCALABLE_ATTEMPT_ID",
    "SCALABLE_ATTEMPT",
    "SCALABLE_CPUS",
];

/// What the executor reports. For one attempt, `Started` (if it started at all)
/// always comes before its `Finished`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Started(Started),
    Finished(AttemptResult),
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
    running: HashMap<AttemptId, Running>,
    /// When the watchdog will next wake on its own.
    watchdog_wake: Instant,
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

struct Stream {
    /// Our own open file description (O_RDWR | O_APPEND); the child got another.
    file: File,
    /// Bytes truncated away because the file exceeded `output_bytes_max`.
    dropped_bytes: u64,
    /// The child's description is separate from ours, so the file can be checked
    /// for stragglers and reused (see `Inner::recycle`).
    reusable: bool,
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
                running: HashMap::new(),
                watchdog_wake: Instant::now(),
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

    /// Starts the attempt now (the caller already checked resources). Every outcome
    /// is an event: `Started` then later `Finished`, or only `Finished` with
    /// `SpawnFailed` if it could not start (`InvalidInput` if a declared input is
    /// missing: then it is not even spawned). Starting an attempt id that is still
    /// running does nothing (its events are coming).
    pub fn start(&self, a: &Assignment) {
        self.start_placed(a, &Placement::default());
    }

    /// Where the attempt's declared outputs are staged (`stage`); `None` for an
    /// attempt without outputs. The same cwd the executor runs it in.
    pub fn stage_of(&self, a: &Assignment) -> Option<Stage> {
        if a.outputs.is_empty() {
            return None; // the common case allocates nothing
        }
        Stage::new(a.attempt, self.inner.base_cwd.join(&a.cwd), &a.outputs)
    }

    /// [`Executor::start`] on the given cores and GPUs.
    pub fn start_placed(&self, a: &Assignment, place: &Placement) {
        let inner = &self.inner;
        let unstarted = |end: AttemptEnd| {
            let now = unix_us();
            inner.send(ExecEvent::Finished(AttemptResult {
                attempt: a.attempt,
                end,
                started_at_us: 0,
                ended_at_us: now,
                peak_rss_bytes: 0,
                cpu_time_us: 0,
                stdout_tail: Vec::new(),
                stderr_tail: Vec::new(),
                stdout_bytes: 0,
                stderr_bytes: 0,
            }));
        };
        let spawn_failed = |error: String| unstarted(AttemptEnd::SpawnFailed { error });
        if inner.lock().running.contains_key(&a.attempt) {
            // A resent assignment (e.g. after a reconnect): it runs already and its
            // events will come; a second copy must not overwrite its record.
            tracing::warn!(attempt = a.attempt, "start of a running attempt ignored");
            return;
        }
        if a.argv.is_empty() {
            spawn_failed("empty argv: nothing to run".into());
            return;
        }
        let cwd = inner.base_cwd.join(&a.cwd);
        // A declared input that is not there will not appear while the task runs.
        if let Some(missing) = a.inputs.iter().find(|i| !cwd.join(i).exists()) {
            unstarted(AttemptEnd::InvalidInput {
                path: missing.clone(),
            });
            return;
        }
        // Only tasks with declared outputs pay for a stage (one mkdir). A missing
        // cwd is left for the spawn to report.
        let stage_dir = match Stage::new(a.attempt, cwd.clone(), &a.outputs) {
            Some(s) if cwd.is_dir() => match s.create() {
                Ok(d) => Some(d),
                Err(e) => {
                    spawn_failed(format!("cannot create the stage dir for outputs: {e}"));
                    return;
                }
            },
            _ => None,
        };
        let memory_limit =
            limits::memory_limit_bytes(a.resources.memory_bytes, inner.cfg.memory_margin);
        let mut detached_container = false;
        let wrapped = match (&a.container, &inner.cfg.runtime) {
            (None, _) => None,
            (Some(_), None) => {
                spawn_failed("no container runtime on this agent".into());
                return;
            }
            (Some(spec), Some(rt)) => {
                detached_container = rt.kind.detached();
                let mut pass_env: Vec<&str> = TASK_ENV_NAMES.to_vec();
                if place.cpus.is_some() {
                    pass_env.push("SCALABLE_CPU_LIST");
                }
                if place.gpus.is_some() {
                    pass_env.push("CUDA_VISIBLE_DEVICES");
                }
                if stage_dir.is_some() {
                    // Under the cwd, which is mounted at the same path.
                    pass_env.push(stage::STAGE_ENV);
                }
                pass_env.extend(a.env.iter().map(|(k, _)| k.as_str()));
                Some(runtime::wrap(
                    rt,
                    &runtime::WrapInput {
                        attempt: a.attempt,
                        cwd: &cwd,
                        spec,
                        argv: &a.argv,
                        pass_env: &pass_env,
                        memory_limit_bytes: memory_limit,
                        cpus: place.cpus.as_deref(),
                        gpus: place.gpus.as_deref().unwrap_or(&[]),
                    },
                ))
            }
        };
        let argv = wrapped.as_ref().map_or(&a.argv, |w| &w.argv);
        let program = &argv[0];
        let (stdout, stderr) = match (inner.output_file(), inner.output_file()) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                spawn_failed(format!(
                    "cannot create an output file in {}: {e}",
                    inner.cfg.log_dir.display()
                ));
                return;
            }
        };
        let (stdout, child_out) = match child_handle(stdout) {
            Ok(x) => x,
            Err(e) => {
                spawn_failed(format!("cannot open an output file for the task: {e}"));
                return;
            }
        };
        let (stderr, child_err) = match child_handle(stderr) {
            Ok(x) => x,
            Err(e) => {
                spawn_failed(format!("cannot open an output file for the task: {e}"));
                return;
            }
        };
        // cgroup-v2 mode: the task's cgroup exists before the spawn; the leader
        // moves in right after it (no pre_exec). Processes of a detached container
        // are not the client's, the runtime limits them.
        let cgroup = match (&inner.cfg.limits, memory_limit) {
            (LimitMode::CgroupV2(cg), Some(limit)) if !detached_container => {
                match cg.create_task(a.attempt, limit) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::warn!(
                            attempt = a.attempt,
                            "no cgroup for the task ({e}); sampling its memory instead"
                        );
                        None
                    }
                }
            }
            _ => None,
        };

        let mut cmd = Command::new(program);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(child_out)
            .stderr(child_err)
            .process_group(0)
            .envs(a.env.iter().map(|(k, v)| (k, v)));
        if let Some(w) = &wrapped {
            cmd.envs(w.client_env.iter().map(|(k, v)| (k, v)));
        }
        // Ours last so a task's env cannot spoof them.
        cmd.env("SCALABLE_RUN_ID", a.run.to_string())
            .env("SCALABLE_TASK_ID", a.task.to_string())
            .env("SCALABLE_ATTEMPT_ID", a.attempt.to_string())
            .env("SCALABLE_ATTEMPT", a.attempt_number.to_string())
            .env("SCALABLE_CPUS", a.resources.cpus.to_string());
        if let Some(cpus) = &place.cpus {
            cmd.env("SCALABLE_CPU_LIST", crate::cpuset::cpu_list(cpus));
        }
        if let Some(gpus) = &place.gpus {
            cmd.env("CUDA_VISIBLE_DEVICES", gpus.join(","));
        }
        if let Some(dir) = &stage_dir {
            cmd.env(stage::STAGE_ENV, dir);
        }
        if !a.cwd.is_empty() {
            cmd.current_dir(&cwd);
        }

        // Bound from birth: the child inherits this thread's mask (see `cpuset`).
        let binding = place.cpus.as_deref().and_then(|cpus| {
            crate::cpuset::bind_this_thread(cpus)
                .map_err(|e| {
                    tracing::warn!(attempt = a.attempt, "cannot bind the task to cores: {e}")
                })
                .ok()
        });
        let ticket = REAPER.begin_spawn();
        let spawned = cmd.spawn();
        drop(binding);
        // Drop the parent's copies of the child's stdio now, not at the end of scope.
        drop(cmd);
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                REAPER.end_spawn(ticket, None);
                if let Some(cg) = cgroup {
                    cg.remove();
                }
                // Both a missing program and a missing cwd say ENOENT; tell them apart.
                let error = if !cwd.is_dir() {
                    format!(
                        "working directory {}: does not exist or is not a directory",
                        cwd.display()
                    )
                } else {
                    format!("cannot start {program:?}: {e}")
                };
                spawn_failed(error);
                return;
            }
        };
        // The leader's pid is also its process-group id (process_group(0)). Dropping
        // `Child` neither waits nor kills; the reaper owns the pid from here.
        let pid = child.id() as libc::pid_t;
        drop(child);
        let cgroup = cgroup.and_then(|cg| match cg.add(pid) {
            Ok(()) => Some(cg),
            Err(e) => {
                tracing::warn!(
                    attempt = a.attempt,
                    "cannot move the task into its cgroup ({e}); sampling its memory instead"
                );
                cg.remove();
                None
            }
        });
        if let Some(g) = &inner.cfg.orphan_guard {
            g.spawned(pid);
        }
        log_event!(
            inner.cfg.event_log.as_deref(),
            "spawn {} {} {pid}",
            a.attempt,
            a.task
        );
        let started_at_us = unix_us();
        let now = Instant::now();
        let deadline = a
            .walltime_ms
            .map(|ms| later(now, Duration::from_millis(ms)));
        let enforce_by_sampling = memory_limit.is_some() && cgroup.is_none() && !detached_container;
        {
            let mut st = inner.lock();
            st.running.insert(
                a.attempt,
                Running {
                    pid,
                    started_at_us,
                    started: now,
                    deadline,
                    stopping: None,
                    stdout,
                    stderr,
                    cwd,
                    outputs: a.outputs.clone(),
                    memory_limit,
                    sampled: !detached_container,
                    enforce_by_sampling,
                    peak_sampled_bytes: 0,
                    cgroup,
                    detached_container,
                    container_memory_limited: detached_container && memory_limit.is_some(),
                },
            );
            let sample_at = now + limits::SAMPLE_INTERVAL;
            if deadline.is_some_and(|d| d < st.watchdog_wake)
                || (enforce_by_sampling && sample_at < st.watchdog_wake)
            {
                inner.watchdog_cv.notify_one();
            }
        }
        // Sent before the reaper can learn the pid, so Started precedes Finished.
        inner.send(ExecEvent::Started(Started {
            attempt: a.attempt,
            at_us: started_at_us,
        }));
        REAPER.end_spawn(ticket, Some((pid, self.inner.clone(), a.attempt)));
    }

    /// Stops a running attempt: SIGTERM to its process group, SIGKILL after
    /// `kill_grace`. Its `Finished` event carries `end` instead of the exit status
    /// (the first stop or walltime wins). Returns false if it is not running.
    pub fn stop(&self, attempt: AttemptId, end: AttemptEnd) -> bool {
        self.stop_within(attempt, end, self.inner.cfg.kill_grace)
    }

    /// [`Executor::stop`] with its own SIGTERM → SIGKILL grace (the drain's is
    /// shorter than the usual one, SPEC §6).
    pub fn stop_within(&self, attempt: AttemptId, end: AttemptEnd, grace: Duration) -> bool {
        let mut st = self.inner.lock();
        match st.running.get_mut(&attempt) {
            Some(r) => {
                if r.stopping.is_none() {
                    log_event!(
                        self.inner.cfg.event_log.as_deref(),
                        "kill {attempt} {}",
                        end.class()
                    );
                    // Safe against pid reuse: the entry exists, so the leader is not
                    // reaped yet (the reaper removes it before reaping).
                    kill_group(r.pid, libc::SIGTERM);
                    if r.detached_container {
                        self.inner.stop_container(attempt);
                    }
                    let kill_at = later(Instant::now(), grace);
                    r.stopping = Some(Stopping {
                        end,
                        kill_at: Some(kill_at),
                    });
                    if kill_at < st.watchdog_wake {
                        self.inner.watchdog_cv.notify_one();
                    }
                }
                true
            }
            None => false,
        }
    }

    /// [`Executor::stop`] for every running attempt.
    pub fn stop_all(&self, end: AttemptEnd) {
        self.stop_all_within(end, self.inner.cfg.kill_grace);
    }

    /// [`Executor::stop_within`] for every running attempt.
    pub fn stop_all_within(&self, end: AttemptEnd, grace: Duration) {
        let ids: Vec<AttemptId> = self.inner.lock().running.keys().copied().collect();
        for id in ids {
            self.stop_within(id, end.clone(), grace);
        }
    }

    /// Attempts started and not yet reaped.
    pub fn running(&self) -> usize {
        self.inner.lock().running.len()
    }

    /// SIGKILLs every task's process group at once (the agent's exit path) and waits
    /// until they are reaped, at most about a second. Attempts not already being
    /// stopped end as `Drained` (handed back, no retry spent).
    pub fn kill_all_now(&self) {
        let mut st = self.inner.lock();
        for (&attempt, r) in st.running.iter_mut() {
            kill_group(r.pid, libc::SIGKILL);
            if r.detached_container {
                self.inner.kill_container(attempt);
            }
            match &mut r.stopping {
                Some(s) => s.kill_at = None,
                None => {
                    log_event!(
                        self.inner.cfg.event_log.as_deref(),
                        "kill {attempt} {}",
                        AttemptEnd::Drained.class()
                    );
                    r.stopping = Some(Stopping {
                        end: AttemptEnd::Drained,
                        kill_at: None,
                    })
                }
            }
        }
        let until = Instant::now() + KILL_ALL_WAIT_MAX;
        while !st.running.is_empty() {
            let now = Instant::now();
            if now >= until {
                tracing::warn!(
                    left = st.running.len(),
                    "tasks not reaped within {KILL_ALL_WAIT_MAX:?} of SIGKILL"
                );
                break;
            }
            st = self
                .inner
                .idle_cv
                .wait_timeout(st, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Tasks must not outlive the executor that enforces their limits.
        if self.running() > 0 {
            self.kill_all_now();
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

    /// Enforces walltimes, SIGKILL escalation and the output size cap. Sleeps until
    /// the nearest deadline, or `SIZE_CHECK_INTERVAL` at most.
    fn watchdog(&self) {
        let mut st = self.lock();
        let mut next_size_check = Instant::now() + SIZE_CHECK_INTERVAL;
        let mut next_sample = Instant::now() + limits::SAMPLE_INTERVAL;
        loop {
            if st.shutdown {
                return;
            }
            let now = Instant::now();
            let grace = self.cfg.kill_grace;
            for (&attempt, r) in st.running.iter_mut() {
                match &mut r.stopping {
                    Some(s) => {
                        if s.kill_at.is_some_and(|k| k <= now) {
                            kill_group(r.pid, libc::SIGKILL);
                            s.kill_at = None;
                        }
                    }
                    None => {
                        if r.deadline.is_some_and(|d| d <= now) {
                            log_event!(
                                self.cfg.event_log.as_deref(),
                                "kill {attempt} {}",
                                AttemptEnd::TimedOut.class()
                            );
                            kill_group(r.pid, libc::SIGTERM);
                            if r.detached_container {
                                self.stop_container(attempt);
                            }
                            r.stopping = Some(Stopping {
                                end: AttemptEnd::TimedOut,
                                kill_at: Some(later(now, grace)),
                            });
                        }
                    }
                }
            }
            // Memory: limited tasks every SAMPLE_INTERVAL, the others with the
            // size check (peak telemetry only).
            let size_due = now >= next_size_check;
            let sample_due = now >= next_sample;
            if size_due || sample_due {
                let targets: Vec<(AttemptId, libc::pid_t)> = st
                    .running
                    .iter()
                    .filter(|(_, r)| r.sampled && (size_due || r.enforce_by_sampling))
                    .map(|(&id, r)| (id, r.pid))
                    .collect();
                if !targets.is_empty() {
                    // Scan /proc without holding the lock: starts and ends go on.
                    drop(st);
                    let pgids: Vec<libc::pid_t> = targets.iter().map(|t| t.1).collect();
                    let rss = limits::sample_groups(&pgids);
                    st = self.lock();
                    self.apply_samples(&mut st, &targets, &rss);
                }
                next_sample = Instant::now() + limits::SAMPLE_INTERVAL;
            }
            if size_due {
                let max = self.cfg.output_bytes_max;
                for r in st.running.values_mut() {
                    r.stdout.enforce_cap(max);
                    r.stderr.enforce_cap(max);
                }
                next_size_check = now + SIZE_CHECK_INTERVAL;
            }
            let mut wake = next_size_check;
            for r in st.running.values() {
                let due = match &r.stopping {
                    Some(s) => s.kill_at,
                    None => r.deadline,
                };
                if let Some(d) = due {
                    wake = wake.min(d);
                }
                if r.enforce_by_sampling && r.stopping.is_none() {
                    wake = wake.min(next_sample);
                }
            }
            st.watchdog_wake = wake;
            let timeout = wake.saturating_duration_since(Instant::now());
            st = self
                .watchdog_cv
                .wait_timeout(st, timeout)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Records sampled RSS and kills tasks above their limit (sampling mode).
    fn apply_samples(&self, st: &mut State, targets: &[(AttemptId, libc::pid_t)], rss: &[u64]) {
        for (&(attempt, pid), &bytes) in targets.iter().zip(rss) {
            // Gone or replaced while we scanned: the sample is not its.
            let Some(r) = st.running.get_mut(&attempt).filter(|r| r.pid == pid) else {
                continue;
            };
            r.peak_sampled_bytes = r.peak_sampled_bytes.max(bytes);
            let over = r.memory_limit.is_some_and(|limit| bytes > limit);
            if over && r.enforce_by_sampling && r.stopping.is_none() {
                // Memory does not wait for a grace period. The entry exists, so the
                // leader is not reaped and its group id is still its own.
                kill_group(r.pid, libc::SIGKILL);
                log_event!(
                    self.cfg.event_log.as_deref(),
                    "kill {attempt} {}",
                    AttemptEnd::OutOfMemory.class()
                );
                tracing::info!(
                    attempt,
                    rss_bytes = bytes,
                    limit_bytes = r.memory_limit,
                    "task over its memory limit; killed"
                );
                r.stopping = Some(Stopping {
                    end: AttemptEnd::OutOfMemory,
                    kill_at: None,
                });
            }
        }
    }

    /// Called by the reaper for one of our leaders that exited (still a zombie).
    fn finish(&self, attempt: AttemptId, pid: libc::pid_t) {
        let running = {
            let mut st = self.lock();
            let r = st.running.remove(&attempt);
            if st.running.is_empty() {
                self.idle_cv.notify_all();
            }
            r
        };
        // Stragglers in the group must not keep using the agent's resources. The
        // leader is still a zombie, so its group id cannot have been reused.
        kill_group(pid, libc::SIGKILL);
        if let Some(g) = &self.cfg.orphan_guard {
            g.exited(pid);
        }
        // `None` only if something else reaped our child (see the invariant above).
        let reaped = reap(pid);
        if reaped.is_none() {
            tracing::error!(pid, attempt, "the exit status of a task was lost");
        }
        let ended_at_us = unix_us();
        let Some(r) = running else {
            tracing::error!(pid, attempt, "a reaped task had no record; this is a bug");
            return;
        };
        let (status, rusage) = reaped.unwrap_or((0, zeroed_rusage()));
        let tail = self.cfg.tail_bytes;
        let (stdout_tail, stdout_bytes) = r.stdout.tail(tail);
        let (stderr_tail, stderr_bytes) = r.stderr.tail(tail);
        let (cgroup_oom, cgroup_peak) = match &r.cgroup {
            Some(cg) => (cg.oom_killed(), cg.peak_bytes().unwrap_or(0)),
            None => (false, 0),
        };
        let stopped = r.stopping.is_some();
        let end = ending::classify(
            &Observed {
                stopping: r.stopping.map(|s| s.end),
                status: reaped.map(|(s, _)| s),
                cgroup_oom,
                container_memory_limited: r.container_memory_limited,
                ran_for: r.started.elapsed(),
                stderr_tail: &stderr_tail,
            },
            || stage::missing_outputs(&r.cwd, attempt, &r.outputs),
        );
        if let Some(cg) = r.cgroup {
            cg.remove();
        }
        // A client that was stopped or died of a signal may leave its container
        // running under the runtime; make sure it goes.
        if r.detached_container && (stopped || libc::WIFSIGNALED(status)) {
            self.kill_container(attempt);
        }
        let cpu_time_us = timeval_us(rusage.ru_utime) + timeval_us(rusage.ru_stime);
        // Linux reports ru_maxrss in KiB; it is the largest single process, the
        // samples and the cgroup sum the whole tree.
        let rusage_peak = u64::try_from(rusage.ru_maxrss).unwrap_or(0) * 1024;
        self.send(ExecEvent::Finished(AttemptResult {
            attempt,
            end,
            started_at_us: r.started_at_us,
            ended_at_us,
            peak_rss_bytes: rusage_peak.max(r.peak_sampled_bytes).max(cgroup_peak),
            cpu_time_us,
            stdout_tail,
            stderr_tail,
            stdout_bytes,
            stderr_bytes,
        }));
        // After the event: the caller may be waiting on it to start the next task.
        self.recycle(r.stdout);
        self.recycle(r.stderr);
    }

    /// `<runtime> stop -t GRACE scalable-<attempt>` as a helper (podman/docker).
    fn stop_container(&self, attempt: AttemptId) {
        if let Some(rt) = &self.cfg.runtime {
            if let Some(argv) = runtime::stop_argv(rt, attempt, self.cfg.kill_grace) {
                spawn_helper(&argv, &rt.env);
            }
        }
    }

    /// `<runtime> rm -f scalable-<attempt>` as a helper (podman/docker).
    fn kill_container(&self, attempt: AttemptId) {
        if let Some(rt) = &self.cfg.runtime {
            if let Some(argv) = runtime::kill_argv(rt, attempt) {
                spawn_helper(&argv, &rt.env);
            }
        }
    }
}

impl Inner {
    /// An empty output file: a spare one if there is, else a new one.
    fn output_file(&self) -> io::Result<File> {
        let spare = self
            .spare_files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match spare {
            Some(f) => Ok(f),
            None => open_output(&self.cfg.log_dir),
        }
    }

    /// Keeps a finished task's output file for reuse, if nothing but us still has
    /// it open. Why reuse: creating and freeing an ext4 inode per stream was about
    /// a tenth of the CPU a `/bin/true` task costs the machine.
    fn recycle(&self, stream: Stream) {
        if !stream.reusable {
            return;
        }
        let f = stream.file;
        let mut spare = self
            .spare_files
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if spare.len() >= SPARE_FILES_MAX {
            return;
        }
        // The kernel grants a write lease only if no other open file description of
        // the file exists. The task's own description is separate from ours
        // (`child_handle`), so this fails while anything that escaped the process
        // group (or is still dying) holds the task's stdout; such a file is dropped,
        // never handed to another task.
        let fd = f.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, integer arguments.
        if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) } != 0 {
            return;
        }
        // SAFETY: as above; releases the lease we just took.
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        // Truncating an empty file still costs a journal update; a stat is cheaper.
        let empty = f.metadata().is_ok_and(|m| m.len() == 0);
        if empty || f.set_len(0).is_ok() {
            spare.push(f);
        }
    }
}

impl Stream {
    /// Truncates the file to 0 if it exceeds `max`; the child's O_APPEND writes go on
    /// at the new end. Bytes written between the size check and the truncation are
    /// lost uncounted; the count is approximate by that much.
    fn enforce_cap(&mut self, max: u64) {
        let Ok(meta) = self.file.metadata() else {
            return;
        };
        let len = meta.len();
        if len > max {
            match self.file.set_len(0) {
                Ok(()) => self.dropped_bytes += len,
                Err(e) => tracing::warn!("cannot truncate an oversized output file: {e}"),
            }
        }
    }

    /// The last `tail_bytes` of the stream (after the dropped-output note, if any)
    /// and the total bytes written.
    fn tail(&self, tail_bytes: usize) -> (Vec<u8>, u64) {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        let total = self.dropped_bytes + len;
        let mut out = Vec::new();
        let mut room = tail_bytes;
        if self.dropped_bytes > 0 && tail_bytes > DROPPED_NOTE.len() {
            out.extend_from_slice(DROPPED_NOTE);
            room -= DROPPED_NOTE.len();
        }
        let n = len.min(room as u64);
        let start = out.len();
        // n <= room <= tail_bytes, a usize.
        out.resize(start + n as usize, 0);
        let mut filled = 0;
        while filled < n as usize {
            match self
                .file
                .read_at(&mut out[start + filled..], len - n + filled as u64)
            {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("cannot read an output file: {e}");
                    break;
                }
            }
        }
        out.truncate(start + filled);
        (out, total)
    }
}

// ------------------------------------------------------------------ the reaper

/// The process-wide reaper: `wait*` on any child is process-global, so there is
/// exactly one, shared by every executor.
static REAPER: Reaper = Reaper {
    state: Mutex::new(ReapState {
        owners: BTreeMap::new(),
        in_flight: BTreeSet::new(),
        next_ticket: 0,
        epoch: 0,
        waiting: false,
        thread_started: false,
    }),
    cv: Condvar::new(),
};

struct Reaper {
    state: Mutex<ReapState>,
    cv: Condvar,
}

struct ReapState {
    /// Leader pid → the executor and attempt it belongs to.
    owners: BTreeMap<libc::pid_t, (Arc<Inner>, AttemptId)>,
    /// Tickets of the spawns under way, whose pid is not in `owners` yet.
    in_flight: BTreeSet<u64>,
    next_ticket: u64,
    /// Bumped after every spawn, so a reaper that saw ECHILD knows to look again.
    epoch: u64,
    /// The reaper sleeps on `cv`; spawns only notify when it does (saves a syscall).
    waiting: bool,
    thread_started: bool,
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, ReapState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ensure_thread(&'static self) -> io::Result<()> {
        let mut st = self.lock();
        if !st.thread_started {
            std::thread::Builder::new()
                .name("exec-reaper".into())
                .spawn(move || self.run())?;
            st.thread_started = true;
        }
        Ok(())
    }

    /// Before a spawn; the ticket goes to `end_spawn`.
    fn begin_spawn(&self) -> u64 {
        let mut st = self.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.in_flight.insert(ticket);
        ticket
    }

    /// After a spawn attempt: record the new leader (if any) and wake the reaper.
    fn end_spawn(&self, ticket: u64, owner: Option<(libc::pid_t, Arc<Inner>, AttemptId)>) {
        let mut st = self.lock();
        st.in_flight.remove(&ticket);
        st.epoch = st.epoch.wrapping_add(1);
        if let Some((pid, inner, attempt)) = owner {
            st.owners.insert(pid, (inner, attempt));
        }
        if st.waiting {
            self.cv.notify_all();
        }
    }

    fn wait_on<'a>(&self, st: MutexGuard<'a, ReapState>) -> MutexGuard<'a, ReapState> {
        let mut st = st;
        st.waiting = true;
        let mut st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        st.waiting = false;
        st
    }

    fn run(&self) {
        loop {
            let epoch = self.lock().epoch;
            match peek_exited() {
                Ok(pid) => self.handle(pid),
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                    // No children: sleep until a spawn bumps the epoch. A spawn that
                    // finished after `epoch` was read has bumped it already.
                    let mut st = self.lock();
                    while st.epoch == epoch {
                        st = self.wait_on(st);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    // Not expected from waitid; back off instead of spinning.
                    tracing::error!("waitid failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn handle(&self, pid: libc::pid_t) {
        let owner = {
            let mut st = self.lock();
            // Only a spawn that began before this point can have made `pid`; later
            // ones must not hold up an orphan (or everything behind it).
            let horizon = st.next_ticket;
            loop {
                if let Some(o) = st.owners.remove(&pid) {
                    break Some(o);
                }
                if st.in_flight.range(..horizon).next().is_none() {
                    break None;
                }
                // Possibly a child whose `start` has not recorded it yet: it stays
                // a zombie (WNOWAIT) until the record exists or its spawn ends.
                st = self.wait_on(st);
            }
        };
        match owner {
            Some((inner, attempt)) => inner.finish(attempt, pid),
            None => {
                // An orphan re-parented to us, or a failed spawn's child that libc
                // already reaped (then this finds nothing, which is fine).
                let _ = reap(pid);
            }
        }
    }
}

/// Waits for any child to exit without reaping it; returns its pid.
fn peek_exited() -> io::Result<libc::pid_t> {
    // SAFETY: siginfo_t is plain data; zeroed is a valid value and waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t.
    let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid succeeded for an exited child, so si_pid is the valid field.
    Ok(unsafe { info.si_pid() })
}

/// Reaps `pid` (an exited child); its wait status and resource usage.
fn reap(pid: libc::pid_t) -> Option<(libc::c_int, libc::rusage)> {
    let mut status: libc::c_int = 0;
    let mut ru = zeroed_rusage();
    loop {
        // SAFETY: `status` and `ru` are valid for writes.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if rc == pid {
            return Some((status, ru));
        }
        if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

fn zeroed_rusage() -> libc::rusage {
    // SAFETY: rusage is plain integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

// ------------------------------------------------------------------- helpers

/// Runs a fire-and-forget helper (stopping a container). Spawned under a reaper
/// ticket like a task, so the reaper, which waits for any child, treats it as an
/// unknown pid and just reaps it; nothing waits for it here. Its own process group
/// and null stdio: it outlives an agent that is exiting and never writes into a
/// task's output.
fn spawn_helper(argv: &[String], env: &[(String, String)]) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    let ticket = REAPER.begin_spawn();
    let spawned = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    REAPER.end_spawn(ticket, None);
    match spawned {
        // Dropping `Child` neither waits nor kills.
        Ok(child) => drop(child),
        Err(e) => tracing::warn!("cannot run {program}: {e}"),
    }
}

/// Signals a whole process group; a group that is already gone (ESRCH) is fine.
fn kill_group(pgid: libc::pid_t, sig: libc::c_int) {
    // Never signal group 0/1 or our own group by mistake.
    if pgid <= 1 {
        return;
    }
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe { libc::killpg(pgid, sig) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, sig, "killpg failed: {e}");
        }
    }
}

/// Gives the child its own open file description of `file` (by reopening it
/// through /proc), so `Inner::recycle` can tell when the child's is closed. Without
/// /proc it falls back to a shared description and the file is not reused.
fn child_handle(file: File) -> io::Result<(Stream, File)> {
    let reopened = OpenOptions::new()
        .append(true)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let (child, reusable) = match reopened {
        Ok(c) => (c, true),
        Err(_) => (file.try_clone()?, false),
    };
    Ok((
        Stream {
            file,
            dropped_bytes: 0,
            reusable,
        },
        child,
    ))
}

/// Whether O_TMPFILE failed once in this process; then go straight to the fallback.
static NO_TMPFILE: AtomicBool = AtomicBool::new(false);
static FALLBACK_SEQ: AtomicU64 = AtomicU64::new(0);

/// An anonymous file in `dir` opened O_RDWR | O_APPEND.
fn open_output(dir: &Path) -> io::Result<File> {
    if !NO_TMPFILE.load(Ordering::Relaxed) {
        let r = OpenOptions::new()
            .read(true)
            .append(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir);
        match r {
            Ok(f) => return Ok(f),
            // EOPNOTSUPP: the filesystem lacks it; EISDIR/EINVAL: the kernel does.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                NO_TMPFILE.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    let name = format!(
        ".scalable-out-{}-{}",
        std::process::id(),
        FALLBACK_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let f = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
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

fn timeval_us(t: libc::timeval) -> u64 {
    let us = i128::from(t.tv_sec) * 1_000_000 + i128::from(t.tv_usec);
    u64::try_from(us).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalable_common::resources::Resources;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    /// Generous bound for one short test task on a loaded 2-core machine.
    const EVENT_WAIT_MAX: Duration = Duration::from_secs(30);

    struct Env {
        exec: Executor,
        rx: UnboundedReceiver<ExecEvent>,
        dir: tempfile::TempDir,
    }

    fn env_with(tweak: impl FnOnce(&mut ExecConfig)) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ExecConfig::new(dir.path());
        cfg.kill_grace = Duration::from_millis(200);
        tweak(&mut cfg);
        let (tx, rx) = unbounded_channel();
        let exec = Executor::new(cfg, tx).expect("executor");
        Env { exec, rx, dir }
    }

    fn env() -> Env {
        env_with(|_| {})
    }

    fn assignment(attempt: AttemptId, argv: &[&str]) -> Assignment {
        Assignment {
            attempt,
            task: 100 + attempt,
            run: 7,
            attempt_number: 1,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            cwd: String::new(),
            resources: Resources::cpus(1),
            walltime_ms: None,
            outputs: Vec::new(),
            container: None,
            inputs: Vec::new(),
        }
    }

    impl Env {
        fn recv(&mut self) -> ExecEvent {
            let until = Instant::now() + EVENT_WAIT_MAX;
            loop {
                match self.rx.try_recv() {
                    Ok(ev) => return ev,
                    Err(_) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => panic!("no event within {EVENT_WAIT_MAX:?}: {e}"),
                }
            }
        }

        /// Runs one assignment to its end; checks Started comes first (if at all).
        fn run(&mut self, a: &Assignment) -> (Option<Started>, AttemptResult) {
            self.exec.start(a);
            self.wait(a.attempt)
        }

        fn wait(&mut self, attempt: AttemptId) -> (Option<Started>, AttemptResult) {
            let mut started = None;
            loop {
                match self.recv() {
                    ExecEvent::Started(s) => {
                        assert_eq!(s.attempt, attempt);
                        assert!(started.is_none(), "two Started events");
                        started = Some(s);
                    }
                    ExecEvent::Finished(r) => {
                        assert_eq!(r.attempt, attempt);
                        return (started, r);
                    }
                }
            }
        }
    }

    #[test]
    fn executor_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Executor>();
    }

    #[test]
    fn true_and_false_give_their_exit_codes() {
        let mut e = env();
        let (started, r) = e.run(&assignment(1, &["true"]));
        let started = started.expect("a Started event");
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        assert_eq!(r.started_at_us, started.at_us);
        assert!(r.ended_at_us >= r.started_at_us);
        let (_, r) = e.run(&assignment(2, &["false"]));
        assert_eq!(r.end, AttemptEnd::Exited { code: 1 });
        assert_eq!(e.exec.running(), 0);
    }

    #[test]
    fn tails_and_byte_counts_of_both_streams() {
        let mut e = env();
        let (_, r) = e.run(&assignment(
            1,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
        ));
        assert_eq!(r.end, AttemptEnd::Exited { code: 3 });
        assert_eq!(r.stdout_tail, b"out\n");
        assert_eq!(r.stderr_tail, b"err\n");
        assert_eq!((r.stdout_bytes, r.stderr_bytes), (4, 4));
    }

    #[test]
    fn tail_is_the_last_tail_bytes() {
        let mut e = env_with(|c| c.tail_bytes = 4);
        let (_, r) = e.run(&assignment(1, &["sh", "-c", "printf 0123456789"]));
        assert_eq!(r.stdout_tail, b"6789");
        assert_eq!(r.stdout_bytes, 10);
    }

    #[test]
    fn missing_program_is_spawn_failed_without_started() {
        let mut e = env();
        let (started, r) = e.run(&assignment(1, &["/nonexistent/scalable-no-such-prog"]));
        assert!(started.is_none());
        match r.end {
            AttemptEnd::SpawnFailed { error } => {
                assert!(error.contains("scalable-no-such-prog"), "{error}")
            }
            other => panic!("expected SpawnFailed, got {other:?}"),
        }
        assert_eq!(r.started_at_us, 0);
        assert_eq!(e.exec.running(), 0);
    }

    #[test]
    fn empty_argv_is_spawn_failed() {
        let mut e = env();
        let (_, r) = e.run(&assignment(1, &[]));
        assert!(
            matches!(r.end, AttemptEnd::SpawnFailed { .. }),
            "{:?}",
            r.end
        );
    }

    #[test]
    fn odd_input_is_spawn_failed_or_runs_never_a_panic() {
        let mut e = env();
        let (_, r) = e.run(&assignment(1, &["echo", "a\0b"]));
        assert!(
            matches!(r.end, AttemptEnd::SpawnFailed { .. }),
            "{:?}",
            r.end
        );
        let mut a = assignment(2, &["true"]);
        a.env = vec![("BAD\0KEY".into(), "x".into())];
        let (_, r) = e.run(&a);
        assert!(
            matches!(r.end, AttemptEnd::SpawnFailed { .. }),
            "{:?}",
            r.end
        );
        let mut a = assignment(3, &["true"]);
        a.walltime_ms = Some(u64::MAX);
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
    }

    #[test]
    fn starting_a_running_attempt_again_is_ignored() {
        let mut e = env();
        let a = assignment(1, &["sleep", "0.3"]);
        e.exec.start(&a);
        e.exec.start(&a);
        assert_eq!(e.exec.running(), 1);
        let (_, r) = e.wait(1);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        std::thread::sleep(Duration::from_millis(100));
        assert!(e.rx.try_recv().is_err(), "exactly one Finished");
    }

    #[test]
    fn missing_cwd_is_spawn_failed_naming_the_directory() {
        let mut e = env();
        let mut a = assignment(1, &["true"]);
        a.cwd = "/nonexistent/scalable-no-such-dir".into();
        let (_, r) = e.run(&a);
        match r.end {
            AttemptEnd::SpawnFailed { error } => assert!(
                error.contains("working directory") && error.contains("scalable-no-such-dir"),
                "{error}"
            ),
            other => panic!("expected SpawnFailed, got {other:?}"),
        }
    }

    #[test]
    fn relative_cwd_is_relative_to_the_agent_cwd() {
        let mut e = env();
        let mut a = assignment(1, &["pwd"]);
        a.cwd = "src".into();
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        let expected = std::env::current_dir().expect("cwd").join("src");
        assert_eq!(
            String::from_utf8_lossy(&r.stdout_tail).trim_end(),
            expected.to_string_lossy()
        );
    }

    #[test]
    fn missing_declared_output_is_outputs_missing() {
        let mut e = env();
        let cwd = e.dir.path().to_string_lossy().into_owned();
        let mut a = assignment(1, &["sh", "-c", "touch made.txt"]);
        a.cwd = cwd.clone();
        a.outputs = vec!["made.txt".into(), "never.txt".into()];
        let (_, r) = e.run(&a);
        assert_eq!(
            r.end,
            AttemptEnd::OutputsMissing {
                missing: vec!["never.txt".into()]
            }
        );
        let mut a = assignment(2, &["true"]);
        a.cwd = cwd;
        a.outputs = vec!["made.txt".into()];
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
    }

    #[test]
    fn staged_output_counts_and_the_stage_dir_is_exported() {
        let mut e = env();
        let cwd = e.dir.path().to_string_lossy().into_owned();
        let mut a = assignment(
            1,
            &["sh", "-c", "mkdir -p \"$SCALABLE_STAGE_DIR/sub\" && echo $SCALABLE_ATTEMPT_ID > \"$SCALABLE_STAGE_DIR/sub/r.txt\" && echo $SCALABLE_STAGE_DIR"],
        );
        a.cwd = cwd.clone();
        a.outputs = vec!["sub/r.txt".into()];
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{r:?}");
        let dir = e.dir.path().join(".scalable-stage/1");
        assert_eq!(
            String::from_utf8_lossy(&r.stdout_tail).trim(),
            dir.to_string_lossy()
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("sub/r.txt")).expect("staged"),
            "1\n"
        );
        assert!(
            !e.dir.path().join("sub/r.txt").exists(),
            "not promoted by the executor"
        );
        let stage = e.exec.stage_of(&a).expect("stage");
        assert_eq!(stage.dir(), dir);
    }

    #[test]
    fn no_outputs_no_stage_dir_and_no_variable() {
        let mut e = env();
        let mut a = assignment(1, &["sh", "-c", "echo \"[${SCALABLE_STAGE_DIR-unset}]\""]);
        a.cwd = e.dir.path().to_string_lossy().into_owned();
        let (_, r) = e.run(&a);
        assert_eq!(String::from_utf8_lossy(&r.stdout_tail), "[unset]\n");
        assert!(!e.dir.path().join(".scalable-stage").exists());
        assert!(e.exec.stage_of(&a).is_none());
    }

    #[test]
    fn spawn_and_kill_go_to_the_event_log() {
        let logdir = tempfile::tempdir().expect("tempdir");
        let path = logdir.path().join("events.log");
        let log = Arc::new(EventLog::open(&path).expect("log"));
        let mut e = env_with(|c| c.event_log = Some(log));
        let a = assignment(3, &["sleep", "30"]);
        e.exec.start(&a);
        let ExecEvent::Started(_) = e.recv() else {
            panic!("expected Started")
        };
        assert!(e.exec.stop(3, AttemptEnd::Cancelled));
        let (_, r) = e.wait(3);
        assert_eq!(r.end, AttemptEnd::Cancelled);
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let f: Vec<&str> = lines[0].split(' ').collect();
        assert_eq!(&f[..3], ["spawn", "3", "103"], "{text}");
        assert!(f[3].parse::<u32>().is_ok(), "{text}");
        assert_eq!(lines[1], "kill 3 CANCELLED");
    }

    #[test]
    fn walltime_times_out_within_a_second() {
        let mut e = env();
        let mut a = assignment(1, &["sleep", "10"]);
        a.walltime_ms = Some(200);
        let t0 = Instant::now();
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }

    #[test]
    fn walltime_escalates_to_sigkill_when_sigterm_is_ignored() {
        let mut e = env();
        // An ignored signal stays ignored across exec, so sleep ignores it too.
        let mut a = assignment(1, &["sh", "-c", "trap '' TERM; sleep 10"]);
        a.walltime_ms = Some(200);
        let t0 = Instant::now();
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::TimedOut);
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn stop_reports_the_given_end() {
        let mut e = env();
        e.exec.start(&assignment(1, &["sleep", "10"]));
        assert!(matches!(e.recv(), ExecEvent::Started(_)));
        assert_eq!(e.exec.running(), 1);
        let t0 = Instant::now();
        assert!(e.exec.stop(1, AttemptEnd::Cancelled));
        let (_, r) = e.wait(1);
        assert_eq!(r.end, AttemptEnd::Cancelled);
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(!e.exec.stop(1, AttemptEnd::Cancelled), "no longer running");
    }

    #[test]
    fn stop_all_and_kill_all_now() {
        let mut e = env();
        for id in 1..=2 {
            e.exec.start(&assignment(id, &["sleep", "10"]));
        }
        e.exec.stop_all(AttemptEnd::Drained);
        let mut ends = Vec::new();
        while ends.len() < 2 {
            if let ExecEvent::Finished(r) = e.recv() {
                ends.push(r.end);
            }
        }
        assert_eq!(ends, vec![AttemptEnd::Drained, AttemptEnd::Drained]);

        for id in 3..=4 {
            e.exec
                .start(&assignment(id, &["sh", "-c", "trap '' TERM; sleep 10"]));
        }
        let t0 = Instant::now();
        e.exec.kill_all_now();
        assert_eq!(e.exec.running(), 0);
        assert!(t0.elapsed() < Duration::from_secs(1));
        let mut finished = 0;
        while finished < 2 {
            if let ExecEvent::Finished(r) = e.recv() {
                assert_eq!(r.end, AttemptEnd::Drained);
                finished += 1;
            }
        }
    }

    #[test]
    fn peak_rss_covers_the_task() {
        let mut e = env();
        let (_, r) = e.run(&assignment(
            1,
            &[
                "python3",
                "-c",
                "x = bytearray(200*1024*1024); import time; time.sleep(0.2)",
            ],
        ));
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{:?}", r);
        assert!(r.peak_rss_bytes >= 200 << 20, "{}", r.peak_rss_bytes);
        assert!(r.cpu_time_us > 0);
    }

    /// Regression guard: a background child of a task must not outlive it.
    #[test]
    fn process_group_is_killed_after_the_leader_exits() {
        let mut e = env();
        let (_, r) = e.run(&assignment(1, &["sh", "-c", "sleep 37 & echo $!; exit 0"]));
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        let pid: u32 = String::from_utf8_lossy(&r.stdout_tail)
            .trim()
            .parse()
            .expect("the background pid");
        // Reading /proc, not running `ps`: the reaper would reap ps (see module doc).
        let until = Instant::now() + Duration::from_secs(3);
        loop {
            let alive = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                // Field 3 is the state; a zombie is dead already.
                Ok(stat) => stat.contains("(sleep)") && !stat.contains(") Z "),
                Err(_) => false,
            };
            if !alive {
                break;
            }
            assert!(Instant::now() < until, "sleep {pid} still runs");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn task_sees_its_env() {
        let mut e = env();
        let mut a = assignment(5, &[
            "sh",
            "-c",
            "echo $SCALABLE_RUN_ID $SCALABLE_TASK_ID $SCALABLE_ATTEMPT_ID $SCALABLE_ATTEMPT $SCALABLE_CPUS $EXTRA",
        ]);
        a.attempt_number = 3;
        a.resources = Resources::cpus(4);
        a.env = vec![("EXTRA".into(), "yes".into())];
        let (_, r) = e.run(&a);
        assert_eq!(String::from_utf8_lossy(&r.stdout_tail), "7 105 5 3 4 yes\n");
    }

    #[test]
    fn oversized_output_is_truncated_and_counted() {
        let mut e = env_with(|c| c.output_bytes_max = 1000);
        // Write past the cap, then outlive one size check (every second).
        let (_, r) = e.run(&assignment(
            1,
            &["sh", "-c", "head -c 5000 /dev/zero; sleep 2.5; echo end"],
        ));
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        assert_eq!(r.stdout_bytes, 5004);
        let mut expected = DROPPED_NOTE.to_vec();
        expected.extend_from_slice(b"end\n");
        assert_eq!(r.stdout_tail, expected);
    }

    #[test]
    fn reused_output_file_starts_empty() {
        let mut e = env();
        let (_, r) = e.run(&assignment(1, &["sh", "-c", "echo one; echo two >&2"]));
        assert_eq!(r.stdout_tail, b"one\n");
        let spare = e.exec.inner.spare_files.lock().expect("lock").len();
        assert_eq!(spare, 2, "both files kept for reuse");
        let (_, r) = e.run(&assignment(2, &["true"]));
        assert_eq!((r.stdout_bytes, r.stderr_bytes), (0, 0));
        assert!(r.stdout_tail.is_empty() && r.stderr_tail.is_empty());
    }

    /// Regression guard: output of a process that escaped the task's process group
    /// (setsid) must never show up in a later task's output via a reused file.
    #[test]
    fn escaped_writer_does_not_leak_into_the_next_task() {
        let mut e = env();
        let (_, r) = e.run(&assignment(
            1,
            &[
                "sh",
                "-c",
                "setsid sh -c 'sleep 0.4; echo LEAK; echo LEAK >&2' & sleep 0.1; exit 0",
            ],
        ));
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        let (_, r) = e.run(&assignment(2, &["sleep", "0.8"]));
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        assert!(
            r.stdout_tail.is_empty() && r.stderr_tail.is_empty(),
            "{r:?}"
        );
    }

    /// Processes (not zombies) whose process group is `pgid`, read from /proc (not
    /// `ps`: the reaper would reap it, see the module doc).
    fn live_in_group(pgid: libc::pid_t) -> Vec<libc::pid_t> {
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<libc::pid_t>() else {
                continue;
            };
            let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let zombie = stat
                .iter()
                .rposition(|&b| b == b')')
                .is_some_and(|i| stat.get(i + 2) == Some(&b'Z'));
            if crate::limits::parse_stat(&stat).is_some_and(|(g, _)| g == pgid) && !zombie {
                pids.push(pid);
            }
        }
        pids
    }

    #[test]
    fn memory_hog_is_killed_as_memory_exhaustion() {
        let mut e = env();
        let mut a = assignment(
            1,
            &[
                "python3",
                "-c",
                "x = bytearray(300*1024*1024); import time; time.sleep(5)",
            ],
        );
        a.resources.memory_bytes = 100 << 20;
        let t0 = Instant::now();
        let (started, r) = e.run(&a);
        assert!(started.is_some());
        assert_eq!(r.end, AttemptEnd::OutOfMemory, "{r:?}");
        assert_eq!(r.end.class(), "MEMORY_EXHAUSTION");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert!(r.peak_rss_bytes > 120 << 20, "{}", r.peak_rss_bytes);
    }

    #[test]
    fn memory_within_the_margin_is_not_killed() {
        // 100 MiB used, 90 MiB requested: within × 1.2 plus python's own ~10 MiB?
        // No: keep a clear gap both ways. 100 MiB used of a 200 MiB request.
        let mut e = env();
        let mut a = assignment(
            1,
            &[
                "python3",
                "-c",
                "x = bytearray(100*1024*1024); import time; time.sleep(0.8)",
            ],
        );
        a.resources.memory_bytes = 200 << 20;
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{r:?}");
    }

    #[test]
    fn memory_margin_is_configurable() {
        // 150 MiB used on a 100 MiB request: killed at × 1.2, fine at × 2.
        let hog = [
            "python3",
            "-c",
            "x = bytearray(150*1024*1024); import time; time.sleep(1)",
        ];
        let mut e = env_with(|c| c.memory_margin = 2.0);
        let mut a = assignment(1, &hog);
        a.resources.memory_bytes = 100 << 20;
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{r:?}");
    }

    /// The peak is the sum over the process tree, not the largest process (which
    /// is all `wait4`'s ru_maxrss gives).
    #[test]
    fn peak_rss_sums_the_process_tree() {
        let mut e = env();
        let mut a = assignment(
            1,
            &[
                "sh",
                "-c",
                "for i in 1 2; do python3 -c 'x = bytearray(100*1024*1024); import time; time.sleep(1.2)' & done; wait",
            ],
        );
        a.resources.memory_bytes = 1 << 30;
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{r:?}");
        assert!(r.peak_rss_bytes >= 200 << 20, "{}", r.peak_rss_bytes);
    }

    #[test]
    fn walltime_kills_the_whole_tree() {
        let mut e = env();
        let dir = e.dir.path().to_string_lossy().into_owned();
        let mut a = assignment(1, &["sh", "-c", "echo $$ > pgid; sleep 100 & sleep 100"]);
        a.cwd = dir.clone();
        a.walltime_ms = Some(300);
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::TimedOut);
        assert_eq!(r.end.class(), "TIMEOUT");
        let pgid: libc::pid_t = std::fs::read_to_string(format!("{dir}/pgid"))
            .expect("pgid file")
            .trim()
            .parse()
            .expect("a pid");
        let until = Instant::now() + Duration::from_secs(3);
        loop {
            let left = live_in_group(pgid);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < until,
                "still running in group {pgid}: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn missing_declared_input_is_invalid_input_without_starting() {
        let mut e = env();
        let dir = e.dir.path().to_string_lossy().into_owned();
        std::fs::write(e.dir.path().join("present.txt"), "x").expect("write");
        let mut a = assignment(1, &["touch", "ran.txt"]);
        a.cwd = dir;
        a.inputs = vec!["present.txt".into(), "absent.txt".into()];
        let (started, r) = e.run(&a);
        assert!(started.is_none(), "not even spawned");
        assert_eq!(
            r.end,
            AttemptEnd::InvalidInput {
                path: "absent.txt".into()
            }
        );
        assert!(!e.dir.path().join("ran.txt").exists());
        a.attempt = 2;
        a.inputs = vec!["present.txt".into()];
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
    }

    #[test]
    fn task_failing_fast_on_a_missing_file_is_invalid_input() {
        let mut e = env();
        let mut a = assignment(1, &["cat", "missing.txt"]);
        a.cwd = e.dir.path().to_string_lossy().into_owned();
        let (started, r) = e.run(&a);
        assert!(started.is_some());
        assert_eq!(
            r.end,
            AttemptEnd::InvalidInput {
                path: "missing.txt".into()
            },
            "{r:?}"
        );
        let (_, r) = e.run(&assignment(2, &["sh", "-c", "echo broken >&2; exit 4"]));
        assert_eq!(r.end, AttemptEnd::Exited { code: 4 });
        assert_eq!(r.end.class(), "EXIT_CODE");
        let (_, r) = e.run(&assignment(3, &["sh", "-c", "kill -SEGV $$"]));
        assert_eq!(
            r.end,
            AttemptEnd::Signalled {
                signal: libc::SIGSEGV
            }
        );
        assert_eq!(r.end.class(), "SIGNALED");
    }

    #[test]
    fn placement_binds_cores_and_sets_gpus() {
        let own = crate::cpuset::own_cpus().expect("mask");
        let core = *own.last().expect("a core");
        let mut e = env();
        let a = assignment(
            1,
            &[
                "sh",
                "-c",
                "echo $SCALABLE_CPU_LIST $CUDA_VISIBLE_DEVICES; grep Cpus_allowed_list /proc/$$/status",
            ],
        );
        e.exec.start_placed(
            &a,
            &Placement {
                cpus: Some(vec![core]),
                gpus: Some(vec!["1".into(), "3".into()]),
            },
        );
        let (_, r) = e.wait(1);
        let out = String::from_utf8_lossy(&r.stdout_tail).into_owned();
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some(format!("{core} 1,3").as_str()), "{out}");
        // The shell itself, and so everything it forks, was bound from birth.
        let allowed = lines.next().unwrap_or("");
        assert!(allowed.ends_with(&format!("\t{core}")), "{out}");
        // A GPU agent hides every device from a task that asked for none.
        let a = assignment(2, &["sh", "-c", "echo \"[${CUDA_VISIBLE_DEVICES-unset}]\""]);
        e.exec.start_placed(
            &a,
            &Placement {
                cpus: None,
                gpus: Some(vec![]),
            },
        );
        let (_, r) = e.wait(2);
        assert_eq!(r.stdout_tail, b"[]\n");
    }

    #[test]
    fn container_task_without_a_runtime_is_spawn_failed() {
        let mut e = env();
        let mut a = assignment(1, &["true"]);
        a.container = Some(scalable_common::protocol::ContainerSpec {
            image: "localhost/busybox:local".into(),
            mounts: vec![],
            env: vec![],
        });
        let (started, r) = e.run(&a);
        assert!(started.is_none());
        assert_eq!(
            r.end,
            AttemptEnd::SpawnFailed {
                error: "no container runtime on this agent".into()
            }
        );
    }

    /// 2,000 `/bin/true`, two at a time; each start gets `place(n)`.
    fn two_thousand_true(what: &str, place: impl Fn(u64) -> Placement) {
        const TASKS: u64 = 2000;
        const PARALLEL: u64 = 2;
        let mut e = env();
        let t0 = Instant::now();
        let mut next = 0;
        while next < PARALLEL {
            e.exec
                .start_placed(&assignment(next, &["/bin/true"]), &place(next));
            next += 1;
        }
        let mut done = 0;
        while done < TASKS {
            match e.rx.blocking_recv() {
                Some(ExecEvent::Finished(r)) => {
                    assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{r:?}");
                    done += 1;
                    if next < TASKS {
                        e.exec
                            .start_placed(&assignment(next, &["/bin/true"]), &place(next));
                        next += 1;
                    }
                }
                Some(ExecEvent::Started(_)) => {}
                None => panic!("event channel closed"),
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "spawn rate{what}: {TASKS} x /bin/true, {PARALLEL} at a time: {:.0}/s ({secs:.2} s)",
            TASKS as f64 / secs
        );
        assert_eq!(e.exec.running(), 0);
    }

    #[test]
    fn two_thousand_true_two_at_a_time() {
        two_thousand_true("", |_| Placement::default());
    }

    /// The agent's own path on a multi-core box: every task bound to a core.
    #[test]
    fn two_thousand_true_bound_to_cores() {
        let own = crate::cpuset::own_cpus().expect("mask");
        two_thousand_true(", bound to cores", |n| Placement {
            cpus: Some(vec![own[n as usize % own.len()]]),
            gpus: None,
        });
    }
}
