//! permessage-deflate (RFC 7692) for the gateway's WebSocket, server side, beside tungstenite.
//!
//! tungstenite 0.30 has no compression extension and refuses every frame with RSV1 set. No
//! maintained crate adds deflate to tungstenite, and the one engine with deflate we evaluated
//! failed Autobahn (docs/WEBSOCKET_ENGINE.md), so the extension is built here, small and in
//! three independent pieces, each testable without a socket:
//!
//! 1. [`negotiate`]: reads the client's `Sec-WebSocket-Extensions` offers and chooses the
//!    parameters (a pure function of the request headers);
//! 2. [`compress`]: outbound. The server always declares `server_no_context_takeover`, so a
//!    message compresses the same way for every client; the session compresses each event
//!    once, caches it in the event like any other wire format, and sends it as a tungstenite
//!    frame with RSV1 set — tungstenite writes frames it is given as they are;
//! 3. [`Inbound`] (inside [`DeflateIo`], the socket wrapper tungstenite reads through):
//!    inbound. It takes compressed messages out of the client's byte stream, inflates them,
//!    and hands tungstenite ordinary frames, so all of tungstenite's framing checks and close
//!    codes still apply.

mod compress;
mod inbound;
mod io;
mod negotiate;

pub use compress::{compress, MIN_COMPRESS_SIZE, TRAILER};
pub use inbound::{Failure, Inbound};
pub use io::DeflateIo;
pub use negotiate::{
    negotiate, negotiate_values, DeflateParams, PERMESSAGE_DEFLATE, SERVER_WINDOW_BITS,
};
