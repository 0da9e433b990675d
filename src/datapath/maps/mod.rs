//! A typed API over every pinned map. It encodes and decodes entries (byte
//! order, sentinels, key layout) and holds no policy logic: what goes in is
//! the controller's business.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::bytes::Plain;
use super::{DatapathError, Paths, Result};
use crate::bpf_intf as intf;
use crate::bpf_intf::{mcast_drop_reason as RawDrop, mcast_role as RawRole};

/// Names of the pinned maps, as in the BPF objects (`bpf/lib/*.h`).
pub const POLICY_MAP: &str = "mcast_egw_policy_v4";
pub const ENDPOINTS_MAP: &str = "mcast_egw_endpoints";
pub const NODES_MAP: &str = "mcast_egw_nodes";
pub const EGRESS_IFACES_MAP: &str = "mcast_egw_egress_ifaces";
pub const CONFIG_MAP: &str = "mcast_egw_config";
pub const CILIUM_GROUPS_MAP: &str = "mcast_egw_cilium_groups";
pub const COUNTERS_MAP: &str = "mcast_egw_counters";
pub const DROPS_MAP: &str = "mcast_egw_drops";
pub const EVENTS_MAP: &str = "mcast_egw_events";
pub const EVENTS_LIMIT_MAP: &str = "mcast_egw_events_limit";
pub const POLICY_NAMES_MAP: &str = "mcast_egw_policy_names";
pub const STATUS_MAP: &str = "mcast_egw_status";
/// Per-CPU slot through which `mcast_from_container` hands the tunnel key of
/// a copy to `mcast_to_overlay`; datapath-internal, nothing to configure.
pub const TUNNEL_PENDING_MAP: &str = "mcast_egw_tunnel_pending";

/// Every pinned map, for tools that walk them all.
pub const ALL_MAPS: [&str; 13] = [
    POLICY_MAP,
    ENDPOINTS_MAP,
    NODES_MAP,
    EGRESS_IFACES_MAP,
    CONFIG_MAP,
    CILIUM_GROUPS_MAP,
    COUNTERS_MAP,
    DROPS_MAP,
    EVENTS_MAP,
    EVENTS_LIMIT_MAP,
    POLICY_NAMES_MAP,
    STATUS_MAP,
    TUNNEL_PENDING_MAP,
];

/// Key of a policy entry: a pod and one destination prefix of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub source: Ipv4Addr,
    pub destination: Ipv4Network,
}

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

/// Value of a policy entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    /// 0.0.0.0 on every node but the gateway, and when it cannot be derived.
    pub egress_ip: Ipv4Addr,
    pub gateway: Gateway,
    /// The uplink on the gateway node, 0 elsewhere.
    pub egress_ifindex: u32,
    /// Labels this entry's counters.
    pub policy_id: u32,
    /// Where the pod's tunnelled copies must come from.
    pub origin: Origin,
}

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

/// Who counted a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Captured from a pod and sent towards its gateway.
    Origin,
    /// Emitted on the gateway's uplink.
    Gateway,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Origin, Role::Gateway];

    pub fn label(self) -> &'static str {
        match self {
            Role::Origin => "origin",
            Role::Gateway => "gateway",
        }
    }

    fn raw(self) -> u32 {
        match self {
            Role::Origin => RawRole::MCAST_ROLE_ORIGIN as u32,
            Role::Gateway => RawRole::MCAST_ROLE_GATEWAY as u32,
        }
    }

    pub fn from_raw(raw: u32) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.raw() == raw)
    }
}

/// Why the datapath dropped a packet: the codes of `enum mcast_drop_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropReason(u32);

impl DropReason {
    pub const NO_GATEWAY: DropReason = DropReason(RawDrop::MCAST_DROP_NO_GATEWAY as u32);
    pub const SPOOFED_SOURCE: DropReason = DropReason(RawDrop::MCAST_DROP_SPOOFED_SOURCE as u32);
    pub const UNKNOWN_SOURCE: DropReason = DropReason(RawDrop::MCAST_DROP_UNKNOWN_SOURCE as u32);
    pub const UNKNOWN_PEER: DropReason = DropReason(RawDrop::MCAST_DROP_UNKNOWN_PEER as u32);
    pub const NOT_GATEWAY: DropReason = DropReason(RawDrop::MCAST_DROP_NOT_GATEWAY as u32);
    pub const NO_EGRESS_IP: DropReason = DropReason(RawDrop::MCAST_DROP_NO_EGRESS_IP as u32);
    pub const TTL_EXCEEDED: DropReason = DropReason(RawDrop::MCAST_DROP_TTL_EXCEEDED as u32);
    pub const NO_TUNNEL: DropReason = DropReason(RawDrop::MCAST_DROP_NO_TUNNEL as u32);
    pub const NO_EGRESS_IFACE: DropReason = DropReason(RawDrop::MCAST_DROP_NO_EGRESS_IFACE as u32);
    pub const UNSUPPORTED_PROTOCOL: DropReason =
        DropReason(RawDrop::MCAST_DROP_UNSUPPORTED_PROTO as u32);
    pub const MALFORMED: DropReason = DropReason(RawDrop::MCAST_DROP_MALFORMED as u32);
    pub const TUNNEL_KEY: DropReason = DropReason(RawDrop::MCAST_DROP_TUNNEL_KEY as u32);
    pub const REWRITE: DropReason = DropReason(RawDrop::MCAST_DROP_REWRITE as u32);
    pub const CLONE: DropReason = DropReason(RawDrop::MCAST_DROP_CLONE as u32);
    pub const ORIGIN_MISMATCH: DropReason = DropReason(RawDrop::MCAST_DROP_ORIGIN_MISMATCH as u32);
    pub const MTU_EXCEEDED: DropReason = DropReason(RawDrop::MCAST_DROP_MTU_EXCEEDED as u32);
    pub const EXCLUDED: DropReason = DropReason(RawDrop::MCAST_DROP_EXCLUDED as u32);
    pub const NO_POLICY: DropReason = DropReason(RawDrop::MCAST_DROP_NO_POLICY as u32);
    pub const REDIRECT: DropReason = DropReason(RawDrop::MCAST_DROP_REDIRECT as u32);

    /// One past the largest code.
    pub const MAX: u32 = RawDrop::MCAST_DROP_MAX as u32;

    /// Every code the datapath has, in code order.
    pub fn all() -> impl Iterator<Item = DropReason> {
        (1..Self::MAX).map(DropReason)
    }

    pub fn code(self) -> u32 {
        self.0
    }

    pub fn from_code(code: u32) -> Option<DropReason> {
        (1..Self::MAX).contains(&code).then_some(DropReason(code))
    }

    /// The stable label, for metrics and the CLI. Exhaustive over the
    /// generated enum, so a new C code does not build without a label.
    pub fn label(self) -> &'static str {
        let raw = [
            RawDrop::MCAST_DROP_NO_GATEWAY,
            RawDrop::MCAST_DROP_SPOOFED_SOURCE,
            RawDrop::MCAST_DROP_UNKNOWN_SOURCE,
            RawDrop::MCAST_DROP_UNKNOWN_PEER,
            RawDrop::MCAST_DROP_NOT_GATEWAY,
            RawDrop::MCAST_DROP_NO_EGRESS_IP,
            RawDrop::MCAST_DROP_TTL_EXCEEDED,
            RawDrop::MCAST_DROP_NO_TUNNEL,
            RawDrop::MCAST_DROP_NO_EGRESS_IFACE,
            RawDrop::MCAST_DROP_UNSUPPORTED_PROTO,
            RawDrop::MCAST_DROP_MALFORMED,
            RawDrop::MCAST_DROP_TUNNEL_KEY,
            RawDrop::MCAST_DROP_REWRITE,
            RawDrop::MCAST_DROP_CLONE,
            RawDrop::MCAST_DROP_ORIGIN_MISMATCH,
            RawDrop::MCAST_DROP_MTU_EXCEEDED,
            RawDrop::MCAST_DROP_EXCLUDED,
            RawDrop::MCAST_DROP_NO_POLICY,
            RawDrop::MCAST_DROP_REDIRECT,
        ]
        .into_iter()
        .find(|r| *r as u32 == self.0);
        match raw {
            Some(RawDrop::MCAST_DROP_NO_GATEWAY) => "no_gateway",
            Some(RawDrop::MCAST_DROP_SPOOFED_SOURCE) => "spoofed_source",
            Some(RawDrop::MCAST_DROP_UNKNOWN_SOURCE) => "unknown_source",
            Some(RawDrop::MCAST_DROP_UNKNOWN_PEER) => "unknown_peer",
            Some(RawDrop::MCAST_DROP_NOT_GATEWAY) => "not_gateway",
            Some(RawDrop::MCAST_DROP_NO_EGRESS_IP) => "no_egress_ip",
            Some(RawDrop::MCAST_DROP_TTL_EXCEEDED) => "ttl_exceeded",
            Some(RawDrop::MCAST_DROP_NO_TUNNEL) => "no_tunnel",
            Some(RawDrop::MCAST_DROP_NO_EGRESS_IFACE) => "no_egress_iface",
            Some(RawDrop::MCAST_DROP_UNSUPPORTED_PROTO) => "unsupported_protocol",
            Some(RawDrop::MCAST_DROP_MALFORMED) => "malformed",
            Some(RawDrop::MCAST_DROP_TUNNEL_KEY) => "tunnel_key_failed",
            Some(RawDrop::MCAST_DROP_REWRITE) => "rewrite_failed",
            Some(RawDrop::MCAST_DROP_CLONE) => "clone_failed",
            Some(RawDrop::MCAST_DROP_ORIGIN_MISMATCH) => "origin_mismatch",
            Some(RawDrop::MCAST_DROP_MTU_EXCEEDED) => "mtu_exceeded",
            Some(RawDrop::MCAST_DROP_EXCLUDED) => "excluded",
            Some(RawDrop::MCAST_DROP_NO_POLICY) => "no_policy",
            Some(RawDrop::MCAST_DROP_REDIRECT) => "redirect_failed",
            Some(RawDrop::MCAST_DROP_MAX) | None => "unknown",
        }
    }

    pub fn from_label(label: &str) -> Option<DropReason> {
        DropReason::all().find(|r| r.label() == label)
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

/// Copy `s` into a NUL-terminated C string buffer, cut at a character
/// boundary if it does not fit.
fn to_c_chars<const N: usize>(s: &str) -> [libc::c_char; N] {
    let mut out = [0 as libc::c_char; N];
    let mut end = s.len().min(N - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    for (o, b) in out.iter_mut().zip(&s.as_bytes()[..end]) {
        *o = *b as libc::c_char;
    }
    out
}

fn from_c_chars(chars: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Packets and bytes of one (policy, group, role), summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub policy_id: u32,
    pub group: Ipv4Addr,
    pub role: Role,
    pub packets: u64,
    pub bytes: u64,
}

/// Drops of one (role, reason), summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCount {
    pub role: Role,
    pub reason: DropReason,
    pub packets: u64,
    pub bytes: u64,
}

/// One drop as the datapath reported it on `mcast_egw_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_ns()`: monotonic, since boot.
    pub timestamp_ns: u64,
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub ifindex: u32,
    pub reason: DropReason,
    pub role: Role,
    pub len: u32,
    pub proto: u8,
    pub ttl: u8,
}

impl DropEvent {
    /// Decode a ring buffer record; None for one of another layout.
    pub fn decode(bytes: &[u8]) -> Option<DropEvent> {
        if bytes.len() != std::mem::size_of::<intf::mcast_drop_event>() {
            return None;
        }
        let e = intf::mcast_drop_event::from_bytes(bytes)?;
        Some(DropEvent {
            timestamp_ns: e.timestamp_ns,
            source: from_be(e.saddr),
            group: from_be(e.daddr),
            ifindex: e.ifindex,
            reason: DropReason::from_code(e.reason)?,
            role: Role::from_raw(e.role)?,
            len: e.len,
            proto: e.proto,
            ttl: e.ttl,
        })
    }
}

/// Owned handles to every pinned map; cheap to move into another task.
#[derive(Debug)]
pub struct Maps {
    policy: MapHandle,
    endpoints: MapHandle,
    nodes: MapHandle,
    egress_ifaces: MapHandle,
    config: MapHandle,
    cilium_groups: MapHandle,
    counters: MapHandle,
    drops: MapHandle,
    events_limit: MapHandle,
    policy_names: MapHandle,
    status: MapHandle,
}

fn be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

fn from_be(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

fn open(paths: &Paths, name: &'static str) -> Result<MapHandle> {
    let path = paths.globals().join(name);
    MapHandle::from_pinned_path(&path).map_err(|source| DatapathError::PinnedMap { path, source })
}

fn update<K: Plain, V: Plain>(map: &MapHandle, name: &'static str, k: &K, v: &V) -> Result<()> {
    map.update(k.as_bytes(), v.as_bytes(), MapFlags::ANY)
        .map_err(|source| DatapathError::Map {
            map: name,
            op: "update",
            source,
        })
}

fn delete<K: Plain>(map: &MapHandle, name: &'static str, k: &K) -> Result<bool> {
    match map.delete(k.as_bytes()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(DatapathError::Map {
            map: name,
            op: "delete",
            source,
        }),
    }
}

fn decode<T: Plain>(name: &'static str, bytes: &[u8]) -> Result<T> {
    T::from_bytes(bytes).ok_or(DatapathError::MapValueSize {
        map: name,
        got: bytes.len(),
        want: std::mem::size_of::<T>(),
    })
}

fn lookup<K: Plain, V: Plain>(map: &MapHandle, name: &'static str, k: &K) -> Result<Option<V>> {
    let bytes = map
        .lookup(k.as_bytes(), MapFlags::ANY)
        .map_err(|source| DatapathError::Map {
            map: name,
            op: "lookup",
            source,
        })?;
    bytes.map(|b| decode(name, &b)).transpose()
}

fn entries<K: Plain, V: Plain>(map: &MapHandle, name: &'static str) -> Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    for key in map.keys() {
        let k: K = decode(name, &key)?;
        // An entry deleted between listing and lookup is simply gone.
        if let Some(v) = lookup::<K, V>(map, name, &k)? {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// Sum a per-CPU counter value over all CPUs.
fn percpu_sum(map: &MapHandle, name: &'static str, key: &[u8]) -> Result<Option<(u64, u64)>> {
    let per_cpu = map
        .lookup_percpu(key, MapFlags::ANY)
        .map_err(|source| DatapathError::Map {
            map: name,
            op: "lookup",
            source,
        })?;
    let Some(per_cpu) = per_cpu else {
        return Ok(None);
    };
    let mut packets = 0u64;
    let mut bytes = 0u64;
    for cpu in per_cpu {
        let v: intf::mcast_counter_val = decode(name, &cpu)?;
        packets = packets.wrapping_add(v.packets);
        bytes = bytes.wrapping_add(v.bytes);
    }
    Ok(Some((packets, bytes)))
}

impl PolicyKey {
    fn raw(&self) -> intf::mcast_policy_key {
        intf::mcast_policy_key {
            prefixlen: intf::MCAST_POLICY_SADDR_PREFIXLEN + u32::from(self.destination.prefix()),
            saddr: be(self.source),
            daddr: be(self.destination.network()),
        }
    }

    fn from_raw(raw: &intf::mcast_policy_key) -> Result<PolicyKey> {
        let prefix = raw
            .prefixlen
            .checked_sub(intf::MCAST_POLICY_SADDR_PREFIXLEN)
            .and_then(|p| u8::try_from(p).ok())
            .and_then(|p| Ipv4Network::new(from_be(raw.daddr), p).ok())
            .ok_or_else(|| DatapathError::Invalid {
                what: "policy key",
                detail: format!("prefixlen {}", raw.prefixlen),
            })?;
        Ok(PolicyKey {
            source: from_be(raw.saddr),
            destination: prefix,
        })
    }
}

impl PolicyValue {
    fn raw(&self) -> intf::mcast_policy_val {
        let gateway_ip = match self.gateway {
            Gateway::Node(ip) => be(ip),
            Gateway::NotFound => intf::MCAST_GATEWAY_NOT_FOUND.to_be(),
            Gateway::Excluded => intf::MCAST_GATEWAY_EXCLUDED.to_be(),
        };
        intf::mcast_policy_val {
            egress_ip: be(self.egress_ip),
            gateway_ip,
            egress_ifindex: self.egress_ifindex,
            policy_id: self.policy_id,
            origin_node_ip: be(self.origin.node),
            origin_identity: self.origin.identity,
        }
    }

    fn from_raw(raw: &intf::mcast_policy_val) -> PolicyValue {
        let gateway = match u32::from_be(raw.gateway_ip) {
            intf::MCAST_GATEWAY_NOT_FOUND => Gateway::NotFound,
            intf::MCAST_GATEWAY_EXCLUDED => Gateway::Excluded,
            _ => Gateway::Node(from_be(raw.gateway_ip)),
        };
        PolicyValue {
            egress_ip: from_be(raw.egress_ip),
            gateway,
            egress_ifindex: raw.egress_ifindex,
            policy_id: raw.policy_id,
            origin: Origin {
                node: from_be(raw.origin_node_ip),
                identity: raw.origin_identity,
            },
        }
    }
}

impl Maps {
    /// Open every map pinned under `<root>/tc/globals`.
    pub fn open_pinned(paths: &Paths) -> Result<Maps> {
        Ok(Maps {
            policy: open(paths, POLICY_MAP)?,
            endpoints: open(paths, ENDPOINTS_MAP)?,
            nodes: open(paths, NODES_MAP)?,
            egress_ifaces: open(paths, EGRESS_IFACES_MAP)?,
            config: open(paths, CONFIG_MAP)?,
            cilium_groups: open(paths, CILIUM_GROUPS_MAP)?,
            counters: open(paths, COUNTERS_MAP)?,
            drops: open(paths, DROPS_MAP)?,
            events_limit: open(paths, EVENTS_LIMIT_MAP)?,
            policy_names: open(paths, POLICY_NAMES_MAP)?,
            status: open(paths, STATUS_MAP)?,
        })
    }

    // --- policy entries -------------------------------------------------

    /// Entries `mcast_egw_policy_v4` can hold (chosen at load).
    pub fn policy_capacity(&self) -> u32 {
        self.policy.max_entries()
    }

    /// Entries `mcast_egw_policy_names` can hold (chosen at load).
    pub fn policy_names_capacity(&self) -> u32 {
        self.policy_names.max_entries()
    }

    /// Insert or replace an entry.
    pub fn policy_insert(&self, key: &PolicyKey, value: &PolicyValue) -> Result<()> {
        update(&self.policy, POLICY_MAP, &key.raw(), &value.raw())
    }

    /// Remove an entry; returns whether it existed.
    pub fn policy_delete(&self, key: &PolicyKey) -> Result<bool> {
        delete(&self.policy, POLICY_MAP, &key.raw())
    }

    pub fn policy_get(&self, key: &PolicyKey) -> Result<Option<PolicyValue>> {
        let raw: Option<intf::mcast_policy_val> = lookup(&self.policy, POLICY_MAP, &key.raw())?;
        Ok(raw.as_ref().map(PolicyValue::from_raw))
    }

    /// Every policy entry, sorted by key.
    pub fn policies(&self) -> Result<Vec<(PolicyKey, PolicyValue)>> {
        let mut out =
            entries::<intf::mcast_policy_key, intf::mcast_policy_val>(&self.policy, POLICY_MAP)?
                .iter()
                .map(|(k, v)| Ok((PolicyKey::from_raw(k)?, PolicyValue::from_raw(v))))
                .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    // --- endpoints -------------------------------------------------------

    pub fn endpoint_insert(&self, addr: Ipv4Addr, ep: &Endpoint) -> Result<()> {
        let v = intf::mcast_endpoint_val {
            ifindex: ep.ifindex,
            sec_identity: ep.identity,
        };
        update(&self.endpoints, ENDPOINTS_MAP, &be(addr), &v)
    }

    pub fn endpoint_delete(&self, addr: Ipv4Addr) -> Result<bool> {
        delete(&self.endpoints, ENDPOINTS_MAP, &be(addr))
    }

    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, Endpoint)>> {
        let mut out: Vec<_> =
            entries::<u32, intf::mcast_endpoint_val>(&self.endpoints, ENDPOINTS_MAP)?
                .into_iter()
                .map(|(k, v)| {
                    (
                        from_be(k),
                        Endpoint {
                            ifindex: v.ifindex,
                            identity: v.sec_identity,
                        },
                    )
                })
                .collect();
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    // --- nodes -----------------------------------------------------------

    pub fn node_insert(&self, addr: Ipv4Addr) -> Result<()> {
        update(
            &self.nodes,
            NODES_MAP,
            &be(addr),
            &intf::mcast_node_val::default(),
        )
    }

    pub fn node_delete(&self, addr: Ipv4Addr) -> Result<bool> {
        delete(&self.nodes, NODES_MAP, &be(addr))
    }

    pub fn nodes(&self) -> Result<Vec<Ipv4Addr>> {
        let mut out: Vec<_> = entries::<u32, intf::mcast_node_val>(&self.nodes, NODES_MAP)?
            .into_iter()
            .map(|(k, _)| from_be(k))
            .collect();
        out.sort();
        Ok(out)
    }

    // --- egress interfaces -----------------------------------------------

    pub fn egress_iface_insert(&self, ifindex: u32, iface: &EgressIface) -> Result<()> {
        let v = intf::mcast_iface_val {
            mac: iface.mac,
            ..Default::default()
        };
        update(&self.egress_ifaces, EGRESS_IFACES_MAP, &ifindex, &v)
    }

    pub fn egress_iface_delete(&self, ifindex: u32) -> Result<bool> {
        delete(&self.egress_ifaces, EGRESS_IFACES_MAP, &ifindex)
    }

    pub fn egress_ifaces(&self) -> Result<Vec<(u32, EgressIface)>> {
        let mut out: Vec<_> =
            entries::<u32, intf::mcast_iface_val>(&self.egress_ifaces, EGRESS_IFACES_MAP)?
                .into_iter()
                .map(|(k, v)| (k, EgressIface { mac: v.mac }))
                .collect();
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    // --- config ----------------------------------------------------------

    /// Set this node's IP and tunnel device; the flags the map API keeps
    /// itself (see [`Maps::cilium_group_insert`]) are left as they are.
    pub fn config_set(&self, config: &Config) -> Result<()> {
        let flags = self.config_raw()?.flags;
        let v = intf::mcast_config {
            node_ip: be(config.node_ip),
            tunnel_ifindex: config.tunnel_ifindex,
            flags,
            ..Default::default()
        };
        update(&self.config, CONFIG_MAP, &0u32, &v)
    }

    fn config_raw(&self) -> Result<intf::mcast_config> {
        let v: Option<intf::mcast_config> = lookup(&self.config, CONFIG_MAP, &0u32)?;
        Ok(v.unwrap_or_default())
    }

    /// Tell the datapath whether the Cilium groups mirror has entries, so
    /// that it only looks a group up when it can be there.
    fn cilium_groups_flag(&self, on: bool) -> Result<()> {
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
        update(&self.config, CONFIG_MAP, &0u32, &v)
    }

    pub fn config(&self) -> Result<Config> {
        let v: Option<intf::mcast_config> = lookup(&self.config, CONFIG_MAP, &0u32)?;
        let v = v.unwrap_or_default();
        Ok(Config {
            node_ip: from_be(v.node_ip),
            tunnel_ifindex: v.tunnel_ifindex,
        })
    }

    // --- Cilium's multicast groups ----------------------------------------

    /// Add a group; the datapath starts looking groups up once the first
    /// one is in (entry first, then the flag).
    pub fn cilium_group_insert(&self, group: Ipv4Addr) -> Result<()> {
        update(
            &self.cilium_groups,
            CILIUM_GROUPS_MAP,
            &be(group),
            &intf::mcast_group_val::default(),
        )?;
        self.cilium_groups_flag(true)
    }

    /// Remove a group; the datapath stops looking groups up once the last
    /// one is gone (entry first, then the flag).
    pub fn cilium_group_delete(&self, group: Ipv4Addr) -> Result<bool> {
        let existed = delete(&self.cilium_groups, CILIUM_GROUPS_MAP, &be(group))?;
        if self.cilium_groups.keys().next().is_none() {
            self.cilium_groups_flag(false)?;
        }
        Ok(existed)
    }

    pub fn cilium_groups(&self) -> Result<Vec<Ipv4Addr>> {
        let mut out: Vec<_> =
            entries::<u32, intf::mcast_group_val>(&self.cilium_groups, CILIUM_GROUPS_MAP)?
                .into_iter()
                .map(|(k, _)| from_be(k))
                .collect();
        out.sort();
        Ok(out)
    }

    // --- counters ----------------------------------------------------------

    /// Replication counters, summed over CPUs, sorted by policy, group, role.
    pub fn counters(&self) -> Result<Vec<Counter>> {
        let mut out = Vec::new();
        for key in self.counters.keys() {
            let k: intf::mcast_counter_key = decode(COUNTERS_MAP, &key)?;
            let Some(role) = Role::from_raw(k.role) else {
                continue;
            };
            if let Some((packets, bytes)) = percpu_sum(&self.counters, COUNTERS_MAP, &key)? {
                out.push(Counter {
                    policy_id: k.policy_id,
                    group: from_be(k.group),
                    role,
                    packets,
                    bytes,
                });
            }
        }
        out.sort_by_key(|c| (c.policy_id, c.group, c.role));
        Ok(out)
    }

    /// Remove the counters of policies not in `keep` (policy ids); returns
    /// how many entries went. Their series leave the metrics with them.
    pub fn counters_retain_policies(
        &self,
        keep: &std::collections::BTreeSet<u32>,
    ) -> Result<usize> {
        let mut stale = Vec::new();
        for key in self.counters.keys() {
            let k: intf::mcast_counter_key = decode(COUNTERS_MAP, &key)?;
            if !keep.contains(&k.policy_id) {
                stale.push(k);
            }
        }
        for k in &stale {
            delete(&self.counters, COUNTERS_MAP, k)?;
        }
        Ok(stale.len())
    }

    /// Drops of every role and reason (zeros included), summed over CPUs.
    pub fn drops(&self) -> Result<Vec<DropCount>> {
        let mut out = Vec::new();
        for role in Role::ALL {
            for reason in DropReason::all() {
                out.push(self.drop_count(role, reason)?);
            }
        }
        Ok(out)
    }

    /// Drop events the per-CPU rate limit held back from the monitor.
    pub fn events_suppressed(&self) -> Result<u64> {
        let per_cpu = self
            .events_limit
            .lookup_percpu(0u32.as_bytes(), MapFlags::ANY)
            .map_err(|source| DatapathError::Map {
                map: EVENTS_LIMIT_MAP,
                op: "lookup",
                source,
            })?
            .unwrap_or_default();
        let mut total = 0u64;
        for cpu in per_cpu {
            let l: intf::mcast_events_limit = decode(EVENTS_LIMIT_MAP, &cpu)?;
            total = total.wrapping_add(l.suppressed);
        }
        Ok(total)
    }

    // --- names and status (for the CLI; the datapath never reads them) ---

    pub fn policy_name_set(&self, policy_id: u32, name: &str) -> Result<()> {
        let v = intf::mcast_policy_name {
            name: to_c_chars(name),
        };
        update(&self.policy_names, POLICY_NAMES_MAP, &policy_id, &v)
    }

    pub fn policy_name_delete(&self, policy_id: u32) -> Result<bool> {
        delete(&self.policy_names, POLICY_NAMES_MAP, &policy_id)
    }

    /// policy_id -> policy name.
    pub fn policy_names(&self) -> Result<std::collections::BTreeMap<u32, String>> {
        Ok(
            entries::<u32, intf::mcast_policy_name>(&self.policy_names, POLICY_NAMES_MAP)?
                .into_iter()
                .map(|(k, v)| (k, from_c_chars(&v.name)))
                .collect(),
        )
    }

    pub fn status_set(&self, status: &Status) -> Result<()> {
        let v = intf::mcast_status {
            node_name: to_c_chars(&status.node_name),
            version: to_c_chars(&status.version),
            last_sync_unix_ns: status.last_sync_unix_ns,
            syncs: status.syncs,
        };
        update(&self.status, STATUS_MAP, &0u32, &v)
    }

    pub fn status(&self) -> Result<Status> {
        let v: Option<intf::mcast_status> = lookup(&self.status, STATUS_MAP, &0u32)?;
        let v = v.unwrap_or_default();
        Ok(Status {
            node_name: from_c_chars(&v.node_name),
            version: from_c_chars(&v.version),
            last_sync_unix_ns: v.last_sync_unix_ns,
            syncs: v.syncs,
        })
    }

    /// How full the capacity-bound maps are: (name, entries, capacity).
    pub fn fill_levels(&self) -> Result<Vec<(&'static str, usize, u32)>> {
        let cap = |m: &MapHandle| m.max_entries();
        Ok(vec![
            (POLICY_MAP, self.policy.keys().count(), cap(&self.policy)),
            (
                ENDPOINTS_MAP,
                self.endpoints.keys().count(),
                cap(&self.endpoints),
            ),
            (NODES_MAP, self.nodes.keys().count(), cap(&self.nodes)),
            (
                EGRESS_IFACES_MAP,
                self.egress_ifaces.keys().count(),
                cap(&self.egress_ifaces),
            ),
            (
                CILIUM_GROUPS_MAP,
                self.cilium_groups.keys().count(),
                cap(&self.cilium_groups),
            ),
            (
                COUNTERS_MAP,
                self.counters.keys().count(),
                cap(&self.counters),
            ),
        ])
    }

    /// Drops of one role and reason.
    pub fn drop_count(&self, role: Role, reason: DropReason) -> Result<DropCount> {
        let idx = role.raw() * intf::MCAST_DROP_SLOTS + reason.code();
        let (packets, bytes) =
            percpu_sum(&self.drops, DROPS_MAP, idx.as_bytes())?.unwrap_or_default();
        Ok(DropCount {
            role,
            reason,
            packets,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: &str, dst: &str) -> PolicyKey {
        PolicyKey {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    #[test]
    fn policy_key_is_ciliums_byte_layout() {
        // CILIUM.md: a 232.0.0.0/8 policy for a pod -> {40, pod, 232.0.0.0}.
        let raw = key("198.51.100.5", "232.0.0.0/8").raw();
        let bytes = raw.as_bytes();
        assert_eq!(bytes.len(), 12);
        assert_eq!(&bytes[0..4], &40u32.to_ne_bytes(), "prefixlen, host order");
        assert_eq!(&bytes[4..8], &[198, 51, 100, 5], "saddr, network order");
        assert_eq!(&bytes[8..12], &[232, 0, 0, 0], "daddr, network order");
    }

    #[test]
    fn policy_key_masks_host_bits_of_the_destination() {
        let raw = key("198.51.100.5", "232.1.2.3/16").raw();
        assert_eq!(&raw.as_bytes()[8..12], &[232, 1, 0, 0]);
        assert_eq!(raw.prefixlen, 48);
    }

    #[test]
    fn policy_key_round_trips() {
        for (s, d) in [
            ("198.51.100.5", "232.0.0.0/8"),
            ("198.51.100.255", "224.0.0.0/4"),
            ("192.0.2.1", "232.1.1.1/32"),
        ] {
            let k = key(s, d);
            assert_eq!(PolicyKey::from_raw(&k.raw()).unwrap(), k);
        }
    }

    #[test]
    fn policy_key_rejects_impossible_prefix_lengths() {
        for prefixlen in [0, 31, 65, 200] {
            let raw = intf::mcast_policy_key {
                prefixlen,
                ..Default::default()
            };
            assert!(PolicyKey::from_raw(&raw).is_err(), "{prefixlen}");
        }
    }

    #[test]
    fn policy_value_sentinels_are_ciliums() {
        let v = |gateway| PolicyValue {
            egress_ip: Ipv4Addr::UNSPECIFIED,
            gateway,
            egress_ifindex: 0,
            policy_id: 1,
            origin: Origin::default(),
        };
        let not_found = v(Gateway::NotFound).raw();
        assert_eq!(&not_found.as_bytes()[4..8], &[0, 0, 0, 0]);
        let excluded = v(Gateway::Excluded).raw();
        assert_eq!(&excluded.as_bytes()[4..8], &[0, 0, 0, 1]);
        for g in [
            Gateway::NotFound,
            Gateway::Excluded,
            Gateway::Node(Ipv4Addr::new(192, 0, 2, 7)),
        ] {
            assert_eq!(PolicyValue::from_raw(&v(g).raw()), v(g));
        }
    }

    #[test]
    fn policy_value_byte_layout() {
        let raw = PolicyValue {
            egress_ip: Ipv4Addr::new(203, 0, 113, 9),
            gateway: Gateway::Node(Ipv4Addr::new(192, 0, 2, 3)),
            egress_ifindex: 0x01020304,
            policy_id: 77,
            origin: Origin {
                node: Ipv4Addr::new(192, 0, 2, 5),
                identity: 0x00abcdef,
            },
        }
        .raw();
        let b = raw.as_bytes();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[0..4], &[203, 0, 113, 9]);
        assert_eq!(&b[4..8], &[192, 0, 2, 3]);
        assert_eq!(&b[8..12], &0x01020304u32.to_ne_bytes());
        assert_eq!(&b[12..16], &77u32.to_ne_bytes());
        assert_eq!(&b[16..20], &[192, 0, 2, 5], "origin node, network order");
        assert_eq!(
            &b[20..24],
            &0x00abcdefu32.to_ne_bytes(),
            "identity, host order"
        );
    }

    #[test]
    fn every_drop_code_has_a_distinct_stable_label() {
        let labels: Vec<&str> = DropReason::all().map(DropReason::label).collect();
        assert_eq!(labels.len() as u32, DropReason::MAX - 1);
        assert!(!labels.contains(&"unknown"));
        let mut uniq = labels.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), labels.len());
        for r in DropReason::all() {
            assert_eq!(DropReason::from_label(r.label()), Some(r));
            assert_eq!(DropReason::from_code(r.code()), Some(r));
        }
        assert_eq!(DropReason::from_code(0), None);
        assert_eq!(DropReason::from_code(DropReason::MAX), None);
        // Codes are part of the contract: these never change.
        assert_eq!(DropReason::NO_GATEWAY.code(), 1);
        assert_eq!(DropReason::SPOOFED_SOURCE.label(), "spoofed_source");
        assert_eq!(DropReason::TTL_EXCEEDED.code(), 7);
        assert_eq!(DropReason::TTL_EXCEEDED.label(), "ttl_exceeded");
    }

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::from_raw(r.raw()), Some(r));
        }
        assert_eq!(Role::from_raw(2), None);
        assert_eq!(Role::Origin.label(), "origin");
        assert_eq!(Role::Gateway.label(), "gateway");
    }
}
