//! One connected agent: its registration with the core task, the `Welcome`,
//! a writer task for what the core sends it, and the reader that forwards
//! its frames to the core until the link goes away.
//!
//! It owns the connection, not the agent: every decision (who the agent is,
//! what it runs, whether a disconnect is a loss) is the core's. It must not
//! read or write the store.

use std::sync::atomic::{AtomicU64, Ordering};

use scalable_common::frame::{read_frame, write_frame, FrameError};
use scalable_common::protocol::{
    AgentHello, AgentId, FromAgent, HelloReply, ToAgent, MESSAGE_BYTES_MAX,
};
use scalable_common::{protocol_v4, protocol_v5};
use tokio::sync::{mpsc, oneshot};

use super::{CoreMsg, Liveness};

/// Connection serials: a reconnected agent keeps its id, so a late "gone" of
/// its old connection must not be taken for the new one.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Serves an agent whose hello was accepted, until it disconnects.
pub(super) async fn serve(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    hello: AgentHello,
    core_tx: mpsc::UnboundedSender<CoreMsg>,
    liveness: Liveness,
    staging: super::staging_io::StagingShared,
) {
    let name = hello.name.clone();
    let protocol = hello.protocol;
    let serial = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel::<ToAgent>();
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
    let welcome = HelloReply::Welcome {
        agent_id: agent,
        heartbeat_interval_ms: liveness.interval_ms,
        heartbeat_timeout_ms: liveness.timeout_ms,
    };
    if write_frame(&mut send, &welcome).await.is_err() {
        let _ = core_tx.send(CoreMsg::AgentGone {
            agent,
            conn: serial,
            reason: "disconnected during hello".into(),
            fatal: false,
        });
        return;
    }
    let writer = spawn_writer(conn.clone(), send, rx, format!("agent {agent} ({name})"));
    // Protocol 7: the agent's further streams carry staging transfers.
    let streams = tokio::spawn(super::staging_io::serve_streams(
        conn.clone(),
        agent,
        staging,
        core_tx.clone(),
    ));
    let peer = Peer {
        agent,
        name: &name,
        protocol,
    };
    let (reason, fatal) = read_until_gone(&conn, recv, &peer, &core_tx).await;
    writer.abort();
    streams.abort();
    tracing::info!("agent {agent} ({name}) disconnected: {reason}");
    let _ = core_tx.send(CoreMsg::AgentGone {
        agent,
        conn: serial,
        reason,
        fatal,
    });
}

/// Writes what the core sends this agent; a `Shutdown` is the last frame.
/// A message it cannot write ends the connection (the agent reconnects and
/// reports what it holds) and says why in the log; `who` names the agent.
fn spawn_writer(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<ToAgent>,
    who: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let shutdown = matches!(msg, ToAgent::Shutdown { .. });
            if matches!(msg, ToAgent::Return(_)) {
                // Tests: a return that reaches its agent late races its start.
                tokio::task::block_in_place(|| {
                    scalable_common::failpoint::hit("dispatch.before_return")
                });
            }
            if let Err(e) = write_frame(&mut send, &msg).await {
                tracing::warn!(
                    "{who}: cannot send {}: {e}; closing its connection",
                    describe(&msg)
                );
                conn.close(5u32.into(), b"cannot send a message");
                return;
            }
            if shutdown {
                let _ = send.finish();
                return;
            }
        }
        // The core dropped this agent (declared lost): close, so it reconnects.
        conn.close(4u32.into(), b"declared lost");
    })
}

/// A message in a log line: its kind and how many items it carries.
fn describe(msg: &ToAgent) -> String {
    match msg {
        ToAgent::Assign(list) => format!("an assignment of {} attempts", list.len()),
        ToAgent::Ack { counted, ignored } => {
            format!("an ack of {} results", counted.len() + ignored.len())
        }
        ToAgent::Heartbeat => "a heartbeat".into(),
        ToAgent::Cancel(list) => format!("a cancel of {} attempts", list.len()),
        ToAgent::Return(list) => format!("a return of {} attempts", list.len()),
        ToAgent::Shutdown { .. } => "a shutdown".into(),
    }
}

/// The agent at the other end of a session.
struct Peer<'a> {
    agent: AgentId,
    name: &'a str,
    /// Its hello's protocol: an agent older than
    /// [`protocol_v5::AGENT_MESSAGES_SINCE`] sends an older `FromAgent`.
    protocol: u16,
}

/// One message of the agent, read as its protocol encodes it.
async fn read_message(
    recv: &mut quinn::RecvStream,
    protocol: u16,
) -> Result<Option<FromAgent>, FrameError> {
    if protocol >= protocol_v5::AGENT_MESSAGES_SINCE {
        return read_frame::<_, FromAgent>(recv, MESSAGE_BYTES_MAX).await;
    }
    if protocol >= protocol_v4::AGENT_MESSAGES_SINCE {
        let old = read_frame::<_, protocol_v5::FromAgentV5>(recv, MESSAGE_BYTES_MAX).await?;
        return Ok(old.map(FromAgent::from));
    }
    let old = read_frame::<_, protocol_v4::FromAgentV4>(recv, MESSAGE_BYTES_MAX).await?;
    Ok(old.map(FromAgent::from))
}

/// Forwards the agent's frames to the core until the link ends; returns why
/// it ended and whether the agent broke the protocol (`fatal`).
async fn read_until_gone(
    conn: &quinn::Connection,
    mut recv: quinn::RecvStream,
    peer: &Peer<'_>,
    core_tx: &mpsc::UnboundedSender<CoreMsg>,
) -> (String, bool) {
    let Peer { agent, name, .. } = *peer;
    loop {
        match read_message(&mut recv, peer.protocol).await {
            Ok(Some(msg)) => {
                // A `Leaving` agent is still read: results of drained attempts may follow.
                if core_tx.send(CoreMsg::Agent { agent, msg }).is_err() {
                    return ("broker stopping".to_string(), false);
                }
            }
            Ok(None) => return ("disconnected".to_string(), false),
            // The link went away (timeout, reset, a peer that gave up on us):
            // the agent may come back with its attempts; not a loss yet.
            Err(e @ (FrameError::Io(_) | FrameError::Truncated)) => return (format!("{e}"), false),
            Err(e) => {
                tracing::warn!("agent {agent} ({name}): {e}; closing its connection");
                conn.close(2u32.into(), b"malformed message");
                return (format!("malformed message: {e}"), true);
            }
        }
    }
}
