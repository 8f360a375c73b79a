//! The broker's pilots (SPEC §8): the record of every pilot it submitted, what
//! `scalable scale` decides, and reconciliation with the provider and with the
//! agents that connect.
//!
//! Sync and I/O-free like the core: the shell (`server`) runs the provider's
//! blocking calls on blocking threads and feeds their results back here; store
//! writes go out as [`StoreOp::Pilot`] rows.
//!
//! A pilot is `submitted` (the provider took it), `queued`/`running` (as the
//! provider says), `connected` (its agent dialled in: matched through the
//! `SCALABLE_PILOT_ID` the provider gave it), `draining` (asked to leave), and
//! finally `ended` (the provider no longer runs it): a [`PilotPhase`]. The time
//! from submitted to connected is the queue wait.

use std::collections::BTreeMap;

use scalable_common::protocol::{AgentId, AgentInfo, PilotInfo, PilotPhase, ScaleChange};

use crate::core::StoreOp;
use crate::providers::{self, PilotState, StartedPilot};

/// One pilot as the broker keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pilot {
    pub id: String,
    pub target: String,
    pub tag: Option<String>,
    pub provider_id: String,
    /// What its agent reports as `SCALABLE_PILOT_ID`.
    pub agent_match: providers::AgentId,
    pub state: PilotPhase,
    pub agent: Option<AgentId>,
    pub submitted_at_ms: u64,
    pub connected_at_ms: Option<u64>,
    pub ended_at_ms: Option<u64>,
    pub reason: Option<String>,
    /// Its price per hour when the provider knew one at its start (telemetry;
    /// `None` after a restart: the store keeps what it was).
    pub price_per_hour: Option<f64>,
}

impl Pilot {
    pub fn live(&self) -> bool {
        self.state.is_live()
    }

    pub fn info(&self) -> PilotInfo {
        PilotInfo {
            id: self.id.clone(),
            target: self.target.clone(),
            tag: self.tag.clone(),
            provider_id: self.provider_id.clone(),
            state: self.state,
            agent: self.agent,
            submitted_at_ms: self.submitted_at_ms,
            connected_at_ms: self.connected_at_ms,
            ended_at_ms: self.ended_at_ms,
            reason: self.reason.clone(),
        }
    }

    /// Its agent connected at `connected_at_ms`; the first connection is
    /// the end of its queue wait. An agent that connected before its pilot
    /// was recorded counts as connecting when it was (no wait).
    fn link(
        &mut self,
        agent: AgentId,
        connected_at_ms: u64,
        provider: Option<&'static str>,
    ) -> PilotLink {
        self.agent = Some(agent);
        if self.state != PilotPhase::Draining {
            self.state = PilotPhase::Connected;
        }
        let at = *self
            .connected_at_ms
            .get_or_insert(connected_at_ms.max(self.submitted_at_ms));
        PilotLink {
            pilot: self.id.clone(),
            agent,
            wait_ms: at.saturating_sub(self.submitted_at_ms),
            row: self.row(provider),
        }
    }

    fn row(&self, provider: Option<&'static str>) -> StoreOp {
        StoreOp::Pilot {
            info: Box::new(self.info()),
            agent_match: serde_json::to_string(&self.agent_match).unwrap_or_default(),
            provider,
            price_per_hour: self.price_per_hour,
        }
    }

    /// A pilot as the store had it (`agent_match` as JSON).
    pub fn from_stored(info: PilotInfo, agent_match: &str) -> Option<Pilot> {
        Some(Pilot {
            agent_match: serde_json::from_str(agent_match).ok()?,
            id: info.id,
            target: info.target,
            tag: info.tag,
            provider_id: info.provider_id,
            state: info.state,
            agent: info.agent,
            submitted_at_ms: info.submitted_at_ms,
            connected_at_ms: info.connected_at_ms,
            ended_at_ms: info.ended_at_ms,
            reason: info.reason,
            price_per_hour: None,
        })
    }
}

/// A pilot matched to its agent: the record to store and its queue wait.
#[derive(Debug, Clone, PartialEq)]
pub struct PilotLink {
    pub pilot: String,
    pub agent: AgentId,
    pub wait_ms: u64,
    pub row: StoreOp,
}

/// What `scale` will do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalePlan {
    pub before: u32,
    pub after: u32,
    pub start: u32,
    /// Pilots whose agent has not connected: removed first.
    pub cancel: Vec<String>,
    /// Connected pilots with an idle agent: their agent is told to leave.
    pub drain: Vec<(String, AgentId)>,
    /// Busy pilots removed only with `--force`.
    pub kill: Vec<String>,
    /// Busy pilots kept because `--force` was not given.
    pub kept_busy: u32,
}

/// Every pilot of this broker's target.
#[derive(Debug, Default)]
pub struct Fleet {
    pub target: String,
    /// The provider's kind, for the pilots' records (telemetry).
    pub provider: Option<&'static str>,
    /// What a pilot of each tag costs an hour, as the provider estimated it
    /// when it was last asked to start one.
    prices: BTreeMap<Option<String>, f64>,
    pilots: BTreeMap<String, Pilot>,
    next_serial: u64,
}

impl Fleet {
    /// A fleet with the pilots the store had (a restarted broker keeps
    /// reconciling them).
    pub fn new(target: &str, known: Vec<Pilot>) -> Fleet {
        let next_serial = known
            .iter()
            .filter_map(|p| p.id.strip_prefix("p-").and_then(|n| n.parse::<u64>().ok()))
            .max()
            .unwrap_or(0)
            + 1;
        Fleet {
            target: target.to_string(),
            provider: None,
            prices: BTreeMap::new(),
            pilots: known.into_iter().map(|p| (p.id.clone(), p)).collect(),
            next_serial,
        }
    }

    pub fn infos(&self) -> Vec<PilotInfo> {
        self.pilots.values().map(Pilot::info).collect()
    }

    pub fn live_provider_ids(&self) -> Vec<String> {
        self.pilots
            .values()
            .filter(|p| p.live())
            .map(|p| p.provider_id.clone())
            .collect()
    }

    /// Fresh pilot ids (`p-1`, `p-2`, ...: letters, digits and `-` only).
    pub fn new_ids(&mut self, n: u32) -> Vec<String> {
        (0..n)
            .map(|_| {
                let id = format!("p-{}", self.next_serial);
                self.next_serial += 1;
                id
            })
            .collect()
    }

    /// Decides a `scale` of `tag`: removal cancels pilots whose agent never
    /// connected first (newest first), then drains idle agents, and removes
    /// busy ones only with `force`.
    pub fn plan_scale(
        &self,
        tag: Option<&str>,
        change: ScaleChange,
        agents: &[AgentInfo],
        force: bool,
    ) -> ScalePlan {
        let live: Vec<&Pilot> = self
            .pilots
            .values()
            .filter(|p| p.live() && p.state != PilotPhase::Draining && p.tag.as_deref() == tag)
            .collect();
        let before = live.len() as u32;
        let want = match change {
            ScaleChange::Add(n) => before.saturating_add(n),
            ScaleChange::Remove(n) => before.saturating_sub(n),
            ScaleChange::Set(n) => n,
        };
        let mut plan = ScalePlan {
            before,
            after: want,
            ..ScalePlan::default()
        };
        if want >= before {
            plan.start = want - before;
            return plan;
        }
        let mut remove = before - want;
        let busy = |agent: AgentId| {
            agents
                .iter()
                .find(|a| a.id == agent)
                .is_some_and(|a| a.running + a.queued > 0)
        };
        let mut unconnected: Vec<&&Pilot> = live.iter().filter(|p| p.agent.is_none()).collect();
        unconnected.sort_by_key(|p| std::cmp::Reverse(p.submitted_at_ms));
        for p in unconnected {
            if remove == 0 {
                break;
            }
            plan.cancel.push(p.id.clone());
            remove -= 1;
        }
        for p in live.iter().filter(|p| p.agent.is_some_and(|a| !busy(a))) {
            if remove == 0 {
                break;
            }
            plan.drain.push((p.id.clone(), p.agent.expect("filtered")));
            remove -= 1;
        }
        for p in live.iter().filter(|p| p.agent.is_some_and(busy)) {
            if remove == 0 {
                break;
            }
            if force {
                plan.kill.push(p.id.clone());
            } else {
                plan.kept_busy += 1;
            }
            remove -= 1;
        }
        plan.after =
            before - plan.cancel.len() as u32 - plan.drain.len() as u32 - plan.kill.len() as u32;
        plan
    }

    /// What pilots of `tag` cost an hour (`None`: the provider knows no price).
    pub fn set_price(&mut self, tag: Option<&str>, per_hour: Option<f64>) {
        let tag = tag.map(String::from);
        match per_hour {
            Some(p) => self.prices.insert(tag, p),
            None => self.prices.remove(&tag),
        };
    }

    /// The provider started these pilots.
    pub fn started(
        &mut self,
        tag: Option<&str>,
        started: &[StartedPilot],
        now_ms: u64,
    ) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        for s in started {
            let p = Pilot {
                id: s.pilot_id.clone(),
                target: self.target.clone(),
                tag: tag.map(String::from),
                provider_id: s.provider_id.clone(),
                agent_match: s.agent_id.clone(),
                state: PilotPhase::Submitted,
                agent: None,
                submitted_at_ms: now_ms,
                connected_at_ms: None,
                ended_at_ms: None,
                reason: None,
                price_per_hour: self.prices.get(&tag.map(String::from)).copied(),
            };
            ops.push(p.row(self.provider));
            self.pilots.insert(p.id.clone(), p);
        }
        ops
    }

    /// Marks pilots as leaving (drained or stopped through the provider).
    pub fn leaving(&mut self, ids: &[String], reason: &str) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        for id in ids {
            if let Some(p) = self.pilots.get_mut(id) {
                p.state = PilotPhase::Draining;
                p.reason = Some(reason.to_string());
                ops.push(p.row(self.provider));
            }
        }
        ops
    }

    pub fn provider_id(&self, pilot: &str) -> Option<String> {
        self.pilots.get(pilot).map(|p| p.provider_id.clone())
    }

    /// An agent connected saying `SCALABLE_PILOT_ID=reported`: its pilot is
    /// connected (queue wait recorded). `None`: no pilot of ours yet (an agent
    /// started by hand or by another broker, or one that dialled in before
    /// its pilot was recorded: [`Fleet::link_connected`] links it then).
    pub fn agent_connected(
        &mut self,
        reported: &str,
        agent: AgentId,
        now_ms: u64,
    ) -> Option<PilotLink> {
        let provider = self.provider;
        let p = self
            .pilots
            .values_mut()
            .find(|p| p.live() && p.agent_match.matches(reported))?;
        Some(p.link(agent, now_ms, provider))
    }

    /// Links live pilots without an agent to connected agents that name
    /// them and belong to no other pilot. A provider's agent may dial in
    /// before `start` returns and its pilot is recorded: the link is made
    /// whichever comes first (issue 13).
    pub fn link_connected(&mut self, agents: &[AgentInfo]) -> Vec<PilotLink> {
        let mut taken: Vec<AgentId> = self
            .pilots
            .values()
            .filter(|p| p.live())
            .filter_map(|p| p.agent)
            .collect();
        let mut links = Vec::new();
        let provider = self.provider;
        for p in self.pilots.values_mut() {
            if !p.live() || p.agent.is_some() {
                continue;
            }
            let found = agents.iter().find(|a| {
                a.connected
                    && !taken.contains(&a.id)
                    && a.pilot_id
                        .as_deref()
                        .is_some_and(|r| p.agent_match.matches(r))
            });
            if let Some(a) = found {
                taken.push(a.id);
                links.push(p.link(a.id, a.connected_at_ms, provider));
            }
        }
        links
    }

    /// The provider's view of our live pilots (one batched status call).
    pub fn reconcile(&mut self, states: &[(String, PilotState)], now_ms: u64) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        let provider = self.provider;
        for (provider_id, st) in states {
            let Some(p) = self
                .pilots
                .values_mut()
                .find(|p| p.live() && &p.provider_id == provider_id)
            else {
                continue;
            };
            let (state, reason) = match st {
                PilotState::Ended { reason } => (PilotPhase::Ended, Some(reason.clone())),
                PilotState::Queued if p.state == PilotPhase::Submitted => {
                    (PilotPhase::Queued, None)
                }
                PilotState::Running
                    if matches!(p.state, PilotPhase::Submitted | PilotPhase::Queued) =>
                {
                    (PilotPhase::Running, None)
                }
                _ => continue,
            };
            p.state = state;
            if p.state == PilotPhase::Ended {
                p.ended_at_ms = Some(now_ms);
                p.reason = reason.or(p.reason.take());
            }
            ops.push(p.row(provider));
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::agent_info;

    fn fleet_with(n: u32) -> Fleet {
        let mut f = Fleet::new("hpc", vec![]);
        let ids = f.new_ids(n);
        let started: Vec<StartedPilot> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| StartedPilot {
                pilot_id: id.clone(),
                provider_id: format!("{}", 100 + i),
                agent_id: providers::AgentId::Exact(format!("{}", 100 + i)),
                commands: vec![],
            })
            .collect();
        for (i, s) in started.iter().enumerate() {
            f.started(Some("demeter"), std::slice::from_ref(s), i as u64);
        }
        f
    }

    #[test]
    fn scaling_down_cancels_queued_then_drains_idle_and_keeps_busy_without_force() {
        let mut f = fleet_with(4);
        // 100 and 101 connected as agents 1 (busy) and 2 (idle); 102, 103 queued.
        assert!(f.agent_connected("100", 1, 10).is_some());
        assert!(f.agent_connected("101", 2, 10).is_some());
        let agents = [agent_info(1, 1), agent_info(2, 0)];
        let p = f.plan_scale(Some("demeter"), ScaleChange::Set(0), &agents, false);
        assert_eq!(p.before, 4);
        assert_eq!(
            p.cancel,
            vec!["p-4".to_string(), "p-3".to_string()],
            "newest queued first"
        );
        assert_eq!(p.drain, vec![("p-2".to_string(), 2)]);
        assert!(p.kill.is_empty());
        assert_eq!((p.kept_busy, p.after), (1, 1));
        let p = f.plan_scale(Some("demeter"), ScaleChange::Set(0), &agents, true);
        assert_eq!(p.kill, vec!["p-1".to_string()]);
        assert_eq!(p.after, 0);
        let p = f.plan_scale(Some("demeter"), ScaleChange::Remove(1), &agents, false);
        assert_eq!((p.cancel.len(), p.drain.len(), p.after), (1, 0, 3));
        let p = f.plan_scale(Some("demeter"), ScaleChange::Add(2), &agents, false);
        assert_eq!((p.start, p.after), (2, 6));
        let p = f.plan_scale(Some("other"), ScaleChange::Set(1), &agents, false);
        assert_eq!((p.before, p.start), (0, 1), "tags are counted apart");
    }

    #[test]
    fn reconciliation_ends_vanished_pilots_and_matching_records_queue_wait() {
        let mut f = fleet_with(2);
        let link = f.agent_connected("101", 7, 5_000).expect("ours");
        assert_eq!((link.pilot.as_str(), link.wait_ms), ("p-2", 4_999));
        assert!(f.agent_connected("999", 8, 5_000).is_none(), "not ours");
        let ops = f.reconcile(
            &[
                (
                    "100".into(),
                    PilotState::Ended {
                        reason: "no longer known to Slurm".into(),
                    },
                ),
                ("101".into(), PilotState::Running),
            ],
            6_000,
        );
        assert_eq!(ops.len(), 1, "a connected pilot stays connected");
        let infos = f.infos();
        assert_eq!(infos[0].state, PilotPhase::Ended);
        assert_eq!(infos[0].reason.as_deref(), Some("no longer known to Slurm"));
        assert_eq!(infos[1].state, PilotPhase::Connected);
        assert_eq!(f.live_provider_ids(), vec!["101".to_string()]);
        // A restarted broker continues the numbering.
        let mut g = Fleet::new("hpc", f.pilots.values().cloned().collect());
        assert_eq!(g.new_ids(1), vec!["p-3".to_string()]);
    }
}
