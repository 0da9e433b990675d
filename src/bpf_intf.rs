//! Rust side of `include/mcast_egress.h`, generated at build time: bindgen's
//! types, and the labels build.rs reads from the enums' comments.

#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/mcast_egress_intf.rs"));
// The labels of the drop reasons and roles, from the enums' comments.
include!(concat!(env!("OUT_DIR"), "/mcast_labels.rs"));
