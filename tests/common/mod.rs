//! Shared by the privileged test suites: root detection, a private network
//! namespace per test, a private BPF filesystem per test, a packet builder
//! and a checksum verifier written independently of the datapath, and a
//! packet tap.

#![allow(dead_code)]

pub mod apiserver;
pub mod child;
pub mod counters;
pub mod daemon;
pub mod dp;
pub mod forge;
pub mod lab_io;
pub mod node;
pub mod observer;
pub mod packet;
pub mod repo;
pub mod wire6;
pub mod yaml;

/// Addresses of the single-node fixtures, all in documentation ranges.
pub mod addr {
    use std::net::Ipv4Addr;

    pub const THIS_NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    pub const REMOTE_GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
    pub const OTHER_NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 30);
    pub const STRANGER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
    pub const POD_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
    pub const POD_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
    pub const EGRESS_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    pub const GROUP: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);
    /// Security identities of pods a and b.
    pub const ID_A: u32 = 12345;
    pub const ID_B: u32 = 23456;
}

/// The single-node map state the datapath and CLI suites start from: this
/// node's config (tunnel device `tunnel`), pods a and b behind `lxc_a` and
/// `lxc_b`, the cluster's `nodes`, and `uplink0`'s MAC.
pub fn seed_single_node(
    maps: &cilium_mcast_egress::datapath::Maps,
    tunnel: u32,
    nodes: &[std::net::Ipv4Addr],
) {
    use cilium_mcast_egress::datapath::maps::{Config, EgressIface, Endpoint};
    maps.config_set(&Config {
        node_ip: addr::THIS_NODE,
        tunnel_ifindex: tunnel,
    })
    .expect("config");
    for (pod, dev, identity) in [
        (addr::POD_A, "lxc_a", addr::ID_A),
        (addr::POD_B, "lxc_b", addr::ID_B),
    ] {
        let ifindex = ifindex(dev);
        maps.endpoint_insert(pod, &Endpoint { ifindex, identity })
            .expect("endpoint");
    }
    for n in nodes {
        maps.node_insert(*n).expect("node");
    }
    maps.egress_iface_insert(
        ifindex("uplink0"),
        &EgressIface {
            mac: mac_of("uplink0"),
        },
    )
    .expect("uplink");
}

/// A privileged test in a network namespace of its own, with a fixture
/// built from the test's name: `netns_test!(name, Fixture::new, |fx| { .. })`.
/// Outside CI a non-root run skips it, loudly (see [`privileged`]).
#[macro_export]
macro_rules! netns_test {
    ($(#[$m:meta])* $name:ident, $fixture:expr, |$fx:ident| $body:block) => {
        $(#[$m])*
        #[test]
        fn $name() {
            if !common::privileged(stringify!($name)) {
                return;
            }
            common::in_new_netns(|| {
                #[allow(unused_variables)]
                let $fx = ($fixture)(stringify!($name));
                $body
            });
        }
    };
}

/// tcx verdicts as BPF_PROG_RUN returns them.
pub const TCX_NEXT: u32 = u32::MAX; // -1
pub const TCX_DROP: u32 = 2;
pub const TCX_REDIRECT: u32 = 7;

/// Skeletons of the test and benchmark builds of the programs.
#[allow(clippy::all, dead_code, unused_imports, non_camel_case_types)]
pub mod skels {
    pub mod overlay_test {
        include!(concat!(env!("OUT_DIR"), "/mcast_from_overlay_test.skel.rs"));
    }
    pub mod empty {
        include!(concat!(env!("OUT_DIR"), "/mcast_empty.skel.rs"));
    }
}

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Whether privileged tests can run. Outside CI a non-root run skips them,
/// loudly; under `CI=true` they must run, so not being root is a failure.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: privileged test needs root, and CI=true forbids skipping it");
    }
    eprintln!(
        "\n!!! SKIPPED {test}: needs root (BPF, network namespaces). \
         Run `sudo make test` to run it. !!!\n"
    );
    false
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test process) uses.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Run `f` on a thread of its own inside a new, anonymous network namespace.
/// The namespace, and every device created in it, disappears when the
/// thread ends, also when `f` panics (the panic is passed on).
pub fn in_new_netns<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let handle = std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        sh("ip", &["link", "set", "lo", "up"]);
        f()
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Run a command (in the calling thread's namespaces); panic with its
/// output when it fails.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A veth pair, both ends up.
/// Every (device, peer) pair as [`veth`].
pub fn veths(pairs: &[(&str, &str)]) {
    for (a, b) in pairs {
        veth(a, b);
    }
}

pub fn veth(a: &str, b: &str) {
    sh("ip", &["link", "add", a, "type", "veth", "peer", "name", b]);
    sh("ip", &["link", "set", a, "up"]);
    sh("ip", &["link", "set", b, "up"]);
}

/// A permanent neighbour entry: `ip` is at `mac` on `dev` (a node of the
/// underlay that no test runs, whose tunnel packets go out of `dev`).
pub fn permanent_neighbour(ip: &str, mac: &str, dev: &str) {
    sh(
        "ip",
        &[
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ],
    );
}

/// A VXLAN device in external (collect-md) mode on UDP 8472, as Cilium
/// creates `cilium_vxlan`; up.
pub fn vxlan_external(name: &str) {
    sh(
        "ip",
        &[
            "link", "add", name, "type", "vxlan", "external", "dstport", "8472",
        ],
    );
    sh("ip", &["link", "set", name, "up"]);
}

/// The leading bytes of a `struct __sk_buff` for BPF_PROG_RUN, up to and
/// including `ifindex`: the frame arrives on that device. The kernel reads
/// the rest as zero.
pub fn skb_ctx(ifindex: u32) -> Vec<u8> {
    let off = std::mem::offset_of!(skels::overlay_test::types::__sk_buff, ifindex);
    let mut ctx = vec![0u8; off + 4];
    ctx[off..off + 4].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

pub fn ifindex(dev: &str) -> u32 {
    nix::net::if_::if_nametoindex(dev).unwrap_or_else(|e| panic!("ifindex of {dev}: {e}"))
}

pub fn mac_of(dev: &str) -> [u8; 6] {
    let out = sh("ip", &["-o", "link", "show", "dev", dev]);
    let mac = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {out}"));
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("6 bytes")
}

/// A BPF filesystem mounted for one test under /run, unmounted and removed
/// on drop (whatever is pinned in it goes with it).
pub struct Bpffs {
    path: PathBuf,
}

impl Bpffs {
    pub fn new(test: &str) -> Bpffs {
        let bpffs = Bpffs::later(test);
        bpffs.mount();
        bpffs
    }

    /// A unique path for a BPF filesystem that the test mounts later
    /// ([`Bpffs::mount`]): nothing exists there yet. Dropped as
    /// [`Bpffs::new`]'s, mounted or not.
    pub fn later(test: &str) -> Bpffs {
        Bpffs {
            path: Path::new("/run/cilium-mcast-egress-tests").join(unique_name(test)),
        }
    }

    /// Mount the BPF filesystem at the path (created if missing).
    pub fn mount(&self) {
        fs::create_dir_all(&self.path).expect("creating bpffs mount point");
        nix::mount::mount(
            Some("bpf"),
            &self.path,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("mounting bpffs");
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&self.path);
    }
}

/// An AF_PACKET tap on one device: sees what is sent and received there.
pub struct Tap {
    fd: std::os::fd::OwnedFd,
}

/// An AF_PACKET socket bound to `dev` for `protocol` (host order; 0 sends
/// only), non-blocking if asked.
pub fn packet_socket(dev: &str, protocol: u16, nonblock: bool) -> io::Result<std::os::fd::OwnedFd> {
    let ifindex = nix::net::if_::if_nametoindex(dev).map_err(io::Error::from)?;
    lab::packet_socket(ifindex, protocol, nonblock)
}

impl Tap {
    pub fn open(dev: &str) -> Tap {
        let fd = packet_socket(dev, libc::ETH_P_ALL as u16, true)
            .unwrap_or_else(|e| panic!("AF_PACKET tap on {dev}: {e}"));
        Tap { fd }
    }

    /// The next frame, or None after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        use std::os::fd::AsRawFd;

        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: buf is a valid writable buffer of the given length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                buf.truncate(n as usize);
                return Some(buf);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The next frame for which `pred` holds, or None after `timeout`.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        pred: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(f) = self.recv(deadline.saturating_duration_since(Instant::now())) {
                if pred(&f) {
                    return Some(f);
                }
            }
        }
        None
    }
}

impl Tap {
    /// Send `frame` out of the tap's device.
    pub fn send(&self, frame: &[u8]) {
        use std::os::fd::AsRawFd;
        // SAFETY: frame is a valid readable buffer of the given length; the
        // socket is bound to its device.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            io::Error::last_os_error()
        );
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A pod: a thread of its own in a network namespace of its own, nested in
/// the test's. Closures given to [`PodNs::run`] run there (sockets opened
/// in them belong to the pod). The namespace goes when the value drops.
pub struct PodNs {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    tid: i32,
}

impl PodNs {
    pub fn new() -> PodNs {
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<Job>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            sh("ip", &["link", "set", "lo", "up"]);
            tid_tx.send(nix::unistd::gettid().as_raw()).expect("tid");
            for job in jobs_rx {
                job();
            }
        });
        let tid = tid_rx.recv().expect("pod thread started");
        PodNs {
            jobs: Some(jobs_tx),
            thread: Some(thread),
            tid,
        }
    }

    /// Move `dev` (of the caller's namespace) into the pod.
    pub fn take(&self, dev: &str) {
        sh("ip", &["link", "set", dev, "netns", &self.tid.to_string()]);
    }

    /// Run `f` inside the pod and return its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        self.jobs
            .as_ref()
            .expect("pod alive")
            .send(job)
            .expect("pod thread alive");
        match rx.recv().expect("pod job finished") {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for PodNs {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Poll `f` until it holds; panic naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A policy entry as the controller writes it on node `addr::THIS_NODE`:
/// the egress IP and the uplink only when this node is the gateway.
pub fn policy_entry(
    pod: std::net::Ipv4Addr,
    dest: &str,
    gateway: cilium_mcast_egress::datapath::maps::Gateway,
    uplink: u32,
    policy_id: u32,
    origin: cilium_mcast_egress::datapath::maps::Origin,
) -> (
    cilium_mcast_egress::datapath::maps::PolicyKey,
    cilium_mcast_egress::datapath::maps::PolicyValue,
) {
    use cilium_mcast_egress::datapath::maps::{Gateway, PolicyKey, PolicyValue};
    let here = gateway == Gateway::Node(addr::THIS_NODE);
    (
        PolicyKey {
            source: pod,
            destination: dest.parse().expect("CIDR"),
        },
        PolicyValue {
            egress_ip: if here {
                addr::EGRESS_IP
            } else {
                std::net::Ipv4Addr::UNSPECIFIED
            },
            gateway,
            egress_ifindex: if here { uplink } else { 0 },
            policy_id,
            origin,
        },
    )
}

/// The production datapath loaded on a BPF filesystem of its own. The
/// storage the skeletons borrow is leaked: one small allocation per test.
pub fn load_datapath(
    test: &str,
) -> (
    Bpffs,
    cilium_mcast_egress::datapath::Datapath<'static>,
    cilium_mcast_egress::datapath::Maps,
) {
    use cilium_mcast_egress::datapath::{Datapath, DatapathStorage, Paths};
    let bpffs = Bpffs::new(test);
    let storage: &'static mut DatapathStorage = Box::leak(Box::default());
    let dp = Datapath::load(storage, Paths::new(bpffs.path())).expect("loading the datapath");
    let maps = dp.maps().expect("opening pinned maps");
    (bpffs, dp, maps)
}
