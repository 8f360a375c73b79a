//! `scalable plan --objective O --policy P` (issue 18, seed 002 step 4):
//! workers per tag for a target, chosen for an objective ("minimize cost",
//! "minimize time", balance) under a policy (safe: 20% headroom; aggressive:
//! as computed; manual: the manifest's counts), with the predicted makespan
//! and cost of the choice and of the alternatives considered.
//!
//! Pure: the manifest's rows and costs (`pilots::plan`, `plan_costs`), the
//! work per tag (`work`) and the measured history in; an [`ObjectivePlan`]
//! out. It must not read files or the store (the CLI does) nor word
//! anything (the output layer does).

mod choose;
mod work;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::pilots::{PlanCost, PlanRow};

pub use choose::{choose, Candidate};
pub use work::{work_per_tag, Work, WorkSource};

/// What the plan optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Objective {
    #[serde(rename = "minimize cost")]
    MinimizeCost,
    #[serde(rename = "minimize time")]
    MinimizeTime,
    #[serde(rename = "balance")]
    Balance,
}

impl Objective {
    pub const NAMES: [&'static str; 3] = ["minimize cost", "minimize time", "balance"];

    /// The objective named `s` (case and `_`/`-` for spaces forgiven), or
    /// why not with the valid names.
    pub fn parse(s: &str) -> Result<Objective, String> {
        let norm = s.trim().to_ascii_lowercase().replace(['_', '-'], " ");
        match norm.as_str() {
            "minimize cost" | "minimise cost" | "cost" => Ok(Objective::MinimizeCost),
            "minimize time" | "minimise time" | "time" => Ok(Objective::MinimizeTime),
            "balance" | "balanced" => Ok(Objective::Balance),
            _ => Err(format!(
                "unknown objective {s:?} (valid: \"{}\")",
                Objective::NAMES.join("\", \"")
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Objective::MinimizeCost => Objective::NAMES[0],
            Objective::MinimizeTime => Objective::NAMES[1],
            Objective::Balance => Objective::NAMES[2],
        }
    }
}

/// How the chosen counts are adjusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// 20% more workers than computed (seed 002), within the maximum.
    Safe,
    /// Exactly as computed.
    Aggressive,
    /// The manifest's counts; the objective only ranks the alternatives.
    Manual,
}

/// Seed 002's headroom for the safe policy.
pub const SAFE_HEADROOM: f64 = 0.2;

impl Policy {
    pub const NAMES: [&'static str; 3] = ["safe", "aggressive", "manual"];

    pub fn parse(s: &str) -> Result<Policy, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "safe" => Ok(Policy::Safe),
            "aggressive" => Ok(Policy::Aggressive),
            "manual" => Ok(Policy::Manual),
            _ => Err(format!(
                "unknown policy {s:?} (valid: {})",
                Policy::NAMES.join(", ")
            )),
        }
    }
}

/// Measured history of the target (`store::measured_medians`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct History {
    /// Median run seconds per tag (`*`: untagged).
    pub run_seconds: BTreeMap<String, f64>,
    /// Median pilot queue wait of the target, seconds.
    pub queue_wait_seconds: Option<f64>,
}

/// One tag's part of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupPlan {
    pub tag: String,
    pub workers: u32,
    pub min_workers: u32,
    pub max_workers: u32,
    /// Resources per worker (as `plan` shows them).
    pub cpus: u32,
    pub memory: String,
    pub gpus: u32,
    pub tasks: u64,
    pub tasks_per_worker: u32,
    pub run_seconds: f64,
    pub run_seconds_source: WorkSource,
    pub queue_wait_seconds: f64,
    pub queue_wait_source: WorkSource,
    pub predicted_makespan_seconds: f64,
    /// `None`: the provider knows no price.
    pub predicted_cost: Option<f64>,
    pub price_per_worker_hour: Option<f64>,
    pub price_source: String,
    /// The counts considered (a few), the chosen one marked.
    pub alternatives: Vec<Candidate>,
}

/// The plan of a target: per group, and the whole (groups side by side).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectivePlan {
    pub target: String,
    pub provider: String,
    pub objective: Objective,
    pub policy: Policy,
    pub workflow: Option<String>,
    pub history: bool,
    pub groups: Vec<GroupPlan>,
    /// The slowest group's (groups run side by side; `after:` between jobs
    /// is not modelled).
    pub predicted_makespan_seconds: f64,
    /// The groups' sum; `None` when any group's price is unknown.
    pub predicted_cost: Option<f64>,
    pub currency: String,
}

/// What a plan is made from.
pub struct PlanInput<'a> {
    pub target: &'a str,
    pub provider: &'a str,
    pub rows: &'a [PlanRow],
    pub costs: &'a [PlanCost],
    pub work: &'a BTreeMap<String, Work>,
    pub history: Option<&'a History>,
    pub workflow: Option<&'a str>,
    /// The target declares `adaptive:`: its minimum bounds the counts
    /// considered; otherwise `max_workers` is only a cap (from 1).
    pub adaptive: bool,
}

/// The plan of `input` for `objective` under `policy`.
pub fn plan(input: &PlanInput, objective: Objective, policy: Policy) -> ObjectivePlan {
    let mut groups = Vec::new();
    let mut currency = String::from("USD");
    for (row, cost) in input.rows.iter().zip(input.costs) {
        currency = cost.cost.currency.to_string();
        let work = input.work.get(&row.tag).cloned().unwrap_or_default();
        let mut row = row.clone();
        if !input.adaptive {
            row.min_workers = 1;
        }
        groups.push(choose(&row, cost, &work, input.history, objective, policy));
    }
    let makespan = groups
        .iter()
        .map(|g| g.predicted_makespan_seconds)
        .fold(0.0, f64::max);
    let cost = groups
        .iter()
        .map(|g| g.predicted_cost)
        .sum::<Option<f64>>()
        .map(round2);
    ObjectivePlan {
        target: input.target.to_string(),
        provider: input.provider.to_string(),
        objective,
        policy,
        workflow: input.workflow.map(String::from),
        history: input.history.is_some(),
        groups,
        predicted_makespan_seconds: makespan,
        predicted_cost: cost,
        currency,
    }
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests;
