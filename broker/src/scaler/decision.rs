//! What one evaluation decided: the seed's `ScaleDecision` fields
//! (`workers_to_add`, `workers_to_remove`, `reasoning`, `confidence`,
//! `predicted_completion_time`), which pilots to cancel or drain, the
//! scaler's state, and per group the numbers behind it.
//!
//! Plain data; it must not apply itself.

use std::collections::BTreeMap;

use scalable_common::protocol::AgentId;
use serde::{Deserialize, Serialize};

use super::memory::ScalerState;

/// One group's part of a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupDecision {
    /// Its tag, or `*` for a generic pool.
    pub label: String,
    pub tag: Option<String>,
    /// Live pilots not draining (pending, busy and idle).
    pub current: u32,
    /// Pilots the work asks for, within the bounds.
    pub desired: u32,
    /// Ready tasks a fresh pilot of this group could run (and finish
    /// within its lifetime).
    pub fitting: u64,
    /// Tasks on this group's agents (assigned or running).
    pub active: u64,
    /// Tasks of the dominant size one pilot runs at once.
    pub slots_per_pilot: u32,
    /// The share of the current pilots' slots the work keeps busy over the
    /// target duration; `None` with no pilots.
    pub utilisation: Option<f64>,
    pub add: u32,
    pub remove: u32,
    /// Evaluations in a row that asked for fewer pilots (hysteresis).
    pub low_streak: u32,
    /// Why, in a few words.
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleDecision {
    pub at_ms: u64,
    pub target: String,
    /// Pilots to start, per group label (only groups that get some).
    pub workers_to_add: BTreeMap<String, u32>,
    /// Pilots to remove, per group label: `cancel` plus `drain`.
    pub workers_to_remove: BTreeMap<String, u32>,
    /// Pilots whose agent never connected: stopped through the provider
    /// (newest first; removed before any running one).
    pub cancel: Vec<String>,
    /// Idle pilots: their agents are told to leave (longest idle first).
    /// Busy pilots are never removed.
    pub drain: Vec<(String, AgentId)>,
    /// One or more sentences a person reads.
    pub reasoning: String,
    /// 0..1: lower when run times are guessed or starts are held back.
    pub confidence: f64,
    /// Seconds until the known work should be done with the pilots after
    /// this decision; `None` with no work or no pilot to run it.
    pub predicted_completion_seconds: Option<f64>,
    pub state: ScalerState,
    pub groups: Vec<GroupDecision>,
}

impl ScaleDecision {
    pub fn has_changes(&self) -> bool {
        !self.workers_to_add.is_empty() || !self.workers_to_remove.is_empty()
    }

    /// Worth a stored row: it changes something, or the scaler's state
    /// differs from the last stored decision's (entering or leaving a
    /// backoff is news; the hundredth "nothing to do" is not).
    /// `last_state`: the stored word of the last stored decision's state.
    pub fn worth_recording(&self, last_state: Option<&str>) -> bool {
        self.has_changes() || last_state != Some(self.state.as_str())
    }
}
