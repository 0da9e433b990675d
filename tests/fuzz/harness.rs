//! The node the fuzzer runs on: devices in the test's network namespace,
//! the production datapath and the test build of mcast_from_overlay, the
//! map state written from a model state, and the readings the checks
//! compare (verdicts and bytes, drops, counters, copies on the taps).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use cilium_mcast_egress::bpf_intf::{mcast_config, mcast_test_tunnel};
use cilium_mcast_egress::datapath::maps::{DropReason, Role};
use cilium_mcast_egress::datapath::maps::{
    EgressIface, Endpoint, Gateway, Origin, PolicyKey, PolicyKey6, PolicyValue, PolicyValue6,
};
use cilium_mcast_egress::datapath::{load_skel, Datapath, Maps, Plain, Program};

use crate::common::skels::overlay_test::{
    McastFromOverlayTestSkel, McastFromOverlayTestSkelBuilder,
};
use crate::common::{self, ifindex, mac_of, sh, Bpffs};
use crate::gen::{addr, Env};
use crate::model::{self, State, Via, GATEWAY_EXCLUDED, GATEWAY_NOT_FOUND};
use crate::tap::RawTap;

/// MTUs: the uplinks differ so that each size limit is met, and one is
/// jumbo; the pod's veth takes 9000-byte frames.
const UPLINKS: [(&str, &str, u32); 3] = [
    ("uplink0", "upstream0", 1500),
    ("uplink1", "upstream1", 2000),
    ("uplink2", "upstream2", 9000),
];
/// (device, UDP port, MTU) of the collect-md VXLAN devices.
const TUNNELS: [(&str, &str, u32); 2] = [("vx0", "8472", 1450), ("vx1", "4789", 8900)];
pub const UNDERLAY_MTU: u32 = 9100;

pub struct Fixture {
    pub dp: Datapath<'static>,
    pub ovl: McastFromOverlayTestSkel<'static>,
    pub maps: Maps,
    config: MapHandle,
    pub env: Env,
    /// The largest frame BPF_PROG_RUN takes (its linear-data limit).
    pub max_run_len: usize,
    /// Taps on the far side of each uplink, and on the underlay.
    pub uplink_taps: Vec<(u32, RawTap)>,
    pub underlay_tap: RawTap,
    /// UDP port of each tunnel device, by ifindex.
    pub tunnel_ports: BTreeMap<u32, u16>,
    last_key: std::cell::Cell<Option<Option<(u32, Ipv4Addr)>>>,
    _bpffs: Bpffs,
}

fn set_mtu(dev: &str, mtu: u32) {
    sh("ip", &["link", "set", "dev", dev, "mtu", &mtu.to_string()]);
}

/// No IPv6 in the test's namespaces: no router solicitations, MLD reports
/// or DAD probes on the devices the taps and the observer watch.
pub fn disable_ipv6() {
    for conf in ["all", "default"] {
        let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
        if std::path::Path::new(&path).exists() {
            std::fs::write(&path, "1").unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    }
}

impl Fixture {
    /// Build the node in the calling thread's (new) network namespace.
    pub fn new() -> Fixture {
        disable_ipv6();
        common::veth("lxc_a", "pod_a");
        set_mtu("lxc_a", 9000);
        set_mtu("pod_a", 9000);
        common::veth("lxc_b", "pod_b");
        for (a, b, mtu) in UPLINKS {
            common::veth(a, b);
            set_mtu(a, mtu);
            set_mtu(b, mtu);
        }
        common::veth("under0", "under_peer");
        set_mtu("under0", UNDERLAY_MTU);
        set_mtu("under_peer", UNDERLAY_MTU);
        sh("ip", &["addr", "add", "192.0.2.10/24", "dev", "under0"]);
        for (i, peer) in addr::TUNNEL_PEERS.iter().enumerate() {
            let mac = format!("02:00:00:00:01:{:02x}", i + 1);
            sh(
                "ip",
                &[
                    "neigh",
                    "replace",
                    &peer.to_string(),
                    "lladdr",
                    &mac,
                    "dev",
                    "under0",
                    "nud",
                    "permanent",
                ],
            );
        }
        let mut tunnel_ports = BTreeMap::new();
        for (dev, port, mtu) in TUNNELS {
            sh(
                "ip",
                &[
                    "link", "add", dev, "type", "vxlan", "external", "dstport", port,
                ],
            );
            set_mtu(dev, mtu);
            sh("ip", &["link", "set", dev, "up"]);
            tunnel_ports.insert(ifindex(dev), port.parse().expect("port"));
        }
        // A device that existed: its ifindex is never handed out again.
        common::veth("gone0", "gone1");
        let vanished = ifindex("gone0");
        sh("ip", &["link", "del", "gone0"]);

        let mut devices = BTreeMap::new();
        for dev in ["lxc_a", "lxc_b", "under0"] {
            devices.insert(ifindex(dev), mtu_of(dev));
        }
        let uplinks: Vec<(u32, u32, [u8; 6])> = UPLINKS
            .iter()
            .map(|(dev, _, mtu)| {
                devices.insert(ifindex(dev), *mtu);
                (ifindex(dev), mtu_of(dev), mac_of(dev))
            })
            .collect();
        let tunnels: Vec<(u32, u32)> = TUNNELS
            .iter()
            .map(|(dev, _, mtu)| {
                devices.insert(ifindex(dev), *mtu);
                (ifindex(dev), mtu_of(dev))
            })
            .collect();
        for (i, (dev, _, mtu)) in UPLINKS.iter().enumerate() {
            assert_eq!(uplinks[i].1, *mtu, "MTU of {dev}");
        }
        let env = Env {
            lxc_a: ifindex("lxc_a"),
            lxc_b: ifindex("lxc_b"),
            uplinks,
            tunnels,
            vanished,
            devices,
        };

        let (bpffs, dp, maps) = common::load_datapath("fuzz");
        let paths = dp.paths().clone();
        let storage = Box::leak(Box::new(std::mem::MaybeUninit::uninit()));
        let ovl = load_skel(
            McastFromOverlayTestSkelBuilder::default(),
            "mcast_from_overlay_test",
            storage,
            &paths,
        )
        .expect("loading the test build of mcast_from_overlay");
        // As on a node: the tunnel devices' egress puts the tunnel key on
        // the copies the origin sends while Cilium keeps the original.
        for (dev, _, _) in TUNNELS {
            dp.attach(dev, Program::ToOverlay)
                .unwrap_or_else(|e| panic!("attaching mcast_to_overlay to {dev}: {e}"));
        }
        let config = MapHandle::from_pinned_path(paths.globals().join("mcast_egw_config"))
            .expect("the pinned config map");

        let uplink_taps = UPLINKS
            .iter()
            .map(|(dev, peer, _)| (ifindex(dev), RawTap::open(peer)))
            .collect();
        let underlay_tap = RawTap::open("under_peer");
        for dev in ["lxc_a", "pod_a", "lxc_b", "under0", "under_peer"]
            .into_iter()
            .chain(UPLINKS.iter().flat_map(|(a, b, _)| [*a, *b]))
        {
            wait_oper_up(dev);
        }
        let mut fx = Fixture {
            dp,
            ovl,
            maps,
            config,
            env,
            max_run_len: 0,
            uplink_taps,
            underlay_tap,
            tunnel_ports,
            last_key: std::cell::Cell::new(None),
            _bpffs: bpffs,
        };
        fx.max_run_len = fx.probe_max_run_len();
        fx
    }

    /// The largest frame BPF_PROG_RUN accepts, found by bisection with a
    /// frame no program looks into (an unknown ethertype).
    fn probe_max_run_len(&self) -> usize {
        let accepts = |len: usize| {
            let mut f = vec![0u8; len];
            f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
            self.run(Program::FromContainer, self.env.lxc_a, &f).is_ok()
        };
        let (mut lo, mut hi) = (14usize, 65536usize);
        assert!(accepts(lo), "BPF_PROG_RUN refuses a 14-byte frame");
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if accepts(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn prog(&self, program: Program) -> &libbpf_rs::ProgramMut<'static> {
        match program {
            Program::FromOverlay => &self.ovl.progs.mcast_from_overlay,
            p => self.dp.program(p),
        }
    }

    /// BPF_PROG_RUN once; Err(errno) when the kernel refuses the frame.
    pub fn run(&self, program: Program, ifindex: u32, frame: &[u8]) -> Result<(u32, Vec<u8>), i32> {
        let mut ctx = common::skb_ctx(ifindex);
        let mut out = vec![0u8; frame.len() + 256];
        let input = libbpf_rs::ProgramInput {
            context_in: Some(&mut ctx),
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        };
        match self.prog(program).test_run(input) {
            Ok(o) => {
                let data = o.data.map(|d| d.to_vec()).unwrap_or_default();
                Ok((o.return_value, data))
            }
            Err(e) => Err(e
                .to_string()
                .rsplit("os error ")
                .next()
                .and_then(|s| s.trim_end_matches(')').parse().ok())
                .unwrap_or(-1)),
        }
    }

    /// The receive tunnel key the test build of mcast_from_overlay reads.
    pub fn set_tunnel_key(&self, key: Option<(u32, Ipv4Addr)>) {
        if self.last_key.get() == Some(key) {
            return;
        }
        let t = match key {
            Some((vni, remote)) => mcast_test_tunnel {
                tunnel_id: vni,
                remote_ipv4: u32::from_ne_bytes(remote.octets()),
                valid: 1,
                pad: 0,
            },
            None => mcast_test_tunnel::default(),
        };
        self.ovl
            .maps
            .mcast_test_tunnel
            .update(0u32.as_bytes(), t.as_bytes(), MapFlags::ANY)
            .expect("tunnel key map");
        self.last_key.set(Some(key));
    }

    /// Write `st` into the maps, replacing whatever was there, and read it
    /// back. Counters start from zero.
    pub fn apply(&self, st: &State) {
        let m = &self.maps;
        for (k, _) in m.policies().expect("policies") {
            m.policy_delete(&k).expect("policy delete");
        }
        for (a, _) in m.endpoints().expect("endpoints") {
            m.endpoint_delete(a).expect("endpoint delete");
        }
        for n in m.nodes().expect("nodes") {
            m.node_delete(n).expect("node delete");
        }
        for (i, _) in m.egress_ifaces().expect("ifaces") {
            m.egress_iface_delete(i).expect("iface delete");
        }
        for g in m.cilium_groups().expect("groups") {
            m.cilium_group_delete(g).expect("group delete");
        }
        let keys6: Vec<PolicyKey6> = m.policy_v6.keys().map(|k| k.expect("key")).collect();
        for k in &keys6 {
            m.policy_delete(k).expect("IPv6 policy delete");
        }
        let eps6: Vec<_> = m.endpoints_v6.keys().map(|k| k.expect("key")).collect();
        for a in &eps6 {
            m.endpoints_v6.delete(a).expect("IPv6 endpoint delete");
        }
        let gateway_of = |ip: Ipv4Addr| match ip {
            GATEWAY_NOT_FOUND => Gateway::NotFound,
            GATEWAY_EXCLUDED => Gateway::Excluded,
            ip => Gateway::Node(ip),
        };
        for e in st.policies6.values() {
            m.policy_insert(
                &PolicyKey6 {
                    source: e.saddr,
                    destination: e.dst,
                },
                &PolicyValue6 {
                    egress_ip: e.egress_ip,
                    gateway: gateway_of(e.gateway_ip),
                    egress_ifindex: e.egress_ifindex,
                    policy_id: e.policy_id,
                    origin: Origin {
                        node: e.origin_node,
                        identity: e.origin_identity,
                    },
                },
            )
            .expect("IPv6 policy insert");
        }
        for (a, &(ifindex, identity)) in &st.endpoints6 {
            m.endpoints_v6
                .put(a, &Endpoint { ifindex, identity })
                .expect("IPv6 endpoint insert");
        }
        for e in st.policies.values() {
            let gateway = gateway_of(e.gateway_ip);
            m.policy_insert(
                &PolicyKey {
                    source: e.saddr,
                    destination: e.dst,
                },
                &PolicyValue {
                    egress_ip: e.egress_ip,
                    gateway,
                    egress_ifindex: e.egress_ifindex,
                    policy_id: e.policy_id,
                    origin: Origin {
                        node: e.origin_node,
                        identity: e.origin_identity,
                    },
                },
            )
            .expect("policy insert");
        }
        for (&a, &(ifindex, identity)) in &st.endpoints {
            m.endpoint_insert(a, &Endpoint { ifindex, identity })
                .expect("endpoint insert");
        }
        for &n in &st.nodes {
            m.node_insert(n).expect("node insert");
        }
        for (&i, &mac) in &st.egress_ifaces {
            m.egress_iface_insert(i, &EgressIface { mac })
                .expect("iface insert");
        }
        for &g in &st.cilium_groups {
            m.cilium_group_insert(g).expect("group insert");
        }
        // Last, and raw: the flag is the state's, whatever the groups are.
        let cfg = mcast_config {
            node_ip: u32::from_ne_bytes(st.node_ip.octets()),
            tunnel_ifindex: st.tunnel_ifindex,
            flags: st.flags,
            ..Default::default()
        };
        self.config
            .update(0u32.as_bytes(), cfg.as_bytes(), MapFlags::ANY)
            .expect("config");
        self.clear_counters();

        assert_eq!(m.policies().expect("policies").len(), st.policies.len());
        assert_eq!(m.policy_v6.len(), st.policies6.len());
        assert_eq!(m.endpoints_v6.len(), st.endpoints6.len());
        assert_eq!(m.endpoints().expect("endpoints").len(), st.endpoints.len());
        assert_eq!(m.nodes().expect("nodes").len(), st.nodes.len());
        assert_eq!(
            m.cilium_groups().expect("groups"),
            st.cilium_groups.iter().copied().collect::<Vec<_>>()
        );
        let back = mcast_config::from_bytes(
            &self
                .config
                .lookup(0u32.as_bytes(), MapFlags::ANY)
                .expect("config")
                .expect("element"),
        )
        .expect("size");
        assert_eq!(
            (back.flags, back.tunnel_ifindex),
            (st.flags, st.tunnel_ifindex)
        );
        self.last_key.set(None);
    }

    /// Drops so far, both families (mcast_egw_drops, mcast_egw_drops_v6),
    /// by [`model::drop_slot`]: (packets, bytes).
    pub fn drops(&self) -> Vec<(u64, u64)> {
        let mut v = vec![(0, 0); model::DROP_SLOTS];
        for (ri, role) in [Role::Origin, Role::Gateway].into_iter().enumerate() {
            for code in 1..=model::reason::MAX {
                let Some(reason) = DropReason::from_code(code) else {
                    continue;
                };
                let d = self.maps.drop_count(role, reason).expect("drops");
                v[model::drop_slot(false, ri as u32, code)] = (d.packets, d.bytes);
                let d = self.maps.drop_count_v6(role, reason).expect("IPv6 drops");
                v[model::drop_slot(true, ri as u32, code)] = (d.packets, d.bytes);
            }
        }
        v
    }

    /// One slot of [`Fixture::drops`].
    pub fn drop_at(&self, slot: usize) -> (u64, u64) {
        let n = model::reason::MAX as usize + 1;
        let (v6, role, code) = (slot / (2 * n) == 1, (slot / n) % 2, (slot % n) as u32);
        let role = [Role::Origin, Role::Gateway][role];
        let Some(reason) = DropReason::from_code(code) else {
            return (0, 0);
        };
        let d = if v6 {
            self.maps.drop_count_v6(role, reason)
        } else {
            self.maps.drop_count(role, reason)
        }
        .expect("drops");
        (d.packets, d.bytes)
    }

    /// Replication counters of both families (Maps::counters lists
    /// both): (policy, group, role) -> (packets, bytes).
    pub fn counters(&self) -> BTreeMap<(u32, IpAddr, u32), (u64, u64)> {
        self.maps
            .counters()
            .expect("counters")
            .into_iter()
            .map(|c| {
                let role = match c.role {
                    Role::Origin => model::ROLE_ORIGIN,
                    _ => model::ROLE_GATEWAY,
                };
                ((c.policy_id, c.group, role), (c.packets, c.bytes))
            })
            .collect()
    }

    /// Both families' counters (counters_retain_policies clears both).
    pub fn clear_counters(&self) {
        self.maps
            .counters_retain_policies(&BTreeSet::new())
            .expect("clearing counters");
    }

    /// Whether a copy sent `via` shows on a tap: uplinks always, tunnels
    /// when the peer is one the underlay has a neighbour entry for.
    pub fn observable(&self, via: &Via) -> bool {
        match via {
            Via::Uplink(i) => self.uplink_taps.iter().any(|(u, _)| u == i),
            Via::Tunnel {
                ifindex, remote, ..
            } => self.tunnel_ports.contains_key(ifindex) && addr::TUNNEL_PEERS.contains(remote),
        }
    }

    /// Every frame queued on the taps, by where it came out.
    pub fn drain_taps(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for (i, (_, tap)) in self.uplink_taps.iter().enumerate() {
            for f in tap.drain() {
                out.push((UPLINKS[i].0.to_owned(), f));
            }
        }
        for f in self.underlay_tap.drain() {
            out.push(("underlay".to_owned(), f));
        }
        out
    }

    /// Wait for a frame on the tap where `via` leads.
    pub fn recv_on(&self, via: &Via, timeout: std::time::Duration) -> Option<Vec<u8>> {
        match via {
            Via::Uplink(i) => self
                .uplink_taps
                .iter()
                .find(|(u, _)| u == i)
                .and_then(|(_, t)| t.recv(timeout)),
            Via::Tunnel { .. } => self.underlay_tap.recv(timeout),
        }
    }

    pub fn tap_name(&self, via: &Via) -> String {
        match via {
            Via::Uplink(i) => self
                .uplink_taps
                .iter()
                .position(|(u, _)| u == i)
                .map(|p| UPLINKS[p].0.to_owned())
                .unwrap_or_else(|| format!("ifindex {i}")),
            Via::Tunnel { .. } => "underlay".to_owned(),
        }
    }
}

/// Wait until the kernel has the device's carrier up and its qdisc
/// attached (operstate UP): before that, what it sends is dropped unseen.
pub fn wait_oper_up(dev: &str) {
    common::wait_for(
        &format!("{dev} operationally up"),
        std::time::Duration::from_secs(10),
        || sh("ip", &["-o", "link", "show", "dev", dev]).contains("state UP"),
    );
}

fn mtu_of(dev: &str) -> u32 {
    let out = sh("ip", &["-o", "link", "show", "dev", dev]);
    out.split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no MTU in {out}"))
}
