//! The shell's side of the broker's pilots (`--manifest FILE --target T`):
//! carrying out `scale` (drains on the core, starts and stops through the
//! provider on blocking threads), the periodic reconciliation with the
//! provider, and matching a connecting agent to its pilot.
//!
//! The decisions are `fleet`'s (`plan_scale`, `reconcile`, `agent_connected`,
//! sync and I/O-free); this module only calls the provider and reports back
//! to the core task with `CoreMsg::FleetStarted` and `CoreMsg::FleetStatus`.
//! It must not write the store itself: its pilot records go out as
//! `StoreOp`s with the batch.

use std::sync::Arc;

use anyhow::{Context, Result};
use scalable_common::access;
use scalable_common::manifest::{Manifest, Provider};
use scalable_common::protocol::{
    AgentHello, AgentId, AgentInfo, PilotInfo, Response, ScaleChange, ScaleReport,
};
use scalable_common::tls;
use tokio::sync::{mpsc, oneshot};

use super::routing::Deferred;
use super::{bad, BrokerConfig, CoreMsg};
use crate::agent_binary::AgentLocation;
use crate::core::{Core, StoreOp};
use crate::fleet::{Fleet, Pilot, PilotLink, ScalePlan};
use crate::pilots;
use crate::providers::{self, DeploymentProvider, PilotState, StartRequest, StartedPilot};
use crate::render::PilotSpec;
use crate::scaler::ScaleDecision;
use crate::store::Loaded;

/// How often live pilots are checked with their provider (one batched call).
const RECONCILE_EVERY_MS: u64 = 5_000;

/// The broker's pilots and the provider that runs them (a `--target` was given).
pub(super) struct FleetCtx {
    fleet: Fleet,
    provider: Arc<dyn DeploymentProvider>,
    manifest: Arc<Manifest>,
    access: pilots::BrokerAccess,
    reconcile_in_flight: bool,
    last_reconcile_ms: u64,
}

impl FleetCtx {
    /// The fleet of `--target` with its stored pilots (taken out of `loaded`),
    /// or `None` when the broker owns no pilots.
    pub(super) fn open(
        cfg: &BrokerConfig,
        address: &str,
        identity: &tls::BrokerIdentity,
        files: &access::StateFiles,
        loaded: &mut Loaded,
    ) -> Result<Option<FleetCtx>> {
        let (Some(m), Some(t)) = (&cfg.manifest, &cfg.target) else {
            return Ok(None);
        };
        let target = m
            .target(t)
            .with_context(|| format!("the manifest has no target {t}"))?;
        let agent = AgentLocation::resolve(cfg.agent_exe.as_deref());
        if matches!(
            target.provider,
            Provider::Local { .. } | Provider::Slurm { .. }
        ) {
            tracing::info!("pilots of target {t} run {}", agent.shared.describe());
        }
        let mut ctx = providers::ProviderContext::new(cfg.state_dir.join("pilots"));
        ctx.aws_endpoint_url = std::env::var("AWS_ENDPOINT_URL").ok();
        let known: Vec<Pilot> = std::mem::take(&mut loaded.pilots)
            .into_iter()
            .filter(|(p, _)| &p.target == t)
            .filter_map(|(p, m)| Pilot::from_stored(p, &m))
            .collect();
        let provider: Arc<dyn DeploymentProvider> =
            Arc::from(providers::provider_for(target, &ctx));
        let mut fleet = Fleet::new(t, known);
        fleet.provider = Some(provider.kind());
        Ok(Some(FleetCtx {
            fleet,
            provider,
            manifest: m.clone(),
            access: pilots::BrokerAccess {
                address: address.to_string(),
                fingerprint: identity.fingerprint(),
                token_file: std::path::absolute(&files.agent_token)
                    .unwrap_or_else(|_| files.agent_token.clone())
                    .display()
                    .to_string(),
                agent,
            },
            reconcile_in_flight: false,
            last_reconcile_ms: 0,
        }))
    }
}

/// `scalable pilots`: the pilots this broker knows (none without a target).
pub(super) fn pilots(fleet: Option<&FleetCtx>) -> Response {
    Response::Pilots(fleet.map(|f| f.fleet.infos()).unwrap_or_default())
}

/// `scalable scale` as the core task received it.
pub(super) struct ScaleReq {
    pub target: String,
    pub tag: Option<String>,
    pub change: ScaleChange,
    pub force: bool,
    pub dry_run: bool,
}

/// Plans a `scale` and carries out what needs no waiting (drains, stops on a
/// blocking thread); pilots to start go to the provider on a blocking thread,
/// and the reply follows with `CoreMsg::FleetStarted`. Returns the reply when
/// it is ready now.
pub(super) fn scale(
    core: &mut Core,
    fleet: Option<&mut FleetCtx>,
    req: ScaleReq,
    reply: oneshot::Sender<Response>,
    to_core: &mpsc::WeakUnboundedSender<CoreMsg>,
    ops: &mut Vec<StoreOp>,
) -> Option<Deferred> {
    let (f, spec) = match scale_spec(fleet, &req) {
        Ok(x) => x,
        Err(message) => return Some(Deferred::Reply(reply, bad(message))),
    };
    let tag = spec.tag.clone();
    let plan = f
        .fleet
        .plan_scale(tag.as_deref(), req.change, &core.agent_infos(), req.force);
    let mut report = ScaleReport {
        target: req.target.clone(),
        tag: tag.clone(),
        dry_run: req.dry_run,
        before: plan.before,
        after: plan.after,
        cancelled: plan.cancel.clone(),
        drained: plan.drain.iter().map(|(p, _)| p.clone()).collect(),
        killed: plan.kill.clone(),
        kept_busy: plan.kept_busy,
        ..ScaleReport::default()
    };
    if req.dry_run {
        let resp = match dry_run_commands(f, &plan, spec) {
            Ok(commands) => {
                report.commands = commands;
                Response::Scaled(report)
            }
            Err(message) => bad(message),
        };
        return Some(Deferred::Reply(reply, resp));
    }
    scale_down(core, f, &plan, ops);
    if plan.start == 0 {
        return Some(Deferred::Reply(reply, Response::Scaled(report)));
    }
    let ids = f.fleet.new_ids(plan.start);
    // A table lookup: what each of these pilots costs an hour (telemetry).
    let price = f.provider.estimate_cost(&spec, 1, 1.0).per_pilot_hour;
    f.fleet.set_price(tag.as_deref(), price);
    spawn_start(f, ids, spec, tag, report, Some(reply), to_core);
    None
}

impl FleetCtx {
    pub(super) fn target(&self) -> &str {
        &self.fleet.target
    }

    pub(super) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Every pilot this broker knows, as `scalable pilots` shows them.
    pub(super) fn pilot_infos(&self) -> Vec<PilotInfo> {
        self.fleet.infos()
    }
}

/// Pilots the scaler asked the provider for, not yet recorded.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Starting {
    pub tag: Option<String>,
    pub ids: Vec<String>,
    /// What one of them costs an hour, as the provider estimates it.
    pub price_per_hour: Option<f64>,
}

/// Carries out the scaler's decision on the path `scale` takes: drains and
/// cancels now (`scale_down`), starts on a blocking thread whose outcome
/// comes back as a `CoreMsg::FleetStarted` without a reply. Returns the
/// starts under way, or per group why one could not be asked for.
pub(super) fn apply_decision(
    core: &mut Core,
    f: &mut FleetCtx,
    d: &ScaleDecision,
    to_core: &mpsc::WeakUnboundedSender<CoreMsg>,
    ops: &mut Vec<StoreOp>,
) -> Vec<Result<Starting, String>> {
    let plan = ScalePlan {
        cancel: d.cancel.clone(),
        drain: d.drain.clone(),
        ..ScalePlan::default()
    };
    scale_down(core, f, &plan, ops);
    let mut out = Vec::new();
    for g in d.groups.iter().filter(|g| g.add > 0) {
        let target = f.fleet.target.clone();
        let spec = match pilots::pilot_specs(&f.manifest, &target, g.tag.as_deref(), &f.access) {
            Ok(mut specs) if !specs.is_empty() => specs.remove(0),
            Ok(_) => {
                out.push(Err(format!("no pilot group for tag {}", g.label)));
                continue;
            }
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        let tag = spec.tag.clone();
        let ids = f.fleet.new_ids(g.add);
        let price = f.provider.estimate_cost(&spec, 1, 1.0).per_pilot_hour;
        f.fleet.set_price(tag.as_deref(), price);
        let report = ScaleReport {
            target,
            tag: tag.clone(),
            ..ScaleReport::default()
        };
        spawn_start(f, ids.clone(), spec, tag.clone(), report, None, to_core);
        out.push(Ok(Starting {
            tag,
            ids,
            price_per_hour: price,
        }));
    }
    out
}

/// The fleet and the pilot group a `scale` request is about, or why not.
fn scale_spec<'f>(
    fleet: Option<&'f mut FleetCtx>,
    req: &ScaleReq,
) -> Result<(&'f mut FleetCtx, PilotSpec), String> {
    let Some(f) = fleet else {
        return Err("this broker owns no pilots (start it with --manifest FILE --target T)".into());
    };
    if req.target != f.fleet.target {
        return Err(format!(
            "this broker runs target {}, not {} (start another broker for that target)",
            f.fleet.target, req.target
        ));
    }
    match pilots::pilot_specs(&f.manifest, &req.target, req.tag.as_deref(), &f.access) {
        Ok(mut specs) if !specs.is_empty() => Ok((f, specs.remove(0))),
        Ok(_) => Err("no pilot group for that tag".into()),
        Err(e) => Err(e),
    }
}

/// The commands a `scale --dry-run` would run to start its pilots.
fn dry_run_commands(
    f: &FleetCtx,
    plan: &ScalePlan,
    spec: PilotSpec,
) -> Result<Vec<String>, String> {
    let ids: Vec<String> = (1..=plan.start).map(|i| format!("p-new{i}")).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let r = StartRequest {
        pilot_ids: ids,
        spec,
        dry_run: true,
    };
    f.provider.commands(&r).map_err(|e| e.to_string())
}

/// Drains, cancels and kills what the plan gives up; the provider stops
/// pilots on a blocking thread, nobody waits for it.
fn scale_down(core: &mut Core, f: &mut FleetCtx, plan: &ScalePlan, ops: &mut Vec<StoreOp>) {
    let stop_ids: Vec<String> = plan
        .cancel
        .iter()
        .chain(&plan.kill)
        .filter_map(|p| f.fleet.provider_id(p))
        .collect();
    for (pilot, agent) in &plan.drain {
        core.drain_agent(*agent, &format!("pilot {pilot} scaled down"));
    }
    let drained: Vec<String> = plan.drain.iter().map(|(p, _)| p.clone()).collect();
    ops.extend(f.fleet.leaving(&drained, "scaled down: idle agent drained"));
    ops.extend(
        f.fleet
            .leaving(&plan.cancel, "scaled down: cancelled before it connected"),
    );
    ops.extend(f.fleet.leaving(&plan.kill, "scaled down with --force"));
    if !stop_ids.is_empty() {
        let provider = f.provider.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = provider.stop(&stop_ids) {
                tracing::warn!("stopping pilots {stop_ids:?}: {e}");
            }
        });
    }
}

/// Starts pilots through the provider on a blocking thread; the core task
/// hears the outcome (and replies, if a CLI asked) with `CoreMsg::FleetStarted`.
fn spawn_start(
    f: &FleetCtx,
    ids: Vec<String>,
    spec: PilotSpec,
    tag: Option<String>,
    report: ScaleReport,
    reply: Option<oneshot::Sender<Response>>,
    to_core: &mpsc::WeakUnboundedSender<CoreMsg>,
) {
    let provider = f.provider.clone();
    let to_core = to_core.clone();
    tokio::spawn(async move {
        let r = StartRequest {
            pilot_ids: ids,
            spec,
            dry_run: false,
        };
        let result = tokio::task::spawn_blocking(move || {
            let started = provider.start(&r);
            // Tests hold open the window in which a pilot's agent connects
            // before its pilot is recorded.
            scalable_common::failpoint::hit("fleet.after_start");
            started
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        if let Some(tx) = to_core.upgrade() {
            let _ = tx.send(CoreMsg::FleetStarted {
                tag,
                result,
                report: Box::new(report),
                reply,
            });
        }
    });
}

/// The reply to a `scale` whose pilots the provider started (or failed to);
/// the started pilots' records join `ops`, linked to their agents that
/// connected before them (`agents`: the core's).
pub(super) fn started(
    fleet: Option<&mut FleetCtx>,
    tag: Option<String>,
    result: Result<Vec<StartedPilot>, String>,
    mut report: ScaleReport,
    agents: &[AgentInfo],
    now: u64,
    ops: &mut Vec<StoreOp>,
) -> Response {
    match (result, fleet) {
        (Ok(started), Some(f)) => {
            ops.extend(f.fleet.started(tag.as_deref(), &started, now));
            for link in f.fleet.link_connected(agents) {
                ops.extend(linked(link, now));
            }
            for s in &started {
                report
                    .started
                    .push((s.pilot_id.clone(), s.provider_id.clone()));
                report.commands.extend(s.commands.iter().cloned());
            }
            report.commands.dedup();
            Response::Scaled(report)
        }
        (Err(e), _) => Response::Error {
            message: e,
            exit_code: 1,
        },
        (Ok(_), None) => bad("this broker has no target".into()),
    }
}

/// One batched status call for every live pilot, at most every
/// `RECONCILE_EVERY_MS` (the provider rate-limits further).
pub(super) fn reconcile(f: &mut FleetCtx, to_core: &mpsc::WeakUnboundedSender<CoreMsg>, now: u64) {
    if f.reconcile_in_flight || now.saturating_sub(f.last_reconcile_ms) < RECONCILE_EVERY_MS {
        return;
    }
    let ids = f.fleet.live_provider_ids();
    if ids.is_empty() {
        return;
    }
    f.reconcile_in_flight = true;
    f.last_reconcile_ms = now;
    let provider = f.provider.clone();
    let to_core = to_core.clone();
    tokio::spawn(async move {
        let result = tokio::task::spawn_blocking(move || provider.status(&ids))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Some(tx) = to_core.upgrade() {
            let _ = tx.send(CoreMsg::FleetStatus(result));
        }
    });
}

/// The provider's answer to `reconcile`: pilot records that changed join `ops`.
pub(super) fn status(
    f: &mut FleetCtx,
    result: Result<Vec<(String, PilotState)>, String>,
    now: u64,
    ops: &mut Vec<StoreOp>,
) {
    f.reconcile_in_flight = false;
    match result {
        Ok(states) => {
            let changed = f.fleet.reconcile(&states, now);
            for op in &changed {
                if let StoreOp::Pilot { info: p, .. } = op {
                    tracing::info!("pilot {} ({}) is {}", p.id, p.provider_id, p.state);
                }
            }
            ops.extend(changed);
        }
        Err(e) => tracing::warn!("checking pilots: {e}"),
    }
}

/// A pilot's record now that its agent is linked, and the event saying so.
fn linked(link: PilotLink, now: u64) -> [StoreOp; 2] {
    let PilotLink {
        pilot,
        agent,
        wait_ms,
        row,
    } = link;
    tracing::info!("agent {agent} is pilot {pilot} (queue wait {wait_ms} ms)");
    [
        row,
        StoreOp::Event {
            at_ms: now,
            kind: crate::core::EventKind::PilotConnected,
            run: None,
            detail: format!(
                "pilot {pilot}: agent {agent} connected after {wait_ms} ms in the queue"
            ),
        },
    ]
}

/// Matches a connecting agent to its pilot; an agent no pilot of ours explains
/// is recorded as unmanaged.
pub(super) fn agent_connected(
    f: &mut FleetCtx,
    hello: &AgentHello,
    agent: AgentId,
    now: u64,
) -> Vec<StoreOp> {
    let Some(reported) = hello.pilot_id.as_deref() else {
        return Vec::new();
    };
    match f.fleet.agent_connected(reported, agent, now) {
        Some(link) => linked(link, now).into(),
        None => {
            tracing::info!("agent {agent} says pilot {reported:?}, which this broker did not submit (unmanaged, unless its pilot is being recorded)");
            vec![StoreOp::Event {
                at_ms: now,
                kind: crate::core::EventKind::UnmanagedAgent,
                run: None,
                detail: format!("agent {agent} reports pilot {reported:?}, unknown to this broker"),
            }]
        }
    }
}
