// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Stands where Cilium's cil_from_container would, behind our program in the
 * tcx chain, and records what it was handed: proof of TCX_NEXT on a real
 * device, and of the bytes that went on.
 */
#include "../lib/common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_test_observed);
	__uint(max_entries, 1);
} mcast_test_observed SEC(".maps");

SEC("tcx/ingress")
int mcast_test_observer(struct __sk_buff *skb)
{
	struct mcast_test_observed *o;
	__u32 zero = 0;
	__u32 len = skb->len;
	__u32 i;

	o = bpf_map_lookup_elem(&mcast_test_observed, &zero);
	if (!o)
		return MCAST_TCX_NEXT;
	/* Byte by byte: simple for the verifier, and speed does not matter. */
	for (i = 0; i < MCAST_TEST_OBSERVED_BYTES && i < len; i++)
		bpf_skb_load_bytes(skb, i, &o->data[i], 1);
	o->len = len;
	/* Written last: the test polls it to know the frame is complete. */
	__sync_fetch_and_add(&o->count, 1);
	return MCAST_TCX_NEXT;
}

char _license[] SEC("license") = "Dual BSD/GPL";
