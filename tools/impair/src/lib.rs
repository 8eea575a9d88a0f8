//! # streamgate-impair: an impaired network link to a new network namespace
//!
//! A tool, not part of the gateway: `streamgate compare --netem "delay 20ms loss 1%"` (crate
//! `streamgate-compare`) uses it to run the gateway inside a Linux network namespace and the
//! clients outside it, so every packet between them crosses one link that delays and drops
//! packets like a real lossy path. That is what makes head-of-line blocking visible: one lost
//! TCP segment stalls every WebSocket, SSE and long-polling message behind it until the
//! retransmission arrives, while a lost WebTransport datagram costs only itself.
//!
//! ```text
//!   root namespace (clients)                     namespace sgns<pid>_<n> (gateway)
//!  ┌──────────────────────────┐                 ┌──────────────────────────────┐
//!  │ client 10.77.a.b+1       │ ── impaired ──▶ │ gateway 10.77.a.b+2          │
//!  │ device sgc<pid>_<n>      │ ◀── impaired ── │ device sgg<pid>_<n>, lo up   │
//!  └──────────────────────────┘                 └──────────────────────────────┘
//! ```
//!
//! The impairment applies **in each direction**, as on a real path: `delay 20ms` makes a round
//! trip take at least 40 ms, and `loss 1%` drops 1% of the packets going each way.
//!
//! # Two mechanisms behind one API
//!
//! * [`Mechanism::Netem`]: a veth pair with the kernel's `tc qdisc … netem` on both ends. This
//!   is the textbook way, and it is used whenever the kernel has `sch_netem`.
//! * [`Mechanism::Userspace`]: many small kernels (Firecracker's among them) are built without
//!   `sch_netem`; `tc` then answers "Specified qdisc kind is unknown". The link is then two TUN
//!   devices, one on each side, and a forwarder thread in this process that reads every IP
//!   packet from one, offers it to an [`ImpairedPath`] (an [`Impairer`] deciding its fate, a
//!   [`DelayLine`] holding it until its time) and writes it to the other. Its delays are as
//!   precise as tokio's timer, which rounds up to the next millisecond: `delay 20ms` measures
//!   20–21 ms each way.
//!
//! # Entering a namespace without `setns`
//!
//! Running code inside another namespace needs `setns(2)`, which the standard library does not
//! offer and this crate, forbidding `unsafe`, does not call. A TUN device, however, stays
//! attached to the file descriptor that created it wherever the device itself goes. So both
//! TUN devices are created here in the root namespace, and only then is the gateway's end
//! moved with `ip link set <dev> netns <ns>` and configured with `ip -n <ns>`. The descriptors
//! keep working after the move; nothing in this process ever runs inside the namespace. The
//! gateway does, through [`ImpairedLink::command`].
//!
//! # Cleaning up
//!
//! [`ImpairedLink::remove`] deletes the namespace and the devices; dropping an [`ImpairedLink`]
//! does the same, synchronously and best effort, so that a failing test leaves nothing behind.
//! The TUN devices are not persistent: even a killed process takes them with it when its
//! descriptors close. A namespace (or a netem veth pair) left by a process that was killed is
//! swept by the next [`ImpairedLink::create`], which recognises its name and sees that its
//! process is gone; processes still running inside it (an orphaned gateway) are killed then.
//!
//! # The modules
//!
//! - [`spec`]: the [`Impairment`] and its netem syntax;
//! - [`path`]: one direction without IO: the [`Impairer`] and the [`DelayLine`];
//! - [`link`]: the [`ImpairedLink`] (namespace, devices, either mechanism, cleanup);
//! - `forwarder`: the userspace mechanism's thread between the TUN devices;
//! - `netem`: the kernel mechanism's `tc` arguments and counters;
//! - `names`: the namespace, device names and addresses of a link;
//! - `command`: running `ip` and `tc`.

mod command;
mod forwarder;
pub mod link;
mod names;
mod netem;
pub mod path;
pub mod spec;

pub use link::{DirectionStats, ImpairedLink, LinkStats, Mechanism};
pub use path::{DelayLine, ImpairedPath, Impairer, UnitRandom, Verdict, QUEUE_LIMIT};
pub use spec::{Impairment, ParseImpairmentError};
