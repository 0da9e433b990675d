//! `make e2e` (scripts/e2e-kind.sh) cannot run here: no kind, helm or
//! registry. What can be checked without them is checked: the script parses
//! (`bash -n`, and shellcheck when installed), its prerequisite check exits 2
//! naming every missing or too-old tool (the image's build tools too, unless
//! IMAGE is given; a Docker engine older than 23) before it changes
//! anything, its parsers read real iperf 2.1.8 output and sidecar metrics,
//! it deploys the same artifacts as `make e2e-local` (manifests/deploy),
//! loads the images through an archive when `kind load docker-image` fails
//! as in kind#3795, and its cluster, policy and publisher files agree with
//! each other and with the pins. Unprivileged; tests/e2e_kind_clean.rs runs
//! it as an unprivileged user with the real make, cargo and docker.

#[path = "common/repo.rs"]
mod repo;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use repo::{documents, read, root};

const SCRIPT: &str = "scripts/e2e-kind.sh";
const LIB: &str = "scripts/e2e-kind/lib.sh";
const HERE: &str = "scripts/e2e-kind";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value of `NAME=value` at the start of a line of the script.
fn pin(name: &str) -> String {
    let script = read(SCRIPT);
    let prefix = format!("{name}=");
    script
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{SCRIPT}: no {name}= line"))
        .to_string()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

fn bash() -> PathBuf {
    which("bash").expect("bash on PATH")
}

/// A directory that is a PATH of its own: symlinks to the named host tools
/// and small stub scripts.
struct FakePath {
    dir: PathBuf,
}

impl FakePath {
    fn new(tag: &str, host_tools: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("e2e-kind-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for t in host_tools {
            let target = which(t).unwrap_or_else(|| panic!("{t} on PATH"));
            symlink(target, dir.join(t)).unwrap();
        }
        FakePath { dir }
    }

    /// A stub: `/bin/sh` running `body` (builtins only: PATH is this dir).
    fn stub(&self, name: &str, body: &str) {
        let p = self.dir.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Runs the script with PATH = this directory only, and `env`.
    fn run(&self, env: &[(&str, &str)]) -> Output {
        Command::new(bash())
            .arg(root().join(SCRIPT))
            .env_clear()
            .env("PATH", &self.dir)
            .envs(env.iter().copied())
            .current_dir(root())
            .output()
            .expect("running the script")
    }
}

impl Drop for FakePath {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_script_and_its_helpers_parse() {
    for f in [SCRIPT, LIB] {
        let out = Command::new(bash())
            .arg("-n")
            .arg(root().join(f))
            .output()
            .unwrap();
        assert!(out.status.success(), "bash -n {f}:\n{}", text(&out));
    }
}

#[test]
fn shellcheck_is_clean() {
    let Some(shellcheck) = which("shellcheck") else {
        // CI installs it (scripts/install-deps.sh): there it must run.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI=true and no shellcheck on PATH: scripts/install-deps.sh installs it"
        );
        eprintln!(
            "\n!!! SKIPPED shellcheck_is_clean: no shellcheck on PATH \
             (apt-get install shellcheck); bash -n still ran. !!!\n"
        );
        return;
    };
    let out = Command::new(shellcheck)
        .args(["-x", SCRIPT, LIB])
        // What `make image` runs, on users' machines too.
        .args([
            "scripts/ensure-deps.sh",
            "scripts/install-deps.sh",
            "scripts/docker-engine.sh",
            "scripts/build-image.sh",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "shellcheck:\n{}", text(&out));
}

/// What building the image needs on PATH (scripts/ensure-deps.sh build):
/// named when IMAGE is not given.
const BUILD_TOOLS: &[&str] = &["make", "cargo", "rustc", "cc", "clang", "pkg-config"];

/// Nothing of docker, kind, helm, kubectl, make or the image's build tools:
/// exit 2, each named in one message, and nothing run (the script prints
/// only the message).
#[test]
fn missing_tools_are_all_named_and_nothing_runs() {
    let path = FakePath::new("bare", &[]);
    let out = path.run(&[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(out.stdout.is_empty(), "printed to stdout: {all}");
    for t in ["docker", "kind", "helm", "kubectl"]
        .iter()
        .chain(BUILD_TOOLS)
    {
        assert!(
            all.contains(&format!("- {t}: not found on PATH")),
            "{t} not named:\n{all}"
        );
    }
    // Where each build tool comes from.
    assert!(all.contains(
        "- cargo: not found on PATH (a Rust toolchain, 1.82 or newer: https://rustup.rs"
    ));
    assert!(all.contains(
        "- clang: not found on PATH (compiles the BPF programs; Debian/Ubuntu package clang)"
    ));
    assert!(all.contains("nothing was changed"), "{all}");
    assert!(
        all.contains("IMAGE=name:tag runs an image built elsewhere"),
        "{all}"
    );
    // One message: a single header, every problem under it.
    assert_eq!(all.matches("missing prerequisites").count(), 1, "{all}");

    // With IMAGE given, `make image` is not run, so neither make nor the
    // build's tools are needed.
    let out = path.run(&[("IMAGE", "cilium-mcast-egress:0.1.0")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    for t in BUILD_TOOLS {
        assert!(
            !all.contains(&format!("- {t}:")),
            "{t} named although IMAGE is set:\n{all}"
        );
    }
    assert!(all.contains("- kind: not found on PATH"), "{all}");
}

/// Present but too old, and a docker whose engine does not answer: each
/// named with what it has and what is needed.
#[test]
fn old_tools_and_a_stopped_engine_are_named() {
    let path = FakePath::new("old", &[]);
    path.stub("kind", "echo 'kind v0.20.0 go1.20.4 linux/amd64'");
    path.stub("helm", "echo 'v3.11.3+g323249'");
    path.stub(
        "kubectl",
        "echo 'Client Version: v1.30.2'; echo 'Kustomize Version: v5.0.4'",
    );
    path.stub(
        "docker",
        "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2; exit 1",
    );
    // IMAGE given: only the cluster's tools are checked.
    let image = [("IMAGE", "cilium-mcast-egress:0.1.0")];
    let out = path.run(&image);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let min_helm = pin("MIN_HELM");
    let min_kubectl = pin("MIN_KUBECTL");
    let kind = pin("KIND_VERSION");
    for want in [
        format!("- kind: version 0.20.0, need v{kind} or newer"),
        format!("- helm: version 3.11.3, need v{min_helm} or newer"),
        format!("- kubectl: version 1.30.2, need v{min_kubectl} or newer"),
        "- docker: the engine does not answer (docker info: Cannot connect to the Docker daemon"
            .to_string(),
    ] {
        assert!(all.contains(&want), "missing {want:?} in:\n{all}");
    }
    assert!(!all.contains("make:"), "{all}");

    // Current tools, but an engine on a kernel without tcx.
    path.stub("kind", &format!("echo 'kind v{kind} go1.24.2 linux/amd64'"));
    path.stub("helm", "echo 'v3.17.3+ge4da497'");
    path.stub("kubectl", "echo 'Client Version: v1.33.1'");
    path.stub("docker", &stub_engine("6.1.0-28-amd64", "28.2.2"));
    let out = path.run(&image);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("- docker: the engine's kernel is 6.1.0, the sidecar needs 6.6 or newer"),
        "{all}"
    );
    assert_eq!(
        all.lines().filter(|l| l.starts_with("  - ")).count(),
        1,
        "only the kernel should be named:\n{all}"
    );
    assert!(!all.contains("must not run"), "{all}");
}

/// A docker stub whose engine answers `docker info` with `kernel` and
/// `docker version` with `server`, and lets nothing else run.
fn stub_engine(kernel: &str, server: &str) -> String {
    format!(
        "case \"$1\" in\n\
         info) echo '{kernel}' ;;\n\
         version) echo '{server}' ;;\n\
         *) echo \"docker $* must not run\" >&2; exit 99 ;;\n\
         esac"
    )
}

/// Docker before 23 gives kind's privileged nodes no CAP_BPF or CAP_PERFMON
/// (moby/moby#42601): the engine's version is a prerequisite, with the
/// reason. Docker 23 itself passes the check (the run then stops at the next
/// thing it finds, a network left from an earlier run).
#[test]
fn a_docker_engine_older_than_23_is_named_with_the_reason() {
    let path = FakePath::new("olddocker", &[]);
    let kind = pin("KIND_VERSION");
    path.stub("kind", &format!("echo 'kind v{kind} go1.24.2 linux/amd64'"));
    path.stub("helm", "echo 'v3.17.3+ge4da497'");
    path.stub("kubectl", "echo 'Client Version: v1.33.1'");
    let image = [("IMAGE", "cilium-mcast-egress:0.1.0")];
    assert_eq!(pin("MIN_DOCKER"), "23.0");

    for old in ["20.10.24+dfsg1", "22.06.0-beta.0"] {
        path.stub("docker", &stub_engine("6.18.0-cloud-amd64", old));
        let out = path.run(&image);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        let v = old.split(['+', '-']).next().unwrap();
        let want = format!(
            "- docker: the engine is Docker {v}; before Docker 23.0 privileged containers such as kind's nodes get no CAP_BPF or CAP_PERFMON (moby/moby#42601)"
        );
        assert!(all.contains(&want), "no {want:?} in:\n{all}");
        assert_eq!(
            all.lines().filter(|l| l.starts_with("  - ")).count(),
            1,
            "only the engine's version should be named:\n{all}"
        );
        assert!(all.contains("Docker 23.0 or newer"), "{all}");
        assert!(!all.contains("must not run"), "{all}");
    }

    // The control: Docker 23 and 29 pass the check, and the run goes on to
    // its next step (the docker network), which the stub says exists.
    for new in ["23.0.0", "29.0.1"] {
        path.stub(
            "docker",
            &format!(
                "case \"$1\" in\n\
                 info) echo '6.18.0-cloud-amd64' ;;\n\
                 version) echo '{new}' ;;\n\
                 network) exit 0 ;;\n\
                 *) echo \"docker $* must not run\" >&2; exit 99 ;;\n\
                 esac"
            ),
        );
        let out = path.run(&image);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(!all.contains("missing prerequisites"), "{new}:\n{all}");
        assert!(
            all.contains("the docker network mcast-e2e exists already"),
            "{new}:\n{all}"
        );
    }
}

#[test]
fn a_bad_mode_is_refused_before_anything() {
    let path = FakePath::new("mode", &[]);
    let out = path.run(&[("MODE", "helm")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("MODE must be sidecar or daemonset"));
}

/// Runs `snippet` in bash after sourcing the helpers; its stdout.
fn lib(snippet: &str) -> String {
    let out = Command::new(bash())
        .arg("-c")
        .arg(format!("set -euo pipefail; source {LIB}; {snippet}"))
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{snippet}:\n{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// iperf 2.1.8's real output for an SSM stream (captured from the pinned
/// Debian package: 401 data datagrams plus the final one on the wire).
const IPERF_CLIENT: &str = "\
------------------------------------------------------------
Client connecting to 232.1.1.1, UDP port 5001 with pid 20766 (1 flows)
TOS set to 0x0 (Nagle on)
Sending 1316 byte datagrams, IPG target: 5020.14 us (kalman adjust)
UDP buffer size:  208 KByte (default)
------------------------------------------------------------
[  1] local 192.0.2.1%va port 40278 connected with 232.1.1.1 port 5001 (sock=3) on 2026-11-30 18:51:03 (UTC)
[ ID] Interval            Transfer     Bandwidth      Write/Err  PPS
[  1] 0.0000-2.0112 sec   517 KBytes  2.10 Mbits/sec  401/0      200 pps
[  1] Sent 403 datagrams
";

const IPERF_SERVER: &str = "\
------------------------------------------------------------
Server listening on UDP port 5001 with pid 20752
Joining multicast (S,G)=203.0.113.3,232.1.1.1 w/iface eth0
Read buffer size: 1.44 KByte (Dist bin width= 183 Byte)
Server set to single client traffic mode (per multicast receive)
UDP buffer size:  208 KByte (default)
------------------------------------------------------------
[  1] local 232.1.1.1%eth0 port 5001 connected with 203.0.113.3 port 40278 (sock=3) (peer 2.1.8) on 2026-11-30 18:51:03 (UTC)
[ ID] Interval            Transfer     Bandwidth        Jitter   Lost/Total  Latency avg/min/max/stdev PPS  Rx/inP  NetPwr
[  1] 0.0000-2.0112 sec   517 KBytes  2.10 Mbits/sec   0.007 ms 2/402 (0.5%) 0.019/0.002/0.083/0.008 ms 200 pps 402/0(0) pkts 13680
";

#[test]
fn the_parsers_read_iperf2_and_the_sidecar_metrics() {
    // A temporary directory, removed on drop even when an assertion fails.
    let tmp = FakePath::new("parse", &[]);
    let dir = tmp.dir.clone();
    let (client, server) = (dir.join("client"), dir.join("server"));
    fs::write(&client, IPERF_CLIENT).unwrap();
    fs::write(&server, IPERF_SERVER).unwrap();
    let c = client.display();
    let s = server.display();
    assert_eq!(lib(&format!("iperf_sent < {c}")), "403\n");
    assert_eq!(lib(&format!("iperf_lost_total < {s}")), "2 402\n");
    assert_eq!(lib(&format!("iperf_source < {s}")), "203.0.113.3\n");
    // Older iperf2 pads the total.
    assert_eq!(
        lib("iperf_lost_total <<<'[  3]  0.0- 5.0 sec  1.22 MBytes  2.05 Mbits/sec   0.012 ms    3/ 974 (0.31%)'"),
        "3 974\n"
    );
    // Nothing arrived: no report, no numbers.
    assert_eq!(lib("iperf_lost_total <<<'Joining multicast'"), "");

    let metrics = dir.join("metrics");
    fs::write(
        &metrics,
        "\
# HELP cilium_mcast_egress_packets_total Replicated packets.
# TYPE cilium_mcast_egress_packets_total counter
cilium_mcast_egress_packets_total{egress_ip=\"203.0.113.3\",group=\"232.1.1.0/24\",policy=\"mcast-e2e\",role=\"gateway\"} 402
cilium_mcast_egress_packets_total{egress_ip=\"\",group=\"232.1.1.0/24\",policy=\"mcast-e2e\",role=\"origin\"} 7
cilium_mcast_egress_packets_total{egress_ip=\"203.0.113.3\",group=\"232.2.0.0/16\",policy=\"xmcast-e2e\",role=\"gateway\"} 1000
cilium_mcast_egress_packets_total_extra{policy=\"mcast-e2e\",role=\"gateway\"} 5
cilium_mcast_egress_gateway{egress_ip=\"203.0.113.3\",policy=\"mcast-e2e\"} 1
cilium_mcast_egress_gateway{egress_ip=\"203.0.113.9\",policy=\"other\"} 1
cilium_mcast_egress_drops_total{reason=\"ttl_exceeded\",role=\"gateway\"} 0
cilium_mcast_egress_drops_total{reason=\"unknown_peer\",role=\"gateway\"} 3
cilium_mcast_egress_policy_entries 1
",
    )
    .unwrap();
    let m = metrics.display();
    let sum = |args: &str| lib(&format!("prom_sum {args} < {m}"));
    assert_eq!(
        sum("cilium_mcast_egress_packets_total policy=mcast-e2e role=gateway"),
        "402\n"
    );
    assert_eq!(
        sum("cilium_mcast_egress_packets_total policy=mcast-e2e role=origin"),
        "7\n"
    );
    assert_eq!(
        sum("cilium_mcast_egress_packets_total role=gateway"),
        "1402\n"
    );
    assert_eq!(sum("cilium_mcast_egress_drops_total"), "3\n");
    assert_eq!(sum("cilium_mcast_egress_policy_entries"), "1\n");
    assert_eq!(sum("cilium_mcast_egress_bytes_total"), "0\n");
    assert_eq!(
        lib(&format!(
            "prom_label cilium_mcast_egress_gateway egress_ip policy=mcast-e2e < {m}"
        )),
        "203.0.113.3\n"
    );
    assert_eq!(
        lib(&format!(
            "prom_label cilium_mcast_egress_gateway egress_ip policy=absent < {m}"
        )),
        ""
    );

    for (a, b, ge) in [
        ("1.33.1", "1.32.0", true),
        ("1.32", "1.32.0", true),
        ("0.29.0", "0.29.0", true),
        ("0.9.0", "0.29.0", false),
        ("6.18.0", "6.6", true),
        ("6.1.0", "6.6", false),
        ("4.0.0", "3.12.0", true),
    ] {
        let got = lib(&format!("version_ge {a} {b} && echo ge || echo lt"));
        assert_eq!(got.trim() == "ge", ge, "version_ge {a} {b}");
    }
    assert_eq!(
        lib("version_of 'Client Version: v1.32.4-dispatcher'"),
        "1.32.4\n"
    );
}

/// The script deploys the same artifacts `make e2e-local` proves, and
/// names no sidecar image of its own.
#[test]
fn the_script_deploys_the_shared_artifacts() {
    let script = read(SCRIPT);
    // The files README's Deploying has users render, rendered the same way.
    assert!(script.contains("DEPLOY_CONFIG=$ROOT/scripts/deploy-config.sh\n"));
    assert!(script.contains("bash \"$DEPLOY_CONFIG\""));
    assert!(script.contains("CILIUM_VALUES=$DEPLOY/cilium-values.yaml\n"));
    assert!(script.contains("DEPLOY_OVERLAY=$DEPLOY/daemonset\n"));
    assert!(script.contains("helm_args+=(-f \"$CILIUM_VALUES\")"));
    assert!(script.contains("kubectl apply -k \"$DEPLOY_OVERLAY\""));
    assert!(script.contains("make -C \"$ROOT\" image IMAGE=\"$IMAGE\""));
    // The default image name is Cargo.toml's version, not a literal here.
    assert!(
        !script.contains("cilium-mcast-egress:0"),
        "image literal in the script"
    );
    assert!(script.contains("load_images \"$IMAGE\" \"$TOOLS_IMAGE\""));
    assert!(script.contains("kind load docker-image"));
    for f in ["cilium-values.yaml", "kustomization.yaml"] {
        assert!(root().join("manifests/deploy").join(f).is_file(), "{f}");
    }
    // Tunnel mode, VXLAN, kube-proxy replacement, the egress gateway.
    for set in [
        "routingMode=tunnel",
        "tunnelProtocol=vxlan",
        "kubeProxyReplacement=true",
        "egressGateway.enabled=true",
        "bpf.masquerade=true",
        "k8sServicePort=6443",
    ] {
        assert!(script.contains(&format!("--set {set}\n")), "--set {set}");
    }
    assert!(script.contains("KIND_EXPERIMENTAL_DOCKER_NETWORK=$NETWORK"));
    assert!(script.contains("trap cleanup EXIT"));
}

#[test]
fn pins_and_cluster_files_agree() {
    // kind's node image with its digest, for the pinned Kubernetes.
    let node = pin("KIND_NODE_IMAGE");
    let k8s = pin("KUBERNETES_VERSION");
    let (tag, digest) = node
        .split_once("@sha256:")
        .expect("node image has a digest");
    assert_eq!(tag, format!("kindest/node:v{k8s}"));
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{digest}"
    );
    assert!(pin("CILIUM_VERSION").starts_with("1.18."));

    let cluster = &documents(&format!("{HERE}/kind-config.yaml"))[0];
    assert_eq!(cluster["kind"].as_str(), Some("Cluster"));
    let net = &cluster["networking"];
    assert_eq!(net["disableDefaultCNI"].as_bool(), Some(true));
    assert_eq!(net["kubeProxyMode"].as_str(), Some("none"));
    let roles: Vec<&str> = cluster["nodes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["control-plane", "worker", "worker"]);
    // Every address of the run from the documentation ranges.
    let doc = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"];
    for cidr in [
        net["podSubnet"].as_str().unwrap().to_string(),
        net["serviceSubnet"].as_str().unwrap().to_string(),
        pin("SUBNET"),
    ] {
        assert!(doc.contains(&cidr.as_str()), "{cidr}");
    }
    assert!(pin("GROUP").starts_with("232."));

    let labels = |i: usize| -> BTreeMap<String, String> {
        serde_norway::from_value(cluster["nodes"][i]["labels"].clone()).unwrap()
    };
    let policy = &documents(&format!("{HERE}/policy.yaml"))[0];
    assert_eq!(policy["kind"].as_str(), Some("CiliumEgressGatewayPolicy"));
    assert_eq!(
        policy["metadata"]["name"].as_str(),
        Some(pin("POLICY").as_str())
    );
    let gw = &policy["spec"]["egressGateway"];
    let gw_sel: BTreeMap<String, String> =
        serde_norway::from_value(gw["nodeSelector"]["matchLabels"].clone()).unwrap();
    assert_eq!(gw_sel, labels(1), "the gateway is the first worker");
    assert_eq!(gw["interface"].as_str(), Some("eth0"));
    assert_eq!(
        policy["spec"]["destinationCIDRs"][0].as_str(),
        Some("232.1.1.0/24")
    );

    let publisher = documents(&format!("{HERE}/publisher.yaml"));
    let pod = publisher
        .iter()
        .find(|d| d["kind"].as_str() == Some("Pod"))
        .unwrap();
    let pod_sel: BTreeMap<String, String> =
        serde_norway::from_value(pod["spec"]["nodeSelector"].clone()).unwrap();
    assert_eq!(pod_sel, labels(2), "the publisher is on the other worker");
    assert!(gw_sel.keys().all(|k| !pod_sel.contains_key(k)));
    let pod_labels: BTreeMap<String, String> =
        serde_norway::from_value(pod["metadata"]["labels"].clone()).unwrap();
    let match_labels: BTreeMap<String, String> = serde_norway::from_value(
        policy["spec"]["selectors"][0]["podSelector"]["matchLabels"].clone(),
    )
    .unwrap();
    assert!(match_labels
        .iter()
        .all(|(k, v)| pod_labels.get(k) == Some(v)));
    assert_eq!(
        pod["spec"]["containers"][0]["image"].as_str(),
        Some(pin("TOOLS_IMAGE").as_str())
    );
    assert_eq!(
        pod["spec"]["containers"][0]["imagePullPolicy"].as_str(),
        Some("Never")
    );

    // The tools image pins the iperf whose accounting the script relies on.
    let dockerfile = read(&format!("{HERE}/tools.Dockerfile"));
    assert!(dockerfile.contains("iperf=2.1.8+dfsg-1"));
    assert!(pin("TOOLS_IMAGE").ends_with("iperf-2.1.8"));
}

/// The publisher's Namespace and Pod against the Kubernetes schemas, with
/// the validator `make deps` installs, when it is there.
#[test]
fn publisher_manifest_matches_the_kubernetes_schemas() {
    let venv = Path::new("/opt/kubernetes-validate-1.37.0/bin/kubernetes-validate");
    let bin = if venv.is_file() {
        venv.to_path_buf()
    } else if let Some(p) = which("kubernetes-validate") {
        p
    } else {
        eprintln!(
            "\n!!! SKIPPED publisher_manifest_matches_the_kubernetes_schemas: \
             no kubernetes-validate (bash scripts/install-deps.sh). !!!\n"
        );
        return;
    };
    let out = Command::new(bin)
        .args(["--kubernetes-version", "1.33.0", "--strict"])
        .arg(root().join(HERE).join("publisher.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn make_e2e_runs_the_script() {
    let makefile = read("Makefile");
    assert!(makefile.contains("\ne2e:\n\tbash scripts/e2e-kind.sh\n"));
    assert!(makefile.contains("#   make e2e "));
}

// --- the whole run, against stand-ins ----------------------------------------
//
// docker, kind, helm, kubectl and make replaced by small scripts that log
// their arguments and answer as a healthy (or a broken) cluster would. This
// runs every line of the script's flow here: the order of the steps, the
// artifacts each way deploys, the arithmetic of the checks, the failure
// messages and the cleanup. What the stand-ins answer is written from the
// tools' documented output; the real cluster is `make e2e` on a user's machine.

const GW_IP: &str = "203.0.113.3";

const STUB_DOCKER: &str = r#"echo "docker $*" >> "$STATE/calls"
case "$1" in
info) echo 6.18.0-cloud-amd64 ;;
version) echo "${DOCKER_SERVER_VERSION:-29.0.1}" ;;
image)
  case "$*" in *Architecture*) echo linux/amd64 ;; esac ;;
save)
  while [ $# -gt 0 ]; do
    if [ "$1" = -o ]; then echo archive > "$2"; fi
    shift
  done ;;
network) [ "$2" = inspect ] && exit 1; exit 0 ;;
inspect)
  case "$3" in *MacAddress*) echo 02:42:cb:00:71:03; exit 0 ;; esac
  case "$4" in
  *-worker) echo 203.0.113.3 ;;
  *-worker2) echo 203.0.113.4 ;;
  *-receiver) echo 203.0.113.5 ;;
  *) echo 203.0.113.2 ;;
  esac ;;
run) echo 0123456789ab ;;
logs)
  cat "$STATE/receiver.head"
  if [ -e "$STATE/streamed" ]; then cat "$STATE/receiver.report"; fi ;;
exec)
  node=$2
  case "$*" in
  *readyz*) exit 0 ;;
  *metrics*)
    if [ -e "$STATE/streamed" ]; then cat "$STATE/$node.after"; else cat "$STATE/$node.before"; fi ;;
  *"ip[8] ="*) i=0; while [ $i -lt "$CAP_TTL" ]; do echo pkt; i=$((i + 1)); done ;;
  *tcpdump*) i=0; while [ $i -lt "$CAP" ]; do echo pkt; i=$((i + 1)); done ;;
  esac ;;
*) exit 0 ;;
esac"#;

const STUB_KUBECTL: &str = r#"echo "kubectl $*" >> "$STATE/calls"
case "$*" in
"version --client") echo "Client Version: v1.33.1" ;;
*"get nodes -l egress-gateway=multicast"*) printf %s t-worker ;;
*"get nodes -l mcast-e2e/role=publisher"*) printf %s t-worker2 ;;
*"get nodes -o jsonpath"*) printf 't-control-plane\nt-worker\nt-worker2\n' ;;
*"{.status.podIP}"*) printf %s 198.51.100.70 ;;
*"{.spec.nodeName}"*) printf %s t-worker2 ;;
*"exec publisher"*) touch "$STATE/streamed"; cat "$STATE/client.out" ;;
"apply -k "*) cp "$3/kustomization.yaml" "$STATE/applied-overlay.yaml" ;;
*) exit 0 ;;
esac"#;

/// With KIND_LOAD_DIGEST_BUG set, `kind load docker-image` fails as it does
/// under Docker 29's containerd image store (kind#3795); `kind load
/// image-archive` checks that its archive exists.
const STUB_KIND: &str = r#"echo "kind $*" >> "$STATE/calls"
case "$1 $2" in
version*) echo 'kind v0.29.0 go1.24.2 linux/amd64' ;;
"load docker-image")
  if [ -n "$KIND_LOAD_FAILS" ]; then
    echo 'ERROR: no nodes found for cluster "mcast-e2e"' >&2
    exit 1
  fi
  if [ -n "$KIND_LOAD_DIGEST_BUG" ]; then
    echo 'ERROR: failed to load image: command "docker exec --privileged -i mcast-e2e-control-plane ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs -" failed with error: exit status 1' >&2
    echo 'Command Output: ctr: content digest sha256:82014a3cbf22d2e03382cd9b123f4151d956986e727340a466406a206408b7a2: not found' >&2
    exit 1
  fi ;;
"load image-archive")
  eval "archive=\${$#}"
  [ -s "$archive" ] || { echo "no archive $archive" >&2; exit 1; } ;;
esac
exit 0"#;

/// One stand-in run: its state directory, fake PATH and outcome.
struct Run {
    state: PathBuf,
    out: Output,
}

impl Run {
    fn calls(&self) -> Vec<String> {
        read_abs(&self.state.join("calls"))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn all(&self) -> String {
        text(&self.out)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.state);
    }
}

fn read_abs(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// What a node's sidecar scrapes before and after the stream.
fn scrape(gateway: u64, origin: u64, drops: u64) -> String {
    format!(
        "# TYPE cilium_mcast_egress_packets_total counter\n\
         cilium_mcast_egress_packets_total{{egress_ip=\"{GW_IP}\",group=\"232.1.1.0/24\",policy=\"mcast-e2e\",role=\"gateway\"}} {gateway}\n\
         cilium_mcast_egress_packets_total{{egress_ip=\"\",group=\"232.1.1.0/24\",policy=\"mcast-e2e\",role=\"origin\"}} {origin}\n\
         cilium_mcast_egress_drops_total{{reason=\"ttl_exceeded\",role=\"gateway\"}} 0\n\
         cilium_mcast_egress_drops_total{{reason=\"unknown_peer\",role=\"gateway\"}} {drops}\n\
         cilium_mcast_egress_gateway{{egress_ip=\"{GW_IP}\",policy=\"mcast-e2e\"}} 1\n\
         cilium_mcast_egress_policy_entries 1\n"
    )
}

struct Scenario<'a> {
    tag: &'a str,
    env: &'a [(&'a str, &'a str)],
    lost: u64,
    /// Packets the gateway counted during the stream, and drops afterwards.
    gateway: u64,
    drops: u64,
    captured_ttl: u64,
}

const HEALTHY: Scenario<'static> = Scenario {
    tag: "healthy",
    env: &[],
    lost: 0,
    gateway: 402,
    drops: 0,
    captured_ttl: 402,
};

fn run_against_stand_ins(s: &Scenario) -> Run {
    let state = std::env::temp_dir().join(format!("e2e-kind-run-{}-{}", s.tag, std::process::id()));
    let _ = fs::remove_dir_all(&state);
    let bin = state.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let stub = |name: &str, body: &str| {
        let p = bin.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    };
    stub("docker", STUB_DOCKER);
    stub("kubectl", STUB_KUBECTL);
    stub("kind", STUB_KIND);
    stub(
        "helm",
        r#"echo "helm $*" >> "$STATE/calls"; [ "$1" = version ] && echo 'v3.17.3+ge4da497'
prev=; for a in "$@"; do [ "$prev" = -f ] && cp "$a" "$STATE/helm-values.yaml"; prev=$a; done; exit 0"#,
    );
    stub(
        "make",
        r#"echo "make $*" >> "$STATE/calls"
if [ -n "$MAKE_FAILS" ]; then echo 'make: *** [Makefile:64: deps-image] Error 2' >&2; exit 2; fi"#,
    );

    let w = |name: &str, body: &str| fs::write(state.join(name), body).unwrap();
    w("calls", "");
    w("client.out", IPERF_CLIENT);
    let server_head = IPERF_SERVER
        .replace("203.0.113.3", GW_IP)
        .lines()
        .filter(|l| !l.contains("%)"))
        .collect::<Vec<_>>()
        .join("\n");
    w(
        "receiver.head",
        &format!("{server_head}\ntcpdump: listening on eth0, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n"),
    );
    w(
        "receiver.report",
        &format!(
            "[  1] 0.0000-2.0112 sec   517 KBytes  2.10 Mbits/sec   0.007 ms {}/402 ({}%) 0.019/0.002/0.083/0.008 ms 200 pps 402/0(0) pkts 13680\n",
            s.lost,
            s.lost * 100 / 402
        ),
    );
    w("t-worker.before", &scrape(10, 0, 0));
    w("t-worker.after", &scrape(10 + s.gateway, 0, s.drops));
    w("t-worker2.before", &scrape(0, 5, 0));
    w("t-worker2.after", &scrape(0, 5 + 402, 0));
    w("t-control-plane.before", &scrape(0, 0, 0));
    w("t-control-plane.after", &scrape(0, 0, 0));

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(bash())
        .arg(root().join(SCRIPT))
        .env("PATH", path)
        .env("STATE", &state)
        .env("CAP", (402 - s.lost).to_string())
        .env("CAP_TTL", s.captured_ttl.to_string())
        .env("TMPDIR", &state)
        .env_remove("MODE")
        .env_remove("IMAGE")
        .env_remove("KEEP")
        .envs(s.env.iter().copied())
        .current_dir(root())
        .output()
        .unwrap();
    Run { state, out }
}

fn position(calls: &[String], what: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(what))
        .unwrap_or_else(|| panic!("no call {what:?} in:\n{}", calls.join("\n")))
}

#[test]
fn a_healthy_sidecar_run_passes_and_cleans_up() {
    let run = run_against_stand_ins(&HEALTHY);
    let all = run.all();
    assert_eq!(run.out.status.code(), Some(0), "{all}");
    assert!(all.contains("== PASSED"), "{all}");
    // The run as a user would see it (with --nocapture).
    eprintln!("{all}");
    for line in [
        "datagrams sent by the pod            403 (iperf2 counts one more than it puts on the wire: 402)",
        "datagrams received by the receiver   402 of 402, 0 lost",
        "source address the receiver saw      203.0.113.3 (gateway t-worker, eth0 203.0.113.3)",
        "+402 packets towards the gateway",
        "+402 packets out of eth0",
    ] {
        assert!(all.contains(line), "summary lacks {line:?}:\n{all}");
    }

    let calls = run.calls();
    let root = root().display().to_string();
    let make = position(
        &calls,
        &format!("make -C {root} image IMAGE=cilium-mcast-egress:0.1.0"),
    );
    let net = position(
        &calls,
        "docker network create --driver bridge --subnet 203.0.113.0/24",
    );
    let create = position(&calls, "kind create cluster --name mcast-e2e-");
    let load = position(&calls, "kind load docker-image --name mcast-e2e-");
    let helm = position(
        &calls,
        "helm install cilium cilium --repo https://helm.cilium.io --version 1.18.",
    );
    let policy = position(
        &calls,
        &format!("kubectl apply -f {root}/scripts/e2e-kind/policy.yaml"),
    );
    let receiver = position(&calls, "docker run -d --name mcast-e2e-");
    let stream = position(
        &calls,
        "kubectl -n mcast-e2e exec publisher -- iperf -c 232.1.1.1 -u -T 8 -l 1316",
    );
    let rm = position(&calls, "docker rm -f mcast-e2e-");
    let delete = position(&calls, "kind delete cluster --name mcast-e2e-");
    let netrm = position(&calls, "docker network rm mcast-e2e");
    assert!(
        make < net
            && net < create
            && create < load
            && load < helm
            && helm < policy
            && policy < receiver
            && receiver < stream
            && stream < rm
            && rm < delete
            && delete < netrm,
        "steps out of order:\n{}",
        calls.join("\n")
    );
    // The values make deploy-config rendered, in the run's directory: the
    // image the run built and loaded, the API server Cilium is given.
    assert!(
        calls[helm].contains(&format!("-f {}/mcast-e2e.", run.state.display()))
            && calls[helm].contains("/deploy/cilium-values.yaml"),
        "{}",
        calls[helm]
    );
    let values: serde_norway::Value =
        serde_norway::from_str(&read_abs(&run.state.join("helm-values.yaml"))).unwrap();
    let c = &values["extraContainers"][0];
    assert_eq!(c["image"].as_str(), Some("cilium-mcast-egress:0.1.0"));
    let host = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some("KUBERNETES_SERVICE_HOST"))
        .expect("KUBERNETES_SERVICE_HOST in the values");
    assert!(
        calls[helm].contains(&format!(
            "--set k8sServiceHost={}",
            host["value"].as_str().unwrap()
        )),
        "the sidecar and Cilium reach the API server differently: {}",
        calls[helm]
    );
    assert!(calls[load].ends_with(
        " cilium-mcast-egress:0.1.0 cilium-mcast-egress-e2e-tools:bookworm-iperf-2.1.8"
    ));
    // kind's own load worked: no archive route.
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("docker save") || c.contains("image-archive")),
        "{}",
        calls.join("\n")
    );
    // The receiver's command spans two lines of the log.
    assert!(
        calls.join("\n").contains(&format!(
            "exec iperf -s -u -B 232.1.1.1%eth0 -H {GW_IP} -e -t 305"
        )),
        "the receiver does not join ({GW_IP}, 232.1.1.1)"
    );
    assert!(
        !calls.iter().any(|c| c.contains("apply -k")),
        "the DaemonSet in sidecar mode"
    );
    // Its temporary directory (kubeconfig) is gone.
    let left: Vec<_> = fs::read_dir(&run.state)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mcast-e2e."))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Docker 29's containerd image store: `kind load docker-image` fails with
/// "content digest ... not found" (kind#3795). The run says so, saves each
/// image for its own platform, loads the archives with `kind load
/// image-archive`, and goes on to pass; the healthy run above is the control
/// (no archive there).
#[test]
fn kind_load_falls_back_to_single_platform_archives() {
    let run = run_against_stand_ins(&Scenario {
        tag: "digest",
        env: &[("KIND_LOAD_DIGEST_BUG", "1")],
        ..HEALTHY
    });
    let all = run.all();
    assert_eq!(run.out.status.code(), Some(0), "{all}");
    assert!(all.contains("ctr: content digest sha256:"), "{all}");
    assert!(
        all.contains("kind load docker-image failed as in kind#3795"),
        "{all}"
    );
    assert!(all.contains("== PASSED"), "{all}");

    let calls = run.calls();
    let load = position(&calls, "kind load docker-image --name mcast-e2e-");
    let mut at = load;
    for image in [
        "cilium-mcast-egress:0.1.0",
        "cilium-mcast-egress-e2e-tools:bookworm-iperf-2.1.8",
    ] {
        let inspect = position(
            &calls,
            &format!("docker image inspect --format {{{{.Os}}}}/{{{{.Architecture}}}} {image}"),
        );
        let save = calls
            .iter()
            .position(|c| {
                c.starts_with("docker save --platform linux/amd64 -o ")
                    && c.ends_with(&format!(" {image}"))
            })
            .unwrap_or_else(|| panic!("no docker save of {image}:\n{}", calls.join("\n")));
        let archive = calls[save]
            .split(' ')
            .nth(5)
            .expect("docker save -o ARCHIVE")
            .to_owned();
        let import = calls
            .iter()
            .skip(save)
            .position(|c| {
                c.starts_with("kind load image-archive --name mcast-e2e-") && c.ends_with(&archive)
            })
            .map(|i| i + save)
            .unwrap_or_else(|| panic!("{archive} not loaded:\n{}", calls.join("\n")));
        assert!(
            at < inspect && inspect < save && save < import,
            "{}",
            calls.join("\n")
        );
        at = import;
    }
    // Loaded before Cilium is installed; the archive is gone with the run's
    // temporary directory.
    assert!(at < position(&calls, "helm install cilium"));
    let left: Vec<_> = fs::read_dir(&run.state)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mcast-e2e."))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Another failure of `kind load docker-image` is not kind#3795: it fails
/// the run with kind's message, and nothing is saved.
#[test]
fn kind_load_fails_for_other_reasons_without_the_fallback() {
    let run = run_against_stand_ins(&Scenario {
        tag: "loadfail",
        env: &[("KIND_LOAD_FAILS", "1")],
        ..HEALTHY
    });
    let all = run.all();
    assert_eq!(run.out.status.code(), Some(1), "{all}");
    assert!(all.contains("ERROR: no nodes found for cluster"), "{all}");
    assert!(all.contains("e2e: FAILED: kind load docker-image"), "{all}");
    let calls = run.calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("docker save")),
        "{}",
        calls.join("\n")
    );
    position(&calls, "kind delete cluster --name mcast-e2e-");
}

#[test]
fn the_daemonset_way_applies_the_kustomize_base_and_a_given_image() {
    let run = run_against_stand_ins(&Scenario {
        tag: "daemonset",
        env: &[
            ("MODE", "daemonset"),
            ("IMAGE", "registry.example/mcast:dev"),
        ],
        ..HEALTHY
    });
    let all = run.all();
    assert_eq!(run.out.status.code(), Some(0), "{all}");
    let calls = run.calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("make ")),
        "make ran with IMAGE set"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("docker tag")),
        "retagged: the one name is deployed as given"
    );
    let load = position(&calls, "kind load docker-image");
    assert!(calls[load].contains(" registry.example/mcast:dev "));
    let helm = position(&calls, "helm install cilium");
    let apply = position(
        &calls,
        &format!("kubectl apply -k {}/mcast-e2e.", run.state.display()),
    );
    assert!(
        calls[apply].ends_with("/deploy/daemonset"),
        "{}",
        calls[apply]
    );
    let rollout = position(
        &calls,
        "kubectl -n kube-system rollout status ds/cilium-mcast-egress",
    );
    assert!(load < helm && helm < apply && apply < rollout);
    // The overlay of the base in manifests/deploy, with the given image
    // and the API server.
    let overlay = read_abs(&run.state.join("applied-overlay.yaml"));
    let rel = overlay
        .lines()
        .find_map(|l| {
            l.strip_prefix("- ")
                .filter(|r| r.ends_with("manifests/deploy"))
        })
        .unwrap_or_else(|| panic!("no base in:\n{overlay}"));
    assert!(
        rel.starts_with("../"),
        "kustomize takes relative bases: {overlay}"
    );
    for line in [
        "newName: registry.example/mcast",
        "newTag: \"dev\"",
        "KUBERNETES_SERVICE_HOST",
    ] {
        assert!(overlay.contains(line), "no {line:?} in:\n{overlay}");
    }
    assert!(
        !calls[helm].contains("cilium-values.yaml"),
        "{}",
        calls[helm]
    );
    assert!(calls[helm].contains("--set egressGateway.enabled=true"));
}

#[test]
fn loss_drops_and_a_wrong_ttl_fail_with_their_reasons_and_still_clean_up() {
    let run = run_against_stand_ins(&Scenario {
        tag: "broken",
        lost: 2,
        gateway: 400,
        drops: 3,
        captured_ttl: 390,
        ..HEALTHY
    });
    let all = run.all();
    assert_eq!(run.out.status.code(), Some(1), "{all}");
    for reason in [
        "the receiver lost 2 of 402 datagrams",
        "the gateway counter rose by 400, 402 datagrams were sent",
        "10 captured datagrams did not arrive with TTL 7",
        "the sidecars dropped 3 packets:",
        "t-worker: cilium_mcast_egress_drops_total{reason=\"unknown_peer\",role=\"gateway\"} 3",
        "e2e: FAILED: 4 check(s) failed",
        "--- diagnostics",
    ] {
        assert!(all.contains(reason), "no {reason:?} in:\n{all}");
    }
    let calls = run.calls();
    position(&calls, "kubectl get pods -A -o wide");
    position(&calls, "kind delete cluster --name mcast-e2e-");
    position(&calls, "docker network rm mcast-e2e");
}

/// A failure before there is a cluster (here `make image`): the run still
/// cleans up, and its temporary directory is gone. (The diagnostics'
/// early `return` inside the EXIT trap used to return the failure's status
/// and end the cleanup under `set -e`.)
#[test]
fn a_failure_before_the_cluster_still_cleans_up() {
    let run = run_against_stand_ins(&Scenario {
        tag: "makefails",
        env: &[("MAKE_FAILS", "1")],
        ..HEALTHY
    });
    let all = run.all();
    assert_eq!(run.out.status.code(), Some(2), "{all}");
    assert!(all.contains("== cleaning up"), "{all}");
    let calls = run.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("kind create") || c.starts_with("docker network create")),
        "{}",
        calls.join("\n")
    );
    let left: Vec<_> = fs::read_dir(&run.state)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mcast-e2e."))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn keep_leaves_everything_up_and_says_how_to_remove_it() {
    let run = run_against_stand_ins(&Scenario {
        tag: "keep",
        env: &[("KEEP", "1")],
        ..HEALTHY
    });
    let all = run.all();
    assert_eq!(run.out.status.code(), Some(0), "{all}");
    let calls = run.calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("kind delete")),
        "deleted with KEEP=1"
    );
    assert!(!calls.iter().any(|c| c.starts_with("docker network rm")));
    assert!(all.contains("KEEP=1: left up"), "{all}");
    assert!(
        all.contains("kind delete cluster --name mcast-e2e-"),
        "{all}"
    );
}
