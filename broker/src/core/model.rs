//! The broker's in-memory model: runs, jobs, task slots, agents and attempts in
//! flight, the order of ready jobs and the submit plan. Plain data with the
//! predicates of one value (an agent serves a tag, an [`Offer`] could run a
//! job); the rules that change it live in the other modules of `core`. It
//! must not change state across values nor record effects.
//!
//! Tasks are not objects: a job of a million tasks is one `Job` with a
//! `Vec<TaskSlot>` of a few bytes each, and task ids are `first_task + index`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use scalable_common::explain::Cancellation;
use scalable_common::manifest::AutoResources;
use scalable_common::protocol::{AgentId, AttemptId, ContainerSpec, Counts, JobId, RunId, TaskId};
use scalable_common::resources::Resources;
use scalable_common::workflow::{ItemMap, JobDef, JobTemplates, WorkflowDef};

use super::sizing::AutoJob;

/// A task's state (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Waiting,
    Ready,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Cached,
}

impl TaskState {
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Ready => "ready",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Cached => "cached",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        Some(match s {
            "waiting" => TaskState::Waiting,
            "ready" => TaskState::Ready,
            "assigned" => TaskState::Assigned,
            "running" => TaskState::Running,
            "succeeded" => TaskState::Succeeded,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            "cached" => TaskState::Cached,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::Cached
        )
    }

    pub fn count_in(self, c: &mut Counts) -> &mut u64 {
        match self {
            TaskState::Waiting => &mut c.waiting,
            TaskState::Ready => &mut c.ready,
            TaskState::Assigned => &mut c.assigned,
            TaskState::Running => &mut c.running,
            TaskState::Succeeded => &mut c.succeeded,
            TaskState::Failed => &mut c.failed,
            TaskState::Cancelled => &mut c.cancelled,
            TaskState::Cached => &mut c.cached,
        }
    }
}

/// One task: a few bytes, so a million fit in a few megabytes.
#[derive(Debug, Clone, Copy)]
pub struct TaskSlot {
    pub state: TaskState,
    /// Attempts made so far (all kinds).
    pub attempts: u16,
    /// Failed attempts that spent a retry.
    pub retries_used: u16,
    /// Started attempts lost with their agent (the crash limit counts these).
    pub crashes: u16,
    /// Attempts lost on the way to their agent, never started (the circuit
    /// breaker per task counts these; not kept across a broker restart).
    pub undelivered: u8,
}

impl TaskSlot {
    pub fn new() -> TaskSlot {
        TaskSlot {
            state: TaskState::Waiting,
            attempts: 0,
            retries_used: 0,
            crashes: 0,
            undelivered: 0,
        }
    }
}

impl Default for TaskSlot {
    fn default() -> Self {
        TaskSlot::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn parse(s: &str) -> Option<RunState> {
        Some(match s {
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug)]
pub struct Run {
    pub id: RunId,
    pub name: String,
    pub submitted_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub cwd: String,
    pub jobs: Vec<JobId>,
    pub counts: Counts,
    pub total: u64,
    pub state: RunState,
    pub max_fails: Option<u64>,
    pub cancel_requested: bool,
}

#[derive(Debug)]
pub struct Job {
    pub id: JobId,
    pub run: RunId,
    pub def: Arc<JobDef>,
    pub templates: Arc<JobTemplates>,
    pub resources: Resources,
    pub first_task: TaskId,
    pub tasks: Vec<TaskSlot>,
    /// Tasks `next_fresh..len` were released as ready and never dispatched; a
    /// cursor instead of a queue so releasing a million tasks costs nothing.
    pub next_fresh: u64,
    /// Ready tasks that came back (retry after backoff, lost agent).
    pub requeued: VecDeque<u64>,
    /// Upstream jobs that have not yet fully succeeded.
    pub deps_pending: u32,
    pub dependents: Vec<JobId>,
    /// Per-item edges (`after_per`), each with the map from this job's task
    /// index to the upstream one (`item_deps`) or to the downstream one
    /// (`item_dependents`); see `core/item_deps.rs`.
    pub item_deps: Vec<ItemEdge>,
    pub item_dependents: Vec<ItemEdge>,
    /// Per task, the upstream tasks of per-item edges not yet succeeded;
    /// empty for a job without per-item edges (nothing per task there).
    pub item_waits: Vec<u32>,
    /// True once the dependencies are met and tasks may be dispatched.
    pub released: bool,
    /// When it was released: the ready time of its tasks that never came
    /// back (telemetry's queue wait); 0 when not known (after a restart).
    pub released_at_ms: u64,
    /// The ready time of tasks that came back (a retry whose backoff ended,
    /// a task lost with its agent), until their next attempt takes it.
    pub ready_again_at_ms: HashMap<u64, u64>,
    pub counts: Counts,
    /// Runs in the agent's container runtime when set (manifest component image).
    pub container: Option<ContainerSpec>,
    /// Attempts of this job on agents now (for `max_running`).
    pub in_flight: u32,
    /// Since when the job has waited without dispatching a task; set at release
    /// and after each dispatch. See `Core::update_reservations`.
    pub blocked_since_ms: Option<u64>,
    /// Per-task requests that differ from the job's (memory raised after
    /// `MEMORY_EXHAUSTION`); tasks not listed ask for `resources`.
    pub overrides: HashMap<u64, Resources>,
    /// Every task without a row of its own that is not done is cancelled (the
    /// store keeps this as one flag on the job, not a row per task).
    pub cancel_marked: bool,
    /// Why its tasks were cancelled (the first cause; `why`, `analyze`).
    pub cancel_cause: Option<Cancellation>,
    /// `cache: true` tasks whose cache probe is out (ready, but not queued).
    pub probing: HashSet<u64>,
    /// Tasks of a job with costly templates whose render is out (ready, but
    /// not queued), and the renders back, kept until the task ends.
    pub rendering: HashSet<u64>,
    pub rendered: HashMap<u64, Result<Arc<RenderedTask>, String>>,
    /// `cache: true` tasks probed and missed: their key (JSON) and why they run.
    pub cache_misses: HashMap<u64, (String, String)>,
    /// Sized by the advisor (`memory: auto` ...); `None` for other jobs.
    pub auto: Option<Box<AutoJob>>,
}

impl Job {
    /// A job as submitted: every task waiting, nothing released.
    pub fn new(
        id: JobId,
        run: RunId,
        planned: PlannedJob,
        first_task: TaskId,
        deps_pending: u32,
    ) -> Job {
        let count = planned.def.items.count();
        let auto = planned.auto.map(|spec| {
            let task_type = planned
                .def
                .task
                .clone()
                .unwrap_or_else(|| planned.def.name.clone());
            Box::new(AutoJob::new(spec, task_type, &planned.resources))
        });
        Job {
            auto,
            id,
            run,
            def: planned.def,
            templates: planned.templates,
            resources: planned.resources,
            container: planned.container,
            first_task,
            tasks: vec![TaskSlot::new(); count as usize],
            next_fresh: count,
            requeued: VecDeque::new(),
            deps_pending,
            dependents: Vec::new(),
            item_deps: Vec::new(),
            item_dependents: Vec::new(),
            item_waits: Vec::new(),
            released: false,
            released_at_ms: 0,
            ready_again_at_ms: HashMap::new(),
            counts: Counts {
                waiting: count,
                ..Counts::default()
            },
            in_flight: 0,
            blocked_since_ms: None,
            overrides: HashMap::new(),
            cancel_marked: false,
            cancel_cause: None,
            probing: HashSet::new(),
            rendering: HashSet::new(),
            rendered: HashMap::new(),
            cache_misses: HashMap::new(),
        }
    }

    pub fn count(&self) -> u64 {
        self.tasks.len() as u64
    }

    pub fn tag(&self) -> Option<&str> {
        self.def.tag.as_deref()
    }

    /// Whether any task could be dispatched now, ignoring agents.
    pub fn has_dispatchable(&self) -> bool {
        self.released && (self.next_fresh < self.count() || !self.requeued.is_empty())
    }

    pub fn under_max_running(&self) -> bool {
        self.def.max_running.is_none_or(|m| self.in_flight < m)
    }
}

#[derive(Debug)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    pub hostname: String,
    pub tags: Vec<String>,
    pub capacity: Resources,
    /// Sum of the requests of every attempt on this agent, started or queued.
    /// May exceed `capacity` by the prefetched queue.
    pub committed: Resources,
    /// Its attempts, in assignment order (ids grow); a set, not a list:
    /// an ending removes one out of a prefetched queue thousands deep.
    pub attempts: BTreeSet<AttemptId>,
    /// Attempts assigned but not reported started: the agent's prefetched queue.
    pub unstarted: u32,
    pub connected_at_ms: u64,
    pub last_seen_ms: u64,
    /// When the agent's `--lifetime` ends, if bounded.
    pub lifetime_end_ms: Option<u64>,
    pub completed: u64,
    /// Completions counted in the current rate window, and the window's start.
    pub window_completed: u64,
    pub window_start_ms: u64,
    /// Completions per second, smoothed; sizes the prefetched queue.
    pub rate_per_s: f64,
    /// Leaving: takes nothing new.
    pub draining: bool,
    /// A large task waits for this agent to drain enough: only that job's
    /// tasks may start here until it gets its task (anti-starvation).
    pub reserved_for: Option<JobId>,
    /// When this agent last got a task, and of which job (to tell a job that
    /// waits because others take the room from one that waits for room).
    pub last_assign: Option<(u64, JobId)>,
    /// Resources the agent last reported idle with nothing in its queue that fits
    /// them, less what was assigned since: gaps to fill even when `committed`
    /// (which counts its queue) says the agent is full.
    pub reported_free: Resources,
    /// Container runtimes the agent has (first: the one it uses); none = no image tasks.
    pub runtimes: Vec<String>,
    /// How the agent enforces memory limits (`cgroup-v2` or `sampling`).
    pub limit_mode: String,
    /// False while the agent has no connection: it keeps its attempts until it
    /// comes back (same id) or the heartbeat timeout declares it lost.
    pub connected: bool,
    /// Restored from the store after a broker restart, not yet reclaimed: its
    /// loss is the broker's doing, so it counts no crash against its tasks.
    pub restored: bool,
    /// `SCALABLE_PILOT_ID` from its hello.
    pub pilot_id: Option<String>,
    /// Reconnects in a row that found attempts sent to it missing, with none
    /// started in between (the circuit breaker per agent).
    pub undelivered_streak: u32,
    /// Why it is leaving (its own `Leaving` reason, or the broker's drain),
    /// kept for the `left_reason` it is recorded with when it goes.
    pub leaving_reason: Option<String>,
    /// Offered nothing before this time: its connection kept losing what it
    /// was sent.
    pub benched_until_ms: Option<u64>,
}

/// What an agent offers a job, whether it is connected now or a fresh agent
/// of a pilot shape (`Core::demand`): one rule for both.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    pub tags: &'a [String],
    pub capacity: &'a Resources,
    pub container_runtime: bool,
    pub lifetime_end_ms: Option<u64>,
}

impl Offer<'_> {
    /// Whether an agent with these tags serves tasks with `tag` (SPEC §6): a
    /// tagged agent only its tags; an untagged agent everything (a generic pool).
    pub fn serves(&self, tag: Option<&str>) -> bool {
        if self.tags.is_empty() {
            return true;
        }
        tag.is_some_and(|t| self.tags.iter().any(|a| a == t))
    }

    /// Whether it could ever run a task of `job` asking for `req`: tag, size
    /// when empty, a container runtime for an image task (SPEC §6), and the
    /// walltime within the remaining lifetime.
    pub fn could_run(&self, job: &Job, req: &Resources, now_ms: u64) -> bool {
        if !self.serves(job.tag()) || !req.fits_in(self.capacity) {
            return false;
        }
        if job.container.is_some() && !self.container_runtime {
            return false;
        }
        match (self.lifetime_end_ms, job.def.walltime_ms) {
            (Some(end), Some(wall)) => now_ms + wall <= end,
            _ => true,
        }
    }
}

impl Agent {
    /// A connected agent with nothing done yet (no attempts, no history, not
    /// draining), as a hello makes it; `now_ms` starts its clocks.
    pub fn new(
        id: AgentId,
        name: String,
        hostname: String,
        tags: Vec<String>,
        capacity: Resources,
        now_ms: u64,
    ) -> Agent {
        // Nothing committed, custom resources included.
        let committed = Resources {
            custom: capacity
                .custom
                .iter()
                .map(|(k, _)| (k.clone(), 0))
                .collect(),
            ..Resources::default()
        };
        Agent {
            id,
            name,
            hostname,
            tags,
            capacity,
            committed,
            attempts: Default::default(),
            unstarted: 0,
            connected_at_ms: now_ms,
            last_seen_ms: now_ms,
            lifetime_end_ms: None,
            completed: 0,
            window_completed: 0,
            window_start_ms: now_ms,
            rate_per_s: 0.0,
            draining: false,
            reserved_for: None,
            last_assign: None,
            reported_free: Resources::default(),
            runtimes: Vec::new(),
            limit_mode: String::new(),
            connected: true,
            restored: false,
            pilot_id: None,
            undelivered_streak: 0,
            leaving_reason: None,
            benched_until_ms: None,
        }
    }

    pub fn offer(&self) -> Offer<'_> {
        Offer {
            tags: &self.tags,
            capacity: &self.capacity,
            container_runtime: !self.runtimes.is_empty(),
            lifetime_end_ms: self.lifetime_end_ms,
        }
    }

    /// Whether this agent serves tasks with `tag` (see [`Offer::serves`]).
    pub fn serves(&self, tag: Option<&str>) -> bool {
        self.offer().serves(tag)
    }

    /// `req` fits in what is not committed yet.
    pub fn fits_now(&self, req: &Resources) -> bool {
        let c = &self.committed;
        let cap = &self.capacity;
        c.cpus + req.cpus <= cap.cpus
            && c.memory_bytes + req.memory_bytes <= cap.memory_bytes
            && c.gpus + req.gpus <= cap.gpus
            && req.custom.iter().all(|(name, n)| {
                let used = c.custom.iter().find(|(k, _)| k == name).map_or(0, |x| x.1);
                let have = cap
                    .custom
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or(0, |x| x.1);
                used + n <= have
            })
    }

    /// `req` fits in this agent at all, when empty.
    pub fn could_ever_run(&self, req: &Resources) -> bool {
        req.fits_in(&self.capacity)
    }
}

/// An attempt on an agent now.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: AttemptId,
    pub job: JobId,
    pub index: u64,
    pub agent: AgentId,
    pub number: u32,
    pub started: bool,
    pub started_at_us: u64,
    pub assigned_at_ms: u64,
    pub cancel_requested: bool,
    /// What this attempt asked for (the job's request or the task's override).
    pub resources: Resources,
}

/// Everything of one task that comes from its job's templates.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedTask {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The task's working directory (its `workdir:` against the run's cwd).
    pub cwd: String,
    /// Declared inputs; a template error here leaves them empty (they only
    /// feed the cache key and telemetry, never the command).
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// A workflow that passed validation, with its templates compiled and its jobs'
/// resources resolved, ready for [`super::Core::submit`].
#[derive(Debug)]
pub struct SubmitPlan {
    pub def: WorkflowDef,
    pub jobs: Vec<PlannedJob>,
    pub cwd: String,
    pub source: String,
    pub definition_json: String,
}

#[derive(Debug)]
pub struct PlannedJob {
    pub def: Arc<JobDef>,
    pub templates: Arc<JobTemplates>,
    pub resources: Resources,
    /// The component's image, mounts and env when its manifest binding has an image.
    pub container: Option<ContainerSpec>,
    /// The quantities its manifest binding lets the advisor size, if any.
    pub auto: Option<AutoResources>,
}

/// One per-item edge as one side of it sees it: the job at the other end and
/// the map from this side's task index to the other side's.
#[derive(Debug, Clone)]
pub struct ItemEdge {
    pub job: JobId,
    pub map: ItemMap,
}

/// The order in which ready jobs are offered to agents: higher `priority:`
/// first, then older runs first (FIFO between runs), then within a run larger
/// requests first (first-fit decreasing packs agents better and lets large
/// tasks in before the small ones fill every gap), then job order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadyKey {
    pub priority: Reverse<i32>,
    pub run: RunId,
    pub size: Reverse<(u32, u32, u64)>,
    pub job: JobId,
}

impl ReadyKey {
    pub fn of(job: &Job) -> ReadyKey {
        ReadyKey {
            priority: Reverse(job.def.priority),
            run: job.run,
            size: Reverse((
                job.resources.gpus,
                job.resources.cpus,
                job.resources.memory_bytes,
            )),
            job: job.id,
        }
    }
}
