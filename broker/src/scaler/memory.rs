//! What the scaler remembers between evaluations: per group, how many
//! evaluations in a row asked for fewer pilots (hysteresis) and when the
//! group last changed (cooldown); per pilot, since when it is idle; and the
//! provider's failures in a row with the backoff they imposed.
//!
//! Plain data and its updates; it must not decide a scaling.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::ScalerConfig;
use super::decision::ScaleDecision;

/// Whether the scaler may start pilots, visible in every decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ScalerState {
    Active,
    /// Starts wait until `until_ms` after `failures` failures in a row.
    BackingOff {
        failures: u32,
        until_ms: u64,
        last_error: String,
    },
    /// `failures` reached the configured limit: no starts until one succeeds
    /// (a manual `scalable scale`), removals go on.
    Paused {
        failures: u32,
        last_error: String,
    },
}

impl ScalerState {
    /// The stored word.
    pub fn as_str(&self) -> &'static str {
        match self {
            ScalerState::Active => "active",
            ScalerState::BackingOff { .. } => "backing_off",
            ScalerState::Paused { .. } => "paused",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalerMemory {
    /// Per group label: evaluations in a row that asked for fewer pilots.
    pub low_streak: BTreeMap<String, u32>,
    /// Per group label: when pilots were last added or removed.
    pub last_change_ms: BTreeMap<String, u64>,
    /// Per pilot id: since when its agent holds no work.
    pub idle_since: BTreeMap<String, u64>,
    /// Provider failures in a row.
    pub failures: u32,
    pub backoff_until_ms: u64,
    pub last_error: Option<String>,
    /// The state of the last decision stored (`ScalerState::as_str`).
    pub last_recorded_state: Option<String>,
}

impl ScalerMemory {
    pub fn state(&self, now_ms: u64, config: &ScalerConfig) -> ScalerState {
        let last_error = self.last_error.clone().unwrap_or_default();
        if self.failures == 0 {
            ScalerState::Active
        } else if config.failure_limit > 0 && self.failures >= config.failure_limit {
            ScalerState::Paused {
                failures: self.failures,
                last_error,
            }
        } else if now_ms < self.backoff_until_ms {
            ScalerState::BackingOff {
                failures: self.failures,
                until_ms: self.backoff_until_ms,
                last_error,
            }
        } else {
            ScalerState::Active
        }
    }

    /// A decision was made (and handed to the shell to apply; `recorded`:
    /// and to store).
    pub fn remember(&mut self, d: &ScaleDecision, recorded: bool) {
        if recorded {
            self.last_recorded_state = Some(d.state.as_str().to_string());
        }
        for g in &d.groups {
            self.low_streak.insert(g.label.clone(), g.low_streak);
            if g.add + g.remove > 0 {
                self.last_change_ms.insert(g.label.clone(), d.at_ms);
            }
        }
    }

    pub fn provider_failed(&mut self, error: &str, now_ms: u64, config: &ScalerConfig) {
        self.failures = self.failures.saturating_add(1);
        self.backoff_until_ms = now_ms.saturating_add(config.backoff_ms(self.failures));
        self.last_error = Some(error.to_string());
    }

    pub fn provider_succeeded(&mut self) {
        self.failures = 0;
        self.backoff_until_ms = 0;
        self.last_error = None;
    }
}
