//! The two rows every task writes, inserted many to a statement.
//!
//! Each task costs the writer an attempt row at assignment and a task row at
//! its end (besides the attempt's UPDATE). One `INSERT ... VALUES (..), (..)`
//! of 32 rows costs about a third less per row than 32 single-row statements
//! (a statement's step, reset and bindings are paid once): measured 5.1 →
//! 3.6 µs per task for the three statements at 200,000 tasks.
//!
//! Order within a transaction is kept where it matters: an op touching an
//! attempt whose row still waits here flushes the waiting rows first, and any
//! op the grouping does not know flushes everything (see `Grouped::before`).
//! Two task rows for one task in one statement: the later one wins, as it
//! would one statement after the other.
//!
//! Owns: the waiting rows and their SQL. It must not decide what is written.

use std::sync::LazyLock;

use rusqlite::types::{Null, ToSql};
use rusqlite::Statement;

use super::statements::Statements;
use crate::core::StoreOp;

/// Rows per grouped statement; leftovers go in groups of [`SMALL`], then one by one.
const GROUP: usize = 32;
const SMALL: usize = 8;

const ATTEMPT_INSERT: &str = "INSERT INTO attempts (id, task_id, run_id, job_id, idx, number, agent_id, argv, assigned_at_ms, ready_at_ms, cpus, memory_bytes, gpus, custom_resources, request_source) VALUES ";
const ATTEMPT_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
/// Bound values per row, the most of either kind.
const COLUMNS_MAX: usize = 15;
const TASK_INSERT: &str = "INSERT INTO tasks (id, run_id, job_id, idx, state, attempts, retries_used, crashes, reason, updated_at_ms) VALUES ";
const TASK_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const TASK_UPSERT: &str = " ON CONFLICT(id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts, retries_used = excluded.retries_used, crashes = excluded.crashes, reason = excluded.reason, updated_at_ms = excluded.updated_at_ms";

fn sql(head: &str, row: &str, rows: usize, tail: &str) -> String {
    format!("{head}{}{tail}", vec![row; rows].join(", "))
}

static ATTEMPTS: LazyLock<[String; 3]> =
    LazyLock::new(|| [GROUP, SMALL, 1].map(|n| sql(ATTEMPT_INSERT, ATTEMPT_ROW, n, "")));
static TASKS: LazyLock<[String; 3]> =
    LazyLock::new(|| [GROUP, SMALL, 1].map(|n| sql(TASK_INSERT, TASK_ROW, n, TASK_UPSERT)));

/// Rows waiting for their grouped statement, in order.
#[derive(Default)]
pub(super) struct Grouped<'o> {
    attempts: Vec<&'o StoreOp>,
    tasks: Vec<&'o StoreOp>,
}

impl<'o> Grouped<'o> {
    /// Takes `op` if it is a grouped row; `false`: the caller applies it
    /// (after calling [`Grouped::before`]).
    pub(super) fn take(
        &mut self,
        st: &mut Statements<'_>,
        op: &'o StoreOp,
    ) -> rusqlite::Result<bool> {
        let (waiting, all) = match op {
            StoreOp::InsertAttempt { .. } => (&mut self.attempts, &ATTEMPTS),
            StoreOp::TaskState { .. } => (&mut self.tasks, &TASKS),
            _ => return Ok(false),
        };
        waiting.push(op);
        if waiting.len() == GROUP {
            write(st, waiting, all)?;
        }
        Ok(true)
    }

    /// Writes what `op` may depend on: the attempt rows when it names an
    /// attempt still waiting here, everything when it is another kind of op.
    pub(super) fn before(&mut self, st: &mut Statements<'_>, op: &StoreOp) -> rusqlite::Result<()> {
        let attempt = match op {
            StoreOp::AttemptStarted { attempt, .. }
            | StoreOp::AttemptEnded { attempt, .. }
            | StoreOp::AttemptSizing { attempt, .. } => *attempt,
            _ => return self.flush(st),
        };
        let waiting = self
            .attempts
            .iter()
            .any(|w| matches!(w, StoreOp::InsertAttempt { attempt: a, .. } if *a == attempt));
        if waiting {
            write(st, &mut self.attempts, &ATTEMPTS)?;
        }
        Ok(())
    }

    /// Writes every waiting row (before the commit).
    pub(super) fn flush(&mut self, st: &mut Statements<'_>) -> rusqlite::Result<()> {
        write(st, &mut self.attempts, &ATTEMPTS)?;
        write(st, &mut self.tasks, &TASKS)
    }
}

/// Writes one grouped kind of row by itself.
pub(super) fn write_one(st: &mut Statements<'_>, op: &StoreOp) -> rusqlite::Result<()> {
    let all = match op {
        StoreOp::InsertAttempt { .. } => &ATTEMPTS,
        _ => &TASKS,
    };
    write(st, &mut vec![op], all)
}

/// Writes `rows` in statements of GROUP, SMALL and single rows, in order.
fn write(
    st: &mut Statements<'_>,
    rows: &mut Vec<&StoreOp>,
    all: &'static LazyLock<[String; 3]>,
) -> rusqlite::Result<()> {
    let mut rest = &rows[..];
    for (size, sql) in [GROUP, SMALL, 1].into_iter().zip(all.iter()) {
        while rest.len() >= size {
            let (chunk, after) = rest.split_at(size);
            let statement = st.get(sql.as_str())?;
            let mut at = 1;
            for op in chunk {
                at = bind_row(statement, at, op)?;
            }
            statement.raw_execute()?;
            rest = after;
        }
    }
    rows.clear();
    Ok(())
}

/// Binds one row's values from parameter `at` on; returns the next parameter.
fn bind_row(statement: &mut Statement<'_>, at: usize, op: &StoreOp) -> rusqlite::Result<usize> {
    // Owned here so the array below can borrow them.
    let ready: Option<i64>;
    let custom: Option<String>;
    let (values, columns): ([&dyn ToSql; COLUMNS_MAX], usize) = match op {
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
            ready_at_ms,
            resources: r,
            request_source,
        } => {
            ready = (*ready_at_ms > 0).then_some(*ready_at_ms as i64);
            // Custom resources are rare: JSON only when there are some.
            custom = (!r.custom.is_empty())
                .then(|| serde_json::to_string(&r.custom).ok())
                .flatten();
            (
                [
                    &(*attempt as i64),
                    &(*task as i64),
                    &(*run as i64),
                    &(*job as i64),
                    &(*index as i64),
                    number,
                    &(*agent as i64),
                    argv_json,
                    &(*assigned_at_ms as i64),
                    &ready,
                    &r.cpus,
                    &(r.memory_bytes as i64),
                    &r.gpus,
                    &custom,
                    &request_source.as_str(),
                ],
                15,
            )
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
        } => (
            [
                &(*task as i64),
                &(*run as i64),
                &(*job as i64),
                &(*index as i64),
                state,
                attempts,
                retries_used,
                crashes,
                reason,
                &(*at_ms as i64),
                &Null,
                &Null,
                &Null,
                &Null,
                &Null,
            ],
            10,
        ),
        _ => return Ok(at),
    };
    for (i, value) in values.iter().take(columns).enumerate() {
        statement.raw_bind_parameter(at + i, value)?;
    }
    Ok(at + columns)
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;
    use scalable_common::protocol::{AttemptEnd, AttemptResult};

    use super::*;

    fn insert(attempt: u64) -> StoreOp {
        StoreOp::InsertAttempt {
            attempt,
            task: attempt,
            run: 1,
            job: 1,
            index: attempt,
            number: 1,
            agent: 1,
            assigned_at_ms: 10,
            argv_json: format!("[\"{attempt}\"]"),
            ready_at_ms: 5,
            resources: scalable_common::resources::Resources::cpus(2),
            request_source: crate::core::RequestSource::OomRetry,
        }
    }

    fn task(task: u64, state: &'static str) -> StoreOp {
        StoreOp::TaskState {
            task,
            run: 1,
            job: 1,
            index: task,
            state,
            attempts: 1,
            retries_used: 0,
            crashes: 0,
            reason: None,
            at_ms: 20,
        }
    }

    #[test]
    fn grouped_rows_keep_the_order_that_matters() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::store::schema::SCHEMA).unwrap();
        let mut st = Statements::new(&conn);
        let mut ops = Vec::new();
        // 70 rows: two full groups and a tail of 6 (SMALL then singles).
        ops.extend((1..=70).map(insert));
        // The end of an attempt whose row still waits: it must find the row.
        ops.push(StoreOp::AttemptEnded {
            attempt: 69,
            result: Box::new(AttemptResult::bare(
                69,
                AttemptEnd::Exited { code: 0 },
                5,
                6,
            )),
            at_ms: 30,
        });
        ops.push(task(69, "running"));
        ops.push(task(69, "succeeded"));
        ops.push(insert(71));
        // Reads the attempt's run: flushes everything first.
        ops.push(StoreOp::StaleResult {
            attempt: 71,
            agent: 2,
            at_ms: 40,
        });
        let mut grouped = Grouped::default();
        for op in &ops {
            if !grouped.take(&mut st, op).unwrap() {
                grouped.before(&mut st, op).unwrap();
                crate::store::apply(&mut st, op).unwrap();
            }
        }
        grouped.flush(&mut st).unwrap();
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT COUNT(*) FROM attempts"), 71);
        assert_eq!(count("SELECT SUM(id) FROM attempts"), (1..=71).sum::<i64>());
        assert_eq!(count("SELECT ended_at_us FROM attempts WHERE id = 69"), 6);
        let argv: String = conn
            .query_row("SELECT argv FROM attempts WHERE id = 37", [], |r| r.get(0))
            .unwrap();
        assert_eq!(argv, "[\"37\"]");
        let (ready, cpus, source): (i64, i64, String) = conn
            .query_row(
                "SELECT ready_at_ms, cpus, request_source FROM attempts WHERE id = 70",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((ready, cpus, source.as_str()), (5, 2, "oom_retry"));
        let state: String = conn
            .query_row("SELECT state FROM tasks WHERE id = 69", [], |r| r.get(0))
            .unwrap();
        assert_eq!(state, "succeeded", "the later row of one task wins");
        assert_eq!(
            count("SELECT run_id FROM events WHERE kind = 'stale_result'"),
            1,
            "the stale result found its attempt's run"
        );
    }
}
