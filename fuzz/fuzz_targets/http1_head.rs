//! Request heads on the gateway's lean HTTP/1.1 path (`streamgate::h1::parse_head`): what a
//! client sends first on every plain or TLS HTTP/1.1 connection, before hyper sees anything.
//!
//! Properties: never panics; a head taken by the lean path is a `GET` in HTTP/1.1 to one of
//! the long-lived routes, of at most `LEAN_HEAD_LIMIT` bytes, ending in an empty line (`\n` or `\r\n`), with no
//! body (no `transfer-encoding`, `upgrade`, `expect`, `content-length` other than 0) and
//! parses the same from its own bytes alone (what follows a head, such as a pipelined request,
//! does not change it); `Partial` is only said of fewer than `LEAN_HEAD_LIMIT` bytes, and any
//! head is whole or `Other` once more bytes than that have come; the response head encoded for
//! any status carries the framing it was asked for, once.
#![no_main]

use http::{Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use streamgate::h1::{encode_head, parse_head, Framing, Head, LEAN_HEAD_LIMIT};

fn lean_route(path: &str) -> bool {
    path == "/sse" || path == "/poll"
}

fuzz_target!(|data: &[u8]| {
    match parse_head(data, lean_route) {
        Head::Partial => assert!(data.len() < LEAN_HEAD_LIMIT),
        Head::Other => {}
        Head::Lean {
            request,
            len,
            keep_alive,
        } => {
            assert!(len <= data.len() && len <= LEAN_HEAD_LIMIT);
            // httparse takes `\n` for `\r\n`, mixed too: the head ends with an empty line.
            assert!(data[..len].ends_with(b"\n\n") || data[..len].ends_with(b"\n\r\n"));
            assert_eq!(request.method(), http::Method::GET);
            assert_eq!(request.version(), http::Version::HTTP_11);
            assert!(lean_route(request.uri().path()));
            for name in ["transfer-encoding", "upgrade", "expect"] {
                assert!(!request.headers().contains_key(name));
            }
            if let Some(length) = request.headers().get("content-length") {
                assert_eq!(length, "0");
            }
            let Head::Lean {
                request: alone,
                len: alone_len,
                keep_alive: alone_keep_alive,
            } = parse_head(&data[..len], lean_route)
            else {
                panic!("the head alone parses differently");
            };
            assert_eq!(alone_len, len);
            assert_eq!(alone_keep_alive, keep_alive);
            assert_eq!(alone.uri(), request.uri());
            assert_eq!(alone.headers(), request.headers());

            // The answer to it, for a status and framing taken from the input.
            let status = StatusCode::from_u16(200 + (len % 400) as u16).unwrap_or(StatusCode::OK);
            let mut response = Response::new(());
            *response.status_mut() = status;
            *response.headers_mut() = request.headers().clone();
            let (parts, ()) = response.into_parts();
            let framing = Framing::choose(parts.status, &parts.headers, Some(len as u64));
            let head = encode_head(&parts, framing, keep_alive, "Fri, 27 Nov 2026 00:00:00 GMT");
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            assert!(text.starts_with(&format!("http/1.1 {} ", status.as_u16())));
            assert!(text.ends_with("\r\n\r\n"));
            let chunked = text.matches("\r\ntransfer-encoding:").count();
            assert_eq!(chunked, usize::from(framing == Framing::Chunked));
            assert_eq!(text.contains("\r\nconnection: close\r\n"), !keep_alive);
        }
    }
    if data.len() >= LEAN_HEAD_LIMIT {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"x");
        assert!(!matches!(parse_head(&longer, lean_route), Head::Partial));
    }
});
