//! The store's tables, its schema version and the migrations that bring an
//! older database up to it.
//!
//! This module owns the DDL and `PRAGMA user_version`. It must not read or
//! write rows for the broker (that is the rest of `store`); a migration
//! touches old rows only to give them what the new version promises.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

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
    input_sizes TEXT,
    -- How an advisor sized it (schema 6; NULL unless its job asked for
    -- memory/cpus/walltime: auto): the model and its confidence, how the
    -- request was made (or why it fell back), and the advisor's upper bounds.
    request_model TEXT,
    request_confidence REAL,
    request_detail TEXT,
    predicted_memory_bytes INTEGER,
    predicted_run_time_ms INTEGER,
    -- What the ResourceAdvisor (P95 + headroom) said, for comparison.
    percentile_memory_bytes INTEGER,
    percentile_run_time_ms INTEGER,
    -- What staging moved for it (schema 7; NULL: nothing reported, as with
    -- a shared filesystem): inputs (and a restored checkpoint) in, declared
    -- outputs out, checkpoint snapshots uploaded; bytes and milliseconds.
    stage_in_bytes INTEGER,
    stage_in_ms INTEGER,
    stage_out_bytes INTEGER,
    stage_out_ms INTEGER,
    checkpoint_bytes INTEGER,
    checkpoint_ms INTEGER
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
-- Every decision of the AdaptiveScaler worth keeping (SPEC §9): its inputs
-- and the full decision as JSON, the seed's fields, and its outcome (NULL
-- until filled in). One per target and evaluation time.
CREATE TABLE IF NOT EXISTS scaling_decisions (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    workers_to_add TEXT NOT NULL,
    workers_to_remove TEXT NOT NULL,
    cancelled TEXT NOT NULL,
    drained TEXT NOT NULL,
    reasoning TEXT NOT NULL,
    confidence REAL NOT NULL,
    predicted_completion_s REAL,
    inputs TEXT NOT NULL,
    decision TEXT NOT NULL,
    pilots_connected_at_ms INTEGER,
    busy_s REAL,
    idle_s REAL,
    cost REAL,
    UNIQUE (target, at_ms)
);
CREATE INDEX IF NOT EXISTS scaling_decisions_at ON scaling_decisions(at_ms);
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
pub(super) const SCHEMA_VERSION: i64 = 7;

/// Creates what is missing (tables and the cache's), then checks the
/// version and migrates an older database.
pub(super) fn prepare(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    conn.execute_batch(SCHEMA).map_err(err)?;
    conn.execute_batch(crate::cache::SCHEMA).map_err(err)?;
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let runs: i64 = conn
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .map_err(err)?;
    if v == 0 && runs == 0 {
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(err)?;
    } else {
        let v = super::migrations::migrate(conn, v).map_err(err)?;
        if v != SCHEMA_VERSION {
            return Err(StoreError::Refused {
                path: path.to_path_buf(),
                problem: format!("has schema version {v}, this broker needs {SCHEMA_VERSION}"),
                hint: "use a new --state-dir, or the scalable version that wrote it".into(),
            });
        }
    }
    // Views name columns of the newest schema: made once the tables have them.
    conn.execute_batch(VIEWS).map_err(err)
}

/// Every attempt with what a query about it needs from other tables (its
/// job's name and tag, its agent's host, the target, pilot and provider of
/// the pilot that agent was), so telemetry is queryable without joins
/// (SPEC §10). Remade at every start: a view holds no data.
pub(super) const VIEWS: &str = r#"
DROP VIEW IF EXISTS attempt_telemetry;
CREATE VIEW attempt_telemetry AS
SELECT a.*, j.name AS job_name, j.tag AS tag, ag.hostname AS host,
       p.target AS target, p.id AS pilot, p.provider AS provider
FROM attempts a
JOIN jobs j ON j.id = a.job_id
LEFT JOIN agents ag ON ag.id = a.agent_id
LEFT JOIN (SELECT agent_id, MIN(id) AS id, target, provider FROM pilots
           WHERE agent_id IS NOT NULL GROUP BY agent_id) p ON p.agent_id = a.agent_id;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-4 store (before issue 18) opens at version 5 with an empty
    /// `scaling_decisions` table.
    #[test]
    fn a_version_4_store_gets_the_scaling_decisions_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(
            "DROP TABLE scaling_decisions;
             PRAGMA user_version = 4;
             INSERT INTO runs (id, name, submitted_at_ms, cwd, source, definition)
                 VALUES (1, 'r', 0, '/', 'wf.yaml', '{}');",
        )
        .unwrap();
        prepare(&conn, &path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION, "5, then on to the newest");
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM scaling_decisions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn a_newer_or_unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, name, submitted_at_ms, cwd, source, definition)
                 VALUES (1, 'r', 0, '/', 'wf.yaml', '{}');
             PRAGMA user_version = 9;",
        )
        .unwrap();
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
                rusqlite::params![i, row],
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
