//! `status`: this node as its pinned datapath sees it — who it is, whether
//! it is a gateway and for what, which devices carry our programs, how full
//! the maps are, when the controller last synced them, and what the
//! controller last reported: whether it is ready, and what in its input it
//! found wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::io::Write;
use std::net::Ipv4Addr;

use serde::Serialize;

use super::{
    classify, format_age, format_utc, ifname, known, open_maps, policy_label, unix_now_ns,
    write_json, Output, Result, Table, VERSION,
};
use crate::datapath::maps::{
    Config, Gateway, PolicyKey, PolicyKey6, PolicyKeyOf, PolicyValue, PolicyValue6, PolicyValueOf,
    Status,
};
use crate::datapath::{tcx, LinkState, Paths};
use crate::health::{self, ReportedProblem};

/// Entries of one policy and family that name this node as gateway, through
/// one egress IP and uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayFor {
    pub policy: String,
    pub policy_id: u32,
    pub destinations: Vec<String>,
    /// IPv4 or IPv6 as the destinations are; 0.0.0.0 or :: when it could
    /// not be derived: those packets drop as `no_egress_ip`.
    pub egress_ip: String,
    pub egress_ifindex: u32,
    /// The uplink's name in this network namespace, if it is there.
    pub egress_device: Option<String>,
    /// How many pods' entries.
    pub sources: usize,
}

/// One pinned tcx link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub device: String,
    pub program: String,
    pub link_id: u32,
    pub prog_id: u32,
    /// 0 once the device is gone.
    pub ifindex: u32,
    /// False when the kernel detached the link because its device went.
    pub attached: bool,
}

/// How full one capacity-bound map is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: usize,
    pub capacity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastSync {
    pub unix_ns: u64,
    pub utc: String,
    pub age_seconds: u64,
}

/// What the controller last reported (it rewrites the report when it
/// changes; while it is down, the last one stays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Controller {
    /// Since when the controller has reported this.
    pub since: LastSync,
    pub ready: bool,
    /// Why not, as `/readyz` says it.
    pub not_ready: Vec<String>,
    /// No `CiliumNode` of this node's name with an IPv4 InternalIP.
    pub node_missing: bool,
    pub invalid_policies: usize,
    pub endpoints_without_identity: usize,
    /// Sorted, this node first; a bounded list.
    pub problems: Vec<ReportedProblem>,
    /// Findings not listed (the controller's log has each of them).
    pub problems_left_out: usize,
}

/// Everything `status -o json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// None until a controller has recorded it.
    pub node_name: Option<String>,
    /// None until a controller has configured it.
    pub node_ip: Option<String>,
    /// 0 until the tunnel device exists.
    pub tunnel_ifindex: u32,
    pub tunnel_device: Option<String>,
    pub gateway: bool,
    pub gateway_for: Vec<GatewayFor>,
    pub links: Vec<Link>,
    pub maps: Vec<MapFill>,
    /// None before the first sync.
    pub last_sync: Option<LastSync>,
    pub syncs: u64,
    /// Version of the controller that last wrote the status.
    pub controller_version: Option<String>,
    pub cli_version: &'static str,
    /// None until a controller has written its report.
    pub controller: Option<Controller>,
    /// Why the controller's report could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_report_error: Option<String>,
    /// This namespace's netkit devices: Cilium runs in netkit mode, and
    /// host-side tcx (our programs) sees no traffic of those pods. Left
    /// out of the JSON when there are none (the usual, veth, case).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub netkit_devices: Vec<String>,
    /// Why the netkit check could not be done, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netkit_check_error: Option<String>,
}

/// What `report` needs, read from the pins.
pub struct Inputs {
    pub status: Status,
    pub config: Config,
    pub policies: Vec<(PolicyKey, PolicyValue)>,
    pub policies_v6: Vec<(PolicyKey6, PolicyValue6)>,
    pub names: BTreeMap<u32, String>,
    pub links: Vec<LinkState>,
    pub fill: Vec<(&'static str, usize, u32)>,
    pub report: std::result::Result<Option<health::Report>, String>,
    pub netkit_devices: std::result::Result<Vec<String>, String>,
    pub now_unix_ns: u64,
}

/// The entries of one family naming `node_ip` as gateway, grouped by
/// policy, egress IP and uplink.
fn gateway_for<A: Copy + Ord + Display, N: Display>(
    node_ip: Ipv4Addr,
    policies: &[(PolicyKeyOf<A, N>, PolicyValueOf<A>)],
    names: &BTreeMap<u32, String>,
) -> Vec<GatewayFor> {
    // (policy id, egress IP, uplink) -> (destinations, sources)
    #[allow(clippy::type_complexity)]
    let mut groups: BTreeMap<(u32, A, u32), (Vec<String>, BTreeSet<A>)> = BTreeMap::new();
    for (k, v) in policies {
        if known(node_ip).is_none() || v.gateway != Gateway::Node(node_ip) {
            continue;
        }
        let (dests, sources) = groups
            .entry((v.policy_id, v.egress_ip, v.egress_ifindex))
            .or_default();
        let d = k.destination.to_string();
        if !dests.contains(&d) {
            dests.push(d);
        }
        sources.insert(k.source);
    }
    groups
        .into_iter()
        .map(
            |((policy_id, egress_ip, egress_ifindex), (destinations, sources))| GatewayFor {
                policy: policy_label(names, policy_id),
                policy_id,
                destinations,
                egress_ip: egress_ip.to_string(),
                egress_ifindex,
                egress_device: ifname(egress_ifindex),
                sources: sources.len(),
            },
        )
        .collect()
}

fn since(unix_ns: u64, now_unix_ns: u64) -> LastSync {
    LastSync {
        unix_ns,
        utc: format_utc(unix_ns),
        age_seconds: now_unix_ns.saturating_sub(unix_ns) / 1_000_000_000,
    }
}

pub fn report(i: Inputs) -> Report {
    let node_ip = known(i.config.node_ip);
    let (controller, controller_report_error) = match i.report {
        Ok(r) => (
            r.map(|r| Controller {
                since: since(r.since_unix_ns, i.now_unix_ns),
                ready: r.ready,
                not_ready: r.not_ready,
                node_missing: r.node_missing,
                invalid_policies: r.invalid_policies,
                endpoints_without_identity: r.endpoints_without_identity,
                problems: r.problems,
                problems_left_out: r.problems_left_out,
            }),
            None,
        ),
        Err(e) => (None, Some(e)),
    };
    let mut gateway_for = gateway_for(i.config.node_ip, &i.policies, &i.names);
    gateway_for.extend(self::gateway_for(
        i.config.node_ip,
        &i.policies_v6,
        &i.names,
    ));
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let (netkit_devices, netkit_check_error) = match i.netkit_devices {
        Ok(d) => (d, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    Report {
        node_name: non_empty(&i.status.node_name),
        node_ip: node_ip.map(|ip| ip.to_string()),
        tunnel_ifindex: i.config.tunnel_ifindex,
        tunnel_device: ifname(i.config.tunnel_ifindex),
        gateway: !gateway_for.is_empty(),
        gateway_for,
        links: i
            .links
            .into_iter()
            .map(|l| Link {
                attached: l.ifindex != 0,
                device: l.device,
                program: l.program,
                link_id: l.link_id,
                prog_id: l.prog_id,
                ifindex: l.ifindex,
            })
            .collect(),
        maps: i
            .fill
            .into_iter()
            .map(|(map, entries, capacity)| MapFill {
                map,
                entries,
                capacity,
            })
            .collect(),
        last_sync: (i.status.last_sync_unix_ns != 0)
            .then(|| since(i.status.last_sync_unix_ns, i.now_unix_ns)),
        syncs: i.status.syncs,
        controller_version: non_empty(&i.status.version),
        cli_version: VERSION,
        controller,
        controller_report_error,
        netkit_devices,
        netkit_check_error,
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `Ready:` and `Problems:`, from the controller's report.
fn render_controller(r: &Report, out: &mut dyn Write) -> Result<()> {
    let Some(c) = &r.controller else {
        let why = r.controller_report_error.as_deref().map_or_else(
            || "no report from a controller yet".to_owned(),
            |e| format!("the controller's report cannot be read: {e}"),
        );
        writeln!(out, "Ready:               unknown ({why})")?;
        return Ok(());
    };
    let as_of = format!(
        "as of {}, {} ago",
        c.since.utc,
        format_age(c.since.age_seconds)
    );
    if c.ready {
        writeln!(out, "Ready:               yes ({as_of})")?;
    } else {
        writeln!(
            out,
            "Ready:               no ({as_of}): {}",
            c.not_ready.join("; ")
        )?;
    }
    let listed = c.problems.len() + c.problems_left_out;
    if listed == 0 {
        writeln!(out, "Problems:            none")?;
        return Ok(());
    }
    let mut summary = Vec::new();
    if c.node_missing {
        summary.push("this node's CiliumNode missing".to_owned());
    }
    if c.invalid_policies > 0 {
        summary.push(plural(
            c.invalid_policies,
            "invalid policy",
            "invalid policies",
        ));
    }
    if c.endpoints_without_identity > 0 {
        summary.push(format!(
            "{} without identity",
            plural(c.endpoints_without_identity, "endpoint", "endpoints")
        ));
    }
    if summary.is_empty() {
        summary.push(plural(listed, "warning", "warnings"));
    }
    writeln!(out, "Problems:            {}", summary.join(", "))?;
    let mut t = Table::new(&["Severity", "Subject", "Problem"]);
    for p in &c.problems {
        let subject = if p.name.is_empty() {
            p.kind.clone()
        } else {
            format!("{} {}", p.kind, p.name)
        };
        t.row(vec![p.severity.clone(), subject, p.message.clone()]);
    }
    t.write(out, "  ")?;
    if c.problems_left_out > 0 {
        writeln!(
            out,
            "  ... and {} more (each is in the controller's log)",
            c.problems_left_out
        )?;
    }
    Ok(())
}

fn device_label(name: Option<&str>, ifindex: u32) -> String {
    match name {
        Some(n) => format!("{n} (ifindex {ifindex})"),
        None => format!("ifindex {ifindex}"),
    }
}

pub fn render(r: &Report, output: Output, out: &mut dyn Write) -> Result<()> {
    if output == Output::Json {
        return write_json(out, r);
    }
    let unknown = "unknown";
    writeln!(
        out,
        "Node:                {} ({})",
        r.node_name.as_deref().unwrap_or(unknown),
        r.node_ip.as_deref().unwrap_or("no node IP yet")
    )?;
    render_controller(r, out)?;
    if !r.netkit_devices.is_empty() {
        writeln!(
            out,
            "NETKIT:              {} ({}): Cilium's netkit mode, host-side tcx \
             sees no pod traffic; multicast egress does not work for those pods",
            plural(r.netkit_devices.len(), "netkit device", "netkit devices"),
            r.netkit_devices.join(", ")
        )?;
    }
    if let Some(e) = &r.netkit_check_error {
        writeln!(out, "Netkit check:        failed: {e}")?;
    }
    let tunnel = if r.tunnel_ifindex == 0 {
        "none yet".to_owned()
    } else {
        device_label(r.tunnel_device.as_deref(), r.tunnel_ifindex)
    };
    writeln!(out, "Tunnel device:       {tunnel}")?;
    if r.gateway_for.is_empty() {
        writeln!(out, "Gateway:             no")?;
    } else {
        // A policy with both families has a row for each: count it once.
        let n = r
            .gateway_for
            .iter()
            .map(|g| g.policy_id)
            .collect::<BTreeSet<_>>()
            .len();
        writeln!(
            out,
            "Gateway:             yes, for {n} {}",
            if n == 1 { "policy" } else { "policies" }
        )?;
        let mut t = Table::new(&[
            "Policy",
            "Destination CIDRs",
            "Egress IP",
            "Uplink",
            "Sources",
        ]);
        for g in &r.gateway_for {
            t.row(vec![
                g.policy.clone(),
                g.destinations.join(","),
                g.egress_ip.clone(),
                device_label(g.egress_device.as_deref(), g.egress_ifindex),
                g.sources.to_string(),
            ]);
        }
        t.write(out, "  ")?;
    }
    if r.links.is_empty() {
        writeln!(out, "Links:               none")?;
    } else {
        writeln!(out, "Links:")?;
        let mut t = Table::new(&["Device", "Program", "Link ID", "Ifindex"]);
        for l in &r.links {
            t.row(vec![
                l.device.clone(),
                l.program.clone(),
                l.link_id.to_string(),
                if l.attached {
                    l.ifindex.to_string()
                } else {
                    "detached (device gone)".to_owned()
                },
            ]);
        }
        t.write(out, "  ")?;
    }
    writeln!(out, "Maps:")?;
    let mut t = Table::new(&["Map", "Entries", "Capacity", "Fill"]);
    for m in &r.maps {
        let pct = if m.capacity == 0 {
            0.0
        } else {
            m.entries as f64 * 100.0 / f64::from(m.capacity)
        };
        t.row(vec![
            m.map.to_owned(),
            m.entries.to_string(),
            m.capacity.to_string(),
            format!("{pct:.1}%"),
        ]);
    }
    t.write(out, "  ")?;
    match &r.last_sync {
        None => writeln!(out, "Last sync:           never")?,
        Some(s) => writeln!(
            out,
            "Last sync:           {} ({} ago), {} syncs",
            s.utc,
            format_age(s.age_seconds),
            r.syncs
        )?,
    }
    writeln!(
        out,
        "Controller version:  {}",
        r.controller_version.as_deref().unwrap_or(unknown)
    )?;
    writeln!(out, "CLI version:         {}", r.cli_version)?;
    Ok(())
}

/// The netkit devices of this namespace, by a netlink dump on a runtime of
/// its own (the CLI has none).
fn netkit_devices() -> std::result::Result<Vec<String>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let handle = crate::node::connect().map_err(|e| e.to_string())?;
        crate::node::netkit_devices(&handle)
            .await
            .map_err(|e| e.to_string())
    })
}

/// `cilium-mcast-egress status`.
pub fn show(paths: &Paths, output: Output, out: &mut dyn Write) -> Result<()> {
    let maps = open_maps(paths)?;
    let inputs = Inputs {
        status: maps.status()?,
        config: maps.config()?,
        policies: maps.policies()?,
        policies_v6: maps.policies_v6()?,
        names: maps.policy_names()?,
        links: tcx::links(paths).map_err(classify)?,
        fill: maps.fill_levels()?,
        // The rest of `status` is worth showing without it.
        report: health::read_report(paths).map_err(|e| e.to_string()),
        netkit_devices: netkit_devices(),
        now_unix_ns: unix_now_ns(),
    };
    super::ignore_broken_pipe(render(&report(inputs), output, out))
}

#[cfg(test)]
mod tests;
