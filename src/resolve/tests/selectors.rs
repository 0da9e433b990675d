//! Which endpoints a policy selects.

use super::*;

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
