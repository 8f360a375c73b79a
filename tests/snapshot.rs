//! Expected text kept in plain files under `tests/snapshots/` (STYLE habit
//! 9): what a person reads, compared exactly after machine-specific parts
//! were redacted by the caller. `SCALABLE_BLESS=1` rewrites the files from
//! what the code prints now (then read the diff before committing it).

use std::path::PathBuf;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the broker package is in the repository")
        .to_path_buf()
}

/// Compares `actual` with `tests/snapshots/NAME`, or writes it there under
/// `SCALABLE_BLESS=1`.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = repo_root().join("tests/snapshots").join(name);
    if std::env::var_os("SCALABLE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (SCALABLE_BLESS=1 writes it from this run)",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from this run, first at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             ---- this run ----\n{actual}\n---- (SCALABLE_BLESS=1 rewrites the file)",
            path.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("(end of file)"),
            actual.lines().nth(first).unwrap_or("(end of output)"),
        );
    }
}
