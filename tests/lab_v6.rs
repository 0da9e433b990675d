//! End-to-end IPv6 on the dual-stack lab: the IPv4 scenarios of `lab.rs`
//! and `lab_wire.rs` again for pods publishing to ff3e::/96 groups over the
//! IPv4 underlay. Each test builds its own three-node lab with real VXLAN
//! and real daemons; the upstream host joins source-specific with MLDv2
//! (`MCAST_JOIN_SOURCE_GROUP`) and checks count, source, hop limit and
//! payload, tshark the bytes on the wire. Needs root.

mod common;

use std::net::{Ipv6Addr, UdpSocket};
use std::time::Duration;

use cilium_mcast_egress::datapath::maps::{DropReason, Family, Role};
use common::child::{capture, read_fields};
use common::forge::contains;
use common::lab_io::{
    mac_in, payload, pod_socket6, send_stream, seq_of, Datagram, HeldBack, Receiver,
};
use common::packet::{group_mac6, PROTO_UDP};
use common::wire6::Wire6;
use lab::addr::{EGRESS6_B, GROUP6};
use lab::{camera_policy, demo, Lab, LabConfig, Node, Pod};

const QUIET: Duration = Duration::from_millis(600);
const MAX: Duration = Duration::from_secs(10);

/// The policy's IPv6 SSM prefix and its excluded part.
const PREFIX6: &str = "ff3e::8000:0/112";
const EXCLUDED6: &str = "ff3e::8000:ff00/120";

fn lab_with(manifests: &[(&str, String)]) -> Lab {
    let mut cfg = LabConfig::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"));
    cfg.manifests = manifests
        .iter()
        .map(|(n, b)| (n.to_string(), b.clone()))
        .collect();
    Lab::up(cfg).expect("lab up")
}

/// The usual policy in IPv6: camera pods, ff3e::8000:0/112 but
/// ff3e::8000:ff00/120, via node-b.
fn default_lab() -> Lab {
    lab_with(&[(
        "policy.yaml",
        camera_policy("cameras6", &[PREFIX6], &[EXCLUDED6], Node::B),
    )])
}

/// Packets and bytes counted for `group` on `node` in `role`.
fn counter(lab: &Lab, node: Node, group: Ipv6Addr, role: Role) -> (u64, u64) {
    demo::counted(&lab.maps(node).expect("maps"), group.into(), role).expect("counters")
}

fn drops(lab: &Lab, node: Node, role: Role, reason: DropReason) -> u64 {
    demo::drops6(&lab.maps(node).expect("maps"), role, reason).expect("drops")
}

/// Every IPv6 drop counted on `node`, as "role/reason=packets", for
/// messages.
fn all_drops(lab: &Lab, node: Node) -> String {
    lab.maps(node)
        .expect("maps")
        .drops()
        .expect("drops")
        .iter()
        .filter(|d| d.family == Family::Ipv6 && d.packets > 0)
        .map(|d| format!("{}/{}={}", d.role.label(), d.reason.label(), d.packets))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every datagram of a stream arrived, in order, from `source`, with hop
/// limit `hops`, each payload byte for byte.
fn assert_stream(got: &[Datagram<Ipv6Addr>], count: u32, len: usize, source: Ipv6Addr, hops: u8) {
    assert_eq!(got.len(), count as usize, "datagrams received");
    for (seq, d) in got.iter().enumerate() {
        assert_eq!(d.source, source, "source of datagram {seq}");
        assert_eq!(d.ttl, hops, "hop limit of datagram {seq}");
        assert_eq!(
            d.payload,
            payload(seq as u32, len),
            "payload of datagram {seq}"
        );
    }
}

/// The receiver the scenarios use: (EGRESS6_B, `group`) on node-b's uplink.
fn receiver(lab: &Lab, group: Ipv6Addr) -> Receiver<Ipv6Addr> {
    Receiver::join6(lab, group, "eth0", Some(EGRESS6_B))
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

/// Ethernet + IPv6 + UDP, unfragmented.
const UDP6_FRAME: u64 = 14 + 40 + 8;

lab_test!(
    v6_pod_on_another_node_reaches_upstream_through_the_gateway,
    {
        let lab = default_lab();
        let rx = receiver(&lab, GROUP6);
        let tx = pod_socket6(&lab, Pod::A1, 8);
        send_stream(&tx, GROUP6, 200, 500, Duration::from_millis(1));
        let got = rx.collect(QUIET, MAX);
        assert_eq!(
            got.len(),
            200,
            "datagrams upstream; drops a: {} b: {}",
            all_drops(&lab, Node::A),
            all_drops(&lab, Node::B)
        );
        assert_stream(&got, 200, 500, EGRESS6_B, 7);
        let frame = UDP6_FRAME + 500;
        assert_eq!(
            counter(&lab, Node::A, GROUP6, Role::Origin),
            (200, 200 * frame)
        );
        assert_eq!(
            counter(&lab, Node::B, GROUP6, Role::Gateway),
            (200, 200 * frame)
        );
        assert_eq!(counter(&lab, Node::A, GROUP6, Role::Gateway), (0, 0));
    }
);

lab_test!(v6_pod_on_the_gateway_node_reaches_upstream, {
    let lab = default_lab();
    let rx = receiver(&lab, GROUP6);
    let tx = pod_socket6(&lab, Pod::B1, 8);
    send_stream(&tx, GROUP6, 200, 700, Duration::from_millis(1));
    let got = rx.collect(QUIET, MAX);
    assert_eq!(
        got.len(),
        200,
        "datagrams upstream; drops b: {}",
        all_drops(&lab, Node::B)
    );
    assert_stream(&got, 200, 700, EGRESS6_B, 7);
    assert_eq!(counter(&lab, Node::B, GROUP6, Role::Origin).0, 200);
    assert_eq!(counter(&lab, Node::B, GROUP6, Role::Gateway).0, 200);
});

lab_test!(
    v6_fragmented_datagrams_leave_with_the_egress_source_and_reassemble,
    {
        let lab = default_lab();
        const COUNT: u32 = 40;
        const LEN: usize = 3000;
        // 3008 bytes of UDP in fragments of at most 1400 (1450 - 40 - 8,
        // rounded down to 8) at the pod's MTU: 1400 + 1400 + 208.
        const FRAGMENTS: usize = 3;
        let pcap = lab.dir().join("fragments.pcap");
        let tshark = capture(
            &lab.upstream_ns(),
            "eth0",
            &format!("ip6 dst {GROUP6}"),
            COUNT as usize * FRAGMENTS,
            &pcap,
        );
        let rx = receiver(&lab, GROUP6);
        let tx = pod_socket6(&lab, Pod::A1, 8);
        send_stream(&tx, GROUP6, COUNT, LEN, Duration::from_millis(5));
        let got = rx.collect(QUIET, MAX);

        let seqs: Vec<u32> = got.iter().map(seq_of).collect();
        assert_eq!(
            got.len(),
            COUNT as usize,
            "datagrams reassembled upstream (seqs {seqs:?}); drops a: {} b: {}",
            all_drops(&lab, Node::A),
            all_drops(&lab, Node::B)
        );
        for (seq, d) in (0..COUNT).zip(&got) {
            assert_eq!(seq_of(d), seq, "in order, each once");
            assert_eq!(d.source, EGRESS6_B, "source of datagram {seq}");
            assert_eq!(
                d.ttl, 7,
                "hop limit of datagram {seq}: 8 from the pod, one hop"
            );
            assert!(d.payload == payload(seq, LEN), "payload of datagram {seq}");
        }
        let want = u64::from(COUNT) * FRAGMENTS as u64;
        assert_eq!(
            counter(&lab, Node::A, GROUP6, Role::Origin).0,
            want,
            "fragments tunnelled by node-a"
        );
        assert_eq!(
            counter(&lab, Node::B, GROUP6, Role::Gateway).0,
            want,
            "fragments sent by node-b"
        );

        // Each fragment on the wire, with its fragment header: the later ones
        // (no UDP header in them) left with the egress source too.
        let (status, out, err) = tshark.finish(Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "tshark did not see {want} fragments: {status:?} {out}{err}"
        );
        let rows = read_fields(
            &pcap,
            &["-o", "udp.check_checksum:TRUE"],
            &[
                "ipv6.src",
                "ipv6.hlim",
                "ipv6.fraghdr.offset",
                "ipv6.fraghdr.more",
                "udp.checksum.status",
            ],
        );
        assert_eq!(rows.len(), want as usize, "fragments: {rows:?}");
        let mut offsets = std::collections::BTreeMap::<String, usize>::new();
        for row in &rows {
            assert_eq!(row[0], EGRESS6_B.to_string(), "source: {row:?}");
            assert_eq!(row[1], "7", "hop limit: {row:?}");
            *offsets.entry(row[2].clone()).or_default() += 1;
            // tshark reassembles on the last fragment and checks the UDP
            // checksum over the whole datagram there.
            if row[3] == "0" {
                assert_eq!(row[4], "1", "UDP checksum of the datagram: {row:?}");
            }
        }
        assert_eq!(
            offsets.values().copied().collect::<Vec<_>>(),
            vec![COUNT as usize; FRAGMENTS],
            "fragments per offset: {offsets:?}"
        );
    }
);

/// Datagrams of a stream that must not leave: this payload length, which
/// no control uses.
const HELD_LEN: usize = 300;
const HELD_COUNT: u32 = 50;

/// Whether `f` is a datagram of a held-back stream to `group`, from
/// `source` when given (on an uplink it would carry the egress IPv6).
fn is_held(f: &[u8], group: Ipv6Addr, source: Option<Ipv6Addr>) -> bool {
    let v = Wire6(f);
    v.is_ipv6()
        && v.daddr() == group
        && source.is_none_or(|s| v.saddr() == s)
        && v.unfragmented_udp()
            .is_some_and(|u| u.len() == 8 + HELD_LEN)
        && v.upper().is_some_and(|u| u.proto == PROTO_UDP)
}

/// `HELD_COUNT` datagrams from `sock` in `pod` to `group`, which must not
/// leave the cluster. Returns once all of them have left the pod.
fn held_back(lab: &Lab, pod: Pod, sock: &UdpSocket, group: Ipv6Addr) -> HeldBack {
    HeldBack::watch(
        lab,
        pod,
        &format!("datagrams to {group}"),
        HELD_COUNT,
        |f| is_held(f, group, Some(pod.ip6())),
        move |f| is_held(f, group, None),
        || send_stream(sock, group, HELD_COUNT, HELD_LEN, Duration::from_millis(1)),
    )
}

/// Positive control: 10 datagrams from `sock` to `group` arrive through
/// node-b from its egress IPv6, with hop limit `hops`.
fn assert_control_arrives(lab: &Lab, sock: &UdpSocket, group: Ipv6Addr, hops: u8) {
    let rx = receiver(lab, group);
    send_stream(sock, group, 10, 64, Duration::ZERO);
    let got = rx.collect(QUIET, MAX);
    assert_eq!(
        got.len(),
        10,
        "the control upstream; drops a: {} b: {}",
        all_drops(lab, Node::A),
        all_drops(lab, Node::B)
    );
    assert_stream(&got, 10, 64, EGRESS6_B, hops);
}

const CONTROL_FRAME: u64 = UDP6_FRAME + 64;

lab_test!(v6_pod_the_policy_does_not_select_sends_nothing_out, {
    let lab = default_lab();
    let held = held_back(&lab, Pod::A2, &pod_socket6(&lab, Pod::A2, 8), GROUP6);
    // Positive control: a pod the policy selects, same node, same group.
    assert_control_arrives(&lab, &pod_socket6(&lab, Pod::A1, 8), GROUP6, 7);
    held.assert_never_left();
    assert_eq!(
        counter(&lab, Node::A, GROUP6, Role::Origin),
        (10, 10 * CONTROL_FRAME),
        "the control only"
    );
});

lab_test!(v6_excluded_group_stays_inside, {
    let lab = default_lab();
    let excluded: Ipv6Addr = "ff3e::8000:ff07".parse().expect("group");
    let sock = pod_socket6(&lab, Pod::A1, 8);
    let held = held_back(&lab, Pod::A1, &sock, excluded);
    // Positive control: the rest of the prefix, same socket, still leaves.
    assert_control_arrives(&lab, &sock, GROUP6, 7);
    held.assert_never_left();
    assert_eq!(counter(&lab, Node::A, excluded, Role::Origin), (0, 0));
    assert_eq!(counter(&lab, Node::B, excluded, Role::Gateway), (0, 0));
});

lab_test!(v6_group_outside_every_policy_stays_inside, {
    let lab = default_lab();
    let outside: Ipv6Addr = "ff3e::9000:1".parse().expect("group");
    let sock = pod_socket6(&lab, Pod::A1, 8);
    let held = held_back(&lab, Pod::A1, &sock, outside);
    assert_control_arrives(&lab, &sock, GROUP6, 7);
    held.assert_never_left();
    for node in [Node::A, Node::B] {
        for role in Role::ALL {
            assert_eq!(counter(&lab, node, outside, role), (0, 0));
        }
    }
});

lab_test!(
    v6_publisher_with_hop_limit_one_is_dropped_as_ttl_exceeded,
    {
        let lab = default_lab();
        let sock = pod_socket6(&lab, Pod::A1, 1);
        let held = held_back(&lab, Pod::A1, &sock, GROUP6);
        // Positive control: the same socket at hop limit 2 gets through, one hop.
        socket2::SockRef::from(&sock)
            .set_multicast_hops_v6(2)
            .expect("IPV6_MULTICAST_HOPS");
        assert_control_arrives(&lab, &sock, GROUP6, 1);
        held.assert_never_left();
        assert_eq!(
            drops(&lab, Node::B, Role::Gateway, DropReason::TTL_EXCEEDED),
            u64::from(HELD_COUNT)
        );
        // It did travel to the gateway: the origin sent it on.
        assert_eq!(
            counter(&lab, Node::A, GROUP6, Role::Origin).0,
            u64::from(HELD_COUNT) + 10
        );
        assert_eq!(counter(&lab, Node::B, GROUP6, Role::Gateway).0, 10);
    }
);

/// MLD messages (RFC 3810: query 130, v1 report 131, done 132, v2 report
/// 143).
fn is_mld(f: &[u8]) -> bool {
    let v = Wire6(f);
    v.is_ipv6() && v.icmp6_type().is_some_and(|t| matches!(t, 130..=132 | 143))
}

lab_test!(
    v6_link_local_groups_and_mld_never_leave_under_a_catch_all_policy,
    {
        let lab = lab_with(&[(
            "policy.yaml",
            camera_policy("everything6", &["ff00::/8"], &[], Node::B),
        )]);
        let sock = pod_socket6(&lab, Pod::A1, 8);
        let pod_ns = lab.pod_ns(Pod::A1);

        // UDP to a link-local group (mDNS).
        let mdns: Ipv6Addr = "ff02::fb".parse().expect("group");
        let udp = held_back(&lab, Pod::A1, &sock, mdns);

        // The pod joins a group the policy covers: MLDv2 reports it to
        // ff02::16 (link scope), naming the group in a record.
        let v2_group: Ipv6Addr = "ff3e::8000:5".parse().expect("group");
        let names_v2_group = move |f: &[u8]| is_mld(f) && contains(f, &v2_group.octets());
        let joined = std::cell::RefCell::new(None);
        let v2 = HeldBack::watch(
            &lab,
            Pod::A1,
            "the pod's MLDv2 report",
            1,
            names_v2_group,
            names_v2_group,
            || {
                let ns = pod_ns.clone();
                *joined.borrow_mut() = Some(
                    lab::in_netns(&ns, move || {
                        let s = UdpSocket::bind("[::]:5002").expect("bind");
                        s.join_multicast_v6(&v2_group, common::ifindex("eth0"))
                            .expect("join");
                        s
                    })
                    .expect("pod namespace"),
                );
            },
        );

        // With MLDv1 forced, the report goes to the group itself (RFC 2710
        // section 5), which the policy covers: only its type exempts it.
        let v1_group: Ipv6Addr = "ff3e::8000:6".parse().expect("group");
        lab::run(
            "ip",
            &[
                "netns",
                "exec",
                &pod_ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.eth0.force_mld_version=1",
            ],
        )
        .expect("force MLDv1");
        let v1_report = move |f: &[u8]| {
            let v = Wire6(f);
            is_mld(f) && v.icmp6_type() == Some(131) && v.daddr() == v1_group
        };
        let v1 = HeldBack::watch(
            &lab,
            Pod::A1,
            "the pod's MLDv1 report",
            1,
            v1_report,
            v1_report,
            || {
                let ns = pod_ns.clone();
                let s = joined.borrow_mut().take().expect("joined");
                let s = lab::in_netns(&ns, move || {
                    s.join_multicast_v6(&v1_group, common::ifindex("eth0"))
                        .expect("join");
                    s
                })
                .expect("pod namespace");
                *joined.borrow_mut() = Some(s);
            },
        );

        // Positive control: the policy is in force for routable groups.
        assert_control_arrives(&lab, &sock, GROUP6, 7);
        for held in [&udp, &v2, &v1] {
            held.assert_never_left();
        }
        for group in [mdns, v2_group, v1_group] {
            assert_eq!(
                counter(&lab, Node::A, group, Role::Origin),
                (0, 0),
                "{group}"
            );
        }
        // Untouched and uncounted: not dropped either (a datapath that took
        // the MLDv1 report for its own would drop it as unsupported_protocol).
        for node in [Node::A, Node::B] {
            assert_eq!(all_drops(&lab, node), "", "IPv6 drops on {}", node.name());
        }
    }
);

lab_test!(v6_wire_format_on_the_upstream_side, {
    // Two groups whose low 32 bits differ only above the low 24: RFC
    // 2464's mapping keeps them apart, one that kept fewer bits would not.
    let second: Ipv6Addr = "ff3e::8100:1".parse().expect("group");
    let lab = lab_with(&[(
        "policy.yaml",
        camera_policy("cameras6", &[PREFIX6, "ff3e::8100:0/112"], &[], Node::B),
    )]);
    const COUNT: u32 = 5;
    const LEN: usize = 1316;
    let uplink_mac = mac_in(&lab.node_ns(Node::B), "uplink0");
    let pcap = lab.dir().join("upstream.pcap");
    let tshark = capture(
        &lab.upstream_ns(),
        "eth0",
        &format!("ip6 and udp and (dst host {GROUP6} or dst host {second})"),
        2 * COUNT as usize,
        &pcap,
    );
    let sock = pod_socket6(&lab, Pod::A1, 8);
    for group in [GROUP6, second] {
        send_stream(&sock, group, COUNT, LEN, Duration::from_millis(20));
    }
    let (status, out, err) = tshark.finish(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "tshark did not see {} packets: {status:?} {out}{err}; drops a: {} b: {}",
        2 * COUNT,
        all_drops(&lab, Node::A),
        all_drops(&lab, Node::B)
    );
    let rows = read_fields(
        &pcap,
        &["-o", "udp.check_checksum:TRUE"],
        &[
            "eth.dst",
            "eth.src",
            "ipv6.src",
            "ipv6.dst",
            "ipv6.hlim",
            "udp.checksum.status",
            "data.data",
        ],
    );
    assert_eq!(rows.len(), 2 * COUNT as usize, "packets: {rows:?}");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    for (i, row) in rows.iter().enumerate() {
        let (group, seq) = if i < COUNT as usize {
            (GROUP6, i as u32)
        } else {
            (second, i as u32 - COUNT)
        };
        let want = [
            mac(group_mac6(group)),
            mac(uplink_mac),
            EGRESS6_B.to_string(),
            group.to_string(),
            "7".into(),
            "1".into(),
        ];
        assert_eq!(
            row[..6],
            want,
            "eth.dst eth.src ipv6.src ipv6.dst ipv6.hlim udp.checksum.status"
        );
        assert!(
            row[6] == hex(&payload(seq, LEN)),
            "payload of datagram {seq} to {group}"
        );
    }
    // The helper itself, against RFC 2464 by hand.
    assert_eq!(group_mac6(GROUP6), [0x33, 0x33, 0x80, 0x00, 0x00, 0x01]);
    assert_eq!(group_mac6(second), [0x33, 0x33, 0x81, 0x00, 0x00, 0x01]);
    assert_eq!(counter(&lab, Node::B, GROUP6, Role::Gateway).0, 5);
    assert_eq!(counter(&lab, Node::B, second, Role::Gateway).0, 5);
});

#[test]
fn v6_daemon_restarts_lose_no_datagrams() {
    if !common::privileged("v6_daemon_restarts_lose_no_datagrams") {
        return;
    }
    let mut lab = default_lab();
    common::child::stream_through_restarts(&mut lab, GROUP6.into(), EGRESS6_B.into());
}

lab_test!(v6_pods_are_dual_stack_in_the_lab, {
    // What the scenarios above stand on: addresses in use at once (no DAD),
    // each pod's family-2 entry in cilium_lxc as cilium-agent writes it,
    // and the controller's IPv6 endpoints from them.
    use libbpf_rs::MapCore;
    let lab = default_lab();
    for (ns, dev, addr) in [
        (
            lab.node_ns(Node::B),
            "uplink0",
            "2001:db8:203::10/64".to_owned(),
        ),
        (
            lab.node_ns(Node::C),
            "uplink0",
            "2001:db8:203:1::130/64".into(),
        ),
        (lab.upstream_ns(), "eth0", "2001:db8:203::1/64".into()),
        (lab.upstream_ns(), "eth1", "2001:db8:203:1::129/64".into()),
    ]
    .into_iter()
    .chain(lab::PODS.map(|p| (lab.pod_ns(p), "eth0", format!("{}/128", p.ip6()))))
    {
        let out = lab::run("ip", &["-n", &ns, "-6", "addr", "show", "dev", dev]).expect("ip");
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(addr.as_str()))
            .unwrap_or_else(|| panic!("{ns} {dev} has no {addr}: {out}"));
        assert!(line.contains("scope global"), "{ns} {dev}: {line}");
        assert!(!line.contains("tentative"), "{ns} {dev}: {line}");
    }
    for pod in lab::PODS {
        let node = pod.node();
        let ifindex = lab::ifindex_in(&lab.node_ns(node), pod.lxc()).expect("ifindex");
        let path = cilium_mcast_egress::datapath::Paths::new(lab.cilium_bpffs(node))
            .globals()
            .join("cilium_lxc");
        let map = libbpf_rs::MapHandle::from_pinned_path(&path).expect("cilium_lxc");
        let mut key = pod.ip6().octets().to_vec();
        key.extend_from_slice(&[2, 0, 0, 0]);
        let value = map
            .lookup(&key, libbpf_rs::MapFlags::ANY)
            .expect("lookup")
            .unwrap_or_else(|| panic!("no family-2 entry for {}", pod.name()));
        let mut key4 = pod.ip().octets().to_vec();
        key4.extend_from_slice(&[0; 12]);
        key4.extend_from_slice(&[1, 0, 0, 0]);
        let value4 = map
            .lookup(&key4, libbpf_rs::MapFlags::ANY)
            .expect("lookup")
            .expect("IPv4 entry");
        assert_eq!(
            value,
            value4,
            "{}: the same value as its IPv4 entry",
            pod.name()
        );
        assert_eq!(value[0..4], ifindex.to_ne_bytes(), "ifindex");
        assert_eq!(value[32..36], pod.identity().to_ne_bytes(), "sec_id");
    }
    common::wait_for("the pods' IPv6 endpoints in node-a's maps", MAX, || {
        let eps = lab
            .maps(Node::A)
            .expect("maps")
            .endpoints_v6
            .entries()
            .expect("endpoints");
        [Pod::A1, Pod::A2]
            .iter()
            .all(|p| eps.contains_key(&p.ip6()))
    });
});
