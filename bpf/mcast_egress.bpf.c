// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The datapath: one object, so that its maps are created (or adopted from
 * their pins) once, with one layout. Three programs, each at the head of a
 * tcx chain so that it runs before Cilium's program on the same hook; the
 * work is in bpf/lib/.
 */
#include "lib/common.h"
#include "lib/origin.h"
#include "lib/overlay.h"
#include "lib/pending.h"

/* Ingress of every endpoint veth (lxc*), before cil_from_container. */
SEC("tcx/ingress")
int mcast_from_container(struct __sk_buff *skb)
{
	return mcast_origin_recv(skb);
}

/* Ingress of the tunnel device (cilium_vxlan), before cil_from_overlay. */
SEC("tcx/ingress")
int mcast_from_overlay(struct __sk_buff *skb)
{
	return mcast_overlay_recv(skb);
}

/*
 * Egress of the tunnel device, before cil_to_overlay: the tunnel key of the
 * copies mcast_from_container clones while Cilium keeps the original.
 */
SEC("tcx/egress")
int mcast_to_overlay(struct __sk_buff *skb)
{
	return mcast_pending_apply(skb);
}

char _license[] SEC("license") = "Dual BSD/GPL";
