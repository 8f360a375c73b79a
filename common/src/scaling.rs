//! A stored scaling decision as the CLI and the report see it (SPEC §9,
//! §10): the seed's `ScaleDecision` fields, its inputs and full decision as
//! JSON, and its outcome (filled in later, `None` until then).
//!
//! Plain data for the wire and the `scaling_decisions` table; it must not
//! decide anything (the broker's `scaler` does).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One decision of the AdaptiveScaler of a target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalingDecisionInfo {
    /// The store's row id (0 before it is stored).
    pub id: u64,
    pub at_ms: u64,
    pub target: String,
    /// `active`, `backing_off` or `paused`.
    pub state: String,
    /// Pilots to start per group (a tag, or `*` for a generic pool).
    pub workers_to_add: BTreeMap<String, u32>,
    pub workers_to_remove: BTreeMap<String, u32>,
    /// Pilots cancelled before their agent connected.
    pub cancelled: Vec<String>,
    /// Idle pilots whose agent was told to leave.
    pub drained: Vec<String>,
    pub reasoning: String,
    pub confidence: f64,
    pub predicted_completion_seconds: Option<f64>,
    /// What the scaler read (demand, pilots, predictions, settings), as JSON.
    pub inputs: String,
    /// The decision in full (per-group numbers, the state's details), as JSON.
    pub decision: String,
    pub outcome: ScalingOutcome,
}

/// What came of a decision, once known.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalingOutcome {
    /// When the last of the pilots it started connected.
    pub pilots_connected_at_ms: Option<u64>,
    /// Pilot-seconds its pilots ran tasks, and sat idle.
    pub busy_seconds: Option<f64>,
    pub idle_seconds: Option<f64>,
    /// What its pilots cost (the provider's estimate).
    pub cost: Option<f64>,
}
