//! `mcast_to_overlay`, the tunnel device's egress program, and the copy the
//! origin sends through it while Cilium keeps the original: the original is
//! handed on without any tunnel key, byte for byte as the pod sent it, and
//! the copy leaves with ours; everything else the tunnel device sends passes
//! untouched. Real devices (a pod namespace, a collect-md VXLAN device over
//! a veth underlay), the production programs attached with tcx, and a test
//! observer behind ours where Cilium's programs would be. Needs root.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use cilium_mcast_egress::bpf_intf::{
    mcast_tunnel_pending, MCAST_PENDING_APPLIED, MCAST_PENDING_ARMED, MCAST_PENDING_IDLE,
};
use cilium_mcast_egress::datapath::maps::{
    Config, DropReason, Endpoint, Gateway, Origin, Role, TUNNEL_PENDING_MAP,
};
use cilium_mcast_egress::datapath::tcx::tcx_egress_chain;
use cilium_mcast_egress::datapath::{ChainPosition, Datapath, Maps, Paths, Plain, Program};
use common::addr::{GROUP, OTHER_NODE, POD_A, POD_B, REMOTE_GW, THIS_NODE};
use common::observer::TunnelObserver;
use common::packet::{self, Frame, View};
use common::{ifindex, sh, Bpffs, PodNs, Tap, TCX_NEXT};

const ID_A: u32 = 12345;
const POLICY_ID: u32 = 9;
/// A group Cilium replicates too, but no policy of pod A covers.
const CILIUM_ONLY_GROUP: Ipv4Addr = Ipv4Addr::new(232, 9, 9, 9);
/// The underlay's primary address: what the kernel would pick as the outer
/// source by itself. THIS_NODE (the node IP in the config) is secondary.
const UNDERLAY_PRIMARY: &str = "192.0.2.11/24";

/// One node in a private namespace: pod A in a namespace of its own behind
/// `lxc_a`, a collect-md VXLAN device `vx0` over the underlay `under0`
/// (primary 192.0.2.11, the node IP 192.0.2.10 secondary), pod A's policy
/// for 232.1.0.0/16 through the remote gateway, 232.1.1.1 also in Cilium's
/// groups. Nothing attached yet.
struct Tx {
    dp: Datapath<'static>,
    maps: Maps,
    pod: PodNs,
    _bpffs: Bpffs,
}

impl Tx {
    fn new(test: &str) -> Tx {
        common::veth("lxc_a", "pod_a");
        common::veth("under0", "under_peer");
        common::vxlan_external("vx0");
        sh("ip", &["addr", "add", UNDERLAY_PRIMARY, "dev", "under0"]);
        sh("ip", &["addr", "add", "192.0.2.10/24", "dev", "under0"]);
        for (node, mac) in [
            (REMOTE_GW, "02:00:00:00:00:20"),
            (OTHER_NODE, "02:00:00:00:00:30"),
        ] {
            common::permanent_neighbour(&node.to_string(), mac, "under0");
        }

        let pod = PodNs::new();
        pod.take("pod_a");
        pod.run(|| {
            sh("ip", &["link", "set", "pod_a", "up"]);
            sh("ip", &["addr", "add", "198.51.100.11/24", "dev", "pod_a"]);
            sh("ip", &["route", "add", "232.0.0.0/8", "dev", "pod_a"]);
            // Final checksums in the frame, so that the bytes the pod sent
            // can be checked on their own, and compared.
            sh("ethtool", &["-K", "pod_a", "tx", "off"]);
        });

        let (bpffs, dp, maps) = common::load_datapath(test);
        maps.config_set(&Config {
            node_ip: THIS_NODE,
            tunnel_ifindex: ifindex("vx0"),
        })
        .unwrap();
        maps.endpoint_insert(
            POD_A,
            &Endpoint {
                ifindex: ifindex("lxc_a"),
                identity: ID_A,
            },
        )
        .unwrap();
        let origin = Origin {
            node: THIS_NODE,
            identity: ID_A,
        };
        let (k, v) = common::policy_entry(
            POD_A,
            "232.1.0.0/16",
            Gateway::Node(REMOTE_GW),
            0,
            POLICY_ID,
            origin,
        );
        maps.policy_insert(&k, &v).unwrap();
        maps.cilium_group_insert(GROUP).unwrap();
        maps.cilium_group_insert(CILIUM_ONLY_GROUP).unwrap();
        Tx {
            dp,
            maps,
            pod,
            _bpffs: bpffs,
        }
    }

    fn paths(&self) -> &Paths {
        self.dp.paths()
    }

    /// Pod A sends one datagram to `group` from its own UDP socket.
    fn pod_sends(&self, group: Ipv4Addr, payload: &[u8]) {
        let payload = payload.to_vec();
        self.pod.run(move || {
            let s = UdpSocket::bind((POD_A, 0))
                .unwrap_or_else(|e| panic!("binding pod A's socket: {e}"));
            s.set_multicast_ttl_v4(5).unwrap();
            s.send_to(&payload, (group, 5001)).unwrap();
        });
    }

    fn origin_counter(&self, group: Ipv4Addr) -> (u64, u64) {
        self.maps
            .counters()
            .unwrap()
            .into_iter()
            .find(|c| c.policy_id == POLICY_ID && c.group == group && c.role == Role::Origin)
            .map(|c| (c.packets, c.bytes))
            .unwrap_or_default()
    }

    fn total_drops(&self) -> u64 {
        self.maps.drops().unwrap().iter().map(|d| d.packets).sum()
    }

    fn pending(&self) -> MapHandle {
        MapHandle::from_pinned_path(self.paths().globals().join(TUNNEL_PENDING_MAP))
            .expect("the pinned tunnel-key slot")
    }

    /// The slot's state on every CPU.
    fn pending_states(&self) -> Vec<u32> {
        self.pending()
            .lookup_percpu(0u32.as_bytes(), MapFlags::ANY)
            .expect("lookup")
            .expect("array element")
            .iter()
            .map(|b| mcast_tunnel_pending::from_bytes(b).expect("size").state)
            .collect()
    }
}

macro_rules! tx_test {
    ($name:ident, |$tx:ident| $body:block) => {
        netns_test!($name, Tx::new, |$tx| $body);
    };
}

/// Outer IPv4 + UDP to the VXLAN port, to `remote`.
fn is_vxlan_to(remote: Ipv4Addr) -> impl Fn(&[u8]) -> bool {
    move |f: &[u8]| {
        f.len() > 50
            && View(f).ethertype() == packet::ETH_P_IP
            && View(f).proto() == packet::PROTO_UDP
            && View(f).daddr() == remote
            && u16::from_be_bytes([f[36], f[37]]) == 8472
    }
}

/// The VNI and the inner frame of a VXLAN packet (outer IPv4 header without
/// options, as the kernel sends it).
fn vxlan_payload(outer: &[u8]) -> (u32, &[u8]) {
    let vx = &outer[42..50];
    assert_eq!(vx[0], 0x08, "VNI present flag");
    (u32::from_be_bytes([0, vx[4], vx[5], vx[6]]), &outer[50..])
}

/// Pod A's frames to `group`, as they left the pod.
fn pod_frames_to(group: Ipv4Addr) -> impl Fn(&[u8]) -> bool {
    move |f: &[u8]| {
        f.len() >= 34 && View(f).ethertype() == packet::ETH_P_IP && View(f).daddr() == group
    }
}

tx_test!(copy_carries_the_key_the_original_none, |tx| {
    tx.dp.attach("lxc_a", Program::FromContainer).unwrap();
    tx.dp.attach("vx0", Program::ToOverlay).unwrap();
    // Where Cilium's cil_from_container and cil_to_overlay would be.
    let handed_on = TunnelObserver::attach("lxc_a", false, ChainPosition::Tail, tx.paths());
    let tunnelled = TunnelObserver::attach("vx0", true, ChainPosition::Tail, tx.paths());
    let pod_tap = tx.pod.run(|| Tap::open("pod_a"));
    let underlay = Tap::open("under_peer");

    let payload = b"to the gateway and to Cilium both";
    tx.pod_sends(GROUP, payload);
    let sent = pod_tap
        .recv_matching(Duration::from_secs(2), pod_frames_to(GROUP))
        .expect("the pod's frame");
    assert!(View(&sent).ipv4_checksum_ok() && View(&sent).udp_checksum_ok());
    assert_eq!(View(&sent).udp().len(), 8 + payload.len());
    assert!(sent.len() <= 128, "the observers see whole frames");

    // Cilium is handed exactly what the pod sent, and no tunnel key.
    let original = handed_on.next();
    assert_eq!(original.key, None, "the original carries no tunnel key");
    assert_eq!(original.frame, sent, "byte for byte what the pod sent");

    // The copy got ours on the tunnel device's egress...
    let copy = tunnelled.next();
    assert_eq!(copy.key, Some((ID_A, THIS_NODE, REMOTE_GW)));
    assert_eq!(copy.frame, sent);

    // ... and left with it: VNI, outer addresses, TTL, zero UDP checksum.
    let outer = underlay
        .recv_matching(Duration::from_secs(2), is_vxlan_to(REMOTE_GW))
        .expect("the copy on the underlay");
    let o = View(&outer);
    assert_eq!(o.saddr(), THIS_NODE, "outer source: the configured node IP");
    assert_eq!(o.ttl(), 64, "outer TTL");
    assert!(o.ipv4_checksum_ok());
    assert_eq!(o.udp_checksum_field(), 0, "zero outer UDP checksum");
    let (vni, inner) = vxlan_payload(&outer);
    assert_eq!(vni, ID_A, "VNI: the pod's security identity");
    assert_eq!(inner, sent.as_slice(), "inner frame as the pod sent it");

    assert_eq!(
        tx.origin_counter(GROUP),
        (1, sent.len() as u64),
        "origin +1"
    );
    assert_eq!(tx.total_drops(), 0);
    assert!(
        tx.pending_states().iter().all(|s| *s == MCAST_PENDING_IDLE),
        "no CPU's slot is left armed"
    );

    // A second one: the slot is armed and applied anew each time.
    tx.pod_sends(GROUP, b"again");
    assert_eq!(handed_on.next().key, None);
    assert_eq!(tunnelled.next().key, Some((ID_A, THIS_NODE, REMOTE_GW)));
    underlay
        .recv_matching(Duration::from_secs(2), is_vxlan_to(REMOTE_GW))
        .expect("the second copy");
    assert_eq!(tx.origin_counter(GROUP).0, 2);
    assert_eq!(handed_on.counts().1, 0, "no original ever carried a key");
});

tx_test!(without_the_egress_program_the_copy_is_counted_lost, |tx| {
    // mcast_to_overlay not attached (a node half way through an upgrade, or
    // a link someone removed): the copy reaches the collect-md device
    // without a key, and the device drops it. The origin sees its slot
    // still armed after the clone and counts the copy as lost.
    tx.dp.attach("lxc_a", Program::FromContainer).unwrap();
    let handed_on = TunnelObserver::attach("lxc_a", false, ChainPosition::Tail, tx.paths());
    let tunnelled = TunnelObserver::attach("vx0", true, ChainPosition::Tail, tx.paths());
    let underlay = Tap::open("under_peer");

    tx.pod_sends(GROUP, b"no key for this copy");
    let original = handed_on.next();
    assert_eq!(
        original.key, None,
        "Cilium still gets the original, keyless"
    );
    let copy = tunnelled.next();
    assert_eq!(copy.key, None, "the copy reached the device without a key");
    assert_eq!(
        tx.maps
            .drop_count(Role::Origin, DropReason::TUNNEL_KEY)
            .unwrap()
            .packets,
        1,
        "counted as lost at the origin"
    );
    assert_eq!(tx.origin_counter(GROUP), (0, 0), "never counted as sent");
    assert!(tx.pending_states().iter().all(|s| *s == MCAST_PENDING_IDLE));

    // Positive control in the same run: attached, the next copy leaves (so
    // the first one's absence below is the missing key, not the setup).
    tx.dp.attach("vx0", Program::ToOverlay).unwrap();
    tx.pod_sends(GROUP, b"with a key");
    assert_eq!(handed_on.next().key, None);
    assert_eq!(tunnelled.next().key, Some((ID_A, THIS_NODE, REMOTE_GW)));
    let outer = underlay
        .recv_matching(Duration::from_secs(2), is_vxlan_to(REMOTE_GW))
        .expect("the copy on the underlay");
    assert_eq!(
        &vxlan_payload(&outer).1[42..],
        b"with a key",
        "the only copy on the wire is the one with a key"
    );
    assert_eq!(tx.origin_counter(GROUP).0, 1);
    assert_eq!(
        tx.maps
            .drop_count(Role::Origin, DropReason::TUNNEL_KEY)
            .unwrap()
            .packets,
        1
    );
});

tx_test!(other_tunnelled_traffic_passes_untouched, |tx| {
    // Routes with a tunnel key of their own (lightweight tunnel encap), as
    // Cilium's own unicast and multicast replication leave the tunnel
    // device: unicast with VNI 77, Cilium's copy of the very group our
    // policy covers with VNI 2 (WORLD) to another node, and a group only
    // Cilium replicates.
    tx.dp.attach("vx0", Program::ToOverlay).unwrap();
    // Observers on both sides of ours: what ours was given, what it passed.
    let before = TunnelObserver::attach("vx0", true, ChainPosition::Head, tx.paths());
    let after = TunnelObserver::attach("vx0", true, ChainPosition::Tail, tx.paths());
    let chain = tcx_egress_chain(ifindex("vx0")).unwrap();
    assert_eq!(chain.len(), 3, "observer, ours, observer");
    let ours = &libbpf_rs::ProgramHandle::try_from(tx.dp.program(Program::ToOverlay)).unwrap();
    assert_eq!(
        chain[1].prog_id,
        ours.id(),
        "ours between the two observers"
    );
    sh("ip", &["addr", "add", "198.51.100.1/24", "dev", "vx0"]);
    let uni = Ipv4Addr::new(198, 51, 100, 99);
    let routes = [
        (uni, 77u32, REMOTE_GW),
        (GROUP, 2, OTHER_NODE),
        (CILIUM_ONLY_GROUP, 2, REMOTE_GW),
    ];
    for (dst, vni, remote) in routes {
        sh(
            "ip",
            &[
                "route",
                "add",
                &format!("{dst}/32"),
                "encap",
                "ip",
                "id",
                &vni.to_string(),
                "dst",
                &remote.to_string(),
                "dev",
                "vx0",
            ],
        );
    }
    common::permanent_neighbour(&uni.to_string(), "02:00:00:00:00:99", "vx0");
    let underlay = Tap::open("under_peer");
    // Unbound: a multicast socket bound to a source skips the route
    // lookup, and with it the route's tunnel key.
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();

    for (dst, vni, remote) in routes {
        let payload = format!("not ours: {dst}");
        sock.send_to(payload.as_bytes(), (dst, 5001)).unwrap();
        let given = before.next();
        let passed = after.next();
        // No source in the route: the kernel picks one when it sends.
        let unset = Ipv4Addr::UNSPECIFIED;
        assert_eq!(given.key, Some((vni, unset, remote)), "{dst}: its own key");
        assert_eq!(passed, given, "{dst}: bytes and key untouched");
        let outer = underlay
            .recv_matching(Duration::from_secs(2), is_vxlan_to(remote))
            .unwrap_or_else(|| panic!("{dst} on the underlay"));
        let (got_vni, inner) = vxlan_payload(&outer);
        assert_eq!(got_vni, vni, "{dst}: the route's VNI, not ours");
        assert_eq!(inner, given.frame.as_slice(), "{dst}: inner frame");
        assert_eq!(View(inner).saddr(), Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(View(&outer).saddr().octets()[..3], [192, 0, 2]);
    }
    assert_eq!(tx.maps.counters().unwrap().len(), 0, "nothing counted");
    assert_eq!(tx.total_drops(), 0);
    assert!(tx.pending_states().iter().all(|s| *s == MCAST_PENDING_IDLE));
});

/// BPF_PROG_RUN `prog` once on `frame`.
fn run(prog: &libbpf_rs::ProgramMut<'_>, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut ctx = common::skb_ctx(0);
    let mut out = vec![0u8; frame.len() + 512];
    let input = libbpf_rs::ProgramInput {
        context_in: Some(&mut ctx),
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let output = prog.test_run(input).expect("BPF_PROG_RUN");
    let data = output.data.map(|d| d.to_vec()).unwrap_or_default();
    (output.return_value, data)
}

tx_test!(an_armed_key_goes_only_on_its_own_packet, |tx| {
    // The slot armed on every CPU, as only the origin's clone ever leaves
    // it for the length of one synchronous transmit.
    let pending = tx.pending();
    let ncpu = libbpf_rs::num_possible_cpus().unwrap();
    let arm = |state: u32| {
        let v = mcast_tunnel_pending {
            remote_ipv4: u32::from_ne_bytes(REMOTE_GW.octets()),
            local_ipv4: u32::from_ne_bytes(THIS_NODE.octets()),
            tunnel_id: ID_A,
            saddr: u32::from_ne_bytes(POD_A.octets()),
            daddr: u32::from_ne_bytes(GROUP.octets()),
            state,
        };
        pending
            .update_percpu(
                0u32.as_bytes(),
                &vec![v.as_bytes().to_vec(); ncpu],
                MapFlags::ANY,
            )
            .unwrap();
    };
    let prog = tx.dp.program(Program::ToOverlay);
    let count = |state: u32| tx.pending_states().iter().filter(|s| **s == state).count();

    arm(MCAST_PENDING_ARMED);
    for f in [
        Frame::udp(POD_A, Ipv4Addr::new(198, 51, 100, 20), b"unicast").bytes(),
        Frame::udp(POD_A, CILIUM_ONLY_GROUP, b"other group").bytes(),
        Frame::udp(POD_B, GROUP, b"other source").bytes(),
        packet::raw_frame(packet::ETH_P_ARP, &[0u8; 28]),
    ] {
        let (v, out) = run(prog, &f);
        assert_eq!((v, &out), (TCX_NEXT, &f), "untouched");
        assert_eq!(count(MCAST_PENDING_ARMED), ncpu, "the key is not taken");
    }

    let f = Frame::udp(POD_A, GROUP, b"the copy").bytes();
    let (v, out) = run(prog, &f);
    assert_eq!((v, &out), (TCX_NEXT, &f), "the key is metadata, not bytes");
    assert_eq!(count(MCAST_PENDING_APPLIED), 1, "taken on the CPU that ran");
    assert_eq!(count(MCAST_PENDING_ARMED), ncpu - 1);

    // Idle: the same packet is left alone.
    arm(MCAST_PENDING_IDLE);
    let (v, out) = run(prog, &f);
    assert_eq!((v, &out), (TCX_NEXT, &f));
    assert_eq!(count(MCAST_PENDING_IDLE), ncpu);
});
