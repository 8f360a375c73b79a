//! The scaler's settings: a target's `adaptive:` block (SPEC §9) with the
//! seed's defaults, and the knobs the seed leaves open (target duration,
//! hysteresis, provider backoff), each with its unit in its name.
//!
//! Plain data; it must not decide anything.

use std::collections::BTreeMap;

use scalable_common::manifest::Target;
use serde::{Deserialize, Serialize};

/// A bound on pilots: one number for the whole target (shared by its
/// groups), or one per tag (a group's label, see `group_label`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    Target(u32),
    /// Tags not named get `other`.
    PerTag {
        tags: BTreeMap<String, u32>,
        other: u32,
    },
}

impl Bound {
    /// The bound of one group; `None` for a whole-target bound.
    pub fn for_group(&self, label: &str) -> Option<u32> {
        match self {
            Bound::Target(_) => None,
            Bound::PerTag { tags, other } => Some(tags.get(label).copied().unwrap_or(*other)),
        }
    }

    pub fn for_target(&self) -> Option<u32> {
        match self {
            Bound::Target(n) => Some(*n),
            Bound::PerTag { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalerConfig {
    pub minimum: Bound,
    pub maximum: Bound,
    /// The target's `max_workers`: never more live pilots in total.
    pub max_workers: u32,
    /// Scale up only when the work would keep at least this share of the
    /// pilots' slots busy (seed: 0.8).
    pub scale_up_threshold: f64,
    /// Scale down only when the work would keep at most this share busy
    /// (seed: 0.2).
    pub scale_down_threshold: f64,
    /// After any change to a group, and for how long a pilot must have been
    /// idle, before the group shrinks (seed: 120 s).
    pub cooldown_seconds: u64,
    /// The backlog should be done within this (Dask's `target-duration`):
    /// tasks shorter than it share a slot, longer ones get one each.
    pub target_duration_seconds: f64,
    /// Evaluations in a row that must ask for fewer pilots before any is
    /// removed (Dask's `wait-count`).
    pub scale_down_evaluations: u32,
    /// The first provider failure delays the next start this long; each
    /// further failure doubles it, up to `backoff_max_seconds`.
    pub backoff_base_seconds: u64,
    pub backoff_max_seconds: u64,
    /// After this many failures in a row the scaler pauses (the state says
    /// so until a start succeeds); 0: never pause, keep backing off.
    pub failure_limit: u32,
}

impl Default for ScalerConfig {
    fn default() -> ScalerConfig {
        ScalerConfig {
            minimum: Bound::Target(0),
            maximum: Bound::Target(1),
            max_workers: 1,
            scale_up_threshold: 0.8,
            scale_down_threshold: 0.2,
            cooldown_seconds: 120,
            target_duration_seconds: 5.0,
            scale_down_evaluations: 3,
            backoff_base_seconds: 10,
            backoff_max_seconds: 900,
            failure_limit: 10,
        }
    }
}

impl ScalerConfig {
    /// The settings of a target that declares `adaptive:`, with the seed's
    /// thresholds and cooldown (the manifest carries only the bounds today).
    pub fn for_target(t: &Target) -> Option<ScalerConfig> {
        let a = t.adaptive?;
        Some(ScalerConfig {
            minimum: Bound::Target(a.minimum),
            maximum: Bound::Target(a.maximum),
            max_workers: t.max_workers.max(a.maximum),
            ..ScalerConfig::default()
        })
    }

    /// The wait before the next start after `failures` failures in a row.
    pub fn backoff_ms(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(30);
        let s = self
            .backoff_base_seconds
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_seconds);
        s.saturating_mul(1000)
    }
}
