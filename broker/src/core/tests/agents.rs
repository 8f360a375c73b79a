//! Agents: lost, silent, stale results, draining, reconnects and fencing, the crash limit, a stalled broker.

use super::*;

#[test]
fn lost_agent_requeues_without_spending_a_retry() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("one", 1)]);
    let fx = env.step();
    assert_eq!(assigned(&fx, a).len(), 1);
    env.core.agent_lost(a, "disconnected", env.now_ms);
    let fx = env.step();
    assert!(fx.assign.is_empty());
    assert_eq!(env.status(run).counts.ready, 1);
    let b = env.agent(1, &[]);
    let fx = env.step();
    let at = assigned(&fx, b);
    assert_eq!(fx.assign[&b][0].attempt_number, 2);
    env.finish(b, &at, 0);
    assert_eq!(env.status(run).state, "succeeded");
    let slot = env.core.jobs.values().next().unwrap().tasks[0];
    assert_eq!(slot.retries_used, 0);
}

#[test]
fn silent_agent_is_lost_after_the_heartbeat_timeout() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    env.submit(vec![job("one", 1)]);
    env.step();
    env.advance(env.core.config().heartbeat_timeout_ms);
    assert!(env.core.agents.contains_key(&a));
    env.advance(1);
    assert!(!env.core.agents.contains_key(&a), "lost after the timeout");
}

#[test]
fn stale_results_are_acknowledged_and_ignored() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("one", 1)]);
    let fx = env.step();
    let at = assigned(&fx, a);
    env.core.agent_lost(a, "disconnected", env.now_ms);
    let b = env.agent(1, &[]);
    let fx = env.step();
    let at2 = assigned(&fx, b);
    // the old agent comes back with a result of its old attempt
    let a2 = env.agent(1, &[]);
    env.core.agent_events(
        a2,
        &[],
        vec![result(at[0], AttemptEnd::Exited { code: 0 })],
        None,
        env.now_ms,
    );
    let fx = env.step();
    assert_eq!(
        fx.ack[&a2],
        vec![Ack {
            attempt: at[0],
            counted: false
        }],
        "acked as ignored"
    );
    assert_eq!(
        env.status(run).counts.succeeded,
        0,
        "stale result not counted"
    );
    env.finish(b, &at2, 0);
    assert_eq!(env.status(run).counts.succeeded, 1);
}

#[test]
fn a_draining_agent_gets_nothing_back() {
    // Regression: drained attempts were re-assigned to the draining agent, which
    // drained them again, forever.
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("one", 3)]);
    let fx = env.step();
    let at = assigned(&fx, a);
    let results = at.iter().map(|x| result(*x, AttemptEnd::Drained)).collect();
    env.core.agent_events(a, &[], results, None, env.now_ms);
    let fx = env.step();
    assert!(fx.assign.is_empty(), "re-assigned to a draining agent");
    assert_eq!(env.status(run).counts.ready, 3);
    let b = env.agent(1, &[]);
    let fx = env.step();
    assert!(!assigned(&fx, b).is_empty(), "a fresh agent takes them");
}

#[test]
fn an_agent_that_reconnects_in_time_keeps_its_attempts() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    let run = env.submit(vec![job("j", 2)]);
    let at = assigned(&env.step(), a);
    assert_eq!(at.len(), 2);
    start_all(&mut env, a, &at);
    env.core.agent_disconnected(a, env.now_ms);
    env.advance(5_000);
    assert_eq!(env.status(run).counts.running, 2, "still its, while away");
    // It held only the first; the second was lost on the way.
    let back = env.reconnect(a, 2, &at[..1]);
    assert_eq!(back, a, "same id");
    let fx = env.step();
    assert_eq!(env.status(run).counts.running, 1);
    let again = assigned(&fx, a);
    assert_eq!(again.len(), 1, "the attempt it did not hold is requeued");
    env.finish(a, &[at[0], again[0]], 0);
    assert_eq!(env.status(run).state, "succeeded");
    let job = env.core.jobs.values().next().unwrap();
    assert!(job
        .tasks
        .iter()
        .all(|s| s.retries_used == 0 && s.crashes == 0));
}

#[test]
fn an_agent_back_after_being_declared_lost_gets_its_held_attempts_stopped() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    env.submit(vec![job("j", 1)]);
    let at = assigned(&env.step(), a);
    start_all(&mut env, a, &at);
    env.core.agent_disconnected(a, env.now_ms);
    env.advance(env.core.config().heartbeat_timeout_ms + 1_000);
    assert!(!env.core.agents.contains_key(&a), "lost");
    let b = env.reconnect(a, 1, &at);
    assert_ne!(b, a, "a lost agent gets a new id");
    let fx = env.step();
    assert_eq!(fx.cancel[&b], at, "its stale attempt is stopped");
}

#[test]
fn a_task_that_keeps_killing_its_agents_fails_at_the_crash_limit() {
    let mut env = TestEnv::new();
    let run = env.submit(vec![job("j", 1)]);
    let limit = env.core.config().crash_limit;
    for n in 1..=limit {
        let a = env.agent(1, &[]);
        let at = assigned(&env.step(), a);
        assert_eq!(at.len(), 1, "round {n}");
        start_all(&mut env, a, &at);
        env.core.agent_lost(a, "heartbeat timeout", env.now_ms);
        env.step();
    }
    let s = env.status(run);
    assert_eq!(s.counts.failed, 1);
    let reason = env.store_log.iter().rev().find_map(|op| match op {
        StoreOp::TaskState { reason, .. } => reason.clone(),
        _ => None,
    });
    assert!(reason.unwrap().contains("crash limit"));
}

#[test]
fn drained_and_unstarted_losses_count_no_crash() {
    let mut env = TestEnv::new();
    let run = env.submit(vec![job("j", 1)]);
    for _ in 0..(env.core.config().crash_limit + 2) {
        let a = env.agent(1, &[]);
        assign_and_lose_unstarted(&mut env, a);
    }
    assert_eq!(env.status(run).counts.failed, 0);
    assert_eq!(env.status(run).counts.ready, 1);
}

fn assign_and_lose_unstarted(env: &mut TestEnv, a: AgentId) {
    let at = assigned(&env.step(), a);
    assert_eq!(at.len(), 1);
    env.core.agent_lost(a, "heartbeat timeout", env.now_ms);
    env.step();
}

#[test]
fn a_stalled_broker_does_not_condemn_its_agents() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    env.advance(100);
    // One tick after a gap far longer than the timeout (the broker was stopped).
    env.now_ms += 10 * env.core.config().heartbeat_timeout_ms;
    env.core.tick(env.now_ms);
    env.step();
    assert!(env.core.agents.contains_key(&a), "not lost on resume");
    env.advance(env.core.config().heartbeat_timeout_ms + 1_000);
    assert!(
        !env.core.agents.contains_key(&a),
        "but lost if it stays silent"
    );
}
