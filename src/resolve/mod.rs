//! Resolution: a pure function from the cluster's objects and this node's
//! interfaces to the map contents this node should have.

mod model;

pub use model::*;
