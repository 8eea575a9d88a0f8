//! One open session: [`Session::run`] writes `subscribed` on the control stream, then waits
//! on everything that can happen to the session at once — a delivery from the bus, a client
//! stream or datagram, the token's expiry, shutdown — and hands each to the module that owns
//! it ([`crate::delivery`], [`crate::client_messages`]). The stream primitives (open, write
//! with `write_timeout`, close with a code) are here because every one of them uses them.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use streamgate_core::{Direction, Grant, Subscription, Tap, TransportContext, TransportMetrics};
use streamgate_proto::{EnvelopeFormat, TokenBucket};
use wtransport::{Connection, SendStream, VarInt};

use crate::config::WtConfig;
use crate::tap::{tap_session, tap_stream};
use crate::wire::{close_code, encode_subscribed, frame, DeliveryMode};

pub(crate) fn close(connection: &Connection, tap: Option<&Tap>, code: u32, reason: &str) {
    // A close reason must fit in one packet with the rest of the frame.
    let mut end = reason.len().min(512);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    tracing::debug!(code, reason, "closing session");
    let reason = &reason[..end];
    tap_session(
        tap,
        Direction::Out,
        serde_json::json!({"event": "close", "code": code, "reason": reason}),
    );
    connection.close(VarInt::from_u32(code), reason.as_bytes());
}

pub(crate) struct Session {
    pub(crate) connection: Connection,
    pub(crate) config: Arc<WtConfig>,
    pub(crate) context: TransportContext,
    pub(crate) mode: DeliveryMode,
    pub(crate) envelope: EnvelopeFormat,
    pub(crate) rate: TokenBucket,
    pub(crate) open_streams: Arc<AtomicUsize>,
    /// `Some` only for a session the lab asked about (`lab=<tap id>`).
    pub(crate) tap: Option<Tap>,
    pub(crate) metrics: TransportMetrics,
    /// What the session's token allows, when `[auth]` is on: it is closed when it expires.
    pub(crate) grant: Option<Grant>,
}

/// Why a session ended; the close was already sent (or the peer is gone).
pub(crate) struct Ended;

impl Session {
    pub(crate) async fn run(mut self, mut subscription: Subscription) {
        let mut control = match self.open_uni("control").await {
            Ok(control) => control,
            Err(Ended) => return,
        };
        let subscribed = encode_subscribed(
            subscription.topics(),
            &self.context.bus.health().epoch,
            self.mode,
            self.connection.max_datagram_size(),
        );
        if self.write(&mut control, frame(&subscribed)).await.is_err() {
            return;
        }
        let token_expiry = self.grant.as_ref().map(|grant| {
            tokio::time::Instant::now() + grant.remaining(std::time::SystemTime::now())
        });
        let mut token_timer = Box::pin(tokio::time::sleep_until(
            token_expiry.unwrap_or_else(tokio::time::Instant::now),
        ));
        loop {
            let step = tokio::select! {
                () = self.context.shutdown.cancelled() => {
                    self.close(close_code::GOING_AWAY, "server shutting down");
                    Err(Ended)
                }
                () = &mut token_timer, if token_expiry.is_some() => {
                    self.close(close_code::POLICY, "token expired");
                    Err(Ended)
                }
                delivery = subscription.next() => match delivery {
                    Some(delivery) => self.deliver(&mut control, delivery).await,
                    None => {
                        self.close(close_code::GOING_AWAY, "server shutting down");
                        Err(Ended)
                    }
                },
                bi = self.connection.accept_bi() => match bi {
                    Ok((send, recv)) => self.on_bidi(send, recv),
                    Err(e) => {
                        tracing::debug!(error = %e, "session ended");
                        tap_session(
                            self.tap.as_ref(),
                            Direction::In,
                            serde_json::json!({"event": "closed", "reason": e.to_string()}),
                        );
                        Err(Ended)
                    }
                },
                uni = self.connection.accept_uni() => match uni {
                    // Client→server messages go on bidirectional streams (they get replies).
                    Ok(stream) => {
                        tap_session(
                            self.tap.as_ref(),
                            Direction::In,
                            serde_json::json!({
                                "event": "uni_stream_refused",
                                "stream_id": stream.id().into_u64(),
                            }),
                        );
                        stream.stop(VarInt::from_u32(0));
                        Ok(())
                    }
                    Err(_) => Err(Ended),
                },
                datagram = self.connection.receive_datagram() => match datagram {
                    Ok(datagram) => self.on_datagram(datagram.payload()).await,
                    Err(_) => Err(Ended),
                },
            };
            if step.is_err() {
                return;
            }
        }
    }

    pub(crate) fn close(&self, code: u32, reason: &str) {
        close(&self.connection, self.tap.as_ref(), code, reason);
    }

    /// Opens a unidirectional stream; `purpose` (`control`, `event`) only names it for the tap.
    pub(crate) async fn open_uni(&self, purpose: &str) -> Result<SendStream, Ended> {
        let open = async {
            let opening = self
                .connection
                .open_uni()
                .await
                .map_err(|e| e.to_string())?;
            opening.await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(self.config.write_timeout, open).await {
            Ok(Ok(stream)) => {
                tap_session(
                    self.tap.as_ref(),
                    Direction::Out,
                    serde_json::json!({
                        "event": "uni_stream_opened",
                        "stream_id": stream.id().into_u64(),
                        "purpose": purpose,
                    }),
                );
                Ok(stream)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, purpose, "cannot open a stream");
                self.close(close_code::INTERNAL, "cannot open the control stream");
                Err(Ended)
            }
            Err(_) => {
                self.close(close_code::POLICY, "client gave no stream credit");
                Err(Ended)
            }
        }
    }

    /// Writes `bytes` on `stream`, handing quinn the `Bytes` itself (no copy: an event's bytes
    /// are shared by every subscriber's send buffer); ends the session when the client has not
    /// let them through within `write_timeout`.
    pub(crate) async fn write(&self, stream: &mut SendStream, bytes: Bytes) -> Result<(), Ended> {
        tap_stream(
            self.tap.as_ref(),
            Direction::Out,
            stream.id().into_u64(),
            false,
            &bytes,
        );
        let write = stream.quic_stream_mut().write_chunk(bytes);
        match tokio::time::timeout(self.config.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "write failed");
                Err(Ended)
            }
            Err(_) => {
                self.close(close_code::POLICY, "client stopped reading");
                Err(Ended)
            }
        }
    }
}
