//! `fanout`: every transport through a real `streamgate` process, side by side.
//!
//! ```text
//! cargo build --release -p streamgate -p streamgate-bench
//! target/release/fanout --subscribers 100,1000,10000 --rate 10 --repeat 3
//! ```
//!
//! The same code as `streamgate compare` (crate `streamgate-compare`), with the workspace's
//! release build (`target/release/streamgate`) as the default gateway. `bench/README.md`
//! says what every figure means.

use std::process::ExitCode;

use clap::Parser;
use streamgate_compare::CompareArgs;

/// Every transport through a streamgate gateway process: setup time, latency, throughput,
/// bytes on the wire, CPU and memory per connection.
#[derive(Debug, Parser)]
#[command(name = "fanout")]
struct Cli {
    #[command(flatten)]
    args: CompareArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match streamgate_compare::run(&cli.args, &streamgate_compare::workspace_release_gateway()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout: {e:#}");
            ExitCode::FAILURE
        }
    }
}
