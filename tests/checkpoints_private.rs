//! Checkpoints without a shared filesystem (issue 20): the tests of
//! `checkpoints.rs` again, with agents started `--no-shared-fs` in private
//! directories of their own (separate dirs on this one host stand in for
//! separate machines). The task's checkpoint travels through the broker:
//! uploaded while it runs (every `POLL_MS` when it changed) and once more at
//! a graceful end, fetched into the next attempt's private directory. The
//! ground truth is a log outside every private directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

use crate::checkpoints::STEPS;
/// One step of the counter, in ms.
const STEP_MS: u32 = 100;
/// The agents' checkpoint poll interval in these tests.
const POLL_MS: u32 = 300;

/// The shared counting job, its ground truth outside the private dirs.
fn counter_workflow(b: &Broker) -> String {
    let truth = b.dir.path().join("truth");
    std::fs::create_dir_all(&truth).unwrap();
    crate::checkpoints::counter_workflow(b, &truth)
}

/// A `--no-shared-fs` agent in a private dir of its own (`args`: its
/// `--cpus`, at least).
pub(crate) fn private_agent(b: &mut Broker, name: &str, args: &[&str]) -> PathBuf {
    private_agent_env(b, name, args, &[])
}

/// `private_agent` with more environment (failpoints).
pub(crate) fn private_agent_env(
    b: &mut Broker,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> PathBuf {
    let poll = POLL_MS.to_string();
    let mut all = vec![("SCALABLE_CHECKPOINT_POLL_MS", poll.as_str())];
    all.extend_from_slice(env);
    crate::support::staging::private_agent_with(b, name, args, &all)
}

fn truth(b: &Broker, name: &str) -> String {
    std::fs::read_to_string(b.dir.path().join("truth").join(name)).unwrap_or_default()
}

fn steps_done(b: &Broker) -> usize {
    truth(b, "steps.log").lines().count()
}

/// Every step done, in order, none twice beyond `redo_max` steps (the last
/// checkpoint interval), the second attempt started from a checkpoint, the
/// kept versions are gone and the private dirs are clean.
fn check_ground_truth(b: &Broker, redo_max: u32, private: &[&Path]) {
    let log = truth(b, "steps.log");
    let steps: Vec<u32> = log.lines().map(|l| l.parse().unwrap()).collect();
    // Two runs of counting, each by one, the second from where the kept
    // checkpoint left the first.
    let cut = (1..steps.len()).find(|&i| steps[i] != steps[i - 1] + 1);
    let (first, second) = steps.split_at(cut.unwrap_or(steps.len()));
    assert_eq!(first.first(), Some(&1), "{steps:?}");
    assert!(first.windows(2).all(|w| w[1] == w[0] + 1), "{steps:?}");
    assert!(second.windows(2).all(|w| w[1] == w[0] + 1), "{steps:?}");
    let last = second.last().or(first.last());
    assert_eq!(last, Some(&STEPS), "{steps:?}");
    let redone = steps.len() as u32 - STEPS;
    assert!(
        redone <= redo_max,
        "{redone} steps redone, beyond the last checkpoint interval ({redo_max}): {steps:?}"
    );
    let attempts = truth(b, "attempts.log");
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
    wait_until(
        Duration::from_secs(10),
        "private dirs to be cleaned",
        || {
            private.iter().all(|d| {
                std::fs::read_dir(d.join("staged"))
                    .map(|mut e| e.next().is_none())
                    .unwrap_or(true)
            })
        },
    );
}

/// Telemetry (schema 7): the first attempt uploaded checkpoint bytes, the
/// second fetched them (in) and uploaded its own.
fn check_transfers_recorded(b: &Broker) {
    type Row = (i64, Option<i64>, Option<i64>, Option<i64>);
    let rows: Vec<Row> = b
        .db()
        .prepare("SELECT number, stage_in_bytes, checkpoint_bytes, checkpoint_ms FROM attempts ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let second = rows.iter().find(|r| r.0 == 2).expect("a second attempt");
    assert!(
        second.1 >= Some(1),
        "the restore counts as staged in: {rows:?}"
    );
    assert!(second.2 >= Some(1), "{rows:?}");
}

fn events(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("events.log")).unwrap_or_default()
}

#[test]
fn a_private_task_cut_by_its_pilots_lifetime_finishes_from_its_checkpoint_elsewhere() {
    let mut b = Broker::start_with(&["--heartbeat-interval-ms", "300"]);
    let short = private_agent(&mut b, "short", &["--cpus", "1", "--lifetime", "2s"]);
    b.wait_agents(1);
    let wf = counter_workflow(&b);
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_until(Duration::from_secs(20), "a few steps", || {
        steps_done(&b) >= 5
    });
    let next = private_agent(&mut b, "next", &["--cpus", "1"]);
    let (out, _) = run_within(b.cli_command(&["wait", &run]), Duration::from_secs(60));
    let out = out.expect("the run ends within 60 s");
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), b.log());
    // The drain's last upload: at most the step the cut caught between its
    // log line and its checkpoint is done again.
    check_ground_truth(&b, 1, &[&short, &next]);
    check_transfers_recorded(&b);
    let first = b
        .db()
        .query_row(
            "SELECT checkpoint_bytes FROM attempts WHERE number = 1",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )
        .unwrap();
    assert!(first >= Some(1), "the drained attempt reported its uploads");
    assert!(
        events(&short).contains("checkpoint-out"),
        "{}",
        events(&short)
    );
    assert!(events(&next).contains("checkpoint-in"), "{}", events(&next));
}

#[test]
fn a_private_task_whose_agent_is_sigkilled_finishes_from_its_checkpoint_elsewhere() {
    let mut b = Broker::start_with(&["--heartbeat-timeout", "2", "--heartbeat-interval-ms", "500"]);
    let doomed = private_agent(&mut b, "doomed", &["--cpus", "1"]);
    b.wait_agents(1);
    let wf = counter_workflow(&b);
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_until(Duration::from_secs(20), "a few steps", || {
        steps_done(&b) >= 15
    });
    b.agents[0].kill().expect("SIGKILL the agent");
    let _ = b.agents[0].wait();
    let next = private_agent(&mut b, "next", &["--cpus", "1"]);
    let (out, _) = run_within(b.cli_command(&["wait", &run]), Duration::from_secs(60));
    let out = out.expect("the run ends within 60 s");
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), b.log());
    // Killed, the agent uploaded nothing at the end: what it uploaded while
    // the task ran is what the next attempt got, at most one poll interval
    // (and the upload that followed it, one step more) behind.
    let interval = POLL_MS / STEP_MS;
    check_ground_truth(&b, interval + 2, &[&next]);
    check_transfers_recorded(&b);
    let _ = doomed;
    assert!(events(&next).contains("checkpoint-in"), "{}", events(&next));
}
