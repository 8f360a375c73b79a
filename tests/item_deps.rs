//! Per-item dependencies (`after: [{job, per: item}]`, issue 20) through real
//! brokers and agents: a slow item holds back only its own downstream (from
//! the start times the tasks recorded), a failed item cancels only its own
//! downstream, and a broker killed mid-run keeps each task's waits.

use std::time::Duration;

use crate::support::*;

/// Nanoseconds since the epoch written by `date +%s%N` into `name`.
fn stamp(b: &Broker, name: &str) -> u128 {
    let text = std::fs::read_to_string(b.work().join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", b.log()));
    text.trim().parse().expect("a timestamp")
}

/// A diamond per item: prep → left, right → join, each edge per item. Item 0
/// of prep is slow; items 1-3 go through the whole diamond before it ends,
/// and `why` says which task item 0's join waits for meanwhile.
#[test]
fn a_slow_item_does_not_hold_back_the_others_in_a_diamond() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "4"]);
    b.wait_agents(1);
    let wf = b.write(
        "diamond.yaml",
        r#"
workflow: diamond
jobs:
  - name: prep
    range: "0..=3"
    command: [sh, -c, "if [ {{ item }} = 0 ]; then sleep 4; fi; date +%s%N > prep-{{ item }}.end"]
  - name: left
    range: "0..=3"
    after: [{job: prep, per: item}]
    command: [sh, -c, "date +%s%N > left-{{ item }}.start"]
  - name: right
    foreach: [3, 2, 1, 0]
    after: [{job: prep, per: item}]
    command: [sh, -c, "date +%s%N > right-{{ item }}.start"]
  - name: join
    range: "0..=3"
    after: [{job: left, per: item}, {job: right, per: item}]
    command: [sh, -c, "test -f left-{{ item }}.start && test -f right-{{ item }}.start && date +%s%N > join-{{ item }}.start"]
"#,
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_until(Duration::from_secs(20), "items 1-3 to be joined", || {
        (1..=3).all(|i| b.work().join(format!("join-{i}.start")).exists())
    });
    let why = b.ok(&["why", &format!("{run}/join/0")]);
    assert!(
        why.contains(&format!("waiting for task {run}/left/0 (item 0, waiting)")),
        "{why}"
    );
    b.ok(&["wait", &run]);
    let slow_end = stamp(&b, "prep-0.end");
    for i in 1..=3 {
        let join = stamp(&b, &format!("join-{i}.start"));
        assert!(join < slow_end, "join {i} waited for the slow item 0");
        assert!(stamp(&b, &format!("prep-{i}.end")) < stamp(&b, &format!("left-{i}.start")));
    }
    for step in ["left", "right", "join"] {
        assert!(
            stamp(&b, &format!("{step}-0.start")) > slow_end,
            "{step} 0 started before its own prep ended"
        );
    }
}

/// DAGMan per item: item 2 fails; only its left, right and join are
/// cancelled, the other items finish, and `why` names the failed task.
#[test]
fn a_failed_item_cancels_only_its_own_downstream() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "4"]);
    b.wait_agents(1);
    let wf = b.write(
        "fail.yaml",
        r#"
workflow: fail
jobs:
  - name: prep
    range: "0..=3"
    command: [sh, -c, "test {{ item }} != 2"]
  - name: post
    range: "0..=3"
    after: [{job: prep, per: index}]
    command: [sh, -c, "touch post-{{ item }}.done"]
  - name: last
    range: "0..=3"
    after: [{job: post, per: item}]
    command: [sh, -c, "touch last-{{ item }}.done"]
"#,
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    let out = b.cli(&["wait", &run]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for i in [0, 1, 3] {
        assert!(b.work().join(format!("last-{i}.done")).exists(), "item {i}");
    }
    assert!(!b.work().join("post-2.done").exists());
    assert!(!b.work().join("last-2.done").exists());
    let status: serde_json::Value =
        serde_json::from_str(&b.ok(&["status", &run, "--json"])).expect("json");
    let counts = &status[0]["counts"];
    assert_eq!(
        (
            counts["succeeded"].as_u64(),
            counts["failed"].as_u64(),
            counts["cancelled"].as_u64()
        ),
        (Some(9), Some(1), Some(2)),
        "{status}"
    );
    let why = b.ok(&["why", &format!("{run}/last/2")]);
    assert!(why.contains(&format!("{run}/prep/2")), "{why}");
}

/// A broker killed while item 0's upstream runs: after the restart, item 0's
/// downstream still waits for it (not started early, not lost), items done
/// before stay done, and every downstream task ran exactly once.
#[test]
fn a_broker_restart_mid_run_keeps_per_item_state() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "4"]);
    b.wait_agents(1);
    let wf = b.write(
        "restart.yaml",
        r#"
workflow: restart
jobs:
  - name: sim
    foreach: [a, b, c]
    command: [sh, -c, "if [ {{ item }} = a ]; then sleep 5; fi; date +%s%N > sim-{{ item }}.end"]
  - name: post
    foreach: [c, b, a]
    after: [{job: sim, per: item}]
    command: [sh, -c, "echo {{ item }} >> post.log; date +%s%N > post-{{ item }}.start"]
"#,
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_until(
        Duration::from_secs(20),
        "items b and c to be posted",
        || {
            ["b", "c"]
                .iter()
                .all(|i| b.work().join(format!("post-{i}.start")).exists())
        },
    );
    b.kill9();
    b.restart(&[]);
    let why = b.ok(&["why", &format!("{run}/post@a")]);
    assert!(
        why.contains(&format!("waiting for task {run}/sim/0")),
        "{why}"
    );
    let (out, _) = run_within(b.cli_command(&["wait", &run]), Duration::from_secs(60));
    let out = out.expect("the run ends within 60 s");
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), b.log());
    assert!(stamp(&b, "post-a.start") > stamp(&b, "sim-a.end"));
    let log = std::fs::read_to_string(b.work().join("post.log")).unwrap();
    let mut lines: Vec<&str> = log.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["a", "b", "c"], "each post task ran once");
}
