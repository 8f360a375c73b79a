//! Rebalancing with a real broker and agents: a task prefetched behind a long
//! one moves to an agent that frees up, runs once and is counted once; a move
//! that reaches the holder after it started the task is refused and the
//! task's one result counts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::*;

/// Each index's line in the tasks' own log (ground truth, not the store).
fn ran(b: &Broker) -> HashMap<u64, u32> {
    let text = std::fs::read_to_string(b.work().join("ran.log")).unwrap_or_default();
    let mut seen = HashMap::new();
    for line in text.lines() {
        *seen.entry(line.trim().parse().unwrap()).or_default() += 1;
    }
    seen
}

/// End classes of the attempts of the task with this index, in order.
fn classes(b: &Broker, index: u64) -> Vec<(String, i64)> {
    let db = b.db();
    let mut q = db
        .prepare("SELECT end_class, agent_id FROM attempts WHERE idx = ?1 ORDER BY id")
        .unwrap();
    q.query_map([index as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn a_task_prefetched_behind_a_long_one_moves_to_a_freed_agent() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1"]);
    b.wait_agents(1);
    let wf = b.write(
        "tail.yaml",
        r#"workflow: tail
jobs:
  - name: tail
    foreach: ["8", "0"]
    command: [sh, -c, "sleep {{ item }}; echo {{ index }} >> ran.log"]
"#,
    );
    let t0 = Instant::now();
    let run = b.ok(&["submit", &wf]);
    let run = run.trim();
    // The long task runs on the only agent; the short one waits behind it.
    wait_until(Duration::from_secs(20), "the long task to start", || {
        let st = b.ok(&["status", run, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&st).unwrap();
        v[0]["counts"]["running"] == 1 && v[0]["counts"]["assigned"] == 1
    });
    b.agent(&["--cpus", "1"]);
    wait_until(
        Duration::from_secs(7),
        "the short task to move and run",
        || ran(&b).contains_key(&1),
    );
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "the short task waited for the long one"
    );
    b.ok(&["wait", run]);
    assert_eq!(ran(&b), HashMap::from([(0, 1), (1, 1)]), "each ran once");
    let moved = classes(&b, 1);
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert_eq!(moved[0].0, "RETURNED");
    assert_eq!(moved[1].0, "SUCCESS");
    assert_ne!(moved[0].1, moved[1].1, "it ran on the other agent");
    let st = b.ok(&["status", run, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(v[0]["counts"]["succeeded"], 2, "{st}");
}

/// The return reaches the holder only after it started the attempt (the
/// broker's writer is held 2 s by a failpoint): the holder keeps it and the
/// broker counts its result; the idle agent never runs it.
#[test]
fn a_return_that_arrives_after_the_start_is_refused_and_the_result_counts() {
    let mut b = Broker::start_env(
        &[],
        &[("SCALABLE_FAILPOINTS", "dispatch.before_return=delay@1")],
    );
    let events = b.work().join("events.log");
    let events_arg = events.to_str().unwrap().to_string();
    b.agent(&["--cpus", "1", "--event-log", &events_arg]);
    b.wait_agents(1);
    let wf = b.write(
        "late.yaml",
        r#"workflow: late
jobs:
  - name: late
    foreach: ["1", "0"]
    command: [sh, -c, "sleep {{ item }}; echo {{ index }} >> ran.log"]
"#,
    );
    let run = b.ok(&["submit", &wf]);
    let run = run.trim();
    wait_until(Duration::from_secs(20), "the long task to start", || {
        let st = b.ok(&["status", run, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&st).unwrap();
        v[0]["counts"]["running"] == 1 && v[0]["counts"]["assigned"] == 1
    });
    b.agent(&["--cpus", "1", "--event-log", &events_arg]);
    b.ok(&["wait", run]);
    wait_until(
        Duration::from_secs(10),
        "the late return to be refused",
        || {
            std::fs::read_to_string(&events)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("keep "))
        },
    );
    assert_eq!(ran(&b), HashMap::from([(0, 1), (1, 1)]), "each ran once");
    let kept = classes(&b, 1);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].0, "SUCCESS");
    assert_eq!(kept[0].1, classes(&b, 0)[0].1, "it ran where it was");
    let st = b.ok(&["status", run, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(v[0]["counts"]["succeeded"], 2, "{st}");
}
