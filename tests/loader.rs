//! The loader: pins survive and are re-used, one tcx link per device and
//! program whatever happens, program updates in place, clean detach and
//! uninstall, and clear errors. Needs root; private namespace and bpffs.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use cilium_mcast_egress::datapath::maps::{Config, Endpoint, ALL_MAPS};
use cilium_mcast_egress::datapath::tcx::{ifindex_of, links, tcx_ingress_chain};
use cilium_mcast_egress::datapath::{
    self, AttachOutcome, Datapath, DatapathError, DatapathStorage, Paths, Program,
};
use common::observer::Observer;
use common::{sh, Bpffs};

macro_rules! priv_test {
    ($name:ident, |$bpffs:ident| $body:block) => {
        #[test]
        fn $name() {
            if !common::privileged(stringify!($name)) {
                return;
            }
            common::in_new_netns(|| {
                let $bpffs = Bpffs::new(stringify!($name));
                $body
            });
        }
    };
}

use common::veth;

fn map_id(globals: &Path, name: &str) -> u32 {
    let m = MapHandle::from_pinned_path(globals.join(name)).expect("pinned map");
    m.info().expect("map info").info.id
}

priv_test!(load_twice_reuses_every_pinned_map, |bpffs| {
    let paths = Paths::new(bpffs.path());
    let mut s1 = DatapathStorage::default();
    let dp1 = Datapath::load(&mut s1, paths.clone()).unwrap();
    let ids: Vec<u32> = ALL_MAPS
        .iter()
        .map(|m| map_id(&paths.globals(), m))
        .collect();
    let pod = Ipv4Addr::new(198, 51, 100, 5);
    dp1.maps()
        .unwrap()
        .endpoint_insert(
            pod,
            &Endpoint {
                ifindex: 42,
                identity: 4242,
            },
        )
        .unwrap();
    drop(dp1);

    let mut s2 = DatapathStorage::default();
    let dp2 = Datapath::load(&mut s2, paths.clone()).unwrap();
    let again: Vec<u32> = ALL_MAPS
        .iter()
        .map(|m| map_id(&paths.globals(), m))
        .collect();
    assert_eq!(ids, again, "the second load adopts the pinned maps");
    assert_eq!(
        dp2.maps().unwrap().endpoints().unwrap(),
        vec![(
            pod,
            Endpoint {
                ifindex: 42,
                identity: 4242
            }
        )],
        "state survives a reload"
    );
});

priv_test!(one_link_per_device_across_reloads, |bpffs| {
    veth("lxc_one", "pod_one");
    veth("tun_one", "tun_peer");
    let paths = Paths::new(bpffs.path());
    let lxc = ifindex_of("lxc_one").unwrap();
    let tun = ifindex_of("tun_one").unwrap();

    let mut s1 = DatapathStorage::default();
    let dp1 = Datapath::load(&mut s1, paths.clone()).unwrap();
    let first = dp1.attach("lxc_one", Program::FromContainer).unwrap();
    assert!(matches!(first, AttachOutcome::Attached { .. }));
    dp1.attach("tun_one", Program::FromOverlay).unwrap();
    let again = dp1.attach("lxc_one", Program::FromContainer).unwrap();
    assert_eq!(
        again,
        AttachOutcome::Updated {
            link_id: first.link_id()
        }
    );
    let prog1 = tcx_ingress_chain(lxc).unwrap()[0].prog_id;
    drop(dp1);

    // The process is gone: the datapath stays attached, held by the pin.
    let chain = tcx_ingress_chain(lxc).unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].link_id, first.link_id());

    // A new process (a restart or an upgrade) swaps the program in place.
    let mut s2 = DatapathStorage::default();
    let dp2 = Datapath::load(&mut s2, paths.clone()).unwrap();
    let updated = dp2.attach("lxc_one", Program::FromContainer).unwrap();
    assert_eq!(
        updated,
        AttachOutcome::Updated {
            link_id: first.link_id()
        }
    );
    let chain = tcx_ingress_chain(lxc).unwrap();
    assert_eq!(chain.len(), 1, "still one link on the device");
    assert_ne!(chain[0].prog_id, prog1, "the new program is in the link");
    assert_eq!(
        chain[0].prog_id,
        libbpf_rs::ProgramHandle::try_from(dp2.program(Program::FromContainer))
            .unwrap()
            .id()
    );
    assert_eq!(tcx_ingress_chain(tun).unwrap().len(), 1);

    let state = links(&paths).unwrap();
    assert_eq!(state.len(), 2);
    assert_eq!(
        (
            state[0].device.as_str(),
            state[0].program.as_str(),
            state[0].ifindex
        ),
        ("lxc_one", "mcast_from_container", lxc)
    );
    assert_eq!(
        (
            state[1].device.as_str(),
            state[1].program.as_str(),
            state[1].ifindex
        ),
        ("tun_one", "mcast_from_overlay", tun)
    );
});

priv_test!(ours_runs_before_a_program_appended_earlier, |bpffs| {
    veth("lxc_order", "pod_order");
    let paths = Paths::new(bpffs.path());
    let mut s = DatapathStorage::default();
    let dp = Datapath::load(&mut s, paths.clone()).unwrap();
    // Cilium was there first, appended at the tail.
    let cilium = Observer::attach_behind("lxc_order", &paths);
    let ours = dp.attach("lxc_order", Program::FromContainer).unwrap();
    let chain = tcx_ingress_chain(ifindex_of("lxc_order").unwrap()).unwrap();
    let order: Vec<u32> = chain.iter().map(|e| e.link_id).collect();
    assert_eq!(order, vec![ours.link_id(), cilium.link_id()]);
});

priv_test!(replaced_device_gets_a_fresh_link, |bpffs| {
    veth("lxc_gone", "pod_gone");
    let paths = Paths::new(bpffs.path());
    let mut s = DatapathStorage::default();
    let dp = Datapath::load(&mut s, paths.clone()).unwrap();
    let first = dp.attach("lxc_gone", Program::FromContainer).unwrap();
    sh("ip", &["link", "del", "lxc_gone"]);
    let state = links(&paths).unwrap();
    assert_eq!(
        state[0].ifindex, 0,
        "the kernel detached the link with its device"
    );

    // A new pod's veth with the same name.
    veth("lxc_gone", "pod_gone");
    let second = dp.attach("lxc_gone", Program::FromContainer).unwrap();
    assert!(matches!(second, AttachOutcome::Attached { .. }));
    assert_ne!(second.link_id(), first.link_id());
    let chain = tcx_ingress_chain(ifindex_of("lxc_gone").unwrap()).unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(links(&paths).unwrap().len(), 1, "the stale pin is gone");
});

priv_test!(detach_leaves_no_pin_behind, |bpffs| {
    veth("lxc_det", "pod_det");
    let paths = Paths::new(bpffs.path());
    let mut s = DatapathStorage::default();
    let dp = Datapath::load(&mut s, paths.clone()).unwrap();
    dp.attach("lxc_det", Program::FromContainer).unwrap();
    let pin = paths.link_pin("lxc_det", Program::FromContainer).unwrap();
    assert!(pin.exists());

    assert!(datapath::detach(&paths, "lxc_det", Program::FromContainer).unwrap());
    assert!(!pin.exists());
    assert!(!paths.links_dir().join("lxc_det").exists());
    assert!(tcx_ingress_chain(ifindex_of("lxc_det").unwrap())
        .unwrap()
        .is_empty());
    assert!(!datapath::detach(&paths, "lxc_det", Program::FromContainer).unwrap());
});

priv_test!(uninstall_removes_ours_and_nothing_else, |bpffs| {
    veth("lxc_un", "pod_un");
    veth("vx_un", "vx_un_peer");
    let paths = Paths::new(bpffs.path());
    // Something of Cilium's beside our maps.
    let mut foreign = MapHandle::create(
        MapType::Hash,
        Some("cilium_lxc"),
        20,
        48,
        16,
        &libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::create_dir_all(paths.globals()).unwrap();
    foreign.pin(paths.globals().join("cilium_lxc")).unwrap();

    let mut s = DatapathStorage::default();
    let dp = Datapath::load(&mut s, paths.clone()).unwrap();
    dp.attach("lxc_un", Program::FromContainer).unwrap();
    dp.attach("vx_un", Program::FromOverlay).unwrap();
    dp.maps()
        .unwrap()
        .config_set(&Config {
            node_ip: Ipv4Addr::new(192, 0, 2, 1),
            tunnel_ifindex: 3,
        })
        .unwrap();
    drop(dp);

    let report = datapath::uninstall(&paths).unwrap();
    assert_eq!(report.links.len(), 2);
    let mut want: Vec<String> = ALL_MAPS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(report.maps, want);
    let left: Vec<String> = std::fs::read_dir(paths.globals())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["cilium_lxc".to_string()],
        "Cilium's pin is untouched"
    );
    assert!(!paths.own_dir().exists());
    for dev in ["lxc_un", "vx_un"] {
        assert!(tcx_ingress_chain(ifindex_of(dev).unwrap())
            .unwrap()
            .is_empty());
    }
    // Still usable by its owner.
    foreign
        .update(&[0u8; 20], &[0u8; 48], MapFlags::ANY)
        .unwrap();
});

priv_test!(changed_layout_is_refused, |bpffs| {
    let paths = Paths::new(bpffs.path());
    std::fs::create_dir_all(paths.globals()).unwrap();
    // An older build's policy map: an 8-byte value.
    let mut old = MapHandle::create(
        MapType::LpmTrie,
        Some("mcast_egw_policy_v4"),
        12,
        8,
        16384,
        &libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            map_flags: libbpf_sys::BPF_F_NO_PREALLOC,
            ..Default::default()
        },
    )
    .unwrap();
    old.pin(paths.globals().join("mcast_egw_policy_v4"))
        .unwrap();

    let mut s = DatapathStorage::default();
    let err = match Datapath::load(&mut s, paths.clone()) {
        Ok(_) => panic!("a pinned map of another layout must be refused"),
        Err(e) => e,
    };
    assert!(
        matches!(err, DatapathError::LayoutMismatch { ref pinned, ref ours, .. }
            if pinned.value_size == 8 && ours.value_size == 24),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("mcast_egw_policy_v4") && msg.contains("uninstall"),
        "{msg}"
    );
});

priv_test!(clear_errors_for_bad_input, |bpffs| {
    let paths = Paths::new(bpffs.path());
    let mut s = DatapathStorage::default();
    let dp = Datapath::load(&mut s, paths.clone()).unwrap();
    assert!(matches!(
        dp.attach("no_such_dev", Program::FromContainer),
        Err(DatapathError::DeviceNotFound { .. })
    ));
    for bad in ["", "..", "a/b", "0123456789abcdefg"] {
        assert!(matches!(
            dp.attach(bad, Program::FromContainer),
            Err(DatapathError::BadDeviceName { .. })
        ));
    }

    // Not a BPF filesystem.
    let tmp = std::env::temp_dir().join(common::unique_name("not-bpffs"));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut s2 = DatapathStorage::default();
    let res = Datapath::load(&mut s2, Paths::new(&tmp));
    std::fs::remove_dir_all(&tmp).unwrap();
    assert!(matches!(res, Err(DatapathError::NotBpffs { .. })));
});
