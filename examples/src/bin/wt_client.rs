//! `wt_client`: subscribe to streamgate over WebTransport (HTTP/3 over QUIC, UDP).
//!
//! ```text
//! cargo run -p streamgate -- serve                                   # in another terminal
//! cargo run -p streamgate-examples --bin wt_client -- demo --count 5
//! cargo run -p streamgate-examples --bin wt_client -- demo --mode datagram
//! ```
//!
//! # How streamgate speaks WebTransport
//!
//! **Finding the endpoint.** WebTransport has its own UDP listener (default
//! `127.0.0.1:4433`), and a freshly generated, self-signed certificate that no certificate
//! authority vouches for. `GET /wt/cert-hash` on the gateway's ordinary HTTP listener answers
//!
//! ```json
//! {"algorithm":"sha-256","value":[183,12,…],"hex":"b70c…","url":"https://127.0.0.1:4433/wt",
//!  "self_signed":true,"generation":0}
//! ```
//!
//! and the client *pins* that hash instead of validating a chain — what browsers do with
//! `serverCertificateHashes`. The gateway renews the certificate every 10 days, so fetch the
//! document right before each connect, never once for good. `url` is the address the gateway
//! bound; when that is a loopback address but the gateway was reached under another name,
//! this client uses that name with the document's port.
//!
//! **Session.** `https://host:4433/wt?topics=a,b&since=<id>&mode=<mode>` (one HTTP/3
//! extended CONNECT). A bad query is accepted and then closed at once with code 4400 and the
//! reason `<error code>: <reason>`, so the client can read why.
//!
//! **The control stream.** The gateway opens one unidirectional stream as soon as the
//! session is up: the first stream the client accepts. Its first message is
//! `{"type":"subscribed","topics":[…],"epoch":"…","mode":"stream","max_datagram_size":1295}`.
//! On every stream, a message is a `u32` big-endian length and that many bytes: a JSON
//! envelope (first byte `{`) or, for `binary` events, the binary envelope (first byte `0x01`).
//!
//! **Modes** (`--mode`): where events travel.
//! - `stream` (default): events and notices in order on the control stream, like a WebSocket.
//!   Reliable and ordered; one lost packet holds back every later event (head-of-line
//!   blocking).
//! - `stream-per-event`: each event on a new unidirectional stream (one message, then FIN);
//!   notices stay on the control stream. A lost packet delays only its own event, so events
//!   can arrive out of id order.
//! - `datagram`: one event per QUIC datagram, with no length prefix. Lowest latency, but a lost
//!   datagram is never resent and no notice says so. An event too large for a datagram comes
//!   on the control stream, announced by a `datagram_fallback` notice.
//!
//! In the two unordered modes the resume point is the highest id seen, so an event still in
//! flight when the connection drops can be missed after reconnecting; only `stream` mode
//! guarantees the resume rule end to end.
//!
//! **Close codes** (QUIC application close, reason in UTF-8): `1001` shutdown, `1008` a
//! session limit, `1009` a message too large, `1013` too many sessions (try later), `4400` the
//! session URL was refused (final: this client exits). Anything but 4400 means: reconnect
//! after a delay with `since=<last id>`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use hyper::StatusCode;
use streamgate_examples::cli::{Common, Gateway};
use streamgate_examples::frames::FrameReader;
use streamgate_examples::http::{read_json, refusal, Connection, CONNECT_TIMEOUT};
use streamgate_examples::message::ServerMessage;
use streamgate_examples::{Backoff, Disconnect, Flow, Order, Output};
use wtransport::error::{ConnectingError, ConnectionError};
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Endpoint, VarInt};

/// The close code of a refused session URL: asking again gets the same answer.
const REFUSED_URL: u64 = 4400;

/// Subscribe to streamgate topics over WebTransport and print each event as
/// `<id> <topic> <data>`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Where events travel: in order on the control stream, one stream each, or datagrams.
    #[arg(long, value_enum, default_value_t = Mode::Stream)]
    mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Stream,
    StreamPerEvent,
    Datagram,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::StreamPerEvent => "stream-per-event",
            Self::Datagram => "datagram",
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let common = &args.common;
    let order = match args.mode {
        Mode::Stream => Order::Ordered,
        Mode::StreamPerEvent | Mode::Datagram => Order::Unordered,
    };
    streamgate_examples::run_sessions(
        "wt_client",
        order,
        common,
        ("disconnected", "reconnecting"),
        async |output, backoff| session(&args, output, backoff).await,
    )
    .await
}

/// One session, from the certificate hash to its end. `Ok` means the client is done.
async fn session(
    args: &Args,
    output: &mut Output,
    backoff: &mut Backoff,
) -> Result<(), Disconnect> {
    let common = &args.common;
    let (url, hash) = cert_hash(&common.gateway).await?;
    let mut url = format!(
        "{url}?topics={}&mode={}",
        common.topics_param(),
        args.mode.as_str()
    );
    if let Some(since) = output.resume_from() {
        url.push_str(&format!("&since={since}"));
    }
    let endpoint = Endpoint::client(client_config(&url, hash).await?)
        .map_err(|e| Disconnect::retry(format!("cannot open a UDP socket: {e}")))?;
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect(&url))
        .await
        .map_err(|_| Disconnect::retry(format!("{url}: no session within 10 s")))?
        .map_err(|e| match e {
            ConnectingError::ConnectionError(e) => closed(e),
            other => Disconnect::retry(format!("{url}: {other}")),
        })?;

    let control = connection.accept_uni().await.map_err(closed)?;
    let mut control = FrameReader::new(control);
    let subscribed = match control.next().await {
        Ok(Some(first)) => first,
        Ok(None) => return Err(Disconnect::retry("the control stream ended at once")),
        Err(e) => return Err(first_error(&connection, e).await),
    };
    match ServerMessage::parse(&subscribed) {
        Ok(ServerMessage::Subscribed(value)) => output.status(format_args!(
            "connected to {url}: mode {}, max datagram size {} bytes",
            value["mode"].as_str().unwrap_or("?"),
            value["max_datagram_size"]
        )),
        other => {
            return Err(Disconnect::retry(format!(
                "the control stream did not start with `subscribed`: {other:?}"
            )))
        }
    }
    // The gateway accepted us: the next outage starts from the shortest delay again.
    backoff.reset();

    // In stream-per-event mode, events whose streams are still being read.
    let mut event_streams = FuturesUnordered::new();
    loop {
        // Every branch is cancel-safe: a branch that loses the race loses no data.
        let message = tokio::select! {
            biased;
            error = connection.closed() => return Err(closed(error)),
            frame = control.next() => match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => return Err(Disconnect::retry("the gateway finished the control stream")),
                Err(e) => return Err(first_error(&connection, e).await),
            },
            stream = connection.accept_uni(), if args.mode == Mode::StreamPerEvent => {
                let stream = stream.map_err(closed)?;
                // One message, then FIN: read it alongside the others, in whatever order
                // they complete.
                event_streams.push(async move { FrameReader::new(stream).next().await });
                continue;
            }
            Some(frame) = event_streams.next(), if !event_streams.is_empty() => match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => continue, // a stream with no message: nothing to print
                Err(e) => return Err(first_error(&connection, e).await),
            },
            datagram = connection.receive_datagram(), if args.mode == Mode::Datagram => {
                // A datagram is exactly one envelope: no length prefix.
                datagram.map_err(closed)?.payload().to_vec()
            }
        };
        match ServerMessage::parse(&message) {
            Ok(message) => {
                if output.handle(message) == Flow::Done {
                    break;
                }
            }
            Err(undecodable) => output.skip(&undecodable),
        }
    }
    // Code 0, "no error". Waiting briefly lets the close reach the gateway before the process
    // exits, instead of the session lingering there until its idle timeout.
    connection.close(VarInt::from_u32(0), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    Ok(())
}

/// `GET /wt/cert-hash`: the session URL and the certificate's SHA-256.
async fn cert_hash(gateway: &Gateway) -> Result<(String, Sha256Digest), Disconnect> {
    let mut http = Connection::open(gateway).await?;
    let response = http.get("/wt/cert-hash", &[], CONNECT_TIMEOUT).await?;
    if response.status() == StatusCode::NOT_FOUND {
        return Err(Disconnect::Fatal(
            "the gateway has no /wt/cert-hash: is WebTransport on ([webtransport] enabled)?"
                .to_owned(),
        ));
    }
    if response.status() != StatusCode::OK {
        return Err(refusal(response).await);
    }
    let doc = read_json(response, CONNECT_TIMEOUT).await?;
    let bad = |what: &str| Disconnect::retry(format!("/wt/cert-hash: {what}: {doc}"));
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
fn reachable_url(url: &str, gateway: &Gateway) -> Result<String, Disconnect> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Disconnect::retry(format!("/wt/cert-hash gave a bad url {url:?}: {e}")))?;
    let is_loopback = |host: &str| {
        host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    let host = uri.host().unwrap_or_default();
    if !is_loopback(host) || is_loopback(gateway.host()) {
        return Ok(url.to_owned());
    }
    let port = uri.port_u16().unwrap_or(443);
    let host = gateway.host();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Ok(format!("https://{host}:{port}{}", uri.path()))
}

/// A QUIC client that trusts exactly the certificate with `hash`, on a UDP socket of the
/// session address's family (binding `[::]` would fail where IPv6 is off).
async fn client_config(url: &str, hash: Sha256Digest) -> Result<ClientConfig, Disconnect> {
    let authority = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| Some(format!("{}:{}", uri.host()?, uri.port_u16().unwrap_or(443))))
        .ok_or_else(|| Disconnect::retry(format!("no host in {url}")))?;
    let remote = tokio::net::lookup_host(&authority)
        .await
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| Disconnect::retry(format!("cannot resolve {authority}")))?;
    let local = match remote {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let config = ClientConfig::builder()
        .with_bind_address(local)
        .with_server_certificate_hashes([hash])
        // The gateway's own keepalive is 10 s and its idle timeout 30 s; pinging from this
        // side as well keeps NAT bindings open on the way.
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .max_idle_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| Disconnect::Fatal(format!("idle timeout: {e}")))?;
    Ok(config.build())
}

/// Why the session ended, from the gateway's close code.
fn closed(error: ConnectionError) -> Disconnect {
    match error {
        ConnectionError::ApplicationClosed(close) => {
            let code = close.code().into_inner();
            let reason = format!(
                "the gateway closed the session with {code} ({})",
                String::from_utf8_lossy(close.reason())
            );
            if code == REFUSED_URL {
                Disconnect::Fatal(reason)
            } else {
                Disconnect::Retry(reason)
            }
        }
        other => Disconnect::retry(format!("the session ended: {other}")),
    }
}

/// A stream read failed, most likely because the session closed: report the session's close
/// code when there is one, since it says more than the stream error.
async fn first_error(connection: &wtransport::Connection, stream_error: String) -> Disconnect {
    match tokio::time::timeout(Duration::from_millis(100), connection.closed()).await {
        Ok(error) => closed(error),
        Err(_) => Disconnect::Retry(stream_error),
    }
}
