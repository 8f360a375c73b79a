//! The cache's I/O for the core (`cache: true` tasks): a probe hashes a
//! task's key off the core task, reads the table on the store's thread and
//! restores outputs, then answers the core with `CoreMsg::CacheAnswer`; a
//! record saves a counted success's outputs and key.
//!
//! A record is registered in [`PendingRecords`] by the core task in the batch
//! that counts the success, before its run can be reported finished, and a
//! probe of the same key or task path waits for it: an identical submit made
//! as soon as `wait` returned finds the entry (issue 13).
//!
//! It decides nothing about the task (the core does, from the answer) and
//! issues no SQL itself (the statements are `cache`'s, run on the store's
//! connection).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::{now_ms, CoreMsg};
use crate::cache;
use crate::core::{CacheProbe, CacheRecord};
use crate::store::Store;

/// Looks for a counted success's outputs this many times before giving up.
const RECORD_TRIES: u32 = 5;
/// The wait before the n-th look is n times this (2 s in all).
const RECORD_RETRY_AFTER: Duration = Duration::from_millis(200);

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

/// Which task a cache entry is saved for: the path `why` explains a miss by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskPath {
    workflow: String,
    job: String,
    index: u64,
}

/// Cache records not yet in the table (their outputs are being saved).
#[derive(Default)]
pub(super) struct PendingRecords {
    /// One `(key, path)` per record in flight; a handful at a time.
    records: Mutex<Vec<(String, TaskPath)>>,
    settled: Notify,
}

/// A record in flight: removed from [`PendingRecords`] when dropped, saved
/// or not (a broker that stops before its commit drops it unsaved).
pub(super) struct PendingRecord {
    record: CacheRecord,
    key: Option<cache::CacheKey>,
    slot: (String, TaskPath),
    pending: Arc<PendingRecords>,
}

impl PendingRecords {
    /// Registers a counted success to record. Called on the core task in the
    /// batch that counts it, so every later probe sees it.
    pub(super) fn begin(self: &Arc<Self>, record: CacheRecord) -> PendingRecord {
        let key = serde_json::from_str::<cache::CacheKey>(&record.key_json).ok();
        let path = TaskPath {
            workflow: record.workflow.clone(),
            job: record.job_name.clone(),
            index: record.index,
        };
        let slot = (
            key.as_ref().map(|k| k.key.clone()).unwrap_or_default(),
            path,
        );
        self.lock().push(slot.clone());
        PendingRecord {
            record,
            key,
            slot,
            pending: self.clone(),
        }
    }

    /// Resolves once no record of this key or task path is in flight.
    async fn settled(&self, key: &str, path: &TaskPath) {
        loop {
            // Created before the check: a record ending in between still wakes it.
            let notified = self.settled.notified();
            if !self.lock().iter().any(|(k, p)| k == key || p == path) {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, TaskPath)>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        let mut records = self.pending.lock();
        if let Some(i) = records.iter().position(|s| *s == self.slot) {
            records.swap_remove(i);
        }
        drop(records);
        self.pending.settled.notify_waiters();
    }
}

/// Looks a `cache: true` task up: its key hashed off the core (inputs may be
/// large), the table read on the store's thread, outputs restored off it again.
pub(super) async fn probe(
    p: CacheProbe,
    store: Store,
    blobs: Arc<cache::Blobs>,
    pending: Arc<PendingRecords>,
    to_core: mpsc::WeakUnboundedSender<CoreMsg>,
) {
    let (job, index) = (p.job, p.index);
    let answer = answer(p, store, blobs, &pending).await;
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

async fn answer(
    p: CacheProbe,
    store: Store,
    blobs: Arc<cache::Blobs>,
    pending: &PendingRecords,
) -> Answer {
    let cwd = PathBuf::from(&p.cwd);
    let key = match compute_key(&p, cwd.clone()).await {
        Ok(k) => k,
        Err(e) => return Answer::miss(String::new(), format!("not cached: {e}")),
    };
    let path = TaskPath {
        workflow: p.workflow.clone(),
        job: p.job_name.clone(),
        index: p.index,
    };
    pending.settled(&key.key, &path).await;
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

/// Saves a counted success's outputs and key in the cache; started after the
/// commit that counts it, whose after-commit action promoted staged outputs
/// where the broker shares the task's filesystem. Elsewhere the agent
/// promotes them when it hears the ack, so a missing output is looked for a
/// few times before the task is simply not cached.
pub(super) async fn record(p: PendingRecord, store: Store, blobs: Arc<cache::Blobs>) {
    let Some(key) = p.key.clone() else {
        return;
    };
    let r = &p.record;
    for attempt in 0..RECORD_TRIES {
        if attempt > 0 {
            tokio::time::sleep(RECORD_RETRY_AFTER * attempt).await;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(workflow: &str, index: u64, key: &str) -> CacheRecord {
        let key = cache::CacheKey {
            key: key.into(),
            argv: String::new(),
            image: String::new(),
            env: String::new(),
            inputs: Vec::new(),
        };
        CacheRecord {
            workflow: workflow.into(),
            job_name: "step".into(),
            index,
            task: 1,
            attempt: 1,
            key_json: serde_json::to_string(&key).unwrap(),
            cwd: "/nowhere".into(),
            outputs: Vec::new(),
        }
    }

    fn path(workflow: &str, index: u64) -> TaskPath {
        TaskPath {
            workflow: workflow.into(),
            job: "step".into(),
            index,
        }
    }

    #[tokio::test]
    async fn a_probe_waits_for_a_record_of_its_key_or_its_path_only() {
        let pending = Arc::new(PendingRecords::default());
        let same_key = pending.begin(record("a", 0, "k1"));
        let same_path = pending.begin(record("b", 3, "k2"));
        // Neither its key nor its path is in flight: no wait.
        tokio::time::timeout(Duration::from_secs(1), pending.settled("k3", &path("c", 0)))
            .await
            .expect("an unrelated probe does not wait");
        let waiter = {
            let pending = pending.clone();
            tokio::spawn(async move {
                pending.settled("k1", &path("b", 3)).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "waits while both are in flight");
        drop(same_key);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the same path is still in flight");
        drop(same_path);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("settles once both are recorded")
            .unwrap();
        assert!(pending.lock().is_empty());
    }
}
