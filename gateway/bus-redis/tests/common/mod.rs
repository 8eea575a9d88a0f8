//! What the Redis test files share: the server to use, and a prefix's keys deleted at the end.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

/// The server this test binary shares: `REDIS_URL`, else a `redis-server` of its own.
pub use streamgate_test_brokers::redis_url;

/// Deletes every key of a prefix when dropped, so a failing test cleans up too (a server at
/// `REDIS_URL` outlives the tests).
#[derive(Debug)]
pub struct Cleanup {
    pub url: String,
    pub prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Synchronous on purpose: a Drop cannot await, and this must run during a panic.
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut connection)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<u64> = redis::cmd("DEL").arg(keys).query(&mut connection);
        }
    }
}
