//! Inputs and output of resolution.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::datapath::maps::{
    Config, EgressIface, PolicyKey, PolicyKey6, PolicyValue, PolicyValue6,
};

/// A network interface of this node, as resolution needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// IPv4 addresses in the order the kernel lists them (primary first).
    pub ipv4: Vec<Ipv4Addr>,
    /// Global IPv6 addresses ([`is_global_ipv6`]) in the order the kernel
    /// lists them, without those not usable as a source yet or ever
    /// (tentative, DAD failed). Not the link-local address every pod's veth
    /// gets: it would change the node's inputs, and resolve everything
    /// again, for each pod that starts.
    pub ipv6: Vec<Ipv6Addr>,
}

/// Whether an IPv6 address can be the source of what leaves the cluster:
/// global scope (RFC 4291 2.4), so neither link-local, loopback, multicast
/// nor unspecified. Unique local addresses are global in scope.
pub fn is_global_ipv6(ip: &Ipv6Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // fe80::/10 (`is_unicast_link_local`, newer than our MSRV).
        || (ip.segments()[0] & 0xffc0) == 0xfe80
        || ip.to_ipv4_mapped().is_some())
}

/// The pods behind this node's veths (from Cilium's endpoint map), per
/// family: whose origin entries this node keeps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalPods {
    pub v4: BTreeSet<Ipv4Addr>,
    pub v6: BTreeSet<Ipv6Addr>,
}

impl From<BTreeSet<Ipv4Addr>> for LocalPods {
    fn from(v4: BTreeSet<Ipv4Addr>) -> Self {
        LocalPods {
            v4,
            v6: BTreeSet::new(),
        }
    }
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
    /// This node's IP as an earlier resolution found it, if one did. Kept
    /// while its `CiliumNode` is missing from the objects (a source that
    /// lost it for a moment, a node object being recreated), so that the
    /// datapath keeps its tunnel source and gateway address, with a
    /// warning. A name never seen has none: nothing to keep, and that is
    /// an error.
    pub known_ip: Option<Ipv4Addr>,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The input (a policy or a part of it, this node's `CiliumNode`) is
    /// wrong or missing and was skipped: what it should do is not done.
    Invalid,
    /// It applies, but something about it needs an operator's eye.
    Warning,
}

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// This node, by its `--node-name`. First in the sorted list: without
    /// it nothing of this node's gateway role works.
    Node(String),
    /// A map of this node, by name: what the node needs does not fit.
    Map(String),
    /// One `CiliumEgressGatewayPolicy`, by name.
    Policy(String),
    /// `CiliumEndpoint`s, as one finding with a count: a cluster of
    /// 10,000 endpoints must not make 10,000 findings, log lines or
    /// metric series.
    Endpoints,
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Node(name) => write!(f, "node {name}"),
            Subject::Map(name) => write!(f, "map {name}"),
            Subject::Policy(name) => write!(f, "policy {name}"),
            Subject::Endpoints => f.write_str("endpoints"),
        }
    }
}

/// A finding about the input, for logs, metrics, `/readyz` and `status`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem {
    pub subject: Subject,
    pub severity: Severity,
    pub message: String,
}

impl Problem {
    pub fn for_policy(name: &str, severity: Severity, message: String) -> Problem {
        Problem {
            subject: Subject::Policy(name.to_string()),
            severity,
            message,
        }
    }

    /// The policy it is about, if it is about one.
    pub fn policy_name(&self) -> Option<&str> {
        match &self.subject {
            Subject::Policy(name) => Some(name),
            _ => None,
        }
    }
}

/// The map contents this node should have: the result of resolution.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    /// Entries of `mcast_egw_policy_hash_v4`.
    pub policies: BTreeMap<PolicyKey, PolicyValue>,
    /// Entries of `mcast_egw_policy_hash_v6`.
    pub policies_v6: BTreeMap<PolicyKey6, PolicyValue6>,
    /// Entries of `mcast_egw_nodes`: every node's InternalIP.
    pub nodes: BTreeSet<Ipv4Addr>,
    /// `mcast_egw_config`.
    pub config: Config,
    /// Entries of `mcast_egw_egress_ifaces`: the uplinks this node egresses
    /// through as a gateway.
    pub egress_ifaces: BTreeMap<u32, EgressIface>,
    /// Policy name -> the `policy_id` in its entries (labels counters).
    pub policy_ids: BTreeMap<String, u32>,
    /// Policies with IPv4 destinations for which this node is a gateway,
    /// with the egress IP used (0.0.0.0 when it could not be derived).
    pub local_gateway_for: BTreeMap<String, Ipv4Addr>,
    /// Policies with IPv6 destinations for which this node is a gateway,
    /// with the egress IPv6 used (:: when it could not be derived).
    pub local_gateway_for_v6: BTreeMap<String, Ipv6Addr>,
    /// Invalid input and warnings, sorted.
    pub problems: Vec<Problem>,
    /// `CiliumEndpoint`s skipped because they have no security identity
    /// (none, or one without labels): no policy can select them.
    pub endpoints_without_identity: usize,
}

impl Desired {
    /// The finding about this node's `CiliumNode`, if there is one: it is
    /// missing or has no IPv4 InternalIP.
    pub fn node_problem(&self) -> Option<&Problem> {
        self.problems
            .iter()
            .find(|p| matches!(p.subject, Subject::Node(_)))
    }
}
