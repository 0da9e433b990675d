//! Inputs and output of resolution.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::datapath::maps::{Config, EgressIface, PolicyKey, PolicyValue};

/// A network interface of this node, as resolution needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// IPv4 addresses in the order the kernel lists them (primary first).
    pub ipv4: Vec<Ipv4Addr>,
}

/// What resolution knows about the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalNode {
    /// This node's name: the `CiliumNode` of the same name is this node.
    pub name: String,
    pub interfaces: Vec<Interface>,
    /// The device of the IPv4 default route, if there is one.
    pub default_route_ifindex: Option<u32>,
    /// ifindex of the tunnel device (`cilium_vxlan`), 0 while absent.
    pub tunnel_ifindex: u32,
}

/// How bad a finding about a policy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The policy (or a part of it) was skipped.
    Invalid,
    /// The policy applies, but something about it needs an operator's eye.
    Warning,
}

/// A finding about one policy, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem {
    pub policy: String,
    pub severity: Severity,
    pub message: String,
}

/// The map contents this node should have: the result of resolution.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    /// Entries of `mcast_egw_policy_v4`.
    pub policies: BTreeMap<PolicyKey, PolicyValue>,
    /// Entries of `mcast_egw_nodes`: every node's InternalIP.
    pub nodes: BTreeSet<Ipv4Addr>,
    /// `mcast_egw_config`.
    pub config: Config,
    /// Entries of `mcast_egw_egress_ifaces`: the uplinks this node egresses
    /// through as a gateway.
    pub egress_ifaces: BTreeMap<u32, EgressIface>,
    /// Policy name -> the `policy_id` in its entries (labels counters).
    pub policy_ids: BTreeMap<String, u32>,
    /// Policies for which this node is a gateway, with the egress IP used
    /// (0.0.0.0 when it could not be derived).
    pub local_gateway_for: BTreeMap<String, Ipv4Addr>,
    /// Invalid policies and warnings, sorted.
    pub problems: Vec<Problem>,
}
