//! The shared bus conformance suite on a gateway node whose bus is a NATS JetStream log.
//!
//! Each check gets a node over its own stream (deleted when the check ends), on the server
//! at `NATS_URL` (default `nats://127.0.0.1:4222`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{nats_url, TestLog};
use streamgate_bus_nats::NatsBroker;
use streamgate_core::conformance::BusFactory;
use streamgate_core::{
    BoxFuture, BrokerBus, BrokerBusConfig, BusHealth, ContentType, Event, EventBus,
    MemoryBusConfig, PublishError, SubscribeError, SubscribeRequest, Subscription, Topic,
    TopicStats,
};

/// A node, and its stream's deletion once the check has dropped the node.
#[derive(Debug)]
struct NodeOnOwnStream {
    node: BrokerBus,
    _log: TestLog,
}

impl EventBus for NodeOnOwnStream {
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

fn nats_node() -> impl BusFactory {
    |config: MemoryBusConfig| async move {
        let log = TestLog::new(&nats_url());
        let broker = NatsBroker::new(log.config(config.history.max_events)).unwrap();
        let node = BrokerBus::start(
            Arc::new(broker),
            BrokerBusConfig::new(config).resume_wait(Duration::from_millis(300)),
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(10), node.wait_connected())
                .await
                .unwrap_or(false),
            "NATS at {} is reachable: {:?}",
            log.url,
            node.health().detail
        );
        Arc::new(NodeOnOwnStream { node, _log: log }) as Arc<dyn EventBus>
    }
}

streamgate_core::conformance_tests!(nats_node());
