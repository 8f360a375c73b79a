//! Reads a run's report data from the store, a page at a time: the first
//! page holds the run, its jobs, agents, pilots, events and a sample of
//! failures; every page holds attempts in id order within a byte budget.
//!
//! Runs on the store's connection (a `Store::query` on the writer thread),
//! never on the core task. It only reads; it must not write rows, change
//! the schema or compute figures (`summary` does).

use rusqlite::{params, Connection};
use scalable_common::frame::encoded_len;
use scalable_common::protocol::{ReportPage, RunId, ENVELOPE_BYTES_MAX, REPLY_PAGE_BYTES_MAX};

use scalable_common::scaling::ScalingDecisionInfo;
use scalable_common::staging::Transfers;

use super::accountability::{MEMORY, PERCENTILE, RUN_TIME};
use super::model::{
    AgentRow, AttemptRow, EventRow, FailureRow, JobRow, PilotRow, Prediction, ReportChunk,
    ReportData, Requested, RunInfo, ScalingDecision, UsagePoint, EVENTS_MAX, FAILURES_SHOWN_MAX,
    FAILURE_TAIL_BYTES_MAX, PREDICTED_ATTEMPTS_MAX, REPORT_FORMAT,
};
use crate::paging::PageBuilder;
use crate::store::{self, opt_u64, u64_at, StoreError};
use crate::telemetry;

fn sql(e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: "broker.db".into(),
        source: e,
    }
}

/// One page of `run`'s report: the head when `after` is `None`, then the
/// attempts after `after`. `walltimes`: each job's walltime by name, as the
/// core knows it (the store keeps none).
pub fn page(
    c: &Connection,
    run: RunId,
    after: Option<u64>,
    now_ms: u64,
    walltimes: &[(String, Option<u64>)],
) -> Result<ReportPage, StoreError> {
    let head = match after {
        None => Some(head(c, run, now_ms, walltimes)?),
        Some(_) => None,
    };
    let budget = REPLY_PAGE_BYTES_MAX
        .saturating_sub(head.as_ref().map_or(0, encoded_len))
        .max(ENVELOPE_BYTES_MAX);
    let (attempts, next) = attempts_page(c, run, after, budget)?;
    let chunk = ReportChunk { head, attempts };
    let body = postcard::to_allocvec(&chunk)
        .map_err(|e| StoreError::NotFound(format!("cannot encode the report: {e}")))?;
    Ok(ReportPage {
        format: REPORT_FORMAT,
        body,
        next,
    })
}

/// Everything but the attempts.
pub fn head(
    c: &Connection,
    run: RunId,
    now_ms: u64,
    walltimes: &[(String, Option<u64>)],
) -> Result<ReportData, StoreError> {
    let stats = store::run_stats(c, run, now_ms)?;
    let (submitted_at_ms, finished_at_ms): (u64, Option<u64>) = c
        .query_row(
            "SELECT submitted_at_ms, finished_at_ms FROM runs WHERE id = ?1",
            [run as i64],
            |r| Ok((u64_at(r, 0)?, opt_u64(r, 1)?)),
        )
        .map_err(sql)?;
    let end_ms = finished_at_ms.unwrap_or(now_ms);
    let mut jobs = jobs(c, run, walltimes)?;
    for (job, js) in jobs.iter_mut().zip(&stats.jobs) {
        (job.succeeded, job.failed) = (js.succeeded, js.failed);
    }
    let (events, events_total) = events(c, run, submitted_at_ms, end_ms)?;
    Ok(ReportData {
        run: RunInfo {
            id: run,
            name: stats.name,
            state: stats.state,
            submitted_at_ms,
            finished_at_ms,
            generated_at_ms: now_ms,
            tasks: stats.tasks,
            succeeded: stats.succeeded,
            failed: stats.failed,
            cancelled: stats.cancelled,
            cached: stats.cached,
            incomplete: stats.incomplete,
            retries: stats.retries,
            events_dropped: events_total.saturating_sub(events.len() as u64),
        },
        jobs,
        attempts: Vec::new(),
        agents: agents(c, run, submitted_at_ms, end_ms)?,
        pilots: pilots(c, submitted_at_ms, end_ms)?,
        events,
        failures: failures(c, run)?,
        scaling_decisions: scaling_decisions(c, run)?,
        predictions: predictions(c, run)?,
    })
}

/// Scaling decisions a report carries (the oldest), each reasoning cut to
/// [`SCALING_REASONING_BYTES_MAX`]: the head stays well inside a page.
pub const SCALING_DECISIONS_MAX: usize = 1_000;
pub const SCALING_REASONING_BYTES_MAX: usize = 512;

/// Decisions the scaler stored while the run was live, at most
/// [`SCALING_DECISIONS_MAX`], summed over the target's groups.
fn scaling_decisions(c: &Connection, run: RunId) -> Result<Vec<ScalingDecision>, StoreError> {
    let mut out = Vec::new();
    let mut after = None;
    while out.len() < SCALING_DECISIONS_MAX {
        let page = store::scaling_decisions(c, store::ScalingFilter::Run(run), after, 1 << 20)?;
        out.extend(page.items.iter().map(scaling_row));
        match page.next {
            Some(n) if !page.items.is_empty() => after = Some(n),
            _ => break,
        }
    }
    out.truncate(SCALING_DECISIONS_MAX);
    Ok(out)
}

/// The first `max` bytes of `s` (at a character boundary), marked when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn scaling_row(i: &ScalingDecisionInfo) -> ScalingDecision {
    let d: Option<crate::scaler::ScaleDecision> = serde_json::from_str(&i.decision).ok();
    let groups = d.as_ref().map(|d| d.groups.as_slice()).unwrap_or_default();
    let sum = |f: &dyn Fn(&crate::scaler::GroupDecision) -> u32| groups.iter().map(f).sum::<u32>();
    ScalingDecision {
        at_ms: i.at_ms,
        tag: match groups {
            [g] => g.tag.clone(),
            _ => None,
        },
        before: sum(&|g| g.current),
        after: sum(&|g| (g.current + g.add).saturating_sub(g.remove)),
        desired: sum(&|g| g.desired),
        reasoning: cut(&i.reasoning, SCALING_REASONING_BYTES_MAX),
        confidence: Some(i.confidence),
        predicted_completion_ms: i.predicted_completion_seconds.map(|s| (s * 1000.0) as u64),
        pilots_connected_at_ms: i.outcome.pilots_connected_at_ms,
        busy_seconds: i.outcome.busy_seconds,
        idle_seconds: i.outcome.idle_seconds,
        cost: i.outcome.cost,
    }
}

/// The advisor's predictions for the run's sized attempts that ended (not
/// those given back or cancelled before they ran: a peak of 0 is no outcome),
/// beside what happened: memory (bound against peak) and run time (bound
/// against the process's), and for attempts the advisor sized, what the
/// plain percentile would have asked. At most
/// [`PREDICTED_ATTEMPTS_MAX`] attempts, the first.
fn predictions(c: &Connection, run: RunId) -> Result<Vec<Prediction>, StoreError> {
    let mut stmt = c
        .prepare(
            "SELECT j.name, a.request_source, a.request_detail, a.predicted_memory_bytes,
                    a.predicted_run_time_ms, a.percentile_memory_bytes, a.percentile_run_time_ms,
                    a.peak_rss_bytes, a.started_at_us, a.ended_at_us, a.end_class
             FROM attempts a JOIN jobs j ON j.id = a.job_id
             WHERE a.run_id = ?1 AND a.request_detail IS NOT NULL AND a.end_class IS NOT NULL
               AND a.end_class NOT IN ('RETURNED', 'CANCELLED')
             ORDER BY a.id LIMIT ?2",
        )
        .map_err(sql)?;
    let mut rows = stmt
        .query(params![run as i64, PREDICTED_ATTEMPTS_MAX as i64])
        .map_err(sql)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql)? {
        let task_type: String = r.get(0).map_err(sql)?;
        let source: Option<String> = r.get(1).map_err(sql)?;
        let detail: String = r.get(2).map_err(sql)?;
        let n = |i| opt_u64(r, i).map_err(sql);
        let (peak, started, ended) = (n(7)?, n(8)?, n(9)?);
        let success = r.get::<_, String>(10).map_err(sql)? == "SUCCESS";
        let run_time = match (started, ended) {
            (Some(s), Some(e)) if success && e >= s => Some((e - s) as f64 / 1000.0),
            _ => None,
        };
        let source = source.unwrap_or_default();
        let method = match source.as_str() {
            "advisor" => format!("advisor: {detail}"),
            "manifest" => detail,
            other => format!("{other}: {detail}"),
        };
        let mut push =
            |quantity: &str, predicted: Option<u64>, actual: Option<f64>, method: &str| {
                if let Some(p) = predicted {
                    out.push(Prediction {
                        task_type: task_type.clone(),
                        quantity: quantity.into(),
                        predicted: p as f64,
                        actual,
                        method: method.into(),
                    });
                }
            };
        let peak = peak.map(|p| p as f64);
        push(MEMORY, n(3)?, peak, &method);
        push(RUN_TIME, n(4)?, run_time, &method);
        if source == "advisor" {
            push(MEMORY, n(5)?, peak, PERCENTILE);
            push(RUN_TIME, n(6)?, run_time, PERCENTILE);
        }
    }
    Ok(out)
}

fn jobs(
    c: &Connection,
    run: RunId,
    walltimes: &[(String, Option<u64>)],
) -> Result<Vec<JobRow>, StoreError> {
    let mut stmt = c
        .prepare(&format!(
            "SELECT {} FROM jobs WHERE run_id = ?1 ORDER BY id",
            store::JOB_COLUMNS
        ))
        .map_err(sql)?;
    let rows = stmt.query_map([run as i64], store::job_row).map_err(sql)?;
    let mut out = Vec::new();
    for row in rows {
        let j = row.map_err(sql)?;
        out.push(JobRow {
            id: j.job,
            walltime_ms: walltimes
                .iter()
                .find(|(name, _)| *name == j.name)
                .and_then(|(_, w)| *w),
            name: j.name,
            tag: j.tag,
            cpus: j.cpus,
            memory_bytes: j.memory_bytes,
            gpus: j.gpus,
            retries: j.retries,
            task_count: j.tasks,
            ..JobRow::default()
        });
    }
    Ok(out)
}

/// The attempts of `run` after `after`, as many as fit `budget` bytes.
pub fn attempts_page(
    c: &Connection,
    run: RunId,
    after: Option<u64>,
    budget: usize,
) -> Result<(Vec<AttemptRow>, Option<u64>), StoreError> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {} FROM attempt_telemetry WHERE run_id = ?1 AND id > ?2 ORDER BY id",
            store::ATTEMPT_TELEMETRY_COLUMNS
        ))
        .map_err(sql)?;
    let mut rows = stmt
        .query(params![run as i64, after.map_or(-1, |a| a as i64)])
        .map_err(sql)?;
    let mut page = PageBuilder::new(budget);
    while let Some(r) = rows.next().map_err(sql)? {
        let mut a = attempt_row(store::attempt_telemetry_row(r).map_err(sql)?);
        // Before the push: a page's budget counts the series too.
        attach_usage(c, &mut a)?;
        if !page.push(a.id, a) {
            break;
        }
    }
    let page = page.finish();
    Ok((page.items, page.next))
}

/// The agent keeps a series only for attempts that ran about 2 s or more
/// (two points of 1 s): shorter ones are not looked up.
const USAGE_RUN_US_MIN: u64 = 1_500_000;

/// The stored usage series of a long attempt (per-interval cpu, schema 5)
/// as the report's cumulative points from the attempt's start.
fn attach_usage(c: &Connection, a: &mut AttemptRow) -> Result<(), StoreError> {
    let (Some(start), Some(end)) = (a.started_at_us, a.ended_at_us) else {
        return Ok(());
    };
    if end.saturating_sub(start) < USAGE_RUN_US_MIN {
        return Ok(());
    }
    let mut stmt = c
        .prepare_cached(
            "SELECT at_ms, cpu_ms, rss_bytes FROM attempt_usage WHERE attempt_id = ?1 ORDER BY at_ms",
        )
        .map_err(sql)?;
    let mut rows = stmt.query(params![a.id as i64]).map_err(sql)?;
    let mut out = vec![UsagePoint {
        at_us: start,
        cpu_time_us: 0,
        rss_bytes: 0,
    }];
    let mut cpu_us = 0u64;
    while let Some(r) = rows.next().map_err(sql)? {
        cpu_us = cpu_us.saturating_add(u64_at(r, 1).map_err(sql)?.saturating_mul(1000));
        out.push(UsagePoint {
            at_us: u64_at(r, 0).map_err(sql)?.saturating_mul(1000),
            cpu_time_us: cpu_us,
            rss_bytes: u64_at(r, 2).map_err(sql)?,
        });
    }
    if out.len() > 2 {
        a.usage = Some(out);
    }
    Ok(())
}

/// The report's attempt from the export's row of it (one reading of the
/// attempt columns serves both).
fn attempt_row(t: telemetry::AttemptRow) -> AttemptRow {
    let stage = [
        t.stage_in_bytes,
        t.stage_in_ms,
        t.stage_out_bytes,
        t.stage_out_ms,
        t.checkpoint_bytes,
        t.checkpoint_ms,
    ];
    let n = |v: Option<u64>| v.unwrap_or(0);
    AttemptRow {
        id: t.attempt,
        task_id: t.task,
        job_id: t.job,
        index: t.index,
        number: t.number,
        agent_id: t.agent,
        ready_at_ms: t.ready_at_ms,
        assigned_at_ms: t.assigned_at_ms,
        started_at_us: t.started_at_us,
        ended_at_us: t.ended_at_us,
        end_class: t.end_class,
        exit_code: t.exit_code,
        peak_rss_bytes: t.peak_rss_bytes,
        cpu_time_us: t.cpu_time_us,
        memory_limit_bytes: t.memory_limit_bytes,
        // NULL before schema 5 (a migrated store's older attempts).
        requested: match (t.cpus, t.memory_bytes) {
            (Some(cpus), Some(memory_bytes)) => Some(Requested {
                cpus,
                memory_bytes,
                gpus: t.gpus.unwrap_or(0),
            }),
            _ => None,
        },
        read_bytes: t.read_bytes,
        written_bytes: t.write_bytes,
        // `None` when none of the six was reported.
        transfers: stage.iter().any(Option::is_some).then(|| Transfers {
            in_bytes: n(t.stage_in_bytes),
            in_ms: n(t.stage_in_ms),
            out_bytes: n(t.stage_out_bytes),
            out_ms: n(t.stage_out_ms),
            checkpoint_bytes: n(t.checkpoint_bytes),
            checkpoint_ms: n(t.checkpoint_ms),
        }),
        usage: None,
    }
}

/// Agents that ran an attempt of the run or were connected while it ran.
fn agents(
    c: &Connection,
    run: RunId,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<AgentRow>, StoreError> {
    let mut stmt = c
        .prepare(&format!(
            "SELECT {} FROM {}
             WHERE ag.id IN (SELECT DISTINCT agent_id FROM attempts WHERE run_id = ?1)
                OR (ag.connected_at_ms <= ?3 AND (ag.left_at_ms IS NULL OR ag.left_at_ms >= ?2))
             ORDER BY ag.id",
            store::AGENT_COLUMNS,
            store::AGENTS_WITH_PILOT
        ))
        .map_err(sql)?;
    let rows = stmt
        .query_map(
            params![run as i64, from_ms as i64, to_ms as i64],
            store::agent_row,
        )
        .map_err(sql)?;
    rows.map(|row| {
        let a = row.map_err(sql)?;
        Ok(AgentRow {
            id: a.agent,
            name: a.name,
            hostname: a.host,
            tags: a.tags,
            cpus: a.cpus,
            memory_bytes: a.memory_bytes,
            gpus: a.gpus,
            connected_at_ms: a.connected_at_ms,
            left_at_ms: a.left_at_ms,
            left_reason: a.left_reason,
            pilot_id: a.reported_pilot_id,
        })
    })
    .collect()
}

/// Pilots alive at some point while the run was.
fn pilots(c: &Connection, from_ms: u64, to_ms: u64) -> Result<Vec<PilotRow>, StoreError> {
    let mut stmt = c
        .prepare(&format!(
            "SELECT {} FROM pilots p
             WHERE p.submitted_at_ms <= ?2 AND (p.ended_at_ms IS NULL OR p.ended_at_ms >= ?1)
             ORDER BY p.submitted_at_ms, p.id",
            store::PILOT_COLUMNS
        ))
        .map_err(sql)?;
    let rows = stmt
        .query_map(params![from_ms as i64, to_ms as i64], |r| {
            store::pilot_row(r, to_ms)
        })
        .map_err(sql)?;
    rows.map(|row| {
        let p = row.map_err(sql)?;
        Ok(PilotRow {
            id: p.pilot,
            target: p.target,
            tag: p.tag,
            provider_id: p.provider_id,
            state: p.state,
            agent_id: p.agent,
            submitted_at_ms: p.submitted_at_ms,
            connected_at_ms: p.connected_at_ms,
            ended_at_ms: p.ended_at_ms,
            reason: p.reason,
        })
    })
    .collect()
}

/// The run's events and the broker's own while it ran (at most
/// [`EVENTS_MAX`]), and how many there were in all.
fn events(
    c: &Connection,
    run: RunId,
    from_ms: u64,
    to_ms: u64,
) -> Result<(Vec<EventRow>, u64), StoreError> {
    let filter = "FROM events WHERE run_id = ?1 OR (run_id IS NULL AND at_ms BETWEEN ?2 AND ?3)";
    let args = params![run as i64, from_ms as i64, to_ms as i64];
    let total: i64 = c
        .query_row(&format!("SELECT COUNT(*) {filter}"), args, |r| r.get(0))
        .map_err(sql)?;
    let mut stmt = c
        .prepare(&format!(
            "SELECT at_ms, kind, detail {filter} ORDER BY id LIMIT {EVENTS_MAX}"
        ))
        .map_err(sql)?;
    let rows = stmt
        .query_map(args, |r| {
            Ok(EventRow {
                at_ms: u64_at(r, 0)?,
                kind: r.get(1)?,
                detail: r.get(2)?,
            })
        })
        .map_err(sql)?;
    let events = rows.collect::<Result<_, _>>().map_err(sql)?;
    Ok((events, total.max(0) as u64))
}

/// The first failed attempts (not given back by rebalancing) with the end of
/// their stderr.
fn failures(c: &Connection, run: RunId) -> Result<Vec<FailureRow>, StoreError> {
    let mut stmt = c
        .prepare(&format!(
            "SELECT a.id, a.run_id || '/' || j.name || '/' || a.idx, a.number, a.end_class,
                    a.exit_code, COALESCE(a.detail, ''), COALESCE(g.name, ''),
                    substr(a.stderr_tail, -{FAILURE_TAIL_BYTES_MAX})
             FROM attempts a JOIN jobs j ON j.id = a.job_id LEFT JOIN agents g ON g.id = a.agent_id
             WHERE a.run_id = ?1 AND a.end_class IS NOT NULL
               AND a.end_class NOT IN ('SUCCESS', 'RETURNED')
             ORDER BY a.id LIMIT {FAILURES_SHOWN_MAX}"
        ))
        .map_err(sql)?;
    let rows = stmt
        .query_map([run as i64], |r| {
            let tail: Option<Vec<u8>> = r.get(7)?;
            Ok(FailureRow {
                attempt_id: u64_at(r, 0)?,
                task: r.get(1)?,
                number: r.get(2)?,
                end_class: r.get(3)?,
                exit_code: r.get(4)?,
                detail: r.get(5)?,
                agent: r.get(6)?,
                stderr_tail: String::from_utf8_lossy(&tail.unwrap_or_default()).into_owned(),
            })
        })
        .map_err(sql)?;
    rows.collect::<Result<_, _>>().map_err(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with one run of one job and `n` ended attempts, the last
    /// failed with a long stderr.
    fn store_with(n: u64) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::store::new_for_tests(dir.path());
        c.execute_batch(
            "INSERT INTO runs (id, name, submitted_at_ms, finished_at_ms, state, cwd, source, definition)
               VALUES (1, 'r', 1000, 9000, 'failed', '/', 'wf.yaml', '{}');
             INSERT INTO jobs (id, run_id, name, tag, cpus, memory_bytes, gpus, priority, retries, first_task, task_count)
               VALUES (1, 1, 'sim', NULL, 1, 0, 0, 0, 0, 1, 1000);
             INSERT INTO agents (id, name, hostname, tags, cpus, memory_bytes, gpus, connected_at_ms)
               VALUES (1, 'a1', 'h', 'x,y', 2, 0, 0, 500);",
        )
        .unwrap();
        for id in 1..=n {
            let class = if id == n { "EXIT_CODE" } else { "SUCCESS" };
            c.execute(
                "INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms,
                   started_at_us, ended_at_us, end_class, stderr_tail)
                 VALUES (?1, ?1, 1, 1, ?1 - 1, 1, 1, '[]', 1000, 1001000, 1002000, ?2, ?3)",
                params![id as i64, class, vec![b'e'; 10_000]],
            )
            .unwrap();
        }
        (dir, c)
    }

    /// An advised attempt given back before it ran (a rebalance) has no peak
    /// to score: it must not be drawn as a prediction against 0.
    #[test]
    fn predictions_leave_out_attempts_that_never_ran() {
        let (_dir, c) = store_with(2);
        c.execute_batch(
            "UPDATE attempts SET request_source = 'advisor', request_detail = 'gb',
               predicted_memory_bytes = 100, peak_rss_bytes = 90;
             UPDATE attempts SET end_class = 'RETURNED', peak_rss_bytes = 0 WHERE id = 2;",
        )
        .unwrap();
        let got = predictions(&c, 1).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].actual, Some(90.0));
    }

    #[test]
    fn pages_walk_every_attempt_once_in_order_within_the_budget() {
        let (_dir, c) = store_with(300);
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let (rows, next) = attempts_page(&c, 1, after, 2_000).unwrap();
            assert!(rows.iter().map(encoded_len).sum::<usize>() <= 2_000 || rows.len() == 1);
            seen.extend(rows.iter().map(|a| a.id));
            pages += 1;
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, (1..=300).collect::<Vec<u64>>());
        assert!(pages > 5, "{pages} pages");
    }

    #[test]
    fn the_first_page_has_the_head_and_failures_keep_the_end_of_stderr() {
        let (_dir, c) = store_with(3);
        let page = page(&c, 1, None, 10_000, &[("sim".into(), Some(60_000))]).unwrap();
        assert_eq!(page.format, REPORT_FORMAT);
        let chunk: ReportChunk = postcard::from_bytes(&page.body).unwrap();
        let head = chunk.head.expect("a head on the first page");
        assert_eq!(
            (head.run.name.as_str(), head.run.finished_at_ms),
            ("r", Some(9000))
        );
        assert_eq!(head.jobs[0].walltime_ms, Some(60_000));
        assert_eq!(head.agents[0].tags, ["x", "y"]);
        assert_eq!(head.failures.len(), 1);
        assert_eq!(head.failures[0].task, "1/sim/2");
        assert_eq!(head.failures[0].stderr_tail.len(), FAILURE_TAIL_BYTES_MAX);
        assert_eq!(chunk.attempts.len(), 3);
        assert_eq!(
            crate::report::summary::run_time_us(&chunk.attempts[2]),
            Some(1_000)
        );
        assert_eq!(page.next, None);
    }

    /// Jobs, agents and pilots are read through the export's rows: each field
    /// lands where the report keeps it.
    #[test]
    fn the_head_carries_jobs_agents_and_pilots_field_by_field() {
        let (_dir, c) = store_with(1);
        c.execute_batch(
            "UPDATE jobs SET tag = 'gpu', cpus = 4, memory_bytes = 2048, gpus = 1, retries = 2;
             UPDATE agents SET left_at_ms = 8000, left_reason = 'drained', pilot_id = 'p-1',
               memory_bytes = 4096, gpus = 1 WHERE id = 1;
             INSERT INTO pilots (id, target, tag, provider_id, agent_match, state, agent_id,
                 submitted_at_ms, connected_at_ms, ended_at_ms, reason, provider)
               VALUES ('p-1', 'hpc', 'gpu', 'job-7', 'm', 'ended', 1, 400, 500, 8000, 'idle', 'slurm'),
                      ('p-0', 'hpc', NULL, 'job-6', 'm', 'ended', NULL, 10, NULL, 20, 'gone', 'slurm');",
        )
        .unwrap();
        let head = head(&c, 1, 10_000, &[]).unwrap();
        let j = &head.jobs[0];
        assert_eq!(
            (
                j.id,
                j.name.as_str(),
                j.tag.as_deref(),
                j.cpus,
                j.memory_bytes,
                j.gpus
            ),
            (1, "sim", Some("gpu"), 4, 2048, 1)
        );
        assert_eq!((j.retries, j.task_count, j.walltime_ms), (2, 1000, None));
        let a = &head.agents[0];
        assert_eq!((a.id, a.name.as_str(), a.hostname.as_str()), (1, "a1", "h"));
        assert_eq!((a.cpus, a.memory_bytes, a.gpus), (2, 4096, 1));
        assert_eq!((a.connected_at_ms, a.left_at_ms), (500, Some(8000)));
        assert_eq!(a.left_reason.as_deref(), Some("drained"));
        assert_eq!(a.pilot_id.as_deref(), Some("p-1"));
        // Only the pilot alive while the run was (1000 to 9000).
        assert_eq!(head.pilots.len(), 1, "{:?}", head.pilots);
        let p = &head.pilots[0];
        assert_eq!(
            (
                p.id.as_str(),
                p.target.as_str(),
                p.tag.as_deref(),
                p.provider_id.as_str()
            ),
            ("p-1", "hpc", Some("gpu"), "job-7")
        );
        assert_eq!((p.state.as_str(), p.agent_id), ("ended", Some(1)));
        assert_eq!(
            (p.submitted_at_ms, p.connected_at_ms, p.ended_at_ms),
            (400, Some(500), Some(8000))
        );
        assert_eq!(p.reason.as_deref(), Some("idle"));
    }
}
