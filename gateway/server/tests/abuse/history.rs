//! Abuse: retained history. One client publishes far more bytes than `bus.history_memory`
//! across many topics (the issue: 800 MiB over 200 topics raised RSS by 600 MiB, for good).
//! The bus-wide bound evicts the oldest events of all topics: the history the gateway tracks
//! never exceeds it, the process's RSS stays bounded, a second client is still served, and
//! a client resuming from before the evictions is told `gap`.

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;

use super::common::{parse, Sse, TestClient};
use super::support::{served_within, SpawnedGateway};

const MIB: usize = 1024 * 1024;
const HISTORY_MEMORY: usize = 8 * MIB;
const TOPICS: usize = 256;
const PAYLOAD: usize = 64 * 1024;
const PUBLISHES: usize = 2048;

/// Resident memory of `gateway`, bytes.
fn rss_bytes(gateway: &SpawnedGateway) -> u64 {
    gateway.rss_kib() * 1024
}

async fn history_bytes(client: &mut TestClient) -> f64 {
    let metrics = client.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let samples = parse(&metrics.text());
    samples[&("streamgate_history_bytes".to_owned(), Vec::new())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_flood_stays_under_history_memory() {
    // Per-client limits off: one client publishes as fast as it can.
    let gateway = SpawnedGateway::start(
        "history",
        &format!(
            "publish_rate = 0\ntopic_create_rate = 0\n[bus]\nhistory_memory = {HISTORY_MEMORY}\n"
        ),
    );
    let addr = gateway.addr;
    let mut observer = TestClient::connect(addr).await;
    // Warm up (connections, metric series, allocator arenas) before the baseline.
    let first = observer
        .send("POST", "/publish/hist-0", Bytes::from(vec![b'x'; PAYLOAD]))
        .await;
    assert_eq!(first.status, 200);
    let first_id = first.json()["id"].as_str().unwrap().to_owned();
    history_bytes(&mut observer).await;
    let rss_before = rss_bytes(&gateway);

    // Four connections publish 2048 × 64 KiB = 128 MiB, 16 × the bound, over 256 topics.
    let mut publishers = Vec::new();
    for worker in 0..4 {
        publishers.push(tokio::spawn(async move {
            let mut client = TestClient::connect(addr).await;
            let payload = Bytes::from(vec![b'y'; PAYLOAD]);
            for i in (worker..PUBLISHES).step_by(4) {
                let topic = format!("/publish/hist-{}?content_type=binary", i % TOPICS);
                let response = client.send("POST", &topic, payload.clone()).await;
                assert_eq!(response.status, 200, "{}", response.text());
            }
        }));
    }
    let mut peak_tracked = 0.0f64;
    let mut peak_rss = rss_before;
    while publishers.iter().any(|p| !p.is_finished()) {
        let tracked = history_bytes(&mut observer).await;
        assert!(
            tracked <= HISTORY_MEMORY as f64,
            "history {tracked} over its bound"
        );
        peak_tracked = peak_tracked.max(tracked);
        peak_rss = peak_rss.max(rss_bytes(&gateway));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let tracked = history_bytes(&mut observer).await;
    assert!(tracked <= HISTORY_MEMORY as f64);
    peak_tracked = peak_tracked.max(tracked);
    let rss_after = rss_bytes(&gateway);
    peak_rss = peak_rss.max(rss_after);
    let growth = rss_after.saturating_sub(rss_before) as f64 / MIB as f64;
    let peak_growth = peak_rss.saturating_sub(rss_before) as f64 / MIB as f64;
    println!(
        "abuse[history flood]: {} MiB published over {TOPICS} topics; tracked history peaked at \
         {:.1} MiB (bound {} MiB); RSS {:.1} MiB before, growth {growth:.1} MiB after, \
         {peak_growth:.1} MiB at peak",
        PUBLISHES * PAYLOAD / MIB,
        peak_tracked / MIB as f64,
        HISTORY_MEMORY / MIB,
        rss_before as f64 / MIB as f64,
    );
    assert!(
        peak_tracked > (HISTORY_MEMORY / 2) as f64,
        "the bound was reached, not just approached"
    );
    assert!(
        growth < 48.0,
        "RSS grew {growth:.1} MiB for a history bound of 8 MiB (128 MiB published)"
    );

    served_within("history flood", async {
        let mut second =
            TestClient::connect_from(addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))).await;
        assert_eq!(second.get("/healthz").await.status, 200);
    })
    .await;

    // The very first event went long ago: resuming from before it is a gap on that topic.
    let (epoch, seq) = first_id.split_once(':').unwrap();
    let before = format!("{epoch}:{}", seq.parse::<u64>().unwrap() - 1);
    let mut resumed = Sse::open(addr, &format!("hist-0&since={before}")).await;
    resumed.expect("event: @gap").await;
    assert!(
        resumed.seen.contains("\"topic\":\"hist-0\""),
        "{}",
        resumed.seen
    );
}
