//! Issue 16: the telemetry of a run, as `scalable export` writes it, for a
//! success, a non-zero exit, a memory kill, a timeout and a lost agent; queue
//! wait and run time checked against the times the tasks wrote themselves.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::support::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A task's own clock reading (`date +%s%N`) in milliseconds.
fn task_ms(b: &Broker, file: &str) -> u64 {
    let text = std::fs::read_to_string(b.work().join(file)).unwrap_or_default();
    let ns: u64 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{file}: {text:?}"));
    ns / 1_000_000
}

/// The rows of one exported table file.
fn rows(dir: &std::path::Path, file: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The fields of an attempt row that do not depend on time.
fn fixed(a: &Value) -> Value {
    let keys = [
        "job_name",
        "number",
        "tag",
        "host",
        "end_class",
        "exit_code",
        "spends_retry",
        "cpus",
        "memory_bytes",
        "gpus",
        "request_source",
        "memory_limit_bytes",
        "input_bytes",
        "input_sizes",
        "custom_resources",
        "target",
        "pilot",
        "features",
    ];
    Value::Object(
        keys.iter()
            .map(|k| (k.to_string(), a[*k].clone()))
            .collect(),
    )
}

const WORKFLOW: &str = r#"
workflow: telemetry
jobs:
  - name: ok
    tag: main
    features: {size: "5000", kind: "{{ index }}"}
    resources: {cpus: 1, memory: 64M}
    inputs: [in.dat]
    command: [sh, -c, "date +%s%N > ok.start; sleep 2.5; date +%s%N > ok.end"]
  - name: exit
    tag: main
    command: [sh, -c, "date +%s%N > exit.start; exit 3"]
  - name: oom
    tag: main
    resources: {memory: 100M}
    command: [python3, -c, "x = bytearray(400*1024*1024); import time; time.sleep(5)"]
  - name: slow
    tag: main
    walltime: 1s
    command: [sleep, "30"]
  - name: lost
    tag: lossy
    command: [sh, -c, "date +%s%N > lost.$SCALABLE_ATTEMPT; if [ $SCALABLE_ATTEMPT = 1 ]; then exec sleep 60; fi"]
"#;

/// Once the `lost` task started (its `lost.1` file exists), kills the agent
/// that runs it (`b.agents[1]`, tagged `lossy`), waits until the broker lost
/// it, starts `lossy-2` to run the task again, and waits at most `limit`
/// for `run` to end failed (exit 1: another job fails on purpose).
pub(crate) fn finish_without_the_lossy_agent(b: &mut Broker, run: &str, limit: Duration) {
    wait_until(Duration::from_secs(30), "the lossy task to start", || {
        b.work().join("lost.1").exists()
    });
    let lossy = &mut b.agents[1];
    lossy.kill().unwrap();
    lossy.wait().unwrap();
    wait_until(
        Duration::from_secs(20),
        "the lossy agent to be lost",
        || {
            let agents: Value = serde_json::from_str(&b.ok(&["agents", "--json"])).unwrap();
            agents.as_array().is_some_and(|a| a.len() == 1)
        },
    );
    b.agent(&["--cpus", "1", "--tags", "lossy", "--name", "lossy-2"]);
    let (out, _) = run_within(b.cli_command(&["wait", run]), limit);
    let out = out.unwrap_or_else(|| panic!("the run ends within {limit:?}"));
    assert_eq!(out.status.code(), Some(1), "{}\n{}", stderr(&out), b.log());
}

#[test]
fn a_runs_telemetry_rows_are_exact_and_its_times_match_the_tasks_own() {
    let mut b = Broker::start_with(&["--heartbeat-timeout", "2", "--heartbeat-interval-ms", "500"]);
    b.agent(&[
        "--cpus", "4", "--memory", "4G", "--tags", "main", "--name", "main",
    ]);
    b.agent(&["--cpus", "1", "--tags", "lossy", "--name", "lossy-1"]);
    b.wait_agents(2);
    std::fs::write(b.work().join("in.dat"), vec![1u8; 5000]).unwrap();
    let wf = b.write("telemetry.yaml", WORKFLOW);
    let submitted_from = now_ms();
    let run = b.ok(&["submit", &wf]).trim().to_string();
    let submitted_to = now_ms();
    finish_without_the_lossy_agent(&mut b, &run, Duration::from_secs(60));

    let history = b.work().join(".scalable/runs");
    let out = b.ok(&["export", &run, "--output", history.to_str().unwrap()]);
    let dir = history.join(&run);
    assert_eq!(out.trim(), dir.display().to_string());
    let attempts = rows(&dir, "attempts.jsonl");
    let by_job: BTreeMap<(String, u64), &Value> = attempts
        .iter()
        .map(|a| {
            (
                (
                    a["job_name"].as_str().unwrap().to_string(),
                    a["number"].as_u64().unwrap(),
                ),
                a,
            )
        })
        .collect();
    assert_eq!(by_job.len(), 6, "{attempts:#?}");
    // The agent's limit: the request × its default margin 1.2, rounded up.
    let limit = |request: u64| (request as f64 * 1.2).ceil() as u64;
    let want = |job: &str, number: u64, tag: &str, host_agent: &str, fields: Value| {
        let mut w = json!({
            "job_name": job, "number": number, "tag": tag, "host": host_agent,
            "exit_code": null, "spends_retry": true, "cpus": 1, "memory_bytes": 0, "gpus": 0,
            "request_source": "manifest", "memory_limit_bytes": null, "input_bytes": null,
            "input_sizes": null, "custom_resources": null, "target": null, "pilot": null,
            "features": null,
        });
        for (k, v) in fields.as_object().unwrap() {
            w[k] = v.clone();
        }
        w
    };
    let host = hostname();
    let expected = [
        want(
            "exit",
            1,
            "main",
            &host,
            json!({"end_class": "EXIT_CODE", "exit_code": 3}),
        ),
        want(
            "lost",
            1,
            "lossy",
            &host,
            json!({"end_class": "AGENT_LOST", "spends_retry": false}),
        ),
        want(
            "lost",
            2,
            "lossy",
            &host,
            json!({"end_class": "SUCCESS", "exit_code": 0, "spends_retry": false}),
        ),
        want(
            "ok",
            1,
            "main",
            &host,
            json!({"end_class": "SUCCESS", "exit_code": 0, "spends_retry": false,
            "memory_bytes": 64 << 20, "memory_limit_bytes": limit(64 << 20),
            "input_bytes": 5000, "input_sizes": [5000],
            "features": {"size": "5000", "kind": "0"}}),
        ),
        want(
            "oom",
            1,
            "main",
            &host,
            json!({"end_class": "MEMORY_EXHAUSTION",
            "memory_bytes": 100 << 20, "memory_limit_bytes": limit(100 << 20)}),
        ),
        want("slow", 1, "main", &host, json!({"end_class": "TIMEOUT"})),
    ];
    let got: Vec<Value> = by_job.values().map(|a| fixed(a)).collect();
    assert_eq!(got, expected, "{attempts:#?}");

    // Queue wait and run time against the tasks' own clocks (same host).
    let ok = by_job[&("ok".to_string(), 1)];
    let ready = ok["ready_at_ms"].as_u64().unwrap();
    assert!((submitted_from..=submitted_to).contains(&ready), "{ok}");
    let (start, end) = (task_ms(&b, "ok.start"), task_ms(&b, "ok.end"));
    let wait = ok["queue_wait_ms"].as_u64().unwrap();
    assert!(
        close(wait, start - ready),
        "{wait} vs {} {ok}",
        start - ready
    );
    let run_time = ok["run_time_ms"].as_u64().unwrap();
    assert!(
        close(run_time, end - start),
        "{run_time} vs {} {ok}",
        end - start
    );
    assert!(
        ok["read_bytes"].is_u64() && ok["write_bytes"].is_u64(),
        "{ok}"
    );
    assert!(
        ok["cpu_utilisation"].as_f64().unwrap() < 0.5,
        "it slept: {ok}"
    );

    // The lost task's second attempt waited from the loss to the new agent.
    let lost = by_job[&("lost".to_string(), 2)];
    let lost_ready = lost["ready_at_ms"].as_u64().unwrap();
    let first_end = by_job[&("lost".to_string(), 1)]["ended_at_us"]
        .as_u64()
        .unwrap()
        / 1_000;
    assert!(lost_ready >= first_end.saturating_sub(1_000), "{lost}");
    let started = task_ms(&b, "lost.2");
    let wait = lost["queue_wait_ms"].as_u64().unwrap();
    assert!(close(wait, started - lost_ready), "{lost}");

    // The long attempt has a usage series whose cpu adds up to its total.
    let usage = rows(&dir, "usage.jsonl");
    let ok_id = ok["attempt"].as_u64().unwrap();
    let points: Vec<&Value> = usage.iter().filter(|u| u["attempt"] == ok_id).collect();
    assert!(points.len() >= 2, "{usage:#?}");
    let cpu: u64 = points.iter().map(|p| p["cpu_ms"].as_u64().unwrap()).sum();
    let total = ok["cpu_time_us"].as_u64().unwrap() / 1_000;
    assert!((total..=total + 50).contains(&cpu), "{cpu} vs {total}");

    // Agents: the lost one says why it left; tasks and the run are there.
    let agents = rows(&dir, "agents.jsonl");
    let named = |n: &str| {
        agents
            .iter()
            .find(|a| a["name"] == n)
            .unwrap_or_else(|| panic!("{n}: {agents:#?}"))
    };
    assert_eq!(agents.len(), 3, "{agents:#?}");
    assert_eq!(
        named("lossy-1")["left_reason"],
        "heartbeat timeout",
        "{agents:#?}"
    );
    assert!(named("lossy-1")["left_at_ms"].is_u64());
    assert!(named("main")["left_at_ms"].is_null());
    assert_eq!(named("main")["tags"], json!(["main"]));
    let run_row = &rows(&dir, "run.jsonl")[0];
    assert_eq!(
        (run_row["run"].to_string(), run_row["tasks"].as_u64()),
        (run.clone(), Some(5))
    );
    assert_eq!(rows(&dir, "tasks.jsonl").len(), 5);
    assert_eq!(rows(&dir, "jobs.jsonl").len(), 5);
    assert!(rows(&dir, "pilots.jsonl").is_empty());

    // On stdout: the same rows, every table's lines in one stream.
    let all = b.ok(&["export", &run, "--format", "jsonl"]);
    let lines = all.lines().count();
    assert_eq!(lines, 1 + 5 + 5 + 6 + usage.len() + 3, "{all}");
}

/// A time the broker or agent measured and the one the task took itself
/// agree within the spawn's latency (the agent notes the start right after
/// the spawn returns, the task's first command may run before or after).
fn close(measured_ms: u64, own_ms: u64) -> bool {
    measured_ms.abs_diff(own_ms) <= 500
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Issue 16: `--telemetry-keep` drops a finished run's detail (its log tails
/// and usage series) once it is older than that, and keeps its numbers (the
/// store's unit tests check that unfinished runs and the cache are untouched).
#[test]
fn telemetry_keep_prunes_the_detail_of_old_finished_runs_only() {
    let mut b = Broker::start_with(&["--telemetry-keep", "2s"]);
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    let done = b
        .ok(&[
            "submit",
            "--name",
            "cmd",
            "--",
            "sh",
            "-c",
            "echo kept-for-a-while; sleep 2.2",
        ])
        .trim()
        .to_string();
    let (out, _) = run_within(b.cli_command(&["wait", &done]), Duration::from_secs(30));
    assert_eq!(out.expect("the run ends").status.code(), Some(0));
    let task = format!("{done}/cmd/0");
    assert!(b.ok(&["logs", &task]).contains("kept-for-a-while"));
    let usage_of = |run: &str| {
        b.ok(&["export", run])
            .lines()
            .filter(|l| l.contains(r#""table":"usage""#))
            .count()
    };
    assert!(usage_of(&done) >= 2, "a 2 s task has a series");
    wait_until(
        Duration::from_secs(20),
        "the old run's detail to go",
        || b.ok(&["logs", &task]).is_empty(),
    );
    assert_eq!(usage_of(&done), 0);
    let attempt: Value = b
        .ok(&["export", &done])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["table"] == "attempt")
        .expect("the attempt row stays");
    assert_eq!(attempt["end_class"], "SUCCESS");
    assert!(
        attempt["run_time_ms"].as_u64().unwrap() >= 2_000,
        "{attempt}"
    );
    assert!(attempt["peak_rss_bytes"].as_u64().unwrap() > 0, "{attempt}");
    assert!(
        b.log().contains("telemetry: dropped the detail"),
        "{}",
        b.log()
    );
}
