//! HTTP/1.1 message heads (RFC 9112 §2–§5) and chunked bodies (RFC 9112 §7.1): the text
//! every transport but WebTransport starts with. WebSocket upgrades out of it, SSE and long
//! polling stay in it.

use super::ws::explain_accept;
use super::{payload_preview, plural, quoted, unquoted, Note};

/// One HTTP/1.1 message head (request or response) at the start of `data`: the start line
/// with its parts, then each header with what it does here. For a WebSocket upgrade request
/// the head also carries [`explain_accept`] of its key: the answer the server must give. A
/// response carries only that answer; check it with `explain_accept` of the request's key.
///
/// Returns the note and the bytes the head takes (through the blank line that ends it), or
/// `None` while that blank line has not arrived.
pub fn annotate_http_head(data: &[u8]) -> Option<(Note, usize)> {
    let lines = head_lines(data)?;
    let consumed = lines.last().map_or(0, |line| line.end);
    let mut lines = lines.into_iter();
    let start_line = lines.next()?;
    let start_text = String::from_utf8_lossy(&data[start_line.start..start_line.text_end]);
    let response = start_text.starts_with("HTTP/");

    let mut children = Vec::new();
    let mut headers = Vec::new();
    if start_line.text_end == start_line.start {
        children.push(
            Note::violation(
                "empty start line",
                "A message begins with a request line or a status line, not an empty line (RFC 9112 §2.2).",
            )
            .at(start_line.start, start_line.end),
        );
    } else if response {
        children.push(status_line(&start_text, &start_line));
    } else {
        children.push(request_line(&start_text, &start_line));
    }
    for line in lines {
        if line.text_end == line.start {
            children.push(
                Note::new(
                    "end of head",
                    "CRLF",
                    "An empty line ends the head: what follows is the body (or, after a 101, the new protocol) (RFC 9112 §2.1).",
                )
                .at(line.start, line.end),
            );
            break;
        }
        let text = String::from_utf8_lossy(&data[line.start..line.text_end]);
        if text.starts_with([' ', '\t']) {
            children.push(
                Note::violation(
                    "obsolete line folding",
                    "A header line that starts with whitespace continues the previous one; RFC 9112 §5.2 forbids sending it and lets a server reject the message.",
                )
                .at(line.start, line.end),
            );
            continue;
        }
        let Some((name, value)) = text.split_once(':') else {
            children.push(
                Note::violation(
                    format!("header line without a colon: {}", quoted(&text)),
                    "Every header is name: value (RFC 9112 §5).",
                )
                .at(line.start, line.end),
            );
            continue;
        };
        let value = value.trim_matches([' ', '\t']);
        let mut note = header_note(name, value, response).at(line.start, line.end);
        if name.ends_with([' ', '\t']) {
            note.children.push(Note::violation(
                "whitespace before the colon",
                "RFC 9112 §5.1: no whitespace is allowed between a header name and the colon; a server must reject such a request with 400.",
            ));
        }
        headers.push((name.trim().to_ascii_lowercase(), value.to_owned()));
        children.push(note);
    }

    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, value)| value.as_str())
    };
    let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !response && upgrade {
        if let Some(key) = header("sec-websocket-key") {
            // Named for what it is here: not a header of this request, but the answer it
            // calls for.
            let mut expected = explain_accept(key);
            expected.label = format!("expected {}", expected.label);
            children.push(expected);
        }
    }
    let explain = if response {
        response_explain(
            &start_text,
            header("content-type"),
            header("transfer-encoding"),
        )
    } else {
        request_explain(&start_text, upgrade)
    };
    let note = Note::new(
        if response {
            "HTTP response"
        } else {
            "HTTP request"
        },
        start_text.into_owned(),
        explain,
    )
    .at(0, consumed)
    .with(children);
    Some((note, consumed))
}

/// One line of a head: where it starts, where its text ends (before CR LF) and where the
/// next line starts.
struct Line {
    start: usize,
    text_end: usize,
    end: usize,
}

/// The lines of the head at the start of `data`, through the empty line; `None` until that
/// line is there. Bare LF is accepted as a line end, as RFC 9112 §2.2 allows a recipient to.
fn head_lines(data: &[u8]) -> Option<Vec<Line>> {
    let mut lines = Vec::new();
    let mut at = 0;
    loop {
        let newline = at + data.get(at..)?.iter().position(|&b| b == b'\n')?;
        let text_end = if newline > at && data[newline - 1] == b'\r' {
            newline - 1
        } else {
            newline
        };
        let empty = text_end == at;
        lines.push(Line {
            start: at,
            text_end,
            end: newline + 1,
        });
        at = newline + 1;
        if empty && lines.len() > 1 {
            return Some(lines);
        }
        if empty {
            // An empty first line is its own (malformed) head; reporting it keeps a caller
            // that loops on heads moving forward.
            return Some(lines);
        }
    }
}

fn request_line(text: &str, line: &Line) -> Note {
    let mut parts = text.splitn(3, ' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let method_explain = match method {
        "GET" => "Fetch a resource. A WebSocket handshake, an SSE stream and a long poll all start as a plain GET.",
        "POST" => "Send a body to the resource: here, publishing an event.",
        "HEAD" => "Like GET, but the answer has no body.",
        _ => "The method: what the client asks the server to do (RFC 9110 §9).",
    };
    let mut notes = vec![
        Note::new("method", method, method_explain),
        target_note(target),
        Note::new(
            "version",
            version,
            "The protocol version: HTTP/1.1 keeps the connection open for more requests unless one side says Connection: close (RFC 9112 §9.3).",
        ),
    ];
    if version.is_empty() || target.is_empty() {
        notes.push(Note::violation(
            "malformed request line",
            "A request line is method SP request-target SP HTTP-version (RFC 9112 §3).",
        ));
    }
    Note::new(
        "request line",
        text,
        "Method, target and version, separated by single spaces (RFC 9112 §3).",
    )
    .at(line.start, line.end)
    .with(notes)
}

/// The request target, with streamgate's query parameters explained.
fn target_note(target: &str) -> Note {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let explain = match path {
        "/ws" => "streamgate's WebSocket endpoint: events out, subscribe/unsubscribe/publish in.",
        "/ws/echo" => "The WebSocket echo endpoint: every message comes back.",
        "/sse" => "streamgate's Server-Sent Events endpoint: one response that never ends.",
        "/poll" => "streamgate's long-polling endpoint: held until something arrives or the timeout passes.",
        "/wt/cert-hash" => "The WebTransport certificate's SHA-256 and session URL, for serverCertificateHashes.",
        "/healthz" => "The gateway's health.",
        "/topics" => "Every topic's history window and subscribers.",
        p if p.starts_with("/publish/") => "Publish the body as one event of the topic named in the path.",
        _ => "The path and query of the resource asked for.",
    };
    let mut note = Note::new("request target", target, explain);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let explain = match name {
            "topics" => "The topics to subscribe to, comma-separated (the comma may be sent as %2C).",
            "since" => "Resume: deliver what came after this id (docs/PROTOCOL.md §4).",
            "cursor" => "Where the last poll ended: the answer starts after this id.",
            "timeout" => "How many seconds the server may hold the poll when nothing is ready (default 25, at most 60).",
            "mode" => "WebTransport delivery: stream, stream-per-event or datagram.",
            "envelope" => "envelope=binary asks for binary envelopes (docs/PROTOCOL.md §3.3).",
            "content_type" => "How to read the published body: text, json or binary.",
            _ => "A query parameter streamgate does not use.",
        };
        let explain = if value.starts_with(MASKED_MARK) {
            MASKED_EXPLAIN
        } else {
            explain
        };
        note.children
            .push(Note::new(format!("?{name}"), value, explain));
    }
    note
}

fn status_line(text: &str, line: &Line) -> Note {
    let mut parts = text.splitn(3, ' ');
    let (version, code, reason) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let code_explain = match code {
        "101" => "Switching Protocols: after this head the connection speaks the protocol named in Upgrade (RFC 9110 §15.2.2).",
        "200" => "OK: the body follows.",
        "204" => "No Content: nothing follows.",
        "400" => "Bad Request: the body says what was wrong (docs/PROTOCOL.md §6).",
        "403" => "Forbidden: for a WebSocket, an Origin outside the allow-list.",
        "404" => "Not Found: no such route.",
        "405" => "Method Not Allowed: the Allow header lists the methods that are.",
        "426" => "Upgrade Required: the WebSocket version is not 13; Sec-WebSocket-Version says which is.",
        "429" => "Too Many Requests: a limit was reached.",
        "503" => "Service Unavailable: the gateway is stopping or its bus is down.",
        _ => "The status code: 1xx informational, 2xx success, 3xx redirect, 4xx client error, 5xx server error (RFC 9110 §15).",
    };
    let mut notes = vec![
        Note::new("version", version, "The version the server speaks."),
        Note::new("status code", code, code_explain),
        Note::new(
            "reason phrase",
            reason,
            "Text for humans; clients ignore it (RFC 9112 §4).",
        ),
    ];
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        notes.push(Note::violation(
            "malformed status line",
            "A status line is HTTP-version SP 3-digit-code SP reason (RFC 9112 §4).",
        ));
    }
    Note::new(
        "status line",
        text,
        "Version, status code and reason phrase (RFC 9112 §4).",
    )
    .at(line.start, line.end)
    .with(notes)
}

fn request_explain(start: &str, upgrade: bool) -> String {
    let target = start.split(' ').nth(1).unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    if upgrade {
        return "A WebSocket opening handshake: an ordinary HTTP/1.1 GET that asks to switch the connection to WebSocket (RFC 6455 §4.1). It costs one round trip before the first frame.".to_owned();
    }
    match path {
        "/sse" => "A Server-Sent Events request: a GET whose answer is a stream of text that never ends.".to_owned(),
        "/poll" => "A long poll: the server holds this request until an event arrives or the timeout passes, then the client asks again.".to_owned(),
        _ => "An HTTP/1.1 request head: request line, headers, empty line (RFC 9112 §2.1).".to_owned(),
    }
}

fn response_explain(
    start: &str,
    content_type: Option<&str>,
    transfer_encoding: Option<&str>,
) -> String {
    let code = start.split(' ').nth(1).unwrap_or_default();
    if code == "101" {
        return "The server agrees to switch: from the byte after the empty line on, this TCP connection carries WebSocket frames, not HTTP (RFC 6455 §4.2.2).".to_owned();
    }
    let streaming = content_type.is_some_and(|c| c.starts_with("text/event-stream"));
    let chunked = transfer_encoding.is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    match (streaming, chunked) {
        (true, true) => "The head of an event stream: the body has no length and never ends, so HTTP/1.1 sends it in chunks, each as the server writes it.".to_owned(),
        (true, false) => "The head of an event stream: the body never ends.".to_owned(),
        (false, true) => "A response whose body comes in chunks, its length unknown when the head was sent (RFC 9112 §7.1).".to_owned(),
        (false, false) => "An HTTP/1.1 response head: status line, headers, empty line; Content-Length says where the body ends.".to_owned(),
    }
}

/// A header, and what it does in this exchange.
fn header_note(name: &str, value: &str, response: bool) -> Note {
    let lower = name.trim().to_ascii_lowercase();
    let explain: String = match lower.as_str() {
        "host" => "Which site the request is for; required in HTTP/1.1 (RFC 9112 §3.2).".into(),
        "upgrade" => if response {
            "The protocol the connection now speaks (RFC 9110 §7.8)."
        } else {
            "The protocol the client wants to switch to; the server answers 101 if it agrees (RFC 9110 §7.8)."
        }
        .into(),
        "connection" => {
            let v = value.to_ascii_lowercase();
            if v.contains("upgrade") {
                "Upgrade: the Upgrade header is for this hop only, and asks to switch protocols on this connection (RFC 9110 §7.6.1)."
            } else if v.contains("close") {
                "close: the connection ends after this message."
            } else {
                "Options for this connection only, not forwarded by proxies (RFC 9110 §7.6.1)."
            }
            .into()
        }
        "sec-websocket-key" => "16 random bytes in base64, new for each handshake. The server must answer base64(SHA-1(key + 258EAFA5-E914-47DA-95CA-C5AB0DC85B11)) (RFC 6455 §4.1).".into(),
        "sec-websocket-accept" => "base64(SHA-1(Sec-WebSocket-Key + 258EAFA5-E914-47DA-95CA-C5AB0DC85B11)): proof that the server read this handshake and speaks WebSocket; the client checks it against its key (RFC 6455 §4.2.2).".into(),
        "sec-websocket-version" => if response {
            "The versions the server supports, sent with a 426 when the client's is not one (RFC 6455 §4.4)."
        } else {
            "The WebSocket version: 13, the only one RFC 6455 defines (§4.1)."
        }
        .into(),
        "sec-websocket-protocol" => "Subprotocols: the client lists the ones it speaks, the server picks one (streamgate picks streamgate.v1) (RFC 6455 §4.1).".into(),
        "sec-websocket-extensions" => if response {
            "The extensions the server accepted, with their parameters: they apply to every frame from now on (RFC 6455 §9)."
        } else {
            "Extensions the client offers; the server accepts some or none (RFC 6455 §9)."
        }
        .into(),
        "origin" => "The page that opened the connection; a WebSocket server checks it against its allow-list (RFC 6455 §10.2).".into(),
        "content-type" => {
            let v = value.to_ascii_lowercase();
            if v.starts_with("text/event-stream") {
                "text/event-stream: the body is Server-Sent Events, UTF-8 text in blocks separated by blank lines."
            } else if v.starts_with("application/json") {
                "application/json: the body is JSON."
            } else {
                "The media type of the body."
            }
            .into()
        }
        "content-length" => format!("The body is exactly {value} bytes: that is how the reader knows where it ends (RFC 9112 §6.2)."),
        "transfer-encoding" => if value.to_ascii_lowercase().contains("chunked") {
            "chunked: the body comes as chunks, each preceded by its size in hex, ended by a chunk of size 0 — how HTTP/1.1 sends a body whose length is not known in advance (RFC 9112 §7.1)."
        } else {
            "How the body is encoded for transfer (RFC 9112 §6.1)."
        }
        .into(),
        "cache-control" => {
            let v = value.to_ascii_lowercase();
            if v.contains("no-store") {
                "no-store: no cache may keep this answer; each poll must reach the gateway (RFC 9111 §5.2)."
            } else if v.contains("no-cache") {
                "no-cache: a cache must not answer with a stored copy; an event stream is never the same twice (RFC 9111 §5.2)."
            } else {
                "What caches may do with this message (RFC 9111 §5.2)."
            }
            .into()
        }
        "last-event-id" => "The id of the last event the client got: the gateway resumes after it, replaying what the client missed (the browser sends it when an EventSource reconnects; docs/PROTOCOL.md §4).".into(),
        "accept" => "The media types the client wants; an EventSource sends text/event-stream.".into(),
        "x-accel-buffering" => "no: tells an nginx proxy not to buffer the response, so each event goes through at once.".into(),
        "date" => "When the server sent this response (RFC 9110 §6.6.1).".into(),
        "allow" => "The methods this resource accepts (RFC 9110 §10.2.1).".into(),
        "user-agent" => "The client software.".into(),
        "keep-alive" => "Hints for keeping the connection open between requests.".into(),
        n if n.starts_with("access-control-") => "CORS: which other origins may read this response in a browser.".into(),
        _ => "A header this lab does not describe; recipients ignore header fields they do not recognise (RFC 9110 §5.1).".into(),
    };
    let mut note = Note::new(name.trim(), value, explain);
    if lower == "sec-websocket-extensions" {
        note.children = extension_params(value);
    }
    if value.contains(MASKED_MARK) {
        note.children
            .push(Note::new("masked", "not recorded", MASKED_EXPLAIN));
    }
    note
}

/// How the gateway's lab marks a credential it left out of a recording: `[masked]` in a
/// query, `[masked, N bytes]` in a header.
const MASKED_MARK: &str = "[masked";

const MASKED_EXPLAIN: &str = "A credential (a token, a key, a cookie, a password): the gateway's lab replaced it before recording, and says how many bytes it took. What crossed the wire had the real value.";

/// `permessage-deflate; client_max_window_bits, x-webkit-deflate-frame`: each offer and
/// parameter explained.
fn extension_params(value: &str) -> Vec<Note> {
    value
        .split(',')
        .filter(|offer| !offer.trim().is_empty())
        .map(|offer| {
            let mut params = offer.split(';').map(str::trim);
            let name = params.next().unwrap_or_default();
            let explain = if name == "permessage-deflate" {
                "Compress each message with DEFLATE; a compressed message has RSV1 set on its first frame (RFC 7692)."
            } else {
                "An extension streamgate does not implement."
            };
            Note::new("extension", name, explain).with(params.map(|param| {
                let (key, arg) = param.split_once('=').unwrap_or((param, ""));
                let explain = match key.trim() {
                    "server_no_context_takeover" => "The server compresses each message on its own, forgetting the previous ones: a little less compression, no memory kept per connection (RFC 7692 §7.1.1.1).",
                    "client_no_context_takeover" => "The client compresses each message on its own (RFC 7692 §7.1.1.2).",
                    "server_max_window_bits" => "The largest LZ77 window the server may use, as a power of two (RFC 7692 §7.1.2.1).",
                    "client_max_window_bits" => "Without a value: the client can limit its window if asked; with one, the largest window the client will use (RFC 7692 §7.1.2.2).",
                    _ => "A parameter RFC 7692 does not define: the offer is declined.",
                };
                Note::new(key.trim(), arg.trim().trim_matches('"'), explain)
            }))
        })
        .collect()
}

/// An HTTP/1.1 chunked body piece (RFC 9112 §7.1): each complete chunk at the start of
/// `data` with its size line and data, and the last chunk (size 0) with any trailer fields.
/// Returns the notes and the bytes they take; stops after the last chunk, which ends the
/// body. A malformed size line is reported as a violation that takes the rest of the input,
/// since nothing after it can be framed.
pub fn annotate_chunks(data: &[u8]) -> (Vec<Note>, usize) {
    let mut notes = Vec::new();
    let mut at = 0;
    while let Some(newline) = data[at..].iter().position(|&b| b == b'\n') {
        let line_end = at + newline + 1;
        let line = &data[at..at + newline];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        let (size_text, extension) = text.split_once(';').unwrap_or((&text, ""));
        let size_text = size_text.trim();
        let size = (!size_text.is_empty() && size_text.len() <= 16)
            .then(|| u64::from_str_radix(size_text, 16).ok())
            .flatten();
        let Some(size) = size else {
            notes.push(
                Note::violation(
                    format!("bad chunk size line {}", quoted(&text)),
                    "Each chunk starts with its size in hexadecimal and CR LF (RFC 9112 §7.1); without it the rest of the body cannot be framed.",
                )
                .at(at, data.len()),
            );
            return (notes, data.len());
        };
        let mut size_note = Note::new(
            "chunk size",
            format!("{size_text} (hex) = {}", plural(size, "byte")),
            "The chunk's length in hexadecimal, then CR LF (RFC 9112 §7.1).",
        )
        .at(at, line_end);
        if !extension.is_empty() {
            size_note.children.push(Note::new(
                "chunk extension",
                extension.trim(),
                "Extra parameters for this chunk; recipients ignore ones they do not understand.",
            ));
        }
        if size == 0 {
            // The last chunk, then trailer lines up to an empty line.
            let mut trailers = Vec::new();
            let mut line_at = line_end;
            loop {
                let Some(newline) = data[line_at..].iter().position(|&b| b == b'\n') else {
                    return (notes, at);
                };
                let next = line_at + newline + 1;
                let line = &data[line_at..line_at + newline];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    trailers.push(
                        Note::new(
                            "end of body",
                            "CRLF",
                            "An empty line ends the chunked body.",
                        )
                        .at(line_at, next),
                    );
                    notes.push(
                        Note::new(
                            "last chunk",
                            "size 0",
                            "A chunk of size 0 ends the body; trailer fields may follow before the final empty line (RFC 9112 §7.1.2).",
                        )
                        .at(at, next)
                        .with(std::iter::once(size_note).chain(trailers)),
                    );
                    return (notes, next);
                }
                trailers.push(
                    Note::new(
                        "trailer",
                        unquoted(&String::from_utf8_lossy(line)),
                        "A header field sent after the body (RFC 9112 §7.1.2).",
                    )
                    .at(line_at, next),
                );
                line_at = next;
            }
        }
        let data_at = line_end;
        let Some(data_end) = usize::try_from(size)
            .ok()
            .and_then(|size| data_at.checked_add(size))
            .filter(|&end| end <= data.len())
        else {
            break;
        };
        let crlf_end = match data.get(data_end..) {
            Some([b'\r', b'\n', ..]) => data_end + 2,
            Some([b'\n', ..]) => data_end + 1,
            Some([]) | Some([b'\r']) => break,
            _ => {
                notes.push(
                    Note::violation(
                        "chunk data not followed by CR LF",
                        "The data of a chunk is exactly its size, then CR LF (RFC 9112 §7.1); these bytes cannot be framed.",
                    )
                    .at(data_end, data.len()),
                );
                return (notes, data.len());
            }
        };
        notes.push(
            Note::new(
                "chunk",
                plural(size, "byte"),
                "One piece of the body, sent as soon as the server had it: a size line, the data, CR LF.",
            )
            .at(at, crlf_end)
            .with([
                size_note,
                Note::new(
                    "chunk data",
                    payload_preview(&data[data_at..data_end]),
                    "The bytes of the body this chunk carries.",
                )
                .at(data_at, data_end),
                Note::new("chunk end", "CRLF", "CR LF after the data.").at(data_end, crlf_end),
            ]),
        );
        at = crlf_end;
    }
    (notes, at)
}

#[cfg(test)]
mod tests {
    use super::super::render_text;
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws?topics=news&since=e:1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n\x81\x05Hello";

    #[test]
    fn an_upgrade_request_explains_its_headers_and_the_answer() {
        let (note, consumed) = annotate_http_head(UPGRADE).unwrap();
        assert_eq!(consumed, UPGRADE.len() - 7);
        assert_eq!(note.label, "HTTP request");
        assert_eq!(note.value, "GET /ws?topics=news&since=e:1 HTTP/1.1");
        assert!(note.explain.contains("WebSocket opening handshake"));
        assert_eq!(note.find("method").unwrap().value, "GET");
        assert_eq!(note.find("?topics").unwrap().value, "news");
        assert_eq!(note.find("?since").unwrap().value, "e:1");
        let upgrade = note.find("Upgrade").unwrap();
        assert_eq!(upgrade.value, "websocket");
        let (s, e) = upgrade.bytes.unwrap();
        assert_eq!(&UPGRADE[s..e], b"Upgrade: websocket\r\n");
        assert_eq!(
            note.find("expected Sec-WebSocket-Accept").unwrap().value,
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(note.find("extension").unwrap().value, "permessage-deflate");
        assert!(note.find("client_max_window_bits").is_some());
        assert!(note.violations().is_empty(), "{}", render_text(&[note]));
        // One byte short of the blank line: not a head yet.
        assert!(annotate_http_head(&UPGRADE[..consumed - 1]).is_none());
    }

    #[test]
    fn masked_credentials_are_annotated_as_such() {
        let head = b"GET /ws?topics=news&token=[masked]&lab=x HTTP/1.1\r\nx-api-key: [masked, 32 bytes]\r\nsec-websocket-protocol: streamgate.v1, [masked, 12 bytes], [masked, 180 bytes]\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let (note, consumed) = annotate_http_head(head).unwrap();
        assert_eq!(consumed, head.len());
        let token = note.find("?token").unwrap();
        assert_eq!(token.value, "[masked]");
        assert!(token.explain.contains("replaced it before recording"));
        let key = note.find("x-api-key").unwrap();
        assert_eq!(key.value, "[masked, 32 bytes]");
        assert_eq!(key.children[0].label, "masked");
        assert!(note
            .find("sec-websocket-protocol")
            .unwrap()
            .find("masked")
            .is_some());
        assert!(note.find("sec-websocket-key").unwrap().children.is_empty());
        // Every byte range stays inside the head.
        fn ranges_inside(note: &Note, len: usize) -> bool {
            note.bytes.is_none_or(|(s, e)| s <= e && e <= len)
                && note.children.iter().all(|c| ranges_inside(c, len))
        }
        assert!(ranges_inside(&note, head.len()));
    }

    #[test]
    fn a_switching_response() {
        let response = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nsec-websocket-extensions: permessage-deflate; server_no_context_takeover\r\n\r\n";
        let (note, consumed) = annotate_http_head(response).unwrap();
        assert_eq!(consumed, response.len());
        assert_eq!(note.label, "HTTP response");
        assert_eq!(note.find("status code").unwrap().value, "101");
        assert!(note.explain.contains("WebSocket frames"));
        assert!(note.find("server_no_context_takeover").is_some());
        assert!(note.find("end of head").is_some());
    }

    #[test]
    fn sse_and_poll_heads() {
        let sse = b"HTTP/1.1 200 OK\ncontent-type: text/event-stream\ncache-control: no-cache\ntransfer-encoding: chunked\n\n";
        let (note, consumed) = annotate_http_head(sse).unwrap();
        assert_eq!(consumed, sse.len());
        assert!(note.explain.contains("event stream"));
        assert!(note
            .find("transfer-encoding")
            .unwrap()
            .explain
            .contains("hex"));
        let request = b"GET /sse?topics=a HTTP/1.1\r\nLast-Event-ID: e:5\r\n\r\n";
        let (note, _) = annotate_http_head(request).unwrap();
        assert!(note
            .find("Last-Event-ID")
            .unwrap()
            .explain
            .contains("resumes"));
    }

    #[test]
    fn malformed_heads_are_reported_not_refused() {
        let (note, consumed) =
            annotate_http_head(b"GET /\r\nno colon\r\n folded\r\nName : v\r\n\r\n").unwrap();
        assert_eq!(consumed, 38);
        let what: Vec<_> = note.violations().iter().map(|v| v.value.clone()).collect();
        assert_eq!(
            what,
            [
                "malformed request line",
                "header line without a colon: \"no colon\"",
                "obsolete line folding",
                "whitespace before the colon"
            ]
        );
        let (note, consumed) = annotate_http_head(b"\r\nGET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(consumed, 2);
        assert_eq!(note.violations().len(), 1);
    }

    #[test]
    fn chunks_are_framed_and_partial_ones_wait() {
        let body = b"2E\r\nretry: 3000\n\n: streamgate epoch f0q34decj5oe\n\n\r\n5;x=1\r\nhello\r\n0\r\nExpires: never\r\n\r\nNEXT";
        let (notes, consumed) = annotate_chunks(body);
        assert_eq!(consumed, body.len() - 4);
        assert_eq!(notes.len(), 3);
        assert_eq!(
            notes[0].find("chunk size").unwrap().value,
            "2E (hex) = 46 bytes"
        );
        let (s, e) = notes[0].find("chunk data").unwrap().bytes.unwrap();
        assert_eq!(e - s, 46);
        assert!(body[s..e].starts_with(b"retry: 3000"));
        assert_eq!(notes[1].find("chunk extension").unwrap().value, "x=1");
        assert_eq!(notes[2].label, "last chunk");
        assert_eq!(notes[2].find("trailer").unwrap().value, "Expires: never");
        for cut in 0..body.len() - 4 {
            let (notes, consumed) = annotate_chunks(&body[..cut]);
            assert!(consumed <= cut);
            assert!(notes.iter().all(|n| n.violations().is_empty()), "cut {cut}");
        }
        let (notes, consumed) = annotate_chunks(b"zz\r\nhello");
        assert_eq!(consumed, 9);
        assert_eq!(notes[0].label, super::super::VIOLATION);
        let (notes, _) = annotate_chunks(b"2\r\nabX\r\n");
        assert_eq!(notes[0].value, "chunk data not followed by CR LF");
    }
}
