//! Table tests of resolution: manifests in, map contents out. Each test is
//! named after the rule it pins down.
//!
//! The cluster: three nodes (192.0.2.1-3), node-a and node-b labelled as
//! egress gateways; pods in 198.51.100.0/24; egress IPs in 203.0.113.0/24;
//! groups in 232.0.0.0/8.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::Ipv4Network;
use serde::Deserialize;

use super::*;
use crate::crd::{CiliumEgressGatewayPolicy, CiliumEndpoint, CiliumNode};
use crate::datapath::maps::{Gateway, Origin, PolicyKey, PolicyValue};
use crate::objects::Objects;

/// A value without its origin, for tests about the rest of it.
fn bare(v: PolicyValue) -> PolicyValue {
    PolicyValue {
        origin: Origin::default(),
        ..v
    }
}

// ---------------------------------------------------------------- fixtures

const NODES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNode
metadata:
  name: node-b
  labels:
    kubernetes.io/hostname: node-b
    egress-gateway: "true"
    topology.kubernetes.io/zone: zone-2
spec:
  addresses:
  - type: InternalIP
    ip: 192.0.2.2
  - type: CiliumInternalIP
    ip: 198.51.100.202
---
apiVersion: cilium.io/v2
kind: CiliumNode
metadata:
  name: node-a
  labels:
    kubernetes.io/hostname: node-a
    egress-gateway: "true"
    topology.kubernetes.io/zone: zone-1
spec:
  addresses:
  - type: CiliumInternalIP
    ip: 198.51.100.201
  - type: InternalIP
    ip: 192.0.2.1
---
apiVersion: cilium.io/v2
kind: CiliumNode
metadata:
  name: node-c
  labels:
    kubernetes.io/hostname: node-c
    topology.kubernetes.io/zone: zone-1
spec:
  addresses:
  - type: InternalIP
    ip: 192.0.2.3
"#;

/// camera-1 and encoder-1 on node-c, camera-2 on node-b, camera-3 (another
/// namespace) on node-a.
const ENDPOINTS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: camera-1
  namespace: media
  uid: 0b7e4c52-1f0a-4d7e-9a51-6c2f1e8d3a10
status:
  id: 1201
  identity:
    id: 51234
    labels:
    - k8s:app=camera
    - k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=media
    - k8s:io.cilium.k8s.namespace.labels.team=video
    - k8s:io.cilium.k8s.policy.cluster=default
    - k8s:io.kubernetes.pod.namespace=media
  networking:
    addressing:
    - ipv4: 198.51.100.10
      ipv6: 2001:db8::10
    node: 192.0.2.3
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: camera-2
  namespace: media
  uid: 7f2d8b91-0c4e-4a3b-b6d5-9e1a2f3c4d32
status:
  id: 877
  identity:
    id: 51234
    labels:
    - k8s:app=camera
    - k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=media
    - k8s:io.cilium.k8s.namespace.labels.team=video
    - k8s:io.cilium.k8s.policy.cluster=default
    - k8s:io.kubernetes.pod.namespace=media
  networking:
    addressing:
    - ipv4: 198.51.100.11
    node: 192.0.2.2
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: encoder-1
  namespace: media
  uid: 3c9a1e77-5b2d-4f6a-8e13-2d7b9c4f6e21
status:
  id: 1544
  identity:
    id: 60321
    labels:
    - k8s:app=encoder
    - k8s:tier=edge
    - k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=media
    - k8s:io.cilium.k8s.namespace.labels.team=video
    - k8s:io.kubernetes.pod.namespace=media
  networking:
    addressing:
    - ipv4: 198.51.100.12
    node: 192.0.2.3
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: camera-3
  namespace: lab
  uid: a41e6f08-9d3c-4b2a-a7e6-1f0b3c5d7e43
status:
  id: 312
  identity:
    id: 48211
    labels:
    - k8s:app=camera
    - k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=lab
    - k8s:io.cilium.k8s.namespace.labels.team=research
    - k8s:io.kubernetes.pod.namespace=lab
  networking:
    addressing:
    - ipv4: 198.51.100.20
    node: 192.0.2.1
"#;

/// The everyday policy: media cameras publish 232.1.0.0/16 through node-a
/// (first gateway-labelled node by name) with the default-route device.
const CAMERAS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: cameras
spec:
  selectors:
  - podSelector:
      matchLabels:
        app: camera
        io.kubernetes.pod.namespace: media
  destinationCIDRs:
  - 232.1.0.0/16
  egressGateway:
    nodeSelector:
      matchLabels:
        egress-gateway: "true"
"#;

/// Objects from multi-document YAML, dispatched on `kind`.
fn objects(manifests: &[&str]) -> Objects {
    let (mut policies, mut nodes, mut endpoints) = (Vec::new(), Vec::new(), Vec::new());
    for manifest in manifests {
        for document in serde_norway::Deserializer::from_str(manifest) {
            let value = serde_norway::Value::deserialize(document).expect("YAML");
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .map(str::to_owned);
            match kind.as_deref() {
                Some("CiliumEgressGatewayPolicy") => policies.push(
                    serde_norway::from_value::<CiliumEgressGatewayPolicy>(value).expect("policy"),
                ),
                Some("CiliumNode") => {
                    nodes.push(serde_norway::from_value::<CiliumNode>(value).expect("node"))
                }
                Some("CiliumEndpoint") => endpoints
                    .push(serde_norway::from_value::<CiliumEndpoint>(value).expect("endpoint")),
                other => panic!("unexpected kind {other:?}"),
            }
        }
    }
    Objects::from_crds(&policies, &nodes, &endpoints)
}

/// The cluster plus `policies`.
fn cluster(policies: &[&str]) -> Objects {
    let mut all = vec![NODES, ENDPOINTS];
    all.extend_from_slice(policies);
    objects(&all)
}

const ETH0: u32 = 2;
const ETH1: u32 = 3;
const ETH2: u32 = 4;
const TUNNEL: u32 = 9;
const ETH1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];

/// A node with eth0 (its node IP), eth1 (the uplink with two egress IPs,
/// default route) and eth2 (up, no IPv4).
fn local(name: &str) -> LocalNode {
    LocalNode {
        name: name.to_string(),
        interfaces: vec![
            Interface {
                name: "eth0".to_string(),
                ifindex: ETH0,
                mac: [0x02, 0, 0, 0, 0, 0x02],
                ipv4: vec![ip("192.0.2.1")],
                ipv6: vec![],
            },
            Interface {
                name: "eth1".to_string(),
                ifindex: ETH1,
                mac: ETH1_MAC,
                ipv4: vec![ip("203.0.113.10"), ip("203.0.113.11")],
                // Link-local first, as the kernel may list it: never the
                // egress source.
                ipv6: vec![
                    ip6("fe80::3"),
                    ip6("2001:db8:203::10"),
                    ip6("2001:db8:203::11"),
                ],
            },
            Interface {
                name: "eth2".to_string(),
                ifindex: ETH2,
                mac: [0x02, 0, 0, 0, 0, 0x04],
                ipv4: vec![],
                ipv6: vec![ip6("2001:db8:203:1::130")],
            },
        ],
        default_route_ifindex: Some(ETH1),
        tunnel_ifindex: TUNNEL,
        known_ip: None,
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("IPv4")
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().expect("IPv6")
}

fn net(s: &str) -> Ipv4Network {
    s.parse().expect("IPv4 CIDR")
}

fn key(source: &str, destination: &str) -> PolicyKey {
    PolicyKey {
        source: ip(source),
        destination: net(destination),
    }
}

/// The sources with an entry for `destination`, sorted.
fn sources(desired: &Desired, destination: &str) -> Vec<Ipv4Addr> {
    desired
        .policies
        .keys()
        .filter(|k| k.destination == net(destination))
        .map(|k| k.source)
        .collect()
}

fn gateway_of(desired: &Desired, source: &str, destination: &str) -> Gateway {
    desired.policies[&key(source, destination)].gateway
}

fn problems_of<'a>(desired: &'a Desired, policy: &str) -> Vec<&'a Problem> {
    desired
        .problems
        .iter()
        .filter(|p| p.policy_name() == Some(policy))
        .collect()
}

/// The policy's problems, as "severity: message" lines, for readable
/// assertions.
fn messages(desired: &Desired, policy: &str) -> String {
    problems_of(desired, policy)
        .iter()
        .map(|p| format!("{:?}: {}", p.severity, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

fn id_of(name: &str) -> u32 {
    fnv32a(name.as_bytes())
}

pub(super) const TWO_GATEWAYS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: cameras
spec:
  selectors:
  - podSelector:
      matchLabels:
        app: camera
  destinationCIDRs:
  - 232.1.0.0/16
  egressGateway:
    nodeSelector:
      matchLabels:
        kubernetes.io/hostname: node-c
  egressGateways:
  - nodeSelector:
      matchLabels:
        kubernetes.io/hostname: node-b
    egressIP: 203.0.113.11
  - nodeSelector:
      matchLabels:
        kubernetes.io/hostname: node-a
    interface: eth1
"#;

mod entries;
mod gateways;
mod ids_and_cidrs;
mod ipv6;
mod nodes;
mod selectors;
