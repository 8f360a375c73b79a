//! The broker's store: one SQLite database (WAL) written by one thread.
//!
//! Invariant: only this module issues SQL. The writer thread takes batches of
//! [`StoreOp`]s, applies everything that has queued up in one transaction,
//! commits, and only then runs each batch's `after_commit` (which sends the
//! messages the core decided), so an acknowledgement or an assignment never
//! leaves before the rows that describe it are durable. Reads that must see
//! every earlier write (`stats`, `analyze`, `logs`) run on the same thread,
//! in order with the writes.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use rusqlite::{params, Connection, OptionalExtension};
use scalable_common::failpoint;
use scalable_common::protocol::{
    AttemptEnd, FailedAttempt, FailedTask, JobStats, PilotInfo, RunAnalysis, RunId, RunStats,
    TaskId, TaskLogs,
};

use crate::core::restore::{AgentRow, OpenAttempt, Snapshot, TaskRow};
use crate::core::{Ids, StoreOp};

/// Batches merged into one transaction at most.
const BATCHES_PER_TRANSACTION_MAX: usize = 4_096;
/// Bytes of stdout/stderr kept per attempt in the database.
pub const LOG_TAIL_BYTES_MAX: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the store's writer thread has stopped")]
    Stopped,
    #[error("{0}")]
    NotFound(String),
}

type AfterCommit = Box<dyn FnOnce() + Send>;
type Query = Box<dyn FnOnce(&Connection) + Send>;

enum Cmd {
    Write {
        ops: Vec<StoreOp>,
        after_commit: Option<AfterCommit>,
    },
    Query(Query),
    Stop(mpsc::Sender<()>),
}

/// A handle on the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Cmd>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    submitted_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER,
    state TEXT NOT NULL DEFAULT 'running',
    cwd TEXT NOT NULL,
    source TEXT NOT NULL,
    definition TEXT NOT NULL
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
    cancel_marked INTEGER NOT NULL DEFAULT 0
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
    exit_code INTEGER,
    detail TEXT,
    peak_rss_bytes INTEGER,
    cpu_time_us INTEGER,
    stdout_bytes INTEGER,
    stderr_bytes INTEGER,
    stdout_tail BLOB,
    stderr_tail BLOB
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
    reason TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    run_id INTEGER,
    detail TEXT NOT NULL
);
"#;

impl Store {
    /// Opens (creating if needed) the database and starts the writer thread.
    /// Returns the store, the next free ids and everything a restarted broker
    /// needs to rebuild its core.
    pub fn open(path: &Path) -> Result<(Store, Ids, Loaded), StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF; PRAGMA busy_timeout=5000;",
        )
        .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.execute_batch(crate::cache::SCHEMA).map_err(err)?;
        check_schema_version(&conn, path)?;
        let ids = next_ids(&conn).map_err(err)?;
        let loaded = load(&conn).map_err(err)?;
        if let Ok(v) = conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)) {
            if v != "ok" {
                return Err(StoreError::NotFound(format!(
                    "database {} fails its integrity check: {v} (restore it from a backup or start with a new --state-dir)",
                    path.display()
                )));
            }
        }
        let (tx, rx) = mpsc::channel::<Cmd>();
        let path_owned = path.to_path_buf();
        thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx, path_owned))
            .map_err(|e| StoreError::NotFound(format!("cannot start the store thread: {e}")))?;
        Ok((Store { tx }, ids, loaded))
    }

    /// Queues writes; `after_commit` runs on the writer thread once they are durable.
    pub fn write(&self, ops: Vec<StoreOp>, after_commit: Option<AfterCommit>) {
        // A stopped writer means the broker is shutting down; nothing to do then.
        let _ = self.tx.send(Cmd::Write { ops, after_commit });
    }

    /// Runs `f` on the writer thread after every write queued before it.
    pub async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Cmd::Query(Box::new(move |c| {
                let _ = tx.send(f(c));
            })))
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)
    }

    /// Waits for every queued write, checkpoints and stops the writer.
    pub fn stop(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Cmd::Stop(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// The schema this build writes; an older or newer database is refused with a
/// clear line rather than misread.
const SCHEMA_VERSION: i64 = 2;

fn check_schema_version(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let v: i64 = conn
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
    if v != SCHEMA_VERSION {
        return Err(StoreError::NotFound(format!(
            "database {} has schema version {v}, this broker needs {SCHEMA_VERSION} (use a new --state-dir, or the scalable version that wrote it)",
            path.display()
        )));
    }
    Ok(())
}

/// A run row with its stored definition (re-planned by the shell).
#[derive(Debug)]
pub struct LoadedRun {
    pub id: RunId,
    pub name: String,
    pub submitted_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub state: String,
    pub cwd: String,
    pub source: String,
    pub definition: String,
    /// (job id, first task, cancel mark), in job order.
    pub jobs: Vec<(u64, TaskId, bool)>,
}

/// What the store holds for a restart.
#[derive(Debug, Default)]
pub struct Loaded {
    pub runs: Vec<LoadedRun>,
    pub snapshot: Snapshot,
    /// Pilots not ended yet, with their agent match (JSON).
    pub pilots: Vec<(PilotInfo, String)>,
}

fn load(c: &Connection) -> rusqlite::Result<Loaded> {
    let mut runs: Vec<LoadedRun> = c
        .prepare("SELECT id, name, submitted_at_ms, finished_at_ms, state, cwd, source, definition FROM runs ORDER BY id")?
        .query_map([], |r| {
            Ok(LoadedRun {
                id: r.get::<_, i64>(0)? as u64,
                name: r.get(1)?,
                submitted_at_ms: r.get::<_, i64>(2)? as u64,
                finished_at_ms: r.get::<_, Option<i64>>(3)?.map(|x| x as u64),
                state: r.get(4)?,
                cwd: r.get(5)?,
                source: r.get(6)?,
                definition: r.get(7)?,
                jobs: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let index: std::collections::HashMap<RunId, usize> =
        runs.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let mut stmt =
        c.prepare("SELECT id, run_id, first_task, cancel_marked FROM jobs ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, i64>(2)? as u64,
            r.get::<_, i64>(3)? != 0,
        ))
    })?;
    for row in rows {
        let (job, run, first, marked) = row?;
        if let Some(&i) = index.get(&run) {
            runs[i].jobs.push((job, first, marked));
        }
    }
    let tasks = c
        .prepare("SELECT id, state, attempts, retries_used, crashes FROM tasks")?
        .query_map([], |r| {
            Ok(TaskRow {
                task: r.get::<_, i64>(0)? as u64,
                state: r.get(1)?,
                attempts: r.get::<_, i64>(2)? as u32,
                retries_used: r.get::<_, i64>(3)? as u32,
                crashes: r.get::<_, i64>(4)? as u32,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let open_attempts: Vec<OpenAttempt> = c
        .prepare("SELECT id, task_id, number, agent_id, started_at_us, assigned_at_ms FROM attempts WHERE end_class IS NULL")?
        .query_map([], |r| {
            Ok(OpenAttempt {
                id: r.get::<_, i64>(0)? as u64,
                task: r.get::<_, i64>(1)? as u64,
                number: r.get::<_, i64>(2)? as u32,
                agent: r.get::<_, i64>(3)? as u64,
                started_at_us: r.get::<_, Option<i64>>(4)?.map(|x| x as u64),
                assigned_at_ms: r.get::<_, i64>(5)? as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let agent_ids: std::collections::BTreeSet<u64> =
        open_attempts.iter().map(|a| a.agent).collect();
    let mut agents = Vec::new();
    let mut stmt = c.prepare_cached(
        "SELECT id, name, hostname, tags, cpus, memory_bytes, gpus FROM agents WHERE id = ?1",
    )?;
    for id in agent_ids {
        if let Some(a) = stmt
            .query_row([id as i64], |r| {
                let tags: String = r.get(3)?;
                Ok(AgentRow {
                    id: r.get::<_, i64>(0)? as u64,
                    name: r.get(1)?,
                    hostname: r.get(2)?,
                    tags: tags
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect(),
                    resources: scalable_common::resources::Resources {
                        cpus: r.get::<_, i64>(4)? as u32,
                        memory_bytes: r.get::<_, i64>(5)? as u64,
                        gpus: r.get::<_, i64>(6)? as u32,
                        custom: Vec::new(),
                    },
                })
            })
            .optional()?
        {
            agents.push(a);
        }
    }
    let oom_peaks = c
        .prepare("SELECT task_id, MAX(peak_rss_bytes) FROM attempts WHERE end_class = 'MEMORY_EXHAUSTION' GROUP BY task_id")?
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, Option<i64>>(1)?.unwrap_or(0).max(0) as u64,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let counted = c
        .prepare(
            "SELECT a.id, a.task_id FROM attempts a JOIN runs r ON r.id = a.run_id
             WHERE a.end_class = 'SUCCESS' AND (r.state = 'running' OR r.finished_at_ms > ?1)",
        )?
        .query_map([recent_ms(c)?], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let pilots = c
        .prepare(
            "SELECT id, target, tag, provider_id, state, agent_id, submitted_at_ms, connected_at_ms, ended_at_ms, reason, agent_match
             FROM pilots WHERE state <> 'ended' ORDER BY submitted_at_ms",
        )?
        .query_map([], |r| {
            Ok((
                PilotInfo {
                    id: r.get(0)?,
                    target: r.get(1)?,
                    tag: r.get(2)?,
                    provider_id: r.get(3)?,
                    state: r.get(4)?,
                    agent: r.get::<_, Option<i64>>(5)?.map(|x| x as u64),
                    submitted_at_ms: r.get::<_, i64>(6)? as u64,
                    connected_at_ms: r.get::<_, Option<i64>>(7)?.map(|x| x as u64),
                    ended_at_ms: r.get::<_, Option<i64>>(8)?.map(|x| x as u64),
                    reason: r.get(9)?,
                },
                r.get::<_, String>(10)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Loaded {
        pilots,
        runs,
        snapshot: Snapshot {
            tasks,
            open_attempts,
            agents,
            oom_peaks,
            counted,
        },
    })
}

/// Runs finished within the last hour of the store's own timeline may still
/// get resent results (agents hold unacknowledged results while away).
fn recent_ms(c: &Connection) -> rusqlite::Result<i64> {
    let last: Option<i64> =
        c.query_row("SELECT MAX(finished_at_ms) FROM runs", [], |r| r.get(0))?;
    Ok(last.unwrap_or(0) - 3_600_000)
}

fn next_ids(conn: &Connection) -> rusqlite::Result<Ids> {
    let max = |sql: &str| -> rusqlite::Result<u64> {
        conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .map(|v| v.unwrap_or(0) as u64)
    };
    Ok(Ids {
        run: max("SELECT MAX(id) FROM runs")? + 1,
        job: max("SELECT MAX(id) FROM jobs")? + 1,
        task: max("SELECT MAX(first_task + task_count - 1) FROM jobs")? + 1,
        attempt: max("SELECT MAX(id) FROM attempts")? + 1,
        agent: max("SELECT MAX(id) FROM agents")? + 1,
    })
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Cmd>, path: PathBuf) {
    let mut pending: std::collections::VecDeque<Cmd> = std::collections::VecDeque::new();
    while let Ok(first) = rx.recv() {
        pending.push_back(first);
        while pending.len() < BATCHES_PER_TRANSACTION_MAX {
            match rx.try_recv() {
                Ok(c) => pending.push_back(c),
                Err(_) => break,
            }
        }
        while !pending.is_empty() {
            // Writes up to the next query or stop go into one transaction.
            let writes = pending
                .iter()
                .position(|c| !matches!(c, Cmd::Write { .. }))
                .unwrap_or(pending.len());
            if writes > 0 {
                let batch: Vec<Cmd> = pending.drain(..writes).collect();
                if let Err(e) = apply_writes(&mut conn, &batch) {
                    // The broker cannot keep its promises without its store.
                    tracing::error!("store write failed in {}: {e}", path.display());
                    eprintln!(
                        "error: cannot write the broker's database {}: {e} (nothing of this batch was sent or acknowledged; free space, then restart the broker with the same --state-dir to resume)",
                        path.display()
                    );
                    std::process::exit(1);
                }
                // Committed, nothing sent yet: the window a crash must not lose.
                failpoint::hit("store.after_commit");
                for cmd in batch {
                    if let Cmd::Write {
                        after_commit: Some(f),
                        ..
                    } = cmd
                    {
                        f();
                    }
                }
                continue;
            }
            match pending.pop_front() {
                Some(Cmd::Query(f)) => f(&conn),
                Some(Cmd::Stop(done)) => {
                    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
                    let _ = done.send(());
                    return;
                }
                Some(Cmd::Write { .. }) | None => {}
            }
        }
    }
}

fn apply_writes(conn: &mut Connection, cmds: &[Cmd]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for cmd in cmds {
        if let Cmd::Write { ops, .. } = cmd {
            for op in ops {
                apply(&tx, op)?;
            }
        }
    }
    if failpoint::hit("store.commit") {
        // Disk full, injected (tests): the transaction rolls back when dropped.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full (injected by SCALABLE_FAILPOINTS)".into()),
        ));
    }
    tx.commit()
}

fn tail(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.is_empty() {
        None
    } else {
        Some(&bytes[bytes.len().saturating_sub(LOG_TAIL_BYTES_MAX)..])
    }
}

fn apply(c: &Connection, op: &StoreOp) -> rusqlite::Result<()> {
    match op {
        StoreOp::InsertRun {
            run,
            name,
            submitted_at_ms,
            cwd,
            source,
            definition_json,
        } => {
            c.prepare_cached(
                "INSERT INTO runs (id, name, submitted_at_ms, cwd, source, definition) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![*run as i64, name, *submitted_at_ms as i64, cwd, source, definition_json])?;
        }
        StoreOp::InsertJob {
            job,
            run,
            name,
            tag,
            resources,
            priority,
            retries,
            first_task,
            task_count,
        } => {
            c.prepare_cached(
                "INSERT INTO jobs (id, run_id, name, tag, cpus, memory_bytes, gpus, priority, retries, first_task, task_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                *job as i64,
                *run as i64,
                name,
                tag,
                resources.cpus,
                resources.memory_bytes as i64,
                resources.gpus,
                priority,
                retries,
                *first_task as i64,
                *task_count as i64
            ])?;
        }
        StoreOp::RunFinished { run, state, at_ms } => {
            c.prepare_cached("UPDATE runs SET state = ?2, finished_at_ms = ?3 WHERE id = ?1")?
                .execute(params![*run as i64, state, *at_ms as i64])?;
        }
        StoreOp::InsertAttempt {
            attempt,
            task,
            run,
            job,
            index,
            number,
            agent,
            assigned_at_ms,
            argv_json,
        } => {
            c.prepare_cached(
                "INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                *attempt as i64,
                *task as i64,
                *run as i64,
                *job as i64,
                *index as i64,
                number,
                *agent as i64,
                argv_json,
                *assigned_at_ms as i64
            ])?;
        }
        StoreOp::AttemptStarted { attempt, at_us } => {
            c.prepare_cached("UPDATE attempts SET started_at_us = ?2 WHERE id = ?1")?
                .execute(params![*attempt as i64, *at_us as i64])?;
        }
        StoreOp::AttemptEnded {
            attempt, result, ..
        } => {
            let detail = match &result.end {
                AttemptEnd::Signalled { signal } => Some(format!("signal {signal}")),
                AttemptEnd::SpawnFailed { error } => Some(error.clone()),
                AttemptEnd::InvalidInput { path } => Some(format!("missing input: {path}")),
                AttemptEnd::OutputsMissing { missing } => {
                    Some(format!("missing outputs: {}", missing.join(", ")))
                }
                _ => None,
            };
            let started = (result.started_at_us > 0).then_some(result.started_at_us as i64);
            c.prepare_cached(
                "UPDATE attempts SET started_at_us = COALESCE(?2, started_at_us), ended_at_us = ?3, end_class = ?4, exit_code = ?5, detail = ?6, peak_rss_bytes = ?7, cpu_time_us = ?8, stdout_bytes = ?9, stderr_bytes = ?10, stdout_tail = ?11, stderr_tail = ?12 WHERE id = ?1",
            )?
            .execute(params![
                *attempt as i64,
                started,
                result.ended_at_us as i64,
                result.end.class(),
                result.end.exit_code(),
                detail,
                result.peak_rss_bytes as i64,
                result.cpu_time_us as i64,
                result.stdout_bytes as i64,
                result.stderr_bytes as i64,
                tail(&result.stdout_tail),
                tail(&result.stderr_tail),
            ])?;
        }
        StoreOp::TaskState {
            task,
            run,
            job,
            index,
            state,
            attempts,
            retries_used,
            crashes,
            reason,
            at_ms,
        } => {
            c.prepare_cached(
                "INSERT INTO tasks (id, run_id, job_id, idx, state, attempts, retries_used, crashes, reason, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts, retries_used = excluded.retries_used, crashes = excluded.crashes, reason = excluded.reason, updated_at_ms = excluded.updated_at_ms",
            )?
            .execute(params![
                *task as i64,
                *run as i64,
                *job as i64,
                *index as i64,
                state,
                attempts,
                retries_used,
                crashes,
                reason,
                *at_ms as i64
            ])?;
        }
        StoreOp::Pilot {
            info: p,
            agent_match,
        } => {
            c.prepare_cached(
                "INSERT INTO pilots (id, target, tag, provider_id, agent_match, state, agent_id, submitted_at_ms, connected_at_ms, ended_at_ms, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state, agent_id = excluded.agent_id,
                   connected_at_ms = excluded.connected_at_ms, ended_at_ms = excluded.ended_at_ms, reason = excluded.reason",
            )?
            .execute(params![
                p.id,
                p.target,
                p.tag,
                p.provider_id,
                agent_match,
                p.state,
                p.agent.map(|a| a as i64),
                p.submitted_at_ms as i64,
                p.connected_at_ms.map(|x| x as i64),
                p.ended_at_ms.map(|x| x as i64),
                p.reason
            ])?;
        }
        StoreOp::JobCancelMark { job, cancelled } => {
            c.prepare_cached("UPDATE jobs SET cancel_marked = ?2 WHERE id = ?1")?
                .execute(params![*job as i64, *cancelled as i64])?;
        }
        StoreOp::RunResumed { run } => {
            c.prepare_cached(
                "UPDATE runs SET state = 'running', finished_at_ms = NULL WHERE id = ?1",
            )?
            .execute(params![*run as i64])?;
        }
        StoreOp::StaleResult {
            attempt,
            agent,
            at_ms,
        } => {
            c.prepare_cached(
                "INSERT INTO events (at_ms, kind, run_id, detail)
                 VALUES (?1, 'stale_result', (SELECT run_id FROM attempts WHERE id = ?2), ?3)",
            )?
            .execute(params![
                *at_ms as i64,
                *attempt as i64,
                format!("ignored result of attempt {attempt} from agent {agent}: not its current attempt")
            ])?;
        }
        StoreOp::InsertAgent {
            agent,
            name,
            hostname,
            tags,
            resources,
            connected_at_ms,
            pilot_id,
        } => {
            c.prepare_cached(
                "INSERT INTO agents (id, name, hostname, tags, cpus, memory_bytes, gpus, connected_at_ms, pilot_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                *agent as i64,
                name,
                hostname,
                tags.join(","),
                resources.cpus,
                resources.memory_bytes as i64,
                resources.gpus,
                *connected_at_ms as i64,
                pilot_id
            ])?;
        }
        StoreOp::AgentLeft {
            agent,
            reason,
            at_ms,
        } => {
            c.prepare_cached("UPDATE agents SET left_at_ms = ?2, left_reason = ?3 WHERE id = ?1")?
                .execute(params![*agent as i64, *at_ms as i64, reason])?;
        }
        StoreOp::Event {
            at_ms,
            kind,
            run,
            detail,
        } => {
            c.prepare_cached(
                "INSERT INTO events (at_ms, kind, run_id, detail) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                *at_ms as i64,
                kind.as_str(),
                run.map(|r| r as i64),
                detail
            ])?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ reads

fn not_found(what: String) -> StoreError {
    StoreError::NotFound(what)
}

fn sql(e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: PathBuf::from("broker.db"),
        source: e,
    }
}

/// The most recent run id.
pub fn last_run(c: &Connection) -> Result<Option<RunId>, StoreError> {
    c.query_row("SELECT MAX(id) FROM runs", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .map(|v| v.map(|x| x as u64))
    .map_err(sql)
}

struct RunRow {
    name: String,
    state: String,
    submitted_at_ms: u64,
    finished_at_ms: Option<u64>,
}

fn run_row(c: &Connection, run: RunId) -> Result<RunRow, StoreError> {
    c.query_row(
        "SELECT name, state, submitted_at_ms, finished_at_ms FROM runs WHERE id = ?1",
        [run as i64],
        |r| {
            Ok(RunRow {
                name: r.get(0)?,
                state: r.get(1)?,
                submitted_at_ms: r.get::<_, i64>(2)? as u64,
                finished_at_ms: r.get::<_, Option<i64>>(3)?.map(|x| x as u64),
            })
        },
    )
    .optional()
    .map_err(sql)?
    .ok_or_else(|| not_found(format!("no run {run} (scalable status lists the runs)")))
}

/// pegasus-statistics-like figures for a run.
pub fn run_stats(c: &Connection, run: RunId, now_ms: u64) -> Result<RunStats, StoreError> {
    let row = run_row(c, run)?;
    let mut stats = RunStats {
        run,
        name: row.name,
        state: row.state,
        ..RunStats::default()
    };
    let mut jobs = c
        .prepare("SELECT id, name, task_count FROM jobs WHERE run_id = ?1 ORDER BY id")
        .map_err(sql)?;
    let job_rows: Vec<(i64, String, i64)> = jobs
        .query_map([run as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    let mut last_end_us = 0u64;
    for (job_id, name, task_count) in job_rows {
        let mut js = JobStats {
            name,
            tasks: task_count as u64,
            ..JobStats::default()
        };
        let mut by_state = c
            .prepare_cached(
                "SELECT state, COUNT(*), SUM(attempts) FROM tasks WHERE job_id = ?1 GROUP BY state",
            )
            .map_err(sql)?;
        let rows = by_state
            .query_map([job_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })
            .map_err(sql)?;
        let (mut cancelled, mut cached, mut with_rows) = (0u64, 0u64, 0u64);
        for row in rows {
            let (state, n, _) = row.map_err(sql)?;
            with_rows += n as u64;
            match state.as_str() {
                "succeeded" => js.succeeded += n as u64,
                "failed" => js.failed += n as u64,
                "cancelled" => cancelled += n as u64,
                "cached" => cached += n as u64,
                _ => {}
            }
        }
        let mut att = c
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(ended_at_us - started_at_us), 0),
                        COALESCE(SUM(CASE WHEN end_class <> 'SUCCESS' THEN ended_at_us - started_at_us ELSE 0 END), 0),
                        COALESCE(MIN(CASE WHEN end_class = 'SUCCESS' THEN ended_at_us - started_at_us END), 0),
                        COALESCE(MAX(CASE WHEN end_class = 'SUCCESS' THEN ended_at_us - started_at_us END), 0),
                        COALESCE(MAX(ended_at_us), 0),
                        COUNT(CASE WHEN end_class = 'SUCCESS' THEN 1 END),
                        COALESCE(SUM(CASE WHEN end_class = 'SUCCESS' THEN ended_at_us - started_at_us ELSE 0 END), 0),
                        COUNT(CASE WHEN end_class NOT IN ('SUCCESS', 'AGENT_LOST', 'DRAINED', 'RETURNED', 'CANCELLED') THEN 1 END)
                 FROM attempts WHERE job_id = ?1 AND started_at_us IS NOT NULL AND ended_at_us IS NOT NULL",
            )
            .map_err(sql)?;
        let (n, total_us, bad_us, min_us, max_us, last_us, n_ok, ok_us, n_failed_attempts) = att
            .query_row([job_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                ))
            })
            .map_err(sql)?;
        let all_attempts: i64 = c
            .prepare_cached("SELECT COUNT(*) FROM attempts WHERE job_id = ?1")
            .map_err(sql)?
            .query_row([job_id], |r| r.get(0))
            .map_err(sql)?;
        let _ = (n, n_failed_attempts);
        js.attempts = all_attempts as u64;
        let (retries, marked): (i64, i64) = c
            .prepare_cached(
                "SELECT (SELECT COALESCE(SUM(retries_used), 0) FROM tasks WHERE job_id = ?1),
                        (SELECT cancel_marked FROM jobs WHERE id = ?1)",
            )
            .map_err(sql)?
            .query_row([job_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql)?;
        // Retries spent: failed attempts that sent their task round again.
        js.retries = retries.max(0) as u64;
        if marked != 0 {
            // Cancelled without ever running: counted by the job's mark, no row.
            cancelled += (task_count as u64).saturating_sub(with_rows);
        }
        js.wall_time_ms = total_us.max(0) as u64 / 1000;
        js.badput_ms = bad_us.max(0) as u64 / 1000;
        js.min_ms = min_us.max(0) as u64 / 1000;
        js.max_ms = max_us.max(0) as u64 / 1000;
        js.mean_ms = if n_ok > 0 {
            (ok_us / n_ok).max(0) as u64 / 1000
        } else {
            0
        };
        js.incomplete = js
            .tasks
            .saturating_sub(js.succeeded + js.failed + cancelled + cached);
        last_end_us = last_end_us.max(last_us.max(0) as u64);
        stats.tasks += js.tasks;
        stats.succeeded += js.succeeded;
        stats.failed += js.failed;
        stats.cancelled += cancelled;
        stats.cached += cached;
        stats.incomplete += js.incomplete;
        stats.retries += js.retries;
        stats.attempts += js.attempts;
        stats.cumulative_wall_time_ms += js.wall_time_ms;
        stats.badput_ms += js.badput_ms;
        stats.jobs.push(js);
    }
    let (lost, stale, crashes): (i64, i64, i64) = c
        .query_row(
            "SELECT (SELECT COUNT(*) FROM attempts WHERE run_id = ?1 AND end_class IN ('AGENT_LOST', 'DRAINED', 'RETURNED')),
                    (SELECT COUNT(*) FROM events WHERE run_id = ?1 AND kind = 'stale_result'),
                    (SELECT COALESCE(SUM(crashes), 0) FROM tasks WHERE run_id = ?1)",
            [run as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(sql)?;
    stats.lost_attempts = lost.max(0) as u64;
    stats.stale_results = stale.max(0) as u64;
    stats.crashes = crashes.max(0) as u64;
    let end_ms = row.finished_at_ms.unwrap_or(now_ms).max(last_end_us / 1000);
    stats.workflow_wall_time_ms = end_ms.saturating_sub(row.submitted_at_ms);
    Ok(stats)
}

/// pegasus-analyzer-like report: every failed task with its attempts and stderr tail.
pub fn run_analysis(c: &Connection, run: RunId) -> Result<RunAnalysis, StoreError> {
    let row = run_row(c, run)?;
    let total: i64 = c
        .query_row(
            "SELECT COALESCE(SUM(task_count), 0) FROM jobs WHERE run_id = ?1",
            [run as i64],
            |r| r.get(0),
        )
        .map_err(sql)?;
    let count = |state: &str| -> Result<u64, StoreError> {
        c.query_row(
            "SELECT COUNT(*) FROM tasks WHERE run_id = ?1 AND state = ?2",
            params![run as i64, state],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n as u64)
        .map_err(sql)
    };
    let succeeded = count("succeeded")? + count("cached")?;
    let failed = count("failed")?;
    // Cancelled tasks that never ran have no row: count them from the events.
    let cancelled_rows = count("cancelled")?;
    let finished = row.state != "running";
    let cancelled = if finished {
        (total as u64).saturating_sub(succeeded + failed)
    } else {
        cancelled_rows
    };
    let mut analysis = RunAnalysis {
        run,
        name: row.name,
        state: row.state,
        total: total as u64,
        succeeded,
        failed,
        cancelled,
        unfinished: (total as u64).saturating_sub(succeeded + failed + cancelled),
        failed_tasks: Vec::new(),
    };
    let mut tasks = c
        .prepare(
            "SELECT t.id, t.idx, t.state, COALESCE(t.reason, ''), j.name FROM tasks t JOIN jobs j ON j.id = t.job_id
             WHERE t.run_id = ?1 AND t.state = 'failed' ORDER BY t.id LIMIT 1000",
        )
        .map_err(sql)?;
    let rows: Vec<(i64, i64, String, String, String)> = tasks
        .query_map([run as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    for (task_id, idx, state, reason, job) in rows {
        let mut att = c
            .prepare_cached(
                "SELECT a.number, COALESCE(a.end_class, 'UNKNOWN'), a.exit_code, COALESCE(a.detail, ''),
                        COALESCE(g.name, ''), COALESCE(g.hostname, ''),
                        COALESCE(a.ended_at_us - a.started_at_us, 0), a.argv, a.stderr_tail, a.stdout_tail
                 FROM attempts a LEFT JOIN agents g ON g.id = a.agent_id WHERE a.task_id = ?1 ORDER BY a.number",
            )
            .map_err(sql)?;
        let mut attempts = Vec::new();
        let (mut argv, mut stderr, mut stdout) = (Vec::new(), Vec::new(), Vec::new());
        let rows = att
            .query_map([task_id], |r| {
                Ok((
                    FailedAttempt {
                        attempt_number: r.get(0)?,
                        class: r.get(1)?,
                        exit_code: r.get(2)?,
                        detail: r.get(3)?,
                        agent: r.get(4)?,
                        host: r.get(5)?,
                        duration_ms: r.get::<_, i64>(6)?.max(0) as u64 / 1000,
                    },
                    r.get::<_, String>(7)?,
                    r.get::<_, Option<Vec<u8>>>(8)?,
                    r.get::<_, Option<Vec<u8>>>(9)?,
                ))
            })
            .map_err(sql)?;
        for r in rows {
            let (fa, argv_json, err, out) = r.map_err(sql)?;
            argv = serde_json::from_str(&argv_json).unwrap_or_default();
            stderr = err.unwrap_or_default();
            stdout = out.unwrap_or_default();
            attempts.push(fa);
        }
        analysis.failed_tasks.push(FailedTask {
            task: task_id as u64,
            path: format!("{run}/{job}/{idx}"),
            state,
            reason,
            argv,
            attempts,
            stderr_tail: String::from_utf8_lossy(&stderr).into_owned(),
            stdout_tail: String::from_utf8_lossy(&stdout).into_owned(),
        });
    }
    Ok(analysis)
}

/// Finds a task id from `run/job/index`.
pub fn task_by_path(
    c: &Connection,
    run: RunId,
    job: &str,
    index: u64,
) -> Result<TaskId, StoreError> {
    let row: Option<(i64, i64)> = c
        .query_row(
            "SELECT first_task, task_count FROM jobs WHERE run_id = ?1 AND name = ?2",
            params![run as i64, job],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql)?;
    match row {
        Some((first, count)) if (index as i64) < count => Ok(first as u64 + index),
        Some((_, count)) => Err(not_found(format!(
            "job {job} of run {run} has {count} tasks; index {index} is out of range"
        ))),
        None => Err(not_found(format!("run {run} has no job {job:?}"))),
    }
}

/// stdout/stderr kept for an attempt of a task (the last attempt by default).
pub fn task_logs(
    c: &Connection,
    task: TaskId,
    attempt: Option<u32>,
) -> Result<TaskLogs, StoreError> {
    let path: Option<String> = c
        .query_row(
            "SELECT j.run_id || '/' || j.name || '/' || (?1 - j.first_task) FROM jobs j
             WHERE j.first_task <= ?1 AND ?1 < j.first_task + j.task_count",
            [task as i64],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    let path = path.ok_or_else(|| not_found(format!("no task {task}")))?;
    let row = c
        .query_row(
            "SELECT number, stdout_tail, stderr_tail, COALESCE(stdout_bytes, 0), COALESCE(stderr_bytes, 0)
             FROM attempts WHERE task_id = ?1 AND (?2 IS NULL OR number = ?2) ORDER BY number DESC LIMIT 1",
            params![task as i64, attempt],
            |r| {
                Ok(TaskLogs {
                    task,
                    path: path.clone(),
                    attempt_number: r.get(0)?,
                    stdout: r.get::<_, Option<Vec<u8>>>(1)?.unwrap_or_default(),
                    stderr: r.get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default(),
                    stdout_bytes: r.get::<_, i64>(3)? as u64,
                    stderr_bytes: r.get::<_, i64>(4)? as u64,
                })
            },
        )
        .optional()
        .map_err(sql)?;
    row.ok_or_else(|| match attempt {
        Some(n) => not_found(format!("task {path} has no attempt {n}")),
        None => not_found(format!("task {path} has not run yet")),
    })
}
