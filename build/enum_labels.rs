//! The labels of the enums in `include/mcast_egress.h`: each enumerator's
//! comment starts with `label:`. Read by build.rs, which generates the
//! Rust tables from them, and by tests/contract.rs, which checks the README
//! against them.

/// (enumerator suffix, code, label) of every `PREFIX*` enumerator of the
/// header, in order; the `*_MAX` sentinel is left out.
pub fn enumerators(header: &str, prefix: &str) -> Vec<(String, u32, String)> {
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
