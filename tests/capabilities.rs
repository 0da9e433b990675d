//! Least privilege, measured: the real daemon run by `setpriv` with exactly
//! a capability set (effective, permitted, inheritable, ambient and
//! bounding sets all reduced to it, uid 0 kept as in a container) loads,
//! pins, attaches every link, syncs, serves `/metrics` and is ready, and
//! adopts its pins on a restart; each capability of the set is needed:
//! without any one of them it is never ready, and it stays up retrying
//! the load, saying why. The test sets up the namespace and the BPF
//! filesystems as root; only the daemon runs reduced. Needs root.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{self, Daemon};
use common::node::OneCamera;

/// The minimal set, as `setpriv` names the capabilities (CAP_ dropped,
/// lower case), and what each is for (README "Capabilities").
const MINIMAL: &[&str] = &["bpf", "net_admin", "perfmon"];

/// Where the daemon serves (alone in its namespace).
const PROBE: &str = "127.0.0.1:9980";

/// How long a daemon under a set may take to become ready: on its own it
/// is ready in well under a second; the VM is shared with other builds.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// node-a with one camera pod and a manifests directory that makes node-a
/// its gateway ([`common::yaml::one_camera_cluster`]).
type Fixture = OneCamera;

/// `cmd` run by `setpriv` with exactly `caps`: the bounding set limits what
/// uid 0 gains at exec, the inheritable and ambient sets carry no more.
fn with_caps(caps: &[&str], cmd: &Command) -> Command {
    let list: String = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut wrapped = Command::new("setpriv");
    wrapped
        .arg(format!("--inh-caps={list}"))
        .arg(format!("--ambient-caps={list}"))
        .arg(format!("--bounding-set={list}"))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            wrapped.env(k, v);
        }
    }
    wrapped
}

/// The capability mask of `caps`, as /proc/PID/status shows it.
fn mask(caps: &[&str]) -> u64 {
    caps.iter()
        .map(|c| {
            1u64 << match *c {
                "dac_override" => 1,
                "net_admin" => 12,
                "net_raw" => 13,
                "sys_admin" => 21,
                "sys_resource" => 24,
                "perfmon" => 38,
                "bpf" => 39,
                other => panic!("no bit for {other}"),
            }
        })
        .fold(0, |a, b| a | b)
}

/// A field of /proc/`pid`/status as a hex mask.
fn cap_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:\t")))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.trim(), 16).expect("hex mask")
}

/// What a daemon under a set did.
enum Outcome {
    /// `/readyz` answered 200; the daemon is still running.
    Ready(Started),
    /// It exited before it was ready.
    Exited(std::process::ExitStatus, String),
    /// Still running, never ready: it failed to load the datapath
    /// [`RETRIED`] times, and retries.
    Retrying(Started),
    /// Still running, never ready within [`READY_WITHIN`].
    NotReady(String),
}

/// Failed loads after which a daemon that is not ready counts as retrying.
const RETRIED: f64 = 3.0;

/// `retries_total{component="datapath"}` of the daemon on [`PROBE`].
fn datapath_retries() -> Option<f64> {
    let (status, m) = daemon::http_get(PROBE, "/metrics")?;
    assert_eq!(status, 200, "{m}");
    daemon::sample(
        &m,
        "cilium_mcast_egress_retries_total",
        &[("component", "datapath")],
    )
}

struct Started {
    daemon: Daemon,
    pid: u32,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Start the daemon on the fixture under exactly `caps` and wait until it
/// is ready, exits, or [`READY_WITHIN`] passes.
fn start(fx: &Fixture, caps: &[&str]) -> Outcome {
    let mut cmd = daemon::command("node-a", fx.node.ours.path(), fx.node.cilium.path(), PROBE);
    cmd.arg("--manifests")
        .arg(fx.manifests.path())
        .args(["--resync-interval-ms", "200"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let mut child: Child = with_caps(caps, &cmd)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting setpriv");
    // Collected line by line; the thread ends when the pipe closes, so
    // joining it after the exit yields the whole log.
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        use std::io::BufRead;
        let sink = log.clone();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        })
    };
    let text = |log: &std::sync::Arc<std::sync::Mutex<Vec<String>>>| log.lock().unwrap().join("\n");
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            reader.join().expect("log reader");
            return Outcome::Exited(status, text(&log));
        }
        if daemon::http_status(PROBE, "/readyz") == Some(200) {
            let pid = child.id();
            return Outcome::Ready(Started {
                daemon: Daemon::from_child(child),
                pid,
                log,
            });
        }
        if datapath_retries().is_some_and(|n| n >= RETRIED) {
            let pid = child.id();
            return Outcome::Retrying(Started {
                daemon: Daemon::from_child(child),
                pid,
                log,
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            reader.join().expect("log reader");
            return Outcome::NotReady(text(&log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything the daemon does as root, under exactly `caps`: ready (first
/// sync done, every link attached), its capabilities exactly the set,
/// `/metrics` served with the sync's entry, `status` reading the pins
/// under the same set, and a restart that adopts the pins ready again.
fn assert_works_under(fx: &Fixture, caps: &[&str]) {
    let want = mask(caps);
    for round in ["first start", "restart on the same pins"] {
        let started = match start(fx, caps) {
            Outcome::Ready(s) => s,
            Outcome::Exited(status, log) => {
                panic!("{round} under {caps:?}: exited {status}:\n{log}")
            }
            Outcome::Retrying(s) => panic!(
                "{round} under {caps:?}: retrying the datapath:\n{}",
                s.log.lock().unwrap().join("\n")
            ),
            Outcome::NotReady(log) => panic!("{round} under {caps:?}: never ready:\n{log}"),
        };
        // setpriv execs the daemon: the child's pid is the daemon's.
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", started.pid)).expect("comm");
        assert_eq!(comm.trim(), "cilium-mcast-eg", "setpriv exec'd the daemon");
        for field in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
            assert_eq!(
                cap_field(started.pid, field),
                want,
                "{round}: {field} of the daemon is exactly {caps:?}"
            );
        }
        let (status, m) = daemon::http_get(PROBE, "/metrics").expect("/metrics answers");
        assert_eq!(status, 200, "{m}");
        assert_eq!(
            daemon::sample(&m, "cilium_mcast_egress_policy_entries", &[]),
            Some(1.0),
            "{round}: the sync wrote the pod's entry:\n{m}"
        );
        assert_eq!(
            daemon::sample(&m, "cilium_mcast_egress_attached_links", &[]),
            Some(3.0),
            "{round}: the pod's veth, the tunnel's ingress and egress:\n{m}"
        );
        let out = with_caps(
            caps,
            Command::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"))
                .arg("status")
                .arg("--bpffs-root")
                .arg(fx.node.ours.path())
                .args(["-o", "json"]),
        )
        .output()
        .expect("status");
        assert!(
            out.status.success(),
            "{round}: status under {caps:?}: {out:?}"
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
        assert!(json.is_object(), "{json}");
        let log = started.log.lock().unwrap().join("\n");
        assert!(!log.contains("ERROR"), "{round}: errors logged:\n{log}");
        started.daemon.stop();
    }
}

netns_test!(
    daemon_runs_and_restarts_under_exactly_the_minimal_set,
    Fixture::new,
    |fx| {
        assert_works_under(&fx, MINIMAL);
    }
);

/// What the kernel says when the daemon lacks one capability of the set,
/// as measured: each stops the load of the datapath, the first step.
const WITHOUT: &[(&str, &str)] = &[
    // No BPF at all without CAP_BPF (unprivileged BPF is off).
    ("bpf", "Couldn't load trivial BPF program"),
    // tc programs (SCHED_CLS) load only with CAP_NET_ADMIN.
    (
        "net_admin",
        "prog 'mcast_from_container': BPF program load failed: -EPERM",
    ),
    // Without CAP_PERFMON the verifier treats the loader as !root:
    // no arithmetic on packet pointers.
    ("perfmon", "pointer arithmetic with it prohibited for !root"),
];

/// Each capability of the set is needed: without it the daemon is never
/// ready. It does not exit (beside cilium-agent that would hold back the
/// agent's pod): it retries the load, `/healthz` answers 200, and `/readyz`
/// answers 503 naming the step that failed (the load); the log has the
/// error once and the kernel's reason, libbpf's messages printed with the
/// first failure only. The positive control (the whole set) runs first, on
/// a node of its own, in this same test.
#[test]
fn each_capability_of_the_set_is_needed() {
    if !common::privileged("each_capability_of_the_set_is_needed") {
        return;
    }
    common::in_new_netns(|| assert_works_under(&Fixture::new("caps-all"), MINIMAL));
    assert_eq!(
        WITHOUT.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        MINIMAL,
        "a measured failure for each capability of the set"
    );
    for (missing, reason) in WITHOUT {
        let caps: Vec<&'static str> = MINIMAL.iter().copied().filter(|c| c != missing).collect();
        let shown = caps.clone();
        let cap = format!("CAP_{}", missing.to_uppercase());
        // A node of its own for each: a half-done load must not help the
        // next attempt.
        common::in_new_netns(move || {
            let fx = Fixture::new(&format!("caps-no-{missing}"));
            let started = match start(&fx, &caps) {
                Outcome::Retrying(s) => s,
                Outcome::Ready(_) => panic!("ready without {cap}, under {shown:?}"),
                Outcome::Exited(status, log) => {
                    panic!("without {cap}: exited {status}, not retrying:\n{log}")
                }
                Outcome::NotReady(log) => {
                    panic!("without {cap}: never ready, but not retrying the load:\n{log}")
                }
            };
            let log = || started.log.lock().unwrap().join("\n");
            assert_eq!(
                daemon::http_status(PROBE, "/healthz"),
                Some(200),
                "without {cap}: alive"
            );
            let (status, body) = daemon::http_get(PROBE, "/readyz").expect("/readyz");
            assert_eq!(status, 503, "without {cap}: {body}");
            assert!(
                body.starts_with("datapath: loading the datapath"),
                "without {cap}: /readyz names the step:\n{body}"
            );
            let text = log();
            assert!(
                text.contains("loading the datapath"),
                "without {cap}: the error names the step:\n{text}"
            );
            let reasons = text.lines().filter(|l| l.contains(reason)).count();
            assert!(
                reasons > 0,
                "without {cap}: the kernel's reason {reason:?}:\n{text}"
            );
            let errors = text.lines().filter(|l| l.contains(" ERROR ")).count();
            assert_eq!(errors, 1, "without {cap}: the error once:\n{text}");
            // Two more failed loads print nothing of libbpf's again.
            common::wait_for("two more attempts", READY_WITHIN, || {
                datapath_retries().is_some_and(|n| n >= RETRIED + 2.0)
            });
            let text = log();
            assert_eq!(
                text.lines().filter(|l| l.contains(reason)).count(),
                reasons,
                "without {cap}: libbpf's messages once:\n{text}"
            );
            started.daemon.stop();
        });
    }
}
