//! What the agent holds: assignments queued, attempts running with the
//! resources, cores and GPUs they took, and results the broker has not
//! acknowledged yet; and which queued assignment starts next (best fit).
//!
//! Owns: the agent's free resources and free-lists and the outgoing `Started` and
//! results buffers. It must not do network I/O (the loop sends what it gathers)
//! and starts tasks only through the [`Executor`].

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};
use std::time::{Duration, Instant};

use scalable_common::protocol::{Assignment, AttemptEnd, AttemptId, AttemptResult, Started};
use scalable_common::resources::Resources;

use super::chain::Chained;
use super::unix_us;
use crate::cpuset::CpuPool;
use crate::event_log::EventLog;
use crate::executor::{ExecEvent, Executor, Placement};
use crate::gpus::GpuPool;
use crate::log_event;
use crate::stage::Stage;

/// Results kept for a broker that is away, at most.
const UNACKED_RESULTS_MAX: usize = 1_000_000;
/// A queued task that has not fitted for this long stops smaller ones starting.
/// Long on purpose: best-fit packing often keeps a large task waiting a few
/// seconds (a 1 s hold cost 6% packing efficiency, 3 s about 5%); this bounds starvation
/// of a task prefetched behind a stream, the broker's reservation does the rest.
const HOLD_AFTER: Duration = Duration::from_secs(3);

/// An attempt that runs: what it took, and where its outputs are staged.
pub(super) struct Held {
    pub(super) resources: Resources,
    pub(super) place: Placement,
    pub(super) stage: Option<Stage>,
    /// Its room went to its chained successor (`chain`): its end frees nothing.
    pub(super) handed_over: bool,
}

/// A result the broker has not acknowledged yet, and what its ack will need:
/// the stage to promote (counted) or discard (ignored).
pub(super) struct Unacked {
    pub(super) result: AttemptResult,
    pub(super) stage: Option<Stage>,
}

/// Work the agent holds: queued assignments, what runs, what awaits an ack.
pub(super) struct Work {
    pub(super) free: Resources,
    /// Free GPU ids; as many as `free.gpus`.
    pub(super) gpus: GpuPool,
    /// Free cores when tasks are bound; at least `free.cpus` of them.
    pub(super) cpus: Option<CpuPool>,
    /// All the agent offers (what `free` is when nothing runs).
    pub(super) capacity: Resources,
    pub(super) queue: VecDeque<Assignment>,
    /// When each queued assignment arrived (for holding the agent for one that
    /// has waited too long, see `best_fit`).
    pub(super) queued_at: FxHashMap<AttemptId, Instant>,
    pub(super) running: FxHashMap<AttemptId, Held>,
    /// Running attempt → the successor the executor starts on its room when it
    /// ends (`chain`); still queued as far as the broker knows.
    pub(super) chained: FxHashMap<AttemptId, Chained>,
    /// Successors are chained (off without a shared filesystem, see `chain`).
    pub(super) chaining: bool,
    /// Attempts whose inputs are being fetched (`stage_flow`): held, not queued.
    pub(super) transferring: FxHashSet<AttemptId>,
    /// Results sent (or to send) and not yet acknowledged; resent on reconnect.
    pub(super) unacked: FxHashMap<AttemptId, Unacked>,
    pub(super) out_started: Vec<Started>,
    pub(super) out_finished: Vec<AttemptResult>,
    /// Results of tasks killed by SIGTERM/SIGKILL from outside, held back for
    /// `EXTERNAL_KILL_GRACE`: when the agent itself is told to drain meanwhile,
    /// the signal was the pilot's teardown (scancel, preemption, node
    /// shutdown signals every process of the job at once), not the task's
    /// fault, and they are handed back as `Drained`.
    pub(super) suspects: Vec<(AttemptResult, Instant)>,
    /// Set when the drain starts: an outside kill reaped after it is the
    /// same teardown.
    pub(super) draining: bool,
    pub(super) last_busy: Instant,
}

/// How long a task killed by an outside SIGTERM/SIGKILL waits to see whether
/// its agent is being torn down with it.
pub(super) const EXTERNAL_KILL_GRACE: Duration = Duration::from_secs(1);

impl Work {
    pub(super) fn idle(&self) -> bool {
        self.queue.is_empty() && self.running.is_empty() && self.transferring.is_empty()
    }

    /// Every attempt the agent still holds, for the hello after a reconnect:
    /// running, queued (assigned, not started) and finished but unacknowledged.
    /// The broker cancels those it no longer considers ours.
    pub(super) fn held(&self) -> Vec<AttemptId> {
        let mut held: Vec<AttemptId> = self.running.keys().copied().collect();
        held.extend(self.queue.iter().map(|a| a.attempt));
        held.extend(self.unacked.keys().copied());
        held.extend(self.transferring.iter().copied());
        held.extend(self.chained_ids());
        held.sort_unstable();
        held.dedup();
        held
    }

    pub(super) fn new(free: Resources, gpu_ids: Vec<String>, cpus: Option<CpuPool>) -> Work {
        Work {
            capacity: free.clone(),
            free,
            gpus: GpuPool::new(gpu_ids),
            cpus,
            queue: VecDeque::new(),
            queued_at: FxHashMap::default(),
            running: FxHashMap::default(),
            chained: FxHashMap::default(),
            chaining: true,
            transferring: FxHashSet::default(),
            unacked: FxHashMap::default(),
            out_started: Vec::new(),
            out_finished: Vec::new(),
            suspects: Vec::new(),
            draining: false,
            last_busy: Instant::now(),
        }
    }

    pub(super) fn finished(&mut self, mut r: AttemptResult) {
        if self.draining && matches!(r.end, AttemptEnd::Signalled { signal: 15 | 9 }) {
            // Killed from outside while we drain: the pilot's teardown.
            r.end = AttemptEnd::Drained;
        }
        let mut stage = None;
        if let Some(held) = self.running.remove(&r.attempt).filter(|h| !h.handed_over) {
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
    pub(super) fn release_suspects(&mut self, now: Instant) {
        while let Some(i) = self.suspects.iter().position(|(_, due)| *due <= now) {
            let (r, _) = self.suspects.swap_remove(i);
            self.out_finished.push(r);
        }
    }

    /// The agent is draining: held-back outside kills were its teardown.
    pub(super) fn suspects_drained(&mut self) {
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
    pub(super) fn start_what_fits(&mut self, exec: &Executor, noop: bool) {
        if noop {
            self.complete_noop();
            return;
        }
        // A resent assignment of a running attempt (after a reconnect): its result
        // is coming; taking its resources, cores and GPUs again would leak them.
        self.reclaim_successors(exec);
        if self.free.cpus > 0 && !self.chained.is_empty() {
            self.unchain_for_free_room(exec);
        }
        let running = &self.running;
        let chained: FxHashSet<AttemptId> = self.chained_ids().collect();
        self.queue
            .retain(|a| !running.contains_key(&a.attempt) && !chained.contains(&a.attempt));
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
                handed_over: false,
            };
            self.running.insert(a.attempt, held);
            self.last_busy = Instant::now();
        }
        self.chain_successors(exec);
    }

    /// A queued task that has waited `HOLD_AFTER` without fitting holds the
    /// agent: nothing else starts (or is chained) until it fits.
    pub(super) fn holds_for_room(&self) -> bool {
        // The clock read once, not once per queued task: on a full agent every
        // queued task is one that does not fit (issue 15's profile).
        let Some(cutoff) = Instant::now().checked_sub(HOLD_AFTER) else {
            return false;
        };
        self.queue.iter().any(|a| {
            !a.resources.fits_in(&self.free)
                && a.resources.fits_in(&self.capacity)
                && self.queued_at.get(&a.attempt).is_some_and(|t| *t <= cutoff)
        })
    }

    fn best_fit(&self) -> Option<usize> {
        // Anti-starvation on the agent: a queued task that has waited HOLD_AFTER
        // without fitting holds the agent, nothing else starts until it fits
        // (the broker's reservation is the same idea one level up).
        if self.holds_for_room() {
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
        // The core this thread is on, if free: binding the spawn to it costs no
        // migration (`CpuPool::take_near`).
        let cpus = self
            .cpus
            .as_mut()
            .and_then(|p| p.take_near(req.cpus, crate::cpuset::current_cpu()));
        Placement { cpus, gpus }
    }

    pub(super) fn unstarted_result(a: &Assignment, end: AttemptEnd) -> AttemptResult {
        let now = unix_us();
        AttemptResult::bare(a.attempt, end, 0, now)
    }

    /// The broker committed these results. A counted attempt's staged outputs
    /// are promoted before its result is forgotten (so a crash in between
    /// resends the result rather than losing the outputs); an ignored one's
    /// stage is thrown away. Acks for results no longer held (a duplicate ack)
    /// change nothing.
    pub(super) fn acked(
        &mut self,
        counted: &[AttemptId],
        ignored: &[AttemptId],
        log: Option<&EventLog>,
    ) {
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

    /// Removes queued (or chained, not yet handed over) attempts named in
    /// `ids`, reporting them with `end`; returns the others.
    pub(super) fn drop_queued(
        &mut self,
        exec: &Executor,
        ids: &[AttemptId],
        end: &AttemptEnd,
    ) -> Vec<AttemptId> {
        let mut not_queued = Vec::new();
        for id in ids {
            if let Some(pos) = self.queue.iter().position(|a| a.attempt == *id) {
                let a = self.queue.remove(pos).expect("position found");
                self.queued_at.remove(&a.attempt);
                let r = Self::unstarted_result(&a, end.clone());
                self.finished(r);
            } else if !self.drop_chained(exec, *id, end) {
                not_queued.push(*id);
            }
        }
        not_queued
    }
}

pub(super) fn apply_exec_event(work: &mut Work, ev: ExecEvent) {
    match ev {
        ExecEvent::Started(s) => work.out_started.push(s),
        ExecEvent::Finished(r) => work.finished(r),
        ExecEvent::Handover { from, to } => work.handed_over(from, to),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tokio::sync::mpsc;

    use super::super::test_support::{assignment, drain};
    use super::*;
    use crate::executor::ExecConfig;

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
    fn a_task_that_waited_for_room_too_long_holds_the_agent() {
        let free = Resources {
            cpus: 2,
            memory_bytes: 1 << 30,
            ..Default::default()
        };
        let mut work = Work::new(free, Vec::new(), None);
        work.free.take(&Resources::cpus(1));
        work.queue
            .push_back(assignment(1, Resources::cpus(2), &["true"]));
        work.queue
            .push_back(assignment(2, Resources::cpus(1), &["true"]));
        let now = Instant::now();
        work.queued_at.insert(1, now);
        work.queued_at.insert(2, now);
        assert!(!work.holds_for_room(), "not waited long yet");
        assert_eq!(work.best_fit(), Some(1), "the small one fills the gap");
        let Some(long_ago) = now.checked_sub(HOLD_AFTER) else {
            return; // a clock younger than HOLD_AFTER: nothing waited that long
        };
        work.queued_at.insert(2, long_ago);
        assert!(!work.holds_for_room(), "one that fits never holds");
        work.queued_at.insert(1, long_ago);
        assert!(work.holds_for_room());
        assert_eq!(work.best_fit(), None, "nothing starts before it");
        let too_big = assignment(3, Resources::cpus(4), &["true"]);
        work.queue.retain(|a| a.attempt != 1);
        work.queue.push_back(too_big);
        work.queued_at.insert(3, long_ago);
        assert!(!work.holds_for_room(), "one that can never fit never holds");
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
