//! The resolved manifest: what the rest of the program consumes after
//! loading, expansion, overlays and validation. Sizes are bytes, durations
//! milliseconds; nothing here is a string to parse again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resources::Resources;
use crate::workflow::WorkflowDef;

/// A checked manifest with its overlays applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always 1 for now.
    pub version: u32,
    pub project: Project,
    pub targets: BTreeMap<String, Target>,
    pub components: BTreeMap<String, Component>,
    pub tasks: BTreeMap<String, TaskBinding>,
    /// The overlays merged in, in the order they were applied.
    pub overlays_applied: Vec<String>,
    /// The target the manifest was checked for, if one was given.
    pub target_selected: Option<String>,
    /// The optional `workflow:` section.
    pub workflow: Option<WorkflowDef>,
}

impl Manifest {
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.get(name)
    }

    /// A task binding and the component it runs on.
    pub fn binding(&self, task: &str) -> Option<(&TaskBinding, &Component)> {
        let binding = self.tasks.get(task)?;
        let component = self.components.get(&binding.component)?;
        Some((binding, component))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub name: String,
    /// Absolute directories outside a task's own directory where its declared
    /// outputs may be (and where the broker may restore cached ones); honoured
    /// from the broker's own manifest only. Empty: outputs stay inside the
    /// task's directory.
    #[serde(default)]
    pub output_roots: Vec<String>,
}

/// Where work runs: one provider and the pilots (agents) it may start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub provider: Provider,
    /// Agents this target may run at once; defaults to `adaptive.maximum`,
    /// else 1.
    pub max_workers: u32,
    pub containers: ContainerPolicy,
    /// Agent tags: with tags, the target's agents serve only the components
    /// named; without, they are a generic pool.
    pub tags: Vec<String>,
    pub adaptive: Option<Adaptive>,
    /// What one worker (agent) of this target offers, where the manifest says.
    pub worker: WorkerShape,
    /// `shared_fs:` (default true): the target's agents see the submit
    /// directory; false: declared inputs and outputs are staged (SPEC §4).
    #[serde(default = "shared_by_default")]
    pub shared_fs: bool,
    /// `storage: s3://bucket/prefix`: where staged files go instead of the
    /// broker (only with `shared_fs: false`).
    #[serde(default)]
    pub storage: Option<String>,
}

fn shared_by_default() -> bool {
    true
}

impl Target {
    /// True if this target's agents may run tasks of `component`.
    pub fn serves(&self, component: &str) -> bool {
        self.tags.is_empty() || self.tags.iter().any(|t| t == component)
    }
}

/// Bounds and tuning for the adaptive scaler; a tuning key left out takes
/// the scaler's default (the seed's: 0.8, 0.2, 120 s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adaptive {
    pub minimum: u32,
    pub maximum: u32,
    /// `scale_up_threshold` in thousandths (0.8 is 800): kept whole so a
    /// target stays `Eq`.
    #[serde(default)]
    pub scale_up_permille: Option<u32>,
    /// `scale_down_threshold` in thousandths.
    #[serde(default)]
    pub scale_down_permille: Option<u32>,
    /// `cooldown` (a duration, e.g. 30s or 2m).
    #[serde(default)]
    pub cooldown_ms: Option<u64>,
}

/// One worker of a target; `None` where the manifest does not say (a Slurm
/// node's size is the cluster's business unless `worker_memory` is given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerShape {
    pub cpus: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub gpus: Option<u32>,
}

/// The provider of a target and its own options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Provider {
    Local {
        /// cpus of each local agent; `None`: agents take their share of
        /// the host's cpus (what the broker's local provider does).
        threads_per_worker: Option<u32>,
        /// Kept for the seeds' Dask manifests; agents are always processes.
        processes: bool,
    },
    Slurm {
        queue: Option<String>,
        account: Option<String>,
        walltime_ms: Option<u64>,
        interface: Option<String>,
        qos: Option<String>,
        constraint: Option<String>,
        /// sbatch options such as `--exclusive`, one per `#SBATCH` line.
        extra_directives: Vec<String>,
        /// Shell lines run before `srun`, e.g. `module load apptainer`.
        setup: Vec<String>,
    },
    Aws {
        region: String,
        cluster_type: AwsClusterType,
        /// The agent image (Fargate) or the image agents pull (EC2).
        image: Option<String>,
        instance_type: Option<String>,
        subnet: Option<String>,
        security_groups: Vec<String>,
        ami: Option<String>,
        /// CPU units of a worker, 1024 = 1 vCPU, as AWS counts them.
        worker_cpu_units: Option<u32>,
        /// Memory of a worker in MiB, as AWS counts it.
        worker_mem_mib: Option<u32>,
        /// Another AWS API endpoint (`--endpoint-url`: a moto server, a
        /// private region); `None`: AWS's own.
        endpoint_url: Option<String>,
    },
    Gcp {
        project: Option<String>,
        zone: String,
        machine_type: Option<String>,
        image: Option<String>,
    },
    Kubernetes {
        namespace: String,
        image: Option<String>,
        context: Option<String>,
        service_account: Option<String>,
        kind: KubeKind,
    },
}

impl Provider {
    /// The name written in `provider:`.
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Local { .. } => "local",
            Provider::Slurm { .. } => "slurm",
            Provider::Aws { .. } => "aws",
            Provider::Gcp { .. } => "gcp",
            Provider::Kubernetes { .. } => "kubernetes",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AwsClusterType {
    Ec2,
    Fargate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeKind {
    Job,
    Deployment,
}

/// Which container runtime a target's agents use (`--runtime` of SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerPolicy {
    Auto,
    None,
    Apptainer,
    Singularity,
    Podman,
    Docker,
}

impl ContainerPolicy {
    pub const ALL: [(&'static str, ContainerPolicy); 6] = [
        ("auto", ContainerPolicy::Auto),
        ("none", ContainerPolicy::None),
        ("apptainer", ContainerPolicy::Apptainer),
        ("singularity", ContainerPolicy::Singularity),
        ("podman", ContainerPolicy::Podman),
        ("docker", ContainerPolicy::Docker),
    ];

    /// The name written in `containers:` (and in `--runtime`).
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("auto", |(n, _)| n)
    }
}

/// A worker profile; its name is the tag agents serve and tasks ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    pub image: Option<String>,
    /// Default 1.
    pub cpus: u32,
    /// `None`: no memory reservation.
    pub memory_bytes: Option<u64>,
    pub gpus: u32,
    /// Descriptive labels.
    pub tags: Vec<String>,
    /// Host path to container path, in the order written.
    pub mounts: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
}

impl Component {
    /// What one task of this component holds on an agent.
    pub fn resources(&self) -> Resources {
        Resources {
            cpus: self.cpus,
            memory_bytes: self.memory_bytes.unwrap_or(0),
            gpus: self.gpus,
            custom: Vec::new(),
        }
    }
}

/// A task name bound to a component, with its caching and retry policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskBinding {
    pub name: String,
    pub component: String,
    pub cache: bool,
    pub retries: u32,
    pub walltime_ms: Option<u64>,
    /// `memory: auto`, `cpus: auto`, `walltime: auto` (SPEC §11): sized per
    /// task by the advisor when it is confident, else by `fallback`.
    #[serde(default)]
    pub auto: AutoResources,
    /// What an `auto` quantity asks for when the advisor is not confident;
    /// unset: the component's value (and no walltime).
    #[serde(default)]
    pub fallback: AutoFallback,
}

/// Which quantities of a task binding the advisor sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoResources {
    pub memory: bool,
    pub cpus: bool,
    pub walltime: bool,
}

impl AutoResources {
    pub fn any(&self) -> bool {
        self.memory || self.cpus || self.walltime
    }
}

/// A binding's `fallback:` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoFallback {
    pub memory_bytes: Option<u64>,
    pub cpus: Option<u32>,
    pub walltime_ms: Option<u64>,
}
