//! What the abuse tests share beyond `common`.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamgate_compare::gateway::{clock_ticks_per_sec, cpu_ticks, rss_kib};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite;

use super::common::{assert_error, within, WAIT};

/// Runs `probe` (one request of a well-behaved second client) and prints how long it took,
/// so the suite's log shows the latency an attack leaves the others.
pub async fn served_within<T>(
    attack: &str,
    probe: impl std::future::Future<Output = T>,
) -> (T, Duration) {
    let start = Instant::now();
    let value = within(&format!("a second client during {attack}"), probe).await;
    let took = start.elapsed();
    println!("abuse[{attack}]: a second client was served in {took:?}");
    (value, took)
}

/// A TCP connection to `addr` from the local address `from` (another loopback address is
/// another client to the gateway).
pub async fn tcp_from(addr: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Asserts a refused WebSocket handshake is `status` with the JSON error `code` and a reason
/// mentioning `reason`.
pub fn assert_ws_refused(refusal: &tungstenite::Error, status: u16, code: &str, reason: &str) {
    let tungstenite::Error::Http(response) = refusal else {
        panic!("expected an HTTP refusal, got {refusal}");
    };
    assert_eq!(response.status(), status);
    let body: serde_json::Value =
        serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
    assert_error(&body, code, reason);
}

/// The real `streamgate serve` binary with a config file of the test's, for what only a
/// process of its own shows (RSS, CPU time); killed, and its directory removed, when dropped.
pub struct SpawnedGateway {
    child: Child,
    /// Its plain HTTP listener.
    pub addr: SocketAddr,
    dir: PathBuf,
    ticks_per_sec: u64,
}

impl Drop for SpawnedGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SpawnedGateway {
    /// Starts the binary on a port of its choosing, with TLS, WebTransport and the demo off,
    /// and waits until it says where it listens. `config` continues the `[server]` table:
    /// its keys first, then tables of its own (`[bus]`, `[ws]`, …).
    pub fn start(name: &str, config: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("streamgate-abuse-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                "[tls]\nenabled = false\n[webtransport]\nenabled = false\n[demo]\nenabled = false\n\
                 [server]\nlisten = \"127.0.0.1:0\"\n{config}"
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "streamgate=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let (listening, addr) = std::sync::mpsc::channel();
        // Reads its log to the end, so a full pipe never blocks it.
        std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = listening.send(rest.split_whitespace().next().unwrap().parse());
                }
                line.clear();
            }
        });
        // Owned before the wait, so a gateway that never listens is killed too.
        let mut gateway = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            dir,
            ticks_per_sec: clock_ticks_per_sec(),
        };
        gateway.addr = addr
            .recv_timeout(WAIT)
            .expect("the gateway binary to say where it listens")
            .expect("a listening address");
        gateway
    }

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(&self.child.id().to_string()).unwrap()
    }

    /// User + system CPU time of the process so far.
    pub fn cpu(&self) -> Duration {
        let ticks = cpu_ticks(&self.child.id().to_string()).unwrap();
        Duration::from_secs_f64(ticks as f64 / self.ticks_per_sec as f64)
    }
}
