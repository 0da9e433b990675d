//! cilium-mcast-egress: IP multicast from Kubernetes pods to networks outside
//! the cluster, through CiliumEgressGatewayPolicy.
//!
//! The datapath (BPF, `bpf/`) catches a pod's multicast on its veth and
//! tunnels it to the policy's gateway node, which sends it out of its uplink
//! with the egress IP as source. This crate loads and pins that datapath,
//! attaches it with tcx, and keeps its maps in step with the cluster.

pub mod attach;
pub mod bpf_intf;
pub mod bpf_skel;
pub mod chain;
pub mod cilium_compat;
pub mod cilium_maps;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod daemon;
pub mod datapath;
pub mod health;
pub mod metrics;
pub mod node;
pub mod objects;
pub mod resolve;
pub mod source;
pub mod sync;
