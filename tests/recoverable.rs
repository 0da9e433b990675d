//! A failing part never ends the daemon. Beside cilium-agent, in its pod,
//! an exit would make that pod NotReady and hold back Cilium's rollout, so
//! every fault that can come right by itself is retried while the process
//! stays up, alive (`/healthz` 200) and saying why it is not ready
//! (`/readyz` 503 with the reason, `degraded` and `retries_total`, the log
//! once per error); and when the fault goes, the same process becomes ready
//! without a restart. Each test removes its fault in the same run: the
//! positive control. The real daemon, in a network namespace of its own
//! with BPF filesystems of its own. Needs root.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use libbpf_rs::{MapHandle, MapType};

use cilium_mcast_egress::datapath::maps::{Maps, NODES_MAP, POLICY_MAP};
use cilium_mcast_egress::datapath::Paths;
use common::apiserver::ApiServer;
use common::daemon::{self, sample, Running};
use common::node::OneCamera;
use common::yaml;

/// Where the daemon serves (alone in its namespace).
const PROBE: &str = "127.0.0.1:9980";

/// The daemon becomes ready this soon after its fault goes: the longest
/// backoff (10 s), a load, a sync; on a VM shared with other builds.
const RECOVERS_WITHIN: Duration = Duration::from_secs(30);

/// node-a with one camera pod and a manifests directory that makes node-a
/// its gateway ([`yaml::one_camera_cluster`]).
type Fixture = OneCamera;

impl OneCamera {
    /// The daemon on the manifests, our BPF filesystem at `bpffs`, passing
    /// every 200 ms; `extra` flags added.
    fn start(&self, bpffs: &Path, extra: &[&str]) -> Running {
        Running::start(
            self.manifests.path(),
            bpffs,
            self.node.cilium.path(),
            PROBE,
            200,
            extra,
        )
    }
}

/// `name{component=...}` in a scrape now; None when it does not answer.
fn component_metric(d: &Running, name: &str, component: &str) -> Option<f64> {
    let (status, m) = d.http_get("/metrics")?;
    assert_eq!(status, 200, "{m}");
    sample(
        &m,
        &format!("cilium_mcast_egress_{name}"),
        &[("component", component)],
    )
}

/// Wait until the daemon has failed at `component` at least `attempts`
/// times, asserting all along that it is still running and alive; then
/// `/readyz` must be 503 naming the fault with `reason`, and the log must
/// hold the error once (not once per attempt). Returns the `/readyz` body.
fn assert_retrying(d: &mut Running, component: &str, attempts: f64, reason: &str) -> String {
    let deadline = Instant::now() + RECOVERS_WITHIN;
    loop {
        if let Some(status) = d.exited() {
            panic!(
                "the daemon exited ({status}) while {component} failed:\n{}",
                d.log_text()
            );
        }
        let retries = component_metric(d, "retries_total", component).unwrap_or(0.0);
        if retries >= attempts {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{component}: {retries} attempts, not {attempts}:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        d.http_get("/healthz").map(|r| r.0),
        Some(200),
        "alive while {component} is retried"
    );
    assert_eq!(
        component_metric(d, "degraded", component),
        Some(1.0),
        "{component} degraded"
    );
    let (status, body) = d.http_get("/readyz").expect("/readyz answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(reason), "/readyz names {reason:?}:\n{body}");
    let errors: Vec<String> = d
        .log_lines(&format!("component=\"{component}\""))
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{component}'s error logged once over {attempts} attempts:\n{}",
        d.log_text()
    );
    body
}

/// Wait until `/readyz` answers 200, the daemon running all along; then
/// `component` is no longer degraded.
fn assert_recovers(d: &mut Running, component: &str) {
    let deadline = Instant::now() + RECOVERS_WITHIN;
    loop {
        if let Some(status) = d.exited() {
            panic!("the daemon exited ({status}):\n{}", d.log_text());
        }
        if d.http_get("/readyz").map(|r| r.0) == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready within {RECOVERS_WITHIN:?} of {component}'s fault going; /readyz {:?}:\n{}",
            d.http_get("/readyz"),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(component_metric(d, "degraded", component), Some(0.0));
}

/// The entries the daemon wrote under `bpffs`.
fn policy_entries(bpffs: &Path) -> usize {
    Maps::open_pinned(&Paths::new(bpffs))
        .expect("pinned maps")
        .policies()
        .expect("policy entries")
        .len()
}

/// Our BPF filesystem not mounted yet (as on a node where the daemon starts
/// before the mount): missing, then a plain directory, then mounted. SIGTERM
/// stops a daemon that is retrying at once.
#[test]
fn the_datapath_waits_for_its_bpf_filesystem() {
    if !common::privileged("the_datapath_waits_for_its_bpf_filesystem") {
        return;
    }
    common::in_new_netns(|| {
        let fx = Fixture::new("rec-bpffs");
        let late = common::Bpffs::later("rec-bpffs-late");
        let root = late.path().display().to_string();
        let reason = format!("datapath: loading the datapath: {root} is not on a BPF filesystem");

        // Missing: retried, reported, and SIGTERM stops it promptly.
        let mut d = fx.start(late.path(), &[]);
        assert_retrying(&mut d, "datapath", 2.0, &reason);
        let took = d.stop_within(Duration::from_secs(3));
        assert!(took < Duration::from_secs(3), "{took:?}");

        // A plain directory: still not a BPF filesystem.
        std::fs::create_dir_all(late.path()).expect("mkdir");
        let mut d = fx.start(late.path(), &[]);
        let body = assert_retrying(&mut d, "datapath", 3.0, &reason);
        assert!(
            body.contains("first sync not done"),
            "the other reasons too:\n{body}"
        );
        assert!(
            !late.path().join("tc").exists(),
            "nothing written outside a BPF filesystem"
        );

        // Mounted: the same process loads, syncs and is ready.
        late.mount();
        assert_recovers(&mut d, "datapath");
        assert_eq!(policy_entries(late.path()), 1, "the sync wrote the entry");
        let recovered = d.log_lines("recovered");
        assert!(
            recovered
                .iter()
                .any(|l| l.contains("component=\"datapath\"")),
            "{}",
            d.log_text()
        );
        d.stop();
    });
}

/// Another socket holds the metrics port: the datapath loads and syncs
/// meanwhile, the listener is retried, and it serves once the port is free.
#[test]
fn a_taken_metrics_port_is_retried_while_the_datapath_works() {
    if !common::privileged("a_taken_metrics_port_is_retried_while_the_datapath_works") {
        return;
    }
    common::in_new_netns(|| {
        let fx = Fixture::new("rec-port");
        let squatter = std::net::TcpListener::bind(PROBE).expect("taking the port");
        let mut d = fx.start(fx.node.ours.path(), &[]);

        // The data plane goes on: the entry is written while the port is
        // taken.
        common::wait_for("the entry", RECOVERS_WITHIN, || {
            Maps::open_pinned(&Paths::new(fx.node.ours.path()))
                .ok()
                .and_then(|m| m.policies().ok())
                .is_some_and(|p| p.len() == 1)
        });
        // Three failed binds: 250 + 500 + 1000 ms of backoff.
        std::thread::sleep(Duration::from_secs(2));
        assert!(d.exited().is_none(), "running:\n{}", d.log_text());
        let errors: Vec<String> = d
            .log_lines("component=\"http\"")
            .into_iter()
            .filter(|l| l.contains("ERROR"))
            .collect();
        assert_eq!(errors.len(), 1, "logged once:\n{}", d.log_text());
        assert!(
            errors[0].contains(&format!("binding {PROBE}")) && errors[0].contains("in use"),
            "{}",
            errors[0]
        );

        drop(squatter);
        assert_recovers(&mut d, "http");
        let retries = component_metric(&d, "retries_total", "http").expect("scrape");
        assert!(retries >= 3.0, "{retries} failed binds counted");
        d.stop();
    });
}

/// A kubeconfig whose API server is `server`.
fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {{server: '{server}'}}
contexts:
- name: lab
  context: {{cluster: lab, user: lab}}
current-context: lab
users:
- name: lab
  user: {{token: none}}
"
        ),
    )
    .expect("kubeconfig");
    path
}

/// No API server answers (a closed port): the daemon stays up, alive, and
/// says why in `/readyz`, the scrape and `status`; once an API server
/// answers on that port, the same process syncs and is ready.
#[test]
fn an_api_server_out_of_reach_is_waited_for() {
    if !common::privileged("an_api_server_out_of_reach_is_waited_for") {
        return;
    }
    common::in_new_netns(|| {
        const API: &str = "127.0.0.1:6443";
        let fx = Fixture::new("rec-kube");
        let config = kubeconfig(fx.manifests.path(), &format!("http://{API}"));
        let mut d = Running::spawn(
            daemon::command("node-a", fx.node.ours.path(), fx.node.cilium.path(), PROBE)
                .args(["--resync-interval-ms", "200"])
                .env("KUBECONFIG", &config),
            PROBE,
        );
        // Every kind's watch fails, each retried after the source's
        // backoff: three rounds of three. The source logs each kind's failure once.
        let deadline = Instant::now() + RECOVERS_WITHIN;
        let body = loop {
            assert!(d.exited().is_none(), "running:\n{}", d.log_text());
            let retries = component_metric(&d, "retries_total", "source").unwrap_or(0.0);
            let readyz = d.http_get("/readyz");
            if retries >= 9.0 {
                break readyz.expect("/readyz answers");
            }
            assert!(
                Instant::now() < deadline,
                "{retries} failed watches; /readyz {readyz:?}:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(body.0, 503, "{}", body.1);
        assert!(
            body.1.contains("kubernetes source: watch of Cilium")
                && body.1.contains("Connection refused"),
            "{}",
            body.1
        );
        assert_eq!(d.http_get("/healthz").map(|r| r.0), Some(200));
        assert_eq!(component_metric(&d, "degraded", "source"), Some(1.0));
        for kind in ["CiliumEgressGatewayPolicy", "CiliumNode", "CiliumEndpoint"] {
            let failed = d
                .log_lines("watch failed")
                .into_iter()
                .filter(|l| l.contains(&format!("kind=\"{kind}\"")))
                .count();
            assert_eq!(failed, 1, "{kind}'s failure logged once:\n{}", d.log_text());
        }
        // `status` reads the same reason from the pinned report.
        let out = Command::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"))
            .arg("status")
            .arg("--bpffs-root")
            .arg(fx.node.ours.path())
            .args(["-o", "json"])
            .output()
            .expect("status");
        assert!(out.status.success(), "{out:?}");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let not_ready = status["controller"]["not_ready"].to_string();
        assert!(
            not_ready.contains("kubernetes source: watch of Cilium"),
            "{status}"
        );

        // The API server answers: the same process lists, syncs, is ready.
        let api = ApiServer::start(API, &yaml::one_camera_cluster());
        assert_recovers(&mut d, "source");
        assert_eq!(policy_entries(fx.node.ours.path()), 1);
        assert!(
            !d.log_lines("watch recovered").is_empty(),
            "{}",
            d.log_text()
        );
        assert!(!api.requests.lock().unwrap().is_empty());
        d.stop();
        drop(api);
    });
}

/// A pinned map the daemon cannot adopt: first of another capacity than
/// asked for, then of another layout. Each is reported with both values
/// and retried, never an exit; `uninstall`, or the stray pin removed, lets
/// the same process load.
#[test]
fn a_pinned_map_it_cannot_adopt_is_reported_and_retried() {
    if !common::privileged("a_pinned_map_it_cannot_adopt_is_reported_and_retried") {
        return;
    }
    common::in_new_netns(|| {
        let fx = Fixture::new("rec-layout");
        let ours = fx.node.ours.path();
        let globals = Paths::new(ours).globals();

        // Pinned at the default capacity.
        let mut d = fx.start(ours, &[]);
        assert_recovers(&mut d, "datapath");
        d.stop();

        // Another capacity asked for: refused with both, retried. SIGTERM
        // while it retries stops it at once.
        let capacity = ["--policy-map-entries", "4096"];
        // Either policy map (both take the flag): the first one checked.
        let reason = format!("pinned map {}/mcast_egw_policy_hash_v", globals.display());
        let reason_values = "holds 65536 entries at most, and 4096 were asked for";
        let mut d = fx.start(ours, &capacity);
        let body = assert_retrying(&mut d, "datapath", 2.0, &reason);
        assert!(body.contains(reason_values), "{body}");
        d.stop_within(Duration::from_secs(3));
        let mut d = fx.start(ours, &capacity);
        let body = assert_retrying(&mut d, "datapath", 3.0, &reason);
        assert!(body.contains(reason_values), "{body}");
        // What the error says to do, while the daemon runs.
        let out = Command::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"))
            .arg("uninstall")
            .arg("--bpffs-root")
            .arg(ours)
            .output()
            .expect("uninstall");
        assert!(out.status.success(), "{out:?}");
        assert_recovers(&mut d, "datapath");
        let (_, m) = d.http_get("/metrics").expect("scrape");
        assert_eq!(
            sample(
                &m,
                "cilium_mcast_egress_map_capacity",
                &[("map", POLICY_MAP)]
            ),
            Some(4096.0),
            "{m}"
        );
        d.stop();

        // A stray map of another layout where the nodes map is pinned.
        let nodes = globals.join(NODES_MAP);
        std::fs::remove_file(&nodes).expect("unpinning the nodes map");
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let mut stray = MapHandle::create(MapType::Array, Some("stray"), 4, 4, 1, &opts)
            .expect("creating the stray map");
        stray.pin(&nodes).expect("pinning the stray map");
        drop(stray);
        let mut d = fx.start(ours, &capacity);
        let reason = format!("pinned map {} has another layout", nodes.display());
        assert_retrying(&mut d, "datapath", 3.0, &reason);
        std::fs::remove_file(&nodes).expect("removing the stray pin");
        assert_recovers(&mut d, "datapath");
        assert_eq!(policy_entries(ours), 1);
        d.stop();
    });
}

/// Input the daemon cannot use never stops it: a manifests directory that
/// is not there yet is waited for; a broken file and an invalid policy are
/// reported while the rest applies; the fixed file applies.
#[test]
fn bad_input_never_stops_the_daemon() {
    if !common::privileged("bad_input_never_stops_the_daemon") {
        return;
    }
    common::in_new_netns(|| {
        let fx = Fixture::new("rec-input");
        let dir = fx.manifests.path().join("not-yet");
        let mut d = Running::start(
            &dir,
            fx.node.ours.path(),
            fx.node.cilium.path(),
            PROBE,
            200,
            &[],
        );
        let reason = format!("manifests source: manifests directory {}", dir.display());
        assert_retrying(&mut d, "source", 3.0, &reason);

        // The directory appears: node-a, an invalid policy, a broken file.
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("node.yaml"), yaml::NODE_A).expect("node");
        std::fs::write(
            dir.join("bad-policy.yaml"),
            yaml::cameras("bad-prefix", "232.0.0.0/4", "a"),
        )
        .expect("policy");
        std::fs::write(dir.join("cameras.yaml"), "kind: [CiliumEndpoint\n").expect("broken");
        assert_recovers(&mut d, "source");
        let invalid = || {
            let (_, m) = d.http_get("/metrics").expect("scrape");
            sample(
                &m,
                "cilium_mcast_egress_invalid_policy",
                &[("policy", "bad-prefix")],
            )
        };
        common::wait_for("the invalid policy reported", RECOVERS_WITHIN, || {
            invalid() == Some(1.0)
        });
        assert!(
            !d.log_lines("cameras.yaml").is_empty(),
            "the broken file named:\n{}",
            d.log_text()
        );
        // Passes go on over the bad input: still up, alive, ready.
        std::thread::sleep(Duration::from_secs(1));
        assert!(d.exited().is_none(), "{}", d.log_text());
        assert_eq!(d.http_get("/healthz").map(|r| r.0), Some(200));
        assert_eq!(d.http_get("/readyz").map(|r| r.0), Some(200));

        // Fixed: the pod and the good policy apply.
        let pod = yaml::camera("cam-1", 1, "198.51.100.11", "192.0.2.10");
        let policy = yaml::cameras("cameras", "232.1.0.0/16", "a");
        std::fs::write(dir.join("cameras.yaml"), format!("{pod}---{policy}")).expect("fixed");
        common::wait_for("the fixed file's entry", RECOVERS_WITHIN, || {
            policy_entries(fx.node.ours.path()) == 1
        });
        d.stop();
    });
}
