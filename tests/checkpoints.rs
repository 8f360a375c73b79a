//! Checkpoints (`checkpoint:`, issue 20, seed 004) through a real broker and
//! real agents on one filesystem: a task that counts to N, checkpointing its
//! counter after every step, is cut by its pilot's lifetime (and, in the
//! second test, its agent is SIGKILLed) and finishes on another agent from
//! its last checkpoint. The ground truth is the log of steps the task did.

use std::time::Duration;

use crate::support::*;

pub(crate) const STEPS: u32 = 60;

/// The counting job: each step is logged (in `logs`, the ground truth),
/// then checkpointed (write and rename, so the checkpoint is whole); the
/// checkpoint interval is one step of 0.1 s. The private-directory tests
/// share it, with their logs outside the agents' dirs.
pub(crate) fn counter_workflow(b: &Broker, logs: &std::path::Path) -> String {
    let t = logs.display();
    b.write(
        "count.yaml",
        &format!(
            r#"
workflow: count
jobs:
  - name: count
    checkpoint: [ckpt]
    command:
      - sh
      - -c
      - |
        n=$(cat ckpt/n 2>/dev/null || echo 0)
        echo "$SCALABLE_ATTEMPT $n" >> {t}/attempts.log
        while [ $n -lt {STEPS} ]; do
          n=$((n+1)); echo $n >> {t}/steps.log
          mkdir -p ckpt; echo $n > ckpt/n.tmp; mv ckpt/n.tmp ckpt/n
          sleep 0.1
        done
"#
        ),
    )
}

fn steps_done(b: &Broker) -> usize {
    std::fs::read_to_string(b.work().join("steps.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Every step done, in order, and none twice except the one the cut may have
/// caught between its log line and its checkpoint (one interval); the second
/// attempt started from a checkpoint, and the kept versions are gone.
fn check_ground_truth(b: &Broker) {
    let log = std::fs::read_to_string(b.work().join("steps.log")).unwrap();
    let steps: Vec<u32> = log.lines().map(|l| l.parse().unwrap()).collect();
    let mut distinct = steps.clone();
    distinct.dedup();
    assert_eq!(distinct, (1..=STEPS).collect::<Vec<_>>(), "{steps:?}");
    assert!(
        steps.len() as u32 <= STEPS + 1,
        "steps redone beyond the last checkpoint interval: {steps:?}"
    );
    let attempts = std::fs::read_to_string(b.work().join("attempts.log")).unwrap();
    let lines: Vec<&str> = attempts.lines().collect();
    assert_eq!(lines.len(), 2, "{attempts}");
    assert_eq!(lines[0], "1 0");
    let resumed_at: u32 = lines[1].split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        resumed_at > 0,
        "the second attempt started over: {attempts}"
    );
    let kept = b.state().join("checkpoints");
    let left = std::fs::read_dir(&kept).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "kept versions dropped after the success");
}

#[test]
fn a_task_cut_by_its_pilots_lifetime_finishes_from_its_checkpoint_elsewhere() {
    // Agents look at their lifetime on each heartbeat.
    let mut b = Broker::start_with(&["--heartbeat-interval-ms", "300"]);
    b.agent(&["--cpus", "1", "--name", "short", "--lifetime", "2s"]);
    b.wait_agents(1);
    let wf = counter_workflow(&b, &b.work());
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_until(Duration::from_secs(20), "a few steps", || {
        steps_done(&b) >= 5
    });
    b.agent(&["--cpus", "1", "--name", "next"]);
    let (out, _) = run_within(b.cli_command(&["wait", &run]), Duration::from_secs(60));
    let out = out.expect("the run ends within 60 s");
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), b.log());
    check_ground_truth(&b);
    assert!(b.log().contains("checkpoint of attempt"), "{}", b.log());
}

#[test]
fn a_task_whose_agent_is_sigkilled_finishes_from_its_checkpoint_elsewhere() {
    let mut b = Broker::start_with(&["--heartbeat-timeout", "2", "--heartbeat-interval-ms", "500"]);
    b.agent(&["--cpus", "1", "--name", "doomed"]);
    b.wait_agents(1);
    let wf = counter_workflow(&b, &b.work());
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_until(Duration::from_secs(20), "a few steps", || {
        steps_done(&b) >= 5
    });
    b.agents[0].kill().expect("SIGKILL the agent");
    let _ = b.agents[0].wait();
    b.agent(&["--cpus", "1", "--name", "next"]);
    let (out, _) = run_within(b.cli_command(&["wait", &run]), Duration::from_secs(60));
    let out = out.expect("the run ends within 60 s");
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), b.log());
    check_ground_truth(&b);
}
