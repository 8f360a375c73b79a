//! The work a plan sizes for, per plan row (tag): how many tasks, how many
//! cpus each asks, and how long one runs, each with where it came from
//! (the workflow, the measured history, the manifest, or an assumption).
//!
//! Pure; it must not choose worker counts (`choose` does).

use std::collections::BTreeMap;

use scalable_common::manifest::Manifest;
use scalable_common::workflow::WorkflowDef;
use serde::Serialize;

use super::History;
use crate::pilots::PlanRow;

/// A task's run time when neither history nor a walltime says (an hour).
pub const ASSUMED_RUN_SECONDS: f64 = 3_600.0;

/// Where a figure of the plan came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkSource {
    /// Measured: medians of the store's successful attempts or pilot waits.
    History,
    /// The `--workflow` file's jobs.
    Workflow,
    /// The manifest (a task binding's walltime, or one wave of the maximum).
    Manifest,
    /// Nothing said: the default.
    #[default]
    Assumed,
}

/// One row's work.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Work {
    pub tasks: u64,
    pub tasks_source: WorkSource,
    /// The cpus one task asks (the most any of its jobs asks).
    pub task_cpus: u32,
    pub run_seconds: f64,
    pub run_source: WorkSource,
}

/// The work per row tag: the workflow's jobs on each row (by the job's tag
/// or its task binding's component), else one wave of each row's maximum;
/// run times from history by tag, else the longest walltime the manifest or
/// workflow gives the row's jobs, else [`ASSUMED_RUN_SECONDS`].
pub fn work_per_tag(
    m: &Manifest,
    rows: &[PlanRow],
    workflow: Option<&WorkflowDef>,
    history: Option<&History>,
) -> BTreeMap<String, Work> {
    let mut out: BTreeMap<String, Work> = BTreeMap::new();
    for row in rows {
        let mut w = Work {
            task_cpus: row.cpus.max(1),
            ..Work::default()
        };
        let mut walltime_ms: Option<u64> = None;
        let mut measured: Option<f64> = None;
        if let Some(wf) = workflow {
            w.tasks_source = WorkSource::Workflow;
            w.task_cpus = 0;
            for job in &wf.jobs {
                let binding = job.task.as_ref().and_then(|t| m.tasks.get(t));
                let tag = job
                    .tag
                    .clone()
                    .or_else(|| binding.map(|b| b.component.clone()));
                if !on_row(row, rows.len(), tag.as_deref()) {
                    continue;
                }
                w.tasks = w.tasks.saturating_add(job.items.count_saturating());
                let comp = tag.as_deref().and_then(|t| m.components.get(t));
                let cpus = job.resources.cpus.or(comp.map(|c| c.cpus)).unwrap_or(1);
                w.task_cpus = w.task_cpus.max(cpus);
                let wt = job.walltime_ms.or(binding.and_then(|b| b.walltime_ms));
                walltime_ms = walltime_ms.max(wt);
                let h = history.and_then(|h| h.run_seconds.get(tag.as_deref().unwrap_or("*")));
                measured = longest(measured, h.copied());
            }
            w.task_cpus = w.task_cpus.max(1);
        } else {
            w.tasks_source = WorkSource::Manifest;
            w.tasks = u64::from(row.max_workers) * u64::from(slots(row, w.task_cpus));
            for b in m
                .tasks
                .values()
                .filter(|b| on_row(row, rows.len(), Some(&b.component)))
            {
                walltime_ms = walltime_ms.max(b.walltime_ms);
                let h = history.and_then(|h| h.run_seconds.get(&b.component));
                measured = longest(measured, h.copied());
            }
            // A generic pool's tasks are measured untagged (`*`).
            let key = if row.tag.starts_with('(') {
                "*"
            } else {
                row.tag.as_str()
            };
            if let Some(h) = history.and_then(|h| h.run_seconds.get(key)) {
                measured = longest(measured, Some(*h));
            }
        }
        (w.run_seconds, w.run_source) = match (measured, walltime_ms) {
            (Some(s), _) => (s, WorkSource::History),
            (None, Some(ms)) => (ms as f64 / 1000.0, WorkSource::Manifest),
            (None, None) => (ASSUMED_RUN_SECONDS, WorkSource::Assumed),
        };
        out.insert(row.tag.clone(), w);
    }
    out
}

/// The longer of two known run times.
fn longest(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Whether a job of `tag` runs on `row`: its own tag's row, or the one pool
/// of a target with a single generic or multi-tag row.
fn on_row(row: &PlanRow, rows: usize, tag: Option<&str>) -> bool {
    match tag {
        Some(t) if row.tag == t => true,
        Some(t) if rows == 1 => row.tag.split(',').any(|r| r == t) || row.tag.starts_with('('),
        None => rows == 1,
        _ => false,
    }
}

/// Tasks of `task_cpus` one worker of `row` runs at once: a component's
/// pilot is sized like one task; a pool of N cpus runs N / cpus.
pub(super) fn slots(row: &PlanRow, task_cpus: u32) -> u32 {
    if row.cpus == 0 {
        1
    } else {
        (row.cpus / task_cpus.max(1)).max(1)
    }
}
