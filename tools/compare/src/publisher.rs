//! The publisher: one WebSocket connection sending `publish` messages on a schedule.
//!
//! It runs on its own OS thread with its own single-threaded runtime, so that it can wait
//! for each scheduled send time with `thread::sleep` (precise to tens of µs, where tokio's
//! timer has 1 ms ticks) without blocking a worker the subscribers need, and without
//! spinning on a core the gateway needs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::Message;

use crate::clients::wall_ns;
use crate::wire::payload;

/// One batch of events to publish: indices `first..first + events`.
#[derive(Clone, Copy, Debug)]
pub struct PublishOrder {
    /// Index of the first event.
    pub first: u64,
    /// How many.
    pub events: u64,
    /// Events per second, open loop; 0 publishes back to back.
    pub rate: u64,
}

/// What the publisher did for one order.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PublishReport {
    /// Events written.
    pub sent: u64,
    /// `published` replies received for them.
    pub acked: u64,
    /// `error` replies.
    pub errors: u64,
    /// The first error reply.
    pub first_error: Option<String>,
    /// Why the publisher stopped early, if it did.
    pub failure: Option<String>,
    /// Wall-clock time (ns since the Unix epoch) the first event was due.
    pub start_ns: u64,
    /// When the last event was written.
    pub end_ns: u64,
    /// Open loop: the furthest a send fell behind its schedule, in nanoseconds.
    pub behind_max_ns: u64,
}

type Order = (PublishOrder, oneshot::Sender<PublishReport>);

/// A connected publisher.
#[derive(Debug)]
pub struct Publisher {
    orders: Option<mpsc::UnboundedSender<Order>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How the publisher is set up.
#[derive(Clone, Debug)]
pub struct PublisherSetup {
    /// The gateway's plain HTTP address.
    pub addr: SocketAddr,
    /// The topic.
    pub topic: String,
    /// Payload bytes of every event.
    pub payload_bytes: usize,
    /// Bound on connecting.
    pub connect_timeout: Duration,
    /// Bound on each send and on waiting for the last `published` reply of an order.
    pub timeout: Duration,
}

impl Publisher {
    /// Starts the thread and waits until its connection is open.
    ///
    /// # Errors
    /// If the thread cannot start or the connection fails.
    pub async fn connect(setup: PublisherSetup) -> anyhow::Result<Self> {
        let (connected_tx, connected_rx) = oneshot::channel();
        let (orders_tx, orders_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("publisher".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = connected_tx.send(Err(anyhow::Error::from(e)));
                        return;
                    }
                };
                runtime.block_on(publish_loop(setup, connected_tx, orders_rx));
            })
            .context("starting the publisher thread")?;
        let publisher = Self {
            orders: Some(orders_tx),
            thread: Some(thread),
        };
        connected_rx
            .await
            .context("the publisher thread ended")?
            .context("connecting the publisher")?;
        Ok(publisher)
    }

    /// Publishes `order` and returns once every event is written and acknowledged (or the
    /// timeout passed).
    pub async fn publish(&self, order: PublishOrder) -> PublishReport {
        let (done_tx, done_rx) = oneshot::channel();
        let sent = self
            .orders
            .as_ref()
            .is_some_and(|orders| orders.send((order, done_tx)).is_ok());
        if !sent {
            return PublishReport {
                failure: Some("the publisher is gone".to_owned()),
                ..PublishReport::default()
            };
        }
        done_rx.await.unwrap_or_else(|_| PublishReport {
            failure: Some("the publisher thread ended".to_owned()),
            ..PublishReport::default()
        })
    }

    /// Closes the connection and joins the thread.
    pub async fn close(mut self) {
        self.orders.take();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Replies the reader task has seen, shared with the sending side.
#[derive(Debug, Default)]
struct Replies {
    acked: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    changed: Notify,
}

async fn publish_loop(
    setup: PublisherSetup,
    connected: oneshot::Sender<anyhow::Result<()>>,
    mut orders: mpsc::UnboundedReceiver<Order>,
) {
    let connect = async {
        let tcp = TcpStream::connect(setup.addr).await?;
        tcp.set_nodelay(true)?;
        let url = format!("ws://{}/ws", setup.addr);
        let (socket, _) = tokio_tungstenite::client_async(url, tcp).await?;
        anyhow::Ok(socket)
    };
    let socket = match tokio::time::timeout(setup.connect_timeout, connect).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(e)) => {
            let _ = connected.send(Err(e));
            return;
        }
        Err(_) => {
            let _ = connected.send(Err(anyhow::anyhow!("timed out")));
            return;
        }
    };
    let _ = connected.send(Ok(()));
    let (mut sink, mut stream) = socket.split();
    let replies = Arc::new(Replies::default());
    let reader = {
        let replies = Arc::clone(&replies);
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                if text.as_str().starts_with("{\"type\":\"published\"") {
                    replies.acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    replies.errors.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = replies.first_error.lock() {
                        first.get_or_insert_with(|| text.as_str().to_owned());
                    }
                }
                replies.changed.notify_waiters();
            }
        })
    };
    let mut sent_total = 0u64;
    let mut message = String::new();
    while let Some((order, done)) = orders.recv().await {
        let acked_before = replies.acked.load(Ordering::Relaxed);
        let errors_before = replies.errors.load(Ordering::Relaxed);
        let mut report = PublishReport::default();
        let start = Instant::now();
        report.start_ns = wall_ns();
        for index in order.first..order.first + order.events {
            let sent_ns = if order.rate == 0 {
                wall_ns()
            } else {
                let offset_ns = u64::try_from(
                    u128::from(index - order.first) * 1_000_000_000 / u128::from(order.rate),
                )
                .unwrap_or(u64::MAX);
                let due = start + Duration::from_nanos(offset_ns);
                loop {
                    let now = Instant::now();
                    let Some(left) = due.checked_duration_since(now).filter(|d| !d.is_zero())
                    else {
                        break;
                    };
                    if left > Duration::from_millis(3) {
                        // The runtime's timer lets the reply reader run meanwhile; it wakes
                        // up to a millisecond late, so stop it 2 ms short.
                        tokio::time::sleep(left - Duration::from_millis(2)).await;
                    } else {
                        std::thread::sleep(left);
                    }
                }
                let behind = Instant::now().saturating_duration_since(due);
                report.behind_max_ns = report
                    .behind_max_ns
                    .max(u64::try_from(behind.as_nanos()).unwrap_or(u64::MAX));
                // The due time, not the actual one: a late send is the publisher's delay
                // and belongs in the latency it causes (no coordinated omission).
                report.start_ns + offset_ns
            };
            message.clear();
            message.push_str("{\"type\":\"publish\",\"topic\":\"");
            message.push_str(&setup.topic);
            message.push_str("\",\"content_type\":\"json\",\"data\":");
            payload(&mut message, sent_ns, index, setup.payload_bytes);
            message.push('}');
            match tokio::time::timeout(setup.timeout, sink.send(Message::text(message.as_str())))
                .await
            {
                Ok(Ok(())) => report.sent += 1,
                Ok(Err(e)) => {
                    report.failure = Some(format!("sending event {index}: {e}"));
                    break;
                }
                Err(_) => {
                    report.failure = Some(format!(
                        "sending event {index}: blocked for {:?}",
                        setup.timeout
                    ));
                    break;
                }
            }
            // Lets the reply reader empty the socket, so the gateway never blocks writing
            // `published` replies to us.
            tokio::task::yield_now().await;
        }
        report.end_ns = wall_ns();
        sent_total += report.sent;
        let deadline = tokio::time::Instant::now() + setup.timeout;
        loop {
            let changed = replies.changed.notified();
            let settled =
                replies.acked.load(Ordering::Relaxed) + replies.errors.load(Ordering::Relaxed);
            if settled >= sent_total || reader.is_finished() {
                break;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break;
            }
        }
        report.acked = replies.acked.load(Ordering::Relaxed) - acked_before;
        report.errors = replies.errors.load(Ordering::Relaxed) - errors_before;
        report.first_error = replies
            .first_error
            .lock()
            .ok()
            .and_then(|first| first.clone());
        let failed = report.failure.is_some();
        let _ = done.send(report);
        if failed {
            break;
        }
    }
    reader.abort();
    let _ = sink.close().await;
}
