//! Connection limits applied at accept, before hyper sees a byte: connections per client IP
//! (`server.max_connections_per_ip`), and the start of the first request head within
//! `server.header_read_timeout` (hyper's own header timeout only starts once it has decided
//! between HTTP/1.1 and HTTP/2, which a silent client never lets it do).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The error code of a connection refused for its IP's count.
pub(crate) const TOO_MANY_CONNECTIONS: &str = "too_many_connections";
/// The error code of a connection cut before its request head was complete.
pub(crate) const HEADER_TIMEOUT: &str = "header_timeout";

/// Counts the open connections of each client IP.
#[derive(Debug)]
pub(crate) struct PerIpLimit {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its IP until dropped.
#[derive(Debug)]
pub(crate) struct IpSlot {
    /// `None` when there is no limit (nothing was counted).
    limit: Option<Arc<PerIpLimit>>,
    ip: IpAddr,
}

impl PerIpLimit {
    /// At most `max` connections per IP; 0 means no limit.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or `None` when that IP is at the limit. With no
    /// limit, a slot that counts nothing.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        if self.max == 0 {
            return Some(IpSlot { limit: None, ip });
        }
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d: count it as a.b.c.d.
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            limit: Some(Arc::clone(self)),
            ip,
        })
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some(limit) = &self.limit else {
            return;
        };
        let mut counts = limit.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
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

/// Waits, at most `timeout`, until the client has sent enough for hyper to tell HTTP/1.1 from
/// HTTP/2 (a first byte that cannot start the HTTP/2 preface, or the whole preface), without
/// consuming anything. `false`: the client sent nothing useful in time, or closed.
pub(crate) async fn request_started(stream: &TcpStream, timeout: Duration) -> bool {
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
    matches!(
        tokio::time::timeout(timeout, wait).await,
        Ok(Ok::<bool, std::io::Error>(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_ip_and_frees_on_drop() {
        let limit = PerIpLimit::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.1".parse().unwrap();
        let first = limit.try_acquire(a).unwrap();
        let second = limit.try_acquire(mapped).unwrap();
        assert!(limit.try_acquire(a).is_none(), "a third from the same IP");
        let other = limit.try_acquire(b).unwrap();
        assert_eq!(limit.count(a), 2);
        drop(first);
        assert_eq!(limit.count(a), 1);
        let third = limit.try_acquire(a).unwrap();
        drop((second, third, other));
        assert_eq!(limit.count(a), 0);
        assert_eq!(limit.count(b), 0);
    }

    #[test]
    fn zero_means_no_limit() {
        let limit = PerIpLimit::new(0);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..1000).map(|_| limit.try_acquire(a).unwrap()).collect();
        assert!(slots.iter().all(|slot| slot.limit.is_none()));
        assert_eq!(limit.count(a), 0);
    }
}
