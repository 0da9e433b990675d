//! From a `CiliumEgressGatewayPolicy` to what resolution needs of it, with
//! Cilium's validation (`ParseCEGP` in `pkg/egressgateway/policy.go`) plus
//! our multicast rules.

use std::net::IpAddr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::cidr::{self, Cidr};
use super::selector::Selector;
use super::{Problem, Severity};
use crate::crd::{CiliumEgressGatewayPolicy, EgressGateway};

/// Cilium rejects more gateways than this (CRD `maxItems`).
const MAX_EGRESS_GATEWAYS: usize = 64;

/// One entry of `egressGateways` (or the `egressGateway`).
#[derive(Debug, Clone)]
pub(super) struct GatewaySpec {
    pub node_selector: Selector,
    pub interface: Option<String>,
    pub egress_ip: Option<IpAddr>,
}

/// A policy that concerns multicast and is valid.
#[derive(Debug, Clone)]
pub(super) struct Policy {
    pub name: String,
    /// One per rule; an endpoint matching any is selected.
    pub endpoint_selectors: Vec<Selector>,
    /// The rules' `nodeSelector`s. Cilium keeps them in one list beside the
    /// endpoint selectors, not paired with their rule: when any is set, an
    /// endpoint is selected only if its node matches one of them.
    pub node_selectors: Vec<Selector>,
    /// Canonical IPv4 multicast prefixes.
    pub v4: Cidrs<Ipv4Network>,
    /// Canonical IPv6 multicast prefixes. Between the two families, at
    /// least one destination.
    pub v6: Cidrs<Ipv6Network>,
    /// At least one.
    pub gateways: Vec<GatewaySpec>,
}

/// The multicast prefixes of one family in a policy.
#[derive(Debug, Clone)]
pub(super) struct Cidrs<N> {
    pub destinations: Vec<N>,
    /// Carved out of the destinations.
    pub excluded: Vec<N>,
}

impl<N> Default for Cidrs<N> {
    fn default() -> Self {
        Cidrs {
            destinations: Vec::new(),
            excluded: Vec::new(),
        }
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Both families' prefixes, sorted into their lists.
#[derive(Debug, Default)]
struct Prefixes {
    v4: Vec<Ipv4Network>,
    v6: Vec<Ipv6Network>,
}

impl Prefixes {
    fn add(&mut self, net: IpNetwork) {
        match net {
            IpNetwork::V4(net) => push_unique(&mut self.v4, net),
            IpNetwork::V6(net) => push_unique(&mut self.v6, net),
        }
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// Collects findings about one policy.
struct Findings<'a> {
    policy: &'a str,
    problems: &'a mut Vec<Problem>,
    /// A finding that skips the whole policy was made.
    fatal: bool,
}

impl Findings<'_> {
    fn push(&mut self, severity: Severity, message: String) {
        self.problems
            .push(Problem::for_policy(self.policy, severity, message));
    }

    /// Cilium refuses the whole policy for this: so do we.
    fn fatal(&mut self, message: String) {
        self.fatal = true;
        self.push(Severity::Invalid, format!("policy skipped: {message}"));
    }
}

/// Parse one policy. `None` when it does not concern multicast (silently:
/// unicast policy is Cilium's) or when it is invalid (with its problems
/// recorded).
pub(super) fn parse(
    cegp: &CiliumEgressGatewayPolicy,
    problems: &mut Vec<Problem>,
) -> Option<Policy> {
    let name = cegp.metadata.name.clone().unwrap_or_default();
    let spec = &cegp.spec;
    let mut findings = Findings {
        policy: &name,
        problems,
        fatal: false,
    };

    let (destinations, ours) = destination_cidrs(&spec.destination_cidrs, &mut findings);
    if !ours {
        return None;
    }
    if name.is_empty() {
        findings.fatal("a CiliumEgressGatewayPolicy must have a name".to_string());
    }
    let excluded = excluded_cidrs(&spec.excluded_cidrs, &mut findings);
    let gateways = gateways(&spec.egress_gateway, &spec.egress_gateways, &mut findings);
    let (endpoint_selectors, node_selectors) = rules(cegp, &mut findings);

    if findings.fatal || destinations.is_empty() {
        return None;
    }
    Some(Policy {
        name,
        endpoint_selectors,
        node_selectors,
        v4: Cidrs {
            destinations: destinations.v4,
            excluded: excluded.v4,
        },
        v6: Cidrs {
            destinations: destinations.v6,
            excluded: excluded.v6,
        },
        gateways,
    })
}

/// The usable multicast destinations, and whether the policy concerns
/// multicast at all (any multicast entry, usable or not, or an entry we
/// cannot read: Cilium rejects the whole policy for that, so it is worth
/// saying).
fn destination_cidrs(cidrs: &[String], findings: &mut Findings) -> (Prefixes, bool) {
    let mut usable = Prefixes::default();
    let mut ours = false;
    for text in cidrs {
        match cidr::classify(text) {
            Ok(Cidr::Multicast(net)) => {
                ours = true;
                usable.add(net);
            }
            Ok(Cidr::NonCanonical { canonical }) => {
                ours = true;
                findings.push(
                    Severity::Invalid,
                    format!(
                        "destinationCIDRs entry {text} is not canonical (host bits set; \
                         did you mean {canonical}?): entry skipped"
                    ),
                );
            }
            Ok(Cidr::NeverLeaves(_)) => {
                ours = true;
                findings.push(
                    Severity::Warning,
                    format!(
                        "destinationCIDRs entry {text} never leaves the node: its groups' \
                         scope is interface-local, link-local or reserved (below site, \
                         RFC 4291 2.7); entry skipped"
                    ),
                );
            }
            Ok(Cidr::NotOurs) => {}
            Err(why) => {
                ours = true;
                findings.fatal(format!(
                    "destinationCIDRs entry {text:?} cannot be parsed: {why}"
                ));
            }
        }
    }
    (usable, ours)
}

/// The excluded multicast prefixes; others only concern Cilium.
fn excluded_cidrs(cidrs: &[String], findings: &mut Findings) -> Prefixes {
    let mut usable = Prefixes::default();
    for text in cidrs {
        match cidr::classify(text) {
            Ok(Cidr::Multicast(net)) => usable.add(net),
            Ok(Cidr::NonCanonical { canonical }) => findings.push(
                Severity::Invalid,
                format!(
                    "excludedCIDRs entry {text} is not canonical (host bits set; \
                     did you mean {canonical}?): entry skipped, its groups are not excluded"
                ),
            ),
            // Groups that never leave need no exclusion: nothing to write.
            Ok(Cidr::NeverLeaves(_) | Cidr::NotOurs) => {}
            Err(why) => findings.fatal(format!(
                "excludedCIDRs entry {text:?} cannot be parsed: {why}"
            )),
        }
    }
    usable
}

/// `egressGateways` when it has entries, else `egressGateway`.
fn gateways(
    single: &Option<EgressGateway>,
    list: &[EgressGateway],
    findings: &mut Findings,
) -> Vec<GatewaySpec> {
    if list.len() > MAX_EGRESS_GATEWAYS {
        findings.fatal(format!(
            "egressGateways has {} entries, more than the {MAX_EGRESS_GATEWAYS} Cilium accepts",
            list.len()
        ));
        return Vec::new();
    }
    if !list.is_empty() {
        return list
            .iter()
            .enumerate()
            .filter_map(|(i, gw)| gateway(gw, &format!("egressGateways[{i}]"), findings))
            .collect();
    }
    match single {
        Some(gw) => gateway(gw, "egressGateway", findings).into_iter().collect(),
        None => {
            findings.fatal("neither egressGateway nor egressGateways is set".to_string());
            Vec::new()
        }
    }
}

fn gateway(gw: &EgressGateway, field: &str, findings: &mut Findings) -> Option<GatewaySpec> {
    let interface = gw.interface.clone().filter(|s| !s.is_empty());
    let egress_ip_text = gw.egress_ip.as_deref().filter(|s| !s.is_empty());
    if interface.is_some() && egress_ip_text.is_some() {
        findings.fatal(format!(
            "{field} sets both interface and egressIP; set one of them"
        ));
        return None;
    }
    let egress_ip = match egress_ip_text.map(str::parse::<IpAddr>) {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => {
            findings.fatal(format!(
                "{field}.egressIP {:?} is not an IP address",
                egress_ip_text.unwrap_or_default()
            ));
            return None;
        }
    };
    // The CRD makes nodeSelector required: the API server would have
    // refused the object; a manifest file is not checked by anyone else.
    let Some(node_selector) = &gw.node_selector else {
        findings.fatal(format!("{field}.nodeSelector is required"));
        return None;
    };
    let node_selector = selector(node_selector, &format!("{field}.nodeSelector"), findings)?;
    Some(GatewaySpec {
        node_selector,
        interface,
        egress_ip,
    })
}

/// The rules' endpoint selectors and node selectors.
fn rules(
    cegp: &CiliumEgressGatewayPolicy,
    findings: &mut Findings,
) -> (Vec<Selector>, Vec<Selector>) {
    if cegp.spec.selectors.is_empty() {
        // Cilium's CRD requires the field, but an empty list passes the
        // API server, and a manifest file is checked by nobody: either way
        // the policy would select no endpoint, which is a mistake to say
        // out loud rather than a policy to apply to nothing.
        findings.fatal("selectors is missing or empty: the policy selects no endpoint".to_string());
        return (Vec::new(), Vec::new());
    }
    let mut endpoint_selectors = Vec::new();
    let mut node_selectors = Vec::new();
    for (i, rule) in cegp.spec.selectors.iter().enumerate() {
        let field = format!("selectors[{i}]");
        let endpoints = match (&rule.namespace_selector, &rule.pod_selector) {
            (Some(ns), pod) => {
                let ns = match Selector::namespace(ns) {
                    Ok(ns) => Some(ns),
                    Err(why) => {
                        findings.fatal(format!("{field}.namespaceSelector: {why}"));
                        None
                    }
                };
                let pod = match pod {
                    Some(pod) => selector(pod, &format!("{field}.podSelector"), findings),
                    None => Some(Selector::default()),
                };
                ns.zip(pod).map(|(ns, pod)| ns.and(pod))
            }
            (None, Some(pod)) => selector(pod, &format!("{field}.podSelector"), findings),
            (None, None) => {
                // Cilium's ParseCEGP refuses the whole policy, not the rule.
                findings.fatal(format!(
                    "{field} has neither podSelector nor namespaceSelector"
                ));
                None
            }
        };
        endpoint_selectors.extend(endpoints);
        if let Some(nodes) = &rule.node_selector {
            node_selectors.extend(selector(nodes, &format!("{field}.nodeSelector"), findings));
        }
    }
    (endpoint_selectors, node_selectors)
}

/// Compile a pod or node selector (keys as written).
fn selector(selector: &LabelSelector, field: &str, findings: &mut Findings) -> Option<Selector> {
    match Selector::compile(selector, "") {
        Ok(s) => Some(s),
        Err(why) => {
            findings.fatal(format!("{field}: {why}"));
            None
        }
    }
}
