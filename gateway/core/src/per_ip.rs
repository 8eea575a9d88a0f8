//! [`PerIpLimit`]: open connections (or sessions) counted per client IP, shared by every
//! listener that caps them (TCP connections of the HTTP listeners, WebTransport sessions).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts what is open for each client IP, up to a maximum each.
#[derive(Debug)]
pub struct PerIpLimit {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its IP until dropped.
#[derive(Debug)]
pub struct IpSlot {
    /// `None` when there is no limit (nothing was counted).
    limit: Option<Arc<PerIpLimit>>,
    ip: IpAddr,
}

impl PerIpLimit {
    /// At most `max` per IP; 0 means no limit.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// The limit per IP (0: none).
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `ip`, or `None` when that IP is at the limit. With no limit, a slot that
    /// counts nothing.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
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

    /// How many slots `ip` holds now (always 0 without a limit: nothing is counted).
    pub fn open(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&ip.to_canonical()).copied().unwrap_or(0)
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
        assert_eq!(limit.open(a), 2);
        assert_eq!(limit.open(mapped), 2, "the same client");
        drop(first);
        assert_eq!(limit.open(a), 1);
        let third = limit.try_acquire(a).unwrap();
        drop((second, third, other));
        assert_eq!(limit.open(a), 0);
        assert_eq!(limit.open(b), 0);
        assert!(
            limit.counts.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let limit = PerIpLimit::new(0);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..1000).map(|_| limit.try_acquire(a).unwrap()).collect();
        assert!(slots.iter().all(|slot| slot.limit.is_none()));
        assert_eq!(limit.open(a), 0);
    }
}
