/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_PENDING_H
#define MCAST_LIB_PENDING_H

#include "common.h"
#include "ipv4.h"
#include "tunnel.h"

/*
 * The tunnel key of a copy for the gateway, handed from mcast_from_container
 * to mcast_to_overlay (see struct mcast_tunnel_pending).
 *
 * Why not bpf_skb_set_tunnel_key() on the original before cloning: the key
 * is a dst attached to the skb, the clone shares it, and no helper callable
 * from tc takes it off again, so the original that goes on to Cilium would
 * carry our key. The copy is transmitted synchronously inside
 * bpf_clone_redirect() (tcx egress runs in __dev_queue_xmit() before any
 * qdisc, and the collect-md VXLAN device has none), so a per-CPU slot armed
 * just around that call is seen by the tunnel device's egress program on the
 * same CPU, for that copy and no other packet: BH is disabled throughout, and
 * no program of ours runs in between. (On PREEMPT_RT, softirq processing can
 * be preempted and another task's packet could arm the slot in between: the
 * copy would then leave without a key, counted as tunnel_key_failed, or with
 * a key the gateway refuses as origin_mismatch, since the slot is matched by
 * source and group. Never with another pod's key accepted.)
 *
 * Both programs are in one object and so share the one map.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_tunnel_pending);
	__uint(max_entries, 1);
} mcast_egw_tunnel_pending SEC(".maps");

/*
 * The state is written by one program while the other is inside a helper
 * call: volatile accesses keep the compiler from caching or dropping them
 * (the helper call itself is opaque, so the rest of the slot is in memory
 * before it).
 */
#define MCAST_PENDING_STATE(p)	(*(volatile __u32 *)&(p)->state)

static __always_inline struct mcast_tunnel_pending *mcast_pending_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&mcast_egw_tunnel_pending, &zero);
}

/*
 * Arm this CPU's slot with the key for the copy of (@saddr, @daddr).
 * Returns the slot to disarm after the clone, or NULL (never for index 0 of
 * an array; the check keeps the verifier happy).
 */
static __always_inline struct mcast_tunnel_pending *
mcast_pending_arm(__be32 local, __be32 remote, __u32 identity, __be32 saddr, __be32 daddr)
{
	struct mcast_tunnel_pending *p = mcast_pending_get();

	if (!p)
		return NULL;
	p->remote_ipv4 = remote;
	p->local_ipv4 = local;
	p->tunnel_id = identity;
	p->saddr = saddr;
	p->daddr = daddr;
	MCAST_PENDING_STATE(p) = MCAST_PENDING_ARMED;
	return p;
}

/*
 * Back to idle, whatever happened to the copy, so that nothing after this
 * program can take the key. Returns whether the key reached the copy.
 */
static __always_inline bool mcast_pending_disarm(struct mcast_tunnel_pending *p)
{
	bool applied = MCAST_PENDING_STATE(p) == MCAST_PENDING_APPLIED;

	MCAST_PENDING_STATE(p) = MCAST_PENDING_IDLE;
	return applied;
}

/* This CPU's slot when it is armed, else NULL: the caller leaves the packet alone. */
static __always_inline struct mcast_tunnel_pending *mcast_pending_armed(void)
{
	struct mcast_tunnel_pending *p = mcast_pending_get();

	if (!p || MCAST_PENDING_STATE(p) != MCAST_PENDING_ARMED)
		return NULL;
	return p;
}

/* Whether the armed key was made for a packet from @saddr to @daddr. */
static __always_inline bool mcast_pending_is_for(const struct mcast_tunnel_pending *p,
						 __be32 saddr, __be32 daddr)
{
	return p->saddr == saddr && p->daddr == daddr;
}

/* The key is on the copy: the origin counts it as sent. */
static __always_inline void mcast_pending_applied(struct mcast_tunnel_pending *p)
{
	MCAST_PENDING_STATE(p) = MCAST_PENDING_APPLIED;
}

#define IPV4_ADDRS_OFF		(ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))

/*
 * Every frame the tunnel device sends: the whole of mcast_to_overlay. The
 * copy mcast_from_container sends to a remote gateway while Cilium keeps the
 * original gets its tunnel key here, from the slot the origin armed around
 * bpf_clone_redirect(). Every other packet, all of the node's tunnelled
 * unicast and Cilium's own multicast included, goes on untouched. Never
 * redirects.
 */
static __always_inline int mcast_pending_apply(struct __sk_buff *skb)
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

#endif /* MCAST_LIB_PENDING_H */
