//! What the core puts in an attempt's row for telemetry (issue 16): since
//! when its task was ready, what it asked for and why.

use super::*;
use crate::core::RequestSource;

/// `(attempt, ready_at_ms, assigned_at_ms, memory, source)` of every attempt row.
fn attempt_rows(env: &TestEnv) -> Vec<(AttemptId, u64, u64, u64, RequestSource)> {
    env.store_log
        .iter()
        .filter_map(|op| match op {
            StoreOp::InsertAttempt {
                attempt,
                ready_at_ms,
                assigned_at_ms,
                resources,
                request_source,
                ..
            } => Some((
                *attempt,
                *ready_at_ms,
                *assigned_at_ms,
                resources.memory_bytes,
                *request_source,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_task_is_ready_from_its_release_and_a_retry_from_the_end_of_its_backoff() {
    let mut env = TestEnv::new();
    let t0 = env.now_ms;
    let mut first = job("first", 1);
    first.retries = 1;
    first.resources.memory_bytes = Some(100 << 20);
    let mut second = job("second", 1);
    second.after = vec!["first".into()];
    env.submit(vec![first, second]);
    env.advance(5_000);
    let a = env.agent(1, &[]);
    let at = assigned(&env.step(), a);
    let mut r = result(at[0], AttemptEnd::OutOfMemory);
    r.peak_rss_bytes = 200 << 20;
    env.core.agent_events(a, &[], vec![r], None, env.now_ms);
    env.step();
    let failed_at = env.now_ms;
    let retry = assigned(&env.advance(3_000), a);
    let released = env.now_ms;
    let after = assigned(&env.finish(a, &retry, 0), a);
    let rows = attempt_rows(&env);
    assert_eq!(
        rows,
        vec![
            (at[0], t0, t0 + 5_000, 100 << 20, RequestSource::Manifest),
            // Backoff 1 s: ready when it ended (the tick that saw it).
            (
                retry[0],
                failed_at + 1_000,
                failed_at + 1_000,
                300 << 20,
                RequestSource::OomRetry
            ),
            // Released when `first` succeeded, and sent at once.
            (after[0], released, released, 0, RequestSource::Manifest),
        ]
    );
}

#[test]
fn a_task_lost_with_its_agent_is_ready_again_when_it_was_lost() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    env.submit(vec![job("j", 1)]);
    let at = assigned(&env.step(), a);
    env.advance(10_000);
    let lost_at = env.now_ms;
    env.core.agent_lost(a, "gone", lost_at);
    env.step();
    env.advance(4_000);
    let b = env.agent(1, &[]);
    let again = assigned(&env.step(), b);
    let rows = attempt_rows(&env);
    assert_eq!(rows[0].0, at[0]);
    assert_eq!((rows[1].0, rows[1].1), (again[0], lost_at));
    assert_eq!(rows[1].2 - rows[1].1, 4_000, "its queue wait");
}

/// An agent that leaves on its own is recorded with its reason, one the
/// broker drained with the broker's, one that vanished as lost.
#[test]
fn an_agent_is_recorded_with_the_reason_it_left() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let b = env.agent(1, &[]);
    let c = env.agent(1, &[]);
    env.core.agent_leaving(a, "idle for 60 s", env.now_ms);
    env.core.agent_disconnected(a, env.now_ms);
    assert!(env.core.drain_agent(b, "scaled down"));
    env.core.agent_disconnected(b, env.now_ms);
    env.core.agent_disconnected(c, env.now_ms);
    env.advance(60_000);
    let left: Vec<(AgentId, String)> = env
        .store_log
        .iter()
        .filter_map(|op| match op {
            StoreOp::AgentLeft { agent, reason, .. } => Some((*agent, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        left,
        vec![
            (a, "left: idle for 60 s".to_string()),
            (b, "left: scaled down".to_string()),
            (c, "heartbeat timeout".to_string()),
        ]
    );
}
