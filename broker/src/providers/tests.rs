//! Tests of the provider plumbing: batching, rate limits, errors, agent matching (moved out of mod.rs).

use super::*;

#[test]
fn rate_limiter_spaces_calls() {
    let l = RateLimiter::new(Duration::from_millis(50));
    let t0 = Instant::now();
    assert_eq!(l.wait(), Duration::ZERO);
    l.wait();
    l.wait();
    assert!(t0.elapsed() >= Duration::from_millis(100));
}

#[test]
fn batches_dedup_and_split() {
    let ids: Vec<String> = ["a", "b", "a", "c", "d"].map(String::from).to_vec();
    assert_eq!(
        batches(&ids, 2),
        vec![
            vec!["a".to_string(), "b".into()],
            vec!["c".into(), "d".into()]
        ]
    );
}

#[test]
fn agent_id_matches() {
    assert!(AgentId::Exact("17".into()).matches("17"));
    assert!(!AgentId::Exact("17".into()).matches("170"));
    assert!(AgentId::Prefix("pilot-p-1-".into()).matches("pilot-p-1-x7z2q"));
    assert!(!AgentId::Prefix("pilot-p-1-".into()).matches("pilot-p-1-"));
    assert!(!AgentId::Prefix("pilot-p-1-".into()).matches("pilot-p-10-abc"));
}

#[test]
fn request_ids_are_checked() {
    let spec = testing::spec(crate::render::PilotProvider::Local);
    let req = |ids: &[&str]| StartRequest {
        pilot_ids: ids.iter().map(|s| s.to_string()).collect(),
        spec: spec.clone(),
        dry_run: true,
    };
    assert!(check_request(&req(&["p-1", "p_2"])).is_ok());
    for bad in [&[][..], &["p 1"], &["p-1", "p-1"], &["../x"]] {
        let e = check_request(&req(bad)).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn errors_are_one_line_with_command_and_hint() {
    let cli = Cli {
        program: "false",
        hint: "run scripts/slurm-testbed.sh start",
        env: vec![],
        runner: Arc::new(SystemRunner),
    };
    let argv = vec![
        "sh".to_string(),
        "-c".into(),
        "echo 'sbatch: error: Batch job submission failed: Invalid account' >&2; echo more >&2; exit 1".into(),
    ];
    let e = cli.run(&argv, None).unwrap_err().to_string();
    assert_eq!(
        e,
        "`sh -c 'echo '\\''sbatch: error: Batch job submission failed: Invalid account'\\'' >&2; echo more >&2; exit 1'` failed (exit 1): sbatch: error: Batch job submission failed: Invalid account (hint: run scripts/slurm-testbed.sh start)"
    );
    let missing = cli
        .run(&["no-such-cli-xyz".to_string()], None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        missing,
        "no-such-cli-xyz not found on PATH (hint: run scripts/slurm-testbed.sh start)"
    );
}

#[test]
fn provider_for_picks_the_target_s_provider() {
    use scalable_common::manifest::KubeKind;
    let target = |provider| super::testing::target("t", provider, 1);
    let aws = |cluster_type| Provider::Aws {
        region: "us-east-1".into(),
        cluster_type,
        image: None,
        instance_type: None,
        subnet: None,
        security_groups: vec![],
        ami: None,
        worker_cpu_units: None,
        worker_mem_mib: None,
        endpoint_url: None,
    };
    let ctx = ProviderContext::new("/tmp/pilots");
    let cases = [
        (
            Provider::Local {
                threads_per_worker: None,
                processes: true,
            },
            "local",
        ),
        (
            Provider::Slurm {
                queue: None,
                account: None,
                walltime_ms: None,
                interface: None,
                qos: None,
                constraint: None,
                extra_directives: vec![],
                setup: vec![],
            },
            "slurm",
        ),
        (aws(AwsClusterType::Ec2), "ec2"),
        (aws(AwsClusterType::Fargate), "fargate"),
        (
            Provider::Gcp {
                project: None,
                zone: "us-central1-a".into(),
                machine_type: None,
                image: None,
            },
            "gcp",
        ),
        (
            Provider::Kubernetes {
                namespace: "ns".into(),
                image: None,
                context: None,
                service_account: None,
                kind: KubeKind::Job,
            },
            "kubernetes",
        ),
    ];
    for (provider, kind) in cases {
        assert_eq!(provider_for(&target(provider), &ctx).kind(), kind);
    }
    // A target without what its provider needs fails validation in one line.
    let e = provider_for(&target(aws(AwsClusterType::Ec2)), &ctx)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("target t: instance_type: is required") || e.starts_with("aws not found"),
        "{e}"
    );
}

#[test]
fn zone_and_labels() {
    assert_eq!(zone_region("us-central1-a"), "us-central1");
    assert_eq!(dns_label("Demeter_LULCC"), "demeter-lulcc");
}

#[test]
fn pilot_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pilots/p-1");
    let path = write_file(&dir, "agent.sh", "exec true").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&tmp.path().join("pilots")), 0o700);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "exec true");
}
