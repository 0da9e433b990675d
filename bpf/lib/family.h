/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_FAMILY_H
#define MCAST_LIB_FAMILY_H

/*
 * One origin and one gateway flow for both families (lib/origin.h,
 * lib/overlay.h): each step below takes the family as a constant of the
 * caller's, and every caller is __always_inline, so the compiler keeps one
 * family's branch of each step and drops the other. The IPv4 path compiles
 * to what it was before IPv6 existed; the IPv6 path is a second instance,
 * not a copy. The per-family work is in lib/ipv4.h and lib/ipv6.h, the
 * counters in lib/metrics.h, the rewrite in lib/gateway.h.
 */
#include "common.h"
#include "ipv4.h"
#include "ipv6.h"
#include "policy.h"
#include "endpoints.h"
#include "metrics.h"
#include "gateway.h"

#define MCAST_AF_INET		4
#define MCAST_AF_INET6		6

/* A packet of the caller's family. */
union mcast_pkt_af {
	struct mcast_pkt v4;
	struct mcast_pkt6 v6;
};

/* A policy entry of the caller's family. */
union mcast_policy_af {
	struct mcast_policy_val v4;
	struct mcast_policy_val6 v6;
};

static __always_inline int mcast_af_parse(struct __sk_buff *skb, const int af,
					  union mcast_pkt_af *p)
{
	if (af == MCAST_AF_INET)
		return ipv4_mcast_parse(skb, &p->v4);
	return ipv6_mcast_parse(skb, &p->v6);
}

static __always_inline bool mcast_af_never_egress(struct __sk_buff *skb, const int af,
						  const union mcast_pkt_af *p)
{
	if (af == MCAST_AF_INET)
		return ipv4_mcast_never_egress(p->v4.daddr, p->v4.proto);
	return ipv6_mcast_never_egress(skb, &p->v6);
}

static __always_inline bool mcast_af_policy_lookup(const int af, const union mcast_pkt_af *p,
						   union mcast_policy_af *pol)
{
	if (af == MCAST_AF_INET)
		return mcast_policy_lookup(p->v4.saddr, p->v4.daddr, &pol->v4);
	return mcast_policy_lookup6(&p->v6.saddr, &p->v6.daddr, &pol->v6);
}

/* The fields both families' entries have, by family. */
static __always_inline __be32 mcast_af_gateway_ip(const int af, const union mcast_policy_af *pol)
{
	return af == MCAST_AF_INET ? pol->v4.gateway_ip : pol->v6.gateway_ip;
}

static __always_inline __be32 mcast_af_origin_node(const int af, const union mcast_policy_af *pol)
{
	return af == MCAST_AF_INET ? pol->v4.origin_node_ip : pol->v6.origin_node_ip;
}

static __always_inline __u32 mcast_af_origin_identity(const int af,
						      const union mcast_policy_af *pol)
{
	return af == MCAST_AF_INET ? pol->v4.origin_identity : pol->v6.origin_identity;
}

static __always_inline __u32 mcast_af_policy_id(const int af, const union mcast_policy_af *pol)
{
	return af == MCAST_AF_INET ? pol->v4.policy_id : pol->v6.policy_id;
}

static __always_inline bool mcast_af_excluded(const int af, const union mcast_policy_af *pol)
{
	return mcast_af_gateway_ip(af, pol) == bpf_htonl(MCAST_GATEWAY_EXCLUDED);
}

static __always_inline bool mcast_af_has_gateway(const int af, const union mcast_policy_af *pol)
{
	return mcast_af_gateway_ip(af, pol) != bpf_htonl(MCAST_GATEWAY_NOT_FOUND);
}

static __always_inline const struct mcast_endpoint_val *
mcast_af_endpoint_lookup(const int af, const union mcast_pkt_af *p)
{
	if (af == MCAST_AF_INET)
		return mcast_endpoint_lookup(p->v4.saddr);
	return bpf_map_lookup_elem(&mcast_egw_endpoints_v6, &p->v6.saddr);
}

static __always_inline __u8 mcast_af_proto(const int af, const union mcast_pkt_af *p)
{
	return af == MCAST_AF_INET ? p->v4.proto : p->v6.proto;
}

/*
 * Is the frame addressed, at layer 2, to its group? A pod's kernel sends
 * every multicast datagram to the group's own MAC. Anything else (another
 * host's MAC, which a router's ip_rcv() drops as PACKET_OTHERHOST; the
 * node's own MAC, broadcast, another group's MAC, which it would take) is
 * a hand-made frame, and what is forwarded to a group is what was sent to
 * it. The headers are linear: the parse pulled them.
 */
static __always_inline bool mcast_af_dst_mac_ok(struct __sk_buff *skb, const int af,
						const union mcast_pkt_af *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return false;
	if (af == MCAST_AF_INET)
		return ipv4_mcast_mac_is(eth->h_dest, p->v4.daddr);
	return ipv6_mcast_mac_is(eth->h_dest, &p->v6.daddr);
}

static __always_inline int mcast_af_validate(struct __sk_buff *skb, const int af,
					     const union mcast_pkt_af *p)
{
	if (af == MCAST_AF_INET)
		return ipv4_mcast_validate(skb, &p->v4);
	return ipv6_mcast_validate(skb, &p->v6);
}

static __always_inline int mcast_af_drop(const struct __sk_buff *skb, const int af,
					 const union mcast_pkt_af *p, enum mcast_drop_reason reason,
					 enum mcast_role role)
{
	if (af == MCAST_AF_INET)
		return mcast_drop(skb, &p->v4, reason, role);
	return mcast_drop6(skb, &p->v6, reason, role);
}

/* mcast_fail(): IPv6 never goes to Cilium as well, so @to_cilium is false. */
static __always_inline int mcast_af_fail(const struct __sk_buff *skb, const int af,
					 const union mcast_pkt_af *p, enum mcast_drop_reason reason,
					 enum mcast_role role, bool to_cilium)
{
	mcast_af_drop(skb, af, p, reason, role);
	return to_cilium ? MCAST_TCX_NEXT : MCAST_TCX_DROP;
}

static __always_inline void mcast_af_count_fwd(const struct __sk_buff *skb, const int af,
					       const union mcast_pkt_af *p, __u32 policy_id,
					       enum mcast_role role)
{
	if (af == MCAST_AF_INET)
		mcast_count_fwd(skb, &p->v4, policy_id, role);
	else
		mcast_count_fwd6(skb, &p->v6, policy_id, role);
}

static __always_inline int mcast_af_gateway_emit(struct __sk_buff *skb, const int af,
						 const union mcast_pkt_af *p,
						 const union mcast_policy_af *pol, bool clone,
						 enum mcast_role role)
{
	if (af == MCAST_AF_INET)
		return mcast_gateway_emit(skb, &p->v4, &pol->v4, clone, role);
	return mcast_gateway_emit6(skb, &p->v6, &pol->v6, role);
}

#endif /* MCAST_LIB_FAMILY_H */
