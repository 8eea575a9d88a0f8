//! Subscription delivery: how one event or notice from the bus reaches a session in its
//! delivery mode — on the control stream, on a stream of its own, or in a datagram with the
//! control stream as the fallback. Apart because it is the hot path, run once per subscriber
//! per event: the framed envelope is built once per event and wire format and shared, by
//! reference count, down to quinn's send buffers.

use std::sync::LazyLock;

use bytes::Bytes;
use streamgate_core::{ContentType, Delivery, Direction, Event, RecordKind, WireFormat};
use streamgate_proto::{binary_envelope, encode_notice, json_envelope, EnvelopeFormat};
use wtransport::SendStream;

use crate::session::{Ended, Session};
use crate::tap::tap_stream;
use crate::wire::{encode_datagram_fallback, fits_datagram, frame, DeliveryMode, PREFIX_LEN};

/// The framed JSON envelope (`docs/PROTOCOL.md` §3.1), cached in the event: built by the
/// first subscriber that needs it, shared by every other one.
static FRAMED_JSON: LazyLock<WireFormat> = LazyLock::new(|| WireFormat::register("wt-json"));
/// The framed binary envelope (§3.3), cached like [`FRAMED_JSON`].
static FRAMED_BINARY: LazyLock<WireFormat> = LazyLock::new(|| WireFormat::register("wt-binary"));

impl Session {
    pub(crate) async fn deliver(
        &self,
        control: &mut SendStream,
        delivery: Delivery,
    ) -> Result<(), Ended> {
        let event = match delivery {
            Delivery::Notice(notice) => {
                let framed = frame(&encode_notice(&notice));
                self.metrics.notice_written(&notice, framed.len());
                return self.write(control, framed).await;
            }
            Delivery::Event(event) => event,
        };
        let framed = framed_envelope(&event, self.envelope);
        let envelope_len = framed.len() - PREFIX_LEN;
        self.metrics.event_written(event.timestamp_us, envelope_len);
        match self.mode {
            DeliveryMode::Stream => self.write(control, framed).await,
            DeliveryMode::StreamPerEvent => {
                let mut stream = self.open_uni("event").await?;
                tap_stream(
                    self.tap.as_ref(),
                    Direction::Out,
                    stream.id().into_u64(),
                    true,
                    &framed,
                );
                let timeout = self.config.write_timeout;
                // Written by its own task: a lost packet of one event does not hold up the next.
                self.context.tasks.spawn(async move {
                    let write = async {
                        stream
                            .quic_stream_mut()
                            .write_chunk(framed)
                            .await
                            .map_err(|e| e.to_string())?;
                        stream.finish().await.map_err(|e| e.to_string())
                    };
                    if let Ok(Err(e)) = tokio::time::timeout(timeout, write).await {
                        tracing::debug!(error = %e, "event stream write failed");
                    }
                });
                Ok(())
            }
            DeliveryMode::Datagram => {
                let max = self.connection.max_datagram_size();
                let envelope = &framed[PREFIX_LEN..];
                if fits_datagram(envelope_len, max)
                    && self.connection.send_datagram(envelope).is_ok()
                {
                    if let Some(tap) = &self.tap {
                        tap.record(Direction::Out, RecordKind::WtDatagram, envelope);
                    }
                    return Ok(());
                }
                let notice = encode_datagram_fallback(&event.id.to_string(), envelope_len, max);
                self.write(control, frame(&notice)).await?;
                self.write(control, framed).await
            }
        }
    }
}

/// The event's length-prefixed envelope for this session: binary for binary events and for a
/// session that asked for binary envelopes, JSON otherwise. A datagram carries the same bytes
/// without the prefix (a slice of these).
fn framed_envelope(event: &Event, format: EnvelopeFormat) -> Bytes {
    if format == EnvelopeFormat::Binary || event.content_type == ContentType::Binary {
        event.encoded(*FRAMED_BINARY, |event| frame(&binary_envelope(event)))
    } else {
        event.encoded(*FRAMED_JSON, |event| frame(&json_envelope(event)))
    }
}
