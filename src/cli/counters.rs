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
    /// An IPv4 or IPv6 group address.
    pub group: String,
    /// `ipv4` or `ipv6`: the group's.
    pub family: &'static str,
    /// `origin` or `gateway`.
    pub role: &'static str,
    pub packets: u64,
    /// Ethernet header included.
    pub bytes: u64,
}

/// Drops of one (reason, role, family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropRow {
    /// The stable label, e.g. `spoofed_source`.
    pub reason: &'static str,
    /// The stable code, e.g. 2.
    pub code: u32,
    pub role: &'static str,
    /// `ipv4` or `ipv6`: of the packets dropped.
    pub family: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// Everything `counters -o json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub counters: Vec<CounterRow>,
    /// Every reason, role and family, zeros included.
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
                family: c.family().label(),
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
                family: d.family.label(),
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
        let mut t = Table::new(&["Drop reason", "Role", "Family", "Packets", "Bytes"]);
        for d in dropped {
            t.row(vec![
                d.reason.to_owned(),
                d.role.to_owned(),
                d.family.to_owned(),
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
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::datapath::maps::{DropReason, Family, Role};

    /// An IPv6 group as wide as they come: its column must fit it.
    const WIDE: &str = "ff3e:1234:5678:9abc:def0:1234:8000:1";

    fn sample() -> Report {
        let counters = [
            Counter {
                policy_id: 7,
                group: Ipv4Addr::new(232, 1, 1, 1).into(),
                role: Role::Origin,
                packets: 3,
                bytes: 300,
            },
            Counter {
                policy_id: 7,
                group: "ff3e::8000:1".parse::<Ipv6Addr>().unwrap().into(),
                role: Role::Gateway,
                packets: 5,
                bytes: 620,
            },
            Counter {
                policy_id: 7,
                group: WIDE.parse::<Ipv6Addr>().unwrap().into(),
                role: Role::Origin,
                packets: 1,
                bytes: 90,
            },
        ];
        let drops: Vec<DropCount> = Family::ALL
            .into_iter()
            .flat_map(|family| {
                Role::ALL.into_iter().flat_map(move |role| {
                    DropReason::all().map(move |reason| {
                        let hit = match family {
                            Family::Ipv4 => {
                                reason == DropReason::SPOOFED_SOURCE && role == Role::Origin
                            }
                            Family::Ipv6 => {
                                reason == DropReason::TTL_EXCEEDED && role == Role::Gateway
                            }
                        };
                        DropCount {
                            family,
                            role,
                            reason,
                            packets: u64::from(hit),
                            bytes: if hit { 90 } else { 0 },
                        }
                    })
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
            text.starts_with(
                "Policy    Group                                  Role      Packets   Bytes\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "cameras   232.1.1.1                              origin    3         300\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "cameras   ff3e::8000:1                           gateway   5         620\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!("cameras   {WIDE}   origin    1         90\n")),
            "{text}"
        );
        assert!(
            text.contains("Drop reason      Role      Family   Packets   Bytes\n"),
            "{text}"
        );
        assert!(
            text.contains("spoofed_source   origin    ipv4     1         90\n"),
            "{text}"
        );
        assert!(
            text.contains("ttl_exceeded     gateway   ipv6     1         90\n"),
            "{text}"
        );
        assert!(!text.contains("no_gateway"), "{text}");
        assert!(text.contains("suppressed by the rate limit: 4"), "{text}");
    }

    #[test]
    fn json_has_every_drop_row_of_both_families() {
        let v = serde_json::to_value(sample()).unwrap();
        let drops = v["drops"].as_array().unwrap();
        assert_eq!(drops.len(), 2 * 2 * (DropReason::MAX as usize - 1));
        for family in ["ipv4", "ipv6"] {
            assert_eq!(
                drops.iter().filter(|d| d["family"] == family).count(),
                2 * (DropReason::MAX as usize - 1)
            );
        }
        let row = |family: &str, role: &str| {
            drops
                .iter()
                .find(|d| {
                    d["reason"] == "ttl_exceeded" && d["family"] == family && d["role"] == role
                })
                .unwrap()
                .clone()
        };
        assert_eq!(row("ipv6", "gateway")["packets"], 1);
        assert_eq!(row("ipv6", "gateway")["bytes"], 90);
        assert_eq!(row("ipv4", "gateway")["packets"], 0);
        assert_eq!(row("ipv6", "origin")["packets"], 0);
        assert_eq!(v["counters"][0]["policy"], "cameras");
        assert_eq!(v["counters"][0]["role"], "origin");
        assert_eq!(v["counters"][0]["family"], "ipv4");
        assert_eq!(v["counters"][1]["group"], "ff3e::8000:1");
        assert_eq!(v["counters"][1]["family"], "ipv6");
        assert_eq!(v["counters"][1]["packets"], 5);
        assert_eq!(v["events_suppressed"], 4);
    }
}
