//! `streamgate explain-frame` and `streamgate inspect`, run as the real binary against a
//! gateway in this process: what a learner types, and what they must see.
//!
//! Every child process is bounded twice: its own `--duration`, and [`WAIT`] here, after which
//! it is killed and the test fails.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use streamgate::testkit::TestGateway;
use streamgate_core::{ContentType, Event, Topic};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const STREAMGATE: &str = env!("CARGO_BIN_EXE_streamgate");
/// Upper bound of every run of the binary.
const WAIT: Duration = Duration::from_secs(60);
/// What each `inspect` is told, so that it ends by itself well within [`WAIT`].
const DURATION: &str = "30";

/// A run of the binary: exit code, stdout, stderr.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn context(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

async fn streamgate(args: &[&str]) -> Run {
    let child = Command::new(STREAMGATE)
        .args(args)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(WAIT, child)
        .await
        .unwrap_or_else(|_| panic!("streamgate {args:?} did not end within {WAIT:?}"))
        .expect("the binary runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn publish(gateway: &TestGateway, topic: &str, json: &str) -> Arc<Event> {
    gateway
        .app
        .bus
        .publish(
            Topic::new(topic).expect("topic"),
            ContentType::Json,
            Bytes::from(json.to_owned()),
        )
        .await
        .expect("publish")
}

/// A gateway with two events published on `news`: `inspect --since <first>` shows the second.
async fn gateway_with_two_events() -> (TestGateway, Arc<Event>, Arc<Event>) {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let first = publish(&gateway, "news", r#"{"headline":"one"}"#).await;
    let second = publish(&gateway, "news", r#"{"headline":"two"}"#).await;
    (gateway, first, second)
}

/// `inspect <url> --since <since> --count 1 --duration …`, then `more`, run to its end.
async fn inspect_one_event(url: &str, since: &str, more: &[&str]) -> Run {
    let mut args = vec![
        "inspect",
        url,
        "--since",
        since,
        "--count",
        "1",
        "--duration",
        DURATION,
    ];
    args.extend_from_slice(more);
    streamgate(&args).await
}

/// The value column of the first tree line labelled `label`: lines read
/// `[range]  label  value`, the range column blank for computed notes.
fn value_of<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let line = line.trim_start();
        let after = line.strip_prefix(label).or_else(|| {
            let (range, rest) = line.split_once(' ')?;
            range
                .contains("..")
                .then(|| rest.trim_start().strip_prefix(label))?
        })?;
        after.starts_with("  ").then(|| after.trim())
    })
}

#[tokio::test]
async fn explain_frame_decodes_the_rfc_masked_hello() {
    let run = streamgate(&[
        "explain-frame",
        "0x81 0x85 0x37 0xfa 0x21 0x3d 0x7f 0x9f 0x4d 0x51 0x58",
    ])
    .await;
    assert_eq!(run.code, Some(0), "{}", run.context());
    let out = &run.stdout;
    assert_eq!(value_of(out, "FIN"), Some("1"), "{out}");
    assert_eq!(value_of(out, "opcode"), Some("0x1 (text)"), "{out}");
    assert_eq!(value_of(out, "masking key"), Some("37 fa 21 3d"), "{out}");
    assert_eq!(
        value_of(out, "unmasked payload"),
        Some("\"Hello\""),
        "{out}"
    );
    assert!(out.contains("key[i % 4]"), "{out}");

    // Colons, one argument per byte, no prefix: the same frame.
    let run = streamgate(&[
        "explain-frame",
        "81:85:37:fa:21:3d",
        "7f",
        "9f",
        "4d",
        "51",
        "58",
    ])
    .await;
    assert_eq!(value_of(&run.stdout, "unmasked payload"), Some("\"Hello\""));
}

#[tokio::test]
async fn explain_frame_refuses_bad_hex_and_reports_missing_bytes() {
    let run = streamgate(&["explain-frame", "81 zz"]).await;
    assert_eq!(run.code, Some(2), "{}", run.context());
    assert!(run.stderr.contains("bad hex"), "{}", run.context());
    let run = streamgate(&["explain-frame", "81 8"]).await;
    assert_eq!(run.code, Some(2), "{}", run.context());

    // The masked Hello without its last byte.
    let run = streamgate(&["explain-frame", "81 85 37 fa 21 3d 7f 9f 4d 51"]).await;
    assert_eq!(run.code, Some(1), "{}", run.context());
    assert!(
        run.stdout.contains("incomplete: frame 1 at byte 0")
            && run.stdout.contains("1 byte more needed"),
        "{}",
        run.context()
    );
}

#[tokio::test]
async fn inspect_ws_shows_the_handshake_and_each_frame() {
    let (gateway, first, second) = gateway_with_two_events().await;
    let url = format!("ws://{}/ws?topics=news", gateway.addr);
    let since = first.id.to_string();
    let run = inspect_one_event(&url, &since, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.context());
    let out = &run.stdout;

    // The request, and the accept key computed step by step from its key...
    assert!(
        out.contains(&format!("GET /ws?topics=news&since={since} HTTP/1.1")),
        "{out}"
    );
    let key = value_of(out, "Sec-WebSocket-Key").expect("the key we sent");
    let accept = derive_accept_key(key.as_bytes());
    assert_eq!(
        value_of(out, "2. GUID"),
        Some("258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
    );
    assert_eq!(
        value_of(out, "3. key + GUID"),
        Some(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_str())
    );
    assert_eq!(value_of(out, "5. base64"), Some(accept.as_str()), "{out}");
    // ...then the 101, whose accept is that value, and the check that says so.
    assert!(out.contains("HTTP/1.1 101 Switching Protocols"), "{out}");
    assert_eq!(value_of(out, "sec-websocket-accept"), Some(accept.as_str()));
    assert!(
        out.contains(&format!("✓ Sec-WebSocket-Accept {accept} matches")),
        "{out}"
    );

    // Frames: header fields, and the resumed event (the second, not the first).
    assert_eq!(value_of(out, "FIN"), Some("1"), "{out}");
    assert_eq!(value_of(out, "opcode"), Some("0x1 (text)"), "{out}");
    assert_eq!(value_of(out, "MASK"), Some("0 (not masked)"), "{out}");
    assert_eq!(
        value_of(out, "id"),
        Some(second.id.to_string().as_str()),
        "{out}"
    );
    assert!(!out.contains(&format!("\"id\":\"{since}\"")), "{out}");
    // The close handshake we start, and the server's answer.
    assert_eq!(value_of(out, "close code"), Some("1000 (normal closure)"));
    assert!(out.contains("the server answered our close frame"), "{out}");
    assert!(
        out.contains("done after") && out.contains("1 event,"),
        "{out}"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn inspect_ws_answers_the_servers_pings() {
    let mut config = TestGateway::quiet_config();
    // The server pings after this much silence; nothing is published, so it will.
    config.ws.ping_interval = Duration::from_millis(200);
    let gateway = TestGateway::start(config).await;
    let url = format!("ws://{}/ws?topics=news", gateway.addr);
    let mut child = Command::new(STREAMGATE)
        .args(["inspect", &url, "--duration", DURATION, "--brief"])
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut out = String::new();
    let pong = async {
        while let Some(line) = stdout.next_line().await.expect("stdout") {
            out.push_str(&line);
            out.push('\n');
            if line.contains("the pong that answers the ping") {
                // The tree of our pong follows its header line.
                for _ in 0..9 {
                    if let Some(line) = stdout.next_line().await.expect("stdout") {
                        out.push_str(&line);
                        out.push('\n');
                    }
                }
                return true;
            }
        }
        false
    };
    let answered = tokio::time::timeout(WAIT, pong).await;
    assert_eq!(answered, Ok(true), "{out}");
    assert!(out.contains("← server: a ping"), "{out}");
    let pong_tree = out
        .split("the pong that answers the ping")
        .nth(1)
        .unwrap_or("");
    assert_eq!(value_of(pong_tree, "opcode"), Some("0xa (pong)"), "{out}");
    assert_eq!(value_of(pong_tree, "MASK"), Some("1 (masked)"), "{out}");
    drop(child);
    gateway.shutdown().await;
}

#[tokio::test]
async fn inspect_ws_with_deflate_shows_compressed_frames_inflated() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let first = publish(&gateway, "news", r#"{"headline":"one"}"#).await;
    // Long and repetitive: the gateway compresses it (it leaves messages under 100 bytes alone).
    let body = "lorem ipsum ".repeat(30);
    let second = publish(&gateway, "news", &format!(r#"{{"body":"{body}"}}"#)).await;
    let url = format!("ws://{}/ws?topics=news", gateway.addr);
    let since = first.id.to_string();
    let run = inspect_one_event(&url, &since, &["--deflate", "--brief"]).await;
    assert_eq!(run.code, Some(0), "{}", run.context());
    let out = &run.stdout;
    assert!(
        out.contains("permessage-deflate; server_no_context_takeover"),
        "{out}"
    );
    assert!(out.contains("1 (compressed (permessage-deflate))"), "{out}");
    let inflated = value_of(out, "inflated").expect("an inflated message");
    assert!(inflated.contains(&second.id.to_string()), "{inflated}");
    assert_eq!(value_of(out, "id"), Some(second.id.to_string().as_str()));
    gateway.shutdown().await;
}

#[tokio::test]
async fn inspect_sse_shows_chunks_and_explains_the_id_line() {
    let (gateway, first, second) = gateway_with_two_events().await;
    let url = format!("http://{}/sse?topics=news", gateway.addr);
    let since = first.id.to_string();
    let run = inspect_one_event(&url, &since, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.context());
    let out = &run.stdout;
    // Resuming is a Last-Event-ID header, as an EventSource sends it.
    assert_eq!(
        value_of(out, "Last-Event-ID"),
        Some(since.as_str()),
        "{out}"
    );
    assert_eq!(value_of(out, "content-type"), Some("text/event-stream"));
    assert_eq!(value_of(out, "transfer-encoding"), Some("chunked"));
    assert!(
        value_of(out, "chunk size").is_some_and(|v| v.contains("(hex)")),
        "{out}"
    );
    assert_eq!(value_of(out, "SSE retry"), Some("3000 ms"), "{out}");
    assert_eq!(
        value_of(out, "SSE event"),
        Some(format!("news, id {}", second.id).as_str()),
        "{out}"
    );
    // The id: line, and what the browser does with it.
    let id_line = out
        .lines()
        .position(|line| value_of(line, "id") == Some(second.id.to_string().as_str()))
        .expect("an id: line");
    let explanation: String = out.lines().skip(id_line + 1).take(3).collect();
    assert!(explanation.contains("Last-Event-ID"), "{explanation}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn inspect_poll_shows_two_cycles_and_the_held_request() {
    let (gateway, first, second) = gateway_with_two_events().await;
    let url = format!("http://{}/poll?topics=news", gateway.addr);
    let since = first.id.to_string();
    let mut child = Command::new(STREAMGATE)
        .args([
            "inspect",
            &url,
            "--since",
            &since,
            "--count",
            "2",
            "--poll-timeout",
            "20",
            "--duration",
            DURATION,
            "--brief",
        ])
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut out = String::new();
    // Poll 1 answers at once with the second event; poll 2 is then held until we publish.
    let third = tokio::time::timeout(WAIT, async {
        while let Some(line) = stdout.next_line().await.expect("stdout") {
            out.push_str(&line);
            out.push('\n');
            if line.contains("poll 2: the request") {
                break;
            }
        }
        // The request line follows its header; once it is printed the request is sent.
        while let Some(line) = stdout.next_line().await.expect("stdout") {
            out.push_str(&line);
            out.push('\n');
            if line.contains("end of head") {
                break;
            }
        }
        let third = publish(&gateway, "news", r#"{"headline":"three"}"#).await;
        while let Some(line) = stdout.next_line().await.expect("stdout") {
            out.push_str(&line);
            out.push('\n');
        }
        third
    })
    .await
    .unwrap_or_else(|_| panic!("inspect poll did not end within {WAIT:?}:\n{out}"));
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits")
        .expect("status");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    assert!(status.success(), "{status}\n{out}\n{stderr}");

    let cursor_of = |cycle: &str| {
        let request = out.split(cycle).nth(1).expect("the cycle");
        value_of(request, "?cursor").map(str::to_owned)
    };
    assert_eq!(
        cursor_of("poll 1: the request").as_deref(),
        Some(since.as_str()),
        "{out}"
    );
    assert_eq!(
        cursor_of("poll 2: the request").as_deref(),
        Some(second.id.to_string().as_str()),
        "{out}"
    );
    assert!(
        out.contains("poll 1: held") && out.contains("poll 2: held"),
        "{out}"
    );
    assert!(out.contains("same TCP connection"), "{out}");
    assert_eq!(
        value_of(out.split("poll 2: the body").nth(1).unwrap_or(""), "cursor"),
        Some(third.id.to_string().as_str()),
        "{out}"
    );
    assert!(
        out.contains("done after") && out.contains("2 events,"),
        "{out}"
    );
    gateway.shutdown().await;
}

#[cfg(feature = "webtransport")]
#[tokio::test]
async fn inspect_wt_shows_the_session_streams_and_envelopes() {
    let (gateway, first, second) = gateway_with_two_events().await;
    assert!(gateway.wt_addr.is_some(), "WebTransport is on by default");
    let http = gateway.addr.to_string();
    let since = first.id.to_string();
    let run = inspect_one_event("wt?topics=news", &since, &["--http", &http, "--brief"]).await;
    assert_eq!(run.code, Some(0), "{}", run.context());
    let out = &run.stdout;
    assert!(out.contains("GET /wt/cert-hash HTTP/1.1"), "{out}");
    assert!(out.contains("session established"), "{out}");
    assert!(out.contains("QUIC encrypts every packet"), "{out}");
    assert!(out.contains("the control stream"), "{out}");
    assert_eq!(value_of(out, "type"), Some("subscribed"), "{out}");
    assert!(value_of(out, "length prefix").is_some(), "{out}");
    assert_eq!(
        value_of(out, "id"),
        Some(second.id.to_string().as_str()),
        "{out}"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn inspect_refuses_urls_it_cannot_show() {
    let run = streamgate(&["inspect", "wss://127.0.0.1:1/ws"]).await;
    assert_eq!(run.code, Some(2), "{}", run.context());
    assert!(run.stderr.contains("ws://"), "{}", run.context());
    let run = streamgate(&["inspect", "http://127.0.0.1:1/topics"]).await;
    assert_eq!(run.code, Some(2), "{}", run.context());
}
