//! The link's own tests. Most build real links: they need root, `ip`, /dev/net/tun (or netem)
//! and python3 for the servers inside the namespace; where one is missing they say so and
//! pass without testing.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use super::*;
use crate::spec::tests::{ms, parse};

#[test]
fn a_link_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<ImpairedLink>();
    shareable::<Impairment>();
}

/// An echo server for the tests, run inside the namespace: prints its port, then echoes
/// TCP connections or UDP datagrams back.
const ECHO_SERVER: &str = r#"
import socket, sys
protocol, address = sys.argv[1], sys.argv[2]
kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
server = socket.socket(socket.AF_INET, kind)
server.bind((address, 0))
if protocol == "tcp":
    server.listen(16)
print(server.getsockname()[1], flush=True)
while True:
    if protocol == "udp":
        data, peer = server.recvfrom(65536)
        server.sendto(data, peer)
        continue
    connection, _ = server.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := connection.recv(65536):
        connection.sendall(data)
    connection.close()
"#;

/// Why real links cannot be tested here, if they cannot.
fn real_links_unavailable() -> Option<&'static str> {
    if effective_uid() != Some(0) {
        return Some("not running as root");
    }
    if run_blocking(ip("-V")).is_err() {
        return Some("no `ip` command");
    }
    let python = Command::new("python3").args(["-c", ""]).status();
    if !python.is_ok_and(|status| status.success()) {
        return Some("no python3 for the echo servers");
    }
    None
}

macro_rules! skip_without_real_links {
    () => {
        if let Some(reason) = real_links_unavailable() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

/// A link with an echo server listening inside its namespace.
struct EchoedLink {
    link: ImpairedLink,
    names: LinkNames,
    server: tokio::process::Child,
    port: u16,
}

impl EchoedLink {
    /// Starts the echo server for `protocol` ("tcp" or "udp") inside the link's namespace.
    async fn start(link: ImpairedLink, protocol: &str) -> Self {
        let mut server = tokio::process::Command::from(link.command("python3"))
            .args(["-c", ECHO_SERVER, protocol, &link.gateway_ip().to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 starts inside the namespace");
        let stdout = server.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the echo server starts within 10 s")
        .expect("the echo server prints its port");
        let port = line.trim().parse().expect("a port number");
        let names = link.names.clone();
        Self {
            link,
            names,
            server,
            port,
        }
    }

    /// A TCP connection to the echo server, or the timeout when it takes over a second.
    async fn connect_tcp(&self) -> Result<std::io::Result<TcpStream>, tokio::time::error::Elapsed> {
        let connect = TcpStream::connect((self.link.gateway_ip(), self.port));
        tokio::time::timeout(Duration::from_secs(1), connect).await
    }

    /// Kills the server (a namespace lives on while a process is in it), removes the link and
    /// checks that nothing of it is left.
    async fn remove(mut self) {
        let _ = self.server.kill().await;
        self.link.remove().await.unwrap();
        assert_gone(&self.names);
    }
}

/// A link with the mechanism [`ImpairedLink::create`] chooses.
async fn link(impairment: &str) -> ImpairedLink {
    ImpairedLink::create(&parse(impairment)).await.unwrap()
}

/// Asserts that neither the namespace nor a device of the link is left.
fn assert_gone(names: &LinkNames) {
    let namespaces = run_blocking(ip("netns list")).unwrap();
    assert!(
        !namespaces.contains(&names.namespace),
        "namespace {} left behind: {namespaces}",
        names.namespace
    );
    for device in [&names.client_device, &names.gateway_device] {
        assert!(
            run_blocking(ip(&format!("link show dev {device}"))).is_err(),
            "device {device} left behind"
        );
    }
}

fn mtu_of(namespace: Option<&str>, device: &str) -> Option<u32> {
    let in_namespace = namespace.map_or_else(String::new, |namespace| format!("-n {namespace}"));
    let listing = run_blocking(ip(&format!("{in_namespace} -o link show dev {device}"))).ok()?;
    let mut words = listing.split_whitespace();
    words.find(|&word| word == "mtu")?;
    words.next()?.parse().ok()
}

async fn echo_round_trip(stream: &mut TcpStream) -> Duration {
    let sent = Instant::now();
    stream.write_all(b"x").await.unwrap();
    let mut echo = [0_u8; 1];
    stream.read_exact(&mut echo).await.unwrap();
    sent.elapsed()
}

/// Through a `delay 20ms` link: MTU 1500 on both ends, a TCP handshake and echo round
/// trips of 40 ms or more (20 ms each way) but well under a second, nothing dropped; then
/// removes the link and checks that nothing is left.
async fn check_tcp_round_trips_take_twice_the_delay(link: ImpairedLink) {
    eprintln!("{}", link.describe());
    let names = &link.names;
    assert_eq!(mtu_of(None, &names.client_device), Some(1500));
    assert_eq!(
        mtu_of(Some(&names.namespace), &names.gateway_device),
        Some(1500)
    );
    let echoed = EchoedLink::start(link, "tcp").await;

    let started = Instant::now();
    let mut stream = echoed
        .connect_tcp()
        .await
        .expect("connects within 1 s")
        .unwrap();
    let handshake = started.elapsed();
    stream.set_nodelay(true).unwrap();
    assert_eq!(stream.local_addr().unwrap().ip(), echoed.link.client_ip());
    let mut round_trips = Vec::new();
    for _ in 0..5 {
        round_trips.push(echo_round_trip(&mut stream).await);
    }
    eprintln!("handshake {handshake:?}, echo round trips {round_trips:?}");
    assert!(handshake >= ms(40), "handshake {handshake:?}");
    for round_trip in &round_trips {
        assert!(
            (ms(40)..Duration::from_secs(1)).contains(round_trip),
            "{round_trip:?}"
        );
    }
    let stats = echoed.link.stats().expect("stats");
    eprintln!("{stats:?}");
    assert!(stats.to_gateway.delivered_packets >= 6, "{stats:?}");
    assert!(stats.to_client.delivered_packets >= 6, "{stats:?}");
    assert_eq!(
        stats.to_gateway.dropped_packets + stats.to_client.dropped_packets,
        0
    );

    drop(stream);
    echoed.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_round_trips_through_a_20ms_link_take_at_least_40ms() {
    skip_without_real_links!();
    let link = link("delay 20ms loss 0%").await;
    check_tcp_round_trips_take_twice_the_delay(link).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userspace_link_delays_tcp_wherever_it_is_chosen() {
    skip_without_real_links!();
    let impairment = parse("delay 20ms");
    let link = ImpairedLink::create_using(&impairment, Mechanism::Userspace)
        .await
        .unwrap();
    assert_eq!(link.mechanism(), Mechanism::Userspace);
    check_tcp_round_trips_take_twice_the_delay(link).await;
}

/// On a kernel with netem this tests the netem link for real; on one without, that asking
/// for it fails with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netem_link_delays_tcp_or_says_why_it_cannot() {
    skip_without_real_links!();
    match ImpairedLink::create_using(&parse("delay 20ms"), Mechanism::Netem).await {
        Ok(link) => {
            assert_eq!(link.mechanism(), Mechanism::Netem);
            check_tcp_round_trips_take_twice_the_delay(link).await;
        }
        Err(error) => {
            let error = format!("{error:#}");
            eprintln!("netem unavailable: {error}");
            assert!(
                error.contains("cannot impair a link with tc netem"),
                "{error}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_loss_keeps_a_connect_from_succeeding() {
    skip_without_real_links!();
    let link = link("delay 20ms loss 100%").await;
    let echoed = EchoedLink::start(link, "tcp").await;

    let outcome = echoed.connect_tcp().await;
    assert!(
        outcome.is_err(),
        "connected through a link that loses everything: {outcome:?}"
    );
    let stats = echoed.link.stats().expect("stats");
    eprintln!("{stats:?}");
    assert!(
        stats.to_gateway.dropped_packets >= 1,
        "the SYN was dropped: {stats:?}"
    );
    assert_eq!(stats.to_gateway.delivered_packets, 0, "{stats:?}");

    echoed.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_of_quic_size_cross_the_link() {
    skip_without_real_links!();
    let link = link("delay 20ms").await;
    let echoed = EchoedLink::start(link, "udp").await;
    let socket = tokio::net::UdpSocket::bind((echoed.link.client_ip(), 0))
        .await
        .unwrap();
    socket
        .connect((echoed.link.gateway_ip(), echoed.port))
        .await
        .unwrap();

    // 1200 bytes is QUIC's minimum; 1472 fills a 1500-byte MTU (20 IP + 8 UDP bytes).
    for size in [1200, 1472] {
        let datagram: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let sent = Instant::now();
        socket.send(&datagram).await.unwrap();
        let mut echo = vec![0_u8; 2048];
        let received = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut echo))
            .await
            .expect("the echo comes back within 1 s")
            .unwrap();
        let round_trip = sent.elapsed();
        eprintln!("{size}-byte datagram round trip {round_trip:?}");
        assert_eq!(&echo[..received], &datagram[..]);
        assert!(round_trip >= ms(40), "{round_trip:?}");
    }

    echoed.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_link_leaves_nothing_behind() {
    skip_without_real_links!();
    let link = link("delay 5ms").await;
    let names = link.names.clone();
    assert!(run_blocking(ip("netns list"))
        .unwrap()
        .contains(&names.namespace));
    drop(link);
    assert_gone(&names);
}

/// The netem code path minus netem itself: a veth pair with `pfifo`, which every kernel has,
/// standing in for the netem qdisc that this test machine may lack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veth_link_connects_and_counts_with_a_stand_in_qdisc() {
    skip_without_real_links!();
    let plan = Plan::Veth {
        qdisc: vec!["pfifo".to_owned()],
    };
    let link = ImpairedLink::build(&Impairment::default(), plan)
        .await
        .unwrap();
    assert_eq!(link.mechanism(), Mechanism::Netem);
    let echoed = EchoedLink::start(link, "tcp").await;
    let mut stream = echoed
        .connect_tcp()
        .await
        .expect("connects within 1 s")
        .unwrap();
    echo_round_trip(&mut stream).await;
    let stats = echoed.link.stats().expect("tc counters");
    eprintln!("{stats:?}");
    assert!(stats.to_gateway.delivered_packets >= 2, "{stats:?}");
    assert!(stats.to_client.delivered_packets >= 2, "{stats:?}");

    drop(stream);
    echoed.remove().await;
}
