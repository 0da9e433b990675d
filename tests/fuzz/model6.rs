//! The IPv6 half of the model (tests/fuzz/model.rs), written down from the
//! IPv6 specification (issue 13): classification, the extension-header
//! walk, never-egress scopes and protocols, the policy's longest match, anti-spoofing,
//! validation, and the gateway's rewrite (hop limit, source, UDP checksum
//! through the pseudo-header, RFC 2464 MAC). Shares no code with bpf/.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::common::packet::group_mac6;
use crate::model::{
    be16, csum_update, reason, Count, Emitted, Entry6, Outcome, State, Via, GATEWAY_EXCLUDED,
    GATEWAY_NOT_FOUND, IDENTITY_WORLD, REDIRECT, ROLE_GATEWAY, ROLE_ORIGIN,
};

pub const ETH_P_IPV6: u16 = 0x86dd;
/// Ethernet + fixed IPv6 header.
pub const L3_END: usize = 14 + 40;
/// MCAST_IPV6_MAX_EXT: extension headers the walk takes at most.
pub const MAX_EXT: usize = 8;

pub const NH_HOP_BY_HOP: u8 = 0;
pub const NH_ROUTING: u8 = 43;
pub const NH_FRAGMENT: u8 = 44;
pub const NH_AH: u8 = 51;
pub const NH_ICMPV6: u8 = 58;
pub const NH_NONE: u8 = 59;
pub const NH_DEST_OPTS: u8 = 60;
pub const NH_PIM: u8 = 103;
pub const NH_UDP: u8 = 17;

/// MLD: Listener Query, Report, Done (RFC 2710) and MLDv2 Report (RFC 3810).
pub const MLD_TYPES: [u8; 4] = [130, 131, 132, 143];

fn addr6_at(b: &[u8], off: usize) -> Ipv6Addr {
    let o: [u8; 16] = b[off..off + 16].try_into().expect("16 bytes");
    Ipv6Addr::from(o)
}

pub fn saddr(frame: &[u8]) -> Ipv6Addr {
    addr6_at(frame, 22)
}

pub fn daddr(frame: &[u8]) -> Ipv6Addr {
    addr6_at(frame, 38)
}

/// The fragment header's say: offset in 8-byte units, and the M flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frag {
    pub offset: u16,
    pub more: bool,
}

impl Frag {
    /// A fragment that carries no UDP header: offset != 0.
    pub fn later(&self) -> bool {
        self.offset != 0
    }
}

/// Where the extension-header chain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    /// The upper-layer protocol: the first next-header value that is not
    /// an extension header we walk (59 and AH included), or the one a
    /// later fragment's header names.
    pub proto: u8,
    /// Offset of the upper-layer header from the frame's start.
    pub l4_off: usize,
    /// The fragment header's offset and M flag, if any.
    pub frag: Option<Frag>,
    /// Bytes of the hop-by-hop header, if the chain starts with one.
    pub hbh_len: Option<usize>,
}

impl Walk {
    pub fn later_fragment(&self) -> bool {
        self.frag.is_some_and(|f| f.later())
    }
}

/// Where the payload ends: 40 + payload_len behind the Ethernet header
/// (which may be beyond the frame).
pub fn payload_end(frame: &[u8]) -> usize {
    L3_END + usize::from(be16(frame, 18))
}

/// Step 2: walk the extension headers: hop-by-hop, routing, fragment and
/// destination options (RFC 8200 4.1). AH ends the walk as an upper layer
/// of its own: a packet with AH is an AH packet, as IPv4 reads protocol 51.
/// So does a fragment header with a non-zero offset: behind it is payload,
/// never headers (RFC 8200 4.5), and the protocol is the one it names.
/// None when the chain is malformed: more than MAX_EXT headers, hop-by-hop
/// other than first, a header that runs past the payload (or whose first
/// bytes are not in the frame), a routing header with segments left, a
/// second fragment header.
pub fn walk(frame: &[u8]) -> Option<Walk> {
    walk_why(frame).ok()
}

/// [`walk`], with the name of the rule a malformed chain breaks.
pub fn walk_why(frame: &[u8]) -> Result<Walk, &'static str> {
    let end = payload_end(frame);
    let mut next = frame[20];
    let mut off = L3_END;
    let mut frag = None;
    let mut hbh_len = None;
    for n in 0..=MAX_EXT {
        if !matches!(
            next,
            NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS | NH_FRAGMENT
        ) {
            return Ok(Walk {
                proto: next,
                l4_off: off,
                frag,
                hbh_len,
            });
        }
        if n == MAX_EXT {
            return Err("ext_chain_too_long");
        }
        if next == NH_HOP_BY_HOP && n != 0 {
            return Err("hbh_not_first");
        }
        // Every extension header is at least 8 bytes long; its first four
        // (next header, length, and the fragment offset or the routing
        // header's segments left) must be in the frame to be read.
        if off + 8 > end || off + 4 > frame.len() {
            return Err("ext_past_payload");
        }
        let len = match next {
            NH_FRAGMENT => {
                if frag.is_some() {
                    return Err("second_fragment_header");
                }
                let w = be16(frame, off + 2);
                let f = Frag {
                    offset: w >> 3,
                    more: w & 1 != 0,
                };
                frag = Some(f);
                if f.later() {
                    return Ok(Walk {
                        proto: frame[off],
                        l4_off: off + 8,
                        frag,
                        hbh_len,
                    });
                }
                8
            }
            _ => {
                if next == NH_ROUTING && frame[off + 3] != 0 {
                    return Err("routing_segments_left");
                }
                let len = (usize::from(frame[off + 1]) + 1) * 8;
                if next == NH_HOP_BY_HOP {
                    hbh_len = Some(len);
                }
                len
            }
        };
        off += len;
        if off > end {
            return Err("ext_past_payload");
        }
        next = frame[off - len];
    }
    Err("ext_chain_too_long")
}

/// Step 7: the hop-by-hop options, read as Linux's ip6_parse_tlv() reads
/// them, of which we accept only what we can carry: Pad1, PadN of zeros
/// (RFC 4942 2.1.9.5), Router Alert of length 2 (RFC 2711). At most 7
/// bytes of padding in a row and 8 options besides padding (the kernel's
/// defaults); no option may run past the header. Every other option is
/// refused, whatever its action bits say.
pub fn hbh_options_ok(frame: &[u8], len: usize) -> bool {
    if len > 96 || L3_END + len > frame.len() {
        return false;
    }
    let h = &frame[L3_END..L3_END + len];
    let (mut i, mut pad, mut opts) = (2, 0, 0);
    while i < len {
        if h[i] == 0 {
            pad += 1;
            if pad > 7 {
                return false;
            }
            i += 1;
            continue;
        }
        if i + 2 > len {
            return false;
        }
        let olen = usize::from(h[i + 1]);
        if i + 2 + olen > len {
            return false;
        }
        match (h[i], olen) {
            (1, _) => {
                pad += 2 + olen;
                if pad > 7 || h[i + 2..i + 2 + olen].iter().any(|&b| b != 0) {
                    return false;
                }
            }
            (5, 2) => {
                opts += 1;
                if opts > 8 {
                    return false;
                }
                pad = 0;
            }
            _ => return false,
        }
        i += 2 + olen;
    }
    true
}

/// Step 3: scopes 0 (reserved), 1 (interface-local) and 2 (link-local),
/// whatever the flags.
pub fn scope_never_egress(group: Ipv6Addr) -> bool {
    group.octets()[1] & 0x0f <= 2
}

/// Step 3: MLD and PIM, once the chain was walked. A later fragment has no
/// ICMPv6 header to tell its type by; a type that is not in the frame
/// cannot be read.
pub fn proto_never_egress(frame: &[u8], w: &Walk) -> bool {
    match w.proto {
        NH_PIM => true,
        NH_ICMPV6 => {
            !w.later_fragment() && w.l4_off < frame.len() && MLD_TYPES.contains(&frame[w.l4_off])
        }
        _ => false,
    }
}

/// Steps 1 and 3: Some(path) when the frame goes on untouched, before any
/// lookup. The chain's walk when it could be done.
fn not_ours6(frame: &[u8], vlan_present: bool) -> Result<Option<Walk>, &'static str> {
    if frame.len() < L3_END {
        return Err("shorter_than_ipv6_header");
    }
    if frame[38] != 0xff {
        return Err("not_multicast");
    }
    if vlan_present {
        return Err("vlan_tag");
    }
    if scope_never_egress(daddr(frame)) {
        return Err("never_egress_scope");
    }
    let w = walk(frame);
    if let Some(w) = &w {
        if proto_never_egress(frame, w) {
            return Err("never_egress_mld_pim");
        }
    }
    Ok(w)
}

/// Step 7: the length the frame is cut to when the datagram is one a
/// router forwards (its hop-by-hop options included) and a UDP receiver
/// takes, None when it is malformed.
pub fn validate(frame: &[u8], w: Option<Walk>) -> Option<usize> {
    check(frame, w.ok_or("ext_chain")).ok()
}

/// [`validate`] with the name of the rule a malformed datagram breaks:
/// those a router's input path applies too (version, a payload that fits
/// the frame, the hop-by-hop options it refuses), and those we add; `w` is
/// the chain's walk or why it failed.
pub fn check(frame: &[u8], w: Result<Walk, &'static str>) -> Result<usize, &'static str> {
    if frame[14] >> 4 != 6 {
        return Err("ipv6_version");
    }
    let plen = usize::from(be16(frame, 18));
    // Jumbograms (payload length 0) are malformed here.
    if plen == 0 {
        return Err("ipv6_payload_length_zero");
    }
    if L3_END + plen > frame.len() {
        return Err("ipv6_payload_length");
    }
    let w = w?;
    if w.hbh_len.is_some_and(|len| !hbh_options_ok(frame, len)) {
        return Err("hbh_option");
    }
    let end = L3_END + plen;
    if w.proto == NH_UDP && !w.later_fragment() {
        // RFC 7112: a first fragment holds the whole chain and the UDP
        // header.
        if w.l4_off + 8 > end {
            return Err("udp_header_missing");
        }
        let ulen = usize::from(be16(frame, w.l4_off + 4));
        let rest = end - w.l4_off;
        let first_of_more = w.frag.is_some_and(|f| f.more);
        if (first_of_more && ulen < rest) || (!first_of_more && ulen != rest) {
            return Err("udp_length");
        }
        // RFC 8200 8.1: a zero UDP checksum is invalid over IPv6.
        if be16(frame, w.l4_off + 6) == 0 {
            return Err("udp6_zero_checksum");
        }
    }
    Ok(end)
}

/// mcast_from_container, IPv6 (steps 1-5).
pub fn container(st: &State, frame: &[u8], ifindex: u32, vlan_present: bool) -> Outcome {
    let w = match not_ours6(frame, vlan_present) {
        Err(path) => return Outcome::next(frame, path),
        Ok(w) => w,
    };
    let (s, g) = (saddr(frame), daddr(frame));
    let Some(pol) = st.lookup6(s, g) else {
        return Outcome::next(frame, "no_policy_entry");
    };
    if pol.gateway_ip == GATEWAY_EXCLUDED {
        return Outcome::next(frame, "excluded_entry");
    }
    let Some(&(ep_ifindex, ep_identity)) = st.endpoints6.get(&s) else {
        return Outcome::drop(frame, ROLE_ORIGIN, reason::UNKNOWN_SOURCE);
    };
    if ep_ifindex != ifindex {
        return Outcome::drop(frame, ROLE_ORIGIN, reason::SPOOFED_SOURCE);
    }
    if ep_identity != pol.origin_identity {
        return Outcome::drop(frame, ROLE_ORIGIN, reason::ORIGIN_MISMATCH);
    }
    if pol.gateway_ip == GATEWAY_NOT_FOUND {
        return Outcome::drop(frame, ROLE_ORIGIN, reason::NO_GATEWAY);
    }
    if frame[..6] != group_mac6(g) {
        return Outcome::drop(frame, ROLE_ORIGIN, reason::DST_MAC_MISMATCH);
    }
    let Some(end) = validate(frame, w) else {
        return Outcome::drop(frame, ROLE_ORIGIN, reason::MALFORMED);
    };
    let cut = frame[..end].to_vec();
    let w = w.expect("validated");
    if w.proto != NH_UDP {
        return Outcome::fail(cut, ROLE_ORIGIN, reason::UNSUPPORTED_PROTO, false);
    }
    if !st.node_ip.is_unspecified() && pol.gateway_ip == st.node_ip {
        return emit(st, pol, cut, &w, ROLE_ORIGIN);
    }
    let tunnel = st.tunnel_ifindex;
    if tunnel == 0 {
        return Outcome::fail(cut, ROLE_ORIGIN, reason::NO_TUNNEL, false);
    }
    let bytes = cut.len() as u64;
    let counted = vec![Count {
        policy_id: pol.policy_id,
        group: IpAddr::V6(g),
        role: ROLE_ORIGIN,
        bytes,
    }];
    // As for IPv4: the redirect to a vanished tunnel device is taken by the
    // helper and counted, and nothing leaves.
    let emitted = st.devices.contains_key(&tunnel).then(|| Emitted {
        via: Via::Tunnel {
            ifindex: tunnel,
            remote: pol.gateway_ip,
            local: st.node_ip,
            vni: ep_identity,
        },
        bytes: cut.clone(),
    });
    let path = if emitted.is_some() {
        "v6_tunnel_redirect"
    } else {
        "v6_tunnel_redirect_to_a_vanished_device"
    };
    Outcome {
        verdict: REDIRECT,
        out: cut,
        drop: None,
        counted,
        emitted,
        path,
    }
}

/// mcast_from_overlay, IPv6 (step 6).
pub fn overlay(
    st: &State,
    frame: &[u8],
    key: Option<(u32, Ipv4Addr)>,
    vlan_present: bool,
) -> Outcome {
    let w = match not_ours6(frame, vlan_present) {
        Err(path) => return Outcome::next(frame, path),
        Ok(w) => w,
    };
    let Some((vni, remote)) = key else {
        return Outcome::next(frame, "no_tunnel_key");
    };
    if vni == IDENTITY_WORLD {
        return Outcome::next(frame, "world_vni");
    }
    if !st.nodes.contains(&remote) {
        return Outcome::drop(frame, ROLE_GATEWAY, reason::UNKNOWN_PEER);
    }
    let Some(pol) = st.lookup6(saddr(frame), daddr(frame)) else {
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
    if frame[..6] != group_mac6(daddr(frame)) {
        return Outcome::drop(frame, ROLE_GATEWAY, reason::DST_MAC_MISMATCH);
    }
    let Some(end) = validate(frame, w) else {
        return Outcome::drop(frame, ROLE_GATEWAY, reason::MALFORMED);
    };
    emit(
        st,
        pol,
        frame[..end].to_vec(),
        &w.expect("validated"),
        ROLE_GATEWAY,
    )
}

/// Step 8 on the cut frame.
fn emit(st: &State, pol: &Entry6, cut: Vec<u8>, w: &Walk, role: u32) -> Outcome {
    let ifindex = pol.egress_ifindex;
    if pol.egress_ip.is_unspecified() || ifindex == 0 {
        return Outcome::fail(cut, ROLE_GATEWAY, reason::NO_EGRESS_IP, false);
    }
    let Some(&mac) = st.egress_ifaces.get(&ifindex) else {
        return Outcome::fail(cut, ROLE_GATEWAY, reason::NO_EGRESS_IFACE, false);
    };
    if w.proto != NH_UDP {
        return Outcome::fail(cut, ROLE_GATEWAY, reason::UNSUPPORTED_PROTO, false);
    }
    if cut[21] <= 1 {
        return Outcome::fail(cut, ROLE_GATEWAY, reason::TTL_EXCEEDED, false);
    }
    let Some(&mtu) = st.devices.get(&ifindex) else {
        return Outcome::fail(cut, ROLE_GATEWAY, reason::REDIRECT_FAILED, false);
    };
    if cut.len() > mtu as usize + 14 {
        return Outcome::fail(cut, ROLE_GATEWAY, reason::MTU_EXCEEDED, false);
    }
    let rewritten = rewrite(&cut, w, pol.egress_ip, mac);
    let group = IpAddr::V6(daddr(&cut));
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
        verdict: REDIRECT,
        out: rewritten.clone(),
        drop: None,
        counted,
        emitted: Some(Emitted {
            via: Via::Uplink(ifindex),
            bytes: rewritten,
        }),
        path: "v6_emit_redirect",
    }
}

/// The gateway rewrite of a valid, cut frame: hop limit - 1, source to the
/// egress IPv6, the UDP checksum updated through the pseudo-header (first
/// fragments and unfragmented datagrams; a result of 0 sent as 0xffff),
/// Ethernet header for the group.
pub fn rewrite(cut: &[u8], w: &Walk, egress_ip: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut f = cut.to_vec();
    f[21] -= 1;
    let old: [u8; 16] = f[22..38].try_into().expect("16 bytes");
    f[22..38].copy_from_slice(&egress_ip.octets());
    if w.proto == NH_UDP && !w.later_fragment() {
        let off = w.l4_off + 6;
        let new = csum_update(be16(&f, off), &old, &egress_ip.octets());
        f[off..off + 2].copy_from_slice(&new.to_be_bytes());
    }
    let mac_dst = group_mac6(daddr(&f));
    f[0..6].copy_from_slice(&mac_dst);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    f
}

/// An IPv6 frame by its ethertype.
pub fn is_v6(frame: &[u8]) -> bool {
    frame.len() >= 14 && be16(frame, 12) == ETH_P_IPV6
}
