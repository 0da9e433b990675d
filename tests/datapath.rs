//! The datapath through BPF_PROG_RUN: the real programs, crafted frames,
//! every verdict, byte, checksum and counter checked. Needs root; each test
//! has its own network namespace and BPF filesystem.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use libbpf_rs::{MapCore, MapFlags};

use cilium_mcast_egress::bpf_intf::mcast_events_limit;
use cilium_mcast_egress::datapath::maps::{
    Config, DropReason, EgressIface, Endpoint, Gateway, Origin, PolicyKey, PolicyLens, PolicyValue,
    Role,
};
use cilium_mcast_egress::datapath::{Plain, Program};
use common::observer::Observer;
use common::packet::{self, group_mac, Frame, View};
use common::{mac_of, sh, Tap};

use common::addr::*;
use common::dp::{assert_untouched, origin_of, run, Fx, POLICY_ID};
use common::{TCX_DROP, TCX_NEXT, TCX_REDIRECT};

const GROUP_BIT23: Ipv4Addr = Ipv4Addr::new(232, 129, 1, 1);

fn net(s: &str) -> Ipv4Network {
    s.parse().expect("CIDR")
}

// --- everything that is not ours -------------------------------------------

dp_test!(unicast_ipv4_passes_untouched, |fx| {
    // An entry that covers the destination, as a unicast policy would.
    fx.policy(POD_A, "198.51.100.0/24", Gateway::Node(REMOTE_GW));
    let f = Frame::udp(POD_A, POD_B, b"unicast").bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_untouched(&fx, v, &f, &out);
});

dp_test!(other_ethertypes_pass_untouched, |fx| {
    fx.policy(POD_A, "224.0.0.0/4", Gateway::Node(REMOTE_GW));
    fx.set_tunnel(ID_A, REMOTE_GW);
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    // A covered multicast datagram: the control leaves from both programs.
    let covered = Frame::udp(POD_A, GROUP, b"covered, whatever the ethertype says").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &covered).0, TCX_REDIRECT);
    assert_eq!(fx.run_gateway(&covered).0, TCX_REDIRECT);
    // The same bytes under ARP, IPv6, 802.1Q, 802.1ad and an 802.3 length
    // field: only the ethertype differs, and nothing of it is ours.
    let (counted, dropped) = (fx.total_counted(), fx.total_drops());
    for ethertype in [
        packet::ETH_P_ARP,
        packet::ETH_P_IPV6,
        0x8100,
        0x88a8,
        0x05dc,
    ] {
        let mut f = covered.clone();
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        for (program, (v, out)) in [
            ("origin", fx.run_origin(fx.lxc_a, &f)),
            ("gateway", fx.run_gateway(&f)),
        ] {
            assert_eq!(
                (v, &out),
                (TCX_NEXT, &f),
                "{program}, ethertype {ethertype:#06x}"
            );
        }
    }
    assert_eq!((fx.total_counted(), fx.total_drops()), (counted, dropped));
});

dp_test!(truncated_frames_pass_untouched, |fx| {
    fx.policy(POD_A, "224.0.0.0/4", Gateway::Node(REMOTE_GW));
    let full = Frame::udp(POD_A, GROUP, b"payload").bytes();
    // BPF_PROG_RUN refuses IPv4 frames shorter than an IPv4 header, so
    // those go over the real veth: the pod sends them, our program runs at
    // the head of lxc_a's tcx chain, and an observer behind it (where
    // Cilium's program would be) records what it was handed on.
    fx.dp.attach("lxc_a", Program::FromContainer).unwrap();
    let observer = Observer::attach_behind("lxc_a", fx.dp.paths());
    let pod = Tap::open("pod_a");
    // Ethernet header only; IPv4 header cut before, inside and just short
    // of the end of the destination address.
    for len in [14, 14 + 12, 14 + 16, 14 + 19] {
        let f = full[..len].to_vec();
        pod.send(&f);
        assert_eq!(
            observer.next_frame(),
            f,
            "handed on unchanged ({len} bytes)"
        );
    }
    assert_eq!(fx.total_counted(), 0);
    assert_eq!(fx.total_drops(), 0);
    // Positive control on the same veth: the whole frame is ours, goes to
    // the tunnel and is never handed on. The observer runs in the same
    // softirq as our program, so once the origin counter shows it, the
    // observer has had its chance.
    let handed_on = observer.count();
    pod.send(&full);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while fx.counter(GROUP, Role::Origin).0 == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        fx.counter(GROUP, Role::Origin).0,
        1,
        "our program saw the frame"
    );
    assert_eq!(observer.count(), handed_on, "and did not hand it on");
    // A whole header, covered by the policy, but no room for the options
    // it announces: a router would refuse it, and so do we.
    let mut f = full[..14 + 20].to_vec();
    f[14] = 0x46;
    let (v, _) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_DROP);
    assert_eq!(fx.drops(Role::Origin, DropReason::MALFORMED), 1);
});

dp_test!(ihl_below_five_is_malformed, |fx| {
    fx.policy(POD_A, "224.0.0.0/4", Gateway::Node(THIS_NODE));
    // A valid tunnel key, so that only the header check can stop it.
    fx.set_tunnel(ID_A, REMOTE_GW);
    // Positive control: the same frame with IHL 5 leaves from both.
    let good = Frame::udp(POD_A, GROUP, b"bad header").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &good).0, TCX_REDIRECT);
    assert_eq!(fx.run_gateway(&good).0, TCX_REDIRECT);
    for ihl in 0..5u8 {
        let mut f = good.clone();
        f[14] = 0x40 | ihl;
        // A checksum valid over the 20 bytes, so that only IHL is wrong.
        f[24..26].copy_from_slice(&[0, 0]);
        let c = packet::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_DROP, "origin, IHL {ihl}");
        assert_eq!(fx.run_gateway(&f).0, TCX_DROP, "gateway, IHL {ihl}");
    }
    assert_eq!(fx.drops(Role::Origin, DropReason::MALFORMED), 5);
    assert_eq!(fx.drops(Role::Gateway, DropReason::MALFORMED), 5);
});

dp_test!(multicast_without_policy_passes, |fx| {
    fx.policy(POD_B, "232.0.0.0/8", Gateway::Node(REMOTE_GW));
    fx.policy(POD_A, "239.0.0.0/8", Gateway::Node(REMOTE_GW));
    let f = Frame::udp(POD_A, GROUP, b"no policy for this").bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_untouched(&fx, v, &f, &out);
    // Positive control: the pod's own policy does apply to its groups.
    let covered = Frame::udp(POD_A, Ipv4Addr::new(239, 1, 1, 1), b"covered").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &covered).0, TCX_REDIRECT);
});

dp_test!(excluded_entry_passes, |fx| {
    fx.policy(POD_A, "232.0.0.0/8", Gateway::Node(REMOTE_GW));
    fx.policy(POD_A, "232.1.1.0/24", Gateway::Excluded);
    let f = Frame::udp(POD_A, GROUP, b"excluded").bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_untouched(&fx, v, &f, &out);
    // Outside the excluded prefix the policy still applies.
    let f = Frame::udp(POD_A, Ipv4Addr::new(232, 1, 2, 1), b"covered").bytes();
    let (v, _) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_REDIRECT);
});

dp_test!(longest_prefix_wins_across_lengths, |fx| {
    // Nested prefixes of pod A, allowed and excluded by turns, and a longer
    // prefix of pod B's that must not shadow pod A's shorter one.
    fx.policy(POD_A, "224.0.0.0/4", Gateway::Node(REMOTE_GW));
    fx.policy(POD_A, "232.0.0.0/8", Gateway::Excluded);
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    fx.policy(POD_A, "232.1.1.0/24", Gateway::Excluded);
    fx.policy(POD_A, "232.1.1.1/32", Gateway::Node(REMOTE_GW));
    fx.policy(POD_B, "232.1.2.0/25", Gateway::Excluded);
    assert_eq!(
        fx.maps.policy_lens_for(GROUP).unwrap().lens(),
        vec![32, 25, 24, 16, 8, 4],
        "every length that can match is probed, longest first"
    );
    assert_eq!(
        fx.maps
            .policy_lens_for(Ipv4Addr::new(239, 1, 1, 1))
            .unwrap()
            .lens(),
        vec![4],
        "and only those"
    );
    let verdict = |group: [u8; 4]| {
        let f = Frame::udp(POD_A, Ipv4Addr::from(group), b"which prefix").bytes();
        fx.run_origin(fx.lxc_a, &f).0
    };
    let expect = [
        ([239, 1, 1, 1], TCX_REDIRECT, "/4"),
        ([232, 9, 9, 9], TCX_NEXT, "/8 excluded"),
        ([232, 1, 9, 9], TCX_REDIRECT, "/16"),
        (
            [232, 1, 2, 1],
            TCX_REDIRECT,
            "/16: pod B's /25 is not pod A's",
        ),
        ([232, 1, 1, 2], TCX_NEXT, "/24 excluded"),
        ([232, 1, 1, 1], TCX_REDIRECT, "/32"),
    ];
    for (group, want, what) in expect {
        assert_eq!(verdict(group), want, "{what}");
    }

    // A length with no entry left is a probe too many, never a wrong
    // answer; and once it is out of the set, nothing else changes.
    assert!(fx
        .maps
        .policy_delete(&PolicyKey {
            source: POD_A,
            destination: net("232.1.1.1/32"),
        })
        .unwrap());
    assert_eq!(verdict([232, 1, 1, 1]), TCX_NEXT, "the /24 exclusion now");
    let rest = fx.maps.policies().unwrap();
    fx.maps
        .policy_lens_retain(&PolicyLens::of(rest.iter().map(|(k, _)| k)))
        .unwrap();
    assert_eq!(
        fx.maps.policy_lens_for(GROUP).unwrap().lens(),
        vec![25, 24, 16, 8, 4]
    );
    for (group, want, what) in &expect[..5] {
        assert_eq!(verdict(*group), *want, "{what}, after the set shrank");
    }
    assert_eq!(verdict([232, 1, 1, 1]), TCX_NEXT);
});

dp_test!(policy_changes_reach_the_next_packet, |fx| {
    fx.set_tunnel(ID_A, REMOTE_GW);
    let f = Frame::udp(POD_A, GROUP, b"changes").bytes();
    let key = PolicyKey {
        source: POD_A,
        destination: net("232.1.0.0/16"),
    };
    let step = |gateway: Option<Gateway>, origin: u32, gw: u32| {
        match gateway {
            Some(g) => fx.policy(POD_A, "232.1.0.0/16", g),
            None => {
                fx.maps.policy_delete(&key).unwrap();
            }
        }
        for _ in 0..3 {
            assert_eq!(fx.run_origin(fx.lxc_a, &f).0, origin, "{gateway:?} origin");
            assert_eq!(fx.run_gateway(&f).0, gw, "{gateway:?} gateway");
        }
    };
    // The gateway drops a copy in a pod's name that no entry lets out.
    step(None, TCX_NEXT, TCX_DROP);
    step(Some(Gateway::Node(REMOTE_GW)), TCX_REDIRECT, TCX_DROP);
    step(Some(Gateway::Node(THIS_NODE)), TCX_REDIRECT, TCX_REDIRECT);
    step(Some(Gateway::Excluded), TCX_NEXT, TCX_DROP);
    step(Some(Gateway::NotFound), TCX_DROP, TCX_DROP);
    step(None, TCX_NEXT, TCX_DROP);
});

dp_test!(no_gateway_sentinel_drops_and_counts, |fx| {
    fx.policy(POD_A, "232.0.0.0/8", Gateway::NotFound);
    let f = Frame::udp(POD_A, GROUP, b"nowhere to go").bytes();
    let (v, _) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_DROP);
    assert_eq!(fx.drops(Role::Origin, DropReason::NO_GATEWAY), 1);
    assert_eq!(fx.total_drops(), 1);
    assert_eq!(fx.total_counted(), 0);
});

dp_test!(never_egress_set_passes_under_catch_all_policy, |fx| {
    fx.policy(POD_A, "224.0.0.0/4", Gateway::Node(THIS_NODE));
    // OSPF's 224.0.0.5 and mDNS's 224.0.0.251: Local Network Control Block.
    for group in [Ipv4Addr::new(224, 0, 0, 5), Ipv4Addr::new(224, 0, 0, 251)] {
        let f = Frame::udp(POD_A, group, b"link local").bytes();
        let (v, out) = fx.run_origin(fx.lxc_a, &f);
        assert_untouched(&fx, v, &f, &out);
    }
    // IGMP and PIM to a covered, routable group.
    for proto in [packet::PROTO_IGMP, packet::PROTO_PIM] {
        let f = Frame::udp(POD_A, GROUP, &[0x22, 0, 0xfa, 0xff, 0, 0, 0, 1])
            .proto(proto)
            .bytes();
        let (v, out) = fx.run_origin(fx.lxc_a, &f);
        assert_untouched(&fx, v, &f, &out);
        fx.set_tunnel(ID_A, REMOTE_GW);
        let (v, out) = fx.run_gateway(&f);
        assert_untouched(&fx, v, &f, &out);
    }
    // Positive control: UDP to the same covered group is ours.
    let udp = Frame::udp(POD_A, GROUP, b"routable").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &udp).0, TCX_REDIRECT);
});

// --- origin ----------------------------------------------------------------

dp_test!(origin_remote_gateway_redirects_unchanged, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    let f = Frame::udp(POD_A, GROUP, b"to the gateway").bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_REDIRECT);
    assert_eq!(out, f, "the origin sends the pod's packet as it is");
    assert_eq!(fx.counter(GROUP, Role::Origin), (1, f.len() as u64));
    assert_eq!(fx.counter(GROUP, Role::Gateway), (0, 0));
    assert_eq!(fx.total_drops(), 0);
});

dp_test!(origin_spoofed_source_drops, |fx| {
    fx.policy(POD_B, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    // Pod A (behind lxc_a) sends with pod B's address.
    let f = Frame::udp(POD_B, GROUP, b"not my address").bytes();
    let (v, _) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_DROP);
    assert_eq!(fx.drops(Role::Origin, DropReason::SPOOFED_SOURCE), 1);
    assert_eq!(fx.total_counted(), 0);
});

dp_test!(origin_entry_of_another_identity_does_not_apply, |fx| {
    // An entry made for the pod that had this address before (identity B),
    // while pod A (identity A) has it now: local gateway or not, no copy.
    for gateway in [Gateway::Node(THIS_NODE), Gateway::Node(REMOTE_GW)] {
        fx.maps
            .policy_insert(
                &PolicyKey {
                    source: POD_A,
                    destination: net("232.1.0.0/16"),
                },
                &PolicyValue {
                    egress_ip: EGRESS_IP,
                    gateway,
                    egress_ifindex: fx.uplink,
                    policy_id: POLICY_ID,
                    origin: origin_of(POD_B),
                },
            )
            .unwrap();
        let f = Frame::udp(POD_A, GROUP, b"stale entry").bytes();
        assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_DROP, "{gateway:?}");
    }
    assert_eq!(fx.drops(Role::Origin, DropReason::ORIGIN_MISMATCH), 2);
    assert_eq!(fx.total_counted(), 0);
});

dp_test!(origin_unknown_source_drops, |fx| {
    let stranger_pod = Ipv4Addr::new(198, 51, 100, 99);
    fx.policy(stranger_pod, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    let f = Frame::udp(stranger_pod, GROUP, b"who am i").bytes();
    let (v, _) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_DROP);
    assert_eq!(fx.drops(Role::Origin, DropReason::UNKNOWN_SOURCE), 1);
});

dp_test!(origin_without_tunnel_device_drops, |fx| {
    fx.maps
        .config_set(&Config {
            node_ip: THIS_NODE,
            tunnel_ifindex: 0,
        })
        .unwrap();
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    let f = Frame::udp(POD_A, GROUP, b"no tunnel yet").bytes();
    let (v, _) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_DROP);
    assert_eq!(fx.drops(Role::Origin, DropReason::NO_TUNNEL), 1);
});

dp_test!(origin_non_udp_drops, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    let f = Frame::udp(POD_A, GROUP, &[0u8; 20])
        .proto(packet::PROTO_TCP)
        .bytes();
    let (v, _) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_DROP);
    assert_eq!(fx.drops(Role::Origin, DropReason::UNSUPPORTED_PROTOCOL), 1);
});

/// Check a rewritten frame against the independently built expectation.
fn assert_emitted(fx: &Fx, sent: &Frame, out: &[u8]) {
    let want = sent.as_emitted(EGRESS_IP, fx.uplink_mac).bytes();
    let view = View(out);
    assert_eq!(view.saddr(), EGRESS_IP, "source rewritten to the egress IP");
    assert_eq!(view.ttl(), sent.ttl - 1, "TTL decremented");
    assert_eq!(view.dst_mac(), group_mac(sent.daddr), "RFC 1112 group MAC");
    assert_eq!(view.src_mac(), fx.uplink_mac, "uplink MAC");
    assert!(view.ipv4_checksum_ok(), "IPv4 header checksum");
    if sent.udp_csum == packet::UdpCsum::Zero {
        assert_eq!(
            view.udp_checksum_field(),
            0,
            "a zero UDP checksum stays zero"
        );
    } else if !view.is_fragmented() {
        assert!(view.udp_checksum_ok(), "UDP checksum");
    }
    assert_eq!(out, want.as_slice(), "every byte as a router would send it");
}

dp_test!(origin_local_gateway_rewrites_and_redirects, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    let sent = Frame::udp(POD_A, GROUP, b"SSM from a pod on the gateway node");
    let f = sent.bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_REDIRECT);
    assert_emitted(&fx, &sent, &out);
    assert_eq!(fx.counter(GROUP, Role::Origin), (1, f.len() as u64));
    assert_eq!(fx.counter(GROUP, Role::Gateway), (1, f.len() as u64));
    assert_eq!(fx.total_drops(), 0);
});

dp_test!(gateway_rewrites_and_redirects, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    let sent = Frame::udp(POD_A, GROUP, b"SSM through the tunnel");
    let f = sent.bytes();
    let (v, out) = fx.run_gateway(&f);
    assert_eq!(v, TCX_REDIRECT);
    assert_emitted(&fx, &sent, &out);
    assert_eq!(fx.counter(GROUP, Role::Gateway), (1, f.len() as u64));
    assert_eq!(fx.counter(GROUP, Role::Origin), (0, 0));
});

dp_test!(rewrite_keeps_zero_udp_checksum, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    let sent = Frame::udp(POD_A, GROUP, b"no checksum").zero_udp_checksum();
    for out in [
        fx.run_origin(fx.lxc_a, &sent.bytes()).1,
        fx.run_gateway(&sent.bytes()).1,
    ] {
        assert_eq!(View(&out).udp_checksum_field(), 0, "zero stays zero");
        assert_emitted(&fx, &sent, &out);
    }
});

dp_test!(rewrite_udp_checksum_many_payloads, |fx| {
    // Sources, payloads and TTLs chosen to walk the checksum through carries
    // and the 0x0000/0xffff corner.
    fx.set_tunnel(ID_A, REMOTE_GW);
    for (i, src) in [POD_A, Ipv4Addr::new(198, 51, 100, 255)]
        .into_iter()
        .enumerate()
    {
        fx.maps
            .endpoint_insert(
                src,
                &Endpoint {
                    ifindex: fx.lxc_a,
                    identity: ID_A,
                },
            )
            .unwrap();
        fx.policy(src, "232.0.0.0/8", Gateway::Node(THIS_NODE));
        for n in 0..64u16 {
            let payload: Vec<u8> = (0..(n * 7 + i as u16))
                .map(|b| (b as u8).wrapping_mul(31).wrapping_add(n as u8))
                .collect();
            let sent = Frame::udp(
                src,
                Ipv4Addr::new(232, (n % 200) as u8, 255, n as u8),
                &payload,
            )
            .ttl(2 + (n % 250) as u8);
            let (v, out) = fx.run_gateway(&sent.bytes());
            assert_eq!(v, TCX_REDIRECT);
            assert_emitted(&fx, &sent, &out);
        }
    }
});

dp_test!(rewrite_first_and_later_fragments, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 13 % 251) as u8).collect();
    let datagram = Frame::udp(POD_A, GROUP, &payload);
    // First fragment: UDP header and the first 1472 bytes; its checksum
    // covers the whole datagram, so the expectation is the datagram's
    // checksum with the egress IP, computed from scratch.
    let first = datagram.clone().fragment(0, 1480);
    let (v, out) = fx.run_gateway(&first.bytes());
    assert_eq!(v, TCX_REDIRECT);
    assert_emitted(&fx, &first, &out);
    let whole_emitted = datagram.as_emitted(EGRESS_IP, fx.uplink_mac);
    let want_csum = u16::from_be_bytes(whole_emitted.udp_datagram()[6..8].try_into().unwrap());
    let out_csum = u16::from_be_bytes([out[14 + 20 + 6], out[14 + 20 + 7]]);
    assert_eq!(
        out_csum, want_csum,
        "first fragment carries the datagram's checksum"
    );

    // A later fragment has no UDP header: only IP fields change, the
    // payload bytes where a UDP header would be stay as they are.
    let later = datagram.clone().fragment(1480, 2960);
    let lf = later.bytes();
    let (v, out) = fx.run_gateway(&lf);
    assert_eq!(v, TCX_REDIRECT);
    assert_emitted(&fx, &later, &out);
    assert_eq!(
        &out[34..],
        &lf[34..],
        "payload of a later fragment untouched"
    );
});

dp_test!(rewrite_with_ip_options, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    // Router Alert (RFC 2113) plus NOPs, and a 40-byte option block.
    let ra = [0x94, 0x04, 0x00, 0x00];
    let mut long = vec![0x01; 36];
    long.extend_from_slice(&ra);
    for opts in [ra.to_vec(), long] {
        let sent = Frame::udp(POD_A, GROUP, b"with options").options(&opts);
        let (v, out) = fx.run_gateway(&sent.bytes());
        assert_eq!(v, TCX_REDIRECT);
        assert_eq!(View(&out).ihl_len(), 20 + opts.len());
        assert_emitted(&fx, &sent, &out);
        let (v, out) = fx.run_origin(fx.lxc_a, &sent.bytes());
        assert_eq!(v, TCX_REDIRECT);
        assert_emitted(&fx, &sent, &out);
    }
});

dp_test!(options_a_router_would_process_never_leave, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    // Positive control: Router Alert and padding leave (rewrite_with_ip_options).
    let ra = Frame::udp(POD_A, GROUP, b"options").options(&[0x94, 0x04, 0x00, 0x00]);
    assert_eq!(fx.run_origin(fx.lxc_a, &ra.bytes()).0, TCX_REDIRECT);
    assert_eq!(fx.run_gateway(&ra.bytes()).0, TCX_REDIRECT);
    let refused: [(&str, Vec<u8>); 5] = [
        (
            "loose source route",
            vec![0x83, 0x07, 0x04, 203, 0, 113, 99, 0x00],
        ),
        (
            "strict source route",
            vec![0x89, 0x07, 0x04, 203, 0, 113, 99, 0x00],
        ),
        ("record route", vec![0x07, 0x07, 0x04, 0, 0, 0, 0, 0x00]),
        ("timestamp", vec![0x44, 0x08, 0x05, 0x00, 0, 0, 0, 0]),
        (
            "Router Alert of the wrong length",
            vec![0x94, 0x08, 0x00, 0x00, 0, 0, 0, 0],
        ),
    ];
    for (what, opts) in &refused {
        let f = Frame::udp(POD_A, GROUP, b"options").options(opts).bytes();
        assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_DROP, "origin: {what}");
        assert_eq!(fx.run_gateway(&f).0, TCX_DROP, "gateway: {what}");
    }
    let n = refused.len() as u64;
    assert_eq!(fx.drops(Role::Origin, DropReason::MALFORMED), n);
    assert_eq!(fx.drops(Role::Gateway, DropReason::MALFORMED), n);
    assert_eq!(fx.counter(GROUP, Role::Gateway).0, 2, "only the controls");
});

dp_test!(rewrite_group_mac_drops_bit_23, |fx| {
    fx.policy(POD_A, "232.0.0.0/8", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    for (group, mac) in [
        (GROUP, [0x01, 0x00, 0x5e, 0x01, 0x01, 0x01]),
        // 232.129.1.1: bit 23 of the address is not in the MAC.
        (GROUP_BIT23, [0x01, 0x00, 0x5e, 0x01, 0x01, 0x01]),
        (
            Ipv4Addr::new(232, 255, 254, 253),
            [0x01, 0x00, 0x5e, 0x7f, 0xfe, 0xfd],
        ),
    ] {
        // A pod's frame is ours only when sent to its group's own MAC, the
        // one worked out here, on the origin and again on the gateway: the
        // datapath's mapping must be this one to let it through.
        let mut sent = Frame::udp(POD_A, group, b"mac");
        sent.dst_mac = packet::HOST_MAC;
        assert_eq!(fx.run_gateway(&sent.bytes()).0, TCX_DROP, "{group}");
        assert_eq!(
            fx.run_origin(fx.lxc_a, &sent.bytes()).0,
            TCX_DROP,
            "{group}"
        );
        sent.dst_mac = mac;
        let (v, out) = fx.run_gateway(&sent.bytes());
        assert_eq!((v, View(&out).dst_mac()), (TCX_REDIRECT, mac), "{group}");
        let (v, out) = fx.run_origin(fx.lxc_a, &sent.bytes());
        assert_eq!((v, View(&out).dst_mac()), (TCX_REDIRECT, mac), "{group}");
    }
    assert_eq!(fx.drops(Role::Origin, DropReason::DST_MAC_MISMATCH), 3);
    assert_eq!(fx.drops(Role::Gateway, DropReason::DST_MAC_MISMATCH), 3);
});

dp_test!(ttl_one_is_dropped_as_ttl_exceeded, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    for ttl in [0u8, 1] {
        let f = Frame::udp(POD_A, GROUP, b"ttl").ttl(ttl).bytes();
        let (v, _) = fx.run_gateway(&f);
        assert_eq!(v, TCX_DROP);
        let (v, _) = fx.run_origin(fx.lxc_a, &f);
        assert_eq!(v, TCX_DROP);
    }
    assert_eq!(fx.drops(Role::Gateway, DropReason::TTL_EXCEEDED), 4);
    assert_eq!(fx.counter(GROUP, Role::Gateway), (0, 0));
    // TTL 2 leaves with TTL 1.
    let sent = Frame::udp(POD_A, GROUP, b"ttl").ttl(2);
    let (v, out) = fx.run_gateway(&sent.bytes());
    assert_eq!(v, TCX_REDIRECT);
    assert_eq!(View(&out).ttl(), 1);
});

dp_test!(frame_over_the_uplink_mtu_is_dropped_and_counted, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    sh("ip", &["link", "set", "uplink0", "mtu", "1000"]);
    let big = Frame::udp(POD_A, GROUP, &[7u8; 1200]).bytes();
    assert_eq!(fx.run_gateway(&big).0, TCX_DROP);
    assert_eq!(fx.run_origin(fx.lxc_a, &big).0, TCX_DROP);
    assert_eq!(fx.drops(Role::Gateway, DropReason::MTU_EXCEEDED), 2);
    // Up to the MTU (1000 bytes of IP) it leaves.
    let fits = Frame::udp(POD_A, GROUP, &[7u8; 1000 - 28]).bytes();
    assert_eq!(fx.run_gateway(&fits).0, TCX_REDIRECT);
});

// --- gateway checks ----------------------------------------------------------

dp_test!(gateway_world_vni_passes, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(2, REMOTE_GW);
    let f = Frame::udp(POD_A, GROUP, b"cilium's own replication").bytes();
    let (v, out) = fx.run_gateway(&f);
    assert_untouched(&fx, v, &f, &out);
    // Positive control: with the pod's identity, the same frame leaves.
    fx.set_tunnel(ID_A, REMOTE_GW);
    assert_eq!(fx.run_gateway(&f).0, TCX_REDIRECT);
});

dp_test!(gateway_without_tunnel_key_passes, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    let f = Frame::udp(POD_A, GROUP, b"no metadata").bytes();
    let (v, out) = fx.run_gateway(&f);
    assert_untouched(&fx, v, &f, &out);
    // Positive control: with a tunnel key, the same frame leaves.
    fx.set_tunnel(ID_A, REMOTE_GW);
    assert_eq!(fx.run_gateway(&f).0, TCX_REDIRECT);
});

dp_test!(gateway_unknown_peer_drops, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, STRANGER);
    let f = Frame::udp(POD_A, GROUP, b"injected").bytes();
    let (v, _) = fx.run_gateway(&f);
    assert_eq!(v, TCX_DROP);
    assert_eq!(fx.drops(Role::Gateway, DropReason::UNKNOWN_PEER), 1);
    assert_eq!(fx.total_counted(), 0);
});

dp_test!(
    gateway_accepts_copies_only_from_the_pods_node_and_identity,
    |fx| {
        fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
        let f = Frame::udp(POD_A, GROUP, b"in pod A's name").bytes();
        // Another node of the cluster, or pod B's identity: not pod A's copy.
        for (vni, peer) in [(ID_A, OTHER_NODE), (ID_B, REMOTE_GW), (0, REMOTE_GW)] {
            fx.set_tunnel(vni, peer);
            assert_eq!(fx.run_gateway(&f).0, TCX_DROP, "{vni} from {peer}");
        }
        assert_eq!(fx.drops(Role::Gateway, DropReason::ORIGIN_MISMATCH), 3);
        fx.set_tunnel(ID_A, REMOTE_GW);
        assert_eq!(fx.run_gateway(&f).0, TCX_REDIRECT);
    }
);

dp_test!(gateway_not_the_gateway_drops, |fx| {
    fx.set_tunnel(ID_A, REMOTE_GW);
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(OTHER_NODE));
    fx.policy(POD_A, "232.2.0.0/16", Gateway::NotFound);
    for group in [GROUP, Ipv4Addr::new(232, 2, 0, 1)] {
        let f = Frame::udp(POD_A, group, b"wrong node").bytes();
        let (v, _) = fx.run_gateway(&f);
        assert_eq!(v, TCX_DROP);
    }
    assert_eq!(fx.drops(Role::Gateway, DropReason::NOT_GATEWAY), 2);
});

dp_test!(gateway_no_egress_ip_drops, |fx| {
    fx.set_tunnel(ID_A, REMOTE_GW);
    let key = |d: &str| PolicyKey {
        source: POD_A,
        destination: net(d),
    };
    let val = |ip: Ipv4Addr, ifindex: u32| PolicyValue {
        egress_ip: ip,
        gateway: Gateway::Node(THIS_NODE),
        egress_ifindex: ifindex,
        policy_id: POLICY_ID,
        origin: origin_of(POD_A),
    };
    fx.maps
        .policy_insert(&key("232.1.0.0/16"), &val(Ipv4Addr::UNSPECIFIED, fx.uplink))
        .unwrap();
    fx.maps
        .policy_insert(&key("232.2.0.0/16"), &val(EGRESS_IP, 0))
        .unwrap();
    // An uplink the egress-interface map does not know.
    fx.maps
        .policy_insert(&key("232.3.0.0/16"), &val(EGRESS_IP, fx.lxc_b))
        .unwrap();
    for g in [
        GROUP,
        Ipv4Addr::new(232, 2, 0, 1),
        Ipv4Addr::new(232, 3, 0, 1),
    ] {
        let (v, _) = fx.run_gateway(&Frame::udp(POD_A, g, b"x").bytes());
        assert_eq!(v, TCX_DROP, "{g}");
    }
    assert_eq!(fx.drops(Role::Gateway, DropReason::NO_EGRESS_IP), 2);
    assert_eq!(fx.drops(Role::Gateway, DropReason::NO_EGRESS_IFACE), 1);
});

// --- coexistence with Cilium's in-cluster multicast --------------------------

fn is_vxlan_to_gateway(f: &[u8]) -> bool {
    f.len() > 50
        && View(f).ethertype() == packet::ETH_P_IP
        && View(f).daddr() == REMOTE_GW
        && View(f).proto() == packet::PROTO_UDP
        && u16::from_be_bytes([f[36], f[37]]) == 8472
}

dp_test!(coexistence_remote_clones_and_hands_on, |fx| {
    // The copy gets its tunnel key on the tunnel device's egress.
    fx.dp.attach("vx0", Program::ToOverlay).unwrap();
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    fx.maps.cilium_group_insert(GROUP).unwrap();
    let underlay = Tap::open("under0");
    let f = Frame::udp(POD_A, GROUP, b"both in and out of the cluster").bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_NEXT, "Cilium still gets the packet");
    assert_eq!(out, f, "and gets it unchanged");
    assert_eq!(fx.counter(GROUP, Role::Origin), (1, f.len() as u64));

    // The copy really left, VXLAN-encapsulated towards the gateway.
    let outer = underlay
        .recv_matching(Duration::from_secs(2), is_vxlan_to_gateway)
        .expect("the copy on the underlay");
    let o = View(&outer);
    assert_eq!(o.saddr(), THIS_NODE);
    assert_eq!(o.ttl(), 64, "outer TTL");
    assert!(o.ipv4_checksum_ok());
    let udp = &outer[34..];
    assert_eq!(&udp[6..8], &[0, 0], "zero outer UDP checksum");
    let vxlan = &udp[8..16];
    assert_eq!(vxlan[0], 0x08, "VNI present flag");
    let vni = u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]);
    assert_eq!(vni, ID_A, "VNI = the pod's security identity");
    assert_eq!(&udp[16..], f.as_slice(), "inner frame as the pod sent it");

    // Without the group in Cilium's set: redirect, no clone.
    fx.maps.cilium_group_delete(GROUP).unwrap();
    let (v, _) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_REDIRECT);
});

dp_test!(coexistence_local_gateway_clones_and_restores, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.maps.cilium_group_insert(GROUP).unwrap();
    let uplink = Tap::open("uplink0");
    for sent in [
        Frame::udp(POD_A, GROUP, b"local gateway and Cilium both"),
        Frame::udp(POD_A, GROUP, b"zero").zero_udp_checksum(),
    ] {
        let f = sent.bytes();
        let (v, out) = fx.run_origin(fx.lxc_a, &f);
        assert_eq!(v, TCX_NEXT);
        assert_eq!(out, f, "the original is restored byte for byte");
        let copy = uplink
            .recv_matching(Duration::from_secs(2), |p| {
                p.len() == f.len() && View(p).daddr() == GROUP && View(p).saddr() == EGRESS_IP
            })
            .expect("the rewritten copy on the uplink");
        assert_emitted(&fx, &sent, &copy);
    }
    assert_eq!(fx.counter(GROUP, Role::Gateway).0, 2);
});

dp_test!(coexistence_lost_copy_still_reaches_cilium, |fx| {
    fx.maps.cilium_group_insert(GROUP).unwrap();
    fx.set_tunnel(ID_A, REMOTE_GW);
    // Gateway here, TTL 1: no copy leaves, Cilium still replicates.
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    let f = Frame::udp(POD_A, GROUP, b"ttl 1").ttl(1).bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!((v, out), (TCX_NEXT, f.clone()));
    assert_eq!(fx.drops(Role::Gateway, DropReason::TTL_EXCEEDED), 1);
    // No gateway node at all.
    fx.policy(POD_A, "232.1.0.0/16", Gateway::NotFound);
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!((v, out), (TCX_NEXT, f.clone()));
    assert_eq!(fx.drops(Role::Origin, DropReason::NO_GATEWAY), 1);
    // Remote gateway but no tunnel device yet.
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    fx.maps
        .config_set(&Config {
            node_ip: THIS_NODE,
            tunnel_ifindex: 0,
        })
        .unwrap();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!((v, out), (TCX_NEXT, f.clone()));
    assert_eq!(fx.drops(Role::Origin, DropReason::NO_TUNNEL), 1);
    // A spoofed source is dropped outright all the same.
    let spoofed = Frame::udp(POD_B, GROUP, b"spoof").bytes();
    fx.policy(POD_B, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    assert_eq!(fx.run_origin(fx.lxc_a, &spoofed).0, TCX_DROP);
    // Nothing left, so nothing was counted as sent.
    assert_eq!(fx.total_counted(), 0);
});

dp_test!(
    gateway_first_fragment_without_udp_header_is_malformed,
    |fx| {
        fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
        fx.set_tunnel(ID_A, REMOTE_GW);
        // Positive control: the whole datagram leaves.
        let whole = Frame::udp(POD_A, GROUP, b"cut").bytes();
        assert_eq!(fx.run_gateway(&whole).0, TCX_REDIRECT);
        // A first fragment (MF set) of 4 bytes, with a consistent IPv4
        // header: only the missing UDP header can refuse it.
        let mut f = whole[..14 + 20 + 4].to_vec();
        f[16..18].copy_from_slice(&24u16.to_be_bytes());
        f[20] |= 0x20;
        fix_ip_checksum(&mut f);
        let (v, _) = fx.run_gateway(&f);
        assert_eq!(v, TCX_DROP);
        assert_eq!(fx.drops(Role::Gateway, DropReason::MALFORMED), 1);
    }
);

dp_test!(gateway_non_udp_drops, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    let f = Frame::udp(POD_A, GROUP, &[0u8; 20])
        .proto(packet::PROTO_TCP)
        .bytes();
    assert_eq!(fx.run_gateway(&f).0, TCX_DROP);
    assert_eq!(fx.drops(Role::Gateway, DropReason::UNSUPPORTED_PROTOCOL), 1);
});

dp_test!(gateway_without_node_ip_is_not_the_gateway, |fx| {
    fx.maps
        .config_set(&Config {
            node_ip: Ipv4Addr::UNSPECIFIED,
            tunnel_ifindex: fx.tunnel,
        })
        .unwrap();
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    let f = Frame::udp(POD_A, GROUP, b"unconfigured").bytes();
    assert_eq!(fx.run_gateway(&f).0, TCX_DROP);
    assert_eq!(fx.drops(Role::Gateway, DropReason::NOT_GATEWAY), 1);
});

dp_test!(gateway_drops_copies_no_policy_lets_out, |fx| {
    // The gateway serves 232.1.0.0/16 for pod A, except 232.1.1.0/24.
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.policy(POD_A, "232.1.1.0/24", Gateway::Excluded);
    fx.set_tunnel(ID_A, REMOTE_GW);
    // Positive control: a covered group leaves.
    let covered = Frame::udp(POD_A, Ipv4Addr::new(232, 1, 2, 1), b"covered").bytes();
    assert_eq!(fx.run_gateway(&covered).0, TCX_REDIRECT);
    // An excluded group, a group outside the policy, and a pod with no
    // policy at all: dropped and counted, never emitted, never handed on.
    let excluded = Frame::udp(POD_A, GROUP, b"excluded").bytes();
    assert_eq!(fx.run_gateway(&excluded).0, TCX_DROP);
    assert_eq!(fx.drops(Role::Gateway, DropReason::EXCLUDED), 1);
    let outside = Frame::udp(POD_A, Ipv4Addr::new(232, 9, 9, 9), b"outside").bytes();
    assert_eq!(fx.run_gateway(&outside).0, TCX_DROP);
    let stranger = Frame::udp(Ipv4Addr::new(198, 51, 100, 77), GROUP, b"no policy").bytes();
    assert_eq!(fx.run_gateway(&stranger).0, TCX_DROP);
    assert_eq!(fx.drops(Role::Gateway, DropReason::NO_POLICY), 2);
    // From outside the cluster: unknown_peer, whatever the group.
    fx.set_tunnel(ID_A, STRANGER);
    assert_eq!(fx.run_gateway(&stranger).0, TCX_DROP);
    assert_eq!(fx.drops(Role::Gateway, DropReason::UNKNOWN_PEER), 1);
    assert_eq!(fx.counter(Ipv4Addr::new(232, 1, 2, 1), Role::Gateway).0, 1);
    // Cilium's own replication (VNI WORLD) is Cilium's, covered or not.
    fx.set_tunnel(2, REMOTE_GW);
    for f in [&covered, &excluded, &stranger] {
        let (v, out) = fx.run_gateway(f);
        assert_eq!((v, &out), (TCX_NEXT, f));
    }
});

dp_test!(failed_copies_are_counted_and_the_original_goes_on, |fx| {
    fx.maps.cilium_group_insert(GROUP).unwrap();
    // An uplink that has an entry but no device any more.
    fx.maps
        .egress_iface_insert(
            999_999,
            &EgressIface {
                mac: [2, 0, 0, 0, 0, 9],
            },
        )
        .unwrap();
    fx.maps
        .policy_insert(
            &PolicyKey {
                source: POD_A,
                destination: net("232.1.0.0/16"),
            },
            &PolicyValue {
                egress_ip: EGRESS_IP,
                gateway: Gateway::Node(THIS_NODE),
                egress_ifindex: 999_999,
                policy_id: POLICY_ID,
                origin: origin_of(POD_A),
            },
        )
        .unwrap();
    let f = Frame::udp(POD_A, GROUP, b"copy fails").bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!((v, out), (TCX_NEXT, f.clone()), "untouched and handed on");
    assert_eq!(fx.drops(Role::Gateway, DropReason::REDIRECT), 1);

    // The tunnel device gone too.
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    fx.maps
        .config_set(&Config {
            node_ip: THIS_NODE,
            tunnel_ifindex: 999_998,
        })
        .unwrap();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!((v, out), (TCX_NEXT, f.clone()));
    assert_eq!(fx.drops(Role::Origin, DropReason::CLONE), 1);
    assert_eq!(fx.total_counted(), 0);
});

dp_test!(
    a_vanished_uplink_is_a_failed_redirect_not_a_sent_packet,
    |fx| {
        // Positive control: the uplink that exists takes the packet.
        fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
        let f = Frame::udp(POD_A, GROUP, b"to an uplink").bytes();
        assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_REDIRECT);
        assert_eq!(fx.counter(GROUP, Role::Gateway).0, 1);
        // The same policy through an uplink that has a MAC entry but no
        // device any more: dropped and counted, not counted as emitted.
        fx.maps
            .egress_iface_insert(
                999_999,
                &EgressIface {
                    mac: [2, 0, 0, 0, 0, 9],
                },
            )
            .unwrap();
        let (k, mut v) = common::policy_entry(
            POD_A,
            "232.1.0.0/16",
            Gateway::Node(THIS_NODE),
            fx.uplink,
            POLICY_ID,
            origin_of(POD_A),
        );
        v.egress_ifindex = 999_999;
        fx.maps.policy_insert(&k, &v).unwrap();
        fx.set_tunnel(ID_A, REMOTE_GW);
        assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_DROP);
        assert_eq!(fx.run_gateway(&f).0, TCX_DROP);
        assert_eq!(fx.drops(Role::Gateway, DropReason::REDIRECT), 2);
        assert_eq!(fx.counter(GROUP, Role::Gateway).0, 1, "only the control");
        assert_eq!(fx.counter(GROUP, Role::Origin).0, 1, "only the control");
    }
);

/// A VXLAN packet as a peer node's kernel would send it to this node.
fn vxlan_frame(dst_mac: [u8; 6], outer_src: Ipv4Addr, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut vx = vec![0x08, 0, 0, 0];
    vx.extend_from_slice(&vni.to_be_bytes()[1..]);
    vx.push(0);
    vx.extend_from_slice(inner);
    let mut outer = Frame::udp(outer_src, THIS_NODE, &[]);
    outer.dst_mac = dst_mac;
    outer.src_mac = [0x02, 0, 0, 0, 0, 0x20];
    outer.sport = 51234;
    outer.dport = 8472;
    outer.ttl = 64;
    outer.payload = vx;
    outer.zero_udp_checksum().bytes()
}

dp_test!(gateway_from_real_vxlan, |fx| {
    // The production program on vx0, fed by the kernel's VXLAN receive
    // path: the real tunnel-key read, VNI and outer source included.
    fx.dp.attach("vx0", Program::FromOverlay).unwrap();
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    sh("ethtool", &["-K", "uplink0", "tx", "off"]);
    let under_mac = mac_of("under0");
    let peer = Tap::open("under_peer");
    let uplink = Tap::open("upstream0");
    let sent = Frame::udp(POD_A, GROUP, b"over real VXLAN");
    let is_ours = |p: &[u8]| p.len() > 34 && View(p).daddr() == GROUP;

    peer.send(&vxlan_frame(under_mac, REMOTE_GW, ID_A, &sent.bytes()));
    let got = uplink
        .recv_matching(Duration::from_secs(2), is_ours)
        .expect("emitted on the uplink");
    assert_emitted(&fx, &sent, &got);
    assert_eq!(
        fx.counter(GROUP, Role::Gateway),
        (1, sent.bytes().len() as u64)
    );

    // Cilium's own replication (VNI 2) and a stranger's injection do not
    // leave.
    peer.send(&vxlan_frame(under_mac, REMOTE_GW, 2, &sent.bytes()));
    peer.send(&vxlan_frame(under_mac, STRANGER, ID_A, &sent.bytes()));
    assert!(uplink
        .recv_matching(Duration::from_millis(500), is_ours)
        .is_none());
    assert_eq!(fx.drops(Role::Gateway, DropReason::UNKNOWN_PEER), 1);
    assert_eq!(fx.counter(GROUP, Role::Gateway).0, 1);
});

dp_test!(local_gateway_from_a_real_socket, |fx| {
    // A pod's own UDP socket: the kernel hands the veth CHECKSUM_PARTIAL
    // packets whose checksum field holds only the pseudo-header sum.
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.dp.attach("lxc_a", Program::FromContainer).unwrap();
    // Software checksums on the uplink, so that the tap sees final bytes.
    sh("ethtool", &["-K", "uplink0", "tx", "off"]);
    let pod = common::PodNs::new();
    pod.take("pod_a");
    pod.run(|| {
        sh("ip", &["link", "set", "pod_a", "up"]);
        sh("ip", &["addr", "add", "198.51.100.11/24", "dev", "pod_a"]);
        sh("ip", &["route", "add", "232.0.0.0/8", "dev", "pod_a"]);
    });
    let uplink = Tap::open("upstream0");
    let send = move |pod: &common::PodNs, len: usize| {
        pod.run(move || {
            let s = std::net::UdpSocket::bind((POD_A, 0))
                .unwrap_or_else(|e| panic!("binding the pod's socket: {e}"));
            s.set_multicast_ttl_v4(5).unwrap();
            s.send_to(&vec![0x5a; len], (GROUP, 5001))
                .unwrap_or_else(|e| panic!("sending {len} bytes from the pod: {e}"));
        })
    };
    for len in [1usize, 100, 333, 1316] {
        send(&pod, len);
        let got = uplink
            .recv_matching(Duration::from_secs(2), |p| {
                p.len() > 34 && View(p).daddr() == GROUP && View(p).saddr() == EGRESS_IP
            })
            .expect("emitted on the uplink");
        let v = View(&got);
        assert_eq!(v.ttl(), 4);
        assert!(v.ipv4_checksum_ok(), "{len}: IPv4 checksum");
        assert!(v.udp_checksum_ok(), "{len}: UDP checksum");
        assert_eq!(v.udp().len(), 8 + len);
    }
    assert_eq!(fx.counter(GROUP, Role::Origin).0, 4);
    assert_eq!(fx.counter(GROUP, Role::Gateway).0, 4);
});

// --- what a router would refuse ----------------------------------------------

/// Recompute the IPv4 header checksum of `f` after a test changed a field.
fn fix_ip_checksum(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = packet::checksum(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Frames a router would drop, each built from the valid `good`.
fn malformed_variants(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let tot_len = u16::from_be_bytes([good[16], good[17]]);
    let udp_len = u16::from_be_bytes([good[38], good[39]]);
    let with = |name, edit: &dyn Fn(&mut Vec<u8>), fix: bool| {
        let mut f = good.to_vec();
        edit(&mut f);
        if fix {
            fix_ip_checksum(&mut f);
        }
        (name, f)
    };
    vec![
        with("bad header checksum", &|f| f[24] ^= 0x01, false),
        with(
            "zero header checksum",
            &|f| f[24..26].copy_from_slice(&[0, 0]),
            false,
        ),
        with("version 6 in an IPv4 frame", &|f| f[14] = 0x65, true),
        with(
            "total length beyond the frame",
            &|f| f[16..18].copy_from_slice(&(tot_len + 1).to_be_bytes()),
            true,
        ),
        with(
            "total length shorter than the header",
            &|f| f[16..18].copy_from_slice(&19u16.to_be_bytes()),
            true,
        ),
        with(
            "UDP length shorter than the payload",
            &|f| f[38..40].copy_from_slice(&(udp_len - 1).to_be_bytes()),
            false,
        ),
        with(
            "UDP length longer than the payload",
            &|f| f[38..40].copy_from_slice(&(udp_len + 1).to_be_bytes()),
            false,
        ),
        with(
            "UDP length below its header",
            &|f| f[38..40].copy_from_slice(&7u16.to_be_bytes()),
            false,
        ),
        with(
            "no room for the UDP header",
            &|f| {
                f.truncate(14 + 20 + 4);
                f[16..18].copy_from_slice(&24u16.to_be_bytes());
            },
            true,
        ),
        with(
            "first fragment whose UDP length is below what it carries",
            &|f| {
                f[20] |= 0x20; // MF
                f[38..40].copy_from_slice(&(udp_len - 8).to_be_bytes());
            },
            true,
        ),
    ]
}

dp_test!(what_a_router_refuses_never_leaves, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    fx.policy(POD_B, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    let tunnelled = Frame::udp(POD_B, GROUP, b"router rules").bytes();
    let remote = Frame::udp(POD_A, GROUP, b"router rules").bytes();
    fx.set_tunnel(ID_B, REMOTE_GW);
    fx.maps
        .policy_insert(
            &PolicyKey {
                source: POD_B,
                destination: net("232.1.0.0/16"),
            },
            &PolicyValue {
                origin: Origin {
                    node: REMOTE_GW,
                    identity: ID_B,
                },
                ..common::policy_entry(
                    POD_B,
                    "232.1.0.0/16",
                    Gateway::Node(THIS_NODE),
                    fx.uplink,
                    POLICY_ID,
                    origin_of(POD_B),
                )
                .1
            },
        )
        .unwrap();
    // Positive controls: the valid frames leave on all three paths.
    assert_eq!(fx.run_origin(fx.lxc_a, &remote).0, TCX_REDIRECT);
    assert_eq!(fx.run_origin(fx.lxc_b, &tunnelled).0, TCX_REDIRECT);
    assert_eq!(fx.run_gateway(&tunnelled).0, TCX_REDIRECT);
    let variants = malformed_variants(&remote);
    for (what, f) in &variants {
        assert_eq!(
            fx.run_origin(fx.lxc_a, f).0,
            TCX_DROP,
            "to a remote gateway: {what}"
        );
    }
    for (what, f) in &malformed_variants(&tunnelled) {
        assert_eq!(
            fx.run_origin(fx.lxc_b, f).0,
            TCX_DROP,
            "local gateway: {what}"
        );
        assert_eq!(fx.run_gateway(f).0, TCX_DROP, "from the overlay: {what}");
    }
    let n = variants.len() as u64;
    assert_eq!(fx.drops(Role::Origin, DropReason::MALFORMED), 2 * n);
    assert_eq!(fx.drops(Role::Gateway, DropReason::MALFORMED), n);
    assert_eq!(fx.counter(GROUP, Role::Origin).0, 2, "only the controls");
    assert_eq!(fx.counter(GROUP, Role::Gateway).0, 2, "only the controls");
});

dp_test!(bytes_behind_the_total_length_never_leave, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    fx.policy(POD_B, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    let trailer = b"SMUGGLED-BYTES";
    // To a remote gateway: the copy is the datagram, without the trailer.
    let good = Frame::udp(POD_A, GROUP, b"datagram").bytes();
    let mut padded = good.clone();
    padded.extend_from_slice(trailer);
    let (v, out) = fx.run_origin(fx.lxc_a, &padded);
    assert_eq!((v, &out), (TCX_REDIRECT, &good));
    // On the gateway: emitted as the rewritten datagram, without it.
    let sent = Frame::udp(POD_B, GROUP, b"datagram");
    let mut padded = sent.bytes();
    padded.extend_from_slice(trailer);
    let (v, out) = fx.run_origin(fx.lxc_b, &padded);
    assert_eq!(v, TCX_REDIRECT);
    assert_eq!(out, sent.as_emitted(EGRESS_IP, fx.uplink_mac).bytes());
});

dp_test!(drop_events_keep_the_unearned_part_of_an_interval, |fx| {
    // One event a millisecond: a bucket last refilled 1.5 intervals ago
    // earns one token and keeps the half interval it has not yet earned.
    const INTERVAL_NS: u64 = 1_000_000;
    fx.policy(POD_A, "232.1.0.0/16", Gateway::NotFound);
    let f = Frame::udp(POD_A, GROUP, b"no gateway").bytes();
    let limit = fx.dp.paths().globals().join("mcast_egw_events_limit");
    let map = libbpf_rs::MapHandle::from_pinned_path(&limit).unwrap();
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; CLOCK_MONOTONIC is the
    // clock of bpf_ktime_get_ns().
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) },
        0
    );
    let now_ns = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
    let last = now_ns - INTERVAL_NS - INTERVAL_NS / 2;
    let state = mcast_events_limit {
        refilled_ns: last,
        tokens: 0,
        suppressed: 0,
    };
    let cpus = libbpf_rs::num_possible_cpus().unwrap();
    let per_cpu: Vec<Vec<u8>> = (0..cpus).map(|_| state.as_bytes().to_vec()).collect();
    map.update_percpu(0u32.as_bytes(), &per_cpu, MapFlags::ANY)
        .unwrap();
    assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_DROP);
    let after = map
        .lookup_percpu(0u32.as_bytes(), MapFlags::ANY)
        .unwrap()
        .unwrap();
    let moved: Vec<u64> = after
        .iter()
        .map(|b| mcast_events_limit::from_bytes(b).unwrap().refilled_ns)
        .filter(|&r| r != last)
        .collect();
    // The CPU that ran the program: its clock moved by exactly the one
    // interval it paid for, not to "now".
    assert_eq!(moved, vec![last + INTERVAL_NS]);
});

// --- counters ------------------------------------------------------------------

dp_test!(counters_exact_after_many_runs, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    fx.policy(POD_B, "232.0.0.0/8", Gateway::Node(THIS_NODE));
    fx.policy(POD_A, "232.9.0.0/16", Gateway::NotFound);
    let g2 = Ipv4Addr::new(232, 1, 2, 3);
    let a1 = Frame::udp(POD_A, GROUP, &[1u8; 100]).bytes();
    let a2 = Frame::udp(POD_A, g2, &[2u8; 1316]).bytes();
    let b1 = Frame::udp(POD_B, GROUP, &[3u8; 50]).bytes();
    let nogw = Frame::udp(POD_A, Ipv4Addr::new(232, 9, 0, 1), &[4u8; 10]).bytes();
    let (n1, n2, n3, n4) = (1000u32, 2500u32, 777u32, 333u32);
    assert_eq!(run(fx.container(), fx.lxc_a, &a1, n1).0, TCX_REDIRECT);
    assert_eq!(run(fx.container(), fx.lxc_a, &a2, n2).0, TCX_REDIRECT);
    // BPF_PROG_RUN's repeat re-runs the same, already rewritten packet: the
    // local-gateway path is run once per packet instead.
    for _ in 0..n3 {
        assert_eq!(run(fx.container(), fx.lxc_b, &b1, 1).0, TCX_REDIRECT);
    }
    assert_eq!(run(fx.container(), fx.lxc_a, &nogw, n4).0, TCX_DROP);

    let n = |x: u32| u64::from(x);
    let len = |f: &Vec<u8>| f.len() as u64;
    assert_eq!(
        fx.counter(GROUP, Role::Origin),
        (n(n1 + n3), n(n1) * len(&a1) + n(n3) * len(&b1))
    );
    assert_eq!(fx.counter(g2, Role::Origin), (n(n2), n(n2) * len(&a2)));
    assert_eq!(fx.counter(GROUP, Role::Gateway), (n(n3), n(n3) * len(&b1)));
    assert_eq!(fx.counter(g2, Role::Gateway), (0, 0));
    let d = fx
        .maps
        .drop_count(Role::Origin, DropReason::NO_GATEWAY)
        .unwrap();
    assert_eq!((d.packets, d.bytes), (n(n4), n(n4) * len(&nogw)));
    assert_eq!(fx.total_drops(), n(n4));
    assert_eq!(fx.maps.counters().unwrap().len(), 3);
});

// --- the UDP checksum's two representations of zero ----------------------------

/// The folded one's complement sum (RFC 1071) of the pseudo-header of
/// `saddr`, `daddr` and of `datagram` as it is, checksum field included.
fn udp_folded_sum(saddr: Ipv4Addr, daddr: Ipv4Addr, datagram: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&saddr.octets());
    pseudo.extend_from_slice(&daddr.octets());
    pseudo.extend_from_slice(&[0, packet::PROTO_UDP]);
    pseudo.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    packet::fold(packet::ones_complement_sum(
        datagram,
        packet::ones_complement_sum(&pseudo, 0),
    ))
}

/// The UDP checksum of `f` as computed, before RFC 768 maps a 0 to 0xffff.
fn raw_udp_checksum(f: &Frame) -> u16 {
    let mut d = f.udp_datagram();
    d[6..8].copy_from_slice(&[0, 0]);
    !udp_folded_sum(f.saddr, f.daddr, &d)
}

/// A payload whose last word makes `frame_of(payload)` a datagram whose
/// checksum computes to exactly 0x0000.
fn payload_summing_to_zero(text: &[u8], frame_of: impl Fn(&[u8]) -> Frame) -> Vec<u8> {
    let mut payload = text.to_vec();
    // The adjusting word on an even offset of the datagram (8-byte header).
    if payload.len() % 2 == 1 {
        payload.push(b' ');
    }
    payload.extend_from_slice(&[0, 0]);
    // With the word at 0 the checksum is c = !s; the word c then brings the
    // sum to s + !s = 0xffff, whose complement is 0.
    let word = raw_udp_checksum(&frame_of(&payload));
    let n = payload.len();
    payload[n - 2..].copy_from_slice(&word.to_be_bytes());
    payload
}

dp_test!(rewrite_udp_checksum_zero_and_ffff_corners, |fx| {
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    let emitted = |sent: &Frame| sent.as_emitted(EGRESS_IP, fx.uplink_mac);
    let field = |f: &Frame| u16::from_be_bytes(f.udp_datagram()[6..8].try_into().unwrap());

    // 1. An ordinary checksum goes in; the rewritten datagram's checksum
    //    computes to 0x0000, which must leave as 0xffff (0 means "none").
    let payload = payload_summing_to_zero(b"rewritten, this sums to zero", |p| {
        emitted(&Frame::udp(POD_A, GROUP, p))
    });
    let sent = Frame::udp(POD_A, GROUP, &payload);
    assert_eq!(
        raw_udp_checksum(&emitted(&sent)),
        0x0000,
        "the corner is reached: the rewritten checksum computes to zero"
    );
    assert!(
        ![0, 0xffff].contains(&field(&sent)),
        "an ordinary checksum goes in: {:#06x}",
        field(&sent)
    );
    // 2. The checksum field that goes in is 0xffff (the pod's checksum
    //    computed to zero); the rewritten one is ordinary.
    let payload = payload_summing_to_zero(b"as sent, this sums to zero", |p| {
        Frame::udp(POD_A, GROUP, p)
    });
    let sent_ffff = Frame::udp(POD_A, GROUP, &payload);
    assert_eq!(
        raw_udp_checksum(&sent_ffff),
        0,
        "the pod's computes to zero"
    );
    assert_eq!(field(&sent_ffff), 0xffff, "and is sent as 0xffff");
    let want = raw_udp_checksum(&emitted(&sent_ffff));
    assert!(
        ![0, 0xffff].contains(&want),
        "an ordinary one leaves: {want:#06x}"
    );

    for (sent, want_field) in [(&sent, 0xffff), (&sent_ffff, want)] {
        for path in ["gateway", "origin on the gateway node"] {
            let (v, out) = if path == "gateway" {
                fx.run_gateway(&sent.bytes())
            } else {
                fx.run_origin(fx.lxc_a, &sent.bytes())
            };
            assert_eq!(v, TCX_REDIRECT, "{path}");
            let view = View(&out);
            assert_eq!(
                view.udp_checksum_field(),
                want_field,
                "{path}: checksum field of {:#06x}'s datagram",
                field(sent)
            );
            // Valid by the receiver's rule: everything, the field included,
            // sums to all ones.
            assert_eq!(
                udp_folded_sum(view.saddr(), view.daddr(), view.udp()),
                0xffff,
                "{path}: the checksum verifies"
            );
            assert_emitted(&fx, sent, &out);
        }
    }
});
