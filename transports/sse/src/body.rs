//! The `text/event-stream` response body: subscription deliveries, heartbeats and the end
//! of the stream at shutdown, as one `http_body::Body`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http_body::{Body, Frame, SizeHint};
use streamgate_core::telemetry::ConnectionGuard;
use streamgate_core::{BoxError, Delivery, Subscription, TransportMetrics};
use streamgate_proto::{sse_comment, sse_event, sse_notice};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

/// The last block of a stream whose token expired (`docs/PROTOCOL.md`, "Authentication").
pub(crate) const EXPIRED: &[u8] =
    b"event: @expired\ndata: {\"type\":\"expired\",\"reason\":\"token expired\"}\n\n";

/// A live SSE stream for one subscriber.
pub(crate) struct EventStreamBody {
    preamble: Option<Bytes>,
    subscription: Subscription,
    heartbeat: Pin<Box<Sleep>>,
    heartbeat_interval: Duration,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    expiry: Option<Pin<Box<Sleep>>>,
    /// When the subscriber's token expires (`[auth]`): the stream ends then.
    token_expiry: Option<Pin<Box<Sleep>>>,
    ended: bool,
    metrics: TransportMetrics,
    _open: ConnectionGuard,
}

impl EventStreamBody {
    pub(crate) fn new(
        preamble: Bytes,
        subscription: Subscription,
        heartbeat_interval: Duration,
        max_duration: Duration,
        shutdown: WaitForCancellationFutureOwned,
        metrics: TransportMetrics,
    ) -> Self {
        Self {
            _open: metrics.connection(),
            metrics,
            preamble: Some(preamble),
            subscription,
            heartbeat: Box::pin(tokio::time::sleep(heartbeat_interval)),
            heartbeat_interval,
            shutdown: Box::pin(shutdown),
            expiry: (!max_duration.is_zero()).then(|| Box::pin(tokio::time::sleep(max_duration))),
            token_expiry: None,
            ended: false,
        }
    }

    /// Ends the stream at `deadline` with an `@expired` block (the subscriber's token expires).
    pub(crate) fn with_token_expiry(mut self, deadline: Option<Instant>) -> Self {
        self.token_expiry = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        self
    }

    fn frame(&mut self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let next = Instant::now() + self.heartbeat_interval;
        self.heartbeat.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}

impl Body for EventStreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(preamble) = this.preamble.take() {
            return this.frame(preamble);
        }
        if this.shutdown.as_mut().poll(cx).is_ready() {
            // Ending the stream is SSE's goodbye: the browser reconnects after `retry`, with
            // Last-Event-ID, to whichever gateway is still up.
            this.ended = true;
            return Poll::Ready(Some(Ok(Frame::data(sse_comment("server shutting down")))));
        }
        if let Some(expiry) = &mut this.token_expiry {
            if expiry.as_mut().poll(cx).is_ready() {
                this.ended = true;
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(EXPIRED)))));
            }
        }
        if let Some(expiry) = &mut this.expiry {
            if expiry.as_mut().poll(cx).is_ready() {
                this.ended = true;
                return Poll::Ready(Some(Ok(Frame::data(sse_comment(
                    "stream duration limit reached; reconnect with Last-Event-ID",
                )))));
            }
        }
        match Pin::new(&mut this.subscription).poll_next(cx) {
            Poll::Ready(Some(delivery)) => {
                let bytes = match &delivery {
                    Delivery::Event(event) => sse_event(event),
                    Delivery::Notice(notice) => sse_notice(notice),
                };
                this.metrics.delivered(&delivery, bytes.len());
                return this.frame(bytes);
            }
            Poll::Ready(None) => {
                this.ended = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if this.heartbeat.as_mut().poll(cx).is_ready() {
            return this.frame(sse_comment("heartbeat"));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
