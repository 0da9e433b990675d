//! `make demo`: the lab with the example policy, two SSM streams from a pod
//! with iperf2 (IPv4 and IPv6, at the same time), an iperf2 source-specific
//! receiver upstream for each (IGMPv3 and MLDv2 joins), and a short summary
//! of what arrived and what the datapath counted.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{addr, Lab, LabConfig, LabError, Node, Pod, Result};
use cilium_mcast_egress::datapath::maps::{DropReason, Maps, Role};

/// The example policy, embedded so that the demo needs nothing but the
/// binary: pods `app=camera` to 232.1.0.0/16 and ff3e::8000:0/112 through
/// node-b's uplink0.
pub const EXAMPLE_POLICY: &str = include_str!("../../manifests/examples/camera-ssm.yaml");

/// What the demo measured of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    pub group: IpAddr,
    pub sent: Option<u64>,
    pub received: Option<u64>,
    pub lost: Option<u64>,
    /// The (S,G) source the receiver saw the stream from.
    pub source: Option<IpAddr>,
    /// Packets counted leaving node-a towards the gateway, and leaving
    /// node-b's uplink, for the stream's group.
    pub origin_packets: u64,
    pub gateway_packets: u64,
    pub gateway_bytes: u64,
}

/// What the demo measured: the IPv4 stream and the IPv6 one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    pub v4: StreamReport,
    pub v6: StreamReport,
}

/// Parse iperf2's client output: "Sent N datagrams".
pub fn parse_sent(out: &str) -> Option<u64> {
    out.lines().rev().find_map(|l| {
        let i = l.find("Sent ")?;
        l[i + 5..].split_whitespace().next()?.parse().ok()
    })
}

/// Parse iperf2's server output: the last "lost/total (p%)" pair, and the
/// source of "connected with S" (IPv4 or IPv6).
pub fn parse_received(out: &str) -> (Option<u64>, Option<u64>, Option<IpAddr>) {
    let mut lost_total = None;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for w in words.windows(2) {
            if !(w[1].starts_with('(') && w[1].ends_with("%)")) {
                continue;
            }
            if let Some((l, t)) = w[0].split_once('/') {
                if let (Ok(l), Ok(t)) = (l.parse::<u64>(), t.parse::<u64>()) {
                    lost_total = Some((l, t));
                }
            }
        }
    }
    let source = out.lines().find_map(|l| {
        let i = l.find("connected with ")?;
        l[i + 15..].split_whitespace().next()?.parse().ok()
    });
    (
        lost_total.map(|(l, t)| t.saturating_sub(l)),
        lost_total.map(|(l, _)| l),
        source,
    )
}

/// iperf2 with `args` inside lab namespace `ns`, stdin closed.
pub fn iperf(ns: &str, args: &[&str]) -> Command {
    let mut c = super::command("ip");
    c.args(["netns", "exec", ns, "iperf"]).args(args);
    c.stdin(Stdio::null());
    c
}

/// iperf2's arguments for a source-specific receiver of `group` from
/// `source` on the upstream host's `eth0` for `secs`: IGMPv3 or, for IPv6
/// (`-V`), an MLDv2 join (`MCAST_JOIN_SOURCE_GROUP`).
pub fn ssm_receiver_args(group: IpAddr, source: IpAddr, secs: u64) -> Vec<String> {
    let mut args: Vec<String> = vec!["-s".into(), "-u".into()];
    if group.is_ipv6() {
        args.push("-V".into());
    }
    args.extend([
        "-B".into(),
        format!("{group}%eth0"),
        "-H".into(),
        source.to_string(),
        "-e".into(),
        "-t".into(),
        secs.to_string(),
    ]);
    args
}

/// iperf2's arguments for a pod sending `len`-byte datagrams to `group` at
/// `rate` for `secs`, with TTL / hop limit 8.
pub fn sender_args(group: IpAddr, len: usize, rate: &str, secs: u64) -> Vec<String> {
    let mut args: Vec<String> = vec!["-c".into(), group.to_string(), "-u".into()];
    if group.is_ipv6() {
        args.push("-V".into());
    }
    args.extend([
        "-T".into(),
        "8".into(),
        "-l".into(),
        len.to_string(),
        "-b".into(),
        rate.into(),
        "-t".into(),
        secs.to_string(),
        "-e".into(),
    ]);
    args
}

fn spawn(ns: &str, args: &[String], what: &str) -> Result<Child> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    iperf(ns, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(super::io(format!("starting the iperf {what}")))
}

fn output(child: Child, what: &str) -> Result<String> {
    let out = child
        .wait_with_output()
        .map_err(super::io(format!("waiting for the iperf {what}")))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the upstream host's `eth0` has joined `group`.
fn joined(lab: &Lab, group: IpAddr) -> bool {
    super::run(
        "ip",
        &["-n", &lab.upstream_ns(), "maddr", "show", "dev", "eth0"],
    )
    .is_ok_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&group.to_string()))
    })
}

/// Run the demo on a fresh lab and tear it down.
pub fn run_demo(binary: &std::path::Path, seconds: u32) -> Result<DemoReport> {
    let mut cfg = LabConfig::new(binary);
    cfg.manifests
        .push(("camera-ssm.yaml".into(), EXAMPLE_POLICY.to_owned()));
    println!("== bringing up the lab: 3 nodes, 4 pods (dual-stack), an upstream host, 3 daemons");
    let lab = Lab::up(cfg)?;
    let streams = [
        (IpAddr::from(addr::GROUP), IpAddr::from(addr::EGRESS_B)),
        (IpAddr::from(addr::GROUP6), IpAddr::from(addr::EGRESS6_B)),
    ];

    if super::stopping() {
        return Err(LabError::Stopped);
    }
    // The receivers join (203.0.113.10, 232.1.1.1) and
    // (2001:db8:203::10, ff3e::8000:1) on the upstream host.
    let listen = u64::from(seconds) + 4;
    let mut receivers = Vec::new();
    for (group, source) in streams {
        let args = ssm_receiver_args(group, source, listen);
        println!(
            "== upstream joins ({source}, {group}): iperf {}",
            args.join(" ")
        );
        receivers.push(spawn(&lab.upstream_ns(), &args, "receiver")?);
    }
    for (group, _) in streams {
        super::wait_until(
            &format!("the receiver's join of {group}"),
            Duration::from_secs(5),
            || joined(&lab, group),
        )?;
    }

    let secs = u64::from(seconds);
    let mut senders = Vec::new();
    for (group, _) in streams {
        let args = sender_args(group, 1316, "2M", secs);
        println!(
            "== {} ({}) sends SSM to {group} for {seconds} s: iperf {}",
            Pod::A1.name(),
            if group.is_ipv6() {
                IpAddr::from(Pod::A1.ip6())
            } else {
                IpAddr::from(Pod::A1.ip())
            },
            args.join(" ")
        );
        if super::stopping() {
            return Err(LabError::Stopped);
        }
        senders.push(spawn(&lab.pod_ns(Pod::A1), &args, "sender")?);
    }
    let mut sent_out = Vec::new();
    for s in senders {
        sent_out.push(output(s, "sender")?);
    }
    let mut recv_out = Vec::new();
    for r in receivers {
        recv_out.push(output(r, "receiver")?);
    }

    let maps_a = lab.maps(Node::A)?;
    let maps_b = lab.maps(Node::B)?;
    let map_err = |node: Node| {
        move |source| LabError::Map {
            node: node.name(),
            source,
        }
    };
    let mut reports = Vec::new();
    for (i, (group, _)) in streams.iter().enumerate() {
        let origin = counted(&maps_a, *group, Role::Origin).map_err(map_err(Node::A))?;
        let gateway = counted(&maps_b, *group, Role::Gateway).map_err(map_err(Node::B))?;
        let (received, lost, source) = parse_received(&recv_out[i]);
        reports.push(StreamReport {
            group: *group,
            sent: parse_sent(&sent_out[i]),
            received,
            lost,
            source,
            origin_packets: origin.0,
            gateway_packets: gateway.0,
            gateway_bytes: gateway.1,
        });
    }
    let v6 = reports.pop().expect("two streams");
    let v4 = reports.pop().expect("two streams");
    let report = DemoReport { v4, v6 };
    print_summary(&report);
    if std::env::var_os("DEMO_RAW").is_some() {
        for i in 0..2 {
            println!(
                "--- sender\n{}--- receiver\n{}---",
                sent_out[i], recv_out[i]
            );
        }
    }
    drop(lab);
    println!("== lab torn down");
    Ok(report)
}

/// Packets and bytes counted for `group` (either family) in `role`.
pub fn counted(
    maps: &Maps,
    group: IpAddr,
    role: Role,
) -> cilium_mcast_egress::datapath::Result<(u64, u64)> {
    Ok(maps
        .counters()?
        .iter()
        .filter(|c| c.group == group && c.role == role)
        .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes)))
}

/// IPv6 drops counted for `role` and `reason` (`mcast_egw_drops_v6`).
pub fn drops6(
    maps: &Maps,
    role: Role,
    reason: DropReason,
) -> cilium_mcast_egress::datapath::Result<u64> {
    Ok(maps.drop_count_v6(role, reason)?.packets)
}

fn show<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("?".into(), |v| v.to_string())
}

fn print_summary(r: &DemoReport) {
    let row = |what: &str, f: &dyn Fn(&StreamReport) -> String| {
        println!("  {what:<34} {:<20} {}", f(&r.v4), f(&r.v6));
    };
    println!();
    row("", &|s| {
        if s.group.is_ipv6() {
            "IPv6".into()
        } else {
            "IPv4".into()
        }
    });
    row("group", &|s| s.group.to_string());
    row("datagrams sent by the pod", &|s| show(&s.sent));
    row("datagrams received upstream", &|s| show(&s.received));
    row("datagrams lost", &|s| show(&s.lost));
    row("source address the receiver saw", &|s| show(&s.source));
    row("origin counter (node-a), packets", &|s| {
        s.origin_packets.to_string()
    });
    row("gateway counter (node-b), packets", &|s| {
        s.gateway_packets.to_string()
    });
    row("gateway counter (node-b), bytes", &|s| {
        s.gateway_bytes.to_string()
    });
    println!();
}

/// Whether the lab's tools are installed, with a message naming what is
/// missing.
pub fn check_tools() -> std::result::Result<(), String> {
    require_tools(&["ip", "iperf", "ethtool"])
}

/// Whether every one of `tools` is on PATH, with a message naming those
/// that are not.
pub fn require_tools(tools: &[&str]) -> std::result::Result<(), String> {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing tools: {} (run scripts/install-deps.sh)",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iperf2_client_and_ssm_server_reports() {
        let client = "[  1] 0.0000-2.0082 sec   517 KBytes  2.11 Mbits/sec  401/0      201 pps\n\
                      [  1] Sent 403 datagrams\n";
        assert_eq!(parse_sent(client), Some(403));
        let server = "Joining multicast (S,G)=203.0.113.10,232.1.1.1 w/iface eth0\n\
            [  1] local 232.1.1.1%eth0 port 5001 connected with 203.0.113.10 port 50560 (sock=3)\n\
            [ ID] Interval Transfer Bandwidth Jitter Lost/Total Latency PPS Rx/inP NetPwr\n\
            [  1] 0.0000-2.0082 sec 517 KBytes 2.11 Mbits/sec 0.008 ms 3/402 (0.75%) \
            0.038/0.010/0.643/0.033 ms 200 pps 402/0(0) pkts 6974\n";
        assert_eq!(
            parse_received(server),
            (Some(399), Some(3), Some("203.0.113.10".parse().unwrap()))
        );
        assert_eq!(parse_received("nothing"), (None, None, None));
        // iperf 2.1.8's IPv6 SSM receiver (-V -B ff3e::8000:1%eth0 -H ...).
        let server6 = "Joining multicast (S,G)=2001:db8:203::10,ff3e::8000:1 w/iface eth0\n\
            [  1] local ff3e::8000:1%eth0 port 5001 connected with 2001:db8:203::10 port 49056 \
            (sock=3) (peer 2.1.8) on 2026-11-30 23:37:15 (UTC)\n\
            [  1] 0.0000-2.0182 sec   261 KBytes  1.06 Mbits/sec   0.002 ms 0/203 (0%) \
            0.031/0.002/1.184/0.082 ms 101 pps 203/0(0) pkts 4208\n";
        assert_eq!(
            parse_received(server6),
            (
                Some(203),
                Some(0),
                Some("2001:db8:203::10".parse().unwrap())
            )
        );
    }
}
