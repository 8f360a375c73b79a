//! Checkpoints in the core: which ending keeps a version, when the next
//! attempt gets a restore before it is sent, and the drop on success.

use scalable_common::protocol::{AttemptEnd, Started};

use super::{assigned, job, result, start_all, TestEnv};
use crate::core::CheckpointOp;

#[test]
fn a_drained_attempt_is_kept_restored_for_the_next_and_dropped_on_success() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let mut j = job("count", 1);
    j.checkpoint = vec!["ckpt".into()];
    j.retries = 1;
    env.submit(vec![j]);
    let first = assigned(&env.step(), a);
    start_all(&mut env, a, &first);
    let task = env.core.attempts[&first[0]].job;
    let task = env.core.jobs[&task].first_task;
    // Its own failure keeps nothing (what it uploaded while it ran, without
    // a shared filesystem, goes); the retry still gets a restore (the paths
    // are cleared of what the failed attempt left).
    let fx = env.finish(a, &first, 1);
    assert_eq!(
        fx.checkpoints,
        vec![CheckpointOp::DropAttempt {
            task,
            attempt: first[0]
        }]
    );
    let fx = env.advance(1_500);
    let second = assigned(&fx, a);
    assert!(matches!(
        fx.checkpoints.as_slice(),
        [CheckpointOp::Restore { task: t, attempt, .. }] if *t == task && *attempt == second[0]
    ));
    start_all(&mut env, a, &second);
    let drained = result(second[0], AttemptEnd::Drained);
    env.core
        .agent_events(a, &[], vec![drained], None, env.now_ms);
    let fx = env.step();
    assert!(matches!(
        fx.checkpoints.first(),
        Some(CheckpointOp::Keep { task: t, attempt, paths, .. })
            if *t == task && *attempt == second[0] && paths == &["ckpt".to_string()]
    ));
    let b = env.agent(1, &[]);
    let fx = env.step();
    let third = assigned(&fx, b);
    assert_eq!(third.len(), 1);
    assert!(matches!(
        fx.checkpoints.as_slice(),
        [CheckpointOp::Restore { .. }]
    ));
    let started = [Started {
        attempt: third[0],
        at_us: env.now_ms * 1000,
    }];
    let ok = result(third[0], AttemptEnd::Exited { code: 0 });
    env.core
        .agent_events(b, &started, vec![ok], None, env.now_ms);
    let fx = env.step();
    assert_eq!(fx.checkpoints, vec![CheckpointOp::Drop { task }]);
}
