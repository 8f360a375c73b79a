//! A task's templates rendered: argv, env, working directory, inputs and
//! outputs, everything the assignment, the cache probe and the promotion of
//! outputs read.
//!
//! Cheap templates (`JobTemplates::is_costly` false: `{{ item }}`,
//! `{{ index + 1 }}`) render here, inline, when they are needed. A job with a
//! costly template has its tasks rendered by the shell, off the core, with a
//! deadline: like a cache probe, a ready task is asked for (`fx.render`),
//! waits `rendering`, and comes back with `Core::render_answer`; the result is
//! kept until the task ends, so a retry, the probe and the promotion never
//! render it again on the core. Must not time anything (the shell's deadline
//! is the only clock a render has) nor run a costly template inline, except
//! after a broker restart for an attempt already out (see `task_render`).

use std::sync::Arc;

use scalable_common::protocol::{JobId, RunId};
use scalable_common::workflow::{JobDef, JobTemplates};

use super::effects::RenderRequest;
use super::model::{Job, RenderedTask, Run, TaskState};
use super::Core;

/// Renders the task the shell was asked for (pure: the shell calls it on a
/// blocking thread, under its deadline).
pub fn render_request(req: &RenderRequest) -> Result<RenderedTask, String> {
    render_task(&req.def, &req.templates, req.index, req.run, &req.run_cwd)
}

/// Renders task `index` of a job; the first template that fails says why.
pub fn render_task(
    def: &JobDef,
    templates: &JobTemplates,
    index: u64,
    run: RunId,
    run_cwd: &str,
) -> Result<RenderedTask, String> {
    let argv = templates.argv(def, index, run)?;
    let outputs = templates.outputs(def, index, run)?;
    let env = templates.env(def, index, run)?;
    let cwd = match templates.workdir(def, index, run)? {
        Some(w) if w.starts_with('/') => w,
        Some(w) => format!("{}/{}", run_cwd.trim_end_matches('/'), w),
        None => run_cwd.to_string(),
    };
    let inputs = templates.inputs(def, index, run).unwrap_or_default();
    Ok(RenderedTask {
        argv,
        env,
        cwd,
        inputs,
        outputs,
    })
}

/// Task `index` of `job` rendered: kept from the shell's answer, else inline.
/// Inline for a costly job happens only for an attempt restored after a
/// broker restart (its render was not kept); bounded by the template budget.
pub(super) fn task_render(run: &Run, job: &Job, index: u64) -> Result<Arc<RenderedTask>, String> {
    match job.rendered.get(&index) {
        Some(r) => r.clone(),
        None => render_task(&job.def, &job.templates, index, run.id, &run.cwd).map(Arc::new),
    }
}

impl Core {
    /// Whether task `index` must be rendered by the shell before it goes on.
    pub(super) fn needs_render(&self, job_id: JobId, index: u64) -> bool {
        let job = &self.jobs[&job_id];
        job.templates.is_costly() && !job.rendered.contains_key(&index)
    }

    /// Asks the shell to render the task off the core.
    pub(super) fn request_render(&mut self, job_id: JobId, index: u64) {
        let job = self.jobs.get_mut(&job_id).expect("exists");
        job.rendering.insert(index);
        let job = &self.jobs[&job_id];
        let run = &self.runs[&job.run];
        self.fx.render.push(RenderRequest {
            job: job_id,
            index,
            run: run.id,
            run_cwd: run.cwd.clone(),
            def: job.def.clone(),
            templates: job.templates.clone(),
        });
    }

    /// The shell's render of a task: kept, and the task queued again. A
    /// failed render is kept too: the task's next attempt fails with it,
    /// recorded like any template error.
    pub fn render_answer(
        &mut self,
        job_id: JobId,
        index: u64,
        result: Result<RenderedTask, String>,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if !job.rendering.remove(&index) || job.tasks[index as usize].state != TaskState::Ready {
            return; // cancelled meanwhile
        }
        job.rendered.insert(index, result.map(Arc::new));
        self.push_requeued(job_id, index);
    }
}
