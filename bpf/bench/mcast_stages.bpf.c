// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The origin and gateway programs with a return at each named stage of
 * their paths (MCAST_BENCH_STAGE in lib/common.h), chosen by the read-only
 * mcast_bench_stop before load: `make bench` loads one per stage and times
 * the path up to it. Every mcast_egw_ map is the production one, shared by
 * its pin; the receive-side tunnel key comes from the mcast_test_tunnel map
 * as in bpf/tests/mcast_from_overlay_test.bpf.c.
 */
#define MCAST_TEST_TUNNEL_KEY 1
#define MCAST_BENCH_STAGES 1
#include "../lib/common.h"
#include "../lib/origin.h"
#include "../lib/overlay.h"

SEC("tcx/ingress")
int mcast_from_container(struct __sk_buff *skb)
{
	return mcast_origin_recv(skb);
}

SEC("tcx/ingress")
int mcast_from_overlay(struct __sk_buff *skb)
{
	return mcast_overlay_recv(skb);
}

char _license[] SEC("license") = "Dual BSD/GPL";
