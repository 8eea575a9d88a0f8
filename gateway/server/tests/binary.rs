//! The `streamgate` binary as an operator runs it: defaults, bad config, signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

fn streamgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamgate"))
}

/// Kills the gateway if the test fails half-way, so no process outlives it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bad_config_is_a_one_line_error_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("streamgate-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[bus]\nhistory_events = -3\n").unwrap();
    let output = streamgate()
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bad.toml:2:"), "{stderr}");
    assert!(stderr.contains("bus.history_events"), "{stderr}");

    let output = streamgate()
        .args(["serve", "--config"])
        .arg(dir.join("missing.toml"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config file"));
}

#[test]
fn serves_with_defaults_and_exits_zero_on_sigterm() {
    let mut child = KillOnDrop(
        streamgate()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
                "--wt-listen",
                "127.0.0.1:0",
                "--demo-rate",
                "50",
            ])
            .env("RUST_LOG", "streamgate=info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "exited early");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap();
            break addr.parse().unwrap();
        }
    };
    let get = |path: &str| {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "exit status {exit}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("SIGTERM received"), "{rest}");
    assert!(rest.contains("shutdown complete"), "{rest}");
}
