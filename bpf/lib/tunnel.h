/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_TUNNEL_H
#define MCAST_LIB_TUNNEL_H

#include "common.h"

/* Outer TTL of our VXLAN packets, as Cilium's encapsulation uses. */
#define MCAST_TUNNEL_TTL	64

/*
 * Encapsulate like Cilium does: VNI = the source's security identity,
 * remote = the gateway node, zero outer UDP checksum (RFC 7348 allows it
 * for IPv4). The outer source is this node's IP, which the gateway checks
 * the copy against: left to the kernel, a node with several addresses could
 * pick another one. The caller redirects to the collect-md tunnel device.
 */
static __always_inline int mcast_tunnel_key_set(struct __sk_buff *skb, __be32 local,
						__be32 remote, __u32 identity)
{
	struct bpf_tunnel_key key = {};

	key.remote_ipv4 = bpf_ntohl(remote);
	key.local_ipv4 = bpf_ntohl(local);
	key.tunnel_id = identity;
	key.tunnel_ttl = MCAST_TUNNEL_TTL;
	return bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX);
}

#ifdef MCAST_TEST_TUNNEL_KEY
/*
 * Test build: BPF_PROG_RUN cannot attach receive-side tunnel metadata, so
 * the key comes from a map the test fills in. The real read is below; the
 * lab exercises it over real VXLAN.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_test_tunnel);
	__uint(max_entries, 1);
} mcast_test_tunnel SEC(".maps");

static __always_inline int mcast_tunnel_key_get(struct __sk_buff *skb __attribute__((unused)),
						__u32 *vni, __be32 *remote)
{
	const struct mcast_test_tunnel *t;
	__u32 zero = 0;

	t = bpf_map_lookup_elem(&mcast_test_tunnel, &zero);
	if (!t || !t->valid)
		return -1;
	*vni = t->tunnel_id;
	*remote = t->remote_ipv4;
	return 0;
}
#else
/* Read the VNI and outer source of a packet received on the tunnel device. */
static __always_inline int mcast_tunnel_key_get(struct __sk_buff *skb, __u32 *vni, __be32 *remote)
{
	struct bpf_tunnel_key key = {};

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return -1;
	*vni = key.tunnel_id;
	*remote = bpf_htonl(key.remote_ipv4);
	return 0;
}
#endif

#endif /* MCAST_LIB_TUNNEL_H */
