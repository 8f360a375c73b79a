//! One failed or lost attempt → a [`Finding`]: its class and the evidence
//! for it, from what the store measured (end class, exit code, peak RSS
//! against the limit, walltime, the agent and how it left) and the patterns
//! of its stderr tail (container image and mount errors, a Python
//! `MemoryError`, a missing file).
//!
//! Owns the rules and their precedence: a runtime's image or mount error
//! first (it comes out as an exit code), then the agent's own verdicts
//! (memory, walltime, input, loss), then stderr patterns, then the bare end
//! class. Must not: group findings or propose fixes.

use serde::Serialize;

use crate::report::model::{AgentRow, AttemptRow, FailureRow, JobRow};
use scalable_common::units::{format_duration_ms, format_size};

/// End classes that are not a failure to diagnose.
const NOT_FAILURES: &[&str] = &["SUCCESS", "CANCELLED", "RETURNED", "DRAINED"];

/// Stderr (or spawn error) patterns of a container image that cannot be had.
const IMAGE_PATTERNS: &[&str] = &[
    "image not known",
    "manifest unknown",
    "pull access denied",
    "repository does not exist",
    "unable to find image",
    "error initializing source",
    "initializing source docker://",
    "failed to pull image",
    "errimagepull",
    "imagepullbackoff",
    "unable to pull",
    "no such image",
    "could not open image",
];
/// Patterns of a bind mount whose source is missing or refused.
const MOUNT_PATTERNS: &[&str] = &[
    "bind source path does not exist",
    "error mounting",
    "mount source",
    "statfs",
    "invalid mount",
    "no such file or directory: ocipermissiondenied",
];
const MEMORY_PATTERNS: &[&str] = &[
    "memoryerror",
    "std::bad_alloc",
    "cannot allocate memory",
    "out of memory",
    "oom-kill",
];
const MISSING_FILE_PATTERNS: &[&str] = &[
    "no such file or directory",
    "filenotfounderror",
    "cannot open",
    "does not exist",
    "not found",
];

/// One failed or lost attempt and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub attempt: u64,
    /// `RUN/JOB/INDEX`.
    pub task: String,
    pub job: String,
    pub tag: Option<String>,
    pub number: u32,
    /// `MEMORY_EXHAUSTION`, `TIMEOUT`, `INVALID_INPUT`, `IMAGE_ERROR`,
    /// `MOUNT_ERROR`, `AGENT_LOST`, `EXIT_CODE`, `SIGNALED`, ...
    pub class: String,
    /// The class the agent or broker recorded.
    pub end_class: String,
    pub exit_code: Option<i32>,
    pub agent: String,
    pub host: String,
    pub peak_rss_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub run_time_ms: Option<u64>,
    /// One line: the measured fact behind the class.
    pub evidence: String,
    /// The last non-empty stderr line, if any was kept.
    pub stderr_last: Option<String>,
}

/// True for an attempt `diagnose` looks at.
pub fn is_failure(a: &AttemptRow) -> bool {
    a.end_class
        .as_deref()
        .is_some_and(|c| !NOT_FAILURES.contains(&c))
}

/// What is known about one failed attempt besides its row.
pub struct Context<'a> {
    pub run: u64,
    pub job: Option<&'a JobRow>,
    pub failure: Option<&'a FailureRow>,
    pub agent: Option<&'a AgentRow>,
}

pub fn classify(a: &AttemptRow, cx: &Context<'_>) -> Finding {
    let end = a.end_class.clone().unwrap_or_default();
    let stderr = cx.failure.map(|f| f.stderr_tail.as_str()).unwrap_or("");
    let detail = cx.failure.map(|f| f.detail.as_str()).unwrap_or("");
    let haystack = format!("{detail}\n{stderr}").to_ascii_lowercase();
    let has = |pats: &[&str]| pats.iter().any(|p| haystack.contains(p));
    let run_time_ms = match (a.started_at_us, a.ended_at_us) {
        (Some(s), Some(e)) if e >= s => Some((e - s) / 1000),
        _ => None,
    };
    let job_name = cx.job.map(|j| j.name.clone()).unwrap_or_default();
    let stderr_last = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(200).collect::<String>());
    let (class, evidence) = if has(IMAGE_PATTERNS) {
        ("IMAGE_ERROR", quoted_line(stderr, detail, IMAGE_PATTERNS))
    } else if has(MOUNT_PATTERNS) {
        ("MOUNT_ERROR", quoted_line(stderr, detail, MOUNT_PATTERNS))
    } else {
        match end.as_str() {
            "MEMORY_EXHAUSTION" => ("MEMORY_EXHAUSTION", memory_evidence(a)),
            "TIMEOUT" => ("TIMEOUT", timeout_evidence(cx.job, run_time_ms)),
            "INVALID_INPUT" => ("INVALID_INPUT", input_evidence(detail, stderr, run_time_ms)),
            "AGENT_LOST" => ("AGENT_LOST", lost_evidence(cx.agent)),
            _ if has(MEMORY_PATTERNS) => (
                "MEMORY_EXHAUSTION",
                format!(
                    "{}; {}",
                    quoted_line(stderr, detail, MEMORY_PATTERNS),
                    memory_evidence(a)
                ),
            ),
            "EXIT_CODE" | "SPAWN_FAILED" if has(MISSING_FILE_PATTERNS) => {
                ("INVALID_INPUT", input_evidence(detail, stderr, run_time_ms))
            }
            "EXIT_CODE" => ("EXIT_CODE", exit_evidence(a.exit_code, &stderr_last)),
            "SIGNALED" => ("SIGNALED", format!("killed by a signal; {detail}")),
            other => (other, detail_or(detail, other)),
        }
    };
    Finding {
        attempt: a.id,
        task: format!("{}/{}/{}", cx.run, job_name, a.index),
        job: job_name,
        tag: cx.job.and_then(|j| j.tag.clone()),
        number: a.number,
        class: class.to_string(),
        end_class: end,
        exit_code: a.exit_code,
        agent: cx.agent.map(|g| g.name.clone()).unwrap_or_default(),
        host: cx.agent.map(|g| g.hostname.clone()).unwrap_or_default(),
        peak_rss_bytes: a.peak_rss_bytes,
        memory_limit_bytes: a.memory_limit_bytes,
        run_time_ms,
        evidence: one_line(&evidence),
        stderr_last,
    }
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.chars().take(300).collect()
}

fn detail_or(detail: &str, class: &str) -> String {
    if detail.trim().is_empty() {
        format!("ended {class}")
    } else {
        detail.to_string()
    }
}

/// The first stderr (or detail) line holding one of `pats`, quoted.
fn quoted_line(stderr: &str, detail: &str, pats: &[&str]) -> String {
    detail
        .lines()
        .chain(stderr.lines())
        .find(|l| {
            let l = l.to_ascii_lowercase();
            pats.iter().any(|p| l.contains(p))
        })
        .map(|l| {
            format!(
                "stderr: {:?}",
                l.trim().chars().take(160).collect::<String>()
            )
        })
        .unwrap_or_default()
}

fn memory_evidence(a: &AttemptRow) -> String {
    match (a.peak_rss_bytes, a.memory_limit_bytes) {
        (Some(p), Some(l)) => format!(
            "peak memory {} against the limit {}",
            format_size(p),
            format_size(l)
        ),
        (Some(p), None) => format!("peak memory {}", format_size(p)),
        _ => "killed for memory (no peak recorded)".into(),
    }
}

fn timeout_evidence(job: Option<&JobRow>, run_ms: Option<u64>) -> String {
    let wall = job
        .and_then(|j| j.walltime_ms)
        .map(format_duration_ms)
        .unwrap_or_else(|| "?".into());
    match run_ms {
        Some(r) => format!("ran {} and hit the walltime {wall}", format_duration_ms(r)),
        None => format!("hit the walltime {wall}"),
    }
}

fn input_evidence(detail: &str, stderr: &str, run_ms: Option<u64>) -> String {
    let line = quoted_line(stderr, detail, MISSING_FILE_PATTERNS);
    let what = if line.is_empty() {
        detail_or(detail, "INVALID_INPUT")
    } else {
        line
    };
    match run_ms {
        Some(r) if r < 2_000 => format!("{what} after {} (fast fail)", format_duration_ms(r)),
        _ => what,
    }
}

fn lost_evidence(agent: Option<&AgentRow>) -> String {
    match agent {
        Some(g) => format!(
            "agent {} on {} left ({}){}",
            g.name,
            g.hostname,
            g.left_reason.as_deref().unwrap_or("no reason recorded"),
            g.pilot_id
                .as_deref()
                .map(|p| format!(", pilot {p}"))
                .unwrap_or_default()
        ),
        None => "its agent was lost".into(),
    }
}

fn exit_evidence(code: Option<i32>, last: &Option<String>) -> String {
    let code = code.map_or("?".to_string(), |c| c.to_string());
    match last {
        Some(l) => format!("exit {code}; stderr ends {l:?}"),
        None => format!("exit {code}"),
    }
}
