/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_POLICY_H
#define MCAST_LIB_POLICY_H

#include "common.h"

/*
 * Multicast entries of CiliumEgressGatewayPolicies, keyed like Cilium's own
 * cilium_egress_gw_policy_v4: {32 + prefix bits, pod IP, group prefix}. The
 * controller writes only prefixes inside 224.0.0.0/4, so a hit always means
 * a multicast policy (a 0.0.0.0/0 policy never lands here).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct mcast_policy_key);
	__type(value, struct mcast_policy_val);
	__uint(max_entries, MCAST_EGW_POLICY_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_egw_policy_v4 SEC(".maps");

/* Bumped by the controller after each change of mcast_egw_policy_v4. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_policy_gen);
	__uint(max_entries, 1);
} mcast_egw_policy_gen SEC(".maps");

struct mcast_policy_cache_key {
	__be32 saddr;
	__be32 daddr;
};

struct mcast_policy_cache_val {
	struct mcast_policy_val val;
	__u32 generation;
	__u32 found;
};

/*
 * An exact-match cache in front of the trie: an LPM walk over thousands of
 * entries costs several times a hash lookup, and a stream repeats the same
 * (S, G) for every packet. An entry is only trusted while the generation it
 * was filled under is current, so a policy change is seen by the next
 * packet, as with the trie itself. Misses are cached too. Not pinned: each
 * loaded object starts with an empty one.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct mcast_policy_cache_key);
	__type(value, struct mcast_policy_cache_val);
	__uint(max_entries, MCAST_POLICY_CACHE_MAX_ENTRIES);
} mcast_policy_cache SEC(".maps");

/*
 * Look up the policy of (saddr, daddr) into @out. Returns false when no
 * policy covers it.
 */
static __always_inline bool mcast_policy_lookup(__be32 saddr, __be32 daddr,
						struct mcast_policy_val *out)
{
	struct mcast_policy_cache_key ckey = { .saddr = saddr, .daddr = daddr };
	struct mcast_policy_key key = {
		.prefixlen = MCAST_POLICY_FULL_PREFIXLEN,
		.saddr = saddr,
		.daddr = daddr,
	};
	const struct mcast_policy_cache_val *cached;
	const struct mcast_policy_val *pol;
	struct mcast_policy_cache_val fill = {};
	const struct mcast_policy_gen *gen;
	__u32 zero = 0;

	gen = bpf_map_lookup_elem(&mcast_egw_policy_gen, &zero);
	if (!gen)
		return false;
	cached = bpf_map_lookup_elem(&mcast_policy_cache, &ckey);
	if (cached && cached->generation == gen->generation) {
		if (!cached->found)
			return false;
		*out = cached->val;
		return true;
	}

	/* Read the generation before the trie: a change racing with this
	 * lookup leaves an entry that is already stale. */
	fill.generation = gen->generation;
	pol = bpf_map_lookup_elem(&mcast_egw_policy_v4, &key);
	if (pol) {
		fill.val = *pol;
		fill.found = 1;
		*out = *pol;
	}
	bpf_map_update_elem(&mcast_policy_cache, &ckey, &fill, BPF_ANY);
	return pol != NULL;
}

static __always_inline bool mcast_policy_is_excluded(const struct mcast_policy_val *pol)
{
	return pol->gateway_ip == bpf_htonl(MCAST_GATEWAY_EXCLUDED);
}

static __always_inline bool mcast_policy_has_gateway(const struct mcast_policy_val *pol)
{
	return pol->gateway_ip != bpf_htonl(MCAST_GATEWAY_NOT_FOUND);
}

#endif /* MCAST_LIB_POLICY_H */
