//! `server.idle_timeout`: what a connection is doing, so that one doing nothing is closed.
//!
//! hyper bounds neither an HTTP/2 connection without streams (its keep-alive pings only find
//! dead peers; a live client that opens no stream keeps the connection forever) nor, beyond
//! `header_read_timeout`, an HTTP/1.1 one. So each connection counts its requests in
//! progress: a request counts from the moment its head is parsed until its response body is
//! over, or dropped (a client that resets its HTTP/2 stream). An SSE stream or a waiting long
//! poll keeps its connection busy; a connection whose count stays 0 for the idle timeout is
//! idle.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body::Body as HttpBody;
use http_body_util::BodyExt as _;
use streamgate_core::BoxError;
use tokio::time::Instant;

use crate::http::Body;

/// The requests in progress on one connection.
///
/// Two atomics and no wakeup per request: the watcher looks when its timer fires, rather
/// than being told of every request (a long-polling client makes one every event, and a
/// notification each way woke the connection's task twice per poll; docs/PERFORMANCE.md).
#[derive(Debug)]
pub(crate) struct Activity {
    busy: AtomicUsize,
    /// When the count last fell to 0, in nanoseconds since `started`.
    quiet_since: AtomicU64,
    started: Instant,
}

/// One request in progress, until dropped.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Activity {
    /// A connection with nothing in progress yet.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            busy: AtomicUsize::new(0),
            quiet_since: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// Counts a request in progress until the guard is dropped.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    /// Completes once nothing has been in progress for `timeout` without a break.
    ///
    /// Exact, without being woken by requests: when the timer fires on a busy connection, the
    /// earliest it can become idle is `timeout` after its last request ends, so looking again
    /// `timeout` later and then waiting out what is left of the quiet time lands on that
    /// moment.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        let mut wait = timeout;
        loop {
            tokio::time::sleep(wait).await;
            if self.busy.load(Ordering::Acquire) > 0 {
                wait = timeout;
                continue;
            }
            let quiet_since = Duration::from_nanos(self.quiet_since.load(Ordering::Acquire));
            let quiet_for = self.started.elapsed().saturating_sub(quiet_since);
            if quiet_for >= timeout {
                return;
            }
            wait = timeout - quiet_for;
        }
    }
}

impl Busy {
    /// The response body, holding this request in progress until the body is over (dropped
    /// by hyper, at its end or when the connection goes).
    pub(crate) fn hold(self, body: Body) -> impl HttpBody<Data = Bytes, Error = BoxError> {
        // Owned by the closure, so by the body: dropped with it. (`inspect_frame` keeps the
        // body's size hint, so a sized response keeps its content-length.)
        body.inspect_frame(move |_| {
            let _held = &self;
        })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        // Stamped before the count falls, so a watcher that sees 0 sees this moment too.
        let now = u64::try_from(activity.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        activity.quiet_since.store(now, Ordering::Release);
        activity.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_a_quiet_timeout() {
        use tokio::time::sleep;
        let activity = Activity::new();
        let timeout = Duration::from_secs(5);
        let request = activity.busy();
        let watcher = Arc::clone(&activity);
        let idle = tokio::spawn(async move {
            watcher.idle_for(timeout).await;
            Instant::now()
        });
        // Busy for a long time: never idle.
        sleep(timeout * 10).await;
        assert!(!idle.is_finished(), "idle while a request is in progress");
        let start = Instant::now();
        drop(request);
        // A request in the middle of the quiet time starts it again, and a response body
        // keeps it in progress.
        sleep(timeout / 2).await;
        let held = activity.busy().hold(streamgate_core::full_body("x"));
        // Holding changes nothing hyper sees: a sized body keeps its content-length.
        assert_eq!(held.size_hint().exact(), Some(1));
        sleep(timeout).await;
        assert!(!idle.is_finished(), "idle while a response is being sent");
        drop(held);
        let idle_at = idle.await.unwrap();
        assert_eq!(idle_at - start, timeout / 2 + timeout + timeout);
    }
}
