//! Staging through an S3 store (`--storage s3://bucket/prefix`, the target's
//! `storage:`): the broker puts the declared inputs in the store and names
//! them (`InputsVia`); the agent fetches them from there, and puts the
//! declared outputs there before it asks the broker to take them
//! (`CommitVia`), so the bytes never cross the agent's connection.
//!
//! Owns: the agent's half of that exchange. The bytes move through
//! `scalable_common::object_store` (the `aws` CLI) on blocking threads; it
//! must not decide when to stage nor touch the agent's work.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use scalable_common::object_store::{each_at_once, ObjectStore};
use scalable_common::protocol::{AttemptEnd, AttemptId};
use scalable_common::staging::{
    check_files, hash_file, Moved, StageReply, StageRequest, StagedFile,
};

use super::end_of;
use super::transfer::Link;

fn failed(error: impl Into<String>) -> AttemptEnd {
    AttemptEnd::StagingFailed {
        error: error.into(),
    }
}

/// Fetches the attempt's declared inputs from the store into `dir`.
pub async fn stage_in(
    mut link: Link,
    os: Arc<ObjectStore>,
    attempt: AttemptId,
    dir: &Path,
) -> Result<(u64, u64), AttemptEnd> {
    let started = Instant::now();
    let req = StageRequest::InputsVia {
        attempt,
        storage: os.url().to_string(),
    };
    let files = match link.ask_retrying("asking for the inputs", req).await {
        Ok(StageReply::Files(files)) => files,
        Ok(other) => return Err(failed(format!("unexpected staging reply {other:?}"))),
        Err(e) => return Err(end_of(e)),
    };
    check_files(&files).map_err(failed)?;
    let bytes = files.iter().map(|f| f.size).sum();
    let dir = dir.to_path_buf();
    let fetch = move || {
        each_at_once(&files, |f| {
            let dest = dir.join(&f.path);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            os.get(&f.sha256, f.size, &dest).map_err(|e| e.to_string())
        })
    };
    tokio::task::spawn_blocking(fetch)
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;
    Ok((bytes, started.elapsed().as_millis() as u64))
}

/// Puts `(path, declared)` outputs in the store (those not there already)
/// and has the broker take them; returns what moved, in and out.
pub async fn stage_out(
    mut link: Link,
    os: Arc<ObjectStore>,
    attempt: AttemptId,
    sources: Vec<(PathBuf, String)>,
    moved_in: (u64, u64),
) -> Result<Moved, AttemptEnd> {
    let started = Instant::now();
    let store = os.clone();
    let put = move || -> Result<Vec<StagedFile>, String> {
        let mut files = Vec::with_capacity(sources.len());
        for (path, declared) in &sources {
            let (sha256, size) = hash_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.push(StagedFile {
                path: declared.clone(),
                sha256,
                size,
            });
        }
        let pairs: Vec<_> = sources.iter().zip(&files).collect();
        each_at_once(&pairs, |((path, _), f)| {
            store
                .put(path, &f.sha256, f.size)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })?;
        Ok(files)
    };
    let files = tokio::task::spawn_blocking(put)
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;
    let moved = Moved {
        in_bytes: moved_in.0,
        in_ms: moved_in.1,
        out_bytes: files.iter().map(|f| f.size).sum(),
        out_ms: started.elapsed().as_millis() as u64,
    };
    let req = StageRequest::CommitVia {
        attempt,
        storage: os.url().to_string(),
        outputs: files,
        moved,
    };
    match link.ask_retrying("handing back the outputs", req).await {
        Ok(StageReply::Committed) => Ok(moved),
        Ok(other) => Err(failed(format!("unexpected staging reply {other:?}"))),
        Err(e) => Err(end_of(e)),
    }
}
