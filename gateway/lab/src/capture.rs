//! The gateway's half of tapping an HTTP request: its head, the response head, and the
//! response body chunk by chunk. Transports record what only they can see (the bytes of an
//! upgraded WebSocket, a WebTransport session); everything HTTP passes through here.

use http::{header, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use streamgate_core::{mask_header_value, Body, Direction, RecordKind, Tap};

fn version_text(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn push_headers(head: &mut Vec<u8>, headers: &http::HeaderMap) {
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        match mask_header_value(name.as_str(), value.as_bytes()) {
            Some(masked) => head.extend_from_slice(masked.as_bytes()),
            None => head.extend_from_slice(value.as_bytes()),
        }
        head.extend_from_slice(b"\r\n");
    }
}

/// The request head in HTTP/1.1 text form, rebuilt from what hyper parsed: hyper keeps no
/// copy of the raw bytes, and lower-cases header names. (Over HTTP/2 the same fields travel
/// as HPACK-compressed HEADERS frames; the text form still shows what was asked.) Credentials
/// never reach the recording: credential headers (`Cookie`, `Authorization`, `X-Api-Key`, …)
/// become `[masked, N bytes]`, tokens passed as WebSocket subprotocols likewise, and
/// credential query parameters (`token=`, `api_key=`, …) `[masked]`
/// (`streamgate_core::mask_header_value`, `mask_credential_params`).
pub fn request_head<B>(request: &Request<B>) -> Vec<u8> {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let target = streamgate_core::mask_credential_params(target);
    let mut head = format!(
        "{} {target} {}\r\n",
        request.method(),
        version_text(request.version())
    )
    .into_bytes();
    push_headers(&mut head, request.headers());
    head.extend_from_slice(b"\r\n");
    head
}

/// The response head as hyper will write it over HTTP/1.1: the status line and the headers
/// the gateway set, plus the framing header hyper adds from the body (`content-length` for a
/// body of known size, `transfer-encoding: chunked` for a stream). hyper also adds `date`,
/// left out here rather than invented.
pub fn response_head(response: &Response<Body>, version: Version) -> Vec<u8> {
    let status = response.status();
    let mut head = format!(
        "{} {} {}\r\n",
        version_text(version),
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    push_headers(&mut head, response.headers());
    let has_body = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    let framed = response.headers().contains_key(header::CONTENT_LENGTH)
        || response.headers().contains_key(header::TRANSFER_ENCODING);
    if has_body && !framed {
        match response.body().size_hint().exact() {
            Some(length) => {
                head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes())
            }
            None if version == Version::HTTP_11 => {
                head.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
            // HTTP/1.0 delimits a stream by closing the connection, HTTP/2 by its frames.
            None => {}
        }
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Records the response head, and wraps the body of a streaming transport so that each chunk
/// is recorded as it leaves (`sse` chunks, `longpoll` bodies).
pub fn tapped_response(
    response: Response<Body>,
    version: Version,
    tap: Tap,
    transport: &str,
) -> Response<Body> {
    tap.record(
        Direction::Out,
        RecordKind::HttpHead,
        &response_head(&response, version),
    );
    let kind = match transport {
        "sse" if response.status().is_success() => RecordKind::SseChunk,
        "longpoll" => RecordKind::PollBody,
        // A WebSocket's 101 has no body; its bytes are recorded by the transport itself.
        _ => return response,
    };
    // `inspect_frame` keeps the body's size hint: a long-poll body keeps its content-length.
    response.map(|body| {
        body.inspect_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                tap.record(Direction::Out, kind, data);
            }
        })
        .boxed()
    })
}

#[cfg(test)]
mod tests {
    use streamgate_core::full_body;

    use super::*;

    #[test]
    fn heads_in_http1_text_form() {
        let request = Request::get("/poll?topics=demo&lab=t")
            .header("host", "127.0.0.1:8080")
            .header("Accept", "*/*")
            .header("Cookie", "session=secret")
            .body(())
            .unwrap();
        assert_eq!(
            String::from_utf8(request_head(&request)).unwrap(),
            "GET /poll?topics=demo&lab=t HTTP/1.1\r\nhost: 127.0.0.1:8080\r\naccept: */*\r\n\
             cookie: [masked, 14 bytes]\r\n\r\n"
        );
        let response = Response::builder()
            .header("content-type", "application/json")
            .body(full_body("{}"))
            .unwrap();
        assert_eq!(
            String::from_utf8(response_head(&response, Version::HTTP_11)).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"
        );
    }

    #[derive(Debug)]
    struct Kept(std::sync::Mutex<Vec<Vec<u8>>>);

    impl streamgate_core::TapSink for Kept {
        fn record(&self, _: Direction, _: RecordKind, bytes: &[u8]) {
            self.0.lock().unwrap().push(bytes.to_vec());
        }
    }

    #[tokio::test]
    async fn a_tapped_body_is_recorded_and_keeps_its_size() {
        let sink = std::sync::Arc::new(Kept(Default::default()));
        let tap = Tap::new(sink.clone());
        let response = Response::new(full_body("[1,2]"));
        let tapped = tapped_response(response, Version::HTTP_11, tap, "longpoll");
        // The content-length the head promised is what hyper will write.
        assert_eq!(tapped.body().size_hint().exact(), Some(5));
        let body = tapped.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"[1,2]");
        let records = sink.0.lock().unwrap();
        assert!(records[0].starts_with(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n"));
        assert_eq!(records[1], b"[1,2]");
    }

    #[test]
    fn credentials_are_not_recorded() {
        let request = Request::get("/ws?topics=demo&token=eyJ.secret.sig&api_key=k3y&lab=t")
            .header("X-Api-Key", "k3y-in-a-header")
            .header("Authorization", "Bearer eyJ.secret.sig")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header(
                "Sec-WebSocket-Protocol",
                "streamgate.v1, access_token, eyJ.secret.sig",
            )
            .body(())
            .unwrap();
        let head = String::from_utf8(request_head(&request)).unwrap();
        assert!(
            head.starts_with(
                "GET /ws?topics=demo&token=[masked]&api_key=[masked]&lab=t HTTP/1.1\r\n"
            ),
            "{head}"
        );
        for line in [
            "x-api-key: [masked, 15 bytes]\r\n",
            "authorization: [masked, 21 bytes]\r\n",
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "sec-websocket-protocol: streamgate.v1, [masked, 12 bytes], [masked, 14 bytes]\r\n",
        ] {
            assert!(head.contains(line), "{line:?} in {head}");
        }
        assert!(!head.contains("secret") && !head.contains("k3y"), "{head}");
        let response = Response::builder()
            .status(101)
            .header("set-cookie", "session=secret")
            .body(full_body(""))
            .unwrap();
        let head = String::from_utf8(response_head(&response, Version::HTTP_11)).unwrap();
        assert!(
            head.contains("set-cookie: [masked, 14 bytes]\r\n"),
            "{head}"
        );
    }
}
