//! The advisors held to account (issue 17): for the attempts the advisor
//! sized (`memory: auto`), how its upper bounds did against what happened,
//! and how the plain percentile (the ResourceAdvisor) would have done on the
//! same attempts: coverage (the share of attempts whose peak stayed under
//! the bound), mean over-allocation ((bound - peak) / peak) and run-time
//! error (mean |bound - run time| / run time).
//!
//! Pure figures from `ReportData::predictions`; it must not read the store
//! or word anything (the renderers do).

use serde::Serialize;

use super::model::Prediction;

/// The quantities and the comparison's method, as `load` writes them.
pub const MEMORY: &str = "memory_bytes";
pub const RUN_TIME: &str = "run_time_ms";
pub const PERCENTILE: &str = "percentile";
const ADVISED: &str = "advisor: ";
const FALLBACK: &str = "fallback: ";

/// How one way of sizing did on the advised attempts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Score {
    /// Attempts with a measured peak.
    pub attempts: u64,
    pub coverage: Option<f64>,
    pub over_allocation: Option<f64>,
    pub run_time_error: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Accountability {
    /// The advisor's bounds, on the attempts it sized.
    pub advised: Score,
    /// The percentile's bounds, on the same attempts.
    pub percentile: Score,
    /// Sized attempts that took their fallback (advisor not confident,
    /// stepped back, or not trained yet).
    pub fallbacks: u64,
}

impl Accountability {
    pub fn is_empty(&self) -> bool {
        self.advised.attempts == 0 && self.fallbacks == 0
    }
}

pub fn of(predictions: &[Prediction]) -> Accountability {
    Accountability {
        advised: score(predictions, |m| m.starts_with(ADVISED)),
        percentile: score(predictions, |m| m == PERCENTILE),
        fallbacks: predictions
            .iter()
            .filter(|p| p.quantity == MEMORY && p.method.starts_with(FALLBACK))
            .count() as u64,
    }
}

fn score(predictions: &[Prediction], method: impl Fn(&str) -> bool) -> Score {
    let pairs = |quantity: &str| -> Vec<(f64, f64)> {
        predictions
            .iter()
            .filter(|p| p.quantity == quantity && method(&p.method))
            .filter_map(|p| Some((p.predicted, p.actual.filter(|a| *a > 0.0)?)))
            .collect()
    };
    let memory = pairs(MEMORY);
    let run_time = pairs(RUN_TIME);
    let mean = |v: &[(f64, f64)], f: fn(f64, f64) -> f64| {
        (!v.is_empty())
            .then(|| round3(v.iter().map(|&(p, a)| f(p, a)).sum::<f64>() / v.len() as f64))
    };
    Score {
        attempts: memory.len() as u64,
        coverage: mean(&memory, |p, a| f64::from(u8::from(a <= p))),
        over_allocation: mean(&memory, |p, a| (p - a) / a),
        run_time_error: mean(&run_time, |p, a| (p - a).abs() / a),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(quantity: &str, predicted: f64, actual: f64, method: &str) -> Prediction {
        Prediction {
            task_type: "sim".into(),
            quantity: quantity.into(),
            predicted,
            actual: Some(actual),
            method: method.into(),
        }
    }

    #[test]
    fn the_advisor_and_the_percentile_are_scored_on_the_same_attempts() {
        let gb = "advisor: gradient_boosting (5-fold CV, P95 conformal upper bound)";
        let rows = vec![
            p(MEMORY, 110.0, 100.0, gb),
            p(MEMORY, 90.0, 100.0, gb),
            p(RUN_TIME, 12.0, 10.0, gb),
            p(MEMORY, 300.0, 100.0, PERCENTILE),
            p(MEMORY, 300.0, 100.0, PERCENTILE),
            p(RUN_TIME, 20.0, 10.0, PERCENTILE),
            p(MEMORY, 50.0, 100.0, "fallback: confidence 0.20 < 0.50"),
        ];
        let a = of(&rows);
        assert_eq!(a.advised.attempts, 2);
        assert_eq!(a.advised.coverage, Some(0.5));
        assert_eq!(a.advised.over_allocation, Some(0.0));
        assert_eq!(a.advised.run_time_error, Some(0.2));
        assert_eq!(a.percentile.coverage, Some(1.0));
        assert_eq!(a.percentile.over_allocation, Some(2.0));
        assert_eq!(a.fallbacks, 1);
        assert!(of(&[]).is_empty());
    }
}
