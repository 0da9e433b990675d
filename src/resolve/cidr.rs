//! Which CIDRs of a policy are ours.
//!
//! A policy's own prefix decides, never an LPM hit: `0.0.0.0/0` matches
//! multicast addresses in an LPM trie, but a catch-all is unicast policy and
//! stays Cilium's business. Ours are the prefixes inside 224.0.0.0/4.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::Ipv4Network;

/// What one entry of `destinationCIDRs` or `excludedCIDRs` is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cidr {
    /// A canonical IPv4 prefix inside 224.0.0.0/4: ours.
    Multicast(Ipv4Network),
    /// Inside 224.0.0.0/4 but with host bits set (`232.0.0.0/4`): the
    /// operator meant something, we cannot tell what.
    NonCanonical { canonical: Ipv4Network },
    /// A prefix inside ff00::/8: ours one day, not yet.
    Ipv6Multicast,
    /// Unicast, a catch-all, or a supernet of 224.0.0.0/4: Cilium's.
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
        IpAddr::V6(addr) => {
            if bits >= MULTICAST_V6_BITS && addr.is_multicast() {
                Cidr::Ipv6Multicast
            } else {
                Cidr::NotOurs
            }
        }
    })
}

fn classify_v4(addr: Ipv4Addr, bits: u8) -> Cidr {
    // A prefix shorter than /4 covers unicast too (224.0.0.0/3 reaches up
    // to 255.255.255.255): like the catch-all, it is unicast policy.
    if bits < MULTICAST_V4_BITS || !addr.is_multicast() {
        return Cidr::NotOurs;
    }
    match Ipv4Network::new(addr, bits) {
        Ok(net) if net.network() == addr => Cidr::Multicast(net),
        Ok(net) => match Ipv4Network::new(net.network(), bits) {
            Ok(canonical) => Cidr::NonCanonical { canonical },
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
