//! Dialling the broker and the hello handshake: resolve, QUIC with the pinned
//! certificate fingerprint, one stream, `Hello::Agent` (with every attempt the
//! agent still holds, so the broker can reconcile), and the broker's welcome.
//!
//! Owns: the `Conn` of one connection and what a failure means (retry, or
//! refused for good). It must not touch the work beyond reading what it holds.

use std::time::{Duration, Instant};

use scalable_common::frame::{read_frame, write_frame};
use scalable_common::protocol::{AgentHello, AgentId, Hello, HelloReply, PROTOCOL_VERSION};
use scalable_common::tls;

use super::work::Work;
use super::AgentConfig;

/// Why a connection attempt failed.
pub(super) enum ConnectError {
    /// For good (wrong fingerprint, protocol version, token): the agent exits.
    Refused(String),
    /// Try again after the backoff.
    Retry(String),
}

/// One connection to the broker after a welcome.
pub(super) struct Conn {
    pub(super) conn: quinn::Connection,
    pub(super) send: quinn::SendStream,
    pub(super) recv: quinn::RecvStream,
    pub(super) heartbeat: Duration,
    /// The broker is lost after this long without a message (`None`: no limit).
    pub(super) silence_max: Option<Duration>,
    pub(super) agent_id: AgentId,
    pub(super) _endpoint: quinn::Endpoint,
}

/// A dialled connection: its endpoint, the connection and its one stream.
type Dialled = (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
);

/// Dials the broker and says hello; `resume_agent` is the id of the last welcome,
/// so the broker resumes this agent.
pub(super) async fn connect(
    cfg: &AgentConfig,
    work: &Work,
    born: Instant,
    resume_agent: Option<AgentId>,
) -> Result<Conn, ConnectError> {
    let (endpoint, conn, mut send, mut recv) = dial(cfg).await?;
    write_frame(&mut send, &hello(cfg, work, born, resume_agent))
        .await
        .map_err(|e| ConnectError::Retry(format!("broker at {}: {e}", cfg.broker)))?;
    match read_frame::<_, HelloReply>(&mut recv, 64 << 10).await {
        Ok(Some(HelloReply::Welcome {
            agent_id,
            heartbeat_interval_ms,
            heartbeat_timeout_ms,
        })) => {
            match resume_agent {
                Some(old) if old != agent_id => tracing::info!(
                    "connected to {} as agent {agent_id} (was {old}: not resumed)",
                    cfg.broker
                ),
                _ => tracing::info!("connected to {} as agent {agent_id}", cfg.broker),
            }
            Ok(Conn {
                conn,
                send,
                recv,
                agent_id,
                heartbeat: Duration::from_millis(heartbeat_interval_ms.clamp(100, 60_000)),
                silence_max: (heartbeat_timeout_ms > 0)
                    .then(|| Duration::from_millis(heartbeat_timeout_ms)),
                _endpoint: endpoint,
            })
        }
        Ok(Some(HelloReply::Refused { reason })) => Err(ConnectError::Refused(format!(
            "broker at {} refused this agent: {reason}",
            cfg.broker
        ))),
        Ok(None) => Err(ConnectError::Retry(format!(
            "broker at {} closed the connection during the handshake",
            cfg.broker
        ))),
        Err(e) => Err(ConnectError::Retry(format!(
            "broker at {}: {e}",
            cfg.broker
        ))),
    }
}

/// Resolves the broker, opens QUIC with its pinned fingerprint and one stream.
/// A wrong fingerprint or protocol version is refused for good, the rest retried.
async fn dial(cfg: &AgentConfig) -> Result<Dialled, ConnectError> {
    let addr = tokio::net::lookup_host(&cfg.broker)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            ConnectError::Retry(format!("cannot resolve broker address {}", cfg.broker))
        })?;
    let endpoint = tls::client_endpoint(&addr).map_err(|e| ConnectError::Retry(e.to_string()))?;
    let conn = tls::connect(&endpoint, &cfg.broker, cfg.fingerprint)
        .await
        .map_err(|e| {
            let m = e.to_string();
            if m.contains("fingerprint") || m.contains("protocol version") {
                ConnectError::Refused(m)
            } else {
                ConnectError::Retry(m)
            }
        })?;
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| ConnectError::Retry(format!("broker at {}: {e}", cfg.broker)))?;
    Ok((endpoint, conn, send, recv))
}

/// The agent's hello: who it is, what it offers, the lifetime it has left and
/// every attempt it still holds (the broker cancels those no longer ours).
fn hello(cfg: &AgentConfig, work: &Work, born: Instant, resume_agent: Option<AgentId>) -> Hello {
    let lifetime_ms = cfg
        .lifetime
        .map(|l| l.saturating_sub(born.elapsed()).as_millis() as u64);
    let held = work.held();
    Hello::Agent(AgentHello {
        protocol: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        token: cfg.token.clone(),
        name: cfg.name.clone(),
        hostname: cfg.hostname.clone(),
        resources: cfg.resources.clone(),
        tags: cfg.tags.clone(),
        runtimes: cfg
            .runtimes
            .iter()
            .map(|r| r.kind.name().to_string())
            .collect(),
        limit_mode: cfg.limits.name().to_string(),
        lifetime_ms,
        held_attempts: held,
        pilot_id: std::env::var("SCALABLE_PILOT_ID").ok(),
        resume_agent,
    })
}
