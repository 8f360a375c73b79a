//! A decision as the store keeps it: the seed's fields, the inputs the
//! scaler read and the full decision as JSON, no outcome yet.
//!
//! A conversion only; it must not decide whether a decision is stored.

use scalable_common::scaling::{ScalingDecisionInfo, ScalingOutcome};

use super::decision::ScaleDecision;
use super::input::ScaleInput;

/// The row of `d`, made from `input`.
pub fn record(d: &ScaleDecision, input: &ScaleInput) -> ScalingDecisionInfo {
    ScalingDecisionInfo {
        id: 0,
        at_ms: d.at_ms,
        target: d.target.clone(),
        state: d.state.as_str().to_string(),
        workers_to_add: d.workers_to_add.clone(),
        workers_to_remove: d.workers_to_remove.clone(),
        cancelled: d.cancel.clone(),
        drained: d.drain.iter().map(|(p, _)| p.clone()).collect(),
        reasoning: d.reasoning.clone(),
        confidence: d.confidence,
        predicted_completion_seconds: d.predicted_completion_seconds,
        inputs: serde_json::to_string(input).unwrap_or_default(),
        decision: serde_json::to_string(d).unwrap_or_default(),
        outcome: ScalingOutcome::default(),
    }
}
