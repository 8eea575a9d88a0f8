//! Upstream ingest in a gateway built without the `upstream` feature: there is none.
//! Configuration validation refuses `[[sources]]` first, so this is never handed a source.

use std::sync::Arc;

use streamgate_core::EventBus;
use tokio_util::sync::CancellationToken;

use crate::config::SourceConfig;

/// Ingests nothing: says why, and returns.
pub(crate) async fn run(
    _bus: Arc<dyn EventBus>,
    source: SourceConfig,
    _shutdown: CancellationToken,
) {
    tracing::error!(
        url = %source.url,
        "this gateway was built without the `upstream` feature: upstream sources are not ingested"
    );
}
