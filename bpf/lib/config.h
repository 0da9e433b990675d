/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_CONFIG_H
#define MCAST_LIB_CONFIG_H

#include "common.h"

/* This node's identity in the cluster, written by the controller. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_config);
	__uint(max_entries, 1);
} mcast_egw_config SEC(".maps");

/* Never NULL for index 0 of an array; the check keeps the verifier happy. */
static __always_inline const struct mcast_config *mcast_config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&mcast_egw_config, &zero);
}

#endif /* MCAST_LIB_CONFIG_H */
