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
    /// The settings of a target that declares `adaptive:`: its bounds, and
    /// its thresholds and cooldown where given (the seed's defaults where not).
    pub fn for_target(t: &Target) -> Option<ScalerConfig> {
        let a = t.adaptive?;
        let d = ScalerConfig::default();
        let share = |permille: Option<u32>, default: f64| {
            permille.map_or(default, |p| f64::from(p) / 1000.0)
        };
        Some(ScalerConfig {
            minimum: Bound::Target(a.minimum),
            maximum: Bound::Target(a.maximum),
            max_workers: t.max_workers.max(a.maximum),
            scale_up_threshold: share(a.scale_up_permille, d.scale_up_threshold),
            scale_down_threshold: share(a.scale_down_permille, d.scale_down_threshold),
            cooldown_seconds: a
                .cooldown_ms
                .map_or(d.cooldown_seconds, |ms| ms.div_ceil(1000)),
            ..d
        })
    }

    /// `scalable-broker --adaptive` on a target without `adaptive:`: from
    /// none up to its `max_workers`, the seed's thresholds and cooldown.
    pub fn for_flag(t: &Target) -> ScalerConfig {
        ScalerConfig::for_target(t).unwrap_or(ScalerConfig {
            minimum: Bound::Target(0),
            maximum: Bound::Target(t.max_workers),
            max_workers: t.max_workers,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target(adaptive: &str) -> Target {
        let text = format!(
            "version: 1\nproject: {{name: p}}\ntargets:\n  lab:\n    provider: local\n    max_workers: 6\n{adaptive}"
        );
        let opts = scalable_common::manifest::LoadOptions {
            target: None,
            overlays: &[],
            env: &|_: &str| None,
        };
        let m = scalable_common::manifest::load_manifest("m.yaml", &text, &opts).unwrap();
        m.target("lab").unwrap().clone()
    }

    #[test]
    fn the_manifest_tunes_thresholds_and_cooldown_and_the_rest_keeps_the_seeds() {
        let tuned = target(
            "    adaptive: {minimum: 1, maximum: 6, scale_up_threshold: 0.5, scale_down_threshold: 0.1, cooldown: 3s}\n",
        );
        let c = ScalerConfig::for_target(&tuned).unwrap();
        assert_eq!((c.scale_up_threshold, c.scale_down_threshold), (0.5, 0.1));
        assert_eq!(c.cooldown_seconds, 3);
        let plain = ScalerConfig::for_target(&target("    adaptive: {maximum: 4}\n")).unwrap();
        let seed = ScalerConfig::default();
        assert_eq!(
            (plain.scale_up_threshold, plain.scale_down_threshold),
            (seed.scale_up_threshold, seed.scale_down_threshold)
        );
        assert_eq!(plain.cooldown_seconds, 120);
        assert_eq!(plain.minimum, Bound::Target(0));
        // --adaptive on a target without the block: none up to max_workers.
        let flag = ScalerConfig::for_flag(&target(""));
        assert_eq!(
            (flag.minimum, flag.maximum),
            (Bound::Target(0), Bound::Target(6))
        );
    }
}
