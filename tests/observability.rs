//! What an operator sees: the Prometheus scrape after real traffic on the
//! lab (exact packet and byte counts, drops by reason, gauges), across a
//! daemon restart; the scrape of a node that never carried a packet; the
//! probes before the first sync; and an unknown `--node-name` with input
//! that used to be skipped in silence, through `/readyz`, the scrape,
//! `status` and the log. Needs root.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::Duration;

use cilium_mcast_egress::datapath::maps::{
    DropReason, Family, Gateway, Maps, Role, COUNTERS_MAP, COUNTERS_V6_MAP,
};
use cilium_mcast_egress::datapath::Paths;
use common::daemon::{self, sample, Daemon, Running};
use common::lab_io::{pod_socket, send_stream, Receiver};
use common::node::NodeA;
use common::yaml;
use lab::addr::{EGRESS_B, GROUP, UPSTREAM_B};
use lab::{camera_policy, Lab, LabConfig, Node, Pod};

/// Where a daemon run by these tests (alone in its namespace) serves.
const PROBE: &str = "127.0.0.1:9980";

/// `GET path` on [`PROBE`]: status and body.
fn http_get(path: &str) -> Option<(u16, String)> {
    daemon::http_get(PROBE, path)
}

fn scrape(lab: &Lab, node: Node) -> String {
    let (status, body) = lab.http_get(node, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    body
}

fn packets(scrape: &str, role: &str, egress_ip: &str) -> (f64, f64) {
    let labels = [
        ("policy", "cameras"),
        ("group", "232.1.0.0/16"),
        ("role", role),
        ("egress_ip", egress_ip),
        ("family", "ipv4"),
    ];
    (
        sample(scrape, "cilium_mcast_egress_packets_total", &labels).unwrap_or(0.0),
        sample(scrape, "cilium_mcast_egress_bytes_total", &labels).unwrap_or(0.0),
    )
}

#[test]
fn scrape_counts_every_datagram_drops_and_survives_a_restart() {
    if !common::privileged("scrape_counts_every_datagram_drops_and_survives_a_restart") {
        return;
    }
    let mut cfg = LabConfig::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"));
    cfg.manifests = vec![
        (
            "policy.yaml".into(),
            camera_policy("cameras", &["232.1.0.0/16"], &[], Node::B),
        ),
        (
            "bad.yaml".into(),
            camera_policy("bad-prefix", &["232.0.0.0/4"], &[], Node::B),
        ),
    ];
    let mut lab = Lab::up(cfg).expect("lab");
    let rx = Receiver::join(&lab, GROUP, UPSTREAM_B, Some(EGRESS_B));
    let n = 150u32;
    let len = 400usize;
    send_stream(
        &pod_socket(&lab, Pod::A1, 8),
        GROUP,
        n,
        len,
        Duration::from_millis(1),
    );
    assert_eq!(
        rx.collect(Duration::from_millis(600), Duration::from_secs(10))
            .len(),
        n as usize
    );

    let frame = (14 + 20 + 8 + len) as f64;
    let n = f64::from(n);
    let a = scrape(&lab, Node::A);
    let b = scrape(&lab, Node::B);
    assert_eq!(
        packets(&a, "origin", ""),
        (n, n * frame),
        "node-a origin:\n{a}"
    );
    assert_eq!(
        packets(&b, "gateway", &EGRESS_B.to_string()),
        (n, n * frame),
        "node-b gateway:\n{b}"
    );
    // Gauges: the gateway of the policy, its entries, the links.
    assert_eq!(
        sample(
            &b,
            "cilium_mcast_egress_gateway",
            &[("policy", "cameras"), ("egress_ip", "203.0.113.10")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &a,
            "cilium_mcast_egress_gateway",
            &[("policy", "cameras"), ("egress_ip", "203.0.113.10")]
        ),
        None
    );
    assert_eq!(
        sample(
            &a,
            "cilium_mcast_egress_invalid_policy",
            &[("policy", "bad-prefix")]
        ),
        Some(1.0)
    );
    // node-a: pod-a1's entry (pod-a2 is not a camera).
    assert_eq!(
        sample(&a, "cilium_mcast_egress_policy_entries", &[]),
        Some(1.0)
    );
    assert_eq!(sample(&a, "cilium_mcast_egress_endpoints", &[]), Some(2.0));
    assert_eq!(sample(&a, "cilium_mcast_egress_nodes", &[]), Some(3.0));
    assert_eq!(
        sample(
            &a,
            "cilium_mcast_egress_map_capacity",
            &[("map", "mcast_egw_policy_hash_v4")]
        ),
        Some(65536.0)
    );
    assert_eq!(
        sample(&a, "cilium_mcast_egress_attached_links", &[]),
        Some(4.0),
        "two pods' veths, the tunnel device's ingress and egress"
    );
    assert_eq!(
        sample(&a, "cilium_mcast_egress_expected_links", &[]),
        Some(4.0)
    );
    assert!(
        sample(&a, "cilium_mcast_egress_last_sync_timestamp_seconds", &[]).unwrap_or(0.0) > 1.7e9
    );
    assert!(
        sample(&a, "cilium_mcast_egress_sync_duration_seconds_count", &[]).unwrap_or(0.0) >= 1.0
    );
    assert_eq!(
        sample(&a, "cilium_mcast_egress_sync_errors_total", &[]),
        Some(0.0)
    );
    assert!(
        sample(
            &a,
            "cilium_mcast_egress_source_events_total",
            &[("source", "manifests"), ("kind", "CiliumEndpoint")]
        )
        .unwrap_or(0.0)
            >= 4.0,
        "{a}"
    );

    // A TTL-1 publisher: counted as ttl_exceeded on the gateway.
    send_stream(
        &pod_socket(&lab, Pod::A1, 1),
        GROUP,
        30,
        100,
        Duration::ZERO,
    );
    common::wait_for("ttl_exceeded in the scrape", Duration::from_secs(5), || {
        sample(
            &scrape(&lab, Node::B),
            "cilium_mcast_egress_drops_total",
            &[
                ("reason", "ttl_exceeded"),
                ("role", "gateway"),
                ("family", "ipv4"),
            ],
        ) == Some(30.0)
    });
    // Every reason has a series, zero or not.
    assert_eq!(
        sample(
            &b,
            "cilium_mcast_egress_drops_total",
            &[
                ("reason", "spoofed_source"),
                ("role", "origin"),
                ("family", "ipv4")
            ]
        ),
        Some(0.0)
    );

    // A restart: the counters live in pinned maps and do not go down.
    let before_a = packets(&scrape(&lab, Node::A), "origin", "");
    let before_b = packets(&scrape(&lab, Node::B), "gateway", "203.0.113.10");
    for node in [Node::A, Node::B] {
        lab.stop_daemon(node).expect("stop");
        lab.start_daemon(node).expect("start");
        lab.wait_ready(node, Duration::from_secs(20))
            .expect("ready");
    }
    assert_eq!(packets(&scrape(&lab, Node::A), "origin", ""), before_a);
    assert_eq!(
        packets(&scrape(&lab, Node::B), "gateway", "203.0.113.10"),
        before_b
    );
}

/// This node (192.0.2.10) is the gateway of `cameras`, `bad-prefix` is
/// invalid, and one local camera pod exists that never sends.
fn quiet_manifests() -> String {
    let pod = yaml::camera("pod1", 1, "198.51.100.11", "192.0.2.10");
    let cameras = yaml::cameras("cameras", "232.1.0.0/16", "a");
    let bad_prefix = yaml::cameras("bad-prefix", "232.0.0.0/4", "a");
    format!("{}---{pod}---{cameras}---{bad_prefix}", yaml::NODE_A)
}

/// node-a with one pod, `pod` behind `lxc_pod1`, identity 4001. Returns
/// our and Cilium's BPF filesystems.
fn one_pod_node(test: &str, pod: Ipv4Addr) -> (common::Bpffs, common::Bpffs) {
    let node = NodeA::new(test, &[("lxc_pod1", "pod1")]);
    node.put_pod(pod, "lxc_pod1", 4001);
    (node.ours, node.cilium)
}

/// Most nodes never carry multicast: their scrape must still hold every
/// drop reason (at 0, so an operator can alert on a rate), the policy and
/// sync gauges, the gateway and the invalid policy, not stop after the
/// first family.
#[test]
fn quiet_node_scrape_has_drops_policy_sync_and_gateway_gauges() {
    if !common::privileged("quiet_node_scrape_has_drops_policy_sync_and_gateway_gauges") {
        return;
    }
    common::in_new_netns(|| {
        let (ours, cilium) = one_pod_node("quiet", Ipv4Addr::new(198, 51, 100, 11));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("quiet.yaml"), quiet_manifests()).unwrap();

        let _daemon = Running::start(dir.path(), ours.path(), cilium.path(), PROBE, 1000, &[]);
        common::wait_for("/readyz", Duration::from_secs(20), || {
            http_get("/readyz").map(|r| r.0) == Some(200)
        });
        let (status, m) = http_get("/metrics").expect("/metrics answers");
        assert_eq!(status, 200, "{m}");

        // Every reason of the generated enum, for both roles and both
        // families, at 0.
        for family in Family::ALL {
            for role in Role::ALL {
                for reason in DropReason::all() {
                    for name in [
                        "cilium_mcast_egress_drops_total",
                        "cilium_mcast_egress_drop_bytes_total",
                    ] {
                        let labels = [
                            ("reason", reason.label()),
                            ("role", role.label()),
                            ("family", family.label()),
                        ];
                        assert_eq!(
                            sample(&m, name, &labels),
                            Some(0.0),
                            "{name}{labels:?}:\n{m}"
                        );
                    }
                }
            }
        }
        assert_eq!(
            sample(
                &m,
                "cilium_mcast_egress_monitor_events_suppressed_total",
                &[]
            ),
            Some(0.0),
            "{m}"
        );
        assert_eq!(
            sample(&m, "cilium_mcast_egress_policy_entries", &[]),
            Some(1.0),
            "{m}"
        );
        assert_eq!(sample(&m, "cilium_mcast_egress_endpoints", &[]), Some(1.0));
        assert_eq!(sample(&m, "cilium_mcast_egress_nodes", &[]), Some(1.0));
        assert_eq!(
            sample(
                &m,
                "cilium_mcast_egress_map_entries",
                &[("map", COUNTERS_MAP)]
            ),
            Some(0.0)
        );
        assert!(
            sample(&m, "cilium_mcast_egress_sync_duration_seconds_count", &[]).unwrap_or(0.0)
                >= 1.0,
            "{m}"
        );
        assert!(
            sample(&m, "cilium_mcast_egress_last_sync_timestamp_seconds", &[]).unwrap_or(0.0)
                > 1.7e9,
            "{m}"
        );
        assert_eq!(
            sample(&m, "cilium_mcast_egress_sync_errors_total", &[]),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &m,
                "cilium_mcast_egress_gateway",
                &[("policy", "cameras"), ("egress_ip", "203.0.113.10")]
            ),
            Some(1.0),
            "{m}"
        );
        assert_eq!(
            sample(
                &m,
                "cilium_mcast_egress_invalid_policy",
                &[("policy", "bad-prefix")]
            ),
            Some(1.0),
            "{m}"
        );
        assert_eq!(
            sample(&m, "cilium_mcast_egress_attached_links", &[]),
            Some(3.0),
            "one pod's veth, the tunnel device's ingress and egress"
        );
        assert!(
            sample(
                &m,
                "cilium_mcast_egress_source_events_total",
                &[("source", "manifests"), ("kind", "CiliumEndpoint")]
            )
            .unwrap_or(0.0)
                >= 1.0,
            "{m}"
        );
        // Its node known, nothing skipped: the gauges are there, at 0.
        assert_eq!(
            sample(&m, "cilium_mcast_egress_node_missing", &[]),
            Some(0.0),
            "{m}"
        );
        assert_eq!(
            sample(&m, "cilium_mcast_egress_endpoints_without_identity", &[]),
            Some(0.0),
            "{m}"
        );
        // No traffic, no replication series: no empty families either.
        assert!(
            !m.contains("cilium_mcast_egress_packets_total"),
            "packets_total without a sample:\n{m}"
        );
        // Every family of the scrape is in README's Metrics table, with
        // its type.
        let documented = common::repo::readme_metrics();
        let families: Vec<(&str, &str)> = m
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        assert!(families.len() >= 20, "{m}");
        for (name, kind) in families {
            assert!(
                documented.iter().any(|(n, k)| n == name && k == kind),
                "{name} ({kind}) is not in README's Metrics table"
            );
        }

        // IPv6 counts, as the datapath keeps them in the `_v6` maps: in
        // the next scrape, labelled with their family.
        let paths = Paths::new(ours.path());
        let cameras = Maps::open_pinned(&paths)
            .expect("maps")
            .policies()
            .expect("policies")[0]
            .1
            .policy_id;
        let group: Ipv6Addr = "ff3e::8000:1".parse().unwrap();
        common::counters::put_counter_v6(&paths, cameras, group, Role::Origin, 12, 12 * 110);
        // A policy id no policy has: not exported.
        common::counters::put_counter_v6(&paths, cameras + 1000, group, Role::Origin, 5, 500);
        common::counters::put_drop_v6(&paths, Role::Gateway, DropReason::TTL_EXCEEDED, 9, 810);
        let (status, m) = http_get("/metrics").expect("/metrics answers");
        assert_eq!(status, 200, "{m}");
        // `cameras` has no IPv6 prefix: its IPv6 groups count under
        // `other`, apart from IPv4's.
        let labels = [
            ("policy", "cameras"),
            ("group", "other"),
            ("role", "origin"),
            ("egress_ip", ""),
            ("family", "ipv6"),
        ];
        assert_eq!(
            sample(&m, "cilium_mcast_egress_packets_total", &labels),
            Some(12.0),
            "{m}"
        );
        assert_eq!(
            sample(&m, "cilium_mcast_egress_bytes_total", &labels),
            Some(1320.0),
            "{m}"
        );
        assert_eq!(
            m.lines()
                .filter(|l| l.starts_with("cilium_mcast_egress_packets_total{"))
                .count(),
            1,
            "{m}"
        );
        let drop = |family: &str| {
            sample(
                &m,
                "cilium_mcast_egress_drops_total",
                &[
                    ("reason", "ttl_exceeded"),
                    ("role", "gateway"),
                    ("family", family),
                ],
            )
        };
        assert_eq!(drop("ipv6"), Some(9.0), "{m}");
        assert_eq!(drop("ipv4"), Some(0.0), "{m}");
        assert_eq!(
            sample(
                &m,
                "cilium_mcast_egress_map_entries",
                &[("map", COUNTERS_V6_MAP)]
            ),
            Some(2.0),
            "{m}"
        );
    });
}

#[test]
fn readyz_fails_until_the_first_sync() {
    if !common::privileged("readyz_fails_until_the_first_sync") {
        return;
    }
    common::in_new_netns(|| {
        let bpffs = common::Bpffs::new("readyz");
        let dir = tempfile::tempdir().unwrap();
        // An API server nobody answers on: the Kubernetes source never
        // syncs, so the controller never resolves.
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: 'http://127.0.0.1:9'}
contexts:
- name: lab
  context: {cluster: lab, user: lab}
current-context: lab
users:
- name: lab
  user: {token: none}
",
        )
        .unwrap();
        let _daemon = Daemon::spawn(
            daemon::command("node-a", bpffs.path(), bpffs.path(), PROBE)
                .env("KUBECONFIG", &kubeconfig)
                .env("RUST_LOG", "warn"),
        );
        let mut alive = false;
        for _ in 0..100 {
            if http_get("/healthz").map(|r| r.0) == Some(200) {
                alive = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Give the source time to try (and fail) to list.
        std::thread::sleep(Duration::from_millis(1500));
        let ready = http_get("/readyz");
        assert!(alive, "/healthz answers while nothing is synced");
        let (status, body) = ready.expect("/readyz answers");
        assert_eq!(status, 503);
        assert!(body.contains("first sync"), "{body}");
        // And why: the source's failing watches, each with its error.
        assert!(
            body.contains("kubernetes source: watch of") && body.contains("Connection refused"),
            "{body}"
        );
    });
}

/// Everything but node-a's CiliumNode: another node, this node's camera
/// pod, the policy that makes node-a its gateway; and the input that used
/// to be skipped in silence: a policy without selectors and an endpoint
/// without an identity.
const WITHOUT_NODE_A: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNode
metadata:
  name: node-b
  labels: {kubernetes.io/hostname: node-b, egress: "b"}
spec:
  addresses:
  - {type: InternalIP, ip: 192.0.2.20}
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {name: pod1, namespace: media, uid: 0f8a3b52-3333-4c8e-9a51-000000000001}
status:
  id: 100
  identity:
    id: 4001
    labels:
    - k8s:app=camera
    - k8s:io.kubernetes.pod.namespace=media
  networking:
    addressing:
    - ipv4: 198.51.100.11
    node: 192.0.2.10
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {name: no-identity, namespace: media, uid: 0f8a3b52-3333-4c8e-9a51-000000000002}
status:
  id: 101
  networking:
    addressing:
    - ipv4: 198.51.100.12
    node: 192.0.2.10
---
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: cameras}
spec:
  selectors:
  - podSelector:
      matchLabels: {app: camera}
  destinationCIDRs: [232.1.0.0/16]
  egressGateway:
    nodeSelector:
      matchLabels: {egress: "a"}
    interface: uplink0
---
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: no-selectors}
spec:
  destinationCIDRs: [232.2.0.0/16]
  egressGateway:
    nodeSelector:
      matchLabels: {egress: "a"}
    interface: uplink0
"#;

/// `status -o json` on `root`, in the calling thread's namespace.
fn status_json(root: &std::path::Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"))
        .arg("status")
        .arg("--bpffs-root")
        .arg(root)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A `--node-name` no CiliumNode has: not ready, with the reason, counted
/// and in `status`, logged once however many resolutions follow; ready
/// once the node appears, and still ready (its IP kept) when it then goes
/// missing. The skipped policy and endpoint are counted and shown too.
#[test]
fn unknown_node_name_is_not_ready_until_the_node_appears() {
    if !common::privileged("unknown_node_name_is_not_ready_until_the_node_appears") {
        return;
    }
    common::in_new_netns(|| {
        let (ours, cilium) = one_pod_node("nodename", Ipv4Addr::new(198, 51, 100, 11));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cluster.yaml"), WITHOUT_NODE_A).unwrap();

        let daemon = Running::start(dir.path(), ours.path(), cilium.path(), PROBE, 100, &[]);
        let log_lines = |what: &str| daemon.log_lines(what);
        let metric = |name: &str, labels: &[(&str, &str)]| daemon.metric(name, labels);

        // Synced, and still not ready: the reason is the node.
        let reason = "no CiliumNode is named \"node-a\" (--node-name)";
        // The first sync and the links come within a pass or two of the
        // start; until then /readyz names them too.
        let mut last = String::new();
        common::wait_for(
            "/readyz naming the node, and nothing else",
            Duration::from_secs(20),
            || {
                let Some((s, body)) = http_get("/readyz") else {
                    return false;
                };
                let only_node = s == 503
                    && body.contains(reason)
                    && !body.contains("first sync")
                    && !body.contains("links missing");
                last = body;
                only_node
            },
        );
        // And it stays so: the node is what holds readiness back.
        let (status, body) = http_get("/readyz").unwrap();
        assert_eq!(status, 503, "{body} (last while waiting: {last})");
        assert!(body.contains(reason), "{body}");
        assert!(!body.contains("first sync"), "the sync is done: {body}");
        assert!(
            !body.contains("links missing"),
            "the links are there: {body}"
        );
        assert_eq!(http_get("/healthz").map(|r| r.0), Some(200));
        assert_eq!(metric("cilium_mcast_egress_node_missing", &[]), Some(1.0));
        assert_eq!(
            metric("cilium_mcast_egress_endpoints_without_identity", &[]),
            Some(1.0)
        );
        assert_eq!(
            metric(
                "cilium_mcast_egress_invalid_policy",
                &[("policy", "no-selectors")]
            ),
            Some(1.0)
        );
        // Only the pod's own entry, towards no gateway: none of node-a's.
        let maps = Maps::open_pinned(&Paths::new(ours.path())).unwrap();
        let entries = maps.policies().unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].1.gateway, Gateway::NotFound, "{entries:?}");
        assert_eq!(maps.config().unwrap().node_ip, Ipv4Addr::UNSPECIFIED);

        let s = status_json(ours.path());
        let c = &s["controller"];
        assert_eq!(c["ready"], false, "{s}");
        assert!(
            c["not_ready"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.as_str().unwrap().contains(reason)),
            "{s}"
        );
        assert_eq!(c["node_missing"], true, "{s}");
        assert_eq!(c["invalid_policies"], 1, "{s}");
        assert_eq!(c["endpoints_without_identity"], 1, "{s}");
        let kinds: Vec<(&str, &str, &str)> = c["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["kind"].as_str().unwrap(),
                    p["name"].as_str().unwrap(),
                    p["severity"].as_str().unwrap(),
                )
            })
            .collect();
        // This node first; `cameras` has no gateway without node-a.
        assert_eq!(
            kinds,
            [
                ("node", "node-a", "invalid"),
                ("policy", "cameras", "warning"),
                ("policy", "no-selectors", "invalid"),
                ("endpoints", "", "warning"),
            ],
            "{s}"
        );
        assert!(
            c["problems"][3]["message"]
                .as_str()
                .unwrap()
                .contains("media/no-identity"),
            "{s}"
        );

        // More resolutions (a node added elsewhere, awaited through the
        // nodes map): each finding is still logged once.
        let syncs = metric("cilium_mcast_egress_sync_duration_seconds_count", &[]).unwrap();
        std::fs::write(
            dir.path().join("node-c.yaml"),
            yaml::node("node-c", "c", "192.0.2.30"),
        )
        .unwrap();
        common::wait_for("node-c synced", Duration::from_secs(10), || {
            metric("cilium_mcast_egress_nodes", &[]) == Some(2.0)
        });
        assert!(metric("cilium_mcast_egress_sync_duration_seconds_count", &[]).unwrap() > syncs);
        assert_eq!(
            http_get("/readyz").map(|r| r.0),
            Some(503),
            "still no node-a"
        );
        for what in [
            "this node's CiliumNode is missing",
            "selectors is missing or empty",
            "media/no-identity",
        ] {
            assert_eq!(
                log_lines(what).len(),
                1,
                "{what}: {:#?}",
                daemon.log.lock().unwrap()
            );
        }
        assert!(
            log_lines("this node's CiliumNode is missing")[0].contains("ERROR"),
            "loud: {:?}",
            log_lines("this node's CiliumNode is missing")
        );

        // Positive control: the node appears, and everything proceeds.
        std::fs::write(dir.path().join("node-a.yaml"), yaml::NODE_A).unwrap();
        common::wait_for("/readyz 200", Duration::from_secs(10), || {
            http_get("/readyz").map(|r| r.0) == Some(200)
        });
        assert_eq!(metric("cilium_mcast_egress_node_missing", &[]), Some(0.0));
        let node_a = Ipv4Addr::new(192, 0, 2, 10);
        common::wait_for("node-a's gateway entry", Duration::from_secs(5), || {
            let entries = maps.policies().unwrap();
            entries.len() == 1 && entries[0].1.gateway == Gateway::Node(node_a)
        });
        assert_eq!(maps.config().unwrap().node_ip, node_a);
        let s = status_json(ours.path());
        let c = &s["controller"];
        assert_eq!(c["ready"], true, "{s}");
        assert_eq!(c["node_missing"], false, "{s}");
        assert_eq!(c["not_ready"], serde_json::json!([]), "{s}");
        assert_eq!(c["problems"][0]["name"], "no-selectors", "{s}");
        assert_eq!(s["node_ip"], "192.0.2.10", "{s}");
        assert_eq!(
            log_lines("resolved")
                .iter()
                .filter(|l| l.contains("node-a"))
                .count(),
            1,
            "{:#?}",
            daemon.log.lock().unwrap()
        );

        // Known, then missing from the objects: its IP is kept and it
        // stays ready; the metric and the log still say it is missing.
        std::fs::remove_file(dir.path().join("node-a.yaml")).unwrap();
        common::wait_for("node-a missing again", Duration::from_secs(10), || {
            metric("cilium_mcast_egress_node_missing", &[]) == Some(1.0)
        });
        assert_eq!(http_get("/readyz").map(|r| r.0), Some(200));
        assert_eq!(maps.config().unwrap().node_ip, node_a);
        assert!(
            log_lines("keeping this node's last known IP 192.0.2.10").len() == 1,
            "{:#?}",
            daemon.log.lock().unwrap()
        );
    });
}

/// node-a is the gateway of `cameras` (a /16 with a /24 carved out: two
/// entries a pod) for `pods` on node-b, and this node's own pod
/// 198.51.100.200 is a camera too; `mics` (gateway node-b) selects nothing
/// here but is a policy whose name the CLI wants.
fn full_map_manifests(remote_pods: u8) -> String {
    let node_b = yaml::node("node-b", "b", "192.0.2.20");
    let mut out = format!("{}---{node_b}---", yaml::NODE_A);
    out.push_str(
        r#"
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: cameras}
spec:
  selectors:
  - podSelector:
      matchLabels: {app: camera}
  destinationCIDRs: [232.1.0.0/16]
  excludedCIDRs: [232.1.255.0/24]
  egressGateway:
    nodeSelector:
      matchLabels: {egress: "a"}
    interface: uplink0
---
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: mics}
spec:
  selectors:
  - podSelector:
      matchLabels: {app: mic}
  destinationCIDRs: [232.9.0.0/16]
  egressGateway:
    nodeSelector:
      matchLabels: {egress: "b"}
    interface: uplink0
"#,
    );
    let pods = (1..=remote_pods)
        .map(|n| (format!("remote-{n}"), n, "192.0.2.20"))
        .chain([("own".to_string(), 200, "192.0.2.10")]);
    for (name, n, node) in pods {
        let pod = yaml::camera(&name, n.into(), &format!("198.51.100.{n}"), node);
        out.push_str(&format!("---{pod}"));
    }
    out
}

/// A policy map too small for what this node needs: this node's own pod is
/// written first, the pods it serves as a gateway fill what is left, each
/// pod whole (never a /16 without the /24 carved out of it), and the
/// shortfall is there for the operator (needed vs capacity) in the log
/// (once), the scrape, `/readyz` and `status`. The policy-name map likewise.
/// When the cluster shrinks to fit, all of it clears.
#[test]
fn full_policy_map_keeps_own_pods_and_reports_the_shortfall() {
    if !common::privileged("full_policy_map_keeps_own_pods_and_reports_the_shortfall") {
        return;
    }
    common::in_new_netns(|| {
        let own = Ipv4Addr::new(198, 51, 100, 200);
        let (ours, cilium) = one_pod_node("fullmap", own);
        let dir = tempfile::tempdir().unwrap();
        // Six remote pods and this node's: 14 entries for a map of 8.
        std::fs::write(dir.path().join("cluster.yaml"), full_map_manifests(6)).unwrap();

        let daemon = Running::start(
            dir.path(),
            ours.path(),
            cilium.path(),
            PROBE,
            100,
            &["--policy-map-entries", "8", "--policy-names-entries", "1"],
        );
        let log_lines = |what: &str| daemon.log_lines(what);
        let metric = |name: &str, labels: &[(&str, &str)]| daemon.metric(name, labels);
        let policy_map = [("map", "mcast_egw_policy_hash_v4")];
        let names_map = [("map", "mcast_egw_policy_names")];

        let reason = "6 of the 14 policy entries this node needs do not fit \
                      mcast_egw_policy_hash_v4 (capacity 8)";
        // Ready in all but the shortfall: what fits is synced.
        common::wait_for(
            "/readyz naming the shortfall alone",
            Duration::from_secs(20),
            || {
                http_get("/readyz").is_some_and(|(s, body)| {
                    s == 503 && body.contains(reason) && body.lines().count() == 1
                })
            },
        );
        assert_eq!(log_lines("first sync done").len(), 1);

        // The map: this node's pod whole, then remote pods whole by address
        // while they fit (1 and 2), nothing of the rest.
        let maps = Maps::open_pinned(&Paths::new(ours.path())).unwrap();
        assert_eq!(maps.policy_capacity(), 8);
        let entries = maps.policies().unwrap();
        let sources: std::collections::BTreeSet<Ipv4Addr> =
            entries.iter().map(|(k, _)| k.source).collect();
        let remote = |n: u8| Ipv4Addr::new(198, 51, 100, n);
        assert_eq!(
            sources,
            [own, remote(1), remote(2), remote(3)].into(),
            "{entries:?}"
        );
        assert_eq!(entries.len(), 8, "{entries:?}");
        for source in &sources {
            let kinds: Vec<Gateway> = entries
                .iter()
                .filter(|(k, _)| k.source == *source)
                .map(|(_, v)| v.gateway)
                .collect();
            assert_eq!(
                kinds,
                [
                    Gateway::Node(Ipv4Addr::new(192, 0, 2, 10)),
                    Gateway::Excluded
                ],
                "{source}: the /16 and its exclusion together"
            );
        }

        // The scrape.
        for (name, labels, want) in [
            ("map_capacity", &policy_map[..], 8.0),
            ("map_entries", &policy_map, 8.0),
            ("map_entries_needed", &policy_map, 14.0),
            ("map_entries_left_out", &policy_map, 6.0),
            ("map_entries_needed", &names_map, 2.0),
            ("map_entries_left_out", &names_map, 1.0),
            ("sync_errors_total", &[], 0.0),
        ] {
            let name = format!("cilium_mcast_egress_{name}");
            assert_eq!(metric(&name, labels), Some(want), "{name} {labels:?}");
        }
        // The name kept is that of the policy with entries here.
        let names = maps.policy_names().unwrap();
        assert_eq!(names.values().collect::<Vec<_>>(), ["cameras"], "{names:?}");

        // `status`.
        let s = status_json(ours.path());
        let c = &s["controller"];
        assert_eq!(c["ready"], false, "{s}");
        let problems: Vec<(&str, &str, &str, &str)> = c["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["kind"].as_str().unwrap(),
                    p["name"].as_str().unwrap(),
                    p["severity"].as_str().unwrap(),
                    p["message"].as_str().unwrap(),
                )
            })
            .collect();
        assert!(
            problems.iter().any(|(k, n, s, m)| *k == "map"
                && *n == "mcast_egw_policy_hash_v4"
                && *s == "invalid"
                && m.starts_with("14 entries needed, capacity 8: 6 entries of 3 pods")
                && m.contains("0 of them this node's own pods")
                && m.contains("--policy-map-entries")),
            "{s}"
        );
        assert!(
            problems.iter().any(|(k, n, s, m)| *k == "map"
                && *n == "mcast_egw_policy_names"
                && *s == "warning"
                && m.starts_with("2 entries needed, capacity 1")),
            "{s}"
        );

        // More passes, more resolutions: each shortfall logged once.
        let syncs = metric("cilium_mcast_egress_sync_duration_seconds_count", &[]).unwrap();
        common::wait_for("more resolutions", Duration::from_secs(10), || {
            metric("cilium_mcast_egress_sync_duration_seconds_count", &[]).unwrap() > syncs
        });
        let short = log_lines("map too small for this node");
        assert_eq!(short.len(), 2, "{short:#?}");
        assert!(short
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("14 entries needed")));

        // The cluster shrinks to two remote pods: everything fits, ready.
        std::fs::write(dir.path().join("cluster.yaml"), full_map_manifests(2)).unwrap();
        common::wait_for(
            "/readyz ready once it fits",
            Duration::from_secs(20),
            || http_get("/readyz").is_some_and(|(s, _)| s == 200),
        );
        assert_eq!(
            metric("cilium_mcast_egress_map_entries_left_out", &policy_map),
            Some(0.0)
        );
        assert_eq!(maps.policies().unwrap().len(), 6);
        assert!(
            log_lines("resolved")
                .iter()
                .any(|l| l.contains("map mcast_egw_policy_hash_v4")),
            "{:#?}",
            daemon.log.lock().unwrap()
        );

        // An entry removed behind the controller's back, with nothing else
        // changed, is written again by the periodic repair (every 30
        // passes, here 100 ms each).
        let (key, _) = maps.policies().unwrap()[0];
        assert!(maps.policy_delete(&key).unwrap());
        common::wait_for("the entry repaired", Duration::from_secs(15), || {
            maps.policy_get(&key).unwrap().is_some()
        });
    });
}

/// A sync that keeps failing (here: the nodes map frozen behind the
/// controller's back, so a new node cannot be written) is retried every
/// pass, counted every time, and logged once, not once a pass.
#[test]
fn a_failing_sync_is_retried_counted_and_logged_once() {
    if !common::privileged("a_failing_sync_is_retried_counted_and_logged_once") {
        return;
    }
    common::in_new_netns(|| {
        let (ours, cilium) = one_pod_node("syncfail", Ipv4Addr::new(198, 51, 100, 200));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cluster.yaml"), full_map_manifests(1)).unwrap();
        let daemon = Running::start(dir.path(), ours.path(), cilium.path(), PROBE, 100, &[]);
        // The control: it syncs, and is ready.
        common::wait_for("/readyz 200", Duration::from_secs(20), || {
            http_get("/readyz").is_some_and(|(s, _)| s == 200)
        });
        assert_eq!(
            daemon.metric("cilium_mcast_egress_sync_errors_total", &[]),
            Some(0.0)
        );

        let nodes = Paths::new(ours.path()).globals().join("mcast_egw_nodes");
        libbpf_rs::MapHandle::from_pinned_path(&nodes)
            .unwrap()
            .freeze()
            .unwrap();
        std::fs::write(
            dir.path().join("node-c.yaml"),
            yaml::node("node-c", "c", "192.0.2.30"),
        )
        .unwrap();
        common::wait_for("ten failed syncs", Duration::from_secs(20), || {
            daemon
                .metric("cilium_mcast_egress_sync_errors_total", &[])
                .is_some_and(|n| n >= 10.0)
        });
        let failures = daemon.log_lines("syncing policy maps; retrying every pass");
        assert_eq!(failures.len(), 1, "{failures:#?}");
        assert!(failures[0].contains("ERROR"), "{}", failures[0]);
        assert_eq!(http_get("/healthz").map(|r| r.0), Some(200));
    });
}
