//! A broker restart through the real store: reclaim, the reclaim window, counts kept, duplicates.

use super::*;

#[test]
fn a_restarted_broker_lets_agents_reclaim_and_recomputes_nothing() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    let b = env.agent(2, &[]);
    let run = env.submit(vec![job("j", 6)]);
    let fx = env.step();
    let (at_a, at_b) = (assigned(&fx, a), assigned(&fx, b));
    start_all(&mut env, a, &at_a[..2]);
    start_all(&mut env, b, &at_b[..2]);
    env.finish(a, &at_a[..1], 0);
    let done_before = env.status(run).counts.succeeded;
    let attempts_before = env.core.ids().attempt;
    // kill -9 of the broker: the core is rebuilt from SQLite alone.
    env.restart();
    let s = env.status(run);
    assert_eq!(s.counts.succeeded, done_before);
    assert_eq!(
        s.counts.succeeded + s.counts.running + s.counts.assigned + s.counts.ready,
        6
    );
    let fx = env.step();
    assert!(
        fx.assign.is_empty(),
        "restored agents are away: nothing dispatched to them"
    );
    assert!(
        env.core.agent_infos().iter().all(|a| !a.connected),
        "shown away"
    );
    // Both agents come back with what they hold (a finished one while away).
    let a2 = env.reconnect(a, 2, &at_a[1..]);
    let b2 = env.reconnect(b, 2, &at_b);
    assert_eq!((a2, b2), (a, b));
    assert!(env.core.agent_infos().iter().all(|a| a.connected));
    env.step();
    env.finish(a, &at_a[1..], 0);
    env.finish(b, &at_b, 0);
    let s = env.status(run);
    assert_eq!(s.state, "succeeded", "{s:?}");
    assert_eq!(
        env.core.ids().attempt,
        attempts_before,
        "no attempt made twice"
    );
}

#[test]
fn after_the_reclaim_window_unclaimed_attempts_run_again_without_a_retry() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("j", 1)]);
    let at = assigned(&env.step(), a);
    start_all(&mut env, a, &at);
    env.restart();
    env.advance(env.core.config().reclaim_window_ms - 2_000);
    assert_eq!(
        env.status(run).counts.running,
        1,
        "still waiting for its agent"
    );
    env.advance(3_000);
    let s = env.status(run);
    assert_eq!(s.counts.ready, 1, "requeued once the window closed");
    let job = env.core.jobs.values().next().unwrap();
    assert_eq!((job.tasks[0].retries_used, job.tasks[0].crashes), (0, 0));
    let c = env.agent(1, &[]);
    let fx = env.step();
    assert_eq!(fx.assign[&c][0].attempt_number, 2);
}

#[test]
fn a_restart_keeps_failures_retries_and_cancelled_downstream() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    let mut up = job("up", 2);
    up.retries = 1;
    let mut down = job("down", 3);
    down.after = vec!["up".into()];
    let run = env.submit(vec![up, down]);
    let at = assigned(&env.step(), a);
    env.finish(a, &at[..1], 0);
    env.finish(a, &at[1..2], 3);
    let fx = env.advance(2_000);
    let retry = assigned(&fx, a);
    env.finish(a, &retry, 3);
    let before = env.status(run);
    assert_eq!(before.state, "failed");
    env.restart();
    let after = env.status(run);
    assert_eq!(after.state, "failed");
    assert_eq!(after.counts, before.counts, "counts survive the restart");
    let job = &env.core.jobs[&env.core.runs[&run].jobs[0]];
    assert_eq!(job.tasks[1].retries_used, 1);
    // and a resumed run after the restart runs the failed and the cancelled
    assert_eq!(env.core.resume_run(run, env.now_ms), Ok(4));
}

#[test]
fn a_counted_result_resent_after_a_restart_is_acknowledged_as_counted() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("j", 2)]);
    let at = assigned(&env.step(), a);
    // Counted and committed; the broker dies before the ack leaves.
    env.finish(a, &at[..1], 0);
    env.restart();
    let back = env.reconnect(a, 1, &at);
    env.step();
    let fx = env.finish(back, &at, 0);
    assert!(
        fx.ack[&back].contains(&Ack {
            attempt: at[0],
            counted: true
        }),
        "promote, not discard"
    );
    assert!(fx.ack[&back].contains(&Ack {
        attempt: at[1],
        counted: true
    }));
    let s = env.status(run);
    assert_eq!(s.counts.succeeded, 2);
    assert!(!env
        .store_log
        .iter()
        .any(|op| matches!(op, StoreOp::StaleResult { .. })));
}
