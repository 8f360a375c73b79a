//! Protocol values shared by the output layer's snapshot tests.

use scalable_common::protocol::{Counts, JobStatus, RunStatus};

pub const SUBMITTED_MS: u64 = 1_795_341_662_000; // 2026-11-22 10:01:02 UTC

/// Counts in column order: waiting, ready, assigned, running, succeeded,
/// failed, cancelled, cached.
pub fn counts([w, r, a, run, s, f, c, k]: [u64; 8]) -> Counts {
    Counts {
        waiting: w,
        ready: r,
        assigned: a,
        running: run,
        succeeded: s,
        failed: f,
        cancelled: c,
        cached: k,
    }
}

pub fn run_status() -> RunStatus {
    let jobs = vec![
        JobStatus {
            name: "prepare".into(),
            tag: None,
            counts: counts([0, 0, 0, 0, 1, 0, 0, 0]),
        },
        JobStatus {
            name: "simulate".into(),
            tag: None,
            counts: counts([0, 2, 1, 7, 988, 2, 0, 0]),
        },
        JobStatus {
            name: "postprocess".into(),
            tag: None,
            counts: counts([1, 0, 0, 0, 0, 0, 0, 0]),
        },
    ];
    let mut total = Counts::default();
    for j in &jobs {
        total.add(&j.counts);
    }
    RunStatus {
        run: 3,
        name: "demeter-ssp".into(),
        state: "running".into(),
        submitted_at_ms: SUBMITTED_MS,
        finished_at_ms: None,
        counts: total,
        jobs,
        blocked: vec![],
    }
}
