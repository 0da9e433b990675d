//! The single-node datapath fixture of the BPF_PROG_RUN suites (tests/datapath.rs,
//! tests/datapath_v6.rs): the production programs loaded on a BPF filesystem
//! of their own, in a private namespace with pods, an uplink and a tunnel.

use std::net::{IpAddr, Ipv4Addr};

use libbpf_rs::{MapCore, MapFlags};

use cilium_mcast_egress::bpf_intf::mcast_test_tunnel;
use cilium_mcast_egress::datapath::maps::{DropReason, Family, Gateway, Origin, Role};
use cilium_mcast_egress::datapath::{load_skel, Datapath, Maps, Plain, Program};

use super::addr::*;
use super::skels::overlay_test::{McastFromOverlayTestSkel, McastFromOverlayTestSkelBuilder};
use super::{ifindex, mac_of, sh, Bpffs, TCX_NEXT};

/// The policy id of the fixture's entries: it labels their counters.
pub const POLICY_ID: u32 = 7;

/// Where the fixture's pods' copies come from: pod B has its own identity,
/// every other source pod A's; all run on REMOTE_GW's node.
pub fn origin_of(pod: Ipv4Addr) -> Origin {
    Origin {
        node: REMOTE_GW,
        identity: if pod == POD_B { ID_B } else { ID_A },
    }
}

/// One node's datapath in a private namespace: pods A and B behind
/// `lxc_a`/`lxc_b`, an uplink `uplink0`, a collect-md VXLAN device `vx0`
/// over the underlay `under0` (192.0.2.10/24).
pub struct Fx {
    pub dp: Datapath<'static>,
    pub ovl: McastFromOverlayTestSkel<'static>,
    pub maps: Maps,
    pub lxc_a: u32,
    pub lxc_b: u32,
    pub uplink: u32,
    pub uplink_mac: [u8; 6],
    pub tunnel: u32,
    pub _bpffs: Bpffs,
}

impl Fx {
    pub fn new(test: &str) -> Fx {
        super::veths(&[
            ("lxc_a", "pod_a"),
            ("lxc_b", "pod_b"),
            ("uplink0", "upstream0"),
            ("under0", "under_peer"),
        ]);
        super::vxlan_external("vx0");
        sh("ip", &["addr", "add", "192.0.2.10/24", "dev", "under0"]);
        super::permanent_neighbour("192.0.2.20", "02:00:00:00:00:20", "under0");

        let (bpffs, dp, maps) = super::load_datapath(test);
        let paths = dp.paths().clone();
        let ovl_storage = Box::leak(Box::new(std::mem::MaybeUninit::uninit()));
        let ovl = load_skel(
            McastFromOverlayTestSkelBuilder::default(),
            "mcast_from_overlay_test",
            ovl_storage,
            &paths,
        )
        .expect("loading the test build of mcast_from_overlay");

        let fx = Fx {
            lxc_a: ifindex("lxc_a"),
            lxc_b: ifindex("lxc_b"),
            uplink: ifindex("uplink0"),
            uplink_mac: mac_of("uplink0"),
            tunnel: ifindex("vx0"),
            dp,
            ovl,
            maps,
            _bpffs: bpffs,
        };
        super::seed_single_node(&fx.maps, fx.tunnel, &[THIS_NODE, REMOTE_GW, OTHER_NODE]);
        fx
    }

    /// A policy entry for `pod` and `dest` through `gateway`.
    pub fn policy(&self, pod: Ipv4Addr, dest: &str, gateway: Gateway) {
        let (k, v) =
            super::policy_entry(pod, dest, gateway, self.uplink, POLICY_ID, origin_of(pod));
        self.maps.policy_insert(&k, &v).unwrap();
    }

    pub fn set_tunnel(&self, vni: u32, remote: Ipv4Addr) {
        let t = mcast_test_tunnel {
            tunnel_id: vni,
            remote_ipv4: u32::from_ne_bytes(remote.octets()),
            valid: 1,
            pad: 0,
        };
        self.ovl
            .maps
            .mcast_test_tunnel
            .update(0u32.as_bytes(), t.as_bytes(), MapFlags::ANY)
            .unwrap();
    }

    pub fn container(&self) -> &libbpf_rs::ProgramMut<'static> {
        self.dp.program(Program::FromContainer)
    }

    pub fn overlay(&self) -> &libbpf_rs::ProgramMut<'static> {
        &self.ovl.progs.mcast_from_overlay
    }

    /// Run the origin program as if `frame` came in on `lxc`.
    pub fn run_origin(&self, lxc: u32, frame: &[u8]) -> (u32, Vec<u8>) {
        run(self.container(), lxc, frame, 1)
    }

    /// Run the gateway program as if `frame` came out of the tunnel.
    pub fn run_gateway(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        run(self.overlay(), self.tunnel, frame, 1)
    }

    /// (packets, bytes) of a group's counter, of either family.
    pub fn counter(&self, group: impl Into<IpAddr>, role: Role) -> (u64, u64) {
        let group = group.into();
        self.maps
            .counters()
            .unwrap()
            .into_iter()
            .find(|c| c.policy_id == POLICY_ID && c.group == group && c.role == role)
            .map(|c| (c.packets, c.bytes))
            .unwrap_or_default()
    }

    /// (packets, bytes) of one family's drops of one role and reason.
    pub fn drop_of(&self, family: Family, role: Role, reason: DropReason) -> (u64, u64) {
        let d = self.maps.drop_count_of(family, role, reason).unwrap();
        (d.packets, d.bytes)
    }

    /// IPv4 drops of one role and reason.
    pub fn drops(&self, role: Role, reason: DropReason) -> u64 {
        self.drop_of(Family::Ipv4, role, reason).0
    }

    /// All drops of one family.
    pub fn total_drops_of(&self, family: Family) -> u64 {
        let drops = self.maps.drops().unwrap();
        drops
            .iter()
            .filter(|d| d.family == family)
            .map(|d| d.packets)
            .sum()
    }

    /// All packets counted for one family.
    pub fn total_counted_of(&self, family: Family) -> u64 {
        let counters = self.maps.counters().unwrap();
        let of = counters.iter().filter(|c| Family::of(c.group) == family);
        of.map(|c| c.packets).sum()
    }

    pub fn total_drops(&self) -> u64 {
        self.total_drops_of(Family::Ipv4)
    }

    pub fn total_counted(&self) -> u64 {
        self.total_counted_of(Family::Ipv4)
    }
}

/// BPF_PROG_RUN `prog` `repeat` times on `frame` arriving on `ifindex`.
pub fn run(
    prog: &libbpf_rs::ProgramMut<'_>,
    ifindex: u32,
    frame: &[u8],
    repeat: u32,
) -> (u32, Vec<u8>) {
    let mut ctx = super::skb_ctx(ifindex);
    let mut out = vec![0u8; frame.len() + 512];
    let input = libbpf_rs::ProgramInput {
        context_in: Some(&mut ctx),
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    };
    let output = prog.test_run(input).expect("BPF_PROG_RUN");
    let ret = output.return_value;
    let data = output.data.map(|d| d.to_vec()).unwrap_or_default();
    (ret, data)
}

/// A privileged test with a fresh [`Fx`]: `dp_test!(name, |fx| { .. })`.
#[macro_export]
macro_rules! dp_test {
    ($(#[$m:meta])* $name:ident, |$fx:ident| $body:block) => {
        netns_test!($(#[$m])* $name, $crate::common::dp::Fx::new, |$fx| $body);
    };
}

/// A frame passed on untouched, with nothing counted.
pub fn assert_untouched(fx: &Fx, verdict: u32, frame: &[u8], out: &[u8]) {
    assert_eq!(verdict, TCX_NEXT, "verdict");
    assert_eq!(out, frame, "not one byte may change");
    assert_eq!(fx.total_counted(), 0, "nothing counted");
    assert_eq!(fx.total_drops(), 0, "nothing dropped");
}
