//! The generator: map states, and frames for a state, from random bytes to
//! structure-aware mutations of valid multicast UDP aimed at the state's
//! own sources, groups and tunnel peers.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::common::packet::{self, checksum, fold, ones_complement_sum, Frame, UdpCsum};
use crate::model::{Entry, State, GATEWAY_EXCLUDED, GATEWAY_NOT_FOUND, IDENTITY_WORLD};
use crate::rng::Rng;

/// Addresses, all in documentation ranges; groups in 232.0.0.0/8 except
/// where the point is 224.0.0.x or another multicast block.
pub mod addr {
    use std::net::Ipv4Addr;

    pub use crate::common::addr::{OTHER_NODE, POD_A, POD_B, REMOTE_GW, STRANGER, THIS_NODE};
    pub const POD_C: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 13);
    /// Covered by policies, but no endpoint on this node.
    pub const UNKNOWN_POD: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);
    /// The pod of the real-path stage's positive control.
    pub const POD_CTL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
    pub use crate::common::addr::EGRESS_IP;
    pub const EGRESS_IP2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
    pub const CONTROL_GROUP: Ipv4Addr = Ipv4Addr::new(232, 255, 0, 1);
    /// Peers with a permanent neighbour entry on the underlay, so that a
    /// tunnelled copy to them reaches the underlay tap with no ARP.
    pub const TUNNEL_PEERS: [Ipv4Addr; 3] = [REMOTE_GW, OTHER_NODE, STRANGER];
}

/// The largest frame generated.
pub const MAX_FRAME: usize = 9000;

pub const ID_A: u32 = 12345;
pub const ID_B: u32 = 23456;
pub const ID_C: u32 = 34567;
pub const ID_CTL: u32 = 45678;
pub const ID_WRONG: u32 = 0x00ab_cdef;

/// The devices of the fixture, as the states refer to them.
#[derive(Debug, Clone)]
pub struct Env {
    pub lxc_a: u32,
    pub lxc_b: u32,
    /// (ifindex, MTU, MAC) of uplink0..2.
    pub uplinks: Vec<(u32, u32, [u8; 6])>,
    /// (ifindex, MTU) of the collect-md VXLAN devices.
    pub tunnels: Vec<(u32, u32)>,
    /// The ifindex of a device that existed and is gone.
    pub vanished: u32,
    /// ifindex -> MTU of every device the programs may be pointed at.
    pub devices: BTreeMap<u32, u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    RandomBytes,
    RandomIpv4,
    Valid,
    Mutated,
    Fragment,
    Truncated,
    TruncationSweep,
    NeverEgress,
    ChecksumCorner,
    Vlan,
    Ipv6,
    Ipv6Valid,
    Ipv6Mutated,
    Ipv6Chain,
    Ipv6Fragment,
    Ipv6NeverEgress,
    Ipv6ChecksumCorner,
    Ipv6Truncated,
    Ipv6Random,
    Ipv6Options,
    Ipv6ExtCorner,
    Ipv4Options,
    L2Corner,
    Arp,
    OtherEthertype,
    Control,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::RandomBytes => "random bytes",
            Class::RandomIpv4 => "random IPv4",
            Class::Valid => "valid multicast UDP",
            Class::Mutated => "mutated multicast UDP",
            Class::Fragment => "fragment",
            Class::Truncated => "truncated",
            Class::TruncationSweep => "truncation sweep",
            Class::NeverEgress => "224.0.0.x / IGMP / PIM",
            Class::ChecksumCorner => "checksum corners",
            Class::Vlan => "802.1Q / 802.1ad tagged",
            Class::Ipv6 => "IPv6, IPv4-looking group",
            Class::Ipv6Valid => "IPv6 valid multicast UDP",
            Class::Ipv6Mutated => "IPv6 mutated header",
            Class::Ipv6Chain => "IPv6 extension chains",
            Class::Ipv6Fragment => "IPv6 fragment",
            Class::Ipv6NeverEgress => "IPv6 scope<=2 / MLD / PIM",
            Class::Ipv6ChecksumCorner => "IPv6 checksum corners",
            Class::Ipv6Truncated => "IPv6 truncated",
            Class::Ipv6Random => "IPv6 random",
            Class::Ipv6Options => "IPv6 hop-by-hop/dest options",
            Class::Ipv6ExtCorner => "IPv6 routing/frag/AH/ESP",
            Class::Ipv4Options => "IPv4 options",
            Class::L2Corner => "layer-2 corners",
            Class::Arp => "ARP",
            Class::OtherEthertype => "other ethertype",
            Class::Control => "positive control",
        }
    }
}

/// One frame and how to present it to each program.
#[derive(Debug, Clone)]
pub struct Case {
    pub class: Class,
    pub mutations: Vec<&'static str>,
    pub frame: Vec<u8>,
    /// The device mcast_from_container sees it arrive on.
    pub ifindex: u32,
    /// The receive tunnel key mcast_from_overlay sees: (VNI, outer source).
    pub key: Option<(u32, Ipv4Addr)>,
}

fn net(a: Ipv4Addr, prefix: u8) -> Ipv4Network {
    Ipv4Network::new(a, prefix).expect("prefix")
}

/// Destination prefixes the states draw their entries from.
const PREFIXES: [(Ipv4Addr, u8); 10] = [
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(232, 0, 0, 0), 8),
    (Ipv4Addr::new(232, 1, 0, 0), 16),
    (Ipv4Addr::new(232, 1, 1, 0), 24),
    (Ipv4Addr::new(232, 1, 1, 1), 32),
    (Ipv4Addr::new(232, 2, 0, 0), 16),
    (Ipv4Addr::new(232, 128, 0, 0), 9),
    (Ipv4Addr::new(239, 0, 0, 0), 8),
    (Ipv4Addr::new(224, 0, 0, 0), 24),
    (Ipv4Addr::new(233, 252, 0, 0), 24),
];

fn fixed_state(env: &Env) -> State {
    use addr::{OTHER_NODE, POD_A, POD_B, POD_C, POD_CTL, UNKNOWN_POD};
    let (uplink0, _, mac0) = env.uplinks[0];
    let (uplink1, _, mac1) = env.uplinks[1];
    let (uplink2, _, mac2) = env.uplinks[2];
    let mut st = State {
        label: "reference".to_owned(),
        node_ip: addr::THIS_NODE,
        tunnel_ifindex: env.tunnels[0].0,
        flags: 1,
        devices: env.devices.clone(),
        ..State::default()
    };
    st.cilium_groups.insert(Ipv4Addr::new(232, 1, 2, 3));
    st.cilium_groups.insert(Ipv4Addr::new(232, 2, 0, 7));
    st.endpoints.insert(addr::POD_A, (env.lxc_a, ID_A));
    st.endpoints.insert(addr::POD_B, (env.lxc_b, ID_B));
    st.endpoints.insert(addr::POD_C, (env.lxc_a, ID_C));
    st.endpoints.insert(addr::POD_CTL, (env.lxc_a, ID_CTL));
    for n in [addr::THIS_NODE, addr::REMOTE_GW, addr::OTHER_NODE] {
        st.nodes.insert(n);
    }
    st.egress_ifaces.insert(uplink0, mac0);
    st.egress_ifaces.insert(uplink1, mac1);
    st.egress_ifaces.insert(uplink2, mac2);
    st.egress_ifaces
        .insert(env.vanished, [0x02, 0, 0, 0, 0, 0x99]);
    crate::gen6::fixed_entries(&mut st, env);
    let (here, remote) = (addr::THIS_NODE, addr::REMOTE_GW);
    let (excluded, not_found, gone) = (GATEWAY_EXCLUDED, GATEWAY_NOT_FOUND, env.vanished);
    let p = |saddr, dst: &str, gateway_ip, egress_ifindex, policy_id, node, ident| Entry {
        saddr,
        dst: dst.parse().expect("CIDR"),
        egress_ip: addr::EGRESS_IP,
        gateway_ip,
        egress_ifindex,
        policy_id,
        origin_node: node,
        origin_identity: ident,
    };
    let no_ip = |e: Entry| Entry {
        egress_ip: Ipv4Addr::UNSPECIFIED,
        ..e
    };
    let ip2 = |e: Entry| Entry {
        egress_ip: addr::EGRESS_IP2,
        ..e
    };
    for entry in [
        // Pod A: local gateway, an exclusion inside it, a remote gateway,
        // no gateway.
        p(POD_A, "232.1.0.0/16", here, uplink0, 1, remote, ID_A),
        p(POD_A, "232.1.1.0/24", excluded, uplink0, 1, remote, ID_A),
        no_ip(p(POD_A, "232.2.0.0/16", remote, 0, 2, remote, ID_A)),
        no_ip(p(POD_A, "232.3.0.0/16", not_found, 0, 3, remote, ID_A)),
        // This node the gateway, but no egress IP; an uplink without an
        // egress-interface entry; one that is gone; MTU 2000 and 9000.
        no_ip(p(POD_A, "232.4.0.0/16", here, uplink0, 4, remote, ID_A)),
        p(POD_A, "232.5.0.0/16", here, env.lxc_b, 5, remote, ID_A),
        p(POD_A, "232.6.0.0/16", here, gone, 6, remote, ID_A),
        p(POD_A, "232.7.0.0/16", here, uplink1, 7, remote, ID_A),
        p(POD_A, "232.8.0.0/16", here, uplink2, 8, remote, ID_A),
        no_ip(p(POD_A, "224.0.0.0/4", OTHER_NODE, 0, 9, remote, ID_A)),
        // Pod B: its own identity and egress IP; a stale entry made for
        // pod A's identity.
        ip2(p(POD_B, "232.0.0.0/8", here, uplink0, 10, OTHER_NODE, ID_B)),
        p(POD_B, "232.1.0.0/16", here, uplink0, 11, OTHER_NODE, ID_A),
        // Pod C behind lxc_a too; a pod with no endpoint; the control.
        no_ip(p(POD_C, "232.0.0.0/8", remote, 0, 12, here, ID_C)),
        p(UNKNOWN_POD, "232.0.0.0/8", here, uplink0, 13, remote, ID_A),
        p(POD_CTL, "232.255.0.1/32", here, uplink0, 14, remote, ID_CTL),
    ] {
        st.insert_policy(entry);
    }
    st
}

/// Map state number `idx`: 0 is a hand-written reference, the others are
/// drawn from `rng`. `real_path` keeps to what the real devices can show:
/// node IP this node's or unset, and always a positive control that leaves.
pub fn state(rng: &mut Rng, env: &Env, idx: usize, real_path: bool) -> State {
    if idx == 0 {
        return fixed_state(env);
    }
    let mut st = State {
        label: format!("random #{idx}"),
        devices: env.devices.clone(),
        ..State::default()
    };
    st.node_ip = match rng.below(100) {
        0..=74 => addr::THIS_NODE,
        75..=94 => Ipv4Addr::UNSPECIFIED,
        _ if real_path => addr::THIS_NODE,
        _ => addr::OTHER_NODE,
    };
    st.tunnel_ifindex = match rng.below(100) {
        0..=49 => env.tunnels[0].0,
        50..=64 => env.tunnels[1].0,
        65..=79 => 0,
        _ => env.vanished,
    };

    let endpoints = [
        (addr::POD_A, env.lxc_a, ID_A, 95),
        (addr::POD_B, env.lxc_b, ID_B, 90),
        (addr::POD_C, env.lxc_a, ID_C, 70),
    ];
    for (pod, ifindex, id, p) in endpoints {
        if rng.percent(p) {
            // Now and then the pod has an identity no entry was made for.
            let id = if rng.percent(8) { ID_WRONG } else { id };
            st.endpoints.insert(pod, (ifindex, id));
        }
    }
    st.endpoints.insert(addr::POD_CTL, (env.lxc_a, ID_CTL));
    for (n, p) in [
        (addr::THIS_NODE, 90),
        (addr::REMOTE_GW, 90),
        (addr::OTHER_NODE, 80),
    ] {
        if rng.percent(p) {
            st.nodes.insert(n);
        }
    }
    for (i, &(ifindex, _, mac)) in env.uplinks.iter().enumerate() {
        if rng.percent([95, 70, 70][i]) {
            // Sometimes a MAC that is not the device's: only bytes.
            let mac = if rng.percent(10) {
                [0x02, rng.u8(), rng.u8(), rng.u8(), rng.u8(), rng.u8()]
            } else {
                mac
            };
            st.egress_ifaces.insert(ifindex, mac);
        }
    }
    if rng.percent(60) {
        st.egress_ifaces
            .insert(env.vanished, [0x02, 0, 0, 0, 0, 0x99]);
    }

    let n = rng.range(2, 14);
    for _ in 0..n {
        let saddr = match rng.below(100) {
            0..=34 => addr::POD_A,
            35..=54 => addr::POD_B,
            55..=69 => addr::POD_C,
            70..=79 => addr::UNKNOWN_POD,
            80..=84 => addr::POD_CTL,
            _ => Ipv4Addr::new(198, 51, 100, rng.u8()),
        };
        let dst = if rng.percent(80) {
            let (a, p) = rng.pick(&PREFIXES);
            net(a, p)
        } else {
            let p = rng.range(4, 32) as u8;
            let a = u32::from(Ipv4Addr::new(224, 0, 0, 0)) | (rng.u32() >> 4);
            net(Ipv4Addr::from(a), p)
        };
        let gateway_ip = match rng.below(100) {
            0..=34 => addr::THIS_NODE,
            35..=54 => addr::REMOTE_GW,
            55..=62 => addr::OTHER_NODE,
            63..=66 => addr::STRANGER,
            67..=82 => GATEWAY_NOT_FOUND,
            _ => GATEWAY_EXCLUDED,
        };
        let egress_ip = match rng.below(100) {
            0..=69 => addr::EGRESS_IP,
            70..=84 => addr::EGRESS_IP2,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        let egress_ifindex = match rng.below(100) {
            0..=44 => env.uplinks[0].0,
            45..=59 => env.uplinks[1].0,
            60..=74 => env.uplinks[2].0,
            75..=82 => 0,
            83..=90 => env.vanished,
            // A real device with no egress-interface entry.
            _ => env.lxc_b,
        };
        let own_identity = st.endpoints.get(&saddr).map(|e| e.1).unwrap_or(ID_A);
        let origin_identity = match rng.below(100) {
            0..=79 => own_identity,
            80..=89 => rng.pick(&[ID_A, ID_B, ID_C]),
            90..=94 => IDENTITY_WORLD,
            _ => rng.u32() & 0x00ff_ffff,
        };
        let origin_node = match rng.below(100) {
            0..=59 => addr::REMOTE_GW,
            60..=79 => addr::OTHER_NODE,
            80..=94 => addr::THIS_NODE,
            _ => addr::STRANGER,
        };
        st.insert_policy(Entry {
            saddr,
            dst,
            egress_ip,
            gateway_ip,
            egress_ifindex,
            policy_id: rng.range(1, 40) as u32,
            origin_node,
            origin_identity,
        });
    }

    crate::gen6::random_entries(rng, &mut st, env);

    // Cilium's groups: none, or a few of the covered ones; the flag mostly
    // follows the map, but not always (a reader sees both orders).
    let groups = if rng.percent(50) { 0 } else { rng.range(1, 5) };
    for _ in 0..groups {
        let g = covered_group(rng, &st);
        st.cilium_groups.insert(g);
    }
    let flag_set = if st.cilium_groups.is_empty() {
        rng.percent(10)
    } else {
        rng.percent(85)
    };
    st.flags = u32::from(flag_set);

    if real_path {
        add_working_entries(rng, &mut st, env);
        crate::gen6::add_working_entries(rng, &mut st, env);
        add_control(&mut st, env);
        crate::gen6::add_control(&mut st, env);
    } else if rng.percent(30) {
        add_control(&mut st, env);
        crate::gen6::add_control(&mut st, env);
    }
    st
}

/// Entries that let packets out when the rest of the state allows it: a
/// real-path stage of random entries alone would see few frames leave.
fn add_working_entries(rng: &mut Rng, st: &mut State, env: &Env) {
    let here = st.node_ip == addr::THIS_NODE;
    let pods = [(addr::POD_A, ID_A), (addr::POD_C, ID_C)];
    for (i, (dst, uplink)) in [
        (net(Ipv4Addr::new(232, 64, 0, 0), 10), 2),
        (net(Ipv4Addr::new(232, 16, 0, 0), 12), 1),
        (net(Ipv4Addr::new(232, 32, 0, 0), 11), 0),
    ]
    .into_iter()
    .enumerate()
    {
        let (pod, id) = rng.pick(&pods);
        // The last one through the tunnel, or all when this node is no
        // gateway.
        let local = here && i < 2;
        st.insert_policy(Entry {
            saddr: pod,
            dst,
            egress_ip: addr::EGRESS_IP,
            gateway_ip: if local {
                addr::THIS_NODE
            } else {
                rng.pick(&addr::TUNNEL_PEERS)
            },
            egress_ifindex: if local { env.uplinks[uplink].0 } else { 0 },
            policy_id: 50 + i as u32,
            origin_node: addr::REMOTE_GW,
            origin_identity: id,
        });
        if rng.percent(30) {
            st.cilium_groups.insert(inside(rng, dst));
            st.flags = 1;
        }
    }
}

/// A policy whose packets must leave: through the uplink when this node is
/// the gateway, else through a real tunnel device.
fn add_control(st: &mut State, env: &Env) {
    let (uplink0, _, mac0) = env.uplinks[0];
    st.endpoints.insert(addr::POD_CTL, (env.lxc_a, ID_CTL));
    let local = st.node_ip == addr::THIS_NODE;
    if local {
        st.egress_ifaces.insert(uplink0, mac0);
    } else if !env.tunnels.iter().any(|t| t.0 == st.tunnel_ifindex) {
        st.tunnel_ifindex = env.tunnels[0].0;
    }
    st.cilium_groups.remove(&addr::CONTROL_GROUP);
    st.insert_policy(Entry {
        saddr: addr::POD_CTL,
        dst: net(addr::CONTROL_GROUP, 32),
        egress_ip: addr::EGRESS_IP,
        gateway_ip: if local {
            addr::THIS_NODE
        } else {
            addr::REMOTE_GW
        },
        egress_ifindex: if local { uplink0 } else { 0 },
        policy_id: 99,
        origin_node: addr::REMOTE_GW,
        origin_identity: ID_CTL,
    });
}

/// An address inside one of the state's entries, or a random group.
fn covered_group(rng: &mut Rng, st: &State) -> Ipv4Addr {
    let n = st.policies.len() as u64;
    if n == 0 {
        return Ipv4Addr::new(232, rng.u8(), rng.u8(), rng.u8());
    }
    let e = st
        .policies
        .values()
        .nth(rng.below(n) as usize)
        .expect("an entry");
    inside(rng, e.dst)
}

fn inside(rng: &mut Rng, dst: Ipv4Network) -> Ipv4Addr {
    let host_bits = 32 - u32::from(dst.prefix());
    let mask = if host_bits == 32 {
        u32::MAX
    } else {
        (1u32 << host_bits) - 1
    };
    let host = match rng.below(4) {
        0 => 0,
        1 => mask,
        _ => rng.u32() & mask,
    };
    Ipv4Addr::from(u32::from(dst.network()) | host)
}

pub struct Gen<'a> {
    pub rng: Rng,
    pub(crate) st: &'a State,
    pub(crate) env: &'a Env,
    sources: Vec<Ipv4Addr>,
}

/// The share of the frames that are IPv6 ones of the structure-aware
/// IPv6 classes (tests/fuzz/gen6.rs), in percent: the run's budget split
/// between the families.
const IPV6_SHARE: u64 = 35;
const IPV6_SHARE_REAL_PATH: u64 = 30;

impl<'a> Gen<'a> {
    pub fn new(rng: Rng, st: &'a State, env: &'a Env) -> Gen<'a> {
        let mut sources: Vec<Ipv4Addr> = st.endpoints.keys().copied().collect();
        sources.extend(st.policies.values().map(|e| e.saddr));
        sources.push(addr::UNKNOWN_POD);
        sources.sort();
        sources.dedup();
        Gen {
            rng,
            st,
            env,
            sources,
        }
    }

    fn source(&mut self) -> Ipv4Addr {
        match self.rng.below(100) {
            0..=84 => self.rng.pick(&self.sources),
            85..=94 => Ipv4Addr::new(198, 51, 100, self.rng.u8()),
            _ => Ipv4Addr::from(self.rng.u32()),
        }
    }

    fn group(&mut self) -> Ipv4Addr {
        let r = &mut self.rng;
        match r.below(100) {
            0..=59 => covered_group(r, self.st),
            60..=67 if !self.st.cilium_groups.is_empty() => {
                let gs: Vec<_> = self.st.cilium_groups.iter().copied().collect();
                r.pick(&gs)
            }
            60..=71 => Ipv4Addr::new(224, 0, 0, r.u8()),
            72..=83 => Ipv4Addr::from(0xe000_0000 | (r.u32() >> 4)),
            84..=89 => Ipv4Addr::new(232, r.u8(), r.u8(), r.u8()),
            90..=93 => Ipv4Addr::new(198, 51, 100, r.u8()),
            94..=96 => Ipv4Addr::new(203, 0, 113, r.u8()),
            _ => Ipv4Addr::from(r.u32()),
        }
    }

    /// Payload sizes from empty to a 9000-byte frame, most of them small;
    /// past about 3.7 KB BPF_PROG_RUN refuses the frame (real path only).
    fn payload_len(&mut self) -> usize {
        let r = &mut self.rng;
        match r.below(1000) {
            0..=599 => r.range(0, 64),
            600..=849 => r.range(65, 512),
            850..=964 => r.range(513, 1472),
            965..=995 => r.range(1473, 3650),
            _ => r.range(3651, 9000 - 42),
        }
    }

    /// A TTL, or an IPv6 hop limit: the values around the routers' limits
    /// (0, 1, 2) often.
    pub(crate) fn ttl(&mut self) -> u8 {
        match self.rng.below(100) {
            0..=59 => 64,
            60..=64 => 0,
            65..=71 => 1,
            72..=77 => 2,
            78..=83 => 255,
            _ => self.rng.u8(),
        }
    }

    fn options(&mut self) -> Vec<u8> {
        let words = self.rng.range(1, 10);
        let mut o = Vec::with_capacity(words * 4);
        for _ in 0..words {
            match self.rng.below(4) {
                // Router Alert (RFC 2113)
                0 => o.extend_from_slice(&[0x94, 0x04, 0x00, 0x00]),
                1 => o.extend_from_slice(&[1, 1, 1, 1]),
                2 => o.extend_from_slice(&[1, 1, 1, 0]),
                _ => o.extend_from_slice(&self.rng.bytes(4)),
            }
        }
        o
    }

    /// A valid multicast UDP datagram as a pod would send it.
    fn valid_desc(&mut self) -> Frame {
        let saddr = self.source();
        let daddr = self.group();
        let len = self.payload_len();
        let payload = self.rng.bytes(len);
        let mut f = Frame::udp(saddr, daddr, &payload);
        f.ttl = self.ttl();
        f.tos = self.rng.u8();
        f.id = self.rng.u16();
        f.sport = self.rng.u16();
        f.dport = self.rng.u16();
        if self.rng.percent(15) {
            f.udp_csum = UdpCsum::Zero;
        }
        if self.rng.percent(15) {
            f.options = self.options();
        }
        f
    }

    /// The next case, of a class drawn with the weights of the stage.
    pub fn case(&mut self, real_path: bool) -> Case {
        let v6 = self.rng.percent(if real_path {
            IPV6_SHARE_REAL_PATH
        } else {
            IPV6_SHARE
        });
        if v6 {
            let (class, frame, mutations) = self.case6(real_path);
            return self.finish(class, frame, mutations);
        }
        let roll = self.rng.below(1000);
        let (class, frame, mutations) = if real_path {
            // Tagged frames are real here (the kernel takes a tag out
            // before tcx): layer-2 corners get a larger share.
            match roll {
                0..=129 => self.vlan(),
                130..=219 => self.truncated(),
                220..=339 => self.large(),
                340..=459 => self.mutated(),
                460..=619 => self.valid(),
                620..=669 => self.fragment(),
                670..=719 => self.never_egress(),
                720..=749 => self.ipv6(),
                750..=769 => self.arp(),
                770..=789 => self.other_ethertype(),
                790..=799 => self.random_ipv4(),
                800..=819 => self.checksum_corner(),
                820..=879 => self.ipv4_options(),
                _ => self.l2_corner4(true),
            }
        } else {
            match roll {
                0..=19 => self.random_bytes(),
                20..=39 => self.checksum_corner(),
                40..=89 => self.random_ipv4(),
                90..=279 => self.valid(),
                280..=699 => self.mutated(),
                700..=739 => self.ipv4_options(),
                740..=759 => self.l2_corner4(false),
                760..=819 => self.fragment(),
                820..=859 => self.truncated(),
                860..=889 => self.never_egress(),
                890..=934 => self.vlan(),
                935..=959 => self.ipv6(),
                960..=979 => self.arp(),
                _ => self.other_ethertype(),
            }
        };
        self.finish(class, frame, mutations)
    }

    /// Put a frame in a case: the device it arrives on and its tunnel key.
    pub fn finish(
        &mut self,
        class: Class,
        mut frame: Vec<u8>,
        mutations: Vec<&'static str>,
    ) -> Case {
        // Frames of up to 9000 bytes: what the pod's jumbo veth carries.
        frame.truncate(MAX_FRAME);
        if crate::model6::is_v6(&frame) {
            let (ifindex, key) = self.placement6(&frame);
            return Case {
                class,
                mutations,
                frame,
                ifindex,
                key,
            };
        }
        let (saddr, daddr) = if frame.len() >= 34 {
            (
                Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]),
                Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]),
            )
        } else {
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
        };
        let endpoint = self.st.endpoints.get(&saddr).copied();
        let ifindex = match (self.rng.below(100), endpoint) {
            (0..=64, Some((ifindex, _))) => ifindex,
            (0..=79, _) => self.env.lxc_a,
            (80..=89, _) => self.env.lxc_b,
            _ => self.env.uplinks[0].0,
        };
        let entry = self.st.lookup(saddr, daddr).cloned();
        let key = if self.rng.percent(8) {
            None
        } else {
            let vni = match (self.rng.below(100), &entry) {
                (0..=9, _) => IDENTITY_WORLD,
                (10..=64, Some(e)) => e.origin_identity,
                (10..=79, _) => endpoint.map(|e| e.1).unwrap_or(ID_A),
                (80..=89, _) => self.rng.pick(&[ID_A, ID_B, ID_C, ID_CTL, ID_WRONG, 0]),
                _ => self.rng.u32() & 0x00ff_ffff,
            };
            let remote = match (self.rng.below(100), &entry) {
                (0..=59, Some(e)) => e.origin_node,
                (0..=79, _) => self
                    .rng
                    .pick(&[addr::THIS_NODE, addr::REMOTE_GW, addr::OTHER_NODE]),
                (80..=92, _) => addr::STRANGER,
                _ => Ipv4Addr::from(self.rng.u32()),
            };
            Some((vni, remote))
        };
        Case {
            class,
            mutations,
            frame,
            ifindex,
            key,
        }
    }

    fn valid(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid_desc();
        if self.rng.percent(50) {
            let (s, g) = self.covered_pair();
            d.saddr = s;
            d.daddr = g;
            d.dst_mac = packet::group_mac(g);
        }
        (Class::Valid, d.bytes(), Vec::new())
    }

    /// A frame of the IPv6 positive control: covered, valid, must leave.
    pub fn control_v6(&mut self) -> Case {
        Case {
            class: Class::Control,
            mutations: vec!["v6_control"],
            frame: self.control6(),
            ifindex: self.env.lxc_a,
            key: Some((ID_CTL, addr::REMOTE_GW)),
        }
    }

    /// A frame of the positive control: covered, valid, must leave.
    pub fn control(&mut self) -> Case {
        let len = self.rng.range(0, 200);
        let payload = self.rng.bytes(len);
        let f = Frame::udp(addr::POD_CTL, addr::CONTROL_GROUP, &payload).bytes();
        Case {
            class: Class::Control,
            mutations: Vec::new(),
            frame: f,
            ifindex: self.env.lxc_a,
            key: Some((ID_CTL, addr::REMOTE_GW)),
        }
    }

    fn large(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid_desc();
        let len = self.rng.range(1400, 9000 - 42);
        d.payload = self.rng.bytes(len);
        let jumbo: Vec<Entry> = self
            .st
            .policies
            .values()
            .filter(|e| e.egress_ifindex == self.env.uplinks[2].0)
            .cloned()
            .collect();
        if !jumbo.is_empty() && self.rng.percent(50) {
            // Through the jumbo uplink, where a large frame can leave.
            let e = &jumbo[self.rng.below(jumbo.len() as u64) as usize];
            let g = inside(&mut self.rng, e.dst);
            d.saddr = e.saddr;
            d.daddr = g;
            d.dst_mac = packet::group_mac(g);
        } else if self.rng.percent(80) {
            // Mostly covered, so that size is what decides.
            let (s, g) = self.covered_pair();
            d.saddr = s;
            d.daddr = g;
            d.dst_mac = packet::group_mac(g);
        }
        (Class::Valid, d.bytes(), vec!["large"])
    }

    /// A (source, group) pair some entry covers, when there is one; now and
    /// then one of Cilium's groups, so that the clone paths are taken.
    fn covered_pair(&mut self) -> (Ipv4Addr, Ipv4Addr) {
        if !self.st.cilium_groups.is_empty() && self.rng.percent(25) {
            let gs: Vec<Ipv4Addr> = self.st.cilium_groups.iter().copied().collect();
            let g = self.rng.pick(&gs);
            let srcs: Vec<Ipv4Addr> = self
                .st
                .policies
                .values()
                .filter(|e| e.dst.contains(g))
                .map(|e| e.saddr)
                .collect();
            if !srcs.is_empty() {
                return (self.rng.pick(&srcs), g);
            }
        }
        let n = self.st.policies.len() as u64;
        if n == 0 {
            return (self.source(), self.group());
        }
        let e = self
            .st
            .policies
            .values()
            .nth(self.rng.below(n) as usize)
            .expect("an entry")
            .clone();
        (e.saddr, inside(&mut self.rng, e.dst))
    }

    /// A covered pair whose frame gets past the origin's first checks (an
    /// entry with a gateway, the pod's endpoint with the entry's identity,
    /// a group that may leave), so that what comes after them decides: a
    /// few draws of [`Self::covered_pair`], and now and then the first.
    fn aimed_pair(&mut self) -> (Ipv4Addr, Ipv4Addr) {
        let mut pair = self.covered_pair();
        if self.rng.percent(15) {
            return pair;
        }
        for _ in 0..8 {
            let (s, g) = pair;
            let reaches = self.st.lookup(s, g).is_some_and(|e| {
                e.gateway_ip != GATEWAY_EXCLUDED
                    && e.gateway_ip != GATEWAY_NOT_FOUND
                    && self
                        .st
                        .endpoints
                        .get(&s)
                        .is_some_and(|ep| ep.1 == e.origin_identity)
            });
            if reaches && g.octets()[..3] != [224, 0, 0] {
                break;
            }
            pair = self.covered_pair();
        }
        pair
    }

    /// A valid datagram of an aimed pair, for a corner to be the one thing
    /// wrong with it: a TTL a router forwards, the group's MAC, the UDP
    /// checksum computed, a small payload.
    fn corner_desc(&mut self) -> Frame {
        let (s, g) = self.aimed_pair();
        let len = self.rng.range(0, 200);
        let payload = self.rng.bytes(len);
        let mut d = Frame::udp(s, g, &payload);
        d.ttl = if self.rng.percent(80) {
            64
        } else {
            self.rng.range(2, 255) as u8
        };
        d.id = self.rng.u16();
        d.sport = self.rng.u16();
        d.dport = self.rng.u16();
        d
    }

    /// IPv4 options (RFC 791) beyond the words a gateway forwards: record
    /// route, timestamps, loose and strict source routes, Router Alert
    /// (RFC 2113) with a value or of a wrong length, NOP and End of List
    /// around a Router Alert (Linux's ip_options_compile() clears what
    /// follows End of List), options that fill IHL 15, unknown types (RFC
    /// 4727's experimental ones among them); padded with End of List.
    fn ipv4_options(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.corner_desc();
        let r = &mut self.rng;
        let doc_addr = |r: &mut Rng| -> [u8; 4] {
            let host = r.u8();
            match r.below(3) {
                0 => [192, 0, 2, host],
                1 => [203, 0, 113, host],
                _ => [198, 51, 100, host],
            }
        };
        // Record route or a source route of `n` addresses; `filled` of
        // them recorded (the pointer past them).
        let route = |r: &mut Rng, t: u8, n: usize, filled: usize| {
            let mut o = vec![t, (3 + 4 * n) as u8, (4 + 4 * filled) as u8];
            for i in 0..n {
                if t == 7 && i >= filled {
                    o.extend_from_slice(&[0; 4]);
                } else {
                    o.extend_from_slice(&doc_addr(r));
                }
            }
            o
        };
        // A timestamp option (flag 0: stamps; 1: address and stamp; 3:
        // prespecified addresses) of `n` entries, none filled.
        let timestamp = |r: &mut Rng, n: usize| {
            let flag = r.pick(&[0u8, 1, 3]);
            let entry = if flag == 0 { 4 } else { 8 };
            let n = n.min(36 / entry);
            let mut o = vec![68, (4 + entry * n) as u8, 5, flag];
            for _ in 0..n {
                if flag == 3 {
                    o.extend_from_slice(&doc_addr(r));
                    o.extend_from_slice(&[0; 4]);
                } else {
                    o.extend(std::iter::repeat_n(0, entry));
                }
            }
            o
        };
        let ra = [0x94, 0x04, 0x00, 0x00];
        let (mut o, what) = match r.below(12) {
            0 => {
                let n = r.range(1, 9);
                let filled = if r.percent(70) { 0 } else { r.range(1, n) };
                (route(r, 7, n, filled), "v4_opt_rr")
            }
            1 => {
                let n = r.range(1, 9);
                (timestamp(r, n), "v4_opt_ts")
            }
            2 => {
                let n = r.range(1, 9);
                (route(r, 131, n, 0), "v4_opt_lsrr")
            }
            3 => {
                let n = r.range(1, 9);
                (route(r, 137, n, 0), "v4_opt_ssrr")
            }
            4 => {
                let any = r.u16() | 1;
                let v = r.pick(&[1u16, 2, 0xffff, any]).to_be_bytes();
                (vec![0x94, 0x04, v[0], v[1]], "v4_opt_ra_value")
            }
            5 => {
                let len = r.pick(&[0u8, 1, 2, 3, 5, 6, 8]);
                let mut o = vec![0x94, len];
                o.extend(std::iter::repeat_n(0, usize::from(len).saturating_sub(2)));
                (o, "v4_opt_ra_len")
            }
            6 => {
                // End of List, then a Router Alert: on a word of its own
                // or right behind.
                let eol = if r.percent(50) { 4 } else { r.range(1, 3) };
                let mut o = vec![0; eol];
                o.extend_from_slice(&ra);
                (o, "v4_opt_eol_ra")
            }
            7 => {
                let mut o = vec![1; r.range(1, 4)];
                o.extend_from_slice(&ra);
                (o, "v4_opt_nop_ra")
            }
            8 => {
                let mut o = ra.to_vec();
                o.extend(std::iter::repeat_n(0, r.range(1, 8)));
                (o, "v4_opt_ra_eol")
            }
            9 => {
                let mut o = vec![1; r.range(1, 7)];
                o.extend(std::iter::repeat_n(0, r.range(1, 5)));
                (o, "v4_opt_nop_eol")
            }
            10 => {
                // Options that fill the largest header, 40 bytes.
                let o = match r.below(4) {
                    0 => {
                        let mut o = Vec::with_capacity(40);
                        for _ in 0..10 {
                            o.extend_from_slice(&r.pick(&[ra, [1; 4], [0; 4]]));
                        }
                        o
                    }
                    1 => route(r, 7, 9, 0),
                    2 => timestamp(r, 9),
                    _ => route(r, 131, 9, 0),
                };
                (o, "v4_opt_ihl15")
            }
            _ => {
                // Experimental types (RFC 4727) of each class, security,
                // stream identifier.
                let any = r.u8() | 2;
                let t = r.pick(&[0x1e, 0x5e, 0x9e, 0xde, 130, 136, any]);
                let n = r.range(0, 8);
                let mut o = vec![t, (2 + n) as u8];
                o.extend_from_slice(&r.bytes(n));
                (o, "v4_opt_unknown")
            }
        };
        o.resize(o.len().div_ceil(4) * 4, 0);
        o.truncate(40);
        d.options = o;
        (Class::Ipv4Options, d.bytes(), vec![what])
    }

    /// A valid IPv4 datagram of an aimed pair with a layer-2 corner.
    fn l2_corner4(&mut self, real_path: bool) -> (Class, Vec<u8>, Vec<&'static str>) {
        let f = self.corner_desc().bytes();
        self.l2_corner(f, false, real_path)
    }

    /// Layer-2 corners of a valid frame `f` of either family (`v6`),
    /// addressed to its group's own MAC: another destination MAC (another
    /// host's, the node's veth's, broadcast, another group's, the other
    /// family's prefix, the group's with a bit off), or VLAN tags
    /// (priority-tagged, VIDs 1-4094, 802.1ad, QinQ with VID 0 outside
    /// and inside, double 802.1Q), which the real path's kernel takes the
    /// outer one of before tcx.
    pub(crate) fn l2_corner(
        &mut self,
        mut f: Vec<u8>,
        v6: bool,
        real_path: bool,
    ) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut muts = if v6 { vec!["v6_inner"] } else { Vec::new() };
        let own: [u8; 6] = f[..6].try_into().expect("a MAC");
        // The group's address bytes the MACs are made of.
        let g: Vec<u8> = if v6 {
            f[38..54].to_vec()
        } else {
            f[30..34].to_vec()
        };
        let r = &mut self.rng;
        if !r.percent(if real_path { 55 } else { 30 }) {
            let (mac, what) = match r.below(6) {
                0 => ([0x0a, 0x58, 0xc0, 0x00, 0x02, r.u8()], "l2_otherhost"),
                1 => (packet::HOST_MAC, "l2_host_mac"),
                2 => ([0xff; 6], "l2_broadcast"),
                3 => {
                    let mut m = if v6 {
                        [0x33, 0x33, r.u8(), r.u8(), r.u8(), r.u8()]
                    } else {
                        [0x01, 0x00, 0x5e, r.u8() & 0x7f, r.u8(), r.u8()]
                    };
                    if m == own {
                        m[5] ^= 1;
                    }
                    (m, "l2_other_group")
                }
                4 => {
                    let m = if v6 {
                        [0x01, 0x00, 0x5e, g[13] & 0x7f, g[14], g[15]]
                    } else {
                        [0x33, 0x33, g[0], g[1], g[2], g[3]]
                    };
                    (m, "l2_other_family")
                }
                _ => {
                    // One of the bits the group maps to (and, over IPv4,
                    // the one RFC 1112 keeps 0) flipped, or the last byte
                    // one off.
                    let mut m = own;
                    if r.percent(70) {
                        let bit = r.below(if v6 { 32 } else { 24 }) as usize;
                        m[5 - bit / 8] ^= 1 << (bit % 8);
                    } else {
                        m[5] = if r.percent(50) {
                            m[5].wrapping_add(1)
                        } else {
                            m[5].wrapping_sub(1)
                        };
                    }
                    (m, "l2_group_bits_off")
                }
            };
            f[..6].copy_from_slice(&mac);
            muts.push(what);
            return (Class::L2Corner, f, muts);
        }
        let vid = |r: &mut Rng| -> u16 {
            match r.below(4) {
                0 => 1,
                1 => 4094,
                _ => r.range(2, 4093) as u16,
            }
        };
        let pcp = |r: &mut Rng| -> u16 { (r.below(8) as u16) << 13 };
        let (tags, what): (Vec<(u16, u16)>, &'static str) = match r.below(8) {
            0 | 1 => (vec![(0x8100, pcp(r))], "vlan_prio_tag"),
            2 => (vec![(0x8100, pcp(r) | vid(r))], "vlan_vid"),
            3 => (vec![(0x88a8, pcp(r) | vid(r))], "vlan_8021ad"),
            4 | 5 => (vec![(0x88a8, pcp(r)), (0x8100, pcp(r))], "qinq_prio_tag"),
            6 => (
                vec![(0x88a8, pcp(r)), (0x8100, pcp(r) | vid(r))],
                "qinq_outer_prio",
            ),
            _ => (
                vec![(0x8100, pcp(r) | vid(r)), (0x8100, pcp(r) | vid(r))],
                "vlan_double_8021q",
            ),
        };
        let mut t = f[..12].to_vec();
        for (tpid, tci) in tags {
            t.extend_from_slice(&tpid.to_be_bytes());
            t.extend_from_slice(&tci.to_be_bytes());
        }
        t.extend_from_slice(&f[12..]);
        muts.push(what);
        (Class::L2Corner, t, muts)
    }

    fn fragment(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid_desc();
        let total = self.rng.range(16, 2400);
        d.payload = self.rng.bytes(total - 8);
        // Fragment boundaries on 8-byte units, as RFC 791 has them.
        let units = total.div_ceil(8);
        let (start, end, what) = match self.rng.below(3) {
            0 => {
                let end = 8 * self.rng.range(1, units.max(2) - 1);
                (0, end.min(total), "first_fragment")
            }
            1 => {
                let s = self.rng.range(1, units.max(2) - 1);
                let e = self.rng.range(s, units);
                (8 * s, (8 * e).min(total).max(8 * s), "middle_fragment")
            }
            _ => {
                let s = self.rng.range(1, units.max(2) - 1);
                (8 * s, total, "last_fragment")
            }
        };
        let mut d = d.fragment(start, end);
        if start == 0 && end == total {
            d.more_fragments = true;
        }
        let mut f = d.bytes();
        let mut muts = vec![what];
        if self.rng.percent(30) {
            self.mutate(&mut f, &mut muts);
        }
        (Class::Fragment, f, muts)
    }

    /// A covered datagram built so that a checksum lands on the one's
    /// complement corner: the rewritten IPv4 or UDP checksum computes to
    /// zero, or the one going in is 0xffff (a valid header checksum's
    /// other representation; a UDP checksum that computed to zero).
    fn checksum_corner(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let entries: Vec<Entry> = self
            .st
            .policies
            .values()
            .filter(|e| !e.egress_ip.is_unspecified())
            .cloned()
            .collect();
        let (saddr, daddr, egress) = if entries.is_empty() {
            let (s, g) = self.covered_pair();
            (s, g, addr::EGRESS_IP)
        } else {
            let e = &entries[self.rng.below(entries.len() as u64) as usize];
            (e.saddr, inside(&mut self.rng, e.dst), e.egress_ip)
        };
        let len = self.rng.range(2, 300);
        let payload = self.rng.bytes(len);
        let mut d = Frame::udp(saddr, daddr, &payload);
        d.ttl = self.rng.range(2, 255) as u8;
        d.tos = self.rng.u8();
        d.sport = self.rng.u16();
        if self.rng.percent(20) {
            d.options = self.options();
        }
        let hl = 20 + d.options.len();
        let what = match self.rng.below(4) {
            0 => {
                // The rewritten header (TTL - 1, egress source) sums, but
                // for its ID, to f; an ID of ~f makes its checksum 0x0000.
                d.id = 0;
                let mut h = d.bytes()[14..14 + hl].to_vec();
                h[8] -= 1;
                h[12..16].copy_from_slice(&egress.octets());
                h[10..12].copy_from_slice(&[0, 0]);
                d.id = 0xffff - fold(ones_complement_sum(&h, 0));
                "ip_csum_out_0000"
            }
            1 => {
                d.id = 0;
                let mut h = d.bytes()[14..14 + hl].to_vec();
                h[10..12].copy_from_slice(&[0, 0]);
                d.id = 0xffff - fold(ones_complement_sum(&h, 0));
                "ip_csum_in_ffff"
            }
            2 => {
                d.payload[0..2].copy_from_slice(&[0, 0]);
                let w = 0xffff - udp_sum(egress, daddr, &d);
                d.payload[0..2].copy_from_slice(&w.to_be_bytes());
                "udp_csum_out_0000"
            }
            _ => {
                d.payload[0..2].copy_from_slice(&[0, 0]);
                let w = 0xffff - udp_sum(saddr, daddr, &d);
                d.payload[0..2].copy_from_slice(&w.to_be_bytes());
                "udp_csum_in_ffff"
            }
        };
        let mut f = d.bytes();
        if what == "ip_csum_in_ffff" {
            assert_eq!(f[24..26], [0, 0], "the header checksum computes to zero");
            f[24..26].copy_from_slice(&[0xff, 0xff]);
        }
        (Class::ChecksumCorner, f, vec![what])
    }

    fn truncated(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid_desc();
        if d.payload.len() > 200 {
            d.payload.truncate(200);
        }
        let f = d.bytes();
        let at = match self.rng.below(3) {
            0 => self.rng.range(0, 34.min(f.len())),
            _ => self.rng.range(0, f.len()),
        };
        (Class::Truncated, f[..at].to_vec(), vec!["truncate"])
    }

    /// A valid frame cut at every offset, from nothing to the whole frame.
    pub fn truncation_sweep(&mut self) -> Vec<Case> {
        let (s, g) = self.covered_pair();
        let len = self.rng.range(0, 40);
        let payload = self.rng.bytes(len);
        let mut d = Frame::udp(s, g, &payload);
        if self.rng.percent(50) {
            d.options = self.options();
        }
        let f = d.bytes();
        (0..=f.len())
            .map(|at| self.finish(Class::TruncationSweep, f[..at].to_vec(), Vec::new()))
            .collect()
    }

    fn never_egress(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid_desc();
        let what = match self.rng.below(3) {
            0 => {
                d.daddr = Ipv4Addr::new(224, 0, 0, self.rng.u8());
                "224.0.0.x"
            }
            1 => {
                d.proto = packet::PROTO_IGMP;
                "igmp"
            }
            _ => {
                d.proto = packet::PROTO_PIM;
                "pim"
            }
        };
        if self.rng.percent(50) && d.daddr.octets()[..3] != [224, 0, 0] {
            let (s, g) = self.covered_pair();
            d.saddr = s;
            d.daddr = g;
        }
        d.dst_mac = packet::group_mac(d.daddr);
        let mut f = d.bytes();
        let mut muts = vec![what];
        if self.rng.percent(25) {
            self.mutate(&mut f, &mut muts);
        }
        (Class::NeverEgress, f, muts)
    }

    fn vlan(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut inner = if self.rng.percent(70) {
            let (s, g) = self.covered_pair();
            let len = self.rng.range(0, 300);
            let payload = self.rng.bytes(len);
            Frame::udp(s, g, &payload).bytes()
        } else {
            self.valid_desc().bytes()
        };
        let mut muts = Vec::new();
        if self.rng.percent(20) {
            self.mutate(&mut inner, &mut muts);
        }
        let tags: &[(u16, &'static str)] = match self.rng.below(5) {
            0 | 1 => &[(0x8100, "802.1Q")],
            2 => &[(0x88a8, "802.1ad")],
            3 => &[(0x88a8, "802.1ad"), (0x8100, "802.1Q")],
            _ => &[(0x8100, "802.1Q"), (0x8100, "802.1Q")],
        };
        if inner.len() < 12 {
            return (Class::Vlan, inner, muts);
        }
        let mut f = inner[..12].to_vec();
        for &(tpid, name) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(self.rng.u16() & 0xefff).to_be_bytes());
            muts.push(name);
        }
        f.extend_from_slice(&inner[12..]);
        if self.rng.percent(15) {
            let at = self.rng.range(12, f.len());
            f.truncate(at);
            muts.push("truncate");
        }
        (Class::Vlan, f, muts)
    }

    fn ipv6(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let len = self.rng.range(0, 400);
        let mut v6 = vec![0x60, 0, 0, 0];
        v6.extend_from_slice(&((8 + len) as u16).to_be_bytes());
        v6.extend_from_slice(&[17, 64]);
        v6.extend_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b,
        ]);
        // ff3e::/96 SSM, with bytes that an IPv4 reading would take for a
        // covered group.
        let g = self.group().octets();
        v6.extend_from_slice(&[0xff, 0x3e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        v6.extend_from_slice(&g);
        v6.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89]);
        v6.extend_from_slice(&((8 + len) as u16).to_be_bytes());
        v6.extend_from_slice(&[0, 0]);
        v6.extend_from_slice(&self.rng.bytes(len));
        let mut f = packet::raw_frame(packet::ETH_P_IPV6, &v6);
        let mut muts = Vec::new();
        if self.rng.percent(15) {
            let at = self.rng.range(14, f.len());
            f.truncate(at);
            muts.push("truncate");
        }
        (Class::Ipv6, f, muts)
    }

    fn arp(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
        arp.extend_from_slice(&packet::POD_MAC);
        arp.extend_from_slice(&self.source().octets());
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&self.group().octets());
        if self.rng.percent(50) {
            arp.resize(46, 0);
        }
        (
            Class::Arp,
            packet::raw_frame(packet::ETH_P_ARP, &arp),
            Vec::new(),
        )
    }

    fn other_ethertype(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let et = match self.rng.below(4) {
            // 802.3 length field
            0 => self.rng.u16() % 0x0600,
            1 => self
                .rng
                .pick(&[0x86dd, 0x0806, 0x8847, 0x88cc, 0x9100, 0x0801]),
            _ => self.rng.u16(),
        };
        let et = if et == 0x0800 { 0x0801 } else { et };
        // An IPv4 multicast datagram behind a type that is not IPv4.
        let body = self.valid_desc().bytes()[14..].to_vec();
        (
            Class::OtherEthertype,
            packet::raw_frame(et, &body),
            Vec::new(),
        )
    }

    fn random_len(&mut self) -> usize {
        match self.rng.below(100) {
            0..=4 => self.rng.range(0, 13),
            5..=29 => self.rng.range(14, 60),
            30..=89 => self.rng.range(14, 600),
            90..=98 => self.rng.range(14, 3700),
            _ => self.rng.range(14, 9000),
        }
    }

    fn random_bytes(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let len = self.random_len();
        (Class::RandomBytes, self.rng.bytes(len), Vec::new())
    }

    /// Random bytes behind an IPv4 ethertype and a plausible first byte,
    /// addressed at the state now and then.
    fn random_ipv4(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let len = self.random_len().max(14);
        let mut f = self.rng.bytes(len);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let mut muts = Vec::new();
        if f.len() > 14 && self.rng.percent(70) {
            f[14] = 0x40 | (f[14] & 0x0f);
            muts.push("version4");
        }
        if f.len() >= 34 && self.rng.percent(60) {
            let (s, g) = self.covered_pair();
            f[26..30].copy_from_slice(&s.octets());
            f[30..34].copy_from_slice(&g.octets());
            muts.push("addressed");
        }
        if f.len() >= 34 && self.rng.percent(50) {
            fix_ip_checksum(&mut f);
            muts.push("ip_csum_fixed");
        }
        (Class::RandomIpv4, f, muts)
    }

    fn mutated(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid_desc();
        if self.rng.percent(60) {
            let (s, g) = self.covered_pair();
            d.saddr = s;
            d.daddr = g;
            d.dst_mac = packet::group_mac(g);
        }
        let mut f = d.bytes();
        let mut muts = Vec::new();
        self.mutate(&mut f, &mut muts);
        (Class::Mutated, f, muts)
    }

    /// One to three structure-aware mutations; the header checksum is then
    /// mostly made right again, so that the checks behind it are reached.
    fn mutate(&mut self, f: &mut Vec<u8>, muts: &mut Vec<&'static str>) {
        let n = self.rng.range(1, 3);
        let mut fix = self.rng.percent(80);
        let mut corrupt = false;
        for _ in 0..n {
            if f.len() < 34 {
                break;
            }
            let hl = usize::from(f[14] & 0x0f) * 4;
            let l4 = 14 + hl;
            let r = &mut self.rng;
            match r.below(18) {
                0 => {
                    f[14] = (f[14] & 0xf0) | r.below(16) as u8;
                    muts.push("ihl");
                }
                1 => {
                    f[14] = ((r.below(16) as u8) << 4) | (f[14] & 0x0f);
                    muts.push("version");
                }
                2 => {
                    let actual = (f.len() - 14) as u16;
                    let tot = match r.below(9) {
                        0 => 0,
                        1 => (hl as u16).wrapping_sub(1),
                        2 => hl as u16,
                        3 => hl as u16 + r.below(8) as u16,
                        4 => actual.wrapping_sub(1 + r.below(8) as u16),
                        5 => actual + 1,
                        6 => actual + r.below(2000) as u16,
                        7 => 0xffff,
                        _ => r.u16(),
                    };
                    f[16..18].copy_from_slice(&tot.to_be_bytes());
                    muts.push("tot_len");
                }
                3 if l4 + 8 <= f.len() => {
                    let cur = u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]);
                    let ulen = match r.below(7) {
                        0 => 0,
                        1 => 7,
                        2 => 8,
                        3 => cur.wrapping_sub(1),
                        4 => cur.wrapping_add(1),
                        5 => cur.wrapping_add(r.below(64) as u16),
                        _ => r.u16(),
                    };
                    f[l4 + 4..l4 + 6].copy_from_slice(&ulen.to_be_bytes());
                    muts.push("udp_len");
                }
                4 => {
                    let ff = match r.below(7) {
                        0 => 0x2000,
                        1 => 0x2000 | (r.u16() & 0x1fff),
                        2 => r.u16() & 0x1fff,
                        3 => 1,
                        4 => 0x4000,
                        5 => 0x8000,
                        _ => r.u16(),
                    };
                    f[20..22].copy_from_slice(&ff.to_be_bytes());
                    muts.push("frag_off");
                }
                5 => {
                    let any = r.u8();
                    f[22] = r.pick(&[0, 1, 2, 255, any]);
                    muts.push("ttl");
                }
                6 if l4 + 8 <= f.len() => {
                    let cur = u16::from_be_bytes([f[l4 + 6], f[l4 + 7]]);
                    let any = r.u16();
                    let c = r.pick(&[0, 0xffff, cur ^ 1, cur.wrapping_add(1), any]);
                    f[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
                    muts.push("udp_csum");
                }
                7 => {
                    corrupt = true;
                    fix = false;
                    muts.push("bad_ip_csum");
                }
                8 => {
                    let most = if r.percent(90) { 64 } else { 1500 };
                    let n = r.range(1, most);
                    let tail = r.bytes(n);
                    f.extend_from_slice(&tail);
                    muts.push("trailing_bytes");
                }
                9 => {
                    let et: u16 = r.pick(&[0x8100, 0x88a8, 0x86dd, 0x0806, 0x0600, 0x05dc, 0x0801]);
                    f[12..14].copy_from_slice(&et.to_be_bytes());
                    muts.push("ethertype");
                }
                10 => {
                    let any = r.u8();
                    f[23] = r.pick(&[17, 17, 2, 103, 6, 1, 0, 255, any]);
                    muts.push("proto");
                }
                11 => {
                    let s = self.source();
                    f[26..30].copy_from_slice(&s.octets());
                    muts.push("saddr");
                }
                12 => {
                    let g = self.group();
                    f[30..34].copy_from_slice(&g.octets());
                    muts.push("daddr");
                }
                13 => {
                    let end = f.len().min(14 + 68);
                    for _ in 0..r.range(1, 4) {
                        let at = r.range(14, end - 1);
                        f[at] ^= 1 << r.below(8);
                    }
                    muts.push("bit_flips");
                }
                14 => {
                    let at = r.range(0, f.len());
                    f.truncate(at);
                    muts.push("truncate");
                }
                15 => {
                    // Options appear or grow: IHL up, bytes inserted.
                    let words = r.range(1, 10);
                    let cur = usize::from(f[14] & 0x0f);
                    let new = (cur + words).min(15);
                    let add = (new - cur) * 4;
                    let at = (14 + cur * 4).min(f.len());
                    let opts = r.bytes(add);
                    f.splice(at..at, opts);
                    f[14] = (f[14] & 0xf0) | new as u8;
                    let tot = u16::from_be_bytes([f[16], f[17]]).wrapping_add(add as u16);
                    f[16..18].copy_from_slice(&tot.to_be_bytes());
                    muts.push("options");
                }
                16 => {
                    f[15] = r.u8();
                    f[18..20].copy_from_slice(&r.u16().to_be_bytes());
                    muts.push("tos_id");
                }
                _ => {
                    let mac = r.bytes(12);
                    f[..12].copy_from_slice(&mac);
                    muts.push("macs");
                }
            }
        }
        if fix {
            fix_ip_checksum(f);
        }
        if corrupt && f.len() >= 26 {
            let x = (self.rng.u16() | 1).to_be_bytes();
            f[24] ^= x[0];
            f[25] ^= x[1];
        }
    }
}

/// The folded one's complement sum of `d`'s UDP datagram (checksum field
/// zero) and its pseudo-header with source `saddr`.
fn udp_sum(saddr: Ipv4Addr, daddr: Ipv4Addr, d: &Frame) -> u16 {
    let mut z = d.clone();
    z.udp_csum = UdpCsum::Zero;
    let seg = z.udp_datagram();
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&saddr.octets());
    pseudo.extend_from_slice(&daddr.octets());
    pseudo.extend_from_slice(&[0, packet::PROTO_UDP]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    fold(ones_complement_sum(&seg, ones_complement_sum(&pseudo, 0)))
}

/// Recompute the IPv4 header checksum when the header fits the frame.
pub fn fix_ip_checksum(f: &mut [u8]) {
    if f.len() < 34 {
        return;
    }
    let hl = (usize::from(f[14] & 0x0f) * 4).max(20);
    if 14 + hl > f.len() {
        return;
    }
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&f[14..14 + hl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}
