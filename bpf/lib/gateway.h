/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_GATEWAY_H
#define MCAST_LIB_GATEWAY_H

#include "common.h"
#include "ipv4.h"
#include "ipv6.h"
#include "metrics.h"

/* Uplinks that policies egress through, with the MAC to send from. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct mcast_iface_val);
	__uint(max_entries, MCAST_EGW_IFACES_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_egw_egress_ifaces SEC(".maps");

#define IPV4_TTL_OFF		(ETH_HLEN + __builtin_offsetof(struct iphdr, ttl))

/* The bytes a rewrite touches, kept to undo it after a clone. */
struct mcast_saved_hdr {
	struct ethhdr eth;
	__u8 pad[2];
	__u8 ttl_to_saddr[8];	/* ttl, protocol, check, saddr */
	__be16 udp_check;
	__u8 pad2[2];
};

/*
 * Put the bytes saved before a rewrite back, written directly: the caller
 * has undone the rewrite through the checksum helper already, so these
 * writes change at most the representation of a checksum (0x0000 versus
 * 0xffff), as bpf_skb_store_bytes() without BPF_F_RECOMPUTE_CSUM would.
 * Direct writes are allowed here although the packet was just cloned:
 * bpf_clone_redirect() makes the original's head private again before it
 * returns. The helpers before this one may have moved the data, so the
 * pointers are loaded afresh.
 */
static __always_inline int mcast_restore_hdr(struct __sk_buff *skb,
					     const struct mcast_saved_hdr *saved, bool fix_udp)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip4 = data + ETH_HLEN;
	struct udphdr *udp;

	if ((void *)(ip4 + 1) > data_end)
		return -1;
	__builtin_memcpy(data, &saved->eth, sizeof(saved->eth));
	__builtin_memcpy(&ip4->ttl, saved->ttl_to_saddr, sizeof(saved->ttl_to_saddr));
	if (!fix_udp)
		return 0;
	/* The IHL is not among the bytes a rewrite touches. */
	udp = (void *)ip4 + ip4->ihl * 4;
	if ((void *)(udp + 1) > data_end)
		return -1;
	udp->check = saved->udp_check;
	return 0;
}

/* A packet left the uplink: count it, and at its origin too if it is one. */
static __always_inline void mcast_count_emitted(const struct __sk_buff *skb,
						const struct mcast_pkt *pkt, __u32 policy_id,
						enum mcast_role role)
{
	if (role == MCAST_ROLE_ORIGIN)
		mcast_count_fwd(skb, pkt, policy_id, MCAST_ROLE_ORIGIN);
	mcast_count_fwd(skb, pkt, policy_id, MCAST_ROLE_GATEWAY);
}

/* Fold a 32-bit sum of 16-bit words into 16 bits (one's complement). */
static __always_inline __u16 csum16_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/*
 * Rewrite the source @from_saddr -> @to_saddr and the TTL to @to_ttl,
 * fixing the IPv4 header checksum and, through the pseudo-header, the UDP
 * checksum.
 *
 * The IPv4 header is written directly, its checksum updated incrementally
 * (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')). A valid header sums to all
 * ones before and after, so skb->csum (CHECKSUM_COMPLETE) needs no change
 * for it. The UDP checksum goes through the kernel's helper, which keeps
 * skb->csum right for CHECKSUM_COMPLETE and only touches the pseudo-header
 * sum for CHECKSUM_PARTIAL. Direct writes instead of one helper call per
 * field: every gateway packet pays for this.
 */
static __always_inline int mcast_rewrite_l3(struct __sk_buff *skb, const struct mcast_pkt *pkt,
					    bool fix_udp, __be32 from_saddr, __be32 to_saddr,
					    __u8 to_ttl)
{
	__u32 udp_check_off = pkt->l4_off + __builtin_offsetof(struct udphdr, check);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip4 = data + ETH_HLEN;
	__u16 *ttl_proto;
	__u16 old_word;
	__u32 sum;

	if ((void *)(ip4 + 1) > data_end)
		return -1;
	ttl_proto = (__u16 *)&ip4->ttl;
	old_word = *ttl_proto;
	ip4->ttl = to_ttl;
	sum = (__u16)~ip4->check;
	sum += (__u16)~old_word + *ttl_proto;
	sum += (__u16)~(from_saddr >> 16) + (__u16)~(from_saddr & 0xffff);
	sum += (to_saddr >> 16) + (to_saddr & 0xffff);
	ip4->check = (__u16)~csum16_fold(sum);
	ip4->saddr = to_saddr;
	/*
	 * BPF_F_MARK_MANGLED_0: a result of 0 is sent as 0xffff, since 0 means
	 * "no checksum" in UDP (RFC 768).
	 */
	if (fix_udp && bpf_l4_csum_replace(skb, udp_check_off, from_saddr, to_saddr,
					   BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 |
					   sizeof(__be32)) < 0)
		return -1;
	return 0;
}

/* Ethernet header for @group from the uplink's @mac, written directly. */
static __always_inline int mcast_rewrite_l2(struct __sk_buff *skb, __be32 group,
					    const __u8 mac[ETH_ALEN])
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	/* Never a FIB or neighbour lookup: the MAC follows from the group. */
	ipv4_mcast_mac(group, eth->h_dest);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	return 0;
}

/*
 * Multicast is not fragmented on the way out (IPv4 DF packets may not be,
 * IPv6 routers never fragment): a frame over the uplink's MTU would vanish
 * in the driver, so it is counted instead. A GSO packet is checked segment
 * by segment (each leaves as a packet of its own). An uplink that is gone
 * is a redirect that could not happen. Returns 0 or the drop reason.
 */
static __always_inline int mcast_gateway_mtu_check(struct __sk_buff *skb, __u32 ifindex)
{
	__u32 mtu_len = 0;
	int ret;

	ret = bpf_check_mtu(skb, ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS);
	if (ret < 0)
		return MCAST_DROP_REDIRECT;
	if (ret != BPF_MTU_CHK_RET_SUCCESS)
		return MCAST_DROP_MTU_EXCEEDED;
	return 0;
}

/*
 * The gateway action: the packet leaves this node's uplink as if this node
 * had sent it. SNAT to the egress IP (stateless: multicast has no replies),
 * TTL - 1 like any router, Ethernet header for the group, redirect.
 *
 * @clone: Cilium replicates this group in the cluster too. Send a rewritten
 * copy out and return MCAST_TCX_NEXT with the original restored byte for
 * byte, for Cilium's program.
 *
 * @role: MCAST_ROLE_ORIGIN when the pod is on this node (the packet counts
 * as captured at its origin too, once it leaves), MCAST_ROLE_GATEWAY when
 * it came through the tunnel.
 *
 * The caller has checked that this node is the policy's gateway.
 */
static __always_inline int mcast_gateway_emit(struct __sk_buff *skb, const struct mcast_pkt *pkt,
					      const struct mcast_policy_val *pol, bool clone,
					      enum mcast_role role)
{
	const struct mcast_iface_val *iface;
	__u32 ifindex = pol->egress_ifindex;
	__be32 egress_ip = pol->egress_ip;
	struct mcast_saved_hdr saved;
	bool fix_udp = false;
	__be16 udp_check = 0;
	__u32 mtu_len = 0;
	__u8 new_ttl;
	int ret;

	if (!egress_ip || !ifindex)
		return mcast_fail(skb, pkt, MCAST_DROP_NO_EGRESS_IP, MCAST_ROLE_GATEWAY, clone);
	iface = bpf_map_lookup_elem(&mcast_egw_egress_ifaces, &ifindex);
	if (!iface)
		return mcast_fail(skb, pkt, MCAST_DROP_NO_EGRESS_IFACE, MCAST_ROLE_GATEWAY, clone);
	if (pkt->proto != IPPROTO_UDP)
		return mcast_fail(skb, pkt, MCAST_DROP_UNSUPPORTED_PROTO, MCAST_ROLE_GATEWAY, clone);
	if (pkt->ttl <= 1)
		return mcast_fail(skb, pkt, MCAST_DROP_TTL_EXCEEDED, MCAST_ROLE_GATEWAY, clone);
	MCAST_BENCH_STAGE(MCAST_STAGE_IFACE);
	/* As mcast_gateway_mtu_check(), spelt out: the IPv4 hot path as it was. */
	ret = bpf_check_mtu(skb, ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS);
	if (ret < 0)
		return mcast_fail(skb, pkt, MCAST_DROP_REDIRECT, MCAST_ROLE_GATEWAY, clone);
	if (ret != BPF_MTU_CHK_RET_SUCCESS)
		return mcast_fail(skb, pkt, MCAST_DROP_MTU_EXCEEDED, MCAST_ROLE_GATEWAY, clone);
	MCAST_BENCH_STAGE(MCAST_STAGE_MTU);
	new_ttl = pkt->ttl - 1;

	/* Only the first fragment has a UDP header (RFC 791). */
	if (!ipv4_is_later_fragment(pkt->frag_off)) {
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		struct iphdr *ip4 = data + ETH_HLEN;
		struct udphdr *udp;

		/* Validated and linear: the UDP header is in the frame. */
		if ((void *)(ip4 + 1) > data_end)
			return mcast_fail(skb, pkt, MCAST_DROP_MALFORMED, MCAST_ROLE_GATEWAY, clone);
		udp = (void *)ip4 + ip4->ihl * 4;
		if ((void *)(udp + 1) > data_end)
			return mcast_fail(skb, pkt, MCAST_DROP_MALFORMED, MCAST_ROLE_GATEWAY, clone);
		udp_check = udp->check;
		/* A zero UDP checksum means "none" and stays zero (RFC 768). */
		fix_udp = udp_check != 0;
	}

	if (clone) {
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;

		/* Read directly: validated and linear, IPv4 header included. */
		if (data + ETH_HLEN + sizeof(struct iphdr) > data_end)
			return mcast_fail(skb, pkt, MCAST_DROP_REWRITE, MCAST_ROLE_GATEWAY, clone);
		__builtin_memcpy(&saved.eth, data, sizeof(saved.eth));
		__builtin_memcpy(saved.ttl_to_saddr, data + IPV4_TTL_OFF,
				 sizeof(saved.ttl_to_saddr));
		saved.udp_check = udp_check;
	}
	MCAST_BENCH_STAGE(MCAST_STAGE_UDP);

	/* From here on a failure may leave the packet half rewritten: drop it,
	 * even when Cilium was to get it too. */
	if (mcast_rewrite_l3(skb, pkt, fix_udp, pkt->saddr, egress_ip, new_ttl) < 0)
		goto rewrite_failed;
	MCAST_BENCH_STAGE(MCAST_STAGE_L3);
	if (mcast_rewrite_l2(skb, pkt->daddr, iface->mac) < 0)
		goto rewrite_failed;
	MCAST_BENCH_STAGE(MCAST_STAGE_L2);

	if (!clone) {
		/*
		 * bpf_redirect() with flags 0 always takes the packet (the uplink
		 * was found above); what the device then refuses, e.g. while it
		 * is down, shows in its own tx counters, not in ours.
		 */
		mcast_count_emitted(skb, pkt, pol->policy_id, role);
		MCAST_BENCH_STAGE(MCAST_STAGE_COUNT);
		return bpf_redirect(ifindex, 0);
	}

	if (!mcast_clone_taken(bpf_clone_redirect(skb, ifindex, 0)))
		mcast_drop(skb, pkt, MCAST_DROP_CLONE, MCAST_ROLE_GATEWAY);
	else
		mcast_count_emitted(skb, pkt, pol->policy_id, role);

	/*
	 * Undo through the same helper (keeps skb->csum consistent), then put
	 * the saved bytes back so that even the representation of a checksum
	 * (0x0000 versus 0xffff) is what the pod sent.
	 */
	if (mcast_rewrite_l3(skb, pkt, fix_udp, egress_ip, pkt->saddr, pkt->ttl) < 0 ||
	    mcast_restore_hdr(skb, &saved, fix_udp) < 0)
		return mcast_drop(skb, pkt, MCAST_DROP_REWRITE, MCAST_ROLE_GATEWAY);
	return MCAST_TCX_NEXT;

rewrite_failed:
	return mcast_drop(skb, pkt, MCAST_DROP_REWRITE, MCAST_ROLE_GATEWAY);
}

/* Fold a 64-bit sum of 32-bit words to a 32-bit one's complement sum. */
static __always_inline __u32 csum32_fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return sum;
}

/*
 * The IPv6 rewrite: source @pkt->saddr -> @to_saddr, hop limit - 1 (IPv6
 * has no header checksum), and for a first or only fragment the UDP
 * checksum through the pseudo-header.
 *
 * The address is written directly; its change (a 32-bit sum, as
 * bpf_csum_diff() computes it) goes into the UDP checksum through the
 * kernel's helper, which only touches the pseudo-header sum for
 * CHECKSUM_PARTIAL and writes 0xffff for a result of 0 (BPF_F_MARK_MANGLED_0:
 * 0 would mean "no checksum", invalid in IPv6). For CHECKSUM_COMPLETE the
 * helper takes the field's change out of skb->csum, as it does for IPv4
 * where the IPv4 header checksum makes up for the address; here nothing
 * does, so the address's and the hop limit's change go into skb->csum
 * (bpf_csum_update(), a no-op otherwise). Without BPF_F_IPV6 (kernel 6.16+)
 * so that kernel 6.6 runs it too.
 */
static __always_inline int mcast_rewrite_l3_v6(struct __sk_buff *skb, const struct mcast_pkt6 *pkt,
					       const struct mcast_in6_addr *to_saddr)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	__u16 *hop_word, old_hop_word;
	__u64 sum = 0;
	__u32 diff;
	int i;

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	for (i = 0; i < 4; i++)
		sum += (__u32)~pkt->saddr.words[i] + (__u64)to_saddr->words[i];
	diff = csum32_fold(sum);

	/* nexthdr and hop_limit: one 16-bit word of the header. */
	hop_word = (__u16 *)&ip6->nexthdr;
	old_hop_word = *hop_word;
	ip6->hop_limit = pkt->hop_limit - 1;
	__builtin_memcpy(&ip6->saddr, to_saddr, sizeof(*to_saddr));
	sum = (__u64)diff + (__u16)~old_hop_word + *hop_word;
	bpf_csum_update(skb, csum32_fold(sum));

	/* Later fragments carry no UDP header (RFC 8200 4.5). */
	if (pkt->frag_off)
		return 0;
	if (bpf_l4_csum_replace(skb, pkt->l4_off + __builtin_offsetof(struct udphdr, check), 0,
				diff, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0) < 0)
		return -1;
	return 0;
}

/* Ethernet header for the IPv6 @group from the uplink's @mac, written directly. */
static __always_inline int mcast_rewrite_l2_v6(struct __sk_buff *skb,
					       const struct mcast_in6_addr *group,
					       const __u8 mac[ETH_ALEN])
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	ipv6_mcast_mac(group, eth->h_dest);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	return 0;
}

static __always_inline void mcast_count_emitted6(const struct __sk_buff *skb,
						 const struct mcast_pkt6 *pkt, __u32 policy_id,
						 enum mcast_role role)
{
	if (role == MCAST_ROLE_ORIGIN)
		mcast_count_fwd6(skb, pkt, policy_id, MCAST_ROLE_ORIGIN);
	mcast_count_fwd6(skb, pkt, policy_id, MCAST_ROLE_GATEWAY);
}

/*
 * mcast_gateway_emit() for IPv6: SNAT to the policy's egress IPv6, hop
 * limit - 1, Ethernet header for the group, redirect to the uplink. Never
 * a copy: Cilium's in-cluster multicast is IPv4 only. We send no ICMPv6
 * Packet Too Big for what exceeds the uplink's MTU (the source is a pod
 * behind a policy, not a host on the path): it is counted as mtu_exceeded.
 */
static __always_inline int mcast_gateway_emit6(struct __sk_buff *skb, const struct mcast_pkt6 *pkt,
					       const struct mcast_policy_val6 *pol,
					       enum mcast_role role)
{
	const struct mcast_iface_val *iface;
	__u32 ifindex = pol->egress_ifindex;
	int reason;

	if (ipv6_addr_is_unspecified(&pol->egress_ip) || !ifindex)
		return mcast_drop6(skb, pkt, MCAST_DROP_NO_EGRESS_IP, MCAST_ROLE_GATEWAY);
	iface = bpf_map_lookup_elem(&mcast_egw_egress_ifaces, &ifindex);
	if (!iface)
		return mcast_drop6(skb, pkt, MCAST_DROP_NO_EGRESS_IFACE, MCAST_ROLE_GATEWAY);
	if (pkt->proto != IPPROTO_UDP)
		return mcast_drop6(skb, pkt, MCAST_DROP_UNSUPPORTED_PROTO, MCAST_ROLE_GATEWAY);
	if (pkt->hop_limit <= 1)
		return mcast_drop6(skb, pkt, MCAST_DROP_TTL_EXCEEDED, MCAST_ROLE_GATEWAY);
	reason = mcast_gateway_mtu_check(skb, ifindex);
	if (reason)
		return mcast_drop6(skb, pkt, reason, MCAST_ROLE_GATEWAY);

	if (mcast_rewrite_l3_v6(skb, pkt, &pol->egress_ip) < 0 ||
	    mcast_rewrite_l2_v6(skb, &pkt->daddr, iface->mac) < 0)
		return mcast_drop6(skb, pkt, MCAST_DROP_REWRITE, MCAST_ROLE_GATEWAY);
	/* As IPv4: bpf_redirect() with flags 0 always takes the packet. */
	mcast_count_emitted6(skb, pkt, pol->policy_id, role);
	return bpf_redirect(ifindex, 0);
}

#endif /* MCAST_LIB_GATEWAY_H */
