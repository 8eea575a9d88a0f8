//! The shared bus conformance suite on a gateway node whose bus is a NATS JetStream log.
//!
//! Each check gets a node over its own stream (deleted when the check ends), on the
//! `nats-server` this test binary starts for itself, or the server at `NATS_URL`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{nats_url, TestLog};
use streamgate_bus_nats::NatsBroker;
use streamgate_core::conformance::{BusFactory, WithCleanup};
use streamgate_core::{BrokerBus, BrokerBusConfig, EventBus, MemoryBusConfig};

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
        Arc::new(WithCleanup::new(Arc::new(node), log)) as Arc<dyn EventBus>
    }
}

streamgate_core::conformance_tests!(nats_node());
