//! What a load takes over from older builds' pins.
//!
//! Builds before the hash policy map kept the policy entries in an LPM trie
//! pinned as `mcast_egw_policy_v4`, of the same key and value. When one is
//! pinned, it holds what the last controller wrote (a build with the hash
//! unpins it once its entries are over): its entries are brought into the
//! hash map, make before break, before anything is attached, and it is
//! unpinned. The programs still attached keep their reference to it until
//! the controller's first pass swaps them for ours, so packets find the same
//! policy throughout the upgrade.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use libbpf_rs::{MapCore, MapHandle, MapType};

use super::maps::{
    Codec, Gateway, Maps, PolicyFamily, PolicyKey, PolicyKeyOf, PolicyLens, PolicyValue,
    PolicyValueOf, TypedMap,
};
use super::pin::remove_file;
use super::{Paths, Result};
use crate::bpf_intf as intf;

/// The policy map of builds before `mcast_egw_policy_hash_v4`.
pub const LEGACY_POLICY_MAP: &str = "mcast_egw_policy_v4";

/// What [`adopt_legacy_policy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyPolicy {
    /// No older map was pinned.
    None,
    /// Its entries are in the hash map now (this many), and it is unpinned.
    Adopted(usize),
    /// It was of a layout no build of ours reads entries from: unpinned
    /// as it was; the controller's first sync writes the entries.
    Dropped,
}

/// Bring the entries of an older build's pinned LPM policy map into the
/// hash map, then unpin it (see the module comment).
pub(super) fn adopt_legacy_policy(paths: &Paths, maps: &Maps) -> Result<LegacyPolicy> {
    let globals = paths.globals();
    let path = globals.join(LEGACY_POLICY_MAP);
    if !path.exists() {
        return Ok(LegacyPolicy::None);
    }
    if !readable(&path) {
        tracing::warn!(
            path = %path.display(),
            "an older policy map of an unknown layout is pinned; unpinning it, \
             the first sync writes the entries"
        );
        remove_file(&path)?;
        return Ok(LegacyPolicy::Dropped);
    }
    let legacy: TypedMap<PolicyKey, PolicyValue> = TypedMap::open(&globals, LEGACY_POLICY_MAP)?;
    let entries: BTreeMap<PolicyKey, PolicyValue> = legacy.entries()?;
    let lens = PolicyLens::of(entries.keys());
    maps.policy_lens_add(&lens)?;
    // Exclusions in first and out last, as the controller's sync does.
    maps.policy
        .reconcile(&entries, |v| v.gateway == Gateway::Excluded)?;
    maps.policy_lens_retain(&lens)?;
    remove_file(&path)?;
    tracing::info!(
        entries = entries.len(),
        "policy entries taken over from the LPM map of an older build"
    );
    Ok(LegacyPolicy::Adopted(entries.len()))
}

/// Make sure the probed prefix lengths cover every entry the pinned policy
/// maps (both families) hold: true whenever this build wrote both, and made
/// true again when a length map is new beside an adopted policy map (it was
/// unpinned, or the policy map was just taken over). Only adds lengths.
pub(super) fn cover_pinned_lens(maps: &Maps) -> Result<()> {
    cover_pinned::<Ipv4Addr>(maps)?;
    cover_pinned::<Ipv6Addr>(maps)
}

fn cover_pinned<A: PolicyFamily>(maps: &Maps) -> Result<()>
where
    PolicyKeyOf<A, A::Network>: Codec,
    PolicyValueOf<A>: Codec,
{
    let keys = A::policy_map(maps).keys().collect::<Result<Vec<_>>>()?;
    maps.policy_lens_add(&PolicyLens::of(&keys)).map(drop)
}

/// Whether the map pinned at `path` is the older builds' LPM policy map:
/// its entries decode as ours.
fn readable(path: &Path) -> bool {
    let Ok(map) = MapHandle::from_pinned_path(path) else {
        return false;
    };
    map.map_type() == MapType::LpmTrie
        && map.key_size() as usize == std::mem::size_of::<intf::mcast_policy_key>()
        && map.value_size() as usize == std::mem::size_of::<intf::mcast_policy_val>()
}
