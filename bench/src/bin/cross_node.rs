//! `cross_node`: what a broker bus costs, against the in-memory bus on the same machine, in
//! one run.
//!
//! ```text
//! cargo build --release -p streamgate
//! cargo run --release -p streamgate-bench --bin cross_node
//! ```
//!
//! The load of `fanout` (one WebSocket publisher, subscribers of each transport, an
//! open-loop phase for latency, a saturated one for throughput) on three deployments, run
//! after one another in each repeat: `memory` (one gateway), `redis` and `nats` (two gateway
//! processes sharing the broker: the publisher on node A, every subscriber on node B, so
//! latency is publish on one process → receive on another). It prints compare's table, then
//! latency p50/p99/p99.9 and delivered events/s at saturation with the ratio of each broker
//! row to the memory row of the same run.
//!
//! These are the options of `streamgate compare` (the same code, crate
//! `streamgate-compare`) with other defaults: `--transport ws,sse --bus memory,redis,nats
//! --nodes 2 --repeat 3`; `--redis-url` and `--nats-url` name the brokers. The gateway is
//! the `streamgate` built next to this program (else `target/release/streamgate`); it needs
//! its Redis and NATS support. `docs/SCALE_OUT.md` has figures.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use streamgate_compare::CompareArgs;

/// Latency and throughput of the broker buses against the memory bus, across two gateway
/// processes.
#[derive(Debug, Parser)]
#[command(name = "cross_node")]
struct Cli {
    #[command(flatten)]
    args: CompareArgs,
}

/// The command line with this tool's defaults: compare's options, derived once, so the
/// defaults change here and nowhere else.
fn command() -> clap::Command {
    Cli::command()
        .mut_arg("transport", |arg| arg.default_values(["ws", "sse"]))
        .mut_arg("bus", |arg| arg.default_values(["memory", "redis", "nats"]))
        .mut_arg("nodes", |arg| arg.default_value("2"))
        .mut_arg("repeat", |arg| arg.default_value("3"))
}

/// The gateway binary: the `streamgate` that cargo built into the same directory as this
/// program (whatever `CARGO_TARGET_DIR` is), else the workspace's release build.
fn default_gateway() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("streamgate")))
        .filter(|path| path.is_file())
        .unwrap_or_else(streamgate_compare::workspace_release_gateway)
}

fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match streamgate_compare::compare(&cli.args, &default_gateway())
        .and_then(|comparison| comparison.ensure_lossless())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cross_node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use streamgate_compare::{Bus, Deployment, Transport};

    use super::*;

    fn plan(argv: &[&str]) -> streamgate_compare::args::Plan {
        let matches = command()
            .try_get_matches_from(std::iter::once("cross_node").chain(argv.iter().copied()))
            .unwrap();
        Cli::from_arg_matches(&matches)
            .unwrap()
            .args
            .plan()
            .unwrap()
    }

    #[test]
    fn memory_redis_and_nats_on_two_nodes_by_default() {
        let plan = plan(&[]);
        assert_eq!(plan.transports, [Transport::Ws, Transport::Sse]);
        assert_eq!(plan.repeat, 3);
        assert_eq!(
            plan.deployments,
            [
                Deployment::MEMORY,
                Deployment {
                    bus: Bus::Redis,
                    nodes: 2
                },
                Deployment {
                    bus: Bus::Nats,
                    nodes: 2
                },
            ]
        );
    }

    #[test]
    fn every_default_can_be_overridden() {
        let plan = plan(&[
            "--transport",
            "longpoll",
            "--bus",
            "memory,nats",
            "--nodes",
            "3",
            "--repeat",
            "1",
        ]);
        assert_eq!(plan.transports, [Transport::Longpoll]);
        assert_eq!(plan.repeat, 1);
        let labels: Vec<String> = plan.deployments.iter().map(|d| d.label()).collect();
        assert_eq!(labels, ["memory", "nats×3"]);
    }
}
