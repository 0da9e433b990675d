//! IPv6 frames as the lab tests see them on a wire: whatever came by, with
//! extension headers not known in advance. Worked out here from RFC 8200
//! and RFC 2464, sharing no code with the datapath.

use std::net::Ipv6Addr;

use super::packet::{ETH_P_IPV6, PROTO_ICMPV6, PROTO_UDP};

/// Where an IPv6 packet's upper layer starts, past its extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upper {
    /// The upper-layer protocol (next header of the last extension header).
    pub proto: u8,
    /// Its offset in the frame.
    pub offset: usize,
    /// The fragment header's offset (bytes) and M flag, if there is one.
    pub fragment: Option<(usize, bool)>,
}

/// A frame read as Ethernet + IPv6, if it is one.
pub struct Wire6<'a>(pub &'a [u8]);

impl Wire6<'_> {
    pub fn is_ipv6(&self) -> bool {
        self.0.len() >= 54 && u16::from_be_bytes([self.0[12], self.0[13]]) == ETH_P_IPV6
    }
    pub fn saddr(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.0[22..38]).unwrap())
    }
    pub fn daddr(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.0[38..54]).unwrap())
    }
    /// The upper layer past hop-by-hop, routing, fragment and destination
    /// options headers (RFC 8200 section 4); None for a chain that runs
    /// past the frame.
    pub fn upper(&self) -> Option<Upper> {
        let mut next = self.0[20];
        let mut off = 14 + 40;
        let mut fragment = None;
        for _ in 0..8 {
            match next {
                0 | 43 | 60 => {
                    let h = self.0.get(off..off + 2)?;
                    next = h[0];
                    off += (usize::from(h[1]) + 1) * 8;
                }
                44 => {
                    let h = self.0.get(off..off + 8)?;
                    next = h[0];
                    let fo = u16::from_be_bytes([h[2], h[3]]);
                    fragment = Some((usize::from(fo & 0xfff8), fo & 1 == 1));
                    off += 8;
                }
                proto => {
                    return (off <= self.0.len()).then_some(Upper {
                        proto,
                        offset: off,
                        fragment,
                    })
                }
            }
        }
        None
    }
    /// The UDP header and payload of an unfragmented IPv6 datagram.
    pub fn unfragmented_udp(&self) -> Option<&[u8]> {
        let u = self.upper()?;
        (u.proto == PROTO_UDP && u.fragment.is_none_or(|(o, m)| o == 0 && !m))
            .then(|| self.0.get(u.offset..))
            .flatten()
    }
    /// The ICMPv6 type, if the upper layer is ICMPv6.
    pub fn icmp6_type(&self) -> Option<u8> {
        let u = self.upper()?;
        (u.proto == PROTO_ICMPV6)
            .then(|| self.0.get(u.offset).copied())
            .flatten()
    }
}
