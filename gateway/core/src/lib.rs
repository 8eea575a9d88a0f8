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
mod json;
mod memory;
mod per_ip;
mod redact;
mod tap;
pub mod telemetry;
mod transport;

pub use auth::{
    credential_from_request, mask_token_param, token_from_request, AuthError, Authorizer, Grant,
    StreamgateClaims, TokenSource, TopicPattern, DEFAULT_COOKIE_NAME, TOKEN_QUERY_PARAM,
};
pub use broker::{Broker, BrokerError, Feed, FeedEvents};
pub use broker_bus::{BrokerBus, BrokerBusConfig};
pub use bus::{BoxFuture, BusHealth, Delivery, EventBus, Notice, SubscribeRequest, Subscription};
pub use error::{IdError, PayloadError, PublishError, SubscribeError, TopicError};
pub use event::{
    ContentType, Epoch, Event, EventId, Topic, WireFormat, MAX_EPOCH_LEN, MAX_TOPIC_LEN,
};
pub use gate::{PublishGate, PublishRefusal, RATE_LIMITED, TOPIC_BUDGET};
pub use history::{HistoryConfig, HistoryWindow, ResumePlan, TopicHistory};
pub use json::{validate_json, JsonError, JsonRule, MAX_JSON_DEPTH};
pub use memory::{HistoryUsage, MemoryBus, MemoryBusConfig, TopicStats};
pub use per_ip::{IpSlot, PerIpLimit};
pub use redact::{
    is_credential_header, is_credential_param, mask_credential_params, mask_header_value,
    mask_websocket_protocols, masked_value, MASKED,
};
pub use tap::{
    is_valid_tap_id, tap_id_from_query, Direction, RecordKind, Tap, TapConnection, TapRefused,
    TapRegistry, TapSink, MAX_TAP_ID_LEN, TAP_QUERY_PARAM,
};
pub use telemetry::{record_rejection, TransportMetrics};
pub use transport::{
    body_read_error_response, error_response, full_body, header_has_token, read_body_limited,
    request_scheme, Body, BodyReadTimeout, BoxError, ConnectionInfo, ConnectionLease,
    HttpTransport, TransportContext,
};
