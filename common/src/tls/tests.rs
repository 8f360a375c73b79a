//! Tests of identities, fingerprints, configs and connecting (moved out of tls.rs).

use super::*;
use crate::frame::{read_frame, write_frame};
use crate::protocol::{HelloReply, Request, MESSAGE_BYTES_MAX};

fn identity() -> BrokerIdentity {
    BrokerIdentity::generate(&["broker.example".to_string()]).unwrap()
}

fn pin(id: &BrokerIdentity) -> [u8; 32] {
    parse_fingerprint(&id.fingerprint()).unwrap()
}

/// A broker stand-in that answers each request stream with one `HelloReply`.
fn serve(id: &BrokerIdentity) -> (quinn::Endpoint, SocketAddr) {
    let ep = server_endpoint(id, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = ep.local_addr().unwrap();
    let server = ep.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let req: Option<Request> =
                        read_frame(&mut recv, MESSAGE_BYTES_MAX).await.unwrap();
                    assert!(matches!(req, Some(Request::Shutdown)));
                    let reply = HelloReply::Welcome {
                        agent_id: 42,
                        heartbeat_interval_ms: 1000,
                        heartbeat_timeout_ms: 0,
                    };
                    write_frame(&mut send, &reply).await.unwrap();
                    send.finish().unwrap();
                }
            });
        }
    });
    (ep, addr)
}

#[test]
fn fingerprint_is_64_lowercase_hex_and_parses_back() {
    let id = identity();
    let fp = id.fingerprint();
    assert_eq!(fp.len(), 64);
    assert!(fp
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let raw = pin(&id);
    assert_eq!(hex(&raw), fp);
    let colons: Vec<String> = raw.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(parse_fingerprint(&colons.join(":")).unwrap(), raw);
    assert_eq!(
        parse_fingerprint(&format!("SHA256:{}", fp.to_uppercase())).unwrap(),
        raw
    );
    assert_eq!(parse_fingerprint(&format!(" sha256:{fp}\n")).unwrap(), raw);
}

#[test]
fn bad_fingerprints_are_refused() {
    for s in ["", "abc", &"g".repeat(64), &"a".repeat(66), "sha256:"] {
        let err = parse_fingerprint(s).unwrap_err();
        assert!(err.to_string().contains("expected 64 hex digits"), "{err}");
    }
}

#[test]
fn pem_round_trip_keeps_the_identity() {
    let id = identity();
    let (cert_pem, key_pem) = id.to_pem();
    assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let back = BrokerIdentity::from_pem(&cert_pem, &key_pem).unwrap();
    assert_eq!(back.cert_der, id.cert_der);
    assert_eq!(back.key_der, id.key_der);
    // rcgen reads our PEM too, so the encoding is standard base64.
    let kp = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    assert_eq!(kp.serialize_der(), id.key_der);
    let err = BrokerIdentity::from_pem("garbage", &key_pem).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid certificate: no \"CERTIFICATE\" pem section found"
    );
}

#[test]
fn debug_does_not_show_the_key() {
    let id = identity();
    let shown = format!("{id:?}");
    assert!(shown.contains("<redacted>"));
    assert!(!shown.contains(&format!("{:?}", &id.key_der[..8])));
}

#[test]
fn host_port_forms() {
    let ok = |s: &str| split_host_port(s).unwrap();
    assert_eq!(ok("example.org:9"), ("example.org".into(), 9));
    assert_eq!(ok("example.org"), ("example.org".into(), DEFAULT_PORT));
    assert_eq!(ok("127.0.0.1:7000"), ("127.0.0.1".into(), 7000));
    assert_eq!(ok("[::1]:7000"), ("::1".into(), 7000));
    assert_eq!(ok("[::1]"), ("::1".into(), DEFAULT_PORT));
    assert_eq!(ok("::1"), ("::1".into(), DEFAULT_PORT));
    for bad in ["", ":7", "host:x", "[::1", "[::1]x", "a:b:c"] {
        assert!(split_host_port(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn good_pin_connects_and_exchanges_a_frame() {
    let id = identity();
    let (_server, addr) = serve(&id);
    let client = client_endpoint(&addr).unwrap();
    let conn = connect(&client, &addr.to_string(), pin(&id)).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame(&mut send, &Request::Shutdown).await.unwrap();
    send.finish().unwrap();
    let reply: HelloReply = read_frame(&mut recv, MESSAGE_BYTES_MAX)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(reply, HelloReply::Welcome { agent_id: 42, .. }));
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol);
    assert_eq!(alpn.as_deref(), Some(ALPN));
}

#[tokio::test]
async fn wrong_pin_is_a_fingerprint_mismatch() {
    let id = identity();
    let (_server, addr) = serve(&id);
    let client = client_endpoint(&addr).unwrap();
    let other = pin(&identity());
    let err = connect(&client, &addr.to_string(), other)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, TlsError::FingerprintMismatch { .. }),
        "{text}"
    );
    assert!(text.contains("certificate fingerprint mismatch"), "{text}");
    assert!(text.contains("--fingerprint"), "{text}");
}

#[tokio::test]
async fn other_alpn_is_a_protocol_version_mismatch() {
    let id = identity();
    let (_server, addr) = serve(&id);
    let client = client_endpoint(&addr).unwrap();
    let config = client_config_with_alpn(pin(&id), b"scalable/0").unwrap();
    let err = connect_with_config(&client, &addr.to_string(), config, CONNECT_TIMEOUT)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TlsError::ProtocolMismatch { .. }), "{text}");
    assert!(text.contains("protocol version mismatch"), "{text}");
}

#[tokio::test]
async fn silent_port_is_unreachable() {
    // A bound UDP socket that never answers: the handshake can only time out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let client = client_endpoint(&addr).unwrap();
    let config = client_config([0; 32]).unwrap();
    let err = connect_with_config(
        &client,
        &addr.to_string(),
        config,
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TlsError::Unreachable { .. }), "{text}");
    assert!(text.contains("did not answer"), "{text}");
}
