//! `inspect wt`: a WebTransport session (HTTP/3 over QUIC) as a page sees it.
//!
//! Unlike the TCP transports there is no plaintext to show: QUIC encrypts every packet,
//! headers included, and the HTTP/3 and WebTransport framing lives inside that encryption.
//! So this client (wtransport, pinning the gateway's certificate by its SHA-256 as a page
//! does with `serverCertificateHashes`) shows what the session carries: the session id, each
//! stream the server opens with its QUIC stream id, each length-prefixed message on it, and
//! each datagram, decoded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire_notes::{annotate_envelope, annotate_length_prefixed, Note};
use anyhow::{bail, Context as _};
use tokio::sync::mpsc;
use wtransport::error::ConnectionError;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Endpoint, RecvStream, VarInt};

use super::http;
use super::{events_in, plural, resume_target, Printer, Run, Side, Stop, StopWhen};

/// Longest the QUIC and HTTP/3 handshakes may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn run(Run(target, args, stop, printer): Run<'_>) -> anyhow::Result<()> {
    let http_addr = args.http.clone().unwrap_or_else(|| {
        let mut http = target.clone();
        http.port = 8080;
        http.authority()
    });
    let doc = fetch_cert_hash(&http_addr, stop, printer).await?;
    let hash: [u8; 32] = doc
        .get("value")
        .and_then(|v| v.as_array())
        .map(|bytes| {
            bytes
                .iter()
                .filter_map(|b| b.as_u64())
                .map(|b| b as u8)
                .collect::<Vec<_>>()
        })
        .and_then(|bytes| bytes.try_into().ok())
        .context("/wt/cert-hash has no 32-byte `value`")?;

    let session_target = resume_target(target, args);
    let url = if target.explicit {
        format!(
            "https://{}{}",
            target.authority(),
            session_target.path_and_query()
        )
    } else {
        let base = doc
            .get("url")
            .and_then(|u| u.as_str())
            .context("/wt/cert-hash has no `url`")?;
        match session_target.query_string() {
            query if query.is_empty() => base.to_owned(),
            query => format!("{base}?{query}"),
        }
    };
    let authority = url
        .strip_prefix("https://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    // Bind to the family of the address we will reach: a dual-stack socket is not available
    // everywhere (containers often have no IPv6).
    let remote: SocketAddr = tokio::net::lookup_host(&authority)
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    let bind = if remote.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let config = ClientConfig::builder()
        .with_bind_address(bind)
        .with_server_certificate_hashes([Sha256Digest::new(hash)])
        .build();
    let endpoint = Endpoint::client(config).context("a QUIC client endpoint")?;

    printer.say(&format!("opening a WebTransport session to {url}"));
    printer.detail(
        "One QUIC handshake (TLS 1.3 runs inside QUIC; the certificate is accepted because its SHA-256 is the pinned one), the HTTP/3 SETTINGS on control streams, then an extended CONNECT request with :protocol = webtransport on a new bidirectional stream, answered 200.",
    );
    let started = Instant::now();
    let connection = tokio::select! {
        _ = stop.reached() => {
            printer.say("stopped before the session opened");
            return Ok(());
        }
        connected = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect(&url)) => connected
            .with_context(|| format!("no session within {CONNECT_TIMEOUT:?}"))?
            .context("opening the session")?,
    };
    let session_id = connection.session_id().into_u64();
    printer.say(&format!(
        "session established in {:.1} ms; session id {session_id}, RTT {:.1} ms, max datagram size {}",
        started.elapsed().as_secs_f64() * 1000.0,
        connection.rtt().as_secs_f64() * 1000.0,
        connection
            .max_datagram_size()
            .map_or_else(|| "none (datagrams off)".to_owned(), |size| format!("{size} bytes")),
    ));
    printer.say(
        "QUIC encrypts every packet, headers included, so unlike TCP there are no plaintext bytes on the wire to annotate; what follows is what the session carries: streams (their QUIC ids and bytes) and datagrams, decoded.",
    );
    printer.detail(&format!(
        "The session id is the QUIC stream id of the CONNECT request ({session_id}: client-initiated, bidirectional)."
    ));

    let (chunks, mut received) = mpsc::channel::<StreamChunk>(64);
    let mut streams: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut opened = 0u64;
    if stop.done() {
        return close(&endpoint, &connection, printer, "--count reached").await;
    }
    loop {
        let events = tokio::select! {
            why = stop.reached() => {
                let why = match why {
                    Stop::Deadline => "--duration reached",
                    Stop::Interrupted => "interrupted",
                };
                return close(&endpoint, &connection, printer, why).await;
            }
            uni = connection.accept_uni() => match uni {
                Ok(stream) => {
                    opened += 1;
                    let id = stream.id().into_u64();
                    printer.say(&format!(
                        "the server opened unidirectional stream {id}{}",
                        if opened == 1 { ", the control stream: `subscribed` comes first, then notices (and events in stream mode)" } else { ": one stream per event (stream-per-event mode)" }
                    ));
                    printer.detail(&format!(
                        "QUIC stream ids say who opened a stream and which way it goes in their two low bits: {id} = 4×{} + 3, server-initiated and unidirectional. On the wire it begins with the WebTransport stream type (0x54) and the session id, which the library reads before handing the stream over.",
                        id / 4
                    ));
                    tokio::spawn(read_stream(stream, chunks.clone()));
                    0
                }
                Err(e) => return ended(&e, printer),
            },
            datagram = connection.receive_datagram() => match datagram {
                Ok(datagram) => {
                    let payload = datagram.payload();
                    let note = annotate_envelope(&payload, 0).unwrap_or_else(|| {
                        Note::new("payload", String::from_utf8_lossy(&payload), "Not a streamgate envelope.")
                            .at(0, payload.len())
                    });
                    let note = Note::new(
                        "datagram",
                        plural(payload.len(), "byte"),
                        "A QUIC DATAGRAM frame (RFC 9221) carrying the session's quarter stream id, then the payload (RFC 9297): unreliable and unordered, never retransmitted, one envelope each, unframed.",
                    )
                    .with([note]);
                    let events = events_in(&note);
                    printer.record(Side::Server, "a datagram", payload.len(), &[note]);
                    events
                }
                Err(e) => return ended(&e, printer),
            },
            Some(chunk) = received.recv() => match chunk {
                StreamChunk::Data(id, bytes) => {
                    let buffer = streams.entry(id).or_default();
                    buffer.extend_from_slice(&bytes);
                    let (messages, consumed) = annotate_length_prefixed(buffer);
                    let mut events = 0;
                    for message in messages {
                        let (start, end) = message.bytes.unwrap_or((0, 0));
                        events += events_in(&message);
                        printer.record(Side::Server, &format!("a message on stream {id}"), end - start, &[message.rebased(start)]);
                    }
                    buffer.drain(..consumed);
                    events
                }
                StreamChunk::End(id) => {
                    let left = streams.remove(&id).map_or(0, |b| b.len());
                    printer.say(&format!(
                        "stream {id} finished (FIN){}",
                        if left > 0 { format!(", {left} bytes short of a whole message") } else { String::new() }
                    ));
                    0
                }
                StreamChunk::Failed(id, why) => {
                    printer.say(&format!("stream {id} ended with an error: {why}"));
                    0
                }
            },
        };
        if stop.saw_events(events) {
            return close(&endpoint, &connection, printer, "--count reached").await;
        }
    }
}

/// What a stream reader task reports.
#[derive(Debug)]
enum StreamChunk {
    Data(u64, Vec<u8>),
    End(u64),
    Failed(u64, String),
}

/// Reads one stream to its end, handing over what arrives. One task per stream: a lost
/// packet on one stream does not hold up another (no head-of-line blocking across streams).
async fn read_stream(mut stream: RecvStream, chunks: mpsc::Sender<StreamChunk>) {
    let id = stream.id().into_u64();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let chunk = match stream.read(&mut buffer).await {
            Ok(Some(n)) => StreamChunk::Data(id, buffer[..n].to_vec()),
            Ok(None) => StreamChunk::End(id),
            Err(e) => StreamChunk::Failed(id, e.to_string()),
        };
        let last = !matches!(chunk, StreamChunk::Data(..));
        if chunks.send(chunk).await.is_err() || last {
            return;
        }
    }
}

/// `GET /wt/cert-hash` over plain HTTP: what a page fetches before `new WebTransport(…)`.
async fn fetch_cert_hash(
    http_addr: &str,
    stop: &StopWhen,
    printer: &mut Printer,
) -> anyhow::Result<serde_json::Value> {
    printer.say(&format!(
        "the gateway's certificate is self-signed, so first its SHA-256 from http://{http_addr}/wt/cert-hash (pass --http HOST:PORT for another address)"
    ));
    let headers = [("Connection", "close")];
    let what = [
        "the request",
        "the response head",
        "stopped before the server answered",
    ];
    let at = (http_addr, "/wt/cert-hash");
    let Some((mut tcp, mut buf, head)) = http::open_get(at, &headers, what, stop, printer).await?
    else {
        bail!("stopped before /wt/cert-hash answered");
    };
    let (body, _) = http::read_framed_body(&mut tcp, &mut buf, &head.head)
        .await?
        .context("/wt/cert-hash answered without a Content-Length")?;
    if head.head.status != 200 {
        bail!(
            "/wt/cert-hash answered {}: {}",
            head.status_line(),
            String::from_utf8_lossy(&body)
        );
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&body).context("/wt/cert-hash is not JSON")?;
    let field = |name: &str| doc.get(name).map(|v| v.to_string()).unwrap_or_default();
    printer.record(
        Side::Server,
        "the body",
        body.len(),
        &[Note::new(
            "certificate hash",
            field("hex").trim_matches('"').to_owned(),
            "SHA-256 of the certificate the WebTransport listener serves. A page passes it as serverCertificateHashes, so the browser accepts this self-signed certificate (valid for at most 14 days) for this session only.",
        )
        .at(0, body.len())
        .with([Note::new(
            "url",
            field("url").trim_matches('"').to_owned(),
            "Where sessions open: https, on the WebTransport listener's UDP port.",
        )])],
    );
    Ok(doc)
}

/// Closes the session with code 0 and waits, boundedly, for the close to be sent.
async fn close(
    endpoint: &Endpoint<wtransport::endpoint::endpoint_side::Client>,
    connection: &wtransport::Connection,
    printer: &mut Printer,
    why: &str,
) -> anyhow::Result<()> {
    printer.say(&format!(
        "{why}: closing the session (CONNECTION_CLOSE with application code 0, reason \"inspect done\")"
    ));
    connection.close(VarInt::from_u32(0), b"inspect done");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    Ok(())
}

/// The server ended the session: say how.
fn ended(error: &ConnectionError, printer: &mut Printer) -> anyhow::Result<()> {
    match error {
        ConnectionError::ApplicationClosed(close) => printer.say(&format!(
            "the server closed the session: code {}, reason {:?}",
            close.code(),
            String::from_utf8_lossy(close.reason())
        )),
        other => printer.say(&format!("the session ended: {other}")),
    }
    Ok(())
}
