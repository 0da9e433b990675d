//! Which node is the gateway, and its egress.

use super::*;

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
