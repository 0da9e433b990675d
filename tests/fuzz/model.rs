//! What mcast_from_container and mcast_from_overlay must do with a frame,
//! written down from the datapath's specification: the verdict, the drop
//! and its reason, the bytes, the counters, and what leaves which device.
//! It shares no code with bpf/: its own LPM lookup, validation and rewrite,
//! on the test's own checksum code (tests/common/packet.rs). IPv6 frames
//! are model6.rs's; the types here serve both families.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

use crate::common::packet::{checksum, fold, group_mac, ones_complement_sum};

pub const NEXT: u32 = u32::MAX;
pub const DROP: u32 = 2;
pub const REDIRECT: u32 = 7;

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        NEXT => "NEXT",
        DROP => "DROP",
        REDIRECT => "REDIRECT",
        _ => "other",
    }
}

pub const ROLE_ORIGIN: u32 = 0;
pub const ROLE_GATEWAY: u32 = 1;

pub fn role_name(r: u32) -> &'static str {
    match r {
        ROLE_ORIGIN => "origin",
        ROLE_GATEWAY => "gateway",
        _ => "?",
    }
}

/// Drop reasons, as the specification numbers them.
pub mod reason {
    pub const NO_GATEWAY: u32 = 1;
    pub const SPOOFED_SOURCE: u32 = 2;
    pub const UNKNOWN_SOURCE: u32 = 3;
    pub const UNKNOWN_PEER: u32 = 4;
    pub const NOT_GATEWAY: u32 = 5;
    pub const NO_EGRESS_IP: u32 = 6;
    pub const TTL_EXCEEDED: u32 = 7;
    pub const NO_TUNNEL: u32 = 8;
    pub const NO_EGRESS_IFACE: u32 = 9;
    pub const UNSUPPORTED_PROTO: u32 = 10;
    pub const MALFORMED: u32 = 11;
    pub const CLONE: u32 = 14;
    pub const ORIGIN_MISMATCH: u32 = 15;
    pub const MTU_EXCEEDED: u32 = 16;
    pub const EXCLUDED: u32 = 17;
    pub const NO_POLICY: u32 = 18;
    pub const REDIRECT_FAILED: u32 = 19;
    pub const DST_MAC_MISMATCH: u32 = 20;
    /// Codes 1..=MAX are read back from the drops map.
    pub const MAX: u32 = 20;
}

pub fn reason_name(code: u32) -> &'static str {
    const NAMES: [&str; 21] = [
        "?",
        "no_gateway",
        "spoofed_source",
        "unknown_source",
        "unknown_peer",
        "not_gateway",
        "no_egress_ip",
        "ttl_exceeded",
        "no_tunnel",
        "no_egress_iface",
        "unsupported_proto",
        "malformed",
        "tunnel_key",
        "rewrite",
        "clone",
        "origin_mismatch",
        "mtu_exceeded",
        "excluded",
        "no_policy",
        "redirect_failed",
        "dst_mac_mismatch",
    ];
    NAMES.get(code as usize).copied().unwrap_or("?")
}

pub const GATEWAY_NOT_FOUND: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
pub const GATEWAY_EXCLUDED: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 1);
pub const IDENTITY_WORLD: u32 = 2;

/// One policy entry: key {saddr/32, dst} and its value.
#[derive(Debug, Clone)]
pub struct Entry {
    pub saddr: Ipv4Addr,
    pub dst: Ipv4Network,
    pub egress_ip: Ipv4Addr,
    /// A node IP, or GATEWAY_NOT_FOUND / GATEWAY_EXCLUDED.
    pub gateway_ip: Ipv4Addr,
    pub egress_ifindex: u32,
    pub policy_id: u32,
    pub origin_node: Ipv4Addr,
    pub origin_identity: u32,
}

/// One IPv6 policy entry: key {saddr/128, dst} and its value. Gateway and
/// origin are underlay (IPv4) nodes, as in [`Entry`].
#[derive(Debug, Clone)]
pub struct Entry6 {
    pub saddr: Ipv6Addr,
    pub dst: Ipv6Network,
    pub egress_ip: Ipv6Addr,
    /// A node IP, or GATEWAY_NOT_FOUND / GATEWAY_EXCLUDED.
    pub gateway_ip: Ipv4Addr,
    pub egress_ifindex: u32,
    pub policy_id: u32,
    pub origin_node: Ipv4Addr,
    pub origin_identity: u32,
}

/// Everything the programs read: the maps, and the devices that exist
/// (with their MTU) for bpf_check_mtu and the redirects.
#[derive(Debug, Clone)]
pub struct State {
    pub label: String,
    pub node_ip: Ipv4Addr,
    pub tunnel_ifindex: u32,
    pub flags: u32,
    pub cilium_groups: BTreeSet<Ipv4Addr>,
    /// pod address -> (ifindex, identity)
    pub endpoints: BTreeMap<Ipv4Addr, (u32, u32)>,
    pub nodes: BTreeSet<Ipv4Addr>,
    pub egress_ifaces: BTreeMap<u32, [u8; 6]>,
    /// keyed like the trie: (saddr, network, prefix length)
    pub policies: BTreeMap<(Ipv4Addr, Ipv4Addr, u8), Entry>,
    /// IPv6 pod address -> (ifindex, identity)
    pub endpoints6: BTreeMap<Ipv6Addr, (u32, u32)>,
    /// keyed like the trie: (saddr, network, prefix length)
    pub policies6: BTreeMap<(Ipv6Addr, Ipv6Addr, u8), Entry6>,
    /// ifindex -> MTU of the devices present on the node.
    pub devices: BTreeMap<u32, u32>,
}

impl Default for State {
    fn default() -> Self {
        State {
            label: String::new(),
            node_ip: Ipv4Addr::UNSPECIFIED,
            tunnel_ifindex: 0,
            flags: 0,
            cilium_groups: BTreeSet::new(),
            endpoints: BTreeMap::new(),
            nodes: BTreeSet::new(),
            egress_ifaces: BTreeMap::new(),
            policies: BTreeMap::new(),
            endpoints6: BTreeMap::new(),
            policies6: BTreeMap::new(),
            devices: BTreeMap::new(),
        }
    }
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            saddr: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Network::new(Ipv4Addr::new(224, 0, 0, 0), 4).expect("prefix"),
            egress_ip: Ipv4Addr::UNSPECIFIED,
            gateway_ip: GATEWAY_NOT_FOUND,
            egress_ifindex: 0,
            policy_id: 0,
            origin_node: Ipv4Addr::UNSPECIFIED,
            origin_identity: 0,
        }
    }
}

impl State {
    pub fn insert_policy(&mut self, e: Entry) {
        let dst = Ipv4Network::new(e.dst.network(), e.dst.prefix()).expect("prefix");
        let e = Entry { dst, ..e };
        self.policies
            .insert((e.saddr, e.dst.network(), e.dst.prefix()), e);
    }

    /// The longest entry for (saddr, daddr): saddr exact, daddr by prefix.
    pub fn lookup(&self, saddr: Ipv4Addr, daddr: Ipv4Addr) -> Option<&Entry> {
        self.policies
            .values()
            .filter(|e| e.saddr == saddr && e.dst.contains(daddr))
            .max_by_key(|e| e.dst.prefix())
    }

    pub fn insert_policy6(&mut self, e: Entry6) {
        let dst = Ipv6Network::new(e.dst.network(), e.dst.prefix()).expect("prefix");
        let e = Entry6 { dst, ..e };
        self.policies6
            .insert((e.saddr, e.dst.network(), e.dst.prefix()), e);
    }

    /// The longest IPv6 entry for (saddr, daddr), as a longest-prefix match
    /// finds it (the datapath probes its lengths, longest first): saddr
    /// exact, daddr by prefix.
    pub fn lookup6(&self, saddr: Ipv6Addr, daddr: Ipv6Addr) -> Option<&Entry6> {
        self.policies6
            .values()
            .filter(|e| e.saddr == saddr && e.dst.contains(daddr))
            .max_by_key(|e| e.dst.prefix())
    }

    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  state '{}': config node_ip {} tunnel_ifindex {} flags {:#x}",
            self.label, self.node_ip, self.tunnel_ifindex, self.flags
        );
        let _ = writeln!(s, "    cilium_groups {:?}", self.cilium_groups);
        let _ = writeln!(
            s,
            "    endpoints (addr -> ifindex, identity) {:?}",
            self.endpoints
        );
        let _ = writeln!(s, "    nodes {:?}", self.nodes);
        let _ = writeln!(
            s,
            "    egress_ifaces {:?}",
            self.egress_ifaces
                .iter()
                .map(|(i, m)| format!("{i}={}", hex(m)))
                .collect::<Vec<_>>()
        );
        let _ = writeln!(s, "    devices (ifindex -> mtu) {:?}", self.devices);
        for e in self.policies.values() {
            let gw = match e.gateway_ip {
                GATEWAY_NOT_FOUND => "NOT_FOUND".to_owned(),
                GATEWAY_EXCLUDED => "EXCLUDED".to_owned(),
                ip => ip.to_string(),
            };
            let _ = writeln!(
                s,
                "    policy {} -> {}: gateway {gw} egress_ip {} egress_ifindex {} policy_id {} origin {}/{}",
                e.saddr, e.dst, e.egress_ip, e.egress_ifindex, e.policy_id, e.origin_node,
                e.origin_identity
            );
        }
        let _ = writeln!(
            s,
            "    endpoints6 (addr -> ifindex, identity) {:?}",
            self.endpoints6
        );
        for e in self.policies6.values() {
            let gw = match e.gateway_ip {
                GATEWAY_NOT_FOUND => "NOT_FOUND".to_owned(),
                GATEWAY_EXCLUDED => "EXCLUDED".to_owned(),
                ip => ip.to_string(),
            };
            let _ = writeln!(
                s,
                "    policy6 {} -> {}: gateway {gw} egress_ip {} egress_ifindex {} policy_id {} origin {}/{}",
                e.saddr, e.dst, e.egress_ip, e.egress_ifindex, e.policy_id, e.origin_node,
                e.origin_identity
            );
        }
        s
    }
}

/// Where a copy leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Uplink(u32),
    Tunnel {
        ifindex: u32,
        remote: Ipv4Addr,
        local: Ipv4Addr,
        vni: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub via: Via,
    pub bytes: Vec<u8>,
}

/// A drop, counted in mcast_egw_drops (IPv4) or mcast_egw_drops_v6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub v6: bool,
    pub role: u32,
    pub reason: u32,
    pub bytes: u64,
}

impl Dropped {
    /// The slot of the drops readings: family, then role, then reason.
    pub fn slot(&self) -> usize {
        drop_slot(self.v6, self.role, self.reason)
    }
}

/// Slots of a drops reading: both families, both roles, reasons 0..=MAX.
pub const DROP_SLOTS: usize = 2 * 2 * (reason::MAX as usize + 1);

pub fn drop_slot(v6: bool, role: u32, reason: u32) -> usize {
    ((usize::from(v6) * 2 + role as usize) * (reason::MAX as usize + 1)) + reason as usize
}

/// (family, role, reason) of a drops-reading slot.
pub fn slot_name(slot: usize) -> String {
    let n = reason::MAX as usize + 1;
    let (fam, role, reason) = (slot / (2 * n), (slot / n) % 2, slot % n);
    format!(
        "{}{}/{}",
        if fam == 1 { "v6 " } else { "" },
        role_name(role as u32),
        reason_name(reason as u32)
    )
}

/// A replication counter increment (mcast_egw_counters or
/// mcast_egw_counters_v6, by the group's family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub policy_id: u32,
    pub group: IpAddr,
    pub role: u32,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: u32,
    /// The frame as the program leaves it (what BPF_PROG_RUN returns).
    pub out: Vec<u8>,
    pub drop: Option<Dropped>,
    pub counted: Vec<Count>,
    /// The packet or copy that leaves a device, if any.
    pub emitted: Option<Emitted>,
    /// Which rule decided, for the statistics.
    pub path: &'static str,
}

impl Outcome {
    pub(crate) fn next(frame: &[u8], path: &'static str) -> Outcome {
        Outcome {
            verdict: NEXT,
            out: frame.to_vec(),
            drop: None,
            counted: Vec::new(),
            emitted: None,
            path,
        }
    }

    /// fail(reason, role, clone): counted, and the packet goes on to
    /// Cilium untouched when it was to get it anyway.
    pub(crate) fn fail(frame: Vec<u8>, role: u32, reason: u32, clone: bool) -> Outcome {
        let bytes = frame.len() as u64;
        // The family is the frame's: an IPv6 frame is never cloned.
        let v6 = frame.len() >= 14 && be16(&frame, 12) == 0x86dd;
        Outcome {
            verdict: if clone { NEXT } else { DROP },
            out: frame,
            drop: Some(Dropped {
                v6,
                role,
                reason,
                bytes,
            }),
            counted: Vec::new(),
            emitted: None,
            path: reason_name(reason),
        }
    }

    pub(crate) fn drop(frame: &[u8], role: u32, reason: u32) -> Outcome {
        Outcome::fail(frame.to_vec(), role, reason, false)
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "verdict {} ({}), {} bytes out",
            verdict_name(self.verdict),
            self.path,
            self.out.len()
        );
        if let Some(d) = self.drop {
            let _ = write!(s, ", drop {} ({} bytes)", slot_name(d.slot()), d.bytes);
        }
        for c in &self.counted {
            let _ = write!(
                s,
                ", counter +1 {{policy {}, {}, {}}} {} bytes",
                c.policy_id,
                c.group,
                role_name(c.role),
                c.bytes
            );
        }
        if let Some(e) = &self.emitted {
            let _ = write!(s, ", leaves via {:?} ({} bytes)", e.via, e.bytes.len());
        }
        s
    }
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

pub(crate) fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn addr_at(b: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[off], b[off + 1], b[off + 2], b[off + 3])
}

/// 224.0.0.0/24 (never forwarded, RFC 5771), IGMP and PIM.
pub fn never_egress(daddr: Ipv4Addr, proto: u8) -> bool {
    let o = daddr.octets();
    (o[0] == 224 && o[1] == 0 && o[2] == 0) || proto == 2 || proto == 103
}

/// V(frame): the IPv4 total length when the datagram is one a router
/// forwards, None when it is malformed.
pub fn validate(frame: &[u8]) -> Option<usize> {
    check(frame).ok()
}

/// V(frame) with the name of the rule a malformed datagram breaks: those a
/// router's input path applies too (version and IHL, total length, header
/// checksum), and those we add (options, the UDP header and length).
pub fn check(frame: &[u8]) -> Result<usize, &'static str> {
    let ip = &frame[14..];
    let (version, ihl) = (ip[0] >> 4, usize::from(ip[0] & 0x0f));
    if version != 4 || ihl < 5 {
        return Err("ipv4_version_ihl");
    }
    let hl = ihl * 4;
    let tot = usize::from(be16(ip, 2));
    if tot < hl || tot > ip.len() {
        return Err("ipv4_total_length");
    }
    if fold(ones_complement_sum(&ip[..hl], 0)) != 0xffff {
        return Err("ipv4_header_checksum");
    }
    if !options_allowed(&ip[20..hl]) {
        return Err("ipv4_options");
    }
    let frag = be16(ip, 6);
    if ip[9] == 17 && frag & 0x1fff == 0 {
        let payload = tot - hl;
        if payload < 8 {
            return Err("udp_header_missing");
        }
        let ulen = usize::from(be16(ip, hl + 4));
        if ulen < 8 {
            return Err("udp_length");
        }
        let more_fragments = frag & 0x2000 != 0;
        if (more_fragments && ulen < payload) || (!more_fragments && ulen != payload) {
            return Err("udp_length");
        }
    }
    Ok(tot)
}

/// Options a gateway forwards, word by word: Router Alert as Linux writes
/// it (94 04 00 00), and words of NOP (01 01 01 01) or End of List
/// (00 00 00 00) padding; anything else (source routes, record route,
/// timestamps, other layouts) is refused as malformed.
fn options_allowed(opts: &[u8]) -> bool {
    opts.chunks(4)
        .all(|w| w == [0x94, 0x04, 0, 0] || w == [1, 1, 1, 1] || w == [0, 0, 0, 0])
}

/// The first checks both programs make (steps 1-5): Some(path) when the
/// frame is not theirs and goes on untouched.
fn not_ours(frame: &[u8], vlan_present: bool) -> Option<&'static str> {
    if frame.len() < 14 || be16(frame, 12) != 0x0800 {
        return Some("not_ipv4");
    }
    if frame.len() < 34 {
        return Some("shorter_than_ipv4_header");
    }
    let daddr = addr_at(frame, 30);
    if !daddr.is_multicast() {
        return Some("not_multicast");
    }
    if vlan_present {
        return Some("vlan_tag");
    }
    if never_egress(daddr, frame[23]) {
        return Some("never_egress");
    }
    None
}

/// mcast_from_container on a frame that came in on `ifindex`.
pub fn container(st: &State, frame: &[u8], ifindex: u32, vlan_present: bool) -> Outcome {
    if frame.len() >= 14 && be16(frame, 12) == 0x86dd {
        return crate::model6::container(st, frame, ifindex, vlan_present);
    }
    if let Some(path) = not_ours(frame, vlan_present) {
        return Outcome::next(frame, path);
    }
    let saddr = addr_at(frame, 26);
    let daddr = addr_at(frame, 30);
    let proto = frame[23];
    let Some(pol) = st.lookup(saddr, daddr) else {
        return Outcome::next(frame, "no_policy_entry");
    };
    if pol.gateway_ip == GATEWAY_EXCLUDED {
        return Outcome::next(frame, "excluded_entry");
    }
    let Some(&(ep_ifindex, ep_identity)) = st.endpoints.get(&saddr) else {
        return Outcome::drop(frame, ROLE_ORIGIN, reason::UNKNOWN_SOURCE);
    };
    if ep_ifindex != ifindex {
        return Outcome::drop(frame, ROLE_ORIGIN, reason::SPOOFED_SOURCE);
    }
    if ep_identity != pol.origin_identity {
        return Outcome::drop(frame, ROLE_ORIGIN, reason::ORIGIN_MISMATCH);
    }
    let clone = st.flags & 1 != 0 && st.cilium_groups.contains(&daddr);
    if pol.gateway_ip == GATEWAY_NOT_FOUND {
        return Outcome::fail(frame.to_vec(), ROLE_ORIGIN, reason::NO_GATEWAY, clone);
    }
    if frame[..6] != group_mac(daddr) {
        return Outcome::fail(frame.to_vec(), ROLE_ORIGIN, reason::DST_MAC_MISMATCH, clone);
    }
    let Some(tot) = validate(frame) else {
        return Outcome::fail(frame.to_vec(), ROLE_ORIGIN, reason::MALFORMED, clone);
    };
    let cut = frame[..14 + tot].to_vec();
    if proto != 17 {
        return Outcome::fail(cut, ROLE_ORIGIN, reason::UNSUPPORTED_PROTO, clone);
    }
    if !st.node_ip.is_unspecified() && pol.gateway_ip == st.node_ip {
        return emit(st, pol, cut, ROLE_ORIGIN, clone);
    }
    let tunnel = st.tunnel_ifindex;
    if tunnel == 0 {
        return Outcome::fail(cut, ROLE_ORIGIN, reason::NO_TUNNEL, clone);
    }
    // The origin does not look the tunnel device up (the controller keeps
    // its ifindex current): a redirect to a vanished one is taken by the
    // helper and counted; a clone to it fails in the helper.
    if !st.devices.contains_key(&tunnel) {
        if clone {
            return Outcome::fail(cut, ROLE_ORIGIN, reason::CLONE, clone);
        }
        let bytes = cut.len() as u64;
        return Outcome {
            verdict: REDIRECT,
            emitted: None,
            out: cut,
            drop: None,
            counted: vec![Count {
                policy_id: pol.policy_id,
                group: IpAddr::V4(daddr),
                role: ROLE_ORIGIN,
                bytes,
            }],
            path: "tunnel_redirect_to_a_vanished_device",
        };
    }
    let bytes = cut.len() as u64;
    Outcome {
        verdict: if clone { NEXT } else { REDIRECT },
        emitted: Some(Emitted {
            via: Via::Tunnel {
                ifindex: tunnel,
                remote: pol.gateway_ip,
                local: st.node_ip,
                vni: ep_identity,
            },
            bytes: cut.clone(),
        }),
        out: cut,
        drop: None,
        counted: vec![Count {
            policy_id: pol.policy_id,
            group: IpAddr::V4(daddr),
            role: ROLE_ORIGIN,
            bytes,
        }],
        path: if clone {
            "tunnel_clone"
        } else {
            "tunnel_redirect"
        },
    }
}

/// mcast_from_overlay on a frame out of the tunnel with key `key`
/// (VNI, outer source), None when the packet carries no key.
pub fn overlay(
    st: &State,
    frame: &[u8],
    key: Option<(u32, Ipv4Addr)>,
    vlan_present: bool,
) -> Outcome {
    if frame.len() >= 14 && be16(frame, 12) == 0x86dd {
        return crate::model6::overlay(st, frame, key, vlan_present);
    }
    if let Some(path) = not_ours(frame, vlan_present) {
        return Outcome::next(frame, path);
    }
    let Some((vni, remote)) = key else {
        return Outcome::next(frame, "no_tunnel_key");
    };
    if vni == IDENTITY_WORLD {
        return Outcome::next(frame, "world_vni");
    }
    if !st.nodes.contains(&remote) {
        return Outcome::drop(frame, ROLE_GATEWAY, reason::UNKNOWN_PEER);
    }
    let (saddr, daddr) = (addr_at(frame, 26), addr_at(frame, 30));
    let Some(pol) = st.lookup(saddr, daddr) else {
        return Outcome::drop(frame, ROLE_GATEWAY, reason::NO_POLICY);
    };
    if pol.gateway_ip == GATEWAY_EXCLUDED {
        return Outcome::drop(frame, ROLE_GATEWAY, reason::EXCLUDED);
    }
    if remote != pol.origin_node || vni != pol.origin_identity {
        return Outcome::drop(frame, ROLE_GATEWAY, reason::ORIGIN_MISMATCH);
    }
    if st.node_ip.is_unspecified() || pol.gateway_ip != st.node_ip {
        return Outcome::drop(frame, ROLE_GATEWAY, reason::NOT_GATEWAY);
    }
    if frame[..6] != group_mac(daddr) {
        return Outcome::drop(frame, ROLE_GATEWAY, reason::DST_MAC_MISMATCH);
    }
    let Some(tot) = validate(frame) else {
        return Outcome::drop(frame, ROLE_GATEWAY, reason::MALFORMED);
    };
    emit(st, pol, frame[..14 + tot].to_vec(), ROLE_GATEWAY, false)
}

/// EMIT(role, clone) on the cut frame.
fn emit(st: &State, pol: &Entry, cut: Vec<u8>, role: u32, clone: bool) -> Outcome {
    let ifindex = pol.egress_ifindex;
    if pol.egress_ip.is_unspecified() || ifindex == 0 {
        return Outcome::fail(cut, ROLE_GATEWAY, reason::NO_EGRESS_IP, clone);
    }
    let Some(&mac) = st.egress_ifaces.get(&ifindex) else {
        return Outcome::fail(cut, ROLE_GATEWAY, reason::NO_EGRESS_IFACE, clone);
    };
    if cut[23] != 17 {
        return Outcome::fail(cut, ROLE_GATEWAY, reason::UNSUPPORTED_PROTO, clone);
    }
    if cut[22] <= 1 {
        return Outcome::fail(cut, ROLE_GATEWAY, reason::TTL_EXCEEDED, clone);
    }
    let Some(&mtu) = st.devices.get(&ifindex) else {
        return Outcome::fail(cut, ROLE_GATEWAY, reason::REDIRECT_FAILED, clone);
    };
    if cut.len() > mtu as usize + 14 {
        return Outcome::fail(cut, ROLE_GATEWAY, reason::MTU_EXCEEDED, clone);
    }
    let rewritten = rewrite(&cut, pol.egress_ip, mac);
    let group = IpAddr::V4(addr_at(&cut, 30));
    let bytes = cut.len() as u64;
    let mut counted = Vec::new();
    if role == ROLE_ORIGIN {
        counted.push(Count {
            policy_id: pol.policy_id,
            group,
            role: ROLE_ORIGIN,
            bytes,
        });
    }
    counted.push(Count {
        policy_id: pol.policy_id,
        group,
        role: ROLE_GATEWAY,
        bytes,
    });
    Outcome {
        verdict: if clone { NEXT } else { REDIRECT },
        out: if clone { cut } else { rewritten.clone() },
        drop: None,
        counted,
        emitted: Some(Emitted {
            via: Via::Uplink(ifindex),
            bytes: rewritten,
        }),
        path: if clone { "emit_clone" } else { "emit_redirect" },
    }
}

/// The gateway rewrite of a valid, cut frame: source to the egress IP,
/// TTL - 1, header checksum, UDP checksum through the pseudo-header,
/// Ethernet header for the group (RFC 1112 6.4).
pub fn rewrite(cut: &[u8], egress_ip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut f = cut.to_vec();
    let hl = usize::from(f[14] & 0x0f) * 4;
    let old_saddr: [u8; 4] = f[26..30].try_into().expect("4 bytes");
    f[22] -= 1;
    f[26..30].copy_from_slice(&egress_ip.octets());
    // The header was valid, so an incremental update (RFC 1624) and a
    // recomputation agree, 0x0000 included: recompute it.
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&f[14..14 + hl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    if be16(&f, 20) & 0x1fff == 0 {
        let off = 14 + hl + 6;
        let old = be16(&f, off);
        if old != 0 {
            let new = udp_csum_update(old, old_saddr, egress_ip.octets());
            f[off..off + 2].copy_from_slice(&new.to_be_bytes());
        }
    }
    let daddr = addr_at(&f, 30);
    f[0..6].copy_from_slice(&group_mac(daddr));
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

/// RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), for a 32-bit field of the
/// pseudo-header; a result of 0 is sent as 0xffff (RFC 768). The field is
/// not necessarily a correct checksum: it is updated all the same.
pub fn udp_csum_update(old_csum: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    csum_update(old_csum, &old, &new)
}

/// [`udp_csum_update`] for a field of any even length (an IPv6 address).
pub fn csum_update(old_csum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!old_csum);
    for w in old.chunks_exact(2) {
        sum += u32::from(!u16::from_be_bytes([w[0], w[1]]));
    }
    for w in new.chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    match !fold(sum) {
        0 => 0xffff,
        c => c,
    }
}
