//! The inspection CLI, run as the real binary against real pinned state:
//! `policy list`, `counters` and `status` on a datapath loaded on a private
//! BPF filesystem whose counters come from running the real program with
//! BPF_PROG_RUN; `monitor` on a lab, catching a real spoofed packet. The
//! JSON is parsed and checked against the maps; the text for its columns
//! and spellings. Needs root.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use cilium_mcast_egress::datapath::maps::{
    DropReason, Gateway, Origin, PolicyKey, PolicyValue, Role, Status,
};
use cilium_mcast_egress::datapath::{tcx, Datapath, Maps, Paths, Program};
use cilium_mcast_egress::health::{Report, ReportPin};
use cilium_mcast_egress::resolve::{Problem, Severity, Subject};
use common::addr::*;
use common::packet::{group_mac, Frame};
use common::{ifindex, sh, Bpffs, TCX_DROP, TCX_REDIRECT};
use lab::{Lab, LabConfig, Node, Pod};

const BIN: &str = env!("CARGO_BIN_EXE_cilium-mcast-egress");
/// How long any one CLI run may take before the test kills it.
const RUN_LIMIT: Duration = Duration::from_secs(20);

const ID_A: u32 = 12345;
const ID_B: u32 = 23456;
const P_CAMERAS: u32 = 7;
const P_LOCAL: u32 = 8;
/// A policy id with no name recorded: printed as the id.
const P_UNNAMED: u32 = 42;

const LOCAL_GROUP: Ipv4Addr = Ipv4Addr::new(232, 0, 1, 1);
const NO_GW_GROUP: Ipv4Addr = Ipv4Addr::new(232, 9, 0, 1);

// Packets run through the real program.
const N_REMOTE: u32 = 1000;
const N_LOCAL: u32 = 25;
/// More than the monitor's burst of 1000 events per CPU, so some are
/// suppressed.
const N_NO_GW: u32 = 1500;

// --- running the binary ----------------------------------------------------

/// Run the binary (in the calling thread's network namespace) and wait for
/// it, killing it if it takes longer than [`RUN_LIMIT`].
fn cli(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run_bounded(cmd, args)
}

/// Run the binary in the lab namespace `ns`, as an operator would on a node.
fn cli_in(ns: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, BIN]).args(args);
    run_bounded(cmd, args)
}

fn run_bounded(mut cmd: Command, args: &[&str]) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the binary");
    let read = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = read(child.stdout.take().map(|s| Box::new(s) as _));
    let err = read(child.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the binary") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{args:?} still running after {RUN_LIMIT:?}; stderr: {}",
                String::from_utf8_lossy(&err.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Run a command that must succeed; its stdout.
fn cli_ok(args: &[&str]) -> String {
    stdout_of(cli(args), args)
}

fn stdout_of(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn cli_json(args: &[&str]) -> Value {
    parse(&cli_ok(args), args)
}

fn cli_json_in(ns: &str, args: &[&str]) -> Value {
    parse(&stdout_of(cli_in(ns, args), args), args)
}

fn parse(text: &str, args: &[&str]) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

// --- a node's datapath with known contents ----------------------------------

/// One node's datapath on a private bpffs, in the test's network namespace:
/// pods A and B behind `lxc_a`/`lxc_b`, uplink `uplink0`, tunnel `vx0`. Its
/// maps hold policies of three policy ids (two named), both gateway
/// sentinels among them, and the counters of real runs of the program.
struct Fx {
    dp: Datapath<'static>,
    maps: Maps,
    uplink: u32,
    bpffs: Bpffs,
}

impl Fx {
    fn new(test: &str) -> Fx {
        common::veths(&[
            ("lxc_a", "pod_a"),
            ("lxc_b", "pod_b"),
            ("uplink0", "upstream0"),
        ]);
        common::vxlan_external("vx0");
        let (bpffs, dp, maps) = common::load_datapath(test);
        let fx = Fx {
            uplink: ifindex("uplink0"),
            dp,
            maps,
            bpffs,
        };
        let m = &fx.maps;
        common::seed_single_node(m, ifindex("vx0"), &[THIS_NODE, REMOTE_GW]);
        fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(REMOTE_GW), P_CAMERAS);
        fx.policy(POD_A, "232.1.255.0/24", Gateway::Excluded, P_CAMERAS);
        fx.policy(POD_A, "232.9.0.0/16", Gateway::NotFound, P_CAMERAS);
        fx.policy(POD_B, "232.0.0.0/8", Gateway::Node(THIS_NODE), P_LOCAL);
        fx.policy(POD_B, "232.5.0.0/16", Gateway::Node(REMOTE_GW), P_UNNAMED);
        m.policy_name_set(P_CAMERAS, "cameras").unwrap();
        m.policy_name_set(P_LOCAL, "camera-ssm-local").unwrap();
        fx
    }

    fn paths(&self) -> Paths {
        Paths::new(self.bpffs.path())
    }

    fn root(&self) -> &str {
        self.bpffs.path().to_str().expect("UTF-8 path")
    }

    fn policy(&self, pod: Ipv4Addr, dest: &str, gateway: Gateway, policy_id: u32) {
        let origin = Origin {
            node: THIS_NODE,
            identity: if pod == POD_A { ID_A } else { ID_B },
        };
        let (k, v) = common::policy_entry(pod, dest, gateway, self.uplink, policy_id, origin);
        self.maps.policy_insert(&k, &v).unwrap();
    }

    /// Run `mcast_from_container` `repeat` times as if `frame` came in on
    /// `dev`; its verdict.
    fn run(&self, dev: &str, frame: &[u8], repeat: u32) -> u32 {
        let mut ctx = common::skb_ctx(ifindex(dev));
        let mut out = vec![0u8; frame.len() + 512];
        let input = libbpf_rs::ProgramInput {
            context_in: Some(&mut ctx),
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        };
        self.dp
            .program(Program::FromContainer)
            .test_run(input)
            .expect("BPF_PROG_RUN")
            .return_value
    }

    /// Traffic through the real program: to a remote gateway, through this
    /// node as gateway, to the `Not Found` sentinel, and one spoofed packet.
    /// Returns the frame lengths (remote, local, no gateway, spoofed).
    fn traffic(&self) -> [u64; 4] {
        let remote = Frame::udp(POD_A, GROUP, &[1u8; 100]).bytes();
        let local = Frame::udp(POD_B, LOCAL_GROUP, &[2u8; 50]).bytes();
        let nogw = Frame::udp(POD_A, NO_GW_GROUP, &[3u8; 10]).bytes();
        let spoofed = Frame::udp(POD_B, Ipv4Addr::new(232, 0, 2, 2), b"not mine").bytes();
        assert_eq!(self.run("lxc_a", &remote, N_REMOTE), TCX_REDIRECT);
        // The local-gateway path rewrites the packet that BPF_PROG_RUN's
        // repeat would run again: one run per packet.
        for _ in 0..N_LOCAL {
            assert_eq!(self.run("lxc_b", &local, 1), TCX_REDIRECT);
        }
        assert_eq!(self.run("lxc_a", &nogw, N_NO_GW), TCX_DROP);
        assert_eq!(self.run("lxc_a", &spoofed, 1), TCX_DROP);
        [remote, local, nogw, spoofed].map(|f| f.len() as u64)
    }
}

macro_rules! cli_test {
    ($name:ident, |$fx:ident| $body:block) => {
        netns_test!($name, Fx::new, |$fx| $body);
    };
}

// --- policy list -------------------------------------------------------------

/// A policy entry as the JSON must show it, worked out here from the map.
fn expected_policy_row(k: &PolicyKey, v: &PolicyValue, names: &[(u32, &str)]) -> Value {
    let gateway = match v.gateway {
        Gateway::Node(ip) => ip.to_string(),
        Gateway::NotFound => "Not Found".to_owned(),
        Gateway::Excluded => "Excluded CIDR".to_owned(),
    };
    let policy = names
        .iter()
        .find(|(id, _)| *id == v.policy_id)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| v.policy_id.to_string());
    json!({
        "source_ip": k.source.to_string(),
        "destination_cidr": k.destination.to_string(),
        "egress_ip": v.egress_ip.to_string(),
        "gateway_ip": gateway,
        "egress_ifindex": v.egress_ifindex,
        "policy": policy,
        "policy_id": v.policy_id,
        "origin_node_ip": v.origin.node.to_string(),
        "origin_identity": v.origin.identity,
    })
}

const NAMES: [(u32, &str); 2] = [(P_CAMERAS, "cameras"), (P_LOCAL, "camera-ssm-local")];

cli_test!(policy_list_json_is_the_policy_map, |fx| {
    let got = cli_json(&["policy", "list", "--bpffs-root", fx.root(), "-o", "json"]);
    let entries = fx.maps.policies().unwrap();
    assert_eq!(entries.len(), 5);
    let want: Vec<Value> = entries
        .iter()
        .map(|(k, v)| expected_policy_row(k, v, &NAMES))
        .collect();
    assert_eq!(got, Value::Array(want));
    let rows = got.as_array().unwrap();
    let row = |dest: &str| {
        rows.iter()
            .find(|r| r["destination_cidr"] == dest)
            .unwrap_or_else(|| panic!("no row for {dest}: {got}"))
    };
    assert_eq!(row("232.9.0.0/16")["gateway_ip"], "Not Found");
    assert_eq!(row("232.1.255.0/24")["gateway_ip"], "Excluded CIDR");
    assert_eq!(row("232.1.0.0/16")["gateway_ip"], REMOTE_GW.to_string());
    assert_eq!(row("232.0.0.0/8")["egress_ip"], EGRESS_IP.to_string());
    assert_eq!(row("232.0.0.0/8")["egress_ifindex"], fx.uplink);
    assert_eq!(row("232.0.0.0/8")["policy"], "camera-ssm-local");
    assert_eq!(row("232.5.0.0/16")["policy"], "42");
});

/// Where each header column starts; every row must have a cell starting
/// there, after a space.
fn assert_aligned(text: &str, header: &[&str]) -> Vec<Vec<String>> {
    let mut lines = text.lines();
    let head = lines.next().expect("a header line");
    let mut starts = Vec::new();
    let mut from = 0;
    for col in header {
        let at = head[from..]
            .find(col)
            .unwrap_or_else(|| panic!("column {col:?} in header {head:?}"))
            + from;
        starts.push(at);
        from = at + col.len();
    }
    assert_eq!(starts[0], 0, "{head}");
    lines
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            for &s in &starts[1..] {
                assert!(
                    s < chars.len() && chars[s - 1] == ' ' && chars[s] != ' ',
                    "column at {s} not aligned in {line:?} (header {head:?})"
                );
            }
            (0..starts.len())
                .map(|i| {
                    let end = starts.get(i + 1).copied().unwrap_or(chars.len());
                    chars[starts[i]..end.min(chars.len())]
                        .iter()
                        .collect::<String>()
                        .trim()
                        .to_owned()
                })
                .collect()
        })
        .collect()
}

cli_test!(policy_list_text_has_ciliums_columns_and_sentinels, |fx| {
    let text = cli_ok(&["policy", "list", "--bpffs-root", fx.root()]);
    let rows = assert_aligned(
        &text,
        &[
            "Source IP",
            "Destination CIDR",
            "Egress IP",
            "Gateway IP",
            "Policy",
        ],
    );
    assert_eq!(rows.len(), 5, "{text}");
    let row = |dest: &str| {
        rows.iter()
            .find(|r| r[1] == dest)
            .unwrap_or_else(|| panic!("no row for {dest}:\n{text}"))
            .clone()
    };
    assert_eq!(
        row("232.9.0.0/16"),
        [
            "198.51.100.11",
            "232.9.0.0/16",
            "0.0.0.0",
            "Not Found",
            "cameras"
        ]
    );
    assert_eq!(
        row("232.1.255.0/24"),
        [
            "198.51.100.11",
            "232.1.255.0/24",
            "0.0.0.0",
            "Excluded CIDR",
            "cameras"
        ]
    );
    assert_eq!(
        row("232.0.0.0/8"),
        [
            "198.51.100.12",
            "232.0.0.0/8",
            "203.0.113.10",
            "192.0.2.10",
            "camera-ssm-local"
        ]
    );
    assert_eq!(row("232.5.0.0/16")[4], "42");
});

// --- counters ----------------------------------------------------------------

cli_test!(counters_json_match_the_maps_after_real_runs, |fx| {
    let [remote, local, nogw, spoofed] = fx.traffic();
    let got = cli_json(&["counters", "--bpffs-root", fx.root(), "-o", "json"]);

    let name = |id: u32| {
        NAMES
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| id.to_string())
    };
    let counters: Vec<Value> = fx
        .maps
        .counters()
        .unwrap()
        .iter()
        .map(|c| {
            json!({
                "policy": name(c.policy_id),
                "policy_id": c.policy_id,
                "group": c.group.to_string(),
                "family": c.family().label(),
                "role": c.role.label(),
                "packets": c.packets,
                "bytes": c.bytes,
            })
        })
        .collect();
    let drops: Vec<Value> = fx
        .maps
        .drops()
        .unwrap()
        .iter()
        .map(|d| {
            json!({
                "reason": d.reason.label(),
                "code": d.reason.code(),
                "role": d.role.label(),
                "family": d.family.label(),
                "packets": d.packets,
                "bytes": d.bytes,
            })
        })
        .collect();
    let suppressed = fx.maps.events_suppressed().unwrap();
    assert_eq!(
        got,
        json!({
            "counters": counters,
            "drops": drops,
            "events_suppressed": suppressed,
        })
    );

    // And the maps hold what the runs put there.
    let n = u64::from;
    let counter = |policy: &str, group: Ipv4Addr, role: Role| {
        got["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["policy"] == policy
                    && c["group"] == group.to_string()
                    && c["role"] == role.label()
            })
            .map(|c| (c["packets"].as_u64().unwrap(), c["bytes"].as_u64().unwrap()))
            .unwrap_or_else(|| panic!("no counter {policy} {group} {role:?}: {got}"))
    };
    assert_eq!(got["counters"].as_array().unwrap().len(), 3, "{got}");
    assert_eq!(
        counter("cameras", GROUP, Role::Origin),
        (n(N_REMOTE), n(N_REMOTE) * remote)
    );
    assert_eq!(
        counter("camera-ssm-local", LOCAL_GROUP, Role::Origin),
        (n(N_LOCAL), n(N_LOCAL) * local)
    );
    assert_eq!(
        counter("camera-ssm-local", LOCAL_GROUP, Role::Gateway),
        (n(N_LOCAL), n(N_LOCAL) * local)
    );
    let drop = |reason: &str| {
        got["drops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["reason"] == reason && d["role"] == "origin" && d["family"] == "ipv4")
            .map(|d| (d["packets"].as_u64().unwrap(), d["bytes"].as_u64().unwrap()))
            .unwrap_or_else(|| panic!("no drop row {reason}: {got}"))
    };
    assert_eq!(drop("no_gateway"), (n(N_NO_GW), n(N_NO_GW) * nogw));
    assert_eq!(drop("spoofed_source"), (1, spoofed));
    assert_eq!(drop("ttl_exceeded"), (0, 0), "zero rows are listed too");
    assert_eq!(
        got["drops"].as_array().unwrap().len(),
        2 * 2 * DropReason::all().count(),
        "every reason of both roles and both families"
    );
    assert!(
        suppressed > 0,
        "{N_NO_GW} drops in a burst exceed the events' rate limit"
    );
});

cli_test!(
    counters_text_shows_names_and_only_drops_that_happened,
    |fx| {
        let [remote, ..] = fx.traffic();
        let text = cli_ok(&["counters", "--bpffs-root", fx.root()]);
        let mut blocks = text.split("\n\n");
        let counters = blocks.next().expect("counters table");
        let rows = assert_aligned(counters, &["Policy", "Group", "Role", "Packets", "Bytes"]);
        assert_eq!(rows.len(), 3, "{text}");
        assert!(
            rows.contains(&vec![
                "cameras".to_string(),
                GROUP.to_string(),
                "origin".into(),
                N_REMOTE.to_string(),
                (u64::from(N_REMOTE) * remote).to_string()
            ]),
            "{text}"
        );
        assert!(
            rows.iter()
                .any(|r| r[0] == "camera-ssm-local" && r[2] == "gateway"),
            "{text}"
        );
        let drops = blocks.next().expect("drops table");
        let rows = assert_aligned(
            drops,
            &["Drop reason", "Role", "Family", "Packets", "Bytes"],
        );
        let reasons: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(reasons, ["no_gateway", "spoofed_source"], "{text}");
        assert!(rows.iter().all(|r| r[2] == "ipv4"), "{text}");
        let suppressed = fx.maps.events_suppressed().unwrap();
        assert!(
            text.contains(&format!(
                "Drop events suppressed by the rate limit: {suppressed}"
            )),
            "{text}"
        );
    }
);

// --- IPv6 counters and drops ---------------------------------------------------

/// An IPv6 group as wide as they come: its column must fit it.
const WIDE_GROUP: &str = "ff3e:1234:5678:9abc:def0:1234:8000:1";

/// (policy id, group, role, packets, bytes).
type Counter6 = (u32, Ipv6Addr, Role, u64, u64);
/// (role, reason, packets, bytes).
type Drop6 = (Role, DropReason, u64, u64);

/// The IPv6 counters and drops written into the pinned `_v6` maps, beside
/// the IPv4 ones of real runs.
fn ipv6_counts(fx: &Fx) -> ([Counter6; 3], [Drop6; 2]) {
    let counters = [
        (
            P_CAMERAS,
            "ff3e::8000:1".parse().unwrap(),
            Role::Origin,
            40,
            40 * 110,
        ),
        (
            P_CAMERAS,
            WIDE_GROUP.parse().unwrap(),
            Role::Gateway,
            3,
            3 * 1400,
        ),
        (
            P_UNNAMED,
            "ff3e::1:8000:1".parse().unwrap(),
            Role::Origin,
            7,
            7 * 90,
        ),
    ];
    let drops = [
        (Role::Gateway, DropReason::TTL_EXCEEDED, 9, 9 * 90),
        (Role::Origin, DropReason::MALFORMED, 2, 2 * 70),
    ];
    let paths = fx.paths();
    for (id, group, role, p, b) in counters {
        common::counters::put_counter_v6(&paths, id, group, role, p, b);
    }
    for (role, reason, p, b) in drops {
        common::counters::put_drop_v6(&paths, role, reason, p, b);
    }
    (counters, drops)
}

cli_test!(
    counters_json_lists_ipv6_groups_and_drops_with_their_family,
    |fx| {
        fx.traffic();
        let (counters6, drops6) = ipv6_counts(&fx);
        let got = cli_json(&["counters", "--bpffs-root", fx.root(), "-o", "json"]);
        let rows = got["counters"].as_array().unwrap();
        assert_eq!(rows.len(), 3 + 3, "IPv4's three and IPv6's three: {got}");
        for (id, group, role, packets, bytes) in counters6 {
            let row = rows
                .iter()
                .find(|c| c["group"] == group.to_string() && c["role"] == role.label())
                .unwrap_or_else(|| panic!("no row for {group}: {got}"));
            assert_eq!(row["policy_id"], id, "{row}");
            assert_eq!(row["family"], "ipv6", "{row}");
            assert_eq!(row["packets"], packets, "{row}");
            assert_eq!(row["bytes"], bytes, "{row}");
        }
        assert_eq!(
            rows.iter().filter(|c| c["family"] == "ipv4").count(),
            3,
            "{got}"
        );
        // Sorted by policy, then group: a policy's IPv4 groups first.
        let cameras: Vec<&str> = rows
            .iter()
            .filter(|c| c["policy"] == "cameras")
            .map(|c| c["family"].as_str().unwrap())
            .collect();
        assert_eq!(cameras, ["ipv4", "ipv6", "ipv6"], "{got}");
        assert_eq!(
            rows.iter()
                .find(|c| c["group"] == "ff3e::1:8000:1")
                .unwrap()["policy"],
            "42"
        );

        let drops = got["drops"].as_array().unwrap();
        let drop = |family: &str, role: Role, reason: DropReason| {
            drops
                .iter()
                .find(|d| {
                    d["family"] == family
                        && d["role"] == role.label()
                        && d["reason"] == reason.label()
                })
                .map(|d| (d["packets"].as_u64().unwrap(), d["bytes"].as_u64().unwrap()))
                .unwrap_or_else(|| panic!("no drop row {family} {reason:?}: {got}"))
        };
        for (role, reason, packets, bytes) in drops6 {
            assert_eq!(drop("ipv6", role, reason), (packets, bytes));
            assert_eq!(
                drop("ipv4", role, reason),
                (0, 0),
                "the IPv4 map is another"
            );
        }
        assert_eq!(
            drop("ipv6", Role::Origin, DropReason::NO_GATEWAY),
            (0, 0),
            "IPv4's real drops are not IPv6's"
        );
        assert_eq!(
            drop("ipv4", Role::Origin, DropReason::NO_GATEWAY).0,
            u64::from(N_NO_GW)
        );

        // A policy gone takes its counters of both families with it.
        let keep = [P_LOCAL].into_iter().collect();
        assert_eq!(fx.maps.counters_retain_policies(&keep).unwrap(), 1 + 3);
        let left: Vec<(u32, &str)> = fx
            .maps
            .counters()
            .unwrap()
            .iter()
            .map(|c| (c.policy_id, c.family().label()))
            .collect();
        assert_eq!(left, [(P_LOCAL, "ipv4"), (P_LOCAL, "ipv4")]);
    }
);

cli_test!(
    counters_text_fits_ipv6_groups_and_names_the_family_of_drops,
    |fx| {
        fx.traffic();
        ipv6_counts(&fx);
        let text = cli_ok(&["counters", "--bpffs-root", fx.root()]);
        let mut blocks = text.split("\n\n");
        let counters = blocks.next().expect("counters table");
        let rows = assert_aligned(counters, &["Policy", "Group", "Role", "Packets", "Bytes"]);
        assert_eq!(rows.len(), 6, "{text}");
        for want in [
            ["cameras", "ff3e::8000:1", "origin", "40", "4400"],
            ["cameras", WIDE_GROUP, "gateway", "3", "4200"],
            ["42", "ff3e::1:8000:1", "origin", "7", "630"],
        ] {
            assert!(
                rows.contains(&want.map(String::from).to_vec()),
                "{want:?}:\n{text}"
            );
        }
        // The widest address sets the column: three spaces after it.
        assert!(
            counters.contains(&format!(" {WIDE_GROUP}   gateway ")),
            "{text}"
        );
        let drops = blocks.next().expect("drops table");
        let rows = assert_aligned(
            drops,
            &["Drop reason", "Role", "Family", "Packets", "Bytes"],
        );
        let got: Vec<[&str; 3]> = rows
            .iter()
            .map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str()])
            .collect();
        assert_eq!(
            got,
            [
                ["no_gateway", "origin", "ipv4"],
                ["spoofed_source", "origin", "ipv4"],
                ["malformed", "origin", "ipv6"],
                ["ttl_exceeded", "gateway", "ipv6"],
            ],
            "{text}"
        );
        assert_eq!(rows[3][3..], ["9".to_string(), "810".to_string()], "{text}");
    }
);

// --- status --------------------------------------------------------------------

/// `date -u` of a Unix time, to check the CLI's own calendar arithmetic.
fn date_utc(unix_secs: u64) -> String {
    sh(
        "date",
        &["-u", "-d", &format!("@{unix_secs}"), "+%Y-%m-%dT%H:%M:%S"],
    )
    .trim()
    .to_owned()
}

cli_test!(status_shows_node_gateway_links_maps_and_sync, |fx| {
    let paths = fx.paths();
    fx.dp.attach("lxc_a", Program::FromContainer).unwrap();
    fx.dp.attach("vx0", Program::FromOverlay).unwrap();
    // A link whose device went away: the kernel detached it, its pin stays.
    common::veth("gone0", "gone0p");
    fx.dp.attach("gone0", Program::FromContainer).unwrap();
    sh("ip", &["link", "del", "gone0"]);
    fx.maps
        .status_set(&Status {
            node_name: "node-x".into(),
            version: "9.9.9-test".into(),
            last_sync_unix_ns: 0,
            syncs: 0,
        })
        .unwrap();

    let got = cli_json(&["status", "--bpffs-root", fx.root(), "-o", "json"]);
    let links: Vec<Value> = tcx::links(&paths)
        .unwrap()
        .iter()
        .map(|l| {
            json!({
                "device": l.device,
                "program": l.program,
                "link_id": l.link_id,
                "prog_id": l.prog_id,
                "ifindex": l.ifindex,
                "attached": l.ifindex != 0,
            })
        })
        .collect();
    assert_eq!(links.len(), 3);
    let maps: Vec<Value> = fx
        .maps
        .fill_levels()
        .unwrap()
        .iter()
        .map(|(map, entries, capacity)| json!({"map": map, "entries": entries, "capacity": capacity}))
        .collect();
    assert_eq!(
        got,
        json!({
            "node_name": "node-x",
            "node_ip": THIS_NODE.to_string(),
            "tunnel_ifindex": ifindex("vx0"),
            "tunnel_device": "vx0",
            "gateway": true,
            "gateway_for": [{
                "policy": "camera-ssm-local",
                "policy_id": P_LOCAL,
                "destinations": ["232.0.0.0/8"],
                "egress_ip": EGRESS_IP.to_string(),
                "egress_ifindex": fx.uplink,
                "egress_device": "uplink0",
                "sources": 1,
            }],
            "links": links,
            "maps": maps,
            "last_sync": null,
            "syncs": 0,
            "controller_version": "9.9.9-test",
            "cli_version": env!("CARGO_PKG_VERSION"),
            "controller": null,
        })
    );
    assert_eq!(got["maps"][0]["map"], "mcast_egw_policy_hash_v4");
    assert_eq!(got["maps"][0]["entries"], 5);

    let text = cli_ok(&["status", "--bpffs-root", fx.root()]);
    for want in [
        "Node:                node-x (192.0.2.10)".to_owned(),
        format!("Tunnel device:       vx0 (ifindex {})", ifindex("vx0")),
        "Gateway:             yes, for 1 policy".to_owned(),
        "Last sync:           never".to_owned(),
        "Ready:               unknown (no report from a controller yet)".to_owned(),
        "Controller version:  9.9.9-test".to_owned(),
        format!("CLI version:         {}", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(text.contains(&want), "{want:?} in:\n{text}");
    }
    // The line that starts with `first` (its first cell), cells joined by
    // single spaces.
    let line = |first: &str| {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .find(|l| l.split(' ').next() == Some(first))
            .unwrap_or_else(|| panic!("a line starting with {first:?} in:\n{text}"))
    };
    assert_eq!(
        line("camera-ssm-local"),
        format!(
            "camera-ssm-local 232.0.0.0/8 203.0.113.10 uplink0 (ifindex {}) 1",
            fx.uplink
        )
    );
    for l in tcx::links(&paths).unwrap() {
        let want = if l.ifindex == 0 {
            format!(
                "{} {} {} detached (device gone)",
                l.device, l.program, l.link_id
            )
        } else {
            format!("{} {} {} {}", l.device, l.program, l.link_id, l.ifindex)
        };
        assert_eq!(line(&l.device), want);
    }
    assert!(line("gone0").ends_with("detached (device gone)"));
    let capacity = got["maps"][0]["capacity"].as_u64().unwrap();
    assert_eq!(
        line("mcast_egw_policy_hash_v4"),
        format!(
            "mcast_egw_policy_hash_v4 5 {capacity} {:.1}%",
            500.0 / capacity as f64
        )
    );

    // After a sync: its time, UTC, and its age.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let synced = now.as_secs() - 5;
    fx.maps
        .status_set(&Status {
            node_name: "node-x".into(),
            version: "9.9.9-test".into(),
            last_sync_unix_ns: synced * 1_000_000_000 + 250_000_000,
            syncs: 3,
        })
        .unwrap();
    let got = cli_json(&["status", "--bpffs-root", fx.root(), "-o", "json"]);
    let sync = &got["last_sync"];
    assert_eq!(sync["unix_ns"], synced * 1_000_000_000 + 250_000_000);
    assert_eq!(sync["utc"], format!("{}.250Z", date_utc(synced)));
    let age = sync["age_seconds"].as_u64().unwrap();
    assert!((4..=60).contains(&age), "age {age}");
    assert_eq!(got["syncs"], 3);
    let text = cli_ok(&["status", "--bpffs-root", fx.root()]);
    assert!(
        text.contains(&format!("Last sync:           {}.250Z (", date_utc(synced))),
        "{text}"
    );
    assert!(text.contains("ago), 3 syncs"), "{text}");

    // The controller's report, pinned as the daemon pins it.
    let problems = [
        Problem {
            subject: Subject::Node("node-x".into()),
            severity: Severity::Invalid,
            message: "no CiliumNode is named \"node-x\" (--node-name)".into(),
        },
        Problem::for_policy(
            "no-selectors",
            Severity::Invalid,
            "policy skipped: selectors is missing or empty".into(),
        ),
    ];
    let mut pinned = Report::new(
        vec!["no CiliumNode is named \"node-x\" (--node-name)".into()],
        &problems,
        0,
    );
    pinned.since_unix_ns = synced * 1_000_000_000;
    ReportPin::open_or_create(&paths)
        .unwrap()
        .write(&pinned)
        .unwrap();
    let got = cli_json(&["status", "--bpffs-root", fx.root(), "-o", "json"]);
    let c = &got["controller"];
    assert_eq!(c["ready"], false, "{got}");
    assert_eq!(c["node_missing"], true, "{got}");
    assert_eq!(c["invalid_policies"], 1, "{got}");
    assert_eq!(c["since"]["unix_ns"], synced * 1_000_000_000, "{got}");
    assert_eq!(
        c["problems"][1],
        json!({
            "kind": "policy",
            "name": "no-selectors",
            "severity": "invalid",
            "message": "policy skipped: selectors is missing or empty",
        }),
        "{got}"
    );
    let text = cli_ok(&["status", "--bpffs-root", fx.root()]);
    for want in [
        format!("Ready:               no (as of {}.000Z, ", date_utc(synced)),
        "no CiliumNode is named \"node-x\" (--node-name)".to_owned(),
        "Problems:            this node's CiliumNode missing, 1 invalid policy".to_owned(),
        "policy no-selectors".to_owned(),
    ] {
        assert!(text.contains(&want), "{want:?} in:\n{text}");
    }
});

// --- errors ----------------------------------------------------------------------

#[test]
fn missing_datapath_is_a_clear_error() {
    if !common::privileged("missing_datapath_is_a_clear_error") {
        return;
    }
    let empty = Bpffs::new("cli-empty");
    let root = empty.path().to_str().unwrap();
    let check = |args: &[&str], want: &str| {
        let out = cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    };
    let no_datapath = format!(
        "error: no datapath pinned under {}: is cilium-mcast-egress running?",
        Path::new(root).join("tc/globals").display()
    );
    check(&["policy", "list", "--bpffs-root", root], &no_datapath);
    check(
        &["policy", "list", "--bpffs-root", root, "-o", "json"],
        &no_datapath,
    );
    check(&["counters", "--bpffs-root", root], &no_datapath);
    check(&["status", "--bpffs-root", root], &no_datapath);
    check(
        &["monitor", "--bpffs-root", root, "--timeout", "1"],
        &no_datapath,
    );

    let plain = tempfile::tempdir().unwrap();
    let plain = plain.path().to_str().unwrap();
    check(
        &["policy", "list", "--bpffs-root", plain],
        &format!("error: {plain} is not on a BPF filesystem"),
    );
    let gone = format!("{root}/does-not-exist");
    check(
        &["counters", "--bpffs-root", &gone],
        &format!("error: {gone} does not exist"),
    );
}

// --- on the lab -------------------------------------------------------------

fn camera_lab() -> Lab {
    let mut cfg = LabConfig::new(BIN);
    cfg.manifests = vec![(
        "policy.yaml".into(),
        lab::camera_policy("cameras", &["232.1.0.0/16"], &[], Node::B),
    )];
    Lab::up(cfg).expect("lab up")
}

#[test]
fn status_and_policy_list_on_lab_nodes_also_with_the_daemon_stopped() {
    if !common::privileged("status_and_policy_list_on_lab_nodes_also_with_the_daemon_stopped") {
        return;
    }
    let mut lab = camera_lab();
    let ns_a = lab.node_ns(Node::A);
    let ns_b = lab.node_ns(Node::B);
    let root_a = lab.bpffs(Node::A);
    let root_b = lab.bpffs(Node::B);
    let root_a = root_a.to_str().unwrap();
    let root_b = root_b.to_str().unwrap();

    // node-a: pod-a1's entry points at node-b, by the policy's name.
    let rows = cli_json_in(
        &ns_a,
        &["policy", "list", "--bpffs-root", root_a, "-o", "json"],
    );
    let a1 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source_ip"] == Pod::A1.ip().to_string())
        .unwrap_or_else(|| panic!("pod-a1's entry: {rows}"));
    assert_eq!(a1["destination_cidr"], "232.1.0.0/16", "{a1}");
    assert_eq!(a1["gateway_ip"], Node::B.ip().to_string(), "{a1}");
    assert_eq!(a1["policy"], "cameras", "{a1}");

    // node-b: the gateway, with the uplink resolved in its namespace.
    let status_b = || cli_json_in(&ns_b, &["status", "--bpffs-root", root_b, "-o", "json"]);
    let s = status_b();
    assert_eq!(s["node_name"], "node-b", "{s}");
    assert_eq!(s["node_ip"], Node::B.ip().to_string(), "{s}");
    assert_eq!(s["gateway"], true, "{s}");
    let g = &s["gateway_for"][0];
    assert_eq!(g["policy"], "cameras", "{s}");
    assert_eq!(g["destinations"], json!(["232.1.0.0/16"]), "{s}");
    assert_eq!(g["egress_ip"], lab::addr::EGRESS_B.to_string(), "{s}");
    assert_eq!(g["egress_device"], "uplink0", "{s}");
    assert_eq!(s["tunnel_device"], "cilium_vxlan", "{s}");
    assert_eq!(s["controller_version"], env!("CARGO_PKG_VERSION"), "{s}");
    assert!(s["syncs"].as_u64().unwrap() >= 1, "{s}");
    // The controller's own word: ready, nothing wrong with the input.
    assert_eq!(s["controller"]["ready"], true, "{s}");
    assert_eq!(s["controller"]["problems"], json!([]), "{s}");
    assert!(s["last_sync"]["unix_ns"].as_u64().unwrap() > 0, "{s}");
    let has_link = |s: &Value, device: &str, program: &str| {
        s["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["device"] == device && l["program"] == program && l["attached"] == true)
    };
    assert!(has_link(&s, "cilium_vxlan", "mcast_from_overlay"), "{s}");
    assert!(has_link(&s, Pod::B1.lxc(), "mcast_from_container"), "{s}");
    // node-a is no gateway.
    let s_a = cli_json_in(&ns_a, &["status", "--bpffs-root", root_a, "-o", "json"]);
    assert_eq!(s_a["gateway"], false, "{s_a}");
    assert_eq!(s_a["gateway_for"], json!([]), "{s_a}");

    // With the daemon stopped, the pins still answer, and the last sync
    // stays where the daemon left it. A running daemon with unchanged inputs
    // re-syncs only every few seconds, so an unchanged last sync over a short
    // wait proves nothing by itself: first make sure the daemon is gone. Its
    // probe answering now is the control for it answering nothing below.
    assert_eq!(
        lab.probe(Node::B, "/healthz"),
        Some(200),
        "node-b's daemon answers its probe before the stop"
    );
    let exit = lab.stop_daemon(Node::B).expect("stopping node-b's daemon");
    // Success: it exited on the SIGTERM by itself, not killed on a timeout.
    assert!(exit.success(), "node-b's daemon exited with {exit}");
    assert_eq!(
        lab.probe(Node::B, "/healthz"),
        None,
        "nothing answers node-b's probe once its daemon is stopped"
    );
    let before = status_b();
    std::thread::sleep(Duration::from_millis(600));
    let after = status_b();
    assert_eq!(
        before["last_sync"]["unix_ns"], after["last_sync"]["unix_ns"],
        "{before}\n{after}"
    );
    assert_eq!(after["gateway"], true, "{after}");
    assert!(
        has_link(&after, "cilium_vxlan", "mcast_from_overlay"),
        "{after}"
    );
    let text = stdout_of(
        cli_in(&ns_b, &["status", "--bpffs-root", root_b]),
        &["status"],
    );
    assert!(
        text.contains("Node:                node-b (192.0.2.12)"),
        "{text}"
    );
    let text = stdout_of(
        cli_in(&ns_b, &["counters", "--bpffs-root", root_b]),
        &["counters"],
    );
    assert!(
        text.contains("Drop events suppressed by the rate limit: "),
        "{text}"
    );
}

/// A running `monitor`, its stdout and stderr read line by line on threads
/// of their own. Killed (by its pid) if the test fails before it exits.
struct Monitor {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    said: Vec<String>,
}

impl Monitor {
    fn spawn(mut cmd: Command) -> Monitor {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the monitor");
        Monitor {
            stdout: lines_of(child.stdout.take().expect("stdout")),
            stderr: lines_of(child.stderr.take().expect("stderr")),
            child,
            said: Vec::new(),
        }
    }

    /// `monitor --bpffs-root <fx's>` in the test's network namespace.
    fn on(fx: &Fx, args: &[&str]) -> Monitor {
        let mut cmd = Command::new(BIN);
        cmd.args(["monitor", "--bpffs-root", fx.root()]).args(args);
        Monitor::spawn(cmd)
    }

    /// Until it says it listens on `root`'s ring buffer: only what happens
    /// after that is shown.
    fn wait_listening(&mut self, root: &Path) {
        let want = format!(
            "Listening for drop events on {}...",
            root.join("tc/globals/mcast_egw_events").display()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(line) => self.said.push(line),
                Err(e) => panic!(
                    "the monitor never said {want:?} ({e}); stderr: {:?}",
                    self.said
                ),
            }
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signalling the monitor");
    }

    /// Wait for it to exit by itself within `timeout`: its status, stdout
    /// lines and stderr lines.
    fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> (std::process::ExitStatus, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the monitor") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the monitor did not exit within {timeout:?}; stderr: {:?} {:?}",
                self.said,
                self.stderr.try_iter().collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The pipes close with the process: the readers end.
        let mut stderr = std::mem::take(&mut self.said);
        stderr.extend(self.stderr.iter());
        (status, self.stdout.iter().collect(), stderr)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lines of a child's pipe, read on a thread of their own.
fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn today_utc() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    date_utc(now.as_secs())[..10].to_owned()
}

cli_test!(monitor_skips_the_backlog_and_stops_at_its_timeout, |fx| {
    // Events the datapath queued while nobody listened.
    fx.traffic();
    let dropped: u64 = fx.maps.drops().unwrap().iter().map(|d| d.packets).sum();
    let queued = dropped - fx.maps.events_suppressed().unwrap();
    assert!(
        queued >= 1000,
        "at least the burst of the rate limit: {queued}"
    );

    let mut m = Monitor::on(&fx, &["--timeout", "1"]);
    m.wait_listening(fx.bpffs.path());
    let (status, out, err) = m.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}: {err:?}");
    assert!(out.is_empty(), "nothing from before it started: {out:?}");
    assert!(
        err.contains(&format!(
            "Skipped {queued} drop events from before this monitor started."
        )),
        "{err:?}"
    );
});

cli_test!(
    monitor_prints_live_events_and_leaves_the_rest_after_count,
    |fx| {
        let nogw = Frame::udp(POD_A, NO_GW_GROUP, &[3u8; 10]).bytes();
        let mut m = Monitor::on(&fx, &["-o", "json", "--count", "2", "--timeout", "10"]);
        m.wait_listening(fx.bpffs.path());
        let date = today_utc();
        assert_eq!(fx.run("lxc_a", &nogw, 3), TCX_DROP);
        let (status, out, err) = m.wait_exit(Duration::from_secs(15));
        assert!(status.success(), "{status}: {err:?}");
        assert_eq!(out.len(), 2, "--count 2: {out:?}");
        let mut last = 0;
        for line in &out {
            let e: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(e["reason"], "no_gateway", "{e}");
            assert_eq!(e["code"], 1, "{e}");
            assert_eq!(e["role"], "origin", "{e}");
            assert_eq!(e["source"], POD_A.to_string(), "{e}");
            assert_eq!(e["group"], NO_GW_GROUP.to_string(), "{e}");
            assert_eq!(e["device"], "lxc_a", "{e}");
            assert_eq!(e["ifindex"], ifindex("lxc_a"), "{e}");
            assert_eq!(e["protocol"], "udp", "{e}");
            assert_eq!(e["ttl"], 8, "{e}");
            assert_eq!(e["length"], nogw.len(), "{e}");
            assert!(e["time"].as_str().unwrap().starts_with(&date), "{e}");
            let ts = e["timestamp_ns"].as_u64().unwrap();
            assert!(ts >= last, "in order: {out:?}");
            last = ts;
        }
        // The third event was not consumed: the next monitor finds it (and, as
        // it predates it, skips it).
        let mut m = Monitor::on(&fx, &["--timeout", "1"]);
        m.wait_listening(fx.bpffs.path());
        let (status, out, err) = m.wait_exit(Duration::from_secs(10));
        assert!(
            status.success() && out.is_empty(),
            "{status}: {out:?} {err:?}"
        );
        assert!(
            err.contains(&"Skipped 1 drop events from before this monitor started.".to_owned()),
            "{err:?}"
        );
    }
);

cli_test!(monitor_stops_cleanly_on_sigterm_and_sigint, |fx| {
    use nix::sys::signal::Signal;
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let mut m = Monitor::on(&fx, &[]);
        m.wait_listening(fx.bpffs.path());
        m.signal(sig);
        let (status, out, err) = m.wait_exit(Duration::from_secs(5));
        assert!(status.success(), "{sig}: {status}: {err:?}");
        assert!(out.is_empty(), "{sig}: {out:?}");
    }
});

/// Run `monitor --count 1` on node-a, make pod-a2 send one frame with
/// pod-a1's address, and return the monitor's stdout, the frame, lxca2's
/// ifindex and the UTC date.
fn monitor_one_spoofed_drop(output: &str) -> (Vec<String>, Frame, u32, String) {
    let lab = camera_lab();
    let bpffs = lab.bpffs(Node::A);
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &lab.node_ns(Node::A),
        BIN,
        "monitor",
        "--bpffs-root",
    ])
    .arg(&bpffs)
    .args(["-o", output, "--count", "1", "--timeout", "10"]);
    let mut m = Monitor::spawn(cmd);
    m.wait_listening(&bpffs);
    let date = today_utc();
    let tap = common::lab_io::tap_in(&lab.pod_ns(Pod::A2), "eth0");
    let mut frame = Frame::udp(Pod::A1.ip(), GROUP, b"not mine");
    frame.dst_mac = group_mac(GROUP);
    tap.send(&frame.bytes());

    let (status, lines, err) = m.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "monitor: {status}; stderr: {err:?}");
    let lxc = lab::ifindex_in(&lab.node_ns(Node::A), Pod::A2.lxc()).expect("ifindex of lxca2");
    (lines, frame, lxc, date)
}

#[test]
fn monitor_json_reports_a_spoofed_source_on_the_lab() {
    if !common::privileged("monitor_json_reports_a_spoofed_source_on_the_lab") {
        return;
    }
    let (lines, frame, lxc, date) = monitor_one_spoofed_drop("json");
    assert_eq!(lines.len(), 1, "--count 1: one event, {lines:?}");
    let e: Value = serde_json::from_str(&lines[0]).unwrap_or_else(|e| panic!("{e}: {lines:?}"));
    assert_eq!(e["reason"], "spoofed_source", "{e}");
    assert_eq!(e["code"], 2, "{e}");
    assert_eq!(e["role"], "origin", "{e}");
    assert_eq!(e["family"], "ipv4", "a 40-byte record: {e}");
    assert_eq!(e["source"], "198.51.100.11", "{e}");
    assert_eq!(e["group"], "232.1.1.1", "{e}");
    assert_eq!(e["device"], "lxca2", "{e}");
    assert_eq!(e["ifindex"], lxc, "{e}");
    assert_eq!(e["protocol"], "udp", "{e}");
    assert_eq!(e["protocol_number"], 17, "{e}");
    assert_eq!(e["ttl"], frame.ttl, "{e}");
    assert_eq!(e["length"], frame.bytes().len(), "{e}");
    let time = e["time"].as_str().unwrap();
    assert!(
        time.starts_with(&date) && time.ends_with('Z'),
        "{time} on {date}"
    );
}

#[test]
fn monitor_text_reports_a_spoofed_source_on_the_lab() {
    if !common::privileged("monitor_text_reports_a_spoofed_source_on_the_lab") {
        return;
    }
    let (lines, frame, _, date) = monitor_one_spoofed_drop("text");
    assert_eq!(lines.len(), 1, "--count 1: one event, {lines:?}");
    let line = &lines[0];
    assert!(line.starts_with(&date), "{line}");
    assert!(
        line.contains(&format!(
            " xx drop (spoofed_source) origin, device lxca2: 198.51.100.11 -> 232.1.1.1 udp, ttl {}, {} bytes",
            frame.ttl,
            frame.bytes().len()
        )),
        "{line}"
    );
}
