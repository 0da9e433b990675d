/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_POLICY_H
#define MCAST_LIB_POLICY_H

#include "common.h"

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

/*
 * IPv6 entries, keyed like Cilium's cilium_egress_gw_policy_v6: {128 +
 * prefix bits, pod IP, group prefix}, prefixes inside ff00::/8 only. A hash
 * probed per prefix length in use, as IPv4's: a trie lookup walks a node
 * per prefix bit that tells entries apart, and IPv6 prefixes have up to
 * 128 of them.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mcast_policy_key6);
	__type(value, struct mcast_policy_val6);
	__uint(max_entries, MCAST_EGW_POLICY_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_egw_policy_hash_v6 SEC(".maps");

/* Which destination prefix lengths to probe, per bucket of bits 100-111. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_policy_lens6);
	__uint(max_entries, MCAST_POLICY6_LENS_BUCKETS);
} mcast_egw_policy_lens_v6 SEC(".maps");

/* mcast_bit_index() of a 64-bit @bit (a power of two, not 0). */
static __always_inline __u64 mcast_bit_index64(__u64 bit)
{
	__u64 v = bit - 1;

	v = v - ((v >> 1) & 0x5555555555555555ULL);
	v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
	v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (v * 0x0101010101010101ULL) >> 56;
}

/*
 * What mcast_policy6_probe() keeps in its caller's @out while it probes:
 * the key and the bucket index, which a map lookup needs in memory. Its
 * own stack frame stays within the 32 bytes that the call chain of
 * mcast_from_container (512 in all) leaves it.
 */
struct mcast_policy6_scratch {
	struct mcast_policy_key6 key;
	__u32 bucket;
};

_Static_assert(sizeof(struct mcast_policy6_scratch) <= sizeof(struct mcast_policy_val6),
	       "the probe's scratch fits in its result");

/*
 * 1 when @v has a bit set, else 0, without a branch (BPF has no setcc).
 * The result is made opaque to the compiler, which would otherwise see a
 * comparison in it and turn it and the selects made with it into branches:
 * three per step of the loop below, paths for the verifier to walk.
 */
static __always_inline __u64 mcast_nonzero64(__u64 v)
{
	__u64 neg = -v;

	asm volatile("" : "+r"(neg));
	return (v | neg) >> 63;
}

/*
 * mcast_policy_lookup() for IPv6: the longest destination prefix with an
 * entry for this pod, probing the lengths of the group's bucket
 * (mcast_egw_policy_lens_v6) longest first, with the same reasoning: no
 * cache, the length set only says which keys to try. Returns 1 and fills
 * @out when a policy covers the packet, else 0.
 *
 * A global function, not inlined: the verifier checks a global function
 * once, on its own, where it walks an inlined one (or a static subprogram)
 * again, up to 121 steps, on every path of the caller that reaches it.
 * Measured on kernel 6.18: mcast_from_container verifies in about 44,000
 * instructions with it (16,000 with the LPM trie), 215,000 with it static.
 * What it costs is a call per IPv6 lookup. @out is also its scratch
 * (struct mcast_policy6_scratch): on a miss it holds no policy.
 *
 * The 128-bit length set and the group are each worked on as two 64-bit
 * halves (host order): "low" is the set's bits 0-63 (/128 to /65), "high"
 * bits 64-127 (/64 to /1); the address's "high" half is its first 64 bits.
 * Each step takes the lowest set bit of the low half while it has one, else
 * of the high half, and masks the group by it, all without a branch: a
 * branch per step would double the paths the verifier walks at each of up
 * to 121 lengths.
 */
__noinline int mcast_policy6_probe(const struct mcast_in6_addr *saddr,
				   const struct mcast_in6_addr *daddr,
				   struct mcast_policy_val6 *out)
{
	struct mcast_policy6_scratch *s = (void *)out;
	const struct mcast_policy_lens6 *lens;
	const struct mcast_policy_val6 *pol;
	__u64 lo, hi;
	__u32 i;

	/* Checked by the verifier for a global function's pointers. */
	if (!saddr || !daddr || !out)
		return 0;
	s->key.prefixlen = 0;
	s->key.saddr = *saddr;
	s->key.daddr = *daddr;
	s->bucket = (bpf_ntohl(daddr->words[3]) >> 16) & (MCAST_POLICY6_LENS_BUCKETS - 1);
	lens = bpf_map_lookup_elem(&mcast_egw_policy_lens_v6, &s->bucket);
	if (!lens)
		return 0;
	/* One read of each word: the loop works on this snapshot of the set. */
	lo = *(volatile const __u32 *)&lens->dst_lens[0] |
	     (__u64)*(volatile const __u32 *)&lens->dst_lens[1] << 32;
	hi = *(volatile const __u32 *)&lens->dst_lens[2] |
	     (__u64)*(volatile const __u32 *)&lens->dst_lens[3] << 32;
	for (i = 0; i < MCAST_POLICY6_DST_LENS && (lo | hi); i++) {
		/* in_lo: all ones while a length of /65 or longer is left. */
		__u64 nz = mcast_nonzero64(lo);
		__u64 in_lo = -nz;
		__u64 cur = (lo & in_lo) | (hi & ~in_lo);
		__u64 low = cur & -cur;	/* the longest length left */
		__u64 host_bits = mcast_bit_index64(low) + (64 & ~in_lo);
		__u64 bit_lo = low & in_lo, bit_hi = low & ~in_lo;
		/*
		 * The 128-bit -(1 << host_bits), the mask of the top
		 * (128 - host_bits) bits, in halves: the high half borrows 1
		 * from the low half's negation unless that is 0.
		 */
		__u64 m_hi = -bit_hi - nz, m_lo = -bit_lo;

		lo &= ~bit_lo;
		hi &= ~bit_hi;
		if (host_bits > 128 - MCAST_POLICY6_DST_LEN_MIN)
			break;	/* not a length the controller writes */
		s->key.prefixlen = MCAST_POLICY6_SADDR_PREFIXLEN + 128 - host_bits;
		/*
		 * Lengths come longest first, each mask inside the last: the
		 * group masked so far, masked again, is the group masked.
		 */
		s->key.daddr.words[0] &= bpf_htonl((__u32)(m_hi >> 32));
		s->key.daddr.words[1] &= bpf_htonl((__u32)m_hi);
		s->key.daddr.words[2] &= bpf_htonl((__u32)(m_lo >> 32));
		s->key.daddr.words[3] &= bpf_htonl((__u32)m_lo);
		pol = bpf_map_lookup_elem(&mcast_egw_policy_hash_v6, &s->key);
		if (pol) {
			*out = *pol;
			return 1;
		}
	}
	return 0;
}

static __always_inline bool mcast_policy_lookup6(const struct mcast_in6_addr *saddr,
						 const struct mcast_in6_addr *daddr,
						 struct mcast_policy_val6 *out)
{
	return mcast_policy6_probe(saddr, daddr, out) != 0;
}
#else
/*
 * Benchmark builds only (bpf/bench/): the LPM tries this project used before
 * the hashes, with their lookups, so that `make bench` compares both in one
 * run. Not pinned (no mcast_egw_ prefix): the benchmark fills them itself.
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

/*
 * The IPv6 LPM trie of the builds before mcast_egw_policy_hash_v6, looked
 * up with the full 256 bits (the pod's /128 and the group).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct mcast_policy_key6);
	__type(value, struct mcast_policy_val6);
	__uint(max_entries, MCAST_EGW_POLICY_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_bench_policy_lpm_v6 SEC(".maps");

static __always_inline bool mcast_policy_lookup6(const struct mcast_in6_addr *saddr,
						 const struct mcast_in6_addr *daddr,
						 struct mcast_policy_val6 *out)
{
	struct mcast_policy_key6 key = {
		.prefixlen = MCAST_POLICY6_SADDR_PREFIXLEN + 128,
		.saddr = *saddr,
		.daddr = *daddr,
	};
	const struct mcast_policy_val6 *pol;

	pol = bpf_map_lookup_elem(&mcast_bench_policy_lpm_v6, &key);
	if (!pol)
		return false;
	*out = *pol;
	return true;
}
#endif /* MCAST_BENCH_POLICY_LPM */

#endif /* MCAST_LIB_POLICY_H */
