//! Rendering the tasks of jobs with costly templates (`core::render`), off
//! the core task, one render per thread, each under a deadline.
//!
//! A template's fuel bounds its instructions, not their cost (a string
//! repeated to 100 MB is one instruction), so only a clock bounds a render.
//! A thread cannot be stopped, so a render past its deadline is answered at
//! once as a failure and its thread left to finish on its own; the job is
//! then marked, and its later tasks fail without rendering, so one template
//! leaves at most one such thread. Render threads run at a lower priority
//! and a few at a time, so they take cpu from the core only when it idles.
//!
//! Must not decide anything about the task: the core turns the answer into
//! a queued task or a failed attempt (`Core::render_answer`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scalable_common::protocol::JobId;
use scalable_common::template::TEMPLATE_BUDGET_HINT;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::CoreMsg;
use crate::core::render::render_request;
use crate::core::{RenderRequest, RenderedTask};

/// How long one task's templates may take to render.
pub(super) const RENDER_TIME_MAX: Duration = Duration::from_secs(2);

/// Niceness of render threads: the core task and the agents' I/O come first.
const RENDER_NICE: libc::c_int = 10;

/// Renders at once: half the cores, at least one.
fn renders_at_once() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The renders in flight and the jobs whose template overran its deadline.
#[derive(Clone)]
pub(super) struct Renderer {
    slots: Arc<Semaphore>,
    overran: Arc<Mutex<HashSet<JobId>>>,
}

impl Renderer {
    pub(super) fn new() -> Renderer {
        Renderer {
            slots: Arc::new(Semaphore::new(renders_at_once())),
            overran: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Renders `req` and tells the core (`CoreMsg::Rendered`).
    pub(super) fn spawn(&self, req: RenderRequest, to_core: mpsc::WeakUnboundedSender<CoreMsg>) {
        let this = self.clone();
        tokio::spawn(async move {
            let (job, index) = (req.job, req.index);
            let result = this.render(req).await;
            if let Some(tx) = to_core.upgrade() {
                let _ = tx.send(CoreMsg::Rendered { job, index, result });
            }
        });
    }

    async fn render(&self, req: RenderRequest) -> Result<RenderedTask, String> {
        let job = req.job;
        if self.has_overran(job) {
            return Err(overran_message(false));
        }
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the broker is stopping".to_string())?;
        let (tx, rx) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("render".into())
            .spawn(move || {
                lower_priority();
                let _ = tx.send(render_request(&req));
                // The slot is free only when the thread is, deadline or not.
                drop(permit);
            });
        if let Err(e) = spawned {
            return Err(format!("cannot start a render thread: {e}"));
        }
        match tokio::time::timeout(RENDER_TIME_MAX, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the template render failed unexpectedly".into()),
            Err(_) => {
                self.overran
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(job);
                Err(overran_message(true))
            }
        }
    }

    fn has_overran(&self, job: JobId) -> bool {
        self.overran
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&job)
    }
}

/// The failure of a task whose render overran (`this_task`), or of a later
/// task of the same job.
fn overran_message(this_task: bool) -> String {
    let secs = RENDER_TIME_MAX.as_secs_f64();
    let what = if this_task {
        format!("rendering this task's templates took over {secs} s")
    } else {
        format!("an earlier task of this job took over {secs} s to render its templates")
    };
    format!("template error: {what} (hint: {TEMPLATE_BUDGET_HINT})")
}

/// Runs this thread at [`RENDER_NICE`]; on failure it simply keeps the
/// broker's priority.
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers; on Linux a thread id
    // names the calling thread alone.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, RENDER_NICE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_messages_name_the_deadline_and_the_hint() {
        assert!(overran_message(true).contains("this task's templates took over 2 s"));
        assert!(overran_message(false).contains("an earlier task of this job"));
        assert!(overran_message(false).contains(TEMPLATE_BUDGET_HINT));
    }
}
