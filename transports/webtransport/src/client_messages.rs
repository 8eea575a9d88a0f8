//! What a client sends: `publish` messages on client-opened bidirectional streams (one framed
//! reply each, on the same stream) or in datagrams (a datagram reply), with the session's
//! limits on both (streams open at once, datagram rate, message size). Apart from the session
//! loop because it is the only place the gateway reads client bytes.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use streamgate_core::{Direction, Grant, RecordKind, Tap, TransportContext, TransportMetrics};
use streamgate_proto::{encode_error, encode_published, ClientMessage, ProtocolError};
use wtransport::{Connection, RecvStream, SendStream};

use crate::session::{close, Ended, Session};
use crate::tap::{tap_session, tap_stream};
use crate::wire::{close_code, fits_datagram, frame, FrameDecoder};

impl Session {
    pub(crate) fn on_bidi(&self, send: SendStream, recv: RecvStream) -> Result<(), Ended> {
        let open = self.open_streams.fetch_add(1, Ordering::Relaxed);
        if open >= self.config.max_streams_per_session as usize {
            self.open_streams.fetch_sub(1, Ordering::Relaxed);
            let reason = format!(
                "too many streams (limit {} per session)",
                self.config.max_streams_per_session
            );
            self.close(close_code::POLICY, &reason);
            return Err(Ended);
        }
        tap_session(
            self.tap.as_ref(),
            Direction::In,
            serde_json::json!({
                "event": "bidi_stream_accepted",
                "stream_id": send.id().into_u64(),
            }),
        );
        let connection = self.connection.clone();
        let context = self.context.clone();
        let client = self.connection.remote_address().ip();
        let max = self.config.max_message_size;
        let open_streams = Arc::clone(&self.open_streams);
        let tap = self.tap.clone();
        let metrics = self.metrics.clone();
        let grant = self.grant.clone();
        self.context.tasks.spawn(async move {
            serve_bidi(
                &connection,
                send,
                recv,
                &context,
                client,
                max,
                tap,
                &metrics,
                grant,
            )
            .await;
            open_streams.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(())
    }

    pub(crate) async fn on_datagram(&mut self, payload: Bytes) -> Result<(), Ended> {
        if !self.rate.try_take(std::time::Instant::now()) {
            let reason = format!(
                "over the datagram rate of {}/s",
                self.config.max_datagram_rate
            );
            streamgate_core::record_rejection("wt_policy_violation", &reason);
            self.close(close_code::POLICY, &reason);
            return Err(Ended);
        }
        if let Some(tap) = &self.tap {
            tap.record(Direction::In, RecordKind::WtDatagram, &payload);
        }
        let reply = match refuse_publish(self.grant.as_ref(), &payload) {
            Some(refusal) => refusal,
            None => {
                let client = Some(self.connection.remote_address().ip());
                answer_client_message(&self.context, client, &payload, &self.metrics).await
            }
        };
        // Replies to datagrams are datagrams: as unreliable as the request.
        if fits_datagram(reply.len(), self.connection.max_datagram_size())
            && self.connection.send_datagram(&reply).is_ok()
        {
            if let Some(tap) = &self.tap {
                tap.record(Direction::Out, RecordKind::WtDatagram, &reply);
            }
        }
        Ok(())
    }
}

/// The `error` reply to a `publish` the session's token does not cover, or `None` to handle
/// the message as usual (authentication off, allowed, or not a publish).
fn refuse_publish(grant: Option<&Grant>, message: &[u8]) -> Option<Bytes> {
    let grant = grant?;
    let text = std::str::from_utf8(message).ok()?;
    let Ok(ClientMessage::Publish(request)) = ClientMessage::parse(text) else {
        return None;
    };
    let error = grant.check_publish(&request.topic).err()?;
    Some(encode_error(
        &ProtocolError::from(&error),
        request.reference.as_deref(),
    ))
}

/// Answers one client message (`publish`) of `client`; the reply is a JSON message. The one
/// client-publish path of this transport (bus publish, metrics, reply or error, rejection
/// record), for both streams and datagrams.
async fn answer_client_message(
    context: &TransportContext,
    client: Option<IpAddr>,
    message: &[u8],
    metrics: &TransportMetrics,
) -> Bytes {
    let Ok(text) = std::str::from_utf8(message) else {
        return encode_error(
            &ProtocolError::new("bad_message", "a client message is JSON text (UTF-8)"),
            None,
        );
    };
    match ClientMessage::parse(text) {
        Err((error, reference)) => encode_error(&error, reference.as_deref()),
        Ok(ClientMessage::Publish(request)) => {
            // Over the client's limits: an error reply to this publish; the session stays.
            if let Err(refusal) = context.admit_publish(client, &request.topic) {
                let error = ProtocolError::from(&refusal);
                metrics.publish(Err(error.code));
                streamgate_core::record_rejection(error.code, &error.reason);
                return encode_error(&error, request.reference.as_deref());
            }
            match context
                .bus
                .publish(request.topic, request.content_type, request.payload)
                .await
            {
                Ok(event) => {
                    metrics.publish(Ok(()));
                    encode_published(request.reference.as_deref(), &event.id)
                }
                Err(e) => {
                    let error = ProtocolError::from(&e);
                    metrics.publish(Err(error.code));
                    streamgate_core::record_rejection(error.code, &error.reason);
                    encode_error(&error, request.reference.as_deref())
                }
            }
        }
        Ok(ClientMessage::Subscribe { reference, .. })
        | Ok(ClientMessage::Unsubscribe { reference, .. }) => encode_error(
            &ProtocolError::new(
                "unsupported",
                "a WebTransport session's topics are fixed by its URL: open a new session \
                 with the new topics and since=<last id>",
            ),
            reference.as_deref(),
        ),
    }
}

/// Reads length-prefixed client messages from a client-opened bidirectional stream and
/// writes one length-prefixed JSON reply per message on its send side.
// The stream's whole state is handed to its task; a struct would only rename it.
#[allow(clippy::too_many_arguments)]
async fn serve_bidi(
    connection: &Connection,
    mut send: SendStream,
    mut recv: RecvStream,
    context: &TransportContext,
    client: IpAddr,
    max: usize,
    tap: Option<Tap>,
    metrics: &TransportMetrics,
    grant: Option<Grant>,
) {
    let stream_id = send.id().into_u64();
    let mut decoder = FrameDecoder::new(max);
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(message)) => {
                    let reply = match refuse_publish(grant.as_ref(), &message) {
                        Some(refusal) => refusal,
                        None => {
                            answer_client_message(context, Some(client), &message, metrics).await
                        }
                    };
                    let reply = frame(&reply);
                    tap_stream(tap.as_ref(), Direction::Out, stream_id, false, &reply);
                    if send.write_all(&reply).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(too_large) => {
                    let reason = format!(
                        "message of {} bytes, the limit is {}",
                        too_large.len, too_large.max
                    );
                    close(connection, tap.as_ref(), close_code::TOO_BIG, &reason);
                    return;
                }
            }
        }
        match recv.read(&mut buffer).await {
            Ok(Some(n)) => {
                tap_stream(tap.as_ref(), Direction::In, stream_id, false, &buffer[..n]);
                decoder.push(&buffer[..n]);
            }
            Ok(None) => {
                tap_stream(tap.as_ref(), Direction::In, stream_id, true, &[]);
                if decoder.pending() > 0 {
                    tracing::debug!(bytes = decoder.pending(), "stream ended inside a message");
                }
                let _ = send.finish().await;
                return;
            }
            Err(_) => return,
        }
    }
}
