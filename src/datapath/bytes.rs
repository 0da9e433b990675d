//! Viewing the `include/` structs as the bytes the kernel stores.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A value copied to and from map memory as it is. Implemented for every
/// type that has no padding bytes and for which every bit pattern is a
/// valid value: the structs generated from `include/mcast_egress.h` derive
/// the `zerocopy` traits that say so (see `build.rs`), and the compiler,
/// not a promise, checks each of them.
///
/// The methods are this trait's own rather than inherited from `zerocopy`,
/// so that a call on a `T: Plain` has one meaning.
pub trait Plain: Copy {
    /// The value's bytes, as a map stores them.
    fn as_bytes(&self) -> &[u8];

    /// Copy a value out of `bytes`, which must hold at least
    /// `size_of::<Self>()` bytes (per-CPU values are padded to 8).
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

impl<T: IntoBytes + FromBytes + Immutable + KnownLayout + Copy> Plain for T {
    fn as_bytes(&self) -> &[u8] {
        IntoBytes::as_bytes(self)
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(v, _)| v)
    }
}
