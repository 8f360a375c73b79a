//! From a manifest target to the pilots that would serve it: the [`PilotSpec`]s
//! `scalable render` prints, the per-tag rows `scalable plan --dry-run` shows
//! and what those rows cost (the provider's estimate). Pure functions of the
//! manifest and the broker's access details; the words are the output layer's.
//!
//! One pilot group per tag: each component the target serves becomes a group
//! of agents sized like the component (`--tags NAME --cpus C --memory M`),
//! unless the target is local, whose agents are a generic pool
//! (`threads_per_worker` cpus each, SPEC §8).

use scalable_common::manifest::{AwsClusterType, Component, KubeKind, Manifest, Provider, Target};
use scalable_common::units::format_size;

use crate::agent_binary::AgentLocation;
use crate::providers::{self, CostEstimate};
use crate::render::{self, PilotProvider, PilotSpec};

/// The tag column of a pool that serves every tag.
const GENERIC: &str = "(generic pool)";

/// Where pilots find the broker and their credentials.
#[derive(Debug, Clone)]
pub struct BrokerAccess {
    pub address: String,
    pub fingerprint: String,
    /// The agent token file as the compute side sees it (shared filesystem).
    pub token_file: String,
    /// Where pilots get the agent binary.
    pub agent: AgentLocation,
}

/// One row of `plan --dry-run`: a group of workers serving one tag.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanRow {
    pub tag: String,
    pub workers: u32,
    pub min_workers: u32,
    pub max_workers: u32,
    pub cpus: u32,
    pub memory: String,
    pub gpus: u32,
    pub image: Option<String>,
}

/// The components target `t` serves: the target's `tags:` if any, else all.
fn served<'a>(m: &'a Manifest, t: &Target) -> Vec<&'a Component> {
    m.components
        .values()
        .filter(|c| t.serves(&c.name))
        .collect()
}

/// Workers per tag and resources per worker, from the manifest alone
/// (objectives and measured sizes come with scaling and the advisors).
pub fn plan(m: &Manifest, target: &str) -> Result<Vec<PlanRow>, String> {
    let t = m
        .target(target)
        .ok_or_else(|| format!("no target {target:?}"))?;
    let comps = served(m, t);
    let groups = comps.len().max(1) as u32;
    let (min, max) = match t.adaptive {
        Some(a) => (a.minimum, a.maximum),
        None => (t.max_workers, t.max_workers),
    };
    // max_workers is the target's total (seed 002: "total worker count across all
    // component groups"), shared evenly, at least one per group.
    let share = |n: u32| (n / groups).max(1);
    if matches!(t.provider, Provider::Local { .. }) || comps.is_empty() {
        let cpus = match &t.provider {
            Provider::Local {
                threads_per_worker: Some(n),
                ..
            } => *n,
            _ => t.worker.cpus.unwrap_or(0),
        };
        return Ok(vec![PlanRow {
            // A local target's agents are one pool, tagged with the target's tags.
            tag: if t.tags.is_empty() {
                GENERIC.into()
            } else {
                t.tags.join(",")
            },
            workers: max,
            min_workers: min,
            max_workers: max,
            cpus,
            memory: t
                .worker
                .memory_bytes
                .map(format_size)
                .unwrap_or_else(|| "auto".into()),
            gpus: t.worker.gpus.unwrap_or(0),
            image: None,
        }]);
    }
    Ok(comps
        .iter()
        .map(|c| PlanRow {
            tag: c.name.clone(),
            workers: share(max),
            min_workers: if min == 0 { 0 } else { share(min) },
            max_workers: share(max),
            cpus: c.cpus,
            memory: c
                .memory_bytes
                .map(format_size)
                .unwrap_or_else(|| "auto".into()),
            gpus: c.gpus,
            image: c.image.clone(),
        })
        .collect())
}

/// What one plan row costs: its workers for `hours`, at the provider's price.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanCost {
    pub tag: String,
    pub workers: u32,
    pub hours: f64,
    pub cost: CostEstimate,
}

/// The hours a plan is priced for: one walltime on Slurm, otherwise an hour.
fn priced_hours(t: &Target) -> f64 {
    match &t.provider {
        Provider::Slurm {
            walltime_ms: Some(w),
            ..
        } => *w as f64 / 3_600_000.0,
        _ => 1.0,
    }
}

/// The cost of each row of `rows` (what [`plan`] returned for `target`): its
/// workers for one walltime (Slurm) or an hour, as the target's provider
/// estimates it for the pilots [`pilot_specs`] would start.
pub fn plan_costs(
    m: &Manifest,
    target: &str,
    rows: &[PlanRow],
    access: &BrokerAccess,
) -> Result<Vec<PlanCost>, String> {
    let t = m
        .target(target)
        .ok_or_else(|| format!("no target {target:?}"))?;
    let hours = priced_hours(t);
    let ctx = providers::ProviderContext::new(std::env::temp_dir());
    let provider = providers::provider_for(t, &ctx);
    let specs = pilot_specs(m, target, None, access)?;
    Ok(specs
        .iter()
        .zip(rows)
        .map(|(spec, row)| PlanCost {
            tag: row.tag.clone(),
            workers: row.workers,
            hours,
            cost: provider.estimate_cost(spec, row.workers, hours),
        })
        .collect())
}

/// The pilots of `target` (one group per tag, or only `tag`), ready to render.
pub fn pilot_specs(
    m: &Manifest,
    target: &str,
    tag: Option<&str>,
    access: &BrokerAccess,
) -> Result<Vec<PilotSpec>, String> {
    let t = m
        .target(target)
        .ok_or_else(|| format!("no target {target:?}"))?;
    let rows = plan(m, target)?;
    let rows: Vec<&PlanRow> = rows
        .iter()
        .filter(|r| tag.is_none_or(|g| g == r.tag))
        .collect();
    if rows.is_empty() {
        let tags: Vec<&str> = served(m, t).iter().map(|c| c.name.as_str()).collect();
        return Err(format!(
            "target {target} has no tag {:?} (its tags are: {})",
            tag.unwrap_or_default(),
            tags.join(", ")
        ));
    }
    let mut specs = Vec::new();
    for row in rows {
        let local = matches!(t.provider, Provider::Local { .. });
        // A local pool is sized by the target (threads_per_worker), not a component.
        let component = (!local).then(|| m.components.get(&row.tag)).flatten();
        let generic = row.tag == GENERIC;
        let slug = if generic {
            "pool".to_string()
        } else {
            row.tag.replace(',', "-")
        };
        let name = format!("scalable-{}-{}", t.name, slug)
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-");
        let provider = pilot_provider(m, t, &name);
        let cloud = !matches!(provider, PilotProvider::Local | PilotProvider::Slurm { .. });
        let image = match &t.provider {
            Provider::Aws { image, .. }
            | Provider::Kubernetes { image, .. }
            | Provider::Gcp { image, .. } => image.clone(),
            _ => None,
        }
        .unwrap_or_else(|| "ghcr.io/scalable/agent:latest".into());
        let agent = access.agent.for_pilot(&provider, Some(&image));
        specs.push(PilotSpec {
            target: t.name.clone(),
            tag: (!generic).then(|| row.tag.clone()),
            broker_address: access.address.clone(),
            fingerprint: access.fingerprint.clone(),
            token_file: (!cloud).then(|| access.token_file.clone()),
            token_env_secret: cloud.then(|| format!("{}-agent-token", m.project.name)),
            cpus: row.cpus,
            memory_bytes: component
                .and_then(|c| c.memory_bytes)
                .or(t.worker.memory_bytes),
            gpus: row.gpus,
            image: Some(image),
            idle_timeout: Some("5m".into()),
            lifetime: None,
            agent_path: agent.path,
            no_shared_fs: !t.shared_fs,
            storage: t.storage.clone(),
            count: row.workers,
            provider,
        });
        // Kubernetes Deployments restart agents that leave: no idle timeout there.
        if let Some(last) = specs.last_mut() {
            if matches!(
                last.provider,
                PilotProvider::Kubernetes {
                    kind: render::KubeKind::Deployment,
                    ..
                }
            ) {
                last.idle_timeout = None;
            }
        }
    }
    Ok(specs)
}

/// How the pilots of target `t` are started, with the group's `name` as the
/// job, family or resource name the platform shows.
fn pilot_provider(m: &Manifest, t: &Target, name: &str) -> PilotProvider {
    match &t.provider {
        Provider::Local { .. } => PilotProvider::Local,
        Provider::Slurm {
            queue,
            account,
            walltime_ms,
            qos,
            constraint,
            extra_directives,
            setup,
            ..
        } => PilotProvider::Slurm {
            queue: queue.clone(),
            account: account.clone(),
            walltime: walltime_ms.map(hms),
            qos: qos.clone(),
            constraint: constraint.clone(),
            extra_directives: extra_directives.clone(),
            setup: setup.clone(),
            job_name: name.to_string(),
            output: None,
        },
        Provider::Aws {
            region,
            cluster_type: AwsClusterType::Ec2,
            instance_type,
            ami,
            ..
        } => PilotProvider::Ec2 {
            region: region.clone(),
            instance_type: instance_type.clone(),
            ami: ami.clone(),
        },
        Provider::Aws {
            region,
            cluster_type: AwsClusterType::Fargate,
            worker_cpu_units,
            worker_mem_mib,
            ..
        } => PilotProvider::Fargate {
            region: region.clone(),
            worker_cpu: worker_cpu_units.unwrap_or(1024),
            worker_mem_mib: worker_mem_mib.unwrap_or(2048),
            family: name.to_string(),
            execution_role: Some(format!(
                "arn:aws:iam::ACCOUNT:role/{}-execution",
                m.project.name
            )),
        },
        Provider::Gcp {
            zone,
            machine_type,
            image,
            ..
        } => PilotProvider::Gcp {
            zone: zone.clone(),
            machine_type: machine_type.clone(),
            image: image.clone(),
        },
        Provider::Kubernetes {
            namespace,
            kind,
            service_account,
            ..
        } => PilotProvider::Kubernetes {
            namespace: namespace.clone(),
            kind: match kind {
                KubeKind::Job => render::KubeKind::Job,
                KubeKind::Deployment => render::KubeKind::Deployment,
            },
            service_account: service_account.clone(),
            name: name.to_string(),
        },
    }
}

/// Milliseconds as Slurm's `HH:MM:SS`.
fn hms(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}
