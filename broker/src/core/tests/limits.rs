//! Limits that keep one task or one connection from looping: an assignment
//! too large to send, and the circuit breakers per task and per agent.

use scalable_common::protocol::ASSIGN_BATCH_BYTES_MAX;

use super::*;
use crate::core::bounds::ARGV_STORED_BYTES_MAX;

/// The reason in the last row written for the task at `index` of the first job.
fn task_reason(env: &TestEnv, state: &str) -> Option<String> {
    env.store_log.iter().rev().find_map(|op| match op {
        StoreOp::TaskState {
            state: s, reason, ..
        } if *s == state => reason.clone(),
        _ => None,
    })
}

#[test]
fn an_assignment_too_large_to_send_fails_at_once_without_reaching_the_agent() {
    // Regression (issue 12, defect 1): it was sent, dropped, requeued and sent
    // again forever.
    let mut env = TestEnv::new();
    let a = env.agent(4, &[]);
    let argv = vec!["echo".into(), "x".repeat(ASSIGN_BATCH_BYTES_MAX)];
    let mut big = quick_job("big", argv, Items::One);
    big.retries = 3;
    let run = env.submit(vec![big, job("small", 2)]);
    let fx = env.step();
    let sent: Vec<u64> = fx.assign[&a].iter().map(|x| x.task).collect();
    assert_eq!(sent.len(), 2, "only the small tasks are sent: {sent:?}");
    assert_eq!(env.status(run).counts.failed, 1);
    let reason = task_reason(&env, "failed").expect("a failed task row");
    assert!(
        reason.starts_with("could not start: assignment of ")
            && reason.ends_with(&format!(
                "bytes exceeds the cap of {ASSIGN_BATCH_BYTES_MAX} bytes"
            )),
        "{reason}"
    );
    let ended = env.store_log.iter().find_map(|op| match op {
        StoreOp::AttemptEnded { result, .. } => Some(result.end.class()),
        _ => None,
    });
    assert_eq!(ended, Some("SPAWN_FAILED"));
    // No retry comes back for it, however long one waits.
    let later = env.advance(10_000);
    assert!(later.assign.is_empty());
    let slot = env.core.jobs.values().next().unwrap().tasks[0];
    assert_eq!((slot.attempts, slot.retries_used), (1, 0));
    // Its attempt row keeps a bounded argv, not the megabytes.
    for op in &env.store_log {
        if let StoreOp::InsertAttempt { argv_json, .. } = op {
            assert!(
                argv_json.len() <= ARGV_STORED_BYTES_MAX,
                "{}",
                argv_json.len()
            );
        }
    }
}

#[test]
fn a_task_lost_on_the_way_again_and_again_fails_at_the_breaker_limit() {
    let mut env = TestEnv::new();
    env.core.cfg.agent_undelivered_limit = 100;
    let limit = env.core.config().undelivered_limit;
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("one", 1)]);
    for _ in 0..limit {
        let fx = env.step();
        assert_eq!(assigned(&fx, a).len(), 1);
        // Its connection dropped; it comes back without the attempt.
        env.reconnect(a, 1, &[]);
    }
    let fx = env.step();
    assert!(fx.assign.is_empty(), "not sent again");
    assert_eq!(env.status(run).state, "failed");
    assert_eq!(
        task_reason(&env, "failed").as_deref(),
        Some(&*format!(
            "never reached an agent: lost on the way {limit} times (limit {limit}), never started"
        ))
    );
    let slot = env.core.jobs.values().next().unwrap().tasks[0];
    assert_eq!(slot.retries_used, 0, "no retry spent");
}

#[test]
fn a_started_attempt_missing_after_a_reconnect_is_not_counted_as_undelivered() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("one", 1)]);
    for _ in 0..5 {
        let fx = env.step();
        let at = assigned(&fx, a);
        start_all(&mut env, a, &at);
        env.reconnect(a, 1, &[]);
    }
    assert_eq!(env.status(run).state, "running");
    let slot = env.core.jobs.values().next().unwrap().tasks[0];
    assert_eq!(slot.undelivered, 0);
}

#[test]
fn an_agent_that_keeps_losing_what_it_is_sent_is_benched_then_tried_again() {
    let mut env = TestEnv::new();
    env.core.cfg.bench_ms = 10_000;
    let limit = env.core.config().agent_undelivered_limit;
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("many", 10)]);
    for _ in 0..limit {
        let fx = env.step();
        assert!(!assigned(&fx, a).is_empty());
        env.reconnect(a, 1, &[]);
    }
    let fx = env.step();
    assert!(
        assigned(&fx, a).is_empty(),
        "a benched agent is offered nothing"
    );
    let task = env.core.jobs.values().next().unwrap().first_task;
    let why = env.core.why(task, env.now_ms).expect("a task");
    assert_eq!(
        why.reason,
        scalable_common::explain::Reason::Benched {
            agents: 1,
            remaining_ms: 10_000
        }
    );
    let benched = env.store_log.iter().any(|op| {
        matches!(
            op,
            StoreOp::Event {
                kind: EventKind::AgentBenched,
                ..
            }
        )
    });
    assert!(benched, "an agent_benched event");
    // Another agent takes the work meanwhile: no task failed.
    let b = env.agent(1, &[]);
    let fx = env.step();
    assert!(!assigned(&fx, b).is_empty());
    assert_eq!(env.status(run).counts.failed, 0);
    // After the bench it is tried again, and once something starts there the
    // breaker closes.
    env.core.agent_heartbeat(a, env.now_ms);
    env.core.agent_heartbeat(b, env.now_ms);
    let fx = env.advance(10_000);
    let at = assigned(&fx, a);
    assert!(!at.is_empty(), "tried again after the bench");
    start_all(&mut env, a, &at);
    let agent = &env.core.agents[&a];
    assert_eq!(
        (agent.undelivered_streak, agent.benched_until_ms),
        (0, None)
    );
}
