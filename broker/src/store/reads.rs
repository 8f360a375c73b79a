//! What the CLI asks the store: `stats` and `logs` (`analyze` reads in
//! `analysis`). Each read runs on the writer thread, in order with the writes, so it sees
//! every write queued before it.
//!
//! This module only reads; it must not write rows nor change the schema.

use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension};
use scalable_common::protocol::{
    FailedAttempt, JobStats, RunId, RunStats, TaskId, TaskLogs, REPLY_PAGE_BYTES_MAX,
};

use super::analysis::{attempt_from_row, ATTEMPT_COLUMNS};
use super::StoreError;
use crate::paging::bytes_page;

pub(super) fn not_found(what: String) -> StoreError {
    StoreError::NotFound(what)
}

pub(super) fn sql(e: rusqlite::Error) -> StoreError {
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

pub(super) struct RunRow {
    pub(super) name: String,
    pub(super) state: String,
    submitted_at_ms: u64,
    finished_at_ms: Option<u64>,
}

pub(super) fn run_row(c: &Connection, run: RunId) -> Result<RunRow, StoreError> {
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
/// Why a task ended as it did, as its row says (`None`: no reason kept).
pub fn task_reason(c: &Connection, task: TaskId) -> Result<Option<String>, StoreError> {
    c.query_row(
        "SELECT reason FROM tasks WHERE id = ?1",
        params![task as i64],
        |r| r.get::<_, Option<String>>(0),
    )
    .optional()
    .map(Option::flatten)
    .map_err(sql)
}

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
        let job = job_figures(c, job_id, name, task_count)?;
        let js = job.stats;
        last_end_us = last_end_us.max(job.last_end_us);
        stats.tasks += js.tasks;
        stats.succeeded += js.succeeded;
        stats.failed += js.failed;
        stats.cancelled += job.cancelled;
        stats.cached += job.cached;
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

/// One job's figures and what the run adds up besides them.
struct JobFigures {
    stats: JobStats,
    cancelled: u64,
    cached: u64,
    /// When its last attempt ended.
    last_end_us: u64,
}

fn job_figures(
    c: &Connection,
    job_id: i64,
    name: String,
    task_count: i64,
) -> Result<JobFigures, StoreError> {
    let mut js = JobStats {
        name,
        tasks: task_count as u64,
        ..JobStats::default()
    };
    let rows = task_rows(c, job_id)?;
    js.succeeded = rows.succeeded;
    js.failed = rows.failed;
    let (mut cancelled, cached) = (rows.cancelled, rows.cached);
    let t = attempt_times(c, job_id)?;
    let all_attempts: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM attempts WHERE job_id = ?1")
        .map_err(sql)?
        .query_row([job_id], |r| r.get(0))
        .map_err(sql)?;
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
        cancelled += (task_count as u64).saturating_sub(rows.with_rows);
    }
    js.wall_time_ms = t.total_us.max(0) as u64 / 1000;
    js.badput_ms = t.bad_us.max(0) as u64 / 1000;
    js.min_ms = t.min_us.max(0) as u64 / 1000;
    js.max_ms = t.max_us.max(0) as u64 / 1000;
    js.mean_ms = if t.n_ok > 0 {
        (t.ok_us / t.n_ok).max(0) as u64 / 1000
    } else {
        0
    };
    js.incomplete = js
        .tasks
        .saturating_sub(js.succeeded + js.failed + cancelled + cached);
    Ok(JobFigures {
        stats: js,
        cancelled,
        cached,
        last_end_us: t.last_us.max(0) as u64,
    })
}

/// A job's tasks that have a row, by final state.
struct TaskRows {
    succeeded: u64,
    failed: u64,
    cancelled: u64,
    cached: u64,
    with_rows: u64,
}

fn task_rows(c: &Connection, job_id: i64) -> Result<TaskRows, StoreError> {
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
    let mut out = TaskRows {
        succeeded: 0,
        failed: 0,
        cancelled: 0,
        cached: 0,
        with_rows: 0,
    };
    for row in rows {
        let (state, n, _) = row.map_err(sql)?;
        out.with_rows += n as u64;
        match state.as_str() {
            "succeeded" => out.succeeded += n as u64,
            "failed" => out.failed += n as u64,
            "cancelled" => out.cancelled += n as u64,
            "cached" => out.cached += n as u64,
            _ => {}
        }
    }
    Ok(out)
}

/// Sums over a job's attempts that started and ended, in microseconds.
struct AttemptTimes {
    total_us: i64,
    /// Time spent in attempts that did not succeed.
    bad_us: i64,
    min_us: i64,
    max_us: i64,
    last_us: i64,
    n_ok: i64,
    ok_us: i64,
    /// Attempts that used up a retry (not yet shown by `stats`).
    #[allow(dead_code)]
    spent_retry: i64,
}

fn attempt_times(c: &Connection, job_id: i64) -> Result<AttemptTimes, StoreError> {
    let mut att = c
        .prepare_cached(
            "SELECT COALESCE(SUM(ended_at_us - started_at_us), 0),
                    COALESCE(SUM(CASE WHEN end_class <> 'SUCCESS' THEN ended_at_us - started_at_us ELSE 0 END), 0),
                    COALESCE(MIN(CASE WHEN end_class = 'SUCCESS' THEN ended_at_us - started_at_us END), 0),
                    COALESCE(MAX(CASE WHEN end_class = 'SUCCESS' THEN ended_at_us - started_at_us END), 0),
                    COALESCE(MAX(ended_at_us), 0),
                    COUNT(CASE WHEN end_class = 'SUCCESS' THEN 1 END),
                    COALESCE(SUM(CASE WHEN end_class = 'SUCCESS' THEN ended_at_us - started_at_us ELSE 0 END), 0),
                    COUNT(CASE WHEN spends_retry = 1 THEN 1 END)
             FROM attempts WHERE job_id = ?1 AND started_at_us IS NOT NULL AND ended_at_us IS NOT NULL",
        )
        .map_err(sql)?;
    att.query_row([job_id], |r| {
        Ok(AttemptTimes {
            total_us: r.get(0)?,
            bad_us: r.get(1)?,
            min_us: r.get(2)?,
            max_us: r.get(3)?,
            last_us: r.get(4)?,
            n_ok: r.get(5)?,
            ok_us: r.get(6)?,
            spent_retry: r.get(7)?,
        })
    })
    .map_err(sql)
}

/// How attempt `number` of a task ended, with its numbers; `None` while it
/// runs.
fn attempt_ended(
    c: &Connection,
    task: TaskId,
    number: u32,
    walltime_ms: Option<u64>,
) -> Result<Option<FailedAttempt>, StoreError> {
    c.query_row(
        &format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts a LEFT JOIN agents g ON g.id = a.agent_id
             WHERE a.task_id = ?1 AND a.number = ?2 AND a.end_class IS NOT NULL"
        ),
        params![task as i64, number],
        |r| attempt_from_row(r, walltime_ms),
    )
    .optional()
    .map_err(sql)
}

/// stdout/stderr kept for an attempt of a task (the last attempt by default),
/// the page of them that starts at byte `from` (stdout's bytes, then
/// stderr's), and how that attempt ended. `walltime_ms`: the job's, as the
/// core knows it.
pub fn task_logs(
    c: &Connection,
    task: TaskId,
    attempt: Option<u32>,
    from: u64,
    walltime_ms: Option<u64>,
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
                    item: None,
                    attempt_number: r.get(0)?,
                    ended: None,
                    stdout: r.get::<_, Option<Vec<u8>>>(1)?.unwrap_or_default(),
                    stderr: r.get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default(),
                    stdout_bytes: r.get::<_, i64>(3)? as u64,
                    stderr_bytes: r.get::<_, i64>(4)? as u64,
                    next: None,
                })
            },
        )
        .optional()
        .map_err(sql)?;
    let mut logs = row.ok_or_else(|| match attempt {
        Some(n) => not_found(format!("task {path} has no attempt {n}")),
        None => not_found(format!("task {path} has not run yet")),
    })?;
    logs.ended = attempt_ended(c, task, logs.attempt_number, walltime_ms)?.map(Box::new);
    let (stdout, stderr, next) = bytes_page(&logs.stdout, &logs.stderr, from, REPLY_PAGE_BYTES_MAX);
    (logs.stdout, logs.stderr, logs.next) = (stdout, stderr, next);
    Ok(logs)
}
