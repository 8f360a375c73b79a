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

mod build;

pub use build::{fargate_size, gcp_machine, manifest, target_name};

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
