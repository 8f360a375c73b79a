//! Where kept checkpoints live and how they move (SPEC §4 `checkpoint:`):
//! the [`CheckpointStore`] seam and its shared-filesystem form
//! [`SharedDir`], a directory `<state>/checkpoints/<task>/<attempt>/` per
//! kept version, written under a temporary name and renamed whole, so a
//! version is complete or absent, never half-written.
//!
//! The core decides (`core::checkpoints`); this module carries out its
//! [`CheckpointOp`]s after the commit, before the next attempt is sent. With
//! a shared filesystem the broker sees what a task wrote even when its agent
//! was SIGKILLed, so keeping never needs the agent. A transport for agents
//! without a shared filesystem is another implementation of the trait (the
//! agent sends its paths' contents up on keep and gets them on restore).
//! Must not decide which attempt keeps what.

use std::io;
use std::path::{Path, PathBuf};

use scalable_common::protocol::{AttemptId, TaskId};

use crate::core::CheckpointOp;

/// The most bytes one kept version may hold; a larger one is not kept (the
/// next attempt starts from the version before, or from nothing).
pub const CHECKPOINT_BYTES_MAX: u64 = 4 << 30;

/// Keeps, restores and drops checkpoint versions for the broker.
pub trait CheckpointStore: Send + Sync {
    /// Keeps `paths` under `cwd` as `attempt`'s version of `task`.
    fn keep(
        &self,
        task: TaskId,
        attempt: AttemptId,
        cwd: &Path,
        paths: &[String],
    ) -> io::Result<u64>;
    /// Clears `paths` under `cwd` and puts the newest kept version of `task`
    /// there; returns the attempt it came from, `None` when none is kept.
    fn restore(&self, task: TaskId, cwd: &Path, paths: &[String]) -> io::Result<Option<AttemptId>>;
    /// Drops every kept version of `task`.
    fn drop_task(&self, task: TaskId) -> io::Result<()>;
}

/// Carries out one op, saying in the log what happened (a failure costs the
/// task its progress, never the broker its run).
pub fn apply(store: &dyn CheckpointStore, op: &CheckpointOp) {
    match op {
        CheckpointOp::Keep {
            task,
            attempt,
            cwd,
            paths,
        } => match store.keep(*task, *attempt, Path::new(cwd), paths) {
            Ok(bytes) => {
                tracing::info!("task {task}: checkpoint of attempt {attempt} kept ({bytes} bytes)")
            }
            Err(e) => tracing::warn!("task {task}: checkpoint of attempt {attempt} not kept: {e}"),
        },
        CheckpointOp::Restore {
            task,
            attempt,
            cwd,
            paths,
        } => {
            match store.restore(*task, Path::new(cwd), paths) {
                Ok(Some(from)) => {
                    tracing::info!("task {task}: attempt {attempt} starts from the checkpoint of attempt {from}")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    "task {task}: checkpoint not restored for attempt {attempt}: {e}"
                ),
            }
        }
        CheckpointOp::Drop { task } => {
            if let Err(e) = store.drop_task(*task) {
                tracing::warn!("task {task}: kept checkpoints not removed: {e}");
            }
        }
    }
}

/// Versions in a directory the broker and the tasks both see.
pub struct SharedDir {
    root: PathBuf,
}

impl SharedDir {
    pub fn new(root: PathBuf) -> SharedDir {
        SharedDir { root }
    }

    fn task_dir(&self, task: TaskId) -> PathBuf {
        self.root.join(task.to_string())
    }

    /// The newest complete version of `task` (the largest attempt id).
    fn newest(&self, task: TaskId) -> io::Result<Option<AttemptId>> {
        let dir = match std::fs::read_dir(self.task_dir(task)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut newest = None;
        for entry in dir {
            let name = entry?.file_name();
            // Half-written versions are named `.partial-N` and never count.
            if let Some(id) = name.to_str().and_then(|n| n.parse::<AttemptId>().ok()) {
                newest = newest.max(Some(id));
            }
        }
        Ok(newest)
    }
}

impl CheckpointStore for SharedDir {
    fn keep(
        &self,
        task: TaskId,
        attempt: AttemptId,
        cwd: &Path,
        paths: &[String],
    ) -> io::Result<u64> {
        let dir = self.task_dir(task);
        scalable_common::private_files::create_dir_all(&dir)?;
        let partial = dir.join(format!(".partial-{attempt}"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir(&partial)?;
        let mut bytes = 0u64;
        for p in paths {
            let src = cwd.join(p);
            if std::fs::symlink_metadata(&src).is_err() {
                continue;
            }
            let copied = copy_tree(&src, &partial.join(p), &mut bytes);
            if let Err(e) = copied {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(e);
            }
        }
        std::fs::rename(&partial, dir.join(attempt.to_string()))?;
        Ok(bytes)
    }

    fn restore(&self, task: TaskId, cwd: &Path, paths: &[String]) -> io::Result<Option<AttemptId>> {
        for p in paths {
            remove_any(&cwd.join(p))?;
        }
        let Some(from) = self.newest(task)? else {
            return Ok(None);
        };
        let version = self.task_dir(task).join(from.to_string());
        let mut bytes = 0u64;
        for p in paths {
            let src = version.join(p);
            if std::fs::symlink_metadata(&src).is_ok() {
                copy_tree(&src, &cwd.join(p), &mut bytes)?;
            }
        }
        Ok(Some(from))
    }

    fn drop_task(&self, task: TaskId) -> io::Result<()> {
        match std::fs::remove_dir_all(self.task_dir(task)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    }
}

/// Copies a file or a directory tree (regular files and directories only;
/// symlinks and others are skipped, so a task cannot make the broker copy
/// what lies outside its directory), counting bytes against the bound.
fn copy_tree(src: &Path, dst: &Path, bytes: &mut u64) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()), bytes)?;
        }
    } else if meta.is_file() {
        *bytes += meta.len();
        if *bytes > CHECKPOINT_BYTES_MAX {
            return Err(io::Error::other(format!(
                "over the bound of {CHECKPOINT_BYTES_MAX} bytes a checkpoint may hold"
            )));
        }
        std::fs::copy(src, dst)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, p: &str, text: &str) {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn read(dir: &Path, p: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(p)).ok()
    }

    /// Versions by attempt: the newest kept one is restored whole, a task's
    /// leftovers from an attempt that kept nothing are cleared, never mixed,
    /// and a success drops them all.
    #[test]
    fn the_newest_version_is_restored_whole_and_dropped_on_success() {
        let state = tempfile::tempdir().unwrap();
        let cwd = tempfile::tempdir().unwrap();
        let store = SharedDir::new(state.path().join("checkpoints"));
        let paths = vec!["ckpt".to_string(), "n.txt".to_string()];
        assert_eq!(store.restore(7, cwd.path(), &paths).unwrap(), None);
        write(cwd.path(), "ckpt/a", "1");
        write(cwd.path(), "n.txt", "10");
        assert_eq!(store.keep(7, 3, cwd.path(), &paths).unwrap(), 3);
        write(cwd.path(), "ckpt/a", "2");
        write(cwd.path(), "ckpt/b", "2");
        std::fs::remove_file(cwd.path().join("n.txt")).unwrap();
        store.keep(7, 5, cwd.path(), &paths).unwrap();
        // Attempt 6 failed by its own fault and kept nothing; 7 is restored
        // from 5, with none of 6's leftovers.
        write(cwd.path(), "ckpt/c", "6");
        write(cwd.path(), "n.txt", "66");
        assert_eq!(store.restore(7, cwd.path(), &paths).unwrap(), Some(5));
        assert_eq!(read(cwd.path(), "ckpt/a").as_deref(), Some("2"));
        assert_eq!(read(cwd.path(), "ckpt/b").as_deref(), Some("2"));
        assert_eq!(read(cwd.path(), "ckpt/c"), None);
        assert_eq!(read(cwd.path(), "n.txt"), None);
        // A half-written version never counts.
        std::fs::create_dir_all(state.path().join("checkpoints/7/.partial-9")).unwrap();
        assert_eq!(store.newest(7).unwrap(), Some(5));
        store.drop_task(7).unwrap();
        assert_eq!(store.restore(7, cwd.path(), &paths).unwrap(), None);
        assert!(cwd.path().join("ckpt").symlink_metadata().is_err());
        store.drop_task(7).unwrap();
    }

    #[test]
    fn symlinks_are_not_followed() {
        let state = tempfile::tempdir().unwrap();
        let cwd = tempfile::tempdir().unwrap();
        let store = SharedDir::new(state.path().join("checkpoints"));
        std::fs::create_dir(cwd.path().join("ckpt")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", cwd.path().join("ckpt/x")).unwrap();
        assert_eq!(store.keep(1, 1, cwd.path(), &["ckpt".into()]).unwrap(), 0);
        assert!(!state.path().join("checkpoints/1/1/ckpt/x").exists());
    }
}
