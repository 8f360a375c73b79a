//! One connected CLI: each bidirectional stream carries one `Request` and its
//! `Response`. The request goes to the core task, which releases the reply
//! only after the writes behind it are committed.
//!
//! It answers nothing itself except a request it cannot parse; it must not
//! touch the core or the store.

use scalable_common::frame::{read_frame, write_frame};
use scalable_common::protocol::{Request, MESSAGE_BYTES_MAX};
use tokio::sync::{mpsc, oneshot};

use super::{bad, CoreMsg};

/// Serves a CLI whose hello was accepted, one task per request stream.
pub(super) async fn serve(conn: quinn::Connection, core_tx: mpsc::UnboundedSender<CoreMsg>) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(serve_request(send, recv, core_tx.clone()));
    }
}

async fn serve_request(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    core_tx: mpsc::UnboundedSender<CoreMsg>,
) {
    let req: Request = match read_frame(&mut recv, MESSAGE_BYTES_MAX).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            let _ = write_frame(&mut send, &bad(format!("malformed request: {e}"))).await;
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
}
