//! Why a task is where it is, and what the ready work of each tag needs, as data.
//!
//! The broker's core produces these (`Core::why`, `Core::demand`); the CLI's
//! output layer turns a [`Reason`] into the sentence a person reads, and
//! `scalable why --json` prints it as it is. The scaler and `diagnose` read the
//! same values, so no caller ever parses English.
//!
//! Plain serde data: no behaviour beyond small constructors. Enums are
//! externally tagged (postcard cannot carry internally tagged ones) and no
//! field is skipped when empty (postcard has no field names).

use serde::{Deserialize, Serialize};

use crate::protocol::RunId;
use crate::resources::Resources;

/// Why a task is in its state and what would move it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Succeeded or cached. `cache_note`: what the cache said about it (a hit,
    /// or which part of its key changed), in the cache module's own words.
    Done { cache_note: Option<String> },
    /// Failed for good (`scalable analyze RUN` has the details); also a
    /// cancelled task whose cause was not recorded (a store from before
    /// causes were kept).
    Ended { state: String, run: RunId },
    /// Cancelled, and why (`scalable analyze RUN` lists the job's cancelled
    /// tasks with the same cause).
    Cancelled { run: RunId, cause: Cancellation },
    /// Assigned and waiting in an agent's queue; `agent` is unknown only
    /// between two steps of the core.
    Assigned { agent: Option<AgentRef> },
    /// Running; `agent` as for `Assigned`.
    Running { agent: Option<AgentRef> },
    /// Waiting until these upstream jobs have fully succeeded.
    WaitingOnDependency { jobs: Vec<String> },
    /// A failed attempt is retried when its backoff ends.
    Backoff { remaining_ms: u64 },
    /// No agent at all; `tag` is the one the task needs, if any.
    NoAgentConnected { tag: Option<String> },
    /// Agents are connected, none serves this tag.
    NoAgentWithTag { tag: String },
    /// An untagged task, and every connected agent is tagged.
    AllAgentsTagged,
    /// The request exceeds every agent that serves the tag, even empty.
    LargerThanEveryAgent { need: Resources, short: Shortfall },
    /// An image task, and no agent that serves it has a container runtime.
    NoContainerRuntime,
    /// No serving agent can take it now; the cause is taken to be the
    /// walltime, longer than any agent's remaining `--lifetime` (also said
    /// when the agents big enough are disconnected).
    LifetimeTooShort,
    /// The job's `max_running` is reached.
    Throttled { running: u32, max: u32 },
    /// An agent is reserved for the job and drains smaller tasks to make room.
    Reserved { agent: String },
    /// Agents can run it and are busy.
    WaitingForResources { need: Resources, agents: u32 },
    /// Every agent that could run it is benched by the circuit breaker (its
    /// connection kept losing what it was sent); the first is offered work
    /// again in `remaining_ms`.
    Benched { agents: u32, remaining_ms: u64 },
    /// Waiting for these upstream tasks of per-item dependencies (`after:
    /// [{job, per}]`) to succeed (at most [`UPSTREAM_TASKS_SHOWN_MAX`]), and
    /// for `jobs`, upstream jobs of whole-job `after` not yet done.
    WaitingOnTasks {
        tasks: Vec<UpstreamTask>,
        jobs: Vec<String>,
    },
    // Protocol 8 (issue 20), appended; the broker gives a protocol 7 CLI the
    // reason each refines instead (`Reason::for_protocol_7`).
    /// Assigned, and its agent (without a shared filesystem) is fetching its
    /// inputs: `done_bytes` of `total_bytes` (when known) so far.
    StagingIn {
        agent: Option<AgentRef>,
        done_bytes: u64,
        total_bytes: Option<u64>,
    },
    /// Its process ended well, and its agent is handing its outputs back.
    StagingOut {
        agent: Option<AgentRef>,
        done_bytes: u64,
        total_bytes: Option<u64>,
    },
    /// Failed for good on a transfer: `error` names the file and why.
    TransferFailed { run: RunId, error: String },
    // A slot for `PilotQueued { pilot, queued_ms }`: the core does not know
    // pilots; the shell (which owns `fleet`) may refine `NoAgentConnected` or
    // `NoAgentWithTag` with it when a pilot for the tag is queued.
}

impl Reason {
    /// What a protocol 7 CLI, which cannot read the reasons of protocol 8,
    /// is told instead.
    pub fn for_protocol_7(self) -> Reason {
        match self {
            Reason::StagingIn { agent, .. } => Reason::Assigned { agent },
            Reason::StagingOut { agent, .. } => Reason::Running { agent },
            Reason::TransferFailed { run, .. } => Reason::Ended {
                state: "failed".into(),
                run,
            },
            other => other,
        }
    }
}

/// The most upstream tasks one `why` names (a task may wait for one per
/// per-item entry of its job's `after`).
pub const UPSTREAM_TASKS_SHOWN_MAX: usize = 16;

/// One upstream task a task waits for: `RUN/JOB/INDEX`, its item, its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTask {
    pub task: String,
    pub item: Option<String>,
    pub state: String,
}

/// Why the tasks of a job were cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cancellation {
    /// `scalable cancel` (the run or the task).
    ByUser,
    /// The run reached its `max_fails` failed tasks.
    MaxFails { max: u64 },
    /// A task upstream failed for good, so this job can never run (DAGMan
    /// semantics). `job` and `task` (`RUN/JOB/INDEX`, with its `item`) name
    /// the task whose failure started it, `failure` is that task's reason.
    DependencyFailed {
        job: String,
        task: String,
        item: Option<String>,
        failure: String,
    },
}

/// An agent as `why` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRef {
    pub name: String,
    pub host: String,
}

/// Which resource of a request no agent has enough of (the first found, in
/// this order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shortfall {
    Memory {
        largest_bytes: u64,
    },
    Cpus {
        largest: u64,
    },
    Gpus {
        largest: u64,
    },
    /// A custom resource (or a combination no single agent offers).
    Other,
}

/// A pilot or agent the caller could start, as a fresh agent of it would say
/// hello: the core does not know pilot shapes, the caller passes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentShape {
    /// `--tags` of its agent; empty: a generic pool that serves every tag.
    pub tags: Vec<String>,
    pub resources: Resources,
    /// The agent's `--lifetime`, if bounded.
    pub lifetime_ms: Option<u64>,
    /// Whether its agent has a container runtime (runs `image:` tasks).
    pub container_runtime: bool,
}

/// What is ready and what blocks it, per tag (`Core::demand`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demand {
    /// One entry per tag with live tasks or serving agents, untagged first.
    pub tags: Vec<TagDemand>,
}

/// The demand of one tag (`None`: untagged tasks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagDemand {
    pub tag: Option<String>,
    /// Tasks waiting for upstream jobs.
    pub waiting: u64,
    /// Ready tasks (not yet on an agent).
    pub ready: u64,
    /// Ready tasks grouped by what they ask for, largest first.
    pub sizes: Vec<SizeCount>,
    /// Ready tasks grouped by what keeps them from an agent, the same
    /// reasons `why` gives (tasks in backoff under the soonest end).
    pub blocked: Vec<ReasonCount>,
    /// For each shape passed in (in order, one entry each), how many ready
    /// tasks a fresh agent of it could run (tag, size, container runtime,
    /// walltime within lifetime).
    pub fits: Vec<ShapeFit>,
    pub assigned: u64,
    pub running: u64,
    /// Connected agents that serve this tag and take work (not draining).
    pub agents: u32,
    /// What those agents offer in total.
    pub offered: Resources,
    /// What is committed on them (their attempts' requests; may exceed
    /// `offered` by their prefetched queues).
    pub committed: Resources,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeCount {
    pub resources: Resources,
    pub tasks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: Reason,
    pub tasks: u64,
}

/// A job that no connected agent and no agent the broker can still start
/// (its local agents, its target's pilots) could ever run: `submit` warns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unrunnable {
    pub job: String,
    pub tasks: u64,
    /// Why the connected agents cannot run it (the same reason `why` gives).
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeFit {
    /// Index into the shapes passed to `demand`.
    pub shape: usize,
    pub tasks: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_survive_postcard_and_json() {
        let reasons = vec![
            Reason::Done { cache_note: None },
            Reason::Assigned {
                agent: Some(AgentRef {
                    name: "a".into(),
                    host: "h".into(),
                }),
            },
            Reason::LargerThanEveryAgent {
                need: Resources {
                    cpus: 2,
                    ..Resources::default()
                },
                short: Shortfall::Cpus { largest: 1 },
            },
            Reason::AllAgentsTagged,
            Reason::StagingIn {
                agent: None,
                done_bytes: 5,
                total_bytes: Some(10),
            },
            Reason::TransferFailed {
                run: 1,
                error: "input a.txt is 2M, over the limit".into(),
            },
            Reason::Cancelled {
                run: 3,
                cause: Cancellation::DependencyFailed {
                    job: "bad".into(),
                    task: "3/bad/0".into(),
                    item: Some("1".into()),
                    failure: "exit code 3".into(),
                },
            },
        ];
        let bytes = postcard::to_allocvec(&reasons).unwrap();
        let back: Vec<Reason> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, reasons);
        let json = serde_json::to_string(&reasons[3]).unwrap();
        assert_eq!(json, "\"all_agents_tagged\"");
        let back: Reason =
            serde_json::from_str(&serde_json::to_string(&reasons[2]).unwrap()).unwrap();
        assert_eq!(back, reasons[2]);
    }
}
