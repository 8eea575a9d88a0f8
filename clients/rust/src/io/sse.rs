//! Server-Sent Events (§7): `GET /sse?topics=` with `Last-Event-ID` to resume. Read as plain
//! HTTP, not through an EventSource-like layer, so the comment lines (the stream's preamble
//! and heartbeats, the liveness signal that tells a buffering proxy apart) are seen.

use super::http::{refusal, HttpConn};
use super::{Attempt, Ended};
use crate::sse::{SseDecoder, SseItem};
use crate::{Incoming, Message};

pub(crate) async fn run(attempt: &Attempt) -> Ended {
    let (ctx, since, sink) = (&attempt.ctx, &attempt.since, &attempt.sink);
    let mut conn = match HttpConn::open(&ctx.gateway).await {
        Ok(conn) => conn,
        Err(e) => return Ended::retry(e),
    };
    let target = ctx.target("/sse", &[]);
    let since = since.as_ref().map(|id| id.to_string());
    let token = ctx.token();
    let mut headers = vec![("accept", "text/event-stream")];
    if let Some(id) = &since {
        // The header wins over `?since=`, and is what a browser's EventSource sends.
        headers.push(("last-event-id", id));
    }
    let bearer = token.map(|t| format!("Bearer {t}"));
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    let (head, mut body) = match conn.request("GET", &target, &headers, b"").await {
        Ok(answer) => answer,
        Err(e) => return Ended::retry(e),
    };
    if head.status != 200 {
        let text = conn.read_body(&mut body).await.unwrap_or_default();
        return refusal(head.status, &text);
    }
    let mut decoder = SseDecoder::default();
    loop {
        let chunk = match conn.chunk(&mut body).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ended::retry("the stream ended"),
            Err(e) => return Ended::retry(e),
        };
        sink.open();
        sink.activity();
        for item in decoder.feed(&chunk) {
            let SseItem::Block(block) = item else {
                continue;
            };
            let Some(data) = block.data else { continue };
            match Message::parse(data.as_bytes()) {
                Ok(message) => sink.message(Incoming::Message(message)),
                Err(mut undecodable) => {
                    // The block's `id:` names the event even when its data is unreadable.
                    if undecodable.id.is_none() {
                        undecodable.id = block.id.as_deref().and_then(|id| id.parse().ok());
                    }
                    sink.message(Incoming::Undecodable(undecodable));
                }
            }
        }
    }
}
