//! Which CIDRs of a policy are ours.
//!
//! A policy's own prefix decides, never an LPM hit: `0.0.0.0/0` matches
//! multicast addresses in an LPM trie, but a catch-all is unicast policy and
//! stays Cilium's business. Ours are the prefixes inside 224.0.0.0/4 and
//! ff00::/8.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// What one entry of `destinationCIDRs` or `excludedCIDRs` is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cidr {
    /// A canonical prefix inside 224.0.0.0/4 or ff00::/8: ours.
    Multicast(IpNetwork),
    /// Inside 224.0.0.0/4 or ff00::/8 but with host bits set
    /// (`232.0.0.0/4`, `ff3e::1/96`): the operator meant something, we
    /// cannot tell what.
    NonCanonical { canonical: IpNetwork },
    /// A canonical IPv6 prefix whose every group has a scope that never
    /// leaves the node's link (interface- or link-local, reserved:
    /// ff02::/16, ff01::/16, ff12::/16): ours, and nothing to do.
    NeverLeaves(Ipv6Network),
    /// Unicast, a catch-all, or a supernet of 224.0.0.0/4 or ff00::/8:
    /// Cilium's.
    NotOurs,
}

/// 224.0.0.0/4: IPv4 multicast (RFC 5771).
const MULTICAST_V4_BITS: u8 = 4;
/// ff00::/8: IPv6 multicast (RFC 4291).
const MULTICAST_V6_BITS: u8 = 8;

/// Parse a CIDR the way Cilium does (Go's `netip.ParsePrefix`: an address,
/// a slash and a decimal length without leading zeros) and say whether it
/// is ours.
pub(super) fn classify(text: &str) -> Result<Cidr, String> {
    let (addr, bits) = parse_prefix(text)?;
    Ok(match addr {
        IpAddr::V4(addr) => classify_v4(addr, bits),
        IpAddr::V6(addr) => classify_v6(addr, bits),
    })
}

fn classify_v6(addr: Ipv6Addr, bits: u8) -> Cidr {
    // `::/0` and anything shorter than /8 cover unicast too: Cilium's.
    if bits < MULTICAST_V6_BITS || !addr.is_multicast() {
        return Cidr::NotOurs;
    }
    match Ipv6Network::new(addr, bits) {
        Ok(net) if net.network() == addr && never_leaves(net) => Cidr::NeverLeaves(net),
        Ok(net) if net.network() == addr => Cidr::Multicast(IpNetwork::V6(net)),
        Ok(net) => match Ipv6Network::new(net.network(), bits) {
            Ok(canonical) => Cidr::NonCanonical {
                canonical: IpNetwork::V6(canonical),
            },
            // Unreachable: the length was accepted just above.
            Err(_) => Cidr::NotOurs,
        },
        // Unreachable: parse_prefix bounds the length by 128.
        Err(_) => Cidr::NotOurs,
    }
}

/// Scopes up to this one never leave the node's link, whatever a policy
/// says (RFC 4291 2.7: 0 reserved, 1 interface-local, 2 link-local); the
/// datapath passes them to Cilium untouched.
const NEVER_EGRESS_SCOPE_MAX: u8 = 2;

/// Whether every group in `net` (inside ff00::/8) has a scope that never
/// leaves: the scope is the low nibble of the second byte, so a prefix
/// fixes it only from /12 on, wholly from /16 on.
pub(super) fn never_leaves(net: Ipv6Network) -> bool {
    let Some(fixed) = net.prefix().checked_sub(12) else {
        return false;
    };
    let free = 4u8.saturating_sub(fixed);
    let scope = net.network().octets()[1] & 0x0f;
    // The highest scope the prefix covers: its free scope bits all set.
    let highest = scope | ((1u8 << free) - 1);
    highest <= NEVER_EGRESS_SCOPE_MAX
}

fn classify_v4(addr: Ipv4Addr, bits: u8) -> Cidr {
    // A prefix shorter than /4 covers unicast too (224.0.0.0/3 reaches up
    // to 255.255.255.255): like the catch-all, it is unicast policy.
    if bits < MULTICAST_V4_BITS || !addr.is_multicast() {
        return Cidr::NotOurs;
    }
    match Ipv4Network::new(addr, bits) {
        Ok(net) if net.network() == addr => Cidr::Multicast(IpNetwork::V4(net)),
        Ok(net) => match Ipv4Network::new(net.network(), bits) {
            Ok(canonical) => Cidr::NonCanonical {
                canonical: IpNetwork::V4(canonical),
            },
            // Unreachable: the length was accepted just above.
            Err(_) => Cidr::NotOurs,
        },
        // Unreachable: parse_prefix bounds the length by 32.
        Err(_) => Cidr::NotOurs,
    }
}

fn parse_prefix(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, bits) = text
        .split_once('/')
        .ok_or_else(|| "no prefix length (expected ADDRESS/LENGTH)".to_string())?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let well_formed = !bits.is_empty()
        && bits.bytes().all(|b| b.is_ascii_digit())
        && (bits == "0" || !bits.starts_with('0'));
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    match bits.parse::<u8>() {
        Ok(bits) if well_formed && bits <= max => Ok((addr, bits)),
        _ => Err(format!(
            "prefix length {bits:?} is not a number from 0 to {max}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Ipv6Network {
        s.parse().unwrap()
    }

    #[test]
    fn scopes_that_never_leave() {
        for net in [
            "ff02::/16",
            "ff01::/16",
            "ff00::/16",
            "ff12::/16",
            "ff32::/16",
            "ff02::1:ff00:0/104",
            "ff00::/15",
        ] {
            assert!(never_leaves(v6(net)), "{net}");
        }
        for net in [
            "ff00::/8",
            "ff00::/12",
            "ff00::/14",
            "ff02::/15",
            "ff05::/16",
            "ff3e::/16",
            "ff3e::/96",
            "ff0e::/16",
        ] {
            assert!(!never_leaves(v6(net)), "{net}");
        }
    }

    #[test]
    fn ipv6_classification() {
        let ours = |s: &str| Cidr::Multicast(IpNetwork::V6(v6(s)));
        assert_eq!(classify("ff3e::/96"), Ok(ours("ff3e::/96")));
        assert_eq!(classify("ff3e::8000:0/112"), Ok(ours("ff3e::8000:0/112")));
        assert_eq!(classify("ff00::/8"), Ok(ours("ff00::/8")));
        assert_eq!(classify("ff3e::8000:1/128"), Ok(ours("ff3e::8000:1/128")));
        assert_eq!(
            classify("ff3e::8000:0/96"),
            Ok(Cidr::NonCanonical {
                canonical: IpNetwork::V6(v6("ff3e::/96"))
            })
        );
        assert_eq!(
            classify("ff3e::1/96"),
            Ok(Cidr::NonCanonical {
                canonical: IpNetwork::V6(v6("ff3e::/96"))
            })
        );
        assert_eq!(
            classify("ff02::/16"),
            Ok(Cidr::NeverLeaves(v6("ff02::/16")))
        );
        for not_ours in ["::/0", "fe00::/7", "ff00::/7", "2001:db8::/32", "::/8"] {
            assert_eq!(classify(not_ours), Ok(Cidr::NotOurs), "{not_ours}");
        }
        for bad in ["ff3e::/129", "ff3e::", "ff3e:::/96", "ff3e::/096"] {
            assert!(classify(bad).is_err(), "{bad}");
        }
    }
}
