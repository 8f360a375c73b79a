//! The cache's I/O for the core (`cache: true` tasks): a probe hashes a
//! task's key off the core task, reads the table on the store's thread and
//! restores outputs, then answers the core with `CoreMsg::CacheAnswer`; a
//! record saves a counted success's outputs and key.
//!
//! It decides nothing about the task (the core does, from the answer) and
//! issues no SQL itself (the statements are `cache`'s, run on the store's
//! connection).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{now_ms, CoreMsg};
use crate::cache;
use crate::core::{CacheProbe, CacheRecord};
use crate::store::Store;

/// What a probe tells the core: the note of a hit, the key (JSON) and, on a
/// miss, why.
struct Answer {
    hit: Option<String>,
    key_json: String,
    why: String,
}

impl Answer {
    fn miss(key_json: String, why: String) -> Answer {
        Answer {
            hit: None,
            key_json,
            why,
        }
    }
}

/// Looks a `cache: true` task up: its key hashed off the core (inputs may be
/// large), the table read on the store's thread, outputs restored off it again.
pub(super) async fn probe(
    p: CacheProbe,
    store: Store,
    blobs: Arc<cache::Blobs>,
    to_core: mpsc::WeakUnboundedSender<CoreMsg>,
) {
    let (job, index) = (p.job, p.index);
    let answer = answer(p, store, blobs).await;
    if let Some(tx) = to_core.upgrade() {
        let _ = tx.send(CoreMsg::CacheAnswer {
            job,
            index,
            hit: answer.hit,
            key_json: answer.key_json,
            why: answer.why,
        });
    }
}

async fn answer(p: CacheProbe, store: Store, blobs: Arc<cache::Blobs>) -> Answer {
    let cwd = PathBuf::from(&p.cwd);
    let key = match compute_key(&p, cwd.clone()).await {
        Ok(k) => k,
        Err(e) => return Answer::miss(String::new(), format!("not cached: {e}")),
    };
    let key_json = serde_json::to_string(&key).unwrap_or_default();
    let (wf, jn, k, index) = (
        p.workflow.clone(),
        p.job_name.clone(),
        key.key.clone(),
        p.index,
    );
    let found = store
        .query(move |c| {
            let hit = cache::lookup(c, &k)?;
            let last = if hit.is_none() {
                cache::latest_for(c, &wf, &jn, index)?
            } else {
                None
            };
            Ok::<_, rusqlite::Error>((hit, last))
        })
        .await;
    let (hit, last) = match found {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return Answer::miss(key_json, format!("not cached: cache table: {e}")),
        Err(e) => return Answer::miss(key_json, format!("not cached: {e}")),
    };
    if let Some(entry) = hit {
        return restore_hit(&p, entry, cwd, blobs, key_json).await;
    }
    let why = match last {
        None => "cache miss: no earlier run of this task".to_string(),
        Some(prev) => {
            let changed = cache::explain_change(&prev.parts, &key);
            if changed.is_empty() {
                "cache miss: the earlier run's entry is gone".into()
            } else {
                format!("cache miss: {}", changed.join(", "))
            }
        }
    };
    Answer::miss(key_json, why)
}

/// Hashes the task's key on a blocking thread.
async fn compute_key(p: &CacheProbe, cwd: PathBuf) -> Result<cache::CacheKey, String> {
    let (argv, image, env, inputs) = (
        p.argv.clone(),
        p.image.clone(),
        p.env.clone(),
        p.inputs.clone(),
    );
    let key = tokio::task::spawn_blocking(move || {
        cache::compute_key(&argv, image.as_deref(), &env, &cwd, &inputs)
    })
    .await;
    match key {
        Ok(Ok(k)) => Ok(k),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A hit counts only if every declared output was saved and comes back.
async fn restore_hit(
    p: &CacheProbe,
    entry: cache::Entry,
    cwd: PathBuf,
    blobs: Arc<cache::Blobs>,
    key_json: String,
) -> Answer {
    let saved = entry.outputs.clone();
    let declared_saved = p.outputs.iter().all(|o| saved.iter().any(|s| &s.path == o));
    if declared_saved {
        let restored =
            tokio::task::spawn_blocking(move || blobs.restore_outputs(&cwd, &saved)).await;
        match restored {
            Ok(Ok(n)) => {
                let note = format!(
                    "cached: same key as task {} (run of {}), {n} output(s) restored",
                    entry.task_id, entry.workflow
                );
                return Answer {
                    hit: Some(note),
                    key_json,
                    why: String::new(),
                };
            }
            // Said as it is: an output the broker refuses to write is no
            // incomplete cache.
            Ok(Err(e @ cache::CacheError::OutputOutside { .. })) => {
                return Answer::miss(key_json, format!("not cached: {e}"));
            }
            _ => {}
        }
    }
    Answer::miss(
        key_json,
        "cache miss: the cached outputs are incomplete".into(),
    )
}

/// Saves a counted success's outputs and key in the cache. The agent promotes
/// staged outputs when it hears its result was counted, so this looks a few
/// times before it gives up (a task that is then simply not cached).
pub(super) async fn record(r: CacheRecord, store: Store, blobs: Arc<cache::Blobs>) {
    let Ok(key) = serde_json::from_str::<cache::CacheKey>(&r.key_json) else {
        return;
    };
    for attempt in 0..5u64 {
        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
        let (blobs2, cwd, outputs) = (blobs.clone(), PathBuf::from(&r.cwd), r.outputs.clone());
        let saved = tokio::task::spawn_blocking(move || blobs2.save_outputs(&cwd, &outputs)).await;
        let saved = match saved {
            Ok(Ok(s)) => s,
            Ok(Err(cache::CacheError::OutputMissing { .. })) => continue,
            Ok(Err(e)) => {
                tracing::warn!("task {} not cached: {e}", r.task);
                return;
            }
            Err(_) => return,
        };
        let entry = cache::Entry {
            key: key.key.clone(),
            workflow: r.workflow.clone(),
            job: r.job_name.clone(),
            idx: r.index,
            task_id: r.task,
            attempt_id: r.attempt,
            parts: key.clone(),
            outputs: saved,
            created_at_ms: now_ms(),
        };
        if let Ok(Err(e)) = store.query(move |c| cache::insert(c, &entry)).await {
            tracing::warn!("task {} not cached: {e}", r.task);
        }
        return;
    }
    tracing::warn!("task {} not cached: its outputs never appeared", r.task);
}
