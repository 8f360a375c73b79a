//! Results and starts to the broker in batches: bounded by count and bytes,
//! far below the frame cap, and coalesced for a few milliseconds so fewer,
//! larger messages save both sides cpu.
//!
//! Owns: the `Events` message and its limits. It must not decide what a result
//! is nor forget one (results stay unacknowledged in `Work` until the ack).

use std::time::Duration;

use scalable_common::frame::write_frame;
use scalable_common::protocol::{AttemptResult, FromAgent, MESSAGE_BYTES_MAX};

use super::work::Work;
use crate::event_log::EventLog;
use crate::log_event;

/// Results per `Events` message at most, to stay well under the frame cap.
const RESULTS_PER_MESSAGE_MAX: usize = 2_000;
/// How long a result may wait to be sent with others.
pub(super) const FLUSH_DELAY: Duration = Duration::from_millis(2);
/// How long while prefetched work waits here: the broker needs no result to
/// keep this agent busy then (its queue holds about 100 ms of work), and at
/// 1,000 short tasks/s twenty results a message instead of two cut the
/// broker's cpu per task several times over.
pub(super) const FLUSH_DELAY_BUSY: Duration = Duration::from_millis(20);
/// A result of a task that ran this long goes out promptly: its dependents
/// may be waiting, and 20 ms is noise beside it only for much longer tasks.
const LONG_TASK_US: u64 = 1_000_000;
/// Send at once when this many starts and results wait.
pub(super) const FLUSH_EARLY_EVENTS: usize = 512;
/// Bytes of results per `Events` message, about; half the frame cap.
const MESSAGE_BYTES_BUDGET: usize = MESSAGE_BYTES_MAX / 2;

/// How long waiting results may be held: [`FLUSH_DELAY_BUSY`] while this
/// agent has queued work and none of them ended a long task, else
/// [`FLUSH_DELAY`] (an agent about to run dry, or a result a dependent may
/// be waiting for, goes out at once).
pub(super) fn flush_delay(work: &Work) -> Duration {
    let long = work
        .out_finished
        .iter()
        .any(|r| r.ended_at_us.saturating_sub(r.started_at_us) >= LONG_TASK_US);
    if (work.queue.is_empty() && work.chained.is_empty()) || long {
        FLUSH_DELAY
    } else {
        FLUSH_DELAY_BUSY
    }
}

/// Sends whatever started/finished since the last flush, in bounded messages.
/// `duplicate`: the F13 test hook, every result goes out a second time in its
/// own `Events` message right after the first.
pub(super) async fn flush(
    send: &mut quinn::SendStream,
    work: &mut Work,
    log: Option<&EventLog>,
    duplicate: bool,
) -> Result<(), String> {
    while !work.out_started.is_empty() || !work.out_finished.is_empty() {
        // Bounded by count and by bytes (log tails), far below the frame cap.
        let mut n = 0;
        let mut bytes = 0;
        while n < work.out_finished.len()
            && n < RESULTS_PER_MESSAGE_MAX
            && bytes < MESSAGE_BYTES_BUDGET
        {
            let r = &work.out_finished[n];
            bytes += 256
                + r.stdout_tail.len()
                + r.stderr_tail.len()
                + 30 * r.usage.len()
                + 10 * r.input_bytes.len();
            n += 1;
        }
        let finished: Vec<AttemptResult> = work.out_finished.drain(..n).collect();
        if log.is_some() {
            for r in &finished {
                log_event!(log, "result {} {}", r.attempt, r.end.class());
            }
        }
        let started = std::mem::take(&mut work.out_started);
        let free = work.free.clone();
        let again = (duplicate && !finished.is_empty()).then(|| FromAgent::Events {
            started: Vec::new(),
            finished: finished.clone(),
            free: free.clone(),
        });
        write_frame(
            send,
            &FromAgent::Events {
                started,
                finished,
                free,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        if let Some(msg) = again {
            if let FromAgent::Events { finished, .. } = &msg {
                for r in finished {
                    log_event!(log, "result {} {}", r.attempt, r.end.class());
                }
            }
            write_frame(send, &msg).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use scalable_common::protocol::AttemptEnd;
    use scalable_common::resources::Resources;

    use super::*;
    use crate::session::test_support::assignment;

    fn ended(attempt: u64, ran_us: u64) -> AttemptResult {
        AttemptResult::bare(
            attempt,
            AttemptEnd::Exited { code: 0 },
            1_000,
            1_000 + ran_us,
        )
    }

    #[test]
    fn results_wait_longer_only_while_work_is_queued_and_tasks_are_short() {
        let mut work = Work::new(Resources::cpus(1), Vec::new(), None);
        work.out_finished.push(ended(1, 5_000));
        assert_eq!(
            flush_delay(&work),
            FLUSH_DELAY,
            "nothing queued: the agent may run dry"
        );
        work.queue
            .push_back(assignment(2, Resources::cpus(1), &["true"]));
        assert_eq!(flush_delay(&work), FLUSH_DELAY_BUSY);
        work.out_finished.push(ended(3, LONG_TASK_US));
        assert_eq!(
            flush_delay(&work),
            FLUSH_DELAY,
            "a long task's result goes out at once"
        );
    }
}
