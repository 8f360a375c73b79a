//! Deciding that a silent broker is lost. Pure: the instants come in, the
//! decision goes out, so it is tested without a clock or a network.
//!
//! Owns: the heartbeat-silence rule, including that a timer which fired far too
//! late means the agent was stalled, not the broker. It must not read the clock.

use std::time::Duration;

/// Never wait less than this for the broker's next word after a silence check
/// (a message already read waits to be handled; no busy loop).
const SILENCE_RECHECK_MIN: Duration = Duration::from_millis(5);

/// What to do when the silence timer fires (heartbeats both ways: the broker
/// sends one every interval, so silence means it is gone or cut off).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Silence {
    /// Nothing from the broker for `silence_max`: the connection is lost.
    Lost(Duration),
    /// Check again at this instant.
    RecheckAt(tokio::time::Instant),
    /// The timer fired far too late: the agent itself was stalled (SIGSTOP,
    /// suspend, swap), so the broker's silence proves nothing. Like a stalled
    /// broker (reliability rule 3.6), start a fresh window from now.
    Stalled,
}

/// Pure: `due` is when the timer was set to fire, `now` when it did, `pending`
/// whether a message from the broker is already waiting to be handled.
pub(super) fn silence_check(
    last_heard: tokio::time::Instant,
    due: tokio::time::Instant,
    now: tokio::time::Instant,
    silence_max: Duration,
    pending: bool,
) -> Silence {
    if now.saturating_duration_since(due) > silence_max / 2 {
        return Silence::Stalled;
    }
    let deadline = last_heard + silence_max;
    if now >= deadline && !pending {
        return Silence::Lost(now - last_heard);
    }
    Silence::RecheckAt(deadline.max(now + SILENCE_RECHECK_MIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_check_decides_lost_recheck_or_stalled() {
        let t0 = tokio::time::Instant::now();
        let max = Duration::from_secs(4);
        let s = Duration::from_secs;
        // Heard at t0, timer due at t0+4 fires on time: lost.
        assert_eq!(
            silence_check(t0, t0 + s(4), t0 + s(4), max, false),
            Silence::Lost(s(4))
        );
        // ... unless a message is already waiting: look again very soon.
        assert_eq!(
            silence_check(t0, t0 + s(4), t0 + s(4), max, true),
            Silence::RecheckAt(t0 + s(4) + SILENCE_RECHECK_MIN)
        );
        // Heard since: wait until that message is `max` old.
        assert_eq!(
            silence_check(t0 + s(3), t0 + s(4), t0 + s(4), max, false),
            Silence::RecheckAt(t0 + s(7))
        );
        // A little late (a loaded machine) still counts.
        let late = t0 + s(4) + Duration::from_millis(300);
        assert_eq!(
            silence_check(t0, t0 + s(4), late, max, false),
            Silence::Lost(late - t0)
        );
        // Fired long after it was due: the agent was stopped, not the broker.
        assert_eq!(
            silence_check(t0, t0 + s(4), t0 + s(30), max, false),
            Silence::Stalled
        );
    }
}
