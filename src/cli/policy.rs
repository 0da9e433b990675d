//! `policy list`: every entry of `mcast_egw_policy_hash_v4` and then of
//! `mcast_egw_policy_hash_v6`, laid out as `cilium-dbg bpf egress list` lays out
//! Cilium's egress policy maps, with the policy's name added.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::{open_maps, policy_label, write_json, Output, Result, Table};
use crate::datapath::maps::{Gateway, PolicyKeyOf, PolicyValueOf};
use crate::datapath::Paths;

/// How `cilium-dbg` spells the gateway sentinels.
pub const GATEWAY_NOT_FOUND: &str = "Not Found";
pub const GATEWAY_EXCLUDED: &str = "Excluded CIDR";

/// One policy entry, as `-o json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRow {
    pub source_ip: String,
    pub destination_cidr: String,
    pub egress_ip: String,
    /// The gateway node's IP, or `Not Found` / `Excluded CIDR`.
    pub gateway_ip: String,
    /// The uplink on the gateway node, 0 elsewhere.
    pub egress_ifindex: u32,
    /// The policy's name, or its id when no name is recorded.
    pub policy: String,
    pub policy_id: u32,
    pub origin_node_ip: String,
    pub origin_identity: u32,
}

/// The gateway as `cilium-dbg bpf egress list` prints it.
pub fn gateway_label(gateway: Gateway) -> String {
    match gateway {
        Gateway::Node(ip) => ip.to_string(),
        Gateway::NotFound => GATEWAY_NOT_FOUND.to_owned(),
        Gateway::Excluded => GATEWAY_EXCLUDED.to_owned(),
    }
}

/// The rows for `entries` of either family, in the order given.
pub fn rows<A: std::fmt::Display, N: std::fmt::Display>(
    entries: &[(PolicyKeyOf<A, N>, PolicyValueOf<A>)],
    names: &BTreeMap<u32, String>,
) -> Vec<PolicyRow> {
    entries
        .iter()
        .map(|(k, v)| PolicyRow {
            source_ip: k.source.to_string(),
            destination_cidr: k.destination.to_string(),
            egress_ip: v.egress_ip.to_string(),
            gateway_ip: gateway_label(v.gateway),
            egress_ifindex: v.egress_ifindex,
            policy: policy_label(names, v.policy_id),
            policy_id: v.policy_id,
            origin_node_ip: v.origin.node.to_string(),
            origin_identity: v.origin.identity,
        })
        .collect()
}

/// Print `rows`. An empty map prints `No entries found.` on stderr, as
/// `cilium-dbg` does, and nothing on stdout in text mode.
pub fn render(rows: &[PolicyRow], output: Output, out: &mut dyn Write) -> Result<()> {
    match output {
        Output::Json => write_json(out, &rows),
        Output::Text if rows.is_empty() => {
            eprintln!("No entries found.");
            Ok(())
        }
        Output::Text => {
            let mut t = Table::new(&[
                "Source IP",
                "Destination CIDR",
                "Egress IP",
                "Gateway IP",
                "Policy",
            ]);
            for r in rows {
                t.row(vec![
                    r.source_ip.clone(),
                    r.destination_cidr.clone(),
                    r.egress_ip.clone(),
                    r.gateway_ip.clone(),
                    r.policy.clone(),
                ]);
            }
            t.write(out, "")?;
            Ok(())
        }
    }
}

/// `cilium-mcast-egress policy list`.
pub fn list(paths: &Paths, output: Output, out: &mut dyn Write) -> Result<()> {
    let maps = open_maps(paths)?;
    let entries = maps.policies()?;
    let entries_v6 = maps.policies_v6()?;
    let names = maps.policy_names()?;
    let mut all = rows(&entries, &names);
    all.extend(rows(&entries_v6, &names));
    super::ignore_broken_pipe(render(&all, output, out))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::datapath::maps::{Origin, PolicyKey, PolicyKey6, PolicyValue, PolicyValue6};

    fn entry(src: &str, dst: &str, gateway: Gateway, policy_id: u32) -> (PolicyKey, PolicyValue) {
        (
            PolicyKey {
                source: src.parse().unwrap(),
                destination: dst.parse().unwrap(),
            },
            PolicyValue {
                egress_ip: Ipv4Addr::UNSPECIFIED,
                gateway,
                egress_ifindex: 0,
                policy_id,
                origin: Origin::default(),
            },
        )
    }

    #[test]
    fn text_has_ciliums_header_and_sentinel_spellings() {
        let entries = [
            entry(
                "198.51.100.11",
                "232.1.0.0/16",
                Gateway::Node([192, 0, 2, 12].into()),
                1,
            ),
            entry("198.51.100.11", "232.9.0.0/16", Gateway::NotFound, 1),
            entry("198.51.100.11", "232.1.255.0/24", Gateway::Excluded, 2),
        ];
        let names = [(1, "cameras".to_owned())].into();
        let mut out = Vec::new();
        render(&rows(&entries, &names), Output::Text, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Source IP       Destination CIDR   Egress IP   Gateway IP      Policy"
        );
        assert_eq!(
            lines[1],
            "198.51.100.11   232.1.0.0/16       0.0.0.0     192.0.2.12      cameras"
        );
        assert_eq!(
            lines[2],
            "198.51.100.11   232.9.0.0/16       0.0.0.0     Not Found       cameras"
        );
        assert_eq!(
            lines[3],
            "198.51.100.11   232.1.255.0/24     0.0.0.0     Excluded CIDR   2"
        );
    }

    #[test]
    fn json_field_names_are_stable() {
        let entries = [entry("198.51.100.11", "232.9.0.0/16", Gateway::NotFound, 3)];
        let v = serde_json::to_value(rows(&entries, &BTreeMap::new())).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{
                "source_ip": "198.51.100.11",
                "destination_cidr": "232.9.0.0/16",
                "egress_ip": "0.0.0.0",
                "gateway_ip": "Not Found",
                "egress_ifindex": 0,
                "policy": "3",
                "policy_id": 3,
                "origin_node_ip": "0.0.0.0",
                "origin_identity": 0,
            }])
        );
    }

    #[test]
    fn ipv6_entries_list_in_the_same_columns() {
        let v6 = |dst: &str, gateway, egress: &str| {
            (
                PolicyKey6 {
                    source: "2001:db8:100::11".parse().unwrap(),
                    destination: dst.parse().unwrap(),
                },
                PolicyValue6 {
                    egress_ip: egress.parse::<Ipv6Addr>().unwrap(),
                    gateway,
                    egress_ifindex: 4,
                    policy_id: 1,
                    origin: Origin {
                        node: [192, 0, 2, 11].into(),
                        identity: 51234,
                    },
                },
            )
        };
        let entries = [
            v6(
                "ff3e::8000:0/96",
                Gateway::Node([192, 0, 2, 12].into()),
                "2001:db8:203::10",
            ),
            v6("ff3e::8000:ff00/120", Gateway::Excluded, "::"),
        ];
        let names = [(1, "cameras".to_owned())].into();
        let mut all = rows(
            &[entry(
                "198.51.100.11",
                "232.1.0.0/16",
                Gateway::Node([192, 0, 2, 12].into()),
                1,
            )],
            &names,
        );
        all.extend(rows(&entries, &names));
        let mut out = Vec::new();
        render(&all, Output::Text, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(
            lines[2],
            "2001:db8:100::11   ff3e::8000:0/96       2001:db8:203::10   192.0.2.12      cameras"
        );
        assert_eq!(
            lines[3],
            "2001:db8:100::11   ff3e::8000:ff00/120   ::                 Excluded CIDR   cameras"
        );
        let v = serde_json::to_value(rows(&entries[..1], &names)).unwrap();
        assert_eq!(v[0]["source_ip"], "2001:db8:100::11");
        assert_eq!(v[0]["destination_cidr"], "ff3e::8000:0/96");
        assert_eq!(v[0]["egress_ip"], "2001:db8:203::10");
        assert_eq!(v[0]["gateway_ip"], "192.0.2.12");
        assert_eq!(v[0]["origin_node_ip"], "192.0.2.11");
        assert_eq!(v[0]["egress_ifindex"], 4);
    }
}
