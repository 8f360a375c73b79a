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
