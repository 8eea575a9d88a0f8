//! [`SseTransport`]: `GET /sse`.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use streamgate_core::{
    Body, BoxFuture, HttpTransport, Rejection, SubscribeRequest, TransportContext, TransportMetrics,
};
use streamgate_proto::{parse_last_event_id, sse_comment, sse_retry, SubscribeQuery};

use crate::body::EventStreamBody;
use crate::config::SseConfig;

/// The SSE transport. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SseTransport {
    config: Arc<SseConfig>,
    metrics: TransportMetrics,
}

impl SseTransport {
    /// A transport with these settings.
    pub fn new(config: SseConfig) -> Self {
        Self {
            config: Arc::new(config),
            metrics: TransportMetrics::new("sse"),
        }
    }
}

impl HttpTransport for SseTransport {
    fn name(&self) -> &'static str {
        "sse"
    }

    fn paths(&self) -> &'static [&'static str] {
        &["/sse"]
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
        Box::pin(async move {
            match handle(&config, &request, context, metrics).await {
                Ok(response) => response,
                Err(rejection) => rejection,
            }
        })
    }
}

async fn handle(
    config: &SseConfig,
    request: &Request<Body>,
    context: TransportContext,
    metrics: TransportMetrics,
) -> Result<Response<Body>, Response<Body>> {
    if request.method() != Method::GET {
        return Err(Rejection::method_not_allowed("GET").into_response());
    }
    let query = SubscribeQuery::parse(request.uri().query()).map_err(|e| e.to_response())?;
    if query.topics.is_empty() {
        return Err(
            Rejection::new("no_topics", "name the topics to stream: /sse?topics=a,b").to_response(),
        );
    }
    // `[auth]`: 401 without a valid token, 403 for a topic it does not cover.
    let grant = context
        .authorize_subscribe(request.headers(), request.uri().query(), &query.topics)
        .map_err(|e| e.to_response())?;
    let since = match request.headers().get("last-event-id") {
        Some(value) => parse_last_event_id(value.as_bytes())
            .map_err(|e| e.to_response())?
            .or(query.since),
        None => query.since,
    };
    let subscription = context
        .bus
        .subscribe(SubscribeRequest::resume(query.topics, since))
        .await
        .map_err(|e| Rejection::from(&e).to_response())?;
    let token_expiry = grant
        .map(|grant| tokio::time::Instant::now() + grant.remaining(std::time::SystemTime::now()));
    let mut preamble = BytesMut::new();
    preamble.put(sse_retry(config.retry.as_millis() as u64));
    preamble.put(sse_comment(&format!(
        "streamgate epoch {}",
        subscription.start().epoch
    )));
    let body = EventStreamBody::new(
        preamble.freeze(),
        subscription,
        config.heartbeat_interval,
        config.max_stream_duration,
        context.shutdown.clone().cancelled_owned(),
        metrics,
    )
    .with_token_expiry(token_expiry);
    let mut response = Response::new(body.boxed());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers proxied responses unless told not to, which would hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
