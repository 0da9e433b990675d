//! Builds the BPF objects into libbpf-rs skeletons and generates the Rust
//! side of `include/mcast_egress.h`, all into `OUT_DIR`.

use std::env;
use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

#[path = "build/enum_labels.rs"]
mod enum_labels;

/// (source, skeleton file) pairs: the datapath, one object with every
/// program. The test and bench objects are built too so that `tests/` and
/// `benches/` can include them; the binary never does.
const OBJECTS: &[(&str, &str)] = &[
    ("bpf/mcast_egress.bpf.c", "mcast_egress.skel.rs"),
    (
        "bpf/tests/mcast_from_overlay_test.bpf.c",
        "mcast_from_overlay_test.skel.rs",
    ),
    (
        "bpf/tests/mcast_test_observer.bpf.c",
        "mcast_test_observer.skel.rs",
    ),
    (
        "bpf/tests/mcast_test_tunnel_observer.bpf.c",
        "mcast_test_tunnel_observer.skel.rs",
    ),
    ("bpf/bench/mcast_empty.bpf.c", "mcast_empty.skel.rs"),
    ("bpf/bench/mcast_lpm.bpf.c", "mcast_lpm.skel.rs"),
    ("bpf/bench/mcast_stages.bpf.c", "mcast_stages.skel.rs"),
];

fn multiarch_include() -> Option<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let triple = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        _ => return None,
    };
    let dir = PathBuf::from("/usr/include").join(triple);
    dir.is_dir().then_some(dir)
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let include = manifest.join("include");

    let mut clang_args = vec![
        format!("-I{}", include.display()),
        "-Wall".to_owned(),
        "-Werror".to_owned(),
    ];
    if let Some(dir) = multiarch_include() {
        clang_args.push(format!("-I{}", dir.display()));
    }

    for (src, skel) in OBJECTS {
        let src = manifest.join(src);
        SkeletonBuilder::new()
            .source(&src)
            .clang_args(&clang_args)
            .build_and_generate(out.join(skel))
            .unwrap_or_else(|e| panic!("building {}: {e:#}", src.display()));
    }

    generate_bindings(
        &include.join("mcast_egress.h"),
        &out.join("mcast_egress_intf.rs"),
    );
    generate_cilium_compat(
        &include.join("cilium_compat.h"),
        &out.join("cilium_compat.rs"),
    );

    generate_labels(
        &include.join("mcast_egress.h"),
        &out.join("mcast_labels.rs"),
    );

    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=build");
    println!("cargo:rerun-if-changed=include");
}

/// Derives the zero-copy traits on every struct of the header, so that the
/// compiler proves what a map needs of its key and value: no padding bytes
/// (`IntoBytes`), every bit pattern valid (`FromBytes`), no interior
/// mutability (`Immutable`). The header's explicit padding is what lets
/// these derives succeed; a struct with a hole does not build.
#[derive(Debug)]
struct ZeroCopy;

impl bindgen::callbacks::ParseCallbacks for ZeroCopy {
    fn add_derives(&self, info: &bindgen::callbacks::DeriveInfo<'_>) -> Vec<String> {
        if info.kind != bindgen::callbacks::TypeKind::Struct {
            return Vec::new();
        }
        [
            "zerocopy::FromBytes",
            "zerocopy::IntoBytes",
            "zerocopy::Immutable",
            "zerocopy::KnownLayout",
        ]
        .map(String::from)
        .to_vec()
    }
}

fn generate_bindings(header: &Path, out: &Path) {
    bindgen::Builder::default()
        .header(header.to_string_lossy())
        .parse_callbacks(Box::new(ZeroCopy))
        .allowlist_type("mcast_.*")
        .allowlist_var("MCAST_.*")
        .derive_default(true)
        .derive_eq(true)
        .derive_hash(true)
        .default_enum_style(bindgen::EnumVariation::Rust {
            non_exhaustive: false,
        })
        .prepend_enum_name(false)
        .layout_tests(true)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen {}: {e}", header.display()))
        .write_to_file(out)
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

/// Cilium's layouts that we read (`include/cilium_compat.h`), under
/// Cilium's own names.
fn generate_cilium_compat(header: &Path, out: &Path) {
    bindgen::Builder::default()
        .header(header.to_string_lossy())
        .parse_callbacks(Box::new(ZeroCopy))
        .allowlist_type("endpoint_key|endpoint_info|mcast_group_v4")
        .allowlist_var("ENDPOINT_.*|ENDPOINTS_.*|CILIUM_.*")
        .derive_default(true)
        .derive_eq(true)
        .derive_hash(true)
        .layout_tests(true)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen {}: {e}", header.display()))
        .write_to_file(out)
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

/// `DROP_LABELS` and `ROLE_LABELS`: (code, label) of every drop reason and
/// role, from the comments of the header's enums, the one list of them.
fn generate_labels(header: &Path, out: &Path) {
    let text = std::fs::read_to_string(header)
        .unwrap_or_else(|e| panic!("reading {}: {e}", header.display()));
    let table = |prefix: &str| {
        enum_labels::enumerators(&text, prefix)
            .iter()
            .map(|(_, code, label)| format!("({code}, {label:?}), "))
            .collect::<String>()
    };
    let rust = format!(
        "/// (code, label) of every `enum mcast_drop_reason` code.\n\
         pub const DROP_LABELS: &[(u32, &str)] = &[{}];\n\
         /// (code, label) of every `enum mcast_role` code.\n\
         pub const ROLE_LABELS: &[(u32, &str)] = &[{}];\n",
        table("MCAST_DROP_"),
        table("MCAST_ROLE_")
    );
    std::fs::write(out, rust).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
