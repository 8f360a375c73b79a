//! Jobs with costly templates: rendered by the shell off the core, like a
//! cache probe, and the render kept until the task ends.

use super::*;
use crate::core::RenderedTask;

/// A job whose argv holds a costly template (a loop), `n` tasks.
fn costly_job(name: &str, n: i64) -> JobDef {
    let argv = vec![
        "echo".into(),
        "{% for i in range(3) %}{{ index }}{% endfor %}".into(),
    ];
    quick_job(name, argv, Items::Range { start: 1, end: n })
}

#[test]
fn a_cheap_job_is_rendered_inline_and_asks_the_shell_nothing() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    env.submit(vec![job("cheap", 2)]);
    let fx = env.step();
    assert!(fx.render.is_empty());
    assert_eq!(assigned(&fx, a).len(), 2);
}

#[test]
fn a_costly_job_is_rendered_off_the_core_then_assigned() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    env.submit(vec![costly_job("costly", 2)]);
    let fx = env.step();
    assert!(fx.assign.is_empty(), "nothing sent before its render");
    assert_eq!(answer_renders(&mut env, &fx), 2);
    let fx = env.step();
    let argv: Vec<Vec<String>> = fx.assign[&a].iter().map(|x| x.argv.clone()).collect();
    assert_eq!(argv, vec![vec!["echo", "000"], vec!["echo", "111"]]);
    assert!(fx.render.is_empty(), "each task rendered once");
}

#[test]
fn renders_out_at_once_per_job_are_capped() {
    let mut env = TestEnv::new();
    env.agent(500, &[]);
    env.submit(vec![costly_job("costly", 300)]);
    let fx = env.step();
    assert_eq!(fx.render.len(), env.core.config().renders_max);
}

#[test]
fn a_failed_render_fails_its_attempt_with_the_reason() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![costly_job("costly", 1)]);
    let fx = env.step();
    let req = &fx.render[0];
    env.core
        .render_answer(req.job, req.index, Err("template error: too slow".into()));
    let fx = env.step();
    assert!(assigned(&fx, a).is_empty());
    assert_eq!(env.status(run).counts.failed, 1);
    let ended = env.store_log.iter().find_map(|op| match op {
        StoreOp::AttemptEnded { result, .. } => Some(result.end.clone()),
        _ => None,
    });
    assert!(
        matches!(&ended, Some(AttemptEnd::SpawnFailed { error }) if error.contains("too slow")),
        "{ended:?}"
    );
}

#[test]
fn a_retry_reuses_the_kept_render_and_the_end_of_the_task_drops_it() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let mut j = costly_job("costly", 1);
    j.retries = 1;
    env.submit(vec![j]);
    let fx = env.step();
    answer_renders(&mut env, &fx);
    let first = assigned(&env.step(), a);
    env.finish(a, &first, 1);
    let fx = env.advance(10_000);
    assert!(fx.render.is_empty(), "the retry is not rendered again");
    let retry = assigned(&fx, a);
    assert_eq!(retry.len(), 1);
    env.finish(a, &retry, 0);
    assert!(env.core.jobs.values().all(|j| j.rendered.is_empty()));
}

#[test]
fn an_answer_for_a_task_cancelled_meanwhile_is_ignored() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![costly_job("costly", 1)]);
    let fx = env.step();
    env.core.cancel_run(run, env.now_ms);
    env.step();
    let rendered = RenderedTask {
        argv: vec!["echo".into()],
        env: vec![],
        cwd: "/tmp".into(),
        inputs: vec![],
        outputs: vec![],
    };
    env.core
        .render_answer(fx.render[0].job, fx.render[0].index, Ok(rendered));
    let fx = env.step();
    assert!(assigned(&fx, a).is_empty());
    assert!(env.core.jobs.values().all(|j| j.rendered.is_empty()));
}
