//! A real Kubernetes control plane for the tests and the lab: etcd and
//! kube-apiserver in a network namespace, with a throwaway PKI, Cilium's
//! CRDs applied, and kubectl at hand.
//!
//! The binaries are found where controller-runtime's envtest keeps them
//! ([`find_tool`]): the directory named by `KUBEBUILDER_ASSETS`, holding
//! `kube-apiserver`, `etcd` and `kubectl`; else the xz-compressed builds in
//! `../shared/k8s/bin` beside the workspace, unpacked once into
//! `target/k8s-assets` (and Debian's `/usr/bin/etcd`); else `PATH`. Cilium's
//! CRDs come from `CILIUM_CRDS_DIR`, else `../shared/k8s/crds/v2`.
//!
//! Where it runs is a [`Netns`]: a network namespace of its own with only a
//! loopback (clients enter it: [`KubeApi::enter_netns`],
//! [`KubeApi::command`]); a named namespace the caller built, such as a host
//! on the lab's underlay that every node reaches; or the namespace of the
//! calling thread, such as a test's, where the daemon under test runs too.
//! Nothing listens in the host's namespace.
//!
//! Each control plane keeps its state (PKI, etcd's data, logs, kubeconfigs)
//! in a temporary directory of its own, removed with its processes on drop,
//! also when a test fails or panics. The processes die with the test
//! process (`PR_SET_PDEATHSIG`), and the next start removes what dead
//! processes left behind.

use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

use crate::{LabError, Result};

/// The workspace root: the lab crate's parent directory.
fn workspace() -> &'static Path {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR"));
    lab.parent().unwrap_or(lab)
}

/// The Kubernetes binaries and Cilium's CRDs beside the workspace, as these
/// machines provide them.
fn shared_k8s() -> PathBuf {
    workspace().join("../shared/k8s")
}

/// `name` (`kube-apiserver`, `etcd` or `kubectl`) from the first place that
/// has it: `KUBEBUILDER_ASSETS`; `../shared/k8s/bin/NAME.xz`, unpacked into
/// `target/k8s-assets` (for etcd, Debian's `/usr/bin/etcd`); `PATH`. The
/// error says where it looked.
pub fn find_tool(name: &str) -> std::result::Result<PathBuf, String> {
    let mut looked = Vec::new();
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        let p = Path::new(&dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
        looked.push(p.display().to_string());
    }
    if name == "etcd" {
        let debian = Path::new("/usr/bin/etcd");
        if debian.is_file() {
            return Ok(debian.to_owned());
        }
        looked.push("/usr/bin/etcd (Debian's etcd-server)".into());
    } else {
        let packed = shared_k8s().join("bin").join(format!("{name}.xz"));
        if packed.is_file() {
            return unpack(&packed, name);
        }
        looked.push(packed.display().to_string());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    looked.push(format!("{name} on PATH"));
    Err(format!("no {name}: looked at {}", looked.join(", ")))
}

/// Unpacks `packed` into `target/k8s-assets/NAME` unless an unpacked copy
/// at least as new is there; atomically, so that a concurrent test sees the
/// whole file or none.
fn unpack(packed: &Path, name: &str) -> std::result::Result<PathBuf, String> {
    static UNPACKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = UNPACKING.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = workspace().join("target/k8s-assets");
    let out = dir.join(name);
    let fresh = |out: &Path| {
        let (Ok(o), Ok(p)) = (out.metadata(), packed.metadata()) else {
            return false;
        };
        matches!((o.modified(), p.modified()), (Ok(o), Ok(p)) if o >= p)
    };
    if fresh(&out) {
        return Ok(out);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let file = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let status = Command::new("xz")
        .arg("-dc")
        .arg(packed)
        .stdout(file)
        .status()
        .map_err(|e| format!("xz: {e}"))?;
    if !status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(format!("xz -dc {} failed: {status}", packed.display()));
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A test that cannot run here: skipped with a loud notice, or, under
/// `CI=true`, failed.
fn skip(test: &str, why: &str) {
    assert!(!in_ci(), "{test}: {why}, and CI=true forbids skipping");
    eprintln!("\n!!! SKIPPED {test}: {why}. !!!\n");
}

const GET_ASSETS: &str = "Set KUBEBUILDER_ASSETS to a directory holding kube-apiserver, etcd \
     and kubectl: the Kubernetes release binaries, or `setup-envtest use`";

/// The tool `name` for `test`, or `None` after a loud notice (see
/// [`find_tool`]); under `CI=true` a missing tool fails the test instead.
pub fn require_tool(test: &str, name: &str) -> Option<PathBuf> {
    match find_tool(name) {
        Ok(p) => Some(p),
        Err(why) => {
            skip(test, &format!("{why}. {GET_ASSETS}"));
            None
        }
    }
}

/// What a control plane is started from.
#[derive(Debug, Clone)]
pub struct Assets {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
    /// Cilium's `cilium.io/v2` CRDs, one YAML file each.
    pub crds: PathBuf,
}

impl Assets {
    /// Every binary ([`find_tool`]) and the CRDs, or everything missing.
    pub fn find() -> std::result::Result<Assets, String> {
        let tools: Vec<_> = ["kube-apiserver", "etcd", "kubectl"]
            .into_iter()
            .map(find_tool)
            .collect();
        let crds = std::env::var_os("CILIUM_CRDS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| shared_k8s().join("crds/v2"));
        let mut missing: Vec<String> = tools.iter().filter_map(|t| t.clone().err()).collect();
        if !crds.join("ciliumendpoints.yaml").is_file() {
            missing.push(format!(
                "no Cilium CRDs in {} (set CILIUM_CRDS_DIR to Cilium's \
                 pkg/k8s/apis/cilium.io/client/crds/v2)",
                crds.display()
            ));
        }
        if !missing.is_empty() {
            return Err(missing.join("; "));
        }
        let mut tools = tools.into_iter().map(|t| t.unwrap_or_default());
        Ok(Assets {
            kube_apiserver: tools.next().unwrap_or_default(),
            etcd: tools.next().unwrap_or_default(),
            kubectl: tools.next().unwrap_or_default(),
            crds,
        })
    }

    /// The assets for `test`, which also needs root (network namespaces);
    /// `None` after a loud notice when either is missing, a failure under
    /// `CI=true`.
    pub fn require(test: &str) -> Option<Assets> {
        if !nix::unistd::Uid::effective().is_root() {
            skip(
                test,
                "needs root (a network namespace for the API server). Run `sudo make test`",
            );
            return None;
        }
        match Assets::find() {
            Ok(a) => Some(a),
            Err(why) => {
                skip(test, &format!("{why}. {GET_ASSETS}"));
                None
            }
        }
    }
}

/// The network namespace a control plane runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// A new namespace with only a loopback, gone with the control plane.
    Own,
    /// The namespace of this name (`/run/netns/NAME`), which the caller
    /// built and removes: a host on the lab's underlay, say.
    Named(String),
    /// The namespace of the thread that calls [`KubeApi::start`].
    Current,
}

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    pub netns: Netns,
    /// The API server's address in the namespace, in its certificate.
    pub address: IpAddr,
    /// The API server's port.
    pub port: u16,
    /// etcd's client port on the namespace's loopback (its peer port is the
    /// next one).
    pub etcd_port: u16,
    /// Flags added to kube-apiserver's (`--watch-cache=false`, ...).
    pub apiserver_args: Vec<String>,
    /// Apply Cilium's `cilium.io/v2` CRDs and wait until they are served.
    pub cilium_crds: bool,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            netns: Netns::Own,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 6443,
            etcd_port: 2379,
            apiserver_args: Vec::new(),
            cilium_crds: true,
        }
    }
}

/// How long a start took, from etcd's start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub etcd_healthy: Duration,
    /// `/readyz` answered `ok`.
    pub ready: Duration,
    /// `/openapi/v2` served (kubectl's validation needs it).
    pub openapi: Duration,
    /// Cilium's CRDs established and their kinds served, when applied.
    pub crds: Option<Duration>,
}

impl fmt::Display for Timings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "etcd healthy {:.2} s, /readyz {:.2} s, OpenAPI {:.2} s",
            self.etcd_healthy.as_secs_f64(),
            self.ready.as_secs_f64(),
            self.openapi.as_secs_f64()
        )?;
        if let Some(crds) = self.crds {
            write!(f, ", CRDs served {:.2} s", crds.as_secs_f64())?;
        }
        Ok(())
    }
}

/// Resident memory of a process, in bytes: now and its peak.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss: u64,
    pub peak: u64,
}

/// Resident memory of etcd and of the API server (`None`: not running).
#[derive(Debug, Clone, Copy)]
pub struct Rss {
    pub etcd: Option<Memory>,
    pub apiserver: Option<Memory>,
}

impl fmt::Display for Rss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |m: Option<Memory>| match m {
            Some(m) => format!("{} MiB (peak {} MiB)", m.rss >> 20, m.peak >> 20),
            None => "not running".into(),
        };
        write!(
            f,
            "etcd {}, kube-apiserver {}",
            mib(self.etcd),
            mib(self.apiserver)
        )
    }
}

/// Where control planes keep their state, one directory each.
fn state_root() -> PathBuf {
    std::env::temp_dir().join("cilium-mcast-egress-kube")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// etcd and kube-apiserver, running. Dropping it stops both and removes
/// their state.
pub struct KubeApi {
    assets: Assets,
    opts: KubeOptions,
    dir: PathBuf,
    netns: File,
    timings: Timings,
    etcd: Mutex<Option<Child>>,
    apiserver: Mutex<Option<Child>>,
    torn_down: AtomicBool,
    /// Starts the processes, so that they die with it (and the process)
    /// rather than with whichever thread asked for them.
    spawner: Spawner,
}

/// What is being waited for, at most.
const START_TIMEOUT: Duration = Duration::from_secs(90);

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KubeApi {
    /// Start etcd and the API server as `opts` says and wait until it
    /// answers `/readyz` and serves OpenAPI (and, if asked, Cilium's CRDs).
    /// Stopped again if any step fails.
    pub fn start(assets: &Assets, opts: KubeOptions) -> Result<KubeApi> {
        reap_stale();
        let name = format!(
            "k{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let netns = match &opts.netns {
            Netns::Own => new_netns()?,
            Netns::Named(name) => {
                let path = Path::new("/run/netns").join(name);
                File::open(&path).map_err(io_err(format!("opening {}", path.display())))?
            }
            Netns::Current => File::open("/proc/thread-self/ns/net")
                .map_err(io_err("opening this thread's network namespace"))?,
        };
        let spawner = Spawner::new()?;
        let dir = state_root().join(name);
        fs::create_dir_all(dir.join("pki"))
            .map_err(io_err(format!("creating {}", dir.display())))?;
        // From here on, dropping `api` removes what was made.
        let mut api = KubeApi {
            assets: assets.clone(),
            opts,
            dir,
            netns,
            timings: Timings::default(),
            etcd: Mutex::new(None),
            apiserver: Mutex::new(None),
            torn_down: AtomicBool::new(false),
            spawner,
        };
        api.write_pki()?;
        let admin = format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            base64(&read(&api.pki("admin.crt"))?),
            base64(&read(&api.pki("admin.key"))?)
        );
        api.write_kubeconfig(&api.kubeconfig(), "admin", &admin)?;
        let t0 = Instant::now();
        api.start_etcd()?;
        api.timings.etcd_healthy = t0.elapsed();
        api.start_apiserver()?;
        api.timings.ready = t0.elapsed();
        api.wait_openapi()?;
        api.timings.openapi = t0.elapsed();
        if api.opts.cilium_crds {
            api.apply_cilium_crds()?;
            api.timings.crds = Some(t0.elapsed());
        }
        Ok(api)
    }

    /// One control plane for the whole test process (default options),
    /// started by the first test that asks, stopped when the process exits.
    /// For tests that do not stop, restart or compact it. `None` after a
    /// loud notice when `test` cannot run here ([`Assets::require`]); a
    /// control plane that does not start fails every test that asks.
    pub fn shared(test: &str) -> Option<&'static KubeApi> {
        static SHARED: OnceLock<std::result::Result<KubeApi, String>> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(Ok(api)) = SHARED.get() {
                api.teardown();
            }
        }
        let assets = Assets::require(test)?;
        let started = SHARED.get_or_init(|| {
            let started =
                KubeApi::start(&assets, KubeOptions::default()).map_err(|e| e.to_string());
            if started.is_ok() {
                // SAFETY: registers a function without arguments that only
                // stops processes and removes a directory; it runs once, at
                // exit.
                unsafe {
                    libc::atexit(stop_shared);
                }
            }
            started
        });
        match started {
            Ok(api) => Some(api),
            Err(e) => panic!("{test}: the shared control plane did not start: {e}"),
        }
    }

    /// `https://ADDRESS:PORT`.
    pub fn server(&self) -> String {
        format!(
            "https://{}",
            SocketAddr::new(self.opts.address, self.opts.port)
        )
    }

    /// An admin kubeconfig (a client certificate of `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The CA that signed the API server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.pki("ca.crt")
    }

    /// The state directory (PKI, etcd's data, `logs/`, kubeconfigs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long the start took.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Memory of etcd and the API server now.
    pub fn rss(&self) -> Rss {
        let of = |child: &Mutex<Option<Child>>| lock(child).as_ref().and_then(|c| memory(c.id()));
        Rss {
            etcd: of(&self.etcd),
            apiserver: of(&self.apiserver),
        }
    }

    /// The last lines of etcd's (`"etcd"`) or the API server's
    /// (`"kube-apiserver"`) log.
    pub fn log_tail(&self, which: &str) -> String {
        let text = fs::read_to_string(self.log_path(which)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Put the calling thread into the control plane's network namespace:
    /// sockets it opens from now on, wherever they are used, reach the API
    /// server at [`KubeApi::server`]. For a thread of its own.
    pub fn enter_netns(&self) -> Result<()> {
        nix::sched::setns(&self.netns, CloneFlags::CLONE_NEWNET).map_err(|source| LabError::Sys {
            what: "entering the API server's network namespace".into(),
            source,
        })
    }

    /// A descriptor of the control plane's network namespace, for threads
    /// and processes of the caller's (`setns(2)` it).
    pub fn netns(&self) -> Result<File> {
        self.netns
            .try_clone()
            .map_err(io_err("duplicating the namespace's descriptor"))
    }

    /// Run `f` on a thread in the control plane's network namespace.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| self.enter_netns().map(|()| f()))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `program`, to be run in the control plane's network namespace (a
    /// daemon under test, a client), with no signal blocked.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        let ns = self.netns()?;
        let mut cmd = Command::new(program);
        // SAFETY: sigprocmask(2) and setns(2) are async-signal-safe; the
        // descriptor was opened before the fork.
        unsafe {
            cmd.pre_exec(move || {
                crate::unblock_signals()?;
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        Ok(cmd)
    }

    /// `kubectl ARGS` as admin: its stdout, or an error with its output.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_as(&self.kubeconfig(), args, None)
    }

    /// `kubectl ARGS` with `kubeconfig` (a ServiceAccount's, say), `stdin`
    /// fed to it.
    pub fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String> {
        let mut cmd = self.command(&self.assets.kubectl)?;
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .env("KUBECACHEDIR", self.dir.join("kube-cache"))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(io_err("running kubectl"))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(io_err("writing to kubectl"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(io_err("running kubectl"))?;
        crate::stdout_of("kubectl", args, &out)
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.kubectl_as(&self.kubeconfig(), &["apply", "-f", "-"], Some(yaml))
    }

    /// `kubectl delete WHAT` (`["ciliumnode", "node-a"]`,
    /// `["-f", "-"]` is not supported: name the objects).
    pub fn delete(&self, what: &[&str]) -> Result<String> {
        let mut args = vec!["delete"];
        args.extend_from_slice(what);
        self.kubectl(&args)
    }

    /// `kubectl patch WHAT --type=merge -p PATCH`: a JSON merge patch of
    /// one object (`["ciliumendpoint", "pod-a", "-n", "media"]`).
    pub fn patch(&self, what: &[&str], merge_patch: &str) -> Result<String> {
        let mut args = vec!["patch"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["--type=merge", "-p", merge_patch]);
        self.kubectl(&args)
    }

    /// Namespace `namespace` and ServiceAccount `name` in it, created unless
    /// they exist (without a controller-manager, not even `default` has its
    /// `default` ServiceAccount).
    pub fn ensure_service_account(&self, namespace: &str, name: &str) -> Result<()> {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        ))
        .map(drop)
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name`
    /// with a token from the TokenRequest API (`kubectl create token`),
    /// valid for `valid`. The ServiceAccount must exist.
    pub fn token_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        valid: Duration,
    ) -> Result<PathBuf> {
        let duration = format!("--duration={}s", valid.as_secs().max(600));
        let token = self.kubectl(&["create", "token", name, "-n", namespace, &duration])?;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        self.write_kubeconfig(
            &path,
            &format!("system:serviceaccount:{namespace}:{name}"),
            &format!("    token: {}\n", token.trim()),
        )?;
        Ok(path)
    }

    /// Stop the API server (SIGTERM; SIGKILL after 15 s); etcd keeps
    /// running.
    pub fn stop_apiserver(&self) -> Result<()> {
        stop(&self.apiserver, "kube-apiserver")
    }

    /// Start the API server again on etcd's data and wait for `/readyz`;
    /// returns when it answered.
    pub fn start_apiserver(&self) -> Result<Instant> {
        let mut cmd = self.daemon_command(&self.assets.kube_apiserver.clone(), "kube-apiserver")?;
        let pki = |f: &str| self.pki(f).display().to_string();
        cmd.arg(format!(
            "--etcd-servers=http://127.0.0.1:{}",
            self.opts.etcd_port
        ))
        .arg(format!("--bind-address={}", self.opts.address))
        .arg(format!("--advertise-address={}", self.opts.address))
        .arg(format!("--secure-port={}", self.opts.port))
        .arg(format!("--tls-cert-file={}", pki("apiserver.crt")))
        .arg(format!("--tls-private-key-file={}", pki("apiserver.key")))
        .arg(format!("--client-ca-file={}", pki("ca.crt")))
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!("--service-account-key-file={}", pki("sa.pub")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            pki("sa.key")
        ))
        .arg("--authorization-mode=RBAC")
        .arg("--service-cluster-ip-range=10.96.0.0/16")
        .arg("--allow-privileged=true")
        .arg(format!(
            "--cert-dir={}",
            self.dir.join("kas-certs").display()
        ))
        // Without it, a stop waits a minute for every open watch to go
        // away by itself instead of ending them.
        .arg("--shutdown-watch-termination-grace-period=2s")
        .args(&self.opts.apiserver_args);
        let child = self
            .spawner
            .spawn(cmd)
            .map_err(io_err("starting kube-apiserver"))?;
        *lock(&self.apiserver) = Some(child);
        self.wait_ready()
    }

    /// Stop the API server and start it again on the same data; returns
    /// when it answered `/readyz`.
    pub fn restart_apiserver(&self) -> Result<Instant> {
        self.stop_apiserver()?;
        self.start_apiserver()
    }

    /// Stop the API server for `away`, then start it again; returns when it
    /// answered `/readyz`.
    pub fn stop_apiserver_for(&self, away: Duration) -> Result<Instant> {
        self.stop_apiserver()?;
        std::thread::sleep(away);
        self.start_apiserver()
    }

    /// Stop etcd (SIGTERM); the API server stays up, failing.
    pub fn stop_etcd(&self) -> Result<()> {
        stop(&self.etcd, "etcd")
    }

    /// Start etcd on its data and wait until it is healthy.
    pub fn start_etcd(&self) -> Result<()> {
        let port = self.opts.etcd_port;
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", port + 1);
        let mut cmd = self.daemon_command(&self.assets.etcd.clone(), "etcd")?;
        cmd.args(["--name", "default", "--data-dir"])
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(["--listen-metrics-urls", ""]);
        let child = self.spawner.spawn(cmd).map_err(io_err("starting etcd"))?;
        *lock(&self.etcd) = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let health = self.etcd_http("GET", "/health", None);
            if matches!(&health, Ok((200, body)) if body.contains("\"true\"")) {
                return Ok(());
            }
            self.alive(&self.etcd, "etcd")?;
            if Instant::now() > deadline {
                return Err(self.timeout("etcd to be healthy", "etcd"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop etcd and start it again on the same data.
    pub fn restart_etcd(&self) -> Result<()> {
        self.stop_etcd()?;
        self.start_etcd()
    }

    /// etcd's current revision (every resourceVersion the API server hands
    /// out is one).
    pub fn etcd_revision(&self) -> Result<u64> {
        // A range over the empty key answers with the header alone.
        let body = self.etcd_json("/v3/kv/range", r#"{"key":"AA=="}"#)?;
        body["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| LabError::Command {
                cmd: "etcd /v3/kv/range".into(),
                detail: format!("no revision in {body}"),
            })
    }

    /// Compact etcd's history at its current revision, as the API server
    /// does every five minutes: every resourceVersion before it is gone
    /// from etcd. Returns the revision.
    pub fn compact_etcd(&self) -> Result<u64> {
        let revision = self.etcd_revision()?;
        self.etcd_json(
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        )?;
        Ok(revision)
    }

    /// Apply every CRD in the assets' CRD directory (server-side: some are
    /// too large for the last-applied annotation) and wait until each is
    /// established and the three kinds the sidecar reads are served.
    pub fn apply_cilium_crds(&self) -> Result<()> {
        let dir = self.assets.crds.display().to_string();
        self.kubectl(&["apply", "--server-side", "-f", &dir])?;
        self.kubectl(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            "-f",
            &dir,
        ])?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let discovery = self.kubectl(&["get", "--raw", "/apis/cilium.io/v2"]);
            let openapi = self.kubectl(&["get", "--raw", "/openapi/v3/apis/cilium.io/v2"]);
            if let (Ok(d), Ok(_)) = (&discovery, &openapi) {
                let served = [
                    "ciliumegressgatewaypolicies",
                    "ciliumnodes",
                    "ciliumendpoints",
                ]
                .iter()
                .all(|k| d.contains(&format!("\"name\":\"{k}\"")));
                if served {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(self.timeout("Cilium's kinds to be served", "kube-apiserver"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pki(&self, file: &str) -> PathBuf {
        self.dir.join("pki").join(file)
    }

    fn log_path(&self, which: &str) -> PathBuf {
        self.dir.join(format!("{which}.log"))
    }

    /// A CA; the API server's serving certificate for every address its
    /// clients use; an admin client certificate (`O=system:masters`); the
    /// service-account key pair. EC P-256 keys, quick to make.
    fn write_pki(&self) -> Result<()> {
        let dir = self.dir.join("pki");
        let openssl = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .output()
                .map_err(io_err("running openssl"))?;
            if !out.status.success() {
                return Err(LabError::Command {
                    cmd: format!("openssl {}", args.join(" ")),
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
            Ok(())
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut args = vec!["req", "-x509"];
        args.extend_from_slice(&ec);
        args.extend_from_slice(&[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "7",
            "-subj",
            "/CN=test-ca",
        ]);
        openssl(&args)?;
        let mut sans = vec![
            format!("IP:{}", self.opts.address),
            "IP:127.0.0.1".to_owned(),
            "IP:10.96.0.1".to_owned(),
            "DNS:localhost".to_owned(),
        ];
        for dns in [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            sans.push(format!("DNS:{dns}"));
        }
        sans.dedup();
        let write = |name: &str, text: &str| {
            fs::write(dir.join(name), text).map_err(io_err(format!("writing {name}")))
        };
        write(
            "serving.ext",
            &format!(
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth\nsubjectAltName={}\n",
                sans.join(",")
            ),
        )?;
        write(
            "client.ext",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=clientAuth\n",
        )?;
        for (name, subject, ext) in [
            ("apiserver", "/CN=kube-apiserver", "serving.ext"),
            ("admin", "/O=system:masters/CN=test-admin", "client.ext"),
        ] {
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
            );
            let mut args = vec!["req"];
            args.extend_from_slice(&ec);
            args.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", subject]);
            openssl(&args)?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "7",
                "-extfile",
                ext,
                "-out",
                &crt,
            ])?;
        }
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-out",
            "sa.key",
        ])?;
        openssl(&["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
    }

    /// A kubeconfig at `path` for user `user`, whose credentials are the
    /// `user:` lines given.
    fn write_kubeconfig(&self, path: &Path, user: &str, credentials: &str) -> Result<()> {
        let ca = base64(&read(&self.ca_file())?);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    \
             server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: \"{user}\"\n  \
             user:\n{credentials}contexts:\n- name: test\n  context:\n    cluster: test\n    \
             user: \"{user}\"\ncurrent-context: test\n",
            self.server()
        );
        fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))
    }

    /// `program` as a daemon of the control plane: in its namespace, its
    /// output appended to `logs/WHICH.log`, killed when the test process
    /// dies.
    fn daemon_command(&self, program: &Path, which: &str) -> Result<Command> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(which))
            .map_err(io_err(format!("opening {which}'s log")))?;
        let log2 = log
            .try_clone()
            .map_err(io_err(format!("opening {which}'s log")))?;
        let mut cmd = self.command(program)?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        // SAFETY: prctl(2) is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Wait until the API server answers `/readyz` with `ok`.
    fn wait_ready(&self) -> Result<Instant> {
        let addr = SocketAddr::new(self.opts.address, self.opts.port);
        let deadline = Instant::now() + START_TIMEOUT;
        // First the port, cheaply; then kubectl, which speaks TLS.
        loop {
            let open = self.in_netns(|| {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })?;
            if open {
                break;
            }
            self.alive(&self.apiserver, "kube-apiserver")?;
            if Instant::now() > deadline {
                return Err(self.timeout("kube-apiserver to listen", "kube-apiserver"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        loop {
            if matches!(self.kubectl(&["get", "--raw", "/readyz"]), Ok(ok) if ok.trim() == "ok") {
                return Ok(Instant::now());
            }
            self.alive(&self.apiserver, "kube-apiserver")?;
            if Instant::now() > deadline {
                return Err(self.timeout("kube-apiserver's /readyz", "kube-apiserver"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_openapi(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while self.kubectl(&["get", "--raw", "/openapi/v2"]).is_err() {
            self.alive(&self.apiserver, "kube-apiserver")?;
            if Instant::now() > deadline {
                return Err(self.timeout("kube-apiserver's OpenAPI", "kube-apiserver"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// An error unless `child` runs.
    fn alive(&self, child: &Mutex<Option<Child>>, which: &str) -> Result<()> {
        let exited = match lock(child).as_mut() {
            Some(c) => c.try_wait().ok().flatten().map(|s| s.to_string()),
            None => Some("not started".into()),
        };
        match exited {
            None => Ok(()),
            Some(status) => Err(LabError::Command {
                cmd: which.into(),
                detail: format!("exited ({status}); its log ends:\n{}", self.log_tail(which)),
            }),
        }
    }

    fn timeout(&self, what: &str, log: &str) -> LabError {
        LabError::Timeout {
            what: format!("{what}; {log}'s log ends:\n{}", self.log_tail(log)),
            secs: START_TIMEOUT.as_secs(),
        }
    }

    /// A request to etcd's JSON gateway from inside the namespace.
    fn etcd_http(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.opts.etcd_port);
        self.in_netns(|| http(addr, method, path, body))?
            .map_err(io_err(format!("etcd {path}")))
    }

    fn etcd_json(&self, path: &str, body: &str) -> Result<serde_json::Value> {
        let (status, text) = self.etcd_http("POST", path, Some(body))?;
        if status != 200 {
            return Err(LabError::Command {
                cmd: format!("etcd {path}"),
                detail: format!("{status}: {text}"),
            });
        }
        serde_json::from_str(&text).map_err(|e| LabError::Command {
            cmd: format!("etcd {path}"),
            detail: format!("{e}: {text}"),
        })
    }

    /// Stop both processes and remove the state; once.
    fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        for child in [&self.apiserver, &self.etcd] {
            if let Some(mut c) = lock(child).take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// SIGTERM `child` and wait for it; SIGKILL after 15 s.
fn stop(child: &Mutex<Option<Child>>, which: &str) -> Result<()> {
    let Some(mut c) = lock(child).take() else {
        return Ok(());
    };
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if c.try_wait()
            .map_err(io_err(format!("waiting for {which}")))?
            .is_some()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            c.wait().map_err(io_err(format!("waiting for {which}")))?;
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A new network namespace with its loopback up, held by the returned
/// descriptor alone: it goes when that and every process in it are gone.
fn new_netns() -> Result<File> {
    std::thread::spawn(|| -> Result<File> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|source| LabError::Sys {
            what: "unshare(CLONE_NEWNET)".into(),
            source,
        })?;
        let ns = File::open("/proc/thread-self/ns/net")
            .map_err(io_err("opening the new network namespace"))?;
        // Forked from this thread, `ip` starts in the new namespace.
        let out = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .stdin(Stdio::null())
            .output()
            .map_err(io_err("running ip"))?;
        if !out.status.success() {
            return Err(LabError::Command {
                cmd: "ip link set lo up".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(ns)
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread that starts processes and lives as long as its owner: a child
/// with `PR_SET_PDEATHSIG` dies with the thread that forked it, which must
/// therefore be neither a test's thread nor a passing one.
struct Spawner {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Spawner {
    fn new() -> Result<Spawner> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("kube-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map_err(io_err("starting the spawner thread"))?;
        Ok(Spawner {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn spawn(&self, mut cmd: Command) -> std::io::Result<Child> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(cmd.spawn());
        });
        let gone = || std::io::Error::other("the spawner thread is gone");
        lock(&self.jobs)
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        drop(lock(&self.jobs).take());
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

/// One HTTP/1.0 request to `addr`; status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(io_err(format!("reading {}", path.display())))
}

/// Standard base64 with padding, as kubeconfigs embed certificates.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `VmRSS` and `VmHWM` of process `pid`.
fn memory(pid: u32) -> Option<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// Remove the state directories of control planes whose process died (a
/// SIGKILLed test run); their processes died with it.
fn reap_stale() {
    let Ok(entries) = fs::read_dir(state_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix('k')
            .and_then(|r| r.split('x').next())
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(pid) = pid {
            if !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }
}
