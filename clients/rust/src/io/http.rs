//! A plain HTTP/1.1 connection on tokio, speaking through the sans-IO [`crate::h1`] pieces:
//! what the SSE, long-poll and WebTransport adapters and `publish` need, no more. Public so
//! that tests and tools that drive one transport by hand (the soak test, `inspect`) reuse it
//! instead of writing their own.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Ended, Gateway};
use crate::h1::{self, BodyFraming, ChunkedDecoder, ResponseHead};
use crate::{describe_http_error, CloseFlags};

/// Largest whole body read (a long-poll batch is at most 256 KiB of events, each possibly a
/// 1 MiB payload in base64: the gateway always sends at least one event).
pub const MAX_BODY: usize = 4 << 20;

/// Where a response body is: what is left of it, by its framing.
#[derive(Debug)]
pub enum Body {
    /// This many bytes are left.
    Length(u64),
    /// A chunked body, being decoded.
    Chunked(ChunkedDecoder),
    /// Until the connection closes.
    UntilClose,
    /// All read (or none was sent).
    Done,
}

/// One HTTP/1.1 connection: requests one after another (keep-alive), each answer's head
/// parsed by [`ResponseHead::parse`], its body read as it arrives.
#[derive(Debug)]
pub struct HttpConn {
    stream: TcpStream,
    /// Bytes read and not consumed yet.
    buffer: Vec<u8>,
    authority: String,
}

impl HttpConn {
    /// Connects (`TCP_NODELAY`); nothing is sent yet.
    ///
    /// # Errors
    /// The connection failed, in words.
    pub async fn open(gateway: &Gateway) -> Result<Self, String> {
        let stream = TcpStream::connect(gateway.authority())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", gateway.authority()))?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            buffer: Vec::new(),
            authority: gateway.authority(),
        })
    }

    /// Sends a request and reads the answer's head.
    ///
    /// # Errors
    /// The connection failed or closed, or the answer is not HTTP/1.x, in words.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(ResponseHead, Body), String> {
        let request = h1::request(method, target, &self.authority, headers, body);
        self.stream
            .write_all(&request)
            .await
            .map_err(|e| format!("{method} {target}: {e}"))?;
        loop {
            if let Some(head) = ResponseHead::parse(&self.buffer).map_err(|e| e.to_string())? {
                self.buffer.drain(..head.len);
                let body = match head.framing() {
                    BodyFraming::Empty | BodyFraming::Length(0) => Body::Done,
                    BodyFraming::Length(n) => Body::Length(n),
                    BodyFraming::Chunked => Body::Chunked(ChunkedDecoder::default()),
                    BodyFraming::UntilClose => Body::UntilClose,
                };
                return Ok((head, body));
            }
            if self.fill().await? == 0 {
                return Err(format!(
                    "{method} {target}: the connection closed before an answer"
                ));
            }
        }
    }

    async fn fill(&mut self) -> Result<usize, String> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next piece of the body; `None` at its end. Cancel-safe: a piece read is kept in
    /// `self` until it is returned.
    ///
    /// # Errors
    /// The connection failed or closed inside the body, or a malformed chunk, in words.
    pub async fn chunk(&mut self, body: &mut Body) -> Result<Option<Vec<u8>>, String> {
        loop {
            if !self.buffer.is_empty() {
                match body {
                    Body::Done => return Ok(None),
                    Body::Length(left) => {
                        let n = self
                            .buffer
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        let piece: Vec<u8> = self.buffer.drain(..n).collect();
                        *left -= n as u64;
                        if *left == 0 {
                            *body = Body::Done;
                        }
                        return Ok(Some(piece));
                    }
                    Body::UntilClose => return Ok(Some(std::mem::take(&mut self.buffer))),
                    Body::Chunked(decoder) => {
                        let mut out = Vec::new();
                        let used = decoder
                            .feed(&self.buffer, &mut out)
                            .map_err(|e| e.to_string())?;
                        self.buffer.drain(..used);
                        if decoder.is_done() {
                            *body = Body::Done;
                        }
                        if !out.is_empty() {
                            return Ok(Some(out));
                        }
                        if matches!(body, Body::Done) {
                            return Ok(None);
                        }
                    }
                }
            } else if matches!(body, Body::Done) {
                return Ok(None);
            }
            if self.fill().await? == 0 {
                return match body {
                    Body::UntilClose => {
                        *body = Body::Done;
                        Ok(None)
                    }
                    Body::Done => Ok(None),
                    _ => Err("the connection closed inside a body".to_owned()),
                };
            }
        }
    }

    /// The whole body, at most [`MAX_BODY`] bytes.
    ///
    /// # Errors
    /// As [`HttpConn::chunk`], and a body over [`MAX_BODY`].
    pub async fn read_body(&mut self, body: &mut Body) -> Result<Vec<u8>, String> {
        let mut all = Vec::new();
        while let Some(piece) = self.chunk(body).await? {
            all.extend_from_slice(&piece);
            if all.len() > MAX_BODY {
                return Err(format!("an answer over {MAX_BODY} bytes"));
            }
        }
        Ok(all)
    }
}

/// One request on a new connection, its whole answer within `timeout`.
///
/// # Errors
/// As [`HttpConn::request`] and [`HttpConn::read_body`], and no answer within `timeout`.
pub async fn exchange(
    gateway: &Gateway,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<(ResponseHead, Vec<u8>), String> {
    let run = async {
        let mut conn = HttpConn::open(gateway).await?;
        let (head, mut framing) = conn.request(method, target, headers, body).await?;
        let body = conn.read_body(&mut framing).await?;
        Ok((head, body))
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| {
        format!(
            "{method} {target}: no answer within {} ms",
            timeout.as_millis()
        )
    })?
}

/// An HTTP error answer as the end of a connection: 400, 401 and 403 would be the same on
/// every transport, so they end the subscription; anything else (404: the transport is off in
/// the gateway's config; 429; 5xx) moves on to the next transport.
pub(crate) fn refusal(status: u16, body: &[u8]) -> Ended {
    let (reason, code) = describe_http_error(status, body);
    Ended {
        reason,
        flags: CloseFlags {
            fatal: matches!(status, 400 | 401 | 403),
            code,
            permanent: false,
        },
    }
}
