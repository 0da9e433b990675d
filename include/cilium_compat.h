/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The layouts of Cilium's own maps that this project reads (never writes),
 * under Cilium's names: struct and field names as in Cilium's bpf/lib/, so
 * that the reader can check them by name against the BTF of the map that
 * cilium-agent pinned. Where Cilium leaves a hole, it is spelt out here
 * (pad_*), so that C and Rust agree byte for byte.
 *
 * Versions differ: the reader checks the pinned map's key and value sizes,
 * and, where the map has BTF, the offset of every field it reads.
 */
#ifndef MCAST_CILIUM_COMPAT_H
#define MCAST_CILIUM_COMPAT_H

#include <linux/types.h>

/* endpoint_key.family */
#define ENDPOINT_KEY_IPV4	1
#define ENDPOINT_KEY_IPV6	2

/* endpoint_info.flags: the entry is one of the host's own addresses. */
#define ENDPOINT_F_HOST		1

/* Entries of cilium_lxc (Cilium's default ENDPOINTS_MAP_SIZE). */
#define ENDPOINTS_MAP_SIZE	65535

/*
 * reserved:health: the identity of Cilium's health endpoint, which has a
 * cilium_lxc entry and a veth like a pod but is none.
 */
#define CILIUM_IDENTITY_HEALTH	4

typedef __u64 mac_t;

/*
 * Key of cilium_lxc (HASH). In Cilium, ip4 and its padding are a struct in
 * an anonymous union with `union v6addr ip6`; only IPv4 is read here, and
 * the BTF check looks into anonymous unions, so the names still match.
 */
struct endpoint_key {
	__be32 ip4;
	__u32 pad1;
	__u32 pad2;
	__u32 pad3;
	__u8 family;		/* ENDPOINT_KEY_IPV4, ENDPOINT_KEY_IPV6 */
	__u8 key;
	__u16 cluster_id;	/* pad5 in older versions */
};

/* Value of cilium_lxc; integers in host order. */
struct endpoint_info {
	__u32 ifindex;		/* host side of the endpoint's veth */
	__u16 unused;
	__u16 lxc_id;
	__u32 flags;		/* ENDPOINT_F_* */
	__u32 pad_mac;		/* a hole in Cilium's: mac_t is 8-aligned */
	mac_t mac;
	mac_t node_mac;
	__u32 sec_id;		/* security identity */
	__u32 parent_ifindex;
	__u32 pad[2];
};

/* Key of cilium_mcast_group_outer_v4_map (HASH_OF_MAPS): the group. */
typedef __be32 mcast_group_v4;

/* The sizes and offsets Cilium's sources give, checked at build time. */
_Static_assert(sizeof(struct endpoint_key) == 20, "endpoint_key is 20 bytes");
_Static_assert(__builtin_offsetof(struct endpoint_key, family) == 16, "family @16");
_Static_assert(__builtin_offsetof(struct endpoint_key, cluster_id) == 18, "cluster_id @18");
_Static_assert(sizeof(struct endpoint_info) == 48, "endpoint_info is 48 bytes");
_Static_assert(__builtin_offsetof(struct endpoint_info, flags) == 8, "flags @8");
_Static_assert(__builtin_offsetof(struct endpoint_info, mac) == 16, "mac @16");
_Static_assert(__builtin_offsetof(struct endpoint_info, sec_id) == 32, "sec_id @32");
_Static_assert(__builtin_offsetof(struct endpoint_info, parent_ifindex) == 36,
	       "parent_ifindex @36");

#endif /* MCAST_CILIUM_COMPAT_H */
