//! The seeds' Demeter manifest: it loads into the right types, every target
//! checks on its own, and its overlays do what the tutorial says.

use super::*;

#[test]
fn the_seed_manifest_loads_into_types() {
    let m = ok(DEMETER, None, &[]);
    assert_eq!(m.version, 1);
    assert_eq!(m.project.name, "demeter-lulcc");
    assert_eq!(
        m.targets.keys().collect::<Vec<_>>(),
        ["aws", "hpc", "k8s", "local"]
    );
    assert!(m.overlays_applied.is_empty());
    assert_eq!(m.target_selected, None);
    assert_eq!(m.workflow, None);

    let local = m.target("local").unwrap();
    assert_eq!(local.max_workers, 4);
    assert_eq!(local.containers, ContainerPolicy::Auto);
    assert_eq!(
        local.provider,
        Provider::Local {
            threads_per_worker: Some(2),
            processes: true
        }
    );
    assert_eq!(local.worker.cpus, Some(2));
    assert_eq!(local.worker.memory_bytes, None);

    let hpc = m.target("hpc").unwrap();
    assert_eq!(hpc.max_workers, 64);
    assert_eq!(hpc.provider.name(), "slurm");
    match &hpc.provider {
        Provider::Slurm {
            queue,
            account,
            walltime_ms,
            interface,
            ..
        } => {
            assert_eq!(queue.as_deref(), Some("batch"));
            assert_eq!(account.as_deref(), Some("GCIMS"));
            assert_eq!(*walltime_ms, Some(4 * 3_600_000));
            assert_eq!(interface.as_deref(), Some("ib0"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(hpc.worker, WorkerShape::default());

    let aws = m.target("aws").unwrap();
    assert_eq!(
        aws.provider,
        Provider::Aws {
            region: "us-east-1".into(),
            cluster_type: AwsClusterType::Fargate,
            image: Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/demeter:2.0.1".into()),
            instance_type: None,
            subnet: None,
            security_groups: vec![],
            ami: None,
            worker_cpu_units: Some(4096),
            worker_mem_mib: Some(16384),
            endpoint_url: None,
        }
    );
    assert_eq!(
        aws.worker,
        WorkerShape {
            cpus: Some(4),
            memory_bytes: Some(16 * GIB),
            gpus: None
        }
    );
    assert_eq!(
        aws.adaptive,
        Some(Adaptive {
            minimum: 1,
            maximum: 10,
            ..Adaptive::default()
        })
    );
    // No max_workers: the adaptive maximum bounds the target.
    assert_eq!(aws.max_workers, 10);

    let k8s = m.target("k8s").unwrap();
    assert_eq!(
        k8s.provider,
        Provider::Kubernetes {
            namespace: "demeter-prod".into(),
            image: None,
            context: None,
            service_account: None,
            kind: KubeKind::Deployment,
        }
    );
    assert_eq!(k8s.max_workers, 20);

    let demeter = &m.components["demeter"];
    assert_eq!(
        *demeter,
        Component {
            name: "demeter".into(),
            image: Some("ghcr.io/jgcri/demeter:2.0.1".into()),
            cpus: 4,
            memory_bytes: Some(16 * GIB),
            gpus: 0,
            tags: vec!["lulcc".into(), "downscaling".into()],
            mounts: vec![("./demeter_data".into(), "/data".into())],
            env: vec![("DEMETER_DATA".into(), "/data".into())],
        }
    );
    assert_eq!(demeter.resources().memory_bytes, 16 * GIB);
    assert_eq!(m.components["postprocess"].image, None);

    let (binding, component) = m.binding("run_demeter_scenario").unwrap();
    assert_eq!(
        *binding,
        TaskBinding {
            name: "run_demeter_scenario".into(),
            component: "demeter".into(),
            cache: true,
            retries: 2,
            walltime_ms: Some(2 * 3_600_000),
            auto: AutoResources::default(),
            fallback: AutoFallback::default(),
        }
    );
    assert_eq!(component.name, "demeter");
    let (binding, _) = m.binding("aggregate_demeter_outputs").unwrap();
    assert_eq!(
        (binding.cache, binding.retries, binding.walltime_ms),
        (false, 0, None)
    );
    assert!(m.binding("nope").is_none());

    // The resolved manifest is plain data the broker can store or send.
    let json = serde_json::to_string(&m).unwrap();
    let back: Manifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
}

#[test]
fn every_target_of_the_seed_manifest_checks_on_its_own() {
    for target in ["hpc", "aws", "k8s"] {
        let m = ok(DEMETER, Some(target), &[]);
        assert_eq!(m.target_selected.as_deref(), Some(target));
    }
    // Local agents have 2 cpus each; demeter asks for 4 (give the target
    // `tags: [postprocess]` to keep demeter off it).
    assert_eq!(
        errors(DEMETER, Some("local"), &[]),
        ["scalable.yaml:33:11: components.demeter.cpus: 4 cpus are more than any worker of target \"local\" offers (2) (hint: raise targets.local.threads_per_worker or lower the cpus)"]
    );
}

#[test]
fn fix_oom_gives_demeter_24g() {
    let m = ok(DEMETER, None, &["fix-oom"]);
    assert_eq!(m.components["demeter"].memory_bytes, Some(24 * GIB));
    assert_eq!(m.overlays_applied, ["fix-oom"]);
    // Only memory changed: the rest of demeter is the manifest's.
    assert_eq!(m.components["demeter"].cpus, 4);
    assert_eq!(m.components["demeter"].mounts.len(), 1);
    assert_eq!(m.components["postprocess"].memory_bytes, Some(8 * GIB));
}

#[test]
fn overlays_apply_in_the_order_given() {
    let m = ok(DEMETER, None, &["fix-oom", "k8s-fine-resolution"]);
    assert_eq!(m.components["demeter"].memory_bytes, Some(64 * GIB));
    assert_eq!(m.overlays_applied, ["fix-oom", "k8s-fine-resolution"]);
    let m = ok(DEMETER, None, &["k8s-fine-resolution", "fix-oom"]);
    assert_eq!(m.components["demeter"].memory_bytes, Some(24 * GIB));
    assert_eq!(m.overlays_applied, ["k8s-fine-resolution", "fix-oom"]);
}

#[test]
fn fine_resolution_fits_k8s_but_not_aws_workers() {
    // Kubernetes workers have no size in the manifest, so 64G may fit there.
    let m = ok(DEMETER, Some("k8s"), &["k8s-fine-resolution"]);
    assert_eq!(m.components["demeter"].memory_bytes, Some(64 * GIB));
    // Fargate workers have 16 GiB; the error points into the overlay.
    assert_eq!(
        errors(DEMETER, Some("aws"), &["k8s-fine-resolution"]),
        ["scalable.yaml:57:17: overlays.k8s-fine-resolution.components.demeter.memory: 64G is more than any worker of target \"aws\" offers (16G) (hint: raise targets.aws.worker_mem or lower the memory)"]
    );
}
