//! Table tests of resolution: manifests in, map contents out. Each test is
//! named after the rule it pins down.
//!
//! The cluster: three nodes (192.0.2.1-3), node-a and node-b labelled as
//! egress gateways; pods in 198.51.100.0/24; egress IPs in 203.0.113.0/24;
//! groups in 232.0.0.0/8.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

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
            },
            Interface {
                name: "eth1".to_string(),
                ifindex: ETH1,
                mac: ETH1_MAC,
                ipv4: vec![ip("203.0.113.10"), ip("203.0.113.11")],
            },
            Interface {
                name: "eth2".to_string(),
                ifindex: ETH2,
                mac: [0x02, 0, 0, 0, 0, 0x04],
                ipv4: vec![],
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

// ------------------------------------------------------------- FNV and ids

#[test]
fn fnv32a_matches_known_vectors() {
    for (input, want) in [
        ("", 0x811c_9dc5),
        ("a", 0xe40c_292c),
        ("foobar", 0xbf9c_f968),
        // The UIDs of the fixture endpoints, as Go's hash/fnv computes them.
        ("0b7e4c52-1f0a-4d7e-9a51-6c2f1e8d3a10", 0x960a_e861),
        ("7f2d8b91-0c4e-4a3b-b6d5-9e1a2f3c4d32", 0xc74d_2148),
        ("3c9a1e77-5b2d-4f6a-8e13-2d7b9c4f6e21", 0x53a0_61d5),
        ("a41e6f08-9d3c-4b2a-a7e6-1f0b3c5d7e43", 0x3152_510e),
    ] {
        assert_eq!(fnv32a(input.as_bytes()), want, "fnv32a({input:?})");
    }
}

#[test]
fn policy_id_is_fnv32a_of_name() {
    let desired = resolve(&cluster(&[CAMERAS]), &local("node-c"));
    assert_eq!(
        desired.policy_ids,
        BTreeMap::from([("cameras".to_string(), id_of("cameras"))])
    );
    assert!(desired
        .policies
        .values()
        .all(|v| v.policy_id == id_of("cameras")));
}

#[test]
fn colliding_policy_ids_probe_on_for_the_later_name() {
    // Two real FNV-1a collisions: both names hash to 0x35f3ee98.
    assert_eq!(id_of("camera-feed-822"), 0x35f3_ee98);
    assert_eq!(id_of("camera-feed-179160"), 0x35f3_ee98);
    let policies: Vec<String> = ["camera-feed-822", "camera-feed-179160"]
        .iter()
        .map(|name| CAMERAS.replace("name: cameras", &format!("name: {name}")))
        .collect();
    let policies: Vec<&str> = policies.iter().map(String::as_str).collect();
    let desired = resolve(&cluster(&policies), &local("node-c"));
    // "camera-feed-179160" sorts first and keeps the hash.
    assert_eq!(desired.policy_ids["camera-feed-179160"], 0x35f3_ee98);
    assert_eq!(desired.policy_ids["camera-feed-822"], 0x35f3_ee99);
}

/// A policy-id test case: names in order, a fake hash, the ids expected.
type IdCase = (&'static [&'static str], fn(&str) -> u32, &'static [u32]);

#[test]
fn policy_id_zero_is_never_used() {
    let cases: [IdCase; 3] = [
        (&["a"], |_| 0, &[1]),
        (&["a", "b"], |_| u32::MAX, &[u32::MAX, 1]),
        (
            &["a", "b", "c"],
            |n| if n == "c" { 2 } else { 1 },
            &[1, 2, 3],
        ),
    ];
    for (names, hash, want) in cases {
        let ids = assign_policy_ids(names.iter().copied(), hash);
        let got: Vec<u32> = names.iter().map(|n| ids[*n]).collect();
        assert_eq!(got, want, "names {names:?}");
    }
}

// ------------------------------------------------------------------- CIDRs

#[test]
fn destination_cidr_rules_table() {
    // (destinationCIDRs entry, entry made for it, problem expected)
    let cases = [
        ("232.1.0.0/16", Some("232.1.0.0/16"), None),
        ("224.0.0.0/4", Some("224.0.0.0/4"), None),
        ("239.255.255.250/32", Some("239.255.255.250/32"), None),
        ("0.0.0.0/0", None, None),
        ("203.0.113.0/24", None, None),
        ("224.0.0.0/3", None, None),
        ("232.0.0.0/4", None, Some("not canonical")),
        ("232.1.1.1/16", None, Some("did you mean 232.1.0.0/16")),
        (
            "ff3e::/32",
            None,
            Some("IPv6 multicast is not yet supported"),
        ),
        ("2001:db8::/32", None, None),
    ];
    for (cidr, entry, problem) in cases {
        let policy = CAMERAS.replace("- 232.1.0.0/16", &format!("- 232.9.0.0/16\n  - \"{cidr}\""));
        let desired = resolve(&cluster(&[&policy]), &local("node-c"));
        let destinations: BTreeSet<Ipv4Network> =
            desired.policies.keys().map(|k| k.destination).collect();
        let mut want = BTreeSet::from([net("232.9.0.0/16")]);
        want.extend(entry.map(net));
        assert_eq!(destinations, want, "entry {cidr}");
        let text = messages(&desired, "cameras");
        match problem {
            Some(p) => assert!(
                text.contains(p) && text.contains(cidr),
                "entry {cidr}: {text}"
            ),
            None => assert_eq!(text, "", "entry {cidr}"),
        }
    }
}

#[test]
fn only_multicast_cidrs_produce_entries() {
    let policy = CAMERAS.replace(
        "- 232.1.0.0/16",
        "- 198.51.100.0/24\n  - 203.0.113.0/24\n  - 232.1.0.0/16",
    );
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    let destinations: BTreeSet<_> = desired.policies.keys().map(|k| k.destination).collect();
    assert_eq!(destinations, BTreeSet::from([net("232.1.0.0/16")]));
    assert!(desired.problems.is_empty(), "{:?}", desired.problems);
}

#[test]
fn catch_all_is_left_to_cilium() {
    let policy = CAMERAS.replace("- 232.1.0.0/16", "- 0.0.0.0/0");
    let desired = resolve(&cluster(&[&policy]), &local("node-a"));
    assert!(desired.policies.is_empty());
    assert!(desired.problems.is_empty(), "{:?}", desired.problems);
    // Not ours at all: no id, and this node is no gateway of ours for it.
    assert!(desired.policy_ids.is_empty());
    assert!(desired.local_gateway_for.is_empty());
    assert!(desired.egress_ifaces.is_empty());
}

#[test]
fn non_canonical_cidr_is_rejected() {
    let policy = CAMERAS.replace("- 232.1.0.0/16", "- 232.0.0.0/4\n  - 232.1.0.0/16");
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    assert_eq!(
        messages(&desired, "cameras"),
        "Invalid: destinationCIDRs entry 232.0.0.0/4 is not canonical (host bits set; \
         did you mean 224.0.0.0/4?): entry skipped"
    );
    // The policy's valid CIDR still applies.
    assert_eq!(
        sources(&desired, "232.1.0.0/16"),
        [ip("198.51.100.10"), ip("198.51.100.11")]
    );
    assert_eq!(desired.policies.len(), 2);
}

#[test]
fn policy_with_only_non_canonical_cidr_has_no_entries() {
    let policy = CAMERAS.replace("- 232.1.0.0/16", "- 232.1.1.1/16");
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    assert!(desired.policies.is_empty());
    assert!(desired.policy_ids.is_empty());
    assert!(messages(&desired, "cameras").contains("232.1.1.1/16 is not canonical"));
}

#[test]
fn ipv6_cidr_is_reported_as_unsupported() {
    let policy = CAMERAS.replace("- 232.1.0.0/16", "- ff3e::8000:0/96\n  - 232.1.0.0/16");
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    let problems = problems_of(&desired, "cameras");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].severity, Severity::Invalid);
    assert!(problems[0]
        .message
        .contains("ff3e::8000:0/96 is IPv6: IPv6 multicast is not yet supported"));
    // The IPv4 group still applies, to the IPv4 addresses only.
    assert_eq!(desired.policies.len(), 2);
}

#[test]
fn unparsable_cidr_invalidates_the_policy() {
    // Cilium's ParseCEGP refuses the whole policy for one bad entry.
    for bad in [
        "232.1.0.0",
        "232.1.0/16",
        "232.1.0.0/33",
        "232.1.0.0/016",
        "camera-groups",
    ] {
        let policy = CAMERAS.replace("- 232.1.0.0/16", &format!("- 232.1.0.0/16\n  - \"{bad}\""));
        let desired = resolve(&cluster(&[&policy]), &local("node-c"));
        assert!(desired.policies.is_empty(), "entry {bad}");
        let text = messages(&desired, "cameras");
        assert!(
            text.starts_with("Invalid: policy skipped: destinationCIDRs entry"),
            "{text}"
        );
        assert!(text.contains(bad), "{text}");
    }
}

// --------------------------------------------------------------- selectors

#[test]
fn pod_selector_match_labels_selects_endpoints() {
    let desired = resolve(&cluster(&[CAMERAS]), &local("node-c"));
    // media cameras only: not the encoder, not the camera in namespace lab.
    assert_eq!(
        sources(&desired, "232.1.0.0/16"),
        [ip("198.51.100.10"), ip("198.51.100.11")]
    );
}

#[test]
fn pod_selector_without_namespace_spans_all_namespaces() {
    let policy = CAMERAS.replace("        io.kubernetes.pod.namespace: media\n", "");
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    assert_eq!(
        sources(&desired, "232.1.0.0/16"),
        [
            ip("198.51.100.10"),
            ip("198.51.100.11"),
            ip("198.51.100.20")
        ]
    );
}

#[test]
fn match_expressions_operators_table() {
    // (matchExpressions of the podSelector, selected pod IPs)
    let cases = [
        (
            "- {key: app, operator: In, values: [camera, encoder]}",
            vec!["198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.20"],
        ),
        ("- {key: app, operator: NotIn, values: [camera]}", vec!["198.51.100.12"]),
        // NotIn also holds where the key is absent.
        (
            "- {key: tier, operator: NotIn, values: [edge]}",
            vec!["198.51.100.10", "198.51.100.11", "198.51.100.20"],
        ),
        ("- {key: tier, operator: Exists}", vec!["198.51.100.12"]),
        (
            "- {key: tier, operator: DoesNotExist}",
            vec!["198.51.100.10", "198.51.100.11", "198.51.100.20"],
        ),
        (
            "- {key: app, operator: In, values: [camera]}\n        - {key: io.kubernetes.pod.namespace, operator: NotIn, values: [media]}",
            vec!["198.51.100.20"],
        ),
    ];
    for (expressions, want) in cases {
        let policy = CAMERAS.replace(
            "matchLabels:\n        app: camera\n        io.kubernetes.pod.namespace: media",
            &format!("matchExpressions:\n        {expressions}"),
        );
        let desired = resolve(&cluster(&[&policy]), &local("node-c"));
        let want: Vec<Ipv4Addr> = want.into_iter().map(ip).collect();
        assert_eq!(sources(&desired, "232.1.0.0/16"), want, "{expressions}");
        assert!(
            desired.problems.is_empty(),
            "{expressions}: {:?}",
            desired.problems
        );
    }
}

#[test]
fn invalid_match_expression_invalidates_the_policy() {
    for (expression, why) in [
        (
            "{key: app, operator: Matches, values: [camera]}",
            "unknown operator \"Matches\"",
        ),
        (
            "{key: app, operator: In}",
            "operator In needs at least one value",
        ),
        (
            "{key: app, operator: Exists, values: [camera]}",
            "operator Exists takes no values",
        ),
    ] {
        let policy = CAMERAS.replace(
            "matchLabels:\n        app: camera\n        io.kubernetes.pod.namespace: media",
            &format!("matchExpressions:\n        - {expression}"),
        );
        let desired = resolve(&cluster(&[&policy]), &local("node-c"));
        assert!(desired.policies.is_empty(), "{expression}");
        let text = messages(&desired, "cameras");
        assert!(
            text.contains("selectors[0].podSelector") && text.contains(why),
            "{text}"
        );
    }
}

#[test]
fn namespace_selector_matches_namespace_labels() {
    let policy = r#"
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: video-team
spec:
  selectors:
  - namespaceSelector:
      matchLabels:
        team: video
  destinationCIDRs:
  - 232.2.0.0/16
  egressGateway:
    nodeSelector:
      matchLabels:
        egress-gateway: "true"
"#;
    let desired = resolve(&cluster(&[policy]), &local("node-c"));
    // Every pod of the namespaces labelled team=video (media), none of lab.
    assert_eq!(
        sources(&desired, "232.2.0.0/16"),
        [
            ip("198.51.100.10"),
            ip("198.51.100.11"),
            ip("198.51.100.12")
        ]
    );
    // The prefix applies to matchExpressions as well.
    let by_expression = policy.replace(
        "matchLabels:\n        team: video",
        "matchExpressions:\n        - {key: kubernetes.io/metadata.name, operator: In, values: [lab]}",
    );
    let desired = resolve(&cluster(&[&by_expression]), &local("node-c"));
    assert_eq!(sources(&desired, "232.2.0.0/16"), [ip("198.51.100.20")]);
}

#[test]
fn empty_namespace_selector_selects_every_namespace() {
    let policy = CAMERAS.replace(
        "  - podSelector:\n      matchLabels:\n        app: camera\n        io.kubernetes.pod.namespace: media",
        "  - namespaceSelector: {}\n    podSelector:\n      matchLabels:\n        app: camera",
    );
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    assert_eq!(
        sources(&desired, "232.1.0.0/16"),
        [
            ip("198.51.100.10"),
            ip("198.51.100.11"),
            ip("198.51.100.20")
        ]
    );
}

#[test]
fn empty_namespace_selector_needs_a_namespace_label() {
    // A namespace-less identity (here hand-written) is not "any namespace".
    let stray = r#"
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: stray
  namespace: media
  uid: c5b3a2d1-7e6f-4c8b-9a0d-3e2f1a4b5c54
status:
  identity:
    id: 70000
    labels: ["k8s:app=camera"]
  networking:
    addressing: [{ipv4: 198.51.100.30}]
    node: 192.0.2.3
"#;
    let policy = CAMERAS.replace(
        "  - podSelector:\n      matchLabels:\n        app: camera\n        io.kubernetes.pod.namespace: media",
        "  - namespaceSelector: {}",
    );
    let desired = resolve(
        &objects(&[NODES, ENDPOINTS, stray, &policy]),
        &local("node-c"),
    );
    let selected = sources(&desired, "232.1.0.0/16");
    assert_eq!(selected.len(), 4);
    assert!(!selected.contains(&ip("198.51.100.30")));
    // The control: the same endpoint with its namespace label is selected.
    let with_namespace = stray.replace(
        r#"["k8s:app=camera"]"#,
        r#"["k8s:app=camera", "k8s:io.kubernetes.pod.namespace=media"]"#,
    );
    assert_ne!(with_namespace, stray);
    let desired = resolve(
        &objects(&[NODES, ENDPOINTS, &with_namespace, &policy]),
        &local("node-c"),
    );
    let selected = sources(&desired, "232.1.0.0/16");
    assert_eq!(selected.len(), 5);
    assert!(selected.contains(&ip("198.51.100.30")));
}

#[test]
fn pod_and_namespace_selectors_of_a_rule_are_anded() {
    let policy = CAMERAS.replace(
        "  - podSelector:\n      matchLabels:\n        app: camera\n        io.kubernetes.pod.namespace: media",
        "  - namespaceSelector:\n      matchLabels:\n        team: research\n    podSelector:\n      matchLabels:\n        app: camera",
    );
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    assert_eq!(sources(&desired, "232.1.0.0/16"), [ip("198.51.100.20")]);
}

#[test]
fn rules_are_ored() {
    let policy = CAMERAS.replace(
        "        io.kubernetes.pod.namespace: media\n",
        "        io.kubernetes.pod.namespace: media\n  - podSelector:\n      matchLabels:\n        app: encoder\n",
    );
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    assert_eq!(
        sources(&desired, "232.1.0.0/16"),
        [
            ip("198.51.100.10"),
            ip("198.51.100.11"),
            ip("198.51.100.12")
        ]
    );
}

#[test]
fn policy_without_selectors_is_invalid_not_silently_empty() {
    // (how the policy's selectors are written, why)
    let cases = [
        ("", "selectors missing"),
        ("  selectors: []\n", "selectors empty"),
    ];
    let without = CAMERAS.replace(
        "  selectors:\n  - podSelector:\n      matchLabels:\n        app: camera\n        io.kubernetes.pod.namespace: media\n",
        "SELECTORS",
    );
    assert!(without.contains("SELECTORS"), "fixture changed: {without}");
    for (selectors, why) in cases {
        let policy = without.replace("SELECTORS", selectors);
        let desired = resolve(&cluster(&[&policy]), &local("node-c"));
        assert!(desired.policies.is_empty(), "{why}");
        assert!(desired.policy_ids.is_empty(), "{why}");
        assert_eq!(
            messages(&desired, "cameras"),
            "Invalid: policy skipped: selectors is missing or empty: the policy selects no endpoint",
            "{why}"
        );
    }
}

#[test]
fn rule_without_pod_or_namespace_selector_invalidates_the_policy() {
    // Cilium refuses the whole policy, not just the rule.
    let policy = CAMERAS.replace(
        "        io.kubernetes.pod.namespace: media\n",
        "        io.kubernetes.pod.namespace: media\n  - nodeSelector:\n      matchLabels:\n        topology.kubernetes.io/zone: zone-1\n",
    );
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    assert!(desired.policies.is_empty());
    assert!(desired.policy_ids.is_empty());
    assert_eq!(
        messages(&desired, "cameras"),
        "Invalid: policy skipped: selectors[1] has neither podSelector nor namespaceSelector"
    );
}

#[test]
fn only_kubernetes_source_labels_are_selectable() {
    let host_like = r#"
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: odd
  namespace: media
  uid: c5b3a2d1-7e6f-4c8b-9a0d-3e2f1a4b5c54
status:
  identity:
    id: 70001
    labels:
    - reserved:app=camera
    - container:app=camera
    - k8s:io.kubernetes.pod.namespace=media
  networking:
    addressing: [{ipv4: 198.51.100.31}]
    node: 192.0.2.3
"#;
    let desired = resolve(
        &objects(&[NODES, ENDPOINTS, host_like, CAMERAS]),
        &local("node-c"),
    );
    assert!(!sources(&desired, "232.1.0.0/16").contains(&ip("198.51.100.31")));
    // The control: the same endpoint with k8s:-source labels is selected.
    let kubernetes = host_like
        .replace("reserved:app=camera", "k8s:app=camera")
        .replace("container:app=camera", "k8s:app=camera");
    assert_ne!(kubernetes, host_like);
    let desired = resolve(
        &objects(&[NODES, ENDPOINTS, &kubernetes, CAMERAS]),
        &local("node-c"),
    );
    assert!(sources(&desired, "232.1.0.0/16").contains(&ip("198.51.100.31")));
}

#[test]
fn node_selector_filters_endpoints_by_their_node() {
    let policy = CAMERAS.replace(
        "        io.kubernetes.pod.namespace: media\n",
        "        io.kubernetes.pod.namespace: media\n    nodeSelector:\n      matchLabels:\n        topology.kubernetes.io/zone: zone-1\n",
    );
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    // camera-1 runs on node-c (zone-1); camera-2 on node-b (zone-2).
    assert_eq!(sources(&desired, "232.1.0.0/16"), [ip("198.51.100.10")]);
}

#[test]
fn rule_node_selectors_apply_to_the_whole_policy() {
    // Cilium keeps the rules' nodeSelectors in one policy-wide list: once
    // any rule has one, every rule's endpoints must run on a matching node.
    let policy = CAMERAS.replace(
        "        io.kubernetes.pod.namespace: media\n",
        "        io.kubernetes.pod.namespace: media\n  - podSelector:\n      matchLabels:\n        app: encoder\n    nodeSelector:\n      matchLabels:\n        topology.kubernetes.io/zone: zone-1\n",
    );
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    // camera-2 runs in zone-2, so even the first (node-less) rule drops it.
    assert_eq!(
        sources(&desired, "232.1.0.0/16"),
        [ip("198.51.100.10"), ip("198.51.100.12")]
    );
}

// ---------------------------------------------------------------- gateways

#[test]
fn gateway_is_first_matching_node_by_name() {
    // node-b comes first in the objects; node-a first by name.
    let desired = resolve(&cluster(&[CAMERAS]), &local("node-c"));
    for source in ["198.51.100.10", "198.51.100.11"] {
        assert_eq!(
            gateway_of(&desired, source, "232.1.0.0/16"),
            Gateway::Node(ip("192.0.2.1"))
        );
    }
}

#[test]
fn selected_node_without_internal_ip_is_passed_over() {
    let nodes = NODES.replace(
        "  - type: InternalIP\n    ip: 192.0.2.1\n",
        "  - type: ExternalIP\n    ip: 203.0.113.1\n",
    );
    let desired = resolve(&objects(&[&nodes, ENDPOINTS, CAMERAS]), &local("node-c"));
    assert_eq!(
        gateway_of(&desired, "198.51.100.10", "232.1.0.0/16"),
        Gateway::Node(ip("192.0.2.2"))
    );
}

#[test]
fn no_gateway_node_gives_not_found() {
    let policy = CAMERAS.replace("egress-gateway: \"true\"", "egress-gateway: \"nowhere\"");
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    assert_eq!(desired.policies.len(), 2);
    for value in desired.policies.values() {
        assert_eq!(
            bare(*value),
            PolicyValue {
                egress_ip: Ipv4Addr::UNSPECIFIED,
                gateway: Gateway::NotFound,
                egress_ifindex: 0,
                policy_id: id_of("cameras"),
                origin: Origin::default(),
            }
        );
    }
    assert_eq!(
        messages(&desired, "cameras"),
        "Warning: no CiliumNode with an InternalIP matches egressGateway.nodeSelector: \
         the multicast of the endpoints it serves is dropped (no_gateway)"
    );
}

const TWO_GATEWAYS: &str = r#"
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

#[test]
fn egress_gateways_pin_by_fnv32a_of_uid() {
    let desired = resolve(&cluster(&[TWO_GATEWAYS]), &local("node-c"));
    // Gateways sorted by IP: [node-a 192.0.2.1, node-b 192.0.2.2], whatever
    // their order in the policy; endpoint -> gateways[fnv32a(uid) % 2].
    let table = [
        ("198.51.100.10", 0x960a_e861_u32, "192.0.2.2"), // media/camera-1
        ("198.51.100.11", 0xc74d_2148, "192.0.2.1"),     // media/camera-2
        ("198.51.100.20", 0x3152_510e, "192.0.2.1"),     // lab/camera-3
    ];
    let sorted = [ip("192.0.2.1"), ip("192.0.2.2")];
    for (source, hash, gateway) in table {
        assert_eq!(sorted[(hash % 2) as usize], ip(gateway));
        assert_eq!(
            gateway_of(&desired, source, "232.1.0.0/16"),
            Gateway::Node(ip(gateway)),
            "{source}"
        );
    }
}

#[test]
fn egress_gateways_override_egress_gateway() {
    // egressGateway names node-c, which is no gateway once the list is set.
    let desired = resolve(&cluster(&[TWO_GATEWAYS]), &local("node-c"));
    // The three cameras' entries, or all() would hold on none.
    assert_eq!(
        sources(&desired, "232.1.0.0/16"),
        [
            ip("198.51.100.10"),
            ip("198.51.100.11"),
            ip("198.51.100.20")
        ]
    );
    assert_eq!(desired.policies.len(), 3);
    assert!(desired
        .policies
        .values()
        .all(|v| v.gateway != Gateway::Node(ip("192.0.2.3"))));
    assert!(desired.local_gateway_for.is_empty());
}

#[test]
fn unresolved_gateway_keeps_its_slot_and_sorts_first() {
    // As in Cilium, an unresolved gateway is 0.0.0.0 among the sorted
    // gateways: the endpoints hashed onto it get no gateway.
    let policy = TWO_GATEWAYS.replace(
        "    interface: eth1\n",
        "    interface: eth1\n  - nodeSelector:\n      matchLabels:\n        kubernetes.io/hostname: node-z\n",
    );
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    // [not found, 192.0.2.1, 192.0.2.2]; fnv32a(uid) % 3 picks.
    assert_eq!(
        gateway_of(&desired, "198.51.100.10", "232.1.0.0/16"),
        Gateway::NotFound
    ); // % 3 = 0
    assert_eq!(
        gateway_of(&desired, "198.51.100.11", "232.1.0.0/16"),
        Gateway::NotFound
    ); // % 3 = 0
    assert_eq!(
        gateway_of(&desired, "198.51.100.20", "232.1.0.0/16"),
        Gateway::Node(ip("192.0.2.1"))
    ); // % 3 = 1
    assert!(messages(&desired, "cameras").contains("matches egressGateways[2].nodeSelector"));
}

#[test]
fn endpoint_without_uid_cannot_be_pinned_among_several_gateways() {
    let endpoints = ENDPOINTS.replace("  uid: 0b7e4c52-1f0a-4d7e-9a51-6c2f1e8d3a10\n", "");
    let desired = resolve(
        &objects(&[NODES, &endpoints, TWO_GATEWAYS]),
        &local("node-c"),
    );
    assert!(!sources(&desired, "232.1.0.0/16").contains(&ip("198.51.100.10")));
    assert_eq!(
        messages(&desired, "cameras"),
        "Warning: 1 endpoint has no metadata.uid, so it cannot be pinned to one of the 2 \
         gateways: skipped: media/camera-1"
    );
    // Many of them: one finding per policy, with a count and a few names.
    let mut many = endpoints.clone();
    for i in 0..40 {
        many.push_str(&format!(
            "---\napiVersion: cilium.io/v2\nkind: CiliumEndpoint\n\
             metadata: {{name: cam-{i:02}, namespace: media}}\n\
             status: {{identity: {{id: 51234, labels: [k8s:app=camera, \
             k8s:io.kubernetes.pod.namespace=media]}}, \
             networking: {{addressing: [{{ipv4: 198.51.100.1{i:02}}}]}}}}\n"
        ));
    }
    let desired = resolve(&objects(&[NODES, &many, TWO_GATEWAYS]), &local("node-c"));
    assert_eq!(
        messages(&desired, "cameras"),
        "Warning: 41 endpoints have no metadata.uid, so they cannot be pinned to one of the 2 \
         gateways: skipped: media/cam-00, media/cam-01, media/cam-02, media/cam-03, \
         media/cam-04 and 36 more"
    );
    // With one gateway no hash is needed, so the UID is not either.
    let desired = resolve(&objects(&[NODES, &endpoints, CAMERAS]), &local("node-c"));
    assert!(sources(&desired, "232.1.0.0/16").contains(&ip("198.51.100.10")));
}

#[test]
fn egress_ip_from_interface() {
    let desired = resolve(&cluster(&[TWO_GATEWAYS]), &local("node-a"));
    // camera-2 is pinned to node-a, this node: the first IPv4 of eth1.
    assert_eq!(
        bare(desired.policies[&key("198.51.100.11", "232.1.0.0/16")]),
        PolicyValue {
            egress_ip: ip("203.0.113.10"),
            gateway: Gateway::Node(ip("192.0.2.1")),
            egress_ifindex: ETH1,
            policy_id: id_of("cameras"),
            origin: Origin::default(),
        }
    );
    // camera-1 goes through node-b: nothing to derive here.
    let other = desired.policies[&key("198.51.100.10", "232.1.0.0/16")];
    assert_eq!(
        (other.egress_ip, other.egress_ifindex),
        (Ipv4Addr::UNSPECIFIED, 0)
    );
    assert_eq!(desired.local_gateway_for["cameras"], ip("203.0.113.10"));
    assert_eq!(
        desired.egress_ifaces,
        BTreeMap::from([(ETH1, EgressIface { mac: ETH1_MAC })])
    );
}

#[test]
fn egress_ip_by_address_uses_the_interface_holding_it() {
    let desired = resolve(&cluster(&[TWO_GATEWAYS]), &local("node-b"));
    // camera-1 is pinned to node-b: egressIP 203.0.113.11, held by eth1.
    let value = desired.policies[&key("198.51.100.10", "232.1.0.0/16")];
    assert_eq!(
        (value.egress_ip, value.egress_ifindex),
        (ip("203.0.113.11"), ETH1)
    );
    assert_eq!(desired.local_gateway_for["cameras"], ip("203.0.113.11"));
}

#[test]
fn egress_ip_from_default_route() {
    let desired = resolve(&cluster(&[CAMERAS]), &local("node-a"));
    for source in ["198.51.100.10", "198.51.100.11"] {
        let value = desired.policies[&key(source, "232.1.0.0/16")];
        assert_eq!(
            (value.egress_ip, value.egress_ifindex),
            (ip("203.0.113.10"), ETH1)
        );
    }
    assert_eq!(
        desired.local_gateway_for,
        BTreeMap::from([("cameras".to_string(), ip("203.0.113.10"))])
    );
    assert_eq!(
        desired.egress_ifaces,
        BTreeMap::from([(ETH1, EgressIface { mac: ETH1_MAC })])
    );
    assert!(desired.problems.is_empty(), "{:?}", desired.problems);
}

/// A change to the local node a test case makes.
type LocalChange = fn(&mut LocalNode);

#[test]
fn missing_egress_ip_is_a_warning_and_zero() {
    // (egressGateway addition, local node change, why)
    let no_default_route = |l: &mut LocalNode| l.default_route_ifindex = None;
    let unchanged = |_: &mut LocalNode| {};
    let cases: [(&str, LocalChange, &str); 5] = [
        (
            "    interface: eth9\n",
            unchanged,
            "interface eth9 does not exist on this node",
        ),
        (
            "    interface: eth2\n",
            unchanged,
            "interface eth2 has no IPv4 address",
        ),
        (
            "    egressIP: 203.0.113.99\n",
            unchanged,
            "no interface of this node holds egressIP 203.0.113.99",
        ),
        (
            "    egressIP: 2001:db8::99\n",
            unchanged,
            "egressIP 2001:db8::99 is IPv6",
        ),
        ("", no_default_route, "this node has no IPv4 default route"),
    ];
    for (addition, change, why) in cases {
        let policy = format!("{CAMERAS}{addition}");
        let mut local = local("node-a");
        change(&mut local);
        let desired = resolve(&cluster(&[&policy]), &local);
        let value = desired.policies[&key("198.51.100.10", "232.1.0.0/16")];
        assert_eq!(
            bare(value),
            PolicyValue {
                egress_ip: Ipv4Addr::UNSPECIFIED,
                gateway: Gateway::Node(ip("192.0.2.1")),
                egress_ifindex: 0,
                policy_id: id_of("cameras"),
                origin: Origin::default(),
            },
            "{why}"
        );
        let problems = problems_of(&desired, "cameras");
        assert_eq!(problems.len(), 1, "{why}: {problems:?}");
        assert_eq!(problems[0].severity, Severity::Warning);
        assert!(problems[0].message.contains(why), "{}", problems[0].message);
        assert!(
            problems[0].message.contains("no_egress_ip"),
            "{}",
            problems[0].message
        );
        assert_eq!(desired.local_gateway_for["cameras"], Ipv4Addr::UNSPECIFIED);
        assert!(desired.egress_ifaces.is_empty());
    }
}

#[test]
fn other_nodes_get_no_egress_ip() {
    let desired = resolve(&cluster(&[CAMERAS]), &local("node-b"));
    // The two media cameras' entries, or the loop would check none.
    assert_eq!(
        sources(&desired, "232.1.0.0/16"),
        [ip("198.51.100.10"), ip("198.51.100.11")]
    );
    assert_eq!(desired.policies.len(), 2);
    for value in desired.policies.values() {
        assert_eq!(value.gateway, Gateway::Node(ip("192.0.2.1")));
        assert_eq!(
            (value.egress_ip, value.egress_ifindex),
            (Ipv4Addr::UNSPECIFIED, 0)
        );
    }
    assert!(desired.local_gateway_for.is_empty());
    assert!(desired.egress_ifaces.is_empty());
}

#[test]
fn gateway_spec_errors_invalidate_the_policy() {
    for (addition, why) in [
        (
            "    interface: eth1\n    egressIP: 203.0.113.10\n",
            "egressGateway sets both interface and egressIP; set one of them",
        ),
        (
            "    egressIP: egress-1\n",
            "egressGateway.egressIP \"egress-1\" is not an IP address",
        ),
    ] {
        let policy = format!("{CAMERAS}{addition}");
        let desired = resolve(&cluster(&[&policy]), &local("node-a"));
        assert!(desired.policies.is_empty(), "{why}");
        assert!(desired.local_gateway_for.is_empty(), "{why}");
        assert_eq!(
            messages(&desired, "cameras"),
            format!("Invalid: policy skipped: {why}")
        );
    }
    let no_gateway = &CAMERAS[..CAMERAS.find("  egressGateway:").unwrap_or(CAMERAS.len())];
    let desired = resolve(&cluster(&[no_gateway]), &local("node-a"));
    assert_eq!(
        messages(&desired, "cameras"),
        "Invalid: policy skipped: neither egressGateway nor egressGateways is set"
    );
}

// ------------------------------------------------------------------- entries

#[test]
fn excluded_cidrs_become_excluded_entries() {
    let policy = CAMERAS.replace(
        "  egressGateway:",
        "  excludedCIDRs:\n  - 232.1.255.0/24\n  - 198.51.100.0/24\n  egressGateway:",
    );
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    for source in ["198.51.100.10", "198.51.100.11"] {
        assert_eq!(
            gateway_of(&desired, source, "232.1.0.0/16"),
            Gateway::Node(ip("192.0.2.1"))
        );
        assert_eq!(
            desired.policies[&key(source, "232.1.255.0/24")],
            PolicyValue {
                egress_ip: Ipv4Addr::UNSPECIFIED,
                gateway: Gateway::Excluded,
                egress_ifindex: 0,
                policy_id: id_of("cameras"),
                origin: Origin::default(),
            }
        );
    }
    // The unicast exclusion is Cilium's.
    assert_eq!(desired.policies.len(), 4);
}

#[test]
fn non_canonical_excluded_cidr_is_rejected() {
    let policy = CAMERAS.replace(
        "  egressGateway:",
        "  excludedCIDRs:\n  - 232.1.255.1/24\n  egressGateway:",
    );
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    assert_eq!(desired.policies.len(), 2);
    assert!(desired
        .policies
        .values()
        .all(|v| v.gateway != Gateway::Excluded));
    assert_eq!(
        messages(&desired, "cameras"),
        "Invalid: excludedCIDRs entry 232.1.255.1/24 is not canonical (host bits set; \
         did you mean 232.1.255.0/24?): entry skipped, its groups are not excluded"
    );
}

#[test]
fn overlapping_policies_first_name_wins() {
    let backup = CAMERAS
        .replace("name: cameras", "name: backup-route")
        .replace("egress-gateway: \"true\"", "kubernetes.io/hostname: node-b");
    let desired = resolve(&cluster(&[CAMERAS, &backup]), &local("node-c"));
    // "backup-route" < "cameras": its gateway node-b wins every shared key.
    for source in ["198.51.100.10", "198.51.100.11"] {
        let value = desired.policies[&key(source, "232.1.0.0/16")];
        assert_eq!(value.gateway, Gateway::Node(ip("192.0.2.2")));
        assert_eq!(value.policy_id, id_of("backup-route"));
    }
    assert_eq!(
        messages(&desired, "cameras"),
        "Warning: 2 entries have the same pod and group prefix as policy backup-route \
         (e.g. 198.51.100.10 -> 232.1.0.0/16); the lexically first policy name wins, \
         this policy's are ignored"
    );
    assert_eq!(messages(&desired, "backup-route"), "");
    assert_eq!(desired.policy_ids.len(), 2);
}

#[test]
fn policy_removed_removes_its_entries() {
    let groups = CAMERAS
        .replace("name: cameras", "name: encoders")
        .replace("app: camera", "app: encoder")
        .replace("232.1.0.0/16", "232.3.0.0/16");
    let before = resolve(&cluster(&[CAMERAS, &groups]), &local("node-a"));
    assert_eq!(before.policies.len(), 3);
    let after = resolve(&cluster(&[&groups]), &local("node-a"));
    assert_eq!(
        after.policies.keys().collect::<Vec<_>>(),
        [&key("198.51.100.12", "232.3.0.0/16")]
    );
    assert_eq!(after.policy_ids.keys().collect::<Vec<_>>(), ["encoders"]);
    assert_eq!(
        after.local_gateway_for.keys().collect::<Vec<_>>(),
        ["encoders"]
    );
    // Removing the last one empties everything policy-related.
    let none = resolve(&cluster(&[]), &local("node-a"));
    assert!(none.policies.is_empty() && none.policy_ids.is_empty());
    assert!(none.local_gateway_for.is_empty() && none.egress_ifaces.is_empty());
}

#[test]
fn endpoint_removed_removes_its_entries() {
    let before = resolve(&cluster(&[CAMERAS]), &local("node-c"));
    assert_eq!(
        sources(&before, "232.1.0.0/16"),
        [ip("198.51.100.10"), ip("198.51.100.11")]
    );
    let mut objects = cluster(&[CAMERAS]);
    objects.endpoints.retain(|e| &*e.name != "camera-1");
    let after = resolve(&objects, &local("node-c"));
    assert_eq!(sources(&after, "232.1.0.0/16"), [ip("198.51.100.11")]);
    assert_eq!(after.policy_ids, before.policy_ids);
}

#[test]
fn entries_only_for_ipv4_endpoints() {
    let more = r#"
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: camera-v6
  namespace: media
  uid: 11111111-2222-4333-8444-555555555555
status:
  identity:
    id: 51234
    labels: ["k8s:app=camera", "k8s:io.kubernetes.pod.namespace=media"]
  networking:
    addressing: [{ipv6: "2001:db8::42"}]
    node: 192.0.2.3
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: camera-dual
  namespace: media
  uid: 66666666-7777-4888-9999-000000000000
status:
  identity:
    id: 51234
    labels: ["k8s:app=camera", "k8s:io.kubernetes.pod.namespace=media"]
  networking:
    addressing:
    - {ipv4: 198.51.100.40, ipv6: "2001:db8::40"}
    - {ipv4: 198.51.100.41}
    - {ipv4: 198.51.100.40}
    - {ipv4: not-an-address}
    node: 192.0.2.3
"#;
    let desired = resolve(
        &objects(&[NODES, ENDPOINTS, more, CAMERAS]),
        &local("node-c"),
    );
    assert_eq!(
        sources(&desired, "232.1.0.0/16"),
        [
            ip("198.51.100.10"),
            ip("198.51.100.11"),
            ip("198.51.100.40"),
            ip("198.51.100.41")
        ]
    );
}

#[test]
fn endpoints_without_identity_labels_are_skipped() {
    let more = r#"
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {name: no-identity, namespace: media, uid: 12121212-3434-4565-8787-909090909090}
status:
  networking:
    addressing: [{ipv4: 198.51.100.50}]
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {name: no-labels, namespace: media, uid: 13131313-3434-4565-8787-909090909090}
status:
  identity: {id: 5}
  networking:
    addressing: [{ipv4: 198.51.100.51}]
"#;
    // An empty podSelector selects every endpoint it can see.
    let policy = CAMERAS.replace(
        "matchLabels:\n        app: camera\n        io.kubernetes.pod.namespace: media",
        "{}",
    );
    let policy = policy.replace("podSelector:\n      {}", "podSelector: {}");
    let desired = resolve(
        &objects(&[NODES, ENDPOINTS, more, &policy]),
        &local("node-c"),
    );
    let selected = sources(&desired, "232.1.0.0/16");
    assert_eq!(selected.len(), 4, "{selected:?}");
    assert!(!selected.contains(&ip("198.51.100.50")) && !selected.contains(&ip("198.51.100.51")));
    // Skipped, but not in silence: one finding for both, with their names.
    assert_eq!(desired.endpoints_without_identity, 2);
    let found: Vec<&Problem> = desired
        .problems
        .iter()
        .filter(|p| p.subject == Subject::Endpoints)
        .collect();
    assert_eq!(found.len(), 1, "{:#?}", desired.problems);
    assert_eq!(found[0].severity, Severity::Warning);
    assert_eq!(
        found[0].message,
        "2 CiliumEndpoints without a security identity (status.identity with labels), \
         skipped until they have one: no policy can select them: media/no-identity, \
         media/no-labels"
    );
}

#[test]
fn endpoints_without_identity_are_counted_with_a_bounded_sample() {
    // (endpoints without an identity, the names the finding lists)
    let cases: [(usize, &str); 4] = [
        (0, ""),
        (1, "1 CiliumEndpoint without"),
        (5, "media/x00, media/x01, media/x02, media/x03, media/x04"),
        (
            5000,
            "media/x00, media/x01, media/x02, media/x03, media/x04 and 4995 more",
        ),
    ];
    for (n, names) in cases {
        // In reverse order, so that the sample must be sorted, not first seen.
        let mut extra = String::new();
        for i in (0..n).rev() {
            extra.push_str(&format!(
                "---\napiVersion: cilium.io/v2\nkind: CiliumEndpoint\n\
                 metadata: {{name: x{i:02}, namespace: media}}\n\
                 status: {{networking: {{addressing: [{{ipv4: 198.51.100.99}}]}}}}\n"
            ));
        }
        let mut manifests = vec![NODES, ENDPOINTS, CAMERAS];
        if n > 0 {
            manifests.push(&extra);
        }
        let desired = resolve(&objects(&manifests), &local("node-c"));
        assert_eq!(desired.endpoints_without_identity, n);
        let found: Vec<&Problem> = desired
            .problems
            .iter()
            .filter(|p| p.subject == Subject::Endpoints)
            .collect();
        if n == 0 {
            assert!(found.is_empty(), "{found:?}");
            continue;
        }
        assert_eq!(found.len(), 1, "{n}: one finding, not one per endpoint");
        assert!(
            found[0].message.contains(names),
            "{n}: {}",
            found[0].message
        );
        assert!(found[0].message.len() < 300, "{n}: bounded");
        // The others still resolve.
        assert_eq!(
            sources(&desired, "232.1.0.0/16"),
            [ip("198.51.100.10"), ip("198.51.100.11")]
        );
    }
}

#[test]
fn two_endpoints_with_one_address_first_by_name_wins() {
    let stale = ENDPOINTS
        .split("---")
        .next()
        .unwrap_or_default()
        .replace("name: camera-1", "name: camera-0-old")
        .replace(
            "0b7e4c52-1f0a-4d7e-9a51-6c2f1e8d3a10",
            "c5b3a2d1-7e6f-4c8b-9a0d-3e2f1a4b5c54",
        );
    let desired = resolve(
        &objects(&[NODES, &stale, ENDPOINTS, TWO_GATEWAYS]),
        &local("node-c"),
    );
    // camera-0-old (fnv32a % 2 = 0 -> node-a) sorts before camera-1 (-> node-b).
    assert_eq!(
        gateway_of(&desired, "198.51.100.10", "232.1.0.0/16"),
        Gateway::Node(ip("192.0.2.1"))
    );
}

// --------------------------------------------------------- nodes and config

#[test]
fn nodes_and_config_cover_every_node() {
    // No policy at all: nodes and config do not depend on policies.
    let desired = resolve(&cluster(&[]), &local("node-b"));
    assert_eq!(
        desired.nodes,
        BTreeSet::from([ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3")])
    );
    assert_eq!(desired.config.node_ip, ip("192.0.2.2"));
    assert_eq!(desired.config.tunnel_ifindex, TUNNEL);
    let unknown = resolve(&cluster(&[]), &local("node-x"));
    assert_eq!(unknown.config.node_ip, Ipv4Addr::UNSPECIFIED);
}

#[test]
fn this_nodes_ciliumnode_missing_is_a_finding() {
    // node-d has only a CiliumInternalIP.
    let node_d = r#"
apiVersion: cilium.io/v2
kind: CiliumNode
metadata: {name: node-d}
spec:
  addresses: [{type: CiliumInternalIP, ip: 198.51.100.204}]
"#;
    let objects = objects(&[NODES, node_d, ENDPOINTS, CAMERAS]);
    let kept = ip("192.0.2.9");
    // (--node-name, IP known from before, node IP, finding: severity and
    // words of its message)
    type Case<'a> = (
        &'a str,
        Option<Ipv4Addr>,
        Ipv4Addr,
        Option<(Severity, &'a str)>,
    );
    let cases: [Case; 7] = [
        ("node-b", None, ip("192.0.2.2"), None),
        // The objects win over what was known.
        ("node-b", Some(kept), ip("192.0.2.2"), None),
        (
            "node-x",
            None,
            Ipv4Addr::UNSPECIFIED,
            Some((
                Severity::Invalid,
                "no CiliumNode is named \"node-x\" (--node-name)",
            )),
        ),
        (
            "",
            None,
            Ipv4Addr::UNSPECIFIED,
            Some((Severity::Invalid, "no CiliumNode is named \"\"")),
        ),
        (
            "node-d",
            None,
            Ipv4Addr::UNSPECIFIED,
            Some((
                Severity::Invalid,
                "CiliumNode \"node-d\" (--node-name) has no IPv4 InternalIP",
            )),
        ),
        // Known, then gone from the objects: its IP stays, so that a
        // stale or partial view does not withdraw its gateway entries.
        (
            "node-x",
            Some(kept),
            kept,
            Some((
                Severity::Warning,
                "keeping this node's last known IP 192.0.2.9",
            )),
        ),
        (
            "node-d",
            Some(kept),
            kept,
            Some((
                Severity::Warning,
                "keeping this node's last known IP 192.0.2.9",
            )),
        ),
    ];
    for (name, known_ip, node_ip, finding) in cases {
        let mut here = local(name);
        here.known_ip = known_ip;
        let desired = resolve(&objects, &here);
        let why = format!("{name:?} known {known_ip:?}");
        assert_eq!(desired.config.node_ip, node_ip, "{why}");
        let found: Vec<&Problem> = desired
            .problems
            .iter()
            .filter(|p| matches!(p.subject, Subject::Node(_)))
            .collect();
        match finding {
            None => {
                assert!(found.is_empty(), "{why}: {found:?}");
                assert!(desired.node_problem().is_none(), "{why}");
            }
            Some((severity, words)) => {
                assert_eq!(found.len(), 1, "{why}: {:#?}", desired.problems);
                assert_eq!(found[0].subject, Subject::Node(name.to_string()), "{why}");
                assert_eq!(found[0].severity, severity, "{why}");
                assert!(
                    found[0].message.contains(words),
                    "{why}: {}",
                    found[0].message
                );
                assert_eq!(desired.node_problem(), Some(found[0]), "{why}");
                // This node first: it outweighs any policy's finding.
                assert_eq!(desired.problems.first(), Some(found[0]), "{why}");
            }
        }
        // The policies resolve all the same.
        assert_eq!(desired.policy_ids.keys().collect::<Vec<_>>(), ["cameras"]);
    }
}

#[test]
fn an_unknown_node_name_loses_the_gateway_entries_loudly() {
    // node-a is the gateway of `cameras`; run as node-a with a typo, it
    // keeps only its own pods' entries, as the datapath needs no more, and
    // says why.
    let objects = cluster(&[CAMERAS]);
    let local_pods = BTreeSet::from([ip("198.51.100.20")]);
    let mut right = resolve(&objects, &local("node-a"));
    retain_node_local(&mut right, &local_pods);
    let mut typo = resolve(&objects, &local("nodea"));
    retain_node_local(&mut typo, &local_pods);
    assert_eq!(right.policies.len(), 2, "{:?}", right.policies);
    assert!(typo.policies.is_empty(), "{:?}", typo.policies);
    assert!(right.node_problem().is_none());
    let problem = typo.node_problem().expect("a finding about this node");
    assert_eq!(problem.severity, Severity::Invalid);
    assert!(problem.message.contains("not ready"), "{}", problem.message);
}

// ------------------------------------------------------------- robustness

#[test]
fn invalid_policy_does_not_block_others() {
    let broken = CAMERAS
        .replace("name: cameras", "name: broken")
        .replace("  - podSelector:", "  - {}\n  - podSelector:");
    let encoders = CAMERAS
        .replace("name: cameras", "name: encoders")
        .replace("app: camera", "app: encoder")
        .replace("232.1.0.0/16", "232.3.0.0/16");
    let desired = resolve(&cluster(&[&broken, &encoders]), &local("node-c"));
    assert_eq!(sources(&desired, "232.3.0.0/16"), [ip("198.51.100.12")]);
    assert_eq!(desired.policy_ids.keys().collect::<Vec<_>>(), ["encoders"]);
    assert_eq!(problems_of(&desired, "broken").len(), 1);
    assert_eq!(
        problems_of(&desired, "broken")[0].severity,
        Severity::Invalid
    );
}

#[test]
fn problems_are_sorted_and_deduplicated() {
    let copy = CAMERAS.replace(
        "- 232.1.0.0/16",
        "- 232.0.0.0/4\n  - 232.0.0.0/4\n  - 232.1.0.0/16",
    );
    let zeta = copy.replace("name: cameras", "name: zeta");
    let desired = resolve(&cluster(&[&zeta, &copy, &copy]), &local("node-c"));
    let mut sorted = desired.problems.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(desired.problems, sorted);
    // One non-canonical message per policy, one for the duplicate object,
    // one overlap warning for zeta.
    assert_eq!(desired.problems.len(), 4, "{:#?}", desired.problems);
    assert!(messages(&desired, "cameras").contains("of the same name came first"));
}

#[test]
fn bad_data_never_panics() {
    let garbage = r#"
apiVersion: cilium.io/v2
kind: CiliumNode
metadata: {name: node-a, labels: {egress-gateway: "true"}}
spec:
  addresses: [{type: InternalIP, ip: "192.0.2.300"}, {type: InternalIP, ip: ""}, {ip: 192.0.2.9}]
---
apiVersion: cilium.io/v2
kind: CiliumNode
metadata: {}
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {}
status:
  identity: {labels: ["", ":", "=", "k8s:", "$host", "k8s:=x", "a:b:c=d=e"]}
  networking: {addressing: [{}, {ipv4: ""}, {ipv4: 198.51.100.60}], node: "not-an-ip"}
---
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {}
spec:
  selectors: [{podSelector: {}}]
  destinationCIDRs: ["232.1.0.0/16", "", "/", "232.1.0.0/", "/16", "999.1.0.0/16"]
  excludedCIDRs: ["", "232.1.0.0/99"]
  egressGateways: [{}, {nodeSelector: {matchExpressions: [{key: "", operator: ""}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: empty}
spec: {}
---
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: odd}
spec:
  selectors: [{podSelector: {}}]
  destinationCIDRs: ["232.1.0.0/16"]
  egressGateway: {nodeSelector: {}}
"#;
    let mut local = local("");
    local.interfaces.clear();
    local.default_route_ifindex = Some(77);
    let desired = resolve(&objects(&[garbage]), &local);
    // The nameless policy is reported; "odd" (a gateway selector matching
    // every node, but none with a usable InternalIP) still resolves.
    assert!(!problems_of(&desired, "").is_empty());
    assert_eq!(sources(&desired, "232.1.0.0/16"), [ip("198.51.100.60")]);
    assert_eq!(
        gateway_of(&desired, "198.51.100.60", "232.1.0.0/16"),
        Gateway::NotFound
    );
    assert!(desired.nodes.is_empty());
    assert_eq!(desired.config.node_ip, Ipv4Addr::UNSPECIFIED);
    assert_eq!(desired.policy_ids.keys().collect::<Vec<_>>(), ["odd"]);
}

#[test]
fn entries_carry_the_origin_node_and_identity() {
    // The gateway accepts a pod's copies only from the node the pod runs
    // on, with the pod's identity as VNI.
    let desired = resolve(&cluster(&[CAMERAS]), &local("node-a"));
    let value = desired.policies[&key("198.51.100.10", "232.1.0.0/16")];
    assert_eq!(
        value.origin,
        Origin {
            node: ip("192.0.2.3"),
            identity: 51234
        }
    );
}

#[test]
fn identity_out_of_24_bits_gives_an_origin_no_gateway_accepts() {
    let huge = ENDPOINTS.replacen("id: 51234", "id: 16777216", 1);
    let desired = resolve(&objects(&[NODES, &huge, CAMERAS]), &local("node-a"));
    let value = desired.policies[&key("198.51.100.10", "232.1.0.0/16")];
    assert_eq!(value.origin.identity, 0);
}

#[test]
fn node_local_keeps_local_pods_and_gateway_entries() {
    // node-a is a gateway of TWO_GATEWAYS for camera-2 only.
    let mut desired = resolve(&cluster(&[TWO_GATEWAYS]), &local("node-a"));
    let all = desired.policies.clone();
    assert!(all.len() >= 2);
    // camera-1 (198.51.100.10) goes through node-b: kept only as a local pod.
    let mut with_local = desired.clone();
    retain_node_local(&mut with_local, &BTreeSet::from([ip("198.51.100.10")]));
    assert_eq!(with_local.policies, all);
    retain_node_local(&mut desired, &BTreeSet::new());
    let this = Gateway::Node(desired.config.node_ip);
    for (k, v) in &all {
        // Its gateway entries, and the same pod's exclusions inside them.
        let keep = v.gateway == this
            || (v.gateway == Gateway::Excluded
                && all.iter().any(|(served, sv)| {
                    sv.gateway == this
                        && served.source == k.source
                        && served.destination.prefix() < k.destination.prefix()
                        && served.destination.contains(k.destination.network())
                }));
        assert_eq!(desired.policies.contains_key(k), keep, "{k:?} -> {v:?}");
    }
    assert!(!desired.policies.is_empty() && desired.policies.len() < all.len());
    // Nothing kept for a gateway when this node's IP is unknown.
    let mut unknown = desired.clone();
    unknown.config.node_ip = Ipv4Addr::UNSPECIFIED;
    retain_node_local(&mut unknown, &BTreeSet::new());
    assert!(unknown.policies.is_empty());
}

#[test]
fn gateway_keeps_the_exclusions_inside_the_prefixes_it_serves() {
    // Pods on other nodes; this node (192.0.2.1) is their gateway for
    // 232.1.0.0/16, except 232.1.255.0/24. A second policy excludes
    // 239.1.0.0/16 for them, which this node serves no prefix around.
    let policy = CAMERAS.replace(
        "  egressGateway:",
        "  excludedCIDRs:\n  - 232.1.255.0/24\n  egressGateway:",
    );
    let elsewhere = r#"
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: other-groups
spec:
  selectors:
  - podSelector:
      matchLabels:
        app: camera
  destinationCIDRs:
  - 239.0.0.0/8
  excludedCIDRs:
  - 239.1.0.0/16
  egressGateway:
    nodeSelector:
      matchLabels:
        kubernetes.io/hostname: node-c
"#;
    let mut desired = resolve(&cluster(&[&policy, elsewhere]), &local("node-a"));
    assert_eq!(desired.config.node_ip, ip("192.0.2.1"));
    retain_node_local(&mut desired, &BTreeSet::new());
    for source in ["198.51.100.10", "198.51.100.11"] {
        assert_eq!(
            gateway_of(&desired, source, "232.1.0.0/16"),
            Gateway::Node(ip("192.0.2.1"))
        );
        assert_eq!(
            gateway_of(&desired, source, "232.1.255.0/24"),
            Gateway::Excluded,
            "the gateway enforces the exclusion itself"
        );
        assert!(!desired.policies.contains_key(&key(source, "239.1.0.0/16")));
        assert!(!desired.policies.contains_key(&key(source, "239.0.0.0/8")));
    }
    assert_eq!(desired.policies.len(), 4);
}

#[test]
fn another_policys_exclusion_wins_over_a_destination() {
    // "a-cameras" sends 232.1.0.0/16 out; "b-keep-inside" excludes it for the
    // same pods. The exclusion stands, whichever name sorts first.
    let keep_inside = r#"
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: b-keep-inside
spec:
  selectors:
  - podSelector:
      matchLabels:
        app: camera
  destinationCIDRs:
  - 232.0.0.0/8
  excludedCIDRs:
  - 232.1.0.0/16
  egressGateway:
    nodeSelector:
      matchLabels:
        egress-gateway: "true"
"#;
    let cameras = CAMERAS.replace("name: cameras", "name: a-cameras");
    let desired = resolve(&cluster(&[&cameras, keep_inside]), &local("node-a"));
    assert_eq!(
        gateway_of(&desired, "198.51.100.10", "232.1.0.0/16"),
        Gateway::Excluded
    );
}

#[test]
fn narrowed_resolution_equals_resolution_then_narrowing() {
    // "a-elsewhere" wins every key of the cameras' /16 with gateway node-c;
    // "b-here" asks for the same keys through this node and loses them: a
    // narrowed resolution must not hand them to "b-here" for want of the
    // winner it never held.
    let elsewhere = CAMERAS
        .replace("name: cameras", "name: a-elsewhere")
        .replace("egress-gateway: \"true\"", "kubernetes.io/hostname: node-c");
    let here = CAMERAS
        .replace("name: cameras", "name: b-here")
        .replace("egress-gateway: \"true\"", "kubernetes.io/hostname: node-a")
        .replace(
            "  egressGateway:",
            "  excludedCIDRs:\n  - 232.1.255.0/24\n  egressGateway:",
        );
    let clusters = [
        cluster(&[&elsewhere, &here]),
        cluster(&[&here]),
        cluster(&[TWO_GATEWAYS]),
        cluster(&[CAMERAS, TWO_GATEWAYS, &here]),
    ];
    let pod_sets = [
        BTreeSet::new(),
        BTreeSet::from([ip("198.51.100.10")]),
        BTreeSet::from([ip("198.51.100.10"), ip("198.51.100.11")]),
    ];
    let mut kept_something = false;
    for (c, objects) in clusters.iter().enumerate() {
        for pods in &pod_sets {
            for node in ["node-a", "node-b", "node-c"] {
                let mut full = resolve(objects, &local(node));
                retain_node_local(&mut full, pods);
                let mut narrowed = resolve_for_node(objects, &local(node), Some(pods));
                retain_node_local(&mut narrowed, pods);
                assert_eq!(narrowed, full, "cluster {c}, {node}, pods {pods:?}");
                kept_something |= !full.policies.is_empty();
            }
        }
    }
    assert!(kept_something, "the cases keep entries, not only nothing");
    // The overlap: node-a serves none of the keys "b-here" lost.
    let mut lost = resolve_for_node(&clusters[0], &local("node-a"), Some(&BTreeSet::new()));
    retain_node_local(&mut lost, &BTreeSet::new());
    assert!(lost.policies.is_empty(), "{:?}", lost.policies);
    assert!(messages(&lost, "b-here").contains("a-elsewhere"));
}
