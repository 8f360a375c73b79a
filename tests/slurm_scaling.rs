//! The adaptive scaler on the real one-node Slurm (issue 18): a target with
//! `adaptive: {minimum: 0, maximum: 2}` has no pilot until work comes; a
//! burst makes the scaler `sbatch` pilots within 2 s of the submit, their
//! agents run the work, and once the cooldown passed with them idle they are
//! drained and Slurm's queue is empty. Needs `scripts/slurm-testbed.sh start`
//! (as the other Slurm tests).

use std::time::Duration;

use crate::slurm::{queued, require_slurm, Scancel, SLURM};
use crate::support::*;

const MANIFEST: &str = r#"version: 1
project: {name: slurm-scaling-it}
targets:
  cluster:
    provider: slurm
    queue: debug
    walltime: "00:10:00"
    adaptive: {minimum: 0, maximum: 2, cooldown: 3s}
components:
  demeter:
    cpus: 1
    memory: 300M
tasks:
  run: {component: demeter}
"#;

fn slurm_ids(b: &Broker) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["pilots", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["provider_id"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_burst_sbatches_pilots_within_two_seconds_and_the_queue_empties_after_the_cooldown() {
    let _node = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    require_slurm();
    let m = std::env::temp_dir().join(format!(
        "scalable-slurm-scaling-{}.yaml",
        std::process::id()
    ));
    std::fs::write(&m, MANIFEST).unwrap();
    let b = Broker::start_with(&[
        "--manifest",
        &m.to_string_lossy(),
        "--target",
        "cluster",
        "--heartbeat-timeout",
        "5",
        "--heartbeat-interval-ms",
        "1000",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(slurm_ids(&b).is_empty(), "minimum 0: no pilot before work");
    let wf = b.write(
        "wf.yaml",
        "workflow: burst\njobs:\n  - name: sim\n    task: run\n    range: \"1..=8\"\n    command: [sh, -c, \"sleep 1; echo {{ item }} >> truth.log\"]\n",
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_until(Duration::from_secs(10), "the scaler's pilots", || {
        !slurm_ids(&b).is_empty()
    });
    let mut cleanup = Scancel(slurm_ids(&b));
    let db = b.db();
    let (submitted, first_pilot): (i64, i64) = db
        .query_row(
            "SELECT r.submitted_at_ms, (SELECT MIN(submitted_at_ms) FROM pilots) FROM runs r WHERE r.id = ?1",
            [run.parse::<i64>().unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let took_ms = first_pilot - submitted;
    eprintln!("burst to first pilot sbatched: {took_ms} ms");
    assert!(
        (0..=2_000).contains(&took_ms),
        "the first pilot was submitted {took_ms} ms after the burst"
    );
    let (out, _) = run_within(b.cli_command(&["wait", &run]), Duration::from_secs(120));
    let out = out.expect("the run to finish");
    assert!(out.status.success(), "{}", stderr(&out));
    let truth = std::fs::read_to_string(b.work().join("truth.log")).unwrap();
    assert_eq!(truth.lines().count(), 8);
    let ran_on: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM attempts a JOIN pilots p ON p.agent_id = a.agent_id WHERE a.end_class = 'SUCCESS'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    assert!(ran_on > 0, "the work ran on the scaler's pilots");
    cleanup.0 = slurm_ids(&b);
    wait_until(Duration::from_secs(60), "Slurm's queue to empty", || {
        queued(&cleanup.0).is_empty()
    });
    let drains: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM scaling_decisions WHERE drained != '[]'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(drains >= 1, "the scaler drained its idle pilots");
    let _ = std::fs::remove_file(&m);
}
