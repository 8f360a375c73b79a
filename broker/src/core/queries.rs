//! Read-only views for `status`, `agents` and task names (`RUN/JOB/INDEX`,
//! `RUN/JOB@ITEM`).
//!
//! Must not change any state.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::Arc;

use scalable_common::protocol::{
    AgentId, AgentInfo, AttemptId, JobId, JobStatus, RunId, RunStatus, TaskId,
};
use scalable_common::workflow::JobDef;

use super::demand::InBackoff;
use super::model::{RenderedTask, TaskState};
use super::Core;

/// An attempt out now, as [`Core::attempt_out`] names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOut {
    pub run: RunId,
    pub task: TaskId,
    /// `RUN/JOB/INDEX`.
    pub path: String,
    pub item: Option<String>,
    /// Its task is assigned (its inputs may be on their way).
    pub assigned: bool,
    /// Its task is running (its outputs may be on their way back).
    pub running: bool,
    pub agent: String,
    pub host: String,
}

impl Core {
    pub fn last_run(&self) -> Option<RunId> {
        self.runs.keys().next_back().copied()
    }

    pub fn has_run(&self, run: RunId) -> bool {
        self.runs.contains_key(&run)
    }

    /// A run's counts per job, and what keeps its ready tasks from agents.
    pub fn run_status(&self, run: RunId, now_ms: u64) -> Option<RunStatus> {
        self.run_status_with(run, now_ms, &OnceCell::new())
    }

    fn run_status_with(
        &self,
        run: RunId,
        now_ms: u64,
        backoff: &OnceCell<HashMap<JobId, InBackoff>>,
    ) -> Option<RunStatus> {
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
            blocked: self.run_blocked(run, now_ms, backoff),
        })
    }

    /// Every run whose id is greater than `after`, in id order, computed as
    /// the caller takes them (a page of `status` stops early).
    pub fn run_statuses_after(
        &self,
        after: Option<RunId>,
        now_ms: u64,
    ) -> impl Iterator<Item = RunStatus> + '_ {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let backoff = OnceCell::new();
        self.runs
            .range(from..)
            .filter_map(move |(r, _)| self.run_status_with(*r, now_ms, &backoff))
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

    /// Task id of `run/job/index`.
    pub fn task_by_path(&self, run: RunId, job: &str, index: u64) -> Option<TaskId> {
        let r = self.runs.get(&run)?;
        r.jobs.iter().find_map(|j| {
            let job_ = &self.jobs[j];
            (job_.def.name == job && index < job_.count()).then_some(job_.first_task + index)
        })
    }

    /// The task of `job` in `run` whose item is `item` (`RUN/JOB@ITEM`).
    pub fn task_by_item(&self, run: RunId, job: &str, item: &str) -> Option<TaskId> {
        let (first, def) = self.job_def(run, job)?;
        Some(first + def.items.index_of(item)?)
    }

    /// A job of a run by name: its first task id and its definition (what
    /// names its tasks: the items, the count).
    pub fn job_def(&self, run: RunId, job: &str) -> Option<(TaskId, Arc<JobDef>)> {
        let r = self.runs.get(&run)?;
        r.jobs
            .iter()
            .map(|j| &self.jobs[j])
            .find(|j| j.def.name == job)
            .map(|j| (j.first_task, j.def.clone()))
    }

    /// The definitions of a run's jobs (empty for an unknown run).
    pub fn job_defs(&self, run: RunId) -> Vec<Arc<JobDef>> {
        self.runs
            .get(&run)
            .map(|r| r.jobs.iter().map(|j| self.jobs[j].def.clone()).collect())
            .unwrap_or_default()
    }

    /// The item of a task (`range`/`foreach`), as `RUN/JOB@ITEM` names it;
    /// `None` for a job without items or an unknown task.
    pub fn task_item(&self, task: TaskId) -> Option<String> {
        let (job, index) = self.locate_task(task)?;
        self.jobs[&job].def.items.get(index).map(|i| i.to_string())
    }

    /// The walltime of a task's job, if it has one.
    pub fn task_walltime_ms(&self, task: TaskId) -> Option<u64> {
        let (job, _) = self.locate_task(task)?;
        self.jobs[&job].def.walltime_ms
    }
}

impl Core {
    /// The declared files of an attempt that is current on `agent` (its task's
    /// directory, inputs and outputs as rendered), for staging (SPEC §4): an
    /// agent may fetch and hand back only the files of its own attempts.
    /// The attempt of `task` out now (assigned or running), if any.
    pub fn task_attempt(&self, task: TaskId) -> Option<AttemptId> {
        let (job, index) = self.locate_task(task)?;
        self.attempts
            .values()
            .find(|a| a.job == job && a.index == index)
            .map(|a| a.id)
    }

    /// An attempt out now (assigned or running): whose task it is and where
    /// (for `analyze`'s transfers).
    pub fn attempt_out(&self, attempt: AttemptId) -> Option<AttemptOut> {
        let at = self.attempts.get(&attempt)?;
        let job = self.jobs.get(&at.job)?;
        let state = job.tasks.get(at.index as usize)?.state;
        let agent = self.agents.get(&at.agent);
        Some(AttemptOut {
            run: job.run,
            task: job.first_task + at.index,
            path: format!("{}/{}/{}", job.run, job.def.name, at.index),
            item: job.def.items.get(at.index).map(|i| i.to_string()),
            assigned: state == TaskState::Assigned,
            running: state == TaskState::Running,
            agent: agent.map(|a| a.name.clone()).unwrap_or_default(),
            host: agent.map(|a| a.hostname.clone()).unwrap_or_default(),
        })
    }

    pub fn attempt_files(&self, agent: AgentId, attempt: AttemptId) -> Option<Arc<RenderedTask>> {
        let at = self.attempts.get(&attempt).filter(|a| a.agent == agent)?;
        let job = self.jobs.get(&at.job)?;
        let run = self.runs.get(&job.run)?;
        super::render::task_render(run, job, at.index).ok()
    }
}
