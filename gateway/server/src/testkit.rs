//! A gateway on an ephemeral port, for the integration tests of this crate and of the
//! transports. Not part of the public API.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::GatewayConfig;
use crate::{App, Gateway, ShutdownOutcome};

/// A gateway running in this process on 127.0.0.1.
#[derive(Debug)]
pub struct TestGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it listens for HTTPS, when TLS is on.
    pub tls_addr: Option<SocketAddr>,
    /// Where it listens for WebTransport (UDP), when that is on.
    pub wt_addr: Option<SocketAddr>,
    /// Its shared state (bus, shutdown token).
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<ShutdownOutcome>,
}

impl TestGateway {
    /// Starts a gateway on 127.0.0.1:0 with `config` (its listen address is replaced).
    ///
    /// # Panics
    /// If the listener cannot be bound.
    pub async fn start(mut config: GatewayConfig) -> Self {
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.tls.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        #[cfg(feature = "webtransport")]
        {
            config.webtransport.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        }
        let gateway = Gateway::bind(config).await.expect("bind 127.0.0.1:0");
        let addr = gateway.local_addr().expect("local address");
        let tls_addr = gateway.tls_local_addr();
        #[cfg(feature = "webtransport")]
        let wt_addr = gateway.wt_local_addr();
        #[cfg(not(feature = "webtransport"))]
        let wt_addr = None;
        let app = Arc::clone(gateway.app());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(gateway.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            tls_addr,
            wt_addr,
            app,
            stop: Some(stop),
            handle,
        }
    }

    /// A configuration without the demo source or TLS.
    pub fn quiet_config() -> GatewayConfig {
        let mut config = GatewayConfig::default();
        config.demo.enabled = false;
        config.tls.enabled = false;
        config
    }

    /// Triggers shutdown and returns how it ended.
    ///
    /// # Panics
    /// If the gateway task panicked.
    pub async fn shutdown(mut self) -> ShutdownOutcome {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.handle).await.expect("gateway task")
    }
}
