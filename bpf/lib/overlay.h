/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_OVERLAY_H
#define MCAST_LIB_OVERLAY_H

/*
 * The gateway's receive side: what arrives on the tunnel device before
 * Cilium's cil_from_overlay. A pod's multicast tunnelled here by an origin
 * node leaves through this node's uplink with the policy's egress IP as
 * source. Everything else goes on to Cilium untouched.
 *
 * The tunnel key is read through lib/tunnel.h, which the test build
 * (MCAST_TEST_TUNNEL_KEY) feeds from a map instead.
 */
#include "common.h"
#include "ipv4.h"
#include "config.h"
#include "policy.h"
#include "nodes.h"
#include "groups.h"
#include "metrics.h"
#include "tunnel.h"
#include "gateway.h"
#include "family.h"

static __always_inline int mcast_handle_overlay(struct __sk_buff *skb, const int af)
{
	const struct mcast_config *cfg;
	union mcast_policy_af pol;
	union mcast_pkt_af pkt;
	__be32 remote;
	__u32 vni;
	int reason;

	if (mcast_af_parse(skb, af, &pkt) < 0)
		return MCAST_TCX_NEXT;
	if (mcast_af_never_egress(skb, af, &pkt))
		return MCAST_TCX_NEXT;
	MCAST_BENCH_STAGE(MCAST_STAGE_PARSE);
	if (mcast_tunnel_key_get(skb, &vni, &remote) < 0)
		return MCAST_TCX_NEXT;
	/* Cilium's in-cluster replication; our copies carry the pod's identity. */
	if (vni == MCAST_IDENTITY_WORLD)
		return MCAST_TCX_NEXT;
	MCAST_BENCH_STAGE(MCAST_STAGE_TUNNEL_GET);
	/*
	 * Any other VNI is a copy in a pod's name, and this node is the last
	 * point before the cluster's edge: it judges the copy by its own maps
	 * and never trusts the origin. What it refuses is dropped, not handed
	 * to Cilium: Cilium tunnels its own multicast with WORLD, so nothing
	 * of Cilium's is lost, and a copy a gateway refused must not reach
	 * Cilium's local multicast subscribers either.
	 *
	 * Nobody outside the cluster may send traffic out with our egress IP.
	 */
	if (!mcast_node_is_known(remote))
		return mcast_af_drop(skb, af, &pkt, MCAST_DROP_UNKNOWN_PEER, MCAST_ROLE_GATEWAY);
	MCAST_BENCH_STAGE(MCAST_STAGE_NODE);
	/*
	 * A group no policy covers, or one the pod's policy excludes: the
	 * origin never sends these, but a stale or forged origin might.
	 */
	if (!mcast_af_policy_lookup(af, &pkt, &pol))
		return mcast_af_drop(skb, af, &pkt, MCAST_DROP_NO_POLICY, MCAST_ROLE_GATEWAY);
	if (mcast_af_excluded(af, &pol))
		return mcast_af_drop(skb, af, &pkt, MCAST_DROP_EXCLUDED, MCAST_ROLE_GATEWAY);
	MCAST_BENCH_STAGE(MCAST_STAGE_POLICY);
	/*
	 * Nor another node or pod in the pod's name: the copy must come from
	 * the node the pod runs on, with the pod's identity as VNI, as its
	 * origin program sends it.
	 */
	if (remote != mcast_af_origin_node(af, &pol) || vni != mcast_af_origin_identity(af, &pol))
		return mcast_af_drop(skb, af, &pkt, MCAST_DROP_ORIGIN_MISMATCH, MCAST_ROLE_GATEWAY);

	cfg = mcast_config_get();
	if (!cfg || !cfg->node_ip || mcast_af_gateway_ip(af, &pol) != cfg->node_ip)
		return mcast_af_drop(skb, af, &pkt, MCAST_DROP_NOT_GATEWAY, MCAST_ROLE_GATEWAY);
	MCAST_BENCH_STAGE(MCAST_STAGE_CONFIG);

	/*
	 * The pod's frame inside, as its origin checked it: to its group's
	 * MAC. An origin of another version, or a forged one, is not trusted.
	 */
	if (!mcast_af_dst_mac_ok(skb, af, &pkt))
		return mcast_af_drop(skb, af, &pkt, MCAST_DROP_DST_MAC, MCAST_ROLE_GATEWAY);
	reason = mcast_af_validate(skb, af, &pkt);
	if (reason)
		return mcast_af_drop(skb, af, &pkt, reason, MCAST_ROLE_GATEWAY);
	MCAST_BENCH_STAGE(MCAST_STAGE_VALIDATE);

	/*
	 * The origin already cloned for Cilium's in-cluster copies when it had
	 * to; this packet is ours alone.
	 */
	return mcast_af_gateway_emit(skb, af, &pkt, &pol, false, MCAST_ROLE_GATEWAY);
}

/*
 * The IPv6 instance as a subprogram of its own (a BPF-to-BPF call): the
 * IPv4 instance, every IPv4 packet's path, then compiles register for
 * register as it did before IPv6 existed, with no blocks shared.
 */
static __noinline int mcast_overlay_recv6(struct __sk_buff *skb)
{
	return mcast_handle_overlay(skb, MCAST_AF_INET6);
}

/*
 * Every frame the tunnel device receives: the whole of mcast_from_overlay.
 * IPv4 first, as in mcast_origin_recv().
 */
static __always_inline int mcast_overlay_recv(struct __sk_buff *skb)
{
	MCAST_BENCH_STAGE(MCAST_STAGE_START);
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (!ipv4_frame_is_untagged_multicast(skb))
			return MCAST_TCX_NEXT;
		MCAST_BENCH_STAGE(MCAST_STAGE_CLASSIFY);
		return mcast_handle_overlay(skb, MCAST_AF_INET);
	}
	if (!ipv6_frame_is_untagged_multicast(skb))
		return MCAST_TCX_NEXT;
	return mcast_overlay_recv6(skb);
}

#endif /* MCAST_LIB_OVERLAY_H */
