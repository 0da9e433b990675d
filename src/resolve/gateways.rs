//! Which node is each gateway of a policy, and, on that node, what it
//! egresses through.

use super::*;

/// What this node egresses through as a gateway of one `egressGateways`
/// entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Egress {
    /// 0.0.0.0 when it could not be derived.
    pub(super) ip: Ipv4Addr,
    /// 0 when it could not be derived.
    pub(super) ifindex: u32,
    pub(super) mac: [u8; 6],
}

/// One resolved gateway of a policy.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResolvedGateway {
    /// The gateway node's IP; `None` when no node qualifies.
    pub(super) ip: Option<Ipv4Addr>,
    /// Set only when the gateway is this node.
    pub(super) egress: Option<Egress>,
}

/// Resolve each gateway of a policy, sorted by IP as Cilium sorts them
/// before hashing endpoints onto them (an unresolved one counts as
/// 0.0.0.0, Cilium's "not found" value, and sorts first).
pub(super) fn resolve_gateways(
    policy: &Policy,
    cluster: &Cluster,
    local: &LocalNode,
    problems: &mut Vec<Problem>,
) -> Vec<ResolvedGateway> {
    let several = policy.gateways.len() > 1;
    let mut gateways: Vec<ResolvedGateway> = policy
        .gateways
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let which = if several {
                format!("egressGateways[{i}]")
            } else {
                "egressGateway".to_string()
            };
            // First by name among the selected nodes that have an IP; a
            // selected node without one is passed over, as in Cilium.
            let node = cluster
                .nodes
                .iter()
                .find(|n| n.ip.is_some() && spec.node_selector.matches(n.labels));
            let Some(node) = node else {
                problems.push(Problem::for_policy(
                    &policy.name,
                    Severity::Warning,
                    format!(
                        "no CiliumNode with an InternalIP matches {which}.nodeSelector: \
                         the multicast of the endpoints it serves is dropped (no_gateway)"
                    ),
                ));
                return ResolvedGateway {
                    ip: None,
                    egress: None,
                };
            };
            let egress = (!local.name.is_empty() && node.name == local.name).then(|| {
                derive_egress(spec, local).unwrap_or_else(|why| {
                    problems.push(Problem::for_policy(
                        &policy.name,
                        Severity::Warning,
                        format!(
                            "this node is the gateway of {which} but its egress IP cannot be \
                             derived: {why}; multicast through it is dropped (no_egress_ip)"
                        ),
                    ));
                    Egress {
                        ip: Ipv4Addr::UNSPECIFIED,
                        ifindex: 0,
                        mac: [0; 6],
                    }
                })
            });
            ResolvedGateway {
                ip: node.ip,
                egress,
            }
        })
        .collect();
    gateways.sort_by_key(|g| g.ip.unwrap_or(Ipv4Addr::UNSPECIFIED));
    gateways
}

/// Egress IP and device on the gateway node itself, the way Cilium derives
/// them: `interface` -> its first IPv4; `egressIP` -> the device holding
/// it; neither -> the first IPv4 of the default-route device.
pub(super) fn derive_egress(spec: &GatewaySpec, local: &LocalNode) -> Result<Egress, String> {
    let from = |iface: &Interface, ip: Ipv4Addr| Egress {
        ip,
        ifindex: iface.ifindex,
        mac: iface.mac,
    };
    if let Some(name) = &spec.interface {
        let iface = local
            .interfaces
            .iter()
            .find(|i| &i.name == name)
            .ok_or_else(|| format!("interface {name} does not exist on this node"))?;
        let ip = iface
            .ipv4
            .first()
            .ok_or_else(|| format!("interface {name} has no IPv4 address"))?;
        return Ok(from(iface, *ip));
    }
    if let Some(ip) = spec.egress_ip {
        let IpAddr::V4(ip) = ip else {
            return Err(format!(
                "egressIP {ip} is IPv6 and IPv4 multicast needs an IPv4 source"
            ));
        };
        let iface = local
            .interfaces
            .iter()
            .find(|i| i.ipv4.contains(&ip))
            .ok_or_else(|| format!("no interface of this node holds egressIP {ip}"))?;
        return Ok(from(iface, ip));
    }
    let ifindex = local
        .default_route_ifindex
        .ok_or_else(|| "this node has no IPv4 default route".to_string())?;
    let iface = local
        .interfaces
        .iter()
        .find(|i| i.ifindex == ifindex)
        .ok_or_else(|| format!("the default-route device (ifindex {ifindex}) is not known"))?;
    let ip = iface.ipv4.first().ok_or_else(|| {
        format!(
            "the default-route device {} has no IPv4 address",
            iface.name
        )
    })?;
    Ok(from(iface, *ip))
}
