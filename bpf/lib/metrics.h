/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_METRICS_H
#define MCAST_LIB_METRICS_H

#include "common.h"

/*
 * Replication counters per (policy, group, role). Not preallocated: the
 * entries that exist are the groups that carried traffic, and the per-CPU
 * memory is only paid for those.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct mcast_counter_key);
	__type(value, struct mcast_counter_val);
	__uint(max_entries, MCAST_EGW_COUNTERS_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_egw_counters SEC(".maps");

/* Drops by role and reason: index role * MCAST_DROP_MAX + reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_counter_val);
	__uint(max_entries, MCAST_DROPS_MAX_ENTRIES);
} mcast_egw_drops SEC(".maps");

static __always_inline void mcast_count_fwd(const struct __sk_buff *skb, __u32 policy_id,
					    __be32 group, enum mcast_role role)
{
	struct mcast_counter_key key = {
		.policy_id = policy_id,
		.group = group,
		.role = role,
	};
	struct mcast_counter_val *val;
	struct mcast_counter_val init;

	val = bpf_map_lookup_elem(&mcast_egw_counters, &key);
	if (val) {
		/* Per-CPU value: no other writer, no atomics needed. */
		val->packets++;
		val->bytes += skb->len;
		return;
	}
	init.packets = 1;
	init.bytes = skb->len;
	if (bpf_map_update_elem(&mcast_egw_counters, &key, &init, BPF_NOEXIST) == 0)
		return;
	/*
	 * Another CPU created the key between our lookup and update (-EEXIST):
	 * our slot of it exists now. A full map (-E2BIG) leaves the new group
	 * uncounted; the packet itself is never dropped for it.
	 */
	val = bpf_map_lookup_elem(&mcast_egw_counters, &key);
	if (val) {
		val->packets++;
		val->bytes += skb->len;
	}
}

/* Count a drop and return the verdict that drops. */
static __always_inline int mcast_drop(const struct __sk_buff *skb, enum mcast_drop_reason reason,
				      enum mcast_role role)
{
	__u32 idx = role * MCAST_DROP_MAX + reason;
	struct mcast_counter_val *val;

	val = bpf_map_lookup_elem(&mcast_egw_drops, &idx);
	if (val) {
		val->packets++;
		val->bytes += skb->len;
	}
	return MCAST_TCX_DROP;
}

/*
 * Count why a packet does not leave, and return the verdict for it. When
 * Cilium replicates the group in the cluster too (@to_cilium), only our copy
 * is lost: the original still goes on to Cilium.
 */
static __always_inline int mcast_fail(const struct __sk_buff *skb, enum mcast_drop_reason reason,
				      enum mcast_role role, bool to_cilium)
{
	mcast_drop(skb, reason, role);
	return to_cilium ? MCAST_TCX_NEXT : MCAST_TCX_DROP;
}

#endif /* MCAST_LIB_METRICS_H */
