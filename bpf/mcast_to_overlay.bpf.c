// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcx egress of the tunnel device (cilium_vxlan), at the head of the chain
 * so it runs before Cilium's cil_to_overlay. Its one job: the copy that
 * mcast_from_container sends to a remote gateway while Cilium keeps the
 * original gets its tunnel key here, from the slot the origin armed around
 * bpf_clone_redirect() (see lib/pending.h). Every other packet, all of the
 * node's tunnelled unicast and Cilium's own multicast included, goes on
 * untouched. Never redirects.
 */
#include "lib/common.h"
#include "lib/ipv4.h"
#include "lib/tunnel.h"
#include "lib/pending.h"

#define IPV4_ADDRS_OFF		(ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))

SEC("tcx/egress")
int mcast_to_overlay(struct __sk_buff *skb)
{
	struct mcast_tunnel_pending *p;
	__be32 addrs[2];	/* saddr, daddr: adjacent in the IPv4 header */

	/* Unicast, ARP, IPv6: what this device mostly carries. */
	if (!ipv4_frame_is_multicast(skb))
		return MCAST_TCX_NEXT;
	/* Not armed: Cilium's own replication, or anything else tunnelled. */
	p = mcast_pending_armed();
	if (!p)
		return MCAST_TCX_NEXT;
	/*
	 * Armed for another packet cannot happen (the slot is armed only
	 * around the origin's synchronous clone); checked all the same, so
	 * that the key can only ever go on the copy it was made for.
	 */
	if (bpf_skb_load_bytes(skb, IPV4_ADDRS_OFF, addrs, sizeof(addrs)) < 0 ||
	    !mcast_pending_is_for(p, addrs[0], addrs[1]))
		return MCAST_TCX_NEXT;
	/*
	 * A copy without a key would be dropped by the collect-md device
	 * anyway; dropped here, the slot stays armed and the origin counts it
	 * (tunnel_key).
	 */
	if (mcast_tunnel_key_set(skb, p->local_ipv4, p->remote_ipv4, p->tunnel_id) < 0)
		return MCAST_TCX_DROP;
	mcast_pending_applied(p);
	return MCAST_TCX_NEXT;
}

char _license[] SEC("license") = "Dual BSD/GPL";
