//! The userspace mechanism's forwarder: a thread that carries packets between the two TUN
//! devices through an [`ImpairedPath`] per direction, and counts them.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng as _;

use crate::link::{DirectionStats, LinkStats};
use crate::path::{ImpairedPath, QUEUE_LIMIT};
use crate::spec::Impairment;

/// The thread that carries packets between the TUN devices, and its counters.
///
/// It has a thread and a single-threaded runtime of its own, rather than tasks on the
/// caller's runtime, so that when the clients keep every worker busy the link's timing does
/// not suffer from it: a delay of 20 ms stays 20 ms, whatever the transport under test does.
#[derive(Debug)]
pub(crate) struct Forwarder {
    thread: std::thread::JoinHandle<std::io::Result<()>>,
    /// Dropping or sending on it ends the thread.
    shutdown: tokio::sync::oneshot::Sender<()>,
    to_gateway: Arc<Counters>,
    to_client: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    delivered_packets: AtomicU64,
    delivered_bytes: AtomicU64,
    dropped_packets: AtomicU64,
}

impl Counters {
    fn count_delivered(&self, len: usize) {
        self.delivered_packets.fetch_add(1, AtomicOrdering::Relaxed);
        self.delivered_bytes
            .fetch_add(len as u64, AtomicOrdering::Relaxed);
    }

    fn count_dropped(&self) {
        self.dropped_packets.fetch_add(1, AtomicOrdering::Relaxed);
    }

    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            delivered_packets: self.delivered_packets.load(AtomicOrdering::Relaxed),
            delivered_bytes: self.delivered_bytes.load(AtomicOrdering::Relaxed),
            dropped_packets: self.dropped_packets.load(AtomicOrdering::Relaxed),
        }
    }
}

impl Forwarder {
    /// Starts carrying packets both ways, and returns once the thread is ready. The devices
    /// become async inside the thread, because an async descriptor belongs to the runtime it
    /// was registered with.
    pub(crate) async fn start(
        impairment: Impairment,
        client: tun_rs::SyncDevice,
        gateway: tun_rs::SyncDevice,
    ) -> std::io::Result<Self> {
        let (shutdown, shutdown_requested) = tokio::sync::oneshot::channel::<()>();
        let (ready, thread_ready) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let to_gateway = Arc::new(Counters::default());
        let to_client = Arc::new(Counters::default());
        let counters = (Arc::clone(&to_gateway), Arc::clone(&to_client));
        let thread = std::thread::Builder::new()
            .name("sg-impair".to_owned())
            .spawn(move || {
                let started = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        let _in_runtime = runtime.enter();
                        let client = Arc::new(tun_rs::AsyncDevice::new(client)?);
                        let gateway = Arc::new(tun_rs::AsyncDevice::new(gateway)?);
                        Ok((runtime, client, gateway))
                    });
                let (runtime, client, gateway) = match started {
                    Ok(started) => started,
                    Err(error) => {
                        let reason = std::io::Error::new(error.kind(), error.to_string());
                        let _ = ready.send(Err(reason));
                        return Err(error);
                    }
                };
                let _ = ready.send(Ok(()));
                let path = || ImpairedPath::new(impairment, StdRng::from_os_rng(), QUEUE_LIMIT);
                let to_gateway = forward(
                    Arc::clone(&client),
                    Arc::clone(&gateway),
                    path(),
                    counters.0,
                );
                let to_client = forward(gateway, client, path(), counters.1);
                runtime.block_on(async move {
                    tokio::select! {
                        // Asked to stop, or the link was dropped: either way, done.
                        _ = shutdown_requested => Ok(()),
                        ended = to_gateway => ended,
                        ended = to_client => ended,
                    }
                })
            })?;
        match thread_ready.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(std::io::Error::other("the forwarder thread died starting")),
        }
        Ok(Self {
            thread,
            shutdown,
            to_gateway,
            to_client,
        })
    }

    pub(crate) fn stats(&self) -> LinkStats {
        LinkStats {
            to_gateway: self.to_gateway.snapshot(),
            to_client: self.to_client.snapshot(),
        }
    }

    pub(crate) fn has_stopped(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the thread and waits until it has closed the devices (which removes them);
    /// returns why it had stopped earlier, if it had.
    pub(crate) fn stop_blocking(self) -> Option<String> {
        // The thread may have ended already, and then nobody receives: that is fine.
        let _ = self.shutdown.send(());
        match self.thread.join() {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(format!("the forwarder had stopped: {error}")),
            Err(_) => Some("the forwarder had panicked".to_owned()),
        }
    }

    /// [`Forwarder::stop_blocking`] off the async worker threads.
    pub(crate) async fn stop(self) -> Option<String> {
        tokio::task::spawn_blocking(move || self.stop_blocking())
            .await
            .unwrap_or_else(|error| Some(format!("stopping the forwarder: {error}")))
    }
}

/// Carries packets from one device to the other until reading fails (the device is gone).
///
/// One loop waits for two things at once: the next packet from `from`, and the instant the
/// earliest held packet is due. A packet that cannot be written (the far end is briefly down)
/// counts as dropped, like a packet lost on the wire.
async fn forward(
    from: Arc<tun_rs::AsyncDevice>,
    to: Arc<tun_rs::AsyncDevice>,
    mut path: ImpairedPath<StdRng, Bytes>,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    // Bigger than any packet a TUN device without offloads hands over.
    let mut buffer = vec![0_u8; 65_536];
    // One timer, moved as the earliest due instant changes, instead of one per packet.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        let holding = path.next_due();
        if let Some(due) = holding {
            let due = tokio::time::Instant::from_std(due);
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
        }
        tokio::select! {
            // Due packets first: a busy sender must not hold back what is already late.
            biased;
            () = &mut timer, if holding.is_some() => {
                let now = Instant::now();
                while let Some(packet) = path.pop_due(now) {
                    match to.send(&packet).await {
                        Ok(_) => counters.count_delivered(packet.len()),
                        Err(_) => counters.count_dropped(),
                    }
                }
            }
            received = from.recv(&mut buffer) => {
                let packet = Bytes::copy_from_slice(&buffer[..received?]);
                if !path.offer(packet, Instant::now()) {
                    counters.count_dropped();
                }
            }
        }
    }
}
