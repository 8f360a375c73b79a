//! The broker's self-signed certificate, fingerprint pinning and the QUIC
//! endpoint configurations of both sides (SPEC §2, §13).
//!
//! Trust is the SHA-256 fingerprint of the broker's certificate, handed to agents
//! and the CLI out of band (`agent.token`, `access.json`, `--fingerprint`). There
//! is no CA and no name check: a client accepts exactly the pinned certificate.
//! The major protocol version is in the ALPN id, so incompatible peers fail in
//! the handshake. Everything uses rustls' *ring* provider explicitly, so nothing
//! depends on a process-wide default provider being installed.
//!
//! This module does not know about tokens or files: [`crate::access`] stores what
//! it produces.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::protocol::{ALPN, DEFAULT_PORT};

/// How long [`connect`] waits for the handshake before calling the broker unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no packets for this long is dead. Agents heartbeat well
/// within it and clients send keep-alives, so only lost peers reach it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Clients ping this often so NATs and the idle timeout keep quiet connections alive.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Bidirectional streams one client may have open at once: the CLI opens one per
/// request, so this bounds a single CLI's concurrency, not the broker's.
pub const BIDI_STREAMS_MAX: u32 = 1024;
/// Flow-control credit of one stream and of one connection, and what a sender
/// keeps in flight: staging moves files of gigabytes over one connection, and
/// quinn's defaults (1.25 MB a stream) held a transfer to window / RTT, which
/// under a loaded host (RTT of milliseconds on loopback) was ~100 MB/s. The
/// connection window bounds what a peer can make the other buffer.
const STREAM_WINDOW_BYTES: u32 = 16 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 64 << 20;
const SEND_WINDOW_BYTES: u64 = 64 << 20;
/// UDP socket buffers asked for (the kernel caps them at
/// `net.core.rmem_max`/`wmem_max`): the default (208 KiB) holds about a
/// hundred packets, and a staging transfer on loopback overflowed it while
/// the receiver was busy; each drop is a loss to the congestion control,
/// which cut the rate it sends at (measured: UdpRcvbufErrors during a run).
const SOCKET_BUFFER_BYTES: libc::c_int = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the broker certificate: {0}")]
    Generate(String),
    #[error("invalid {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error(
        "invalid fingerprint {text:?}: expected 64 hex digits of a sha-256 digest, optionally with ':' separators"
    )]
    BadFingerprint { text: String },
    #[error("invalid tls configuration: {0}")]
    Config(String),
    // `cause`, not `source`: shown once, not again by `{:#}`.
    #[error("cannot open a udp socket on {addr}: {}", io_reason(cause))]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("invalid broker address {addr:?}: expected HOST:PORT, HOST or [IPV6]:PORT")]
    BadAddress { addr: String },
    #[error("cannot resolve broker address {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error(
        "certificate fingerprint mismatch: the broker at {addr} is not the one pinned (check --fingerprint, or that the token or access file was written by this broker)"
    )]
    FingerprintMismatch { addr: String },
    #[error(
        "protocol version mismatch: the broker at {addr} does not speak {alpn} (use the same scalable version on both sides)"
    )]
    ProtocolMismatch { addr: String, alpn: String },
    #[error("broker at {addr} did not answer (is it running? is UDP port {port} open?)")]
    Unreachable { addr: String, port: u16 },
    #[error("cannot connect to broker at {addr}: {reason}")]
    Connect { addr: String, reason: String },
}

// ---------------------------------------------------------------- identity

/// The broker's certificate and PKCS#8 private key, both DER.
#[derive(Clone)]
pub struct BrokerIdentity {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl fmt::Debug for BrokerIdentity {
    // The key must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerIdentity")
            .field("fingerprint", &self.fingerprint())
            .field("key_der", &"<redacted>")
            .finish()
    }
}

impl BrokerIdentity {
    /// A new self-signed certificate valid for `localhost`, `127.0.0.1` and `names`
    /// (host names or IP addresses). Names only matter to tools other than ours,
    /// which pin the fingerprint instead.
    pub fn generate(names: &[String]) -> Result<Self, TlsError> {
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        for n in names {
            if !n.is_empty() && !sans.contains(n) {
                sans.push(n.clone());
            }
        }
        let ck = rcgen::generate_simple_self_signed(sans)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Self {
            cert_der: ck.cert.der().to_vec(),
            key_der: ck.signing_key.serialize_der(),
        })
    }

    /// `(cert_pem, key_pem)`: a `CERTIFICATE` and a PKCS#8 `PRIVATE KEY` section.
    pub fn to_pem(&self) -> (String, String) {
        (
            pem_encode("CERTIFICATE", &self.cert_der),
            pem_encode("PRIVATE KEY", &self.key_der),
        )
    }

    /// Reads what [`BrokerIdentity::to_pem`] wrote. The key must be PKCS#8.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let cert = certificate_from_pem(cert_pem)?;
        let key =
            PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
                what: "private key",
                reason: pem_reason(&e, "PRIVATE KEY"),
            })?;
        Ok(Self {
            cert_der: cert.to_vec(),
            key_der: key.secret_pkcs8_der().to_vec(),
        })
    }

    /// SHA-256 of the certificate, as [`fingerprint_of`] prints it.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.cert_der)
    }
}

/// The certificate of a `CERTIFICATE` PEM section (the first one).
pub fn certificate_from_pem(cert_pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: "certificate",
        reason: pem_reason(&e, "CERTIFICATE"),
    })
}

fn pem_reason(e: &rustls::pki_types::pem::Error, label: &str) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => format!("no \"{label}\" pem section found"),
        Error::MissingSectionEnd { .. } => format!("the \"{label}\" pem section has no end line"),
        Error::IllegalSectionStart { .. } => "malformed pem begin line".into(),
        Error::Base64Decode(_) => "the pem body is not valid base64".into(),
        other => other.to_string().to_lowercase(),
    }
}

/// Standard base64 in 64-column lines, as PEM wants it. Written here because no
/// dependency we carry exposes an encoder.
fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                b64.push(b'=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        // Only ASCII from ALPHABET and '=' was pushed.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// ---------------------------------------------------------------- fingerprints

/// SHA-256 of a certificate's DER as 64 lowercase hex digits.
pub fn fingerprint_of(cert_der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref())
}

/// Parses a fingerprint as users paste it: hex, any case, with or without ':'
/// separators, optionally prefixed by `sha256:`.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], TlsError> {
    let bad = || TlsError::BadFingerprint {
        text: s.to_string(),
    };
    let t = s.trim();
    let t = match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("sha256:") => &t[7..],
        _ => t,
    };
    let digits: Vec<u8> = t.bytes().filter(|&b| b != b':').collect();
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let hi = hex_value(pair[0]).ok_or_else(bad)?;
        let lo = hex_value(pair[1]).ok_or_else(bad)?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex without separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

// ---------------------------------------------------------------- pinning

/// Accepts exactly the certificate whose SHA-256 is pinned, whatever its names
/// or dates: the pin is the whole trust decision. Handshake signatures are still
/// verified, so presenting the certificate without its key fails.
#[derive(Debug)]
struct PinnedVerifier {
    pinned: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        // A fingerprint is public, so a plain comparison leaks nothing.
        if digest.as_ref() == self.pinned.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            // `connect` recognises this exact error (and its AccessDenied alert)
            // as a pin mismatch.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// ---------------------------------------------------------------- configs

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: impl fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

fn idle_timeout() -> Result<quinn::IdleTimeout, TlsError> {
    quinn::IdleTimeout::try_from(IDLE_TIMEOUT).map_err(config_error)
}

/// The broker's QUIC configuration: TLS 1.3, ALPN [`ALPN`], no client
/// certificates (peers authenticate with a token in `Hello`).
pub fn server_config(id: &BrokerIdentity) -> Result<quinn::ServerConfig, TlsError> {
    let cert = CertificateDer::from(id.cert_der.clone());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(config_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(config_error)?;

    let mut transport = TransportConfig::default();
    // Liveness is the clients' job (keep-alives, heartbeats); the broker only
    // needs to notice peers that went silent.
    transport.max_idle_timeout(Some(idle_timeout()?));
    tune_for_bulk(&mut transport);
    transport.max_concurrent_bidi_streams(VarInt::from_u32(BIDI_STREAMS_MAX));
    // The protocol uses bidirectional streams only.
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));

    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A client configuration that trusts only the certificate with SHA-256 `pinned`.
pub fn client_config(pinned: [u8; 32]) -> Result<quinn::ClientConfig, TlsError> {
    client_config_with_alpn(pinned, ALPN)
}

fn client_config_with_alpn(pinned: [u8; 32], alpn: &[u8]) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = PinnedVerifier {
        pinned,
        provider: provider.clone(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(config_error)?;

    let mut transport = TransportConfig::default();
    transport.max_idle_timeout(Some(idle_timeout()?));
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    tune_for_bulk(&mut transport);

    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Windows for connections that carry staged files. The MTU ceiling stays
/// quinn's (1452): a larger one would cut packets on loopback, but quinn
/// sizes each endpoint's receive buffers by it (65,000 bytes x 64 GRO
/// segments x 32 = 133 MB an endpoint), and its gain was not measured.
fn tune_for_bulk(transport: &mut TransportConfig) {
    transport.stream_receive_window(VarInt::from_u32(STREAM_WINDOW_BYTES));
    transport.receive_window(VarInt::from_u32(CONNECTION_WINDOW_BYTES));
    transport.send_window(SEND_WINDOW_BYTES);
}

/// The broker's endpoint settings (for a socket it binds itself).
pub fn server_endpoint_config(id: &BrokerIdentity) -> Result<quinn::EndpointConfig, TlsError> {
    endpoint_config(Some(id))
}

/// The endpoint settings of both sides: for the broker, the key of its
/// stateless resets and connection ids a later process accepts.
fn endpoint_config(id: Option<&BrokerIdentity>) -> Result<quinn::EndpointConfig, TlsError> {
    Ok(match id {
        Some(id) => {
            let mut c = quinn::EndpointConfig::new(reset_key(id));
            c.cid_generator(|| Box::new(RandomCids));
            c
        }
        None => quinn::EndpointConfig::default(),
    })
}

/// The key of the broker's stateless resets, derived from its private key:
/// the same across restarts, so an agent whose connection died with the old
/// process is told so by the new one at its next packet, instead of waiting
/// out the idle timeout (30 s) with its transfers stalled on the dead one.
fn reset_key(id: &BrokerIdentity) -> Arc<dyn quinn::crypto::HmacKey> {
    let mut seed = ring::digest::Context::new(&ring::digest::SHA256);
    seed.update(b"scalable stateless reset key\0");
    seed.update(&id.key_der);
    let seed = seed.finish();
    Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed.as_ref()))
}

/// Random connection ids that any later broker process accepts as its own:
/// quinn's default signs them with a per-process key, and the new process
/// dropped the old connection's packets as forged instead of answering them
/// with the reset.
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut bytes = [0u8; 8];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
            // No system randomness: unique ids still, from the clock.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default();
            bytes = nanos.to_le_bytes();
        }
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

fn bound_endpoint(
    bind: SocketAddr,
    server: Option<(quinn::ServerConfig, &BrokerIdentity)>,
) -> Result<quinn::Endpoint, TlsError> {
    let config = endpoint_config(server.as_ref().map(|(_, id)| *id))?;
    let server = server.map(|(config, _)| config);
    let socket =
        std::net::UdpSocket::bind(bind).map_err(|cause| TlsError::Bind { addr: bind, cause })?;
    widen_buffers(&socket);
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(config, server, socket, runtime)
        .map_err(|cause| TlsError::Bind { addr: bind, cause })
}

/// Asks for [`SOCKET_BUFFER_BYTES`] of receive and send buffer on a socket
/// an endpoint will use. Best effort: a host that allows less keeps less
/// (transfers are slower there, not wrong).
pub fn widen_buffers(socket: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt on an open socket with a pointer to a c_int
        // that outlives the call and its size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&SOCKET_BUFFER_BYTES as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// The broker's endpoint, listening on `bind`.
pub fn server_endpoint(id: &BrokerIdentity, bind: SocketAddr) -> Result<quinn::Endpoint, TlsError> {
    bound_endpoint(bind, Some((server_config(id)?, id)))
}

/// A client endpoint on an ephemeral port of the same address family as `for_addr`.
pub fn client_endpoint(for_addr: &SocketAddr) -> Result<quinn::Endpoint, TlsError> {
    let bind = match for_addr {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    bound_endpoint(bind, None)
}

// ---------------------------------------------------------------- connecting

/// Splits `HOST:PORT`, `HOST`, `[V6]:PORT`, `[V6]` or a bare IPv6 address;
/// the port defaults to [`DEFAULT_PORT`].
fn split_host_port(addr: &str) -> Result<(String, u16), TlsError> {
    let bad = || TlsError::BadAddress {
        addr: addr.to_string(),
    };
    let a = addr.trim();
    if a.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = a.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => DEFAULT_PORT,
            p => p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .ok_or_else(bad)?,
        };
        if host.is_empty() {
            return Err(bad());
        }
        return Ok((host.to_string(), port));
    }
    if a.parse::<Ipv6Addr>().is_ok() {
        return Ok((a.to_string(), DEFAULT_PORT));
    }
    match a.rsplit_once(':') {
        Some((host, port)) => {
            let port = port.parse().map_err(|_| bad())?;
            if host.is_empty() || host.contains(':') {
                return Err(bad());
            }
            Ok((host.to_string(), port))
        }
        None => Ok((a.to_string(), DEFAULT_PORT)),
    }
}

/// Resolves `addr` (`HOST[:PORT]`) and connects, trusting only the certificate
/// pinned by `pinned`. Errors are one line that says what to check.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: &str,
    pinned: [u8; 32],
) -> Result<quinn::Connection, TlsError> {
    connect_with_config(endpoint, addr, client_config(pinned)?, CONNECT_TIMEOUT).await
}

async fn connect_with_config(
    endpoint: &quinn::Endpoint,
    addr: &str,
    config: quinn::ClientConfig,
    timeout: Duration,
) -> Result<quinn::Connection, TlsError> {
    let (host, port) = split_host_port(addr)?;
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| TlsError::Resolve {
            addr: addr.to_string(),
            reason: io_reason(&e),
        })?
        .collect();
    // Prefer the family the endpoint was bound for; a v4 socket cannot reach v6.
    let local_v6 = endpoint.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let target = resolved
        .iter()
        .find(|a| a.is_ipv6() == local_v6)
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| TlsError::Resolve {
            addr: addr.to_string(),
            reason: "no addresses found".into(),
        })?;
    // The verifier ignores names; this only has to be a valid SNI value.
    let server_name =
        if host.parse::<IpAddr>().is_ok() || ServerName::try_from(host.as_str()).is_err() {
            "localhost"
        } else {
            host.as_str()
        };
    let shown = target.to_string();
    let connecting = endpoint
        .connect_with(config, target, server_name)
        .map_err(|e| TlsError::Connect {
            addr: shown.clone(),
            reason: e.to_string(),
        })?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(classify_connection_error(&shown, &e)),
        Err(_) => Err(TlsError::Unreachable {
            addr: shown,
            port: target.port(),
        }),
    }
}

/// Turns a handshake failure into the error a user can act on.
///
/// quinn reports our own verifier's refusal as a local `TransportError` whose
/// code is the TLS alert rustls would send (`access_denied` for
/// `ApplicationVerificationFailure`), and the broker's ALPN refusal as
/// `ConnectionClosed` with `no_application_protocol`. The reason strings are
/// checked too in case a quinn or rustls release changes the codes.
pub fn classify_connection_error(addr: &str, e: &ConnectionError) -> TlsError {
    let access_denied = quinn::TransportErrorCode::crypto(u8::from(AlertDescription::AccessDenied));
    let no_alpn =
        quinn::TransportErrorCode::crypto(u8::from(AlertDescription::NoApplicationProtocol));
    let text = e.to_string();
    let mismatch = || TlsError::FingerprintMismatch {
        addr: addr.to_string(),
    };
    let protocol = || TlsError::ProtocolMismatch {
        addr: addr.to_string(),
        alpn: String::from_utf8_lossy(ALPN).into_owned(),
    };
    match e {
        ConnectionError::TransportError(t) if t.code == access_denied => return mismatch(),
        ConnectionError::TransportError(t) if t.code == no_alpn => return protocol(),
        ConnectionError::ConnectionClosed(c) if c.error_code == no_alpn => return protocol(),
        ConnectionError::VersionMismatch => return protocol(),
        ConnectionError::TimedOut => {
            return TlsError::Unreachable {
                addr: addr.to_string(),
                port: addr
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or(DEFAULT_PORT),
            }
        }
        _ => {}
    }
    if text.contains("ApplicationVerificationFailure") {
        mismatch()
    } else if text.contains("NoApplicationProtocol")
        || text.contains("no_application_protocol")
        || text.contains("doesn't support any known protocol")
    {
        protocol()
    } else {
        TlsError::Connect {
            addr: addr.to_string(),
            reason: text,
        }
    }
}

/// An I/O error as a lowercase phrase without the `(os error N)` suffix.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => &s[..i],
        None => s.as_str(),
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
