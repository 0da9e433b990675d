/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_IPV6_H
#define MCAST_LIB_IPV6_H

/*
 * IPv6 multicast: classify, parse the fixed header and walk the extension
 * headers, the never-egress set, what a router checks before it forwards,
 * and the group's Ethernet address. The IPv6 twin of lib/ipv4.h.
 */
#include <linux/ipv6.h>

#include "common.h"

/*
 * At most this many extension headers before the upper-layer header: RFC
 * 8200 section 4.1 lists six kinds, each at most once but destination
 * options twice, plus room for AH. Longer chains are malformed (and cost
 * the verifier nothing more than this bound).
 */
#define MCAST_IPV6_MAX_EXT	8

#define IPV6_HLEN		40
/* The headers parse makes linear: Ethernet, fixed IPv6 header, UDP. */
#define MCAST_IPV6_PULL_LEN	(ETH_HLEN + IPV6_HLEN + sizeof(struct udphdr))

/* Extension header and upper-layer values (RFC 8200, IANA). */
#define MCAST_NEXTHDR_HOP	0
#define MCAST_NEXTHDR_ROUTING	43
#define MCAST_NEXTHDR_FRAGMENT	44
#define MCAST_NEXTHDR_ICMPV6	58
#define MCAST_NEXTHDR_DEST	60

/* Hop-by-hop option types (RFC 8200 4.2, RFC 2711). */
#define MCAST_IPV6_OPT_PAD1		0
#define MCAST_IPV6_OPT_PADN		1
#define MCAST_IPV6_OPT_ROUTER_ALERT	5

/*
 * What ip6_parse_tlv() allows by default: at most 8 options besides
 * padding (net.ipv6.conf.*.max_hbh_opts_number) and at most 7 bytes of
 * padding in a row (RFC 4942 2.1.9.5).
 */
#define MCAST_IPV6_HBH_MAX_OPTS		8
#define MCAST_IPV6_HBH_MAX_PAD		7
/*
 * The longest hop-by-hop header that can hold nothing but what we accept:
 * 8 Router Alerts of 4 bytes, with 7 bytes of padding before, between and
 * after them, behind the 2 bytes of next header and length: 97 bytes, so
 * 96 in whole 8-byte units. Anything longer is refused unread.
 */
#define MCAST_IPV6_HBH_MAX_LEN		96
/* A power of two above MCAST_IPV6_HBH_MAX_LEN: the verifier's mask for offsets. */
#define MCAST_IPV6_HBH_BUF		128

/* MLD (RFC 2710, 3810): query, report, done, MLDv2 report. */
#define MCAST_MLD_QUERY		130
#define MCAST_MLD_REPORT	131
#define MCAST_MLD_DONE		132
#define MCAST_MLD2_REPORT	143

#define IPV6_DADDR_OFF		(ETH_HLEN + __builtin_offsetof(struct ipv6hdr, daddr))

/* ff00::/8 with a scope above link-local: the first two bytes of a group. */
static __always_inline bool ipv6_group_may_leave(__u8 first, __u8 second)
{
	return first == 0xff && (second & 0x0f) > 2;
}

/*
 * Is this an IPv6 frame to a multicast group that may leave a link, with
 * no VLAN tag in the skb? Asked only of frames that are not IPv4: one more
 * load of the context for them, nothing for IPv4. Groups of scope 0-2
 * (ff02::, the neighbour discovery and MLD every pod sends) are never ours
 * (ipv6_mcast_never_egress()), and stop here, before anything is parsed or
 * pulled. The tag is looked at last, as ipv4_frame_is_untagged_multicast()
 * does: unicast never needs it. VLAN: as there.
 */
static __always_inline bool ipv6_frame_is_untagged_multicast(struct __sk_buff *skb)
{
	void *data_end, *data;
	__u8 *first;
	__u8 bytes[2];

	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return false;
	data_end = (void *)(long)skb->data_end;
	data = (void *)(long)skb->data;
	first = data + IPV6_DADDR_OFF;
	if ((void *)(first + 2) <= data_end) {
		if (!ipv6_group_may_leave(first[0], first[1]))
			return false;
	} else if (bpf_skb_load_bytes(skb, IPV6_DADDR_OFF, bytes, sizeof(bytes)) < 0 ||
		   !ipv6_group_may_leave(bytes[0], bytes[1])) {
		return false;
	}
	return !skb->vlan_present;
}

/* What the programs need to know about an IPv6 multicast packet. */
struct mcast_pkt6 {
	struct mcast_in6_addr saddr;
	struct mcast_in6_addr daddr;
	__u32 l4_off;		/* upper-layer header, from the MAC header */
	__u16 payload_len;	/* of the fixed header; 0 for a jumbogram */
	__u16 frag_off;		/* fragment offset in 8-byte units, 0 without */
	__u8 proto;		/* upper-layer protocol behind the extension headers */
	__u8 hop_limit;
	__u8 version;
	__u8 more_frags;	/* a fragment header with M set */
	__u8 chain_bad;		/* the extension chain could not be walked */
	__u8 pad;
	__u16 hbh_len;		/* bytes of the hop-by-hop header, 0 without one */
};

/*
 * Walk the extension headers from the fixed header's next-header value.
 * Ends at the first upper-layer protocol (59, no next header, is one), and
 * at two headers that are upper layers for us:
 * - AH (51): the rewritten source would break it at every receiver, so a
 *   packet with AH is an AH packet, unsupported, as IPv4 reads protocol 51;
 * - a fragment header with a non-zero offset: what follows it is a piece
 *   of the fragmentable part, payload, never headers (RFC 8200 4.5); the
 *   protocol is the one the fragment header names.
 * The chain is bad when it is longer than MCAST_IPV6_MAX_EXT headers, runs
 * past the payload (or the frame), puts hop-by-hop anywhere but first (RFC
 * 8200 4.1), has a routing header with segments left (a router would act
 * on it, and we never do; 4.4) or a second fragment header (4.1: each at
 * most once). Read by copy: headers behind the linear area cost nothing to
 * pull, and the verifier sees one bounded loop. The hop-by-hop header's
 * length is kept, for ipv6_mcast_validate() to judge its options.
 */
static __always_inline void ipv6_ext_walk(struct __sk_buff *skb, struct mcast_pkt6 *pkt, __u8 nexthdr)
{
	__u32 off = ETH_HLEN + IPV6_HLEN;
	__u32 end = off + pkt->payload_len;
	bool fragment = false;
	__u32 i;

	for (i = 0; i <= MCAST_IPV6_MAX_EXT; i++) {
		__u8 hdr[4];
		__u32 len;

		if (nexthdr != MCAST_NEXTHDR_HOP && nexthdr != MCAST_NEXTHDR_ROUTING &&
		    nexthdr != MCAST_NEXTHDR_FRAGMENT && nexthdr != MCAST_NEXTHDR_DEST) {
			pkt->proto = nexthdr;
			pkt->l4_off = off;
			return;
		}
		/* One header more than the bound allows. */
		if (i == MCAST_IPV6_MAX_EXT)
			break;
		if (nexthdr == MCAST_NEXTHDR_HOP && i != 0)
			break;
		/* Every extension header is at least 8 bytes long. */
		if (off + 8 > end || bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)) < 0)
			break;
		if (nexthdr == MCAST_NEXTHDR_FRAGMENT) {
			__u16 frag = ((__u16)hdr[2] << 8) | hdr[3];

			if (fragment)
				break;
			fragment = true;
			pkt->frag_off = frag >> 3;
			pkt->more_frags = frag & 1;
			len = 8;
			if (pkt->frag_off) {
				pkt->proto = hdr[0];
				pkt->l4_off = off + len;
				return;
			}
		} else {
			/* Routing: type 0 is deprecated, any type still names a
			 * next hop while segments are left. */
			if (nexthdr == MCAST_NEXTHDR_ROUTING && hdr[3] != 0)
				break;
			len = ((__u32)hdr[1] + 1) * 8;
			if (nexthdr == MCAST_NEXTHDR_HOP)
				pkt->hbh_len = len;
		}
		off += len;
		if (off > end)
			break;
		nexthdr = hdr[0];
	}
	pkt->chain_bad = 1;
	pkt->proto = nexthdr;
	pkt->l4_off = off;
}

/*
 * Read the fixed IPv6 header of a frame whose destination is known to be
 * multicast, and walk its extension headers. Makes the fixed header (and a
 * UDP header right behind it) linear first. Returns -1 only when the frame
 * cannot hold a fixed header; a chain that cannot be walked is marked
 * (chain_bad) and judged by ipv6_mcast_validate() once the packet is known
 * to be ours.
 */
static __always_inline int ipv6_mcast_parse(struct __sk_buff *skb, struct mcast_pkt6 *pkt)
{
	void *data, *data_end;
	struct ipv6hdr *ip6;
	__u32 len = skb->len;
	__u8 nexthdr;

	if (len > MCAST_IPV6_PULL_LEN)
		len = MCAST_IPV6_PULL_LEN;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + len > data_end && bpf_skb_pull_data(skb, len) < 0)
		return -1;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip6 = data + ETH_HLEN;
	if ((void *)(ip6 + 1) > data_end)
		return -1;

	__builtin_memcpy(&pkt->saddr, &ip6->saddr, sizeof(pkt->saddr));
	__builtin_memcpy(&pkt->daddr, &ip6->daddr, sizeof(pkt->daddr));
	pkt->payload_len = bpf_ntohs(ip6->payload_len);
	pkt->hop_limit = ip6->hop_limit;
	pkt->version = ip6->version;
	pkt->frag_off = 0;
	pkt->more_frags = 0;
	pkt->chain_bad = 0;
	pkt->hbh_len = 0;
	nexthdr = ip6->nexthdr;
	ipv6_ext_walk(skb, pkt, nexthdr);
	return 0;
}

/* The scope nibble (RFC 4291 2.7): low 4 bits of the address's second byte. */
static __always_inline __u8 ipv6_mcast_scope(const struct mcast_in6_addr *group)
{
	return (bpf_ntohl(group->words[0]) >> 16) & 0x0f;
}

/*
 * Traffic that never leaves the node through us, whatever a policy says:
 * groups of scope 0 (reserved), 1 (interface-local) and 2 (link-local),
 * with any flags (ff02::, ff12::, ...): RFC 4291 2.7, never forwarded;
 * MLD (group membership belongs to the node; its reports ride behind a
 * hop-by-hop Router Alert, and MLDv1 reports go to the group itself); PIM.
 * A chain that cannot be walked hides its protocol: such a packet is not
 * exempt, the policy decides (and validation refuses it). So does AH,
 * where the walk ends, as IPv4's reading ends at protocol 51.
 */
static __always_inline bool ipv6_mcast_never_egress(struct __sk_buff *skb,
						    const struct mcast_pkt6 *pkt)
{
	__u8 type;

	if (ipv6_mcast_scope(&pkt->daddr) <= 2)
		return true;
	if (pkt->chain_bad)
		return false;
	if (pkt->proto == IPPROTO_PIM_)
		return true;
	/* A later fragment carries no ICMPv6 header to tell. */
	if (pkt->proto != MCAST_NEXTHDR_ICMPV6 || pkt->frag_off)
		return false;
	if (bpf_skb_load_bytes(skb, pkt->l4_off, &type, sizeof(type)) < 0)
		return false;
	return type == MCAST_MLD_QUERY || type == MCAST_MLD_REPORT || type == MCAST_MLD_DONE ||
	       type == MCAST_MLD2_REPORT;
}

/*
 * Where ipv6_hbh_step() is in the hop-by-hop header. Small, on purpose:
 * the IPv6 flow's frames take the stack (512 bytes for a chain of calls)
 * almost to its limit, so the options are read in place, in the packet.
 */
struct ipv6_hbh_walk {
	struct __sk_buff *skb;
	__u8 len;		/* of the header: 8 to MCAST_IPV6_HBH_MAX_LEN */
	__u8 off;		/* the next option, from the header's start */
	__u8 pad;		/* padding bytes in a row */
	__u8 opts;		/* options other than padding */
	__u8 done;		/* every option read, each one allowed */
	__u8 unused[3];
};

/*
 * One option of the hop-by-hop header, a bpf_loop() callback: 0 to go on,
 * 1 to stop (at the end, or at the first option we refuse). We accept
 * what a router accepts and can carry unchanged: Pad1, PadN of zeros, and
 * Router Alert of length 2 (RFC 2711; a router notes it and forwards).
 * Every other option is refused: those whose type says "discard" (high
 * bits 01, 10, 11) a router drops; Jumbo Payload, CALIPSO and IOAM it
 * validates or rewrites in ways we do not; and unknown "skip" options (00)
 * it would forward, but we keep to the rule IPv4 follows, padding and
 * Router Alert only. Lengths are checked as ip6_parse_tlv() checks them:
 * an option may not run past the header, which the options must fill
 * exactly. The header is in the linear data (ipv6_mcast_validate() pulled
 * it there).
 */
static long ipv6_hbh_step(__u64 index, void *ctx)
{
	struct ipv6_hbh_walk *w = ctx;
	void *data = (void *)(long)w->skb->data;
	void *data_end = (void *)(long)w->skb->data_end;
	__u32 off = w->off, len = w->len, olen, i;
	__u8 *opt;

	if (off >= len) {
		w->done = off == len;
		return 1;
	}
	/* off < MCAST_IPV6_HBH_MAX_LEN: the mask only tells the verifier. */
	opt = data + ETH_HLEN + IPV6_HLEN + (off & (MCAST_IPV6_HBH_BUF - 1));
	if ((void *)(opt + 1) > data_end)
		return 1;
	if (opt[0] == MCAST_IPV6_OPT_PAD1) {
		if (++w->pad > MCAST_IPV6_HBH_MAX_PAD)
			return 1;
		w->off = off + 1;
		return 0;
	}
	if (off + 2 > len || (void *)(opt + 2) > data_end)
		return 1;
	olen = opt[1];
	if (off + 2 + olen > len)
		return 1;
	if (opt[0] == MCAST_IPV6_OPT_PADN) {
		/* RFC 4942 2.1.9.5: at most 7 bytes of padding in a row, zeros. */
		if (w->pad + 2 + olen > MCAST_IPV6_HBH_MAX_PAD)
			return 1;
		w->pad += 2 + olen;
		for (i = 0; i < MCAST_IPV6_HBH_MAX_PAD - 2 && i < olen; i++)
			if ((void *)(opt + 3 + i) > data_end || opt[2 + i])
				return 1;
	} else if (opt[0] == MCAST_IPV6_OPT_ROUTER_ALERT && olen == 2) {
		if (++w->opts > MCAST_IPV6_HBH_MAX_OPTS)
			return 1;
		w->pad = 0;
	} else {
		return 1;
	}
	w->off = off + 2 + olen;
	return 0;
}

/*
 * Are the options of the hop-by-hop header (@units 8-byte units behind the
 * fixed header, its length field + 1) ones a router forwards and we may
 * carry? Linux's ipv6_rcv() drops the packet when ip6_parse_tlv() refuses
 * them, before any forwarding; we bypass it, so we refuse them here
 * (ipv6_hbh_step()). A global function: the verifier checks it, and the
 * loop, once; it runs only for covered packets that carry the header, one
 * step per option, on the header in the linear data.
 */
__noinline int ipv6_hbh_validate(struct __sk_buff *skb, __u32 units)
{
	struct ipv6_hbh_walk w = {};

	if (!skb || !units || units > MCAST_IPV6_HBH_MAX_LEN / 8)
		return 0;
	w.skb = skb;
	w.len = units * 8;
	w.off = 2;
	/* One step per option, and one to see the end. */
	bpf_loop(MCAST_IPV6_HBH_MAX_LEN, ipv6_hbh_step, &w, 0);
	return w.done;
}

/*
 * We bypass ipv6_rcv() and the forwarding path, so we check what a router
 * checks before it forwards (ipv6_rcv_core(): version 6, a payload length
 * that fits the frame; jumbograms, payload length 0, are not ours: RFC
 * 2675 needs a hop-by-hop option a router acts on), the hop-by-hop options
 * (ipv6_hbh_validate(), as ip6_parse_tlv()), the extension chain
 * (ipv6_ext_walk()), and, as the receivers would (udp6), that a first or
 * only fragment holds the UDP header (RFC 7112: the whole header chain)
 * and a UDP length that is the datagram's: equal to the bytes behind the
 * extension headers when unfragmented (an atomic fragment, offset 0 and no
 * M, is: RFC 6946), at least them when more fragments follow. A zero UDP
 * checksum is invalid in IPv6 (RFC 8200 8.1): never emitted. Link-layer
 * bytes behind the payload are cut, as ipv6_rcv() cuts them.
 *
 * Returns 0, or the drop reason. Runs only for packets a policy covers.
 */
static __always_inline int ipv6_mcast_validate(struct __sk_buff *skb, const struct mcast_pkt6 *pkt)
{
	__u32 total = ETH_HLEN + IPV6_HLEN + pkt->payload_len;
	struct udphdr udp;
	__u32 rest, ulen;

	if (pkt->version != 6 || pkt->chain_bad || !pkt->payload_len)
		return MCAST_DROP_MALFORMED;
	if (total > skb->len)
		return MCAST_DROP_MALFORMED;
	if (pkt->hbh_len) {
		__u32 need = ETH_HLEN + IPV6_HLEN + pkt->hbh_len;

		if (pkt->hbh_len > MCAST_IPV6_HBH_MAX_LEN)
			return MCAST_DROP_MALFORMED;
		/* The options are read in place: the header must be linear. */
		if ((void *)(long)skb->data + need > (void *)(long)skb->data_end &&
		    bpf_skb_pull_data(skb, need) < 0)
			return MCAST_DROP_MALFORMED;
		if (!ipv6_hbh_validate(skb, pkt->hbh_len / 8))
			return MCAST_DROP_MALFORMED;
	}

	if (pkt->proto == IPPROTO_UDP && !pkt->frag_off) {
		/* The walk kept l4_off inside the payload. */
		if (pkt->l4_off > total)
			return MCAST_DROP_MALFORMED;
		rest = total - pkt->l4_off;
		if (rest < sizeof(udp))
			return MCAST_DROP_MALFORMED;
		if (bpf_skb_load_bytes(skb, pkt->l4_off, &udp, sizeof(udp)) < 0)
			return MCAST_DROP_MALFORMED;
		ulen = bpf_ntohs(udp.len);
		if (ulen < sizeof(udp))
			return MCAST_DROP_MALFORMED;
		if (pkt->more_frags ? ulen < rest : ulen != rest)
			return MCAST_DROP_MALFORMED;
		if (!udp.check)
			return MCAST_DROP_MALFORMED;
	}

	if (total < skb->len) {
		/* As IPv4: a GSO packet has no such bytes to cut. */
		if (skb->gso_size)
			return MCAST_DROP_MALFORMED;
		if (bpf_skb_change_tail(skb, total, 0) < 0)
			return MCAST_DROP_REWRITE;
	}
	return 0;
}

/*
 * RFC 2464 section 7: the Ethernet address of an IPv6 group is 33:33
 * followed by the low-order 32 bits of the group address. As three 16-bit
 * words in network order, as ipv4_mcast_mac_words().
 */
static __always_inline void ipv6_mcast_mac_words(const struct mcast_in6_addr *group, __be16 w[3])
{
	__u32 g = bpf_ntohl(group->words[3]);

	w[0] = bpf_htons(0x3333);
	w[1] = bpf_htons(g >> 16);
	w[2] = bpf_htons(g & 0xffff);
}

static __always_inline void ipv6_mcast_mac(const struct mcast_in6_addr *group, __u8 mac[ETH_ALEN])
{
	ipv6_mcast_mac_words(group, (__be16 *)mac);
}

/* Is @mac @group's Ethernet address? */
static __always_inline bool ipv6_mcast_mac_is(const __u8 mac[ETH_ALEN],
					      const struct mcast_in6_addr *group)
{
	const __be16 *m = (const __be16 *)mac;
	__be16 w[3];

	ipv6_mcast_mac_words(group, w);
	return m[0] == w[0] && m[1] == w[1] && m[2] == w[2];
}

static __always_inline bool ipv6_addr_is_unspecified(const struct mcast_in6_addr *a)
{
	return !(a->words[0] | a->words[1] | a->words[2] | a->words[3]);
}

#endif /* MCAST_LIB_IPV6_H */
