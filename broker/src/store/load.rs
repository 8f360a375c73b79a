//! What a restarted broker reads back from the store: every run with its
//! jobs (re-planned by the shell), the task rows, the attempts still open and
//! their agents, raised memory, counted attempts, live pilots, and the next
//! free ids.
//!
//! Runs once, at open, before the writer thread starts. Only reads; it must
//! not write rows nor decide anything about them (the core's `restore` does).

use rusqlite::{Connection, OptionalExtension};
use scalable_common::explain::Cancellation;
use scalable_common::protocol::{JobId, PilotInfo, PilotPhase, RunId, TaskId};

use crate::core::restore::{AgentRow, OpenAttempt, Snapshot, TaskRow};
use crate::core::Ids;

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
    /// In job order.
    pub jobs: Vec<LoadedJob>,
}

/// A job row as a restart needs it.
#[derive(Debug)]
pub struct LoadedJob {
    pub id: JobId,
    pub first_task: TaskId,
    pub cancel_marked: bool,
    pub cancel_cause: Option<Cancellation>,
}

/// What the store holds for a restart.
#[derive(Debug, Default)]
pub struct Loaded {
    pub runs: Vec<LoadedRun>,
    pub snapshot: Snapshot,
    /// Pilots not ended yet, with their agent match (JSON).
    pub pilots: Vec<(PilotInfo, String)>,
}

pub(super) fn load(c: &Connection) -> rusqlite::Result<Loaded> {
    let open_attempts = open_attempts(c)?;
    Ok(Loaded {
        pilots: live_pilots(c)?,
        runs: runs(c)?,
        snapshot: Snapshot {
            tasks: task_rows(c)?,
            agents: agents_of(c, &open_attempts)?,
            open_attempts,
            oom_peaks: oom_peaks(c)?,
            counted: counted(c)?,
        },
    })
}

/// Every run with its jobs, in order.
fn runs(c: &Connection) -> rusqlite::Result<Vec<LoadedRun>> {
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
    let mut stmt = c.prepare(
        "SELECT id, run_id, first_task, cancel_marked, cancel_cause FROM jobs ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, i64>(2)? as u64,
            r.get::<_, i64>(3)? != 0,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    for row in rows {
        let (job, run, first, marked, cause) = row?;
        // An unreadable cause is as good as none: `why` then says less.
        let cause = cause.and_then(|c| serde_json::from_str(&c).ok());
        if let Some(&i) = index.get(&run) {
            runs[i].jobs.push(LoadedJob {
                id: job,
                first_task: first,
                cancel_marked: marked,
                cancel_cause: cause,
            });
        }
    }
    Ok(runs)
}

/// Tasks that have a row (the others are still waiting or ready).
fn task_rows(c: &Connection) -> rusqlite::Result<Vec<TaskRow>> {
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
    Ok(tasks)
}

/// Attempts not ended yet.
fn open_attempts(c: &Connection) -> rusqlite::Result<Vec<OpenAttempt>> {
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
    Ok(open_attempts)
}

/// The agents that run the open attempts.
fn agents_of(c: &Connection, open_attempts: &[OpenAttempt]) -> rusqlite::Result<Vec<AgentRow>> {
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
                    tags: super::agent_tags(&tags),
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
    Ok(agents)
}

/// Per task, the highest peak of its attempts killed for memory.
fn oom_peaks(c: &Connection) -> rusqlite::Result<Vec<(TaskId, u64)>> {
    let oom_peaks = c
        .prepare("SELECT task_id, MAX(peak_rss_bytes) FROM attempts WHERE end_class = 'MEMORY_EXHAUSTION' GROUP BY task_id")?
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, Option<i64>>(1)?.unwrap_or(0).max(0) as u64,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(oom_peaks)
}

/// Successful attempts of runs that may still get resent results.
fn counted(c: &Connection) -> rusqlite::Result<Vec<(u64, TaskId)>> {
    let counted = c
        .prepare(
            "SELECT a.id, a.task_id FROM attempts a JOIN runs r ON r.id = a.run_id
             WHERE a.end_class = 'SUCCESS' AND (r.state = 'running' OR r.finished_at_ms > ?1)",
        )?
        .query_map([recent_ms(c)?], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(counted)
}

/// Pilots not ended yet, with their agent match (JSON).
fn live_pilots(c: &Connection) -> rusqlite::Result<Vec<(PilotInfo, String)>> {
    let pilots = c
        .prepare(
            "SELECT id, target, tag, provider_id, state, agent_id, submitted_at_ms, connected_at_ms, ended_at_ms, reason, agent_match
             FROM pilots WHERE state <> ?1 ORDER BY submitted_at_ms",
        )?
        .query_map([PilotPhase::Ended.as_str()], |r| {
            Ok((
                PilotInfo {
                    id: r.get(0)?,
                    target: r.get(1)?,
                    tag: r.get(2)?,
                    provider_id: r.get(3)?,
                    state: pilot_phase(r, 4)?,
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
    Ok(pilots)
}

/// A pilot's phase as stored; a word this broker never writes is a damaged
/// row, reported rather than guessed at.
fn pilot_phase(r: &rusqlite::Row, i: usize) -> rusqlite::Result<PilotPhase> {
    let text: String = r.get(i)?;
    PilotPhase::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown pilot state {text:?}").into(),
        )
    })
}

/// Runs finished within the last hour of the store's own timeline may still
/// get resent results (agents hold unacknowledged results while away).
fn recent_ms(c: &Connection) -> rusqlite::Result<i64> {
    let last: Option<i64> =
        c.query_row("SELECT MAX(finished_at_ms) FROM runs", [], |r| r.get(0))?;
    Ok(last.unwrap_or(0) - 3_600_000)
}

pub(super) fn next_ids(conn: &Connection) -> rusqlite::Result<Ids> {
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
