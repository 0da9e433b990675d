//! tcx attachment: our programs at the head of a device's ingress (or, for
//! `mcast_to_overlay`, egress) chain, in front of Cilium's, each held by a
//! link pinned under our own directory.
//!
//! No clsact qdisc or tc filter is ever created or destroyed here: tcx needs
//! neither, and Cilium owns the legacy ones.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::Path;
use std::ptr::NonNull;

use libbpf_rs::query::LinkTypeInfo;
use libbpf_rs::{AsRawLibbpf, Link};

use super::pin::{remove_dir_if_exists, remove_file};
use super::{DatapathError, Paths, Program, Result};

/// What [`attach_or_update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOutcome {
    /// A new link at the head of the chain.
    Attached { link_id: u32 },
    /// Our pinned link already held the device; its program was replaced.
    Updated { link_id: u32 },
}

impl AttachOutcome {
    pub fn link_id(self) -> u32 {
        match self {
            AttachOutcome::Attached { link_id } | AttachOutcome::Updated { link_id } => link_id,
        }
    }
}

/// One of our pinned links, as the kernel sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub device: String,
    pub program: String,
    pub link_id: u32,
    pub prog_id: u32,
    /// 0 once the device is gone: the kernel detached the link.
    pub ifindex: u32,
}

/// Device names go into pin paths: refuse anything that could escape them.
pub(super) fn check_device_name(device: &str) -> Result<()> {
    let ok = !device.is_empty()
        && device.len() < libc::IFNAMSIZ
        && device != "."
        && device != ".."
        && !device.contains('/')
        && !device.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(DatapathError::BadDeviceName {
            device: device.to_owned(),
        })
    }
}

pub fn ifindex_of(device: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(device).map_err(|_| DatapathError::DeviceNotFound {
        device: device.to_owned(),
    })
}

/// The ifindex a pinned link holds: 0 once its device is gone (or for a
/// link that is not tcx at all, which is not ours to keep either).
fn link_ifindex(link: &Link, path: &Path) -> Result<u32> {
    let info = link.info().map_err(|source| DatapathError::LinkPin {
        path: path.to_owned(),
        source,
    })?;
    Ok(match info.info {
        LinkTypeInfo::Tcx(tcx) => tcx.ifindex,
        _ => 0,
    })
}

fn link_id(link: &Link, path: &Path) -> Result<u32> {
    link.info()
        .map(|info| info.id)
        .map_err(|source| DatapathError::LinkPin {
            path: path.to_owned(),
            source,
        })
}

/// Attach `prog` to `device`, or update the program of our pinned link there.
/// Returns the link too, for the caller to hold; the pin keeps it attached
/// either way.
pub(super) fn attach_or_update(
    paths: &Paths,
    device: &str,
    program: Program,
    prog: &libbpf_rs::Program<'_>,
) -> Result<(AttachOutcome, Link)> {
    let pin = paths.link_pin(device, program)?;
    let ifindex = ifindex_of(device)?;

    if pin.exists() {
        let mut link = Link::open(&pin).map_err(|source| DatapathError::LinkPin {
            path: pin.clone(),
            source,
        })?;
        // An error reading the link is returned, never taken for a stale
        // link: removing a live pin would leave Cilium alone on the device.
        if link_ifindex(&link, &pin)? == ifindex {
            link.update_prog(prog)
                .map_err(|source| DatapathError::LinkUpdate {
                    path: pin.clone(),
                    source,
                })?;
            let outcome = AttachOutcome::Updated {
                link_id: link_id(&link, &pin)?,
            };
            return Ok((outcome, link));
        }
        // The device this link held went away (the kernel detached the link,
        // its ifindex reads 0) or was replaced by another of the same name.
        drop(link);
        remove_file(&pin)?;
    }

    let dir = pin
        .parent()
        .unwrap_or(paths.links_dir().as_path())
        .to_owned();
    fs::create_dir_all(&dir).map_err(|source| DatapathError::CreateDir { path: dir, source })?;
    let link = attach_pinned(prog, ifindex, ChainPosition::Head, &pin).map_err(|source| {
        DatapathError::Attach {
            program: program.name(),
            device: device.to_owned(),
            source,
        }
    })?;
    let outcome = AttachOutcome::Attached {
        link_id: link_id(&link, &pin)?,
    };
    Ok((outcome, link))
}

/// Which of a device's two tcx chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn attach_type(self) -> libbpf_sys::bpf_attach_type {
        match self {
            Direction::Ingress => libbpf_sys::BPF_TCX_INGRESS,
            Direction::Egress => libbpf_sys::BPF_TCX_EGRESS,
        }
    }
}

/// Where in a tcx chain a program goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainPosition {
    /// First: ours, so that we run before Cilium's programs.
    Head,
    /// Last: where Cilium appends its own programs.
    Tail,
}

/// Attach `prog` to a tcx chain of `ifindex` and pin the link at `pin`; the
/// pin keeps it attached after the process exits. The chain is the one the
/// program's section names (`tcx/ingress`, `tcx/egress`): libbpf takes it
/// from the program's expected attach type.
///
/// libbpf-rs has no tcx attach; this is the one place that calls libbpf's.
pub fn attach_pinned(
    prog: &libbpf_rs::Program<'_>,
    ifindex: u32,
    position: ChainPosition,
    pin: &Path,
) -> io::Result<Link> {
    let ifindex = i32::try_from(ifindex).map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
    let opts = libbpf_sys::bpf_tcx_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_tcx_opts>() as _,
        // Before or after no program in particular: the head or the tail.
        flags: match position {
            ChainPosition::Head => libbpf_sys::BPF_F_BEFORE,
            ChainPosition::Tail => libbpf_sys::BPF_F_AFTER,
        },
        relative_fd: 0,
        relative_id: 0,
        expected_revision: 0,
        ..Default::default()
    };

    // SAFETY: `prog` is a loaded program of a live object (the borrow keeps
    // it alive for this call); `opts` is a fully initialised bpf_tcx_opts
    // whose `sz` is its own size. libbpf returns a new bpf_link, which the
    // `Link` owns from here on (destroyed once, when it drops), or NULL with
    // errno set.
    let link = unsafe {
        let raw =
            libbpf_sys::bpf_program__attach_tcx(prog.as_libbpf_object().as_ptr(), ifindex, &opts);
        NonNull::new(raw).map(|raw| Link::from_ptr(raw))
    };
    let mut link = link.ok_or_else(io::Error::last_os_error)?;
    // Unpinned, the link goes (and detaches) when it drops; pinned, it
    // stays attached after the process exits.
    link.pin(pin).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(link)
}

/// Detach our link of `program` on `device`, remove its pin (and the
/// device's directory once empty). Returns whether there was a link.
pub(super) fn detach(paths: &Paths, device: &str, program: Program) -> Result<bool> {
    let pin = paths.link_pin(device, program)?;
    if !pin.exists() {
        return Ok(false);
    }
    detach_pin(&pin)?;
    if let Some(dir) = pin.parent() {
        // Only succeeds when empty; the other program may still be there.
        let _ = fs::remove_dir(dir);
    }
    Ok(true)
}

fn detach_pin(pin: &Path) -> Result<()> {
    match Link::open(pin) {
        Ok(link) => {
            // A link whose device is gone is already detached by the kernel;
            // detaching it again fails harmlessly.
            let _ = link.detach();
        }
        Err(source) => {
            return Err(DatapathError::LinkPin {
                path: pin.to_owned(),
                source,
            })
        }
    }
    remove_file(pin)
}

/// Detach and unpin every link under our links directory.
pub(super) fn detach_all(paths: &Paths) -> Result<Vec<(String, String)>> {
    let mut removed = Vec::new();
    for state in links(paths)? {
        let pin = paths.links_dir().join(&state.device).join(&state.program);
        detach_pin(&pin)?;
        removed.push((state.device, state.program));
    }
    remove_dir_if_exists(&paths.links_dir())?;
    Ok(removed)
}

/// Every link pinned under our links directory, sorted by device and program.
pub fn links(paths: &Paths) -> Result<Vec<LinkState>> {
    let mut out = Vec::new();
    let devices = match fs::read_dir(paths.links_dir()) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(DatapathError::CreateDir {
                path: paths.links_dir(),
                source,
            })
        }
    };
    for dev in devices.flatten() {
        let device = dev.file_name().to_string_lossy().into_owned();
        let Ok(programs) = fs::read_dir(dev.path()) else {
            continue;
        };
        for prog in programs.flatten() {
            let program = prog.file_name().to_string_lossy().into_owned();
            let pin = prog.path();
            // One unreadable pin must not hide the others (nor stop their
            // clean-up): it is logged and skipped.
            let info = match Link::open(&pin).and_then(|l| l.info()) {
                Ok(info) => info,
                Err(e) => {
                    tracing::warn!(path = %pin.display(), error = %e, "unreadable link pin skipped");
                    continue;
                }
            };
            let ifindex = match info.info {
                LinkTypeInfo::Tcx(tcx) => tcx.ifindex,
                _ => 0,
            };
            out.push(LinkState {
                device: device.clone(),
                program,
                link_id: info.id,
                prog_id: info.prog_id,
                ifindex,
            });
        }
    }
    out.sort_by(|a, b| (&a.device, &a.program).cmp(&(&b.device, &b.program)));
    Ok(out)
}

/// One program in a device's tcx chain, in chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcxEntry {
    pub prog_id: u32,
    /// 0 for a program attached without a link.
    pub link_id: u32,
}

/// The device's tcx ingress chain, head first: who runs before whom.
pub fn tcx_ingress_chain(ifindex: u32) -> Result<Vec<TcxEntry>> {
    tcx_chain(ifindex, Direction::Ingress)
}

/// The device's tcx egress chain, head first.
pub fn tcx_egress_chain(ifindex: u32) -> Result<Vec<TcxEntry>> {
    tcx_chain(ifindex, Direction::Egress)
}

/// One of the device's tcx chains, head first.
pub fn tcx_chain(ifindex: u32, direction: Direction) -> Result<Vec<TcxEntry>> {
    const MAX: usize = 64;
    let mut prog_ids = [0u32; MAX];
    let mut link_ids = [0u32; MAX];
    let mut opts = libbpf_sys::bpf_prog_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_query_opts>() as _,
        prog_ids: prog_ids.as_mut_ptr(),
        link_ids: link_ids.as_mut_ptr(),
        ..Default::default()
    };
    opts.__bindgen_anon_1.count = MAX as u32;
    let target = i32::try_from(ifindex).map_err(|e| DatapathError::Query {
        ifindex,
        source: io::Error::new(ErrorKind::InvalidInput, e),
    })?;
    // SAFETY: `opts` is initialised with its own size and points at two
    // arrays of `count` u32s that outlive the call; on success the kernel
    // wrote the count of entries back into the union's `count`.
    let count = unsafe {
        let ret = libbpf_sys::bpf_prog_query_opts(target, direction.attach_type(), &mut opts);
        if ret < 0 {
            Err(ret)
        } else {
            Ok(opts.__bindgen_anon_1.count)
        }
    };
    let n = match count {
        Ok(count) => (count as usize).min(MAX),
        Err(ret) => {
            return Err(DatapathError::Query {
                ifindex,
                source: io::Error::from_raw_os_error(-ret),
            })
        }
    };
    Ok((0..n)
        .map(|i| TcxEntry {
            prog_id: prog_ids[i],
            link_id: link_ids[i],
        })
        .collect())
}
