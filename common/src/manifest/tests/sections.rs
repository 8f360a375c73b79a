//! Sections read into types: the `workflow:` section as a workflow file,
//! and every provider option.

use super::*;

#[test]
fn the_workflow_section_is_a_workflow_file() {
    let yaml = y!(
        "version: 1",
        "project: {name: p}",
        "targets: {local: {provider: local}}",
        "components: {demeter: {cpus: 1}}",
        "tasks: {run: {component: demeter}}",
        "workflow:",
        "  workflow: demeter-ssp",
        "  jobs:",
        "    - name: downscale",
        "      task: run",
        "      command: [sh, -c, \"echo ${HOME} {{ item }}\"]",
        "      foreach: [ssp1, 2]",
        "    - name: aggregate",
        "      command: [python, aggregate.py]",
        "      after: downscale",
        "      resources: {memory: 8G}",
    );
    let m = ok(yaml, None, &[]);
    let wf = m.workflow.unwrap();
    assert_eq!(wf.name, "demeter-ssp");
    assert_eq!(wf.jobs.len(), 2);
    // `${HOME}` belongs to the task's shell, not to the manifest.
    assert_eq!(wf.jobs[0].command[2], "echo ${HOME} {{ item }}");
    assert_eq!(
        wf.jobs[0].items,
        crate::workflow::Items::List(vec![
            crate::workflow::Item::Str("ssp1".into()),
            crate::workflow::Item::Int(2)
        ])
    );
    assert_eq!(wf.jobs[0].task.as_deref(), Some("run"));
    assert_eq!(wf.jobs[1].after, ["downscale"]);
    assert_eq!(wf.jobs[1].resources.memory_bytes, Some(8 * GIB));
}

#[test]
fn every_provider_option_is_read() {
    let yaml = y!(
        "version: 1",
        "project: {name: p}",
        "targets:",
        "  hpc:",
        "    provider: slurm",
        "    qos: high",
        "    constraint: haswell",
        "    extra_directives: [--exclusive, \"--mail-type=END\"]",
        "    setup: |",
        "      module load apptainer",
        "      export X=1",
        "    worker_cpus: 32",
        "    worker_memory: 128G",
        "    worker_gpus: 4",
        "    containers: apptainer",
        "    tags: [demeter]",
        "  ec2:",
        "    provider: aws",
        "    region: us-gov-west-1",
        "    cluster_type: ec2",
        "    instance_type: m5.4xlarge",
        "    ami: ami-0123",
        "    subnet: subnet-1",
        "    security_groups: [sg-1, sg-2]",
        "    worker_cpu: 512",
        "    worker_mem: 1024",
        "    endpoint_url: http://127.0.0.1:5000",
        "  gcp:",
        "    provider: gcp",
        "    project: my-project",
        "    zone: europe-west4-b",
        "    machine_type: n2-standard-8",
        "    image: gcr.io/p/agent:1",
        "    worker_memory: 32G",
        "  k8s:",
        "    provider: kubernetes",
        "    namespace: default",
        "    context: prod",
        "    service_account: scalable",
        "    kind: job",
        "    image: ghcr.io/x/agent:1",
        "  laptop: {provider: local, processes: false, containers: docker}",
    );
    let m = ok(yaml, None, &[]);
    let hpc = &m.targets["hpc"];
    assert_eq!(
        hpc.provider,
        Provider::Slurm {
            queue: None,
            account: None,
            walltime_ms: None,
            interface: None,
            qos: Some("high".into()),
            constraint: Some("haswell".into()),
            extra_directives: vec!["--exclusive".into(), "--mail-type=END".into()],
            setup: vec!["module load apptainer".into(), "export X=1".into()],
        }
    );
    assert_eq!(
        hpc.worker,
        WorkerShape {
            cpus: Some(32),
            memory_bytes: Some(128 * GIB),
            gpus: Some(4)
        }
    );
    assert_eq!(hpc.containers, ContainerPolicy::Apptainer);
    assert!(hpc.serves("demeter") && !hpc.serves("other"));
    assert_eq!(
        m.targets["ec2"].provider,
        Provider::Aws {
            region: "us-gov-west-1".into(),
            cluster_type: AwsClusterType::Ec2,
            image: None,
            instance_type: Some("m5.4xlarge".into()),
            subnet: Some("subnet-1".into()),
            security_groups: vec!["sg-1".into(), "sg-2".into()],
            ami: Some("ami-0123".into()),
            worker_cpu_units: Some(512),
            worker_mem_mib: Some(1024),
            endpoint_url: Some("http://127.0.0.1:5000".into()),
        }
    );
    // Half a vCPU still runs a one-cpu task, slowly.
    assert_eq!(m.targets["ec2"].worker.cpus, Some(1));
    assert_eq!(m.targets["ec2"].worker.memory_bytes, Some(GIB));
    assert_eq!(
        m.targets["gcp"].provider,
        Provider::Gcp {
            project: Some("my-project".into()),
            zone: "europe-west4-b".into(),
            machine_type: Some("n2-standard-8".into()),
            image: Some("gcr.io/p/agent:1".into()),
        }
    );
    assert_eq!(m.targets["gcp"].worker.memory_bytes, Some(32 * GIB));
    assert_eq!(
        m.targets["k8s"].provider,
        Provider::Kubernetes {
            namespace: "default".into(),
            image: Some("ghcr.io/x/agent:1".into()),
            context: Some("prod".into()),
            service_account: Some("scalable".into()),
            kind: KubeKind::Job,
        }
    );
    let laptop = &m.targets["laptop"];
    assert_eq!(
        laptop.provider,
        Provider::Local {
            threads_per_worker: None,
            processes: false
        }
    );
    assert_eq!(laptop.containers.as_str(), "docker");
    assert_eq!(laptop.worker, WorkerShape::default());
}

#[test]
fn project_output_roots_are_absolute_directories() {
    let m = ok(
        "version: 1\nproject: {name: p, output_roots: [/data/shared, /scratch]}\ntargets:\n  t: {provider: local}\n",
        None,
        &[],
    );
    assert_eq!(m.project.output_roots, ["/data/shared", "/scratch"]);
    let e = errors(
        "version: 1\nproject: {name: p, output_roots: [data, /a/../b]}\ntargets:\n  t: {provider: local}\n",
        None,
        &[],
    );
    assert_eq!(
        e,
        ["scalable.yaml:2:34: project.output_roots: \"data\" is not an absolute directory (hint: write absolute paths without \"..\", e.g. [/data/shared])"]
    );
}

/// The `workflow:` section reads numbers as a workflow file and as the rest
/// of the manifest do: quoted, they are refused (issue 13).
#[test]
fn the_workflow_section_refuses_quoted_numbers_like_the_manifest() {
    let yaml = y!(
        "version: 1",
        "project: {name: p}",
        "targets: {local: {provider: local}}",
        "components: {demeter: {cpus: \"2\"}}",
        "workflow:",
        "  workflow: w",
        "  jobs:",
        "    - {name: a, command: [x], retries: \"2\"}",
    );
    assert_eq!(
        errors(yaml, None, &[]),
        [
            "scalable.yaml:4:30: components.demeter.cpus: cpus must be a positive integer (hint: write 2 without quotes)",
            "scalable.yaml:8:40: workflow.jobs[0].retries: expected a whole number, got the string \"2\" (hint: write 2 without quotes)",
        ]
    );
}

/// Issue 17: `memory: auto`, `cpus: auto`, `walltime: auto` on a task
/// binding, with `fallback:`; an overlay may turn them on.
#[test]
fn a_task_binding_may_ask_the_advisor_to_size_its_tasks() {
    let yaml = y!(
        "version: 1",
        "project: {name: p}",
        "targets: {local: {provider: local}}",
        "components: {sim: {cpus: 1, memory: 2G}}",
        "tasks:",
        "  fixed: {component: sim, walltime: 10m}",
        "  sized: {component: sim, memory: auto, cpus: auto, walltime: auto, fallback: {memory: 1G, walltime: 30m}}",
        "overlays:",
        "  auto: {tasks: {fixed: {memory: auto}}}",
    );
    let m = ok(yaml, None, &[]);
    let (fixed, _) = m.binding("fixed").unwrap();
    assert!(!fixed.auto.any());
    assert_eq!(fixed.walltime_ms, Some(600_000));
    let (sized, _) = m.binding("sized").unwrap();
    assert_eq!(
        sized.auto,
        AutoResources {
            memory: true,
            cpus: true,
            walltime: true
        }
    );
    assert_eq!(sized.walltime_ms, None);
    assert_eq!(
        sized.fallback,
        AutoFallback {
            memory_bytes: Some(1 << 30),
            cpus: None,
            walltime_ms: Some(1_800_000)
        }
    );
    let m = ok(yaml, None, &["auto"]);
    assert!(m.binding("fixed").unwrap().0.auto.memory);
}

#[test]
fn a_task_binding_sizes_nothing_but_auto() {
    let yaml = y!(
        "version: 1",
        "project: {name: p}",
        "targets: {local: {provider: local}}",
        "components: {sim: {cpus: 1}}",
        "tasks:",
        "  a: {component: sim, memory: 4G}",
        "  b: {component: sim, cpus: auto, fallback: {cpus: 0, memroy: 1G}}",
        "  c: {component: sim, walltime: sometimes}",
    );
    let e = errors(yaml, None, &[]);
    let text = e.join("\n");
    assert!(
        text.contains("scalable.yaml:6:31: tasks.a.memory: a task binding's memory takes only auto, got \"4G\" (hint: set the size on the component, or write memory: auto with fallback: {memory: ...})"),
        "{text}"
    );
    assert!(
        text.contains("tasks.b.fallback.memroy: unknown key"),
        "{text}"
    );
    assert!(
        text.contains("tasks.b.fallback.cpus: cpus must be a positive integer"),
        "{text}"
    );
    assert!(
        text.contains("tasks.c.walltime: invalid duration"),
        "{text}"
    );
}

/// Issue 20: `shared_fs` and `storage` on a target (SPEC §4 "Data").
#[test]
fn targets_say_whether_they_share_the_filesystem_and_where_staged_files_go() {
    let m = ok(
        "version: 1\nproject: {name: p}\ntargets:\n  hpc: {provider: local}\n  cloud: {provider: local, shared_fs: false, storage: \"s3://my-bucket/runs/x\"}\n",
        None,
        &[],
    );
    assert!(m.targets["hpc"].shared_fs);
    assert_eq!(m.targets["hpc"].storage, None);
    assert!(!m.targets["cloud"].shared_fs);
    assert_eq!(
        m.targets["cloud"].storage.as_deref(),
        Some("s3://my-bucket/runs/x")
    );
    let e = errors(
        "version: 1\nproject: {name: p}\ntargets:\n  a: {provider: local, storage: \"s3://b-1/x\"}\n  b: {provider: local, shared_fs: false, storage: \"gs://x\"}\n  c: {provider: local, shared_fs: \"no\"}\n",
        None,
        &[],
    );
    assert_eq!(
        e,
        [
            "scalable.yaml:4:33: targets.a.storage: storage is used only by a target with shared_fs: false (hint: add shared_fs: false to this target, or remove storage)",
            "scalable.yaml:5:51: targets.b.storage: storage \"gs://x\" is not an s3:// URL (hint: write s3://bucket/prefix)",
            "scalable.yaml:6:35: targets.c.shared_fs: shared_fs must be true or false (got \"no\"; write true or false)",
        ]
    );
}
