//! [`ClientLimits`]: the gateway's [`PublishGate`], one allowance per client IP across every
//! publish path (`POST /publish`, `POST /poll`, WebSocket and WebTransport `publish`
//! messages): the publish rate (`server.publish_rate`, `server.publish_burst`) and the budget
//! for creating topics (`server.topic_create_rate`, `server.topic_create_burst`).
//!
//! The topic budget is what keeps one client from churning the topic table: with it, making
//! up topic names costs the client its own budget, and the topics others use (the recently
//! used ones, and every one with a subscriber) stay.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use streamgate_core::{EventBus, PublishGate, PublishRefusal, Topic, RATE_LIMITED, TOPIC_BUDGET};

use crate::config::ServerConfig;
use crate::limits::PublishRateLimit;

/// Per-client-IP publish rate and topic-creation budget.
#[derive(Debug)]
pub(crate) struct ClientLimits {
    bus: Arc<dyn EventBus>,
    /// `None` when `server.publish_rate` is 0.
    publish_rate: Option<PublishRateLimit>,
    /// `None` when `server.topic_create_rate` is 0.
    topic_create: Option<PublishRateLimit>,
    publish_limits: (f64, u32),
    topic_limits: (f64, u32),
}

impl ClientLimits {
    /// The limits `server` configures, over `bus` (asked whether a topic exists); `None` when
    /// both are off.
    pub(crate) fn new(server: &ServerConfig, bus: Arc<dyn EventBus>) -> Option<Self> {
        let publish_rate = PublishRateLimit::new(server.publish_rate, server.publish_burst);
        let topic_create =
            PublishRateLimit::new(server.topic_create_rate, server.topic_create_burst);
        (publish_rate.is_some() || topic_create.is_some()).then(|| Self {
            bus,
            publish_rate,
            topic_create,
            publish_limits: (server.publish_rate, server.publish_burst),
            topic_limits: (server.topic_create_rate, server.topic_create_burst),
        })
    }
}

impl PublishGate for ClientLimits {
    fn admit_publish(&self, client: IpAddr) -> Result<(), PublishRefusal> {
        let Some(limit) = &self.publish_rate else {
            return Ok(());
        };
        limit.check(client, Instant::now()).map_err(|retry_after| {
            let (rate, burst) = self.publish_limits;
            PublishRefusal::new(
                RATE_LIMITED,
                format!(
                    "{} is over its publish rate of {rate}/s (burst {burst})",
                    client.to_canonical()
                ),
                retry_after,
            )
        })
    }

    fn admit_topic(&self, client: IpAddr, topic: &Topic) -> Result<(), PublishRefusal> {
        let Some(limit) = &self.topic_create else {
            return Ok(());
        };
        if self.bus.has_topic(topic) {
            return Ok(());
        }
        limit.check(client, Instant::now()).map_err(|retry_after| {
            let (rate, burst) = self.topic_limits;
            PublishRefusal::new(
                TOPIC_BUDGET,
                format!(
                    "{} is over its budget for new topics of {rate}/s (burst {burst}): \
                     {topic} does not exist yet; publish to existing topics, or retry later",
                    client.to_canonical()
                ),
                retry_after,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use streamgate_core::{ContentType, MemoryBus};

    #[tokio::test]
    async fn topic_budget_charges_new_topics_only_per_ip() {
        let bus = Arc::new(MemoryBus::new(Default::default()));
        let server = ServerConfig {
            publish_rate: 0.0,
            topic_create_rate: 0.001,
            topic_create_burst: 2,
            ..ServerConfig::default()
        };
        let limits = ClientLimits::new(&server, bus.clone()).unwrap();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let topic = |name: &str| Topic::new(name).unwrap();
        for name in ["t1", "t2"] {
            assert!(limits.admit_topic(a, &topic(name)).is_ok());
            bus.publish(topic(name), ContentType::Text, Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        let refused = limits.admit_topic(a, &topic("t3")).unwrap_err();
        assert_eq!(refused.code, TOPIC_BUDGET);
        assert!(refused.reason.contains("t3"), "{}", refused.reason);
        assert!(refused.retry_after_secs >= 1);
        assert!(
            limits.admit_topic(a, &topic("t1")).is_ok(),
            "existing topics cost nothing"
        );
        assert!(limits.admit_topic(b, &topic("t3")).is_ok(), "another IP");
        assert!(limits.admit_publish(a).is_ok(), "publish rate 0: no limit");
    }

    #[test]
    fn both_off_is_no_gate() {
        let server = ServerConfig {
            publish_rate: 0.0,
            topic_create_rate: 0.0,
            ..ServerConfig::default()
        };
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(Default::default()));
        assert!(ClientLimits::new(&server, bus).is_none());
    }
}
