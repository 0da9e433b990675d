//! The lists that must not drift: the drop reasons and the roles are
//! declared once, in `include/mcast_egress.h` (each enumerator's comment
//! starts with its stable label), and the Rust labels (metrics and the
//! CLI use them) and the README must say the same, code for code.

use std::path::Path;

#[path = "../build/enum_labels.rs"]
mod enum_labels;
use enum_labels::enumerators;

use cilium_mcast_egress::datapath::maps::{DropReason, Role};

fn header() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/mcast_egress.h");
    std::fs::read_to_string(path).expect("include/mcast_egress.h")
}

#[test]
fn drop_reasons_are_the_header_list() {
    let declared = enumerators(&header(), "MCAST_DROP_");
    assert!(declared.len() >= 19, "{declared:?}");
    let ours: Vec<(u32, String)> = DropReason::all()
        .map(|r| (r.code(), r.label().to_owned()))
        .collect();
    let theirs: Vec<(u32, String)> = declared.iter().map(|(_, c, l)| (*c, l.clone())).collect();
    assert_eq!(ours, theirs, "Rust labels vs include/mcast_egress.h");
    for (_, code, label) in &declared {
        assert_eq!(DropReason::from_label(label).map(|r| r.code()), Some(*code));
    }
}

#[test]
fn roles_are_the_header_list() {
    let declared = enumerators(&header(), "MCAST_ROLE_");
    assert_eq!(declared.len(), Role::ALL.len(), "{declared:?}");
    for (name, code, label) in &declared {
        let role = Role::from_raw(*code).unwrap_or_else(|| panic!("no Role for {name}"));
        assert_eq!(role.label(), label, "MCAST_ROLE_{name}");
    }
}

#[test]
fn readme_lists_the_header_drop_reasons() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("Drop reasons (stable codes):")
        .expect("the README lists the drop reasons");
    let paragraph = &readme[start..];
    let paragraph = &paragraph[..paragraph.find("\n\n").unwrap_or(paragraph.len())];
    // `label` code, `label` code, ...: labels at the odd pieces, each
    // followed by its code.
    let pieces: Vec<&str> = paragraph.split('`').collect();
    let listed: Vec<(String, u32)> = (1..pieces.len())
        .step_by(2)
        .filter_map(|i| {
            let after = pieces.get(i + 1)?.trim_start();
            let code = after.split(|c: char| !c.is_ascii_digit()).next()?;
            Some((pieces[i].to_owned(), code.parse().ok()?))
        })
        .collect();
    let declared: Vec<(String, u32)> = enumerators(&header(), "MCAST_DROP_")
        .into_iter()
        .map(|(_, c, l)| (l, c))
        .collect();
    assert_eq!(
        listed, declared,
        "README's drop reasons vs include/mcast_egress.h"
    );
}

/// The length sets of both families as the header lays them out: bit
/// `32 - len` of `mcast_policy_lens.dst_lens`, bit `(128 - len) % 32` of
/// `mcast_policy_lens6.dst_lens[(128 - len) / 32]`, one bucket array each
/// of the header's size, with the bucket bits the header names.
#[test]
fn policy_length_sets_are_the_header_layout() {
    use cilium_mcast_egress::bpf_intf as intf;
    use cilium_mcast_egress::datapath::maps::{Codec, PolicyLens, PrefixLens};
    use std::net::{Ipv4Addr, Ipv6Addr};

    assert_eq!(std::mem::size_of::<intf::mcast_policy_lens>(), 8);
    assert_eq!(std::mem::size_of::<intf::mcast_policy_lens6>(), 16);
    assert_eq!(
        PolicyLens::<Ipv4Addr>::BUCKETS,
        intf::MCAST_POLICY_LENS_BUCKETS
    );
    assert_eq!(
        PolicyLens::<Ipv6Addr>::BUCKETS,
        intf::MCAST_POLICY6_LENS_BUCKETS
    );
    assert_eq!(intf::MCAST_POLICY6_DST_LENS, 121);
    for len in 1..=32u8 {
        let raw = PrefixLens::<Ipv4Addr>::single(len).encode();
        assert_eq!(raw.dst_lens, 1 << (32 - u32::from(len)), "/{len}");
    }
    for len in 1..=128u8 {
        let raw = PrefixLens::<Ipv6Addr>::single(len).encode();
        let bit = 128 - usize::from(len);
        let mut want = [0u32; 4];
        want[bit / 32] = 1 << (bit % 32);
        assert_eq!(raw.dst_lens, want, "/{len}");
    }
    // (ntohl(words[3]) >> 16) & 0xfff and (ntohl(daddr) >> 16) & 0xfff.
    let g6: Ipv6Addr = "ff3e::1:abcd:ef01".parse().unwrap();
    assert_eq!(PolicyLens::bucket(g6), 0xbcd);
    assert_eq!(PolicyLens::bucket(Ipv4Addr::new(232, 171, 205, 1)), 0x8ab);
}

// The list only; its look-up is the fuzzer's.
#[allow(dead_code)]
#[path = "fuzz/decisions.rs"]
mod decisions;

/// The fuzzer's kernel stage allows a frame that only the kernel forwarded
/// when the model names one of these rules; the README's table of where
/// the datapath is stricter than a router lists the same, in order.
#[test]
fn readme_lists_where_we_are_stricter_than_a_router() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("### Stricter than a router")
        .expect("the README has the section");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |e| e + 4)];
    let listed: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let declared: Vec<&str> = decisions::STRICTER.iter().map(|(r, _)| *r).collect();
    assert_eq!(listed, declared, "README vs tests/fuzz/decisions.rs");
    for (rule, why) in decisions::STRICTER {
        assert!(!why.is_empty(), "{rule} has no reason");
    }
}
