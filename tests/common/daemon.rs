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
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "the daemon exits cleanly on SIGTERM: {status}"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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
