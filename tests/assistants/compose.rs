//! `compose`'s table: fifteen descriptions, each output validated by
//! `scalable validate` and holding the facts the description asked for.

use serde_json::Value;

use super::{assist, validated};
use crate::support::*;

/// A fact the resolved manifest (`validate --json`) must hold.
enum Fact {
    Provider(&'static str),
    Region(&'static str),
    Zone(&'static str),
    Queue(&'static str),
    Account(&'static str),
    Namespace(&'static str),
    ClusterType(&'static str),
    /// Some component has this many cpus.
    Cpus(u64),
    /// Some component has this much memory, in MiB.
    MemoryMib(u64),
    Gpus(u64),
    Image(&'static str),
    Components(usize),
    Cache,
    Retries(u64),
    AdaptiveMax(u64),
    AdaptiveMin(u64),
    MaxWorkers(u64),
    SlurmWalltimeMs(u64),
    Project(&'static str),
    /// The workflow skeleton's first job fans out over this many items.
    Items(u64),
}

fn targets(m: &Value) -> Vec<&Value> {
    m["targets"].as_object().unwrap().values().collect()
}

fn components(m: &Value) -> Vec<&Value> {
    m["components"].as_object().unwrap().values().collect()
}

fn holds(m: &Value, f: &Fact) -> bool {
    let any_target = |k: &str, v: &str| targets(m).iter().any(|t| t["provider"][k] == v);
    let any_comp = |k: &str, v: u64| components(m).iter().any(|c| c[k] == v);
    let tasks: Vec<&Value> = m["tasks"].as_object().unwrap().values().collect();
    match f {
        Fact::Provider(p) => any_target("provider", p),
        Fact::Region(r) => any_target("region", r),
        Fact::Zone(z) => any_target("zone", z),
        Fact::Queue(q) => any_target("queue", q),
        Fact::Account(a) => any_target("account", a),
        Fact::Namespace(n) => any_target("namespace", n),
        Fact::ClusterType(c) => any_target("cluster_type", c),
        Fact::Cpus(n) => any_comp("cpus", *n),
        Fact::MemoryMib(n) => any_comp("memory_bytes", n << 20),
        Fact::Gpus(n) => any_comp("gpus", *n),
        Fact::Image(i) => components(m).iter().any(|c| c["image"] == *i) || any_target("image", i),
        Fact::Components(n) => components(m).len() == *n,
        Fact::Cache => !tasks.is_empty() && tasks.iter().all(|t| t["cache"] == true),
        Fact::Retries(n) => !tasks.is_empty() && tasks.iter().all(|t| t["retries"] == *n),
        Fact::AdaptiveMax(n) => targets(m).iter().any(|t| t["adaptive"]["maximum"] == *n),
        Fact::AdaptiveMin(n) => targets(m).iter().any(|t| t["adaptive"]["minimum"] == *n),
        Fact::MaxWorkers(n) => targets(m).iter().any(|t| t["max_workers"] == *n),
        Fact::SlurmWalltimeMs(n) => targets(m)
            .iter()
            .any(|t| t["provider"]["walltime_ms"] == *n),
        Fact::Project(p) => m["project"]["name"] == *p,
        Fact::Items(n) => m["workflow"]["jobs"][0]["items"]["Range"]["end"] == *n,
    }
}

fn name(f: &Fact) -> String {
    match f {
        Fact::Provider(p) => format!("provider {p}"),
        Fact::Region(r) => format!("region {r}"),
        Fact::Zone(z) => format!("zone {z}"),
        Fact::Queue(q) => format!("queue {q}"),
        Fact::Account(a) => format!("account {a}"),
        Fact::Namespace(n) => format!("namespace {n}"),
        Fact::ClusterType(c) => format!("cluster_type {c}"),
        Fact::Cpus(n) => format!("cpus {n}"),
        Fact::MemoryMib(n) => format!("memory {n} MiB"),
        Fact::Gpus(n) => format!("gpus {n}"),
        Fact::Image(i) => format!("image {i}"),
        Fact::Components(n) => format!("{n} components"),
        Fact::Cache => "cache".into(),
        Fact::Retries(n) => format!("retries {n}"),
        Fact::AdaptiveMax(n) => format!("adaptive max {n}"),
        Fact::AdaptiveMin(n) => format!("adaptive min {n}"),
        Fact::MaxWorkers(n) => format!("max_workers {n}"),
        Fact::SlurmWalltimeMs(n) => format!("slurm walltime {n} ms"),
        Fact::Project(p) => format!("project {p}"),
        Fact::Items(n) => format!("{n} items"),
    }
}

#[test]
fn fifteen_descriptions_give_manifests_that_validate_and_hold_their_facts() {
    use Fact::*;
    const G: u64 = 1024;
    let table: &[(&str, &[Fact])] = &[
        (
            "Demeter LULCC pipeline that downscales GCAM scenarios in parallel (4 CPUs, 16GB RAM, containerized) followed by NetCDF aggregation (2 CPUs, 8GB). Needs local and AWS targets with adaptive scaling.",
            &[Project("demeter-lulcc"), Provider("local"), Provider("aws"), Region("us-east-1"), Cpus(4), MemoryMib(16 * G), Cpus(2), MemoryMib(8 * G), Components(2), AdaptiveMax(10)],
        ),
        (
            "Hydrology model on slurm queue debug with account PROJ123, 8 cpus and 32GB per task, 100 scenarios, 2 retries",
            &[Provider("slurm"), Queue("debug"), Account("PROJ123"), Cpus(8), MemoryMib(32 * G), Retries(2), Items(100)],
        ),
        (
            "Climate downscaling on AWS EC2 in eu-west-1 with up to 20 workers, 16 cpus, 64GB",
            &[Provider("aws"), ClusterType("ec2"), Region("eu-west-1"), AdaptiveMax(20), Cpus(16), MemoryMib(64 * G)],
        ),
        (
            "Image classification training on kubernetes namespace ml-team with 1 gpu, 8 cores and 32G, image ghcr.io/acme/trainer:2.1",
            &[Provider("kubernetes"), Namespace("ml-team"), Gpus(1), Cpus(8), MemoryMib(32 * G), Image("ghcr.io/acme/trainer:2.1")],
        ),
        (
            "Run a GCP ensemble in zone europe-west4-b, 50 members, 2 vcpus and 4 GB each, cache results",
            &[Provider("gcp"), Zone("europe-west4-b"), Cpus(2), MemoryMib(4 * G), Cache, Items(50)],
        ),
        (
            "Local laptop analysis with 2 workers, 1 cpu 512MB tasks",
            &[Provider("local"), MaxWorkers(2), Cpus(1), MemoryMib(512)],
        ),
        (
            "Fargate pipeline in us-west-2: preprocessing (2 CPUs, 4GB) then training (4 CPUs, 8GB) then plotting (1 CPU, 1GB), retry 3 times",
            &[Provider("aws"), ClusterType("fargate"), Region("us-west-2"), Components(3), Cpus(4), MemoryMib(8 * G), MemoryMib(G), Retries(3)],
        ),
        (
            "HPC workflow on slurm partition gpu with walltime 12:00:00, 4 gpus and 128GB per task",
            &[Provider("slurm"), Queue("gpu"), SlurmWalltimeMs(12 * 3_600_000), Gpus(4), MemoryMib(128 * G)],
        ),
        (
            "Population model on k8s with adaptive scaling between 2 and 30 workers (2 cpus, 8GB)",
            &[Provider("kubernetes"), AdaptiveMin(2), AdaptiveMax(30), Cpus(2), MemoryMib(8 * G)],
        ),
        (
            "Energy model on slurm and aws us-east-2 with 6 hours walltime, 12 cpus, 48GB, image docker.io/lab/energy:1.0",
            &[Provider("slurm"), Provider("aws"), Region("us-east-2"), SlurmWalltimeMs(6 * 3_600_000), Cpus(12), MemoryMib(48 * G), Image("docker.io/lab/energy:1.0")],
        ),
        (
            "Genomics workflow named genome-scan on local and slurm queue long, 10 workers, 4 cpus, 16GB, caching on",
            &[Project("genome-scan"), Provider("local"), Provider("slurm"), Queue("long"), MaxWorkers(10), Cpus(4), MemoryMib(16 * G), Cache],
        ),
        (
            "Agent-based simulation on google cloud in us-central1-c with at most 8 machines, 2 cores, 2GB, 1 retry",
            &[Provider("gcp"), Zone("us-central1-c"), AdaptiveMax(8), Cpus(2), MemoryMib(2 * G), Retries(1)],
        ),
        (
            "Satellite image mosaicking on AWS with 4 cpus and 30GB (image public.ecr.aws/lab/mosaic:3) followed by tiling (2 cpus, 4GB)",
            &[Provider("aws"), Components(2), Cpus(4), MemoryMib(30 * G), Image("public.ecr.aws/lab/mosaic:3"), MemoryMib(4 * G)],
        ),
        (
            "Monte Carlo study with 1000 samples on slurm queue standard, 1 cpu and 2GB each, 5 retries, cached",
            &[Provider("slurm"), Queue("standard"), Cpus(1), MemoryMib(2 * G), Retries(5), Cache, Items(1000)],
        ),
        (
            "Train on kubernetes namespace research and local: 2 GPUs, 16 cpus, 64GB, image nvcr.io/nvidia/pytorch:24.01",
            &[Provider("kubernetes"), Provider("local"), Namespace("research"), Gpus(2), Cpus(16), MemoryMib(64 * G), Image("nvcr.io/nvidia/pytorch:24.01")],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, (desc, facts)) in table.iter().enumerate() {
        let file = format!("composed-{i}.yaml");
        let out = assist(
            dir.path(),
            &["compose", "--description", desc, "--output", &file],
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{desc}: {}", stderr(&out));
        let m = validated(dir.path(), &file);
        for f in facts.iter() {
            if !holds(&m, f) {
                failures.push(format!("{desc:?}: missing {}", name(f)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
