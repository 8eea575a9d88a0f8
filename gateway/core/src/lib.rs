//! # streamgate-core
//!
//! The spine every streamgate transport plugs into: the event model, the [`EventBus`] trait,
//! and [`MemoryBus`], the embedded in-memory bus with bounded per-topic history.
//!
//! ## Concepts
//!
//! - An [`Event`] is one published message: a [`Topic`], an [`EventId`], a server timestamp,
//!   a [`ContentType`] and a payload. Events are shared as `Arc<Event>`: every subscriber of
//!   every transport sees the very same allocation.
//! - An [`EventId`] is `epoch:seq`. The sequence is assigned by the bus, strictly increasing
//!   across the whole bus (so also within each topic), which lets one id act as the resume
//!   cursor of a subscription to many topics. The epoch names one incarnation of the bus's
//!   history: a cursor from another epoch cannot be trusted and the subscriber is told so.
//! - A [`Subscription`] is a stream of [`Delivery`] items: events in id order, plus notices
//!   when something could not be delivered ([`Notice::Gap`], [`Notice::Reset`],
//!   [`Notice::Lagged`]). Nothing is ever skipped silently.
//! - Transports encode each event once per wire format with [`Event::encoded`] and write the
//!   same bytes to every subscriber; the bus itself never knows a wire format.
//!
//! ## What every transport shares
//!
//! - [`HttpTransport`] and [`TransportContext`]: the shape of a transport served over the
//!   gateway's HTTP listener, and what it is handed with each request. The pieces of an HTTP
//!   message they share ([`Body`], [`read_body_limited`], [`header_has_token`]) have their own
//!   module, which [`auth`](crate::Authorizer) uses too.
//! - [`Rejection`]: every refusal, one type: a machine code, a reason, the HTTP status (or the
//!   close code of a session it ends); each transport says it in its own wire format, and it
//!   is counted the same way everywhere ([`Rejection::record`]).
//! - [`ClientPublish`]: a client's publish through the same checks (token, publish rate, topic
//!   budget), the bus and the same counters on every publish path; the transport only encodes
//!   the outcome.
//! - [`TopicStats`] and [`HistoryUsage`] are part of the [`EventBus`] contract, beside it.
//!
//! ## Quick start
//!
//! ```
//! use streamgate_core::{ContentType, Delivery, EventBus, MemoryBus, SubscribeRequest, Topic};
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = MemoryBus::new(Default::default());
//! let topic = Topic::new("demo")?;
//! let mut subscription = bus.subscribe(SubscribeRequest::live(vec![topic.clone()])).await?;
//! let published = bus.publish(topic, ContentType::Text, "hello".into()).await?;
//! match subscription.next().await {
//!     Some(Delivery::Event(event)) => assert_eq!(event.id, published.id),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod auth;
mod broker;
mod broker_bus;
mod bus;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod event;
mod gate;
mod history;
mod http_message;
mod json;
mod memory;
mod per_ip;
mod publish;
mod redact;
mod rejection;
mod tap;
pub mod telemetry;
mod transport;

pub use auth::{
    credential_from_request, mask_token_param, token_from_request, AuthError, Authorizer, Grant,
    StreamgateClaims, TokenSource, TopicPattern, DEFAULT_COOKIE_NAME, TOKEN_QUERY_PARAM,
};
pub use broker::{Broker, BrokerError, Feed, FeedEvents};
pub use broker_bus::{BrokerBus, BrokerBusConfig};
pub use bus::{
    BoxFuture, BusHealth, Delivery, EventBus, HistoryUsage, Notice, SubscribeRequest, Subscription,
    TopicStats,
};
pub use error::{IdError, PayloadError, PublishError, SubscribeError, TopicError};
pub use event::{
    ContentType, Epoch, Event, EventId, Topic, WireFormat, MAX_EPOCH_LEN, MAX_TOPIC_LEN,
};
pub use gate::{PublishGate, PublishRefusal, RATE_LIMITED, TOPIC_BUDGET};
pub use history::{HistoryConfig, HistoryWindow, ResumePlan, TopicHistory};
pub use http_message::{
    full_body, header_has_token, read_body_limited, Body, BodyReadTimeout, BoxError,
};
pub use json::{validate_json, JsonError, JsonRule, MAX_JSON_DEPTH};
pub use memory::{MemoryBus, MemoryBusConfig};
pub use per_ip::{IpSlot, PerIpLimit};
pub use publish::ClientPublish;
pub use redact::{
    is_credential_header, is_credential_param, mask_credential_params, mask_header_value,
    mask_websocket_protocols, masked_value, MASKED,
};
pub use rejection::Rejection;
pub use tap::{
    is_valid_tap_id, tap_id_from_query, Direction, RecordKind, Tap, TapConnection, TapRefused,
    TapRegistry, TapSink, MAX_TAP_ID_LEN, TAP_QUERY_PARAM,
};
pub use telemetry::{record_rejection, PublishMetrics, TransportMetrics};
pub use transport::{
    request_scheme, ConnectionInfo, ConnectionLease, HttpTransport, TransportContext,
};
