//! `why`: where a task is and what keeps it there.
//!
//! Read-only. Must not change any state.

use std::cmp::Reverse;

use scalable_common::protocol::TaskId;
use scalable_common::resources::Resources;

use super::model::{Agent, Job, TaskState};
use super::Core;

impl Core {
    /// Why a task is where it is (SPEC §7 `why`): one line a person can act on.
    pub fn why(&self, task: TaskId, now_ms: u64) -> Option<(String, &'static str, String)> {
        let (job_id, index) = self.locate_task(task)?;
        let job = &self.jobs[&job_id];
        let slot = job.tasks[index as usize];
        let path = format!("{}/{}/{}", job.run, job.def.name, index);
        let state = slot.state.name();
        let on_agent = || {
            self.attempts
                .values()
                .find(|a| a.job == job_id && a.index == index)
                .and_then(|a| self.agents.get(&a.agent))
        };
        let reason = match slot.state {
            TaskState::Succeeded | TaskState::Cached => match self.cache_notes.get(&task) {
                Some(note) => format!("it is done; {note}"),
                None => "it is done".to_string(),
            },
            TaskState::Failed | TaskState::Cancelled => {
                format!("it ended {state}; scalable analyze {} says why", job.run)
            }
            TaskState::Assigned => match on_agent() {
                Some(a) => format!(
                    "it is queued on agent {} ({}), waiting for room there",
                    a.name, a.hostname
                ),
                None => "it is being assigned".into(),
            },
            TaskState::Running => match on_agent() {
                Some(a) => format!("it is running on agent {} ({})", a.name, a.hostname),
                None => "it is running".into(),
            },
            TaskState::Waiting => {
                let pending: Vec<&str> = self.runs[&job.run]
                    .jobs
                    .iter()
                    .map(|j| &self.jobs[j])
                    .filter(|d| job.def.after.contains(&d.def.name))
                    .filter(|d| d.counts.succeeded + d.counts.cached < d.count())
                    .map(|d| d.def.name.as_str())
                    .collect();
                format!("waiting for dependency {}", pending.join(", "))
            }
            TaskState::Ready => self.why_ready(job, index, now_ms),
        };
        Some((path, state, reason))
    }

    pub(super) fn why_ready(&self, job: &Job, index: u64, now_ms: u64) -> String {
        if let Some(Reverse((due, _, _))) = self
            .backoff
            .iter()
            .find(|Reverse((_, j, i))| *j == job.id && *i == index)
        {
            return format!(
                "retrying after a failure; backoff ends in {} ms",
                due.saturating_sub(now_ms)
            );
        }
        let tagged: Vec<&Agent> = self
            .agents
            .values()
            .filter(|a| !a.draining && a.serves(job.tag()))
            .collect();
        if tagged.is_empty() {
            return match job.tag() {
                Some(t) if self.agents.is_empty() => {
                    format!("no agent is connected (it needs one with tag {t})")
                }
                Some(t) => format!("no connected agent has tag {t}"),
                None if self.agents.is_empty() => "no agent is connected".into(),
                None => "no connected agent runs untagged tasks (all are tagged)".into(),
            };
        }
        let need = &job.resources;
        if !tagged.iter().any(|a| a.could_ever_run(need)) {
            let most =
                |f: fn(&Resources) -> u64| tagged.iter().map(|a| f(&a.capacity)).max().unwrap_or(0);
            if need.memory_bytes > most(|r| r.memory_bytes) {
                return format!(
                    "needs {} memory, largest agent has {}",
                    scalable_common::units::format_size(need.memory_bytes),
                    scalable_common::units::format_size(most(|r| r.memory_bytes))
                );
            }
            if need.cpus as u64 > most(|r| r.cpus as u64) {
                return format!(
                    "needs {} cpus, largest agent has {}",
                    need.cpus,
                    most(|r| r.cpus as u64)
                );
            }
            if need.gpus as u64 > most(|r| r.gpus as u64) {
                return format!(
                    "needs {} gpus, largest agent has {}",
                    need.gpus,
                    most(|r| r.gpus as u64)
                );
            }
            return format!("needs {need}, more than any connected agent offers");
        }
        if job.container.is_some() && tagged.iter().all(|a| a.runtimes.is_empty()) {
            return "needs a container image, and no agent that serves it has a container runtime"
                .into();
        }
        if !tagged.iter().any(|a| self.eligible(a, job, now_ms)) {
            return "its walltime does not fit in any agent's remaining lifetime; a fresher pilot will take it".into();
        }
        if !job.under_max_running() {
            return format!("job throttled by max_running ({} running)", job.in_flight);
        }
        if let Some(a) = self
            .agents
            .values()
            .find(|a| a.reserved_for == Some(job.id))
        {
            return format!(
                "agent {} is reserved for it and is draining smaller tasks to make room",
                a.name
            );
        }
        format!(
            "waiting for free resources: it needs {need} and the {} agent(s) that can run it are busy",
            tagged.iter().filter(|a| self.eligible(a, job, now_ms)).count()
        )
    }
}
