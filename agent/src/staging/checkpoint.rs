//! Checkpoints of an attempt in a private directory (`--no-shared-fs`, SPEC
//! §4 `checkpoint:`, protocol 8): the task's newest kept version fetched
//! before it starts, and what it writes under its checkpoint paths uploaded
//! while it runs, since an agent SIGKILLed cannot upload at the end.
//!
//! The [`Watcher`] polls the paths' sizes and mtimes every
//! [`poll_interval`]; when they changed and hold still while copied, the copy
//! (a snapshot) is uploaded file by file and sealed: the broker keeps a
//! snapshot whole or not at all, the newest sealed one being the attempt's
//! version. At a graceful end (walltime, drain) one more round runs after
//! the task exited. Owns: the polls, the snapshots under
//! `<workdir>/staged/.checkpoint-<attempt>/` and their uploads. It must not
//! decide what is kept (the broker's core does) nor touch the agent's work.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use scalable_common::protocol::{AttemptEnd, AttemptId};
use scalable_common::staging::{check_files, is_plain_relative, StageReply, StageRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::transfer::{unexpected, Link, TransferError};
use super::{end_of, STAGED_ROOT};

/// How often the checkpoint paths are looked at, unless
/// `SCALABLE_CHECKPOINT_POLL_MS` says otherwise (tests).
pub const POLL_DEFAULT: Duration = Duration::from_secs(2);
/// The fewest milliseconds between polls, whatever the environment says.
const POLL_MIN_MS: u64 = 50;
/// Files under an attempt's checkpoint paths, at most.
const FILES_MAX: usize = 10_000;
/// Tries of a snapshot whose files kept changing while copied, at the end.
const FINAL_TRIES_MAX: u32 = 3;
/// How long a task's own failure waits for an upload under way.
const QUIET_STOP_WAIT_MAX: Duration = Duration::from_secs(2);
/// How long a graceful end's last upload may hold the attempt's result (a
/// drain leaves sooner anyway: `session::drain`).
const FINAL_WAIT_MAX: Duration = Duration::from_secs(60);

/// The poll interval: `SCALABLE_CHECKPOINT_POLL_MS` or [`POLL_DEFAULT`].
pub fn poll_interval() -> Duration {
    std::env::var("SCALABLE_CHECKPOINT_POLL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.max(POLL_MIN_MS)))
        .unwrap_or(POLL_DEFAULT)
}

/// Where the snapshots of `attempt` are copied before they are uploaded.
pub fn snapshot_root(workdir: &Path, attempt: AttemptId) -> PathBuf {
    workdir
        .join(STAGED_ROOT)
        .join(format!(".checkpoint-{attempt}"))
}

/// What the checkpoint restore did.
#[derive(Debug, Default)]
pub struct Restored {
    /// The job's checkpoint paths (empty: it keeps none).
    pub paths: Vec<String>,
    pub bytes: u64,
    pub ms: u64,
}

/// Asks the broker for the job's checkpoint paths and fetches the newest
/// kept version into `dir` (the attempt's private directory).
pub async fn restore(
    mut link: Link,
    attempt: AttemptId,
    dir: &Path,
) -> Result<Restored, AttemptEnd> {
    let started = Instant::now();
    let req = StageRequest::CheckpointRestore { attempt };
    let reply = link
        .request("asking for the checkpoint", req)
        .await
        .map_err(end_of)?;
    let StageReply::Checkpoint { paths, files } = reply else {
        return Err(end_of(unexpected(reply)));
    };
    let bad = |why: String| AttemptEnd::StagingFailed { error: why };
    check_files(&files).map_err(bad)?;
    if let Some(p) = paths.iter().find(|p| !is_plain_relative(p)) {
        return Err(bad(format!(
            "checkpoint path {p} is not inside the task's directory; without a shared filesystem checkpoint paths are relative"
        )));
    }
    let bytes = match files.is_empty() {
        true => 0,
        false => link.get_all(attempt, &files, dir).await.map_err(end_of)?,
    };
    Ok(Restored {
        paths,
        bytes,
        ms: started.elapsed().as_millis() as u64,
    })
}

/// How a watcher is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// The attempt ended by its own fault or succeeded: no more uploads.
    Quietly,
    /// A graceful end (walltime, drain): one more round, then stop.
    WithFinal,
}

/// Bytes and milliseconds of the sealed snapshots.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    pub bytes: u64,
    pub ms: u64,
    pub snapshots: u64,
}

/// The poller of one attempt's checkpoint paths.
pub struct Watcher {
    stop: watch::Sender<Stop>,
    task: JoinHandle<Uploaded>,
}

/// Files of a snapshot: relative path, size, mtime (ns), sorted.
type Signature = Vec<(String, u64, i128)>;

/// What one watcher works on.
struct Target {
    link: Link,
    attempt: AttemptId,
    dir: PathBuf,
    paths: Vec<String>,
    snapshots: PathBuf,
}

impl Watcher {
    /// Starts polling `paths` under `dir` (what is there now, a restored
    /// version, is not uploaded again).
    pub fn start(
        link: Link,
        attempt: AttemptId,
        dir: PathBuf,
        paths: Vec<String>,
        workdir: &Path,
    ) -> Watcher {
        let (stop, rx) = watch::channel(Stop::Running);
        let target = Target {
            link,
            attempt,
            dir,
            paths,
            snapshots: snapshot_root(workdir, attempt),
        };
        let task = tokio::spawn(target.poll(rx, poll_interval()));
        Watcher { stop, task }
    }

    /// The attempt ended: after one last round when `graceful`, else at
    /// once (an upload under way finishes first, briefly).
    pub async fn finish(self, graceful: bool) -> Uploaded {
        let how = if graceful {
            Stop::WithFinal
        } else {
            Stop::Quietly
        };
        let _ = self.stop.send(how);
        let mut task = self.task;
        let limit = if graceful {
            FINAL_WAIT_MAX
        } else {
            QUIET_STOP_WAIT_MAX
        };
        let waited = tokio::time::timeout(limit, &mut task)
            .await
            .ok()
            .and_then(Result::ok);
        task.abort();
        waited.unwrap_or_default()
    }

    /// Stops without waiting (the attempt never ran, or is forgotten).
    pub fn abort(self) {
        self.task.abort();
    }
}

impl Target {
    async fn poll(self, mut stop: watch::Receiver<Stop>, every: Duration) -> Uploaded {
        let mut done = Uploaded::default();
        let mut last = self.signature().await.unwrap_or_default();
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => {}
            }
            let how = *stop.borrow();
            if how == Stop::Quietly {
                break;
            }
            let tries = if how == Stop::WithFinal {
                FINAL_TRIES_MAX
            } else {
                1
            };
            for _ in 0..tries {
                match self.round(&last, seq + 1).await {
                    Ok(Some((sig, bytes, ms))) => {
                        (last, seq) = (sig, seq + 1);
                        done.bytes += bytes;
                        done.ms += ms;
                        done.snapshots += 1;
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("attempt {}: checkpoint not uploaded: {e}", self.attempt)
                    }
                }
            }
            if how == Stop::WithFinal {
                break;
            }
        }
        let root = self.snapshots.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(root)).await;
        done
    }

    /// The paths' files as they are now.
    async fn signature(&self) -> Result<Signature, String> {
        let (dir, paths) = (self.dir.clone(), self.paths.clone());
        tokio::task::spawn_blocking(move || signature(&dir, &paths))
            .await
            .map_err(|e| e.to_string())?
    }

    /// One poll: when the files changed since `last`, a snapshot copied,
    /// uploaded and sealed as `seq`; its signature, bytes and ms. `None`:
    /// nothing new (or nothing there).
    async fn round(
        &self,
        last: &Signature,
        seq: u64,
    ) -> Result<Option<(Signature, u64, u64)>, String> {
        let sig = self.signature().await?;
        if sig.is_empty() || &sig == last {
            return Ok(None);
        }
        let started = Instant::now();
        let snap = self.snapshots.join(seq.to_string());
        let (dir, s, files) = (self.dir.clone(), snap.clone(), sig.clone());
        tokio::task::spawn_blocking(move || copy_snapshot(&dir, &s, &files))
            .await
            .map_err(|e| e.to_string())??;
        // Changed while copied: the copy may mix two states; next poll.
        if self.signature().await? != sig {
            let _ = tokio::fs::remove_dir_all(&snap).await;
            return Err("the checkpoint changed while it was copied".into());
        }
        let sealed = self.upload(&snap, &sig, seq).await;
        let _ = tokio::fs::remove_dir_all(&snap).await;
        let bytes = sealed.map_err(|e| e.to_string())?;
        Ok(Some((sig, bytes, started.elapsed().as_millis() as u64)))
    }

    async fn upload(&self, snap: &Path, sig: &Signature, seq: u64) -> Result<u64, TransferError> {
        let mut link = self.link.clone();
        let mut files = Vec::with_capacity(sig.len());
        for (rel, _, _) in sig {
            let f = link
                .put_checkpoint_file(self.attempt, &snap.join(rel), rel)
                .await?;
            files.push(f);
        }
        let bytes = files.iter().map(|f| f.size).sum();
        let req = StageRequest::CheckpointSeal {
            attempt: self.attempt,
            seq,
            files,
        };
        match link.request("keeping a checkpoint", req).await? {
            StageReply::Sealed => Ok(bytes),
            other => Err(unexpected(other)),
        }
    }
}

/// The regular files under `paths` in `dir` with their sizes and mtimes
/// (symlinks are not followed), sorted; bounded by [`FILES_MAX`].
fn signature(dir: &Path, paths: &[String]) -> Result<Signature, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo: Vec<String> = paths.to_vec();
    while let Some(rel) = todo.pop() {
        let meta = match std::fs::symlink_metadata(dir.join(&rel)) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if meta.is_dir() {
            let entries = std::fs::read_dir(dir.join(&rel)).map_err(|e| format!("{rel}: {e}"))?;
            for entry in entries.flatten() {
                if let Some(name) = entry.file_name().to_str() {
                    todo.push(format!("{rel}/{name}"));
                }
            }
        } else if meta.is_file() {
            let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
            out.push((rel, meta.len(), mtime));
        }
        if out.len() > FILES_MAX {
            return Err(format!(
                "more than {FILES_MAX} files under the checkpoint paths"
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// Copies the signature's files from `dir` to `snap`.
fn copy_snapshot(dir: &Path, snap: &Path, files: &Signature) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(snap);
    for (rel, _, _) in files {
        let dst = snap.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::copy(dir.join(rel), &dst).map_err(|e| format!("{rel}: {e}"))?;
    }
    Ok(())
}

/// Whether an attempt that ended so gets a last upload: its walltime or a
/// drain (its pilot's lifetime, SIGTERM) ended it, and the task's files are
/// still what it left.
pub fn graceful(end: &AttemptEnd) -> bool {
    matches!(end, AttemptEnd::Drained | AttemptEnd::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_lists_files_under_the_paths_and_sees_changes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ckpt/sub")).unwrap();
        std::fs::write(d.path().join("ckpt/sub/a"), "1").unwrap();
        std::fs::write(d.path().join("state"), "22").unwrap();
        std::fs::write(d.path().join("other"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("ckpt/link")).unwrap();
        let paths = vec!["ckpt".to_string(), "state".into(), "missing".into()];
        let sig = signature(d.path(), &paths).unwrap();
        let names: Vec<&str> = sig.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["ckpt/sub/a", "state"]);
        std::fs::write(d.path().join("state"), "333").unwrap();
        assert_ne!(signature(d.path(), &paths).unwrap(), sig);
        let snap = d.path().join("snap");
        copy_snapshot(d.path(), &snap, &sig).unwrap();
        assert_eq!(std::fs::read(snap.join("ckpt/sub/a")).unwrap(), b"1");
    }

    #[test]
    fn only_walltime_and_drain_get_a_last_upload() {
        assert!(graceful(&AttemptEnd::Drained));
        assert!(graceful(&AttemptEnd::TimedOut));
        assert!(!graceful(&AttemptEnd::Exited { code: 1 }));
        assert!(!graceful(&AttemptEnd::Exited { code: 0 }));
        assert!(!graceful(&AttemptEnd::Cancelled));
    }
}
