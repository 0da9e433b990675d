/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_METRICS_H
#define MCAST_LIB_METRICS_H

#include "common.h"
#include "ipv4.h"
#include "ipv6.h"

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

/* Drops by role and reason: index role * MCAST_DROP_SLOTS + reason. */
_Static_assert(MCAST_DROP_MAX <= MCAST_DROP_SLOTS, "drop reasons outgrew their slots");
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_counter_val);
	__uint(max_entries, MCAST_DROPS_MAX_ENTRIES);
} mcast_egw_drops SEC(".maps");

/* The same for IPv6 packets. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct mcast_counter_key6);
	__type(value, struct mcast_counter_val);
	__uint(max_entries, MCAST_EGW_COUNTERS_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_egw_counters_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_counter_val);
	__uint(max_entries, MCAST_DROPS_MAX_ENTRIES);
} mcast_egw_drops_v6 SEC(".maps");

/*
 * Add to the per-CPU counter of @key in @map (either family's), creating it
 * on first use.
 */
static __always_inline void mcast_counter_add(void *map, const void *key, __u64 packets,
					      __u64 bytes)
{
	struct mcast_counter_val *val;
	struct mcast_counter_val init;

	val = bpf_map_lookup_elem(map, key);
	if (val) {
		/* Per-CPU value: no other writer, no atomics needed. */
		val->packets += packets;
		val->bytes += bytes;
		return;
	}
	init.packets = packets;
	init.bytes = bytes;
	if (bpf_map_update_elem(map, key, &init, BPF_NOEXIST) == 0)
		return;
	/*
	 * Another CPU created the key between our lookup and update (-EEXIST):
	 * our slot of it exists now. A full map (-E2BIG) leaves the new group
	 * uncounted; the packet itself is never dropped for it.
	 */
	val = bpf_map_lookup_elem(map, key);
	if (val) {
		val->packets += packets;
		val->bytes += bytes;
	}
}

/*
 * Count a packet as it is on the wire. A GSO packet (a pod's UDP_SEGMENT
 * send) leaves as gso_segs packets, each with its own Ethernet, IP (and
 * IPv6 extension) and UDP headers, so it counts as that many, with those
 * headers each time: the numbers an upstream router sees. @hdr_len: the
 * bytes up to the upper-layer header.
 */
static __always_inline void mcast_count_wire(const struct __sk_buff *skb, __u32 hdr_len,
					     __u64 *packets, __u64 *bytes)
{
	__u32 segs = skb->gso_segs;

	*packets = 1;
	*bytes = skb->len;
	if (segs > 1) {
		*packets = segs;
		*bytes += (__u64)(segs - 1) * (hdr_len + sizeof(struct udphdr));
	}
}

static __always_inline void mcast_count_fwd(const struct __sk_buff *skb,
					    const struct mcast_pkt *pkt, __u32 policy_id,
					    enum mcast_role role)
{
	struct mcast_counter_key key = {
		.policy_id = policy_id,
		.group = pkt->daddr,
		.role = role,
	};
	__u64 packets, bytes;

	mcast_count_wire(skb, pkt->l4_off, &packets, &bytes);
	mcast_counter_add(&mcast_egw_counters, &key, packets, bytes);
}

static __always_inline void mcast_count_fwd6(const struct __sk_buff *skb,
					     const struct mcast_pkt6 *pkt, __u32 policy_id,
					     enum mcast_role role)
{
	struct mcast_counter_key6 key = {
		.policy_id = policy_id,
		.role = role,
		.group = pkt->daddr,
	};
	__u64 packets, bytes;

	mcast_count_wire(skb, pkt->l4_off, &packets, &bytes);
	mcast_counter_add(&mcast_egw_counters_v6, &key, packets, bytes);
}

/* Drop events for `cilium-mcast-egress monitor`. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MCAST_EGW_EVENTS_BYTES);
} mcast_egw_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_events_limit);
	__uint(max_entries, 1);
} mcast_egw_events_limit SEC(".maps");

/* Policy names by policy_id, for the CLI; the datapath never reads them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct mcast_policy_name);
	__uint(max_entries, MCAST_EGW_NAMES_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} mcast_egw_policy_names SEC(".maps");

/* The controller's status, for the CLI; the datapath never reads it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mcast_status);
	__uint(max_entries, 1);
} mcast_egw_status SEC(".maps");

/*
 * A token bucket per CPU: MCAST_EVENTS_PER_SEC events a second, bursts of
 * as many. A flood of drops costs one clock read each and no ring buffer
 * traffic past the limit, so the monitor can never load the node. The clock
 * moves on by the tokens granted only, so the part of an interval not yet
 * earned is kept for the next refill and the rate holds at the limit.
 */
#define MCAST_EVENT_INTERVAL_NS	(1000000000ULL / MCAST_EVENTS_PER_SEC)

static __always_inline bool mcast_event_allowed(void)
{
	struct mcast_events_limit *l;
	__u32 zero = 0;
	__u64 now, refill;

	l = bpf_map_lookup_elem(&mcast_egw_events_limit, &zero);
	if (!l)
		return false;
	now = bpf_ktime_get_ns();
	refill = (now - l->refilled_ns) / MCAST_EVENT_INTERVAL_NS;
	if (refill) {
		l->tokens += refill;
		if (l->tokens >= MCAST_EVENTS_PER_SEC) {
			/* A full bucket earns nothing more while it waits. */
			l->tokens = MCAST_EVENTS_PER_SEC;
			l->refilled_ns = now;
		} else {
			l->refilled_ns += refill * MCAST_EVENT_INTERVAL_NS;
		}
	}
	if (!l->tokens) {
		l->suppressed++;
		return false;
	}
	l->tokens--;
	return true;
}

static __always_inline void mcast_emit_drop_event(const struct __sk_buff *skb,
						  const struct mcast_pkt *pkt,
						  enum mcast_drop_reason reason,
						  enum mcast_role role)
{
	struct mcast_drop_event *e;

	if (!mcast_event_allowed())
		return;
	/* No reader, or a full buffer: the event is lost, the drop counted. */
	e = bpf_ringbuf_reserve(&mcast_egw_events, sizeof(*e), 0);
	if (!e)
		return;
	e->timestamp_ns = bpf_ktime_get_ns();
	e->saddr = pkt->saddr;
	e->daddr = pkt->daddr;
	e->ifindex = skb->ifindex;
	e->reason = reason;
	e->role = role;
	e->len = skb->len;
	e->proto = pkt->proto;
	e->ttl = pkt->ttl;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	bpf_ringbuf_submit(e, 0);
}

/* Count a drop in @map (either family's drops array). */
static __always_inline void mcast_drop_count(void *map, const struct __sk_buff *skb,
					     enum mcast_drop_reason reason, enum mcast_role role)
{
	__u32 idx = role * MCAST_DROP_SLOTS + reason;
	struct mcast_counter_val *val;

	val = bpf_map_lookup_elem(map, &idx);
	if (val) {
		val->packets++;
		val->bytes += skb->len;
	}
}

/* Count a drop, report it to the monitor and return the verdict that drops. */
static __always_inline int mcast_drop(const struct __sk_buff *skb, const struct mcast_pkt *pkt,
				      enum mcast_drop_reason reason, enum mcast_role role)
{
	mcast_drop_count(&mcast_egw_drops, skb, reason, role);
	mcast_emit_drop_event(skb, pkt, reason, role);
	return MCAST_TCX_DROP;
}

static __always_inline void mcast_emit_drop_event6(const struct __sk_buff *skb,
						   const struct mcast_pkt6 *pkt,
						   enum mcast_drop_reason reason,
						   enum mcast_role role)
{
	struct mcast_drop_event6 *e;

	if (!mcast_event_allowed())
		return;
	/* Same ring as IPv4's; the reader tells them apart by the size. */
	e = bpf_ringbuf_reserve(&mcast_egw_events, sizeof(*e), 0);
	if (!e)
		return;
	e->timestamp_ns = bpf_ktime_get_ns();
	e->saddr = pkt->saddr;
	e->daddr = pkt->daddr;
	e->ifindex = skb->ifindex;
	e->reason = reason;
	e->role = role;
	e->len = skb->len;
	e->proto = pkt->proto;
	e->hop_limit = pkt->hop_limit;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	bpf_ringbuf_submit(e, 0);
}

/* mcast_drop() for IPv6 packets: mcast_egw_drops_v6 and an event6. */
static __always_inline int mcast_drop6(const struct __sk_buff *skb, const struct mcast_pkt6 *pkt,
				       enum mcast_drop_reason reason, enum mcast_role role)
{
	mcast_drop_count(&mcast_egw_drops_v6, skb, reason, role);
	mcast_emit_drop_event6(skb, pkt, reason, role);
	return MCAST_TCX_DROP;
}

/*
 * Count why a packet does not leave, and return the verdict for it. When
 * Cilium replicates the group in the cluster too (@to_cilium), only our copy
 * is lost: the original still goes on to Cilium.
 */
static __always_inline int mcast_fail(const struct __sk_buff *skb, const struct mcast_pkt *pkt,
				      enum mcast_drop_reason reason, enum mcast_role role,
				      bool to_cilium)
{
	mcast_drop(skb, pkt, reason, role);
	return to_cilium ? MCAST_TCX_NEXT : MCAST_TCX_DROP;
}

#endif /* MCAST_LIB_METRICS_H */
