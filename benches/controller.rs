//! `make bench-controller`: the controller on one gateway node (node-0000)
//! of a cluster written by `scripts/gen-cluster.py`. Needs root.
//!
//! Per size (`BENCH_SIZES`, default `10000x100,50000x1000`: endpoints x
//! policies on 500 nodes) the cluster is generated once; each repetition
//! (`BENCH_REPEATS`, default 3) then starts from nothing: a network
//! namespace of its own with `uplink0` carrying node-0000's InternalIP, our
//! and Cilium's BPF filesystems fresh, Cilium's `cilium_lxc` holding
//! node-0000's pods, and the release-built daemon started inside the
//! namespace. It measures:
//!
//! - start to first sync: from spawning the daemon to its `first sync done`
//!   line (120 s, else "never");
//! - one endpoint added: five times, a new `CiliumEndpoint` file selected by
//!   policy-010 (gateway node-0000) is renamed into the directory, and the
//!   time until its entry, with its own identity, is in the pinned policy
//!   map (polled every 1 ms; 10 s, else "never"); and the `elapsed_us` of
//!   the `policy maps synced` line of that change (resolve and sync of one
//!   pass);
//! - peak RSS (VmHWM) and the CPU the daemon uses while nothing changes
//!   (`BENCH_IDLE_SECS`, default 30).
//!
//! `BENCH_IPV4_POOL=CIDR[,CIDR...]` hands gen-cluster `--ipv4-pool` (only
//! where nothing is routed); by default every address is from the
//! documentation ranges. `BENCH_KEEP=1` keeps the temporary directory (the
//! manifests and each daemon's log) and prints where it is.
//!
//! The goals are targets, fixed here; they are never adjusted to what is
//! measured.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cilium_mcast_egress::datapath::maps::{PolicyKey, POLICY_MAP};
use cilium_mcast_egress::datapath::{Maps, Paths};
use cilium_mcast_egress::source::manifests::load_dir;
use common::Bpffs;
use lab::{create_cilium_lxc_at, lxc_put_at};

const NODES: usize = 500;
const NODE: &str = "node-0000";
/// The node the added endpoints run on: not this one, so they are entries
/// this node keeps only as their gateway.
const PEER_NODE: &str = "node-0001";
/// Inside the repetition's own namespace.
const PROBE: &str = "127.0.0.1:9990";
const DEFAULT_SIZES: &str = "10000x100,50000x1000";

const FIRST_SYNC_TIMEOUT: Duration = Duration::from_secs(120);
const COVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the sync line of a change whose entry is already
/// in the map (the line is written just after the map).
const SYNC_LINE_TIMEOUT: Duration = Duration::from_secs(5);
const ADDITIONS: u32 = 5;
/// Between additions, so that each one is a pass of its own.
const ADDITION_GAP: Duration = Duration::from_millis(300);
/// After the additions, before the idle window starts.
const SETTLE: Duration = Duration::from_secs(2);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// policy-010 of gen-cluster: one `egressGateway` (gw-0, node-0000), apps
/// app-020 and app-021, destinations 232.1.10.0/24 and 232.2.10.0/24.
const ADDED_APP: &str = "app-020";
const ADDED_DEST: &str = "232.1.10.0/24";
/// `aa-bench` sorts before every generated namespace: where an added
/// endpoint's address is already taken, the added one keeps it.
const ADDED_NAMESPACE: &str = "aa-bench";

// Goals (targets, not measurements).
const GOAL_FIRST_SYNC_MS: f64 = 1000.0;
const GOAL_COVERED_MS: f64 = 100.0;
const GOAL_RSS_MIB: f64 = 64.0;
const GOAL_IDLE_CPU_PCT: f64 = 1.0;

/// At most this many distinct WARN/ERROR messages are shown per size.
const MAX_PROBLEMS: usize = 10;

struct Config {
    sizes: Vec<(usize, usize)>,
    repeats: usize,
    idle: Duration,
    pool: Vec<String>,
    keep: bool,
}

impl Config {
    fn from_env() -> Config {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let sizes = var("BENCH_SIZES")
            .unwrap_or_else(|| DEFAULT_SIZES.to_owned())
            .split(',')
            .map(|s| {
                let (e, p) = s
                    .trim()
                    .split_once('x')
                    .unwrap_or_else(|| panic!("BENCH_SIZES: {s:?} is not ENDPOINTSxPOLICIES"));
                (
                    e.parse().expect("BENCH_SIZES: endpoints must be a number"),
                    p.parse().expect("BENCH_SIZES: policies must be a number"),
                )
            })
            .collect();
        let repeats: usize =
            var("BENCH_REPEATS").map_or(3, |v| v.parse().expect("BENCH_REPEATS must be a number"));
        assert!(repeats > 0, "BENCH_REPEATS must be at least 1");
        let idle = Duration::from_secs(var("BENCH_IDLE_SECS").map_or(30, |v| {
            v.parse()
                .expect("BENCH_IDLE_SECS must be a number of seconds")
        }));
        assert!(!idle.is_zero(), "BENCH_IDLE_SECS must be at least 1");
        let pool = var("BENCH_IPV4_POOL").map_or_else(Vec::new, |v| {
            v.split(',').map(|c| c.trim().to_owned()).collect()
        });
        Config {
            sizes,
            repeats,
            idle,
            pool,
            keep: var("BENCH_KEEP").is_some_and(|v| v != "0"),
        }
    }
}

// --- the generated cluster ------------------------------------------------

/// One generated cluster, in a temporary directory removed on drop (unless
/// `BENCH_KEEP`): `manifests/` is the daemon's `--manifests`, the daemons'
/// logs sit beside it.
struct Cluster {
    dir: Option<tempfile::TempDir>,
    label: String,
    endpoints: usize,
    policies: usize,
    gen_time: Duration,
    node_ip: Ipv4Addr,
    peer_ip: Ipv4Addr,
    /// This node's pods: (IPv4, security identity).
    pods: Vec<(Ipv4Addr, u32)>,
    distinct_addresses: usize,
    keep: bool,
}

impl Cluster {
    fn generate(cfg: &Config, endpoints: usize, policies: usize) -> Cluster {
        let label = format!("{endpoints}x{policies}");
        let dir = tempfile::Builder::new()
            .prefix(&format!("bench-controller-{label}-"))
            .tempdir()
            .expect("creating a temporary directory");
        let manifests = dir.path().join("manifests");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gen-cluster.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg(&manifests)
            .args(["--nodes", &NODES.to_string()])
            .args(["--endpoints", &endpoints.to_string()])
            .args(["--policies", &policies.to_string()]);
        for cidr in &cfg.pool {
            cmd.args(["--ipv4-pool", cidr]);
        }
        let started = Instant::now();
        let out = cmd
            .output()
            .expect("running python3 scripts/gen-cluster.py");
        let gen_time = started.elapsed();
        assert!(
            out.status.success(),
            "gen-cluster failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // Read back with the daemon's own reader: the addresses and
        // identities are whatever the script wrote, whatever the pool.
        let (objects, errors) = load_dir(&manifests);
        assert!(
            errors.is_empty(),
            "the generated manifests do not parse: {errors:?}"
        );
        let internal_ip = |name: &str| -> Ipv4Addr {
            let node = objects
                .nodes
                .iter()
                .find(|n| &*n.name == name)
                .unwrap_or_else(|| panic!("gen-cluster wrote no CiliumNode {name}"));
            *node
                .internal_ips
                .first()
                .unwrap_or_else(|| panic!("{name} has no IPv4 InternalIP"))
        };
        let node_ip = internal_ip(NODE);
        let peer_ip = internal_ip(PEER_NODE);
        let mut addresses: BTreeSet<Ipv4Addr> = objects
            .nodes
            .iter()
            .flat_map(|n| n.internal_ips.iter().copied())
            .collect();
        let mut pods = Vec::new();
        for ep in &objects.endpoints {
            addresses.extend(ep.ipv4.iter());
            if let (true, Some(identity)) = (ep.node_ip == Some(node_ip), &ep.identity) {
                pods.extend(ep.ipv4.iter().map(|ip| (*ip, identity.id)));
            }
        }
        Cluster {
            dir: Some(dir),
            label,
            endpoints: objects.endpoints.len(),
            policies: objects.policies.len(),
            gen_time,
            node_ip,
            peer_ip,
            pods,
            distinct_addresses: addresses.len(),
            keep: cfg.keep,
        }
    }

    fn root(&self) -> &Path {
        self.dir.as_ref().expect("cluster directory").path()
    }

    fn manifests(&self) -> PathBuf {
        self.root().join("manifests")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let (true, Some(dir)) = (self.keep, self.dir.take()) {
            eprintln!("BENCH_KEEP: {} kept", dir.keep().display());
        }
    }
}

// --- one repetition's namespace and daemon --------------------------------

/// A named network namespace holding `uplink0` (with this node's IP) and
/// its veth peer; deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(node_ip: Ipv4Addr) -> Netns {
        let name = common::unique_name("mcbench");
        common::sh("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        let n = ns.name.as_str();
        common::sh("ip", &["-n", n, "link", "set", "lo", "up"]);
        common::sh(
            "ip",
            &[
                "-n",
                n,
                "link",
                "add",
                "uplink0",
                "type",
                "veth",
                "peer",
                "name",
                "upstream0",
            ],
        );
        common::sh(
            "ip",
            &[
                "-n",
                n,
                "addr",
                "add",
                &format!("{node_ip}/24"),
                "dev",
                "uplink0",
            ],
        );
        common::sh("ip", &["-n", n, "link", "set", "upstream0", "up"]);
        common::sh("ip", &["-n", n, "link", "set", "uplink0", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .output();
    }
}

struct Line {
    at: Instant,
    text: String,
}

#[derive(Default)]
struct LogState {
    lines: Vec<Line>,
    /// stdout and stderr; 0 once both reached end of file.
    open_streams: usize,
}

/// The daemon's output, each line stamped on arrival, also written to a
/// file for inspection.
struct Log {
    state: Mutex<LogState>,
    arrived: Condvar,
    file: Mutex<fs::File>,
}

impl Log {
    fn new(path: &Path) -> Log {
        Log {
            state: Mutex::new(LogState {
                lines: Vec::new(),
                open_streams: 2,
            }),
            arrived: Condvar::new(),
            file: Mutex::new(fs::File::create(path).expect("creating the daemon's log file")),
        }
    }

    fn read(self: Arc<Self>, stream: impl Read + Send + 'static) -> JoinHandle<()> {
        std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let at = Instant::now();
                let text = String::from_utf8_lossy(&buf).trim_end().to_owned();
                // The file is for a human afterwards; a failed write must
                // not stop the measurement.
                let _ = writeln!(self.file.lock().expect("log file lock"), "{text}");
                self.state
                    .lock()
                    .expect("log lock")
                    .lines
                    .push(Line { at, text });
                self.arrived.notify_all();
            }
            self.state.lock().expect("log lock").open_streams -= 1;
            self.arrived.notify_all();
        })
    }

    fn len(&self) -> usize {
        self.state.lock().expect("log lock").lines.len()
    }

    /// The first line from index `from` on that satisfies `pred`: its
    /// arrival and text. None at `deadline`, or once the daemon's output
    /// has ended without one.
    fn wait_for(
        &self,
        from: usize,
        deadline: Instant,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(Instant, String)> {
        let mut st = self.state.lock().expect("log lock");
        let mut next = from;
        loop {
            while let Some(line) = st.lines.get(next) {
                if pred(&line.text) {
                    return Some((line.at, line.text.clone()));
                }
                next += 1;
            }
            let now = Instant::now();
            if st.open_streams == 0 || now >= deadline {
                return None;
            }
            st = self
                .arrived
                .wait_timeout(st, deadline - now)
                .expect("log lock")
                .0;
        }
    }

    fn last_lines(&self, n: usize) -> Vec<String> {
        let st = self.state.lock().expect("log lock");
        let skip = st.lines.len().saturating_sub(n);
        st.lines[skip..].iter().map(|l| l.text.clone()).collect()
    }

    /// Every WARN and ERROR line, without its timestamp.
    fn problems(&self) -> Vec<String> {
        let st = self.state.lock().expect("log lock");
        st.lines
            .iter()
            .filter_map(|line| {
                // `<timestamp>  LEVEL target: message fields`
                let (_, rest) = line.text.split_once(char::is_whitespace)?;
                let rest = rest.trim_start();
                (rest.starts_with("WARN") || rest.starts_with("ERROR")).then(|| rest.to_owned())
            })
            .collect()
    }
}

/// A log line without its timestamp, split into what stays the same from
/// one line of its kind to the next (level, target, message) and its
/// fields, which vary.
fn problem_kind(line: &str) -> (&str, &str) {
    let mut start = 0;
    for word in line.split(' ') {
        let field = word.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        });
        if field && start > 0 {
            return (line[..start].trim_end(), &line[start..]);
        }
        start += word.len() + 1;
    }
    (line, "")
}

/// The daemon of one repetition. Killed and reaped on drop, also when the
/// bench panics first.
struct Daemon {
    child: Option<Child>,
    log: Arc<Log>,
    readers: Vec<JoinHandle<()>>,
    spawned: Instant,
}

impl Daemon {
    fn spawn(ns: &Netns, manifests: &Path, bpffs: &Path, cilium: &Path, log: &Path) -> Daemon {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(env!("CARGO_BIN_EXE_cilium-mcast-egress"))
            .args(["run", "--node-name", NODE, "--manifests"])
            .arg(manifests)
            .arg("--bpffs-root")
            .arg(bpffs)
            .arg("--cilium-bpffs")
            .arg(cilium)
            .args(["--metrics-addr", PROBE])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl(2) is async-signal-safe. The death signal survives
        // `ip netns exec`'s exec into the daemon: a bench killed outright
        // leaves no daemon behind.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let log = Arc::new(Log::new(log));
        let spawned = Instant::now();
        let mut child = cmd.spawn().expect("starting ip netns exec <daemon>");
        let readers = vec![
            log.clone().read(child.stdout.take().expect("piped stdout")),
            log.clone().read(child.stderr.take().expect("piped stderr")),
        ];
        Daemon {
            child: Some(child),
            log,
            readers,
            spawned,
        }
    }

    /// `ip netns exec` execs the daemon: the child's pid is the daemon's.
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Its exit status, if it has exited already.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGTERM and wait; SIGKILL after `STOP_TIMEOUT`. How it ended.
    fn stop(mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "not running".into();
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let outcome = loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break "stopped cleanly".to_owned(),
                Ok(Some(status)) => break format!("exited on SIGTERM with {status}"),
                Ok(None) if Instant::now() < deadline => {}
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break format!("did not stop within {} s: killed", STOP_TIMEOUT.as_secs());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        outcome
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// The added endpoint files of a repetition, removed on drop: the next
/// repetition starts from the generated cluster alone.
struct AddedFiles(Vec<PathBuf>);

impl Drop for AddedFiles {
    fn drop(&mut self) {
        for f in self.0.drain(..) {
            let _ = fs::remove_file(f);
        }
    }
}

fn added_endpoint_yaml(n: u32, uid: &str, ip: Ipv4Addr, identity: u32, node: Ipv4Addr) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: ep-{n}
  namespace: {ADDED_NAMESPACE}
  uid: {uid}
status:
  id: {id}
  identity:
    id: {identity}
    labels:
    - k8s:app={ADDED_APP}
    - k8s:io.kubernetes.pod.namespace={ADDED_NAMESPACE}
  networking:
    addressing:
    - {{ipv4: {ip}}}
    node: {node}
",
        id = 3900 + n,
    )
}

/// A uid no earlier run used: the repetition, the addition and the clock.
fn fresh_uid(rep: usize, n: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "b3e7c1d0-{:04x}-4c8e-9a51-{:012x}",
        ((rep as u32) << 8) | n,
        nanos & 0xffff_ffff_ffff
    )
}

// --- /proc ------------------------------------------------------------------

/// VmHWM of `pid` in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted
    // from the last ')', which ends it. What follows starts at field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf(3) takes no pointers and has no side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(hz > 0, "sysconf(_SC_CLK_TCK) failed");
    hz as f64
}

/// `GET /readyz` from a thread inside the namespace.
fn readyz(ns: &Netns) -> Option<u16> {
    let file = fs::File::open(Path::new("/run/netns").join(&ns.name)).ok()?;
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        common::daemon::http_status(PROBE, "/readyz")
    })
    .join()
    .ok()
    .flatten()
}

// --- measurements ---------------------------------------------------------

/// One measured value: `Never` when it did not happen within its timeout,
/// `Skipped` when it could not be measured.
#[derive(Clone, Copy, Debug)]
enum Sample {
    Val(f64),
    Never,
    Skipped,
}

impl Sample {
    fn rank(&self) -> (u8, f64) {
        match *self {
            Sample::Val(v) => (0, v),
            Sample::Never => (1, 0.0),
            Sample::Skipped => (2, 0.0),
        }
    }

    fn show(&self, decimals: usize) -> String {
        match *self {
            Sample::Val(v) => format!("{v:.decimals$}"),
            Sample::Never => "never".into(),
            Sample::Skipped => "—".into(),
        }
    }

    /// As [`Sample::show`], with the unit after a value.
    fn with_unit(&self, decimals: usize, unit: &str) -> String {
        match self {
            Sample::Val(_) => format!("{} {unit}", self.show(decimals)),
            _ => self.show(decimals),
        }
    }
}

/// The median of what was measured ("never" counts as the slowest), or
/// `Skipped` if nothing was.
fn median(samples: &[Sample]) -> Sample {
    let mut s: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| !matches!(s, Sample::Skipped))
        .collect();
    if s.is_empty() {
        return Sample::Skipped;
    }
    s.sort_by(|a, b| a.rank().partial_cmp(&b.rank()).expect("no NaN"));
    let n = s.len();
    if n % 2 == 1 {
        return s[n / 2];
    }
    match (s[n / 2 - 1], s[n / 2]) {
        (Sample::Val(a), Sample::Val(b)) => Sample::Val((a + b) / 2.0),
        (_, upper) => upper,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Rep {
    first_sync_ms: Sample,
    /// Per addition: the `elapsed_us` of its sync, and its time to the map.
    sync_ms: Vec<Sample>,
    covered_ms: Vec<Sample>,
    rss_mib: Sample,
    idle_cpu_pct: Sample,
    entries: Sample,
    capacity: Option<u32>,
    readyz: Option<u16>,
    /// The WARN/ERROR lines, when the first sync never came or the node
    /// was not ready at the end.
    problems: Vec<String>,
    ending: String,
}

fn run_rep(cfg: &Config, cluster: &Cluster, rep: usize) -> Rep {
    let ns = Netns::new(cluster.node_ip);
    let ours = Bpffs::new("bench-ctl-ours");
    let cilium = Bpffs::new("bench-ctl-cilium");
    let lxc = cilium.path().join("tc/globals/cilium_lxc");
    create_cilium_lxc_at(&lxc, cluster.node_ip).expect("creating cilium_lxc");
    for (k, (ip, identity)) in cluster.pods.iter().enumerate() {
        // Any distinct ifindex: no device behind it is needed here.
        let ifindex = 1000 + u32::try_from(k).expect("pods fit u32");
        lxc_put_at(&lxc, *ip, ifindex, *identity).expect("filling cilium_lxc");
    }
    let manifests = cluster.manifests();
    let mut added = AddedFiles(Vec::new());
    let log_path = cluster
        .root()
        .join(format!("daemon-{}-rep{}.log", cluster.label, rep + 1));
    let mut daemon = Daemon::spawn(&ns, &manifests, ours.path(), cilium.path(), &log_path);
    let pid = daemon.pid();

    // a. start to first sync.
    let first = daemon
        .log
        .wait_for(0, daemon.spawned + FIRST_SYNC_TIMEOUT, |l| {
            l.contains("first sync done")
        });
    let first_sync_ms = first.as_ref().map_or(Sample::Never, |(at, _)| {
        Sample::Val(ms(*at - daemon.spawned))
    });

    // b, c. one endpoint added at a time.
    let mut sync_ms = Vec::new();
    let mut covered_ms = Vec::new();
    if first.is_some() {
        let maps = Maps::open_pinned(&Paths::new(ours.path())).expect("opening the pinned maps");
        let dest = ADDED_DEST.parse().expect("a CIDR");
        for n in 0..ADDITIONS {
            // Pacing, not synchronisation: each change a pass of its own,
            // after whatever the previous one set off.
            std::thread::sleep(ADDITION_GAP);
            let ip = Ipv4Addr::new(203, 0, 113, 200 + n as u8);
            let identity = 99000 + 10 * rep as u32 + n;
            let name = format!("bench-add-{n}.yaml");
            let tmp = manifests.join(format!(".{name}.tmp"));
            let body = added_endpoint_yaml(n, &fresh_uid(rep, n), ip, identity, cluster.peer_ip);
            fs::write(&tmp, body).expect("writing an added endpoint");
            let key = PolicyKey {
                source: ip,
                destination: dest,
            };
            let from = daemon.log.len();
            let t0 = Instant::now();
            fs::rename(&tmp, manifests.join(&name)).expect("renaming an added endpoint");
            added.0.push(manifests.join(&name));
            let deadline = t0 + COVER_TIMEOUT;
            let covered = loop {
                let got = maps.policy_get(&key).expect("reading the policy map");
                if got.is_some_and(|v| v.origin.identity == identity) {
                    break Sample::Val(ms(t0.elapsed()));
                }
                if Instant::now() >= deadline {
                    break Sample::Never;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            let line_deadline = Instant::now()
                + if matches!(covered, Sample::Val(_)) {
                    SYNC_LINE_TIMEOUT
                } else {
                    Duration::ZERO
                };
            let sync = daemon
                .log
                .wait_for(from, line_deadline, |l| l.contains("policy maps synced"))
                .and_then(|(_, l)| elapsed_us(&l))
                .map_or(Sample::Never, |us| Sample::Val(us as f64 / 1000.0));
            covered_ms.push(covered);
            sync_ms.push(sync);
        }
    }

    // d, e. peak RSS and idle CPU.
    let rss_after_adds = peak_rss_mib(pid);
    std::thread::sleep(SETTLE);
    let hz = clock_ticks_per_sec();
    let before = cpu_ticks(pid);
    let w0 = Instant::now();
    std::thread::sleep(cfg.idle);
    let after = cpu_ticks(pid);
    let wall = w0.elapsed().as_secs_f64();
    let rss = peak_rss_mib(pid).or(rss_after_adds);
    let early_exit = daemon.exited();
    let (rss_mib, idle_cpu_pct) = match (early_exit, before, after, rss) {
        (None, Some(b), Some(a), Some(r)) => (
            Sample::Val(r),
            Sample::Val((a.saturating_sub(b)) as f64 / hz / wall * 100.0),
        ),
        _ => (Sample::Skipped, Sample::Skipped),
    };

    let (entries, capacity) = match Maps::open_pinned(&Paths::new(ours.path())) {
        Ok(maps) => (
            maps.policies()
                .map_or(Sample::Skipped, |p| Sample::Val(p.len() as f64)),
            maps.fill_levels().ok().and_then(|levels| {
                levels
                    .iter()
                    .find(|(name, _, _)| *name == POLICY_MAP)
                    .map(|(_, _, cap)| *cap)
            }),
        ),
        Err(_) => (Sample::Skipped, None),
    };
    let readyz = readyz(&ns);
    let problems = if first.is_some() && readyz == Some(200) {
        Vec::new()
    } else {
        let p = daemon.log.problems();
        if p.is_empty() {
            // No warning or error to explain it: the last words instead.
            daemon
                .log
                .last_lines(3)
                .into_iter()
                .map(|l| match l.split_once(char::is_whitespace) {
                    Some((_, rest)) => rest.trim_start().to_owned(),
                    None => l,
                })
                .collect()
        } else {
            p
        }
    };
    let mut ending = daemon.stop();
    if let Some(status) = early_exit {
        ending = format!("exited before the end, with {status}");
    }
    drop(added);
    Rep {
        first_sync_ms,
        sync_ms,
        covered_ms,
        rss_mib,
        idle_cpu_pct,
        entries,
        capacity,
        readyz,
        problems,
        ending,
    }
}

/// The `elapsed_us=` field of a log line.
fn elapsed_us(line: &str) -> Option<u64> {
    let rest = &line[line.find("elapsed_us=")? + "elapsed_us=".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

// --- report ---------------------------------------------------------------

struct Row {
    metric: &'static str,
    decimals: usize,
    goal: Option<(f64, &'static str)>,
    samples: Vec<Sample>,
}

fn row_cells(row: &Row) -> [String; 6] {
    let mut sorted: Vec<Sample> = row
        .samples
        .iter()
        .copied()
        .filter(|s| !matches!(s, Sample::Skipped))
        .collect();
    sorted.sort_by(|a, b| a.rank().partial_cmp(&b.rank()).expect("no NaN"));
    let (med, min, max) = match (sorted.first(), sorted.last()) {
        (Some(min), Some(max)) => (median(&sorted), *min, *max),
        _ => (Sample::Skipped, Sample::Skipped, Sample::Skipped),
    };
    let (goal, met) = match row.goal {
        None => ("—".to_owned(), "—".to_owned()),
        Some((limit, unit)) => {
            let goal = format!("< {limit} {unit}");
            let n = sorted.len();
            let ok = sorted
                .iter()
                .filter(|s| matches!(s, Sample::Val(v) if *v < limit))
                .count();
            let met = match (n, ok) {
                (0, _) => "—".to_owned(),
                (n, ok) if ok == n => "yes".to_owned(),
                (_, 0) => "no".to_owned(),
                (n, ok) => format!("no ({ok}/{n} reps)"),
            };
            (goal, met)
        }
    };
    [
        row.metric.to_owned(),
        med.show(row.decimals),
        min.show(row.decimals),
        max.show(row.decimals),
        goal,
        met,
    ]
}

fn table(rows: &[Row]) -> String {
    let header = ["metric", "median", "min", "max", "goal", "met?"];
    let cells: Vec<[String; 6]> = rows.iter().map(row_cells).collect();
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..6).map(width).collect();
    let line = |c: &[String]| {
        let mut s = String::from("|");
        for (i, cell) in c.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            // Text left, numbers right.
            if i == 0 || i >= 4 {
                let _ = write!(s, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(s, " {}{cell} |", " ".repeat(pad));
            }
        }
        s
    };
    let mut out = String::new();
    out.push_str(&line(&header.map(String::from)));
    out.push('\n');
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat(w + 1);
        if i == 0 || i >= 4 {
            let _ = write!(out, "-{dashes}|");
        } else {
            let _ = write!(out, "{dashes}:|");
        }
    }
    out.push('\n');
    for c in &cells {
        out.push_str(&line(c));
        out.push('\n');
    }
    out
}

/// Samples as `a/b/c unit`.
fn list(samples: &[Sample], decimals: usize, unit: &str) -> String {
    if samples.is_empty() {
        return "—".into();
    }
    let values = samples
        .iter()
        .map(|s| s.show(decimals))
        .collect::<Vec<_>>()
        .join("/");
    if samples.iter().any(|s| matches!(s, Sample::Val(_))) {
        format!("{values} {unit}")
    } else {
        values
    }
}

fn report(cfg: &Config, cluster: &Cluster, reps: &[Rep]) -> String {
    let pool = if cfg.pool.is_empty() {
        "documentation ranges".to_owned()
    } else {
        cfg.pool.join(", ")
    };
    let per_rep = |f: &dyn Fn(&Rep) -> Sample| reps.iter().map(f).collect::<Vec<_>>();
    let rows = [
        Row {
            metric: "start → first sync (ms)",
            decimals: 0,
            goal: Some((GOAL_FIRST_SYNC_MS, "ms")),
            samples: per_rep(&|r| r.first_sync_ms),
        },
        Row {
            metric: "resolve+sync, pass with one change (ms)",
            decimals: 1,
            goal: None,
            samples: per_rep(&|r| median(&r.sync_ms)),
        },
        Row {
            metric: "one endpoint added → in pinned map (ms)",
            decimals: 1,
            goal: Some((GOAL_COVERED_MS, "ms")),
            samples: per_rep(&|r| median(&r.covered_ms)),
        },
        Row {
            metric: "peak RSS, VmHWM (MiB)",
            decimals: 1,
            goal: Some((GOAL_RSS_MIB, "MiB")),
            samples: per_rep(&|r| r.rss_mib),
        },
        Row {
            metric: "idle CPU (% of one core)",
            decimals: 2,
            goal: Some((GOAL_IDLE_CPU_PCT, "%")),
            samples: per_rep(&|r| r.idle_cpu_pct),
        },
        Row {
            metric: "policy map entries at the end",
            decimals: 0,
            goal: None,
            samples: per_rep(&|r| r.entries),
        },
    ];

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## controller on {NODE}, cluster {} ({} repetitions)\n",
        cluster.label,
        reps.len()
    );
    let _ = writeln!(
        out,
        "cluster: {NODES} nodes, {} endpoints, {} policies, {} distinct addresses (pool: {pool}); \
         {NODE} {} with {} pods in cilium_lxc",
        cluster.endpoints,
        cluster.policies,
        cluster.distinct_addresses,
        cluster.node_ip,
        cluster.pods.len()
    );
    let _ = writeln!(
        out,
        "gen-cluster: {:.1} s (not part of any metric); idle window {} s\n",
        cluster.gen_time.as_secs_f64(),
        cfg.idle.as_secs()
    );
    out.push_str(&table(&rows));
    let capacities: BTreeSet<String> = reps
        .iter()
        .map(|r| r.capacity.map_or("?".into(), |c| c.to_string()))
        .collect();
    let ready = reps.iter().filter(|r| r.readyz == Some(200)).count();
    let _ = writeln!(
        out,
        "\nmedian/min/max over repetitions; resolve+sync and one endpoint: the median of {ADDITIONS} \
         additions per repetition; met? = every repetition within the goal.\n\
         policy map capacity {}; /readyz 200 at the end in {ready}/{} repetitions.",
        capacities.into_iter().collect::<Vec<_>>().join(", "),
        reps.len()
    );
    for (i, r) in reps.iter().enumerate() {
        let _ = writeln!(
            out,
            "rep {}: first sync {}; added→map {}; sync {}; RSS {}; idle CPU {}; \
             entries {}; readyz {}; {}",
            i + 1,
            r.first_sync_ms.with_unit(0, "ms"),
            list(&r.covered_ms, 1, "ms"),
            list(&r.sync_ms, 1, "ms"),
            r.rss_mib.with_unit(1, "MiB"),
            r.idle_cpu_pct.with_unit(2, "%"),
            r.entries.show(0),
            r.readyz.map_or("no answer".into(), |s| s.to_string()),
            r.ending
        );
    }

    // Why the first sync never came, or the node was not ready at the end:
    // the daemon's own words, one entry per kind of line (level, target,
    // message), errors first.
    struct Kind<'a> {
        kind: &'a str,
        lines: usize,
        distinct: BTreeSet<&'a str>,
        example: &'a str,
    }
    let mut kinds: Vec<Kind> = Vec::new();
    for line in reps.iter().flat_map(|r| &r.problems) {
        let (kind, fields) = problem_kind(line);
        match kinds.iter_mut().find(|k| k.kind == kind) {
            Some(k) => {
                k.lines += 1;
                k.distinct.insert(line);
            }
            None => kinds.push(Kind {
                kind,
                lines: 1,
                distinct: BTreeSet::from([line.as_str()]),
                example: fields,
            }),
        }
    }
    kinds.sort_by_key(|k| !k.kind.starts_with("ERROR"));
    let never = reps
        .iter()
        .filter(|r| matches!(r.first_sync_ms, Sample::Never))
        .count();
    let unready = reps.iter().filter(|r| r.readyz != Some(200)).count();
    if never > 0 || unready > 0 {
        let _ = writeln!(
            out,
            "\nfirst sync never came in {never}/{n} repetitions, not ready at the end in \
             {unready}/{n}; the daemon's WARN/ERROR lines there, by kind:",
            n = reps.len()
        );
        for k in kinds.iter().take(MAX_PROBLEMS) {
            let example: String = k.example.chars().take(300).collect();
            let cut = if example.len() < k.example.len() {
                " …"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {} — {} lines, {} distinct; e.g. {example}{cut}",
                k.kind,
                k.lines,
                k.distinct.len()
            );
        }
        if kinds.len() > MAX_PROBLEMS {
            let _ = writeln!(out, "  … and {} more kinds", kinds.len() - MAX_PROBLEMS);
        }
    }
    out
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!(
            "\n!!! SKIPPED bench-controller: needs root (BPF filesystems, network namespaces). \
             Run `sudo make bench-controller`. !!!\n"
        );
        return;
    }
    let cfg = Config::from_env();
    for &(endpoints, policies) in &cfg.sizes {
        eprintln!("== {endpoints}x{policies}: generating the cluster");
        let cluster = Cluster::generate(&cfg, endpoints, policies);
        let mut reps = Vec::new();
        for rep in 0..cfg.repeats {
            eprintln!(
                "== {}: repetition {}/{} (idle window {} s)",
                cluster.label,
                rep + 1,
                cfg.repeats,
                cfg.idle.as_secs()
            );
            let r = run_rep(&cfg, &cluster, rep);
            eprintln!(
                "   first sync {}, added→map {}, RSS {}, idle CPU {}",
                r.first_sync_ms.with_unit(0, "ms"),
                list(&r.covered_ms, 1, "ms"),
                r.rss_mib.with_unit(1, "MiB"),
                r.idle_cpu_pct.with_unit(2, "%")
            );
            reps.push(r);
        }
        // Each size as soon as it is done (progress went to stderr).
        println!("\n{}", report(&cfg, &cluster, &reps));
    }
}
