//! [`DeflateIo`]: the upgraded connection as tungstenite sees it, with the inbound half of
//! permessage-deflate in the read path.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::inbound::{Failure, Inbound};

/// Bytes read from the socket per turn of the inbound machine.
const READ_CHUNK: usize = 4096;

/// An `AsyncRead + AsyncWrite` around the upgraded connection.
///
/// Writes pass straight through: outbound compression happens before tungstenite, in the
/// messages the session hands it (a compressed message is a frame with RSV1 set, which
/// tungstenite writes as it is). Reads go through [`Inbound`] when permessage-deflate was
/// negotiated, so tungstenite only ever sees uncompressed frames; without it they pass
/// straight through too.
#[derive(Debug)]
pub struct DeflateIo<T> {
    inner: T,
    inbound: Option<Box<Inbound>>,
    /// Where a failure of the inbound machine is published for the session, which reads the
    /// close reason from it once tungstenite reports the error.
    failure: Arc<OnceLock<Failure>>,
}

impl<T> DeflateIo<T> {
    /// Wraps `inner`; `inbound` is `None` when the connection is not compressed.
    pub fn new(inner: T, inbound: Option<Inbound>) -> Self {
        Self {
            inner,
            inbound: inbound.map(Box::new),
            failure: Arc::new(OnceLock::new()),
        }
    }

    /// The cell the inbound machine's [`Failure`] is published in.
    pub fn failure(&self) -> Arc<OnceLock<Failure>> {
        Arc::clone(&self.failure)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeflateIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(inbound) = this.inbound.as_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            let ready = inbound.output();
            if !ready.is_empty() {
                let n = ready.len().min(buf.remaining());
                buf.put_slice(&ready[..n]);
                inbound.consume(n);
                return Poll::Ready(Ok(()));
            }
            if inbound.at_eof() {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut chunk = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            if chunk.filled().is_empty() {
                // End of stream, perhaps inside a frame: tungstenite reports it either way.
                return Poll::Ready(Ok(()));
            }
            inbound.push(chunk.filled());
            if let Some(failure) = inbound.failure() {
                let _ = this.failure.set(failure.clone());
            }
            // A compressed frame in progress yields no output yet: read on rather than
            // return an empty read, which would mean end of stream.
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeflateIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_are_rewritten_and_writes_pass_through() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = DeflateIo::new(server, Some(Inbound::new(1024, false)));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        // RFC 7692's compressed "Hello", masked with key 0, in two writes.
        let frame = [
            0xc1, 0x87, 0, 0, 0, 0, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00,
        ];
        let writer = tokio::spawn(async move {
            client_write.write_all(&frame[..4]).await.unwrap();
            tokio::task::yield_now().await;
            client_write.write_all(&frame[4..]).await.unwrap();
            client_write
        });
        let mut got = [0u8; 11];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x81, 0x85, 0, 0, 0, 0, b'H', b'e', b'l', b'l', b'o']);
        io.write_all(b"out").await.unwrap();
        let mut echoed = [0u8; 3];
        client_read.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"out");
        // The client goes away: end of stream.
        drop(writer.await.unwrap());
        drop(client_read);
        let mut rest = Vec::new();
        assert_eq!(io.read_to_end(&mut rest).await.unwrap(), 0);
        assert!(io.failure().get().is_none());
    }

    #[tokio::test]
    async fn a_failure_is_published() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = DeflateIo::new(server, Some(Inbound::new(1024, false)));
        // A ping with RSV1.
        client.write_all(&[0xc9, 0x80, 0, 0, 0, 0]).await.unwrap();
        let mut got = [0u8; 6];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got[0], 0xa1);
        let failure = io.failure().get().cloned().unwrap();
        assert_eq!(u16::from(failure.code), 1002);
    }
}
