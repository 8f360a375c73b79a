//! The spawn path: an assignment into a running child process, as fast as the
//! kernel allows.
//!
//! Owns: [`Executor::start`] and [`Executor::start_placed`], from the checks
//! before a spawn to the task's registration with the reaper and the orphan guard.
//! It must not wait for the child, nor take a lock or make a syscall per spawn
//! beyond what a task needs (`scripts/bench.sh spawn` measures it).
//!
//! # The steps
//!
//! [`Executor::start_placed`] is a sequence of named steps, each a function
//! with a doc comment: check inputs → prepare the stage → build the command
//! (container wrapping, `command`) → open the output files (`output`) → the
//! child's [`Launch`](super::launch::Launch): argv, environment, cwd, cores
//! (`command`) → make the cgroup → start it (`launch`) → move into the cgroup →
//! register (orphan guard, event log,
//! the running record, `Started`, the reaper). A step that fails returns the
//! attempt's end; what earlier steps made is undone and the attempt gets a
//! `Finished` only, never a `Started`.
//!
//! # How a task is started
//!
//! `launch`: a raw `clone(CLONE_VM | CLONE_VFORK)` whose child leads its own
//! process group, binds itself to its cores, takes stdin from `/dev/null` and
//! stdout/stderr from anonymous files in `log_dir`, then `execve`s. Not std's
//! `Command`: binding the child from birth with it meant narrowing the agent's
//! own thread around each spawn, which then waited behind the new task for that
//! core (`launch`'s doc has the measurement); and any `pre_exec` closure forces
//! std off its vfork path onto a full fork, 10-30% of the spawn rate here
//! (research/spawn-cost.md).
//!
//! # Staged outputs
//!
//! A task with declared outputs gets its attempt's stage (`stage`) created
//! before the spawn and `SCALABLE_STAGE_DIR` pointing at it; an output counts as
//! present in the stage or at its final place. Promoting or discarding the stage
//! is the session's business (it follows the broker's ack). Tasks without
//! outputs get neither the directory nor the variable.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scalable_common::protocol::{Assignment, AttemptEnd, AttemptId, AttemptResult, Started};

use super::command::task_launch;
use super::output::{Stream, SIZE_CHECK_INTERVAL_MAX};
use super::reaper::{Ticket, REAPER};
use super::{later, unix_us, ExecEvent, Executor, Inner, Placement, Running};
use crate::limits::{self, LimitMode, TaskCgroup};
use crate::log_event;
use crate::stage::Stage;
use crate::usage::UsageSeries;

/// What the steps before the spawn made, kept in the task's running record.
struct Prepared {
    cwd: PathBuf,
    stdout: Stream,
    stderr: Stream,
    memory_limit: Option<u64>,
    cgroup: Option<TaskCgroup>,
    detached_container: bool,
    /// The declared inputs' sizes (telemetry), from the existence check's stat.
    input_bytes: Vec<u64>,
}

impl Executor {
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
        if self.inner.lock().running.contains_key(&a.attempt) {
            // A resent assignment (e.g. after a reconnect): it runs already and its
            // events will come; a second copy must not overwrite its record.
            tracing::warn!(attempt = a.attempt, "start of a running attempt ignored");
            return;
        }
        if let Err(end) = self.inner.spawn_attempt(a, place) {
            self.inner.report_unstarted(a.attempt, end);
        }
    }
}

impl Inner {
    /// The steps of the spawn path in order (see the module doc). Each returns the
    /// attempt's end if it fails; nothing after it runs then. Runs on the
    /// session's thread ([`Executor::start_placed`]) or on the reaper's (a
    /// successor, `handover`).
    pub(super) fn spawn_attempt(
        self: &Arc<Self>,
        a: &Assignment,
        place: &Placement,
    ) -> Result<(), AttemptEnd> {
        let inner = self;
        let (cwd, input_bytes) = inner.check_inputs(a)?;
        let stage_dir = prepare_stage(a, &cwd)?;
        let memory_limit =
            limits::memory_limit_bytes(a.resources.memory_bytes, inner.cfg.memory_margin);
        let task_argv = inner.wrap_container(a, place, &cwd, stage_dir.is_some(), memory_limit)?;
        let argv = task_argv.argv(a);
        let (stdout, child_out, stderr, child_err) = inner.open_output_files()?;
        let launch = task_launch(
            argv,
            (&child_out, &child_err),
            a,
            &cwd,
            place,
            task_argv.wrapped.as_ref(),
            stage_dir.as_deref(),
        )
        .map_err(|e| spawn_failed(format!("cannot start {:?}: {e}", argv[0])))?;
        let cgroup = inner.make_cgroup(a.attempt, memory_limit, task_argv.detached_container);
        // The reaper of the task's first core finishes it (`home_reaper`).
        let ticket = REAPER.begin_spawn(place.cpus.as_ref().and_then(|c| c.first().copied()));
        let spawned = launch.start();
        // The parent's copies of the child's stdio go now, not at the end of scope.
        drop((child_out, child_err));
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => return Err(abandon_spawn(ticket, cgroup, &cwd, &argv[0], e)),
        };
        let cgroup = move_into_cgroup(cgroup, pid, a.attempt);
        let prepared = Prepared {
            cwd,
            stdout,
            stderr,
            memory_limit,
            cgroup,
            detached_container: task_argv.detached_container,
            input_bytes,
        };
        self.register(a, pid, ticket, prepared);
        Ok(())
    }

    /// Step "register": tells the orphan guard and the event log, records the
    /// task as running, sends `Started` and only then hands the pid to the reaper.
    /// Exists because that order is what makes `Started` precede `Finished`: the
    /// reaper cannot finish a pid it has not been given. Must not fail (the child
    /// runs already) and must end the reaper ticket on every path.
    fn register(self: &Arc<Self>, a: &Assignment, pid: libc::pid_t, ticket: Ticket, p: Prepared) {
        let inner = self;
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
        inner.record_running(a, pid, started_at_us, p);
        // Sent before the reaper can learn the pid, so Started precedes Finished.
        inner.send(ExecEvent::Started(Started {
            attempt: a.attempt,
            at_us: started_at_us,
        }));
        REAPER.end_spawn(ticket, Some((pid, self.clone(), a.attempt)));
    }

    /// Reports an attempt that never started: only a `Finished`, with zeroed
    /// measurements. Exists so every early exit of the spawn path reports the same
    /// way. Must not be used once a child runs (its end comes from the reaper).
    pub(super) fn report_unstarted(&self, attempt: AttemptId, end: AttemptEnd) {
        let now = unix_us();
        self.send(ExecEvent::Finished(AttemptResult::bare(
            attempt, end, 0, now,
        )));
    }

    /// Step "check inputs": an assignment that cannot run is refused before
    /// anything is made for it. Returns the task's absolute cwd and its
    /// inputs' sizes (the same stat; 0 for one that is not a regular file).
    /// Must not check the cwd itself (a missing cwd is the spawn's error, named
    /// as such) and touches no file unless the task declares inputs.
    fn check_inputs(&self, a: &Assignment) -> Result<(PathBuf, Vec<u64>), AttemptEnd> {
        if a.argv.is_empty() {
            return Err(spawn_failed("empty argv: nothing to run".into()));
        }
        let cwd = self.base_cwd.join(&a.cwd);
        let mut sizes = Vec::with_capacity(a.inputs.len());
        for input in &a.inputs {
            // A declared input that is not there will not appear while the task runs.
            let Ok(meta) = std::fs::metadata(cwd.join(input)) else {
                return Err(AttemptEnd::InvalidInput {
                    path: input.clone(),
                });
            };
            sizes.push(if meta.is_file() { meta.len() } else { 0 });
        }
        Ok((cwd, sizes))
    }

    /// Step "make the cgroup" (cgroup-v2 mode, a task with a memory limit): the
    /// task's cgroup exists before the spawn; the leader moves in right after it
    /// (no pre_exec). Processes of a detached container are not the client's, the
    /// runtime limits them. Must not fail the attempt: without a cgroup the
    /// watchdog samples its memory instead.
    fn make_cgroup(
        &self,
        attempt: AttemptId,
        memory_limit: Option<u64>,
        detached_container: bool,
    ) -> Option<TaskCgroup> {
        match (&self.cfg.limits, memory_limit) {
            (LimitMode::CgroupV2(cg), Some(limit)) if !detached_container => {
                match cg.create_task(attempt, limit) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::warn!(
                            attempt,
                            "no cgroup for the task ({e}); sampling its memory instead"
                        );
                        None
                    }
                }
            }
            _ => None,
        }
    }

    /// The running record of a spawned task, and an earlier watchdog wake if its
    /// walltime or memory sampling is due before the watchdog would look. One lock
    /// per spawn; must not do I/O while holding it.
    fn record_running(&self, a: &Assignment, pid: libc::pid_t, started_at_us: u64, p: Prepared) {
        let now = Instant::now();
        let deadline = a
            .walltime_ms
            .map(|ms| later(now, Duration::from_millis(ms)));
        let enforce_by_sampling =
            p.memory_limit.is_some() && p.cgroup.is_none() && !p.detached_container;
        let mut st = self.lock();
        st.running.insert(
            a.attempt,
            Running {
                pid,
                started_at_us,
                started: now,
                deadline,
                stopping: None,
                stdout: p.stdout,
                stderr: p.stderr,
                cwd: p.cwd,
                outputs: a.outputs.clone(),
                memory_limit: p.memory_limit,
                sampled: !p.detached_container,
                enforce_by_sampling,
                peak_sampled_bytes: 0,
                usage: UsageSeries::new(started_at_us / 1_000),
                input_bytes: p.input_bytes,
                cgroup: p.cgroup,
                detached_container: p.detached_container,
                container_memory_limited: p.detached_container && p.memory_limit.is_some(),
            },
        );
        let sample_at = now + limits::SAMPLE_INTERVAL;
        // The first task after a quiet spell: the watchdog sleeps a telemetry
        // interval then, longer than the output cap may wait.
        let first = st.running.len() == 1 && now + SIZE_CHECK_INTERVAL_MAX < st.watchdog_wake;
        if first
            || deadline.is_some_and(|d| d < st.watchdog_wake)
            || (enforce_by_sampling && sample_at < st.watchdog_wake)
        {
            self.watchdog_cv.notify_one();
        }
    }
}

/// A `SpawnFailed` end with this error.
fn spawn_failed(error: String) -> AttemptEnd {
    AttemptEnd::SpawnFailed { error }
}

/// Step "prepare the stage": only tasks with declared outputs pay for a stage
/// (one mkdir). A missing cwd is left for the spawn to report, so this must not
/// create the cwd nor fail because it is missing.
fn prepare_stage(a: &Assignment, cwd: &Path) -> Result<Option<PathBuf>, AttemptEnd> {
    match Stage::new(a.attempt, cwd.to_path_buf(), &a.outputs) {
        Some(s) if cwd.is_dir() => match s.create() {
            Ok(d) => Ok(Some(d)),
            Err(e) => Err(spawn_failed(format!(
                "cannot create the stage dir for outputs: {e}"
            ))),
        },
        _ => Ok(None),
    }
}

/// After a failed spawn: ends the reaper ticket, removes the cgroup made for the
/// task and says why it did not start. Both a missing program and a missing cwd
/// say ENOENT; this tells them apart. Must not report anything itself.
fn abandon_spawn(
    ticket: Ticket,
    cgroup: Option<TaskCgroup>,
    cwd: &Path,
    program: &str,
    e: io::Error,
) -> AttemptEnd {
    REAPER.end_spawn(ticket, None);
    if let Some(cg) = cgroup {
        cg.remove();
    }
    let error = if !cwd.is_dir() {
        format!(
            "working directory {}: does not exist or is not a directory",
            cwd.display()
        )
    } else {
        format!("cannot start {program:?}: {e}")
    };
    spawn_failed(error)
}

/// Step "move into the cgroup": the leader joins the cgroup made before the
/// spawn. Must not fail the attempt: a task that cannot join is sampled instead
/// and its cgroup removed.
fn move_into_cgroup(
    cgroup: Option<TaskCgroup>,
    pid: libc::pid_t,
    attempt: AttemptId,
) -> Option<TaskCgroup> {
    cgroup.and_then(|cg| match cg.add(pid) {
        Ok(()) => Some(cg),
        Err(e) => {
            tracing::warn!(
                attempt,
                "cannot move the task into its cgroup ({e}); sampling its memory instead"
            );
            cg.remove();
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_env::{assignment, env, two_thousand_true};
    use super::super::Placement;
    use scalable_common::protocol::AttemptEnd;

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
    fn a_script_without_a_shebang_runs_in_sh_with_its_arguments() {
        use std::os::unix::fs::PermissionsExt;
        let mut e = env();
        let script = e.dir.path().join("plain.sh");
        std::fs::write(&script, "exit $(($1 + $2))\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = script.to_string_lossy().into_owned();
        let (started, r) = e.run(&assignment(1, &[&path, "3", "4"]));
        assert!(started.is_some());
        assert_eq!(r.end, AttemptEnd::Exited { code: 7 });
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
    fn two_thousand_true_two_at_a_time() {
        two_thousand_true("", |_| Placement::default());
    }
}
