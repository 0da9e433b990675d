// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The benchmark's baseline: a tcx program that does nothing. */
#include "../lib/common.h"

SEC("tcx/ingress")
int mcast_empty(struct __sk_buff *skb __attribute__((unused)))
{
	return MCAST_TCX_NEXT;
}

char _license[] SEC("license") = "Dual BSD/GPL";
