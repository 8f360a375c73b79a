//! A failed task makes `wait` exit 1 and `analyze` name it with its stderr tail.

use crate::support::*;

#[test]
fn wait_exits_1_and_analyze_names_the_failed_task_with_stderr() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    let wf = b.write(
        "fail.yaml",
        r#"
workflow: failing
jobs:
  - name: good
    range: "1..=3"
    command: ["true"]
  - name: bad
    command: [sh, -c, "echo some output; echo 'model diverged at step 42' >&2; exit 3"]
  - name: after_bad
    after: [bad]
    command: ["true"]
"#,
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    let out = b.cli(&["wait", &run]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = b.cli(&["analyze", &run]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains(&format!("{run}/bad/0")), "{text}");
    assert!(text.contains("model diverged at step 42"), "{text}");
    assert!(
        text.contains("exit 3") || text.contains("exit code 3"),
        "{text}"
    );
    // DAGMan semantics: the dependent was cancelled, the rest succeeded.
    let st: serde_json::Value = serde_json::from_str(&b.ok(&["status", &run, "--json"])).unwrap();
    assert_eq!(st[0]["counts"]["succeeded"], 3);
    assert_eq!(st[0]["counts"]["failed"], 1);
    assert_eq!(st[0]["counts"]["cancelled"], 1);
    // The stats count the same.
    let stats: serde_json::Value = serde_json::from_str(&b.ok(&["stats", &run, "--json"])).unwrap();
    assert_eq!(stats["failed"], 1);
    assert_eq!(stats["succeeded"], 3);
    // The stderr is kept for `logs`.
    let logs = b.cli(&["logs", &format!("{run}/bad/0"), "--stderr"]);
    assert!(
        stdout(&logs).contains("model diverged"),
        "{}",
        stderr(&logs)
    );
}

#[test]
fn retries_rerun_a_failing_task_until_it_succeeds() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1"]);
    b.wait_agents(1);
    // Fails on the first attempt, succeeds on the second (SCALABLE_ATTEMPT).
    b.ok(&[
        "submit",
        "--retries",
        "2",
        "--name",
        "flaky",
        "--wait",
        "--",
        "sh",
        "-c",
        "test \"$SCALABLE_ATTEMPT\" -ge 2",
    ]);
    let attempts: i64 = b
        .db()
        .query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(attempts, 2);
}

#[test]
fn missing_declared_output_fails_the_task() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1"]);
    b.wait_agents(1);
    let wf = b.write(
        "out.yaml",
        "workflow: outs\njobs:\n  - name: lies\n    command: [\"true\"]\n    outputs: [never-written.txt]\n",
    );
    let out = b.cli(&["submit", &wf, "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&b.cli(&["analyze", "last"]));
    assert!(text.contains("never-written.txt"), "{text}");
}
