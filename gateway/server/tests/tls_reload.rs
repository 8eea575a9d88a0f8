//! The HTTPS certificate from PEM files, replaced while the gateway runs: new connections get
//! the new certificate, open ones keep theirs and go on receiving events, a broken file keeps
//! the current certificate and says why. In process (`App::reload_tls`) and on the real
//! binary (`kill -HUP`).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::{send, TestGateway};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio_rustls::client::TlsStream;

/// Longest wait for anything the gateway is expected to do.
const BOUND: Duration = Duration::from_secs(30);

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "streamgate-tls-reload-{}-{name}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A self-signed certificate for `localhost`: its PEM, its key's PEM and its DER.
struct Cert {
    pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Cert {
    fn generate(name: &str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        // Short enough for a WebTransport client to pin it by hash (two weeks at most).
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(10);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.der.as_ref()).into()
    }

    fn sha256_hex(&self) -> String {
        streamgate::tls::sha256_hex(&self.sha256())
    }
}

/// Opens a WebTransport session that accepts only `cert` (pinned by hash).
async fn wt_session_pinned(
    gateway: &TestGateway,
    cert: &Cert,
) -> Result<wtransport::Connection, wtransport::error::ConnectingError> {
    let config = wtransport::ClientConfig::builder()
        .with_bind_address(SocketAddr::from(([127, 0, 0, 1], 0)))
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(cert.sha256())])
        .build();
    let endpoint = wtransport::Endpoint::client(config).unwrap();
    let url = format!("https://{}/wt?topics=news", gateway.wt_addr.unwrap());
    tokio::time::timeout(BOUND, endpoint.connect(url))
        .await
        .expect("WebTransport connect within the bound")
}

/// Writes a file the way a certificate manager does: a new file renamed over the old one.
fn replace_file(path: &Path, contents: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, contents).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

fn install(cert: &Cert, cert_path: &Path, key_path: &Path) {
    replace_file(key_path, &cert.key_pem);
    replace_file(cert_path, &cert.pem);
}

/// A TLS connection to `addr` (HTTP/1.1 by ALPN) and the leaf certificate it was shown.
async fn connect_tls(
    addr: SocketAddr,
) -> (TlsStream<tokio::net::TcpStream>, CertificateDer<'static>) {
    // Accepts any certificate (handshake signatures still checked): the test reads what was
    // presented afterwards.
    let connector = streamgate_compare::clients::tls_connector(b"http/1.1").unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio::time::timeout(
        BOUND,
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("TLS handshake within the bound")
    .expect("TLS handshake");
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    (stream, leaf)
}

/// `GET path` over an established TLS connection; the response with its body unread.
async fn get_over(
    stream: TlsStream<tokio::net::TcpStream>,
    path: &str,
) -> hyper::Response<Incoming> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    tokio::time::timeout(BOUND, sender.send_request(request))
        .await
        .expect("response within the bound")
        .unwrap()
}

/// Reads the SSE body until it has carried `needle`.
async fn read_until(body: &mut Incoming, seen: &mut String, needle: &str) {
    tokio::time::timeout(BOUND, async {
        while !seen.contains(needle) {
            let frame = body.frame().await.expect("stream open").expect("frame");
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{needle:?} not received; got {seen:?}"));
}

async fn publish(gateway: &TestGateway, text: &str) {
    let response = send(
        gateway,
        "POST",
        "/publish/news",
        &[("content-type", "application/json")],
        format!(r#"{{"text":"{text}"}}"#),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
}

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_connections_only() {
    let dir = temp_dir("in-process");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (a, b) = (Cert::generate("cert A"), Cert::generate("cert B"));
    install(&a, &cert_path, &key_path);
    let mut config = TestGateway::quiet_config();
    config.tls.enabled = true;
    config.tls.cert = Some(cert_path.clone());
    config.tls.key = Some(key_path.clone());
    let gateway = TestGateway::start(config).await;
    let tls_addr = gateway.tls_addr.unwrap();

    // An SSE stream over HTTPS, shown certificate A.
    let (old, shown) = connect_tls(tls_addr).await;
    assert_eq!(shown, a.der);
    let old_wt = wt_session_pinned(&gateway, &a)
        .await
        .expect("WebTransport serves A");
    let response = get_over(old, "/sse?topics=news").await;
    assert_eq!(response.status(), 200);
    let mut old_body = response.into_body();
    let mut old_seen = String::new();
    publish(&gateway, "before").await;
    read_until(&mut old_body, &mut old_seen, "before").await;

    // B replaces A on disk; the reload serves it to the next handshake.
    install(&b, &cert_path, &key_path);
    let sha256 = gateway.app.reload_tls().expect("reload");
    assert_eq!(sha256, b.sha256_hex());
    let (new, shown) = connect_tls(tls_addr).await;
    assert_eq!(shown, b.der, "a new connection gets certificate B");
    assert_eq!(get_over(new, "/healthz").await.status(), 200);
    // WebTransport shares the configured certificate: its pinning document follows.
    let wt = send(&gateway, "GET", "/wt/cert-hash", &[], "").await.json();
    assert_eq!(wt["hex"], b.sha256_hex());
    assert_eq!(wt["generation"], 1);
    wt_session_pinned(&gateway, &b)
        .await
        .expect("a new WebTransport session gets B");
    assert!(
        wt_session_pinned(&gateway, &a).await.is_err(),
        "and no longer A"
    );
    assert!(
        old_wt.quic_connection().close_reason().is_none(),
        "the session opened under A is still open"
    );

    // The connection made under A is untouched and still streams.
    publish(&gateway, "after").await;
    read_until(&mut old_body, &mut old_seen, "after").await;

    // A broken certificate file: the error names it, and B stays.
    replace_file(&cert_path, "-----BEGIN CERTIFICATE-----\nnot base64!\n");
    let error = gateway.app.reload_tls().unwrap_err().to_string();
    assert!(
        error.starts_with(&cert_path.display().to_string()),
        "{error}"
    );
    let (_, shown) = connect_tls(tls_addr).await;
    assert_eq!(shown, b.der, "a failed reload keeps certificate B");
    // A key that is not the certificate's: the error names the key file, and B stays.
    replace_file(&cert_path, &a.pem);
    let error = gateway.app.reload_tls().unwrap_err().to_string();
    assert!(
        error.starts_with(&key_path.display().to_string()),
        "{error}"
    );
    let (_, shown) = connect_tls(tls_addr).await;
    assert_eq!(shown, b.der);
    let wt = send(&gateway, "GET", "/wt/cert-hash", &[], "").await.json();
    assert_eq!(wt["hex"], b.sha256_hex());

    publish(&gateway, "still-streaming").await;
    read_until(&mut old_body, &mut old_seen, "still-streaming").await;
    drop(old_body);
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn reload_without_pem_files_is_refused() {
    let mut config = TestGateway::quiet_config();
    config.tls.enabled = true;
    let gateway = TestGateway::start(config).await;
    let error = gateway.app.reload_tls().unwrap_err();
    assert!(
        matches!(error, streamgate::tls::TlsError::NotReloadable(_)),
        "{error}"
    );
    gateway.shutdown().await;
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    assert!(gateway.app.reload_tls().is_err(), "TLS off");
    gateway.shutdown().await;
}

/// Kills the gateway if the test fails half-way, so no process outlives it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &KillOnDrop, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// The next log line containing `needle`.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + BOUND;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line with {needle:?}: {e}"),
        }
    }
}

#[tokio::test]
async fn sighup_reloads_the_certificate_of_the_running_binary() {
    let dir = temp_dir("sighup");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (a, b) = (Cert::generate("cert A"), Cert::generate("cert B"));
    install(&a, &cert_path, &key_path);
    let config_path = dir.join("gateway.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [tls]\nlisten = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n\
             [demo]\nenabled = false\n\
             [webtransport]\nenabled = false\n",
            cert_path.display().to_string(),
            key_path.display().to_string(),
        ),
    )
    .unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "streamgate=info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = BufReader::new(child.0.stderr.take().unwrap());
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            eprintln!("gateway: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = wait_for_line(&lines, "listening on https://");
    let tls_addr: SocketAddr = line
        .split("listening on https://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let (old, shown) = connect_tls(tls_addr).await;
    assert_eq!(shown, a.der);

    install(&b, &cert_path, &key_path);
    signal(&child, "HUP");
    let line = wait_for_line(&lines, "TLS certificate reloaded");
    assert!(line.contains(&b.sha256_hex()), "{line}");
    let (new, shown) = connect_tls(tls_addr).await;
    assert_eq!(
        shown, b.der,
        "after SIGHUP a new connection gets certificate B"
    );
    assert_eq!(get_over(new, "/healthz").await.status(), 200);
    // The connection made before the reload still serves requests.
    assert_eq!(get_over(old, "/healthz").await.status(), 200);

    replace_file(&key_path, "not a key\n");
    signal(&child, "HUP");
    let line = wait_for_line(&lines, "TLS certificate reload failed");
    assert!(line.contains(&key_path.display().to_string()), "{line}");
    let (_, shown) = connect_tls(tls_addr).await;
    assert_eq!(shown, b.der, "a failed reload keeps certificate B");

    signal(&child, "TERM");
    wait_for_line(&lines, "shutdown complete");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(dir);
}
