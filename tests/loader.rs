//! The loader: pins survive and are re-used, one tcx link per device and
//! program whatever happens, program updates in place, clean detach and
//! uninstall, and clear errors. Needs root; private namespace and bpffs.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use cilium_mcast_egress::attach::{AttachConfig, AttachManager};
use cilium_mcast_egress::datapath::maps::{
    Codec, Config, Endpoint, Gateway, Origin, PolicyKey, PolicyValue, ALL_MAPS,
};
use cilium_mcast_egress::datapath::tcx::{ifindex_of, links, tcx_egress_chain, tcx_ingress_chain};
use cilium_mcast_egress::datapath::{
    self, AttachOutcome, Capacities, Datapath, DatapathError, DatapathStorage, LegacyPolicy, Paths,
    Plain, Program, LEGACY_POLICY_MAP,
};
use cilium_mcast_egress::resolve::Interface;
use common::observer::Observer;
use common::{sh, Bpffs};

macro_rules! priv_test {
    ($name:ident, |$bpffs:ident| $body:block) => {
        netns_test!($name, Bpffs::new, |$bpffs| $body);
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
    // Another build's policy map: an 8-byte value.
    let mut old = MapHandle::create(
        MapType::Hash,
        Some("mcast_egw_policy_hash_v4"),
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
    old.pin(paths.globals().join("mcast_egw_policy_hash_v4"))
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
        msg.contains("mcast_egw_policy_hash_v4") && msg.contains("uninstall"),
        "{msg}"
    );
});

/// The LPM trie policy map of the builds before the hash, as they pinned it.
fn pin_legacy_policy_map(paths: &Paths, value_size: u32) -> MapHandle {
    std::fs::create_dir_all(paths.globals()).unwrap();
    let mut old = MapHandle::create(
        MapType::LpmTrie,
        Some(LEGACY_POLICY_MAP),
        12,
        value_size,
        16384,
        &libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            map_flags: libbpf_sys::BPF_F_NO_PREALLOC,
            ..Default::default()
        },
    )
    .unwrap();
    old.pin(paths.globals().join(LEGACY_POLICY_MAP)).unwrap();
    old
}

priv_test!(older_lpm_policy_map_is_taken_over, |bpffs| {
    let paths = Paths::new(bpffs.path());
    let pod = Ipv4Addr::new(198, 51, 100, 5);
    let entry = |dest: &str, gateway: Gateway| {
        let key = PolicyKey {
            source: pod,
            destination: dest.parse().unwrap(),
        };
        let value = PolicyValue {
            egress_ip: Ipv4Addr::UNSPECIFIED,
            gateway,
            egress_ifindex: 0,
            policy_id: 3,
            origin: Origin {
                node: Ipv4Addr::new(192, 0, 2, 20),
                identity: 4242,
            },
        };
        (key, value)
    };
    // This build ran once and left an entry the older build since removed
    // (a downgrade and an upgrade again): the older map is what holds.
    {
        let mut s = DatapathStorage::default();
        let dp = Datapath::load(&mut s, paths.clone()).unwrap();
        assert_eq!(dp.legacy_policy(), LegacyPolicy::None);
        let (k, v) = entry("239.0.0.0/8", Gateway::Node(Ipv4Addr::new(192, 0, 2, 20)));
        dp.maps().unwrap().policy_insert(&k, &v).unwrap();
    }
    let old = pin_legacy_policy_map(&paths, 24);
    let want: Vec<(PolicyKey, PolicyValue)> = vec![
        entry("232.1.0.0/16", Gateway::Node(Ipv4Addr::new(192, 0, 2, 20))),
        entry("232.1.1.0/24", Gateway::Excluded),
    ];
    for (k, v) in &want {
        old.update(k.encode().as_bytes(), v.encode().as_bytes(), MapFlags::ANY)
            .unwrap();
    }

    let mut s = DatapathStorage::default();
    let dp = Datapath::load(&mut s, paths.clone()).unwrap();
    assert_eq!(dp.legacy_policy(), LegacyPolicy::Adopted(2));
    let maps = dp.maps().unwrap();
    assert_eq!(
        maps.policies().unwrap(),
        want,
        "the older map's entries, only"
    );
    assert_eq!(
        maps.policy_lens_for(Ipv4Addr::new(232, 1, 1, 1))
            .unwrap()
            .lens(),
        vec![24, 16]
    );
    assert_eq!(
        maps.policy_lens_for(Ipv4Addr::new(239, 1, 1, 1))
            .unwrap()
            .lens(),
        Vec::<u8>::new(),
        "the entry the older map did not have is gone, and its length"
    );
    assert!(
        !paths.globals().join(LEGACY_POLICY_MAP).exists(),
        "unpinned once taken over"
    );
    drop(dp);

    // Taken over once: a later load has nothing to take.
    let mut s = DatapathStorage::default();
    let dp = Datapath::load(&mut s, paths.clone()).unwrap();
    assert_eq!(dp.legacy_policy(), LegacyPolicy::None);
    assert_eq!(dp.maps().unwrap().policies().unwrap(), want);
    drop(dp);

    // An older map no build reads entries from is unpinned, not mixed in.
    let _odd = pin_legacy_policy_map(&paths, 8);
    let mut s = DatapathStorage::default();
    let dp = Datapath::load(&mut s, paths.clone()).unwrap();
    assert_eq!(dp.legacy_policy(), LegacyPolicy::Dropped);
    assert_eq!(dp.maps().unwrap().policies().unwrap(), want);
    assert!(!paths.globals().join(LEGACY_POLICY_MAP).exists());
});

priv_test!(probed_lengths_cover_the_pinned_entries_at_load, |bpffs| {
    let paths = Paths::new(bpffs.path());
    let group = Ipv4Addr::new(232, 1, 1, 7);
    let key = PolicyKey {
        source: Ipv4Addr::new(198, 51, 100, 5),
        destination: "232.1.1.0/24".parse().unwrap(),
    };
    let value = PolicyValue {
        egress_ip: Ipv4Addr::UNSPECIFIED,
        gateway: Gateway::Excluded,
        egress_ifindex: 0,
        policy_id: 3,
        origin: Origin::default(),
    };
    {
        let mut s = DatapathStorage::default();
        let dp = Datapath::load(&mut s, paths.clone()).unwrap();
        let maps = dp.maps().unwrap();
        maps.policy_insert(&key, &value).unwrap();
        assert_eq!(maps.policy_lens_for(group).unwrap().lens(), vec![24]);
    }
    // The length map went missing (removed by hand): the next load puts
    // back the lengths of what the policy map holds.
    std::fs::remove_file(paths.globals().join("mcast_egw_policy_lens_v4")).unwrap();
    let mut s = DatapathStorage::default();
    let dp = Datapath::load(&mut s, paths.clone()).unwrap();
    assert_eq!(
        dp.maps().unwrap().policy_lens_for(group).unwrap().lens(),
        vec![24]
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

fn prog_id(dp: &Datapath<'_>, program: Program) -> u32 {
    libbpf_rs::ProgramHandle::try_from(dp.program(program))
        .unwrap()
        .id()
}

priv_test!(tunnel_egress_link_pinned_reused_and_uninstalled, |bpffs| {
    veth("vx_eg", "vx_eg_peer");
    let paths = Paths::new(bpffs.path());
    let tun = ifindex_of("vx_eg").unwrap();

    let mut s1 = DatapathStorage::default();
    let dp1 = Datapath::load(&mut s1, paths.clone()).unwrap();
    let egress = dp1.attach("vx_eg", Program::ToOverlay).unwrap();
    assert!(matches!(egress, AttachOutcome::Attached { .. }));
    let ingress = dp1.attach("vx_eg", Program::FromOverlay).unwrap();
    let pin = paths.link_pin("vx_eg", Program::ToOverlay).unwrap();
    assert!(pin.exists(), "pinned beside the ingress link");
    assert!(pin.ends_with("vx_eg/mcast_to_overlay"));
    let chain = tcx_egress_chain(tun).unwrap();
    assert_eq!(chain.len(), 1, "on the egress chain");
    assert_eq!(
        (chain[0].link_id, chain[0].prog_id),
        (egress.link_id(), prog_id(&dp1, Program::ToOverlay))
    );
    let chain = tcx_ingress_chain(tun).unwrap();
    assert_eq!(
        chain.len(),
        1,
        "the ingress chain holds only the ingress link"
    );
    assert_eq!(chain[0].link_id, ingress.link_id());
    drop(dp1);

    // A restart: the same link, the new program in it.
    let mut s2 = DatapathStorage::default();
    let dp2 = Datapath::load(&mut s2, paths.clone()).unwrap();
    assert_eq!(
        dp2.attach("vx_eg", Program::ToOverlay).unwrap(),
        AttachOutcome::Updated {
            link_id: egress.link_id()
        }
    );
    let chain = tcx_egress_chain(tun).unwrap();
    assert_eq!(chain.len(), 1, "still one link on the egress chain");
    assert_eq!(chain[0].prog_id, prog_id(&dp2, Program::ToOverlay));
    let state = links(&paths).unwrap();
    assert_eq!(
        state
            .iter()
            .map(|l| (l.device.as_str(), l.program.as_str(), l.ifindex))
            .collect::<Vec<_>>(),
        vec![
            ("vx_eg", "mcast_from_overlay", tun),
            ("vx_eg", "mcast_to_overlay", tun)
        ]
    );

    // Detached alone, the ingress link stays.
    assert!(datapath::detach(&paths, "vx_eg", Program::ToOverlay).unwrap());
    assert!(tcx_egress_chain(tun).unwrap().is_empty());
    assert_eq!(tcx_ingress_chain(tun).unwrap().len(), 1);
    let again = dp2.attach("vx_eg", Program::ToOverlay).unwrap();
    assert!(matches!(again, AttachOutcome::Attached { .. }));
    drop(dp2);

    let report = datapath::uninstall(&paths).unwrap();
    let mut removed = report.links.clone();
    removed.sort();
    assert_eq!(
        removed,
        vec![
            ("vx_eg".to_string(), "mcast_from_overlay".to_string()),
            ("vx_eg".to_string(), "mcast_to_overlay".to_string())
        ]
    );
    assert!(report
        .maps
        .contains(&datapath::maps::TUNNEL_PENDING_MAP.to_string()));
    assert!(tcx_egress_chain(tun).unwrap().is_empty());
    assert!(tcx_ingress_chain(tun).unwrap().is_empty());
    assert!(!paths.own_dir().exists());
});

fn interface(name: &str) -> Interface {
    Interface {
        name: name.to_string(),
        ifindex: ifindex_of(name).unwrap(),
        mac: common::mac_of(name),
        ipv4: Vec::new(),
        ipv6: Vec::new(),
    }
}

priv_test!(
    attach_manager_puts_the_tunnel_key_program_on_egress,
    |bpffs| {
        veth("lxc_am", "pod_am");
        common::vxlan_external("vx_am");
        let paths = Paths::new(bpffs.path());
        let mut s = DatapathStorage::default();
        let dp = Datapath::load(&mut s, paths.clone()).unwrap();
        let mut mgr = AttachManager::new(AttachConfig {
            endpoint_devices: glob::Pattern::new("lxc*").unwrap(),
            tunnel_device: "vx_am".to_string(),
        });
        let tun = ifindex_of("vx_am").unwrap();

        // Before the tunnel device is listed, only the endpoint is expected.
        let state = mgr.reconcile(&dp, &[interface("lxc_am")]);
        assert!(state.complete());
        assert!(!state
            .expected
            .contains(&("vx_am".to_string(), Program::ToOverlay)));

        let all = [interface("lxc_am"), interface("vx_am")];
        let state = mgr.reconcile(&dp, &all);
        assert!(state.tunnel_present);
        let key = ("vx_am".to_string(), Program::ToOverlay);
        assert!(
            state.expected.contains(&key),
            "expected: readiness waits for it"
        );
        assert!(state.complete());
        let link = state.attached[&key];
        let chain = tcx_egress_chain(tun).unwrap();
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].link_id, link, "ours, on the tunnel's egress");
        assert_eq!(chain[0].prog_id, prog_id(&dp, Program::ToOverlay));
        assert_eq!(tcx_ingress_chain(tun).unwrap().len(), 1, "and its ingress");
        assert!(tcx_egress_chain(ifindex_of("lxc_am").unwrap())
            .unwrap()
            .is_empty());

        // A restarted manager adopts the same link.
        let mut mgr2 = AttachManager::new(AttachConfig {
            endpoint_devices: glob::Pattern::new("lxc*").unwrap(),
            tunnel_device: "vx_am".to_string(),
        });
        let state = mgr2.reconcile(&dp, &all);
        assert_eq!(state.attached[&key], link, "the same link, reused");

        // The tunnel device gone: both of its pins go too.
        sh("ip", &["link", "del", "vx_am"]);
        let state = mgr2.reconcile(&dp, &[interface("lxc_am")]);
        assert!(!state.tunnel_present);
        assert!(state.complete());
        assert!(links(&paths).unwrap().iter().all(|l| l.device != "vx_am"));
        assert!(!paths.links_dir().join("vx_am").exists());
    }
);

priv_test!(
    attach_manager_forgets_a_failed_device_once_it_is_gone,
    |bpffs| {
        veth("lxc_fa", "pod_fa");
        let paths = Paths::new(bpffs.path());
        let mut s = DatapathStorage::default();
        let dp = Datapath::load(&mut s, paths.clone()).unwrap();
        let mut mgr = AttachManager::new(AttachConfig {
            endpoint_devices: glob::Pattern::new("lxc*").unwrap(),
            tunnel_device: "vx_fa".to_string(),
        });
        // A listing taken just before the device went: the attach fails.
        let stale = interface("lxc_fa");
        sh("ip", &["link", "del", "lxc_fa"]);
        let key = ("lxc_fa".to_string(), Program::FromContainer);
        let state = mgr.reconcile(&dp, std::slice::from_ref(&stale));
        assert!(!state.complete(), "the attach failed");
        assert!(
            mgr.tracked().contains(&key),
            "its error is remembered while it is listed (logged once)"
        );
        let state = mgr.reconcile(&dp, std::slice::from_ref(&stale));
        assert!(mgr.tracked().contains(&key));
        assert!(!state.complete());

        // No longer listed: nothing of it is left behind.
        let state = mgr.reconcile(&dp, &[]);
        assert!(state.complete());
        assert!(mgr.tracked().is_empty(), "left: {:?}", mgr.tracked());
        assert!(links(&paths).unwrap().is_empty());
    }
);

/// Pins `mcast_egw_config` as an older build might have: the same sizes,
/// but `struct mcast_config` with its first two fields swapped, in BTF.
fn pin_reordered_config(path: &Path) {
    // SAFETY: libbpf BTF builder calls on a BTF object we own and free;
    // every name is a NUL-terminated literal.
    unsafe {
        let btf = libbpf_sys::btf__new_empty();
        assert!(!btf.is_null());
        let u32_id = libbpf_sys::btf__add_int(btf, c"unsigned int".as_ptr(), 4, 0);
        assert!(u32_id > 0);
        let config = libbpf_sys::btf__add_struct(btf, c"mcast_config".as_ptr(), 16);
        assert!(config > 0);
        for (i, name) in [c"tunnel_ifindex", c"node_ip", c"flags", c"pad"]
            .iter()
            .enumerate()
        {
            let bits = u32::try_from(i * 32).unwrap();
            assert_eq!(
                libbpf_sys::btf__add_field(btf, name.as_ptr(), u32_id, bits, 0),
                0
            );
        }
        assert_eq!(libbpf_sys::btf__load_into_kernel(btf), 0);
        let mut map = MapHandle::create(
            MapType::Array,
            Some("mcast_egw_config"),
            4,
            16,
            1,
            &libbpf_sys::bpf_map_create_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
                btf_fd: u32::try_from(libbpf_sys::btf__fd(btf)).unwrap(),
                btf_key_type_id: u32::try_from(u32_id).unwrap(),
                btf_value_type_id: u32::try_from(config).unwrap(),
                ..Default::default()
            },
        )
        .unwrap();
        map.pin(path).unwrap();
        libbpf_sys::btf__free(btf);
    }
}

priv_test!(same_size_reordered_struct_is_refused, |bpffs| {
    // Positive control: the real datapath's own pins (with BTF) are
    // accepted on reload.
    let paths = Paths::new(bpffs.path());
    let mut s = DatapathStorage::default();
    drop(Datapath::load(&mut s, paths.clone()).unwrap());
    let mut s = DatapathStorage::default();
    drop(Datapath::load(&mut s, paths.clone()).expect("our own pins are re-used"));

    // The same sizes, type and flags, fields reordered: refused.
    let pin = paths.globals().join("mcast_egw_config");
    std::fs::remove_file(&pin).unwrap();
    pin_reordered_config(&pin);
    let mut s = DatapathStorage::default();
    let err = match Datapath::load(&mut s, paths.clone()) {
        Ok(_) => panic!("a same-size map with reordered fields must be refused"),
        Err(e) => e,
    };
    let DatapathError::LayoutMismatch {
        ref pinned,
        ref ours,
        ..
    } = err
    else {
        panic!("not a layout mismatch: {err}");
    };
    assert_eq!(
        (
            pinned.map_type,
            pinned.key_size,
            pinned.value_size,
            pinned.max_entries,
            pinned.flags
        ),
        (
            ours.map_type,
            ours.key_size,
            ours.value_size,
            ours.max_entries,
            ours.flags
        ),
        "only the field layout differs"
    );
    // Both layouts, field by field, in the error.
    let msg = err.to_string();
    for want in [
        "mcast_egw_config",
        "struct mcast_config (16 B) { unsigned int tunnel_ifindex @0, unsigned int node_ip @4",
        "struct mcast_config (16 B) { unsigned int node_ip @0, unsigned int tunnel_ifindex @4",
        "uninstall",
    ] {
        assert!(msg.contains(want), "{want:?} not in: {msg}");
    }
});

priv_test!(
    capacities_are_chosen_at_load_and_part_of_the_layout,
    |bpffs| {
        let paths = Paths::new(bpffs.path());
        let small = Capacities {
            policy_entries: 1024,
            policy_names: 64,
        };
        let mut s = DatapathStorage::default();
        let dp = Datapath::load_with(&mut s, paths.clone(), &small).unwrap();
        let maps = dp.maps().unwrap();
        assert_eq!(maps.policy_capacity(), 1024);
        assert_eq!(maps.policy_names_capacity(), 64);
        drop((maps, dp));

        // Positive control: the same capacities again adopt the pins.
        let mut s = DatapathStorage::default();
        drop(Datapath::load_with(&mut s, paths.clone(), &small).expect("same capacities re-used"));

        // Another capacity is another layout: refused, naming both and the flag.
        for (other, flag, pinned) in [
            (Capacities::default(), "--policy-map-entries 1024", 1024),
            (
                Capacities {
                    policy_names: 65,
                    ..small
                },
                "--policy-names-entries 64",
                64,
            ),
        ] {
            let mut s = DatapathStorage::default();
            let err = match Datapath::load_with(&mut s, paths.clone(), &other) {
                Ok(_) => panic!("a pinned map of another capacity must be refused"),
                Err(e) => e,
            };
            assert!(
                matches!(err, DatapathError::CapacityMismatch { pinned: p, .. } if p == pinned),
                "{err}"
            );
            assert!(err.to_string().contains(flag), "{err}");
        }

        // Out of range: refused before anything is created.
        let fresh = Bpffs::new("capacity-zero");
        let mut s = DatapathStorage::default();
        let zero = Capacities {
            policy_entries: 0,
            ..small
        };
        assert!(matches!(
            Datapath::load_with(&mut s, Paths::new(fresh.path()), &zero),
            Err(DatapathError::BadCapacity { value: 0, .. })
        ));
        assert!(!Paths::new(fresh.path())
            .globals()
            .join("mcast_egw_policy_hash_v4")
            .exists());
    }
);
