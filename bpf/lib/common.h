/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_COMMON_H
#define MCAST_LIB_COMMON_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "mcast_egress.h"

/*
 * tcx verdicts (include/uapi/linux/bpf.h, kernel 6.6+). Defined here so the
 * programs build against older UAPI headers too.
 */
#define MCAST_TCX_NEXT		-1	/* hand the packet to the next program: Cilium's */
#define MCAST_TCX_PASS		0	/* end the chain, skip Cilium */
#define MCAST_TCX_DROP		2
#define MCAST_TCX_REDIRECT	7

#ifndef IP_MF
#define IP_MF			0x2000
#endif
#ifndef IP_OFFSET
#define IP_OFFSET		0x1FFF
#endif

#define IPPROTO_PIM_		103

/*
 * bpf_clone_redirect() returns what dev_queue_xmit() returned for the copy:
 * a negative error, or NET_XMIT_DROP when the device (or a program on its
 * egress) dropped it. NET_XMIT_CN means queued: the copy was handed on.
 */
#define MCAST_NET_XMIT_DROP	1

static __always_inline bool mcast_clone_taken(int ret)
{
	return ret >= 0 && ret != MCAST_NET_XMIT_DROP;
}

/*
 * bpf_check_mtu() results are an enum in include/uapi/linux/bpf.h (kernel
 * 5.12+): SUCCESS 0, FRAG_NEEDED 1, SEGS_TOO_BIG 2; BPF_MTU_CHK_SEGS is
 * its flag to check each GSO segment rather than the whole packet.
 */

/* The largest L2 + L3 + UDP header we ever look at (IHL 15). */
#define MCAST_MAX_HDR_LEN	(ETH_HLEN + 60 + sizeof(struct udphdr))

/*
 * Benchmark builds only (bpf/bench/mcast_stages.bpf.c): return at one named
 * point of a path, so that `make bench` can time a path stage by stage.
 * mcast_bench_stop is read-only data the benchmark sets before load; the
 * verifier knows its value and drops the points not taken, so a stopped
 * build costs what the path costs up to that point. Nothing in other builds.
 */
enum mcast_bench_stage {
	MCAST_STAGE_NONE = 0,		/* run the whole path */
	MCAST_STAGE_START,		/* nothing done: the program's entry */
	MCAST_STAGE_CLASSIFY,		/* IPv4 multicast? VLAN tag? */
	MCAST_STAGE_PARSE,		/* fixed header read, never-egress groups */
	MCAST_STAGE_TUNNEL_GET,		/* the received tunnel key read */
	MCAST_STAGE_NODE,		/* outer source is a cluster node */
	MCAST_STAGE_POLICY,		/* policy lookup (lengths, then hash) */
	MCAST_STAGE_ENDPOINT,		/* source endpoint: ifindex, identity */
	MCAST_STAGE_CONFIG,		/* config read, clone decision, origin checks */
	MCAST_STAGE_VALIDATE,		/* header checksum, lengths, UDP */
	MCAST_STAGE_TUNNEL_KEY,		/* bpf_skb_set_tunnel_key() */
	MCAST_STAGE_IFACE,		/* uplink MAC lookup, TTL */
	MCAST_STAGE_MTU,		/* bpf_check_mtu() */
	MCAST_STAGE_UDP,		/* UDP checksum read */
	MCAST_STAGE_L3,			/* SNAT, TTL, IPv4 and UDP checksums */
	MCAST_STAGE_L2,			/* Ethernet header */
	MCAST_STAGE_COUNT,		/* per-CPU counters */
};

#define MCAST_BENCH_STOPPED	1000	/* + the stage: the verdict of a stop */

#ifdef MCAST_BENCH_STAGES
const volatile __u32 mcast_bench_stop = MCAST_STAGE_NONE;

#define MCAST_BENCH_STAGE(stage)						\
	do {									\
		if (mcast_bench_stop == (stage))				\
			return MCAST_BENCH_STOPPED + (stage);			\
	} while (0)
#else
#define MCAST_BENCH_STAGE(stage)	do { } while (0)
#endif

#endif /* MCAST_LIB_COMMON_H */
