//! The lab's nodes as containers, as kind's nodes are, and the sidecar run
//! from its image beside each of them (`make e2e-local`).
//!
//! A node is a long-running container with no network of its own
//! (`--network none`); `ip netns attach` names its namespace, and the lab
//! wires that namespace exactly as it wires a plain one. The sidecar of a
//! node runs from the image in the node container's namespace
//! (`--network container:NODE`, as the containers of one pod share it),
//! with the node's BPF filesystems and the manifests directory bind-mounted,
//! a read-only root filesystem, every capability dropped but the ones given.
//!
//! Every container carries the label [`LABEL`] with its lab's prefix, so that
//! the containers of a lab whose process died are found and removed by the
//! next one.

use std::path::Path;

use super::{run, run_unchecked, LabError, Node, Result};

/// The label on every container of a lab: its prefix.
pub const LABEL: &str = "io.cilium-mcast-egress.lab";

/// Where the sidecar finds its mounts inside its container.
pub const BPFFS_IN: &str = "/sys/fs/bpf";
pub const CILIUM_BPFFS_IN: &str = "/run/cilium-bpffs";
pub const MANIFESTS_IN: &str = "/etc/cilium-mcast-egress/manifests";

/// How the nodes and their sidecars run in containers.
#[derive(Debug, Clone)]
pub struct Containers {
    /// The sidecar's image (`make image`).
    pub image: String,
    /// The capabilities the sidecar gets, all others dropped (names as
    /// `docker run --cap-add` takes them).
    pub cap_add: Vec<String>,
    /// A statically linked busybox for the node image, which the lab
    /// builds from it (nothing is pulled).
    pub busybox: std::path::PathBuf,
}

impl Containers {
    pub fn new(image: impl Into<String>, cap_add: &[&str]) -> Self {
        Containers {
            image: image.into(),
            cap_add: cap_add.iter().map(|c| (*c).to_owned()).collect(),
            busybox: "/bin/busybox".into(),
        }
    }
}

pub fn docker(args: &[&str]) -> Result<String> {
    run("docker", args)
}

/// The image a node container runs: FROM scratch with busybox, whose
/// `sleep` keeps the container (and so its namespace) alive. Tagged per lab.
pub(super) fn build_node_image(busybox: &Path, tag: &str, dir: &Path) -> Result<()> {
    let ctx = dir.join("node-image");
    std::fs::create_dir_all(&ctx).map_err(super::io("creating the node image context"))?;
    std::fs::copy(busybox, ctx.join("busybox")).map_err(super::io(format!(
        "copying {} (apt-get install busybox-static)",
        busybox.display()
    )))?;
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n\
         CMD [\"sleep\", \"2147483647\"]\n",
    )
    .map_err(super::io("writing the node Dockerfile"))?;
    let ctx = ctx.to_string_lossy().into_owned();
    docker(&["build", "--quiet", "--tag", tag, &ctx]).map(|_| ())
}

/// Start node container `name` and return its init's pid.
pub(super) fn start_node(prefix: &str, name: &str, hostname: &str, image: &str) -> Result<u32> {
    docker(&[
        "run",
        "--detach",
        "--name",
        name,
        "--hostname",
        hostname,
        "--network",
        "none",
        "--label",
        &format!("{LABEL}={prefix}"),
        image,
    ])?;
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", name])?;
    pid.trim().parse().map_err(|_| LabError::Command {
        cmd: format!("docker inspect {name}"),
        detail: format!("no pid in {pid:?}"),
    })
}

/// What a sidecar container is started with.
pub(super) struct Sidecar {
    pub prefix: String,
    pub name: String,
    pub node_container: String,
    pub node: Node,
    pub bpffs: std::path::PathBuf,
    pub cilium_bpffs: std::path::PathBuf,
    pub manifests: std::path::PathBuf,
    pub resync_ms: u128,
    pub log_level: String,
}

/// `docker run` the sidecar of one node.
pub(super) fn start_sidecar(c: &Containers, s: &Sidecar) -> Result<()> {
    let mount = |host: &Path, inside: &str| format!("{}:{inside}", host.display());
    let mut args: Vec<String> = [
        "run",
        "--detach",
        "--name",
        &s.name,
        "--network",
        &format!("container:{}", s.node_container),
        "--label",
        &format!("{LABEL}={}", s.prefix),
        "--read-only",
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "ALL",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    for cap in &c.cap_add {
        args.extend(["--cap-add".to_owned(), cap.clone()]);
    }
    args.extend([
        "--volume".to_owned(),
        mount(&s.bpffs, BPFFS_IN),
        "--volume".to_owned(),
        mount(&s.cilium_bpffs, CILIUM_BPFFS_IN),
        "--volume".to_owned(),
        format!("{}:ro", mount(&s.manifests, MANIFESTS_IN)),
        "--env".to_owned(),
        format!("NODE_NAME={}", s.node.name()),
        "--env".to_owned(),
        format!("RUST_LOG={}", s.log_level),
        c.image.clone(),
        "run".to_owned(),
        "--manifests".to_owned(),
        MANIFESTS_IN.to_owned(),
        "--bpffs-root".to_owned(),
        BPFFS_IN.to_owned(),
        "--cilium-bpffs".to_owned(),
        CILIUM_BPFFS_IN.to_owned(),
        // As the DaemonSet does: on every address of the node, so that
        // Prometheus scrapes it over the underlay.
        "--metrics-addr".to_owned(),
        "0.0.0.0:9980".to_owned(),
        "--resync-interval-ms".to_owned(),
        s.resync_ms.to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&args).map(|_| ())
}

/// Whether container `name` is running.
pub fn running(name: &str) -> bool {
    run_unchecked(
        "docker",
        &["inspect", "--format", "{{.State.Running}}", name],
    )
    .is_ok_and(|s| s.trim() == "true")
}

/// The exit code of stopped container `name`.
pub(super) fn exit_code(name: &str) -> Result<i32> {
    let out = docker(&["inspect", "--format", "{{.State.ExitCode}}", name])?;
    out.trim().parse().map_err(|_| LabError::Command {
        cmd: format!("docker inspect {name}"),
        detail: format!("no exit code in {out:?}"),
    })
}

/// The main process of running container `name`, as the host sees it.
pub fn pid(name: &str) -> Result<u32> {
    let out = docker(&["inspect", "--format", "{{.State.Pid}}", name])?;
    match out.trim().parse() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(LabError::Command {
            cmd: format!("docker inspect {name}"),
            detail: format!("not running (pid {out:?})"),
        }),
    }
}

/// Stdout and stderr of container `name` so far.
pub(super) fn logs(name: &str) -> String {
    match std::process::Command::new("docker")
        .args(["logs", name])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => String::new(),
    }
}

/// Remove containers and the image of a lab (also while stopping).
pub(super) fn remove(names: &[String], image: Option<&str>) {
    if !names.is_empty() {
        let mut args = vec!["rm", "--force", "--volumes"];
        args.extend(names.iter().map(String::as_str));
        let _ = run_unchecked("docker", &args);
    }
    if let Some(image) = image {
        let _ = run_unchecked("docker", &["image", "rm", "--force", image]);
    }
}

/// Remove the containers and node image of lab `prefix` (a dead one).
pub(super) fn reap(prefix: &str) {
    let Ok(out) = run_unchecked(
        "docker",
        &[
            "ps",
            "--all",
            "--quiet",
            "--filter",
            &format!("label={LABEL}={prefix}"),
        ],
    ) else {
        return;
    };
    let ids: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
    remove(&ids, Some(&node_image_tag(prefix)));
}

/// The prefixes of labs that have containers (alive or not).
pub(super) fn lab_prefixes() -> Vec<String> {
    let Ok(out) = run_unchecked(
        "docker",
        &[
            "ps",
            "--all",
            "--filter",
            &format!("label={LABEL}"),
            "--format",
            &format!("{{{{.Label \"{LABEL}\"}}}}"),
        ],
    ) else {
        return Vec::new();
    };
    let mut v: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
    v.sort();
    v.dedup();
    v
}

/// The tag of lab `prefix`'s node image.
pub(super) fn node_image_tag(prefix: &str) -> String {
    format!("cilium-mcast-egress-lab-node:{prefix}")
}
