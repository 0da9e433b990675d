//! The lab: a three-node cluster in network namespaces, with real VXLAN
//! between the nodes, pods behind `lxc` veths, an upstream host on the
//! gateways' uplinks, and one real `cilium-mcast-egress run` per node on a
//! shared manifests directory. `make demo`, the end-to-end tests and the
//! benchmarks build on it.
//!
//! A crate of its own, never part of the sidecar: it creates namespaces,
//! kills processes and writes a `cilium_lxc` as cilium-agent would, none of
//! which the product may do. It drives the real `cilium-mcast-egress` binary
//! and reads its pinned maps through the library.
//!
//! ```text
//!            192.0.2.0/24 underlay (bridge in <p>-wire)
//!   node-a .11 ─────────────── node-b .12 ─────────────── node-c .13
//!   lxca1 pod-a1 (camera)      lxcb1 pod-b1 (camera)      lxcc1 pod-c1 (camera)
//!   lxca2 pod-a2 (other)       uplink0 203.0.113.10/25    uplink0 203.0.113.130/25
//!                              2001:db8:203::10/64        2001:db8:203:1::130/64
//!                                 │                          │
//!                              eth0 203.0.113.1/25   eth1 203.0.113.129/25
//!                              2001:db8:203::1/64    2001:db8:203:1::129/64
//!                                 └──────── upstream ────────┘
//! ```
//!
//! Pods and uplinks are dual-stack: pod 198.51.100.<n> is also
//! 2001:db8:100::<n>, with an IPv6 entry of its own in `cilium_lxc`. The
//! underlay stays IPv4, as Cilium's VXLAN does.
//!
//! Names carry a per-lab prefix with the owning process id, so labs of
//! parallel tests never meet, and the leftovers of a lab whose process died
//! are removed by the next one. Everything is torn down on drop.

pub mod containers;
pub mod kube;
pub mod prometheus;
mod topology;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;

use cilium_mcast_egress::datapath::maps::Maps;
use cilium_mcast_egress::datapath::Paths;

pub use containers::Containers;
pub use prometheus::Prometheus;
pub use topology::{
    create_cilium_lxc_at, ifindex_in, lxc_put6_at, lxc_put_at, Node, Pod, IDENTITY_CAMERA,
    IDENTITY_OTHER, NODES, PODS,
};

/// Where labs keep their BPF filesystems, manifests and logs.
pub const LAB_ROOT: &str = "/run/cilium-mcast-egress-lab";
/// The probe address of every daemon, inside its node's namespace.
pub const PROBE: &str = "127.0.0.1:9980";

/// Errors setting up or driving a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{cmd}: {detail}")]
    Command { cmd: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
    #[error("map of {node}: {source}")]
    Map {
        node: &'static str,
        source: cilium_mcast_egress::datapath::DatapathError,
    },
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("stopped")]
    Stopped,
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Make every lab of this process stop building: each further command
/// fails, so whoever owns a lab drops it, which tears it down.
pub fn request_stop() {
    STOP.store(true, Ordering::Relaxed);
}

/// Whether [`request_stop`] was called.
pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Kill whatever runs in the namespaces of this process's labs (daemons,
/// senders, receivers), so that their owners stop waiting on them.
pub fn kill_own_lab_processes() {
    let own = format!("mcl{}x", std::process::id());
    if let Ok(list) = run_unchecked("ip", &["netns", "list"]) {
        for ns in list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&own))
        {
            kill_processes_in(ns);
        }
    }
}

/// Run a command; its stdout, or an error with its output.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    if STOP.load(Ordering::Relaxed) {
        return Err(LabError::Stopped);
    }
    run_unchecked(cmd, args)
}

/// As [`run`], also while stopping: for tearing down.
fn run_unchecked(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("running {cmd}")))?;
    stdout_of(cmd, args, &out)
}

/// The stdout of `cmd args`, which ended as `out`; an error with both of
/// its outputs when it failed.
pub(crate) fn stdout_of(cmd: &str, args: &[&str], out: &std::process::Output) -> Result<String> {
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: format!("{cmd} {}", args.join(" ")),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `f` on a thread that has entered network namespace `ns`; sockets
/// made there stay in it wherever they are used afterwards.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = PathBuf::from("/run/netns").join(ns);
    let file = fs::File::open(&path).map_err(io(format!("opening {}", path.display())))?;
    let handle = std::thread::spawn(move || {
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map(|()| f())
    });
    match handle.join() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(LabError::Sys {
            what: format!("entering {ns}"),
            source,
        }),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Load nftables `rules` (`nft -f -`) in namespace `ns`.
pub fn nft(ns: &str, rules: &str) -> Result<()> {
    let mut child = command("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("running nft"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(io("writing to nft"))?;
    }
    let out = child.wait_with_output().map_err(io("running nft"))?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: format!("nft -f - in {ns}"),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// GET `path` from `addr` inside namespace `ns` (HTTP/1.0): status and
/// body, if it answers.
pub fn http_get_in(ns: &str, addr: &str, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = addr.parse().ok()?;
    let path = path.to_owned();
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: lab\r\n\r\n").ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        let status = resp.split_whitespace().nth(1)?.parse().ok()?;
        let body = resp
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        Some((status, body))
    })
    .ok()
    .flatten()
}

/// An AF_PACKET raw socket bound to device `ifindex` for `protocol` (host
/// byte order; 0: the socket only sends and is handed no frame),
/// non-blocking if asked. The generator of `make bench-lab` and the tests'
/// taps both use it.
pub fn packet_socket(
    ifindex: u32,
    protocol: u16,
    nonblock: bool,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    let proto = protocol.to_be();
    let flags =
        libc::SOCK_RAW | libc::SOCK_CLOEXEC | if nonblock { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain socket(2) call; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, flags, i32::from(proto)) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll of the size passed.
    let ret = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// What to start a lab with.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The `cilium-mcast-egress` binary the daemons run.
    pub binary: PathBuf,
    /// Extra manifest files to put into the directory before the daemons
    /// start (policies, typically).
    pub manifests: Vec<(String, String)>,
    /// How often daemons reconcile without events.
    pub resync: Duration,
    /// Log level of the daemons.
    pub log_level: String,
    /// Nodes as containers and the sidecar from its image (`make
    /// e2e-local`), instead of plain namespaces and the binary.
    pub containers: Option<Containers>,
}

impl LabConfig {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        LabConfig {
            binary: binary.into(),
            manifests: Vec::new(),
            resync: Duration::from_millis(200),
            log_level: "info".into(),
            containers: None,
        }
    }
}

/// A node's daemon: a process in the node's namespace, or the sidecar's
/// container beside the node's.
enum Daemon {
    Process(Child),
    Container(String),
}

/// A running lab. Dropping it tears everything down.
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    cfg: LabConfig,
    daemons: Vec<Option<Daemon>>,
    mounts: Vec<PathBuf>,
    namespaces: Vec<String>,
    /// Containers to remove on drop, and the node image built for them.
    containers: Vec<String>,
    node_image: Option<String>,
}

impl Lab {
    /// Build the topology, write the cluster's objects, start one daemon
    /// per node and wait until every one is ready.
    pub fn up(cfg: LabConfig) -> Result<Lab> {
        reap_stale_labs();
        let prefix = format!(
            "mcl{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = Path::new(LAB_ROOT).join(&prefix);
        fs::create_dir_all(dir.join("manifests")).map_err(io("creating the lab directory"))?;
        let mut lab = Lab {
            prefix,
            dir,
            cfg,
            daemons: NODES.iter().map(|_| None).collect(),
            mounts: Vec::new(),
            namespaces: Vec::new(),
            containers: Vec::new(),
            node_image: None,
        };
        if let Some(c) = lab.cfg.containers.clone() {
            let tag = containers::node_image_tag(&lab.prefix);
            lab.node_image = Some(tag.clone());
            containers::build_node_image(&c.busybox, &tag, &lab.dir)?;
        }
        topology::build(&mut lab)?;
        lab.write_cluster_objects()?;
        for (name, body) in lab.cfg.manifests.clone() {
            lab.write_manifest(&name, &body)?;
        }
        for node in NODES {
            lab.start_daemon(node)?;
        }
        for node in NODES {
            lab.wait_ready(node, Duration::from_secs(30))?;
        }
        Ok(lab)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    pub fn node_ns(&self, node: Node) -> String {
        self.ns(node.name())
    }

    pub fn pod_ns(&self, pod: Pod) -> String {
        self.ns(pod.name())
    }

    pub fn upstream_ns(&self) -> String {
        self.ns("upstream")
    }

    pub fn manifests_dir(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    pub fn node_dir(&self, node: Node) -> PathBuf {
        self.dir.join(node.name())
    }

    /// Our BPF filesystem on `node`.
    pub fn bpffs(&self, node: Node) -> PathBuf {
        self.node_dir(node).join("bpf")
    }

    /// What cilium-agent would have pinned on `node`.
    pub fn cilium_bpffs(&self, node: Node) -> PathBuf {
        self.node_dir(node).join("cilium")
    }

    pub fn log_path(&self, node: Node) -> PathBuf {
        self.dir.join(format!("{}.log", node.name()))
    }

    /// The daemon's log so far.
    pub fn log(&self, node: Node) -> String {
        if self.cfg.containers.is_some() {
            return containers::logs(&self.sidecar_container(node));
        }
        fs::read_to_string(self.log_path(node)).unwrap_or_default()
    }

    /// The container of `node` (when the lab runs its nodes in containers).
    pub fn node_container(&self, node: Node) -> String {
        format!("{}-{}", self.prefix, node.name())
    }

    /// The sidecar container of `node` (when the lab runs its nodes in
    /// containers).
    pub fn sidecar_container(&self, node: Node) -> String {
        format!("{}-mcast-{}", self.prefix, node.name())
    }

    /// The pinned maps of `node`.
    pub fn maps(&self, node: Node) -> Result<Maps> {
        Maps::open_pinned(&Paths::new(self.bpffs(node))).map_err(|source| LabError::Map {
            node: node.name(),
            source,
        })
    }

    pub fn write_manifest(&self, name: &str, body: &str) -> Result<()> {
        // Write then rename, as an editor or a ConfigMap update does: the
        // daemons never read a half-written file.
        let tmp = self.dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, body).map_err(io(format!("writing {name}")))?;
        fs::rename(&tmp, self.manifests_dir().join(name)).map_err(io(format!("renaming {name}")))
    }

    pub fn remove_manifest(&self, name: &str) -> Result<()> {
        fs::remove_file(self.manifests_dir().join(name)).map_err(io(format!("removing {name}")))
    }

    fn write_cluster_objects(&self) -> Result<()> {
        self.write_manifest("nodes.yaml", &topology::nodes_yaml())?;
        for pod in PODS {
            self.write_manifest(
                &format!("{}.yaml", pod.name()),
                &topology::endpoint_yaml(pod),
            )?;
        }
        Ok(())
    }

    /// Start `node`'s daemon (in the node's namespace), logging to its file;
    /// or its sidecar container, created at the first start.
    pub fn start_daemon(&mut self, node: Node) -> Result<()> {
        if let Some(c) = self.cfg.containers.clone() {
            let name = self.sidecar_container(node);
            if self.containers.contains(&name) {
                containers::docker(&["start", &name])?;
            } else {
                self.containers.push(name.clone());
                containers::start_sidecar(&c, &self.sidecar(node, name.clone()))?;
            }
            self.daemons[node.index()] = Some(Daemon::Container(name));
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node))
            .map_err(io("opening the daemon log"))?;
        let log2 = log.try_clone().map_err(io("opening the daemon log"))?;
        let ns_path = PathBuf::from("/run/netns").join(self.node_ns(node));
        let ns = fs::File::open(&ns_path).map_err(io(format!("opening {}", ns_path.display())))?;
        let mut cmd = Command::new(&self.cfg.binary);
        cmd.arg("run")
            .args(["--node-name", node.name(), "--manifests"])
            .arg(self.manifests_dir())
            .arg("--bpffs-root")
            .arg(self.bpffs(node))
            .arg("--cilium-bpffs")
            .arg(self.cilium_bpffs(node))
            .args(["--metrics-addr", PROBE])
            .arg("--resync-interval-ms")
            .arg(self.cfg.resync.as_millis().to_string())
            .env("RUST_LOG", &self.cfg.log_level)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: the closure only calls sigprocmask(2), prctl(2) and
        // setns(2), all async-signal-safe, on a descriptor opened before the
        // fork.
        unsafe {
            cmd.pre_exec(move || {
                unblock_signals()?;
                // Dies with the thread that started it: a killed test run
                // leaves no daemon behind.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(io("starting the daemon"))?;
        fs::write(
            self.node_dir(node).join("daemon.pid"),
            child.id().to_string(),
        )
        .map_err(io("writing the daemon's pid"))?;
        self.daemons[node.index()] = Some(Daemon::Process(child));
        Ok(())
    }

    /// SIGTERM `node`'s daemon and wait for it; returns its exit status.
    pub fn stop_daemon(&mut self, node: Node) -> Result<std::process::ExitStatus> {
        let mut child = match self.daemons[node.index()].take() {
            Some(Daemon::Process(child)) => child,
            Some(Daemon::Container(name)) => {
                // SIGTERM, then SIGKILL after 10 s, as the kubelet does.
                containers::docker(&["stop", "--time", "10", &name])?;
                let code = containers::exit_code(&name)?;
                return Ok(std::process::ExitStatus::from_raw((code & 0xff) << 8));
            }
            None => {
                return Err(LabError::Command {
                    cmd: format!("stop {}", node.name()),
                    detail: "not running".into(),
                })
            }
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().map_err(io("waiting for the daemon"))? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().map_err(io("waiting for the daemon"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL `node`'s daemon: a crash, not a clean stop.
    pub fn kill_daemon(&mut self, node: Node) -> Result<()> {
        match self.daemons[node.index()].take() {
            Some(Daemon::Process(mut child)) => {
                let _ = child.kill();
                child.wait().map_err(io("waiting for the daemon"))?;
            }
            Some(Daemon::Container(name)) => {
                containers::docker(&["kill", &name])?;
                containers::docker(&["wait", &name])?;
            }
            None => {}
        }
        Ok(())
    }

    /// Run the sidecar image on `node` with exactly the capabilities `caps`
    /// (all others dropped), as its sidecar runs, while the node's own
    /// sidecar is stopped: whether it became ready within `timeout`, and its
    /// log. The container is removed after.
    pub fn try_sidecar(
        &mut self,
        node: Node,
        caps: &[&str],
        timeout: Duration,
    ) -> Result<(bool, String)> {
        let Some(mut c) = self.cfg.containers.clone() else {
            return Err(LabError::Command {
                cmd: "try_sidecar".into(),
                detail: "the lab's nodes are not containers".into(),
            });
        };
        c.cap_add = caps.iter().map(|c| (*c).to_owned()).collect();
        let n = self.containers.len();
        let name = format!("{}-try{n}-{}", self.prefix, node.name());
        self.containers.push(name.clone());
        containers::start_sidecar(&c, &self.sidecar(node, name.clone()))?;
        let deadline = Instant::now() + timeout;
        let ready = loop {
            if self.probe(node, "/readyz") == Some(200) {
                break true;
            }
            if !containers::running(&name) || Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = containers::logs(&name);
        containers::remove(std::slice::from_ref(&name), None);
        self.containers.retain(|c| *c != name);
        Ok((ready, log))
    }

    /// How `node`'s sidecar container `name` is run.
    fn sidecar(&self, node: Node, name: String) -> containers::Sidecar {
        containers::Sidecar {
            prefix: self.prefix.clone(),
            name,
            node_container: self.node_container(node),
            node,
            bpffs: self.bpffs(node),
            cilium_bpffs: self.cilium_bpffs(node),
            manifests: self.manifests_dir(),
            resync_ms: self.cfg.resync.as_millis(),
            log_level: self.cfg.log_level.clone(),
        }
    }

    /// Restart `node`'s daemon: `docker restart` of its sidecar container
    /// (SIGTERM, then start again), or a stop and start of the process.
    pub fn restart_daemon(&mut self, node: Node) -> Result<()> {
        if let Some(Daemon::Container(name)) = &self.daemons[node.index()] {
            containers::docker(&["restart", "--time", "10", name])?;
            return Ok(());
        }
        self.stop_daemon(node)?;
        self.start_daemon(node)
    }

    pub fn daemon_running(&mut self, node: Node) -> bool {
        match self.daemons[node.index()].as_mut() {
            Some(Daemon::Process(c)) => matches!(c.try_wait(), Ok(None)),
            Some(Daemon::Container(name)) => containers::running(name),
            None => false,
        }
    }

    /// The HTTP status of `path` on `node`'s daemon, if it answers.
    pub fn probe(&self, node: Node, path: &str) -> Option<u16> {
        self.http_get(node, path).map(|(status, _)| status)
    }

    /// GET `path` from `node`'s daemon: status and body, if it answers.
    pub fn http_get(&self, node: Node, path: &str) -> Option<(u16, String)> {
        http_get_in(&self.node_ns(node), PROBE, path)
    }

    pub fn wait_ready(&mut self, node: Node, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.probe(node, "/readyz") == Some(200) {
                return Ok(());
            }
            if !self.daemon_running(node) {
                return Err(LabError::Command {
                    cmd: format!("daemon on {}", node.name()),
                    detail: format!("exited; its log:\n{}", self.log(node)),
                });
            }
            if Instant::now() > deadline {
                return Err(LabError::Timeout {
                    what: format!("{} to be ready; its log:\n{}", node.name(), self.log(node)),
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A pod that was not there when the lab came up: its namespace, veth,
    /// `cilium_lxc` entry and `CiliumEndpoint` manifest.
    pub fn add_pod(&mut self, pod: Pod) -> Result<()> {
        topology::add_pod(self, pod)?;
        self.write_manifest(
            &format!("{}.yaml", pod.name()),
            &topology::endpoint_yaml(pod),
        )
    }

    /// A host on the underlay that is not a cluster node (192.0.2.0/24,
    /// plugged into the same bridge): the source of injection attempts.
    /// Returns its namespace; its NIC is `eth0`.
    pub fn add_underlay_host(&mut self, short: &str, ip: Ipv4Addr) -> Result<String> {
        let ns = self.add_netns(short)?;
        let wire = self.ns("wire");
        run(
            "ip",
            &[
                "-n", &wire, "link", "add", short, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ],
        )?;
        run(
            "ip",
            &["-n", &wire, "link", "set", short, "master", "br0", "up"],
        )?;
        run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        )?;
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(ns)
    }

    fn mount_bpffs(&mut self, path: &Path) -> Result<()> {
        fs::create_dir_all(path).map_err(io(format!("creating {}", path.display())))?;
        nix::mount::mount(
            Some("bpf"),
            path,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|source| LabError::Sys {
            what: format!("mounting bpffs on {}", path.display()),
            source,
        })?;
        self.mounts.push(path.to_owned());
        Ok(())
    }

    /// A node's namespace: a plain one, or its container's, named with `ip
    /// netns attach`.
    fn add_node_netns(&mut self, node: Node) -> Result<String> {
        let Some(image) = self.node_image.clone() else {
            return self.add_netns(node.name());
        };
        let container = self.node_container(node);
        self.containers.push(container.clone());
        let pid = containers::start_node(&self.prefix, &container, node.name(), &image)?;
        let name = self.ns(node.name());
        run("ip", &["netns", "attach", &name, &pid.to_string()])?;
        self.namespaces.push(name.clone());
        run("ip", &["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A namespace of the lab's own, named with its prefix: removed with
    /// the lab, and with the leftovers of a lab whose process died. Hosts
    /// a test builds beside the nodes live in one.
    pub fn add_netns(&mut self, short: &str) -> Result<String> {
        let name = self.ns(short);
        run("ip", &["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        run("ip", &["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for daemon in self.daemons.iter_mut().filter_map(Option::take) {
            if let Daemon::Process(child) = daemon {
                kill_and_wait(child);
            }
        }
        // Sidecars first, then the nodes whose namespaces they share.
        let mut names = std::mem::take(&mut self.containers);
        names.reverse();
        containers::remove(&names, self.node_image.take().as_deref());
        for m in self.mounts.drain(..).rev() {
            let _ = umount2(&m, MntFlags::MNT_DETACH);
        }
        for ns in self.namespaces.drain(..).rev() {
            kill_processes_in(&ns);
            let _ = run_unchecked("ip", &["netns", "del", &ns]);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whatever still runs in a lab namespace (a sender or receiver a test or
/// the demo started) goes with it.
fn kill_processes_in(ns: &str) {
    let Ok(pids) = run_unchecked("ip", &["netns", "pids", ns]) else {
        return;
    };
    for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Children must not inherit a signal mask that hides SIGTERM or SIGINT
/// (the demo blocks them in its threads to catch Ctrl-C itself).
fn unblock_signals() -> std::io::Result<()> {
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(std::io::Error::from)
}

/// A command whose process starts with no signal blocked.
pub fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    // SAFETY: sigprocmask(2) is async-signal-safe.
    unsafe {
        c.pre_exec(unblock_signals);
    }
    c
}

fn kill_and_wait(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..200 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Remove the labs of this very process: after Ctrl-C, from the thread
/// that caught it, while the lab's owner is still running.
pub fn reap_own_labs() {
    let Ok(entries) = fs::read_dir(LAB_ROOT) else {
        return;
    };
    let own = format!("mcl{}x", std::process::id());
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&own) {
            reap_lab_dir(&entry.path(), &name);
        }
    }
}

/// Remove what labs of dead processes left behind (a SIGKILLed test run):
/// their daemons, mounts, namespaces and directories. Labs of live
/// processes are not touched.
pub fn reap_stale_labs() {
    // Namespaces of dead labs, also those whose directory is already gone.
    if let Ok(list) = run_unchecked("ip", &["netns", "list"]) {
        let mut prefixes: Vec<String> = list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|n| n.split_once('-').map(|(p, _)| p.to_owned()))
            .filter(|p| owner_pid(p).is_some_and(|pid| !pid_alive(pid)))
            .collect();
        prefixes.dedup();
        for p in prefixes {
            reap_namespaces(&p);
        }
    }
    // Containers of dead labs, when a Docker engine runs here.
    if Path::new("/var/run/docker.sock").exists() {
        for p in containers::lab_prefixes() {
            if owner_pid(&p).is_some_and(|pid| !pid_alive(pid)) {
                containers::reap(&p);
            }
        }
    }
    let Ok(entries) = fs::read_dir(LAB_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        reap_lab_dir(&entry.path(), &name);
    }
}

/// The pid in a lab prefix `mcl<pid>x<n>`.
fn owner_pid(prefix: &str) -> Option<i32> {
    prefix.strip_prefix("mcl")?.split('x').next()?.parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn reap_lab_dir(dir: &Path, prefix: &str) {
    reap_namespaces(prefix);
    // The daemons and anything else of the lab are found by namespace below,
    // never by a recorded pid that another process may have been given since.
    for node in NODES {
        let node_dir = dir.join(node.name());
        for sub in ["bpf", "cilium"] {
            let _ = umount2(&node_dir.join(sub), MntFlags::MNT_DETACH);
        }
    }
    let _ = fs::remove_dir_all(dir);
}

/// Kill what runs in the namespaces of lab `prefix` and delete them.
fn reap_namespaces(prefix: &str) {
    if let Ok(list) = run_unchecked("ip", &["netns", "list"]) {
        for ns in list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("{prefix}-")))
        {
            kill_processes_in(ns);
            let _ = run_unchecked("ip", &["netns", "del", ns]);
        }
    }
}

/// The addresses of the lab.
pub mod addr {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// node-b's uplink: the egress IP of policies that pick node-b.
    pub const EGRESS_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    /// node-c's uplink.
    pub const EGRESS_C: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 130);
    /// The upstream host on node-b's uplink (eth0) and node-c's (eth1).
    pub const UPSTREAM_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    pub const UPSTREAM_C: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 129);
    /// The demo's SSM group.
    pub const GROUP: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);

    /// node-b's uplink: the egress IPv6 of policies that pick node-b (its
    /// first global IPv6).
    pub const EGRESS6_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0, 0, 0, 0, 0x10);
    /// node-c's uplink.
    pub const EGRESS6_C: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x203, 1, 0, 0, 0, 0x130);
    /// The upstream host on node-b's uplink (eth0) and node-c's (eth1).
    pub const UPSTREAM6_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0, 0, 0, 0, 1);
    pub const UPSTREAM6_C: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x203, 1, 0, 0, 0, 0x129);
    /// The demo's IPv6 SSM group (ff3e::/96, RFC 4607; a group ID from the
    /// dynamic range RFC 3307 gives SSM).
    pub const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 1);
}

/// The group's egress IP for a policy whose gateway is `node`.
pub fn egress_ip(node: Node) -> Option<Ipv4Addr> {
    match node {
        Node::B => Some(addr::EGRESS_B),
        Node::C => Some(addr::EGRESS_C),
        Node::A => None,
    }
}

/// The egress IPv6 for a policy whose gateway is `node`.
pub fn egress_ip6(node: Node) -> Option<std::net::Ipv6Addr> {
    match node {
        Node::B => Some(addr::EGRESS6_B),
        Node::C => Some(addr::EGRESS6_C),
        Node::A => None,
    }
}

/// A policy on the lab's pods: `app=camera` to `cidrs` through the node
/// labelled `egress-gateway=<gateway>` and its `uplink0`.
pub fn camera_policy(name: &str, cidrs: &[&str], excluded: &[&str], gateway: Node) -> String {
    let list = |v: &[&str]| v.iter().map(|c| format!("  - {c}\n")).collect::<String>();
    let excluded = if excluded.is_empty() {
        String::new()
    } else {
        format!("  excludedCIDRs:\n{}", list(excluded))
    };
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: {name}
spec:
  selectors:
  - podSelector:
      matchLabels:
        app: camera
  destinationCIDRs:
{}{excluded}  egressGateway:
    nodeSelector:
      matchLabels:
        lab.gateway: {}
    interface: uplink0
",
        list(cidrs),
        gateway.name()
    )
}

/// Wait until `f` holds, polling; an error names `what`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return Err(LabError::Timeout {
                what: what.to_owned(),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub mod bench;
pub mod demo;
