//! A real Prometheus server (Debian's `prometheus`) scraping every node's
//! sidecar over the lab's underlay, and its HTTP query API.
//!
//! It runs in a namespace of its own on the underlay bridge (192.0.2.100),
//! as a cluster's Prometheus scrapes the sidecars' host-network pods on the
//! node addresses, listens on that namespace's loopback only, and keeps its
//! configuration and data in the lab's directory.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::{io, Lab, LabError, Result, NODES};

/// The monitoring host's address on the underlay.
pub const ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// Where it listens, inside its own namespace.
pub const LISTEN: &str = "127.0.0.1:9090";
/// The sidecars' metrics port on every node address.
pub const METRICS_PORT: u16 = 9980;

/// One sample of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A running Prometheus; stopped on drop.
pub struct Prometheus {
    ns: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Lab {
    /// Start Prometheus scraping every node's `:9980` each `interval`, and
    /// wait until it answers.
    pub fn start_prometheus(&mut self, interval: Duration) -> Result<Prometheus> {
        let ns = self.add_underlay_host("prom", ADDR)?;
        let dir = self.dir().join("prometheus");
        std::fs::create_dir_all(dir.join("data")).map_err(io("creating prometheus' directory"))?;
        let targets = NODES
            .iter()
            .map(|n| {
                format!(
                    "      - targets: ['{}:{METRICS_PORT}']\n        labels: {{node: {}}}\n",
                    n.ip(),
                    n.name()
                )
            })
            .collect::<String>();
        let ms = interval.as_millis();
        let config = format!(
            "global:\n  scrape_interval: {ms}ms\n  scrape_timeout: {ms}ms\n\
             scrape_configs:\n  - job_name: cilium-mcast-egress\n    static_configs:\n{targets}"
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).map_err(io("writing prometheus.yml"))?;
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).map_err(io("creating prometheus.log"))?;
        let err = out.try_clone().map_err(io("creating prometheus.log"))?;
        let child = super::command("ip")
            .args(["netns", "exec", &ns, "prometheus"])
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={LISTEN}"))
            .args(["--log.level=warn", "--storage.tsdb.retention.time=1h"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io("starting prometheus (apt-get install prometheus)"))?;
        let prom = Prometheus {
            ns,
            child: Some(child),
            log,
        };
        super::wait_until("prometheus to be ready", Duration::from_secs(30), || {
            prom.get("/-/ready")
                .is_some_and(|(status, _)| status == 200)
        })
        .map_err(|e| LabError::Command {
            cmd: "prometheus".into(),
            detail: format!("{e}; its log:\n{}", prom.log()),
        })?;
        Ok(prom)
    }
}

impl Prometheus {
    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query, evaluated now.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let (status, body) = self.get(&path).ok_or_else(|| LabError::Command {
            cmd: format!("prometheus query {promql}"),
            detail: "no answer".into(),
        })?;
        parse_vector(&body).map_err(|detail| LabError::Command {
            cmd: format!("prometheus query {promql} (HTTP {status})"),
            detail,
        })
    }

    /// The value of a query that yields at most one sample (a `sum`, say);
    /// None when it yields none.
    pub fn scalar(&self, promql: &str) -> Result<Option<f64>> {
        let v = self.query(promql)?;
        match v.as_slice() {
            [] => Ok(None),
            [s] => Ok(Some(s.value)),
            _ => Err(LabError::Command {
                cmd: format!("prometheus query {promql}"),
                detail: format!("{} samples, one expected", v.len()),
            }),
        }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        super::http_get_in(&self.ns, LISTEN, path)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Percent-encode a query for a URL (RFC 3986: everything but unreserved).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The samples of an instant-vector answer of the query API.
fn parse_vector(body: &str) -> std::result::Result<Vec<Sample>, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))?;
    if v["status"] != "success" {
        return Err(format!("status {}: {}", v["status"], v["error"]));
    }
    if v["data"]["resultType"] != "vector" {
        return Err(format!("result type {}", v["data"]["resultType"]));
    }
    let results = v["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("no result in {body}"))?;
    results
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(|| format!("no value in {r}"))?;
            Ok(Sample { labels, value })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql_for_a_url() {
        assert_eq!(
            encode(r#"sum(x{role="gateway"})"#),
            "sum%28x%7Brole%3D%22gateway%22%7D%29"
        );
    }

    #[test]
    fn parses_instant_vectors_and_errors() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"node":"node-b"},"value":[1700000000.5,"402"]}]}}"#;
        let v = parse_vector(body).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].value, 402.0);
        assert_eq!(v[0].labels["node"], "node-b");
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse_vector(empty).unwrap().is_empty());
        let bad = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(parse_vector(bad).unwrap_err().contains("parse error"));
        assert!(parse_vector("<html>").is_err());
    }
}
