//! This node, the cluster's nodes, robustness and narrowing.

use super::*;

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
    let local_pods = LocalPods::from(BTreeSet::from([ip("198.51.100.20")]));
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
    retain_node_local(
        &mut with_local,
        &BTreeSet::from([ip("198.51.100.10")]).into(),
    );
    assert_eq!(with_local.policies, all);
    retain_node_local(&mut desired, &LocalPods::default());
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
    retain_node_local(&mut unknown, &LocalPods::default());
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
    retain_node_local(&mut desired, &LocalPods::default());
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
    let pod_sets: [LocalPods; 3] = [
        BTreeSet::new().into(),
        BTreeSet::from([ip("198.51.100.10")]).into(),
        BTreeSet::from([ip("198.51.100.10"), ip("198.51.100.11")]).into(),
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
    let mut lost = resolve_for_node(&clusters[0], &local("node-a"), Some(&LocalPods::default()));
    retain_node_local(&mut lost, &LocalPods::default());
    assert!(lost.policies.is_empty(), "{:?}", lost.policies);
    assert!(messages(&lost, "b-here").contains("a-elsewhere"));
}
