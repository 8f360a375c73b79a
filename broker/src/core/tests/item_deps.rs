//! Per-item dependencies (`after_per`): a task is ready as soon as its own
//! upstream task succeeded, a failure cancels only its own downstream, and a
//! restart or a `resume` recomputes what each task waits for.

use scalable_common::explain::{Cancellation, Reason};
use scalable_common::protocol::{AttemptId, RunId};
use scalable_common::workflow::{Item, Items, JobDef, Per, PerAfter};

use super::{assigned, job, start_all, TestEnv};
use crate::core::SubmitError;

fn per(mut j: JobDef, up: &str, per: Per) -> JobDef {
    j.after_per.push(PerAfter {
        job: up.into(),
        per,
    });
    j
}

/// The attempts assigned in `fx` with the job and index of each.
fn placed(env: &TestEnv, at: &[AttemptId]) -> Vec<(String, u64)> {
    at.iter()
        .map(|id| {
            let a = &env.core.attempts[id];
            (env.core.jobs[&a.job].def.name.clone(), a.index)
        })
        .collect()
}

fn why(env: &TestEnv, run: RunId, job: &str, index: u64) -> Reason {
    let task = env.core.task_by_path(run, job, index).expect("task");
    env.core.why(task, env.now_ms).expect("why").reason
}

/// A slow item does not hold back the others: item 1's postprocessing starts
/// as soon as item 1's simulation succeeded, while item 0's still runs.
#[test]
fn a_task_is_ready_when_its_own_upstream_task_succeeded() {
    let mut env = TestEnv::new();
    let a = env.agent(3, &[]);
    let run = env.submit(vec![job("sim", 3), per(job("post", 3), "sim", Per::Item)]);
    let at = assigned(&env.step(), a);
    assert_eq!(placed(&env, &at).len(), 3);
    start_all(&mut env, a, &at);
    match why(&env, run, "post", 1) {
        Reason::WaitingOnTasks { tasks, jobs } => {
            assert_eq!(tasks.len(), 1);
            assert_eq!(tasks[0].task, format!("{run}/sim/1"));
            assert_eq!(tasks[0].item.as_deref(), Some("2"));
            assert_eq!(tasks[0].state, "running");
            assert!(jobs.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let next = assigned(&env.finish(a, &at[1..2], 0), a);
    assert_eq!(placed(&env, &next), vec![("post".to_string(), 1)]);
    assert_eq!(env.status(run).counts.waiting, 2);
}

/// DAGMan per item: the failed item's downstream (and theirs) is cancelled,
/// the other items go on, and a job waiting for the whole downstream job is
/// cancelled too (it can never fully succeed).
#[test]
fn a_failed_item_cancels_only_its_own_downstream() {
    let mut env = TestEnv::new();
    let a = env.agent(4, &[]);
    let mut all = job("all", 1);
    all.after = vec!["post".into()];
    let run = env.submit(vec![
        job("sim", 3),
        per(job("post", 3), "sim", Per::Index),
        per(job("plot", 3), "post", Per::Item),
        all,
    ]);
    let at = assigned(&env.step(), a);
    start_all(&mut env, a, &at);
    env.finish(a, &at[..1], 4);
    let s = env.status(run);
    assert_eq!((s.counts.failed, s.counts.cancelled), (1, 3));
    let cause = Cancellation::DependencyFailed {
        job: "sim".into(),
        task: format!("{run}/sim/0"),
        item: Some("1".into()),
        failure: "exit code 4".into(),
    };
    let cancelled = Reason::Cancelled {
        run,
        cause: cause.clone(),
    };
    assert_eq!(why(&env, run, "post", 0), cancelled);
    assert_eq!(why(&env, run, "plot", 0), cancelled, "up the chain");
    let next = assigned(&env.finish(a, &at[1..], 0), a);
    assert_eq!(
        placed(&env, &next),
        vec![("post".to_string(), 1), ("post".to_string(), 2)]
    );
    start_all(&mut env, a, &next);
    let plots = assigned(&env.finish(a, &next, 0), a);
    assert_eq!(
        placed(&env, &plots),
        vec![("plot".to_string(), 1), ("plot".to_string(), 2)]
    );
    start_all(&mut env, a, &plots);
    env.finish(a, &plots, 0);
    env.step();
    let s = env.status(run);
    assert_eq!(
        (s.counts.succeeded, s.counts.failed, s.counts.cancelled),
        (6, 1, 3)
    );
    assert_eq!(s.state, "failed");
    // A restart keeps the per-task cancellations (rows, not the job's mark).
    env.restart();
    let s = env.status(run);
    assert_eq!(
        (s.counts.succeeded, s.counts.failed, s.counts.cancelled),
        (6, 1, 3)
    );
    // `resume` runs the failed item and its downstream again, in order.
    let a = env.agent(4, &[]);
    env.core.resume_run(run, env.now_ms).expect("resume");
    let again = assigned(&env.step(), a);
    assert_eq!(placed(&env, &again), vec![("sim".to_string(), 0)]);
    assert!(matches!(
        why(&env, run, "all", 0),
        Reason::WaitingOnDependency { .. }
    ));
    start_all(&mut env, a, &again);
    let post = assigned(&env.finish(a, &again, 0), a);
    assert_eq!(placed(&env, &post), vec![("post".to_string(), 0)]);
}

/// A restart mid-run rebuilds each task's waits from its upstream tasks:
/// what was assigned stays assigned, what waits still waits for the same
/// upstream task, and a success after the restart releases the right one.
#[test]
fn a_restart_keeps_per_item_state() {
    let mut env = TestEnv::new();
    let a = env.agent(4, &[]);
    let mut post = per(job("post", 4), "sim", Per::Item);
    post.items = Items::List((1..=4).rev().map(Item::Int).collect());
    let run = env.submit(vec![job("sim", 4), post]);
    let sims = assigned(&env.step(), a);
    assert_eq!(sims.len(), 4);
    start_all(&mut env, a, &sims);
    // sim item 1 (index 0) done: post's task of item 1 (its index 3) goes.
    let post3 = assigned(&env.finish(a, &sims[..1], 0), a);
    assert_eq!(placed(&env, &post3), vec![("post".to_string(), 3)]);
    env.restart();
    let mut held = sims[1..].to_vec();
    held.extend(&post3);
    let a = env.reconnect(a, 4, &held);
    env.step();
    match why(&env, run, "post", 0) {
        Reason::WaitingOnTasks { tasks, .. } => {
            assert_eq!(tasks[0].task, format!("{run}/sim/3"));
            assert_eq!(tasks[0].item.as_deref(), Some("4"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(env.status(run).counts.waiting, 3);
    // sim item 2 (index 1) done after the restart: post index 2 goes.
    let next = assigned(&env.finish(a, &sims[1..2], 0), a);
    assert_eq!(placed(&env, &next), vec![("post".to_string(), 2)]);
}

/// Mismatched item sets and unknown jobs are refused by the core too (for a
/// plan that did not come through the workflow checks).
#[test]
fn a_mismatch_is_refused_at_submit() {
    let mut env = TestEnv::new();
    let plan = |jobs: Vec<JobDef>| super::plan(jobs, None);
    let bad = env.core.submit(
        plan(vec![job("sim", 3), per(job("post", 2), "sim", Per::Index)]),
        env.now_ms,
    );
    assert_eq!(
        bad.unwrap_err(),
        SubmitError::ItemMismatch {
            job: "post".into(),
            message: "per index: job \"post\" has 2 tasks but job \"sim\" has 3".into()
        }
    );
    let bad = env.core.submit(
        plan(vec![per(job("post", 2), "nope", Per::Item)]),
        env.now_ms,
    );
    assert!(matches!(bad, Err(SubmitError::UnknownAfter { .. })));
}

/// Jobs without per-item edges keep no per-task state for them.
#[test]
fn jobs_without_per_item_edges_pay_nothing_per_task() {
    let mut env = TestEnv::new();
    let mut b = job("b", 1000);
    b.after = vec!["a".into()];
    env.submit(vec![job("a", 1000), b]);
    env.step();
    assert!(env
        .core
        .jobs
        .values()
        .all(|j| j.item_waits.is_empty() && j.item_deps.is_empty()));
    let mut env = TestEnv::new();
    env.submit(vec![job("a", 1000), per(job("b", 1000), "a", Per::Item)]);
    let b = env.core.jobs.values().find(|j| j.def.name == "b").unwrap();
    assert_eq!(b.item_waits.len(), 1000);
    assert!(matches!(
        b.item_deps[0].map,
        scalable_common::workflow::ItemMap::Same
    ));
}
