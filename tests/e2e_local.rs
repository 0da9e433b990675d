//! `make e2e-local`: the sidecar's image, run as a sidecar beside lab nodes
//! that are containers (as kind's nodes are), scraped by a real Prometheus.
//!
//! Each node is a container whose network namespace the lab wires as
//! always (underlay bridge, VXLAN, pods, uplinks); each node's sidecar runs
//! from the image in that namespace (`--network container:NODE`), with the
//! node's BPF filesystems and the manifests directory mounted, a read-only
//! root filesystem, every capability dropped but the sidecar's. Prometheus
//! scrapes the three sidecars over the underlay. Then a pod streams SSM
//! with iperf2 (TTL 8) to a source-specific iperf2 receiver upstream; the
//! sidecar containers are restarted (`docker restart`) mid-stream; after
//! the stream `docker stop` stops them and a second stream must still
//! leave.
//!
//! The truth for "what was sent" is an AF_PACKET tap on the pod's `lxc`
//! device (iperf2's own "Sent N" counts one more than it puts on the wire);
//! what arrived is a tap on the upstream host's NIC and iperf2's receiver.
//!
//! Not part of `make test`: it needs the image (`make image`) and a Docker
//! engine, which `make e2e-local` provides (scripts/docker-engine.sh).
//! `E2E_IMAGE` names another image.

mod common;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::lab_io::tap_in;
use common::packet::{View, ETH_P_IP, PROTO_UDP};
use lab::addr::{EGRESS_B, GROUP};
use lab::{containers, Containers, Lab, LabConfig, Node, Pod, Prometheus, NODES};

const SCRAPE: Duration = Duration::from_secs(1);
/// The first stream: long enough to restart every sidecar in its middle.
const STREAM_SECS: u32 = 16;
/// The stream while every sidecar is stopped.
const STOPPED_STREAM_SECS: u32 = 4;

/// Capability numbers (linux/capability.h) for checking a process's CapEff.
fn cap_bit(name: &str) -> u64 {
    let n = match name {
        "NET_ADMIN" => 12,
        "SYS_ADMIN" => 21,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("capability {other} not known to this test"),
    };
    1 << n
}

/// The capability set for the sidecar containers, and the sets to try on
/// the image with whether each must become ready (the set itself last).
///
/// The sidecar needs BPF, NET_ADMIN and PERFMON (tests/capabilities.rs
/// measures that with setpriv): without any one of them it is never ready.
/// An engine that does not know the names BPF and PERFMON (Docker before 23,
/// Debian 12's 20.10 among them) can grant them only through SYS_ADMIN. The
/// kernel accepts SYS_ADMIN in place of all three for what the sidecar does
/// (loading and pinning, the verifier's pointer rules, loading SCHED_CLS
/// programs and attaching tcx links), so on such an engine SYS_ADMIN alone is
/// the least that works, and that is what the sidecars get.
struct CapPlan {
    caps: Vec<&'static str>,
    why: &'static str,
    tries: Vec<(Vec<&'static str>, bool)>,
}

fn cap_plan(probe_image: &str) -> CapPlan {
    let exact = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "BPF",
            "--cap-add",
            "PERFMON",
            "--cap-add",
            "NET_ADMIN",
            probe_image,
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("docker run");
    if exact.status.success() {
        let full = vec!["BPF", "NET_ADMIN", "PERFMON"];
        let mut tries = vec![(Vec::new(), false)];
        for skip in &full {
            tries.push((full.iter().copied().filter(|c| c != skip).collect(), false));
        }
        tries.push((full.clone(), true));
        CapPlan {
            caps: full,
            why: "exactly the measured set",
            tries,
        }
    } else {
        CapPlan {
            caps: vec!["SYS_ADMIN"],
            why: "this engine does not know BPF and PERFMON; SYS_ADMIN stands in for the three",
            tries: vec![
                (Vec::new(), false),
                (vec!["NET_ADMIN"], false),
                (vec!["NET_ADMIN", "SYS_ADMIN"], true),
                (vec!["SYS_ADMIN"], true),
            ],
        }
    }
}

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn inspect(name: &str, format: &str) -> String {
    containers::docker(&["inspect", "--format", format, name])
        .expect("docker inspect")
        .trim()
        .to_owned()
}

/// The effective capabilities of `pid`.
fn cap_eff(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff")
        .trim();
    u64::from_str_radix(hex, 16).expect("CapEff hex")
}

/// What a tap saw of the stream: IPv4 UDP frames to the group, with their
/// source and TTL.
#[derive(Debug, Default, Clone)]
struct Seen {
    frames: u64,
    sources: std::collections::BTreeMap<Ipv4Addr, u64>,
    ttls: std::collections::BTreeMap<u8, u64>,
}

/// A thread counting the group's frames on one device of a lab namespace.
struct Counter {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl Counter {
    fn start(ns: &str, dev: &str) -> Counter {
        let tap = tap_in(ns, dev);
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Some(f) = tap.recv(Duration::from_millis(50)) else {
                    continue;
                };
                let v2 = View(&f);
                if f.len() < 34 || v2.ethertype() != ETH_P_IP || v2.proto() != PROTO_UDP {
                    continue;
                }
                if v2.daddr() != GROUP {
                    continue;
                }
                let mut seen = v.lock().unwrap();
                seen.frames += 1;
                *seen.sources.entry(v2.saddr()).or_default() += 1;
                *seen.ttls.entry(v2.ttl()).or_default() += 1;
            }
        });
        Counter {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stop after the stream has drained, and return what was seen.
    fn finish(mut self) -> Seen {
        std::thread::sleep(Duration::from_millis(500));
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("tap thread");
        }
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// iperf2 in lab namespace `ns`, its output captured.
fn iperf(ns: &str, args: &[&str]) -> Command {
    let mut c = lab::demo::iperf(ns, args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// The SSM receiver upstream: (203.0.113.10, 232.1.1.1) on eth0.
fn receiver(lab: &Lab, secs: u32) -> Child {
    let bind = format!("{GROUP}%eth0");
    let listen = secs.to_string();
    let child = iperf(
        &lab.upstream_ns(),
        &[
            "-s",
            "-u",
            "-B",
            &bind,
            "-H",
            &EGRESS_B.to_string(),
            "-e",
            "-t",
            &listen,
        ],
    )
    .spawn()
    .expect("iperf receiver");
    // iperf2 joins right after it starts; give it that moment.
    std::thread::sleep(Duration::from_millis(800));
    child
}

fn sender(lab: &Lab, secs: u32) -> Child {
    iperf(
        &lab.pod_ns(Pod::A1),
        &[
            "-c",
            &GROUP.to_string(),
            "-u",
            "-T",
            "8",
            "-l",
            "1316",
            "-b",
            "2M",
            "-t",
            &secs.to_string(),
            "-e",
        ],
    )
    .spawn()
    .expect("iperf sender")
}

fn output(child: Child) -> String {
    let out = child.wait_with_output().expect("iperf");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Wait until Prometheus has scraped every sidecar (up == 1) after `t`.
fn wait_scraped_after(prom: &Prometheus, t: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fresh = prom
            .query("timestamp(up) and up == 1")
            .expect("query")
            .iter()
            .filter(|s| s.value > t)
            .count();
        if fresh == NODES.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape all {} sidecars after the stream ({fresh} did); its log:\n{}",
            NODES.len(),
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const GATEWAY_PACKETS: &str = r#"sum(cilium_mcast_egress_packets_total{role="gateway"})"#;
const ORIGIN_PACKETS: &str =
    r#"sum(cilium_mcast_egress_packets_total{role="origin",node="node-a"})"#;
const DROPS: &str = "sum(cilium_mcast_egress_drops_total)";

#[test]
#[ignore = "make e2e-local: needs the image (make image) and a Docker engine"]
fn sidecar_image_beside_container_nodes_streams_through_restart_and_stop() {
    if !common::privileged("e2e_local") {
        return;
    }
    let image = std::env::var("E2E_IMAGE")
        .unwrap_or_else(|_| format!("cilium-mcast-egress:{}", env!("CARGO_PKG_VERSION")));
    assert!(
        docker_ok(&["info"]),
        "no Docker engine answers: run this through `make e2e-local`"
    );
    assert!(
        docker_ok(&["image", "inspect", &image]),
        "no image {image}: `make image` builds it"
    );

    let mut cfg = LabConfig::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"));
    cfg.manifests.push((
        "camera-ssm.yaml".into(),
        lab::demo::EXAMPLE_POLICY.to_owned(),
    ));
    let plan = cap_plan(&image);
    let (caps, why) = (plan.caps.clone(), plan.why);
    cfg.containers = Some(Containers::new(image.clone(), &caps));
    let started = Instant::now();
    let mut lab = Lab::up(cfg).expect("lab of container nodes up");
    let up_secs = started.elapsed().as_secs_f64();

    // Each sidecar: the image, no privileges, read-only root, exactly the
    // capabilities given.
    let want_caps = caps.iter().map(|c| cap_bit(c)).fold(0, |a, b| a | b);
    for node in NODES {
        let name = lab.sidecar_container(node);
        assert_eq!(inspect(&name, "{{.Config.Image}}"), image);
        assert_eq!(inspect(&name, "{{.HostConfig.Privileged}}"), "false");
        assert_eq!(inspect(&name, "{{.HostConfig.ReadonlyRootfs}}"), "true");
        assert_eq!(
            inspect(&name, "{{.HostConfig.NetworkMode}}"),
            format!(
                "container:{}",
                inspect(&lab.node_container(node), "{{.Id}}")
            )
        );
        let pid = containers::pid(&name).expect("sidecar pid");
        assert_eq!(
            cap_eff(pid),
            want_caps,
            "effective capabilities of {name}'s process"
        );
    }

    let prom = lab.start_prometheus(SCRAPE).expect("prometheus");
    let t0 = now_unix();
    wait_scraped_after(&prom, t0);
    let gateway_before = prom.scalar(GATEWAY_PACKETS).expect("query").unwrap_or(0.0);
    let origin_before = prom.scalar(ORIGIN_PACKETS).expect("query").unwrap_or(0.0);
    let drops_before = prom.scalar(DROPS).expect("query");
    assert_eq!(
        drops_before,
        Some(0.0),
        "drops before the stream (every reason is exported from the start)"
    );

    // The stream, with every sidecar restarted in its middle.
    let sent_tap = Counter::start(&lab.node_ns(Node::A), Pod::A1.lxc());
    let up_tap = Counter::start(&lab.upstream_ns(), "eth0");
    let rx = receiver(&lab, STREAM_SECS + 3);
    let tx = sender(&lab, STREAM_SECS);
    std::thread::sleep(Duration::from_secs(4));
    let mut restarts = Vec::new();
    for node in NODES {
        let name = lab.sidecar_container(node);
        let started_before = inspect(&name, "{{.State.StartedAt}}");
        let t = Instant::now();
        lab.restart_daemon(node).expect("docker restart");
        assert_ne!(
            inspect(&name, "{{.State.StartedAt}}"),
            started_before,
            "{name} was not restarted"
        );
        lab.wait_ready(node, Duration::from_secs(30))
            .expect("ready after restart");
        restarts.push((node, t.elapsed().as_secs_f64()));
    }
    let sent_out = output(tx);
    let recv_out = output(rx);
    let stream_end = now_unix();
    let sent = sent_tap.finish();
    let arrived = up_tap.finish();
    let (received, lost, source) = lab::demo::parse_received(&recv_out);
    assert!(
        sent.frames >= u64::from(STREAM_SECS) * 150,
        "the pod sent only {} datagrams in {STREAM_SECS} s; sender:\n{sent_out}",
        sent.frames
    );
    assert_eq!(
        (received, lost, source),
        (Some(sent.frames), Some(0), Some(EGRESS_B.into())),
        "iperf2's receiver: received, lost, source; it said:\n{recv_out}"
    );
    assert_eq!(arrived.frames, sent.frames, "frames on the upstream NIC");
    assert_eq!(
        arrived.sources.keys().copied().collect::<Vec<_>>(),
        vec![EGRESS_B],
        "sources on the upstream NIC"
    );
    assert_eq!(
        arrived.ttls.keys().copied().collect::<Vec<_>>(),
        vec![7],
        "TTLs on the upstream NIC (sent with 8, one hop)"
    );

    // Prometheus: the gateway's counter rose by exactly the datagrams sent
    // (the per-CPU counters live in the pinned map, across the restarts),
    // and nothing was dropped.
    wait_scraped_after(&prom, stream_end);
    let gateway_after = prom.scalar(GATEWAY_PACKETS).expect("query").unwrap_or(0.0);
    let origin_after = prom.scalar(ORIGIN_PACKETS).expect("query").unwrap_or(0.0);
    let drops_after = prom.scalar(DROPS).expect("query");
    assert_eq!(
        gateway_after - gateway_before,
        sent.frames as f64,
        "Prometheus: rise of {GATEWAY_PACKETS}"
    );
    assert_eq!(
        origin_after - origin_before,
        sent.frames as f64,
        "Prometheus: rise of {ORIGIN_PACKETS}"
    );
    assert_eq!(drops_after, Some(0.0), "Prometheus: {DROPS}");

    // `docker stop`: the sidecars exit, the datapath keeps forwarding.
    let mut exits = Vec::new();
    for node in NODES {
        let status = lab.stop_daemon(node).expect("docker stop");
        assert!(
            !containers::running(&lab.sidecar_container(node)),
            "{} still runs after docker stop",
            node.name()
        );
        exits.push(status.code());
    }
    let sent_tap = Counter::start(&lab.node_ns(Node::A), Pod::A1.lxc());
    let up_tap = Counter::start(&lab.upstream_ns(), "eth0");
    let rx = receiver(&lab, STOPPED_STREAM_SECS + 3);
    let tx = sender(&lab, STOPPED_STREAM_SECS);
    let stopped_sent_out = output(tx);
    let stopped_recv_out = output(rx);
    let stopped_sent = sent_tap.finish();
    let stopped_arrived = up_tap.finish();
    assert!(
        stopped_sent.frames > 0,
        "nothing sent while stopped:\n{stopped_sent_out}"
    );
    assert_eq!(
        stopped_arrived.frames, stopped_sent.frames,
        "frames upstream with every sidecar stopped; receiver:\n{stopped_recv_out}"
    );
    assert_eq!(
        stopped_arrived.sources.keys().copied().collect::<Vec<_>>(),
        vec![EGRESS_B]
    );
    // And Prometheus saw them go.
    let scraped_down = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = prom.query("up == 0").expect("query").len();
            if n == NODES.len() || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert_eq!(scraped_down, NODES.len(), "targets down after docker stop");

    // Least privilege, on the image: with node-a's sidecar stopped, the
    // image with each candidate set, until the sidecars' own set works.
    let mut tried = Vec::new();
    for (set, want) in &plan.tries {
        let (ready, log) = lab
            .try_sidecar(Node::A, set, Duration::from_secs(8))
            .expect("try a capability set");
        let reason = log
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("")
            .trim()
            .to_owned();
        let shown = set.join(",").to_lowercase();
        assert_eq!(
            ready, *want,
            "the image with --cap-drop ALL --cap-add {{{shown}}}: ready {ready}; {reason}"
        );
        tried.push((shown, ready, reason));
    }

    let size: u64 = containers::docker(&["image", "inspect", "--format", "{{.Size}}", &image])
        .expect("image size")
        .trim()
        .parse()
        .expect("size");
    println!();
    println!("e2e-local summary");
    println!(
        "  image                         {image}, {size} bytes ({:.1} MiB)",
        size as f64 / 1048576.0
    );
    println!(
        "  sidecar capabilities          {} ({why})",
        caps.join(", ")
    );
    println!("  lab up (3 node containers, 3 sidecars ready)  {up_secs:.1} s");
    println!(
        "  stream 1                      {} datagrams sent by pod-a1 (TTL 8, 1316 B), {} arrived upstream from {}, TTL 7",
        sent.frames,
        arrived.frames,
        arrived
            .sources
            .keys()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    println!(
        "  iperf2 receiver (S,G)         {} received, {} lost, source {}",
        received.unwrap_or(0),
        lost.unwrap_or(0),
        source.map_or("?".into(), |s| s.to_string())
    );
    for (node, secs) in &restarts {
        println!(
            "  docker restart {:<14} ready again in {secs:.1} s, mid-stream",
            node.name()
        );
    }
    println!(
        "  Prometheus {GATEWAY_PACKETS}: {gateway_before} -> {gateway_after} (+{})",
        gateway_after - gateway_before
    );
    println!(
        "  Prometheus {ORIGIN_PACKETS}: {origin_before} -> {origin_after} (+{})",
        origin_after - origin_before
    );
    println!(
        "  Prometheus {DROPS}: {}",
        drops_after.map_or("none".into(), |d| d.to_string())
    );
    println!(
        "  docker stop (exit codes {exits:?}), stream 2: {} sent, {} arrived from {}; Prometheus: {scraped_down} targets down",
        stopped_sent.frames,
        stopped_arrived.frames,
        EGRESS_B
    );
    for (set, ready, reason) in &tried {
        let set = if set.is_empty() { "(none)" } else { set };
        let outcome = if *ready {
            "ready".to_owned()
        } else {
            format!("never ready: {reason}")
        };
        println!("  image, --cap-drop ALL --cap-add {set:<26} {outcome}");
    }
    println!();
    drop(prom);
    drop(lab);
}
