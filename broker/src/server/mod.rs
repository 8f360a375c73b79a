//! The broker's shell around the sans-IO core: QUIC connections from agents
//! and the CLI, the clock, the store, pilots and local agent processes.
//!
//! One tokio task owns the [`Core`](crate::core::Core) (`core_task`).
//! Connection handlers turn frames into [`CoreMsg`]s; the core task applies a
//! batch of them, asks the core to schedule, hands the store writes to the
//! store and attaches everything that must be sent (assignments, acks, CLI
//! replies, as planned by `routing`) as the batch's after-commit action.
//! Nothing leaves the broker before the rows describing it are durable.
//!
//! Layout:
//! - this file: [`BrokerConfig`], [`run`] (binding, wiring, stopping), the
//!   messages into the core task and the broker's clock; it handles no message;
//! - `accept`: the QUIC accept loop, the hello, authentication and refusals;
//! - `agent_session`, `cli_session`: one connected agent, one connected CLI;
//! - `core_task`: the batch loop, one function per [`CoreMsg`] kind;
//! - `requests`: one function per CLI `Request` kind;
//! - `fleet_io`: the broker's pilots (`scale`, reconciliation, matching agents);
//! - `scaler_io`: the adaptive scaler on the tick, its decisions applied and stored;
//! - `cache_io`: cache probes and records (hashing and blobs off the core task);
//! - `routing`: pure: the core's effects → what to send and release after commit;
//! - `retention`: `--telemetry-keep`, pruning old runs' detail now and then.

mod accept;
mod agent_session;
mod cache_io;
mod checkpoint_io;
mod cli_session;
mod core_task;
mod fleet_io;
mod render_io;
mod requests;
mod retention;
mod routing;
mod scaler_io;
mod sizing_io;
mod staging_batch;
mod staging_io;
mod staging_s3;
mod task_refs;
mod transfer_board;
mod transfer_list;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use scalable_common::access;
use scalable_common::manifest::Manifest;
use scalable_common::protocol::{
    AgentHello, AgentId, FromAgent, Request, Response, ScaleReport, ToAgent,
};
use scalable_common::tls;
use tokio::sync::{mpsc, oneshot};

use crate::core::{CoreConfig, RenderedTask, SubmitPlan};
use crate::local::LocalAgents;
use crate::providers::{PilotState, StartedPilot};
use crate::state_lock::StateLock;
use crate::store::{StateOrigin, Store};

/// How often the core hears the clock.
const TICK_INTERVAL: Duration = Duration::from_millis(100);

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
    /// The scaler runs for `target` (it declares `adaptive:`, or
    /// `--adaptive` was given).
    pub adaptive: bool,
    /// `--telemetry-keep`: how long the detail of a finished run is kept
    /// (usage series, log tails, argv); `None`: forever.
    pub telemetry_keep_ms: Option<u64>,
}

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
    /// The provider started pilots for a `scale` (or failed to); no reply
    /// when the scaler asked.
    FleetStarted {
        tag: Option<String>,
        result: Result<Vec<StartedPilot>, String>,
        report: Box<ScaleReport>,
        reply: Option<oneshot::Sender<Response>>,
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
    /// A `Request::Submit` planned off the core (`cli_session`): validating,
    /// compiling and serialising a large workflow costs too much for the task
    /// every agent and CLI waits on.
    Submit {
        plan: Result<SubmitPlan, String>,
        reply: oneshot::Sender<Response>,
    },
    /// Tasks of `auto` jobs sized off the core (`sizing_io`): job, index,
    /// sizing.
    Sized(Vec<(u64, u64, crate::core::TaskSizing)>),
    /// A costly template rendered off the core (`render_io`).
    Rendered {
        job: u64,
        index: u64,
        result: Result<RenderedTask, String>,
    },
    /// Staging (`staging_io`): the declared files of `attempt` if it is
    /// current on `agent`. A read: answered at once.
    StageLookup {
        agent: AgentId,
        attempt: scalable_common::protocol::AttemptId,
        reply: oneshot::Sender<Option<Arc<RenderedTask>>>,
    },
    /// Checkpoints through staging (`checkpoint_io`): the task and the
    /// job's checkpoint paths of `attempt` if it is current on `agent`.
    CheckpointLookup {
        agent: AgentId,
        attempt: scalable_common::protocol::AttemptId,
        reply: oneshot::Sender<Option<(scalable_common::protocol::TaskId, Vec<String>)>>,
    },
    /// What staging moved for an attempt of `agent` (telemetry, schema 7).
    Transfers {
        agent: AgentId,
        attempt: scalable_common::protocol::AttemptId,
        moved: scalable_common::staging::Transfers,
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

/// The reply to a request the broker cannot carry out as asked (exit code 2).
fn bad(message: String) -> Response {
    Response::Error {
        message,
        exit_code: 2,
    }
}

/// Heartbeat settings told to agents in the `Welcome`.
#[derive(Debug, Clone, Copy)]
struct Liveness {
    interval_ms: u64,
    timeout_ms: u64,
}

/// The bound QUIC endpoint and the state dir's identity and secrets.
struct Listening {
    endpoint: quinn::Endpoint,
    bound: SocketAddr,
    /// `host:port` as agents and the CLI reach it.
    address: String,
    identity: tls::BrokerIdentity,
    secrets: access::BrokerSecrets,
    files: access::StateFiles,
}

/// Runs the broker until it is told to stop (SIGINT, SIGTERM, `Request::Shutdown`).
pub async fn run(cfg: BrokerConfig) -> Result<()> {
    access::ensure_state_dir(&cfg.state_dir)?;
    // Before anything in the dir is read or written; held until `run` returns.
    let mut lock = StateLock::acquire(&cfg.state_dir)?;
    // Before `listen` creates the identity of a new state dir.
    let origin = match access::StateFiles::new(&cfg.state_dir).is_new()? {
        true => StateOrigin::New,
        false => StateOrigin::Existing,
    };
    let Listening {
        endpoint,
        bound,
        address,
        identity,
        secrets,
        files,
    } = listen(&cfg)?;
    lock.announce(&address)?;

    let started = Instant::now();
    let (store, ids, mut loaded) = Store::open(&files.db, origin)?;
    let fleet = fleet_io::FleetCtx::open(&cfg, &address, &identity, &files, &mut loaded)?;
    let core = crate::restart::restore_core(cfg.core.clone(), ids, loaded, now_ms());
    tracing::info!("state loaded in {} ms", started.elapsed().as_millis());
    let liveness = Liveness {
        interval_ms: cfg.core.heartbeat_interval_ms,
        timeout_ms: cfg.core.heartbeat_timeout_ms,
    };
    let (core_tx, core_rx) = mpsc::unbounded_channel::<CoreMsg>();
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel::<()>();

    announce(&cfg, bound, &address, &identity);

    let advisor = Arc::new(crate::advisor::service::AdvisorService::new(&cfg.state_dir));
    let checkpoints: Arc<dyn crate::checkpoints::CheckpointStore> = Arc::new(
        crate::checkpoints::SharedDir::new(cfg.state_dir.join("checkpoints")),
    );
    let uploads = cfg.state_dir.join("checkpoint-uploads");
    let checkpoint_io = checkpoint_io::CheckpointIo::new(checkpoints.clone(), &uploads);
    let transfers = Arc::new(transfer_board::TransferBoard::default());
    let core_task = tokio::spawn(core_task::run(
        core,
        core_rx,
        core_task::Around {
            to_core: core_tx.downgrade(),
            store: store.clone(),
            cache_dir: cfg.state_dir.join("cache"),
            checkpoints,
            stop: stop_tx.clone(),
            manifest: cfg.manifest.clone(),
            shapes: crate::shapes::of_broker(&cfg),
            adaptive: cfg.adaptive,
            advisors: crate::advisor::table::AdvisorTable::new(advisor.clone()),
            transfers: transfers.clone(),
        },
        fleet,
    ));
    let ticker = spawn_ticker(core_tx.clone());
    retention::start(cfg.telemetry_keep_ms, &store);
    let mut locals = LocalAgents::start(
        cfg.local_agents,
        cfg.local_agent_cpus,
        &cfg.local_agent_args,
        cfg.agent_exe.as_deref(),
        (&files.agent_token, &address),
        &cfg.state_dir,
    )?;
    let accept = accept::spawn(
        endpoint.clone(),
        core_tx.clone(),
        Arc::new(secrets),
        liveness,
        cli_session::CliShared::new(cfg.manifest.clone(), advisor),
        (
            crate::staging::StagingStore::for_state_dir(&cfg.state_dir),
            checkpoint_io,
            transfers,
        ),
    );

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

/// Binds the UDP socket, loads (or creates) the state dir's identity and
/// secrets for the advertised address, and starts the QUIC endpoint on it.
fn listen(cfg: &BrokerConfig) -> Result<Listening> {
    let socket = UdpSocket::bind(cfg.listen).with_context(|| {
        format!(
            "cannot listen on UDP {} (is another broker running?)",
            cfg.listen
        )
    })?;
    let bound = socket.local_addr().context("reading the bound address")?;
    tls::widen_buffers(&socket);
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
        tls::server_endpoint_config(&identity)?,
        Some(server_config),
        socket,
        runtime,
    )
    .context("starting the QUIC endpoint")?;
    Ok(Listening {
        endpoint,
        bound,
        address,
        identity,
        secrets,
        files,
    })
}

/// Says where the broker listens: in the log, and on stdout for the person
/// who started it.
fn announce(cfg: &BrokerConfig, bound: SocketAddr, address: &str, identity: &tls::BrokerIdentity) {
    tracing::info!(
        "broker listening on {bound} as {address}; fingerprint {}; state in {}",
        identity.fingerprint(),
        cfg.state_dir.display()
    );
    println!(
        "scalable-broker: listening on {address} (state dir {})",
        cfg.state_dir.display()
    );
}

/// Sends the core a `Tick` every `TICK_INTERVAL` until the core task is gone.
fn spawn_ticker(tx: mpsc::UnboundedSender<CoreMsg>) -> tokio::task::JoinHandle<()> {
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
}
