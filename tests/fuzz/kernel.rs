//! Stage three: the kernel as a second oracle. The model of stages one and
//! two is ours, so a hole that both the datapath and the model misread is
//! invisible to them. Here the same generated frames go from a pod through
//! our datapath and from a pod through a plain Linux router, and the
//! router's kernel judges them:
//!
//! - ours: the lab (lab/), three nodes with the real daemons on a policy,
//!   real VXLAN, and node-b's uplink tapped upstream. Frames come from
//!   pod-a1 (node-a: the origin tunnels to node-b, the gateway) and from
//!   pod-b1 (node-b: the origin is the gateway), in turns;
//! - the kernel's: a router namespace with one veth per pod and an uplink,
//!   no program of ours. Its input path (ip_rcv_core(), ipv6_rcv() with
//!   the hop-by-hop options) runs; nftables at prerouting then copies
//!   (`dup`) what passed, filtered by the same policy (the pod's veth and
//!   address, the covered and the excluded prefixes), to the uplink, which
//!   is tapped. This kernel has no multicast routing (CONFIG_IP_MROUTE);
//!   the input path is the judge on every kernel, and the run says so.
//!
//! Every frame is followed, in both worlds, by a positive control carrying
//! its number: what a tap sees between two controls is that frame's. Each
//! frame is then one of: both forwarded (our bytes checked against the
//! model and the egress invariant), ours only (a violation: the run
//! fails), kernel only (it must be a rule of tests/fuzz/decisions.rs, the
//! README's list of where we are stricter than a router, and the model
//! must agree), or neither. A control that does not arrive in both worlds
//! makes the run invalid.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use cilium_mcast_egress::datapath::maps::{Gateway, Maps};
use lab::{Lab, LabConfig, Node, Pod};

use crate::check::{byte_diff, egress_invariant, verify_emitted};
use crate::common::packet::{Frame, Frame6, HOST_MAC};
use crate::common::sh;
use crate::decisions;
use crate::gen::{Case, Env, Gen};
use crate::model::{
    self, hex, reason, Entry, Entry6, Outcome, State, Via, GATEWAY_EXCLUDED, GATEWAY_NOT_FOUND,
};
use crate::model6;
use crate::real_path::{kernel_rx, pin_to_one_cpu, Rx};
use crate::report::{At, Oracle, Report};
use crate::rng::{mix, Rng};
use crate::tap::{RawTap, Sender};

pub const STAGE: &str = "kernel oracle";
const PROGRAM: &str = "lab pod -> uplink, against a Linux router";

/// The policy of both worlds: the lab's camera pods, through node-b.
const PREFIX4: &str = "232.1.0.0/16";
const EXCLUDED4: &str = "232.1.255.0/24";
const PREFIX6: &str = "ff3e::8000:0/112";
const EXCLUDED6: &str = "ff3e::8000:ff00/120";
/// The controls' groups: covered, not excluded.
const CONTROL4: Ipv4Addr = Ipv4Addr::new(232, 1, 254, 1);
const CONTROL6: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 0xfe01);
/// A control's payload: this, then its number (big-endian u64).
const MARK: &[u8; 16] = b"kernel-oracle-ct";
/// The pods' MTU in both worlds, as Cilium sets it for VXLAN.
const POD_MTU: usize = 1450;
/// Frames sent before their controls are awaited: the backlog of one CPU
/// holds them and every copy on the way (netdev_max_backlog is 1000).
const WINDOW: usize = 16;
/// Frames from one pod before the other's turn.
const BLOCK: usize = 512;
/// How long a control may take.
const WAIT: Duration = Duration::from_secs(5);
/// The pods, in turns: the remote-gateway and the local-gateway path.
const PODS: [Pod; 2] = [Pod::A1, Pod::B1];
/// The upstream side of both worlds' uplinks.
const UPSTREAM: &str = "eth0";

/// A MAC as `ip link` writes it.
fn mac_str(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The kernel's world, namespaces of the lab's own (removed with it): a
/// plain router with a veth per pod (MAC HOST_MAC, as the lab's lxc
/// devices get here), an uplink with the egress addresses and its upstream
/// neighbours, and the policy as nftables rules. Returns the upstream
/// namespace and each pod's, as PODS.
fn build_router(lab: &mut Lab) -> (String, Vec<String>) {
    let mut add = |short: &str| {
        let ns = lab.add_netns(short).expect("a namespace");
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.default.disable_ipv6=0",
            ],
        );
        ns
    };
    let router = add("router");
    let up = add("router-up");
    let pods: Vec<String> = PODS
        .iter()
        .map(|pod| add(&format!("router-{}", pod.name())))
        .collect();
    let mtu = POD_MTU.to_string();
    for (pod, ns) in PODS.iter().zip(&pods) {
        let dev = pod.lxc();
        sh(
            "ip",
            &[
                "-n", &router, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns",
                ns,
            ],
        );
        sh(
            "ip",
            &[
                "-n",
                &router,
                "link",
                "set",
                dev,
                "address",
                &mac_str(&HOST_MAC),
                "mtu",
                &mtu,
                "up",
            ],
        );
        sh("ip", &["-n", ns, "link", "set", "eth0", "mtu", &mtu, "up"]);
    }
    sh(
        "ip",
        &[
            "-n", &router, "link", "add", "uplink0", "type", "veth", "peer", "name", UPSTREAM,
            "netns", &up,
        ],
    );
    sh("ip", &["-n", &up, "link", "set", UPSTREAM, "up"]);
    sh("ip", &["-n", &router, "link", "set", "uplink0", "up"]);
    let egress4 = lab::egress_ip(Node::B).expect("node-b's egress IP");
    let egress6 = lab::egress_ip6(Node::B).expect("node-b's egress IPv6");
    sh(
        "ip",
        &[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{egress4}/25"),
            "dev",
            "uplink0",
        ],
    );
    sh(
        "ip",
        &[
            "-n",
            &router,
            "-6",
            "addr",
            "add",
            &format!("{egress6}/64"),
            "dev",
            "uplink0",
            "nodad",
        ],
    );
    let up_mac = mac_str(&crate::common::lab_io::mac_in(&up, UPSTREAM));
    for (addr, fam) in [
        (lab::addr::UPSTREAM_B.to_string(), "-4"),
        (lab::addr::UPSTREAM6_B.to_string(), "-6"),
    ] {
        sh(
            "ip",
            &[
                "-n",
                &router,
                fam,
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &up_mac,
                "dev",
                "uplink0",
                "nud",
                "permanent",
            ],
        );
    }
    let mut v4 = String::new();
    let mut v6 = String::new();
    for pod in PODS {
        v4.push_str(&format!(
            "    iifname \"{}\" ip saddr {} ip daddr {PREFIX4} ip daddr != {EXCLUDED4} dup to {} device \"uplink0\"\n",
            pod.lxc(),
            pod.ip(),
            lab::addr::UPSTREAM_B
        ));
        v6.push_str(&format!(
            "    iifname \"{}\" ip6 saddr {} ip6 daddr {PREFIX6} ip6 daddr != {EXCLUDED6} dup to {} device \"uplink0\"\n",
            pod.lxc(),
            pod.ip6(),
            lab::addr::UPSTREAM6_B
        ));
    }
    lab::nft(
        &router,
        &format!(
            "table ip judge {{\n  chain pre {{\n    type filter hook prerouting priority 0; policy accept;\n{v4}  }}\n}}\n\
             table ip6 judge {{\n  chain pre {{\n    type filter hook prerouting priority 0; policy accept;\n{v6}  }}\n}}\n"
        ),
    )
    .expect("the router's rules");
    (up, pods)
}

/// The policy of both worlds, as the lab's daemons read it.
fn policy_manifest() -> String {
    lab::camera_policy(
        "kernel-oracle",
        &[PREFIX4, PREFIX6],
        &[EXCLUDED4, EXCLUDED6],
        Node::B,
    )
}

/// ifindex -> MTU of every device in `ns`.
fn devices_in(ns: &str) -> BTreeMap<u32, u32> {
    sh("ip", &["-n", ns, "-o", "link", "show"])
        .lines()
        .filter_map(|l| {
            let ifindex = l.split(':').next()?.trim().parse().ok()?;
            let mtu = l
                .split_whitespace()
                .skip_while(|w| *w != "mtu")
                .nth(1)?
                .parse()
                .ok()?;
            Some((ifindex, mtu))
        })
        .collect()
}

/// A node's pinned maps as the model's state: what the real controller
/// wrote, read back.
fn node_state(maps: &Maps, ns: &str, label: &str) -> State {
    let gateway_ip = |g: Gateway| match g {
        Gateway::Node(ip) => ip,
        Gateway::NotFound => GATEWAY_NOT_FOUND,
        Gateway::Excluded => GATEWAY_EXCLUDED,
    };
    let config = maps.config().expect("config");
    let groups = maps.cilium_groups().expect("Cilium's groups");
    assert!(
        groups.is_empty(),
        "the lab has no Cilium groups: {groups:?}"
    );
    let mut st = State {
        label: label.to_owned(),
        node_ip: config.node_ip,
        tunnel_ifindex: config.tunnel_ifindex,
        devices: devices_in(ns),
        ..State::default()
    };
    for (k, v) in maps.policies().expect("policies") {
        st.insert_policy(Entry {
            saddr: k.source,
            dst: k.destination,
            egress_ip: v.egress_ip,
            gateway_ip: gateway_ip(v.gateway),
            egress_ifindex: v.egress_ifindex,
            policy_id: v.policy_id,
            origin_node: v.origin.node,
            origin_identity: v.origin.identity,
        });
    }
    for (k, v) in maps.policies_v6().expect("IPv6 policies") {
        st.insert_policy6(Entry6 {
            saddr: k.source,
            dst: k.destination,
            egress_ip: v.egress_ip,
            gateway_ip: gateway_ip(v.gateway),
            egress_ifindex: v.egress_ifindex,
            policy_id: v.policy_id,
            origin_node: v.origin.node,
            origin_identity: v.origin.identity,
        });
    }
    for (a, e) in maps.endpoints().expect("endpoints") {
        st.endpoints.insert(a, (e.ifindex, e.identity));
    }
    for (a, e) in maps.endpoints_v6.entries().expect("IPv6 endpoints") {
        st.endpoints6.insert(a, (e.ifindex, e.identity));
    }
    st.nodes = maps.nodes().expect("nodes").into_iter().collect();
    st.egress_ifaces = maps
        .egress_ifaces()
        .expect("uplinks")
        .into_iter()
        .map(|(i, e)| (i, e.mac))
        .collect();
    st
}

/// What the model says of a frame from a pod: the bytes that leave
/// node-b's uplink, or the rule that keeps it in.
struct Verdict {
    emitted: Option<Vec<u8>>,
    rule: &'static str,
    /// The frame as the gateway program got it, and its node's state,
    /// for the egress invariant.
    at_gateway: Option<Vec<u8>>,
}

/// The rule of `o` (an outcome of `frame`'s): the path that handed it on,
/// or the drop's reason, malformed ones by the check they fail.
fn rule_of(o: &Outcome, frame: &[u8]) -> &'static str {
    match o.drop {
        Some(d) if d.reason == reason::MALFORMED => {
            let why = if model6::is_v6(frame) {
                model6::check(frame, model6::walk_why(frame)).err()
            } else {
                model::check(frame).err()
            };
            why.unwrap_or("malformed")
        }
        _ => o.path,
    }
}

/// One world's pod: where its frames are sent from.
struct Sending {
    ours: Sender,
    kernel: Sender,
}

struct Worlds {
    lab: Lab,
    ours_tap: RawTap,
    kernel_tap: RawTap,
    senders: Vec<Sending>,
    /// node-a's and node-b's maps as read after the daemons synced.
    states: BTreeMap<Node, State>,
    /// node-b's uplink.
    uplink: u32,
    /// Each pod's lxc device on its node, as PODS.
    lxc: Vec<u32>,
}

impl Worlds {
    fn up() -> Worlds {
        let mut cfg = LabConfig::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"));
        cfg.manifests = vec![("policy.yaml".to_owned(), policy_manifest())];
        let mut lab = Lab::up(cfg).expect("the lab");
        let (router_up, router_pods) = build_router(&mut lab);
        for node in [Node::A, Node::B] {
            let ns = lab.node_ns(node);
            // Nothing but our programs puts a pod's frame on an uplink.
            let fwd = sh(
                "ip",
                &["netns", "exec", &ns, "sysctl", "-n", "net.ipv4.ip_forward"],
            );
            assert_eq!(fwd.trim(), "0", "{ns} forwards IPv4");
        }
        let mac = mac_str(&HOST_MAC);
        for pod in PODS {
            sh(
                "ip",
                &[
                    "-n",
                    &lab.node_ns(pod.node()),
                    "link",
                    "set",
                    pod.lxc(),
                    "address",
                    &mac,
                ],
            );
        }
        // The daemons wrote the pods' entries, endpoints and the uplink.
        let mut states = BTreeMap::new();
        for node in [Node::A, Node::B] {
            let maps = lab.maps(node).expect("maps");
            lab::wait_until(
                &format!("{}'s policy entries and endpoints", node.name()),
                Duration::from_secs(20),
                || {
                    let st = node_state(&maps, &lab.node_ns(node), node.name());
                    PODS.iter().filter(|p| p.node() == node).all(|p| {
                        st.endpoints.contains_key(&p.ip())
                            && st.endpoints6.contains_key(&p.ip6())
                            && st.lookup(p.ip(), CONTROL4).is_some()
                            && st.lookup6(p.ip6(), CONTROL6).is_some()
                    }) && (node != Node::B || !st.egress_ifaces.is_empty())
                },
            )
            .expect("the daemons' maps");
            states.insert(node, node_state(&maps, &lab.node_ns(node), node.name()));
        }
        let uplink = lab::ifindex_in(&lab.node_ns(Node::B), "uplink0").expect("uplink0");
        let lxc = PODS
            .iter()
            .map(|p| lab::ifindex_in(&lab.node_ns(p.node()), p.lxc()).expect("lxc"))
            .collect();
        let ours_tap = lab::in_netns(&lab.upstream_ns(), || RawTap::open(UPSTREAM)).expect("tap");
        let kernel_tap = lab::in_netns(&router_up, || RawTap::open(UPSTREAM)).expect("tap");
        let senders = PODS
            .iter()
            .zip(&router_pods)
            .map(|(pod, kernel)| Sending {
                ours: lab::in_netns(&lab.pod_ns(*pod), || Sender::open("eth0")).expect("sender"),
                kernel: lab::in_netns(kernel, || Sender::open("eth0")).expect("sender"),
            })
            .collect();
        Worlds {
            lab,
            ours_tap,
            kernel_tap,
            senders,
            states,
            uplink,
            lxc,
        }
    }

    /// The model of our world for a frame from `pod`: its origin node's
    /// program, then, for a copy tunnelled to node-b, node-b's.
    fn model(&self, pi: usize, frame: &[u8]) -> Verdict {
        let pod = PODS[pi];
        let stay = |rule| Verdict {
            emitted: None,
            rule,
            at_gateway: None,
        };
        let (seen, vlan) = match kernel_rx(frame) {
            Rx::Refused => return stay("shorter_than_ethernet"),
            Rx::Vanishes => return stay("vlan_tag_cut_short"),
            Rx::Seen { frame, vlan } => (frame, vlan),
        };
        let origin = &self.states[&pod.node()];
        let o = model::container(origin, &seen, self.lxc[pi], vlan);
        match o.emitted {
            Some(e) => match e.via {
                Via::Uplink(i) if i == self.uplink && pod.node() == Node::B => Verdict {
                    // The datagram as cut, before the rewrite.
                    at_gateway: Some(seen[..e.bytes.len().min(seen.len())].to_vec()),
                    emitted: Some(e.bytes),
                    rule: o.path,
                },
                Via::Tunnel {
                    remote, local, vni, ..
                } if remote == Node::B.ip() => {
                    let g =
                        model::overlay(&self.states[&Node::B], &e.bytes, Some((vni, local)), false);
                    match g.emitted {
                        Some(ge) => Verdict {
                            emitted: Some(ge.bytes),
                            rule: g.path,
                            at_gateway: Some(e.bytes),
                        },
                        None => stay(rule_of(&g, &e.bytes)),
                    }
                }
                _ => stay("leaves elsewhere"),
            },
            // A tagged frame is never ours, whatever is behind the tag the
            // kernel took off (a second tag reads as "not IPv4").
            None if vlan => stay("vlan_tag"),
            None => stay(rule_of(&o, &seen)),
        }
    }
}

/// A control: a covered datagram from `pod` carrying `seq`, IPv4 for even
/// numbers, IPv6 for odd ones.
fn control(pod: Pod, seq: u64) -> Vec<u8> {
    let mut payload = MARK.to_vec();
    payload.extend_from_slice(&seq.to_be_bytes());
    if seq % 2 == 0 {
        Frame::udp(pod.ip(), CONTROL4, &payload).ttl(64).bytes()
    } else {
        Frame6::udp(pod.ip6(), CONTROL6, &payload)
            .hop_limit(64)
            .bytes()
    }
}

/// The number of a control that left either world, from its payload.
fn control_seq(f: &[u8]) -> Option<u64> {
    let at = match u16::from_be_bytes([*f.get(12)?, *f.get(13)?]) {
        0x0800 if *f.get(14)? == 0x45 && *f.get(23)? == 17 => 14 + 20 + 8,
        0x86dd if *f.get(20)? == 17 => 14 + 40 + 8,
        _ => return None,
    };
    let p = f.get(at..at + MARK.len() + 8)?;
    if p[..MARK.len()] != MARK[..] {
        return None;
    }
    Some(u64::from_be_bytes(p[MARK.len()..].try_into().ok()?))
}

/// What a node sends of its own on its uplink, never a pod's: IPv6 from
/// a link-local or the unspecified source (neighbour discovery, duplicate
/// address detection, MLD reports), ARP.
fn own_traffic(f: &[u8]) -> bool {
    match f.get(12..14) {
        Some([0x86, 0xdd]) => {
            f.len() >= 38
                && ((f[22] == 0xfe && f[23] & 0xc0 == 0x80) || f[22..38].iter().all(|b| *b == 0))
        }
        Some([0x08, 0x06]) => true,
        _ => false,
    }
}

/// What `tap` saw of frames `first..=last`, each the arrivals between
/// its control and the one before, up to the control of `last`.
fn collect(tap: &RawTap, first: u64, last: u64, world: &str) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let mut out = vec![Vec::new(); (last - first + 1) as usize];
    let mut next = first;
    let deadline = Instant::now() + WAIT;
    while next <= last {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(f) = tap.recv(left) else {
            return Err(format!(
                "{world}: the control of frame {next} never arrived (run invalid)"
            ));
        };
        if own_traffic(&f) {
            continue;
        }
        match control_seq(&f) {
            Some(s) if s == next => next += 1,
            Some(s) => {
                return Err(format!(
                    "{world}: the control of frame {s} arrived where {next}'s was due (run invalid)"
                ))
            }
            None => out[(next - first) as usize].push(f),
        }
    }
    Ok(out)
}

/// The kernel's multicast routing, if this kernel has it (it is not used:
/// the input path is the judge on every kernel).
fn mroute_present() -> bool {
    std::path::Path::new("/proc/net/ip_mr_vif").exists()
}

/// One frame sent to both worlds: what each send(2) said.
struct Sent {
    case: Case,
    /// The pod, as an index of PODS.
    pod: usize,
    ours: Result<(), i32>,
    kernel: Result<(), i32>,
}

pub fn run(seed: u64, frames: usize, report: &mut Report) {
    let started = Instant::now();
    let w = Worlds::up();
    pin_to_one_cpu();
    println!(
        "fuzz: {STAGE} stage: the judge is the kernel's input path (nftables at prerouting, after ip_rcv_core() and ipv6_rcv() with its hop-by-hop options); multicast routing (CONFIG_IP_MROUTE) {}",
        if mroute_present() {
            "present, not used"
        } else {
            "absent on this kernel"
        }
    );
    let env_of = |pi: usize| {
        let lxc = w.lxc[pi];
        let st = &w.states[&PODS[pi].node()];
        let uplink = (w.uplink, 1500, [0u8; 6]);
        Env {
            lxc_a: lxc,
            lxc_b: lxc,
            uplinks: vec![uplink; 3],
            tunnels: vec![(st.tunnel_ifindex, 1450)],
            vanished: 0,
            devices: st.devices.clone(),
        }
    };
    // The generator aims at the sending pod's own entries.
    let aimed = |pod: Pod| {
        let mut st = w.states[&pod.node()].clone();
        st.policies.retain(|_, e| e.saddr == pod.ip());
        st.policies6.retain(|_, e| e.saddr == pod.ip6());
        st
    };
    let envs: Vec<Env> = (0..PODS.len()).map(env_of).collect();
    let aims: Vec<State> = PODS.iter().map(|p| aimed(*p)).collect();

    let mut seq = 0u64;
    let mut done = 0usize;
    let mut block = 0u64;
    let mut oracle = Oracle::default();
    while done < frames {
        let pi = (block % 2) as usize;
        let pod = PODS[pi];
        let mut g = Gen::new(
            Rng::new(mix(seed, 0x4_0000_0000 + block)),
            &aims[pi],
            &envs[pi],
        );
        let mut left = BLOCK.min(frames - done);
        while left > 0 {
            let n = WINDOW.min(left);
            let first = seq;
            let mut sent = Vec::with_capacity(n);
            for _ in 0..n {
                let case = loop {
                    let c = g.case(true);
                    // send(2) refuses what does not fit the pods' MTU, in
                    // both worlds alike: not worth a frame of the run.
                    if c.frame.len() >= 14 && c.frame.len() <= 14 + 4 + POD_MTU {
                        break c;
                    }
                };
                let s = &w.senders[pi];
                let errno = |r: std::io::Result<()>| r.map_err(|e| e.raw_os_error().unwrap_or(-1));
                let ours = errno(s.ours.send(&case.frame));
                let kernel = errno(s.kernel.send(&case.frame));
                let c = control(pod, seq);
                s.ours.send(&c).expect("a control from the pod");
                s.kernel.send(&c).expect("a control from the pod");
                sent.push(Sent {
                    case,
                    pod: pi,
                    ours,
                    kernel,
                });
                seq += 1;
            }
            let last = seq - 1;
            let ours = collect(&w.ours_tap, first, last, "ours").unwrap_or_else(|e| panic!("{e}"));
            let kernel = collect(&w.kernel_tap, first, last, "the kernel's")
                .unwrap_or_else(|e| panic!("{e}"));
            for (i, s) in sent.iter().enumerate() {
                judge(&w, s, &ours[i], &kernel[i], done + i, report, &mut oracle);
            }
            oracle.controls += 2 * n as u64;
            done += n;
            left -= n;
        }
        block += 1;
    }
    // The maps the model read are still the daemons' maps.
    for node in [Node::A, Node::B] {
        let maps = w.lab.maps(node).expect("maps");
        let now = node_state(&maps, &w.lab.node_ns(node), node.name());
        assert_eq!(
            now.describe(),
            w.states[&node].describe(),
            "{}'s maps changed during the run",
            node.name()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {STAGE} stage: {done} frames from pod-a1 and pod-b1 to our lab and to a Linux router, {} controls arrived in both worlds, {secs:.1} s ({:.0} frames/s)",
        oracle.controls,
        done as f64 / secs
    );
    report.oracle = oracle;
    drop(w);
}

/// Judge one frame by what left each world.
fn judge(
    w: &Worlds,
    s: &Sent,
    ours: &[Vec<u8>],
    kernel: &[Vec<u8>],
    no: usize,
    report: &mut Report,
    oracle: &mut Oracle,
) {
    let mut problems = Vec::new();
    if s.ours != s.kernel {
        problems.push(format!(
            "send(2) said {:?} to our pod's veth and {:?} to the router's",
            s.ours, s.kernel
        ));
    }
    // Not sent (longer than the pods' MTU): nothing may arrive anywhere.
    let m = if s.ours.is_err() {
        Verdict {
            emitted: None,
            rule: "refused by send(2)",
            at_gateway: None,
        }
    } else {
        w.model(s.pod, &s.case.frame)
    };
    if ours.len() > 1 {
        problems.push(format!("left our uplink {} times", ours.len()));
    }
    if kernel.len() > 1 {
        problems.push(format!("left the router {} times", kernel.len()));
    }
    let (o, k) = (!ours.is_empty(), !kernel.is_empty());
    let outcome = match (o, k) {
        (true, true) => {
            match (&m.emitted, &m.at_gateway) {
                (Some(want), Some(input)) => {
                    let got = &ours[0];
                    let gw = &w.states[&Node::B];
                    problems.extend(byte_diff(want, got).map(|d| format!("our bytes: {d}")));
                    problems.extend(
                        verify_emitted(input, got, want)
                            .into_iter()
                            .map(|p| format!("independent check: {p}")),
                    );
                    problems.extend(
                        egress_invariant(gw, input, got, Some(w.uplink), false)
                            .into_iter()
                            .map(|p| format!("egress invariant: {p}")),
                    );
                }
                _ => problems.push(format!(
                    "left our uplink, but the model keeps it in ({})",
                    m.rule
                )),
            }
            "both"
        }
        (true, false) => {
            problems
                .push("OURS ONLY: left our uplink, the kernel's input path dropped it".to_owned());
            *oracle.ours_only.entry(m.rule).or_default() += 1;
            "ours only"
        }
        (false, true) => {
            if m.emitted.is_some() {
                problems.push("the model says it leaves our uplink; it did not".to_owned());
            } else if !decisions::is_stricter(m.rule) {
                problems.push(format!(
                    "only the kernel forwarded it, for a rule that is not one of the decisions (tests/fuzz/decisions.rs, README): {}",
                    m.rule
                ));
            } else {
                *oracle.kernel_only.entry(m.rule).or_default() += 1;
            }
            "kernel only"
        }
        (false, false) => {
            if m.emitted.is_some() {
                problems.push("the model says it leaves our uplink; it did not".to_owned());
            }
            "neither"
        }
    };
    oracle.count(&s.case, outcome);
    if problems.is_empty() {
        return;
    }
    for f in ours {
        problems.push(format!("left our uplink: {}", hex(f)));
    }
    for f in kernel {
        problems.push(format!("left the router: {}", hex(f)));
    }
    report.violation(
        &At {
            stage: STAGE,
            program: PROGRAM,
            state: &w.states[&PODS[s.pod].node()],
            frame_no: no,
            case: &s.case,
        },
        &problems,
        &format!(
            "from {}: {} ({})",
            PODS[s.pod].name(),
            if m.emitted.is_some() {
                "leaves"
            } else {
                "stays in"
            },
            m.rule
        ),
    );
}
