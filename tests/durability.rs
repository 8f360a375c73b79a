//! Nothing lost (issue 6): broker restarts, fenced agents, the cache, resume,
//! a full disk. Oracles are files the tasks write themselves (a ground-truth
//! log appended with O_APPEND), not the store.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;

/// Lines of the ground-truth log `truth.log` in the work dir.
fn truth(b: &Broker) -> Vec<String> {
    std::fs::read_to_string(b.work().join("truth.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn status(b: &Broker, run: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&b.ok(&["status", run, "--json"])).unwrap()[0].clone()
}

fn stats(b: &Broker, run: &str) -> serde_json::Value {
    serde_json::from_str(&b.ok(&["stats", run, "--json"])).unwrap()
}

fn wait_state(b: &Broker, run: &str, state: &str, limit: Duration) {
    wait_until(limit, &format!("run {run} to be {state}"), || {
        b.cli(&["status", run, "--json"]).status.success() && status(b, run)["state"] == state
    });
}

#[test]
fn the_cache_skips_what_did_not_change_and_why_names_what_did() {
    let b = Broker::start();
    let mut b = b;
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    std::fs::create_dir_all(b.work().join("in")).unwrap();
    for i in 1..=3 {
        std::fs::write(b.work().join(format!("in/{i}.txt")), format!("input {i}\n")).unwrap();
    }
    let wf = b.write(
        "cached.yaml",
        r#"workflow: cached
jobs:
  - name: square
    range: "1..=3"
    cache: true
    inputs: ["in/{{ item }}.txt"]
    outputs: ["out/{{ item }}.txt"]
    command: [sh, -c, "echo ran {{ item }} >> truth.log; mkdir -p out; cat in/{{ item }}.txt in/{{ item }}.txt > out/{{ item }}.txt"]
"#,
    );
    let entries = |b: &Broker| -> i64 {
        b.db()
            .query_row("SELECT COUNT(*) FROM cache_entries", [], |r| r.get(0))
            .unwrap_or(0)
    };
    let first = b.ok(&["submit", &wf, "--wait"]);
    assert_eq!(truth(&b).len(), 3, "first run runs everything ({first})");
    wait_until(Duration::from_secs(10), "3 cache entries", || {
        entries(&b) == 3
    });
    // A lost output is restored from the cache.
    std::fs::remove_file(b.work().join("out/2.txt")).unwrap();
    b.ok(&["submit", &wf, "--wait"]);
    let st = status(&b, "last");
    assert_eq!(st["counts"]["cached"], 3, "{st}");
    assert_eq!(truth(&b).len(), 3, "nothing ran again");
    assert_eq!(
        std::fs::read_to_string(b.work().join("out/2.txt")).unwrap(),
        "input 2\ninput 2\n"
    );
    // One input changes: exactly the task that reads it runs.
    std::fs::write(b.work().join("in/3.txt"), "changed\n").unwrap();
    b.ok(&["submit", &wf, "--wait"]);
    let st = status(&b, "last");
    assert_eq!(st["counts"]["cached"], 2, "{st}");
    assert_eq!(st["counts"]["succeeded"], 1, "{st}");
    let t = truth(&b);
    assert_eq!(t.len(), 4);
    assert_eq!(t[3], "ran 3");
    let why = b.ok(&["why", "last/square/2"]);
    assert!(why.contains("input in/3.txt changed"), "{why}");
    let why = b.ok(&["why", "last/square/0"]);
    assert!(why.contains("cached"), "{why}");
}

#[test]
fn resume_reruns_only_the_failed_task_and_its_cancelled_downstream() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    let wf = b.write(
        "rescue.yaml",
        r#"workflow: rescue
jobs:
  - name: up
    range: "1..=3"
    command: [sh, -c, "echo up {{ item }} >> truth.log; test {{ item }} != 2 || test -e fixed"]
  - name: down
    after: [up]
    command: [sh, -c, "echo down >> truth.log"]
"#,
    );
    let out = b.cli(&["submit", &wf, "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let st = status(&b, "last");
    assert_eq!(st["counts"]["failed"], 1, "{st}");
    assert_eq!(st["counts"]["cancelled"], 1, "{st}");
    std::fs::write(b.work().join("fixed"), "").unwrap();
    let out = b.cli(&["resume", "last", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 task(s) run again"),
        "{}",
        stdout(&out)
    );
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for l in truth(&b) {
        *runs.entry(l).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = [("up 1", 1), ("up 2", 2), ("up 3", 1), ("down", 1)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(runs, expected, "successes are kept, only the rest ran");
    assert_eq!(status(&b, "last")["state"], "succeeded");
}

#[test]
fn a_full_disk_stops_the_broker_cleanly_and_a_restart_finishes_the_run() {
    // The 12th commit fails as if the disk were full.
    let mut b = Broker::start_env(&[], &[("SCALABLE_FAILPOINTS", "store.commit=error@12")]);
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    let run = b
        .ok(&[
            "submit",
            "--array",
            "1-30",
            "--",
            "sh",
            "-c",
            "echo $SCALABLE_TASK_ID >> truth.log; sleep 0.2",
        ])
        .trim()
        .to_string();
    let status_code = {
        let start = std::time::Instant::now();
        loop {
            if let Some(s) = b.child.try_wait().unwrap() {
                break s.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the broker kept going"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(status_code, Some(1));
    let log = b.log();
    assert!(
        log.contains("cannot write the broker's database") && log.contains("disk is full"),
        "{log}"
    );
    let check: String = b
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // The acknowledged submit survived; a restart (disk freed) finishes it.
    b.restart(&[]);
    wait_state(&b, &run, "succeeded", Duration::from_secs(60));
    let st = status(&b, &run);
    assert_eq!(st["counts"]["succeeded"], 30, "{st}");
    let mut seen: Vec<String> = truth(&b);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 30, "every task ran");
}

#[test]
fn a_broker_restart_during_long_tasks_recomputes_none_of_them() {
    let mut b = Broker::start_with(&["--heartbeat-timeout", "3", "--heartbeat-interval-ms", "500"]);
    for _ in 0..2 {
        b.agent(&["--cpus", "2", "--reconnect-max", "1s"]);
    }
    b.wait_agents(2);
    let run = b
        .ok(&[
            "submit",
            "--array",
            "1-4",
            "--",
            "sh",
            "-c",
            "echo start $SCALABLE_TASK_ID $SCALABLE_ATTEMPT_ID >> truth.log; sleep 4",
        ])
        .trim()
        .to_string();
    wait_until(Duration::from_secs(15), "4 tasks running", || {
        status(&b, &run)["counts"]["running"] == 4
    });
    b.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    b.restart(&[]);
    wait_state(&b, &run, "succeeded", Duration::from_secs(40));
    let t = truth(&b);
    assert_eq!(t.len(), 4, "each task ran once: {t:?}");
    let s = stats(&b, &run);
    assert_eq!(s["attempts"], 4, "{s}");
    assert_eq!(s["lost_attempts"], 0, "{s}");
    assert!(b.log().contains("restored 1 runs"), "{}", b.log());
}

/// A broker with a 2 s heartbeat timeout, one 1-cpu agent, and one task of
/// `script` submitted and running.
fn one_running_task(script: &str) -> (Broker, String) {
    let mut b = Broker::start_with(&["--heartbeat-timeout", "2", "--heartbeat-interval-ms", "500"]);
    b.agent(&["--cpus", "1", "--reconnect-max", "1s"]);
    b.wait_agents(1);
    let run = b
        .ok(&["submit", "--", "sh", "-c", script])
        .trim()
        .to_string();
    wait_until(Duration::from_secs(10), "the task to run", || {
        status(&b, &run)["counts"]["running"] == 1
    });
    (b, run)
}

#[test]
fn a_stopped_agent_that_wakes_is_fenced_and_its_result_ignored() {
    let (mut b, run) = one_running_task(
        "echo start $SCALABLE_ATTEMPT_ID >> truth.log; sleep 2; echo end $SCALABLE_ATTEMPT_ID >> truth.log",
    );
    let pid = nix::unistd::Pid::from_raw(b.agents[0].id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // Declared lost; the task goes to a second agent.
    b.agent(&["--cpus", "1", "--reconnect-max", "1s"]);
    wait_until(Duration::from_secs(20), "a second attempt to start", || {
        truth(&b).iter().filter(|l| l.starts_with("start")).count() == 2
    });
    // The first attempt's process finished meanwhile; wake its agent.
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    wait_state(&b, &run, "succeeded", Duration::from_secs(20));
    wait_until(
        Duration::from_secs(10),
        "the stale result to arrive",
        || stats(&b, &run)["stale_results"] == 1,
    );
    let s = stats(&b, &run);
    assert_eq!(s["lost_attempts"], 1, "{s}");
    assert_eq!(s["retries"], 0, "a lost agent spends no retry: {s}");
    // Counted once: the attempt the store counts is the second one.
    let counted: i64 = b
        .db()
        .query_row(
            "SELECT COUNT(*) FROM attempts WHERE end_class = 'SUCCESS'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(counted, 1);
}

#[test]
fn duplicate_results_are_counted_once_and_outputs_promoted() {
    let mut b = Broker::start();
    // Test hook: this agent sends every result twice (fault F13).
    let agent = std::process::Command::new(agent_exe())
        .arg("--token-file")
        .arg(b.token_file())
        .args(["--cpus", "2"])
        .env("SCALABLE_TEST_DUPLICATE_RESULTS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    b.agents.push(agent);
    b.wait_agents(1);
    let wf = b.write(
        "dup.yaml",
        r#"workflow: dup
jobs:
  - name: j
    range: "1..=20"
    outputs: ["out/{{ item }}.txt"]
    command: [sh, -c, "mkdir -p $SCALABLE_STAGE_DIR/out && echo $SCALABLE_ATTEMPT_ID > $SCALABLE_STAGE_DIR/out/{{ item }}.txt"]
"#,
    );
    b.ok(&["submit", &wf, "--wait"]);
    let st = status(&b, "last");
    assert_eq!(st["counts"]["succeeded"], 20, "{st}");
    let db = b.db();
    let attempts: i64 = db
        .query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(attempts, 20);
    wait_until(
        Duration::from_secs(10),
        "every duplicate to be seen",
        || {
            b.db()
                .query_row(
                    "SELECT COUNT(*) FROM events WHERE kind = 'duplicate_result'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
                == 20
        },
    );
    let s = stats(&b, "last");
    assert_eq!(s["stale_results"], 0, "a duplicate is not stale: {s}");
    for i in 1..=20 {
        let out = std::fs::read_to_string(b.work().join(format!("out/{i}.txt"))).unwrap();
        assert!(out.trim().parse::<u64>().is_ok(), "out/{i}.txt: {out:?}");
    }
    assert!(
        !b.work()
            .join(".scalable-stage")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "stages removed"
    );
}

#[test]
fn a_memory_exhausted_task_is_retried_with_a_raised_request() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1", "--memory", "2G"]);
    b.wait_agents(1);
    let wf = b.write(
        "oom.yaml",
        r#"workflow: oom
jobs:
  - name: hungry
    resources: {cpus: 1, memory: 40M}
    retries: 3
    command: [python3, -c, "import time; b = b'x' * (90 << 20); time.sleep(2)"]
"#,
    );
    let out = b.cli(&["submit", &wf, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), b.log());
    let db = b.db();
    let classes: Vec<String> = db
        .prepare("SELECT end_class FROM attempts ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    // The sampler may catch the task anywhere on its way up, so the first
    // raise can fall short; each retry raises from the peak it measured.
    let (last, before) = classes.split_last().unwrap();
    assert_eq!(last, "SUCCESS", "{classes:?}");
    assert!(!before.is_empty(), "killed at least once: {classes:?}");
    assert!(
        before.iter().all(|c| c == "MEMORY_EXHAUSTION"),
        "{classes:?}"
    );
    let detail: String = db
        .query_row(
            "SELECT detail FROM events WHERE kind = 'memory_raised' ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(detail.contains("raised from 40M to"), "{detail}");
}

#[test]
fn a_stopped_broker_that_resumes_condemns_no_agent() {
    // F4: the broker is SIGSTOPped for twice its heartbeat timeout.
    let (b, run) = one_running_task("echo start $SCALABLE_ATTEMPT_ID >> truth.log; sleep 6");
    let pid = nix::unistd::Pid::from_raw(b.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    wait_state(&b, &run, "succeeded", Duration::from_secs(30));
    assert_eq!(
        truth(&b).len(),
        1,
        "not re-run: {:?}\n{}",
        truth(&b),
        b.log()
    );
    let s = stats(&b, &run);
    assert_eq!(s["lost_attempts"], 0, "{s}");
    let stalls: i64 = b
        .db()
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'broker_stalled'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stalls >= 1, "the broker noticed its own stall");
}
