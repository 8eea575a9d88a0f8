//! The lean HTTP/1.1 path: the gateway's long-lived `GET`s (an SSE stream, a long-poll wait)
//! served without hyper's per-connection buffers.
//!
//! Why by hand: while a response streams, hyper's HTTP/1 connection keeps an 8 KiB read buffer
//! (it reads on, to see the client leave) and an 8 KiB buffer for response heads, and neither
//! can be made smaller. An SSE subscriber or a long-poll waiter is idle nearly all its life
//! and a gateway holds tens of thousands of them, so those 16 KiB were most of what each one
//! cost (`docs/PERFORMANCE.md`). Here a request head is read into a buffer that grows only as
//! far as the head does and is freed while the response streams; the client's leaving is seen
//! through reads into a small buffer on the stack.
//!
//! The path is deliberately narrow. It serves `GET` requests in HTTP/1.1, without a body or
//! an upgrade, to a route [`App::long_lived_get`] names. The first request of any other kind
//! (a publish, a WebSocket upgrade, the lab page, HTTP/2's preface, HTTP/1.0, a head that does
//! not parse or is long) hands the connection, with the bytes read so far, to hyper for the
//! rest of its life, and hyper answers it, errors included, as if it had had the connection
//! from the start; a head handed over unfinished keeps the deadline it had here (one
//! `server.header_read_timeout` for the whole head). An HTTP/1.1 head
//! without exactly one `Host` is hyper's too, whose path answers it `400` `bad_host`. Heads
//! are parsed by httparse, hyper's own parser.
//!
//! A response is framed by `content-length` when its size is known (a long-poll batch), else
//! chunked (an SSE stream). Frames the body has ready together go out in one vectored write,
//! as one chunk: the bytes of an event, encoded once, are shared with every subscriber and
//! never copied here.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::app::App;
use crate::http::Body;
use crate::limits;
use streamgate_core::{header_has_token, BoxError, ConnectionInfo, ConnectionLease};

/// The longest head served here; a longer one goes to hyper (which takes up to 64 KiB).
pub const LEAN_HEAD_LIMIT: usize = 8 * 1024;

/// Headers parsed per request; a request with more goes to hyper.
const MAX_HEADERS: usize = 48;

/// What the bytes at the start of a connection's buffer are.
#[derive(Debug)]
pub enum Head {
    /// Not a whole head yet.
    Partial,
    /// A request served here: `len` bytes of head, nothing else (no body).
    Lean {
        /// The request, without a body.
        request: Box<Request<()>>,
        /// The head's length in bytes.
        len: usize,
        /// Whether the connection stays open after the response (no `Connection: close`).
        keep_alive: bool,
    },
    /// Anything else: hyper's to serve.
    Other,
}

/// Parses the request head at the start of `bytes`; `lean_route` says whether a path is one
/// of the long-lived `GET` routes.
pub fn parse_head(bytes: &[u8], lean_route: impl Fn(&str) -> bool) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() < LEAN_HEAD_LIMIT => return Head::Partial,
        Ok(httparse::Status::Partial) | Err(_) => return Head::Other,
    };
    if len > LEAN_HEAD_LIMIT || parsed.version != Some(1) || parsed.method != Some("GET") {
        return Head::Other;
    }
    let Some(target) = parsed.path.filter(|p| p.starts_with('/')) else {
        return Head::Other;
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if !lean_route(path) {
        return Head::Other;
    }
    let Ok(uri) = target.parse::<Uri>() else {
        return Head::Other;
    };
    let mut request = Request::new(());
    *request.headers_mut() = http::HeaderMap::with_capacity(parsed.headers.len());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    for header in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(header.value),
        ) else {
            return Head::Other;
        };
        let bodiless = name != TRANSFER_ENCODING
            && name != UPGRADE
            && name != EXPECT
            && (name != CONTENT_LENGTH || value.as_bytes() == b"0");
        if !bodiless {
            return Head::Other;
        }
        request.headers_mut().append(name, value);
    }
    // RFC 9112 §3.2: none, or several, is a 400, which hyper's path gives (with its reason).
    if request.headers().get_all(HOST).iter().count() != 1 {
        return Head::Other;
    }
    let keep_alive = !header_has_token(request.headers(), CONNECTION, "close");
    Head::Lean {
        request: Box::new(request),
        len,
        keep_alive,
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `content-length` is in the response's own headers.
    Declared,
    /// `content-length: n`, added here.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// No body at all (`204`, `304`).
    Bodiless,
}

impl Framing {
    /// The framing for a response with these headers and this body size.
    pub fn choose(status: StatusCode, headers: &http::HeaderMap, exact_size: Option<u64>) -> Self {
        if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Bodiless
        } else if headers.contains_key(CONTENT_LENGTH) {
            Framing::Declared
        } else if let Some(n) = exact_size {
            Framing::Length(n)
        } else {
            Framing::Chunked
        }
    }
}

/// The response head: status line, the response's headers, and the ones this path adds
/// (`date` unless present, the framing, `connection: close` when the connection ends).
pub fn encode_head(
    parts: &http::response::Parts,
    framing: Framing,
    keep_alive: bool,
    date: &str,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    head.extend_from_slice(b"\r\n");
    let mut line = |name: &[u8], value: &[u8]| {
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    };
    for (name, value) in &parts.headers {
        // The connection's framing is this path's to say.
        if name == TRANSFER_ENCODING || name == CONNECTION {
            continue;
        }
        line(name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(DATE) {
        line(b"date", date.as_bytes());
    }
    match framing {
        Framing::Length(n) => line(b"content-length", n.to_string().as_bytes()),
        Framing::Chunked => line(b"transfer-encoding", b"chunked"),
        Framing::Declared | Framing::Bodiless => {}
    }
    if !keep_alive {
        line(b"connection", b"close");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The line that opens a chunk of `len` bytes.
fn chunk_size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// How reading the next request head ended.
enum NextRequest {
    /// A head (or what hyper is to serve), and the time by which the whole head must be in.
    Head(Head, Instant),
    /// The client closed, stayed idle too long, or the gateway is shutting down.
    Closed,
}

/// Serves HTTP/1.1 on `io` until the connection ends, handing it to hyper at the first
/// request this path does not serve (see the module documentation).
pub(crate) async fn serve<I>(
    app: &Arc<App>,
    builder: &auto::Builder<TokioExecutor>,
    mut io: I,
    info: ConnectionInfo,
    lease: &ConnectionLease,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Bytes read and not yet served: at most one head (and whatever a client pipelined).
    let mut pending = Vec::new();
    let mut first = true;
    loop {
        // Each phase boxed, and every binding scoped to the phase that uses it: the
        // connection's task keeps only what the present phase needs (a long-poll waiter
        // holds neither the head reader, nor the request, nor the response writer).
        let (mut handling, keep_alive) =
            match Box::pin(read_head(app, &mut io, &mut pending, first)).await? {
                NextRequest::Closed => return Ok(()),
                NextRequest::Head(
                    Head::Lean {
                        request,
                        len,
                        keep_alive,
                    },
                    _,
                ) => {
                    pending.drain(..len);
                    if pending.is_empty() {
                        // Its capacity is freed for as long as the response lasts.
                        pending = Vec::new();
                    }
                    let mut request = (*request).map(|()| Body::default());
                    request.extensions_mut().insert(info);
                    request.extensions_mut().insert(lease.clone());
                    (Arc::clone(app).handle(request), keep_alive)
                }
                NextRequest::Head(Head::Partial | Head::Other, head_deadline) => {
                    // hyper's header timer starts afresh: the head begun here keeps its own.
                    let io = Rewind::with_head_deadline(Bytes::from(pending), io, head_deadline);
                    return Box::pin(crate::hyper_conn::serve_http(
                        app,
                        builder,
                        io,
                        info,
                        lease,
                        crate::Listener::Public,
                    ))
                    .await;
                }
            };
        first = false;
        // hyper likewise gives up on a request whose client has gone: a long-poll wait ends
        // when its client does.
        let response = poll_fn(|cx| {
            if let Poll::Ready(response) = handling.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            poll_client_gone(&mut io, cx, &mut pending).map(|()| None)
        })
        .await;
        let (responding, keep_alive) = match response {
            Some(response) => {
                drop(handling);
                let keep_alive = keep_alive && !app.shutdown.is_cancelled();
                (
                    Box::pin(respond(
                        &mut io,
                        response,
                        keep_alive,
                        &mut pending,
                        app.config.server.write_timeout,
                    )),
                    keep_alive,
                )
            }
            None => return Ok(()),
        };
        if !responding.await? {
            return Ok(());
        }
        if !keep_alive || app.shutdown.is_cancelled() {
            let _ = io.shutdown().await;
            return Ok(());
        }
    }
}

/// Reads until `pending` starts with a whole request head (or with something hyper is to
/// serve). The first head must come within `server.header_read_timeout`; a connection
/// waiting for its next request is closed after `server.idle_timeout` or the header timeout,
/// whichever is shorter, as hyper closes it, and a head once begun has the header timeout
/// from its first byte.
async fn read_head<I>(
    app: &App,
    io: &mut I,
    pending: &mut Vec<u8>,
    first: bool,
) -> std::io::Result<NextRequest>
where
    I: AsyncRead + Unpin,
{
    let header_timeout = app.config.server.header_read_timeout;
    let idle_timeout = app.config.server.idle_timeout;
    let mut header_deadline = first.then(|| Instant::now() + header_timeout);
    loop {
        if !pending.is_empty() {
            let deadline = *header_deadline.get_or_insert_with(|| Instant::now() + header_timeout);
            match parse_head(pending, |path| app.long_lived_get(path)) {
                Head::Partial => {}
                head => return Ok(NextRequest::Head(head, deadline)),
            }
        }
        if pending.capacity() - pending.len() < 512 {
            pending.reserve(1024);
        }
        // Waiting for the next request: `idle_timeout`, and no longer than hyper would
        // wait (its header timer runs from the end of the previous response).
        let deadline = match header_deadline {
            Some(deadline) => Some(deadline),
            None if idle_timeout.is_zero() => Some(Instant::now() + header_timeout),
            None => Some(Instant::now() + idle_timeout.min(header_timeout)),
        };
        let timer = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            read = io.read_buf(pending) => read?,
            () = app.shutdown.cancelled() => return Ok(NextRequest::Closed),
            () = timer => {
                if header_deadline.is_some() {
                    streamgate_core::record_rejection(
                        limits::HEADER_TIMEOUT,
                        "request head not complete within server.header_read_timeout",
                    );
                } else {
                    tracing::debug!(?idle_timeout, "closing the idle connection");
                }
                return Ok(NextRequest::Closed);
            }
        };
        if read == 0 {
            return Ok(NextRequest::Closed);
        }
    }
}

/// Reads what the client sends while its request is served: bytes (a pipelined request) are
/// kept in `pending`; ready once the client has closed its side or the connection failed.
fn poll_client_gone<I>(io: &mut I, cx: &mut Context<'_>, pending: &mut Vec<u8>) -> Poll<()>
where
    I: AsyncRead + Unpin,
{
    loop {
        if pending.len() >= LEAN_HEAD_LIMIT {
            // Enough is waiting; reading on would only buffer more.
            return Poll::Pending;
        }
        let mut chunk = [0u8; 256];
        let mut buffer = ReadBuf::new(&mut chunk);
        match Pin::new(&mut *io).poll_read(cx, &mut buffer) {
            Poll::Ready(Ok(())) if buffer.filled().is_empty() => return Poll::Ready(()),
            Poll::Ready(Ok(())) => pending.extend_from_slice(buffer.filled()),
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// Queued bytes past which the body is not polled until some are written: a subscriber that
/// stops reading holds back its own subscription (whose lag policy then applies), never the
/// gateway's memory.
const MAX_QUEUED_BYTES: usize = 64 * 1024;

/// Frames gathered into one write at most.
const MAX_GATHERED_FRAMES: usize = 32;

/// Writes `response`; `Ok(false)` when the client left before it was over, or stopped
/// reading: its writes made no progress for `write_timeout` (unless zero).
async fn respond<I>(
    io: &mut I,
    response: Response<Body>,
    keep_alive: bool,
    pending: &mut Vec<u8>,
    write_timeout: Duration,
) -> std::io::Result<bool>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, mut body) = response.into_parts();
    let framing = Framing::choose(parts.status, &parts.headers, body.size_hint().exact());
    let date = httpdate::fmt_http_date(SystemTime::now());
    let mut queue = VecDeque::with_capacity(4);
    queue.push_back(Bytes::from(encode_head(&parts, framing, keep_alive, &date)));
    let chunked = framing == Framing::Chunked;
    let mut ended = framing == Framing::Bodiless;
    let mut flushed = false;
    let mut gathered = Vec::new();
    // Running while the socket takes nothing more; a write that makes progress stops it.
    let mut stalled: Option<Pin<Box<tokio::time::Sleep>>> = None;
    poll_fn(|cx| loop {
        if poll_client_gone(io, cx, pending).is_ready() {
            return Poll::Ready(Ok(false));
        }
        let mut gathered_now = false;
        let queued: usize = queue.iter().map(Bytes::len).sum();
        if !ended && queued < MAX_QUEUED_BYTES {
            let mut size = 0;
            while gathered.len() < MAX_GATHERED_FRAMES && size < MAX_QUEUED_BYTES {
                match Pin::new(&mut body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            if !data.is_empty() {
                                size += data.len();
                                gathered.push(data);
                            }
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // Cut short: for a chunked body, the missing last chunk tells the
                        // client the response is incomplete.
                        tracing::debug!(error = %e, "response body failed");
                        return Poll::Ready(Ok(false));
                    }
                    Poll::Ready(None) => {
                        ended = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if !gathered.is_empty() {
                gathered_now = true;
                if chunked {
                    queue.push_back(chunk_size_line(size));
                }
                queue.extend(gathered.drain(..));
                if chunked {
                    queue.push_back(Bytes::from_static(b"\r\n"));
                }
            }
            if ended && chunked {
                queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
            }
        }
        if !queue.is_empty() {
            let before: usize = queue.iter().map(Bytes::len).sum();
            match poll_write_queue(io, cx, &mut queue) {
                Poll::Ready(Ok(())) => {
                    flushed = false;
                    stalled = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if queue.iter().map(Bytes::len).sum::<usize>() < before {
                        stalled = None;
                    }
                    if !write_timeout.is_zero() {
                        let timer = stalled
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(write_timeout)));
                        if timer.as_mut().poll(cx).is_ready() {
                            // It resumes from its last id when it reads again.
                            tracing::info!("client stopped reading; closing the connection");
                            return Poll::Ready(Ok(false));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
        if !flushed {
            ready!(Pin::new(&mut *io).poll_flush(cx))?;
            flushed = true;
        }
        if ended {
            return Poll::Ready(Ok(true));
        }
        if !gathered_now {
            // Waiting for the body and the client, both of which have the waker.
            return Poll::Pending;
        }
    })
    .await
}

/// Writes the queue out, in vectored writes.
fn poll_write_queue<I>(
    io: &mut I,
    cx: &mut Context<'_>,
    queue: &mut VecDeque<Bytes>,
) -> Poll<std::io::Result<()>>
where
    I: AsyncWrite + Unpin,
{
    while !queue.is_empty() {
        let mut slices = [IoSlice::new(&[]); 64];
        let count = queue
            .iter()
            .zip(slices.iter_mut())
            .map(|(bytes, slice)| *slice = IoSlice::new(bytes))
            .count();
        let mut written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
        if written == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        while written > 0 {
            let front = queue.front_mut().expect("written bytes were queued");
            if written >= front.len() {
                written -= front.len();
                queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    Poll::Ready(Ok(()))
}

/// A connection whose first bytes were already read: they are read again before the rest.
///
/// Why by hand: hyper-util has one (`Rewind`) but keeps it private, and tokio's `chain` reads
/// but does not write.
///
/// It can also hold the deadline of a request head begun on the lean path and handed to
/// hyper unfinished: hyper's header timer would start afresh, so until the end of that head
/// has been read, reads past the deadline fail (the connection ends, counted as
/// `header_timeout`). The whole head then has one `server.header_read_timeout`.
pub(crate) struct Rewind<I> {
    prefix: Bytes,
    io: I,
    /// Armed until the end of the first head has gone by.
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    head_end: HeadEnd,
}

impl<I> Rewind<I> {
    #[cfg(test)]
    pub(crate) fn new(prefix: Bytes, io: I) -> Self {
        Self {
            prefix,
            io,
            head_deadline: None,
            head_end: HeadEnd::default(),
        }
    }

    /// `prefix`, then `io`; the head they start must be over by `deadline`.
    pub(crate) fn with_head_deadline(prefix: Bytes, io: I, deadline: Instant) -> Self {
        let mut head_end = HeadEnd::default();
        let head_deadline =
            (!head_end.feed(&prefix)).then(|| Box::pin(tokio::time::sleep_until(deadline)));
        Self {
            prefix,
            io,
            head_deadline,
            head_end,
        }
    }
}

/// Finds the blank line that ends a request head in bytes seen a piece at a time (`\r\n\r\n`,
/// or the bare `\n\n` that parsers also accept).
#[derive(Debug, Default, Clone, Copy)]
struct HeadEnd {
    /// Line ends seen in a row: 0 (inside a line), 1 (after `\n`), 2 (after `\n\r`).
    state: u8,
}

impl HeadEnd {
    /// Takes the next bytes; true once the end of the head is among the bytes seen.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            self.state = match (self.state, byte) {
                (1 | 2, b'\n') => return true,
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        false
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Frees the buffer the prefix was read into: the connection may live for hours
                // (an upgraded WebSocket).
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let this = &mut *self;
        let Some(deadline) = &mut this.head_deadline else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        let before = buf.filled().len();
        if let Poll::Ready(read) = Pin::new(&mut this.io).poll_read(cx, buf) {
            if this.head_end.feed(&buf.filled()[before..]) {
                this.head_deadline = None;
            }
            return Poll::Ready(read);
        }
        ready!(deadline.as_mut().poll(cx));
        streamgate_core::record_rejection(
            limits::HEADER_TIMEOUT,
            "request head not complete within server.header_read_timeout",
        );
        Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn lean_routes(path: &str) -> bool {
        path == "/sse" || path == "/poll"
    }

    fn parse(bytes: &[u8]) -> Head {
        parse_head(bytes, lean_routes)
    }

    #[test]
    fn a_long_lived_get_is_served_here_with_its_headers() {
        let bytes = b"GET /sse?topics=a,b HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1-5\r\n\r\nGET";
        let Head::Lean {
            request,
            len,
            keep_alive,
        } = parse(bytes)
        else {
            panic!("lean");
        };
        assert_eq!(
            len,
            bytes.len() - 3,
            "the pipelined bytes are not the head's"
        );
        assert!(keep_alive);
        assert_eq!(request.uri().path(), "/sse");
        assert_eq!(request.uri().query(), Some("topics=a,b"));
        assert_eq!(request.headers()["last-event-id"], "1-5");
        assert_eq!(request.headers()["host"], "x");
    }

    #[test]
    fn an_incomplete_head_waits_for_more_until_the_limit() {
        assert!(matches!(
            parse(b"GET /poll?topics=a HTTP/1.1\r\nHo"),
            Head::Partial
        ));
        assert!(matches!(parse(b"G"), Head::Partial));
        let mut long = b"GET /poll HTTP/1.1\r\nx-long: ".to_vec();
        long.resize(LEAN_HEAD_LIMIT + 1, b'a');
        assert!(matches!(parse(&long), Head::Other));
    }

    #[test]
    fn everything_else_is_hyper_s() {
        assert_left_to_hyper(&[
            &b"POST /poll HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"[..],
            b"GET /ws HTTP/1.1\r\n\r\n",
            b"GET /lab HTTP/1.1\r\n\r\n",
            b"GET /sse HTTP/1.0\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"GET /sse HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET /sse HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
            b"GET /sse HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            b"GET http://example.com/sse HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nbad header\r\n\r\n",
            b"\x16\x03\x01\x02\x00",
        ]);
        let zero_length = b"GET /sse HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(parse(zero_length), Head::Lean { .. }));
    }

    #[test]
    fn no_host_or_two_is_left_to_hyper_s_400() {
        assert_left_to_hyper(&[
            &b"GET /sse HTTP/1.1\r\n\r\n"[..],
            b"GET /sse HTTP/1.1\r\nhost: a\r\nHost: b\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nhost: a\r\nhost: a\r\n\r\n",
        ]);
    }

    /// Asserts the lean path takes none of `heads`.
    fn assert_left_to_hyper(heads: &[&[u8]]) {
        for head in heads {
            assert!(
                matches!(parse(head), Head::Other),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let head = b"GET / HTTP/1.1\r\nhost: x\r\n\r\nbody";
        for split in 0..head.len() {
            let mut end = HeadEnd::default();
            let found = end.feed(&head[..split]) || end.feed(&head[split..]);
            assert!(found, "split at {split}");
        }
        let mut end = HeadEnd::default();
        assert!(!end.feed(b"GET / HTTP/1.1\r\nhost: x\r\n"));
        assert!(!end.feed(b"x-a: \r\r\n"));
        assert!(end.feed(b"\n"), "a bare LF ends it too");
        let mut end = HeadEnd::default();
        assert!(!end.feed(b"GET / HTTP/1.1\n\rx: y\r\n"), "\\n\\r then text");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_handed_over_unfinished_keeps_its_deadline() {
        let (client, server) = tokio::io::duplex(1024);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(10);
        let mut rewound =
            Rewind::with_head_deadline(Bytes::from_static(b"GET / HTTP/1.1\r\n"), server, deadline);
        let (_client_read, mut client_write) = tokio::io::split(client);
        let mut chunk = [0u8; 64];
        assert_eq!(
            rewound.read(&mut chunk).await.unwrap(),
            16,
            "the prefix first"
        );
        tokio::time::advance(Duration::from_secs(8)).await;
        client_write.write_all(b"x-a: b\r\n").await.unwrap();
        assert_eq!(rewound.read(&mut chunk).await.unwrap(), 8);
        let error = rewound.read(&mut chunk).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(
            Instant::now(),
            deadline,
            "at the deadline of the head's first byte"
        );

        // Once the head is over, the deadline is gone.
        let (client, server) = tokio::io::duplex(1024);
        let mut rewound = Rewind::with_head_deadline(
            Bytes::from_static(b"POST / HTTP/1.1\r\n"),
            server,
            Instant::now() + Duration::from_secs(1),
        );
        let (_client_read, mut client_write) = tokio::io::split(client);
        assert_eq!(rewound.read(&mut chunk).await.unwrap(), 17);
        client_write.write_all(b"host: x\r\n\r\n").await.unwrap();
        assert_eq!(rewound.read(&mut chunk).await.unwrap(), 11);
        tokio::time::advance(Duration::from_secs(5)).await;
        client_write.write_all(b"{}").await.unwrap();
        assert_eq!(
            rewound.read(&mut chunk).await.unwrap(),
            2,
            "a slow body is not a head"
        );
    }

    #[test]
    fn connection_close_is_honoured() {
        let head = b"GET /poll HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n";
        assert!(matches!(
            parse(head),
            Head::Lean {
                keep_alive: false,
                ..
            }
        ));
    }

    fn parts(
        status: StatusCode,
        headers: &[(&'static str, &'static str)],
    ) -> http::response::Parts {
        let mut response = Response::new(());
        *response.status_mut() = status;
        for (name, value) in headers {
            response
                .headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        response.into_parts().0
    }

    #[test]
    fn the_head_says_status_headers_date_and_framing() {
        let streaming = parts(StatusCode::OK, &[("content-type", "text/event-stream")]);
        let framing = Framing::choose(streaming.status, &streaming.headers, None);
        assert_eq!(framing, Framing::Chunked);
        let head = encode_head(&streaming, framing, true, "Fri, 27 Nov 2026 17:00:00 GMT");
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
             date: Fri, 27 Nov 2026 17:00:00 GMT\r\ntransfer-encoding: chunked\r\n\r\n"
        );

        let batch = parts(StatusCode::BAD_REQUEST, &[]);
        let framing = Framing::choose(batch.status, &batch.headers, Some(17));
        assert_eq!(framing, Framing::Length(17));
        let head = String::from_utf8(encode_head(&batch, framing, false, "d")).unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 400 Bad Request\r\ndate: d\r\ncontent-length: 17\r\nconnection: close\r\n\r\n"
        );

        let declared = parts(StatusCode::OK, &[("content-length", "5"), ("date", "x")]);
        let framing = Framing::choose(declared.status, &declared.headers, Some(5));
        assert_eq!(framing, Framing::Declared);
        let head = String::from_utf8(encode_head(&declared, framing, true, "d")).unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: x\r\n\r\n"
        );

        let empty = parts(StatusCode::NO_CONTENT, &[]);
        assert_eq!(
            Framing::choose(empty.status, &empty.headers, Some(0)),
            Framing::Bodiless
        );
    }

    #[tokio::test]
    async fn rewind_reads_the_prefix_first_then_the_connection() {
        let (client, server) = tokio::io::duplex(64);
        let mut rewound = Rewind::new(Bytes::from_static(b"GET / HTTP/1.1\r\n"), server);
        let (_, mut client_write) = tokio::io::split(client);
        client_write.write_all(b"host: x\r\n\r\n").await.unwrap();
        drop(client_write);
        let mut all = Vec::new();
        let mut chunk = [0u8; 7];
        while all.len() < 27 {
            let n = rewound.read(&mut chunk).await.unwrap();
            all.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(all, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    }

    const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_cut_after_the_write_timeout() {
        // A pipe of 1 KiB the client never reads, and a stream that never ends.
        let (_client, mut server) = tokio::io::duplex(1024);
        let frames = futures_util::stream::repeat_with(|| {
            Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(vec![b'x'; 512])))
        });
        let response = Response::new(http_body_util::StreamBody::new(frames).boxed());
        let mut pending = Vec::new();
        let started = tokio::time::Instant::now();
        let completed = respond(&mut server, response, true, &mut pending, WRITE_TIMEOUT)
            .await
            .unwrap();
        assert!(!completed, "cut, not completed");
        assert_eq!(started.elapsed(), WRITE_TIMEOUT);
    }

    #[tokio::test]
    async fn a_streamed_body_goes_out_in_chunks_and_ends_with_the_last_chunk() {
        let (client, mut server) = tokio::io::duplex(4096);
        let frames = futures_util::stream::iter([
            Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(b"data: a\n\n"))),
            Ok(http_body::Frame::data(Bytes::from_static(b"data: b\n\n"))),
        ]);
        let body = http_body_util::StreamBody::new(frames).boxed();
        let response = Response::new(body);
        let mut pending = Vec::new();
        let (mut client_read, _client_write) = tokio::io::split(client);
        let completed = respond(&mut server, response, true, &mut pending, WRITE_TIMEOUT)
            .await
            .unwrap();
        assert!(completed);
        drop(server);
        let mut wire = String::new();
        client_read.read_to_string(&mut wire).await.unwrap();
        let (head, body) = wire.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        // Both frames were ready together: one chunk.
        assert_eq!(body, "12\r\ndata: a\n\ndata: b\n\n\r\n0\r\n\r\n");
    }
}
