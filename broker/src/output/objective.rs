//! `scalable plan --objective O --policy P`: the chosen workers per tag with
//! their predicted makespan and cost, where each figure came from, and the
//! alternatives considered, as text (JSON is the plan as it is).
//!
//! Must not: choose or compute anything; `objective::plan` does.

use crate::objective::{GroupPlan, ObjectivePlan, WorkSource};

use super::time::short_duration;

/// The plan as text.
pub fn objective_plan_text(p: &ObjectivePlan) -> String {
    let mut out = format!(
        "plan for target {} ({}): objective {}, policy {}\n",
        p.target,
        p.provider,
        p.objective.name(),
        policy_word(p)
    );
    out.push_str(&format!(
        "work: {}; run times and queue waits: {}\n",
        p.workflow.as_deref().map_or(
            "one wave of each group's maximum (no --workflow)".to_string(),
            |w| { format!("the jobs of {w}") }
        ),
        if p.history {
            "measured (this broker's history) where known"
        } else {
            "no history: the manifest's walltimes, else assumed"
        }
    ));
    for g in &p.groups {
        out.push_str(&group_text(g, &p.currency));
    }
    out.push_str(&format!(
        "predicted: makespan {}, cost {}\n",
        duration(p.predicted_makespan_seconds),
        money(p.predicted_cost, &p.currency)
    ));
    out
}

fn policy_word(p: &ObjectivePlan) -> &'static str {
    match p.policy {
        crate::objective::Policy::Safe => "safe (20% headroom)",
        crate::objective::Policy::Aggressive => "aggressive (as computed)",
        crate::objective::Policy::Manual => "manual (the manifest's counts)",
    }
}

fn group_text(g: &GroupPlan, currency: &str) -> String {
    let mut out = format!(
        "\n{}: {} worker(s) (min {}, max {}), each {} cpus, {} memory, {} gpus\n",
        g.tag,
        g.workers,
        g.min_workers,
        g.max_workers,
        if g.cpus == 0 {
            "auto".to_string()
        } else {
            g.cpus.to_string()
        },
        g.memory,
        g.gpus
    );
    out.push_str(&format!(
        "  {} task(s), {} per worker at once, {} each ({}), queue wait {} ({})\n",
        g.tasks,
        g.tasks_per_worker,
        duration(g.run_seconds),
        source(g.run_seconds_source),
        duration(g.queue_wait_seconds),
        source(g.queue_wait_source)
    ));
    out.push_str(&format!(
        "  predicted makespan {}, cost {} ({})\n",
        duration(g.predicted_makespan_seconds),
        money(g.predicted_cost, currency),
        g.price_source
    ));
    out.push_str("  WORKERS  MAKESPAN  COST\n");
    for c in &g.alternatives {
        let line = format!(
            "  {:<7}  {:<8}  {}{}",
            c.workers,
            duration(c.makespan_seconds),
            money(c.cost, currency),
            if c.chosen { "  <- chosen" } else { "" }
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn source(s: WorkSource) -> &'static str {
    match s {
        WorkSource::History => "measured",
        WorkSource::Workflow => "the workflow",
        WorkSource::Manifest => "the manifest",
        WorkSource::Assumed => "assumed",
    }
}

fn duration(seconds: f64) -> String {
    short_duration((seconds.max(0.0) * 1000.0) as u64)
}

fn money(x: Option<f64>, currency: &str) -> String {
    x.map_or("unknown".to_string(), |c| format!("{c:.2} {currency}"))
}
