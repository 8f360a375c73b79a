//! Whether the advice still keeps its word: the share of the recent
//! attempts an advisor sized whose peak memory stayed under what they asked
//! for, against the coverage the learned advisor states. When the recent
//! coverage falls clearly below (more than two binomial standard deviations
//! under its target: a few misses in forty are chance at 95%), the learned
//! advisor is set aside for the ResourceAdvisor and says so in `method`;
//! once the advice that replaced it covers the window again, it comes back.
//!
//! Pure: samples in, a verdict out; it must not train or read the store.

use super::sample::{Outcome, Sample};

/// The advised attempts looked at, newest first.
pub const RECENT_MAX: usize = 50;
/// Fewer advised attempts than this say nothing yet.
pub const RECENT_MIN: usize = 20;

/// Coverage of the newest advised attempts (`samples` newest first): the
/// share covered and how many were looked at.
pub fn recent(samples: &[&Sample]) -> Option<(f64, usize)> {
    let advised: Vec<(&Sample, u64)> = samples
        .iter()
        .filter_map(|s| Some((*s, s.advised_memory_bytes?)))
        .take(RECENT_MAX)
        .collect();
    if advised.len() < RECENT_MIN {
        return None;
    }
    let covered = advised
        .iter()
        .filter(|(s, asked)| {
            s.outcome == Outcome::Succeeded && s.peak_memory_bytes.is_some_and(|p| p <= *asked)
        })
        .count();
    Some((covered as f64 / advised.len() as f64, advised.len()))
}

/// Why the learned advisor must step back, when its recent coverage is
/// clearly under `target`.
pub fn shortfall(samples: &[&Sample], target: f64) -> Option<String> {
    let (coverage, n) = recent(samples)?;
    let tolerance = 2.0 * (target * (1.0 - target) / n as f64).sqrt();
    (coverage < target - tolerance).then(|| {
        format!("recent coverage {coverage:.2} < {target:.2} over the last {n} advised attempts")
    })
}

#[cfg(test)]
mod tests {
    use super::super::sample::Features;
    use super::*;

    fn advised(peak_mib: u64, asked_mib: u64, outcome: Outcome) -> Sample {
        Sample {
            task_type: "sim".into(),
            tag: None,
            target: "local".into(),
            run: 1,
            features: Features::new(),
            peak_memory_bytes: Some(peak_mib << 20),
            cpu_time_us: None,
            started_at_us: None,
            ended_at_us: None,
            outcome,
            advised_memory_bytes: Some(asked_mib << 20),
        }
    }

    #[test]
    fn a_few_misses_are_chance_and_many_are_a_shortfall() {
        let mut s: Vec<Sample> = (0..38)
            .map(|_| advised(90, 100, Outcome::Succeeded))
            .collect();
        s.push(advised(110, 100, Outcome::Succeeded));
        s.push(advised(130, 100, Outcome::MemoryKilled));
        let refs: Vec<&Sample> = s.iter().collect();
        assert_eq!(recent(&refs), Some((0.95, 40)));
        assert_eq!(shortfall(&refs, 0.95), None);
        let mut bad = s.clone();
        for x in bad.iter_mut().take(6) {
            x.peak_memory_bytes = Some(120 << 20);
        }
        let refs: Vec<&Sample> = bad.iter().collect();
        let why = shortfall(&refs, 0.95).expect("8 misses in 40");
        assert_eq!(
            why,
            "recent coverage 0.80 < 0.95 over the last 40 advised attempts"
        );
    }

    #[test]
    fn too_few_advised_attempts_say_nothing() {
        let s: Vec<Sample> = (0..19)
            .map(|_| advised(200, 100, Outcome::Succeeded))
            .collect();
        let refs: Vec<&Sample> = s.iter().collect();
        assert_eq!(shortfall(&refs, 0.95), None);
    }
}
