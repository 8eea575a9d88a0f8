//! [`LongPollTransport`]: `GET /poll` (hold, then answer with a batch) and `POST /poll`
//! (publish). The batch rules and the cursor choice live in [`crate::poll`]; this file only
//! waits on the subscription and the clocks.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use http::{header, HeaderValue, Method, Request, Response};
use streamgate_core::{
    full_body, read_body_limited, AuthError, Body, BodyReadTimeout, BoxFuture, ClientPublish,
    ConnectionInfo, Delivery, HttpTransport, Rejection, SubscribeRequest, Subscription,
    TransportContext, TransportMetrics,
};
use streamgate_proto::{
    encode_error, encode_notice, encode_published, json_envelope, ClientMessage,
};

use crate::config::LongPollConfig;
use crate::poll::{next_cursor, Batch, BatchLimits, Offer, PollQuery, QueryBounds};

/// Methods `/poll` answers.
const ALLOW: &str = "GET, POST";

/// The long-polling transport. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LongPollTransport {
    config: Arc<LongPollConfig>,
    metrics: TransportMetrics,
}

impl LongPollTransport {
    /// A transport with these settings.
    pub fn new(config: LongPollConfig) -> Self {
        Self {
            config: Arc::new(config),
            metrics: TransportMetrics::new("longpoll"),
        }
    }
}

impl HttpTransport for LongPollTransport {
    fn name(&self) -> &'static str {
        "longpoll"
    }

    fn paths(&self) -> &'static [&'static str] {
        &["/poll"]
    }

    fn long_lived_get(&self) -> bool {
        true
    }

    fn handle(
        &self,
        request: Request<Body>,
        context: TransportContext,
    ) -> BoxFuture<'static, Response<Body>> {
        let config = Arc::clone(&self.config);
        let metrics = self.metrics.clone();
        match *request.method() {
            Method::GET => {
                // All a wait needs is taken from the request now and the request dropped: a
                // waiter holds its query, not the request's headers.
                if let Err(refused) = authorize_poll(&config, &request, &context) {
                    let refused = Rejection::from(&refused);
                    return Box::pin(std::future::ready(http_error(refused)));
                }
                let query = match PollQuery::parse(request.uri().query(), &query_bounds(&config)) {
                    Ok(query) => query,
                    Err(e) => return Box::pin(std::future::ready(http_error(e))),
                };
                drop(request);
                Box::pin(async move { poll(&config, query, context, &metrics).await })
            }
            Method::POST => {
                Box::pin(async move { post(&config, request, context, &metrics).await })
            }
            _ => Box::pin(std::future::ready(http_error(
                Rejection::method_not_allowed(ALLOW),
            ))),
        }
    }
}

/// The bounds a poll's query must keep.
fn query_bounds(config: &LongPollConfig) -> QueryBounds {
    QueryBounds {
        default_timeout: config.default_timeout,
        max_timeout: config.max_timeout,
        max_events: config.max_batch_events,
    }
}

/// `GET /poll`: subscribe, answer at once with what is ready, else hold until the first
/// delivery, the timeout or shutdown. The subscription ends with the request.
async fn poll(
    config: &LongPollConfig,
    query: PollQuery,
    context: TransportContext,
    metrics: &TransportMetrics,
) -> Response<Body> {
    let mut subscription = match context
        .bus
        .subscribe(SubscribeRequest::resume(
            query.topics.clone(),
            query.cursor.clone(),
        ))
        .await
    {
        Ok(subscription) => subscription,
        Err(e) => return http_error(Rejection::from(&e)),
    };
    // One poll is one "connection" of this transport: open while it waits.
    let _open = metrics.connection();
    let mut batch = Batch::new(BatchLimits {
        max_events: query.max_events,
        max_bytes: config.max_batch_bytes,
    });
    take_ready(&mut subscription, &mut batch, metrics);
    if batch.is_empty() && !query.timeout.is_zero() {
        let first = tokio::select! {
            biased;
            delivery = subscription.next() => delivery,
            () = context.shutdown.cancelled() => None,
            () = tokio::time::sleep(query.timeout) => None,
        };
        if let Some(delivery) = first {
            if offer(&mut batch, delivery, metrics) != Offer::Refused {
                take_ready(&mut subscription, &mut batch, metrics);
            }
        }
    }
    let cursor = next_cursor(
        batch.last_event(),
        query.cursor.as_ref(),
        subscription.start(),
    );
    drop(subscription);
    let mut response = Response::new(full_body(batch.into_body(&cursor)));
    set_json_headers(&mut response);
    response
}

/// `[auth]`: a poll needs a token covering its topics (401/403), checked again on every poll,
/// so the first poll after the token expires gets 401. A query that does not parse passes
/// here and is refused by [`poll`] with its own error.
fn authorize_poll(
    config: &LongPollConfig,
    request: &Request<Body>,
    context: &TransportContext,
) -> Result<(), AuthError> {
    if context.auth.is_none() {
        return Ok(());
    }
    let topics = PollQuery::parse(request.uri().query(), &query_bounds(config))
        .map(|query| query.topics)
        .unwrap_or_default();
    context
        .authorize_subscribe(request.headers(), request.uri().query(), &topics)
        .map(drop)
}

/// Adds every delivery that is ready now, without waiting, until the batch is closed.
fn take_ready(subscription: &mut Subscription, batch: &mut Batch, metrics: &TransportMetrics) {
    while !batch.is_closed() {
        match subscription.next().now_or_never() {
            Some(Some(delivery)) => {
                if offer(batch, delivery, metrics) == Offer::Refused {
                    break;
                }
            }
            // Nothing ready, or the bus closed.
            Some(None) | None => break,
        }
    }
}

/// Offers a delivery to the batch; one taken is counted as delivered (a refused one comes
/// again on the next poll).
fn offer(batch: &mut Batch, delivery: Delivery, metrics: &TransportMetrics) -> Offer {
    let (bytes, offered) = match &delivery {
        Delivery::Event(event) => {
            let envelope = json_envelope(event);
            (envelope.len(), batch.offer_event(&event.id, envelope))
        }
        Delivery::Notice(notice) => {
            let notice = encode_notice(notice);
            (notice.len(), batch.offer_notice(notice))
        }
    };
    if offered != Offer::Refused {
        metrics.delivered(&delivery, bytes);
    }
    offered
}

/// `POST /poll`: one client message. Only `publish` means something without a connection.
async fn post(
    config: &LongPollConfig,
    request: Request<Body>,
    context: TransportContext,
    metrics: &TransportMetrics,
) -> Response<Body> {
    let client = request
        .extensions()
        .get::<ConnectionInfo>()
        .map(|info| info.peer.ip());
    let publisher = context.client_publish(client, metrics.publishes());
    // The client's publish rate first of all: a flood costs no token check and no body. Its
    // topic budget once the topic is known.
    if let Err(refused) = publisher.admit_rate() {
        return reply(None, Err(refused));
    }
    // `[auth]`: the token is checked before the body is read; its topic once it is parsed.
    let grant = match &context.auth {
        Some(auth) => match auth.authenticate(request.headers(), request.uri().query()) {
            Ok(grant) => Some(grant),
            Err(e) => return reply(None, Err(Rejection::from(&e))),
        },
        None => None,
    };
    let limit = config.max_message_size;
    let too_large = || {
        reply(
            None,
            Err(Rejection::new(
                "payload_too_large",
                format!("the message is over the limit of {limit} bytes"),
            )),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return too_large();
    }
    let body = match read_body_limited(request.into_body(), limit).await {
        Ok(Some(body)) => body,
        Ok(None) => return too_large(),
        // The gateway's `server.body_read_timeout`: an HTTP answer, and the connection closes.
        Err(e) if e.is::<BodyReadTimeout>() => return Rejection::body_read(&e).into_response(),
        Err(e) => return reply(None, Err(Rejection::body_read(&e))),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return reply(
            None,
            Err(Rejection::new(
                "bad_message",
                "the body must be one JSON client message, in UTF-8",
            )),
        );
    };
    match ClientMessage::parse(text) {
        Err((error, reference)) => reply(reference.as_deref(), Err(error)),
        Ok(ClientMessage::Publish(publish)) => {
            let reference = publish.reference.as_deref();
            let checked = ClientPublish::authorize(grant.as_ref(), &publish.topic)
                .and_then(|()| publisher.admit_topic(&publish.topic));
            let outcome = match checked {
                Ok(()) => {
                    publisher
                        .publish(publish.topic, publish.content_type, publish.payload)
                        .await
                }
                Err(refused) => Err(refused),
            };
            reply(
                reference,
                outcome.map(|event| encode_published(reference, &event.id)),
            )
        }
        Ok(
            ClientMessage::Subscribe { reference, .. }
            | ClientMessage::Unsubscribe { reference, .. },
        ) => reply(
            reference.as_deref(),
            Err(Rejection::new(
                "bad_message",
                "long polling is stateless: there is no subscription to change; name the \
                 topics in each poll, GET /poll?topics=a,b&cursor=<cursor>",
            )),
        ),
    }
}

/// A `POST /poll` answer: `published` (200), or an `error` message with the refusal's HTTP
/// status and headers.
fn reply(reference: Option<&str>, outcome: Result<Bytes, Rejection>) -> Response<Body> {
    let mut response = match outcome {
        Ok(body) => Response::new(full_body(body)),
        Err(error) => {
            let body = encode_error(&error, reference);
            error.into_response_with(body)
        }
    };
    set_json_headers(&mut response);
    response
}

/// An HTTP error: `{"error":{"code":…,"reason":…}}`.
fn http_error(rejection: Rejection) -> Response<Body> {
    let mut response = rejection.into_response();
    set_json_headers(&mut response);
    response
}

/// Every `/poll` answer is JSON and describes one moment of the stream: never cache it.
fn set_json_headers(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
