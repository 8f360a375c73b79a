//! The schema's vocabulary: which keys exist where, the providers, and the
//! words users bring from elsewhere (`partition` for `queue`), so an unknown
//! key gets the hint that fixes it.
//!
//! Only names and hints live here; it must not read nodes nor report issues
//! (the checker does, with these lists).

use std::cell::Cell;

use crate::suggest::did_you_mean_within;

pub(super) const TOP_KEYS: &[&str] = &[
    "version",
    "project",
    "targets",
    "components",
    "tasks",
    "overlays",
    "workflow",
];
pub(super) const OVERLAY_KEYS: &[&str] = &["project", "targets", "components", "tasks", "workflow"];
pub(super) const PROJECT_KEYS: &[&str] = &["name", "output_roots"];
pub(super) const TARGET_KEYS: &[&str] = &[
    "provider",
    "max_workers",
    "containers",
    "tags",
    "adaptive",
    "shared_fs",
    "storage",
];
pub(super) const LOCAL_KEYS: &[&str] = &["threads_per_worker", "processes"];
pub(super) const SLURM_KEYS: &[&str] = &[
    "queue",
    "account",
    "walltime",
    "interface",
    "qos",
    "constraint",
    "extra_directives",
    "setup",
    "worker_cpus",
    "worker_memory",
    "worker_gpus",
];
pub(super) const AWS_KEYS: &[&str] = &[
    "region",
    "cluster_type",
    "image",
    "instance_type",
    "subnet",
    "security_groups",
    "ami",
    "worker_cpu",
    "worker_mem",
    "endpoint_url",
];
pub(super) const GCP_KEYS: &[&str] = &[
    "project",
    "zone",
    "machine_type",
    "image",
    "worker_cpus",
    "worker_memory",
    "worker_gpus",
];
pub(super) const KUBERNETES_KEYS: &[&str] = &[
    "namespace",
    "image",
    "context",
    "service_account",
    "kind",
    "worker_cpus",
    "worker_memory",
    "worker_gpus",
];
pub(super) const ADAPTIVE_KEYS: &[&str] = &[
    "minimum",
    "maximum",
    "scale_up_threshold",
    "scale_down_threshold",
    "cooldown",
];
pub(super) const COMPONENT_KEYS: &[&str] =
    &["image", "cpus", "memory", "gpus", "tags", "mounts", "env"];
pub(super) const TASK_KEYS: &[&str] = &[
    "component",
    "cache",
    "retries",
    "walltime",
    "memory",
    "cpus",
    "fallback",
];
pub(super) const FALLBACK_KEYS: &[&str] = &["memory", "cpus", "walltime"];

pub(super) const NAME_HINT: &str = "use letters, digits, \"_\", \".\" and \"-\"";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Local,
    Slurm,
    Aws,
    Gcp,
    Kubernetes,
}

pub(super) const PROVIDERS: &[(&str, Kind)] = &[
    ("local", Kind::Local),
    ("slurm", Kind::Slurm),
    ("aws", Kind::Aws),
    ("gcp", Kind::Gcp),
    ("kubernetes", Kind::Kubernetes),
];

impl Kind {
    pub(super) fn name(self) -> &'static str {
        PROVIDERS
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("local", |(n, _)| n)
    }

    pub(super) fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Local => LOCAL_KEYS,
            Kind::Slurm => SLURM_KEYS,
            Kind::Aws => AWS_KEYS,
            Kind::Gcp => GCP_KEYS,
            Kind::Kubernetes => KUBERNETES_KEYS,
        }
    }

    /// The option that sizes a worker's `dim` (cpus, memory, gpus).
    pub(super) fn knob(self, dim: &str) -> &'static str {
        match (self, dim) {
            (Kind::Local, "cpus") => "threads_per_worker",
            (Kind::Aws, "cpus") => "worker_cpu",
            (Kind::Aws, _) => "worker_mem",
            (_, "cpus") => "worker_cpus",
            (_, "memory") => "worker_memory",
            _ => "worker_gpus",
        }
    }
}

/// Words users bring from elsewhere, and the key we call it.
pub(super) fn synonym(kind: Option<Kind>, key: &str) -> Option<&'static str> {
    Some(match (kind, key) {
        (Some(Kind::Slurm), "partition") => "queue",
        (Some(Kind::Slurm), "time") => "walltime",
        (Some(Kind::Slurm), "project") => "account",
        (Some(Kind::Aws), "cpu" | "cpus" | "worker_cpus") => "worker_cpu",
        (Some(Kind::Aws), "memory" | "mem" | "worker_memory") => "worker_mem",
        (Some(Kind::Gcp), "region") => "zone",
        (Some(Kind::Local), "threads") => "threads_per_worker",
        (Some(Kind::Slurm | Kind::Gcp | Kind::Kubernetes), "cpus" | "cpu") => "worker_cpus",
        (Some(Kind::Slurm | Kind::Gcp | Kind::Kubernetes), "memory" | "mem") => "worker_memory",
        (Some(Kind::Slurm | Kind::Gcp | Kind::Kubernetes), "gpus") => "worker_gpus",
        (_, "workers") => "max_workers",
        (_, "container" | "runtime") => "containers",
        _ => return None,
    })
}

pub(super) fn component_synonym(key: &str) -> Option<&'static str> {
    Some(match key {
        "mem" | "ram" => "memory",
        "volumes" | "binds" => "mounts",
        "environment" => "env",
        "container" => "image",
        _ => return None,
    })
}

pub(super) fn task_synonym(key: &str) -> Option<&'static str> {
    Some(match key {
        "max_retries" | "retry" => "retries",
        "time" | "timeout" => "walltime",
        "tag" => "component",
        _ => return None,
    })
}

pub(super) fn unknown_top_key(budget: &Cell<u64>, key: &str, allowed: &[&str]) -> (String, String) {
    let hint = match key {
        "jobs" => "jobs belong in the workflow: section (workflow: {workflow: NAME, jobs: [...]})"
            .to_string(),
        "name" => "the project name goes under project: {name: ...}".to_string(),
        _ => did_you_mean_within(budget, key, allowed.iter().copied())
            .unwrap_or_else(|| format!("valid keys: {}", allowed.join(", "))),
    };
    (format!("unknown key {key:?}"), hint)
}

/// `unknown key "x"` with a did-you-mean, a known synonym, or the valid keys.
pub(super) fn unknown_key(
    budget: &Cell<u64>,
    key: &str,
    allowed: &[&str],
    synonym: Option<&str>,
) -> (String, String) {
    let hint = synonym
        .filter(|s| allowed.contains(s))
        .map(|s| format!("did you mean {s:?}?"))
        .or_else(|| did_you_mean_within(budget, key, allowed.iter().copied()))
        .unwrap_or_else(|| format!("valid keys: {}", allowed.join(", ")));
    (format!("unknown key {key:?}"), hint)
}
