//! The shared bus conformance suite on a gateway node whose bus is a Redis log, once per
//! fan-out mode.
//!
//! Each check gets a node over its own key prefix (deleted when the check ends), on the
//! `redis-server` this test binary starts for itself, or the server at `REDIS_URL`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{redis_url, Cleanup};
use streamgate_bus_redis::{Fanout, RedisBroker, RedisBrokerConfig};
use streamgate_core::conformance::{BusFactory, WithCleanup};
use streamgate_core::{BrokerBus, BrokerBusConfig, Epoch, EventBus, MemoryBusConfig};

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
        Arc::new(WithCleanup::new(Arc::new(node), Cleanup { url, prefix })) as Arc<dyn EventBus>
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
