//! What a link is called and where it is: the names of its namespace and devices, and the
//! addresses of its two ends.

use std::net::Ipv4Addr;

use crate::command::{ip, run};

/// Addresses come from 10.77.0.0/16, split into /30 blocks (client = .1, gateway = .2 of a
/// block). A block is chosen from the process id and checked against the addresses in use.
const SUBNET_SECOND_OCTET: u8 = 77;
const BLOCKS_IN_SUBNET: u32 = 1 << 14;

/// Prefixes of the names this module gives its namespaces and devices. They are how the sweep
/// of stale links recognises what a dead process of ours left behind.
const NAMESPACE_PREFIX: &str = "sgns";
const CLIENT_DEVICE_PREFIX: &str = "sgc";
const GATEWAY_DEVICE_PREFIX: &str = "sgg";
/// Names of one link's namespace and devices, unique per process and per link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkNames {
    pub(crate) namespace: String,
    pub(crate) client_device: String,
    pub(crate) gateway_device: String,
}

impl LinkNames {
    /// `sgns<pid>_<n>`, `sgc<pid>_<n>`, `sgg<pid>_<n>`: the pid keeps concurrent processes
    /// apart and tells the stale sweep whose link it is; `n` keeps the links of one process
    /// (tests run in parallel) apart. With a 7-digit pid and `n` below 10 000 a device name is
    /// 15 characters, the most Linux allows.
    pub(crate) fn new(pid: u32, link_number: u32) -> Self {
        let suffix = format!("{pid}_{}", link_number % 10_000);
        Self {
            namespace: format!("{NAMESPACE_PREFIX}{suffix}"),
            client_device: format!("{CLIENT_DEVICE_PREFIX}{suffix}"),
            gateway_device: format!("{GATEWAY_DEVICE_PREFIX}{suffix}"),
        }
    }

    /// The pid and link number of a namespace name that this module made.
    pub(crate) fn parse_namespace(name: &str) -> Option<(u32, u32)> {
        let (pid, number) = name.strip_prefix(NAMESPACE_PREFIX)?.split_once('_')?;
        Some((pid.parse().ok()?, number.parse().ok()?))
    }
}

/// The two ends' addresses: a /30 block of 10.77.0.0/16, client `.1`, gateway `.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkAddresses {
    pub(crate) client: Ipv4Addr,
    pub(crate) gateway: Ipv4Addr,
}

impl LinkAddresses {
    fn for_block(block: u32) -> Self {
        let base = u32::from(Ipv4Addr::new(10, SUBNET_SECOND_OCTET, 0, 0))
            + (block % BLOCKS_IN_SUBNET) * 4;
        Self {
            client: Ipv4Addr::from(base + 1),
            gateway: Ipv4Addr::from(base + 2),
        }
    }

    /// The first block from one derived from the pid whose addresses nobody uses yet, so that
    /// two processes (or two links of one) do not route into each other's namespace.
    pub(crate) fn choose(pid: u32, link_number: u32, in_use: &[Ipv4Addr]) -> Self {
        let start = pid.wrapping_mul(97).wrapping_add(link_number);
        (0..BLOCKS_IN_SUBNET)
            .map(|offset| Self::for_block(start.wrapping_add(offset)))
            .find(|candidate| {
                !in_use.contains(&candidate.client) && !in_use.contains(&candidate.gateway)
            })
            .unwrap_or_else(|| Self::for_block(start))
    }
}

/// IPv4 addresses (and point-to-point peers) configured in this namespace.
pub(crate) async fn addresses_in_use() -> Vec<Ipv4Addr> {
    run(ip("-4 -o addr show"))
        .await
        .map(|listing| parse_ipv4_addresses(&listing))
        .unwrap_or_default()
}

/// Reads `ip -o addr` lines such as `5: sgc1_0 inet 10.77.0.1 peer 10.77.0.2/32 scope …`.
fn parse_ipv4_addresses(listing: &str) -> Vec<Ipv4Addr> {
    let mut addresses = Vec::new();
    for line in listing.lines() {
        let mut words = line.split_whitespace();
        while let Some(word) = words.next() {
            if word == "inet" || word == "peer" {
                let address = words.next().unwrap_or_default();
                let address = address.split('/').next().unwrap_or_default();
                addresses.extend(address.parse::<Ipv4Addr>().ok());
            }
        }
    }
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux refuses interface names longer than this (IFNAMSIZ - 1).
    const MAX_DEVICE_NAME_LEN: usize = 15;

    #[test]
    fn names_fit_linux_limits_and_are_recognised_by_the_sweep() {
        let names = LinkNames::new(4_194_304, 9_999);
        assert!(
            names.client_device.len() <= MAX_DEVICE_NAME_LEN,
            "{names:?}"
        );
        assert!(
            names.gateway_device.len() <= MAX_DEVICE_NAME_LEN,
            "{names:?}"
        );
        assert_ne!(names.client_device, names.gateway_device);
        assert_eq!(
            LinkNames::parse_namespace(&names.namespace),
            Some((4_194_304, 9_999))
        );
        assert_eq!(LinkNames::new(1, 10_000), LinkNames::new(1, 0));
        assert_eq!(LinkNames::parse_namespace("sgnsfoo_1"), None);
        assert_eq!(LinkNames::parse_namespace("other"), None);
    }

    #[test]
    fn addresses_are_point_to_point_pairs_avoiding_those_in_use() {
        let first = LinkAddresses::for_block(0);
        assert_eq!(first.client, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(first.gateway, Ipv4Addr::new(10, 77, 0, 2));
        let last = LinkAddresses::for_block(BLOCKS_IN_SUBNET - 1);
        assert_eq!(last.gateway, Ipv4Addr::new(10, 77, 255, 254));
        assert_eq!(LinkAddresses::for_block(BLOCKS_IN_SUBNET), first);

        let free = LinkAddresses::choose(1234, 0, &[]);
        let taken = [free.gateway];
        let other = LinkAddresses::choose(1234, 0, &taken);
        assert_ne!(other, free);
        assert_ne!(LinkAddresses::choose(1234, 1, &[]), free);
    }

    #[test]
    fn reads_addresses_and_peers_from_ip_o_addr() {
        let listing = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                       5: sgc1_0    inet 10.77.0.1 peer 10.77.0.2/32 scope global sgc1_0\\ x\n";
        assert_eq!(
            parse_ipv4_addresses(listing),
            [
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(10, 77, 0, 1),
                Ipv4Addr::new(10, 77, 0, 2)
            ]
        );
    }
}
