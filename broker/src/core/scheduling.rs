//! Scheduling: which agents may run a job (`eligible`), anti-starvation
//! reservations, filling each agent (fit-now, then the prefetched queue), the
//! next ready task of a job and the assignment of an attempt.
//!
//! It must not end attempts except through `transitions` (a template that
//! fails to render ends its attempt there, and so does an assignment too
//! large to send, checked against `bounds`).

use std::cmp::Reverse;
use std::sync::Arc;

use scalable_common::protocol::{AgentId, Assignment, AttemptEnd, AttemptId, AttemptResult, JobId};
use scalable_common::resources::Resources;

use super::model::{Agent, Attempt, Job, ReadyKey, TaskState};
use super::render::task_render;
use super::transitions::failure_reason;
use super::{add_resources, bounds, Core, EventKind, RequestSource, StoreOp};

impl Core {
    /// How many unstarted attempts this agent may hold: one per cpu (assigned,
    /// not yet reported started) plus a queue worth its measured throughput over
    /// the prefetch horizon, and at least one more per cpu.
    pub(super) fn prefetch_depth(&self, a: &Agent) -> u32 {
        let cpus = a.capacity.cpus.max(1);
        let by_rate = (a.rate_per_s * self.cfg.prefetch_horizon_ms as f64 / 1000.0) as u32;
        cpus + by_rate.max(cpus).min(self.cfg.prefetch_max)
    }

    /// Assigns ready tasks to agents. First pass: only what fits in free
    /// resources, so idle agents get work before anyone prefetches. Second pass:
    /// each agent's prefetched queue up to its depth.
    /// Then prefetched attempts stuck behind busy agents are asked back for
    /// agents left idle (`rebalance`).
    pub fn schedule(&mut self, now_ms: u64) {
        self.fill(now_ms);
        self.rebalance(now_ms);
    }

    fn fill(&mut self, now_ms: u64) {
        if self.ready_jobs.is_empty() || self.agents.is_empty() {
            return;
        }
        let agent_ids: Vec<AgentId> = self.agents.keys().copied().collect();
        for &agent_id in &agent_ids {
            self.fill_agent(agent_id, false, now_ms);
        }
        self.update_reservations(now_ms);
        for &agent_id in &agent_ids {
            if self.ready_jobs.is_empty() {
                return;
            }
            self.fill_agent(agent_id, true, now_ms);
        }
    }

    /// Whether `agent` takes work now and could ever run the job's tasks
    /// (tag, size, container runtime, lifetime).
    pub(super) fn eligible(&self, agent: &Agent, job: &Job, now_ms: u64) -> bool {
        !agent.draining
            && agent.connected
            && agent.benched_until_ms.is_none_or(|t| now_ms >= t)
            && agent.offer().could_run(job, &job.resources, now_ms)
    }

    /// Anti-starvation (ARCHITECTURE.md): after the fit-now pass, a job whose next
    /// task found no room although an agent could run it is "blocked"; blocked
    /// for `reserve_after_ms`, it reserves the eligible agent with the most free
    /// cpus, which then takes only that job's tasks until one of them starts there.
    fn update_reservations(&mut self, now_ms: u64) {
        // Reservations of jobs with nothing left to dispatch are void.
        let stale: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| {
                a.reserved_for
                    .is_some_and(|j| self.jobs.get(&j).is_none_or(|job| !job.has_dispatchable()))
            })
            .map(|a| a.id)
            .collect();
        for a in stale {
            self.agents.get_mut(&a).expect("listed").reserved_for = None;
        }
        let order: Vec<JobId> = self.ready_jobs.iter().map(|k| k.job).collect();
        for job_id in order {
            let job = &self.jobs[&job_id];
            if !job.has_dispatchable() || !job.under_max_running() {
                continue;
            }
            let eligible: Vec<&Agent> = self
                .agents
                .values()
                .filter(|a| self.eligible(a, job, now_ms))
                .collect();
            let has_reservation = eligible.iter().any(|a| a.reserved_for == Some(job_id));
            if eligible.is_empty() || has_reservation {
                continue;
            }
            let since = *self
                .jobs
                .get_mut(&job_id)
                .expect("exists")
                .blocked_since_ms
                .get_or_insert(now_ms);
            if now_ms.saturating_sub(since) < self.cfg.reserve_after_ms {
                continue;
            }
            // Starving, not just waiting: other jobs got room on an agent this job
            // could use while it waited.
            let job = &self.jobs[&job_id];
            let others_served = self.agents.values().any(|a| {
                self.eligible(a, job, now_ms)
                    && a.last_assign
                        .is_some_and(|(at, j)| at >= since && j != job_id)
            });
            if !others_served {
                continue;
            }
            if let Some(agent) = self.agent_to_reserve(job, now_ms) {
                self.agents.get_mut(&agent).expect("found").reserved_for = Some(job_id);
                let job = &self.jobs[&job_id];
                self.fx.store.push(StoreOp::Event {
                    at_ms: now_ms,
                    kind: EventKind::Reservation,
                    run: Some(job.run),
                    detail: format!(
                        "agent {agent} reserved for job {} (needs {}), blocked since {} ms",
                        job.def.name,
                        job.resources,
                        now_ms - since
                    ),
                });
            }
        }
    }

    /// The unreserved eligible agent with the most free cpus (lowest id on a tie).
    fn agent_to_reserve(&self, job: &Job, now_ms: u64) -> Option<AgentId> {
        self.agents
            .values()
            .filter(|a| a.reserved_for.is_none() && self.eligible(a, job, now_ms))
            .max_by_key(|a| {
                (
                    a.capacity.cpus.saturating_sub(a.committed.cpus),
                    Reverse(a.id),
                )
            })
            .map(|a| a.id)
    }

    fn fill_agent(&mut self, agent_id: AgentId, prefetch: bool, now_ms: u64) {
        let depth = self.prefetch_depth(&self.agents[&agent_id]);
        let order: Vec<ReadyKey> = self.ready_jobs.iter().copied().collect();
        for key in order {
            let job_id = key.job;
            loop {
                let agent = &self.agents[&agent_id];
                if agent.draining {
                    return;
                }
                let job = &self.jobs[&job_id];
                if !job.has_dispatchable() {
                    self.ready_jobs.remove(&key);
                    break;
                }
                if agent.reserved_for.is_some_and(|r| r != job_id) {
                    break;
                }
                if !self.eligible(agent, job, now_ms) {
                    break;
                }
                if !job.under_max_running() {
                    break;
                }
                let fits = if prefetch {
                    agent.unstarted < depth
                } else {
                    let least = job.least_request();
                    agent.fits_now(least) || least.fits_in(&agent.reported_free)
                };
                if !fits {
                    break;
                }
                if job.def.cache && job.probing.len() >= self.cfg.cache_probes_max {
                    break;
                }
                if job.templates.is_costly() && job.rendering.len() >= self.cfg.renders_max {
                    break;
                }
                if self.sizing_full(job) {
                    break;
                }
                let Some(index) = self.pop_ready_task(job_id) else {
                    continue;
                };
                if self.needs_render(job_id, index) {
                    self.request_render(job_id, index);
                    continue;
                }
                let job = &self.jobs[&job_id];
                if job.def.cache && !job.cache_misses.contains_key(&index) {
                    self.probe_cache(job_id, index);
                    continue;
                }
                if job.needs_sizing(index) {
                    self.request_sizing(job_id, index);
                    continue;
                }
                if let Some((r, _)) = job.request_of(index) {
                    // A task asking for other than its job (memory raised after
                    // MEMORY_EXHAUSTION, sized by the advisor) goes where it
                    // fits, or waits its turn.
                    let agent = &self.agents[&agent_id];
                    let fits = agent.could_ever_run(r)
                        && (prefetch || agent.fits_now(r) || r.fits_in(&agent.reported_free));
                    if !fits {
                        self.jobs
                            .get_mut(&job_id)
                            .expect("exists")
                            .requeued
                            .push_front(index);
                        break;
                    }
                }
                self.assign(job_id, index, agent_id, now_ms);
                self.note_dispatch(agent_id, job_id, index, now_ms);
            }
        }
    }

    /// After a dispatch: the job's blocked clock restarts, the agent's
    /// reported gaps shrink by the request, and its reservation is used up.
    fn note_dispatch(&mut self, agent_id: AgentId, job_id: JobId, index: u64, now_ms: u64) {
        self.jobs.get_mut(&job_id).expect("exists").blocked_since_ms = Some(now_ms);
        let agent = self.agents.get_mut(&agent_id).expect("exists");
        agent.last_assign = Some((now_ms, job_id));
        let job = &self.jobs[&job_id];
        let req = job.request_of(index).map_or(&job.resources, |(r, _)| r);
        if req.fits_in(&agent.reported_free) {
            agent.reported_free.take(req);
        } else {
            agent.reported_free = Resources::default();
        }
        if agent.reserved_for == Some(job_id) {
            agent.reserved_for = None;
        }
    }

    /// Next ready task of the job, skipping tasks cancelled while queued.
    fn pop_ready_task(&mut self, job_id: JobId) -> Option<u64> {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        while let Some(i) = job.requeued.pop_front() {
            if job.tasks[i as usize].state == TaskState::Ready {
                return Some(i);
            }
        }
        while job.next_fresh < job.count() {
            let i = job.next_fresh;
            job.next_fresh += 1;
            if job.tasks[i as usize].state == TaskState::Ready {
                return Some(i);
            }
        }
        None
    }

    fn assign(&mut self, job_id: JobId, index: u64, agent_id: AgentId, now_ms: u64) {
        let Opened {
            id: attempt_id,
            number,
            resources,
            ready_at_ms,
            request_source,
        } = self.open_attempt(job_id, index, agent_id, now_ms);
        let job = &self.jobs[&job_id];
        let run_id = job.run;
        let task = job.first_task + index;
        let sizing = job.sizing_record(index);
        let rendered = task_render(&self.runs[&run_id], job, index);
        // The attempt row is written either way: a task whose template fails for
        // this item gets a recorded, failed attempt. It keeps a bounded argv.
        let argv_json = match &rendered {
            Ok(r) => bounds::stored_argv_json(&r.argv),
            Err(_) => "[]".into(),
        };
        self.fx.store.push(StoreOp::InsertAttempt {
            attempt: attempt_id,
            task,
            run: run_id,
            job: job_id,
            index,
            number,
            agent: agent_id,
            assigned_at_ms: now_ms,
            argv_json,
            ready_at_ms,
            resources: resources.clone(),
            request_source,
        });
        let attempt = attempt_id;
        (self.fx.store).extend(sizing.map(|record| StoreOp::AttemptSizing { attempt, record }));
        match rendered {
            Ok(r) => {
                self.note_checkpoint_restore(job_id, index, attempt_id, number, &r.cwd);
                // Rendered inline just now: moved, not copied (the hot path).
                let r = Arc::try_unwrap(r).unwrap_or_else(|kept| (*kept).clone());
                let job = &self.jobs[&job_id];
                let assignment = Assignment {
                    attempt: attempt_id,
                    task,
                    run: run_id,
                    attempt_number: number,
                    argv: r.argv,
                    env: r.env,
                    cwd: r.cwd,
                    resources,
                    walltime_ms: job.walltime_of(index),
                    outputs: r.outputs,
                    container: job.container.clone(),
                    inputs: r.inputs,
                };
                if let Some(error) = bounds::oversized(&assignment) {
                    // It could never be sent: fail it now, not on every try.
                    self.unsendable(attempt_id, error, now_ms);
                    return;
                }
                self.fx.assign.entry(agent_id).or_default().push(assignment);
            }
            Err(e) => {
                // Validation renders the first and last item; another item can still
                // fail (e.g. a filter on a value). Fail the task without sending it.
                let at = self.attempts.remove(&attempt_id).expect("just inserted");
                let result = AttemptResult::bare(
                    attempt_id,
                    AttemptEnd::SpawnFailed {
                        error: format!("template error: {e}"),
                    },
                    0,
                    now_ms * 1000,
                );
                self.end_attempt(at, result, false, now_ms);
            }
        }
    }

    /// An attempt whose assignment can never be sent ends at once, without
    /// reaching its agent, and its task fails without spending retries (the
    /// same item renders the same size every time).
    fn unsendable(&mut self, attempt_id: AttemptId, error: String, now_ms: u64) {
        let at = self.attempts.remove(&attempt_id).expect("just inserted");
        let end = AttemptEnd::SpawnFailed { error };
        let result = AttemptResult::bare(attempt_id, end, 0, now_ms * 1000);
        let reason = failure_reason(&result, &at, None);
        self.end_attempt_for_good(at, result, reason, now_ms);
    }

    /// A new attempt of the task on the agent: its id and number, what it
    /// asks for (committed on the agent) and why, and since when its task
    /// was ready. The task is assigned.
    fn open_attempt(
        &mut self,
        job_id: JobId,
        index: u64,
        agent_id: AgentId,
        now_ms: u64,
    ) -> Opened {
        let attempt_id = self.ids.attempt;
        self.ids.attempt += 1;
        let job = self.jobs.get_mut(&job_id).expect("exists");
        let slot = &mut job.tasks[index as usize];
        slot.attempts = slot.attempts.saturating_add(1);
        let number = slot.attempts as u32;
        job.in_flight += 1;
        // Most tasks never came back: no hashing on the hot path for them.
        let ready_again = match job.ready_again_at_ms.is_empty() {
            true => None,
            false => job.ready_again_at_ms.remove(&index),
        };
        let ready_at_ms = ready_again.unwrap_or(job.released_at_ms);
        let (resources, request_source) = match job.request_of(index) {
            Some((r, source)) => (r.clone(), source),
            None => (job.resources.clone(), RequestSource::Manifest),
        };
        let agent = self.agents.get_mut(&agent_id).expect("exists");
        add_resources(&mut agent.committed, &resources);
        agent.attempts.insert(attempt_id);
        agent.unstarted += 1;
        let attempt = Attempt {
            id: attempt_id,
            job: job_id,
            index,
            agent: agent_id,
            number,
            started: false,
            started_at_us: 0,
            assigned_at_ms: now_ms,
            cancel_requested: false,
            resources: resources.clone(),
        };
        self.attempts.insert(attempt_id, attempt);
        self.set_task_state(job_id, index, TaskState::Assigned);
        Opened {
            id: attempt_id,
            number,
            resources,
            ready_at_ms,
            request_source,
        }
    }
}

/// A new attempt as `open_attempt` made it.
struct Opened {
    id: AttemptId,
    number: u32,
    resources: Resources,
    ready_at_ms: u64,
    request_source: RequestSource,
}
