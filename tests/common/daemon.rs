//! The daemon as a test runs it: a child process of the real binary,
//! killed by its pid when dropped (also when an assertion fails first), and
//! its probe port.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `run` for `node` on our and Cilium's BPF filesystems, serving on
/// `probe`; the caller adds the source and anything else.
pub fn command(node: &str, bpffs: &Path, cilium: &Path, probe: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cilium-mcast-egress"));
    cmd.args(["run", "--node-name", node, "--bpffs-root"])
        .arg(bpffs)
        .arg("--cilium-bpffs")
        .arg(cilium)
        .args(["--metrics-addr", probe])
        .stdin(Stdio::null());
    cmd
}

pub struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    pub fn spawn(cmd: &mut Command) -> Daemon {
        Daemon::from_child(cmd.spawn().expect("starting the daemon"))
    }

    pub fn from_child(child: Child) -> Daemon {
        Daemon { child: Some(child) }
    }

    /// SIGTERM, as the kubelet stops a pod; the daemon must exit cleanly
    /// within 10 s.
    pub fn stop(self) {
        self.stop_within(Duration::from_secs(10));
    }

    /// SIGTERM; the daemon must exit cleanly within `limit`. Returns how
    /// long it took.
    pub fn stop_within(mut self, limit: Duration) -> Duration {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let sent = Instant::now();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "the daemon exits cleanly on SIGTERM: {status}"
                );
                return sent.elapsed();
            }
            assert!(
                sent.elapsed() < limit,
                "the daemon did not stop on SIGTERM within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How the daemon exited, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("wait"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET path` on `probe`: status and body; None when nothing answers.
pub fn http_get(probe: &str, path: &str) -> Option<(u16, String)> {
    let mut s =
        std::net::TcpStream::connect_timeout(&probe.parse().ok()?, Duration::from_millis(300))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: probe\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    Some((
        r.split_whitespace().nth(1)?.parse().ok()?,
        r.split_once("\r\n\r\n")?.1.to_owned(),
    ))
}

/// The status code of `GET path` on `probe`.
pub fn http_status(probe: &str, path: &str) -> Option<u16> {
    http_get(probe, path).map(|(status, _)| status)
}

/// The daemon as node-a on a manifests directory, its stderr collected
/// line by line.
pub struct Running {
    daemon: Daemon,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    probe: String,
}

impl Running {
    /// `run` on `manifests`, our and Cilium's BPF filesystems, serving on
    /// `probe`, passing every `resync_ms`; `extra` flags added.
    pub fn start(
        manifests: &Path,
        bpffs: &Path,
        cilium: &Path,
        probe: &str,
        resync_ms: u32,
        extra: &[&str],
    ) -> Running {
        Running::spawn(
            command("node-a", bpffs, cilium, probe)
                .arg("--manifests")
                .arg(manifests)
                .args(["--resync-interval-ms", &resync_ms.to_string()])
                .args(extra),
            probe,
        )
    }

    /// `cmd` (a `run` serving on `probe`), logging at info level.
    pub fn spawn(cmd: &mut Command, probe: &str) -> Running {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the daemon");
        let log = collect_lines(child.stderr.take().expect("piped stderr"));
        Running {
            daemon: Daemon::from_child(child),
            log,
            probe: probe.to_owned(),
        }
    }

    /// `GET path` on the daemon's probe address.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.probe, path)
    }

    /// How the daemon exited, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.daemon.exited()
    }

    /// The log lines so far that contain `what`.
    pub fn log_lines(&self, what: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .cloned()
            .collect()
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The sample `name{labels}` of a scrape now.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (status, m) = http_get(&self.probe, "/metrics").expect("/metrics answers");
        assert_eq!(status, 200, "{m}");
        sample(&m, name, labels)
    }

    /// SIGTERM; the daemon must exit cleanly.
    pub fn stop(self) {
        self.daemon.stop();
    }

    /// SIGTERM; the daemon must exit cleanly within `limit`. Returns how
    /// long it took.
    pub fn stop_within(self, limit: Duration) -> Duration {
        self.daemon.stop_within(limit)
    }
}

/// Every line `r` yields, collected as it comes.
pub fn collect_lines(
    r: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// The value of the sample `name{labels}` in a scrape, labels given in any
/// order as `key="value"` pairs.
pub fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = match series.split_once('{') {
            Some((m, r)) => (m, r.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let pairs: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split(',').collect()
        };
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        if pairs.len() != wanted.len() || !wanted.iter().all(|w| pairs.contains(&w.as_str())) {
            return None;
        }
        value.parse().ok()
    })
}
