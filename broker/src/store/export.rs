//! The SQL of `scalable export`: a run's rows, table after table, one page
//! at a time from an export cursor (`telemetry::Cursor`).
//!
//! Owns the queries and their mapping onto `telemetry`'s rows. It must not
//! decide the line format or derived values (`telemetry` does) and reads
//! only: it runs on the writer thread behind the writes before it.

use rusqlite::{params, Connection, Row};
use scalable_common::protocol::{Page, RunId};

use crate::paging::PageBuilder;
use crate::telemetry::{
    AgentRow, AttemptRow, Cursor, JobRow, Line, PilotRow, RunRow, Section, TaskRow, UsageRow,
};

/// The page of run `run`'s export that starts at cursor `at`, at most
/// `budget_bytes` (one row at least); `now_ms` prices live pilots.
pub fn export_page(
    c: &Connection,
    run: RunId,
    at: Option<u64>,
    now_ms: u64,
    budget_bytes: usize,
) -> rusqlite::Result<Page<String>> {
    let cursor = Cursor::decode(at);
    let mut out = Out {
        page: PageBuilder::new(budget_bytes),
        section: cursor.section,
    };
    let run = run as i64;
    for section in Section::ALL.into_iter().filter(|s| *s >= cursor.section) {
        let after = if section == cursor.section {
            cursor.after.map(|a| a as i64).unwrap_or(-1)
        } else {
            -1
        };
        out.section = section;
        let more = match section {
            Section::Run => runs(c, run, after, &mut out)?,
            Section::Jobs => jobs(c, run, after, &mut out)?,
            Section::Tasks => tasks(c, run, after, &mut out)?,
            Section::Attempts => attempts(c, run, after, &mut out)?,
            Section::Usage => usage(c, run, after, &mut out)?,
            Section::Agents => agents(c, run, after, &mut out)?,
            Section::Pilots => pilots(c, run, after, now_ms, &mut out)?,
        };
        if !more {
            break;
        }
    }
    Ok(out.page.finish())
}

/// The page being filled and the section its rows come from.
struct Out {
    page: PageBuilder<String>,
    section: Section,
}

impl Out {
    /// False when the page is full (the row goes on the next page).
    fn push(&mut self, key: i64, text: String) -> bool {
        self.page
            .push(Cursor::encode(self.section, key.max(0) as u64), text)
    }
}

/// A column's integer, negative ones (never written) as 0.
pub(crate) fn u64_at(r: &Row, i: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, i64>(i)?.max(0) as u64)
}

/// [`u64_at`] of a column that may be NULL.
pub(crate) fn opt_u64(r: &Row, i: usize) -> rusqlite::Result<Option<u64>> {
    Ok(r.get::<_, Option<i64>>(i)?.map(|v| v.max(0) as u64))
}

fn json(r: &Row, i: usize) -> rusqlite::Result<Option<serde_json::Value>> {
    Ok(r.get::<_, Option<String>>(i)?
        .and_then(|s| serde_json::from_str(&s).ok()))
}

/// Pushes each row `map` makes of the query's rows; the first column is the key.
fn each(
    c: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    out: &mut Out,
    map: impl Fn(&Row) -> rusqlite::Result<Line>,
) -> rusqlite::Result<bool> {
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    while let Some(r) = rows.next()? {
        let key: i64 = r.get(0)?;
        if !out.push(key, map(r)?.to_jsonl()) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn runs(c: &Connection, run: i64, after: i64, out: &mut Out) -> rusqlite::Result<bool> {
    each(
        c,
        "SELECT r.id, r.name, r.state, r.submitted_at_ms, r.finished_at_ms, r.cwd,
                (SELECT COALESCE(SUM(task_count), 0) FROM jobs WHERE run_id = r.id)
         FROM runs r WHERE r.id = ?1 AND r.id > ?2",
        params![run, after],
        out,
        |r| {
            Ok(Line::Run(RunRow {
                run: u64_at(r, 0)?,
                name: r.get(1)?,
                state: r.get(2)?,
                submitted_at_ms: u64_at(r, 3)?,
                finished_at_ms: opt_u64(r, 4)?,
                cwd: r.get(5)?,
                tasks: u64_at(r, 6)?,
            }))
        },
    )
}

/// The columns of `jobs` that [`job_row`] reads, in its order.
pub(crate) const JOB_COLUMNS: &str =
    "id, run_id, name, tag, cpus, memory_bytes, gpus, retries, task_count";

/// One job from [`JOB_COLUMNS`] (the report's jobs are made of it too).
pub(crate) fn job_row(r: &Row) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        job: u64_at(r, 0)?,
        run: u64_at(r, 1)?,
        name: r.get(2)?,
        tag: r.get(3)?,
        cpus: r.get(4)?,
        memory_bytes: u64_at(r, 5)?,
        gpus: r.get(6)?,
        retries: r.get(7)?,
        tasks: u64_at(r, 8)?,
    })
}

fn jobs(c: &Connection, run: i64, after: i64, out: &mut Out) -> rusqlite::Result<bool> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE run_id = ?1 AND id > ?2 ORDER BY id");
    each(c, &sql, params![run, after], out, |r| {
        Ok(Line::Job(job_row(r)?))
    })
}

fn tasks(c: &Connection, run: i64, after: i64, out: &mut Out) -> rusqlite::Result<bool> {
    each(
        c,
        "SELECT id, run_id, job_id, idx, state, attempts, retries_used, crashes, reason, updated_at_ms
         FROM tasks WHERE run_id = ?1 AND id > ?2 ORDER BY id",
        params![run, after],
        out,
        |r| {
            Ok(Line::Task(TaskRow {
                task: u64_at(r, 0)?,
                run: u64_at(r, 1)?,
                job: u64_at(r, 2)?,
                index: u64_at(r, 3)?,
                state: r.get(4)?,
                attempts: r.get(5)?,
                retries_used: r.get(6)?,
                crashes: r.get(7)?,
                reason: r.get(8)?,
                updated_at_ms: u64_at(r, 9)?,
            }))
        },
    )
}

/// The columns of the `attempt_telemetry` view (`schema::VIEWS`) that
/// [`attempt_telemetry_row`] reads, in its order: what a user's own SQL sees
/// is what the export writes, and what the report's attempts are made of.
pub(crate) const ATTEMPT_TELEMETRY_COLUMNS: &str = "id, run_id, job_id, job_name, task_id, idx,
    number, tag, agent_id, host, target, pilot, provider, ready_at_ms, assigned_at_ms,
    started_at_us, ended_at_us, end_class, exit_code, detail, spends_retry,
    cpus, memory_bytes, gpus, custom_resources, request_source,
    peak_rss_bytes, memory_limit_bytes, cpu_time_us, stdout_bytes,
    stderr_bytes, read_bytes, write_bytes, input_bytes, input_sizes,
    request_model, request_confidence, request_detail,
    predicted_memory_bytes, predicted_run_time_ms,
    stage_in_bytes, stage_in_ms, stage_out_bytes, stage_out_ms,
    checkpoint_bytes, checkpoint_ms";

/// One attempt from [`ATTEMPT_TELEMETRY_COLUMNS`], its derived fields
/// filled; `features` is left `None` (the export renders them).
pub(crate) fn attempt_telemetry_row(r: &Row) -> rusqlite::Result<AttemptRow> {
    let mut row = AttemptRow {
        attempt: u64_at(r, 0)?,
        run: u64_at(r, 1)?,
        job: u64_at(r, 2)?,
        job_name: r.get(3)?,
        task: u64_at(r, 4)?,
        index: u64_at(r, 5)?,
        number: r.get(6)?,
        tag: r.get(7)?,
        agent: u64_at(r, 8)?,
        host: r.get(9)?,
        target: r.get(10)?,
        pilot: r.get(11)?,
        provider: r.get(12)?,
        ready_at_ms: opt_u64(r, 13)?,
        assigned_at_ms: u64_at(r, 14)?,
        started_at_us: opt_u64(r, 15)?,
        ended_at_us: opt_u64(r, 16)?,
        queue_wait_ms: None,
        run_time_ms: None,
        end_class: r.get(17)?,
        exit_code: r.get(18)?,
        detail: r.get(19)?,
        spends_retry: r.get(20)?,
        cpus: r.get(21)?,
        memory_bytes: opt_u64(r, 22)?,
        gpus: r.get(23)?,
        custom_resources: json(r, 24)?,
        request_source: r.get(25)?,
        request_model: r.get(35)?,
        request_confidence: r.get(36)?,
        request_detail: r.get(37)?,
        predicted_memory_bytes: opt_u64(r, 38)?,
        predicted_run_time_ms: opt_u64(r, 39)?,
        peak_rss_bytes: opt_u64(r, 26)?,
        memory_limit_bytes: opt_u64(r, 27)?,
        cpu_time_us: opt_u64(r, 28)?,
        cpu_utilisation: None,
        stdout_bytes: opt_u64(r, 29)?,
        stderr_bytes: opt_u64(r, 30)?,
        read_bytes: opt_u64(r, 31)?,
        write_bytes: opt_u64(r, 32)?,
        input_bytes: opt_u64(r, 33)?,
        input_sizes: json(r, 34)?,
        stage_in_bytes: opt_u64(r, 40)?,
        stage_in_ms: opt_u64(r, 41)?,
        stage_out_bytes: opt_u64(r, 42)?,
        stage_out_ms: opt_u64(r, 43)?,
        checkpoint_bytes: opt_u64(r, 44)?,
        checkpoint_ms: opt_u64(r, 45)?,
        features: None,
    };
    row.derive();
    Ok(row)
}

fn attempts(c: &Connection, run: i64, after: i64, out: &mut Out) -> rusqlite::Result<bool> {
    let sql = format!(
        "SELECT {ATTEMPT_TELEMETRY_COLUMNS} FROM attempt_telemetry
         WHERE run_id = ?1 AND id > ?2 ORDER BY id"
    );
    // Features are templates of the stored definition, rendered per task (as
    // the advisors read them); the run is planned again once per page.
    let jobs = crate::advisor::history::run_jobs(c, run as u64);
    let features = |job: &str, index: u64| {
        let p = jobs.as_ref()?.get(job)?;
        let pairs = p.templates.features(&p.def, index, run as u64).ok()?;
        (!pairs.is_empty()).then(|| pairs.into_iter().collect())
    };
    each(c, &sql, params![run, after], out, |r| {
        let mut row = attempt_telemetry_row(r)?;
        row.features = features(&row.job_name, row.index);
        Ok(Line::Attempt(Box::new(row)))
    })
}

/// All points of one attempt go on one page (at most `USAGE_POINTS_MAX`).
fn usage(c: &Connection, run: i64, after: i64, out: &mut Out) -> rusqlite::Result<bool> {
    let mut stmt = c.prepare_cached(
        "SELECT u.attempt_id, u.at_ms, u.cpu_ms, u.rss_bytes
         FROM attempts a JOIN attempt_usage u ON u.attempt_id = a.id
         WHERE a.run_id = ?1 AND a.id > ?2 ORDER BY a.id, u.at_ms",
    )?;
    let mut rows = stmt.query(params![run, after])?;
    let mut open: Option<(i64, String)> = None;
    while let Some(r) = rows.next()? {
        let attempt: i64 = r.get(0)?;
        let line = Line::Usage(UsageRow {
            attempt: attempt.max(0) as u64,
            at_ms: u64_at(r, 1)?,
            cpu_ms: u64_at(r, 2)?,
            rss_bytes: u64_at(r, 3)?,
        })
        .to_jsonl();
        match &mut open {
            Some((a, text)) if *a == attempt => text.push_str(&line),
            _ => {
                if let Some((a, text)) = open.replace((attempt, line)) {
                    if !out.push(a, text) {
                        return Ok(false);
                    }
                }
            }
        }
    }
    Ok(open.is_none_or(|(a, text)| out.push(a, text)))
}

/// The columns [`agent_row`] reads, in its order, from [`AGENTS_WITH_PILOT`].
pub(crate) const AGENT_COLUMNS: &str = "ag.id, ag.name, ag.hostname, ag.tags, ag.cpus,
    ag.memory_bytes, ag.gpus, ag.connected_at_ms, ag.left_at_ms, ag.left_reason, ag.pilot_id,
    p.id, p.target, p.provider";

/// Agents `ag`, each with its pilot `p` (the first matched).
pub(crate) const AGENTS_WITH_PILOT: &str = "agents ag LEFT JOIN
    (SELECT agent_id, MIN(id) AS id, target, provider FROM pilots
     WHERE agent_id IS NOT NULL GROUP BY agent_id) p ON p.agent_id = ag.id";

/// One agent from [`AGENT_COLUMNS`] (the report's agents are made of it too).
pub(crate) fn agent_row(r: &Row) -> rusqlite::Result<AgentRow> {
    let tags: String = r.get(3)?;
    Ok(AgentRow {
        agent: u64_at(r, 0)?,
        name: r.get(1)?,
        host: r.get(2)?,
        tags: super::agent_tags(&tags),
        cpus: r.get(4)?,
        memory_bytes: u64_at(r, 5)?,
        gpus: r.get(6)?,
        connected_at_ms: u64_at(r, 7)?,
        left_at_ms: opt_u64(r, 8)?,
        left_reason: r.get(9)?,
        reported_pilot_id: r.get(10)?,
        pilot: r.get(11)?,
        target: r.get(12)?,
        provider: r.get(13)?,
    })
}

fn agents(c: &Connection, run: i64, after: i64, out: &mut Out) -> rusqlite::Result<bool> {
    let sql = format!(
        "SELECT {AGENT_COLUMNS} FROM {AGENTS_WITH_PILOT}
         WHERE ag.id IN (SELECT DISTINCT agent_id FROM attempts WHERE run_id = ?1) AND ag.id > ?2
         ORDER BY ag.id"
    );
    each(c, &sql, params![run, after], out, |r| {
        Ok(Line::Agent(agent_row(r)?))
    })
}

/// The columns of pilots `p` that [`pilot_row`] reads, in its order (the
/// first, the rowid, is the export's key).
pub(crate) const PILOT_COLUMNS: &str = "p.rowid, p.id, p.target, p.tag, p.provider,
    p.provider_id, p.state, p.agent_id, p.submitted_at_ms, p.connected_at_ms, p.ended_at_ms,
    p.reason, p.price_per_hour, p.cost";

/// One pilot from [`PILOT_COLUMNS`], a live one priced at `now_ms` (the
/// report's pilots are made of it too).
pub(crate) fn pilot_row(r: &Row, now_ms: u64) -> rusqlite::Result<PilotRow> {
    let mut row = PilotRow {
        pilot: r.get(1)?,
        target: r.get(2)?,
        tag: r.get(3)?,
        provider: r.get(4)?,
        provider_id: r.get(5)?,
        state: r.get(6)?,
        agent: opt_u64(r, 7)?,
        submitted_at_ms: u64_at(r, 8)?,
        connected_at_ms: opt_u64(r, 9)?,
        queue_wait_ms: None,
        ended_at_ms: opt_u64(r, 10)?,
        reason: r.get(11)?,
        price_per_hour: r.get(12)?,
        cost: r.get(13)?,
    };
    row.derive(now_ms);
    Ok(row)
}

fn pilots(
    c: &Connection,
    run: i64,
    after: i64,
    now_ms: u64,
    out: &mut Out,
) -> rusqlite::Result<bool> {
    let sql = format!(
        "SELECT {PILOT_COLUMNS} FROM pilots p, runs r
         WHERE r.id = ?1 AND p.rowid > ?2
           AND (p.agent_id IN (SELECT DISTINCT agent_id FROM attempts WHERE run_id = ?1)
                OR p.submitted_at_ms BETWEEN r.submitted_at_ms AND COALESCE(r.finished_at_ms, ?3))
         ORDER BY p.rowid"
    );
    each(c, &sql, params![run, after, now_ms as i64], out, |r| {
        Ok(Line::Pilot(pilot_row(r, now_ms)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StateOrigin, Store};

    fn seeded(dir: &std::path::Path) -> Connection {
        let c = crate::store::new_for_tests(dir);
        c.execute_batch(
            "INSERT INTO runs (id, name, submitted_at_ms, cwd, source, definition) VALUES
                 (1, 'other', 0, '/', 's', '{}'), (2, 'wf', 10, '/w', 's', '{}');
             INSERT INTO jobs (id, run_id, name, cpus, memory_bytes, gpus, priority, retries, first_task, task_count)
                 VALUES (1, 1, 'x', 1, 0, 0, 0, 0, 1, 1), (2, 2, 'sim', 1, 0, 0, 0, 0, 2, 40);
             INSERT INTO agents (id, name, hostname, tags, cpus, memory_bytes, gpus, connected_at_ms)
                 VALUES (1, 'a', 'h', 'x,y', 2, 0, 0, 5), (2, 'b', 'h', '', 2, 0, 0, 5);
             INSERT INTO pilots (id, target, provider_id, agent_match, state, agent_id, submitted_at_ms, provider, price_per_hour)
                 VALUES ('p-1', 'hpc', '42', '{}', 'connected', 1, 0, 'slurm', 2.0);
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 39)
             INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms, ready_at_ms,
                                   started_at_us, ended_at_us, end_class, cpu_time_us)
                 SELECT 10 + i, 2 + i, 2, 2, i, 1, 1, '[]', 20, 15, 30000, 2030000, 'SUCCESS', 1000000 FROM n;
             INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms)
                 VALUES (5, 1, 1, 1, 0, 1, 2, '[]', 0);
             INSERT INTO attempt_usage (attempt_id, at_ms, cpu_ms, rss_bytes)
                 VALUES (10, 1000, 500, 1), (10, 2000, 500, 2), (11, 1000, 7, 3);",
        )
        .unwrap();
        c
    }

    fn export_all(c: &Connection, budget: usize) -> (Vec<String>, usize) {
        let (mut lines, mut pages, mut at) = (Vec::new(), 0, None);
        loop {
            let page = export_page(c, 2, at, 3_600_000, budget).unwrap();
            pages += 1;
            for item in page.items {
                lines.extend(item.lines().map(String::from));
            }
            match page.next {
                Some(n) => {
                    assert!(at.is_none_or(|a| n > a), "cursors grow");
                    at = Some(n);
                }
                None => return (lines, pages),
            }
        }
    }

    #[test]
    fn small_pages_give_the_same_rows_as_one_page_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let c = seeded(dir.path());
        let (whole, one) = export_all(&c, usize::MAX);
        assert_eq!(one, 1);
        let tables: Vec<String> = whole
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["table"].to_string())
            .collect();
        let count = |t: &str| tables.iter().filter(|x| *x == &format!("\"{t}\"")).count();
        assert_eq!(
            [
                count("run"),
                count("job"),
                count("attempt"),
                count("usage"),
                count("agent"),
                count("pilot")
            ],
            [1, 1, 40, 3, 1, 1],
            "only run 2's rows and agent"
        );
        assert!(
            whole[0].starts_with(r#"{"table":"run","run":2,"#),
            "{}",
            whole[0]
        );
        let (paged, pages) = export_all(&c, 64);
        assert_eq!(paged, whole);
        assert!(pages > 40, "{pages}");
        let a: serde_json::Value = serde_json::from_str(&whole[2]).unwrap();
        assert_eq!(
            (
                &a["queue_wait_ms"],
                &a["run_time_ms"],
                &a["cpu_utilisation"]
            ),
            (
                &serde_json::json!(15),
                &serde_json::json!(2000),
                &serde_json::json!(0.5)
            )
        );
        let p: serde_json::Value = serde_json::from_str(whole.last().unwrap()).unwrap();
        assert_eq!(
            (&p["provider"], &p["cost"]),
            (&serde_json::json!("slurm"), &serde_json::json!(2.0))
        );
    }

    /// A pilot's record keeps its provider and price from its start, through
    /// a restart that knows neither, and its cost once it ended.
    #[test]
    fn a_pilot_costs_its_price_over_its_life() {
        use crate::fleet::Fleet;
        use crate::providers::{AgentId, StartedPilot};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let (store, _, _) = Store::open(&path, StateOrigin::New).unwrap();
        let mut fleet = Fleet::new("hpc", vec![]);
        fleet.provider = Some("slurm");
        fleet.set_price(Some("sim"), Some(2.0));
        let started = StartedPilot {
            pilot_id: "p-1".into(),
            provider_id: "42".into(),
            agent_id: AgentId::Exact("42".into()),
            commands: vec![],
        };
        store.write(fleet.started(Some("sim"), &[started], 0), None);
        store.stop();
        // A restarted broker's fleet knows neither provider nor price.
        let mut again = Fleet::new("hpc", fleet_pilots(&path));
        let ended = crate::providers::PilotState::Ended {
            reason: "COMPLETED".into(),
        };
        let (store, _, _) = Store::open(&path, StateOrigin::Existing).unwrap();
        store.write(again.reconcile(&[("42".into(), ended)], 5_400_000), None);
        store.stop();
        let c = Connection::open(&path).unwrap();
        let row: (Option<String>, Option<f64>, Option<f64>) = c
            .query_row(
                "SELECT provider, price_per_hour, cost FROM pilots",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            row,
            (Some("slurm".into()), Some(2.0), Some(3.0)),
            "1.5 h at 2.0"
        );
    }

    fn fleet_pilots(path: &std::path::Path) -> Vec<crate::fleet::Pilot> {
        let (store, _, loaded) = Store::open(path, StateOrigin::Existing).unwrap();
        store.stop();
        loaded
            .pilots
            .into_iter()
            .filter_map(|(p, m)| crate::fleet::Pilot::from_stored(p, &m))
            .collect()
    }
}
