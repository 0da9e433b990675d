//! The IPv6 half of the generator: map entries for the IPv6 policy trie
//! and endpoints, and frames from valid SSM UDP to every corner of the
//! fixed header and the extension-header chain, aimed at the state's own
//! pods and groups.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::Ipv6Network;

use crate::common::packet::{
    group_mac6, raw_frame, udp6_checksum, udp6_folded_sum, Ext, Frame6, UdpCsum,
};
use crate::gen::{Class, Env, Gen, ID_A, ID_B, ID_C, ID_CTL, ID_WRONG};
use crate::model::{Entry6, State, GATEWAY_EXCLUDED, GATEWAY_NOT_FOUND, IDENTITY_WORLD};
use crate::model6::{
    walk, ETH_P_IPV6, L3_END, NH_AH, NH_DEST_OPTS, NH_FRAGMENT, NH_HOP_BY_HOP, NH_ICMPV6, NH_NONE,
    NH_PIM, NH_ROUTING, NH_UDP,
};
use crate::rng::Rng;

/// IPv6 addresses, all in 2001:db8::/32 (pods mirror their IPv4
/// 198.51.100.<n>); groups in ff3e::/16 except where the point is another
/// scope.
pub mod addr6 {
    use std::net::Ipv6Addr;

    const fn doc(subnet: u16, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, subnet, 0, 0, 0, 0, host)
    }
    pub const POD_A: Ipv6Addr = doc(0x100, 0x11);
    pub const POD_B: Ipv6Addr = doc(0x100, 0x12);
    pub const POD_C: Ipv6Addr = doc(0x100, 0x13);
    /// Covered by policies, but no endpoint on this node.
    pub const UNKNOWN_POD: Ipv6Addr = doc(0x100, 0x99);
    /// The pod of the real-path stage's IPv6 positive control.
    pub const POD_CTL: Ipv6Addr = doc(0x100, 0x200);
    pub const EGRESS_IP: Ipv6Addr = doc(0x203, 0x10);
    pub const EGRESS_IP2: Ipv6Addr = doc(0x203, 0x200);
    pub const CONTROL_GROUP: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8fff, 1);
}

fn net6(a: &str, prefix: u8) -> Ipv6Network {
    Ipv6Network::new(a.parse().expect("IPv6 address"), prefix).expect("prefix")
}

/// Destination prefixes the states draw their IPv6 entries from: SSM
/// (RFC 4607) and inside it, ASM of site and global scope, all of ff00::/8,
/// and never-egress scopes a policy may name but must not make leave.
const PREFIXES6: [(&str, u8); 12] = [
    ("ff3e::", 96),
    ("ff3e::8000:0", 112),
    ("ff3e::8000:1", 128),
    ("ff3e::1:0", 112),
    ("ff3e::", 16),
    ("ff35::", 96),
    ("ff05::", 16),
    ("ff0e::", 16),
    ("ff00::", 8),
    ("ff3e::", 32),
    ("ff02::", 16),
    ("ff12::", 16),
];

/// The IPv6 entries of the hand-written reference state, mirroring the
/// IPv4 ones (and a link-local prefix a policy names in vain).
pub fn fixed_entries(st: &mut State, env: &Env) {
    use crate::gen::addr::{OTHER_NODE, REMOTE_GW, THIS_NODE};
    use addr6::{POD_A, POD_B, POD_C, POD_CTL, UNKNOWN_POD};
    let (uplink0, uplink1, uplink2) = (env.uplinks[0].0, env.uplinks[1].0, env.uplinks[2].0);
    st.endpoints6.insert(POD_A, (env.lxc_a, ID_A));
    st.endpoints6.insert(POD_B, (env.lxc_b, ID_B));
    st.endpoints6.insert(POD_C, (env.lxc_a, ID_C));
    st.endpoints6.insert(POD_CTL, (env.lxc_a, ID_CTL));
    let (here, remote) = (THIS_NODE, REMOTE_GW);
    let (excluded, not_found, gone) = (GATEWAY_EXCLUDED, GATEWAY_NOT_FOUND, env.vanished);
    let p = |saddr, dst: &str, gateway_ip, egress_ifindex, policy_id, node, ident| Entry6 {
        saddr,
        dst: dst.parse().expect("CIDR"),
        egress_ip: addr6::EGRESS_IP,
        gateway_ip,
        egress_ifindex,
        policy_id,
        origin_node: node,
        origin_identity: ident,
    };
    let no_ip = |e: Entry6| Entry6 {
        egress_ip: Ipv6Addr::UNSPECIFIED,
        ..e
    };
    let ip2 = |e: Entry6| Entry6 {
        egress_ip: addr6::EGRESS_IP2,
        ..e
    };
    for entry in [
        p(POD_A, "ff3e::/96", here, uplink0, 101, remote, ID_A),
        p(POD_A, "ff3e::1:0/112", excluded, uplink0, 101, remote, ID_A),
        no_ip(p(POD_A, "ff3e::2:0/112", remote, 0, 102, remote, ID_A)),
        no_ip(p(POD_A, "ff3e::3:0/112", not_found, 0, 103, remote, ID_A)),
        no_ip(p(POD_A, "ff3e::4:0/112", here, uplink0, 104, remote, ID_A)),
        p(POD_A, "ff3e::5:0/112", here, env.lxc_b, 105, remote, ID_A),
        p(POD_A, "ff3e::6:0/112", here, gone, 106, remote, ID_A),
        p(POD_A, "ff3e::7:0/112", here, uplink1, 107, remote, ID_A),
        p(POD_A, "ff3e::8:0/112", here, uplink2, 108, remote, ID_A),
        no_ip(p(POD_A, "ff00::/8", OTHER_NODE, 0, 109, remote, ID_A)),
        p(POD_A, "ff02::/16", here, uplink0, 120, remote, ID_A),
        p(POD_A, "ff05::/16", here, uplink0, 121, remote, ID_A),
        ip2(p(POD_B, "ff3e::/96", here, uplink0, 110, OTHER_NODE, ID_B)),
        p(POD_B, "ff3e::1:0/112", here, uplink0, 111, OTHER_NODE, ID_A),
        no_ip(p(POD_C, "ff3e::/96", remote, 0, 112, here, ID_C)),
        p(UNKNOWN_POD, "ff3e::/96", here, uplink0, 113, remote, ID_A),
        p(
            POD_CTL,
            "ff3e::8fff:1/128",
            here,
            uplink0,
            114,
            remote,
            ID_CTL,
        ),
    ] {
        st.insert_policy6(entry);
    }
}

/// IPv6 endpoints and entries of a random state (drawn like the IPv4 ones).
pub fn random_entries(rng: &mut Rng, st: &mut State, env: &Env) {
    for (pod, ifindex, id, p) in [
        (addr6::POD_A, env.lxc_a, ID_A, 95),
        (addr6::POD_B, env.lxc_b, ID_B, 90),
        (addr6::POD_C, env.lxc_a, ID_C, 70),
    ] {
        if rng.percent(p) {
            let id = if rng.percent(8) { ID_WRONG } else { id };
            st.endpoints6.insert(pod, (ifindex, id));
        }
    }
    st.endpoints6.insert(addr6::POD_CTL, (env.lxc_a, ID_CTL));
    use crate::gen::addr::{OTHER_NODE, REMOTE_GW, STRANGER, THIS_NODE};
    let n = rng.range(2, 12);
    for _ in 0..n {
        let saddr = match rng.below(100) {
            0..=34 => addr6::POD_A,
            35..=54 => addr6::POD_B,
            55..=69 => addr6::POD_C,
            70..=79 => addr6::UNKNOWN_POD,
            80..=84 => addr6::POD_CTL,
            _ => Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, rng.u16() & 0xff),
        };
        let dst = if rng.percent(80) {
            let (a, p) = rng.pick(&PREFIXES6);
            net6(a, p)
        } else {
            let p = rng.range(8, 128) as u8;
            let mut o = rng.bytes(16);
            o[0] = 0xff;
            let a: [u8; 16] = o.try_into().expect("16 bytes");
            Ipv6Network::new(Ipv6Addr::from(a), p).expect("prefix")
        };
        let gateway_ip = match rng.below(100) {
            0..=34 => THIS_NODE,
            35..=54 => REMOTE_GW,
            55..=62 => OTHER_NODE,
            63..=66 => STRANGER,
            67..=82 => GATEWAY_NOT_FOUND,
            _ => GATEWAY_EXCLUDED,
        };
        let egress_ip = match rng.below(100) {
            0..=69 => addr6::EGRESS_IP,
            70..=84 => addr6::EGRESS_IP2,
            _ => Ipv6Addr::UNSPECIFIED,
        };
        let egress_ifindex = match rng.below(100) {
            0..=44 => env.uplinks[0].0,
            45..=59 => env.uplinks[1].0,
            60..=74 => env.uplinks[2].0,
            75..=82 => 0,
            83..=90 => env.vanished,
            _ => env.lxc_b,
        };
        let own = st.endpoints6.get(&saddr).map(|e| e.1).unwrap_or(ID_A);
        let origin_identity = match rng.below(100) {
            0..=79 => own,
            80..=89 => rng.pick(&[ID_A, ID_B, ID_C]),
            90..=94 => IDENTITY_WORLD,
            _ => rng.u32() & 0x00ff_ffff,
        };
        let origin_node = match rng.below(100) {
            0..=59 => REMOTE_GW,
            60..=79 => OTHER_NODE,
            80..=94 => THIS_NODE,
            _ => STRANGER,
        };
        st.insert_policy6(Entry6 {
            saddr,
            dst,
            egress_ip,
            gateway_ip,
            egress_ifindex,
            policy_id: rng.range(1, 40) as u32 + 100,
            origin_node,
            origin_identity,
        });
    }
}

/// Entries that let IPv6 packets out in a real-path state: its random
/// entries alone would see few leave.
pub fn add_working_entries(rng: &mut Rng, st: &mut State, env: &Env) {
    use crate::gen::addr::{REMOTE_GW, THIS_NODE, TUNNEL_PEERS};
    let here = st.node_ip == THIS_NODE;
    let pods = [(addr6::POD_A, ID_A), (addr6::POD_C, ID_C)];
    for (i, (dst, uplink)) in [
        (net6("ff3e::4000:0", 98), 2),
        (net6("ff3e::2000:0", 99), 1),
        (net6("ff3e::1000:0", 100), 0),
    ]
    .into_iter()
    .enumerate()
    {
        let (pod, id) = rng.pick(&pods);
        let local = here && i < 2;
        st.insert_policy6(Entry6 {
            saddr: pod,
            dst,
            egress_ip: addr6::EGRESS_IP,
            gateway_ip: if local {
                THIS_NODE
            } else {
                rng.pick(&TUNNEL_PEERS)
            },
            egress_ifindex: if local { env.uplinks[uplink].0 } else { 0 },
            policy_id: 150 + i as u32,
            origin_node: REMOTE_GW,
            origin_identity: id,
        });
    }
}

/// The IPv6 positive control's entry: through the uplink when this node is
/// the gateway, else through the tunnel.
pub fn add_control(st: &mut State, env: &Env) {
    use crate::gen::addr::{REMOTE_GW, THIS_NODE};
    st.endpoints6.insert(addr6::POD_CTL, (env.lxc_a, ID_CTL));
    let local = st.node_ip == THIS_NODE;
    st.insert_policy6(Entry6 {
        saddr: addr6::POD_CTL,
        dst: Ipv6Network::new(addr6::CONTROL_GROUP, 128).expect("prefix"),
        egress_ip: addr6::EGRESS_IP,
        gateway_ip: if local { THIS_NODE } else { REMOTE_GW },
        egress_ifindex: if local { env.uplinks[0].0 } else { 0 },
        policy_id: 199,
        origin_node: REMOTE_GW,
        origin_identity: ID_CTL,
    });
}

/// An address inside `dst`: its first, its last, or any.
pub fn inside6(rng: &mut Rng, dst: Ipv6Network) -> Ipv6Addr {
    let host_bits = 128 - u32::from(dst.prefix());
    let mask = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let host = match rng.below(4) {
        0 => 0,
        1 => mask,
        _ => (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) & mask,
    };
    Ipv6Addr::from(u128::from(dst.network()) | host)
}

/// A hop-by-hop (`kind` 0) or destination options header of `len` bytes
/// (a multiple of 8): PadN to fill, a Router Alert (RFC 2711) when asked,
/// now and then random option bytes.
fn options_hdr(rng: &mut Rng, kind: u8, len: usize, router_alert: bool) -> Ext {
    // The body: everything after the next-header byte.
    let mut b = vec![(len / 8 - 1) as u8];
    if router_alert {
        // Router Alert, MLD (value 0).
        b.extend_from_slice(&[0x05, 0x02, 0x00, 0x00]);
    }
    let body_len = len - 1;
    if rng.percent(10) {
        let n = body_len - b.len();
        b.extend_from_slice(&rng.bytes(n));
    } else {
        while b.len() < body_len {
            let left = body_len - b.len();
            if left == 1 {
                b.push(0); // Pad1
            } else {
                b.push(1); // PadN
                b.push((left - 2) as u8);
                b.extend(std::iter::repeat_n(0, left - 2));
            }
        }
    }
    Ext { kind, body: b }
}

/// A routing header (type `rtype`) with `addrs` addresses and
/// `segments_left`.
fn routing_hdr(rng: &mut Rng, rtype: u8, segments_left: u8, addrs: usize) -> Ext {
    let mut body = vec![(2 * addrs) as u8, rtype, segments_left, 0, 0, 0, 0];
    for _ in 0..addrs {
        let host = rng.u16();
        body.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0, 0, 0, 0, host).octets());
    }
    Ext {
        kind: NH_ROUTING,
        body,
    }
}

/// An authentication header with `icv_words` words of ICV: (hdrlen + 2) * 4
/// bytes, hdrlen = 1 + icv_words.
fn ah_hdr(rng: &mut Rng, icv_words: usize) -> Ext {
    let mut body = vec![(1 + icv_words) as u8, 0, 0];
    body.extend_from_slice(&rng.bytes(8 + 4 * icv_words));
    Ext { kind: NH_AH, body }
}

impl Gen<'_> {
    /// A source for an IPv6 frame: the state's pods mostly.
    fn source6(&mut self) -> Ipv6Addr {
        let st = self.st;
        match self.rng.below(100) {
            0..=84 => {
                let mut srcs: Vec<Ipv6Addr> = st.endpoints6.keys().copied().collect();
                srcs.extend(st.policies6.values().map(|e| e.saddr));
                srcs.push(addr6::UNKNOWN_POD);
                self.rng.pick(&srcs)
            }
            85..=94 => Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, self.rng.u16() & 0xff),
            _ => Ipv6Addr::from(u128::from(self.rng.next_u64()) << 64 | 1),
        }
    }

    /// A group: covered by an entry mostly, then every other scope.
    fn group6(&mut self) -> Ipv6Addr {
        let r = &mut self.rng;
        let low = r.u32();
        let [a, b, c, d] = low.to_be_bytes();
        let tail = |hi: u16| {
            Ipv6Addr::new(
                hi,
                0,
                0,
                0,
                0,
                0,
                u16::from_be_bytes([a, b]),
                u16::from_be_bytes([c, d]),
            )
        };
        match r.below(100) {
            0..=59 => {
                let n = self.st.policies6.len() as u64;
                if n == 0 {
                    return tail(0xff3e);
                }
                let e = self
                    .st
                    .policies6
                    .values()
                    .nth(self.rng.below(n) as usize)
                    .expect("an entry")
                    .dst;
                inside6(&mut self.rng, e)
            }
            60..=69 => tail(0xff3e),
            70..=74 => tail(0xff02),
            75..=77 => tail(0xff01),
            78..=79 => tail(0xff12),
            80..=81 => tail(0xff00),
            82..=85 => tail(0xff05),
            86..=89 => tail(0xff00 | (r.u16() & 0xff)),
            90..=94 => Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, r.u16()),
            _ => Ipv6Addr::from(u128::from(r.next_u64()) << 64 | u128::from(r.next_u64())),
        }
    }

    /// A (source, group) pair an IPv6 entry covers, when there is one.
    fn covered_pair6(&mut self) -> (Ipv6Addr, Ipv6Addr) {
        let n = self.st.policies6.len() as u64;
        if n == 0 {
            return (self.source6(), self.group6());
        }
        let e = self
            .st
            .policies6
            .values()
            .nth(self.rng.below(n) as usize)
            .expect("an entry")
            .clone();
        (e.saddr, inside6(&mut self.rng, e.dst))
    }

    /// A valid IPv6 UDP datagram as a pod would send it; covered half the
    /// time.
    fn valid6_desc(&mut self) -> Frame6 {
        let (s, g) = if self.rng.percent(50) {
            self.covered_pair6()
        } else {
            (self.source6(), self.group6())
        };
        let len = self.payload_len6();
        let payload = self.rng.bytes(len);
        let mut f = Frame6::udp(s, g, &payload);
        f.hop_limit = self.ttl();
        f.flow_label = self.rng.u32();
        f.sport = self.rng.u16();
        f.dport = self.rng.u16();
        if self.rng.percent(8) {
            f.udp_csum = UdpCsum::Zero;
        }
        if self.rng.percent(30) {
            f.ext = self.valid_chain();
        }
        f
    }

    /// Payloads from empty to what the jumbo veth carries (past about 3.7
    /// KB for the real path only).
    fn payload_len6(&mut self) -> usize {
        let r = &mut self.rng;
        match r.below(1000) {
            0..=599 => r.range(0, 64),
            600..=849 => r.range(65, 512),
            850..=964 => r.range(513, 1452),
            965..=995 => r.range(1453, 3600),
            _ => r.range(3601, 9000 - 62),
        }
    }

    /// A chain a router forwards: hop-by-hop first or not at all,
    /// destination options, routing with no segments left, AH, an atomic
    /// fragment; at most MAX_EXT.
    fn valid_chain(&mut self) -> Vec<Ext> {
        let mut c = Vec::new();
        if self.rng.percent(40) {
            let len = 8 * self.rng.range(1, 3);
            c.push(options_hdr(&mut self.rng, NH_HOP_BY_HOP, len, false));
        }
        for _ in 0..self.rng.range(0, 4) {
            match self.rng.below(4) {
                0 => {
                    let len = 8 * self.rng.range(1, 4);
                    c.push(options_hdr(&mut self.rng, NH_DEST_OPTS, len, false));
                }
                1 => {
                    let n = self.rng.range(0, 3);
                    let rt = self.rng.pick(&[0, 2, 3, 4]);
                    c.push(routing_hdr(&mut self.rng, rt, 0, n));
                }
                2 => {
                    let w = self.rng.range(0, 4);
                    c.push(ah_hdr(&mut self.rng, w));
                }
                _ => {
                    let id = self.rng.u32();
                    c.push(Ext::fragment(0, false, id));
                }
            }
        }
        c
    }

    /// The next IPv6 case, of a class drawn with the weights of the stage.
    pub fn case6(&mut self, real_path: bool) -> (Class, Vec<u8>, Vec<&'static str>) {
        let roll = self.rng.below(1000);
        if real_path {
            return match roll {
                0..=149 => self.vlan6(),
                150..=249 => self.v6_truncated(),
                250..=349 => self.v6_large(),
                350..=549 => self.v6_header(),
                550..=699 => self.v6_valid(),
                700..=799 => self.v6_chain(),
                800..=879 => self.v6_fragment(),
                880..=959 => self.v6_never_egress(),
                _ => self.v6_checksum_corner(),
            };
        }
        match roll {
            0..=159 => self.v6_valid(),
            160..=399 => self.v6_header(),
            400..=629 => self.v6_chain(),
            630..=729 => self.v6_fragment(),
            730..=819 => self.v6_never_egress(),
            820..=869 => self.v6_checksum_corner(),
            870..=929 => self.v6_truncated(),
            930..=969 => self.vlan6(),
            _ => self.v6_random(),
        }
    }

    fn v6_valid(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid6_desc();
        if self.rng.percent(50) {
            let (s, g) = self.covered_pair6();
            d.saddr = s;
            d.daddr = g;
            d.dst_mac = group_mac6(g);
        }
        let mut muts = Vec::new();
        if !d.ext.is_empty() {
            muts.push("v6_ext_chain_valid");
        }
        if d.udp_csum == UdpCsum::Zero {
            muts.push("v6_udp_csum_zero");
        }
        (Class::Ipv6Valid, d.bytes(), muts)
    }

    /// A large datagram: through the jumbo uplink now and then, else
    /// covered so that its size is what decides.
    fn v6_large(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid6_desc();
        let len = self.rng.range(1400, 9000 - 62);
        d.payload = self.rng.bytes(len);
        let jumbo: Vec<Entry6> = self
            .st
            .policies6
            .values()
            .filter(|e| e.egress_ifindex == self.env.uplinks[2].0)
            .cloned()
            .collect();
        let (s, g) = if !jumbo.is_empty() && self.rng.percent(50) {
            let e = &jumbo[self.rng.below(jumbo.len() as u64) as usize];
            (e.saddr, inside6(&mut self.rng, e.dst))
        } else {
            self.covered_pair6()
        };
        d.saddr = s;
        d.daddr = g;
        d.dst_mac = group_mac6(g);
        d.udp_csum = UdpCsum::Computed;
        (Class::Ipv6Valid, d.bytes(), vec!["v6_large"])
    }

    /// Mutations of the fixed header and the UDP header: version, payload
    /// length (0, too long, too short), hop limit, next header, addresses,
    /// UDP length and checksum, trailing bytes, truncation, bit flips.
    fn v6_header(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid6_desc();
        if self.rng.percent(70) {
            let (s, g) = self.covered_pair6();
            d.saddr = s;
            d.daddr = g;
            d.dst_mac = group_mac6(g);
        }
        let (mut f, l4) = (d.bytes(), d.l4_off());
        let mut muts = Vec::new();
        let fix_udp = self.rng.percent(50);
        for _ in 0..self.rng.range(1, 3) {
            self.mutate6(&mut f, l4, &mut muts);
        }
        if fix_udp && refresh_udp6(&mut f) {
            muts.push("v6_udp_csum_fixed");
        }
        (Class::Ipv6Mutated, f, muts)
    }

    fn mutate6(&mut self, f: &mut Vec<u8>, l4: usize, muts: &mut Vec<&'static str>) {
        if f.len() < L3_END {
            return;
        }
        let r = &mut self.rng;
        let udp = l4 + 8 <= f.len() && f[20] == NH_UDP;
        match r.below(15) {
            0 => {
                f[14] = ((r.below(16) as u8) << 4) | (f[14] & 0x0f);
                muts.push("v6_version");
            }
            1 => {
                let actual = (f.len() - L3_END) as u16;
                let plen = match r.below(8) {
                    0 => 0,
                    1 => actual + 1,
                    2 => actual + r.below(2000) as u16,
                    3 => actual.wrapping_sub(1 + r.below(8) as u16),
                    4 => r.below(8) as u16,
                    5 => 0xffff,
                    6 => actual.saturating_sub(8),
                    _ => r.u16(),
                };
                f[18..20].copy_from_slice(&plen.to_be_bytes());
                muts.push("v6_payload_len");
            }
            2 => {
                let any = r.u8();
                f[21] = r.pick(&[0, 1, 2, 255, any]);
                muts.push("v6_hop_limit");
            }
            3 => {
                let any = r.u8();
                f[20] = r.pick(&[
                    NH_UDP,
                    6,
                    NH_ICMPV6,
                    NH_NONE,
                    NH_PIM,
                    NH_HOP_BY_HOP,
                    NH_DEST_OPTS,
                    NH_ROUTING,
                    NH_FRAGMENT,
                    NH_AH,
                    4,
                    41,
                    any,
                ]);
                muts.push("v6_next_header");
            }
            4 => {
                let s = self.source6();
                f[22..38].copy_from_slice(&s.octets());
                muts.push("v6_saddr");
            }
            5 => {
                let g = self.group6();
                f[38..54].copy_from_slice(&g.octets());
                muts.push("v6_daddr");
            }
            6 if udp => {
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
                muts.push("v6_udp_len");
            }
            7 if udp => {
                let cur = u16::from_be_bytes([f[l4 + 6], f[l4 + 7]]);
                let any = r.u16();
                let c = r.pick(&[0, 0, 0xffff, cur ^ 1, cur.wrapping_add(1), any]);
                f[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
                muts.push("v6_udp_csum");
            }
            8 => {
                let most = if r.percent(90) { 64 } else { 1500 };
                let n = r.range(1, most);
                let tail = r.bytes(n);
                f.extend_from_slice(&tail);
                muts.push("v6_trailing_bytes");
            }
            9 => {
                let at = r.range(14, f.len());
                f.truncate(at);
                muts.push("v6_truncate");
            }
            10 => {
                let end = f.len().min(L3_END + 16);
                for _ in 0..r.range(1, 4) {
                    let at = r.range(14, end - 1);
                    f[at] ^= 1 << r.below(8);
                }
                muts.push("v6_bit_flips");
            }
            11 => {
                f[15] = r.u8();
                f[16..18].copy_from_slice(&r.u16().to_be_bytes());
                muts.push("v6_tclass_flow");
            }
            12 => {
                let et: u16 = r.pick(&[0x0800, 0x8100, 0x88a8, 0x86dc, 0x0806]);
                f[12..14].copy_from_slice(&et.to_be_bytes());
                muts.push("v6_ethertype");
            }
            13 => {
                // The source rewritten to another pod's or the egress IP,
                // with the frame otherwise right: forged sources.
                let s = r.pick(&[
                    addr6::POD_A,
                    addr6::POD_B,
                    addr6::POD_C,
                    addr6::UNKNOWN_POD,
                    addr6::EGRESS_IP,
                    addr6::POD_CTL,
                ]);
                f[22..38].copy_from_slice(&s.octets());
                muts.push("v6_forged_source");
            }
            _ => {
                let mac = r.bytes(12);
                f[..12].copy_from_slice(&mac);
                muts.push("v6_macs");
            }
        }
    }

    /// Extension-header chains, most of them broken in one way: hop-by-hop
    /// not first, routing with segments left, too many headers, a header
    /// that runs past the payload, an unknown or 59 next header, fragment
    /// headers anywhere, AH, destination options.
    fn v6_chain(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid6_desc();
        if self.rng.percent(75) {
            let (s, g) = self.covered_pair6();
            d.saddr = s;
            d.daddr = g;
            d.dst_mac = group_mac6(g);
        }
        d.ext = self.valid_chain();
        let mut muts = vec![];
        let what = self.rng.below(11);
        match what {
            0 => {
                // Hop-by-hop after another header.
                let len = 8 * self.rng.range(1, 2);
                let hbh = options_hdr(&mut self.rng, NH_HOP_BY_HOP, len, false);
                if d.ext.is_empty() {
                    d.ext
                        .push(options_hdr(&mut self.rng, NH_DEST_OPTS, 8, false));
                }
                let at = self.rng.range(1, d.ext.len());
                d.ext.insert(at, hbh);
                muts.push("v6_hop_by_hop_not_first");
            }
            1 => {
                let sl = self.rng.range(1, 3) as u8;
                let n = self.rng.range(1, 3);
                let rt = self.rng.pick(&[0, 2, 3, 4]);
                let rh = routing_hdr(&mut self.rng, rt, sl, n);
                let at = self.rng.range(0, d.ext.len());
                d.ext.insert(at, rh);
                muts.push("v6_routing_segments_left");
            }
            2 => {
                // Exactly MAX_EXT, or one more.
                let n = if self.rng.percent(50) { 8 } else { 9 };
                d.ext.clear();
                if self.rng.percent(50) {
                    d.ext
                        .push(options_hdr(&mut self.rng, NH_HOP_BY_HOP, 8, false));
                }
                while d.ext.len() < n {
                    let h = match self.rng.below(3) {
                        0 => options_hdr(&mut self.rng, NH_DEST_OPTS, 8, false),
                        1 => routing_hdr(&mut self.rng, 4, 0, 0),
                        _ => ah_hdr(&mut self.rng, 1),
                    };
                    d.ext.push(h);
                }
                muts.push(if n == 8 {
                    "v6_eight_headers"
                } else {
                    "v6_nine_headers"
                });
            }
            3 => {
                // A header whose length runs past the payload: the
                // datagram is cut inside the last header, or the last
                // header's length is too large.
                d.payload.truncate(self.rng.range(0, 16));
                d.ext
                    .push(options_hdr(&mut self.rng, NH_DEST_OPTS, 8, false));
                let (mut f, l4) = (d.bytes(), d.l4_off());
                // The last extension header's length byte.
                f[l4 - 8 + 1] = self.rng.range(2, 255) as u8;
                muts.push("v6_chain_past_payload");
                return (Class::Ipv6Chain, f, muts);
            }
            4 => {
                d.proto = NH_NONE;
                let n = self.rng.range(0, 40);
                d.payload = self.rng.bytes(n);
                muts.push("v6_no_next_header");
            }
            5 => {
                d.proto = self.rng.pick(&[6, 4, 41, 50, 135, 139, 140, 253, 254]);
                muts.push("v6_other_upper_layer");
            }
            6 => {
                let w = self.rng.range(0, 6);
                d.ext.push(ah_hdr(&mut self.rng, w));
                muts.push("v6_ah");
            }
            7 => {
                let len = 8 * self.rng.range(1, 32);
                d.ext
                    .push(options_hdr(&mut self.rng, NH_DEST_OPTS, len, false));
                muts.push("v6_dest_opts");
            }
            8 => {
                // Fragment header first or later in the chain, atomic or
                // a first fragment with M.
                let more = self.rng.percent(50);
                let id = self.rng.u32();
                let at = self.rng.range(0, d.ext.len());
                d.ext.insert(at, Ext::fragment(0, more, id));
                muts.push(if more {
                    "v6_frag_first_more"
                } else {
                    "v6_frag_atomic"
                });
            }
            9 => {
                // The payload length says the chain ends early.
                let (mut f, l4) = (d.bytes(), d.l4_off());
                let plen = (l4 - L3_END).saturating_sub(self.rng.range(0, 16)) as u16;
                f[18..20].copy_from_slice(&plen.to_be_bytes());
                muts.push("v6_payload_len_inside_chain");
                return (Class::Ipv6Chain, f, muts);
            }
            _ => {
                // A random next-header byte or length in the chain.
                let (mut f, l4) = (d.bytes(), d.l4_off());
                if l4 > L3_END {
                    let at = self.rng.range(L3_END, l4 - 1);
                    let any = self.rng.u8();
                    f[at] = self.rng.pick(&[0, 43, 44, 51, 60, 17, 58, 59, 103, any]);
                }
                muts.push("v6_chain_byte");
                return (Class::Ipv6Chain, f, muts);
            }
        }
        if d.ext.is_empty() {
            muts.push("v6_no_ext");
        }
        let f = d.bytes();
        (Class::Ipv6Chain, f, muts)
    }

    /// Fragments: first (M set), middle, last, atomic, each behind a chain
    /// now and then.
    fn v6_fragment(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid6_desc();
        if self.rng.percent(70) {
            let (s, g) = self.covered_pair6();
            d.saddr = s;
            d.daddr = g;
            d.dst_mac = group_mac6(g);
        }
        let total = self.rng.range(16, 2400);
        d.payload = self.rng.bytes(total - 8);
        let units = total.div_ceil(8);
        let (start, end, what) = match self.rng.below(4) {
            0 => {
                let end = 8 * self.rng.range(1, units.max(2) - 1);
                (0, end.min(total), "v6_first_fragment")
            }
            1 => {
                let s = self.rng.range(1, units.max(2) - 1);
                let e = self.rng.range(s, units);
                (8 * s, (8 * e).min(total).max(8 * s), "v6_middle_fragment")
            }
            2 => {
                let s = self.rng.range(1, units.max(2) - 1);
                (8 * s, total, "v6_last_fragment")
            }
            _ => (0, total, "v6_atomic_fragment"),
        };
        let d = d.fragment(start, end);
        let (mut f, l4) = (d.bytes(), d.l4_off());
        let mut muts = vec![what];
        if self.rng.percent(25) {
            self.mutate6(&mut f, l4, &mut muts);
        }
        (Class::Ipv6Fragment, f, muts)
    }

    /// Never egress whatever the policy says: scopes 0-2 (ff02::, ff01::,
    /// ff12::, ff00::), MLD behind a hop-by-hop Router Alert, PIM; and ICMPv6
    /// that is not MLD (which the policy decides).
    fn v6_never_egress(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid6_desc();
        let (s, g) = self.covered_pair6();
        d.saddr = s;
        d.daddr = g;
        let what = match self.rng.below(6) {
            0 => {
                let hi = self
                    .rng
                    .pick(&[0xff02, 0xff01, 0xff12, 0xff00, 0xff32, 0xff11]);
                let mut o = d.daddr.octets();
                o[..2].copy_from_slice(&u16::to_be_bytes(hi));
                d.daddr = Ipv6Addr::from(o);
                "v6_scope_below_site"
            }
            1 | 2 => {
                let t = self.rng.pick(&[130, 131, 132, 143]);
                d.ext = vec![options_hdr(&mut self.rng, NH_HOP_BY_HOP, 8, true)];
                d.proto = NH_ICMPV6;
                let mut icmp = vec![t, 0, 0, 0];
                icmp.extend_from_slice(&self.rng.bytes(20));
                d.payload = icmp;
                if self.rng.percent(40) {
                    d.daddr = self.rng.pick(&[
                        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16),
                        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                    ]);
                }
                "v6_mld"
            }
            3 => {
                d.proto = NH_PIM;
                let n = self.rng.range(4, 40);
                d.payload = self.rng.bytes(n);
                "v6_pim"
            }
            4 => {
                let t = self.rng.pick(&[128, 129, 133, 134, 135, 136, 1, 2]);
                d.ext = if self.rng.percent(50) {
                    vec![options_hdr(&mut self.rng, NH_HOP_BY_HOP, 8, true)]
                } else {
                    Vec::new()
                };
                d.proto = NH_ICMPV6;
                let mut icmp = vec![t, 0, 0, 0];
                icmp.extend_from_slice(&self.rng.bytes(20));
                d.payload = icmp;
                "v6_icmpv6_not_mld"
            }
            _ => {
                // MLD behind a chain that cannot be walked: not exempt.
                let t = self.rng.pick(&[130, 131, 132, 143]);
                d.ext = vec![
                    options_hdr(&mut self.rng, NH_DEST_OPTS, 8, false),
                    options_hdr(&mut self.rng, NH_HOP_BY_HOP, 8, true),
                ];
                d.proto = NH_ICMPV6;
                let mut icmp = vec![t, 0, 0, 0];
                icmp.extend_from_slice(&self.rng.bytes(20));
                d.payload = icmp;
                "v6_mld_bad_chain"
            }
        };
        d.dst_mac = group_mac6(d.daddr);
        let (mut f, l4) = (d.bytes(), d.l4_off());
        let mut muts = vec![what];
        if self.rng.percent(20) {
            self.mutate6(&mut f, l4, &mut muts);
        }
        (Class::Ipv6NeverEgress, f, muts)
    }

    /// A covered datagram built so that the rewritten UDP checksum computes
    /// to zero (sent as 0xffff), or the one going in is 0xffff.
    fn v6_checksum_corner(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let entries: Vec<Entry6> = self
            .st
            .policies6
            .values()
            .filter(|e| !e.egress_ip.is_unspecified())
            .cloned()
            .collect();
        let (s, g, egress) = if entries.is_empty() {
            let (s, g) = self.covered_pair6();
            (s, g, addr6::EGRESS_IP)
        } else {
            let e = &entries[self.rng.below(entries.len() as u64) as usize];
            (e.saddr, inside6(&mut self.rng, e.dst), e.egress_ip)
        };
        let len = self.rng.range(2, 300);
        let payload = self.rng.bytes(len);
        let mut d = Frame6::udp(s, g, &payload);
        d.hop_limit = self.rng.range(2, 255) as u8;
        d.sport = self.rng.u16();
        if self.rng.percent(30) {
            d.ext = self.valid_chain();
        }
        let out = self.rng.percent(50);
        // With the first payload word w: the sum over the datagram and the
        // pseudo-header of `src` is S + w; a checksum of 0 needs S + w to
        // be 0xffff.
        d.payload[0..2].copy_from_slice(&[0, 0]);
        let mut z = d.clone();
        z.udp_csum = UdpCsum::Zero;
        let seg = z.udp_datagram();
        let src = if out { egress } else { s };
        let w = 0xffff - udp6_folded_sum(src, g, &seg);
        d.payload[0..2].copy_from_slice(&w.to_be_bytes());
        let what = if out {
            "v6_udp_csum_out_0000"
        } else {
            "v6_udp_csum_in_ffff"
        };
        (Class::Ipv6ChecksumCorner, d.bytes(), vec![what])
    }

    fn v6_truncated(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.valid6_desc();
        if d.payload.len() > 200 {
            d.payload.truncate(200);
        }
        let f = d.bytes();
        let at = match self.rng.below(3) {
            0 => self.rng.range(0, 54.min(f.len())),
            _ => self.rng.range(0, f.len()),
        };
        (Class::Ipv6Truncated, f[..at].to_vec(), vec!["v6_truncate"])
    }

    /// An IPv6 frame behind one or two VLAN tags.
    fn vlan6(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let inner = if self.rng.percent(70) {
            let (s, g) = self.covered_pair6();
            let len = self.rng.range(0, 300);
            let payload = self.rng.bytes(len);
            Frame6::udp(s, g, &payload).bytes()
        } else {
            self.valid6_desc().bytes()
        };
        let mut muts = vec!["v6_inner"];
        let tags: &[(u16, &'static str)] = match self.rng.below(4) {
            0 | 1 => &[(0x8100, "802.1Q")],
            2 => &[(0x88a8, "802.1ad")],
            _ => &[(0x88a8, "802.1ad"), (0x8100, "802.1Q")],
        };
        let mut f = inner[..12].to_vec();
        for &(tpid, name) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(self.rng.u16() & 0xefff).to_be_bytes());
            muts.push(name);
        }
        f.extend_from_slice(&inner[12..]);
        (Class::Vlan, f, muts)
    }

    /// Random bytes behind an IPv6 ethertype and version, addressed at the
    /// state now and then.
    fn v6_random(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let len = self.rng.range(14, 600);
        let mut body = self.rng.bytes(len);
        let mut muts = Vec::new();
        if !body.is_empty() && self.rng.percent(70) {
            body[0] = 0x60 | (body[0] & 0x0f);
            muts.push("v6_version6");
        }
        if body.len() >= 40 && self.rng.percent(60) {
            let (s, g) = self.covered_pair6();
            body[8..24].copy_from_slice(&s.octets());
            body[24..40].copy_from_slice(&g.octets());
            muts.push("v6_addressed");
        }
        (Class::Ipv6Random, raw_frame(ETH_P_IPV6, &body), muts)
    }

    /// A frame of the IPv6 positive control: covered, valid, must leave.
    pub fn control6(&mut self) -> Vec<u8> {
        let len = self.rng.range(0, 200);
        let payload = self.rng.bytes(len);
        let mut d = Frame6::udp(addr6::POD_CTL, addr6::CONTROL_GROUP, &payload);
        d.hop_limit = 64;
        d.bytes()
    }

    /// (source, group) of an IPv6 frame, for `finish`.
    pub fn addrs6(frame: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr)> {
        if frame.len() < L3_END {
            return None;
        }
        Some((crate::model6::saddr(frame), crate::model6::daddr(frame)))
    }

    /// The device and tunnel key an IPv6 frame is presented with: mostly
    /// its pod's, and the entry's origin.
    pub fn placement6(&mut self, frame: &[u8]) -> (u32, Option<(u32, Ipv4Addr)>) {
        use crate::gen::addr::{OTHER_NODE, REMOTE_GW, STRANGER, THIS_NODE};
        let (s, g) = Self::addrs6(frame).unwrap_or((Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED));
        let endpoint = self.st.endpoints6.get(&s).copied();
        let ifindex = match (self.rng.below(100), endpoint) {
            (0..=64, Some((ifindex, _))) => ifindex,
            (0..=79, _) => self.env.lxc_a,
            (80..=89, _) => self.env.lxc_b,
            _ => self.env.uplinks[0].0,
        };
        let entry = self.st.lookup6(s, g).cloned();
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
                (0..=79, _) => self.rng.pick(&[THIS_NODE, REMOTE_GW, OTHER_NODE]),
                (80..=92, _) => STRANGER,
                _ => Ipv4Addr::from(self.rng.u32()),
            };
            Some((vni, remote))
        };
        (ifindex, key)
    }
}

/// Recompute the UDP checksum of an unfragmented IPv6 UDP frame whose chain
/// walks and whose datagram fits: true when it did.
fn refresh_udp6(f: &mut [u8]) -> bool {
    if f.len() < L3_END || u16::from_be_bytes([f[12], f[13]]) != ETH_P_IPV6 {
        return false;
    }
    let Some(w) = walk(f) else {
        return false;
    };
    if w.proto != NH_UDP || w.frag.is_some() {
        return false;
    }
    let end = L3_END + usize::from(u16::from_be_bytes([f[18], f[19]]));
    if end > f.len() || w.l4_off + 8 > end {
        return false;
    }
    let mut seg = f[w.l4_off..end].to_vec();
    seg[6..8].copy_from_slice(&[0, 0]);
    let s = crate::model6::saddr(f);
    let g = crate::model6::daddr(f);
    let c = udp6_checksum(s, g, &seg);
    f[w.l4_off + 6..w.l4_off + 8].copy_from_slice(&c.to_be_bytes());
    true
}
