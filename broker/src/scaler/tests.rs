//! The scaler driven over a fake clock: `Env` simulates a target's pilots
//! (queued for `start_delay_ms`, then an agent with `slots` one-cpu slots),
//! a queue of one-cpu tasks of `run_ms`, and applies every decision as the
//! shell would (start, cancel, drain), checking after every step that no
//! busy pilot was removed and the bounds hold.

use scalable_common::explain::{AgentShape, Demand, ShapeFit, SizeCount, TagDemand};
use scalable_common::protocol::{AgentInfo, PilotInfo, PilotPhase};
use scalable_common::resources::Resources;

use super::*;
use crate::test_fixtures::agent_info;

const TAG: &str = "demeter";

struct SimPilot {
    info: PilotInfo,
    connect_at_ms: u64,
    /// End times of the tasks its agent runs.
    running: Vec<u64>,
}

struct Env {
    now_ms: u64,
    scaler: Scaler,
    group: PilotGroup,
    predictions: Predictions,
    pilots: Vec<SimPilot>,
    ready: u64,
    run_ms: u64,
    start_delay_ms: u64,
    /// Ready tasks a fresh pilot could not run (e.g. walltime over its lifetime).
    unfit: u64,
    fail_starts: Option<String>,
    decisions: Vec<ScaleDecision>,
    /// The rows the shell would store.
    records: Vec<scalable_common::scaling::ScalingDecisionInfo>,
    next_agent: u64,
}

impl Env {
    fn new(config: ScalerConfig, slots: u32, run_ms: u64) -> Env {
        let mut predictions = Predictions::default();
        predictions
            .run_seconds
            .insert(TAG.into(), run_ms as f64 / 1000.0);
        Env {
            now_ms: 1_000_000,
            scaler: Scaler::new(config),
            group: PilotGroup {
                tag: Some(TAG.into()),
                shape: AgentShape {
                    tags: vec![TAG.into()],
                    resources: Resources::cpus(slots),
                    lifetime_ms: None,
                    container_runtime: false,
                },
            },
            predictions,
            pilots: Vec::new(),
            ready: 0,
            run_ms,
            start_delay_ms: 5_000,
            unfit: 0,
            fail_starts: None,
            decisions: Vec::new(),
            records: Vec::new(),
            next_agent: 1,
        }
    }

    fn bounds(min: u32, max: u32) -> ScalerConfig {
        ScalerConfig {
            minimum: Bound::Target(min),
            maximum: Bound::Target(max),
            max_workers: max,
            ..ScalerConfig::default()
        }
    }

    fn live(&self) -> u32 {
        self.pilots
            .iter()
            .filter(|p| p.info.state.is_live())
            .count() as u32
    }

    fn running(&self) -> u64 {
        self.pilots.iter().map(|p| p.running.len() as u64).sum()
    }

    fn demand(&self) -> Demand {
        let ready = self.ready + self.unfit;
        let agents: Vec<&SimPilot> = self
            .pilots
            .iter()
            .filter(|p| p.info.state == PilotPhase::Connected)
            .collect();
        Demand {
            tags: vec![TagDemand {
                tag: Some(TAG.into()),
                ready,
                sizes: (ready > 0)
                    .then(|| SizeCount {
                        resources: Resources::cpus(1),
                        tasks: ready,
                    })
                    .into_iter()
                    .collect(),
                fits: vec![ShapeFit {
                    shape: 0,
                    tasks: self.ready,
                }],
                running: self.running(),
                agents: agents.len() as u32,
                ..TagDemand::default()
            }],
        }
    }

    fn agent_infos(&self) -> Vec<AgentInfo> {
        self.pilots
            .iter()
            .filter(|p| p.info.state == PilotPhase::Connected)
            .map(|p| AgentInfo {
                name: p.info.id.clone(),
                tags: vec![TAG.into()],
                resources: self.group.shape.resources.clone(),
                connected_at_ms: p.connect_at_ms,
                pilot_id: Some(p.info.id.clone()),
                ..agent_info(p.info.agent.expect("connected"), p.running.len() as u32)
            })
            .collect()
    }

    /// One second passes: pilots connect, tasks end and start, the scaler
    /// decides and its decision is applied.
    fn tick(&mut self) -> ScaleDecision {
        self.now_ms += 1_000;
        let now = self.now_ms;
        let slots = self.group.shape.resources.cpus as usize;
        for p in self.pilots.iter_mut().filter(|p| p.info.state.is_live()) {
            if p.info.state == PilotPhase::Submitted && p.connect_at_ms <= now {
                p.info.state = PilotPhase::Connected;
                p.info.agent = Some(self.next_agent);
                self.next_agent += 1;
            }
            p.running.retain(|end| *end > now);
            while p.info.state == PilotPhase::Connected && p.running.len() < slots && self.ready > 0
            {
                p.running.push(now + self.run_ms);
                self.ready -= 1;
            }
        }
        let infos: Vec<PilotInfo> = self.pilots.iter().map(|p| p.info.clone()).collect();
        let e = self.scaler.evaluate(
            "hpc",
            &self.demand(),
            std::slice::from_ref(&self.group),
            &infos,
            &self.agent_infos(),
            &self.predictions,
            now,
        );
        let d = e.decision;
        if let Some(r) = &e.record {
            assert_eq!(
                (r.at_ms, r.reasoning.as_str()),
                (d.at_ms, d.reasoning.as_str())
            );
            assert!(r.inputs.contains("\"demand\""), "{}", r.inputs);
            self.records.push(r.clone());
        }
        self.apply(&d);
        self.decisions.push(d.clone());
        d
    }

    fn apply(&mut self, d: &ScaleDecision) {
        let now = self.now_ms;
        for (id, agent) in &d.drain {
            let p = self
                .pilots
                .iter_mut()
                .find(|p| &p.info.id == id)
                .expect("known");
            assert_eq!(p.info.agent, Some(*agent));
            assert!(p.running.is_empty(), "drained busy pilot {id}");
            p.info.state = PilotPhase::Ended;
        }
        for id in &d.cancel {
            let p = self
                .pilots
                .iter_mut()
                .find(|p| &p.info.id == id)
                .expect("known");
            assert_eq!(
                p.info.state,
                PilotPhase::Submitted,
                "cancelled a connected pilot"
            );
            p.info.state = PilotPhase::Ended;
        }
        if let Some(n) = d.workers_to_add.get(TAG) {
            if let Some(e) = self.fail_starts.clone() {
                self.scaler.provider_failed(&e, now);
                return;
            }
            self.scaler.provider_succeeded();
            for _ in 0..*n {
                let id = format!("p-{}", self.pilots.len() + 1);
                self.pilots.push(SimPilot {
                    info: PilotInfo {
                        id,
                        target: "hpc".into(),
                        tag: Some(TAG.into()),
                        provider_id: String::new(),
                        state: PilotPhase::Submitted,
                        agent: None,
                        submitted_at_ms: now,
                        connected_at_ms: None,
                        ended_at_ms: None,
                        reason: None,
                    },
                    connect_at_ms: now + self.start_delay_ms,
                    running: Vec::new(),
                });
            }
        }
        let max = self.scaler.config.max_workers;
        assert!(
            self.live() <= max,
            "{} live pilots, maximum {max}",
            self.live()
        );
        assert!(!d.reasoning.is_empty());
        assert!((0.0..=1.0).contains(&d.confidence));
    }

    fn ticks(&mut self, n: u32) {
        for _ in 0..n {
            self.tick();
        }
    }

    fn added(&self) -> Vec<(u64, u32)> {
        self.decisions
            .iter()
            .filter_map(|d| d.workers_to_add.get(TAG).map(|n| (d.at_ms, *n)))
            .collect()
    }

    fn removed(&self) -> Vec<(u64, u32)> {
        self.decisions
            .iter()
            .filter_map(|d| d.workers_to_remove.get(TAG).map(|n| (d.at_ms, *n)))
            .collect()
    }
}

#[test]
fn a_burst_gives_one_scale_up_sized_to_the_demand() {
    // 60 one-second tasks on one-cpu pilots, 5 s target: 12 pilots' worth,
    // capped at 6; not 60, and not again while they queue.
    let mut env = Env::new(Env::bounds(0, 6), 1, 1_000);
    env.ready = 60;
    env.ticks(30);
    assert_eq!(env.added(), vec![(1_001_000, 6)]);
    let first = &env.decisions[0];
    assert!(first.reasoning.contains("60 ready"), "{}", first.reasoning);
    assert_eq!(first.predicted_completion_seconds, Some(10.0));
    assert_eq!(env.ready + env.running(), 0, "the burst is done");

    // Four-cpu pilots and 20 s tasks: 60 tasks fill 15 pilots over 20 s.
    let mut env = Env::new(Env::bounds(0, 40), 4, 20_000);
    env.ready = 60;
    env.ticks(10);
    assert_eq!(env.added(), vec![(1_001_000, 15)]);
    assert_eq!(env.decisions[0].groups[0].slots_per_pilot, 4);
}

#[test]
fn steady_load_gives_no_flip_flop() {
    // Two 3-second tasks arrive every second: six busy slots at steady state.
    let mut env = Env::new(Env::bounds(0, 20), 1, 3_000);
    for t in 0..900 {
        env.ready += 2;
        env.tick();
        if t == 120 {
            assert!(
                env.live() >= 6,
                "keeps up with the load: {} pilots",
                env.live()
            );
        }
    }
    let settled = 1_000_000 + 120_000;
    let late: Vec<_> = env
        .added()
        .into_iter()
        .chain(env.removed())
        .filter(|(at, _)| *at > settled)
        .collect();
    assert!(late.is_empty(), "changes under a steady load: {late:?}");
    assert_eq!(
        env.records.len(),
        env.added().len(),
        "stored: each change (the first one also a new state), not every tick"
    );
    assert!(env.removed().is_empty(), "{:?}", env.removed());
    assert!(env.ready < 20, "the load is served: {} ready", env.ready);
}

#[test]
fn an_idle_tail_scales_down_after_the_cooldown_and_not_before() {
    let mut env = Env::new(Env::bounds(1, 6), 1, 1_000);
    env.ready = 60;
    while env.ready + env.running() > 0 {
        env.tick();
    }
    let idle_from = env.now_ms;
    assert_eq!(env.live(), 6);
    env.ticks(200);
    let removed = env.removed();
    assert!(!removed.is_empty(), "never scaled down");
    let first = removed[0].0;
    assert!(
        first >= idle_from + 120_000,
        "removed {} ms after the work ended, cooldown 120 s",
        first - idle_from
    );
    assert!(
        first <= idle_from + 125_000,
        "removed late: {} ms",
        first - idle_from
    );
    assert_eq!(env.live(), 1, "down to the minimum, not below");
    let held = env
        .decisions
        .iter()
        .find(|d| d.at_ms == idle_from + 60_000)
        .expect("a decision a minute in");
    assert!(held.workers_to_remove.is_empty());
    assert!(
        held.reasoning.contains("120 s needed"),
        "{}",
        held.reasoning
    );
    let held = env
        .decisions
        .iter()
        .find(|d| d.at_ms == idle_from + 110_000)
        .expect("a decision later on");
    assert!(
        held.reasoning
            .contains("6 more kept: busy, or idle for less than 120 s"),
        "{}",
        held.reasoning
    );
}

#[test]
fn pending_pilots_are_cancelled_before_idle_ones_are_drained() {
    let mut config = Env::bounds(0, 6);
    config.cooldown_seconds = 10;
    let mut env = Env::new(config, 1, 1_000);
    env.start_delay_ms = 3_600_000; // the queue never lets them start
    env.ready = 60;
    env.tick();
    assert_eq!(env.live(), 6);
    env.ready = 0;
    env.ticks(20);
    let cancels: usize = env.decisions.iter().map(|d| d.cancel.len()).sum();
    let drains: usize = env.decisions.iter().map(|d| d.drain.len()).sum();
    assert_eq!((cancels, drains, env.live()), (6, 0, 0));
    let first = env.decisions.iter().find(|d| !d.cancel.is_empty()).unwrap();
    assert_eq!(first.cancel[0], "p-6", "newest first");
    assert!(
        first.at_ms >= 1_001_000 + 10_000,
        "after the cooldown since the scale-up"
    );
}

#[test]
fn provider_failures_back_off_exponentially_and_say_so() {
    let mut env = failing_env();
    let d = env.tick();
    assert_eq!(d.workers_to_add.get(TAG), Some(&6), "tries at once");
    let d = env.tick();
    assert!(d.workers_to_add.is_empty());
    assert_eq!(
        d.state,
        ScalerState::BackingOff {
            failures: 1,
            until_ms: 1_011_000,
            last_error: "sbatch: error: invalid account".into()
        }
    );
    assert!(
        d.reasoning.contains("would start 6, held back"),
        "{}",
        d.reasoning
    );
    assert!(
        d.reasoning
            .contains("backing off after 1 provider failure in a row"),
        "{}",
        d.reasoning
    );
    env.ticks(9);
    assert_eq!(
        env.added().len(),
        2,
        "tried again after 10 s: {:?}",
        env.added()
    );
    assert_eq!(env.added()[1].0, 1_011_000);
    env.ticks(20);
    assert_eq!(env.added().len(), 3, "then after 20 s: {:?}", env.added());
    assert_eq!(env.added()[2].0, 1_031_000);
    assert_eq!(env.scaler.config.backoff_ms(30), 900_000, "capped");
}

/// A target whose provider refuses every start; at most 3 failures in a row.
fn failing_env() -> Env {
    let mut config = Env::bounds(0, 6);
    config.failure_limit = 3;
    let mut env = Env::new(config, 1, 1_000);
    env.fail_starts = Some("sbatch: error: invalid account".into());
    env.ready = 30;
    env
}

#[test]
fn after_the_failure_limit_the_scaler_pauses_says_so_and_resumes_on_success() {
    let mut env = failing_env();
    env.ticks(31);
    assert_eq!(env.added().len(), 3, "{:?}", env.added());
    let d = env.tick();
    assert!(
        matches!(d.state, ScalerState::Paused { failures: 3, .. }),
        "{:?}",
        d.state
    );
    assert!(
        d.reasoning
            .contains("Starts paused after 3 provider failures"),
        "{}",
        d.reasoning
    );
    env.ticks(600);
    assert_eq!(
        env.added().len(),
        3,
        "paused: no more starts, and it says so"
    );
    assert!(env
        .decisions
        .iter()
        .rev()
        .take(600)
        .all(|d| d.state.as_str() == "paused"));
    let states: Vec<&str> = env.records.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(
        states,
        [
            "active",
            "backing_off",
            "active",
            "backing_off",
            "active",
            "paused"
        ],
        "every start and every change of state is stored, no more"
    );
    // A start that works (a manual scale) resumes the scaler.
    env.fail_starts = None;
    env.scaler.provider_succeeded();
    let d = env.tick();
    assert_eq!(
        (d.state.clone(), d.workers_to_add.get(TAG)),
        (ScalerState::Active, Some(&6))
    );
}

#[test]
fn minimum_and_maximum_are_respected() {
    let mut env = Env::new(Env::bounds(2, 3), 1, 60_000);
    let d = env.tick();
    assert_eq!(d.workers_to_add.get(TAG), Some(&2), "{}", d.reasoning);
    assert!(
        d.reasoning.contains("start 2: the target's minimum is 2"),
        "{}",
        d.reasoning
    );
    env.ticks(10);
    env.ready = 1_000;
    env.ticks(60);
    assert_eq!(env.live(), 3, "never above the maximum");
    env.ready = 0;
    env.unfit = 0;
    env.ticks(600);
    assert_eq!(env.live(), 2, "never below the minimum");

    // Per-tag maximum below the target's.
    let mut config = Env::bounds(0, 10);
    config.maximum = Bound::PerTag {
        tags: [(TAG.to_string(), 4)].into(),
        other: 0,
    };
    let mut env = Env::new(config, 1, 60_000);
    env.ready = 100;
    env.ticks(5);
    assert_eq!(env.live(), 4);
}

#[test]
fn no_pilot_is_started_for_work_it_cannot_finish_within_its_lifetime() {
    // Predicted two hours, pilots live one: nothing starts, and it says why.
    let mut env = Env::new(Env::bounds(0, 6), 1, 7_200_000);
    env.group.shape.lifetime_ms = Some(3_600_000);
    env.ready = 5;
    let d = env.tick();
    assert!(d.workers_to_add.is_empty(), "{d:?}");
    assert!(
        d.reasoning
            .contains("5 ready tasks would outlast a new pilot's lifetime"),
        "{}",
        d.reasoning
    );
    // Tasks the core says no fresh pilot fits (walltime over its lifetime):
    // ready, but not demand for a pilot.
    let mut env = Env::new(Env::bounds(0, 6), 1, 1_000);
    env.unfit = 8;
    env.ticks(5);
    assert!(env.added().is_empty());
    // Within the lifetime, the horizon is the lifetime: 10 tasks of 30 min
    // on 1-hour pilots need 5 pilots, not 10.
    let mut env = Env::new(Env::bounds(0, 20), 1, 1_800_000);
    env.group.shape.lifetime_ms = Some(3_600_000);
    env.scaler.config.target_duration_seconds = 7_200.0;
    env.ready = 10;
    let d = env.tick();
    assert_eq!(d.workers_to_add.get(TAG), Some(&5), "{}", d.reasoning);
}

#[test]
fn a_target_gives_one_group_per_tag_its_pilots_are_recorded_with() {
    let text = "version: 1\nproject: {name: p}\n\
        targets:\n  hpc: {provider: slurm, queue: batch, walltime: \"01:00:00\", max_workers: 8, adaptive: {minimum: 1, maximum: 6}}\n  \
        laptop: {provider: local, threads_per_worker: 2, tags: [demeter, post]}\n\
        components:\n  demeter: {cpus: 4, memory: 16G}\n  post: {cpus: 1, memory: 2G}\n";
    let opts = scalable_common::manifest::LoadOptions {
        target: None,
        overlays: &[],
        env: &|_: &str| None,
    };
    let m = scalable_common::manifest::load_manifest("m.yaml", text, &opts).unwrap();
    let hpc = m.target("hpc").unwrap();
    let groups = groups_of_target(&m, hpc);
    let tags: Vec<Option<&str>> = groups.iter().map(|g| g.tag.as_deref()).collect();
    assert_eq!(tags, [Some("demeter"), Some("post")]);
    assert_eq!(groups[0].shape.resources.cpus, 4);
    assert_eq!(
        groups[0].shape.lifetime_ms,
        Some(3_540_000),
        "a minute short of the walltime"
    );
    let local = groups_of_target(&m, m.target("laptop").unwrap());
    assert_eq!(local.len(), 1);
    assert_eq!(local[0].tag.as_deref(), Some("demeter,post"));
    let config = ScalerConfig::for_target(hpc).unwrap();
    assert_eq!(
        (config.minimum.for_target(), config.maximum.for_target()),
        (Some(1), Some(6))
    );
    assert_eq!(config.max_workers, 8);
    assert!(
        ScalerConfig::for_target(m.target("laptop").unwrap()).is_none(),
        "no adaptive:"
    );
}
