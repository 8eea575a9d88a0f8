//! The connection to NATS: opened on first use, repaired by the client, never waited for.
//!
//! A gateway must start, and answer `503` to publishes, while NATS is down. So nothing is
//! dialled until a call needs it, and a dial is bounded by `connect_timeout`. Once a
//! connection was established the client re-establishes it by itself after any loss; until
//! it has, calls fail at once with [`BrokerError::Unavailable`] instead of queueing behind a
//! dead socket.
//!
//! Feeds must end when the connection drops (a consumer may have missed deliveries while it
//! was down, and the node must reopen its feed from what it holds). The client reports
//! connection events through a callback; [`Link::losses`] turns the `Disconnected` ones into
//! a counter a feed can wait on.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, Context};
use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use streamgate_core::BrokerError;
use tokio::sync::watch;

use crate::errors;

/// The longest pause between two reconnection attempts: short, because every node is waiting.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// A live connection to NATS.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) client: Client,
    pub(crate) jetstream: Context,
    losses: watch::Receiver<u64>,
}

impl Link {
    /// A receiver whose value grows each time the connection drops. A feed marks the current
    /// value as seen when it opens and ends as soon as it changes.
    pub(crate) fn losses(&self) -> watch::Receiver<u64> {
        let mut losses = self.losses.clone();
        losses.mark_unchanged();
        losses
    }

    fn check_connected(&self, endpoint: &str) -> Result<(), BrokerError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            State::Disconnected | State::Pending => Err(BrokerError::Unavailable(format!(
                "connection to NATS at {endpoint} lost; reconnecting"
            ))),
        }
    }
}

/// Opens the connection on demand and hands out the current one.
#[derive(Debug)]
pub(crate) struct Connector {
    servers: Vec<ServerAddr>,
    endpoint: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    ping_interval: Duration,
    current: Mutex<Option<Arc<Link>>>,
    /// Held while dialling, so that concurrent calls share one attempt.
    dialling: tokio::sync::Mutex<()>,
}

impl Connector {
    pub(crate) fn new(
        servers: Vec<ServerAddr>,
        connect_timeout: Duration,
        request_timeout: Duration,
        ping_interval: Duration,
    ) -> Self {
        let endpoint = servers
            .iter()
            .map(without_credentials)
            .collect::<Vec<_>>()
            .join(",");
        Self {
            servers,
            endpoint,
            connect_timeout,
            request_timeout,
            ping_interval,
            current: Mutex::new(None),
            dialling: tokio::sync::Mutex::new(()),
        }
    }

    /// The server list with credentials removed, for logs and `/healthz`.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The connection, dialled now if there is none yet.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when NATS cannot be reached or the connection is down,
    /// [`BrokerError::Refused`] when it rejects the credentials.
    pub(crate) async fn link(&self) -> Result<Arc<Link>, BrokerError> {
        if let Some(link) = self.current() {
            link.check_connected(&self.endpoint)?;
            return Ok(link);
        }
        let _dialling = self.dialling.lock().await;
        if let Some(link) = self.current() {
            link.check_connected(&self.endpoint)?;
            return Ok(link);
        }
        let link = Arc::new(self.dial().await?);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&link));
        Ok(link)
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn dial(&self) -> Result<Link, BrokerError> {
        let (losses_tx, losses) = watch::channel(0_u64);
        let endpoint = self.endpoint.clone();
        let options = ConnectOptions::new()
            .name("streamgate")
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(self.request_timeout))
            .ping_interval(self.ping_interval)
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                MAX_RECONNECT_DELAY.min(
                    Duration::from_millis(100)
                        .saturating_mul(u32::try_from(attempts).unwrap_or(u32::MAX)),
                )
            })
            .event_callback(move |event| {
                let losses_tx = losses_tx.clone();
                let endpoint = endpoint.clone();
                async move {
                    match event {
                        Event::Disconnected => {
                            tracing::warn!(%endpoint, %event, "NATS connection lost");
                            losses_tx.send_modify(|losses| *losses += 1);
                        }
                        // Closed is what our own shutdown (dropping the client) looks like.
                        Event::Closed => {
                            tracing::debug!(%endpoint, %event, "NATS connection closed");
                            losses_tx.send_modify(|losses| *losses += 1);
                        }
                        Event::Connected => {
                            tracing::info!(%endpoint, "NATS connection established")
                        }
                        other => tracing::warn!(%endpoint, event = %other, "NATS connection event"),
                    }
                }
            });
        // The client bounds each attempt by `connection_timeout`; the outer bound also covers
        // DNS and the handshake, whatever the client does with them.
        let attempt = options.connect(self.servers.clone());
        let client =
            tokio::time::timeout(self.connect_timeout + Duration::from_millis(500), attempt)
                .await
                .map_err(|_elapsed| {
                    BrokerError::Unavailable(format!(
                        "cannot connect to NATS at {}: timed out after {:?}",
                        self.endpoint, self.connect_timeout
                    ))
                })?
                .map_err(|err| errors::connect(&self.endpoint, &err))?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(self.request_timeout)
            .build(client.clone());
        Ok(Link {
            client,
            jetstream,
            losses,
        })
    }
}

/// `server` as a URL without user name or password (a bare user name may be a token).
fn without_credentials(server: &ServerAddr) -> String {
    let mut url = server.clone().into_inner();
    // Both only fail for URLs that cannot have credentials, which is fine.
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_hides_credentials() {
        let servers = vec![
            "nats://alice:secret@nats-a:4222".parse().unwrap(),
            "nats://s3cr3t-token@nats-b:4222".parse().unwrap(),
            "nats://127.0.0.1:4222".parse().unwrap(),
        ];
        let connector = Connector::new(
            servers,
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert_eq!(
            connector.endpoint(),
            "nats://nats-a:4222,nats://nats-b:4222,nats://127.0.0.1:4222"
        );
    }
}
