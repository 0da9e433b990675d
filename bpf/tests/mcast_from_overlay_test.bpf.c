// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * mcast_from_overlay for BPF_PROG_RUN: the production program but for the
 * receive-side tunnel key, which comes from the mcast_test_tunnel map (see
 * lib/tunnel.h). Its maps are the production ones, shared by their pins.
 */
#define MCAST_TEST_TUNNEL_KEY 1
#include "../lib/common.h"
#include "../lib/overlay.h"

SEC("tcx/ingress")
int mcast_from_overlay(struct __sk_buff *skb)
{
	return mcast_overlay_recv(skb);
}

char _license[] SEC("license") = "Dual BSD/GPL";
