//! Stopping and killing tasks: SIGTERM then SIGKILL to a task's process group,
//! the agent's exit path that kills everything at once, and the container
//! helpers (`<runtime> stop`, `<runtime> rm -f`) that podman and docker need.
//!
//! Owns: the `stopping` mark of a running task (the end it will report) and every
//! signal the executor sends. It must not reap (the reaper does) nor signal a
//! group whose leader is no longer in `running` (its pid may be reused).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use scalable_common::protocol::{AttemptEnd, AttemptId};

use super::escapees;
use super::reaper::REAPER;
use super::{later, Executor, Inner, Stopping, KILL_ALL_WAIT_MAX};
use crate::log_event;
use crate::runtime;

impl Executor {
    /// Stops a running attempt: SIGTERM to its process group, SIGKILL after
    /// `kill_grace`. Its `Finished` event carries `end` instead of the exit status
    /// (the first stop or walltime wins). Returns false if it is not running.
    pub fn stop(&self, attempt: AttemptId, end: AttemptEnd) -> bool {
        self.stop_within(attempt, end, self.inner.cfg.kill_grace)
    }

    /// [`Executor::stop`] with its own SIGTERM → SIGKILL grace (the drain's is
    /// shorter than the usual one, SPEC §6).
    pub fn stop_within(&self, attempt: AttemptId, end: AttemptEnd, grace: Duration) -> bool {
        self.inner.stop_within(attempt, end, grace)
    }

    /// [`Executor::stop`] for every running attempt.
    pub fn stop_all(&self, end: AttemptEnd) {
        self.stop_all_within(end, self.inner.cfg.kill_grace);
    }

    /// [`Executor::stop_within`] for every running attempt.
    pub fn stop_all_within(&self, end: AttemptEnd, grace: Duration) {
        let ids: Vec<AttemptId> = {
            let st = self.inner.lock();
            st.running
                .keys()
                .chain(st.handing.keys())
                .copied()
                .collect()
        };
        for id in ids {
            self.stop_within(id, end.clone(), grace);
        }
    }

    /// SIGKILLs every task's process group at once (the agent's exit path), waits
    /// until they are reaped, at most about a second, then kills what escaped
    /// their groups (`escapees`). Attempts not already being
    /// stopped end as `Drained` (handed back, no retry spent).
    pub fn kill_all_now(&self) {
        let mut st = self.inner.lock();
        // Nothing chained starts on the way out; the broker finds them lost.
        st.refuse_successors = true;
        st.successors.clear();
        for pending in st.handing.values_mut() {
            pending.get_or_insert((AttemptEnd::Drained, Duration::ZERO));
        }
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
        drop(st);
        // Their groups are dead, so what escaped them is the agent's child now.
        escapees::sweep_until_quiet();
    }
}

impl Inner {
    /// [`Executor::stop_within`]; also for the reaper's thread (`handover`).
    pub(super) fn stop_within(&self, attempt: AttemptId, end: AttemptEnd, grace: Duration) -> bool {
        let mut st = self.lock();
        match st.running.get_mut(&attempt) {
            Some(r) => {
                if r.stopping.is_none() {
                    log_event!(
                        self.cfg.event_log.as_deref(),
                        "kill {attempt} {}",
                        end.class()
                    );
                    // Safe against pid reuse: the entry exists, so the leader is not
                    // reaped yet (the reaper removes it before reaping).
                    kill_group(r.pid, libc::SIGTERM);
                    if r.detached_container {
                        self.stop_container(attempt);
                    }
                    let kill_at = later(Instant::now(), grace);
                    r.stopping = Some(Stopping {
                        end,
                        kill_at: Some(kill_at),
                    });
                    if kill_at < st.watchdog_wake {
                        self.watchdog_cv.notify_one();
                    }
                }
                true
            }
            // A successor the reaper is starting: stopped once it runs.
            None => match st.handing.get_mut(&attempt) {
                Some(pending) => {
                    pending.get_or_insert((end, grace));
                    true
                }
                None => false,
            },
        }
    }

    /// `<runtime> stop -t GRACE scalable-<attempt>` as a helper (podman/docker).
    pub(super) fn stop_container(&self, attempt: AttemptId) {
        if let Some(rt) = &self.cfg.runtime {
            if let Some(argv) = runtime::stop_argv(rt, attempt, self.cfg.kill_grace) {
                spawn_helper(&argv, &rt.env);
            }
        }
    }

    /// `<runtime> rm -f scalable-<attempt>` as a helper (podman/docker).
    pub(super) fn kill_container(&self, attempt: AttemptId) {
        if let Some(rt) = &self.cfg.runtime {
            if let Some(argv) = runtime::kill_argv(rt, attempt) {
                spawn_helper(&argv, &rt.env);
            }
        }
    }
}

/// Runs a fire-and-forget helper (stopping a container). Spawned under a reaper
/// ticket like a task, so the reaper, which waits for any child, treats it as an
/// unknown pid and just reaps it; nothing waits for it here. Its own process group
/// and null stdio: it outlives an agent that is exiting and never writes into a
/// task's output.
fn spawn_helper(argv: &[String], env: &[(String, String)]) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    let ticket = REAPER.begin_spawn(None);
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
pub(super) fn kill_group(pgid: libc::pid_t, sig: libc::c_int) {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::super::test_env::{assignment, env, env_with};
    use super::super::ExecEvent;
    use crate::event_log::EventLog;
    use scalable_common::protocol::AttemptEnd;

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
}
