//! The ResourceAdvisor: per task type (and target), a percentile (P95 by
//! default) of what attempts really used (peak memory, used cores = cpu
//! time / run time, run time), with headroom.
//!
//! Memory kills count as lower bounds, never as samples: the advised memory
//! is at least the largest killed peak times the OOM factor. This module is
//! pure (samples in, `Advice` out); it must not read the store.

use std::collections::{BTreeMap, BTreeSet};

use super::advice::{memory_text, round2, walltime_text, Advice, AdvisedResources, Evidence};
use super::sample::{percentile, Sample};

/// What the quantile advisor is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct QuantileConfig {
    /// 0..=100.
    pub percentile: f64,
    /// Added on top of the percentile: 0.10 is +10%.
    pub headroom: f64,
    /// A killed attempt's peak times this is a floor (Kubernetes VPA: 1.2).
    pub oom_factor: f64,
}

impl Default for QuantileConfig {
    fn default() -> Self {
        QuantileConfig {
            percentile: 95.0,
            headroom: 0.10,
            oom_factor: 1.2,
        }
    }
}

/// Runs under which any advice is called thin (SPEC §11: < 5 runs).
pub const RUNS_MIN: usize = 5;

/// Why there is no advice at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdviceError {
    #[error("no attempt of task {task:?} has ended yet (hint: run it once; the advisors learn from measured usage)")]
    NoTelemetry { task: String },
    #[error("no measured attempt of task {task:?} ran on target {target:?} (hint: targets with history: {known})")]
    NoTelemetryOnTarget {
        task: String,
        target: String,
        known: String,
    },
}

/// The samples of one task type on `target` (all targets when `None`).
pub fn select<'a>(
    samples: &'a [Sample],
    task: &str,
    target: Option<&str>,
) -> Result<Vec<&'a Sample>, AdviceError> {
    let of_task: Vec<&Sample> = samples.iter().filter(|s| s.task_type == task).collect();
    if of_task.is_empty() {
        return Err(AdviceError::NoTelemetry { task: task.into() });
    }
    let Some(target) = target else {
        return Ok(of_task);
    };
    let on: Vec<&Sample> = of_task
        .iter()
        .copied()
        .filter(|s| s.target == target)
        .collect();
    if on.is_empty() {
        let known: BTreeSet<&str> = of_task.iter().map(|s| s.target.as_str()).collect();
        return Err(AdviceError::NoTelemetryOnTarget {
            task: task.into(),
            target: target.into(),
            known: known.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    Ok(on)
}

/// The percentile advice for samples already selected (`select`).
pub fn recommend(task: &str, samples: &[&Sample], cfg: &QuantileConfig) -> Advice {
    let p = cfg.percentile;
    let grow = 1.0 + cfg.headroom;
    let mut peaks: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.memory_sample())
        .map(|b| b as f64)
        .collect();
    let floor = samples
        .iter()
        .filter_map(|s| s.memory_lower_bound())
        .max()
        .map(|b| b as f64 * cfg.oom_factor)
        .unwrap_or(0.0);
    let memory = percentile(&mut peaks, p).unwrap_or(0.0).max(floor) * grow;
    let mut times: Vec<f64> = samples
        .iter()
        .filter(|s| s.memory_sample().is_some())
        .filter_map(|s| s.run_time_us())
        .map(|t| t as f64 / 1e6)
        .collect();
    let run_time = percentile(&mut times, p).unwrap_or(0.0) * grow;
    let mut cores: Vec<f64> = samples.iter().filter_map(|s| s.used_cores()).collect();
    let used_cores = percentile(&mut cores, p).unwrap_or(1.0);
    let runs = runs_of(samples);
    let kills = samples
        .iter()
        .filter(|s| s.memory_lower_bound().is_some())
        .count();
    let tag = tag_of(task, samples);
    Advice {
        task: task.into(),
        workers: BTreeMap::from([(tag.clone(), workers(samples, p))]),
        resources: BTreeMap::from([(
            tag,
            AdvisedResources {
                cpus: cpus_for(used_cores * grow),
                memory: memory_text(memory.ceil() as u64),
                walltime: walltime_text(run_time),
            },
        )]),
        confidence: round2(confidence(runs, peaks.len())),
        model_type: "quantile".into(),
        method: "quantile".into(),
        evidence: Evidence {
            runs_analyzed: runs,
            attempts_analyzed: samples.len(),
            memory_kills: kills,
            method: "quantile".into(),
            percentile: p.round() as u32,
            memory_bytes: memory.ceil() as u64,
            run_time_s: run_time,
            used_cores,
            cv: None,
        },
    }
}

/// Whole cores, at least one; a task that used 1.02 cores gets 2 only when
/// it used more than a twentieth of the second (measurement noise).
pub fn cpus_for(cores: f64) -> u32 {
    ((cores - 0.05).ceil().max(1.0)) as u32
}

/// More runs and more samples give more confidence, but a percentile never
/// knows more than its sample: (1 - 1/sqrt(n)) scaled by runs / 5 until 5.
fn confidence(runs: usize, samples: usize) -> f64 {
    if samples == 0 {
        return 0.0;
    }
    let by_samples = 1.0 - 1.0 / (samples as f64).sqrt();
    let by_runs = (runs as f64 / RUNS_MIN as f64).min(1.0);
    (by_samples * by_runs).clamp(0.0, 1.0)
}

pub fn runs_of(samples: &[&Sample]) -> usize {
    samples.iter().map(|s| s.run).collect::<BTreeSet<_>>().len()
}

/// The key of `workers`/`resources`: the tag most attempts asked for, else
/// the task type itself.
fn tag_of(task: &str, samples: &[&Sample]) -> String {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for s in samples {
        if let Some(t) = &s.tag {
            *count.entry(t).or_default() += 1;
        }
    }
    count
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| t.to_string())
        .unwrap_or_else(|| task.to_string())
}

/// The percentile over runs of the most attempts that ran at once.
fn workers(samples: &[&Sample], p: f64) -> u32 {
    let mut by_run: BTreeMap<u64, Vec<(u64, i32)>> = BTreeMap::new();
    for s in samples {
        if let (Some(a), Some(b)) = (s.started_at_us, s.ended_at_us) {
            let edges = by_run.entry(s.run).or_default();
            edges.push((a, 1));
            edges.push((b.max(a), -1));
        }
    }
    let mut peaks: Vec<f64> = by_run
        .into_values()
        .map(|mut edges| {
            // Ends before starts at the same instant: back-to-back is not overlap.
            edges.sort();
            let (mut now, mut most) = (0i32, 0i32);
            for (_, d) in edges {
                now += d;
                most = most.max(now);
            }
            f64::from(most)
        })
        .collect();
    percentile(&mut peaks, p).unwrap_or(1.0).max(1.0) as u32
}

#[cfg(test)]
mod tests {
    use super::super::sample::{Features, Outcome};
    use super::*;

    fn sample(run: u64, peak_mib: u64, secs: u64, cpu_secs: u64, outcome: Outcome) -> Sample {
        Sample {
            task_type: "sim".into(),
            tag: Some("demeter".into()),
            target: "local".into(),
            run,
            features: Features::new(),
            peak_memory_bytes: Some(peak_mib << 20),
            cpu_time_us: Some(cpu_secs * 1_000_000),
            started_at_us: Some(run * 1_000_000_000),
            ended_at_us: Some(run * 1_000_000_000 + secs * 1_000_000),
            outcome,
            advised_memory_bytes: None,
        }
    }

    #[test]
    fn the_advice_is_the_p95_of_what_was_used_plus_headroom() {
        let samples: Vec<Sample> = (1..=100)
            .map(|i| sample(i % 5, 100 + i, 10 + i, 2 * (10 + i), Outcome::Succeeded))
            .collect();
        let refs: Vec<&Sample> = samples.iter().collect();
        let a = recommend("sim", &refs, &QuantileConfig::default());
        // P95 of 101..=200 MiB is 195 MiB; +10%.
        assert_eq!(
            a.evidence.memory_bytes,
            ((195u64 << 20) as f64 * 1.1).ceil() as u64
        );
        assert_eq!(a.resources["demeter"].memory, "215M");
        // P95 of 11..=110 s is 105 s; +10% = 115.5 s.
        assert_eq!(a.resources["demeter"].walltime, "00:01:56");
        assert_eq!(a.resources["demeter"].cpus, 3, "2 cores used, +10%");
        assert_eq!(a.evidence.runs_analyzed, 5);
        assert_eq!(a.evidence.attempts_analyzed, 100);
        assert_eq!(a.evidence.percentile, 95);
        assert_eq!(a.method, "quantile");
        assert!(a.confidence > 0.85, "{}", a.confidence);
    }

    #[test]
    fn a_memory_kill_is_a_lower_bound_not_a_sample() {
        let mut samples: Vec<Sample> = (0..20)
            .map(|i| sample(i % 5, 100, 10, 10, Outcome::Succeeded))
            .collect();
        samples.push(sample(1, 500, 3, 3, Outcome::MemoryKilled));
        let refs: Vec<&Sample> = samples.iter().collect();
        let a = recommend("sim", &refs, &QuantileConfig::default());
        // 500 MiB * 1.2 * 1.1: a sample would have been hidden under the P95.
        assert_eq!(
            a.evidence.memory_bytes,
            ((500u64 << 20) as f64 * 1.2 * 1.1).ceil() as u64
        );
        assert_eq!(a.evidence.memory_kills, 1);
        assert_eq!(
            a.resources["demeter"].walltime, "00:00:11",
            "a kill's time is no sample"
        );
    }

    #[test]
    fn fewer_runs_give_less_confidence() {
        let many: Vec<Sample> = (0..50)
            .map(|i| sample(i % 5, 100, 10, 10, Outcome::Succeeded))
            .collect();
        let few: Vec<Sample> = (0..50)
            .map(|i| sample(i % 2, 100, 10, 10, Outcome::Succeeded))
            .collect();
        let c = |s: &[Sample]| {
            let r: Vec<&Sample> = s.iter().collect();
            recommend("sim", &r, &QuantileConfig::default()).confidence
        };
        assert!(c(&few) < c(&many));
    }

    #[test]
    fn workers_are_the_concurrency_past_runs_reached() {
        let mut samples = Vec::new();
        for run in 0..3 {
            for k in 0..4u64 {
                let mut s = sample(run, 100, 10, 10, Outcome::Succeeded);
                // Two at a time: k and k+1 overlap in pairs.
                s.started_at_us = Some((k / 2) * 20_000_000);
                s.ended_at_us = Some((k / 2) * 20_000_000 + 10_000_000);
                samples.push(s);
            }
        }
        let refs: Vec<&Sample> = samples.iter().collect();
        assert_eq!(
            recommend("sim", &refs, &QuantileConfig::default()).workers["demeter"],
            2
        );
    }

    #[test]
    fn unknown_task_and_target_are_errors_that_say_what_exists() {
        let samples = vec![sample(1, 100, 10, 10, Outcome::Succeeded)];
        assert_eq!(
            select(&samples, "nope", None).unwrap_err(),
            AdviceError::NoTelemetry {
                task: "nope".into()
            }
        );
        let e = select(&samples, "sim", Some("hpc"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("targets with history: local"), "{e}");
        assert_eq!(select(&samples, "sim", Some("local")).unwrap().len(), 1);
    }
}
