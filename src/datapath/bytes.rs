//! Viewing the `include/` structs as the bytes the kernel stores.

use std::mem::size_of;

use crate::bpf_intf as intf;

/// A `#[repr(C)]` type generated from `include/mcast_egress.h`: every bit
/// pattern is a valid value and there are no implicit padding bytes (the
/// header pads explicitly), so it can be copied to and from map memory.
///
/// # Safety
///
/// Implement only for such types; the generated layout tests check sizes.
pub unsafe trait Plain: Copy + Default {
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Self: Plain` has no uninitialised padding and is
        // `size_of::<Self>()` bytes long at `self`.
        unsafe { std::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>()) }
    }

    /// Copy a value out of `bytes`, which must hold at least
    /// `size_of::<Self>()` bytes (per-CPU values are padded to 8).
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above, any bit pattern is a valid
        // `Self`, and `read_unaligned` has no alignment requirement.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

// SAFETY: each of these is a generated `#[repr(C)]` struct of integers and
// byte arrays with explicit padding fields (see include/mcast_egress.h).
unsafe impl Plain for intf::mcast_policy_key {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_policy_val {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_endpoint_val {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_node_val {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_iface_val {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_config {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_group_val {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_counter_key {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_counter_val {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_test_tunnel {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_test_observed {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_policy_name {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_status {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_drop_event {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_events_limit {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_tunnel_pending {}
// SAFETY: as above.
unsafe impl Plain for intf::mcast_test_tunnel_observed {}
// SAFETY: a plain integer.
unsafe impl Plain for u32 {}
