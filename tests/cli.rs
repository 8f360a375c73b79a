//! The CLI's everyday commands against a real broker: quick submit with an
//! array, logs, cancel, agents, stats, JSON output.

use crate::support::*;

#[test]
fn quick_submit_array_logs_and_stats() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2", "--name", "worker"]);
    b.wait_agents(1);
    let out = b.ok(&[
        "submit",
        "--json",
        "--array",
        "1-5",
        "--name",
        "hello",
        "--",
        "sh",
        "-c",
        "echo hello {{ index }} $SCALABLE_ATTEMPT",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["tasks"], 5);
    let run = v["run"].to_string();
    b.ok(&["wait", &run]);
    let logs = b.ok(&["logs", &format!("{run}/hello/2")]);
    assert_eq!(logs.trim(), "hello 3 1");
    let stats = b.ok(&["stats", "last"]);
    assert!(stats.contains("Tasks"), "{stats}");
    assert!(stats.contains("hello"), "{stats}");
    let status = b.ok(&["status", "last"]);
    assert!(status.contains("hello"), "{status}");
    let agents = b.ok(&["agents"]);
    assert!(agents.contains("worker"), "{agents}");
}

#[test]
fn cancel_stops_running_and_queued_tasks() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1"]);
    b.wait_agents(1);
    let run = b
        .ok(&["submit", "--array", "1-5", "--", "sleep", "30"])
        .trim()
        .to_string();
    wait_until(std::time::Duration::from_secs(10), "a task to run", || {
        let st: serde_json::Value =
            serde_json::from_str(&b.ok(&["status", &run, "--json"])).unwrap();
        st[0]["counts"]["running"] == 1
    });
    b.ok(&["cancel", &run]);
    let start = std::time::Instant::now();
    let out = b.cli(&["wait", &run]);
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() < std::time::Duration::from_secs(15));
    let st: serde_json::Value = serde_json::from_str(&b.ok(&["status", &run, "--json"])).unwrap();
    assert_eq!(st[0]["state"], "cancelled");
    assert_eq!(st[0]["counts"]["cancelled"], 5);
}

#[test]
fn local_agents_started_by_the_broker_run_a_workflow() {
    let b = Broker::start_with(&["--local-agents", "2", "--local-agent-cpus", "1"]);
    b.wait_agents(2);
    b.ok(&["submit", "--array", "1-4", "--wait", "--", "true"]);
    // Local agents read the token from the file: it is not on their command line.
    let token = std::fs::read_to_string(b.token_file()).unwrap();
    let secret = token.split_whitespace().nth(2).unwrap().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let s = String::from_utf8_lossy(&cmdline);
            assert!(!s.contains(&secret), "token on a command line: {s}");
        }
    }
}

#[test]
fn bad_task_names_exit_2() {
    let b = Broker::start();
    let out = b.cli(&["logs", "not/a/task/name"]);
    assert_eq!(out.status.code(), Some(2));
    let out = b.cli(&["wait", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("last"), "{}", stderr(&out));
}

#[test]
fn manifest_local_target_starts_its_agents() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("scalable.yaml");
    std::fs::write(
        &manifest,
        "version: 1\nproject: {name: t}\ntargets:\n  laptop: {provider: local, max_workers: 2, threads_per_worker: 1, tags: [postprocess]}\n",
    )
    .unwrap();
    let b = Broker::start_with(&[
        "--manifest",
        manifest.to_str().unwrap(),
        "--target",
        "laptop",
    ]);
    b.wait_agents(2);
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["agents", "--json"])).unwrap();
    for a in v.as_array().unwrap() {
        assert_eq!(a["resources"]["cpus"], 1);
        assert_eq!(a["tags"][0], "postprocess");
    }
    b.ok(&[
        "submit",
        "--tag",
        "postprocess",
        "--array",
        "1-3",
        "--wait",
        "--",
        "true",
    ]);
}

#[test]
fn manifest_with_an_unknown_target_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("scalable.yaml");
    std::fs::write(
        &manifest,
        "version: 1\nproject: {name: t}\ntargets:\n  local: {provider: local}\n",
    )
    .unwrap();
    let out = std::process::Command::new(broker_exe())
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--manifest")
        .arg(&manifest)
        .args(["--target", "hpc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown target \"hpc\" (targets are: local)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn why_explains_a_task_that_waits_for_a_tag() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1", "--tags", "cpu"]);
    b.wait_agents(1);
    let run = b
        .ok(&["submit", "--tag", "gpu-large", "--", "true"])
        .trim()
        .to_string();
    let out = b.ok(&["why", &format!("{run}/true/0")]);
    assert_eq!(
        out.trim(),
        format!("{run}/true/0 (ready): no connected agent has tag gpu-large")
    );
    let out = b.cli(&["why", "999/x/0"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Replaces machine-specific paths so rendered text can be compared exactly:
/// the agent the tests run and the one next to the CLI (render's pick when
/// `SCALABLE_AGENT_BIN` runs the tests' agents from elsewhere).
fn redact(text: &str) -> String {
    redact_agent(text)
}

#[test]
fn validate_render_and_plan_the_demeter_manifest() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = root.join("examples/demeter/scalable.yaml");
    let m = manifest.to_str().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(cli_exe())
            .args(args)
            .env_remove("SCALABLE_ACCESS")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    };
    for target in ["local", "hpc", "aws", "k8s"] {
        let out = run(&["validate", m, "--target", target]);
        assert_eq!(stdout(&out), "ok\n", "{target}: {}", stderr(&out));
    }
    // The seed's k8s-fine-resolution overlay (64G) does not fit aws's 20G workers.
    let out = run(&[
        "validate",
        m,
        "--target",
        "aws",
        "--overlay",
        "k8s-fine-resolution",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).replace(m, "scalable.yaml"),
        "error: scalable.yaml:57:36: overlays.k8s-fine-resolution.components.demeter.memory: 64G is more than any worker of target \"aws\" offers (20G) (hint: raise targets.aws.worker_mem or lower the memory)\n"
    );
    let out = run(&["render", m, "--target", "hpc", "--tag", "demeter"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = redact(&stdout(&out));
    let expected = r#"# ---- agent.sbatch (target hpc, tag demeter) ----
#!/bin/bash
#SBATCH --job-name=scalable-hpc-demeter
#SBATCH --partition=batch
#SBATCH --account=GCIMS
#SBATCH --time=04:00:00
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16640M
#SBATCH --array=1-32
#SBATCH --output=%x-%A_%a.out
# A Scalable pilot: one scalable-agent that dials out to the broker and runs
# tasks until it is idle, its lifetime ends or the walltime is near. It reads
# its token from --token-file; the token is never written in this script.
# --mem is the agent's --memory plus room for the agent itself.
set -euo pipefail
export SCALABLE_PILOT_ID="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
exec srun --ntasks=1 --cpus-per-task=4 [AGENT] \
  --connect BROKER_HOST:7420 \
  --fingerprint 0000000000000000000000000000000000000000000000000000000000000000 \
  --token-file .scalable/agent.token \
  --tags demeter \
  --cpus 4 \
  --memory 16G \
  --gpus 0 \
  --idle-timeout 5m \
  --lifetime 03:55:00
"#;
    assert_eq!(text, expected);
    let out = run(&["plan", m, "--target", "hpc", "--dry-run"]);
    assert_eq!(
        stdout(&out),
        "plan for target hpc (slurm), from the manifest:\n\
         TAG          WORKERS  MIN  MAX  CPUS  MEMORY  GPUS  IMAGE\n\
         demeter      32       32   32   4     16G     0     ghcr.io/jgcri/demeter:2.0.1\n\
         postprocess  32       32   32   1     2G      0     -\n\
         (the manifest's own shape; --objective and --policy weigh other counts)\n\
         cost demeter: 32 worker(s) x 4.00 h x 1.000 USD/h = 128.00 USD (slurm: the default node-hour price 1.00 USD of prices/prices.json (no price for target hpc in the manifest))\n\
         cost postprocess: 32 worker(s) x 4.00 h x 1.000 USD/h = 128.00 USD (slurm: the default node-hour price 1.00 USD of prices/prices.json (no price for target hpc in the manifest))\n"
    );
    // The exact command lines a provider would run, never with a token.
    let out = run(&[
        "render",
        m,
        "--target",
        "hpc",
        "--tag",
        "demeter",
        "--commands",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = stdout(&out);
    assert_eq!(lines.lines().count(), 32, "one sbatch per pilot: {lines}");
    assert!(
        lines
            .lines()
            .all(|l| l.starts_with("sbatch --parsable --chdir=")),
        "{lines}"
    );
    let out = run(&[
        "render",
        m,
        "--target",
        "k8s",
        "--tag",
        "demeter",
        "--commands",
    ]);
    assert!(
        stdout(&out).starts_with("kubectl --namespace=demeter-prod apply -f -"),
        "{}",
        stdout(&out)
    );
    // Fargate JSON parses; the Kubernetes YAML is checked in render's own tests.
    let out = run(&["render", m, "--target", "aws", "--tag", "demeter"]);
    let json_text: String = stdout(&out).lines().skip(1).collect::<Vec<_>>().join("\n");
    let v: serde_json::Value = serde_json::from_str(&json_text).expect("fargate json");
    assert_eq!(v["requiresCompatibilities"][0], "FARGATE");
}

#[test]
fn submit_with_a_manifest_binds_tasks_to_components() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2", "--tags", "post,img", "--runtime", "none"]);
    b.wait_agents(1);
    let manifest = b.write(
        "scalable.yaml",
        r#"version: 1
project: {name: bind}
targets:
  local: {provider: local, max_workers: 1}
components:
  post: {cpus: 2, memory: 64M}
  img: {image: "localhost/busybox:local", cpus: 1}
tasks:
  summarise: {component: post, retries: 1, walltime: 10m}
  boxed: {component: img}
"#,
    );
    let wf = b.write(
        "wf.yaml",
        r#"workflow: bound
jobs:
  - {name: sum, task: summarise, command: [sh, -c, "echo $SCALABLE_CPUS > cpus.txt"]}
  - {name: box, task: boxed, command: ["true"]}
"#,
    );
    let run = b
        .ok(&["submit", "--manifest", &manifest, &wf])
        .trim()
        .to_string();
    // The shell creates the file before it writes to it: wait for the line.
    wait_until(std::time::Duration::from_secs(10), "the bound task", || {
        std::fs::read_to_string(b.work().join("cpus.txt")).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(
        std::fs::read_to_string(b.work().join("cpus.txt"))
            .unwrap()
            .trim(),
        "2"
    );
    let why = b.ok(&["why", &format!("{run}/box/0")]);
    assert!(
        why.contains(
            "needs a container image, and no agent that serves it has a container runtime"
        ),
        "{why}"
    );
    let db = b.db();
    let (tag, cpus, mem, retries): (String, i64, i64, i64) = db
        .query_row(
            "SELECT tag, cpus, memory_bytes, retries FROM jobs WHERE name = 'sum'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((tag.as_str(), cpus, mem, retries), ("post", 2, 64 << 20, 1));
    // A job bound to a task the manifest does not have: exit 2, nothing stored.
    let bad = b.write(
        "bad.yaml",
        "workflow: bad\njobs:\n  - {name: x, task: sumarise, command: [\"true\"]}\n",
    );
    let out = b.cli(&["submit", "--manifest", &manifest, &bad]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("sumarise"), "{}", stderr(&out));
}
