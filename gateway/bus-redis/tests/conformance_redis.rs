//! The shared bus conformance suite on a gateway node whose bus is a Redis log, once per
//! fan-out mode.
//!
//! Each check gets a node over its own key prefix (deleted when the check ends), on the
//! server at `REDIS_URL` (default `redis://127.0.0.1:6379`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{redis_url, Cleanup};
use streamgate_bus_redis::{Fanout, RedisBroker, RedisBrokerConfig};
use streamgate_core::conformance::BusFactory;
use streamgate_core::{
    BoxFuture, BrokerBus, BrokerBusConfig, BusHealth, ContentType, Epoch, Event, EventBus,
    MemoryBusConfig, PublishError, SubscribeError, SubscribeRequest, Subscription, Topic,
    TopicStats,
};

/// A node, and its keys' deletion once the check has dropped the node.
#[derive(Debug)]
struct NodeOnOwnPrefix {
    node: BrokerBus,
    _cleanup: Cleanup,
}

impl EventBus for NodeOnOwnPrefix {
    fn publish(
        &self,
        topic: Topic,
        content_type: ContentType,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<Arc<Event>, PublishError>> {
        self.node.publish(topic, content_type, payload)
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Subscription, SubscribeError>> {
        self.node.subscribe(request)
    }

    fn health(&self) -> BusHealth {
        self.node.health()
    }

    fn topic_stats(&self) -> BoxFuture<'_, Vec<TopicStats>> {
        self.node.topic_stats()
    }

    fn close(&self) {
        self.node.close();
    }
}

fn redis_node(fanout: Fanout) -> impl BusFactory {
    move |config: MemoryBusConfig| async move {
        let url = redis_url();
        let prefix = format!("sgconf-{}", Epoch::random());
        let broker = RedisBroker::new(
            RedisBrokerConfig::new(url.as_str())
                .prefix(prefix.as_str())
                .history_events(config.history.max_events)
                .fanout(fanout),
        )
        .unwrap();
        let node = BrokerBus::start(
            Arc::new(broker),
            BrokerBusConfig::new(config).resume_wait(Duration::from_millis(300)),
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(10), node.wait_connected())
                .await
                .unwrap_or(false),
            "Redis at {url} is reachable: {:?}",
            node.health().detail
        );
        Arc::new(NodeOnOwnPrefix {
            node,
            _cleanup: Cleanup { url, prefix },
        }) as Arc<dyn EventBus>
    }
}

mod pubsub {
    use super::*;
    streamgate_core::conformance_tests!(redis_node(Fanout::PubSub));
}

mod xread {
    use super::*;
    streamgate_core::conformance_tests!(redis_node(Fanout::Xread));
}
