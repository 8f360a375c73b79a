//! `scalable why` and `analyze` on transfers (issue 20), through a real
//! broker and `--no-shared-fs` agents in private dirs: a task whose inputs
//! are being fetched, one whose outputs are being handed back (each held
//! mid-transfer by a failpoint, so the test sees the wait), and one that
//! failed on a transfer, each said in one line by `why` and listed by
//! `analyze` (text and JSON).

use std::time::Duration;

use crate::checkpoints_private::{private_agent, private_agent_env};
use crate::support::*;

fn why(b: &Broker, task: &str) -> String {
    b.ok(&["why", task])
}

/// `analyze RUN --json`'s transfers.
fn transfers(b: &Broker, run: &str) -> Vec<serde_json::Value> {
    let out = stdout(&b.cli(&["analyze", run, "--json"]));
    let json: serde_json::Value = serde_json::from_str(&out).expect("analyze --json");
    json["transfers"].as_array().cloned().unwrap_or_default()
}

/// A broker that stalls every fetch after its first MiB, one private agent,
/// and a run whose one task needs a 3 MiB input; the run's id.
fn held_stage_in() -> (Broker, String) {
    let mut b = Broker::start_env(&[], &[("SCALABLE_FAILPOINTS", "broker.staging.get=pause")]);
    private_agent(&mut b, "a", &["--cpus", "1"]);
    b.wait_agents(1);
    std::fs::write(b.work().join("big.bin"), vec![7u8; 3 << 20]).unwrap();
    let wf = b.write(
        "in.yaml",
        "workflow: in\njobs:\n  - name: use\n    inputs: [big.bin]\n    command: [\"true\"]\n",
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    (b, run)
}

/// One private agent that pauses before it uploads, and a run whose one
/// task writes a 3 MiB output; the run's id.
fn held_stage_out(b: &mut Broker) -> String {
    private_agent_env(
        b,
        "a",
        &["--cpus", "1"],
        &[("SCALABLE_FAILPOINTS", "agent.staging.upload=pause")],
    );
    b.wait_agents(1);
    let wf = b.write(
        "out.yaml",
        "workflow: out\njobs:\n  - name: make\n    outputs: [o.bin]\n    command: [sh, -c, \"head -c 3145728 /dev/zero > $SCALABLE_STAGE_DIR/o.bin\"]\n",
    );
    b.ok(&["submit", &wf]).trim().to_string()
}

/// A broker whose staging bound is 1M a file, one private agent, and a run
/// whose one task needs a 2M input, waited for until it failed; its id.
pub(crate) fn failed_over_the_bound() -> (Broker, String) {
    let mut b = Broker::start_env(&[], &[("SCALABLE_STAGE_FILE_BYTES_MAX", "1M")]);
    private_agent(&mut b, "a", &["--cpus", "1"]);
    b.wait_agents(1);
    std::fs::write(b.work().join("big.bin"), vec![7u8; 2 << 20]).unwrap();
    let wf = b.write(
        "bound.yaml",
        "workflow: bound\njobs:\n  - name: big\n    inputs: [big.bin]\n    command: [\"true\"]\n",
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_until(Duration::from_secs(60), "the run to fail", || {
        b.cli(&["wait", &run]).status.code() == Some(1)
    });
    (b, run)
}

#[test]
fn analyze_lists_a_task_waiting_for_its_inputs_with_the_way_files_and_bytes() {
    let (b, run) = held_stage_in();
    let mut last = String::new();
    wait_until(Duration::from_secs(30), "analyze to list the fetch", || {
        last = b.ok(&["analyze", &run]);
        last.contains("(1 file, 1M of 3M)")
    });
    assert!(
        last.contains("*****Tasks waiting for a transfer*****"),
        "{last}"
    );
    let line = format!(
        "{run}/use/0: it waits for its inputs through the broker (1 file, 1M of 3M) on agent a ("
    );
    assert!(last.contains(&line), "{last}");
    let listed = transfers(&b, &run);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let t = &listed[0];
    assert_eq!(t["path"], format!("{run}/use/0"));
    assert_eq!(t["direction"], "in");
    assert_eq!(t["via"], "broker");
    assert_eq!(t["files"], 1);
    assert_eq!(t["done_bytes"], 1 << 20);
    assert_eq!(t["total_bytes"], 3 << 20);
    assert!(t["error"].is_null(), "{t}");
}

#[test]
fn analyze_lists_a_task_waiting_for_its_outputs_to_go_back() {
    let mut b = Broker::start();
    let run = held_stage_out(&mut b);
    let line = format!(
        "{run}/make/0: its process ended; it waits for its outputs through the broker (1 file, 0B of 3M) on agent a ("
    );
    let mut last = String::new();
    wait_until(
        Duration::from_secs(30),
        "analyze to list the upload",
        || {
            last = b.ok(&["analyze", &run]);
            last.contains(&line)
        },
    );
    let listed = transfers(&b, &run);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["direction"], "out");
}

#[test]
fn why_says_a_task_waits_for_its_inputs_with_the_bytes_fetched_so_far() {
    let (b, run) = held_stage_in();
    let task = format!("{run}/use/0");
    let mut last = String::new();
    // The first MiB is counted once it is sent: 0B of 3M may come first.
    wait_until(Duration::from_secs(30), "why to name the fetch", || {
        last = why(&b, &task);
        last.contains("is fetching them (1M of 3M)")
    });
    assert!(
        last.contains("it waits for its inputs: agent a ("),
        "{last}"
    );
    assert_eq!(last.trim().lines().count(), 1, "one line: {last}");
    // The same as data.
    let json = b.ok(&["why", &task, "--json"]);
    assert!(json.contains("staging_in"), "{json}");
}

#[test]
fn why_says_a_task_waits_for_its_outputs_to_go_back() {
    let mut b = Broker::start();
    let run = held_stage_out(&mut b);
    let task = format!("{run}/make/0");
    let mut last = String::new();
    wait_until(Duration::from_secs(30), "why to name the upload", || {
        last = why(&b, &task);
        last.contains("it waits for its outputs")
    });
    assert!(last.contains("its process ended"), "{last}");
    assert!(last.contains("is handing them back (0B of 3M)"), "{last}");
}

#[test]
fn why_and_analyze_say_a_task_failed_on_a_transfer_with_the_path_and_reason() {
    let (b, run) = failed_over_the_bound();
    let out = why(&b, &format!("{run}/big/0"));
    assert!(
        out.contains(
            "it failed on a transfer: input big.bin is 2M, over the staging limit of 1M a file"
        ),
        "{out}"
    );
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    let analyze = stdout(&b.cli(&["analyze", &run]));
    let lines: Vec<&str> = analyze
        .lines()
        .filter(|l| l.contains("staging failed: input big.bin is 2M"))
        .collect();
    assert_eq!(lines.len(), 1, "{analyze}");
    // Which way, how, and on which agent it failed (the error is the reason's).
    let line = analyze
        .lines()
        .find(|l| l.starts_with("transfer: failed on its inputs through the broker"))
        .unwrap_or_else(|| panic!("{analyze}"));
    assert!(line.contains(" on agent a ("), "{line}");
    assert!(!analyze.contains("waiting for a transfer"), "{analyze}");
    let listed = transfers(&b, &run);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let t = &listed[0];
    assert_eq!(t["path"], format!("{run}/big/0"));
    assert_eq!(t["direction"], "in");
    let error = t["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("input big.bin is 2M, over the staging limit of 1M a file (hint: "),
        "{t}"
    );
}
