//! Scheduling: tags, fit and prefetch, priority, `max_running`, lifetimes, anti-starvation.

use super::*;

#[test]
fn insert_attempt_precedes_assignment_in_the_same_effects() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    env.submit(vec![job("one", 1)]);
    let fx = env.step();
    let id = assigned(&fx, a)[0];
    assert!(fx
        .store
        .iter()
        .any(|op| matches!(op, StoreOp::InsertAttempt { attempt, .. } if *attempt == id)));
}

#[test]
fn tagged_agents_only_get_their_tags() {
    let mut env = TestEnv::new();
    let demeter = env.agent(4, &["demeter"]);
    let mut post = job("post", 2);
    post.tag = Some("postprocess".into());
    let mut dem = job("dem", 2);
    dem.tag = Some("demeter".into());
    env.submit(vec![post, dem, job("untagged", 1)]);
    let fx = env.step();
    let got = &fx.assign[&demeter];
    assert_eq!(got.len(), 2);
    let generic = env.agent(4, &[]);
    let fx = env.step();
    assert_eq!(
        fx.assign[&generic].len(),
        3,
        "generic pool takes any tag and untagged"
    );
}

#[test]
fn partitionable_agent_never_overcommits_by_fit_but_prefetches_a_queue() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    env.submit(vec![job("many", 10)]);
    let fx = env.step();
    // two fit now; the prefetched queue holds at least one per cpu more.
    let n = assigned(&fx, a).len();
    assert_eq!(
        n, 4,
        "2 running + a prefetch depth of 2 (one per cpu, no rate yet)"
    );
    let agent = &env.core.agents[&a];
    assert_eq!(agent.committed.cpus, 4);
    assert_eq!(agent.unstarted, 4);
}

#[test]
fn priority_orders_ready_jobs() {
    let mut env = TestEnv::new();
    let mut low = job("low", 3);
    low.priority = 1;
    let mut high = job("high", 3);
    high.priority = 10;
    env.submit(vec![low, high]);
    let a = env.agent(2, &[]);
    let fx = env.step();
    let names: Vec<&str> = fx.assign[&a].iter().map(|x| x.argv[1].as_str()).collect();
    assert_eq!(fx.assign[&a].len(), 4);
    // The first three come from `high` (task ids 4..=6), then `low`.
    let tasks: Vec<u64> = fx.assign[&a].iter().map(|x| x.task).collect();
    assert_eq!(&tasks[..3], &[4, 5, 6], "{names:?}");
}

#[test]
fn max_running_throttles_a_job() {
    let mut env = TestEnv::new();
    let a = env.agent(8, &[]);
    let mut j = job("throttled", 10);
    j.max_running = Some(2);
    env.submit(vec![j]);
    let fx = env.step();
    assert_eq!(assigned(&fx, a).len(), 2);
}

#[test]
fn walltime_longer_than_agent_lifetime_is_left_for_a_fresher_pilot() {
    let mut env = TestEnv::new();
    let mut hello_job = job("long", 1);
    hello_job.walltime_ms = Some(3_600_000);
    env.submit(vec![hello_job]);
    let short = {
        let id = env.agent(1, &[]);
        env.core.agents.get_mut(&id).unwrap().lifetime_end_ms = Some(env.now_ms + 60_000);
        id
    };
    let fx = env.step();
    assert!(!fx.assign.contains_key(&short));
    let fresh = env.agent(1, &[]);
    let fx = env.step();
    assert_eq!(assigned(&fx, fresh).len(), 1);
}

#[test]
fn a_large_task_is_not_starved_by_a_stream_of_small_ones() {
    let mut env = TestEnv::new();
    let (a, mut on_agent) = env.big_behind_small();
    let mut big_started_after_ms = None;
    for round in 0..200u64 {
        // One small task ends every 50 ms, so 4 cpus are never free at once
        // unless the scheduler holds new small tasks back.
        let done = on_agent.remove(0);
        let fx = env.finish(a, &[done], 0);
        let fx2 = env.advance(50);
        for f in [&fx, &fx2] {
            for x in f.assign.get(&a).into_iter().flatten() {
                if x.resources.cpus == 4 {
                    big_started_after_ms.get_or_insert(round * 50);
                }
                on_agent.push(x.attempt);
            }
        }
        if big_started_after_ms.is_some() {
            break;
        }
    }
    let after = big_started_after_ms.expect("the 4-cpu task never got the agent");
    assert!(
        after >= env.core.config().reserve_after_ms,
        "reserved before the blocking period ({after} ms)"
    );
    assert!(
        after <= env.core.config().reserve_after_ms + 1_000,
        "{after} ms"
    );
}

/// Regression (issue 12, defect 2): a template costly for a middle item only
/// passes the submit check (first and last task) and used to render for hours
/// on the core; now its render (off the core: the template is costly) stops
/// at the budget and the task fails with a `SpawnFailed` that names the
/// budget, while the other tasks are assigned.
#[test]
fn a_template_over_its_budget_fails_its_task_without_stalling_the_core() {
    let mut env = TestEnv::new();
    let a = env.agent(4, &[]);
    let costly = "{% if item == 2 %}{% for x in range(1000) %}{% for y in range(1000) %}\
                  {% endfor %}{% endfor %}{% endif %}{{ item }}";
    env.submit(vec![quick_job(
        "costly",
        vec!["echo".into(), costly.into()],
        Items::Range { start: 1, end: 3 },
    )]);
    let fx = env.step();
    assert!(
        fx.assign.is_empty(),
        "a costly template is not rendered inline"
    );
    let started = std::time::Instant::now();
    assert_eq!(answer_renders(&mut env, &fx), 3);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let fx = env.step();
    let argvs: Vec<&[String]> = fx.assign[&a].iter().map(|x| &x.argv[..]).collect();
    assert_eq!(argvs, vec![["echo", "1"], ["echo", "3"]]);
    let ended: Vec<&AttemptEnd> = fx
        .store
        .iter()
        .filter_map(|op| match op {
            StoreOp::AttemptEnded { result, .. } => Some(&result.end),
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    let AttemptEnd::SpawnFailed { error } = ended[0] else {
        panic!("{ended:?}");
    };
    assert_eq!(
        error,
        &format!(
            "template error: job \"costly\" command[1]: template exceeds its budget of {} steps",
            scalable_common::template::TEMPLATE_FUEL_MAX
        )
    );
}

/// A fast agent that keeps emptying its queue grows it within milliseconds
/// (slow start), not only at the tick's 250 ms rate windows; a slow one does not.
#[test]
fn a_starved_fast_agent_grows_its_queue_within_milliseconds() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    env.submit(vec![job("many", 100_000)]);
    let mut held = assigned(&env.step(), a);
    assert_eq!(held.len(), 4, "2 cpus + one per cpu before any rate");
    // Each round the agent finishes all it holds 5 ms later (2,000 tasks/s+).
    for _ in 0..4 {
        env.now_ms += 5;
        let fx = env.finish(a, &held, 0);
        held = assigned(&fx, a);
    }
    let depth = env.core.prefetch_depth(&env.core.agents[&a]);
    assert!(
        depth >= 200,
        "after 20 ms of a fast agent the queue is {depth} deep"
    );

    // An agent of 1 s tasks keeps a queue of about one per cpu.
    let mut env = TestEnv::new();
    let b = env.agent(2, &[]);
    env.submit(vec![job("slow", 100)]);
    let mut held = assigned(&env.step(), b);
    for _ in 0..4 {
        let (now, later) = held.split_at(2);
        env.advance(1_000);
        let fx = env.finish(b, now, 0);
        held = later.to_vec();
        held.extend(assigned(&fx, b));
    }
    let depth = env.core.prefetch_depth(&env.core.agents[&b]);
    assert!(depth <= 6, "1 s tasks keep a short queue, got {depth}");
}
