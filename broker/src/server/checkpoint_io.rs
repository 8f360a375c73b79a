//! Checkpoints of agents without a shared filesystem (SPEC §4
//! `checkpoint:`, protocol 8) on their staging streams: the newest kept
//! version handed to an attempt before it starts, and the snapshots an
//! attempt uploads while it runs sealed as its version.
//!
//! Owns: answering `CheckpointRestore`, `CheckpointPut` and
//! `CheckpointSeal`, and the upload area of checkpoints
//! (`<state>/checkpoint-uploads`, a blob store of its own: snapshots change
//! often and are dropped on success, so they stay out of the cache's blobs).
//! Whose attempt it is and its paths come from the core
//! (`CoreMsg::CheckpointLookup`); versions are written by
//! `crate::checkpoints`. File work runs on blocking threads. It must not
//! decide which attempt keeps what (the core's `CheckpointOp`s do).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use scalable_common::protocol::{AttemptId, TaskId};
use scalable_common::staging::{StageReply, StageRequest, StagedFile};

use super::staging_io::{self, grant, put, refused, Ctx};
use super::CoreMsg;
use crate::checkpoints::CheckpointStore;
use crate::staging::{InputError, Limits, StagingStore};

/// The versions and the upload area, shared by every agent connection.
pub struct CheckpointIo {
    pub versions: Arc<dyn CheckpointStore>,
    uploads: Arc<StagingStore>,
}

impl CheckpointIo {
    /// `versions` is the broker's `CheckpointStore` (the one the core task
    /// applies `CheckpointOp`s to); uploads land under `uploads`.
    pub fn new(versions: Arc<dyn CheckpointStore>, uploads: &Path) -> Arc<CheckpointIo> {
        let uploads = StagingStore::new(uploads, Limits::from_env());
        Arc::new(CheckpointIo {
            versions,
            uploads: Arc::new(uploads),
        })
    }
}

/// One checkpoint request; `None` when the answer was already sent.
pub(super) async fn serve(
    ctx: &Ctx,
    req: StageRequest,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Option<StageReply> {
    match req {
        StageRequest::CheckpointRestore { attempt } => Some(restore(ctx, attempt).await),
        StageRequest::CheckpointPut {
            attempt,
            sha256,
            size,
        } => {
            let uploads = ctx.checkpoints.uploads.clone();
            Some(put(ctx, &uploads, (attempt, &sha256, size), send, recv).await)
        }
        StageRequest::CheckpointSeal {
            attempt,
            seq,
            files,
        } => Some(seal(ctx, attempt, seq, files).await),
        other => Some(refused(format!("unexpected staging request {other:?}"))),
    }
}

/// The task and checkpoint paths of `attempt`, when it is current on this
/// agent.
async fn checkpoint_of(ctx: &Ctx, attempt: AttemptId) -> Result<(TaskId, Vec<String>), StageReply> {
    staging_io::ask_core(ctx, attempt, |agent, attempt, reply| {
        CoreMsg::CheckpointLookup {
            agent,
            attempt,
            reply,
        }
    })
    .await
}

/// The newest kept version's files, stored as blobs the agent may fetch
/// (the input path: same bounds, same dedup).
async fn restore(ctx: &Ctx, attempt: AttemptId) -> StageReply {
    let (task, paths) = match checkpoint_of(ctx, attempt).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    if paths.is_empty() {
        return StageReply::Checkpoint {
            paths,
            files: Vec::new(),
        };
    }
    let (versions, store) = (ctx.checkpoints.versions.clone(), ctx.store.clone());
    let staged = tokio::task::spawn_blocking(move || -> Result<Vec<StagedFile>, String> {
        let Some((dir, rels)) = versions.newest_files(task).map_err(|e| e.to_string())? else {
            return Ok(Vec::new());
        };
        store.stage_inputs(&dir, &rels).map_err(|e| match e {
            InputError::Missing(p) => format!("{p} vanished from the kept checkpoint"),
            InputError::Refused(why) => why,
        })
    })
    .await;
    match staged {
        Ok(Ok(files)) => {
            for f in &files {
                grant(ctx, &f.sha256);
            }
            let total = files.iter().map(|f| f.size).fold(0, u64::saturating_add);
            ctx.board
                .expect(attempt, super::transfer_board::Direction::In, total);
            if !files.is_empty() {
                tracing::info!("task {task}: attempt {attempt} fetches the kept checkpoint");
            }
            StageReply::Checkpoint { paths, files }
        }
        Ok(Err(why)) => refused(format!("checkpoint of task {task} not restored: {why}")),
        Err(e) => refused(format!("checkpoint of task {task} not restored: {e}")),
    }
}

/// Every file of a snapshot uploaded: it becomes the attempt's version, and
/// the uploaded blobs go (the version holds its own copy).
async fn seal(ctx: &Ctx, attempt: AttemptId, seq: u64, files: Vec<StagedFile>) -> StageReply {
    let (task, paths) = match checkpoint_of(ctx, attempt).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let uploads = ctx.checkpoints.uploads.clone();
    if let Some(f) = files.iter().find(|f| !uploads.has_blob(&f.sha256)) {
        return refused(format!("checkpoint file {} was not uploaded", f.path));
    }
    if let Some(f) = files.iter().find(|f| !under_any(&f.path, &paths)) {
        return refused(format!(
            "{} is not under the job's checkpoint paths {paths:?}",
            f.path
        ));
    }
    let versions = ctx.checkpoints.versions.clone();
    let sealed = tokio::task::spawn_blocking(move || {
        let blobs: Vec<(PathBuf, String)> = files
            .iter()
            .map(|f| (uploads.blob_path(&f.sha256), f.path.clone()))
            .collect();
        let bytes = versions.seal(task, attempt, seq, &blobs)?;
        // Another task's snapshot with the same bytes may lose its blob
        // here: its seal is refused and its next snapshot uploads it again.
        for (blob, _) in &blobs {
            let _ = std::fs::remove_file(blob);
        }
        uploads.uploads_done(attempt);
        Ok::<u64, std::io::Error>(bytes)
    })
    .await;
    match sealed {
        Ok(Ok(bytes)) => {
            tracing::debug!(
                "task {task}: snapshot {seq} of attempt {attempt} kept ({bytes} bytes)"
            );
            StageReply::Sealed
        }
        Ok(Err(e)) => refused(format!("checkpoint of attempt {attempt} not kept: {e}")),
        Err(e) => refused(format!("checkpoint of attempt {attempt} not kept: {e}")),
    }
}

/// Whether `path` is one of `paths` or lies under one of them.
fn under_any(path: &str, paths: &[String]) -> bool {
    let p = Path::new(path);
    paths.iter().any(|c| p.starts_with(Path::new(c)))
}

#[cfg(test)]
mod tests {
    use super::under_any;

    #[test]
    fn only_files_under_the_checkpoint_paths_are_sealed() {
        let paths = vec!["ckpt".to_string(), "state.json".to_string()];
        assert!(under_any("ckpt/n", &paths));
        assert!(under_any("state.json", &paths));
        assert!(!under_any("ckpt2/n", &paths));
        assert!(!under_any("out.txt", &paths));
    }
}
