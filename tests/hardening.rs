//! The datapath's hardening on the real path, where the kernel shapes the
//! packets and BPF_PROG_RUN cannot: VLAN tags the kernel moves into the skb
//! before tcx runs, GSO packets from a pod's socket, VXLAN received by a
//! real collect-md device from forged or genuine senders, and a node whose
//! underlay NIC has two addresses. The production programs are attached
//! with tcx and what reaches the wire is captured on the far side of each
//! device. Needs root; each test has its own network namespace and BPF
//! filesystem.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use cilium_mcast_egress::datapath::maps::{
    Config, DropReason, EgressIface, Endpoint, Gateway, Origin, Role,
};
use cilium_mcast_egress::datapath::{Datapath, Maps, Program};
use common::addr::*;
use common::forge::{contains, marker, vlan_tagged, vxlan_packet, TPID_8021AD, TPID_8021Q};
use common::observer::Observer;
use common::packet::{group_mac, Frame, View, ETH_P_IP, PROTO_UDP};
use common::{ifindex, mac_of, sh, Bpffs, PodNs, Tap};

const ID_A: u32 = 12345;
const ID_B: u32 = 23456;
const POLICY_ID: u32 = 9;
/// Pod MTU, as Cilium sets it for VXLAN.
const POD_MTU: &str = "1450";
/// The MAC the fixture's neighbour entry gives the remote gateway.
const REMOTE_GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];
/// How long anything that should arrive may take.
const WAIT: Duration = Duration::from_secs(2);
/// UDP_SEGMENT (include/uapi/linux/udp.h), at level SOL_UDP.
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;

/// The tags a pod could put on a frame: one C-tag, one S-tag, and an
/// S-tag over a C-tag (QinQ). The kernel moves the outer one into the skb.
const TAGGINGS: [(&str, &[(u16, u16)]); 3] = [
    ("802.1Q VLAN 100", &[(TPID_8021Q, 100)]),
    ("802.1ad VLAN 100", &[(TPID_8021AD, 100)]),
    (
        "QinQ 802.1ad 200 over 802.1Q 100",
        &[(TPID_8021AD, 200), (TPID_8021Q, 100)],
    ),
];

/// One node in a private namespace: pod A in a namespace of its own behind
/// `lxc_a` (pod side `pod_a`, MTU 1450, 198.51.100.11), an uplink `uplink0`
/// whose far side `upstream0` stands for the upstream network, and a
/// collect-md VXLAN device `vx0` over the underlay NIC `under0`
/// (192.0.2.10/24, far side `under_peer`). The production datapath is
/// loaded and configured for pod A; each test attaches what it needs.
struct Node {
    dp: Datapath<'static>,
    maps: Maps,
    pod: PodNs,
    uplink: u32,
    uplink_mac: [u8; 6],
    under_mac: [u8; 6],
    pod_mac: [u8; 6],
    _bpffs: Bpffs,
}

/// No IPv6 in the calling thread's namespace: nothing but what a test
/// sends crosses the devices (no router solicitations or MLD reports
/// reaching an observer or a capture).
fn no_ipv6() {
    for conf in ["all", "default"] {
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1")
            .expect("disabling IPv6");
    }
}

impl Node {
    fn new(test: &str) -> Node {
        no_ipv6();
        common::veths(&[
            ("lxc_a", "pod_a"),
            ("uplink0", "upstream0"),
            ("under0", "under_peer"),
        ]);
        for dev in ["lxc_a", "pod_a"] {
            sh("ip", &["link", "set", dev, "mtu", POD_MTU]);
        }
        common::vxlan_external("vx0");
        sh("ip", &["addr", "add", "192.0.2.10/24", "dev", "under0"]);
        common::permanent_neighbour(&REMOTE_GW.to_string(), "02:00:00:00:00:20", "under0");
        // Checksums and segmentation in software on the uplink, as a NIC
        // finishes them in hardware: the far side sees what a wire carries.
        sh("ethtool", &["-K", "uplink0", "tx", "off"]);

        let (bpffs, dp, maps) = common::load_datapath(test);
        let uplink = ifindex("uplink0");
        let uplink_mac = mac_of("uplink0");
        maps.config_set(&Config {
            node_ip: THIS_NODE,
            tunnel_ifindex: ifindex("vx0"),
        })
        .expect("config");
        maps.endpoint_insert(
            POD_A,
            &Endpoint {
                ifindex: ifindex("lxc_a"),
                identity: ID_A,
            },
        )
        .expect("endpoint");
        for n in [THIS_NODE, REMOTE_GW, OTHER_NODE] {
            maps.node_insert(n).expect("node");
        }
        maps.egress_iface_insert(uplink, &EgressIface { mac: uplink_mac })
            .expect("egress interface");

        let pod_mac = mac_of("pod_a");
        let pod = PodNs::new();
        pod.run(no_ipv6);
        pod.take("pod_a");
        pod.run(|| {
            sh("ip", &["link", "set", "pod_a", "up"]);
            sh("ip", &["addr", "add", "198.51.100.11/24", "dev", "pod_a"]);
            sh("ip", &["route", "add", "232.0.0.0/8", "dev", "pod_a"]);
        });
        Node {
            dp,
            maps,
            pod,
            uplink,
            uplink_mac,
            under_mac: mac_of("under0"),
            pod_mac,
            _bpffs: bpffs,
        }
    }

    /// Pod A's entry for `dest` through `gateway`; the pod runs on
    /// `origin_node` (this one for the origin program, another for copies
    /// the gateway program receives).
    fn policy(&self, dest: &str, gateway: Gateway, origin_node: Ipv4Addr) {
        let (k, v) = common::policy_entry(
            POD_A,
            dest,
            gateway,
            self.uplink,
            POLICY_ID,
            Origin {
                node: origin_node,
                identity: ID_A,
            },
        );
        self.maps.policy_insert(&k, &v).expect("policy");
    }

    /// A packet socket on the pod's eth0, inside the pod.
    fn pod_tap(&self) -> Tap {
        self.pod.run(|| Tap::open("pod_a"))
    }

    /// A UDP datagram from pod A to `group` as its kernel would frame it.
    fn pod_frame(&self, group: Ipv4Addr, payload: &[u8]) -> Frame {
        let mut f = Frame::udp(POD_A, group, payload);
        f.src_mac = self.pod_mac;
        f
    }

    /// Send `payload` to `group` from a UDP socket in the pod, TTL 8, with
    /// UDP_SEGMENT set to `gso_size` when given.
    fn pod_send(&self, group: Ipv4Addr, payload: Vec<u8>, gso_size: Option<u16>) {
        self.pod.run(move || {
            let s = UdpSocket::bind((POD_A, 0))
                .unwrap_or_else(|e| panic!("binding the pod's socket: {e}"));
            s.set_multicast_ttl_v4(8).expect("IP_MULTICAST_TTL");
            if let Some(size) = gso_size {
                let size = libc::c_int::from(size);
                // SAFETY: setsockopt with a valid int option value of its size.
                let r = unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        SOL_UDP,
                        UDP_SEGMENT,
                        (&size as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as u32,
                    )
                };
                assert_eq!(r, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
            }
            let n = s.send_to(&payload, (group, 5001)).expect("send");
            assert_eq!(n, payload.len(), "sent whole");
        });
    }

    /// Packets and bytes counted for the fixture's policy in `role`.
    fn counted(&self, role: Role) -> (u64, u64) {
        self.maps
            .counters()
            .expect("counters")
            .into_iter()
            .filter(|c| c.policy_id == POLICY_ID && c.role == role)
            .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes))
    }

    fn dropped(&self, role: Role, reason: DropReason) -> (u64, u64) {
        let d = self.maps.drop_count(role, reason).expect("drops");
        (d.packets, d.bytes)
    }

    /// Every drop counted, as "role/reason=packets", for messages.
    fn drops(&self) -> String {
        self.maps
            .drops()
            .expect("drops")
            .iter()
            .filter(|d| d.packets > 0)
            .map(|d| format!("{}/{}={}", d.role.label(), d.reason.label(), d.packets))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

macro_rules! hardening_test {
    ($(#[$m:meta])* $name:ident, |$node:ident| $body:block) => {
        netns_test!($(#[$m])* $name, Node::new, |$node| $body);
    };
}

/// Every frame `tap` sees up to and including the first that carries
/// `until`; panics if that one does not come within [`WAIT`].
fn frames_until(tap: &Tap, until: &[u8], what: &str) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = tap
            .recv(left)
            .unwrap_or_else(|| panic!("{what} never arrived ({} other frames)", seen.len()));
        let done = contains(&f, until);
        seen.push(f);
        if done {
            return seen;
        }
    }
}

/// None of `frames` carries any of `markers`, in any form.
fn assert_none_carries(frames: &[Vec<u8>], markers: &[(&str, Vec<u8>)], place: &str) {
    for f in frames {
        for (name, m) in markers {
            assert!(
                !contains(f, m),
                "the {name} frame reached {place}: {f:02x?}"
            );
        }
    }
}

/// `out` is `sent` as the gateway emits it: egress IP, TTL - 1, group and
/// uplink MACs, valid checksums, the payload unchanged.
fn assert_emitted(node: &Node, sent: &Frame, out: &[u8]) {
    let v = View(out);
    assert_eq!(v.ethertype(), ETH_P_IP, "untagged IPv4: {out:02x?}");
    assert_eq!(v.saddr(), EGRESS_IP, "source rewritten to the egress IP");
    assert_eq!(v.ttl(), sent.ttl - 1, "TTL decremented");
    assert_eq!(v.dst_mac(), group_mac(sent.daddr), "RFC 1112 group MAC");
    assert_eq!(v.src_mac(), node.uplink_mac, "uplink MAC");
    assert!(v.ipv4_checksum_ok(), "IPv4 header checksum");
    assert!(v.udp_checksum_ok(), "UDP checksum");
    assert_eq!(
        out,
        sent.as_emitted(EGRESS_IP, node.uplink_mac).bytes(),
        "every byte as a router would send it"
    );
}

/// The VNI of a VXLAN packet on the underlay (outer IPv4 without options).
fn vni_of(outer: &[u8]) -> u32 {
    u32::from_be_bytes([0, outer[46], outer[47], outer[48]])
}

fn is_vxlan(f: &[u8]) -> bool {
    f.len() > 50
        && View(f).ethertype() == ETH_P_IP
        && View(f).proto() == PROTO_UDP
        && u16::from_be_bytes([f[36], f[37]]) == 8472
}

// --- VLAN tags (the kernel strips one into skb->vlan_tci before tcx) ----------

/// For each tagging: a covered frame carrying it goes in through `send`,
/// then an untagged control. Up to the control, nothing of the tagged frame
/// may reach `capture`, in any form; and our program must have handed it on
/// as the kernel left it (the observer behind it got it: the outer tag in
/// the skb, any inner tag still in the frame). Returns the controls, each
/// with what `capture` saw of it, a first one sent before any tagged frame.
fn tagged_frames_between_controls(
    node: &Node,
    observer: &Observer,
    capture: &Tap,
    place: &str,
    send: impl Fn(&[u8]),
) -> Vec<(Frame, Vec<u8>)> {
    let control = |name: &str| {
        let f = node.pod_frame(GROUP, &marker(name));
        send(&f.bytes());
        let seen = frames_until(capture, &marker(name), name);
        (f, seen)
    };
    let (first, seen) = control("control before");
    let mut controls = vec![(first, seen.last().expect("frame").clone())];
    for (name, tags) in TAGGINGS {
        let inner = node.pod_frame(GROUP, &marker(name));
        send(&vlan_tagged(&inner.bytes(), tags));
        let (after, seen) = control(&format!("control after {name}"));
        assert_none_carries(&seen, &[(name, marker(name))], place);
        controls.push((after, seen.last().expect("frame").clone()));

        let want = vlan_tagged(&inner.bytes(), &tags[1..]);
        let got = observer.next_frame();
        assert_eq!(
            got,
            want[..want.len().min(got.len())],
            "{name}: handed on untouched"
        );
        assert_eq!(got.len(), want.len().min(128), "{name}: length");
    }
    controls
}

hardening_test!(vlan_tagged_pod_frames_never_leave_a_local_gateway, |node| {
    node.policy("232.1.0.0/16", Gateway::Node(THIS_NODE), THIS_NODE);
    node.dp
        .attach("lxc_a", Program::FromContainer)
        .expect("attach");
    let observer = Observer::attach_behind("lxc_a", node.dp.paths());
    let upstream = Tap::open("upstream0");
    let pod = node.pod_tap();

    let controls =
        tagged_frames_between_controls(&node, &observer, &upstream, "the uplink", |f| pod.send(f));
    let mut bytes = 0;
    for (sent, out) in &controls {
        assert_emitted(&node, sent, out);
        bytes += sent.bytes().len() as u64;
    }
    assert_eq!(
        node.counted(Role::Gateway),
        (controls.len() as u64, bytes),
        "the controls only"
    );
    assert_eq!(
        node.drops(),
        "",
        "nothing dropped: tagged frames are not ours"
    );
});

hardening_test!(vlan_tagged_pod_frames_never_reach_the_tunnel, |node| {
    node.policy("232.1.0.0/16", Gateway::Node(REMOTE_GW), THIS_NODE);
    node.dp
        .attach("lxc_a", Program::FromContainer)
        .expect("attach");
    let observer = Observer::attach_behind("lxc_a", node.dp.paths());
    let underlay = Tap::open("under_peer");
    let pod = node.pod_tap();

    let controls =
        tagged_frames_between_controls(&node, &observer, &underlay, "the underlay", |f| {
            pod.send(f)
        });
    for (sent, out) in &controls {
        assert!(is_vxlan(out), "a control as VXLAN: {out:02x?}");
        let v = View(out);
        assert_eq!((v.saddr(), v.daddr()), (THIS_NODE, REMOTE_GW), "outer");
        assert_eq!(vni_of(out), ID_A, "VNI");
        assert_eq!(
            &out[50..],
            sent.bytes().as_slice(),
            "the inner frame as the pod sent it"
        );
    }
    assert_eq!(
        node.counted(Role::Origin).0,
        controls.len() as u64,
        "the controls only"
    );
    assert_eq!(
        node.drops(),
        "",
        "nothing dropped: tagged frames are not ours"
    );
});

hardening_test!(
    vlan_tagged_frame_inside_vxlan_never_leaves_the_gateway,
    |node| {
        // Pod A runs on REMOTE_GW's node; this node is its gateway.
        node.policy("232.1.0.0/16", Gateway::Node(THIS_NODE), REMOTE_GW);
        node.dp.attach("vx0", Program::FromOverlay).expect("attach");
        let observer = Observer::attach_behind("vx0", node.dp.paths());
        let peer = Tap::open("under_peer");
        let upstream = Tap::open("upstream0");

        // Genuine copies: from pod A's node, with its identity as VNI.
        let controls =
            tagged_frames_between_controls(&node, &observer, &upstream, "the uplink", |inner| {
                peer.send(&vxlan_packet(
                    (REMOTE_GW_MAC, REMOTE_GW),
                    (node.under_mac, THIS_NODE),
                    ID_A,
                    inner,
                ))
            });
        for (sent, out) in &controls {
            assert_emitted(&node, sent, out);
        }
        assert_eq!(
            node.counted(Role::Gateway).0,
            controls.len() as u64,
            "the controls only"
        );
        assert_eq!(
            node.drops(),
            "",
            "nothing dropped: tagged frames are not ours"
        );
    }
);

// --- GSO (segments checked against the uplink MTU) ------------------------------

/// A payload of `segments` segments of `gso_size` bytes, each starting
/// with a marker naming the stream and the segment.
fn gso_payload(stream: &str, segments: usize, gso_size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(segments * gso_size);
    for s in 0..segments {
        let mut seg = marker(&format!("{stream} segment {s}"));
        seg.extend((seg.len()..gso_size).map(|i| (i * 7 + s) as u8));
        p.extend_from_slice(&seg);
    }
    p
}

/// Whether `f` is an IPv4 UDP frame from pod A to `group`.
fn from_pod_a_to(f: &[u8], group: Ipv4Addr) -> bool {
    f.len() >= 42
        && View(f).ethertype() == ETH_P_IP
        && View(f).proto() == PROTO_UDP
        && View(f).saddr() == POD_A
        && View(f).daddr() == group
}

hardening_test!(gso_segments_over_the_uplink_mtu_are_mtu_exceeded, |node| {
    node.policy("232.1.0.0/16", Gateway::Node(THIS_NODE), THIS_NODE);
    node.dp
        .attach("lxc_a", Program::FromContainer)
        .expect("attach");
    // A link whose two ends agree on 1200, below the pod's 1450.
    for dev in ["uplink0", "upstream0"] {
        sh("ip", &["link", "set", dev, "mtu", "1200"]);
    }
    // AF_PACKET taps see an skb as tcx does, before any segmentation.
    let at_hook = Tap::open("lxc_a");
    let upstream = Tap::open("upstream0");
    let hdr = 14 + 20 + 8;

    // Three segments of 1300 bytes: 1328-byte IP packets, each over 1200,
    // though each fits the pod's MTU, so the pod's kernel sends them.
    let over = gso_payload("over", 3, 1300);
    node.pod_send(GROUP, over.clone(), Some(1300));
    let f = at_hook
        .recv_matching(WAIT, |f| from_pod_a_to(f, GROUP))
        .expect("the pod's datagram at the hook");
    assert_eq!(
        f.len(),
        hdr + over.len(),
        "one GSO packet reached our hook, larger than any MTU on the way"
    );
    common::wait_for("the mtu_exceeded drop", WAIT, || {
        node.dropped(Role::Gateway, DropReason::MTU_EXCEEDED).0 > 0
    });
    assert_eq!(
        node.dropped(Role::Gateway, DropReason::MTU_EXCEEDED),
        (1, (hdr + over.len()) as u64),
        "the GSO packet, counted once with all its bytes; drops: {}",
        node.drops()
    );
    assert_eq!(node.counted(Role::Gateway), (0, 0), "nothing emitted");
    assert_eq!(node.counted(Role::Origin), (0, 0), "nothing sent on");

    // A datagram behind it that fits: it arrives, and nothing of the
    // dropped one came before it.
    let after = marker("after the oversized GSO packet");
    node.pod_send(GROUP, after.clone(), None);
    let seen = frames_until(&upstream, &after, "the datagram after it");
    let leaked: Vec<_> = (0..3)
        .map(|s| (s, marker(&format!("over segment {s}"))))
        .collect();
    for f in &seen {
        for (s, m) in &leaked {
            assert!(!contains(f, m), "segment {s} left the uplink: {f:02x?}");
        }
    }
    let after_len = (hdr + after.len()) as u64;
    assert_eq!(node.counted(Role::Gateway), (1, after_len));

    // Positive control, same run: segments of 1000 bytes fit the uplink.
    // Each segment arrives as a datagram of its own, rewritten, with
    // checksums computed for it, and is counted as one.
    let fits = gso_payload("fits", 3, 1000);
    node.pod_send(GROUP, fits.clone(), Some(1000));
    let f = at_hook
        .recv_matching(WAIT, |f| from_pod_a_to(f, GROUP) && f.len() > 1500)
        .expect("the second GSO packet at the hook");
    assert_eq!(f.len(), hdr + fits.len(), "one GSO packet at the hook");
    for s in 0..3 {
        let seg = &fits[s * 1000..(s + 1) * 1000];
        let out = upstream
            .recv_matching(WAIT, |f| contains(f, &marker(&format!("fits segment {s}"))))
            .unwrap_or_else(|| panic!("segment {s} upstream; drops: {}", node.drops()));
        let v = View(&out);
        assert_eq!(out.len(), hdr + 1000, "segment {s}: its own frame");
        assert_eq!(v.saddr(), EGRESS_IP, "segment {s}: source");
        assert_eq!(v.ttl(), 7, "segment {s}: TTL");
        assert_eq!(v.dst_mac(), group_mac(GROUP), "segment {s}: group MAC");
        assert!(v.ipv4_checksum_ok(), "segment {s}: IPv4 checksum");
        assert!(v.udp_checksum_ok(), "segment {s}: UDP checksum");
        assert_eq!(&v.udp()[8..], seg, "segment {s}: payload");
    }
    assert_eq!(
        node.counted(Role::Gateway),
        (1 + 3, after_len + (3 * hdr + fits.len()) as u64),
        "the GSO packet counted as the three frames it is on the wire"
    );
    assert_eq!(
        node.dropped(Role::Gateway, DropReason::MTU_EXCEEDED).0,
        1,
        "no further drop"
    );
});

// --- the underlay: forged senders, a node with two addresses --------------------

hardening_test!(gateway_lets_out_only_the_genuine_copy, |node| {
    node.policy("232.1.0.0/16", Gateway::Node(THIS_NODE), REMOTE_GW);
    node.dp.attach("vx0", Program::FromOverlay).expect("attach");
    let observer = Observer::attach_behind("vx0", node.dp.paths());
    let peer = Tap::open("under_peer");
    let upstream = Tap::open("upstream0");
    let copy = |from: Ipv4Addr, vni: u32, what: &str| {
        vxlan_packet(
            (REMOTE_GW_MAC, from),
            (node.under_mac, THIS_NODE),
            vni,
            &node.pod_frame(GROUP, &marker(what)).bytes(),
        )
    };
    let forged = [
        ("from a host that is not a node", STRANGER, ID_A),
        ("from pod A's node with another identity", REMOTE_GW, ID_B),
        ("from another node with pod A's identity", OTHER_NODE, ID_A),
    ];
    for (what, from, vni) in forged {
        peer.send(&copy(from, vni, what));
    }
    common::wait_for("the forged copies' drops", WAIT, || {
        node.dropped(Role::Gateway, DropReason::UNKNOWN_PEER).0
            + node.dropped(Role::Gateway, DropReason::ORIGIN_MISMATCH).0
            == 3
    });
    peer.send(&copy(REMOTE_GW, ID_A, "genuine"));
    let seen = frames_until(&upstream, &marker("genuine"), "the genuine copy");
    let markers: Vec<_> = forged.iter().map(|(w, _, _)| (*w, marker(w))).collect();
    assert_none_carries(&seen, &markers, "the uplink");
    assert_emitted(
        &node,
        &node.pod_frame(GROUP, &marker("genuine")),
        seen.last().expect("frame"),
    );
    assert_eq!(
        node.dropped(Role::Gateway, DropReason::UNKNOWN_PEER).0,
        1,
        "drops: {}",
        node.drops()
    );
    assert_eq!(
        node.dropped(Role::Gateway, DropReason::ORIGIN_MISMATCH).0,
        2,
        "drops: {}",
        node.drops()
    );
    assert_eq!(node.counted(Role::Gateway).0, 1, "the genuine copy only");
    assert_eq!(observer.count(), 0, "nothing handed on to Cilium either");
});

hardening_test!(
    gateway_drops_copies_it_does_not_serve_instead_of_handing_them_on,
    |node| {
        // Pod A on REMOTE_GW's node: 232.1.0.0/16 through here, but
        // 232.1.255.0/24, which this gateway must enforce itself.
        node.policy("232.1.0.0/16", Gateway::Node(THIS_NODE), REMOTE_GW);
        node.policy("232.1.255.0/24", Gateway::Excluded, REMOTE_GW);
        node.dp.attach("vx0", Program::FromOverlay).expect("attach");
        let observer = Observer::attach_behind("vx0", node.dp.paths());
        let peer = Tap::open("under_peer");
        let upstream = Tap::open("upstream0");
        let copy = |from: Ipv4Addr, group: Ipv4Addr, what: &str| {
            vxlan_packet(
                (REMOTE_GW_MAC, from),
                (node.under_mac, THIS_NODE),
                ID_A,
                &node.pod_frame(group, &marker(what)).bytes(),
            )
        };
        let excluded = Ipv4Addr::new(232, 1, 255, 7);
        let uncovered = Ipv4Addr::new(232, 9, 9, 9);
        let refused = [
            (
                "excluded, from pod A's node",
                REMOTE_GW,
                excluded,
                DropReason::EXCLUDED,
            ),
            (
                "uncovered, from pod A's node",
                REMOTE_GW,
                uncovered,
                DropReason::NO_POLICY,
            ),
            (
                "uncovered, from a stranger",
                STRANGER,
                uncovered,
                DropReason::UNKNOWN_PEER,
            ),
        ];
        for (what, from, group, reason) in refused {
            peer.send(&copy(from, group, what));
            common::wait_for(what, WAIT, || node.dropped(Role::Gateway, reason).0 == 1);
        }
        peer.send(&copy(REMOTE_GW, GROUP, "covered"));
        let seen = frames_until(&upstream, &marker("covered"), "the covered copy");
        let markers: Vec<_> = refused.iter().map(|(w, ..)| (*w, marker(w))).collect();
        assert_none_carries(&seen, &markers, "the uplink");
        assert_eq!(node.counted(Role::Gateway).0, 1, "the covered copy only");
        // Refused copies are dropped, not handed to Cilium: its local
        // subscribers must not get what the gateway refused either.
        assert_eq!(observer.count(), 0, "nothing handed on");
    }
);

hardening_test!(
    origin_tunnels_from_the_node_ip_on_a_multi_homed_underlay,
    |node| {
        node.policy("232.1.0.0/16", Gateway::Node(REMOTE_GW), THIS_NODE);
        node.dp
            .attach("lxc_a", Program::FromContainer)
            .expect("attach");
        // A second address on the underlay NIC, and a route to the gateway
        // that prefers it as source.
        let other = "192.0.2.40";
        sh(
            "ip",
            &["addr", "add", &format!("{other}/24"), "dev", "under0"],
        );
        sh(
            "ip",
            &[
                "route",
                "add",
                &format!("{REMOTE_GW}/32"),
                "dev",
                "under0",
                "src",
                other,
            ],
        );
        let route = sh("ip", &["-o", "route", "get", &REMOTE_GW.to_string()]);
        assert!(
            route.contains(&format!("src {other}")),
            "left to the kernel, the source towards the gateway is {other}: {route}"
        );
        let underlay = Tap::open("under_peer");
        let payload = marker("from a multi-homed node");
        node.pod_send(GROUP, payload.clone(), None);
        let outer = underlay
            .recv_matching(WAIT, |f| is_vxlan(f) && contains(f, &payload))
            .unwrap_or_else(|| panic!("the copy on the underlay; drops: {}", node.drops()));
        let v = View(&outer);
        assert_eq!(
            v.saddr(),
            THIS_NODE,
            "outer source: the node IP the gateway checks copies against"
        );
        assert_eq!(v.daddr(), REMOTE_GW, "outer destination");
        assert_eq!(vni_of(&outer), ID_A, "VNI");
        assert!(v.ipv4_checksum_ok(), "outer IPv4 checksum");
        assert_eq!(node.counted(Role::Origin).0, 1);
    }
);
