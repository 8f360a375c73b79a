//! A broker restart: the store's rows become a core again. Runs are re-planned
//! from their stored definitions (`submit::replan`), then `Core::restore` puts
//! tasks, open attempts and restored agents back (see `core::restore`).

use crate::core::restore::{RestoredJob, RestoredRun};
use crate::core::{Core, CoreConfig, Ids};
use crate::store::Loaded;
use crate::submit;

/// Rebuilds the core from what the store loaded (a fresh store gives an empty core).
pub fn restore_core(cfg: CoreConfig, ids: Ids, loaded: Loaded, now_ms: u64) -> Core {
    let mut runs = Vec::with_capacity(loaded.runs.len());
    for r in loaded.runs {
        let (def, planned) = match submit::replan(&r.definition, &r.source) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("run {} cannot be restored: {e}", r.id);
                continue;
            }
        };
        if planned.len() != r.jobs.len() {
            tracing::error!(
                "run {} cannot be restored: its jobs do not match its definition",
                r.id
            );
            continue;
        }
        runs.push(RestoredRun {
            id: r.id,
            name: r.name,
            submitted_at_ms: r.submitted_at_ms,
            finished_at_ms: r.finished_at_ms,
            state: r.state,
            cwd: r.cwd,
            max_fails: def.max_fails,
            jobs: r
                .jobs
                .into_iter()
                .zip(planned)
                .map(|(j, planned)| RestoredJob {
                    id: j.id,
                    first_task: j.first_task,
                    cancel_marked: j.cancel_marked,
                    cancel_cause: j.cancel_cause,
                    planned,
                })
                .collect(),
        });
    }
    let (core, s) = Core::restore(cfg, ids, runs, loaded.snapshot, now_ms);
    if s.runs > 0 {
        tracing::info!(
            "restored {} runs ({} running), {} task rows, {} attempts in flight on {} agents that have {} ms to reclaim them",
            s.runs,
            s.running_runs,
            s.tasks_with_rows,
            s.open_attempts,
            s.restored_agents,
            core.config().reclaim_window_ms
        );
    }
    core
}
