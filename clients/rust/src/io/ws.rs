//! WebSocket (§7): `GET /ws?topics=&since=` with the subprotocol `streamgate.v1`, confirmed by
//! the `subscribed` message. Framing is tungstenite's. Unlike a browser, this client sees the
//! HTTP status of a refused upgrade, so 400/401/403 end the subscription here.

use std::collections::HashMap;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::http::refusal;
use super::{publish_reply, Attempt, Ended, PublishError, Publishes};
use crate::{publish_message, EventId, Incoming, Message};

pub(crate) async fn run(attempt: &Attempt, mut publishes: Publishes) -> Ended {
    let (ctx, sink) = (&attempt.ctx, &attempt.sink);
    let params: Vec<_> = attempt.since_param().into_iter().collect();
    let url = format!(
        "ws://{}{}",
        ctx.gateway.authority(),
        ctx.target("/ws", &params)
    );
    let mut request = match url.as_str().into_client_request() {
        Ok(request) => request,
        Err(e) => return Ended::fatal(format!("{url}: {e}"), None),
    };
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("streamgate.v1"),
    );
    if let Some(token) = ctx.token() {
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert("authorization", value);
        }
    }
    let socket = match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => socket,
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let mut ended = refusal(response.status().as_u16(), body);
            ended.reason = format!("refused the upgrade: {}", ended.reason);
            return ended;
        }
        Err(e) => return Ended::retry(format!("closed before opening: {e}")),
    };
    let (mut write, mut read) = socket.split();
    let mut waiting: HashMap<String, tokio::sync::oneshot::Sender<Result<EventId, PublishError>>> =
        HashMap::new();
    let mut n = 0u64;
    loop {
        tokio::select! {
            frame = read.next() => {
                let parsed = match frame {
                    Some(Ok(WsMessage::Text(text))) => Message::parse(text.as_bytes()),
                    Some(Ok(WsMessage::Binary(bytes))) => Message::parse(&bytes),
                    Some(Ok(WsMessage::Close(close))) => {
                        let why = match close {
                            Some(f) if f.reason.is_empty() => format!("closed (code {})", u16::from(f.code)),
                            Some(f) => format!("closed (code {}: {})", u16::from(f.code), f.reason),
                            None => "closed (no code)".to_owned(),
                        };
                        return Ended::retry(why);
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Ended::retry(format!("closed: {e}")),
                    None => return Ended::retry("closed: the connection ended"),
                };
                let message = match parsed {
                    Ok(message) => message,
                    Err(undecodable) => {
                        sink.message(Incoming::Undecodable(undecodable));
                        continue;
                    }
                };
                // A reply to one of our publishes, by its reference; anything else is the
                // subscription's.
                let reply = publish_reply(&message)
                    .and_then(|(reference, result)| Some((waiting.remove(reference?)?, result)));
                match reply {
                    Some((reply, result)) => {
                        let _ = reply.send(result);
                    }
                    None => sink.message(Incoming::Message(message)),
                }
            }
            Some(request) = publishes.recv() => {
                n += 1;
                let reference = format!("c-{n}");
                let text = publish_message(&request.topic, &request.data, Some(&reference));
                if let Err(e) = write.send(WsMessage::text(text)).await {
                    let _ = request.reply.send(Err(PublishError::Failed(e.to_string())));
                    continue;
                }
                waiting.insert(reference, request.reply);
            }
        }
    }
}
