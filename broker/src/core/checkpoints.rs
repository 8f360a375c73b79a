//! Checkpoints (`checkpoint:` on a job, SPEC §4, seed 004): which attempt's
//! checkpoint is kept, when the next attempt gets it restored, and when the
//! kept versions are dropped, as [`CheckpointOp`]s in `Effects`.
//!
//! The core only decides; the shell (`crate::checkpoints`) copies files
//! after the commit and before the next assignment is sent. A version is an
//! attempt id, so two attempts never mix. Jobs without `checkpoint:` pay one
//! emptiness test per attempt end and per assignment. Must not schedule.

use scalable_common::protocol::{AttemptEnd, AttemptId};

use super::model::Attempt;
use super::render::task_render;
use super::{CheckpointOp, Core};
use scalable_common::protocol::JobId;

/// Whether an attempt that ended so keeps what it wrote: it started, and it
/// ended through no fault of its own (its pilot's lifetime or a drain, its
/// agent lost) or at its own walltime.
pub fn keeps_checkpoint(end: &AttemptEnd, started: bool) -> bool {
    started
        && matches!(
            end,
            AttemptEnd::Drained | AttemptEnd::AgentLost | AttemptEnd::TimedOut
        )
}

impl Core {
    /// An attempt of a checkpointing job ended: kept (a version of its own),
    /// its snapshots dropped (a started attempt that failed by its own
    /// fault) or, on success, every kept version dropped.
    pub(super) fn note_checkpoint_end(&mut self, at: &Attempt, end: &AttemptEnd) {
        let job = &self.jobs[&at.job];
        if job.def.checkpoint.is_empty() {
            return;
        }
        let task = job.first_task + at.index;
        if end.is_success() {
            self.fx.checkpoints.push(CheckpointOp::Drop { task });
            return;
        }
        if !keeps_checkpoint(end, at.started) {
            if at.started {
                self.fx.checkpoints.push(CheckpointOp::DropAttempt {
                    task,
                    attempt: at.id,
                });
            }
            return;
        }
        if let Ok(r) = task_render(&self.runs[&job.run], job, at.index) {
            self.fx.checkpoints.push(CheckpointOp::Keep {
                task,
                attempt: at.id,
                cwd: r.cwd.clone(),
                paths: job.def.checkpoint.clone(),
            });
        }
    }

    /// The task and checkpoint paths of `attempt` when it is current on
    /// `agent` and its job keeps checkpoints (`server::checkpoint_io`); the
    /// paths are empty for a job without `checkpoint:`.
    pub fn attempt_checkpoint(
        &self,
        agent: scalable_common::protocol::AgentId,
        attempt: AttemptId,
    ) -> Option<(scalable_common::protocol::TaskId, Vec<String>)> {
        let at = self.attempts.get(&attempt).filter(|a| a.agent == agent)?;
        let job = self.jobs.get(&at.job)?;
        Some((job.first_task + at.index, job.def.checkpoint.clone()))
    }

    /// A later attempt (`number` > 1) of a checkpointing job is assigned in
    /// `cwd`: its paths get the newest kept version before it is sent.
    pub(super) fn note_checkpoint_restore(
        &mut self,
        job_id: JobId,
        index: u64,
        attempt: AttemptId,
        number: u32,
        cwd: &str,
    ) {
        let job = &self.jobs[&job_id];
        if job.def.checkpoint.is_empty() || number <= 1 {
            return;
        }
        self.fx.checkpoints.push(CheckpointOp::Restore {
            task: job.first_task + index,
            attempt,
            cwd: cwd.to_string(),
            paths: job.def.checkpoint.clone(),
        });
    }
}
