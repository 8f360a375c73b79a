//! Handover: a queued assignment chained after a running attempt starts on
//! that attempt's cores the moment its leader is reaped, on the reaper thread.
//!
//! Owns: the successor map (`State::successors`, one per running attempt),
//! taking a successor when its predecessor ends, and stops asked for while a
//! successor is being started (`State::handing`). It must not choose what to
//! chain (the session's `Work` does, by equal resources) nor account for
//! resources (the [`ExecEvent::Handover`] event tells the session that the
//! successor took its predecessor's room).
//!
//! # Why
//!
//! Without it, a core whose task ended stays idle while the exit travels
//! reaper → event channel → session thread, the session decides, and its
//! thread migrates to the freed core to spawn there: about 180 µs per task on
//! this machine kind (perf sched), as long as the spawn itself. The reaper is
//! awake anyway and the successor is known in advance, so it spawns at once,
//! as `xargs -P` does, and the session learns of it from events.
//!
//! A successor starts only if its predecessor ended on its own: one we stopped
//! (walltime, cancel, drain) leaves its successor in the map, and the session
//! takes it back ([`Executor::unchain`]) when it sees the `Finished`.

use std::sync::Arc;

use scalable_common::protocol::{Assignment, AttemptId};

use super::{ExecEvent, Executor, Inner, Placement, State};

impl Executor {
    /// Chains `next` after `after`, a running attempt or one chained itself:
    /// when `after` ends on its own, `next` starts on `place` (which must be
    /// `after`'s placement, with resources no larger than `after`'s). Gives
    /// `next` back if `after` is neither or already has a successor.
    pub fn chain(
        &self,
        after: AttemptId,
        next: Assignment,
        place: Placement,
    ) -> Result<(), Box<Assignment>> {
        let mut st = self.inner.lock();
        let known = st.running.contains_key(&after)
            || st.handing.contains_key(&after)
            || st.successors.values().any(|(n, _)| n.attempt == after);
        if st.refuse_successors || !known || st.successors.contains_key(&after) {
            return Err(Box::new(next));
        }
        st.successors.insert(after, (next, place));
        Ok(())
    }

    /// Takes back the successor chained after `after`, if it has not been
    /// handed over; `None` means it has (its `Handover` event is sent or
    /// coming) or there was none.
    pub fn unchain(&self, after: AttemptId) -> Option<Assignment> {
        self.inner
            .lock()
            .successors
            .remove(&after)
            .map(|(next, _)| next)
    }
}

impl Inner {
    /// Under the state lock, as `attempt` is reaped: its successor, if it may
    /// start now (the predecessor was not stopped by us, nothing refuses).
    /// A successor taken is marked as being handed over until it runs.
    pub(super) fn take_successor(
        st: &mut State,
        attempt: AttemptId,
        stopped: bool,
    ) -> Option<(Assignment, Placement)> {
        if stopped || st.refuse_successors {
            return None;
        }
        let (next, place) = st.successors.remove(&attempt)?;
        st.handing.insert(next.attempt, None);
        Some((next, place))
    }

    /// Tells the session `to` takes `from`'s room. Must be sent before
    /// `from`'s `Finished`, so the room is never seen free in between.
    pub(super) fn announce_handover(&self, from: AttemptId, to: AttemptId) {
        self.send(ExecEvent::Handover { from, to });
    }

    /// Starts a successor taken by [`Inner::take_successor`] and applies a stop
    /// asked for while it was being started.
    pub(super) fn start_successor(self: &Arc<Self>, next: Assignment, place: Placement) {
        if let Err(end) = self.spawn_attempt(&next, &place) {
            self.report_unstarted(next.attempt, end);
        }
        let pending = self.lock().handing.remove(&next.attempt).flatten();
        if let Some((end, grace)) = pending {
            self.stop_within(next.attempt, end, grace);
        }
    }
}

#[cfg(test)]
mod tests {
    use scalable_common::protocol::AttemptEnd;

    use super::super::test_env::{assignment, env, Env};
    use super::super::{ExecEvent, Placement};

    fn core_place() -> Placement {
        let own = crate::cpuset::own_cpus().expect("mask");
        Placement {
            cpus: Some(vec![*own.last().expect("a core")]),
            gpus: None,
        }
    }

    /// The successor starts on its predecessor's cores once it ends, and the
    /// events say so in the order the session relies on.
    #[test]
    fn a_chained_successor_starts_on_its_predecessors_cores() {
        let mut e = env();
        let place = core_place();
        let core = place.cpus.as_ref().expect("cores")[0].to_string();
        e.exec
            .start_placed(&assignment(1, &["sleep", "0.2"]), &place);
        let show = [
            "sh",
            "-c",
            "grep Cpus_allowed_list /proc/$$/status | cut -f2; echo $SCALABLE_CPU_LIST",
        ];
        assert!(e.exec.chain(1, assignment(2, &show), place.clone()).is_ok());
        let again = e.exec.chain(1, assignment(3, &["true"]), place.clone());
        assert_eq!(again.map_err(|a| a.attempt), Err(3), "one successor each");
        let not_running = e.exec.chain(9, assignment(4, &["true"]), place);
        assert_eq!(not_running.map_err(|a| a.attempt), Err(4));
        let mut order = Vec::new();
        let mut out = String::new();
        while order.len() < 5 {
            match e.recv() {
                ExecEvent::Started(s) => order.push(format!("started {}", s.attempt)),
                ExecEvent::Handover { from, to } => order.push(format!("handover {from}->{to}")),
                ExecEvent::Finished(r) => {
                    assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{r:?}");
                    if r.attempt == 2 {
                        out = String::from_utf8_lossy(&r.stdout_tail).into_owned();
                    }
                    order.push(format!("finished {}", r.attempt));
                }
            }
        }
        assert_eq!(
            order,
            [
                "started 1",
                "handover 1->2",
                "finished 1",
                "started 2",
                "finished 2"
            ]
        );
        assert_eq!(out, format!("{core}\n{core}\n"), "bound to the same core");
        assert!(e.exec.unchain(1).is_none(), "nothing left chained");
    }

    /// Attempt 1 (`sleep 30`) running, attempt 2 (`true`) chained behind it.
    fn a_sleeper_with_a_successor() -> Env {
        let mut e = env();
        e.exec.start(&assignment(1, &["sleep", "30"]));
        assert!(matches!(e.recv(), ExecEvent::Started(_)));
        assert!(e
            .exec
            .chain(1, assignment(2, &["true"]), Placement::default())
            .is_ok());
        e
    }

    /// A predecessor we stopped hands nothing over: its successor stays for
    /// the session to take back.
    #[test]
    fn a_stopped_predecessor_keeps_its_successor_for_the_session() {
        let mut e = a_sleeper_with_a_successor();
        assert!(e.exec.stop(1, AttemptEnd::Cancelled));
        match e.recv() {
            ExecEvent::Finished(r) => assert_eq!(r.end, AttemptEnd::Cancelled),
            other => panic!("expected the Finished of 1, got {other:?}"),
        }
        let back = e.exec.unchain(1).expect("the successor is still there");
        assert_eq!(back.attempt, 2);
        assert!(e.rx.try_recv().is_err(), "nothing started");
    }

    /// A stop asked for while the reaper starts a successor is applied once
    /// it runs (the race of a cancel with a handover).
    #[test]
    fn a_stop_during_the_handover_is_applied_when_the_successor_runs() {
        let mut e = env();
        let next = assignment(2, &["sleep", "30"]);
        e.exec.inner.lock().handing.insert(2, None);
        assert!(e.exec.stop(2, AttemptEnd::Cancelled), "taken as pending");
        e.exec.inner.start_successor(next, Placement::default());
        let (started, r) = e.wait(2);
        assert!(started.is_some());
        assert_eq!(r.end, AttemptEnd::Cancelled);
        assert!(e.exec.inner.lock().handing.is_empty());
    }

    /// Nothing starts after `kill_all_now`, chained or not.
    #[test]
    fn kill_all_now_drops_successors() {
        let mut e = a_sleeper_with_a_successor();
        e.exec.kill_all_now();
        match e.recv() {
            ExecEvent::Finished(r) => assert_eq!((r.attempt, r.end), (1, AttemptEnd::Drained)),
            other => panic!("expected the Finished of 1, got {other:?}"),
        }
        assert!(e.exec.unchain(1).is_none());
        let refused = e
            .exec
            .chain(1, assignment(3, &["true"]), Placement::default());
        assert!(refused.is_err());
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(e.rx.try_recv().is_err(), "nothing started");
    }
}
