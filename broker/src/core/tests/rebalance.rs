//! Rebalancing: prefetched attempts stuck behind a busy agent are asked back
//! for an idle one, run once and are counted once; a holder that already
//! started one keeps it.

use super::*;

/// One agent of 1 cpu holds a running attempt and one prefetched behind it;
/// a second agent of 1 cpu joins. Returns (busy, idle, running, prefetched).
fn stuck_behind_a_long_task(env: &mut TestEnv) -> (AgentId, AgentId, AttemptId, AttemptId) {
    let busy = env.agent(1, &[]);
    env.submit(vec![job("work", 2)]);
    let fx = env.step();
    let ids = assigned(&fx, busy);
    assert_eq!(ids.len(), 2, "one fits now, one prefetched");
    start_all(env, busy, &ids[..1]);
    let idle = env.agent(1, &[]);
    (busy, idle, ids[0], ids[1])
}

fn returned(agent: AgentId, id: AttemptId, env: &mut TestEnv) -> Effects {
    let r = result(id, AttemptEnd::Returned);
    env.core.agent_events(agent, &[], vec![r], None, env.now_ms);
    env.step()
}

fn ended(env: &TestEnv, id: AttemptId) -> Vec<String> {
    env.store_log
        .iter()
        .filter_map(|op| match op {
            StoreOp::AttemptEnded {
                attempt, result, ..
            } if *attempt == id => Some(result.end.class().to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_prefetched_attempt_moves_to_a_freed_agent_runs_once_and_counts_once() {
    let mut env = TestEnv::new();
    let (busy, idle, long, queued) = stuck_behind_a_long_task(&mut env);
    let fx = env.step();
    assert!(
        fx.returns.is_empty(),
        "too young to ask back: {:?}",
        fx.returns
    );
    let fx = env.advance(100);
    assert_eq!(fx.returns.get(&busy), Some(&vec![queued]));
    assert!(
        assigned(&fx, idle).is_empty(),
        "not before the holder gives it back"
    );
    // Asked once: later steps wait for the answer.
    let fx = env.advance(1_000);
    assert!(fx.returns.is_empty(), "asked again: {:?}", fx.returns);

    let fx = returned(busy, queued, &mut env);
    assert_eq!(
        fx.ack[&busy],
        vec![Ack {
            attempt: queued,
            counted: false
        }]
    );
    let moved = assigned(&fx, idle);
    assert_eq!(moved.len(), 1, "the freed agent gets the task back at once");
    assert_eq!(fx.assign[&idle][0].attempt_number, 2);
    let fx = env.finish(idle, &moved, 0);
    assert_eq!(
        fx.ack[&idle],
        vec![Ack {
            attempt: moved[0],
            counted: true
        }]
    );
    let fx = env.finish(busy, &[long], 0);
    assert!(fx.returns.is_empty());

    let run = env.status(1);
    assert_eq!(run.state, "succeeded");
    assert_eq!(run.counts.succeeded, 2);
    assert_eq!(ended(&env, queued), vec!["RETURNED"]);
    assert_eq!(ended(&env, moved[0]), vec!["SUCCESS"]);
    let counted_rows = env
        .store_log
        .iter()
        .filter(|op| matches!(op, StoreOp::TaskState { state, .. } if *state == "succeeded"))
        .count();
    assert_eq!(counted_rows, 2, "each task finished once");
    assert_eq!(
        env.core.agents[&busy].completed, 1,
        "a returned attempt is not work done"
    );
}

#[test]
fn a_move_racing_the_holders_start_leaves_the_attempt_where_it_runs() {
    let mut env = TestEnv::new();
    let (busy, idle, long, queued) = stuck_behind_a_long_task(&mut env);
    let fx = env.advance(100);
    assert_eq!(fx.returns.get(&busy), Some(&vec![queued]));
    // The long task ended and the holder started the queued one before the
    // return reached it: it refuses (no RETURNED) and reports what it did.
    env.finish(busy, &[long], 0);
    let fx = env.finish(busy, &[queued], 0);
    assert!(assigned(&fx, idle).is_empty(), "nothing to run twice");
    assert_eq!(
        fx.ack[&busy],
        vec![Ack {
            attempt: queued,
            counted: true
        }]
    );
    let run = env.status(1);
    assert_eq!(run.state, "succeeded");
    assert_eq!(run.counts.succeeded, 2);
    assert_eq!(ended(&env, queued), vec!["SUCCESS"]);
    assert!(env.core.returning.is_empty() || env.advance(100).returns.is_empty());
}

#[test]
fn a_move_racing_a_start_reported_first_is_not_asked_again() {
    let mut env = TestEnv::new();
    let (busy, idle, long, queued) = stuck_behind_a_long_task(&mut env);
    env.advance(100);
    env.finish(busy, &[long], 0);
    start_all(&mut env, busy, &[queued]);
    let fx = env.advance(1_000);
    assert!(
        fx.returns.is_empty(),
        "a started attempt is never asked back"
    );
    assert!(assigned(&fx, idle).is_empty());
    env.finish(busy, &[queued], 0);
    assert_eq!(env.status(1).counts.succeeded, 2);
}

#[test]
fn an_agent_too_small_gets_nothing_and_a_fitting_one_gets_what_it_has_room_for() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    let mut wide = job("wide", 3);
    wide.resources.cpus = Some(2);
    env.submit(vec![wide]);
    let fx = env.step();
    let ids = assigned(&fx, a);
    assert_eq!(ids.len(), 3);
    start_all(&mut env, a, &ids[..1]);
    // Two wait behind the running one; a 1-cpu agent cannot take them.
    let small = env.agent(1, &[]);
    let fx = env.advance(1_000);
    assert!(fx.returns.is_empty(), "{:?}", fx.returns);
    assert!(assigned(&fx, small).is_empty());
    // A second 2-cpu agent can; it gets as many as it has room for.
    let b = env.agent(2, &[]);
    let fx = env.advance(100);
    assert_eq!(
        fx.returns.get(&a),
        Some(&vec![ids[2]]),
        "room for one, newest first"
    );
    let fx = returned(a, ids[2], &mut env);
    assert_eq!(assigned(&fx, b).len(), 1);
    assert!(assigned(&fx, small).is_empty());
}
