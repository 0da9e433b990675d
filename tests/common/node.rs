//! node-a as the daemon suites run it, in the calling thread's (new)
//! network namespace: pod veths, an uplink, the tunnel device, our and
//! Cilium's BPF filesystems, and Cilium's `cilium_lxc` holding the pods.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use cilium_mcast_egress::datapath::tcx::ifindex_of;
use cilium_mcast_egress::datapath::Paths;

use super::{sh, veth, vxlan_external, Bpffs};

/// node-a's InternalIP.
pub const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The uplink's address: node-a's egress IP.
pub const UPLINK_IP: &str = "203.0.113.10/24";

pub struct NodeA {
    pub ours: Bpffs,
    pub cilium: Bpffs,
    /// Cilium's endpoint map, pinned in `cilium`.
    pub lxc: PathBuf,
}

impl NodeA {
    /// `veths`: (host device, peer) of each pod; then `uplink0` (with
    /// [`UPLINK_IP`], its peer `upstream0`) and `cilium_vxlan`. The
    /// endpoint map holds only the host's own entry until pods are put.
    pub fn new(test: &str, veths: &[(&str, &str)]) -> NodeA {
        for (dev, peer) in veths {
            veth(dev, peer);
        }
        veth("uplink0", "upstream0");
        vxlan_external("cilium_vxlan");
        sh("ip", &["addr", "add", UPLINK_IP, "dev", "uplink0"]);
        let ours = Bpffs::new(&format!("{test}-ours"));
        let cilium = Bpffs::new(&format!("{test}-cilium"));
        let lxc = Paths::new(cilium.path()).globals().join("cilium_lxc");
        lab::create_cilium_lxc_at(&lxc, NODE_A).expect("creating cilium_lxc");
        NodeA { ours, cilium, lxc }
    }

    /// Put `ip` behind `dev` with `identity` into Cilium's endpoint map.
    pub fn put_pod(&self, ip: Ipv4Addr, dev: &str, identity: u32) {
        let ifindex = ifindex_of(dev).unwrap_or_else(|e| panic!("{dev}: {e}"));
        lab::lxc_put_at(&self.lxc, ip, ifindex, identity).expect("updating cilium_lxc");
    }
}

/// node-a with [`super::yaml::one_camera_cluster`]'s pod behind `lxc_pod1`,
/// and a manifests directory of that cluster.
pub struct OneCamera {
    pub node: NodeA,
    pub manifests: tempfile::TempDir,
}

impl OneCamera {
    pub fn new(test: &str) -> OneCamera {
        let node = NodeA::new(test, &[("lxc_pod1", "pod1")]);
        node.put_pod(Ipv4Addr::new(198, 51, 100, 11), "lxc_pod1", 4001);
        let manifests = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            manifests.path().join("cluster.yaml"),
            super::yaml::one_camera_cluster(),
        )
        .expect("manifests");
        OneCamera { node, manifests }
    }
}
