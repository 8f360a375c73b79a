//! Rendering the tasks of jobs with costly templates (`core::render`), off
//! the core task, one render per thread, each under a deadline.
//!
//! A template's fuel bounds its instructions, not their cost (a string
//! repeated to 100 MB is one instruction), so only a clock bounds a render.
//! A thread cannot be stopped, so a render past its deadline is answered at
//! once as a failure and its thread left to finish on its own. A job whose
//! renders overran [`OVERRUNS_PER_JOB_MAX`] times is marked, and its later
//! tasks fail without rendering, so one template leaves at most that many
//! such threads (one bad item does not fail its siblings). An overrunning thread gives its render
//! slot back (other renders must not queue behind it for minutes) and holds
//! one of [`OVERRUNS_MAX`] instead; past that many it keeps its slot. Render
//! threads run at a lower priority and a few at a time, so they take cpu
//! from the core only when it idles.
//!
//! Must not decide anything about the task: the core turns the answer into
//! a queued task or a failed attempt (`Core::render_answer`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scalable_common::protocol::JobId;
use scalable_common::template::TEMPLATE_BUDGET_HINT;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::CoreMsg;
use crate::core::render::render_request;
use crate::core::{RenderRequest, RenderedTask};

/// How long one task's templates may take to render.
pub(super) const RENDER_TIME_MAX: Duration = Duration::from_secs(2);

/// Overruns after which a job's later tasks fail without rendering.
const OVERRUNS_PER_JOB_MAX: u32 = 3;

/// Overrunning render threads alive at once that no longer hold a slot.
const OVERRUNS_MAX: usize = 4;

/// Niceness of render threads: the core task and the agents' I/O come first.
const RENDER_NICE: libc::c_int = 10;

/// Renders at once: half the cores, at least one.
fn renders_at_once() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The renders in flight and the jobs whose template overran its deadline.
#[derive(Clone)]
pub(super) struct Renderer {
    deadline: Duration,
    slots: Arc<Semaphore>,
    overruns: Arc<Semaphore>,
    overran: Arc<Mutex<HashMap<JobId, u32>>>,
}

/// The permit a render thread holds until it ends: a render slot, then,
/// past its deadline, an overrun's.
type Held = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

impl Renderer {
    pub(super) fn new() -> Renderer {
        Renderer::with(RENDER_TIME_MAX, renders_at_once())
    }

    fn with(deadline: Duration, slots: usize) -> Renderer {
        Renderer {
            deadline,
            slots: Arc::new(Semaphore::new(slots)),
            overruns: Arc::new(Semaphore::new(OVERRUNS_MAX)),
            overran: Arc::new(Mutex::new(HashMap::new())),
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
            return Err(overran_message(false, self.deadline));
        }
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the broker is stopping".to_string())?;
        // Marked while this render waited for its slot.
        if self.has_overran(job) {
            return Err(overran_message(false, self.deadline));
        }
        let held: Held = Arc::new(Mutex::new(Some(permit)));
        let in_thread = held.clone();
        let (tx, rx) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("render".into())
            .spawn(move || {
                lower_priority();
                let _ = tx.send(render_request(&req));
                // Frees whichever permit the thread holds by now.
                lock(&in_thread).take();
            });
        if let Err(e) = spawned {
            return Err(format!("cannot start a render thread: {e}"));
        }
        match tokio::time::timeout(self.deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the template render failed unexpectedly".into()),
            Err(_) => {
                *lock(&self.overran).entry(job).or_default() += 1;
                self.release_slot(&held);
                Err(overran_message(true, self.deadline))
            }
        }
    }

    /// Whether the job's renders overran too often to try another.
    fn has_overran(&self, job: JobId) -> bool {
        lock(&self.overran).get(&job).copied().unwrap_or(0) >= OVERRUNS_PER_JOB_MAX
    }

    /// An overrunning thread trades its render slot for an overrun permit,
    /// when one is free and the thread has not ended meanwhile.
    fn release_slot(&self, held: &Held) {
        let mut held = lock(held);
        if held.is_some() {
            if let Ok(overrun) = self.overruns.clone().try_acquire_owned() {
                *held = Some(overrun); // drops the slot's permit
            }
        }
    }
}

/// A poisoned lock still guards plain data: take it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The failure of a task whose render overran (`this_task`), or of a later
/// task of the same job.
fn overran_message(this_task: bool, deadline: Duration) -> String {
    let secs = deadline.as_secs_f64();
    let what = if this_task {
        format!("rendering this task's templates took over {secs} s")
    } else {
        format!(
            "{OVERRUNS_PER_JOB_MAX} earlier tasks of this job took over {secs} s to render their templates"
        )
    };
    format!("template error: {what} (hint: {TEMPLATE_BUDGET_HINT})")
}

/// Runs this thread at [`RENDER_NICE`]; on failure it simply keeps the
/// broker's priority.
fn lower_priority() {
    // SAFETY: neither call takes a pointer; on Linux a thread id names the
    // calling thread alone. The raw syscall, not glibc's `gettid()` wrapper:
    // that needs glibc 2.30, and the dist build links against 2.17.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, RENDER_NICE);
    }
}

#[cfg(test)]
mod tests {
    use scalable_common::workflow::{quick_job, Items, JobTemplates};

    use super::*;

    fn request(job: JobId, index: u64, template: &str) -> RenderRequest {
        let items = Items::Range { start: 1, end: 10 };
        let def = quick_job("j", vec!["echo".into(), template.into()], items);
        RenderRequest {
            job,
            index,
            run: 1,
            run_cwd: "/w".into(),
            templates: Arc::new(JobTemplates::compile(&def).expect("compiles")),
            def: Arc::new(def),
        }
    }

    /// The answers the core would get, in order of arrival.
    async fn answers(
        rx: &mut mpsc::UnboundedReceiver<CoreMsg>,
        n: usize,
    ) -> Vec<(JobId, Result<RenderedTask, String>)> {
        let mut out = Vec::new();
        while out.len() < n {
            match rx.recv().await {
                Some(CoreMsg::Rendered { job, result, .. }) => out.push((job, result)),
                Some(_) => {}
                None => break,
            }
        }
        out
    }

    #[test]
    fn the_messages_name_the_deadline_and_the_hint() {
        assert!(
            overran_message(true, RENDER_TIME_MAX).contains("this task's templates took over 2 s")
        );
        assert!(overran_message(false, RENDER_TIME_MAX).contains("3 earlier tasks of this job"));
        assert!(overran_message(false, RENDER_TIME_MAX).contains(TEMPLATE_BUDGET_HINT));
    }

    /// One slot: a render that overruns gives it back, so a render queued
    /// behind it goes on at once; after its third overrun the job's next task
    /// fails without rendering.
    #[tokio::test]
    async fn an_overrun_fails_its_job_and_frees_its_slot() {
        let renderer = Renderer::with(Duration::from_millis(200), 1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Some 2 s of work in a debug build, far past the deadline.
        let runaway = "{% for i in range(60) %}{{ ('ab' * 50000000) | length }}{% endfor %}";
        renderer.spawn(request(1, 0, runaway), tx.downgrade());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        renderer.spawn(
            request(2, 0, "{% for i in range(3) %}{{ i }}{% endfor %}"),
            tx.downgrade(),
        );
        let got = answers(&mut rx, 2).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(got[0].0, 1);
        let err = got[0].1.as_ref().expect_err("overran");
        assert!(
            err.contains("this task's templates took over 0.2 s"),
            "{err}"
        );
        assert_eq!(got[1].0, 2);
        assert_eq!(
            got[1].1.as_ref().expect("rendered").argv,
            vec!["echo", "012"]
        );
        for index in 1..3 {
            renderer.spawn(request(1, index, runaway), tx.downgrade());
            let got = answers(&mut rx, 1).await;
            let err = got[0].1.as_ref().expect_err("overran");
            assert!(err.contains("this task's templates took over"), "{err}");
        }
        renderer.spawn(request(1, 3, runaway), tx.downgrade());
        let got = answers(&mut rx, 1).await;
        let err = got[0].1.as_ref().expect_err("marked");
        assert!(err.contains("3 earlier tasks of this job"), "{err}");
    }
}
