//! Subscription delivery: how one event or notice from the bus reaches a session in its
//! delivery mode — on the control stream, on a stream of its own, or in a datagram with the
//! control stream as the fallback. Apart because it is the hot path, run once per subscriber
//! per event.

use bytes::Bytes;
use streamgate_core::{ContentType, Delivery, Direction, Event, RecordKind};
use streamgate_proto::{binary_envelope, encode_notice, json_envelope, EnvelopeFormat};
use wtransport::SendStream;

use crate::session::{Ended, Session};
use crate::tap::tap_stream;
use crate::wire::{encode_datagram_fallback, fits_datagram, frame, DeliveryMode};

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
                return self.write(control, &framed).await;
            }
            Delivery::Event(event) => event,
        };
        let envelope = envelope(&event, self.envelope);
        self.metrics
            .event_written(event.timestamp_us, envelope.len());
        match self.mode {
            DeliveryMode::Stream => self.write(control, &frame(&envelope)).await,
            DeliveryMode::StreamPerEvent => {
                let mut stream = self.open_uni("event").await?;
                let framed = frame(&envelope);
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
                        stream.write_all(&framed).await?;
                        stream.finish().await
                    };
                    if let Ok(Err(e)) = tokio::time::timeout(timeout, write).await {
                        tracing::debug!(error = %e, "event stream write failed");
                    }
                });
                Ok(())
            }
            DeliveryMode::Datagram => {
                let max = self.connection.max_datagram_size();
                if fits_datagram(envelope.len(), max)
                    && self.connection.send_datagram(&envelope).is_ok()
                {
                    if let Some(tap) = &self.tap {
                        tap.record(Direction::Out, RecordKind::WtDatagram, &envelope);
                    }
                    return Ok(());
                }
                let notice = encode_datagram_fallback(&event.id.to_string(), envelope.len(), max);
                self.write(control, &frame(&notice)).await?;
                self.write(control, &frame(&envelope)).await
            }
        }
    }
}

fn envelope(event: &Event, format: EnvelopeFormat) -> Bytes {
    if format == EnvelopeFormat::Binary || event.content_type == ContentType::Binary {
        binary_envelope(event)
    } else {
        json_envelope(event)
    }
}
