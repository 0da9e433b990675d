//! The inspection commands: `policy list`, `counters`, `status` and
//! `monitor`. Each reads the pinned state directly, so it works while the
//! controller is down, and prints aligned text or JSON.
//!
//! Every command writes to the writer it is given (stdout in the binary), so
//! the rendering is tested without a datapath.

pub mod counters;
pub mod monitor;
pub mod policy;
pub mod status;

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::datapath::maps::{self, Maps};
use crate::datapath::{DatapathError, Paths};

/// How a command prints what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns, for people.
    #[default]
    Text,
    /// JSON, for tools: one document (`monitor`: one object per line).
    Json,
}

/// Errors of the inspection commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{path} does not exist (is the BPF filesystem mounted there?)")]
    NoSuchDir { path: PathBuf },
    #[error("{path} is not on a BPF filesystem: pass the mount point with --bpffs-root")]
    NotBpffs { path: PathBuf },
    #[error("no datapath pinned under {globals}: is cilium-mcast-egress running?")]
    NoDatapath { globals: PathBuf },
    #[error(
        "map {map} is not pinned under {globals}: the pinned datapath is of another \
         version than this CLI ({version})"
    )]
    MissingMap {
        map: &'static str,
        globals: PathBuf,
        version: &'static str,
    },
    #[error("{path}: permission denied (reading pinned BPF objects needs root or CAP_BPF)")]
    PermissionDenied { path: PathBuf },
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("ring buffer {path}: {source}")]
    RingBuffer {
        path: PathBuf,
        source: libbpf_rs::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::Error,
    },
    #[error("writing the output: {0}")]
    Write(#[from] io::Error),
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// This CLI's version, as `status` reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Check that `paths` points at a BPF filesystem holding our datapath, so
/// that the common mistakes get an error that says what is wrong instead of
/// libbpf's "No such file or directory".
pub fn check_datapath(paths: &Paths) -> Result<()> {
    let root = paths.bpffs_root();
    if !root.exists() {
        return Err(CliError::NoSuchDir {
            path: root.to_owned(),
        });
    }
    if !crate::datapath::is_bpffs(root).unwrap_or(false) {
        return Err(CliError::NotBpffs {
            path: root.to_owned(),
        });
    }
    let globals = paths.globals();
    if !globals.join(maps::POLICY_MAP).exists() {
        return Err(CliError::NoDatapath { globals });
    }
    Ok(())
}

/// Open every pinned map, after [`check_datapath`].
pub fn open_maps(paths: &Paths) -> Result<Maps> {
    check_datapath(paths)?;
    let globals = paths.globals();
    if let Some(map) = maps::ALL_MAPS
        .into_iter()
        .find(|m| !globals.join(m).exists())
    {
        return Err(CliError::MissingMap {
            map,
            globals,
            version: VERSION,
        });
    }
    Maps::open_pinned(paths).map_err(classify)
}

/// A permission error on a pin gets the hint it needs; others pass as is.
pub(crate) fn classify(e: DatapathError) -> CliError {
    match e {
        DatapathError::PinnedMap { path, source }
            if source.kind() == libbpf_rs::ErrorKind::PermissionDenied =>
        {
            CliError::PermissionDenied { path }
        }
        e => CliError::Datapath(e),
    }
}

/// A closed stdout (`| head`) ends a command quietly, like other tools.
pub fn ignore_broken_pipe(r: Result<()>) -> Result<()> {
    match r {
        Err(CliError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// Pretty-printed JSON and a final newline.
pub(crate) fn write_json<T: serde::Serialize>(out: &mut dyn Write, value: &T) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Columns padded to their widest cell plus three spaces, the way Go's
/// tabwriter lays out `cilium-dbg`'s tables. The last column is not padded.
#[derive(Debug, Default)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn write(&self, out: &mut dyn Write, indent: &str) -> io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::from(indent);
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    let pad = widths[c] - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

/// The name of `ifindex` in this process's network namespace, if it has one
/// there.
pub fn ifname(ifindex: u32) -> Option<String> {
    if ifindex == 0 {
        return None;
    }
    nix::net::if_::if_indextoname(ifindex)
        .ok()
        .map(|n| n.to_string_lossy().into_owned())
}

/// `name` for a policy id, or the id itself when no name is recorded.
pub(crate) fn policy_label(names: &std::collections::BTreeMap<u32, String>, id: u32) -> String {
    names
        .get(&id)
        .filter(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

/// An address that means "not known yet" when it is 0.0.0.0.
pub(crate) fn known(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    (!ip.is_unspecified()).then_some(ip)
}

/// Nanoseconds of `clock`, or None if the clock cannot be read.
pub(crate) fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let ts = nix::time::clock_gettime(nix::time::ClockId::from_raw(clock)).ok()?;
    let secs = u64::try_from(ts.tv_sec()).ok()?;
    let nanos = u64::try_from(ts.tv_nsec()).ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

/// Now, in nanoseconds since the Unix epoch.
pub(crate) fn unix_now_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME).unwrap_or(0)
}

/// `unix_ns` as an RFC 3339 UTC time with milliseconds,
/// e.g. `2025-03-01T12:34:56.789Z`.
pub fn format_utc(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let millis = (unix_ns % 1_000_000_000) / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic
/// Gregorian), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A duration for people: `45s`, `3m12s`, `2h5m`, `4d3h`.
pub fn format_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day) 12:34:56.789
        assert_eq!(
            format_utc(951_827_696_789_000_000),
            "2000-02-29T12:34:56.789Z"
        );
        // 2024-12-31 23:59:59
        assert_eq!(
            format_utc(1_735_689_599_000_000_000),
            "2024-12-31T23:59:59.000Z"
        );
        assert_eq!(
            format_utc(1_735_689_600_000_000_000),
            "2025-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(format_age(0), "0s");
        assert_eq!(format_age(59), "59s");
        assert_eq!(format_age(61), "1m1s");
        assert_eq!(format_age(3600 * 2 + 300), "2h5m");
        assert_eq!(format_age(86_400 * 4 + 3600 * 3 + 7), "4d3h");
    }

    #[test]
    fn table_columns_line_up() {
        let mut t = Table::new(&["Source IP", "Gateway IP"]);
        t.row(vec!["198.51.100.111".into(), "Not Found".into()]);
        t.row(vec!["1.2.3.4".into(), "192.0.2.1".into()]);
        let mut out = Vec::new();
        t.write(&mut out, "").unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Source IP        Gateway IP");
        assert_eq!(lines[1], "198.51.100.111   Not Found");
        assert_eq!(lines[2], "1.2.3.4          192.0.2.1");
    }

    #[test]
    fn unnamed_policies_print_their_id() {
        let names = [(7, "cameras".to_owned()), (8, String::new())].into();
        assert_eq!(policy_label(&names, 7), "cameras");
        assert_eq!(policy_label(&names, 8), "8");
        assert_eq!(policy_label(&names, 9), "9");
    }
}
