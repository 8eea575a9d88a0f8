//! What the NATS test files share: one test's own stream, deleted when the test ends.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use streamgate_bus_nats::{NatsBroker, NatsBrokerConfig};

/// The server this test binary shares: `NATS_URL`, else a `nats-server` of its own.
pub use streamgate_test_brokers::nats_url;

pub fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// One test's log: a stream name and subject prefix nobody else uses, and the stream's
/// deletion when the test ends.
#[derive(Debug)]
pub struct TestLog {
    pub url: String,
    pub stream: String,
    pub prefix: String,
}

impl TestLog {
    pub fn new(url: &str) -> Self {
        let token = random_token();
        Self {
            url: url.to_owned(),
            stream: format!("SGTEST_{token}"),
            prefix: format!("sgtest.{token}"),
        }
    }

    pub fn config(&self, history_events: usize) -> NatsBrokerConfig {
        NatsBrokerConfig::default()
            .url(self.url.clone())
            .stream(self.stream.clone())
            .subject_prefix(self.prefix.clone())
            .history_events(history_events)
            .heartbeat(Duration::from_secs(1))
    }

    pub fn broker(&self, history_events: usize) -> NatsBroker {
        NatsBroker::new(self.config(history_events)).unwrap()
    }

    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(self.url.as_str())
            .await
            .unwrap();
        async_nats::jetstream::new(client)
    }

    pub async fn delete_stream(&self) {
        self.jetstream()
            .await
            .delete_stream(&self.stream)
            .await
            .unwrap();
    }
}

impl Drop for TestLog {
    fn drop(&mut self) {
        // A separate thread with its own runtime works both in a test's runtime and while
        // unwinding from a panic.
        let url = self.url.clone();
        let stream = self.stream.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let connect = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(url.as_str());
                if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(3), connect).await
                {
                    let jetstream = async_nats::jetstream::new(client);
                    let _ = tokio::time::timeout(
                        Duration::from_secs(3),
                        jetstream.delete_stream(&stream),
                    )
                    .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
