//! Submitting a run: ids allocated, jobs built with their task slots, the
//! dependency graph wired, and the jobs without dependencies released.
//!
//! Owns `Core::submit` only. It must not schedule (the shell calls
//! `schedule` after every batch) nor touch agents.

use std::collections::{BTreeSet, HashMap, HashSet};

use scalable_common::protocol::{Counts, JobId, RunId};

use super::item_deps::check_item_edges;
use super::model::{Job, Run, RunState};
use super::{Core, PlannedJob, StoreOp, SubmitError, SubmitPlan};

impl Core {
    /// Adds a run. Jobs whose dependencies are met become ready at once.
    pub fn submit(&mut self, plan: SubmitPlan, now_ms: u64) -> Result<(RunId, u64), SubmitError> {
        check_after(&plan)?;
        let run_id = self.ids.run;
        self.ids.run += 1;
        let first_job = self.ids.job;
        let job_ids: Vec<JobId> = (0..plan.jobs.len() as u64).map(|i| first_job + i).collect();
        self.ids.job += plan.jobs.len() as u64;
        let names: HashMap<String, JobId> = plan
            .jobs
            .iter()
            .zip(&job_ids)
            .map(|(j, id)| (j.def.name.clone(), *id))
            .collect();

        self.fx.store.push(StoreOp::InsertRun {
            run: run_id,
            name: plan.def.name.clone(),
            submitted_at_ms: now_ms,
            cwd: plan.cwd.clone(),
            source: plan.source.clone(),
            definition_json: plan.definition_json,
        });
        let mut total = 0u64;
        for (pj, &id) in plan.jobs.into_iter().zip(&job_ids) {
            total += self.insert_job(run_id, id, pj, &names);
        }
        // Wire dependents once every job exists (an `after` may name a later job).
        self.wire_dependents(&job_ids, &names);
        self.wire_item_deps(&job_ids, &names);
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
                self.release_job(id, now_ms);
            }
        }
        self.check_run_finished(run_id, now_ms);
        Ok((run_id, total))
    }

    /// Adds one job of a new run, its tasks waiting. Returns its task count.
    fn insert_job(
        &mut self,
        run_id: RunId,
        id: JobId,
        pj: PlannedJob,
        names: &HashMap<String, JobId>,
    ) -> u64 {
        let count = pj.def.items.count();
        let first_task = self.ids.task;
        self.ids.task += count;
        let deps: BTreeSet<JobId> = pj.def.after.iter().map(|a| names[a]).collect();
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
        count
    }
}

/// Every `after` names a job of the plan, and there is a job.
fn check_after(plan: &SubmitPlan) -> Result<(), SubmitError> {
    if plan.jobs.is_empty() {
        return Err(SubmitError::Empty);
    }
    let names: HashSet<&str> = plan.jobs.iter().map(|j| j.def.name.as_str()).collect();
    for j in &plan.jobs {
        for a in &j.def.after {
            if !names.contains(a.as_str()) {
                return Err(SubmitError::UnknownAfter {
                    job: j.def.name.clone(),
                    after: a.clone(),
                });
            }
        }
    }
    check_item_edges(plan.jobs.iter().map(|j| &*j.def))
}
