//! `inspect http://…/poll`: long polling cycle by cycle — each request with its cursor, how
//! long the server held it, the response head and body, and the next cursor. What the other
//! transports do with one connection and one handshake, long polling does with a whole HTTP
//! exchange per batch; the sizes printed per cycle show what that costs.

use std::time::Instant;

use crate::wire_notes::annotate_poll_body;
use anyhow::bail;
use streamgate_client::h1::ResponseHead;
use tokio::net::TcpStream;

use super::http::{self, HeadRead};
use super::{events_in, plural, Printer, Run, Side};

pub(super) async fn run(Run(target, args, stop, printer): Run<'_>) -> anyhow::Result<()> {
    let mut target = target.clone();
    // The cursor is ours to carry from one poll to the next.
    let written = target.take_param("cursor");
    let mut cursor = args.since.clone().or(written);
    if let Some(timeout) = args.poll_timeout {
        target.set_param("timeout", &timeout.to_string());
    }
    let mut tcp: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    for cycle in 1u64.. {
        if stop.past_deadline() {
            printer.say("--duration reached between polls");
            return Ok(());
        }
        let connection = match tcp.as_mut() {
            Some(connection) => {
                printer.say(&format!(
                    "poll {cycle}: same TCP connection (HTTP/1.1 keep-alive), so no new handshake"
                ));
                connection
            }
            None => {
                if cycle > 1 {
                    printer.say(&format!(
                        "poll {cycle}: the last connection was closed, so a new TCP connection"
                    ));
                }
                tcp.insert(http::connect(&target.authority(), printer).await?)
            }
        };
        let mut request_target = target.clone();
        match &cursor {
            Some(cursor) => request_target.set_param("cursor", cursor),
            None => printer.say(&format!(
                "poll {cycle}: no cursor yet, so the server answers with what is published from now on"
            )),
        }
        let request = http::get(
            &request_target.path_and_query(),
            &target.authority(),
            &[("Accept", "application/json")],
        );
        let sent_at = Instant::now();
        http::send_head(
            connection,
            &request,
            &format!("poll {cycle}: the request"),
            printer,
        )
        .await?;
        let head = match http::read_head(
            connection,
            &mut buf,
            stop,
            &format!("poll {cycle}: the response head"),
            printer,
        )
        .await?
        {
            HeadRead::Head(head) => head,
            HeadRead::Stopped => {
                printer.say(&format!(
                    "stopped while the server held poll {cycle} ({:.3}s so far); closing the connection abandons it",
                    sent_at.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
        };
        let held = sent_at.elapsed();
        let head_len = head.head.len;
        let body = read_poll_body(connection, &mut buf, &head.head, printer).await?;
        let note = annotate_poll_body(&body);
        let events = events_in(&note);
        printer.record(
            Side::Server,
            &format!("poll {cycle}: the body"),
            body.len(),
            std::slice::from_ref(&note),
        );
        if head.head.status != 200 {
            bail!("the server answered {}", head.status_line());
        }
        let next = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("cursor")?.as_str().map(str::to_owned));
        printer.say(&format!(
            "poll {cycle}: held {:.3}s, {} in {} of body, {} of HTTP around it (request and response heads); next cursor {}",
            held.as_secs_f64(),
            plural(events as usize, "event"),
            plural(body.len(), "byte"),
            plural(request.len() + head_len, "byte"),
            next.as_deref().unwrap_or("(none)"),
        ));
        if next.is_some() {
            cursor = next;
        }
        if !head.head.keeps_alive() {
            tcp = None;
        }
        if stop.saw_events(events) {
            printer.say("--count reached");
            return Ok(());
        }
    }
    Ok(())
}

/// The body after `head`: `Content-Length` bytes, or the chunks up to the last one (their
/// framing counted here, the data when the body is shown).
async fn read_poll_body(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: &ResponseHead,
    printer: &mut Printer,
) -> anyhow::Result<Vec<u8>> {
    let Some((body, framing)) = http::read_framed_body(tcp, buf, head).await? else {
        bail!("a poll response with neither Content-Length nor chunked encoding");
    };
    printer.count(Side::Server, framing);
    Ok(body)
}
