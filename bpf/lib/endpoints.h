/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_ENDPOINTS_H
#define MCAST_LIB_ENDPOINTS_H

#include "common.h"

/* Pods on this node, mirrored by the controller from Cilium's cilium_lxc. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, struct mcast_endpoint_val);
	__uint(max_entries, MCAST_EGW_ENDPOINTS_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_egw_endpoints SEC(".maps");

/* The same pods by IPv6 address (cilium_lxc entries of family 2). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mcast_in6_addr);
	__type(value, struct mcast_endpoint_val);
	__uint(max_entries, MCAST_EGW_ENDPOINTS_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_egw_endpoints_v6 SEC(".maps");

static __always_inline const struct mcast_endpoint_val *mcast_endpoint_lookup(__be32 addr)
{
	return bpf_map_lookup_elem(&mcast_egw_endpoints, &addr);
}

#endif /* MCAST_LIB_ENDPOINTS_H */
