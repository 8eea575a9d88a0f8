//! Upstream ingest: subscribe to a WebSocket feed and republish each message to a topic.
//!
//! The connection is kept up forever: after any failure or close the source waits, doubling
//! the wait from `reconnect_min` up to `reconnect_max` (with ±25 % jitter so many gateways do
//! not reconnect in step), and starts over, re-sending the subscribe message. The wait
//! returns to `reconnect_min` once a connection has delivered a message.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use streamgate_core::{ContentType, EventBus};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::config::SourceConfig;

/// How one connection attempt ended.
enum Attempt {
    /// Shutdown was requested.
    Shutdown,
    /// The connection failed or closed; `delivered` says whether it carried any message.
    Ended { delivered: bool },
}

/// Runs the source until `shutdown`.
pub async fn run(bus: Arc<dyn EventBus>, source: SourceConfig, shutdown: CancellationToken) {
    let mut delay = source.reconnect_min;
    loop {
        match connect_once(bus.as_ref(), &source, &shutdown).await {
            Attempt::Shutdown => break,
            Attempt::Ended { delivered } => {
                if delivered {
                    delay = source.reconnect_min;
                }
            }
        }
        let jittered = delay.mul_f64(rand::random_range(0.75..1.25));
        tracing::info!(
            retry_in_ms = jittered.as_millis() as u64,
            "upstream disconnected"
        );
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(jittered) => {}
        }
        delay = (delay * 2).min(source.reconnect_max);
    }
    tracing::info!("upstream source stopped");
}

async fn connect_once(
    bus: &dyn EventBus,
    source: &SourceConfig,
    shutdown: &CancellationToken,
) -> Attempt {
    let connected = tokio::select! {
        () = shutdown.cancelled() => return Attempt::Shutdown,
        connected = tokio_tungstenite::connect_async(source.url.as_str()) => connected,
    };
    let mut socket = match connected {
        Ok((socket, _response)) => socket,
        Err(e) => {
            tracing::warn!(error = %e, "upstream connect failed");
            return Attempt::Ended { delivered: false };
        }
    };
    tracing::info!("upstream connected");
    if let Some(message) = &source.subscribe_message {
        if let Err(e) = socket.send(Message::text(message.as_str())).await {
            tracing::warn!(error = %e, "sending the subscribe message failed");
            return Attempt::Ended { delivered: false };
        }
    }
    let mut delivered = false;
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => {
                let _ = socket.close(None).await;
                return Attempt::Shutdown;
            }
            message = socket.next() => message,
        };
        let (content_type, payload) = match message {
            Some(Ok(Message::Text(text))) => {
                let content_type = source.content_type.classify(text.as_str());
                (content_type, Bytes::from(text))
            }
            Some(Ok(Message::Binary(bytes))) => (ContentType::Binary, bytes),
            Some(Ok(Message::Close(frame))) => {
                tracing::info!(?frame, "upstream closed");
                return Attempt::Ended { delivered };
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "upstream read failed");
                return Attempt::Ended { delivered };
            }
            None => return Attempt::Ended { delivered },
        };
        match bus
            .publish(source.topic.clone(), content_type, payload)
            .await
        {
            Ok(_) => delivered = true,
            Err(e) => tracing::warn!(error = %e, "republishing an upstream message failed"),
        }
    }
}
