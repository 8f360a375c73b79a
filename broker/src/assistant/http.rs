//! The one HTTP call the assistants make: a JSON `POST` over HTTP/1.1 to an
//! OpenAI-compatible or Ollama endpoint, with a connect timeout, one overall
//! deadline, and the reply capped at [`REPLY_BYTES_MAX`] before it is parsed.
//! `https://` goes through rustls (ring, webpki roots), as the rest of
//! Scalable's TLS does.
//!
//! Why not reqwest: it would add hyper, h2, tower and their kin to every cold
//! build of the CLI for one request per command; a blocking request on a
//! `std` socket is enough here and keeps the dependency list at one data
//! crate (`webpki-roots`).
//!
//! Owns: URL splitting, the request bytes, the status line, `Content-Length`
//! and chunked bodies. Must not: know what is in the body (the backends do),
//! retry, or log a header (the key is in one).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most a reply may hold, headers included; more is an error, unread.
pub const REPLY_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {0:?} (expected http://HOST[:PORT]/PATH or https://...)")]
    Url(String),
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, String),
    #[error("no reply from {0} within {1} s")]
    Timeout(String, u64),
    #[error("the reply from {0} is over {1} bytes")]
    TooLarge(String, usize),
    #[error("the reply from {0} is not HTTP: {1}")]
    Malformed(String, String),
    #[error("{0} answered HTTP {1}: {2}")]
    Status(String, u16, String),
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, HttpError> {
        let bad = || HttpError::Url(text.to_string());
        let (tls, rest) = if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(bad());
        }
        Ok(Url {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// `host:port`, as errors name it.
    pub fn origin(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// `POST url` with a JSON body and optional bearer token; the body of a 2xx
/// reply. The whole exchange must end within `timeout`.
pub fn post_json(
    url: &Url,
    bearer: Option<&str>,
    body: &str,
    timeout: Duration,
) -> Result<String, HttpError> {
    let deadline = Instant::now() + timeout;
    let origin = url.origin();
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: scalable/{}\r\n",
        url.path,
        url.host,
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    if let Some(token) = bearer {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let tcp = connect(url, timeout)?;
    let raw = if url.tls {
        let conn = tls_client(&url.host).map_err(|e| HttpError::Unreachable(origin.clone(), e))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        exchange(&mut stream, &request, deadline, &origin, timeout)?
    } else {
        let mut tcp = tcp;
        exchange(&mut tcp, &request, deadline, &origin, timeout)?
    };
    parse_reply(&raw, &origin)
}

fn connect(url: &Url, timeout: Duration) -> Result<TcpStream, HttpError> {
    let origin = url.origin();
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| HttpError::Unreachable(origin.clone(), e.to_string()))?
        .collect();
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(10))) {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(HttpError::Unreachable(origin, last))
}

fn tls_client(host: &str) -> Result<rustls::ClientConnection, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("invalid host name {host:?}: {e}"))?;
    rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())
}

/// Writes the request and reads until the server closes, within the deadline
/// and the size cap.
fn exchange<S: Read + Write + Socket>(
    stream: &mut S,
    request: &str,
    deadline: Instant,
    origin: &str,
    timeout: Duration,
) -> Result<Vec<u8>, HttpError> {
    let timed_out = || HttpError::Timeout(origin.to_string(), timeout.as_secs().max(1));
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timed_out(),
        _ => HttpError::Unreachable(origin.to_string(), e.to_string()),
    };
    stream.set_deadline(deadline).map_err(io)?;
    stream.write_all(request.as_bytes()).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        stream.set_deadline(deadline).map_err(io)?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            // A server that closes without TLS close_notify: what came is the reply.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io(e)),
        };
        if n == 0 {
            return Ok(raw);
        }
        if raw.len() + n > REPLY_BYTES_MAX {
            return Err(HttpError::TooLarge(origin.to_string(), REPLY_BYTES_MAX));
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Sockets whose reads and writes can be bounded by a deadline.
trait Socket {
    fn set_deadline(&mut self, deadline: Instant) -> std::io::Result<()>;
}

fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

impl Socket for TcpStream {
    fn set_deadline(&mut self, deadline: Instant) -> std::io::Result<()> {
        let left = remaining(deadline)?;
        self.set_read_timeout(Some(left))?;
        self.set_write_timeout(Some(left))
    }
}

impl Socket for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn set_deadline(&mut self, deadline: Instant) -> std::io::Result<()> {
        self.sock.set_deadline(deadline)
    }
}

/// The body of a 2xx reply (de-chunked); any other status is an error
/// carrying the start of its body.
fn parse_reply(raw: &[u8], origin: &str) -> Result<String, HttpError> {
    let malformed = |why: &str| HttpError::Malformed(origin.to_string(), why.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| malformed("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| malformed("headers not UTF-8"))?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(malformed("no HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed("no status code"))?;
    let chunked = lines.any(|l| {
        l.to_ascii_lowercase()
            .split_once(':')
            .is_some_and(|(k, v)| k.trim() == "transfer-encoding" && v.contains("chunked"))
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| malformed("bad chunked body"))?
    } else {
        body.to_vec()
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    if !(200..300).contains(&status) {
        let start: String = text.chars().take(200).collect();
        return Err(HttpError::Status(
            origin.to_string(),
            status,
            start.replace(['\r', '\n'], " "),
        ));
    }
    Ok(text)
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_their_parts() {
        let u = Url::parse("http://127.0.0.1:8011/v1/chat/completions").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 8011));
        assert_eq!(u.path, "/v1/chat/completions");
        let u = Url::parse("https://api.openai.com/v1").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (true, 443, "/v1"));
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://:80/").is_err());
    }

    #[test]
    fn replies_are_parsed_and_dechunked() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_reply(raw, "h:1").unwrap(), "abcde");
        let raw = b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nboom";
        assert!(matches!(
            parse_reply(raw, "h:1"),
            Err(HttpError::Status(_, 500, _))
        ));
        assert!(parse_reply(b"garbage", "h:1").is_err());
    }
}
