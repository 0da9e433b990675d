/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_BENCH_PROGRAMS_H
#define MCAST_BENCH_PROGRAMS_H

/*
 * The origin and gateway programs of a bench build: the file that includes
 * this sets the MCAST_BENCH_* and MCAST_TEST_* defines that make it the
 * variant it is. Every mcast_egw_ map is the production one, shared by its
 * pin; the receive-side tunnel key comes from the mcast_test_tunnel map as
 * in bpf/tests/mcast_from_overlay_test.bpf.c.
 */
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

#endif /* MCAST_BENCH_PROGRAMS_H */
