//! The broker's core: scheduling and every state transition of runs, tasks,
//! attempts and agents, as synchronous functions of (state, event, now).
//!
//! Sans-IO (STYLE habit 1): no clock, no sockets, no SQL, no processes here. Each
//! entry point records what must happen in [`Effects`]; the shell (`server`)
//! takes them with [`Core::take_effects`], commits `effects.store` and only then
//! sends the messages. Ids are allocated here from counters the shell seeds from
//! the store, so they are deterministic in tests.
//!
//! Invariant: a task is `Assigned`/`Running` iff exactly one attempt of it is in
//! `attempts`; an agent's `committed` is the sum of its attempts' requests.

pub mod effects;
pub mod model;
pub mod restore;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use scalable_common::protocol::{
    AgentHello, AgentId, AgentInfo, Assignment, AttemptEnd, AttemptId, AttemptResult,
    ContainerSpec, Counts, JobId, JobStatus, RunId, RunStatus, Started, TaskId,
};
use scalable_common::resources::Resources;
use scalable_common::workflow::{JobDef, JobTemplates, WorkflowDef};

pub use effects::{CacheProbe, CacheRecord, Effects, StoreOp};
use model::{Agent, Attempt, Job, Run, RunState, TaskState};

/// Tunables of the core. Defaults suit production; tests shorten the times.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub heartbeat_interval_ms: u64,
    /// An agent silent for this long is lost.
    pub heartbeat_timeout_ms: u64,
    pub retry_backoff_base_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// The prefetched queue holds about this much of an agent's work (by its
    /// measured completion rate), so dispatch is not one round trip per task.
    pub prefetch_horizon_ms: u64,
    pub prefetch_max: u32,
    /// A job blocked this long behind smaller tasks reserves an agent.
    pub reserve_after_ms: u64,
    /// A task whose started attempts were lost with their agent this many times
    /// fails (it probably kills its agents); HyperQueue's crash limit.
    pub crash_limit: u16,
    /// After a broker restart, agents have this long to come back and claim the
    /// attempts they kept running (heartbeat timeout + the agents' longest
    /// reconnect backoff).
    pub reclaim_window_ms: u64,
    /// A `MEMORY_EXHAUSTION` retry asks for the measured peak times this.
    pub oom_factor: f64,
    /// Cache probes out at once per job (each hashes the task's inputs).
    pub cache_probes_max: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            heartbeat_interval_ms: 5_000,
            heartbeat_timeout_ms: 20_000,
            retry_backoff_base_ms: 1_000,
            retry_backoff_max_ms: 300_000,
            prefetch_horizon_ms: 100,
            prefetch_max: 4_096,
            reserve_after_ms: 2_000,
            crash_limit: 5,
            reclaim_window_ms: 30_000,
            oom_factor: 1.5,
            cache_probes_max: 64,
        }
    }
}

/// Next ids to hand out; seeded by the shell from the store so ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub run: RunId,
    pub job: JobId,
    pub task: TaskId,
    pub attempt: AttemptId,
    pub agent: AgentId,
}

impl Default for Ids {
    fn default() -> Self {
        Ids {
            run: 1,
            job: 1,
            task: 1,
            attempt: 1,
            agent: 1,
        }
    }
}

/// A workflow that passed validation, with its templates compiled and its jobs'
/// resources resolved, ready for [`Core::submit`].
#[derive(Debug)]
pub struct SubmitPlan {
    pub def: WorkflowDef,
    pub jobs: Vec<PlannedJob>,
    pub cwd: String,
    pub source: String,
    pub definition_json: String,
}

#[derive(Debug)]
pub struct PlannedJob {
    pub def: Arc<JobDef>,
    pub templates: Arc<JobTemplates>,
    pub resources: Resources,
    /// The component's image, mounts and env when its manifest binding has an image.
    pub container: Option<ContainerSpec>,
}

/// Why `submit` refused a plan (the shell validated most things already).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("job {job:?}: after names unknown job {after:?}")]
    UnknownAfter { job: String, after: String },
    #[error("workflow has no jobs")]
    Empty,
}

/// The order in which ready jobs are offered to agents: higher `priority:`
/// first, then older runs first (FIFO between runs), then within a run larger
/// requests first (first-fit decreasing packs agents better and lets large
/// tasks in before the small ones fill every gap), then job order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ReadyKey {
    priority: Reverse<i32>,
    run: RunId,
    size: Reverse<(u32, u32, u64)>,
    job: JobId,
}

impl ReadyKey {
    fn of(job: &Job) -> ReadyKey {
        ReadyKey {
            priority: Reverse(job.def.priority),
            run: job.run,
            size: Reverse((
                job.resources.gpus,
                job.resources.cpus,
                job.resources.memory_bytes,
            )),
            job: job.id,
        }
    }
}

/// The broker's state machine (see the module doc).
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    ids: Ids,
    runs: BTreeMap<RunId, Run>,
    jobs: BTreeMap<JobId, Job>,
    /// First task id of each job → job, to find a task's job.
    task_owner: BTreeMap<TaskId, JobId>,
    agents: BTreeMap<AgentId, Agent>,
    attempts: HashMap<AttemptId, Attempt>,
    /// Released jobs that may have dispatchable tasks, best first (see `ReadyKey`).
    ready_jobs: BTreeSet<ReadyKey>,
    /// Retries waiting out their backoff: (due, job, index).
    backoff: BinaryHeap<Reverse<(u64, JobId, u64)>>,
    /// When `tick` last ran: a long gap means the broker itself was stalled.
    last_tick_ms: Option<u64>,
    /// What the cache said about a task (hit, or which part of the key changed),
    /// for `why`.
    cache_notes: HashMap<TaskId, String>,
    /// Attempts counted as their task's success. A result for one of these that
    /// arrives again (resent after a reconnect or a broker restart whose ack
    /// was lost) is a duplicate, acknowledged as counted so its agent promotes
    /// the outputs; any other unknown result is stale.
    counted: HashSet<AttemptId>,
    fx: Effects,
}

impl Core {
    pub fn new(cfg: CoreConfig, ids: Ids) -> Core {
        Core {
            cfg,
            ids,
            runs: BTreeMap::new(),
            jobs: BTreeMap::new(),
            task_owner: BTreeMap::new(),
            agents: BTreeMap::new(),
            attempts: HashMap::new(),
            ready_jobs: BTreeSet::new(),
            backoff: BinaryHeap::new(),
            last_tick_ms: None,
            cache_notes: HashMap::new(),
            counted: HashSet::new(),
            fx: Effects::default(),
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Hands the accumulated effects to the shell.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.fx)
    }

    // ------------------------------------------------------------ submit

    /// Adds a run. Jobs whose dependencies are met become ready at once.
    pub fn submit(&mut self, plan: SubmitPlan, now_ms: u64) -> Result<(RunId, u64), SubmitError> {
        if plan.jobs.is_empty() {
            return Err(SubmitError::Empty);
        }
        let names: HashMap<String, usize> = plan
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.def.name.clone(), i))
            .collect();
        for j in &plan.jobs {
            for a in &j.def.after {
                if !names.contains_key(a) {
                    return Err(SubmitError::UnknownAfter {
                        job: j.def.name.clone(),
                        after: a.clone(),
                    });
                }
            }
        }
        let run_id = self.ids.run;
        self.ids.run += 1;
        let first_job = self.ids.job;
        let job_ids: Vec<JobId> = (0..plan.jobs.len() as u64).map(|i| first_job + i).collect();
        self.ids.job += plan.jobs.len() as u64;

        self.fx.store.push(StoreOp::InsertRun {
            run: run_id,
            name: plan.def.name.clone(),
            submitted_at_ms: now_ms,
            cwd: plan.cwd.clone(),
            source: plan.source.clone(),
            definition_json: plan.definition_json,
        });
        let mut total = 0u64;
        for (i, pj) in plan.jobs.into_iter().enumerate() {
            let id = job_ids[i];
            let count = pj.def.items.count();
            let first_task = self.ids.task;
            self.ids.task += count;
            total += count;
            let deps: Vec<JobId> = pj
                .def
                .after
                .iter()
                .map(|a| job_ids[names[a]])
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            self.fx.store.push(StoreOp::InsertJob {
                job: id,
                run: run_id,
                name: pj.def.name.clone(),
                tag: pj.def.tag.clone(),
                resources: pj.resources.clone(),
                priority: pj.def.priority,
                retries: pj.def.retries,
                first_task,
                task_count: count,
            });
            self.task_owner.insert(first_task, id);
            self.jobs
                .insert(id, Job::new(id, run_id, pj, first_task, deps.len() as u32));
        }
        // Wire dependents once every job exists (an `after` may name a later job).
        for &id in &job_ids {
            let after: Vec<JobId> = self.jobs[&id]
                .def
                .after
                .iter()
                .map(|a| job_ids[names[a]])
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for d in after {
                let dj = self.jobs.get_mut(&d).expect("job just inserted");
                if !dj.dependents.contains(&id) {
                    dj.dependents.push(id);
                }
            }
        }
        self.runs.insert(
            run_id,
            Run {
                id: run_id,
                name: plan.def.name.clone(),
                submitted_at_ms: now_ms,
                finished_at_ms: None,
                cwd: plan.cwd,
                jobs: job_ids.clone(),
                counts: Counts {
                    waiting: total,
                    ..Counts::default()
                },
                total,
                state: RunState::Running,
                max_fails: plan.def.max_fails,
                cancel_requested: false,
            },
        );
        for &id in &job_ids {
            if self.jobs[&id].deps_pending == 0 {
                self.release_job(id);
            }
        }
        self.check_run_finished(run_id, now_ms);
        Ok((run_id, total))
    }

    /// Dependencies met: every waiting task of the job becomes ready.
    fn release_job(&mut self, id: JobId) {
        let job = self.jobs.get_mut(&id).expect("release of a known job");
        debug_assert!(!job.released);
        job.released = true;
        let mut moved = 0;
        for slot in job.tasks.iter_mut() {
            if slot.state == TaskState::Waiting {
                slot.state = TaskState::Ready;
                moved += 1;
            }
        }
        job.next_fresh = 0;
        job.counts.waiting -= moved;
        job.counts.ready += moved;
        let run = self.runs.get_mut(&job.run).expect("job's run exists");
        run.counts.waiting -= moved;
        run.counts.ready += moved;
        if job.has_dispatchable() {
            self.ready_jobs.insert(ReadyKey::of(job));
        }
    }

    // ------------------------------------------------------------ agents

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
        let committed = Resources {
            custom: hello
                .resources
                .custom
                .iter()
                .map(|(k, _)| (k.clone(), 0))
                .collect(),
            ..Resources::default()
        };
        self.agents.insert(
            id,
            Agent {
                id,
                name: hello.name.clone(),
                hostname: hello.hostname.clone(),
                tags,
                capacity: hello.resources.clone(),
                committed,
                attempts: Vec::new(),
                unstarted: 0,
                connected_at_ms: now_ms,
                last_seen_ms: now_ms,
                lifetime_end_ms: hello.lifetime_ms.map(|l| now_ms + l),
                completed: 0,
                window_completed: 0,
                window_start_ms: now_ms,
                rate_per_s: 0.0,
                draining: false,
                reserved_for: None,
                last_assign: None,
                reported_free: Resources::default(),
                runtimes: hello.runtimes.clone(),
                limit_mode: hello.limit_mode.clone(),
                connected: true,
                restored: false,
                pilot_id: hello.pilot_id.clone(),
            },
        );
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
        let mine: Vec<AttemptId> = a.attempts.clone();
        let missing: Vec<AttemptId> = mine.iter().copied().filter(|x| !held.contains(x)).collect();
        for attempt in &missing {
            if let Some(at) = self.attempts.remove(attempt) {
                let result = AttemptResult::bare(
                    *attempt,
                    AttemptEnd::AgentLost,
                    at.started_at_us,
                    now_ms * 1000,
                );
                self.end_attempt(at, result, false, now_ms);
            }
        }
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
                "agent_reclaimed"
            } else {
                "agent_reconnected"
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
        self.fx.shutdown.push((agent, reason.to_string()));
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
            self.agent_lost(agent, "left", now_ms);
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
    pub fn agent_leaving(&mut self, agent: AgentId, now_ms: u64) {
        if let Some(a) = self.agents.get_mut(&agent) {
            a.draining = true;
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
            // A lost agent still talking (its connection is being closed):
            // its results are fenced, acknowledged and ignored.
            for r in finished {
                if self.counted.contains(&r.attempt) {
                    self.fx
                        .ack
                        .entry(agent)
                        .or_default()
                        .push((r.attempt, true));
                    continue;
                }
                self.fx.store.push(StoreOp::StaleResult {
                    attempt: r.attempt,
                    agent,
                    at_ms: now_ms,
                });
                self.fx
                    .ack
                    .entry(agent)
                    .or_default()
                    .push((r.attempt, false));
            }
            return;
        };
        a.last_seen_ms = now_ms;
        if let Some(free) = free {
            a.reported_free = free;
        }
        let ending: std::collections::HashSet<AttemptId> = if started.is_empty() {
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
            self.agents.get_mut(&agent).expect("checked").unstarted -= 1;
            // A result in the same batch carries the start time; one write, not two.
            if !ending.contains(&s.attempt) {
                self.fx.store.push(StoreOp::AttemptStarted {
                    attempt: s.attempt,
                    at_us: s.at_us,
                });
            }
            self.set_task_state(job, index, TaskState::Running);
        }
        let mut acks = Vec::with_capacity(finished.len());
        for r in finished {
            // Acknowledge everything, stale or not, so the agent can forget it.
            let current = self
                .attempts
                .get(&r.attempt)
                .is_some_and(|at| at.agent == agent);
            if !current && self.counted.contains(&r.attempt) {
                acks.push((r.attempt, true));
                self.fx.store.push(StoreOp::Event {
                    at_ms: now_ms,
                    kind: "duplicate_result",
                    run: None,
                    detail: format!("attempt {} reported again; counted once", r.attempt),
                });
                continue;
            }
            if !current {
                acks.push((r.attempt, false));
                self.fx.store.push(StoreOp::StaleResult {
                    attempt: r.attempt,
                    agent,
                    at_ms: now_ms,
                });
                continue;
            }
            acks.push((r.attempt, r.end.is_success()));
            let at = self.attempts.remove(&r.attempt).expect("checked");
            let a = self.agents.get_mut(&agent).expect("checked");
            if r.end == AttemptEnd::Drained {
                // A draining agent takes nothing new, even before it says so:
                // re-assigning to it would bounce tasks back and forth.
                a.draining = true;
            }
            a.completed += 1;
            a.window_completed += 1;
            self.end_attempt(at, r, false, now_ms);
        }
        if !acks.is_empty() {
            self.fx.ack.entry(agent).or_default().extend(acks);
        }
    }

    // ------------------------------------------------------------ attempt ends

    /// Applies the end of an attempt already removed from `self.attempts`.
    /// `crash`: the attempt was lost with an agent that died on its own (counts
    /// towards the crash limit when the attempt had started).
    fn end_attempt(&mut self, at: Attempt, result: AttemptResult, crash: bool, now_ms: u64) {
        if let Some(a) = self.agents.get_mut(&at.agent) {
            a.attempts.retain(|x| *x != at.id);
            sub_resources(&mut a.committed, &at.resources);
            if !at.started {
                a.unstarted -= 1;
            }
        }
        let end = result.end.clone();
        let peak_rss = result.peak_rss_bytes;
        self.fx.store.push(StoreOp::AttemptEnded {
            attempt: at.id,
            result: Box::new(result),
            at_ms: now_ms,
        });
        let job = self.jobs.get_mut(&at.job).expect("attempt's job exists");
        job.in_flight -= 1;
        let retries = job.def.retries;
        let slot = job.tasks[at.index as usize];
        let run_cancelled = self.runs[&job.run].cancel_requested;
        if end.is_success() {
            self.counted.insert(at.id);
            if !job.def.outputs.is_empty() {
                let run = &self.runs[&job.run];
                if let Ok(outputs) = job.templates.outputs(&job.def, at.index, job.run) {
                    self.fx
                        .promote
                        .push((task_cwd(run, job, at.index), at.id, outputs));
                }
            }
            let note = job.cache_misses.remove(&at.index);
            if let Some((key_json, _)) = &note {
                let run = &self.runs[&job.run];
                let rendered = job.templates.outputs(&job.def, at.index, job.run);
                self.fx.cache_record.push(CacheRecord {
                    workflow: run.name.clone(),
                    job_name: job.def.name.clone(),
                    index: at.index,
                    task: job.first_task + at.index,
                    attempt: at.id,
                    key_json: key_json.clone(),
                    cwd: task_cwd(run, job, at.index),
                    outputs: rendered.unwrap_or_default(),
                });
            }
            let reason = note.map(|(_, why)| why);
            self.finish_task(at.job, at.index, TaskState::Succeeded, reason, now_ms);
        } else if at.cancel_requested || end == AttemptEnd::Cancelled || run_cancelled {
            self.finish_task(
                at.job,
                at.index,
                TaskState::Cancelled,
                Some("cancelled".into()),
                now_ms,
            );
        } else if !end.spends_retry() {
            // Lost with its agent, drained or returned: not the task's fault,
            // unless it keeps taking its agents down with it (crash limit).
            let crashes = if crash && at.started {
                let job = self.jobs.get_mut(&at.job).expect("exists");
                let c = &mut job.tasks[at.index as usize].crashes;
                *c = c.saturating_add(1);
                *c
            } else {
                slot.crashes
            };
            if crashes >= self.cfg.crash_limit {
                let reason = format!(
                    "lost with its agent {crashes} times (crash limit {}): it may be killing its agents",
                    self.cfg.crash_limit
                );
                self.finish_task(at.job, at.index, TaskState::Failed, Some(reason), now_ms);
            } else {
                self.requeue(at.job, at.index, 0, now_ms);
            }
        } else if (slot.retries_used as u32) < retries {
            if end == AttemptEnd::OutOfMemory {
                self.raise_memory(&at, peak_rss, now_ms);
            }
            let job = self.jobs.get_mut(&at.job).expect("exists");
            job.tasks[at.index as usize].retries_used += 1;
            let n = job.tasks[at.index as usize].retries_used as u32;
            let delay = self
                .cfg
                .retry_backoff_base_ms
                .saturating_mul(1u64 << (n - 1).min(20))
                .min(self.cfg.retry_backoff_max_ms);
            self.requeue(at.job, at.index, delay, now_ms);
        } else {
            let reason = match &end {
                AttemptEnd::Exited { code } => format!("exit code {code}"),
                AttemptEnd::Signalled { signal } => format!("killed by signal {signal}"),
                AttemptEnd::SpawnFailed { error } => format!("could not start: {error}"),
                AttemptEnd::InvalidInput { path } => format!("missing input: {path}"),
                AttemptEnd::OutputsMissing { missing } => {
                    format!("missing outputs: {}", missing.join(", "))
                }
                other => other.class().to_lowercase(),
            };
            self.finish_task(at.job, at.index, TaskState::Failed, Some(reason), now_ms);
        }
    }

    /// SPEC §5: a task killed for memory is retried asking for its measured peak
    /// times `oom_factor` (at least that times what it asked for, since a
    /// sampled peak can lag the kill), capped by the largest connected agent
    /// that serves it.
    fn raise_memory(&mut self, at: &Attempt, peak_rss: u64, now_ms: u64) {
        let job = &self.jobs[&at.job];
        let asked = at.resources.memory_bytes;
        let from = peak_rss.max(asked);
        let mut want = (from as f64 * self.cfg.oom_factor) as u64;
        let largest = self
            .agents
            .values()
            .filter(|a| a.serves(job.tag()))
            .map(|a| a.capacity.memory_bytes)
            .max();
        let mut capped = false;
        if let Some(l) = largest {
            if want > l {
                want = l;
                capped = true;
            }
        }
        if want <= asked {
            return;
        }
        let mut r = at.resources.clone();
        r.memory_bytes = want;
        let size = scalable_common::units::format_size;
        let detail = format!(
            "task {}/{}/{}: memory request raised from {} to {} = max(peak {}, request) x {}{}",
            job.run,
            job.def.name,
            at.index,
            size(asked),
            size(want),
            size(peak_rss),
            self.cfg.oom_factor,
            if capped {
                " (capped by the largest agent)"
            } else {
                ""
            }
        );
        let run = job.run;
        self.jobs
            .get_mut(&at.job)
            .expect("exists")
            .overrides
            .insert(at.index, r);
        self.fx.store.push(StoreOp::Event {
            at_ms: now_ms,
            kind: "memory_raised",
            run: Some(run),
            detail,
        });
    }

    /// Puts a task back to ready, now or after `delay_ms` of backoff.
    fn requeue(&mut self, job_id: JobId, index: u64, delay_ms: u64, now_ms: u64) {
        self.set_task_state(job_id, index, TaskState::Ready);
        self.record_task(job_id, index, None, now_ms);
        if delay_ms == 0 {
            self.push_requeued(job_id, index);
        } else {
            self.backoff
                .push(Reverse((now_ms + delay_ms, job_id, index)));
        }
    }

    fn push_requeued(&mut self, job_id: JobId, index: u64) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        job.requeued.push_back(index);
        self.ready_jobs.insert(ReadyKey::of(job));
    }

    /// Writes the task's row as it is now (state, attempts, retry and crash counts).
    fn record_task(&mut self, job_id: JobId, index: u64, reason: Option<String>, now_ms: u64) {
        let job = &self.jobs[&job_id];
        let slot = job.tasks[index as usize];
        self.fx.store.push(StoreOp::TaskState {
            task: job.first_task + index,
            run: job.run,
            job: job_id,
            index,
            state: slot.state.name(),
            attempts: slot.attempts as u32,
            retries_used: slot.retries_used as u32,
            crashes: slot.crashes as u32,
            reason,
            at_ms: now_ms,
        });
    }

    /// Moves a task to a terminal state and follows the consequences: the job's
    /// dependents, `max_fails`, the run's end.
    fn finish_task(
        &mut self,
        job_id: JobId,
        index: u64,
        state: TaskState,
        reason: Option<String>,
        now_ms: u64,
    ) {
        debug_assert!(state.is_terminal());
        self.set_task_state(job_id, index, state);
        let run_id = self.jobs[&job_id].run;
        self.record_task(job_id, index, reason, now_ms);
        if state == TaskState::Failed {
            // DAGMan semantics: what depends on a failed job can never run, the rest
            // of the DAG keeps going.
            self.cancel_dependents(job_id, now_ms);
            let run = &self.runs[&run_id];
            if let Some(max) = run.max_fails {
                if run.counts.failed >= max {
                    self.cancel_unstarted(run_id, "max_fails reached", now_ms);
                }
            }
        }
        let job = &self.jobs[&job_id];
        if job.counts.done() == job.count()
            && job.counts.succeeded + job.counts.cached == job.count()
        {
            let dependents = job.dependents.clone();
            for d in dependents {
                let dj = self.jobs.get_mut(&d).expect("dependent exists");
                dj.deps_pending -= 1;
                if dj.deps_pending == 0 && !dj.released {
                    self.release_job(d);
                }
            }
        }
        self.check_run_finished(run_id, now_ms);
    }

    /// Cancels every not-yet-terminal task of every job downstream of `job_id`.
    fn cancel_dependents(&mut self, job_id: JobId, now_ms: u64) {
        let mut stack = self.jobs[&job_id].dependents.clone();
        let mut seen = BTreeSet::new();
        while let Some(d) = stack.pop() {
            if !seen.insert(d) {
                continue;
            }
            self.cancel_job_tasks(d, "dependency failed", now_ms);
            stack.extend(self.jobs[&d].dependents.iter().copied());
        }
    }

    /// Cancels the job's waiting and ready tasks; tasks on agents are told to stop.
    fn cancel_job_tasks(&mut self, job_id: JobId, reason: &str, now_ms: u64) -> u64 {
        let mut cancelled = 0;
        let count = self.jobs[&job_id].count();
        for index in 0..count {
            let state = self.jobs[&job_id].tasks[index as usize].state;
            match state {
                TaskState::Waiting | TaskState::Ready => {
                    self.set_task_state(job_id, index, TaskState::Cancelled);
                    // Only tasks that ever ran get their own row; the rest are
                    // covered by the job's cancel mark (keeps a cancelled
                    // million cheap).
                    if self.jobs[&job_id].tasks[index as usize].attempts > 0 {
                        self.record_task(job_id, index, Some(reason.to_string()), now_ms);
                    }
                    cancelled += 1;
                }
                _ => {}
            }
        }
        let job = self.jobs.get_mut(&job_id).expect("exists");
        job.requeued.clear();
        job.probing.clear();
        job.next_fresh = job.count();
        if cancelled > 0 && !job.cancel_marked {
            job.cancel_marked = true;
            self.fx.store.push(StoreOp::JobCancelMark {
                job: job_id,
                cancelled: true,
            });
        }
        let job = &self.jobs[&job_id];
        if cancelled > 0 {
            self.fx.store.push(StoreOp::Event {
                at_ms: now_ms,
                kind: "tasks_cancelled",
                run: Some(job.run),
                detail: format!(
                    "job {}: {cancelled} tasks cancelled: {reason}",
                    job.def.name
                ),
            });
        }
        cancelled
    }

    fn cancel_unstarted(&mut self, run_id: RunId, reason: &str, now_ms: u64) {
        let jobs = self.runs[&run_id].jobs.clone();
        for j in jobs {
            self.cancel_job_tasks(j, reason, now_ms);
        }
    }

    /// Cancels a run: queued tasks at once, tasks on agents by message.
    pub fn cancel_run(&mut self, run_id: RunId, now_ms: u64) -> Option<u64> {
        let run = self.runs.get_mut(&run_id)?;
        if run.state != RunState::Running {
            return Some(0);
        }
        run.cancel_requested = true;
        let jobs = run.jobs.clone();
        let mut n = 0;
        for j in jobs {
            n += self.cancel_job_tasks(j, "cancelled by user", now_ms);
        }
        let on_agents: Vec<AttemptId> = self
            .attempts
            .values()
            .filter(|a| self.jobs[&a.job].run == run_id)
            .map(|a| a.id)
            .collect();
        for id in on_agents {
            n += self.cancel_attempt(id);
        }
        self.check_run_finished(run_id, now_ms);
        Some(n)
    }

    /// Cancels one task. Returns the number of tasks cancelled (0 or 1), or None if unknown.
    pub fn cancel_task(&mut self, task: TaskId, now_ms: u64) -> Option<u64> {
        let (job_id, index) = self.locate_task(task)?;
        let state = self.jobs[&job_id].tasks[index as usize].state;
        match state {
            TaskState::Waiting | TaskState::Ready => {
                self.finish_task(
                    job_id,
                    index,
                    TaskState::Cancelled,
                    Some("cancelled by user".into()),
                    now_ms,
                );
                Some(1)
            }
            TaskState::Assigned | TaskState::Running => {
                let id = self
                    .attempts
                    .values()
                    .find(|a| a.job == job_id && a.index == index)
                    .map(|a| a.id)?;
                Some(self.cancel_attempt(id))
            }
            _ => Some(0),
        }
    }

    fn cancel_attempt(&mut self, id: AttemptId) -> u64 {
        let Some(at) = self.attempts.get_mut(&id) else {
            return 0;
        };
        if at.cancel_requested {
            return 0;
        }
        at.cancel_requested = true;
        self.fx.cancel.entry(at.agent).or_default().push(id);
        1
    }

    /// Finds the job and index of a task id.
    pub fn locate_task(&self, task: TaskId) -> Option<(JobId, u64)> {
        let (&first, &job) = self.task_owner.range(..=task).next_back()?;
        let index = task - first;
        (index < self.jobs.get(&job)?.count()).then_some((job, index))
    }

    /// Task id of `run/job/index`.
    pub fn task_by_path(&self, run: RunId, job: &str, index: u64) -> Option<TaskId> {
        let r = self.runs.get(&run)?;
        r.jobs.iter().find_map(|j| {
            let job_ = &self.jobs[j];
            (job_.def.name == job && index < job_.count()).then_some(job_.first_task + index)
        })
    }

    fn set_task_state(&mut self, job_id: JobId, index: u64, state: TaskState) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        let slot = &mut job.tasks[index as usize];
        let old = slot.state;
        if old == state {
            return;
        }
        slot.state = state;
        *old.count_in(&mut job.counts) -= 1;
        *state.count_in(&mut job.counts) += 1;
        let run = self.runs.get_mut(&job.run).expect("exists");
        *old.count_in(&mut run.counts) -= 1;
        *state.count_in(&mut run.counts) += 1;
    }

    fn check_run_finished(&mut self, run_id: RunId, now_ms: u64) {
        let run = self.runs.get_mut(&run_id).expect("exists");
        if run.state != RunState::Running || run.counts.done() != run.total {
            return;
        }
        run.state = if run.counts.failed > 0 {
            RunState::Failed
        } else if run.counts.cancelled > 0 {
            if run.cancel_requested {
                RunState::Cancelled
            } else {
                RunState::Failed
            }
        } else {
            RunState::Succeeded
        };
        run.finished_at_ms = Some(now_ms);
        self.fx.store.push(StoreOp::RunFinished {
            run: run_id,
            state: run.state.name(),
            at_ms: now_ms,
        });
        self.fx.finished_runs.push(run_id);
    }

    // ------------------------------------------------------------ time

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
                    kind: "broker_stalled",
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
                self.push_requeued(job, index);
            }
        }
        for a in self.agents.values_mut() {
            let span = now_ms.saturating_sub(a.window_start_ms);
            if span >= 250 {
                let rate = a.window_completed as f64 * 1000.0 / span as f64;
                a.rate_per_s = 0.5 * a.rate_per_s + 0.5 * rate;
                a.window_completed = 0;
                a.window_start_ms = now_ms;
            }
        }
    }

    // ------------------------------------------------------------ scheduling

    /// How many unstarted attempts this agent may hold: one per cpu (assigned,
    /// not yet reported started) plus a queue worth its measured throughput over
    /// the prefetch horizon, and at least one more per cpu.
    fn prefetch_depth(&self, a: &Agent) -> u32 {
        let cpus = a.capacity.cpus.max(1);
        let by_rate = (a.rate_per_s * self.cfg.prefetch_horizon_ms as f64 / 1000.0) as u32;
        cpus + by_rate.max(cpus).min(self.cfg.prefetch_max)
    }

    /// Assigns ready tasks to agents. First pass: only what fits in free
    /// resources, so idle agents get work before anyone prefetches. Second pass:
    /// each agent's prefetched queue up to its depth.
    pub fn schedule(&mut self, now_ms: u64) {
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

    /// Whether `agent` could ever run the job's tasks (tag, size, lifetime).
    fn eligible(&self, agent: &Agent, job: &Job, now_ms: u64) -> bool {
        if agent.draining
            || !agent.connected
            || !agent.serves(job.tag())
            || !agent.could_ever_run(&job.resources)
        {
            return false;
        }
        // SPEC §6: an agent without a container runtime never gets an image task.
        if job.container.is_some() && agent.runtimes.is_empty() {
            return false;
        }
        match (agent.lifetime_end_ms, job.def.walltime_ms) {
            (Some(end), Some(wall)) => now_ms + wall <= end,
            _ => true,
        }
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
            let best = self
                .agents
                .values()
                .filter(|a| a.reserved_for.is_none() && self.eligible(a, job, now_ms))
                .max_by_key(|a| {
                    (
                        a.capacity.cpus.saturating_sub(a.committed.cpus),
                        Reverse(a.id),
                    )
                })
                .map(|a| a.id);
            if let Some(agent) = best {
                self.agents.get_mut(&agent).expect("found").reserved_for = Some(job_id);
                self.fx.store.push(StoreOp::Event {
                    at_ms: now_ms,
                    kind: "reservation",
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
                    agent.fits_now(&job.resources) || job.resources.fits_in(&agent.reported_free)
                };
                if !fits {
                    break;
                }
                if job.def.cache && job.probing.len() >= self.cfg.cache_probes_max {
                    break;
                }
                let Some(index) = self.pop_ready_task(job_id) else {
                    continue;
                };
                let job = &self.jobs[&job_id];
                if job.def.cache && !job.cache_misses.contains_key(&index) {
                    self.probe_cache(job_id, index);
                    continue;
                }
                if let Some(r) = job.overrides.get(&index) {
                    // A task asking for more than its job (memory raised after
                    // MEMORY_EXHAUSTION) goes where it fits, or waits its turn.
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
                self.jobs.get_mut(&job_id).expect("exists").blocked_since_ms = Some(now_ms);
                let agent = self.agents.get_mut(&agent_id).expect("exists");
                agent.last_assign = Some((now_ms, job_id));
                let job = &self.jobs[&job_id];
                let req = job.overrides.get(&index).unwrap_or(&job.resources);
                if req.fits_in(&agent.reported_free) {
                    agent.reported_free.take(req);
                } else {
                    agent.reported_free = Resources::default();
                }
                if agent.reserved_for == Some(job_id) {
                    agent.reserved_for = None;
                }
            }
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
        let attempt_id = self.ids.attempt;
        self.ids.attempt += 1;
        let job = self.jobs.get_mut(&job_id).expect("exists");
        let run_id = job.run;
        let slot = &mut job.tasks[index as usize];
        slot.attempts = slot.attempts.saturating_add(1);
        let number = slot.attempts as u32;
        job.in_flight += 1;
        let task = job.first_task + index;
        let rendered = job
            .templates
            .argv(&job.def, index, run_id)
            .and_then(|argv| {
                let outputs = job.templates.outputs(&job.def, index, run_id)?;
                let env = job.templates.env(&job.def, index, run_id)?;
                let workdir = job.templates.workdir(&job.def, index, run_id)?;
                Ok((argv, outputs, env, workdir))
            });
        let resources = job.overrides.get(&index).unwrap_or(&job.resources).clone();
        let container = job.container.clone();
        let inputs = job
            .templates
            .inputs(&job.def, index, run_id)
            .unwrap_or_default();
        let walltime_ms = job.def.walltime_ms;
        let cwd = task_cwd(&self.runs[&run_id], job, index);
        let agent = self.agents.get_mut(&agent_id).expect("exists");
        add_resources(&mut agent.committed, &resources);
        agent.attempts.push(attempt_id);
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
        // The attempt row is written either way: a task whose template fails for
        // this item gets a recorded, failed attempt.
        let argv_json = match &rendered {
            Ok((argv, ..)) => serde_json::to_string(argv).unwrap_or_default(),
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
        });
        match rendered {
            Ok((argv, outputs, env, _)) => {
                self.fx
                    .assign
                    .entry(agent_id)
                    .or_default()
                    .push(Assignment {
                        attempt: attempt_id,
                        task,
                        run: run_id,
                        attempt_number: number,
                        argv,
                        env,
                        cwd,
                        resources,
                        walltime_ms,
                        outputs,
                        container,
                        inputs,
                    });
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

    // ------------------------------------------------------------ cache

    /// Asks the shell to look the task up in the cache before it runs.
    fn probe_cache(&mut self, job_id: JobId, index: u64) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        job.probing.insert(index);
        let job = &self.jobs[&job_id];
        let run = &self.runs[&job.run];
        let t = &job.templates;
        let probe = CacheProbe {
            job: job_id,
            index,
            workflow: run.name.clone(),
            job_name: job.def.name.clone(),
            argv: t.argv(&job.def, index, run.id).unwrap_or_default(),
            image: job.container.as_ref().map(|c| c.image.clone()),
            env: job
                .container
                .as_ref()
                .map(|c| c.env.clone())
                .unwrap_or_else(|| t.env(&job.def, index, run.id).unwrap_or_default()),
            cwd: task_cwd(run, job, index),
            inputs: t.inputs(&job.def, index, run.id).unwrap_or_default(),
            outputs: t.outputs(&job.def, index, run.id).unwrap_or_default(),
        };
        self.fx.cache_probe.push(probe);
    }

    /// The shell's answer to a cache probe. A hit (`hit: Some(note)`) ends the
    /// task `cached` (its outputs were restored); a miss records the key to
    /// save on success and why it runs, and queues the task.
    pub fn cache_answer(
        &mut self,
        job_id: JobId,
        index: u64,
        hit: Option<String>,
        key_json: String,
        why: String,
        now_ms: u64,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if !job.probing.remove(&index) || job.tasks[index as usize].state != TaskState::Ready {
            return; // cancelled meanwhile, or a restart forgot the probe
        }
        let task = job.first_task + index;
        self.cache_notes
            .insert(task, hit.clone().unwrap_or_else(|| why.clone()));
        match hit {
            Some(note) => self.finish_task(job_id, index, TaskState::Cached, Some(note), now_ms),
            None => {
                job.cache_misses.insert(index, (key_json, why));
                self.push_requeued(job_id, index);
            }
        }
    }

    // ------------------------------------------------------------ resume

    /// `scalable resume RUN` (a rescue DAG): the run's failed and cancelled
    /// tasks run again, from their first attempt's retry budget; what
    /// succeeded stays. Returns the number of tasks re-queued, or an error
    /// line for a run that cannot be resumed.
    pub fn resume_run(&mut self, run_id: RunId, now_ms: u64) -> Result<u64, String> {
        let Some(run) = self.runs.get(&run_id) else {
            return Err(format!("no run {run_id} (scalable status lists the runs)"));
        };
        if run.state == RunState::Running {
            return Err(format!(
                "run {run_id} is still running (wait for it, or cancel it first)"
            ));
        }
        if run.counts.failed + run.counts.cancelled == 0 {
            return Ok(0);
        }
        let jobs = run.jobs.clone();
        let run = self.runs.get_mut(&run_id).expect("exists");
        run.state = RunState::Running;
        run.finished_at_ms = None;
        run.cancel_requested = false;
        self.fx.store.push(StoreOp::RunResumed { run: run_id });
        let mut n = 0;
        for &j in &jobs {
            let count = self.jobs[&j].count();
            let marked = self.jobs[&j].cancel_marked;
            for index in 0..count {
                let slot = self.jobs[&j].tasks[index as usize];
                if !matches!(slot.state, TaskState::Failed | TaskState::Cancelled) {
                    continue;
                }
                let job = self.jobs.get_mut(&j).expect("exists");
                let s = &mut job.tasks[index as usize];
                s.retries_used = 0;
                s.crashes = 0;
                job.overrides.remove(&index);
                self.set_task_state(j, index, TaskState::Waiting);
                n += 1;
                // Rowless cancelled tasks are covered by lifting the mark.
                if !(marked && slot.state == TaskState::Cancelled && slot.attempts == 0) {
                    self.record_task(j, index, Some("resumed".into()), now_ms);
                }
            }
            let job = self.jobs.get_mut(&j).expect("exists");
            job.released = false;
            job.requeued.clear();
            job.next_fresh = job.count();
            if job.cancel_marked {
                job.cancel_marked = false;
                self.fx.store.push(StoreOp::JobCancelMark {
                    job: j,
                    cancelled: false,
                });
            }
        }
        for &j in &jobs {
            let pending = self.jobs[&j]
                .def
                .after
                .iter()
                .filter(|name| {
                    jobs.iter().any(|d| {
                        let dj = &self.jobs[d];
                        &dj.def.name == *name && dj.counts.succeeded + dj.counts.cached < dj.count()
                    })
                })
                .count() as u32;
            self.jobs.get_mut(&j).expect("exists").deps_pending = pending;
        }
        for &j in &jobs {
            let job = &self.jobs[&j];
            if job.deps_pending == 0 && job.counts.waiting > 0 {
                self.release_job(j);
            } else if job.deps_pending == 0 {
                self.jobs.get_mut(&j).expect("exists").released = true;
            }
        }
        self.fx.store.push(StoreOp::Event {
            at_ms: now_ms,
            kind: "run_resumed",
            run: Some(run_id),
            detail: format!("{n} failed or cancelled tasks run again"),
        });
        Ok(n)
    }

    // ------------------------------------------------------------ queries

    pub fn last_run(&self) -> Option<RunId> {
        self.runs.keys().next_back().copied()
    }

    pub fn has_run(&self, run: RunId) -> bool {
        self.runs.contains_key(&run)
    }

    pub fn run_status(&self, run: RunId) -> Option<RunStatus> {
        let r = self.runs.get(&run)?;
        Some(RunStatus {
            run: r.id,
            name: r.name.clone(),
            state: r.state.name().to_string(),
            submitted_at_ms: r.submitted_at_ms,
            finished_at_ms: r.finished_at_ms,
            counts: r.counts.clone(),
            jobs: r
                .jobs
                .iter()
                .map(|j| {
                    let job = &self.jobs[j];
                    JobStatus {
                        name: job.def.name.clone(),
                        tag: job.def.tag.clone(),
                        counts: job.counts.clone(),
                    }
                })
                .collect(),
        })
    }

    pub fn all_run_status(&self) -> Vec<RunStatus> {
        self.runs
            .keys()
            .filter_map(|r| self.run_status(*r))
            .collect()
    }

    pub fn agent_infos(&self) -> Vec<AgentInfo> {
        self.agents
            .values()
            .map(|a| {
                let mut free = a.capacity.clone();
                free.cpus = free.cpus.saturating_sub(a.committed.cpus);
                free.memory_bytes = free.memory_bytes.saturating_sub(a.committed.memory_bytes);
                free.gpus = free.gpus.saturating_sub(a.committed.gpus);
                AgentInfo {
                    id: a.id,
                    name: a.name.clone(),
                    hostname: a.hostname.clone(),
                    tags: a.tags.clone(),
                    resources: a.capacity.clone(),
                    free,
                    running: a.attempts.len() as u32 - a.unstarted,
                    queued: a.unstarted,
                    connected_at_ms: a.connected_at_ms,
                    completed: a.completed,
                    runtimes: a.runtimes.clone(),
                    limit_mode: a.limit_mode.clone(),
                    pilot_id: a.pilot_id.clone(),
                    connected: a.connected,
                }
            })
            .collect()
    }

    /// Why a task is where it is (SPEC §7 `why`): one line a person can act on.
    pub fn why(&self, task: TaskId, now_ms: u64) -> Option<(String, &'static str, String)> {
        let (job_id, index) = self.locate_task(task)?;
        let job = &self.jobs[&job_id];
        let slot = job.tasks[index as usize];
        let path = format!("{}/{}/{}", job.run, job.def.name, index);
        let state = slot.state.name();
        let on_agent = || {
            self.attempts
                .values()
                .find(|a| a.job == job_id && a.index == index)
                .and_then(|a| self.agents.get(&a.agent))
        };
        let reason = match slot.state {
            TaskState::Succeeded | TaskState::Cached => match self.cache_notes.get(&task) {
                Some(note) => format!("it is done; {note}"),
                None => "it is done".to_string(),
            },
            TaskState::Failed | TaskState::Cancelled => {
                format!("it ended {state}; scalable analyze {} says why", job.run)
            }
            TaskState::Assigned => match on_agent() {
                Some(a) => format!(
                    "it is queued on agent {} ({}), waiting for room there",
                    a.name, a.hostname
                ),
                None => "it is being assigned".into(),
            },
            TaskState::Running => match on_agent() {
                Some(a) => format!("it is running on agent {} ({})", a.name, a.hostname),
                None => "it is running".into(),
            },
            TaskState::Waiting => {
                let pending: Vec<&str> = self.runs[&job.run]
                    .jobs
                    .iter()
                    .map(|j| &self.jobs[j])
                    .filter(|d| job.def.after.contains(&d.def.name))
                    .filter(|d| d.counts.succeeded + d.counts.cached < d.count())
                    .map(|d| d.def.name.as_str())
                    .collect();
                format!("waiting for dependency {}", pending.join(", "))
            }
            TaskState::Ready => self.why_ready(job, index, now_ms),
        };
        Some((path, state, reason))
    }

    fn why_ready(&self, job: &Job, index: u64, now_ms: u64) -> String {
        if let Some(Reverse((due, _, _))) = self
            .backoff
            .iter()
            .find(|Reverse((_, j, i))| *j == job.id && *i == index)
        {
            return format!(
                "retrying after a failure; backoff ends in {} ms",
                due.saturating_sub(now_ms)
            );
        }
        let tagged: Vec<&Agent> = self
            .agents
            .values()
            .filter(|a| !a.draining && a.serves(job.tag()))
            .collect();
        if tagged.is_empty() {
            return match job.tag() {
                Some(t) if self.agents.is_empty() => {
                    format!("no agent is connected (it needs one with tag {t})")
                }
                Some(t) => format!("no connected agent has tag {t}"),
                None if self.agents.is_empty() => "no agent is connected".into(),
                None => "no connected agent runs untagged tasks (all are tagged)".into(),
            };
        }
        let need = &job.resources;
        if !tagged.iter().any(|a| a.could_ever_run(need)) {
            let most =
                |f: fn(&Resources) -> u64| tagged.iter().map(|a| f(&a.capacity)).max().unwrap_or(0);
            if need.memory_bytes > most(|r| r.memory_bytes) {
                return format!(
                    "needs {} memory, largest agent has {}",
                    scalable_common::units::format_size(need.memory_bytes),
                    scalable_common::units::format_size(most(|r| r.memory_bytes))
                );
            }
            if need.cpus as u64 > most(|r| r.cpus as u64) {
                return format!(
                    "needs {} cpus, largest agent has {}",
                    need.cpus,
                    most(|r| r.cpus as u64)
                );
            }
            if need.gpus as u64 > most(|r| r.gpus as u64) {
                return format!(
                    "needs {} gpus, largest agent has {}",
                    need.gpus,
                    most(|r| r.gpus as u64)
                );
            }
            return format!("needs {need}, more than any connected agent offers");
        }
        if job.container.is_some() && tagged.iter().all(|a| a.runtimes.is_empty()) {
            return "needs a container image, and no agent that serves it has a container runtime"
                .into();
        }
        if !tagged.iter().any(|a| self.eligible(a, job, now_ms)) {
            return "its walltime does not fit in any agent's remaining lifetime; a fresher pilot will take it".into();
        }
        if !job.under_max_running() {
            return format!("job throttled by max_running ({} running)", job.in_flight);
        }
        if let Some(a) = self
            .agents
            .values()
            .find(|a| a.reserved_for == Some(job.id))
        {
            return format!(
                "agent {} is reserved for it and is draining smaller tasks to make room",
                a.name
            );
        }
        format!(
            "waiting for free resources: it needs {need} and the {} agent(s) that can run it are busy",
            tagged.iter().filter(|a| self.eligible(a, job, now_ms)).count()
        )
    }

    pub fn ids(&self) -> Ids {
        self.ids
    }

    /// Asserts every invariant of the model. O(tasks): for tests and debug builds.
    pub fn sanity_check(&self) {
        for (id, run) in &self.runs {
            let mut sum = Counts::default();
            let mut total = 0;
            for j in &run.jobs {
                let job = &self.jobs[j];
                assert_eq!(job.run, *id);
                sum.add(&job.counts);
                total += job.count();
                let mut recount = Counts::default();
                for slot in &job.tasks {
                    *slot.state.count_in(&mut recount) += 1;
                }
                assert_eq!(recount, job.counts, "job {} counts drifted", job.def.name);
                let on_agents = self.attempts.values().filter(|a| a.job == *j).count();
                assert_eq!(on_agents as u32, job.in_flight, "job {j} in_flight");
                assert_eq!(
                    on_agents as u64,
                    job.counts.assigned + job.counts.running,
                    "job {j}: tasks on agents vs attempts"
                );
                if !job.released {
                    assert_eq!(
                        job.counts.ready + job.counts.assigned + job.counts.running,
                        0
                    );
                }
                if let Some(max) = job.def.max_running {
                    assert!(job.in_flight <= max, "job {j} above max_running");
                }
            }
            assert_eq!(
                sum, run.counts,
                "run {id} counts are not the sum of its jobs"
            );
            assert_eq!(total, run.total);
            if run.state != RunState::Running {
                assert_eq!(
                    run.counts.done(),
                    run.total,
                    "finished run {id} has live tasks"
                );
            }
        }
        for a in self.agents.values() {
            let mut committed = Resources::default();
            let mut unstarted = 0;
            for at in &a.attempts {
                let attempt = &self.attempts[at];
                assert_eq!(attempt.agent, a.id);
                add_resources(&mut committed, &attempt.resources);
                if !attempt.started {
                    unstarted += 1;
                }
                let slot = self.jobs[&attempt.job].tasks[attempt.index as usize];
                let want = if attempt.started {
                    TaskState::Running
                } else {
                    TaskState::Assigned
                };
                assert_eq!(slot.state, want, "attempt {at} vs task state");
            }
            assert_eq!(committed.cpus, a.committed.cpus, "agent {} committed", a.id);
            assert_eq!(committed.memory_bytes, a.committed.memory_bytes);
            assert_eq!(unstarted, a.unstarted, "agent {} unstarted", a.id);
        }
        let listed: usize = self.agents.values().map(|a| a.attempts.len()).sum();
        assert_eq!(listed, self.attempts.len(), "attempt without an agent");
    }
}

/// Where a task runs: the job's `workdir:` (absolute, or relative to the run's
/// cwd), else the directory `submit` ran in.
fn task_cwd(run: &Run, job: &Job, index: u64) -> String {
    match job.templates.workdir(&job.def, index, run.id) {
        Ok(Some(w)) if w.starts_with('/') => w,
        Ok(Some(w)) => format!("{}/{}", run.cwd.trim_end_matches('/'), w),
        _ => run.cwd.clone(),
    }
}

fn add_resources(into: &mut Resources, r: &Resources) {
    into.give(r);
}

fn sub_resources(from: &mut Resources, r: &Resources) {
    from.cpus -= r.cpus;
    from.memory_bytes -= r.memory_bytes;
    from.gpus -= r.gpus;
    for (name, n) in &r.custom {
        if let Some(slot) = from.custom.iter_mut().find(|(k, _)| k == name) {
            slot.1 -= n;
        }
    }
}
