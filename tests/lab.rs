//! End-to-end on the lab: three nodes in network namespaces with real
//! VXLAN and one real daemon each, pods sending real multicast, and an
//! upstream host asserting what actually arrived — count, source address,
//! TTL, payload — and what the datapath counted. Needs root.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use cilium_mcast_egress::datapath::maps::{DropReason, Gateway, PolicyKey, Role};
use common::lab_io::{payload, pod_socket, send_stream, Datagram, HeldBack, Receiver};
use common::packet::{group_mac, Frame, View, ETH_P_IP, PROTO_UDP};
use lab::addr::{EGRESS_B, GROUP, UPSTREAM_B};
use lab::{camera_policy, Lab, LabConfig, Node, Pod};

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

/// Datagrams of a stream that must not leave: this payload length, which
/// no control uses.
const HELD_LEN: usize = 300;
const HELD_COUNT: u32 = 50;

/// Whether `f` is a datagram of a held-back stream to `group`, from
/// `source` when given (on an uplink it would carry the egress IP).
fn is_held(f: &[u8], group: Ipv4Addr, source: Option<Ipv4Addr>) -> bool {
    f.len() >= 42
        && View(f).ethertype() == ETH_P_IP
        && View(f).proto() == PROTO_UDP
        && View(f).daddr() == group
        && source.is_none_or(|s| View(f).saddr() == s)
        && !View(f).is_fragmented()
        && View(f).udp().len() == 8 + HELD_LEN
}

/// `HELD_COUNT` datagrams from `sock` in `pod` to `group`, which must not
/// leave the cluster. Returns once all of them have left the pod.
fn held_back(lab: &Lab, pod: Pod, sock: &UdpSocket, group: Ipv4Addr) -> HeldBack {
    HeldBack::watch(
        lab,
        pod,
        &format!("datagrams to {group}"),
        HELD_COUNT,
        |f| is_held(f, group, Some(pod.ip())),
        move |f| is_held(f, group, None),
        || send_stream(sock, group, HELD_COUNT, HELD_LEN, Duration::from_millis(1)),
    )
}

/// Positive control: 10 datagrams from `sock` to `group` arrive through
/// node-b from its egress IP, with TTL `ttl`.
fn assert_control_arrives(lab: &Lab, sock: &UdpSocket, group: Ipv4Addr, ttl: u8) {
    let rx = Receiver::join(lab, group, UPSTREAM_B, Some(EGRESS_B));
    send_stream(sock, group, 10, 64, Duration::ZERO);
    assert_stream(&rx.collect(QUIET, MAX), 10, 64, EGRESS_B, ttl);
}

/// Frame length of a control datagram.
const CONTROL_FRAME: u64 = 14 + 20 + 8 + 64;

lab_test!(pod_the_policy_does_not_select_sends_nothing_out, {
    let lab = default_lab();
    let held = held_back(&lab, Pod::A2, &pod_socket(&lab, Pod::A2, 8), GROUP);
    // Positive control: a pod the policy selects, same node, same group.
    assert_control_arrives(&lab, &pod_socket(&lab, Pod::A1, 8), GROUP, 7);
    held.assert_never_left();
    assert_eq!(
        counter(&lab, Node::A, GROUP, Role::Origin),
        (10, 10 * CONTROL_FRAME),
        "the control only"
    );
});

lab_test!(excluded_group_stays_inside, {
    let lab = default_lab();
    let excluded = Ipv4Addr::new(232, 1, 255, 7);
    let sock = pod_socket(&lab, Pod::A1, 8);
    let held = held_back(&lab, Pod::A1, &sock, excluded);
    // Positive control: the rest of the prefix, same socket, still leaves.
    assert_control_arrives(&lab, &sock, GROUP, 7);
    held.assert_never_left();
    assert_eq!(counter(&lab, Node::A, excluded, Role::Origin), (0, 0));
    assert_eq!(counter(&lab, Node::B, excluded, Role::Gateway), (0, 0));
});

lab_test!(link_local_group_never_leaves_under_a_catch_all_policy, {
    let lab = lab_with(&[(
        "policy.yaml",
        camera_policy("everything", &["224.0.0.0/4"], &[], Node::B),
    )]);
    let mdns = Ipv4Addr::new(224, 0, 0, 251);
    let sock = pod_socket(&lab, Pod::A1, 8);
    let held = held_back(&lab, Pod::A1, &sock, mdns);
    // Positive control: the policy is in force for routable groups.
    assert_control_arrives(&lab, &sock, GROUP, 7);
    held.assert_never_left();
    assert_eq!(counter(&lab, Node::A, mdns, Role::Origin), (0, 0));
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
    let sock = pod_socket(&lab, Pod::A1, 8);
    let held = held_back(&lab, Pod::A1, &sock, GROUP);
    assert_eq!(counter(&lab, Node::A, GROUP, Role::Origin), (0, 0));
    // Positive control: with a multicast policy beside it, the same socket's
    // datagrams to the same group leave.
    lab.write_manifest(
        "multicast.yaml",
        &camera_policy("cameras", &["232.1.0.0/16"], &[], Node::B),
    )
    .expect("multicast policy");
    let key = PolicyKey {
        source: Pod::A1.ip(),
        destination: "232.1.0.0/16".parse().expect("CIDR"),
    };
    common::wait_for("the multicast policy on node-a and node-b", MAX, || {
        [Node::A, Node::B].iter().all(|n| {
            lab.maps(*n)
                .expect("maps")
                .policy_get(&key)
                .expect("policy")
                .is_some_and(|v| v.gateway == Gateway::Node(Node::B.ip()))
        })
    });
    assert_control_arrives(&lab, &sock, GROUP, 7);
    held.assert_never_left();
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
    common::wait_for("the spoofed_source drops", Duration::from_secs(2), || {
        drops(&lab, Node::A, Role::Origin, DropReason::SPOOFED_SOURCE) == 5
    });
    assert_eq!(counter(&lab, Node::A, GROUP, Role::Origin), (0, 0));
    // Positive control: the same raw frames from pod-a1 itself leave.
    let own = common::lab_io::tap_in(&lab.pod_ns(Pod::A1), "eth0");
    let mut control = Frame::udp(Pod::A1.ip(), GROUP, b"mine");
    control.dst_mac = group_mac(GROUP);
    for _ in 0..5 {
        own.send(&control.bytes());
    }
    let got = rx.collect(QUIET, MAX);
    let payloads: Vec<&[u8]> = got.iter().map(|d| d.payload.as_slice()).collect();
    assert_eq!(payloads, vec![&b"mine"[..]; 5], "pod-a1's frames only");
    assert!(got.iter().all(|d| d.source == EGRESS_B && d.ttl == 7));
    assert_eq!(
        drops(&lab, Node::A, Role::Origin, DropReason::SPOOFED_SOURCE),
        5
    );
});

lab_test!(publisher_with_ttl_one_is_dropped_as_ttl_exceeded, {
    let lab = default_lab();
    let sock = pod_socket(&lab, Pod::A1, 1);
    let held = held_back(&lab, Pod::A1, &sock, GROUP);
    // Positive control: the same socket at TTL 2 gets through, one hop.
    sock.set_multicast_ttl_v4(2).expect("IP_MULTICAST_TTL");
    assert_control_arrives(&lab, &sock, GROUP, 1);
    held.assert_never_left();
    assert_eq!(
        drops(&lab, Node::B, Role::Gateway, DropReason::TTL_EXCEEDED),
        u64::from(HELD_COUNT)
    );
    // It did travel to the gateway: the origin sent it on.
    assert_eq!(
        counter(&lab, Node::A, GROUP, Role::Origin).0,
        u64::from(HELD_COUNT) + 10
    );
    assert_eq!(counter(&lab, Node::B, GROUP, Role::Gateway).0, 10);
});
