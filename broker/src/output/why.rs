//! The words of `scalable why`: a typed [`Reason`] from the core turned into
//! the one line a person can act on.
//!
//! Owns the sentences only; it must not decide anything (the core's
//! `explain` does) and must not print (the CLI does).

use scalable_common::explain::{Cancellation, Reason, Shortfall};
use scalable_common::protocol::WhyAnswer;
use scalable_common::units::format_size;

use super::escape::printable;

/// `RUN/JOB/INDEX (state): reason`, with the item beside the index for a job
/// with items: `3/sim/3 (item 4, ready): ...`.
pub fn why_text(w: &WhyAnswer) -> String {
    let task = printable(&w.task);
    let reason = reason_text(&w.reason);
    match &w.item {
        Some(item) => format!("{task} (item {}, {}): {reason}", printable(item), w.state),
        None => format!("{task} ({}): {reason}", w.state),
    }
}

/// ` NAME (HOST)` of an agent, or nothing.
fn on_agent(agent: &Option<scalable_common::explain::AgentRef>) -> String {
    agent.as_ref().map_or(String::new(), |a| {
        format!(" {} ({})", printable(&a.name), printable(&a.host))
    })
}

/// `1.5M of 4M` (or `1.5M so far` when the total is unknown).
fn progress(done: u64, total: Option<u64>) -> String {
    let size = scalable_common::units::format_size;
    match total {
        Some(t) => format!("{} of {}", size(done), size(t)),
        None => format!("{} so far", size(done)),
    }
}

/// The sentence for one reason (a plain match table).
pub fn reason_text(r: &Reason) -> String {
    match r {
        Reason::Done {
            cache_note: Some(note),
        } => format!("it is done; {note}"),
        Reason::Done { cache_note: None } => "it is done".into(),
        Reason::Ended { state, run } => {
            format!("it ended {state}; scalable analyze {run} says why")
        }
        Reason::Cancelled { cause, .. } => format!("it was cancelled {}", cancelled_because(cause)),
        Reason::Assigned { agent: Some(a) } => format!(
            "it is queued on agent {} ({}), waiting for room there",
            a.name, a.host
        ),
        Reason::Assigned { agent: None } => "it is being assigned".into(),
        Reason::Running { agent: Some(a) } => {
            format!(
                "it is running on agent {} ({})",
                printable(&a.name),
                printable(&a.host)
            )
        }
        Reason::Running { agent: None } => "it is running".into(),
        Reason::StagingIn {
            agent,
            done_bytes,
            total_bytes,
        } => format!(
            "it waits for its inputs: agent{} is fetching them ({})",
            on_agent(agent),
            progress(*done_bytes, *total_bytes)
        ),
        Reason::StagingOut {
            agent,
            done_bytes,
            total_bytes,
        } => format!(
            "its process ended; it waits for its outputs: agent{} is handing them back ({})",
            on_agent(agent),
            progress(*done_bytes, *total_bytes)
        ),
        Reason::TransferFailed { run, error } => format!(
            "it failed on a transfer: {} (scalable analyze {run} has the details)",
            printable(error)
        ),
        Reason::WaitingOnDependency { jobs } => {
            format!("waiting for dependency {}", jobs.join(", "))
        }
        Reason::WaitingOnTasks { tasks, jobs } => {
            let mut parts: Vec<String> = tasks
                .iter()
                .map(|t| match &t.item {
                    Some(item) => format!("task {} (item {}, {})", t.task, printable(item), t.state),
                    None => format!("task {} ({})", t.task, t.state),
                })
                .collect();
            if !jobs.is_empty() {
                parts.push(format!("dependency {}", jobs.join(", ")));
            }
            format!("waiting for {}", parts.join(", "))
        }
        Reason::Backoff { remaining_ms } => {
            format!("retrying after a failure; backoff ends in {remaining_ms} ms")
        }
        Reason::NoAgentConnected { tag: Some(t) } => {
            format!("no agent is connected (it needs one with tag {t})")
        }
        Reason::NoAgentConnected { tag: None } => "no agent is connected".into(),
        Reason::NoAgentWithTag { tag } => format!("no connected agent has tag {tag}"),
        Reason::AllAgentsTagged => "no connected agent runs untagged tasks (all are tagged)".into(),
        Reason::LargerThanEveryAgent { need, short } => match short {
            Shortfall::Memory { largest_bytes } => format!(
                "needs {} memory, largest agent has {}",
                format_size(need.memory_bytes),
                format_size(*largest_bytes)
            ),
            Shortfall::Cpus { largest } => {
                format!("needs {} cpus, largest agent has {largest}", need.cpus)
            }
            Shortfall::Gpus { largest } => {
                format!("needs {} gpus, largest agent has {largest}", need.gpus)
            }
            Shortfall::Other => format!("needs {need}, more than any connected agent offers"),
        },
        Reason::NoContainerRuntime => {
            "needs a container image, and no agent that serves it has a container runtime".into()
        }
        Reason::LifetimeTooShort => "its walltime does not fit in any agent's remaining lifetime; a fresher pilot will take it".into(),
        Reason::Benched {
            agents,
            remaining_ms,
        } => format!(
            "the {agents} agent(s) that can run it kept losing what they were sent (circuit breaker); one is tried again in {} s",
            remaining_ms.div_ceil(1000)
        ),
        Reason::Throttled { running, .. } => {
            format!("job throttled by max_running ({running} running)")
        }
        Reason::Reserved { agent } => format!(
            "agent {agent} is reserved for it and is draining smaller tasks to make room"
        ),
        Reason::WaitingForResources { need, agents } => format!(
            "waiting for free resources: it needs {need} and the {agents} agent(s) that can run it are busy"
        ),
    }
}

/// Why tasks were cancelled, to follow "cancelled": `by the user`,
/// `because the run reached max_fails (3 failed tasks)`, `because its
/// dependency bad failed (task 3/bad/0, item 1: exit code 3)`.
pub fn cancelled_because(c: &Cancellation) -> String {
    match c {
        Cancellation::ByUser => "by the user".into(),
        Cancellation::MaxFails { max } => {
            format!("because the run reached max_fails ({max} failed tasks)")
        }
        Cancellation::DependencyFailed {
            job,
            task,
            item,
            failure,
        } => {
            let item = item
                .as_deref()
                .map(|i| format!(", item {}", printable(i)))
                .unwrap_or_default();
            format!(
                "because its dependency {} failed (task {}{item}: {})",
                printable(job),
                printable(task),
                printable(failure)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use scalable_common::explain::AgentRef;
    use scalable_common::resources::Resources;

    use super::*;

    fn res(cpus: u32, memory_bytes: u64, gpus: u32) -> Resources {
        Resources {
            cpus,
            memory_bytes,
            gpus,
            custom: vec![],
        }
    }

    /// Every sentence, exactly: scripts and tests read these lines.
    #[test]
    fn every_reason_has_its_sentence() {
        let a = || {
            Some(AgentRef {
                name: "a1".into(),
                host: "h".into(),
            })
        };
        let cases: Vec<(Reason, &str)> = vec![
            (Reason::Done { cache_note: None }, "it is done"),
            (
                Reason::Done {
                    cache_note: Some("cache miss: input x changed".into()),
                },
                "it is done; cache miss: input x changed",
            ),
            (
                Reason::Ended {
                    state: "failed".into(),
                    run: 3,
                },
                "it ended failed; scalable analyze 3 says why",
            ),
            (
                Reason::Cancelled {
                    run: 3,
                    cause: Cancellation::DependencyFailed {
                        job: "bad".into(),
                        task: "3/bad/0".into(),
                        item: Some("1".into()),
                        failure: "exit code 3".into(),
                    },
                },
                "it was cancelled because its dependency bad failed (task 3/bad/0, item 1: exit code 3)",
            ),
            (
                Reason::Cancelled {
                    run: 3,
                    cause: Cancellation::MaxFails { max: 2 },
                },
                "it was cancelled because the run reached max_fails (2 failed tasks)",
            ),
            (
                Reason::Cancelled {
                    run: 3,
                    cause: Cancellation::ByUser,
                },
                "it was cancelled by the user",
            ),
            (
                Reason::Assigned { agent: a() },
                "it is queued on agent a1 (h), waiting for room there",
            ),
            (Reason::Assigned { agent: None }, "it is being assigned"),
            (Reason::Running { agent: a() }, "it is running on agent a1 (h)"),
            (Reason::Running { agent: None }, "it is running"),
            (
                Reason::WaitingOnDependency {
                    jobs: vec!["x".into(), "y".into()],
                },
                "waiting for dependency x, y",
            ),
            (
                Reason::WaitingOnTasks {
                    tasks: vec![
                        scalable_common::explain::UpstreamTask {
                            task: "3/sim/0".into(),
                            item: Some("ssp1".into()),
                            state: "running".into(),
                        },
                        scalable_common::explain::UpstreamTask {
                            task: "3/prep/0".into(),
                            item: None,
                            state: "waiting".into(),
                        },
                    ],
                    jobs: vec!["setup".into()],
                },
                "waiting for task 3/sim/0 (item ssp1, running), task 3/prep/0 (waiting), dependency setup",
            ),
            (
                Reason::Backoff { remaining_ms: 900 },
                "retrying after a failure; backoff ends in 900 ms",
            ),
            (
                Reason::NoAgentConnected {
                    tag: Some("gpu".into()),
                },
                "no agent is connected (it needs one with tag gpu)",
            ),
            (
                Reason::NoAgentConnected { tag: None },
                "no agent is connected",
            ),
            (
                Reason::NoAgentWithTag { tag: "gpu".into() },
                "no connected agent has tag gpu",
            ),
            (
                Reason::AllAgentsTagged,
                "no connected agent runs untagged tasks (all are tagged)",
            ),
            (
                Reason::LargerThanEveryAgent {
                    need: res(1, 64 << 30, 0),
                    short: Shortfall::Memory {
                        largest_bytes: 8 << 30,
                    },
                },
                "needs 64G memory, largest agent has 8G",
            ),
            (
                Reason::LargerThanEveryAgent {
                    need: res(9, 0, 0),
                    short: Shortfall::Cpus { largest: 4 },
                },
                "needs 9 cpus, largest agent has 4",
            ),
            (
                Reason::LargerThanEveryAgent {
                    need: res(1, 0, 2),
                    short: Shortfall::Gpus { largest: 0 },
                },
                "needs 2 gpus, largest agent has 0",
            ),
            (
                Reason::LargerThanEveryAgent {
                    need: res(1, 1 << 30, 0),
                    short: Shortfall::Other,
                },
                "needs 1 cpu, 1G, more than any connected agent offers",
            ),
            (
                Reason::NoContainerRuntime,
                "needs a container image, and no agent that serves it has a container runtime",
            ),
            (
                Reason::LifetimeTooShort,
                "its walltime does not fit in any agent's remaining lifetime; a fresher pilot will take it",
            ),
            (
                Reason::Throttled { running: 1, max: 1 },
                "job throttled by max_running (1 running)",
            ),
            (
                Reason::Benched {
                    agents: 2,
                    remaining_ms: 59_001,
                },
                "the 2 agent(s) that can run it kept losing what they were sent (circuit breaker); one is tried again in 60 s",
            ),
            (
                Reason::Reserved { agent: "a1".into() },
                "agent a1 is reserved for it and is draining smaller tasks to make room",
            ),
            (
                Reason::WaitingForResources {
                    need: res(2, 1 << 30, 0),
                    agents: 3,
                },
                "waiting for free resources: it needs 2 cpu, 1G and the 3 agent(s) that can run it are busy",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason_text(&reason), text, "{reason:?}");
        }
        let mut w = WhyAnswer {
            task: "1/j/0".into(),
            item: None,
            state: "ready".into(),
            reason: Reason::AllAgentsTagged,
        };
        assert_eq!(
            why_text(&w),
            "1/j/0 (ready): no connected agent runs untagged tasks (all are tagged)"
        );
        // Issue 13, item 7: the item beside the index.
        w.task = "1/sim/3".into();
        w.item = Some("4".into());
        assert_eq!(
            why_text(&w),
            "1/sim/3 (item 4, ready): no connected agent runs untagged tasks (all are tagged)"
        );
    }

    /// `why --json` prints the typed form: scripts match on the reason's name.
    #[test]
    fn the_json_form_names_the_reason() {
        let w = WhyAnswer {
            task: "1/j/0".into(),
            item: Some("1".into()),
            state: "ready".into(),
            reason: Reason::NoAgentWithTag { tag: "gpu".into() },
        };
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"task":"1/j/0","item":"1","state":"ready","reason":{"no_agent_with_tag":{"tag":"gpu"}}}"#
        );
    }
}
