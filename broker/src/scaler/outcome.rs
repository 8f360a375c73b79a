//! What came of each stored decision, accounted as it happens: for a
//! decision that started pilots, when the last of them connected, how long
//! they were busy and idle, and what they cost until they ended; for one
//! that removed idle pilots, how long those had sat idle (and what that
//! idleness cost); for one that changed nothing (a state change), nothing
//! spent.
//!
//! Sans-IO like the rest of the scaler: pilot records, the core's agents and
//! `now` in, [`ScalingOutcome`]s to store out. It must not decide a scaling
//! nor call a provider.

use std::collections::BTreeMap;

use scalable_common::protocol::{AgentInfo, PilotInfo};
use scalable_common::scaling::ScalingOutcome;

use super::decision::ScaleDecision;

/// A tracked decision's outcome is stored again at most this often.
pub const OUTCOME_FLUSH_MS: u64 = 5_000;
/// Decisions tracked at once; past it the oldest is stored as it stands
/// and dropped.
pub const TRACKED_MAX: usize = 1_000;
/// One observation credits at most this much time (a stalled broker must
/// not count its stall as busy or idle).
const STEP_MS_MAX: u64 = 5_000;

#[derive(Debug, Clone, PartialEq)]
struct Tracked {
    at_ms: u64,
    pilots: Vec<String>,
    /// Asked for, not yet answered by the provider.
    starting: Vec<String>,
    busy_ms: u64,
    idle_ms: u64,
    connected_at_ms: Option<u64>,
    flushed_ms: Option<u64>,
}

/// The decisions whose pilots are still alive, and what each pilot costs.
#[derive(Debug, Clone, Default)]
pub struct OutcomeBook {
    tracked: Vec<Tracked>,
    /// Per pilot: its price per hour, as the provider estimated it.
    prices: BTreeMap<String, f64>,
    last_ms: Option<u64>,
}

impl OutcomeBook {
    /// Decision `d` (stored) was applied; `starting`: the ids of the pilots
    /// asked for with their price per hour; `idle_since`: the scaler's idle
    /// times (for the pilots it drained). Returns the outcome when it is
    /// known at once (nothing started).
    pub fn decided(
        &mut self,
        d: &ScaleDecision,
        starting: &[(String, Option<f64>)],
        idle_since: &BTreeMap<String, u64>,
    ) -> Option<ScalingOutcome> {
        for (id, price) in starting {
            if let Some(p) = price {
                self.prices.insert(id.clone(), *p);
            }
        }
        if starting.is_empty() {
            let idle_ms: u64 = d
                .drain
                .iter()
                .filter_map(|(p, _)| idle_since.get(p).map(|s| d.at_ms.saturating_sub(*s)))
                .sum();
            let hourly: f64 = d
                .drain
                .iter()
                .filter_map(|(p, _)| self.prices.get(p))
                .sum::<f64>()
                / d.drain.len().max(1) as f64;
            return Some(ScalingOutcome {
                pilots_connected_at_ms: None,
                busy_seconds: Some(0.0),
                idle_seconds: Some(idle_ms as f64 / 1000.0),
                cost: Some(round_cents(hourly * idle_ms as f64 / 3_600_000.0)),
            });
        }
        let ids: Vec<String> = starting.iter().map(|(id, _)| id.clone()).collect();
        self.tracked.push(Tracked {
            at_ms: d.at_ms,
            pilots: ids.clone(),
            starting: ids,
            busy_ms: 0,
            idle_ms: 0,
            connected_at_ms: None,
            flushed_ms: None,
        });
        None
    }

    /// The provider answered for `asked`: `started` are now recorded, the
    /// rest never will be.
    pub fn answered(&mut self, asked: &[String], started: &[String]) {
        for t in &mut self.tracked {
            t.starting.retain(|p| !asked.contains(p));
            t.pilots
                .retain(|p| !asked.contains(p) || started.contains(p));
        }
    }

    /// Credits the time since the last observation to each tracked pilot
    /// (busy when its agent holds work, idle when connected and holding
    /// none) and returns the outcomes to store now: a pilot connected, the
    /// flush interval passed, or every pilot of the decision ended (then it
    /// is no longer tracked).
    pub fn observe(
        &mut self,
        pilots: &[PilotInfo],
        agents: &[AgentInfo],
        now_ms: u64,
    ) -> Vec<(u64, ScalingOutcome)> {
        let step = self
            .last_ms
            .map_or(0, |l| now_ms.saturating_sub(l).min(STEP_MS_MAX));
        self.last_ms = Some(now_ms);
        let by_id: BTreeMap<&str, &PilotInfo> = pilots.iter().map(|p| (p.id.as_str(), p)).collect();
        let mut out = Vec::new();
        for t in &mut self.tracked {
            let mine: Vec<&PilotInfo> = t
                .pilots
                .iter()
                .filter_map(|id| by_id.get(id.as_str()).copied())
                .collect();
            for p in &mine {
                let agent = p
                    .agent
                    .filter(|_| p.state.is_live())
                    .and_then(|id| agents.iter().find(|a| a.id == id && a.connected));
                match agent {
                    Some(a) if a.running + a.queued > 0 => t.busy_ms += step,
                    Some(_) => t.idle_ms += step,
                    None => {}
                }
            }
            let done = t.starting.is_empty() && mine.iter().all(|p| !p.state.is_live());
            // Known once every pilot connected or ended: the last to connect.
            let settled = t.starting.is_empty()
                && !mine.is_empty()
                && mine
                    .iter()
                    .all(|p| p.connected_at_ms.is_some() || !p.state.is_live());
            let connected = if settled {
                mine.iter().filter_map(|p| p.connected_at_ms).max()
            } else {
                None
            };
            let newly = connected.is_some() && t.connected_at_ms.is_none();
            t.connected_at_ms = t.connected_at_ms.or(connected);
            let due = t
                .flushed_ms
                .is_none_or(|f| now_ms.saturating_sub(f) >= OUTCOME_FLUSH_MS);
            if newly || done || due {
                t.flushed_ms = Some(now_ms);
                let cost = cost(&mine, &self.prices, now_ms);
                out.push((t.at_ms, outcome(t, cost)));
            }
            if done {
                t.pilots.clear();
            }
        }
        self.tracked
            .retain(|t| !t.pilots.is_empty() || !t.starting.is_empty());
        while self.tracked.len() > TRACKED_MAX {
            self.tracked.remove(0);
        }
        out
    }

    /// Decisions still accounted.
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }
}

fn outcome(t: &Tracked, cost: Option<f64>) -> ScalingOutcome {
    ScalingOutcome {
        pilots_connected_at_ms: t.connected_at_ms,
        busy_seconds: Some(t.busy_ms as f64 / 1000.0),
        idle_seconds: Some(t.idle_ms as f64 / 1000.0),
        cost,
    }
}

/// Price × how long each pilot has lived (submitted to ended, or now);
/// `None` when no pilot has a known price.
fn cost(pilots: &[&PilotInfo], prices: &BTreeMap<String, f64>, now_ms: u64) -> Option<f64> {
    let mut total = None;
    for p in pilots {
        if let Some(hourly) = prices.get(&p.id) {
            let end = p.ended_at_ms.unwrap_or(now_ms);
            let hours = end.saturating_sub(p.submitted_at_ms) as f64 / 3_600_000.0;
            total = Some(total.unwrap_or(0.0) + hourly * hours);
        }
    }
    total.map(round_cents)
}

fn round_cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use scalable_common::protocol::PilotPhase;

    use super::*;
    use crate::scaler::ScalerState;
    use crate::test_fixtures::agent_info;

    fn decision(at_ms: u64, drain: Vec<(String, u64)>) -> ScaleDecision {
        ScaleDecision {
            at_ms,
            target: "lab".into(),
            workers_to_add: Default::default(),
            workers_to_remove: Default::default(),
            cancel: Vec::new(),
            drain,
            reasoning: String::new(),
            confidence: 0.9,
            predicted_completion_seconds: None,
            state: ScalerState::Active,
            groups: Vec::new(),
        }
    }

    fn pilot(
        id: &str,
        agent: Option<u64>,
        connected: Option<u64>,
        ended: Option<u64>,
    ) -> PilotInfo {
        PilotInfo {
            id: id.into(),
            target: "lab".into(),
            tag: None,
            provider_id: "1".into(),
            state: match (ended, connected) {
                (Some(_), _) => PilotPhase::Ended,
                (None, Some(_)) => PilotPhase::Connected,
                _ => PilotPhase::Submitted,
            },
            agent,
            submitted_at_ms: 1_000,
            connected_at_ms: connected,
            ended_at_ms: ended,
            reason: None,
        }
    }

    #[test]
    fn started_pilots_are_accounted_until_they_end() {
        let mut book = OutcomeBook::default();
        let started = [
            ("p-1".to_string(), Some(3.6)),
            ("p-2".to_string(), Some(3.6)),
        ];
        assert_eq!(
            book.decided(&decision(1_000, vec![]), &started, &BTreeMap::new()),
            None
        );
        book.answered(&["p-1".into(), "p-2".into()], &["p-1".into(), "p-2".into()]);
        let queued = [
            pilot("p-1", None, None, None),
            pilot("p-2", None, None, None),
        ];
        let first = book.observe(&queued, &[], 1_000);
        assert_eq!(
            first[0].1.pilots_connected_at_ms, None,
            "none connected yet"
        );
        let up = [
            pilot("p-1", Some(1), Some(2_000), None),
            pilot("p-2", Some(2), Some(3_000), None),
        ];
        let out = book.observe(&up, &[agent_info(1, 1), agent_info(2, 0)], 4_000);
        assert_eq!(
            out[0].1.pilots_connected_at_ms,
            Some(3_000),
            "the last to connect"
        );
        let out = book.observe(&up, &[agent_info(1, 1), agent_info(2, 0)], 5_000);
        assert!(
            out.is_empty(),
            "flushed at most every {OUTCOME_FLUSH_MS} ms"
        );
        let gone = [
            pilot("p-1", Some(1), Some(2_000), Some(6_000)),
            pilot("p-2", Some(2), Some(3_000), Some(6_000)),
        ];
        let out = book.observe(&gone, &[], 6_000);
        let o = &out[0].1;
        assert_eq!((o.busy_seconds, o.idle_seconds), (Some(4.0), Some(4.0)));
        assert_eq!(o.cost, Some(0.01), "2 pilots × 5 s × $3.6/h");
        assert_eq!(book.tracked(), 0, "done once every pilot ended");
    }

    #[test]
    fn a_failed_start_and_a_removal_have_their_outcome_at_once() {
        let mut book = OutcomeBook::default();
        book.decided(
            &decision(1_000, vec![]),
            &[("p-1".into(), None)],
            &BTreeMap::new(),
        );
        book.answered(&["p-1".into()], &[]);
        let out = book.observe(&[], &[], 2_000);
        assert_eq!(out[0].1.busy_seconds, Some(0.0));
        assert_eq!(book.tracked(), 0);
        let idle = BTreeMap::from([("p-7".to_string(), 500)]);
        let o = book
            .decided(&decision(10_500, vec![("p-7".into(), 7)]), &[], &idle)
            .unwrap();
        assert_eq!((o.busy_seconds, o.idle_seconds), (Some(0.0), Some(10.0)));
    }
}
