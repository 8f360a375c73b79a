//! What the core decided and the shell must carry out: store writes first, then
//! messages (the shell commits `store` before it sends anything, SPEC §5).
//!
//! The bottom layer with `model`: plain data in the core's vocabulary (typed
//! kinds and named fields, no tuples). It must not know SQL, sockets or the
//! wire format of messages to agents; the store and the shell translate.

use std::collections::BTreeMap;
use std::sync::Arc;

use scalable_common::explain::Cancellation;
use scalable_common::protocol::{
    AgentId, Assignment, AttemptId, AttemptResult, JobId, PilotInfo, RunId, TaskId,
};
use scalable_common::resources::Resources;
use scalable_common::scaling::{ScalingDecisionInfo, ScalingOutcome};
use scalable_common::workflow::{JobDef, JobTemplates};

use super::sizing::{SizeRequest, SizingRecord};

/// One write to the store. Only the store turns these into SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    InsertRun {
        run: RunId,
        name: String,
        submitted_at_ms: u64,
        cwd: String,
        source: String,
        /// The submitted workflow as JSON, so a run can be re-read and resumed.
        definition_json: String,
    },
    InsertJob {
        job: JobId,
        run: RunId,
        name: String,
        tag: Option<String>,
        resources: Resources,
        priority: i32,
        retries: u32,
        first_task: TaskId,
        task_count: u64,
    },
    RunFinished {
        run: RunId,
        state: &'static str,
        at_ms: u64,
    },
    InsertAttempt {
        attempt: AttemptId,
        task: TaskId,
        run: RunId,
        job: JobId,
        index: u64,
        number: u32,
        agent: AgentId,
        assigned_at_ms: u64,
        argv_json: String,
        /// When its task became ready (0: not known, after a restart).
        ready_at_ms: u64,
        /// What it asks for, and why that much.
        resources: Resources,
        request_source: RequestSource,
    },
    AttemptStarted {
        attempt: AttemptId,
        at_us: u64,
    },
    /// What staging moved for an attempt, as its agent reported it (schema
    /// 7); written only when `agent` ran it.
    AttemptTransfers {
        attempt: AttemptId,
        agent: AgentId,
        moved: scalable_common::staging::Transfers,
    },
    /// How an `auto` task's attempt was sized (schema 6), after its insert.
    AttemptSizing {
        attempt: AttemptId,
        record: Arc<SizingRecord>,
    },
    /// An attempt ended; `result` is what the agent reported (or the broker
    /// synthesised for a lost agent).
    AttemptEnded {
        attempt: AttemptId,
        result: Box<AttemptResult>,
        at_ms: u64,
    },
    /// A task reached a state worth keeping (terminal, or requeued).
    TaskState {
        task: TaskId,
        run: RunId,
        job: JobId,
        index: u64,
        state: &'static str,
        attempts: u32,
        retries_used: u32,
        crashes: u32,
        reason: Option<String>,
        at_ms: u64,
    },
    /// Every rowless, unfinished task of the job is cancelled (or, with
    /// `cancelled: false`, no longer: `resume`).
    JobCancelMark {
        job: JobId,
        cancelled: bool,
    },
    /// Why the job's tasks were cancelled (`None`: no longer, `resume`).
    JobCancelCause {
        job: JobId,
        cause: Option<Cancellation>,
    },
    /// A finished run runs again (`scalable resume`).
    RunResumed {
        run: RunId,
    },
    /// A result for an attempt that is no longer current was ignored.
    StaleResult {
        attempt: AttemptId,
        agent: AgentId,
        at_ms: u64,
    },
    InsertAgent {
        agent: AgentId,
        name: String,
        hostname: String,
        tags: Vec<String>,
        resources: Resources,
        connected_at_ms: u64,
        pilot_id: Option<String>,
    },
    AgentLeft {
        agent: AgentId,
        reason: String,
        at_ms: u64,
    },
    Event {
        at_ms: u64,
        kind: EventKind,
        run: Option<RunId>,
        detail: String,
    },
    /// A pilot's record (written by the shell's `fleet`, not by the core);
    /// `agent_match` is how its agent is recognised, as JSON.
    Pilot {
        info: Box<PilotInfo>,
        agent_match: String,
        /// The provider's kind (`slurm`, `ec2`, ...); `None` keeps the stored one.
        provider: Option<&'static str>,
        /// What one pilot costs an hour where the provider knows a price;
        /// `None` keeps the stored one (a restarted broker does not know it).
        price_per_hour: Option<f64>,
    },
    /// A decision of the scaler (written by the shell, not by the core).
    ScalingDecision(Box<ScalingDecisionInfo>),
    /// What came of the decision the scaler of `target` made at `at_ms`.
    ScalingOutcome {
        target: String,
        at_ms: u64,
        outcome: ScalingOutcome,
    },
}

/// Where an attempt's request came from (`attempts.request_source`; the
/// stored text is [`RequestSource::as_str`]: never change it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestSource {
    /// As declared: the job's `resources:` or the manifest binding it names.
    Manifest,
    /// Memory raised after `MEMORY_EXHAUSTION` (SPEC §5).
    OomRetry,
    /// Sized by an advisor (`memory: auto`, SPEC §11).
    Advisor,
}

impl RequestSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestSource::Manifest => "manifest",
            RequestSource::OomRetry => "oom_retry",
            RequestSource::Advisor => "advisor",
        }
    }
}

/// What an `events` row is about. The stored text ([`EventKind::as_str`]) is
/// what `stats`, `analyze` and scripts read: never change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A known agent came back (`agent_reconnected`) ...
    AgentReconnected,
    /// ... or a restored agent reclaimed its attempts after a broker restart.
    AgentReclaimed,
    /// A result counted before arrived again (acknowledged as counted).
    DuplicateResult,
    /// A result for an attempt that is not current (written by the store
    /// for [`StoreOp::StaleResult`]).
    StaleResult,
    MemoryRaised,
    TasksCancelled,
    BrokerStalled,
    Reservation,
    RunResumed,
    /// A pilot's agent connected (written by the shell's fleet).
    PilotConnected,
    /// An agent named a pilot this broker did not start.
    UnmanagedAgent,
    /// An agent's connection kept losing what it was sent: offered nothing
    /// for a while (circuit breaker).
    AgentBenched,
}

impl EventKind {
    /// The text in the `kind` column (a plain match table).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AgentReconnected => "agent_reconnected",
            EventKind::AgentReclaimed => "agent_reclaimed",
            EventKind::DuplicateResult => "duplicate_result",
            EventKind::StaleResult => "stale_result",
            EventKind::MemoryRaised => "memory_raised",
            EventKind::TasksCancelled => "tasks_cancelled",
            EventKind::BrokerStalled => "broker_stalled",
            EventKind::Reservation => "reservation",
            EventKind::RunResumed => "run_resumed",
            EventKind::PilotConnected => "pilot_connected",
            EventKind::UnmanagedAgent => "unmanaged_agent",
            EventKind::AgentBenched => "agent_benched",
        }
    }
}

/// A result committed in this step, acknowledged to its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub attempt: AttemptId,
    /// Counted: the agent promotes the attempt's staged outputs; otherwise
    /// (stale, failed) it discards them.
    pub counted: bool,
}

/// An agent told to leave (its pilot is scaled down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shutdown {
    pub agent: AgentId,
    pub reason: String,
}

/// A counted attempt's staged outputs to rename into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promote {
    /// The task's working directory (its stage dir is under it).
    pub cwd: String,
    pub attempt: AttemptId,
    pub outputs: Vec<String>,
}

/// Everything one step of the core produced.
#[derive(Debug, Default)]
pub struct Effects {
    pub store: Vec<StoreOp>,
    pub assign: BTreeMap<AgentId, Vec<Assignment>>,
    /// Results committed in this step, per agent.
    pub ack: BTreeMap<AgentId, Vec<Ack>>,
    pub cancel: BTreeMap<AgentId, Vec<AttemptId>>,
    /// Prefetched attempts asked back from their agent to run elsewhere.
    pub returns: BTreeMap<AgentId, Vec<AttemptId>>,
    pub shutdown: Vec<Shutdown>,
    /// Agents declared lost whose connection may still be up (a zombie that
    /// woke): the shell closes it, so the agent reconnects and is fenced.
    pub disconnect: Vec<AgentId>,
    /// `cache: true` tasks to look up before they run (the shell answers with
    /// `Core::cache_answer`).
    pub cache_probe: Vec<CacheProbe>,
    /// Tasks of jobs with costly templates to render off the core (the shell
    /// answers with `Core::render_answer`).
    pub render: Vec<RenderRequest>,
    /// Tasks of `auto` jobs to size off the core (the shell answers with
    /// `Core::sizing_answer`).
    pub sizing: Vec<SizeRequest>,
    /// Counted successes of `cache: true` tasks, to save in the cache.
    pub cache_record: Vec<CacheRecord>,
    /// Counted attempts with declared outputs. The shell promotes their
    /// staged outputs after the commit and before it sends anything
    /// (dependents may be assigned in the same batch).
    pub promote: Vec<Promote>,
    /// Checkpoints to keep, restore or drop (`checkpoint:` jobs), done by the
    /// shell after the commit and before anything is sent, in this order.
    pub checkpoints: Vec<CheckpointOp>,
    /// Runs that reached a final state in this step.
    pub finished_runs: Vec<RunId>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
            && self.assign.is_empty()
            && self.ack.is_empty()
            && self.cancel.is_empty()
            && self.returns.is_empty()
            && self.shutdown.is_empty()
            && self.disconnect.is_empty()
            && self.finished_runs.is_empty()
            && self.cache_probe.is_empty()
            && self.render.is_empty()
            && self.sizing.is_empty()
            && self.cache_record.is_empty()
            && self.promote.is_empty()
            && self.checkpoints.is_empty()
    }
}

/// What happens to a task's checkpoint (SPEC §4 `checkpoint:`). `cwd` is the
/// task's directory, `paths` its job's checkpoint paths under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointOp {
    /// The attempt ended without success through no fault of its own (or at
    /// its walltime): keep what it wrote, as that attempt's version.
    Keep {
        task: TaskId,
        attempt: AttemptId,
        cwd: String,
        paths: Vec<String>,
    },
    /// The task's next attempt is about to be sent: the paths get the newest
    /// kept version (or are cleared when none is kept), never a mix.
    Restore {
        task: TaskId,
        attempt: AttemptId,
        cwd: String,
        paths: Vec<String>,
    },
    /// The task succeeded: its kept versions go.
    Drop { task: TaskId },
    /// A started attempt ended by its own fault: what it uploaded while it
    /// ran (agents without a shared filesystem) is not kept.
    DropAttempt { task: TaskId, attempt: AttemptId },
}

/// A cache lookup the shell does for the core (hashing files is I/O).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheProbe {
    pub job: JobId,
    pub index: u64,
    pub workflow: String,
    pub job_name: String,
    pub argv: Vec<String>,
    pub image: Option<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// A render the shell does for the core, off its task.
#[derive(Debug, Clone)]
pub struct RenderRequest {
    pub job: JobId,
    pub index: u64,
    pub run: RunId,
    /// The directory the run was submitted from.
    pub run_cwd: String,
    pub def: Arc<JobDef>,
    pub templates: Arc<JobTemplates>,
}

/// A counted success of a `cache: true` task: its key and outputs go in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheRecord {
    pub workflow: String,
    pub job_name: String,
    pub index: u64,
    pub task: TaskId,
    pub attempt: AttemptId,
    pub key_json: String,
    pub cwd: String,
    pub outputs: Vec<String>,
}
