//! WebTransport (§7): `GET /wt/cert-hash` for the session URL and the certificate's SHA-256
//! (pinned, as browsers do with `serverCertificateHashes`), then a session whose control
//! stream starts with `subscribed`. QUIC and HTTP/3 are wtransport's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use serde_json::Value;
use wtransport::error::ConnectionError;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Endpoint, RecvStream};

use super::http::{exchange, refusal};
use super::{publish_reply, Attempt, Ended, Gateway, PublishError, Publishes, WebTransportMode};
use crate::frame::{encode, FrameDecoder};
use crate::h1::encode_query_value;
use crate::{publish_message, EventId, Incoming, Message};

/// Reads length-prefixed messages from a stream. `next` is cancel-safe: its only await is one
/// read, and a message received in pieces stays in the decoder.
struct FrameReader {
    stream: RecvStream,
    decoder: FrameDecoder,
}

impl FrameReader {
    fn new(stream: RecvStream) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::default(),
        }
    }

    async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(message) = self.decoder.next_frame().map_err(|e| e.to_string())? {
                return Ok(Some(message));
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(Some(n)) => self.decoder.feed(&chunk[..n]),
                Ok(None) if !self.decoder.is_mid_message() => return Ok(None),
                Ok(None) => return Err("a stream ended inside a message".to_owned()),
                Err(e) => return Err(format!("reading a stream: {e}")),
            }
        }
    }
}

pub(crate) async fn run(attempt: &Attempt, mut publishes: Publishes) -> Ended {
    let (ctx, sink) = (&attempt.ctx, &attempt.sink);
    let (url, hash) = match cert_hash(&ctx.gateway).await {
        Ok(found) => found,
        Err(e) => return Ended::retry(format!("certificate hash unavailable: {e}")),
    };
    let mut params = vec![("mode", ctx.wt_mode.as_str().to_owned())];
    params.extend(attempt.since_param());
    if let Some(token) = ctx.token() {
        params.push(("token", encode_query_value(&token)));
    }
    let query = ctx.target("", &params);
    let url = format!("{url}{query}");
    let config = match client_config(&url, hash).await {
        Ok(config) => config,
        Err(e) => return Ended::retry(e),
    };
    let endpoint = match Endpoint::client(config) {
        Ok(endpoint) => endpoint,
        Err(e) => return Ended::retry(format!("cannot open a UDP socket: {e}")),
    };
    let connection = match endpoint.connect(&url).await {
        Ok(connection) => connection,
        Err(wtransport::error::ConnectingError::ConnectionError(e)) => return closed(e),
        Err(e) => return Ended::retry(format!("no session: {e}")),
    };
    let mut control = match connection.accept_uni().await {
        Ok(stream) => FrameReader::new(stream),
        Err(e) => return closed(e),
    };
    let mut event_streams = FuturesUnordered::new();
    let mut replies = FuturesUnordered::new();
    loop {
        let message = tokio::select! {
            biased;
            error = connection.closed() => return closed(error),
            frame = control.next() => match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ended::retry("the gateway finished the control stream"),
                Err(e) => return first_error(&connection, e).await,
            },
            stream = connection.accept_uni(), if ctx.wt_mode == WebTransportMode::StreamPerEvent => {
                match stream {
                    Ok(stream) => event_streams.push(async move { FrameReader::new(stream).next().await }),
                    Err(e) => return closed(e),
                }
                continue;
            }
            Some(frame) = event_streams.next(), if !event_streams.is_empty() => match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => continue,
                Err(e) => return first_error(&connection, e).await,
            },
            datagram = connection.receive_datagram(), if ctx.wt_mode == WebTransportMode::Datagram => {
                match datagram {
                    Ok(datagram) => datagram.payload().to_vec(),
                    Err(e) => return closed(e),
                }
            }
            Some(request) = publishes.recv() => {
                let opening = connection.open_bi();
                replies.push(async move {
                    let result = publish(opening, &request.topic, &request.data).await;
                    let _ = request.reply.send(result);
                });
                continue;
            }
            Some(()) = replies.next(), if !replies.is_empty() => continue,
        };
        sink.message(match Message::parse(&message) {
            Ok(message) => Incoming::Message(message),
            Err(undecodable) => Incoming::Undecodable(undecodable),
        });
    }
}

/// One publish on its own bidirectional stream; the reply comes on it.
async fn publish(
    opening: impl std::future::Future<
        Output = Result<wtransport::stream::OpeningBiStream, ConnectionError>,
    >,
    topic: &str,
    data: &crate::Data,
) -> Result<EventId, PublishError> {
    let failed = |e: &dyn std::fmt::Display| PublishError::Failed(e.to_string());
    let (mut send, recv) = opening
        .await
        .map_err(|e| failed(&e))?
        .await
        .map_err(|e| failed(&e))?;
    send.write_all(&encode(publish_message(topic, data, None).as_bytes()))
        .await
        .map_err(|e| failed(&e))?;
    let reply = FrameReader::new(recv)
        .next()
        .await
        .map_err(|e| failed(&e))?
        .ok_or_else(|| PublishError::Failed("no reply to the publish".to_owned()))?;
    let _ = send.finish().await;
    let reply = Message::parse(&reply);
    match reply.as_ref().ok().and_then(publish_reply) {
        Some((_, result)) => result,
        None => Err(PublishError::Failed(format!(
            "an unexpected reply: {reply:?}"
        ))),
    }
}

/// `GET /wt/cert-hash`: the session URL (without query) and the certificate's SHA-256.
async fn cert_hash(gateway: &Gateway) -> Result<(String, Sha256Digest), String> {
    let (head, body) = exchange(
        gateway,
        "GET",
        "/wt/cert-hash",
        &[],
        b"",
        Duration::from_secs(10),
    )
    .await?;
    if head.status != 200 {
        return Err(refusal(head.status, &body).reason);
    }
    let doc: Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON ({e})"))?;
    let bad = |what: &str| format!("{what}: {doc}");
    let hash: Vec<u8> = doc["value"]
        .as_array()
        .ok_or_else(|| bad("no value"))?
        .iter()
        .map(|byte| byte.as_u64().and_then(|b| u8::try_from(b).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("value is not bytes"))?;
    let hash: [u8; 32] = hash.try_into().map_err(|_| bad("not 32 bytes"))?;
    let url = doc["url"].as_str().ok_or_else(|| bad("no url"))?;
    Ok((reachable_url(url, gateway)?, Sha256Digest::new(hash)))
}

/// The document's `url` names the address the gateway bound, which is loopback when it bound
/// all interfaces. A client that reached the gateway under another name uses that name.
fn reachable_url(url: &str, gateway: &Gateway) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("a url that is not https: {url}"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("a bad port in {url}"))?,
        ),
        _ => (authority, 443),
    };
    let is_loopback = |host: &str| {
        host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    if !is_loopback(host) || is_loopback(gateway.host()) {
        return Ok(format!("https://{authority}{path}"));
    }
    let host = gateway.host();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Ok(format!("https://{host}:{port}{path}"))
}

/// A QUIC client that trusts exactly the certificate with `hash`, on a UDP socket of the
/// session address's family (binding `[::]` would fail where IPv6 is off).
async fn client_config(url: &str, hash: Sha256Digest) -> Result<ClientConfig, String> {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let remote = tokio::net::lookup_host(authority)
        .await
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| format!("cannot resolve {authority}"))?;
    let local = match remote {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let config = ClientConfig::builder()
        .with_bind_address(local)
        .with_server_certificate_hashes([hash])
        // The session's liveness deadline, as the gateway's: QUIC's idle timeout (the smaller
        // of the two ends') ends a session whose gateway died without closing it, and the
        // subscription resumes from `last_id()`; 10 s here bounds that even against a gateway
        // configured longer. PINGs from this side too, well inside it, keep NAT bindings open
        // on the way and a quiet session alive.
        .keep_alive_interval(Some(Duration::from_secs(3)))
        .max_idle_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| format!("idle timeout: {e}"))?;
    Ok(config.build())
}

/// Why the session ended, from the gateway's close code: 4400 (bad URL), 4401 (no valid
/// token) and 4403 (topic not granted) would be the same on every transport.
fn closed(error: ConnectionError) -> Ended {
    match error {
        ConnectionError::ApplicationClosed(close) => {
            let code = close.code().into_inner();
            let reason = String::from_utf8_lossy(close.reason()).into_owned();
            let text = format!("session closed ({code} {reason})");
            if matches!(code, 4400 | 4401 | 4403) {
                let machine = reason
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                Ended::fatal(text, Some(machine).filter(|m| !m.is_empty()))
            } else {
                Ended::retry(text)
            }
        }
        other => Ended::retry(format!("session failed: {other}")),
    }
}

/// A stream read failed, most likely because the session closed: report the session's close
/// code when there is one, since it says more than the stream error.
async fn first_error(connection: &wtransport::Connection, stream_error: String) -> Ended {
    match tokio::time::timeout(Duration::from_millis(100), connection.closed()).await {
        Ok(error) => closed(error),
        Err(_) => Ended::retry(stream_error),
    }
}
