//! What an advisor answers: `Advice`, the JSON of seed 003 (`task`,
//! `workers`, `resources` with `cpus`/`memory`/`walltime`, `confidence`,
//! `model_type`, `method`, `evidence`), and its text form.
//!
//! This module owns that shape and the units it prints (`12G`, `HH:MM:SS`).
//! It must not compute a recommendation: the advisors fill it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One recommendation for a task type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    pub task: String,
    /// Workers per tag: the concurrency the task type reached in past runs.
    pub workers: BTreeMap<String, u32>,
    pub resources: BTreeMap<String, AdvisedResources>,
    /// 0..=1, two decimals.
    pub confidence: f64,
    /// `quantile`, or the learned model that produced the numbers.
    pub model_type: String,
    /// How the numbers were made, with the fallback and its reason.
    pub method: String,
    pub evidence: Evidence,
}

/// What a worker of one tag should ask for (seed 003's units).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdvisedResources {
    pub cpus: u32,
    pub memory: String,
    pub walltime: String,
}

/// What the recommendation rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub runs_analyzed: usize,
    pub attempts_analyzed: usize,
    /// Attempts killed for memory, whose peaks counted as lower bounds.
    pub memory_kills: usize,
    pub method: String,
    /// The percentile (quantile) or the stated coverage (learned), 0..=100.
    pub percentile: u32,
    /// The upper bounds behind `resources`, unrounded.
    pub memory_bytes: u64,
    pub run_time_s: f64,
    pub used_cores: f64,
    /// Learned models only: cross-validated scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<CvScores>,
}

/// k-fold cross-validation of a learned model, on held-out folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvScores {
    pub folds: usize,
    /// R² of the point prediction (memory, run time).
    pub memory_r2: f64,
    pub run_time_r2: f64,
    /// Share of held-out attempts under their upper bound.
    pub memory_coverage: f64,
    /// Mean of (bound - peak) / peak over held-out attempts.
    pub memory_over_allocation: f64,
    /// `additive` or `relative` conformal residuals.
    pub bound: String,
}

/// `12G`, `300M`: rounded up, so the advice never asks for less than the bound.
pub fn memory_text(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes >= 10 * GIB {
        format!("{}G", bytes.div_ceil(GIB))
    } else {
        format!("{}M", bytes.div_ceil(MIB).max(1))
    }
}

/// `HH:MM:SS`, rounded up to the second (at least one).
pub fn walltime_text(seconds: f64) -> String {
    let s = (seconds.ceil() as u64).max(1);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Two decimals, as printed.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Advice {
    /// The text form of `scalable advise`.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "task: {}", self.task);
        for (tag, r) in &self.resources {
            let workers = self.workers.get(tag).copied().unwrap_or(1);
            let _ = writeln!(
                out,
                "  {tag}: {workers} workers, cpus {}, memory {}, walltime {}",
                r.cpus, r.memory, r.walltime
            );
        }
        let _ = writeln!(
            out,
            "confidence: {:.2} ({})",
            self.confidence, self.model_type
        );
        let e = &self.evidence;
        let _ = writeln!(
            out,
            "method: {}; {} runs, {} attempts ({} killed for memory), percentile {}",
            self.method, e.runs_analyzed, e.attempts_analyzed, e.memory_kills, e.percentile
        );
        if let Some(cv) = &e.cv {
            let _ = writeln!(
                out,
                "cross-validation ({} folds): memory R² {:.3}, run time R² {:.3}, coverage {:.1}%, over-allocation {:.1}% ({} bound)",
                cv.folds,
                cv.memory_r2,
                cv.run_time_r2,
                cv.memory_coverage * 100.0,
                cv.memory_over_allocation * 100.0,
                cv.bound
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_rounded_up_in_seed_units() {
        assert_eq!(memory_text(1), "1M");
        assert_eq!(memory_text((300 << 20) + 1), "301M");
        assert_eq!(memory_text(12 << 30), "12G");
        assert_eq!(memory_text((12 << 30) + 1), "13G");
        assert_eq!(
            scalable_common::units::parse_size_bytes(&memory_text(5 << 30)).unwrap(),
            5 << 30
        );
    }

    #[test]
    fn walltime_is_hh_mm_ss_rounded_up() {
        assert_eq!(walltime_text(0.2), "00:00:01");
        assert_eq!(walltime_text(9000.0), "02:30:00");
        assert_eq!(walltime_text(3599.5), "01:00:00");
    }
}
