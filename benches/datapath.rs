//! `make bench`: nanoseconds per packet of each datapath path, measured with
//! BPF_PROG_RUN against an empty tcx program as the baseline. Needs root.
//!
//! One timing method for every path: the kernel's own per-run average of a
//! BPF_PROG_RUN of `BATCH` runs, averaged over `RUNS / BATCH` such batches.
//! Why this one:
//! - it times the program runs only: not the syscall, nor the skb the
//!   kernel builds for each call, nor the copies of the frame in and out
//!   (~2 µs a call, which timed around a call of 250 runs would add 8 ns a
//!   packet to every row);
//! - its timer stops while the test loop yields the CPU (need_resched), so
//!   another engineer's build on this machine costs us fewer outliers than
//!   a wall clock would;
//! - it is valid for the rewrite paths too. BPF_PROG_RUN runs the same
//!   packet again on every repeat, and a rewrite lowers its TTL by one each
//!   time: from TTL 255, 250 runs all take the full rewrite (the source
//!   rewritten to the egress IP has a policy entry of its own), where a run
//!   of 1,000,000 would spend nearly all of it on the TTL-exceeded drop.
//!
//! What it costs: the kernel reports whole nanoseconds, rounded down, so
//! each row reads up to 1 ns low, every row alike (the baseline too), and
//! the "above empty" column is good to about ±1 ns.
//!
//! Each row is the median of `TRIALS` trials (with the fastest and the
//! slowest): one trial is `RUNS` runs.
//!
//! The first two tables compare the policy lookup of this build (a hash
//! probed once per prefix length in use) with the LPM trie it replaced (the
//! same programs built with it, `bpf/bench/mcast_lpm.bpf.c`), with a
//! handful of policy entries and with thousands, in the same run: IPv4's,
//! then IPv6's. The third is every
//! path of this build with thousands of entries, IPv4's and then IPv6's
//! (the same payload, 20 bytes more of header; as many IPv6 entries as
//! IPv4 ones) in the same run, so that what IPv6 costs and what IPv4 and
//! unicast still cost are read side by side. The third is where the
//! time of each multicast path goes: the same programs built to return at
//! one stage of the path (`bpf/bench/mcast_stages.bpf.c`, one load per
//! stage), timed the same way, so that each stage's cost is the difference
//! between two rows; the IPv6 paths at the stops their instance of the flow
//! shares with IPv4's. No hardware PMU in the VMs this runs on, so no
//! `bpftool prog profile` or `perf`: this is the profile.

#[path = "../tests/common/mod.rs"]
mod common;

use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject, ProgramInput, ProgramMut};

use cilium_mcast_egress::bpf_intf::mcast_test_tunnel;
use cilium_mcast_egress::datapath::maps::{
    Codec, Config, EgressIface, Endpoint, Gateway, Maps, Origin, PolicyKey6, PolicyValue6,
};
use cilium_mcast_egress::datapath::{load_skel, Datapath, DatapathStorage, Paths, Plain, Program};
use common::packet::{Ext, Frame, Frame6};
use common::{ifindex, mac_of, sh, Bpffs};

use common::skels::{empty as empty_skel, overlay_test as overlay_test_skel};

/// The programs as they were with the LPM trie policy map.
#[allow(clippy::all, dead_code, unused_imports, non_camel_case_types)]
mod lpm_skel {
    include!(concat!(env!("OUT_DIR"), "/mcast_lpm.skel.rs"));
}

/// The programs with a return at a chosen stage of each path.
#[allow(clippy::all, dead_code, unused_imports, non_camel_case_types)]
mod stages_skel {
    include!(concat!(env!("OUT_DIR"), "/mcast_stages.skel.rs"));
}

const RUNS: u32 = 1_000_000;
const BATCH: u32 = 250;
const TRIALS: usize = 7;
/// The goal of every multicast path, ns per packet.
const MCAST_GOAL_NS: f64 = 100.0;
/// The goal of unicast passthrough, against the empty program.
const UNICAST_GOAL_RATIO: f64 = 1.2;

use common::addr::{GROUP, POD_A as POD, POD_B as POD_LOCAL_GW, REMOTE_GW, THIS_NODE};
use common::{TCX_NEXT, TCX_REDIRECT};

const LOCAL_GROUP: Ipv4Addr = Ipv4Addr::new(232, 2, 1, 1);
/// The egress IP of the rewrite paths. From their second run on, the
/// packet carries it as its source and the policy lookup is for it: an
/// address among the pods' (198.51.100.0-249), so that the lookup walks as
/// deep into the trie as a pod's does, not an outlier's short path.
const EGRESS_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 251);
/// Groups Cilium replicates too: the origin clones.
const REMOTE_CLONE_GROUP: Ipv4Addr = Ipv4Addr::new(232, 1, 2, 1);
const LOCAL_CLONE_GROUP: Ipv4Addr = Ipv4Addr::new(232, 3, 1, 1);
/// A group whose /16 has an exclusion in it, not covering it.
const GROUP_BESIDE_EXCLUSION: Ipv4Addr = Ipv4Addr::new(232, 4, 1, 1);

/// The IPv6 rows' pods (2001:db8:100::<n> mirrors 198.51.100.<n>), groups
/// (SSM, ff3e::/96) and egress IP, which is among the pods' addresses for
/// the reason EGRESS_IP is.
const POD6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x11);
const POD6_LOCAL_GW: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x12);
const EGRESS_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0xfb);
const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 1, 1);
const LOCAL_GROUP6: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 2, 1);
const UNICAST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x20);

/// An Ethernet + IPv6 + UDP frame as a pod sends it: no extension
/// headers, a valid checksum.
fn udp6_frame(saddr: Ipv6Addr, daddr: Ipv6Addr, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    Frame6::udp(saddr, daddr, payload)
        .hop_limit(hop_limit)
        .bytes()
}

/// ns per run of `prog` on `frame` over `RUNS` runs in batches of `BATCH`,
/// from the kernel's per-run average of each batch (see the module comment).
fn ns_per_run(prog: &ProgramMut<'_>, ifindex: u32, frame: &[u8], want: u32) -> f64 {
    let batches = RUNS / BATCH;
    let mut sum_ns = 0u128;
    for _ in 0..batches {
        let mut ctx = common::skb_ctx(ifindex);
        let input = ProgramInput {
            context_in: Some(&mut ctx),
            data_in: Some(frame),
            repeat: BATCH,
            ..Default::default()
        };
        let out = prog.test_run(input).expect("BPF_PROG_RUN");
        assert_eq!(out.return_value, want, "verdict of the benchmarked path");
        sum_ns += out.duration.as_nanos();
    }
    sum_ns as f64 / f64::from(batches)
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

/// The stop points of `enum mcast_bench_stage` (bpf/lib/common.h), with
/// what the path has done when it returns there.
mod stage {
    pub const NONE: u32 = 0;
    pub const START: u32 = 1;
    pub const CLASSIFY: u32 = 2;
    pub const PARSE: u32 = 3;
    pub const TUNNEL_GET: u32 = 4;
    pub const NODE: u32 = 5;
    pub const POLICY: u32 = 6;
    pub const ENDPOINT: u32 = 7;
    pub const CONFIG: u32 = 8;
    pub const VALIDATE: u32 = 9;
    pub const TUNNEL_KEY: u32 = 10;
    pub const IFACE: u32 = 11;
    pub const MTU: u32 = 12;
    pub const UDP: u32 = 13;
    pub const L3: u32 = 14;
    pub const L2: u32 = 15;
    pub const COUNT: u32 = 16;
    /// The verdict of a stop: this plus the stage (MCAST_BENCH_STOPPED).
    pub const STOPPED: u32 = 1000;

    pub fn label(stage: u32) -> &'static str {
        match stage {
            START => "program entry (nothing done)",
            CLASSIFY => "IPv4 multicast? VLAN tag?",
            PARSE => "header read (IPv6: ext. walk), never-egress",
            TUNNEL_GET => "received tunnel key (test map)",
            NODE => "outer source a cluster node (hash)",
            POLICY => "policy lookup (lengths array + hash)",
            ENDPOINT => "source endpoint (hash), ifindex, identity",
            CONFIG => "config (array), origin/gateway checks",
            VALIDATE => "validation: csum, lengths, UDP",
            TUNNEL_KEY => "bpf_skb_set_tunnel_key()",
            IFACE => "uplink MAC (hash), TTL",
            MTU => "bpf_check_mtu()",
            UDP => "UDP checksum read",
            L3 => "SNAT+TTL, IPv4 csum, bpf_l4_csum_replace",
            L2 => "Ethernet header",
            COUNT => "per-CPU counter(s) (hash)",
            NONE => "bpf_redirect() and return (the whole path)",
            _ => "?",
        }
    }

    /// The label of a stop on the IPv6 instance of the flow, where it
    /// differs.
    pub fn label6(stage: u32) -> &'static str {
        match stage {
            PARSE => "fixed header, extension walk, never-egress",
            VALIDATE => "validation: lengths, chain, UDP (copied)",
            NONE => "emit (no stops inside) or tunnel, return",
            _ => label(stage),
        }
    }
}

/// The stage build with its return at `stop`, its maps the production ones
/// by their pins (every `mcast_egw_` map), its receive-side tunnel key
/// filled in. Leaked: the benchmark keeps every variant to its end.
fn load_stage(globals: &std::path::Path, stop: u32) -> stages_skel::McastStagesSkel<'static> {
    let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = stages_skel::McastStagesSkelBuilder::default()
        .open(storage)
        .expect("open the stage build");
    open.maps
        .rodata_data
        .as_mut()
        .expect("the stage build's read-only data")
        .mcast_bench_stop = stop;
    for mut map in open.open_object_mut().maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        if name.starts_with("mcast_egw_") {
            map.set_pin_path(globals.join(&name)).expect("pin path");
        }
    }
    let skel = open.load().expect("load the stage build");
    let t = mcast_test_tunnel {
        tunnel_id: 12345,
        remote_ipv4: u32::from_ne_bytes(REMOTE_GW.octets()),
        valid: 1,
        pad: 0,
    };
    skel.maps
        .mcast_test_tunnel
        .update(0u32.as_bytes(), t.as_bytes(), MapFlags::ANY)
        .expect("test tunnel key");
    skel
}

/// A path of the stage table: its program, frame and the stops it passes,
/// in order.
struct StagedPath<'a> {
    path: &'static str,
    /// mcast_from_overlay, else mcast_from_container.
    overlay: bool,
    /// The IPv6 instance of the flow (its own stop labels).
    v6: bool,
    frame: &'a [u8],
    ifindex: u32,
    stops: &'a [u32],
}

struct Row {
    path: &'static str,
    ns: Trials,
    goal: Option<Goal>,
}

#[derive(Clone, Copy)]
enum Goal {
    RatioAtMost(f64),
    NsAtMost(f64),
}

impl Goal {
    /// The goal as printed, and whether `ns` (against `baseline`) meets it.
    fn judge(self, ns: f64, baseline: f64) -> (String, bool) {
        match self {
            Goal::RatioAtMost(max) => (format!("<= {max:.1}x"), ns / baseline <= max),
            Goal::NsAtMost(max) => (format!("<= {max:.0} ns"), ns <= max),
        }
    }
}

/// One BPF_PROG_RUN: the frame and what it must be answered with.
struct Case<'a, 'p> {
    prog: &'a ProgramMut<'p>,
    ifindex: u32,
    frame: &'a [u8],
    want: u32,
}

impl Case<'_, '_> {
    fn measure(&self) -> Trials {
        trials(|| ns_per_run(self.prog, self.ifindex, self.frame, self.want))
    }
}

/// Policy entries into this build's maps and the LPM tries of the old
/// build.
struct Policies<'a> {
    maps: &'a Maps,
    lpm: &'a libbpf_rs::MapMut<'a>,
    lpm6: &'a libbpf_rs::MapMut<'a>,
}

impl Policies<'_> {
    fn insert(&self, src: Ipv4Addr, dest: &str, gateway: Gateway, uplink: u32) {
        let origin = Origin {
            node: REMOTE_GW,
            identity: 12345,
        };
        let (k, mut v) = common::policy_entry(src, dest, gateway, uplink, 1, origin);
        if gateway == Gateway::Node(THIS_NODE) {
            v.egress_ip = EGRESS_IP;
        }
        self.maps.policy_insert(&k, &v).expect("policy entry");
        self.lpm
            .update(k.encode().as_bytes(), v.encode().as_bytes(), MapFlags::ANY)
            .expect("LPM policy entry");
    }

    /// An IPv6 entry, into both builds' maps as `insert` makes them.
    fn insert6(&self, src: Ipv6Addr, dest: ipnetwork::Ipv6Network, gateway: Gateway, uplink: u32) {
        let here = gateway == Gateway::Node(THIS_NODE);
        let k = PolicyKey6 {
            source: src,
            destination: dest,
        };
        let v = PolicyValue6 {
            egress_ip: if here {
                EGRESS_IP6
            } else {
                Ipv6Addr::UNSPECIFIED
            },
            gateway,
            egress_ifindex: if here { uplink } else { 0 },
            policy_id: 1,
            origin: Origin {
                node: REMOTE_GW,
                identity: 12345,
            },
        };
        self.maps.policy_insert(&k, &v).expect("IPv6 policy entry");
        self.lpm6
            .update(k.encode().as_bytes(), v.encode().as_bytes(), MapFlags::ANY)
            .expect("IPv6 LPM policy entry");
    }
}

fn net6(addr: Ipv6Addr, prefix: u8) -> ipnetwork::Ipv6Network {
    ipnetwork::Ipv6Network::new(addr, prefix).expect("prefix")
}

fn bench() {
    common::veth("lxc_a", "pod_a");
    common::veth("uplink0", "upstream0");
    common::vxlan_external("vx0");
    // Where the clone paths' copies go: a real transmit, on veths as the
    // datapath tests use them (this kernel has no dummy devices): the
    // tunnel's underlay, with the remote gateway's neighbour entry, and a
    // second uplink.
    common::veth("under0", "under_peer");
    sh("ip", &["addr", "add", "192.0.2.10/24", "dev", "under0"]);
    common::permanent_neighbour(&REMOTE_GW.to_string(), "02:00:00:00:00:20", "under0");
    common::veth("uplink1", "upstream1");
    let (lxc, uplink, uplink1, tunnel) = (
        ifindex("lxc_a"),
        ifindex("uplink0"),
        ifindex("uplink1"),
        ifindex("vx0"),
    );

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
    let mut lpm_storage = MaybeUninit::uninit();
    let lpm = load_skel(
        lpm_skel::McastLpmSkelBuilder::default(),
        "mcast_lpm",
        &mut lpm_storage,
        &paths,
    )
    .expect("load the LPM build");
    let mut empty_storage = MaybeUninit::uninit();
    let empty = empty_skel::McastEmptySkelBuilder::default()
        .open(&mut empty_storage)
        .expect("open empty")
        .load()
        .expect("load empty");
    // The clone to the tunnel gets its key on the tunnel's egress.
    dp.attach("vx0", Program::ToOverlay)
        .expect("attach mcast_to_overlay");

    let maps = dp.maps().expect("maps");
    maps.config_set(&Config {
        node_ip: THIS_NODE,
        tunnel_ifindex: tunnel,
    })
    .unwrap();
    for (ifindex, dev) in [(uplink, "uplink0"), (uplink1, "uplink1")] {
        maps.egress_iface_insert(ifindex, &EgressIface { mac: mac_of(dev) })
            .unwrap();
    }
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
    for src in [POD6, POD6_LOCAL_GW, EGRESS_IP6] {
        maps.endpoints_v6.put(&src, &ep).unwrap();
    }
    let policies = Policies {
        maps: &maps,
        lpm: &lpm.maps.mcast_bench_policy_lpm,
        lpm6: &lpm.maps.mcast_bench_policy_lpm_v6,
    };
    policies.insert(POD, "232.1.0.0/16", Gateway::Node(REMOTE_GW), uplink);
    for src in [POD, POD_LOCAL_GW, EGRESS_IP] {
        policies.insert(src, "232.2.0.0/16", Gateway::Node(THIS_NODE), uplink);
    }
    // A group in a /16 with a longer prefix in it (an exclusion): the hash
    // probes two lengths for it, the /24 and then the /16 that matches.
    policies.insert(POD, "232.4.0.0/16", Gateway::Node(REMOTE_GW), uplink);
    policies.insert(POD, "232.4.9.0/24", Gateway::Excluded, uplink);
    // The IPv6 twins: the group's /112 through a remote gateway, or this
    // node; the rows measure them with the IPv4 ones' entries in place.
    policies.insert6(
        POD6,
        net6(Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 1, 0), 112),
        Gateway::Node(REMOTE_GW),
        uplink,
    );
    for src in [POD6, POD6_LOCAL_GW, EGRESS_IP6] {
        policies.insert6(
            src,
            net6(Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 2, 0), 112),
            Gateway::Node(THIS_NODE),
            uplink,
        );
    }
    // Other pods' entries, as a busy cluster has (BENCH_POLICY_ENTRIES
    // overrides how many).
    let extra: u32 = std::env::var("BENCH_POLICY_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let extra_entry = |i: u32| {
        let pod = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 51, 100, 0)) + (i % 250));
        let dest = format!("232.{}.{}.0/24", 10 + i / 250, i % 250);
        policies.insert(pod, &dest, Gateway::Node(REMOTE_GW), uplink);
        // As many IPv6 entries: 250 /120s in each of 16 buckets of their
        // own (bits 100-111: 10 to 25), none in the measured groups'.
        let pod6 = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, (i % 250) as u16);
        let g = Ipv6Addr::new(
            0xff3e,
            0,
            0,
            0,
            0,
            0,
            (10 + i / 250) as u16,
            ((i % 250) << 8) as u16,
        );
        policies.insert6(pod6, net6(g, 120), Gateway::Node(REMOTE_GW), uplink);
    };
    for tunnel_test in [&ovl.maps.mcast_test_tunnel, &lpm.maps.mcast_test_tunnel] {
        let t = mcast_test_tunnel {
            tunnel_id: 12345,
            remote_ipv4: u32::from_ne_bytes(REMOTE_GW.octets()),
            valid: 1,
            pad: 0,
        };
        tunnel_test
            .update(0u32.as_bytes(), t.as_bytes(), MapFlags::ANY)
            .unwrap();
    }

    let payload = [0x47u8; 1316]; // seven MPEG-TS packets
    let unicast = Frame::udp(POD, Ipv4Addr::new(198, 51, 100, 20), &payload).bytes();
    let to_remote = Frame::udp(POD, GROUP, &payload).bytes();
    let to_local = Frame::udp(POD_LOCAL_GW, LOCAL_GROUP, &payload)
        .ttl(255)
        .bytes();
    let tunnelled = Frame::udp(POD, LOCAL_GROUP, &payload).ttl(255).bytes();
    let clone_remote = Frame::udp(POD, REMOTE_CLONE_GROUP, &payload).bytes();
    let beside_exclusion = Frame::udp(POD, GROUP_BESIDE_EXCLUSION, &payload).bytes();
    let clone_local = Frame::udp(POD_LOCAL_GW, LOCAL_CLONE_GROUP, &payload).bytes();
    // The same payload over IPv6: 20 bytes more of header.
    let unicast6 = udp6_frame(POD6, UNICAST6, 64, &payload);
    let to_remote6 = udp6_frame(POD6, GROUP6, 64, &payload);
    let to_local6 = udp6_frame(POD6_LOCAL_GW, LOCAL_GROUP6, 255, &payload);
    let tunnelled6 = udp6_frame(POD6, LOCAL_GROUP6, 255, &payload);
    // And behind a hop-by-hop header with a Router Alert (RA and PadN, as
    // Linux writes it), whose options the datapath reads one by one.
    let with_hbh = |saddr, daddr, hop_limit| {
        Frame6::udp(saddr, daddr, &payload)
            .hop_limit(hop_limit)
            .ext(Ext::hop_by_hop())
            .bytes()
    };
    let to_remote6_hbh = with_hbh(POD6, GROUP6, 64);
    let tunnelled6_hbh = with_hbh(POD6, LOCAL_GROUP6, 255);

    let container = dp.program(Program::FromContainer);
    let to_overlay = dp.program(Program::ToOverlay);
    let gateway = &ovl.progs.mcast_from_overlay;
    let lpm_container = &lpm.progs.mcast_from_container;
    let lpm_gateway = &lpm.progs.mcast_from_overlay;
    let empty_prog = &empty.progs.mcast_empty;
    let (next, redirect) = (TCX_NEXT, TCX_REDIRECT);
    let case = |prog, ifindex, frame, want| Case {
        prog,
        ifindex,
        frame,
        want,
    };

    // --- the lookup, old and new, small and large ------------------------
    let compared = [
        (
            "origin: multicast to a remote gateway",
            case(lpm_container, lxc, &to_remote, redirect),
            case(container, lxc, &to_remote, redirect),
        ),
        (
            "origin: remote, a /24 exclusion in the /16",
            case(lpm_container, lxc, &beside_exclusion, redirect),
            case(container, lxc, &beside_exclusion, redirect),
        ),
        (
            "gateway: SNAT and redirect (from overlay)",
            case(lpm_gateway, tunnel, &tunnelled, redirect),
            case(gateway, tunnel, &tunnelled, redirect),
        ),
        (
            "origin on the gateway: SNAT and redirect",
            case(lpm_container, lxc, &to_local, redirect),
            case(container, lxc, &to_local, redirect),
        ),
    ];
    let empty_case = case(empty_prog, lxc, &unicast, next);
    let measure_all = || -> (Trials, Vec<(Trials, Trials)>) {
        let baseline = empty_case.measure();
        let rows = compared
            .iter()
            .map(|(_, old, new)| (old.measure(), new.measure()))
            .collect();
        (baseline, rows)
    };
    // IPv6's the same way: its trie before, its hash now.
    let compared6 = [
        (
            "IPv6 origin: multicast to a remote gateway",
            case(lpm_container, lxc, &to_remote6, redirect),
            case(container, lxc, &to_remote6, redirect),
        ),
        (
            "IPv6 gateway: SNAT and redirect (overlay)",
            case(lpm_gateway, tunnel, &tunnelled6, redirect),
            case(gateway, tunnel, &tunnelled6, redirect),
        ),
        (
            "IPv6 origin on the gateway: SNAT, redirect",
            case(lpm_container, lxc, &to_local6, redirect),
            case(container, lxc, &to_local6, redirect),
        ),
    ];
    let measure6 = || -> Vec<(Trials, Trials)> {
        compared6
            .iter()
            .map(|(_, old, new)| (old.measure(), new.measure()))
            .collect()
    };
    let small_entries = maps.policies().unwrap().len();
    let small_entries6 = maps.policy_v6.len();
    let small = measure_all();
    let small6 = measure6();
    for i in 0..extra {
        extra_entry(i);
    }
    let large_entries = maps.policies().unwrap().len();
    let large_entries6 = maps.policy_v6.len();
    let large = measure_all();
    let large6 = measure6();

    println!();
    let probed = |group| maps.policy_lens_for(group).unwrap().lens();
    println!(
        "Policy lookup: LPM trie (before) vs hash probed per prefix length (now), \
         BPF_PROG_RUN, {}-byte frames, ns/pkt, median of {TRIALS} trials (min-max)",
        to_remote.len(),
    );
    println!(
        "prefix lengths the hash probes: {:?} for {GROUP} and {LOCAL_GROUP}, \
         {:?} for {GROUP_BESIDE_EXCLUSION}",
        probed(GROUP),
        probed(GROUP_BESIDE_EXCLUSION),
    );
    assert_eq!(probed(GROUP), probed(LOCAL_GROUP));
    let small_h = format!("{small_entries} entries");
    let large_h = format!("{large_entries} entries");
    println!(
        "{:<42} {:>24} {:>24} {:>24} {:>24}",
        "",
        format!("LPM, {small_h}"),
        format!("hash, {small_h}"),
        format!("LPM, {large_h}"),
        format!("hash, {large_h}"),
    );
    let cell = |t: &Trials| format!("{:.1} ({:.1}-{:.1})", t.median, t.min, t.max);
    println!(
        "{:<42} {:>24} {:>24} {:>24} {:>24}",
        "empty tcx program (baseline)",
        cell(&small.0),
        "",
        cell(&large.0),
        ""
    );
    for (i, (path, _, _)) in compared.iter().enumerate() {
        let (s, l) = (&small.1[i], &large.1[i]);
        println!(
            "{:<42} {:>24} {:>24} {:>24} {:>24}",
            path,
            cell(&s.0),
            cell(&s.1),
            cell(&l.0),
            cell(&l.1)
        );
    }
    println!(
        "{:<42} {:>24} {:>24}",
        "growth from few to many entries, ns", "", ""
    );
    for (i, (path, _, _)) in compared.iter().enumerate() {
        let (s, l) = (&small.1[i], &large.1[i]);
        println!(
            "  {:<40} LPM {:+.1}, hash {:+.1}; hash saves {:.1} ns at {large_entries}",
            path,
            l.0.median - s.0.median,
            l.1.median - s.1.median,
            l.0.median - l.1.median,
        );
    }
    println!();
    let probed6 = |group| maps.policy_lens_for(group).unwrap().lens();
    println!(
        "IPv6 policy lookup: LPM trie (before) vs hash probed per prefix length (now), \
         {}-byte frames, the same way",
        to_remote6.len()
    );
    println!(
        "prefix lengths the hash probes: {:?} for {GROUP6} and {:?} for {LOCAL_GROUP6}",
        probed6(GROUP6),
        probed6(LOCAL_GROUP6),
    );
    let small_h6 = format!("{small_entries6} entries");
    let large_h6 = format!("{large_entries6} entries");
    println!(
        "{:<42} {:>24} {:>24} {:>24} {:>24}",
        "",
        format!("LPM, {small_h6}"),
        format!("hash, {small_h6}"),
        format!("LPM, {large_h6}"),
        format!("hash, {large_h6}"),
    );
    for (i, (path, _, _)) in compared6.iter().enumerate() {
        let (s, l) = (&small6[i], &large6[i]);
        println!(
            "{:<42} {:>24} {:>24} {:>24} {:>24}",
            path,
            cell(&s.0),
            cell(&s.1),
            cell(&l.0),
            cell(&l.1)
        );
    }
    println!(
        "{:<42} {:>24} {:>24}",
        "growth from few to many entries, ns", "", ""
    );
    for (i, (path, _, _)) in compared6.iter().enumerate() {
        let (s, l) = (&small6[i], &large6[i]);
        println!(
            "  {:<40} LPM {:+.1}, hash {:+.1}; hash saves {:.1} ns at {large_entries6}",
            path,
            l.0.median - s.0.median,
            l.1.median - s.1.median,
            l.0.median - l.1.median,
        );
    }

    // --- every path of this build, many entries ----------------------------
    let mcast = Some(Goal::NsAtMost(MCAST_GOAL_NS));
    let unicast_goal = Some(Goal::RatioAtMost(UNICAST_GOAL_RATIO));
    let baseline = empty_case.measure();
    let mut rows = vec![
        Row {
            path: "empty tcx program (baseline)",
            ns: baseline,
            goal: None,
        },
        Row {
            path: "origin: unicast passthrough",
            ns: case(container, lxc, &unicast, next).measure(),
            goal: unicast_goal,
        },
        Row {
            path: "origin: multicast to a remote gateway",
            ns: case(container, lxc, &to_remote, redirect).measure(),
            goal: mcast,
        },
        Row {
            path: "gateway: SNAT and redirect (from overlay)",
            ns: case(gateway, tunnel, &tunnelled, redirect).measure(),
            goal: mcast,
        },
        Row {
            path: "origin on the gateway: SNAT and redirect",
            ns: case(container, lxc, &to_local, redirect).measure(),
            goal: mcast,
        },
        // Every packet the node tunnels meets mcast_to_overlay on the tunnel
        // device's egress: its fast path must cost no more than the
        // origin's.
        Row {
            path: "tunnel egress: unicast passthrough",
            ns: case(to_overlay, tunnel, &unicast, next).measure(),
            goal: unicast_goal,
        },
        Row {
            path: "tunnel egress: multicast, no copy pending",
            ns: case(to_overlay, tunnel, &to_remote, next).measure(),
            goal: mcast,
        },
        // IPv6, with the IPv4 rows above in the same run: the goals are
        // IPv4's.
        Row {
            path: "origin: IPv6 unicast passthrough",
            ns: case(container, lxc, &unicast6, next).measure(),
            goal: unicast_goal,
        },
        Row {
            path: "origin: IPv6 multicast to a remote gateway",
            ns: case(container, lxc, &to_remote6, redirect).measure(),
            goal: mcast,
        },
        Row {
            path: "gateway: IPv6 SNAT and redirect (overlay)",
            ns: case(gateway, tunnel, &tunnelled6, redirect).measure(),
            goal: mcast,
        },
        Row {
            path: "origin on the gateway: IPv6 SNAT, redirect",
            ns: case(container, lxc, &to_local6, redirect).measure(),
            goal: mcast,
        },
        Row {
            path: "origin: IPv6 + hop-by-hop RA, remote gateway",
            ns: case(container, lxc, &to_remote6_hbh, redirect).measure(),
            goal: mcast,
        },
        Row {
            path: "gateway: IPv6 + hop-by-hop RA (overlay)",
            ns: case(gateway, tunnel, &tunnelled6_hbh, redirect).measure(),
            goal: mcast,
        },
    ];
    // --- where the time goes: each path stopped after each stage ---------
    let globals = paths.globals();
    let stage_paths = [
        StagedPath {
            path: "origin: multicast to a remote gateway",
            overlay: false,
            v6: false,
            frame: &to_remote,
            ifindex: lxc,
            stops: &[
                stage::START,
                stage::CLASSIFY,
                stage::PARSE,
                stage::POLICY,
                stage::ENDPOINT,
                stage::CONFIG,
                stage::VALIDATE,
                stage::TUNNEL_KEY,
                stage::COUNT,
                stage::NONE,
            ],
        },
        StagedPath {
            path: "gateway: SNAT and redirect (from overlay)",
            overlay: true,
            v6: false,
            frame: &tunnelled,
            ifindex: tunnel,
            stops: &[
                stage::START,
                stage::CLASSIFY,
                stage::PARSE,
                stage::TUNNEL_GET,
                stage::NODE,
                stage::POLICY,
                stage::CONFIG,
                stage::VALIDATE,
                stage::IFACE,
                stage::MTU,
                stage::UDP,
                stage::L3,
                stage::L2,
                stage::COUNT,
                stage::NONE,
            ],
        },
        StagedPath {
            path: "origin on the gateway: SNAT and redirect",
            overlay: false,
            v6: false,
            frame: &to_local,
            ifindex: lxc,
            stops: &[
                stage::START,
                stage::CLASSIFY,
                stage::PARSE,
                stage::POLICY,
                stage::ENDPOINT,
                stage::CONFIG,
                stage::VALIDATE,
                stage::IFACE,
                stage::MTU,
                stage::UDP,
                stage::L3,
                stage::L2,
                stage::COUNT,
                stage::NONE,
            ],
        },
    ];
    // The IPv6 instance of the same flow: the stops it shares with IPv4
    // (its classification has no stop of its own, and its rewrite none).
    let stage_paths6 = [
        StagedPath {
            path: "IPv6 origin: multicast to a remote gateway",
            overlay: false,
            v6: true,
            frame: &to_remote6,
            ifindex: lxc,
            stops: &[
                stage::START,
                stage::PARSE,
                stage::POLICY,
                stage::ENDPOINT,
                stage::CONFIG,
                stage::VALIDATE,
                stage::TUNNEL_KEY,
                stage::COUNT,
                stage::NONE,
            ],
        },
        StagedPath {
            path: "IPv6 gateway: SNAT and redirect (from overlay)",
            overlay: true,
            v6: true,
            frame: &tunnelled6,
            ifindex: tunnel,
            stops: &[
                stage::START,
                stage::PARSE,
                stage::TUNNEL_GET,
                stage::NODE,
                stage::POLICY,
                stage::CONFIG,
                stage::VALIDATE,
                stage::NONE,
            ],
        },
        StagedPath {
            path: "IPv6 origin on the gateway: SNAT and redirect",
            overlay: false,
            v6: true,
            frame: &to_local6,
            ifindex: lxc,
            stops: &[
                stage::START,
                stage::PARSE,
                stage::POLICY,
                stage::ENDPOINT,
                stage::CONFIG,
                stage::VALIDATE,
                stage::NONE,
            ],
        },
    ];
    let stage_paths: Vec<StagedPath> = stage_paths.into_iter().chain(stage_paths6).collect();
    // One build per stop, indexed by it.
    let variants: Vec<_> = (stage::NONE..=stage::COUNT)
        .map(|stop| load_stage(&globals, stop))
        .collect();
    let stage_baseline = empty_case.measure();
    let staged: Vec<Vec<(u32, Trials)>> = stage_paths
        .iter()
        .map(|sp| {
            sp.stops
                .iter()
                .map(|&stop| {
                    let skel = &variants[stop as usize];
                    let prog = if sp.overlay {
                        &skel.progs.mcast_from_overlay
                    } else {
                        &skel.progs.mcast_from_container
                    };
                    let want = if stop == stage::NONE {
                        redirect
                    } else {
                        stage::STOPPED + stop
                    };
                    (stop, case(prog, sp.ifindex, sp.frame, want).measure())
                })
                .collect()
        })
        .collect();

    // Cilium's multicast replicates these groups too: the origin clones to
    // the gateway and hands the original on. Their rows include what the
    // kernel does with the copy, inside bpf_clone_redirect(): the clone,
    // its transmit on a veth, and for the tunnel mcast_to_overlay and the
    // VXLAN encapsulation and routing.
    policies.insert(
        POD_LOCAL_GW,
        "232.3.0.0/16",
        Gateway::Node(THIS_NODE),
        uplink1,
    );
    for group in [REMOTE_CLONE_GROUP, LOCAL_CLONE_GROUP] {
        maps.cilium_group_insert(group).unwrap();
    }
    rows.push(Row {
        path: "origin: clone to a remote gateway (Cilium)",
        ns: case(container, lxc, &clone_remote, next).measure(),
        goal: mcast,
    });
    rows.push(Row {
        path: "origin on the gateway: clone, SNAT (Cilium)",
        ns: case(container, lxc, &clone_local, next).measure(),
        goal: mcast,
    });
    let copies = maps
        .counters()
        .unwrap()
        .iter()
        .filter(|c| c.group == REMOTE_CLONE_GROUP || c.group == LOCAL_CLONE_GROUP)
        .map(|c| c.packets)
        .sum::<u64>();
    let lost = maps.drops().unwrap().iter().map(|d| d.packets).sum::<u64>();

    println!();
    println!(
        "BPF_PROG_RUN, {}-byte frames ({} over IPv6), {} IPv4 and {} IPv6 policy entries, \
         ns/pkt: median of {TRIALS} trials (min-max), each {RUNS} runs in batches of {BATCH}, \
         the kernel's timing",
        to_remote.len(),
        to_remote6.len(),
        maps.policies().unwrap().len(),
        maps.policy_v6.len(),
    );
    println!(
        "{:<44} {:>9} {:>17} {:>11} {:>9}  goal",
        "path", "ns/pkt", "min-max", "above empty", "vs empty"
    );
    let mut missed = 0;
    for r in &rows {
        let goal = match r.goal {
            None => String::new(),
            Some(g) => {
                let (what, ok) = g.judge(r.ns.median, baseline.median);
                missed += usize::from(!ok);
                format!("{what}  {}", if ok { "met" } else { "MISSED" })
            }
        };
        println!(
            "{:<44} {:>9.1} {:>17} {:>+11.1} {:>8.2}x  {goal}",
            r.path,
            r.ns.median,
            format!("{:.1}-{:.1}", r.ns.min, r.ns.max),
            r.ns.median - baseline.median,
            r.ns.median / baseline.median,
        );
    }
    println!();
    println!(
        "clone rows include the kernel's clone and transmit of each copy; \
         copies counted: {copies}, drops of any kind: {lost}"
    );
    if missed > 0 {
        println!("{missed} goal(s) missed (a report, not a failure)");
    }

    println!();
    println!(
        "Where the time goes: the same programs returning after each stage \
         (bpf/bench/mcast_stages.bpf.c), {} policy entries, ns/pkt up to and including \
         the stage: median of {TRIALS} trials (min-max); \"+stage\" is the difference \
         of medians. Empty program in this run: {}",
        large_entries,
        cell(&stage_baseline),
    );
    for (sp, stages) in stage_paths.iter().zip(&staged) {
        println!("{}", sp.path);
        println!(
            "  {:<46} {:>22} {:>8} {:>11}",
            "after", "ns/pkt (min-max)", "+stage", "above empty"
        );
        let mut prev = stage_baseline.median;
        for (stop, t) in stages {
            println!(
                "  {:<46} {:>22} {:>+8.1} {:>+11.1}",
                if sp.v6 {
                    stage::label6(*stop)
                } else {
                    stage::label(*stop)
                },
                cell(t),
                t.median - prev,
                t.median - stage_baseline.median,
            );
            prev = t.median;
        }
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
