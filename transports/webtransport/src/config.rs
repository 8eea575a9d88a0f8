//! WebTransport transport settings.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Settings of the WebTransport transport (the `[webtransport]` table of the gateway
/// configuration).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WtConfig {
    /// Whether to serve WebTransport. Default: true.
    pub enabled: bool,
    /// UDP address of the HTTP/3 endpoint. Default: `127.0.0.1:4433`.
    pub listen: SocketAddr,
    /// The session URL `/wt/cert-hash` reports to pages (`https://wt.example.com:4433/wt`),
    /// for a gateway behind NAT or a UDP load balancer, where the bound address is not the
    /// one clients reach. Default: none, `https://<bound address>/wt` (`127.0.0.1` for an
    /// unspecified address).
    pub public_url: Option<String>,
    /// Most simultaneous sessions; a session over it is closed at once with code 1013.
    /// Default: 10 000.
    pub max_sessions: usize,
    /// Most simultaneous sessions from one client IP, on top of `max_sessions`; 0 means no
    /// such limit. A session request over it is refused with HTTP/3 status `429` (counted
    /// as `too_many_connections`, with its reason in the log). QUIC connections still in
    /// their handshake count too. Behind a proxy or NAT many clients share an address: raise
    /// it (or set 0) there. Default: 256.
    pub max_sessions_per_ip: usize,
    /// Most client-opened bidirectional streams open at once in one session (also the QUIC
    /// stream credit given to the client); one more closes the session with code 1008.
    /// Default: 16.
    pub max_streams_per_session: u32,
    /// Client datagrams per second allowed per session (token bucket); over it closes the
    /// session with code 1008. Default: 50.
    pub max_datagram_rate: f64,
    /// Burst of client datagrams allowed. Default: 100.
    pub datagram_burst: u32,
    /// Largest client message on a stream, in bytes (the length prefix); larger closes the
    /// session with code 1009. Default: 64 KiB.
    pub max_message_size: usize,
    /// QUIC flow-control credit given to a client per stream, in bytes: what it may send on
    /// one stream before the gateway has read it. Subscribers send little (subscription
    /// changes, the odd publish), and every client stream is read as it arrives, the credit
    /// returned as it is read: so a message larger than this still passes, in more round
    /// trips. The connection's credit, all streams together, is 4× this. Default: 64 KiB
    /// (quinn's own is 1.25 MB per stream and no limit per connection).
    pub stream_receive_window: u32,
    /// Bytes quinn may hold for one session's sending, unsent and unacknowledged together,
    /// all streams: what a slow subscriber can make the gateway hold before its writes block
    /// (and, `write_timeout` later, the session is dropped). 256 KiB is ≈ 1 000 events of
    /// 256 bytes, the subscriber queue's worth, and ≈ 20 Mbit/s at a 100 ms round trip.
    /// Default: 256 KiB (quinn's own: 10 MB).
    pub send_window: u32,
    /// Bytes of datagrams queued each way per session: received ones not yet read (the
    /// session reads them as they come; `max_datagram_rate` limits them), and in `datagram`
    /// mode events not yet sent (the oldest is dropped when full: datagrams are unreliable
    /// anyway). Default: 64 KiB (quinn's own: 1.25 MB and 1 MB).
    pub datagram_buffer: u32,
    /// Whether quinn sends bursts of packets with UDP generic segmentation offload (GSO): one
    /// system call for up to 10 packets. Off keeps each session's send buffer at one packet
    /// instead of up to ten, but measured no smaller for idle sessions (69.6 against 69.9 KiB
    /// each at 500 sessions, docs/PERFORMANCE.md), and saturation throughput was no better
    /// with it off. Default: true (quinn's own).
    pub segmentation_offload: bool,
    /// Ignore the three settings above and use quinn's defaults for every window and buffer
    /// (and 100 client unidirectional streams instead of 8; `segmentation_offload` still
    /// applies): the sizing before it was chosen, kept for measuring against. Default: false.
    pub quinn_defaults: bool,
    /// QUIC idle timeout: a peer silent this long is dropped. Default: 10 s.
    ///
    /// This is also what bounds how long a client takes to notice a gateway that died without
    /// closing its sessions (a crash, a host gone): nothing tells the client, and QUIC's idle
    /// timeout — the smaller of the two ends' `max_idle_timeout`, so this one caps a browser's
    /// too — is what ends the session, after which the client resumes from its last id. An
    /// application-level heartbeat would need a new message on the wire, a deadline in every
    /// client and care for old clients; the QUIC one is already negotiated by every client,
    /// browsers included (which expose no QUIC keep-alive to the page), so the simplest correct
    /// bound is a short idle timeout with `keep_alive_interval` PINGs well inside it keeping
    /// healthy sessions alive however quiet their topics are (30 s before: crashes were noticed
    /// after ~21 s in Chromium).
    #[serde(with = "streamgate_proto::duration_secs")]
    pub idle_timeout: Duration,
    /// QUIC keep-alive (PING) interval, well below the idle timeout (three PINGs lost in a row
    /// before a live session is dropped). Default: 3 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub keep_alive_interval: Duration,
    /// Time a write may stay blocked (a client that stopped reading) before the session is
    /// dropped. Default: 5 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub write_timeout: Duration,
    /// Age at which a generated (self-signed) certificate is replaced by a fresh one. It is
    /// valid for 13 days, so the default leaves 3 days for pages that fetched the old hash.
    /// Default: 10 days (864 000 s).
    #[serde(with = "streamgate_proto::duration_secs")]
    pub cert_rotation: Duration,
}

impl Default for WtConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            public_url: None,
            max_sessions: 10_000,
            max_sessions_per_ip: 256,
            max_streams_per_session: 16,
            max_datagram_rate: 50.0,
            datagram_burst: 100,
            max_message_size: 64 * 1024,
            stream_receive_window: 64 * 1024,
            send_window: 256 * 1024,
            datagram_buffer: 64 * 1024,
            segmentation_offload: true,
            quinn_defaults: false,
            idle_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(3),
            write_timeout: Duration::from_secs(5),
            cert_rotation: Duration::from_secs(10 * 24 * 3600),
        }
    }
}
