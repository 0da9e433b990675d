//! Who counted a packet and why one was dropped: the codes of
//! `enum mcast_role` and `enum mcast_drop_reason`, their stable labels, and
//! the drop events of `mcast_egw_events`.

use std::net::IpAddr;

use super::codec::{from_be, from_be6};
use crate::bpf_intf as intf;
use crate::bpf_intf::{mcast_drop_reason as RawDrop, mcast_role as RawRole};
use crate::datapath::Plain;

/// Who counted a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Captured from a pod and sent towards its gateway.
    Origin,
    /// Emitted on the gateway's uplink.
    Gateway,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Origin, Role::Gateway];

    /// The stable label, from the header like the drop reasons'.
    pub fn label(self) -> &'static str {
        label_of(intf::ROLE_LABELS, self.raw())
    }

    pub(super) fn raw(self) -> u32 {
        match self {
            Role::Origin => RawRole::MCAST_ROLE_ORIGIN as u32,
            Role::Gateway => RawRole::MCAST_ROLE_GATEWAY as u32,
        }
    }

    pub fn from_raw(raw: u32) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.raw() == raw)
    }
}

/// The label of `code` in a generated table; every code the enums define
/// has one (build.rs refuses an enumerator without).
fn label_of(table: &[(u32, &'static str)], code: u32) -> &'static str {
    table
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("unknown", |(_, label)| label)
}

/// Why the datapath dropped a packet: the codes of `enum mcast_drop_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropReason(u32);

impl DropReason {
    pub const NO_GATEWAY: DropReason = DropReason(RawDrop::MCAST_DROP_NO_GATEWAY as u32);
    pub const SPOOFED_SOURCE: DropReason = DropReason(RawDrop::MCAST_DROP_SPOOFED_SOURCE as u32);
    pub const UNKNOWN_SOURCE: DropReason = DropReason(RawDrop::MCAST_DROP_UNKNOWN_SOURCE as u32);
    pub const UNKNOWN_PEER: DropReason = DropReason(RawDrop::MCAST_DROP_UNKNOWN_PEER as u32);
    pub const NOT_GATEWAY: DropReason = DropReason(RawDrop::MCAST_DROP_NOT_GATEWAY as u32);
    pub const NO_EGRESS_IP: DropReason = DropReason(RawDrop::MCAST_DROP_NO_EGRESS_IP as u32);
    pub const TTL_EXCEEDED: DropReason = DropReason(RawDrop::MCAST_DROP_TTL_EXCEEDED as u32);
    pub const NO_TUNNEL: DropReason = DropReason(RawDrop::MCAST_DROP_NO_TUNNEL as u32);
    pub const NO_EGRESS_IFACE: DropReason = DropReason(RawDrop::MCAST_DROP_NO_EGRESS_IFACE as u32);
    pub const UNSUPPORTED_PROTOCOL: DropReason =
        DropReason(RawDrop::MCAST_DROP_UNSUPPORTED_PROTO as u32);
    pub const MALFORMED: DropReason = DropReason(RawDrop::MCAST_DROP_MALFORMED as u32);
    pub const TUNNEL_KEY: DropReason = DropReason(RawDrop::MCAST_DROP_TUNNEL_KEY as u32);
    pub const REWRITE: DropReason = DropReason(RawDrop::MCAST_DROP_REWRITE as u32);
    pub const CLONE: DropReason = DropReason(RawDrop::MCAST_DROP_CLONE as u32);
    pub const ORIGIN_MISMATCH: DropReason = DropReason(RawDrop::MCAST_DROP_ORIGIN_MISMATCH as u32);
    pub const MTU_EXCEEDED: DropReason = DropReason(RawDrop::MCAST_DROP_MTU_EXCEEDED as u32);
    pub const EXCLUDED: DropReason = DropReason(RawDrop::MCAST_DROP_EXCLUDED as u32);
    pub const NO_POLICY: DropReason = DropReason(RawDrop::MCAST_DROP_NO_POLICY as u32);
    pub const REDIRECT: DropReason = DropReason(RawDrop::MCAST_DROP_REDIRECT as u32);
    pub const DST_MAC_MISMATCH: DropReason = DropReason(RawDrop::MCAST_DROP_DST_MAC as u32);

    /// One past the largest code.
    pub const MAX: u32 = RawDrop::MCAST_DROP_MAX as u32;

    /// Every code the datapath has, in code order.
    pub fn all() -> impl Iterator<Item = DropReason> {
        (1..Self::MAX).map(DropReason)
    }

    pub fn code(self) -> u32 {
        self.0
    }

    pub fn from_code(code: u32) -> Option<DropReason> {
        (1..Self::MAX).contains(&code).then_some(DropReason(code))
    }

    /// The stable label, for metrics and the CLI: the one its enumerator's
    /// comment in `include/mcast_egress.h` starts with (a code without one
    /// does not build).
    pub fn label(self) -> &'static str {
        label_of(intf::DROP_LABELS, self.0)
    }

    pub fn from_label(label: &str) -> Option<DropReason> {
        DropReason::all().find(|r| r.label() == label)
    }
}

/// The address family of a packet: which instance of the counter and drop
/// maps counted it, and which layout its drop event has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The stable label, for metrics and the CLI.
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

/// One drop as the datapath reported it on `mcast_egw_events`: an IPv4
/// (`struct mcast_drop_event`) or an IPv6 packet (`struct
/// mcast_drop_event6`); the addresses say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_ns()`: monotonic, since boot.
    pub timestamp_ns: u64,
    pub source: IpAddr,
    pub group: IpAddr,
    pub ifindex: u32,
    pub reason: DropReason,
    pub role: Role,
    pub len: u32,
    /// The upper-layer protocol; for IPv6 the one behind the extension
    /// headers.
    pub proto: u8,
    /// The TTL of an IPv4 packet, the hop limit of an IPv6 one.
    pub ttl: u8,
}

/// Why a ring buffer record is not a drop event this build can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error(
        "a record of {0} bytes: neither an IPv4 drop event ({v4} bytes) nor an IPv6 one ({v6} bytes)",
        v4 = DropEvent::SIZE_V4,
        v6 = DropEvent::SIZE_V6
    )]
    Size(usize),
    #[error("a drop event with unknown reason code {0}")]
    Reason(u32),
    #[error("a drop event with unknown role {0}")]
    Role(u32),
}

impl DropEvent {
    /// Bytes of an IPv4 drop event record.
    pub const SIZE_V4: usize = std::mem::size_of::<intf::mcast_drop_event>();
    /// Bytes of an IPv6 drop event record.
    pub const SIZE_V6: usize = std::mem::size_of::<intf::mcast_drop_event6>();

    /// Decode a ring buffer record. Both layouts share the one ring
    /// buffer and are told apart by their size, which the ring buffer
    /// keeps exactly (a record is never padded). A record of another
    /// size, or with a reason or role this build does not know (a
    /// datapath of another version), is an error, never a guess.
    pub fn decode(bytes: &[u8]) -> Result<DropEvent, EventError> {
        let wrong_size = EventError::Size(bytes.len());
        match bytes.len() {
            Self::SIZE_V4 => {
                let e = intf::mcast_drop_event::from_bytes(bytes).ok_or(wrong_size)?;
                let (reason, role) = known(e.reason, e.role)?;
                Ok(DropEvent {
                    timestamp_ns: e.timestamp_ns,
                    source: from_be(e.saddr).into(),
                    group: from_be(e.daddr).into(),
                    ifindex: e.ifindex,
                    reason,
                    role,
                    len: e.len,
                    proto: e.proto,
                    ttl: e.ttl,
                })
            }
            Self::SIZE_V6 => {
                let e = intf::mcast_drop_event6::from_bytes(bytes).ok_or(wrong_size)?;
                let (reason, role) = known(e.reason, e.role)?;
                Ok(DropEvent {
                    timestamp_ns: e.timestamp_ns,
                    source: from_be6(&e.saddr).into(),
                    group: from_be6(&e.daddr).into(),
                    ifindex: e.ifindex,
                    reason,
                    role,
                    len: e.len,
                    proto: e.proto,
                    ttl: e.hop_limit,
                })
            }
            _ => Err(wrong_size),
        }
    }

    pub fn family(&self) -> Family {
        Family::of(self.source)
    }
}

/// The reason and role codes of an event, if this build knows them.
fn known(reason: u32, role: u32) -> Result<(DropReason, Role), EventError> {
    Ok((
        DropReason::from_code(reason).ok_or(EventError::Reason(reason))?,
        Role::from_raw(role).ok_or(EventError::Role(role))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::codec::be6;
    use super::*;

    #[test]
    fn every_drop_code_has_a_distinct_stable_label() {
        let labels: Vec<&str> = DropReason::all().map(DropReason::label).collect();
        assert_eq!(labels.len() as u32, DropReason::MAX - 1);
        assert!(!labels.contains(&"unknown"));
        let mut uniq = labels.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), labels.len());
        for r in DropReason::all() {
            assert_eq!(DropReason::from_label(r.label()), Some(r));
            assert_eq!(DropReason::from_code(r.code()), Some(r));
        }
        assert_eq!(DropReason::from_code(0), None);
        assert_eq!(DropReason::from_code(DropReason::MAX), None);
        // Codes are part of the contract: these never change.
        assert_eq!(DropReason::NO_GATEWAY.code(), 1);
        assert_eq!(DropReason::SPOOFED_SOURCE.label(), "spoofed_source");
        assert_eq!(DropReason::TTL_EXCEEDED.code(), 7);
        assert_eq!(DropReason::TTL_EXCEEDED.label(), "ttl_exceeded");
    }

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::from_raw(r.raw()), Some(r));
        }
        assert_eq!(Role::from_raw(2), None);
        assert_eq!(Role::Origin.label(), "origin");
        assert_eq!(Role::Gateway.label(), "gateway");
    }

    fn raw_v4() -> intf::mcast_drop_event {
        intf::mcast_drop_event {
            timestamp_ns: 5_000_000_000,
            saddr: u32::from_ne_bytes([198, 51, 100, 11]),
            daddr: u32::from_ne_bytes([232, 1, 1, 1]),
            ifindex: 7,
            reason: DropReason::SPOOFED_SOURCE.code(),
            role: Role::Origin.raw(),
            len: 50,
            proto: 17,
            ttl: 8,
            ..Default::default()
        }
    }

    fn raw_v6() -> intf::mcast_drop_event6 {
        let src: std::net::Ipv6Addr = "2001:db8:100::11".parse().unwrap();
        let grp: std::net::Ipv6Addr = "ff3e::8000:1".parse().unwrap();
        intf::mcast_drop_event6 {
            timestamp_ns: 6_000_000_000,
            saddr: be6(src),
            daddr: be6(grp),
            ifindex: 9,
            reason: DropReason::TTL_EXCEEDED.code(),
            role: Role::Gateway.raw(),
            len: 90,
            proto: 17,
            hop_limit: 1,
            ..Default::default()
        }
    }

    #[test]
    fn event_sizes_are_the_contracts() {
        assert_eq!(DropEvent::SIZE_V4, 40);
        assert_eq!(DropEvent::SIZE_V6, 64);
    }

    #[test]
    fn a_40_byte_record_is_an_ipv4_event() {
        let raw = raw_v4();
        let bytes = raw.as_bytes();
        assert_eq!(bytes.len(), 40);
        let e = DropEvent::decode(bytes).unwrap();
        assert_eq!(
            e,
            DropEvent {
                timestamp_ns: 5_000_000_000,
                source: "198.51.100.11".parse().unwrap(),
                group: "232.1.1.1".parse().unwrap(),
                ifindex: 7,
                reason: DropReason::SPOOFED_SOURCE,
                role: Role::Origin,
                len: 50,
                proto: 17,
                ttl: 8,
            }
        );
        assert_eq!(e.family(), Family::Ipv4);
    }

    #[test]
    fn a_64_byte_record_is_an_ipv6_event_with_its_hop_limit() {
        let raw = raw_v6();
        let bytes = raw.as_bytes();
        assert_eq!(bytes.len(), 64);
        // The addresses' bytes sit where the C struct has them, in
        // network order: the decoder must not swap them.
        assert_eq!(&bytes[8..12], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(&bytes[24..26], &[0xff, 0x3e]);
        let e = DropEvent::decode(bytes).unwrap();
        assert_eq!(
            e,
            DropEvent {
                timestamp_ns: 6_000_000_000,
                source: "2001:db8:100::11".parse().unwrap(),
                group: "ff3e::8000:1".parse().unwrap(),
                ifindex: 9,
                reason: DropReason::TTL_EXCEEDED,
                role: Role::Gateway,
                len: 90,
                proto: 17,
                ttl: 1,
            }
        );
        assert_eq!(e.family(), Family::Ipv6);
    }

    #[test]
    fn records_of_other_sizes_are_errors_not_guesses() {
        let v6 = raw_v6();
        let long = [v6.as_bytes(), &[0u8; 8]].concat();
        for n in [0usize, 3, 8, 39, 41, 48, 63, 65, 72] {
            let bytes = &long[..n];
            assert_eq!(DropEvent::decode(bytes), Err(EventError::Size(n)), "{n}");
        }
        let msg = EventError::Size(41).to_string();
        assert!(
            msg.contains("41 bytes") && msg.contains("(40 bytes)"),
            "{msg}"
        );
        assert!(msg.contains("(64 bytes)"), "{msg}");
    }

    #[test]
    fn unknown_reasons_and_roles_are_errors() {
        let mut v4 = raw_v4();
        v4.reason = DropReason::MAX;
        assert_eq!(
            DropEvent::decode(v4.as_bytes()),
            Err(EventError::Reason(DropReason::MAX))
        );
        v4.reason = 0;
        assert_eq!(DropEvent::decode(v4.as_bytes()), Err(EventError::Reason(0)));
        let mut v6 = raw_v6();
        v6.role = 2;
        assert_eq!(DropEvent::decode(v6.as_bytes()), Err(EventError::Role(2)));
    }

    #[test]
    fn family_labels() {
        assert_eq!(Family::Ipv4.label(), "ipv4");
        assert_eq!(Family::Ipv6.label(), "ipv6");
        assert_eq!(Family::of("ff3e::1".parse().unwrap()), Family::Ipv6);
        assert_eq!(Family::of("232.1.1.1".parse().unwrap()), Family::Ipv4);
    }
}
