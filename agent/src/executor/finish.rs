//! One reaped task leader into one `Finished` event: its record, the rest of
//! its process group, its tails, its end and its measurements.
//!
//! Owns: what happens between the reaper finding an exited leader and the
//! result leaving on the event channel. It must not wait for anything but the
//! zombie it was handed (the reaper thread runs it, and every other exit waits
//! behind it), and it must send exactly one `Finished` per record.

use std::sync::Arc;

use scalable_common::protocol::{AttemptId, AttemptResult};

use super::reaper::{reap, zeroed_rusage};
use super::stop::kill_group;
use super::{unix_us, ExecEvent, Inner};
use crate::ending::{self, Observed};
use crate::stage;

impl Inner {
    /// Called by the reaper for one of our leaders that exited (still a zombie).
    /// Starts its successor (`handover`) right after its `Finished`.
    pub(super) fn finish(self: &Arc<Self>, attempt: AttemptId, pid: libc::pid_t) {
        let (running, successor) = {
            let mut st = self.lock();
            let r = st.running.remove(&attempt);
            // Its escaped processes (if any) are the next sweep's.
            st.sweep_due = true;
            let stopped = r.as_ref().is_none_or(|r| r.stopping.is_some());
            let successor = Self::take_successor(&mut st, attempt, stopped);
            if st.running.is_empty() {
                self.idle_cv.notify_all();
            }
            (r, successor)
        };
        if let Some((next, _)) = &successor {
            self.announce_handover(attempt, next.attempt);
        }
        // Stragglers in the group must not keep using the agent's resources. The
        // leader is still a zombie, so its group id cannot have been reused.
        kill_group(pid, libc::SIGKILL);
        if let Some(g) = &self.cfg.orphan_guard {
            g.exited(pid);
        }
        // `None` only if something else reaped our child (the executor's invariant).
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
        let exit_code = reaped
            .filter(|(s, _)| libc::WIFEXITED(*s))
            .map(|(s, _)| libc::WEXITSTATUS(s));
        // The kernel counts storage I/O in 512-byte blocks for the leader and
        // every descendant it waited for; a detached container's processes
        // are the runtime's, not the client's, so it does not say for those.
        let io_bytes = |blocks: libc::c_long| {
            (reaped.is_some() && !r.detached_container)
                .then(|| u64::try_from(blocks).unwrap_or(0) * 512)
        };
        let usage = r.usage.finish(ended_at_us / 1_000, cpu_time_us / 1_000);
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
            exit_code,
            memory_limit_bytes: r.memory_limit,
            read_bytes: io_bytes(rusage.ru_inblock),
            write_bytes: io_bytes(rusage.ru_oublock),
            input_bytes: r.input_bytes,
            usage,
        }));
        // After the event: the caller may be waiting on it to start the next task.
        self.recycle(r.stdout);
        self.recycle(r.stderr);
        if let Some((next, place)) = successor {
            self.start_successor(next, place);
        }
    }
}

fn timeval_us(t: libc::timeval) -> u64 {
    let us = i128::from(t.tv_sec) * 1_000_000 + i128::from(t.tv_usec);
    u64::try_from(us).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::test_env::{assignment, env};
    use scalable_common::protocol::AttemptEnd;

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

    /// Issue 16: a result carries the inputs' sizes, the I/O the kernel
    /// counted and, for a task that ran a few seconds, its usage series whose
    /// cpu sums to the total.
    #[test]
    fn a_long_task_reports_its_usage_series_io_and_input_sizes() {
        let mut e = env();
        let cwd = e.dir.path().to_string_lossy().into_owned();
        std::fs::write(e.dir.path().join("in.dat"), vec![7u8; 3000]).unwrap();
        let mut a = assignment(
            1,
            &[
                "sh",
                "-c",
                "end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do :; done",
            ],
        );
        a.cwd = cwd;
        a.inputs = vec!["in.dat".into(), ".".into()];
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{r:?}");
        assert_eq!(r.input_bytes, vec![3000, 0], "a directory counts 0");
        assert!(r.read_bytes.is_some() && r.write_bytes.is_some(), "{r:?}");
        assert!(r.usage.len() >= 2, "{:?}", r.usage);
        let cpu: u64 = r.usage.iter().map(|p| p.cpu_ms).sum();
        // The last point closes with the reaper's exact total; a sample's tick
        // rounding can only add a few milliseconds before it.
        let total = r.cpu_time_us / 1_000;
        assert!((total..total + 50).contains(&cpu), "{cpu} vs {total}");
        assert!(r.usage.iter().any(|p| p.rss_bytes > 0), "{:?}", r.usage);
        assert!(r.usage.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        assert_eq!(r.usage.last().unwrap().at_ms, r.ended_at_us / 1_000);
        let (_, short) = e.run(&assignment(2, &["true"]));
        assert!(short.usage.is_empty(), "{short:?}");
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
        // Reading /proc, not running `ps`: the reaper would reap ps (executor doc).
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
        // Issue 13, item 6: the code it exited with is kept (cat exits 1).
        assert_eq!(r.exit_code, Some(1));
        let (_, r) = e.run(&assignment(2, &["sh", "-c", "echo broken >&2; exit 4"]));
        assert_eq!(r.end, AttemptEnd::Exited { code: 4 });
        assert_eq!(r.end.class(), "EXIT_CODE");
        assert_eq!(r.exit_code, Some(4));
        let (_, r) = e.run(&assignment(3, &["sh", "-c", "kill -SEGV $$"]));
        assert_eq!(r.exit_code, None);
        assert_eq!(
            r.end,
            AttemptEnd::Signalled {
                signal: libc::SIGSEGV
            }
        );
        assert_eq!(r.end.class(), "SIGNALED");
    }
}
