//! The steps that bring a store of an older schema up to this build's:
//! each version's step adds what it promised, in one transaction, and
//! leaves old rows with what they had (NULL for what they never measured).
//!
//! Owns `migrate` and the steps (2 → 3 → 4 → 5 → 6 → 7). It must not create tables
//! (`schema::SCHEMA` does, before it runs) nor decide which versions are
//! refused (`schema::prepare` does).

use rusqlite::{params, Connection};
use scalable_common::protocol::AttemptEnd;

/// Brings a store of version `v` as far as the steps go; returns the version
/// it reached (`v` itself when no step starts there).
pub(super) fn migrate(conn: &Connection, mut v: i64) -> rusqlite::Result<i64> {
    if v == 2 {
        migrate_from_2(conn)?;
        v = 3;
    }
    if v == 3 {
        migrate_from_3(conn)?;
        v = 4;
    }
    if v == 4 {
        migrate_from_4(conn)?;
        v = 5;
    }
    if v == 5 {
        migrate_from_5(conn)?;
        v = 6;
    }
    if v == 6 {
        migrate_from_6(conn)?;
        v = 7;
    }
    Ok(v)
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

/// The columns schema 4 added (issue 13).
const COLUMNS_OF_VERSION_4: [(&str, &str, &str); 2] = [
    ("attempts", "memory_limit_bytes", "INTEGER"),
    ("jobs", "cancel_cause", "TEXT"),
];

/// 3 -> 4: attempts keep the memory limit they ran under, jobs why their
/// tasks were cancelled. Old rows keep NULL (unknown).
fn migrate_from_3(conn: &Connection) -> rusqlite::Result<()> {
    add_columns(conn, &COLUMNS_OF_VERSION_4, 4)
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
/// is made by `SCHEMA`). Old rows keep NULL: unknown, never zero.
fn migrate_from_4(conn: &Connection) -> rusqlite::Result<()> {
    add_columns(conn, &COLUMNS_OF_VERSION_5, 5)
}

/// The columns schema 6 added (issue 17: how an advisor sized an attempt).
const COLUMNS_OF_VERSION_6: [(&str, &str, &str); 7] = [
    ("attempts", "request_model", "TEXT"),
    ("attempts", "request_confidence", "REAL"),
    ("attempts", "request_detail", "TEXT"),
    ("attempts", "predicted_memory_bytes", "INTEGER"),
    ("attempts", "predicted_run_time_ms", "INTEGER"),
    ("attempts", "percentile_memory_bytes", "INTEGER"),
    ("attempts", "percentile_run_time_ms", "INTEGER"),
];

/// 5 -> 6: the advisor's sizing of an attempt. Old rows keep NULL (no
/// attempt was sized before).
fn migrate_from_5(conn: &Connection) -> rusqlite::Result<()> {
    add_columns(conn, &COLUMNS_OF_VERSION_6, 6)
}

/// The columns schema 7 added (issue 20: what staging moved per attempt).
const COLUMNS_OF_VERSION_7: [(&str, &str, &str); 6] = [
    ("attempts", "stage_in_bytes", "INTEGER"),
    ("attempts", "stage_in_ms", "INTEGER"),
    ("attempts", "stage_out_bytes", "INTEGER"),
    ("attempts", "stage_out_ms", "INTEGER"),
    ("attempts", "checkpoint_bytes", "INTEGER"),
    ("attempts", "checkpoint_ms", "INTEGER"),
];

/// 6 -> 7: transfer telemetry. Old rows keep NULL (nothing was measured).
fn migrate_from_6(conn: &Connection) -> rusqlite::Result<()> {
    add_columns(conn, &COLUMNS_OF_VERSION_7, 7)
}

/// A step that only adds `columns` (table, column, type), then marks the
/// store `version`; one transaction: a crash leaves the older version as it
/// was.
fn add_columns(
    conn: &Connection,
    columns: &[(&str, &str, &str)],
    version: i64,
) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    for (table, column, ty) in columns {
        add_column(&tx, table, column, ty)?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {version}"))?;
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
    use std::path::Path;

    use super::super::schema::{prepare, StateOrigin, SCHEMA, SCHEMA_VERSION};
    use super::*;

    /// Run 1, which every older store below holds.
    const RUN_1: &str = "INSERT INTO runs (id, name, submitted_at_ms, cwd, source, definition)
        VALUES (1, 'r', 0, '/', 'wf.yaml', '{}');";

    /// One attempt of run 1, its request from the manifest.
    const ONE_ATTEMPT: &str = "INSERT INTO attempts (id, task_id, run_id, job_id, idx, number,
        agent_id, argv, assigned_at_ms, request_source)
        VALUES (1, 1, 1, 1, 0, 1, 1, '[]', 0, 'manifest');";

    /// This build's schema taken back to `version`: `undo` run and the
    /// `columns` later versions added dropped; then run 1 and `rows`.
    fn store_at(
        path: &Path,
        version: i64,
        undo: &str,
        columns: &[(&str, &str, &str)],
        rows: &str,
    ) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let mut sql = String::from(undo);
        for (table, column, _) in columns {
            sql.push_str(&format!("ALTER TABLE {table} DROP COLUMN {column};"));
        }
        sql.push_str(&format!("PRAGMA user_version = {version}; {RUN_1} {rows}"));
        conn.execute_batch(&sql).unwrap();
        conn
    }

    fn user_version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    /// The attempts table as version 2 wrote it: no `spends_retry`.
    fn version_2_store(path: &Path) -> Connection {
        let conn = store_at(
            path,
            2,
            "ALTER TABLE attempts DROP COLUMN spends_retry;",
            &[],
            "",
        );
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
        let v = user_version(&conn);
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
        let conn = store_at(
            &path,
            3,
            "",
            &COLUMNS_OF_VERSION_4,
            "INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms, end_class)
                 VALUES (1, 1, 1, 1, 0, 1, 1, '[]', 0, 'MEMORY_EXHAUSTION');",
        );
        prepare(&conn, &path).unwrap();
        let v = user_version(&conn);
        assert_eq!(v, SCHEMA_VERSION, "4, then on to the newest");
        let limit: Option<i64> = conn
            .query_row("SELECT memory_limit_bytes FROM attempts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(limit, None);
        conn.execute_batch("SELECT cancel_cause FROM jobs").unwrap();
    }

    /// Issue 20: a version-6 store gets the transfer columns, NULL in its
    /// rows (nothing was staged with a figure before).
    #[test]
    fn a_version_6_store_gets_the_transfer_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let conn = store_at(&path, 6, "", &COLUMNS_OF_VERSION_7, ONE_ATTEMPT);
        prepare(&conn, &path).unwrap();
        let v = user_version(&conn);
        assert_eq!(v, 7);
        let row: (Option<i64>, Option<i64>) = conn
            .query_row(
                "SELECT stage_in_bytes, checkpoint_ms FROM attempts WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(row, (None, None));
    }

    /// Issue 17: a version-5 store gets the advisor's columns, NULL in its
    /// rows (no attempt was sized by an advisor before).
    #[test]
    fn a_version_5_store_gets_the_sizing_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let conn = store_at(&path, 5, "", &COLUMNS_OF_VERSION_6, ONE_ATTEMPT);
        prepare(&conn, &path).unwrap();
        let v = user_version(&conn);
        assert_eq!(v, SCHEMA_VERSION, "6, then on to the newest");
        let row: (Option<String>, Option<i64>) = conn
            .query_row(
                "SELECT request_model, predicted_memory_bytes FROM attempts WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(row, (None, None));
    }

    /// A version-4 store (before issue 16) as that release wrote it: its
    /// attempts and pilots without the telemetry columns, no usage table.
    fn version_4_store(path: &Path) -> Connection {
        store_at(
            path,
            4,
            "DROP TABLE attempt_usage;",
            &COLUMNS_OF_VERSION_5,
            "INSERT INTO jobs (id, run_id, name, cpus, memory_bytes, gpus, priority, retries, first_task, task_count)
                 VALUES (1, 1, 'j', 1, 0, 0, 0, 0, 1, 1);
             INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms,
                                   started_at_us, ended_at_us, end_class, spends_retry, peak_rss_bytes, cpu_time_us)
                 VALUES (1, 1, 1, 1, 0, 1, 1, '[]', 5, 6000, 9000, 'SUCCESS', 0, 1024, 2000);
             INSERT INTO pilots (id, target, provider_id, agent_match, state, submitted_at_ms, ended_at_ms)
                 VALUES ('p-1', 'hpc', '42', '{\"exact\":\"42\"}', 'ended', 0, 3600000);",
        )
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
        let v = user_version(&conn);
        assert_eq!(v, SCHEMA_VERSION, "5, then on to the newest");
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
        // The view over the migrated tables reads the old row.
        let seen: (String, Option<String>, i64) = conn
            .query_row(
                "SELECT job_name, host, peak_rss_bytes FROM attempt_telemetry",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(seen, ("j".to_string(), None, 1024));
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
}
