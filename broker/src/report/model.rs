//! The data of a run's report as the store holds it: the run, its jobs,
//! every attempt, the agents and pilots that served it, its events, a sample
//! of failures with their stderr tails, and the sections later issues fill
//! (scaling decisions, predictions).
//!
//! Plain serde data: the loader fills it, the broker sends it in pages
//! ([`ReportChunk`]), the renderers read it. It must not compute figures
//! (`summary` does) nor word anything (the renderers do). Fields that only
//! newer stores record are `Option`s (`None`: not recorded), so one model
//! reads every schema.
//!
//! The JSON renderer prints these structs as they are: renaming or
//! reordering a field changes the documented format (docs/report-json.md).

use serde::{Deserialize, Serialize};

/// The layout of [`ReportChunk`] (`ReportPage.format`); bumped on any
/// change of these types (3: attempts carry `transfers`).
pub const REPORT_FORMAT: u32 = 3;

/// Failed attempts kept with their stderr tail (the counts cover all).
pub const FAILURES_SHOWN_MAX: usize = 200;
/// Of each failure's stderr, the last this many bytes are kept.
pub const FAILURE_TAIL_BYTES_MAX: usize = 2 << 10;
/// Events a report carries (the newest are dropped past it).
pub const EVENTS_MAX: usize = 5_000;
/// Sized attempts whose predictions a report carries (the first; up to
/// four rows each), so the first page stays within its budget.
pub const PREDICTED_ATTEMPTS_MAX: usize = 2_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportData {
    pub run: RunInfo,
    pub jobs: Vec<JobRow>,
    pub attempts: Vec<AttemptRow>,
    pub agents: Vec<AgentRow>,
    pub pilots: Vec<PilotRow>,
    pub events: Vec<EventRow>,
    /// At most [`FAILURES_SHOWN_MAX`] failed attempts, each with its tail.
    pub failures: Vec<FailureRow>,
    /// Filled by the scaler (issues 17/18); empty until then.
    pub scaling_decisions: Vec<ScalingDecision>,
    /// The advisor's predictions for attempts it sized (`memory: auto`),
    /// with the plain percentile's beside them (`accountability`).
    pub predictions: Vec<Prediction>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: u64,
    pub name: String,
    pub state: String,
    pub submitted_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// The broker's clock when the report was read (the end of a run still
    /// going).
    pub generated_at_ms: u64,
    pub tasks: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub cached: u64,
    pub incomplete: u64,
    /// Retries spent (failed attempts whose task went round again).
    pub retries: u64,
    /// Events of the run not carried (past [`EVENTS_MAX`]).
    pub events_dropped: u64,
}

/// A job with what each of its tasks requested.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub id: u64,
    pub name: String,
    pub tag: Option<String>,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub gpus: u32,
    pub retries: u32,
    pub task_count: u64,
    /// The job's walltime as the core knows it; `None`: none.
    pub walltime_ms: Option<u64>,
    pub succeeded: u64,
    pub failed: u64,
}

/// What an attempt asked for, when the store kept it per attempt (a memory
/// raise after an OOM changes it from the job's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Requested {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub gpus: u32,
}

/// One point of an attempt's usage series: cumulative cpu time and the
/// process tree's RSS at `at_us` (the agent's clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UsagePoint {
    pub at_us: u64,
    pub cpu_time_us: u64,
    pub rss_bytes: u64,
}

/// One attempt. Broker times are milliseconds, agent times microseconds
/// (as stored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptRow {
    pub id: u64,
    pub task_id: u64,
    pub job_id: u64,
    pub index: u64,
    pub number: u32,
    pub agent_id: u64,
    /// When its task became ready (schema 5); `None`: not recorded.
    pub ready_at_ms: Option<u64>,
    pub assigned_at_ms: u64,
    pub started_at_us: Option<u64>,
    pub ended_at_us: Option<u64>,
    /// `SUCCESS`, `EXIT_CODE`, `MEMORY_EXHAUSTION`, ...; `None` while open.
    pub end_class: Option<String>,
    pub exit_code: Option<i32>,
    pub peak_rss_bytes: Option<u64>,
    pub cpu_time_us: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    /// Per-attempt request (schema 5); `None`: the job's.
    pub requested: Option<Requested>,
    pub read_bytes: Option<u64>,
    pub written_bytes: Option<u64>,
    /// What staging moved (schema 7); `None`: nothing reported (a shared
    /// filesystem).
    pub transfers: Option<scalable_common::staging::Transfers>,
    /// Bounded usage series (schema 5); `None`: not recorded.
    pub usage: Option<Vec<UsagePoint>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentRow {
    pub id: u64,
    pub name: String,
    pub hostname: String,
    pub tags: Vec<String>,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub gpus: u32,
    pub connected_at_ms: u64,
    pub left_at_ms: Option<u64>,
    pub left_reason: Option<String>,
    pub pilot_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PilotRow {
    pub id: String,
    pub target: String,
    pub tag: Option<String>,
    pub provider_id: String,
    pub state: String,
    pub agent_id: Option<u64>,
    pub submitted_at_ms: u64,
    pub connected_at_ms: Option<u64>,
    pub ended_at_ms: Option<u64>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub at_ms: u64,
    pub kind: String,
    pub detail: String,
}

/// A failed attempt with the end of its stderr.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailureRow {
    pub attempt_id: u64,
    /// `RUN/JOB/INDEX`.
    pub task: String,
    pub number: u32,
    pub end_class: String,
    pub exit_code: Option<i32>,
    pub detail: String,
    pub agent: String,
    /// The last [`FAILURE_TAIL_BYTES_MAX`] bytes, lossily decoded.
    pub stderr_tail: String,
}

/// A scaling decision as the scaler recorded it (summed over the target's
/// groups; `tag` is the group's when there is one), with its outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalingDecision {
    pub at_ms: u64,
    pub tag: Option<String>,
    pub before: u32,
    pub after: u32,
    pub reasoning: String,
    pub confidence: Option<f64>,
    pub predicted_completion_ms: Option<u64>,
    /// Pilots the work asked for, within the bounds (`after` can differ:
    /// cooldown, backoff, busy pilots kept).
    #[serde(default)]
    pub desired: u32,
    /// Its outcome (issue 18): when its pilots connected, their busy and
    /// idle pilot-seconds, what they cost; `None` until known.
    #[serde(default)]
    pub pilots_connected_at_ms: Option<u64>,
    #[serde(default)]
    pub busy_seconds: Option<f64>,
    #[serde(default)]
    pub idle_seconds: Option<f64>,
    #[serde(default)]
    pub cost: Option<f64>,
}

/// A prediction an advisor made, beside what happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The task type (a job or a task binding).
    pub task_type: String,
    /// `memory_bytes` (an upper bound against the peak RSS) or
    /// `run_time_ms` (an upper bound against the run time).
    pub quantity: String,
    pub predicted: f64,
    pub actual: Option<f64>,
    /// `advisor: ` and the model's method (its numbers were asked for),
    /// `fallback: ...` (they were not, and why), `oom_retry: ...`, or
    /// `percentile` (what the ResourceAdvisor would have asked).
    pub method: String,
}

/// One page on the wire: the first carries everything but the attempts
/// (`head`), every page a slice of attempts in id order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportChunk {
    pub head: Option<ReportData>,
    pub attempts: Vec<AttemptRow>,
}

impl ReportData {
    /// Adds a later page's attempts (its head, if any, is ignored: only the
    /// first page has one).
    pub fn absorb(&mut self, chunk: ReportChunk) {
        self.attempts.extend(chunk.attempts);
    }

    /// The job an attempt belongs to.
    pub fn job(&self, job_id: u64) -> Option<&JobRow> {
        self.jobs.iter().find(|j| j.id == job_id)
    }
}
