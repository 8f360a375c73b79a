//! A synthetic workload with a known law, for the advisors' tests and
//! `scripts/bench.sh advise`: peak memory and run time grow linearly with
//! the input size (`size_mb`), a category (`kind`) scales memory, and the
//! noise is multiplicative (±`noise`), as measured usage tends to be.
//!
//! Deterministic for a seed. It must not be used to advise real tasks.

use super::sample::{Feature, Features, Outcome, Sample};

/// The law's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Law {
    pub base_mib: f64,
    pub mib_per_mb: f64,
    pub base_s: f64,
    pub s_per_mb: f64,
    /// Uniform multiplicative noise: 0.05 is ±5%.
    pub noise: f64,
    /// Extra numeric features that carry no signal (for the bench's 5).
    pub distractors: usize,
}

impl Default for Law {
    fn default() -> Self {
        Law {
            base_mib: 64.0,
            mib_per_mb: 3.0,
            base_s: 0.5,
            s_per_mb: 0.01,
            noise: 0.05,
            distractors: 0,
        }
    }
}

/// A small seeded generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Law {
    /// The memory factor of a kind.
    fn kind_factor(kind: &str) -> f64 {
        if kind == "b" {
            1.5
        } else {
            1.0
        }
    }

    /// True peak memory (bytes) and run time (s) for a size and kind, noise drawn.
    pub fn draw(&self, size_mb: f64, kind: &str, rng: &mut Rng) -> (u64, f64) {
        let mut noisy = |x: f64| x * (1.0 + self.noise * (2.0 * rng.unit() - 1.0));
        let mib = noisy((self.base_mib + self.mib_per_mb * size_mb) * Self::kind_factor(kind));
        let secs = noisy(self.base_s + self.s_per_mb * size_mb);
        ((mib * (1 << 20) as f64) as u64, secs)
    }

    /// `runs` runs of `tasks` tasks of type `task`, sizes 10..=500 MB.
    pub fn samples(&self, task: &str, runs: u64, tasks: u64, seed: u64) -> Vec<Sample> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::new();
        for run in 1..=runs {
            let mut clock_us = run * 10_000_000_000;
            for _ in 0..tasks {
                let size = (10.0 + 490.0 * rng.unit()).round();
                let kind = if rng.unit() < 0.5 { "a" } else { "b" };
                let (peak, secs) = self.draw(size, kind, &mut rng);
                let mut features = Features::new();
                features.insert("size_mb".into(), Feature::Number(size));
                features.insert("kind".into(), Feature::Text(kind.into()));
                for d in 0..self.distractors {
                    features.insert(
                        format!("x{d}"),
                        Feature::Number((rng.unit() * 100.0).round()),
                    );
                }
                let run_us = (secs * 1e6) as u64;
                out.push(Sample {
                    task_type: task.into(),
                    tag: None,
                    target: "local".into(),
                    run,
                    features,
                    peak_memory_bytes: Some(peak),
                    cpu_time_us: Some(run_us),
                    started_at_us: Some(clock_us),
                    ended_at_us: Some(clock_us + run_us),
                    outcome: Outcome::Succeeded,
                    advised_memory_bytes: None,
                });
                clock_us += run_us;
            }
        }
        out
    }
}
