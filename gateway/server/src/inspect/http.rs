//! What the three TCP clients share: connecting, sending a request head and reading a
//! response head, each printed with its notes.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use streamgate_proto::wire_notes::{annotate_http_head, Note};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{Printer, Side, StopWhen};

/// Longest a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A response head larger than this is not one streamgate sends.
const MAX_HEAD: usize = 64 * 1024;
/// Longest the body after a head may take: the server has it ready when it sends the head.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the TCP connection and says what it cost.
pub(super) async fn connect(authority: &str, printer: &mut Printer) -> anyhow::Result<TcpStream> {
    let started = Instant::now();
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
        .await
        .with_context(|| format!("no TCP connection to {authority} within {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("TCP connect to {authority}"))?;
    // Small writes (a pong, a close frame) go out at once, as a browser's would.
    tcp.set_nodelay(true)?;
    let local = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    printer.say(&format!(
        "TCP connected to {peer} from {local} in {:.1} ms: the handshake (SYN, SYN-ACK, ACK) is one round trip before any HTTP byte",
        started.elapsed().as_secs_f64() * 1000.0
    ));
    Ok(tcp)
}

/// Writes a request head and prints it, annotated.
pub(super) async fn send_head(
    tcp: &mut TcpStream,
    head: &str,
    what: &str,
    printer: &mut Printer,
) -> anyhow::Result<Note> {
    tcp.write_all(head.as_bytes())
        .await
        .context("sending the request")?;
    let (note, _) = annotate_http_head(head.as_bytes()).context("a request head we built")?;
    printer.record(Side::Client, what, head.len(), std::slice::from_ref(&note));
    Ok(note)
}

/// What reading a response head came to.
#[derive(Debug)]
pub(super) enum HeadRead {
    /// The head; `buf` now starts after it.
    Head(Note),
    /// The run was stopped (`--duration`, Ctrl-C) first.
    Stopped,
}

/// Reads until `buf` holds a whole response head, prints it and takes it out of `buf`; what
/// follows the head stays in `buf`.
pub(super) async fn read_head(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    stop: &StopWhen,
    what: &str,
    printer: &mut Printer,
) -> anyhow::Result<HeadRead> {
    loop {
        if let Some((note, consumed)) = annotate_http_head(buf) {
            printer.record(Side::Server, what, consumed, std::slice::from_ref(&note));
            buf.drain(..consumed);
            return Ok(HeadRead::Head(note));
        }
        if buf.len() > MAX_HEAD {
            bail!("no end of the response head in {MAX_HEAD} bytes");
        }
        tokio::select! {
            _ = stop.reached() => return Ok(HeadRead::Stopped),
            read = tcp.read_buf(buf) => {
                if read.context("reading the response")? == 0 {
                    bail!("the server closed the connection before its response head was complete");
                }
            }
        }
    }
}

/// A header's value in an annotated head (case-insensitive name).
pub(super) fn header<'a>(head: &'a Note, name: &str) -> Option<&'a str> {
    head.children
        .iter()
        .find(|n| n.bytes.is_some() && n.label.eq_ignore_ascii_case(name))
        .map(|n| n.value.as_str())
}

/// The status code of an annotated response head.
pub(super) fn status(head: &Note) -> Option<u16> {
    head.find("status code")?.value.parse().ok()
}

/// Reads a `Content-Length` body after a head (for error answers and poll responses).
pub(super) async fn read_body(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    len: usize,
) -> anyhow::Result<Vec<u8>> {
    let read = async {
        while buf.len() < len {
            if tcp.read_buf(buf).await.context("reading the body")? == 0 {
                bail!(
                    "the connection ended {} bytes into a {len}-byte body",
                    buf.len()
                );
            }
        }
        Ok(())
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .with_context(|| format!("no {len}-byte body within {BODY_TIMEOUT:?}"))??;
    Ok(buf.drain(..len).collect())
}
