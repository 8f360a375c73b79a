//! Accepting connections: the QUIC accept loop, the peer's `Hello`, the
//! version check (`handshake`: read from the hello's head before the rest),
//! the token check, and the refusal a peer reads before the close.
//!
//! It decides only who may talk to the broker; what an agent or a CLI then
//! says is served by `agent_session` and `cli_session`. It must not touch the
//! core or the store.

use std::sync::Arc;
use std::time::Duration;

use scalable_common::access;
use scalable_common::frame::{decode_body, read_frame_body, write_frame};
use scalable_common::handshake::{self, HelloHead};
use scalable_common::protocol::{AgentHello, CliHello, Hello, HelloReply};
use tokio::sync::mpsc;

use super::staging_io::StagingShared;
use super::{agent_session, cli_session, CoreMsg, Liveness};

/// How long a peer has to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until aborted; each is served on its own task.
pub(super) fn spawn(
    endpoint: quinn::Endpoint,
    core_tx: mpsc::UnboundedSender<CoreMsg>,
    secrets: Arc<access::BrokerSecrets>,
    liveness: Liveness,
    cli: cli_session::CliShared,
    staging: StagingShared,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let core_tx = core_tx.clone();
            let secrets = secrets.clone();
            let cli = cli.clone();
            let staging = staging.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                match incoming.await {
                    Ok(conn) => {
                        handle_connection(conn, core_tx, secrets, liveness, cli, staging).await
                    }
                    Err(e) => tracing::warn!(
                        "refused connection from {remote}: {}",
                        describe_conn_error(&e)
                    ),
                }
            });
        }
    })
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
    cli: cli_session::CliShared,
    staging: StagingShared,
) {
    let remote = conn.remote_address();
    let (mut send, mut recv) = match tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        _ => return,
    };
    let body = match tokio::time::timeout(HELLO_TIMEOUT, read_frame_body(&mut recv, 64 << 10)).await
    {
        Ok(Ok(Some(b))) => b,
        Ok(Err(e)) => return bad_hello(&conn, e.to_string()),
        _ => return,
    };
    // The versions first: a peer whose hello this broker cannot decode any
    // more still hears which version to install.
    let head = match HelloHead::decode(&body) {
        Ok(h) => h,
        Err(e) => return bad_hello(&conn, e),
    };
    if let Some(why) = handshake::refusal(head.role(), head.version()) {
        return refuse(&conn, &mut send, why).await;
    }
    let hello: Hello = match decode_body(&body) {
        Ok(h) => h,
        Err(e) => return bad_hello(&conn, e.to_string()),
    };
    match hello {
        Hello::Agent(h) => {
            if let Some(why) = agent_refusal(&h, &secrets, remote) {
                return refuse(&conn, &mut send, why).await;
            }
            agent_session::serve(conn, send, recv, h, core_tx, liveness, staging).await;
        }
        Hello::Cli(h) => {
            if let Some(why) = cli_refusal(&h, &secrets) {
                return refuse(&conn, &mut send, why).await;
            }
            let welcome = HelloReply::Welcome {
                agent_id: 0,
                heartbeat_interval_ms: 0,
                heartbeat_timeout_ms: 0,
            };
            if write_frame(&mut send, &welcome).await.is_err() {
                return;
            }
            let _ = send.finish();
            let cli = cli_session::CliShared {
                protocol: h.protocol,
                ..cli
            };
            cli_session::serve(conn, core_tx, cli).await;
        }
    }
}

/// A hello that does not decode: logged, and the connection closed.
fn bad_hello(conn: &quinn::Connection, e: String) {
    tracing::warn!(
        "closed connection from {}: bad hello: {e}",
        conn.remote_address()
    );
    conn.close(2u32.into(), b"bad hello");
}

/// Why an agent's hello is refused, if it is (its versions passed already).
fn agent_refusal(
    h: &AgentHello,
    secrets: &access::BrokerSecrets,
    remote: std::net::SocketAddr,
) -> Option<String> {
    if !access::token_matches(&secrets.agent_token_hash, &h.token) {
        return Some(format!(
            "agent token refused for agent {:?} from {remote} (use the agent.token this broker wrote)",
            h.name
        ));
    }
    None
}

/// Why a CLI's hello is refused, if it is (its versions passed already).
fn cli_refusal(h: &CliHello, secrets: &access::BrokerSecrets) -> Option<String> {
    if !access::token_matches(&secrets.user_token_hash, &h.token) {
        return Some("user token refused (use the access.json this broker wrote)".into());
    }
    None
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
