//! The AdaptiveScaler (SPEC §9) as a sans-IO decision: what is ready per tag
//! (`Core::demand`), the target's pilots, predicted run times, the target's
//! `adaptive:` bounds and the scaler's own memory in; a [`ScaleDecision`]
//! (pilots to add and to remove, which ones, why, how sure, when the work
//! should be done, and whether the scaler is backing off) out.
//!
//! It must not call a provider, read a clock, touch the store or the core:
//! the shell gathers its inputs, applies the decision through the same path
//! as `scalable scale` (`fleet` + `server::fleet_io`), reports provider
//! failures back ([`Scaler::provider_failed`]) and stores the decisions.
//!
//! Layers (call downward only): `config`, `input`, `memory` (plain data);
//! `sizing` (how many pilots the demand needs); `decide` (the rules);
//! [`Scaler`] (memory kept across evaluations); `outcome` (what came of
//! each stored decision, accounted as pilots connect, work and end).

mod config;
mod decide;
mod decision;
mod input;
mod memory;
mod outcome;
mod record;
mod sizing;
#[cfg(test)]
mod tests;

pub use config::{Bound, ScalerConfig};
pub use decide::decide;
pub use decision::{GroupDecision, ScaleDecision};
pub use input::{
    group_label, groups_of_target, pilot_views, PilotGroup, PilotStatus, PilotView, Predictions,
    ScaleInput,
};
pub use memory::{ScalerMemory, ScalerState};
pub use outcome::{OutcomeBook, OUTCOME_FLUSH_MS};
pub use record::record;

use scalable_common::explain::Demand;
use scalable_common::protocol::{AgentInfo, PilotInfo};
use scalable_common::scaling::ScalingDecisionInfo;

/// One evaluation: the decision to apply, and the row to store when it is
/// worth keeping ([`ScaleDecision::worth_recording`]).
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub decision: ScaleDecision,
    pub record: Option<ScalingDecisionInfo>,
}

/// The scaler of one target: its configuration and what it remembers
/// between evaluations (streaks, cooldowns, idle times, provider failures).
#[derive(Debug, Clone, Default)]
pub struct Scaler {
    pub config: ScalerConfig,
    pub memory: ScalerMemory,
}

impl Scaler {
    pub fn new(config: ScalerConfig) -> Scaler {
        Scaler {
            config,
            memory: ScalerMemory::default(),
        }
    }

    /// One evaluation: the fleet as the records and the core's agents show
    /// it (idle times tracked here), then [`decide`], then remembered; the
    /// row to store comes with it when the decision changes something or
    /// the scaler's state changed since the last stored one.
    /// `demand` must come from `Core::demand(now, shapes)` with the shapes
    /// of `groups`, in the same order.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        &mut self,
        target: &str,
        demand: &Demand,
        groups: &[PilotGroup],
        pilots: &[PilotInfo],
        agents: &[AgentInfo],
        predictions: &Predictions,
        now_ms: u64,
    ) -> Evaluation {
        let views = pilot_views(pilots, agents, &mut self.memory, now_ms);
        let input = ScaleInput {
            target,
            demand,
            groups,
            pilots: &views,
            predictions,
            config: &self.config,
            memory: &self.memory,
        };
        let decision = decide(&input, now_ms);
        let last = self.memory.last_recorded_state.as_deref();
        let record = decision
            .worth_recording(last)
            .then(|| record(&decision, &input));
        self.memory.remember(&decision, record.is_some());
        Evaluation { decision, record }
    }

    /// Starting pilots failed: the next start waits (exponential backoff),
    /// and after `failure_limit` failures in a row the scaler pauses; both
    /// show in every decision's state and reasoning.
    pub fn provider_failed(&mut self, error: &str, now_ms: u64) {
        self.memory.provider_failed(error, now_ms, &self.config);
    }

    /// Pilots started: the backoff (and a pause) ends.
    pub fn provider_succeeded(&mut self) {
        self.memory.provider_succeeded();
    }
}
