//! Core unit tests: one `TestEnv` drives the core with a fake clock and checks
//! every invariant after each step (STYLE habit 9).

use std::sync::Arc;

use scalable_common::protocol::{AgentHello, AttemptEnd, AttemptResult, Started};
use scalable_common::resources::Resources;
use scalable_common::workflow::{quick_job, Items, JobDef, JobTemplates, WorkflowDef};

use super::*;

struct TestEnv {
    core: Core,
    now_ms: u64,
    /// Every effect seen, for assertions.
    store_log: Vec<StoreOp>,
}

impl TestEnv {
    fn new() -> TestEnv {
        TestEnv {
            core: Core::new(CoreConfig::default(), Ids::default()),
            now_ms: 1_000_000,
            store_log: Vec::new(),
        }
    }

    fn step(&mut self) -> Effects {
        self.core.schedule(self.now_ms);
        self.core.sanity_check();
        let fx = self.core.take_effects();
        self.store_log.extend(fx.store.iter().cloned());
        fx
    }

    /// Time passes with the shell's ticks (at most a second apart: a longer
    /// gap is what a stalled broker looks like).
    fn advance(&mut self, ms: u64) -> Effects {
        let end = self.now_ms + ms;
        let mut fx = Effects::default();
        while self.now_ms < end {
            self.now_ms = (self.now_ms + 1_000).min(end);
            self.core.tick(self.now_ms);
            let f = self.step();
            merge(&mut fx, f);
        }
        fx
    }

    /// The broker crashes and restarts: every write so far goes through the
    /// real store into a SQLite file, and a new core is restored from it.
    fn restart(&mut self) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broker.db");
        let (store, _, _) = crate::store::Store::open(&path).expect("open");
        store.write(self.store_log.clone(), None);
        store.stop();
        let (store, ids, loaded) = crate::store::Store::open(&path).expect("reopen");
        store.stop();
        let cfg = self.core.config().clone();
        self.core = crate::restart::restore_core(cfg, ids, loaded, self.now_ms);
        self.core.sanity_check();
    }

    /// An agent that comes back with the id it had, holding `held`.
    fn reconnect(&mut self, id: AgentId, cpus: u32, held: &[AttemptId]) -> AgentId {
        let mut hello = hello(cpus, &[], "again");
        hello.resume_agent = Some(id);
        hello.held_attempts = held.to_vec();
        self.core.agent_connected(&hello, self.now_ms)
    }

    fn agent(&mut self, cpus: u32, tags: &[&str]) -> AgentId {
        let name = format!("a{}", self.core.ids().agent);
        let hello = hello(cpus, tags, &name);
        self.core.agent_connected(&hello, self.now_ms)
    }

    fn submit(&mut self, jobs: Vec<JobDef>) -> RunId {
        self.submit_wf(jobs, None)
    }

    fn submit_wf(&mut self, jobs: Vec<JobDef>, max_fails: Option<u64>) -> RunId {
        let def = WorkflowDef {
            name: "wf".into(),
            max_fails,
            jobs: jobs.clone(),
        };
        let def_json = def.clone();
        let n_jobs = jobs.len();
        let plan = SubmitPlan {
            jobs: jobs
                .into_iter()
                .map(|j| PlannedJob {
                    templates: Arc::new(JobTemplates::compile(&j).expect("templates")),
                    resources: Resources {
                        cpus: j.resources.cpus.unwrap_or(1),
                        memory_bytes: j.resources.memory_bytes.unwrap_or(0),
                        gpus: 0,
                        custom: vec![],
                    },
                    def: Arc::new(j),
                    container: None,
                })
                .collect(),
            def,
            cwd: "/tmp".into(),
            source: "test".into(),
            definition_json: serde_json::to_string(&crate::submit::StoredDefinition {
                workflow: def_json,
                containers: vec![None; n_jobs],
            })
            .expect("json"),
        };
        let (run, _) = self.core.submit(plan, self.now_ms).expect("submit");
        self.core.sanity_check();
        run
    }

    fn finish(&mut self, agent: AgentId, attempts: &[AttemptId], code: i32) -> Effects {
        let started: Vec<Started> = attempts
            .iter()
            .map(|a| Started {
                attempt: *a,
                at_us: self.now_ms * 1000,
            })
            .collect();
        let results = attempts
            .iter()
            .map(|a| result(*a, AttemptEnd::Exited { code }))
            .collect();
        self.core
            .agent_events(agent, &started, results, None, self.now_ms);
        self.step()
    }

    fn status(&self, run: RunId) -> RunStatus {
        self.core.run_status(run).expect("run")
    }
}

fn hello(cpus: u32, tags: &[&str], name: &str) -> AgentHello {
    AgentHello {
        protocol: 1,
        agent_version: "test".into(),
        token: String::new(),
        name: name.to_string(),
        hostname: "host".into(),
        resources: Resources {
            cpus,
            memory_bytes: 8 << 30,
            gpus: 0,
            custom: vec![],
        },
        tags: tags.iter().map(|s| s.to_string()).collect(),
        runtimes: vec![],
        limit_mode: "sampling".into(),
        lifetime_ms: None,
        held_attempts: vec![],
        pilot_id: None,
        resume_agent: None,
    }
}

fn merge(into: &mut Effects, fx: Effects) {
    into.store.extend(fx.store);
    for (k, v) in fx.assign {
        into.assign.entry(k).or_default().extend(v);
    }
    for (k, v) in fx.ack {
        into.ack.entry(k).or_default().extend(v);
    }
    for (k, v) in fx.cancel {
        into.cancel.entry(k).or_default().extend(v);
    }
    into.shutdown.extend(fx.shutdown);
    into.disconnect.extend(fx.disconnect);
    into.finished_runs.extend(fx.finished_runs);
    into.cache_probe.extend(fx.cache_probe);
    into.cache_record.extend(fx.cache_record);
    into.promote.extend(fx.promote);
}

fn result(attempt: AttemptId, end: AttemptEnd) -> AttemptResult {
    AttemptResult {
        attempt,
        end,
        started_at_us: 1,
        ended_at_us: 2,
        peak_rss_bytes: 0,
        cpu_time_us: 0,
        stdout_tail: vec![],
        stderr_tail: vec![],
        stdout_bytes: 0,
        stderr_bytes: 0,
    }
}

fn job(name: &str, n: i64) -> JobDef {
    let items = if n == 1 {
        Items::One
    } else {
        Items::Range { start: 1, end: n }
    };
    quick_job(name, vec!["echo".into(), "{{ index }}".into()], items)
}

fn assigned(fx: &Effects, agent: AgentId) -> Vec<AttemptId> {
    fx.assign
        .get(&agent)
        .map(|v| v.iter().map(|a| a.attempt).collect())
        .unwrap_or_default()
}

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
fn lost_agent_requeues_without_spending_a_retry() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("one", 1)]);
    let fx = env.step();
    assert_eq!(assigned(&fx, a).len(), 1);
    env.core.agent_lost(a, "disconnected", env.now_ms);
    let fx = env.step();
    assert!(fx.assign.is_empty());
    assert_eq!(env.status(run).counts.ready, 1);
    let b = env.agent(1, &[]);
    let fx = env.step();
    let at = assigned(&fx, b);
    assert_eq!(fx.assign[&b][0].attempt_number, 2);
    env.finish(b, &at, 0);
    assert_eq!(env.status(run).state, "succeeded");
    let slot = env.core.jobs.values().next().unwrap().tasks[0];
    assert_eq!(slot.retries_used, 0);
}

#[test]
fn silent_agent_is_lost_after_the_heartbeat_timeout() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    env.submit(vec![job("one", 1)]);
    env.step();
    env.advance(env.core.config().heartbeat_timeout_ms);
    assert!(env.core.agents.contains_key(&a));
    env.advance(1);
    assert!(!env.core.agents.contains_key(&a), "lost after the timeout");
}

#[test]
fn stale_results_are_acknowledged_and_ignored() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("one", 1)]);
    let fx = env.step();
    let at = assigned(&fx, a);
    env.core.agent_lost(a, "disconnected", env.now_ms);
    let b = env.agent(1, &[]);
    let fx = env.step();
    let at2 = assigned(&fx, b);
    // the old agent comes back with a result of its old attempt
    let a2 = env.agent(1, &[]);
    env.core.agent_events(
        a2,
        &[],
        vec![result(at[0], AttemptEnd::Exited { code: 0 })],
        None,
        env.now_ms,
    );
    let fx = env.step();
    assert_eq!(fx.ack[&a2], vec![(at[0], false)], "acked as ignored");
    assert_eq!(
        env.status(run).counts.succeeded,
        0,
        "stale result not counted"
    );
    env.finish(b, &at2, 0);
    assert_eq!(env.status(run).counts.succeeded, 1);
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
fn randomised_steps_keep_invariants() {
    // A small deterministic pseudo-random walk; the seed is printed so a failure replays.
    let seed: u64 = 0x5ca1ab1e;
    eprintln!("seed {seed:#x}");
    let mut x = seed;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut env = TestEnv::new();
    let mut agents = vec![env.agent(2, &[]), env.agent(3, &["t"])];
    let mut t = job("t", 20);
    t.tag = Some("t".into());
    t.retries = 2;
    let mut u = job("u", 30);
    u.retries = 1;
    u.after = vec!["t".into()];
    env.submit(vec![t, u]);
    let mut outstanding: Vec<(AgentId, AttemptId)> = Vec::new();
    for _ in 0..2_000 {
        let fx = env.step();
        for (ag, list) in &fx.assign {
            outstanding.extend(list.iter().map(|x| (*ag, x.attempt)));
        }
        match rnd(6) {
            0..=2 if !outstanding.is_empty() => {
                let i = rnd(outstanding.len() as u64) as usize;
                let (ag, at) = outstanding.swap_remove(i);
                let code = if rnd(4) == 0 { 1 } else { 0 };
                env.core.agent_events(
                    ag,
                    &[],
                    vec![result(at, AttemptEnd::Exited { code })],
                    None,
                    env.now_ms,
                );
            }
            3 if agents.len() > 1 => {
                let i = rnd(agents.len() as u64) as usize;
                let ag = agents.swap_remove(i);
                env.core.agent_lost(ag, "chaos", env.now_ms);
                outstanding.retain(|(a, _)| *a != ag);
            }
            4 => {
                let tags: &[&str] = if rnd(2) == 0 { &[] } else { &["t"] };
                agents.push(env.agent(1 + rnd(3) as u32, tags));
            }
            _ => {
                env.advance(500);
            }
        }
    }
    env.core.sanity_check();
}

#[test]
fn the_core_does_no_io() {
    // STYLE habit 1: the core is sans-IO. A cheap guard against drift.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let forbidden = [
        "tokio::",
        "rusqlite::",
        "quinn::",
        "Instant::now",
        "SystemTime::now",
        "std::fs::",
        "std::net::",
        "std::process::",
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for f in forbidden {
            assert!(!text.contains(f), "{} mentions {f}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 3, "the core's files were not found");
}

#[test]
fn a_large_task_is_not_starved_by_a_stream_of_small_ones() {
    let mut env = TestEnv::new();
    let a = env.agent(4, &[]);
    env.submit(vec![job("small", 1_000)]);
    // The agent's slots and its prefetched queue fill with small tasks first.
    let mut on_agent: Vec<AttemptId> = assigned(&env.step(), a);
    let mut big = job("big", 1);
    big.resources.cpus = Some(4);
    env.submit(vec![big]);
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

#[test]
fn why_names_the_reason_a_task_is_not_running() {
    let mut env = TestEnv::new();
    let why = |env: &TestEnv, run: RunId, job: &str, index: u64| -> String {
        let task = env.core.task_by_path(run, job, index).expect("task");
        env.core.why(task, env.now_ms).expect("why").2
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

#[test]
fn a_draining_agent_gets_nothing_back() {
    // Regression: drained attempts were re-assigned to the draining agent, which
    // drained them again, forever.
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("one", 3)]);
    let fx = env.step();
    let at = assigned(&fx, a);
    let results = at.iter().map(|x| result(*x, AttemptEnd::Drained)).collect();
    env.core.agent_events(a, &[], results, None, env.now_ms);
    let fx = env.step();
    assert!(fx.assign.is_empty(), "re-assigned to a draining agent");
    assert_eq!(env.status(run).counts.ready, 3);
    let b = env.agent(1, &[]);
    let fx = env.step();
    assert!(!assigned(&fx, b).is_empty(), "a fresh agent takes them");
}

// ------------------------------------------------------------ nothing lost (issue 6)

fn start_all(env: &mut TestEnv, agent: AgentId, attempts: &[AttemptId]) {
    let started: Vec<Started> = attempts
        .iter()
        .map(|a| Started {
            attempt: *a,
            at_us: env.now_ms * 1000,
        })
        .collect();
    env.core
        .agent_events(agent, &started, vec![], None, env.now_ms);
    env.step();
}

#[test]
fn an_agent_that_reconnects_in_time_keeps_its_attempts() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    let run = env.submit(vec![job("j", 2)]);
    let at = assigned(&env.step(), a);
    assert_eq!(at.len(), 2);
    start_all(&mut env, a, &at);
    env.core.agent_disconnected(a, env.now_ms);
    env.advance(5_000);
    assert_eq!(env.status(run).counts.running, 2, "still its, while away");
    // It held only the first; the second was lost on the way.
    let back = env.reconnect(a, 2, &at[..1]);
    assert_eq!(back, a, "same id");
    let fx = env.step();
    assert_eq!(env.status(run).counts.running, 1);
    let again = assigned(&fx, a);
    assert_eq!(again.len(), 1, "the attempt it did not hold is requeued");
    env.finish(a, &[at[0], again[0]], 0);
    assert_eq!(env.status(run).state, "succeeded");
    let job = env.core.jobs.values().next().unwrap();
    assert!(job
        .tasks
        .iter()
        .all(|s| s.retries_used == 0 && s.crashes == 0));
}

#[test]
fn an_agent_back_after_being_declared_lost_gets_its_held_attempts_stopped() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    env.submit(vec![job("j", 1)]);
    let at = assigned(&env.step(), a);
    start_all(&mut env, a, &at);
    env.core.agent_disconnected(a, env.now_ms);
    env.advance(env.core.config().heartbeat_timeout_ms + 1_000);
    assert!(!env.core.agents.contains_key(&a), "lost");
    let b = env.reconnect(a, 1, &at);
    assert_ne!(b, a, "a lost agent gets a new id");
    let fx = env.step();
    assert_eq!(fx.cancel[&b], at, "its stale attempt is stopped");
}

#[test]
fn a_task_that_keeps_killing_its_agents_fails_at_the_crash_limit() {
    let mut env = TestEnv::new();
    let run = env.submit(vec![job("j", 1)]);
    let limit = env.core.config().crash_limit;
    for n in 1..=limit {
        let a = env.agent(1, &[]);
        let at = assigned(&env.step(), a);
        assert_eq!(at.len(), 1, "round {n}");
        start_all(&mut env, a, &at);
        env.core.agent_lost(a, "heartbeat timeout", env.now_ms);
        env.step();
    }
    let s = env.status(run);
    assert_eq!(s.counts.failed, 1);
    let reason = env.store_log.iter().rev().find_map(|op| match op {
        StoreOp::TaskState { reason, .. } => reason.clone(),
        _ => None,
    });
    assert!(reason.unwrap().contains("crash limit"));
}

#[test]
fn drained_and_unstarted_losses_count_no_crash() {
    let mut env = TestEnv::new();
    let run = env.submit(vec![job("j", 1)]);
    for _ in 0..(env.core.config().crash_limit + 2) {
        let a = env.agent(1, &[]);
        assign_and_lose_unstarted(&mut env, a);
    }
    assert_eq!(env.status(run).counts.failed, 0);
    assert_eq!(env.status(run).counts.ready, 1);
}

fn assign_and_lose_unstarted(env: &mut TestEnv, a: AgentId) {
    let at = assigned(&env.step(), a);
    assert_eq!(at.len(), 1);
    env.core.agent_lost(a, "heartbeat timeout", env.now_ms);
    env.step();
}

#[test]
fn a_memory_exhausted_retry_asks_for_the_peak_times_the_factor() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let mut j = job("j", 1);
    j.retries = 1;
    j.resources.memory_bytes = Some(100 << 20);
    env.submit(vec![j]);
    let at = assigned(&env.step(), a);
    let mut r = result(at[0], AttemptEnd::OutOfMemory);
    r.peak_rss_bytes = 200 << 20;
    env.core.agent_events(a, &[], vec![r], None, env.now_ms);
    env.step();
    let fx = env.advance(2_000);
    let retry = &fx.assign[&a][0];
    assert_eq!(retry.resources.memory_bytes, 300 << 20, "200 MiB x 1.5");
    assert!(env.store_log.iter().any(|op| matches!(
        op,
        StoreOp::Event { kind: "memory_raised", detail, .. } if detail.contains("from 100M to 300M")
    )));
}

#[test]
fn a_stalled_broker_does_not_condemn_its_agents() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    env.advance(100);
    // One tick after a gap far longer than the timeout (the broker was stopped).
    env.now_ms += 10 * env.core.config().heartbeat_timeout_ms;
    env.core.tick(env.now_ms);
    env.step();
    assert!(env.core.agents.contains_key(&a), "not lost on resume");
    env.advance(env.core.config().heartbeat_timeout_ms + 1_000);
    assert!(
        !env.core.agents.contains_key(&a),
        "but lost if it stays silent"
    );
}

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

#[test]
fn a_restarted_broker_lets_agents_reclaim_and_recomputes_nothing() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    let b = env.agent(2, &[]);
    let run = env.submit(vec![job("j", 6)]);
    let fx = env.step();
    let (at_a, at_b) = (assigned(&fx, a), assigned(&fx, b));
    start_all(&mut env, a, &at_a[..2]);
    start_all(&mut env, b, &at_b[..2]);
    env.finish(a, &at_a[..1], 0);
    let done_before = env.status(run).counts.succeeded;
    let attempts_before = env.core.ids().attempt;
    // kill -9 of the broker: the core is rebuilt from SQLite alone.
    env.restart();
    let s = env.status(run);
    assert_eq!(s.counts.succeeded, done_before);
    assert_eq!(
        s.counts.succeeded + s.counts.running + s.counts.assigned + s.counts.ready,
        6
    );
    let fx = env.step();
    assert!(
        fx.assign.is_empty(),
        "restored agents are away: nothing dispatched to them"
    );
    assert!(
        env.core.agent_infos().iter().all(|a| !a.connected),
        "shown away"
    );
    // Both agents come back with what they hold (a finished one while away).
    let a2 = env.reconnect(a, 2, &at_a[1..]);
    let b2 = env.reconnect(b, 2, &at_b);
    assert_eq!((a2, b2), (a, b));
    assert!(env.core.agent_infos().iter().all(|a| a.connected));
    env.step();
    env.finish(a, &at_a[1..], 0);
    env.finish(b, &at_b, 0);
    let s = env.status(run);
    assert_eq!(s.state, "succeeded", "{s:?}");
    assert_eq!(
        env.core.ids().attempt,
        attempts_before,
        "no attempt made twice"
    );
}

#[test]
fn after_the_reclaim_window_unclaimed_attempts_run_again_without_a_retry() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("j", 1)]);
    let at = assigned(&env.step(), a);
    start_all(&mut env, a, &at);
    env.restart();
    env.advance(env.core.config().reclaim_window_ms - 2_000);
    assert_eq!(
        env.status(run).counts.running,
        1,
        "still waiting for its agent"
    );
    env.advance(3_000);
    let s = env.status(run);
    assert_eq!(s.counts.ready, 1, "requeued once the window closed");
    let job = env.core.jobs.values().next().unwrap();
    assert_eq!((job.tasks[0].retries_used, job.tasks[0].crashes), (0, 0));
    let c = env.agent(1, &[]);
    let fx = env.step();
    assert_eq!(fx.assign[&c][0].attempt_number, 2);
}

#[test]
fn a_restart_keeps_failures_retries_and_cancelled_downstream() {
    let mut env = TestEnv::new();
    let a = env.agent(2, &[]);
    let mut up = job("up", 2);
    up.retries = 1;
    let mut down = job("down", 3);
    down.after = vec!["up".into()];
    let run = env.submit(vec![up, down]);
    let at = assigned(&env.step(), a);
    env.finish(a, &at[..1], 0);
    env.finish(a, &at[1..2], 3);
    let fx = env.advance(2_000);
    let retry = assigned(&fx, a);
    env.finish(a, &retry, 3);
    let before = env.status(run);
    assert_eq!(before.state, "failed");
    env.restart();
    let after = env.status(run);
    assert_eq!(after.state, "failed");
    assert_eq!(after.counts, before.counts, "counts survive the restart");
    let job = &env.core.jobs[&env.core.runs[&run].jobs[0]];
    assert_eq!(job.tasks[1].retries_used, 1);
    // and a resumed run after the restart runs the failed and the cancelled
    assert_eq!(env.core.resume_run(run, env.now_ms), Ok(4));
}

#[test]
fn a_counted_result_resent_after_a_restart_is_acknowledged_as_counted() {
    let mut env = TestEnv::new();
    let a = env.agent(1, &[]);
    let run = env.submit(vec![job("j", 2)]);
    let at = assigned(&env.step(), a);
    // Counted and committed; the broker dies before the ack leaves.
    env.finish(a, &at[..1], 0);
    env.restart();
    let back = env.reconnect(a, 1, &at);
    env.step();
    let fx = env.finish(back, &at, 0);
    assert!(
        fx.ack[&back].contains(&(at[0], true)),
        "promote, not discard"
    );
    assert!(fx.ack[&back].contains(&(at[1], true)));
    let s = env.status(run);
    assert_eq!(s.counts.succeeded, 2);
    assert!(!env
        .store_log
        .iter()
        .any(|op| matches!(op, StoreOp::StaleResult { .. })));
}

// ------------------------------------------------------------ L0 simulation

/// One simulated agent: what it holds (assigned to it and not yet reported).
struct SimAgent {
    id: AgentId,
    cpus: u32,
    held: Vec<AttemptId>,
    connected: bool,
}

/// reliability.md §5.2 L0: a seeded walk of results, duplicates, stale
/// reports, disconnects, reconnects, lost agents, time and broker restarts
/// (the core rebuilt from the real SQLite store), then heal and quiesce.
/// Checked: invariants after every step (TestEnv), every task terminal, no
/// attempt ended twice, no task counted successful twice.
#[test]
fn simulated_faults_and_restarts_lose_nothing() {
    for seed in [1u64, 7, 42, 0x5eed] {
        eprintln!("L0 seed {seed}");
        simulate(seed);
    }
}

fn simulate(seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut env = TestEnv::new();
    let mut a = job("a", 30);
    a.retries = 3;
    let mut b = job("b", 20);
    b.after = vec!["a".into()];
    b.retries = 3;
    let mut c = job("c", 10);
    c.after = vec!["a".into()];
    let mut d = job("d", 5);
    d.after = vec!["b".into(), "c".into()];
    d.retries = 3;
    let run = env.submit(vec![a, b, c, d]);
    let mut sims: Vec<SimAgent> = (0..3)
        .map(|i| {
            let cpus = 1 + i;
            SimAgent {
                id: env.agent(cpus, &[]),
                cpus,
                held: vec![],
                connected: true,
            }
        })
        .collect();
    // Every report ever sent, to resend as duplicates or stale results.
    let mut history: Vec<(AttemptId, AttemptEnd)> = Vec::new();
    let (mut restarts, mut resent) = (0, 0);
    let absorb = |env: &mut TestEnv, sims: &mut Vec<SimAgent>, fx: Effects| {
        for (ag, list) in fx.assign {
            if let Some(s) = sims.iter_mut().find(|s| s.id == ag && s.connected) {
                s.held.extend(list.iter().map(|x| x.attempt));
            }
        }
        for (ag, list) in fx.cancel {
            if let Some(s) = sims.iter_mut().find(|s| s.id == ag && s.connected) {
                let stopped: Vec<AttemptId> = s
                    .held
                    .iter()
                    .copied()
                    .filter(|x| list.contains(x))
                    .collect();
                s.held.retain(|x| !list.contains(x));
                let results = stopped
                    .iter()
                    .map(|x| result(*x, AttemptEnd::Cancelled))
                    .collect();
                env.core.agent_events(ag, &[], results, None, env.now_ms);
            }
        }
    };
    for _ in 0..3_000 {
        let fx = env.step();
        absorb(&mut env, &mut sims, fx);
        if env.status(run).state != "running" {
            break;
        }
        let live: Vec<usize> = (0..sims.len())
            .filter(|&i| sims[i].connected && !sims[i].held.is_empty())
            .collect();
        match rnd(12) {
            0..=4 if !live.is_empty() => {
                let s = &mut sims[live[rnd(live.len() as u64) as usize]];
                let at = s.held.swap_remove(rnd(s.held.len() as u64) as usize);
                let end = if rnd(8) == 0 {
                    AttemptEnd::Exited { code: 1 }
                } else {
                    AttemptEnd::Exited { code: 0 }
                };
                history.push((at, end.clone()));
                let started = [Started {
                    attempt: at,
                    at_us: env.now_ms * 1000,
                }];
                let id = s.id;
                env.core
                    .agent_events(id, &started, vec![result(at, end)], None, env.now_ms);
            }
            5 if !history.is_empty() => {
                // A duplicate or stale report from some connected agent.
                let (at, end) = history[rnd(history.len() as u64) as usize].clone();
                if let Some(s) = sims.iter().find(|s| s.connected) {
                    resent += 1;
                    env.core
                        .agent_events(s.id, &[], vec![result(at, end)], None, env.now_ms);
                }
            }
            6 => {
                let i = rnd(sims.len() as u64) as usize;
                if sims[i].connected {
                    sims[i].connected = false;
                    env.core.agent_disconnected(sims[i].id, env.now_ms);
                } else {
                    let (old, cpus, held) = (sims[i].id, sims[i].cpus, sims[i].held.clone());
                    let id = env.reconnect(old, cpus, &held);
                    sims[i].id = id;
                    sims[i].connected = true;
                }
            }
            7 if sims.len() > 1 => {
                let i = rnd(sims.len() as u64) as usize;
                let s = sims.swap_remove(i);
                env.core.agent_lost(s.id, "sim: lost", env.now_ms);
            }
            8 if rnd(5) == 0 => {
                restarts += 1;
                env.restart();
                for s in &mut sims {
                    s.connected = false;
                }
            }
            9 if sims.len() < 5 => {
                let cpus = 1 + rnd(3) as u32;
                sims.push(SimAgent {
                    id: env.agent(cpus, &[]),
                    cpus,
                    held: vec![],
                    connected: true,
                });
            }
            _ => {
                let ms = 200 + rnd(3_000);
                let fx = env.advance(ms);
                absorb(&mut env, &mut sims, fx);
            }
        }
    }
    // Heal: everyone reconnects and finishes what it holds; then quiesce.
    for _ in 0..2_000 {
        if env.status(run).state != "running" {
            break;
        }
        if sims.is_empty() {
            sims.push(SimAgent {
                id: env.agent(2, &[]),
                cpus: 2,
                held: vec![],
                connected: true,
            });
        }
        for s in sims.iter_mut() {
            if !s.connected {
                s.id = env.reconnect(s.id, s.cpus, &s.held.clone());
                s.connected = true;
            }
            let held = std::mem::take(&mut s.held);
            let started: Vec<Started> = held
                .iter()
                .map(|x| Started {
                    attempt: *x,
                    at_us: env.now_ms * 1000,
                })
                .collect();
            let results = held
                .iter()
                .map(|x| result(*x, AttemptEnd::Exited { code: 0 }))
                .collect();
            env.core
                .agent_events(s.id, &started, results, None, env.now_ms);
        }
        let fx = env.advance(1_000);
        absorb(&mut env, &mut sims, fx);
    }
    let st = env.status(run);
    eprintln!(
        "L0 seed {seed}: {} restarts, {} reports ({} resent), {} attempts, state {} {:?}",
        restarts,
        history.len(),
        resent,
        env.core.ids().attempt - 1,
        st.state,
        st.counts
    );
    assert_ne!(
        st.state, "running",
        "seed {seed}: the run never finished: {st:?}"
    );
    assert_eq!(
        st.counts.done(),
        65,
        "seed {seed}: every task terminal: {st:?}"
    );
    let mut ended: HashMap<AttemptId, u32> = HashMap::new();
    let mut succeeded: HashMap<TaskId, u32> = HashMap::new();
    for op in &env.store_log {
        match op {
            StoreOp::AttemptEnded { attempt, .. } => *ended.entry(*attempt).or_default() += 1,
            StoreOp::TaskState {
                task,
                state: "succeeded",
                ..
            } => *succeeded.entry(*task).or_default() += 1,
            _ => {}
        }
    }
    assert!(
        ended.values().all(|n| *n == 1),
        "seed {seed}: an attempt ended twice"
    );
    assert!(
        succeeded.values().all(|n| *n == 1),
        "seed {seed}: a task counted twice"
    );
    assert_eq!(succeeded.len() as u64, st.counts.succeeded, "seed {seed}");
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
