//! The deployment against a real API server: `kubectl apply --dry-run=server`
//! (strict field validation, admission, the server's own defaulting) of the
//! DaemonSet base, `make deploy-config`'s overlay, and the chart values'
//! container wrapped in a Pod. The Prometheus Operator objects need its CRDs,
//! which no source reachable here carries: the server says so, and
//! tests/manifests.rs checks them field by field instead. And the RBAC as
//! deployed, with the real daemon on its ServiceAccount's token. Root (the
//! API server runs in a network namespace); under `CI=true` it must run.

mod common;

use std::time::{Duration, Instant};

use cilium_mcast_egress::datapath::maps::Maps;
use cilium_mcast_egress::datapath::Paths;
use common::daemon::{self, Running};
use common::node::OneCamera;
use common::repo::{documents, root};
use common::yaml;
use lab::kube::KubeApi;
use serde_norway::Value;

/// Where the daemon serves, in the control plane's namespace.
const PROBE: &str = "127.0.0.1:9980";

/// The values' container in a Pod shaped like cilium-agent's: host network,
/// the chart's `bpf-maps` volume.
fn values_pod() -> String {
    let values = &documents("manifests/deploy/cilium-values.yaml")[0];
    let container: Value = values["extraContainers"][0].clone();
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cilium-agent-with-mcast-egress", "namespace": "kube-system"},
        "spec": {
            "hostNetwork": true,
            "containers": [serde_json::to_value(container).expect("container as JSON")],
            "volumes": [{"name": "bpf-maps", "hostPath": {"path": "/sys/fs/bpf", "type": "DirectoryOrCreate"}}],
        },
    });
    serde_json::to_string_pretty(&pod).expect("pod as JSON")
}

#[test]
fn the_deployment_passes_the_api_servers_own_checks() {
    let Some(api) = KubeApi::shared("the_deployment_passes_the_api_servers_own_checks") else {
        return;
    };
    // No controller-manager: the ServiceAccount admission of the Pod needs
    // kube-system's `default` to exist.
    api.ensure_service_account("kube-system", "default")
        .expect("kube-system/default");

    let base = root().join("manifests/deploy");
    let out = api
        .kubectl(&[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-k",
            base.to_str().expect("path"),
        ])
        .expect("the deploy base, server-side");
    for object in [
        "serviceaccount/cilium-mcast-egress",
        "clusterrole.rbac.authorization.k8s.io/cilium-mcast-egress",
        "clusterrolebinding.rbac.authorization.k8s.io/cilium-mcast-egress",
        "daemonset.apps/cilium-mcast-egress",
    ] {
        assert!(
            out.contains(&format!("{object} created (server dry run)")),
            "{object} not accepted:\n{out}"
        );
    }

    // make deploy-config's overlay, as a user applies it.
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = dir.path().join("deploy");
    let run = std::process::Command::new("bash")
        .arg(root().join("scripts/deploy-config.sh"))
        .env("OUT", &rendered)
        .env("IMAGE", "registry.example.org/cilium-mcast-egress:0.1.0")
        .env("K8S_SERVICE_HOST", "192.0.2.1")
        .env("K8S_SERVICE_PORT", "6443")
        .output()
        .expect("deploy-config");
    assert!(run.status.success(), "{run:?}");
    let overlay = rendered.join("daemonset");
    let out = api
        .kubectl(&[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-k",
            overlay.to_str().expect("path"),
            "-o",
            "yaml",
        ])
        .expect("the overlay, server-side");
    assert!(
        out.contains("image: registry.example.org/cilium-mcast-egress:0.1.0")
            && out.contains("KUBERNETES_SERVICE_HOST"),
        "{out}"
    );

    // The chart values' container, in a Pod. The server keeps the fields
    // it knows: AppArmor and SELinux come back as given.
    let out = api
        .kubectl_as(
            &api.kubeconfig(),
            &[
                "apply",
                "--dry-run=server",
                "--validate=strict",
                "-f",
                "-",
                "-o",
                "json",
            ],
            Some(&values_pod()),
        )
        .expect("the values' container in a Pod, server-side");
    let pod: serde_json::Value = serde_json::from_str(&out).expect("pod JSON");
    let sc = &pod["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["appArmorProfile"]["type"], "Unconfined", "{sc}");
    assert_eq!(sc["seLinuxOptions"]["type"], "spc_t", "{sc}");
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["BPF", "NET_ADMIN", "PERFMON"])
    );

    // Positive control: a field the server does not know, and a field of the
    // wrong type, are refused by the same command.
    for (what, broken) in [
        (
            "unknown field",
            values_pod().replace("\"hostNetwork\"", "\"hostNetworkk\""),
        ),
        (
            "wrong type",
            values_pod().replace("\"hostNetwork\": true", "\"hostNetwork\": \"yes\""),
        ),
    ] {
        let refused = api.kubectl_as(
            &api.kubeconfig(),
            &["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
            Some(&broken),
        );
        assert!(refused.is_err(), "{what} accepted");
    }

    // The Prometheus Operator objects: without its CRDs the server knows no
    // such kind. Said, not skipped silently.
    let monitoring = root().join("manifests/monitoring");
    let err = api
        .kubectl(&[
            "apply",
            "--dry-run=server",
            "-k",
            monitoring.to_str().expect("path"),
        ])
        .expect_err("PodMonitor without its CRD");
    let err = err.to_string();
    assert!(
        err.contains("PodMonitor") && err.contains("ensure CRDs are installed first"),
        "{err}"
    );
    eprintln!(
        "\n!!! NOT CHECKED server-side: PodMonitor and PrometheusRule (no source of the \
         Prometheus Operator's CRDs is reachable here; tests/manifests.rs checks their fields). !!!\n"
    );
}

/// `kubectl auth can-i VERB RESOURCE --as=ACCOUNT`: "yes" or "no".
fn can_i(api: &KubeApi, account: &str, verb: &str, resource: &str) -> String {
    let out = api.kubectl_as(
        &api.kubeconfig(),
        &["auth", "can-i", verb, resource, "--as", account],
        None,
    );
    // `can-i` exits 1 on "no", with "no" on stdout.
    match out {
        Ok(s) => s.trim().to_owned(),
        Err(e) => {
            let e = e.to_string();
            if e.contains("no") {
                "no".into()
            } else {
                e
            }
        }
    }
}

/// The daemon as deployed: manifests/deploy applied for real, the daemon
/// run with its ServiceAccount's token (a TokenRequest), not as admin, and
/// it syncs. The account can do nothing but get/list/watch the three
/// kinds. A role without `watch` (the control) shows as a named reason in
/// `/readyz`, not as a silent stall.
#[test]
fn the_deployed_rbac_is_enough_to_sync_and_no_more() {
    let test = "the_deployed_rbac_is_enough_to_sync_and_no_more";
    if !common::privileged(test) {
        return;
    }
    let Some(assets) = lab::kube::Assets::require(test) else {
        return;
    };
    // A control plane of its own: this test puts devices into its namespace.
    let api = KubeApi::start(&assets, lab::kube::KubeOptions::default()).expect("control plane");
    api.kubectl(&[
        "apply",
        "-k",
        root().join("manifests/deploy").to_str().expect("path"),
    ])
    .expect("manifests/deploy applied");

    let sa = "system:serviceaccount:kube-system:cilium-mcast-egress";
    let kinds = [
        "ciliumegressgatewaypolicies.cilium.io",
        "ciliumnodes.cilium.io",
        "ciliumendpoints.cilium.io",
    ];
    for kind in kinds {
        for verb in ["get", "list", "watch"] {
            assert_eq!(can_i(&api, sa, verb, kind), "yes", "{verb} {kind}");
        }
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            assert_eq!(can_i(&api, sa, verb, kind), "no", "{verb} {kind}");
        }
    }
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("list", "pods"),
        ("get", "configmaps"),
        ("create", "serviceaccounts/token"),
        ("list", "ciliumidentities.cilium.io"),
        ("create", "ciliumegressgatewaypolicies.cilium.io"),
        ("*", "*"),
    ] {
        assert_eq!(can_i(&api, sa, verb, resource), "no", "{verb} {resource}");
    }
    // The control of `can-i` itself: admin may.
    assert_eq!(
        api.kubectl(&["auth", "can-i", "get", "secrets"])
            .map(|s| s.trim().to_owned())
            .ok()
            .as_deref(),
        Some("yes")
    );

    // The cluster node-a sees: itself, one pod, a policy naming it gateway.
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: media\n")
        .expect("namespace media");
    api.apply(&yaml::one_camera_cluster())
        .expect("the cluster's objects");

    // A second account whose role lacks `watch`.
    api.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: no-watch, namespace: kube-system}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: mcast-no-watch}\n\
         rules:\n- apiGroups: [cilium.io]\n  resources: [ciliumegressgatewaypolicies, ciliumnodes, ciliumendpoints]\n  verbs: [get, list]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: mcast-no-watch}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: mcast-no-watch}\n\
         subjects:\n- {kind: ServiceAccount, name: no-watch, namespace: kube-system}\n",
    )
    .expect("the no-watch account");

    let deployed = api
        .token_kubeconfig(
            "kube-system",
            "cilium-mcast-egress",
            Duration::from_secs(3600),
        )
        .expect("the deployed account's token");
    let no_watch = api
        .token_kubeconfig("kube-system", "no-watch", Duration::from_secs(3600))
        .expect("the no-watch account's token");

    api.in_netns(|| {
        let OneCamera { node, .. } = OneCamera::new(test);
        let start = |kubeconfig: &std::path::Path| {
            Running::spawn(
                daemon::command("node-a", node.ours.path(), node.cilium.path(), PROBE)
                    .args(["--resync-interval-ms", "200"])
                    .env("KUBECONFIG", kubeconfig)
                    .env("RUST_LOG", "info")
                    .env("NO_COLOR", "1"),
                PROBE,
            )
        };

        // The deployed account: ready, with the policy's entry written.
        let mut d = start(&deployed);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(d.exited().is_none(), "exited:\n{}", d.log_text());
            if d.http_get("/readyz").map(|r| r.0) == Some(200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never ready with the deployed account: {:?}\n{}",
                d.http_get("/readyz"),
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let maps = Maps::open_pinned(&Paths::new(node.ours.path())).expect("our maps");
        assert!(
            !maps.policies().expect("policy entries").is_empty(),
            "ready, but no policy entry"
        );
        d.stop();

        // Without `watch`: not a silent stall, a reason.
        let mut d = start(&no_watch);
        let deadline = Instant::now() + Duration::from_secs(30);
        let body = loop {
            assert!(d.exited().is_none(), "exited:\n{}", d.log_text());
            let r = d.http_get("/readyz");
            if let Some((503, body)) = &r {
                if body.contains("kubernetes source") && body.contains("forbidden") {
                    break body.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no reason given without watch: {r:?}\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(body.contains("watch"), "{body}");
        assert_eq!(d.http_get("/healthz").map(|r| r.0), Some(200));
        eprintln!("without watch, /readyz says:\n{body}");
        d.stop();
    })
    .expect("in the control plane's namespace");
}
