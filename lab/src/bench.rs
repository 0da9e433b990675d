//! `make bench-lab`: the whole path (pod → origin node → VXLAN → gateway →
//! uplink → upstream) measured against what operators run instead, in one
//! lab and one run; and what our links cost the unicast traffic of pods.
//!
//! Multicast capacity, per payload size (1316 bytes, MPEG-TS; 64 bytes):
//!
//! - **ours**: the lab as is, a camera policy through node-b;
//! - **kernel**: our links detached; the kernel's multicast forwarding cache
//!   (`MRT_*` on a socket of our own per node) forwards the stream on node-a
//!   from `lxca1` into a plain VXLAN (`vxlan42`, VNI 42, port 4789) to node-b,
//!   and on node-b from `vxlan42` out of `uplink0`;
//! - **kernel + SNAT**: the same with an nftables `snat` rule in node-b's
//!   postrouting for the pod's source: whether the kernel rewrites the source
//!   of routed multicast shows in the sources counted upstream;
//! - **relay**: node-a's MFC into the tunnel as above; on node-b `socat`
//!   joins the group on `vxlan42` and re-sends every datagram from the egress
//!   IP out of `uplink0`, the way operators bridge today.
//!
//! The generator injects prebuilt frames (valid IPv4 and UDP checksums, TTL
//! 8) on the pod's `eth0` with `AF_PACKET` `sendmmsg` and `PACKET_QDISC_BYPASS`
//! from two threads, unpaced or paced. The upstream host counts what arrives
//! per source with an nftables `netdev` ingress rule that drops it (no
//! receiving socket to be the bottleneck). A trial lasts one second; the
//! capacity is the delivered rate of the best trial with at most 0.1 % loss,
//! searched down from the unpaced rate.
//!
//! CPU per packet: the kernel forwards a veth-to-veth chain in softirq on the
//! CPU that queued the packet, inline in the sending task (this kernel has no
//! `IRQ_TIME_ACCOUNTING`, so that time is charged to the task), or in
//! `ksoftirqd`. The bench sums the scheduler's run time of the generator's
//! threads, every `ksoftirqd` and the relay's process (when there is one),
//! divided by the packets delivered: the whole path's CPU, none of the other
//! work of the machine. The generator's own share (the send and the first
//! veth up to where the node drops a frame not for it) is measured alone
//! and subtracted in the "path" column.
//!
//! Unicast: routes for pod-a1 ↔ pod-b1 and pod-a1 ↔ upstream across
//! `cilium_vxlan` (route-level encap, VNI the pod's identity, as Cilium's
//! tunnel does), then iperf2 TCP throughput and UDP pps, and the
//! generator's CPU ns per 64-byte unicast datagram from pod-a1 to the
//! upstream host (the same accounting as above, far less noisy than iperf2
//! on a shared machine), with our links attached (daemons running) and
//! detached (daemons stopped, `uninstall` on every node), alternating which
//! goes first, several rounds.
//!
//! Everything lives in the lab's namespaces; the lab tears down on drop.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{addr, nft, run, Lab, LabConfig, LabError, Node, Pod, Result, NODES};
use cilium_mcast_egress::datapath::maps::Role;

/// Loss at or below which a rate counts as carried.
const MAX_LOSS: f64 = 0.001;
/// Repetitions of the rate found, for a median of three.
const CONFIRM: usize = 2;
/// The VXLAN of the alternatives, beside `cilium_vxlan`.
const TUNNEL: &str = "vxlan42";
const NFT_TABLE: &str = "mclbench";
const UDP_DPORT: u16 = 5001;
const SENDER_TTL: u8 = 8;
/// The generator's unicast datagrams to the upstream host.
const UNICAST_PORT: u16 = 5009;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub binary: PathBuf,
    /// One capacity trial.
    pub trial: Duration,
    /// Attached/detached rounds of the unicast part.
    pub rounds: usize,
    /// One iperf2 run.
    pub iperf_secs: u32,
    /// Generator threads.
    pub threads: usize,
    pub sizes: Vec<usize>,
    /// Where to write a `perf record -a -g` of each row's repetitions, to
    /// see where the time goes; none by default.
    pub profile: Option<PathBuf>,
}

fn err(cmd: &str, detail: impl Into<String>) -> LabError {
    LabError::Command {
        cmd: cmd.into(),
        detail: detail.into(),
    }
}

fn check_stop() -> Result<()> {
    if super::stopping() {
        return Err(LabError::Stopped);
    }
    Ok(())
}

// ---------------------------------------------------------------- frames

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame with an IPv4 UDP datagram of `payload` bytes from `src`
/// to `group`, checksums valid, as a pod's socket would send it.
pub fn frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    group: Ipv4Addr,
    dport: u16,
    payload: usize,
) -> Vec<u8> {
    let udp_len = 8 + payload;
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = SENDER_TTL;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&group.octets());
    let c = fold(sum16(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = vec![0u8; udp_len];
    udp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    for (i, b) in udp[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&group.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let c = match fold(sum16(&pseudo) + sum16(&udp)) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

/// The group's Ethernet address (RFC 1112).
fn group_mac(g: Ipv4Addr) -> [u8; 6] {
    let o = g.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

fn mac_of(ns: &str, dev: &str) -> Result<[u8; 6]> {
    let out = run("ip", &["-n", ns, "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| err("ip -j link", e.to_string()))?;
    let s = v[0]["address"]
        .as_str()
        .ok_or_else(|| err("ip -j link", format!("no address of {dev} in {out}")))?;
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(s.split(':')) {
        *m = u8::from_str_radix(p, 16).map_err(|e| err("mac", e.to_string()))?;
    }
    Ok(mac)
}

// ------------------------------------------------------------- generator

/// `threads` AF_PACKET sockets on `eth0` of a pod, and the frame they send.
struct Generator {
    socks: Vec<OwnedFd>,
    frame: Vec<u8>,
}

/// What one generator run did.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    packets: u64,
    cpu_ns: u64,
    secs: f64,
}

/// A send-only AF_PACKET socket on `ifindex` that bypasses the qdisc.
fn packet_socket(ifindex: u32) -> std::io::Result<OwnedFd> {
    let fd = super::packet_socket(ifindex, 0, false)?;
    // Straight to the device, as an application's packets would go to a
    // veth with no qdisc (a pod's eth0 has noqueue).
    let one: libc::c_int = 1;
    // SAFETY: an int option, its size passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const BATCH: usize = 32;

/// Send `frame` on `fd` for `dur`, at `rate` packets per second if given,
/// else as fast as the socket takes them.
fn send_loop(fd: i32, frame: &[u8], rate: Option<f64>, dur: Duration) -> Sent {
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        })
        .collect();
    // SAFETY: a zeroed mmsghdr is valid (no name, no control).
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    let end = start + dur;
    let mut sent = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if let Some(r) = rate {
            // Where the schedule says we should be; behind it, send at once.
            let due = start + Duration::from_secs_f64(sent as f64 / r);
            if due > now {
                std::thread::sleep(due - now);
                continue;
            }
        }
        // SAFETY: msgs points at iovecs and a frame that outlive the call.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
        }
    }
    Sent {
        packets: sent,
        cpu_ns: thread_cpu_ns() - cpu0,
        secs: start.elapsed().as_secs_f64(),
    }
}

impl Generator {
    fn new(pod_ns: &str, frame: Vec<u8>, threads: usize) -> Result<Generator> {
        let ifindex = super::ifindex_in(pod_ns, "eth0")?;
        let socks = super::in_netns(pod_ns, move || {
            (0..threads)
                .map(|_| packet_socket(ifindex))
                .collect::<std::io::Result<Vec<_>>>()
        })?
        .map_err(super::io("AF_PACKET socket"))?;
        Ok(Generator { socks, frame })
    }

    fn run(&self, rate: Option<f64>, dur: Duration) -> Sent {
        let per = rate.map(|r| r / self.socks.len() as f64);
        std::thread::scope(|s| {
            let hs: Vec<_> = self
                .socks
                .iter()
                .map(|fd| {
                    let fd = fd.as_raw_fd();
                    let frame = &self.frame;
                    s.spawn(move || send_loop(fd, frame, per, dur))
                })
                .collect();
            hs.into_iter()
                .filter_map(|h| h.join().ok())
                .fold(Sent::default(), |a, b| Sent {
                    packets: a.packets + b.packets,
                    cpu_ns: a.cpu_ns + b.cpu_ns,
                    secs: a.secs.max(b.secs),
                })
        })
    }
}

// ------------------------------------------------------------ CPU time

/// Run time (ns) of every task of `pid`, from the scheduler.
fn process_cpu_ns(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The `ksoftirqd` threads: the path's softirq work lands there when it is
/// deferred.
fn ksoftirqd_pids() -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .collect()
}

// -------------------------------------------------------------- upstream

/// The upstream host's counters: arrivals from the egress IP, from the pod's
/// own address, from anything else; all dropped at ingress.
fn install_upstream_counters(lab: &Lab) -> Result<()> {
    let g = addr::GROUP;
    let rules = format!(
        "table netdev {NFT_TABLE} {{
  chain in {{
    type filter hook ingress device \"eth0\" priority 0;
    ip daddr {g} ip saddr {egress} counter drop
    ip daddr {g} ip saddr {pod} counter drop
    ip daddr {g} counter drop
    ip daddr {up} udp dport {UNICAST_PORT} counter drop
  }}
}}
",
        egress = addr::EGRESS_B,
        pod = Pod::A1.ip(),
        up = addr::UPSTREAM_B,
    );
    nft(&lab.upstream_ns(), &rules)
}

/// Packets counted upstream: [from the egress IP, from the pod, other] to
/// the group, and the generator's unicast datagrams.
fn upstream_counts(lab: &Lab) -> Result<[u64; 4]> {
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.upstream_ns(),
            "nft",
            "-j",
            "list",
            "chain",
            "netdev",
            NFT_TABLE,
            "in",
        ],
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| err("nft -j", e.to_string()))?;
    let mut counts = [0u64; 4];
    let rules = v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule"));
    for (slot, rule) in counts.iter_mut().zip(rules) {
        *slot = rule["expr"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|e| e.get("counter")?.get("packets")?.as_u64())
            .unwrap_or(0);
    }
    Ok(counts)
}

// ------------------------------------------------- kernel multicast routing

const MRT_INIT: libc::c_int = 200;
const MRT_ADD_VIF: libc::c_int = 202;
const MRT_ADD_MFC: libc::c_int = 204;
const VIFF_USE_IFINDEX: u8 = 0x8;
const MAXVIFS: usize = 32;

/// `struct vifctl` of <linux/mroute.h>, with the ifindex in the union.
#[repr(C)]
struct VifCtl {
    vifi: u16,
    flags: u8,
    threshold: u8,
    rate_limit: u32,
    lcl_ifindex: i32,
    rmt_addr: u32,
}

/// `struct mfcctl` of <linux/mroute.h>.
#[repr(C)]
struct MfcCtl {
    origin: u32,
    group: u32,
    parent: u16,
    ttls: [u8; MAXVIFS],
    pkt_cnt: u32,
    byte_cnt: u32,
    wrong_if: u32,
    expire: i32,
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, val: &T, what: &str) -> Result<()> {
    // SAFETY: val is a live, repr(C) value of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            opt,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if r != 0 {
        return Err(LabError::Io {
            what: what.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The kernel's multicast routing in one node namespace: the mroute socket
/// (closing it removes the VIFs and MFC entries), VIF 0 the input device,
/// VIF 1 the output device, one (S,G) entry from 0 to 1.
struct Mrt {
    _sock: OwnedFd,
}

impl Mrt {
    fn new(ns: &str, iif: &str, oif: &str, source: Ipv4Addr, group: Ipv4Addr) -> Result<Mrt> {
        let idx = [super::ifindex_in(ns, iif)?, super::ifindex_in(ns, oif)?];
        let sock = super::in_netns(ns, || {
            // SAFETY: plain socket(2); owned at once.
            let fd = unsafe {
                libc::socket(
                    libc::AF_INET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::IPPROTO_IGMP,
                )
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fresh descriptor.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })?
        .map_err(super::io("mroute socket"))?;
        setsockopt(&sock, MRT_INIT, &1i32, "MRT_INIT")?;
        for (i, ifindex) in idx.iter().enumerate() {
            let vif = VifCtl {
                vifi: i as u16,
                flags: VIFF_USE_IFINDEX,
                threshold: 1,
                rate_limit: 0,
                lcl_ifindex: *ifindex as i32,
                rmt_addr: 0,
            };
            setsockopt(&sock, MRT_ADD_VIF, &vif, "MRT_ADD_VIF")?;
        }
        let mut ttls = [0u8; MAXVIFS];
        ttls[1] = 1;
        let mfc = MfcCtl {
            origin: u32::from_ne_bytes(source.octets()),
            group: u32::from_ne_bytes(group.octets()),
            parent: 0,
            ttls,
            pkt_cnt: 0,
            byte_cnt: 0,
            wrong_if: 0,
            expire: 0,
        };
        setsockopt(&sock, MRT_ADD_MFC, &mfc, "MRT_ADD_MFC")?;
        Ok(Mrt { _sock: sock })
    }
}

/// Packets the MFC of `ns` forwarded for its one entry.
fn mfc_packets(ns: &str) -> u64 {
    run("ip", &["netns", "exec", ns, "cat", "/proc/net/ip_mr_cache"])
        .ok()
        .and_then(|s| s.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------- the bench

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Ours,
    Kernel,
    KernelSnat,
    Relay,
}

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Contender::Ours => "ours (tcx, VXLAN)",
            Contender::Kernel => "kernel MFC",
            Contender::KernelSnat => "kernel MFC + nft SNAT",
            Contender::Relay => "relay (socat)",
        }
    }
}

/// One trial's outcome.
#[derive(Debug, Clone, Copy, Default)]
struct Trial {
    target: Option<f64>,
    offered: u64,
    delivered: u64,
    by_source: [u64; 3],
    secs: f64,
    cpu_ns: u64,
    /// The relay process's share of `cpu_ns`.
    relay_ns: u64,
}

impl Trial {
    fn loss(&self) -> f64 {
        if self.offered == 0 {
            return 1.0;
        }
        1.0 - self.delivered as f64 / self.offered as f64
    }
    fn offered_pps(&self) -> f64 {
        self.offered as f64 / self.secs
    }
    fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.secs
    }
    fn ns_per_packet(&self) -> f64 {
        self.cpu_ns as f64 / self.delivered.max(1) as f64
    }
}

/// One row of the table.
#[derive(Debug, Clone)]
struct Row {
    size: usize,
    path: Contender,
    unpaced: Trial,
    best: Option<Trial>,
    trials: usize,
    /// The best rate's trial and its repetitions; those within the loss
    /// bound; their median delivered pps and CPU ns per packet.
    runs: usize,
    passing: usize,
    pps: f64,
    ns: f64,
    /// Per-stage counts of the best trial: our counters, or the MFCs'.
    stages: String,
}

struct Bench {
    cfg: BenchConfig,
    lab: Lab,
    ksoftirqd: Vec<i32>,
    attached: bool,
    log: String,
}

/// Print and keep.
macro_rules! say {
    ($b:expr, $($t:tt)*) => {{
        let line = format!($($t)*);
        println!("{line}");
        $b.log.push_str(&line);
        $b.log.push('\n');
    }};
}

impl Bench {
    fn trial(&self, gen: &Generator, rate: Option<f64>, relay: Option<i32>) -> Result<Trial> {
        check_stop()?;
        let before = upstream_counts(&self.lab)?;
        let k0 = ksoftirqd_ns(&self.ksoftirqd);
        let r0 = relay.map_or(0, process_cpu_ns);
        let sent = gen.run(rate, self.cfg.trial);
        // What is still in flight lands (or is dropped) within a few ms.
        std::thread::sleep(Duration::from_millis(100));
        let k1 = ksoftirqd_ns(&self.ksoftirqd);
        let r1 = relay.map_or(0, process_cpu_ns);
        let after = upstream_counts(&self.lab)?;
        let by_source = [0, 1, 2].map(|i| after[i] - before[i]);
        let delivered = by_source.iter().sum();
        Ok(Trial {
            target: rate,
            offered: sent.packets,
            delivered,
            by_source,
            secs: sent.secs,
            cpu_ns: sent.cpu_ns + (k1 - k0) + (r1 - r0),
            relay_ns: r1 - r0,
        })
    }

    /// The highest delivered rate with at most 0.1 % loss: the unpaced rate
    /// if it qualifies, else a search downwards, then between the best rate
    /// carried and the lowest one not carried.
    fn capacity(
        &self,
        gen: &Generator,
        relay: Option<i32>,
    ) -> Result<(Trial, Option<Trial>, usize)> {
        let unpaced = self.trial(gen, None, relay)?;
        let mut trials = 1;
        if unpaced.loss() <= MAX_LOSS && unpaced.delivered > 0 {
            return Ok((unpaced, Some(unpaced), trials));
        }
        let mut best: Option<Trial> = None;
        let mut hi = unpaced.offered_pps();
        let mut lo = 0.0f64;
        let mut rate = unpaced.delivered_pps() * 0.97;
        while trials < 8 && rate > 100.0 {
            let t = self.trial(gen, Some(rate), relay)?;
            trials += 1;
            if t.loss() <= MAX_LOSS && t.delivered > 0 {
                lo = rate;
                if best.is_none_or(|b| t.delivered_pps() > b.delivered_pps()) {
                    best = Some(t);
                }
            } else {
                hi = rate;
            }
            if lo == 0.0 {
                rate *= 0.7;
            } else if hi / lo < 1.05 {
                break;
            } else {
                rate = (lo + hi) / 2.0;
            }
        }
        Ok((unpaced, best, trials))
    }

    fn generator(&self, pod: Pod, dst_mac: Option<[u8; 6]>, size: usize) -> Result<Generator> {
        let ns = self.lab.pod_ns(pod);
        let mac = mac_of(&ns, "eth0")?;
        let f = frame(
            mac,
            dst_mac.unwrap_or_else(|| group_mac(addr::GROUP)),
            pod.ip(),
            addr::GROUP,
            UDP_DPORT,
            size,
        );
        Generator::new(&ns, f, self.cfg.threads)
    }

    /// Our links off every node: daemons stopped, `uninstall`.
    fn detach(&mut self) -> Result<()> {
        for node in NODES {
            self.lab.stop_daemon(node)?;
            let bpffs = self.lab.bpffs(node);
            let bin = self.cfg.binary.display().to_string();
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.lab.node_ns(node),
                    &bin,
                    "uninstall",
                    "--bpffs-root",
                    &bpffs.display().to_string(),
                ],
            )?;
        }
        if self.links_on(Node::A, Pod::A1.lxc())? || self.links_on(Node::B, "cilium_vxlan")? {
            return Err(err("uninstall", "our programs are still attached"));
        }
        self.attached = false;
        Ok(())
    }

    /// Daemons started again: they attach and fill the maps.
    fn attach(&mut self) -> Result<()> {
        for node in NODES {
            self.lab.start_daemon(node)?;
        }
        for node in NODES {
            self.lab.wait_ready(node, Duration::from_secs(30))?;
        }
        self.wait_links()?;
        self.attached = true;
        Ok(())
    }

    /// Until the daemons have attached on node-a's pod and node-b's tunnel.
    fn wait_links(&self) -> Result<()> {
        let linked = super::wait_until(
            "our links on lxca1 and node-b's cilium_vxlan",
            Duration::from_secs(10),
            || {
                self.links_on(Node::A, Pod::A1.lxc()).unwrap_or(false)
                    && self.links_on(Node::B, "cilium_vxlan").unwrap_or(false)
            },
        );
        if let Err(e) = linked {
            return Err(err(
                "attach",
                format!("{e}; node-a's log:\n{}", self.lab.log(Node::A)),
            ));
        }
        Ok(())
    }

    /// Whether `dev` of `node` has a program in its tcx ingress chain (in
    /// the lab only ours attach there).
    fn links_on(&self, node: Node, dev: &str) -> Result<bool> {
        let ns = self.lab.node_ns(node);
        let ifindex = super::ifindex_in(&ns, dev)?;
        super::in_netns(&ns, move || {
            cilium_mcast_egress::datapath::tcx::tcx_ingress_chain(ifindex)
        })?
        .map(|chain| !chain.is_empty())
        .map_err(|e| err("tcx query", e.to_string()))
    }

    /// Our counters: origin packets on node-a, gateway packets on node-b.
    fn our_counters(&self) -> Result<(u64, u64)> {
        let sum = |node: Node, role: Role| -> Result<u64> {
            let maps = self.lab.maps(node)?;
            let c = maps.counters().map_err(|source| LabError::Map {
                node: node.name(),
                source,
            })?;
            Ok(c.iter()
                .filter(|c| c.group == addr::GROUP && c.role == role)
                .map(|c| c.packets)
                .sum())
        };
        Ok((sum(Node::A, Role::Origin)?, sum(Node::B, Role::Gateway)?))
    }

    fn row(&self, path: Contender, size: usize, relay: Option<i32>) -> Result<Row> {
        let gen = self.generator(Pod::A1, None, size)?;
        let a = self.lab.node_ns(Node::A);
        let b = self.lab.node_ns(Node::B);
        let c0 = match path {
            Contender::Ours => self.our_counters()?,
            _ => (mfc_packets(&a), mfc_packets(&b)),
        };
        let (unpaced, best, mut trials) = self.capacity(&gen, relay)?;
        // The rate found, twice more: the row is the median of the three.
        let mut runs: Vec<Trial> = best.into_iter().collect();
        if let Some(b) = best {
            // Stopped (and its file finished) when dropped, also on an error.
            let _perf = self.start_perf(path, size)?;
            for _ in 0..CONFIRM {
                runs.push(self.trial(&gen, b.target, relay)?);
                trials += 1;
            }
        }
        let passing: Vec<Trial> = runs
            .iter()
            .copied()
            .filter(|t| t.loss() <= MAX_LOSS && t.delivered > 0)
            .collect();
        let pps = stats(&passing.iter().map(Trial::delivered_pps).collect::<Vec<_>>()).0;
        let ns = stats(&passing.iter().map(Trial::ns_per_packet).collect::<Vec<_>>()).0;
        let c1 = match path {
            Contender::Ours => self.our_counters()?,
            _ => (mfc_packets(&a), mfc_packets(&b)),
        };
        let stages = match path {
            Contender::Ours => format!(
                "origin counter node-a +{}, gateway counter node-b +{}",
                c1.0 - c0.0,
                c1.1 - c0.1
            ),
            Contender::Relay => format!(
                "MFC node-a +{}; socat's own share {:.0} ns/pkt",
                c1.0 - c0.0,
                stats(
                    &passing
                        .iter()
                        .map(|t| t.relay_ns as f64 / t.delivered.max(1) as f64)
                        .collect::<Vec<_>>()
                )
                .0
            ),
            _ => format!("MFC node-a +{}, MFC node-b +{}", c1.0 - c0.0, c1.1 - c0.1),
        };
        Ok(Row {
            size,
            path,
            unpaced,
            best,
            trials,
            runs: runs.len(),
            passing: passing.len(),
            pps,
            ns,
            stages,
        })
    }

    /// CPU ns per unicast datagram of the generator, unpaced, delivered to
    /// the upstream host through both nodes and `cilium_vxlan`.
    fn unicast_ns(&self, gen: &Generator) -> Result<f64> {
        check_stop()?;
        let before = upstream_counts(&self.lab)?[3];
        let k0 = ksoftirqd_ns(&self.ksoftirqd);
        let sent = gen.run(None, self.cfg.trial);
        // In flight lands within a few ms (as for the multicast trials).
        std::thread::sleep(Duration::from_millis(100));
        let k1 = ksoftirqd_ns(&self.ksoftirqd);
        let delivered = upstream_counts(&self.lab)?[3] - before;
        if delivered == 0 {
            return Err(err("unicast generator", "nothing arrived upstream"));
        }
        Ok((sent.cpu_ns + (k1 - k0)) as f64 / delivered as f64)
    }

    /// `perf record -a -g` (software clock: no PMU in a VM) while the rate
    /// found is repeated, when asked for.
    fn start_perf(&self, path: Contender, size: usize) -> Result<Option<Perf>> {
        let Some(dir) = &self.cfg.profile else {
            return Ok(None);
        };
        std::fs::create_dir_all(dir).map_err(super::io("creating the profile directory"))?;
        let name = format!("{path:?}-{size}.data").to_lowercase();
        let out = dir.join(name);
        let child = super::command("perf")
            .args(["record", "-a", "-g", "-e", "cpu-clock", "-F", "2000", "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(super::io("starting perf"))?;
        let perf = Perf(child);
        // perf has opened its events once it has written the file's header.
        super::wait_until("perf record to start", Duration::from_secs(10), || {
            std::fs::metadata(&out).is_ok_and(|m| m.len() > 0)
        })?;
        Ok(Some(perf))
    }

    fn print_row(&mut self, r: &Row) {
        let b = r.best;
        say!(
            self,
            "  {:>5} B  {:<22} unpaced: offered {:>8.0} pps, delivered {:>8.0} pps ({:.2} % loss); best <=0.1 %: {} [{} trials; {}]",
            r.size,
            r.path.label(),
            r.unpaced.offered_pps(),
            r.unpaced.delivered_pps(),
            r.unpaced.loss() * 100.0,
            b.map_or("none".to_string(), |b| format!(
                "{} at {}: median {:.0} pps, {:.0} ns/pkt",
                r.passing,
                b.target
                    .map_or("unpaced".to_string(), |t| format!("{t:.0} pps paced")),
                r.pps,
                r.ns
            )),
            r.trials,
            r.stages
        );
    }
}

/// A `perf record` running in the host's namespaces (the lab's teardown
/// does not reach it): SIGINT, which makes it finish its file, on drop.
struct Perf(Child);

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.0.wait();
    }
}

/// Sysctls and routes the capacity and unicast parts need, all inside the
/// lab's namespaces: reverse-path filtering off (the tunnels carry pods'
/// sources), forwarding, proxy ARP on the pods' veths, a plain VXLAN between
/// node-a and node-b for the alternatives, and unicast routes over
/// `cilium_vxlan`.
fn prepare(lab: &Lab) -> Result<()> {
    let a = lab.node_ns(Node::A);
    let b = lab.node_ns(Node::B);
    let sh = |ns: &str, script: &str| run("ip", &["netns", "exec", ns, "sh", "-c", script]);
    for (ns, local, remote) in [
        (&a, Node::A.ip(), Node::B.ip()),
        (&b, Node::B.ip(), Node::A.ip()),
    ] {
        run(
            "ip",
            &[
                "-n",
                ns,
                "link",
                "add",
                TUNNEL,
                "type",
                "vxlan",
                "id",
                "42",
                "local",
                &local.to_string(),
                "remote",
                &remote.to_string(),
                "dstport",
                "4789",
                "dev",
                "eth0",
            ],
        )?;
        run("ip", &["-n", ns, "link", "set", TUNNEL, "up"])?;
        sh(
            ns,
            "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done; \
             echo 1 > /proc/sys/net/ipv4/ip_forward",
        )?;
    }
    sh(&a, "echo 1 > /proc/sys/net/ipv4/conf/lxca1/proxy_arp")?;
    sh(&b, "echo 1 > /proc/sys/net/ipv4/conf/lxcb1/proxy_arp")?;

    // Unicast across cilium_vxlan: route-level encap with the pod's identity
    // as VNI, as Cilium tunnels; the peer's tunnel MAC as a permanent
    // neighbour (a collect-md device cannot ARP).
    let mac_a = mac_of(&a, "cilium_vxlan")?;
    let mac_b = mac_of(&b, "cilium_vxlan")?;
    let hex = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let vni = super::IDENTITY_CAMERA.to_string();
    for (ns, peer, peer_mac, own_pod, routes) in [
        (
            &a,
            Node::B.ip(),
            hex(mac_b),
            Pod::A1,
            vec![
                Pod::B1.ip().to_string() + "/32",
                "203.0.113.0/25".to_string(),
            ],
        ),
        (
            &b,
            Node::A.ip(),
            hex(mac_a),
            Pod::B1,
            vec![Pod::A1.ip().to_string() + "/32"],
        ),
    ] {
        let peer = peer.to_string();
        run(
            "ip",
            &[
                "-n",
                ns,
                "neigh",
                "replace",
                &peer,
                "lladdr",
                &peer_mac,
                "dev",
                "cilium_vxlan",
                "nud",
                "permanent",
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                ns,
                "route",
                "add",
                &format!("{}/32", own_pod.ip()),
                "dev",
                own_pod.lxc(),
            ],
        )?;
        for dst in routes {
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "route",
                    "add",
                    &dst,
                    "encap",
                    "ip",
                    "id",
                    &vni,
                    "dst",
                    &peer,
                    "via",
                    &peer,
                    "dev",
                    "cilium_vxlan",
                    "onlink",
                ],
            )?;
        }
    }
    run(
        "ip",
        &[
            "-n",
            &lab.upstream_ns(),
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            &addr::EGRESS_B.to_string(),
            "dev",
            "eth0",
        ],
    )?;
    install_upstream_counters(lab)
}

fn snat_rules(add: bool) -> String {
    if add {
        format!(
            "table ip {NFT_TABLE} {{
  chain post {{
    type nat hook postrouting priority srcnat;
    oifname \"uplink0\" ip saddr 198.51.100.0/24 ip daddr 232.0.0.0/8 snat to {}
  }}
}}
",
            addr::EGRESS_B
        )
    } else {
        format!("delete table ip {NFT_TABLE}\n")
    }
}

fn start_relay(lab: &Lab) -> Result<Child> {
    let g = addr::GROUP;
    let e = addr::EGRESS_B;
    let child = super::command("ip")
        .args([
            "netns",
            "exec",
            &lab.node_ns(Node::B),
            "socat",
            "-u",
            "-b",
            "65536",
            &format!("UDP4-RECV:{UDP_DPORT},ip-add-membership={g}:{TUNNEL},so-rcvbuf=4194304"),
            &format!(
                "UDP4-SENDTO:{g}:{UDP_DPORT},bind={e},ip-multicast-if={e},ip-multicast-ttl={},ip-multicast-loop=0",
                SENDER_TTL - 2
            ),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(super::io("starting socat"))?;
    // Ready once it has joined the group on the tunnel.
    let ns = lab.node_ns(Node::B);
    super::wait_until("socat to join the group", Duration::from_secs(5), || {
        run("ip", &["-n", &ns, "maddr", "show", "dev", TUNNEL])
            .is_ok_and(|s| s.contains(&g.to_string()))
    })?;
    Ok(child)
}

// --------------------------------------------------------------- unicast

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uni {
    PodTcp,
    PodUdp,
    UpTcp,
    UpUdp,
    /// The AF_PACKET generator's 64-byte unicast datagrams to the upstream
    /// host, unpaced: CPU ns per packet, as for multicast.
    UpGen,
}

const UNIS: [Uni; 4] = [Uni::PodTcp, Uni::PodUdp, Uni::UpTcp, Uni::UpUdp];
/// The iperf2 tests and the generator's CPU per unicast packet.
const UNI_ROWS: [Uni; 5] = [Uni::PodTcp, Uni::PodUdp, Uni::UpTcp, Uni::UpUdp, Uni::UpGen];

impl Uni {
    fn label(self) -> &'static str {
        match self {
            Uni::PodTcp => "pod-a1 -> pod-b1 TCP (Mbit/s)",
            Uni::PodUdp => "pod-a1 -> pod-b1 UDP 64 B (pps)",
            Uni::UpTcp => "pod-a1 -> upstream TCP (Mbit/s)",
            Uni::UpUdp => "pod-a1 -> upstream UDP 64 B (pps)",
            Uni::UpGen => "pod-a1 -> upstream UDP 64 B, generator (CPU ns/pkt)",
        }
    }
    fn udp(self) -> bool {
        matches!(self, Uni::PodUdp | Uni::UpUdp)
    }
    fn server(self) -> Ipv4Addr {
        match self {
            Uni::PodTcp | Uni::PodUdp => Pod::B1.ip(),
            Uni::UpTcp | Uni::UpUdp | Uni::UpGen => addr::UPSTREAM_B,
        }
    }
}

const TCP_PORT: &str = "5301";
const UDP_PORT: &str = "5302";

/// Parse iperf2's `-y C` output: TCP Mbit/s; UDP delivered pps from a
/// server report (the line with jitter, lost and total; a client's own line
/// has total -1).
fn parse_iperf_csv(out: &str, udp: bool) -> Option<f64> {
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.trim().split(',').collect::<Vec<_>>())
        .filter(|f| f.len() >= 9)
        .collect();
    if udp {
        let f = lines
            .iter()
            .rev()
            .find(|f| f.len() >= 14 && f[11].parse::<i64>().is_ok_and(|t| t > 0))?;
        let (a, b) = f[6].split_once('-')?;
        let secs = b.parse::<f64>().ok()? - a.parse::<f64>().ok()?;
        let lost: f64 = f[10].parse().ok()?;
        let total: f64 = f[11].parse().ok()?;
        (secs > 0.0).then(|| (total - lost) / secs)
    } else {
        let bps: f64 = lines.last()?[8].parse().ok()?;
        Some(bps / 1e6)
    }
}

/// The UDP server's report file of a test's destination.
fn udp_report(lab: &Lab, u: Uni) -> PathBuf {
    let who = match u {
        Uni::PodTcp | Uni::PodUdp => "pod-b1",
        Uni::UpTcp | Uni::UpUdp | Uni::UpGen => "upstream",
    };
    lab.dir().join(format!("iperf-udp-{who}.csv"))
}

fn iperf_client(lab: &Lab, u: Uni, secs: u32) -> Result<f64> {
    check_stop()?;
    let server = u.server().to_string();
    let secs = secs.to_string();
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        lab.pod_ns(Pod::A1),
        "iperf".into(),
        "-c".into(),
        server,
        "-t".into(),
        secs,
        "-y".into(),
        "C".into(),
    ];
    if u.udp() {
        args.extend(["-u", "-l", "64", "-b", "10000000pps", "-p", UDP_PORT].map(String::from));
    } else {
        args.extend(["-p", TCP_PORT].map(String::from));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = udp_report(lab, u);
    let lines_before = std::fs::read_to_string(&report)
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let out = run("ip", &args)?;
    if !u.udp() {
        return parse_iperf_csv(&out, false)
            .ok_or_else(|| err("iperf", format!("no result in {out:?}")));
    }
    // What the server received: its report for this client, once written
    // (the client's copy of it may be lost under load).
    let mut got = None;
    let _ = super::wait_until(
        "the iperf UDP server's report",
        Duration::from_secs(5),
        || {
            let text = std::fs::read_to_string(&report).unwrap_or_default();
            let new: String = text
                .lines()
                .skip(lines_before)
                .collect::<Vec<_>>()
                .join("\n");
            got = parse_iperf_csv(&new, true);
            got.is_some()
        },
    );
    got.ok_or_else(|| err("iperf", format!("no server report; client said {out:?}")))
}

fn start_iperf_servers(lab: &Lab) -> Result<Vec<Child>> {
    let mut v = Vec::new();
    for (ns, u) in [
        (lab.pod_ns(Pod::B1), Uni::PodUdp),
        (lab.upstream_ns(), Uni::UpUdp),
    ] {
        v.push(
            super::command("ip")
                .args(["netns", "exec", &ns, "iperf", "-s", "-p", TCP_PORT])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(super::io("starting iperf -s"))?,
        );
        let report = std::fs::File::create(udp_report(lab, u))
            .map_err(super::io("creating the UDP report file"))?;
        v.push(
            super::command("ip")
                .args([
                    "netns", "exec", &ns, "iperf", "-s", "-u", "-y", "C", "-p", UDP_PORT,
                ])
                .stdin(Stdio::null())
                .stdout(report)
                .stderr(Stdio::null())
                .spawn()
                .map_err(super::io("starting iperf -s -u"))?,
        );
    }
    // Listening once the ports show in each namespace.
    for (ns, port, udp) in [
        (lab.pod_ns(Pod::B1), TCP_PORT, false),
        (lab.pod_ns(Pod::B1), UDP_PORT, true),
        (lab.upstream_ns(), TCP_PORT, false),
        (lab.upstream_ns(), UDP_PORT, true),
    ] {
        let flag = if udp { "-uln" } else { "-tln" };
        super::wait_until("iperf servers", Duration::from_secs(5), || {
            run("ip", &["netns", "exec", &ns, "ss", flag])
                .is_ok_and(|s| s.contains(&format!(":{port} ")))
        })?;
    }
    Ok(v)
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (
        med,
        s.first().copied().unwrap_or(0.0),
        s.last().copied().unwrap_or(0.0),
    )
}

fn uptime() -> String {
    run("uptime", &[]).unwrap_or_default().trim().to_owned()
}

/// Run the whole bench on a fresh lab; the lab is torn down after, also on
/// an error.
pub fn run_bench(cfg: BenchConfig) -> Result<String> {
    let load_before = uptime();
    println!("== load before: {load_before}");
    let mut lc = LabConfig::new(&cfg.binary);
    lc.manifests.push((
        "bench-policy.yaml".into(),
        super::camera_policy("bench-cameras", &["232.1.0.0/16"], &[], Node::B),
    ));
    // The product's default: the daemons cost what they cost in a cluster.
    lc.resync = Duration::from_millis(1000);
    lc.log_level = "warn".into();
    println!("== lab up: 3 nodes, camera policy 232.1.0.0/16 via node-b");
    let lab = Lab::up(lc)?;
    prepare(&lab)?;
    let mut b = Bench {
        cfg: cfg.clone(),
        lab,
        ksoftirqd: ksoftirqd_pids(),
        attached: true,
        log: String::new(),
    };
    say!(b, "bench-lab: load before: {load_before}");
    // Lab::up waited for the daemons; their links follow the first sync.
    b.wait_links()?;

    // ---- capacity
    let mut rows: Vec<Row> = Vec::new();
    say!(
        b,
        "== capacity: {:.1} s trials, {} generator threads (AF_PACKET sendmmsg, qdisc bypass)",
        cfg.trial.as_secs_f64(),
        cfg.threads
    );
    for &size in &cfg.sizes {
        let r = b.row(Contender::Ours, size, None)?;
        b.print_row(&r);
        rows.push(r);
    }
    b.detach()?;
    // The generator alone: the same frames from pod-a2 to a MAC no one has,
    // dropped by node-a as soon as its stack sees them.
    let mut calib = Vec::new();
    for &size in &cfg.sizes {
        let gen = b.generator(Pod::A2, Some([0x02, 0, 0, 0, 0, 0x01]), size)?;
        let k0 = ksoftirqd_ns(&b.ksoftirqd);
        let s = gen.run(None, cfg.trial);
        let k1 = ksoftirqd_ns(&b.ksoftirqd);
        let ns = (s.cpu_ns + (k1 - k0)) as f64 / s.packets.max(1) as f64;
        say!(
            b,
            "  {:>5} B  generator alone        {:>8.0} pps offered into pod-a2's veth, {:.0} ns/pkt (send + veth + drop)",
            size,
            s.packets as f64 / s.secs,
            ns
        );
        calib.push((size, s.packets as f64 / s.secs, ns));
    }
    let a_ns = b.lab.node_ns(Node::A);
    let b_ns = b.lab.node_ns(Node::B);
    let g = addr::GROUP;
    let src = Pod::A1.ip();
    {
        let _mrt_a = Mrt::new(&a_ns, Pod::A1.lxc(), TUNNEL, src, g)?;
        {
            let _mrt_b = Mrt::new(&b_ns, TUNNEL, "uplink0", src, g)?;
            for &size in &cfg.sizes {
                let r = b.row(Contender::Kernel, size, None)?;
                b.print_row(&r);
                rows.push(r);
            }
            nft(&b_ns, &snat_rules(true))?;
            for &size in &cfg.sizes {
                let r = b.row(Contender::KernelSnat, size, None)?;
                b.print_row(&r);
                rows.push(r);
            }
            let ct = run(
                "ip",
                &["netns", "exec", &b_ns, "cat", "/proc/net/nf_conntrack"],
            )
            .unwrap_or_else(|e| format!("({e})"));
            let ct_line = ct
                .lines()
                .find(|l| l.contains(&g.to_string()))
                .unwrap_or("no conntrack entry for the group")
                .to_owned();
            say!(b, "  node-b conntrack for the stream: {}", ct_line.trim());
            nft(&b_ns, &snat_rules(false))?;
        }
        let mut relay = start_relay(&b.lab)?;
        let pid = relay.id() as i32;
        for &size in &cfg.sizes {
            let r = b.row(Contender::Relay, size, Some(pid));
            match r {
                Ok(r) => {
                    b.print_row(&r);
                    rows.push(r);
                }
                Err(e) => {
                    let _ = relay.kill();
                    return Err(e);
                }
            }
        }
        let _ = relay.kill();
        let _ = relay.wait();
    }
    b.capacity_table(&rows, &calib);

    // ---- unicast
    let servers = start_iperf_servers(&b.lab)?;
    say!(
        b,
        "== unicast: iperf2 {} s per run, {} rounds of attached/detached (order alternating)",
        cfg.iperf_secs,
        cfg.rounds
    );
    let mut results: Vec<(Uni, bool, f64)> = Vec::new();
    let ugen = {
        let ns = b.lab.pod_ns(Pod::A1);
        let f = frame(
            mac_of(&ns, "eth0")?,
            mac_of(&b.lab.node_ns(Node::A), Pod::A1.lxc())?,
            Pod::A1.ip(),
            addr::UPSTREAM_B,
            UNICAST_PORT,
            64,
        );
        Generator::new(&ns, f, cfg.threads)?
    };
    let res = (|| -> Result<()> {
        for round in 0..cfg.rounds {
            // detached now after the capacity part; alternate which goes first.
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for want in order {
                if want != b.attached {
                    if want {
                        b.attach()?;
                    } else {
                        b.detach()?;
                    }
                }
                for u in UNIS {
                    let v = iperf_client(&b.lab, u, cfg.iperf_secs)?;
                    results.push((u, want, v));
                }
                results.push((Uni::UpGen, want, b.unicast_ns(&ugen)?));
            }
            println!("   round {} of {} done", round + 1, cfg.rounds);
        }
        Ok(())
    })();
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    res?;
    b.unicast_table(&results);
    let load_after = uptime();
    say!(b, "bench-lab: load after: {load_after}");
    Ok(std::mem::take(&mut b.log))
}

fn ksoftirqd_ns(pids: &[i32]) -> u64 {
    pids.iter().map(|p| process_cpu_ns(*p)).sum()
}

impl Bench {
    fn capacity_table(&mut self, rows: &[Row], calib: &[(usize, f64, f64)]) {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "\n== capacity (<= 0.1 % loss) and CPU per packet; ratios are ours / that path\n"
        );
        let _ = writeln!(
            t,
            "| payload | path | offered max pps | pps at <= 0.1 % loss | CPU ns/pkt | path ns/pkt | source upstream | ours/x pps | ours/x pps per CPU |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
        for r in rows {
            let gen_ns = calib.iter().find(|c| c.0 == r.size).map_or(0.0, |c| c.2);
            let ours = rows
                .iter()
                .find(|o| o.size == r.size && o.path == Contender::Ours)
                .filter(|o| o.passing > 0);
            let (pps, ns, path_ns, src) = match r.best.filter(|_| r.passing > 0) {
                Some(b) => (
                    format!("{:.0} ({} of {})", r.pps, r.passing, r.runs),
                    format!("{:.0}", r.ns),
                    format!("{:.0}", r.ns - gen_ns),
                    source_label(b.by_source),
                ),
                None => (
                    "none".into(),
                    "-".into(),
                    "-".into(),
                    source_label(r.unpaced.by_source),
                ),
            };
            let (rp, rc) = match ours {
                Some(o) if r.path != Contender::Ours && r.passing > 0 => (
                    format!("{:.2}x", o.pps / r.pps),
                    format!(
                        "{:.2}x ({:.2}x path)",
                        r.ns / o.ns,
                        (r.ns - gen_ns) / (o.ns - gen_ns)
                    ),
                ),
                _ => ("-".into(), "-".into()),
            };
            let _ = writeln!(
                t,
                "| {} B | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                r.size,
                r.path.label(),
                r.unpaced.offered_pps(),
                pps,
                ns,
                path_ns,
                src,
                rp,
                rc
            );
        }
        for c in calib {
            let _ = writeln!(
                t,
                "| {} B | generator alone (pod-a2, dropped at node-a) | {:.0} | - | {:.0} | - | - | - | - |",
                c.0, c.1, c.2
            );
        }
        let _ = writeln!(
            t,
            "\npps: median of the rate found and {CONFIRM} repetitions (N of M within 0.1 % loss). \
             CPU ns/pkt: scheduler run time of the generator threads, every ksoftirqd\n\
             (and socat for the relay) over the packets delivered: the forwarding runs in softirq inline in the sender or in ksoftirqd.\n\
             path ns/pkt: the same minus the generator alone (its send and the first veth). pps per CPU ratio = x ns / ours ns.\n\
             Where the unpaced rate is carried, the path and the generator share the two CPUs; the generator alone offers several times that."
        );
        print!("{t}");
        self.log.push_str(&t);
    }

    fn unicast_table(&mut self, results: &[(Uni, bool, f64)]) {
        let mut t = String::new();
        let _ = writeln!(t, "\n== unicast with our links attached and detached\n");
        let _ = writeln!(
            t,
            "| test | attached median (min-max) | detached median (min-max) | attached/detached | noise (max-min)/median att, det |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|");
        for u in UNI_ROWS {
            let pick = |att: bool| -> Vec<f64> {
                results
                    .iter()
                    .filter(|r| r.0 == u && r.1 == att)
                    .map(|r| r.2)
                    .collect()
            };
            let (am, amin, amax) = stats(&pick(true));
            let (dm, dmin, dmax) = stats(&pick(false));
            let noise_a = (amax - amin) / am.max(f64::MIN_POSITIVE);
            let noise_d = (dmax - dmin) / dm.max(f64::MIN_POSITIVE);
            let diff = am / dm.max(f64::MIN_POSITIVE) - 1.0;
            let verdict = if diff.abs() <= noise_a.max(noise_d) {
                "within noise"
            } else {
                "BEYOND noise"
            };
            let _ = writeln!(
                t,
                "| {} | {:.0} ({:.0}-{:.0}) | {:.0} ({:.0}-{:.0}) | {:+.1} % ({verdict}) | {:.1} %, {:.1} % |",
                u.label(),
                am,
                amin,
                amax,
                dm,
                dmin,
                dmax,
                diff * 100.0,
                noise_a * 100.0,
                noise_d * 100.0
            );
        }
        print!("{t}");
        self.log.push_str(&t);
    }
}

fn source_label(c: [u64; 3]) -> String {
    let total: u64 = c.iter().sum();
    if total == 0 {
        return "nothing".into();
    }
    let mut parts = Vec::new();
    if c[0] > 0 {
        parts.push(format!("{} (egress IP)", addr::EGRESS_B));
    }
    if c[1] > 0 {
        parts.push(format!("{} (pod)", Pod::A1.ip()));
    }
    if c[2] > 0 {
        parts.push("other".to_string());
    }
    parts.join(" + ")
}

/// Tools the bench needs beyond the lab's.
pub fn check_tools() -> std::result::Result<(), String> {
    super::demo::check_tools()?;
    super::demo::require_tools(&["nft", "socat", "bpftool", "ss"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_valid_checksums() {
        let f = frame(
            [2, 0, 0, 0, 0, 1],
            group_mac(addr::GROUP),
            Pod::A1.ip(),
            addr::GROUP,
            UDP_DPORT,
            64,
        );
        assert_eq!(f.len(), 14 + 20 + 8 + 64);
        assert_eq!(&f[0..6], &[0x01, 0x00, 0x5e, 1, 1, 1]);
        // A header with its checksum sums to 0xffff (folds to zero).
        assert_eq!(fold(sum16(&f[14..34])), 0);
        let udp = &f[34..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        assert_eq!(fold(sum16(&pseudo) + sum16(udp)), 0);
    }

    #[test]
    fn parses_iperf2_csv() {
        let tcp = "20261130190000,198.51.100.11,40000,198.51.100.21,5301,1,0.0-2.0,250000000,1000000000\n";
        assert_eq!(parse_iperf_csv(tcp, false), Some(1000.0));
        let udp = "20261130190000,198.51.100.11,40000,198.51.100.21,5302,1,0.0-2.0,1280000,5120000\n\
                   20261130190000,198.51.100.21,5302,198.51.100.11,40000,1,0.0-2.0,1280000,5120000,0.01,100,20100,0.5,0\n";
        assert_eq!(parse_iperf_csv(udp, true), Some(10000.0));
        assert_eq!(parse_iperf_csv("garbage", true), None);
        let client_only = "19700101000000,127.0.0.1,35459,127.0.0.1,5302,1,0.0-1.0,11691660,93532344,0.000,0,-1,-0.000,0\n";
        assert_eq!(parse_iperf_csv(client_only, true), None);
    }
}
