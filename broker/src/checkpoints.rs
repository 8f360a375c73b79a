//! Where kept checkpoints live and how they move (SPEC §4 `checkpoint:`):
//! the [`CheckpointStore`] seam and its form [`SharedDir`], a directory
//! `<state>/checkpoints/<task>/<attempt>[-<seq>]/` per kept version, written
//! under a temporary name and renamed whole, so a version is complete or
//! absent, never half-written. `<attempt>` is what the broker copied after
//! the attempt ended (shared filesystem); `<attempt>-<seq>` a snapshot an
//! agent without one uploaded while the attempt ran (`seal`), the larger
//! `seq` the newer. The newest version of a task is its largest
//! `(attempt, seq)`.
//!
//! The core decides (`core::checkpoints`); this module carries out its
//! [`CheckpointOp`]s after the commit, before the next attempt is sent. With
//! a shared filesystem the broker sees what a task wrote even when its agent
//! was SIGKILLed, so keeping never needs the agent. Agents without one
//! upload snapshots through staging (`server::checkpoint_io`), sealed here
//! from their verified blobs, and fetch the newest version's files.
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
    /// Makes `files` (`(blob, relative path)`, the blobs verified) snapshot
    /// `seq` of `attempt`, replacing that attempt's older snapshots; returns
    /// the bytes. Whole or absent.
    fn seal(
        &self,
        task: TaskId,
        attempt: AttemptId,
        seq: u64,
        files: &[(PathBuf, String)],
    ) -> io::Result<u64>;
    /// The newest version of `task`: its directory and its regular files
    /// (relative paths, sorted); `None` when none is kept.
    fn newest_files(&self, task: TaskId) -> io::Result<Option<(PathBuf, Vec<String>)>>;
    /// Drops the versions of one attempt (it ended by its own fault).
    fn drop_attempt(&self, task: TaskId, attempt: AttemptId) -> io::Result<()>;
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
        CheckpointOp::DropAttempt { task, attempt } => {
            if let Err(e) = store.drop_attempt(*task, *attempt) {
                tracing::warn!("task {task}: checkpoints of attempt {attempt} not removed: {e}");
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

    /// The complete versions of `task` by `(attempt, seq)`, with their names.
    fn versions(&self, task: TaskId) -> io::Result<Vec<((AttemptId, u64), PathBuf)>> {
        let dir = match std::fs::read_dir(self.task_dir(task)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry?;
            // Half-written versions are named `.partial-…` and never count.
            if let Some(key) = entry.file_name().to_str().and_then(version_key) {
                out.push((key, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The newest complete version of `task` (the largest attempt id, then
    /// the largest snapshot).
    #[cfg(test)]
    fn newest(&self, task: TaskId) -> io::Result<Option<AttemptId>> {
        Ok(self.versions(task)?.last().map(|((a, _), _)| *a))
    }

    fn newest_dir(&self, task: TaskId) -> io::Result<Option<(AttemptId, PathBuf)>> {
        Ok(self.versions(task)?.pop().map(|((a, _), p)| (a, p)))
    }
}

/// `<attempt>` → `(attempt, 0)`, `<attempt>-<seq>` → `(attempt, seq)`.
fn version_key(name: &str) -> Option<(AttemptId, u64)> {
    match name.split_once('-') {
        None => Some((name.parse().ok()?, 0)),
        Some((a, s)) => Some((a.parse().ok()?, s.parse().ok()?)),
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
        // Nothing there (an agent without the broker's filesystem ran it, or
        // the task wrote nothing yet): no version, so none shadows an older.
        if !paths
            .iter()
            .any(|p| std::fs::symlink_metadata(cwd.join(p)).is_ok())
        {
            return Ok(0);
        }
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
        let Some((from, version)) = self.newest_dir(task)? else {
            return Ok(None);
        };
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

    fn seal(
        &self,
        task: TaskId,
        attempt: AttemptId,
        seq: u64,
        files: &[(PathBuf, String)],
    ) -> io::Result<u64> {
        let dir = self.task_dir(task);
        scalable_common::private_files::create_dir_all(&dir)?;
        let partial = dir.join(format!(".partial-{attempt}-{seq}"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir(&partial)?;
        let mut bytes = 0u64;
        let filled = files.iter().try_for_each(|(blob, rel)| {
            if !scalable_common::staging::is_plain_relative(rel) {
                return Err(io::Error::other(format!("{rel} is not a relative path")));
            }
            copy_tree(blob, &partial.join(rel), &mut bytes)
        });
        if let Err(e) = filled {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, dir.join(format!("{attempt}-{seq}")))?;
        // One version per attempt is enough: its older snapshots go.
        for ((a, s), path) in self.versions(task)? {
            if a == attempt && s < seq {
                let _ = std::fs::remove_dir_all(path);
            }
        }
        Ok(bytes)
    }

    fn newest_files(&self, task: TaskId) -> io::Result<Option<(PathBuf, Vec<String>)>> {
        let Some((_, dir)) = self.newest_dir(task)? else {
            return Ok(None);
        };
        let mut files = Vec::new();
        let mut todo = vec![dir.clone()];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    todo.push(entry.path());
                } else if kind.is_file() {
                    let rel = entry.path().strip_prefix(&dir).map(Path::to_path_buf);
                    if let Some(s) = rel.ok().and_then(|p| p.to_str().map(str::to_string)) {
                        files.push(s);
                    }
                }
            }
        }
        files.sort();
        Ok(Some((dir, files)))
    }

    fn drop_attempt(&self, task: TaskId, attempt: AttemptId) -> io::Result<()> {
        for ((a, _), path) in self.versions(task)? {
            if a == attempt {
                std::fs::remove_dir_all(path)?;
            }
        }
        Ok(())
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
