//! `compose`'s second half: the [`Facts`] read from a description → a
//! manifest (targets sized on each provider's grid, one component and task
//! per step, a `workflow:` skeleton). Must not: read the description.

use super::{Facts, Step};
use crate::assistant::yaml::Yaml;

/// The manifest for `f`: one target per provider, one component and task
/// per step, a `workflow:` skeleton whose commands are placeholders.
pub fn manifest(f: &Facts) -> Yaml {
    let mut root = Yaml::map();
    root.set("version", Yaml::Int(1));
    root.entry("project").set("name", Yaml::str(&f.project));
    let targets = root.entry("targets");
    for p in &f.providers {
        targets.set(&target_name(p), target(p, f));
    }
    let comps = root.entry("components");
    for s in &f.steps {
        let c = comps.entry(&s.name);
        c.set("cpus", Yaml::Int(i64::from(s.cpus.unwrap_or(1))));
        c.set("memory", Yaml::str(s.memory.as_deref().unwrap_or("2G")));
        if let Some(g) = s.gpus {
            c.set("gpus", Yaml::Int(i64::from(g)));
        }
        if let Some(img) = &s.image {
            c.set("image", Yaml::str(img));
        }
        if !s.tags.is_empty() {
            c.set("tags", Yaml::strs(&s.tags));
        }
    }
    let tasks = root.entry("tasks");
    for s in &f.steps {
        let t = tasks.entry(&task_name(s));
        t.set("component", Yaml::str(&s.name));
        if f.cache {
            t.set("cache", Yaml::Bool(true));
        }
        if let Some(r) = f.retries {
            t.set("retries", Yaml::Int(i64::from(r)));
        }
    }
    root.set("workflow", workflow(f));
    root
}

pub fn target_name(provider: &str) -> String {
    match provider {
        "slurm" => "hpc".into(),
        "kubernetes" => "k8s".into(),
        p => p.into(),
    }
}

fn task_name(s: &Step) -> String {
    format!("run_{}", s.name.replace('-', "_"))
}

fn largest(f: &Facts) -> (u32, u64) {
    let cpus = f.steps.iter().filter_map(|s| s.cpus).max().unwrap_or(1);
    let mem = f
        .steps
        .iter()
        .filter_map(|s| s.memory.as_deref())
        .filter_map(|m| scalable_common::units::parse_size_bytes(m).ok())
        .max()
        .unwrap_or(2 << 30);
    (cpus, mem)
}

fn target(p: &str, f: &Facts) -> Yaml {
    let mut t = Yaml::map();
    t.set("provider", Yaml::str(p));
    let workers = f.workers.or(f.adaptive.map(|a| a.1));
    let (cpus, mem) = largest(f);
    match p {
        "local" => {
            t.set(
                "max_workers",
                Yaml::Int(i64::from(f.workers.unwrap_or(4).min(64))),
            );
            t.set("threads_per_worker", Yaml::Int(1));
            t.set("processes", Yaml::Bool(true));
            t.set("containers", Yaml::str("none"));
            return t;
        }
        "slurm" => {
            if let Some(q) = &f.queue {
                t.set("queue", Yaml::str(q));
            }
            if let Some(a) = &f.account {
                t.set("account", Yaml::str(a));
            }
            t.set(
                "walltime",
                Yaml::str(f.walltime.as_deref().unwrap_or("04:00:00")),
            );
            t.set("max_workers", Yaml::Int(i64::from(workers.unwrap_or(8))));
        }
        "aws" => {
            t.set(
                "region",
                Yaml::str(f.region.as_deref().unwrap_or("us-east-1")),
            );
            if f.ec2 {
                t.set("cluster_type", Yaml::str("ec2"));
                t.set("instance_type", Yaml::str(ec2_instance(cpus, mem)));
                t.set("ami", Yaml::str("${AWS_AMI:-ami-0abcdef1234567890}"));
                t.set(
                    "subnet",
                    Yaml::str("${AWS_SUBNET:-subnet-0123456789abcdef0}"),
                );
            } else {
                t.set("cluster_type", Yaml::str("fargate"));
                let (units, mib) = fargate_size(cpus, mem);
                t.set("worker_cpu", Yaml::Int(i64::from(units)));
                t.set("worker_mem", Yaml::Int(mib as i64));
                t.set(
                    "subnet",
                    Yaml::str("${AWS_SUBNET:-subnet-0123456789abcdef0}"),
                );
            }
            t.set("image", Yaml::str(image_default(f)));
        }
        "gcp" => {
            t.set(
                "zone",
                Yaml::str(f.zone.as_deref().unwrap_or("us-central1-a")),
            );
            t.set("machine_type", Yaml::str(gcp_machine(cpus, mem)));
            t.set("image", Yaml::str(image_default(f)));
        }
        "kubernetes" => {
            t.set(
                "namespace",
                Yaml::str(f.namespace.as_deref().unwrap_or(&f.project)),
            );
            t.set("image", Yaml::str(image_default(f)));
        }
        _ => {}
    }
    if let Some((lo, hi)) = f.adaptive {
        let a = t.entry("adaptive");
        a.set("minimum", Yaml::Int(i64::from(lo.min(hi))));
        a.set("maximum", Yaml::Int(i64::from(hi.max(1))));
    } else if p != "slurm" {
        t.set("max_workers", Yaml::Int(i64::from(workers.unwrap_or(4))));
    }
    t
}

/// The Fargate size holding `cpus` and `need_bytes` plus the agent's 256
/// MiB: CPU units and memory in MiB, on AWS's grid (1 GiB steps up to 4
/// vCPUs, 4 GiB at 8, 8 GiB at 16; 2x to 8x the vCPUs in GiB).
pub fn fargate_size(cpus: u32, need_bytes: u64) -> (u32, u64) {
    let need_mib = (need_bytes + (256 << 20)).div_ceil(1 << 20).max(512);
    let grid: [(u32, u64, u64, u64); 7] = [
        (256, 512, 2048, 512),
        (512, 1024, 4096, 1024),
        (1024, 2048, 8192, 1024),
        (2048, 4096, 16384, 1024),
        (4096, 8192, 30720, 1024),
        (8192, 16384, 61440, 4096),
        (16384, 32768, 122880, 8192),
    ];
    for (units, lo, hi, step) in grid {
        if units < cpus.saturating_mul(1024) || need_mib > hi {
            continue;
        }
        let mib = need_mib.max(lo).div_ceil(step) * step;
        return (units, mib.min(hi));
    }
    (16384, 122880)
}

/// The smallest c6i/m6i/r6i instance (by memory per vCPU: 2, 4, 8 GiB)
/// that holds the largest step and the agent.
fn ec2_instance(cpus: u32, mem_bytes: u64) -> String {
    let gib = (mem_bytes + (256 << 20)).div_ceil(1 << 30);
    for (vcpus, size) in [
        (2u64, "large"),
        (4, "xlarge"),
        (8, "2xlarge"),
        (16, "4xlarge"),
        (32, "8xlarge"),
        (48, "12xlarge"),
        (64, "16xlarge"),
        (96, "24xlarge"),
    ] {
        if vcpus < u64::from(cpus) {
            continue;
        }
        for (family, per) in [("c6i", 2u64), ("m6i", 4), ("r6i", 8)] {
            if vcpus * per >= gib {
                return format!("{family}.{size}");
            }
        }
    }
    "r6i.24xlarge".into()
}

/// The smallest n2 machine (highcpu, standard, highmem: 1, 4, 8 GiB per
/// vCPU) that holds the largest step and the agent.
pub fn gcp_machine(cpus: u32, mem_bytes: u64) -> String {
    let gib = (mem_bytes + (256 << 20)).div_ceil(1 << 30);
    for vcpus in [2u64, 4, 8, 16, 32, 48, 64, 80] {
        if vcpus < u64::from(cpus) {
            continue;
        }
        for (family, per) in [("highcpu", 1u64), ("standard", 4), ("highmem", 8)] {
            if vcpus * per >= gib {
                return format!("n2-{family}-{vcpus}");
            }
        }
    }
    "n2-highmem-80".into()
}

fn image_default(f: &Facts) -> String {
    match f.steps.iter().find_map(|s| s.image.clone()) {
        Some(i) => i,
        None => "${WORKER_IMAGE:-python:3.12-slim}".into(),
    }
}

fn workflow(f: &Facts) -> Yaml {
    let mut wf = Yaml::map();
    wf.set("workflow", Yaml::str(&f.project));
    let mut jobs = Vec::new();
    let mut prev: Option<String> = None;
    for (i, s) in f.steps.iter().enumerate() {
        let mut j = Yaml::map();
        j.set("name", Yaml::str(&s.name));
        j.set("task", Yaml::str(task_name(s)));
        if i == 0 {
            if let Some(n) = f.items.filter(|n| *n > 1) {
                j.set("range", Yaml::str(format!("1..={n}")));
            }
        }
        let placeholder = if i == 0 && f.items.is_some_and(|n| n > 1) {
            format!(
                "replace with the {} command for item {{{{ item }}}}",
                s.name
            )
        } else {
            format!("replace with the {} command", s.name)
        };
        j.set("command", Yaml::strs(&["echo", &placeholder]));
        if let Some(p) = prev {
            j.set("after", Yaml::strs(&[p]));
        }
        prev = Some(s.name.clone());
        jobs.push(j);
    }
    wf.set("jobs", Yaml::List(jobs));
    wf
}
