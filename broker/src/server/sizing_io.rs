//! Sizing the tasks of `auto` jobs (`core::sizing`) off the core task: on a
//! blocking thread, each task's features and its declared inputs' total
//! size are read, the advisor table asked, and the answers sent back to the
//! core in one message per batch.
//!
//! Must not decide the request (`advisor::auto` does) nor train (the table
//! trains on its own threads; a batch waits at most `FIRST_TRAINING_WAIT`
//! for the first training of a task type, and only its own tasks wait).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::CoreMsg;
use crate::advisor::auto;
use crate::advisor::history::INPUT_BYTES;
use crate::advisor::sample::{features_of, Feature, Features};
use crate::advisor::table::AdvisorTable;
use crate::core::render::render_request;
use crate::core::{SizeRequest, TaskSizing};

/// How long the first sizing of a task type waits for its advisor's first
/// training; past it, its tasks take their fallback.
pub(super) const FIRST_TRAINING_WAIT: Duration = Duration::from_secs(10);

/// Sizes `reqs` and tells the core (`CoreMsg::Sized`).
pub(super) fn spawn(
    reqs: Vec<SizeRequest>,
    table: Arc<AdvisorTable>,
    to_core: mpsc::WeakUnboundedSender<CoreMsg>,
) {
    tokio::task::spawn_blocking(move || {
        let answers: Vec<(u64, u64, TaskSizing)> = reqs
            .iter()
            .map(|r| (r.task.job, r.task.index, size_one(r, &table)))
            .collect();
        if let Some(tx) = to_core.upgrade() {
            let _ = tx.send(CoreMsg::Sized(answers));
        }
    });
}

fn size_one(req: &SizeRequest, table: &Arc<AdvisorTable>) -> TaskSizing {
    let advisor = table.get(&req.task_type, FIRST_TRAINING_WAIT);
    let percentile = advisor.as_ref().ok().and_then(|a| a.percentile());
    let advice = advisor.and_then(|a| {
        a.recommend(None, &task_features(req))
            .map_err(|e| e.to_string())
    });
    auto::size(req, advice.as_ref().map_err(Clone::clone), percentile)
}

/// The task's features as the advisors learned them: its job's `features:`
/// rendered for it, and `input_bytes` when it declares inputs.
fn task_features(req: &SizeRequest) -> Features {
    let t = &req.task;
    let mut features = t
        .templates
        .features(&t.def, t.index, t.run)
        .map(|pairs| features_of(&pairs))
        .unwrap_or_default();
    if !t.def.inputs.is_empty() {
        if let Ok(r) = render_request(t) {
            let total: u64 = r.inputs.iter().map(|p| input_size(&r.cwd, p)).sum();
            features
                .entry(INPUT_BYTES.to_string())
                .or_insert(Feature::Number(total as f64));
        }
    }
    features
}

/// A declared input's size as the agent records it: 0 for anything but a
/// regular file (or a missing one).
fn input_size(cwd: &str, path: &str) -> u64 {
    std::fs::metadata(Path::new(cwd).join(path))
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len())
}
