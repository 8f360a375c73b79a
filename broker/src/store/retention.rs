//! `scalable-broker --telemetry-keep D`: the detail of runs that finished
//! longer ago than D is dropped, their numbers kept.
//!
//! Owns which rows are detail: a long attempt's usage series, its log tails
//! and its argv. It must not touch a run that is not finished (a resumed run
//! is unfinished again and is pruned anew once it finishes), the numbers the
//! advisors learn from (times, peaks, cpu, I/O, requests, ends), what a
//! restarted broker loads (`load`: ids, counted attempts, OOM peaks, the
//! run's definition) or the cache (`cache_entries` and its blobs).

use rusqlite::{params, Connection};

/// Attempts pruned in one call at most, so the writer thread, which every
/// commit waits for, is never held for long; the caller calls again.
pub const PRUNE_ATTEMPTS_PER_CALL_MAX: u64 = 20_000;

/// What one call pruned; `more`: runs are left for the next call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub runs: u64,
    pub attempts: u64,
    pub usage_rows: u64,
    pub more: bool,
}

/// Prunes the detail of runs finished before `finished_before_ms`, oldest
/// first, marking each run pruned at `now_ms`. One transaction.
pub fn prune_telemetry(
    c: &Connection,
    finished_before_ms: u64,
    now_ms: u64,
) -> rusqlite::Result<Pruned> {
    let tx = c.unchecked_transaction()?;
    let runs: Vec<i64> = tx
        .prepare_cached(
            "SELECT id FROM runs WHERE state <> 'running' AND finished_at_ms < ?1
             AND telemetry_pruned_at_ms IS NULL ORDER BY finished_at_ms, id",
        )?
        .query_map([finished_before_ms as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Pruned::default();
    for run in runs {
        if out.attempts >= PRUNE_ATTEMPTS_PER_CALL_MAX {
            out.more = true;
            break;
        }
        out.usage_rows += tx.execute(
            "DELETE FROM attempt_usage WHERE attempt_id IN (SELECT id FROM attempts WHERE run_id = ?1)",
            [run],
        )? as u64;
        out.attempts += tx.execute(
            "UPDATE attempts SET stdout_tail = NULL, stderr_tail = NULL, argv = '[]' WHERE run_id = ?1",
            [run],
        )? as u64;
        tx.execute(
            "UPDATE runs SET telemetry_pruned_at_ms = ?2 WHERE id = ?1",
            params![run, now_ms as i64],
        )?;
        out.runs += 1;
    }
    tx.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(dir: &std::path::Path) -> Connection {
        let c = crate::store::new_for_tests(dir);
        // Run 1 finished long ago, 2 recently, 3 still runs (and finished
        // once, long ago: resumed), 4 failed long ago.
        c.execute_batch(
            "INSERT INTO runs (id, name, submitted_at_ms, finished_at_ms, state, cwd, source, definition) VALUES
                 (1, 'old', 0, 1000, 'succeeded', '/', 's', '{}'),
                 (2, 'new', 0, 90000, 'succeeded', '/', 's', '{}'),
                 (3, 'resumed', 0, NULL, 'running', '/', 's', '{}'),
                 (4, 'failed', 0, 2000, 'failed', '/', 's', '{}');
             INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms,
                                   end_class, peak_rss_bytes, cpu_time_us, stdout_tail, stderr_tail)
                 SELECT r.id * 10 + n.n, r.id * 10 + n.n, r.id, r.id, n.n, 1, 1, '[\"sim\"]', 0,
                        'SUCCESS', 4096, 7, X'6f7574', X'657272'
                 FROM runs r, (SELECT 0 AS n UNION SELECT 1) n;
             INSERT INTO attempt_usage (attempt_id, at_ms, cpu_ms, rss_bytes)
                 SELECT id, 1000, 5, 4096 FROM attempts;
             INSERT INTO cache_entries (key, workflow, job, idx, task_id, attempt_id, parts, outputs, created_at_ms)
                 VALUES ('k', 'old', 'j', 0, 10, 10, '{}', '[]', 0);",
        )
        .unwrap();
        c
    }

    fn count(c: &Connection, sql: &str) -> i64 {
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Issue 16: old runs lose their detail, keep their numbers; a recent
    /// run, an unfinished one and the cache keep everything.
    #[test]
    fn old_finished_runs_lose_their_detail_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let c = seeded(dir.path());
        let pruned = prune_telemetry(&c, 50_000, 100_000).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                runs: 2,
                attempts: 4,
                usage_rows: 4,
                more: false
            }
        );
        let detail = |run: i64| {
            count(
                &c,
                &format!("SELECT COUNT(*) FROM attempts WHERE run_id = {run} AND stdout_tail IS NOT NULL AND stderr_tail IS NOT NULL AND argv <> '[]'"),
            )
        };
        assert_eq!((detail(1), detail(2), detail(3), detail(4)), (0, 2, 2, 0));
        let usage = |run: i64| {
            count(&c, &format!("SELECT COUNT(*) FROM attempt_usage u JOIN attempts a ON a.id = u.attempt_id WHERE a.run_id = {run}"))
        };
        assert_eq!((usage(1), usage(2), usage(3), usage(4)), (0, 2, 2, 0));
        assert_eq!(
            count(&c, "SELECT COUNT(*) FROM attempts WHERE peak_rss_bytes = 4096 AND cpu_time_us = 7 AND end_class = 'SUCCESS'"),
            8,
            "the numbers stay"
        );
        assert_eq!(count(&c, "SELECT COUNT(*) FROM cache_entries"), 1);
        // Pruned once: a second call finds nothing to do.
        assert_eq!(
            prune_telemetry(&c, 50_000, 100_001).unwrap(),
            Pruned::default()
        );
    }

    #[test]
    fn a_large_history_is_pruned_a_bounded_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let c = seeded(dir.path());
        c.execute_batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 100 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms, stdout_tail)
                 SELECT i, i, 1, 1, i, 1, 1, '[]', 0, X'6f' FROM n;",
            100 + PRUNE_ATTEMPTS_PER_CALL_MAX
        ))
        .unwrap();
        let first = prune_telemetry(&c, 50_000, 100_000).unwrap();
        assert_eq!((first.runs, first.more), (1, true), "{first:?}");
        let second = prune_telemetry(&c, 50_000, 100_000).unwrap();
        assert_eq!((second.runs, second.more), (1, false), "{second:?}");
    }
}
