//! Rebalancing prefetched work: when an agent has room and nothing queued while
//! another holds prefetched attempts it cannot start (its resources are taken by
//! what it runs), the broker asks the holder to give some back
//! (`ToAgent::Return`, in `Effects::returns`). The holder answers with a
//! `RETURNED` result for each attempt still queued (the ordinary loss without
//! fault: the task is ready again, no retry spent, and the next fill pass gives
//! it to the agent with room) and refuses, by simply running it, any attempt it
//! had already started; the broker accepts either answer.
//!
//! It decides only which attempts to ask back. It must not end or move an
//! attempt itself: the attempt stays current on its holder until the holder's
//! answer, so a task is never on two agents and never counted twice.

use scalable_common::protocol::{AgentId, AttemptId};
use scalable_common::resources::Resources;

use super::model::Agent;
use super::Core;

/// An agent with room and nothing queued, and the room not yet promised to
/// attempts asked back.
struct Receiver {
    agent: AgentId,
    free: Resources,
}

impl Core {
    /// Asks holders of stuck prefetched attempts to give back as many as the
    /// idle agents have room for (the attempts already asked back count
    /// against that room until they are answered).
    pub(super) fn rebalance(&mut self, now_ms: u64) {
        let mut receivers = self.receivers(now_ms);
        if receivers.is_empty() {
            return;
        }
        let attempts = &self.attempts;
        self.returning
            .retain(|id| attempts.get(id).is_some_and(|a| !a.started));
        let pending: Vec<AttemptId> = self.returning.iter().copied().collect();
        for id in pending {
            self.place(&mut receivers, id, now_ms);
        }
        receivers.retain(|r| r.free.cpus > 0);
        if receivers.is_empty() {
            return;
        }
        let donors: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| a.unstarted > 0 && !receivers.iter().any(|r| r.agent == a.id))
            .map(|a| a.id)
            .collect();
        for donor in donors {
            for id in self.stuck(&self.agents[&donor], now_ms) {
                if receivers.is_empty() {
                    return;
                }
                if self.place(&mut receivers, id, now_ms) {
                    self.returning.insert(id);
                    self.fx.returns.entry(donor).or_default().push(id);
                    receivers.retain(|r| r.free.cpus > 0);
                }
            }
        }
    }

    /// Agents that take work, hold nothing unstarted, and have a free cpu.
    fn receivers(&self, now_ms: u64) -> Vec<Receiver> {
        self.agents
            .values()
            .filter(|a| {
                a.unstarted == 0
                    && a.connected
                    && !a.draining
                    && a.benched_until_ms.is_none_or(|t| now_ms >= t)
                    && a.committed.fits_in(&a.capacity)
                    && a.committed.cpus < a.capacity.cpus
            })
            .map(|a| {
                let mut free = a.capacity.clone();
                free.take(&a.committed);
                Receiver { agent: a.id, free }
            })
            .collect()
    }

    /// Promises the attempt's request to the first receiver that could run its
    /// job and has room for it. Returns whether one had.
    fn place(&self, receivers: &mut [Receiver], id: AttemptId, now_ms: u64) -> bool {
        let at = &self.attempts[&id];
        let job = &self.jobs[&at.job];
        let taker = receivers.iter_mut().find(|r| {
            let agent = &self.agents[&r.agent];
            at.resources.fits_in(&r.free)
                && agent.reserved_for.is_none_or(|j| j == at.job)
                && self.eligible(agent, job, now_ms)
        });
        match taker {
            Some(r) => {
                r.free.take(&at.resources);
                true
            }
            None => false,
        }
    }

    /// The holder's unstarted attempts it cannot start now, newest first: in
    /// assignment order, those that fit beside what it runs would start there
    /// next; the rest wait. Only attempts assigned at least `rebalance_after_ms`
    /// ago (a younger one's start may still be on its way), not cancelled and
    /// not already asked back.
    fn stuck(&self, holder: &Agent, now_ms: u64) -> Vec<AttemptId> {
        let mut room = holder.capacity.clone();
        for id in &holder.attempts {
            let at = &self.attempts[id];
            if at.started && at.resources.fits_in(&room) {
                room.take(&at.resources);
            }
        }
        let mut stuck = Vec::new();
        for id in &holder.attempts {
            let at = &self.attempts[id];
            if at.started {
                continue;
            }
            if at.resources.fits_in(&room) {
                room.take(&at.resources);
                continue;
            }
            if at.assigned_at_ms + self.cfg.rebalance_after_ms > now_ms {
                // Listed in assignment order: the rest are younger still.
                break;
            }
            if !at.cancel_requested && !self.returning.contains(id) {
                stuck.push(*id);
            }
        }
        stuck.reverse();
        stuck
    }
}
