//! Which queued assignment starts next on a running attempt's cores
//! (the executor's `handover`), and taking such successors back.
//!
//! Owns: `Work::chained` (running attempt → its chained successor) and the
//! rule for chaining: a running attempt gets at most one successor, the first
//! queued assignment (within `CHAIN_SCAN_MAX`) whose resources equal its own,
//! so the successor fits exactly the room it inherits and best-fit packing is
//! not bypassed for tasks of other sizes. Nothing is chained while a queued
//! task holds the agent for room (`HOLD_AFTER`), nor on an agent without a
//! shared filesystem (its results wait for stage-out, `stage_flow`). It must
//! not start anything itself.
//!
//! To the broker a chained assignment is still queued: it is in `held()`, it
//! can be cancelled or returned until the executor hands it over, and one
//! handed over is treated as started.

use rustc_hash::FxHashSet;

use scalable_common::protocol::{AttemptEnd, AttemptId};

use super::work::{Held, Work};
use crate::executor::Executor;
use crate::stage::Stage;

/// How far into the queue a successor is looked for (a queue of other sizes
/// must not cost a scan of thousands per start).
const CHAIN_SCAN_MAX: usize = 64;
/// How many successors wait behind one running attempt.
const CHAIN_DEPTH: usize = 2;

/// A successor chained after a running attempt.
pub(super) struct Chained {
    pub(super) next: AttemptId,
    /// Where its outputs are staged once it runs.
    stage: Option<Stage>,
}

impl Work {
    /// Chains successors after every running attempt, up to `CHAIN_DEPTH`
    /// deep (a successor's own successor starts when it ends), while queued
    /// work of the same size is waiting. Why deeper than one: the session
    /// thread chains the next one only when it runs, which on a busy core can
    /// be a whole short task later, and the core idles if nothing is chained.
    pub(super) fn chain_successors(&mut self, exec: &Executor) {
        if !self.chaining || self.queue.is_empty() || self.holds_for_room() {
            return;
        }
        let heads: Vec<AttemptId> = self
            .running
            .iter()
            .filter(|(_, h)| !h.handed_over)
            .map(|(id, _)| *id)
            .collect();
        for head in heads {
            let held = &self.running[&head];
            let (resources, place) = (held.resources.clone(), held.place.clone());
            // Walk to the end of this attempt's chain.
            let mut after = head;
            let mut depth = 0;
            while let Some(c) = self.chained.get(&after) {
                after = c.next;
                depth += 1;
            }
            while depth < CHAIN_DEPTH {
                let Some(i) = self
                    .queue
                    .iter()
                    .take(CHAIN_SCAN_MAX)
                    .position(|a| a.resources == resources)
                else {
                    break;
                };
                let a = self.queue.remove(i).expect("index from position");
                let next = a.attempt;
                let stage = exec.stage_of(&a);
                match exec.chain(after, a, place.clone()) {
                    Ok(()) => {
                        self.queued_at.remove(&next);
                        self.chained.insert(after, Chained { next, stage });
                        after = next;
                        depth += 1;
                    }
                    Err(a) => {
                        self.queue.insert(i, *a);
                        break;
                    }
                }
            }
            if self.queue.is_empty() {
                break;
            }
        }
    }

    /// `to` started (or is starting) on `from`'s room: it runs with `from`'s
    /// resources and placement, and `from`'s end frees nothing.
    pub(super) fn handed_over(&mut self, from: AttemptId, to: AttemptId) {
        let stage = match self.chained.remove(&from) {
            Some(c) if c.next == to => c.stage,
            _ => {
                tracing::error!(from, to, "a handover the session did not chain; a bug");
                None
            }
        };
        let Some(held) = self.running.get_mut(&from) else {
            tracing::error!(from, to, "a handover from an attempt not running; a bug");
            return;
        };
        held.handed_over = true;
        let inherited = Held {
            resources: held.resources.clone(),
            place: held.place.clone(),
            stage,
            handed_over: false,
        };
        self.running.insert(to, inherited);
    }

    /// Successors of attempts that ended without handing over (stopped by us),
    /// and what was chained behind them, go back to the front of the queue.
    pub(super) fn reclaim_successors(&mut self, exec: &Executor) {
        loop {
            let nexts: FxHashSet<AttemptId> = self.chained_ids().collect();
            let orphaned: Vec<AttemptId> = self
                .chained
                .keys()
                .filter(|after| !self.running.contains_key(after) && !nexts.contains(after))
                .copied()
                .collect();
            if orphaned.is_empty() {
                return;
            }
            for after in orphaned {
                self.chained.remove(&after);
                if let Some(a) = exec.unchain(after) {
                    self.queue.push_front(a);
                }
            }
        }
    }

    /// Room is free (a task ended with nothing handed over): every successor
    /// not handed over yet goes back to the front of the queue, so it starts
    /// on the free room now instead of waiting behind a task that may run
    /// long. Why: a chain is a guess that its predecessor ends soon; a freed
    /// room is a fact. One already being handed over stays (its `Handover`
    /// is coming).
    pub(super) fn unchain_for_free_room(&mut self, exec: &Executor) {
        let afters: Vec<AttemptId> = self.chained.keys().copied().collect();
        let mut back = Vec::new();
        for after in afters {
            if let Some(a) = exec.unchain(after) {
                self.chained.remove(&after);
                back.push(a);
            }
        }
        // Lowest attempt first at the front: roughly the broker's order.
        back.sort_by_key(|a| std::cmp::Reverse(a.attempt));
        for a in back {
            self.queue.push_front(a);
        }
    }

    /// For a cancel, return or drain of `id`: if it is chained and not handed
    /// over yet, takes it back and reports it with `end` (true). False if it is
    /// not chained; `Some(false)`-like cases (handed over meanwhile) return
    /// false too, and its `Handover` makes it running.
    pub(super) fn drop_chained(
        &mut self,
        exec: &Executor,
        id: AttemptId,
        end: &AttemptEnd,
    ) -> bool {
        let Some(after) = self.chained_after(id) else {
            return false;
        };
        match exec.unchain(after) {
            Some(a) => {
                self.chained.remove(&after);
                self.finished(Self::unstarted_result(&a, end.clone()));
                true
            }
            None => false,
        }
    }

    /// The running attempt `id` is chained after, if any.
    pub(super) fn chained_after(&self, id: AttemptId) -> Option<AttemptId> {
        self.chained
            .iter()
            .find(|(_, c)| c.next == id)
            .map(|(after, _)| *after)
    }

    /// Every chained successor's attempt.
    pub(super) fn chained_ids(&self) -> impl Iterator<Item = AttemptId> + '_ {
        self.chained.values().map(|c| c.next)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use scalable_common::protocol::AttemptEnd;
    use scalable_common::resources::Resources;
    use tokio::sync::mpsc;

    use super::super::test_support::{assignment, drain};
    use super::super::work::{apply_exec_event, Work};
    use super::CHAIN_DEPTH;
    use crate::executor::{ExecConfig, ExecEvent, Executor};

    fn setup(
        cpus: u32,
    ) -> (
        Work,
        Executor,
        mpsc::UnboundedReceiver<ExecEvent>,
        tempfile::TempDir,
    ) {
        let logs = tempfile::tempdir().expect("tempdir");
        let (tx, rx) = mpsc::unbounded_channel();
        let exec = Executor::new(ExecConfig::new(logs.path()), tx).expect("executor");
        let free = Resources {
            memory_bytes: 1 << 30,
            ..Resources::cpus(cpus)
        };
        (Work::new(free, Vec::new(), None), exec, rx, logs)
    }

    /// Waits for the next executor event (bounded).
    fn next(rx: &mut mpsc::UnboundedReceiver<ExecEvent>) -> ExecEvent {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(ev) = rx.try_recv() {
                return ev;
            }
            assert!(Instant::now() < until, "no event");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Equal tasks chain `CHAIN_DEPTH` deep behind a running task, run once each, and the room
    /// comes back whole; a task of another size is never chained.
    #[test]
    fn equal_tasks_chain_and_every_one_runs_once() {
        let (mut work, exec, mut rx, _logs) = setup(2);
        // Same cpus, another memory request: never chained after a small one.
        let other = Resources {
            memory_bytes: 1 << 20,
            ..Resources::cpus(1)
        };
        // The first two outlive the chaining (an `echo` can end before it).
        for i in 1..=6 {
            let argv: &[&str] = if i <= 2 {
                &["sh", "-c", "sleep 0.2; echo x"]
            } else {
                &["echo", "x"]
            };
            work.queue
                .push_back(assignment(i, Resources::cpus(1), argv));
        }
        work.queue
            .push_back(assignment(7, other, &["echo", "other"]));
        work.start_what_fits(&exec, false);
        assert_eq!(work.running.len(), 2, "best fit: 7 and 1");
        assert!(work.running.contains_key(&7));
        assert_eq!(
            work.chained.len(),
            CHAIN_DEPTH,
            "only behind the task of the same size, CHAIN_DEPTH deep"
        );
        assert_eq!(work.chained_after(2), Some(1));
        assert_eq!(work.chained_after(3), Some(2), "behind the successor");
        let mut held = work.held();
        held.sort_unstable();
        assert_eq!(held, (1..=7).collect::<Vec<_>>(), "chained still held");
        let out = drain(&mut work, &exec, &mut rx);
        assert_eq!(out.len(), 7, "{out:?}");
        assert_eq!(out[&7], "other\n");
        assert_eq!(work.free, work.capacity);
        assert!(work.chained.is_empty() && work.running.is_empty());
        assert_eq!(work.unacked.len(), 7, "one result each");
    }

    /// A successor chained behind a long task starts on a core that frees
    /// elsewhere instead of waiting for the long task (the item-diamond
    /// integration test's slow item).
    #[test]
    fn freed_room_takes_the_successors_chained_behind_a_long_task() {
        let (mut work, exec, mut rx, _logs) = setup(2);
        let one = Resources::cpus(1);
        work.queue
            .push_back(assignment(1, one.clone(), &["sleep", "30"]));
        work.queue
            .push_back(assignment(2, one.clone(), &["sleep", "0.3"]));
        for i in 3..=6 {
            work.queue.push_back(assignment(i, one.clone(), &["true"]));
        }
        work.start_what_fits(&exec, false);
        assert_eq!(work.chained.len(), 2 * CHAIN_DEPTH, "two deep behind each");
        let until = Instant::now() + Duration::from_secs(20);
        let done = |w: &Work| (2..=6).all(|i| w.unacked.contains_key(&i));
        while !done(&work) {
            assert!(Instant::now() < until, "3-6 waited behind the long task");
            match rx.try_recv() {
                Ok(ev) => {
                    apply_exec_event(&mut work, ev);
                    work.start_what_fits(&exec, false);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert!(work.running.contains_key(&1), "the long task still runs");
        assert!(exec.stop(1, AttemptEnd::Cancelled));
        while !work.unacked.contains_key(&1) {
            assert!(Instant::now() < until, "the long task did not stop");
            match rx.try_recv() {
                Ok(ev) => apply_exec_event(&mut work, ev),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert_eq!(work.free, work.capacity);
        assert!(work.chained.is_empty() && work.queue.is_empty());
    }

    /// A cancel of a chained task before the handover takes it back
    /// unstarted; its predecessor then frees its room as usual.
    #[test]
    fn a_cancelled_successor_never_starts() {
        let (mut work, exec, mut rx, _logs) = setup(1);
        work.queue
            .push_back(assignment(1, Resources::cpus(1), &["sleep", "0.2"]));
        work.queue
            .push_back(assignment(2, Resources::cpus(1), &["true"]));
        work.start_what_fits(&exec, false);
        assert_eq!(work.chained_after(2), Some(1));
        let kept = work.drop_queued(&exec, &[2], &AttemptEnd::Cancelled);
        assert!(kept.is_empty(), "taken back");
        assert_eq!(work.out_finished[0].end, AttemptEnd::Cancelled);
        let _ = drain(&mut work, &exec, &mut rx);
        assert_eq!(work.free, work.capacity);
        assert_eq!(work.unacked.len(), 2);
    }

    /// A return racing the handover: the executor already took the
    /// successor, so the agent keeps it (the broker accepts that) and it runs
    /// and is reported once, on the room it inherited.
    #[test]
    fn a_return_racing_the_handover_keeps_the_started_successor() {
        let (mut work, exec, mut rx, _logs) = setup(1);
        work.queue
            .push_back(assignment(1, Resources::cpus(1), &["sleep", "0.1"]));
        work.queue
            .push_back(assignment(2, Resources::cpus(1), &["sleep", "0.2"]));
        work.start_what_fits(&exec, false);
        assert_eq!(work.chained_after(2), Some(1));
        let mut pending = Vec::new();
        loop {
            let ev = next(&mut rx);
            let handover = matches!(ev, ExecEvent::Handover { .. });
            pending.push(ev);
            if handover {
                break;
            }
        }
        let kept = work.drop_queued(&exec, &[2], &AttemptEnd::Returned);
        assert_eq!(kept, vec![2], "already handed over: kept");
        for ev in pending {
            apply_exec_event(&mut work, ev);
        }
        let _ = drain(&mut work, &exec, &mut rx);
        assert_eq!(work.free, work.capacity);
        let ends: Vec<_> = work
            .unacked
            .values()
            .map(|u| u.result.end.clone())
            .collect();
        assert_eq!(ends.len(), 2);
        assert!(
            ends.iter().all(|e| *e == AttemptEnd::Exited { code: 0 }),
            "{ends:?}"
        );
    }

    /// A predecessor stopped by a cancel hands nothing over: its successor
    /// goes back to the queue and runs after it.
    #[test]
    fn a_stopped_predecessors_successor_is_queued_again() {
        let (mut work, exec, mut rx, _logs) = setup(1);
        work.queue
            .push_back(assignment(1, Resources::cpus(1), &["sleep", "30"]));
        work.queue
            .push_back(assignment(2, Resources::cpus(1), &["echo", "two"]));
        work.start_what_fits(&exec, false);
        assert!(matches!(next(&mut rx), ExecEvent::Started(_)));
        work.out_started.clear();
        assert!(exec.stop(1, AttemptEnd::Cancelled));
        let ev = next(&mut rx);
        assert!(matches!(&ev, ExecEvent::Finished(r) if r.end == AttemptEnd::Cancelled));
        apply_exec_event(&mut work, ev);
        work.start_what_fits(&exec, false);
        assert!(work.running.contains_key(&2), "re-queued and started");
        let out = drain(&mut work, &exec, &mut rx);
        assert_eq!(out[&2], "two\n");
        assert_eq!(work.free, work.capacity);
    }

    /// Without a shared filesystem nothing is chained.
    #[test]
    fn no_chaining_without_a_shared_filesystem() {
        let (mut work, exec, mut rx, _logs) = setup(1);
        work.chaining = false;
        work.queue
            .push_back(assignment(1, Resources::cpus(1), &["true"]));
        work.queue
            .push_back(assignment(2, Resources::cpus(1), &["true"]));
        work.start_what_fits(&exec, false);
        assert!(work.chained.is_empty());
        let out = drain(&mut work, &exec, &mut rx);
        assert_eq!(out.len(), 2);
    }
}
