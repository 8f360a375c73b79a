//! Pilots on a real one-node Slurm (issue 7): `scripts/slurm-testbed.sh start`
//! (run by `.ci/run`) installs and starts slurmctld, slurmd and munge. The
//! broker owns a `slurm` target; `scalable scale` submits sbatch jobs whose
//! `srun scalable-agent` dials back; scaling to 0 drains them and Slurm's queue
//! empties; the broker's pilot records follow Slurm.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

const MANIFEST: &str = r#"version: 1
project: {name: slurm-it}
targets:
  cluster:
    provider: slurm
    queue: debug
    walltime: "00:10:00"
    max_workers: 2
components:
  demeter:
    cpus: 1
    memory: 300M
tasks:
  run: {component: demeter}
"#;

/// The one Slurm node has 2 cpus: one test's two pilots at a time.
pub(crate) static SLURM: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn require_slurm() {
    let ok = Command::new("sinfo")
        .arg("-h")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "these tests need a running Slurm: run scripts/slurm-testbed.sh start (.ci/run does)"
    );
}

/// Slurm job ids of our pilots still in the queue (pending or running).
pub(crate) fn queued(ids: &[String]) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["-h", "-o", "%i", "-j", &ids.join(",")])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Cancels the given Slurm jobs when a test ends, passed or not.
pub(crate) struct Scancel(pub Vec<String>);

impl Drop for Scancel {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("scancel").args(&self.0).status();
        }
    }
}

fn pilots(b: &Broker) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&b.ok(&["pilots", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn status(b: &Broker, run: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&b.ok(&["status", run, "--json"])).unwrap()[0].clone()
}

fn start_broker(name: &str) -> Broker {
    require_slurm();
    // The broker reads the manifest once, at start.
    let m = std::env::temp_dir().join(format!("scalable-{name}-{}.yaml", std::process::id()));
    std::fs::write(&m, MANIFEST).unwrap();
    let m = m.to_string_lossy().into_owned();
    Broker::start_with(&[
        "--manifest",
        &m,
        "--target",
        "cluster",
        "--heartbeat-timeout",
        "5",
        "--heartbeat-interval-ms",
        "1000",
    ])
}

fn scale(b: &Broker, change: &str) -> serde_json::Value {
    serde_json::from_str(&b.ok(&[
        "scale", "--target", "cluster", "--tag", "demeter", change, "--json",
    ]))
    .unwrap()
}

#[test]
fn slurm_pilots_run_a_workflow_and_scale_to_zero() {
    let _node = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    let b = start_broker("scale");
    let dry = scale(&b, "=2");
    let started: Vec<String> = dry["started"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap().to_string())
        .collect();
    let _cleanup = Scancel(started.clone());
    assert_eq!(started.len(), 2, "{dry}");
    assert!(
        dry["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().starts_with("sbatch --parsable")),
        "{dry}"
    );
    b.wait_agents(2);
    let wf = b.write(
        "wf.yaml",
        "workflow: forty\njobs:\n  - name: sim\n    task: run\n    range: \"1..=40\"\n    command: [sh, -c, \"echo {{ item }} $SCALABLE_TASK_ID >> truth.log\"]\n",
    );
    b.ok(&["submit", &wf, "--wait"]);
    let truth = std::fs::read_to_string(b.work().join("truth.log")).unwrap();
    assert_eq!(truth.lines().count(), 40);
    let p = pilots(&b);
    assert_eq!(p.len(), 2);
    for x in &p {
        assert_eq!(x["state"], "connected", "{x}");
        assert!(x["agent"].is_u64(), "{x}");
        assert!(started.contains(&x["provider_id"].as_str().unwrap().to_string()));
    }
    // No token on any command line of the login node.
    let token = std::fs::read_to_string(b.token_file()).unwrap();
    let token = token.split_whitespace().last().unwrap().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&cmd).contains(&token),
                "a token on a command line: {}",
                String::from_utf8_lossy(&cmd)
            );
        }
    }
    let down = scale(&b, "=0");
    assert_eq!(down["drained"].as_array().unwrap().len(), 2, "{down}");
    wait_until(Duration::from_secs(30), "Slurm's queue to empty", || {
        queued(&started).is_empty()
    });
    wait_until(Duration::from_secs(30), "the pilot records to end", || {
        pilots(&b).iter().all(|p| p["state"] == "ended")
    });
    let db = b.db();
    let rows: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM pilots WHERE state = 'ended' AND connected_at_ms IS NOT NULL AND ended_at_ms >= connected_at_ms",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 2, "the store's pilot records match");
}

#[test]
fn a_pilot_cancelled_mid_run_loses_no_task_and_short_pilots_get_no_long_tasks() {
    let _node = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    let b = start_broker("cancel");
    let up = scale(&b, "=2");
    let ids: Vec<String> = up["started"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap().to_string())
        .collect();
    let _cleanup = Scancel(ids.clone());
    b.wait_agents(2);
    let wf = b.write(
        "wf.yaml",
        "workflow: six\njobs:\n  - name: sim\n    task: run\n    range: \"1..=6\"\n    command: [sh, -c, \"sleep 2; echo {{ item }} >> truth.log\"]\n",
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_until(Duration::from_secs(20), "two tasks running", || {
        status(&b, &run)["counts"]["running"] == 2
    });
    // The site (or the user) cancels one pilot mid-run.
    let st = Command::new("scancel").arg(&ids[0]).status().unwrap();
    assert!(st.success());
    wait_until(Duration::from_secs(90), "the run to finish", || {
        status(&b, &run)["state"] != "running"
    });
    assert_eq!(
        status(&b, &run)["state"],
        "succeeded",
        "{}\n{}",
        b.ok(&["analyze", &run]),
        b.log()
    );
    let mut items: Vec<String> = std::fs::read_to_string(b.work().join("truth.log"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    items.sort();
    items.dedup();
    assert_eq!(items.len(), 6, "every task done: {items:?}");
    let stats: serde_json::Value = serde_json::from_str(&b.ok(&["stats", &run, "--json"])).unwrap();
    assert_eq!(
        stats["retries"], 0,
        "a cancelled pilot spends no retry: {stats}"
    );
    wait_until(
        Duration::from_secs(30),
        "the cancelled pilot's record to end",
        || {
            pilots(&b)
                .iter()
                .any(|p| p["provider_id"] == ids[0].as_str() && p["state"] == "ended")
        },
    );
    // A task whose walltime is longer than the pilots' (10 min) is never started there.
    let wf = b.write(
        "long.yaml",
        "workflow: long\njobs:\n  - name: big\n    task: run\n    walltime: 1h\n    command: [\"true\"]\n",
    );
    let long = b.ok(&["submit", &wf]).trim().to_string();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&b, &long)["counts"]["ready"], 1);
    let why = b.ok(&["why", &format!("{long}/big/0")]);
    assert!(why.contains("lifetime"), "{why}");
    b.ok(&["cancel", &long]);
    let down = serde_json::from_str::<serde_json::Value>(&b.ok(&[
        "scale", "--target", "cluster", "--tag", "demeter", "=0", "--json",
    ]))
    .unwrap();
    assert!(down["after"] == 0, "{down}");
    wait_until(Duration::from_secs(30), "Slurm's queue to empty", || {
        queued(&ids).is_empty()
    });
}
