//! The IPv6 datapath through BPF_PROG_RUN: the real programs (the same two
//! hooks as IPv4's), crafted IPv6 frames with extension-header chains and
//! fragments, every verdict, byte, checksum (recomputed here over the
//! pseudo-header) and counter checked, IPv4 alongside unaffected. Needs
//! root; each test has its own network namespace and BPF filesystem.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Deref;
use std::time::Duration;

use cilium_mcast_egress::bpf_intf::{mcast_drop_event6, mcast_in6_addr};
use cilium_mcast_egress::datapath::maps::{
    Config, DropEvent, DropReason, EgressIface, Endpoint, Family, Gateway, Origin, PolicyKey6,
    PolicyLens, PolicyValue6, Role,
};
use cilium_mcast_egress::datapath::{ChainPosition, Plain, Program};
use common::addr::*;
use common::dp::{run, Fx, POLICY_ID};
use common::forge;
use common::observer::{Observer, TunnelObserver};
use common::packet::{self, group_mac6, Ext, Frame, Frame6, View, View6};
use common::{sh, Tap, TCX_DROP, TCX_NEXT, TCX_REDIRECT};

/// Pods a and b's IPv6 addresses, the egress IPv6 and the groups, all in
/// documentation ranges (2001:db8::/32) and ff3e::/16 (SSM, global).
const POD_A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x11);
const POD_B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x12);
const EGRESS_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0, 0, 0, 0, 0x10);
const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 0x8000, 1);
const GROUP6_B: Ipv6Addr = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 1, 0x8000, 1);
/// A site-local-scope group no policy of the fixture covers.
const UNCOVERED6: Ipv6Addr = Ipv6Addr::new(0xff35, 0, 0, 0, 0, 0, 0, 0x99);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("IPv6 address")
}

/// Where the pods' copies come from, as in tests/datapath.rs: pod B has
/// its own identity, every other source pod A's; all on REMOTE_GW's node.
fn origin6_of(pod: Ipv6Addr) -> Origin {
    Origin {
        node: REMOTE_GW,
        identity: if pod == POD_B6 { ID_B } else { ID_A },
    }
}

/// The address of a map key or event field (four big-endian words).
fn addr6(a: &mcast_in6_addr) -> Ipv6Addr {
    let bytes: Vec<u8> = a.words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let bytes: [u8; 16] = bytes.try_into().expect("16 bytes");
    Ipv6Addr::from(bytes)
}

fn role_raw(role: Role) -> u32 {
    match role {
        Role::Origin => 0,
        Role::Gateway => 1,
    }
}

/// The datapath fixture of tests/datapath.rs, with pods a and b's IPv6
/// addresses in `mcast_egw_endpoints_v6` too (dual-stack pods).
struct Fx6(Fx);

impl Deref for Fx6 {
    type Target = Fx;
    fn deref(&self) -> &Fx {
        &self.0
    }
}

impl Fx6 {
    fn new(test: &str) -> Fx6 {
        let fx = Fx::new(test);
        for (pod, ifindex, identity) in [(POD_A6, fx.lxc_a, ID_A), (POD_B6, fx.lxc_b, ID_B)] {
            fx.maps
                .endpoints_v6
                .put(&pod, &Endpoint { ifindex, identity })
                .unwrap();
        }
        Fx6(fx)
    }

    /// An IPv6 policy entry as the controller writes it on THIS_NODE.
    fn policy6(&self, pod: Ipv6Addr, dest: &str, gateway: Gateway) {
        let here = gateway == Gateway::Node(THIS_NODE);
        self.policy6_value(
            pod,
            dest,
            PolicyValue6 {
                egress_ip: if here {
                    EGRESS_IP6
                } else {
                    Ipv6Addr::UNSPECIFIED
                },
                gateway,
                egress_ifindex: if here { self.uplink } else { 0 },
                policy_id: POLICY_ID,
                origin: origin6_of(pod),
            },
        );
    }

    fn policy6_value(&self, pod: Ipv6Addr, dest: &str, value: PolicyValue6) {
        let key = PolicyKey6 {
            source: pod,
            destination: dest.parse().expect("IPv6 CIDR"),
        };
        self.maps.policy_insert(&key, &value).unwrap();
    }

    fn counter6(&self, group: Ipv6Addr, role: Role) -> (u64, u64) {
        self.counter(group, role)
    }

    fn drop6(&self, role: Role, reason: DropReason) -> (u64, u64) {
        self.drop_of(Family::Ipv6, role, reason)
    }

    fn drops6(&self, role: Role, reason: DropReason) -> u64 {
        self.drop6(role, reason).0
    }

    fn total_drops6(&self) -> u64 {
        self.total_drops_of(Family::Ipv6)
    }

    fn total_counted6(&self) -> u64 {
        self.total_counted_of(Family::Ipv6)
    }

    /// Nothing counted or dropped, in either family.
    fn assert_nothing_counted(&self) {
        assert_eq!(self.total_counted6(), 0, "no IPv6 counter");
        assert_eq!(self.total_drops6(), 0, "no IPv6 drop");
        assert_eq!(self.total_counted(), 0, "no IPv4 counter");
        assert_eq!(self.total_drops(), 0, "no IPv4 drop");
    }
}

macro_rules! dp6_test {
    ($(#[$m:meta])* $name:ident, |$fx:ident| $body:block) => {
        netns_test!($(#[$m])* $name, Fx6::new, |$fx| $body);
    };
}

/// A frame passed on untouched, with nothing counted in either family.
fn assert_untouched6(fx: &Fx6, verdict: u32, frame: &[u8], out: &[u8]) {
    assert_eq!(verdict, TCX_NEXT, "verdict");
    assert_eq!(out, frame, "not one byte may change");
    fx.assert_nothing_counted();
}

/// Check a rewritten frame against the independently built expectation.
fn assert_emitted6(fx: &Fx6, sent: &Frame6, out: &[u8]) {
    let want = sent.as_emitted(EGRESS_IP6, fx.uplink_mac).bytes();
    let view = View6(out);
    assert_eq!(view.ethertype(), packet::ETH_P_IPV6);
    assert_eq!(
        view.saddr(),
        EGRESS_IP6,
        "source rewritten to the egress IPv6"
    );
    assert_eq!(
        view.hop_limit(),
        sent.hop_limit - 1,
        "hop limit decremented"
    );
    assert_eq!(view.dst_mac(), group_mac6(sent.daddr), "RFC 2464 group MAC");
    assert_eq!(view.src_mac(), fx.uplink_mac, "uplink MAC");
    let unfragmented = match &sent.frag {
        None => true,
        Some((_, s, e)) => *s == 0 && *e == 8 + sent.payload.len(),
    };
    if sent.proto == packet::PROTO_UDP && unfragmented {
        let l4 = sent.l4_off();
        assert_ne!(&out[l4 + 6..l4 + 8], &[0, 0], "never a zero UDP checksum");
        assert!(
            view.udp_checksum_ok(l4),
            "UDP checksum over the pseudo-header"
        );
    }
    assert_eq!(out, want.as_slice(), "every byte as a router would send it");
}

// --- what is not ours --------------------------------------------------------

dp6_test!(unicast_ipv6_passes_untouched, |fx| {
    fx.policy6(POD_A6, "ff00::/8", Gateway::Node(REMOTE_GW));
    let f = Frame6::udp(POD_A6, POD_B6, b"unicast").bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_untouched6(&fx, v, &f, &out);
    // Positive control: the same pod's multicast is ours.
    let m = Frame6::udp(POD_A6, GROUP6, b"multicast").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &m).0, TCX_REDIRECT);
});

dp6_test!(ipv4_is_unaffected_by_ipv6_entries, |fx| {
    // Both families for pod A, each through its own map.
    fx.policy(POD_A, "232.1.0.0/16", Gateway::Node(THIS_NODE));
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    let f4 = Frame::udp(POD_A, GROUP, b"IPv4").bytes();
    let f6 = Frame6::udp(POD_A6, GROUP6, b"IPv6");
    let (v, _) = fx.run_origin(fx.lxc_a, &f4);
    assert_eq!(v, TCX_REDIRECT);
    assert_eq!(fx.counter(GROUP, Role::Gateway), (1, f4.len() as u64));
    assert_eq!(fx.total_counted6(), 0, "an IPv4 packet counts as IPv4 only");
    let (v, out) = fx.run_origin(fx.lxc_a, &f6.bytes());
    assert_eq!(v, TCX_REDIRECT);
    assert_emitted6(&fx, &f6, &out);
    assert_eq!(
        fx.counter(GROUP, Role::Gateway).0,
        1,
        "IPv4 counter unchanged"
    );
    // An IPv6 policy never covers IPv4, nor an IPv4 one IPv6.
    fx.maps
        .policy_delete(&cilium_mcast_egress::datapath::maps::PolicyKey {
            source: POD_A,
            destination: "232.1.0.0/16".parse().unwrap(),
        })
        .unwrap();
    let (v, out) = fx.run_origin(fx.lxc_a, &f4);
    assert_eq!((v, &out), (TCX_NEXT, &f4));
    assert_eq!(fx.total_drops() + fx.total_drops6(), 0);
});

dp6_test!(multicast_without_policy_passes, |fx| {
    fx.policy6(POD_B6, "ff3e::/16", Gateway::Node(REMOTE_GW));
    fx.policy6(POD_A6, "ff35::/16", Gateway::Node(REMOTE_GW));
    let f = Frame6::udp(POD_A6, GROUP6, b"no policy for this").bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_untouched6(&fx, v, &f, &out);
    // Positive control: the pod's own policy applies to its groups.
    let covered = Frame6::udp(POD_A6, UNCOVERED6, b"covered").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &covered).0, TCX_REDIRECT);
});

dp6_test!(excluded_entry_passes_and_longest_prefix_wins, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(REMOTE_GW));
    fx.policy6(POD_A6, "ff3e::8000:0/112", Gateway::Excluded);
    fx.policy6(POD_A6, "ff3e::8000:1/128", Gateway::Node(REMOTE_GW));
    let verdict = |g: &str| {
        let f = Frame6::udp(POD_A6, v6(g), b"which prefix").bytes();
        fx.run_origin(fx.lxc_a, &f)
    };
    let f = Frame6::udp(POD_A6, v6("ff3e::8000:2"), b"which prefix").bytes();
    let (v, out) = verdict("ff3e::8000:2");
    assert_untouched6(&fx, v, &f, &out);
    assert_eq!(
        verdict("ff3e::8000:1").0,
        TCX_REDIRECT,
        "/128 inside the /112"
    );
    assert_eq!(
        verdict("ff3e::9000:1").0,
        TCX_REDIRECT,
        "/16 outside the /112"
    );
});

// The lookup probes the lengths of the group's bucket (bits 100 to 111)
// longest first: nested prefixes of pod A, allowed, excluded and without a
// gateway by turns, over every bucket (/8, /96), 256 of them (/104), one
// (/112, /120, /128); and a longer prefix of pod B's that must not shadow
// pod A's shorter one.
dp6_test!(longest_prefix_wins_across_lengths_and_buckets, |fx| {
    fx.policy6(POD_A6, "ff00::/8", Gateway::Node(REMOTE_GW));
    fx.policy6(POD_A6, "ff3e::/96", Gateway::Excluded);
    fx.policy6(POD_A6, "ff3e::ab00:0/104", Gateway::NotFound);
    fx.policy6(POD_A6, "ff3e::abcd:0/112", Gateway::Node(REMOTE_GW));
    fx.policy6(POD_A6, "ff3e::abcd:ff00/120", Gateway::Excluded);
    fx.policy6(POD_A6, "ff3e::abcd:ff01/128", Gateway::Node(REMOTE_GW));
    fx.policy6(POD_B6, "ff3e::abcd:100/120", Gateway::Excluded);
    let probed = |g: &str| fx.maps.policy_lens_for(v6(g)).unwrap().lens();
    assert_eq!(
        probed("ff3e::abcd:1"),
        vec![128, 120, 112, 104, 96, 8],
        "every length that can match is probed, longest first"
    );
    assert_eq!(
        probed("ff3e::ab00:1"),
        vec![104, 96, 8],
        "the /104's buckets"
    );
    assert_eq!(probed("ff3e::1:1"), vec![96, 8], "and only those");
    let verdict = |g: &str| {
        let f = Frame6::udp(POD_A6, v6(g), b"which prefix").bytes();
        fx.run_origin(fx.lxc_a, &f).0
    };
    let expect = [
        ("ff0e::1", TCX_REDIRECT, "/8"),
        ("ff3e::1:1", TCX_NEXT, "/96 excluded"),
        ("ff3e::ab00:1", TCX_DROP, "/104, no gateway"),
        ("ff3e::abcd:1", TCX_REDIRECT, "/112"),
        (
            "ff3e::abcd:101",
            TCX_REDIRECT,
            "/112: pod B's /120 is not pod A's",
        ),
        ("ff3e::abcd:ff02", TCX_NEXT, "/120 excluded"),
        ("ff3e::abcd:ff01", TCX_REDIRECT, "/128"),
        (
            "ff3e::bbcd:1",
            TCX_NEXT,
            "/96: the /112's bucket, not its prefix",
        ),
    ];
    for (g, want, what) in expect {
        assert_eq!(verdict(g), want, "{g}: {what}");
    }
    assert_eq!(fx.drops6(Role::Origin, DropReason::NO_GATEWAY), 1);

    // A length with no entry left is a probe too many, never a wrong
    // answer; and once it is out of the set, nothing else changes.
    let key = |dest: &str| PolicyKey6 {
        source: POD_A6,
        destination: dest.parse().unwrap(),
    };
    assert!(fx.maps.policy_delete(&key("ff3e::abcd:ff01/128")).unwrap());
    assert_eq!(
        verdict("ff3e::abcd:ff01"),
        TCX_NEXT,
        "the /120 exclusion now"
    );
    let rest = fx.maps.policy_v6.entries().unwrap();
    fx.maps
        .policy_lens_retain(&PolicyLens::of(rest.keys()))
        .unwrap();
    assert_eq!(probed("ff3e::abcd:1"), vec![120, 112, 104, 96, 8]);
    for (g, want, what) in &expect[..6] {
        assert_eq!(verdict(g), *want, "{g}: {what}, after the set shrank");
    }
    assert_eq!(verdict("ff3e::abcd:ff01"), TCX_NEXT);
});

// A longer length added to a bucket reaches the very next packet, and so
// does its removal.
dp6_test!(ipv6_policy_changes_reach_the_next_packet, |fx| {
    fx.policy6(POD_A6, "ff3e::abcd:0/112", Gateway::Node(REMOTE_GW));
    fx.policy6(POD_A6, "ff3e::abcd:ff00/120", Gateway::Excluded);
    let verdict = |g: &str| {
        let f = Frame6::udp(POD_A6, v6(g), b"changes").bytes();
        fx.run_origin(fx.lxc_a, &f).0
    };
    assert_eq!(verdict("ff3e::abcd:ff01"), TCX_NEXT, "excluded /120");
    fx.policy6(POD_A6, "ff3e::abcd:ff00/124", Gateway::Node(REMOTE_GW));
    assert_eq!(
        fx.maps
            .policy_lens_for(v6("ff3e::abcd:ff01"))
            .unwrap()
            .lens(),
        vec![124, 120, 112]
    );
    assert_eq!(verdict("ff3e::abcd:ff01"), TCX_REDIRECT, "the /124 added");
    assert_eq!(verdict("ff3e::abcd:ff11"), TCX_NEXT, "outside the /124");
    let key = PolicyKey6 {
        source: POD_A6,
        destination: "ff3e::abcd:ff00/124".parse().unwrap(),
    };
    assert!(fx.maps.policy_delete(&key).unwrap());
    assert_eq!(verdict("ff3e::abcd:ff01"), TCX_NEXT, "the /124 removed");
    let rest = fx.maps.policy_v6.entries().unwrap();
    assert_eq!(
        fx.maps
            .policy_lens_retain(&PolicyLens::of(rest.keys()))
            .unwrap(),
        1,
        "the /124's bucket"
    );
    assert_eq!(verdict("ff3e::abcd:ff01"), TCX_NEXT);
    assert_eq!(verdict("ff3e::abcd:1"), TCX_REDIRECT);
});

// A group whose bucket has no lengths is no policy's: nothing is probed and
// it passes untouched, whatever other buckets hold.
dp6_test!(a_group_in_a_bucket_without_lengths_passes, |fx| {
    fx.policy6(POD_A6, "ff3e::abcd:0/112", Gateway::Node(REMOTE_GW));
    fx.policy6(POD_A6, "ff3e::ab00:0/104", Gateway::Node(REMOTE_GW));
    let group = v6("ff3e::1:1");
    assert!(fx.maps.policy_lens_for(group).unwrap().is_empty());
    let f = Frame6::udp(POD_A6, group, b"no lengths here").bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_untouched6(&fx, v, &f, &out);
    // Positive control: the same pod's group in a bucket with lengths.
    let covered = Frame6::udp(POD_A6, v6("ff3e::abcd:1"), b"covered").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &covered).0, TCX_REDIRECT);
});

dp6_test!(no_gateway_drops_and_counts, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::NotFound);
    let f = Frame6::udp(POD_A6, GROUP6, b"nowhere to go").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_DROP);
    assert_eq!(
        fx.drop6(Role::Origin, DropReason::NO_GATEWAY),
        (1, f.len() as u64)
    );
    assert_eq!(fx.total_drops6(), 1);
    assert_eq!(fx.total_drops(), 0, "not an IPv4 drop");
    assert_eq!(fx.total_counted6(), 0);
});

/// An MLD message of `mld_type` to `group` behind a hop-by-hop Router Alert.
fn mld(group: Ipv6Addr, mld_type: u8) -> Vec<u8> {
    let mut body = vec![mld_type, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&group.octets());
    Frame6::udp(POD_A6, group, &body)
        .proto(packet::PROTO_ICMPV6)
        .ext(Ext::hop_by_hop())
        .hop_limit(1)
        .bytes()
}

dp6_test!(never_egress_set_passes_under_catch_all_policy, |fx| {
    fx.policy6(POD_A6, "ff00::/8", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    // Scopes 0, 1 and 2 with and without flags: reserved, interface-local,
    // link-local (all-nodes, all-MLDv2-routers, mDNS, a T-flag ff12::).
    let mut never: Vec<(String, Vec<u8>)> = [
        "ff02::1",
        "ff02::16",
        "ff02::fb",
        "ff12::1:3",
        "ff01::1",
        "ff11::8000:1",
        "ff00::1",
        "ff30::8000:1",
        "ff32::8000:1",
    ]
    .iter()
    .map(|g| {
        (
            g.to_string(),
            Frame6::udp(POD_A6, v6(g), b"link local").bytes(),
        )
    })
    .collect();
    // MLD to a covered, routable group (MLDv1 reports go to the group).
    for t in [130u8, 131, 132, 143] {
        never.push((format!("MLD type {t}"), mld(GROUP6, t)));
    }
    // PIM to a covered group.
    never.push((
        "PIM".into(),
        Frame6::udp(POD_A6, GROUP6, &[0x20, 0, 0, 0])
            .proto(packet::PROTO_PIM)
            .bytes(),
    ));
    for (what, f) in &never {
        let (v, out) = fx.run_origin(fx.lxc_a, f);
        assert_eq!((v, &out), (TCX_NEXT, f), "origin: {what}");
        let (v, out) = fx.run_gateway(f);
        assert_eq!((v, &out), (TCX_NEXT, f), "gateway: {what}");
    }
    fx.assert_nothing_counted();
    // Positive controls: UDP to the same covered group, and ICMPv6 that is
    // not MLD (an echo request), which is ours and refused as such.
    let udp = Frame6::udp(POD_A6, GROUP6, b"routable").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &udp).0, TCX_REDIRECT);
    assert_eq!(fx.run_gateway(&udp).0, TCX_REDIRECT);
    let echo = mld(GROUP6, 128);
    assert_eq!(fx.run_origin(fx.lxc_a, &echo).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Origin, DropReason::UNSUPPORTED_PROTOCOL), 1);
    // A scope-3 group (realm-local, ff33::) is routable: ours too.
    let realm = Frame6::udp(POD_A6, v6("ff33::8000:1"), b"realm").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &realm).0, TCX_REDIRECT);
});

// --- origin ----------------------------------------------------------------

dp6_test!(origin_remote_gateway_redirects_unchanged, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(REMOTE_GW));
    let f = Frame6::udp(POD_A6, GROUP6, b"to the gateway").bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_REDIRECT);
    assert_eq!(out, f, "the origin sends the pod's packet as it is");
    assert_eq!(fx.counter6(GROUP6, Role::Origin), (1, f.len() as u64));
    assert_eq!(fx.counter6(GROUP6, Role::Gateway), (0, 0));
    assert_eq!(fx.total_drops6(), 0);
    assert_eq!(fx.total_counted(), 0, "nothing counted as IPv4");
});

dp6_test!(origin_spoofed_source_drops, |fx| {
    fx.policy6(POD_B6, "ff3e::/16", Gateway::Node(REMOTE_GW));
    // Pod A (behind lxc_a) sends with pod B's address.
    let f = Frame6::udp(POD_B6, GROUP6, b"not my address").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Origin, DropReason::SPOOFED_SOURCE), 1);
    // Positive control: pod B itself, behind lxc_b.
    assert_eq!(fx.run_origin(fx.lxc_b, &f).0, TCX_REDIRECT);
    assert_eq!(fx.counter6(GROUP6, Role::Origin).0, 1, "only the control");
});

dp6_test!(origin_unknown_source_drops, |fx| {
    let stranger = v6("2001:db8:100::99");
    fx.policy6(stranger, "ff3e::/16", Gateway::Node(REMOTE_GW));
    let f = Frame6::udp(stranger, GROUP6, b"who am i").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Origin, DropReason::UNKNOWN_SOURCE), 1);
    assert_eq!(fx.total_counted6(), 0);
});

dp6_test!(origin_entry_of_another_identity_does_not_apply, |fx| {
    for gateway in [Gateway::Node(THIS_NODE), Gateway::Node(REMOTE_GW)] {
        fx.policy6_value(
            POD_A6,
            "ff3e::/16",
            PolicyValue6 {
                egress_ip: EGRESS_IP6,
                gateway,
                egress_ifindex: fx.uplink,
                policy_id: POLICY_ID,
                origin: origin6_of(POD_B6),
            },
        );
        let f = Frame6::udp(POD_A6, GROUP6, b"stale entry").bytes();
        assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_DROP, "{gateway:?}");
    }
    assert_eq!(fx.drops6(Role::Origin, DropReason::ORIGIN_MISMATCH), 2);
    assert_eq!(fx.total_counted6(), 0);
});

dp6_test!(origin_without_tunnel_device_drops, |fx| {
    fx.maps
        .config_set(&Config {
            node_ip: THIS_NODE,
            tunnel_ifindex: 0,
        })
        .unwrap();
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(REMOTE_GW));
    let f = Frame6::udp(POD_A6, GROUP6, b"no tunnel yet").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Origin, DropReason::NO_TUNNEL), 1);
});

dp6_test!(non_udp_drops_at_origin_and_gateway, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(REMOTE_GW));
    fx.policy6(POD_B6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_B, REMOTE_GW);
    for (pod, lxc) in [(POD_A6, fx.lxc_a), (POD_B6, fx.lxc_b)] {
        let tcp = Frame6::udp(pod, GROUP6, &[0u8; 20])
            .proto(packet::PROTO_TCP)
            .bytes();
        assert_eq!(fx.run_origin(lxc, &tcp).0, TCX_DROP);
        // 59, "no next header", is an upper layer too, and not UDP.
        let none = Frame6::udp(pod, GROUP6, &[])
            .proto(packet::NEXTHDR_NONE)
            .ext(Ext::dest_opts(1))
            .bytes();
        assert_eq!(fx.run_origin(lxc, &none).0, TCX_DROP);
    }
    let tcp = Frame6::udp(POD_B6, GROUP6, &[0u8; 20])
        .proto(packet::PROTO_TCP)
        .bytes();
    assert_eq!(fx.run_gateway(&tcp).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Origin, DropReason::UNSUPPORTED_PROTOCOL), 4);
    assert_eq!(
        fx.drops6(Role::Gateway, DropReason::UNSUPPORTED_PROTOCOL),
        1
    );
    assert_eq!(fx.total_counted6(), 0);
});

dp6_test!(origin_local_gateway_rewrites_and_redirects, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    let sent = Frame6::udp(POD_A6, GROUP6, b"SSM from a pod on the gateway node");
    let f = sent.bytes();
    let (v, out) = fx.run_origin(fx.lxc_a, &f);
    assert_eq!(v, TCX_REDIRECT);
    assert_emitted6(&fx, &sent, &out);
    assert_eq!(fx.counter6(GROUP6, Role::Origin), (1, f.len() as u64));
    assert_eq!(fx.counter6(GROUP6, Role::Gateway), (1, f.len() as u64));
    assert_eq!(fx.total_drops6(), 0);
});

// --- gateway -------------------------------------------------------------------

dp6_test!(gateway_rewrites_and_redirects, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    let sent = Frame6::udp(POD_A6, GROUP6, b"SSM through the tunnel");
    let f = sent.bytes();
    let (v, out) = fx.run_gateway(&f);
    assert_eq!(v, TCX_REDIRECT);
    assert_emitted6(&fx, &sent, &out);
    assert_eq!(fx.counter6(GROUP6, Role::Gateway), (1, f.len() as u64));
    assert_eq!(fx.counter6(GROUP6, Role::Origin), (0, 0));
});

dp6_test!(rewrite_udp_checksum_many_payloads, |fx| {
    // Sources, groups, payloads and hop limits chosen to walk the checksum
    // through carries and the 0x0000/0xffff corner.
    fx.set_tunnel(ID_A, REMOTE_GW);
    for (i, src) in [POD_A6, v6("2001:db8:100:ffff:ffff:ffff:ffff:ffff")]
        .into_iter()
        .enumerate()
    {
        fx.maps
            .endpoints_v6
            .put(
                &src,
                &Endpoint {
                    ifindex: fx.lxc_a,
                    identity: ID_A,
                },
            )
            .unwrap();
        fx.policy6(src, "ff3e::/16", Gateway::Node(THIS_NODE));
        for n in 0..64u16 {
            let payload: Vec<u8> = (0..(n * 7 + i as u16))
                .map(|b| (b as u8).wrapping_mul(31).wrapping_add(n as u8))
                .collect();
            let group = Ipv6Addr::new(0xff3e, 0, 0, 0, 0, n, 0xffff - n, n * 3);
            let sent = Frame6::udp(src, group, &payload).hop_limit(2 + (n % 250) as u8);
            let (v, out) = fx.run_gateway(&sent.bytes());
            assert_eq!(v, TCX_REDIRECT);
            assert_emitted6(&fx, &sent, &out);
        }
    }
});

dp6_test!(gateway_checks_what_it_is_sent, |fx| {
    // The gateway serves ff3e::/16 for pod A, except ff3e::8000:0/112.
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.policy6(POD_A6, "ff3e::8000:0/112", Gateway::Excluded);
    let covered = Frame6::udp(POD_A6, GROUP6_B, b"covered").bytes();
    let excluded = Frame6::udp(POD_A6, GROUP6, b"excluded").bytes();
    let outside = Frame6::udp(POD_A6, UNCOVERED6, b"outside").bytes();
    let stranger = Frame6::udp(v6("2001:db8:100::77"), GROUP6_B, b"no policy").bytes();

    // Without a tunnel key, or with Cilium's WORLD VNI: Cilium's, untouched.
    for f in [&covered, &excluded, &stranger] {
        let (v, out) = fx.run_gateway(f);
        assert_eq!((v, &out), (TCX_NEXT, f), "no tunnel key");
    }
    fx.set_tunnel(2, REMOTE_GW);
    for f in [&covered, &excluded, &stranger] {
        let (v, out) = fx.run_gateway(f);
        assert_eq!((v, &out), (TCX_NEXT, f), "VNI 2");
    }
    fx.assert_nothing_counted();

    // Positive control: pod A's copy from its node with its identity.
    fx.set_tunnel(ID_A, REMOTE_GW);
    assert_eq!(fx.run_gateway(&covered).0, TCX_REDIRECT);
    // Excluded, outside the policy, and a pod with no policy at all.
    assert_eq!(fx.run_gateway(&excluded).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Gateway, DropReason::EXCLUDED), 1);
    assert_eq!(fx.run_gateway(&outside).0, TCX_DROP);
    assert_eq!(fx.run_gateway(&stranger).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Gateway, DropReason::NO_POLICY), 2);
    // From outside the cluster.
    fx.set_tunnel(ID_A, STRANGER);
    assert_eq!(fx.run_gateway(&covered).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Gateway, DropReason::UNKNOWN_PEER), 1);
    // Another node of the cluster, or pod B's identity, or none.
    for (vni, peer) in [(ID_A, OTHER_NODE), (ID_B, REMOTE_GW), (0, REMOTE_GW)] {
        fx.set_tunnel(vni, peer);
        assert_eq!(fx.run_gateway(&covered).0, TCX_DROP, "{vni} from {peer}");
    }
    assert_eq!(fx.drops6(Role::Gateway, DropReason::ORIGIN_MISMATCH), 3);
    assert_eq!(
        fx.counter6(GROUP6_B, Role::Gateway).0,
        1,
        "only the control"
    );
    assert_eq!(fx.total_drops(), 0, "no IPv4 drop");
});

dp6_test!(gateway_not_the_gateway_and_no_egress_drop, |fx| {
    fx.set_tunnel(ID_A, REMOTE_GW);
    fx.policy6(POD_A6, "ff3e:0:0:1::/64", Gateway::Node(OTHER_NODE));
    fx.policy6(POD_A6, "ff3e:0:0:2::/64", Gateway::NotFound);
    let val = |ip: Ipv6Addr, ifindex: u32| PolicyValue6 {
        egress_ip: ip,
        gateway: Gateway::Node(THIS_NODE),
        egress_ifindex: ifindex,
        policy_id: POLICY_ID,
        origin: origin6_of(POD_A6),
    };
    fx.policy6_value(
        POD_A6,
        "ff3e:0:0:3::/64",
        val(Ipv6Addr::UNSPECIFIED, fx.uplink),
    );
    fx.policy6_value(POD_A6, "ff3e:0:0:4::/64", val(EGRESS_IP6, 0));
    // An uplink the egress-interface map does not know.
    fx.policy6_value(POD_A6, "ff3e:0:0:5::/64", val(EGRESS_IP6, fx.lxc_b));
    fx.policy6(POD_A6, "ff3e:0:0:6::/64", Gateway::Node(THIS_NODE));
    let run = |n: u16| {
        let g = Ipv6Addr::new(0xff3e, 0, 0, n, 0, 0, 0x8000, 1);
        fx.run_gateway(&Frame6::udp(POD_A6, g, b"x").bytes()).0
    };
    assert_eq!(run(6), TCX_REDIRECT, "positive control");
    for n in 1..=5 {
        assert_eq!(run(n), TCX_DROP, "ff3e:0:0:{n}::");
    }
    assert_eq!(fx.drops6(Role::Gateway, DropReason::NOT_GATEWAY), 2);
    assert_eq!(fx.drops6(Role::Gateway, DropReason::NO_EGRESS_IP), 2);
    assert_eq!(fx.drops6(Role::Gateway, DropReason::NO_EGRESS_IFACE), 1);
    // Without a node IP this node is nobody's gateway.
    fx.maps
        .config_set(&Config {
            node_ip: Ipv4Addr::UNSPECIFIED,
            tunnel_ifindex: fx.tunnel,
        })
        .unwrap();
    assert_eq!(run(6), TCX_DROP);
    assert_eq!(fx.drops6(Role::Gateway, DropReason::NOT_GATEWAY), 3);
});

dp6_test!(a_vanished_uplink_is_a_failed_redirect, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    let f = Frame6::udp(POD_A6, GROUP6, b"to an uplink").bytes();
    assert_eq!(fx.run_gateway(&f).0, TCX_REDIRECT, "positive control");
    fx.maps
        .egress_iface_insert(
            999_999,
            &EgressIface {
                mac: [2, 0, 0, 0, 0, 9],
            },
        )
        .unwrap();
    fx.policy6_value(
        POD_A6,
        "ff3e::/16",
        PolicyValue6 {
            egress_ip: EGRESS_IP6,
            gateway: Gateway::Node(THIS_NODE),
            egress_ifindex: 999_999,
            policy_id: POLICY_ID,
            origin: origin6_of(POD_A6),
        },
    );
    assert_eq!(fx.run_gateway(&f).0, TCX_DROP);
    assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Gateway, DropReason::REDIRECT), 2);
    assert_eq!(fx.counter6(GROUP6, Role::Gateway).0, 1, "only the control");
});

// --- hop limit, MTU, MAC -------------------------------------------------------

dp6_test!(hop_limit_one_is_dropped_two_leaves_with_one, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    for hop in [0u8, 1] {
        let f = Frame6::udp(POD_A6, GROUP6, b"hop").hop_limit(hop).bytes();
        assert_eq!(fx.run_gateway(&f).0, TCX_DROP, "gateway, hop limit {hop}");
        assert_eq!(fx.run_origin(fx.lxc_a, &f).0, TCX_DROP, "origin, {hop}");
    }
    assert_eq!(fx.drops6(Role::Gateway, DropReason::TTL_EXCEEDED), 4);
    assert_eq!(fx.counter6(GROUP6, Role::Gateway), (0, 0));
    let sent = Frame6::udp(POD_A6, GROUP6, b"hop").hop_limit(2);
    for out in [
        fx.run_gateway(&sent.bytes()),
        fx.run_origin(fx.lxc_a, &sent.bytes()),
    ] {
        assert_eq!(out.0, TCX_REDIRECT);
        assert_eq!(View6(&out.1).hop_limit(), 1);
        assert_emitted6(&fx, &sent, &out.1);
    }
});

dp6_test!(frame_over_the_uplink_mtu_is_dropped_and_counted, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    sh("ip", &["link", "set", "uplink0", "mtu", "1000"]);
    let big = Frame6::udp(POD_A6, GROUP6, &[7u8; 1200]).bytes();
    assert_eq!(fx.run_gateway(&big).0, TCX_DROP);
    assert_eq!(fx.run_origin(fx.lxc_a, &big).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Gateway, DropReason::MTU_EXCEEDED), 2);
    // Up to the MTU (1000 bytes of IPv6: header, UDP, 952) it leaves.
    let fits = Frame6::udp(POD_A6, GROUP6, &[7u8; 1000 - 48]).bytes();
    assert_eq!(fx.run_gateway(&fits).0, TCX_REDIRECT);
    let over = Frame6::udp(POD_A6, GROUP6, &[7u8; 1000 - 47]).bytes();
    assert_eq!(fx.run_gateway(&over).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Gateway, DropReason::MTU_EXCEEDED), 3);
});

dp6_test!(group_mac_is_33_33_and_the_low_32_bits, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    // RFC 2464 section 7: the last four octets of the address. ff3e::8000:1
    // and ff3e::1:8000:1 share them (8000:0001), so they share a MAC;
    // 33:33:00:00:80:01 and 33:33:00:01:80:01 are ff3e::8001's and
    // ff3e::1:8001's.
    for (group, mac) in [
        (GROUP6, [0x33, 0x33, 0x80, 0x00, 0x00, 0x01]),
        (GROUP6_B, [0x33, 0x33, 0x80, 0x00, 0x00, 0x01]),
        (v6("ff3e::8001"), [0x33, 0x33, 0x00, 0x00, 0x80, 0x01]),
        (v6("ff3e::1:8001"), [0x33, 0x33, 0x00, 0x01, 0x80, 0x01]),
        (
            v6("ff3e:1:2:3:4:5:fedc:ba98"),
            [0x33, 0x33, 0xfe, 0xdc, 0xba, 0x98],
        ),
    ] {
        // A pod's frame is ours only when sent to its group's own MAC, the
        // one worked out here, on the origin and again on the gateway: the
        // datapath's mapping must be this one to let it through.
        let mut sent = Frame6::udp(POD_A6, group, b"mac");
        sent.dst_mac = packet::HOST_MAC;
        assert_eq!(fx.run_gateway(&sent.bytes()).0, TCX_DROP, "{group}");
        assert_eq!(
            fx.run_origin(fx.lxc_a, &sent.bytes()).0,
            TCX_DROP,
            "{group}"
        );
        sent.dst_mac = mac;
        let (v, out) = fx.run_gateway(&sent.bytes());
        assert_eq!((v, View6(&out).dst_mac()), (TCX_REDIRECT, mac), "{group}");
        let (v, out) = fx.run_origin(fx.lxc_a, &sent.bytes());
        assert_eq!((v, View6(&out).dst_mac()), (TCX_REDIRECT, mac), "{group}");
    }
    assert_eq!(fx.drops6(Role::Origin, DropReason::DST_MAC_MISMATCH), 5);
    assert_eq!(fx.drops6(Role::Gateway, DropReason::DST_MAC_MISMATCH), 5);
});

// --- extension headers and fragments -------------------------------------------

dp6_test!(extension_header_chains_leave_rewritten, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    let chains: Vec<(&str, Vec<Ext>)> = vec![
        ("hop-by-hop", vec![Ext::hop_by_hop()]),
        ("dest options", vec![Ext::dest_opts(3)]),
        (
            "hop-by-hop, dest options, routing (no segments left)",
            vec![Ext::hop_by_hop(), Ext::dest_opts(1), Ext::routing(0)],
        ),
        (
            "hop-by-hop, dest options, routing, dest options",
            vec![
                Ext::hop_by_hop(),
                Ext::dest_opts(2),
                Ext::routing(0),
                Ext::dest_opts(1),
            ],
        ),
        (
            "eight headers, the most allowed",
            std::iter::once(Ext::hop_by_hop())
                .chain((0..7).map(|_| Ext::dest_opts(1)))
                .collect(),
        ),
    ];
    for (what, chain) in &chains {
        let mut sent = Frame6::udp(POD_A6, GROUP6, b"behind extension headers");
        sent.ext = chain.clone();
        let (v, out) = fx.run_gateway(&sent.bytes());
        assert_eq!(v, TCX_REDIRECT, "gateway: {what}");
        assert_emitted6(&fx, &sent, &out);
        let (v, out) = fx.run_origin(fx.lxc_a, &sent.bytes());
        assert_eq!(v, TCX_REDIRECT, "origin: {what}");
        assert_emitted6(&fx, &sent, &out);
        // With a fragment header too (atomic: the whole datagram), where
        // that keeps the chain within eight headers.
        if chain.len() == 8 {
            continue;
        }
        let atomic = sent.clone().atomic_fragment();
        let (v, out) = fx.run_gateway(&atomic.bytes());
        assert_eq!(v, TCX_REDIRECT, "gateway, atomic fragment: {what}");
        assert_emitted6(&fx, &atomic, &out);
    }
    assert_eq!(fx.total_drops6(), 0);
});

dp6_test!(extension_chains_a_router_refuses, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.policy6(POD_B6, "ff3e::/16", Gateway::Node(REMOTE_GW));
    fx.set_tunnel(ID_A, REMOTE_GW);
    let past_payload = Ext {
        kind: packet::NEXTHDR_DEST,
        body: vec![5, 0x01, 0x02, 0, 0, 0, 0],
    };
    let refused: Vec<(&str, Vec<Ext>)> = vec![
        (
            "nine headers",
            std::iter::once(Ext::hop_by_hop())
                .chain((0..8).map(|_| Ext::dest_opts(1)))
                .collect(),
        ),
        (
            "hop-by-hop not first",
            vec![Ext::dest_opts(1), Ext::hop_by_hop()],
        ),
        ("routing with segments left", vec![Ext::routing(1)]),
        ("a header running past the payload", vec![past_payload]),
    ];
    let mut n = 0;
    for (what, chain) in &refused {
        for pod in [POD_A6, POD_B6] {
            let mut f = Frame6::udp(pod, GROUP6, b"bad chain");
            f.ext = chain.clone();
            let f = f.bytes();
            let lxc = if pod == POD_A6 { fx.lxc_a } else { fx.lxc_b };
            assert_eq!(fx.run_origin(lxc, &f).0, TCX_DROP, "origin: {what}");
        }
        let mut f = Frame6::udp(POD_A6, GROUP6, b"bad chain");
        f.ext = chain.clone();
        assert_eq!(fx.run_gateway(&f.bytes()).0, TCX_DROP, "gateway: {what}");
        n += 1;
        // Not covered by any policy: Cilium's, untouched.
        let mut f = Frame6::udp(POD_A6, UNCOVERED6, b"bad chain");
        f.ext = chain.clone();
        let f = f.bytes();
        let (v, out) = fx.run_origin(fx.lxc_a, &f);
        assert_eq!((v, &out), (TCX_NEXT, &f), "uncovered: {what}");
    }
    assert_eq!(fx.drops6(Role::Origin, DropReason::MALFORMED), 2 * n);
    assert_eq!(fx.drops6(Role::Gateway, DropReason::MALFORMED), n);
    // An MLD report behind a chain that cannot be walked is not exempt:
    // covered, it is refused as malformed, never emitted.
    let mut body = vec![143u8, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&GROUP6.octets());
    let mut f = Frame6::udp(POD_A6, GROUP6, &body).proto(packet::PROTO_ICMPV6);
    f.ext = vec![Ext::dest_opts(1), Ext::hop_by_hop()];
    assert_eq!(fx.run_origin(fx.lxc_a, &f.bytes()).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Origin, DropReason::MALFORMED), 2 * n + 1);
    assert_eq!(fx.total_counted6(), 0);
});

dp6_test!(first_later_and_atomic_fragments, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_A, REMOTE_GW);
    let payload: Vec<u8> = (0..2000u32).map(|i| (i * 13 % 251) as u8).collect();
    let datagram = Frame6::udp(POD_A6, GROUP6, &payload).ext(Ext::hop_by_hop());
    // First fragment: UDP header and the first 992 bytes; its checksum
    // covers the whole datagram, so the expectation (the builder's, from
    // scratch with the egress IP) is the datagram's checksum.
    let first = datagram.clone().fragment(0, 1000);
    let (v, out) = fx.run_gateway(&first.bytes());
    assert_eq!(v, TCX_REDIRECT);
    assert_emitted6(&fx, &first, &out);
    let whole = datagram
        .as_emitted(EGRESS_IP6, fx.uplink_mac)
        .udp_datagram();
    let l4 = first.l4_off();
    assert_eq!(
        &out[l4 + 6..l4 + 8],
        &whole[6..8],
        "the datagram's checksum"
    );

    // A later fragment: only source and hop limit change; the bytes where
    // a UDP header would be stay as they are.
    let later = datagram.clone().fragment(1000, 2000);
    let lf = later.bytes();
    let (v, out) = fx.run_gateway(&lf);
    assert_eq!(v, TCX_REDIRECT);
    assert_emitted6(&fx, &later, &out);
    assert_eq!(
        &out[l4..],
        &lf[l4..],
        "payload of a later fragment untouched"
    );
    // The last one (no M), from the origin on the gateway node.
    let last = datagram.clone().fragment(2000, 2008);
    let (v, out) = fx.run_origin(fx.lxc_a, &last.bytes());
    assert_eq!(v, TCX_REDIRECT);
    assert_emitted6(&fx, &last, &out);

    // Atomic fragment: the rules of a whole datagram (UDP length equal).
    let atomic = Frame6::udp(POD_A6, GROUP6, b"atomic").atomic_fragment();
    let (v, out) = fx.run_gateway(&atomic.bytes());
    assert_eq!(v, TCX_REDIRECT);
    assert_emitted6(&fx, &atomic, &out);
    let mut short = atomic.bytes();
    let l4 = atomic.l4_off();
    short[l4 + 4..l4 + 6].copy_from_slice(&(8u16 + 5).to_be_bytes());
    assert_eq!(
        fx.run_gateway(&short).0,
        TCX_DROP,
        "atomic, UDP length short"
    );
    // A first fragment whose UDP length is below what it carries.
    let mut f = first.bytes();
    let l4 = first.l4_off();
    f[l4 + 4..l4 + 6].copy_from_slice(&999u16.to_be_bytes());
    assert_eq!(fx.run_gateway(&f).0, TCX_DROP, "first fragment, UDP length");
    // A first fragment too short for the UDP header (RFC 7112).
    let tiny = datagram.clone().fragment(0, 4);
    assert_eq!(fx.run_gateway(&tiny.bytes()).0, TCX_DROP, "no UDP header");
    assert_eq!(fx.drops6(Role::Gateway, DropReason::MALFORMED), 3);
    assert_eq!(fx.counter6(GROUP6, Role::Gateway).0, 4);
});

// --- what a router refuses -------------------------------------------------------

/// Frames a router (or udp6) would refuse, each built from `good` (an
/// unfragmented UDP datagram without extension headers).
fn malformed_variants(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let payload_len = u16::from_be_bytes([good[18], good[19]]);
    let udp_len = u16::from_be_bytes([good[58], good[59]]);
    let with = |name, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut f = good.to_vec();
        edit(&mut f);
        (name, f)
    };
    vec![
        with("version 4 in an IPv6 frame", &|f| f[14] = 0x40),
        with("zero UDP checksum", &|f| f[60..62].copy_from_slice(&[0, 0])),
        with("payload length 0", &|f| f[18..20].copy_from_slice(&[0, 0])),
        with("payload length beyond the frame", &|f| {
            f[18..20].copy_from_slice(&(payload_len + 1).to_be_bytes())
        }),
        with("UDP length shorter than the payload", &|f| {
            f[58..60].copy_from_slice(&(udp_len - 1).to_be_bytes())
        }),
        with("UDP length longer than the payload", &|f| {
            f[58..60].copy_from_slice(&(udp_len + 1).to_be_bytes())
        }),
        with("UDP length below its header", &|f| {
            f[58..60].copy_from_slice(&7u16.to_be_bytes())
        }),
        with("no room for the UDP header", &|f| {
            f.truncate(14 + 40 + 4);
            f[18..20].copy_from_slice(&4u16.to_be_bytes());
        }),
    ]
}

/// A jumbogram (RFC 2675): payload length 0 and a Jumbo Payload option.
fn jumbogram(pod: Ipv6Addr) -> Vec<u8> {
    let sent = Frame6::udp(pod, GROUP6, b"jumbo").ext(Ext {
        kind: packet::NEXTHDR_HOP,
        body: vec![0, 0xc2, 0x04, 0, 0, 0, 0],
    });
    let mut f = sent.bytes();
    let jumbo = (f.len() - 54) as u32;
    f[58..62].copy_from_slice(&jumbo.to_be_bytes());
    f[18..20].copy_from_slice(&[0, 0]);
    f
}

dp6_test!(what_a_router_refuses_never_leaves, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(REMOTE_GW));
    fx.policy6(POD_B6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_B, REMOTE_GW);
    let remote = Frame6::udp(POD_A6, GROUP6, b"router rules").bytes();
    let tunnelled = Frame6::udp(POD_B6, GROUP6, b"router rules").bytes();
    // Positive controls: the valid frames leave on all three paths.
    assert_eq!(fx.run_origin(fx.lxc_a, &remote).0, TCX_REDIRECT);
    assert_eq!(fx.run_origin(fx.lxc_b, &tunnelled).0, TCX_REDIRECT);
    assert_eq!(fx.run_gateway(&tunnelled).0, TCX_REDIRECT);
    let mut variants = malformed_variants(&remote);
    variants.push(("jumbogram", jumbogram(POD_A6)));
    for (what, f) in &variants {
        let (v, out) = fx.run_origin(fx.lxc_a, f);
        assert_eq!(v, TCX_DROP, "to a remote gateway: {what}");
        assert_eq!(&out, f, "dropped as it came: {what}");
    }
    let mut local = malformed_variants(&tunnelled);
    local.push(("jumbogram", jumbogram(POD_B6)));
    for (what, f) in &local {
        assert_eq!(fx.run_origin(fx.lxc_b, f).0, TCX_DROP, "local: {what}");
        assert_eq!(fx.run_gateway(f).0, TCX_DROP, "from the overlay: {what}");
    }
    let n = variants.len() as u64;
    assert_eq!(fx.drops6(Role::Origin, DropReason::MALFORMED), 2 * n);
    assert_eq!(fx.drops6(Role::Gateway, DropReason::MALFORMED), n);
    assert_eq!(fx.counter6(GROUP6, Role::Origin).0, 2, "only the controls");
    assert_eq!(fx.counter6(GROUP6, Role::Gateway).0, 2, "only the controls");
    // Not covered by a policy, the same frames are Cilium's, untouched.
    let mut uncovered = Frame6::udp(POD_A6, UNCOVERED6, b"router rules").bytes();
    uncovered[60..62].copy_from_slice(&[0, 0]);
    let (v, out) = fx.run_origin(fx.lxc_a, &uncovered);
    assert_eq!((v, &out), (TCX_NEXT, &uncovered));
});

dp6_test!(truncated_frames_pass_untouched, |fx| {
    fx.policy6(POD_A6, "ff00::/8", Gateway::Node(REMOTE_GW));
    let full = Frame6::udp(POD_A6, GROUP6, b"payload").bytes();
    // BPF_PROG_RUN refuses frames shorter than a fixed IPv6 header, so
    // those go over the real veth, as in tests/datapath.rs: the pod sends
    // them, our program runs at the head of lxc_a's tcx chain, and an
    // observer behind it records what it was handed on. The pod's end
    // sends no IPv6 of its own (ND, MLD) to confuse the observer.
    sh("sysctl", &["-qw", "net.ipv6.conf.pod_a.disable_ipv6=1"]);
    fx.dp.attach("lxc_a", Program::FromContainer).unwrap();
    let observer = Observer::attach_behind("lxc_a", fx.dp.paths());
    let pod = Tap::open("pod_a");
    // Ethernet header only; the fixed header cut after the destination's
    // first byte (multicast, but no whole header) and just short of its end.
    for len in [14, 14 + 25, 14 + 39] {
        let f = full[..len].to_vec();
        pod.send(&f);
        assert_eq!(
            observer.next_frame(),
            f,
            "handed on unchanged ({len} bytes)"
        );
    }
    fx.assert_nothing_counted();
    // Positive control on the same veth: the whole frame is ours, goes to
    // the tunnel and is never handed on. The observer runs in the same
    // softirq as our program, so once the origin counter shows it, the
    // observer has had its chance.
    let handed_on = observer.count();
    pod.send(&full);
    common::wait_for("the origin counter", Duration::from_secs(2), || {
        fx.counter6(GROUP6, Role::Origin).0 == 1
    });
    assert_eq!(observer.count(), handed_on, "and did not hand it on");
    // A whole fixed header, covered, but the UDP header cut: malformed.
    let cut = full[..14 + 40 + 4].to_vec();
    assert_eq!(fx.run_origin(fx.lxc_a, &cut).0, TCX_DROP);
    assert_eq!(fx.drops6(Role::Origin, DropReason::MALFORMED), 1);
});

dp6_test!(bytes_behind_the_payload_never_leave, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(REMOTE_GW));
    fx.policy6(POD_B6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.set_tunnel(ID_B, REMOTE_GW);
    let trailer = b"SMUGGLED-BYTES";
    // To a remote gateway: the copy is the datagram, without the trailer.
    let good = Frame6::udp(POD_A6, GROUP6, b"datagram").bytes();
    let mut padded = good.clone();
    padded.extend_from_slice(trailer);
    let (v, out) = fx.run_origin(fx.lxc_a, &padded);
    assert_eq!((v, &out), (TCX_REDIRECT, &good));
    // On the gateway: emitted as the rewritten datagram, without it.
    let sent = Frame6::udp(POD_B6, GROUP6, b"datagram");
    let mut padded = sent.bytes();
    padded.extend_from_slice(trailer);
    let want = sent.as_emitted(EGRESS_IP6, fx.uplink_mac).bytes();
    let (v, out) = fx.run_origin(fx.lxc_b, &padded);
    assert_eq!((v, &out), (TCX_REDIRECT, &want));
    let (v, out) = fx.run_gateway(&padded);
    assert_eq!((v, &out), (TCX_REDIRECT, &want));
});

// --- counters ------------------------------------------------------------------

dp6_test!(counters_and_drops_exact_after_many_runs, |fx| {
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(REMOTE_GW));
    fx.policy6(POD_B6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.policy6(POD_A6, "ff3e:9::/32", Gateway::NotFound);
    let a1 = Frame6::udp(POD_A6, GROUP6, &[1u8; 100]).bytes();
    let a2 = Frame6::udp(POD_A6, GROUP6_B, &[2u8; 1316])
        .ext(Ext::dest_opts(1))
        .bytes();
    let b1 = Frame6::udp(POD_B6, GROUP6, &[3u8; 50]).bytes();
    let nogw = Frame6::udp(POD_A6, v6("ff3e:9::1"), &[4u8; 10]).bytes();
    let (n1, n2, n3, n4) = (1000u32, 2500u32, 377u32, 333u32);
    assert_eq!(run(fx.container(), fx.lxc_a, &a1, n1).0, TCX_REDIRECT);
    assert_eq!(run(fx.container(), fx.lxc_a, &a2, n2).0, TCX_REDIRECT);
    // The local-gateway path rewrites the packet: once per packet.
    for _ in 0..n3 {
        assert_eq!(run(fx.container(), fx.lxc_b, &b1, 1).0, TCX_REDIRECT);
    }
    assert_eq!(run(fx.container(), fx.lxc_a, &nogw, n4).0, TCX_DROP);

    let n = |x: u32| u64::from(x);
    let len = |f: &Vec<u8>| f.len() as u64;
    assert_eq!(
        fx.counter6(GROUP6, Role::Origin),
        (n(n1 + n3), n(n1) * len(&a1) + n(n3) * len(&b1))
    );
    assert_eq!(
        fx.counter6(GROUP6_B, Role::Origin),
        (n(n2), n(n2) * len(&a2))
    );
    assert_eq!(
        fx.counter6(GROUP6, Role::Gateway),
        (n(n3), n(n3) * len(&b1))
    );
    assert_eq!(fx.counter6(GROUP6_B, Role::Gateway), (0, 0));
    assert_eq!(
        fx.drop6(Role::Origin, DropReason::NO_GATEWAY),
        (n(n4), n(n4) * len(&nogw))
    );
    assert_eq!(fx.total_drops6(), n(n4));
    assert_eq!(fx.maps.counters_v6.keys().count(), 3);
    assert_eq!(fx.total_counted() + fx.total_drops(), 0, "nothing as IPv4");
});

// --- real devices ----------------------------------------------------------------

/// An IPv4 VXLAN packet on the underlay towards REMOTE_GW.
fn is_vxlan_to_gateway(f: &[u8]) -> bool {
    f.len() > 50
        && View(f).ethertype() == packet::ETH_P_IP
        && View(f).daddr() == REMOTE_GW
        && View(f).proto() == packet::PROTO_UDP
        && u16::from_be_bytes([f[36], f[37]]) == forge::VXLAN_PORT
}

dp6_test!(origin_remote_gateway_sets_the_exact_tunnel_key, |fx| {
    // The production program on lxc_a, fed by a pod's frame on the veth;
    // the test tunnel observer on vx0's egress (where Cilium's
    // cil_to_overlay would be) reads the key our program set.
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(REMOTE_GW));
    sh("sysctl", &["-qw", "net.ipv6.conf.pod_a.disable_ipv6=1"]);
    fx.dp.attach("lxc_a", Program::FromContainer).unwrap();
    let tunnelled = TunnelObserver::attach("vx0", true, ChainPosition::Tail, fx.dp.paths());
    let underlay = Tap::open("under0");
    let pod = Tap::open("pod_a");
    let sent = Frame6::udp(POD_A6, GROUP6, b"to the gateway over VXLAN").bytes();
    assert!(sent.len() <= 128, "the observer sees whole frames");
    pod.send(&sent);

    let copy = tunnelled.next();
    assert_eq!(
        copy.key,
        Some((ID_A, THIS_NODE, REMOTE_GW)),
        "VNI = the pod's identity, outer source = the node IP, remote = the gateway"
    );
    assert_eq!(copy.frame, sent, "the inner frame as the pod sent it");

    // ... and on the underlay: IPv4 outer header, TTL 64, zero UDP checksum.
    let outer = underlay
        .recv_matching(Duration::from_secs(2), is_vxlan_to_gateway)
        .expect("the packet on the underlay");
    let o = View(&outer);
    assert_eq!(o.saddr(), THIS_NODE);
    assert_eq!(o.ttl(), 64, "outer TTL");
    assert!(o.ipv4_checksum_ok());
    assert_eq!(o.udp_checksum_field(), 0, "zero outer UDP checksum");
    let vx = &outer[42..50];
    assert_eq!(vx[0], 0x08, "VNI present flag");
    assert_eq!(u32::from_be_bytes([0, vx[4], vx[5], vx[6]]), ID_A);
    assert_eq!(&outer[50..], sent.as_slice(), "inner frame untouched");
    assert_eq!(fx.counter6(GROUP6, Role::Origin), (1, sent.len() as u64));
    assert_eq!(fx.total_drops6(), 0);
});

dp6_test!(gateway_from_real_vxlan, |fx| {
    // The production program on vx0, fed by the kernel's VXLAN receive
    // path: the real tunnel-key read with an IPv6 inner frame.
    fx.dp.attach("vx0", Program::FromOverlay).unwrap();
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    sh("ethtool", &["-K", "uplink0", "tx", "off"]);
    let under_mac = common::mac_of("under0");
    let peer_mac = common::mac_of("under_peer");
    let peer = Tap::open("under_peer");
    let uplink = Tap::open("upstream0");
    let sent = Frame6::udp(POD_A6, GROUP6, b"IPv6 over real VXLAN");
    let is_ours = |p: &[u8]| {
        p.len() > 54 && View6(p).ethertype() == packet::ETH_P_IPV6 && View6(p).daddr() == GROUP6
    };
    let vxlan = |from: Ipv4Addr, vni: u32| {
        forge::vxlan_packet((peer_mac, from), (under_mac, THIS_NODE), vni, &sent.bytes())
    };

    peer.send(&vxlan(REMOTE_GW, ID_A));
    let got = uplink
        .recv_matching(Duration::from_secs(2), is_ours)
        .expect("emitted on the uplink");
    assert_emitted6(&fx, &sent, &got);
    assert_eq!(
        fx.counter6(GROUP6, Role::Gateway),
        (1, sent.bytes().len() as u64)
    );
    // Cilium's own replication (VNI 2) and a stranger's injection do not
    // leave.
    peer.send(&vxlan(REMOTE_GW, 2));
    peer.send(&vxlan(STRANGER, ID_A));
    assert!(uplink
        .recv_matching(Duration::from_millis(500), is_ours)
        .is_none());
    assert_eq!(fx.drops6(Role::Gateway, DropReason::UNKNOWN_PEER), 1);
    assert_eq!(fx.counter6(GROUP6, Role::Gateway).0, 1);
});

dp6_test!(local_gateway_from_a_real_socket, |fx| {
    // A pod's own UDP socket: the kernel hands the veth CHECKSUM_PARTIAL
    // packets whose checksum field holds only the pseudo-header sum.
    fx.policy6(POD_A6, "ff3e::/16", Gateway::Node(THIS_NODE));
    fx.dp.attach("lxc_a", Program::FromContainer).unwrap();
    sh("ethtool", &["-K", "uplink0", "tx", "off"]);
    let pod = common::PodNs::new();
    pod.take("pod_a");
    pod.run(|| {
        sh("ip", &["link", "set", "pod_a", "up"]);
        sh(
            "ip",
            &[
                "addr",
                "add",
                "2001:db8:100::11/64",
                "dev",
                "pod_a",
                "nodad",
            ],
        );
        sh("ip", &["-6", "route", "add", "ff3e::/16", "dev", "pod_a"]);
    });
    let uplink = Tap::open("upstream0");
    let send = move |pod: &common::PodNs, len: usize| {
        pod.run(move || {
            let s = std::net::UdpSocket::bind((POD_A6, 0))
                .unwrap_or_else(|e| panic!("binding the pod's socket: {e}"));
            let hops: libc::c_int = 5;
            // SAFETY: a valid socket and a c_int option value of its size.
            let rc = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MULTICAST_HOPS,
                    (&hops as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "IPV6_MULTICAST_HOPS");
            s.send_to(&vec![0x5a; len], (GROUP6, 5001))
                .unwrap_or_else(|e| panic!("sending {len} bytes from the pod: {e}"));
        })
    };
    for len in [1usize, 100, 333, 1316] {
        send(&pod, len);
        let got = uplink
            .recv_matching(Duration::from_secs(2), |p| {
                p.len() > 54
                    && View6(p).ethertype() == packet::ETH_P_IPV6
                    && View6(p).daddr() == GROUP6
                    && View6(p).saddr() == EGRESS_IP6
            })
            .expect("emitted on the uplink");
        let v = View6(&got);
        assert_eq!(v.hop_limit(), 4);
        assert_eq!(v.dst_mac(), group_mac6(GROUP6));
        assert!(v.udp_checksum_ok(54), "{len}: UDP checksum");
        assert_eq!(v.udp(54).len(), 8 + len);
    }
    assert_eq!(fx.counter6(GROUP6, Role::Origin).0, 4);
    assert_eq!(fx.counter6(GROUP6, Role::Gateway).0, 4);
});

// --- drop events -------------------------------------------------------------------

dp6_test!(drop_events_of_both_families_on_one_ring, |fx| {
    fx.policy6(POD_B6, "ff3e::/16", Gateway::Node(REMOTE_GW));
    fx.policy(POD_B, "232.1.0.0/16", Gateway::Node(REMOTE_GW));
    let events = fx.dp.paths().globals().join("mcast_egw_events");
    let map = libbpf_rs::MapHandle::from_pinned_path(&events).unwrap();
    let records = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Vec<u8>>::new()));
    let sink = records.clone();
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    builder
        .add(&map, move |data: &[u8]| {
            sink.borrow_mut().push(data.to_vec());
            0
        })
        .unwrap();
    let ring = builder.build().unwrap();

    // Pod A (behind lxc_a) with pod B's addresses, IPv6 then IPv4.
    let f6 = Frame6::udp(POD_B6, GROUP6, b"not my address")
        .ext(Ext::hop_by_hop())
        .hop_limit(9)
        .bytes();
    let f4 = Frame::udp(POD_B, GROUP, b"not my address").bytes();
    assert_eq!(fx.run_origin(fx.lxc_a, &f6).0, TCX_DROP);
    assert_eq!(fx.run_origin(fx.lxc_a, &f4).0, TCX_DROP);
    ring.consume().unwrap();

    let records = records.borrow();
    let sizes: Vec<usize> = records.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![64, 40], "an event6, then an IPv4 event");
    let e = mcast_drop_event6::from_bytes(&records[0]).expect("an event6");
    assert_eq!(addr6(&e.saddr), POD_B6);
    assert_eq!(addr6(&e.daddr), GROUP6);
    assert_eq!(e.ifindex, fx.lxc_a);
    assert_eq!(e.reason, DropReason::SPOOFED_SOURCE.code());
    assert_eq!(e.role, role_raw(Role::Origin));
    assert_eq!(e.len, f6.len() as u32);
    assert_eq!(e.proto, packet::PROTO_UDP, "the protocol behind hop-by-hop");
    assert_eq!(e.hop_limit, 9);
    assert_eq!(e.pad, [0; 6]);
    let e4 = DropEvent::decode(&records[1]).expect("an IPv4 event");
    assert_eq!((e4.source, e4.group), (POD_B.into(), GROUP.into()));
    let d6 = DropEvent::decode(&records[0]).expect("sizes tell them apart");
    assert_eq!((d6.source, d6.group), (POD_B6.into(), GROUP6.into()));
    assert_eq!((d6.proto, d6.ttl), (packet::PROTO_UDP, 9));
});
