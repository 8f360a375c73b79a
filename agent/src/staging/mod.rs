//! Staging for an agent without the broker's filesystem (`--no-shared-fs`,
//! SPEC §4 "Data"): each attempt runs in a private directory of its own,
//! `<workdir>/staged/<attempt>/`, its declared inputs fetched there before
//! it starts and its declared outputs handed back to the broker before its
//! result is sent, so a counted result always has its outputs on the broker.
//!
//! Owns: what staging in and out an attempt means (which files, from where,
//! what an error ends the attempt as) and the private directories. The bytes
//! move in [`transfer`]; the session (`session::stage_flow`) decides when.
//! It must not touch the agent's queue or running set.

mod batch;
pub mod checkpoint;
mod local;
pub mod s3;
pub mod transfer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use scalable_common::object_store::ObjectStore;
use scalable_common::protocol::{AttemptEnd, AttemptId};
use scalable_common::stage::{present, stage_dir, staged_path};
use scalable_common::staging::{is_plain_relative, Moved};

use transfer::{Link, TransferError};

/// Where the private directories of staged attempts live, under the workdir.
pub const STAGED_ROOT: &str = "staged";

/// The private directory of `attempt`.
pub fn private_dir(workdir: &Path, attempt: AttemptId) -> PathBuf {
    workdir.join(STAGED_ROOT).join(attempt.to_string())
}

/// How a staging error ends the attempt.
pub fn end_of(e: TransferError) -> AttemptEnd {
    match e {
        TransferError::Missing(path) => AttemptEnd::InvalidInput { path },
        other => AttemptEnd::StagingFailed {
            error: other.to_string(),
        },
    }
}

/// Fetches the attempt's declared inputs into `dir` (created), through the
/// broker or, with `storage`, the object store; returns the bytes and
/// milliseconds it took.
pub async fn stage_in(
    mut link: Link,
    storage: Option<Arc<ObjectStore>>,
    attempt: AttemptId,
    inputs: &[String],
    outputs: &[String],
    dir: &Path,
) -> Result<(u64, u64), AttemptEnd> {
    let started = Instant::now();
    if let Some(p) = inputs.iter().chain(outputs).find(|p| !is_plain_relative(p)) {
        return Err(AttemptEnd::StagingFailed {
            error: format!(
                "{p} is not inside the task's directory; without a shared filesystem declared inputs and outputs are relative paths"
            ),
        });
    }
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| AttemptEnd::StagingFailed {
            error: format!("cannot create {}: {e}", dir.display()),
        })?;
    if inputs.is_empty() {
        return Ok((0, 0));
    }
    if let Some(os) = storage {
        return s3::stage_in(link, os, attempt, dir).await;
    }
    let files = link.input_list(attempt).await.map_err(end_of)?;
    // Tests: the inputs listed, the broker restarts before they are fetched.
    let hit = || scalable_common::failpoint::hit("agent.staging.fetch");
    let _ = tokio::task::spawn_blocking(hit).await;
    let bytes = link.get_all(attempt, &files, dir).await.map_err(end_of)?;
    Ok((bytes, started.elapsed().as_millis() as u64))
}

/// Hands the attempt's declared outputs (staged, or written in place) back
/// to the broker and commits them; returns what moved, in and out.
pub async fn stage_out(
    mut link: Link,
    storage: Option<Arc<ObjectStore>>,
    attempt: AttemptId,
    dir: &Path,
    outputs: &[String],
    moved_in: (u64, u64),
) -> Result<Moved, AttemptEnd> {
    let started = Instant::now();
    let stage = stage_dir(dir, attempt);
    let sources = outputs
        .iter()
        .map(|o| match staged_path(&stage, o) {
            Some(p) if present(&p) => (p, o.clone()),
            _ => (dir.join(o), o.clone()),
        })
        .collect();
    if let Some(os) = storage {
        return s3::stage_out(link, os, attempt, sources, moved_in).await;
    }
    let files = link.put_all(attempt, sources).await.map_err(end_of)?;
    let bytes = files.iter().map(|f| f.size).sum();
    let moved = Moved {
        in_bytes: moved_in.0,
        in_ms: moved_in.1,
        out_bytes: bytes,
        out_ms: started.elapsed().as_millis() as u64,
    };
    link.commit(attempt, &files, moved).await.map_err(end_of)?;
    Ok(moved)
}
