//! What `analyze` reads from the store: a run's counts, one page of its
//! failed tasks with their attempts (the numbers of each end) and output
//! tails, and its jobs with cancelled tasks, each with the cause the core
//! recorded and the first of those tasks by name.
//!
//! Runs on the writer thread like every read. It only reads; it must not
//! write rows nor change the schema, and it words nothing (the CLI's output
//! layer does).

use std::sync::Arc;

use rusqlite::{params, Connection, Row};
use scalable_common::explain::Cancellation;
use scalable_common::frame::encoded_len;
use scalable_common::protocol::{
    AttemptId, CancelledJob, FailedAttempt, FailedTask, RunAnalysis, RunId, TaskId, TaskName,
    TaskTransfer, CANCELLED_TASKS_NAMED_MAX, ENVELOPE_BYTES_MAX, FAILED_TASKS_SHOWN_MAX,
    MESSAGE_BYTES_MAX, REPLY_PAGE_BYTES_MAX,
};
use scalable_common::workflow::JobDef;

use super::reads::{run_row, sql};
use super::StoreError;
use crate::paging::PageBuilder;

/// pegasus-analyzer-like report: the run's counts and one page of its failed
/// tasks (of the first [`FAILED_TASKS_SHOWN_MAX`]) whose id is greater than
/// `after`, each with its attempts and output tails. `jobs`: the run's job
/// definitions as the core knows them (items and walltimes, which the store
/// does not keep per task).
pub fn run_analysis(
    c: &Connection,
    run: RunId,
    after: Option<TaskId>,
    jobs: &[Arc<JobDef>],
) -> Result<RunAnalysis, StoreError> {
    let mut analysis = run_counts(c, run)?;
    let cancelled_jobs = cancelled_jobs(c, run, jobs)?;
    if analysis.state == "running" {
        // Rowless cancelled tasks are counted by their job's mark.
        analysis.cancelled = cancelled_jobs.iter().map(|j| j.tasks).sum();
        let done = analysis.succeeded + analysis.failed + analysis.cancelled;
        analysis.unfinished = analysis.total.saturating_sub(done);
    }
    // On the first page only: later pages carry failed tasks alone.
    if after.is_none() {
        analysis.cancelled_jobs = cancelled_jobs;
    }
    // The page shares the message with the counts (and the run's name).
    let budget = REPLY_PAGE_BYTES_MAX
        .min((MESSAGE_BYTES_MAX - ENVELOPE_BYTES_MAX).saturating_sub(encoded_len(&analysis)));
    let mut tasks = c
        .prepare(
            "SELECT t.id, t.idx, t.state, COALESCE(t.reason, ''), j.name FROM tasks t JOIN jobs j ON j.id = t.job_id
             WHERE t.run_id = ?1 AND t.state = 'failed' ORDER BY t.id LIMIT ?2",
        )
        .map_err(sql)?;
    let rows: Vec<(i64, i64, String, String, String)> = tasks
        .query_map(params![run as i64, FAILED_TASKS_SHOWN_MAX as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    let mut page = PageBuilder::new(budget);
    for (task_id, idx, state, reason, job) in rows {
        if after.is_some_and(|a| task_id as u64 <= a) {
            continue;
        }
        let path = format!("{run}/{job}/{idx}");
        let def = jobs.iter().find(|d| d.name == job);
        let walltime_ms = def.and_then(|d| d.walltime_ms);
        let mut task = failed_task(c, task_id, path, state, reason, walltime_ms)?;
        task.item = def
            .and_then(|d| d.items.get(idx as u64))
            .map(|i| i.to_string());
        if !page.push(task_id as u64, task) {
            break;
        }
    }
    let page = page.finish();
    analysis.failed_tasks = page.items;
    analysis.next = page.next;
    Ok(analysis)
}

/// The run's failed tasks whose last attempt failed on a transfer (of the
/// first `limit`, with that attempt's id), and how many there are in all.
/// An attempt that never started failed on its way in; one that started, on
/// its way out. Bytes are the agent's figures, when it sent them; how the
/// files moved is not stored (`via`, `files`: `None`).
pub fn failed_transfers(
    c: &Connection,
    run: RunId,
    jobs: &[Arc<JobDef>],
    limit: usize,
) -> Result<(Vec<(AttemptId, TaskTransfer)>, u64), StoreError> {
    let from = "FROM tasks t JOIN jobs j ON j.id = t.job_id
         JOIN attempts a ON a.task_id = t.id
           AND a.number = (SELECT MAX(number) FROM attempts WHERE task_id = t.id)
         LEFT JOIN agents g ON g.id = a.agent_id
         WHERE t.run_id = ?1 AND t.state = 'failed' AND a.end_class = 'STAGING_FAILED'";
    let total: i64 = c
        .query_row(&format!("SELECT COUNT(*) {from}"), [run as i64], |r| {
            r.get(0)
        })
        .map_err(sql)?;
    let mut stmt = c
        .prepare(&format!(
            "SELECT t.id, t.idx, j.name, a.id, a.started_at_us IS NOT NULL, COALESCE(g.name, ''),
             COALESCE(g.hostname, ''), COALESCE(a.detail, ''), a.stage_in_bytes, a.stage_out_bytes
             {from} ORDER BY t.id LIMIT ?2"
        ))
        .map_err(sql)?;
    let rows = stmt
        .query_map(params![run as i64, limit as i64], |r| {
            let (idx, job): (i64, String) = (r.get(1)?, r.get(2)?);
            let started: bool = r.get(4)?;
            let detail: String = r.get(7)?;
            let bytes: Option<i64> = r.get(if started { 9 } else { 8 })?;
            let item = jobs
                .iter()
                .find(|d| d.name == job)
                .and_then(|d| d.items.get(idx as u64))
                .map(|i| i.to_string());
            let transfer = TaskTransfer {
                task: r.get::<_, i64>(0)? as u64,
                path: format!("{run}/{job}/{idx}"),
                item,
                direction: if started { "out" } else { "in" }.into(),
                agent: r.get(5)?,
                host: r.get(6)?,
                via: None,
                files: None,
                done_bytes: bytes.map(|b| b.max(0) as u64),
                total_bytes: None,
                // The attempt's detail is `staging: ERROR` (`store::apply`).
                error: Some(detail.strip_prefix("staging: ").unwrap_or(&detail).into()),
            };
            Ok((r.get::<_, i64>(3)? as AttemptId, transfer))
        })
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    Ok((rows, total.max(0) as u64))
}

/// The run's name, state and task counts, without any task listed yet.
fn run_counts(c: &Connection, run: RunId) -> Result<RunAnalysis, StoreError> {
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
    // Cancelled tasks that never ran have no row: once the run is over they
    // are the rest (a running run's are counted by `run_analysis`).
    let cancelled = if row.state != "running" {
        (total as u64).saturating_sub(succeeded + failed)
    } else {
        count("cancelled")?
    };
    Ok(RunAnalysis {
        run,
        name: row.name,
        state: row.state,
        total: total as u64,
        succeeded,
        failed,
        cancelled,
        unfinished: (total as u64).saturating_sub(succeeded + failed + cancelled),
        failed_tasks: Vec::new(),
        cancelled_jobs: Vec::new(),
        next: None,
        transfers: Vec::new(),
        transfers_unlisted: 0,
    })
}

/// The columns [`attempt_from_row`] reads, in its order (attempts `a`
/// joined with their agent `g`).
pub(super) const ATTEMPT_COLUMNS: &str =
    "a.number, COALESCE(a.end_class, 'UNKNOWN'), a.exit_code, COALESCE(a.detail, ''),
    COALESCE(g.name, ''), COALESCE(g.hostname, ''), COALESCE(a.ended_at_us - a.started_at_us, 0),
    COALESCE(a.peak_rss_bytes, 0), a.memory_limit_bytes";

/// One attempt as `analyze` and `logs` show it, from [`ATTEMPT_COLUMNS`].
pub(super) fn attempt_from_row(
    r: &Row,
    walltime_ms: Option<u64>,
) -> rusqlite::Result<FailedAttempt> {
    Ok(FailedAttempt {
        attempt_number: r.get(0)?,
        class: r.get(1)?,
        exit_code: r.get(2)?,
        detail: r.get(3)?,
        agent: r.get(4)?,
        host: r.get(5)?,
        duration_ms: r.get::<_, i64>(6)?.max(0) as u64 / 1000,
        peak_rss_bytes: r.get::<_, i64>(7)?.max(0) as u64,
        memory_limit_bytes: r.get::<_, Option<i64>>(8)?.map(|b| b.max(0) as u64),
        walltime_ms,
    })
}

/// A failed task with its attempts, and the argv and output tails of its last
/// one.
fn failed_task(
    c: &Connection,
    task_id: i64,
    path: String,
    state: String,
    reason: String,
    walltime_ms: Option<u64>,
) -> Result<FailedTask, StoreError> {
    let mut att = c
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS}, a.argv, a.stderr_tail, a.stdout_tail
             FROM attempts a LEFT JOIN agents g ON g.id = a.agent_id WHERE a.task_id = ?1 ORDER BY a.number"
        ))
        .map_err(sql)?;
    let mut attempts = Vec::new();
    let (mut argv, mut stderr, mut stdout) = (Vec::new(), Vec::new(), Vec::new());
    let rows = att
        .query_map([task_id], |r| {
            Ok((
                attempt_from_row(r, walltime_ms)?,
                r.get::<_, String>(9)?,
                r.get::<_, Option<Vec<u8>>>(10)?,
                r.get::<_, Option<Vec<u8>>>(11)?,
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
    Ok(FailedTask {
        task: task_id as u64,
        path,
        item: None,
        state,
        reason,
        argv,
        attempts,
        stderr_tail: String::from_utf8_lossy(&stderr).into_owned(),
        stdout_tail: String::from_utf8_lossy(&stdout).into_owned(),
    })
}

/// The run's jobs with cancelled tasks: how many, the first few by name, and
/// the cause. A task without a row of its own in a cancel-marked job is
/// cancelled unless an attempt of it is still open (it was on an agent when
/// the rest was cancelled).
fn cancelled_jobs(
    c: &Connection,
    run: RunId,
    jobs: &[Arc<JobDef>],
) -> Result<Vec<CancelledJob>, StoreError> {
    let mut stmt = c
        .prepare(
            "SELECT id, name, task_count, cancel_marked, cancel_cause FROM jobs
             WHERE run_id = ?1 ORDER BY id",
        )
        .map_err(sql)?;
    let rows: Vec<(i64, String, i64, bool, Option<String>)> = stmt
        .query_map([run as i64], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, i64>(3)? != 0,
                r.get(4)?,
            ))
        })
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    let mut out = Vec::new();
    for (job_id, name, count, marked, cause) in rows {
        let (tasks, first) = cancelled_tasks(c, run, job_id, count as u64, marked)?;
        if tasks == 0 {
            continue;
        }
        let def = jobs.iter().find(|d| d.name == name);
        let first = first
            .into_iter()
            .map(|idx| TaskName {
                path: format!("{run}/{name}/{idx}"),
                item: def.and_then(|d| d.items.get(idx)).map(|i| i.to_string()),
            })
            .collect();
        out.push(CancelledJob {
            job: name,
            tasks,
            first,
            // A store from before causes were kept, or an unreadable one.
            cause: cause.and_then(|c| serde_json::from_str::<Cancellation>(&c).ok()),
        });
    }
    Ok(out)
}

/// How many tasks of a job are cancelled, and the first indices of them (at
/// most [`CANCELLED_TASKS_NAMED_MAX`]).
fn cancelled_tasks(
    c: &Connection,
    run: RunId,
    job_id: i64,
    count: u64,
    marked: bool,
) -> Result<(u64, Vec<u64>), StoreError> {
    let rows = |q: &str| -> Result<Vec<u64>, StoreError> {
        let mut stmt = c.prepare(q).map_err(sql)?;
        let v = stmt
            .query_map(params![run as i64, job_id], |r| r.get::<_, i64>(0))
            .map_err(sql)?
            .map(|r| r.map(|i| i as u64))
            .collect::<Result<_, _>>()
            .map_err(sql)?;
        Ok(v)
    };
    let with_row = "SELECT idx FROM tasks WHERE run_id = ?1 AND job_id = ?2";
    let cancelled_rows = rows(&format!("{with_row} AND state = 'cancelled' ORDER BY idx"))?;
    if !marked {
        let first = cancelled_rows
            .iter()
            .take(CANCELLED_TASKS_NAMED_MAX)
            .copied();
        return Ok((cancelled_rows.len() as u64, first.collect()));
    }
    // Every other task with a row, and the rowless ones still on an agent.
    let mut not_cancelled = rows(&format!("{with_row} AND state != 'cancelled'"))?;
    not_cancelled.extend(rows(
        "SELECT DISTINCT a.idx FROM attempts a WHERE a.run_id = ?1 AND a.job_id = ?2
         AND a.end_class IS NULL AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = a.task_id)",
    )?);
    not_cancelled.sort_unstable();
    not_cancelled.dedup();
    let tasks = count.saturating_sub(not_cancelled.len() as u64);
    let first = (0..count)
        .filter(|i| not_cancelled.binary_search(i).is_err())
        .take(CANCELLED_TASKS_NAMED_MAX)
        .collect();
    Ok((tasks, first))
}
