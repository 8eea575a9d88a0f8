//! Which transports this gateway serves: `[ws] enabled`, `[sse] enabled`, `[longpoll] enabled`
//! and `[webtransport] enabled` (each true by default), and the answer on a turned-off
//! transport's routes: `404` `transport_disabled` with a reason naming the switch, so a client
//! (the browser client's fallback, an operator with curl) can tell "off here" from a mistyped
//! path. `/healthz` and the lab's config list what is on ([`TransportSwitches::to_json`]).
//!
//! `[ws] enabled = false` turns off both WebSocket routes, `/ws` and `/ws/echo`, whatever
//! `ws.echo` says: no upgrade is accepted at all.

use http::StatusCode;

use crate::config::GatewayConfig;
use streamgate_core::Rejection;

/// One transport: its name (as in `/healthz`), its routes on the HTTP listener, and why it is
/// off, or `None` when it is served.
#[derive(Debug, Clone, Copy)]
struct Switch {
    name: &'static str,
    paths: &'static [&'static str],
    off_because: Option<&'static str>,
}

/// Which transports are on.
#[derive(Debug, Clone)]
pub(crate) struct TransportSwitches {
    switches: [Switch; 4],
}

impl TransportSwitches {
    /// What `config` (and the features the binary was built with) turn on.
    pub(crate) fn new(config: &GatewayConfig) -> Self {
        let _ = config;
        let built_without = |feature| match feature {
            "ws" => "this gateway was built without the `ws` feature",
            "sse" => "this gateway was built without the `sse` feature",
            "longpoll" => "this gateway was built without the `longpoll` feature",
            _ => "this gateway was built without the `webtransport` feature",
        };
        let switch = |on: Option<bool>, name, config_key, paths| Switch {
            name,
            paths,
            off_because: match on {
                None => Some(built_without(name)),
                Some(true) => None,
                Some(false) => Some(config_key),
            },
        };
        #[cfg(feature = "ws")]
        let ws = Some(config.ws.enabled);
        #[cfg(not(feature = "ws"))]
        let ws = None;
        #[cfg(feature = "sse")]
        let sse = Some(config.sse.enabled);
        #[cfg(not(feature = "sse"))]
        let sse = None;
        #[cfg(feature = "longpoll")]
        let longpoll = Some(config.longpoll.enabled);
        #[cfg(not(feature = "longpoll"))]
        let longpoll = None;
        #[cfg(feature = "webtransport")]
        let webtransport = Some(config.webtransport.enabled);
        #[cfg(not(feature = "webtransport"))]
        let webtransport = None;
        Self {
            switches: [
                switch(
                    ws,
                    "ws",
                    "WebSocket is turned off on this gateway ([ws] enabled = false)",
                    &["/ws", "/ws/echo"],
                ),
                switch(
                    sse,
                    "sse",
                    "Server-Sent Events are turned off on this gateway ([sse] enabled = false)",
                    &["/sse"],
                ),
                switch(
                    longpoll,
                    "longpoll",
                    "long polling is turned off on this gateway ([longpoll] enabled = false)",
                    &["/poll"],
                ),
                switch(
                    webtransport,
                    "webtransport",
                    "WebTransport is turned off on this gateway ([webtransport] enabled = false)",
                    &["/wt/cert-hash"],
                ),
            ],
        }
    }

    /// The transports turned off, by name.
    pub(crate) fn off(&self) -> Vec<&'static str> {
        self.switches
            .iter()
            .filter(|s| s.off_because.is_some())
            .map(|s| s.name)
            .collect()
    }

    /// The refusal for a request to a turned-off transport's route; `None` for any other path.
    pub(crate) fn refusal(&self, path: &str) -> Option<Rejection> {
        let switch = self.switches.iter().find(|s| s.paths.contains(&path))?;
        let because = switch.off_because?;
        Some(
            Rejection::new(
                "transport_disabled",
                format!("{because}: {path} is not served; use another transport"),
            )
            .with_status(StatusCode::NOT_FOUND),
        )
    }

    /// `{"ws":true,"sse":true,"longpoll":true,"webtransport":true}`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        self.switches
            .iter()
            .map(|s| (s.name.to_owned(), s.off_because.is_none().into()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transport_is_on_by_default() {
        let switches = TransportSwitches::new(&GatewayConfig::default());
        assert!(switches.off().is_empty(), "{:?}", switches.off());
        for path in ["/ws", "/ws/echo", "/sse", "/poll", "/wt/cert-hash", "/x"] {
            assert!(switches.refusal(path).is_none(), "{path}");
        }
        assert_eq!(
            switches.to_json(),
            serde_json::json!({"ws": true, "sse": true, "longpoll": true, "webtransport": true})
        );
    }

    #[cfg(all(feature = "ws", feature = "longpoll"))]
    #[test]
    fn a_turned_off_transport_refuses_its_routes_only() {
        let mut config = GatewayConfig::default();
        config.ws.enabled = false;
        config.longpoll.enabled = false;
        let switches = TransportSwitches::new(&config);
        assert_eq!(switches.off(), ["ws", "longpoll"]);
        assert_eq!(
            switches.to_json(),
            serde_json::json!({"ws": false, "sse": true, "longpoll": false, "webtransport": true})
        );
        for path in ["/ws", "/ws/echo", "/poll"] {
            let refusal = switches.refusal(path).expect(path);
            assert_eq!(refusal.status(), StatusCode::NOT_FOUND);
            let text = refusal.to_string();
            assert!(text.contains("transport_disabled"), "{text}");
            assert!(text.contains("enabled = false"), "{text}");
        }
        assert!(switches.refusal("/sse").is_none());
        assert!(switches.refusal("/wt/cert-hash").is_none());
    }
}
