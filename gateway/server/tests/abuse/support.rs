//! What the abuse tests share beyond `common`.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

/// Runs `probe` (one request of a well-behaved second client) and prints how long it took,
/// so the suite's log shows the latency an attack leaves the others.
pub async fn served_within<T>(
    attack: &str,
    probe: impl std::future::Future<Output = T>,
) -> (T, Duration) {
    let start = Instant::now();
    let value = super::common::within(&format!("a second client during {attack}"), probe).await;
    let took = start.elapsed();
    println!("abuse[{attack}]: a second client was served in {took:?}");
    (value, took)
}
