//! The spawn path: an assignment into a running child process, as fast as the
//! kernel allows.
//!
//! Owns: [`Executor::start`] and [`Executor::start_placed`], from the checks
//! before a spawn to the task's registration with the reaper and the orphan guard.
//! It must not wait for the child, nor take a lock or make a syscall per spawn
//! beyond what a task needs (`scripts/bench.sh spawn` measures it).
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
//! # Staged outputs
//!
//! A task with declared outputs gets its attempt's stage (`stage`) created
//! before the spawn and `SCALABLE_STAGE_DIR` pointing at it; an output counts as
//! present in the stage or at its final place. Promoting or discarding the stage
//! is the session's business (it follows the broker's ack). Tasks without
//! outputs get neither the directory nor the variable.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scalable_common::protocol::{Assignment, AttemptEnd, AttemptResult, Started};

use super::output::child_handle;
use super::reaper::REAPER;
use super::{later, unix_us, ExecEvent, Executor, Placement, Running};
use crate::limits::{self, LimitMode};
use crate::log_event;
use crate::runtime;
use crate::stage::{self, Stage};

/// The agent's variables every task gets (SPEC §4), passed into containers by name.
const TASK_ENV_NAMES: [&str; 5] = [
    "SCALABLE_RUN_ID",
    "SCALABLE_TASK_ID",
    "SCALABLE_ATTEMPT_ID",
    "SCALABLE_ATTEMPT",
    "SCALABLE_CPUS",
];

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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_env::{assignment, env, two_thousand_true};
    use super::super::Placement;
    use scalable_common::protocol::AttemptEnd;
    use scalable_common::resources::Resources;

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

    #[test]
    fn two_thousand_true_two_at_a_time() {
        two_thousand_true("", |_| Placement::default());
    }
}
