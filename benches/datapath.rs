//! `make bench`: nanoseconds per packet of each datapath path, measured with
//! BPF_PROG_RUN against an empty tcx program as the baseline. Needs root.
//!
//! Paths that leave the packet as it was are run with one BPF_PROG_RUN of
//! 1,000,000 repeats and timed around the call (the call's own setup is
//! ~2 µs, 0.002 ns a packet). The rewrite paths change the very packet that
//! BPF_PROG_RUN's repeat runs again: its TTL falls by one each run. They are
//! run in batches of 250 from TTL 255 (the source rewritten to the egress IP
//! has a policy entry of its own, so every run does the full rewrite) and
//! timed by the kernel's per-run average, to 1,000,000 runs in all.

#[path = "../tests/common/mod.rs"]
mod common;

use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, ProgramInput, ProgramMut};

use cilium_mcast_egress::bpf_intf::mcast_test_tunnel;
use cilium_mcast_egress::datapath::maps::{Config, EgressIface, Endpoint, Gateway, Origin};
use cilium_mcast_egress::datapath::{load_skel, Datapath, DatapathStorage, Paths, Plain, Program};
use common::packet::Frame;
use common::{ifindex, mac_of, Bpffs};

use common::skels::{empty as empty_skel, overlay_test as overlay_test_skel};

const RUNS: u32 = 1_000_000;
const BATCH: u32 = 250;
const TRIALS: usize = 7;
use common::addr::{EGRESS_IP, GROUP, POD_A as POD, POD_B as POD_LOCAL_GW, REMOTE_GW, THIS_NODE};
use common::{TCX_NEXT, TCX_REDIRECT};

const LOCAL_GROUP: Ipv4Addr = Ipv4Addr::new(232, 2, 1, 1);

/// ns per run of one BPF_PROG_RUN of `repeat` runs, timed around the call.
fn wall_ns(prog: &ProgramMut<'_>, ifindex: u32, frame: &[u8], repeat: u32, want: u32) -> f64 {
    let mut ctx = common::skb_ctx(ifindex);
    let input = ProgramInput {
        context_in: Some(&mut ctx),
        data_in: Some(frame),
        repeat,
        ..Default::default()
    };
    let start = Instant::now();
    let out = prog.test_run(input).expect("BPF_PROG_RUN");
    let elapsed = start.elapsed();
    assert_eq!(out.return_value, want, "verdict of the benchmarked path");
    elapsed.as_nanos() as f64 / f64::from(repeat)
}

/// ns per run over `total` runs in batches, from the kernel's averages.
fn batched_ns(prog: &ProgramMut<'_>, ifindex: u32, frame: &[u8], total: u32, want: u32) -> f64 {
    let mut sum = Duration::ZERO;
    for _ in 0..total / BATCH {
        let mut ctx = common::skb_ctx(ifindex);
        let input = ProgramInput {
            context_in: Some(&mut ctx),
            data_in: Some(frame),
            repeat: BATCH,
            ..Default::default()
        };
        let out = prog.test_run(input).expect("BPF_PROG_RUN");
        assert_eq!(out.return_value, want, "verdict of the benchmarked path");
        sum += out.duration * BATCH;
    }
    sum.as_nanos() as f64 / f64::from(total)
}

/// The median of `TRIALS` trials, with the fastest and the slowest.
#[derive(Clone, Copy)]
struct Trials {
    median: f64,
    min: f64,
    max: f64,
}

fn trials(f: impl Fn() -> f64) -> Trials {
    let mut ns: Vec<f64> = (0..TRIALS).map(|_| f()).collect();
    ns.sort_by(f64::total_cmp);
    Trials {
        median: ns[ns.len() / 2],
        min: ns[0],
        max: ns[ns.len() - 1],
    }
}

struct Row {
    path: &'static str,
    runs: String,
    ns: Trials,
    goal: Option<Goal>,
}

enum Goal {
    RatioAtMost(f64),
    NsBelow(f64),
}

fn bench() {
    common::veth("lxc_a", "pod_a");
    common::veth("uplink0", "upstream0");
    common::vxlan_external("vx0");
    let (lxc, uplink, tunnel) = (ifindex("lxc_a"), ifindex("uplink0"), ifindex("vx0"));

    let bpffs = Bpffs::new("bench");
    let paths = Paths::new(bpffs.path());
    let mut storage = DatapathStorage::default();
    let dp = Datapath::load(&mut storage, paths.clone()).expect("load datapath");
    let mut ovl_storage = MaybeUninit::uninit();
    let ovl = load_skel(
        overlay_test_skel::McastFromOverlayTestSkelBuilder::default(),
        "mcast_from_overlay_test",
        &mut ovl_storage,
        &paths,
    )
    .expect("load test overlay");
    let mut empty_storage = MaybeUninit::uninit();
    let empty = empty_skel::McastEmptySkelBuilder::default()
        .open(&mut empty_storage)
        .expect("open empty")
        .load()
        .expect("load empty");

    let maps = dp.maps().expect("maps");
    maps.config_set(&Config {
        node_ip: THIS_NODE,
        tunnel_ifindex: tunnel,
    })
    .unwrap();
    maps.egress_iface_insert(
        uplink,
        &EgressIface {
            mac: mac_of("uplink0"),
        },
    )
    .unwrap();
    maps.node_insert(REMOTE_GW).unwrap();
    let ep = Endpoint {
        ifindex: lxc,
        identity: 12345,
    };
    // EGRESS_IP as a source: after the first run of a rewrite path the
    // packet carries it, and every later run must take the same full path.
    for src in [POD, POD_LOCAL_GW, EGRESS_IP] {
        maps.endpoint_insert(src, &ep).unwrap();
    }
    let policy = |src: Ipv4Addr, dest: &str, gateway: Gateway| {
        let origin = Origin {
            node: REMOTE_GW,
            identity: 12345,
        };
        let (k, v) = common::policy_entry(src, dest, gateway, uplink, 1, origin);
        maps.policy_insert(&k, &v).unwrap();
    };
    policy(POD, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    for src in [POD, POD_LOCAL_GW, EGRESS_IP] {
        policy(src, "232.2.0.0/16", Gateway::Node(THIS_NODE));
    }
    // A few thousand other entries, as a busy cluster has
    // (BENCH_POLICY_ENTRIES overrides how many).
    let extra: u32 = std::env::var("BENCH_POLICY_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    for i in 0..extra {
        let pod = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 51, 100, 0)) + (i % 250));
        let dest = format!("232.{}.{}.0/24", 10 + i / 250, i % 250);
        policy(pod, &dest, Gateway::Node(REMOTE_GW));
    }
    let t = mcast_test_tunnel {
        tunnel_id: 12345,
        remote_ipv4: u32::from_ne_bytes(REMOTE_GW.octets()),
        valid: 1,
        pad: 0,
    };
    ovl.maps
        .mcast_test_tunnel
        .update(0u32.as_bytes(), t.as_bytes(), MapFlags::ANY)
        .unwrap();
    maps.node_insert(REMOTE_GW).unwrap();

    let payload = [0x47u8; 1316]; // seven MPEG-TS packets
    let unicast = Frame::udp(POD, Ipv4Addr::new(198, 51, 100, 20), &payload).bytes();
    let to_remote = Frame::udp(POD, GROUP, &payload).bytes();
    let to_local = Frame::udp(POD_LOCAL_GW, Ipv4Addr::new(232, 2, 1, 1), &payload)
        .ttl(255)
        .bytes();
    let tunnelled = Frame::udp(POD, LOCAL_GROUP, &payload).ttl(255).bytes();

    let container = dp.program(Program::FromContainer);
    let gateway = &ovl.progs.mcast_from_overlay;
    let empty_prog = &empty.progs.mcast_empty;
    let (next, redirect) = (TCX_NEXT, TCX_REDIRECT);

    let baseline = trials(|| wall_ns(empty_prog, lxc, &unicast, RUNS, next));
    let rows = [
        Row {
            path: "empty tcx program (baseline)",
            runs: format!("{RUNS}"),
            ns: baseline,
            goal: None,
        },
        Row {
            path: "origin: unicast passthrough",
            runs: format!("{RUNS}"),
            ns: trials(|| wall_ns(container, lxc, &unicast, RUNS, next)),
            goal: Some(Goal::RatioAtMost(1.2)),
        },
        Row {
            path: "origin: multicast to a remote gateway",
            runs: format!("{RUNS}"),
            ns: trials(|| wall_ns(container, lxc, &to_remote, RUNS, redirect)),
            goal: Some(Goal::NsBelow(150.0)),
        },
        Row {
            path: "gateway: SNAT and redirect (from overlay)",
            runs: format!("{}x{BATCH}", RUNS / BATCH),
            ns: trials(|| batched_ns(gateway, tunnel, &tunnelled, RUNS, redirect)),
            goal: Some(Goal::NsBelow(150.0)),
        },
        Row {
            path: "origin on the gateway: SNAT and redirect",
            runs: format!("{}x{BATCH}", RUNS / BATCH),
            ns: trials(|| batched_ns(container, lxc, &to_local, RUNS, redirect)),
            goal: Some(Goal::NsBelow(150.0)),
        },
        // Every packet the node tunnels meets mcast_to_overlay on the tunnel
        // device's egress: its fast path must cost no more than the
        // origin's.
        Row {
            path: "tunnel egress: unicast passthrough",
            runs: format!("{RUNS}"),
            ns: trials(|| wall_ns(dp.program(Program::ToOverlay), tunnel, &unicast, RUNS, next)),
            goal: Some(Goal::RatioAtMost(1.2)),
        },
        Row {
            path: "tunnel egress: multicast, no copy pending",
            runs: format!("{RUNS}"),
            ns: trials(|| {
                wall_ns(
                    dp.program(Program::ToOverlay),
                    tunnel,
                    &to_remote,
                    RUNS,
                    next,
                )
            }),
            goal: None,
        },
    ];

    println!();
    println!(
        "BPF_PROG_RUN, {}-byte frames, {} policy entries, median of {TRIALS} trials (min-max)",
        to_remote.len(),
        maps.policies().unwrap().len()
    );
    println!(
        "{:<44} {:>13} {:>9} {:>17} {:>9}  goal",
        "path", "runs", "ns/pkt", "min-max", "vs empty"
    );
    let mut missed = 0;
    for r in &rows {
        let ratio = r.ns.median / baseline.median;
        let goal = match r.goal {
            None => String::new(),
            Some(Goal::RatioAtMost(max)) => {
                let ok = ratio <= max;
                missed += usize::from(!ok);
                format!("<= {max:.1}x  {}", if ok { "met" } else { "MISSED" })
            }
            Some(Goal::NsBelow(max)) => {
                let ok = r.ns.median < max;
                missed += usize::from(!ok);
                format!("< {max:.0} ns  {}", if ok { "met" } else { "MISSED" })
            }
        };
        println!(
            "{:<44} {:>13} {:>9.2} {:>17} {:>8.2}x  {goal}",
            r.path,
            r.runs,
            r.ns.median,
            format!("{:.2}-{:.2}", r.ns.min, r.ns.max),
            ratio
        );
    }
    println!();
    if missed > 0 {
        println!("{missed} goal(s) missed (a report, not a failure)");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; there are no filters to honour.
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!(
            "make bench needs root (BPF_PROG_RUN, network namespaces): run `sudo make bench`"
        );
        std::process::exit(1);
    }
    common::in_new_netns(bench);
}
