//! Core unit tests: one `TestEnv` drives the core with a fake clock and checks
//! every invariant after each step (STYLE habit 9). The tests live in one file
//! per concept of the core; this file holds the `TestEnv` and the helpers they
//! share.

mod agents;
mod checkpoints;
mod demand;
mod explain;
mod invariants;
mod item_deps;
mod limits;
mod pilots;
mod rebalance;
mod render;
mod restore;
mod resume;
mod scheduling;
mod simulation;
mod sizing;
mod submit;
mod telemetry;
mod transitions;

use std::collections::HashMap;
use std::sync::Arc;

use scalable_common::protocol::{
    AgentHello, AgentId, AttemptEnd, AttemptId, AttemptResult, RunId, RunStatus, Started, TaskId,
};
use scalable_common::resources::Resources;
use scalable_common::workflow::{quick_job, Items, JobDef, JobTemplates, WorkflowDef};

use super::{Ack, Core, CoreConfig, Effects, EventKind, Ids, PlannedJob, StoreOp, SubmitPlan};

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
        let (store, _, _) =
            crate::store::Store::open(&path, crate::store::StateOrigin::New).expect("open");
        store.write(self.store_log.clone(), None);
        store.stop();
        let (store, ids, loaded) =
            crate::store::Store::open(&path, crate::store::StateOrigin::Existing).expect("reopen");
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
        self.submit_plan(plan(jobs, max_fails))
    }

    fn submit_plan(&mut self, plan: SubmitPlan) -> RunId {
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
        self.core.run_status(run, self.now_ms).expect("run")
    }

    /// A one-cpu agent whose one task (job `j`: 100 MiB, one retry) ran out
    /// of memory at a 200 MiB peak; its retry waits out the backoff.
    fn out_of_memory_once(&mut self) -> AgentId {
        let a = self.agent(1, &[]);
        let mut j = job("j", 1);
        j.retries = 1;
        j.resources.memory_bytes = Some(100 << 20);
        self.submit(vec![j]);
        let at = assigned(&self.step(), a);
        let mut r = result(at[0], AttemptEnd::OutOfMemory);
        r.peak_rss_bytes = 200 << 20;
        self.core.agent_events(a, &[], vec![r], None, self.now_ms);
        self.step();
        a
    }

    /// A four-cpu agent busy with a stream of 1,000 one-cpu tasks, then a
    /// job `big` of one four-cpu task submitted; the agent and the
    /// attempts it holds.
    fn big_behind_small(&mut self) -> (AgentId, Vec<AttemptId>) {
        let a = self.agent(4, &[]);
        self.submit(vec![job("small", 1_000)]);
        // The agent's slots and its prefetched queue fill with small tasks first.
        let on_agent = assigned(&self.step(), a);
        let mut big = job("big", 1);
        big.resources.cpus = Some(4);
        self.submit(vec![big]);
        (a, on_agent)
    }
}

/// The plan `submit` gets for these jobs (as the shell would build it).
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
    for (k, v) in fx.returns {
        into.returns.entry(k).or_default().extend(v);
    }
    into.shutdown.extend(fx.shutdown);
    into.disconnect.extend(fx.disconnect);
    into.finished_runs.extend(fx.finished_runs);
    into.cache_probe.extend(fx.cache_probe);
    into.render.extend(fx.render);
    into.sizing.extend(fx.sizing);
    into.cache_record.extend(fx.cache_record);
    into.promote.extend(fx.promote);
    into.checkpoints.extend(fx.checkpoints);
}

/// What the shell would answer for every render request of `fx`: the real
/// render, as `render_io` runs it.
fn answer_renders(env: &mut TestEnv, fx: &Effects) -> usize {
    for req in &fx.render {
        let result = crate::core::render::render_request(req);
        env.core.render_answer(req.job, req.index, result);
    }
    fx.render.len()
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
        exit_code: None,
        memory_limit_bytes: None,
        read_bytes: None,
        write_bytes: None,
        input_bytes: Vec::new(),
        usage: Vec::new(),
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

/// The plan `submit` makes of `jobs` (no manifest, no containers).
fn plan(jobs: Vec<JobDef>, max_fails: Option<u64>) -> SubmitPlan {
    let def = WorkflowDef {
        name: "wf".into(),
        max_fails,
        jobs: jobs.clone(),
    };
    let def_json = def.clone();
    let n_jobs = jobs.len();
    SubmitPlan {
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
                auto: None,
            })
            .collect(),
        def,
        cwd: "/tmp".into(),
        source: "test".into(),
        definition_json: serde_json::to_string(&crate::submit::StoredDefinition {
            workflow: def_json,
            containers: vec![None; n_jobs],
            auto: vec![],
        })
        .expect("json"),
    }
}
