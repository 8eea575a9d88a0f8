//! [`ClientPublish`]: a client's publish, through the same checks, in the same order, with
//! the same counters, on every publish path (`POST /publish`, `POST /poll`, a WebSocket or
//! WebTransport `publish` message). Each path then says the outcome in its own wire format
//! (an HTTP JSON answer, a `published` or `error` client message); this module knows none.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::auth::Grant;
use crate::bus::EventBus;
use crate::event::{ContentType, Event, Topic};
use crate::gate::PublishGate;
use crate::rejection::Rejection;
use crate::telemetry::PublishMetrics;
use crate::transport::TransportContext;

/// One client's publish: who publishes (for the per-client limits), through which bus, counted
/// in which publish counter.
///
/// A session that receives whole messages calls [`ClientPublish::publish_message`]. A path
/// that must read a request body first takes the steps itself, in this order:
/// [`ClientPublish::admit_rate`] before reading (a flood costs no body),
/// [`ClientPublish::authorize`] and [`ClientPublish::admit_topic`] once the topic is known,
/// then [`ClientPublish::publish`].
#[derive(Clone, Copy)]
pub struct ClientPublish<'a> {
    bus: &'a dyn EventBus,
    gate: Option<&'a dyn PublishGate>,
    client: Option<IpAddr>,
    metrics: &'a PublishMetrics,
}

impl<'a> ClientPublish<'a> {
    /// A publish by `client` (`None`: an embedder that did not say, to whom no per-client
    /// limit applies) to `bus`, limited by `gate`, counted in `metrics`.
    pub fn new(
        bus: &'a dyn EventBus,
        gate: Option<&'a dyn PublishGate>,
        client: Option<IpAddr>,
        metrics: &'a PublishMetrics,
    ) -> Self {
        Self {
            bus,
            gate,
            client,
            metrics,
        }
    }

    /// The client's publish rate: one publish taken from it.
    ///
    /// # Errors
    /// `429` `rate_limited` with `Retry-After`, counted as the publish's outcome.
    pub fn admit_rate(&self) -> Result<(), Rejection> {
        match (self.gate, self.client) {
            (Some(gate), Some(client)) => gate
                .admit_publish(client)
                .map_err(|refusal| self.refused(Rejection::from(&refusal))),
            _ => Ok(()),
        }
    }

    /// Whether the client's token allows publishing to `topic` (`grant` is `None` when
    /// authentication is off).
    ///
    /// # Errors
    /// `403` `forbidden`.
    pub fn authorize(grant: Option<&Grant>, topic: &Topic) -> Result<(), Rejection> {
        match grant {
            Some(grant) => grant.check_publish(topic).map_err(|e| Rejection::from(&e)),
            None => Ok(()),
        }
    }

    /// The client's topic budget, charged if publishing to `topic` would create it.
    ///
    /// # Errors
    /// `429` `topic_budget` with `Retry-After`, counted as the publish's outcome.
    pub fn admit_topic(&self, topic: &Topic) -> Result<(), Rejection> {
        match (self.gate, self.client) {
            (Some(gate), Some(client)) => gate
                .admit_topic(client, topic)
                .map_err(|refusal| self.refused(Rejection::from(&refusal))),
            _ => Ok(()),
        }
    }

    /// Publishes to the bus and counts the outcome.
    ///
    /// # Errors
    /// The bus's refusal (`payload_too_large`, `invalid_payload`, `topic_limit`,
    /// `shutting_down`, `bus_unavailable`).
    pub async fn publish(
        &self,
        topic: Topic,
        content_type: ContentType,
        payload: Bytes,
    ) -> Result<Arc<Event>, Rejection> {
        match self.bus.publish(topic, content_type, payload).await {
            Ok(event) => {
                self.metrics.record(Ok(()));
                Ok(event)
            }
            Err(e) => Err(self.refused(Rejection::from(&e))),
        }
    }

    /// A publish that came as one whole message on a session: the token's grant, the
    /// client's rate and topic budget, then the bus. A refusal leaves the session open.
    ///
    /// # Errors
    /// The first check that refuses it, or the bus's refusal.
    pub async fn publish_message(
        &self,
        grant: Option<&Grant>,
        topic: Topic,
        content_type: ContentType,
        payload: Bytes,
    ) -> Result<Arc<Event>, Rejection> {
        Self::authorize(grant, &topic)?;
        self.admit_rate()?;
        self.admit_topic(&topic)?;
        self.publish(topic, content_type, payload).await
    }

    fn refused(&self, rejection: Rejection) -> Rejection {
        self.metrics.record(Err(rejection.code));
        rejection
    }
}

impl TransportContext {
    /// A publish by `client` through this context's bus and publish limits, counted in
    /// `metrics` (usually [`crate::TransportMetrics::publishes`]).
    pub fn client_publish<'a>(
        &'a self,
        client: Option<IpAddr>,
        metrics: &'a PublishMetrics,
    ) -> ClientPublish<'a> {
        ClientPublish::new(
            self.bus.as_ref(),
            self.publish_gate.as_deref(),
            client,
            metrics,
        )
    }
}

impl std::fmt::Debug for ClientPublish<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPublish")
            .field("client", &self.client)
            .field("gated", &self.gate.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{PublishRefusal, TOPIC_BUDGET};
    use crate::memory::MemoryBus;

    /// Refuses every new topic, admits every publish.
    #[derive(Debug)]
    struct NoNewTopics;

    impl PublishGate for NoNewTopics {
        fn admit_publish(&self, _: IpAddr) -> Result<(), PublishRefusal> {
            Ok(())
        }
        fn admit_topic(&self, _: IpAddr, _: &Topic) -> Result<(), PublishRefusal> {
            Err(PublishRefusal::new(TOPIC_BUDGET, "no new topics", 7))
        }
    }

    #[tokio::test]
    async fn a_refusal_is_typed_and_nothing_is_published() {
        let bus = MemoryBus::new(Default::default());
        let metrics = PublishMetrics::new("test");
        let client = Some(IpAddr::from([127, 0, 0, 1]));
        let publish = ClientPublish::new(&bus, Some(&NoNewTopics), client, &metrics);
        let topic = Topic::new("t").unwrap();
        let refused = publish
            .publish_message(None, topic.clone(), ContentType::Text, "x".into())
            .await
            .unwrap_err();
        assert_eq!(refused.code, TOPIC_BUDGET);
        assert_eq!(refused.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after_secs(), Some(7));
        assert!(bus.topic_stats().await.is_empty());

        // Without a known client no per-client limit applies.
        let anonymous = ClientPublish::new(&bus, Some(&NoNewTopics), None, &metrics);
        let event = anonymous
            .publish_message(None, topic, ContentType::Text, "x".into())
            .await
            .unwrap();
        assert_eq!(event.payload, "x");
    }

    #[tokio::test]
    async fn a_bus_refusal_keeps_its_code() {
        let bus = MemoryBus::new(Default::default());
        let metrics = PublishMetrics::new("test");
        let publish = ClientPublish::new(&bus, None, None, &metrics);
        let refused = publish
            .publish(Topic::new("t").unwrap(), ContentType::Json, "{".into())
            .await
            .unwrap_err();
        assert_eq!(refused.code, "invalid_payload");
        assert_eq!(refused.status(), http::StatusCode::BAD_REQUEST);
    }
}
