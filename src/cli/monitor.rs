//! `monitor`: live drop events from the pinned ring buffer
//! `mcast_egw_events`, one line each, in the spirit of
//! `cilium-dbg monitor --type drop`.
//!
//! Only events stamped after the monitor started are shown: what piled up in
//! the ring buffer while nobody listened is consumed and counted, not
//! printed. The ring buffer has one consumer position, so two monitors on
//! one node share the events between them instead of both seeing each.

use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use libbpf_rs::{MapHandle, RingBufferBuilder};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::Serialize;

use super::{check_datapath, classify, clock_ns, format_utc, ifname, CliError, Output, Result};
use crate::datapath::maps::{DropEvent, EventError, EVENTS_MAP};
use crate::datapath::{DatapathError, Paths};

/// How long one poll of the ring buffer may block: the exit conditions
/// (count, timeout, a signal) are checked at least this often.
const POLL: Duration = Duration::from_millis(100);

/// Returned from the ring buffer callback to stop consuming: the events
/// after it stay in the buffer.
const STOP_CONSUMING: i32 = -libc::ECANCELED;

/// When the monitor stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// After this many events.
    pub count: Option<u64>,
    /// After this long.
    pub timeout: Option<Duration>,
}

/// One drop event, as `-o json` prints it (one object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    /// Wall-clock time of the drop, UTC.
    pub time: String,
    /// The datapath's stamp: CLOCK_MONOTONIC nanoseconds.
    pub timestamp_ns: u64,
    /// The stable label, e.g. `spoofed_source`.
    pub reason: &'static str,
    pub code: u32,
    /// `origin` or `gateway`.
    pub role: &'static str,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    pub source: String,
    pub group: String,
    /// `udp`, `tcp`, ... or the number; for IPv6 the upper-layer protocol
    /// behind the extension headers.
    pub protocol: String,
    pub protocol_number: u8,
    /// The TTL of an IPv4 packet, the hop limit of an IPv6 one.
    pub ttl: u8,
    /// Bytes of the packet, Ethernet header included.
    pub length: u32,
    /// The device the packet arrived on.
    pub ifindex: u32,
    /// Its name in this network namespace, if it is there.
    pub device: Option<String>,
}

/// The name of an IP protocol number, as in `/etc/protocols`.
pub fn protocol_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        2 => "igmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        43 => "ipv6-route".into(),
        44 => "ipv6-frag".into(),
        51 => "ah".into(),
        58 => "ipv6-icmp".into(),
        59 => "ipv6-nonxt".into(),
        60 => "ipv6-opts".into(),
        103 => "pim".into(),
        n => n.to_string(),
    }
}

impl EventRow {
    /// `wall_offset_ns`: CLOCK_REALTIME minus CLOCK_MONOTONIC, to turn the
    /// datapath's stamp into a time of day.
    pub fn new(e: &DropEvent, wall_offset_ns: i128, device: Option<String>) -> EventRow {
        let wall = (i128::from(e.timestamp_ns) + wall_offset_ns).clamp(0, i128::from(u64::MAX));
        EventRow {
            time: format_utc(wall as u64),
            timestamp_ns: e.timestamp_ns,
            reason: e.reason.label(),
            code: e.reason.code(),
            role: e.role.label(),
            family: e.family().label(),
            source: e.source.to_string(),
            group: e.group.to_string(),
            protocol: protocol_name(e.proto),
            protocol_number: e.proto,
            ttl: e.ttl,
            length: e.len,
            ifindex: e.ifindex,
            device,
        }
    }

    /// One line of text, after `cilium-dbg monitor`'s drop lines.
    pub fn text(&self) -> String {
        let device = match &self.device {
            Some(name) => format!("device {name}"),
            None => format!("ifindex {}", self.ifindex),
        };
        let ttl = match self.family {
            "ipv6" => "hop limit",
            _ => "ttl",
        };
        format!(
            "{} xx drop ({}) {}, {device}: {} -> {} {}, {ttl} {}, {} bytes",
            self.time,
            self.reason,
            self.role,
            self.source,
            self.group,
            self.protocol,
            self.ttl,
            self.length
        )
    }
}

/// SIGINT and SIGTERM end the monitor cleanly: they are blocked and taken
/// from a signalfd, which the loop reads at least once per poll. Blocking
/// them is what a signalfd needs, so a parent that left them blocked does
/// not matter either.
fn catch_signals() -> Result<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().map_err(|source| CliError::Sys {
        what: "blocking SIGINT and SIGTERM",
        source,
    })?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(|source| {
        CliError::Sys {
            what: "opening a signalfd",
            source,
        }
    })
}

/// Whether SIGINT or SIGTERM arrived.
fn stop_requested(signals: &SignalFd) -> bool {
    matches!(signals.read_signal(), Ok(Some(_)))
}

/// What the ring buffer callback keeps between events.
struct Sink<'w> {
    out: &'w mut dyn Write,
    output: Output,
    limit: Option<u64>,
    started_ns: u64,
    wall_offset_ns: i128,
    printed: u64,
    /// Stamped before the monitor started.
    stale: u64,
    /// Of a layout this build does not know.
    undecodable: u64,
    /// Why the first of those could not be read.
    first_undecodable: Option<EventError>,
    error: Option<CliError>,
}

impl Sink<'_> {
    fn done(&self) -> bool {
        self.error.is_some() || self.limit.is_some_and(|n| self.printed >= n)
    }

    fn take(&mut self, data: &[u8]) -> i32 {
        if self.done() {
            return STOP_CONSUMING;
        }
        let event = match DropEvent::decode(data) {
            Ok(event) => event,
            Err(e) => {
                self.undecodable += 1;
                self.first_undecodable.get_or_insert(e);
                return 0;
            }
        };
        if event.timestamp_ns < self.started_ns {
            self.stale += 1;
            return 0;
        }
        let row = EventRow::new(&event, self.wall_offset_ns, ifname(event.ifindex));
        if let Err(e) = self.emit(&row) {
            self.error = Some(e);
            return STOP_CONSUMING;
        }
        self.printed += 1;
        if self.done() {
            STOP_CONSUMING
        } else {
            0
        }
    }

    fn emit(&mut self, row: &EventRow) -> Result<()> {
        match self.output {
            Output::Json => {
                serde_json::to_writer(&mut *self.out, row)?;
                writeln!(self.out)?;
            }
            Output::Text => writeln!(self.out, "{}", row.text())?,
        }
        self.out.flush()?;
        Ok(())
    }
}

/// `cilium-mcast-egress monitor`: print drop events until `limits` or a
/// signal says stop.
pub fn run(paths: &Paths, output: Output, limits: Limits, out: &mut dyn Write) -> Result<()> {
    check_datapath(paths)?;
    let path: PathBuf = paths.globals().join(EVENTS_MAP);
    if !path.exists() {
        return Err(CliError::MissingMap {
            map: EVENTS_MAP,
            globals: paths.globals(),
            version: super::VERSION,
        });
    }
    let map = MapHandle::from_pinned_path(&path).map_err(|source| {
        classify(DatapathError::PinnedMap {
            path: path.clone(),
            source,
        })
    })?;
    let signals = catch_signals()?;

    let clock = |c| {
        clock_ns(c).ok_or(CliError::Sys {
            what: "reading the clock",
            source: nix::Error::last(),
        })
    };
    let started_ns = clock(libc::CLOCK_MONOTONIC)?;
    let wall_offset_ns = i128::from(clock(libc::CLOCK_REALTIME)?) - i128::from(started_ns);
    let sink = RefCell::new(Sink {
        out,
        output,
        limit: limits.count,
        started_ns,
        wall_offset_ns,
        printed: 0,
        stale: 0,
        undecodable: 0,
        first_undecodable: None,
        error: None,
    });

    let ring_err = |source| CliError::RingBuffer {
        path: path.clone(),
        source,
    };
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&map, |data: &[u8]| sink.borrow_mut().take(data))
        .map_err(ring_err)?;
    let ring = builder.build().map_err(ring_err)?;

    eprintln!("Listening for drop events on {}...", path.display());
    let deadline = limits.timeout.map(|t| Instant::now() + t);
    let mut failure = None;
    loop {
        if sink.borrow().done() || stop_requested(&signals) {
            break;
        }
        let wait = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                left.min(POLL)
            }
            None => POLL,
        };
        let ret = ring.poll_raw(wait);
        if ret < 0 && ret != STOP_CONSUMING && ret != -libc::EINTR {
            failure = Some(CliError::RingBuffer {
                path: path.clone(),
                source: libbpf_rs::Error::from(std::io::Error::from_raw_os_error(-ret)),
            });
            break;
        }
    }
    drop(ring);

    let sink = sink.into_inner();
    if sink.stale > 0 {
        eprintln!(
            "Skipped {} drop events from before this monitor started.",
            sink.stale
        );
    }
    if let Some(first) = &sink.first_undecodable {
        eprintln!(
            "Ignored {} events of an unknown layout (a datapath of another version?); the first: {first}.",
            sink.undecodable
        );
    }
    match sink.error.or(failure) {
        Some(e) => super::ignore_broken_pipe(Err(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::maps::{DropReason, Role};

    fn event() -> DropEvent {
        DropEvent {
            timestamp_ns: 5_000_000_000,
            source: [198, 51, 100, 11].into(),
            group: [232, 1, 1, 1].into(),
            ifindex: 7,
            reason: DropReason::SPOOFED_SOURCE,
            role: Role::Origin,
            len: 50,
            proto: 17,
            ttl: 8,
        }
    }

    #[test]
    fn text_line() {
        let offset = 1_735_689_600_000_000_000i128 - 5_000_000_000;
        let row = EventRow::new(&event(), offset, Some("lxca2".into()));
        assert_eq!(
            row.text(),
            "2025-01-01T00:00:00.000Z xx drop (spoofed_source) origin, device lxca2: \
             198.51.100.11 -> 232.1.1.1 udp, ttl 8, 50 bytes"
        );
        let row = EventRow::new(&event(), offset, None);
        assert!(row.text().contains(", ifindex 7: "), "{}", row.text());
    }

    fn event6() -> DropEvent {
        DropEvent {
            timestamp_ns: 5_000_000_000,
            source: "2001:db8:100::11".parse().unwrap(),
            group: "ff3e::8000:1".parse().unwrap(),
            ifindex: 7,
            reason: DropReason::TTL_EXCEEDED,
            role: Role::Gateway,
            len: 90,
            proto: 17,
            ttl: 1,
        }
    }

    #[test]
    fn text_line_of_an_ipv6_drop_has_its_hop_limit() {
        let offset = 1_735_689_600_000_000_000i128 - 5_000_000_000;
        let row = EventRow::new(&event6(), offset, Some("cilium_vxlan".into()));
        assert_eq!(
            row.text(),
            "2025-01-01T00:00:00.000Z xx drop (ttl_exceeded) gateway, device cilium_vxlan: \
             2001:db8:100::11 -> ff3e::8000:1 udp, hop limit 1, 90 bytes"
        );
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["family"], "ipv6");
        assert_eq!(v["source"], "2001:db8:100::11");
        assert_eq!(v["group"], "ff3e::8000:1");
        assert_eq!(v["ttl"], 1);
        assert_eq!(protocol_name(58), "ipv6-icmp");
    }

    #[test]
    fn json_object() {
        let row = EventRow::new(&event(), 0, Some("lxca2".into()));
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["reason"], "spoofed_source");
        assert_eq!(v["code"], 2);
        assert_eq!(v["role"], "origin");
        assert_eq!(v["family"], "ipv4");
        assert_eq!(v["source"], "198.51.100.11");
        assert_eq!(v["group"], "232.1.1.1");
        assert_eq!(v["protocol"], "udp");
        assert_eq!(v["protocol_number"], 17);
        assert_eq!(v["ttl"], 8);
        assert_eq!(v["length"], 50);
        assert_eq!(v["ifindex"], 7);
        assert_eq!(v["device"], "lxca2");
        assert_eq!(v["time"], "1970-01-01T00:00:05.000Z");
    }

    #[test]
    fn stale_and_surplus_events_are_not_printed() {
        let mut out = Vec::new();
        let mut sink = Sink {
            out: &mut out,
            output: Output::Json,
            limit: Some(1),
            started_ns: 4_000_000_000,
            wall_offset_ns: 0,
            printed: 0,
            stale: 0,
            undecodable: 0,
            first_undecodable: None,
            error: None,
        };
        assert_eq!(sink.take(&[0u8; 3]), 0, "another layout is skipped");
        assert_eq!(sink.first_undecodable, Some(EventError::Size(3)));
        let raw = |ts: u64| {
            let e = crate::bpf_intf::mcast_drop_event {
                timestamp_ns: ts,
                saddr: u32::from_ne_bytes([198, 51, 100, 11]),
                daddr: u32::from_ne_bytes([232, 1, 1, 1]),
                ifindex: 0,
                reason: DropReason::NO_GATEWAY.code(),
                role: 0,
                len: 60,
                proto: 17,
                ttl: 8,
                ..Default::default()
            };
            crate::datapath::Plain::as_bytes(&e).to_vec()
        };
        assert_eq!(sink.take(&raw(3_000_000_000)), 0, "stale: skipped");
        let stale6 = crate::bpf_intf::mcast_drop_event6 {
            timestamp_ns: 3_500_000_000,
            reason: DropReason::MALFORMED.code(),
            ..Default::default()
        };
        assert_eq!(
            sink.take(crate::datapath::Plain::as_bytes(&stale6)),
            0,
            "an IPv6 record is read, and stale: skipped"
        );
        assert_eq!(
            sink.take(&raw(4_500_000_000)),
            STOP_CONSUMING,
            "the last one"
        );
        assert_eq!(
            sink.take(&raw(4_600_000_000)),
            STOP_CONSUMING,
            "left in the ring"
        );
        assert_eq!((sink.printed, sink.stale, sink.undecodable), (1, 2, 1));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"no_gateway\""), "{text}");
    }
}
