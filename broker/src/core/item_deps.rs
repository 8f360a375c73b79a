//! Per-item dependencies (`after: [{job: x, per: item}]`, SPEC §4): the
//! edges between jobs with their index maps, and per task of a downstream
//! job the number of upstream tasks it still waits for (`Job::item_waits`).
//! A task becomes ready when its job is released (whole-job `after` met) and
//! its count reaches 0; a failed or cancelled upstream task cancels only its
//! matching downstream tasks (DAGMan), and whole-job dependents of those.
//!
//! An edge is one [`ItemMap`] (usually `Same`: no memory per task); jobs
//! without per-item edges have an empty `item_waits` and pay nothing per
//! task. Sits beside `transitions` (which calls it when a task ends); must
//! not schedule nor talk to agents.

use std::collections::HashMap;

use scalable_common::explain::Cancellation;
use scalable_common::protocol::JobId;
use scalable_common::workflow::{match_items, JobDef};

use super::model::{ItemEdge, ReadyKey, TaskState};
use super::{Core, SubmitError};

/// Every per-item entry names a job of the run and matches its tasks (the
/// shell checked the workflow already; a plan from elsewhere is checked here).
pub(super) fn check_item_edges<'a>(
    defs: impl Iterator<Item = &'a JobDef> + Clone,
) -> Result<(), SubmitError> {
    for down in defs.clone() {
        for p in &down.after_per {
            let Some(up) = defs.clone().find(|d| d.name == p.job) else {
                return Err(SubmitError::UnknownAfter {
                    job: down.name.clone(),
                    after: p.job.clone(),
                });
            };
            if let Err(m) = match_items(&up.name, &up.items, &down.name, &down.items, p.per) {
                return Err(SubmitError::ItemMismatch {
                    job: down.name.clone(),
                    message: m.message,
                });
            }
        }
    }
    Ok(())
}

impl Core {
    /// Wires the per-item edges of a run's jobs, each task of a downstream
    /// job waiting for all of its upstream tasks. An entry that names no job
    /// or does not match is skipped (`check_item_edges` refused it at submit).
    pub(super) fn wire_item_deps(&mut self, job_ids: &[JobId], names: &HashMap<String, JobId>) {
        for &id in job_ids {
            let def = self.jobs[&id].def.clone();
            for p in &def.after_per {
                let Some(&up) = names.get(&p.job) else {
                    continue;
                };
                let up_def = &self.jobs[&up].def;
                let Ok(map) =
                    match_items(&up_def.name, &up_def.items, &def.name, &def.items, p.per)
                else {
                    continue;
                };
                let inverse = map.inverse();
                self.jobs
                    .get_mut(&up)
                    .expect("a job of the same run")
                    .item_dependents
                    .push(ItemEdge {
                        job: id,
                        map: inverse,
                    });
                self.jobs
                    .get_mut(&id)
                    .expect("listed")
                    .item_deps
                    .push(ItemEdge { job: up, map });
            }
            let job = self.jobs.get_mut(&id).expect("listed");
            if !job.item_deps.is_empty() {
                job.item_waits = vec![job.item_deps.len() as u32; job.tasks.len()];
            }
        }
    }

    /// Task `index` of `job_id` succeeded: the matching task of each per-item
    /// dependent waits for one task less, and is ready if that was the last.
    pub(super) fn item_succeeded(&mut self, job_id: JobId, index: u64, now_ms: u64) {
        let edges = self.jobs[&job_id].item_dependents.clone();
        for e in edges {
            let down = e.map.up_of(index);
            let job = self.jobs.get_mut(&e.job).expect("a job of the same run");
            let Some(w) = job.item_waits.get_mut(down as usize) else {
                continue;
            };
            debug_assert!(*w > 0, "an upstream task succeeded twice");
            *w = w.saturating_sub(1);
            let waiting = job.tasks[down as usize].state == TaskState::Waiting;
            if *w == 0 && job.released && waiting {
                self.release_item_task(e.job, down, now_ms);
            }
        }
    }

    /// One task of a released job whose per-item waits are over becomes
    /// ready: behind the fresh cursor it is queued, ahead of it the cursor
    /// finds it.
    fn release_item_task(&mut self, job_id: JobId, index: u64, now_ms: u64) {
        self.set_task_state(job_id, index, TaskState::Ready);
        let job = self.jobs.get_mut(&job_id).expect("exists");
        job.ready_again_at_ms.insert(index, now_ms);
        if index < job.next_fresh {
            self.push_requeued(job_id, index);
        } else {
            self.ready_jobs.insert(ReadyKey::of(job));
        }
    }

    /// Task `index` of `job_id` ended without success for good: its matching
    /// per-item dependents are cancelled (and theirs, transitively), and so
    /// is every job that waits for a whole job that thus lost a task.
    pub(super) fn cancel_item_dependents(
        &mut self,
        job_id: JobId,
        index: u64,
        cause: &Cancellation,
        now_ms: u64,
    ) {
        let mut stack: Vec<(JobId, u64)> = self.item_downstream(job_id, index);
        while let Some((d, i)) = stack.pop() {
            let state = self.jobs[&d].tasks[i as usize].state;
            if !matches!(state, TaskState::Waiting | TaskState::Ready) {
                continue;
            }
            self.set_task_state(d, i, TaskState::Cancelled);
            // One row per task: the job's cancel mark would cancel its
            // other rowless tasks on a restart.
            self.record_task(d, i, Some("dependency failed".into()), now_ms);
            self.set_cancel_cause(d, cause);
            self.cancel_dependents(d, cause, now_ms);
            stack.extend(self.item_downstream(d, i));
        }
    }

    /// The tasks that wait for task `index` of `job_id` per item.
    fn item_downstream(&self, job_id: JobId, index: u64) -> Vec<(JobId, u64)> {
        self.jobs[&job_id]
            .item_dependents
            .iter()
            .map(|e| (e.job, e.map.up_of(index)))
            .collect()
    }

    /// Recounts each task's per-item waits from its upstream tasks' states
    /// (after a restart or a `resume`); a task waits for each upstream task
    /// that has not succeeded.
    pub(super) fn recount_item_waits(&mut self, job_id: JobId) {
        let job = &self.jobs[&job_id];
        if job.item_deps.is_empty() {
            return;
        }
        let mut waits = vec![0u32; job.tasks.len()];
        for e in &job.item_deps {
            let up = &self.jobs[&e.job];
            for (i, w) in waits.iter_mut().enumerate() {
                let s = up.tasks[e.map.up_of(i as u64) as usize].state;
                if !matches!(s, TaskState::Succeeded | TaskState::Cached) {
                    *w += 1;
                }
            }
        }
        self.jobs.get_mut(&job_id).expect("exists").item_waits = waits;
    }

    /// Whether task `index` still waits for an upstream task of a per-item
    /// edge (always false for a job without them).
    pub(super) fn waits_on_items(&self, job_id: JobId, index: u64) -> bool {
        self.jobs[&job_id]
            .item_waits
            .get(index as usize)
            .is_some_and(|&w| w > 0)
    }
}
