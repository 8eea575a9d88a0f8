//! One WebSocket connection after the upgrade: the I/O driver around the bus subscription,
//! the keepalive state machine and the rate limiter.
//!
//! The driver is generic over any `Stream + Sink` of tungstenite messages, so tests can run
//! it over an in-memory duplex as well as a socket.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use hyper_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use hyper_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use hyper_tungstenite::tungstenite::{Error as WsError, Message};
use streamgate_core::{
    Delivery, Event, EventId, Grant, Rejection, SubscribeRequest, Subscription, Topic,
    TransportContext, TransportMetrics, WireFormat,
};
use streamgate_proto::{
    encode_error, encode_notice, encode_subscribed, error_reply, publish_reply, ClientMessage,
    EnvelopeFormat, Keepalive, KeepaliveAction, TokenBucket,
};
use tokio::time::Instant;

use crate::close::{close_for_error, truncate};
use crate::config::WsConfig;
use crate::deflate::{self, Failure};

/// How long a connection without a token has to send its `auth` message.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Close reason (code 1008) when the token expires.
const TOKEN_EXPIRED: &str = "token expired";
/// Close reason (code 1008) when no `auth` message came in time.
const AUTH_MISSING: &str = "authentication required: send {\"type\":\"auth\",\"token\":…} first";

/// `{"type":"auth","token":…}`: a token sent after the upgrade.
#[derive(serde::Deserialize)]
struct AuthMessage {
    #[serde(rename = "type")]
    kind: String,
    token: String,
}

/// The token of an `auth` message, or `None` for any other message.
fn auth_message(message: &str) -> Option<String> {
    if !message.contains("\"auth\"") {
        return None;
    }
    serde_json::from_str::<AuthMessage>(message)
        .ok()
        .filter(|m| m.kind == "auth")
        .map(|m| m.token)
}

/// Most ready events written before one flush.
const MAX_BATCH: usize = 256;

/// What a connection does.
pub(crate) enum Mode {
    /// `/ws`: a subscriber (and publisher) of the bus.
    Subscriber {
        subscription: Option<Subscription>,
        envelope: EnvelopeFormat,
        /// What the upgrade's token allows (`[auth]`); `None` when authentication is off or
        /// the first message must be `auth`.
        grant: Option<Grant>,
        /// The client's address, for its publish limits; `None` when the gateway did not
        /// say (an embedder calling the transport directly).
        client: Option<IpAddr>,
    },
    /// `/ws/echo`: send every message back.
    Echo,
}

/// Why the connection loop ended.
enum End {
    /// Close with this code and reason, then wait for the peer's close.
    Close(CloseCode, String),
    /// The peer closed (its close was answered) or vanished: nothing more to send.
    Gone,
}

/// permessage-deflate as negotiated for one connection.
#[derive(Debug)]
pub(crate) struct Deflate {
    /// Whether our messages may be compressed (not when the client limited our window to
    /// 256 bytes, `server_max_window_bits=8`).
    pub(crate) compress: bool,
    /// Where the inbound half reports why it failed the connection.
    pub(crate) failure: Arc<OnceLock<Failure>>,
}

/// The compressed JSON envelope of an event (RFC 7692 payload, RSV1 frame), cached in the
/// event beside the plain one. Empty when compressing does not pay: a compressed message is
/// never empty (even an empty message compresses to one byte), so empty can mean "send the
/// plain envelope".
static WS_JSON_DEFLATE: LazyLock<WireFormat> =
    LazyLock::new(|| WireFormat::register("ws-json-deflate"));
/// The compressed binary envelope, cached like [`WS_JSON_DEFLATE`].
static WS_BINARY_DEFLATE: LazyLock<WireFormat> =
    LazyLock::new(|| WireFormat::register("ws-binary-deflate"));

/// A text frame from bytes the gateway itself produced, which are UTF-8 by construction:
/// building the frame directly skips re-validating every envelope for every subscriber.
fn text(bytes: Bytes) -> Message {
    Message::Frame(Frame::message(bytes, OpCode::Data(Data::Text), true))
}

/// A data frame whose payload is compressed (RFC 7692 §6: RSV1 set on the first frame of a
/// compressed message). tungstenite writes a frame it is handed as it is, RSV1 included.
fn compressed(payload: Bytes, data: Data) -> Message {
    let mut frame = Frame::message(payload, OpCode::Data(data), true);
    frame.header_mut().rsv1 = true;
    Message::Frame(frame)
}

/// `bytes` as a message of type `data`, compressed if that makes it smaller; for messages
/// made once per connection (echo replies), so nothing is cached.
fn maybe_compressed(bytes: Bytes, data: Data) -> Message {
    match deflate::compress(&bytes) {
        Some(payload) => compressed(payload, data),
        None if data == Data::Text => text(bytes),
        None => Message::Frame(Frame::message(bytes, OpCode::Data(data), true)),
    }
}

fn event_message(event: &Event, envelope: EnvelopeFormat, compress: bool) -> Message {
    let format = envelope.for_event(event);
    let binary = format == EnvelopeFormat::Binary;
    if compress {
        // Compressed once per event and shared, like the envelope it is made from.
        let (compressed_format, data) = if binary {
            (*WS_BINARY_DEFLATE, Data::Binary)
        } else {
            (*WS_JSON_DEFLATE, Data::Text)
        };
        let payload = event.encoded(compressed_format, |event| {
            deflate::compress(&format.envelope(event)).unwrap_or_default()
        });
        if !payload.is_empty() {
            return compressed(payload, data);
        }
    }
    if binary {
        Message::Binary(format.envelope(event))
    } else {
        text(format.envelope(event))
    }
}

struct Session<S> {
    socket: S,
    config: Arc<WsConfig>,
    context: TransportContext,
    keepalive: Keepalive,
    rate: TokenBucket,
    subscription: Option<Subscription>,
    topics: Vec<Topic>,
    envelope: EnvelopeFormat,
    last_delivered: Option<EventId>,
    echo: bool,
    deflate: Option<Deflate>,
    metrics: TransportMetrics,
    /// What the client's token allows, when `[auth]` is on.
    grant: Option<Grant>,
    /// The client's address, for its publish limits.
    client: Option<IpAddr>,
    /// When the connection is closed with 1008 and why: the token's expiry, or the end of
    /// the wait for the first `auth` message.
    auth_deadline: Option<(Instant, &'static str)>,
}

/// Drives one connection to its end.
pub(crate) async fn run<S>(
    socket: S,
    config: Arc<WsConfig>,
    mode: Mode,
    context: TransportContext,
    deflate: Option<Deflate>,
    metrics: TransportMetrics,
) where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let now = Instant::now().into_std();
    let (subscription, envelope, echo, grant, client) = match mode {
        Mode::Subscriber {
            subscription,
            envelope,
            grant,
            client,
        } => (subscription, envelope, false, grant, client),
        Mode::Echo => (None, EnvelopeFormat::Json, true, None, None),
    };
    // `[auth]` on a subscriber: the connection ends when its token expires, or, without a
    // token yet, when no auth message came in time.
    let auth_deadline = match (&context.auth, &grant) {
        (Some(_), Some(grant)) if !echo => Some((
            Instant::now() + grant.remaining(SystemTime::now()),
            TOKEN_EXPIRED,
        )),
        (Some(_), None) if !echo => Some((Instant::now() + AUTH_TIMEOUT, AUTH_MISSING)),
        _ => None,
    };
    let mut session = Session {
        socket,
        keepalive: Keepalive::new(now, config.ping_interval, config.pong_timeout),
        rate: TokenBucket::new(now, config.message_rate, config.message_burst),
        topics: subscription
            .as_ref()
            .map(|s| s.topics().to_vec())
            .unwrap_or_default(),
        subscription,
        envelope,
        last_delivered: None,
        echo,
        deflate,
        config,
        context,
        metrics,
        grant,
        client,
        auth_deadline,
    };
    tracing::debug!("connected");
    let end = session.serve().await;
    match end {
        End::Close(code, reason) => {
            tracing::debug!(code = u16::from(code), %reason, "closing");
            if let Some(refusal) = close_rejection(code, &reason) {
                refusal.record();
            }
            session.close(code, reason).await;
        }
        End::Gone => tracing::debug!("peer gone"),
    }
}

impl<S> Session<S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    async fn serve(&mut self) -> End {
        if self.subscription.is_some() {
            let reply = encode_subscribed(&self.topics, &self.context.bus.health().epoch);
            if let Err(end) = self.send(text(reply)).await {
                return end;
            }
        }
        // One timer for the connection's life, moved only when the keepalive deadline moves:
        // a fresh `sleep_until` per loop turn would register a timer for every batch sent.
        let mut timer = Box::pin(tokio::time::sleep_until(Instant::from_std(
            self.keepalive.poll_timeout(),
        )));
        let mut auth_timer = Box::pin(tokio::time::sleep_until(
            self.auth_deadline.map_or_else(Instant::now, |(at, _)| at),
        ));
        loop {
            let wake = Instant::from_std(self.keepalive.poll_timeout());
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            if let Some((at, _)) = self.auth_deadline {
                if auth_timer.deadline() != at {
                    auth_timer.as_mut().reset(at);
                }
            }
            let step = tokio::select! {
                () = self.context.shutdown.cancelled() => {
                    Err(End::Close(CloseCode::Away, "server shutting down".to_owned()))
                }
                inbound = self.socket.next() => self.on_inbound(inbound).await,
                delivery = next_delivery(&mut self.subscription) => self.on_delivery(delivery).await,
                () = &mut timer => self.on_timer().await,
                () = &mut auth_timer, if self.auth_deadline.is_some() => {
                    let reason = self.auth_deadline.map_or(TOKEN_EXPIRED, |(_, why)| why);
                    Err(End::Close(CloseCode::Policy, reason.to_owned()))
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Whether messages to this client are compressed (when it pays).
    fn compresses(&self) -> bool {
        self.deflate.as_ref().is_some_and(|d| d.compress)
    }

    async fn on_timer(&mut self) -> Result<(), End> {
        match self.keepalive.handle_timeout(Instant::now().into_std()) {
            KeepaliveAction::Wait => Ok(()),
            KeepaliveAction::SendPing => self.send(Message::Ping(Bytes::from_static(b"sg"))).await,
            KeepaliveAction::PeerDead => {
                // A peer that answers nothing will not answer a close frame either.
                tracing::info!("no answer to ping; dropping the connection");
                Err(End::Gone)
            }
        }
    }

    async fn on_inbound(&mut self, inbound: Option<Result<Message, WsError>>) -> Result<(), End> {
        let message = match inbound {
            None => return Err(End::Gone),
            Some(Err(e)) => {
                return Err(match close_for_error(&e) {
                    Some((code, reason)) => {
                        // A failure of inbound deflate reaches us as the tungstenite error it
                        // was made to cause; its own reason says what really happened.
                        let ours = self
                            .deflate
                            .as_ref()
                            .and_then(|d| d.failure.get())
                            .filter(|failure| failure.code == code);
                        match ours {
                            Some(failure) => End::Close(code, failure.reason.clone()),
                            None => End::Close(code, reason),
                        }
                    }
                    None => End::Gone,
                });
            }
            Some(Ok(message)) => message,
        };
        let now = Instant::now().into_std();
        self.keepalive.handle_activity(now);
        match message {
            Message::Close(_) => {
                // tungstenite has queued the close reply; reading on flushes it and then ends.
                self.drain_after_close().await;
                Err(End::Gone)
            }
            // Pings are answered by tungstenite; pongs (solicited or not) only prove life.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => self.flush().await,
            // Every data message counts, echoed or not: an echo costs as much as it carries.
            Message::Text(_) | Message::Binary(_) if !self.rate.try_take(now) => Err(End::Close(
                CloseCode::Policy,
                format!("over the limit of {} messages/s", self.config.message_rate),
            )),
            Message::Text(t) if self.echo => {
                let reply = if self.compresses() {
                    maybe_compressed(Bytes::from(t), Data::Text)
                } else {
                    Message::Text(t)
                };
                self.send(reply).await
            }
            Message::Binary(b) if self.echo => {
                let reply = if self.compresses() {
                    maybe_compressed(b, Data::Binary)
                } else {
                    Message::Binary(b)
                };
                self.send(reply).await
            }
            Message::Binary(_) => Err(End::Close(
                CloseCode::Unsupported,
                "binary messages are not accepted on /ws; send JSON text".to_owned(),
            )),
            Message::Text(t) => self.on_client_message(t.as_str()).await,
        }
    }

    async fn on_client_message(&mut self, message: &str) -> Result<(), End> {
        if let Some(token) = auth_message(message) {
            return self.on_auth(&token).await;
        }
        if self.context.auth.is_some() && self.grant.is_none() {
            return Err(End::Close(CloseCode::Policy, AUTH_MISSING.to_owned()));
        }
        let reply = match ClientMessage::parse(message) {
            Err((error, reference)) => error_reply(&error, reference.as_deref()),
            // A refused publish is answered with an error, and the connection stays (the
            // client can slow down and go on).
            Ok(ClientMessage::Publish(request)) => {
                let outcome = self
                    .context
                    .client_publish(self.client, self.metrics.publishes())
                    .publish_message(
                        self.grant.as_ref(),
                        request.topic,
                        request.content_type,
                        request.payload,
                    )
                    .await;
                publish_reply(request.reference.as_deref(), &outcome)
            }
            Ok(ClientMessage::Subscribe {
                topics,
                since,
                reference,
            }) => match self.grant.as_ref().map(|g| g.check_subscribe(&topics)) {
                Some(Err(e)) => encode_error(&Rejection::from(&e), reference.as_deref()),
                _ => self.resubscribe(topics, since, reference).await,
            },
            Ok(ClientMessage::Unsubscribe { topics, reference }) => {
                let remaining: Vec<Topic> = self
                    .topics
                    .iter()
                    .filter(|t| !topics.contains(t))
                    .cloned()
                    .collect();
                self.resubscribe(remaining, None, reference).await
            }
        };
        self.send(text(reply)).await
    }

    /// `{"type":"auth","token":…}`: the first message of a connection upgraded without a
    /// token, or a fresh token before the current one expires. Answered with
    /// `{"type":"authenticated","expires_at":<unix seconds>}`; a refused token closes a
    /// connection that has none yet (1008), and is an `error` message otherwise (the old
    /// token stays in force).
    async fn on_auth(&mut self, token: &str) -> Result<(), End> {
        let Some(auth) = self.context.auth.clone() else {
            let error = Rejection::new("bad_message", "authentication is not enabled");
            return self.send(text(encode_error(&error, None))).await;
        };
        let verified = auth
            .verify(token)
            .and_then(|grant| grant.check_subscribe(&self.topics).map(|()| grant));
        match verified {
            Ok(grant) => {
                let now = SystemTime::now();
                self.auth_deadline = Some((Instant::now() + grant.remaining(now), TOKEN_EXPIRED));
                let expires_at = grant
                    .expires_at()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                self.grant = Some(grant);
                let reply = serde_json::json!({"type": "authenticated", "expires_at": expires_at});
                self.send(text(Bytes::from(reply.to_string()))).await
            }
            Err(e) if self.grant.is_none() => Err(End::Close(CloseCode::Policy, e.to_string())),
            Err(e) => {
                let reply = encode_error(&Rejection::from(&e), None);
                self.send(text(reply)).await
            }
        }
    }

    /// Replaces the subscription; resumes after the last delivered id unless told otherwise,
    /// so topics kept across the change lose and repeat nothing. A change the bus refuses
    /// leaves the current subscription as it was: the client gets an `error`, not a
    /// `subscribed`, so it must be able to rely on nothing having changed.
    async fn resubscribe(
        &mut self,
        topics: Vec<Topic>,
        since: Option<EventId>,
        reference: Option<String>,
    ) -> Bytes {
        let epoch = self.context.bus.health().epoch;
        if topics.is_empty() {
            self.subscription = None;
            self.topics.clear();
            return encode_subscribed(&[], &epoch);
        }
        // Nothing delivered yet: start where the old subscription started, so events it had
        // queued but not sent are not skipped.
        let since = since
            .or_else(|| self.last_delivered.clone())
            .or_else(|| self.subscription.as_ref().map(|s| s.start().clone()));
        match self
            .context
            .bus
            .subscribe(SubscribeRequest::resume(topics.clone(), since))
            .await
        {
            Ok(subscription) => {
                self.subscription = Some(subscription);
                self.topics = topics;
                encode_subscribed(&self.topics, &epoch)
            }
            Err(e) => encode_error(&Rejection::from(&e), reference.as_deref()),
        }
    }

    async fn on_delivery(&mut self, delivery: Option<Delivery>) -> Result<(), End> {
        let Some(first) = delivery else {
            return Err(End::Close(
                CloseCode::Away,
                "server shutting down".to_owned(),
            ));
        };
        let mut next = Some(first);
        let mut batched = 0;
        while let Some(delivery) = next.take() {
            let message = match &delivery {
                Delivery::Event(event) => {
                    self.last_delivered = Some(event.id.clone());
                    event_message(event, self.envelope, self.compresses())
                }
                Delivery::Notice(notice) => text(encode_notice(notice)),
            };
            let bytes = message.len();
            self.feed(message).await?;
            self.metrics.delivered(&delivery, bytes);
            batched += 1;
            if batched < MAX_BATCH {
                next = self
                    .subscription
                    .as_mut()
                    .and_then(|s| s.next().now_or_never().flatten());
            }
        }
        self.flush().await
    }

    async fn send(&mut self, message: Message) -> Result<(), End> {
        let write = self.socket.send(message);
        Self::bounded(self.config.write_timeout, write).await
    }

    async fn feed(&mut self, message: Message) -> Result<(), End> {
        let write = self.socket.feed(message);
        Self::bounded(self.config.write_timeout, write).await
    }

    async fn flush(&mut self) -> Result<(), End> {
        let write = self.socket.flush();
        Self::bounded(self.config.write_timeout, write).await
    }

    /// Runs a write, ending the connection if it fails or stays blocked past `timeout` (a
    /// client that stopped reading; it can resume from its last id).
    async fn bounded(
        timeout: std::time::Duration,
        write: impl std::future::Future<Output = Result<(), WsError>>,
    ) -> Result<(), End> {
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "write failed");
                Err(End::Gone)
            }
            Err(_) => {
                tracing::info!("client stopped reading; dropping the connection");
                Err(End::Gone)
            }
        }
    }

    /// Sends our close frame and waits, at most `close_timeout`, for the peer's.
    async fn close(&mut self, code: CloseCode, reason: String) {
        let frame = CloseFrame {
            code,
            reason: truncate(reason).into(),
        };
        if self.send(Message::Close(Some(frame))).await.is_ok() {
            self.drain_after_close().await;
        }
    }

    /// Reads until the closing handshake completes (tungstenite ends the stream), bounded by
    /// `close_timeout`; then the socket is dropped, which closes TCP.
    async fn drain_after_close(&mut self) {
        let drain = async { while let Some(Ok(_)) = self.socket.next().await {} };
        let _ = tokio::time::timeout(self.config.close_timeout, drain).await;
    }
}

/// The rejection a close we initiate stands for, for the codes that refuse what the client
/// did (not a normal or shutdown close).
fn close_rejection(code: CloseCode, reason: &str) -> Option<Rejection> {
    let machine_code = match code {
        CloseCode::Policy => "ws_policy_violation",
        CloseCode::Size => "ws_message_too_big",
        CloseCode::Invalid => "ws_invalid_payload",
        CloseCode::Protocol => "ws_protocol_error",
        CloseCode::Unsupported => "ws_unsupported_data",
        _ => return None,
    };
    Some(Rejection::closing(machine_code, code.into(), reason))
}

async fn next_delivery(subscription: &mut Option<Subscription>) -> Option<Delivery> {
    match subscription {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}
