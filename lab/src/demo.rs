//! `make demo`: the lab with the example policy, an SSM stream from a pod
//! with iperf2, an iperf2 source-specific receiver upstream, and a short
//! summary of what arrived and what the datapath counted.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{addr, Lab, LabConfig, LabError, Node, Pod, Result};
use cilium_mcast_egress::datapath::maps::Role;

/// The example policy, embedded so that the demo needs nothing but the
/// binary: pods `app=camera` to 232.1.0.0/16 through node-b's uplink0.
pub const EXAMPLE_POLICY: &str = include_str!("../../manifests/examples/camera-ssm.yaml");

/// What the demo measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    pub sent: Option<u64>,
    pub received: Option<u64>,
    pub lost: Option<u64>,
    /// The (S,G) source the receiver saw the stream from.
    pub source: Option<Ipv4Addr>,
    /// Packets counted leaving node-a towards the gateway, and leaving
    /// node-b's uplink, for the demo's group.
    pub origin_packets: u64,
    pub gateway_packets: u64,
    pub gateway_bytes: u64,
}

/// Parse iperf2's client output: "Sent N datagrams".
pub fn parse_sent(out: &str) -> Option<u64> {
    out.lines().rev().find_map(|l| {
        let i = l.find("Sent ")?;
        l[i + 5..].split_whitespace().next()?.parse().ok()
    })
}

/// Parse iperf2's server output: the last "lost/total (p%)" pair, and the
/// source of "connected with S".
pub fn parse_received(out: &str) -> (Option<u64>, Option<u64>, Option<Ipv4Addr>) {
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

/// Run the demo on a fresh lab and tear it down.
pub fn run_demo(binary: &std::path::Path, seconds: u32) -> Result<DemoReport> {
    let mut cfg = LabConfig::new(binary);
    cfg.manifests
        .push(("camera-ssm.yaml".into(), EXAMPLE_POLICY.to_owned()));
    println!("== bringing up the lab: 3 nodes, 4 pods, an upstream host, 3 daemons");
    let lab = Lab::up(cfg)?;
    let group = addr::GROUP.to_string();
    let egress = addr::EGRESS_B.to_string();

    if super::stopping() {
        return Err(LabError::Stopped);
    }
    // The receiver joins (203.0.113.10, 232.1.1.1) on the upstream host.
    let listen = (seconds + 4).to_string();
    let bind = format!("{group}%eth0");
    let receiver = iperf(
        &lab.upstream_ns(),
        &["-s", "-u", "-B", &bind, "-H", &egress, "-e", "-t", &listen],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .map_err(super::io("starting the iperf receiver"))?;
    std::thread::sleep(Duration::from_millis(800));

    println!(
        "== {} ({}) sends SSM to {group} for {seconds} s: iperf -c {group} -u -T 8 -l 1316 -b 2M",
        Pod::A1.name(),
        Pod::A1.ip()
    );
    let secs = seconds.to_string();
    if super::stopping() {
        return Err(LabError::Stopped);
    }
    let sender = iperf(
        &lab.pod_ns(Pod::A1),
        &[
            "-c", &group, "-u", "-T", "8", "-l", "1316", "-b", "2M", "-t", &secs, "-e",
        ],
    )
    .output()
    .map_err(super::io("running the iperf sender"))?;
    let sent_out = String::from_utf8_lossy(&sender.stdout).into_owned();
    let recv = receiver
        .wait_with_output()
        .map_err(super::io("waiting for the iperf receiver"))?;
    let recv_out = String::from_utf8_lossy(&recv.stdout).into_owned();

    let origin = counter(&lab, Node::A, Role::Origin)?;
    let gateway = counter(&lab, Node::B, Role::Gateway)?;
    let (received, lost, source) = parse_received(&recv_out);
    let report = DemoReport {
        sent: parse_sent(&sent_out),
        received,
        lost,
        source,
        origin_packets: origin.0,
        gateway_packets: gateway.0,
        gateway_bytes: gateway.1,
    };
    print_summary(&report);
    if std::env::var_os("DEMO_RAW").is_some() {
        println!("--- sender\n{sent_out}--- receiver\n{recv_out}---");
    }
    drop(lab);
    println!("== lab torn down");
    Ok(report)
}

/// Packets and bytes counted for the demo's group on `node` in `role`.
fn counter(lab: &Lab, node: Node, role: Role) -> Result<(u64, u64)> {
    let maps = lab.maps(node)?;
    let counters = maps.counters().map_err(|source| LabError::Map {
        node: node.name(),
        source,
    })?;
    Ok(counters
        .iter()
        .filter(|c| c.group == addr::GROUP && c.role == role)
        .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes)))
}

fn show<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("?".into(), |v| v.to_string())
}

fn print_summary(r: &DemoReport) {
    println!();
    println!("  datagrams sent by the pod        {}", show(&r.sent));
    println!("  datagrams received upstream      {}", show(&r.received));
    println!("  datagrams lost                   {}", show(&r.lost));
    println!("  source address the receiver saw  {}", show(&r.source));
    println!(
        "  origin counter (node-a)          {} packets towards the gateway",
        r.origin_packets
    );
    println!(
        "  gateway counter (node-b)         {} packets, {} bytes out of uplink0",
        r.gateway_packets, r.gateway_bytes
    );
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
            (Some(399), Some(3), Some(Ipv4Addr::new(203, 0, 113, 10)))
        );
        assert_eq!(parse_received("nothing"), (None, None, None));
    }
}
