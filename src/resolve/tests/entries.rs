//! The entries of the policy map.

use super::*;

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
fn ipv4_entries_only_for_ipv4_addresses() {
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
