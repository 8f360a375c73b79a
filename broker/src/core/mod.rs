//! The broker's core: scheduling and every state transition of runs, tasks,
//! attempts and agents, as synchronous functions of (state, event, now).
//!
//! Sans-IO (STYLE habit 1): no clock, no sockets, no SQL, no processes here. Each
//! entry point records what must happen in [`Effects`]; the shell (`server`)
//! takes them with [`Core::take_effects`], commits `effects.store` and only then
//! sends the messages. Ids are allocated here from counters the shell seeds from
//! the store, so they are deterministic in tests.
//!
//! Layers, bottom first; each file calls only downward (STYLE, "The core in
//! layers"):
//! - [`model`], [`effects`]: the plain data and what the core asks the shell to do;
//!   `bounds`: the sizes of what it sends and stores.
//! - this file: the `Core` struct, its config, ids, small helpers.
//! - `transitions`: every state change of a task or attempt.
//! - events: `submit`, `agents` (and the liveness tick), `cache`, `resume`, and
//!   [`restore`] (a core rebuilt from the store).
//! - `scheduling`: eligibility, reservations, filling agents, assignment;
//!   `rebalance`: prefetched attempts asked back for idle agents (after a fill).
//! - read-only views: `explain` (`why`), `demand`, `queries`, `sanity`.
//!
//! Invariant: a task is `Assigned`/`Running` iff exactly one attempt of it is in
//! `attempts`; an agent's `committed` is the sum of its attempts' requests.

mod agents;
mod bounds;
mod cache;
mod checkpoints;
mod demand;
pub mod effects;
mod explain;
mod item_deps;
pub mod model;
mod queries;
mod rebalance;
pub mod render;
pub mod restore;
mod resume;
mod sanity;
mod scheduling;
pub mod sizing;
mod submit;
#[cfg(test)]
mod tests;
mod transitions;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use scalable_common::protocol::{AgentId, AttemptId, JobId, RunId, TaskId};
use scalable_common::resources::Resources;

pub use checkpoints::keeps_checkpoint;
pub use effects::{
    Ack, CacheProbe, CacheRecord, CheckpointOp, Effects, EventKind, Promote, RenderRequest,
    RequestSource, Shutdown, StoreOp,
};
use model::{Agent, Attempt, Job, ReadyKey, Run};
pub use model::{PlannedJob, RenderedTask, SubmitPlan};
pub use queries::AttemptOut;
pub use sizing::{SizeRequest, SizingRecord, TaskSizing};

/// Tunables of the core. Defaults suit production; tests shorten the times.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub heartbeat_interval_ms: u64,
    /// An agent silent for this long is lost.
    pub heartbeat_timeout_ms: u64,
    pub retry_backoff_base_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// The prefetched queue holds about this much of an agent's work (by its
    /// measured completion rate), so dispatch is not one round trip per task.
    pub prefetch_horizon_ms: u64,
    pub prefetch_max: u32,
    /// A job blocked this long behind smaller tasks reserves an agent.
    pub reserve_after_ms: u64,
    /// A task whose started attempts were lost with their agent this many times
    /// fails (it probably kills its agents); HyperQueue's crash limit.
    pub crash_limit: u16,
    /// After a broker restart, agents have this long to come back and claim the
    /// attempts they kept running (heartbeat timeout + the agents' longest
    /// reconnect backoff).
    pub reclaim_window_ms: u64,
    /// A `MEMORY_EXHAUSTION` retry asks for the measured peak times this.
    pub oom_factor: f64,
    /// Cache probes out at once per job (each hashes the task's inputs).
    pub cache_probes_max: usize,
    /// Renders out at once per job with costly templates (`render`).
    pub renders_max: usize,
    /// Sizings out at once per job with `auto` quantities (`sizing`).
    pub sizings_max: usize,
    /// Circuit breaker per task: an attempt lost on the way this many times
    /// (its agent came back without it, never having started it) fails its
    /// task instead of being sent again.
    pub undelivered_limit: u8,
    /// Circuit breaker per agent: an agent that comes back this many times in
    /// a row without attempts it was sent, none started in between, is
    /// offered nothing for `bench_ms` (then tried again).
    pub agent_undelivered_limit: u32,
    pub bench_ms: u64,
    /// A prefetched attempt still unstarted this long after its assignment,
    /// on an agent with no room for it, may be asked back for an idle agent.
    pub rebalance_after_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            heartbeat_interval_ms: 5_000,
            heartbeat_timeout_ms: 20_000,
            retry_backoff_base_ms: 1_000,
            retry_backoff_max_ms: 300_000,
            prefetch_horizon_ms: 100,
            prefetch_max: 4_096,
            reserve_after_ms: 2_000,
            crash_limit: 5,
            reclaim_window_ms: 30_000,
            oom_factor: 1.5,
            cache_probes_max: 64,
            renders_max: 64,
            sizings_max: 256,
            undelivered_limit: 3,
            agent_undelivered_limit: 2,
            bench_ms: 60_000,
            rebalance_after_ms: 50,
        }
    }
}

/// Next ids to hand out; seeded by the shell from the store so ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub run: RunId,
    pub job: JobId,
    pub task: TaskId,
    pub attempt: AttemptId,
    pub agent: AgentId,
}

impl Default for Ids {
    fn default() -> Self {
        Ids {
            run: 1,
            job: 1,
            task: 1,
            attempt: 1,
            agent: 1,
        }
    }
}

/// Why `submit` refused a plan (the shell validated most things already).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("job {job:?}: after names unknown job {after:?}")]
    UnknownAfter { job: String, after: String },
    #[error("workflow has no jobs")]
    Empty,
    #[error("job {job:?}: {message}")]
    ItemMismatch { job: String, message: String },
}

/// The broker's state machine (see the module doc).
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    ids: Ids,
    runs: BTreeMap<RunId, Run>,
    jobs: BTreeMap<JobId, Job>,
    /// First task id of each job → job, to find a task's job.
    task_owner: BTreeMap<TaskId, JobId>,
    agents: BTreeMap<AgentId, Agent>,
    attempts: HashMap<AttemptId, Attempt>,
    /// Released jobs that may have dispatchable tasks, best first (see `ReadyKey`).
    ready_jobs: BTreeSet<ReadyKey>,
    /// Retries waiting out their backoff: (due, job, index).
    backoff: BinaryHeap<Reverse<(u64, JobId, u64)>>,
    /// When `tick` last ran: a long gap means the broker itself was stalled.
    last_tick_ms: Option<u64>,
    /// What the cache said about a task (hit, or which part of the key changed),
    /// for `why`.
    cache_notes: HashMap<TaskId, String>,
    /// Tasks that failed for good on a transfer and why (the error names the
    /// file), for `why`; not kept across a restart.
    transfer_failures: HashMap<TaskId, String>,
    /// Attempts counted as their task's success. A result for one of these that
    /// arrives again (resent after a reconnect or a broker restart whose ack
    /// was lost) is a duplicate, acknowledged as counted so its agent promotes
    /// the outputs; any other unknown result is stale.
    counted: HashSet<AttemptId>,
    /// Attempts asked back from their agent (`rebalance`), until answered.
    returning: BTreeSet<AttemptId>,
    fx: Effects,
}

impl Core {
    pub fn new(cfg: CoreConfig, ids: Ids) -> Core {
        Core {
            cfg,
            ids,
            runs: BTreeMap::new(),
            jobs: BTreeMap::new(),
            task_owner: BTreeMap::new(),
            agents: BTreeMap::new(),
            attempts: HashMap::new(),
            ready_jobs: BTreeSet::new(),
            backoff: BinaryHeap::new(),
            last_tick_ms: None,
            cache_notes: HashMap::new(),
            transfer_failures: HashMap::new(),
            counted: HashSet::new(),
            returning: BTreeSet::new(),
            fx: Effects::default(),
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Hands the accumulated effects to the shell.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.fx)
    }

    /// Lists each job of a run among the dependents of the jobs its `after`
    /// names (by `names`, the run's job name → id; unknown names are skipped).
    fn wire_dependents(&mut self, job_ids: &[JobId], names: &HashMap<String, JobId>) {
        for &id in job_ids {
            let after: BTreeSet<JobId> = self.jobs[&id]
                .def
                .after
                .iter()
                .filter_map(|a| names.get(a).copied())
                .collect();
            for d in after {
                let dj = self.jobs.get_mut(&d).expect("a job of the same run");
                if !dj.dependents.contains(&id) {
                    dj.dependents.push(id);
                }
            }
        }
    }
    /// Finds the job and index of a task id.
    pub fn locate_task(&self, task: TaskId) -> Option<(JobId, u64)> {
        let (&first, &job) = self.task_owner.range(..=task).next_back()?;
        let index = task - first;
        (index < self.jobs.get(&job)?.count()).then_some((job, index))
    }

    pub fn ids(&self) -> Ids {
        self.ids
    }
}

fn add_resources(into: &mut Resources, r: &Resources) {
    into.give(r);
}

fn sub_resources(from: &mut Resources, r: &Resources) {
    from.cpus -= r.cpus;
    from.memory_bytes -= r.memory_bytes;
    from.gpus -= r.gpus;
    for (name, n) in &r.custom {
        if let Some(slot) = from.custom.iter_mut().find(|(k, _)| k == name) {
            slot.1 -= n;
        }
    }
}
