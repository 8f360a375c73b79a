//! What the advisors learn from: one ended attempt of a task type, as plain
//! data (`Sample`), and the features a query or a task carries (`Features`).
//!
//! This module owns the shape of a sample and the few facts derived from it
//! (run time, used cores, whether its peak is a measurement or a lower
//! bound). It must not read the store (that is `history`) or decide anything.

use std::collections::BTreeMap;

/// A feature's value: a number when it reads as one, else a category.
#[derive(Debug, Clone, PartialEq)]
pub enum Feature {
    Number(f64),
    Text(String),
}

impl Feature {
    /// `"120"` is the number 120, `"ssp1"` the category `ssp1`.
    pub fn parse(text: &str) -> Feature {
        match text.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Feature::Number(n),
            _ => Feature::Text(text.to_string()),
        }
    }
}

/// A task's features by name (user features, input sizes).
pub type Features = BTreeMap<String, Feature>;

/// Parses `k=v` pairs into features.
pub fn features_of(pairs: &[(String, String)]) -> Features {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), Feature::parse(v)))
        .collect()
}

/// How an attempt ended, as far as its measurements go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It finished: its peak memory, cpu time and run time are samples.
    Succeeded,
    /// It was killed for memory: its peak is only a lower bound of its need,
    /// and its run time says nothing.
    MemoryKilled,
}

/// One ended attempt of a task type.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub task_type: String,
    /// The tag its job asked for, if any (the key of `workers`/`resources`).
    pub tag: Option<String>,
    /// The target its agent belonged to (`local` for the broker's own agents).
    pub target: String,
    pub run: u64,
    pub features: Features,
    pub peak_memory_bytes: Option<u64>,
    pub cpu_time_us: Option<u64>,
    pub started_at_us: Option<u64>,
    pub ended_at_us: Option<u64>,
    pub outcome: Outcome,
    /// The memory an advisor had this attempt ask for (`memory: auto`), to
    /// score the advice on it; `None`: not sized by one.
    pub advised_memory_bytes: Option<u64>,
}

impl Sample {
    pub fn run_time_us(&self) -> Option<u64> {
        match (self.started_at_us, self.ended_at_us) {
            (Some(s), Some(e)) if e >= s => Some(e - s),
            _ => None,
        }
    }

    /// Cores in use on average: cpu time over run time (only for finished
    /// attempts that ran a measurable time).
    pub fn used_cores(&self) -> Option<f64> {
        let run = self.run_time_us().filter(|r| *r > 0)?;
        Some(self.cpu_time_us? as f64 / run as f64)
    }

    /// The peak memory as a measurement (successes only).
    pub fn memory_sample(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Succeeded => self.peak_memory_bytes,
            Outcome::MemoryKilled => None,
        }
    }

    /// The peak memory of an attempt killed for it: a lower bound.
    pub fn memory_lower_bound(&self) -> Option<u64> {
        match self.outcome {
            Outcome::MemoryKilled => self.peak_memory_bytes,
            Outcome::Succeeded => None,
        }
    }
}

/// The nearest-rank percentile (`p` in 0..=100) of `values`; `None` when empty.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_categories_are_told_apart() {
        assert_eq!(Feature::parse("120"), Feature::Number(120.0));
        assert_eq!(Feature::parse(" 1.5"), Feature::Number(1.5));
        assert_eq!(Feature::parse("ssp1"), Feature::Text("ssp1".into()));
        assert_eq!(Feature::parse("NaN"), Feature::Text("NaN".into()));
    }

    #[test]
    fn the_nearest_rank_percentile_is_a_value_of_the_set() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 95.0), Some(95.0));
        assert_eq!(percentile(&mut v, 100.0), Some(100.0));
        assert_eq!(percentile(&mut v, 0.0), Some(1.0));
        assert_eq!(percentile(&mut [], 50.0), None);
        assert_eq!(percentile(&mut [7.0], 95.0), Some(7.0));
    }
}
