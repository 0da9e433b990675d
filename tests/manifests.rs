//! The deployment manifests, checked offline: every Kubernetes object against
//! the schemas of a pinned Kubernetes version (`kubernetes-validate`), the
//! Prometheus Operator objects by the fields they use, the alert rules with
//! `promtool check rules` and `promtool test rules`, and the things that
//! must not drift apart: the two ways of deploying (image, capabilities,
//! metrics port), the PrometheusRule and `rules.yaml`, and every metric name
//! in the rules and the dashboard against README's Metrics table.
//!
//! Nothing here needs root or a cluster. Without `promtool` or
//! `kubernetes-validate` the checks that need them skip loudly; under
//! `CI=true` they must run (`scripts/install-deps.sh` installs both).

#[path = "common/repo.rs"]
mod repo;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

use repo::{documents, read, root};

/// The Kubernetes version whose schemas the objects must satisfy. Kept with
/// the `k8s-openapi` feature of Cargo.toml (`v1_33`).
const KUBERNETES_VERSION: &str = "1.33.0";

/// The `kubernetes-validate` release `scripts/install-deps.sh` installs, in
/// a venv of its own under /opt.
const KUBERNETES_VALIDATE_VENV: &str = "/opt/kubernetes-validate-1.37.0";

fn one_document(rel: &str) -> Value {
    let mut docs = documents(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one document");
    docs.remove(0)
}

fn by_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn string(v: &Value, what: &str) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {v:?}"))
        .to_string()
}

/// A tool the test needs: its path, or None after a loud notice outside CI.
/// Under `CI=true` a missing tool fails the test.
fn tool(test: &str, candidates: &[PathBuf], install: &str) -> Option<PathBuf> {
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Some(found.clone());
    }
    let names: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: none of {names:?} exists, and CI=true forbids skipping ({install})");
    }
    eprintln!(
        "\n!!! SKIPPED {test}: none of {names:?} exists. \
         Run `bash scripts/install-deps.sh` ({install}). !!!\n"
    );
    None
}

/// `name` on PATH, as a path.
fn on_path(name: &str) -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default()
}

fn kubernetes_validate(test: &str) -> Option<PathBuf> {
    let mut candidates = vec![Path::new(KUBERNETES_VALIDATE_VENV).join("bin/kubernetes-validate")];
    candidates.extend(on_path("kubernetes-validate"));
    tool(test, &candidates, "kubernetes-validate from PyPI")
}

fn promtool(test: &str) -> Option<PathBuf> {
    tool(test, &on_path("promtool"), "Debian's prometheus package")
}

/// Runs the validator on files; (success, stdout + stderr).
fn validate(bin: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(bin)
        .args(["--kubernetes-version", KUBERNETES_VERSION, "--strict"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The kustomize base's resources, in its order.
fn kustomize_resources(dir: &str) -> Vec<String> {
    let k = one_document(&format!("{dir}/kustomization.yaml"));
    assert_eq!(k["kind"].as_str(), Some("Kustomization"), "{dir}");
    k["resources"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{dir}/kustomization.yaml: no resources"))
        .iter()
        .map(|r| format!("{dir}/{}", string(r, "resource")))
        .collect()
}

fn daemonset() -> Value {
    let docs = documents("manifests/deploy/daemonset.yaml");
    let ds = by_kind(&docs, "DaemonSet");
    assert_eq!(ds.len(), 1);
    ds[0].clone()
}

fn daemonset_container() -> Value {
    let ds = daemonset();
    let containers = ds["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("DaemonSet containers")
        .clone();
    assert_eq!(containers.len(), 1, "one container");
    containers[0].clone()
}

fn values_container() -> Value {
    let values = one_document("manifests/deploy/cilium-values.yaml");
    let containers = values["extraContainers"]
        .as_sequence()
        .expect("extraContainers")
        .clone();
    assert_eq!(containers.len(), 1, "one extra container");
    containers[0].clone()
}

/// The values' container in a Pod shaped like cilium-agent's (host network,
/// the chart's `bpf-maps` volume), so the schema checks the container spec.
fn values_as_pod() -> String {
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cilium-agent-with-mcast-egress", "namespace": "kube-system"},
        "spec": {
            "hostNetwork": true,
            "containers": [serde_json::to_value(values_container()).expect("container as JSON")],
            "volumes": [{"name": "bpf-maps", "hostPath": {"path": "/sys/fs/bpf", "type": "DirectoryOrCreate"}}],
        },
    });
    serde_json::to_string_pretty(&pod).expect("pod as JSON")
}

#[test]
fn kubernetes_objects_match_the_pinned_schemas() {
    let Some(bin) = kubernetes_validate("kubernetes_objects_match_the_pinned_schemas") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let pod = dir.path().join("cilium-values-pod.json");
    std::fs::write(&pod, values_as_pod()).expect("write pod");

    let mut files: Vec<PathBuf> = kustomize_resources("manifests/deploy")
        .iter()
        .map(|r| root().join(r))
        .collect();
    files.push(pod);
    let (ok, out) = validate(&bin, &files);
    assert!(ok, "kubernetes-validate failed:\n{out}");
    // Every object was checked against a schema, none passed for want of one.
    for kind in [
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "daemonset",
        "pod",
    ] {
        assert!(
            out.contains(&format!("passed for resource {kind}/")),
            "{kind} not validated:\n{out}"
        );
    }
    assert!(!out.contains("Couldn't find schema"), "{out}");

    // Positive control for the validator: the same DaemonSet with one field
    // of the wrong type, and one unknown field, must fail.
    let broken = read("manifests/deploy/daemonset.yaml")
        .replace("hostNetwork: true", "hostNetwork: \"yes\"")
        .replace("dnsPolicy:", "dnsPolicyy:");
    let broken_path = dir.path().join("broken-daemonset.yaml");
    std::fs::write(&broken_path, broken).expect("write broken");
    let (ok, out) = validate(&bin, &[broken_path]);
    assert!(!ok, "a broken DaemonSet passed:\n{out}");
}

#[test]
fn the_deploy_base_is_complete_and_read_only() {
    let resources = kustomize_resources("manifests/deploy");
    let docs: Vec<Value> = resources.iter().flat_map(|r| documents(r)).collect();

    // One of each, and the rbac nowhere else (no second ClusterRole).
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
    ] {
        assert_eq!(by_kind(&docs, kind).len(), 1, "{kind}");
    }
    let sa = by_kind(&docs, "ServiceAccount")[0];
    let role = by_kind(&docs, "ClusterRole")[0];
    let binding = by_kind(&docs, "ClusterRoleBinding")[0];
    let sa_name = string(&sa["metadata"]["name"], "ServiceAccount name");
    assert_eq!(sa["metadata"]["namespace"].as_str(), Some("kube-system"));

    // Only get/list/watch on the three Cilium kinds.
    let rules = role["rules"].as_sequence().expect("rules");
    assert_eq!(rules.len(), 1, "{rules:?}");
    let set = |v: &Value| -> BTreeSet<String> {
        v.as_sequence()
            .expect("list")
            .iter()
            .map(|s| string(s, "rule"))
            .collect()
    };
    assert_eq!(
        set(&rules[0]["apiGroups"]),
        BTreeSet::from(["cilium.io".into()])
    );
    assert_eq!(
        set(&rules[0]["resources"]),
        [
            "ciliumegressgatewaypolicies",
            "ciliumnodes",
            "ciliumendpoints"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(
        set(&rules[0]["verbs"]),
        ["get", "list", "watch"].map(String::from).into()
    );
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["name"].as_str(),
        Some(sa_name.as_str())
    );
    assert_eq!(
        binding["subjects"][0]["namespace"].as_str(),
        Some("kube-system")
    );

    let ds = by_kind(&docs, "DaemonSet")[0];
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(ds["metadata"]["namespace"].as_str(), Some("kube-system"));
    assert_eq!(pod["serviceAccountName"].as_str(), Some(sa_name.as_str()));
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    assert_eq!(pod["dnsPolicy"].as_str(), Some("ClusterFirstWithHostNet"));
    assert_eq!(
        pod["priorityClassName"].as_str(),
        Some("system-node-critical")
    );
    assert!(
        pod["tolerations"]
            .as_sequence()
            .expect("tolerations")
            .iter()
            .any(|t| t["operator"].as_str() == Some("Exists") && t["key"].is_null()),
        "must tolerate every taint, as cilium-agent does"
    );
    let c = daemonset_container();
    let env = c["env"].as_sequence().expect("env");
    let node_name = env
        .iter()
        .find(|e| e["name"].as_str() == Some("NODE_NAME"))
        .expect("NODE_NAME");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("spec.nodeName")
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    let mounts = c["volumeMounts"].as_sequence().expect("mounts");
    let bpffs = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/sys/fs/bpf"))
        .expect("bpffs mount");
    assert_eq!(bpffs["mountPropagation"].as_str(), Some("HostToContainer"));
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == bpffs["name"])
        .expect("bpffs volume");
    assert_eq!(volume["hostPath"]["path"].as_str(), Some("/sys/fs/bpf"));
    // Nothing of the node's but the BPF filesystem.
    assert_eq!(mounts.len(), 1, "{mounts:?}");
}

#[test]
fn both_ways_run_the_same_image_with_the_same_privileges() {
    let ds = daemonset_container();
    let values = values_container();
    let image = format!("cilium-mcast-egress:{}", env!("CARGO_PKG_VERSION"));
    for (way, c) in [("daemonset.yaml", &ds), ("cilium-values.yaml", &values)] {
        assert_eq!(c["image"].as_str(), Some(image.as_str()), "{way}");
        let sc = &c["securityContext"];
        assert_ne!(sc["privileged"].as_bool(), Some(true), "{way}: privileged");
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{way}"
        );
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{way}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_norway::from_str::<Value>("[ALL]").expect("yaml"),
            "{way}: drop ALL"
        );
        let args: Vec<String> = c["args"]
            .as_sequence()
            .expect("args")
            .iter()
            .map(|a| string(a, "arg"))
            .collect();
        assert_eq!(args.first().map(String::as_str), Some("run"), "{way}");
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--metrics-addr" && w[1].ends_with(":9980")),
            "{way}: {args:?}"
        );
        assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(9980), "{way}");
        assert!(c["resources"]["limits"]["memory"].is_string(), "{way}");
    }
    // The one list an adjustment to the capability set must change in both.
    assert_eq!(
        ds["securityContext"], values["securityContext"],
        "the DaemonSet and the cilium values must run with the same securityContext"
    );
    // README: /readyz must not be the readiness of cilium-agent's pod.
    assert!(values["readinessProbe"].is_null());
}

/// The PodMonitors and the PrometheusRule by the fields we use: their CRDs
/// are not among the Kubernetes schemas.
#[test]
fn prometheus_operator_objects_point_at_the_sidecar() {
    let resources = kustomize_resources("manifests/monitoring");
    let docs: Vec<Value> = resources.iter().flat_map(|r| documents(r)).collect();
    for d in &docs {
        assert_eq!(
            d["apiVersion"].as_str(),
            Some("monitoring.coreos.com/v1"),
            "{d:?}"
        );
        assert!(d["metadata"]["name"].is_string());
        assert_eq!(d["metadata"]["namespace"].as_str(), Some("kube-system"));
    }

    // Each PodMonitor selects the pods of one way on that way's port name.
    let ds = daemonset();
    let ds_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let ways = [
        (ds_labels.clone(), daemonset_container()),
        (
            serde_norway::from_str::<Value>("{k8s-app: cilium}").expect("yaml"),
            values_container(),
        ),
    ];
    let monitors = by_kind(&docs, "PodMonitor");
    assert_eq!(monitors.len(), ways.len());
    for (labels, container) in &ways {
        let port_name = string(&container["ports"][0]["name"], "port name");
        let m = monitors
            .iter()
            .find(|m| m["spec"]["podMetricsEndpoints"][0]["port"].as_str() == Some(&port_name))
            .unwrap_or_else(|| panic!("no PodMonitor on port {port_name}"));
        let selector = m["spec"]["selector"]["matchLabels"]
            .as_mapping()
            .expect("matchLabels");
        for (k, v) in selector {
            assert_eq!(&labels[k], v, "PodMonitor selector {k:?}");
        }
        assert_eq!(
            m["spec"]["podMetricsEndpoints"][0]["path"].as_str(),
            Some("/metrics")
        );
    }

    // One source of truth: the PrometheusRule holds rules.yaml's groups.
    let rules = by_kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    let plain = one_document("manifests/monitoring/rules.yaml");
    assert_eq!(
        rules[0]["spec"]["groups"], plain["groups"],
        "prometheusrule.yaml and rules.yaml differ"
    );
    assert_eq!(rules[0]["spec"].as_mapping().map(|m| m.len()), Some(1));

    // The dashboard ConfigMap generator names a file that exists.
    let k = one_document("manifests/monitoring/kustomization.yaml");
    for f in k["configMapGenerator"][0]["files"]
        .as_sequence()
        .expect("files")
    {
        let f = string(f, "file");
        let json: serde_json::Value =
            serde_json::from_str(&read(&format!("manifests/monitoring/{f}")))
                .unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(json["panels"].is_array(), "{f}");
    }
}

/// Every `cilium_mcast_egress_*` name in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("cilium_mcast_egress_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn rules_and_dashboard_use_only_documented_metrics() {
    let documented = repo::readme_metrics();
    assert!(
        documented.len() >= 20,
        "README's table not found: {documented:?}"
    );
    let known = |name: &str| {
        documented.iter().any(|(m, kind)| {
            m == name
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(m.as_str())))
        })
    };
    for file in [
        "manifests/monitoring/rules.yaml",
        "manifests/monitoring/rules.test.yaml",
        "manifests/monitoring/dashboard.json",
    ] {
        let names = metric_names(&read(file));
        assert!(!names.is_empty(), "{file}");
        for name in names {
            assert!(
                known(&name),
                "{file}: {name} is not in README's Metrics table"
            );
        }
    }
    // The checker itself: a name that is not documented is caught.
    assert!(!known("cilium_mcast_egress_packets"));
    assert!(known("cilium_mcast_egress_sync_duration_seconds_bucket"));
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = promtool("alert_rules_pass_promtool_check_and_unit_tests") else {
        return;
    };
    let dir = root().join("manifests/monitoring");
    for args in [
        ["check", "rules", "rules.yaml"],
        ["test", "rules", "rules.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Positive control: the unit tests fail when an alert stops firing
    // (the links alert compares the other way round).
    let tmp = tempfile::tempdir().expect("tempdir");
    let rules = read("manifests/monitoring/rules.yaml");
    let broken = rules.replace(
        "cilium_mcast_egress_attached_links < cilium_mcast_egress_expected_links",
        "cilium_mcast_egress_attached_links > cilium_mcast_egress_expected_links",
    );
    assert_ne!(broken, rules);
    std::fs::write(tmp.path().join("rules.yaml"), broken).expect("write");
    std::fs::copy(
        dir.join("rules.test.yaml"),
        tmp.path().join("rules.test.yaml"),
    )
    .expect("copy");
    let out = Command::new(&promtool)
        .args(["test", "rules", "rules.test.yaml"])
        .current_dir(tmp.path())
        .output()
        .expect("promtool");
    assert!(
        !out.status.success(),
        "the unit tests missed a broken alert"
    );
}

// --- what a real cluster's nodes and tools need -------------------------------

/// The AppArmor profile the runtime applies to a container: its own
/// `appArmorProfile`, else the pod's, else the annotation of Kubernetes
/// before 1.30; `None` when nothing names one, and containerd then applies
/// its default profile, which denies writes under `/sys/fs/[^c]*/**`.
fn apparmor_profile(pod: &Value, container: &Value) -> Option<String> {
    let name = string(&container["name"], "container name");
    container["securityContext"]["appArmorProfile"]["type"]
        .as_str()
        .or_else(|| pod["spec"]["securityContext"]["appArmorProfile"]["type"].as_str())
        .map(str::to_owned)
        .or_else(|| {
            pod["metadata"]["annotations"]
                [format!("container.apparmor.security.beta.kubernetes.io/{name}").as_str()]
            .as_str()
            .map(|a| {
                if a == "unconfined" {
                    "Unconfined".into()
                } else {
                    a.into()
                }
            })
        })
}

/// The SELinux type a container runs as: its own, else the pod's.
fn selinux_type(pod: &Value, container: &Value) -> Option<String> {
    container["securityContext"]["seLinuxOptions"]["type"]
        .as_str()
        .or_else(|| pod["spec"]["securityContext"]["seLinuxOptions"]["type"].as_str())
        .map(str::to_owned)
}

/// Both ways can write the BPF filesystem on AppArmor nodes (Ubuntu,
/// Debian: containerd's default profile) and on SELinux nodes (`spc_t`,
/// cilium-agent's type), whatever the pod around the sidecar says: in
/// sidecar mode the pod is Cilium's, so the container names both itself.
#[test]
fn both_ways_name_apparmor_unconfined_and_selinux_spc_t() {
    let ds = daemonset();
    let ds_pod = &ds["spec"]["template"];
    // The values' container in a pod that names nothing: a Cilium install
    // whose podSecurityContext was overridden.
    let bare: Value = serde_norway::from_str("{metadata: {}, spec: {}}").expect("yaml");
    for (way, pod, c) in [
        ("daemonset.yaml", ds_pod, daemonset_container()),
        ("cilium-values.yaml", &bare, values_container()),
    ] {
        assert_eq!(
            apparmor_profile(pod, &c).as_deref(),
            Some("Unconfined"),
            "{way}: containerd's default AppArmor profile would deny /sys/fs/bpf"
        );
        assert_eq!(selinux_type(pod, &c).as_deref(), Some("spc_t"), "{way}");
        assert_eq!(
            c["securityContext"]["seLinuxOptions"]["level"].as_str(),
            Some("s0"),
            "{way}"
        );
    }
    // The model itself: a container and pod naming nothing get the default.
    let plain: Value = serde_norway::from_str("{name: x}").expect("yaml");
    assert_eq!(apparmor_profile(&bare, &plain), None);
    let annotated: Value = serde_norway::from_str(
        "{metadata: {annotations: {container.apparmor.security.beta.kubernetes.io/x: unconfined}}, spec: {}}",
    )
    .expect("yaml");
    assert_eq!(
        apparmor_profile(&annotated, &plain).as_deref(),
        Some("Unconfined")
    );
}

/// The chart's values hold the sidecar and nothing else: kube-proxy
/// replacement, BPF masquerading and the egress gateway are datapath
/// changes of an existing cluster, set by `make e2e` alone. And no probe of
/// the sidecar can make cilium-agent's pod NotReady or restart it.
#[test]
fn the_values_change_nothing_of_cilium_and_carry_no_probe() {
    let values = one_document("manifests/deploy/cilium-values.yaml");
    let keys: Vec<&str> = values
        .as_mapping()
        .expect("values")
        .keys()
        .map(|k| k.as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["extraContainers"]);
    let c = values_container();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert!(c[probe].is_null(), "cilium-values.yaml: {probe}");
    }
    // The DaemonSet, in a pod of its own, keeps both.
    let ds = daemonset_container();
    assert!(ds["livenessProbe"].is_mapping() && ds["readinessProbe"].is_mapping());
    // What the values no longer set, make e2e sets for its own cluster.
    let script = read("scripts/e2e-kind.sh");
    for set in [
        "kubeProxyReplacement=true",
        "bpf.masquerade=true",
        "egressGateway.enabled=true",
    ] {
        assert!(script.contains(&format!("--set {set}")), "{set}");
    }
}

/// Runs scripts/deploy-config.sh with `env` into a new directory; its
/// output and the directory.
fn deploy_config(env: &[(&str, &str)]) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("bash")
        .arg(root().join("scripts/deploy-config.sh"))
        .env_remove("IMAGE")
        .env_remove("K8S_SERVICE_HOST")
        .env_remove("K8S_SERVICE_PORT")
        .env_remove("PROMETHEUS_RELEASE")
        .env("OUT", dir.path().join("out"))
        .envs(env.iter().copied())
        .output()
        .expect("deploy-config.sh");
    (out, dir)
}

fn kustomize(kubectl: &Path, dir: &Path) -> Vec<Value> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl kustomize");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl kustomize {}:\n{text}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    repo::parse_documents("kustomize output", &text)
}

fn env_names(c: &Value) -> Vec<String> {
    c["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| string(&e["name"], "env name"))
        .collect()
}

/// One name for the image, the API server and the Prometheus release, and
/// every file a cluster gets carries them: the chart's values (compared
/// field by field with the base: nothing else differs) and both kustomize
/// overlays, built by the real kustomize (kubectl's).
#[test]
fn deploy_config_puts_one_image_and_api_server_into_every_way() {
    let Some(kubectl) = lab::kube::require_tool(
        "deploy_config_puts_one_image_and_api_server_into_every_way",
        "kubectl",
    ) else {
        return;
    };
    let image = "registry.example.org:5000/team/cilium-mcast-egress:0.1.0";
    let (run, dir) = deploy_config(&[
        ("IMAGE", image),
        ("K8S_SERVICE_HOST", "api.cluster.example.org"),
        ("K8S_SERVICE_PORT", "6443"),
        ("PROMETHEUS_RELEASE", "monitoring"),
    ]);
    assert!(run.status.success(), "{run:?}");
    let out = dir.path().join("out");
    let api = [
        ("KUBERNETES_SERVICE_HOST", "api.cluster.example.org"),
        ("KUBERNETES_SERVICE_PORT", "6443"),
    ];

    // The values: the base's container with the image and the two variables.
    let text = std::fs::read_to_string(out.join("cilium-values.yaml")).expect("values");
    let rendered: Value = serde_norway::from_str(&text).expect("values yaml");
    let mut c = rendered["extraContainers"][0].clone();
    assert_eq!(c["image"].as_str(), Some(image));
    let env = c["env"].as_sequence_mut().expect("env");
    for (name, value) in api {
        let i = env
            .iter()
            .position(|e| e["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("values: no {name}"));
        assert_eq!(env[i]["value"].as_str(), Some(value));
        env.remove(i);
    }
    c["image"] = values_container()["image"].clone();
    assert_eq!(
        c,
        values_container(),
        "values: more than image and env changed"
    );
    assert_eq!(rendered.as_mapping().map(|m| m.len()), Some(1));

    // The DaemonSet overlay: the base with the image and the variables.
    let docs = kustomize(&kubectl, &out.join("daemonset"));
    let base = kustomize(&kubectl, &root().join("manifests/deploy"));
    assert_eq!(docs.len(), base.len());
    let ds = by_kind(&docs, "DaemonSet")[0];
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"].as_str(), Some(image));
    let names = env_names(c);
    assert_eq!(
        names,
        ["NODE_NAME", "RUST_LOG", api[0].0, api[1].0],
        "DaemonSet env"
    );
    for (name, value) in api {
        let e = c["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .expect("env var");
        assert_eq!(e["value"].as_str(), Some(value));
    }
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"] {
        assert_eq!(by_kind(&docs, kind), by_kind(&base, kind), "{kind}");
    }

    // Monitoring: every object labelled for kube-prometheus-stack's
    // selectors, none of the selectors changed.
    let docs = kustomize(&kubectl, &out.join("monitoring"));
    let base = kustomize(&kubectl, &root().join("manifests/monitoring"));
    assert_eq!(docs.len(), base.len());
    for (d, b) in docs.iter().zip(&base) {
        assert_eq!(
            d["metadata"]["labels"]["release"].as_str(),
            Some("monitoring"),
            "{}",
            string(&d["metadata"]["name"], "name")
        );
        // The base carries the stack's documented release name.
        assert_eq!(
            b["metadata"]["labels"]["release"].as_str(),
            Some("kube-prometheus-stack")
        );
        assert_eq!(d["spec"]["selector"], b["spec"]["selector"]);
    }
    assert_eq!(by_kind(&docs, "PodMonitor").len(), 2);
    assert_eq!(by_kind(&docs, "PrometheusRule").len(), 1);

    // Positive control: without an API server, no variable anywhere, and
    // a digest instead of a tag.
    let digest = format!("registry.example.org/mcast@sha256:{}", "ab".repeat(32));
    let (run, dir) = deploy_config(&[("IMAGE", &digest)]);
    assert!(run.status.success(), "{run:?}");
    let out = dir.path().join("out");
    let text = std::fs::read_to_string(out.join("cilium-values.yaml")).expect("values");
    let rendered: Value = serde_norway::from_str(&text).expect("values yaml");
    assert_eq!(
        env_names(&rendered["extraContainers"][0]),
        ["NODE_NAME", "RUST_LOG"]
    );
    let docs = kustomize(&kubectl, &out.join("daemonset"));
    let c = &by_kind(&docs, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"].as_str(), Some(digest.as_str()));
    assert_eq!(env_names(c), ["NODE_NAME", "RUST_LOG"]);
}

/// Settings that would deploy something broken are refused before a file
/// is written, each with its reason.
#[test]
fn deploy_config_refuses_what_would_not_run() {
    for (env, why) in [
        (
            vec![("IMAGE", "registry.example.org/cilium-mcast-egress")],
            "has no tag or digest",
        ),
        (
            vec![("IMAGE", "Registry.example.org/Mcast:1")],
            "is not an image reference",
        ),
        (
            vec![("IMAGE", "r.example.org/m:1\n  privileged: true")],
            "is not an image reference",
        ),
        (vec![("K8S_SERVICE_HOST", "api.example.org")], "go together"),
        (
            vec![("K8S_SERVICE_HOST", "a\"b"), ("K8S_SERVICE_PORT", "6443")],
            "is not a host name",
        ),
        (
            vec![
                ("K8S_SERVICE_HOST", "192.0.2.1"),
                ("K8S_SERVICE_PORT", "70000"),
            ],
            "is not a port",
        ),
        (vec![("PROMETHEUS_RELEASE", "a b")], "is not a label value"),
    ] {
        let (run, dir) = deploy_config(&env);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{env:?}: {err}");
        assert!(err.contains(why), "{env:?}: {err}");
        assert!(!dir.path().join("out").exists(), "{env:?}: wrote files");
    }
    // Positive control: the same settings, valid, are taken.
    let (run, dir) = deploy_config(&[
        ("IMAGE", "registry.example.org/cilium-mcast-egress:0.1.0"),
        ("K8S_SERVICE_HOST", "192.0.2.1"),
        ("K8S_SERVICE_PORT", "6443"),
    ]);
    assert!(run.status.success(), "{run:?}");
    assert!(dir.path().join("out/cilium-values.yaml").is_file());
}

/// `make push` pushes exactly the name `make image` built, and refuses a
/// name without a registry before a Docker engine is asked anything.
#[test]
fn push_sends_the_one_name_and_refuses_a_bare_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin");
    let calls = dir.path().join("calls");
    let docker = bin.join("docker");
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\necho \"docker $*\" >> {}\nexit 0\n",
            calls.display()
        ),
    )
    .expect("stub");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let push = |image: &str| {
        Command::new("make")
            .args(["-s", "-C"])
            .arg(root())
            .args(["push", &format!("IMAGE={image}")])
            .env("PATH", &path)
            .output()
            .expect("make push")
    };
    let run = push("cilium-mcast-egress:0.1.0");
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("names no registry"),
        "{run:?}"
    );
    assert!(!calls.exists(), "docker ran for a bare name");

    let image = "registry.example.org/team/cilium-mcast-egress:0.1.0";
    let run = push(image);
    assert!(run.status.success(), "{run:?}");
    let log = std::fs::read_to_string(&calls).expect("calls");
    assert!(
        log.lines().any(|l| l == format!("docker push {image}")),
        "{log}"
    );
}

/// README's way to deploy names one image for build, push and files, and
/// pins the chart version it upgrades Cilium at.
#[test]
fn readme_deploying_pins_the_chart_and_names_one_image() {
    let readme = read("README.md");
    let section = readme
        .split("\n### Deploying\n")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("README has a Deploying section");
    assert!(
        section.contains("make image push deploy-config IMAGE="),
        "one command with one IMAGE"
    );
    let helm: Vec<&str> = section
        .lines()
        .filter(|l| l.trim_start().starts_with("helm upgrade"))
        .collect();
    assert!(!helm.is_empty(), "no helm upgrade");
    for l in &helm {
        assert!(l.contains("--version"), "unpinned: {l}");
        assert!(l.contains("target/deploy/cilium-values.yaml"), "{l}");
    }
    assert!(section.contains("helm list -n kube-system"));
    assert!(section.contains("kubectl apply -k target/deploy/daemonset"));
    assert!(section.contains("kubectl apply -k target/deploy/monitoring"));
}
