//! The rules on report data built by hand: stderr patterns, a host where
//! everything fails, the memory fix from measured peaks.

use super::*;
use crate::report::model::{AgentRow, AttemptRow, FailureRow, JobRow, RunInfo};

fn attempt(id: u64, job: u64, agent: u64, class: &str) -> AttemptRow {
    AttemptRow {
        id,
        task_id: id,
        job_id: job,
        index: id,
        number: 1,
        agent_id: agent,
        started_at_us: Some(0),
        ended_at_us: Some(5_000_000),
        end_class: Some(class.into()),
        ..AttemptRow::default()
    }
}

fn data() -> ReportData {
    let agent = |id: u64, host: &str| AgentRow {
        id,
        name: format!("a{id}"),
        hostname: host.into(),
        ..AgentRow::default()
    };
    let job = |id: u64, name: &str, tag: &str| JobRow {
        id,
        name: name.into(),
        tag: Some(tag.into()),
        memory_bytes: 100 << 20,
        ..JobRow::default()
    };
    let mut oom = attempt(1, 1, 1, "EXIT_CODE");
    oom.exit_code = Some(1);
    let mut killed = attempt(2, 1, 2, "MEMORY_EXHAUSTION");
    killed.peak_rss_bytes = Some(200 << 20);
    killed.memory_limit_bytes = Some(120 << 20);
    let mut ok = attempt(3, 1, 2, "SUCCESS");
    ok.peak_rss_bytes = Some(90 << 20);
    let mut bad1 = attempt(4, 2, 1, "EXIT_CODE");
    bad1.exit_code = Some(127);
    let mut bad2 = attempt(5, 2, 1, "EXIT_CODE");
    bad2.exit_code = Some(127);
    let fail = |id: u64, tail: &str| FailureRow {
        attempt_id: id,
        stderr_tail: tail.into(),
        ..FailureRow::default()
    };
    ReportData {
        run: RunInfo {
            id: 7,
            name: "r".into(),
            tasks: 5,
            failed: 4,
            ..RunInfo::default()
        },
        jobs: vec![job(1, "model", "m"), job(2, "post", "p")],
        attempts: vec![oom, killed, ok, bad1, bad2],
        agents: vec![agent(1, "n1"), agent(2, "n2")],
        failures: vec![
            fail(
                1,
                "Traceback\n  ...\nMemoryError: Unable to allocate 2 GiB\n",
            ),
            fail(4, "sh: model: command not found\n"),
            fail(5, "Error: pull access denied for lab/post\n"),
        ],
        ..ReportData::default()
    }
}

#[test]
fn stderr_patterns_and_the_agents_verdicts_give_the_class() {
    let d = diagnose(&data(), None);
    let class = |id: u64| {
        d.findings
            .iter()
            .find(|f| f.attempt == id)
            .map(|f| f.class.as_str())
            .unwrap()
    };
    assert_eq!(class(1), "MEMORY_EXHAUSTION", "a Python MemoryError");
    assert_eq!(class(2), "MEMORY_EXHAUSTION");
    assert_eq!(
        class(4),
        "INVALID_INPUT",
        "command not found: a missing file"
    );
    assert_eq!(class(5), "IMAGE_ERROR");
    assert!(
        d.findings.iter().all(|f| f.attempt != 3),
        "a success is no finding"
    );
    let mem = d
        .causes
        .iter()
        .find(|c| c.class == "MEMORY_EXHAUSTION")
        .unwrap();
    assert_eq!(mem.attempts, [1, 2]);
    assert!(
        mem.numbers.iter().any(|n| n.contains("largest peak 200M")),
        "{mem:?}"
    );
}

#[test]
fn a_host_where_everything_fails_is_a_cause() {
    let d = diagnose(&data(), None);
    let host = d.causes.iter().find(|c| c.class == "BAD_HOST").expect("n1");
    assert_eq!(host.shared, ["host n1"]);
    assert_eq!(host.attempts, [1, 4, 5]);
}

#[test]
fn the_memory_fix_comes_from_the_measured_peaks() {
    let d = diagnose(&data(), None);
    let mem = d
        .causes
        .iter()
        .find(|c| c.class == "MEMORY_EXHAUSTION")
        .unwrap();
    let fix = mem.fix.as_ref().unwrap();
    assert_eq!(fix.name, "fix-oom");
    // The killed peak 200M x 1.2 x 1.1 = 264M (above twice the limit, 240M).
    assert!(
        fix.yaml.contains("m:\n        memory: 264M"),
        "{}",
        fix.yaml
    );
    assert!(text::render(&d).contains("Suggested Fixes:"));
}
