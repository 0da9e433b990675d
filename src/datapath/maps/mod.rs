//! Every pinned map, typed. `table.rs` declares the maps once; `typed.rs`
//! is the plumbing every map shares (get, put, delete, iterate, reconcile);
//! the rest is what the entries mean: the Rust types (here and in
//! `drops.rs`), how each is stored (`codec.rs`: byte order, sentinels, key
//! layout), and the few operations that span entries (here). No policy
//! logic: what goes in is the controller's business.

mod codec;
mod drops;
mod lens;
mod table;
mod typed;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::Result;
use crate::bpf_intf as intf;
use codec::{be, from_be, from_be6};

pub use drops::{DropEvent, DropReason, EventError, Family, Role};
pub use lens::{PolicyFamily, PolicyLens, PrefixLens};
pub use table::*;
pub use typed::{no_guard, Changes, Codec, Reconcile, Store, TypedMap};

/// Key of a policy entry: a pod and one destination prefix of a policy,
/// of either family ([`PolicyKey`], [`PolicyKey6`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKeyOf<A, N> {
    pub source: A,
    pub destination: N,
}

/// Key of `mcast_egw_policy_hash_v4`.
pub type PolicyKey = PolicyKeyOf<Ipv4Addr, Ipv4Network>;
/// Key of `mcast_egw_policy_hash_v6`.
pub type PolicyKey6 = PolicyKeyOf<Ipv6Addr, Ipv6Network>;

/// Where a policy entry sends the pod's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gateway {
    /// The gateway node's IP.
    Node(Ipv4Addr),
    /// The policy matched but no node qualifies as gateway: drop.
    NotFound,
    /// The destination is in the policy's excludedCIDRs: not ours.
    Excluded,
}

/// Value of a policy entry of either family ([`PolicyValue`],
/// [`PolicyValue6`]): only the egress IP's family differs; the gateway and
/// the origin are underlay (IPv4) nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyValueOf<A> {
    /// Unspecified on every node but the gateway, and when it cannot be
    /// derived.
    pub egress_ip: A,
    pub gateway: Gateway,
    /// The uplink on the gateway node, 0 elsewhere.
    pub egress_ifindex: u32,
    /// Labels this entry's counters.
    pub policy_id: u32,
    /// Where the pod's tunnelled copies must come from.
    pub origin: Origin,
}

/// Value of `mcast_egw_policy_hash_v4`.
pub type PolicyValue = PolicyValueOf<Ipv4Addr>;
/// Value of `mcast_egw_policy_hash_v6`.
pub type PolicyValue6 = PolicyValueOf<Ipv6Addr>;

/// The node a pod runs on and its security identity: the outer source and
/// the VNI of the copies its origin node tunnels to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    pub node: Ipv4Addr,
    pub identity: u32,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            node: Ipv4Addr::UNSPECIFIED,
            identity: 0,
        }
    }
}

/// A pod on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host side of the pod's veth.
    pub ifindex: u32,
    /// Cilium security identity (24 bits): the VNI of its tunnelled copies.
    pub identity: u32,
}

/// An uplink that policies egress through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EgressIface {
    pub mac: [u8; 6],
}

/// This node's identity in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Config {
    /// 0.0.0.0 until known.
    pub node_ip: Ipv4Addr,
    /// 0 until the tunnel device exists.
    pub tunnel_ifindex: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_ip: Ipv4Addr::UNSPECIFIED,
            tunnel_ifindex: 0,
        }
    }
}

/// What the controller last recorded in `mcast_egw_status`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub node_name: String,
    pub version: String,
    /// Last successful sync, nanoseconds since the Unix epoch; 0 before.
    pub last_sync_unix_ns: u64,
    /// Successful syncs that changed or confirmed the maps.
    pub syncs: u64,
}

/// Packets and bytes of one (policy, group, role), summed over CPUs: from
/// `mcast_egw_counters` for an IPv4 group, `mcast_egw_counters_v6` for an
/// IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub policy_id: u32,
    pub group: IpAddr,
    pub role: Role,
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    pub fn family(&self) -> Family {
        Family::of(self.group)
    }
}

/// Drops of one (family, role, reason), summed over CPUs: from
/// `mcast_egw_drops` or `mcast_egw_drops_v6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCount {
    pub family: Family,
    pub role: Role,
    pub reason: DropReason,
    pub packets: u64,
    pub bytes: u64,
}

/// Every entry of `map` sorted by key: what the CLI and the tests list.
fn sorted<K: Codec + Ord, V: Codec>(map: &TypedMap<K, V>) -> Result<Vec<(K, V)>> {
    Ok(map.entries()?.into_iter().collect())
}

/// Append the entries of a counter map to `out`, summed over CPUs; `key`
/// gives a key's (policy id, role code, group).
fn read_counters<K: Codec>(
    map: &TypedMap<K, intf::mcast_counter_val>,
    out: &mut Vec<Counter>,
    key: fn(&K) -> (u32, u32, IpAddr),
) -> Result<()> {
    for k in map.keys() {
        let k = k?;
        let (policy_id, role, group) = key(&k);
        let Some(role) = Role::from_raw(role) else {
            continue;
        };
        // A key deleted since the walk saw it has no value: skipped.
        if let Some(per_cpu) = map.get_percpu(&k)? {
            let (packets, bytes) = sum(&per_cpu);
            out.push(Counter {
                policy_id,
                group,
                role,
                packets,
                bytes,
            });
        }
    }
    Ok(())
}

/// Delete the entries of `map` whose policy id (`policy_id(key)`) is not in
/// `keep`; how many went.
fn retain_counters<K: Codec + Copy>(
    map: &TypedMap<K, intf::mcast_counter_val>,
    keep: &std::collections::BTreeSet<u32>,
    policy_id: fn(&K) -> u32,
) -> Result<usize> {
    let mut stale = Vec::new();
    for key in map.keys() {
        let k = key?;
        if !keep.contains(&policy_id(&k)) {
            stale.push(k);
        }
    }
    for k in &stale {
        map.delete(k)?;
    }
    Ok(stale.len())
}

/// The index of (role, reason) in `mcast_egw_drops` and
/// `mcast_egw_drops_v6`: `role * MCAST_DROP_SLOTS + reason`.
pub fn drop_slot(role: Role, reason: DropReason) -> u32 {
    role.raw() * intf::MCAST_DROP_SLOTS + reason.code()
}

/// Packets and bytes summed over CPUs.
fn sum(per_cpu: &[intf::mcast_counter_val]) -> (u64, u64) {
    per_cpu.iter().fold((0, 0), |(p, b), v| {
        (p.wrapping_add(v.packets), b.wrapping_add(v.bytes))
    })
}

/// The operations with a meaning beyond one entry, and the decoded views
/// the CLI, the metrics and the tests read. The typed maps themselves are
/// the fields (see `table.rs`).
impl Maps {
    // --- policy entries -------------------------------------------------

    /// Entries `mcast_egw_policy_hash_v4` can hold (chosen at load).
    pub fn policy_capacity(&self) -> u32 {
        self.policy.capacity()
    }

    /// Entries `mcast_egw_policy_names` can hold (chosen at load).
    pub fn policy_names_capacity(&self) -> u32 {
        self.policy_names.capacity()
    }

    /// Every policy entry, sorted by key.
    pub fn policies(&self) -> Result<Vec<(PolicyKey, PolicyValue)>> {
        sorted(&self.policy)
    }

    /// The IPv6 policy entries, sorted by key.
    pub fn policies_v6(&self) -> Result<Vec<(PolicyKey6, PolicyValue6)>> {
        sorted(&self.policy_v6)
    }

    // --- endpoints, nodes, uplinks ------------------------------------------

    pub fn endpoint_insert(&self, addr: Ipv4Addr, ep: &Endpoint) -> Result<()> {
        self.endpoints.put(&addr, ep)
    }

    pub fn endpoint_delete(&self, addr: Ipv4Addr) -> Result<bool> {
        self.endpoints.delete(&addr)
    }

    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, Endpoint)>> {
        sorted(&self.endpoints)
    }

    pub fn node_insert(&self, addr: Ipv4Addr) -> Result<()> {
        self.nodes.put(&addr, &intf::mcast_node_val::default())
    }

    pub fn node_delete(&self, addr: Ipv4Addr) -> Result<bool> {
        self.nodes.delete(&addr)
    }

    pub fn nodes(&self) -> Result<Vec<Ipv4Addr>> {
        Ok(sorted(&self.nodes)?.into_iter().map(|(k, _)| k).collect())
    }

    pub fn egress_iface_insert(&self, ifindex: u32, iface: &EgressIface) -> Result<()> {
        self.egress_ifaces.put(&ifindex, iface)
    }

    pub fn egress_iface_delete(&self, ifindex: u32) -> Result<bool> {
        self.egress_ifaces.delete(&ifindex)
    }

    pub fn egress_ifaces(&self) -> Result<Vec<(u32, EgressIface)>> {
        sorted(&self.egress_ifaces)
    }

    // --- config ----------------------------------------------------------

    /// Set this node's IP and tunnel device; the flags the map API keeps
    /// itself (see [`Maps::cilium_group_insert`]) are left as they are.
    pub fn config_set(&self, config: &Config) -> Result<()> {
        let v = intf::mcast_config {
            node_ip: be(config.node_ip),
            tunnel_ifindex: config.tunnel_ifindex,
            flags: self.config_raw()?.flags,
            ..Default::default()
        };
        self.config.put(&0, &v)
    }

    fn config_raw(&self) -> Result<intf::mcast_config> {
        Ok(self.config.get(&0)?.unwrap_or_default())
    }

    /// Tell the datapath whether the Cilium groups mirror has entries, so
    /// that it only looks a group up when it can be there.
    pub(crate) fn cilium_groups_flag(&self, on: bool) -> Result<()> {
        let mut v = self.config_raw()?;
        let flags = if on {
            v.flags | intf::MCAST_CONFIG_F_CILIUM_GROUPS
        } else {
            v.flags & !intf::MCAST_CONFIG_F_CILIUM_GROUPS
        };
        if flags == v.flags {
            return Ok(());
        }
        v.flags = flags;
        self.config.put(&0, &v)
    }

    pub fn config(&self) -> Result<Config> {
        let v = self.config_raw()?;
        Ok(Config {
            node_ip: from_be(v.node_ip),
            tunnel_ifindex: v.tunnel_ifindex,
        })
    }

    // --- Cilium's multicast groups ----------------------------------------

    /// Add a group; the datapath starts looking groups up once the first
    /// one is in (entry first, then the flag).
    pub fn cilium_group_insert(&self, group: Ipv4Addr) -> Result<()> {
        self.cilium_groups
            .put(&group, &intf::mcast_group_val::default())?;
        self.cilium_groups_flag(true)
    }

    /// Remove a group; the datapath stops looking groups up once the last
    /// one is gone (entry first, then the flag).
    pub fn cilium_group_delete(&self, group: Ipv4Addr) -> Result<bool> {
        let existed = self.cilium_groups.delete(&group)?;
        if self.cilium_groups.is_empty() {
            self.cilium_groups_flag(false)?;
        }
        Ok(existed)
    }

    pub fn cilium_groups(&self) -> Result<Vec<Ipv4Addr>> {
        Ok(sorted(&self.cilium_groups)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    // --- counters ----------------------------------------------------------

    /// Replication counters of both families, summed over CPUs, sorted by
    /// policy, group (IPv4 groups before IPv6 ones), role.
    pub fn counters(&self) -> Result<Vec<Counter>> {
        let mut out = Vec::new();
        read_counters(&self.counters, &mut out, |k| {
            (k.policy_id, k.role, from_be(k.group).into())
        })?;
        read_counters(&self.counters_v6, &mut out, |k| {
            (k.policy_id, k.role, from_be6(&k.group).into())
        })?;
        out.sort_by_key(|c| (c.policy_id, c.group, c.role));
        Ok(out)
    }

    /// Remove the counters of policies not in `keep` (policy ids), of both
    /// families (a policy's id is the same in both); returns how many
    /// entries went. Their series leave the metrics with them.
    pub fn counters_retain_policies(
        &self,
        keep: &std::collections::BTreeSet<u32>,
    ) -> Result<usize> {
        Ok(retain_counters(&self.counters, keep, |k| k.policy_id)?
            + retain_counters(&self.counters_v6, keep, |k| k.policy_id)?)
    }

    /// Drops of every family, role and reason (zeros included), summed
    /// over CPUs: IPv4's, then IPv6's.
    pub fn drops(&self) -> Result<Vec<DropCount>> {
        let mut out = Vec::new();
        for family in Family::ALL {
            for role in Role::ALL {
                for reason in DropReason::all() {
                    out.push(self.drop_count_of(family, role, reason)?);
                }
            }
        }
        Ok(out)
    }

    /// Drops of IPv4 packets of one role and reason.
    pub fn drop_count(&self, role: Role, reason: DropReason) -> Result<DropCount> {
        self.drop_count_of(Family::Ipv4, role, reason)
    }

    /// Drops of IPv6 packets of one role and reason.
    pub fn drop_count_v6(&self, role: Role, reason: DropReason) -> Result<DropCount> {
        self.drop_count_of(Family::Ipv6, role, reason)
    }

    /// Drops of one family, role and reason.
    pub fn drop_count_of(
        &self,
        family: Family,
        role: Role,
        reason: DropReason,
    ) -> Result<DropCount> {
        let map = match family {
            Family::Ipv4 => &self.drops,
            Family::Ipv6 => &self.drops_v6,
        };
        let (packets, bytes) = sum(&map
            .get_percpu(&drop_slot(role, reason))?
            .unwrap_or_default());
        Ok(DropCount {
            family,
            role,
            reason,
            packets,
            bytes,
        })
    }

    /// Drop events the per-CPU rate limit held back from the monitor.
    pub fn events_suppressed(&self) -> Result<u64> {
        let per_cpu = self.events_limit.get_percpu(&0)?.unwrap_or_default();
        Ok(per_cpu
            .iter()
            .fold(0u64, |total, l| total.wrapping_add(l.suppressed)))
    }

    // --- names and status (for the CLI; the datapath never reads them) ---

    pub fn policy_name_set(&self, policy_id: u32, name: &str) -> Result<()> {
        self.policy_names.put(&policy_id, &name.to_owned())
    }

    pub fn policy_name_delete(&self, policy_id: u32) -> Result<bool> {
        self.policy_names.delete(&policy_id)
    }

    /// policy_id -> policy name.
    pub fn policy_names(&self) -> Result<BTreeMap<u32, String>> {
        self.policy_names.entries()
    }

    pub fn status_set(&self, status: &Status) -> Result<()> {
        self.status.put(&0, status)
    }

    pub fn status(&self) -> Result<Status> {
        Ok(self.status.get(&0)?.unwrap_or_default())
    }
}
