//! Who counted a packet and why one was dropped: the codes of
//! `enum mcast_role` and `enum mcast_drop_reason`, their stable labels, and
//! the drop events of `mcast_egw_events`.

use std::net::Ipv4Addr;

use super::codec::from_be;
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

/// One drop as the datapath reported it on `mcast_egw_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_ns()`: monotonic, since boot.
    pub timestamp_ns: u64,
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub ifindex: u32,
    pub reason: DropReason,
    pub role: Role,
    pub len: u32,
    pub proto: u8,
    pub ttl: u8,
}

impl DropEvent {
    /// Decode a ring buffer record; None for one of another layout.
    pub fn decode(bytes: &[u8]) -> Option<DropEvent> {
        if bytes.len() != std::mem::size_of::<intf::mcast_drop_event>() {
            return None;
        }
        let e = intf::mcast_drop_event::from_bytes(bytes)?;
        Some(DropEvent {
            timestamp_ns: e.timestamp_ns,
            source: from_be(e.saddr),
            group: from_be(e.daddr),
            ifindex: e.ifindex,
            reason: DropReason::from_code(e.reason)?,
            role: Role::from_raw(e.role)?,
            len: e.len,
            proto: e.proto,
            ttl: e.ttl,
        })
    }
}

#[cfg(test)]
mod tests {
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
}
