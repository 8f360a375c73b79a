//! The wire protocol between broker, agents and the CLI (SPEC §2, §13).
//!
//! Every message is a postcard-encoded value inside a length-prefixed frame
//! (see [`crate::frame`]). The major version is in the ALPN id, so incompatible
//! peers fail during the TLS handshake, and again in the first message (`Hello`),
//! so a peer that got past ALPN still hears a clear refusal. Enums here are only
//! ever appended to within one protocol version.
//!
//! Connection shape: the connecting side opens one bidirectional stream and sends
//! `Hello`; the broker answers `HelloReply`. An agent then keeps that stream as
//! its control channel (`ToAgent` one way, `FromAgent` the other). The CLI sends
//! one `Request` per further bidirectional stream and reads one `Response`.

use serde::{Deserialize, Serialize};

pub use crate::pilot::PilotPhase;
use crate::resources::Resources;
pub use crate::run_history::{
    CancelledJob, FailedAttempt, FailedTask, JobStats, RunAnalysis, RunStats, TaskLogs, TaskName,
    TaskTransfer, CANCELLED_TASKS_NAMED_MAX, FAILED_TASKS_SHOWN_MAX, TRANSFERS_SHOWN_MAX,
};
use crate::workflow::WorkflowDef;

/// Bumped on every incompatible change of any message in this file
/// (3: `WhyAnswer.reason` became the typed `explain::Reason`; 4: `status`,
/// `analyze` and `logs` are paged; 5: tasks named by item, failures with
/// their numbers, the blocked tasks of a run; 6: an agent's `AttemptResult`
/// carries I/O bytes, input sizes and a usage series; 7: a `JobDef` in
/// `Submit` carries `after_per`, the per-item dependencies, and staging
/// streams (`staging`) and `AttemptEnd::StagingFailed` are appended, so a
/// protocol 6 agent's messages still read as they are; 8: appended staging
/// requests only a protocol 8 agent sends: `InputsVia`/`CommitVia` for an S3
/// store (an agent started with `--storage`), and checkpoints and an
/// attempt's transfer figures on staging streams; 9: `analyze`'s
/// `RunAnalysis` appends the transfers its tasks wait for or failed on, which
/// the broker leaves out for a CLI of protocol 7 or 8, `protocol_v8`, and
/// appended staging requests only a protocol 9 agent sends: `GetBatch`/
/// `PutBatch`, many small files on one stream).
pub const PROTOCOL_VERSION: u16 = 9;
/// The ALPN id carries the major protocol version.
pub const ALPN: &[u8] = b"scalable/1";
/// Default size cap of one frame (SPEC §2): 16 MiB.
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;
/// Room kept under [`MESSAGE_BYTES_MAX`] for what wraps a batch of items in
/// one message (the enum tag, a list's length, a page's header).
pub const ENVELOPE_BYTES_MAX: usize = 64 << 10;
/// The encoded assignments of one `ToAgent::Assign` add up to at most this;
/// the broker splits a larger batch into several messages, and fails an
/// attempt whose own assignment is larger (it could never be sent).
pub const ASSIGN_BATCH_BYTES_MAX: usize = MESSAGE_BYTES_MAX - ENVELOPE_BYTES_MAX;
/// Attempt ids in one `Ack` or `Cancel` (10 bytes each at most, encoded).
pub const IDS_PER_MESSAGE_MAX: usize = 1 << 20;
/// The items of one page of a paged reply add up to about this many encoded
/// bytes (one item larger than this still goes, alone); the CLI asks for the
/// next page until the reply says there is none.
pub const REPLY_PAGE_BYTES_MAX: usize = 4 << 20;
/// Default UDP port of the broker.
pub const DEFAULT_PORT: u16 = 7420;

pub type RunId = u64;
pub type JobId = u64;
pub type TaskId = u64;
pub type AttemptId = u64;
pub type AgentId = u64;

/// First message on a connection.
// Sent once per connection: boxing the agent's variant would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Hello {
    Agent(AgentHello),
    Cli(CliHello),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentHello {
    pub protocol: u16,
    pub agent_version: String,
    pub token: String,
    pub name: String,
    pub hostname: String,
    pub resources: Resources,
    pub tags: Vec<String>,
    /// Container runtimes the agent can use (`podman`, `apptainer`, ...), the one it
    /// runs `image:` tasks with first; empty = it never gets a task with an image.
    pub runtimes: Vec<String>,
    /// How the agent enforces memory requests: `"cgroup-v2"` (a cgroup per task
    /// with `memory.max`) or `"sampling"` (RSS of the process group sampled).
    pub limit_mode: String,
    /// Milliseconds the agent will still live (`--lifetime`), if bounded.
    pub lifetime_ms: Option<u64>,
    /// Attempts this agent is still running or holds unacknowledged results for,
    /// so a restarted broker can let it reclaim them (SPEC §5).
    pub held_attempts: Vec<AttemptId>,
    /// Provider-given pilot id (`SCALABLE_PILOT_ID`), when a provider started it.
    pub pilot_id: Option<String>,
    /// The id this agent had before it lost its connection: the broker gives the
    /// same id back (and the attempts it holds) when it still knows the agent,
    /// including after a broker restart within the reclaim window.
    pub resume_agent: Option<AgentId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CliHello {
    pub protocol: u16,
    pub cli_version: String,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome {
        agent_id: AgentId,
        heartbeat_interval_ms: u64,
        /// The broker is lost to an agent that hears nothing from it this long
        /// (the broker heartbeats too); 0 = no limit (CLI connections).
        heartbeat_timeout_ms: u64,
    },
    /// Why the broker refused; the connection is closed after this.
    Refused { reason: String },
}

/// One task as an agent runs it: everything needed, nothing to look up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub attempt: AttemptId,
    pub task: TaskId,
    pub run: RunId,
    /// 1 for the first attempt of the task, 2 for the next, ...
    pub attempt_number: u32,
    pub argv: Vec<String>,
    /// Extra environment on top of the agent's own.
    pub env: Vec<(String, String)>,
    /// Working directory; relative paths are relative to the agent's own cwd.
    pub cwd: String,
    pub resources: Resources,
    pub walltime_ms: Option<u64>,
    /// Declared outputs (paths relative to `cwd`) that must exist after exit 0.
    pub outputs: Vec<String>,
    /// Run inside the agent's container runtime (the component has `image:`).
    pub container: Option<ContainerSpec>,
    /// Declared inputs (paths relative to `cwd`); one that does not exist when the
    /// attempt would start ends it as `InvalidInput` without running it.
    pub inputs: Vec<String>,
}

/// A component's container: its image, mounts and env (SPEC §3 `components`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub image: String,
    /// `(host, container)` paths; a relative host path is relative to the task's cwd.
    pub mounts: Vec<(String, String)>,
    /// Environment set inside the container.
    pub env: Vec<(String, String)>,
}

/// Broker → agent on the control stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToAgent {
    /// New work. The agent queues what does not fit yet and starts it when it does.
    Assign(Vec<Assignment>),
    /// These results are committed; the agent may forget them. `counted`
    /// attempts are the ones the broker counted: their staged outputs are
    /// promoted into place; `ignored` ones (stale, fenced) are discarded.
    Ack {
        counted: Vec<AttemptId>,
        ignored: Vec<AttemptId>,
    },
    /// The broker is alive (sent every heartbeat interval).
    Heartbeat,
    /// Stop these attempts (run or task cancelled); report them as `Cancelled`.
    Cancel(Vec<AttemptId>),
    /// Give back these queued, not yet started attempts (`Returned`), e.g. to rebalance.
    Return(Vec<AttemptId>),
    /// Leave: finish nothing new, report and exit.
    Shutdown { reason: String },
}

/// Agent → broker on the control stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromAgent {
    /// Attempts that started, with their start time, and attempts that ended.
    /// Batched: one message carries whatever accumulated since the last one.
    Events {
        started: Vec<Started>,
        finished: Vec<AttemptResult>,
        /// What the agent has free after starting everything in its queue that
        /// fits: gaps the broker may fill with tasks small enough.
        free: Resources,
    },
    Heartbeat {
        running: u32,
        queued: u32,
    },
    /// The agent leaves (idle timeout, lifetime, SIGTERM); attempts it did not run
    /// are reported before this as `Drained`.
    Leaving {
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub attempt: AttemptId,
    /// Unix time in microseconds, agent clock.
    pub at_us: u64,
}

/// Every way an attempt can end (STYLE habit 5). Retry accounting follows from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptEnd {
    /// The process exited with this code. Exit 0 with all outputs present is success.
    Exited { code: i32 },
    /// The process was killed by this signal (not by us).
    Signalled { signal: i32 },
    /// Exceeded its walltime; SIGTERM then SIGKILL.
    TimedOut,
    /// Exceeded its memory request by more than the margin; killed.
    OutOfMemory,
    /// Could not be started (no such program, bad cwd, ...).
    SpawnFailed { error: String },
    /// Exited 0 but declared outputs are missing.
    OutputsMissing { missing: Vec<String> },
    /// The agent was lost while the attempt ran (set by the broker).
    AgentLost,
    /// The agent drained (SIGTERM, lifetime) and handed the attempt back.
    Drained,
    /// Stopped because the run or task was cancelled.
    Cancelled,
    /// Given back unstarted at the broker's request.
    Returned,
    /// An input the task needs does not exist: a declared input was missing before
    /// start (the task was not run), or the task exited non-zero within a second
    /// saying a file was not found (`path` is then what its stderr named).
    InvalidInput { path: String },
    /// Declared inputs could not be fetched or declared outputs could not be
    /// handed back (no shared filesystem, SPEC §4): a size bound, a refusal,
    /// a transfer that kept failing. Protocol 7.
    StagingFailed { error: String },
}

impl AttemptEnd {
    pub fn is_success(&self) -> bool {
        matches!(self, AttemptEnd::Exited { code: 0 })
    }

    /// Whether ending this way uses up one of the task's `retries`. Losses that are
    /// not the task's fault (agent lost, drained, returned) do not.
    pub fn spends_retry(&self) -> bool {
        match self {
            AttemptEnd::Exited { code } => *code != 0,
            AttemptEnd::Signalled { .. }
            | AttemptEnd::TimedOut
            | AttemptEnd::OutOfMemory
            | AttemptEnd::SpawnFailed { .. }
            | AttemptEnd::OutputsMissing { .. } => true,
            // It spends one: retrying cannot fix a missing input by itself, but an
            // input on a shared filesystem may still be arriving (NFS attribute
            // caches, a producer's late write), and not spending would re-queue a
            // truly missing one forever. `retries` bounds the waste either way.
            AttemptEnd::InvalidInput { .. } => true,
            // A bound or a refusal repeats; a transfer that failed may not.
            AttemptEnd::StagingFailed { .. } => true,
            AttemptEnd::AgentLost
            | AttemptEnd::Drained
            | AttemptEnd::Cancelled
            | AttemptEnd::Returned => false,
        }
    }

    /// The reason class shown by `analyze` and stored with the attempt.
    pub fn class(&self) -> &'static str {
        match self {
            AttemptEnd::Exited { code: 0 } => "SUCCESS",
            AttemptEnd::Exited { .. } => "EXIT_CODE",
            AttemptEnd::Signalled { .. } => "SIGNALED",
            AttemptEnd::TimedOut => "TIMEOUT",
            AttemptEnd::OutOfMemory => "MEMORY_EXHAUSTION",
            AttemptEnd::SpawnFailed { .. } => "SPAWN_FAILED",
            AttemptEnd::OutputsMissing { .. } => "OUTPUTS_MISSING",
            AttemptEnd::AgentLost => "AGENT_LOST",
            AttemptEnd::Drained => "DRAINED",
            AttemptEnd::Cancelled => "CANCELLED",
            AttemptEnd::Returned => "RETURNED",
            AttemptEnd::InvalidInput { .. } => "INVALID_INPUT",
            AttemptEnd::StagingFailed { .. } => "STAGING_FAILED",
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self {
            AttemptEnd::Exited { code } => Some(*code),
            _ => None,
        }
    }
}

/// What an agent reports when an attempt ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptResult {
    pub attempt: AttemptId,
    pub end: AttemptEnd,
    /// Unix microseconds, agent clock; 0 if it never started.
    pub started_at_us: u64,
    pub ended_at_us: u64,
    pub peak_rss_bytes: u64,
    /// User + system cpu time of the process tree.
    pub cpu_time_us: u64,
    /// The last bytes of stdout / stderr (bounded, see the agent's executor).
    pub stdout_tail: Vec<u8>,
    pub stderr_tail: Vec<u8>,
    /// Total bytes the task wrote to stdout / stderr.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// The code the process exited with, whatever the end's class (also for
    /// `InvalidInput` and `OutputsMissing`); `None` when a signal ended it or
    /// it never started.
    pub exit_code: Option<i32>,
    /// The memory limit the agent enforced (request × its margin, or the
    /// container's `--memory`); `None`: no limit.
    pub memory_limit_bytes: Option<u64>,
    /// Bytes the process tree read from and wrote to storage as the kernel
    /// counts them (`read_bytes`/`write_bytes` of `/proc/PID/io`; `wait4`
    /// reports them for the leader and every descendant it waited for);
    /// `None` when the kernel does not say (never started, a podman/docker
    /// task whose processes are not the agent's). Protocol 6.
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
    /// The sizes of the declared inputs, in declared order (0 for one that is
    /// not a regular file); empty when none are declared. Protocol 6.
    pub input_bytes: Vec<u64>,
    /// Usage over time of an attempt that ran long enough: at most
    /// [`USAGE_POINTS_MAX`] points whose interval doubles as the attempt
    /// ages; empty for short attempts. Protocol 6.
    pub usage: Vec<UsagePoint>,
}

/// Points of one attempt's usage series at most (the agent halves the
/// resolution when it would grow past this: a day-long task keeps 128 to 256).
pub const USAGE_POINTS_MAX: usize = 256;

/// One interval of an attempt's usage series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsagePoint {
    /// End of the interval, Unix milliseconds, agent clock.
    pub at_ms: u64,
    /// Cpu time (user + system) the process tree used in the interval.
    pub cpu_ms: u64,
    /// The largest RSS of the process tree sampled in the interval.
    pub rss_bytes: u64,
}

impl AttemptResult {
    /// A result with no process behind it (never started, lost, drained, noop):
    /// no output, no usage, `started_at_us` 0 unless given.
    pub fn bare(attempt: AttemptId, end: AttemptEnd, started_at_us: u64, ended_at_us: u64) -> Self {
        AttemptResult {
            attempt,
            end,
            started_at_us,
            ended_at_us,
            peak_rss_bytes: 0,
            cpu_time_us: 0,
            stdout_tail: Vec::new(),
            stderr_tail: Vec::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            exit_code: None,
            memory_limit_bytes: None,
            read_bytes: None,
            write_bytes: None,
            input_bytes: Vec::new(),
            usage: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------- CLI requests

/// How the CLI names a run: its id or `last`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunRef {
    Id(RunId),
    Last,
}

/// How the CLI names a task: `RUN/JOB/INDEX` (the index counts from 0),
/// `RUN/JOB@ITEM` (the item as the workflow's `range`/`foreach` gives it) or a
/// task id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskRef {
    Id(TaskId),
    Path {
        run: RunRef,
        job: String,
        index: u64,
    },
    Item {
        run: RunRef,
        job: String,
        item: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitRequest {
    pub workflow: WorkflowDef,
    /// Where tasks run unless a job sets `workdir:` (the directory of `submit`).
    pub cwd: String,
    /// The file it came from, for messages (`-` for quick submit).
    pub source: String,
    /// A manifest the CLI loaded (`submit --manifest`), resolved and validated
    /// there (its `${VAR}`s are the user's), as JSON; `None`: the broker's own.
    pub manifest_json: Option<String>,
}

/// One page of a long list in a reply: the items, and the key to ask the
/// next page `after` (the last item's key), `None` on the last page. Used by
/// `status`; `analyze` and `logs` carry the same `next` in their replies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Submit(SubmitRequest),
    /// One run, or every run whose id is greater than `after` (paged).
    Status {
        run: Option<RunRef>,
        after: Option<RunId>,
    },
    Cancel {
        run: Option<RunRef>,
        task: Option<TaskRef>,
    },
    /// Re-run a finished run's failed and cancelled tasks (rescue DAG).
    Resume {
        run: RunRef,
    },
    /// Add or remove pilots of the broker's target (`scalable scale`).
    Scale {
        target: String,
        tag: Option<String>,
        change: ScaleChange,
        force: bool,
        dry_run: bool,
    },
    /// Every pilot this broker submitted.
    Pilots,
    Agents,
    Stats {
        run: RunRef,
    },
    /// The run's counts and its failed tasks whose id is greater than `after`
    /// (paged).
    Analyze {
        run: RunRef,
        after: Option<TaskId>,
    },
    /// The kept output from byte `from` of stdout followed by stderr (paged).
    Logs {
        task: TaskRef,
        attempt: Option<u32>,
        from: u64,
    },
    /// Stop the broker (tests and the demo); answered before it stops.
    Shutdown,
    /// Why a task is not running (or is where it is).
    Why {
        task: TaskRef,
    },
    /// A run's telemetry as JSON lines, the page after cursor `after`
    /// (`scalable export`; paged, the cursor is opaque to the CLI).
    Export {
        run: RunRef,
        after: Option<u64>,
    },
    /// The scaler's stored decisions: made while `run` was live, or since
    /// `since_ms`, or all; those whose id is greater than `after` (paged).
    Scaling {
        run: Option<RunRef>,
        since_ms: Option<u64>,
        after: Option<u64>,
    },
    /// A run's report data: the first page (`after: None`) carries the run,
    /// its jobs, agents, pilots, events and failures, every page a slice of
    /// its attempts whose id is greater than `after`.
    Report {
        run: RunRef,
        after: Option<AttemptId>,
    },
    /// What a task type should ask for (`scalable advise`, SPEC §11).
    Advise(AdviseRequest),
    /// Search a learned model's parameters (`scalable tune`).
    Tune(TuneRequest),
}

/// `scalable advise --task T [--target T] [--model-type M] [--features k=v...]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdviseRequest {
    pub task: String,
    pub target: Option<String>,
    /// `linear`, `random_forest` or `gradient_boosting`; `None`: the default.
    pub model_type: Option<String>,
    pub features: Vec<(String, String)>,
}

/// `scalable tune --task T [--model-type M] [--cv-folds N]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneRequest {
    pub task: String,
    pub model_type: Option<String>,
    pub cv_folds: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Submitted {
        run: RunId,
        tasks: u64,
        /// Jobs nothing connected or startable could ever run (`submit` warns).
        unrunnable: Vec<crate::explain::Unrunnable>,
    },
    Status(Page<RunStatus>),
    Resumed {
        run: RunId,
        tasks: u64,
    },
    Cancelled {
        tasks: u64,
    },
    Agents(Vec<AgentInfo>),
    Stats(RunStats),
    Analyze(RunAnalysis),
    Logs(TaskLogs),
    ShuttingDown,
    /// A refusal with the exit code the CLI should use (2 bad input, 1 failed check).
    Error {
        message: String,
        exit_code: i32,
    },
    Why(WhyAnswer),
    Scaled(ScaleReport),
    Pilots(Vec<PilotInfo>),
    /// JSON lines of a run's telemetry (`docs/telemetry.md`), one page.
    Export(Page<String>),
    Scaling(Page<crate::scaling::ScalingDecisionInfo>),
    /// An advisor's answer as JSON (`Advice` or `TuneReport` of the broker's
    /// `advisor`): its shape is the advisors', not the protocol's.
    Advice {
        json: String,
    },
    Report(ReportPage),
}

/// One page of a run's report data. The body is the broker crate's own
/// report model (postcard), read by the CLI of the same crate: `format`
/// names its layout, so a CLI that reads another one says so instead of
/// misreading it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportPage {
    pub format: u32,
    pub body: Vec<u8>,
    /// The attempt id to ask the next page `after`; `None` on the last page.
    pub next: Option<u64>,
}

/// `+N`, `-N` or `=N` pilots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScaleChange {
    Add(u32),
    Remove(u32),
    Set(u32),
}

/// What `scale` did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScaleReport {
    pub target: String,
    pub tag: Option<String>,
    pub dry_run: bool,
    pub before: u32,
    pub after: u32,
    /// `pilot id -> provider id` of pilots started.
    pub started: Vec<(String, String)>,
    /// Pilots whose agent had not connected, cancelled through the provider.
    pub cancelled: Vec<String>,
    /// Pilots whose idle agent was told to leave.
    pub drained: Vec<String>,
    /// Busy pilots stopped (`--force`).
    pub killed: Vec<String>,
    /// Busy pilots kept (no `--force`).
    pub kept_busy: u32,
    /// The exact command lines run (or that would run).
    pub commands: Vec<String>,
}

/// A pilot as the broker records it (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PilotInfo {
    pub id: String,
    pub target: String,
    pub tag: Option<String>,
    pub provider_id: String,
    pub state: PilotPhase,
    pub agent: Option<AgentId>,
    pub submitted_at_ms: u64,
    pub connected_at_ms: Option<u64>,
    pub ended_at_ms: Option<u64>,
    pub reason: Option<String>,
}

/// `scalable why TASK`: the reason as data; the CLI's output layer words it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyAnswer {
    /// `RUN/JOB/INDEX`.
    pub task: String,
    /// The task's item (`range`/`foreach`), `None` for a job without items.
    pub item: Option<String>,
    pub state: String,
    pub reason: crate::explain::Reason,
}

/// Per-state task counts (pegasus-status columns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub waiting: u64,
    pub ready: u64,
    pub assigned: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub cached: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.waiting
            + self.ready
            + self.assigned
            + self.running
            + self.succeeded
            + self.failed
            + self.cancelled
            + self.cached
    }
    pub fn done(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled + self.cached
    }
    pub fn add(&mut self, o: &Counts) {
        self.waiting += o.waiting;
        self.ready += o.ready;
        self.assigned += o.assigned;
        self.running += o.running;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.cancelled += o.cancelled;
        self.cached += o.cached;
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub name: String,
    pub tag: Option<String>,
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStatus {
    pub run: RunId,
    pub name: String,
    /// `running`, `succeeded`, `failed`, `cancelled`.
    pub state: String,
    pub submitted_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub counts: Counts,
    pub jobs: Vec<JobStatus>,
    /// The run's ready tasks not on an agent, by what keeps them there (the
    /// reasons `why` gives); empty once the run is over.
    pub blocked: Vec<crate::explain::ReasonCount>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: AgentId,
    pub name: String,
    pub hostname: String,
    pub tags: Vec<String>,
    pub resources: Resources,
    pub free: Resources,
    pub running: u32,
    pub queued: u32,
    pub connected_at_ms: u64,
    pub completed: u64,
    /// Container runtimes (first: the one image tasks use); empty: none.
    pub runtimes: Vec<String>,
    /// How memory limits are enforced: `cgroup-v2` or `sampling`.
    pub limit_mode: String,
    /// The `SCALABLE_PILOT_ID` its provider gave it, if any.
    pub pilot_id: Option<String>,
    /// False while it has no connection (it may come back with its attempts,
    /// e.g. within the reclaim window after a broker restart).
    pub connected: bool,
}
