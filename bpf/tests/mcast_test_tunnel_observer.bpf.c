// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Stands behind ours in a tcx chain, where Cilium's program would be, and
 * records the last IPv4 frame it was handed and whether that frame carried
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

static __always_inline int mcast_test_observe(struct __sk_buff *skb,
					      struct mcast_test_tunnel_observed *o)
{
	struct bpf_tunnel_key key = {};
	__u32 len = skb->len;
	__u32 i;

	/* What else a device sends by itself (IPv6 ND, ARP) is not recorded. */
	if (!o || skb->protocol != bpf_htons(ETH_P_IP))
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
