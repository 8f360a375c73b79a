//! State transitions: retries and backoff, cancellation, memory raised after `MEMORY_EXHAUSTION`, `max_fails`.

use super::*;

#[test]
fn failed_task_retries_with_backoff_then_fails_and_cancels_dependents() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let mut first = job("first", 1);
    first.retries = 1;
    let mut second = job("second", 2);
    second.after = vec!["first".into()];
    let run = env.submit(vec![first, second]);
    let fx = env.step();
    let at = assigned(&fx, a);
    let fx = env.finish(a, &at, 3);
    assert!(fx.assign.is_empty(), "retry waits for its backoff");
    let fx = env.advance(999);
    assert!(fx.assign.is_empty());
    let fx = env.advance(1);
    let again = assigned(&fx, a);
    assert_eq!(again.len(), 1);
    assert_eq!(fx.assign[&a][0].attempt_number, 2);
    let fx = env.finish(a, &again, 3);
    let st = env.status(run);
    assert_eq!(st.counts.failed, 1);
    assert_eq!(
        st.counts.cancelled, 2,
        "dependents cancelled (dependency failed)"
    );
    assert_eq!(st.state, "failed");
    assert_eq!(fx.finished_runs, vec![run]);
}

#[test]
fn cancel_run_cancels_queued_and_stops_running() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("many", 5)]);
    let fx = env.step();
    let at = assigned(&fx, a);
    env.core.cancel_run(run, env.now_ms);
    let fx = env.step();
    assert_eq!(fx.cancel[&a].len(), at.len());
    assert_eq!(
        env.status(run).state,
        "running",
        "waits for the agent to confirm"
    );
    let results = at
        .iter()
        .map(|x| result(*x, AttemptEnd::Cancelled))
        .collect();
    env.core.agent_events(a, &[], results, None, env.now_ms);
    let fx = env.step();
    assert_eq!(fx.finished_runs, vec![run]);
    assert_eq!(env.status(run).state, "cancelled");
}

#[test]
fn a_memory_exhausted_retry_asks_for_the_peak_times_the_factor() {
    let mut env = TestEnv::new();
    let a = env.out_of_memory_once();
    let fx = env.advance(2_000);
    let retry = &fx.assign[&a][0];
    assert_eq!(retry.resources.memory_bytes, 300 << 20, "200 MiB x 1.5");
    assert!(env.store_log.iter().any(|op| matches!(
        op,
        StoreOp::Event { kind: EventKind::MemoryRaised, detail, .. } if detail.contains("from 100M to 300M")
    )));
}

#[test]
fn max_fails_stops_scheduling_after_that_many_failed_tasks() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit_wf(vec![job("j", 5)], Some(1));
    let at = assigned(&env.step(), a);
    let first = at[0];
    let fx = env.finish(a, &[first], 1);
    // The prefetched ones already on the agent may finish; nothing new starts.
    let rest: Vec<AttemptId> = at[1..].to_vec();
    assert!(assigned(&fx, a).is_empty(), "no new task after max_fails");
    env.finish(a, &rest, 0);
    let s = env.status(run);
    assert_eq!(s.state, "failed");
    assert_eq!(s.counts.failed, 1);
    assert_eq!(s.counts.succeeded + s.counts.cancelled, 4, "{s:?}");
    assert!(s.counts.cancelled >= 1, "unstarted tasks cancelled: {s:?}");
}

/// Issue 13, item 6: a task that failed for good says why with its numbers:
/// the memory peak against the limit and the request, the walltime, the
/// code a task classed `INVALID_INPUT` exited with.
#[test]
fn a_failed_task_is_recorded_with_its_numbers() {
    let mut env = TestEnv::new();
    let a = env.agent(3, &[]);
    let mut oom = job("oom", 1);
    oom.resources.memory_bytes = Some(100 << 20);
    let mut slow = job("slow", 1);
    slow.walltime_ms = Some(10_000);
    let input = job("input", 1);
    env.submit(vec![oom, slow, input]);
    let at = assigned(&env.step(), a);
    assert_eq!(at.len(), 3);
    let mut r_oom = result(at[0], AttemptEnd::OutOfMemory);
    r_oom.peak_rss_bytes = 130 << 20;
    r_oom.memory_limit_bytes = Some(120 << 20);
    let r_slow = result(at[1], AttemptEnd::TimedOut);
    let mut r_input = result(
        at[2],
        AttemptEnd::InvalidInput {
            path: "x.csv".into(),
        },
    );
    r_input.exit_code = Some(2);
    env.core
        .agent_events(a, &[], vec![r_oom, r_slow, r_input], None, env.now_ms);
    env.step();
    let reasons: Vec<String> = env
        .store_log
        .iter()
        .filter_map(|op| match op {
            StoreOp::TaskState { reason, .. } => reason.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "memory exhaustion: peak 130M, limit 120M (request 100M)",
            "timeout: walltime 10 secs",
            "missing input: x.csv (exit code 2)"
        ]
    );
}

/// Issue 13, item 6: a task cancelled because its dependency failed says so
/// in `why`, naming the failed task and its failure, also after a restart;
/// `resume` forgets the cause with the cancellation.
#[test]
fn cancelled_dependents_name_the_failure_that_caused_them() {
    use scalable_common::explain::{Cancellation, Reason};
    let mut env = TestEnv::new();
    let a = env.agent(3, &[]);
    let mut post = job("post", 2);
    post.after = vec!["sim".into()];
    let mut last = job("last", 1);
    last.after = vec!["post".into()];
    let run = env.submit(vec![job("sim", 3), post, last]);
    let at = assigned(&env.step(), a);
    assert_eq!(at.len(), 3);
    env.finish(a, &at[..1], 3);
    let cause = Cancellation::DependencyFailed {
        job: "sim".into(),
        task: format!("{run}/sim/0"),
        item: Some("1".into()),
        failure: "exit code 3".into(),
    };
    let why = |env: &TestEnv, job: &str, index: u64| {
        let task = env.core.task_by_path(run, job, index).expect("task");
        env.core.why(task, env.now_ms).expect("why").reason
    };
    let expected = Reason::Cancelled {
        run,
        cause: cause.clone(),
    };
    assert_eq!(why(&env, "post", 1), expected);
    assert_eq!(
        why(&env, "last", 0),
        expected,
        "the first failure, downstream too"
    );
    let rest: Vec<AttemptId> = at[1..].to_vec();
    env.finish(a, &rest, 0);
    env.restart();
    assert_eq!(why(&env, "post", 1), expected, "kept by the store");
    env.core.resume_run(run, env.now_ms).expect("resume");
    env.step();
    assert!(matches!(
        why(&env, "post", 0),
        Reason::WaitingOnDependency { .. }
    ));
    env.restart();
    let post0 = env.core.task_by_path(run, "post", 0).expect("task");
    assert!(env.core.jobs[&env.core.locate_task(post0).unwrap().0]
        .cancel_cause
        .is_none());
}

/// The other causes: the user's cancel and `max_fails`.
#[test]
fn user_cancels_and_max_fails_are_causes_too() {
    use scalable_common::explain::{Cancellation, Reason};
    let mut env = TestEnv::new();
    let run = env.submit(vec![job("j", 2)]);
    env.core.cancel_run(run, env.now_ms);
    env.step();
    let task = env.core.task_by_path(run, "j", 1).expect("task");
    assert_eq!(
        env.core.why(task, env.now_ms).expect("why").reason,
        Reason::Cancelled {
            run,
            cause: Cancellation::ByUser
        }
    );
    let a = env.agent(1, &[]);
    let run = env.submit_wf(vec![job("k", 9)], Some(1));
    let at = assigned(&env.step(), a);
    env.finish(a, &at[..1], 1);
    let task = env.core.task_by_path(run, "k", 8).expect("task");
    assert_eq!(
        env.core.why(task, env.now_ms).expect("why").reason,
        Reason::Cancelled {
            run,
            cause: Cancellation::MaxFails { max: 1 }
        }
    );
}
