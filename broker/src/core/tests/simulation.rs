//! reliability.md §5.2 L0: a seeded walk of results, duplicates, stale
//! reports, returns given or refused, disconnects, reconnects, lost agents,
//! time and broker restarts (the core rebuilt from the real SQLite store),
//! then heal and quiesce.

use super::*;

/// One simulated agent: what it holds (assigned to it and not yet reported).
struct SimAgent {
    id: AgentId,
    cpus: u32,
    held: Vec<AttemptId>,
    connected: bool,
}

/// A small deterministic pseudo-random sequence (xorshift); the seed is printed.
struct Rnd(u64);

impl Rnd {
    fn below(&mut self, n: u64) -> u64 {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x % n
    }
}

/// The simulated world: the core (through `TestEnv`) and its agents.
struct Sim {
    env: TestEnv,
    run: RunId,
    sims: Vec<SimAgent>,
    rnd: Rnd,
    /// Every report ever sent, to resend as duplicates or stale results.
    history: Vec<(AttemptId, AttemptEnd)>,
    restarts: u32,
    resent: u32,
}

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
    let mut sim = Sim::new(seed);
    for _ in 0..3_000 {
        let fx = sim.env.step();
        sim.absorb(fx);
        if sim.env.status(sim.run).state != "running" {
            break;
        }
        sim.random_step();
    }
    sim.heal();
    sim.check(seed);
}

impl Sim {
    fn new(seed: u64) -> Sim {
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
        let sims: Vec<SimAgent> = (0..3)
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
        Sim {
            env,
            run,
            sims,
            rnd: Rnd(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            history: Vec::new(),
            restarts: 0,
            resent: 0,
        }
    }

    /// Connected agents take what was assigned to them and stop what was
    /// cancelled (reporting it cancelled).
    fn absorb(&mut self, fx: Effects) {
        for (ag, list) in fx.assign {
            if let Some(s) = self.sims.iter_mut().find(|s| s.id == ag && s.connected) {
                s.held.extend(list.iter().map(|x| x.attempt));
            }
        }
        for (ag, list) in fx.cancel {
            if let Some(s) = self.sims.iter_mut().find(|s| s.id == ag && s.connected) {
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
                let now = self.env.now_ms;
                self.env.core.agent_events(ag, &[], results, None, now);
            }
        }
        for (ag, list) in fx.returns {
            self.give_back(ag, &list);
        }
    }

    /// A connected agent asked to give attempts back: it returns each one it
    /// holds, or (1 in 2, as if it had started it meanwhile) keeps it.
    fn give_back(&mut self, ag: AgentId, list: &[AttemptId]) {
        let Some(i) = self.sims.iter().position(|s| s.id == ag && s.connected) else {
            return;
        };
        let mut results = Vec::new();
        for id in list {
            if self.sims[i].held.contains(id) && self.rnd.below(2) == 0 {
                self.sims[i].held.retain(|x| x != id);
                self.history.push((*id, AttemptEnd::Returned));
                results.push(result(*id, AttemptEnd::Returned));
            }
        }
        let now = self.env.now_ms;
        self.env.core.agent_events(ag, &[], results, None, now);
    }

    /// One random event (a plain match table of what can happen).
    fn random_step(&mut self) {
        let live: Vec<usize> = (0..self.sims.len())
            .filter(|&i| self.sims[i].connected && !self.sims[i].held.is_empty())
            .collect();
        match self.rnd.below(12) {
            0..=4 if !live.is_empty() => {
                let i = live[self.rnd.below(live.len() as u64) as usize];
                self.report_one(i);
            }
            5 if !self.history.is_empty() => self.resend_one(),
            6 => {
                let i = self.rnd.below(self.sims.len() as u64) as usize;
                self.toggle_connection(i);
            }
            7 if self.sims.len() > 1 => {
                let i = self.rnd.below(self.sims.len() as u64) as usize;
                let s = self.sims.swap_remove(i);
                self.env.core.agent_lost(s.id, "sim: lost", self.env.now_ms);
            }
            8 if self.rnd.below(5) == 0 => {
                self.restarts += 1;
                self.env.restart();
                for s in &mut self.sims {
                    s.connected = false;
                }
            }
            9 if self.sims.len() < 5 => {
                let cpus = 1 + self.rnd.below(3) as u32;
                let id = self.env.agent(cpus, &[]);
                self.sims.push(SimAgent {
                    id,
                    cpus,
                    held: vec![],
                    connected: true,
                });
            }
            _ => {
                let ms = 200 + self.rnd.below(3_000);
                let fx = self.env.advance(ms);
                self.absorb(fx);
            }
        }
    }

    /// Agent `i` reports one attempt it holds: started and ended (1 in 8 fail).
    fn report_one(&mut self, i: usize) {
        let pick = self.rnd.below(self.sims[i].held.len() as u64) as usize;
        let at = self.sims[i].held.swap_remove(pick);
        let end = if self.rnd.below(8) == 0 {
            AttemptEnd::Exited { code: 1 }
        } else {
            AttemptEnd::Exited { code: 0 }
        };
        self.history.push((at, end.clone()));
        let now = self.env.now_ms;
        let started = [Started {
            attempt: at,
            at_us: now * 1000,
        }];
        let id = self.sims[i].id;
        self.env
            .core
            .agent_events(id, &started, vec![result(at, end)], None, now);
    }

    /// A duplicate or stale report from some connected agent.
    fn resend_one(&mut self) {
        let pick = self.rnd.below(self.history.len() as u64) as usize;
        let (at, end) = self.history[pick].clone();
        if let Some(s) = self.sims.iter().find(|s| s.connected) {
            self.resent += 1;
            let now = self.env.now_ms;
            self.env
                .core
                .agent_events(s.id, &[], vec![result(at, end)], None, now);
        }
    }

    fn toggle_connection(&mut self, i: usize) {
        if self.sims[i].connected {
            self.sims[i].connected = false;
            let now = self.env.now_ms;
            self.env.core.agent_disconnected(self.sims[i].id, now);
        } else {
            let s = &self.sims[i];
            let (old, cpus, held) = (s.id, s.cpus, s.held.clone());
            self.sims[i].id = self.env.reconnect(old, cpus, &held);
            self.sims[i].connected = true;
        }
    }

    /// Heal: everyone reconnects and finishes what it holds; then quiesce.
    fn heal(&mut self) {
        for _ in 0..2_000 {
            if self.env.status(self.run).state != "running" {
                break;
            }
            if self.sims.is_empty() {
                let id = self.env.agent(2, &[]);
                self.sims.push(SimAgent {
                    id,
                    cpus: 2,
                    held: vec![],
                    connected: true,
                });
            }
            for s in self.sims.iter_mut() {
                let env = &mut self.env;
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
            let fx = self.env.advance(1_000);
            self.absorb(fx);
        }
    }

    fn check(&self, seed: u64) {
        let st = self.env.status(self.run);
        eprintln!(
            "L0 seed {seed}: {} restarts, {} reports ({} resent, {} returned), {} attempts, state {} {:?}",
            self.restarts,
            self.history.len(),
            self.resent,
            self.history
                .iter()
                .filter(|(_, e)| *e == AttemptEnd::Returned)
                .count(),
            self.env.core.ids().attempt - 1,
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
        for op in &self.env.store_log {
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
}
