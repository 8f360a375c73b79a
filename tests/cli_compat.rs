//! A CLI of the previous protocol against this broker (issue 20, protocol
//! 9): a raw client says a protocol 8 hello and asks `analyze` of a run that
//! has a failed transfer; the reply must decode as protocol 8 encodes
//! `RunAnalysis` (no bytes left over, which a real old CLI refuses), while a
//! current CLI gets the transfers.

use std::time::Duration;

use scalable_common::access::load_access;
use scalable_common::frame::{read_frame, write_frame};
use scalable_common::protocol::{
    CancelledJob, CliHello, FailedTask, Hello, HelloReply, Request, Response, RunId, RunRef,
    TaskId, MESSAGE_BYTES_MAX, PROTOCOL_VERSION,
};
use serde::Deserialize;

use crate::handshake::{dial, runtime};
use crate::support::*;

/// `RunAnalysis` as protocol 8 has it.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read by `Debug` and the decoder only
struct RunAnalysisV8 {
    run: RunId,
    name: String,
    state: String,
    total: u64,
    succeeded: u64,
    failed: u64,
    cancelled: u64,
    unfinished: u64,
    failed_tasks: Vec<FailedTask>,
    cancelled_jobs: Vec<CancelledJob>,
    next: Option<TaskId>,
}

/// `Response` as protocol 8 has it, up to `Analyze` (the 7th variant; the
/// ones before are never sent here).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
enum ResponseV8 {
    Submitted(()),
    Status(()),
    Resumed(()),
    Cancelled(()),
    Agents(()),
    Stats(()),
    Analyze(RunAnalysisV8),
}

/// The raw reply body to `analyze RUN` from a CLI saying `protocol`.
fn analyze_as(b: &Broker, protocol: u16, run: RunId) -> Vec<u8> {
    let rt = runtime();
    rt.block_on(async {
        let (mut raw, _agent_token) = dial(b).await;
        let file = load_access(&b.access()).expect("access file");
        let hello = Hello::Cli(CliHello {
            protocol,
            cli_version: "0.0.8".into(),
            token: file.token,
        });
        write_frame(&mut raw.send, &hello).await.expect("hello");
        let reply: Option<HelloReply> = read_frame(&mut raw.recv, 64 << 10).await.expect("reply");
        assert!(
            matches!(reply, Some(HelloReply::Welcome { .. })),
            "{reply:?}"
        );
        let conn = raw.conn;
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        let req = Request::Analyze {
            run: RunRef::Id(run),
            after: None,
        };
        write_frame(&mut send, &req).await.expect("request");
        let _ = send.finish();
        let mut prefix = [0u8; 4];
        let read = async {
            tokio::io::AsyncReadExt::read_exact(&mut recv, &mut prefix).await?;
            let len = u32::from_be_bytes(prefix) as usize;
            assert!(len <= MESSAGE_BYTES_MAX);
            let mut body = vec![0u8; len];
            tokio::io::AsyncReadExt::read_exact(&mut recv, &mut body).await?;
            std::io::Result::Ok(body)
        };
        let body = tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("a reply within 20 s")
            .expect("a reply");
        conn.close(0u32.into(), b"done");
        body
    })
}

#[test]
fn a_cli_of_protocol_8_reads_analyze_without_the_transfers_a_current_one_with() {
    let (b, run) = crate::transfer_why::failed_over_the_bound();
    let id: RunId = run.parse().expect("run id");

    let old = analyze_as(&b, 8, id);
    let decoded: ResponseV8 =
        scalable_common::frame::decode_body(&old).expect("a protocol 8 cli reads it");
    match decoded {
        ResponseV8::Analyze(a) => {
            assert_eq!((a.run, a.failed), (id, 1));
            assert!(a.failed_tasks[0].reason.contains("input big.bin is 2M"));
        }
        other => panic!("{other:?}"),
    }

    let now = analyze_as(&b, PROTOCOL_VERSION, id);
    assert!(
        scalable_common::frame::decode_body::<ResponseV8>(&now).is_err(),
        "the current shape is longer"
    );
    match scalable_common::frame::decode_body::<Response>(&now).expect("current") {
        Response::Analyze(a) => {
            assert_eq!(a.transfers.len(), 1, "{:?}", a.transfers);
            assert_eq!(a.transfers[0].direction, "in");
        }
        other => panic!("{other:?}"),
    }
}
