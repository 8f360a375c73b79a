//! A whole probe and record in one blocking call over a connection: the
//! cache's behaviour end to end, as its tests drive it (the broker's shell
//! does the same steps off its core task, in `server::cache_io`).
//!
//! Must not decide a task's state.

use std::path::{Path, PathBuf};

use super::{
    compute_key, explain_change, insert, latest_for, lookup, Blobs, CacheError, CacheKey, Entry,
};

/// What the broker asks before running a task with `cache: true`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRequest {
    pub workflow: String,
    pub job: String,
    pub idx: u64,
    pub argv: Vec<String>,
    pub image: Option<String>,
    pub env: Vec<(String, String)>,
    /// The task's working directory; relative inputs and outputs are in it.
    pub cwd: PathBuf,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// The answer to a [`ProbeRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// Mark the task `cached`: its outputs are in place (`restored` files were
    /// written, the rest already matched), copied from `from_task`'s run.
    Hit {
        key: CacheKey,
        from_task: u64,
        restored: u32,
    },
    /// Run the task; on success, [`record_success`] with this key. `why` is
    /// for `why TASK`: "no earlier run of this task" or "cache miss: …".
    Miss { key: CacheKey, why: String },
    /// No key could be computed (a missing input) or the table could not be
    /// read: run the task and record nothing. The run itself reports a missing
    /// input (INVALID_INPUT).
    Unavailable { why: String },
}

/// Computes the task's key and, on a hit whose outputs are all still in the
/// blob store, restores them. Blocking: it hashes every input.
pub fn probe(conn: &rusqlite::Connection, blobs: &Blobs, req: &ProbeRequest) -> ProbeAnswer {
    let key = match compute_key(
        &req.argv,
        req.image.as_deref(),
        &req.env,
        &req.cwd,
        &req.inputs,
    ) {
        Ok(k) => k,
        Err(e) => {
            return ProbeAnswer::Unavailable {
                why: format!("cache unavailable: {e}"),
            }
        }
    };
    let entry = match lookup(conn, &key.key) {
        Ok(e) => e,
        Err(e) => {
            return ProbeAnswer::Unavailable {
                why: format!("cache unavailable: {}", CacheError::Sql(e)),
            }
        }
    };
    let Some(entry) = entry else {
        let why = match latest_for(conn, &req.workflow, &req.job, req.idx) {
            Ok(None) => "no earlier run of this task".to_string(),
            Ok(Some(prev)) => {
                let changes = explain_change(&prev.parts, &key);
                if changes.is_empty() {
                    "cache miss: no entry for this key".to_string()
                } else {
                    format!("cache miss: {}", changes.join(", "))
                }
            }
            Err(e) => format!("cache miss: the earlier run is unreadable ({e})"),
        };
        return ProbeAnswer::Miss { key, why };
    };
    // The key does not cover which outputs are declared: an output declared
    // since the cached run was saved cannot be restored.
    if let Some(p) = req
        .outputs
        .iter()
        .find(|p| !entry.outputs.iter().any(|o| &o.path == *p))
    {
        let why = format!("cache miss: output {p} was not saved by the cached run");
        return ProbeAnswer::Miss { key, why };
    }
    if let Some(o) = entry.outputs.iter().find(|o| !blobs.contains(&o.sha256)) {
        let why = format!(
            "cache miss: the saved copy of output {} is gone from the cache directory",
            o.path
        );
        return ProbeAnswer::Miss { key, why };
    }
    match blobs.restore_outputs(&req.cwd, &entry.outputs) {
        Ok(restored) => ProbeAnswer::Hit {
            key,
            from_task: entry.task_id,
            restored,
        },
        Err(e) => ProbeAnswer::Miss {
            key,
            why: format!("cache miss: the cached outputs could not be restored ({e})"),
        },
    }
}

/// After a task with `cache: true` succeeded: saves its declared outputs to
/// the blob store and records the entry under `key` (the one [`probe`]
/// returned). An error (an output that is a directory, a full disk) means
/// only that this run is not cached.
// The arguments are the entry's columns, as the caller holds them; a struct
// would only restate `Entry`.
#[allow(clippy::too_many_arguments)]
pub fn record_success(
    conn: &rusqlite::Connection,
    blobs: &Blobs,
    workflow: &str,
    job: &str,
    idx: u64,
    task_id: u64,
    attempt_id: u64,
    key: &CacheKey,
    cwd: &Path,
    outputs: &[String],
    now_ms: u64,
) -> Result<(), CacheError> {
    let saved = blobs.save_outputs(cwd, outputs)?;
    insert(
        conn,
        &Entry {
            key: key.key.clone(),
            workflow: workflow.to_string(),
            job: job.to_string(),
            idx,
            task_id,
            attempt_id,
            parts: key.clone(),
            outputs: saved,
            created_at_ms: now_ms,
        },
    )?;
    Ok(())
}
