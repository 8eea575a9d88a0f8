//! [`TapIo`]: the upgraded connection with an optional wire tap, for the gateway's lab.
//!
//! It sits directly on the socket, under [`DeflateIo`](crate::deflate::DeflateIo), so what
//! it records is what crossed the wire: compressed frames still compressed, client frames
//! still masked, several frames in one write when tungstenite batched them. It records and
//! never parses; the lab makes sense of the bytes when someone looks at them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use streamgate_core::{Direction, RecordKind, Tap};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An `AsyncRead + AsyncWrite` that copies the bytes it passes to a [`Tap`], when it has one.
///
/// Without a tap every call passes straight through after one `Option` check: every
/// WebSocket connection goes through this type, so an untapped one must not pay more.
#[derive(Debug)]
pub struct TapIo<T> {
    inner: T,
    tap: Option<Tap>,
    /// Bytes read so far: the offset of the next read's record in the inbound stream.
    read: u64,
    /// Bytes written so far.
    written: u64,
}

impl<T> TapIo<T> {
    /// Wraps `inner`; `tap` is `None` for every connection the lab did not ask about.
    pub fn new(inner: T, tap: Option<Tap>) -> Self {
        Self {
            inner,
            tap,
            read: 0,
            written: 0,
        }
    }

    fn record_read(&mut self, bytes: &[u8]) {
        if let Some(tap) = &self.tap {
            if !bytes.is_empty() {
                let kind = RecordKind::WsBytes { offset: self.read };
                tap.record(Direction::In, kind, bytes);
                self.read += bytes.len() as u64;
            }
        }
    }

    fn record_written(&mut self, bytes: &[u8]) {
        if let Some(tap) = &self.tap {
            if !bytes.is_empty() {
                let kind = RecordKind::WsBytes {
                    offset: self.written,
                };
                tap.record(Direction::Out, kind, bytes);
                self.written += bytes.len() as u64;
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TapIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tap.is_none() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.record_read(&buf.filled()[before..]);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TapIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            // Only what the socket took: the rest comes back in a later call.
            this.record_written(&buf[..n.min(buf.len())]);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if this.tap.is_some() {
            if let Poll::Ready(Ok(n)) = result {
                let mut taken = Vec::with_capacity(n);
                for slice in bufs {
                    let want = n - taken.len();
                    if want == 0 {
                        break;
                    }
                    taken.extend_from_slice(&slice[..want.min(slice.len())]);
                }
                this.record_written(&taken);
            }
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use streamgate_core::TapSink;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[derive(Debug, Default)]
    struct Recorded(Mutex<Vec<(Direction, RecordKind, Vec<u8>)>>);

    impl TapSink for Recorded {
        fn record(&self, direction: Direction, kind: RecordKind, bytes: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .push((direction, kind, bytes.to_vec()));
        }
    }

    #[tokio::test]
    async fn records_what_crosses_the_socket_with_stream_offsets() {
        let (mut client, server) = tokio::io::duplex(64);
        let recorded = Arc::new(Recorded::default());
        let mut io = TapIo::new(server, Some(Tap::new(recorded.clone())));
        client.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 3];
        io.read_exact(&mut got).await.unwrap();
        io.write_all(b"hello").await.unwrap();
        io.write_all(b"!").await.unwrap();
        let mut echoed = [0u8; 6];
        client.read_exact(&mut echoed).await.unwrap();
        let recorded = recorded.0.lock().unwrap();
        assert_eq!(
            *recorded,
            vec![
                (
                    Direction::In,
                    RecordKind::WsBytes { offset: 0 },
                    b"abc".to_vec()
                ),
                (
                    Direction::Out,
                    RecordKind::WsBytes { offset: 0 },
                    b"hello".to_vec()
                ),
                (
                    Direction::Out,
                    RecordKind::WsBytes { offset: 5 },
                    b"!".to_vec()
                ),
            ]
        );
    }

    #[tokio::test]
    async fn without_a_tap_bytes_pass_through() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = TapIo::new(server, None);
        io.write_all(b"out").await.unwrap();
        let mut got = [0u8; 3];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"out");
    }
}
