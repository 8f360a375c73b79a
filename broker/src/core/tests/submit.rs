//! Submitting runs: the DAG order, a million tasks cheaply.

use super::*;

#[test]
fn dag_order_is_respected() {
    let mut env = TestEnv::new();
    let a = env.agent(4, &[]);
    let mut agg = job("aggregate", 1);
    agg.after = vec!["fan".into()];
    let run = env.submit(vec![agg, job("fan", 3)]);
    let fx = env.step();
    let first = assigned(&fx, a);
    assert_eq!(first.len(), 3, "only the fan-out is ready");
    assert!(fx.assign[&a].iter().all(|x| x.argv[0] == "echo"));
    assert_eq!(env.status(run).jobs[0].counts.waiting, 1);
    let fx = env.finish(a, &first[..2], 0);
    assert!(
        assigned(&fx, a).is_empty(),
        "aggregate waits for all of fan"
    );
    let fx = env.finish(a, &first[2..], 0);
    let agg_attempts = assigned(&fx, a);
    assert_eq!(agg_attempts.len(), 1);
    let fx = env.finish(a, &agg_attempts, 0);
    assert_eq!(fx.finished_runs, vec![run]);
    assert_eq!(env.status(run).state, "succeeded");
}

#[test]
fn a_million_task_job_is_cheap_to_submit_and_release() {
    let mut env = TestEnv::new();
    let run = env.submit(vec![job("big", 1_000_000)]);
    assert_eq!(env.status(run).counts.ready, 1_000_000);
    let ops = env.step().store.len();
    assert!(
        ops <= 2,
        "submit writes a run and a job row, not a row per task"
    );
}
