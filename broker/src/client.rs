//! The CLI's connection to a broker: find `access.json`, pin the fingerprint,
//! present the user token, one request per stream.
//!
//! Must not: know what a request means or which reply a command expects; the
//! typed helper in `cli::request` unpacks replies. Broker refusals
//! (`Response::Error`) become a `CliError` here, with the broker's exit code.

use std::path::Path;
use std::time::Duration;

use scalable_common::access::{self, AccessFile};
use scalable_common::exit::ExitCode;
use scalable_common::frame::{read_frame, write_frame, FrameError};
use scalable_common::protocol::{
    CliHello, Hello, HelloReply, Request, Response, MESSAGE_BYTES_MAX, PROTOCOL_VERSION,
};
use scalable_common::tls;

use crate::cli_error::CliError;

/// How long one request may take before the CLI gives up on the broker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Client {
    conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

impl Client {
    /// Connects using `--access FILE`, `$SCALABLE_ACCESS` or `./.scalable/access.json`.
    pub async fn connect(access_path: Option<&Path>) -> Result<Client, CliError> {
        let path = access::find_access(access_path).map_err(|e| match e {
            // The hint apart from the message, so `--json` carries it as `hint`.
            access::AccessError::NoAccessFile { path, hint } => {
                CliError::unreachable(format!("no broker access file found at {}", path.display()))
                    .with_hint(hint)
            }
            e => CliError::unreachable(e.to_string()),
        })?;
        let file: AccessFile =
            access::load_access(&path).map_err(|e| CliError::unreachable(e.to_string()))?;
        let pin = tls::parse_fingerprint(&file.fingerprint)
            .map_err(|e| CliError::unreachable(format!("{}: fingerprint: {e}", path.display())))?;
        let addr: std::net::SocketAddr = tokio::net::lookup_host(&file.address)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                CliError::unreachable(format!(
                    "{}: cannot resolve broker address {:?}",
                    path.display(),
                    file.address
                ))
            })?;
        let endpoint =
            tls::client_endpoint(&addr).map_err(|e| CliError::unreachable(e.to_string()))?;
        let conn = tls::connect(&endpoint, &file.address, pin)
            .await
            .map_err(|e| CliError::unreachable(e.to_string()))?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| CliError::unreachable(format!("broker at {}: {e}", file.address)))?;
        let hello = Hello::Cli(CliHello {
            protocol: PROTOCOL_VERSION,
            cli_version: env!("CARGO_PKG_VERSION").into(),
            token: file.token.clone(),
        });
        write_frame(&mut send, &hello)
            .await
            .map_err(|e| CliError::unreachable(format!("broker at {}: {e}", file.address)))?;
        let _ = send.finish();
        let reply: Option<HelloReply> = read_frame(&mut recv, 64 << 10)
            .await
            .map_err(|e| CliError::unreachable(format!("broker at {}: {e}", file.address)))?;
        match reply {
            Some(HelloReply::Welcome { .. }) => Ok(Client {
                conn,
                _endpoint: endpoint,
            }),
            Some(HelloReply::Refused { reason }) => Err(CliError::unreachable(format!(
                "broker at {} refused this cli: {reason}",
                file.address
            ))),
            None => Err(CliError::unreachable(format!(
                "broker at {} closed the connection during the handshake",
                file.address
            ))),
        }
    }

    /// Sends one request and waits for its response. Broker-side refusals come
    /// back as `CliError` with the exit code the broker chose.
    pub async fn call(&self, req: &Request) -> Result<Response, CliError> {
        let fut = async {
            let (mut send, mut recv) = self
                .conn
                .open_bi()
                .await
                .map_err(|e| CliError::unreachable(format!("lost the broker: {e}")))?;
            write_frame(&mut send, req).await.map_err(request_error)?;
            let _ = send.finish();
            read_frame::<_, Response>(&mut recv, MESSAGE_BYTES_MAX)
                .await
                .map_err(reply_error)?
                .ok_or_else(|| {
                    CliError::unreachable(
                        "the broker closed the request stream without answering".into(),
                    )
                })
        };
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| {
                CliError::unreachable("the broker did not answer within 120 s".into())
            })??;
        match resp {
            Response::Error { message, exit_code } => {
                Err(CliError::new(ExitCode::from_code(exit_code), message, None))
            }
            other => Ok(other),
        }
    }

    pub fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }
}

/// A request that could not be sent: too large is the input's fault (exit 2,
/// nothing was sent); anything else is the connection's (exit 3).
fn request_error(e: FrameError) -> CliError {
    match e {
        FrameError::TooLarge { len, max } => CliError::bad_input(format!(
            "the request of {len} bytes exceeds the cap of {max} bytes; nothing was sent"
        )),
        e => CliError::unreachable(format!("lost the broker: {e}")),
    }
}

/// A reply that could not be read: the connection going away is an
/// unreachable broker (exit 3); a reply that arrived but is too large or
/// unreadable is a failure of this request, not of the broker (exit 1).
fn reply_error(e: FrameError) -> CliError {
    match e {
        FrameError::Io(_) | FrameError::Truncated => {
            CliError::unreachable(format!("lost the broker: {e}"))
        }
        FrameError::TooLarge { .. } | FrameError::Decode(_) | FrameError::Encode(_) => {
            CliError::failed(format!("the broker's reply: {e}"))
                .with_hint("are the cli and broker the same version?")
        }
    }
}

#[cfg(test)]
mod tests {
    use scalable_common::exit::ExitCode;

    use super::*;

    #[test]
    fn frame_errors_name_whose_fault_they_are() {
        let too_large = || FrameError::TooLarge { len: 20, max: 10 };
        let lost = || FrameError::Truncated;
        assert_eq!(request_error(too_large()).code, ExitCode::BadInput);
        assert_eq!(request_error(lost()).code, ExitCode::Unreachable);
        assert_eq!(reply_error(too_large()).code, ExitCode::Failed);
        assert_eq!(reply_error(lost()).code, ExitCode::Unreachable);
        assert_eq!(
            request_error(too_large()).to_string(),
            "error: the request of 20 bytes exceeds the cap of 10 bytes; nothing was sent"
        );
    }
}
