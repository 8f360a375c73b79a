//! Read-only views for `status`, `agents` and task names (`RUN/JOB/INDEX`).
//!
//! Must not change any state.

use scalable_common::protocol::{AgentInfo, JobStatus, RunId, RunStatus, TaskId};

use super::Core;

impl Core {
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

    /// Every run whose id is greater than `after`, in id order, computed as
    /// the caller takes them (a page of `status` stops early).
    pub fn run_statuses_after(&self, after: Option<RunId>) -> impl Iterator<Item = RunStatus> + '_ {
        let from = after.map_or(0, |a| a.saturating_add(1));
        self.runs
            .range(from..)
            .filter_map(|(r, _)| self.run_status(*r))
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
}
