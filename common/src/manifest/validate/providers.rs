//! Target options: those every provider takes (`containers`, `adaptive`)
//! and each provider's own, with the worker shape it implies.

use super::super::schema::*;
use super::super::tree::{Node, Value};
use super::super::{join, Pos};
use super::values::{positive, whole, M};
use super::{unknown_key, Ck, ADAPTIVE_KEYS, GPUS_MAX, WORKERS_MAX};
use crate::units::parse_size_bytes;
use crate::workflow::CPUS_MAX;

/// CPU values Fargate accepts for a task, in CPU units.
const FARGATE_CPU_UNITS: &[u32] = &[256, 512, 1024, 2048, 4096, 8192, 16384];

impl Ck<'_> {
    pub(super) fn containers(&mut self, m: &M) -> Option<ContainerPolicy> {
        let node = self.field(m, "containers")?;
        let path = join(&m.path, "containers");
        let no = matches!(node.value, Value::Bool(false))
            || matches!(
                node.text.to_ascii_lowercase().as_str(),
                "no" | "off" | "false"
            );
        if no && !node.unresolved {
            self.at(
                node,
                &path,
                format!("unknown container runtime {}", node.describe()),
                Some("write none to run without containers".to_string()),
            );
            return None;
        }
        self.choice(node, &path, "container runtime", &ContainerPolicy::ALL)
    }

    pub(super) fn adaptive(
        &mut self,
        node: &Node,
        path: &str,
        max_workers: Option<u32>,
    ) -> Option<Adaptive> {
        let m = self.map(
            node,
            path,
            Pos::default(),
            "e.g. adaptive: {minimum: 1, maximum: 10}".to_string(),
        )?;
        let budget = self.budget;
        self.keys(&m, ADAPTIVE_KEYS, |k| {
            unknown_key(budget, k, ADAPTIVE_KEYS, None)
        });
        self.require(&m, "maximum", "e.g. adaptive: {minimum: 1, maximum: 10}");
        let minimum = self.int_field(&m, "minimum", whole(WORKERS_MAX));
        let maximum = self.int_field(&m, "maximum", positive(WORKERS_MAX));
        if let (Some(min), Some(max)) = (minimum, maximum) {
            if min > max {
                if let Some(n) = self.field(&m, "minimum") {
                    self.at(
                        n,
                        &join(path, "minimum"),
                        format!("minimum {min} is more than maximum {max}"),
                        Some("lower minimum or raise maximum".to_string()),
                    );
                }
                return None;
            }
        }
        if let (Some(max), Some(workers)) = (maximum, max_workers) {
            if max > workers {
                if let Some(n) = self.field(&m, "maximum") {
                    self.at(
                        n,
                        &join(path, "maximum"),
                        format!("maximum {max} is more than max_workers {workers}"),
                        Some("raise max_workers or lower adaptive.maximum".to_string()),
                    );
                }
            }
        }
        let (scale_up_permille, scale_down_permille) = self.thresholds(&m);
        let cooldown_ms = self.duration_field(&m, "cooldown");
        Some(Adaptive {
            minimum: minimum.unwrap_or(0),
            maximum: maximum?,
            scale_up_permille,
            scale_down_permille,
            cooldown_ms,
        })
    }

    /// `scale_up_threshold` and `scale_down_threshold`: shares of the
    /// pilots' slots in (0, 1], the down one below the up one (the seed's
    /// defaults when left out: 0.8 and 0.2).
    fn thresholds(&mut self, m: &M) -> (Option<u32>, Option<u32>) {
        let up = self.fraction_field(m, "scale_up_threshold");
        let down = self.fraction_field(m, "scale_down_threshold");
        let (u, d) = (up.unwrap_or(800), down.unwrap_or(200));
        if d >= u && (up.is_some() || down.is_some()) {
            let key = if down.is_some() {
                "scale_down_threshold"
            } else {
                "scale_up_threshold"
            };
            if let Some(n) = self.field(m, key) {
                self.at(
                    n,
                    &join(&m.path, key),
                    format!(
                        "scale_down_threshold {} is not below scale_up_threshold {}",
                        d as f64 / 1000.0,
                        u as f64 / 1000.0
                    ),
                    Some("the scaler removes pilots below the down threshold and adds them above the up one; e.g. 0.2 and 0.8".to_string()),
                );
            }
            return (None, None);
        }
        (up, down)
    }

    /// A share written as a number in (0, 1] (e.g. 0.75), in thousandths.
    fn fraction_field(&mut self, m: &M, key: &str) -> Option<u32> {
        let node = self.field(m, key)?;
        if node.unresolved {
            return None;
        }
        let x = match &node.value {
            Value::Float(x) => Some(*x),
            Value::Int(n) => Some(*n as f64),
            _ => None,
        };
        match x {
            Some(x) if x > 0.0 && x <= 1.0 => Some((x * 1000.0).round() as u32),
            _ => {
                self.at(
                    node,
                    &join(&m.path, key),
                    format!("{key} must be a share of the pilots between 0 and 1"),
                    Some(format!("got {}; e.g. {key}: 0.8", node.describe())),
                );
                None
            }
        }
    }

    /// `worker_cpus`, `worker_memory` and `worker_gpus` of slurm, gcp and
    /// kubernetes targets.
    pub(super) fn worker_fields(&mut self, m: &M) -> WorkerShape {
        WorkerShape {
            cpus: self.int_field(m, "worker_cpus", positive(CPUS_MAX)),
            memory_bytes: self.size_field(m, "worker_memory"),
            gpus: self.int_field(m, "worker_gpus", whole(GPUS_MAX)),
        }
    }

    pub(super) fn local(&mut self, m: &M) -> (Provider, WorkerShape) {
        let threads = self.int_field(m, "threads_per_worker", positive(CPUS_MAX));
        let processes = self.bool_field(m, "processes").unwrap_or(true);
        let worker = WorkerShape {
            cpus: threads,
            ..WorkerShape::default()
        };
        let provider = Provider::Local {
            threads_per_worker: threads,
            processes,
        };
        (provider, worker)
    }

    pub(super) fn slurm(&mut self, m: &M) -> (Provider, WorkerShape) {
        let queue = self.line_field(m, "queue");
        let account = self.line_field(m, "account");
        let walltime_ms = self.duration_field(m, "walltime");
        let interface = self.line_field(m, "interface");
        let qos = self.line_field(m, "qos");
        let constraint = self.line_field(m, "constraint");
        let extra_directives = self.directives(m);
        let setup = self.setup(m);
        let worker = self.worker_fields(m);
        let provider = Provider::Slurm {
            queue,
            account,
            walltime_ms,
            interface,
            qos,
            constraint,
            extra_directives,
            setup,
        };
        (provider, worker)
    }

    /// `extra_directives`: sbatch options, each becomes an `#SBATCH` line.
    pub(super) fn directives(&mut self, m: &M) -> Vec<String> {
        let list = self.list_field(m, "extra_directives", "[--exclusive]");
        let Some(node) = self.field(m, "extra_directives") else {
            return list;
        };
        if let Value::Seq(items) = &node.value {
            for (i, item) in items.iter().enumerate() {
                let t = item.text.trim();
                if item.unresolved || t.is_empty() || t.starts_with('-') {
                    continue;
                }
                let hint = match t.strip_prefix("#SBATCH") {
                    Some(rest) => format!("write only the option: {}", rest.trim()),
                    None => "an sbatch option starts with -, e.g. --exclusive".to_string(),
                };
                self.at(
                    item,
                    &format!("{}.extra_directives[{i}]", m.path),
                    format!("invalid sbatch directive {t:?}"),
                    Some(hint),
                );
            }
        }
        list
    }

    /// `setup`: shell lines before `srun`, a list or one block of lines.
    pub(super) fn setup(&mut self, m: &M) -> Vec<String> {
        match self.field(m, "setup") {
            Some(node) if node.value == Value::Str => {
                node.text.lines().map(str::to_string).collect()
            }
            Some(_) => self.list_field(m, "setup", "[module load apptainer]"),
            None => Vec::new(),
        }
    }

    pub(super) fn aws(&mut self, m: &M) -> (Provider, WorkerShape) {
        self.require(m, "region", "e.g. region: us-east-1");
        self.require(m, "cluster_type", "valid: ec2, fargate");
        let region = self.field(m, "region").and_then(|node| {
            let path = join(&m.path, "region");
            let r = self.line(node, &path, "region")?;
            if !node.unresolved && !aws_region_like(&r) {
                self.at(
                    node,
                    &path,
                    format!("invalid region {r:?}"),
                    Some("e.g. region: us-east-1".to_string()),
                );
            }
            Some(r)
        });
        let cluster_type = self.field(m, "cluster_type").and_then(|node| {
            self.choice(
                node,
                &join(&m.path, "cluster_type"),
                "cluster_type",
                &[
                    ("ec2", AwsClusterType::Ec2),
                    ("fargate", AwsClusterType::Fargate),
                ],
            )
        });
        let image = self.line_field(m, "image");
        let instance_type = self.line_field(m, "instance_type");
        let subnet = self.line_field(m, "subnet");
        let security_groups = self.list_field(m, "security_groups", "[sg-0123456789abcdef0]");
        let ami = self.line_field(m, "ami");
        let endpoint_url = self.line_field(m, "endpoint_url");

        if cluster_type == Some(AwsClusterType::Fargate) {
            for key in ["instance_type", "ami"] {
                if let Some(e) = m.entry(key) {
                    self.at_key(
                        e,
                        &join(&m.path, key),
                        format!("{key} is for cluster_type: ec2"),
                        Some("fargate sizes workers with worker_cpu and worker_mem".to_string()),
                    );
                }
            }
        }

        let fargate = cluster_type == Some(AwsClusterType::Fargate);
        let worker_cpu = self.aws_worker_cpu(m, fargate);
        let worker_mem = self.aws_worker_mem(m);
        let worker = WorkerShape {
            cpus: worker_cpu.map(|u| (u / 1024).max(1)),
            memory_bytes: worker_mem.map(|mib| u64::from(mib) << 20),
            gpus: None,
        };
        let provider = Provider::Aws {
            region: region.unwrap_or_default(),
            cluster_type: cluster_type.unwrap_or(AwsClusterType::Fargate),
            image,
            instance_type,
            subnet,
            security_groups,
            ami,
            worker_cpu_units: worker_cpu,
            worker_mem_mib: worker_mem,
            endpoint_url,
        };
        (provider, worker)
    }

    /// `worker_cpu` in CPU units (1024 = 1 vCPU); fargate takes only its sizes.
    fn aws_worker_cpu(&mut self, m: &M, fargate: bool) -> Option<u32> {
        self.field(m, "worker_cpu").and_then(|node| {
            let path = join(&m.path, "worker_cpu");
            let units = self.int(node, &path, "worker_cpu", positive(1 << 20))?;
            if units < 128 {
                self.at(
                    node,
                    &path,
                    format!("worker_cpu {units} is less than 128 CPU units"),
                    Some(format!(
                        "worker_cpu counts CPU units, 1024 = 1 vCPU: write {} for {units} vCPUs",
                        u64::from(units) * 1024
                    )),
                );
                return None;
            }
            if fargate && !FARGATE_CPU_UNITS.contains(&units) {
                let valid: Vec<String> = FARGATE_CPU_UNITS.iter().map(u32::to_string).collect();
                self.at(
                    node,
                    &path,
                    format!("fargate has no worker_cpu {units}"),
                    Some(format!("valid: {}; 1024 = 1 vCPU", valid.join(", "))),
                );
                return None;
            }
            Some(units)
        })
    }

    /// `worker_mem` in MiB, as AWS counts it (a size with a unit is an error).
    fn aws_worker_mem(&mut self, m: &M) -> Option<u32> {
        self.field(m, "worker_mem").and_then(|node| {
            let path = join(&m.path, "worker_mem");
            if node.value == Value::Str && !node.unresolved {
                if let Ok(bytes) = parse_size_bytes(&node.text) {
                    self.at(
                        node,
                        &path,
                        "worker_mem counts MiB, as AWS does".to_string(),
                        Some(format!("write {} for {}", bytes >> 20, node.text.trim())),
                    );
                    return None;
                }
            }
            let mib = self.int(node, &path, "worker_mem", positive(u32::MAX))?;
            if mib < 512 {
                self.at(
                    node,
                    &path,
                    format!("worker_mem {mib} MiB is less than 512"),
                    Some(format!(
                        "worker_mem counts MiB: write {} for {mib}G",
                        u64::from(mib) * 1024
                    )),
                );
                return None;
            }
            Some(mib)
        })
    }

    pub(super) fn gcp(&mut self, m: &M) -> (Provider, WorkerShape) {
        self.require(m, "zone", "e.g. zone: us-central1-a");
        let project = self.line_field(m, "project");
        let zone = self.field(m, "zone").and_then(|node| {
            let path = join(&m.path, "zone");
            let z = self.line(node, &path, "zone")?;
            if !node.unresolved && !gcp_zone_like(&z) {
                self.at(
                    node,
                    &path,
                    format!("invalid zone {z:?}"),
                    Some("a zone is a region and a letter, e.g. us-central1-a".to_string()),
                );
            }
            Some(z)
        });
        let machine_type = self.line_field(m, "machine_type");
        let image = self.line_field(m, "image");
        let worker = self.worker_fields(m);
        let provider = Provider::Gcp {
            project,
            zone: zone.unwrap_or_default(),
            machine_type,
            image,
        };
        (provider, worker)
    }

    pub(super) fn kubernetes(&mut self, m: &M) -> (Provider, WorkerShape) {
        self.require(m, "namespace", "e.g. namespace: default");
        let namespace = self.field(m, "namespace").and_then(|node| {
            let path = join(&m.path, "namespace");
            let ns = self.line(node, &path, "namespace")?;
            if !node.unresolved && !dns_label(&ns) {
                self.at(
                    node,
                    &path,
                    format!("invalid namespace {ns:?}"),
                    Some(
                        "use at most 63 lowercase letters, digits and \"-\", e.g. demeter-prod"
                            .to_string(),
                    ),
                );
            }
            Some(ns)
        });
        let image = self.line_field(m, "image");
        let context = self.line_field(m, "context");
        let service_account = self.line_field(m, "service_account");
        let kind = self.field(m, "kind").and_then(|node| {
            self.choice(
                node,
                &join(&m.path, "kind"),
                "kind",
                &[("job", KubeKind::Job), ("deployment", KubeKind::Deployment)],
            )
        });
        let worker = self.worker_fields(m);
        let provider = Provider::Kubernetes {
            namespace: namespace.unwrap_or_default(),
            image,
            context,
            service_account,
            kind: kind.unwrap_or(KubeKind::Deployment),
        };
        (provider, worker)
    }
}

/// `us-east-1`, `ap-southeast-2`, `us-gov-west-1`.
fn aws_region_like(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `us-central1-a`, `europe-west4-b`.
fn gcp_zone_like(z: &str) -> bool {
    let parts: Vec<&str> = z.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.len() == 1 && p.bytes().all(|b| b.is_ascii_lowercase()))
}

/// A Kubernetes namespace: a DNS-1123 label.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
