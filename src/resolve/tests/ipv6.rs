//! IPv6: the same rules as IPv4, into the IPv6 policy map. camera-1
//! (node-c) is dual-stack, 198.51.100.10 and 2001:db8::10.

use ipnetwork::Ipv6Network;

use super::*;
use crate::datapath::maps::{EgressIface, PolicyKey6, PolicyValue6};

const CAMERA_1: &str = "2001:db8::10";

fn net6(s: &str) -> Ipv6Network {
    s.parse().expect("IPv6 CIDR")
}

fn key6(source: &str, destination: &str) -> PolicyKey6 {
    PolicyKey6 {
        source: ip6(source),
        destination: net6(destination),
    }
}

/// CAMERAS with `cidrs` (YAML list items) as its destinations.
fn cameras_to(cidrs: &[&str]) -> String {
    let list: Vec<String> = cidrs.iter().map(|c| format!("- \"{c}\"")).collect();
    CAMERAS.replace("- 232.1.0.0/16", &list.join("\n  "))
}

fn sources6(desired: &Desired, destination: &str) -> Vec<Ipv6Addr> {
    desired
        .policies_v6
        .keys()
        .filter(|k| k.destination == net6(destination))
        .map(|k| k.source)
        .collect()
}

/// A dual-stack pod and a pod with only IPv6, beside the fixture's.
const MORE_PODS: &str = r#"
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
    - {ipv6: "2001:db8::40"}
    - {ipv6: "not-an-address"}
    node: 192.0.2.3
"#;

#[test]
fn ipv6_destination_cidr_rules_table() {
    // (destinationCIDRs entry, IPv6 entry made for it, problem expected)
    let cases = [
        ("ff3e::/96", Some("ff3e::/96"), None),
        ("ff3e::8000:0/112", Some("ff3e::8000:0/112"), None),
        ("ff05::/16", Some("ff05::/16"), None),
        ("ff0e::/16", Some("ff0e::/16"), None),
        // Every scope: the datapath keeps the low ones in itself.
        ("ff00::/8", Some("ff00::/8"), None),
        ("ff3e::8000:1/128", Some("ff3e::8000:1/128"), None),
        (
            "ff3e::8000:0/96",
            None,
            Some("Invalid: destinationCIDRs entry ff3e::8000:0/96 is not canonical (host bits set; did you mean ff3e::/96?)"),
        ),
        ("::/0", None, None),
        ("ff00::/7", None, None),
        ("2001:db8::/32", None, None),
        (
            "ff02::/16",
            None,
            Some("Warning: destinationCIDRs entry ff02::/16 never leaves the node"),
        ),
        (
            "ff01::/16",
            None,
            Some("Warning: destinationCIDRs entry ff01::/16 never leaves the node"),
        ),
        (
            "ff12::/16",
            None,
            Some("Warning: destinationCIDRs entry ff12::/16 never leaves the node"),
        ),
        (
            "ff02::1:ff00:0/104",
            None,
            Some("Warning: destinationCIDRs entry ff02::1:ff00:0/104 never leaves the node"),
        ),
    ];
    for (cidr, entry, problem) in cases {
        let policy = cameras_to(&["232.9.0.0/16", cidr]);
        let desired = resolve(&cluster(&[&policy]), &local("node-c"));
        let destinations: BTreeSet<Ipv6Network> =
            desired.policies_v6.keys().map(|k| k.destination).collect();
        let want: BTreeSet<Ipv6Network> = entry.map(net6).into_iter().collect();
        assert_eq!(destinations, want, "entry {cidr}");
        if entry.is_some() {
            // camera-1's IPv6 only: camera-2 has none.
            assert_eq!(sources6(&desired, cidr), [ip6(CAMERA_1)], "entry {cidr}");
        }
        // The IPv4 group applies either way.
        assert_eq!(sources(&desired, "232.9.0.0/16").len(), 2, "entry {cidr}");
        let text = messages(&desired, "cameras");
        match problem {
            Some(p) => assert!(text.starts_with(p), "entry {cidr}: {text}"),
            None => assert_eq!(text, "", "entry {cidr}"),
        }
    }
}

#[test]
fn never_leaving_scopes_alone_make_no_policy() {
    let desired = resolve(&cluster(&[&cameras_to(&["ff02::/16"])]), &local("node-a"));
    assert!(desired.policies_v6.is_empty() && desired.policies.is_empty());
    assert!(desired.policy_ids.is_empty());
    assert!(desired.local_gateway_for_v6.is_empty());
    let problems = problems_of(&desired, "cameras");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].severity, Severity::Warning);
    assert!(problems[0].message.contains("never leaves the node"));
}

#[test]
fn catch_all_ipv6_is_left_to_cilium() {
    let desired = resolve(&cluster(&[&cameras_to(&["::/0"])]), &local("node-a"));
    assert!(desired.policies_v6.is_empty());
    assert!(desired.problems.is_empty(), "{:?}", desired.problems);
    assert!(desired.policy_ids.is_empty());
    assert!(desired.local_gateway_for_v6.is_empty());
    assert!(desired.egress_ifaces.is_empty());
}

#[test]
fn malformed_ipv6_cidr_invalidates_the_policy() {
    for bad in [
        "ff3e::/129",
        "ff3e:::/96",
        "ff3e::/096",
        "ff3e::",
        "ff3g::/16",
    ] {
        let policy = cameras_to(&["232.1.0.0/16", "ff3e::/96", bad]);
        let desired = resolve(&cluster(&[&policy]), &local("node-c"));
        assert!(desired.policies.is_empty(), "entry {bad}");
        assert!(desired.policies_v6.is_empty(), "entry {bad}");
        let text = messages(&desired, "cameras");
        assert!(
            text.starts_with("Invalid: policy skipped: destinationCIDRs entry"),
            "{text}"
        );
        assert!(text.contains(bad), "{text}");
    }
}

#[test]
fn dual_stack_pods_get_both_entries_ipv6_only_pods_one() {
    let policy = cameras_to(&["232.1.0.0/16", "ff3e::/96"]);
    let desired = resolve(
        &objects(&[NODES, ENDPOINTS, MORE_PODS, &policy]),
        &local("node-c"),
    );
    assert_eq!(
        sources(&desired, "232.1.0.0/16"),
        [
            ip("198.51.100.10"),
            ip("198.51.100.11"),
            ip("198.51.100.40")
        ]
    );
    assert_eq!(
        sources6(&desired, "ff3e::/96"),
        [ip6(CAMERA_1), ip6("2001:db8::40"), ip6("2001:db8::42")]
    );
    // One value per pod, as for IPv4: gateway, origin and policy alike.
    let v4 = desired.policies[&key("198.51.100.40", "232.1.0.0/16")];
    let v6 = desired.policies_v6[&key6("2001:db8::40", "ff3e::/96")];
    assert_eq!(
        v6,
        PolicyValue6 {
            egress_ip: Ipv6Addr::UNSPECIFIED,
            gateway: Gateway::Node(ip("192.0.2.1")),
            egress_ifindex: 0,
            policy_id: id_of("cameras"),
            origin: Origin {
                node: ip("192.0.2.3"),
                identity: 51234,
            },
        }
    );
    assert_eq!((v4.gateway, v4.origin), (v6.gateway, v6.origin));
    assert!(desired.problems.is_empty(), "{:?}", desired.problems);
}

#[test]
fn ipv6_egress_is_the_first_global_address_of_the_uplink() {
    let policy = cameras_to(&["232.1.0.0/16", "ff3e::/96"]);
    let desired = resolve(&cluster(&[&policy]), &local("node-a"));
    // eth1 lists fe80::3 first: link-local is never a source.
    let v6 = desired.policies_v6[&key6(CAMERA_1, "ff3e::/96")];
    assert_eq!(
        (v6.egress_ip, v6.egress_ifindex, v6.gateway),
        (
            ip6("2001:db8:203::10"),
            ETH1,
            Gateway::Node(ip("192.0.2.1"))
        )
    );
    assert_eq!(
        desired.local_gateway_for_v6,
        BTreeMap::from([("cameras".to_string(), ip6("2001:db8:203::10"))])
    );
    assert_eq!(desired.local_gateway_for["cameras"], ip("203.0.113.10"));
    assert_eq!(
        desired.egress_ifaces,
        BTreeMap::from([(ETH1, EgressIface { mac: ETH1_MAC })])
    );
    assert!(desired.problems.is_empty(), "{:?}", desired.problems);

    // `interface` names the device; `egressIP` IPv6 is used as it is.
    let by_iface = format!("{policy}    interface: eth2\n");
    let desired = resolve(&cluster(&[&by_iface]), &local("node-a"));
    let v6 = desired.policies_v6[&key6(CAMERA_1, "ff3e::/96")];
    assert_eq!(
        (v6.egress_ip, v6.egress_ifindex),
        (ip6("2001:db8:203:1::130"), ETH2)
    );
    let by_ip = format!(
        "{}    egressIP: 2001:db8:203::11\n",
        cameras_to(&["ff3e::/96"])
    );
    let desired = resolve(&cluster(&[&by_ip]), &local("node-a"));
    let v6 = desired.policies_v6[&key6(CAMERA_1, "ff3e::/96")];
    assert_eq!(
        (v6.egress_ip, v6.egress_ifindex),
        (ip6("2001:db8:203::11"), ETH1)
    );
    // An IPv6-only policy says nothing of IPv4 egress.
    assert!(desired.problems.is_empty(), "{:?}", desired.problems);
    assert!(desired.local_gateway_for.is_empty());
}

#[test]
fn gateway_without_a_global_ipv6_warns_and_egresses_from_unspecified() {
    let policy = cameras_to(&["232.1.0.0/16", "ff3e::/96"]);
    let mut node = local("node-a");
    // Only link-local left on the uplink (tentative ones never get here).
    node.interfaces[1].ipv6 = vec![ip6("fe80::3")];
    let desired = resolve(&cluster(&[&policy]), &node);
    let v6 = desired.policies_v6[&key6(CAMERA_1, "ff3e::/96")];
    assert_eq!(
        (v6.egress_ip, v6.egress_ifindex, v6.gateway),
        (Ipv6Addr::UNSPECIFIED, 0, Gateway::Node(ip("192.0.2.1")))
    );
    assert_eq!(
        desired.local_gateway_for_v6["cameras"],
        Ipv6Addr::UNSPECIFIED
    );
    // IPv4 is unaffected.
    let v4 = desired.policies[&key("198.51.100.10", "232.1.0.0/16")];
    assert_eq!(
        (v4.egress_ip, v4.egress_ifindex),
        (ip("203.0.113.10"), ETH1)
    );
    assert_eq!(
        messages(&desired, "cameras"),
        "Warning: this node is the gateway of egressGateway but its egress IPv6 cannot be \
         derived: eth1 has no global IPv6 address (link-local, tentative and DAD-failed ones \
         cannot be a source); IPv6 multicast through it is dropped (no_egress_ip)"
    );

    // An IPv4-only policy does not care.
    let desired = resolve(&cluster(&[CAMERAS]), &node);
    assert!(desired.problems.is_empty(), "{:?}", desired.problems);
    assert!(desired.local_gateway_for_v6.is_empty());
}

#[test]
fn ipv6_exclusions_become_excluded_entries_and_win() {
    let policy = cameras_to(&["ff3e::/96"]).replace(
        "  egressGateway:",
        "  excludedCIDRs:\n  - ff3e::ff00/120\n  - ff3e::1/120\n  - 2001:db8::/32\n  \
         egressGateway:",
    );
    let desired = resolve(&cluster(&[&policy]), &local("node-c"));
    assert_eq!(
        desired.policies_v6[&key6(CAMERA_1, "ff3e::ff00/120")],
        PolicyValue6 {
            egress_ip: Ipv6Addr::UNSPECIFIED,
            gateway: Gateway::Excluded,
            egress_ifindex: 0,
            policy_id: id_of("cameras"),
            origin: Origin::default(),
        }
    );
    // The prefix, the canonical exclusion; not the unicast one, not the
    // non-canonical one (which is said).
    assert_eq!(desired.policies_v6.len(), 2);
    assert_eq!(
        messages(&desired, "cameras"),
        "Invalid: excludedCIDRs entry ff3e::1/120 is not canonical (host bits set; \
         did you mean ff3e::/120?): entry skipped, its groups are not excluded"
    );

    // Another policy's exclusion wins over a destination.
    let keep_inside = cameras_to(&["ff3e::/32"])
        .replace("name: cameras", "name: b-keep-inside")
        .replace(
            "  egressGateway:",
            "  excludedCIDRs:\n  - ff3e::/96\n  egressGateway:",
        );
    let cameras = cameras_to(&["ff3e::/96"]).replace("name: cameras", "name: a-cameras");
    let desired = resolve(&cluster(&[&cameras, &keep_inside]), &local("node-a"));
    assert_eq!(
        desired.policies_v6[&key6(CAMERA_1, "ff3e::/96")].gateway,
        Gateway::Excluded
    );
}

#[test]
fn overlapping_ipv6_entries_first_name_wins() {
    let cameras = cameras_to(&["ff3e::/96"]);
    let backup = cameras
        .replace("name: cameras", "name: backup-route")
        .replace("egress-gateway: \"true\"", "kubernetes.io/hostname: node-b");
    let desired = resolve(&cluster(&[&cameras, &backup]), &local("node-c"));
    let value = desired.policies_v6[&key6(CAMERA_1, "ff3e::/96")];
    assert_eq!(value.gateway, Gateway::Node(ip("192.0.2.2")));
    assert_eq!(value.policy_id, id_of("backup-route"));
    assert_eq!(
        messages(&desired, "cameras"),
        "Warning: 1 entry has the same pod and group prefix as policy backup-route \
         (e.g. 2001:db8::10 -> ff3e::/96); the lexically first policy name wins, \
         this policy's are ignored"
    );
}

#[test]
fn ipv6_node_local_retention() {
    // node-a is the gateway for ff3e::/96 except ff3e::ff00/120; camera-1
    // and the IPv6-only pod run on node-c.
    let policy = cameras_to(&["ff3e::/96"]).replace(
        "  egressGateway:",
        "  excludedCIDRs:\n  - ff3e::ff00/120\n  egressGateway:",
    );
    let elsewhere = cameras_to(&["ff0e::/16"])
        .replace("name: cameras", "name: other-groups")
        .replace("egress-gateway: \"true\"", "kubernetes.io/hostname: node-c")
        .replace(
            "  egressGateway:",
            "  excludedCIDRs:\n  - ff0e::1:0/112\n  egressGateway:",
        );
    let objects = objects(&[NODES, ENDPOINTS, MORE_PODS, &policy, &elsewhere]);

    // As the gateway: what it serves and the exclusions inside, nothing of
    // the other policy.
    let mut gateway = resolve(&objects, &local("node-a"));
    let all = gateway.policies_v6.clone();
    retain_node_local(&mut gateway, &LocalPods::default());
    let kept: BTreeSet<(Ipv6Addr, Ipv6Network)> = gateway
        .policies_v6
        .keys()
        .map(|k| (k.source, k.destination))
        .collect();
    let mut want = BTreeSet::new();
    for pod in [CAMERA_1, "2001:db8::40", "2001:db8::42"] {
        want.insert((ip6(pod), net6("ff3e::/96")));
        want.insert((ip6(pod), net6("ff3e::ff00/120")));
    }
    assert_eq!(kept, want);
    assert!(all.len() > kept.len());

    // As the origin node of the IPv6-only pod: its entries only.
    let pods = LocalPods {
        v4: BTreeSet::new(),
        v6: BTreeSet::from([ip6("2001:db8::42")]),
    };
    let mut origin = resolve(&objects, &local("node-b"));
    retain_node_local(&mut origin, &pods);
    assert!(origin
        .policies_v6
        .keys()
        .all(|k| k.source == ip6("2001:db8::42")));
    assert_eq!(origin.policies_v6.len(), 4);
    assert!(origin.policies.is_empty(), "no IPv4 pod of this node");

    // Narrowed as it is built, the same.
    let mut narrowed = resolve_for_node(&objects, &local("node-b"), Some(&pods));
    retain_node_local(&mut narrowed, &pods);
    assert_eq!(narrowed, origin);
}

#[test]
fn endpoints_without_uid_are_one_finding_across_families() {
    // Dual-stack camera-1, IPv4-only camera-2 and IPv6-only camera-v6, all
    // without a uid, under a policy with several gateways and groups of
    // both families: one finding naming the three, not one per family.
    let endpoints = format!("{ENDPOINTS}---{MORE_PODS}")
        .replace("  uid: 0b7e4c52-1f0a-4d7e-9a51-6c2f1e8d3a10\n", "")
        .replace("  uid: 7f2d8b91-0c4e-4a3b-b6d5-9e1a2f3c4d32\n", "")
        .replace("  uid: 11111111-2222-4333-8444-555555555555\n", "");
    let policy = TWO_GATEWAYS.replace("- 232.1.0.0/16", "- 232.1.0.0/16\n  - \"ff3e::/96\"");
    let desired = resolve(&objects(&[NODES, &endpoints, &policy]), &local("node-c"));
    assert_eq!(
        messages(&desired, "cameras"),
        "Warning: 3 endpoints have no metadata.uid, so they cannot be pinned to one of the 2 \
         gateways: skipped: media/camera-1, media/camera-2, media/camera-v6"
    );
    // camera-dual (with a uid) is pinned in both families; camera-3 (lab,
    // IPv4 only) too.
    assert_eq!(
        sources(&desired, "232.1.0.0/16"),
        [ip("198.51.100.20"), ip("198.51.100.40")]
    );
    assert_eq!(sources6(&desired, "ff3e::/96"), [ip6("2001:db8::40")]);
}
