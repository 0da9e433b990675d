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

/*
 * Look up the policy of (saddr, daddr) into @out: a full-length LPM lookup,
 * as Cilium does for unicast egress. Returns false when no policy covers it.
 * (No cache in front of the trie: a cached entry could outlive a policy
 * change on a weakly ordered CPU, and nothing may leave that policy no
 * longer allows.)
 */
static __always_inline bool mcast_policy_lookup(__be32 saddr, __be32 daddr,
						struct mcast_policy_val *out)
{
	struct mcast_policy_key key = {
		.prefixlen = MCAST_POLICY_FULL_PREFIXLEN,
		.saddr = saddr,
		.daddr = daddr,
	};
	const struct mcast_policy_val *pol;

	pol = bpf_map_lookup_elem(&mcast_egw_policy_v4, &key);
	if (!pol)
		return false;
	*out = *pol;
	return true;
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
