//! `make e2e` on a user's machine, as far as a machine without a registry
//! goes: scripts/e2e-kind.sh run by an unprivileged user (no root, no
//! capability, no_new_privs, no supplementary group) in a clean
//! environment, with the real make, cargo and docker and stand-ins only
//! for kind, helm and kubectl (they answer their version and refuse the
//! rest).
//!
//! The user's PATH holds links to the shell's and core utilities, the
//! build's tools (cc, clang, make, pkg-config, binutils) and the docker
//! client, and the Rust toolchain, bind-mounted from root's home (mode 700)
//! into a private mount namespace. None of the tests' own tools (tshark,
//! prometheus, promtool, shellcheck, bpftool, nft, busybox, the schema
//! validator, dockerd) is on it, and libbpf-dev's headers are hidden under
//! an empty directory. Its CARGO_HOME is a copy of root's registry
//! (offline), its CARGO_TARGET_DIR is empty: the image is built from scratch.
//! The Docker engine is a dockerd of the test's own, in a network namespace
//! of its own (no bridge, no iptables, no forwarding), serving a socket of
//! the user's group; it is stopped and removed, with everything else the
//! test made, on drop.
//!
//! Checked: without cargo and clang on PATH the script exits 2 naming them
//! (and nothing else of the build), before anything runs; `make image`
//! without clang exits 2 naming it and where it comes from, and tries no
//! apt-get; an engine older than Docker 23 is refused with its reason; with
//! everything there the run gets past its prerequisite check and `make
//! image` (the image exists in the engine, tagged as the manifests name it,
//! and runs `--version`), every file it wrote is the user's, and it stops
//! at the first step that needs a registry, the tools image, saying so.
//!
//! Needs root to set this up (and dockerd, setpriv, unshare, nsenter, ip);
//! without root it skips, loudly, outside CI. A fresh release build of the
//! sidecar: minutes.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::unique_name;

/// The unprivileged user: no entry in /etc/passwd, no home but the test's.
const USER: u32 = 47_113;

/// How long one run of the flow may take (a fresh release build on two
/// shared cores takes about five minutes).
const RUN_TIMEOUT: Duration = Duration::from_secs(40 * 60);

/// The shell and core utilities every user has, and what the scripts and
/// the build's own scripts call (libbpf's Makefile, cc, collect2).
const BASE_TOOLS: &[&str] = &[
    "sh", "bash", "env", "cat", "cp", "mv", "rm", "rmdir", "mkdir", "mktemp", "ls", "ln",
    "install", "stat", "readlink", "realpath", "sed", "awk", "grep", "head", "tail", "tr", "sort",
    "uniq", "wc", "date", "id", "seq", "sleep", "kill", "basename", "dirname", "uname", "tee",
    "touch", "chmod", "find", "xargs", "cut", "true", "false", "expr", "printf", "test", "nproc",
    "getconf", "tar", "gzip", "cmp", "diff", "nice",
];

/// What building the image needs (scripts/ensure-deps.sh image), with the
/// binutils the C compiler runs, and the docker client. The Rust toolchain
/// comes from its own directory.
const BUILD_TOOLS: &[&str] = &[
    "cc",
    "gcc",
    "clang",
    "make",
    "pkg-config",
    "ld",
    "as",
    "ar",
    "ranlib",
    "ldd",
    "docker",
];

/// Tools of the tests and of `make e2e-local` that `make e2e` must not need.
const TEST_TOOLS: &[&str] = &[
    "tshark",
    "prometheus",
    "promtool",
    "shellcheck",
    "bpftool",
    "nft",
    "busybox",
    "kubernetes-validate",
    "dockerd",
    "iperf",
    "socat",
];

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|f| {
            f.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn run_root(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn ok_root(cmd: &str, args: &[&str]) -> String {
    let out = run_root(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the process `pid` is still the one started with `marker` in its
/// command line (a pid is checked before it is signalled).
fn is_ours(pid: i32, marker: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Every mount point at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    let mut points: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points
}

/// A dockerd of the test's own: in a network namespace it creates, with its
/// data, state, pid file and socket under a directory of its own, the
/// socket owned by the user's group, and nothing of the host's network
/// touched. Stopped (by its pid) and removed on drop, with its containerd,
/// its mounts, its namespace and its directory.
struct Engine {
    netns: String,
    dir: PathBuf,
    dockerd: Option<std::process::Child>,
    version: String,
}

impl Engine {
    fn start(gid: u32) -> Engine {
        let netns = unique_name("mcast-clean");
        let dir = PathBuf::from(format!("/tmp/{netns}-engine"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("engine dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(dir.join("daemon.json"), "{}\n").expect("daemon.json");
        ok_root("ip", &["netns", "add", &netns]);
        let mut engine = Engine {
            netns,
            dir,
            dockerd: None,
            version: String::new(),
        };
        ok_root("ip", &["-n", &engine.netns, "link", "set", "lo", "up"]);
        let d = engine.dir.display().to_string();
        let log = fs::File::create(engine.dir.join("dockerd.log")).expect("log");
        // nsenter, not `ip netns exec`: that remounts /sys, and dockerd
        // needs the host's cgroup filesystem under it.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", engine.netns))
            .arg("dockerd")
            .args(["--config-file", &format!("{d}/daemon.json")])
            .args(["--data-root", &format!("{d}/data")])
            .args(["--exec-root", &format!("{d}/exec")])
            .args(["--pidfile", &format!("{d}/dockerd.pid")])
            .args(["-H", &format!("unix://{d}/docker.sock")])
            .args(["--group", &gid.to_string()])
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .args(["--ip-masq=false", "--ip-forward=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        engine.dockerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = engine.docker(&["version", "--format", "{{.Server.Version}}"]);
            if out.status.success() {
                engine.version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                break;
            }
            let exited = engine
                .dockerd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "dockerd did not answer ({exited:?}); its log:\n{}",
                    fs::read_to_string(engine.dir.join("dockerd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        engine
    }

    fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.display())
    }

    /// The docker client, as root, against this engine.
    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .env("DOCKER_HOST", self.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("docker")
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Its server version as (major, minor).
    fn major_minor(&self) -> (u32, u32) {
        let mut parts = self
            .version
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let marker = self.dir.display().to_string();
        if let Some(mut child) = self.dockerd.take() {
            let pid = child.id() as i32;
            signal(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if child.try_wait().ok().flatten().is_none() {
                signal(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
            }
        }
        // Its containerd, if dockerd left it behind.
        if let Some(pid) = fs::read_to_string(self.dir.join("exec/containerd/containerd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            if is_ours(pid, &marker) {
                signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        for point in mounts_under(&self.dir) {
            let _ = Command::new("umount").args(["-l", &point]).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .stderr(Stdio::null())
            .status();
    }
}

/// The user's clean environment: a copy of the repository, a CARGO_HOME
/// seeded from root's registry, an empty target directory, a home and a
/// TMPDIR, a PATH of links, the stand-ins, and mount points for the Rust
/// toolchain and for hiding libbpf-dev's headers. All the user's, under a
/// directory removed on drop.
struct Clean {
    base: PathBuf,
    user: PathBuf,
    repo: PathBuf,
    bin: PathBuf,
    rust: PathBuf,
    sysroot: PathBuf,
    empty: PathBuf,
    state: PathBuf,
}

/// kind, helm and kubectl: each records who ran it (uid, CapEff,
/// NoNewPrivs) and what else its PATH holds, answers its version, and
/// refuses the rest.
const STAND_IN: &str = r#"#!/bin/sh
tool=${0##*/}
{
  printf '%s uid=%s %s %s :' "$tool" "$(id -u)" "$(grep '^CapEff:' /proc/self/status | tr -d '\t')" "$(grep '^NoNewPrivs:' /proc/self/status | tr -d '\t')"
  printf ' %s' "$@"
  printf '\n'
} >> "$STATE/calls"
for t in $PROBE; do
  if command -v "$t" >/dev/null 2>&1; then echo "$t" >> "$STATE/on-path"; fi
done
if [ -e /usr/include/bpf/libbpf.h ]; then echo libbpf.h >> "$STATE/on-path"; fi
case "$tool $1" in
"kind version") echo 'kind v0.29.0 go1.24.2 linux/amd64' ;;
"helm version") echo 'v3.17.3+ge4da497' ;;
"kubectl version") echo 'Client Version: v1.33.1' ;;
*) echo "$tool $*: a stand-in, this run must not get here" >&2; exit 97 ;;
esac
"#;

/// apt-get, on the PATH of the `make image` run: records that it ran.
const APT_GET: &str = r#"#!/bin/sh
echo "apt-get $*" >> "$STATE/apt-get"
exit 100
"#;

impl Clean {
    fn new(tag: &str) -> Clean {
        let base = PathBuf::from(format!(
            "/tmp/{}",
            unique_name(&format!("mcast-clean-{tag}"))
        ));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).expect("base");
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).expect("chmod");
        let user = base.join("user");
        let c = Clean {
            repo: user.join("repo"),
            bin: base.join("bin"),
            rust: base.join("rust"),
            sysroot: PathBuf::from(ok_root("rustc", &["--print", "sysroot"]).trim()),
            empty: base.join("empty"),
            state: user.join("state"),
            user,
            base,
        };
        for d in [&c.user, &c.repo, &c.bin, &c.rust, &c.empty, &c.state] {
            fs::create_dir_all(d).expect("mkdir");
        }
        for d in ["home", "tmp", "target", "cargo"] {
            fs::create_dir_all(c.user.join(d)).expect("mkdir");
        }

        // The repository's files as a checkout has them, without target/.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let copy = format!(
            "tar -C '{}' --exclude=./target --exclude=./.git -cf - . | tar -C '{}' -xf -",
            root.display(),
            c.repo.display()
        );
        ok_root("sh", &["-c", &copy]);
        // Root's registry: sources and index, so that an offline build
        // resolves Cargo.lock. The user's own copy: libbpf-sys's build
        // writes in its source directory.
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cargo"));
        ok_root(
            "cp",
            &[
                "-a",
                &cargo_home.join("registry").display().to_string(),
                &c.user.join("cargo").display().to_string(),
            ],
        );

        for t in BASE_TOOLS {
            if let Some(p) = which(t) {
                symlink(p, c.bin.join(t)).expect("symlink");
            }
        }
        for t in BUILD_TOOLS {
            let p = which(t).unwrap_or_else(|| panic!("{t} on the host: scripts/install-deps.sh"));
            symlink(p, c.bin.join(t)).expect("symlink");
        }
        for t in ["kind", "helm", "kubectl"] {
            let p = c.bin.join(t);
            fs::write(&p, STAND_IN).expect("stand-in");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        ok_root(
            "chown",
            &[
                "-R",
                &format!("{USER}:{USER}"),
                &c.user.display().to_string(),
            ],
        );
        c
    }

    /// Runs `cmd` in the repository copy as the user: a private mount
    /// namespace with the toolchain bind-mounted at `rust/` and libbpf-dev's
    /// headers hidden, then setpriv to the user with no capability, no
    /// group but its own and no_new_privs, and a clean environment. `path`
    /// is the PATH; its output goes to files (read after).
    fn run(&self, engine: &Engine, path: &str, cmd: &[&str], env: &[(&str, String)]) -> Run {
        let u = |d: &str| self.user.join(d).display().to_string();
        let mut vars: Vec<String> = vec![
            format!("PATH={path}"),
            format!("HOME={}", u("home")),
            format!("TMPDIR={}", u("tmp")),
            format!("CARGO_HOME={}", u("cargo")),
            format!("CARGO_TARGET_DIR={}", u("target")),
            "CARGO_NET_OFFLINE=true".to_owned(),
            format!("DOCKER_HOST={}", engine.host()),
            format!("STATE={}", self.state.display()),
            format!(
                "PROBE={}",
                TEST_TOOLS.join(" ") + " cargo rustc clang cc make"
            ),
        ];
        vars.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        let hide = if Path::new("/usr/include/bpf").is_dir() {
            "mount --bind \"$3\" /usr/include/bpf"
        } else {
            ":"
        };
        let setup =
            format!("set -e; mount --bind -o ro \"$1\" \"$2\"; {hide}; shift 3; exec \"$@\"");
        // The output files are root's: outside the user's directory.
        let out = self.base.join(format!("out-{}", unique_name("run")));
        let stdout = fs::File::create(out.with_extension("stdout")).expect("stdout");
        let stderr = fs::File::create(out.with_extension("stderr")).expect("stderr");
        let mut command = Command::new("unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &setup,
                "sh",
            ])
            .arg(&self.sysroot)
            .arg(&self.rust)
            .arg(&self.empty)
            .args(["nice", "-n", "10", "setpriv"])
            .arg(format!("--reuid={USER}"))
            .arg(format!("--regid={USER}"))
            .args(["--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
            .args(["--no-new-privs", "--", "env", "-i"])
            .args(&vars)
            .args(cmd)
            .current_dir(&self.repo)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let started = Instant::now();
        let mut child = command.spawn().expect("unshare");
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if started.elapsed() > RUN_TIMEOUT {
                // The whole group: setpriv's user processes and their
                // children (cargo, rustc, docker).
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                panic!("{cmd:?} still running after {RUN_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let read = |ext: &str| fs::read_to_string(out.with_extension(ext)).unwrap_or_default();
        Run {
            status,
            stdout: read("stdout"),
            stderr: read("stderr"),
            took: started.elapsed(),
        }
    }

    fn path(&self, with_toolchain: bool) -> String {
        let mut p = self.bin.display().to_string();
        if with_toolchain {
            p.push_str(&format!(":{}/bin", self.rust.display()));
        }
        p
    }

    /// A PATH like the full one without `tools`: a second directory of
    /// links.
    fn path_without(&self, tools: &[&str], with_toolchain: bool) -> String {
        let bin = self.base.join(format!("bin-without-{}", tools.join("-")));
        let _ = fs::remove_dir_all(&bin);
        fs::create_dir_all(&bin).expect("mkdir");
        for e in fs::read_dir(&self.bin).expect("bin").map_while(Result::ok) {
            let name = e.file_name();
            if tools.iter().any(|t| name == **t) {
                continue;
            }
            let target = fs::read_link(e.path()).unwrap_or_else(|_| e.path());
            symlink(target, bin.join(&name)).expect("symlink");
        }
        let mut p = bin.display().to_string();
        if with_toolchain {
            p.push_str(&format!(":{}/bin", self.rust.display()));
        }
        p
    }

    fn with_apt_get(&self, path: &str) -> String {
        let dir = self.base.join("apt");
        fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("apt-get");
        fs::write(&p, APT_GET).expect("apt-get");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        format!("{path}:{}", dir.display())
    }

    fn state(&self, name: &str) -> String {
        fs::read_to_string(self.state.join(name)).unwrap_or_default()
    }

    fn reset_state(&self) {
        for f in ["calls", "on-path", "apt-get"] {
            let _ = fs::remove_file(self.state.join(f));
        }
    }

    /// Files under the user's directory that are not the user's.
    fn not_users(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let mut stack = vec![self.user.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().map_while(Result::ok) {
                let Ok(m) = fs::symlink_metadata(e.path()) else {
                    continue;
                };
                if m.uid() != USER {
                    bad.push(format!("{} (uid {})", e.path().display(), m.uid()));
                }
                if m.is_dir() {
                    stack.push(e.path());
                }
            }
        }
        bad
    }
}

impl Drop for Clean {
    fn drop(&mut self) {
        // Nothing is mounted here outside the runs' private namespaces; if a
        // run's namespace leaked one, it goes first.
        for point in mounts_under(&self.base) {
            let _ = Command::new("umount").args(["-l", &point]).status();
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The lines of a problem list ("  - ..."), as the script and `make image`
/// print them.
fn problems(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("  - "))
        .collect()
}

#[test]
fn make_e2e_runs_unprivileged_in_a_clean_environment_up_to_the_registry() {
    let test = "make_e2e_runs_unprivileged_in_a_clean_environment_up_to_the_registry";
    if !common::privileged(test) {
        return;
    }
    for t in [
        "dockerd", "docker", "setpriv", "unshare", "nsenter", "ip", "rustc",
    ] {
        assert!(
            which(t).is_some(),
            "{test}: {t} not on PATH (scripts/install-deps.sh e2e installs what this needs)"
        );
    }
    let started = Instant::now();
    let engine = Engine::start(USER);
    let clean = Clean::new("e2e");
    let setup = started.elapsed();
    let version = env!("CARGO_PKG_VERSION");
    let image = format!("cilium-mcast-egress:{version}");
    let e2e = ["bash", "scripts/e2e-kind.sh"];
    let mut summary = vec![format!(
        "{:<44} Docker {} (private dockerd, its own netns), uid {USER}, {:.1} s to set up",
        "engine, user",
        engine.version,
        setup.as_secs_f64()
    )];
    // The host has the test tools the user must not see (CI installs them).
    let on_host: Vec<&str> = TEST_TOOLS
        .iter()
        .copied()
        .filter(|t| which(t).is_some())
        .collect();
    summary.push(format!(
        "{:<44} {}{}",
        "test tools on the host, not the user's",
        on_host.join(" "),
        if Path::new("/usr/include/bpf/libbpf.h").exists() {
            "; libbpf-dev's headers hidden"
        } else {
            ""
        }
    ));

    // 1. No cargo (nor rustc), no clang: exit 2, each named, nothing else of
    //    the build, before anything runs.
    let path = clean.path_without(&["clang"], false);
    let run = clean.run(&engine, &path, &e2e, &[]);
    let all = run.all();
    assert_eq!(run.status.code(), Some(2), "{all}");
    let named = problems(&run.stderr);
    for t in ["cargo", "rustc", "clang"] {
        assert!(
            named
                .iter()
                .any(|l| l.starts_with(&format!("{t}: not found on PATH"))),
            "{t} not named:\n{all}"
        );
    }
    for l in &named {
        assert!(
            ["cargo:", "rustc:", "clang:", "docker: the engine is Docker"]
                .iter()
                .any(|p| l.starts_with(p)),
            "named something else: {l}\n{all}"
        );
    }
    assert!(all.contains("nothing was changed"), "{all}");
    let calls = clean.state("calls");
    for l in calls.lines() {
        assert!(l.contains(": version"), "not a version question: {l}");
    }
    assert!(
        engine.docker_ok(&["image", "ls", "-q"]).is_empty(),
        "an image was built"
    );
    summary.push(format!(
        "{:<44} exit 2: {}",
        "without cargo and clang",
        named.join(" | ")
    ));

    // 2. `make image` without clang: exit 2 naming it and where it comes
    //    from, nothing installed, no apt-get tried.
    clean.reset_state();
    let path = clean.with_apt_get(&clean.path_without(&["clang"], true));
    let run = clean.run(&engine, &path, &["make", "image"], &[]);
    let all = run.all();
    assert_eq!(run.status.code(), Some(2), "{all}");
    assert!(
        all.contains("make image: missing what building the image needs:"),
        "{all}"
    );
    assert_eq!(
        problems(&run.stderr),
        ["clang: not found on PATH (compiles the BPF programs; Debian/Ubuntu package clang)"],
        "{all}"
    );
    assert!(
        all.contains("apt-get install --no-install-recommends clang"),
        "{all}"
    );
    assert!(all.contains("Nothing was installed."), "{all}");
    assert_eq!(clean.state("apt-get"), "", "apt-get ran");
    assert!(engine.docker_ok(&["image", "ls", "-q"]).is_empty());
    summary.push(format!(
        "{:<44} exit 2: {}",
        "make image without clang",
        problems(&run.stderr).join(" | ")
    ));

    // 3. An engine older than Docker 23, as Debian 12's is: the unmodified
    //    script refuses it, with the reason, and nothing else. The copy's
    //    floor is then lowered to this engine so that the run goes on: the
    //    rest of the flow is the same on any engine.
    let (major, minor) = engine.major_minor();
    if major < 23 {
        clean.reset_state();
        let run = clean.run(&engine, &clean.path(true), &e2e, &[]);
        let all = run.all();
        assert_eq!(run.status.code(), Some(2), "{all}");
        let named = problems(&run.stderr);
        assert_eq!(named.len(), 1, "{all}");
        assert!(
            named[0].starts_with(&format!("docker: the engine is Docker {major}.{minor}"))
                && named[0].contains("(moby/moby#42601)"),
            "{all}"
        );
        summary.push(format!(
            "{:<44} exit 2: {}",
            "the script as it is, on this engine", named[0]
        ));
        let script = clean.repo.join("scripts/e2e-kind.sh");
        let text = fs::read_to_string(&script).expect("script");
        assert!(text.contains("\nMIN_DOCKER=23.0\n"));
        fs::write(
            &script,
            text.replace(
                "\nMIN_DOCKER=23.0\n",
                &format!("\nMIN_DOCKER={major}.{minor}\n"),
            ),
        )
        .expect("script");
        summary.push(format!(
            "{:<44} MIN_DOCKER lowered to {major}.{minor} in the user's copy",
            ""
        ));
    }

    // 4. Everything there: past the check, `make image` for real, then the
    //    tools image, which needs a registry.
    clean.reset_state();
    let run = clean.run(&engine, &clean.path(true), &e2e, &[]);
    let all = run.all();
    eprintln!("--- make e2e, as uid {USER}:\n{all}---");
    assert!(!all.contains("missing prerequisites"), "{all}");
    assert!(
        all.contains("== building the sidecar image: make image"),
        "{all}"
    );
    assert!(all.contains(&format!("built {image}: ")), "{all}");
    // The image is in the engine, under the name the manifests deploy, and
    // runs.
    assert_eq!(
        engine.docker_ok(&[
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"org.opencontainers.image.version\"}}",
            &image
        ]),
        version
    );
    assert_eq!(
        engine.docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "--cap-drop",
            "ALL",
            &image,
            "--version"
        ]),
        format!("cilium-mcast-egress {version}")
    );
    // It stopped at the tools image, saying why, and changed nothing else.
    assert_eq!(run.status.code(), Some(1), "{all}");
    assert!(
        run.stderr.contains(
            "e2e: FAILED: building cilium-mcast-egress-e2e-tools:bookworm-iperf-2.1.8 from scripts/e2e-kind/tools.Dockerfile, which pulls debian:bookworm-slim"
        ) && run.stderr.contains("it needs access to Docker Hub and deb.debian.org"),
        "{all}"
    );
    assert!(!all.contains("== docker network"), "{all}");
    let networks = engine.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!networks.contains("mcast-e2e"), "{networks}");
    // The stand-ins only told their versions; every one ran as the user,
    // with no capability and no_new_privs.
    let calls = clean.state("calls");
    assert!(calls.lines().count() >= 3, "{calls}");
    for l in calls.lines() {
        assert!(
            l.contains(&format!(
                " uid={USER} CapEff:0000000000000000 NoNewPrivs:1 :"
            )),
            "{l}"
        );
        assert!(l.contains(": version"), "{l}");
    }
    // Its PATH had the build's tools and none of the tests'.
    let seen: Vec<String> = clean.state("on-path").lines().map(str::to_owned).collect();
    for t in ["cargo", "rustc", "clang", "cc", "make"] {
        assert!(
            seen.iter().any(|s| s == t),
            "{t} not on the user's PATH: {seen:?}"
        );
    }
    for t in TEST_TOOLS {
        assert!(!seen.iter().any(|s| s == t), "{t} on the user's PATH");
    }
    assert!(
        !seen.iter().any(|s| s == "libbpf.h"),
        "libbpf-dev's headers were not hidden"
    );
    // Every file the run wrote (the build, the user's temporary files) is
    // the user's, and the run's temporary directory is gone.
    let bad = clean.not_users();
    assert!(
        bad.is_empty(),
        "not the user's: {:?}",
        &bad[..bad.len().min(10)]
    );
    let left: Vec<_> = fs::read_dir(clean.user.join("tmp"))
        .expect("tmp")
        .map_while(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    let built = clean
        .user
        .join("target/release/cilium-mcast-egress")
        .metadata()
        .expect("the release binary");
    assert_eq!(built.uid(), USER);

    summary.push(format!(
        "{:<44} exit 1 after {:.0} s: make image built {image} from scratch as uid {USER} \
         (fresh release build); stopped at the tools image (registry)",
        "the whole flow",
        run.took.as_secs_f64()
    ));
    eprintln!("\nmake e2e, unprivileged and clean");
    for l in &summary {
        eprintln!("  {l}");
    }
}
