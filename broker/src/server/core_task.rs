//! The core task: the one tokio task that owns the [`Core`], the fleet and
//! the senders of connected agents. It takes [`CoreMsg`]s in batches, hands
//! each to its own function, then schedules once, queues the batch's writes
//! and attaches what `routing` planned as the after-commit action.
//!
//! It must not block (hashing, provider calls and reads run elsewhere) and
//! must not send anything an agent or a CLI could act on before the rows
//! behind it are committed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use scalable_common::explain::AgentShape;
use scalable_common::manifest::Manifest;
use scalable_common::protocol::{
    AgentHello, AgentId, FromAgent, Request, Response, ScaleReport, ToAgent,
};
use tokio::sync::{mpsc, oneshot};

use super::fleet_io::{self, FleetCtx};
use super::render_io::Renderer;
use super::requests::{self, RequestCtx};
use super::routing::{self, Deferred, Promotion, Routed, Step};
use super::scaler_io::{self, ScalerIo};
use super::{cache_io, now_ms, sizing_io, CoreMsg};
use crate::advisor::table::AdvisorTable;
use crate::cache;
use crate::checkpoints::CheckpointStore;
use crate::core::{Core, StoreOp};
use crate::output_roots::OutputRoots;
use crate::providers::{PilotState, StartedPilot};
use crate::store::Store;

/// Messages the core task applies before it schedules and writes once.
const CORE_BATCH_MAX: usize = 4_096;

/// A batch at least this slow is logged (`note_slow_batch`).
const SLOW_BATCH: std::time::Duration = std::time::Duration::from_millis(100);

/// What the core task talks to besides the core and the fleet.
pub(super) struct Around {
    /// Weak: the loop must end when every connection and the ticker are gone.
    pub to_core: mpsc::WeakUnboundedSender<CoreMsg>,
    pub store: Store,
    pub cache_dir: PathBuf,
    /// Where kept checkpoints live (`crate::checkpoints`).
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub stop: mpsc::UnboundedSender<()>,
    pub manifest: Option<Arc<Manifest>>,
    /// The agents this broker could still start (`crate::shapes`).
    pub shapes: Vec<AgentShape>,
    /// `BrokerConfig::adaptive`: the scaler runs for the fleet's target.
    pub adaptive: bool,
    /// The trained advisors that size `auto` tasks (`sizing_io`).
    pub advisors: Arc<AdvisorTable>,
    /// Transfers under way, for `why` (`transfer_board`).
    pub transfers: Arc<super::transfer_board::TransferBoard>,
}

/// A connected agent: its connection serial and the sender of its writer.
type Link = (u64, mpsc::UnboundedSender<ToAgent>);

struct CoreTask {
    core: Core,
    fleet: Option<FleetCtx>,
    scaler: Option<ScalerIo>,
    agents: HashMap<AgentId, Link>,
    to_core: mpsc::WeakUnboundedSender<CoreMsg>,
    store: Store,
    stop: mpsc::UnboundedSender<()>,
    manifest: Option<Arc<Manifest>>,
    shapes: Vec<AgentShape>,
    blobs: Arc<cache::Blobs>,
    checkpoints: Arc<dyn CheckpointStore>,
    transfers: Arc<super::transfer_board::TransferBoard>,
    renderer: Renderer,
    advisors: Arc<AdvisorTable>,
    pending_records: Arc<cache_io::PendingRecords>,
    last_heartbeat: u64,
    heartbeat_ms: u64,
}

/// What one batch gathers besides the core's effects.
struct Batch {
    now: u64,
    /// CLI replies and reads, released after the batch's commit.
    deferred: Vec<Deferred>,
    /// Pilot records and events from the fleet, written with this batch.
    ops: Vec<StoreOp>,
}

/// Runs the core until every sender of `rx` is gone.
pub(super) async fn run(
    core: Core,
    mut rx: mpsc::UnboundedReceiver<CoreMsg>,
    around: Around,
    fleet: Option<FleetCtx>,
) {
    let heartbeat_ms = core.config().heartbeat_interval_ms.max(100);
    let output_roots = OutputRoots::from_manifest(around.manifest.as_deref());
    let scaler = fleet
        .as_ref()
        .and_then(|f| ScalerIo::new(f, around.adaptive));
    let mut task = CoreTask {
        core,
        fleet,
        scaler,
        agents: HashMap::new(),
        to_core: around.to_core,
        store: around.store,
        stop: around.stop,
        manifest: around.manifest,
        shapes: around.shapes,
        blobs: Arc::new(cache::Blobs::new(around.cache_dir).with_output_roots(output_roots)),
        checkpoints: around.checkpoints,
        transfers: around.transfers,
        renderer: Renderer::new(),
        advisors: around.advisors,
        pending_records: Arc::default(),
        last_heartbeat: 0,
        heartbeat_ms,
    };
    let mut msgs = Vec::with_capacity(CORE_BATCH_MAX);
    while rx.recv_many(&mut msgs, CORE_BATCH_MAX).await > 0 {
        let mut batch = Batch {
            now: now_ms(),
            deferred: Vec::new(),
            ops: Vec::new(),
        };
        let (started, count) = (std::time::Instant::now(), msgs.len());
        for msg in msgs.drain(..) {
            task.dispatch(msg, &mut batch);
        }
        let applied = started.elapsed();
        task.commit(batch);
        note_slow_batch(count, applied, started.elapsed());
    }
    // Tell connected agents the broker is going away.
    for (_, tx) in task.agents.values() {
        let _ = tx.send(ToAgent::Shutdown {
            reason: "broker stopping".into(),
        });
    }
}

impl CoreTask {
    /// One function per message kind (a plain match table).
    fn dispatch(&mut self, msg: CoreMsg, b: &mut Batch) {
        match msg {
            CoreMsg::AgentConnected {
                hello,
                conn,
                tx,
                reply,
            } => self.on_agent_connected(&hello, (conn, tx), reply, b),
            CoreMsg::Agent { agent, msg } => self.on_agent(agent, msg, b.now),
            CoreMsg::AgentGone {
                agent,
                conn,
                reason,
                fatal,
            } => self.on_agent_gone(agent, conn, &reason, fatal, b.now),
            CoreMsg::CacheAnswer {
                job,
                index,
                hit,
                key_json,
                why,
            } => self
                .core
                .cache_answer(job, index, hit, key_json, why, b.now),
            CoreMsg::Cli { req, reply } => self.on_cli(req, reply, b),
            CoreMsg::Rendered { job, index, result } => self.core.render_answer(job, index, result),
            CoreMsg::Sized(answers) => {
                for (job, index, sizing) in answers {
                    self.core.sizing_answer(job, index, sizing);
                }
            }
            CoreMsg::Submit { plan, reply } => {
                let resp = requests::submit(&mut self.core, &self.shapes, plan, b.now);
                b.deferred.push(Deferred::Reply(reply, resp));
            }
            CoreMsg::FleetStarted {
                tag,
                result,
                report,
                reply,
            } => self.on_fleet_started(tag, result, *report, reply, b),
            CoreMsg::FleetStatus(result) => self.on_fleet_status(result, b),
            CoreMsg::StageLookup {
                agent,
                attempt,
                reply,
            } => {
                let _ = reply.send(self.core.attempt_files(agent, attempt));
            }
            CoreMsg::CheckpointLookup {
                agent,
                attempt,
                reply,
            } => {
                let _ = reply.send(self.core.attempt_checkpoint(agent, attempt));
            }
            CoreMsg::Transfers {
                agent,
                attempt,
                moved,
            } => b.ops.push(crate::core::StoreOp::AttemptTransfers {
                attempt,
                agent,
                moved,
            }),
            CoreMsg::Tick => self.on_tick(b),
        }
    }

    fn on_agent_connected(
        &mut self,
        hello: &AgentHello,
        link: Link,
        reply: oneshot::Sender<AgentId>,
        b: &mut Batch,
    ) {
        let id = self.core.agent_connected(hello, b.now);
        self.agents.insert(id, link);
        let _ = reply.send(id);
        if let Some(f) = self.fleet.as_mut() {
            b.ops.extend(fleet_io::agent_connected(f, hello, id, b.now));
        }
    }

    fn on_agent(&mut self, agent: AgentId, msg: FromAgent, now: u64) {
        match msg {
            FromAgent::Events {
                started,
                finished,
                free,
            } => self
                .core
                .agent_events(agent, &started, finished, Some(free), now),
            FromAgent::Heartbeat { .. } => self.core.agent_heartbeat(agent, now),
            FromAgent::Leaving { reason } => {
                tracing::info!("agent {agent} is leaving: {reason}");
                self.core.agent_leaving(agent, &reason, now)
            }
        }
    }

    fn on_agent_gone(&mut self, agent: AgentId, conn: u64, reason: &str, fatal: bool, now: u64) {
        if self.agents.get(&agent).is_some_and(|(c, _)| *c != conn) {
            return; // an old connection of an agent that is back
        }
        self.agents.remove(&agent);
        if fatal {
            self.core.agent_lost(agent, reason, now);
        } else {
            self.core.agent_disconnected(agent, now);
        }
    }

    fn on_cli(&mut self, req: Request, reply: oneshot::Sender<Response>, b: &mut Batch) {
        let cx = RequestCtx {
            core: &mut self.core,
            fleet: self.fleet.as_mut(),
            manifest: self.manifest.as_deref(),
            shapes: &self.shapes,
            to_core: &self.to_core,
            stop: &self.stop,
            ops: &mut b.ops,
            transfers: &self.transfers,
            now: b.now,
        };
        if let Some(d) = requests::handle(cx, req, reply) {
            b.deferred.push(d);
        }
    }

    fn on_fleet_started(
        &mut self,
        tag: Option<String>,
        result: Result<Vec<StartedPilot>, String>,
        report: ScaleReport,
        reply: Option<oneshot::Sender<Response>>,
        b: &mut Batch,
    ) {
        if let Some(s) = self.scaler.as_mut() {
            s.started(tag.as_deref(), &result, reply.is_none(), b.now);
        }
        let agents = self.core.agent_infos();
        let resp = fleet_io::started(
            self.fleet.as_mut(),
            tag,
            result,
            report,
            &agents,
            b.now,
            &mut b.ops,
        );
        if let Some(reply) = reply {
            b.deferred.push(Deferred::Reply(reply, resp));
        }
    }

    fn on_fleet_status(
        &mut self,
        result: Result<Vec<(String, PilotState)>, String>,
        b: &mut Batch,
    ) {
        if let Some(f) = self.fleet.as_mut() {
            fleet_io::status(f, result, b.now, &mut b.ops);
        }
    }

    fn on_tick(&mut self, b: &mut Batch) {
        let now = b.now;
        self.core.tick(now);
        if let Some(f) = self.fleet.as_mut() {
            fleet_io::reconcile(f, &self.to_core, now);
            if let Some(s) = self.scaler.as_mut() {
                let cx = scaler_io::Cx {
                    core: &mut self.core,
                    fleet: f,
                    store: &self.store,
                    to_core: &self.to_core,
                    ops: &mut b.ops,
                };
                s.tick(cx, now);
            }
        }
        // The broker heartbeats too: an agent that hears nothing for its
        // timeout reconnects (heartbeats both ways).
        if now.saturating_sub(self.last_heartbeat) >= self.heartbeat_ms {
            self.last_heartbeat = now;
            for (_, tx) in self.agents.values() {
                let _ = tx.send(ToAgent::Heartbeat);
            }
        }
    }

    /// Schedules once for the whole batch, queues its writes with the
    /// delivery as their after-commit action, and starts the cache I/O and
    /// CLI reads the batch asked for.
    fn commit(&mut self, mut b: Batch) {
        self.core.schedule(b.now);
        if cfg!(debug_assertions) && std::env::var_os("SCALABLE_SANITY_CHECK").is_some() {
            self.core.sanity_check();
        }
        let mut fx = self.core.take_effects();
        fx.store.append(&mut b.ops);
        for probe in std::mem::take(&mut fx.cache_probe) {
            let (store, blobs, to_core) =
                (self.store.clone(), self.blobs.clone(), self.to_core.clone());
            let pending = self.pending_records.clone();
            tokio::spawn(cache_io::probe(probe, store, blobs, pending, to_core));
        }
        for req in std::mem::take(&mut fx.render) {
            self.renderer.spawn(req, self.to_core.clone());
        }
        let sizing = std::mem::take(&mut fx.sizing);
        if !sizing.is_empty() {
            sizing_io::spawn(sizing, self.advisors.clone(), self.to_core.clone());
        }
        // Registered now, before the run they end can be reported finished.
        let records: Vec<_> = std::mem::take(&mut fx.cache_record)
            .into_iter()
            .map(|r| self.pending_records.begin(r))
            .collect();
        let agents = &self.agents;
        let routed = routing::route(
            &mut fx,
            |a| agents.get(&a).map(|(_, tx)| tx.clone()),
            b.deferred,
        );
        if fx.store.is_empty() && routed.is_idle() && records.is_empty() {
            self.close(routed.disconnect);
            return;
        }
        let Routed {
            after_commit,
            queries,
            disconnect,
        } = routed;
        let (store, blobs) = (self.store.clone(), self.blobs.clone());
        let checkpoints = self.checkpoints.clone();
        let runtime = tokio::runtime::Handle::current();
        self.store.write(
            fx.store,
            Some(Box::new(move || {
                deliver(after_commit, &*checkpoints);
                // After the promotion above: the outputs are in place.
                for r in records {
                    runtime.spawn(cache_io::record(r, store.clone(), blobs.clone()));
                }
            })),
        );
        self.close(disconnect);
        for (tx, q) in queries {
            let store = self.store.clone();
            tokio::spawn(async move {
                let resp = store.query(q).await.unwrap_or_else(|e| Response::Error {
                    message: e.to_string(),
                    exit_code: 1,
                });
                let _ = tx.send(resp);
            });
        }
    }

    /// Dropping its sender ends the writer task, which closes the connection
    /// (after the messages already planned for it, whose senders are clones).
    fn close(&mut self, agents: Vec<AgentId>) {
        for agent in agents {
            self.agents.remove(&agent);
        }
    }
}

/// A batch this slow stalled every agent and CLI: said in the log with where
/// the time went (applying the messages, or scheduling and routing).
fn note_slow_batch(messages: usize, applied: std::time::Duration, total: std::time::Duration) {
    if total >= SLOW_BATCH {
        tracing::warn!(
            "core: a batch of {messages} messages took {} ms ({} ms applying them, {} ms scheduling and routing)",
            total.as_millis(),
            applied.as_millis(),
            (total - applied).as_millis()
        );
    }
}

/// The after-commit action: runs on the store's writer thread once the
/// batch's rows are durable, in the order `routing` planned.
fn deliver(steps: Vec<Step<mpsc::UnboundedSender<ToAgent>>>, checkpoints: &dyn CheckpointStore) {
    for step in steps {
        match step {
            Step::Checkpoint(op) => crate::checkpoints::apply(checkpoints, &op),
            Step::Promote(p) => promote(&p),
            Step::Send(tx, msg) => {
                let _ = tx.send(msg);
            }
            Step::Reply(tx, r) => {
                let _ = tx.send(r);
            }
        }
    }
}

/// Counted: its staged outputs go into place now, before anything (a
/// dependent's assignment) is sent, and whether or not its agent lives to
/// hear the ack. Needs the task's filesystem; where the broker has none, the
/// agent promotes on the ack.
fn promote(p: &Promotion) {
    let cwd = std::path::Path::new(&p.cwd);
    for (src, dst, moved) in scalable_common::stage::promote(cwd, p.attempt, &p.outputs) {
        if let Err(e) = moved {
            tracing::warn!(
                "attempt {}: cannot promote {} to {}: {e}",
                p.attempt,
                src.display(),
                dst.display()
            );
        }
    }
    let _ = scalable_common::stage::remove(cwd, p.attempt);
}

#[cfg(test)]
mod tests {
    use scalable_common::stage;

    use super::*;

    fn no_checkpoints() -> crate::checkpoints::SharedDir {
        crate::checkpoints::SharedDir::new("/nonexistent/checkpoints".into())
    }

    #[test]
    fn deliver_promotes_then_sends_then_replies() {
        let dir = tempfile::tempdir().unwrap();
        let staged = stage::stage_dir(dir.path(), 7).join("out.txt");
        std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
        std::fs::write(&staged, "result").unwrap();
        let (agent_tx, mut agent_rx) = mpsc::unbounded_channel();
        let (reply_tx, mut reply_rx) = oneshot::channel();
        deliver(
            vec![
                Step::Promote(Promotion {
                    cwd: dir.path().display().to_string(),
                    attempt: 7,
                    outputs: vec!["out.txt".into()],
                }),
                Step::Send(agent_tx, ToAgent::Heartbeat),
                Step::Reply(reply_tx, Response::ShuttingDown),
            ],
            &no_checkpoints(),
        );
        let promoted = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
        assert_eq!(promoted, "result");
        assert!(!stage::stage_dir(dir.path(), 7).exists(), "stage removed");
        assert!(matches!(agent_rx.try_recv(), Ok(ToAgent::Heartbeat)));
        assert!(matches!(reply_rx.try_recv(), Ok(Response::ShuttingDown)));
    }

    #[test]
    fn deliver_to_a_closed_connection_goes_on_with_the_rest() {
        let (agent_tx, agent_rx) = mpsc::unbounded_channel();
        drop(agent_rx);
        let (reply_tx, mut reply_rx) = oneshot::channel();
        deliver(
            vec![
                Step::Send(agent_tx, ToAgent::Heartbeat),
                Step::Reply(reply_tx, Response::ShuttingDown),
            ],
            &no_checkpoints(),
        );
        assert!(matches!(reply_rx.try_recv(), Ok(Response::ShuttingDown)));
    }
}
