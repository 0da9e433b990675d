//! How each Rust type of the maps is stored: byte order, sentinels, the
//! policy key's layout (Cilium's LPM key), C strings. One [`Codec`] per type, so a map's entries
//! are encoded the same way wherever they are written.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::typed::{stored_as_is, Codec};
use super::{
    EgressIface, Endpoint, Gateway, Origin, PolicyKey, PolicyKey6, PolicyValue, PolicyValue6,
    Status,
};
use crate::bpf_intf as intf;
use crate::datapath::{DatapathError, Result};

pub(super) fn be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

pub(super) fn from_be(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

stored_as_is!(
    intf::mcast_node_val,
    intf::mcast_group_val,
    intf::mcast_config,
    intf::mcast_counter_key,
    intf::mcast_counter_key6,
    intf::mcast_counter_val,
    intf::mcast_events_limit,
    intf::mcast_tunnel_pending,
);

/// Addresses are stored in network byte order (`__be32`).
impl Codec for Ipv4Addr {
    type Raw = u32;
    fn encode(&self) -> u32 {
        be(*self)
    }
    fn decode(raw: &u32) -> Result<Ipv4Addr> {
        Ok(from_be(*raw))
    }
}

pub(super) fn be6(addr: Ipv6Addr) -> intf::mcast_in6_addr {
    let o = addr.octets();
    let mut words = [0u32; 4];
    for (w, chunk) in words.iter_mut().zip(o.chunks_exact(4)) {
        *w = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    intf::mcast_in6_addr { words }
}

pub(super) fn from_be6(raw: &intf::mcast_in6_addr) -> Ipv6Addr {
    let mut o = [0u8; 16];
    for (chunk, w) in o.chunks_exact_mut(4).zip(raw.words) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    Ipv6Addr::from(o)
}

/// IPv6 addresses are stored as their 16 bytes in network order.
impl Codec for Ipv6Addr {
    type Raw = intf::mcast_in6_addr;
    fn encode(&self) -> intf::mcast_in6_addr {
        be6(*self)
    }
    fn decode(raw: &intf::mcast_in6_addr) -> Result<Ipv6Addr> {
        Ok(from_be6(raw))
    }
}

fn encode_gateway(gateway: Gateway) -> u32 {
    match gateway {
        Gateway::Node(ip) => be(ip),
        Gateway::NotFound => intf::MCAST_GATEWAY_NOT_FOUND.to_be(),
        Gateway::Excluded => intf::MCAST_GATEWAY_EXCLUDED.to_be(),
    }
}

fn decode_gateway(raw: u32) -> Gateway {
    match u32::from_be(raw) {
        intf::MCAST_GATEWAY_NOT_FOUND => Gateway::NotFound,
        intf::MCAST_GATEWAY_EXCLUDED => Gateway::Excluded,
        _ => Gateway::Node(from_be(raw)),
    }
}

/// Cilium's `egress_gw_policy_key6` layout: {128 + prefix bits, pod, group prefix}.
impl Codec for PolicyKey6 {
    type Raw = intf::mcast_policy_key6;
    fn encode(&self) -> intf::mcast_policy_key6 {
        intf::mcast_policy_key6 {
            prefixlen: intf::MCAST_POLICY6_SADDR_PREFIXLEN + u32::from(self.destination.prefix()),
            saddr: be6(self.source),
            daddr: be6(self.destination.network()),
        }
    }
    fn decode(raw: &intf::mcast_policy_key6) -> Result<PolicyKey6> {
        let prefix = raw
            .prefixlen
            .checked_sub(intf::MCAST_POLICY6_SADDR_PREFIXLEN)
            .and_then(|p| u8::try_from(p).ok())
            .and_then(|p| Ipv6Network::new(from_be6(&raw.daddr), p).ok())
            .ok_or_else(|| DatapathError::Invalid {
                what: "IPv6 policy key",
                detail: format!("prefixlen {}", raw.prefixlen),
            })?;
        Ok(PolicyKey6 {
            source: from_be6(&raw.saddr),
            destination: prefix,
        })
    }
}

impl Codec for PolicyValue6 {
    type Raw = intf::mcast_policy_val6;
    fn encode(&self) -> intf::mcast_policy_val6 {
        intf::mcast_policy_val6 {
            egress_ip: be6(self.egress_ip),
            gateway_ip: encode_gateway(self.gateway),
            egress_ifindex: self.egress_ifindex,
            policy_id: self.policy_id,
            origin_node_ip: be(self.origin.node),
            origin_identity: self.origin.identity,
            pad: 0,
        }
    }
    fn decode(raw: &intf::mcast_policy_val6) -> Result<PolicyValue6> {
        Ok(PolicyValue6 {
            egress_ip: from_be6(&raw.egress_ip),
            gateway: decode_gateway(raw.gateway_ip),
            egress_ifindex: raw.egress_ifindex,
            policy_id: raw.policy_id,
            origin: Origin {
                node: from_be(raw.origin_node_ip),
                identity: raw.origin_identity,
            },
        })
    }
}

impl Codec for PolicyKey {
    type Raw = intf::mcast_policy_key;
    fn encode(&self) -> intf::mcast_policy_key {
        intf::mcast_policy_key {
            prefixlen: intf::MCAST_POLICY_SADDR_PREFIXLEN + u32::from(self.destination.prefix()),
            saddr: be(self.source),
            daddr: be(self.destination.network()),
        }
    }
    fn decode(raw: &intf::mcast_policy_key) -> Result<PolicyKey> {
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

impl Codec for PolicyValue {
    type Raw = intf::mcast_policy_val;
    fn encode(&self) -> intf::mcast_policy_val {
        intf::mcast_policy_val {
            egress_ip: be(self.egress_ip),
            gateway_ip: encode_gateway(self.gateway),
            egress_ifindex: self.egress_ifindex,
            policy_id: self.policy_id,
            origin_node_ip: be(self.origin.node),
            origin_identity: self.origin.identity,
        }
    }
    fn decode(raw: &intf::mcast_policy_val) -> Result<PolicyValue> {
        Ok(PolicyValue {
            egress_ip: from_be(raw.egress_ip),
            gateway: decode_gateway(raw.gateway_ip),
            egress_ifindex: raw.egress_ifindex,
            policy_id: raw.policy_id,
            origin: Origin {
                node: from_be(raw.origin_node_ip),
                identity: raw.origin_identity,
            },
        })
    }
}

impl Codec for Endpoint {
    type Raw = intf::mcast_endpoint_val;
    fn encode(&self) -> intf::mcast_endpoint_val {
        intf::mcast_endpoint_val {
            ifindex: self.ifindex,
            sec_identity: self.identity,
        }
    }
    fn decode(raw: &intf::mcast_endpoint_val) -> Result<Endpoint> {
        Ok(Endpoint {
            ifindex: raw.ifindex,
            identity: raw.sec_identity,
        })
    }
}

impl Codec for EgressIface {
    type Raw = intf::mcast_iface_val;
    fn encode(&self) -> intf::mcast_iface_val {
        intf::mcast_iface_val {
            mac: self.mac,
            ..Default::default()
        }
    }
    fn decode(raw: &intf::mcast_iface_val) -> Result<EgressIface> {
        Ok(EgressIface { mac: raw.mac })
    }
}

/// A policy name, NUL-terminated (cut at a character boundary to fit).
impl Codec for String {
    type Raw = intf::mcast_policy_name;
    fn encode(&self) -> intf::mcast_policy_name {
        intf::mcast_policy_name {
            name: to_c_chars(self),
        }
    }
    fn decode(raw: &intf::mcast_policy_name) -> Result<String> {
        Ok(from_c_chars(&raw.name))
    }
}

impl Codec for Status {
    type Raw = intf::mcast_status;
    fn encode(&self) -> intf::mcast_status {
        intf::mcast_status {
            node_name: to_c_chars(&self.node_name),
            version: to_c_chars(&self.version),
            last_sync_unix_ns: self.last_sync_unix_ns,
            syncs: self.syncs,
        }
    }
    fn decode(raw: &intf::mcast_status) -> Result<Status> {
        Ok(Status {
            node_name: from_c_chars(&raw.node_name),
            version: from_c_chars(&raw.version),
            last_sync_unix_ns: raw.last_sync_unix_ns,
            syncs: raw.syncs,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::maps::{PolicyLens, PrefixLens};
    use crate::datapath::Plain;

    fn key(src: &str, dst: &str) -> PolicyKey {
        PolicyKey {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    #[test]
    fn policy_key_is_ciliums_byte_layout() {
        // CILIUM.md: a 232.0.0.0/8 policy for a pod -> {40, pod, 232.0.0.0}.
        let raw = key("198.51.100.5", "232.0.0.0/8").encode();
        let bytes = raw.as_bytes();
        assert_eq!(bytes.len(), 12);
        assert_eq!(&bytes[0..4], &40u32.to_ne_bytes(), "prefixlen, host order");
        assert_eq!(&bytes[4..8], &[198, 51, 100, 5], "saddr, network order");
        assert_eq!(&bytes[8..12], &[232, 0, 0, 0], "daddr, network order");
    }

    #[test]
    fn policy_key_masks_host_bits_of_the_destination() {
        let raw = key("198.51.100.5", "232.1.2.3/16").encode();
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
            assert_eq!(PolicyKey::decode(&k.encode()).unwrap(), k);
        }
    }

    #[test]
    fn policy_key_rejects_impossible_prefix_lengths() {
        for prefixlen in [0, 31, 65, 200] {
            let raw = intf::mcast_policy_key {
                prefixlen,
                ..Default::default()
            };
            assert!(PolicyKey::decode(&raw).is_err(), "{prefixlen}");
        }
    }

    #[test]
    fn prefix_lens_are_one_bit_each_longest_lowest() {
        let keys = [
            key("198.51.100.5", "232.0.0.0/8"),
            key("198.51.100.6", "232.1.1.1/32"),
            key("198.51.100.6", "224.0.0.0/4"),
            key("198.51.100.7", "232.0.0.0/8"),
        ];
        let lens = PrefixLens::of(&keys);
        assert_eq!(lens.lens(), vec![32, 8, 4]);
        let raw = lens.encode();
        assert_eq!(raw.dst_lens, 1 | 1 << 24 | 1 << 28, "bit 32 - len");
        assert_eq!(raw.as_bytes().len(), 8);
        assert_eq!(PrefixLens::decode(&raw).unwrap(), lens);
        assert!(lens.contains(8) && !lens.contains(16));
        let only_8 = PrefixLens::of(&keys[..1]);
        assert_eq!(lens.intersection(only_8), only_8);
        assert_eq!(only_8.union(lens), lens);
        assert_eq!(PrefixLens::<Ipv4Addr>::of(&[]).lens(), Vec::<u8>::new());
    }

    #[test]
    fn policy_lens_buckets_are_the_groups_a_prefix_can_match() {
        let bucket = |g: &str| PolicyLens::<Ipv4Addr>::bucket(g.parse().unwrap());
        assert_eq!(bucket("224.0.0.1"), 0);
        assert_eq!(bucket("232.1.200.3"), 0x801);
        assert_eq!(bucket("239.255.255.255"), 0xfff);
        let keys = [
            key("198.51.100.5", "232.0.0.0/8"),
            key("198.51.100.5", "232.1.1.0/24"),
            key("198.51.100.6", "232.1.1.0/24"),
            key("198.51.100.6", "224.0.0.0/4"),
            key("198.51.100.6", "239.128.0.0/9"),
        ];
        let lens = PolicyLens::of(&keys);
        let at = |g: &str| lens.for_group(g.parse().unwrap()).lens();
        assert_eq!(at("232.1.1.1"), vec![24, 8, 4]);
        assert_eq!(at("232.1.2.1"), vec![24, 8, 4], "same /16: one bucket");
        assert_eq!(at("232.9.0.1"), vec![8, 4]);
        assert_eq!(at("233.0.0.1"), vec![4]);
        assert_eq!(at("239.127.0.1"), vec![4]);
        assert_eq!(at("239.128.0.1"), vec![9, 4]);
        assert_eq!(at("239.255.0.1"), vec![9, 4]);
        assert_eq!(lens.iter().count(), 4096, "the /4 covers every bucket");
        let narrow = PolicyLens::of(&keys[1..3]);
        assert_eq!(narrow.iter().count(), 1);

        // What a change adds or takes away, bucket by bucket.
        let before = PolicyLens::of(&keys[..2]);
        let after = PolicyLens::of(&keys[1..2]);
        assert_eq!(
            after.beyond(&before),
            PolicyLens::default(),
            "nothing added"
        );
        let removed = before.beyond(&after);
        assert_eq!(removed.iter().count(), 256, "the /8's buckets");
        assert_eq!(
            removed.for_group("232.1.1.1".parse().unwrap()).lens(),
            vec![24, 8]
        );
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
        let not_found = v(Gateway::NotFound).encode();
        assert_eq!(&not_found.as_bytes()[4..8], &[0, 0, 0, 0]);
        let excluded = v(Gateway::Excluded).encode();
        assert_eq!(&excluded.as_bytes()[4..8], &[0, 0, 0, 1]);
        for g in [
            Gateway::NotFound,
            Gateway::Excluded,
            Gateway::Node(Ipv4Addr::new(192, 0, 2, 7)),
        ] {
            assert_eq!(PolicyValue::decode(&v(g).encode()).unwrap(), v(g));
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
        .encode();
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
}
