/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_NODES_H
#define MCAST_LIB_NODES_H

#include "common.h"

/* InternalIPs of every cluster node: the only peers we accept VXLAN from. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, struct mcast_node_val);
	__uint(max_entries, MCAST_EGW_NODES_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_egw_nodes SEC(".maps");

static __always_inline bool mcast_node_is_known(__be32 addr)
{
	return bpf_map_lookup_elem(&mcast_egw_nodes, &addr) != NULL;
}

#endif /* MCAST_LIB_NODES_H */
