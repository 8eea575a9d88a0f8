//! Abuse: `/ws/echo`, which answers with as many bytes as it is sent (issue 19, item 4).
//!
//! Measured before the fix: a 15 KB permessage-deflate frame inflated to 15 MiB
//! (`echo_max_message_size` was 16 MiB), eight clients that never read raised RSS by
//! 166 MiB, 20 such frames cost 1.7 s of CPU, and it was open without a token with `[auth]`
//! on. Now it is off unless the lab (or `ws.echo = true`) turns it on, its messages are
//! 64 KiB at most (inflated), it has `/ws`'s message rate, and `[auth]` covers it.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use streamgate::config::GatewayConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common::{send, within, TestClient, TestGateway};
use super::support::{served_within, SpawnedGateway};

pub(super) const OP_TEXT: u8 = 0x1;
pub(super) const OP_BINARY: u8 = 0x2;
pub(super) const OP_CLOSE: u8 = 0x8;

/// A WebSocket client on a raw byte stream: the frames are written by hand, so a test can
/// send what a real client library would refuse to (a deflate bomb, a flood without reading).
pub(super) struct RawWs<S> {
    pub(super) stream: S,
    buffer: Vec<u8>,
}

/// The gateway's answer to an upgrade request: status line and head, and, when it was not a
/// `101`, the body.
pub(super) struct Upgrade {
    pub(super) status: u16,
    pub(super) head: String,
    pub(super) body: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawWs<S> {
    /// Sends an upgrade request for `path` with `extra` header lines (each ending in CRLF).
    pub(super) async fn upgrade(
        mut stream: S,
        host: &str,
        path: &str,
        extra: &str,
    ) -> (Self, Upgrade) {
        let head = format!(
            "GET {path} HTTP/1.1\r\nhost: {host}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n{extra}\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut ws = Self {
            stream,
            buffer: Vec::new(),
        };
        let end = loop {
            if let Some(at) = ws.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(
                ws.read_more().await,
                "the connection ended during the handshake"
            );
        };
        let head: String = String::from_utf8_lossy(&ws.buffer[..end]).into_owned();
        ws.buffer.drain(..end);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let mut body = String::new();
        if status != 101 {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while ws.buffer.len() < length {
                assert!(ws.read_more().await, "the body ended early");
            }
            body = String::from_utf8_lossy(&ws.buffer[..length]).into_owned();
        }
        (ws, Upgrade { status, head, body })
    }

    async fn read_more(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Writes one masked frame, FIN set; `rsv1` marks a compressed message.
    pub(super) async fn send_frame(&mut self, opcode: u8, rsv1: bool, payload: &[u8]) {
        self.stream
            .write_all(&client_frame(opcode, rsv1, payload))
            .await
            .unwrap();
    }

    /// The next frame from the server: opcode and payload; `None` once the connection ends.
    pub(super) async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((opcode, header, len)) = parse_server_header(&self.buffer) {
                if self.buffer.len() >= header + len {
                    let payload = self.buffer[header..header + len].to_vec();
                    self.buffer.drain(..header + len);
                    return Some((opcode, payload));
                }
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// Reads frames (skipping echoes) until the server's close frame: its code and reason.
    pub(super) async fn expect_close(&mut self) -> (u16, String) {
        within("the server's close frame", async {
            loop {
                match self.next_frame().await {
                    Some((OP_CLOSE, payload)) => {
                        assert!(payload.len() >= 2, "a close frame with a code");
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
                    }
                    Some(_) => {}
                    None => panic!("the connection ended without a close frame"),
                }
            }
        })
        .await
    }
}

/// A client frame: FIN, the opcode, RSV1 when asked, masked with a fixed key.
pub(super) fn client_frame(opcode: u8, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | if rsv1 { 0x40 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Opcode, header length and payload length of the server frame `bytes` starts with.
fn parse_server_header(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    if bytes.len() < 2 {
        return None;
    }
    let opcode = bytes[0] & 0x0f;
    match bytes[1] & 0x7f {
        126 if bytes.len() >= 4 => {
            Some((opcode, 4, u16::from_be_bytes([bytes[2], bytes[3]]) as usize))
        }
        127 if bytes.len() >= 10 => Some((
            opcode,
            10,
            u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
        )),
        126 | 127 => None,
        n => Some((opcode, 2, n as usize)),
    }
}

/// A permessage-deflate payload that inflates to `size` zero bytes.
fn deflate_bomb(size: usize) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len());
        encoder.write_all(&zeros[..n]).unwrap();
        left -= n;
    }
    encoder.finish().unwrap()
}

const DEFLATE: &str = "sec-websocket-extensions: permessage-deflate\r\n";

fn echo_on() -> GatewayConfig {
    let mut config = TestGateway::quiet_config();
    config.ws.echo = ws::EchoMode::On;
    config
}

async fn open(addr: SocketAddr, path: &str, extra: &str) -> (RawWs<TcpStream>, Upgrade) {
    let stream = TcpStream::connect(addr).await.unwrap();
    RawWs::upgrade(stream, &addr.to_string(), path, extra).await
}

/// [`open`], asserting the upgrade is accepted.
async fn upgraded(addr: SocketAddr, path: &str, extra: &str) -> RawWs<TcpStream> {
    let (ws, answer) = open(addr, path, extra).await;
    assert_eq!(answer.status, 101, "{}", answer.head);
    ws
}

#[tokio::test]
async fn echo_is_off_unless_the_lab_or_ws_echo_turns_it_on() {
    // Lab off, `ws.echo = "lab"` (the default): 404 with the reason.
    let mut config = TestGateway::quiet_config();
    config.lab.enabled = false.into();
    let gateway = TestGateway::start(config).await;
    let (_, answer) = open(gateway.addr, "/ws/echo", "").await;
    assert_eq!(answer.status, 404, "{}", answer.head);
    assert!(answer.body.contains("ws.echo"), "{}", answer.body);
    let (response, _) =
        served_within("echo while off", send(&gateway, "GET", "/healthz", &[], "")).await;
    assert_eq!(response.status, 200);

    // The lab on: echo follows it. `ws.echo = false` overrides the lab; `true` needs no lab.
    for (lab, echo, status) in [
        (true, ws::EchoMode::Lab, 101),
        (true, ws::EchoMode::Off, 404),
        (false, ws::EchoMode::On, 101),
    ] {
        let mut config = TestGateway::quiet_config();
        config.lab.enabled = lab.into();
        config.ws.echo = echo;
        let gateway = TestGateway::start(config).await;
        let (_, answer) = open(gateway.addr, "/ws/echo", "").await;
        assert_eq!(
            answer.status, status,
            "lab {lab}, echo {echo:?}: {}",
            answer.head
        );
    }
}

#[tokio::test]
async fn echo_without_a_token_is_401_when_auth_is_on() {
    let mut config = echo_on();
    config.auth.enabled = true;
    config.auth.hs256_secret = Some("abuse-test-secret-0123456789abcdef".to_owned());
    let gateway = TestGateway::start(config).await;
    let (_, answer) = open(gateway.addr, "/ws/echo", "").await;
    assert_eq!(answer.status, 401, "{}", answer.head);
    assert!(answer.body.contains("unauthorized"), "{}", answer.body);
    let (_, answer) = open(gateway.addr, "/ws/echo?token=not.a.jwt", "").await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    let (response, _) = served_within(
        "echo without a token",
        send(&gateway, "GET", "/healthz", &[], ""),
    )
    .await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn a_message_flood_on_echo_is_closed_1008() {
    let gateway = TestGateway::start(echo_on()).await;
    let mut ws = upgraded(gateway.addr, "/ws/echo", "").await;
    // Twice the burst (100) at once, written as one burst of bytes, nothing read.
    let burst: Vec<u8> = (0..200)
        .flat_map(|i| client_frame(OP_TEXT, false, format!("flood {i}").as_bytes()))
        .collect();
    ws.stream.write_all(&burst).await.unwrap();
    let (code, reason) = ws.expect_close().await;
    println!("abuse[echo flood]: closed {code} {reason:?}");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("messages/s"), "{reason}");

    // A second client echoes normally.
    let ((), _) = served_within("an echo flood", async {
        let mut ws = upgraded(gateway.addr, "/ws/echo", "").await;
        ws.send_frame(OP_TEXT, false, b"hello").await;
        assert_eq!(ws.next_frame().await, Some((OP_TEXT, b"hello".to_vec())));
    })
    .await;
}

#[tokio::test]
async fn a_deflate_bomb_on_echo_is_closed_1009_as_soon_as_it_passes_the_limit() {
    let gateway = TestGateway::start(echo_on()).await;
    let bomb = deflate_bomb(15 * 1024 * 1024);
    println!(
        "abuse[echo bomb]: {} compressed bytes inflate to 15 MiB",
        bomb.len()
    );
    let started = Instant::now();
    let (mut ws, answer) = open(gateway.addr, "/ws/echo", DEFLATE).await;
    assert_eq!(answer.status, 101);
    assert!(
        answer.head.contains("permessage-deflate"),
        "{}",
        answer.head
    );
    ws.send_frame(OP_BINARY, true, &bomb).await;
    let (code, reason) = ws.expect_close().await;
    let took = started.elapsed();
    println!("abuse[echo bomb]: closed {code} {reason:?} after {took:?}");
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("65536"), "{reason}");
    let ((), _) = served_within("a deflate bomb", async {
        let mut ws = upgraded(gateway.addr, "/ws/echo", "").await;
        ws.send_frame(OP_BINARY, false, &[7; 1000]).await;
        assert_eq!(ws.next_frame().await, Some((OP_BINARY, vec![7; 1000])));
    })
    .await;
}

/// RSS growth allowed under the attack below: eight clients, each at most a few 64 KiB
/// messages in flight (the one being read, the one being echoed), plus the allocator's
/// slack. Before the fix the same attack grew RSS by 166 MiB.
const RSS_GROWTH_CAP_KIB: u64 = 32 * 1024;

#[tokio::test]
async fn deflate_bombs_and_non_reading_echo_clients_stay_bounded_in_the_binary() {
    let gateway = SpawnedGateway::start("echo", "[ws]\necho = true\n");

    // Twenty 15 MiB bombs, one connection each: each is cut once 64 KiB have inflated.
    let bomb = deflate_bomb(15 * 1024 * 1024);
    let cpu_before = gateway.cpu();
    let started = Instant::now();
    for _ in 0..20 {
        let mut ws = upgraded(gateway.addr, "/ws/echo", DEFLATE).await;
        ws.send_frame(OP_BINARY, true, &bomb).await;
        let (code, reason) = ws.expect_close().await;
        assert_eq!(code, 1009, "{reason}");
    }
    let cpu = gateway.cpu().saturating_sub(cpu_before);
    println!(
        "abuse[echo bomb]: 20 bombs of {} bytes (15 MiB inflated) closed 1009 in {:?}, \
         gateway CPU {cpu:?} (before the fix: 1.7 s)",
        bomb.len(),
        started.elapsed()
    );
    assert!(
        cpu < Duration::from_millis(500),
        "20 bombs cost {cpu:?} of CPU"
    );

    // Eight clients send and never read an echo: four send as much as the rate lets them
    // (the burst of 100 messages) of 60 KiB of noise each (6 MiB per client), four send 8
    // compressed messages that inflate to the whole 64 KiB limit. Fewer of those: each costs
    // the gateway a 64 KiB inflate and a 64 KiB compress of its echo, ≈ 40 ms of CPU in a
    // debug build (zlib-rs unoptimized), which on 2 shared cores would stretch the test.
    let rss_before = gateway.rss_kib();
    let cpu_before = gateway.cpu();
    let noise: Vec<u8> = (0..60 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let plain = client_frame(OP_BINARY, false, &noise);
    let compressed = client_frame(OP_BINARY, true, &deflate_bomb(64 * 1024));
    let mut writers = Vec::new();
    for i in 0..8 {
        let (extra, frame, count) = if i % 2 == 0 {
            ("", plain.clone(), 100)
        } else {
            (DEFLATE, compressed.clone(), 8)
        };
        let mut ws = upgraded(gateway.addr, "/ws/echo", extra).await;
        writers.push(tokio::spawn(async move {
            for _ in 0..count {
                // The gateway stops reading once its echoes back up: the writes then block,
                // which is the point. Bounded so the test ends.
                let write = ws.stream.write_all(&frame);
                if !matches!(
                    tokio::time::timeout(Duration::from_secs(2), write).await,
                    Ok(Ok(()))
                ) {
                    break;
                }
            }
            ws
        }));
    }
    // While the eight hold their backlog, a second client asks for /healthz.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, latency) = served_within("eight non-reading echo clients", async {
        TestClient::connect(gateway.addr)
            .await
            .get("/healthz")
            .await
            .status
    })
    .await;
    assert_eq!(status, 200);
    let mut peak = gateway.rss_kib();
    let mut held = Vec::new();
    for writer in writers {
        held.push(writer.await.unwrap());
        peak = peak.max(gateway.rss_kib());
    }
    let growth = peak.saturating_sub(rss_before);
    println!(
        "abuse[echo rss]: the eight clients cost the gateway {:?} of CPU",
        gateway.cpu().saturating_sub(cpu_before)
    );
    println!(
        "abuse[echo rss]: RSS {rss_before} KiB before, {peak} KiB at the peak (+{growth} KiB) \
         under 8 non-reading echo clients; /healthz took {latency:?} (before the fix: +166 MiB, \
         86 ms)"
    );
    assert!(
        growth < RSS_GROWTH_CAP_KIB,
        "RSS grew by {growth} KiB, over the cap of {RSS_GROWTH_CAP_KIB} KiB"
    );
    drop(held);
}
