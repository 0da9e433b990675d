/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one contract between the BPF programs and the Rust controller: map
 * names, sizes, keys, values, counter roles and drop reasons.
 *
 * Every struct has explicit padding so that C and Rust agree byte for byte.
 * Addresses (__be32) are in network byte order, everything else in host
 * order. Codes are stable: a retired code is never reused, new codes go
 * just before the *_MAX sentinel.
 *
 * Changing the layout of a pinned map's key or value means a new map name
 * (as Cilium does with its *_v2 maps): the loader refuses to mix a pinned
 * map with an object whose layout differs.
 */
#ifndef MCAST_EGRESS_H
#define MCAST_EGRESS_H

#include <linux/types.h>

/* Capacities of the pinned maps. */
#define MCAST_EGW_POLICY_MAX_ENTRIES	65536	/* default; set at load (--policy-map-entries) */
#define MCAST_EGW_ENDPOINTS_MAX_ENTRIES	65535	/* as cilium_lxc */
#define MCAST_EGW_NODES_MAX_ENTRIES	16384
#define MCAST_EGW_IFACES_MAX_ENTRIES	256
#define MCAST_EGW_GROUPS_MAX_ENTRIES	1024	/* as cilium_mcast_group_outer_v4_map */
#define MCAST_EGW_COUNTERS_MAX_ENTRIES	16384
#define MCAST_EGW_NAMES_MAX_ENTRIES	16384	/* default; set at load (--policy-names-entries) */
/* Bytes of the drop-event ring buffer (a power of two, page multiple). */
#define MCAST_EGW_EVENTS_BYTES		(256 * 1024)
/* Drop events each CPU may emit per second, and its burst. */
#define MCAST_EVENTS_PER_SEC		1000

/*
 * Sentinels of mcast_policy_val.gateway_ip, the same values Cilium uses in
 * its egress-gateway policy map (host order here; stored as __be32).
 */
#define MCAST_GATEWAY_NOT_FOUND		0x00000000U	/* 0.0.0.0: matched, no gateway */
#define MCAST_GATEWAY_EXCLUDED		0x00000001U	/* 0.0.0.1: from excludedCIDRs */

/* Bits of mcast_policy_key.prefixlen taken by the pod address. */
#define MCAST_POLICY_SADDR_PREFIXLEN	32
/*
 * Destination prefix lengths a policy entry can have: the controller writes
 * prefixes inside 224.0.0.0/4 only, so /4 to /32, 29 lengths.
 */
#define MCAST_POLICY_DST_LEN_MIN	4
#define MCAST_POLICY_DST_LENS		(32 - MCAST_POLICY_DST_LEN_MIN + 1)

/*
 * Reserved security identity that Cilium's in-cluster multicast replication
 * puts in the VNI of its copies. Ours always carry the pod's identity.
 */
#define MCAST_IDENTITY_WORLD		2

/*
 * Key of mcast_egw_policy_hash_v4, byte for byte Cilium's egress-gateway LPM
 * key: prefixlen = 32 + destination prefix bits, saddr is always a full /32,
 * daddr has its host bits cleared. An exact-match key: the datapath probes
 * it once per destination prefix length in use (mcast_egw_policy_lens_v4).
 */
struct mcast_policy_key {
	__u32 prefixlen;
	__be32 saddr;
	__be32 daddr;
};

/*
 * mcast_egw_policy_lens_v4 has one element per /16 of 224.0.0.0/4, indexed
 * by bits 16 to 27 of the group (host order): 4096 buckets.
 */
#define MCAST_POLICY_LENS_BUCKETS	4096

/*
 * An element of mcast_egw_policy_lens_v4: the destination prefix lengths of
 * the entries of mcast_egw_policy_hash_v4 that can match a group of this
 * bucket's /16 (those that cover it, and those inside it). Bit (32 - len)
 * stands for /len, so the lowest set bit is the longest length. The
 * controller only ever adds bits (before the first such entry is written)
 * or only ever removes them (after the last one is deleted), never both in
 * one write: a reader that sees the word half written still sees every
 * length that has entries.
 */
struct mcast_policy_lens {
	__u32 dst_lens;
	__u32 pad;
};

/* Value of mcast_egw_policy_hash_v4. */
struct mcast_policy_val {
	__be32 egress_ip;	/* 0 on non-gateway nodes and when not derivable */
	__be32 gateway_ip;	/* node IP of the gateway, or a sentinel above */
	__u32 egress_ifindex;	/* uplink on the gateway node, else 0 */
	__u32 policy_id;	/* controller-assigned, labels the counters */
	/*
	 * Where the pod's copies come from: the node it runs on and its
	 * security identity, the outer source and VNI a gateway accepts.
	 */
	__be32 origin_node_ip;
	__u32 origin_identity;
};

/*
 * IPv6: a second instance of the policy, endpoint, counter and drop maps,
 * keyed by IPv6 addresses. The underlay stays IPv4, as Cilium's tunnel is:
 * gateway and origin node addresses, the config and mcast_egw_nodes are the
 * IPv4 maps' and shared.
 */

/* An IPv6 address in network byte order, as four big-endian words. */
struct mcast_in6_addr {
	__be32 words[4];
};

/* Bits of mcast_policy_key6.prefixlen taken by the pod address. */
#define MCAST_POLICY6_SADDR_PREFIXLEN	128
/*
 * Destination prefixes the controller writes: inside ff00::/8, /8 to /128,
 * 121 lengths.
 */
#define MCAST_POLICY6_DST_LEN_MIN	8
#define MCAST_POLICY6_DST_LENS		(128 - MCAST_POLICY6_DST_LEN_MIN + 1)

/*
 * Key of mcast_egw_policy_hash_v6, byte for byte Cilium's
 * egress_gw_policy_key6: prefixlen = 128 + destination prefix bits, saddr
 * always a full /128, daddr with its host bits cleared. An exact-match key,
 * as IPv4's: the datapath probes it once per destination prefix length in
 * use (mcast_egw_policy_lens_v6).
 */
struct mcast_policy_key6 {
	__u32 prefixlen;
	struct mcast_in6_addr saddr;
	struct mcast_in6_addr daddr;
};

/*
 * mcast_egw_policy_lens_v6 has one element per value of bits 100 to 111 of
 * the group, counted from its most significant bit (bit 0):
 * (ntohl(daddr.words[3]) >> 16) & 0xfff, 4096 buckets. Why those bits: SSM
 * groups (ff3x::/96, RFC 4607) and RFC 3306 unicast-prefix-based groups
 * carry their 32-bit group ID in the last 32 bits of the address, so that
 * is where policies and their exclusions tell groups apart. A prefix of
 * /112 or longer lies in one bucket, one of /100 or shorter spans all 4096,
 * one in between 2^(112 - len) consecutive buckets. Which bits make the
 * bucket only decides how many lengths a group probes, never whether its
 * entry is found: a bucket holds every length that can match its groups.
 */
#define MCAST_POLICY6_LENS_BUCKETS	4096

/*
 * An element of mcast_egw_policy_lens_v6: a 128-bit set of the destination
 * prefix lengths of the entries of mcast_egw_policy_hash_v6 that can match
 * a group of this bucket. Bit (128 - len) stands for /len: bit
 * (128 - len) % 32 of dst_lens[(128 - len) / 32], so the lowest set bit of
 * the first word that has one is the longest length (/128 is bit 0 of
 * dst_lens[0], /8 bit 24 of dst_lens[3]). Written as mcast_policy_lens is:
 * only adding bits or only removing them, so a reader that sees the words
 * half written still sees every length that has entries.
 */
struct mcast_policy_lens6 {
	__u32 dst_lens[4];
};

/*
 * Value of mcast_egw_policy_hash_v6: mcast_policy_val with an IPv6 egress
 * address. gateway_ip carries the same sentinels.
 */
struct mcast_policy_val6 {
	struct mcast_in6_addr egress_ip;	/* :: on non-gateway nodes and when not derivable */
	__be32 gateway_ip;	/* IPv4 node IP of the gateway, or a sentinel */
	__u32 egress_ifindex;	/* uplink on the gateway node, else 0 */
	__u32 policy_id;	/* controller-assigned, labels the counters */
	__be32 origin_node_ip;	/* IPv4 node IP the pod runs on */
	__u32 origin_identity;
	__u32 pad;
};

/*
 * Value of mcast_egw_endpoints, keyed by the pod's IPv4 address (__be32),
 * and of mcast_egw_endpoints_v6, keyed by its IPv6 address
 * (struct mcast_in6_addr).
 */
struct mcast_endpoint_val {
	__u32 ifindex;		/* host side of the pod's veth */
	__u32 sec_identity;	/* Cilium security identity, 24 bits */
};

/* Value of mcast_egw_nodes, keyed by a cluster node's IPv4 address. */
struct mcast_node_val {
	__u32 flags;		/* reserved, 0 */
};

/* Value of mcast_egw_egress_ifaces, keyed by ifindex (__u32). */
struct mcast_iface_val {
	__u8 mac[6];		/* source MAC of frames sent on this uplink */
	__u8 pad[2];
	__u32 flags;		/* reserved, 0 */
};

/* mcast_config.flags: mcast_egw_cilium_groups has entries. */
#define MCAST_CONFIG_F_CILIUM_GROUPS	(1U << 0)

/* The single element of mcast_egw_config. */
struct mcast_config {
	__be32 node_ip;		/* this node's InternalIP, 0 until configured */
	__u32 tunnel_ifindex;	/* cilium_vxlan, 0 until it exists */
	__u32 flags;		/* MCAST_CONFIG_F_* */
	__u32 pad;
};

/* Value of mcast_egw_cilium_groups, keyed by group address (__be32). */
struct mcast_group_val {
	__u32 flags;		/* reserved, 0 */
};

/* Who counted a packet; each comment starts with the role's label. */
enum mcast_role {
	/* origin: captured from a pod on its origin node and sent to its gateway. */
	MCAST_ROLE_ORIGIN = 0,
	/* gateway: rewritten and emitted on the gateway's uplink. */
	MCAST_ROLE_GATEWAY = 1,
	MCAST_ROLE_MAX,
};

/*
 * Why a packet was dropped. Code 0 is never used. Each comment starts with
 * the reason's stable label (metrics, the CLI, the README): this enum is the
 * one list, and tests/contract.rs fails when anything drifts from it.
 */
enum mcast_drop_reason {
	/* no_gateway: Policy matched but Cilium-style resolution found no gateway node. */
	MCAST_DROP_NO_GATEWAY = 1,
	/* spoofed_source: Source address belongs to an endpoint behind another interface. */
	MCAST_DROP_SPOOFED_SOURCE = 2,
	/* unknown_source: Source address is no endpoint on this node at all. */
	MCAST_DROP_UNKNOWN_SOURCE = 3,
	/* unknown_peer: VXLAN from an outer source that is not a cluster node. */
	MCAST_DROP_UNKNOWN_PEER = 4,
	/* not_gateway: Policy names another node (or none) as gateway. */
	MCAST_DROP_NOT_GATEWAY = 5,
	/* no_egress_ip: This node is the gateway but has no egress IP or uplink. */
	MCAST_DROP_NO_EGRESS_IP = 6,
	/* ttl_exceeded: TTL (IPv4) or hop limit (IPv6) would reach zero on the gateway hop. */
	MCAST_DROP_TTL_EXCEEDED = 7,
	/* no_tunnel: Remote gateway, but the tunnel device is not known yet. */
	MCAST_DROP_NO_TUNNEL = 8,
	/* no_egress_iface: Uplink ifindex has no entry (MAC) in mcast_egw_egress_ifaces. */
	MCAST_DROP_NO_EGRESS_IFACE = 9,
	/* unsupported_protocol: Only UDP leaves the cluster. */
	MCAST_DROP_UNSUPPORTED_PROTO = 10,
	/*
	 * malformed: A datagram a router would refuse: IPv4 version or IHL, header
	 * checksum, total length against the frame; IPv6 version, payload length
	 * (0, a jumbogram, or beyond the frame), an extension header chain that
	 * is too long, runs past the payload, has hop-by-hop not first or a
	 * routing header with segments left, or a second fragment header;
	 * hop-by-hop options other than padding and Router Alert, or of
	 * lengths ip6_parse_tlv() refuses; or (first fragments) the UDP header
	 * and length, and in IPv6 a zero UDP checksum.
	 */
	MCAST_DROP_MALFORMED = 11,
	/*
	 * tunnel_key_failed: The copy for the gateway did not get its tunnel key:
	 * bpf_skb_set_tunnel_key() failed, or (a copy while Cilium keeps the
	 * original) mcast_to_overlay on the tunnel device's egress never
	 * applied it, and the collect-md device drops a copy without one.
	 */
	MCAST_DROP_TUNNEL_KEY = 12,
	/* rewrite_failed: A header rewrite helper failed. */
	MCAST_DROP_REWRITE = 13,
	/* clone_failed: Copy for the gateway failed; the original still went to Cilium. */
	MCAST_DROP_CLONE = 14,
	/* origin_mismatch: Tunnelled from a node or with a VNI other than the pod's own. */
	MCAST_DROP_ORIGIN_MISMATCH = 15,
	/*
	 * mtu_exceeded: Larger than the uplink's MTU, or (GSO) with segments that are: the
	 * driver would drop it unseen.
	 */
	MCAST_DROP_MTU_EXCEEDED = 16,
	/* excluded: Tunnelled to the gateway for a group the pod's policy excludes. */
	MCAST_DROP_EXCLUDED = 17,
	/* no_policy: Tunnelled to the gateway in a pod's name for a group no policy covers. */
	MCAST_DROP_NO_POLICY = 18,
	/* redirect_failed: The redirect helper refused the packet, or the device is gone. */
	MCAST_DROP_REDIRECT = 19,
	/*
	 * dst_mac_mismatch: A pod's frame whose destination MAC is not its group's own
	 * (RFC 1112: 01:00:5e and 23 bits; RFC 2464: 33:33 and 32 bits): another
	 * host's, the node's, broadcast or another group's; on the gateway, such
	 * a frame inside a copy.
	 */
	MCAST_DROP_DST_MAC = 20,
	MCAST_DROP_MAX,
};

/*
 * Slots per role in mcast_egw_drops: room for new reasons without a new
 * layout of the pinned array.
 */
#define MCAST_DROP_SLOTS		64

/* Key of mcast_egw_counters. */
struct mcast_counter_key {
	__u32 policy_id;
	__be32 group;
	__u32 role;		/* enum mcast_role */
	__u32 pad;
};

/* Key of mcast_egw_counters_v6. */
struct mcast_counter_key6 {
	__u32 policy_id;
	__u32 role;		/* enum mcast_role */
	struct mcast_in6_addr group;
};

/*
 * Value of mcast_egw_counters and mcast_egw_counters_v6 (per CPU), and of
 * mcast_egw_drops and mcast_egw_drops_v6 (per CPU).
 */
struct mcast_counter_val {
	__u64 packets;
	__u64 bytes;		/* skb->len: Ethernet header included */
};

/*
 * A drop, for `cilium-mcast-egress monitor`: sent on mcast_egw_events from
 * the drop path only, at most MCAST_EVENTS_PER_SEC per CPU.
 */
struct mcast_drop_event {
	__u64 timestamp_ns;	/* bpf_ktime_get_ns() */
	__be32 saddr;
	__be32 daddr;
	__u32 ifindex;		/* device the packet arrived on */
	__u32 reason;		/* enum mcast_drop_reason */
	__u32 role;		/* enum mcast_role */
	__u32 len;		/* skb->len */
	__u8 proto;
	__u8 ttl;
	__u8 pad[6];
};

/*
 * A drop of an IPv6 packet, on the same ring buffer: told apart from
 * struct mcast_drop_event by its size.
 */
struct mcast_drop_event6 {
	__u64 timestamp_ns;	/* bpf_ktime_get_ns() */
	struct mcast_in6_addr saddr;
	struct mcast_in6_addr daddr;
	__u32 ifindex;		/* device the packet arrived on */
	__u32 reason;		/* enum mcast_drop_reason */
	__u32 role;		/* enum mcast_role */
	__u32 len;		/* skb->len */
	__u8 proto;		/* upper-layer protocol behind the extension headers */
	__u8 hop_limit;
	__u8 pad[6];
};

/* Per-CPU token bucket of the drop events, and what it held back. */
struct mcast_events_limit {
	__u64 refilled_ns;
	__u64 tokens;
	__u64 suppressed;
};

/* Value of mcast_egw_policy_names, keyed by policy_id (__u32). */
#define MCAST_NAME_LEN			256
struct mcast_policy_name {
	char name[MCAST_NAME_LEN];	/* NUL-terminated */
};

/* The single element of mcast_egw_status, written by the controller. */
struct mcast_status {
	char node_name[MCAST_NAME_LEN];	/* NUL-terminated */
	char version[32];		/* of the controller that wrote it */
	__u64 last_sync_unix_ns;	/* last successful sync, 0 before */
	__u64 syncs;			/* successful syncs since the first */
};

/*
 * States of mcast_tunnel_pending.state: idle; armed by mcast_from_container
 * around its bpf_clone_redirect() to the tunnel device; applied by
 * mcast_to_overlay once the copy carries the key.
 */
#define MCAST_PENDING_IDLE		0
#define MCAST_PENDING_ARMED		1
#define MCAST_PENDING_APPLIED		2

/*
 * The single element of mcast_egw_tunnel_pending (per CPU): the tunnel key
 * of the copy that mcast_from_container is sending to the gateway while
 * Cilium gets the original. The copy is transmitted synchronously, on this
 * CPU, inside bpf_clone_redirect(); mcast_to_overlay, at the head of the
 * tunnel device's tcx egress, sets the key on it there. The original never
 * carries it.
 */
struct mcast_tunnel_pending {
	__be32 remote_ipv4;	/* the gateway node: the outer destination */
	__be32 local_ipv4;	/* this node: the outer source */
	__u32 tunnel_id;	/* VNI: the pod's security identity */
	__be32 saddr;		/* the inner packet the key is for */
	__be32 daddr;
	__u32 state;		/* MCAST_PENDING_* */
};

/*
 * mcast_egw_drops (IPv4) and mcast_egw_drops_v6 are arrays indexed by
 * role * MCAST_DROP_SLOTS + reason.
 */
#define MCAST_DROPS_MAX_ENTRIES		(MCAST_ROLE_MAX * MCAST_DROP_SLOTS)

/*
 * Test builds only: the receive-side tunnel key that BPF_PROG_RUN cannot
 * attach to a packet is read from a one-element array of this type.
 */
struct mcast_test_tunnel {
	__u32 tunnel_id;
	__be32 remote_ipv4;
	__u32 valid;		/* 0: behave as if the packet had no tunnel key */
	__u32 pad;
};

/*
 * Test builds only: what the observer program behind ours (where Cilium's
 * program sits) was handed: the frame's length and first bytes.
 */
#define MCAST_TEST_OBSERVED_BYTES	128

struct mcast_test_observed {
	__u32 count;
	__u32 len;
	__u8 data[MCAST_TEST_OBSERVED_BYTES];
};

/*
 * Test builds only: what the tunnel observer behind ours was handed (IPv4
 * frames, and IPv6 frames to groups of a scope beyond link-local), and
 * whether bpf_skb_get_tunnel_key() found a key on it.
 */
struct mcast_test_tunnel_observed {
	__u32 count;		/* frames handed on so far */
	__u32 with_key;		/* of which carried a tunnel key */
	__u32 last_has_key;	/* the last frame carried one */
	__u32 tunnel_id;	/* its VNI, 0 without */
	/*
	 * Its outer addresses, 0 without. bpf_skb_get_tunnel_key() names them
	 * for a received packet (remote_ipv4 is the tunnel info's source); on
	 * a key set for transmit the source is the local end.
	 */
	__be32 outer_src;
	__be32 outer_dst;
	__u32 len;		/* skb->len of the last frame */
	__u8 data[MCAST_TEST_OBSERVED_BYTES];
};

#endif /* MCAST_EGRESS_H */
