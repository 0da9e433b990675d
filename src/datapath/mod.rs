//! The datapath: load the BPF object, pin its maps beside Cilium's,
//! attach the programs with tcx, and read and write the maps.
//!
//! One object (`bpf/mcast_egress.bpf.c`), one skeleton, one owner
//! ([`Datapath`]): the maps are created, or adopted from their pins, once.
//! Three programs: `mcast_from_container` on the ingress of every endpoint
//! veth, `mcast_from_overlay` on the ingress of the tunnel device, and
//! `mcast_to_overlay` on the egress of the tunnel device, which puts the
//! tunnel key on the copies the origin sends while Cilium keeps the
//! original (without it those copies are lost; see `bpf/lib/pending.h`).
//!
//! Everything here survives the process: maps are pinned under
//! `<bpffs-root>/tc/globals/`, links under
//! `<bpffs-root>/cilium-mcast-egress/links/<device>/<program>`. A later load
//! adopts both, so the datapath keeps forwarding across restarts and
//! upgrades of the same layout.

mod btf;
mod bytes;
pub mod maps;
mod pin;
pub mod tcx;
mod upgrade;

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, OpenObject};

use crate::bpf_skel::egress::{McastEgressSkel, McastEgressSkelBuilder};

pub use btf::{map_btf_layout, BtfLayout, TypeLayout};
pub use bytes::Plain;
pub use maps::Maps;
pub use pin::{is_bpffs, MapLayout, MAP_PREFIX};
pub use tcx::{AttachOutcome, ChainPosition, Direction, LinkState};
pub use upgrade::{LegacyPolicy, LEGACY_POLICY_MAP};

/// Default mount point of the BPF filesystem, as Cilium uses it.
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf";

/// The capacities an operator chooses at load: those of the maps whose
/// fill grows with the cluster. Both are unpreallocated, so a large
/// capacity costs kernel memory only as entries are written.
///
/// A capacity is part of a map's layout: a pinned map of another capacity
/// is refused at load like any other layout ([`DatapathError::CapacityMismatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacities {
    /// Entries of `mcast_egw_policy_hash_v4`: this node's pods times their
    /// policies' group prefixes, plus, on a gateway, every pod it serves
    /// times its prefixes and exclusions.
    pub policy_entries: u32,
    /// Entries of `mcast_egw_policy_names`: one per policy of the cluster.
    pub policy_names: u32,
}

impl Capacities {
    /// The largest capacity accepted.
    pub const MAX: u32 = 1 << 24;

    /// The capacity of map `name`, if it is one chosen at load: (its name,
    /// the capacity, the flag that sets it).
    fn of(&self, name: &str) -> Option<(&'static str, u32, &'static str)> {
        let spec = maps::spec(name)?;
        match spec.capacity {
            maps::Capacity::AtLoad { flag, of } => Some((spec.name, of(self), flag)),
            maps::Capacity::Fixed(_) => None,
        }
    }
}

impl Default for Capacities {
    /// Sized for a large node: a gateway serving thousands of pods, a
    /// cluster of thousands of policies.
    fn default() -> Self {
        Capacities {
            policy_entries: crate::bpf_intf::MCAST_EGW_POLICY_MAX_ENTRIES,
            policy_names: crate::bpf_intf::MCAST_EGW_NAMES_MAX_ENTRIES,
        }
    }
}

/// Errors of the datapath layer.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("{path} is not on a BPF filesystem (mount one with `mount -t bpf bpf {path}`)")]
    NotBpffs { path: PathBuf },
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening BPF object {object}: {source}")]
    Open {
        object: &'static str,
        source: libbpf_rs::Error,
    },
    #[error("loading BPF object {object} (is this kernel 6.6+ with BTF?): {source}")]
    Load {
        object: &'static str,
        source: libbpf_rs::Error,
    },
    #[error(
        "pinned map {path} has another layout ({pinned}) than this build ({ours}); \
         refusing to mix them: run `cilium-mcast-egress uninstall` to remove the old datapath"
    )]
    LayoutMismatch {
        path: PathBuf,
        pinned: MapLayout,
        ours: MapLayout,
    },
    /// The pinned map differs from ours in its capacity alone.
    #[error(
        "pinned map {path} holds {pinned} entries at most, and {ours} were asked for; \
         a capacity is part of the layout, so the pinned map is not re-used: start with the \
         capacity it has ({flag} {pinned}) to keep it, or run `cilium-mcast-egress uninstall` \
         first to take the new one"
    )]
    CapacityMismatch {
        path: PathBuf,
        pinned: u32,
        ours: u32,
        flag: &'static str,
    },
    /// The BPF object has a map of ours that `maps/table.rs` does not
    /// declare: this build is inconsistent.
    #[error("BPF object map {map} ({object}) is not declared in the map table")]
    Undeclared { map: String, object: MapLayout },
    /// The BPF object's map differs from its declaration in the map table.
    #[error("BPF object map {map} ({object}) is not as the map table declares it ({declared})")]
    NotAsDeclared {
        map: String,
        declared: String,
        object: MapLayout,
    },
    #[error("capacity {value} of {map} is out of range (1 to {max})", max = Capacities::MAX)]
    BadCapacity { map: &'static str, value: u32 },
    #[error("pinned map {path}: {source}")]
    PinnedMap {
        path: PathBuf,
        source: libbpf_rs::Error,
    },
    #[error("device {device} not found")]
    DeviceNotFound { device: String },
    #[error("device name {device:?} cannot be used in a pin path")]
    BadDeviceName { device: String },
    #[error("attaching {program} to {device} with tcx: {source}")]
    Attach {
        program: &'static str,
        device: String,
        source: std::io::Error,
    },
    #[error("link pin {path}: {source}")]
    LinkPin {
        path: PathBuf,
        source: libbpf_rs::Error,
    },
    #[error("updating the program of link {path}: {source}")]
    LinkUpdate {
        path: PathBuf,
        source: libbpf_rs::Error,
    },
    #[error("querying tcx programs of ifindex {ifindex}: {source}")]
    Query {
        ifindex: u32,
        source: std::io::Error,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("map {map}: {op}: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        source: libbpf_rs::Error,
    },
    #[error("map {map}: value of {got} bytes, expected {want}")]
    MapValueSize {
        map: &'static str,
        got: usize,
        want: usize,
    },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

pub type Result<T, E = DatapathError> = std::result::Result<T, E>;

/// The programs, by the hook they serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Program {
    /// `mcast_from_container`: tcx ingress of endpoint veths (`lxc*`).
    FromContainer,
    /// `mcast_from_overlay`: tcx ingress of the tunnel device (`cilium_vxlan`).
    FromOverlay,
    /// `mcast_to_overlay`: tcx egress of the tunnel device; sets the tunnel
    /// key of the origin's copies when Cilium keeps the original.
    ToOverlay,
}

impl Program {
    pub const ALL: [Program; 3] = [
        Program::FromContainer,
        Program::FromOverlay,
        Program::ToOverlay,
    ];

    /// The program's name in the BPF object, also its link pin's file name.
    pub fn name(self) -> &'static str {
        match self {
            Program::FromContainer => "mcast_from_container",
            Program::FromOverlay => "mcast_from_overlay",
            Program::ToOverlay => "mcast_to_overlay",
        }
    }

    /// The tcx chain the program goes into (its section in the object).
    pub fn direction(self) -> Direction {
        match self {
            Program::FromContainer | Program::FromOverlay => Direction::Ingress,
            Program::ToOverlay => Direction::Egress,
        }
    }

    pub fn from_name(name: &str) -> Option<Program> {
        Program::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Where the datapath keeps its pins under one BPF filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    pub fn new(bpffs_root: impl Into<PathBuf>) -> Self {
        Paths {
            root: bpffs_root.into(),
        }
    }

    pub fn bpffs_root(&self) -> &Path {
        &self.root
    }

    /// `<root>/tc/globals`: our maps, beside Cilium's.
    pub fn globals(&self) -> PathBuf {
        self.root.join("tc").join("globals")
    }

    /// `<root>/cilium-mcast-egress`: everything else of ours.
    pub fn own_dir(&self) -> PathBuf {
        self.root.join("cilium-mcast-egress")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.own_dir().join("links")
    }

    pub fn link_pin(&self, device: &str, program: Program) -> Result<PathBuf> {
        tcx::check_device_name(device)?;
        Ok(self.links_dir().join(device).join(program.name()))
    }
}

/// Storage the skeleton borrows from; it must outlive the [`Datapath`].
pub struct DatapathStorage {
    object: MaybeUninit<OpenObject>,
}

impl Default for DatapathStorage {
    fn default() -> Self {
        DatapathStorage {
            object: MaybeUninit::uninit(),
        }
    }
}

/// The object's name in errors.
const OBJECT: &str = "mcast_egress";

/// The loaded datapath and what it owns: the skeleton (every program and
/// map), handles to the pinned maps, and the links this process attached.
/// Dropping it detaches nothing: the maps and links stay pinned and
/// forwarding.
pub struct Datapath<'obj> {
    paths: Paths,
    skel: McastEgressSkel<'obj>,
    maps: Maps,
    /// Our link of each (device, program) this process attached or took
    /// over; the pin holds the link too, so dropping one detaches nothing.
    links: Mutex<BTreeMap<(String, Program), Link>>,
    legacy: LegacyPolicy,
}

impl<'obj> Datapath<'obj> {
    /// Load every program. Maps already pinned under `<root>/tc/globals` are
    /// re-used (after checking their layout), missing ones are created and
    /// pinned; an older build's LPM policy map has its entries taken over
    /// and is unpinned ([`LegacyPolicy`]). Nothing is attached.
    pub fn load(storage: &'obj mut DatapathStorage, paths: Paths) -> Result<Self> {
        Datapath::load_with(storage, paths, &Capacities::default())
    }

    /// [`Datapath::load`] with the map capacities chosen by the operator.
    pub fn load_with(
        storage: &'obj mut DatapathStorage,
        paths: Paths,
        capacities: &Capacities,
    ) -> Result<Self> {
        let skel = load_skel_with(
            McastEgressSkelBuilder::default(),
            OBJECT,
            &mut storage.object,
            &paths,
            capacities,
        )?;
        let maps = Maps::open_pinned(&paths)?;
        upgrade::cover_pinned_lens(&maps)?;
        let legacy = upgrade::adopt_legacy_policy(&paths, &maps)?;
        Ok(Datapath {
            paths,
            skel,
            maps,
            links: Mutex::new(BTreeMap::new()),
            legacy,
        })
    }

    /// What this load did with an older build's LPM policy map.
    pub fn legacy_policy(&self) -> LegacyPolicy {
        self.legacy
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn program(&self, program: Program) -> &libbpf_rs::ProgramMut<'obj> {
        let progs = &self.skel.progs;
        match program {
            Program::FromContainer => &progs.mcast_from_container,
            Program::FromOverlay => &progs.mcast_from_overlay,
            Program::ToOverlay => &progs.mcast_to_overlay,
        }
    }

    /// Attach `program` at the head of `device`'s tcx chain (ingress or
    /// egress, by [`Program::direction`]), or, when
    /// our link for that device and program is already pinned, swap the
    /// program in that link (`bpf_link_update`): never a second link.
    pub fn attach(&self, device: &str, program: Program) -> Result<AttachOutcome> {
        let (outcome, link) =
            tcx::attach_or_update(&self.paths, device, program, self.program(program))?;
        self.held_links().insert((device.to_owned(), program), link);
        Ok(outcome)
    }

    /// Detach our link of `program` on `device` and remove its pin, as
    /// [`detach`] does, and let go of the link if this process held it.
    pub fn detach(&self, device: &str, program: Program) -> Result<bool> {
        self.held_links().remove(&(device.to_owned(), program));
        detach(&self.paths, device, program)
    }

    /// The (device, program) pairs whose links this process holds.
    pub fn attached(&self) -> Vec<(String, Program)> {
        self.held_links().keys().cloned().collect()
    }

    fn held_links(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, Program), Link>> {
        // The map stays consistent whatever panicked while it was held: an
        // entry is inserted or removed whole.
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The owner's handles to every pinned map, opened once at load.
    pub fn pinned_maps(&self) -> &Maps {
        &self.maps
    }

    /// Handles of its own to every pinned map, for a task that outlives a
    /// borrow of the owner (the metrics, the controller).
    pub fn maps(&self) -> Result<Maps> {
        Maps::open_pinned(&self.paths)
    }
}

/// Open, check pins, load: the steps every object of ours goes through.
/// Generic so that the test and benchmark builds of the programs are loaded
/// exactly like the production one, sharing its maps by their pins. Default
/// capacities.
pub fn load_skel<'obj, B>(
    builder: B,
    object: &'static str,
    storage: &'obj mut MaybeUninit<OpenObject>,
    paths: &Paths,
) -> Result<<B::Output as OpenSkel<'obj>>::Output>
where
    B: SkelBuilder<'obj>,
{
    load_skel_with(builder, object, storage, paths, &Capacities::default())
}

/// [`load_skel`] with chosen capacities.
pub fn load_skel_with<'obj, B>(
    builder: B,
    object: &'static str,
    storage: &'obj mut MaybeUninit<OpenObject>,
    paths: &Paths,
    capacities: &Capacities,
) -> Result<<B::Output as OpenSkel<'obj>>::Output>
where
    B: SkelBuilder<'obj>,
{
    pin::ensure_bpffs_dirs(paths)?;
    let mut open = builder
        .open(storage)
        .map_err(|source| DatapathError::Open { object, source })?;
    pin::set_capacities(open.open_object_mut(), capacities)?;
    pin::prepare_map_pins(open.open_object_mut(), &paths.globals())?;
    open.load()
        .map_err(|source| DatapathError::Load { object, source })
}

/// Detach our link of `program` on `device` and remove its pin. Returns
/// whether there was one. Works without loading anything.
pub fn detach(paths: &Paths, device: &str, program: Program) -> Result<bool> {
    tcx::detach(paths, device, program)
}

/// Remove everything this project pinned under the BPF filesystem: every
/// link (detaching it) and every `mcast_egw_*` map. Nothing else is touched.
pub fn uninstall(paths: &Paths) -> Result<UninstallReport> {
    let links = tcx::detach_all(paths)?;
    let maps = pin::unpin_maps(&paths.globals())?;
    pin::remove_dir_if_exists(&paths.own_dir())?;
    Ok(UninstallReport { links, maps })
}

/// What [`uninstall`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UninstallReport {
    /// (device, program) of each link detached.
    pub links: Vec<(String, String)>,
    /// Names of the maps unpinned.
    pub maps: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_paths() {
        let p = Paths::new("/sys/fs/bpf");
        assert_eq!(p.globals(), Path::new("/sys/fs/bpf/tc/globals"));
        assert_eq!(
            p.link_pin("lxc12ab", Program::FromContainer).unwrap(),
            Path::new("/sys/fs/bpf/cilium-mcast-egress/links/lxc12ab/mcast_from_container")
        );
        assert_eq!(
            p.link_pin("cilium_vxlan", Program::FromOverlay).unwrap(),
            Path::new("/sys/fs/bpf/cilium-mcast-egress/links/cilium_vxlan/mcast_from_overlay")
        );
        assert_eq!(
            p.link_pin("cilium_vxlan", Program::ToOverlay).unwrap(),
            Path::new("/sys/fs/bpf/cilium-mcast-egress/links/cilium_vxlan/mcast_to_overlay")
        );
    }

    #[test]
    fn device_names_that_could_escape_the_pin_dir_are_refused() {
        let p = Paths::new("/sys/fs/bpf");
        for bad in ["", ".", "..", "../x", "a/b", "sixteen-chars-xx", "nul\0"] {
            assert!(
                matches!(
                    p.link_pin(bad, Program::FromContainer),
                    Err(DatapathError::BadDeviceName { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(p
            .link_pin("fifteen-chars-x", Program::FromContainer)
            .is_ok());
    }

    #[test]
    fn only_the_tunnel_key_program_goes_on_egress() {
        assert_eq!(Program::FromContainer.direction(), Direction::Ingress);
        assert_eq!(Program::FromOverlay.direction(), Direction::Ingress);
        assert_eq!(Program::ToOverlay.direction(), Direction::Egress);
    }

    #[test]
    fn program_names_are_ours_never_ciliums() {
        for p in Program::ALL {
            assert!(p.name().starts_with("mcast_"));
            assert!(!p.name().starts_with("cil_"));
            assert_eq!(Program::from_name(p.name()), Some(p));
        }
    }
}
