//! Partitionable resources: an agent with 2 cpus runs two 1-cpu tasks at once,
//! never three, as the broker's recorded start and end times show.

use crate::support::*;

#[test]
fn two_cpu_agent_runs_two_one_cpu_tasks_at_once_never_three() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    b.ok(&[
        "submit", "--cpus", "1", "--array", "1-6", "--name", "pack", "--wait", "--", "sleep", "0.5",
    ]);
    let db = b.db();
    let mut q = db
        .prepare("SELECT started_at_us, ended_at_us FROM attempts WHERE end_class = 'SUCCESS'")
        .unwrap();
    let spans: Vec<(i64, i64)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(spans.len(), 6);
    // Sweep over start/end events: the most attempts running at one instant.
    let mut events: Vec<(i64, i32)> = spans
        .iter()
        .flat_map(|(s, e)| [(*s, 1), (*e, -1)])
        .collect();
    events.sort_by_key(|(t, d)| (*t, *d)); // ends before starts at the same instant
    let (mut now, mut max) = (0, 0);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    assert_eq!(
        max, 2,
        "an agent with 2 cpus ran {max} one-cpu tasks at once"
    );
}

#[test]
fn a_task_larger_than_every_agent_stays_ready() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1"]);
    b.wait_agents(1);
    let run = b.ok(&["submit", "--cpus", "4", "--", "true"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let st = b.ok(&["status", run.trim(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(v[0]["counts"]["ready"], 1, "{st}");
}

/// The most of `weight` in use at one instant over `(weight, start, end)` intervals.
fn peak(intervals: &[(i64, i64, i64)]) -> i64 {
    let mut events: Vec<(i64, i64)> = intervals
        .iter()
        .flat_map(|(w, s, e)| [(*s, *w), (*e, -*w)])
        .collect();
    events.sort_by_key(|(t, d)| (*t, *d)); // ends before starts at the same instant
    let (mut now, mut max) = (0, 0);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    max
}

#[test]
fn mixed_sizes_never_exceed_the_agents_cpus_or_memory() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "4", "--memory", "1G"]);
    b.wait_agents(1);
    let wf = b.write(
        "mixed.yaml",
        r#"workflow: mixed
jobs:
  - {name: c1, range: "1..=12", resources: {cpus: 1, memory: 256M}, command: [sleep, "0.2"]}
  - {name: c2, range: "1..=6", resources: {cpus: 2, memory: 512M}, command: [sleep, "0.2"]}
  - {name: c4, range: "1..=3", resources: {cpus: 4, memory: 128M}, command: [sleep, "0.2"]}
"#,
    );
    b.ok(&["submit", &wf, "--wait"]);
    let db = b.db();
    let mut q = db
        .prepare(
            "SELECT j.cpus, j.memory_bytes, a.started_at_us, a.ended_at_us FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.end_class = 'SUCCESS'",
        )
        .unwrap();
    let rows: Vec<(i64, i64, i64, i64)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 21);
    let cpus: Vec<(i64, i64, i64)> = rows.iter().map(|r| (r.0, r.2, r.3)).collect();
    let mem: Vec<(i64, i64, i64)> = rows.iter().map(|r| (r.1, r.2, r.3)).collect();
    assert!(peak(&cpus) <= 4, "{} cpus in use at once", peak(&cpus));
    assert!(peak(&mem) <= 1 << 30, "{} bytes in use at once", peak(&mem));
    assert!(peak(&cpus) >= 3, "the agent was never packed");
}

#[test]
fn a_four_cpu_task_runs_while_one_cpu_tasks_keep_arriving() {
    let mut b = Broker::start_with(&["--reserve-after-ms", "500"]);
    b.agent(&["--cpus", "4"]);
    b.wait_agents(1);
    let stream = b
        .ok(&[
            "submit", "--array", "1-120", "--name", "small", "--", "sleep", "0.25",
        ])
        .trim()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let big = b
        .ok(&["submit", "--cpus", "4", "--name", "big", "--", "true"])
        .trim()
        .to_string();
    b.ok(&["wait", &big]);
    let db = b.db();
    let big_start: i64 = db
        .query_row(
            "SELECT started_at_us FROM attempts WHERE run_id = ?1",
            [big.parse::<i64>().unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    // Small tasks that had not finished when the big one started (tasks without
    // an attempt row had not even been assigned).
    let small_done_before: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM attempts WHERE run_id = ?1 AND end_class = 'SUCCESS' AND ended_at_us <= ?2",
            rusqlite::params![stream.parse::<i64>().unwrap(), big_start],
            |r| r.get(0),
        )
        .unwrap();
    let smalls_after = 120 - small_done_before;
    assert!(
        smalls_after >= 40,
        "the 4-cpu task waited for the stream to dry up (only {smalls_after} small tasks were left)"
    );
}

#[test]
fn a_custom_resource_is_never_oversubscribed() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "4", "--resource", "licence=1"]);
    b.wait_agents(1);
    b.ok(&[
        "submit",
        "--array",
        "1-4",
        "--resource",
        "licence=1",
        "--wait",
        "--",
        "sleep",
        "0.2",
    ]);
    let db = b.db();
    let mut q = db
        .prepare("SELECT started_at_us, ended_at_us FROM attempts WHERE end_class = 'SUCCESS'")
        .unwrap();
    let spans: Vec<(i64, i64, i64)> = q
        .query_map([], |r| Ok((1, r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(spans.len(), 4);
    assert_eq!(peak(&spans), 1, "two tasks held the one licence at once");
}
