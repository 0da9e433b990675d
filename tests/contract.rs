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
