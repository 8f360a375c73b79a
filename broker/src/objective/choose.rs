//! One group's worker count for an objective and a policy, with the
//! alternatives considered. The model: the group's tasks run in waves of
//! `workers × tasks_per_worker`, each wave one run time, after one pilot
//! queue wait; every worker is held (and paid) for the whole makespan.
//!
//! Pure arithmetic; it must not read anything.

use serde::Serialize;

use super::work::{slots, Work, WorkSource};
use super::{round2, GroupPlan, History, Objective, Policy, SAFE_HEADROOM};
use crate::pilots::{PlanCost, PlanRow};

/// Counts evaluated per group at most (every count up to it; above it, a
/// spread).
const CANDIDATES_MAX: u32 = 4_096;
/// Alternatives shown per group.
const SHOWN_MAX: usize = 6;

/// One worker count considered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub workers: u32,
    pub makespan_seconds: f64,
    /// `None`: no known price.
    pub cost: Option<f64>,
    pub chosen: bool,
}

struct Model {
    tasks: u64,
    per_worker: u64,
    run_s: f64,
    wait_s: f64,
    hourly: Option<f64>,
}

impl Model {
    fn makespan(&self, n: u32) -> f64 {
        if self.tasks == 0 {
            return 0.0;
        }
        let waves = self.tasks.div_ceil(u64::from(n.max(1)) * self.per_worker);
        self.wait_s + waves as f64 * self.run_s
    }

    /// Worker-hours: the cost measure when no price is known.
    fn worker_hours(&self, n: u32) -> f64 {
        f64::from(n) * self.makespan(n) / 3_600.0
    }

    fn candidate(&self, n: u32) -> Candidate {
        Candidate {
            workers: n,
            makespan_seconds: round2(self.makespan(n)),
            cost: self.hourly.map(|h| round2(h * self.worker_hours(n))),
            chosen: false,
        }
    }
}

/// The plan of one group (`row`, priced by `cost`) for its `work`.
pub fn choose(
    row: &PlanRow,
    cost: &PlanCost,
    work: &Work,
    history: Option<&History>,
    objective: Objective,
    policy: Policy,
) -> GroupPlan {
    let (wait_s, wait_source) = match history.and_then(|h| h.queue_wait_seconds) {
        Some(w) => (w, WorkSource::History),
        None => (0.0, WorkSource::Assumed),
    };
    let per_worker = slots(row, work.task_cpus);
    let model = Model {
        tasks: work.tasks,
        per_worker: u64::from(per_worker),
        run_s: work.run_seconds,
        wait_s,
        hourly: cost.cost.per_pilot_hour,
    };
    let (lo, hi) = (row.min_workers.max(1), row.max_workers.max(1));
    // More workers than tasks fill nothing.
    let useful = u32::try_from(work.tasks.div_ceil(model.per_worker.max(1)))
        .unwrap_or(u32::MAX)
        .clamp(lo, hi);
    let best = best_count(&model, lo, useful, objective);
    let workers = match policy {
        Policy::Aggressive => best,
        Policy::Safe => ((f64::from(best) * (1.0 + SAFE_HEADROOM)).ceil() as u32).min(hi),
        Policy::Manual => row.workers,
    };
    GroupPlan {
        tag: row.tag.clone(),
        workers,
        min_workers: row.min_workers,
        max_workers: row.max_workers,
        cpus: row.cpus,
        memory: row.memory.clone(),
        gpus: row.gpus,
        tasks: work.tasks,
        tasks_per_worker: per_worker,
        run_seconds: work.run_seconds,
        run_seconds_source: work.run_source,
        queue_wait_seconds: wait_s,
        queue_wait_source: wait_source,
        predicted_makespan_seconds: round2(model.makespan(workers)),
        predicted_cost: model.candidate(workers).cost,
        price_per_worker_hour: cost.cost.per_pilot_hour,
        price_source: cost.cost.source.clone(),
        alternatives: alternatives(&model, lo, hi, useful, workers),
    }
}

/// The count in `lo..=hi` the objective prefers; ties go to fewer workers.
fn best_count(m: &Model, lo: u32, hi: u32, objective: Objective) -> u32 {
    let counts = counts(lo, hi);
    let fastest = counts
        .iter()
        .map(|n| m.makespan(*n))
        .fold(f64::INFINITY, f64::min);
    let cheapest = counts
        .iter()
        .map(|n| m.worker_hours(*n))
        .fold(f64::INFINITY, f64::min);
    let score = |n: u32| -> (f64, f64) {
        let (t, c) = (m.makespan(n), m.worker_hours(n));
        match objective {
            Objective::MinimizeTime => (t, c),
            Objective::MinimizeCost => (c, t),
            // Each measure against its best: 1 + 1 is a plan best at both.
            Objective::Balance => (t / fastest.max(1e-9) + c / cheapest.max(1e-9), t),
        }
    };
    let mut best = lo;
    let mut best_score = score(lo);
    for n in counts {
        let s = score(n);
        if better(s, best_score) {
            best = n;
            best_score = s;
        }
    }
    best
}

/// Lexicographically lower, where a hair's difference (float noise) is a tie.
fn better(a: (f64, f64), b: (f64, f64)) -> bool {
    let tie = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
    if tie(a.0, b.0) {
        a.1 < b.1 && !tie(a.1, b.1)
    } else {
        a.0 < b.0
    }
}

/// Every count from `lo` to `hi`, or a spread of [`CANDIDATES_MAX`].
fn counts(lo: u32, hi: u32) -> Vec<u32> {
    if hi - lo < CANDIDATES_MAX {
        return (lo..=hi).collect();
    }
    let step = (hi - lo) as f64 / f64::from(CANDIDATES_MAX - 1);
    let mut v: Vec<u32> = (0..CANDIDATES_MAX)
        .map(|i| lo + (f64::from(i) * step).round() as u32)
        .collect();
    v.dedup();
    v
}

/// A few counts to show: the minimum, the quarters up to the useful count,
/// the maximum, and the chosen one (marked).
fn alternatives(m: &Model, lo: u32, hi: u32, useful: u32, chosen: u32) -> Vec<Candidate> {
    let mut ns = vec![lo, chosen, hi, useful];
    for q in [4, 2] {
        ns.push((lo + (useful.saturating_sub(lo)) / q).max(lo));
    }
    ns.sort_unstable();
    ns.dedup();
    ns.truncate(SHOWN_MAX.max(ns.iter().position(|n| *n == chosen).unwrap_or(0) + 1));
    ns.into_iter()
        .map(|n| Candidate {
            chosen: n == chosen,
            ..m.candidate(n)
        })
        .collect()
}
