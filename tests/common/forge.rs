//! Frames as a misbehaving or foreign sender would put them on a wire:
//! VLAN-tagged frames, VXLAN packets from any outer source with any VNI,
//! and a marker search to recognise a frame's payload in whatever form it
//! reappears (tagged, untagged, encapsulated).

use std::net::Ipv4Addr;

use super::packet::Frame;

/// Tag protocol identifiers (IEEE 802.1Q): C-tag and S-tag.
pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

/// VXLAN's UDP port as Cilium configures it.
pub const VXLAN_PORT: u16 = 8472;

/// `frame` with VLAN tags inserted behind its MAC addresses, outermost
/// first: `(tpid, vlan id)` each, priority and DEI zero.
pub fn vlan_tagged(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for &(tpid, vid) in tags {
        assert!(vid < 4096, "a VLAN id has 12 bits");
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&vid.to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// A VXLAN (RFC 7348) packet on UDP 8472 carrying `inner`, from
/// `src` (MAC, IP) to `dst`, with a zero outer UDP checksum and TTL 64, as
/// a node's kernel sends it. The VNI is whatever the caller says.
pub fn vxlan_packet(
    src: ([u8; 6], Ipv4Addr),
    dst: ([u8; 6], Ipv4Addr),
    vni: u32,
    inner: &[u8],
) -> Vec<u8> {
    assert!(vni < 1 << 24, "a VNI has 24 bits");
    // Flags: VNI present; then the VNI in the upper 24 bits of a word.
    let mut body = vec![0x08, 0, 0, 0];
    body.extend_from_slice(&(vni << 8).to_be_bytes());
    body.extend_from_slice(inner);
    let mut outer = Frame::udp(src.1, dst.1, &body).zero_udp_checksum().ttl(64);
    outer.src_mac = src.0;
    outer.dst_mac = dst.0;
    outer.sport = 51234;
    outer.dport = VXLAN_PORT;
    outer.bytes()
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A payload that names itself: found again by [`contains`] wherever the
/// datagram turns up.
pub fn marker(what: &str) -> Vec<u8> {
    format!("cilium-mcast-egress test marker <{what}>").into_bytes()
}
