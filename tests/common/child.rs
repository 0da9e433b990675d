//! Child processes of the lab tests (iperf, tshark): started in a lab
//! namespace, their output read as it comes, stopped by pid on drop; and
//! tshark's captures and field reads.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab::{demo, wait_until, Lab, Node, Pod};

/// A child (iperf, tshark), stopped by its pid when dropped. Its output
/// is read as it comes, so that it never blocks on a full pipe.
pub struct Proc {
    child: Option<Child>,
    what: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn drain(
    from: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let mut s = into.lock().expect("output");
            s.push_str(&line);
            s.push('\n');
        }
    })
}

impl Proc {
    pub fn spawn(what: &str, ns: &str, args: &[&str]) -> Proc {
        let mut child = lab::command("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            drain(child.stdout.take().expect("stdout"), stdout.clone()),
            drain(child.stderr.take().expect("stderr"), stderr.clone()),
        ];
        Proc {
            child: Some(child),
            what: what.to_owned(),
            stdout,
            stderr,
            readers,
        }
    }

    /// Wait until its stderr holds `text`, at most `timeout`.
    pub fn wait_stderr(&mut self, text: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr.lock().expect("output").contains(text) {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                return Err(format!(
                    "{} (exited: {exited}) never said {text:?}: {}",
                    self.what,
                    self.stderr.lock().expect("output")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the exit, at most `timeout`; then SIGTERM, then SIGKILL.
    /// Returns the status (None when it had to be stopped), stdout, stderr.
    pub fn finish(mut self, timeout: Duration) -> (Option<ExitStatus>, String, String) {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break Some(s);
            }
            if Instant::now() > deadline {
                stop(&mut child);
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let out = self.stdout.lock().expect("output").clone();
        let err = self.stderr.lock().expect("output").clone();
        (status, out, err)
    }
}

/// SIGTERM by pid (tshark stops its dumpcap on it), SIGKILL after 3 s.
fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            eprintln!("stopping {} (pid {})", self.what, child.id());
            stop(&mut child);
        }
    }
}

/// tshark capturing `count` packets on `dev` in `ns` into `file`, once it
/// says it is capturing: "Capture started", which dumpcap reports after
/// opening the device ("Capturing on" comes earlier, and packets sent right
/// after it can be missed).
pub fn capture(ns: &str, dev: &str, filter: &str, count: usize, file: &Path) -> Proc {
    let count = count.to_string();
    let file = file.to_str().expect("utf-8 path");
    let mut p = Proc::spawn(
        &format!("tshark on {dev}"),
        ns,
        &["tshark", "-i", dev, "-f", filter, "-c", &count, "-w", file],
    );
    p.wait_stderr("Capture started", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    p
}

/// `tshark -r file` with the given options: one line per packet, fields
/// tab-separated.
pub fn read_fields(file: &Path, opts: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec!["-r", file.to_str().expect("utf-8 path")];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["-T", "fields"]);
    for f in fields {
        args.extend_from_slice(&["-e", f]);
    }
    lab::run("tshark", &args)
        .expect("tshark -r")
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// An iperf2 stream from pod-a1 to `group` through node-b (whose egress
/// address is `egress`), received upstream with a source-specific join,
/// while node-a's and node-b's daemons are killed or stopped and started
/// again five times: every datagram arrives, from `egress`.
pub fn stream_through_restarts(lab: &mut Lab, group: IpAddr, egress: IpAddr) {
    const SECS: u64 = 7;
    const ROUNDS: usize = 5;
    let up = lab.upstream_ns();
    let mut args = vec!["iperf".to_owned()];
    args.extend(demo::ssm_receiver_args(group, egress, SECS + 3));
    let receiver = Proc::spawn("iperf receiver", &up, &strs(&args));
    let group_text = group.to_string();
    wait_until("the iperf receiver to join", Duration::from_secs(5), || {
        lab::run("ip", &["-n", &up, "maddr", "show", "dev", "eth0"])
            .is_ok_and(|m| m.contains(&group_text))
    })
    .expect("receiver");

    let mut args = vec!["iperf".to_owned()];
    args.extend(demo::sender_args(group, 1316, "1M", SECS));
    let sender = Proc::spawn("iperf sender", &lab.pod_ns(Pod::A1), &strs(&args));
    let started = Instant::now();
    for round in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(300));
        for node in [Node::A, Node::B] {
            if round % 2 == 0 {
                lab.kill_daemon(node).expect("SIGKILL");
            } else {
                let status = lab.stop_daemon(node).expect("SIGTERM");
                assert!(status.success(), "{} on SIGTERM: {status}", node.name());
            }
        }
        // Both daemons gone: the pinned datapath forwards alone.
        std::thread::sleep(Duration::from_millis(300));
        for node in [Node::A, Node::B] {
            lab.start_daemon(node).expect("start");
        }
        for node in [Node::A, Node::B] {
            lab.wait_ready(node, Duration::from_secs(10))
                .expect("ready");
        }
    }
    let restarts_took = started.elapsed();
    let (sent_status, sent_out, sent_err) = sender.finish(Duration::from_secs(SECS + 5));
    let (_, recv_out, recv_err) = receiver.finish(Duration::from_secs(10));
    assert!(
        restarts_took < Duration::from_secs(SECS),
        "the {ROUNDS} restarts took {restarts_took:?}, longer than the {SECS} s stream"
    );
    assert!(
        sent_status.is_some_and(|s| s.success()),
        "iperf sender: {sent_status:?}\n{sent_out}{sent_err}"
    );
    let sent = demo::parse_sent(&sent_out);
    let (received, lost, source) = demo::parse_received(&recv_out);
    eprintln!(
        "{ROUNDS} restarts of node-a and node-b in {restarts_took:?}: sent {sent:?}, \
         received {received:?}, lost {lost:?}"
    );
    let report = format!("sender:\n{sent_out}{sent_err}receiver:\n{recv_out}{recv_err}");
    assert!(sent.is_some_and(|n| n > 500), "datagrams sent; {report}");
    assert_eq!(lost, Some(0), "datagrams lost; {report}");
    // iperf2's "Sent N" counts its closing datagram too (N = total + 1, as
    // in the demo's parser test): every data datagram arrived, the last
    // ones included, which a loss count alone would not show.
    assert_eq!(
        received.map(|r| r + 1),
        sent,
        "datagrams received; {report}"
    );
    assert_eq!(source, Some(egress), "source; {report}");
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
