//! The real daemon on a manifests directory, inside a network namespace of
//! its own, with a BPF filesystem of its own and a `cilium_lxc` map in
//! Cilium's layout made by the test: the pinned maps follow the files, and
//! the datapath survives a restart with the same entries and links.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use cilium_mcast_egress::cilium_compat::{endpoint_info, endpoint_key};
use cilium_mcast_egress::datapath::maps::{Gateway, Maps, ALL_MAPS};
use cilium_mcast_egress::datapath::tcx::{ifindex_of, links, tcx_ingress_chain};
use cilium_mcast_egress::datapath::{Paths, Plain};
use common::daemon::{self, Running};
use common::node::NodeA;
use common::sh;
use common::yaml;

const PROBE: &str = "127.0.0.1:9980";
const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const EGRESS_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const POD1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const POD2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);

/// The daemon on `manifests`, resolving every 200 ms.
fn start_daemon(manifests: &Path, bpffs: &Path, cilium: &Path) -> Running {
    Running::start(manifests, bpffs, cilium, PROBE, 200, &[])
}

fn http_get(path: &str) -> Option<u16> {
    daemon::http_status(PROBE, path)
}

/// The kernel's ID of every pinned map, by name: the same IDs after a
/// restart mean the maps were adopted, not created again.
fn map_ids(paths: &Paths) -> Vec<(&'static str, u32)> {
    ALL_MAPS
        .iter()
        .map(|name| {
            let m = MapHandle::from_pinned_path(paths.globals().join(name))
                .unwrap_or_else(|e| panic!("pinned map {name}: {e}"));
            (*name, m.info().expect("map info").info.id)
        })
        .collect()
}

fn nodes() -> String {
    format!(
        "{}---{}",
        yaml::NODE_A,
        yaml::node("node-b", "b", "192.0.2.20")
    )
}

fn endpoint(name: &str, uid: &str, ip: Ipv4Addr, identity: u32, app: &str) -> String {
    format!(
        r#"
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {{name: {name}, namespace: media, uid: {uid}}}
status:
  id: 100
  identity:
    id: {identity}
    labels:
    - k8s:app={app}
    - k8s:io.kubernetes.pod.namespace=media
  networking:
    addressing:
    - ipv4: {ip}
    node: 192.0.2.10
"#
    )
}

fn policy(gateway_label: &str) -> String {
    format!(
        r#"
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {{name: camera-ssm}}
spec:
  selectors:
  - podSelector:
      matchLabels: {{app: camera}}
  destinationCIDRs: [232.1.0.0/16, 0.0.0.0/0]
  egressGateway:
    nodeSelector:
      matchLabels: {{egress: "{gateway_label}"}}
    interface: uplink0
"#
    )
}

#[test]
fn daemon_follows_the_manifests_and_survives_restarts() {
    if !common::privileged("daemon_follows_the_manifests_and_survives_restarts") {
        return;
    }
    common::in_new_netns(|| {
        // What cilium-agent would have pinned, with the host's own entry,
        // which is not an endpoint.
        let node = NodeA::new("daemon", &[("lxc_pod1", "pod1"), ("lxc_pod2", "pod2")]);
        node.put_pod(POD1, "lxc_pod1", 4001);
        let (ours, cilium, lxc) = (&node.ours, &node.cilium, &node.lxc);
        let pod1_if = ifindex_of("lxc_pod1").unwrap();
        let pod2_if = ifindex_of("lxc_pod2").unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nodes.yaml"), nodes()).unwrap();
        std::fs::write(
            dir.path().join("pod1.yaml"),
            endpoint(
                "pod1",
                "0f8a3b52-1111-4c8e-9a51-000000000001",
                POD1,
                4001,
                "camera",
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("policy.yaml"), policy("b")).unwrap();

        let daemon = start_daemon(dir.path(), ours.path(), cilium.path());
        common::wait_for("/readyz", Duration::from_secs(20), || {
            http_get("/readyz") == Some(200)
        });
        assert_eq!(http_get("/healthz"), Some(200));
        let paths = Paths::new(ours.path());
        let maps = Maps::open_pinned(&paths).unwrap();

        // Gateway node-b: pod1's entry points there, no egress IP here.
        let entries = maps.policies().unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let (key, val) = entries[0];
        assert_eq!(key.source, POD1);
        assert_eq!(key.destination.to_string(), "232.1.0.0/16");
        assert_eq!(val.gateway, Gateway::Node(NODE_B));
        assert_eq!(val.egress_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(maps.nodes().unwrap(), vec![NODE_A, NODE_B]);
        let cfg = maps.config().unwrap();
        assert_eq!(cfg.node_ip, NODE_A);
        assert_eq!(cfg.tunnel_ifindex, ifindex_of("cilium_vxlan").unwrap());
        let eps = maps.endpoints().unwrap();
        assert_eq!(eps.len(), 1, "host entries are not endpoints: {eps:?}");
        assert_eq!(
            (eps[0].0, eps[0].1.ifindex, eps[0].1.identity),
            (POD1, pod1_if, 4001)
        );

        // A pod added.
        lab::lxc_put_at(lxc, POD2, pod2_if, 4001).unwrap();
        std::fs::write(
            dir.path().join("pod2.yaml"),
            endpoint(
                "pod2",
                "0f8a3b52-1111-4c8e-9a51-000000000002",
                POD2,
                4001,
                "camera",
            ),
        )
        .unwrap();
        common::wait_for("pod2's entry", Duration::from_secs(5), || {
            maps.policies()
                .unwrap()
                .iter()
                .any(|(k, _)| k.source == POD2)
                && maps.endpoints().unwrap().len() == 2
        });

        // The gateway moved to this node: egress IP and uplink filled in.
        std::fs::write(dir.path().join("policy.yaml"), policy("a")).unwrap();
        // Both pods' entries, or all() would hold on an empty map.
        common::wait_for("the gateway on node-a", Duration::from_secs(5), || {
            let entries = maps.policies().unwrap();
            entries.len() == 2
                && entries
                    .iter()
                    .all(|(_, v)| v.gateway == Gateway::Node(NODE_A) && v.egress_ip == EGRESS_A)
        });
        let uplink = ifindex_of("uplink0").unwrap();
        let entries = maps.policies().unwrap();
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert!(
            entries.iter().all(|(_, v)| v.egress_ifindex == uplink),
            "{entries:?}"
        );
        assert_eq!(maps.egress_ifaces().unwrap().len(), 1);
        assert_eq!(maps.egress_ifaces().unwrap()[0].0, uplink);

        // Restart: SIGTERM leaves everything in place.
        let before = maps.policies().unwrap();
        assert_eq!(before.len(), 2, "{before:?}");
        let map_ids_before = map_ids(&paths);
        let links_before = links(&paths).unwrap();
        assert_eq!(
            links_before.len(),
            4,
            "two endpoints, the tunnel's ingress and its egress: {links_before:?}"
        );
        daemon.stop();
        assert_eq!(
            maps.policies().unwrap(),
            before,
            "entries stay while the daemon is down"
        );
        for dev in ["lxc_pod1", "lxc_pod2", "cilium_vxlan"] {
            assert_eq!(
                tcx_ingress_chain(ifindex_of(dev).unwrap()).unwrap().len(),
                1,
                "{dev}"
            );
        }

        let daemon = start_daemon(dir.path(), ours.path(), cilium.path());
        common::wait_for("/readyz again", Duration::from_secs(20), || {
            http_get("/readyz") == Some(200)
        });
        // `maps` holds the old maps open, so its contents alone would not
        // show a rebuild: the pins must still name the same maps, and a
        // fresh look through them must find the same entries.
        assert_eq!(map_ids(&paths), map_ids_before, "adopted, not rebuilt");
        assert_eq!(
            Maps::open_pinned(&paths).unwrap().policies().unwrap(),
            before,
            "the entries kept"
        );
        let links_after = links(&paths).unwrap();
        assert_eq!(
            links_after.iter().map(|l| l.link_id).collect::<Vec<_>>(),
            links_before.iter().map(|l| l.link_id).collect::<Vec<_>>(),
            "the same links"
        );
        for dev in ["lxc_pod1", "lxc_pod2", "cilium_vxlan"] {
            assert_eq!(
                tcx_ingress_chain(ifindex_of(dev).unwrap()).unwrap().len(),
                1,
                "{dev}"
            );
        }

        // The policy removed: its entries go, the nodes stay.
        std::fs::remove_file(dir.path().join("policy.yaml")).unwrap();
        common::wait_for("entries removed", Duration::from_secs(5), || {
            maps.policies().unwrap().is_empty()
        });
        assert_eq!(maps.nodes().unwrap(), vec![NODE_A, NODE_B]);
        assert!(maps.egress_ifaces().unwrap().is_empty());

        // A pod's veth removed: its link pin goes too.
        sh("ip", &["link", "del", "lxc_pod2"]);
        common::wait_for(
            "pin of the vanished veth removed",
            Duration::from_secs(5),
            || {
                links(&paths)
                    .unwrap()
                    .iter()
                    .all(|l| l.device != "lxc_pod2")
            },
        );
        daemon.stop();
    });
}

/// A dual-stack pod: its IPv6 address from the CiliumEndpoint and from a
/// family-2 entry of `cilium_lxc`, an ff3e::/96 group through this node.
/// The IPv6 entry, the IPv6 endpoint and `policy list`/`status` follow; the
/// egress IPv6 is :: until the uplink has a global address, then that one.
#[test]
fn daemon_writes_ipv6_entries_for_a_dual_stack_pod() {
    if !common::privileged("daemon_writes_ipv6_entries_for_a_dual_stack_pod") {
        return;
    }
    const POD1_V6: &str = "2001:db8:100::11";
    const EGRESS_V6: &str = "2001:db8:203::10";
    common::in_new_netns(|| {
        let node = NodeA::new("daemon6", &[("lxc_pod1", "pod1")]);
        node.put_pod(POD1, "lxc_pod1", 4001);
        let pod1_if = ifindex_of("lxc_pod1").unwrap();
        let pod1_v6: Ipv6Addr = POD1_V6.parse().unwrap();
        let lxc = MapHandle::from_pinned_path(&node.lxc).unwrap();
        let value = endpoint_info {
            ifindex: pod1_if,
            sec_id: 4001,
            ..Default::default()
        };
        lxc.update(
            endpoint_key::ipv6(pod1_v6).as_bytes(),
            value.as_bytes(),
            MapFlags::ANY,
        )
        .unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nodes.yaml"), nodes()).unwrap();
        let pod = endpoint(
            "pod1",
            "0f8a3b52-1111-4c8e-9a51-000000000001",
            POD1,
            4001,
            "camera",
        )
        .replace(
            &format!("- ipv4: {POD1}"),
            &format!("- {{ipv4: {POD1}, ipv6: \"{POD1_V6}\"}}"),
        );
        std::fs::write(dir.path().join("pod1.yaml"), pod).unwrap();
        let policy = policy("a").replace(
            "[232.1.0.0/16, 0.0.0.0/0]",
            "[232.1.0.0/16, \"ff3e::/96\", \"::/0\"]",
        );
        std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();

        let daemon = start_daemon(dir.path(), node.ours.path(), node.cilium.path());
        common::wait_for("/readyz", Duration::from_secs(20), || {
            http_get("/readyz") == Some(200)
        });
        let paths = Paths::new(node.ours.path());
        let maps = Maps::open_pinned(&paths).unwrap();
        let uplink = ifindex_of("uplink0").unwrap();

        // Without a global IPv6 on the uplink: the entry, egress ::.
        common::wait_for("the IPv6 entry", Duration::from_secs(5), || {
            maps.policy_v6.len() == 1
        });
        let v6 = maps.policy_v6.entries().unwrap();
        let (key, val) = v6.iter().next().unwrap();
        assert_eq!(key.source, pod1_v6);
        assert_eq!(key.destination.to_string(), "ff3e::/96", "::/0 is Cilium's");
        assert_eq!(val.gateway, Gateway::Node(NODE_A));
        assert_eq!(
            (val.egress_ip, val.egress_ifindex),
            (Ipv6Addr::UNSPECIFIED, 0)
        );
        assert_eq!((val.origin.node, val.origin.identity), (NODE_A, 4001));
        // IPv4 alongside, as before.
        let v4 = maps.policies().unwrap();
        assert_eq!(v4.len(), 1, "{v4:?}");
        assert_eq!(
            (v4[0].1.egress_ip, v4[0].1.egress_ifindex),
            (EGRESS_A, uplink)
        );
        // The pod's IPv6 from cilium_lxc.
        let eps = maps.endpoints_v6.entries().unwrap();
        assert_eq!(eps.len(), 1, "{eps:?}");
        assert_eq!(
            eps.get(&pod1_v6).map(|e| (e.ifindex, e.identity)),
            Some((pod1_if, 4001))
        );

        // IPv6 counters of a policy that is gone are dropped at the next
        // sync; those of a live one stay.
        let counters =
            MapHandle::from_pinned_path(paths.globals().join("mcast_egw_counters_v6")).unwrap();
        let counter_key = |policy_id: u32| {
            let mut k = Vec::new();
            k.extend_from_slice(&policy_id.to_ne_bytes());
            k.extend_from_slice(&0u32.to_ne_bytes());
            k.extend_from_slice(&"ff3e::8000:1".parse::<Ipv6Addr>().unwrap().octets());
            k
        };
        let live_id = cilium_mcast_egress::resolve::fnv32a(b"camera-ssm");
        let per_cpu = vec![vec![0u8; 16]; libbpf_rs::num_possible_cpus().unwrap()];
        for id in [live_id, 0x0bad_0bad] {
            counters
                .update_percpu(&counter_key(id), &per_cpu, MapFlags::ANY)
                .unwrap();
        }

        // The uplink gets its global address: the egress IPv6 follows.
        sh(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{EGRESS_V6}/64"),
                "dev",
                "uplink0",
                "nodad",
            ],
        );
        let egress_v6: Ipv6Addr = EGRESS_V6.parse().unwrap();
        common::wait_for("the egress IPv6", Duration::from_secs(5), || {
            maps.policy_v6
                .entries()
                .unwrap()
                .values()
                .any(|v| v.egress_ip == egress_v6 && v.egress_ifindex == uplink)
        });

        let held = |id: u32| {
            counters
                .lookup_percpu(&counter_key(id), MapFlags::ANY)
                .unwrap()
                .is_some()
        };
        // Dropped in the same sync, just after the entries are written.
        common::wait_for(
            "the removed policy's IPv6 counter dropped",
            Duration::from_secs(5),
            || !held(0x0bad_0bad),
        );
        assert!(held(live_id), "the live policy's IPv6 counter");

        // The CLI lists the IPv6 entry and the IPv6 egress IP.
        let run = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"))
                .args(args)
                .args(["--bpffs-root"])
                .arg(node.ours.path())
                .args(["-o", "json"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        let rows = run(&["policy", "list"]);
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["destination_cidr"] == "ff3e::/96")
            .unwrap_or_else(|| panic!("no IPv6 row: {rows}"));
        assert_eq!(row["source_ip"], POD1_V6);
        assert_eq!(row["egress_ip"], EGRESS_V6);
        assert_eq!(row["gateway_ip"], NODE_A.to_string());
        assert_eq!(row["policy"], "camera-ssm");
        assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
        let status = run(&["status"]);
        let egress: Vec<&str> = status["gateway_for"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g["egress_ip"].as_str())
            .collect();
        assert_eq!(
            egress,
            [EGRESS_A.to_string().as_str(), EGRESS_V6],
            "{status}"
        );
        daemon.stop();
    });
}
