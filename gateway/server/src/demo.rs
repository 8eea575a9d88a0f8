//! The demo source: a synthetic stream of BGP updates in the shape of RIS Live messages.
//!
//! Every address and AS number comes from the ranges reserved for documentation
//! (RFC 5737, RFC 3849, RFC 5398), so the stream looks real without naming real networks.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use streamgate_core::{ContentType, EventBus};
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::DemoConfig;

const COLLECTORS: [&str; 4] = ["rrc00", "rrc01", "rrc03", "rrc21"];
const PEERS: [(&str, u32); 4] = [
    ("192.0.2.10", 64496),
    ("198.51.100.7", 64499),
    ("2001:db8:1::5", 64502),
    ("203.0.113.200", 65540),
];

/// Generates demo messages; deterministic for a given seed.
#[derive(Debug)]
pub struct DemoFeed {
    rng: StdRng,
    sequence: u64,
}

impl DemoFeed {
    /// A feed whose messages depend only on `seed` and the timestamps passed in.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            sequence: 0,
        }
    }

    /// The next message, stamped `timestamp` (seconds since the Unix epoch).
    pub fn next_message(&mut self, timestamp: f64) -> serde_json::Value {
        self.sequence += 1;
        let rng = &mut self.rng;
        let (peer, peer_asn) = PEERS[rng.random_range(0..PEERS.len())];
        let host = COLLECTORS[rng.random_range(0..COLLECTORS.len())];
        let v6 = peer.contains(':');
        let origin = 64496 + rng.random_range(0..16);
        let hops = rng.random_range(1..=5);
        let mut path: Vec<u32> = vec![peer_asn];
        path.extend((0..hops).map(|_| 65536 + rng.random_range(0..16)));
        path.push(origin);
        let prefix = |rng: &mut StdRng| {
            if v6 {
                format!("2001:db8:{:x}::/48", rng.random_range(0..0xffffu32))
            } else {
                let net = ["192.0.2", "198.51.100", "203.0.113"][rng.random_range(0..3)];
                let len = rng.random_range(24..=28u32);
                let step = 1u32 << (32 - len);
                let host = rng.random_range(0..(256 / step)) * step;
                format!("{net}.{host}/{len}")
            }
        };
        let withdrawal = rng.random_bool(0.2);
        let prefixes: Vec<String> = (0..rng.random_range(1..=3)).map(|_| prefix(rng)).collect();
        let (announcements, withdrawals) = if withdrawal {
            (json!([]), json!(prefixes))
        } else {
            (
                json!([{ "next_hop": peer, "prefixes": prefixes }]),
                json!([]),
            )
        };
        json!({
            "type": "ris_message",
            "data": {
                "timestamp": timestamp,
                "peer": peer,
                "peer_asn": peer_asn.to_string(),
                "id": format!("{host}-{}", self.sequence),
                "host": host,
                "type": "UPDATE",
                "path": path,
                "community": [[peer_asn, 100 + rng.random_range(0..10)]],
                "origin": "IGP",
                "announcements": announcements,
                "withdrawals": withdrawals,
            }
        })
    }
}

/// Publishes demo messages to `config.topic` at `config.rate` per second until `shutdown`.
pub async fn run(bus: Arc<dyn EventBus>, config: DemoConfig, shutdown: CancellationToken) {
    let period = Duration::from_secs_f64(1.0 / config.rate);
    // `interval` would fire at once; start one period from now like a steady source.
    let mut ticks = interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut feed = DemoFeed::with_seed(rand::random());
    tracing::info!(topic = %config.topic, rate = config.rate, "demo source started");
    // Failed publishes in a row: the first is logged, the rest only counted until one succeeds
    // (with the bus down, one WARN per event would bury everything else).
    let mut failing: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let payload = Bytes::from(feed.next_message(now).to_string());
        match bus
            .publish(config.topic.clone(), ContentType::Json, payload)
            .await
        {
            Err(e) => {
                if failing == 0 {
                    tracing::warn!(error = %e, "demo publish failed; the demo source goes on trying and says when it succeeds again");
                }
                failing += 1;
            }
            Ok(_) if failing > 0 => {
                tracing::info!(failed = failing, "demo publishes succeed again");
                failing = 0;
            }
            Ok(_) => {}
        }
    }
    tracing::info!("demo source stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_ris_live_shape() {
        let mut feed = DemoFeed::with_seed(7);
        for _ in 0..200 {
            let message = feed.next_message(1.5);
            assert_eq!(message["type"], "ris_message");
            let data = &message["data"];
            assert_eq!(data["type"], "UPDATE");
            assert_eq!(data["timestamp"], 1.5);
            let path = data["path"].as_array().unwrap();
            assert!(path.len() >= 3);
            assert_eq!(path[0].as_u64().unwrap().to_string(), data["peer_asn"]);
            let origin = path.last().unwrap().as_u64().unwrap();
            assert!((64496..=64511).contains(&origin), "documentation ASN");
            let announced = data["announcements"].as_array().unwrap();
            let withdrawn = data["withdrawals"].as_array().unwrap();
            assert!(announced.is_empty() != withdrawn.is_empty());
        }
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = DemoFeed::with_seed(1);
        let mut b = DemoFeed::with_seed(1);
        for _ in 0..10 {
            assert_eq!(a.next_message(0.0), b.next_message(0.0));
        }
    }
}
