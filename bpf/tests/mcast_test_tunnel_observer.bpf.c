// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Stands behind ours in a tcx chain, where Cilium's program would be, and
 * records the last IPv4 frame (or IPv6 frame to a group beyond link-local
 * scope) it was handed and whether that frame carried
 * a tunnel key: on an endpoint veth's ingress (the original handed on to
 * Cilium must carry none) and on the tunnel device's egress (the copy must
 * carry ours, other traffic its own).
 */
#include "../lib/common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_test_tunnel_observed);
	__uint(max_entries, 1);
} mcast_test_seen_ingress SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_test_tunnel_observed);
	__uint(max_entries, 1);
} mcast_test_seen_egress SEC(".maps");

/*
 * IPv4, and IPv6 to groups of scope 3 and beyond: what else a device sends
 * by itself (ARP, IPv6 ND and MLD, all link-local) is not recorded.
 */
static __always_inline bool mcast_test_recorded(struct __sk_buff *skb)
{
	__u8 group[2];

	if (skb->protocol == bpf_htons(ETH_P_IP))
		return true;
	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return false;
	/* The first two bytes of the destination address (offset 24). */
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 24, group, sizeof(group)) < 0)
		return false;
	return group[0] == 0xff && (group[1] & 0x0f) > 2;
}

static __always_inline int mcast_test_observe(struct __sk_buff *skb,
					      struct mcast_test_tunnel_observed *o)
{
	struct bpf_tunnel_key key = {};
	__u32 len = skb->len;
	__u32 i;

	if (!o || !mcast_test_recorded(skb))
		return MCAST_TCX_NEXT;
	/* Byte by byte: simple for the verifier, and speed does not matter. */
	for (i = 0; i < MCAST_TEST_OBSERVED_BYTES && i < len; i++)
		bpf_skb_load_bytes(skb, i, &o->data[i], 1);
	o->len = len;
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) == 0) {
		o->last_has_key = 1;
		o->tunnel_id = key.tunnel_id;
		o->outer_src = bpf_htonl(key.remote_ipv4);
		o->outer_dst = bpf_htonl(key.local_ipv4);
		__sync_fetch_and_add(&o->with_key, 1);
	} else {
		o->last_has_key = 0;
		o->tunnel_id = 0;
		o->outer_src = 0;
		o->outer_dst = 0;
	}
	/* Written last: the test polls it to know the record is complete. */
	__sync_fetch_and_add(&o->count, 1);
	return MCAST_TCX_NEXT;
}

SEC("tcx/ingress")
int mcast_test_tunnel_observer_in(struct __sk_buff *skb)
{
	__u32 zero = 0;

	return mcast_test_observe(skb, bpf_map_lookup_elem(&mcast_test_seen_ingress, &zero));
}

SEC("tcx/egress")
int mcast_test_tunnel_observer_out(struct __sk_buff *skb)
{
	__u32 zero = 0;

	return mcast_test_observe(skb, bpf_map_lookup_elem(&mcast_test_seen_egress, &zero));
}

char _license[] SEC("license") = "Dual BSD/GPL";
