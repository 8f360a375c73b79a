//! `memory: auto` at dispatch (issue 17): a task of an `auto` job is sized
//! by the shell before it is queued, like a cache probe; its attempt asks
//! for the answer and records how it was sized; a memory kill retries with
//! at least the advisor's bound; a job without `auto` asks nothing.

use std::sync::Arc;

use scalable_common::manifest::AutoResources;

use super::*;
use crate::core::{RequestSource, SizingRecord, TaskSizing};

const MEMORY_ONLY: AutoResources = AutoResources {
    memory: true,
    cpus: false,
    walltime: true,
};

fn auto_job(env: &mut TestEnv, n: i64) -> RunId {
    let mut j = job("sim", n);
    j.resources.memory_bytes = Some(2 << 30);
    let mut p = plan(vec![j], None);
    p.jobs[0].auto = Some(MEMORY_ONLY);
    env.submit_plan(p)
}

fn advised(memory_bytes: u64) -> TaskSizing {
    TaskSizing {
        resources: Resources {
            cpus: 1,
            memory_bytes,
            gpus: 0,
            custom: vec![],
        },
        walltime_ms: Some(90_000),
        source: RequestSource::Advisor,
        record: Arc::new(SizingRecord {
            model: Some("gradient_boosting".into()),
            confidence: Some(0.9),
            detail: "gradient_boosting (5-fold CV, P95 conformal upper bound)".into(),
            predicted_memory_bytes: Some(memory_bytes),
            predicted_run_time_ms: Some(30_000),
            percentile_memory_bytes: Some(3 << 30),
            percentile_run_time_ms: Some(40_000),
        }),
    }
}

fn answer_all(env: &mut TestEnv, fx: &Effects, memory_bytes: u64) {
    for r in &fx.sizing {
        env.core
            .sizing_answer(r.task.job, r.task.index, advised(memory_bytes));
    }
}

#[test]
fn a_job_without_auto_asks_the_shell_nothing() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    env.submit(vec![job("plain", 2)]);
    let fx = env.step();
    assert!(fx.sizing.is_empty());
    assert_eq!(assigned(&fx, a).len(), 2);
    assert!(!env
        .store_log
        .iter()
        .any(|op| matches!(op, StoreOp::AttemptSizing { .. })));
}

#[test]
fn an_auto_task_is_sized_off_the_core_then_asks_for_the_answer() {
    let mut env = TestEnv::new();
    let a = env.agent(8, &[]);
    auto_job(&mut env, 6);
    let fx = env.step();
    assert!(fx.assign.is_empty(), "nothing sent before its sizing");
    assert_eq!(fx.sizing.len(), 6);
    assert_eq!(fx.sizing[0].fallback.memory_bytes, 2 << 30);
    assert_eq!(fx.sizing[0].task_type, "sim");
    answer_all(&mut env, &fx, 1 << 30);
    let fx = env.step();
    let sent = &fx.assign[&a];
    // 8 GiB: four at the 2 GiB fallback would fit, six at the advised 1 GiB.
    assert_eq!(sent.len(), 6);
    assert!(sent.iter().all(|x| x.resources.memory_bytes == 1 << 30));
    assert!(sent.iter().all(|x| x.walltime_ms == Some(90_000)));
    let sources: Vec<RequestSource> = env
        .store_log
        .iter()
        .filter_map(|op| match op {
            StoreOp::InsertAttempt { request_source, .. } => Some(*request_source),
            _ => None,
        })
        .collect();
    assert_eq!(sources, vec![RequestSource::Advisor; 6]);
    let records = env
        .store_log
        .iter()
        .filter(|op| matches!(op, StoreOp::AttemptSizing { record, .. } if record.predicted_memory_bytes == Some(1 << 30)))
        .count();
    assert_eq!(records, 6);
}

#[test]
fn a_memory_kill_retries_with_at_least_the_advisors_bound() {
    let mut env = TestEnv::new();
    let a = env.agent(4, &[]);
    let mut j = job("sim", 1);
    j.retries = 1;
    j.resources.memory_bytes = Some(100 << 20);
    let mut p = plan(vec![j], None);
    p.jobs[0].auto = Some(MEMORY_ONLY);
    env.submit_plan(p);
    let fx = env.step();
    // Not confident: the fallback (100 MiB) runs, the bound (1 GiB) is kept.
    let mut s = advised(1 << 30);
    s.resources.memory_bytes = 100 << 20;
    s.source = RequestSource::Manifest;
    env.core
        .sizing_answer(fx.sizing[0].task.job, fx.sizing[0].task.index, s);
    let first = assigned(&env.step(), a);
    let mut r = result(first[0], AttemptEnd::OutOfMemory);
    r.peak_rss_bytes = 120 << 20;
    env.core.agent_events(a, &[], vec![r], None, env.now_ms);
    env.step();
    let fx = env.advance(3_000);
    let retry = &fx.assign[&a];
    assert_eq!(
        retry[0].resources.memory_bytes,
        1 << 30,
        "max(120 MiB x 1.5, the bound)"
    );
    let raised = env.store_log.iter().find_map(|op| match op {
        StoreOp::Event {
            kind: EventKind::MemoryRaised,
            detail,
            ..
        } => Some(detail.clone()),
        _ => None,
    });
    assert!(
        raised
            .as_deref()
            .is_some_and(|d| d.contains("advisor's bound")),
        "{raised:?}"
    );
}

#[test]
fn sizings_out_at_once_are_capped_and_an_answer_after_a_cancel_is_ignored() {
    let mut env = TestEnv::new();
    env.agent(500, &[]);
    let run = auto_job(&mut env, 300);
    let fx = env.step();
    assert_eq!(fx.sizing.len(), env.core.config().sizings_max);
    env.core.cancel_run(run, env.now_ms);
    env.step();
    answer_all(&mut env, &fx, 1 << 30);
    let fx = env.step();
    assert!(fx.assign.is_empty());
    assert!(env.core.jobs.values().all(|j| j
        .auto
        .as_ref()
        .is_some_and(|a| a.sized.is_empty() && a.sizing.is_empty())));
}

#[test]
fn an_answer_larger_than_every_agent_is_capped_by_the_largest() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    auto_job(&mut env, 1);
    let fx = env.step();
    answer_all(&mut env, &fx, 64 << 30);
    let fx = env.step();
    assert_eq!(fx.assign[&a][0].resources.memory_bytes, 8 << 30);
}
