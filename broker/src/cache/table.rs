//! The `cache_entries` table: its DDL and the statements the store runs on
//! its own connection (SQL still runs only on the store's writer thread).
//!
//! Must not touch blob files or decide what a hit means.

use rusqlite::OptionalExtension;

use super::{CacheKey, SavedOutput};

/// The `cache_entries` table; the store runs it with its own schema.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cache_entries (
    key TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    job TEXT NOT NULL,
    idx INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    attempt_id INTEGER NOT NULL,
    parts TEXT NOT NULL,
    outputs TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_entries_by_task
    ON cache_entries (workflow, job, idx, created_at_ms);
";

/// One row of `cache_entries`: which task produced a key and what it saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub workflow: String,
    pub job: String,
    pub idx: u64,
    pub task_id: u64,
    pub attempt_id: u64,
    /// Stored as JSON in `parts`.
    pub parts: CacheKey,
    /// Stored as JSON in `outputs`.
    pub outputs: Vec<SavedOutput>,
    pub created_at_ms: u64,
}

const ENTRY_COLUMNS: &str =
    "key, workflow, job, idx, task_id, attempt_id, parts, outputs, created_at_ms";

/// The entry with this key, if any.
pub fn lookup(conn: &rusqlite::Connection, key: &str) -> rusqlite::Result<Option<Entry>> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM cache_entries WHERE key = ?1");
    conn.prepare_cached(&sql)?
        .query_row([key], entry_from_row)
        .optional()
}

/// The most recent entry of the same task path (`workflow/job/idx`), to
/// explain a miss.
pub fn latest_for(
    conn: &rusqlite::Connection,
    workflow: &str,
    job: &str,
    idx: u64,
) -> rusqlite::Result<Option<Entry>> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM cache_entries WHERE workflow = ?1 AND job = ?2 AND idx = ?3 \
         ORDER BY created_at_ms DESC, rowid DESC LIMIT 1"
    );
    conn.prepare_cached(&sql)?
        .query_row(
            rusqlite::params![workflow, job, sql_int(idx)?],
            entry_from_row,
        )
        .optional()
}

/// Inserts an entry, replacing any earlier one with the same key (the latest
/// successful run of a key is the one restored).
pub fn insert(conn: &rusqlite::Connection, e: &Entry) -> rusqlite::Result<()> {
    let json = |v: serde_json::Result<String>| {
        v.map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))
    };
    let parts = json(serde_json::to_string(&e.parts))?;
    let outputs = json(serde_json::to_string(&e.outputs))?;
    let sql = format!(
        "INSERT OR REPLACE INTO cache_entries ({ENTRY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    );
    conn.prepare_cached(&sql)?.execute(rusqlite::params![
        e.key,
        e.workflow,
        e.job,
        sql_int(e.idx)?,
        sql_int(e.task_id)?,
        sql_int(e.attempt_id)?,
        parts,
        outputs,
        sql_int(e.created_at_ms)?,
    ])?;
    Ok(())
}

/// SQLite integers are i64; ids and times above `i64::MAX` are refused, not
/// wrapped.
fn sql_int(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))
}

fn uint(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let v: i64 = r.get(i)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
}

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    fn json<T: serde::de::DeserializeOwned>(
        r: &rusqlite::Row<'_>,
        i: usize,
    ) -> rusqlite::Result<T> {
        let text: String = r.get(i)?;
        serde_json::from_str(&text).map_err(|err| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(err))
        })
    }
    Ok(Entry {
        key: r.get(0)?,
        workflow: r.get(1)?,
        job: r.get(2)?,
        idx: uint(r, 3)?,
        task_id: uint(r, 4)?,
        attempt_id: uint(r, 5)?,
        parts: json(r, 6)?,
        outputs: json(r, 7)?,
        created_at_ms: uint(r, 8)?,
    })
}
