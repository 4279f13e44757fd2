//! HTTPS: rustls with ALPN, many SSE streams multiplexed over one HTTP/2 TLS
//! connection, HTTP/1.1 over TLS, and certificate reload without dropping
//! open connections. The CA and certificates are made in the test (rcgen).

use crate::support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use spout::config::TlsConfig;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::net::TcpStream;

struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Spout test CA");
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// Writes a fresh server certificate for localhost/127.0.0.1 signed by `ca`
/// (replacing the files by rename, as certificate tools do); returns its DER.
fn write_server_cert(ca: &Ca, dir: &Path) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    for (name, text) in [("cert.pem", cert.pem()), ("key.pem", key.serialize_pem())] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    cert.der().to_vec()
}

/// A TLS connection to `addr` offering `alpn`; returns it with the server's
/// leaf certificate.
async fn connect(
    addr: SocketAddr,
    ca: &Ca,
    alpn: &[&[u8]],
) -> (tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, leaf)
}

async fn tls_server(dir: &Path) -> Server {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    Server::start(move |c| c.server.tls = Some(TlsConfig { cert, key })).await
}

fn publish_req(text: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri("https://localhost/publish")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            r#"{{"topic":"news","data":"{text}"}}"#
        ))))
        .unwrap()
}

#[tokio::test]
async fn twenty_streams_share_one_http2_tls_connection_across_a_cert_reload() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let first = write_server_cert(&ca, dir.path());
    let server = tls_server(dir.path()).await;

    let (tls, leaf) = connect(server.addr, &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(leaf, first);
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);

    let mut streams = Vec::new();
    for _ in 0..20 {
        let req = Request::builder()
            .uri("https://localhost/events?topic=news")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.clone().send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let mut sse = Sse::from_response(resp);
        sse.connected().await;
        streams.push(sse);
    }
    let resp = send.clone().send_request(publish_req("one")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for s in &mut streams {
        assert_eq!(s.data(1).await, ["one"]);
    }
    // Twenty streams, one TCP connection: /stats over that same connection.
    let req = Request::builder()
        .uri("https://localhost/stats")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let body = send
        .clone()
        .send_request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(stats["connections"], 20);

    // New certificate files: new handshakes get the new certificate...
    let second = write_server_cert(&ca, dir.path());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, leaf) = connect(server.addr, &ca, &[b"h2"]).await;
        if leaf == second {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the certificate was never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and the connection made before carries on with all its streams.
    let resp = send.clone().send_request(publish_req("two")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for s in &mut streams {
        assert_eq!(s.data(1).await, ["two"]);
    }
    drop(streams);
    server.stop().await;
}

#[tokio::test]
async fn http1_over_tls_and_plain_http_is_refused() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    write_server_cert(&ca, dir.path());
    let server = tls_server(dir.path()).await;
    let (tls, _) = connect(server.addr, &ca, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/healthz")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"status":"ok"}"#);

    // Cleartext HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_missing_certificate_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert = \"nope.pem\"\nkey = \"nope.key\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .env("SPOUT_PLUGIN_CACHE", plugin_cache())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.pem"), "{err}");
}
