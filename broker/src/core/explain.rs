//! `why`: where a task is and what keeps it there, as a typed
//! [`Reason`] (the words are the CLI output layer's, `output::why`).
//!
//! The per-job evaluation ([`Core::job_reason`]) is the one source for `why`
//! and for `demand`, so the two never disagree.
//!
//! Read-only. Must not change any state nor word anything for a person.

use std::cmp::Reverse;

use scalable_common::explain::{
    AgentRef, AgentShape, Cancellation, Reason, Shortfall, Unrunnable, UpstreamTask,
    UPSTREAM_TASKS_SHOWN_MAX,
};
use scalable_common::protocol::{RunId, TaskId, WhyAnswer};
use scalable_common::resources::Resources;

use super::model::{Agent, Job, Offer, TaskState};
use super::Core;

impl Core {
    /// Why a task is where it is (SPEC §7 `why`).
    pub fn why(&self, task: TaskId, now_ms: u64) -> Option<WhyAnswer> {
        let (job_id, index) = self.locate_task(task)?;
        let job = &self.jobs[&job_id];
        let state = job.tasks[index as usize].state;
        let on_agent = || {
            self.attempts
                .values()
                .find(|a| a.job == job_id && a.index == index)
                .and_then(|a| self.agents.get(&a.agent))
                .map(|a| AgentRef {
                    name: a.name.clone(),
                    host: a.hostname.clone(),
                })
        };
        let reason = match state {
            TaskState::Succeeded | TaskState::Cached => Reason::Done {
                cache_note: self.cache_notes.get(&task).cloned(),
            },
            TaskState::Cancelled if self.failed_upstream_task(job, index).is_some() => {
                Reason::Cancelled {
                    run: job.run,
                    cause: self.failed_upstream_task(job, index).expect("checked"),
                }
            }
            TaskState::Cancelled if job.cancel_cause.is_some() => Reason::Cancelled {
                run: job.run,
                cause: job.cancel_cause.clone().expect("checked"),
            },
            TaskState::Failed if self.transfer_failures.contains_key(&task) => {
                Reason::TransferFailed {
                    run: job.run,
                    error: self.transfer_failures[&task].clone(),
                }
            }
            TaskState::Failed | TaskState::Cancelled => Reason::Ended {
                state: state.name().to_string(),
                run: job.run,
            },
            TaskState::Assigned => Reason::Assigned { agent: on_agent() },
            TaskState::Running => Reason::Running { agent: on_agent() },
            TaskState::Waiting if !job.item_deps.is_empty() => Reason::WaitingOnTasks {
                tasks: self.pending_upstream_tasks(job, index),
                jobs: self.pending_dependencies(job),
            },
            TaskState::Waiting => Reason::WaitingOnDependency {
                jobs: self.pending_dependencies(job),
            },
            TaskState::Ready => match self.backoff_remaining_ms(job, index, now_ms) {
                Some(remaining_ms) => Reason::Backoff { remaining_ms },
                None => self.job_reason(job, now_ms),
            },
        };
        Some(WhyAnswer {
            task: format!("{}/{}/{}", job.run, job.def.name, index),
            item: job.def.items.get(index).map(|i| i.to_string()),
            state: state.name().to_string(),
            reason,
        })
    }

    /// The jobs of `run` that no connected agent can ever run (wrong tag,
    /// too large, an image without a runtime, or no agent at all) and no
    /// agent of `shapes` (what the broker can still start) could either.
    /// Read once at submit, so the user hears it at once, not after a wait.
    pub fn unrunnable(&self, run: RunId, shapes: &[AgentShape], now_ms: u64) -> Vec<Unrunnable> {
        let Some(r) = self.runs.get(&run) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for job in r.jobs.iter().map(|j| &self.jobs[j]) {
            let reason = self.job_reason(job, now_ms);
            let never_here = matches!(
                reason,
                Reason::NoAgentConnected { .. }
                    | Reason::NoAgentWithTag { .. }
                    | Reason::AllAgentsTagged
                    | Reason::LargerThanEveryAgent { .. }
                    | Reason::NoContainerRuntime
            );
            let a_shape_could = shapes.iter().any(|s| {
                Offer {
                    tags: &s.tags,
                    capacity: &s.resources,
                    container_runtime: s.container_runtime,
                    lifetime_end_ms: s.lifetime_ms.map(|l| now_ms + l),
                }
                .could_run(job, &job.resources, now_ms)
            });
            if never_here && !a_shape_could {
                out.push(Unrunnable {
                    job: job.def.name.clone(),
                    tasks: job.count(),
                    reason,
                });
            }
        }
        out
    }

    /// Upstream jobs of `job` that have not fully succeeded yet.
    fn pending_dependencies(&self, job: &Job) -> Vec<String> {
        self.runs[&job.run]
            .jobs
            .iter()
            .map(|j| &self.jobs[j])
            .filter(|d| job.def.after.contains(&d.def.name))
            .filter(|d| d.counts.succeeded + d.counts.cached < d.count())
            .map(|d| d.def.name.clone())
            .collect()
    }

    /// The upstream tasks of per-item edges that task `index` of `job` waits
    /// for (not yet succeeded), the first few.
    fn pending_upstream_tasks(&self, job: &Job, index: u64) -> Vec<UpstreamTask> {
        job.item_deps
            .iter()
            .filter_map(|e| {
                let up = &self.jobs[&e.job];
                let i = e.map.up_of(index);
                let state = up.tasks[i as usize].state;
                (!matches!(state, TaskState::Succeeded | TaskState::Cached)).then(|| UpstreamTask {
                    task: format!("{}/{}/{i}", up.run, up.def.name),
                    item: up.def.items.get(i).map(|x| x.to_string()),
                    state: state.name().to_string(),
                })
            })
            .take(UPSTREAM_TASKS_SHOWN_MAX)
            .collect()
    }

    /// For a task cancelled through per-item edges, the upstream task that
    /// failed, followed up the chain of cancelled ones (its job's cause names
    /// the first of the job's cancelled tasks, maybe another item's; when it
    /// is this one, its failure text is kept).
    fn failed_upstream_task(&self, job: &Job, index: u64) -> Option<Cancellation> {
        let (mut job, mut index) = (job, index);
        // Each step goes one job upstream: at most as many steps as jobs.
        for _ in 0..=self.runs[&job.run].jobs.len() {
            let (up, i, state) = job.item_deps.iter().find_map(|e| {
                let up = &self.jobs[&e.job];
                let i = e.map.up_of(index);
                let state = up.tasks[i as usize].state;
                matches!(state, TaskState::Failed | TaskState::Cancelled).then_some((up, i, state))
            })?;
            if state == TaskState::Cancelled && !up.item_deps.is_empty() {
                (job, index) = (up, i);
                continue;
            }
            let task = format!("{}/{}/{i}", up.run, up.def.name);
            return Some(match &job.cancel_cause {
                Some(c @ Cancellation::DependencyFailed { task: t, .. }) if *t == task => c.clone(),
                _ => Cancellation::DependencyFailed {
                    job: up.def.name.clone(),
                    task,
                    item: up.def.items.get(i).map(|x| x.to_string()),
                    failure: state.name().to_string(),
                },
            });
        }
        None
    }

    /// How long a ready task still waits out its retry backoff, if it does.
    fn backoff_remaining_ms(&self, job: &Job, index: u64, now_ms: u64) -> Option<u64> {
        self.backoff
            .iter()
            .find(|Reverse((_, j, i))| *j == job.id && *i == index)
            .map(|Reverse((due, _, _))| due.saturating_sub(now_ms))
    }

    /// What keeps the ready tasks of `job` (those not in backoff) from an
    /// agent: the first that applies of tag, size, container runtime,
    /// lifetime, throttle, reservation, and busy agents.
    pub(super) fn job_reason(&self, job: &Job, now_ms: u64) -> Reason {
        let tagged: Vec<&Agent> = self
            .agents
            .values()
            .filter(|a| !a.draining && a.serves(job.tag()))
            .collect();
        if tagged.is_empty() {
            return match job.tag() {
                Some(t) if !self.agents.is_empty() => Reason::NoAgentWithTag { tag: t.into() },
                None if !self.agents.is_empty() => Reason::AllAgentsTagged,
                tag => Reason::NoAgentConnected {
                    tag: tag.map(String::from),
                },
            };
        }
        let need = &job.resources;
        if !tagged.iter().any(|a| a.could_ever_run(need)) {
            return Reason::LargerThanEveryAgent {
                need: need.clone(),
                short: shortfall(need, &tagged),
            };
        }
        if job.container.is_some() && tagged.iter().all(|a| a.runtimes.is_empty()) {
            return Reason::NoContainerRuntime;
        }
        let eligible = tagged
            .iter()
            .filter(|a| self.eligible(a, job, now_ms))
            .count() as u32;
        if eligible == 0 {
            let benched: Vec<u64> = tagged
                .iter()
                .filter_map(|a| a.benched_until_ms.filter(|t| now_ms < *t))
                .collect();
            if let Some(first) = benched.iter().min() {
                return Reason::Benched {
                    agents: benched.len() as u32,
                    remaining_ms: first - now_ms,
                };
            }
            return Reason::LifetimeTooShort;
        }
        if !job.under_max_running() {
            return Reason::Throttled {
                running: job.in_flight,
                max: job.def.max_running.unwrap_or(job.in_flight),
            };
        }
        if let Some(a) = self
            .agents
            .values()
            .find(|a| a.reserved_for == Some(job.id))
        {
            return Reason::Reserved {
                agent: a.name.clone(),
            };
        }
        Reason::WaitingForResources {
            need: need.clone(),
            agents: eligible,
        }
    }
}

/// The first resource of `need` that no agent of `tagged` has enough of.
fn shortfall(need: &Resources, tagged: &[&Agent]) -> Shortfall {
    let most = |f: fn(&Resources) -> u64| tagged.iter().map(|a| f(&a.capacity)).max().unwrap_or(0);
    let largest_bytes = most(|r| r.memory_bytes);
    if need.memory_bytes > largest_bytes {
        return Shortfall::Memory { largest_bytes };
    }
    let largest = most(|r| r.cpus as u64);
    if need.cpus as u64 > largest {
        return Shortfall::Cpus { largest };
    }
    let largest = most(|r| r.gpus as u64);
    if need.gpus as u64 > largest {
        return Shortfall::Gpus { largest };
    }
    Shortfall::Other
}
