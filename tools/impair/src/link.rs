//! The link itself: creating the namespace and either mechanism, running a program inside
//! it, its counters, and removing everything again (also what a killed run left behind).

use std::ffi::OsStr;
use std::fmt;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use anyhow::Context as _;

use crate::command::{ip, run, run_blocking, tc, CommandError};
use crate::forwarder::Forwarder;
use crate::names::{addresses_in_use, LinkAddresses, LinkNames};
use crate::netem::{netem_qdisc, qdisc_stats};
use crate::spec::Impairment;

/// MTU of both ends of the link. QUIC needs paths that carry 1200-byte datagrams; 1500 is what
/// an Ethernet path offers, so the comparison does not favour any transport.
const LINK_MTU: u16 = 1500;

/// Packets the kernel holds for the forwarder to read, per device (Linux's default for TUN is
/// 500). Drops there would be losses nobody asked for; a queue as long as netem's own absorbs
/// the moments when the forwarder thread waits for a core, at 20 000 packets/s and more.
const TUN_QUEUE_LEN: u32 = 1000;
/// How an [`ImpairedLink`] impairs its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// The kernel's `tc netem` qdisc on both ends of a veth pair.
    Netem,
    /// Two TUN devices and a forwarder in this process, on a thread and a single-threaded
    /// tokio runtime of its own so that a busy caller's runtime does not delay packets.
    Userspace,
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mechanism::Netem => "netem",
            Mechanism::Userspace => "userspace",
        })
    }
}

/// Traffic through the link so far, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// From the clients' side into the namespace.
    pub to_gateway: DirectionStats,
    /// From the namespace back to the clients' side.
    pub to_client: DirectionStats,
}

/// Traffic through one direction of the link.
///
/// With netem, these are the qdisc's counters: bytes include the 14-byte Ethernet header of
/// the veth, and drops include packets refused past netem's queue limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirectionStats {
    /// Packets that reached the far end.
    pub delivered_packets: u64,
    /// Bytes of those packets.
    pub delivered_bytes: u64,
    /// Packets lost: to the configured loss, or because the queue was full.
    pub dropped_packets: u64,
}

/// Distinguishes the links made by one process.
static NEXT_LINK_NUMBER: AtomicU64 = AtomicU64::new(0);

/// A link between this process's network namespace (the clients' side) and a new namespace
/// (the gateway's side) that delays and drops packets in both directions.
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// use streamgate_impair::{ImpairedLink, Impairment};
///
/// let impairment: Impairment = "delay 20ms loss 1%".parse()?;
/// let link = ImpairedLink::create(&impairment).await?;
/// println!("{}", link.describe());
/// // The gateway runs inside the namespace, listening on link.gateway_ip().
/// let mut gateway = tokio::process::Command::from(link.command("streamgate"))
///     .arg("serve")
///     .kill_on_drop(true)
///     .spawn()?;
/// // ... clients connect to link.gateway_ip() ...
/// gateway.kill().await?;
/// link.remove().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ImpairedLink {
    impairment: Impairment,
    names: LinkNames,
    addresses: LinkAddresses,
    mechanism: Mechanism,
    /// Why netem could not be used, when the link fell back to userspace.
    netem_unavailable: Option<String>,
    forwarder: Option<Forwarder>,
    /// Set once [`ImpairedLink::remove`] has cleaned up, so that `Drop` does not do it again.
    removed: bool,
}

impl ImpairedLink {
    /// Creates the namespace and the link, with netem when the kernel has it and the userspace
    /// forwarder otherwise.
    ///
    /// Must be called inside a tokio runtime, which runs the `ip` and `tc` commands. The
    /// userspace forwarder, though, runs on a thread of its own (see [`Mechanism::Userspace`]).
    pub async fn create(impairment: &Impairment) -> anyhow::Result<ImpairedLink> {
        Self::build(impairment, Plan::Auto).await
    }

    /// Creates the link with the given mechanism, failing when it is not available here.
    pub async fn create_using(
        impairment: &Impairment,
        mechanism: Mechanism,
    ) -> anyhow::Result<ImpairedLink> {
        let plan = match mechanism {
            Mechanism::Netem => Plan::Veth {
                qdisc: netem_qdisc(impairment),
            },
            Mechanism::Userspace => Plan::Userspace,
        };
        Self::build(impairment, plan).await
    }

    /// The network namespace the gateway runs in.
    pub fn namespace(&self) -> &str {
        &self.names.namespace
    }

    /// The address inside the namespace, where the gateway listens.
    pub fn gateway_ip(&self) -> IpAddr {
        IpAddr::V4(self.addresses.gateway)
    }

    /// The address of the clients' end of the link, in this process's namespace. Clients need
    /// not bind to it: the route to [`ImpairedLink::gateway_ip`] already goes through the link.
    pub fn client_ip(&self) -> IpAddr {
        IpAddr::V4(self.addresses.client)
    }

    /// How the packets are impaired.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The impairment applied in each direction.
    pub fn impairment(&self) -> &Impairment {
        &self.impairment
    }

    /// One line for a person: mechanism (and why), impairment, devices, namespace, addresses.
    pub fn describe(&self) -> String {
        let LinkNames {
            namespace,
            client_device,
            gateway_device,
        } = &self.names;
        let LinkAddresses { client, gateway } = self.addresses;
        let how = match (self.mechanism, &self.netem_unavailable) {
            (Mechanism::Netem, _) => {
                format!("tc netem on veth pair {client_device}/{gateway_device}")
            }
            (Mechanism::Userspace, reason) => {
                let why = reason
                    .as_deref()
                    .map_or_else(String::new, |reason| format!(" ({reason})"));
                format!(
                    "userspace impairment{why} via TUN devices {client_device}/{gateway_device}"
                )
            }
        };
        let stopped = match &self.forwarder {
            Some(forwarder) if forwarder.has_stopped() => {
                " — the forwarder has STOPPED, the link is down"
            }
            _ => "",
        };
        format!(
            "{how}: {} each way, namespace {namespace}, \
             client {client} ↔ gateway {gateway}{stopped}",
            self.impairment
        )
    }

    /// A `Command` that runs `program` inside the namespace (`ip netns exec <ns> program`).
    ///
    /// `ip netns exec` replaces itself with `program`, so the child's pid is the program's and
    /// killing the child kills the program. Kill what runs in the namespace before
    /// [`ImpairedLink::remove`]: a namespace lives on, invisible, while a process is in it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.names.namespace])
            .arg(program);
        command
    }

    /// Packets delivered and dropped so far in each direction: the forwarder's counters with the
    /// userspace mechanism, the qdiscs' (`tc -s qdisc`) with netem. `None` when they cannot be
    /// read.
    ///
    /// With netem this runs `tc` twice and waits for it, a few milliseconds.
    pub fn stats(&self) -> Option<LinkStats> {
        match &self.forwarder {
            Some(forwarder) => Some(forwarder.stats()),
            None => Some(LinkStats {
                to_gateway: qdisc_stats(None, &self.names.client_device)?,
                to_client: qdisc_stats(Some(&self.names.namespace), &self.names.gateway_device)?,
            }),
        }
    }

    /// Removes the namespace and the devices, and reports a forwarder that had failed.
    ///
    /// Dropping the link does the same, synchronously and best effort; this is the way to do
    /// it from async code and to hear about errors.
    pub async fn remove(mut self) -> anyhow::Result<()> {
        let forwarder_error = match self.forwarder.take() {
            Some(forwarder) => forwarder.stop().await,
            None => None,
        };
        let mut errors = Vec::new();
        for command in teardown_commands(&self.names) {
            if let Err(error) = run(command).await {
                if !error.says_already_gone() {
                    errors.push(error.to_string());
                }
            }
        }
        self.removed = true;
        errors.extend(forwarder_error);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "removing impaired link {}: {}",
                self.names.namespace,
                errors.join("; ")
            ))
        }
    }
}

impl Drop for ImpairedLink {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if let Some(forwarder) = self.forwarder.take() {
            let _ = forwarder.stop_blocking();
        }
        for command in teardown_commands(&self.names) {
            // Best effort: a panic or an error here would hide the failure that got us here.
            let _ = run_blocking(command);
        }
    }
}

/// What [`ImpairedLink::build`] should try.
#[derive(Debug)]
enum Plan {
    /// netem on a veth pair, else the userspace forwarder.
    Auto,
    /// A veth pair with this root qdisc on both ends (netem, or a stand-in in tests).
    Veth { qdisc: Vec<String> },
    /// The userspace forwarder only.
    Userspace,
}

impl ImpairedLink {
    async fn build(impairment: &Impairment, plan: Plan) -> anyhow::Result<ImpairedLink> {
        impairment
            .validate()
            .map_err(|error| anyhow::anyhow!("cannot impair a link: {error}"))?;
        check_common_prerequisites().await?;
        sweep_stale_links().await;

        let pid = std::process::id();
        let link_number = (NEXT_LINK_NUMBER.fetch_add(1, AtomicOrdering::Relaxed) % 10_000) as u32;
        let names = LinkNames::new(pid, link_number);
        let addresses = LinkAddresses::choose(pid, link_number, &addresses_in_use().await);

        run(ip(&format!("netns add {}", names.namespace)))
            .await
            .context("cannot impair a link: creating its network namespace")?;
        // From here on, dropping `link` undoes whatever was made, whichever step fails.
        let mut link = ImpairedLink {
            impairment: *impairment,
            names,
            addresses,
            mechanism: Mechanism::Userspace,
            netem_unavailable: None,
            forwarder: None,
            removed: false,
        };
        run(ip(&format!("-n {} link set lo up", link.names.namespace)))
            .await
            .context("bringing up lo in the namespace")?;

        let veth_qdisc = match plan {
            Plan::Auto => Some(netem_qdisc(impairment)),
            Plan::Veth { ref qdisc } => Some(qdisc.clone()),
            Plan::Userspace => None,
        };
        if let Some(qdisc) = veth_qdisc {
            match link.set_up_veth(&qdisc).await {
                Ok(()) => {
                    link.mechanism = Mechanism::Netem;
                    return Ok(link);
                }
                Err(reason) if matches!(plan, Plan::Auto) => {
                    // Remove the half-made pair before trying the other way.
                    let _ = run(ip(&format!("link del {}", link.names.client_device))).await;
                    link.netem_unavailable = Some(reason);
                }
                Err(reason) => anyhow::bail!("cannot impair a link with tc netem: {reason}"),
            }
        }
        if let Err(error) = link.set_up_userspace().await {
            return Err(match &link.netem_unavailable {
                Some(reason) => error.context(format!(
                    "cannot impair a link: tc netem is unavailable ({reason}), \
                     and so is the userspace fallback"
                )),
                None => error.context("cannot impair a link with the userspace forwarder"),
            });
        }
        Ok(link)
    }

    /// The netem mechanism. Returns why it failed, in words for [`ImpairedLink::describe`].
    async fn set_up_veth(&mut self, qdisc: &[String]) -> Result<(), String> {
        let LinkNames {
            namespace,
            client_device,
            gateway_device,
        } = &self.names;
        let created = run(ip(&format!(
            "link add {client_device} type veth peer name {gateway_device}"
        )))
        .await;
        if let Err(error) = created {
            return Err(format!("cannot create a veth pair: {}", error.brief()));
        }
        let client_qdisc = tc(&format!("qdisc add dev {client_device} root"), qdisc);
        match run(client_qdisc).await {
            Ok(_) => {}
            Err(error) if error.says_qdisc_unknown() => {
                return Err("kernel has no sch_netem".to_owned())
            }
            Err(error) => return Err(error.brief()),
        }
        let steps = [
            ip(&format!("link set {gateway_device} netns {namespace}")),
            tc(
                &format!("-n {namespace} qdisc add dev {gateway_device} root"),
                qdisc,
            ),
        ];
        for step in steps {
            run(step).await.map_err(|error| error.brief())?;
        }
        self.configure_addresses()
            .await
            .map_err(|error| format!("{error:#}"))
    }

    /// The userspace mechanism: TUN devices created here, the gateway's moved into the
    /// namespace, and a forwarder thread between them.
    async fn set_up_userspace(&mut self) -> anyhow::Result<()> {
        if !std::path::Path::new("/dev/net/tun").exists() {
            anyhow::bail!(
                "/dev/net/tun does not exist (a kernel without the TUN driver, or a container \
                 without the device: `mknod /dev/net/tun c 10 200` or `--device /dev/net/tun`)"
            );
        }
        let open = |name: &str| {
            // Not persistent, and not brought up here: the device vanishes with its descriptor,
            // and it is brought up after its move and its addressing.
            tun_rs::DeviceBuilder::new()
                .name(name)
                .mtu(LINK_MTU)
                .tx_queue_len(TUN_QUEUE_LEN)
                .enable(false)
                .build_sync()
                .with_context(|| format!("opening TUN device {name} through /dev/net/tun"))
        };
        let client = open(&self.names.client_device)?;
        let gateway = open(&self.names.gateway_device)?;
        let LinkNames {
            namespace,
            gateway_device,
            ..
        } = &self.names;
        run(ip(&format!("link set {gateway_device} netns {namespace}")))
            .await
            .context("moving the gateway's TUN device into the namespace")?;
        let forwarder = Forwarder::start(self.impairment, client, gateway)
            .await
            .context("starting the forwarder thread")?;
        self.forwarder = Some(forwarder);
        self.configure_addresses().await
    }

    /// Point-to-point addresses on both ends, so that each end's route to the other is implied
    /// by its address and no other route is needed; then both ends up.
    async fn configure_addresses(&self) -> anyhow::Result<()> {
        let names = &self.names;
        let (namespace, client_device) = (&names.namespace, &names.client_device);
        let gateway_device = &names.gateway_device;
        let LinkAddresses { client, gateway } = self.addresses;
        // Without an IPv6 link-local address the link carries no router or multicast
        // solicitations, only the traffic under test. Best effort: it fails where IPv6 is off.
        let _ = run(ip(&format!("link set {client_device} addrgenmode none"))).await;
        let _ = run(ip(&format!(
            "-n {namespace} link set {gateway_device} addrgenmode none"
        )))
        .await;
        let steps = [
            format!("addr add {client}/32 peer {gateway}/32 dev {client_device}"),
            format!("link set {client_device} up"),
            format!("-n {namespace} addr add {gateway}/32 peer {client}/32 dev {gateway_device}"),
            format!("-n {namespace} link set {gateway_device} up"),
        ];
        for step in steps {
            run(ip(&step)).await.context("addressing the link")?;
        }
        Ok(())
    }
}

/// Commands that undo a link, in order. Deleting the client's device deletes a veth pair
/// whole; TUN devices also vanish when their descriptors close, so "not found" is fine.
fn teardown_commands(names: &LinkNames) -> [Command; 2] {
    [
        ip(&format!("link del {}", names.client_device)),
        ip(&format!("netns del {}", names.namespace)),
    ]
}

/// Fails with a message saying exactly what is missing: Linux, root, or the `ip` command.
async fn check_common_prerequisites() -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        anyhow::bail!("cannot impair a link: it needs Linux network namespaces");
    }
    if let Some(uid) = effective_uid() {
        if uid != 0 {
            anyhow::bail!(
                "cannot impair a link: not running as root (effective uid {uid}); network \
                 namespaces, veth and TUN devices need CAP_SYS_ADMIN and CAP_NET_ADMIN"
            );
        }
    }
    match run(ip("-V")).await {
        Err(CommandError::NotFound { .. }) => {
            anyhow::bail!("cannot impair a link: the `ip` command (iproute2) was not found in PATH")
        }
        Err(error) => Err(anyhow::anyhow!("cannot impair a link: {error}")),
        Ok(_) => Ok(()),
    }
}

/// The effective uid, from `/proc/self/status` (no `unsafe` `geteuid` needed).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// Deletes namespaces (and veth pairs) named by this module for processes that no longer exist,
/// with whatever still runs inside them: what a killed run leaves behind. A live process's
/// links are never touched.
async fn sweep_stale_links() {
    let Ok(listing) = run(ip("netns list")).await else {
        return;
    };
    for namespace in listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        let Some((pid, link_number)) = LinkNames::parse_namespace(namespace) else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let names = LinkNames::new(pid, link_number);
        if names.namespace != namespace {
            continue;
        }
        // A gateway started in the namespace outlives a killed parent and would keep the
        // namespace (and its port) alive after `ip netns del`.
        if let Ok(pids) = run(ip(&format!("netns pids {namespace}"))).await {
            let pids: Vec<&str> = pids.split_whitespace().collect();
            if !pids.is_empty() {
                let mut kill = Command::new("kill");
                kill.arg("-KILL").args(&pids);
                let _ = run(kill).await;
            }
        }
        for command in teardown_commands(&names) {
            let _ = run(command).await;
        }
    }
}

#[cfg(test)]
mod tests;
