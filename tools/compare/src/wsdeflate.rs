//! The `ws-deflate` subscriber: a WebSocket client that offers `permessage-deflate`
//! (RFC 7692) the way browsers do and inflates what the gateway compresses.
//!
//! Written here because tungstenite, which the other WebSocket rows use, has no
//! permessage-deflate: its frame reader refuses any frame with RSV1 set. A subscriber only
//! reads, so the client is small: the opening handshake, a frame reader, the inflater, and
//! pongs for the gateway's pings.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use streamgate_client::ws_frame;
use streamgate_lab::wire_notes::MessageInflater;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use streamgate_client::h1::{self, ResponseHead};

use crate::wire::{ByteCounts, Counted};

/// The offer, as Chromium sends it.
const OFFER: &str = "permessage-deflate; client_max_window_bits";
/// Largest message the client accepts, inflated.
const MAX_MESSAGE: usize = 16 << 20;

/// A message as the application sees it.
#[derive(Debug)]
pub struct Received {
    /// `true` for text, `false` for binary.
    pub text: bool,
    /// The payload, inflated if it came compressed.
    pub payload: Vec<u8>,
    /// Whether it came compressed (RSV1).
    pub compressed: bool,
}

/// A subscribed WebSocket connection that may receive compressed messages.
pub struct DeflateSocket {
    tcp: Counted,
    counts: Arc<ByteCounts>,
    buf: Vec<u8>,
    /// `Some` when the gateway accepted the offer.
    inflater: Option<MessageInflater>,
    /// A fragmented message being assembled: (text, compressed, payload so far).
    partial: Option<(bool, bool, Vec<u8>)>,
}

impl std::fmt::Debug for DeflateSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateSocket")
            .field("deflate", &self.inflater)
            .finish_non_exhaustive()
    }
}

impl DeflateSocket {
    /// Opens `ws://addr/ws?query` offering permessage-deflate; returns the socket and whether
    /// the gateway accepted the offer.
    ///
    /// # Errors
    /// If the connection or the handshake fails.
    pub async fn connect(addr: SocketAddr, query: &str) -> anyhow::Result<(Self, bool)> {
        let tcp = TcpStream::connect(addr).await.context("TCP connect")?;
        tcp.set_nodelay(true)?;
        let mut tcp = Counted::new(tcp);
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        let headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key.as_str()),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Extensions", OFFER),
        ];
        let target = format!("/ws?{query}");
        let request = h1::request("GET", &target, &addr.to_string(), &headers, b"");
        tcp.write_all(&request).await?;
        let mut socket = Self {
            counts: tcp.counts(),
            tcp,
            buf: Vec::with_capacity(8 * 1024),
            inflater: None,
            partial: None,
        };
        let head = loop {
            if let Some(head) = ResponseHead::parse(&socket.buf)? {
                break head;
            }
            socket.fill().await?;
        };
        socket.buf.drain(..head.len);
        if head.status != 101 {
            bail!("the upgrade was answered {} {}", head.status, head.reason);
        }
        let header = |name: &str| head.header(name).map(str::to_owned);
        if header("sec-websocket-accept").as_deref()
            != Some(derive_accept_key(key.as_bytes()).as_str())
        {
            bail!("wrong Sec-WebSocket-Accept");
        }
        if let Some(extensions) = header("sec-websocket-extensions") {
            let params: Vec<&str> = extensions.split(';').map(str::trim).collect();
            if params.first() != Some(&"permessage-deflate") || extensions.contains(',') {
                bail!("the gateway answered extensions we did not offer: {extensions}");
            }
            // Window bits the gateway may use do not matter to an inflater with the full
            // 32 KiB window.
            let context_takeover = !params.contains(&"server_no_context_takeover");
            socket.inflater = Some(MessageInflater::new(context_takeover, MAX_MESSAGE));
        }
        let accepted = socket.inflater.is_some();
        Ok((socket, accepted))
    }

    /// Byte counts of the TCP connection.
    pub fn counts(&self) -> Arc<ByteCounts> {
        Arc::clone(&self.counts)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        self.buf.reserve(8 * 1024);
        if self.tcp.read_buf(&mut self.buf).await? == 0 {
            bail!("connection ended");
        }
        Ok(())
    }

    /// The next data message; `None` when the gateway closed the connection. Cancel-safe:
    /// a frame is taken out of the buffer only once it is complete.
    ///
    /// # Errors
    /// A protocol violation or a failed read.
    pub async fn next(&mut self) -> anyhow::Result<Option<Received>> {
        loop {
            let Some(frame) = parse_frame(&self.buf)? else {
                self.fill().await?;
                continue;
            };
            let payload = self.buf[frame.payload_at..frame.end].to_vec();
            self.buf.drain(..frame.end);
            match frame.opcode {
                0x9 => self.send_control(0xA, &payload).await?,
                0xA => {}
                0x8 => {
                    // Answer the close with the same code, then report the end.
                    self.send_control(0x8, payload.get(..2).unwrap_or(&[]))
                        .await?;
                    return Ok(None);
                }
                0x0..=0x2 => {
                    if let Some(message) = self.assemble(&frame, payload)? {
                        return Ok(Some(message));
                    }
                }
                other => bail!("unknown opcode {other:#x}"),
            }
        }
    }

    fn assemble(
        &mut self,
        frame: &FrameHead,
        payload: Vec<u8>,
    ) -> anyhow::Result<Option<Received>> {
        let (text, compressed, mut data) = match (frame.opcode, self.partial.take()) {
            (0x0, Some(partial)) => partial,
            (0x0, None) => bail!("continuation frame without a message"),
            (_, Some(_)) => bail!("new message inside a fragmented one"),
            (opcode, None) => (opcode == 0x1, frame.rsv1, Vec::new()),
        };
        data.extend_from_slice(&payload);
        if data.len() > MAX_MESSAGE {
            bail!("message over {MAX_MESSAGE} bytes");
        }
        if !frame.fin {
            self.partial = Some((text, compressed, data));
            return Ok(None);
        }
        let payload = if compressed {
            self.inflate(&data)?
        } else {
            data
        };
        Ok(Some(Received {
            text,
            payload,
            compressed,
        }))
    }

    fn inflate(&mut self, compressed: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.inflater
            .as_mut()
            .context("a compressed message without permessage-deflate")?
            .inflate(compressed)
            .map_err(|e| anyhow::anyhow!("inflating a message: {e}"))
    }

    /// A masked control frame (a client must mask everything it sends).
    async fn send_control(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        let payload = &payload[..payload.len().min(ws_frame::MAX_SHORT_LEN as usize)];
        let frame = ws_frame::encode_masked(true, opcode, rand::random(), payload);
        self.tcp.write_all(&frame).await?;
        Ok(())
    }
}

/// Where a complete frame's parts are in the buffer.
#[derive(Debug, PartialEq, Eq)]
struct FrameHead {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload_at: usize,
    end: usize,
}

/// The first frame of `buf`, if all of it is there. Server frames are never masked. The
/// header is read by the client crate's byte-exact parser; what a server may not send is
/// refused here.
fn parse_frame(buf: &[u8]) -> anyhow::Result<Option<FrameHead>> {
    let header = match ws_frame::parse_header(buf) {
        Ok(header) => header,
        Err(ws_frame::HeaderError::Truncated { .. }) => return Ok(None),
        Err(e) => bail!("{e}"),
    };
    if header.rsv2 || header.rsv3 {
        bail!("RSV2/RSV3 set");
    }
    if header.mask.is_some() {
        bail!("a masked frame from the server");
    }
    let len = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
    if len > MAX_MESSAGE {
        bail!("frame over {MAX_MESSAGE} bytes");
    }
    let payload_at = header.payload_offset();
    if buf.len() < payload_at + len {
        return Ok(None);
    }
    Ok(Some(FrameHead {
        fin: header.fin,
        rsv1: header.rsv1,
        opcode: header.opcode,
        payload_at,
        end: payload_at + len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_found_only_when_complete() {
        // RFC 7692 §7.2.3.1: "Hello", compressed, in one frame.
        let frame = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(parse_frame(&frame[..5]).unwrap(), None);
        let head = parse_frame(&frame).unwrap().unwrap();
        assert_eq!(
            head,
            FrameHead {
                fin: true,
                rsv1: true,
                opcode: 1,
                payload_at: 2,
                end: 9
            }
        );
        assert!(parse_frame(&[0x81, 0x85, 0, 0, 0, 0]).is_err(), "masked");
        assert!(parse_frame(&[0xa1, 0x00]).is_err(), "RSV2");
        let mut long = vec![0x82, 126, 0x01, 0x00];
        long.extend_from_slice(&[0; 256]);
        assert_eq!(parse_frame(&long).unwrap().unwrap().end, 260);
    }

    fn socket(context_takeover: bool) -> DeflateSocket {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        client.set_nonblocking(true).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tcp = runtime.block_on(async { TcpStream::from_std(client).unwrap() });
        let tcp = Counted::new(tcp);
        DeflateSocket {
            counts: tcp.counts(),
            tcp,
            buf: Vec::new(),
            inflater: Some(MessageInflater::new(context_takeover, MAX_MESSAGE)),
            partial: None,
        }
    }

    #[test]
    fn the_rfc_examples_inflate() {
        let mut socket = socket(false);
        // §7.2.3.1: one compressed frame.
        let head = parse_frame(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])
            .unwrap()
            .unwrap();
        let message = socket
            .assemble(&head, vec![0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])
            .unwrap()
            .unwrap();
        assert_eq!(message.payload, b"Hello");
        assert!(message.compressed && message.text);
        // §7.2.3.1: the same message in two fragments.
        let first = FrameHead {
            fin: false,
            rsv1: true,
            opcode: 1,
            payload_at: 0,
            end: 0,
        };
        let last = FrameHead {
            fin: true,
            rsv1: false,
            opcode: 0,
            payload_at: 0,
            end: 0,
        };
        assert!(socket
            .assemble(&first, vec![0xf2, 0x48, 0xcd])
            .unwrap()
            .is_none());
        let message = socket
            .assemble(&last, vec![0xc9, 0xc9, 0x07, 0x00])
            .unwrap()
            .unwrap();
        assert_eq!(message.payload, b"Hello");
    }

    #[test]
    fn context_takeover_keeps_the_window() {
        // §7.2.3.2: the second "Hello" refers back to the first.
        let mut socket = socket(true);
        let head = FrameHead {
            fin: true,
            rsv1: true,
            opcode: 1,
            payload_at: 0,
            end: 0,
        };
        let first = socket
            .assemble(&head, vec![0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])
            .unwrap()
            .unwrap();
        let second = socket
            .assemble(&head, vec![0xf2, 0x00, 0x11, 0x00, 0x00])
            .unwrap()
            .unwrap();
        assert_eq!(
            (first.payload, second.payload),
            (b"Hello".to_vec(), b"Hello".to_vec())
        );
    }
}
