//! The `streamgate` command.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use streamgate::config::{BusBackend, GatewayConfig, SourceConfig};
use streamgate::{Gateway, ShutdownOutcome};
use streamgate_core::Topic;
use tracing_subscriber::EnvFilter;

/// A real-time gateway: one event stream over WebSocket, SSE, long polling and WebTransport.
#[derive(Debug, Parser)]
#[command(name = "streamgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Measure every transport on the same events, side by side: setup time, latency
    /// percentiles, throughput, bytes on the wire, CPU and memory per connection.
    #[cfg(feature = "compare")]
    Compare(streamgate_compare::CompareArgs),
    /// Decode WebSocket frames typed as hex and explain every field (exit 1 when the input
    /// ends inside a frame, 2 when it is not hex).
    ExplainFrame(streamgate::inspect::ExplainFrameArgs),
    /// Connect to a gateway as a client and show the exchange on the wire, annotated:
    /// ws://…/ws, http://…/sse, http://…/poll, or WebTransport (wt, https://…:4433/wt).
    Inspect(streamgate::inspect::InspectArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML configuration file; without one the embedded defaults apply (every field and its
    /// default: streamgate.example.toml).
    #[arg(short, long, env = "STREAMGATE_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP listen address (overrides `server.listen`) [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Internal listen address: publishing, /healthz, /metrics, /topics and the lab's API,
    /// with a connection cap of its own (overrides `server.internal_listen`; loopback or a
    /// private network only).
    #[arg(long, value_name = "ADDR")]
    internal_listen: Option<SocketAddr>,
    /// HTTPS listen address (overrides `tls.listen`) [default: 127.0.0.1:8443].
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// Do not serve HTTPS.
    #[arg(long)]
    no_tls: bool,
    /// WebTransport (HTTP/3, UDP) listen address (overrides `webtransport.listen`)
    /// [default: 127.0.0.1:4433].
    #[cfg(feature = "webtransport")]
    #[arg(long)]
    wt_listen: Option<SocketAddr>,
    /// Do not serve WebTransport.
    #[cfg(feature = "webtransport")]
    #[arg(long)]
    no_webtransport: bool,
    /// Do not serve WebSocket: `/ws` and `/ws/echo` answer 404 `transport_disabled`
    /// (sets `ws.enabled = false`).
    #[cfg(feature = "ws")]
    #[arg(long)]
    no_ws: bool,
    /// Do not serve Server-Sent Events: `/sse` answers 404 `transport_disabled`
    /// (sets `sse.enabled = false`).
    #[cfg(feature = "sse")]
    #[arg(long)]
    no_sse: bool,
    /// Do not serve long polling: `/poll` answers 404 `transport_disabled`
    /// (sets `longpoll.enabled = false`).
    #[cfg(feature = "longpoll")]
    #[arg(long)]
    no_longpoll: bool,
    /// Demo events per second to the topic `demo` (overrides `demo.rate`) [default: 5].
    #[arg(long)]
    demo_rate: Option<f64>,
    /// Do not run the demo source.
    #[arg(long)]
    no_demo: bool,
    /// Events kept per topic for resume (overrides `bus.history_events`) [default: 1000].
    #[arg(long)]
    history_events: Option<usize>,
    /// Bus backend: `memory`, `redis` or `nats` (overrides `bus.backend`) [default: memory].
    #[arg(long, value_parser = ["memory", "redis", "nats"])]
    bus: Option<String>,
    /// Broker URL of the chosen backend (overrides `bus.redis.url` or `bus.nats.url`)
    /// [default: redis://127.0.0.1:6379, nats://127.0.0.1:4222].
    #[arg(long, value_name = "URL")]
    bus_url: Option<String>,
    /// Upstream WebSocket feed to republish (adds a source).
    #[arg(long, value_name = "URL")]
    source: Option<String>,
    /// Topic for `--source`.
    #[arg(long, default_value = "upstream", requires = "source")]
    source_topic: String,
    /// Message sent to `--source` after each connect.
    #[arg(long, requires = "source")]
    source_subscribe: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| {
                    EnvFilter::new("streamgate=info,streamgate_core=info,streamgate_bus_redis=info,streamgate_bus_nats=info")
                }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Serve(args) => match serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("streamgate: {message}");
                ExitCode::FAILURE
            }
        },
        #[cfg(feature = "compare")]
        Command::Compare(args) => {
            // The gateway under test is this same program, started as `serve` per run.
            let this = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("streamgate"));
            match streamgate_compare::run(&args, &this) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("streamgate compare: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ExplainFrame(args) => streamgate::inspect::explain_frame(&args),
        Command::Inspect(args) => streamgate::inspect::run(&args),
    }
}

fn load_config(args: &ServeArgs) -> Result<GatewayConfig, String> {
    let mut config = match &args.config {
        Some(path) => GatewayConfig::from_file(path).map_err(|e| e.to_string())?,
        None => GatewayConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(listen) = args.internal_listen {
        config.server.internal_listen = Some(listen);
    }
    if let Some(listen) = args.tls_listen {
        config.tls.listen = listen;
    }
    if args.no_tls {
        config.tls.enabled = false;
    }
    #[cfg(feature = "webtransport")]
    {
        if let Some(listen) = args.wt_listen {
            config.webtransport.listen = listen;
        }
        if args.no_webtransport {
            config.webtransport.enabled = false;
        }
    }
    #[cfg(feature = "ws")]
    if args.no_ws {
        config.ws.enabled = false;
    }
    #[cfg(feature = "sse")]
    if args.no_sse {
        config.sse.enabled = false;
    }
    #[cfg(feature = "longpoll")]
    if args.no_longpoll {
        config.longpoll.enabled = false;
    }
    if let Some(rate) = args.demo_rate {
        config.demo.rate = rate;
    }
    if args.no_demo {
        config.demo.enabled = false;
    }
    if let Some(events) = args.history_events {
        config.bus.history_events = events;
    }
    if let Some(backend) = &args.bus {
        config.bus.backend = match backend.as_str() {
            "redis" => BusBackend::Redis,
            "nats" => BusBackend::Nats,
            _ => BusBackend::Memory,
        };
    }
    if let Some(url) = &args.bus_url {
        match config.bus.backend {
            BusBackend::Redis => config.bus.redis.url.clone_from(url),
            BusBackend::Nats => config.bus.nats.url.clone_from(url),
            _ => return Err("--bus-url needs a broker backend (--bus redis or nats)".to_owned()),
        }
    }
    if let Some(url) = &args.source {
        let topic = Topic::new(&args.source_topic)
            .map_err(|e| format!("--source-topic {:?}: {e}", args.source_topic))?;
        let mut source = SourceConfig::new(url.as_str(), topic);
        if let Some(message) = &args.source_subscribe {
            source = source.subscribe_message(message.as_str());
        }
        config.sources.push(source);
    }
    config
        .validate(std::path::Path::new("<command line>"))
        .map_err(|e| e.to_string())?;
    Ok(config)
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let config = load_config(&args)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let bus = streamgate::bus::build(&config.bus)?;
        // Each error names what failed: the listener (setting and flag), the certificate, …
        let gateway = Gateway::bind_with_bus(config, bus)
            .await
            .map_err(|e| e.to_string())?;
        let addr = gateway.local_addr().map_err(|e| e.to_string())?;
        // Watched before the gateway says it listens: from then on SIGHUP reloads, never kills.
        reload_tls_on_hangup(std::sync::Arc::clone(gateway.app()));
        let stop = shutdown_signal();
        tracing::info!(%addr, "streamgate listening on http://{addr}");
        if let (Some(tls_addr), Some(tls)) = (gateway.tls_local_addr(), &gateway.app().tls) {
            tracing::info!(
                %tls_addr,
                self_signed = tls.self_signed,
                sha256 = %tls.certificate_sha256_hex(),
                "streamgate listening on https://{tls_addr} (HTTP/2 and HTTP/1.1)"
            );
        }
        if let Some(internal) = gateway.internal_local_addr() {
            tracing::info!(
                %internal,
                max_connections = gateway.app().config.server.internal_max_connections,
                "streamgate listening (internal) on http://{internal}: /publish, /healthz, /metrics, /topics"
            );
        }
        #[cfg(feature = "webtransport")]
        if let Some(wt_addr) = gateway.wt_local_addr() {
            tracing::info!(%wt_addr, "streamgate listening for WebTransport on https://{wt_addr}/wt (HTTP/3, UDP)");
        }
        announce_urls(&gateway, addr);
        announce_bus(gateway.app());
        match gateway.run(stop).await {
            ShutdownOutcome::Drained => Ok(()),
            ShutdownOutcome::TimedOut { remaining } => {
                // Exiting is still the right end of a requested shutdown; the log says what was cut.
                tracing::warn!(remaining, "exited with connections still open");
                Ok(())
            }
        }
    })
}

/// Says where to point a browser and a client: the lab when it is on, and every endpoint, with
/// the host a client on this machine can reach (`127.0.0.1` for an unspecified address).
fn announce_urls(gateway: &Gateway, addr: SocketAddr) {
    let http = reachable(addr);
    if gateway.app().config.lab_decision().on {
        tracing::info!("the lab: open http://{http}/lab in a browser");
    }
    let topics = if gateway.app().config.demo.enabled {
        "topics=demo"
    } else {
        "topics=<topic>"
    };
    // Only the transports this configuration serves: a URL that answers 404
    // `transport_disabled` would be the first thing a new user tries.
    #[cfg_attr(
        not(any(feature = "ws", feature = "longpoll", feature = "sse")),
        allow(unused_variables)
    )]
    let config = &gateway.app().config;
    let mut endpoints: Vec<String> = Vec::new();
    #[cfg(feature = "ws")]
    if config.ws.enabled {
        endpoints.push(format!("WebSocket ws://{http}/ws?{topics}"));
    }
    #[cfg(feature = "sse")]
    if config.sse.enabled {
        endpoints.push(format!("SSE http://{http}/sse?{topics}"));
    }
    #[cfg(feature = "longpoll")]
    if config.longpoll.enabled {
        endpoints.push(format!("long polling http://{http}/poll?{topics}"));
    }
    endpoints.push(format!("publish POST http://{http}/publish/<topic>"));
    endpoints.push(format!("browser client http://{http}/client/streamgate.js"));
    for path in ["healthz", "topics", "metrics"] {
        endpoints.push(format!("http://{http}/{path}"));
    }
    tracing::info!("endpoints: {}", endpoints.join(" · "));
    if let Some(internal) = gateway.internal_local_addr() {
        tracing::info!(
            "internal listener (publish, /healthz, /metrics, /topics): http://{}",
            reachable(internal)
        );
    }
    #[cfg(feature = "webtransport")]
    if let Some(wt_addr) = gateway.wt_local_addr() {
        tracing::info!(
            "WebTransport: https://{}/wt?{topics} with the certificate hash from \
             http://{http}/wt/cert-hash (try `streamgate inspect 'wt?{topics}'`)",
            reachable(wt_addr)
        );
    }
}

/// `addr` as a client on this machine reaches it.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(
            if ip.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            addr.port(),
        ),
        _ => addr,
    }
}

/// With a broker-backed bus, says once at start-up whether the broker answers: if it does not
/// within a few seconds, that this node serves nothing until it does (the bus keeps retrying,
/// and logs each attempt).
fn announce_bus(app: &std::sync::Arc<streamgate::App>) {
    const WAIT: std::time::Duration = std::time::Duration::from_millis(1500);
    if app.bus.health().backend == "memory" {
        return;
    }
    let bus = std::sync::Arc::clone(&app.bus);
    let shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let health = bus.health();
            let detail = health.detail.unwrap_or_default();
            if health.available {
                tracing::info!(backend = health.backend, "the bus is connected: {detail}");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    backend = health.backend,
                    "NOT SERVING YET: the {} broker does not answer ({detail}). Until it does, \
                     publishes, new subscriptions and /healthz answer 503; the gateway keeps \
                     retrying and logs `following the broker` once it answers",
                    health.backend
                );
                return;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
    });
}

/// On every SIGHUP, reads the HTTPS certificate's PEM files again
/// ([`streamgate::App::reload_tls`]): new connections get the new certificate, open ones keep
/// theirs; on error the current one stays and the log says which file is wrong and why.
/// Registers the handler at once and watches in a task until shutdown.
fn reload_tls_on_hangup(app: std::sync::Arc<streamgate::App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGHUP; the TLS certificate will not be reloaded");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = app.shutdown.cancelled() => return,
                received = hangup.recv() => if received.is_none() { return },
            }
            tracing::info!("SIGHUP received: reloading the TLS certificate");
            match app.reload_tls() {
                Ok(sha256) => tracing::info!(
                    %sha256,
                    "TLS certificate reloaded: new connections get it, open ones keep theirs"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "TLS certificate reload failed; still serving the previous certificate"
                ),
            }
        }
    });
}

/// Watches SIGINT and SIGTERM from the moment it is called (not from the first poll), so a
/// signal that arrives as soon as the gateway says it listens stops it gracefully instead of
/// killing it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot watch SIGINT/SIGTERM; waiting for Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `serve --help` states the defaults by hand; they must be the configuration's.
    #[test]
    fn serve_help_states_the_configured_defaults() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_help()
            .to_string();
        let defaults = GatewayConfig::default();
        let mut stated = vec![
            defaults.server.listen.to_string(),
            defaults.tls.listen.to_string(),
            defaults.demo.rate.to_string(),
            defaults.bus.history_events.to_string(),
            defaults.bus.redis.url.clone(),
            defaults.bus.nats.url.clone(),
        ];
        #[cfg(feature = "webtransport")]
        stated.push(defaults.webtransport.listen.to_string());
        assert_eq!(defaults.bus.backend, BusBackend::Memory);
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for value in stated {
            assert!(
                help.contains(&format!("{value}]")) || help.contains(&format!("{value},")),
                "`serve --help` does not state the default {value}:\n{help}"
            );
        }
    }
}
