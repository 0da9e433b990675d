/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_ORIGIN_H
#define MCAST_LIB_ORIGIN_H

/*
 * The origin: a pod's multicast, seen on its veth before Cilium's
 * cil_from_container. What a CiliumEgressGatewayPolicy covers goes to the
 * policy's gateway: through the tunnel when that is another node, out of the
 * uplink when it is this one. Everything else goes on to Cilium untouched.
 */
#include "common.h"
#include "ipv4.h"
#include "config.h"
#include "policy.h"
#include "endpoints.h"
#include "groups.h"
#include "metrics.h"
#include "tunnel.h"
#include "pending.h"
#include "gateway.h"
#include "family.h"

/*
 * The pod's packet to a gateway on another node: VXLAN over the IPv4
 * underlay for either family. Only IPv4 is ever @clone (Cilium's in-cluster
 * multicast is IPv4 only), so the IPv6 instance is the first branch alone.
 */
static __always_inline int mcast_origin_to_tunnel(struct __sk_buff *skb, const int af,
						  const struct mcast_config *cfg,
						  const union mcast_pkt_af *p,
						  const union mcast_policy_af *polp,
						  const struct mcast_endpoint_val *ep, bool clone)
{
	const struct mcast_policy_val *pol = &polp->v4;
	const struct mcast_pkt *pkt = &p->v4;
	struct mcast_tunnel_pending *pending;
	__u32 tunnel = cfg->tunnel_ifindex;
	bool applied;
	int ret;

	if (!tunnel)
		return mcast_af_fail(skb, af, p, MCAST_DROP_NO_TUNNEL, MCAST_ROLE_ORIGIN, clone);
	/*
	 * No bpf_check_mtu() here: it costs a device lookup (~18 ns, most of
	 * this path's validation budget) for what the controller already
	 * keeps true: the tunnel ifindex is that of a device that exists (0,
	 * so no_tunnel, while it does not), and a pod's MTU (and so each GSO
	 * segment) is below the tunnel device's.
	 */
	if (!clone) {
		/* The packet itself leaves: nothing is handed on to carry the key. */
		if (mcast_tunnel_key_set(skb, cfg->node_ip, mcast_af_gateway_ip(af, polp),
					 ep->sec_identity) < 0)
			return mcast_af_drop(skb, af, p, MCAST_DROP_TUNNEL_KEY, MCAST_ROLE_ORIGIN);
		MCAST_BENCH_STAGE(MCAST_STAGE_TUNNEL_KEY);
		/*
		 * bpf_redirect() with flags 0 always takes the packet; the
		 * device receives it once we return. What the device then
		 * refuses shows in its own tx counters, not in ours.
		 */
		mcast_af_count_fwd(skb, af, p, mcast_af_policy_id(af, polp), MCAST_ROLE_ORIGIN);
		MCAST_BENCH_STAGE(MCAST_STAGE_COUNT);
		return bpf_redirect(tunnel, 0);
	}
	if (af != MCAST_AF_INET)
		return MCAST_TCX_DROP;	/* never: IPv6 is never cloned */

	/*
	 * Cilium gets the original exactly as the pod sent it, so the key must
	 * not go on the original (the clone would share it, and nothing takes
	 * it off again): it waits in this CPU's slot, and mcast_to_overlay on
	 * the tunnel device's egress puts it on the copy while the copy is
	 * sent, inside bpf_clone_redirect() (see lib/pending.h).
	 */
	pending = mcast_pending_arm(cfg->node_ip, pol->gateway_ip, ep->sec_identity,
				    pkt->saddr, pkt->daddr);
	if (!pending)
		return mcast_fail(skb, pkt, MCAST_DROP_TUNNEL_KEY, MCAST_ROLE_ORIGIN, clone);
	ret = bpf_clone_redirect(skb, tunnel, 0);
	/* Always disarmed: no later packet may take this key. */
	applied = mcast_pending_disarm(pending);
	if (ret < 0)
		mcast_drop(skb, pkt, MCAST_DROP_CLONE, MCAST_ROLE_ORIGIN);
	else if (!applied)
		/*
		 * Sent without the key (mcast_to_overlay not attached, or the
		 * key could not be set): the collect-md device drops it.
		 */
		mcast_drop(skb, pkt, MCAST_DROP_TUNNEL_KEY, MCAST_ROLE_ORIGIN);
	else if (!mcast_clone_taken(ret))
		/* Keyed, then dropped behind our egress program. */
		mcast_drop(skb, pkt, MCAST_DROP_CLONE, MCAST_ROLE_ORIGIN);
	else
		mcast_count_fwd(skb, pkt, pol->policy_id, MCAST_ROLE_ORIGIN);
	return MCAST_TCX_NEXT;
}

static __always_inline int mcast_handle_origin(struct __sk_buff *skb, const int af)
{
	const struct mcast_endpoint_val *ep;
	union mcast_policy_af pol;
	const struct mcast_config *cfg;
	union mcast_pkt_af pkt;
	__be32 gateway;
	bool clone;
	int reason;

	if (mcast_af_parse(skb, af, &pkt) < 0)
		return MCAST_TCX_NEXT;
	if (mcast_af_never_egress(skb, af, &pkt))
		return MCAST_TCX_NEXT;
	MCAST_BENCH_STAGE(MCAST_STAGE_PARSE);

	if (!mcast_af_policy_lookup(af, &pkt, &pol) || mcast_af_excluded(af, &pol))
		return MCAST_TCX_NEXT;
	MCAST_BENCH_STAGE(MCAST_STAGE_POLICY);

	/*
	 * We run before Cilium's own source check, so the pod must own its
	 * source address here, or another pod's policy and identity could be
	 * borrowed by spoofing.
	 */
	ep = mcast_af_endpoint_lookup(af, &pkt);
	if (!ep)
		return mcast_af_drop(skb, af, &pkt, MCAST_DROP_UNKNOWN_SOURCE, MCAST_ROLE_ORIGIN);
	if (ep->ifindex != skb->ifindex)
		return mcast_af_drop(skb, af, &pkt, MCAST_DROP_SPOOFED_SOURCE, MCAST_ROLE_ORIGIN);
	/*
	 * The entry was made for the pod with this identity: a stale entry for
	 * an address another pod has since taken does not apply to it.
	 */
	if (ep->sec_identity != mcast_af_origin_identity(af, &pol))
		return mcast_af_drop(skb, af, &pkt, MCAST_DROP_ORIGIN_MISMATCH, MCAST_ROLE_ORIGIN);
	MCAST_BENCH_STAGE(MCAST_STAGE_ENDPOINT);

	cfg = mcast_config_get();
	if (!cfg)
		return MCAST_TCX_NEXT;
	/*
	 * Only a lookup when Cilium's multicast has groups at all; never for
	 * IPv6, which Cilium's in-cluster multicast does not carry.
	 */
	clone = af == MCAST_AF_INET && (cfg->flags & MCAST_CONFIG_F_CILIUM_GROUPS) &&
		mcast_group_is_cilium(pkt.v4.daddr);

	/* Cilium drops unicast egress without a gateway too. */
	if (!mcast_af_has_gateway(af, &pol))
		return mcast_af_fail(skb, af, &pkt, MCAST_DROP_NO_GATEWAY, MCAST_ROLE_ORIGIN, clone);
	MCAST_BENCH_STAGE(MCAST_STAGE_CONFIG);
	if (!mcast_af_dst_mac_ok(skb, af, &pkt))
		return mcast_af_fail(skb, af, &pkt, MCAST_DROP_DST_MAC, MCAST_ROLE_ORIGIN, clone);
	reason = mcast_af_validate(skb, af, &pkt);
	if (reason)
		return mcast_af_fail(skb, af, &pkt, reason, MCAST_ROLE_ORIGIN, clone);
	if (mcast_af_proto(af, &pkt) != IPPROTO_UDP)
		return mcast_af_fail(skb, af, &pkt, MCAST_DROP_UNSUPPORTED_PROTO, MCAST_ROLE_ORIGIN,
				     clone);
	MCAST_BENCH_STAGE(MCAST_STAGE_VALIDATE);

	gateway = mcast_af_gateway_ip(af, &pol);
	if (cfg->node_ip && gateway == cfg->node_ip) {
		/* This node is the gateway: no tunnel, act here. */
		return mcast_af_gateway_emit(skb, af, &pkt, &pol, clone, MCAST_ROLE_ORIGIN);
	}
	return mcast_origin_to_tunnel(skb, af, cfg, &pkt, &pol, ep, clone);
}

/*
 * The IPv6 instance as a subprogram of its own (a BPF-to-BPF call): the
 * IPv4 instance, every IPv4 packet's path, then compiles register for
 * register as it did before IPv6 existed, with no blocks shared.
 */
static __noinline int mcast_origin_recv6(struct __sk_buff *skb)
{
	return mcast_handle_origin(skb, MCAST_AF_INET6);
}

/*
 * Every frame a pod sends: the whole of mcast_from_container. IPv4 is
 * classified first, exactly as before IPv6 was handled: its unicast and
 * multicast pay nothing for it; only what is not IPv4 asks the IPv6
 * question.
 */
static __always_inline int mcast_origin_recv(struct __sk_buff *skb)
{
	MCAST_BENCH_STAGE(MCAST_STAGE_START);
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (!ipv4_frame_is_untagged_multicast(skb))
			return MCAST_TCX_NEXT;
		MCAST_BENCH_STAGE(MCAST_STAGE_CLASSIFY);
		return mcast_handle_origin(skb, MCAST_AF_INET);
	}
	if (!ipv6_frame_is_untagged_multicast(skb))
		return MCAST_TCX_NEXT;
	return mcast_origin_recv6(skb);
}

#endif /* MCAST_LIB_ORIGIN_H */
