//! The agents this broker could still start, as [`AgentShape`]s: its local
//! agents (`--local-agents`, or a local target's workers) and the pilots of
//! its manifest target, one shape per pilot group. `submit` checks a new run
//! against them (with the connected agents) to warn about a job nothing could
//! ever run, and `submit --target T` refuses a job T cannot run.
//!
//! What is unknown is taken as large as can be (a Slurm node's memory, a
//! host's GPUs): a shape may promise too much, never too little, so a warning
//! is never wrong. Must not: start anything, or ask a provider.

use scalable_common::explain::AgentShape;
use scalable_common::manifest::{ContainerPolicy, Manifest, Provider, Target};
use scalable_common::resources::Resources;
use scalable_common::units::parse_size_bytes;

use crate::server::BrokerConfig;

/// A Slurm pilot's agent lives a minute less than its job (the sbatch
/// template's `--lifetime`).
const SLURM_LIFETIME_MARGIN_MS: u64 = 60_000;

/// Container runtimes an agent may find on this host's `PATH`.
const RUNTIMES: [&str; 5] = ["apptainer", "singularity", "podman", "docker", "ch-run"];

/// Every shape of agent this broker starts or can start.
pub fn of_broker(cfg: &BrokerConfig) -> Vec<AgentShape> {
    let mut shapes = Vec::new();
    if cfg.local_agents > 0 {
        shapes.push(local_agents(
            cfg.local_agents,
            cfg.local_agent_cpus,
            &cfg.local_agent_args,
        ));
    }
    if let (Some(m), Some(t)) = (&cfg.manifest, &cfg.target) {
        // A local target's workers are the local agents above, unless the
        // scaler starts them (as pilots of the local provider).
        if let Some(target) = m.target(t).filter(|t| !is_local(t) || cfg.adaptive) {
            shapes.extend(of_target(m, target));
        }
    }
    shapes
}

/// The agents `--local-agents N` starts: `--local-agent-cpus` (or their
/// share of the host), their share of its memory, the flags passed on.
fn local_agents(n: u32, cpus: Option<u32>, args: &[String]) -> AgentShape {
    let flag = |name: &str| -> Option<String> {
        let eq = format!("{name}=");
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&eq)
                .map(String::from)
                .or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    let tags = flag("--tags")
        .map(|t| t.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let memory_bytes = flag("--memory")
        .and_then(|m| parse_size_bytes(&m).ok())
        .or_else(|| crate::local::host_memory_bytes().map(|h| h / u64::from(n.max(1))))
        .unwrap_or(u64::MAX);
    let container_runtime = flag("--runtime").map_or_else(runtime_on_path, |r| r != "none");
    AgentShape {
        tags,
        resources: Resources {
            cpus: cpus.unwrap_or(u32::MAX),
            memory_bytes,
            gpus: u32::MAX,
            custom: Vec::new(),
        },
        lifetime_ms: None,
        container_runtime,
    }
}

/// The pilots of a manifest target: one shape per component it serves (a
/// pilot group tagged with the component's name and sized like it), or one
/// generic pool when it serves none, or its local agents.
pub fn of_target(m: &Manifest, t: &Target) -> Vec<AgentShape> {
    let container_runtime = t.containers != ContainerPolicy::None;
    let lifetime_ms = match &t.provider {
        Provider::Slurm {
            walltime_ms: Some(w),
            ..
        } => Some(w.saturating_sub(SLURM_LIFETIME_MARGIN_MS)),
        _ => None,
    };
    let worker = Resources {
        cpus: t.worker.cpus.unwrap_or(u32::MAX),
        memory_bytes: t.worker.memory_bytes.unwrap_or(u64::MAX),
        gpus: t.worker.gpus.unwrap_or(u32::MAX),
        custom: Vec::new(),
    };
    let generic = AgentShape {
        tags: t.tags.clone(),
        resources: worker.clone(),
        lifetime_ms,
        container_runtime,
    };
    if is_local(t) {
        let cpus = match &t.provider {
            Provider::Local {
                threads_per_worker: Some(n),
                ..
            } => *n,
            _ => worker.cpus,
        };
        let mut local = generic;
        local.resources.cpus = cpus;
        local.container_runtime = container_runtime && runtime_on_path();
        return vec![local];
    }
    let served: Vec<AgentShape> = m
        .components
        .values()
        .filter(|c| t.serves(&c.name))
        .map(|c| AgentShape {
            tags: vec![c.name.clone()],
            resources: Resources {
                cpus: c.cpus,
                memory_bytes: c.memory_bytes.unwrap_or(worker.memory_bytes),
                gpus: c.gpus,
                custom: Vec::new(),
            },
            lifetime_ms,
            container_runtime,
        })
        .collect();
    if served.is_empty() {
        vec![generic]
    } else {
        served
    }
}

fn is_local(t: &Target) -> bool {
    matches!(t.provider, Provider::Local { .. })
}

/// Whether an agent on this host would find a container runtime.
fn runtime_on_path() -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| RUNTIMES.iter().any(|r| dir.join(r).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_agents_take_the_flags_passed_on() {
        let args = [
            "--tags=demeter,post".to_string(),
            "--runtime".into(),
            "none".into(),
        ];
        let s = local_agents(2, Some(3), &args);
        assert_eq!(s.tags, ["demeter", "post"]);
        assert_eq!(s.resources.cpus, 3);
        assert!(!s.container_runtime);
        let s = local_agents(1, None, &["--memory=2G".to_string()]);
        assert!(s.tags.is_empty());
        assert_eq!(s.resources.memory_bytes, 2 << 30);
        assert_eq!(s.resources.cpus, u32::MAX, "unknown is large");
    }
}
