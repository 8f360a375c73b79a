//! `scalable compose`'s heuristic: a description in words → the facts it
//! states ([`Facts`]: project name, providers, region or zone, queue,
//! account, walltime, worker counts and adaptive bounds, one component per
//! step with its cpus, memory, gpus and image, cache, retries, an item
//! count) → a manifest with a `workflow:` skeleton ([`manifest`]).
//!
//! Deterministic: the same words give the same YAML. Must not: validate
//! (the CLI does, with `scalable validate`'s code) or guess what it did not
//! read: what the description does not say takes the documented defaults.

use serde::Serialize;

use super::yaml::Yaml;

/// The most components one description yields.
pub const STEPS_MAX: usize = 8;
/// A description longer than this is refused by the CLI.
pub const DESCRIPTION_BYTES_MAX: usize = 8 << 10;

/// What the description says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facts {
    pub project: String,
    /// `local`, `slurm`, `aws`, `gcp`, `kubernetes`, in the order met.
    pub providers: Vec<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub queue: Option<String>,
    pub account: Option<String>,
    pub namespace: Option<String>,
    pub walltime: Option<String>,
    pub ec2: bool,
    pub workers: Option<u32>,
    pub adaptive: Option<(u32, u32)>,
    pub cache: bool,
    pub retries: Option<u32>,
    /// How many items the first step fans out over (`50 scenarios`).
    pub items: Option<u32>,
    pub steps: Vec<Step>,
}

/// One component (a step of the pipeline).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Step {
    pub name: String,
    pub cpus: Option<u32>,
    /// As written normalised: `16G`, `512M`.
    pub memory: Option<String>,
    pub gpus: Option<u32>,
    pub image: Option<String>,
    pub tags: Vec<String>,
}

const STOP: &[&str] = &[
    "a", "an", "the", "that", "which", "with", "and", "of", "in", "on", "for", "to", "by", "using",
    "run", "runs", "needs", "need", "it", "its", "each", "per", "then", "followed", "some", "my",
    "our", "we", "want", "i", "parallel", "step", "stage", "job", "jobs", "task", "tasks",
];

/// Reads the facts out of `text`.
pub fn parse(text: &str) -> Facts {
    let words = tokens(text);
    let mut f = Facts {
        project: project_name(&words),
        ..Facts::default()
    };
    providers(&words, &mut f);
    counts(&words, &mut f);
    f.cache = words.iter().any(|w| w.starts_with("cach"));
    f.steps = split_steps(text)
        .iter()
        .take(STEPS_MAX)
        .enumerate()
        .map(|(i, s)| step(i, s, &f))
        .collect();
    if f.steps.is_empty() {
        f.steps.push(step(0, text, &f));
    }
    dedup_names(&mut f.steps);
    for v in [&mut f.queue, &mut f.account, &mut f.namespace] {
        if let Some(x) = v.as_mut() {
            *x = cased(text, x);
        }
    }
    for s in &mut f.steps {
        if let Some(i) = s.image.as_mut() {
            *i = cased(text, i);
        }
    }
    f
}

/// Lowercase words, with `-:/._` kept inside them and other punctuation cut.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| {
        c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '"' | '\'' | '!' | '?')
    })
    .map(|w| w.trim_end_matches(['.', ':']).to_string())
    .filter(|w| !w.is_empty())
    .map(|w| w.to_ascii_lowercase())
    .collect()
}

/// `w` (a lowercased token) as the description wrote it: names, queues,
/// accounts and image tags keep their case.
fn cased(text: &str, w: &str) -> String {
    text.split(|c: char| {
        c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '"' | '\'' | '!' | '?')
    })
    .map(|t| t.trim_end_matches(['.', ':']))
    .find(|t| t.to_ascii_lowercase() == w)
    .unwrap_or(w)
    .to_string()
}

fn slug(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let parts: Vec<&str> = s.split('-').filter(|p| !p.is_empty()).collect();
    parts.join("-")
}

fn after<'a>(words: &'a [String], keys: &[&str]) -> Option<&'a String> {
    words
        .windows(2)
        .find(|w| keys.contains(&w[0].as_str()))
        .map(|w| &w[1])
}

fn project_name(words: &[String]) -> String {
    if let Some(n) = after(words, &["named", "called", "project"]) {
        let s = slug(n);
        if !s.is_empty() {
            return s;
        }
    }
    let end = words
        .iter()
        .position(|w| matches!(w.as_str(), "pipeline" | "workflow" | "ensemble" | "study"));
    let head: Vec<String> = match end {
        Some(e) => {
            let kept: Vec<String> = words[..e]
                .iter()
                .filter(|w| !STOP.contains(&w.as_str()) && !w.chars().any(|c| c.is_ascii_digit()))
                .cloned()
                .collect();
            kept[kept.len().saturating_sub(3)..].to_vec()
        }
        None => Vec::new(),
    };
    let s = slug(&head.join("-"));
    if s.is_empty() {
        "composed-workflow".into()
    } else {
        s
    }
}

fn providers(words: &[String], f: &mut Facts) {
    let add = |p: &str, f: &mut Facts| {
        if !f.providers.iter().any(|x| x == p) {
            f.providers.push(p.to_string());
        }
    };
    for (i, w) in words.iter().enumerate() {
        let next = words.get(i + 1).map(String::as_str).unwrap_or("");
        match w.as_str() {
            "local" | "laptop" | "locally" | "workstation" => add("local", f),
            "slurm" | "hpc" | "supercomputer" => add("slurm", f),
            "aws" | "amazon" | "fargate" | "ec2" => add("aws", f),
            "gcp" | "gce" => add("gcp", f),
            "google" if next == "cloud" => add("gcp", f),
            "kubernetes" | "k8s" | "gke" | "eks" => add("kubernetes", f),
            _ => {}
        }
        if w == "ec2" {
            f.ec2 = true;
        }
        if is_aws_region(w) && f.region.is_none() {
            f.region = Some(w.clone());
        }
        if is_gcp_zone(w) && f.zone.is_none() {
            f.zone = Some(w.clone());
        }
    }
    f.queue = after(words, &["queue", "partition"])
        .filter(|q| !STOP.contains(&q.as_str()))
        .cloned()
        .or_else(|| {
            words
                .windows(2)
                .find(|w| {
                    matches!(w[1].as_str(), "queue" | "partition") && !STOP.contains(&w[0].as_str())
                })
                .map(|w| w[0].clone())
        });
    f.account = after(words, &["account", "allocation"]).cloned();
    f.namespace = after(words, &["namespace"]).cloned();
    if f.providers.is_empty() {
        add("local", f);
    }
}

fn is_aws_region(w: &str) -> bool {
    let parts: Vec<&str> = w.split('-').collect();
    parts.len() == 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1].chars().all(|c| c.is_ascii_lowercase())
        && !parts[1].is_empty()
        && parts[2].parse::<u32>().is_ok()
}

fn is_gcp_zone(w: &str) -> bool {
    let parts: Vec<&str> = w.split('-').collect();
    parts.len() == 3
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1].ends_with(|c: char| c.is_ascii_digit())
        && parts[2].len() == 1
        && parts[2].chars().all(|c| c.is_ascii_lowercase())
}

/// A number written as digits, alone or glued to a unit (`16gb`).
fn number_and_unit(w: &str) -> Option<(u32, String)> {
    let digits: String = w.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    let n = digits.parse().ok()?;
    Some((n, w[digits.len()..].to_string()))
}

fn counts(words: &[String], f: &mut Facts) {
    for (i, w) in words.iter().enumerate() {
        let Some((n, glued)) = number_and_unit(w) else {
            continue;
        };
        let next = if glued.is_empty() {
            words.get(i + 1).map(String::as_str).unwrap_or("")
        } else {
            glued.as_str()
        };
        let prev = if i > 0 { words[i - 1].as_str() } else { "" };
        match next.trim_end_matches('s') {
            "worker" | "node" | "agent" | "pilot" | "instance" | "machine" => {
                if matches!(prev, "to" | "max" | "maximum" | "most") {
                    let min = f.adaptive.map_or(1, |a| a.0);
                    f.adaptive = Some((min.min(n), n));
                } else if matches!(prev, "min" | "minimum" | "least") {
                    f.adaptive = Some((n, f.adaptive.map_or(n.max(10), |a| a.1)));
                } else {
                    f.workers = Some(n);
                }
            }
            "retry" | "retrie" | "attempt" => f.retries = Some(n),
            "time" if prev == "retry" => f.retries = Some(n),
            "hour" | "h" | "hr" if f.walltime.is_none() => {
                f.walltime = Some(format!("{n:02}:00:00"))
            }
            "minute" | "min" if f.walltime.is_none() && prev != "every" => {
                f.walltime = Some(format!("{:02}:{:02}:00", n / 60, n % 60))
            }
            "scenario" | "item" | "sample" | "member" | "simulation" | "file" | "region"
            | "year" | "case" | "run" => {
                f.items.get_or_insert(n);
            }
            _ => {}
        }
        if prev == "between" && words.get(i + 1).map(String::as_str) == Some("and") {
            if let Some((m, _)) = words.get(i + 2).and_then(|w| number_and_unit(w)) {
                f.adaptive = Some((n, m));
            }
        }
    }
    if let Some(w) = words.iter().position(|w| w == "walltime") {
        if let Some(t) = words.get(w + 1).filter(|t| t.contains(':')) {
            f.walltime = Some(t.clone());
        }
    }
    let adaptive_words = words
        .iter()
        .any(|w| w.starts_with("adaptive") || w.starts_with("autoscal") || w == "elastic");
    if adaptive_words && f.adaptive.is_none() {
        f.adaptive = Some((1, f.workers.unwrap_or(10).max(1)));
    }
}

/// The description cut where one step hands over to the next.
fn split_steps(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut parts = vec![lower];
    for sep in [
        " followed by ",
        " and then ",
        " then ",
        "; ",
        " feeding ",
        " before ",
    ] {
        parts = parts
            .iter()
            .flat_map(|p| p.split(sep).map(str::to_string).collect::<Vec<_>>())
            .collect();
    }
    // Only parts that name resources are steps (a trailing "needs local and
    // AWS targets" is not one).
    let steps: Vec<String> = parts
        .into_iter()
        .filter(|p| {
            let w = tokens(p);
            step_resources(&w).0.is_some()
                || step_resources(&w).1.is_some()
                || w.iter().any(|t| looks_like_image(t))
        })
        .collect();
    steps
}

fn step_resources(words: &[String]) -> (Option<u32>, Option<String>, Option<u32>) {
    let (mut cpus, mut mem, mut gpus) = (None, None, None);
    for (i, w) in words.iter().enumerate() {
        let Some((n, glued)) = number_and_unit(w) else {
            continue;
        };
        let unit = if glued.is_empty() {
            words.get(i + 1).cloned().unwrap_or_default()
        } else {
            glued
        };
        let unit = unit.trim_end_matches('s');
        match unit {
            "cpu" | "core" | "vcpu" | "thread" => cpus = Some(n),
            "gpu" => gpus = Some(n),
            "gb" | "g" | "gib" | "gig" => mem = Some(format!("{n}G")),
            "mb" | "m" | "mib" => mem = Some(format!("{n}M")),
            "tb" | "t" | "tib" => mem = Some(format!("{}G", n * 1024)),
            _ => {}
        }
    }
    (cpus, mem, gpus)
}

fn looks_like_image(w: &str) -> bool {
    w.contains('/') && w.contains(':') && !w.contains("://") && w.split(':').count() == 2
}

fn step(i: usize, text: &str, f: &Facts) -> Step {
    let words = tokens(text);
    let (cpus, memory, gpus) = step_resources(&words);
    // The image as written (tokens lowercase: image names are lowercase).
    let image = words
        .windows(2)
        .find(|w| w[0] == "image" && (w[1].contains('/') || w[1].contains(':')))
        .map(|w| w[1].clone())
        .or_else(|| words.iter().find(|w| looks_like_image(w)).cloned());
    let name = step_name(i, &words, f);
    let mut tags: Vec<String> = Vec::new();
    for (key, tag) in [
        ("downscal", "downscaling"),
        ("aggregat", "aggregation"),
        ("lulc", "lulcc"),
        ("gcam", "gcam"),
        ("netcdf", "netcdf"),
        ("climate", "climate"),
        ("train", "training"),
        ("plot", "plotting"),
        ("preprocess", "preprocessing"),
    ] {
        if words.iter().any(|w| w.starts_with(key)) && !tags.iter().any(|t| t == tag) {
            tags.push(tag.into());
        }
    }
    Step {
        name,
        cpus,
        memory,
        gpus,
        image,
        tags,
    }
}

fn step_name(i: usize, words: &[String], f: &Facts) -> String {
    if let Some(n) = after(words, &["component", "model"]).filter(|n| !STOP.contains(&n.as_str())) {
        return slug(n);
    }
    let post = [
        "aggregat",
        "summar",
        "postprocess",
        "post-process",
        "plot",
        "report",
        "merge",
        "collect",
    ];
    if i > 0 && words.iter().any(|w| post.iter().any(|p| w.starts_with(p))) {
        return "postprocess".into();
    }
    let first = words.iter().find(|w| {
        !STOP.contains(&w.as_str())
            && w.chars().all(|c| c.is_ascii_alphabetic())
            && w.len() > 2
            && !matches!(
                w.as_str(),
                "local"
                    | "slurm"
                    | "aws"
                    | "hpc"
                    | "gcp"
                    | "kubernetes"
                    | "k8s"
                    | "containerized"
                    | "pipeline"
                    | "workflow"
                    | "model"
                    | "cpus"
                    | "cores"
                    | "memory"
                    | "ram"
            )
    });
    match (i, first) {
        (0, _) if f.project != "composed-workflow" => {
            f.project.split('-').next().unwrap_or("main").to_string()
        }
        (_, Some(w)) => slug(w),
        _ => format!("step{}", i + 1),
    }
}

fn dedup_names(steps: &mut [Step]) {
    for i in 1..steps.len() {
        let mut n = 2;
        let base = steps[i].name.clone();
        while steps[..i].iter().any(|s| s.name == steps[i].name) {
            steps[i].name = format!("{base}{n}");
            n += 1;
        }
    }
}

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
