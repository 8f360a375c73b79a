//! The executor's watchdog thread: walltimes, SIGTERM → SIGKILL escalation,
//! memory sampling (the `limits` glue) and the output size cap (checked every
//! `SIZE_CHECK_INTERVAL_MAX` while tasks run, sooner for a fast writer).
//!
//! Owns: when each of those checks runs and `State::watchdog_wake`. It must not
//! spawn or reap, and must not hold the state lock while it scans `/proc` (starts
//! and ends go on meanwhile). It sleeps until the nearest deadline, so a task
//! that uses none of this costs it nothing.

use std::collections::BTreeSet;
use std::sync::{MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use scalable_common::protocol::{AttemptEnd, AttemptId};

use super::escapees;
use super::output::SIZE_CHECK_INTERVAL_MAX;
use super::stop::kill_group;
use super::{later, Inner, State, Stopping};
use crate::limits::{self, GroupSample};
use crate::log_event;

/// How often every running task's memory is sampled for its peak (telemetry),
/// and the longest the watchdog sleeps.
const TELEMETRY_INTERVAL: Duration = Duration::from_secs(1);

impl Inner {
    /// Enforces walltimes, SIGKILL escalation, memory limits and the output size
    /// cap. Sleeps until the nearest deadline, `TELEMETRY_INTERVAL` at most.
    pub(super) fn watchdog(&self) {
        let mut st = self.lock();
        let mut next_telemetry = Instant::now() + TELEMETRY_INTERVAL;
        let mut next_sample = Instant::now() + limits::SAMPLE_INTERVAL;
        let mut last_size_check = Instant::now();
        let mut next_size_check = last_size_check + SIZE_CHECK_INTERVAL_MAX;
        loop {
            if st.shutdown {
                return;
            }
            let now = Instant::now();
            self.expire_deadlines(&mut st, now);
            // Memory: limited tasks every SAMPLE_INTERVAL, the others at each
            // telemetry tick (peak only).
            let telemetry_due = now >= next_telemetry;
            if telemetry_due || now >= next_sample {
                st = self.sample_memory(st, telemetry_due);
                next_sample = Instant::now() + limits::SAMPLE_INTERVAL;
            }
            if telemetry_due {
                next_telemetry = now + TELEMETRY_INTERVAL;
            }
            if now >= next_size_check {
                let since = now.saturating_duration_since(last_size_check);
                next_size_check = now + self.enforce_output_caps(&mut st, since);
                last_size_check = now;
                if st.sweep_due || telemetry_due {
                    st = self.sweep_escapees(st);
                }
            }
            let wake = next_wake(&st, next_telemetry, next_size_check, next_sample);
            st.watchdog_wake = wake;
            let timeout = wake.saturating_duration_since(Instant::now());
            st = self
                .watchdog_cv
                .wait_timeout(st, timeout)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Kills the escaped processes of ended tasks (`escapees`), without the
    /// lock (it reads `/proc`); another sweep is due if it killed any.
    fn sweep_escapees<'a>(&'a self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let mut st = st;
        st.sweep_due = false;
        drop(st);
        let killed = escapees::sweep();
        let mut st = self.lock();
        st.sweep_due |= killed;
        st
    }

    /// Applies the output cap to every running task's streams; returns when the
    /// fastest-growing one must be checked again (`output::Stream::enforce_cap`).
    fn enforce_output_caps(&self, st: &mut State, since: Duration) -> Duration {
        let max = self.cfg.output_bytes_max;
        let keep = max.min(self.cfg.tail_bytes as u64);
        let mut next = SIZE_CHECK_INTERVAL_MAX;
        for r in st.running.values_mut() {
            next = next.min(r.stdout.enforce_cap(max, keep, since));
            next = next.min(r.stderr.enforce_cap(max, keep, since));
        }
        next
    }

    /// Walltimes that passed get SIGTERM (and the container a stop), stops whose
    /// grace passed get SIGKILL. The first stop wins: a task being stopped keeps
    /// the end it was given.
    fn expire_deadlines(&self, st: &mut State, now: Instant) {
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
    }

    /// Samples the RSS of the tasks due (`all` sampled ones at a telemetry tick, the
    /// limited ones otherwise), with what escaped their groups, and applies it;
    /// at a telemetry tick the orphan guard learns the escaped groups. Releases
    /// the lock while it scans `/proc` and returns it taken again.
    fn sample_memory<'a>(&'a self, st: MutexGuard<'a, State>, all: bool) -> MutexGuard<'a, State> {
        let targets: Vec<(AttemptId, libc::pid_t)> = st
            .running
            .iter()
            .filter(|(_, r)| r.sampled && (all || r.enforce_by_sampling))
            .map(|(&id, r)| (id, r.pid))
            .collect();
        if targets.is_empty() {
            let mut st = st;
            if all {
                self.guard_escaped(&mut st, BTreeSet::new());
            }
            return st;
        }
        // Scan /proc without holding the lock: starts and ends go on.
        drop(st);
        let pgids: Vec<libc::pid_t> = targets.iter().map(|t| t.1).collect();
        let samples = escapees::sample_tasks(&pgids, &targets);
        let mut st = self.lock();
        self.apply_samples(&mut st, &targets, &samples);
        if all {
            let escaped = samples.iter().flat_map(|s| s.escaped.iter().copied());
            self.guard_escaped(&mut st, escaped.collect());
        }
        st
    }

    /// Records sampled RSS and kills tasks above their limit (sampling mode).
    fn apply_samples(
        &self,
        st: &mut State,
        targets: &[(AttemptId, libc::pid_t)],
        samples: &[GroupSample],
    ) {
        let at_ms = super::unix_us() / 1_000;
        for (&(attempt, pid), sample) in targets.iter().zip(samples) {
            let bytes = sample.rss_bytes;
            // Gone or replaced while we scanned: the sample is not its.
            let Some(r) = st.running.get_mut(&attempt).filter(|r| r.pid == pid) else {
                continue;
            };
            r.peak_sampled_bytes = r.peak_sampled_bytes.max(bytes);
            r.usage.record(at_ms, sample.cpu_ms, bytes);
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
}

/// When the watchdog must look next: the nearest kill or walltime deadline,
/// the next sample while a limited task runs, the next size check while any
/// task runs, the next telemetry tick at the latest.
fn next_wake(
    st: &State,
    next_telemetry: Instant,
    next_size_check: Instant,
    next_sample: Instant,
) -> Instant {
    let mut wake = next_telemetry;
    if !st.running.is_empty() || st.sweep_due {
        wake = wake.min(next_size_check);
    }
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
    wake
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::test_env::{assignment, env, env_with};
    use scalable_common::protocol::AttemptEnd;

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

    /// Processes (not zombies) whose process group is `pgid`, read from /proc (not
    /// `ps`: the reaper would reap it, see the executor's doc).
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
        // Issue 13, item 6: the limit it was killed at goes with the result.
        assert_eq!(
            r.memory_limit_bytes,
            crate::limits::memory_limit_bytes(100 << 20, crate::limits::MEMORY_MARGIN_DEFAULT)
        );
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
}
