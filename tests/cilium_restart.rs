//! cilium-agent restarting: it empties `cilium_lxc` and refills it. The real
//! daemon, on a manifests directory, in a network namespace and on a BPF
//! filesystem of its own, with a `cilium_lxc` the test controls, must keep
//! every pod whose veth remains through the whole window (a pod streaming
//! covered multicast loses nothing), and still withdraw a pod whose veth is
//! really gone. Cilium's health endpoint is never taken for a pod.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cilium_mcast_egress::cilium_compat::{
    endpoint_info, endpoint_key, CILIUM_IDENTITY_HEALTH, ENDPOINT_F_HOST,
};
use cilium_mcast_egress::datapath::maps::{Gateway, Maps};
use cilium_mcast_egress::datapath::tcx::{ifindex_of, tcx_ingress_chain};
use cilium_mcast_egress::datapath::{Paths, Plain};
use common::daemon::{self, Running};
use common::node::NodeA;
use common::yaml;
use common::{sh, wait_for, PodNs, Tap};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

const PROBE: &str = "127.0.0.1:9981";
const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const POD1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const POD2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const HEALTH: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);
const GROUP: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);
const PORT: u16 = 5001;
const MAGIC: &[u8; 8] = b"cilrstrt";
/// `reserved:health`.
const IDENTITY_HEALTH: u32 = CILIUM_IDENTITY_HEALTH;
const IDENTITY_CAMERA: u32 = 4001;

fn http_get(path: &str) -> Option<u16> {
    daemon::http_status(PROBE, path)
}

fn manifests() -> String {
    let policy = yaml::cameras("camera-ssm", "232.1.0.0/16", "a");
    format!("{}---{policy}", yaml::NODE_A)
}

fn endpoint(name: &str, n: u32, ip: Ipv4Addr) -> String {
    yaml::camera(name, n, &ip.to_string(), "192.0.2.10")
}

/// Whether the pinned maps still carry `pod`: its policy entry and its
/// endpoint entry.
fn covered(maps: &Maps, pod: Ipv4Addr) -> bool {
    maps.policies()
        .expect("policies")
        .iter()
        .any(|(k, v)| k.source == pod && v.gateway == Gateway::Node(NODE_A))
        && maps
            .endpoints()
            .expect("endpoints")
            .iter()
            .any(|(ip, _)| *ip == pod)
}

/// Empty Cilium's endpoint map, as cilium-agent's restart does.
fn empty_lxc(lxc: &Path) {
    let map = MapHandle::from_pinned_path(lxc).expect("cilium_lxc");
    let keys: Vec<Vec<u8>> = map.keys().collect();
    for k in keys {
        map.delete(&k).expect("delete from cilium_lxc");
    }
    assert_eq!(map.keys().count(), 0, "emptied");
}

/// The host entry, as `create_cilium_lxc_at` writes it, again.
fn put_host_entry(lxc: &Path) {
    let map = MapHandle::from_pinned_path(lxc).expect("cilium_lxc");
    let key = endpoint_key::ipv4(NODE_A);
    let val = endpoint_info {
        ifindex: 1,
        flags: ENDPOINT_F_HOST,
        sec_id: 1,
        ..Default::default()
    };
    map.update(key.as_bytes(), val.as_bytes(), MapFlags::ANY)
        .expect("host entry");
}

/// The sequence number of one of the stream's datagrams as it leaves on
/// the uplink, or None for any other frame.
fn stream_seq(frame: &[u8]) -> Option<u32> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if *ip.get(9)? != 17 || ip.get(16..20)? != GROUP.octets() {
        return None;
    }
    let udp = ip.get(ihl..)?;
    if udp.get(2..4)? != PORT.to_be_bytes() {
        return None;
    }
    let payload = udp.get(8..)?;
    if payload.get(..8)? != MAGIC {
        return None;
    }
    Some(u32::from_be_bytes(payload.get(8..12)?.try_into().ok()?))
}

#[test]
fn cilium_refilling_its_endpoint_map_withdraws_nothing_that_lives() {
    if !common::privileged("cilium_refilling_its_endpoint_map_withdraws_nothing_that_lives") {
        return;
    }
    common::in_new_netns(|| {
        let node = NodeA::new(
            "restart",
            &[
                ("lxc_pod1", "pod1"),
                ("lxc_pod2", "pod2"),
                ("lxc_health", "health0"),
            ],
        );
        node.put_pod(POD1, "lxc_pod1", IDENTITY_CAMERA);
        node.put_pod(POD2, "lxc_pod2", IDENTITY_CAMERA);
        node.put_pod(HEALTH, "lxc_health", IDENTITY_HEALTH);
        let (ours, cilium, lxc) = (&node.ours, &node.cilium, node.lxc.clone());
        let pod1_if = ifindex_of("lxc_pod1").unwrap();
        let health_if = ifindex_of("lxc_health").unwrap();

        let pod = PodNs::new();
        pod.take("pod1");
        pod.run(|| {
            sh("ip", &["link", "set", "pod1", "up"]);
            sh("ip", &["addr", "add", "198.51.100.11/24", "dev", "pod1"]);
            sh("ip", &["route", "add", "232.0.0.0/8", "dev", "pod1"]);
        });

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cluster.yaml"), manifests()).unwrap();
        std::fs::write(dir.path().join("pod1.yaml"), endpoint("pod1", 1, POD1)).unwrap();
        std::fs::write(dir.path().join("pod2.yaml"), endpoint("pod2", 2, POD2)).unwrap();
        let daemon = Running::start(dir.path(), ours.path(), cilium.path(), PROBE, 200, &[]);
        wait_for("/readyz", Duration::from_secs(20), || {
            http_get("/readyz") == Some(200)
        });
        let maps = Maps::open_pinned(&Paths::new(ours.path())).unwrap();
        wait_for("both pods covered", Duration::from_secs(5), || {
            covered(&maps, POD1) && covered(&maps, POD2)
        });
        // Failures are collected, so that one run shows every one of them.
        let mut failures = Vec::new();

        // The health endpoint: not a pod, no program on its veth; a pod's
        // veth next to it has one (the control).
        let eps: Vec<Ipv4Addr> = maps.endpoints().unwrap().iter().map(|e| e.0).collect();
        if eps.contains(&HEALTH) {
            failures.push(format!("the health endpoint mirrored as a pod: {eps:?}"));
        }
        let health_chain = tcx_ingress_chain(health_if).unwrap().len();
        if health_chain != 0 {
            failures.push(format!("{health_chain} program(s) on lxc_health"));
        }
        assert_eq!(
            tcx_ingress_chain(pod1_if).unwrap().len(),
            1,
            "a pod's veth has our program"
        );

        // Counted where it leaves the node: the far end of the uplink, from
        // before the first datagram.
        let tap = Tap::open("upstream0");
        // The stream: pod1 sends covered multicast, numbered, every 2 ms.
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let streamer = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                pod.run(move || {
                    let s = UdpSocket::bind((POD1, 0)).expect("pod socket");
                    s.set_multicast_ttl_v4(8).expect("IP_MULTICAST_TTL");
                    let mut seq: u32 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let mut payload = MAGIC.to_vec();
                        payload.extend_from_slice(&seq.to_be_bytes());
                        s.send_to(&payload, (GROUP, PORT)).expect("send");
                        seq += 1;
                        sent.store(u64::from(seq), Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(2));
                    }
                });
                pod
            })
        };
        let received = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
        let done = Arc::new(AtomicBool::new(false));
        let receiver = {
            let (received, done) = (received.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if let Some(f) = tap.recv(Duration::from_millis(50)) {
                        if let Some(seq) = stream_seq(&f) {
                            received.lock().unwrap().insert(seq);
                        }
                    }
                }
            })
        };
        // The pinned maps, watched through the whole window.
        let withdrawn = Arc::new(AtomicU64::new(0));
        let watch_stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (withdrawn, watch_stop) = (withdrawn.clone(), watch_stop.clone());
            let maps = Maps::open_pinned(&Paths::new(ours.path())).unwrap();
            std::thread::spawn(move || {
                while !watch_stop.load(Ordering::Relaxed) {
                    if !covered(&maps, POD1) {
                        withdrawn.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        wait_for("the stream on the uplink", Duration::from_secs(5), || {
            received.lock().unwrap().len() >= 50
        });

        // cilium-agent restarts: its endpoint map emptied, and held empty
        // for ten of the daemon's passes (200 ms each).
        empty_lxc(&lxc);
        let emptied = Instant::now();
        // The daemon read the empty map and kept the living pods.
        let saw_it = (|| {
            while emptied.elapsed() < Duration::from_secs(5) {
                if daemon
                    .log_text()
                    .contains("endpoints absent from cilium_lxc kept")
                {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })();
        if !saw_it {
            failures.push("no log line: the daemon never kept an absent endpoint".into());
        }
        // An observation window, not a synchronisation: nothing may go.
        std::thread::sleep(Duration::from_secs(2).saturating_sub(emptied.elapsed()));

        // The positive control: pod2's veth really deleted (the map still
        // empty) withdraws pod2's endpoint. (Its policy entry stays: this
        // node is the gateway of its CiliumEndpoint, which still exists.)
        sh("ip", &["link", "del", "lxc_pod2"]);
        wait_for(
            "pod2 withdrawn once its veth is gone",
            Duration::from_secs(5),
            || !maps.endpoints().unwrap().iter().any(|(ip, _)| *ip == POD2),
        );

        // Refilled, partially first (the host and the health endpoint), then
        // pod1; each state held over several passes.
        put_host_entry(&lxc);
        lab::lxc_put_at(&lxc, HEALTH, health_if, IDENTITY_HEALTH).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        lab::lxc_put_at(&lxc, POD1, pod1_if, IDENTITY_CAMERA).unwrap();
        std::thread::sleep(Duration::from_secs(1));

        stop.store(true, Ordering::Relaxed);
        let _pod = streamer.join().expect("streamer");
        let sent = sent.load(Ordering::Relaxed);
        // Everything sent is on its way: wait for it to arrive, or not.
        let drained = Instant::now();
        while (received.lock().unwrap().len() as u64) < sent
            && drained.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        done.store(true, Ordering::Relaxed);
        watch_stop.store(true, Ordering::Relaxed);
        receiver.join().expect("receiver");
        watcher.join().expect("watcher");

        let got = received.lock().unwrap().len() as u64;
        if got != sent {
            failures.push(format!(
                "{} of {sent} datagrams lost while cilium_lxc was refilled",
                sent - got
            ));
        }
        let withdrawn = withdrawn.load(Ordering::Relaxed);
        if withdrawn != 0 {
            failures.push(format!(
                "pod1's entries missing from the pinned maps in {withdrawn} looks"
            ));
        }
        assert!(
            sent > 1000,
            "a stream of {sent} datagrams covers the window"
        );
        assert!(covered(&maps, POD1), "pod1 covered at the end");
        let log = daemon.log_text();
        drop(daemon);
        assert!(failures.is_empty(), "{failures:#?}\ndaemon log:\n{log}");
    });
}
