//! # streamgate-lab
//!
//! The teaching lab: everything that shows what the protocols put on the wire, apart from the
//! gateway that serves them and from the protocol logic itself (`streamgate-proto`).
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`wire_notes`] | the byte annotator: captured bytes in, a tree of notes out (sans-IO, fuzzed) |
//! | [`taps`] | the capture store: tap ids issued to clients, one bounded ring of records per tap |
//! | [`capture`] | the gateway's half of tapping HTTP: request and response heads, streamed body chunks |
//! | [`view`] | a tap's records put back together and annotated, when the lab page asks |
//! | [`inspect`] | `streamgate explain-frame` and `streamgate inspect`: the lab on the command line |
//!
//! The gateway (`streamgate`) depends on this crate: it serves the page and routes
//! `/lab/api/*` to [`taps`] and [`view`], wraps tapped responses with [`capture`], and keeps
//! `explain-frame` and `inspect` as subcommands. `inspect wt` needs the `webtransport`
//! feature (wtransport and quinn), which the gateway's own `webtransport` feature turns on.
#![warn(missing_docs)]

pub mod capture;
pub mod inspect;
pub mod taps;
pub mod view;
pub mod wire_notes;
