//! `scalable resume RUN` (a rescue DAG): a finished run's failed and
//! cancelled tasks run again; what succeeded stays.
//!
//! It must not change tasks that succeeded nor schedule.

use scalable_common::protocol::{JobId, RunId};

use super::model::{RunState, TaskState};
use super::{Core, EventKind, StoreOp};

impl Core {
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
            n += self.rerun_job(j, now_ms);
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
            self.recount_item_waits(j);
        }
        for &j in &jobs {
            let job = &self.jobs[&j];
            if job.deps_pending == 0 && job.counts.waiting > 0 {
                self.release_job(j, now_ms);
            } else if job.deps_pending == 0 {
                let job = self.jobs.get_mut(&j).expect("exists");
                job.released = true;
                job.released_at_ms = now_ms;
            }
        }
        self.fx.store.push(StoreOp::Event {
            at_ms: now_ms,
            kind: EventKind::RunResumed,
            run: Some(run_id),
            detail: format!("{n} failed or cancelled tasks run again"),
        });
        Ok(n)
    }

    /// The job's failed and cancelled tasks wait again, with fresh retry and
    /// crash budgets; the job waits to be released. Returns how many.
    fn rerun_job(&mut self, j: JobId, now_ms: u64) -> u64 {
        let mut n = 0;
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
        job.ready_again_at_ms.clear();
        job.next_fresh = job.count();
        if job.cancel_marked {
            job.cancel_marked = false;
            self.fx.store.push(StoreOp::JobCancelMark {
                job: j,
                cancelled: false,
            });
        }
        if job.cancel_cause.take().is_some() {
            self.fx.store.push(StoreOp::JobCancelCause {
                job: j,
                cause: None,
            });
        }
        n
    }
}
