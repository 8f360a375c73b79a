//! `demand`: tags, sizes, lifetimes against pilot shapes, reservations, and
//! agreement with `why`.

use scalable_common::explain::{
    AgentShape, Demand, Reason, ReasonCount, ShapeFit, Shortfall, SizeCount, TagDemand,
};

use super::*;

fn shape(tags: &[&str], cpus: u32, lifetime_ms: Option<u64>) -> AgentShape {
    AgentShape {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        resources: Resources {
            cpus,
            memory_bytes: 8 << 30,
            gpus: 0,
            custom: vec![],
        },
        lifetime_ms,
        container_runtime: false,
    }
}

fn of_tag<'a>(d: &'a Demand, tag: Option<&str>) -> &'a TagDemand {
    d.tags
        .iter()
        .find(|t| t.tag.as_deref() == tag)
        .unwrap_or_else(|| panic!("no entry for tag {tag:?} in {d:?}"))
}

fn blocked(reason: Reason, tasks: u64) -> ReasonCount {
    ReasonCount { reason, tasks }
}

fn fits(counts: &[u64]) -> Vec<ShapeFit> {
    counts
        .iter()
        .enumerate()
        .map(|(shape, &tasks)| ShapeFit { shape, tasks })
        .collect()
}

#[test]
fn demand_counts_ready_tasks_per_tag_and_what_fresh_agents_would_run() {
    let mut env = TestEnv::new();
    let mut gpu = job("gpu", 2);
    gpu.tag = Some("gpu".into());
    let mut later = job("later", 4);
    later.after = vec!["plain".into()];
    env.submit(vec![job("plain", 3), gpu, later]);
    let shapes = [shape(&["gpu"], 4, None), shape(&[], 1, None)];
    let d = env.core.demand(env.now_ms, &shapes);
    assert_eq!(d.tags.len(), 2, "{d:?}");
    assert_eq!(d.tags[0].tag, None, "untagged first");
    let plain = of_tag(&d, None);
    assert_eq!((plain.waiting, plain.ready, plain.agents), (4, 3, 0));
    assert_eq!(
        plain.blocked,
        vec![blocked(Reason::NoAgentConnected { tag: None }, 3)]
    );
    assert_eq!(
        plain.fits,
        fits(&[0, 3]),
        "a gpu-tagged agent runs no untagged task"
    );
    let g = of_tag(&d, Some("gpu"));
    assert_eq!(g.ready, 2);
    let need_tag = Reason::NoAgentConnected {
        tag: Some("gpu".into()),
    };
    assert_eq!(g.blocked, vec![blocked(need_tag, 2)]);
    assert_eq!(g.fits, fits(&[2, 2]), "an untagged agent runs every tag");

    let a = env.agent(4, &["gpu"]);
    let fx = env.step();
    assert_eq!(assigned(&fx, a).len(), 2);
    let d = env.core.demand(env.now_ms, &shapes);
    let g = of_tag(&d, Some("gpu"));
    assert_eq!((g.ready, g.assigned, g.running, g.agents), (0, 2, 0, 1));
    assert!(g.blocked.is_empty(), "{g:?}");
    assert_eq!(g.fits, fits(&[0, 0]), "one entry per shape, nothing ready");
    assert_eq!((g.offered.cpus, g.committed.cpus), (4, 2));
    let plain = of_tag(&d, None);
    assert_eq!(plain.blocked, vec![blocked(Reason::AllAgentsTagged, 3)]);
    assert_eq!((plain.agents, plain.offered.cpus), (0, 0));
}

#[test]
fn demand_groups_ready_tasks_by_size_largest_first() {
    let mut env = TestEnv::new();
    let mut big = job("big", 2);
    big.resources.cpus = Some(4);
    big.resources.memory_bytes = Some(2 << 30);
    env.submit(vec![job("small", 5), big]);
    let shapes = [shape(&[], 2, None), shape(&[], 4, None)];
    let d = env.core.demand(env.now_ms, &shapes);
    let t = of_tag(&d, None);
    let big_req = Resources {
        cpus: 4,
        memory_bytes: 2 << 30,
        gpus: 0,
        custom: vec![],
    };
    assert_eq!(
        t.sizes,
        vec![
            SizeCount {
                resources: big_req.clone(),
                tasks: 2
            },
            SizeCount {
                resources: Resources::cpus(1),
                tasks: 5
            },
        ]
    );
    assert_eq!(t.fits, fits(&[5, 7]));

    env.agent(2, &[]);
    env.step();
    let d = env.core.demand(env.now_ms, &shapes);
    let t = of_tag(&d, None);
    let too_big = Reason::LargerThanEveryAgent {
        need: big_req,
        short: Shortfall::Cpus { largest: 2 },
    };
    assert!(t.blocked.contains(&blocked(too_big, 2)), "{t:?}");
    let listed: u64 = t.blocked.iter().map(|b| b.tasks).sum();
    assert_eq!(listed, t.ready, "every ready task has its reason");
    assert_eq!(t.ready + t.assigned, 7);
}

#[test]
fn demand_shows_a_raised_request_and_its_backoff() {
    let mut env = TestEnv::new();
    env.out_of_memory_once();
    let d = env.core.demand(env.now_ms, &[shape(&[], 1, None)]);
    let t = of_tag(&d, None);
    let raised = Resources {
        cpus: 1,
        memory_bytes: 300 << 20,
        gpus: 0,
        custom: vec![],
    };
    assert_eq!(
        t.sizes,
        vec![SizeCount {
            resources: raised,
            tasks: 1
        }]
    );
    let remaining_ms = env.core.config().retry_backoff_base_ms;
    assert_eq!(
        t.blocked,
        vec![blocked(Reason::Backoff { remaining_ms }, 1)]
    );
    assert_eq!(t.fits, fits(&[1]));
}

#[test]
fn demand_weighs_walltime_against_agent_and_pilot_lifetimes() {
    let mut env = TestEnv::new();
    let mut long = job("long", 3);
    long.walltime_ms = Some(3_600_000);
    env.submit(vec![long]);
    let short = env.agent(1, &[]);
    env.core.agents.get_mut(&short).unwrap().lifetime_end_ms = Some(env.now_ms + 60_000);
    env.step();
    let shapes = [
        shape(&[], 1, Some(1_800_000)),
        shape(&[], 1, Some(7_200_000)),
        shape(&[], 1, None),
    ];
    let d = env.core.demand(env.now_ms, &shapes);
    let t = of_tag(&d, None);
    assert_eq!(t.blocked, vec![blocked(Reason::LifetimeTooShort, 3)]);
    assert_eq!(t.fits, fits(&[0, 3, 3]));
    assert_eq!((t.agents, t.offered.cpus, t.committed.cpus), (1, 1, 0));
}

#[test]
fn demand_names_the_agent_reserved_for_a_large_job() {
    let mut env = TestEnv::new();
    let (a, mut on_agent) = env.big_behind_small();
    let mut seen = false;
    for _ in 0..200 {
        let done = on_agent.remove(0);
        let fx = env.finish(a, &[done], 0);
        on_agent.extend(assigned(&fx, a));
        let fx = env.advance(50);
        on_agent.extend(assigned(&fx, a));
        if env.core.agents[&a].reserved_for.is_some() {
            seen = true;
            break;
        }
    }
    assert!(seen, "the large job never reserved the agent");
    let d = env.core.demand(env.now_ms, &[]);
    let t = of_tag(&d, None);
    let reserved = Reason::Reserved {
        agent: env.core.agents[&a].name.clone(),
    };
    assert!(t.blocked.contains(&blocked(reserved, 1)), "{t:?}");
    assert!(t.fits.is_empty(), "no shapes asked");
    assert_eq!(t.committed.cpus as u64, t.assigned + t.running);
}

/// `why` of every ready task, tallied per tag as `demand` tallies them.
fn why_tally(env: &TestEnv) -> Vec<(Option<String>, ReasonCount)> {
    let mut tally: Vec<(Option<String>, ReasonCount)> = Vec::new();
    for job in env.core.jobs.values() {
        for (i, slot) in job.tasks.iter().enumerate() {
            if slot.state != super::super::model::TaskState::Ready {
                continue;
            }
            let why = env
                .core
                .why(job.first_task + i as u64, env.now_ms)
                .expect("task");
            let tag = job.tag().map(String::from);
            let same = |r: &Reason| match (r, &why.reason) {
                (Reason::Backoff { .. }, Reason::Backoff { .. }) => true,
                (a, b) => a == b,
            };
            match tally.iter_mut().find(|(t, c)| *t == tag && same(&c.reason)) {
                Some((_, c)) => {
                    c.tasks += 1;
                    if let (Reason::Backoff { remaining_ms: m }, Reason::Backoff { remaining_ms }) =
                        (&mut c.reason, &why.reason)
                    {
                        *m = (*m).min(*remaining_ms);
                    }
                }
                None => tally.push((tag, blocked(why.reason.clone(), 1))),
            }
        }
    }
    tally.sort_by_key(|(t, c)| (t.clone(), format!("{:?}", c.reason)));
    tally
}

#[test]
fn why_and_demand_agree() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &["cpu"]);
    let tagged = |mut j: JobDef| {
        j.tag = Some("cpu".into());
        j
    };
    let mut flaky = tagged(job("flaky", 2));
    flaky.retries = 2;
    let mut huge = tagged(job("huge", 1));
    huge.resources.memory_bytes = Some(64 << 30);
    let mut throttled = tagged(job("throttled", 4));
    throttled.max_running = Some(1);
    let mut gpu = job("gpu", 2);
    gpu.tag = Some("gpu".into());
    let jobs = vec![
        flaky,
        huge,
        throttled,
        tagged(job("many", 20)),
        gpu,
        job("plain", 2),
    ];
    env.submit(jobs);
    let fx = env.step();
    let first = assigned(&fx, a)[0];
    env.finish(a, &[first], 1);
    let d = env.core.demand(env.now_ms, &[]);
    let mut from_demand: Vec<(Option<String>, ReasonCount)> = d
        .tags
        .iter()
        .flat_map(|t| t.blocked.iter().map(|b| (t.tag.clone(), b.clone())))
        .collect();
    from_demand.sort_by_key(|(t, c)| (t.clone(), format!("{:?}", c.reason)));
    let from_why = why_tally(&env);
    assert_eq!(from_demand, from_why);
    let kinds: std::collections::HashSet<String> = from_why
        .iter()
        .map(|(_, c)| format!("{:?}", c.reason))
        .map(|r| r.split([' ', '{']).next().unwrap_or_default().to_string())
        .collect();
    let wanted = [
        "NoAgentWithTag",
        "AllAgentsTagged",
        "LargerThanEveryAgent",
        "Throttled",
        "Backoff",
        "WaitingForResources",
    ];
    for k in wanted {
        assert!(kinds.contains(k), "{k} not exercised: {kinds:?}");
    }
}

/// Issue 13, item 5: a run's status says what blocks its ready tasks, with
/// the same reasons as `why` and `demand`.
#[test]
fn a_run_status_says_what_blocks_its_ready_tasks() {
    let mut env = TestEnv::new();
    env.agent(2, &["cpu"]);
    let mut dem = job("dem", 3);
    dem.tag = Some("demeter".into());
    let mut huge = job("huge", 1);
    huge.tag = Some("cpu".into());
    huge.resources.cpus = Some(64);
    let run = env.submit(vec![dem, huge]);
    env.step();
    let s = env.status(run);
    assert_eq!(
        s.blocked,
        [
            blocked(
                Reason::NoAgentWithTag {
                    tag: "demeter".into()
                },
                3
            ),
            blocked(
                Reason::LargerThanEveryAgent {
                    need: Resources {
                        cpus: 64,
                        memory_bytes: 0,
                        gpus: 0,
                        custom: vec![]
                    },
                    short: Shortfall::Cpus { largest: 2 }
                },
                1
            ),
        ]
    );
    env.agent(2, &["demeter"]);
    env.step();
    assert_eq!(env.status(run).blocked.len(), 1, "demeter's tasks left");
}

/// Issue 13, item 5: `submit` names the jobs that nothing connected and no
/// agent the broker can start could ever run.
#[test]
fn unrunnable_jobs_are_those_no_agent_and_no_shape_could_run() {
    let mut env = TestEnv::new();
    env.agent(2, &["cpu"]);
    let mut dem = job("dem", 3);
    dem.tag = Some("demeter".into());
    let mut cpu = job("cpu", 1);
    cpu.tag = Some("cpu".into());
    let run = env.submit(vec![dem, cpu]);
    let none = env.core.unrunnable(run, &[], env.now_ms);
    assert_eq!(
        none,
        [scalable_common::explain::Unrunnable {
            job: "dem".into(),
            tasks: 3,
            reason: Reason::NoAgentWithTag {
                tag: "demeter".into()
            },
        }]
    );
    let pilots = [shape(&["demeter"], 4, None)];
    assert!(env.core.unrunnable(run, &pilots, env.now_ms).is_empty());
    let small = [shape(&["demeter"], 4, Some(1_000))];
    let mut long = job("long", 1);
    long.tag = Some("demeter".into());
    long.walltime_ms = Some(60_000);
    let run = env.submit(vec![long]);
    assert_eq!(
        env.core.unrunnable(run, &small, env.now_ms).len(),
        1,
        "a pilot too short-lived runs nothing"
    );
}
