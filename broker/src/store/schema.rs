//! The store's tables, its schema version and the migrations that bring an
//! older database up to it.
//!
//! This module owns the DDL and `PRAGMA user_version`. It must not read or
//! write rows for the broker (that is the rest of `store`); a migration
//! touches old rows only to give them what the new version promises.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use scalable_common::protocol::AttemptEnd;

use super::error::RESTORE_HINT;
use super::StoreError;

/// Whether the state dir held a broker (certificate, tokens) before this
/// start. Only a new one may get a new, empty store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOrigin {
    New,
    Existing,
}

/// Problems of a failed integrity check quoted in the error at most.
const INTEGRITY_PROBLEMS_SHOWN: usize = 1;

fn empty_beside_identity(path: &Path, what: &str) -> StoreError {
    let dir = path.parent().unwrap_or(Path::new("."));
    StoreError::Refused {
        path: path.to_path_buf(),
        problem: format!(
            "{what} but {} holds an existing broker's certificate and tokens: taking it for a new store would restart the ids and lose every run's history",
            dir.display()
        ),
        hint: "restore broker.db from a backup; to start an empty history with the same identity, delete the file".into(),
    }
}

/// Before SQLite touches the file: a zero-byte database (with no WAL that
/// could fill it) in a state dir that is not new is refused. A missing
/// database is allowed: deleting it is how one asks for an empty history, so
/// the store is then opened as new.
pub(super) fn check_file(path: &Path, origin: StateOrigin) -> Result<StateOrigin, StoreError> {
    if origin == StateOrigin::New {
        return Ok(origin);
    }
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    match len(path) {
        None => {
            tracing::warn!(path = %path.display(), "no database beside the broker's identity; starting an empty history");
            Ok(StateOrigin::New)
        }
        Some(0) if len(&PathBuf::from(wal)).unwrap_or(0) == 0 => {
            Err(empty_beside_identity(path, "is empty (0 bytes)"))
        }
        Some(_) => Ok(origin),
    }
}

/// Right after opening, before anything is written: a database with tables
/// but no `runs` belongs to something else, and one without any table in a
/// state dir that is not new has lost its content.
pub(super) fn check_ours(
    conn: &Connection,
    path: &Path,
    origin: StateOrigin,
) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(err)?;
    if tables.is_empty() {
        return match origin {
            StateOrigin::New => Ok(()),
            StateOrigin::Existing => Err(empty_beside_identity(path, "has no tables")),
        };
    }
    if !tables.iter().any(|t| t == "runs") {
        let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        return Err(StoreError::Refused {
            path: path.to_path_buf(),
            problem: format!(
                "is not a scalable broker database (it has tables {}{} and no runs table)",
                shown.join(", "),
                if tables.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            ),
            hint: "give scalable-broker its own --state-dir, or move this file away".into(),
        });
    }
    Ok(())
}

/// SQLite's quick integrity check; a failure quotes its first problem only
/// (the full report can be thousands of lines).
pub(super) fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(err)?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    let lines: Vec<&str> = problems.iter().flat_map(|p| p.lines()).collect();
    let first: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with("***"))
        .take(INTEGRITY_PROBLEMS_SHOWN)
        .collect();
    let more = lines.len().saturating_sub(first.len() + 1);
    Err(StoreError::Refused {
        path: path.to_path_buf(),
        problem: format!(
            "is corrupt: its integrity check found {}{}",
            first.join("; "),
            if more > 0 {
                format!(" and {more} more problems")
            } else {
                String::new()
            }
        ),
        hint: RESTORE_HINT.into(),
    })
}

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    submitted_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER,
    state TEXT NOT NULL DEFAULT 'running',
    cwd TEXT NOT NULL,
    source TEXT NOT NULL,
    definition TEXT NOT NULL,
    -- When --telemetry-keep dropped its detail (schema 5); NULL: not yet.
    telemetry_pruned_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    tag TEXT,
    cpus INTEGER NOT NULL,
    memory_bytes INTEGER NOT NULL,
    gpus INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    first_task INTEGER NOT NULL,
    task_count INTEGER NOT NULL,
    -- 1: every task of this job without a row of its own is cancelled.
    cancel_marked INTEGER NOT NULL DEFAULT 0,
    -- Why its tasks were cancelled (`explain::Cancellation` as JSON); NULL
    -- before schema 4 or when nothing was cancelled.
    cancel_cause TEXT
);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs(run_id);
-- A task has a row once it did something (an attempt, a final state); tasks
-- without a row are still waiting or ready, counted from jobs.task_count.
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    retries_used INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_run ON tasks(run_id, state);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL,
    run_id INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    number INTEGER NOT NULL,
    agent_id INTEGER NOT NULL,
    argv TEXT NOT NULL,
    assigned_at_ms INTEGER NOT NULL,
    started_at_us INTEGER,
    ended_at_us INTEGER,
    end_class TEXT,
    -- 1 when this end used up one of the task's retries (AttemptEnd::spends_retry),
    -- 0 when not; NULL while the attempt runs.
    spends_retry INTEGER,
    exit_code INTEGER,
    detail TEXT,
    peak_rss_bytes INTEGER,
    -- The memory limit the agent enforced; NULL: none (or before schema 4).
    memory_limit_bytes INTEGER,
    cpu_time_us INTEGER,
    stdout_bytes INTEGER,
    stderr_bytes INTEGER,
    stdout_tail BLOB,
    stderr_tail BLOB,
    -- Telemetry (schema 5; NULL in older rows). When its task became ready:
    -- queue wait = assigned - ready, run time = ended - started.
    ready_at_ms INTEGER,
    -- What it asked for, and why (manifest | oom_retry | advisor).
    cpus INTEGER,
    memory_bytes INTEGER,
    gpus INTEGER,
    custom_resources TEXT,
    request_source TEXT,
    -- Storage I/O of the process tree as the kernel counts it; NULL: unknown.
    read_bytes INTEGER,
    write_bytes INTEGER,
    -- The declared inputs' total size and each size (JSON, declared order).
    input_bytes INTEGER,
    input_sizes TEXT
);
CREATE INDEX IF NOT EXISTS attempts_task ON attempts(task_id);
CREATE INDEX IF NOT EXISTS attempts_run ON attempts(run_id);
-- Attempts not ended yet: what a restarted broker restores.
CREATE INDEX IF NOT EXISTS attempts_open ON attempts(id) WHERE end_class IS NULL;
CREATE TABLE IF NOT EXISTS agents (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    hostname TEXT NOT NULL,
    tags TEXT NOT NULL,
    cpus INTEGER NOT NULL,
    memory_bytes INTEGER NOT NULL,
    gpus INTEGER NOT NULL,
    connected_at_ms INTEGER NOT NULL,
    left_at_ms INTEGER,
    left_reason TEXT,
    pilot_id TEXT
);
-- Every pilot the broker submitted (SPEC §8); agent_match is what its agent
-- reports as SCALABLE_PILOT_ID (JSON).
CREATE TABLE IF NOT EXISTS pilots (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    tag TEXT,
    provider_id TEXT NOT NULL,
    agent_match TEXT NOT NULL,
    state TEXT NOT NULL,
    agent_id INTEGER,
    submitted_at_ms INTEGER NOT NULL,
    connected_at_ms INTEGER,
    ended_at_ms INTEGER,
    reason TEXT,
    -- Telemetry (schema 5): the provider's kind, its price per pilot-hour
    -- where it knows one, and the cost once the pilot ended.
    provider TEXT,
    price_per_hour REAL,
    cost REAL
);
-- A long attempt's usage over time (schema 5): one row per interval, the
-- interval doubling as the attempt aged (at most USAGE_POINTS_MAX rows).
CREATE TABLE IF NOT EXISTS attempt_usage (
    attempt_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    cpu_ms INTEGER NOT NULL,
    rss_bytes INTEGER NOT NULL,
    PRIMARY KEY (attempt_id, at_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    run_id INTEGER,
    detail TEXT NOT NULL
);
"#;

/// The schema this build writes; a newer database, or one older than the
/// oldest migration, is refused with a clear line rather than misread.
pub(super) const SCHEMA_VERSION: i64 = 5;

/// Creates what is missing (tables and the cache's), then checks the
/// version and migrates an older database.
pub(super) fn prepare(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    conn.execute_batch(SCHEMA).map_err(err)?;
    conn.execute_batch(crate::cache::SCHEMA).map_err(err)?;
    let mut v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let runs: i64 = conn
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .map_err(err)?;
    if v == 0 && runs == 0 {
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(err)?;
        return Ok(());
    }
    if v == 2 {
        migrate_from_2(conn).map_err(err)?;
        v = 3;
    }
    if v == 3 {
        migrate_from_3(conn).map_err(err)?;
        v = 4;
    }
    if v == 4 {
        migrate_from_4(conn).map_err(err)?;
        v = 5;
    }
    if v != SCHEMA_VERSION {
        return Err(StoreError::Refused {
            path: path.to_path_buf(),
            problem: format!("has schema version {v}, this broker needs {SCHEMA_VERSION}"),
            hint: "use a new --state-dir, or the scalable version that wrote it".into(),
        });
    }
    Ok(())
}

/// One attempt end of each class a version-2 store can hold: what the
/// backfill asks [`AttemptEnd::spends_retry`] about, so the rule is written
/// once, in `AttemptEnd`.
fn ends_of_version_2() -> [AttemptEnd; 12] {
    [
        AttemptEnd::Exited { code: 0 },
        AttemptEnd::Exited { code: 1 },
        AttemptEnd::Signalled { signal: 9 },
        AttemptEnd::TimedOut,
        AttemptEnd::OutOfMemory,
        AttemptEnd::SpawnFailed {
            error: String::new(),
        },
        AttemptEnd::OutputsMissing {
            missing: Vec::new(),
        },
        AttemptEnd::AgentLost,
        AttemptEnd::Drained,
        AttemptEnd::Cancelled,
        AttemptEnd::Returned,
        AttemptEnd::InvalidInput {
            path: String::new(),
        },
    ]
}

/// 2 -> 3: attempts get `spends_retry`, filled in for every ended attempt
/// from its class. One transaction: a crash leaves version 2 as it was.
fn migrate_from_2(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch("ALTER TABLE attempts ADD COLUMN spends_retry INTEGER")?;
    for end in ends_of_version_2() {
        tx.execute(
            "UPDATE attempts SET spends_retry = ?2 WHERE end_class = ?1",
            params![end.class(), end.spends_retry()],
        )?;
    }
    tx.execute_batch("PRAGMA user_version = 3")?;
    tx.commit()
}

/// 3 -> 4: attempts keep the memory limit they ran under, jobs why their
/// tasks were cancelled. Old rows keep NULL (unknown). One transaction.
fn migrate_from_3(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    add_column(&tx, "attempts", "memory_limit_bytes", "INTEGER")?;
    add_column(&tx, "jobs", "cancel_cause", "TEXT")?;
    tx.execute_batch("PRAGMA user_version = 4")?;
    tx.commit()
}

/// The columns schema 5 added, by table (telemetry, issue 16).
const COLUMNS_OF_VERSION_5: [(&str, &str, &str); 14] = [
    ("runs", "telemetry_pruned_at_ms", "INTEGER"),
    ("attempts", "ready_at_ms", "INTEGER"),
    ("attempts", "cpus", "INTEGER"),
    ("attempts", "memory_bytes", "INTEGER"),
    ("attempts", "gpus", "INTEGER"),
    ("attempts", "custom_resources", "TEXT"),
    ("attempts", "request_source", "TEXT"),
    ("attempts", "read_bytes", "INTEGER"),
    ("attempts", "write_bytes", "INTEGER"),
    ("attempts", "input_bytes", "INTEGER"),
    ("attempts", "input_sizes", "TEXT"),
    ("pilots", "provider", "TEXT"),
    ("pilots", "price_per_hour", "REAL"),
    ("pilots", "cost", "REAL"),
];

/// 4 -> 5: attempts and pilots get their telemetry columns (`attempt_usage`
/// is made by `SCHEMA`). Old rows keep NULL: unknown, never zero. One
/// transaction.
fn migrate_from_4(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    for (table, column, ty) in COLUMNS_OF_VERSION_5 {
        add_column(&tx, table, column, ty)?;
    }
    tx.execute_batch("PRAGMA user_version = 5")?;
    tx.commit()
}

/// Adds a column unless the table has it (a store created by a later
/// `SCHEMA` and marked older, as the tests' fixtures are).
fn add_column(conn: &Connection, table: &str, column: &str, ty: &str) -> rusqlite::Result<()> {
    let has: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        params![table, column],
        |r| r.get(0),
    )?;
    if has == 0 {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attempts table as version 2 wrote it: no `spends_retry`.
    fn version_2_store(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(
            "ALTER TABLE attempts DROP COLUMN spends_retry;
             PRAGMA user_version = 2;
             INSERT INTO runs (id, name, submitted_at_ms, cwd, source, definition)
                 VALUES (1, 'r', 0, '/', 'wf.yaml', '{}');",
        )
        .unwrap();
        for (id, class) in [
            (1, Some("SUCCESS")),
            (2, Some("EXIT_CODE")),
            (3, Some("AGENT_LOST")),
            (4, Some("INVALID_INPUT")),
            (5, Some("CANCELLED")),
            (6, None),
        ] {
            conn.execute(
                "INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms, end_class)
                 VALUES (?1, ?1, 1, 1, 0, 1, 1, '[]', 0, ?2)",
                params![id, class],
            )
            .unwrap();
        }
        conn
    }

    fn spends(conn: &Connection) -> Vec<(i64, Option<i64>)> {
        conn.prepare("SELECT id, spends_retry FROM attempts ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_version_2_store_is_migrated_and_backfilled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        drop(version_2_store(&path));
        let conn = Connection::open(&path).unwrap();
        prepare(&conn, &path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        assert_eq!(
            spends(&conn),
            [
                (1, Some(0)),
                (2, Some(1)),
                (3, Some(0)),
                (4, Some(1)),
                (5, Some(0)),
                (6, None)
            ],
            "ended attempts get their class's rule; a running one stays open"
        );
        // Opening it again is a plain version-3 open.
        prepare(&conn, &path).unwrap();
        assert_eq!(spends(&conn).len(), 6);
    }

    #[test]
    fn the_broker_opens_a_version_2_store_and_reads_its_stats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let old = version_2_store(&path);
        old.execute_batch(
            "INSERT INTO jobs (id, run_id, name, cpus, memory_bytes, gpus, priority, retries, first_task, task_count)
                 VALUES (1, 1, 'j', 1, 0, 0, 0, 0, 1, 6);
             UPDATE attempts SET started_at_us = 0, ended_at_us = 1000 WHERE end_class IS NOT NULL;",
        )
        .unwrap();
        drop(old);
        let (store, ids, _loaded) =
            super::super::Store::open(&path, StateOrigin::Existing).unwrap();
        store.stop();
        assert_eq!(ids.attempt, 7);
        let conn = Connection::open(&path).unwrap();
        let stats = super::super::run_stats(&conn, 1, 0).unwrap();
        assert_eq!((stats.tasks, stats.attempts), (6, 6));
        assert_eq!(spends(&conn)[1], (2, Some(1)));
    }

    /// A version-3 store (before issue 13) opens: its attempts and jobs get
    /// the columns of version 4, empty.
    #[test]
    fn a_version_3_store_gets_the_columns_of_version_4() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(
            "ALTER TABLE attempts DROP COLUMN memory_limit_bytes;
             ALTER TABLE jobs DROP COLUMN cancel_cause;
             PRAGMA user_version = 3;
             INSERT INTO runs (id, name, submitted_at_ms, cwd, source, definition)
                 VALUES (1, 'r', 0, '/', 'wf.yaml', '{}');
             INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms, end_class)
                 VALUES (1, 1, 1, 1, 0, 1, 1, '[]', 0, 'MEMORY_EXHAUSTION');",
        )
        .unwrap();
        prepare(&conn, &path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION, "4, then on to the newest");
        let limit: Option<i64> = conn
            .query_row("SELECT memory_limit_bytes FROM attempts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(limit, None);
        conn.execute_batch("SELECT cancel_cause FROM jobs").unwrap();
    }

    /// A version-4 store (before issue 16) as that release wrote it: its
    /// attempts and pilots without the telemetry columns, no usage table.
    fn version_4_store(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let mut drop = String::from("DROP TABLE attempt_usage;");
        for (table, column, _) in COLUMNS_OF_VERSION_5 {
            drop.push_str(&format!("ALTER TABLE {table} DROP COLUMN {column};"));
        }
        conn.execute_batch(&drop).unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 4;
             INSERT INTO runs (id, name, submitted_at_ms, cwd, source, definition)
                 VALUES (1, 'r', 0, '/', 'wf.yaml', '{}');
             INSERT INTO jobs (id, run_id, name, cpus, memory_bytes, gpus, priority, retries, first_task, task_count)
                 VALUES (1, 1, 'j', 1, 0, 0, 0, 0, 1, 1);
             INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms,
                                   started_at_us, ended_at_us, end_class, spends_retry, peak_rss_bytes, cpu_time_us)
                 VALUES (1, 1, 1, 1, 0, 1, 1, '[]', 5, 6000, 9000, 'SUCCESS', 0, 1024, 2000);
             INSERT INTO pilots (id, target, provider_id, agent_match, state, submitted_at_ms, ended_at_ms)
                 VALUES ('p-1', 'hpc', '42', '{\"exact\":\"42\"}', 'ended', 0, 3600000);",
        )
        .unwrap();
        conn
    }

    /// Issue 16: an older store is migrated at start, never misread: its
    /// rows keep what they had and the telemetry they never measured is
    /// NULL (unknown), not zero.
    #[test]
    fn a_version_4_store_is_migrated_to_the_telemetry_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        drop(version_4_store(&path));
        let (store, ids, _loaded) =
            super::super::Store::open(&path, StateOrigin::Existing).unwrap();
        store.stop();
        assert_eq!(ids.attempt, 2);
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 5);
        let row: (i64, Option<i64>, Option<i64>, Option<String>, Option<i64>) = conn
            .query_row(
                "SELECT peak_rss_bytes, ready_at_ms, read_bytes, request_source, cpus FROM attempts WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(row, (1024, None, None, None, None));
        let cost: (Option<String>, Option<f64>) = conn
            .query_row("SELECT provider, cost FROM pilots", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(cost, (None, None));
        let usage: i64 = conn
            .query_row("SELECT COUNT(*) FROM attempt_usage", [], |r| r.get(0))
            .unwrap();
        assert_eq!(usage, 0);
        let stats = super::super::run_stats(&conn, 1, 0).unwrap();
        assert_eq!((stats.tasks, stats.attempts), (1, 1));
    }

    #[test]
    fn every_class_of_version_2_is_backfilled() {
        let classes: std::collections::BTreeSet<&str> =
            ends_of_version_2().iter().map(AttemptEnd::class).collect();
        assert_eq!(
            classes.len(),
            ends_of_version_2().len(),
            "one end per class"
        );
    }

    #[test]
    fn a_newer_or_unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let conn = version_2_store(&path);
        conn.execute_batch("PRAGMA user_version = 9").unwrap();
        let e = prepare(&conn, &path).unwrap_err().to_string();
        assert!(
            e.ends_with(&format!("has schema version 9, this broker needs {SCHEMA_VERSION} (use a new --state-dir, or the scalable version that wrote it)")),
            "{e}"
        );
    }

    fn open(path: &Path, origin: StateOrigin) -> Result<(), String> {
        let (store, _, _) = super::super::Store::open(path, origin).map_err(|e| e.to_string())?;
        store.stop();
        Ok(())
    }

    #[test]
    fn a_zero_byte_or_tableless_database_beside_an_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        std::fs::write(&path, b"").unwrap();
        let e = open(&path, StateOrigin::Existing).unwrap_err();
        assert_eq!(
            e,
            format!(
                "database {}: is empty (0 bytes) but {} holds an existing broker's certificate and tokens: taking it for a new store would restart the ids and lose every run's history (restore broker.db from a backup; to start an empty history with the same identity, delete the file)",
                path.display(),
                dir.path().display()
            )
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as it was");
        // A valid SQLite file without any table is the same loss.
        drop(
            Connection::open(&path)
                .unwrap()
                .execute_batch("PRAGMA user_version = 0; VACUUM;"),
        );
        let e = open(&path, StateOrigin::Existing).unwrap_err();
        assert!(e.contains(": has no tables but "), "{e}");
        // A new state dir may start from an empty file, and a missing one.
        open(&path, StateOrigin::New).unwrap();
        let other = dir.path().join("other.db");
        open(&other, StateOrigin::Existing).unwrap();
    }

    #[test]
    fn a_foreign_or_damaged_database_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE photos (id INTEGER); CREATE TABLE albums (id INTEGER);")
            .unwrap();
        for origin in [StateOrigin::New, StateOrigin::Existing] {
            let e = open(&path, origin).unwrap_err();
            assert!(
                e.ends_with(": is not a scalable broker database (it has tables albums, photos and no runs table) (give scalable-broker its own --state-dir, or move this file away)"),
                "{e}"
            );
        }
        std::fs::write(&path, "this is not sqlite ".repeat(300)).unwrap();
        let e = open(&path, StateOrigin::Existing).unwrap_err();
        assert_eq!(
            e,
            format!(
                "database {}: file is not a database (restore it from a backup, or move it away to start a new store with an empty history)",
                path.display()
            ),
            "said once, with a hint"
        );
    }

    #[test]
    fn a_corrupt_database_error_is_one_line_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        open(&path, StateOrigin::New).unwrap();
        let conn = Connection::open(&path).unwrap();
        // The store just dropped may still be closing its connection on its
        // own thread; leaving WAL mode needs the database to itself.
        // SQLite answers a journal-mode change with BUSY at once while another
        // connection is open (no busy handler), so the test retries.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while let Err(e) = conn.execute_batch("PRAGMA journal_mode = DELETE;") {
            assert!(std::time::Instant::now() < deadline, "{e}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let row = "x".repeat(200);
        for i in 0..400 {
            conn.execute(
                "INSERT INTO events (at_ms, kind, detail) VALUES (?1, 'k', ?2)",
                params![i, row],
            )
            .unwrap();
        }
        drop(conn);
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096;
        for b in bytes[page * 3..].iter_mut().step_by(7) {
            *b = 0xff;
        }
        std::fs::write(&path, &bytes).unwrap();
        let e = open(&path, StateOrigin::Existing).unwrap_err();
        assert!(!e.contains('\n'), "one line: {e}");
        assert!(
            e.starts_with(&format!("database {}: ", path.display())),
            "{e}"
        );
        assert!(
            e.ends_with("(restore it from a backup, or move it away to start a new store with an empty history)"),
            "{e}"
        );
    }

    #[test]
    fn the_database_and_its_wal_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let (store, _, _) = super::super::Store::open(&path, StateOrigin::New).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for name in ["broker.db", "broker.db-wal", "broker.db-shm"] {
            assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
        }
        store.stop();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        open(&path, StateOrigin::Existing).unwrap();
        assert_eq!(mode(&path), 0o600, "an older, looser database is tightened");
    }
}
