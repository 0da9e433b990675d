//! The Kubernetes tools the suites run, found where controller-runtime's
//! envtest keeps them: the directory named by `KUBEBUILDER_ASSETS`, else the
//! binaries beside the repository in `../shared/k8s/bin` (xz-compressed,
//! unpacked once into `target/k8s-assets`), else `PATH`. Included with
//! `#[path]`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `name` (`kubectl`, `kube-apiserver`, `etcd`) from the first place that
/// has it, or why none does.
pub fn find(name: &str) -> Result<PathBuf, String> {
    let mut looked = Vec::new();
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        let p = Path::new(&dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
        looked.push(p.display().to_string());
    }
    let packed = root().join("../shared/k8s/bin").join(format!("{name}.xz"));
    if packed.is_file() {
        return unpack(&packed, name);
    }
    looked.push(packed.display().to_string());
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    looked.push(format!("{name} on PATH"));
    Err(format!("no {name}: looked at {}", looked.join(", ")))
}

/// Unpacks `packed` into `target/k8s-assets/name` once (atomically: a
/// concurrent test sees the whole file or none).
fn unpack(packed: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = root().join("target/k8s-assets");
    let out = dir.join(name);
    let fresh = |out: &Path| {
        let (Ok(o), Ok(p)) = (out.metadata(), packed.metadata()) else {
            return false;
        };
        matches!((o.modified(), p.modified()), (Ok(o), Ok(p)) if o >= p)
    };
    if fresh(&out) {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let status = Command::new("xz")
        .arg("-dc")
        .arg(packed)
        .stdout(file)
        .status()
        .map_err(|e| format!("xz: {e}"))?;
    if !status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("xz -dc {} failed: {status}", packed.display()));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

/// `name`, or `None` after a loud notice; under `CI=true` a missing tool
/// fails the test instead.
pub fn require(test: &str, name: &str) -> Option<PathBuf> {
    match find(name) {
        Ok(p) => Some(p),
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: {why}, and CI=true forbids skipping"
            );
            eprintln!(
                "\n!!! SKIPPED {test}: {why}. Set KUBEBUILDER_ASSETS to a directory \
                 holding kube-apiserver, etcd and kubectl: the Kubernetes release binaries, or `setup-envtest use`. !!!\n"
            );
            None
        }
    }
}
