//! Where an attempt's declared outputs are staged and how they are promoted
//! (SPEC §5, reliability.md rule 3.7). Shared by the agent, which promotes on
//! the broker's `counted` ack, and the broker, which promotes right after it
//! commits the counted result when it shares the task's filesystem (so a
//! counted output survives an agent killed before its ack arrived). Rename is
//! atomic and whoever comes second finds nothing to move: promotion is
//! idempotent.

use std::io;
use std::path::{Component, Path, PathBuf};

use crate::protocol::AttemptId;

/// Where stages live, relative to the task's cwd.
pub const STAGE_ROOT: &str = ".scalable-stage";

/// `<cwd>/.scalable-stage/<attempt>`.
pub fn stage_dir(cwd: &Path, attempt: AttemptId) -> PathBuf {
    cwd.join(STAGE_ROOT).join(attempt.to_string())
}

/// Where output `o` is staged in `dir`, if it can be (a plain relative path:
/// absolute outputs and `..` are never staged).
pub fn staged_path(dir: &Path, o: &str) -> Option<PathBuf> {
    let p = Path::new(o);
    let plain = p.components().next().is_some()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    plain.then(|| dir.join(p))
}

/// Whether something (file, dir, even a dangling symlink) is at `p`.
pub fn present(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// Renames every staged output of `attempt` into its final place (parent
/// directories created; an existing file replaced atomically). Returns, for
/// each output that was staged, its final path and how the rename went; an
/// output someone else promoted meanwhile counts as done.
pub fn promote(
    cwd: &Path,
    attempt: AttemptId,
    outputs: &[String],
) -> Vec<(PathBuf, PathBuf, io::Result<()>)> {
    let dir = stage_dir(cwd, attempt);
    let mut done = Vec::new();
    for o in outputs {
        let Some(src) = staged_path(&dir, o) else {
            continue;
        };
        if !present(&src) {
            continue;
        }
        let dst = cwd.join(o);
        let moved = match dst.parent() {
            Some(parent) => std::fs::create_dir_all(parent),
            None => Ok(()),
        }
        .and_then(|()| std::fs::rename(&src, &dst));
        let moved = match moved {
            Err(e) if e.kind() == io::ErrorKind::NotFound && !present(&src) => Ok(()),
            other => other,
        };
        done.push((src, dst, moved));
    }
    done
}

/// Removes an attempt's stage (after promotion, or to discard it).
pub fn remove(cwd: &Path, attempt: AttemptId) -> io::Result<()> {
    match std::fs::remove_dir_all(stage_dir(cwd, attempt)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_is_idempotent_and_skips_unstaged_outputs() {
        let cwd = tempfile::tempdir().unwrap();
        let dir = stage_dir(cwd.path(), 9);
        std::fs::create_dir_all(dir.join("out")).unwrap();
        std::fs::write(dir.join("out/a.txt"), "nine").unwrap();
        let outs = vec![
            "out/a.txt".to_string(),
            "b.txt".to_string(),
            "/abs".to_string(),
        ];
        let first = promote(cwd.path(), 9, &outs);
        assert_eq!(first.len(), 1);
        assert!(first[0].2.is_ok());
        assert_eq!(
            std::fs::read_to_string(cwd.path().join("out/a.txt")).unwrap(),
            "nine"
        );
        assert!(
            promote(cwd.path(), 9, &outs).is_empty(),
            "second time: nothing to move"
        );
        remove(cwd.path(), 9).unwrap();
        remove(cwd.path(), 9).unwrap();
        assert!(!present(&dir));
    }
}
