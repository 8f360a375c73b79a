//! Tasks sized by the advisor at dispatch (`memory: auto`, `cpus: auto`,
//! `walltime: auto` on a manifest task binding, SPEC §11).
//!
//! Like a cache probe, a ready task of such a job is asked of the shell
//! before it is queued (`fx.sizing`, at most `sizings_max` out per job) and
//! comes back with [`Core::sizing_answer`]: its request, its walltime, where
//! they came from and what the advisor predicted, kept until the task ends.
//! The shell answers from a table of trained advisors it keeps off the core;
//! a job without `auto` never reaches this module (its `Job::auto` is `None`:
//! one test per dispatched task).
//!
//! Must not predict, train or read anything: the core only keeps, caps and
//! applies the answer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use scalable_common::manifest::AutoResources;
use scalable_common::protocol::JobId;
use scalable_common::resources::Resources;

use super::effects::{RenderRequest, RequestSource};
use super::model::{Job, TaskState};
use super::Core;

/// The sizing state of a job with `auto` quantities.
#[derive(Debug)]
pub struct AutoJob {
    pub spec: AutoResources,
    /// The advisor's task type: the manifest task binding.
    pub task_type: String,
    /// Tasks whose sizing is out (ready, but not queued).
    pub sizing: HashSet<u64>,
    /// Answers, kept until the task ends.
    pub sized: HashMap<u64, TaskSizing>,
    /// The least any answered task asks for (and at most the job's own
    /// request): what the fill pass checks room against before it picks a
    /// task, whose own request is then checked like a raised one.
    pub floor: Resources,
}

impl AutoJob {
    pub fn new(spec: AutoResources, task_type: String, fallback: &Resources) -> AutoJob {
        AutoJob {
            spec,
            task_type,
            sizing: HashSet::new(),
            sized: HashMap::new(),
            floor: fallback.clone(),
        }
    }
}

/// What one task asks for and why (the shell's answer).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSizing {
    pub resources: Resources,
    pub walltime_ms: Option<u64>,
    /// `Advisor` when the advisor's numbers are used, `Manifest` for the
    /// fallback.
    pub source: RequestSource,
    pub record: Arc<SizingRecord>,
}

/// What is stored with every attempt of an `auto` task (schema 6).
#[derive(Debug, Clone, PartialEq)]
pub struct SizingRecord {
    /// `gradient_boosting`, `quantile` ...; `None`: no advisor answered.
    pub model: Option<String>,
    pub confidence: Option<f64>,
    /// How the request was made, and any fallback with its reason.
    pub detail: String,
    /// The advisor's upper bounds for this task, used or not.
    pub predicted_memory_bytes: Option<u64>,
    pub predicted_run_time_ms: Option<u64>,
    /// The ResourceAdvisor's (percentile) bounds, for the report's comparison.
    pub percentile_memory_bytes: Option<u64>,
    pub percentile_run_time_ms: Option<u64>,
}

/// A task the shell is asked to size.
#[derive(Debug, Clone)]
pub struct SizeRequest {
    /// The task's templates, to render its features and inputs.
    pub task: RenderRequest,
    pub task_type: String,
    pub spec: AutoResources,
    /// The job's request (the fallback) and walltime.
    pub fallback: Resources,
    pub fallback_walltime_ms: Option<u64>,
}

impl Job {
    /// A task's own request when it differs from the job's: raised after a
    /// memory kill first, else sized by the advisor.
    pub(super) fn request_of(&self, index: u64) -> Option<(&Resources, RequestSource)> {
        if let Some(r) = self.overrides.get(&index) {
            return Some((r, RequestSource::OomRetry));
        }
        let s = self.auto.as_ref()?.sized.get(&index)?;
        Some((&s.resources, s.source))
    }

    /// What the fill pass checks room against before it picks a task.
    pub(super) fn least_request(&self) -> &Resources {
        self.auto.as_ref().map_or(&self.resources, |a| &a.floor)
    }

    /// The walltime a task's attempt runs under.
    pub(super) fn walltime_of(&self, index: u64) -> Option<u64> {
        match &self.auto {
            Some(a) if a.spec.walltime => a
                .sized
                .get(&index)
                .map_or(self.def.walltime_ms, |s| s.walltime_ms),
            _ => self.def.walltime_ms,
        }
    }

    /// The advisor's memory upper bound for a task, if it gave one.
    pub(super) fn predicted_memory(&self, index: u64) -> Option<u64> {
        let s = self.auto.as_ref()?.sized.get(&index)?;
        s.record.predicted_memory_bytes
    }

    /// Whether task `index` must be sized by the shell before it goes on.
    pub(super) fn needs_sizing(&self, index: u64) -> bool {
        self.auto
            .as_ref()
            .is_some_and(|a| !a.sized.contains_key(&index))
    }

    /// What a new attempt of the task stores about its sizing (nothing for
    /// a job without `auto`).
    pub(super) fn sizing_record(&self, index: u64) -> Option<Arc<SizingRecord>> {
        let s = self.auto.as_ref()?.sized.get(&index)?;
        Some(s.record.clone())
    }
}

impl Core {
    /// Whether the job has as many sizings out as it may.
    pub(super) fn sizing_full(&self, job: &Job) -> bool {
        job.auto
            .as_ref()
            .is_some_and(|a| a.sizing.len() >= self.cfg.sizings_max)
    }

    /// Asks the shell to size the task off the core.
    pub(super) fn request_sizing(&mut self, job_id: JobId, index: u64) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        let Some(auto) = job.auto.as_mut() else {
            return;
        };
        auto.sizing.insert(index);
        let job = &self.jobs[&job_id];
        let auto = job.auto.as_ref().expect("checked");
        let run = &self.runs[&job.run];
        self.fx.sizing.push(SizeRequest {
            task: RenderRequest {
                job: job_id,
                index,
                run: run.id,
                run_cwd: run.cwd.clone(),
                def: job.def.clone(),
                templates: job.templates.clone(),
            },
            task_type: auto.task_type.clone(),
            spec: auto.spec,
            fallback: job.resources.clone(),
            fallback_walltime_ms: job.def.walltime_ms,
        });
    }

    /// The shell's sizing of a task: capped by the largest connected agent
    /// that serves the job (a request no agent can hold would wait forever),
    /// kept, and the task queued again.
    pub fn sizing_answer(&mut self, job_id: JobId, index: u64, mut sizing: TaskSizing) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let largest = self
            .agents
            .values()
            .filter(|a| a.serves(job.tag()))
            .map(|a| (a.capacity.cpus, a.capacity.memory_bytes))
            .max_by_key(|c| c.1);
        if let Some((cpus, memory)) = largest {
            let r = &mut sizing.resources;
            r.memory_bytes = r.memory_bytes.min(memory.max(job.resources.memory_bytes));
            r.cpus = r.cpus.min(cpus.max(job.resources.cpus));
        }
        let job = self.jobs.get_mut(&job_id).expect("exists");
        let ready = job.tasks[index as usize].state == TaskState::Ready;
        let Some(auto) = job.auto.as_mut() else {
            return;
        };
        if !auto.sizing.remove(&index) || !ready {
            return; // cancelled meanwhile
        }
        let f = &mut auto.floor;
        f.cpus = f.cpus.min(sizing.resources.cpus);
        f.memory_bytes = f.memory_bytes.min(sizing.resources.memory_bytes);
        auto.sized.insert(index, sizing);
        self.push_requeued(job_id, index);
    }
}
