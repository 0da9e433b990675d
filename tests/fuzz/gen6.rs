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
    if rtype == 4 && addrs > 0 {
        // A segment routing header's Last Entry (RFC 8754 2).
        body[3] = (addrs - 1) as u8;
    }
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

/// Option types IANA's Destination and Hop-by-Hop Options registry
/// assigns (Pad1, PadN, Tunnel Encapsulation Limit, Router Alert, CALIPSO,
/// IOAM, Quick-Start, Path MTU, RPL, MPL, ILNP Nonce, Line-Identification,
/// Jumbo Payload, Home Address, DFF): not drawn as unknown ones.
const KNOWN_OPTS: [u8; 16] = [
    0x00, 0x01, 0x04, 0x05, 0x07, 0x11, 0x26, 0x30, 0x31, 0x63, 0x6d, 0x8b, 0x8c, 0xc2, 0xc9, 0xee,
];

/// A Router Alert option (RFC 2711) with `value`.
fn router_alert(value: u16) -> [u8; 4] {
    let v = value.to_be_bytes();
    [0x05, 0x02, v[0], v[1]]
}

/// `n` bytes of padding as one option: nothing, Pad1, or PadN of zeros.
fn pad(n: usize) -> Vec<u8> {
    match n {
        0 => Vec::new(),
        1 => vec![0],
        _ => {
            let mut p = vec![1, (n - 2) as u8];
            p.resize(n, 0);
            p
        }
    }
}

/// `n` bytes of padding in a row, Pad1 and PadN mixed at random.
fn pad_run(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let k = if left == 1 || rng.percent(40) {
            1
        } else {
            rng.range(2, left)
        };
        v.extend(pad(k));
        left -= k;
    }
    v
}

/// Options of exactly `n` bytes that ip6_parse_tlv() accepts: runs of at
/// most 7 bytes of padding between at most 8 Router Alerts of any value
/// (up to n = 95; beyond, the last run grows past 7).
fn valid_options(rng: &mut Rng, n: usize) -> Vec<u8> {
    let alerts = if n <= 7 { 0 } else { (n - 7).div_ceil(11) }.min(8);
    let mut runs = vec![0usize; alerts + 1];
    let mut left = n - 4 * alerts;
    // What runs of 7 bytes cannot hold goes to the last one, afterwards.
    let extra = left.saturating_sub(7 * (alerts + 1));
    left -= extra;
    while left > 0 {
        let i = rng.below(runs.len() as u64) as usize;
        if runs[i] < 7 {
            runs[i] += 1;
            left -= 1;
        }
    }
    runs[alerts] += extra;
    let mut o = Vec::with_capacity(n);
    for (i, &run) in runs.iter().enumerate() {
        if i > 0 {
            o.extend_from_slice(&router_alert(rng.u16()));
        }
        o.extend(pad_run(rng, run));
    }
    o
}

/// An options header (`kind`: hop-by-hop or destination options) holding
/// `opts`, filled with padding to a multiple of 8 bytes. `sep`: `opts`
/// ends in padding, and a Router Alert goes between it and the fill, so
/// that the fill never lengthens the run the corner is about.
fn opts_ext(rng: &mut Rng, kind: u8, mut opts: Vec<u8>, sep: bool) -> Ext {
    if sep && (2 + opts.len()) % 8 != 0 {
        opts.extend_from_slice(&router_alert(rng.u16()));
    }
    let fill = (8 - (2 + opts.len()) % 8) % 8;
    opts.extend(pad(fill));
    let mut body = vec![((2 + opts.len()) / 8 - 1) as u8];
    body.extend(opts);
    Ext { kind, body }
}

/// An options header of `len` bytes whose options are all accepted.
fn valid_opts_ext(rng: &mut Rng, kind: u8, len: usize) -> Ext {
    let o = valid_options(rng, len - 2);
    opts_ext(rng, kind, o, false)
}

/// An options header of exactly `len` bytes (a multiple of 8) whose bytes
/// after the length are `opts`, cut or zero-filled to fit.
fn raw_opts_ext(kind: u8, len: usize, mut opts: Vec<u8>) -> Ext {
    opts.resize(len - 2, 0);
    let mut body = vec![(len / 8 - 1) as u8];
    body.extend(opts);
    Ext { kind, body }
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

    /// A covered pair whose frame gets past the origin's first checks (an
    /// entry with a gateway, the pod's endpoint with the entry's identity,
    /// a scope above link-local), so that what comes after them decides:
    /// a few draws of [`Self::covered_pair6`], and now and then the first.
    fn aimed_pair6(&mut self) -> (Ipv6Addr, Ipv6Addr) {
        let mut pair = self.covered_pair6();
        if self.rng.percent(15) {
            return pair;
        }
        for _ in 0..8 {
            let (s, g) = pair;
            let reaches = self.st.lookup6(s, g).is_some_and(|e| {
                e.gateway_ip != GATEWAY_EXCLUDED
                    && e.gateway_ip != GATEWAY_NOT_FOUND
                    && self
                        .st
                        .endpoints6
                        .get(&s)
                        .is_some_and(|ep| ep.1 == e.origin_identity)
            });
            let o = g.octets();
            if reaches && o[0] == 0xff && o[1] & 0x0f > 2 {
                break;
            }
            pair = self.covered_pair6();
        }
        pair
    }

    /// A valid IPv6 datagram of an aimed pair, for a corner to be the one
    /// thing wrong with it: a hop limit a router forwards, the group's
    /// MAC, the UDP checksum computed, 16 to 200 bytes of payload.
    fn corner6_desc(&mut self) -> Frame6 {
        let (s, g) = self.aimed_pair6();
        let len = self.rng.range(16, 200);
        let payload = self.rng.bytes(len);
        let mut d = Frame6::udp(s, g, &payload);
        d.hop_limit = if self.rng.percent(80) {
            64
        } else {
            self.rng.range(2, 255) as u8
        };
        d.flow_label = self.rng.u32();
        d.sport = self.rng.u16();
        d.dport = self.rng.u16();
        d
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
                0..=99 => self.vlan6(),
                100..=169 => self.v6_truncated(),
                170..=249 => self.v6_large(),
                250..=379 => self.v6_header(),
                380..=499 => self.v6_valid(),
                500..=579 => self.v6_chain(),
                580..=649 => self.v6_fragment(),
                650..=709 => self.v6_never_egress(),
                710..=739 => self.v6_checksum_corner(),
                740..=869 => self.v6_options(),
                870..=939 => self.v6_ext_corner(),
                _ => self.l2_corner6(true),
            };
        }
        match roll {
            0..=129 => self.v6_valid(),
            130..=299 => self.v6_header(),
            300..=459 => self.v6_chain(),
            460..=539 => self.v6_fragment(),
            540..=619 => self.v6_never_egress(),
            620..=659 => self.v6_checksum_corner(),
            660..=709 => self.v6_truncated(),
            710..=739 => self.vlan6(),
            740..=759 => self.v6_random(),
            760..=899 => self.v6_options(),
            900..=969 => self.v6_ext_corner(),
            _ => self.l2_corner6(false),
        }
    }

    /// A valid IPv6 datagram of an aimed pair with a layer-2 corner.
    fn l2_corner6(&mut self, real_path: bool) -> (Class, Vec<u8>, Vec<&'static str>) {
        let f = self.corner6_desc().bytes();
        self.l2_corner(f, true, real_path)
    }

    /// The corners of hop-by-hop and destination options (RFC 8200 4.2),
    /// each in an otherwise valid datagram of an aimed pair: unknown types
    /// of each action (the high two bits 00 skip, 01 discard, 10 and 11
    /// discard and report); Jumbo Payload (RFC 2675) of length 4 or not,
    /// with a payload length of 0 or not and a jumbo length up to 65535 or
    /// past it; Router Alert of lengths 0-4 and values 0, 1, 2, any;
    /// CALIPSO (RFC 5570), IOAM (RFC 9486), Tunnel Encapsulation Limit
    /// (RFC 2473) and Home Address (RFC 6275); padding around the 7 bytes
    /// in a row ip6_parse_tlv() allows, PadN with a byte that is not zero,
    /// padding on both sides of a Router Alert; 8 and 9 Router Alerts (8
    /// allowed); an option that runs past the header, options that stop
    /// short of its end; headers of 8 to 104 bytes (96 at most are read).
    /// The names say which header: v6_hbh_* or v6_dest_*.
    fn v6_options(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.corner6_desc();
        // Unknown types and Jumbo Payload, which have the most names, come
        // twice as often as the rest.
        let arm = match self.rng.below(18) {
            16 => 0,
            17 => 1,
            arm => arm,
        };
        // Tunnel Encapsulation Limit and Home Address are destination
        // options: mostly where they belong.
        let hbh = self.rng.percent(if arm == 6 { 25 } else { 55 });
        let kind = if hbh { NH_HOP_BY_HOP } else { NH_DEST_OPTS };
        let name = |h: &'static str, o: &'static str| if hbh { h } else { o };
        // A Jumbo Payload option first in the hop-by-hop header: (payload
        // length 0, jumbo length the datagram's own).
        let mut jumbo = None;
        let r = &mut self.rng;
        let (ext, what) = match arm {
            0 => {
                let class = r.below(4) as u8;
                let t = if r.percent(50) {
                    // RFC 4727's experimental type, of each class.
                    0x1e | class << 6
                } else {
                    loop {
                        let t = (r.u8() & 0x3f) | class << 6;
                        if !KNOWN_OPTS.contains(&t) {
                            break t;
                        }
                    }
                };
                let n = r.range(0, 12);
                let mut o = if r.percent(30) {
                    router_alert(r.u16()).to_vec()
                } else {
                    Vec::new()
                };
                o.extend_from_slice(&[t, n as u8]);
                o.extend(r.bytes(n));
                let what = match class {
                    0 => name("v6_hbh_unknown_00", "v6_dest_unknown_00"),
                    1 => name("v6_hbh_unknown_01", "v6_dest_unknown_01"),
                    2 => name("v6_hbh_unknown_10", "v6_dest_unknown_10"),
                    _ => name("v6_hbh_unknown_11", "v6_dest_unknown_11"),
                };
                (opts_ext(r, kind, o, false), what)
            }
            1 => {
                let sub = if hbh { r.below(4) } else { 4 };
                let olen = if sub == 3 {
                    r.pick(&[0u8, 2, 3, 5, 6, 8])
                } else {
                    4
                };
                let value = match sub {
                    1 => r.range(65536, u32::MAX as usize) as u32,
                    _ if r.percent(50) => r.range(0, 65535) as u32,
                    _ => r.u32(),
                };
                let plen_zero = match sub {
                    0 | 1 => true,
                    3 => r.percent(50),
                    _ => false,
                };
                jumbo = hbh.then_some((plen_zero, sub == 0));
                let mut o = vec![0xc2, olen];
                let mut v = value.to_be_bytes().to_vec();
                v.resize(usize::from(olen), 0);
                o.extend(v);
                let what = match sub {
                    0 => "v6_hbh_jumbo_small",
                    1 => "v6_hbh_jumbo_big",
                    2 => "v6_hbh_jumbo_plen",
                    3 => "v6_hbh_jumbo_optlen",
                    _ => "v6_dest_jumbo",
                };
                (opts_ext(r, kind, o, false), what)
            }
            2 => {
                let olen = r.pick(&[0u8, 1, 3, 4]);
                let mut o = vec![0x05, olen];
                o.extend(r.bytes(usize::from(olen)));
                (
                    opts_ext(r, kind, o, false),
                    name("v6_hbh_ra_len", "v6_dest_ra_len"),
                )
            }
            3 => {
                let any = r.u16();
                let v = r.pick(&[0, 1, 2, any]);
                let o = router_alert(v).to_vec();
                (
                    opts_ext(r, kind, o, false),
                    name("v6_hbh_ra_value", "v6_dest_ra_value"),
                )
            }
            4 => {
                // CALIPSO: DOI, compartment length (words), sensitivity
                // level, checksum, compartment bitmap.
                let words = r.range(0, 2);
                let mut o = vec![0x07, (8 + 4 * words) as u8];
                o.extend_from_slice(&(r.u32() | 1).to_be_bytes());
                o.push(words as u8);
                o.push(r.u8());
                o.extend(r.bytes(2 + 4 * words));
                (
                    opts_ext(r, kind, o, false),
                    name("v6_hbh_calipso", "v6_dest_calipso"),
                )
            }
            5 => {
                // IOAM: reserved, IOAM option type, then its data.
                let words = r.range(0, 4);
                let any = r.u8();
                let t = r.pick(&[0, 1, 2, 3, 4, any]);
                let mut o = vec![0x31, (2 + 8 + 4 * words) as u8, 0, t];
                o.extend(r.bytes(8 + 4 * words));
                (
                    opts_ext(r, kind, o, false),
                    name("v6_hbh_ioam", "v6_dest_ioam"),
                )
            }
            6 => {
                if r.percent(50) {
                    let o = vec![0x04, 0x01, r.u8()];
                    (
                        opts_ext(r, kind, o, false),
                        name("v6_hbh_tel", "v6_dest_tel"),
                    )
                } else {
                    // Home Address, aligned 8n+6 behind four bytes of
                    // padding.
                    let mut o = pad(4);
                    o.extend_from_slice(&[0xc9, 16]);
                    let host = r.u16();
                    o.extend_from_slice(
                        &Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, host).octets(),
                    );
                    (
                        opts_ext(r, kind, o, false),
                        name("v6_hbh_hao", "v6_dest_hao"),
                    )
                }
            }
            7 => {
                let n = r.range(1, 9);
                let mut o = if r.percent(50) {
                    router_alert(r.u16()).to_vec()
                } else {
                    Vec::new()
                };
                o.extend(std::iter::repeat_n(0, n));
                let what = if n <= 7 {
                    name("v6_hbh_pad1_run", "v6_dest_pad1_run")
                } else {
                    name("v6_hbh_pad1_run_long", "v6_dest_pad1_run_long")
                };
                (opts_ext(r, kind, o, true), what)
            }
            8 => {
                let n = r.range(2, 9);
                let mut o = if r.percent(50) {
                    router_alert(r.u16()).to_vec()
                } else {
                    Vec::new()
                };
                o.extend(pad(n));
                let what = if n <= 7 {
                    name("v6_hbh_padn", "v6_dest_padn")
                } else {
                    name("v6_hbh_padn_long", "v6_dest_padn_long")
                };
                (opts_ext(r, kind, o, true), what)
            }
            9 => {
                let n = r.range(3, 7);
                let mut o = pad(n);
                let at = r.range(2, n - 1);
                o[at] = r.u8() | 1;
                (
                    opts_ext(r, kind, o, true),
                    name("v6_hbh_padn_nonzero", "v6_dest_padn_nonzero"),
                )
            }
            10 => {
                let n = if r.percent(50) { 7 } else { 8 };
                let mut o = if r.percent(50) {
                    router_alert(r.u16()).to_vec()
                } else {
                    Vec::new()
                };
                o.extend(pad_run(r, n));
                let what = if n == 7 {
                    name("v6_hbh_pad_run_7", "v6_dest_pad_run_7")
                } else {
                    name("v6_hbh_pad_run_8", "v6_dest_pad_run_8")
                };
                (opts_ext(r, kind, o, true), what)
            }
            11 => {
                let (a, b) = (r.range(1, 8), r.range(1, 8));
                let mut o = pad_run(r, a);
                o.extend_from_slice(&router_alert(r.u16()));
                o.extend(pad_run(r, b));
                (
                    opts_ext(r, kind, o, true),
                    name("v6_hbh_pad_split_ra", "v6_dest_pad_split_ra"),
                )
            }
            12 => {
                // 8 or 9 Router Alerts, padding between some; the last
                // option an alert, so that the fill adds none.
                let n = if r.percent(50) { 8 } else { 9 };
                let mut o = Vec::new();
                for i in 0..n {
                    if i > 0 && r.percent(30) {
                        let k = r.range(1, 7);
                        o.extend(pad_run(r, k));
                    }
                    o.extend_from_slice(&router_alert(r.u16()));
                }
                let what = if n == 8 {
                    name("v6_hbh_ra_8", "v6_dest_ra_8")
                } else {
                    name("v6_hbh_ra_9", "v6_dest_ra_9")
                };
                (opts_ext(r, kind, o, false), what)
            }
            13 => {
                // Valid options, then one whose data runs past the end.
                let len = 8 * r.range(1, 3);
                let room = len - 2;
                let k = r.range(0, room - 2);
                let mut o = valid_options(r, k);
                let any = r.u8() | 1;
                let t = r.pick(&[0x01, 0x05, 0xc2, 0x1e, any]);
                o.extend_from_slice(&[t, r.range(room - k - 1, 255) as u8]);
                (
                    raw_opts_ext(kind, len, o),
                    name("v6_hbh_opt_past_end", "v6_dest_opt_past_end"),
                )
            }
            14 => {
                // Valid options, then a lone type byte the header ends on.
                let len = 8 * r.range(1, 3);
                let mut o = valid_options(r, len - 3);
                let any = r.u8() | 1;
                o.push(r.pick(&[0x01, 0x05, 0xc2, any]));
                (
                    raw_opts_ext(kind, len, o),
                    name("v6_hbh_short_of_end", "v6_dest_short_of_end"),
                )
            }
            _ => {
                let units = match r.below(3) {
                    0 => r.range(1, 11),
                    1 => 12,
                    _ => 13,
                };
                let what = match units {
                    _ if !hbh => "v6_dest_len",
                    12 => "v6_hbh_len_96",
                    13 => "v6_hbh_len_104",
                    _ => "v6_hbh_len",
                };
                (valid_opts_ext(r, kind, 8 * units), what)
            }
        };
        d.ext = if hbh {
            let mut c = vec![ext];
            match self.rng.below(10) {
                0 | 1 => c.push(valid_opts_ext(&mut self.rng, NH_DEST_OPTS, 8)),
                2 => c.push(routing_hdr(&mut self.rng, 4, 0, 1)),
                _ => {}
            }
            c
        } else {
            match self.rng.below(4) {
                0 | 1 => vec![ext],
                2 => vec![valid_opts_ext(&mut self.rng, NH_HOP_BY_HOP, 8), ext],
                _ => {
                    // Before a routing header (for each segment) or after
                    // it (for the final destination).
                    let rh = routing_hdr(&mut self.rng, 4, 0, 1);
                    if self.rng.percent(50) {
                        vec![ext, rh]
                    } else {
                        vec![rh, ext]
                    }
                }
            }
        };
        let mut f = d.bytes();
        if let Some((plen_zero, own_length)) = jumbo {
            if own_length {
                let n = (f.len() - L3_END) as u32;
                f[L3_END + 4..L3_END + 8].copy_from_slice(&n.to_be_bytes());
            }
            if plen_zero {
                f[18..20].copy_from_slice(&[0, 0]);
            }
        }
        (Class::Ipv6Options, f, vec![what])
    }

    /// `d`, whose chain holds a fragment header with offset 0 and M, as a
    /// first fragment: the UDP datagram cut after a whole number of 8-byte
    /// units (at least its header), the payload length to match.
    fn cut_first_fragment(&mut self, d: &Frame6) -> Vec<u8> {
        let (mut f, l4) = (d.bytes(), d.l4_off());
        let total = 8 + d.payload.len();
        let keep = 8 * self.rng.range(1, (total - 1) / 8);
        f.truncate(l4 + keep);
        let plen = (f.len() - L3_END) as u16;
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        f
    }

    /// Routing, fragment, AH and ESP corners, each in an otherwise valid
    /// datagram of an aimed pair: routing headers of types 0, 2 (one
    /// address) and 4 with and without segments left, first or behind
    /// other headers; first, middle, last and atomic fragments, behind
    /// and before destination options; later fragments whose header names
    /// UDP, destination options, AH, hop-by-hop, routing, ICMPv6 or PIM;
    /// two fragment headers; AH first, behind hop-by-hop, before and
    /// behind destination options, before a fragment header; ESP behind
    /// chains.
    fn v6_ext_corner(&mut self) -> (Class, Vec<u8>, Vec<&'static str>) {
        let mut d = self.corner6_desc();
        let mut muts = Vec::new();
        let id = self.rng.u32();
        let hbh = |g: &mut Self| valid_opts_ext(&mut g.rng, NH_HOP_BY_HOP, 8);
        let dest = |g: &mut Self| {
            let len = 8 * g.rng.range(1, 3);
            valid_opts_ext(&mut g.rng, NH_DEST_OPTS, len)
        };
        match self.rng.below(10) {
            0..=2 => {
                let r = &mut self.rng;
                let (rtype, sl, n, what) = match r.below(6) {
                    0 => (0, 0, r.range(1, 3), "v6_rh0"),
                    1 => {
                        let n = r.range(1, 3);
                        (0, r.range(1, n) as u8, n, "v6_rh0_sl")
                    }
                    2 => (2, 0, 1, "v6_rh2"),
                    3 => (2, 1, 1, "v6_rh2_sl"),
                    4 => (4, 0, r.range(1, 3), "v6_rh4"),
                    _ => {
                        let n = r.range(1, 3);
                        (4, r.range(1, n) as u8, n, "v6_rh4_sl")
                    }
                };
                let rh = routing_hdr(r, rtype, sl, n);
                let mut c = match self.rng.below(4) {
                    0 | 1 => Vec::new(),
                    2 => vec![hbh(self)],
                    _ => vec![hbh(self), dest(self)],
                };
                muts.push(what);
                muts.push(if c.is_empty() {
                    "v6_rh_first"
                } else {
                    "v6_rh_after_hdrs"
                });
                c.push(rh);
                if self.rng.percent(30) {
                    c.push(dest(self));
                }
                d.ext = c;
                (Class::Ipv6ExtCorner, d.bytes(), muts)
            }
            3..=5 => {
                // A fragment header alone, behind hop-by-hop, behind
                // destination options, or (offset 0) before them.
                let place = self.rng.below(4);
                let later = self.rng.percent(50);
                let (before, after) = match place {
                    1 => (vec![hbh(self)], Vec::new()),
                    2 => (vec![dest(self)], Vec::new()),
                    3 if !later => (Vec::new(), vec![dest(self)]),
                    _ => (Vec::new(), Vec::new()),
                };
                match place {
                    2 => muts.push("v6_frag_after_dest"),
                    3 if !later => muts.push("v6_frag_before_dest"),
                    _ => {}
                }
                let total = 8 + d.payload.len();
                if !later {
                    let more = self.rng.percent(50);
                    d.ext = before;
                    d.ext.push(Ext::fragment(0, more, id));
                    d.ext.extend(after);
                    muts.push(if more {
                        "v6_frag_first"
                    } else {
                        "v6_frag_atomic"
                    });
                    let f = if more {
                        self.cut_first_fragment(&d)
                    } else {
                        d.bytes()
                    };
                    return (Class::Ipv6ExtCorner, f, muts);
                }
                d.ext = before;
                let nh = if self.rng.percent(30) {
                    NH_UDP
                } else {
                    self.rng.pick(&[
                        NH_DEST_OPTS,
                        NH_AH,
                        NH_HOP_BY_HOP,
                        NH_ROUTING,
                        NH_ICMPV6,
                        NH_PIM,
                    ])
                };
                muts.push(match nh {
                    NH_UDP => "v6_later_frag_nh_17",
                    NH_DEST_OPTS => "v6_later_frag_nh_60",
                    NH_AH => "v6_later_frag_nh_51",
                    NH_HOP_BY_HOP => "v6_later_frag_nh_0",
                    NH_ROUTING => "v6_later_frag_nh_43",
                    NH_ICMPV6 => "v6_later_frag_nh_58",
                    _ => "v6_later_frag_nh_103",
                });
                let more = if nh == NH_UDP {
                    // A piece of the datagram from an 8-byte boundary past
                    // its first unit: to its end, or a few units of it.
                    let start = 8 * self.rng.range(1, (total - 1) / 8);
                    let end = if self.rng.percent(50) {
                        total
                    } else {
                        (start + 8 * self.rng.range(1, 8)).min(total)
                    };
                    let more = end < total;
                    d.frag = Some((Ext::fragment((start / 8) as u16, more, id), start, end));
                    more
                } else {
                    // A piece of another protocol's datagram: bytes.
                    let more = self.rng.percent(50);
                    let units = self.rng.range(1, 16);
                    d.proto = nh;
                    d.payload = self.rng.bytes(8 * units);
                    let offset = self.rng.range(1, 0x1fff) as u16;
                    d.frag = Some((Ext::fragment(offset, more, id), 0, 0));
                    more
                };
                muts.push(if more {
                    "v6_frag_middle"
                } else {
                    "v6_frag_last"
                });
                (Class::Ipv6ExtCorner, d.bytes(), muts)
            }
            6 => {
                // Two fragment headers: the first of offset 0 (a later one
                // ends the walk), the second of any.
                let first = Ext::fragment(0, self.rng.percent(50), id);
                let offset = if self.rng.percent(50) {
                    0
                } else {
                    self.rng.range(1, 0x1fff) as u16
                };
                let second = Ext::fragment(offset, self.rng.percent(50), self.rng.u32());
                d.ext = vec![first];
                if self.rng.percent(30) {
                    d.ext.push(dest(self));
                }
                d.ext.push(second);
                muts.push("v6_frag_twice");
                (Class::Ipv6ExtCorner, d.bytes(), muts)
            }
            7 | 8 => {
                // AH: an ICV of 1 or 3 words keeps it a multiple of 8
                // bytes (RFC 4302 2.2).
                let w = self.rng.pick(&[1, 3]);
                let ah = ah_hdr(&mut self.rng, w);
                let (c, what) = match self.rng.below(5) {
                    0 => (vec![ah], "v6_ah_first"),
                    1 => (vec![hbh(self), ah], "v6_ah_after_hbh"),
                    2 => (vec![ah, dest(self)], "v6_ah_before_dest"),
                    3 => (vec![dest(self), ah], "v6_ah_after_dest"),
                    _ => {
                        let more = self.rng.percent(50);
                        (vec![ah, Ext::fragment(0, more, id)], "v6_ah_before_frag")
                    }
                };
                d.ext = c;
                muts.push(what);
                let first_of_more = d
                    .ext
                    .last()
                    .is_some_and(|e| e.kind == NH_FRAGMENT && e.body[2] & 1 != 0);
                let f = if first_of_more {
                    self.cut_first_fragment(&d)
                } else {
                    d.bytes()
                };
                (Class::Ipv6ExtCorner, f, muts)
            }
            _ => {
                // ESP (RFC 4303): SPI, sequence number, then what only the
                // receiver can read.
                d.ext = match self.rng.below(6) {
                    0 => Vec::new(),
                    1 => vec![hbh(self)],
                    2 => vec![dest(self)],
                    3 => vec![hbh(self), dest(self)],
                    4 => vec![routing_hdr(&mut self.rng, 4, 0, 1)],
                    _ => vec![Ext::fragment(0, false, id)],
                };
                d.proto = 50;
                let mut esp = (self.rng.u32() | 0x100).to_be_bytes().to_vec();
                esp.extend_from_slice(&self.rng.u32().to_be_bytes());
                let n = self.rng.range(16, 64);
                esp.extend(self.rng.bytes(n));
                d.payload = esp;
                muts.push("v6_esp");
                (Class::Ipv6ExtCorner, d.bytes(), muts)
            }
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
