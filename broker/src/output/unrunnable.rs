//! What `submit` says at once about a job that nothing connected and
//! nothing the broker can start could ever run: the reason in `why`'s words
//! and a hint that fits it, as a text line or a JSON object for stderr.
//!
//! Words only: must not decide what is unrunnable (the core does) nor print.

use scalable_common::explain::{Reason, Shortfall, Unrunnable};

use super::escape::printable;
use super::why::reason_text;

/// `warning: job sim (3 tasks) cannot start: no connected agent has tag
/// demeter (hint: start an agent with --tags demeter, ...)`.
pub fn unrunnable_text(u: &Unrunnable) -> String {
    format!(
        "warning: {}: {} (hint: {})",
        subject(u),
        reason_text(&u.reason),
        unrunnable_hint(&u.reason)
    )
}

/// The same as one JSON object, for `--json`: the line, the hint, the job,
/// its task count and the typed reason.
pub fn unrunnable_json(u: &Unrunnable) -> String {
    serde_json::json!({
        "warning": format!("{}: {}", subject(u), reason_text(&u.reason)),
        "hint": unrunnable_hint(&u.reason),
        "job": u.job,
        "tasks": u.tasks,
        "reason": u.reason,
    })
    .to_string()
}

fn subject(u: &Unrunnable) -> String {
    let tasks = if u.tasks == 1 { "task" } else { "tasks" };
    format!(
        "job {} ({} {tasks}) cannot start",
        printable(&u.job),
        u.tasks
    )
}

/// What would let the job run, by what keeps it from running.
pub fn unrunnable_hint(r: &Reason) -> String {
    match r {
        Reason::NoAgentConnected { tag } => format!(
            "start an agent: scalable-agent --token-file STATE_DIR/agent.token{}, or a broker with --local-agents N",
            tag.as_deref()
                .map(|t| format!(" --tags {}", printable(t)))
                .unwrap_or_default()
        ),
        Reason::NoAgentWithTag { tag } => format!(
            "start an agent with --tags {0}, or a broker whose target serves {0}",
            printable(tag)
        ),
        Reason::AllAgentsTagged => {
            "give the job the tag of an agent, or start an agent without --tags".into()
        }
        Reason::LargerThanEveryAgent { short, .. } => {
            let what = match short {
                Shortfall::Memory { .. } => "memory",
                Shortfall::Cpus { .. } => "cpus",
                Shortfall::Gpus { .. } => "gpus",
                Shortfall::Other => "of what it asks for",
            };
            format!("lower the request, or start an agent with more {what}")
        }
        Reason::NoContainerRuntime => {
            "install podman, docker or apptainer where the agents run, or remove the image".into()
        }
        _ => "scalable why RUN/JOB/0 says what it waits for".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalable_common::resources::Resources;

    #[test]
    fn a_warning_names_the_job_the_reason_and_a_hint() {
        let u = Unrunnable {
            job: "sim".into(),
            tasks: 3,
            reason: Reason::NoAgentWithTag {
                tag: "demeter".into(),
            },
        };
        assert_eq!(
            unrunnable_text(&u),
            "warning: job sim (3 tasks) cannot start: no connected agent has tag demeter (hint: start an agent with --tags demeter, or a broker whose target serves demeter)"
        );
        let v: serde_json::Value = serde_json::from_str(&unrunnable_json(&u)).unwrap();
        assert_eq!(v["reason"]["no_agent_with_tag"]["tag"], "demeter");
        assert_eq!(v["tasks"], 3);
        let big = Unrunnable {
            job: "big".into(),
            tasks: 1,
            reason: Reason::LargerThanEveryAgent {
                need: Resources {
                    cpus: 1,
                    memory_bytes: 64 << 30,
                    gpus: 0,
                    custom: vec![],
                },
                short: Shortfall::Memory {
                    largest_bytes: 8 << 30,
                },
            },
        };
        assert_eq!(
            unrunnable_text(&big),
            "warning: job big (1 task) cannot start: needs 64G memory, largest agent has 8G (hint: lower the request, or start an agent with more memory)"
        );
    }
}
