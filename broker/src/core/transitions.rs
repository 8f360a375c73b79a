//! Every state change of a task or attempt: an attempt ends (success, retry
//! with backoff, requeue without a retry, failure), memory is raised after
//! `MEMORY_EXHAUSTION`, a task finishes and its row is recorded, a job is
//! released, runs, tasks, jobs and dependents are cancelled, and a run is
//! checked for its end.
//!
//! The bottom of the core's behaviour: events (`submit`, `agents`, `cache`,
//! `resume`) and `scheduling` call down into it; it must not call up into them
//! (it never schedules nor talks to agents except through `Effects`).

use std::cmp::Reverse;
use std::collections::BTreeSet;

use scalable_common::explain::Cancellation;
use scalable_common::protocol::{AttemptEnd, AttemptId, AttemptResult, JobId, RunId, TaskId};

use super::model::{Attempt, ReadyKey, RunState, TaskState};
use super::render::task_render;
use super::{sub_resources, CacheRecord, Core, EventKind, Promote, StoreOp};

impl Core {
    /// Dependencies met: every waiting task of the job becomes ready.
    pub(super) fn release_job(&mut self, id: JobId, now_ms: u64) {
        let job = self.jobs.get_mut(&id).expect("release of a known job");
        debug_assert!(!job.released);
        job.released = true;
        job.released_at_ms = now_ms;
        let mut moved = 0;
        if job.item_waits.is_empty() {
            for slot in job.tasks.iter_mut() {
                if slot.state == TaskState::Waiting {
                    slot.state = TaskState::Ready;
                    moved += 1;
                }
            }
        } else {
            // Tasks that still wait for an upstream task per item stay waiting.
            for (slot, &w) in job.tasks.iter_mut().zip(&job.item_waits) {
                if slot.state == TaskState::Waiting && w == 0 {
                    slot.state = TaskState::Ready;
                    moved += 1;
                }
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

    /// Applies the end of an attempt already removed from `self.attempts`.
    /// `crash`: the attempt was lost with an agent that died on its own (counts
    /// towards the crash limit when the attempt had started).
    pub(super) fn end_attempt(
        &mut self,
        at: Attempt,
        result: AttemptResult,
        crash: bool,
        now_ms: u64,
    ) {
        let end = result.end.clone();
        let peak_rss = result.peak_rss_bytes;
        let walltime_ms = self.jobs[&at.job].def.walltime_ms;
        let failure = (!end.is_success()).then(|| failure_reason(&result, &at, walltime_ms));
        if !self.transfer_failures.is_empty() {
            // A resumed task's new ending replaces the old one.
            let task = self.jobs[&at.job].first_task + at.index;
            self.transfer_failures.remove(&task);
        }
        self.close_attempt(&at, result, now_ms);
        self.note_checkpoint_end(&at, &end);
        let job = &self.jobs[&at.job];
        let retries = job.def.retries;
        let slot = job.tasks[at.index as usize];
        let run_cancelled = self.runs[&job.run].cancel_requested;
        if end.is_success() {
            self.attempt_succeeded(&at, now_ms);
        } else if at.cancel_requested || end == AttemptEnd::Cancelled || run_cancelled {
            self.finish_task(
                at.job,
                at.index,
                TaskState::Cancelled,
                Some("cancelled".into()),
                now_ms,
            );
        } else if !end.spends_retry() {
            self.lost_without_fault(&at, crash, slot.crashes, now_ms);
        } else if (slot.retries_used as u32) < retries {
            if end == AttemptEnd::OutOfMemory {
                self.raise_memory(&at, peak_rss, now_ms);
            }
            self.retry_after_backoff(&at, now_ms);
        } else {
            if let AttemptEnd::StagingFailed { error } = &end {
                let task = self.jobs[&at.job].first_task + at.index;
                self.transfer_failures.insert(task, error.clone());
            }
            self.finish_task(at.job, at.index, TaskState::Failed, failure, now_ms);
        }
    }

    /// Ends an attempt already removed from `self.attempts` and fails its task
    /// without a retry, whatever its budget: sending it again cannot help (its
    /// assignment can never be sent, or it never reached an agent, again and
    /// again). `reason` goes in the task's row.
    pub(super) fn end_attempt_for_good(
        &mut self,
        at: Attempt,
        result: AttemptResult,
        reason: String,
        now_ms: u64,
    ) {
        self.close_attempt(&at, result, now_ms);
        self.finish_task(at.job, at.index, TaskState::Failed, Some(reason), now_ms);
    }

    /// The bookkeeping of every ending: the agent's commitments, the row, the
    /// job's count in flight.
    fn close_attempt(&mut self, at: &Attempt, result: AttemptResult, now_ms: u64) {
        if let Some(a) = self.agents.get_mut(&at.agent) {
            a.attempts.remove(&at.id);
            sub_resources(&mut a.committed, &at.resources);
            if !at.started {
                a.unstarted -= 1;
            }
        }
        self.fx.store.push(StoreOp::AttemptEnded {
            attempt: at.id,
            result: Box::new(result),
            at_ms: now_ms,
        });
        let job = self.jobs.get_mut(&at.job).expect("attempt's job exists");
        job.in_flight -= 1;
    }

    /// A counted success: its outputs are promoted, a cache miss's key is
    /// recorded, and the task succeeds.
    fn attempt_succeeded(&mut self, at: &Attempt, now_ms: u64) {
        self.counted.insert(at.id);
        let job = self.jobs.get_mut(&at.job).expect("attempt's job exists");
        let run = &self.runs[&job.run];
        let note = job.cache_misses.remove(&at.index);
        // Rendered only when something needs it (kept for a costly job).
        let rendered = (!job.def.outputs.is_empty() || note.is_some())
            .then(|| task_render(run, job, at.index).ok())
            .flatten();
        if let (false, Some(r)) = (job.def.outputs.is_empty(), &rendered) {
            self.fx.promote.push(Promote {
                cwd: r.cwd.clone(),
                attempt: at.id,
                outputs: r.outputs.clone(),
            });
        }
        if let Some((key_json, _)) = &note {
            let (cwd, outputs) = match &rendered {
                Some(r) => (r.cwd.clone(), r.outputs.clone()),
                None => (run.cwd.clone(), Vec::new()),
            };
            self.fx.cache_record.push(CacheRecord {
                workflow: run.name.clone(),
                job_name: job.def.name.clone(),
                index: at.index,
                task: job.first_task + at.index,
                attempt: at.id,
                key_json: key_json.clone(),
                cwd,
                outputs,
            });
        }
        let reason = note.map(|(_, why)| why);
        self.finish_task(at.job, at.index, TaskState::Succeeded, reason, now_ms);
    }

    /// Lost with its agent, drained or returned: not the task's fault, unless
    /// it keeps taking its agents down with it (crash limit). `crashes`: the
    /// task's count before this attempt.
    fn lost_without_fault(&mut self, at: &Attempt, crash: bool, crashes: u16, now_ms: u64) {
        let crashes = if crash && at.started {
            let job = self.jobs.get_mut(&at.job).expect("exists");
            let c = &mut job.tasks[at.index as usize].crashes;
            *c = c.saturating_add(1);
            *c
        } else {
            crashes
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
    }

    /// A failure that spends a retry: back to ready after 1 s, 2 s, 4 s ...
    /// (capped at `retry_backoff_max_ms`).
    fn retry_after_backoff(&mut self, at: &Attempt, now_ms: u64) {
        let job = self.jobs.get_mut(&at.job).expect("exists");
        job.tasks[at.index as usize].retries_used += 1;
        let n = job.tasks[at.index as usize].retries_used as u32;
        let delay = self
            .cfg
            .retry_backoff_base_ms
            .saturating_mul(1u64 << (n - 1).min(20))
            .min(self.cfg.retry_backoff_max_ms);
        self.requeue(at.job, at.index, delay, now_ms);
    }

    /// SPEC §5: a task killed for memory is retried asking for its measured peak
    /// times `oom_factor` (at least that times what it asked for, since a
    /// sampled peak can lag the kill), capped by the largest connected agent
    /// that serves it.
    fn raise_memory(&mut self, at: &Attempt, peak_rss: u64, now_ms: u64) {
        let job = &self.jobs[&at.job];
        let asked = at.resources.memory_bytes;
        let from = peak_rss.max(asked);
        // Issue 17: never below the advisor's upper bound for this task.
        let bound = job.predicted_memory(at.index).unwrap_or(0);
        let mut want = ((from as f64 * self.cfg.oom_factor) as u64).max(bound);
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
            "task {}/{}/{}: memory request raised from {} to {} = max(peak {}, request) x {}{}{}",
            job.run,
            job.def.name,
            at.index,
            size(asked),
            size(want),
            size(peak_rss),
            self.cfg.oom_factor,
            if bound > 0 {
                format!(" (at least the advisor's bound {})", size(bound))
            } else {
                String::new()
            },
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
            kind: EventKind::MemoryRaised,
            run: Some(run),
            detail,
        });
    }

    /// Puts a task back to ready, now or after `delay_ms` of backoff.
    fn requeue(&mut self, job_id: JobId, index: u64, delay_ms: u64, now_ms: u64) {
        self.set_task_state(job_id, index, TaskState::Ready);
        self.record_task(job_id, index, None, now_ms);
        if delay_ms == 0 {
            self.ready_again(job_id, index, now_ms);
        } else {
            self.backoff
                .push(Reverse((now_ms + delay_ms, job_id, index)));
        }
    }

    /// A task that came back is ready again since `at_ms` (its next
    /// attempt's queue wait starts there).
    pub(super) fn ready_again(&mut self, job_id: JobId, index: u64, at_ms: u64) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        job.ready_again_at_ms.insert(index, at_ms);
        self.push_requeued(job_id, index);
    }

    /// Queues a ready task for dispatch; it keeps the ready time it had (a
    /// cache miss or a render answered waited as ready all along).
    pub(super) fn push_requeued(&mut self, job_id: JobId, index: u64) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        job.requeued.push_back(index);
        self.ready_jobs.insert(ReadyKey::of(job));
    }

    /// Writes the task's row as it is now (state, attempts, retry and crash counts).
    pub(super) fn record_task(
        &mut self,
        job_id: JobId,
        index: u64,
        reason: Option<String>,
        now_ms: u64,
    ) {
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
    pub(super) fn finish_task(
        &mut self,
        job_id: JobId,
        index: u64,
        state: TaskState,
        reason: Option<String>,
        now_ms: u64,
    ) {
        debug_assert!(state.is_terminal());
        self.set_task_state(job_id, index, state);
        // A kept render is needed until the task ends, not after.
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.rendered.remove(&index);
            if let Some(a) = job.auto.as_mut() {
                a.sized.remove(&index);
            }
        }
        let run_id = self.jobs[&job_id].run;
        self.record_task(job_id, index, reason.clone(), now_ms);
        if state == TaskState::Failed {
            // DAGMan semantics: what depends on a failed job can never run, the rest
            // of the DAG keeps going.
            let job = &self.jobs[&job_id];
            let cause = Cancellation::DependencyFailed {
                job: job.def.name.clone(),
                task: format!("{run_id}/{}/{index}", job.def.name),
                item: job.def.items.get(index).map(|i| i.to_string()),
                failure: reason.clone().unwrap_or_else(|| "failed".into()),
            };
            self.cancel_dependents(job_id, &cause, now_ms);
            self.cancel_item_dependents(job_id, index, &cause, now_ms);
            let run = &self.runs[&run_id];
            if let Some(max) = run.max_fails {
                if run.counts.failed >= max {
                    let cause = Cancellation::MaxFails { max };
                    self.cancel_unstarted(run_id, "max_fails reached", &cause, now_ms);
                }
            }
        }
        if state == TaskState::Cancelled && !self.jobs[&job_id].item_dependents.is_empty() {
            let job = &self.jobs[&job_id];
            let cause = Cancellation::DependencyFailed {
                job: job.def.name.clone(),
                task: format!("{run_id}/{}/{index}", job.def.name),
                item: job.def.items.get(index).map(|i| i.to_string()),
                failure: reason.clone().unwrap_or_else(|| "cancelled".into()),
            };
            self.cancel_item_dependents(job_id, index, &cause, now_ms);
        }
        if matches!(state, TaskState::Succeeded | TaskState::Cached) {
            self.item_succeeded(job_id, index, now_ms);
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
                    self.release_job(d, now_ms);
                }
            }
        }
        self.check_run_finished(run_id, now_ms);
    }

    /// Cancels every not-yet-terminal task of every job downstream of `job_id`,
    /// each job with the failure that started it as its cause.
    pub(super) fn cancel_dependents(&mut self, job_id: JobId, cause: &Cancellation, now_ms: u64) {
        let mut stack = self.jobs[&job_id].dependents.clone();
        let mut seen = BTreeSet::new();
        while let Some(d) = stack.pop() {
            if !seen.insert(d) {
                continue;
            }
            self.cancel_job_tasks(d, "dependency failed", cause, now_ms);
            // A job cancelled whole cancels its per-item dependents whole too.
            let dj = &self.jobs[&d];
            stack.extend(dj.dependents.iter().copied());
            stack.extend(dj.item_dependents.iter().map(|e| e.job));
        }
    }

    /// Cancels the job's waiting and ready tasks; tasks on agents are told to
    /// stop. `reason` goes in task rows, `cause` becomes the job's if it has
    /// none yet.
    fn cancel_job_tasks(
        &mut self,
        job_id: JobId,
        reason: &str,
        cause: &Cancellation,
        now_ms: u64,
    ) -> u64 {
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
        job.ready_again_at_ms.clear();
        job.probing.clear();
        job.rendering.clear();
        job.rendered.clear();
        if let Some(a) = job.auto.as_mut() {
            a.sizing.clear();
            a.sized.clear();
        }
        job.next_fresh = job.count();
        if cancelled > 0 && !job.cancel_marked {
            job.cancel_marked = true;
            self.fx.store.push(StoreOp::JobCancelMark {
                job: job_id,
                cancelled: true,
            });
        }
        if cancelled > 0 {
            self.set_cancel_cause(job_id, cause);
        }
        let job = &self.jobs[&job_id];
        if cancelled > 0 {
            self.fx.store.push(StoreOp::Event {
                at_ms: now_ms,
                kind: EventKind::TasksCancelled,
                run: Some(job.run),
                detail: format!(
                    "job {}: {cancelled} tasks cancelled: {reason}",
                    job.def.name
                ),
            });
        }
        cancelled
    }

    fn cancel_unstarted(&mut self, run_id: RunId, reason: &str, cause: &Cancellation, now_ms: u64) {
        let jobs = self.runs[&run_id].jobs.clone();
        for j in jobs {
            self.cancel_job_tasks(j, reason, cause, now_ms);
        }
    }

    /// The first cause of a job's cancelled tasks is the one `why` and
    /// `analyze` give for all of them (later cancels only reach tasks that
    /// were on agents).
    pub(super) fn set_cancel_cause(&mut self, job_id: JobId, cause: &Cancellation) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        if job.cancel_cause.is_some() {
            return;
        }
        job.cancel_cause = Some(cause.clone());
        self.fx.store.push(StoreOp::JobCancelCause {
            job: job_id,
            cause: Some(cause.clone()),
        });
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
        for j in jobs.iter().copied() {
            n += self.cancel_job_tasks(j, "cancelled by user", &Cancellation::ByUser, now_ms);
        }
        let on_agents: Vec<AttemptId> = self
            .attempts
            .values()
            .filter(|a| self.jobs[&a.job].run == run_id)
            .map(|a| a.id)
            .collect();
        for id in on_agents {
            let job = self.attempts[&id].job;
            self.set_cancel_cause(job, &Cancellation::ByUser);
            n += self.cancel_attempt(id);
        }
        self.check_run_finished(run_id, now_ms);
        Some(n)
    }

    /// Cancels one task. Returns the number of tasks cancelled (0 or 1), or None if unknown.
    pub fn cancel_task(&mut self, task: TaskId, now_ms: u64) -> Option<u64> {
        let (job_id, index) = self.locate_task(task)?;
        let state = self.jobs[&job_id].tasks[index as usize].state;
        if !state.is_terminal() {
            self.set_cancel_cause(job_id, &Cancellation::ByUser);
        }
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

    pub(super) fn set_task_state(&mut self, job_id: JobId, index: u64, state: TaskState) {
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

    pub(super) fn check_run_finished(&mut self, run_id: RunId, now_ms: u64) {
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
}

/// The task row's reason for a task that failed for good, with the numbers
/// that explain it: the exit code, the memory peak against the limit, the
/// walltime.
pub(super) fn failure_reason(r: &AttemptResult, at: &Attempt, walltime_ms: Option<u64>) -> String {
    let size = scalable_common::units::format_size;
    match &r.end {
        AttemptEnd::Exited { code } => format!("exit code {code}"),
        AttemptEnd::Signalled { signal } => format!("killed by signal {signal}"),
        AttemptEnd::SpawnFailed { error } => format!("could not start: {error}"),
        AttemptEnd::StagingFailed { error } => format!("staging failed: {error}"),
        AttemptEnd::InvalidInput { path } => match r.exit_code {
            Some(code) => format!("missing input: {path} (exit code {code})"),
            None => format!("missing input: {path}"),
        },
        AttemptEnd::OutputsMissing { missing } => {
            format!("missing outputs: {}", missing.join(", "))
        }
        AttemptEnd::OutOfMemory => {
            let mut reason = format!("memory exhaustion: peak {}", size(r.peak_rss_bytes));
            if let Some(limit) = r.memory_limit_bytes {
                reason.push_str(&format!(", limit {}", size(limit)));
            }
            if at.resources.memory_bytes > 0 {
                reason.push_str(&format!(" (request {})", size(at.resources.memory_bytes)));
            }
            reason
        }
        AttemptEnd::TimedOut => match walltime_ms {
            Some(w) => format!(
                "timeout: walltime {}",
                scalable_common::units::format_duration_ms(w)
            ),
            None => "timeout".into(),
        },
        other => other.class().to_lowercase(),
    }
}
