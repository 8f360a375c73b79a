//! `why`: the reason a task is where it is.

use super::*;

#[test]
fn why_names_the_reason_a_task_is_not_running() {
    let mut env = TestEnv::new();
    let why = |env: &TestEnv, run: RunId, job: &str, index: u64| -> String {
        let task = env.core.task_by_path(run, job, index).expect("task");
        let answer = env.core.why(task, env.now_ms).expect("why");
        crate::output::reason_text(&answer.reason)
    };
    let mut gpu = job("gpujob", 1);
    gpu.tag = Some("gpu-large".into());
    let mut huge = job("huge", 1);
    huge.resources.memory_bytes = Some(64 << 30);
    let mut throttled = job("throttled", 3);
    throttled.max_running = Some(1);
    let mut later = job("later", 1);
    later.after = vec!["throttled".into()];
    let run = env.submit(vec![gpu, huge, throttled, later]);
    assert_eq!(
        why(&env, run, "gpujob", 0),
        "no agent is connected (it needs one with tag gpu-large)"
    );
    env.agent(4, &["cpu"]);
    env.agent(2, &[]);
    env.step();
    assert_eq!(
        why(&env, run, "huge", 0),
        "needs 64G memory, largest agent has 8G"
    );
    assert_eq!(
        why(&env, run, "throttled", 2),
        "job throttled by max_running (1 running)"
    );
    assert_eq!(
        why(&env, run, "later", 0),
        "waiting for dependency throttled"
    );
    // gpu-large is served by the untagged agent in principle; make it tagged-only.
    let mut env2 = TestEnv::new();
    env2.agent(4, &["cpu"]);
    let mut gpu = job("gpujob", 1);
    gpu.tag = Some("gpu-large".into());
    let run2 = env2.submit(vec![gpu]);
    env2.step();
    assert_eq!(
        why(&env2, run2, "gpujob", 0),
        "no connected agent has tag gpu-large"
    );
}

/// Issue 13, item 7: `range` items count from 1 while indices count from 0;
/// a task is found by its item and `why` names the item beside the index,
/// also after a restart (the items come from the stored definition).
#[test]
fn tasks_are_named_by_item_and_why_shows_it() {
    let mut env = TestEnv::new();
    let run = env.submit(vec![job("sim", 5), job("one", 1)]);
    env.step();
    let by_item = env.core.task_by_item(run, "sim", "4").expect("item 4");
    assert_eq!(Some(by_item), env.core.task_by_path(run, "sim", 3));
    assert_eq!(env.core.task_by_item(run, "sim", "0"), None);
    assert_eq!(env.core.task_by_item(run, "one", "0"), None);
    let answer = env.core.why(by_item, env.now_ms).expect("why");
    assert_eq!(answer.task, format!("{run}/sim/3"));
    assert_eq!(answer.item.as_deref(), Some("4"));
    let one = env.core.task_by_path(run, "one", 0).expect("one");
    assert_eq!(env.core.why(one, env.now_ms).expect("why").item, None);
    env.restart();
    assert_eq!(env.core.task_by_item(run, "sim", "4"), Some(by_item));
    assert_eq!(env.core.task_item(by_item).as_deref(), Some("4"));
}
