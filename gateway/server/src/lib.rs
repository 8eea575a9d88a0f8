//! # streamgate
//!
//! The gateway binary's library: configuration, the HTTP server and its routes, the demo
//! source and upstream ingest. Transports plug into the router; the event bus comes from
//! [`streamgate_core`].
//!
//! ```no_run
//! use streamgate::{config::GatewayConfig, Gateway};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let gateway = Gateway::bind(GatewayConfig::default()).await?;
//! println!("listening on {}", gateway.local_addr()?);
//! gateway.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod app;
pub mod auth;
pub mod bus;
mod capacity;
mod client_limits;
mod client_module;
pub mod config;
pub mod demo;
pub mod h1;
mod http;
mod hyper_conn;
mod idle;
/// `streamgate explain-frame` and `streamgate inspect`: the teaching lab on the command line
/// (from `streamgate-lab`).
pub use streamgate_lab::inspect;
mod lab;
mod limits;
mod prometheus;
mod server;
mod switches;
#[doc(hidden)]
pub mod testkit;
pub mod tls;
// Without the `upstream` feature, a stand-in that ingests nothing (configuration validation
// refuses `[[sources]]` in such a build).
#[cfg_attr(not(feature = "upstream"), path = "upstream_off.rs")]
mod upstream;

pub use app::App;
pub use capacity::Listener;
pub use http::Body;
pub use server::{Gateway, ShutdownOutcome};
pub use streamgate_core::Rejection;
#[cfg(feature = "upstream")]
pub use upstream::run as run_upstream_source;
