//! The `text/event-stream` response body: subscription deliveries, heartbeats and the end
//! of the stream at shutdown, as one `http_body::Body`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http_body::{Body, Frame, SizeHint};
use streamgate_core::{BoxError, Delivery, Subscription};
use streamgate_proto::{sse_comment, sse_event, sse_notice};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

/// A live SSE stream for one subscriber.
pub(crate) struct EventStreamBody {
    preamble: Option<Bytes>,
    subscription: Subscription,
    heartbeat: Pin<Box<Sleep>>,
    heartbeat_interval: Duration,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    expiry: Option<Pin<Box<Sleep>>>,
    ended: bool,
}

impl EventStreamBody {
    pub(crate) fn new(
        preamble: Bytes,
        subscription: Subscription,
        heartbeat_interval: Duration,
        max_duration: Duration,
        shutdown: WaitForCancellationFutureOwned,
    ) -> Self {
        Self {
            preamble: Some(preamble),
            subscription,
            heartbeat: Box::pin(tokio::time::sleep(heartbeat_interval)),
            heartbeat_interval,
            shutdown: Box::pin(shutdown),
            expiry: (!max_duration.is_zero()).then(|| Box::pin(tokio::time::sleep(max_duration))),
            ended: false,
        }
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
        if let Some(expiry) = &mut this.expiry {
            if expiry.as_mut().poll(cx).is_ready() {
                this.ended = true;
                return Poll::Ready(Some(Ok(Frame::data(sse_comment(
                    "stream duration limit reached; reconnect with Last-Event-ID",
                )))));
            }
        }
        match Pin::new(&mut this.subscription).poll_next(cx) {
            Poll::Ready(Some(Delivery::Event(event))) => return this.frame(sse_event(&event)),
            Poll::Ready(Some(Delivery::Notice(notice))) => return this.frame(sse_notice(&notice)),
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
