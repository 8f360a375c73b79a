//! `scalable explain`'s heuristic: a target's plan in sentences (the seed's
//! "Plan Explanation"): where it deploys, workers and scaling bounds, each
//! worker's resources, images, storage, the estimated cost and the key
//! decisions, all from the manifest, `pilots::plan` and the price table.
//!
//! Pure. Must not: price or size anything itself (`pilots` does) or print.

use serde::Serialize;

use crate::pilots::{PlanCost, PlanRow};
use scalable_common::manifest::{AwsClusterType, Manifest, Provider};
use scalable_common::units::{format_duration_ms, format_size};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub target: String,
    pub provider: String,
    pub steps: Vec<String>,
    pub cost: String,
    pub decisions: Vec<String>,
}

pub fn explain(m: &Manifest, target: &str, rows: &[PlanRow], costs: &[PlanCost]) -> Explanation {
    let t = m.target(target).expect("the CLI checked the target");
    let mut steps = vec![format!(
        "Deploy the {} project {}",
        m.project.name,
        where_(&t.provider)
    )];
    for r in rows {
        let who = if r.tag.starts_with('(') {
            "worker (a generic pool)".to_string()
        } else {
            format!("{} worker", r.tag)
        };
        if r.min_workers != r.max_workers {
            steps.push(format!(
                "Start with {} {who}{}, scaling up to {} based on the backlog",
                r.min_workers,
                if r.min_workers == 1 { "" } else { "s" },
                r.max_workers
            ));
        } else {
            steps.push(format!(
                "Run {} {who}{}",
                r.workers,
                if r.workers == 1 { "" } else { "s" }
            ));
        }
        let cpus = if r.cpus == 0 {
            "the host's share of cpus".to_string()
        } else {
            format!("{} vCPU{}", r.cpus, if r.cpus == 1 { "" } else { "s" })
        };
        let gpus = if r.gpus > 0 {
            format!(" and {} GPU{}", r.gpus, if r.gpus == 1 { "" } else { "s" })
        } else {
            String::new()
        };
        steps.push(format!(
            "Each {} has {cpus}, {} memory{gpus}",
            who.trim_end_matches(" (a generic pool)"),
            if r.memory == "auto" {
                "the host's".to_string()
            } else {
                r.memory.clone()
            }
        ));
        if let Some(img) = &r.image {
            steps.push(format!("{}s run the {img} container", capitalise(&who)));
        }
    }
    steps.push(storage(m));
    Explanation {
        target: target.into(),
        provider: t.provider.name().into(),
        steps,
        cost: cost_line(costs),
        decisions: decisions(m, target),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn where_(p: &Provider) -> String {
    match p {
        Provider::Local { .. } => "on this machine (local agents)".into(),
        Provider::Slurm {
            queue,
            account,
            walltime_ms,
            ..
        } => format!(
            "to Slurm{}{}{}",
            queue
                .as_ref()
                .map(|q| format!(", queue {q}"))
                .unwrap_or_default(),
            account
                .as_ref()
                .map(|a| format!(", account {a}"))
                .unwrap_or_default(),
            walltime_ms
                .map(|w| format!(", pilots of walltime {}", format_duration_ms(w)))
                .unwrap_or_default()
        ),
        Provider::Aws {
            region,
            cluster_type,
            ..
        } => format!(
            "to AWS {} in region {region}",
            match cluster_type {
                AwsClusterType::Fargate => "Fargate",
                AwsClusterType::Ec2 => "EC2",
            }
        ),
        Provider::Gcp { zone, .. } => format!("to Google Compute Engine in zone {zone}"),
        Provider::Kubernetes {
            namespace, kind, ..
        } => format!(
            "to Kubernetes, namespace {namespace}, as a {}",
            match kind {
                scalable_common::manifest::KubeKind::Job => "Job",
                scalable_common::manifest::KubeKind::Deployment => "Deployment",
            }
        ),
    }
}

fn storage(m: &Manifest) -> String {
    if m.project.output_roots.is_empty() {
        "Outputs are staged per attempt and kept in each task's directory (no output_roots)".into()
    } else {
        format!(
            "Outputs may be written under {}",
            m.project.output_roots.join(", ")
        )
    }
}

fn cost_line(costs: &[PlanCost]) -> String {
    let known: Vec<&PlanCost> = costs.iter().filter(|c| c.cost.total.is_some()).collect();
    if known.is_empty() {
        let why = costs
            .first()
            .map(|c| c.cost.source.clone())
            .unwrap_or_else(|| "no pilots".into());
        return format!("Estimated cost: unknown ({why})");
    }
    let total: f64 = known.iter().filter_map(|c| c.cost.total).sum();
    let hours = known.first().map_or(1.0, |c| c.hours);
    let workers: u32 = known.iter().map(|c| c.workers).sum();
    let mut sources: Vec<&str> = known.iter().map(|c| c.cost.source.as_str()).collect();
    sources.dedup();
    format!(
        "Estimated cost: ${total:.2} {} for {workers} worker{} over {hours:.1} h ({})",
        known[0].cost.currency,
        if workers == 1 { "" } else { "s" },
        sources.join("; ")
    )
}

fn decisions(m: &Manifest, target: &str) -> Vec<String> {
    let t = m.target(target).expect("checked");
    let mut out = Vec::new();
    match t.adaptive {
        Some(a) => out.push(format!(
            "Adaptive scaling (min={}, max={}): workers follow the ready backlog, idle ones are removed",
            a.minimum, a.maximum
        )),
        None => out.push(format!(
            "Fixed size: up to {} worker{} (no adaptive: bounds)",
            t.max_workers,
            if t.max_workers == 1 { "" } else { "s" }
        )),
    }
    out.push(match &t.provider {
        Provider::Local { .. } => {
            "Local agents: no queue wait, no cost, the host's resources".into()
        }
        Provider::Slurm { .. } => {
            "Slurm pilots: each pilot holds a node for its walltime and runs many tasks".into()
        }
        Provider::Aws {
            cluster_type: AwsClusterType::Fargate,
            ..
        } => "Fargate: no servers to manage, billed per vCPU and GiB-hour".into(),
        Provider::Aws { .. } => "EC2: whole instances, cheaper per core for long runs".into(),
        Provider::Gcp { .. } => "GCE instances started from cloud-init".into(),
        Provider::Kubernetes { .. } => {
            "Kubernetes pods: the cluster's scheduler places them".into()
        }
    });
    if !t.tags.is_empty() {
        out.push(format!("The target serves only: {}", t.tags.join(", ")));
    }
    let cached: Vec<&str> = m
        .tasks
        .values()
        .filter(|b| b.cache)
        .map(|b| b.name.as_str())
        .collect();
    if !cached.is_empty() {
        out.push(format!(
            "Cached tasks (a rerun with the same inputs is free): {}",
            cached.join(", ")
        ));
    }
    let big = m
        .components
        .values()
        .filter_map(|c| c.memory_bytes.map(|b| (b, c)))
        .max_by_key(|(b, _)| *b);
    if let Some((b, c)) = big {
        out.push(format!(
            "The largest component is {} ({} cpus, {})",
            c.name,
            c.cpus,
            format_size(b)
        ));
    }
    if !m.overlays_applied.is_empty() {
        out.push(format!(
            "Overlays applied: {}",
            m.overlays_applied.join(", ")
        ));
    }
    out
}

/// The seed's text layout.
pub fn text(e: &Explanation) -> String {
    let mut out = format!(
        "Plan Explanation: target {} ({})\n═══════════════\nThis execution plan will:\n",
        e.target, e.provider
    );
    for (i, s) in e.steps.iter().enumerate() {
        out.push_str(&format!("{}. {s}\n", i + 1));
    }
    out.push_str(&format!("\n{}\n\nKey decisions:\n", e.cost));
    for d in &e.decisions {
        out.push_str(&format!("• {d}\n"));
    }
    out
}
