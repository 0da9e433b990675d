//! End-to-end on the lab: three nodes in network namespaces with real
//! VXLAN and one real daemon each, pods sending real multicast, and an
//! upstream host asserting what actually arrived — count, source address,
//! TTL, payload — and what the datapath counted. Needs root.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use cilium_mcast_egress::datapath::maps::{DropReason, Role};
use cilium_mcast_egress::lab::addr::{EGRESS_B, GROUP, UPSTREAM_B, UPSTREAM_C};
use cilium_mcast_egress::lab::{camera_policy, Lab, LabConfig, Node, Pod};
use common::lab_io::{payload, pod_socket, send_stream, Datagram, Receiver};
use common::packet::{group_mac, Frame};

const QUIET: Duration = Duration::from_millis(600);
const MAX: Duration = Duration::from_secs(10);

fn lab_with(manifests: &[(&str, String)]) -> Lab {
    let mut cfg = LabConfig::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"));
    cfg.manifests = manifests
        .iter()
        .map(|(n, b)| (n.to_string(), b.clone()))
        .collect();
    Lab::up(cfg).expect("lab up")
}

/// The usual policy: camera pods, 232.1.0.0/16 but 232.1.255.0/24, via
/// node-b.
fn default_lab() -> Lab {
    lab_with(&[(
        "policy.yaml",
        camera_policy("cameras", &["232.1.0.0/16"], &["232.1.255.0/24"], Node::B),
    )])
}

fn counter(lab: &Lab, node: Node, group: Ipv4Addr, role: Role) -> (u64, u64) {
    lab.maps(node)
        .expect("maps")
        .counters()
        .expect("counters")
        .into_iter()
        .filter(|c| c.group == group && c.role == role)
        .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes))
}

fn drops(lab: &Lab, node: Node, role: Role, reason: DropReason) -> u64 {
    lab.maps(node)
        .expect("maps")
        .drop_count(role, reason)
        .expect("drops")
        .packets
}

/// Every datagram of a stream arrived, in order, from `source`, with TTL
/// `ttl`, each payload byte for byte.
fn assert_stream(got: &[Datagram], count: u32, len: usize, source: Ipv4Addr, ttl: u8) {
    assert_eq!(got.len(), count as usize, "datagrams received");
    for (seq, d) in got.iter().enumerate() {
        assert_eq!(d.source, source, "source of datagram {seq}");
        assert_eq!(d.ttl, ttl, "TTL of datagram {seq}");
        assert_eq!(
            d.payload,
            payload(seq as u32, len),
            "payload of datagram {seq}"
        );
    }
}

macro_rules! lab_test {
    ($name:ident, $body:block) => {
        #[test]
        fn $name() {
            if !common::privileged(stringify!($name)) {
                return;
            }
            $body
        }
    };
}

lab_test!(pod_on_another_node_reaches_upstream_through_the_gateway, {
    let lab = default_lab();
    let rx = Receiver::join(&lab, GROUP, UPSTREAM_B, Some(EGRESS_B));
    let tx = pod_socket(&lab, Pod::A1, 8);
    send_stream(&tx, GROUP, 200, 500, Duration::from_millis(1));
    let got = rx.collect(QUIET, MAX);
    assert_stream(&got, 200, 500, EGRESS_B, 7);
    let frame = (14 + 20 + 8 + 500) as u64;
    assert_eq!(
        counter(&lab, Node::A, GROUP, Role::Origin),
        (200, 200 * frame)
    );
    assert_eq!(
        counter(&lab, Node::B, GROUP, Role::Gateway),
        (200, 200 * frame)
    );
    assert_eq!(counter(&lab, Node::A, GROUP, Role::Gateway), (0, 0));
});

lab_test!(pod_on_the_gateway_node_reaches_upstream, {
    let lab = default_lab();
    let rx = Receiver::join(&lab, GROUP, UPSTREAM_B, Some(EGRESS_B));
    let tx = pod_socket(&lab, Pod::B1, 8);
    send_stream(&tx, GROUP, 200, 700, Duration::from_millis(1));
    let got = rx.collect(QUIET, MAX);
    assert_stream(&got, 200, 700, EGRESS_B, 7);
    assert_eq!(counter(&lab, Node::B, GROUP, Role::Origin).0, 200);
    assert_eq!(counter(&lab, Node::B, GROUP, Role::Gateway).0, 200);
});

/// Nothing from `pod` to `group` arrives on either uplink.
fn assert_nothing_arrives(lab: &Lab, pod: Pod, group: Ipv4Addr, ttl: u32) {
    let rx_b = Receiver::join(lab, group, UPSTREAM_B, None);
    let rx_c = Receiver::join(lab, group, UPSTREAM_C, None);
    let tx = pod_socket(lab, pod, ttl);
    send_stream(&tx, group, 50, 300, Duration::from_millis(1));
    assert!(
        rx_b.collect(QUIET, MAX).is_empty(),
        "nothing on node-b's uplink"
    );
    assert!(
        rx_c.collect(QUIET, MAX).is_empty(),
        "nothing on node-c's uplink"
    );
}

lab_test!(pod_the_policy_does_not_select_sends_nothing_out, {
    let lab = default_lab();
    assert_nothing_arrives(&lab, Pod::A2, GROUP, 8);
    assert_eq!(counter(&lab, Node::A, GROUP, Role::Origin), (0, 0));
});

lab_test!(excluded_group_stays_inside, {
    let lab = default_lab();
    let excluded = Ipv4Addr::new(232, 1, 255, 7);
    assert_nothing_arrives(&lab, Pod::A1, excluded, 8);
    assert_eq!(counter(&lab, Node::A, excluded, Role::Origin), (0, 0));
    // The rest of the prefix still leaves.
    let rx = Receiver::join(&lab, GROUP, UPSTREAM_B, Some(EGRESS_B));
    send_stream(&pod_socket(&lab, Pod::A1, 8), GROUP, 10, 64, Duration::ZERO);
    assert_eq!(rx.collect(QUIET, MAX).len(), 10);
});

lab_test!(link_local_group_never_leaves_under_a_catch_all_policy, {
    let lab = lab_with(&[(
        "policy.yaml",
        camera_policy("everything", &["224.0.0.0/4"], &[], Node::B),
    )]);
    let mdns = Ipv4Addr::new(224, 0, 0, 251);
    assert_nothing_arrives(&lab, Pod::A1, mdns, 8);
    assert_eq!(counter(&lab, Node::A, mdns, Role::Origin), (0, 0));
    // The policy itself is in force for routable groups.
    let rx = Receiver::join(&lab, GROUP, UPSTREAM_B, Some(EGRESS_B));
    send_stream(&pod_socket(&lab, Pod::A1, 8), GROUP, 10, 64, Duration::ZERO);
    assert_eq!(rx.collect(QUIET, MAX).len(), 10);
});

lab_test!(non_canonical_policy_is_reported_and_the_valid_one_works, {
    let lab = lab_with(&[
        (
            "bad.yaml",
            camera_policy("bad-prefix", &["232.0.0.0/4"], &[], Node::C),
        ),
        (
            "good.yaml",
            camera_policy("cameras", &["232.1.0.0/16"], &[], Node::B),
        ),
    ]);
    let rx = Receiver::join(&lab, GROUP, UPSTREAM_B, Some(EGRESS_B));
    send_stream(
        &pod_socket(&lab, Pod::A1, 8),
        GROUP,
        50,
        200,
        Duration::ZERO,
    );
    assert_stream(&rx.collect(QUIET, MAX), 50, 200, EGRESS_B, 7);
    for node in [Node::A, Node::B, Node::C] {
        let log = lab.log(node);
        let line = log
            .lines()
            .find(|l| l.contains("bad-prefix") && l.contains("232.0.0.0/4"))
            .unwrap_or_else(|| panic!("{} reports the bad policy; log:\n{log}", node.name()));
        assert!(line.contains("ERROR") || line.contains("WARN"), "{line}");
        // Reported once, not on every pass.
        assert_eq!(
            log.lines().filter(|l| l.contains("bad-prefix")).count(),
            1,
            "{log}"
        );
    }
});

lab_test!(unicast_catch_all_policy_does_not_capture_multicast, {
    let lab = lab_with(&[(
        "unicast.yaml",
        camera_policy("unicast-egress", &["0.0.0.0/0"], &[], Node::B),
    )]);
    for node in [Node::A, Node::B, Node::C] {
        assert!(lab.maps(node).unwrap().policies().unwrap().is_empty());
    }
    assert_nothing_arrives(&lab, Pod::A1, GROUP, 8);
    assert_eq!(counter(&lab, Node::A, GROUP, Role::Origin), (0, 0));
});

lab_test!(spoofed_source_is_dropped_and_counted, {
    let lab = default_lab();
    let rx = Receiver::join(&lab, GROUP, UPSTREAM_B, None);
    // pod-a2 (behind lxca2) sends raw frames with pod-a1's address.
    let tap = common::lab_io::tap_in(&lab.pod_ns(Pod::A2), "eth0");
    let mut frame = Frame::udp(Pod::A1.ip(), GROUP, b"not mine");
    frame.dst_mac = group_mac(GROUP);
    for _ in 0..5 {
        tap.send(&frame.bytes());
    }
    assert!(rx.collect(QUIET, MAX).is_empty());
    common::wait_for("the spoofed_source drops", Duration::from_secs(2), || {
        drops(&lab, Node::A, Role::Origin, DropReason::SPOOFED_SOURCE) == 5
    });
    assert_eq!(counter(&lab, Node::A, GROUP, Role::Origin), (0, 0));
});

lab_test!(publisher_with_ttl_one_is_dropped_as_ttl_exceeded, {
    let lab = default_lab();
    assert_nothing_arrives(&lab, Pod::A1, GROUP, 1);
    assert_eq!(
        drops(&lab, Node::B, Role::Gateway, DropReason::TTL_EXCEEDED),
        50
    );
    // It did travel to the gateway: the origin sent it on.
    assert_eq!(counter(&lab, Node::A, GROUP, Role::Origin).0, 50);
    assert_eq!(counter(&lab, Node::B, GROUP, Role::Gateway).0, 0);
});
