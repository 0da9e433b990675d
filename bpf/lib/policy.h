/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_POLICY_H
#define MCAST_LIB_POLICY_H

#include "common.h"

/*
 * IPv6 entries, keyed like Cilium's cilium_egress_gw_policy_v6: {128 +
 * prefix bits, pod IP, group prefix}, prefixes inside ff00::/8 only. An LPM
 * trie: a hash probed per length in use would need up to 121 lengths per
 * group.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct mcast_policy_key6);
	__type(value, struct mcast_policy_val6);
	__uint(max_entries, MCAST_EGW_POLICY_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_egw_policy_v6 SEC(".maps");

#ifndef MCAST_BENCH_POLICY_LPM
/*
 * Multicast entries of CiliumEgressGatewayPolicies, keyed like Cilium's own
 * cilium_egress_gw_policy_v4: {32 + prefix bits, pod IP, group prefix}. The
 * controller writes only prefixes inside 224.0.0.0/4, so a hit always means
 * a multicast policy (a 0.0.0.0/0 policy never lands here).
 *
 * A hash, not an LPM trie: a trie lookup walks a node per prefix bit that
 * tells entries apart, and grows with them (about 55 ns from 4 entries to
 * 4,000); a hash probe does not. The longest match is found by probing the
 * prefix lengths that can match the group, longest first
 * (mcast_egw_policy_lens_v4): one probe for most groups, one more for each
 * longer prefix (an exclusion, say) in the same /16.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mcast_policy_key);
	__type(value, struct mcast_policy_val);
	__uint(max_entries, MCAST_EGW_POLICY_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_egw_policy_hash_v4 SEC(".maps");

/* Which destination prefix lengths to probe, per /16 of 224.0.0.0/4. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_policy_lens);
	__uint(max_entries, MCAST_POLICY_LENS_BUCKETS);
} mcast_egw_policy_lens_v4 SEC(".maps");

/*
 * The index of the one set bit of @bit (a power of two, not 0): the bits
 * below it, counted without a branch. Branches here would be paths for the
 * verifier to walk, for every length of the loop below.
 */
static __always_inline __u32 mcast_bit_index(__u32 bit)
{
	__u32 v = bit - 1;

	v = v - ((v >> 1) & 0x55555555);
	v = (v & 0x33333333) + ((v >> 2) & 0x33333333);
	v = (v + (v >> 4)) & 0x0f0f0f0f;
	return (v * 0x01010101) >> 24;
}

/*
 * Look up the policy of (saddr, daddr) into @out: the longest destination
 * prefix with an entry for this pod, as a full-length LPM lookup (Cilium's
 * for unicast egress) finds it. An exclusion is an entry like any other, so
 * a longer exclusion wins over the prefix around it. Returns false when no
 * policy covers the packet.
 *
 * No cache of any kind in front of the map: a cached entry could outlive a
 * policy change on a weakly ordered CPU, and nothing may leave that policy
 * no longer allows. The length set is no cache: it only says which keys to
 * try, and it is written before the entries it covers and shrunk after
 * them, so a lookup that races a policy change sees what a trie update
 * racing it would give, one entry's write at a time. (The bucket is taken
 * from any group; only 224.0.0.0/4 has entries, so another address, which
 * the callers never pass, finds none whatever lengths it probes.)
 */
static __always_inline bool mcast_policy_lookup(__be32 saddr, __be32 daddr,
						struct mcast_policy_val *out)
{
	struct mcast_policy_key key = { .saddr = saddr };
	const struct mcast_policy_lens *lens;
	const struct mcast_policy_val *pol;
	__u32 dst = bpf_ntohl(daddr);
	__u32 bucket = (dst >> 16) & (MCAST_POLICY_LENS_BUCKETS - 1);
	__u32 bits, i;

	lens = bpf_map_lookup_elem(&mcast_egw_policy_lens_v4, &bucket);
	if (!lens)
		return false;
	/* One read: the loop works on this snapshot of the set. */
	bits = *(volatile const __u32 *)&lens->dst_lens;
	for (i = 0; i < MCAST_POLICY_DST_LENS && bits; i++) {
		__u32 low = bits & -bits;	/* the longest length left */
		__u32 host_bits = mcast_bit_index(low);

		bits &= bits - 1;
		if (host_bits > 32 - MCAST_POLICY_DST_LEN_MIN)
			break;	/* not a length the controller writes */
		key.prefixlen = MCAST_POLICY_SADDR_PREFIXLEN + 32 - host_bits;
		/* -low: the mask of the top (32 - host_bits) bits. */
		key.daddr = bpf_htonl(dst & -low);
		pol = bpf_map_lookup_elem(&mcast_egw_policy_hash_v4, &key);
		if (pol) {
			*out = *pol;
			return true;
		}
	}
	return false;
}
#else
/*
 * Benchmark builds only (bpf/bench/): the LPM trie this project used before
 * the hash, with its lookup, so that `make bench` compares both in one run.
 * Not pinned (no mcast_egw_ prefix): the benchmark fills it itself.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct mcast_policy_key);
	__type(value, struct mcast_policy_val);
	__uint(max_entries, MCAST_EGW_POLICY_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_bench_policy_lpm SEC(".maps");

static __always_inline bool mcast_policy_lookup(__be32 saddr, __be32 daddr,
						struct mcast_policy_val *out)
{
	struct mcast_policy_key key = {
		.prefixlen = MCAST_POLICY_SADDR_PREFIXLEN + 32,
		.saddr = saddr,
		.daddr = daddr,
	};
	const struct mcast_policy_val *pol;

	pol = bpf_map_lookup_elem(&mcast_bench_policy_lpm, &key);
	if (!pol)
		return false;
	*out = *pol;
	return true;
}
#endif /* MCAST_BENCH_POLICY_LPM */

static __always_inline bool mcast_policy_is_excluded(const struct mcast_policy_val *pol)
{
	return pol->gateway_ip == bpf_htonl(MCAST_GATEWAY_EXCLUDED);
}

static __always_inline bool mcast_policy_has_gateway(const struct mcast_policy_val *pol)
{
	return pol->gateway_ip != bpf_htonl(MCAST_GATEWAY_NOT_FOUND);
}

#endif /* MCAST_LIB_POLICY_H */
