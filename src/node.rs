//! This node's network devices, through rtnetlink: the interfaces and
//! addresses resolution needs, the default-route device, and a stream of
//! change notifications (links, IPv4 and IPv6 addresses, IPv4 routes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::{Stream, StreamExt, TryStreamExt};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::RouteAttribute;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};

use crate::resolve::Interface;

/// Errors talking to the kernel's routing netlink.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("netlink {what}: {source}")]
    Netlink {
        what: &'static str,
        source: rtnetlink::Error,
    },
}

/// The main routing table.
const RT_TABLE_MAIN: u32 = 254;

/// A netlink handle for queries; its connection runs on the current tokio
/// runtime until the handle is dropped.
pub fn connect() -> Result<Handle, NodeError> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Every link of this namespace, as the kernel dumps them.
async fn link_dump(handle: &Handle) -> Result<Vec<LinkMessage>, NodeError> {
    handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|source| NodeError::Netlink {
            what: "link dump",
            source,
        })
}

/// Every interface with its MAC, its IPv4 addresses (primary first) and its
/// IPv6 addresses usable as a source (see [`usable_ipv6`]).
pub async fn interfaces(handle: &Handle) -> Result<Vec<Interface>, NodeError> {
    let mut out = Vec::new();
    for msg in link_dump(handle).await? {
        let mut name = None;
        let mut mac = [0u8; 6];
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Address(a) if a.len() == 6 => mac.copy_from_slice(a),
                _ => {}
            }
        }
        if let Some(name) = name {
            out.push(Interface {
                name,
                ifindex: msg.header.index,
                mac,
                ipv4: Vec::new(),
                ipv6: Vec::new(),
            });
        }
    }

    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs
        .try_next()
        .await
        .map_err(|source| NodeError::Netlink {
            what: "address dump",
            source,
        })?
    {
        if msg.header.family == AddressFamily::Inet6 {
            if let (Some(ip), Some(iface)) = (
                usable_ipv6(&msg),
                out.iter_mut().find(|i| i.ifindex == msg.header.index),
            ) {
                iface.ipv6.push(ip);
            }
            continue;
        }
        if msg.header.family != AddressFamily::Inet {
            continue;
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer
        // on point-to-point links.
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let addr = local.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })
        });
        if let (Some(ip), Some(iface)) =
            (addr, out.iter_mut().find(|i| i.ifindex == msg.header.index))
        {
            iface.ipv4.push(ip);
        }
    }
    out.sort_by_key(|i| i.ifindex);
    Ok(out)
}

/// The address of an IPv6 address message, unless it cannot be a source:
/// not global (the link-local address of every veth), still tentative
/// (duplicate address detection running: the kernel refuses to send from
/// it) or DAD failed (another host has it). The flags are in the header's
/// byte and, for those that do not fit it, in IFA_FLAGS; either may say so.
fn usable_ipv6(msg: &AddressMessage) -> Option<Ipv6Addr> {
    let header_unusable = msg
        .header
        .flags
        .intersects(AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed);
    let attr_unusable = msg.attributes.iter().any(|a| match a {
        AddressAttribute::Flags(f) => {
            f.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed)
        }
        _ => false,
    });
    if header_unusable || attr_unusable {
        return None;
    }
    // As for IPv4: IFA_LOCAL, when present, is the interface's own address
    // and IFA_ADDRESS the peer's (an address added with `peer`).
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V6(ip)) => Some(*ip),
        _ => None,
    });
    local
        .or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V6(ip)) => Some(*ip),
                _ => None,
            })
        })
        .filter(crate::resolve::is_global_ipv6)
}

/// Whether a link is a netkit device (link info kind "netkit"). With
/// Cilium's netkit datapath, pods' devices are netkit pairs whose traffic
/// the host side's tcx hooks never see: our programs on them do nothing.
pub fn is_netkit(msg: &LinkMessage) -> bool {
    msg.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Netkit))),
        _ => false,
    })
}

/// The names of this namespace's netkit devices, sorted.
pub async fn netkit_devices(handle: &Handle) -> Result<Vec<String>, NodeError> {
    let mut out = Vec::new();
    for msg in link_dump(handle).await? {
        if !is_netkit(&msg) {
            continue;
        }
        if let Some(name) = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Says loudly, once at start, that endpoint devices are netkit devices:
/// in Cilium's netkit mode the host-side tcx hooks see no pod traffic, so
/// nothing a pod sends reaches our program.
pub async fn report_netkit(handle: &Handle, endpoint_devices: &glob::Pattern) {
    match netkit_devices(handle).await {
        Ok(devices) => {
            let endpoints: Vec<String> = devices
                .into_iter()
                .filter(|d| endpoint_devices.matches(d))
                .collect();
            if !endpoints.is_empty() {
                tracing::error!(
                    devices = ?endpoints,
                    count = endpoints.len(),
                    "endpoint devices are netkit (Cilium's netkit mode): host-side tcx sees \
                     no pod traffic, multicast egress does not work for these pods; \
                     use Cilium's veth mode"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "checking for netkit endpoint devices"),
    }
}

/// The output device of the IPv4 default route in the main table, if any.
pub async fn default_route_ifindex(handle: &Handle) -> Result<Option<u32>, NodeError> {
    let req = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut routes = handle.route().get(req).execute();
    let mut best: Option<(u32, u32)> = None; // (priority, oif)
    while let Some(msg) = routes
        .try_next()
        .await
        .map_err(|source| NodeError::Netlink {
            what: "route dump",
            source,
        })?
    {
        if msg.header.destination_prefix_length != 0 {
            continue;
        }
        let mut table = u32::from(msg.header.table);
        let mut oif = None;
        let mut priority = 0;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Oif(o) => oif = Some(*o),
                RouteAttribute::Priority(p) => priority = *p,
                _ => {}
            }
        }
        if table != RT_TABLE_MAIN {
            continue;
        }
        // The lowest metric wins, as in the kernel's own choice.
        if let Some(oif) = oif {
            if best.is_none_or(|(p, _)| priority < p) {
                best = Some((priority, oif));
            }
        }
    }
    Ok(best.map(|(_, oif)| oif))
}

/// A stream that yields whenever a link, an IPv4 or IPv6 address or an IPv4
/// route of this network namespace changes (an IPv6 address that finishes
/// DAD becomes a usable egress source). Its connection runs on the current
/// tokio runtime.
pub fn changes() -> Result<impl Stream<Item = ()>, NodeError> {
    let (conn, handle, messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
    ])?;
    tokio::spawn(conn);
    // The connection ends once every handle is gone: the stream keeps one.
    Ok(messages.map(move |_| {
        let _keep_alive = &handle;
    }))
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::{Emitable, Parseable};

    use super::*;

    /// A link message as the kernel would send it: emitted to bytes and
    /// parsed back, so the detection sees what a dump yields.
    fn parsed(name: &str, kind: Option<InfoKind>) -> LinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(kind) = kind {
            msg.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
        }
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        LinkMessage::parse(buf.as_slice()).unwrap()
    }

    /// An IPv6 address message as the kernel would send it, parsed back.
    fn address(ip: &str, header: AddressHeaderFlags, attr: Option<AddressFlags>) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = 64;
        msg.header.index = 7;
        msg.header.flags = header;
        let ip: Ipv6Addr = ip.parse().unwrap();
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V6(ip)));
        if let Some(f) = attr {
            msg.attributes.push(AddressAttribute::Flags(f));
        }
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        AddressMessage::parse(buf.as_slice()).unwrap()
    }

    #[test]
    fn tentative_and_dad_failed_ipv6_addresses_are_not_sources() {
        let none = AddressHeaderFlags::empty();
        let ok: Ipv6Addr = "2001:db8:203::10".parse().unwrap();
        assert_eq!(
            usable_ipv6(&address("2001:db8:203::10", none, None)),
            Some(ok)
        );
        assert_eq!(
            usable_ipv6(&address(
                "2001:db8:203::10",
                AddressHeaderFlags::Permanent,
                Some(AddressFlags::Permanent | AddressFlags::Nodad)
            )),
            Some(ok)
        );
        for (header, attr) in [
            (AddressHeaderFlags::Tentative, None),
            (AddressHeaderFlags::Dadfailed, None),
            (none, Some(AddressFlags::Tentative)),
            (
                none,
                Some(AddressFlags::Dadfailed | AddressFlags::Permanent),
            ),
        ] {
            assert_eq!(
                usable_ipv6(&address("2001:db8:203::10", header, attr)),
                None,
                "{header:?} {attr:?}"
            );
        }
    }

    #[test]
    fn link_local_ipv6_addresses_are_not_kept() {
        let none = AddressHeaderFlags::empty();
        assert_eq!(usable_ipv6(&address("fe80::1", none, None)), None);
        assert_eq!(usable_ipv6(&address("::1", none, None)), None);
        let ula: Ipv6Addr = "fd00::1".parse().unwrap();
        assert_eq!(usable_ipv6(&address("fd00::1", none, None)), Some(ula));
    }

    #[test]
    fn netkit_devices_are_recognised_by_their_kind() {
        let nk = parsed("lxc0123", Some(InfoKind::Netkit));
        assert!(is_netkit(&nk));
        // The kind arrives as the string "netkit" (IFLA_INFO_KIND).
        let mut buf = vec![0u8; nk.buffer_len()];
        nk.emit(&mut buf);
        assert!(buf.windows(7).any(|w| w == b"netkit\0"));

        // Cilium's veth mode, other kinds and links without info are not.
        assert!(!is_netkit(&parsed("lxc0123", Some(InfoKind::Veth))));
        assert!(!is_netkit(&parsed("cilium_vxlan", Some(InfoKind::Vxlan))));
        assert!(!is_netkit(&parsed("lo", None)));
    }
}
