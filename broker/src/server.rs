//! The broker's shell around the sans-IO core: QUIC connections from agents
//! and the CLI, the clock, the store, and local agent processes.
//!
//! One tokio task owns the [`Core`]. Connection handlers turn frames into
//! [`CoreMsg`]s; the core task applies a batch of them, asks the core to
//! schedule, hands the store writes to the store and attaches everything that
//! must be sent (assignments, acks, CLI replies) as the batch's after-commit
//! action. Nothing leaves the broker before the rows describing it are durable.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use scalable_common::access;
use scalable_common::frame::{read_frame, write_frame, FrameError};
use scalable_common::manifest::Manifest;
use scalable_common::protocol::{
    AgentHello, AgentId, FromAgent, Hello, HelloReply, Request, Response, RunId, RunRef,
    ScaleReport, TaskRef, ToAgent, MESSAGE_BYTES_MAX, PROTOCOL_VERSION,
};
use scalable_common::tls;
use tokio::sync::{mpsc, oneshot};

use crate::cache;
use crate::core::{CacheProbe, CacheRecord, Core, CoreConfig};
use crate::fleet::{Fleet, Pilot};
use crate::local::LocalAgents;
use crate::pilots;
use crate::providers::{self, DeploymentProvider, PilotState, StartRequest, StartedPilot};
use crate::store::{self, Store};
use crate::submit;

/// How long a peer has to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the core hears the clock.
const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// Messages the core task applies before it schedules and writes once.
const CORE_BATCH_MAX: usize = 4_096;

/// Everything `scalable-broker` was asked to do.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// Host name agents and the CLI use to reach this broker (default: the listen
    /// address, or 127.0.0.1 when listening on all interfaces).
    pub advertise_host: Option<String>,
    pub local_agents: u32,
    pub local_agent_cpus: Option<u32>,
    pub local_agent_args: Vec<String>,
    pub agent_exe: Option<PathBuf>,
    pub core: CoreConfig,
    /// The manifest (`--manifest`), for `task:` bindings of submitted workflows.
    pub manifest: Option<Arc<Manifest>>,
    /// The manifest target whose pilots this broker owns (`--target`).
    pub target: Option<String>,
}

/// The broker's pilots and the provider that runs them (a `--target` was given).
struct FleetCtx {
    fleet: Fleet,
    provider: Arc<dyn DeploymentProvider>,
    manifest: Arc<Manifest>,
    access: pilots::BrokerAccess,
    reconcile_in_flight: bool,
    last_reconcile_ms: u64,
}

/// How often live pilots are checked with their provider (one batched call).
const RECONCILE_EVERY_MS: u64 = 5_000;

/// Messages into the core task.
enum CoreMsg {
    AgentConnected {
        hello: Box<AgentHello>,
        conn: u64,
        tx: mpsc::UnboundedSender<ToAgent>,
        reply: oneshot::Sender<AgentId>,
    },
    Agent {
        agent: AgentId,
        msg: FromAgent,
    },
    AgentGone {
        agent: AgentId,
        conn: u64,
        reason: String,
        /// The agent broke the protocol: lost at once, no grace.
        fatal: bool,
    },
    /// The provider started pilots for a `scale` (or failed to).
    FleetStarted {
        tag: Option<String>,
        result: Result<Vec<StartedPilot>, String>,
        report: Box<ScaleReport>,
        reply: oneshot::Sender<Response>,
    },
    /// The provider's view of our live pilots.
    FleetStatus(Result<Vec<(String, PilotState)>, String>),
    /// A cache probe's answer (see `cache`).
    CacheAnswer {
        job: u64,
        index: u64,
        hit: Option<String>,
        key_json: String,
        why: String,
    },
    Cli {
        req: Request,
        reply: oneshot::Sender<Response>,
    },
    Tick,
}

/// The broker's clock: wall time at start plus monotonic time since, so
/// timestamps read as dates but never jump (liveness uses this clock only;
/// agents' clocks are never compared with it).
fn now_ms() -> u64 {
    static START: OnceLock<(u64, Instant)> = OnceLock::new();
    let (wall, mono) = START.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        (wall, Instant::now())
    });
    wall + mono.elapsed().as_millis() as u64
}

/// Connection serials: a reconnected agent keeps its id, so a late "gone" of
/// its old connection must not be taken for the new one.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Heartbeat settings told to agents in the `Welcome`.
#[derive(Debug, Clone, Copy)]
struct Liveness {
    interval_ms: u64,
    timeout_ms: u64,
}

/// Runs the broker until it is told to stop (SIGINT, SIGTERM, `Request::Shutdown`).
pub async fn run(cfg: BrokerConfig) -> Result<()> {
    access::ensure_state_dir(&cfg.state_dir)?;
    let socket = UdpSocket::bind(cfg.listen).with_context(|| {
        format!(
            "cannot listen on UDP {} (is another broker running?)",
            cfg.listen
        )
    })?;
    let bound = socket.local_addr().context("reading the bound address")?;
    let host = match &cfg.advertise_host {
        Some(h) => h.clone(),
        None if bound.ip().is_unspecified() => "127.0.0.1".to_string(),
        None => bound.ip().to_string(),
    };
    let address = format!("{host}:{}", bound.port());
    let (identity, secrets, _agent_token) = access::init_or_load(&cfg.state_dir, &address)?;
    let files = access::StateFiles::new(&cfg.state_dir);
    let server_config = tls::server_config(&identity)?;
    let runtime = quinn::default_runtime().context("no async runtime for QUIC")?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        socket,
        runtime,
    )
    .context("starting the QUIC endpoint")?;

    let started = Instant::now();
    let (store, ids, mut loaded) = Store::open(&files.db)?;
    let fleet = match (&cfg.manifest, &cfg.target) {
        (Some(m), Some(t)) => {
            let target = m
                .target(t)
                .with_context(|| format!("the manifest has no target {t}"))?;
            let mut ctx = providers::ProviderContext::new(cfg.state_dir.join("pilots"));
            ctx.aws_endpoint_url = std::env::var("AWS_ENDPOINT_URL").ok();
            let known: Vec<Pilot> = std::mem::take(&mut loaded.pilots)
                .into_iter()
                .filter(|(p, _)| &p.target == t)
                .filter_map(|(p, m)| Pilot::from_stored(p, &m))
                .collect();
            Some(FleetCtx {
                fleet: Fleet::new(t, known),
                provider: Arc::from(providers::provider_for(target, &ctx)),
                manifest: m.clone(),
                access: pilots::BrokerAccess {
                    address: address.clone(),
                    fingerprint: identity.fingerprint(),
                    token_file: std::path::absolute(&files.agent_token)
                        .unwrap_or_else(|_| files.agent_token.clone())
                        .display()
                        .to_string(),
                    agent_path: crate::local::agent_exe(cfg.agent_exe.as_deref())
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| "scalable-agent".into()),
                },
                reconcile_in_flight: false,
                last_reconcile_ms: 0,
            })
        }
        _ => None,
    };
    let core = crate::restart::restore_core(cfg.core.clone(), ids, loaded, now_ms());
    tracing::info!("state loaded in {} ms", started.elapsed().as_millis());
    let liveness = Liveness {
        interval_ms: cfg.core.heartbeat_interval_ms,
        timeout_ms: cfg.core.heartbeat_timeout_ms,
    };
    let (core_tx, core_rx) = mpsc::unbounded_channel::<CoreMsg>();
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel::<()>();
    let secrets = Arc::new(secrets);

    tracing::info!(
        "broker listening on {bound} as {address}; fingerprint {}; state in {}",
        identity.fingerprint(),
        cfg.state_dir.display()
    );
    println!(
        "scalable-broker: listening on {address} (state dir {})",
        cfg.state_dir.display()
    );

    let core_task = tokio::spawn(core_loop(
        core,
        core_rx,
        Around {
            to_core: core_tx.downgrade(),
            store: store.clone(),
            cache_dir: cfg.state_dir.join("cache"),
            stop: stop_tx.clone(),
            manifest: cfg.manifest.clone(),
        },
        fleet,
    ));
    let ticker = {
        let tx = core_tx.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(TICK_INTERVAL);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                iv.tick().await;
                if tx.send(CoreMsg::Tick).is_err() {
                    break;
                }
            }
        })
    };

    let mut locals = LocalAgents::start(
        cfg.local_agents,
        cfg.local_agent_cpus,
        &cfg.local_agent_args,
        cfg.agent_exe.as_deref(),
        &files.agent_token,
        &cfg.state_dir,
    )?;

    let accept = {
        let endpoint = endpoint.clone();
        let core_tx = core_tx.clone();
        let secrets = secrets.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let core_tx = core_tx.clone();
                let secrets = secrets.clone();
                tokio::spawn(async move {
                    let remote = incoming.remote_address();
                    match incoming.await {
                        Ok(conn) => handle_connection(conn, core_tx, secrets, liveness).await,
                        Err(e) => tracing::warn!(
                            "refused connection from {remote}: {}",
                            describe_conn_error(&e)
                        ),
                    }
                });
            }
        })
    };

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        _ = sigterm.recv() => tracing::info!("SIGTERM; stopping"),
        _ = stop_rx.recv() => tracing::info!("shutdown requested; stopping"),
        _ = locals.wait_any_failed() => tracing::warn!("a local agent could not start; stopping"),
    }
    accept.abort();
    ticker.abort();
    locals.stop().await;
    drop(core_tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), core_task).await;
    endpoint.close(0u32.into(), b"broker stopping");
    store.stop();
    Ok(())
}

fn describe_conn_error(e: &quinn::ConnectionError) -> String {
    let s = e.to_string();
    if s.contains("no application protocol") || s.contains("120") {
        format!(
            "protocol version mismatch (this broker speaks {})",
            String::from_utf8_lossy(scalable_common::protocol::ALPN)
        )
    } else {
        s
    }
}

/// Reads the `Hello` and serves an agent or a CLI on this connection.
async fn handle_connection(
    conn: quinn::Connection,
    core_tx: mpsc::UnboundedSender<CoreMsg>,
    secrets: Arc<access::BrokerSecrets>,
    liveness: Liveness,
) {
    let remote = conn.remote_address();
    let (mut send, mut recv) = match tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        _ => return,
    };
    let hello: Hello =
        match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut recv, 64 << 10)).await {
            Ok(Ok(Some(h))) => h,
            Ok(Err(e)) => {
                tracing::warn!("closed connection from {remote}: bad hello: {e}");
                conn.close(2u32.into(), b"bad hello");
                return;
            }
            _ => return,
        };
    match hello {
        Hello::Agent(h) => {
            if h.protocol != PROTOCOL_VERSION {
                return refuse(&conn, &mut send, format!(
                    "protocol version mismatch: agent speaks {}, broker speaks {PROTOCOL_VERSION} (use matching scalable versions)",
                    h.protocol
                ))
                .await;
            }
            if !access::token_matches(&secrets.agent_token_hash, &h.token) {
                return refuse(&conn, &mut send, format!(
                    "agent token refused for agent {:?} from {remote} (use the agent.token this broker wrote)",
                    h.name
                ))
                .await;
            }
            serve_agent(conn, send, recv, h, core_tx, liveness).await;
        }
        Hello::Cli(h) => {
            if h.protocol != PROTOCOL_VERSION {
                return refuse(&conn, &mut send, format!(
                    "protocol version mismatch: cli speaks {}, broker speaks {PROTOCOL_VERSION} (use matching scalable versions)",
                    h.protocol
                ))
                .await;
            }
            if !access::token_matches(&secrets.user_token_hash, &h.token) {
                return refuse(
                    &conn,
                    &mut send,
                    "user token refused (use the access.json this broker wrote)".into(),
                )
                .await;
            }
            if write_frame(
                &mut send,
                &HelloReply::Welcome {
                    agent_id: 0,
                    heartbeat_interval_ms: 0,
                    heartbeat_timeout_ms: 0,
                },
            )
            .await
            .is_err()
            {
                return;
            }
            let _ = send.finish();
            serve_cli(conn, core_tx).await;
        }
    }
}

/// Tells the peer why it is refused, logs it, and closes the connection.
async fn refuse(conn: &quinn::Connection, send: &mut quinn::SendStream, why: String) {
    tracing::warn!("refused {}: {why}", conn.remote_address());
    let _ = write_frame(send, &HelloReply::Refused { reason: why }).await;
    let _ = send.finish();
    // Give the refusal time to arrive before the close does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.close(1u32.into(), b"refused");
}

async fn serve_agent(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    hello: AgentHello,
    core_tx: mpsc::UnboundedSender<CoreMsg>,
    liveness: Liveness,
) {
    let name = hello.name.clone();
    let serial = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel::<ToAgent>();
    let (id_tx, id_rx) = oneshot::channel();
    if core_tx
        .send(CoreMsg::AgentConnected {
            hello: Box::new(hello),
            conn: serial,
            tx,
            reply: id_tx,
        })
        .is_err()
    {
        return;
    }
    let Ok(agent) = id_rx.await else { return };
    tracing::info!(
        "agent {agent} ({name}) connected from {}",
        conn.remote_address()
    );
    if write_frame(
        &mut send,
        &HelloReply::Welcome {
            agent_id: agent,
            heartbeat_interval_ms: liveness.interval_ms,
            heartbeat_timeout_ms: liveness.timeout_ms,
        },
    )
    .await
    .is_err()
    {
        let _ = core_tx.send(CoreMsg::AgentGone {
            agent,
            conn: serial,
            reason: "disconnected during hello".into(),
            fatal: false,
        });
        return;
    }
    let writer_conn = conn.clone();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let shutdown = matches!(msg, ToAgent::Shutdown { .. });
            if write_frame(&mut send, &msg).await.is_err() {
                return;
            }
            if shutdown {
                let _ = send.finish();
                return;
            }
        }
        // The core dropped this agent (declared lost): close, so it reconnects.
        writer_conn.close(4u32.into(), b"declared lost");
    });
    let mut fatal = false;
    let reason = loop {
        match read_frame::<_, FromAgent>(&mut recv, MESSAGE_BYTES_MAX).await {
            Ok(Some(msg)) => {
                let leaving = matches!(msg, FromAgent::Leaving { .. });
                if core_tx.send(CoreMsg::Agent { agent, msg }).is_err() {
                    break "broker stopping".to_string();
                }
                if leaving {
                    // Keep reading: results of drained attempts may follow.
                    continue;
                }
            }
            Ok(None) => break "disconnected".to_string(),
            // The link went away (timeout, reset, a peer that gave up on us):
            // the agent may come back with its attempts; not a loss yet.
            Err(e @ (FrameError::Io(_) | FrameError::Truncated)) => break format!("{e}"),
            Err(e) => {
                tracing::warn!("agent {agent} ({name}): {e}; closing its connection");
                conn.close(2u32.into(), b"malformed message");
                fatal = true;
                break format!("malformed message: {e}");
            }
        }
    };
    writer.abort();
    tracing::info!("agent {agent} ({name}) disconnected: {reason}");
    let _ = core_tx.send(CoreMsg::AgentGone {
        agent,
        conn: serial,
        reason,
        fatal,
    });
}

async fn serve_cli(conn: quinn::Connection, core_tx: mpsc::UnboundedSender<CoreMsg>) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let core_tx = core_tx.clone();
        tokio::spawn(async move {
            let req: Request = match read_frame(&mut recv, MESSAGE_BYTES_MAX).await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    let _ = write_frame(
                        &mut send,
                        &Response::Error {
                            message: format!("malformed request: {e}"),
                            exit_code: 2,
                        },
                    )
                    .await;
                    return;
                }
            };
            let (tx, rx) = oneshot::channel();
            if core_tx.send(CoreMsg::Cli { req, reply: tx }).is_err() {
                return;
            }
            if let Ok(resp) = rx.await {
                let _ = write_frame(&mut send, &resp).await;
                let _ = send.finish();
                // Let the response drain before the stream is dropped.
                let _ = send.stopped().await;
            }
        });
    }
}

/// What a CLI request needs after the writes of this batch are durable.
enum Deferred {
    Reply(oneshot::Sender<Response>, Response),
    Query(
        oneshot::Sender<Response>,
        Box<dyn FnOnce(&rusqlite::Connection) -> Response + Send>,
    ),
}

/// What the core loop talks to besides the core and the fleet.
struct Around {
    /// Weak: the loop must end when every connection and the ticker are gone.
    to_core: mpsc::WeakUnboundedSender<CoreMsg>,
    store: Store,
    cache_dir: PathBuf,
    stop: mpsc::UnboundedSender<()>,
    manifest: Option<Arc<Manifest>>,
}

async fn core_loop(
    mut core: Core,
    mut rx: mpsc::UnboundedReceiver<CoreMsg>,
    around: Around,
    mut fleet: Option<FleetCtx>,
) {
    let Around {
        to_core,
        store,
        cache_dir,
        stop,
        manifest,
    } = around;
    let mut agents: HashMap<AgentId, (u64, mpsc::UnboundedSender<ToAgent>)> = HashMap::new();
    let blobs = Arc::new(cache::Blobs::new(cache_dir));
    let mut batch = Vec::with_capacity(CORE_BATCH_MAX);
    let mut last_heartbeat = 0u64;
    let heartbeat_ms = core.config().heartbeat_interval_ms.max(100);
    loop {
        if rx.recv_many(&mut batch, CORE_BATCH_MAX).await == 0 {
            break;
        }
        let now = now_ms();
        let mut deferred: Vec<Deferred> = Vec::new();
        // Pilot records and events from the fleet, written with this batch.
        let mut extra_ops: Vec<crate::core::StoreOp> = Vec::new();
        for msg in batch.drain(..) {
            match msg {
                CoreMsg::AgentConnected {
                    hello,
                    conn,
                    tx,
                    reply,
                } => {
                    let id = core.agent_connected(&hello, now);
                    agents.insert(id, (conn, tx));
                    let _ = reply.send(id);
                    if let Some(f) = fleet.as_mut() {
                        extra_ops.extend(fleet_agent_connected(f, &hello, id, now));
                    }
                }
                CoreMsg::Agent { agent, msg } => match msg {
                    FromAgent::Events {
                        started,
                        finished,
                        free,
                    } => core.agent_events(agent, &started, finished, Some(free), now),
                    FromAgent::Heartbeat { .. } => core.agent_heartbeat(agent, now),
                    FromAgent::Leaving { reason } => {
                        tracing::info!("agent {agent} is leaving: {reason}");
                        core.agent_leaving(agent, now)
                    }
                },
                CoreMsg::AgentGone {
                    agent,
                    conn,
                    reason,
                    fatal,
                } => {
                    if agents.get(&agent).is_some_and(|(c, _)| *c != conn) {
                        continue; // an old connection of an agent that is back
                    }
                    agents.remove(&agent);
                    if fatal {
                        core.agent_lost(agent, &reason, now);
                    } else {
                        core.agent_disconnected(agent, now);
                    }
                }
                CoreMsg::CacheAnswer {
                    job,
                    index,
                    hit,
                    key_json,
                    why,
                } => core.cache_answer(job, index, hit, key_json, why, now),
                CoreMsg::Cli {
                    req: Request::Pilots,
                    reply,
                } => {
                    let list = fleet.as_ref().map(|f| f.fleet.infos()).unwrap_or_default();
                    deferred.push(Deferred::Reply(reply, Response::Pilots(list)));
                }
                CoreMsg::Cli {
                    req:
                        Request::Scale {
                            target,
                            tag,
                            change,
                            force,
                            dry_run,
                        },
                    reply,
                } => {
                    let req = ScaleReq {
                        target,
                        tag,
                        change,
                        force,
                        dry_run,
                    };
                    if let Some(d) = scale(
                        &mut core,
                        fleet.as_mut(),
                        req,
                        reply,
                        &to_core,
                        &mut extra_ops,
                    ) {
                        deferred.push(d);
                    }
                }
                CoreMsg::FleetStarted {
                    tag,
                    result,
                    mut report,
                    reply,
                } => {
                    let resp = match (result, fleet.as_mut()) {
                        (Ok(started), Some(f)) => {
                            extra_ops.extend(f.fleet.started(tag.as_deref(), &started, now));
                            for s in &started {
                                report
                                    .started
                                    .push((s.pilot_id.clone(), s.provider_id.clone()));
                                report.commands.extend(s.commands.iter().cloned());
                            }
                            report.commands.dedup();
                            Response::Scaled(*report)
                        }
                        (Err(e), _) => Response::Error {
                            message: e,
                            exit_code: 1,
                        },
                        (Ok(_), None) => bad("this broker has no target".into()),
                    };
                    deferred.push(Deferred::Reply(reply, resp));
                }
                CoreMsg::FleetStatus(result) => {
                    if let Some(f) = fleet.as_mut() {
                        f.reconcile_in_flight = false;
                        match result {
                            Ok(states) => {
                                let ops = f.fleet.reconcile(&states, now);
                                for op in &ops {
                                    if let crate::core::StoreOp::Pilot { info: p, .. } = op {
                                        tracing::info!(
                                            "pilot {} ({}) is {}",
                                            p.id,
                                            p.provider_id,
                                            p.state
                                        );
                                    }
                                }
                                extra_ops.extend(ops);
                            }
                            Err(e) => tracing::warn!("checking pilots: {e}"),
                        }
                    }
                }
                CoreMsg::Cli { req, reply } => {
                    if matches!(req, Request::Shutdown) {
                        deferred.push(Deferred::Reply(reply, Response::ShuttingDown));
                        let _ = stop.send(());
                        continue;
                    }
                    deferred.push(handle_request(
                        &mut core,
                        manifest.as_deref(),
                        req,
                        reply,
                        now,
                    ));
                }
                CoreMsg::Tick => {
                    core.tick(now);
                    if let Some(f) = fleet.as_mut() {
                        reconcile(f, &to_core, now);
                    }
                    // The broker heartbeats too: an agent that hears nothing for
                    // its timeout reconnects (heartbeats both ways).
                    if now.saturating_sub(last_heartbeat) >= heartbeat_ms {
                        last_heartbeat = now;
                        for (_, tx) in agents.values() {
                            let _ = tx.send(ToAgent::Heartbeat);
                        }
                    }
                }
            }
        }
        core.schedule(now);
        if cfg!(debug_assertions) && std::env::var_os("SCALABLE_SANITY_CHECK").is_some() {
            core.sanity_check();
        }
        let mut fx = core.take_effects();
        fx.store.append(&mut extra_ops);
        for probe in std::mem::take(&mut fx.cache_probe) {
            tokio::spawn(cache_probe(
                probe,
                store.clone(),
                blobs.clone(),
                to_core.clone(),
            ));
        }
        let records = std::mem::take(&mut fx.cache_record);
        let promote = std::mem::take(&mut fx.promote);
        let mut sends: Vec<(mpsc::UnboundedSender<ToAgent>, ToAgent)> = Vec::new();
        let mut push = |agent: AgentId, msg: ToAgent| {
            if let Some((_, tx)) = agents.get(&agent) {
                sends.push((tx.clone(), msg));
            }
        };
        for (agent, list) in fx.assign {
            push(agent, ToAgent::Assign(list));
        }
        for (agent, list) in fx.ack {
            let (counted, ignored) = list.into_iter().partition::<Vec<_>, _>(|x| x.counted);
            push(
                agent,
                ToAgent::Ack {
                    counted: counted.into_iter().map(|x| x.attempt).collect(),
                    ignored: ignored.into_iter().map(|x| x.attempt).collect(),
                },
            );
        }
        for (agent, list) in fx.cancel {
            push(agent, ToAgent::Cancel(list));
        }
        for crate::core::Shutdown { agent, reason } in fx.shutdown {
            push(agent, ToAgent::Shutdown { reason });
        }
        let disconnect = std::mem::take(&mut fx.disconnect);
        let mut replies = Vec::new();
        let mut queries = Vec::new();
        for d in deferred {
            match d {
                Deferred::Reply(tx, r) => replies.push((tx, r)),
                Deferred::Query(tx, q) => queries.push((tx, q)),
            }
        }
        if fx.store.is_empty()
            && sends.is_empty()
            && replies.is_empty()
            && queries.is_empty()
            && promote.is_empty()
        {
            for agent in disconnect {
                agents.remove(&agent);
            }
            continue;
        }
        store.write(
            fx.store,
            Some(Box::new(move || {
                // Counted: its staged outputs go into place now, before anything
                // (a dependent's assignment) is sent, and whether or not its
                // agent lives to hear the ack. Needs the task's filesystem;
                // where the broker has none, the agent promotes on the ack.
                for crate::core::Promote {
                    cwd,
                    attempt,
                    outputs,
                } in &promote
                {
                    let cwd = std::path::Path::new(cwd);
                    for (src, dst, moved) in scalable_common::stage::promote(cwd, *attempt, outputs)
                    {
                        if let Err(e) = moved {
                            tracing::warn!(
                                "attempt {attempt}: cannot promote {} to {}: {e}",
                                src.display(),
                                dst.display()
                            );
                        }
                    }
                    let _ = scalable_common::stage::remove(cwd, *attempt);
                }
                for (tx, msg) in sends {
                    let _ = tx.send(msg);
                }
                for (tx, r) in replies {
                    let _ = tx.send(r);
                }
            })),
        );
        for r in records {
            tokio::spawn(cache_record(r, store.clone(), blobs.clone()));
        }
        // Dropping its sender ends the writer task, which closes the connection.
        for agent in disconnect {
            agents.remove(&agent);
        }
        for (tx, q) in queries {
            let store = store.clone();
            tokio::spawn(async move {
                let resp = store.query(q).await.unwrap_or_else(|e| Response::Error {
                    message: e.to_string(),
                    exit_code: 1,
                });
                let _ = tx.send(resp);
            });
        }
    }
    // Tell connected agents the broker is going away.
    for (_, tx) in agents.values() {
        let _ = tx.send(ToAgent::Shutdown {
            reason: "broker stopping".into(),
        });
    }
}

/// `scalable scale` as the core loop received it.
struct ScaleReq {
    target: String,
    tag: Option<String>,
    change: scalable_common::protocol::ScaleChange,
    force: bool,
    dry_run: bool,
}

/// Plans a `scale` and carries out what needs no waiting (drains, stops on a
/// blocking thread); pilots to start go to the provider on a blocking thread,
/// and the reply follows with `CoreMsg::FleetStarted`. Returns the reply when
/// it is ready now.
fn scale(
    core: &mut Core,
    fleet: Option<&mut FleetCtx>,
    req: ScaleReq,
    reply: oneshot::Sender<Response>,
    to_core: &mpsc::WeakUnboundedSender<CoreMsg>,
    ops: &mut Vec<crate::core::StoreOp>,
) -> Option<Deferred> {
    let Some(f) = fleet else {
        return Some(Deferred::Reply(
            reply,
            bad("this broker owns no pilots (start it with --manifest FILE --target T)".into()),
        ));
    };
    if req.target != f.fleet.target {
        return Some(Deferred::Reply(
            reply,
            bad(format!(
                "this broker runs target {}, not {} (start another broker for that target)",
                f.fleet.target, req.target
            )),
        ));
    }
    let spec = match pilots::pilot_specs(&f.manifest, &req.target, req.tag.as_deref(), &f.access) {
        Ok(mut specs) if !specs.is_empty() => specs.remove(0),
        Ok(_) => {
            return Some(Deferred::Reply(
                reply,
                bad("no pilot group for that tag".into()),
            ))
        }
        Err(e) => return Some(Deferred::Reply(reply, bad(e))),
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
    let stop_ids: Vec<String> = plan
        .cancel
        .iter()
        .chain(&plan.kill)
        .filter_map(|p| f.fleet.provider_id(p))
        .collect();
    if req.dry_run {
        let ids: Vec<String> = (1..=plan.start).map(|i| format!("p-new{i}")).collect();
        if !ids.is_empty() {
            let r = StartRequest {
                pilot_ids: ids,
                spec,
                dry_run: true,
            };
            match f.provider.commands(&r) {
                Ok(c) => report.commands = c,
                Err(e) => return Some(Deferred::Reply(reply, bad(e.to_string()))),
            }
        }
        return Some(Deferred::Reply(reply, Response::Scaled(report)));
    }
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
    if plan.start == 0 {
        return Some(Deferred::Reply(reply, Response::Scaled(report)));
    }
    let ids = f.fleet.new_ids(plan.start);
    let provider = f.provider.clone();
    let to_core = to_core.clone();
    tokio::spawn(async move {
        let r = StartRequest {
            pilot_ids: ids,
            spec,
            dry_run: false,
        };
        let result = tokio::task::spawn_blocking(move || provider.start(&r))
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
    None
}

/// One batched status call for every live pilot, at most every
/// `RECONCILE_EVERY_MS` (the provider rate-limits further).
fn reconcile(f: &mut FleetCtx, to_core: &mpsc::WeakUnboundedSender<CoreMsg>, now: u64) {
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

/// Matches a connecting agent to its pilot; an agent no pilot of ours explains
/// is recorded as unmanaged.
fn fleet_agent_connected(
    f: &mut FleetCtx,
    hello: &AgentHello,
    agent: AgentId,
    now: u64,
) -> Vec<crate::core::StoreOp> {
    let Some(reported) = hello.pilot_id.as_deref() else {
        return Vec::new();
    };
    match f.fleet.agent_connected(reported, agent, now) {
        Some((pilot, wait_ms, op)) => {
            tracing::info!("agent {agent} is pilot {pilot} (queue wait {wait_ms} ms)");
            vec![
                op,
                crate::core::StoreOp::Event {
                    at_ms: now,
                    kind: crate::core::EventKind::PilotConnected,
                    run: None,
                    detail: format!(
                        "pilot {pilot}: agent {agent} connected after {wait_ms} ms in the queue"
                    ),
                },
            ]
        }
        None => {
            tracing::info!("agent {agent} says pilot {reported:?}, which this broker did not submit (unmanaged)");
            vec![crate::core::StoreOp::Event {
                at_ms: now,
                kind: crate::core::EventKind::UnmanagedAgent,
                run: None,
                detail: format!("agent {agent} reports pilot {reported:?}, unknown to this broker"),
            }]
        }
    }
}

/// Looks a `cache: true` task up: its key hashed off the core (inputs may be
/// large), the table read on the store's thread, outputs restored off it again.
async fn cache_probe(
    p: CacheProbe,
    store: Store,
    blobs: Arc<cache::Blobs>,
    to_core: mpsc::WeakUnboundedSender<CoreMsg>,
) {
    let (job, index) = (p.job, p.index);
    let answer = async {
        let cwd = PathBuf::from(&p.cwd);
        let key = {
            let (argv, image, env, cwd, inputs) = (
                p.argv.clone(),
                p.image.clone(),
                p.env.clone(),
                cwd.clone(),
                p.inputs.clone(),
            );
            tokio::task::spawn_blocking(move || {
                cache::compute_key(&argv, image.as_deref(), &env, &cwd, &inputs)
            })
            .await
        };
        let key = match key {
            Ok(Ok(k)) => k,
            Ok(Err(e)) => return (None, String::new(), format!("not cached: {e}")),
            Err(e) => return (None, String::new(), format!("not cached: {e}")),
        };
        let key_json = serde_json::to_string(&key).unwrap_or_default();
        let (wf, jn, k) = (p.workflow.clone(), p.job_name.clone(), key.key.clone());
        let found = store
            .query(move |c| {
                let hit = cache::lookup(c, &k)?;
                let last = if hit.is_none() {
                    cache::latest_for(c, &wf, &jn, index)?
                } else {
                    None
                };
                Ok::<_, rusqlite::Error>((hit, last))
            })
            .await;
        let (hit, last) = match found {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return (None, key_json, format!("not cached: cache table: {e}")),
            Err(e) => return (None, key_json, format!("not cached: {e}")),
        };
        if let Some(entry) = hit {
            let saved = entry.outputs.clone();
            let declared_saved = p.outputs.iter().all(|o| saved.iter().any(|s| &s.path == o));
            if declared_saved {
                let restored =
                    tokio::task::spawn_blocking(move || blobs.restore_outputs(&cwd, &saved)).await;
                if let Ok(Ok(n)) = restored {
                    let note = format!(
                        "cached: same key as task {} (run of {}), {n} output(s) restored",
                        entry.task_id, entry.workflow
                    );
                    return (Some(note), key_json, String::new());
                }
            }
            return (
                None,
                key_json,
                "cache miss: the cached outputs are incomplete".into(),
            );
        }
        let why = match last {
            None => "cache miss: no earlier run of this task".to_string(),
            Some(prev) => {
                let changed = cache::explain_change(&prev.parts, &key);
                if changed.is_empty() {
                    "cache miss: the earlier run's entry is gone".into()
                } else {
                    format!("cache miss: {}", changed.join(", "))
                }
            }
        };
        (None, key_json, why)
    }
    .await;
    if let Some(tx) = to_core.upgrade() {
        let (hit, key_json, why) = answer;
        let _ = tx.send(CoreMsg::CacheAnswer {
            job,
            index,
            hit,
            key_json,
            why,
        });
    }
}

/// Saves a counted success's outputs and key in the cache. The agent promotes
/// staged outputs when it hears its result was counted, so this looks a few
/// times before it gives up (a task that is then simply not cached).
async fn cache_record(r: CacheRecord, store: Store, blobs: Arc<cache::Blobs>) {
    let Ok(key) = serde_json::from_str::<cache::CacheKey>(&r.key_json) else {
        return;
    };
    for attempt in 0..5u64 {
        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
        let (blobs2, cwd, outputs) = (blobs.clone(), PathBuf::from(&r.cwd), r.outputs.clone());
        let saved = tokio::task::spawn_blocking(move || blobs2.save_outputs(&cwd, &outputs)).await;
        let saved = match saved {
            Ok(Ok(s)) => s,
            Ok(Err(cache::CacheError::OutputMissing { .. })) => continue,
            Ok(Err(e)) => {
                tracing::warn!("task {} not cached: {e}", r.task);
                return;
            }
            Err(_) => return,
        };
        let entry = cache::Entry {
            key: key.key.clone(),
            workflow: r.workflow.clone(),
            job: r.job_name.clone(),
            idx: r.index,
            task_id: r.task,
            attempt_id: r.attempt,
            parts: key.clone(),
            outputs: saved,
            created_at_ms: now_ms(),
        };
        if let Ok(Err(e)) = store.query(move |c| cache::insert(c, &entry)).await {
            tracing::warn!("task {} not cached: {e}", r.task);
        }
        return;
    }
    tracing::warn!("task {} not cached: its outputs never appeared", r.task);
}

fn bad(message: String) -> Response {
    Response::Error {
        message,
        exit_code: 2,
    }
}

/// Resolves `last` against the live core, falling back to the store.
fn resolve_run(core: &Core, run: &RunRef) -> Option<RunId> {
    match run {
        RunRef::Id(id) => Some(*id),
        RunRef::Last => core.last_run(),
    }
}

fn handle_request(
    core: &mut Core,
    manifest: Option<&Manifest>,
    req: Request,
    reply: oneshot::Sender<Response>,
    now: u64,
) -> Deferred {
    let resp = match req {
        Request::Submit(s) => match submit::plan(s, manifest) {
            Ok(plan) => match core.submit(plan, now) {
                Ok((run, tasks)) => Response::Submitted { run, tasks },
                Err(e) => bad(e.to_string()),
            },
            Err(message) => bad(message),
        },
        Request::Status { run } => match run {
            None => Response::Status(core.all_run_status()),
            Some(r) => match resolve_run(core, &r).and_then(|id| core.run_status(id)) {
                Some(s) => Response::Status(vec![s]),
                None => bad(no_run(&r)),
            },
        },
        Request::Agents => Response::Agents(core.agent_infos()),
        Request::Cancel { run, task } => {
            let n = match (run, task) {
                (Some(r), _) => resolve_run(core, &r).and_then(|id| core.cancel_run(id, now)),
                (None, Some(t)) => resolve_task(core, &t).and_then(|id| core.cancel_task(id, now)),
                (None, None) => None,
            };
            match n {
                Some(tasks) => Response::Cancelled { tasks },
                None => bad("no such run or task (scalable status lists the runs)".into()),
            }
        }
        Request::Resume { run } => match resolve_run(core, &run) {
            Some(id) => match core.resume_run(id, now) {
                Ok(tasks) => Response::Resumed { run: id, tasks },
                Err(e) => bad(e),
            },
            None => bad(no_run(&run)),
        },
        Request::Stats { run } => {
            let Some(id) = resolve_run(core, &run) else {
                return Deferred::Reply(reply, bad(no_run(&run)));
            };
            return Deferred::Query(
                reply,
                Box::new(move |c| match store::run_stats(c, id, now_ms()) {
                    Ok(s) => Response::Stats(s),
                    Err(e) => bad(e.to_string()),
                }),
            );
        }
        Request::Analyze { run } => {
            let Some(id) = resolve_run(core, &run) else {
                return Deferred::Reply(reply, bad(no_run(&run)));
            };
            return Deferred::Query(
                reply,
                Box::new(move |c| match store::run_analysis(c, id) {
                    Ok(a) => Response::Analyze(a),
                    Err(e) => bad(e.to_string()),
                }),
            );
        }
        Request::Logs { task, attempt } => {
            let last = core.last_run();
            return Deferred::Query(
                reply,
                Box::new(move |c| {
                    let id = match task {
                        TaskRef::Id(id) => Ok(id),
                        TaskRef::Path { run, job, index } => {
                            let run = match run {
                                RunRef::Id(r) => Some(r),
                                RunRef::Last => last,
                            };
                            match run {
                                Some(r) => store::task_by_path(c, r, &job, index),
                                None => Err(store::StoreError::NotFound("no runs yet".into())),
                            }
                        }
                    };
                    match id.and_then(|id| store::task_logs(c, id, attempt)) {
                        Ok(l) => Response::Logs(l),
                        Err(e) => bad(e.to_string()),
                    }
                }),
            );
        }
        Request::Shutdown => Response::ShuttingDown,
        // Handled by the core loop, which owns the fleet.
        Request::Scale { .. } | Request::Pilots => bad("not here".into()),
        Request::Why { task } => match resolve_task(core, &task).and_then(|id| core.why(id, now)) {
            Some(answer) => Response::Why(answer),
            None => bad("no such task (name it RUN/JOB/INDEX, e.g. last/downscale/0)".into()),
        },
    };
    Deferred::Reply(reply, resp)
}

fn resolve_task(core: &Core, t: &TaskRef) -> Option<u64> {
    match t {
        TaskRef::Id(id) => Some(*id),
        TaskRef::Path { run, job, index } => {
            let run = resolve_run(core, run)?;
            core.task_by_path(run, job, *index)
        }
    }
}

fn no_run(r: &RunRef) -> String {
    match r {
        RunRef::Id(id) => format!("no run {id} (scalable status lists the runs)"),
        RunRef::Last => "no runs yet (submit one with scalable submit)".into(),
    }
}
