//! Leaving (SPEC §6): take nothing new, hand queued attempts back at once and
//! running ones after a short grace, tell the broker, and be gone well inside
//! the SIGTERM deadline.
//!
//! Owns: the drain's time limits and starting a drain. It must not wait (the
//! loop keeps serving while the attempts end) and starts a drain only once.

use std::time::Duration;

use scalable_common::protocol::{AttemptEnd, AttemptId};

use super::work::Work;
use crate::executor::Executor;

/// SPEC §6: an agent exits within this long of SIGTERM. The drain's parts below
/// add up to well inside it (`drain_fits_in_the_sigterm_deadline`).
pub const SIGTERM_EXIT_MAX: Duration = Duration::from_secs(5);
/// SIGTERM → SIGKILL grace of the attempts a drain hands back.
const DRAIN_KILL_GRACE: Duration = Duration::from_secs(2);
/// From the start of a drain, how long the agent waits for its running attempts
/// to end and for the broker to acknowledge the last results; then it leaves
/// regardless (what is still unacknowledged the broker finds lost).
pub(super) const DRAIN_WAIT_MAX: Duration = Duration::from_secs(3);
/// How long the last `Leaving` may take to be acknowledged by the transport.
pub(super) const LEAVE_FLUSH_WAIT_MAX: Duration = Duration::from_millis(300);

/// Drain (SPEC §6): take nothing new, hand queued and running attempts back.
pub(super) fn start_drain(
    work: &mut Work,
    exec: &Executor,
    draining: &mut Option<String>,
    why: String,
) {
    if draining.is_some() {
        return;
    }
    tracing::info!("draining: {why}");
    work.suspects_drained();
    let mut queued: Vec<AttemptId> = work.queue.iter().map(|a| a.attempt).collect();
    queued.extend(work.chained_ids());
    work.drop_queued(exec, &queued, &AttemptEnd::Drained);
    exec.stop_all_within(AttemptEnd::Drained, DRAIN_KILL_GRACE);
    *draining = Some(why);
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use scalable_common::resources::Resources;
    use tokio::sync::mpsc;

    use super::super::test_support::assignment;
    use super::super::work::apply_exec_event;
    use super::*;
    use crate::executor::{ExecConfig, ExecEvent};

    /// SPEC §6 / F12: everything a drain may wait for, one after the other,
    /// still ends well inside the SIGTERM deadline.
    #[test]
    fn drain_fits_in_the_sigterm_deadline() {
        assert!(
            DRAIN_KILL_GRACE < DRAIN_WAIT_MAX,
            "tasks are killed before the wait ends"
        );
        let worst = DRAIN_WAIT_MAX + LEAVE_FLUSH_WAIT_MAX + crate::executor::KILL_ALL_WAIT_MAX;
        assert!(
            worst + Duration::from_millis(500) <= SIGTERM_EXIT_MAX,
            "{worst:?} leaves too little of {SIGTERM_EXIT_MAX:?}"
        );
    }

    /// A drained task that ignores SIGTERM is handed back as Drained within the
    /// drain's grace, not the executor's usual one.
    #[test]
    fn drain_hands_back_a_stubborn_task_within_its_grace() {
        let logs = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut cfg = ExecConfig::new(logs.path());
        cfg.kill_grace = Duration::from_secs(60);
        let exec = Executor::new(cfg, tx).expect("executor");
        let mut work = Work::new(Resources::cpus(1), Vec::new(), None);
        let stubborn = ["sh", "-c", "trap '' TERM; echo up; sleep 30"];
        work.queue
            .push_back(assignment(1, Resources::cpus(1), &stubborn));
        work.queue
            .push_back(assignment(2, Resources::cpus(1), &["true"]));
        work.start_what_fits(&exec, false);
        // Wait until the shell has installed its trap.
        let until = Instant::now() + Duration::from_secs(30);
        while !matches!(rx.try_recv(), Ok(ExecEvent::Started(_))) {
            assert!(Instant::now() < until, "not started");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut draining = None;
        let t0 = Instant::now();
        start_drain(&mut work, &exec, &mut draining, "SIGTERM".into());
        assert_eq!(
            work.unacked[&2].result.end,
            AttemptEnd::Drained,
            "queued: handed back"
        );
        while !work.running.is_empty() {
            assert!(
                t0.elapsed() < DRAIN_WAIT_MAX,
                "still running after the drain's wait"
            );
            match rx.try_recv() {
                Ok(ev) => apply_exec_event(&mut work, ev),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert!(
            t0.elapsed() >= DRAIN_KILL_GRACE / 2,
            "it did ignore SIGTERM"
        );
        assert_eq!(work.unacked[&1].result.end, AttemptEnd::Drained);
    }
}
