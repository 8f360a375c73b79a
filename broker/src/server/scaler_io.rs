//! The scaler's shell (issue 18): on the core task's tick, every
//! [`EVALUATE_EVERY_MS`], it gathers the scaler's inputs (`Core::demand` for
//! the target's pilot shapes, the fleet's pilots with the starts still under
//! way counted as queued, the core's agents, measured run times and queue
//! waits refreshed off the core every [`PREDICTIONS_EVERY_MS`]), evaluates
//! the [`Scaler`], queues the stored decision, applies it on `scale`'s path
//! (`fleet_io::apply_decision`), feeds the provider's answers back into the
//! backoff, and queues each decision's outcome as it becomes known
//! ([`OutcomeBook`]).
//!
//! It must not decide (the `scaler` module does), block (the provider and
//! the store's reads run elsewhere) or write the store itself (its rows go
//! out as `StoreOp`s with the batch).

use std::sync::{Arc, Mutex};

use scalable_common::explain::AgentShape;
use scalable_common::protocol::{PilotInfo, PilotPhase};
use tokio::sync::mpsc;

use super::fleet_io::{self, FleetCtx, Starting};
use super::CoreMsg;
use crate::core::{Core, StoreOp};
use crate::providers::StartedPilot;
use crate::scaler::{groups_of_target, OutcomeBook, PilotGroup, Predictions, Scaler, ScalerConfig};
use crate::store::{self, Store};

/// How often the scaler evaluates (Parsl: 5 s; Dask: 1 s).
pub const EVALUATE_EVERY_MS: u64 = 1_000;
/// How often measured run times and queue waits are read again.
pub const PREDICTIONS_EVERY_MS: u64 = 60_000;

/// The scaler of the broker's target and what its shell keeps.
pub(super) struct ScalerIo {
    scaler: Scaler,
    groups: Vec<PilotGroup>,
    shapes: Vec<AgentShape>,
    predictions: Predictions,
    /// Filled by the last read of the store, taken at the next evaluation.
    fresh: Arc<Mutex<Option<Predictions>>>,
    last_eval_ms: Option<u64>,
    last_read_ms: Option<u64>,
    /// Starts asked of the provider, not answered yet (with the decision).
    starting: Vec<Starting>,
    book: OutcomeBook,
}

/// What a scaler evaluation works on (the core task's parts).
pub(super) struct Cx<'a> {
    pub core: &'a mut Core,
    pub fleet: &'a mut FleetCtx,
    pub store: &'a Store,
    pub to_core: &'a mpsc::WeakUnboundedSender<CoreMsg>,
    pub ops: &'a mut Vec<StoreOp>,
}

impl ScalerIo {
    /// The scaler of the fleet's target when it declares `adaptive:` or
    /// `flag` (`scalable-broker --adaptive`) asks for one.
    pub(super) fn new(fleet: &FleetCtx, flag: bool) -> Option<ScalerIo> {
        let m = fleet.manifest();
        let t = m.target(fleet.target())?;
        let config = match ScalerConfig::for_target(t) {
            Some(c) => c,
            None if flag => ScalerConfig::for_flag(t),
            None => return None,
        };
        let groups = groups_of_target(m, t);
        tracing::info!(
            "scaler: target {} adapts between {:?} and {:?} pilots (up at {}, down at {}, cooldown {} s), {} group(s)",
            t.name,
            config.minimum,
            config.maximum,
            config.scale_up_threshold,
            config.scale_down_threshold,
            config.cooldown_seconds,
            groups.len()
        );
        Some(ScalerIo {
            scaler: Scaler::new(config),
            shapes: groups.iter().map(|g| g.shape.clone()).collect(),
            groups,
            predictions: Predictions::default(),
            fresh: Arc::default(),
            last_eval_ms: None,
            last_read_ms: None,
            starting: Vec::new(),
            book: OutcomeBook::default(),
        })
    }

    /// The tick hook: one evaluation every [`EVALUATE_EVERY_MS`].
    pub(super) fn tick(&mut self, cx: Cx, now: u64) {
        if self
            .last_eval_ms
            .is_some_and(|l| now.saturating_sub(l) < EVALUATE_EVERY_MS)
        {
            return;
        }
        self.last_eval_ms = Some(now);
        self.read_predictions(cx.store, cx.fleet.target(), now);
        let agents = cx.core.agent_infos();
        let mut pilots = cx.fleet.pilot_infos();
        for (at_ms, o) in self.book.observe(&pilots, &agents, now) {
            cx.ops.push(StoreOp::ScalingOutcome {
                target: cx.fleet.target().to_string(),
                at_ms,
                outcome: o,
            });
        }
        pilots.extend(self.under_way(cx.fleet.target(), now));
        let demand = cx.core.demand(now, &self.shapes);
        let target = cx.fleet.target().to_string();
        let eval = self.scaler.evaluate(
            &target,
            &demand,
            &self.groups,
            &pilots,
            &agents,
            &self.predictions,
            now,
        );
        let mut d = eval.decision;
        let Some(record) = eval.record else {
            return; // nothing changes and the state is as last stored
        };
        // A start under way has no provider id yet: it is never cancelled.
        let under_way: Vec<&String> = self.starting.iter().flat_map(|s| &s.ids).collect();
        d.cancel.retain(|p| !under_way.contains(&p));
        cx.ops.push(StoreOp::ScalingDecision(Box::new(record)));
        if d.has_changes() {
            tracing::info!("scaler: {}", d.reasoning);
        }
        let mut asked = Vec::new();
        for r in fleet_io::apply_decision(cx.core, cx.fleet, &d, cx.to_core, cx.ops) {
            match r {
                Ok(s) => {
                    asked.extend(s.ids.iter().map(|id| (id.clone(), s.price_per_hour)));
                    self.starting.push(s);
                }
                Err(e) => {
                    tracing::warn!("scaler: cannot start pilots of target {target}: {e}");
                    self.scaler.provider_failed(&e, now);
                }
            }
        }
        if let Some(o) = self
            .book
            .decided(&d, &asked, &self.scaler.memory.idle_since)
        {
            cx.ops.push(StoreOp::ScalingOutcome {
                target,
                at_ms: d.at_ms,
                outcome: o,
            });
        }
    }

    /// The provider answered a start. `for_scaler`: the scaler asked for it
    /// (a `scale` the CLI asked for only ends a backoff when it succeeds).
    pub(super) fn started(
        &mut self,
        tag: Option<&str>,
        result: &Result<Vec<StartedPilot>, String>,
        for_scaler: bool,
        now: u64,
    ) {
        if !for_scaler {
            if result.is_ok() {
                self.scaler.provider_succeeded();
            }
            return;
        }
        let ids: Vec<String> = match result {
            Ok(started) => started.iter().map(|s| s.pilot_id.clone()).collect(),
            Err(_) => Vec::new(),
        };
        // Ours with these ids; a failure names none: the oldest of its tag.
        let at = self
            .starting
            .iter()
            .position(|s| s.ids.iter().any(|id| ids.contains(id)))
            .or_else(|| self.starting.iter().position(|s| s.tag.as_deref() == tag));
        if let Some(i) = at {
            let s = self.starting.remove(i);
            self.book.answered(&s.ids, &ids);
        }
        match result {
            Ok(_) => self.scaler.provider_succeeded(),
            Err(e) => {
                tracing::warn!("scaler: the provider could not start pilots: {e}");
                self.scaler.provider_failed(e, now);
            }
        }
    }

    /// Starts under way as the queued pilots they will be.
    fn under_way(&self, target: &str, now: u64) -> Vec<PilotInfo> {
        self.starting
            .iter()
            .flat_map(|s| {
                s.ids.iter().map(move |id| PilotInfo {
                    id: id.clone(),
                    target: target.to_string(),
                    tag: s.tag.clone(),
                    provider_id: String::new(),
                    state: PilotPhase::Submitted,
                    agent: None,
                    submitted_at_ms: now,
                    connected_at_ms: None,
                    ended_at_ms: None,
                    reason: None,
                })
            })
            .collect()
    }

    /// Takes the last read's predictions and, every
    /// [`PREDICTIONS_EVERY_MS`], reads them again on the store's thread.
    fn read_predictions(&mut self, store: &Store, target: &str, now: u64) {
        if let Some(p) = self.fresh.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.predictions = p;
        }
        if self
            .last_read_ms
            .is_some_and(|l| now.saturating_sub(l) < PREDICTIONS_EVERY_MS)
        {
            return;
        }
        self.last_read_ms = Some(now);
        let (store, slot, target) = (store.clone(), self.fresh.clone(), target.to_string());
        tokio::spawn(async move {
            match store
                .query(move |c| store::measured_medians(c, &target))
                .await
            {
                Ok(Ok((runs, wait))) => {
                    let p = Predictions::measured(runs, wait);
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
                }
                Ok(Err(e)) => tracing::warn!("scaler: reading measured run times: {e}"),
                Err(_) => {} // the store stopped: the broker is going away
            }
        });
    }
}
