//! A pinned map seen through the Rust types of its key and value, and the
//! one make-before-break reconcile that every map the controller owns goes
//! through.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::datapath::bytes::Plain;
use crate::datapath::{DatapathError, Result};

/// How a Rust value is stored in a map: as its `include/` struct (`Raw`).
/// The per-map meaning (byte order, sentinels, key layout) lives in the
/// implementations, in `maps/mod.rs`.
pub trait Codec: Sized {
    type Raw: Plain;
    fn encode(&self) -> Self::Raw;
    /// Fails only for bytes no build of ours writes.
    fn decode(raw: &Self::Raw) -> Result<Self>;
}

/// Types stored exactly as they are.
macro_rules! stored_as_is {
    ($($t:ty),* $(,)?) => {$(
        impl Codec for $t {
            type Raw = $t;
            fn encode(&self) -> $t {
                *self
            }
            fn decode(raw: &$t) -> Result<$t> {
                Ok(*raw)
            }
        }
    )*};
}
pub(crate) use stored_as_is;

// `()`: the ring buffer's key and value, which have no bytes.
stored_as_is!(u32, ());

/// A pinned map whose keys are `K` and values `V`; cheap to move into
/// another task.
pub struct TypedMap<K, V> {
    map: MapHandle,
    name: &'static str,
    types: PhantomData<fn(K) -> V>,
}

impl<K, V> fmt::Debug for TypedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedMap")
            .field("name", &self.name)
            .field("map", &self.map)
            .finish()
    }
}

fn decode<T: Plain>(name: &'static str, bytes: &[u8]) -> Result<T> {
    T::from_bytes(bytes).ok_or(DatapathError::MapValueSize {
        map: name,
        got: bytes.len(),
        want: std::mem::size_of::<T>(),
    })
}

impl<K: Codec, V: Codec> TypedMap<K, V> {
    /// Open the map pinned as `<globals>/<name>`.
    pub fn open(globals: &Path, name: &'static str) -> Result<Self> {
        let path = globals.join(name);
        let map = MapHandle::from_pinned_path(&path)
            .map_err(|source| DatapathError::PinnedMap { path, source })?;
        Ok(TypedMap {
            map,
            name,
            types: PhantomData,
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Entries the map can hold.
    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// Entries the map holds now (a key walk).
    pub fn len(&self) -> usize {
        self.map.keys().count()
    }

    pub fn is_empty(&self) -> bool {
        self.map.keys().next().is_none()
    }

    fn error(&self, op: &'static str) -> impl FnOnce(libbpf_rs::Error) -> DatapathError {
        let map = self.name;
        move |source| DatapathError::Map { map, op, source }
    }

    /// Insert or replace an entry.
    pub fn put(&self, key: &K, value: &V) -> Result<()> {
        let (k, v) = (key.encode(), value.encode());
        self.map
            .update(k.as_bytes(), v.as_bytes(), MapFlags::ANY)
            .map_err(self.error("update"))
    }

    /// Insert or replace `entries` in one batch (`BPF_MAP_UPDATE_BATCH`),
    /// each as [`TypedMap::put`] would, in order; one by one on a kernel
    /// without batch updates.
    pub fn put_all(&self, entries: &[(K, V)]) -> Result<()> {
        if entries.len() < 2 {
            return entries.iter().try_for_each(|(k, v)| self.put(k, v));
        }
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for (k, v) in entries {
            keys.extend_from_slice(k.encode().as_bytes());
            values.extend_from_slice(v.encode().as_bytes());
        }
        let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        if self
            .map
            .update_batch(&keys, &values, count, MapFlags::ANY, MapFlags::ANY)
            .is_ok()
        {
            return Ok(());
        }
        entries.iter().try_for_each(|(k, v)| self.put(k, v))
    }

    /// Remove an entry; returns whether it existed.
    pub fn delete(&self, key: &K) -> Result<bool> {
        match self.map.delete(key.encode().as_bytes()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(self.error("delete")(source)),
        }
    }

    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let bytes = self
            .map
            .lookup(key.encode().as_bytes(), MapFlags::ANY)
            .map_err(self.error("lookup"))?;
        bytes
            .map(|b| V::decode(&decode(self.name, &b)?))
            .transpose()
    }

    /// A per-CPU map's value on every CPU.
    pub fn get_percpu(&self, key: &K) -> Result<Option<Vec<V>>> {
        let per_cpu = self
            .map
            .lookup_percpu(key.encode().as_bytes(), MapFlags::ANY)
            .map_err(self.error("lookup"))?;
        per_cpu
            .map(|cpus| {
                cpus.iter()
                    .map(|b| V::decode(&decode(self.name, b)?))
                    .collect()
            })
            .transpose()
    }

    /// Every key, in the kernel's order.
    pub fn keys(&self) -> impl Iterator<Item = Result<K>> + '_ {
        self.map.keys().map(|b| K::decode(&decode(self.name, &b)?))
    }

    /// Every entry, in the kernel's order. An entry deleted between the key
    /// walk and its lookup is simply gone.
    pub fn iter(&self) -> impl Iterator<Item = Result<(K, V)>> + '_ {
        self.keys().filter_map(|key| {
            let key = match key {
                Ok(k) => k,
                Err(e) => return Some(Err(e)),
            };
            self.get(&key).map(|v| v.map(|v| (key, v))).transpose()
        })
    }

    /// Every entry, by key.
    pub fn entries(&self) -> Result<BTreeMap<K, V>>
    where
        K: Ord,
    {
        self.iter().collect()
    }

    /// Every entry of an array, by index, read in one batch
    /// (`BPF_MAP_LOOKUP_BATCH`): a syscall or two where one lookup per
    /// index would take thousands. Falls back to those lookups when the
    /// batch does not return every index (a kernel without batch lookups).
    pub fn array_values(&self) -> Result<Vec<V>>
    where
        K: From<u32>,
    {
        let n = self.capacity();
        let batched = self
            .map
            .lookup_batch(n, MapFlags::ANY, MapFlags::ANY)
            .map(|iter| {
                iter.map(|(_, v)| V::decode(&decode(self.name, &v)?))
                    .collect::<Result<Vec<V>>>()
            });
        if let Ok(Ok(values)) = batched {
            if values.len() == n as usize {
                return Ok(values);
            }
        }
        (0..n)
            .map(|i| {
                self.get(&K::from(i))?.ok_or(DatapathError::Invalid {
                    what: "array index",
                    detail: format!("{} has no index {i}", self.name),
                })
            })
            .collect()
    }

    /// What bringing the map to `desired` takes, from what it holds now
    /// (see [`Reconcile`]); `guard` marks the entries that narrow others.
    pub fn plan(&self, desired: &BTreeMap<K, V>, guard: fn(&V) -> bool) -> Result<Reconcile<K, V>>
    where
        K: Ord + Clone,
        V: PartialEq + Clone,
    {
        let current = self.entries()?;
        Ok(Reconcile::new(
            &current,
            desired,
            self.capacity() as usize,
            guard,
        ))
    }

    /// Bring the map to `desired`, make before break (see [`Reconcile`]).
    pub fn reconcile(&self, desired: &BTreeMap<K, V>, guard: fn(&V) -> bool) -> Result<Changes>
    where
        K: Ord + Clone,
        V: PartialEq + Clone,
    {
        self.plan(desired, guard)?.run(self)
    }
}

/// Where a reconcile writes: a typed map, or a test's record of the calls.
pub trait Store<K, V> {
    fn put(&self, key: &K, value: &V) -> Result<()>;
    /// Returns whether the entry existed.
    fn delete(&self, key: &K) -> Result<bool>;
}

impl<K: Codec, V: Codec> Store<K, V> for TypedMap<K, V> {
    fn put(&self, key: &K, value: &V) -> Result<()> {
        TypedMap::put(self, key, value)
    }
    fn delete(&self, key: &K) -> Result<bool> {
        TypedMap::delete(self, key)
    }
}

/// How many entries a reconcile wrote and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    pub written: usize,
    pub removed: usize,
}

impl Changes {
    pub fn is_noop(&self) -> bool {
        self.written == 0 && self.removed == 0
    }
}

impl std::ops::AddAssign for Changes {
    fn add_assign(&mut self, o: Changes) {
        self.written += o.written;
        self.removed += o.removed;
    }
}

/// A guard for maps whose entries never narrow one another.
pub fn no_guard<V>(_: &V) -> bool {
    false
}

/// One change of a map from what it holds to what it should: new and
/// changed entries are written before stale ones are removed
/// (make-before-break), and nothing else is touched: never a flush, so a
/// restarted controller adopts what it finds and the datapath sees no gap.
///
/// When the map cannot hold the new entries beside the stale ones (or a
/// write finds it full: someone else filled it since it was read), the
/// stale ones go first: the only way a full map can be turned over.
///
/// Entries the guard marks (exclusions in the policy map) narrow what other
/// entries let through: they are written before the others and removed
/// after them, so no state along the way lets out more than either end.
///
/// The two halves can run apart ([`Reconcile::make`], [`Reconcile::finish`])
/// so that the entries of one map are in before another map's entries that
/// refer to them, and out after.
#[derive(Debug)]
pub struct Reconcile<K, V> {
    /// Guards first.
    writes: Vec<(K, V)>,
    /// Guards last.
    deletes: Vec<K>,
    stale_first: bool,
    deleted: Cell<bool>,
}

impl<K: Ord + Clone, V: PartialEq + Clone> Reconcile<K, V> {
    pub fn new(
        current: &BTreeMap<K, V>,
        desired: &BTreeMap<K, V>,
        capacity: usize,
        guard: impl Fn(&V) -> bool,
    ) -> Self {
        let (guard_writes, other_writes): (Vec<_>, Vec<_>) = desired
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .partition(|(_, v)| guard(v));
        let (guard_deletes, other_deletes): (Vec<_>, Vec<_>) = current
            .iter()
            .filter(|(k, _)| !desired.contains_key(*k))
            .partition(|(_, v)| guard(v));
        let new_keys = desired.keys().filter(|k| !current.contains_key(*k)).count();
        Reconcile {
            writes: guard_writes.into_iter().chain(other_writes).collect(),
            deletes: other_deletes
                .into_iter()
                .chain(guard_deletes)
                .map(|(k, _)| k.clone())
                .collect(),
            stale_first: current.len() + new_keys > capacity,
            deleted: Cell::new(false),
        }
    }

    fn write_all(&self, store: &impl Store<K, V>) -> Result<()> {
        self.writes.iter().try_for_each(|(k, v)| store.put(k, v))
    }

    /// Write the new and changed entries (removing the stale ones first
    /// when the map has no room for both).
    pub fn make(&self, store: &impl Store<K, V>) -> Result<()> {
        if self.stale_first {
            self.finish(store)?;
            return self.write_all(store);
        }
        if let Err(e) = self.write_all(store) {
            tracing::warn!(error = %e, "writing map entries; removing stale ones first");
            self.finish(store)?;
            self.write_all(store)?;
        }
        Ok(())
    }

    /// Remove the stale entries, unless [`Reconcile::make`] already had to.
    pub fn finish(&self, store: &impl Store<K, V>) -> Result<()> {
        if !self.deleted.get() {
            self.deletes
                .iter()
                .try_for_each(|k| store.delete(k).map(drop))?;
            self.deleted.set(true);
        }
        Ok(())
    }

    /// Both halves: make, then finish.
    pub fn run(&self, store: &impl Store<K, V>) -> Result<Changes> {
        self.make(store)?;
        self.finish(store)?;
        Ok(self.changes())
    }

    pub fn changes(&self) -> Changes {
        Changes {
            written: self.writes.len(),
            removed: self.deletes.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_new_and_changed_and_deletes_stale() {
        let current: BTreeMap<u32, &str> = [(1, "a"), (2, "b"), (3, "c")].into();
        let desired: BTreeMap<u32, &str> = [(2, "b"), (3, "C"), (4, "d")].into();
        let r = Reconcile::new(&current, &desired, 8, no_guard);
        assert_eq!(r.writes, vec![(3, "C"), (4, "d")]);
        assert_eq!(r.deletes, vec![1]);
        assert!(!r.stale_first);
        assert_eq!(
            r.changes(),
            Changes {
                written: 2,
                removed: 1
            }
        );
    }

    #[test]
    fn equal_maps_change_nothing() {
        let m: BTreeMap<u32, u32> = [(1, 1), (2, 2)].into();
        let r = Reconcile::new(&m, &m, 2, no_guard);
        assert!(r.changes().is_noop());
        assert!(!r.stale_first, "a full map with nothing new has room");
    }

    #[test]
    fn guards_are_written_first_and_removed_last() {
        let guard = |v: &&str| v.starts_with('x');
        let current: BTreeMap<u32, &str> = [(1, "a"), (2, "x"), (3, "b")].into();
        let desired: BTreeMap<u32, &str> = [(4, "c"), (5, "x")].into();
        let r = Reconcile::new(&current, &desired, 8, guard);
        assert_eq!(r.writes, vec![(5, "x"), (4, "c")]);
        assert_eq!(r.deletes, vec![1, 3, 2]);
    }
}
