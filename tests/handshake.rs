//! The version handshake with a real broker (issue 14). The agent here is a
//! raw client that says an older hello than this build's agent would: one of
//! the previous protocol is served (it runs a task to the end), an older one
//! and a newer one are refused with the one line that names the version to
//! install, even when the rest of the hello no longer decodes.

use std::time::Duration;

use scalable_common::access::AgentTokenFile;
use scalable_common::frame::{read_frame, write_frame};
use scalable_common::handshake::{AGENT_PROTOCOL_OLDEST, RELEASE};
use scalable_common::protocol::{
    AgentHello, AttemptEnd, Hello, HelloReply, Started, ToAgent, MESSAGE_BYTES_MAX,
    PROTOCOL_VERSION,
};
use scalable_common::protocol_v5::{AttemptResultV5, FromAgentV5};
use scalable_common::resources::Resources;
use scalable_common::tls;

use crate::support::*;

/// One raw connection to the broker, before the hello.
pub(crate) struct Raw {
    _endpoint: quinn::Endpoint,
    pub(crate) conn: quinn::Connection,
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
}

/// A runtime with a worker thread: the QUIC connection must keep moving
/// between the test's `block_on` calls (acks, resends, the events sent last).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A connection and its first stream, and the agent token (a CLI's is in
/// the access file).
pub(crate) async fn dial(b: &Broker) -> (Raw, String) {
    let file = AgentTokenFile::load(&b.token_file()).expect("agent.token");
    let addr: std::net::SocketAddr = file.address.parse().expect("address");
    let endpoint = tls::client_endpoint(&addr).expect("endpoint");
    let pin = tls::parse_fingerprint(&file.fingerprint).expect("fingerprint");
    let conn = tls::connect(&endpoint, &file.address, pin)
        .await
        .expect("connect");
    let (send, recv) = conn.open_bi().await.expect("stream");
    let raw = Raw {
        _endpoint: endpoint,
        conn,
        send,
        recv,
    };
    (raw, file.token)
}

/// The hello of an agent of release `release` speaking `protocol`.
fn hello(protocol: u16, release: &str, token: String) -> Hello {
    Hello::Agent(AgentHello {
        protocol,
        agent_version: release.into(),
        token,
        name: "old-agent".into(),
        hostname: "old-host".into(),
        resources: Resources {
            cpus: 1,
            memory_bytes: 1 << 30,
            gpus: 0,
            custom: vec![],
        },
        tags: vec![],
        runtimes: vec![],
        limit_mode: "sampling".into(),
        lifetime_ms: None,
        held_attempts: vec![],
        pilot_id: None,
        resume_agent: None,
    })
}

async fn reply(raw: &mut Raw) -> HelloReply {
    tokio::time::timeout(Duration::from_secs(20), read_frame(&mut raw.recv, 64 << 10))
        .await
        .expect("a reply within 20 s")
        .expect("a readable reply")
        .expect("a reply before the end of the stream")
}

/// Runs the first assignment the broker sends as a success, as an agent would.
async fn run_one_assignment(raw: &mut Raw) {
    loop {
        let msg: ToAgent = tokio::time::timeout(
            Duration::from_secs(30),
            read_frame(&mut raw.recv, MESSAGE_BYTES_MAX),
        )
        .await
        .expect("an assignment within 30 s")
        .expect("a readable message")
        .expect("the broker keeps the stream open");
        let ToAgent::Assign(batch) = msg else {
            continue;
        };
        let attempt = batch[0].attempt;
        let now_us = 1_000_000;
        // As an agent of protocol 5 encodes its events (`protocol_v5`).
        let events = FromAgentV5::Events {
            started: vec![Started {
                attempt,
                at_us: now_us,
            }],
            finished: vec![AttemptResultV5 {
                attempt,
                end: AttemptEnd::Exited { code: 0 },
                started_at_us: now_us,
                ended_at_us: now_us + 1,
                peak_rss_bytes: 0,
                cpu_time_us: 0,
                stdout_tail: Vec::new(),
                stderr_tail: Vec::new(),
                stdout_bytes: 0,
                stderr_bytes: 0,
                exit_code: Some(0),
                memory_limit_bytes: None,
            }],
            free: Resources::cpus(1),
        };
        write_frame(&mut raw.send, &events).await.expect("events");
        return;
    }
}

#[test]
fn an_agent_of_the_previous_protocol_is_served_and_runs_a_task() {
    let b = Broker::start();
    // The newest older protocol whose messages differ from today's: 5, whose
    // agents encode their results without the fields protocol 6 added
    // (protocol 7 only appended a variant and new streams: a protocol 6
    // agent's messages are today's).
    let old = scalable_common::protocol_v5::AGENT_MESSAGES_SINCE - 1;
    assert!(old < PROTOCOL_VERSION);
    assert!(
        old >= AGENT_PROTOCOL_OLDEST,
        "the previous protocol is served"
    );
    let rt = runtime();
    let (mut raw, token) = rt.block_on(dial(&b));
    rt.block_on(write_frame(&mut raw.send, &hello(old, "0.0.3", token)))
        .expect("hello");
    let welcome = rt.block_on(reply(&mut raw));
    assert!(
        matches!(welcome, HelloReply::Welcome { .. }),
        "{welcome:?}\n{}",
        b.log()
    );
    let run = b.ok(&["submit", "--", "true"]).trim().to_string();
    rt.block_on(run_one_assignment(&mut raw));
    let (out, _) = run_within(b.cli_command(&["wait", &run]), Duration::from_secs(30));
    let out = out.expect("the run ends within 30 s");
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), b.log());
    let agents = b.ok(&["agents"]);
    assert!(agents.contains("old-agent"), "{agents}");
    raw.conn.close(0u32.into(), b"done");
}

/// The refusal a raw agent gets for the hello `body` (a frame's bytes).
fn refusal_for(b: &Broker, body: Vec<u8>) -> String {
    let rt = runtime();
    let (mut raw, _token) = rt.block_on(dial(b));
    rt.block_on(async {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        tokio::io::AsyncWriteExt::write_all(&mut raw.send, &frame)
            .await
            .expect("hello");
    });
    match rt.block_on(reply(&mut raw)) {
        HelloReply::Refused { reason } => reason,
        other => panic!("served: {other:?}"),
    }
}

#[test]
fn an_agent_the_broker_cannot_serve_is_told_which_version_to_install() {
    let b = Broker::start();
    let older = AGENT_PROTOCOL_OLDEST - 1;
    let token = AgentTokenFile::load(&b.token_file()).unwrap().token;
    let body = postcard::to_stdvec(&hello(older, "0.0.2", token)).unwrap();
    let reason = refusal_for(&b, body);
    assert_eq!(
        reason,
        format!(
            "agent 0.0.2 speaks protocol {older}; this broker (scalable {RELEASE}) serves agents of protocols {AGENT_PROTOCOL_OLDEST} to {PROTOCOL_VERSION}: install scalable-agent {RELEASE}"
        )
    );
    // A newer agent whose hello this broker cannot even decode past its
    // versions (variant 0 = agent, protocol, release, then unknown fields).
    let newer = PROTOCOL_VERSION + 1;
    let mut body = postcard::to_stdvec(&(0u8, newer, "9.9.9")).unwrap();
    body.extend_from_slice(&[0xff; 16]);
    let reason = refusal_for(&b, body);
    assert!(
        reason.ends_with(&format!(
            ": install scalable-agent {RELEASE}, or upgrade the broker to 9.9.9"
        )),
        "{reason}"
    );
    assert!(b.log().contains(&reason), "the broker logs it too");
}
