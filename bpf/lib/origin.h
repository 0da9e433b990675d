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

static __always_inline int mcast_origin_to_tunnel(struct __sk_buff *skb,
						  const struct mcast_config *cfg,
						  const struct mcast_pkt *pkt,
						  const struct mcast_policy_val *pol,
						  const struct mcast_endpoint_val *ep, bool clone)
{
	struct mcast_tunnel_pending *pending;
	__u32 tunnel = cfg->tunnel_ifindex;
	bool applied;
	int ret;

	if (!tunnel)
		return mcast_fail(skb, pkt, MCAST_DROP_NO_TUNNEL, MCAST_ROLE_ORIGIN, clone);
	/*
	 * No bpf_check_mtu() here: it costs a device lookup (~18 ns, most of
	 * this path's validation budget) for what the controller already
	 * keeps true: the tunnel ifindex is that of a device that exists (0,
	 * so no_tunnel, while it does not), and a pod's MTU (and so each GSO
	 * segment) is below the tunnel device's.
	 */
	if (!clone) {
		/* The packet itself leaves: nothing is handed on to carry the key. */
		if (mcast_tunnel_key_set(skb, cfg->node_ip, pol->gateway_ip, ep->sec_identity) < 0)
			return mcast_drop(skb, pkt, MCAST_DROP_TUNNEL_KEY, MCAST_ROLE_ORIGIN);
		MCAST_BENCH_STAGE(MCAST_STAGE_TUNNEL_KEY);
		/*
		 * bpf_redirect() with flags 0 always takes the packet; the
		 * device receives it once we return. What the device then
		 * refuses shows in its own tx counters, not in ours.
		 */
		mcast_count_fwd(skb, pkt, pol->policy_id, MCAST_ROLE_ORIGIN);
		MCAST_BENCH_STAGE(MCAST_STAGE_COUNT);
		return bpf_redirect(tunnel, 0);
	}

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

static __always_inline int mcast_handle_origin(struct __sk_buff *skb)
{
	const struct mcast_endpoint_val *ep;
	struct mcast_policy_val pol_val;
	const struct mcast_policy_val *pol = &pol_val;
	const struct mcast_config *cfg;
	struct mcast_pkt pkt;
	bool clone;
	int reason;

	if (ipv4_mcast_parse(skb, &pkt) < 0)
		return MCAST_TCX_NEXT;
	if (ipv4_mcast_never_egress(pkt.daddr, pkt.proto))
		return MCAST_TCX_NEXT;
	MCAST_BENCH_STAGE(MCAST_STAGE_PARSE);

	if (!mcast_policy_lookup(pkt.saddr, pkt.daddr, &pol_val) || mcast_policy_is_excluded(pol))
		return MCAST_TCX_NEXT;
	MCAST_BENCH_STAGE(MCAST_STAGE_POLICY);

	/*
	 * We run before Cilium's own source check, so the pod must own its
	 * source address here, or another pod's policy and identity could be
	 * borrowed by spoofing.
	 */
	ep = mcast_endpoint_lookup(pkt.saddr);
	if (!ep)
		return mcast_drop(skb, &pkt, MCAST_DROP_UNKNOWN_SOURCE, MCAST_ROLE_ORIGIN);
	if (ep->ifindex != skb->ifindex)
		return mcast_drop(skb, &pkt, MCAST_DROP_SPOOFED_SOURCE, MCAST_ROLE_ORIGIN);
	/*
	 * The entry was made for the pod with this identity: a stale entry for
	 * an address another pod has since taken does not apply to it.
	 */
	if (ep->sec_identity != pol->origin_identity)
		return mcast_drop(skb, &pkt, MCAST_DROP_ORIGIN_MISMATCH, MCAST_ROLE_ORIGIN);
	MCAST_BENCH_STAGE(MCAST_STAGE_ENDPOINT);

	cfg = mcast_config_get();
	if (!cfg)
		return MCAST_TCX_NEXT;
	/* Only a lookup when Cilium's multicast has groups at all. */
	clone = (cfg->flags & MCAST_CONFIG_F_CILIUM_GROUPS) && mcast_group_is_cilium(pkt.daddr);

	/* Cilium drops unicast egress without a gateway too. */
	if (!mcast_policy_has_gateway(pol))
		return mcast_fail(skb, &pkt, MCAST_DROP_NO_GATEWAY, MCAST_ROLE_ORIGIN, clone);
	MCAST_BENCH_STAGE(MCAST_STAGE_CONFIG);
	reason = ipv4_mcast_validate(skb, &pkt);
	if (reason)
		return mcast_fail(skb, &pkt, reason, MCAST_ROLE_ORIGIN, clone);
	if (pkt.proto != IPPROTO_UDP)
		return mcast_fail(skb, &pkt, MCAST_DROP_UNSUPPORTED_PROTO, MCAST_ROLE_ORIGIN, clone);
	MCAST_BENCH_STAGE(MCAST_STAGE_VALIDATE);

	if (cfg->node_ip && pol->gateway_ip == cfg->node_ip) {
		/* This node is the gateway: no tunnel, act here. */
		return mcast_gateway_emit(skb, &pkt, pol, clone, MCAST_ROLE_ORIGIN);
	}
	return mcast_origin_to_tunnel(skb, cfg, &pkt, pol, ep, clone);
}

/* Every frame a pod sends: the whole of mcast_from_container. */
static __always_inline int mcast_origin_recv(struct __sk_buff *skb)
{
	MCAST_BENCH_STAGE(MCAST_STAGE_START);
	if (!ipv4_frame_is_untagged_multicast(skb))
		return MCAST_TCX_NEXT;
	MCAST_BENCH_STAGE(MCAST_STAGE_CLASSIFY);
	return mcast_handle_origin(skb);
}

#endif /* MCAST_LIB_ORIGIN_H */
