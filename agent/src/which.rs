//! Finds programs on a `PATH` without running anything.
//!
//! Owns only the lookup. Detection code takes the `PATH` value as an argument, so
//! tests can point it at a temp dir holding fake programs instead of changing the
//! process environment.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The first executable regular file called `name` in the directories of `path`
/// (a `PATH` value). Empty entries mean the current directory, as in a shell.
pub fn find_on_path(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    let path = path?;
    std::env::split_paths(path).find_map(|dir| {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(name);
        let meta = std::fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn finds_executables_only_in_path_order() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        std::fs::write(a.path().join("tool"), "not executable").expect("write");
        let exe = b.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = std::env::join_paths([a.path(), b.path()]).expect("join");
        assert_eq!(find_on_path("tool", Some(&path)), Some(exe));
        assert_eq!(find_on_path("absent", Some(&path)), None);
        assert_eq!(find_on_path("tool", None), None);
        assert_eq!(find_on_path("tool", Some(&OsString::new())), None);
    }
}
