//! What a comparison run is asked to do: the command line of `streamgate compare`, shared
//! with `bench/`'s `fanout` (which only changes the defaults).

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use serde::Serialize;

/// One way for a client to receive the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// WebSocket, `GET /ws?topics=…`, HTTP/1.1 Upgrade over plain TCP.
    Ws,
    /// WebSocket with `Sec-WebSocket-Extensions: permessage-deflate` offered by the client
    /// (RFC 7692); the row says whether the gateway accepted it.
    WsDeflate,
    /// Server-Sent Events, `GET /sse?topics=…`, one HTTP/1.1 response per client.
    Sse,
    /// Server-Sent Events over HTTP/2 (TLS, ALPN `h2`), one connection per client.
    SseH2,
    /// Long polling, `GET /poll?topics=…&cursor=…` in a loop on one keep-alive connection.
    Longpoll,
    /// WebTransport, `mode=stream`: every event on the session's control stream.
    WtStream,
    /// WebTransport, `mode=stream-per-event`: one unidirectional QUIC stream per event.
    WtStreamPerEvent,
    /// WebTransport, `mode=datagram`: one QUIC datagram per event (unreliable).
    WtDatagram,
}

impl Transport {
    /// Every transport, in the order the tables list them.
    pub const ALL: [Self; 8] = [
        Self::Ws,
        Self::WsDeflate,
        Self::Sse,
        Self::SseH2,
        Self::Longpoll,
        Self::WtStream,
        Self::WtStreamPerEvent,
        Self::WtDatagram,
    ];

    /// The name used on the command line, in tables and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::WsDeflate => "ws-deflate",
            Self::Sse => "sse",
            Self::SseH2 => "sse-h2",
            Self::Longpoll => "longpoll",
            Self::WtStream => "wt-stream",
            Self::WtStreamPerEvent => "wt-stream-per-event",
            Self::WtDatagram => "wt-datagram",
        }
    }

    /// The `mode=` of a WebTransport session, `None` for the other transports.
    pub fn wt_mode(self) -> Option<&'static str> {
        match self {
            Self::WtStream => Some("stream"),
            Self::WtStreamPerEvent => Some("stream-per-event"),
            Self::WtDatagram => Some("datagram"),
            _ => None,
        }
    }

    /// Whether events arrive in id order. Per-event streams and datagrams may overtake each
    /// other, so for them a subscriber waits for the count rather than for the last id.
    pub fn ordered(self) -> bool {
        !matches!(self, Self::WtStreamPerEvent | Self::WtDatagram)
    }

    /// Whether delivery is reliable: datagrams may be lost, and the report counts that as
    /// the transport's figure rather than as a failure.
    pub fn reliable(self) -> bool {
        self != Self::WtDatagram
    }

    /// Whether the transport carries text only (then binary envelopes are not offered).
    pub fn text_only(self) -> bool {
        matches!(self, Self::Sse | Self::SseH2 | Self::Longpoll)
    }
}

/// How subscribers ask for events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    /// JSON envelopes (docs/PROTOCOL.md §3.1).
    Json,
    /// Binary envelopes (docs/PROTOCOL.md §3.3) where the transport carries bytes.
    Binary,
}

/// The event bus behind the gateways of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    /// The embedded in-memory bus: one gateway process, events never leave it.
    Memory,
    /// Redis: every node mirrors one log that Redis holds (`[bus.redis]`).
    Redis,
    /// NATS JetStream: every node mirrors one stream (`[bus.nats]`).
    Nats,
}

impl Bus {
    /// The name used on the command line, in configs and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Nats => "nats",
        }
    }

    /// Whether events go through a broker that several gateway processes can share.
    pub fn is_broker(self) -> bool {
        self != Self::Memory
    }
}

/// How Redis carries events to the nodes (`bus.redis.fanout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisFanout {
    /// Redis Pub/Sub.
    Pubsub,
    /// A blocking `XREAD` on the stream of all events.
    Xread,
}

impl RedisFanout {
    /// The name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pubsub => "pubsub",
            Self::Xread => "xread",
        }
    }
}

/// One bus and the gateway processes sharing it: a dimension of the rows, like the
/// transport and the subscriber count.
///
/// With several nodes the publisher talks to the first (node A) and the subscribers to
/// the others (node B, …), so every event crosses the broker between two processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Deployment {
    /// The bus.
    pub bus: Bus,
    /// Gateway processes; always 1 for [`Bus::Memory`].
    pub nodes: usize,
}

impl Deployment {
    /// One gateway on the in-memory bus: what a run measures unless `--bus` says otherwise.
    pub const MEMORY: Self = Self {
        bus: Bus::Memory,
        nodes: 1,
    };

    /// The name in tables and JSON: `memory`, `redis×2`, `nats×1`, ….
    pub fn label(self) -> String {
        if self.bus.is_broker() {
            format!("{}×{}", self.bus.name(), self.nodes)
        } else {
            self.bus.name().to_owned()
        }
    }

    /// The node subscriber `slot` connects to: node A when it is the only one, otherwise
    /// the nodes after A in turn, so that no subscriber shares the publisher's node.
    pub fn subscriber_node(self, slot: usize) -> usize {
        if self.nodes <= 1 {
            0
        } else {
            1 + slot % (self.nodes - 1)
        }
    }

    /// The nodes subscribers connect to, in the order [`Deployment::subscriber_node`] uses.
    pub fn subscriber_nodes(self) -> std::ops::Range<usize> {
        if self.nodes <= 1 {
            0..1
        } else {
            1..self.nodes
        }
    }
}

/// The options of a comparison run.
#[derive(Clone, Debug, clap::Args)]
pub struct CompareArgs {
    /// A short run for a quick look or a test: 10 subscribers, 200 events at 200/s, 2 000
    /// events to saturate, 10 setup samples, one repeat (any of these given explicitly wins).
    #[arg(long)]
    pub quick: bool,

    /// Transports to measure, one row each.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Transport::ALL)]
    pub transport: Vec<Transport>,

    /// Subscribers per transport (a list runs each count in turn).
    #[arg(long, value_delimiter = ',')]
    pub subscribers: Vec<usize>,

    /// Events per second of the open-loop phase: event i is due at i / rate and its latency
    /// counts from then, so a publisher that falls behind is charged for it.
    #[arg(long)]
    pub rate: Option<u64>,

    /// Events of the open-loop phase. Default: 5 s of schedule.
    #[arg(long)]
    pub events: Option<u64>,

    /// Events published back to back after the open-loop phase, to measure delivered
    /// events/s at saturation; 0 skips that phase. Default: 200 000 deliveries' worth.
    #[arg(long)]
    pub saturate_events: Option<u64>,

    /// Payload of every event in bytes: a JSON object `{"t":<send ns>,"i":<index>,"pad":"x…"}`.
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,

    /// Sequential connection setups timed per transport (from nothing to the first
    /// `subscribed` message), for the setup p50/p99; 0 skips them.
    #[arg(long)]
    pub setup_samples: Option<usize>,

    /// Runs per transport; every figure shown is the median over the runs.
    #[arg(long)]
    pub repeat: Option<usize>,

    /// JSON or binary envelopes (binary applies to WebSocket and WebTransport only).
    #[arg(long, value_enum, default_value_t = Envelope::Json)]
    pub envelope: Envelope,

    /// The gateway binary to start, once per transport and run, as a child process, so that
    /// its CPU time and memory are read apart from the clients'. Default: this program.
    #[arg(long, conflicts_with = "target")]
    pub gateway: Option<PathBuf>,

    /// Measure a gateway that is already running, at this HTTP address (`host:port`),
    /// instead of starting one. Its limits must let one client publish every event
    /// (`ws.message_rate`) and hold every subscriber.
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,

    /// With `--target`: its HTTPS address, for `sse-h2` (without it that row is skipped).
    #[arg(long, value_name = "HOST:PORT", requires = "target")]
    pub target_tls: Option<String>,

    /// With `--target`: its process id, to read its CPU time and memory from `/proc`.
    #[arg(long, requires = "target")]
    pub target_pid: Option<u32>,

    /// Impair the path between clients and gateway, in `tc netem` terms (e.g. "delay 20ms
    /// loss 1%"): the gateway runs in its own network namespace behind the impaired link.
    /// Needs root; latency is then timed from the gateway's publish timestamp.
    #[arg(long, value_name = "SPEC", conflicts_with = "target")]
    pub netem: Option<String>,

    /// The per-subscriber queue of the gateway, in events. Default: the whole run, so that
    /// nothing lags and the figures describe the normal path.
    #[arg(long)]
    pub queue: Option<usize>,

    /// Long polling: the `timeout=` of each poll, in seconds.
    #[arg(long, default_value_t = 25.0)]
    pub poll_timeout: f64,

    /// Connections opened at once while connecting subscribers.
    #[arg(long, default_value_t = 100)]
    pub connect_parallel: usize,

    /// Seconds one subscriber has to connect and receive its `subscribed` reply.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Seconds all subscribers of a run have to connect; the run goes on with those that did.
    #[arg(long, default_value_t = 60.0)]
    pub connect_deadline: f64,

    /// Seconds to wait for deliveries after a phase's last event is published.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,

    /// Tokio worker threads of the clients. Default: one per core.
    #[arg(long)]
    pub workers: Option<usize>,

    /// Write every run and the medians to this file as JSON ("-" for standard output, in
    /// which case the table goes to standard error).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Draw the latency distributions side by side into this SVG file.
    #[arg(long, value_name = "PATH")]
    pub chart: Option<PathBuf>,

    /// The same chart as PNG.
    #[arg(long, value_name = "PATH")]
    pub png: Option<PathBuf>,

    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Keep each run's gateway config and log (in the temporary directory, streamgate-compare-PID;
    /// kept anyway, and named in its warning, when a run had trouble: lost events, failed
    /// connections, a WARN or ERROR in the gateway's log). Otherwise nothing is left behind.
    #[arg(long)]
    pub keep_logs: bool,

    /// Event buses to measure, one row each per transport and count: `memory` (the
    /// embedded bus, one gateway), `redis` and `nats` (a broker shared by `--nodes`
    /// gateways). Default: memory. Every run of a broker bus gets a fresh key prefix or
    /// stream, removed afterwards.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub bus: Vec<Bus>,

    /// Gateway processes sharing each broker bus: the publisher talks to the first, the
    /// subscribers to the others, so the latency is publish on one node → receive on
    /// another. The memory bus always runs one.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,

    /// The Redis server of `--bus redis`.
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// How Redis carries events to the nodes.
    #[arg(long, value_enum, default_value_t = RedisFanout::Pubsub)]
    pub redis_fanout: RedisFanout,

    /// The NATS server (with JetStream) of `--bus nats`.
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

/// Smallest payload: `{"t":<19 digits>,"i":<index>,"pad":""}` must fit.
pub const MIN_PAYLOAD_BYTES: usize = 64;
/// Length of the open-loop schedule when `--events` is not given.
const DEFAULT_SCHEDULE_SECS: u64 = 5;
/// Deliveries the saturation phase aims at when `--saturate-events` is not given.
const SATURATE_DELIVERY_BUDGET: u64 = 200_000;

/// [`CompareArgs`] with every default filled in: what a run really does.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Transports, in order.
    pub transports: Vec<Transport>,
    /// Subscriber counts, in order.
    pub subscribers: Vec<usize>,
    /// Open-loop rate, events/s.
    pub rate: u64,
    /// Open-loop events (fixed, or per subscriber count when 0).
    pub events: Option<u64>,
    /// Saturation events (fixed, or per subscriber count when `None`).
    pub saturate_events: Option<u64>,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Setup samples per transport and run.
    pub setup_samples: usize,
    /// Runs per row.
    pub repeat: usize,
    /// Envelope format.
    pub envelope: Envelope,
    /// Buses and their node counts, in order.
    pub deployments: Vec<Deployment>,
}

impl CompareArgs {
    /// Checks the options against each other and fills in the defaults (`--quick` or not).
    ///
    /// # Errors
    /// A message naming the option that is wrong.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let quick = self.quick;
        let subscribers = if self.subscribers.is_empty() {
            vec![if quick { 10 } else { 100 }]
        } else {
            self.subscribers.clone()
        };
        anyhow::ensure!(
            subscribers.iter().all(|&n| n > 0),
            "--subscribers needs positive counts"
        );
        anyhow::ensure!(!self.transport.is_empty(), "--transport needs a transport");
        anyhow::ensure!(
            self.payload_bytes >= MIN_PAYLOAD_BYTES,
            "--payload-bytes must be at least {MIN_PAYLOAD_BYTES}"
        );
        let rate = self.rate.unwrap_or(if quick { 200 } else { 100 });
        anyhow::ensure!(
            rate > 0,
            "--rate must be positive (the saturation phase is separate: --saturate-events)"
        );
        anyhow::ensure!(
            self.events.is_none_or(|events| events > 0),
            "--events must be positive"
        );
        let repeat = self.repeat.unwrap_or(1);
        anyhow::ensure!(repeat > 0, "--repeat must be at least 1");
        let mut transports = Vec::new();
        for &transport in &self.transport {
            if !transports.contains(&transport) {
                transports.push(transport);
            }
        }
        let deployments = self.deployments()?;
        Ok(Plan {
            transports,
            subscribers,
            rate,
            events: self.events.or(quick.then_some(200)),
            saturate_events: self.saturate_events.or(quick.then_some(2_000)),
            payload_bytes: self.payload_bytes,
            setup_samples: self.setup_samples.unwrap_or(if quick { 10 } else { 20 }),
            repeat,
            envelope: self.envelope,
            deployments,
        })
    }

    /// `--bus` and `--nodes`, checked against the options that cannot go with a broker.
    fn deployments(&self) -> anyhow::Result<Vec<Deployment>> {
        anyhow::ensure!(
            (1..=26).contains(&self.nodes),
            "--nodes must be 1 to 26 (the nodes go by the letters A to Z)"
        );
        let mut deployments = Vec::new();
        for &bus in if self.bus.is_empty() {
            &[Bus::Memory][..]
        } else {
            &self.bus
        } {
            let deployment = Deployment {
                bus,
                nodes: if bus.is_broker() { self.nodes } else { 1 },
            };
            if !deployments.contains(&deployment) {
                deployments.push(deployment);
            }
        }
        let brokers: Vec<&str> = deployments
            .iter()
            .filter(|d| d.bus.is_broker())
            .map(|d| d.bus.name())
            .collect();
        anyhow::ensure!(
            self.nodes == 1 || !brokers.is_empty(),
            "--nodes {} needs a broker bus (--bus redis or nats): the memory bus is one process",
            self.nodes
        );
        if let Some(broker) = brokers.first() {
            // Both would need a gateway per node that this tool starts and configures.
            anyhow::ensure!(
                self.target.is_none(),
                "--bus {broker} starts its gateways: it does not go with --target"
            );
            // The gateway's namespace has a loopback of its own: the broker on this
            // machine's loopback is out of its reach.
            anyhow::ensure!(
                self.netem.is_none(),
                "--bus {broker} does not go with --netem (the broker is out of the \
                 impaired gateway's network namespace)"
            );
        }
        Ok(deployments)
    }

    /// Seconds as a [`Duration`] (negative values count as zero).
    pub(crate) fn secs(value: f64) -> Duration {
        Duration::from_secs_f64(value.max(0.0))
    }
}

impl Plan {
    /// Open-loop events for `subscribers` subscribers.
    pub fn events_for(&self) -> u64 {
        self.events
            .unwrap_or_else(|| (self.rate * DEFAULT_SCHEDULE_SECS).max(100))
    }

    /// Saturation events for `subscribers` subscribers (0: no saturation phase).
    pub fn saturate_events_for(&self, subscribers: usize) -> u64 {
        self.saturate_events.unwrap_or_else(|| {
            (SATURATE_DELIVERY_BUDGET / subscribers.max(1) as u64).clamp(200, 20_000)
        })
    }

    /// The envelope a transport's subscribers ask for.
    pub fn envelope_for(&self, transport: Transport) -> Envelope {
        if transport.text_only() {
            Envelope::Json
        } else {
            self.envelope
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: CompareArgs,
    }

    fn plan(argv: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("compare").chain(argv.iter().copied()))?;
        cli.args.plan()
    }

    #[test]
    fn every_transport_by_default() {
        let plan = plan(&[]).unwrap();
        assert_eq!(plan.transports, Transport::ALL);
        assert_eq!(plan.subscribers, [100]);
        assert_eq!(plan.events_for(), 500);
    }

    #[test]
    fn quick_defaults_and_explicit_options_win() {
        let plan = plan(&["--quick", "--subscribers", "3", "--transport", "ws,sse,ws"]).unwrap();
        assert_eq!(plan.subscribers, [3]);
        assert_eq!(plan.transports, [Transport::Ws, Transport::Sse]);
        assert_eq!(plan.events_for(), 200);
        assert_eq!(plan.saturate_events_for(3), 2_000);
        assert_eq!(plan.setup_samples, 10);
    }

    #[test]
    fn bad_options_are_named() {
        let error = plan(&["--payload-bytes", "10"]).unwrap_err().to_string();
        assert!(error.contains("--payload-bytes"), "{error}");
        let error = plan(&["--subscribers", "0"]).unwrap_err().to_string();
        assert!(error.contains("--subscribers"), "{error}");
        assert!(plan(&["--transport", "carrier-pigeon"]).is_err());
        assert!(plan(&["--target", "127.0.0.1:1", "--gateway", "/bin/true"]).is_err());
    }

    #[test]
    fn the_memory_bus_by_default() {
        let plan = plan(&["--quick"]).unwrap();
        assert_eq!(plan.deployments, [Deployment::MEMORY]);
        assert_eq!(Deployment::MEMORY.label(), "memory");
    }

    #[test]
    fn broker_buses_run_on_the_nodes_asked_for_and_memory_on_one() {
        let two = plan(&["--bus", "memory,redis,nats,redis", "--nodes", "2"]).unwrap();
        let labels: Vec<String> = two.deployments.iter().map(|d| d.label()).collect();
        assert_eq!(labels, ["memory", "redis×2", "nats×2"]);
        assert_eq!(two.deployments[0].nodes, 1);
        let one = plan(&["--bus", "nats"]).unwrap();
        assert_eq!(
            one.deployments,
            [Deployment {
                bus: Bus::Nats,
                nodes: 1
            }]
        );
    }

    #[test]
    fn subscribers_never_share_the_publishers_node() {
        let two = Deployment {
            bus: Bus::Redis,
            nodes: 2,
        };
        assert!((0..10).all(|slot| two.subscriber_node(slot) == 1));
        assert_eq!(two.subscriber_nodes(), 1..2);
        let three = Deployment { nodes: 3, ..two };
        let nodes: Vec<usize> = (0..4).map(|slot| three.subscriber_node(slot)).collect();
        assert_eq!(nodes, [1, 2, 1, 2]);
        assert_eq!(Deployment::MEMORY.subscriber_node(7), 0);
        assert_eq!(Deployment::MEMORY.subscriber_nodes(), 0..1);
    }

    #[test]
    fn bus_options_that_cannot_work_are_named() {
        let error = plan(&["--nodes", "2"]).unwrap_err().to_string();
        assert!(error.contains("--nodes 2 needs a broker"), "{error}");
        let error = plan(&["--bus", "redis", "--nodes", "0"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--nodes"), "{error}");
        let error = plan(&["--bus", "memory,nats", "--target", "127.0.0.1:1"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--target"), "{error}");
        let error = plan(&["--bus", "redis", "--netem", "delay 5ms"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--netem"), "{error}");
        assert!(plan(&["--bus", "kafka"]).is_err());
        // The memory bus goes with everything it went with before.
        assert!(plan(&["--bus", "memory", "--target", "127.0.0.1:1"]).is_ok());
    }

    #[test]
    fn broker_urls_default_to_the_local_servers() {
        let cli = Cli::try_parse_from(["compare"]).unwrap();
        assert_eq!(cli.args.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(cli.args.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(cli.args.redis_fanout, RedisFanout::Pubsub);
    }

    #[test]
    fn text_only_transports_get_json() {
        let plan = plan(&["--envelope", "binary"]).unwrap();
        assert_eq!(plan.envelope_for(Transport::Sse), Envelope::Json);
        assert_eq!(plan.envelope_for(Transport::Ws), Envelope::Binary);
    }
}
