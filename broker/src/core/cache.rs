//! `cache: true` tasks: the probe the shell runs before a ready task is
//! dispatched, and its answer (a hit ends the task `cached`, a miss queues it
//! and keeps the key to record on success).
//!
//! The hashing and lookups are the shell's (`crate::cache`); this module must
//! not read files or the cache table.

use scalable_common::protocol::JobId;

use std::sync::Arc;

use super::model::{RenderedTask, TaskState};
use super::render::task_render;
use super::{CacheProbe, Core};

impl Core {
    /// Asks the shell to look the task up in the cache before it runs.
    pub(super) fn probe_cache(&mut self, job_id: JobId, index: u64) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        job.probing.insert(index);
        let job = &self.jobs[&job_id];
        let run = &self.runs[&job.run];
        // A task that does not render is probed as the run's cwd with nothing
        // in it: a miss, and its attempt then fails with the template error.
        let r = task_render(run, job, index).unwrap_or_else(|_| {
            Arc::new(RenderedTask {
                argv: Vec::new(),
                env: Vec::new(),
                cwd: run.cwd.clone(),
                inputs: Vec::new(),
                outputs: Vec::new(),
            })
        });
        let probe = CacheProbe {
            job: job_id,
            index,
            workflow: run.name.clone(),
            job_name: job.def.name.clone(),
            argv: r.argv.clone(),
            image: job.container.as_ref().map(|c| c.image.clone()),
            env: match &job.container {
                Some(c) => c.env.clone(),
                None => r.env.clone(),
            },
            cwd: r.cwd.clone(),
            inputs: r.inputs.clone(),
            outputs: r.outputs.clone(),
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
}
