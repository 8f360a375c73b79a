//! Files and directories only their owner may use: what the broker keeps under
//! its state dir (database, logs, cache blobs, pilot scripts).
//!
//! Every function sets the mode explicitly after creating (0600 for files,
//! 0700 for directories), so a permissive umask never leaves a file readable by
//! others, and a strict one never leaves it unusable. This module owns those
//! modes; it must not decide what goes where (`access` owns the layout).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file under the state dir.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory under (and of) the state dir.
pub const DIR_MODE: u32 = 0o700;

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Creates `dir` and any missing parents, each new level 0700. Levels that
/// already exist keep their mode: a parent such as `/tmp` is not ours.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => set_mode(dir, DIR_MODE),
        // Another thread or process made it meanwhile; it made it the same way.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates (or truncates) `path` for writing, 0600.
pub fn create(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Creates `path`, which must not exist yet, for writing, 0600.
pub fn create_new(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Makes sure `path` exists (an empty file if it did not) and is 0600,
/// without touching its content: a database SQLite is about to open.
pub fn ensure(path: &Path) -> io::Result<()> {
    match create_new(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => restrict(path),
        Err(e) => Err(e),
    }
}

/// Tightens an existing file to 0600 if its group or others may use it; a
/// missing file is fine (a `-wal` that does not exist yet).
pub fn restrict(path: &Path) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => set_mode(path, FILE_MODE),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_levels_are_0700_and_existing_parents_keep_their_mode() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let deep = tmp.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&tmp.path().join(d)), DIR_MODE, "{d}");
        }
        assert_eq!(mode(tmp.path()), 0o755);
        create_dir_all(&deep).unwrap();
    }

    #[test]
    fn files_are_0600_and_ensure_keeps_content() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        create(&a).unwrap();
        assert_eq!(mode(&a), FILE_MODE);
        let b = tmp.path().join("b");
        fs::write(&b, b"keep").unwrap();
        fs::set_permissions(&b, fs::Permissions::from_mode(0o644)).unwrap();
        ensure(&b).unwrap();
        assert_eq!(
            (mode(&b), fs::read(&b).unwrap()),
            (FILE_MODE, b"keep".to_vec())
        );
        let c = tmp.path().join("c");
        ensure(&c).unwrap();
        assert_eq!(mode(&c), FILE_MODE);
        assert!(create_new(&c).is_err());
        restrict(&tmp.path().join("missing")).unwrap();
    }
}
