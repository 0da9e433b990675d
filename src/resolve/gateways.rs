//! Which node is each gateway of a policy, and, on that node, what it
//! egresses through.

use super::*;

/// What this node egresses one family through as a gateway of one
/// `egressGateways` entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct EgressOf<A> {
    /// Unspecified when it could not be derived.
    pub(super) ip: A,
    /// 0 when it could not be derived.
    pub(super) ifindex: u32,
    pub(super) mac: [u8; 6],
}

impl<A> EgressOf<A> {
    fn on(iface: &Interface, ip: A) -> Self {
        EgressOf {
            ip,
            ifindex: iface.ifindex,
            mac: iface.mac,
        }
    }

    fn none(unspecified: A) -> Self {
        EgressOf {
            ip: unspecified,
            ifindex: 0,
            mac: [0; 6],
        }
    }
}

/// What this node egresses through as a gateway of one `egressGateways`
/// entry, per family: the two can differ (an IPv6 `egressIP` on another
/// device than the IPv4 default route).
#[derive(Debug, Clone, Copy)]
pub(super) struct Egress {
    pub(super) v4: EgressOf<Ipv4Addr>,
    pub(super) v6: EgressOf<Ipv6Addr>,
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
                // Each family is said only when the policy has groups of it:
                // an IPv4-only uplink is no fault of an IPv4-only policy.
                let mut warn = |family: &str, why: String| {
                    problems.push(Problem::for_policy(
                        &policy.name,
                        Severity::Warning,
                        format!(
                            "this node is the gateway of {which} but its egress {family} \
                             cannot be derived: {why}; {}multicast through it is dropped \
                             (no_egress_ip)",
                            if family == "IPv6" { "IPv6 " } else { "" }
                        ),
                    ))
                };
                let v4 = derive_egress(spec, local).unwrap_or_else(|why| {
                    if !policy.v4.destinations.is_empty() {
                        warn("IP", why);
                    }
                    EgressOf::none(Ipv4Addr::UNSPECIFIED)
                });
                let v6 = derive_egress_v6(spec, local).unwrap_or_else(|why| {
                    if !policy.v6.destinations.is_empty() {
                        warn("IPv6", why);
                    }
                    EgressOf::none(Ipv6Addr::UNSPECIFIED)
                });
                Egress { v4, v6 }
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

/// The device a gateway egresses through when neither `interface` nor
/// `egressIP` says: the IPv4 default route's, as Cilium picks it.
fn default_route_device(local: &LocalNode) -> Result<&Interface, String> {
    let ifindex = local
        .default_route_ifindex
        .ok_or_else(|| "this node has no IPv4 default route".to_string())?;
    local
        .interfaces
        .iter()
        .find(|i| i.ifindex == ifindex)
        .ok_or_else(|| format!("the default-route device (ifindex {ifindex}) is not known"))
}

fn named_device<'a>(local: &'a LocalNode, name: &str) -> Result<&'a Interface, String> {
    local
        .interfaces
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| format!("interface {name} does not exist on this node"))
}

fn device_holding_v4(local: &LocalNode, ip: Ipv4Addr) -> Result<&Interface, String> {
    local
        .interfaces
        .iter()
        .find(|i| i.ipv4.contains(&ip))
        .ok_or_else(|| format!("no interface of this node holds egressIP {ip}"))
}

/// Egress IP and device on the gateway node itself, the way Cilium derives
/// them: `interface` -> its first IPv4; `egressIP` -> the device holding
/// it; neither -> the first IPv4 of the default-route device.
pub(super) fn derive_egress(
    spec: &GatewaySpec,
    local: &LocalNode,
) -> Result<EgressOf<Ipv4Addr>, String> {
    if let Some(name) = &spec.interface {
        let iface = named_device(local, name)?;
        let ip = iface
            .ipv4
            .first()
            .ok_or_else(|| format!("interface {name} has no IPv4 address"))?;
        return Ok(EgressOf::on(iface, *ip));
    }
    if let Some(ip) = spec.egress_ip {
        let IpAddr::V4(ip) = ip else {
            return Err(format!(
                "egressIP {ip} is IPv6 and IPv4 multicast needs an IPv4 source"
            ));
        };
        return Ok(EgressOf::on(device_holding_v4(local, ip)?, ip));
    }
    let iface = default_route_device(local)?;
    let ip = iface.ipv4.first().ok_or_else(|| {
        format!(
            "the default-route device {} has no IPv4 address",
            iface.name
        )
    })?;
    Ok(EgressOf::on(iface, *ip))
}

/// The egress IPv6 and device on the gateway node itself: the `egressIP`
/// when it is IPv6, on the device holding it; otherwise the first global
/// IPv6 of the device IPv4 egresses through (`interface`, the device
/// holding an IPv4 `egressIP`, or the default-route device).
pub(super) fn derive_egress_v6(
    spec: &GatewaySpec,
    local: &LocalNode,
) -> Result<EgressOf<Ipv6Addr>, String> {
    if let Some(IpAddr::V6(ip)) = spec.egress_ip {
        let iface = local
            .interfaces
            .iter()
            .find(|i| i.ipv6.contains(&ip))
            .ok_or_else(|| format!("no interface of this node holds egressIP {ip}"))?;
        return Ok(EgressOf::on(iface, ip));
    }
    let iface = match (&spec.interface, spec.egress_ip) {
        (Some(name), _) => named_device(local, name)?,
        (None, Some(IpAddr::V4(ip))) => device_holding_v4(local, ip)?,
        _ => default_route_device(local)?,
    };
    let ip = iface
        .ipv6
        .iter()
        .find(|ip| is_global_ipv6(ip))
        .ok_or_else(|| {
            format!(
                "{} has no global IPv6 address (link-local, tentative and DAD-failed ones \
             cannot be a source)",
                iface.name
            )
        })?;
    Ok(EgressOf::on(iface, *ip))
}
