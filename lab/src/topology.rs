//! The lab's nodes, pods and wires, and the Cilium objects that describe
//! them.

use std::net::{Ipv4Addr, Ipv6Addr};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use super::{run, Lab, LabError, Result};
use cilium_mcast_egress::cilium_compat::{
    endpoint_info, endpoint_key, ENDPOINTS_MAP_SIZE, ENDPOINT_F_HOST, ENDPOINT_KEY_IPV6,
};
use cilium_mcast_egress::datapath::{Paths, Plain};

/// The three nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    A,
    B,
    C,
}

pub const NODES: [Node; 3] = [Node::A, Node::B, Node::C];

impl Node {
    pub fn name(self) -> &'static str {
        match self {
            Node::A => "node-a",
            Node::B => "node-b",
            Node::C => "node-c",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// InternalIP on the underlay.
    pub fn ip(self) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, 11 + self as u8)
    }
}

/// The pods. `A3` is not there at start: tests add it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pod {
    /// node-a, `app=camera`.
    A1,
    /// node-a, `app=other`: no policy selects it.
    A2,
    /// node-b (the usual gateway), `app=camera`.
    B1,
    /// node-c, `app=camera`.
    C1,
    /// node-a, `app=camera`, added while the lab runs.
    A3,
}

/// The pods present when the lab comes up.
pub const PODS: [Pod; 4] = [Pod::A1, Pod::A2, Pod::B1, Pod::C1];

/// Security identities, as Cilium would allocate them per label set.
pub const IDENTITY_CAMERA: u32 = 51001;
pub const IDENTITY_OTHER: u32 = 51002;

impl Pod {
    pub fn name(self) -> &'static str {
        match self {
            Pod::A1 => "pod-a1",
            Pod::A2 => "pod-a2",
            Pod::B1 => "pod-b1",
            Pod::C1 => "pod-c1",
            Pod::A3 => "pod-a3",
        }
    }

    pub fn node(self) -> Node {
        match self {
            Pod::A1 | Pod::A2 | Pod::A3 => Node::A,
            Pod::B1 => Node::B,
            Pod::C1 => Node::C,
        }
    }

    pub fn ip(self) -> Ipv4Addr {
        let last = match self {
            Pod::A1 => 11,
            Pod::A2 => 12,
            Pod::A3 => 13,
            Pod::B1 => 21,
            Pod::C1 => 31,
        };
        Ipv4Addr::new(198, 51, 100, last)
    }

    /// Its IPv6 address: 2001:db8:100::<n> for 198.51.100.<n>, the same
    /// digits (pod-a1, 198.51.100.11, is 2001:db8:100::11), as the uplinks'
    /// 2001:db8:203::10 mirrors 203.0.113.10.
    pub fn ip6(self) -> Ipv6Addr {
        let n = u16::from(self.ip().octets()[3]);
        // The decimal digits read as hex: at most 3 digits, always valid.
        let digits = ((n / 100) << 8) | ((n / 10 % 10) << 4) | (n % 10);
        Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, digits)
    }

    /// The host side of its veth, in the node's namespace.
    pub fn lxc(self) -> &'static str {
        match self {
            Pod::A1 => "lxca1",
            Pod::A2 => "lxca2",
            Pod::A3 => "lxca3",
            Pod::B1 => "lxcb1",
            Pod::C1 => "lxcc1",
        }
    }

    pub fn app(self) -> &'static str {
        match self {
            Pod::A2 => "other",
            _ => "camera",
        }
    }

    pub fn identity(self) -> u32 {
        match self {
            Pod::A2 => IDENTITY_OTHER,
            _ => IDENTITY_CAMERA,
        }
    }

    fn uid(self) -> String {
        format!(
            "5c3d6e2a-0000-4000-8000-0000000000{:02x}",
            self.ip().octets()[3]
        )
    }
}

/// Give `dev` in namespace `ns` the address `cidr` and bring it up.
fn addr_up(ns: &str, dev: &str, cidr: &str) -> Result<()> {
    run("ip", &["-n", ns, "addr", "add", cidr, "dev", dev])?;
    run("ip", &["-n", ns, "link", "set", dev, "up"])?;
    Ok(())
}

/// IPv6 on, for the devices there are and those still to come in `ns`.
fn enable_ipv6(ns: &str) -> Result<()> {
    run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
        ],
    )?;
    Ok(())
}

/// Give `dev` in namespace `ns` the IPv6 address `cidr`, usable at once:
/// without `nodad` it would stay tentative for a second of DAD, and a
/// socket bound to it, or an egress IPv6 derived from it, would fail.
fn addr6(ns: &str, dev: &str, cidr: &str) -> Result<()> {
    run(
        "ip",
        &["-n", ns, "-6", "addr", "add", cidr, "dev", dev, "nodad"],
    )?;
    Ok(())
}

/// Pod MTU, as Cilium sets it for VXLAN.
pub const POD_MTU: &str = "1450";

pub(super) fn build(lab: &mut Lab) -> Result<()> {
    let wire = lab.add_netns("wire")?;
    run("ip", &["-n", &wire, "link", "add", "br0", "type", "bridge"])?;
    run("ip", &["-n", &wire, "link", "set", "br0", "up"])?;

    for node in super::NODES {
        let ns = lab.add_node_netns(node)?;
        // Dual-stack needs IPv6 on in the node, which a container runtime
        // may have turned off in a container without an IPv6 network.
        enable_ipv6(&ns)?;
        // The node's underlay NIC, plugged into the bridge.
        run(
            "ip",
            &[
                "-n",
                &wire,
                "link",
                "add",
                node.name(),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                &wire,
                "link",
                "set",
                node.name(),
                "master",
                "br0",
                "up",
            ],
        )?;
        addr_up(&ns, "eth0", &format!("{}/24", node.ip()))?;
        // As cilium-agent creates it: collect-md VXLAN on 8472.
        run(
            "ip",
            &[
                "-n",
                &ns,
                "link",
                "add",
                "cilium_vxlan",
                "type",
                "vxlan",
                "external",
                "dstport",
                "8472",
            ],
        )?;
        run("ip", &["-n", &ns, "link", "set", "cilium_vxlan", "up"])?;

        let dir = lab.node_dir(node);
        lab.mount_bpffs(&dir.join("bpf"))?;
        lab.mount_bpffs(&dir.join("cilium"))?;
        create_cilium_lxc(lab, node)?;
    }

    let up = lab.add_netns("upstream")?;
    for (node, local, peer, local6, peer6, up_dev) in [
        (
            Node::B,
            "203.0.113.10/25",
            "203.0.113.1/25",
            "2001:db8:203::10/64",
            "2001:db8:203::1/64",
            "eth0",
        ),
        (
            Node::C,
            "203.0.113.130/25",
            "203.0.113.129/25",
            "2001:db8:203:1::130/64",
            "2001:db8:203:1::129/64",
            "eth1",
        ),
    ] {
        let ns = lab.node_ns(node);
        run(
            "ip",
            &[
                "-n", &ns, "link", "add", "uplink0", "type", "veth", "peer", "name", up_dev,
                "netns", &up,
            ],
        )?;
        run("ip", &["-n", &ns, "addr", "add", local, "dev", "uplink0"])?;
        addr6(&ns, "uplink0", local6)?;
        run("ip", &["-n", &ns, "link", "set", "uplink0", "up"])?;
        // Checksums in software, as a NIC would finish them in hardware:
        // what the upstream side captures is what a real wire carries.
        run(
            "ip",
            &[
                "netns", "exec", &ns, "ethtool", "-K", "uplink0", "tx", "off",
            ],
        )?;
        run("ip", &["-n", &up, "addr", "add", peer, "dev", up_dev])?;
        addr6(&up, up_dev, peer6)?;
        run("ip", &["-n", &up, "link", "set", up_dev, "up"])?;
    }

    for pod in super::PODS {
        add_pod(lab, pod)?;
    }
    Ok(())
}

/// A pod's namespace and veth, and its entry in the node's `cilium_lxc`.
pub(super) fn add_pod(lab: &mut Lab, pod: Pod) -> Result<()> {
    let node_ns = lab.node_ns(pod.node());
    let ns = lab.add_netns(pod.name())?;
    run(
        "ip",
        &[
            "-n",
            &node_ns,
            "link",
            "add",
            pod.lxc(),
            "mtu",
            POD_MTU,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            POD_MTU,
            "netns",
            &ns,
        ],
    )?;
    run("ip", &["-n", &node_ns, "link", "set", pod.lxc(), "up"])?;
    addr_up(&ns, "eth0", &format!("{}/24", pod.ip()))?;
    run("ip", &["-n", &ns, "route", "add", "default", "dev", "eth0"])?;
    // Dual-stack, as Cilium gives pods both families: a /128 and a default
    // route through the veth, like the IPv4 ones.
    addr6(&ns, "eth0", &format!("{}/128", pod.ip6()))?;
    run(
        "ip",
        &["-n", &ns, "-6", "route", "add", "default", "dev", "eth0"],
    )?;
    let ifindex = ifindex_in(&node_ns, pod.lxc())?;
    lxc_put(lab, pod.node(), pod.ip(), ifindex, pod.identity())?;
    lxc_put6_at(
        &lxc_path(lab, pod.node()),
        pod.ip6(),
        ifindex,
        pod.identity(),
    )
}

/// The ifindex of `dev` in namespace `ns`.
pub fn ifindex_in(ns: &str, dev: &str) -> Result<u32> {
    let out = run("ip", &["-n", ns, "-o", "link", "show", "dev", dev])?;
    out.split(':')
        .next()
        .and_then(|i| i.trim().parse().ok())
        .ok_or_else(|| LabError::Command {
            cmd: format!("ip -n {ns} link show dev {dev}"),
            detail: format!("no ifindex in {out:?}"),
        })
}

fn lxc_path(lab: &Lab, node: Node) -> std::path::PathBuf {
    Paths::new(lab.cilium_bpffs(node))
        .globals()
        .join("cilium_lxc")
}

/// A map in the layout of Cilium's `cilium_lxc`, pinned where cilium-agent
/// pins it, with the node's own address as a host entry.
fn create_cilium_lxc(lab: &Lab, node: Node) -> Result<()> {
    create_cilium_lxc_at(&lxc_path(lab, node), node.ip())
}

/// Create and pin at `path` a map in the layout of Cilium's `cilium_lxc`,
/// holding `host_ip` as a host entry, as cilium-agent does.
pub fn create_cilium_lxc_at(path: &std::path::Path, host_ip: Ipv4Addr) -> Result<()> {
    let path = path.to_owned();
    let globals = path.parent().map(|p| p.to_owned()).unwrap_or_default();
    std::fs::create_dir_all(&globals).map_err(super::io("creating tc/globals"))?;
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut map = MapHandle::create(
        MapType::Hash,
        Some("cilium_lxc"),
        size(std::mem::size_of::<endpoint_key>()),
        size(std::mem::size_of::<endpoint_info>()),
        ENDPOINTS_MAP_SIZE,
        &opts,
    )
    .map_err(|e| LabError::Command {
        cmd: "create cilium_lxc".into(),
        detail: e.to_string(),
    })?;
    map.pin(&path).map_err(|e| LabError::Command {
        cmd: format!("pin {}", path.display()),
        detail: e.to_string(),
    })?;
    write_lxc(&map, host_ip, 1, 1, true)
}

fn lxc_put(lab: &Lab, node: Node, ip: Ipv4Addr, ifindex: u32, identity: u32) -> Result<()> {
    lxc_put_at(&lxc_path(lab, node), ip, ifindex, identity)
}

/// Add a pod to the `cilium_lxc`-layout map pinned at `path`.
pub fn lxc_put_at(path: &std::path::Path, ip: Ipv4Addr, ifindex: u32, identity: u32) -> Result<()> {
    let map = MapHandle::from_pinned_path(path).map_err(|e| LabError::Command {
        cmd: format!("open {}", path.display()),
        detail: e.to_string(),
    })?;
    write_lxc(&map, ip, ifindex, identity, false)
}

/// Add a pod's IPv6 address to the `cilium_lxc`-layout map pinned at
/// `path`, with the same value as its IPv4 entry, as cilium-agent writes it.
pub fn lxc_put6_at(
    path: &std::path::Path,
    ip: Ipv6Addr,
    ifindex: u32,
    identity: u32,
) -> Result<()> {
    let map = MapHandle::from_pinned_path(path).map_err(|e| LabError::Command {
        cmd: format!("open {}", path.display()),
        detail: e.to_string(),
    })?;
    update_lxc(&map, &endpoint_key6(ip), ifindex, identity, false)
}

/// Cilium's key of an IPv6 endpoint: the 16 address bytes in network order
/// from offset 0 (over `ip4` and the three pads), family 2 at offset 16.
fn endpoint_key6(ip: Ipv6Addr) -> endpoint_key {
    let word = |i: usize| {
        let o = ip.octets();
        u32::from_ne_bytes([o[i * 4], o[i * 4 + 1], o[i * 4 + 2], o[i * 4 + 3]])
    };
    endpoint_key {
        ip4: word(0),
        pad1: word(1),
        pad2: word(2),
        pad3: word(3),
        family: ENDPOINT_KEY_IPV6 as u8,
        ..Default::default()
    }
}

fn write_lxc(map: &MapHandle, ip: Ipv4Addr, ifindex: u32, identity: u32, host: bool) -> Result<()> {
    update_lxc(map, &endpoint_key::ipv4(ip), ifindex, identity, host)
}

fn update_lxc(
    map: &MapHandle,
    key: &endpoint_key,
    ifindex: u32,
    identity: u32,
    host: bool,
) -> Result<()> {
    let val = endpoint_info {
        ifindex,
        flags: if host { ENDPOINT_F_HOST } else { 0 },
        sec_id: identity,
        ..Default::default()
    };
    map.update(key.as_bytes(), val.as_bytes(), MapFlags::ANY)
        .map_err(|e| LabError::Command {
            cmd: "update cilium_lxc".into(),
            detail: e.to_string(),
        })
}

pub(super) fn nodes_yaml() -> String {
    super::NODES
        .iter()
        .map(|n| {
            // node-b is also the gateway of the example policy.
            let example = if *n == Node::B {
                "\n    egress-gateway: multicast"
            } else {
                ""
            };
            format!(
                "apiVersion: cilium.io/v2
kind: CiliumNode
metadata:
  name: {name}
  labels:
    kubernetes.io/hostname: {name}
    lab.gateway: {name}{example}
spec:
  addresses:
  - type: InternalIP
    ip: {ip}
",
                name = n.name(),
                ip = n.ip()
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

pub(super) fn endpoint_yaml(pod: Pod) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: {name}
  namespace: media
  uid: {uid}
status:
  id: {id}
  identity:
    id: {identity}
    labels:
    - k8s:app={app}
    - k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=media
    - k8s:io.cilium.k8s.policy.cluster=lab
    - k8s:io.kubernetes.pod.namespace=media
  networking:
    addressing:
    - ipv4: {ip}
      ipv6: {ip6}
    node: {node_ip}
",
        name = pod.name(),
        uid = pod.uid(),
        id = 1000 + u32::from(pod.ip().octets()[3]),
        identity = pod.identity(),
        app = pod.app(),
        ip = pod.ip(),
        ip6 = pod.ip6(),
        node_ip = pod.node().ip(),
    )
}
