//! The appends' connection: one multiplexed connection that every append shares, replaced
//! as soon as it is known to be lost.
//!
//! Why not redis-rs's `ConnectionManager`: after a loss it reconnects in the background and
//! hands every later caller the outcome of its latest attempt. When Redis restarts, that
//! attempt was made while Redis was down (or dying), so the first append after Redis came
//! back failed on stale news, and that failure cannot be retried safely: an error from a
//! command that reached Redis looks the same. Here a lost connection is simply dropped and
//! the next append connects; if connecting fails, nothing was sent.
//!
//! A connection counts as lost when it says so (over RESP3 it pushes a disconnection notice
//! the moment its socket closes, so a restart is noticed before the next append) or when a
//! command on it fails at the connection level or times out (a socket that died silently
//! never reports anything).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, PushInfo, PushKind, RedisError};
use streamgate_core::BrokerError;
use tokio::sync::Mutex;

use crate::error::{from_redis, timed_out};

/// A connection in use, and the flag that retires it.
#[derive(Clone)]
pub(crate) struct Held {
    pub(crate) connection: MultiplexedConnection,
    lost: Arc<AtomicBool>,
}

impl Held {
    /// Retires the connection if `error` says it is no longer usable.
    pub(crate) fn check(&self, error: &RedisError) {
        if error.is_unrecoverable_error() || error.is_io_error() || error.is_timeout() {
            self.lost.store(true, Ordering::Release);
        }
    }

    fn usable(&self) -> bool {
        !self.lost.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct State {
    current: Option<Held>,
    /// Connection attempts made so far.
    attempts: u64,
    /// Why the latest attempt failed, if it did.
    last_failure: Option<BrokerError>,
}

/// Hands out the shared append connection, connecting when there is none.
pub(crate) struct Appender {
    /// Speaks RESP3, for the disconnection notices.
    client: Client,
    endpoint: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    state: Mutex<State>,
    /// `state.attempts`, readable without waiting for the lock.
    attempts: AtomicU64,
}

impl Appender {
    pub(crate) fn new(
        client: Client,
        endpoint: String,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        Self {
            client,
            endpoint,
            connect_timeout,
            response_timeout,
            state: Mutex::default(),
            attempts: AtomicU64::new(0),
        }
    }

    /// The current connection, or a new one.
    pub(crate) async fn connection(&self) -> Result<Held, BrokerError> {
        let attempts_before = self.attempts.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        if let Some(held) = state.current.as_ref().filter(|held| held.usable()) {
            return Ok(held.clone());
        }
        // Appends that queued up behind a failed attempt share its failure rather than each
        // make their own: against a host that drops packets, each would wait out the whole
        // connect timeout in turn.
        if state.attempts > attempts_before {
            if let Some(failure) = &state.last_failure {
                return Err(failure.clone());
            }
        }
        state.attempts += 1;
        self.attempts.store(state.attempts, Ordering::Release);
        match self.connect().await {
            Ok(held) => {
                state.current = Some(held.clone());
                state.last_failure = None;
                Ok(held)
            }
            Err(failure) => {
                state.current = None;
                state.last_failure = Some(failure.clone());
                Err(failure)
            }
        }
    }

    async fn connect(&self) -> Result<Held, BrokerError> {
        let doing = format!("connecting to {}", self.endpoint);
        let lost = Arc::new(AtomicBool::new(false));
        let on_push = {
            let lost = Arc::clone(&lost);
            move |push: PushInfo| -> Result<(), Infallible> {
                if push.kind == PushKind::Disconnection {
                    lost.store(true, Ordering::Release);
                }
                Ok(())
            }
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_push_sender(on_push);
        match tokio::time::timeout(
            self.connect_timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(connection)) => Ok(Held { connection, lost }),
            Ok(Err(e)) => Err(from_redis(&doing, &e)),
            Err(_) => Err(timed_out(&doing, self.connect_timeout)),
        }
    }
}
