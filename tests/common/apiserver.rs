//! A stand-in for the Kubernetes API server, on a TCP address of the
//! test's own network namespace: it lists the objects it was given for each
//! of the three `cilium.io/v2` kinds the daemon watches, and holds every
//! watch open with no events, as an API server does while nothing changes.
//! Plain HTTP, one request per connection. Stopped (and its watches
//! closed) on drop, also when the test fails first.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The three kinds by their plural, as the daemon's requests name them.
const KINDS: [(&str, &str); 3] = [
    (
        "ciliumegressgatewaypolicies",
        "CiliumEgressGatewayPolicyList",
    ),
    ("ciliumnodes", "CiliumNodeList"),
    ("ciliumendpoints", "CiliumEndpointList"),
];

pub struct ApiServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Requests answered, each as its request line.
    pub requests: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ApiServer {
    /// Serve `objects` (YAML documents separated by `---`, each of one of
    /// the three kinds) on `addr`, bound in the calling thread's network
    /// namespace.
    pub fn start(addr: &str, objects: &str) -> ApiServer {
        let mut lists: Vec<(&str, &str, Vec<serde_json::Value>)> = KINDS
            .iter()
            .map(|(plural, list)| (*plural, *list, Vec::new()))
            .collect();
        for doc in objects.split("\n---") {
            if doc.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_norway::from_str(doc).expect("a YAML object");
            let kind = value["kind"].as_str().expect("kind").to_owned();
            let list = lists
                .iter_mut()
                .find(|(_, list, _)| list.strip_suffix("List") == Some(&kind))
                .unwrap_or_else(|| panic!("the API server serves no {kind}"));
            list.2.push(value);
        }
        let listener = TcpListener::bind(addr).expect("binding the API server");
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let thread = {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::spawn(move || serve(listener, &lists, &stop, &requests))
        };
        ApiServer {
            stop,
            thread: Some(thread),
            requests,
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Lists<'a> = [(&'a str, &'a str, Vec<serde_json::Value>)];

fn serve(
    listener: TcpListener,
    lists: &Lists<'_>,
    stop: &AtomicBool,
    requests: &std::sync::Mutex<Vec<String>>,
) {
    // Watches held open until the server stops.
    let mut watches: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => panic!("API server accept: {e}"),
        };
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let Some(line) = request_line(&mut stream) else {
            continue;
        };
        requests.lock().unwrap().push(line.clone());
        let target = line.split_whitespace().nth(1).unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let plural = path.rsplit('/').next().unwrap_or("");
        let Some((_, list, items)) = lists.iter().find(|(p, _, _)| *p == plural) else {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            continue;
        };
        if query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1")
        {
            // No event until the test ends: the objects do not change.
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                  Transfer-Encoding: chunked\r\n\r\n",
            );
            let _ = stream.flush();
            watches.push(stream);
            continue;
        }
        let body = serde_json::json!({
            "apiVersion": "cilium.io/v2",
            "kind": list,
            "metadata": {"resourceVersion": "1"},
            "items": items,
        })
        .to_string();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
    }
    drop(watches);
}

/// The request line of the request on `stream`, its headers read (a GET
/// has no body).
fn request_line(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&head);
    head.lines().next().map(str::to_owned)
}
