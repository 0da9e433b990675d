/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_GROUPS_H
#define MCAST_LIB_GROUPS_H

#include "common.h"

/*
 * Groups that Cilium's own multicast feature replicates in the cluster
 * (a mirror of cilium_mcast_group_outer_v4_map's keys). Such a packet must
 * reach Cilium as well as the gateway.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, struct mcast_group_val);
	__uint(max_entries, MCAST_EGW_GROUPS_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_egw_cilium_groups SEC(".maps");

static __always_inline bool mcast_group_is_cilium(__be32 group)
{
	return bpf_map_lookup_elem(&mcast_egw_cilium_groups, &group) != NULL;
}

#endif /* MCAST_LIB_GROUPS_H */
