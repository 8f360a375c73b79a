//! The staging requests of an agent that moves files through an S3 store
//! (`InputsVia`, `CommitVia`; protocol 8): the same answers as the broker
//! transport's `Inputs` and `Commit`, the bytes going through the object
//! store named by the agent's `--storage` (the target's `storage:`).
//!
//! Owns: turning those requests into blocking calls of
//! `crate::staging::s3`. Whose attempt it is was checked by the caller
//! (`staging_io`); it must not touch the control stream, the store or core.

use std::path::Path;
use std::sync::Arc;

use scalable_common::object_store::ObjectStore;
use scalable_common::protocol::AttemptId;
use scalable_common::staging::{Moved, StageReply, StagedFile};

use crate::core::RenderedTask;
use crate::staging::{InputError, StagingStore};

fn refused(reason: impl Into<String>) -> StageReply {
    StageReply::Refused {
        reason: reason.into(),
    }
}

/// The task's inputs, stored here and put in the object store.
pub(super) async fn inputs(
    store: Arc<StagingStore>,
    task: Arc<RenderedTask>,
    storage: String,
) -> StageReply {
    let os = match ObjectStore::parse(&storage) {
        Ok(os) => os,
        Err(why) => return refused(why),
    };
    let done = tokio::task::spawn_blocking(move || {
        let files = store.stage_inputs(Path::new(&task.cwd), &task.inputs)?;
        store
            .push_inputs(&os, &files)
            .map_err(InputError::Refused)?;
        Ok(files)
    })
    .await;
    match done {
        Ok(Ok(files)) => StageReply::Files(files),
        Ok(Err(InputError::Missing(path))) => StageReply::Missing { path },
        Ok(Err(InputError::Refused(reason))) => refused(reason),
        Err(e) => refused(format!("staging inputs failed: {e}")),
    }
}

/// The attempt's outputs, fetched from the object store and materialized in
/// its stage (where the promotion of the counted attempt finds them).
pub(super) async fn commit(
    store: Arc<StagingStore>,
    task: Arc<RenderedTask>,
    attempt: AttemptId,
    storage: String,
    outputs: Vec<StagedFile>,
    moved: Moved,
) -> StageReply {
    let os = match ObjectStore::parse(&storage) {
        Ok(os) => os,
        Err(why) => return refused(why),
    };
    let done = tokio::task::spawn_blocking(move || {
        store.fetch_outputs(&os, &outputs)?;
        store.materialize(Path::new(&task.cwd), attempt, &task.outputs, &outputs)
    })
    .await;
    match done {
        Ok(Ok(())) => {
            tracing::info!(
                "attempt {attempt}: staged through {storage}: {} B in ({} ms), {} B out ({} ms)",
                moved.in_bytes,
                moved.in_ms,
                moved.out_bytes,
                moved.out_ms
            );
            StageReply::Committed
        }
        Ok(Err(why)) => refused(why),
        Err(e) => refused(e.to_string()),
    }
}
