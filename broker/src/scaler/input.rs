//! What one evaluation reads: the demand per tag, the target's pilot groups
//! (one [`AgentShape`] each), its pilots as the scaler sees them (pending,
//! busy, idle since when), predicted run times, the settings and memory.
//!
//! Plain data plus [`pilot_views`], which turns the fleet's records and the
//! core's agents into [`PilotView`]s. It must not decide anything.

use std::collections::BTreeMap;

use scalable_common::explain::{AgentShape, Demand};
use scalable_common::manifest::{Manifest, Target};
use scalable_common::protocol::{AgentId, AgentInfo, PilotInfo, PilotPhase};
use serde::{Deserialize, Serialize};

use super::config::ScalerConfig;
use super::memory::ScalerMemory;

/// The label of a group with no tag (a generic pool that serves every tag),
/// in the decision's maps and the stored rows.
pub const GENERIC_LABEL: &str = "*";

/// A group's key in `workers_to_add`/`workers_to_remove`: its tag, or `*`.
pub fn group_label(tag: Option<&str>) -> String {
    tag.unwrap_or(GENERIC_LABEL).to_string()
}

/// One pilot group of the target: the pilots of one tag and the agent each
/// of them would be (its shape, with the agent's lifetime).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PilotGroup {
    pub tag: Option<String>,
    pub shape: AgentShape,
}

/// The pilot groups of target `t`, with the shapes `submit` checks runs
/// against (`shapes::of_target`: a Slurm pilot's lifetime a minute short of
/// its walltime) and the tag its pilots are recorded with (`pilots`: the
/// component's name, the local pool's tags joined by `,`, or none).
pub fn groups_of_target(m: &Manifest, t: &Target) -> Vec<PilotGroup> {
    crate::shapes::of_target(m, t)
        .into_iter()
        .map(|shape| PilotGroup {
            tag: (!shape.tags.is_empty()).then(|| shape.tags.join(",")),
            shape,
        })
        .collect()
}

/// Where a live pilot is, as far as scaling cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum PilotStatus {
    /// Submitted or queued at the provider: cancelling it costs nothing.
    Queued,
    /// Running at the provider, its agent not connected yet.
    Connecting,
    /// Its agent runs or holds work (or is away: never removed).
    Busy { agent: AgentId },
    /// Its agent holds no work, since `since_ms`.
    Idle { agent: AgentId, since_ms: u64 },
    /// Asked to leave: no longer counted.
    Draining,
}

impl PilotStatus {
    /// No agent yet: it will serve the group once it connects.
    pub fn pending(self) -> bool {
        matches!(self, PilotStatus::Queued | PilotStatus::Connecting)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PilotView {
    pub id: String,
    pub tag: Option<String>,
    pub submitted_at_ms: u64,
    #[serde(flatten)]
    pub status: PilotStatus,
}

/// Predicted run times: seconds per task type, keyed by tag (the component a
/// task runs on: what `Core::demand` counts by); measured medians until the
/// advisors give more. A tag with none is sized as if each task took the
/// whole target duration (one slot per task), with lower confidence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Predictions {
    pub run_seconds: BTreeMap<String, f64>,
    /// How long a new pilot takes to connect (median queue wait), if known.
    pub pilot_start_seconds: Option<f64>,
}

impl Predictions {
    /// From `store::measured_medians`: seconds per tag label and the median
    /// pilot queue wait.
    pub fn measured(run_seconds: BTreeMap<String, f64>, pilot_start_seconds: Option<f64>) -> Self {
        Predictions {
            run_seconds,
            pilot_start_seconds,
        }
    }

    pub fn for_tag(&self, tag: Option<&str>) -> Option<f64> {
        self.run_seconds
            .get(&group_label(tag))
            .copied()
            .filter(|s| s.is_finite() && *s > 0.0)
    }
}

/// Everything `decide` reads. Serialised as the stored decision's inputs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ScaleInput<'a> {
    pub target: &'a str,
    /// `Core::demand(now, shapes)` with the shapes of `groups`, in order.
    pub demand: &'a Demand,
    pub groups: &'a [PilotGroup],
    /// The target's live pilots.
    pub pilots: &'a [PilotView],
    pub predictions: &'a Predictions,
    pub config: &'a ScalerConfig,
    pub memory: &'a ScalerMemory,
}

/// The target's live pilots as the scaler sees them. Idle times are kept in
/// `memory` (the core does not track them): a pilot is idle since the first
/// evaluation that saw its agent hold no work.
pub fn pilot_views(
    pilots: &[PilotInfo],
    agents: &[AgentInfo],
    memory: &mut ScalerMemory,
    now_ms: u64,
) -> Vec<PilotView> {
    let mut views = Vec::new();
    let mut idle_since = BTreeMap::new();
    for p in pilots.iter().filter(|p| p.state.is_live()) {
        let agent = p
            .agent
            .and_then(|id| agents.iter().find(|a| a.id == id && a.connected));
        let status = match (p.state, p.agent, agent) {
            (PilotPhase::Draining, _, _) => PilotStatus::Draining,
            (PilotPhase::Running, None, _) => PilotStatus::Connecting,
            (_, None, _) => PilotStatus::Queued,
            (_, Some(id), Some(a)) if a.running + a.queued == 0 => {
                let since_ms = memory.idle_since.get(&p.id).copied().unwrap_or(now_ms);
                idle_since.insert(p.id.clone(), since_ms);
                PilotStatus::Idle {
                    agent: id,
                    since_ms,
                }
            }
            (_, Some(id), _) => PilotStatus::Busy { agent: id },
        };
        views.push(PilotView {
            id: p.id.clone(),
            tag: p.tag.clone(),
            submitted_at_ms: p.submitted_at_ms,
            status,
        });
    }
    // Busy or gone pilots forget their idle time: idleness must be unbroken.
    memory.idle_since = idle_since;
    views
}
