//! The broker's store: one SQLite database (WAL) written by one thread.
//!
//! Invariant: only this module issues SQL. The writer thread takes batches of
//! [`StoreOp`]s, applies everything that has queued up in one transaction,
//! commits, and only then runs each batch's `after_commit` (which sends the
//! messages the core decided), so an acknowledgement or an assignment never
//! leaves before the rows that describe it are durable. Reads that must see
//! every earlier write (`stats`, `analyze`, `logs`) run on the same thread,
//! in order with the writes.

mod analysis;
mod checkpoint;
mod error;
mod export;
mod grouped;
mod load;
mod migrations;
mod reads;
mod retention;
mod scaling;
mod schema;
mod statements;

pub use analysis::{failed_transfers, run_analysis};
pub use error::StoreError;
pub use export::export_page;
pub(crate) use export::{
    agent_row, attempt_telemetry_row, job_row, opt_u64, pilot_row, u64_at, AGENTS_WITH_PILOT,
    AGENT_COLUMNS, ATTEMPT_TELEMETRY_COLUMNS, JOB_COLUMNS, PILOT_COLUMNS,
};
pub use load::{Loaded, LoadedJob, LoadedRun};
pub use reads::{last_run, run_stats, task_logs, task_reason};
pub use retention::{prune_telemetry, Pruned, PRUNE_ATTEMPTS_PER_CALL_MAX};
pub use scaling::{measured_medians, scaling_decisions, ScalingFilter};
pub use schema::StateOrigin;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use rusqlite::{params, Connection};
use scalable_common::protocol::AttemptEnd;
use scalable_common::{failpoint, private_files};

use crate::core::{Ids, StoreOp};
use statements::Statements;

/// Batches merged into one transaction at most.
const BATCHES_PER_TRANSACTION_MAX: usize = 4_096;
/// Bytes of stdout/stderr kept per attempt in the database.
pub const LOG_TAIL_BYTES_MAX: usize = 64 << 10;

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

/// A new store's database at `dir/broker.db`, its writer thread stopped:
/// tests write their rows straight into it.
#[cfg(test)]
pub(crate) fn new_for_tests(dir: &Path) -> Connection {
    let path = dir.join("broker.db");
    let (store, _, _) = Store::open(&path, StateOrigin::New).expect("a new store");
    store.stop();
    Connection::open(&path).expect("the new store's database")
}

/// A handle on the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Cmd>,
}

impl Store {
    /// Opens (creating if needed) the database and starts the writer thread.
    /// Returns the store, the next free ids and everything a restarted broker
    /// needs to rebuild its core.
    ///
    /// `origin` says whether the state dir held a broker before this start:
    /// then an empty database is refused rather than taken for a new store.
    pub fn open(path: &Path, origin: StateOrigin) -> Result<(Store, Ids, Loaded), StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let origin = schema::check_file(path, origin)?;
        private_database(path)?;
        let conn = Connection::open(path).map_err(err)?;
        schema::check_ours(&conn, path, origin)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF; PRAGMA busy_timeout=5000;",
        )
        .map_err(err)?;
        schema::prepare(&conn, path)?;
        let ids = load::next_ids(&conn).map_err(err)?;
        let loaded = load::load(&conn).map_err(err)?;
        schema::quick_check(&conn, path)?;
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

/// Makes the database 0600 before SQLite opens it: SQLite creates its file
/// 0644 and gives `-wal` and `-shm` the mode of the database.
fn private_database(path: &Path) -> Result<(), StoreError> {
    let refused = |p: &Path, e: std::io::Error| StoreError::Refused {
        path: p.to_path_buf(),
        problem: format!("cannot make it private (0600): {e}"),
        hint: "check that the broker's user owns the state dir".into(),
    };
    private_files::ensure(path).map_err(|e| refused(path, e))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        private_files::restrict(&side).map_err(|e| refused(&side, e))?;
    }
    Ok(())
}

/// A commit at least this slow is logged (`note_slow_commit`).
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(200);

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Cmd>, path: PathBuf) {
    let checkpoints = checkpoint::start(&conn, &path);
    let mut statements = Statements::new(&conn);
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
                let started = std::time::Instant::now();
                let applied = apply_writes(&conn, &mut statements, &batch);
                note_slow_commit(started.elapsed(), batch.len());
                if let Err(e) = applied {
                    // The broker cannot keep its promises without its store.
                    tracing::error!("store write failed in {}: {e}", path.display());
                    eprintln!(
                        "error: cannot write the broker's database {}: {e} (nothing of this batch was sent or acknowledged; free space, then restart the broker with the same --state-dir to resume)",
                        path.display()
                    );
                    std::process::exit(1);
                }
                checkpoints.committed();
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
                    drop(statements);
                    checkpoints.stop();
                    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
                    let _ = done.send(());
                    return;
                }
                Some(Cmd::Write { .. }) | None => {}
            }
        }
    }
}

/// A transaction this slow delays every reply behind it: said in the log,
/// so a stall can be traced to the store rather than the core.
fn note_slow_commit(took: std::time::Duration, batches: usize) {
    if took >= SLOW_COMMIT {
        tracing::warn!(
            "store: a transaction of {batches} batches took {} ms; replies behind it waited",
            took.as_millis()
        );
    }
}

fn apply_writes(
    conn: &Connection,
    statements: &mut Statements<'_>,
    cmds: &[Cmd],
) -> rusqlite::Result<()> {
    // Unchecked: the prepared statements borrow the connection too.
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let mut grouped = grouped::Grouped::default();
    for cmd in cmds {
        if let Cmd::Write { ops, .. } = cmd {
            for op in ops {
                if !grouped.take(statements, op)? {
                    grouped.before(statements, op)?;
                    apply(statements, op)?;
                }
            }
        }
    }
    grouped.flush(statements)?;
    if failpoint::hit("store.commit") {
        // Disk full, injected (tests): the transaction rolls back when dropped.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full (injected by SCALABLE_FAILPOINTS)".into()),
        ));
    }
    tx.commit()
}

/// SQLite integers are signed: a u64 past `i64::MAX` is kept as the largest.
fn sql_u64(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

/// An agent's tags as the `agents.tags` column keeps them (comma-joined by
/// `StoreOp::InsertAgent`); every reader decodes them here.
pub(crate) fn agent_tags(column: &str) -> Vec<String> {
    column
        .split(',')
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

fn tail(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.is_empty() {
        None
    } else {
        Some(&bytes[bytes.len().saturating_sub(LOG_TAIL_BYTES_MAX)..])
    }
}

fn apply(c: &mut Statements<'_>, op: &StoreOp) -> rusqlite::Result<()> {
    match op {
        StoreOp::InsertRun {
            run,
            name,
            submitted_at_ms,
            cwd,
            source,
            definition_json,
        } => {
            c.get(
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
            c.get(
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
            c.get("UPDATE runs SET state = ?2, finished_at_ms = ?3 WHERE id = ?1")?
                .execute(params![*run as i64, state, *at_ms as i64])?;
        }
        // Written in groups by `grouped` (this arm: a lone row, for completeness).
        StoreOp::InsertAttempt { .. } | StoreOp::TaskState { .. } => {
            grouped::write_one(c, op)?;
        }
        StoreOp::AttemptSizing { attempt, record } => {
            c.get("UPDATE attempts SET request_model = ?2, request_confidence = ?3, request_detail = ?4, predicted_memory_bytes = ?5, predicted_run_time_ms = ?6, percentile_memory_bytes = ?7, percentile_run_time_ms = ?8 WHERE id = ?1")?
                .execute(params![
                    *attempt as i64,
                    record.model,
                    record.confidence,
                    record.detail,
                    record.predicted_memory_bytes.map(|b| b as i64),
                    record.predicted_run_time_ms.map(|t| t as i64),
                    record.percentile_memory_bytes.map(|b| b as i64),
                    record.percentile_run_time_ms.map(|t| t as i64)
                ])?;
        }
        StoreOp::AttemptTransfers {
            attempt,
            agent,
            moved,
        } => {
            c.get("UPDATE attempts SET stage_in_bytes = ?3, stage_in_ms = ?4, stage_out_bytes = ?5, stage_out_ms = ?6, checkpoint_bytes = ?7, checkpoint_ms = ?8 WHERE id = ?1 AND agent_id = ?2")?
                .execute(params![
                    *attempt as i64,
                    *agent as i64,
                    moved.in_bytes.min(i64::MAX as u64) as i64,
                    moved.in_ms.min(i64::MAX as u64) as i64,
                    moved.out_bytes.min(i64::MAX as u64) as i64,
                    moved.out_ms.min(i64::MAX as u64) as i64,
                    moved.checkpoint_bytes.min(i64::MAX as u64) as i64,
                    moved.checkpoint_ms.min(i64::MAX as u64) as i64
                ])?;
        }
        StoreOp::AttemptStarted { attempt, at_us } => {
            c.get("UPDATE attempts SET started_at_us = ?2 WHERE id = ?1")?
                .execute(params![*attempt as i64, *at_us as i64])?;
        }
        StoreOp::AttemptEnded {
            attempt, result, ..
        } => {
            let detail = match &result.end {
                AttemptEnd::Signalled { signal } => Some(format!("signal {signal}")),
                AttemptEnd::SpawnFailed { error } => Some(error.clone()),
                AttemptEnd::StagingFailed { error } => Some(format!("staging: {error}")),
                AttemptEnd::InvalidInput { path } => Some(format!("missing input: {path}")),
                AttemptEnd::OutputsMissing { missing } => {
                    Some(format!("missing outputs: {}", missing.join(", ")))
                }
                _ => None,
            };
            let started = (result.started_at_us > 0).then_some(result.started_at_us as i64);
            let inputs = &result.input_bytes;
            let (input_total, input_sizes) = if inputs.is_empty() {
                (None, None)
            } else {
                let total = inputs.iter().fold(0u64, |a, b| a.saturating_add(*b));
                (Some(sql_u64(total)), serde_json::to_string(inputs).ok())
            };
            c.get(
                "UPDATE attempts SET started_at_us = COALESCE(?2, started_at_us), ended_at_us = ?3, end_class = ?4, exit_code = ?5, detail = ?6, peak_rss_bytes = ?7, cpu_time_us = ?8, stdout_bytes = ?9, stderr_bytes = ?10, stdout_tail = ?11, stderr_tail = ?12, spends_retry = ?13, memory_limit_bytes = ?14, read_bytes = ?15, write_bytes = ?16, input_bytes = ?17, input_sizes = ?18 WHERE id = ?1",
            )?
            .execute(params![
                *attempt as i64,
                started,
                result.ended_at_us as i64,
                result.end.class(),
                // The process's own code also for an end classed otherwise
                // (INVALID_INPUT after exit 2, OUTPUTS_MISSING after exit 0).
                result.end.exit_code().or(result.exit_code),
                detail,
                result.peak_rss_bytes as i64,
                result.cpu_time_us as i64,
                result.stdout_bytes as i64,
                result.stderr_bytes as i64,
                tail(&result.stdout_tail),
                tail(&result.stderr_tail),
                result.end.spends_retry(),
                result.memory_limit_bytes.map(|b| b.min(i64::MAX as u64) as i64),
                result.read_bytes.map(sql_u64),
                result.write_bytes.map(sql_u64),
                input_total,
                input_sizes,
            ])?;
            // Only attempts that ran long have a series: short ones cost no
            // statement here.
            for p in &result.usage {
                c.get(
                    "INSERT OR REPLACE INTO attempt_usage (attempt_id, at_ms, cpu_ms, rss_bytes) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    *attempt as i64,
                    sql_u64(p.at_ms),
                    sql_u64(p.cpu_ms),
                    sql_u64(p.rss_bytes)
                ])?;
            }
        }
        StoreOp::Pilot {
            info: p,
            agent_match,
            provider,
            price_per_hour,
        } => {
            // The cost is the price over the pilot's whole life, from its
            // submission (an upper bound: a queued Slurm job costs nothing).
            c.get(
                "INSERT INTO pilots (id, target, tag, provider_id, agent_match, state, agent_id, submitted_at_ms, connected_at_ms, ended_at_ms, reason, provider, price_per_hour, cost)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13 * (?10 - ?8) / 3600000.0)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state, agent_id = excluded.agent_id,
                   connected_at_ms = excluded.connected_at_ms, ended_at_ms = excluded.ended_at_ms, reason = excluded.reason,
                   provider = COALESCE(excluded.provider, provider),
                   price_per_hour = COALESCE(excluded.price_per_hour, price_per_hour),
                   cost = COALESCE(excluded.price_per_hour, price_per_hour) * (excluded.ended_at_ms - submitted_at_ms) / 3600000.0",
            )?
            .execute(params![
                p.id,
                p.target,
                p.tag,
                p.provider_id,
                agent_match,
                p.state.as_str(),
                p.agent.map(|a| a as i64),
                p.submitted_at_ms as i64,
                p.connected_at_ms.map(|x| x as i64),
                p.ended_at_ms.map(|x| x as i64),
                p.reason,
                provider,
                price_per_hour,
            ])?;
        }
        StoreOp::ScalingDecision(d) => scaling::insert(c.conn(), d)?,
        StoreOp::ScalingOutcome {
            target,
            at_ms,
            outcome,
        } => scaling::set_outcome(c.conn(), target, *at_ms, outcome)?,
        StoreOp::JobCancelCause { job, cause } => {
            let json = cause.as_ref().map(serde_json::to_string).transpose();
            // A cause that cannot be encoded is not kept; `why` then says less.
            c.get("UPDATE jobs SET cancel_cause = ?2 WHERE id = ?1")?
                .execute(params![*job as i64, json.ok().flatten()])?;
        }
        StoreOp::JobCancelMark { job, cancelled } => {
            c.get("UPDATE jobs SET cancel_marked = ?2 WHERE id = ?1")?
                .execute(params![*job as i64, *cancelled as i64])?;
        }
        StoreOp::RunResumed { run } => {
            c.get(
                "UPDATE runs SET state = 'running', finished_at_ms = NULL, telemetry_pruned_at_ms = NULL WHERE id = ?1",
            )?
            .execute(params![*run as i64])?;
        }
        StoreOp::StaleResult {
            attempt,
            agent,
            at_ms,
        } => {
            c.get(
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
            c.get(
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
            c.get("UPDATE agents SET left_at_ms = ?2, left_reason = ?3 WHERE id = ?1")?
                .execute(params![*agent as i64, *at_ms as i64, reason])?;
        }
        StoreOp::Event {
            at_ms,
            kind,
            run,
            detail,
        } => {
            c.get("INSERT INTO events (at_ms, kind, run_id, detail) VALUES (?1, ?2, ?3, ?4)")?
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
