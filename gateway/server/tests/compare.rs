//! `streamgate compare`: the quick run a user would start first, checked end to end, and
//! the config it starts each gateway with.

#![cfg(feature = "compare")]

use std::path::{Path, PathBuf};
use std::process::Command;

use streamgate::config::GatewayConfig;
use streamgate_compare::gateway::{gateway_config, Endpoints, EXTRA_CONNECTIONS};
use streamgate_compare::Transport;

#[test]
fn quick_comparison_fills_every_row_and_loses_nothing() {
    let dir = output_dir("compare");
    let chart = dir.join("compare.svg");
    let (report, stdout) = run_compare(&dir, &["--chart", path(&chart)]);
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|row| row["transport"].as_str().unwrap())
        .collect();
    let every: Vec<&str> = Transport::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(names, every, "a row per transport, in order");
    for row in rows {
        let name = row["transport"].as_str().unwrap();
        let figure = |key: &str| {
            row[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: no {key} in {row}"))
        };
        // Every event published reached every subscriber, datagrams included (loopback,
        // 200 events/s: nothing to lose them to).
        let expected = figure("expected_deliveries");
        assert_eq!(
            expected,
            10.0 * 200.0,
            "{name}: 10 subscribers × 200 events"
        );
        assert_eq!(
            figure("deliveries"),
            expected,
            "{name}: every event arrived"
        );
        assert_eq!(figure("missing"), 0.0, "{name}");
        // Per-event streams and datagrams may overtake each other; the rest may not.
        if !name.starts_with("wt-stream-per") && name != "wt-datagram" {
            assert_eq!(figure("misordered"), 0.0, "{name}: in order");
        }
        assert_eq!(
            figure("id_mismatches"),
            0.0,
            "{name}: the same ids everywhere"
        );
        assert_eq!(figure("dropped"), 0.0, "{name}");
        if name != "wt-datagram" {
            assert_eq!(
                figure("saturation_missing"),
                0.0,
                "{name}: reliable at saturation"
            );
        }
        // All figures filled in.
        for key in [
            "setup_p50_ms",
            "setup_p99_ms",
            "setup_bytes_down",
            "saturated_per_sec",
            "wire_down_per_event",
            "message_bytes_per_event",
            "gateway_cpu_ms_per_1k",
            "gateway_cpu_ms_per_1k_saturated",
        ] {
            assert!(figure(key) > 0.0, "{name}: {key} is {}", figure(key));
        }
        for key in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
            let value = row["latency"][key].as_f64().unwrap();
            assert!(value > 0.0, "{name}: latency {key} is {value}");
        }
        assert!(figure("gateway_rss_per_connection_kib") >= 0.0, "{name}");
        // Bytes on the wire include framing: never fewer than the envelopes, unless the
        // gateway compressed them.
        if row["compression_ratio"].is_null() {
            assert!(
                figure("wire_down_per_event") >= figure("message_bytes_per_event"),
                "{name}: wire bytes below envelope bytes"
            );
        }
        assert!(
            !row["latency_distribution"].as_array().unwrap().is_empty(),
            "{name}: no distribution for the chart"
        );
    }
    // Long polling writes a request per poll; a WebSocket subscriber writes nothing.
    let row = |name: &str| rows.iter().find(|r| r["transport"] == name).unwrap();
    assert!(row("longpoll")["wire_up_per_event"].as_f64().unwrap() > 0.0);
    assert_eq!(row("ws")["wire_up_per_event"].as_f64().unwrap(), 0.0);
    // The deflate row says whether the gateway compressed, and by how much if it did.
    let deflate = row("ws-deflate");
    // The gateway compresses by default; the events (JSON padded with words) compress.
    assert_eq!(deflate["deflate_accepted"], true, "{deflate}");
    let ratio = deflate["compression_ratio"].as_f64().unwrap();
    assert!(ratio > 1.2, "ws-deflate: compression ratio {ratio}");
    assert!(
        deflate["wire_down_per_event"].as_f64().unwrap()
            < row("ws")["wire_down_per_event"].as_f64().unwrap(),
        "compressed events take fewer bytes than plain ones"
    );
    // The table names every transport.
    for name in every {
        assert!(
            stdout.contains(name),
            "{name} missing from the table:\n{stdout}"
        );
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.contains("<svg"), "not an SVG");
    assert!(svg.contains("wt-datagram"), "series missing from the chart");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory for one test's outputs (the test removes it when it passes).
fn output_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamgate-{test}-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary directory")
}

/// Runs `streamgate compare --quick --no-progress` with `args` and `--json` into `dir`, failing
/// the test with both outputs unless it succeeds; returns the JSON report and the table
/// (standard output).
fn run_compare(dir: &Path, args: &[&str]) -> (serde_json::Value, String) {
    let json = dir.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["compare", "--quick", "--no-progress"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (report, stdout)
}

#[test]
fn bad_options_are_refused_before_anything_starts() {
    let output = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["compare", "--payload-bytes", "10", "--no-progress"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--payload-bytes"), "{stderr}");
}

#[test]
fn the_gateway_accepts_the_config_compare_writes() {
    let endpoints = Endpoints::free_loopback().unwrap();
    let text = gateway_config(10_000, 2048, 50_000, 100_000, &endpoints);
    let config = GatewayConfig::from_toml(&text, Path::new("run.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.server.max_connections, 10_000 + EXTRA_CONNECTIONS);
    assert_eq!(config.server.listen, endpoints.http);
    assert_eq!(config.bus.subscriber_queue, 2048);
    assert_eq!(config.bus.history_events, 50_000);
    assert!(config.bus.max_payload >= 100_000);
    assert!(config.ws.max_message_size >= 200_000);
    assert!(config.ws.message_rate >= 1e9);
    assert!(!config.demo.enabled);
    assert!(config.tls.enabled);
    assert!(config.webtransport.enabled);
}

/// `--netem` puts the gateway behind an impaired link: every figure must show the delay.
/// Needs root (network namespaces); says so and passes without it.
#[test]
fn netem_runs_show_the_link_delay() {
    if !is_root() {
        eprintln!("skipped: --netem needs root");
        return;
    }
    let dir = output_dir("netem");
    let (report, _) = run_compare(
        &dir,
        &[
            "--netem",
            "delay 5ms",
            "--transport",
            "ws,wt-datagram",
            "--setup-samples",
            "3",
            "--saturate-events",
            "0",
        ],
    );
    assert!(report["impairment"].as_str().unwrap().contains("delay 5ms"));
    assert_eq!(report["latency_from_gateway_timestamp"], true);
    for row in report["rows"].as_array().unwrap() {
        let name = row["transport"].as_str().unwrap();
        // 5 ms each way: every delivery crosses the link once, every setup at least twice
        // (TCP then the upgrade; QUIC's handshake then CONNECT).
        let p50 = row["latency"]["p50_us"].as_f64().unwrap();
        assert!(
            p50 >= 5_000.0,
            "{name}: latency p50 {p50} µs under the link's 5 ms"
        );
        let setup = row["setup_p50_ms"].as_f64().unwrap();
        assert!(
            setup >= 20.0,
            "{name}: setup {setup} ms under two round trips"
        );
        assert_eq!(
            row["missing"].as_f64().unwrap(),
            0.0,
            "{name}: no loss was asked for"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Two gateway processes sharing one Redis: the publisher on node A, ten subscribers on
/// node B, so every event crosses from one process to the other through the broker.
///
/// Runs only in a build with the Redis bus (`bus.backend = "redis"`: the `redis` feature, on
/// by default), on a `redis-server` of the test's own (or the server at `REDIS_URL`).
#[test]
#[cfg_attr(
    not(feature = "redis"),
    ignore = "needs the `redis` feature (bus.backend = \"redis\")"
)]
fn cross_node_over_redis_delivers_every_event_with_the_same_ids() {
    let redis_url = streamgate_test_brokers::redis_url();
    let dir = output_dir("cross-node");
    let (report, stdout) = run_compare(
        &dir,
        &[
            "--transport",
            "ws",
            "--bus",
            "redis",
            "--nodes",
            "2",
            "--redis-url",
            &redis_url,
        ],
    );
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "one row: ws on redis×2");
    let row = &rows[0];
    assert_eq!(row["transport"], "ws");
    assert_eq!(row["bus"], "redis×2");
    assert_eq!(row["nodes"], 2);
    let figure = |key: &str| {
        row[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no {key} in {row}"))
    };
    // Every subscriber on node B received every event published on node A …
    assert_eq!(figure("expected_deliveries"), 10.0 * 200.0);
    assert_eq!(figure("deliveries"), figure("expected_deliveries"));
    assert_eq!(figure("missing"), 0.0);
    assert_eq!(figure("saturation_missing"), 0.0);
    assert_eq!(figure("misordered"), 0.0);
    assert_eq!(figure("dropped"), 0.0);
    // … with the same ids.
    assert_eq!(figure("id_mismatches"), 0.0);
    assert!(row["latency"]["p50_us"].as_f64().unwrap() > 0.0);
    assert!(figure("saturated_per_sec") > 0.0);
    // The gateway figures cover both nodes, and the output says so.
    let run = &row["runs"][0];
    assert_eq!(
        run["open_loop"]["gateway_cpu_ms_per_1k_by_node"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(report["multi_node_figures"].is_string());
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("ws") && line.contains("redis×2")),
        "the table's bus column:\n{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
