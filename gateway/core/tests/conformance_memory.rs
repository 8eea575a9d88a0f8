//! The shared bus conformance suite ([`streamgate_core::conformance`]) run on [`MemoryBus`].
//!
//! Behaviour only the in-memory bus has (synchronous `publish_now`, exact lag and catch-up
//! chunking, close draining, topic forgetting) is tested in `memory_bus.rs`.
#![cfg(feature = "conformance")]

use std::sync::Arc;

use streamgate_core::{EventBus, MemoryBus, MemoryBusConfig};

/// Each check gets a new bus with a random epoch, as a gateway gets on every start.
fn memory_bus_factory() -> impl streamgate_core::conformance::BusFactory {
    |config: MemoryBusConfig| async move { Arc::new(MemoryBus::new(config)) as Arc<dyn EventBus> }
}

streamgate_core::conformance_tests!(memory_bus_factory());

/// `run_all` is what a backend without its own test file list would call; make sure it runs
/// every check and passes on a correct bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_on_the_memory_bus() {
    streamgate_core::conformance::run_all(&memory_bus_factory()).await;
}

#[test]
fn every_check_has_a_distinct_name() {
    let mut names: Vec<&str> = streamgate_core::conformance::checks()
        .iter()
        .map(|check| check.name)
        .collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count);
}
