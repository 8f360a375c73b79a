//! `resume`: a rescue DAG.

use super::*;

#[test]
fn resume_reruns_only_the_failed_and_their_cancelled_downstream() {
    let mut env = TestEnv::new();
    let a = env.agent(4, &[]);
    let mut down = job("down", 1);
    down.after = vec!["up".into()];
    let other = job("other", 2);
    let run = env.submit(vec![job("up", 2), down, other]);
    let fx = env.step();
    let at = assigned(&fx, a);
    assert_eq!(at.len(), 4, "up x2 and other x2");
    // up/1 fails, the rest succeed: down is cancelled.
    env.finish(a, &at[..1], 1);
    env.finish(a, &at[1..], 0);
    let s = env.status(run);
    assert_eq!(s.state, "failed");
    assert_eq!(
        (s.counts.succeeded, s.counts.failed, s.counts.cancelled),
        (3, 1, 1)
    );
    assert!(env.core.resume_run(run, env.now_ms).is_ok());
    let fx = env.step();
    let again = assigned(&fx, a);
    assert_eq!(again.len(), 1, "only the failed task runs first");
    let fx = env.finish(a, &again, 0);
    let down_at = assigned(&fx, a);
    assert_eq!(down_at.len(), 1, "then its downstream");
    env.finish(a, &down_at, 0);
    let s = env.status(run);
    assert_eq!(s.state, "succeeded");
    assert_eq!(s.counts.succeeded, 5);
    assert!(env.core.resume_run(run, env.now_ms).unwrap() == 0);
}
