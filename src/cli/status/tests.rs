use super::*;
use crate::datapath::maps::Origin;

fn inputs() -> Inputs {
    let entry = |src: [u8; 4], dst: &str, gateway, id| {
        (
            PolicyKey {
                source: src.into(),
                destination: dst.parse().unwrap(),
            },
            PolicyValue {
                egress_ip: [203, 0, 113, 10].into(),
                gateway,
                egress_ifindex: 0,
                policy_id: id,
                origin: Origin::default(),
            },
        )
    };
    let me = Ipv4Addr::new(192, 0, 2, 12);
    Inputs {
        status: Status {
            node_name: "node-b".into(),
            version: "0.1.0".into(),
            last_sync_unix_ns: 0,
            syncs: 0,
        },
        config: Config {
            node_ip: me,
            tunnel_ifindex: 0,
        },
        policies: vec![
            entry([198, 51, 100, 11], "232.1.0.0/16", Gateway::Node(me), 1),
            entry([198, 51, 100, 12], "232.1.0.0/16", Gateway::Node(me), 1),
            entry([198, 51, 100, 12], "232.2.0.0/16", Gateway::Node(me), 1),
            entry([198, 51, 100, 13], "232.3.0.0/16", Gateway::NotFound, 2),
            entry([198, 51, 100, 13], "232.4.0.0/16", Gateway::Excluded, 2),
            entry(
                [198, 51, 100, 13],
                "232.5.0.0/16",
                Gateway::Node([192, 0, 2, 13].into()),
                2,
            ),
        ],
        policies_v6: Vec::new(),
        names: [(1, "cameras".to_owned())].into(),
        links: vec![LinkState {
            device: "lxcgone".into(),
            program: "mcast_from_container".into(),
            link_id: 9,
            prog_id: 3,
            ifindex: 0,
        }],
        fill: vec![("mcast_egw_policy_hash_v4", 6, 16384)],
        report: Ok(None),
        netkit_devices: Ok(Vec::new()),
        now_unix_ns: 1_000_000_000_000,
    }
}

#[test]
fn netkit_mode_is_said_loudly() {
    let mut out = Vec::new();
    render(&report(inputs()), Output::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("NETKIT"), "{text}");

    let mut i = inputs();
    i.netkit_devices = Ok(vec!["lxc1".into(), "lxc2".into()]);
    let r = report(i);
    let mut out = Vec::new();
    render(&r, Output::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("NETKIT:              2 netkit devices (lxc1, lxc2): Cilium's netkit mode"),
        "{text}"
    );
    let mut out = Vec::new();
    render(&r, Output::Json, &mut out).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["netkit_devices"], serde_json::json!(["lxc1", "lxc2"]));

    let mut i = inputs();
    i.netkit_devices = Err("netlink down".into());
    let mut out = Vec::new();
    render(&report(i), Output::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("Netkit check:        failed: netlink down"),
        "{text}"
    );
}

#[test]
fn gateway_for_groups_this_nodes_entries_only() {
    let r = report(inputs());
    assert!(r.gateway);
    assert_eq!(r.gateway_for.len(), 1);
    let g = &r.gateway_for[0];
    assert_eq!(g.policy, "cameras");
    assert_eq!(g.destinations, ["232.1.0.0/16", "232.2.0.0/16"]);
    assert_eq!(g.sources, 2);
    assert_eq!(g.egress_ip, "203.0.113.10");
}

#[test]
fn text_before_the_first_sync() {
    let mut out = Vec::new();
    render(&report(inputs()), Output::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("Node:                node-b (192.0.2.12)"),
        "{text}"
    );
    assert!(text.contains("Last sync:           never"), "{text}");
    assert!(text.contains("detached (device gone)"), "{text}");
    assert!(
        text.contains("mcast_egw_policy_hash_v4   6         16384      0.0%"),
        "{text}"
    );
}

#[test]
fn last_sync_has_time_and_age() {
    let mut i = inputs();
    i.status.last_sync_unix_ns = i.now_unix_ns - 75_000_000_000;
    i.status.syncs = 12;
    let r = report(i);
    let s = r.last_sync.clone().unwrap();
    assert_eq!(s.age_seconds, 75);
    assert_eq!(s.utc, "1970-01-01T00:15:25.000Z");
    let mut out = Vec::new();
    render(&r, Output::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("1970-01-01T00:15:25.000Z (1m15s ago), 12 syncs"),
        "{text}"
    );
}

#[test]
fn no_report_yet_says_so() {
    let r = report(inputs());
    assert_eq!(r.controller, None);
    let mut out = Vec::new();
    render(&r, Output::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("Ready:               unknown (no report from a controller yet)"),
        "{text}"
    );
    assert!(!text.contains("Problems:"), "{text}");

    let mut i = inputs();
    i.report = Err("broken".into());
    let r = report(i);
    assert_eq!(r.controller_report_error.as_deref(), Some("broken"));
    let mut out = Vec::new();
    render(&r, Output::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("unknown (the controller's report cannot be read: broken)"),
        "{text}"
    );
}

#[test]
fn the_controllers_findings_are_shown() {
    use crate::resolve::{Problem, Severity, Subject};
    let problems = [
        Problem {
            subject: Subject::Node("node-x".into()),
            severity: Severity::Invalid,
            message: "no CiliumNode is named \"node-x\"".into(),
        },
        Problem::for_policy(
            "bad",
            Severity::Invalid,
            "policy skipped: no selectors".into(),
        ),
        Problem {
            subject: Subject::Endpoints,
            severity: Severity::Warning,
            message: "2 CiliumEndpoints without a security identity".into(),
        },
    ];
    let mut pinned = health::Report::new(
        vec!["no CiliumNode is named \"node-x\"".into()],
        &problems,
        2,
    );
    let mut i = inputs();
    pinned.since_unix_ns = i.now_unix_ns - 90_000_000_000;
    i.report = Ok(Some(pinned));
    let r = report(i);
    let c = r.controller.clone().expect("the report");
    assert!(!c.ready);
    assert!(c.node_missing);
    assert_eq!(c.invalid_policies, 1);
    assert_eq!(c.endpoints_without_identity, 2);
    assert_eq!(c.since.age_seconds, 90);

    let mut out = Vec::new();
    render(&r, Output::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    for want in [
        "Ready:               no (as of 1970-01-01T00:15:10.000Z, 1m30s ago): \
         no CiliumNode is named \"node-x\"",
        "Problems:            this node's CiliumNode missing, 1 invalid policy, \
         2 endpoints without identity",
        "  invalid    node node-x   no CiliumNode is named \"node-x\"",
        "  invalid    policy bad    policy skipped: no selectors",
        "  warning    endpoints     2 CiliumEndpoints without a security identity",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }

    let mut out = Vec::new();
    render(&r, Output::Json, &mut out).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["controller"]["ready"], false, "{json}");
    assert_eq!(json["controller"]["problems"][0]["kind"], "node", "{json}");
    assert_eq!(
        json["controller"]["problems"][0]["name"], "node-x",
        "{json}"
    );
    assert_eq!(json["controller"]["problems_left_out"], 0, "{json}");
}

#[test]
fn a_ready_controller_without_findings() {
    let mut i = inputs();
    let mut pinned = health::Report::new(Vec::new(), &[], 0);
    pinned.since_unix_ns = i.now_unix_ns - 5_000_000_000;
    i.report = Ok(Some(pinned));
    let mut out = Vec::new();
    render(&report(i), Output::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("Ready:               yes (as of 1970-01-01T00:16:35.000Z, 5s ago)"),
        "{text}"
    );
    assert!(text.contains("Problems:            none"), "{text}");
}

#[test]
fn gateway_for_lists_ipv6_entries_with_their_egress_ipv6() {
    let me = Ipv4Addr::new(192, 0, 2, 12);
    let v6 = |src: &str, dst: &str, gateway, egress: &str| {
        (
            PolicyKey6 {
                source: src.parse().unwrap(),
                destination: dst.parse().unwrap(),
            },
            PolicyValue6 {
                egress_ip: egress.parse().unwrap(),
                gateway,
                egress_ifindex: 0,
                policy_id: 1,
                origin: Origin::default(),
            },
        )
    };
    let mut i = inputs();
    i.policies_v6 = vec![
        v6(
            "2001:db8:100::11",
            "ff3e::/96",
            Gateway::Node(me),
            "2001:db8:203::10",
        ),
        v6(
            "2001:db8:100::12",
            "ff3e::/96",
            Gateway::Node(me),
            "2001:db8:203::10",
        ),
        v6(
            "2001:db8:100::12",
            "ff3e::ff00/120",
            Gateway::Excluded,
            "::",
        ),
        // No egress IPv6 derived: listed as :: (drops as no_egress_ip).
        v6("2001:db8:100::13", "ff0e::/16", Gateway::Node(me), "::"),
    ];
    let r = report(i);
    assert_eq!(r.gateway_for.len(), 3, "{:?}", r.gateway_for);
    // IPv4 first, as before; then IPv6, by egress IP.
    assert_eq!(r.gateway_for[0].egress_ip, "203.0.113.10");
    let unknown = &r.gateway_for[1];
    assert_eq!(
        (unknown.egress_ip.as_str(), unknown.destinations.clone()),
        ("::", vec!["ff0e::/16".to_owned()])
    );
    let g = &r.gateway_for[2];
    assert_eq!(g.policy, "cameras");
    assert_eq!(g.destinations, ["ff3e::/96"]);
    assert_eq!(g.sources, 2);
    assert_eq!(g.egress_ip, "2001:db8:203::10");
    let mut out = Vec::new();
    render(&r, Output::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    // Three rows of one policy (and the IPv4 row's): one policy.
    assert!(
        text.contains("Gateway:             yes, for 1 policy\n"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("cameras")
            && l.contains("ff3e::/96")
            && l.contains("2001:db8:203::10")),
        "{text}"
    );
}
