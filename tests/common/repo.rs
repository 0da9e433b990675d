//! The repository's own files, for the suites that check them (manifests,
//! scripts). Included with `#[path]` by suites that need nothing else of
//! `common`.

#![allow(dead_code)]

use std::path::Path;

use serde::Deserialize;
use serde_norway::Value;

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the repository, by its path from the root.
pub fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file of the repository.
pub fn documents(rel: &str) -> Vec<Value> {
    parse_documents(rel, &read(rel))
}

/// Every document of a YAML stream, `what` naming it in a panic.
pub fn parse_documents(what: &str, text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The metric families of README's Metrics table: each full name
/// (`cilium_mcast_egress_` and the table's name) with its type.
pub fn readme_metrics() -> Vec<(String, String)> {
    let readme = read("README.md");
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Metrics section");
    let mut out = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        for name in cells[1].split(',') {
            let name = name.trim().trim_matches('`');
            out.push((format!("cilium_mcast_egress_{name}"), cells[2].to_string()));
        }
    }
    out
}
