//! Checks of what came out, beside the byte comparison with the model:
//! a rewritten frame is verified from first principles (checksums
//! recomputed with the test's own code, TTL, source, RFC 1112 MAC, every
//! other byte untouched), and a tunnelled copy is taken apart.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::common::packet::{self, group_mac, View};
use crate::gen::addr;
use crate::model::{hex, Emitted, Outcome, Via};

/// The first difference between two byte strings, for a report.
pub fn byte_diff(want: &[u8], got: &[u8]) -> Option<String> {
    if want == got {
        return None;
    }
    let at = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let from = at.saturating_sub(8);
    let to_w = (at + 24).min(want.len());
    let to_g = (at + 24).min(got.len());
    Some(format!(
        "{} bytes expected, {} got; first difference at offset {at}: expected [{from}..] {} got [{from}..] {}",
        want.len(),
        got.len(),
        hex(&want[from.min(want.len())..to_w]),
        hex(&got[from.min(got.len())..to_g]),
    ))
}

/// Problems with `out` as the rewrite of the valid, cut frame `input`
/// towards `egress_ip` from `mac`; empty when it is right.
pub fn verify_rewrite(input: &[u8], out: &[u8], egress_ip: Ipv4Addr, mac: [u8; 6]) -> Vec<String> {
    let mut p = Vec::new();
    if out.len() != input.len() || out.len() < 34 {
        p.push(format!(
            "rewritten frame is {} bytes, the datagram {}",
            out.len(),
            input.len()
        ));
        return p;
    }
    let (i, o) = (View(input), View(out));
    if o.ethertype() != packet::ETH_P_IP {
        p.push(format!("ethertype {:#06x}", o.ethertype()));
    }
    if o.dst_mac() != group_mac(i.daddr()) {
        p.push(format!(
            "destination MAC {} is not RFC 1112's {} for {}",
            hex(&o.dst_mac()),
            hex(&group_mac(i.daddr())),
            i.daddr()
        ));
    }
    if o.src_mac() != mac {
        p.push(format!(
            "source MAC {} not the uplink's {}",
            hex(&o.src_mac()),
            hex(&mac)
        ));
    }
    if o.saddr() != egress_ip {
        p.push(format!(
            "source {} not the egress IP {egress_ip}",
            o.saddr()
        ));
    }
    if o.ttl() != i.ttl().wrapping_sub(1) {
        p.push(format!("TTL {} after {}", o.ttl(), i.ttl()));
    }
    if !o.ipv4_checksum_ok() {
        p.push("IPv4 header checksum wrong".to_owned());
    }
    let hl = i.ihl_len();
    let l4 = 14 + hl;
    let later_fragment = u16::from_be_bytes([input[20], input[21]]) & 0x1fff != 0;
    if !later_fragment && input[23] == packet::PROTO_UDP {
        let (ci, co) = (i.udp_checksum_field(), o.udp_checksum_field());
        if ci == 0 && co != 0 {
            p.push(format!(
                "UDP checksum {co:#06x}: a zero checksum must stay zero"
            ));
        }
        if ci != 0 && co == 0 {
            p.push("UDP checksum became zero (\"none\")".to_owned());
        }
        if ci != 0 && !i.is_fragmented() && i.udp_checksum_ok() && !o.udp_checksum_ok() {
            p.push(format!(
                "UDP checksum {co:#06x} wrong after the rewrite (was right)"
            ));
        }
    }
    // Every other byte, payload included, as it came in.
    let udp_csum = if later_fragment { None } else { Some(l4 + 6) };
    for (k, (a, b)) in input.iter().zip(out).enumerate().skip(12) {
        let rewritten =
            matches!(k, 22 | 24 | 25 | 26..=29) || udp_csum.is_some_and(|c| k == c || k == c + 1);
        if !rewritten && a != b {
            p.push(format!("byte {k} changed: {a:#04x} -> {b:#04x}"));
            break;
        }
    }
    p
}

/// The from-first-principles checks of `out` as the rewrite of `input`,
/// with the egress IP and uplink MAC the model's frame `model` carries:
/// IPv4 or IPv6 by the model's ethertype.
pub fn verify_emitted(input: &[u8], out: &[u8], model: &[u8]) -> Vec<String> {
    let v = View(model);
    if v.ethertype() == packet::ETH_P_IPV6 {
        let egress: [u8; 16] = model[22..38].try_into().expect("16 bytes");
        return verify_rewrite6(input, out, Ipv6Addr::from(egress), v.src_mac());
    }
    verify_rewrite(input, out, v.saddr(), v.src_mac())
}

/// The upper-layer protocol and its offset, and whether the frame is a
/// later fragment, walked here independently of the model: hop-by-hop,
/// routing, fragment and destination options headers. AH is an upper
/// layer (nothing behind it may be trusted once the source is rewritten),
/// and so is what a later fragment's header names: the rest is payload.
fn l4_of6(f: &[u8]) -> Option<(u8, usize, bool)> {
    let end = (54 + usize::from(u16::from_be_bytes([f[18], f[19]]))).min(f.len());
    let (mut next, mut off) = (f[20], 54usize);
    loop {
        let len = match next {
            0 | 43 | 60 => (usize::from(*f.get(off + 1)?) + 1) * 8,
            44 => {
                if u16::from_be_bytes([*f.get(off + 2)?, *f.get(off + 3)?]) >> 3 != 0 {
                    return Some((*f.get(off)?, off + 8, true));
                }
                8
            }
            proto => return Some((proto, off, false)),
        };
        if off + len > end {
            return None;
        }
        next = f[off];
        off += len;
    }
}

/// The UDP over IPv6 checksum of an unfragmented datagram is right.
fn udp6_ok(f: &[u8], l4: usize) -> bool {
    let end = 54 + usize::from(u16::from_be_bytes([f[18], f[19]]));
    let mut seg = f[l4..end].to_vec();
    let field = u16::from_be_bytes([seg[6], seg[7]]);
    seg[6..8].copy_from_slice(&[0, 0]);
    let s: [u8; 16] = f[22..38].try_into().expect("16 bytes");
    let d: [u8; 16] = f[38..54].try_into().expect("16 bytes");
    crate::common::packet::udp6_checksum(Ipv6Addr::from(s), Ipv6Addr::from(d), &seg) == field
}

/// Problems with `out` as the IPv6 rewrite of the valid, cut frame `input`
/// towards `egress_ip` from `mac`: hop limit, source, RFC 2464 MAC, the UDP
/// checksum (never 0, right when it was right), every other byte as it
/// came in.
pub fn verify_rewrite6(input: &[u8], out: &[u8], egress_ip: Ipv6Addr, mac: [u8; 6]) -> Vec<String> {
    let mut p = Vec::new();
    if out.len() != input.len() || out.len() < 54 {
        p.push(format!(
            "rewritten frame is {} bytes, the datagram {}",
            out.len(),
            input.len()
        ));
        return p;
    }
    let o = View(out);
    if o.ethertype() != packet::ETH_P_IPV6 {
        p.push(format!("ethertype {:#06x}", o.ethertype()));
    }
    let want_mac = [0x33, 0x33, input[50], input[51], input[52], input[53]];
    if o.dst_mac() != want_mac {
        p.push(format!(
            "destination MAC {} is not RFC 2464's {}",
            hex(&o.dst_mac()),
            hex(&want_mac)
        ));
    }
    if o.src_mac() != mac {
        p.push(format!(
            "source MAC {} not the uplink's {}",
            hex(&o.src_mac()),
            hex(&mac)
        ));
    }
    if out[22..38] != egress_ip.octets() {
        p.push(format!(
            "source {} not the egress IP {egress_ip}",
            hex(&out[22..38])
        ));
    }
    if out[21] != input[21].wrapping_sub(1) {
        p.push(format!("hop limit {} after {}", out[21], input[21]));
    }
    let Some((proto, l4, later)) = l4_of6(input) else {
        p.push("the emitted datagram's extension headers do not walk".to_owned());
        return p;
    };
    let udp_csum = (proto == packet::PROTO_UDP && !later).then_some(l4 + 6);
    if let Some(c) = udp_csum {
        let (ci, co) = (
            u16::from_be_bytes([input[c], input[c + 1]]),
            u16::from_be_bytes([out[c], out[c + 1]]),
        );
        if ci == 0 || co == 0 {
            p.push(format!(
                "UDP checksum {ci:#06x} in, {co:#06x} out: zero is invalid over IPv6"
            ));
        }
        let fragmented = {
            let mut off = 54;
            let mut next = input[20];
            let mut frag = false;
            while matches!(next, 0 | 43 | 60 | 51 | 44) && off < l4 {
                if next == 44 {
                    let w = u16::from_be_bytes([input[off + 2], input[off + 3]]);
                    frag |= w != 0 && w & 1 != 0;
                }
                let len = match next {
                    51 => (usize::from(input[off + 1]) + 2) * 4,
                    44 => 8,
                    _ => (usize::from(input[off + 1]) + 1) * 8,
                };
                next = input[off];
                off += len;
            }
            frag
        };
        if !fragmented && udp6_ok(input, l4) && !udp6_ok(out, l4) {
            p.push(format!(
                "UDP checksum {co:#06x} wrong after the rewrite (was right)"
            ));
        }
    }
    for (k, (a, b)) in input.iter().zip(out).enumerate().skip(12) {
        let rewritten = matches!(k, 21..=37) || udp_csum.is_some_and(|c| k == c || k == c + 1);
        if !rewritten && a != b {
            p.push(format!("byte {k} changed: {a:#04x} -> {b:#04x}"));
            break;
        }
    }
    p
}

/// Take a VXLAN packet seen on the underlay apart and check it carries
/// `inner` as the origin must send it; problems, empty when right.
pub fn verify_tunnel(outer: &[u8], e: &Emitted, port: u16) -> Vec<String> {
    let Via::Tunnel {
        remote, local, vni, ..
    } = e.via
    else {
        return vec!["not a tunnel copy".to_owned()];
    };
    let mut p = Vec::new();
    if outer.len() < 14 + 20 + 8 + 8 {
        return vec![format!(
            "{} bytes on the underlay: no VXLAN packet",
            outer.len()
        )];
    }
    let v = View(outer);
    if v.ethertype() != packet::ETH_P_IP || v.ihl_len() != 20 || v.proto() != packet::PROTO_UDP {
        return vec![format!(
            "not IPv4/UDP on the underlay: {}",
            hex(&outer[..34])
        )];
    }
    // The kernel picks the node's own address when the key has none.
    let want_src = if local.is_unspecified() {
        addr::THIS_NODE
    } else {
        local
    };
    if v.daddr() != remote {
        p.push(format!(
            "outer destination {} not the gateway {remote}",
            v.daddr()
        ));
    }
    if v.saddr() != want_src {
        p.push(format!("outer source {} not {want_src}", v.saddr()));
    }
    if v.ttl() != 64 {
        p.push(format!("outer TTL {}", v.ttl()));
    }
    if !v.ipv4_checksum_ok() {
        p.push("outer IPv4 checksum wrong".to_owned());
    }
    let udp = &outer[34..];
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    if dport != port {
        p.push(format!("outer UDP port {dport}, the device's is {port}"));
    }
    if udp[6..8] != [0, 0] {
        p.push("outer UDP checksum not zero".to_owned());
    }
    let vx = &udp[8..16];
    let got_vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
    if vx[0] & 0x08 == 0 || got_vni != vni & 0x00ff_ffff {
        p.push(format!(
            "VXLAN header {}: VNI {got_vni}, the pod's identity is {vni}",
            hex(vx)
        ));
    }
    if let Some(d) = byte_diff(&e.bytes, &udp[16..]) {
        p.push(format!("inner frame: {d}"));
    }
    p
}

/// The per-frame comparison of a BPF_PROG_RUN result with the model.
pub fn compare_run(m: &Outcome, input: &[u8], verdict: u32, out: &[u8]) -> Vec<String> {
    let mut p = Vec::new();
    if verdict != m.verdict {
        p.push(format!(
            "verdict {} ({verdict:#x}), expected {}",
            crate::model::verdict_name(verdict),
            crate::model::verdict_name(m.verdict)
        ));
    }
    if let Some(d) = byte_diff(&m.out, out) {
        p.push(format!("output bytes: {d}"));
    }
    p.extend(independent(m, input, verdict, out));
    p
}

/// For a rewrite that BPF_PROG_RUN returns (a redirect out of the uplink),
/// the from-first-principles checks, whatever the model said.
fn independent(m: &Outcome, input: &[u8], verdict: u32, out: &[u8]) -> Vec<String> {
    let Some(Emitted {
        via: Via::Uplink(_),
        bytes,
    }) = &m.emitted
    else {
        return Vec::new();
    };
    if verdict != crate::model::REDIRECT || m.verdict != crate::model::REDIRECT {
        return Vec::new();
    }
    let cut = &input[..bytes.len().min(input.len())];
    verify_emitted(cut, out, bytes)
        .into_iter()
        .map(|s| format!("independent check: {s}"))
        .collect()
}

/// The egress invariant, decided from the map state and the bytes alone
/// (not from the model): nothing a policy forbids leaves. A frame the
/// datapath rewrote for an uplink (or one seen on an uplink) must be the
/// datagram `input` of a pod and group that a non-excluded entry covers,
/// naming this node as gateway, through `uplink` when it is known, with the
/// entry's egress IP as the new source; of a group and protocol that may
/// leave at all (IPv4: not 224.0.0.0/24, IGMP or PIM; IPv6: scope above
/// link-local, not MLD or PIM), UDP, with a TTL or hop limit of 2 or more
/// before, and over IPv6 a UDP checksum. `tunnel`: a pod's packet sent
/// unchanged to another node's gateway instead, which must be covered,
/// not excluded, and have a gateway.
pub fn egress_invariant(
    st: &crate::model::State,
    input: &[u8],
    out: &[u8],
    uplink: Option<u32>,
    tunnel: bool,
) -> Vec<String> {
    use crate::model::{GATEWAY_EXCLUDED, GATEWAY_NOT_FOUND};
    let mut p = Vec::new();
    if input.len() < 34 {
        return vec![format!("{} bytes left: no datagram", input.len())];
    }
    let ethertype = u16::from_be_bytes([input[12], input[13]]);
    // (gateway, egress ifindex, the egress IP's bytes) of the entry.
    let (entry, src_ok, group_ok, proto, ttl, later, l4) = if ethertype == packet::ETH_P_IPV6 {
        if input.len() < 54 {
            return vec![format!("{} bytes left: no IPv6 datagram", input.len())];
        }
        let s: [u8; 16] = input[22..38].try_into().expect("16 bytes");
        let g: [u8; 16] = input[38..54].try_into().expect("16 bytes");
        let (s, g) = (Ipv6Addr::from(s), Ipv6Addr::from(g));
        let e = st.lookup6(s, g).map(|e| {
            (
                e.gateway_ip,
                e.egress_ifindex,
                e.egress_ip.octets().to_vec(),
            )
        });
        let group_ok = g.octets()[0] == 0xff && g.octets()[1] & 0x0f > 2;
        let src_ok = out.len() >= 38 && e.as_ref().is_some_and(|e| out[22..38] == e.2[..]);
        let (proto, l4, later) = l4_of6(input).unwrap_or((255, 0, false));
        (e, src_ok, group_ok, proto, input[21], later, l4)
    } else if ethertype == packet::ETH_P_IP {
        let v = View(input);
        let (s, g) = (v.saddr(), v.daddr());
        let e = st.lookup(s, g).map(|e| {
            (
                e.gateway_ip,
                e.egress_ifindex,
                e.egress_ip.octets().to_vec(),
            )
        });
        let group_ok = g.is_multicast() && g.octets()[..3] != [224, 0, 0];
        let src_ok = out.len() >= 30 && e.as_ref().is_some_and(|e| out[26..30] == e.2[..]);
        let later = u16::from_be_bytes([input[20], input[21]]) & 0x1fff != 0;
        (
            e,
            src_ok,
            group_ok,
            v.proto(),
            v.ttl(),
            later,
            14 + v.ihl_len(),
        )
    } else {
        return vec![format!("ethertype {ethertype:#06x} left")];
    };
    let Some((gateway, ifindex, egress)) = entry else {
        return vec!["no policy entry covers the pod and group".to_owned()];
    };
    if gateway == GATEWAY_EXCLUDED || gateway == GATEWAY_NOT_FOUND {
        p.push(format!("the covering entry has no gateway ({gateway})"));
    }
    if !group_ok {
        p.push("a group that never leaves".to_owned());
    }
    if proto != packet::PROTO_UDP {
        p.push(format!("upper-layer protocol {proto}, not UDP"));
    }
    if tunnel {
        if !st.node_ip.is_unspecified() && gateway == st.node_ip {
            p.push("tunnelled, but this node is the gateway".to_owned());
        }
        return p;
    }
    if st.node_ip.is_unspecified() || gateway != st.node_ip {
        p.push(format!(
            "left an uplink, but the gateway is {gateway}, this node {}",
            st.node_ip
        ));
    }
    if uplink.is_some_and(|u| u != ifindex) {
        p.push(format!(
            "left ifindex {}, the entry's uplink is {ifindex}",
            uplink.unwrap_or(0)
        ));
    }
    if egress.iter().all(|b| *b == 0) || !src_ok {
        p.push(format!(
            "source is not the entry's egress IP {}",
            hex(&egress)
        ));
    }
    if ttl <= 1 {
        p.push(format!("TTL / hop limit {ttl} before the gateway hop"));
    }
    if ethertype == packet::ETH_P_IPV6
        && proto == packet::PROTO_UDP
        && !later
        && out.len() >= l4 + 8
        && out[l4 + 6..l4 + 8] == [0, 0]
    {
        p.push("an IPv6 UDP checksum of zero left".to_owned());
    }
    p
}
