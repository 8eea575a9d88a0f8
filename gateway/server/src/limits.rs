//! Limits per client: connections per client IP (`server.max_connections_per_ip`) and the
//! start of the first request head within `server.header_read_timeout`, applied at accept
//! before hyper sees a byte (hyper's own header timeout only starts once it has decided
//! between HTTP/1.1 and HTTP/2, which a silent client never lets it do); and the publish
//! rate per client IP on `POST /publish` (`server.publish_rate`, `server.publish_burst`).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use streamgate_core::{BodyReadTimeout, BoxError};
use streamgate_proto::TokenBucket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::Body;

/// The error code of a connection refused for its IP's count.
pub(crate) const TOO_MANY_CONNECTIONS: &str = "too_many_connections";
/// The error code of a connection cut before its request head was complete.
pub(crate) const HEADER_TIMEOUT: &str = "header_timeout";

/// Client IPs whose publish buckets are tracked at most. Past it, buckets that have refilled
/// (as good as new) are dropped first, then the least recently used eighth.
pub(crate) const MAX_TRACKED_IPS: usize = 65_536;

/// A token bucket per client IP: the publish rate of `POST /publish`.
#[derive(Debug)]
pub(crate) struct PublishRateLimit {
    rate: f64,
    burst: u32,
    /// How long an unused bucket takes to refill completely: past it, an entry is the same as
    /// no entry, and may go.
    refill: Duration,
    max_tracked: usize,
    buckets: Mutex<HashMap<IpAddr, (TokenBucket, Instant)>>,
}

impl PublishRateLimit {
    /// `rate` events/s with bursts of `burst` per IP; `None` when `rate` is 0 (no limit).
    pub(crate) fn new(rate: f64, burst: u32) -> Option<Self> {
        Self::with_capacity(rate, burst, MAX_TRACKED_IPS)
    }

    fn with_capacity(rate: f64, burst: u32, max_tracked: usize) -> Option<Self> {
        (rate > 0.0).then(|| Self {
            rate,
            burst,
            refill: Duration::try_from_secs_f64(f64::from(burst.max(1)) / rate)
                .unwrap_or(Duration::MAX),
            max_tracked: max_tracked.max(8),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one token from `ip`'s bucket: `Ok`, or `Err(retry_after)` in whole seconds (at
    /// least 1) when the IP is over its rate.
    pub(crate) fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d: count it as a.b.c.d.
        let ip = ip.to_canonical();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&ip) && buckets.len() >= self.max_tracked {
            self.evict(&mut buckets, now);
        }
        let (bucket, last) = buckets
            .entry(ip)
            .or_insert_with(|| (TokenBucket::new(now, self.rate, self.burst), now));
        *last = now;
        if bucket.try_take(now) {
            Ok(())
        } else {
            // A token comes back every 1/rate seconds.
            Err((1.0 / self.rate).ceil().clamp(1.0, 86_400.0) as u64)
        }
    }

    /// Makes room: drops the buckets unused for long enough to be full again (forgetting them
    /// changes nothing), then, if the table is still over 7/8 full of active clients, the
    /// least recently used eighth. Either way the next sweep is at least `max / 8` new IPs
    /// away, so the cost per request stays constant.
    fn evict(&self, buckets: &mut HashMap<IpAddr, (TokenBucket, Instant)>, now: Instant) {
        buckets.retain(|_, (_, last)| now.saturating_duration_since(*last) < self.refill);
        let high = self.max_tracked - self.max_tracked / 8;
        if buckets.len() > high {
            let excess = buckets.len() - high;
            let mut by_age: Vec<(Instant, IpAddr)> =
                buckets.iter().map(|(ip, (_, last))| (*last, *ip)).collect();
            by_age.select_nth_unstable(excess);
            for (_, ip) in &by_age[..excess] {
                buckets.remove(ip);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The request body with `server.body_read_timeout` on it: once the time has passed since
/// the head, a body not yet over fails with [`BodyReadTimeout`], which the handler reading it
/// answers `408` `body_timeout` (see [`streamgate_core::Rejection::body_read`]). A body
/// that is already over (most `GET`s) and a timeout of 0 get no timer.
pub(crate) fn timed_body<B>(body: B, timeout: Duration) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if timeout.is_zero() || body.is_end_stream() {
        return body.map_err(Into::into).boxed();
    }
    TimedBody {
        body,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        timeout,
    }
    .boxed()
}

struct TimedBody<B> {
    body: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        ready!(this.deadline.as_mut().poll(cx));
        let timeout = BodyReadTimeout {
            timeout: this.timeout,
        };
        Poll::Ready(Some(Err(Box::new(timeout))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Answers a plain HTTP connection over its IP's limit with `429 too_many_connections` at
/// once, without reading its request, and closes it. The rest of what the client sends is
/// read (at most 64 KiB, for at most 1 s) and discarded first, so that closing does not reset
/// the connection before the client has read the answer.
pub(crate) async fn refuse_too_many(mut stream: TcpStream, max: usize) {
    let body = format!(
        r#"{{"error":{{"code":"{TOO_MANY_CONNECTIONS}","reason":"more than {max} connections from this address"}}}}"#
    );
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let answer = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// The HTTP/2 connection preface; a client sending it is HTTP/2 with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a connection's first request began, or did not ([`request_started`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestStart {
    /// Enough arrived to tell HTTP/1.1 from HTTP/2.
    Started,
    /// The client closed (or reset) the connection before sending anything useful: a port
    /// probe, a TCP health check, a client giving up. Not a limit at work.
    Closed,
    /// Nothing useful arrived within the timeout: `header_timeout`.
    TimedOut,
}

/// Waits, at most `timeout`, until the client has sent enough for hyper to tell HTTP/1.1 from
/// HTTP/2 (a first byte that cannot start the HTTP/2 preface, or the whole preface), without
/// consuming anything.
pub(crate) async fn request_started(stream: &TcpStream, timeout: Duration) -> RequestStart {
    let wait = async {
        let mut buffer = [0u8; H2_PREFACE.len()];
        loop {
            let n = stream.peek(&mut buffer).await?;
            if n == 0 {
                return Ok(false);
            }
            if n == H2_PREFACE.len() || buffer[..n] != H2_PREFACE[..n] {
                return Ok(true);
            }
            // A prefix of the preface, arriving slowly: `peek` would answer at once again,
            // so look again a little later.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok::<bool, std::io::Error>(true)) => RequestStart::Started,
        Ok(_) => RequestStart::Closed,
        Err(_) => RequestStart::TimedOut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_coming_fails_at_the_timeout() {
        let timeout = Duration::from_secs(3);
        // One frame, then nothing more, ever.
        let frames = futures_util::stream::iter([Ok::<_, BoxError>(http_body::Frame::data(
            Bytes::from_static(b"par"),
        ))])
        .chain(futures_util::stream::pending());
        let mut body = timed_body(http_body_util::StreamBody::new(frames), timeout);
        let started = tokio::time::Instant::now();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "par");
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(started.elapsed(), timeout);
        assert_eq!(
            error.downcast_ref::<BodyReadTimeout>(),
            Some(&BodyReadTimeout { timeout })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_body_or_no_timeout_is_left_alone() {
        let whole = timed_body(
            http_body_util::Full::new(Bytes::from_static(b"{}")),
            Duration::from_secs(1),
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(whole.collect().await.unwrap().to_bytes(), "{}");
        let frames = futures_util::stream::pending::<Result<http_body::Frame<Bytes>, BoxError>>();
        let mut untimed = timed_body(http_body_util::StreamBody::new(frames), Duration::ZERO);
        let waited = tokio::time::timeout(Duration::from_secs(60), untimed.frame()).await;
        assert!(waited.is_err(), "0 is no limit: still waiting");
    }

    #[test]
    fn publish_rate_per_ip() {
        let limit = PublishRateLimit::new(0.5, 3).unwrap();
        let start = Instant::now();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!((0..3).all(|_| limit.check(a, start).is_ok()));
        // The same client over a dual-stack socket shares the bucket.
        assert_eq!(limit.check(mapped, start), Err(2));
        assert!(
            limit.check(b, start).is_ok(),
            "another IP has its own bucket"
        );
        assert!(limit.check(a, start + Duration::from_secs(2)).is_ok());
        assert!(limit.check(a, start + Duration::from_secs(2)).is_err());
        assert!(PublishRateLimit::new(0.0, 10).is_none(), "0 is no limit");
        assert_eq!(
            PublishRateLimit::new(1000.0, 1).unwrap().check(a, start),
            Ok(())
        );
    }

    #[test]
    fn publish_buckets_stay_bounded() {
        let limit = PublishRateLimit::with_capacity(1.0, 2, 64).unwrap();
        let start = Instant::now();
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        // 64 clients, each over its burst.
        for i in 0..64 {
            assert!(limit.check(ip(i), start).is_ok());
            assert!(limit.check(ip(i), start).is_ok());
            assert!(limit.check(ip(i), start).is_err());
        }
        assert_eq!(limit.tracked(), 64);
        // All of them still active: a newcomer evicts the least recently used eighth.
        let later = start + Duration::from_millis(100);
        assert!(limit.check(ip(0), later).is_err(), "still limited");
        assert!(limit.check(ip(1000), later).is_ok());
        assert_eq!(limit.tracked(), 64 - 8 + 1);
        assert!(
            limit.check(ip(0), later).is_err(),
            "the most recent one was kept"
        );
        // Refilled buckets are as good as new: they go first, and all at once.
        let idle = start + Duration::from_secs(10);
        for i in 2000..2200 {
            assert!(limit.check(ip(i), idle).is_ok());
            assert!(limit.tracked() <= 64);
        }
        // Many more distinct clients than the table holds: it never grows past it.
        for i in 0..10_000 {
            let _ = limit.check(ip(10_000 + i), idle + Duration::from_micros(u64::from(i)));
            assert!(limit.tracked() <= 64);
        }
    }
}
