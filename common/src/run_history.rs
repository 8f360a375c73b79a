//! A run's history as the CLI reads it from the broker's store: the
//! figures of `stats`, `analyze`'s failed tasks (each attempt with the
//! numbers of its end) and cancelled jobs (with their cause), and a task's
//! kept output for `logs`.
//!
//! Plain serde data carried in `protocol::Response` (and re-exported there):
//! no behaviour. Like every protocol type, fields are appended only within
//! one protocol version and none is skipped when empty (postcard).

use serde::{Deserialize, Serialize};

use crate::protocol::{RunId, TaskId};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobStats {
    pub name: String,
    pub tasks: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub incomplete: u64,
    pub retries: u64,
    pub attempts: u64,
    pub wall_time_ms: u64,
    pub badput_ms: u64,
    pub min_ms: u64,
    pub mean_ms: u64,
    pub max_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunStats {
    pub run: RunId,
    pub name: String,
    pub state: String,
    pub tasks: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub cached: u64,
    pub incomplete: u64,
    /// Retries spent: failed attempts whose task went round again.
    pub retries: u64,
    pub attempts: u64,
    /// Attempts lost with their agent, drained or given back (no retry spent).
    pub lost_attempts: u64,
    /// Results of fenced attempts (lost, cancelled, superseded) that were ignored.
    pub stale_results: u64,
    /// Started attempts lost with an agent that died on its own (crash limit).
    pub crashes: u64,
    /// From submit to the end of the last task (or now).
    pub workflow_wall_time_ms: u64,
    /// Sum of attempt durations.
    pub cumulative_wall_time_ms: u64,
    /// Wall time of failed and lost attempts.
    pub badput_ms: u64,
    pub jobs: Vec<JobStats>,
}

/// One attempt of a task as `analyze` and `logs` show it: how it ended, with
/// the numbers that explain the end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedAttempt {
    pub attempt_number: u32,
    pub class: String,
    /// The code the process exited with, whatever the class (`None` when a
    /// signal ended it or it never started).
    pub exit_code: Option<i32>,
    pub detail: String,
    pub agent: String,
    pub host: String,
    pub duration_ms: u64,
    /// The largest memory the task used (the whole process tree), as measured.
    pub peak_rss_bytes: u64,
    /// The memory limit the agent enforced; `None`: no limit.
    pub memory_limit_bytes: Option<u64>,
    /// The job's walltime; `None`: no walltime.
    pub walltime_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedTask {
    pub task: TaskId,
    /// `RUN/JOB/INDEX`.
    pub path: String,
    /// The task's item (`range`/`foreach`), `None` for a job without items.
    pub item: Option<String>,
    pub state: String,
    pub reason: String,
    pub argv: Vec<String>,
    pub attempts: Vec<FailedAttempt>,
    pub stderr_tail: String,
    pub stdout_tail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunAnalysis {
    pub run: RunId,
    pub name: String,
    pub state: String,
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub unfinished: u64,
    /// At most [`FAILED_TASKS_SHOWN_MAX`] in all, a page at a time.
    pub failed_tasks: Vec<FailedTask>,
    /// Jobs with cancelled tasks and why (on the first page only).
    pub cancelled_jobs: Vec<CancelledJob>,
    /// Where the next page of `failed_tasks` starts (`Request::Analyze.after`).
    pub next: Option<TaskId>,
    // Protocol 9 (issue 20), appended last: a CLI of protocol 7 or 8 gets
    // the message without them (`protocol_v8::Reply`).
    /// Tasks waiting for a transfer now, then failed tasks whose last attempt
    /// failed on one (on the first page only; at most
    /// [`TRANSFERS_SHOWN_MAX`]).
    #[serde(default)]
    pub transfers: Vec<TaskTransfer>,
    /// How many more there were than `transfers` lists.
    #[serde(default)]
    pub transfers_unlisted: u64,
}

/// A task's transfer (issue 20) as `analyze` lists it: one under way that
/// the task waits for, or the one its last attempt failed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskTransfer {
    pub task: TaskId,
    /// `RUN/JOB/INDEX`.
    pub path: String,
    pub item: Option<String>,
    /// `in` (its inputs, or a checkpoint to restore, before it starts) or
    /// `out` (its outputs, after its process ended).
    pub direction: String,
    pub agent: String,
    pub host: String,
    /// How the bytes move: `broker` (over the agent's connection) or the
    /// object store's URL (`s3://bucket/prefix`); `None`: not known (the
    /// broker restarted since).
    pub via: Option<String>,
    /// Files listed so far (inputs declared, outputs handed over), when known.
    pub files: Option<u64>,
    /// Bytes moved through the broker so far, when known.
    pub done_bytes: Option<u64>,
    /// What the listed files add up to, when known.
    pub total_bytes: Option<u64>,
    /// Why it failed; `None`: the task waits for it now.
    pub error: Option<String>,
}

/// Transfers `analyze` lists (waiting first, then failed).
pub const TRANSFERS_SHOWN_MAX: usize = 100;

/// A job with cancelled tasks, as `analyze` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelledJob {
    pub job: String,
    /// How many of its tasks were cancelled.
    pub tasks: u64,
    /// The first of them, at most [`CANCELLED_TASKS_NAMED_MAX`].
    pub first: Vec<TaskName>,
    /// Why (the first cause recorded for the job); `None`: not recorded (a
    /// store from before causes were kept).
    pub cause: Option<crate::explain::Cancellation>,
}

/// A task by its path and, for a job with items, its item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskName {
    /// `RUN/JOB/INDEX`.
    pub path: String,
    pub item: Option<String>,
}

/// Cancelled tasks `analyze` names per job (the count covers every one).
pub const CANCELLED_TASKS_NAMED_MAX: usize = 10;

/// Failed tasks `analyze` lists (the counts cover every one).
pub const FAILED_TASKS_SHOWN_MAX: usize = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskLogs {
    pub task: TaskId,
    pub path: String,
    /// The task's item (`range`/`foreach`), `None` for a job without items.
    pub item: Option<String>,
    pub attempt_number: u32,
    /// How this attempt ended, with its numbers; `None` while it runs.
    pub ended: Option<Box<FailedAttempt>>,
    /// The kept output, a page at a time: the bytes of this page that belong
    /// to each stream (stdout's kept bytes come first, then stderr's).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Where the next page starts (`Request::Logs.from`), `None` on the last.
    pub next: Option<u64>,
}
