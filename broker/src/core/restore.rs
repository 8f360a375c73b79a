//! Rebuilding the core from the store after a broker restart (SPEC §5: SQLite
//! alone is enough to resume).
//!
//! The store keeps one row per run and job, a row per task that did something,
//! and a row per attempt. Tasks without a row are waiting or ready (or
//! cancelled, when their job carries the cancel mark). Attempts without an end
//! were in flight when the broker stopped: they are restored on *restored
//! agents* — disconnected agents with the ids they had — so an agent that comes
//! back within the reclaim window (`resume_agent` in its hello) gets its
//! attempts back and nothing it kept running is recomputed. Agents that do not
//! come back are declared lost when the window ends, like any silent agent,
//! and their attempts go back to ready without spending a retry or a crash.
//!
//! It reads rows the shell loaded; it must not read the store itself, nor
//! schedule or record anything but the promotions of counted outputs.

use std::collections::{BTreeSet, HashMap, HashSet};

use scalable_common::explain::Cancellation;
use scalable_common::protocol::{AgentId, AttemptId, Counts, JobId, RunId, TaskId};
use scalable_common::resources::Resources;

use super::model::{Agent, Attempt, Job, ReadyKey, Run, RunState, TaskState};
use super::{Core, CoreConfig, Ids, PlannedJob, Promote};

/// A run as the store has it, with its jobs re-planned from the stored definition.
#[derive(Debug)]
pub struct RestoredRun {
    pub id: RunId,
    pub name: String,
    pub submitted_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub state: String,
    pub cwd: String,
    pub max_fails: Option<u64>,
    pub jobs: Vec<RestoredJob>,
}

#[derive(Debug)]
pub struct RestoredJob {
    pub id: JobId,
    pub first_task: TaskId,
    pub cancel_marked: bool,
    pub cancel_cause: Option<Cancellation>,
    pub planned: PlannedJob,
}

/// A task row.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub task: TaskId,
    pub state: String,
    pub attempts: u32,
    pub retries_used: u32,
    pub crashes: u32,
}

/// An attempt row without an end.
#[derive(Debug, Clone)]
pub struct OpenAttempt {
    pub id: AttemptId,
    pub task: TaskId,
    pub number: u32,
    pub agent: AgentId,
    pub started_at_us: Option<u64>,
    pub assigned_at_ms: u64,
}

/// An agent row (the agents that hold open attempts).
#[derive(Debug, Clone)]
pub struct AgentRow {
    pub id: AgentId,
    pub name: String,
    pub hostname: String,
    pub tags: Vec<String>,
    pub resources: Resources,
}

/// Everything the store gives back besides the runs.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub tasks: Vec<TaskRow>,
    pub open_attempts: Vec<OpenAttempt>,
    pub agents: Vec<AgentRow>,
    /// Largest measured peak of a `MEMORY_EXHAUSTION` attempt, per task.
    pub oom_peaks: Vec<(TaskId, u64)>,
    /// Successful attempts (and their tasks) of running and recent runs: a
    /// result of one of them resent after the restart is a duplicate, not a
    /// stale result; and their staged outputs are promoted again in case the
    /// broker died between the commit and the promotion.
    pub counted: Vec<(AttemptId, TaskId)>,
}

/// What a restore found, for the log line and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreSummary {
    pub runs: usize,
    pub running_runs: usize,
    pub tasks_with_rows: usize,
    pub open_attempts: usize,
    pub restored_agents: usize,
}

impl Core {
    /// A core holding every run of the store, its open attempts on restored
    /// agents that have `cfg.reclaim_window_ms` to come back.
    pub fn restore(
        cfg: CoreConfig,
        ids: Ids,
        runs: Vec<RestoredRun>,
        snap: Snapshot,
        now_ms: u64,
    ) -> (Core, RestoreSummary) {
        let mut core = Core::new(cfg, ids);
        core.counted = snap.counted.iter().map(|(a, _)| *a).collect();
        let mut summary = RestoreSummary {
            runs: runs.len(),
            tasks_with_rows: snap.tasks.len(),
            open_attempts: snap.open_attempts.len(),
            ..RestoreSummary::default()
        };
        let mut finished_runs = Vec::new();
        for r in runs {
            let state = RunState::parse(&r.state).unwrap_or(RunState::Running);
            if state == RunState::Running {
                summary.running_runs += 1;
            } else {
                finished_runs.push(r.id);
            }
            core.restore_run(r, state);
        }
        // Task rows first, then the cancel marks for the rowless rest.
        let has_row = core.restore_task_rows(&snap.tasks);
        core.apply_cancel_marks(&has_row);
        let agent_rows: HashMap<AgentId, AgentRow> =
            snap.agents.into_iter().map(|a| (a.id, a)).collect();
        for oa in snap.open_attempts {
            if core.restore_open_attempt(oa, &agent_rows, now_ms) {
                summary.restored_agents += 1;
            }
        }
        core.restore_raised_memory(snap.oom_peaks);
        core.promote_counted_again(&snap.counted);
        core.release_restored();
        // A finished run has nothing live: anything left over is cancelled.
        for run in finished_runs {
            core.cancel_leftovers(run);
        }
        let running: Vec<RunId> = core.runs.keys().copied().collect();
        for run in running {
            core.check_run_finished(run, now_ms);
        }
        (core, summary)
    }

    /// Task rows: attempts, retry and crash counts, and final states. Returns
    /// the tasks that have a row.
    fn restore_task_rows(&mut self, tasks: &[TaskRow]) -> HashSet<TaskId> {
        let mut has_row: HashSet<TaskId> = HashSet::with_capacity(tasks.len());
        for t in tasks {
            let Some((job, index)) = self.locate_task(t.task) else {
                continue;
            };
            has_row.insert(t.task);
            let slot = &mut self.jobs.get_mut(&job).expect("located").tasks[index as usize];
            slot.attempts = t.attempts.min(u16::MAX as u32) as u16;
            slot.retries_used = t.retries_used.min(u16::MAX as u32) as u16;
            slot.crashes = t.crashes.min(u16::MAX as u32) as u16;
            // In-flight states come from the open attempts below; a row saying
            // assigned/running without one is ready again.
            let state = match TaskState::parse(&t.state) {
                Some(TaskState::Assigned | TaskState::Running) | None => TaskState::Ready,
                Some(s) => s,
            };
            self.set_task_state(job, index, state);
        }
        has_row
    }

    /// Rowless tasks of a cancel-marked job are cancelled.
    fn apply_cancel_marks(&mut self, has_row: &HashSet<TaskId>) {
        let marked: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| j.cancel_marked)
            .map(|j| j.id)
            .collect();
        for job in marked {
            for index in 0..self.jobs[&job].count() {
                let j = &self.jobs[&job];
                if !has_row.contains(&(j.first_task + index)) {
                    self.set_task_state(job, index, TaskState::Cancelled);
                }
            }
        }
    }

    /// An attempt without an end, back on its (restored) agent. Returns
    /// whether that agent had to be restored for it.
    fn restore_open_attempt(
        &mut self,
        oa: OpenAttempt,
        agent_rows: &HashMap<AgentId, AgentRow>,
        now_ms: u64,
    ) -> bool {
        let Some((job_id, index)) = self.locate_task(oa.task) else {
            return false;
        };
        if self.jobs[&job_id].tasks[index as usize].state.is_terminal() {
            // Ended for good already (a cancelled run): nothing to reclaim.
            return false;
        }
        let new_agent = !self.agents.contains_key(&oa.agent);
        if new_agent {
            let row = agent_rows.get(&oa.agent);
            self.agents
                .insert(oa.agent, restored_agent(oa.agent, row, &self.cfg, now_ms));
        }
        let job = self.jobs.get_mut(&job_id).expect("located");
        let resources = job.overrides.get(&index).unwrap_or(&job.resources).clone();
        let slot = &mut job.tasks[index as usize];
        slot.attempts = slot.attempts.max(oa.number.min(u16::MAX as u32) as u16);
        job.in_flight += 1;
        let started = oa.started_at_us.is_some();
        let agent = self.agents.get_mut(&oa.agent).expect("inserted");
        agent.committed.give(&resources);
        agent.attempts.insert(oa.id);
        if !started {
            agent.unstarted += 1;
        }
        self.attempts.insert(
            oa.id,
            Attempt {
                id: oa.id,
                job: job_id,
                index,
                agent: oa.agent,
                number: oa.number,
                started,
                started_at_us: oa.started_at_us.unwrap_or(0),
                assigned_at_ms: oa.assigned_at_ms,
                cancel_requested: false,
                resources,
            },
        );
        let state = if started {
            TaskState::Running
        } else {
            TaskState::Assigned
        };
        self.set_task_state(job_id, index, state);
        new_agent
    }

    /// Memory raised after MEMORY_EXHAUSTION, for tasks still to run.
    fn restore_raised_memory(&mut self, oom_peaks: Vec<(TaskId, u64)>) {
        for (task, peak) in oom_peaks {
            let Some((job_id, index)) = self.locate_task(task) else {
                continue;
            };
            let factor = self.cfg.oom_factor;
            let job = self.jobs.get_mut(&job_id).expect("located");
            let slot = job.tasks[index as usize];
            if slot.state.is_terminal() || slot.retries_used == 0 {
                continue;
            }
            let mut r = job.resources.clone();
            r.memory_bytes = ((peak.max(r.memory_bytes)) as f64 * factor) as u64;
            job.overrides.insert(index, r);
        }
    }

    /// A counted attempt's outputs may still sit in its stage if the broker
    /// died between the commit and the rename: promote again (idempotent; a
    /// stage already promoted is simply gone).
    fn promote_counted_again(&mut self, counted: &[(AttemptId, TaskId)]) {
        for &(attempt, task) in counted {
            let Some((job_id, index)) = self.locate_task(task) else {
                continue;
            };
            let job = &self.jobs[&job_id];
            if job.def.outputs.is_empty() {
                continue;
            }
            let run = &self.runs[&job.run];
            if let Ok(r) = super::render::task_render(run, job, index) {
                self.fx.promote.push(Promote {
                    cwd: r.cwd.clone(),
                    attempt,
                    outputs: r.outputs.clone(),
                });
            }
        }
    }

    /// A finished run's waiting and ready tasks are cancelled.
    fn cancel_leftovers(&mut self, run: RunId) {
        let jobs = self.runs[&run].jobs.clone();
        for job in jobs {
            for index in 0..self.jobs[&job].count() {
                let s = self.jobs[&job].tasks[index as usize].state;
                if matches!(s, TaskState::Waiting | TaskState::Ready) {
                    self.set_task_state(job, index, TaskState::Cancelled);
                }
            }
            let j = self.jobs.get_mut(&job).expect("exists");
            j.requeued.clear();
            j.next_fresh = j.count();
        }
    }

    fn restore_run(&mut self, r: RestoredRun, state: RunState) {
        let names: HashMap<String, JobId> = r
            .jobs
            .iter()
            .map(|j| (j.planned.def.name.clone(), j.id))
            .collect();
        let mut total = 0;
        let job_ids: Vec<JobId> = r.jobs.iter().map(|j| j.id).collect();
        for rj in r.jobs {
            let pj = rj.planned;
            let count = pj.def.items.count();
            total += count;
            let deps: BTreeSet<JobId> = pj
                .def
                .after
                .iter()
                .filter_map(|a| names.get(a).copied())
                .collect();
            self.task_owner.insert(rj.first_task, rj.id);
            let mut job = Job::new(rj.id, r.id, pj, rj.first_task, deps.len() as u32);
            job.cancel_marked = rj.cancel_marked;
            job.cancel_cause = rj.cancel_cause;
            self.jobs.insert(rj.id, job);
        }
        self.wire_dependents(&job_ids, &names);
        self.wire_item_deps(&job_ids, &names);
        self.runs.insert(
            r.id,
            Run {
                id: r.id,
                name: r.name,
                submitted_at_ms: r.submitted_at_ms,
                finished_at_ms: r.finished_at_ms,
                cwd: r.cwd,
                jobs: job_ids,
                counts: Counts {
                    waiting: total,
                    ..Counts::default()
                },
                total,
                state,
                max_fails: r.max_fails,
                cancel_requested: state == RunState::Cancelled,
            },
        );
    }

    /// Recomputes which jobs are released (every upstream job fully succeeded)
    /// and queues their ready tasks: a cursor over the untouched tail, a queue
    /// for the rest.
    fn release_restored(&mut self) {
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for &id in &ids {
            let pending = self.jobs[&id]
                .def
                .after
                .iter()
                .filter(|name| {
                    let run = &self.runs[&self.jobs[&id].run];
                    run.jobs.iter().any(|d| {
                        let dj = &self.jobs[d];
                        &dj.def.name == *name && dj.counts.succeeded + dj.counts.cached < dj.count()
                    })
                })
                .count() as u32;
            let job = self.jobs.get_mut(&id).expect("listed");
            job.deps_pending = pending;
            let on_agents = job.counts.assigned + job.counts.running;
            job.released = pending == 0 || on_agents > 0;
        }
        for id in ids {
            self.recount_item_waits(id);
            let released = self.jobs[&id].released;
            let count = self.jobs[&id].count();
            for index in 0..count {
                let s = self.jobs[&id].tasks[index as usize].state;
                let ready = released && !self.waits_on_items(id, index);
                match (ready, s) {
                    (true, TaskState::Waiting) => self.set_task_state(id, index, TaskState::Ready),
                    (false, TaskState::Ready) => self.set_task_state(id, index, TaskState::Waiting),
                    _ => {}
                }
            }
            let job = self.jobs.get_mut(&id).expect("listed");
            if !job.released {
                continue;
            }
            // Untouched tail: ready and never attempted.
            let mut tail = count;
            while tail > 0 {
                let s = job.tasks[(tail - 1) as usize];
                if s.state != TaskState::Ready || s.attempts > 0 {
                    break;
                }
                tail -= 1;
            }
            job.next_fresh = tail;
            job.requeued = (0..tail)
                .filter(|&i| job.tasks[i as usize].state == TaskState::Ready)
                .collect();
            if job.has_dispatchable() {
                self.ready_jobs.insert(ReadyKey::of(job));
            }
        }
    }
}

fn restored_agent(id: AgentId, row: Option<&AgentRow>, cfg: &CoreConfig, now_ms: u64) -> Agent {
    // Declared lost `heartbeat_timeout_ms` after `last_seen_ms`: this makes the
    // deadline the end of the reclaim window.
    let last_seen_ms = (now_ms + cfg.reclaim_window_ms).saturating_sub(cfg.heartbeat_timeout_ms);
    let name = row
        .map(|r| r.name.clone())
        .unwrap_or_else(|| format!("agent-{id}"));
    Agent {
        last_seen_ms,
        connected: false,
        restored: true,
        ..Agent::new(
            id,
            name,
            row.map(|r| r.hostname.clone()).unwrap_or_default(),
            row.map(|r| r.tags.clone()).unwrap_or_default(),
            row.map(|r| r.resources.clone()).unwrap_or_default(),
            now_ms,
        )
    }
}
