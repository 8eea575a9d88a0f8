//! Long polling (§7): `GET /poll?topics=&cursor=&timeout=`, with the cursor of each answer.
//! The first poll asks for `timeout=0` so the gateway answers at once and the transport is
//! confirmed without a hold. One HTTP/1.1 connection is reused while the gateway keeps it.

use super::http::{refusal, HttpConn};
use super::{Attempt, Ended};
use crate::h1::encode_query_value;
use crate::{Incoming, PollAnswer};

pub(crate) async fn run(attempt: &Attempt) -> Ended {
    let (ctx, sink) = (&attempt.ctx, &attempt.sink);
    let mut cursor = attempt.since.clone();
    let mut conn: Option<HttpConn> = None;
    let bearer = ctx.token().map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    for first in std::iter::once(true).chain(std::iter::repeat(false)) {
        let hold = if first {
            std::time::Duration::ZERO
        } else {
            ctx.timeouts.poll_hold
        };
        let mut params = Vec::new();
        if let Some(cursor) = &cursor {
            params.push(("cursor", encode_query_value(&cursor.to_string())));
        }
        params.push(("timeout", hold.as_secs_f64().to_string()));
        let target = ctx.target("/poll", &params);
        let exchange = async {
            let http = match conn.take() {
                Some(http) => http,
                None => HttpConn::open(&ctx.gateway).await?,
            };
            let mut http = http;
            let (head, mut body) = http.request("GET", &target, &headers, b"").await?;
            let text = http.read_body(&mut body).await?;
            if head.keeps_alive() {
                conn = Some(http);
            }
            Ok::<_, String>((head, text))
        };
        let (head, text) = match tokio::time::timeout(hold + ctx.timeouts.poll, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Ended::retry(e),
            Err(_) => {
                return Ended::retry(format!(
                    "no answer within {} ms",
                    (hold + ctx.timeouts.poll).as_millis()
                ))
            }
        };
        if head.status != 200 {
            return refusal(head.status, &text);
        }
        // Read message by message: one that does not decode is skipped, and the cursor still
        // moves past it, instead of polling for the same answer forever.
        let answer = match PollAnswer::parse(&text) {
            Ok(answer) => answer,
            Err(e) => return Ended::retry(e),
        };
        sink.open();
        for message in answer.messages {
            sink.message(match message {
                Ok(message) => Incoming::Message(message),
                Err(undecodable) => Incoming::Undecodable(undecodable),
            });
        }
        sink.message(Incoming::Cursor(answer.cursor.clone()));
        cursor = Some(answer.cursor);
    }
    unreachable!("the poll loop only ends by returning")
}
