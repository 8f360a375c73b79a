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
    std::fs::write(&manifest, "targets:\n  local: {provider: local}\n").unwrap();
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
        stderr(&out).contains("no target \"hpc\""),
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
