//! `write_floor`: what one write per delivery costs on this machine, with no gateway at all.
//!
//! ```text
//! write_floor                                    # N = 1000, M = 100/s, 3 s, 3 runs per writer
//! write_floor --connections 1000 --rate 100 --seconds 3 --repeat 3 --json floor.json
//! write_floor --quick                            # 100 connections, 0.3 s, 1 run (CI smoke)
//! ```
//!
//! The fan-out of `vs_nchan` (N subscribers, M events/s, one small WebSocket frame per event
//! per subscriber) is replayed by writers that do nothing but the writes, so the gateway's
//! CPU per delivery can be read against the cost of the write itself:
//!
//! - `blocking`: one thread, one `write()` of the pre-encoded frame per socket per event: the
//!   syscall floor, the least any server that writes each event to each subscriber on its own
//!   can spend;
//! - `tokio`: a multi-threaded tokio runtime (one worker per core, as the gateway runs) and
//!   one task per subscriber that writes what its channel hands it: the floor of the simplest
//!   async server, runtime wake-ups included;
//! - `io-uring` (Linux): one thread and an io_uring, every event's N sends queued as
//!   submission entries and handed to the kernel in one `io_uring_enter` per ring-full
//!   (up to 4 096 sockets), completions reaped in bulk: the floor without a syscall per
//!   write. Where the kernel refuses io_uring (seccomp, `kernel.io_uring_disabled`, no
//!   kernel support) the tool prints `io_uring unavailable: <error>` and measures the
//!   others.
//!
//! The subscribers run in a child process (this binary with `--reader`) that reads every
//! socket to its end and reports how many bytes it got, which must be every frame written.
//! CPU is the writer process's own (all threads, `schedstat`), from the first event to the
//! last write, divided by the writes. On loopback that includes the receiving side's TCP
//! input, which the kernel runs in the sender's context: the same holds for the gateway and
//! Nchan in `vs_nchan`, so the figures compare.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use streamgate_bench::vs_nchan::{cpu_us, due_at, now_us, payload};
use streamgate_compare::stats::median;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;

#[derive(Debug, Parser)]
#[command(name = "write_floor")]
struct Cli {
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Events per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of events per run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Payload bytes per event (wrapped in an envelope the size of the gateway's).
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Runs per writer; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Writers to measure, in this order, alternating run by run.
    #[arg(long, value_delimiter = ',', default_value = "blocking,tokio,io-uring")]
    writers: Vec<Writer>,
    /// Leave Nagle's algorithm on (no `TCP_NODELAY`): the kernel holds a small write while
    /// an earlier one is unacknowledged and sends them together.
    #[arg(long)]
    nagle: bool,
    /// 100 connections, 0.3 s, one run: a smoke check of the tool.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Internal: be the subscribers' process, connecting this many sockets to this address.
    #[arg(long, hide = true, num_args = 2, value_names = ["ADDR", "CONNECTIONS"])]
    reader: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Writer {
    Blocking,
    Tokio,
    IoUring,
}

impl Writer {
    fn name(self) -> &'static str {
        match self {
            Writer::Blocking => "blocking",
            Writer::Tokio => "tokio",
            Writer::IoUring => "io-uring",
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Run {
    writes: u64,
    cpu_us_per_write: f64,
    /// Wall time from the last event's due time to its last write.
    last_fanout_ms: f64,
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(args) = &cli.reader {
        let addr: SocketAddr = args[0].parse().context("reader address")?;
        let connections: usize = args[1].parse().context("reader connections")?;
        return read_all(addr, connections);
    }
    if cli.quick {
        cli.connections = 100;
        cli.seconds = 0.3;
        cli.repeat = 1;
    }
    cli.repeat = cli.repeat.max(1);
    if cli.writers.contains(&Writer::IoUring) {
        if let Err(reason) = uring::available() {
            println!("io_uring unavailable: {reason}; measuring the other writers");
            cli.writers.retain(|&w| w != Writer::IoUring);
        }
    }
    let events = ((cli.rate * cli.seconds).round() as u64).max(1);
    let frame = envelope_frame(cli.payload_bytes)?;
    println!(
        "write_floor: N = {} connections, M = {} events/s, {} events of {} bytes on the wire, {} run(s) per writer",
        cli.connections,
        cli.rate,
        events,
        frame.len(),
        cli.repeat
    );
    let mut results: Vec<(Writer, Vec<Run>)> = cli.writers.iter().map(|&w| (w, vec![])).collect();
    for _ in 0..cli.repeat {
        for (writer, runs) in &mut results {
            let run = measure(&cli, *writer, events, &frame)?;
            println!(
                "  {:<8} {:>8} writes  {:>6.2} µs CPU per write  last fan-out {:>6.1} ms",
                writer.name(),
                run.writes,
                run.cpu_us_per_write,
                run.last_fanout_ms
            );
            runs.push(run);
        }
    }
    println!("\n| writer | CPU µs per write, median (runs) | last event's fan-out ms, median |");
    println!("|---|---:|---:|");
    let mut json = serde_json::Map::new();
    for (writer, runs) in &results {
        let cpu = median(&runs.iter().map(|r| r.cpu_us_per_write).collect::<Vec<_>>());
        let fanout = median(&runs.iter().map(|r| r.last_fanout_ms).collect::<Vec<_>>());
        let each: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.2}", r.cpu_us_per_write))
            .collect();
        println!(
            "| {} | {cpu:.2} ({}) | {fanout:.1} |",
            writer.name(),
            each.join(", ")
        );
        json.insert(
            writer.name().to_owned(),
            serde_json::json!({"median_cpu_us_per_write": cpu, "median_last_fanout_ms": fanout, "runs": runs}),
        );
    }
    if let Some(path) = &cli.json {
        let doc = serde_json::json!({
            "connections": cli.connections,
            "rate": cli.rate,
            "events": events,
            "frame_bytes": frame.len(),
            "writers": json,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A WebSocket text frame (server to client, unmasked) holding an event envelope of the
/// gateway's shape around a `vs_nchan` payload, so each write is the size the gateway writes.
fn envelope_frame(payload_bytes: usize) -> anyhow::Result<Bytes> {
    let body = format!(
        "{{\"type\":\"event\",\"topic\":\"bench\",\"id\":\"1a2b3c4d5e6f7a8b-1042\",\"ts\":{},\"content_type\":\"json\",\"data\":{}}}",
        now_us(),
        payload(now_us(), 1042, payload_bytes)
    );
    let mut frame = Vec::new();
    Frame::message(body, OpCode::Data(Data::Text), true).format(&mut frame)?;
    Ok(Bytes::from(frame))
}

/// One run of one writer: connects a fresh reader process, writes, checks every byte arrived.
fn measure(cli: &Cli, writer: Writer, events: u64, frame: &Bytes) -> anyhow::Result<Run> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut reader = Command::new(std::env::current_exe()?)
        .arg("--reader")
        .arg(addr.to_string())
        .arg(cli.connections.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the reader process")?;
    // Accepting without blocking, so a reader process that dies (or cannot open its
    // sockets) ends the run with its status instead of leaving it waiting for good.
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sockets = Vec::with_capacity(cli.connections);
    while sockets.len() < cli.connections {
        match listener.accept() {
            Ok((socket, _)) => {
                socket.set_nonblocking(false)?;
                socket.set_nodelay(!cli.nagle)?;
                sockets.push(socket);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = reader.try_wait()? {
                    bail!(
                        "the reader process exited after {} connections ({status})",
                        sockets.len()
                    );
                }
                if Instant::now() > deadline {
                    let _ = reader.kill();
                    bail!(
                        "only {} of {} readers connected within 30 s",
                        sockets.len(),
                        cli.connections
                    );
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let schedule = Schedule {
        rate: cli.rate,
        events,
    };
    // One uncounted event first, so every connection has left slow start and the reader
    // has every socket registered before the clock starts.
    for socket in &mut sockets {
        socket.write_all(frame)?;
    }
    let run = match writer {
        Writer::Blocking => write_blocking(sockets, &schedule, frame)?,
        Writer::Tokio => write_tokio(sockets, &schedule, frame)?,
        Writer::IoUring => uring::write(sockets, &schedule, frame)?,
    };
    let mut line = String::new();
    BufReader::new(reader.stdout.take().context("reader stdout")?).read_line(&mut line)?;
    let status = reader.wait()?;
    let got: u64 = line.trim().parse().unwrap_or(0);
    let expected = (events + 1) * cli.connections as u64 * frame.len() as u64;
    if !status.success() || got != expected {
        bail!(
            "{}: the readers got {got} bytes of {expected} ({status})",
            writer.name()
        );
    }
    Ok(run)
}

/// When each event is due: open loop, the k-th at start + k / rate.
struct Schedule {
    rate: f64,
    events: u64,
}

impl Schedule {
    fn due(&self, start: Instant, index: u64) -> Instant {
        due_at(start, index, self.rate)
    }

    /// The blocking writers' loop: `fan_out` writes event `index` to each of `connections`
    /// sockets, called at the event's due time, with this process's CPU counted from the
    /// first event to the last write.
    fn paced(
        &self,
        connections: usize,
        mut fan_out: impl FnMut(u64) -> anyhow::Result<()>,
    ) -> anyhow::Result<Run> {
        let pid = std::process::id();
        let cpu_before = cpu_us(pid);
        let start = Instant::now();
        for index in 0..self.events {
            let due = self.due(start, index);
            // Pacing an open-loop schedule, not waiting for a signal.
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            fan_out(index)?;
        }
        let cpu = cpu_us(pid) - cpu_before;
        let last_due = self.due(start, self.events - 1);
        let writes = self.events * connections as u64;
        Ok(Run {
            writes,
            cpu_us_per_write: cpu as f64 / writes as f64,
            last_fanout_ms: last_due.elapsed().as_secs_f64() * 1e3,
        })
    }
}

fn write_blocking(
    mut sockets: Vec<TcpStream>,
    schedule: &Schedule,
    frame: &[u8],
) -> anyhow::Result<Run> {
    schedule.paced(sockets.len(), |_| {
        for socket in &mut sockets {
            socket.write_all(frame)?;
        }
        Ok(())
    })
}

fn write_tokio(sockets: Vec<TcpStream>, schedule: &Schedule, frame: &Bytes) -> anyhow::Result<Run> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let written = Arc::new(AtomicU64::new(0));
        let all_written = Arc::new(tokio::sync::Notify::new());
        let target = schedule.events * sockets.len() as u64;
        let mut senders = Vec::with_capacity(sockets.len());
        let mut tasks = Vec::with_capacity(sockets.len());
        for socket in sockets {
            socket.set_nonblocking(true)?;
            let mut socket = tokio::net::TcpStream::from_std(socket)?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
            senders.push(tx);
            let written = written.clone();
            let all_written = all_written.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    socket.write_all(&bytes).await?;
                    if written.fetch_add(1, Ordering::Relaxed) + 1 == target {
                        all_written.notify_one();
                    }
                }
                anyhow::Ok(())
            }));
        }
        let pid = std::process::id();
        let cpu_before = cpu_us(pid);
        let start = Instant::now();
        let done = all_written.notified();
        tokio::pin!(done);
        for index in 0..schedule.events {
            let due = schedule.due(start, index);
            tokio::time::sleep_until(due.into()).await;
            for tx in &senders {
                tx.send(frame.clone()).await?;
            }
        }
        done.await;
        let cpu = cpu_us(pid) - cpu_before;
        let last_write = start.elapsed();
        drop(senders);
        for task in tasks {
            task.await??;
        }
        let last_due = schedule.due(start, schedule.events - 1) - start;
        Ok(Run {
            writes: target,
            cpu_us_per_write: cpu as f64 / target as f64,
            last_fanout_ms: last_write.saturating_sub(last_due).as_secs_f64() * 1e3,
        })
    })
}

/// The io_uring writer (Linux).
#[cfg(target_os = "linux")]
mod uring {
    use std::io::Write as _;
    use std::net::TcpStream;
    use std::os::fd::AsRawFd as _;

    use anyhow::Context as _;
    use io_uring::{opcode, types, IoUring};

    use super::{Run, Schedule};

    /// Most submission entries in the ring: one `io_uring_enter` sends this many frames.
    const RING_ENTRIES: u32 = 4096;

    /// Whether this kernel lets the process set up an io_uring (`io_uring_setup` can be
    /// refused by seccomp, `kernel.io_uring_disabled`, or be missing): the error if not.
    pub(super) fn available() -> Result<(), String> {
        match IoUring::new(8) {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.raw_os_error() {
                Some(errno) => format!("{e} (errno {errno})"),
                None => e.to_string(),
            }),
        }
    }

    /// Every event: one `IORING_OP_SEND` of the frame per socket, submitted a ring-full at
    /// a time with one `io_uring_enter` that also waits for that ring-full's completions.
    /// A short send (the socket's buffer was full) is finished with a blocking `write()`
    /// and counted.
    pub(super) fn write(
        mut sockets: Vec<TcpStream>,
        schedule: &Schedule,
        frame: &[u8],
    ) -> anyhow::Result<Run> {
        let entries = u32::try_from(sockets.len().next_power_of_two())
            .unwrap_or(RING_ENTRIES)
            .clamp(8, RING_ENTRIES);
        let mut ring = IoUring::new(entries).context("io_uring_setup")?;
        let len = u32::try_from(frame.len()).context("frame size")?;
        let fds: Vec<types::Fd> = sockets.iter().map(|s| types::Fd(s.as_raw_fd())).collect();
        let mut short = 0u64;
        let run = schedule.paced(sockets.len(), |_| {
            for (chunk_index, chunk) in fds.chunks(entries as usize).enumerate() {
                let base = chunk_index * entries as usize;
                {
                    let mut submission = ring.submission();
                    for (offset, fd) in chunk.iter().enumerate() {
                        let send = opcode::Send::new(*fd, frame.as_ptr(), len)
                            .build()
                            .user_data((base + offset) as u64);
                        // SAFETY: `frame` outlives the entry: every completion of this
                        // chunk is reaped below before the next chunk, event, or return.
                        #[allow(unsafe_code)]
                        let pushed = unsafe { submission.push(&send) };
                        pushed.context("submission queue full")?;
                    }
                }
                ring.submit_and_wait(chunk.len())
                    .context("io_uring_enter")?;
                let mut reaped = 0;
                while reaped < chunk.len() {
                    let completions: Vec<(u64, i32)> = ring
                        .completion()
                        .map(|cqe| (cqe.user_data(), cqe.result()))
                        .collect();
                    if completions.is_empty() {
                        ring.submit_and_wait(chunk.len() - reaped)
                            .context("io_uring_enter")?;
                        continue;
                    }
                    for (socket, result) in completions {
                        reaped += 1;
                        let sent = usize::try_from(result).map_err(|_| {
                            std::io::Error::from_raw_os_error(result.saturating_neg())
                        });
                        let sent = sent.context("io_uring send")?;
                        if sent < frame.len() {
                            short += 1;
                            sockets[socket as usize].write_all(&frame[sent..])?;
                        }
                    }
                }
            }
            Ok(())
        })?;
        if short > 0 {
            // Each was finished by a blocking write(), counted in the CPU above.
            println!(
                "  io-uring: {short} of {} sends were short (finished by write())",
                run.writes
            );
        }
        Ok(run)
    }
}

/// Elsewhere io_uring does not exist.
#[cfg(not(target_os = "linux"))]
mod uring {
    use std::net::TcpStream;

    use super::{Run, Schedule};

    pub(super) fn available() -> Result<(), String> {
        Err("not Linux".to_owned())
    }

    pub(super) fn write(_: Vec<TcpStream>, _: &Schedule, _: &[u8]) -> anyhow::Result<Run> {
        anyhow::bail!("io_uring unavailable: not Linux")
    }
}

/// The subscribers' process: connect, read every socket to its end, print the bytes read.
fn read_all(addr: SocketAddr, connections: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let total = runtime.block_on(async {
        let mut readers = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let mut socket = tokio::net::TcpStream::connect(addr).await?;
            readers.spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut total = 0u64;
                loop {
                    match socket.read(&mut buf).await? {
                        0 => return std::io::Result::Ok(total),
                        n => total += n as u64,
                    }
                }
            });
        }
        let mut total = 0;
        while let Some(bytes) = readers.join_next().await {
            total += bytes??;
        }
        anyhow::Ok(total)
    })?;
    println!("{total}");
    Ok(())
}
