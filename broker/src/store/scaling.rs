//! The `scaling_decisions` table: a decision written, its outcome filled in
//! later, and the page `scalable scaling` reads (by run, by time, or all).
//!
//! SQL only, on the store's connection; it must not decide what is worth
//! storing (`scaler::ScaleDecision::worth_recording`) or format anything.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, Row};
use scalable_common::protocol::{Page, RunId};
use scalable_common::scaling::{ScalingDecisionInfo, ScalingOutcome};

use super::reads::sql;
use super::StoreError;
use crate::paging::PageBuilder;

/// Which decisions `scalable scaling` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalingFilter {
    All,
    /// Made while the run was live (from its submit to its end, or now).
    Run(RunId),
    Since(u64),
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub(super) fn insert(c: &Connection, d: &ScalingDecisionInfo) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO scaling_decisions (at_ms, target, state, workers_to_add, workers_to_remove, cancelled, drained, reasoning, confidence, predicted_completion_s, inputs, decision)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT(target, at_ms) DO NOTHING",
    )?
    .execute(params![
        d.at_ms as i64,
        d.target,
        d.state,
        json(&d.workers_to_add),
        json(&d.workers_to_remove),
        json(&d.cancelled),
        json(&d.drained),
        d.reasoning,
        d.confidence,
        d.predicted_completion_seconds,
        d.inputs,
        d.decision,
    ])?;
    Ok(())
}

/// Fills in what is known of a decision's outcome; what is `None` stays.
pub(super) fn set_outcome(
    c: &Connection,
    target: &str,
    at_ms: u64,
    o: &ScalingOutcome,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE scaling_decisions SET
           pilots_connected_at_ms = COALESCE(?3, pilots_connected_at_ms),
           busy_s = COALESCE(?4, busy_s), idle_s = COALESCE(?5, idle_s), cost = COALESCE(?6, cost)
         WHERE target = ?1 AND at_ms = ?2",
    )?
    .execute(params![
        target,
        at_ms as i64,
        o.pilots_connected_at_ms.map(|x| x as i64),
        o.busy_seconds,
        o.idle_seconds,
        o.cost
    ])?;
    Ok(())
}

const COLUMNS: &str = "d.id, d.at_ms, d.target, d.state, d.workers_to_add, d.workers_to_remove, d.cancelled, d.drained, d.reasoning, d.confidence, d.predicted_completion_s, d.inputs, d.decision, d.pilots_connected_at_ms, d.busy_s, d.idle_s, d.cost";

fn row(r: &Row) -> rusqlite::Result<ScalingDecisionInfo> {
    let parsed = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    Ok(ScalingDecisionInfo {
        id: r.get::<_, i64>(0)? as u64,
        at_ms: r.get::<_, i64>(1)? as u64,
        target: r.get(2)?,
        state: r.get(3)?,
        workers_to_add: serde_json::from_str(&parsed(4)?).unwrap_or_default(),
        workers_to_remove: serde_json::from_str(&parsed(5)?).unwrap_or_default(),
        cancelled: serde_json::from_str(&parsed(6)?).unwrap_or_default(),
        drained: serde_json::from_str(&parsed(7)?).unwrap_or_default(),
        reasoning: r.get(8)?,
        confidence: r.get(9)?,
        predicted_completion_seconds: r.get(10)?,
        inputs: r.get(11)?,
        decision: r.get(12)?,
        outcome: ScalingOutcome {
            pilots_connected_at_ms: r.get::<_, Option<i64>>(13)?.map(|x| x as u64),
            busy_seconds: r.get(14)?,
            idle_seconds: r.get(15)?,
            cost: r.get(16)?,
        },
    })
}

/// The decisions `filter` names whose id is greater than `after`, oldest
/// first, one page (`budget_bytes`).
pub fn scaling_decisions(
    c: &Connection,
    filter: ScalingFilter,
    after: Option<u64>,
    budget_bytes: usize,
) -> Result<Page<ScalingDecisionInfo>, StoreError> {
    let after = after.unwrap_or(0) as i64;
    let (query, key) = match filter {
        ScalingFilter::All => (
            format!("SELECT {COLUMNS} FROM scaling_decisions d WHERE d.id > ?1 AND ?2 = 0 ORDER BY d.id"),
            0,
        ),
        ScalingFilter::Since(ms) => (
            format!("SELECT {COLUMNS} FROM scaling_decisions d WHERE d.id > ?1 AND d.at_ms >= ?2 ORDER BY d.id"),
            ms as i64,
        ),
        ScalingFilter::Run(run) => (
            format!(
                "SELECT {COLUMNS} FROM scaling_decisions d JOIN runs r ON r.id = ?2
                 WHERE d.id > ?1 AND d.at_ms >= r.submitted_at_ms
                   AND (r.finished_at_ms IS NULL OR d.at_ms <= r.finished_at_ms)
                 ORDER BY d.id"
            ),
            run as i64,
        ),
    };
    let mut stmt = c.prepare(&query).map_err(sql)?;
    let rows = stmt.query_map(params![after, key], row).map_err(sql)?;
    let mut page = PageBuilder::new(budget_bytes);
    for r in rows {
        let d = r.map_err(sql)?;
        if !page.push(d.id, d) {
            break;
        }
    }
    Ok(page.finish())
}

/// Successful attempts read (newest first) for the measured run times.
pub const MEASURED_ATTEMPTS_MAX: u32 = 10_000;
/// Pilots read (newest first) for the measured queue wait.
pub const MEASURED_PILOTS_MAX: u32 = 1_000;

/// What the scaler predicts with until the advisors exist: per tag (`*` for
/// untagged tasks), the median run time in seconds of the newest successful
/// attempts; and the median queue wait in seconds of `target`'s pilots that
/// connected. Bounded reads (`MEASURED_*_MAX`), newest first.
pub fn measured_medians(
    c: &Connection,
    target: &str,
) -> Result<(BTreeMap<String, f64>, Option<f64>), StoreError> {
    let mut runs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut stmt = c
        .prepare(
            "SELECT COALESCE(j.tag, '*'), a.ended_at_us - a.started_at_us
             FROM attempts a JOIN jobs j ON j.id = a.job_id
             WHERE a.end_class = 'SUCCESS' AND a.started_at_us IS NOT NULL AND a.ended_at_us IS NOT NULL
             ORDER BY a.id DESC LIMIT ?1",
        )
        .map_err(sql)?;
    let rows = stmt
        .query_map(params![MEASURED_ATTEMPTS_MAX], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(sql)?;
    for r in rows {
        let (tag, us) = r.map_err(sql)?;
        runs.entry(tag).or_default().push(us.max(0));
    }
    let run_seconds = runs
        .into_iter()
        .filter_map(|(tag, us)| median(us).map(|m| (tag, m as f64 / 1e6)))
        .collect();
    let waits: Vec<i64> = c
        .prepare(
            "SELECT connected_at_ms - submitted_at_ms FROM pilots
             WHERE target = ?1 AND connected_at_ms IS NOT NULL
             ORDER BY submitted_at_ms DESC LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![target, MEASURED_PILOTS_MAX], |r| r.get(0))?
                .collect()
        })
        .map_err(sql)?;
    let wait = median(waits.into_iter().map(|w| w.max(0)).collect()).map(|m| m as f64 / 1e3);
    Ok((run_seconds, wait))
}

/// The middle value (the lower of the two middle ones), if any.
fn median(mut v: Vec<i64>) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    let mid = (v.len() - 1) / 2;
    Some(*v.select_nth_unstable(mid).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(at_ms: u64) -> ScalingDecisionInfo {
        ScalingDecisionInfo {
            at_ms,
            target: "hpc".into(),
            state: "active".into(),
            workers_to_add: [("demeter".to_string(), 6)].into(),
            cancelled: vec!["p-3".into()],
            reasoning: "demeter: 60 ready tasks ask for 6 pilots.".into(),
            confidence: 0.9,
            predicted_completion_seconds: Some(10.0),
            inputs: "{}".into(),
            decision: "{}".into(),
            ..ScalingDecisionInfo::default()
        }
    }

    #[test]
    fn run_times_and_queue_waits_are_measured_as_medians() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(crate::store::schema::SCHEMA).unwrap();
        c.execute_batch(
            "INSERT INTO runs (id, name, submitted_at_ms, cwd, source, definition)
                 VALUES (1, 'r', 0, '/', 'wf.yaml', '{}');
             INSERT INTO jobs (id, run_id, name, tag, cpus, memory_bytes, gpus, priority, retries, first_task, task_count)
                 VALUES (1, 1, 'sim', 'demeter', 1, 0, 0, 0, 0, 1, 9), (2, 1, 'post', NULL, 1, 0, 0, 0, 0, 10, 9);
             INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms, started_at_us, ended_at_us, end_class) VALUES
                 (1, 1, 1, 1, 0, 1, 1, '[]', 0, 0, 10000000, 'SUCCESS'),
                 (2, 2, 1, 1, 1, 1, 1, '[]', 0, 0, 30000000, 'SUCCESS'),
                 (3, 3, 1, 1, 2, 1, 1, '[]', 0, 0, 20000000, 'SUCCESS'),
                 (4, 4, 1, 1, 3, 1, 1, '[]', 0, 0, 900000000, 'EXIT_CODE'),
                 (5, 10, 1, 2, 0, 1, 1, '[]', 0, 1000000, 3000000, 'SUCCESS'),
                 (6, 11, 1, 2, 1, 1, 1, '[]', 0, 5, NULL, NULL);
             INSERT INTO pilots (id, target, provider_id, agent_match, state, submitted_at_ms, connected_at_ms) VALUES
                 ('p-1', 'hpc', '1', '{}', 'connected', 0, 4000),
                 ('p-2', 'hpc', '2', '{}', 'connected', 0, 8000),
                 ('p-3', 'hpc', '3', '{}', 'submitted', 0, NULL),
                 ('p-4', 'other', '4', '{}', 'connected', 0, 99000);",
        )
        .unwrap();
        let (runs, wait) = measured_medians(&c, "hpc").unwrap();
        assert_eq!(
            runs.get("demeter"),
            Some(&20.0),
            "failures and open attempts left out"
        );
        assert_eq!(runs.get("*"), Some(&2.0));
        assert_eq!(wait, Some(4.0));
        let (_, none) = measured_medians(&c, "gcp").unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn decisions_are_stored_with_their_outcome_and_listed_by_run_and_time() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(crate::store::schema::SCHEMA).unwrap();
        c.execute_batch(
            "INSERT INTO runs (id, name, submitted_at_ms, finished_at_ms, cwd, source, definition)
                 VALUES (1, 'r', 1000, 2000, '/', 'wf.yaml', '{}')",
        )
        .unwrap();
        for at in [500, 1500, 2500] {
            insert(&c, &decision(at)).unwrap();
        }
        insert(&c, &decision(1500)).unwrap();
        let outcome = ScalingOutcome {
            pilots_connected_at_ms: Some(1600),
            busy_seconds: Some(12.5),
            ..ScalingOutcome::default()
        };
        set_outcome(&c, "hpc", 1500, &outcome).unwrap();
        let all = scaling_decisions(&c, ScalingFilter::All, None, 1 << 20).unwrap();
        assert_eq!(all.items.len(), 3, "one row per target and time");
        let run = scaling_decisions(&c, ScalingFilter::Run(1), None, 1 << 20).unwrap();
        assert_eq!(run.items.len(), 1);
        assert_eq!(run.items[0].outcome, outcome);
        assert_eq!(run.items[0].workers_to_add.get("demeter"), Some(&6));
        assert_eq!(run.items[0].cancelled, vec!["p-3".to_string()]);
        let since = scaling_decisions(&c, ScalingFilter::Since(1500), None, 1 << 20).unwrap();
        assert_eq!(
            since.items.iter().map(|d| d.at_ms).collect::<Vec<_>>(),
            vec![1500, 2500]
        );
        // Paged: a tiny budget gives one per page, and the cursor moves on.
        let first = scaling_decisions(&c, ScalingFilter::All, None, 1).unwrap();
        assert_eq!((first.items.len(), first.next), (1, Some(1)));
        let second = scaling_decisions(&c, ScalingFilter::All, first.next, 1).unwrap();
        assert_eq!(second.items[0].at_ms, 1500);
    }
}
