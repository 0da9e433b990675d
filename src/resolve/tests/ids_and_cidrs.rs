//! Policy ids and destination prefixes.

use super::*;

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
        // IPv6 groups make IPv6 entries (see tests/ipv6.rs), no IPv4 one.
        ("ff3e::/32", None, None),
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
