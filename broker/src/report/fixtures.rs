//! Report data made up for tests: a small run with one attempt of every
//! common ending, and a large generated one. Deterministic (fixed times),
//! so renderings of it are snapshot-tested exactly.
//!
//! Test support only; nothing in the broker or the CLI calls it.

use super::model::{
    AgentRow, AttemptRow, EventRow, FailureRow, JobRow, PilotRow, ReportData, RunInfo,
};

const T0_MS: u64 = 1_764_000_000_000;
const MIB: u64 = 1 << 20;

fn attempt(id: u64, job_id: u64, index: u64, number: u32, agent_id: u64) -> AttemptRow {
    AttemptRow {
        id,
        task_id: 100 + job_id * 10 + index,
        job_id,
        index,
        number,
        agent_id,
        ..AttemptRow::default()
    }
}

/// `at` ms after submit: assigned; `wait`, `run` ms; how it ended.
fn timed(mut a: AttemptRow, at: u64, wait: u64, run: u64, class: &str) -> AttemptRow {
    a.assigned_at_ms = T0_MS + at;
    a.started_at_us = Some((T0_MS + at + wait) * 1000);
    a.ended_at_us = Some((T0_MS + at + wait + run) * 1000);
    a.end_class = Some(class.into());
    a.exit_code = (class == "SUCCESS").then_some(0);
    a.peak_rss_bytes = Some((40 + id_spread(a.id)) * MIB);
    a.cpu_time_us = Some(run * 1000 * 8 / 10);
    a
}

fn id_spread(id: u64) -> u64 {
    (id * 37) % 50
}

/// Two agents (one tagged), two jobs, eight attempts: successes, an exit
/// code retried, a memory kill, a timeout and an attempt lost with its
/// agent; two pilots (one scaled down); two events.
pub fn small() -> ReportData {
    let mut attempts = vec![
        timed(attempt(1, 1, 0, 1, 1), 10, 5, 2_000, "SUCCESS"),
        timed(attempt(2, 1, 1, 1, 1), 10, 20, 1_500, "EXIT_CODE"),
        timed(attempt(3, 1, 2, 1, 2), 12, 8, 3_000, "SUCCESS"),
        timed(attempt(4, 1, 3, 1, 2), 12, 30, 900, "MEMORY_EXHAUSTION"),
        timed(attempt(5, 1, 1, 2, 1), 2_600, 4, 1_800, "SUCCESS"),
        timed(attempt(6, 1, 3, 2, 2), 3_100, 10, 2_500, "TIMEOUT"),
        timed(attempt(7, 2, 0, 1, 2), 5_700, 6, 400, "AGENT_LOST"),
        timed(attempt(8, 2, 0, 2, 1), 6_200, 3, 700, "SUCCESS"),
    ];
    attempts[1].exit_code = Some(3);
    attempts[3].peak_rss_bytes = Some(130 * MIB);
    attempts[3].memory_limit_bytes = Some(120 * MIB);
    attempts[6].cpu_time_us = None;
    attempts[6].peak_rss_bytes = None;
    ReportData {
        run: RunInfo {
            id: 3,
            name: "demo".into(),
            state: "failed".into(),
            submitted_at_ms: T0_MS,
            finished_at_ms: Some(T0_MS + 7_000),
            generated_at_ms: T0_MS + 9_000,
            tasks: 5,
            succeeded: 3,
            failed: 2,
            retries: 2,
            ..RunInfo::default()
        },
        jobs: vec![
            JobRow {
                id: 1,
                name: "sim".into(),
                tag: None,
                cpus: 1,
                memory_bytes: 100 * MIB,
                task_count: 4,
                walltime_ms: Some(4_000),
                retries: 1,
                succeeded: 2,
                failed: 2,
                ..JobRow::default()
            },
            JobRow {
                id: 2,
                name: "aggregate".into(),
                tag: Some("post".into()),
                cpus: 2,
                memory_bytes: 0,
                task_count: 1,
                succeeded: 1,
                ..JobRow::default()
            },
        ],
        attempts,
        agents: agents(),
        pilots: pilots(),
        events: vec![EventRow {
            at_ms: T0_MS + 5,
            kind: "pilot_connected".into(),
            detail: "pilot p-2 connected as agent 2 after 5 ms".into(),
        }],
        failures: failures(),
        scaling_decisions: Vec::new(),
        predictions: Vec::new(),
    }
}

/// The failed attempts with their stderr (one to escape).
fn failures() -> Vec<FailureRow> {
    vec![
        failure(
            2,
            "3/sim/1",
            1,
            "EXIT_CODE",
            Some(3),
            "agent-1",
            "Traceback: <boom> & more\n",
        ),
        failure(
            4,
            "3/sim/3",
            1,
            "MEMORY_EXHAUSTION",
            None,
            "agent-2",
            "killed\n",
        ),
        failure(6, "3/sim/3", 2, "TIMEOUT", None, "agent-2", ""),
        failure(7, "3/aggregate/0", 1, "AGENT_LOST", None, "agent-2", ""),
    ]
}

/// A long-lived untagged agent and a tagged one of a pilot, lost mid-run.
fn agents() -> Vec<AgentRow> {
    vec![
        AgentRow {
            id: 1,
            name: "agent-1".into(),
            hostname: "node-a".into(),
            cpus: 2,
            memory_bytes: 1 << 30,
            connected_at_ms: T0_MS - 1_000,
            ..AgentRow::default()
        },
        AgentRow {
            id: 2,
            name: "agent-2".into(),
            hostname: "node-b".into(),
            tags: vec!["post".into()],
            cpus: 2,
            memory_bytes: 1 << 30,
            connected_at_ms: T0_MS + 5,
            left_at_ms: Some(T0_MS + 6_100),
            left_reason: Some("lost".into()),
            pilot_id: Some("p-2".into()),
            gpus: 0,
        },
    ]
}

/// Two pilots of one scale-up: one scaled down before it connected, one
/// whose agent was lost.
fn pilots() -> Vec<PilotRow> {
    vec![
        PilotRow {
            id: "p-1".into(),
            target: "hpc".into(),
            tag: Some("post".into()),
            provider_id: "1001".into(),
            state: "ended".into(),
            submitted_at_ms: T0_MS,
            ended_at_ms: Some(T0_MS + 3_000),
            reason: Some("scaled down: cancelled before it connected".into()),
            ..PilotRow::default()
        },
        PilotRow {
            id: "p-2".into(),
            target: "hpc".into(),
            tag: Some("post".into()),
            provider_id: "1002".into(),
            state: "ended".into(),
            agent_id: Some(2),
            submitted_at_ms: T0_MS,
            connected_at_ms: Some(T0_MS + 5),
            ended_at_ms: Some(T0_MS + 6_100),
            reason: Some("no longer known to Slurm".into()),
        },
    ]
}

fn failure(
    attempt_id: u64,
    task: &str,
    number: u32,
    class: &str,
    exit_code: Option<i32>,
    agent: &str,
    tail: &str,
) -> FailureRow {
    FailureRow {
        attempt_id,
        task: task.into(),
        number,
        end_class: class.into(),
        exit_code,
        detail: String::new(),
        agent: agent.into(),
        stderr_tail: tail.into(),
    }
}

/// `n` attempts of one job on `agents` agents of 2 cpus, back to back, every
/// hundredth one failing.
pub fn many(n: u64, agents: u64) -> ReportData {
    let mut d = small();
    d.attempts.clear();
    d.failures.clear();
    d.jobs.truncate(1);
    d.jobs[0].task_count = n;
    d.agents = (1..=agents)
        .map(|id| AgentRow {
            id,
            name: format!("agent-{id}"),
            cpus: 2,
            memory_bytes: 1 << 30,
            connected_at_ms: T0_MS,
            ..AgentRow::default()
        })
        .collect();
    let slots = agents * 2;
    for i in 0..n {
        let agent = 1 + i % agents;
        let at = (i / slots) * 50;
        let class = if i % 100 == 99 {
            "EXIT_CODE"
        } else {
            "SUCCESS"
        };
        d.attempts
            .push(timed(attempt(i + 1, 1, i, 1, agent), at, 2, 48, class));
    }
    d.run.finished_at_ms = Some(T0_MS + (n / slots + 1) * 50);
    d.run.tasks = n;
    d
}
