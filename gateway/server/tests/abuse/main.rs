//! The abuse suite (issue "Hardening II"): each module is one attack a single anonymous
//! client can make on a gateway running its defaults. Every test drives the attack, asserts
//! the refusal (an HTTP status or a close code, with its reason), shows that a second,
//! well-behaved client is still served (and prints its latency), and, where the attack aims
//! at memory, that the gateway stays under its configured caps.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod connections;
mod echo;
mod history;
mod json;
mod lab;
mod origin;
mod slow_requests;
mod topics;
