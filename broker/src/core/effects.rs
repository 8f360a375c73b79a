//! What the core decided and the shell must carry out: store writes first, then
//! messages (the shell commits `store` before it sends anything, SPEC §5).

use std::collections::BTreeMap;

use scalable_common::protocol::{
    AgentId, Assignment, AttemptId, AttemptResult, JobId, RunId, TaskId,
};
use scalable_common::resources::Resources;

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
    },
    AttemptStarted {
        attempt: AttemptId,
        at_us: u64,
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
        reason: Option<String>,
        at_ms: u64,
    },
    InsertAgent {
        agent: AgentId,
        name: String,
        hostname: String,
        tags: Vec<String>,
        resources: Resources,
        connected_at_ms: u64,
    },
    AgentLeft {
        agent: AgentId,
        reason: String,
        at_ms: u64,
    },
    Event {
        at_ms: u64,
        kind: &'static str,
        run: Option<RunId>,
        detail: String,
    },
}

/// Everything one step of the core produced.
#[derive(Debug, Default)]
pub struct Effects {
    pub store: Vec<StoreOp>,
    pub assign: BTreeMap<AgentId, Vec<Assignment>>,
    /// Results committed in this step: (attempt, counted). A counted attempt's
    /// staged outputs are promoted by its agent; others are discarded.
    pub ack: BTreeMap<AgentId, Vec<(AttemptId, bool)>>,
    pub cancel: BTreeMap<AgentId, Vec<AttemptId>>,
    pub shutdown: Vec<(AgentId, String)>,
    /// Runs that reached a final state in this step.
    pub finished_runs: Vec<RunId>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
            && self.assign.is_empty()
            && self.ack.is_empty()
            && self.cancel.is_empty()
            && self.shutdown.is_empty()
            && self.finished_runs.is_empty()
    }
}
