//! The lists that must not drift: the drop reasons and the roles are
//! declared once, in `include/mcast_egress.h` (each enumerator's comment
//! starts with its stable label), and the Rust labels (metrics and the
//! CLI use them) and the README must say the same, code for code.

use std::path::Path;

use cilium_mcast_egress::datapath::maps::{DropReason, Role};

/// (enumerator suffix, code, label) of every `PREFIX*` enumerator of the
/// header, in order; the `*_MAX` sentinel is left out.
fn enumerators(header: &str, prefix: &str) -> Vec<(String, u32, String)> {
    let mut out = Vec::new();
    let mut comment = String::new();
    let mut in_comment = false;
    for line in header.lines() {
        let t = line.trim();
        if t.starts_with("/*") {
            in_comment = true;
            comment.clear();
        }
        if in_comment {
            let text = t
                .trim_start_matches("/*")
                .trim_end_matches("*/")
                .trim_start_matches('*')
                .trim();
            if !text.is_empty() {
                comment.push_str(text);
                comment.push(' ');
            }
            if t.ends_with("*/") {
                in_comment = false;
            }
            continue;
        }
        let Some(rest) = t.strip_prefix(prefix) else {
            comment.clear();
            continue;
        };
        let rest = rest.trim_end_matches(',');
        let Some((name, code)) = rest.split_once('=') else {
            assert!(rest.ends_with("MAX"), "{prefix}{rest} has no explicit code");
            continue;
        };
        let code: u32 = code.trim().parse().expect("a numeric code");
        let label = comment
            .split_once(':')
            .map(|(label, _)| label.trim().to_owned())
            .filter(|l| !l.contains(' '))
            .unwrap_or_else(|| panic!("{prefix}{name}: its comment does not start with a label"));
        out.push((name.trim().to_owned(), code, label));
        comment.clear();
    }
    out
}

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
