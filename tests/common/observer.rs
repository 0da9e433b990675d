//! Test programs behind ours in a device's tcx chain (where Cilium's would
//! be) that record the last frame they were handed: any frame
//! ([`Observer`]), or IPv4 and routable IPv6 multicast frames with their
//! tunnel key ([`TunnelObserver`]).

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags};

use cilium_mcast_egress::bpf_intf::{mcast_test_observed, mcast_test_tunnel_observed};
use cilium_mcast_egress::datapath::tcx::attach_pinned;
use cilium_mcast_egress::datapath::{ChainPosition, Paths, Plain};

#[allow(clippy::all, dead_code, unused_imports, non_camel_case_types)]
mod observer_skel {
    include!(concat!(
        env!("OUT_DIR"),
        "/mcast_test_tunnel_observer.skel.rs"
    ));
}

#[allow(clippy::all, dead_code, unused_imports, non_camel_case_types)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/mcast_test_observer.skel.rs"));
}

pub struct Observer {
    skel: skel::McastTestObserverSkel<'static>,
    link: Link,
    seen: Cell<u32>,
}

impl Observer {
    /// Load the observer and append it to `dev`'s tcx ingress chain.
    pub fn attach_behind(dev: &str, paths: &Paths) -> Observer {
        let storage = Box::leak(Box::new(MaybeUninit::uninit()));
        let skel = skel::McastTestObserverSkelBuilder::default()
            .open(storage)
            .expect("open observer")
            .load()
            .expect("load observer");
        let pin = paths.bpffs_root().join(format!("observer-{dev}"));
        let link = attach_pinned(
            &skel.progs.mcast_test_observer,
            super::ifindex(dev),
            ChainPosition::Tail,
            &pin,
        )
        .expect("attach observer");
        Observer {
            skel,
            link,
            seen: Cell::new(0),
        }
    }

    pub fn link_id(&self) -> u32 {
        self.link.info().expect("link info").id
    }

    fn read(&self) -> mcast_test_observed {
        let bytes = self
            .skel
            .maps
            .mcast_test_observed
            .lookup(0u32.as_bytes(), MapFlags::ANY)
            .expect("lookup")
            .expect("array element");
        mcast_test_observed::from_bytes(&bytes).expect("size")
    }

    /// Frames handed to the observer so far.
    pub fn count(&self) -> u32 {
        self.read().count
    }

    /// The next frame handed on (its first 128 bytes); panics after 2 s.
    pub fn next_frame(&self) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let o = self.read();
            if o.count > self.seen.get() {
                self.seen.set(o.count);
                let n = (o.len as usize).min(o.data.len());
                return o.data[..n].to_vec();
            }
            assert!(Instant::now() < deadline, "nothing reached the observer");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// What a tunnel observer saw last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub frame: Vec<u8>,
    /// (VNI, outer source, outer destination) when bpf_skb_get_tunnel_key()
    /// found a key.
    pub key: Option<(u32, Ipv4Addr, Ipv4Addr)>,
}

/// The test observer, loaded on its own (maps of its own), in one tcx chain
/// of one device.
pub struct TunnelObserver {
    skel: observer_skel::McastTestTunnelObserverSkel<'static>,
    _link: Link,
    egress: bool,
    seen: Cell<u32>,
}

impl TunnelObserver {
    pub fn attach(
        dev: &str,
        egress: bool,
        position: ChainPosition,
        paths: &Paths,
    ) -> TunnelObserver {
        let storage = Box::leak(Box::new(MaybeUninit::uninit()));
        let skel = observer_skel::McastTestTunnelObserverSkelBuilder::default()
            .open(storage)
            .expect("open tunnel observer")
            .load()
            .expect("load tunnel observer");
        let pin = paths
            .bpffs_root()
            .join(super::unique_name(&format!("tobs-{dev}")));
        let prog = if egress {
            &skel.progs.mcast_test_tunnel_observer_out
        } else {
            &skel.progs.mcast_test_tunnel_observer_in
        };
        let link =
            attach_pinned(prog, super::ifindex(dev), position, &pin).expect("attach observer");
        TunnelObserver {
            skel,
            _link: link,
            egress,
            seen: Cell::new(0),
        }
    }

    fn read(&self) -> mcast_test_tunnel_observed {
        let map = if self.egress {
            &self.skel.maps.mcast_test_seen_egress
        } else {
            &self.skel.maps.mcast_test_seen_ingress
        };
        let bytes = map
            .lookup(0u32.as_bytes(), MapFlags::ANY)
            .expect("lookup")
            .expect("array element");
        mcast_test_tunnel_observed::from_bytes(&bytes).expect("size")
    }

    /// Frames handed on so far, and how many of them carried a key.
    pub fn counts(&self) -> (u32, u32) {
        let o = self.read();
        (o.count, o.with_key)
    }

    /// The next frame handed on (its first 128 bytes); panics after 2 s.
    pub fn next(&self) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let o = self.read();
            if o.count > self.seen.get() {
                assert_eq!(
                    o.count,
                    self.seen.get() + 1,
                    "one frame at a time, not {}",
                    o.count - self.seen.get()
                );
                self.seen.set(o.count);
                let n = (o.len as usize).min(o.data.len());
                return Seen {
                    frame: o.data[..n].to_vec(),
                    key: (o.last_has_key != 0).then(|| {
                        (
                            o.tunnel_id,
                            Ipv4Addr::from(o.outer_src.to_ne_bytes()),
                            Ipv4Addr::from(o.outer_dst.to_ne_bytes()),
                        )
                    }),
                };
            }
            assert!(Instant::now() < deadline, "nothing reached the observer");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
