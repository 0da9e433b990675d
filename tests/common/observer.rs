//! A test program behind ours in a device's tcx chain (where Cilium's would
//! be) that records the last frame it was handed.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags};

use cilium_mcast_egress::bpf_intf::mcast_test_observed;
use cilium_mcast_egress::datapath::tcx::attach_pinned;
use cilium_mcast_egress::datapath::{ChainPosition, Paths, Plain};

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
