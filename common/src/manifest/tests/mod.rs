//! Manifest tests: the seeds' manifest and overlays, a table of broken
//! manifests with their exact errors, limits, and property tests that no
//! input panics. Here: the helpers and the seed manifest they share.

use super::*;

/// Lines of a YAML text, each ending in a newline.
macro_rules! y {
    ($($line:literal),* $(,)?) => { concat!($($line, "\n"),*) };
}

mod broken;
mod limits;
mod overlays_and_variables;
mod sections;
mod seed;

fn env(name: &str) -> Option<String> {
    match name {
        "ECR_DEMETER_IMAGE" => {
            Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/demeter:2.0.1".to_string())
        }
        "WORKERS" => Some("8".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn load(yaml: &str, target: Option<&str>, overlays: &[&str]) -> Result<Manifest, Vec<String>> {
    let overlays: Vec<String> = overlays.iter().map(|s| s.to_string()).collect();
    let opts = LoadOptions {
        target,
        overlays: &overlays,
        env: &env,
    };
    load_manifest("scalable.yaml", yaml, &opts)
        .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
}

fn ok(yaml: &str, target: Option<&str>, overlays: &[&str]) -> Manifest {
    match load(yaml, target, overlays) {
        Ok(m) => m,
        Err(e) => panic!("expected a manifest, got:\n{}", e.join("\n")),
    }
}

fn errors(yaml: &str, target: Option<&str>, overlays: &[&str]) -> Vec<String> {
    match load(yaml, target, overlays) {
        Ok(m) => panic!("expected errors, got {m:#?}"),
        Err(e) => e,
    }
}

/// The seeds' Demeter manifest (SPEC §3, Tutorial 10's compose output and
/// its overlays).
const DEMETER: &str = y!(
    "version: 1",
    "project:",
    "  name: demeter-lulcc",
    "targets:",
    "  local:",
    "    provider: local",
    "    max_workers: 4",
    "    threads_per_worker: 2",
    "  hpc:",
    "    provider: slurm",
    "    queue: batch",
    "    account: GCIMS",
    "    walltime: \"04:00:00\"",
    "    interface: ib0",
    "    max_workers: 64",
    "  aws:",
    "    provider: aws",
    "    region: us-east-1",
    "    cluster_type: fargate",
    "    worker_cpu: 4096",
    "    worker_mem: 16384",
    "    image: ${ECR_DEMETER_IMAGE}",
    "    adaptive:",
    "      minimum: 1",
    "      maximum: 10",
    "  k8s:",
    "    provider: kubernetes",
    "    namespace: demeter-prod",
    "    adaptive: {minimum: 2, maximum: 20}",
    "components:",
    "  demeter:",
    "    image: ghcr.io/jgcri/demeter:2.0.1",
    "    cpus: 4",
    "    memory: 16G",
    "    gpus: 0",
    "    tags: [lulcc, downscaling]",
    "    mounts:",
    "      ./demeter_data: /data",
    "    env:",
    "      DEMETER_DATA: /data",
    "  postprocess:",
    "    cpus: 2",
    "    memory: 8G",
    "    tags: [lulcc, aggregation]",
    "tasks:",
    "  run_demeter_scenario: {component: demeter, cache: true, retries: 2, walltime: \"02:00:00\"}",
    "  aggregate_demeter_outputs:",
    "    component: postprocess",
    "overlays:",
    "  fix-oom:",
    "    components:",
    "      demeter:",
    "        memory: 24G",
    "  k8s-fine-resolution:",
    "    components:",
    "      demeter:",
    "        memory: 64G",
);

const GIB: u64 = 1 << 30;
