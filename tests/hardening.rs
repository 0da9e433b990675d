//! The datapath's hardening on the real path, where the kernel shapes the
//! packets and BPF_PROG_RUN cannot: VLAN tags the kernel moves into the skb
//! before tcx runs, GSO packets from a pod's socket, VXLAN received by a
//! real collect-md device from forged or genuine senders, a node whose
//! underlay NIC has two addresses, and frames a pod with CAP_NET_RAW
//! crafts (IPv6 hop-by-hop options, fragment and authentication headers,
//! destination MACs that are not the group's). The production programs are
//! attached with tcx and what reaches the wire is captured on the far side
//! of each device. Needs root; each test has its own network namespace and
//! BPF filesystem.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use cilium_mcast_egress::datapath::maps::{
    Config, DropReason, EgressIface, Endpoint, Family, Gateway, Origin, PolicyKey6, PolicyValue6,
    Role,
};
use cilium_mcast_egress::datapath::{Datapath, Maps, Program};
use common::addr::*;
use common::forge::{contains, marker, vlan_tagged, vxlan_packet, TPID_8021AD, TPID_8021Q};
use common::observer::Observer;
use common::packet::{
    group_mac, group_mac6, Ext, Frame, Frame6, View, View6, ETH_P_IP, ETH_P_IPV6, NEXTHDR_AUTH,
    NEXTHDR_FRAGMENT, NEXTHDR_HOP, PROTO_UDP,
};
use common::{ifindex, mac_of, sh, Bpffs, PodNs, Tap};

const ID_A: u32 = 12345;
const ID_B: u32 = 23456;
const POLICY_ID: u32 = 9;
/// Pod A's IPv6 address (dual-stack), the egress IPv6 and the IPv6 groups:
/// documentation and SSM ranges.
const POD_A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x11);
const EGRESS_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0, 0, 0, 0, 0x10);
const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 1);
/// Groups the same policies cover, whose MACs are not GROUP's and GROUP6's.
const GROUP_B: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 2);
const GROUP6_B: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 2);
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
/// `lxc_a` (pod side `pod_a`, MTU 1450, 198.51.100.11 and, in the maps
/// only, 2001:db8:100::11), an uplink `uplink0` whose far side `upstream0`
/// stands for the upstream network, and a collect-md VXLAN device `vx0`
/// over the underlay NIC `under0` (192.0.2.10/24, far side `under_peer`). The production datapath is
/// loaded and configured for pod A; each test attaches what it needs.
struct Node {
    dp: Datapath<'static>,
    maps: Maps,
    pod: PodNs,
    uplink: u32,
    uplink_mac: [u8; 6],
    under_mac: [u8; 6],
    pod_mac: [u8; 6],
    /// The node's end of the pod's veth, the MAC the pod's unicast goes to.
    lxc_mac: [u8; 6],
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
        let pod_a = Endpoint {
            ifindex: ifindex("lxc_a"),
            identity: ID_A,
        };
        maps.endpoint_insert(POD_A, &pod_a).expect("endpoint");
        maps.endpoints_v6
            .put(&POD_A6, &pod_a)
            .expect("IPv6 endpoint");
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
            lxc_mac: mac_of("lxc_a"),
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

    /// Pod A's IPv6 entry for `dest`, as [`Node::policy`].
    fn policy6(&self, dest: &str, gateway: Gateway, origin_node: Ipv4Addr) {
        let here = gateway == Gateway::Node(THIS_NODE);
        let key = PolicyKey6 {
            source: POD_A6,
            destination: dest.parse().expect("IPv6 CIDR"),
        };
        let value = PolicyValue6 {
            egress_ip: if here {
                EGRESS_IP6
            } else {
                Ipv6Addr::UNSPECIFIED
            },
            gateway,
            egress_ifindex: if here { self.uplink } else { 0 },
            policy_id: POLICY_ID,
            origin: Origin {
                node: origin_node,
                identity: ID_A,
            },
        };
        self.maps.policy_insert(&key, &value).expect("IPv6 policy");
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

    /// An IPv6 UDP datagram from pod A to `group` as its kernel would
    /// frame it (hop limit 8).
    fn pod_frame6(&self, group: Ipv6Addr, payload: &[u8]) -> Frame6 {
        let mut f = Frame6::udp(POD_A6, group, payload);
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

    /// Every drop counted, of either family, as (packets, bytes) by
    /// "family/role/reason".
    fn drop_table(&self) -> BTreeMap<String, (u64, u64)> {
        self.maps
            .drops()
            .expect("drops")
            .iter()
            .filter(|d| d.packets > 0)
            .map(|d| (drop_label(d.family, d.role, d.reason), (d.packets, d.bytes)))
            .collect()
    }

    /// Every drop counted, as "family/role/reason=packets", for messages.
    fn drops(&self) -> String {
        self.drop_table()
            .iter()
            .map(|(label, (packets, _))| format!("{label}={packets}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How [`Node::drop_table`] names a drop counter.
fn drop_label(family: Family, role: Role, reason: DropReason) -> String {
    format!("{}/{}/{}", family.label(), role.label(), reason.label())
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

// --- what a pod with CAP_NET_RAW crafts: judged as a router would ----------------

/// What became of one frame the pod sent: the drop counted for it
/// ("family/role/reason"), "sent on" once the origin counted it as sent,
/// "handed on" once the observer behind our program had it, or
/// "undecided" when none of these showed within [`WAIT`].
fn fate(node: &Node, observer: &Observer, pod: &Tap, frame: &[u8]) -> String {
    let drops = node.drop_table();
    let sent = node.counted(Role::Origin).0;
    let handed_on = observer.count();
    pod.send(frame);
    let deadline = Instant::now() + WAIT;
    loop {
        if node.counted(Role::Origin).0 > sent {
            return "sent on".into();
        }
        if observer.count() > handed_on {
            return "handed on".into();
        }
        let now = node.drop_table();
        if now != drops {
            return now
                .iter()
                .filter(|(label, n)| drops.get(*label) != Some(n))
                .map(|(label, _)| label.clone())
                .collect::<Vec<_>>()
                .join(" ");
        }
        if Instant::now() >= deadline {
            return "undecided".into();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A datagram from pod A of either family, as the builder describes it,
/// so that one test walks both.
#[derive(Debug, Clone)]
enum PodDatagram {
    V4(Frame),
    V6(Frame6),
}

impl PodDatagram {
    fn bytes(&self) -> Vec<u8> {
        match self {
            PodDatagram::V4(f) => f.bytes(),
            PodDatagram::V6(f) => f.bytes(),
        }
    }

    /// The same datagram sent to the Ethernet address `mac`.
    fn to_mac(&self, mac: [u8; 6]) -> PodDatagram {
        let mut d = self.clone();
        match &mut d {
            PodDatagram::V4(f) => f.dst_mac = mac,
            PodDatagram::V6(f) => f.dst_mac = mac,
        }
        d
    }

    /// `out` is this datagram as the local gateway emits it.
    fn assert_emitted(&self, node: &Node, out: &[u8]) {
        match self {
            PodDatagram::V4(f) => assert_emitted(node, f, out),
            PodDatagram::V6(f) => assert_emitted6(node, f, out),
        }
    }
}

/// A frame the pod sends, named: its payload carries `marker(name)`.
struct Named {
    name: String,
    bytes: Vec<u8>,
}

impl Named {
    fn new(name: &str, bytes: Vec<u8>) -> Named {
        Named {
            name: name.to_string(),
            bytes,
        }
    }
}

/// The frames in `refused` go out of the pod one by one, each once the
/// last was decided on, then the `controls`, each until it reaches
/// `capture`. Nothing `capture` sees up to the last control may carry a
/// refused frame's marker, in any form. Returns each refused frame's
/// [`fate`] and what `capture` got of each control.
fn refused_then_controls(
    node: &Node,
    observer: &Observer,
    capture: &Tap,
    place: &str,
    refused: &[Named],
    controls: &[Named],
) -> (Vec<(String, String)>, Vec<Vec<u8>>) {
    let pod = node.pod_tap();
    let fates = refused
        .iter()
        .map(|f| (f.name.clone(), fate(node, observer, &pod, &f.bytes)))
        .collect();
    let markers: Vec<_> = refused
        .iter()
        .map(|f| (f.name.as_str(), marker(&f.name)))
        .collect();
    let mut got = Vec::new();
    for c in controls {
        pod.send(&c.bytes);
        let seen = frames_until(capture, &marker(&c.name), &c.name);
        assert_none_carries(&seen, &markers, place);
        got.push(seen.last().expect("frame").clone());
    }
    (fates, got)
}

/// The drop counters the fates `want` add up to: packets and bytes by
/// label.
fn drops_of(refused: &[Named], want: &[(String, String)]) -> BTreeMap<String, (u64, u64)> {
    let mut table = BTreeMap::new();
    for (f, (_, label)) in refused.iter().zip(want) {
        let e: &mut (u64, u64) = table.entry(label.clone()).or_default();
        e.0 += 1;
        e.1 += f.bytes.len() as u64;
    }
    table
}

/// After [`refused_then_controls`]: each refused frame met its fate in
/// `want` (a drop counter's label); the drop counters hold exactly the
/// refused frames' packets and bytes; only the controls were counted as
/// sent in `role` (Gateway: emitted on the uplink; Origin: tunnelled); and
/// nothing was handed on to Cilium either.
fn assert_refused_and_counted(
    node: &Node,
    observer: &Observer,
    (refused, want): (&[Named], Vec<(String, String)>),
    fates: Vec<(String, String)>,
    (controls, role): (&[Named], Role),
) {
    assert_eq!(fates, want, "what became of each refused frame");
    assert_eq!(
        node.drop_table(),
        drops_of(refused, &want),
        "the drop counters: the refused frames', nothing else"
    );
    let bytes = controls.iter().map(|c| c.bytes.len() as u64).sum();
    assert_eq!(
        node.counted(role),
        (controls.len() as u64, bytes),
        "the controls only"
    );
    assert_eq!(observer.count(), 0, "nothing handed on to Cilium");
}

/// `out` is `sent` as the gateway emits it: egress IPv6, hop limit - 1,
/// group and uplink MACs, a valid UDP checksum when `out` is a whole
/// datagram, every other byte (extension headers included) unchanged.
fn assert_emitted6(node: &Node, sent: &Frame6, out: &[u8]) {
    let v = View6(out);
    assert_eq!(v.ethertype(), ETH_P_IPV6, "IPv6: {out:02x?}");
    assert_eq!(v.saddr(), EGRESS_IP6, "source rewritten to the egress IPv6");
    assert_eq!(v.hop_limit(), sent.hop_limit - 1, "hop limit decremented");
    assert_eq!(v.dst_mac(), group_mac6(sent.daddr), "RFC 2464 group MAC");
    assert_eq!(v.src_mac(), node.uplink_mac, "uplink MAC");
    let whole = sent.ext.iter().all(|e| e.kind != NEXTHDR_FRAGMENT)
        && sent
            .frag
            .as_ref()
            .is_none_or(|(_, s, e)| *s == 0 && *e == 8 + sent.payload.len());
    if sent.proto == PROTO_UDP && whole {
        assert!(v.udp_checksum_ok(sent.l4_off()), "UDP checksum");
    }
    assert_eq!(
        out,
        sent.as_emitted(EGRESS_IP6, node.uplink_mac).bytes(),
        "every byte as a router would send it"
    );
}

/// A covered IPv6 datagram from pod A to GROUP6 whose payload is the
/// marker of `name`, behind the extension headers `ext`.
fn datagram6(node: &Node, name: &str, ext: Vec<Ext>) -> Frame6 {
    let mut f = node.pod_frame6(GROUP6, &marker(name));
    f.ext = ext;
    f
}

/// The origin program on lxc_a, and an observer behind it where Cilium's
/// programs would be.
fn attach_origin(node: &Node) -> Observer {
    node.dp
        .attach("lxc_a", Program::FromContainer)
        .expect("attach");
    Observer::attach_behind("lxc_a", node.dp.paths())
}

/// Named IPv6 frames, each with the drop it must meet, and named controls
/// that must leave: one run of [`refused_then_controls`] with this node as
/// pod A's IPv6 gateway, every outcome checked.
fn refused6_then_controls(
    node: &Node,
    refused: Vec<(String, Frame6, DropReason)>,
    controls: Vec<(String, Frame6)>,
) {
    node.policy6("ff3e::/16", Gateway::Node(THIS_NODE), THIS_NODE);
    let observer = attach_origin(node);
    let upstream = Tap::open("upstream0");
    let want = refused
        .iter()
        .map(|(name, _, reason)| {
            (
                name.clone(),
                drop_label(Family::Ipv6, Role::Origin, *reason),
            )
        })
        .collect();
    let refused: Vec<Named> = refused
        .iter()
        .map(|(name, f, _)| Named::new(name, f.bytes()))
        .collect();
    let named: Vec<Named> = controls
        .iter()
        .map(|(name, f)| Named::new(name, f.bytes()))
        .collect();
    let (fates, got) =
        refused_then_controls(node, &observer, &upstream, "the uplink", &refused, &named);
    for ((_, sent), out) in controls.iter().zip(&got) {
        assert_emitted6(node, sent, out);
    }
    assert_refused_and_counted(
        node,
        &observer,
        (&refused, want),
        fates,
        (&named, Role::Gateway),
    );
}

// Hop-by-hop options: only padding and Router Alert, as ip6_parse_tlv()
// and ipv6_hop_ra() accept them (RFC 8200 4.2, RFC 2711, RFC 4942 2.1.9.5).

/// A hop-by-hop header holding `options`, which with the next header and
/// length bytes fill it to a multiple of 8 bytes.
fn hbh(options: &[u8]) -> Ext {
    let len = 2 + options.len();
    assert_eq!(len % 8, 0, "options fill the header: {options:02x?}");
    let mut body = vec![(len / 8 - 1) as u8];
    body.extend_from_slice(options);
    Ext {
        kind: NEXTHDR_HOP,
        body,
    }
}

/// Option bytes for `n` Router Alerts (RFC 2711, value 0).
fn router_alerts(n: usize) -> Vec<u8> {
    [0x05, 0x02, 0x00, 0x00].repeat(n)
}

hardening_test!(hop_by_hop_options_a_router_refuses_never_leave, |node| {
    let unknown = |t: u8| [t, 0x02, 0xaa, 0xbb, 0x01, 0x00].to_vec();
    let refused_options: Vec<(&str, Vec<u8>)> = vec![
        ("unknown option 0x1e, action 00 (skip)", unknown(0x1e)),
        ("unknown option 0x5e, action 01 (discard)", unknown(0x5e)),
        (
            "unknown option 0x9e, action 10 (discard, ICMP)",
            unknown(0x9e),
        ),
        (
            "unknown option 0xde, action 11 (discard, ICMP unless multicast)",
            unknown(0xde),
        ),
        (
            "Jumbo Payload with a payload length that is not 0",
            vec![0xc2, 0x04, 0x00, 0x00, 0x05, 0xdc],
        ),
        (
            "Jumbo Payload of length 2",
            vec![0xc2, 0x02, 0x05, 0xdc, 0x01, 0x00],
        ),
        (
            "Jumbo Payload of length 6",
            vec![
                0xc2, 0x06, 0x00, 0x00, 0x00, 0x00, 0x05, 0xdc, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00,
            ],
        ),
        (
            "Router Alert of length 0",
            vec![0x05, 0x00, 0x01, 0x02, 0x00, 0x00],
        ),
        (
            "Router Alert of length 1",
            vec![0x05, 0x01, 0x00, 0x01, 0x01, 0x00],
        ),
        (
            "Router Alert of length 3",
            vec![0x05, 0x03, 0x00, 0x00, 0x00, 0x00],
        ),
        (
            "Router Alert of length 4",
            vec![0x05, 0x04, 0x00, 0x00, 0x00, 0x00],
        ),
        (
            "PadN with a byte that is not 0",
            vec![0x01, 0x04, 0x00, 0x00, 0x01, 0x00],
        ),
        ("eight Pad1 in a row", {
            let mut o = vec![0x00; 8];
            o.extend_from_slice(&router_alerts(1));
            o.extend_from_slice(&[0x00, 0x00]);
            o
        }),
        ("one PadN of eight bytes", {
            let mut o = vec![0x01, 0x06, 0, 0, 0, 0, 0, 0];
            o.extend_from_slice(&router_alerts(1));
            o.extend_from_slice(&[0x00, 0x00]);
            o
        }),
        ("Pad1 and PadN, eight bytes in a row", {
            let mut o = vec![0x00, 0x01, 0x05, 0, 0, 0, 0, 0];
            o.extend_from_slice(&router_alerts(1));
            o.extend_from_slice(&[0x00, 0x00]);
            o
        }),
        (
            "PadN running past the header",
            vec![0x05, 0x02, 0x00, 0x00, 0x01, 0x05],
        ),
        (
            "Router Alert running past the header",
            vec![0x01, 0x00, 0x01, 0x00, 0x05, 0x02],
        ),
        (
            "an option type in the header's last byte",
            vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x05],
        ),
        (
            "nine Router Alerts",
            [router_alerts(9), vec![0x01, 0x00]].concat(),
        ),
        (
            // RFC 5570: DOI 1, no compartments, sensitivity 1, and the
            // CRC-16 as Linux's calipso_genopt() writes it.
            "CALIPSO",
            vec![
                0x07, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0xdf, 0x89, 0x01, 0x02, 0x00, 0x00,
            ],
        ),
        (
            // RFC 9486: pre-allocated trace, namespace 1, 4-byte node data,
            // hop limit and node id traced, no room left.
            "IOAM",
            vec![
                0x31, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x80, 0x00, 0x00, 0x00, 0x01, 0x00,
            ],
        ),
    ];
    let carried_options: Vec<(&str, Vec<u8>)> = vec![
        (
            "Router Alert and PadN, as MLD sends it",
            Ext::hop_by_hop().body[1..].to_vec(),
        ),
        ("six Pad1", vec![0x00; 6]),
        ("seven Pad1 in a row", {
            let mut o = vec![0x00; 7];
            o.extend_from_slice(&router_alerts(1));
            o.extend_from_slice(&[0x01, 0x01, 0x00]);
            o
        }),
        (
            "eight Router Alerts",
            [router_alerts(8), vec![0x01, 0x04, 0, 0, 0, 0]].concat(),
        ),
        (
            "Router Alert of value 0xabcd",
            vec![0x05, 0x02, 0xab, 0xcd, 0x01, 0x00],
        ),
        (
            "eight Router Alerts behind seven bytes of padding each: 96 bytes",
            {
                let pad7 = [0x01, 0x05, 0, 0, 0, 0, 0];
                let mut o = Vec::new();
                for _ in 0..8 {
                    o.extend_from_slice(&pad7);
                    o.extend_from_slice(&router_alerts(1));
                }
                o.extend_from_slice(&[0x01, 0x04, 0, 0, 0, 0]);
                o
            },
        ),
    ];
    let refused = refused_options
        .iter()
        .map(|(name, o)| {
            let f = datagram6(&node, name, vec![hbh(o)]);
            (name.to_string(), f, DropReason::MALFORMED)
        })
        .collect();
    let controls: Vec<_> = carried_options
        .iter()
        .map(|(name, o)| (name.to_string(), datagram6(&node, name, vec![hbh(o)])))
        .collect();
    assert_eq!(
        controls.last().expect("the longest").1.ext[0].len(),
        96,
        "the longest header of what we accept"
    );
    refused6_then_controls(&node, refused, controls);
});

// The extension-header walk: a fragment header with a non-zero offset ends
// it (what follows is payload, RFC 8200 4.5), and there is one fragment
// header at most (4.1).

hardening_test!(a_later_fragment_is_the_protocol_its_header_names, |node| {
    // Behind each later fragment's header, bytes that read as headers and
    // a UDP datagram: a walk that went on would find UDP and emit it.
    let later = |more| Ext::fragment(100, more, 0xbeef);
    let refused: Vec<(&str, Vec<Ext>, DropReason)> = vec![
        (
            "a later fragment naming destination options, one and UDP behind",
            vec![later(true), Ext::dest_opts(1)],
            DropReason::UNSUPPORTED_PROTOCOL,
        ),
        (
            "the last fragment naming destination options, one and UDP behind",
            vec![later(false), Ext::dest_opts(2)],
            DropReason::UNSUPPORTED_PROTOCOL,
        ),
        (
            "a later fragment naming routing, one and UDP behind",
            vec![later(true), Ext::routing(0)],
            DropReason::UNSUPPORTED_PROTOCOL,
        ),
        (
            "a later fragment naming hop-by-hop, one and UDP behind",
            vec![later(true), Ext::hop_by_hop()],
            DropReason::UNSUPPORTED_PROTOCOL,
        ),
        (
            "a later fragment naming a fragment header, an atomic one and UDP behind",
            vec![later(true), Ext::fragment(0, false, 0xbeef)],
            DropReason::UNSUPPORTED_PROTOCOL,
        ),
        (
            "two atomic fragment headers",
            vec![
                Ext::fragment(0, false, 0xbeef),
                Ext::fragment(0, false, 0xbeef),
            ],
            DropReason::MALFORMED,
        ),
        (
            "a first fragment's header, then a later one's",
            vec![Ext::fragment(0, true, 0xbeef), later(true)],
            DropReason::MALFORMED,
        ),
        (
            "fragment headers around destination options",
            vec![
                Ext::fragment(0, true, 0xbeef),
                Ext::dest_opts(1),
                Ext::fragment(0, false, 0xbeef),
            ],
            DropReason::MALFORMED,
        ),
    ];
    let refused = refused
        .into_iter()
        .map(|(name, ext, reason)| (name.to_string(), datagram6(&node, name, ext), reason))
        .collect();
    // Datagrams of 400 bytes of payload, the marker first.
    let datagram = |name: &str| {
        let mut payload = marker(name);
        payload.resize(400, 0x5a);
        node.pod_frame6(GROUP6, &payload)
            .ext(Ext::hop_by_hop())
            .hop_limit(9)
    };
    let controls = [
        (
            "a later fragment naming UDP",
            datagram("a later fragment naming UDP").fragment(8, 8 + 400),
        ),
        (
            "a later fragment naming UDP, more to come",
            datagram("a later fragment naming UDP, more to come").fragment(8, 8 + 200),
        ),
        (
            "a first fragment",
            datagram("a first fragment").fragment(0, 64),
        ),
        (
            "an atomic fragment",
            datagram("an atomic fragment").atomic_fragment(),
        ),
    ];
    let controls = controls
        .into_iter()
        .map(|(name, f)| (name.to_string(), f))
        .collect();
    refused6_then_controls(&node, refused, controls);
});

// AH (RFC 4302): the rewritten source breaks it at every receiver, so a
// packet with AH is an AH packet, not UDP, wherever the AH sits.

hardening_test!(authentication_headers_never_leave, |node| {
    let refused: Vec<(&str, Vec<Ext>)> = vec![
        ("AH, UDP behind", vec![Ext::auth()]),
        (
            "hop-by-hop, AH, destination options, UDP behind",
            vec![Ext::hop_by_hop(), Ext::auth(), Ext::dest_opts(2)],
        ),
        (
            "destination options, routing, AH, UDP behind",
            vec![Ext::dest_opts(1), Ext::routing(0), Ext::auth()],
        ),
        (
            "the first fragment of an AH datagram",
            vec![Ext::fragment(0, true, 0xbeef), Ext::auth()],
        ),
        (
            "an atomic fragment of an AH datagram",
            vec![Ext::fragment(0, false, 0xbeef), Ext::auth()],
        ),
        (
            "a later fragment naming AH, one and UDP behind",
            vec![Ext::fragment(100, true, 0xbeef), Ext::auth()],
        ),
    ];
    let mut refused: Vec<_> = refused
        .into_iter()
        .map(|(name, ext)| {
            let f = datagram6(&node, name, ext);
            (name.to_string(), f, DropReason::UNSUPPORTED_PROTOCOL)
        })
        .collect();
    // A later fragment naming AH, with bytes behind that are no header.
    let name = "a later fragment naming AH, anything behind";
    refused.push((
        name.to_string(),
        datagram6(&node, name, vec![Ext::fragment(100, false, 0xbeef)]).proto(NEXTHDR_AUTH),
        DropReason::UNSUPPORTED_PROTOCOL,
    ));
    let controls = [
        ("UDP alone", vec![]),
        (
            "UDP behind hop-by-hop and destination options",
            vec![Ext::hop_by_hop(), Ext::dest_opts(1)],
        ),
    ];
    let controls = controls
        .into_iter()
        .map(|(name, ext)| (name.to_string(), datagram6(&node, name, ext)))
        .collect();
    refused6_then_controls(&node, refused, controls);
});

// The destination MAC: a pod's covered datagram must be sent to its
// group's own (RFC 1112 6.4, RFC 2464 7), as its kernel sends it.

/// Pod A's datagram of `family` to its group (GROUP, GROUP6), payload
/// `payload`, sent to the group's MAC.
fn pod_datagram(node: &Node, family: Family, payload: &[u8]) -> PodDatagram {
    match family {
        Family::Ipv4 => PodDatagram::V4(node.pod_frame(GROUP, payload)),
        Family::Ipv6 => PodDatagram::V6(node.pod_frame6(GROUP6, payload)),
    }
}

/// Destination MACs a covered datagram of `family` from pod A may not
/// carry, named: none is the group's.
fn wrong_macs(node: &Node, family: Family) -> Vec<(&'static str, [u8; 6])> {
    let (own, other_group, other_family) = match family {
        Family::Ipv4 => {
            let o = GROUP.octets();
            (
                group_mac(GROUP),
                group_mac(GROUP_B),
                [0x33, 0x33, o[0], o[1], o[2], o[3]],
            )
        }
        Family::Ipv6 => {
            let o = GROUP6.octets();
            (
                group_mac6(GROUP6),
                group_mac6(GROUP6_B),
                [0x01, 0x00, 0x5e, o[13] & 0x7f, o[14], o[15]],
            )
        }
    };
    let mut unicast = own;
    unicast[0] &= !1;
    let mut macs = vec![
        ("another host's unicast MAC", common::packet::HOST_MAC),
        ("the node's MAC on the pod's veth", node.lxc_mac),
        ("broadcast", [0xff; 6]),
        ("another group's MAC", other_group),
        ("the other family's MAC for the group", other_family),
        ("the group's MAC with the I/G bit clear: unicast", unicast),
    ];
    if family == Family::Ipv4 {
        // RFC 1112 puts a 0 bit between 01:00:5e and the group's 23 bits.
        let mut high = own;
        high[3] |= 0x80;
        macs.push(("the group's MAC with the bit above its 23 set", high));
    }
    assert!(macs.iter().all(|(_, m)| *m != own), "{macs:02x?}");
    macs
}

/// For both families, pod A's covered datagrams: to each of
/// [`wrong_macs`], with the drop each must meet in `role`, and to the
/// group's own MAC, the controls. Names carry the family.
struct WrongMacFrames {
    refused: Vec<Named>,
    want: Vec<(String, String)>,
    controls: Vec<Named>,
    sent: Vec<PodDatagram>,
}

impl WrongMacFrames {
    fn new(node: &Node, role: Role) -> WrongMacFrames {
        let mut w = WrongMacFrames {
            refused: Vec::new(),
            want: Vec::new(),
            controls: Vec::new(),
            sent: Vec::new(),
        };
        for family in Family::ALL {
            for (what, mac) in wrong_macs(node, family) {
                let name = format!("{}: {what}", family.label());
                let d = pod_datagram(node, family, &marker(&name)).to_mac(mac);
                w.refused.push(Named::new(&name, d.bytes()));
                let reason = DropReason::DST_MAC_MISMATCH;
                w.want.push((name, drop_label(family, role, reason)));
            }
            let name = format!("{}: the group's own MAC", family.label());
            let d = pod_datagram(node, family, &marker(&name));
            w.controls.push(Named::new(&name, d.bytes()));
            w.sent.push(d);
        }
        w
    }
}

hardening_test!(frames_not_sent_to_their_groups_mac_never_leave, |node| {
    node.policy("232.1.0.0/16", Gateway::Node(THIS_NODE), THIS_NODE);
    node.policy6("ff3e::/16", Gateway::Node(THIS_NODE), THIS_NODE);
    let observer = attach_origin(&node);
    let upstream = Tap::open("upstream0");
    let w = WrongMacFrames::new(&node, Role::Origin);
    let (fates, got) = refused_then_controls(
        &node,
        &observer,
        &upstream,
        "the uplink",
        &w.refused,
        &w.controls,
    );
    for (d, out) in w.sent.iter().zip(&got) {
        d.assert_emitted(&node, out);
    }
    assert_refused_and_counted(
        &node,
        &observer,
        (&w.refused, w.want),
        fates,
        (&w.controls, Role::Gateway),
    );
});

hardening_test!(
    frames_not_sent_to_their_groups_mac_are_never_tunnelled,
    |node| {
        node.policy("232.1.0.0/16", Gateway::Node(REMOTE_GW), THIS_NODE);
        node.policy6("ff3e::/16", Gateway::Node(REMOTE_GW), THIS_NODE);
        let observer = attach_origin(&node);
        let underlay = Tap::open("under_peer");
        let w = WrongMacFrames::new(&node, Role::Origin);
        let (fates, got) = refused_then_controls(
            &node,
            &observer,
            &underlay,
            "the underlay",
            &w.refused,
            &w.controls,
        );
        for (sent, out) in w.controls.iter().zip(&got) {
            assert!(is_vxlan(out), "{}: as VXLAN: {out:02x?}", sent.name);
            let v = View(out);
            assert_eq!((v.saddr(), v.daddr()), (THIS_NODE, REMOTE_GW), "outer");
            assert_eq!(vni_of(out), ID_A, "VNI");
            assert_eq!(
                &out[50..],
                sent.bytes.as_slice(),
                "{}: the inner frame as the pod sent it",
                sent.name
            );
        }
        assert_refused_and_counted(
            &node,
            &observer,
            (&w.refused, w.want),
            fates,
            (&w.controls, Role::Origin),
        );
    }
);

hardening_test!(
    copies_not_addressed_to_their_groups_mac_never_leave_the_gateway,
    |node| {
        // Copies of pod A's datagrams from its node, with its identity,
        // as an origin that did not check the MAC (another version, or a
        // forged one) would send them: the gateway checks again.
        node.policy("232.1.0.0/16", Gateway::Node(THIS_NODE), REMOTE_GW);
        node.policy6("ff3e::/16", Gateway::Node(THIS_NODE), REMOTE_GW);
        node.dp.attach("vx0", Program::FromOverlay).expect("attach");
        let observer = Observer::attach_behind("vx0", node.dp.paths());
        let peer = Tap::open("under_peer");
        let upstream = Tap::open("upstream0");
        let w = WrongMacFrames::new(&node, Role::Gateway);
        let copy = |inner: &[u8]| {
            vxlan_packet(
                (REMOTE_GW_MAC, REMOTE_GW),
                (node.under_mac, THIS_NODE),
                ID_A,
                inner,
            )
        };
        let mut fates = Vec::new();
        for (i, f) in w.refused.iter().enumerate() {
            peer.send(&copy(&f.bytes));
            let dropped = || {
                node.drop_table()
                    .values()
                    .map(|(packets, _)| packets)
                    .sum::<u64>()
            };
            common::wait_for(&f.name, WAIT, || dropped() == i as u64 + 1);
            let label = w.want[i].1.clone();
            let got = node.drop_table().get(&label).map_or(0, |(p, _)| *p);
            let so_far = w.want[..=i].iter().filter(|(_, l)| *l == label).count();
            let fate = if got == so_far as u64 {
                label
            } else {
                node.drops()
            };
            fates.push((f.name.clone(), fate));
        }
        let markers: Vec<_> = w
            .refused
            .iter()
            .map(|f| (f.name.as_str(), marker(&f.name)))
            .collect();
        for (c, d) in w.controls.iter().zip(&w.sent) {
            peer.send(&copy(&c.bytes));
            let seen = frames_until(&upstream, &marker(&c.name), &c.name);
            assert_none_carries(&seen, &markers, "the uplink");
            d.assert_emitted(&node, seen.last().expect("frame"));
        }
        assert_refused_and_counted(
            &node,
            &observer,
            (&w.refused, w.want),
            fates,
            (&w.controls, Role::Gateway),
        );
    }
);
