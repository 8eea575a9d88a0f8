//! Builds the event bus the configuration names: the embedded [`MemoryBus`], or a
//! [`BrokerBus`] that shares one log with every other node through Redis or NATS.

use std::sync::Arc;

#[cfg(any(feature = "redis", feature = "nats"))]
use streamgate_core::BrokerError;
use streamgate_core::{Broker, BrokerBus, BrokerBusConfig, EventBus, MemoryBus};

use crate::config::{BusBackend, BusConfig};

/// The bus for `config`. A broker-backed bus starts connecting in the background (it retries
/// with backoff while the broker is down, and `/healthz` says so); only a configuration the
/// backend cannot use at all is an error here.
///
/// # Errors
/// A malformed broker URL or setting, or a backend this build was compiled without.
///
/// # Panics
/// A broker-backed bus must be built inside a tokio runtime.
pub fn build(config: &BusConfig) -> Result<Arc<dyn EventBus>, String> {
    if let Some(mistake) = other_backends_url(config) {
        return Err(mistake);
    }
    let broker: Arc<dyn Broker> = match config.backend {
        BusBackend::Memory => return Ok(Arc::new(MemoryBus::new(config.memory()))),
        BusBackend::Redis => redis_broker(config)?,
        BusBackend::Nats => nats_broker(config)?,
    };
    Ok(Arc::new(BrokerBus::start(
        broker,
        BrokerBusConfig::new(config.memory()),
    )))
}

/// A broker URL of the other backend's kind (a `nats://` URL for Redis, a `redis://` one for
/// NATS) is said as such, with the switch that was probably meant, before the backend's own
/// parser calls it malformed.
fn other_backends_url(config: &BusConfig) -> Option<String> {
    let (setting, url, meant) = match config.backend {
        BusBackend::Memory => return None,
        BusBackend::Redis => ("bus.redis.url", config.redis.url.as_str(), "nats"),
        BusBackend::Nats => ("bus.nats.url", config.nats.url.as_str(), "redis"),
    };
    let schemes: &[&str] = match meant {
        "nats" => &["nats://", "tls://", "ws://", "wss://"],
        _ => &["redis://", "rediss://", "redis+unix://", "unix://"],
    };
    let first = url.split(',').next().unwrap_or_default().trim();
    schemes
        .iter()
        .any(|scheme| first.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme)))
        .then(|| {
            format!(
                "{setting} (--bus-url) {first:?} is a {} URL, but the bus backend is {}: for \
                 this broker use `--bus {meant}` (bus.backend = \"{meant}\"); nothing was contacted",
                if meant == "nats" { "NATS" } else { "Redis" },
                if meant == "nats" { "Redis" } else { "NATS" },
            )
        })
}

/// A broker's construction error as said on the command line: what was wrong with which
/// setting (construction never contacts the broker, so it is never a refusal by one).
#[cfg(any(feature = "redis", feature = "nats"))]
fn construction_error(setting: &str, e: &BrokerError) -> String {
    match e {
        BrokerError::Refused(reason) => {
            format!("{setting}: {reason} (nothing was contacted: the setting is unusable)")
        }
        other => format!("{setting}: {other}"),
    }
}

#[cfg(feature = "redis")]
fn redis_broker(config: &BusConfig) -> Result<Arc<dyn Broker>, String> {
    use streamgate_bus_redis::{Fanout, RedisBroker, RedisBrokerConfig};
    let settings = &config.redis;
    let redis = RedisBrokerConfig::new(settings.url.as_str())
        .prefix(settings.prefix.as_str())
        .history_events(config.history_events)
        .fanout(match settings.fanout {
            crate::config::RedisFanout::PubSub => Fanout::PubSub,
            crate::config::RedisFanout::Xread => Fanout::Xread,
        });
    RedisBroker::new(redis)
        .map(|broker| Arc::new(broker) as Arc<dyn Broker>)
        .map_err(|e| {
            construction_error(
                "bus.redis.url (--bus-url; redis://host:port[/db], rediss:// for TLS)",
                &e,
            )
        })
}

#[cfg(not(feature = "redis"))]
fn redis_broker(_: &BusConfig) -> Result<Arc<dyn Broker>, String> {
    Err("bus.backend = \"redis\": this build has no Redis support (feature `redis`)".to_owned())
}

#[cfg(feature = "nats")]
fn nats_broker(config: &BusConfig) -> Result<Arc<dyn Broker>, String> {
    use streamgate_bus_nats::{NatsBroker, NatsBrokerConfig};
    let settings = &config.nats;
    let nats = NatsBrokerConfig::default()
        .url(settings.url.as_str())
        .stream(settings.stream.as_str())
        .subject_prefix(settings.subject_prefix.as_str())
        .history_events(config.history_events);
    NatsBroker::new(nats)
        .map(|broker| Arc::new(broker) as Arc<dyn Broker>)
        .map_err(|e| construction_error("bus.nats", &e))
}

#[cfg(not(feature = "nats"))]
fn nats_broker(_: &BusConfig) -> Result<Arc<dyn Broker>, String> {
    Err("bus.backend = \"nats\": this build has no NATS support (feature `nats`)".to_owned())
}
