//! `counters`: what the datapath forwarded, per policy, group and role;
//! what it dropped, per reason and role; and how many drop events the
//! monitor's rate limit held back.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::{open_maps, policy_label, write_json, Output, Result, Table};
use crate::datapath::maps::{Counter, DropCount};
use crate::datapath::Paths;

/// Packets and bytes of one (policy, group, role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CounterRow {
    /// The policy's name, or its id when no name is recorded.
    pub policy: String,
    pub policy_id: u32,
    pub group: String,
    /// `origin` or `gateway`.
    pub role: &'static str,
    pub packets: u64,
    /// Ethernet header included.
    pub bytes: u64,
}

/// Drops of one (reason, role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropRow {
    /// The stable label, e.g. `spoofed_source`.
    pub reason: &'static str,
    /// The stable code, e.g. 2.
    pub code: u32,
    pub role: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// Everything `counters -o json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub counters: Vec<CounterRow>,
    /// Every reason and role, zeros included.
    pub drops: Vec<DropRow>,
    /// Drop events the per-CPU rate limit kept from the monitor.
    pub events_suppressed: u64,
}

pub fn report(
    counters: &[Counter],
    drops: &[DropCount],
    names: &BTreeMap<u32, String>,
    events_suppressed: u64,
) -> Report {
    Report {
        counters: counters
            .iter()
            .map(|c| CounterRow {
                policy: policy_label(names, c.policy_id),
                policy_id: c.policy_id,
                group: c.group.to_string(),
                role: c.role.label(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect(),
        drops: drops
            .iter()
            .map(|d| DropRow {
                reason: d.reason.label(),
                code: d.reason.code(),
                role: d.role.label(),
                packets: d.packets,
                bytes: d.bytes,
            })
            .collect(),
        events_suppressed,
    }
}

/// Print `report`: in text, only the drops that happened.
pub fn render(report: &Report, output: Output, out: &mut dyn Write) -> Result<()> {
    if output == Output::Json {
        return write_json(out, report);
    }
    if report.counters.is_empty() {
        writeln!(out, "No packets counted.")?;
    } else {
        let mut t = Table::new(&["Policy", "Group", "Role", "Packets", "Bytes"]);
        for c in &report.counters {
            t.row(vec![
                c.policy.clone(),
                c.group.clone(),
                c.role.to_owned(),
                c.packets.to_string(),
                c.bytes.to_string(),
            ]);
        }
        t.write(out, "")?;
    }
    writeln!(out)?;
    let dropped: Vec<&DropRow> = report
        .drops
        .iter()
        .filter(|d| d.packets != 0 || d.bytes != 0)
        .collect();
    if dropped.is_empty() {
        writeln!(out, "No drops.")?;
    } else {
        let mut t = Table::new(&["Drop reason", "Role", "Packets", "Bytes"]);
        for d in dropped {
            t.row(vec![
                d.reason.to_owned(),
                d.role.to_owned(),
                d.packets.to_string(),
                d.bytes.to_string(),
            ]);
        }
        t.write(out, "")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Drop events suppressed by the rate limit: {}",
        report.events_suppressed
    )?;
    Ok(())
}

/// `cilium-mcast-egress counters`.
pub fn show(paths: &Paths, output: Output, out: &mut dyn Write) -> Result<()> {
    let maps = open_maps(paths)?;
    let r = report(
        &maps.counters()?,
        &maps.drops()?,
        &maps.policy_names()?,
        maps.events_suppressed()?,
    );
    super::ignore_broken_pipe(render(&r, output, out))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::datapath::maps::{DropReason, Role};

    fn sample() -> Report {
        let counters = [Counter {
            policy_id: 7,
            group: Ipv4Addr::new(232, 1, 1, 1),
            role: Role::Origin,
            packets: 3,
            bytes: 300,
        }];
        let drops: Vec<DropCount> = Role::ALL
            .into_iter()
            .flat_map(|role| {
                DropReason::all().map(move |reason| DropCount {
                    role,
                    reason,
                    packets: u64::from(
                        reason == DropReason::SPOOFED_SOURCE && role == Role::Origin,
                    ),
                    bytes: 0,
                })
            })
            .collect();
        report(&counters, &drops, &[(7, "cameras".into())].into(), 4)
    }

    #[test]
    fn text_shows_only_drops_that_happened() {
        let mut out = Vec::new();
        render(&sample(), Output::Text, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("Policy    Group       Role     Packets   Bytes\n"),
            "{text}"
        );
        assert!(
            text.contains("cameras   232.1.1.1   origin   3         300\n"),
            "{text}"
        );
        assert!(text.contains("spoofed_source   origin   1"), "{text}");
        assert!(!text.contains("no_gateway"), "{text}");
        assert!(text.contains("suppressed by the rate limit: 4"), "{text}");
    }

    #[test]
    fn json_has_every_drop_row() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            v["drops"].as_array().unwrap().len(),
            2 * (DropReason::MAX as usize - 1)
        );
        assert_eq!(v["counters"][0]["policy"], "cameras");
        assert_eq!(v["counters"][0]["role"], "origin");
        assert_eq!(v["events_suppressed"], 4);
    }
}
