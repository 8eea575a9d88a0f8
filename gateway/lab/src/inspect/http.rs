//! What the three TCP clients share: connecting, sending a request head and reading a
//! response head, each printed with its notes. The heads are parsed by streamgate-client's
//! sans-IO [`h1`] (httparse, byte ranges, the body's framing); the lab's annotator only
//! explains them.

use std::time::{Duration, Instant};

use crate::wire_notes::{annotate_http_head, Note};
use anyhow::{bail, Context as _};
use streamgate_client::h1::{self, BodyFraming, ChunkedDecoder, ResponseHead};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{Printer, Side, StopWhen};

/// Longest a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the body after a head may take: the server has it ready when it sends the head.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the TCP connection and says what it cost.
pub(super) async fn connect(authority: &str, printer: &mut Printer) -> anyhow::Result<TcpStream> {
    let started = Instant::now();
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
        .await
        .with_context(|| format!("no TCP connection to {authority} within {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("TCP connect to {authority}"))?;
    // Small writes (a pong, a close frame) go out at once, as a browser's would.
    tcp.set_nodelay(true)?;
    let local = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    printer.say(&format!(
        "TCP connected to {peer} from {local} in {:.1} ms: the handshake (SYN, SYN-ACK, ACK) is one round trip before any HTTP byte",
        started.elapsed().as_secs_f64() * 1000.0
    ));
    Ok(tcp)
}

/// A `GET` request head (no body), written by the client crate's [`h1::request`].
pub(super) fn get(target: &str, authority: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    h1::request("GET", target, authority, headers, b"")
}

/// A new connection to `authority`, one `GET` on it and the answer's head, each printed:
/// `what` names the request and the response head, and says what happened when the run was
/// stopped before the head came (then `None`). Otherwise the connection, the bytes read
/// after the head, and the head.
pub(super) async fn open_get(
    (authority, target): (&str, &str),
    headers: &[(&str, &str)],
    what: [&str; 3],
    stop: &StopWhen,
    printer: &mut Printer,
) -> anyhow::Result<Option<(TcpStream, Vec<u8>, Box<Answer>)>> {
    let mut tcp = connect(authority, printer).await?;
    send_head(&mut tcp, &get(target, authority, headers), what[0], printer).await?;
    let mut buf = Vec::with_capacity(16 * 1024);
    match read_head(&mut tcp, &mut buf, stop, what[1], printer).await? {
        HeadRead::Head(answer) => Ok(Some((tcp, buf, answer))),
        HeadRead::Stopped => {
            printer.say(what[2]);
            Ok(None)
        }
    }
}

/// [`open_get`] for a stream that must answer `expected`: any other status is a refusal, shown
/// with its body, explained by `refused[0]`, and returned as the error, `refused[1]` then the
/// status line.
pub(super) async fn open_stream(
    at: (&str, &str),
    headers: &[(&str, &str)],
    what: [&str; 3],
    (expected, refused): (u16, [&str; 2]),
    stop: &StopWhen,
    printer: &mut Printer,
) -> anyhow::Result<Option<(TcpStream, Vec<u8>, Box<Answer>)>> {
    let Some((mut tcp, mut buf, answer)) = open_get(at, headers, what, stop, printer).await? else {
        return Ok(None);
    };
    if answer.head.status != expected {
        show_refusal(&mut tcp, &mut buf, &answer.head, refused[0], printer).await;
        bail!("{} {}", refused[1], answer.status_line());
    }
    Ok(Some((tcp, buf, answer)))
}

/// Shows the body of a refusal (streamgate explains itself in a JSON body, §6).
pub(super) async fn show_refusal(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: &ResponseHead,
    why: &str,
    printer: &mut Printer,
) {
    if let Ok(Some((body, _))) = read_framed_body(tcp, buf, head).await {
        let text = String::from_utf8_lossy(&body).into_owned();
        printer.record(
            Side::Server,
            "the response body",
            body.len(),
            &[Note::new("body", text, why)],
        );
    }
}

/// Writes a request head and prints it, annotated; returns its length.
pub(super) async fn send_head(
    tcp: &mut TcpStream,
    head: &[u8],
    what: &str,
    printer: &mut Printer,
) -> anyhow::Result<usize> {
    tcp.write_all(head).await.context("sending the request")?;
    let (note, _) = annotate_http_head(head).context("a request head we built")?;
    printer.record(Side::Client, what, head.len(), std::slice::from_ref(&note));
    Ok(head.len())
}

/// A response head: parsed, and annotated for the reader.
#[derive(Debug)]
pub(super) struct Answer {
    /// The parse: status, headers, framing, length.
    pub(super) head: ResponseHead,
    /// The annotation that was printed; its value is the status line.
    pub(super) note: Note,
}

impl Answer {
    /// The status line, for messages.
    pub(super) fn status_line(&self) -> &str {
        &self.note.value
    }
}

/// What reading a response head came to.
#[derive(Debug)]
pub(super) enum HeadRead {
    /// The head; `buf` now starts after it.
    Head(Box<Answer>),
    /// The run was stopped (`--duration`, Ctrl-C) first.
    Stopped,
}

/// Reads until `buf` holds a whole response head, prints it and takes it out of `buf`; what
/// follows the head stays in `buf`.
pub(super) async fn read_head(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    stop: &StopWhen,
    what: &str,
    printer: &mut Printer,
) -> anyhow::Result<HeadRead> {
    loop {
        if let Some(head) = ResponseHead::parse(buf)? {
            let (note, _) = annotate_http_head(&buf[..head.len])
                .context("a response head httparse reads but the annotator does not")?;
            printer.record(Side::Server, what, head.len, std::slice::from_ref(&note));
            buf.drain(..head.len);
            return Ok(HeadRead::Head(Box::new(Answer { head, note })));
        }
        tokio::select! {
            _ = stop.reached() => return Ok(HeadRead::Stopped),
            read = tcp.read_buf(buf) => {
                if read.context("reading the response")? == 0 {
                    bail!("the server closed the connection before its response head was complete");
                }
            }
        }
    }
}

/// Reads the body after a head whose framing is known (`content-length` or chunked) — for
/// error answers, poll responses and `/wt/cert-hash`. Returns the body and how many bytes of
/// chunk framing came around it; `None` for a body that lasts until the connection closes.
pub(super) async fn read_framed_body(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: &ResponseHead,
) -> anyhow::Result<Option<(Vec<u8>, usize)>> {
    match head.framing() {
        BodyFraming::Empty => Ok(Some((Vec::new(), 0))),
        BodyFraming::Length(len) => {
            let len = usize::try_from(len).context("a Content-Length over the address space")?;
            Ok(Some((read_body(tcp, buf, len).await?, 0)))
        }
        BodyFraming::Chunked => {
            let mut body = Vec::new();
            let mut framing = 0;
            let mut decoder = ChunkedDecoder::default();
            let read = async {
                loop {
                    let before = body.len();
                    let used = decoder.feed(buf, &mut body)?;
                    framing += used - (body.len() - before);
                    buf.drain(..used);
                    if decoder.is_done() {
                        return Ok(());
                    }
                    if tcp.read_buf(buf).await.context("reading the body")? == 0 {
                        bail!("the connection ended inside a chunked body");
                    }
                }
            };
            tokio::time::timeout(BODY_TIMEOUT, read)
                .await
                .with_context(|| format!("no complete chunked body within {BODY_TIMEOUT:?}"))??;
            Ok(Some((body, framing)))
        }
        BodyFraming::UntilClose => Ok(None),
    }
}

/// Reads a `Content-Length` body after a head.
async fn read_body(tcp: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> anyhow::Result<Vec<u8>> {
    let read = async {
        while buf.len() < len {
            if tcp.read_buf(buf).await.context("reading the body")? == 0 {
                bail!(
                    "the connection ended {} bytes into a {len}-byte body",
                    buf.len()
                );
            }
        }
        Ok(())
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .with_context(|| format!("no {len}-byte body within {BODY_TIMEOUT:?}"))??;
    Ok(buf.drain(..len).collect())
}
