//! Attempt-scoped outputs (SPEC §5, research/reliability.md rule 3.7): declared
//! outputs of an attempt are written in a place of its own and renamed into
//! place only once the broker has counted that attempt, so a stale or duplicate
//! attempt can never clobber the counted one's outputs.
//!
//! Owns: where an attempt's stage lives (`<cwd>/.scalable-stage/<attempt>/`),
//! what "a declared output exists" means, promotion (atomic `rename` per output)
//! and discarding. It does not decide *when*: the executor creates the stage
//! before the spawn, the session promotes or discards on the broker's ack.
//!
//! The protocol with a task: only a task with declared outputs gets a stage and
//! `SCALABLE_STAGE_DIR` (its absolute path). It may write a declared output `o`
//! either to `$SCALABLE_STAGE_DIR/o` (protected: promoted on a counted ack,
//! thrown away otherwise) or directly to `<cwd>/o` (legacy, unprotected). An
//! output counts as present if it is in either place. Outputs that are absolute
//! or climb out with `..` are never staged (they have no place inside the
//! stage), only their final place counts.

use std::io;
use std::path::{Path, PathBuf};

use scalable_common::protocol::AttemptId;

use crate::event_log::EventLog;
use crate::log_event;

/// The variable that tells a task where its stage is.
pub const STAGE_ENV: &str = "SCALABLE_STAGE_DIR";
pub use scalable_common::stage::{present, stage_dir, staged_path, STAGE_ROOT};

/// What the agent needs to promote or discard one attempt's outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub attempt: AttemptId,
    /// The task's absolute working directory (outputs are relative to it).
    pub cwd: PathBuf,
    pub outputs: Vec<String>,
}

/// Declared outputs (relative to `cwd`) that are neither staged for `attempt`
/// nor at their final place. Without outputs this touches no file.
pub fn missing_outputs(cwd: &Path, attempt: AttemptId, outputs: &[String]) -> Vec<String> {
    if outputs.is_empty() {
        return Vec::new();
    }
    let dir = stage_dir(cwd, attempt);
    outputs
        .iter()
        .filter(|o| {
            let staged = staged_path(&dir, o).is_some_and(|p| present(&p));
            !staged && !present(&cwd.join(o))
        })
        .cloned()
        .collect()
}

impl Stage {
    /// The stage of an attempt with declared outputs; `None` without outputs.
    pub fn new(attempt: AttemptId, cwd: PathBuf, outputs: &[String]) -> Option<Stage> {
        (!outputs.is_empty()).then(|| Stage {
            attempt,
            cwd,
            outputs: outputs.to_vec(),
        })
    }

    pub fn dir(&self) -> PathBuf {
        stage_dir(&self.cwd, self.attempt)
    }

    /// Creates the stage directory (and `.scalable-stage` above it) inside an
    /// existing cwd; never creates the cwd itself (a missing cwd is the spawn's
    /// error to report). Returns the directory.
    pub fn create(&self) -> io::Result<PathBuf> {
        if !self.cwd.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: not a directory", self.cwd.display()),
            ));
        }
        let dir = self.dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        Ok(dir)
    }

    /// The attempt was counted: renames every staged output into its final
    /// place (creating parent dirs; atomic replace of what was there), then
    /// removes the stage. Outputs written directly to their final place are
    /// left alone. A failure is one warning line naming the path; the rest
    /// carries on. Returns the final paths promoted.
    pub fn promote(&self, log: Option<&EventLog>) -> Vec<PathBuf> {
        let mut promoted = Vec::new();
        for (src, dst, moved) in
            scalable_common::stage::promote(&self.cwd, self.attempt, &self.outputs)
        {
            match moved {
                Ok(()) => {
                    log_event!(log, "promote {} {}", self.attempt, dst.display());
                    promoted.push(dst);
                }
                Err(e) => tracing::warn!(
                    attempt = self.attempt,
                    "cannot promote output {} to {}: {e}",
                    src.display(),
                    dst.display()
                ),
            }
        }
        self.remove(&self.dir());
        promoted
    }

    /// The attempt was not counted (stale, fenced, failed): its stage goes
    /// without touching any final place.
    pub fn discard(&self, log: Option<&EventLog>) {
        self.remove(&self.dir());
        log_event!(log, "discard {}", self.attempt);
    }

    fn remove(&self, dir: &Path) {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                attempt = self.attempt,
                "cannot remove the stage dir {}: {e}",
                dir.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_outputs_no_stage() {
        assert_eq!(Stage::new(1, PathBuf::from("/x"), &[]), None);
        assert!(missing_outputs(Path::new("/nonexistent"), 1, &[]).is_empty());
    }

    #[test]
    fn outputs_count_in_the_stage_or_at_their_place() {
        let cwd = tempfile::tempdir().expect("tempdir");
        let stage = Stage::new(
            42,
            cwd.path().to_path_buf(),
            &outs(&["a.txt", "d/b.txt", "c.txt"]),
        )
        .expect("stage");
        let dir = stage.create().expect("create");
        assert_eq!(dir, cwd.path().join(".scalable-stage/42"));
        std::fs::create_dir_all(dir.join("d")).expect("mkdir");
        std::fs::write(dir.join("d/b.txt"), "staged").expect("write");
        std::fs::write(cwd.path().join("a.txt"), "direct").expect("write");
        assert_eq!(
            missing_outputs(cwd.path(), 42, &stage.outputs),
            vec!["c.txt".to_string()]
        );
        // Another attempt's stage does not count for this one.
        assert_eq!(
            missing_outputs(cwd.path(), 43, &stage.outputs),
            vec!["d/b.txt".to_string(), "c.txt".to_string()]
        );
    }

    #[test]
    fn promote_renames_staged_outputs_into_place_and_removes_the_stage() {
        let cwd = tempfile::tempdir().expect("tempdir");
        let log_path = cwd.path().join("events.log");
        let log = EventLog::open(&log_path).expect("log");
        let stage = Stage::new(
            7,
            cwd.path().to_path_buf(),
            &outs(&["out/deep/r.txt", "direct.txt", "old.txt", "never.txt"]),
        )
        .expect("stage");
        let dir = stage.create().expect("create");
        std::fs::create_dir_all(dir.join("out/deep")).expect("mkdir");
        std::fs::write(dir.join("out/deep/r.txt"), "seven").expect("write");
        std::fs::write(dir.join("old.txt"), "new").expect("write");
        std::fs::write(cwd.path().join("old.txt"), "old").expect("write");
        std::fs::write(cwd.path().join("direct.txt"), "legacy").expect("write");
        let promoted = stage.promote(Some(&log));
        assert_eq!(
            promoted,
            vec![
                cwd.path().join("out/deep/r.txt"),
                cwd.path().join("old.txt")
            ]
        );
        let read = |p: &str| std::fs::read_to_string(cwd.path().join(p)).expect(p);
        assert_eq!(read("out/deep/r.txt"), "seven", "parents created");
        assert_eq!(read("old.txt"), "new", "replaced atomically");
        assert_eq!(read("direct.txt"), "legacy", "unstaged output left alone");
        assert!(!dir.exists(), "stage removed");
        assert_eq!(
            std::fs::read_to_string(&log_path).expect("log"),
            format!(
                "promote 7 {}\npromote 7 {}\n",
                cwd.path().join("out/deep/r.txt").display(),
                cwd.path().join("old.txt").display()
            )
        );
    }

    #[test]
    fn discard_leaves_final_places_untouched() {
        let cwd = tempfile::tempdir().expect("tempdir");
        let log_path = cwd.path().join("events.log");
        let log = EventLog::open(&log_path).expect("log");
        let stage = Stage::new(9, cwd.path().to_path_buf(), &outs(&["r.txt"])).expect("stage");
        let dir = stage.create().expect("create");
        std::fs::write(dir.join("r.txt"), "stale").expect("write");
        std::fs::write(cwd.path().join("r.txt"), "counted").expect("write");
        stage.discard(Some(&log));
        assert_eq!(
            std::fs::read_to_string(cwd.path().join("r.txt")).expect("read"),
            "counted"
        );
        assert!(!dir.exists());
        assert_eq!(
            std::fs::read_to_string(&log_path).expect("log"),
            "discard 9\n"
        );
        // Twice (a duplicate ack) is harmless.
        stage.discard(None);
    }

    #[test]
    fn a_failed_promotion_warns_and_carries_on() {
        let cwd = tempfile::tempdir().expect("tempdir");
        let stage = Stage::new(5, cwd.path().to_path_buf(), &outs(&["blocked/x", "ok.txt"]))
            .expect("stage");
        let dir = stage.create().expect("create");
        std::fs::create_dir_all(dir.join("blocked")).expect("mkdir");
        std::fs::write(dir.join("blocked/x"), "x").expect("write");
        std::fs::write(dir.join("ok.txt"), "ok").expect("write");
        // A file where the parent dir should be: the first rename cannot happen.
        std::fs::write(cwd.path().join("blocked"), "in the way").expect("write");
        let promoted = stage.promote(None);
        assert_eq!(promoted, vec![cwd.path().join("ok.txt")]);
        assert!(!dir.exists());
    }

    #[test]
    fn absolute_and_climbing_outputs_are_never_staged() {
        let dir = Path::new("/w/.scalable-stage/1");
        assert_eq!(staged_path(dir, "/etc/passwd"), None);
        assert_eq!(staged_path(dir, "../x"), None);
        assert_eq!(staged_path(dir, "a/../../x"), None);
        assert_eq!(staged_path(dir, ""), None);
        assert_eq!(staged_path(dir, "./a/b"), Some(dir.join("a/b")));
    }

    #[test]
    fn create_never_makes_a_missing_cwd() {
        let stage = Stage::new(1, PathBuf::from("/nonexistent/scalable-cwd"), &outs(&["a"]))
            .expect("stage");
        assert!(stage.create().is_err());
        assert!(!Path::new("/nonexistent/scalable-cwd").exists());
    }
}
