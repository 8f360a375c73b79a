//! One connected CLI: each bidirectional stream carries one `Request` and its
//! `Response`. The request goes to the core task, which releases the reply
//! only after the writes behind it are committed.
//!
//! A submit is planned here, on a blocking thread, before it reaches the
//! core: validating, compiling and serialising a workflow of megabytes takes
//! the core hundreds of milliseconds that every agent and CLI would wait.
//!
//! `advise` and `tune` never reach the core: they are answered here by the
//! advisor service on a blocking thread (training takes seconds).
//!
//! It answers nothing itself except a request it cannot parse, and a reply
//! too large to send (replaced by an error that says so); it must not touch
//! the core or the store.

use std::sync::Arc;

use scalable_common::frame::{encoded_len, read_frame, write_frame};
use scalable_common::manifest::Manifest;
use scalable_common::protocol::{Request, Response, SubmitRequest, MESSAGE_BYTES_MAX};
use scalable_common::protocol_v8::Reply;
use tokio::sync::{mpsc, oneshot};

use super::{bad, CoreMsg};
use crate::advisor::service::AdvisorService;
use crate::core::SubmitPlan;
use crate::submit;

/// What every CLI connection shares besides the core.
#[derive(Clone)]
pub(super) struct CliShared {
    pub manifest: Option<Arc<Manifest>>,
    pub advisor: Arc<AdvisorService>,
    /// The connected CLI's protocol (its hello's): a protocol 7 CLI is
    /// answered in words it can read.
    pub protocol: u16,
}

impl CliShared {
    pub fn new(manifest: Option<Arc<Manifest>>, advisor: Arc<AdvisorService>) -> CliShared {
        CliShared {
            manifest,
            advisor,
            protocol: scalable_common::protocol::PROTOCOL_VERSION,
        }
    }
}

/// Serves a CLI whose hello was accepted, one task per request stream.
pub(super) async fn serve(
    conn: quinn::Connection,
    core_tx: mpsc::UnboundedSender<CoreMsg>,
    cli: CliShared,
) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(serve_request(send, recv, core_tx.clone(), cli.clone()));
    }
}

async fn serve_request(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    core_tx: mpsc::UnboundedSender<CoreMsg>,
    cli: CliShared,
) {
    let req: Request = match read_frame(&mut recv, MESSAGE_BYTES_MAX).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            let _ = write_frame(&mut send, &bad(format!("malformed request: {e}"))).await;
            return;
        }
    };
    let hint = hint_for(&req);
    let (tx, rx) = oneshot::channel();
    let msg = match req {
        Request::Submit(s) => CoreMsg::Submit {
            plan: plan_off_core(s, cli.manifest).await,
            reply: tx,
        },
        Request::Advise(a) => {
            let resp = advise_off_core(cli.advisor, move |s| s.advise(&a).map(|x| json(&x))).await;
            return reply_with(send, resp, hint, cli.protocol).await;
        }
        Request::Tune(t) => {
            let resp = advise_off_core(cli.advisor, move |s| s.tune(&t).map(|x| json(&x))).await;
            return reply_with(send, resp, hint, cli.protocol).await;
        }
        req => CoreMsg::Cli { req, reply: tx },
    };
    if core_tx.send(msg).is_err() {
        return;
    }
    if let Ok(resp) = rx.await {
        reply_with(send, for_protocol(resp, cli.protocol), hint, cli.protocol).await;
    }
}

/// A reply as a CLI of `protocol` reads it: `why`'s reasons of protocol 8
/// (transfers) become the ones they refine for a protocol 7 CLI.
fn for_protocol(resp: Response, protocol: u16) -> Response {
    match resp {
        Response::Why(mut w) if protocol < 8 => {
            w.reason = w.reason.for_protocol_7();
            Response::Why(w)
        }
        other => other,
    }
}

/// Sends `resp` as a CLI of `protocol` reads it (`protocol_v8`).
async fn reply_with(mut send: quinn::SendStream, resp: Response, hint: &str, protocol: u16) {
    let reply = Reply::for_cli(within_cap(resp, hint), protocol);
    if let Err(e) = write_frame(&mut send, &reply).await {
        tracing::warn!("cannot send a reply to a cli: {e}");
    }
    let _ = send.finish();
    // Let the response drain before the stream is dropped.
    let _ = send.stopped().await;
}

fn json<T: serde::Serialize>(x: &T) -> String {
    serde_json::to_string(x).unwrap_or_default()
}

/// An advisor call on a blocking thread; its error is bad input (exit 2).
async fn advise_off_core(
    advisor: Arc<AdvisorService>,
    call: impl FnOnce(&AdvisorService) -> Result<String, String> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(move || call(&advisor)).await {
        Ok(Ok(json)) => Response::Advice { json },
        Ok(Err(message)) => bad(message),
        Err(e) => Response::Error {
            message: format!("the advisor failed: {e}"),
            exit_code: scalable_common::exit::ExitCode::Failed.code(),
        },
    }
}

/// `submit::plan` on a blocking thread (it is pure cpu work on the request).
async fn plan_off_core(
    s: SubmitRequest,
    manifest: Option<Arc<Manifest>>,
) -> Result<SubmitPlan, String> {
    tokio::task::spawn_blocking(move || submit::plan(s, manifest.as_deref()))
        .await
        .unwrap_or_else(|e| Err(format!("planning the submit failed: {e}")))
}

/// The reply itself when it fits in one message; else the error that says
/// so, which the CLI prints and exits 1 with (it used to find the stream
/// closed and call the broker unreachable). Paged replies rarely get here:
/// only a single item larger than the cap does.
fn within_cap(resp: Response, hint: &str) -> Response {
    let bytes = encoded_len(&resp);
    if bytes <= MESSAGE_BYTES_MAX {
        return resp;
    }
    Response::Error {
        message: format!(
            "the broker's reply of {bytes} bytes exceeds the cap of {MESSAGE_BYTES_MAX} bytes (hint: {hint})"
        ),
        exit_code: scalable_common::exit::ExitCode::Failed.code(),
    }
}

/// What to ask instead when the reply to `req` cannot be sent.
fn hint_for(req: &Request) -> &'static str {
    match req {
        Request::Status { run: None, .. } => "ask for one run: scalable status RUN",
        Request::Analyze { .. } => "look at one task: scalable logs RUN/JOB/INDEX --stderr",
        Request::Logs { .. } => "ask for one attempt: scalable logs TASK --attempt N",
        Request::Report { .. } => "scalable stats RUN summarises the run without its attempts",
        Request::Export { .. } => "this is a bug in scalable: export pages its rows",
        _ => "ask for less",
    }
}

#[cfg(test)]
mod tests {

    /// A protocol 7 CLI cannot read the transfer reasons of protocol 8: it
    /// gets the reason they refine.
    #[test]
    fn a_protocol_7_cli_gets_the_reason_a_transfer_refines() {
        use scalable_common::explain::Reason;
        use scalable_common::protocol::WhyAnswer;
        let answer = |reason| {
            Response::Why(WhyAnswer {
                task: "1/a/0".into(),
                item: None,
                state: "assigned".into(),
                reason,
            })
        };
        let staging = Reason::StagingIn {
            agent: None,
            done_bytes: 1,
            total_bytes: None,
        };
        let reason = |r: Response| match r {
            Response::Why(w) => w.reason,
            _ => panic!("not a why"),
        };
        assert_eq!(
            reason(for_protocol(answer(staging.clone()), 7)),
            Reason::Assigned { agent: None }
        );
        assert_eq!(reason(for_protocol(answer(staging.clone()), 8)), staging);
    }

    use scalable_common::protocol::{Page, RunStatus};

    use super::*;

    fn status_named(name: String) -> Response {
        Response::Status(Page {
            items: vec![RunStatus {
                run: 1,
                name,
                state: "running".into(),
                submitted_at_ms: 0,
                finished_at_ms: None,
                counts: Default::default(),
                jobs: Vec::new(),
                blocked: Vec::new(),
            }],
            next: None,
        })
    }

    #[test]
    fn a_reply_within_the_cap_goes_as_it_is() {
        let resp = within_cap(status_named("small".into()), "unused");
        assert!(matches!(resp, Response::Status(_)));
    }

    #[test]
    fn a_reply_over_the_cap_becomes_an_error_that_names_its_size() {
        let resp = status_named("n".repeat(MESSAGE_BYTES_MAX));
        let bytes = encoded_len(&resp);
        let Response::Error { message, exit_code } = within_cap(resp, "ask for less") else {
            panic!("an error")
        };
        assert_eq!(exit_code, 1);
        assert!(
            message.starts_with(&format!(
                "the broker's reply of {bytes} bytes exceeds the cap of {MESSAGE_BYTES_MAX} bytes (hint: ask for less)"
            )),
            "{message}"
        );
    }
}
