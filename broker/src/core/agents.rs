//! What agents do to the core: connect (or come back and be fenced), send
//! heartbeats and events (started, finished), leave, drain or go silent; and
//! the liveness tick that declares silent agents lost.
//!
//! Every state change of a task goes through `transitions`; this module must
//! not schedule nor decide retries itself.

use std::cmp::Reverse;
use std::collections::HashSet;

use scalable_common::protocol::{
    AgentHello, AgentId, AttemptEnd, AttemptId, AttemptResult, Started,
};
use scalable_common::resources::Resources;

use super::model::{Agent, Attempt, TaskState};
use super::{Ack, Core, EventKind, Shutdown, StoreOp};

impl Core {
    /// An agent passed authentication. Returns its id: the one it had when it
    /// says which (`resume_agent`) and the broker still knows it (a reconnect, or
    /// a restored agent after a broker restart), else a new one.
    pub fn agent_connected(&mut self, hello: &AgentHello, now_ms: u64) -> AgentId {
        let held: HashSet<AttemptId> = hello.held_attempts.iter().copied().collect();
        if let Some(old) = hello.resume_agent.filter(|id| self.agents.contains_key(id)) {
            self.rebind_agent(old, hello, &held, now_ms);
            return old;
        }
        let id = self.ids.agent;
        self.ids.agent += 1;
        let mut tags = hello.tags.clone();
        tags.sort();
        tags.dedup();
        self.fx.store.push(StoreOp::InsertAgent {
            agent: id,
            name: hello.name.clone(),
            hostname: hello.hostname.clone(),
            tags: tags.clone(),
            resources: hello.resources.clone(),
            connected_at_ms: now_ms,
            pilot_id: hello.pilot_id.clone(),
        });
        let agent = Agent {
            lifetime_end_ms: hello.lifetime_ms.map(|l| now_ms + l),
            runtimes: hello.runtimes.clone(),
            limit_mode: hello.limit_mode.clone(),
            pilot_id: hello.pilot_id.clone(),
            ..Agent::new(
                id,
                hello.name.clone(),
                hello.hostname.clone(),
                tags,
                hello.resources.clone(),
                now_ms,
            )
        };
        self.agents.insert(id, agent);
        // Whatever it holds belongs to an agent the broker already declared
        // lost: fenced. Stop what still runs (its results are ignored).
        self.fence_held(id, &held);
        id
    }

    /// A known agent is back. Attempts the broker gave it that it does not hold
    /// were lost on the way (or with a crash of its own): they go back to ready
    /// without spending a retry. Attempts it holds that are not its own are
    /// stopped. Cancels sent while it was away are sent again.
    fn rebind_agent(
        &mut self,
        id: AgentId,
        hello: &AgentHello,
        held: &HashSet<AttemptId>,
        now_ms: u64,
    ) {
        let a = self.agents.get_mut(&id).expect("checked by the caller");
        let was_restored = a.restored;
        a.connected = true;
        a.restored = false;
        a.last_seen_ms = now_ms;
        a.capacity = hello.resources.clone();
        a.lifetime_end_ms = hello.lifetime_ms.map(|l| now_ms + l);
        a.runtimes = hello.runtimes.clone();
        a.limit_mode = hello.limit_mode.clone();
        a.reported_free = Resources::default();
        let mine: Vec<AttemptId> = a.attempts.iter().copied().collect();
        let missing: Vec<AttemptId> = mine.iter().copied().filter(|x| !held.contains(x)).collect();
        let mut on_the_way = 0;
        for attempt in &missing {
            if let Some(at) = self.attempts.remove(attempt) {
                let result = AttemptResult::bare(
                    *attempt,
                    AttemptEnd::AgentLost,
                    at.started_at_us,
                    now_ms * 1000,
                );
                // After a broker restart a missing attempt may never have
                // been sent: the broker's doing, not the connection's.
                if at.started || was_restored {
                    self.end_attempt(at, result, false, now_ms);
                } else {
                    on_the_way += 1;
                    self.lost_on_the_way(at, result, now_ms);
                }
            }
        }
        self.note_undelivered(id, on_the_way, now_ms);
        let resend: Vec<AttemptId> = mine
            .iter()
            .filter(|x| held.contains(x))
            .filter(|x| self.attempts.get(x).is_some_and(|at| at.cancel_requested))
            .copied()
            .collect();
        if !resend.is_empty() {
            self.fx.cancel.entry(id).or_default().extend(resend);
        }
        self.fence_held(id, held);
        self.fx.store.push(StoreOp::Event {
            at_ms: now_ms,
            kind: if was_restored {
                EventKind::AgentReclaimed
            } else {
                EventKind::AgentReconnected
            },
            run: None,
            detail: format!(
                "agent {id} ({}) is back holding {} attempts; {} it did not hold were requeued",
                hello.name,
                held.len(),
                missing.len()
            ),
        });
    }

    /// An attempt its agent never received (nor started): back to ready
    /// without a retry, unless it was lost this way `undelivered_limit` times,
    /// when sending it again looks futile (circuit breaker per task).
    fn lost_on_the_way(&mut self, at: Attempt, result: AttemptResult, now_ms: u64) {
        let limit = self.cfg.undelivered_limit;
        let job = self.jobs.get_mut(&at.job).expect("attempt's job exists");
        let slot = &mut job.tasks[at.index as usize];
        slot.undelivered = slot.undelivered.saturating_add(1);
        if slot.undelivered < limit {
            self.end_attempt(at, result, false, now_ms);
            return;
        }
        let reason = format!(
            "never reached an agent: lost on the way {} times (limit {limit}), never started",
            slot.undelivered
        );
        self.end_attempt_for_good(at, result, reason, now_ms);
    }

    /// The circuit breaker per agent: `lost` attempts sent to it did not
    /// arrive. Reconnects in a row that lose attempts (none started in
    /// between) bench it for `bench_ms`; once it works again it is trusted.
    fn note_undelivered(&mut self, id: AgentId, lost: usize, now_ms: u64) {
        if lost == 0 {
            return;
        }
        let (limit, bench_ms) = (self.cfg.agent_undelivered_limit, self.cfg.bench_ms);
        let a = self.agents.get_mut(&id).expect("rebound");
        a.undelivered_streak += 1;
        if a.undelivered_streak < limit {
            return;
        }
        a.benched_until_ms = Some(now_ms + bench_ms);
        let detail = format!(
            "agent {id} ({}) came back {} times in a row without {lost} attempts it was sent: offered nothing for {} s",
            a.name,
            a.undelivered_streak,
            bench_ms / 1000
        );
        self.fx.store.push(StoreOp::Event {
            at_ms: now_ms,
            kind: EventKind::AgentBenched,
            run: None,
            detail,
        });
    }

    /// Tells `agent` to stop every attempt it holds that is not its current one.
    fn fence_held(&mut self, agent: AgentId, held: &HashSet<AttemptId>) {
        let mut stale: Vec<AttemptId> = held
            .iter()
            .copied()
            .filter(|x| self.attempts.get(x).is_none_or(|at| at.agent != agent))
            .collect();
        if !stale.is_empty() {
            stale.sort_unstable();
            self.fx.cancel.entry(agent).or_default().extend(stale);
        }
    }

    /// Asks an agent to leave (its pilot is scaled down): it takes nothing new,
    /// hands anything it holds back (not spending retries) and exits.
    pub fn drain_agent(&mut self, agent: AgentId, reason: &str) -> bool {
        let Some(a) = self.agents.get_mut(&agent) else {
            return false;
        };
        a.draining = true;
        a.leaving_reason.get_or_insert_with(|| reason.to_string());
        self.fx.shutdown.push(Shutdown {
            agent,
            reason: reason.to_string(),
        });
        true
    }

    /// The agent's connection dropped. It keeps its attempts: it may come back
    /// (same id) before the heartbeat timeout declares it lost.
    pub fn agent_disconnected(&mut self, agent: AgentId, now_ms: u64) {
        let Some(a) = self.agents.get_mut(&agent) else {
            return;
        };
        if a.draining && a.attempts.is_empty() {
            // It said it was leaving and handed everything back: gone for good.
            let reason = match &a.leaving_reason {
                Some(why) => format!("left: {why}"),
                None => "left".to_string(),
            };
            self.agent_lost(agent, &reason, now_ms);
            return;
        }
        a.connected = false;
        a.reserved_for = None;
    }

    pub fn agent_heartbeat(&mut self, agent: AgentId, now_ms: u64) {
        if let Some(a) = self.agents.get_mut(&agent) {
            a.last_seen_ms = now_ms;
        }
    }

    /// The agent says it is leaving: it takes nothing new.
    pub fn agent_leaving(&mut self, agent: AgentId, reason: &str, now_ms: u64) {
        if let Some(a) = self.agents.get_mut(&agent) {
            a.draining = true;
            a.leaving_reason.get_or_insert_with(|| reason.to_string());
            a.last_seen_ms = now_ms;
        }
    }

    /// The agent is gone (disconnected, silent, or left). Its attempts go back to
    /// ready without spending a retry.
    pub fn agent_lost(&mut self, agent: AgentId, reason: &str, now_ms: u64) {
        let Some(a) = self.agents.remove(&agent) else {
            return;
        };
        // A crash of the agent may be the task's doing (crash limit); a broker
        // restart the agent did not come back from is not.
        let crash = !a.restored && !a.draining;
        for attempt in a.attempts {
            if let Some(at) = self.attempts.remove(&attempt) {
                let result = AttemptResult::bare(
                    attempt,
                    AttemptEnd::AgentLost,
                    at.started_at_us,
                    now_ms * 1000,
                );
                self.end_attempt(at, result, crash, now_ms);
            }
        }
        self.fx.store.push(StoreOp::AgentLeft {
            agent,
            reason: reason.to_string(),
            at_ms: now_ms,
        });
        self.fx.disconnect.push(agent);
    }

    /// A batch of events from one agent.
    pub fn agent_events(
        &mut self,
        agent: AgentId,
        started: &[Started],
        finished: Vec<AttemptResult>,
        free: Option<Resources>,
        now_ms: u64,
    ) {
        let Some(a) = self.agents.get_mut(&agent) else {
            self.results_of_lost_agent(agent, finished, now_ms);
            return;
        };
        a.last_seen_ms = now_ms;
        if let Some(free) = free {
            a.reported_free = free;
        }
        self.attempts_started(agent, started, &finished);
        // Acknowledge everything, stale or not, so the agent can forget it.
        let acks: Vec<Ack> = finished
            .into_iter()
            .map(|r| self.attempt_result(agent, r, now_ms))
            .collect();
        if !acks.is_empty() {
            self.fx.ack.entry(agent).or_default().extend(acks);
        }
    }

    /// A lost agent still talking (its connection is being closed): its
    /// results are fenced, acknowledged and ignored.
    fn results_of_lost_agent(&mut self, agent: AgentId, finished: Vec<AttemptResult>, now_ms: u64) {
        for r in finished {
            if self.counted.contains(&r.attempt) {
                self.fx.ack.entry(agent).or_default().push(Ack {
                    attempt: r.attempt,
                    counted: true,
                });
                continue;
            }
            self.fx.store.push(StoreOp::StaleResult {
                attempt: r.attempt,
                agent,
                at_ms: now_ms,
            });
            self.fx.ack.entry(agent).or_default().push(Ack {
                attempt: r.attempt,
                counted: false,
            });
        }
    }

    /// Attempts the agent started: their tasks run.
    fn attempts_started(
        &mut self,
        agent: AgentId,
        started: &[Started],
        finished: &[AttemptResult],
    ) {
        let ending: HashSet<AttemptId> = if started.is_empty() {
            Default::default()
        } else {
            finished.iter().map(|r| r.attempt).collect()
        };
        for s in started {
            let Some(at) = self.attempts.get_mut(&s.attempt) else {
                continue;
            };
            if at.agent != agent || at.started {
                continue;
            }
            at.started = true;
            at.started_at_us = s.at_us;
            let (job, index) = (at.job, at.index);
            let a = self.agents.get_mut(&agent).expect("checked");
            a.unstarted -= 1;
            // What it is sent arrives: the breaker closes.
            a.undelivered_streak = 0;
            a.benched_until_ms = None;
            // A result in the same batch carries the start time; one write, not two.
            if !ending.contains(&s.attempt) {
                self.fx.store.push(StoreOp::AttemptStarted {
                    attempt: s.attempt,
                    at_us: s.at_us,
                });
            }
            self.set_task_state(job, index, TaskState::Running);
        }
    }

    /// One result from a connected agent: a duplicate of a counted one, a
    /// stale one (not the task's current attempt), or the end of a current
    /// attempt. Returns its acknowledgement.
    fn attempt_result(&mut self, agent: AgentId, r: AttemptResult, now_ms: u64) -> Ack {
        let current = self
            .attempts
            .get(&r.attempt)
            .is_some_and(|at| at.agent == agent);
        if !current && self.counted.contains(&r.attempt) {
            self.fx.store.push(StoreOp::Event {
                at_ms: now_ms,
                kind: EventKind::DuplicateResult,
                run: None,
                detail: format!("attempt {} reported again; counted once", r.attempt),
            });
            return Ack {
                attempt: r.attempt,
                counted: true,
            };
        }
        if !current {
            self.fx.store.push(StoreOp::StaleResult {
                attempt: r.attempt,
                agent,
                at_ms: now_ms,
            });
            return Ack {
                attempt: r.attempt,
                counted: false,
            };
        }
        let ack = Ack {
            attempt: r.attempt,
            counted: r.end.is_success(),
        };
        let at = self.attempts.remove(&r.attempt).expect("checked");
        let depth = u64::from(self.prefetch_depth(&self.agents[&agent]));
        let a = self.agents.get_mut(&agent).expect("checked");
        if r.end == AttemptEnd::Drained {
            // A draining agent takes nothing new, even before it says so:
            // re-assigning to it would bounce tasks back and forth.
            a.draining = true;
        }
        if r.end != AttemptEnd::Returned {
            // A returned attempt did no work: it must not raise the rate
            // (and with it the prefetch depth).
            a.completed += 1;
            a.window_completed += 1;
            // Slow start: an agent that got through its whole queue before the
            // window's end was starved by it; the tick's 250 ms windows alone
            // took about a second to grow a fast agent's queue from a few tasks
            // to thousands (`scripts/bench.sh dispatch` lost ~0.3 s to it).
            if a.window_completed >= depth {
                a.close_rate_window(now_ms, EARLY_WINDOW_MS, true);
            }
        }
        a.undelivered_streak = 0;
        a.benched_until_ms = None;
        self.end_attempt(at, r, false, now_ms);
        ack
    }

    /// Time passed: lost agents, retries whose backoff is over, rate windows.
    pub fn tick(&mut self, now_ms: u64) {
        // A broker that was itself stalled (SIGSTOP, swap, a suspended laptop)
        // heard nobody meanwhile: it gives every agent a fresh deadline instead
        // of condemning them all at once (reliability.md rule 6).
        if let Some(last) = self.last_tick_ms {
            let gap = now_ms.saturating_sub(last);
            if gap > self.cfg.heartbeat_timeout_ms / 2 {
                for a in self.agents.values_mut() {
                    a.last_seen_ms = a.last_seen_ms.max(now_ms);
                }
                self.fx.store.push(StoreOp::Event {
                    at_ms: now_ms,
                    kind: EventKind::BrokerStalled,
                    run: None,
                    detail: format!(
                        "the broker did not run for {gap} ms; agents' heartbeat deadlines restarted"
                    ),
                });
            }
        }
        self.last_tick_ms = Some(now_ms);
        let silent: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| now_ms.saturating_sub(a.last_seen_ms) > self.cfg.heartbeat_timeout_ms)
            .map(|a| a.id)
            .collect();
        for id in silent {
            self.agent_lost(id, "heartbeat timeout", now_ms);
        }
        while let Some(Reverse((due, job, index))) = self.backoff.peek().copied() {
            if due > now_ms {
                break;
            }
            self.backoff.pop();
            if self.jobs[&job].tasks[index as usize].state == TaskState::Ready {
                self.ready_again(job, index, due);
            }
        }
        for a in self.agents.values_mut() {
            a.close_rate_window(now_ms, RATE_WINDOW_MS, false);
        }
    }
}

/// The rate window the tick closes: long enough to smooth out batching.
const RATE_WINDOW_MS: u64 = 250;
/// The shortest window a starved agent's completions close (see `agent_events`):
/// long enough that one batch of results arriving at once is not a rate.
const EARLY_WINDOW_MS: u64 = 5;

impl Agent {
    /// Ends the current rate window if it is at least `min_span_ms` long and
    /// folds its rate into `rate_per_s`: smoothed by half, or, for a starved
    /// agent (`rise_fast`), taken at once when it is higher.
    fn close_rate_window(&mut self, now_ms: u64, min_span_ms: u64, rise_fast: bool) {
        let span = now_ms.saturating_sub(self.window_start_ms);
        if span < min_span_ms {
            return;
        }
        let rate = self.window_completed as f64 * 1000.0 / span as f64;
        self.rate_per_s = if rise_fast && rate > self.rate_per_s {
            rate
        } else {
            0.5 * self.rate_per_s + 0.5 * rate
        };
        self.window_completed = 0;
        self.window_start_ms = now_ms;
    }
}
