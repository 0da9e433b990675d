//! Cilium's `cilium_lxc` is read by its layout in `include/cilium_compat.h`,
//! checked by field name against the BTF cilium-agent created the map with:
//! Cilium's own layout (its `ip4` inside an anonymous union) is read, the
//! same sizes with fields reordered are refused, and a map without BTF is
//! read on its sizes alone. Needs root; a private bpffs.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use cilium_mcast_egress::cilium_compat::{endpoint_info, endpoint_key, ENDPOINT_F_HOST};
use cilium_mcast_egress::cilium_maps::{self, CiliumMapError, LXC_MAP};
use cilium_mcast_egress::datapath::maps::Endpoint;
use cilium_mcast_egress::datapath::{Paths, Plain};
use common::Bpffs;

const POD: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// The BTF of the map: Cilium's, its value's fields reordered, or none.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Btf {
    Cilium,
    Reordered,
    None,
}

/// `endpoint_info` as Cilium declares it; with `reordered`, `ifindex` and
/// `sec_id` swap places (the sizes stay the same).
const VALUE_FIELDS: [(&str, u32, &str); 9] = [
    ("ifindex", 0, "u32"),
    ("unused", 32, "u16"),
    ("lxc_id", 48, "u16"),
    ("flags", 64, "u32"),
    ("mac", 128, "mac_t"),
    ("node_mac", 192, "mac_t"),
    ("sec_id", 256, "u32"),
    ("parent_ifindex", 288, "u32"),
    ("pad", 320, "pad"),
];

/// Pins at `path` a map of `cilium_lxc`'s sizes, with `btf`, holding a pod
/// and a host entry written through the generated types.
fn pin_lxc(path: &Path, btf: Btf) {
    let key_size = u32::try_from(std::mem::size_of::<endpoint_key>()).unwrap();
    let value_size = u32::try_from(std::mem::size_of::<endpoint_info>()).unwrap();
    let mut opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut raw_btf = std::ptr::null_mut();
    if btf != Btf::None {
        // SAFETY: libbpf BTF builder calls on a BTF object we own and free
        // below; every name is a NUL-terminated literal or NULL (anonymous).
        unsafe {
            let b = libbpf_sys::btf__new_empty();
            assert!(!b.is_null());
            let int = |name: &std::ffi::CStr, size| {
                let id = libbpf_sys::btf__add_int(b, name.as_ptr(), size, 0);
                assert!(id > 0);
                id
            };
            let field = |name: *const std::os::raw::c_char, ty: i32, bits: u32| {
                assert_eq!(libbpf_sys::btf__add_field(b, name, ty, bits, 0), 0);
            };
            let u8_id = int(c"unsigned char", 1);
            let u16_id = int(c"unsigned short", 2);
            let u32_id = int(c"unsigned int", 4);
            let u64_id = int(c"unsigned long long", 8);
            let mac_t = libbpf_sys::btf__add_typedef(b, c"mac_t".as_ptr(), u64_id);
            assert!(mac_t > 0);

            // struct { __u32 ip4, pad1, pad2, pad3; }, anonymous.
            let v4 = libbpf_sys::btf__add_struct(b, std::ptr::null(), 16);
            assert!(v4 > 0);
            for (i, name) in [c"ip4", c"pad1", c"pad2", c"pad3"].iter().enumerate() {
                field(name.as_ptr(), u32_id, u32::try_from(i * 32).unwrap());
            }
            // union v6addr { __u8 addr[16]; }
            let bytes16 = libbpf_sys::btf__add_array(b, u32_id, u8_id, 16);
            assert!(bytes16 > 0);
            let v6 = libbpf_sys::btf__add_union(b, c"v6addr".as_ptr(), 16);
            assert!(v6 > 0);
            field(c"addr".as_ptr(), bytes16, 0);
            // union { struct {...}; union v6addr ip6; }, anonymous.
            let addr = libbpf_sys::btf__add_union(b, std::ptr::null(), 16);
            assert!(addr > 0);
            field(std::ptr::null(), v4, 0);
            field(c"ip6".as_ptr(), v6, 0);
            let key = libbpf_sys::btf__add_struct(b, c"endpoint_key".as_ptr(), 20);
            assert!(key > 0);
            field(std::ptr::null(), addr, 0);
            field(c"family".as_ptr(), u8_id, 128);
            field(c"key".as_ptr(), u8_id, 136);
            field(c"cluster_id".as_ptr(), u16_id, 144);

            let pad = libbpf_sys::btf__add_array(b, u32_id, u32_id, 2);
            assert!(pad > 0);
            let value = libbpf_sys::btf__add_struct(b, c"endpoint_info".as_ptr(), 48);
            assert!(value > 0);
            for (name, bits, ty) in VALUE_FIELDS {
                let name = match (btf, name) {
                    (Btf::Reordered, "ifindex") => "sec_id",
                    (Btf::Reordered, "sec_id") => "ifindex",
                    _ => name,
                };
                let ty = match ty {
                    "u16" => u16_id,
                    "u32" => u32_id,
                    "mac_t" => mac_t,
                    _ => pad,
                };
                let name = std::ffi::CString::new(name).unwrap();
                field(name.as_ptr(), ty, bits);
            }
            assert_eq!(libbpf_sys::btf__load_into_kernel(b), 0);
            opts.btf_fd = u32::try_from(libbpf_sys::btf__fd(b)).unwrap();
            opts.btf_key_type_id = u32::try_from(key).unwrap();
            opts.btf_value_type_id = u32::try_from(value).unwrap();
            raw_btf = b;
        }
    }
    let mut map = MapHandle::create(
        MapType::Hash,
        Some(LXC_MAP),
        key_size,
        value_size,
        16,
        &opts,
    )
    .expect("creating the map");
    if !raw_btf.is_null() {
        // SAFETY: ours, freed once; the kernel holds its own reference to
        // the loaded BTF for the map.
        unsafe { libbpf_sys::btf__free(raw_btf) };
    }
    map.pin(path).expect("pinning the map");
    for (ip, info) in [
        (
            POD,
            endpoint_info {
                ifindex: 7,
                sec_id: 4001,
                ..Default::default()
            },
        ),
        (
            HOST,
            endpoint_info {
                ifindex: 1,
                flags: ENDPOINT_F_HOST,
                sec_id: 1,
                ..Default::default()
            },
        ),
    ] {
        map.update(
            endpoint_key::ipv4(ip).as_bytes(),
            info.as_bytes(),
            MapFlags::ANY,
        )
        .expect("writing an entry");
    }
}

/// Reads a fresh map of `btf` pinned where cilium-agent pins `cilium_lxc`.
fn read(bpffs: &Bpffs, btf: Btf) -> Result<Vec<(Ipv4Addr, Endpoint)>, CiliumMapError> {
    let globals = Paths::new(bpffs.path()).globals();
    std::fs::create_dir_all(&globals).unwrap();
    let pin = globals.join(LXC_MAP);
    let _ = std::fs::remove_file(&pin);
    pin_lxc(&pin, btf);
    cilium_maps::read_endpoints(&globals)
}

fn pod() -> Vec<(Ipv4Addr, Endpoint)> {
    vec![(
        POD,
        Endpoint {
            ifindex: 7,
            identity: 4001,
        },
    )]
}

#[test]
fn cilium_lxc_of_ciliums_layout_is_read() {
    if !common::privileged("cilium_lxc_of_ciliums_layout_is_read") {
        return;
    }
    let bpffs = Bpffs::new("cilium-compat-read");
    // Cilium's layout, ip4 inside its anonymous union: read.
    assert_eq!(read(&bpffs, Btf::Cilium).expect("Cilium's layout"), pod());
    // No BTF: the sizes alone decide, and they match.
    assert_eq!(read(&bpffs, Btf::None).expect("a map without BTF"), pod());
}

#[test]
fn cilium_lxc_with_reordered_fields_is_refused() {
    if !common::privileged("cilium_lxc_with_reordered_fields_is_refused") {
        return;
    }
    let bpffs = Bpffs::new("cilium-compat-reordered");
    // Positive control: the same map with Cilium's field order is read.
    assert_eq!(read(&bpffs, Btf::Cilium).expect("Cilium's layout"), pod());

    // The same sizes, ifindex and sec_id swapped: refused, naming the field
    // and both offsets.
    let err = read(&bpffs, Btf::Reordered).expect_err("reordered fields must be refused");
    let CiliumMapError::Field {
        what,
        field,
        ours,
        ref theirs,
        ..
    } = err
    else {
        panic!("not a field mismatch: {err}");
    };
    assert_eq!((what, field, ours), ("value", "ifindex", 0));
    assert_eq!(theirs, "at byte 32");
    let msg = err.to_string();
    for want in [
        "cilium_lxc",
        "ifindex",
        "at byte 32",
        "byte 0",
        "struct endpoint_info (48 B)",
        "not read",
    ] {
        assert!(msg.contains(want), "{want:?} not in: {msg}");
    }
}
