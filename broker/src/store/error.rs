//! The store's errors: one line each that names the database file and says
//! what to do about it.
//!
//! This module owns the wording and the hints by SQLite result code; it must
//! not open, read or repair a database.

use std::fmt;
use std::path::PathBuf;

use rusqlite::ErrorCode;

/// What to do about a database the broker cannot use as it is.
pub(super) const RESTORE_HINT: &str =
    "restore it from a backup, or move it away to start a new store with an empty history";

#[derive(Debug)]
pub enum StoreError {
    /// SQLite failed on this file.
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The file is there but is not this broker's store as it should be
    /// (empty beside an existing identity, foreign, damaged, newer).
    Refused {
        path: PathBuf,
        problem: String,
        hint: String,
    },
    /// The store's writer thread has stopped.
    Stopped,
    NotFound(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Sqlite { path, source } => write!(
                f,
                "database {}: {} ({})",
                path.display(),
                reason(source),
                hint(source)
            ),
            StoreError::Refused {
                path,
                problem,
                hint,
            } => write!(f, "database {}: {problem} ({hint})", path.display()),
            StoreError::Stopped => f.write_str("the store's writer thread has stopped"),
            StoreError::NotFound(what) => f.write_str(what),
        }
    }
}

/// No `source()`: the message already holds the cause, and a chain would
/// make `{:#}` print it a second and third time.
impl std::error::Error for StoreError {}

/// SQLite's own message once, lowercase, without rusqlite's `Error code N:`
/// restatement.
fn reason(e: &rusqlite::Error) -> String {
    let text = match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) if !msg.is_empty() => msg.clone(),
        rusqlite::Error::SqliteFailure(code, _) => code.to_string(),
        other => other.to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

fn hint(e: &rusqlite::Error) -> &'static str {
    let code = match e {
        rusqlite::Error::SqliteFailure(code, _) => code.code,
        _ => return "check the file; this may be a bug in scalable, please report it",
    };
    match code {
        ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => RESTORE_HINT,
        ErrorCode::DiskFull => "free space on its file system, then start the broker again",
        ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen => {
            "check that the broker's user owns the state dir and may write it"
        }
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
            "is another broker running on this --state-dir?"
        }
        ErrorCode::SystemIoFailure => "check the disk and the file system",
        _ => "check the file, or restore it from a backup",
    }
}
