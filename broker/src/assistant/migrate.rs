//! `scalable migrate`'s heuristic: every target of provider `from` becomes a
//! target of provider `to` in the manifest's raw tree (order, components,
//! tasks and overlays kept): the options with an equivalent are mapped
//! (worker sizes, image, counts to adaptive bounds), each without one gets a
//! note (seed 000: walltime, interface, queue, mounts), and overlays that
//! named the old target name the new one.
//!
//! Pure. Must not: validate (the CLI does) or print.

use super::compose::target_name;
use super::yaml::Yaml;

/// The providers a manifest can name.
pub const PROVIDERS: &[&str] = &["local", "slurm", "aws", "gcp", "kubernetes"];

#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub manifest: Yaml,
    /// `old → new` target names.
    pub renamed: Vec<(String, String)>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    #[error("no target of the manifest has provider {0} (targets: {1})")]
    NoTarget(String, String),
    #[error("--from and --to are both {0}: nothing to migrate")]
    Same(String),
}

/// Keys every provider's target has (kept as they are).
const COMMON: &[&str] = &["provider", "max_workers", "containers", "tags", "adaptive"];

pub fn migrate(raw: &Yaml, from: &str, to: &str) -> Result<Migration, MigrateError> {
    if from == to {
        return Err(MigrateError::Same(from.into()));
    }
    let targets = raw.get("targets").map(Yaml::entries).unwrap_or(&[]);
    let chosen: Vec<String> = targets
        .iter()
        .filter(|(name, t)| t.get("provider").and_then(Yaml::as_str) == Some(from) || name == from)
        .map(|(n, _)| n.clone())
        .collect();
    if chosen.is_empty() {
        let names: Vec<String> = targets
            .iter()
            .map(|(n, t)| {
                format!(
                    "{n} ({})",
                    t.get("provider").and_then(Yaml::as_str).unwrap_or("?")
                )
            })
            .collect();
        return Err(MigrateError::NoTarget(from.into(), names.join(", ")));
    }
    let mut out = raw.clone();
    let mut notes = Vec::new();
    let mut renamed = Vec::new();
    let project = raw
        .get("project")
        .and_then(|p| p.get("name"))
        .and_then(Yaml::scalar_text)
        .unwrap_or_else(|| "scalable".into());
    let image = raw
        .get("components")
        .map(Yaml::entries)
        .unwrap_or(&[])
        .iter()
        .find_map(|(_, c)| c.get("image").and_then(Yaml::as_str).map(str::to_string));
    let Some(Yaml::Map(entries)) = out.get_mut("targets") else {
        unreachable!("chosen is not empty, so targets is a map")
    };
    for name in &chosen {
        let Some(i) = entries.iter().position(|(n, _)| n == name) else {
            continue;
        };
        let old = entries[i].1.clone();
        let mut new_name = target_name(to);
        if new_name != *name && entries.iter().any(|(n, _)| *n == new_name) {
            new_name = format!("{name}-{}", target_name(to));
        }
        let (t, mut n) = map_target(name, &old, from, to, &project, image.as_deref());
        notes.append(&mut n);
        entries[i] = (new_name.clone(), t);
        if new_name != *name {
            notes.push(format!("target {name} is now {new_name} (provider {to})"));
            renamed.push((name.clone(), new_name));
        }
    }
    mounts_notes(raw, to, &mut notes);
    rename_in_overlays(&mut out, &renamed, &mut notes);
    Ok(Migration {
        manifest: out,
        renamed,
        notes,
    })
}

fn map_target(
    name: &str,
    old: &Yaml,
    from: &str,
    to: &str,
    project: &str,
    image: Option<&str>,
) -> (Yaml, Vec<String>) {
    let mut notes = Vec::new();
    let mut t = Yaml::map();
    t.set("provider", Yaml::str(to));
    let cloud = matches!(to, "aws" | "gcp" | "kubernetes");
    let get_u = |k: &str| old.get(k).and_then(Yaml::as_u64);
    let (cpus, mem) = worker_size(old, from);
    provider_options(&mut t, &mut notes, old, from, to, project, (cpus, mem));
    if cloud {
        let img = old
            .get("image")
            .and_then(Yaml::as_str)
            .map(str::to_string)
            .or_else(|| image.map(str::to_string));
        match img {
            Some(i) => t.set("image", Yaml::str(&i)),
            None => t.set("image", Yaml::str("${WORKER_IMAGE:-python:3.12-slim}")),
        };
    }
    if matches!(to, "slurm" | "gcp" | "kubernetes") {
        if let Some(c) = cpus {
            t.set("worker_cpus", Yaml::Int(c as i64));
        }
        if let Some(m) = mem {
            t.set(
                "worker_memory",
                Yaml::str(scalable_common::units::format_size(m)),
            );
        }
    }
    for k in COMMON.iter().skip(1) {
        if let Some(v) = old.get(k) {
            if *k != "max_workers" || !cloud || old.get("adaptive").is_some() {
                t.set(k, v.clone());
            }
        }
    }
    if cloud && old.get("adaptive").is_none() {
        let max = get_u("max_workers").unwrap_or(4).max(1);
        let a = t.entry("adaptive");
        a.set("minimum", Yaml::Int(1));
        a.set("maximum", Yaml::Int(max as i64));
        notes.push(format!(
            "{from} max_workers: {max} → adaptive: {{minimum: 1, maximum: {max}}}"
        ));
    }
    for (k, v) in old.entries() {
        let carried = COMMON.contains(&k.as_str())
            || matches!(
                k.as_str(),
                "image"
                    | "worker_cpus"
                    | "worker_memory"
                    | "worker_gpus"
                    | "worker_cpu"
                    | "worker_mem"
            )
            || (k == "queue" && to == "kubernetes");
        if !carried {
            let v = v.scalar_text().unwrap_or_else(|| "…".into());
            notes.push(unmapped(name, from, to, k, &v));
        }
    }
    (t, notes)
}

/// The options `to` requires, from what the old target said.
fn provider_options(
    t: &mut Yaml,
    notes: &mut Vec<String>,
    old: &Yaml,
    from: &str,
    to: &str,
    project: &str,
    (cpus, mem): (Option<u64>, Option<u64>),
) {
    match to {
        "kubernetes" => {
            t.set("namespace", Yaml::str(project));
            if let Some(q) = old.get("queue").and_then(Yaml::scalar_text) {
                notes.push(format!("{from} queue: {q} → Kubernetes namespace {project} (a queue has no equivalent; pods are placed by the cluster's scheduler)"));
            }
        }
        "aws" => {
            t.set("region", Yaml::str("us-east-1"));
            t.set("cluster_type", Yaml::str("fargate"));
            let c = cpus.unwrap_or(1).min(64) as u32;
            let (units, mib) = super::compose::fargate_size(c, mem.unwrap_or(1 << 30));
            t.set("worker_cpu", Yaml::Int(i64::from(units)));
            t.set("worker_mem", Yaml::Int(mib as i64));
            t.set(
                "subnet",
                Yaml::str("${AWS_SUBNET:-subnet-0123456789abcdef0}"),
            );
            notes.push(
                "aws: region us-east-1 and subnet are placeholders to review (${AWS_SUBNET})"
                    .into(),
            );
        }
        "gcp" => {
            t.set("zone", Yaml::str("us-central1-a"));
            let c = cpus.unwrap_or(2).min(u64::from(u32::MAX)) as u32;
            t.set(
                "machine_type",
                Yaml::str(super::compose::gcp_machine(c, mem.unwrap_or(4 << 30))),
            );
            notes.push("gcp: zone us-central1-a is a placeholder to review".into());
        }
        "slurm" => {
            t.set("walltime", Yaml::str("04:00:00"));
            notes.push(format!(
                "slurm: walltime 04:00:00 is a default (a pilot's lifetime); {from} had none"
            ));
        }
        _ => {}
    }
}

fn worker_size(old: &Yaml, from: &str) -> (Option<u64>, Option<u64>) {
    if from == "aws" {
        let cpus = old
            .get("worker_cpu")
            .and_then(Yaml::as_u64)
            .map(|u| (u / 1024).max(1));
        let mem = old
            .get("worker_mem")
            .and_then(Yaml::as_u64)
            .map(|m| m << 20);
        return (cpus, mem);
    }
    let cpus = old
        .get("worker_cpus")
        .or_else(|| old.get("threads_per_worker"))
        .and_then(Yaml::as_u64);
    let mem = old
        .get("worker_memory")
        .and_then(Yaml::scalar_text)
        .and_then(|m| scalable_common::units::parse_size_bytes(&m).ok());
    (cpus, mem)
}

fn unmapped(name: &str, from: &str, to: &str, key: &str, value: &str) -> String {
    let why = match (key, to) {
        ("walltime", "kubernetes") => {
            "pod activeDeadlineSeconds (no direct equivalent; tasks keep their own walltime:)"
        }
        ("walltime", _) => "no pilot lifetime there; tasks keep their own walltime:",
        ("interface", _) => "removed (the platform's own networking)",
        ("account" | "qos", _) => "no equivalent (billing is the cloud account's)",
        ("constraint", _) => "no equivalent; choose an instance or node type instead",
        ("extra_directives" | "setup", _) => "no equivalent; put setup into the image",
        ("region" | "zone", _) => "no equivalent; choose it again for the new provider",
        _ => "no equivalent",
    };
    format!("targets.{name}.{key}: {value} ({from}) → {why}")
}

fn mounts_notes(raw: &Yaml, to: &str, notes: &mut Vec<String>) {
    if !matches!(to, "kubernetes" | "aws" | "gcp") {
        return;
    }
    for (c, comp) in raw.get("components").map(Yaml::entries).unwrap_or(&[]) {
        for (host, cont) in comp.get("mounts").map(Yaml::entries).unwrap_or(&[]) {
            let cont = cont.scalar_text().unwrap_or_default();
            notes.push(match to {
                "kubernetes" => format!("components.{c}.mounts {host}:{cont} → needs a volume (e.g. a PVC {c}-data) on the cluster; the path is kept"),
                _ => format!("components.{c}.mounts {host}:{cont} → the host path must exist on the instances (or use object storage); kept"),
            });
        }
    }
}

fn rename_in_overlays(out: &mut Yaml, renamed: &[(String, String)], notes: &mut Vec<String>) {
    let Some(Yaml::Map(overlays)) = out.get_mut("overlays") else {
        return;
    };
    for (oname, body) in overlays.iter_mut() {
        let Some(Yaml::Map(ts)) = body.get_mut("targets") else {
            continue;
        };
        for (k, _) in ts.iter_mut() {
            if let Some((_, new)) = renamed.iter().find(|(old, _)| old == k) {
                notes.push(format!(
                    "overlay {oname}: targets.{k} → targets.{new} (review its provider options)"
                ));
                *k = new.clone();
            }
        }
    }
    let names: Vec<&str> = overlays.iter().map(|(n, _)| n.as_str()).collect();
    if !names.is_empty() {
        notes.push(format!(
            "overlays kept: {} (re-apply them per target with --overlay)",
            names.join(", ")
        ));
    }
}
