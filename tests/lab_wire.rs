//! End-to-end scenarios 10-17 on the lab: what actually reaches the wire.
//! Each test builds its own three-node lab with real VXLAN and real
//! daemons, sends from a pod, and checks what the upstream host received
//! (count, source, TTL, payload, checksums) and what the datapath counted.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cilium_mcast_egress::datapath::maps::{DropReason, Gateway, PolicyKey, Role};
use cilium_mcast_egress::datapath::tcx::{links, tcx_chain};
use cilium_mcast_egress::datapath::{Paths, Program};
use common::child::{capture, read_fields};
use common::forge::vxlan_packet;
use common::lab_io::{payload, pod_socket, send_stream, tap_in, Datagram, Receiver, PORT};
use common::packet::{group_mac, Frame, View, ETH_P_IP, PROTO_UDP};
use lab::{addr, camera_policy, in_netns, wait_until, Lab, LabConfig, Node, Pod};

const POLICY_FILE: &str = "camera-ssm.yaml";
const POLICY_CIDR: &str = "232.1.0.0/16";

/// The lab with one policy: `app=camera` to 232.1.0.0/16 through `gateway`.
fn lab_config(gateway: Node) -> LabConfig {
    let mut cfg = LabConfig::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"));
    cfg.manifests.push((POLICY_FILE.into(), policy(gateway)));
    cfg
}

fn policy(gateway: Node) -> String {
    camera_policy("camera-ssm", &[POLICY_CIDR], &[], gateway)
}

/// Packets counted for the lab's group on `node` in `role`.
fn counted(lab: &Lab, node: Node, role: Role) -> u64 {
    lab.maps(node)
        .expect("maps")
        .counters()
        .expect("counters")
        .iter()
        .filter(|c| c.group == addr::GROUP && c.role == role)
        .map(|c| c.packets)
        .sum()
}

/// Every drop counted on `node`, as "role/reason=packets", for messages.
fn drops(lab: &Lab, node: Node) -> String {
    lab.maps(node)
        .expect("maps")
        .drops()
        .expect("drops")
        .iter()
        .filter(|d| d.packets > 0)
        .map(|d| format!("{}/{}={}", d.role.label(), d.reason.label(), d.packets))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The MAC address of `dev` in namespace `ns`.
fn mac_in(ns: &str, dev: &str) -> [u8; 6] {
    let dev = dev.to_owned();
    lab::in_netns(ns, move || common::mac_of(&dev)).expect("namespace")
}

/// The sequence number `lab_io::payload` put at the head of a datagram.
fn seq_of(d: &Datagram) -> u32 {
    u32::from_be_bytes(d.payload[..4].try_into().expect("4 bytes"))
}

/// Whether `frame` is an IPv4 UDP frame to the lab's group.
fn udp_to_group(frame: &[u8]) -> bool {
    frame.len() >= 34
        && View(frame).ethertype() == ETH_P_IP
        && View(frame).proto() == PROTO_UDP
        && View(frame).daddr() == addr::GROUP
}

// --- 10 -----------------------------------------------------------------------

#[test]
fn fragmented_datagrams_are_reassembled_intact() {
    if !common::privileged("fragmented_datagrams_are_reassembled_intact") {
        return;
    }
    let lab = Lab::up(lab_config(Node::B)).expect("lab up");
    const COUNT: u32 = 40;
    const LEN: usize = 3000;
    // 3008 bytes of UDP in IPv4 fragments of at most 1424 at MTU 1450.
    const FRAGMENTS: u64 = 3;

    let rx = Receiver::join(&lab, addr::GROUP, addr::UPSTREAM_B, Some(addr::EGRESS_B));
    let sock = pod_socket(&lab, Pod::A1, 8);
    send_stream(&sock, addr::GROUP, COUNT, LEN, Duration::from_millis(5));
    let got = rx.collect(Duration::from_millis(600), Duration::from_secs(10));

    let seqs: Vec<u32> = got.iter().map(seq_of).collect();
    assert_eq!(
        got.len(),
        COUNT as usize,
        "datagrams reassembled upstream (seqs {seqs:?}); drops a: {} b: {}",
        drops(&lab, Node::A),
        drops(&lab, Node::B)
    );
    let mut expect = 0..COUNT;
    for (d, seq) in got.iter().zip(&seqs) {
        assert_eq!(Some(*seq), expect.next(), "in order, each once");
        assert_eq!(d.source, addr::EGRESS_B, "source of datagram {seq}");
        assert_eq!(d.ttl, 7, "TTL of datagram {seq}: 8 from the pod, one hop");
        assert_eq!(d.payload.len(), LEN, "length of datagram {seq}");
        assert!(d.payload == payload(*seq, LEN), "payload of datagram {seq}");
    }
    let want = u64::from(COUNT) * FRAGMENTS;
    assert_eq!(
        counted(&lab, Node::A, Role::Origin),
        want,
        "fragments tunnelled by node-a"
    );
    assert_eq!(
        counted(&lab, Node::B, Role::Gateway),
        want,
        "fragments sent by node-b"
    );
}

// --- 11 -----------------------------------------------------------------------

#[test]
fn zero_udp_checksum_stays_zero_on_the_uplink() {
    if !common::privileged("zero_udp_checksum_stays_zero_on_the_uplink") {
        return;
    }
    let lab = Lab::up(lab_config(Node::B)).expect("lab up");
    let pod_mac = mac_in(&lab.pod_ns(Pod::A1), "eth0");
    let uplink_mac = mac_in(&lab.node_ns(Node::B), "uplink0");
    let upstream = tap_in(&lab.upstream_ns(), "eth0");
    let pod = tap_in(&lab.pod_ns(Pod::A1), "eth0");

    let mut zero =
        Frame::udp(Pod::A1.ip(), addr::GROUP, b"no checksum, by choice").zero_udp_checksum();
    zero.src_mac = pod_mac;
    let mut control = Frame::udp(Pod::A1.ip(), addr::GROUP, b"with a checksum");
    control.src_mac = pod_mac;
    control.id = 0x1235;
    assert_eq!(zero.dst_mac, group_mac(addr::GROUP));

    for (frame, zero_csum) in [(&zero, true), (&control, false)] {
        pod.send(&frame.bytes());
        let want = frame.payload.clone();
        let got = upstream
            .recv_matching(Duration::from_secs(3), |f| {
                udp_to_group(f) && View(f).udp().get(8..) == Some(&want[..])
            })
            .unwrap_or_else(|| {
                panic!(
                    "nothing upstream for {:?}; drops a: {} b: {}",
                    String::from_utf8_lossy(&want),
                    drops(&lab, Node::A),
                    drops(&lab, Node::B)
                )
            });
        let v = View(&got);
        assert_eq!(v.saddr(), addr::EGRESS_B, "source");
        assert_eq!(v.ttl(), 7, "TTL");
        assert_eq!(v.dst_mac(), group_mac(addr::GROUP), "destination MAC");
        assert_eq!(v.src_mac(), uplink_mac, "source MAC");
        assert!(v.ipv4_checksum_ok(), "IPv4 header checksum of {got:02x?}");
        if zero_csum {
            assert_eq!(v.udp_checksum_field(), 0, "a zero UDP checksum stays zero");
        } else {
            assert_ne!(v.udp_checksum_field(), 0, "the control has a checksum");
            assert!(
                v.udp_checksum_ok(),
                "the control's UDP checksum, after the SNAT"
            );
        }
    }
    assert_eq!(counted(&lab, Node::B, Role::Gateway), 2, "sent by node-b");
}

// --- 12 -----------------------------------------------------------------------

#[test]
fn gateway_move_continues_the_stream_from_the_new_gateway() {
    if !common::privileged("gateway_move_continues_the_stream_from_the_new_gateway") {
        return;
    }
    let lab = Lab::up(lab_config(Node::B)).expect("lab up");
    const COUNT: u32 = 300;
    const MOVE_AT: u32 = 100;
    const LEN: usize = 200;

    let via_b = Receiver::join(&lab, addr::GROUP, addr::UPSTREAM_B, Some(addr::EGRESS_B));
    let via_c = Receiver::join(&lab, addr::GROUP, addr::UPSTREAM_C, Some(addr::EGRESS_C));
    // Any source, per uplink: what else, if anything, arrives there.
    let any_b = Receiver::join(&lab, addr::GROUP, addr::UPSTREAM_B, None);
    let any_c = Receiver::join(&lab, addr::GROUP, addr::UPSTREAM_C, None);

    let sock = pod_socket(&lab, Pod::A1, 8);
    let mut sent_at = Vec::with_capacity(COUNT as usize);
    let mut moved_at = None;
    for seq in 0..COUNT {
        if seq == MOVE_AT {
            lab.write_manifest(POLICY_FILE, &policy(Node::C))
                .expect("move the gateway");
            moved_at = Some(Instant::now());
        }
        sent_at.push(Instant::now());
        sock.send_to(&payload(seq, LEN), (addr::GROUP, PORT))
            .expect("send");
        std::thread::sleep(Duration::from_millis(10));
    }
    let moved_at = moved_at.expect("moved");
    let quiet = Duration::from_millis(600);
    let max = Duration::from_secs(10);
    let (via_b, via_c) = (via_b.collect(quiet, max), via_c.collect(quiet, max));
    let (any_b, any_c) = (any_b.collect(quiet, max), any_c.collect(quiet, max));

    for (heard, source, uplink) in [(&any_b, addr::EGRESS_B, "B"), (&any_c, addr::EGRESS_C, "C")] {
        for d in heard.iter() {
            assert_eq!(
                d.source,
                source,
                "datagram {} on uplink {uplink}",
                seq_of(d)
            );
        }
    }
    for (heard, uplink) in [(&via_b, "B"), (&via_c, "C")] {
        for d in heard.iter() {
            let seq = seq_of(d);
            assert_eq!(d.ttl, 7, "TTL of datagram {seq} via {uplink}");
            assert!(
                d.payload == payload(seq, LEN),
                "payload of {seq} via {uplink}"
            );
        }
    }
    let b: BTreeSet<u32> = via_b.iter().map(seq_of).collect();
    let c: BTreeSet<u32> = via_c.iter().map(seq_of).collect();
    assert_eq!(b.len(), via_b.len(), "no duplicates via B");
    assert_eq!(c.len(), via_c.len(), "no duplicates via C");
    assert!(b.is_disjoint(&c), "no datagram through both gateways");
    assert_eq!(any_b.len(), b.len(), "uplink B carried only (EGRESS_B, G)");
    assert_eq!(any_c.len(), c.len(), "uplink C carried only (EGRESS_C, G)");
    assert!(
        (0..MOVE_AT).all(|s| b.contains(&s)),
        "every datagram before the move came via B: {b:?}"
    );
    assert!(
        !c.is_empty(),
        "node-c took the stream over; drops a: {} b: {} c: {}",
        drops(&lab, Node::A),
        drops(&lab, Node::B),
        drops(&lab, Node::C)
    );
    let (last_b, first_c) = (*b.last().expect("b"), *c.first().expect("c"));
    assert!(
        last_b < first_c,
        "B until #{last_b}, C from #{first_c}: no interleaving"
    );
    assert_eq!(c.last(), Some(&(COUNT - 1)), "the stream ended via C");
    let lost = COUNT as usize - b.len() - c.len();
    assert!(
        lost < COUNT as usize / 4,
        "{lost} of {COUNT} lost in the move"
    );
    eprintln!(
        "gateway move: last via B #{last_b}, first via C #{first_c}, {lost} lost; \
         #{first_c} was sent {:?} after the policy was rewritten, {:?} after #{last_b}",
        sent_at[first_c as usize].saturating_duration_since(moved_at),
        sent_at[first_c as usize].saturating_duration_since(sent_at[last_b as usize]),
    );
    assert_eq!(
        counted(&lab, Node::B, Role::Gateway),
        b.len() as u64,
        "node-b's counter"
    );
    assert_eq!(
        counted(&lab, Node::C, Role::Gateway),
        c.len() as u64,
        "node-c's counter"
    );
}

// --- 13 -----------------------------------------------------------------------

#[test]
fn new_pod_is_covered_within_one_second() {
    if !common::privileged("new_pod_is_covered_within_one_second") {
        return;
    }
    let mut lab = Lab::up(lab_config(Node::B)).expect("lab up");
    let key = PolicyKey {
        source: Pod::A3.ip(),
        destination: POLICY_CIDR.parse().expect("cidr"),
    };
    let maps = lab.maps(Node::A).expect("maps of node-a");
    // The gateway needs the pod's entry too: node-b resolves the new
    // CiliumEndpoint on its own, and may do so a little later.
    let gateway_maps = lab.maps(Node::B).expect("maps of node-b");

    let t0 = Instant::now();
    lab.add_pod(Pod::A3).expect("add pod-a3");
    let added = t0.elapsed();
    let lxc = lab::ifindex_in(&lab.node_ns(Node::A), Pod::A3.lxc()).expect("lxca3");
    let covered = || {
        let ep = maps
            .endpoints()
            .expect("endpoints")
            .into_iter()
            .any(|(ip, ep)| {
                ip == Pod::A3.ip() && ep.ifindex == lxc && ep.identity == Pod::A1.identity()
            });
        let pol = maps
            .policy_get(&key)
            .expect("policy")
            .is_some_and(|v| v.gateway == Gateway::Node(Node::B.ip()));
        let at_gateway = gateway_maps
            .policy_get(&key)
            .expect("policy")
            .is_some_and(|v| v.egress_ip == addr::EGRESS_B);
        ep && pol && at_gateway
    };
    wait_until(
        "pod-a3 in node-a's and node-b's maps",
        Duration::from_secs(5),
        covered,
    )
    .unwrap_or_else(|e| {
        panic!("{e}; node-a's log:\n{}", lab.log(Node::A));
    });
    let elapsed = t0.elapsed();
    eprintln!("pod-a3 covered after {elapsed:?} (add_pod itself took {added:?})");
    assert!(
        elapsed < Duration::from_secs(1),
        "pod-a3 covered only after {elapsed:?}"
    );

    const COUNT: u32 = 20;
    let rx = Receiver::join(&lab, addr::GROUP, addr::UPSTREAM_B, Some(addr::EGRESS_B));
    let sock = pod_socket(&lab, Pod::A3, 8);
    send_stream(&sock, addr::GROUP, COUNT, 500, Duration::from_millis(2));
    let got = rx.collect(Duration::from_secs(1), Duration::from_secs(5));
    assert_eq!(
        got.len(),
        COUNT as usize,
        "datagrams from pod-a3 upstream; drops a: {} b: {}",
        drops(&lab, Node::A),
        drops(&lab, Node::B)
    );
    for (seq, d) in (0..COUNT).zip(&got) {
        assert_eq!(d.source, addr::EGRESS_B);
        assert_eq!(d.ttl, 7);
        assert!(d.payload == payload(seq, 500), "payload of datagram {seq}");
    }
}

// --- 14 -----------------------------------------------------------------------

/// The devices each node's daemon attaches to, with the program.
fn expected_links(node: Node) -> BTreeSet<(String, String)> {
    let lxc: &[&str] = match node {
        Node::A => &["lxca1", "lxca2"],
        Node::B => &["lxcb1"],
        Node::C => &["lxcc1"],
    };
    lxc.iter()
        .map(|d| (d.to_string(), "mcast_from_container".to_string()))
        .chain(
            ["mcast_from_overlay", "mcast_to_overlay"]
                .map(|p| ("cilium_vxlan".to_string(), p.to_string())),
        )
        .collect()
}

#[test]
fn daemon_restarts_lose_no_datagrams() {
    if !common::privileged("daemon_restarts_lose_no_datagrams") {
        return;
    }
    let mut lab = Lab::up(lab_config(Node::B)).expect("lab up");
    common::child::stream_through_restarts(&mut lab, addr::GROUP.into(), addr::EGRESS_B.into());

    for node in [Node::A, Node::B] {
        let root = lab.bpffs(node);
        let found = in_netns(&lab.node_ns(node), move || {
            let paths = Paths::new(root);
            links(&paths)
                .expect("links")
                .into_iter()
                .map(|l| {
                    assert_ne!(l.ifindex, 0, "{l:?} still attached");
                    // The chain the program runs in: ingress, or (the
                    // tunnel device's egress program) egress.
                    let direction = Program::from_name(&l.program)
                        .unwrap_or_else(|| panic!("a program of ours: {l:?}"))
                        .direction();
                    let chain = tcx_chain(l.ifindex, direction).expect("tcx chain");
                    (l, chain)
                })
                .collect::<Vec<_>>()
        })
        .expect("node namespace");
        let devices: BTreeSet<(String, String)> = found
            .iter()
            .map(|(l, _)| (l.device.clone(), l.program.clone()))
            .collect();
        assert_eq!(
            devices,
            expected_links(node),
            "pinned links of {}",
            node.name()
        );
        for (l, chain) in &found {
            let ids: Vec<u32> = chain.iter().map(|e| e.link_id).collect();
            assert_eq!(
                ids,
                vec![l.link_id],
                "tcx chain of {} on {}: exactly our one link",
                l.device,
                node.name()
            );
        }
    }
}

// --- 15 -----------------------------------------------------------------------

/// A copy of `inner` tunnelled from `from`'s underlay NIC to node-b's, as
/// a node's kernel sends it, with `vni`.
fn copy_to_node_b(lab: &Lab, from: (&str, Ipv4Addr), vni: u32, inner: &Frame) -> Vec<u8> {
    vxlan_packet(
        (mac_in(from.0, "eth0"), from.1),
        (mac_in(&lab.node_ns(Node::B), "eth0"), Node::B.ip()),
        vni,
        &inner.bytes(),
    )
}

#[test]
fn vxlan_from_a_host_that_is_not_a_node_is_dropped() {
    if !common::privileged("vxlan_from_a_host_that_is_not_a_node_is_dropped") {
        return;
    }
    let mut lab = Lab::up(lab_config(Node::B)).expect("lab up");
    const ROGUE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
    const SENT: u64 = 5;
    let rogue = lab.add_underlay_host("rogue", ROGUE).expect("rogue host");
    let maps = lab.maps(Node::B).expect("maps of node-b");
    let before = maps
        .drop_count(Role::Gateway, DropReason::UNKNOWN_PEER)
        .expect("drops");

    let upstream = tap_in(&lab.upstream_ns(), "eth0");
    let tap = tap_in(&rogue, "eth0");
    let inner = Frame::udp(
        Pod::A1.ip(),
        addr::GROUP,
        b"injected from outside the cluster",
    );
    let packet = copy_to_node_b(&lab, (&rogue, ROGUE), Pod::A1.identity(), &inner);
    for _ in 0..SENT {
        tap.send(&packet);
    }

    let dropped = || {
        maps.drop_count(Role::Gateway, DropReason::UNKNOWN_PEER)
            .expect("drops")
            .packets
            - before.packets
    };
    let counted_all = wait_until("unknown_peer drops", Duration::from_secs(3), || {
        dropped() >= SENT
    });
    let leaked = upstream.recv_matching(Duration::from_secs(1), udp_to_group);
    assert!(
        leaked.is_none(),
        "an injected packet left node-b's uplink: {leaked:02x?}"
    );
    assert!(
        counted_all.is_ok(),
        "{} of {SENT} injected packets counted unknown_peer; drops b: {}",
        dropped(),
        drops(&lab, Node::B)
    );
    assert_eq!(dropped(), SENT, "each injected packet counted once");
    assert_eq!(
        counted(&lab, Node::B, Role::Gateway),
        0,
        "nothing emitted by node-b"
    );

    // Positive control: the same inner frame, crafted the same way but
    // sent from node-a (the pod's node), is a genuine copy and leaves.
    let genuine = copy_to_node_b(
        &lab,
        (&lab.node_ns(Node::A), Node::A.ip()),
        Pod::A1.identity(),
        &inner,
    );
    tap_in(&lab.node_ns(Node::A), "eth0").send(&genuine);
    let got = upstream
        .recv_matching(Duration::from_secs(3), udp_to_group)
        .unwrap_or_else(|| panic!("the control upstream; drops b: {}", drops(&lab, Node::B)));
    assert_eq!(View(&got).saddr(), addr::EGRESS_B, "the control's source");
    assert_eq!(View(&got).udp().get(8..), Some(&inner.payload[..]));
    assert_eq!(counted(&lab, Node::B, Role::Gateway), 1, "the control only");
}

// --- 16 -----------------------------------------------------------------------

#[test]
fn wire_format_on_the_uplink_and_the_underlay() {
    if !common::privileged("wire_format_on_the_uplink_and_the_underlay") {
        return;
    }
    let lab = Lab::up(lab_config(Node::B)).expect("lab up");
    const COUNT: usize = 5;
    let uplink_pcap = lab.dir().join("uplink.pcap");
    let underlay_pcap = lab.dir().join("underlay.pcap");
    let uplink = capture(
        &lab.node_ns(Node::B),
        "uplink0",
        &format!("udp and dst host {}", addr::GROUP),
        COUNT,
        &uplink_pcap,
    );
    let underlay = capture(
        &lab.node_ns(Node::A),
        "eth0",
        "udp port 8472",
        COUNT,
        &underlay_pcap,
    );

    let sock = pod_socket(&lab, Pod::A1, 8);
    send_stream(
        &sock,
        addr::GROUP,
        COUNT as u32,
        1316,
        Duration::from_millis(20),
    );
    for (name, p) in [("uplink0", uplink), ("underlay", underlay)] {
        let (status, out, err) = p.finish(Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "tshark on {name} did not see {COUNT} packets: {status:?} {out}{err}; \
             drops a: {} b: {}",
            drops(&lab, Node::A),
            drops(&lab, Node::B)
        );
    }

    let rows = read_fields(
        &uplink_pcap,
        &[
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
        ],
        &[
            "eth.dst",
            "ip.src",
            "ip.dst",
            "ip.ttl",
            "ip.checksum.status",
            "udp.checksum.status",
        ],
    );
    assert_eq!(rows.len(), COUNT, "uplink packets: {rows:?}");
    for row in &rows {
        assert_eq!(
            row,
            &[
                "01:00:5e:01:01:01",
                "203.0.113.10",
                "232.1.1.1",
                "7",
                "1",
                "1"
            ],
            "eth.dst ip.src ip.dst ip.ttl ip.checksum.status udp.checksum.status"
        );
    }

    let rows = read_fields(
        &underlay_pcap,
        &["-d", "udp.port==8472,vxlan"],
        &[
            "ip.src",
            "ip.dst",
            "ip.ttl",
            "udp.dstport",
            "udp.checksum",
            "vxlan.vni",
            "eth.dst",
        ],
    );
    assert_eq!(rows.len(), COUNT, "underlay packets: {rows:?}");
    let identity = Pod::A1.identity().to_string();
    for row in &rows {
        // Outer, then inner occurrences, comma-separated.
        let first = |i: usize| row[i].split(',').next().unwrap_or_default().to_owned();
        let second = |i: usize| row[i].split(',').nth(1).unwrap_or_default().to_owned();
        assert_eq!(first(0), Node::A.ip().to_string(), "outer source: {row:?}");
        assert_eq!(
            first(1),
            Node::B.ip().to_string(),
            "outer destination: {row:?}"
        );
        assert_eq!(first(2), "64", "outer TTL: {row:?}");
        assert_eq!(first(3), "8472", "outer UDP port: {row:?}");
        assert_eq!(first(4), "0x0000", "outer UDP checksum: {row:?}");
        assert_eq!(row[5], identity, "VNI = pod-a1's identity: {row:?}");
        assert_eq!(second(0), Pod::A1.ip().to_string(), "inner source: {row:?}");
        assert_eq!(
            second(1),
            addr::GROUP.to_string(),
            "inner destination: {row:?}"
        );
        assert_eq!(second(2), "8", "inner TTL: {row:?}");
        assert_eq!(
            second(6),
            "01:00:5e:01:01:01",
            "inner destination MAC: {row:?}"
        );
    }
}

// --- 17 -----------------------------------------------------------------------

#[test]
fn forged_copy_of_an_excluded_group_never_leaves_the_gateway() {
    if !common::privileged("forged_copy_of_an_excluded_group_never_leaves_the_gateway") {
        return;
    }
    // 232.1.0.0/16 through node-b, but 232.1.255.0/24.
    let mut cfg = LabConfig::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"));
    cfg.manifests.push((
        POLICY_FILE.into(),
        camera_policy("camera-ssm", &[POLICY_CIDR], &["232.1.255.0/24"], Node::B),
    ));
    let lab = Lab::up(cfg).expect("lab up");
    const SENT: usize = 5;
    let excluded = Ipv4Addr::new(232, 1, 255, 7);
    let node_a = lab.node_ns(Node::A);
    let pod_mac = mac_in(&lab.pod_ns(Pod::A1), "eth0");
    let upstream = tap_in(&lab.upstream_ns(), "eth0");
    let rx = Receiver::join(&lab, addr::GROUP, addr::UPSTREAM_B, Some(addr::EGRESS_B));

    // What an origin with a stale view (or a forger on the pod's node)
    // would tunnel: from pod-a1's own node, with pod-a1's identity as VNI,
    // injected on node-a's underlay NIC.
    let underlay = tap_in(&node_a, "eth0");
    let copy = |group: Ipv4Addr, payload: &[u8]| {
        let mut inner = Frame::udp(Pod::A1.ip(), group, payload);
        inner.src_mac = pod_mac;
        copy_to_node_b(&lab, (&node_a, Node::A.ip()), Pod::A1.identity(), &inner)
    };
    let forged: &[u8] = b"a copy for a group the policy excludes";
    for _ in 0..SENT {
        underlay.send(&copy(excluded, forged));
    }
    // Positive control, sent the same way behind them: a covered group.
    let covered: &[u8] = b"a copy for a covered group";
    for _ in 0..SENT {
        underlay.send(&copy(addr::GROUP, covered));
    }

    let got = rx.collect(Duration::from_millis(600), Duration::from_secs(10));
    assert_eq!(
        got.len(),
        SENT,
        "the covered copies upstream; drops b: {}",
        drops(&lab, Node::B)
    );
    for d in &got {
        assert_eq!((d.source, d.ttl), (addr::EGRESS_B, 7));
        assert_eq!(d.payload, covered);
    }
    while let Some(f) = upstream.recv(Duration::from_millis(100)) {
        let v = View(&f);
        assert!(
            !(v.ethertype() == ETH_P_IP && f.len() >= 34 && v.daddr() == excluded),
            "a copy for the excluded group left node-b's uplink: {f:02x?}"
        );
    }
    let excluded_drops = || {
        lab.maps(Node::B)
            .expect("maps")
            .drop_count(Role::Gateway, DropReason::EXCLUDED)
            .expect("drops")
            .packets
    };
    wait_until("the excluded drops", Duration::from_secs(3), || {
        excluded_drops() >= SENT as u64
    })
    .unwrap_or_else(|e| panic!("{e}; drops b: {}", drops(&lab, Node::B)));
    assert_eq!(
        excluded_drops(),
        SENT as u64,
        "each forged copy counted once"
    );
    assert_eq!(
        counted(&lab, Node::B, Role::Gateway),
        SENT as u64,
        "the covered copies only"
    );
    // The gateway enforces the exclusion itself, from its own map.
    let key = PolicyKey {
        source: Pod::A1.ip(),
        destination: "232.1.255.0/24".parse().expect("CIDR"),
    };
    assert_eq!(
        lab.maps(Node::B)
            .expect("maps")
            .policy_get(&key)
            .expect("policy")
            .map(|v| v.gateway),
        Some(Gateway::Excluded),
        "node-b holds pod-a1's exclusion"
    );
}
