//! The servers themselves: up and answering, killed, back on the same port with their data,
//! and gone with their directory when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use streamgate_test_brokers::{shared_url, BrokerKind, BrokerServer};

/// Sends `command` (inline RESP) and returns the reply's first line.
fn redis(port: u16, command: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

fn refuses_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[test]
fn a_durable_redis_keeps_its_writes_across_a_kill_and_goes_when_dropped() {
    let started = Instant::now();
    let mut server = BrokerServer::start_durable(BrokerKind::Redis);
    println!("redis-server answered after {:?}", started.elapsed());
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(redis(port, "SET greeting hello"), "+OK");

    server.kill();
    assert!(!server.is_running());
    assert!(refuses_connections(port), "killed, yet port {port} answers");
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(redis(port, "GET greeting"), "$5");
    assert!(server.output().contains("Ready to accept connections"));

    drop(server);
    assert!(
        refuses_connections(port),
        "dropped, yet port {port} answers"
    );
}

#[test]
fn nats_picks_its_own_port_and_restarts_on_it() {
    let started = Instant::now();
    let mut server = BrokerServer::start(BrokerKind::Nats);
    println!("nats-server answered after {:?}", started.elapsed());
    let port = server.port();
    assert!(
        server.output().contains("Starting JetStream"),
        "{}",
        server.output()
    );
    server.kill();
    assert!(refuses_connections(port));
    server.restart();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
    drop(server);
    assert!(refuses_connections(port));
}

#[test]
fn a_fixed_port_is_kept() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = BrokerServer::builder(BrokerKind::Redis).port(port).start();
    assert_eq!(server.port(), port);
    assert_eq!(redis(port, "PING"), "+PONG");
}

#[test]
fn a_taken_port_is_a_clear_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let error = BrokerServer::builder(BrokerKind::Nats)
        .port(port)
        .try_start()
        .unwrap_err();
    assert!(error.contains("exited before it was ready"), "{error}");
    assert!(
        error
            .to_ascii_lowercase()
            .contains("address already in use"),
        "{error}"
    );
}

#[test]
fn the_binary_shares_one_server_per_broker() {
    for broker in [BrokerKind::Redis, BrokerKind::Nats] {
        let first = shared_url(broker);
        assert_eq!(shared_url(broker), first);
        if std::env::var_os(broker.url_variable()).is_none() {
            let port: u16 = first.rsplit(':').next().unwrap().parse().unwrap();
            assert!(!refuses_connections(port), "{first}");
        }
    }
}
