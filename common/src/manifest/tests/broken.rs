//! Broken manifests and every error they must give, exactly: the one-line
//! form, the order, and a table of cases.

use super::*;

#[test]
fn errors_are_all_collected_sorted_and_one_per_line() {
    let yaml = y!(
        "version: 1",
        "project: {name: p}",
        "targets:",
        "  hpc: {provider: slurm, queu: batch, max_workers: 0}",
        "  aws: {provider: aws, cluster_type: fargate}",
        "components:",
        "  demeter: {memroy: 16G, cpus: \"4\"}",
        "tasks:",
        "  run: {component: demter, retries: -1}",
    );
    let err = load_manifest("scalable.yaml", yaml, &LoadOptions::new(&env)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "scalable.yaml:4:26: targets.hpc.queu: unknown key \"queu\" for provider slurm (did you mean \"queue\"?)\n\
         scalable.yaml:4:52: targets.hpc.max_workers: max_workers must be a positive integer (hint: use at least 1; to scale to zero, use adaptive: {minimum: 0, maximum: N})\n\
         scalable.yaml:5:3: targets.aws: missing key \"region\" (hint: e.g. region: us-east-1)\n\
         scalable.yaml:7:13: components.demeter.memroy: unknown key \"memroy\" (did you mean \"memory\"?)\n\
         scalable.yaml:7:32: components.demeter.cpus: cpus must be a positive integer (hint: write 4 without quotes)\n\
         scalable.yaml:9:20: tasks.run.component: unknown component \"demter\" (did you mean \"demeter\"?)\n\
         scalable.yaml:9:37: tasks.run.retries: retries must be a whole number (got -1)"
    );
    let first = &err.0[0];
    assert_eq!(
        (first.line, first.col, first.path.as_str()),
        (4, 26, "targets.hpc.queu")
    );
    assert_eq!(first.what, "unknown key \"queu\" for provider slurm");
    assert_eq!(
        first.hint.as_ref().map(crate::located::Hint::text),
        Some("did you mean \"queue\"?")
    );
}

/// A broken manifest and every error it must give, exactly.
struct Case {
    name: &'static str,
    yaml: &'static str,
    target: Option<&'static str>,
    overlays: &'static [&'static str],
    expect: &'static [&'static str],
}

const fn case(name: &'static str, yaml: &'static str, expect: &'static [&'static str]) -> Case {
    Case {
        name,
        yaml,
        target: None,
        overlays: &[],
        expect,
    }
}

const fn with_target(
    name: &'static str,
    target: &'static str,
    yaml: &'static str,
    expect: &'static [&'static str],
) -> Case {
    Case {
        name,
        yaml,
        target: Some(target),
        overlays: &[],
        expect,
    }
}

const fn with_overlay(
    name: &'static str,
    overlay: &'static [&'static str],
    yaml: &'static str,
    expect: &'static [&'static str],
) -> Case {
    Case {
        name,
        yaml,
        target: None,
        overlays: overlay,
        expect,
    }
}

const BROKEN: &[Case] = &[
    // --- the top level and project ---
    case(
        "top-level typo",
        y!("version: 1", "project: {name: p}", "targts:", "  local: {provider: local}"),
        &[
            "scalable.yaml:1:1: missing key \"targets\" (hint: e.g. targets: {local: {provider: local}})",
            "scalable.yaml:3:1: targts: unknown key \"targts\" (did you mean \"targets\"?)",
        ],
    ),
    case(
        "jobs at the top level",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "jobs: []"),
        &["scalable.yaml:4:1: jobs: unknown key \"jobs\" (hint: jobs belong in the workflow: section (workflow: {workflow: NAME, jobs: [...]}))"],
    ),
    case(
        "unsupported version",
        y!("version: 2", "project: {name: p}", "targets: {local: {provider: local}}"),
        &["scalable.yaml:1:10: version: unsupported version 2 (hint: this scalable reads version: 1)"],
    ),
    case(
        "quoted version",
        y!("version: \"1\"", "project: {name: p}", "targets: {local: {provider: local}}"),
        &["scalable.yaml:1:10: version: version must be 1 (hint: write 1 without quotes)"],
    ),
    case(
        "no version, no project",
        y!("targets: {local: {provider: local}}"),
        &[
            "scalable.yaml:1:1: missing key \"version\" (hint: start the manifest with version: 1)",
            "scalable.yaml:1:1: missing key \"project\" (hint: e.g. project: {name: demeter-lulcc})",
        ],
    ),
    case(
        "project as a string",
        y!("version: 1", "project: demo", "targets: {local: {provider: local}}"),
        &["scalable.yaml:2:10: project: expected a mapping, got \"demo\" (hint: write project: {name: demo})"],
    ),
    case(
        "empty project name",
        y!("version: 1", "project: {name: \"\"}", "targets: {local: {provider: local}}"),
        &["scalable.yaml:2:17: project.name: project name is empty (hint: give it a name, e.g. demeter-lulcc)"],
    ),
    case(
        "project name with a space",
        y!("version: 1", "project: {name: my project}", "targets: {local: {provider: local}}"),
        &["scalable.yaml:2:17: project.name: invalid project name \"my project\" (hint: use letters, digits, \"_\", \".\" and \"-\")"],
    ),
    case(
        "project key typo",
        y!("version: 1", "project: {nmae: p}", "targets: {local: {provider: local}}"),
        &[
            "scalable.yaml:2:10: project: missing key \"name\" (hint: e.g. name: demeter-lulcc)",
            "scalable.yaml:2:11: project.nmae: unknown key \"nmae\" (did you mean \"name\"?)",
        ],
    ),
    case(
        "no targets",
        y!("version: 1", "project: {name: p}", "targets: {}"),
        &["scalable.yaml:3:10: targets: no targets (hint: add one, e.g. local: {provider: local})"],
    ),
    case(
        "targets as a list",
        y!("version: 1", "project: {name: p}", "targets: [local]"),
        &["scalable.yaml:3:10: targets: expected a mapping, got a list (hint: e.g. targets: {local: {provider: local}})"],
    ),
    case(
        "manifest is a list",
        y!("- version: 1"),
        &["scalable.yaml:1:1: a manifest is a mapping, got a list (hint: start with version: 1)"],
    ),
    // --- targets and providers ---
    case(
        "provider typo",
        y!("version: 1", "project: {name: p}", "targets:", "  hpc: {provider: slurn, queue: batch}"),
        &["scalable.yaml:4:19: targets.hpc.provider: unknown provider \"slurn\" (did you mean \"slurm\"?)"],
    ),
    case(
        "unknown provider",
        y!("version: 1", "project: {name: p}", "targets:", "  hpc: {provider: pbs}"),
        &["scalable.yaml:4:19: targets.hpc.provider: unknown provider \"pbs\" (valid: local, slurm, aws, gcp, kubernetes)"],
    ),
    case(
        "missing provider",
        y!("version: 1", "project: {name: p}", "targets:", "  hpc: {queue: batch, qeue: x}"),
        &[
            "scalable.yaml:4:3: targets.hpc: missing key \"provider\" (valid: local, slurm, aws, gcp, kubernetes)",
            "scalable.yaml:4:23: targets.hpc.qeue: unknown key \"qeue\" (did you mean \"queue\"?)",
        ],
    ),
    case(
        "target key typo",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local, max_worker: 4}"),
        &["scalable.yaml:4:28: targets.local.max_worker: unknown key \"max_worker\" for provider local (did you mean \"max_workers\"?)"],
    ),
    case(
        "slurm key on an aws target",
        y!(
            "version: 1",
            "project: {name: p}",
            "targets:",
            "  aws:",
            "    provider: aws",
            "    region: us-east-1",
            "    cluster_type: fargate",
            "    queue: batch",
        ),
        &["scalable.yaml:8:5: targets.aws.queue: unknown key \"queue\" for provider aws (valid: region, cluster_type, image, instance_type, subnet, security_groups, ami, worker_cpu, worker_mem, endpoint_url, provider, max_workers, containers, tags, adaptive, shared_fs, storage)"],
    ),
    case(
        "slurm partition is called queue",
        y!("version: 1", "project: {name: p}", "targets:", "  hpc:", "    provider: slurm", "    partition: batch"),
        &["scalable.yaml:6:5: targets.hpc.partition: unknown key \"partition\" for provider slurm (did you mean \"queue\"?)"],
    ),
    case(
        "aws without region",
        y!("version: 1", "project: {name: p}", "targets:", "  aws: {provider: aws, cluster_type: ec2}"),
        &["scalable.yaml:4:3: targets.aws: missing key \"region\" (hint: e.g. region: us-east-1)"],
    ),
    case(
        "aws region without its number",
        y!("version: 1", "project: {name: p}", "targets:", "  aws: {provider: aws, region: us-east, cluster_type: fargate}"),
        &["scalable.yaml:4:32: targets.aws.region: invalid region \"us-east\" (hint: e.g. region: us-east-1)"],
    ),
    case(
        "unknown cluster_type",
        y!("version: 1", "project: {name: p}", "targets:", "  aws: {provider: aws, region: us-east-1, cluster_type: eks}"),
        &["scalable.yaml:4:57: targets.aws.cluster_type: unknown cluster_type \"eks\" (valid: ec2, fargate)"],
    ),
    case(
        "fargate cpu that fargate does not have",
        y!("version: 1", "project: {name: p}", "targets:", "  aws: {provider: aws, region: us-east-1, cluster_type: fargate, worker_cpu: 3000}"),
        &["scalable.yaml:4:78: targets.aws.worker_cpu: fargate has no worker_cpu 3000 (valid: 256, 512, 1024, 2048, 4096, 8192, 16384; 1024 = 1 vCPU)"],
    ),
    case(
        "worker_cpu in vCPUs",
        y!("version: 1", "project: {name: p}", "targets:", "  aws: {provider: aws, region: us-east-1, cluster_type: ec2, worker_cpu: 4}"),
        &["scalable.yaml:4:74: targets.aws.worker_cpu: worker_cpu 4 is less than 128 CPU units (hint: worker_cpu counts CPU units, 1024 = 1 vCPU: write 4096 for 4 vCPUs)"],
    ),
    case(
        "worker_mem as a size",
        y!("version: 1", "project: {name: p}", "targets:", "  aws: {provider: aws, region: us-east-1, cluster_type: ec2, worker_mem: 16G}"),
        &["scalable.yaml:4:74: targets.aws.worker_mem: worker_mem counts MiB, as AWS does (hint: write 16384 for 16G)"],
    ),
    case(
        "instance_type on fargate",
        y!("version: 1", "project: {name: p}", "targets:", "  aws: {provider: aws, region: us-east-1, cluster_type: fargate, instance_type: m5.large}"),
        &["scalable.yaml:4:66: targets.aws.instance_type: instance_type is for cluster_type: ec2 (hint: fargate sizes workers with worker_cpu and worker_mem)"],
    ),
    case(
        "kubernetes without namespace",
        y!("version: 1", "project: {name: p}", "targets:", "  k8s: {provider: kubernetes, kind: pod}"),
        &[
            "scalable.yaml:4:3: targets.k8s: missing key \"namespace\" (hint: e.g. namespace: default)",
            "scalable.yaml:4:37: targets.k8s.kind: unknown kind \"pod\" (valid: job, deployment)",
        ],
    ),
    case(
        "kubernetes namespace with capitals",
        y!("version: 1", "project: {name: p}", "targets:", "  k8s: {provider: kubernetes, namespace: Demeter_Prod}"),
        &["scalable.yaml:4:42: targets.k8s.namespace: invalid namespace \"Demeter_Prod\" (hint: use at most 63 lowercase letters, digits and \"-\", e.g. demeter-prod)"],
    ),
    case(
        "gcp region where a zone belongs",
        y!("version: 1", "project: {name: p}", "targets:", "  gcp: {provider: gcp, region: us-central1}"),
        &[
            "scalable.yaml:4:3: targets.gcp: missing key \"zone\" (hint: e.g. zone: us-central1-a)",
            "scalable.yaml:4:24: targets.gcp.region: unknown key \"region\" for provider gcp (did you mean \"zone\"?)",
        ],
    ),
    case(
        "gcp zone without its letter",
        y!("version: 1", "project: {name: p}", "targets:", "  gcp: {provider: gcp, zone: us-central1}"),
        &["scalable.yaml:4:30: targets.gcp.zone: invalid zone \"us-central1\" (hint: a zone is a region and a letter, e.g. us-central1-a)"],
    ),
    case(
        "max_workers 0",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local, max_workers: 0}"),
        &["scalable.yaml:4:41: targets.local.max_workers: max_workers must be a positive integer (hint: use at least 1; to scale to zero, use adaptive: {minimum: 0, maximum: N})"],
    ),
    case(
        "max_workers quoted (the seed's troubleshooting case)",
        y!("version: 1", "project: {name: p}", "targets:", "  local:", "    provider: local", "    max_workers: \"4\""),
        &["scalable.yaml:6:18: targets.local.max_workers: max_workers must be a positive integer (hint: write 4 without quotes)"],
    ),
    case(
        "max_workers negative",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local, max_workers: -1}"),
        &["scalable.yaml:4:41: targets.local.max_workers: max_workers must be a positive integer (got -1)"],
    ),
    case(
        "max_workers a word",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local, max_workers: four}"),
        &["scalable.yaml:4:41: targets.local.max_workers: max_workers must be a positive integer (got \"four\")"],
    ),
    case(
        "max_workers over the limit",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local, max_workers: 1000000}"),
        &["scalable.yaml:4:41: targets.local.max_workers: max_workers 1000000 is more than the limit of 100000"],
    ),
    case(
        "threads_per_worker a fraction",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local, threads_per_worker: 2.5}"),
        &["scalable.yaml:4:48: targets.local.threads_per_worker: threads_per_worker must be a positive integer (got 2.5)"],
    ),
    case(
        "processes yes",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local, processes: yes}"),
        &["scalable.yaml:4:39: targets.local.processes: processes must be true or false (got \"yes\"; write true or false)"],
    ),
    case(
        "container runtime typo",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local, containers: dockr}"),
        &["scalable.yaml:4:40: targets.local.containers: unknown container runtime \"dockr\" (did you mean \"docker\"?)"],
    ),
    case(
        "containers: no",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local, containers: no}"),
        &["scalable.yaml:4:40: targets.local.containers: unknown container runtime \"no\" (hint: write none to run without containers)"],
    ),
    case(
        "adaptive minimum above maximum",
        y!("version: 1", "project: {name: p}", "targets:", "  k8s:", "    provider: kubernetes", "    namespace: x", "    adaptive: {minimum: 5, maximum: 2}"),
        &["scalable.yaml:7:25: targets.k8s.adaptive.minimum: minimum 5 is more than maximum 2 (hint: lower minimum or raise maximum)"],
    ),
    case(
        "adaptive without maximum",
        y!("version: 1", "project: {name: p}", "targets:", "  k8s:", "    provider: kubernetes", "    namespace: x", "    adaptive: {minimum: 5, maxmum: 9}"),
        &[
            "scalable.yaml:7:15: targets.k8s.adaptive: missing key \"maximum\" (hint: e.g. adaptive: {minimum: 1, maximum: 10})",
            "scalable.yaml:7:28: targets.k8s.adaptive.maxmum: unknown key \"maxmum\" (did you mean \"maximum\"?)",
        ],
    ),
    case(
        "adaptive maximum above max_workers",
        y!("version: 1", "project: {name: p}", "targets:", "  k8s:", "    provider: kubernetes", "    namespace: x", "    max_workers: 10", "    adaptive: {minimum: 1, maximum: 20}"),
        &["scalable.yaml:8:37: targets.k8s.adaptive.maximum: maximum 20 is more than max_workers 10 (hint: raise max_workers or lower adaptive.maximum)"],
    ),
    case(
        "adaptive threshold out of range",
        y!("version: 1", "project: {name: p}", "targets:", "  k8s:", "    provider: kubernetes", "    namespace: x", "    adaptive: {maximum: 4, scale_up_threshold: 80}"),
        &["scalable.yaml:7:48: targets.k8s.adaptive.scale_up_threshold: scale_up_threshold must be a share of the pilots between 0 and 1 (got 80; e.g. scale_up_threshold: 0.8)"],
    ),
    case(
        "adaptive thresholds crossed",
        y!("version: 1", "project: {name: p}", "targets:", "  k8s:", "    provider: kubernetes", "    namespace: x", "    adaptive: {maximum: 4, scale_up_threshold: 0.3, scale_down_threshold: 0.5}"),
        &["scalable.yaml:7:75: targets.k8s.adaptive.scale_down_threshold: scale_down_threshold 0.5 is not below scale_up_threshold 0.3 (hint: the scaler removes pilots below the down threshold and adds them above the up one; e.g. 0.2 and 0.8)"],
    ),
    case(
        "adaptive cooldown without a unit",
        y!("version: 1", "project: {name: p}", "targets:", "  k8s:", "    provider: kubernetes", "    namespace: x", "    adaptive: {maximum: 4, cooldown: 30}"),
        &["scalable.yaml:7:38: targets.k8s.adaptive.cooldown: cooldown 30 has no unit (expected e.g. \"04:00:00\", 90m, 2h or 30s; a bare number would be seconds)"],
    ),
    case(
        "walltime that is not a duration",
        y!("version: 1", "project: {name: p}", "targets:", "  hpc: {provider: slurm, walltime: soon}"),
        &["scalable.yaml:4:36: targets.hpc.walltime: invalid duration \"soon\" (expected e.g. \"04:00:00\", 90m, 2h or 30s)"],
    ),
    case(
        "walltime without a unit",
        y!("version: 1", "project: {name: p}", "targets:", "  hpc: {provider: slurm, walltime: 4}"),
        &["scalable.yaml:4:36: targets.hpc.walltime: walltime 4 has no unit (expected e.g. \"04:00:00\", 90m, 2h or 30s; a bare number would be seconds)"],
    ),
    case(
        "sbatch directive with its prefix",
        y!("version: 1", "project: {name: p}", "targets:", "  hpc: {provider: slurm, extra_directives: [\"#SBATCH --exclusive\"]}"),
        &["scalable.yaml:4:45: targets.hpc.extra_directives[0]: invalid sbatch directive \"#SBATCH --exclusive\" (hint: write only the option: --exclusive)"],
    ),
    case(
        "a line break in a queue name",
        y!("version: 1", "project: {name: p}", "targets:", "  hpc: {provider: slurm, queue: \"batch\\n#SBATCH --x\"}"),
        &["scalable.yaml:4:33: targets.hpc.queue: queue must be one line"],
    ),
    case(
        "a key without a value",
        y!("version: 1", "project: {name: p}", "targets:", "  hpc:", "    provider: slurm", "    queue:"),
        &["scalable.yaml:6:5: targets.hpc.queue: queue has no value (hint: give a value or remove the key)"],
    ),
    case(
        "target name with a space",
        y!("version: 1", "project: {name: p}", "targets:", "  my target: {provider: local}"),
        &["scalable.yaml:4:3: targets[\"my target\"]: invalid target name \"my target\" (hint: use letters, digits, \"_\", \".\" and \"-\")"],
    ),
    case(
        "target tags not a list",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local, tags: postprocess}"),
        &["scalable.yaml:4:34: targets.local.tags: expected a list, got \"postprocess\" (hint: write tags: [postprocess])"],
    ),
    // --- components ---
    case(
        "bad size",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter:", "    memory: 16X"),
        &["scalable.yaml:6:13: components.demeter.memory: invalid size \"16X\" (expected e.g. 512M, 16G or 1.5T)"],
    ),
    case(
        "size without a unit",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter:", "    memory: 16"),
        &["scalable.yaml:6:13: components.demeter.memory: memory 16 has no unit (expected e.g. 512M, 16G or 1.5T; a bare number would be bytes)"],
    ),
    case(
        "size zero",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter: {memory: 0G}"),
        &["scalable.yaml:5:21: components.demeter.memory: memory must be more than 0 (hint: leave it out for no limit)"],
    ),
    case(
        "negative size",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter: {memory: -16G}"),
        &["scalable.yaml:5:21: components.demeter.memory: invalid size \"-16G\" (expected e.g. 512M, 16G or 1.5T)"],
    ),
    case(
        "cpus zero",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter: {cpus: 0}"),
        &["scalable.yaml:5:19: components.demeter.cpus: cpus must be a positive integer (got 0)"],
    ),
    case(
        "cpus quoted",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter: {cpus: \"4\"}"),
        &["scalable.yaml:5:19: components.demeter.cpus: cpus must be a positive integer (hint: write 4 without quotes)"],
    ),
    case(
        "gpus negative",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter: {gpus: -1}"),
        &["scalable.yaml:5:19: components.demeter.gpus: gpus must be a whole number (got -1)"],
    ),
    case(
        "tags not a list",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter: {tags: lulcc}"),
        &["scalable.yaml:5:19: components.demeter.tags: expected a list, got \"lulcc\" (hint: write tags: [lulcc])"],
    ),
    case(
        "mounts not a map",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter:", "    mounts: [\"./data:/data\"]"),
        &["scalable.yaml:6:13: components.demeter.mounts: expected a mapping, got a list (hint: e.g. mounts: {./demeter_data: /data})"],
    ),
    case(
        "mount to a relative path",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter:", "    mounts: {./data: data}"),
        &["scalable.yaml:6:22: components.demeter.mounts[\"./data\"]: container path \"data\" must be absolute (hint: e.g. /data)"],
    ),
    case(
        "env name starting with a digit",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter:", "    env: {1X: y}"),
        &["scalable.yaml:6:11: components.demeter.env.1X: invalid environment variable name \"1X\" (hint: use letters, digits and \"_\", not starting with a digit)"],
    ),
    case(
        "env value a list",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter:", "    env: {A: [1, 2]}"),
        &["scalable.yaml:6:14: components.demeter.env.A: expected a string, got a list"],
    ),
    case(
        "component key typo",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter:", "    memroy: 16G"),
        &["scalable.yaml:6:5: components.demeter.memroy: unknown key \"memroy\" (did you mean \"memory\"?)"],
    ),
    case(
        "component mem for memory",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter:", "    ram: 16G"),
        &["scalable.yaml:6:5: components.demeter.ram: unknown key \"ram\" (did you mean \"memory\"?)"],
    ),
    case(
        "image with a space",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components:", "  demeter: {image: \"ghcr.io/x y\"}"),
        &["scalable.yaml:5:20: components.demeter.image: invalid image \"ghcr.io/x y\" (hint: an image has no spaces, e.g. ghcr.io/jgcri/demeter:2.0.1)"],
    ),
    // --- tasks ---
    case(
        "task bound to an unknown component",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components: {demeter: {cpus: 1}}", "tasks:", "  run: {component: demter}"),
        &["scalable.yaml:6:20: tasks.run.component: unknown component \"demter\" (did you mean \"demeter\"?)"],
    ),
    case(
        "task bound to a component when there are none",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "tasks:", "  run: {component: demeter}"),
        &["scalable.yaml:5:20: tasks.run.component: unknown component \"demeter\" (hint: define it under components:)"],
    ),
    case(
        "task without component",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components: {demeter: {cpus: 1}}", "tasks:", "  run: {retries: 1}"),
        &["scalable.yaml:6:3: tasks.run: missing key \"component\" (hint: name the component that runs it)"],
    ),
    case(
        "task as a string",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components: {demeter: {cpus: 1}}", "tasks:", "  run: demeter"),
        &["scalable.yaml:6:8: tasks.run: expected a mapping, got \"demeter\" (hint: write run: {component: demeter})"],
    ),
    case(
        "retries over the limit",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components: {demeter: {cpus: 1}}", "tasks:", "  run: {component: demeter, retries: 101}"),
        &["scalable.yaml:6:38: tasks.run.retries: retries 101 is more than the limit of 100"],
    ),
    case(
        "cache yes",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components: {demeter: {cpus: 1}}", "tasks:", "  run: {component: demeter, cache: \"true\"}"),
        &["scalable.yaml:6:36: tasks.run.cache: cache must be true or false (hint: write true without quotes)"],
    ),
    case(
        "task retry for retries",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components: {demeter: {cpus: 1}}", "tasks:", "  run: {component: demeter, max_retries: 2}"),
        &["scalable.yaml:6:29: tasks.run.max_retries: unknown key \"max_retries\" (did you mean \"retries\"?)"],
    ),
    // --- YAML-level mistakes ---
    case(
        "duplicate target",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local}", "  local: {provider: local}"),
        &["scalable.yaml:5:3: targets: duplicate key \"local\" (hint: each key may appear once; the first is at line 4)"],
    ),
    case(
        "duplicate key in a target",
        y!("version: 1", "project: {name: p}", "targets:", "  local:", "    provider: local", "    max_workers: 2", "    max_workers: 3"),
        &["scalable.yaml:7:5: targets.local: duplicate key \"max_workers\" (hint: each key may appear once; the first is at line 6)"],
    ),
    case(
        "broken YAML",
        y!("version: 1", "project: {name: p}", "targets: ["),
        &["scalable.yaml:3:10: unclosed bracket '['"],
    ),
    case(
        "two documents",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "---", "version: 1"),
        &["scalable.yaml:5:1: a manifest is one YAML document (hint: remove the --- line that starts a second one)"],
    ),
    case(
        "a list as a key",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "[a]: b"),
        &["scalable.yaml:4:1: a key must be a name, not a list or mapping (hint: write key: value)"],
    ),
    // --- variables ---
    case(
        "unset variable",
        y!("version: 1", "project: {name: p}", "targets:", "  aws: {provider: aws, region: us-east-1, cluster_type: fargate, image: \"${ECR_IMAGE}\"}"),
        &["scalable.yaml:4:73: targets.aws.image: environment variable ECR_IMAGE is not set (hint: export it, or write ${ECR_IMAGE:-default})"],
    ),
    case(
        "unterminated variable",
        y!("version: 1", "project: {name: p}", "targets:", "  aws: {provider: aws, region: us-east-1, cluster_type: fargate, image: \"${ECR_IMAGE\"}"),
        &["scalable.yaml:4:73: targets.aws.image: unterminated ${ (hint: close it with }, or write $$ for a literal $)"],
    ),
    case(
        "invalid variable name",
        y!("version: 1", "project: {name: p}", "targets:", "  hpc: {provider: slurm, queue: \"${1X}\"}"),
        &["scalable.yaml:4:33: targets.hpc.queue: invalid variable ${1X} (hint: write ${NAME} or ${NAME:-default}; names are letters, digits and _)"],
    ),
    // --- cross-checks ---
    with_target(
        "image on a target without containers",
        "local",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local, containers: none}", "components:", "  demeter: {image: ghcr.io/jgcri/demeter:2.0.1}"),
        &["scalable.yaml:6:20: components.demeter.image: target \"local\" has containers: none, so it cannot run images (hint: set containers: auto on targets.local, or remove the image)"],
    ),
    case(
        "image when no target runs containers",
        y!("version: 1", "project: {name: p}", "targets:", "  a: {provider: local, containers: none}", "  b: {provider: local, containers: none}", "components:", "  demeter: {image: ghcr.io/jgcri/demeter:2.0.1}"),
        &["scalable.yaml:7:20: components.demeter.image: every target that serves \"demeter\" has containers: none, so none can run images (hint: set containers: auto on one of them, or remove the image)"],
    ),
    with_target(
        "component larger than the target's workers",
        "aws",
        y!("version: 1", "project: {name: p}", "targets:", "  aws: {provider: aws, region: us-east-1, cluster_type: fargate, worker_cpu: 4096, worker_mem: 16384}", "components:", "  demeter:", "    cpus: 8", "    memory: 64G"),
        &[
            "scalable.yaml:7:11: components.demeter.cpus: 8 cpus are more than any worker of target \"aws\" offers (4) (hint: raise targets.aws.worker_cpu or lower the cpus)",
            "scalable.yaml:8:13: components.demeter.memory: 64G is more than any worker of target \"aws\" offers (16G) (hint: raise targets.aws.worker_mem or lower the memory)",
        ],
    ),
    case(
        "component larger than every target's workers",
        y!("version: 1", "project: {name: p}", "targets:", "  small: {provider: local, threads_per_worker: 2}", "  big: {provider: slurm, worker_cpus: 3, worker_gpus: 0}", "components:", "  demeter: {cpus: 4, gpus: 1}"),
        &["scalable.yaml:7:19: components.demeter.cpus: 4 cpus are more than any target's workers offer (the most is 3, on target \"big\") (hint: raise targets.big.worker_cpus or lower the cpus)"],
    ),
    with_target(
        "gpus the target's workers do not have",
        "big",
        y!("version: 1", "project: {name: p}", "targets:", "  small: {provider: local, threads_per_worker: 2}", "  big: {provider: slurm, worker_memory: 64G, worker_gpus: 0}", "components:", "  demeter: {cpus: 4, memory: 65G, gpus: 1}"),
        &[
            "scalable.yaml:7:30: components.demeter.memory: 65G is more than any worker of target \"big\" offers (64G) (hint: raise targets.big.worker_memory or lower the memory)",
            "scalable.yaml:7:41: components.demeter.gpus: 1 gpu is more than any worker of target \"big\" offers (0) (hint: raise targets.big.worker_gpus or lower the gpus)",
        ],
    ),
    case(
        "component that no target serves",
        y!("version: 1", "project: {name: p}", "targets:", "  local: {provider: local, tags: [other]}", "components:", "  demeter: {cpus: 1}"),
        &["scalable.yaml:6:3: components.demeter: no target serves component \"demeter\" (hint: every target has tags: add demeter to the tags of one)"],
    ),
    with_target(
        "unknown --target",
        "lcoal",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}, hpc: {provider: slurm}}"),
        &["scalable.yaml: targets: unknown target \"lcoal\" (did you mean \"local\"? targets are: local, hpc)"],
    ),
    // --- overlays ---
    with_overlay(
        "unknown --overlay",
        &["fix-om"],
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "overlays:", "  fix-oom: {}", "  big: {}"),
        &["scalable.yaml: overlays: unknown overlay \"fix-om\" (did you mean \"fix-oom\"? overlays are: fix-oom, big)"],
    ),
    case(
        "overlay with a misspelt key",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components: {demeter: {cpus: 1}}", "overlays:", "  fix-oom:", "    components:", "      demeter: {memroy: 24G}"),
        &["scalable.yaml:8:17: overlays.fix-oom.components.demeter.memroy: unknown key \"memroy\" (did you mean \"memory\"?)"],
    ),
    case(
        "overlay naming an unknown component",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components: {demeter: {cpus: 1}}", "overlays:", "  fix-oom:", "    components:", "      demter: {memory: 24G}"),
        &["scalable.yaml:8:7: overlays.fix-oom.components.demter: unknown component \"demter\" (did you mean \"demeter\"?)"],
    ),
    with_overlay(
        "applied overlay with a bad size",
        &["fix-oom"],
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components: {demeter: {cpus: 1}}", "overlays:", "  fix-oom:", "    components:", "      demeter: {memory: 24X}"),
        &["scalable.yaml:8:25: overlays.fix-oom.components.demeter.memory: invalid size \"24X\" (expected e.g. 512M, 16G or 1.5T)"],
    ),
    case(
        "overlay changing the version",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "overlays:", "  fix-oom:", "    version: 2"),
        &["scalable.yaml:6:5: overlays.fix-oom.version: unknown key \"version\" (hint: an overlay can change project, targets, components, tasks and workflow)"],
    ),
    case(
        "overlay with a key of another provider",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "overlays:", "  more:", "    targets:", "      local: {queue: x}"),
        &["scalable.yaml:7:15: overlays.more.targets.local.queue: unknown key \"queue\" for provider local (valid: threads_per_worker, processes, provider, max_workers, containers, tags, adaptive, shared_fs, storage)"],
    ),
    case(
        "overlay that is not a mapping",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "overlays:", "  fix-oom: 24G"),
        &["scalable.yaml:5:12: overlays.fix-oom: expected a mapping, got \"24G\" (hint: e.g. fix-oom: {components: {demeter: {memory: 24G}}})"],
    ),
    // --- the workflow section ---
    case(
        "workflow section key typo",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "workflow:", "  workflow: w", "  jobs:", "    - name: a", "      command: [x]", "      retrys: 3"),
        &["scalable.yaml:9:7: workflow.jobs[0].retrys: unknown key \"retrys\" (did you mean \"retries\"?)"],
    ),
    case(
        "workflow job bound to an unknown task",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "components: {demeter: {cpus: 1}}", "tasks: {run: {component: demeter}}", "workflow:", "  workflow: w", "  jobs:", "    - name: a", "      task: runn", "      command: [x]"),
        &["scalable.yaml:10:13: workflow.jobs[0].task: unknown task \"runn\" (did you mean \"run\"?)"],
    ),
    case(
        "workflow with a cycle",
        y!("version: 1", "project: {name: p}", "targets: {local: {provider: local}}", "workflow:", "  workflow: w", "  jobs:", "    - {name: a, command: [x], after: [b]}", "    - {name: b, command: [x], after: [a]}"),
        &["scalable.yaml:7:39: workflow.jobs[0].after[0]: cycle: a -> b -> a (hint: remove one of these after entries)"],
    ),
];

#[test]
fn broken_manifests_give_exact_errors() {
    assert!(BROKEN.len() >= 40, "the table has {} rows", BROKEN.len());
    let mut failures = Vec::new();
    for c in BROKEN {
        let got = match load(c.yaml, c.target, c.overlays) {
            Ok(_) => vec!["<loaded without errors>".to_string()],
            Err(e) => e,
        };
        if got != c.expect {
            failures.push(format!(
                "{}:\n  expected:\n    {}\n  got:\n    {}",
                c.name,
                c.expect.join("\n    "),
                got.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
