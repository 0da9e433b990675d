/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef MCAST_LIB_IPV4_H
#define MCAST_LIB_IPV4_H

#include "common.h"

/* 224.0.0.0/4 (RFC 5771). */
static __always_inline bool ipv4_is_multicast(__be32 daddr)
{
	return (daddr & bpf_htonl(0xf0000000)) == bpf_htonl(0xe0000000);
}

/*
 * Is this an IPv4 frame to a multicast group? Every unicast packet of every
 * pod asks this, so the common case is two compares on the linear area;
 * headers outside it (or a frame too short to hold them) are read by copy.
 */
static __always_inline bool ipv4_frame_is_multicast(struct __sk_buff *skb)
{
	void *data_end, *data;
	struct iphdr *ip4;
	__be32 daddr;

	/* ARP, IPv6 and the rest leave after one load of the context. */
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return false;
	data_end = (void *)(long)skb->data_end;
	data = (void *)(long)skb->data;
	ip4 = data + ETH_HLEN;
	if ((void *)(ip4 + 1) <= data_end)
		return ipv4_is_multicast(ip4->daddr);
	if (bpf_skb_load_bytes(skb, ETH_HLEN + __builtin_offsetof(struct iphdr, daddr), &daddr,
			       sizeof(daddr)) < 0)
		return false;
	return ipv4_is_multicast(daddr);
}

/*
 * Is this an IPv4 multicast frame with no VLAN tag in the skb? The kernel
 * moves one 802.1Q or 802.1ad tag into the skb before tcx, and a redirect
 * would put it back on the wire: a pod would choose the VLAN its multicast
 * leaves on, and an inner tag on the tunnel would reach the uplink. Such
 * frames are never ours (a second tag leaves skb->protocol a VLAN type,
 * which the multicast check already refuses). Our origins never send one.
 */
static __always_inline bool ipv4_frame_is_untagged_multicast(struct __sk_buff *skb)
{
	return ipv4_frame_is_multicast(skb) && !skb->vlan_present;
}

/*
 * Traffic that never leaves the node through us, whatever a policy says:
 * the Local Network Control Block 224.0.0.0/24 (RFC 5771: never forwarded),
 * IGMP (group membership belongs to the node) and PIM (the routers' own
 * protocol).
 */
static __always_inline bool ipv4_mcast_never_egress(__be32 daddr, __u8 proto)
{
	if ((daddr & bpf_htonl(0xffffff00)) == bpf_htonl(0xe0000000))
		return true;
	return proto == IPPROTO_IGMP || proto == IPPROTO_PIM_;
}

/* A fragment other than the first one carries no L4 header. */
static __always_inline bool ipv4_is_later_fragment(__be16 frag_off)
{
	return (frag_off & bpf_htons(IP_OFFSET)) != 0;
}

/*
 * RFC 1112 section 6.4: the Ethernet address of an IPv4 group is
 * 01:00:5e followed by the low-order 23 bits of the group address. As
 * three 16-bit words in network order (an Ethernet header is two-byte
 * aligned), so that writing it is three stores and checking it three
 * compares.
 */
static __always_inline void ipv4_mcast_mac_words(__be32 group, __be16 w[3])
{
	__u32 g = bpf_ntohl(group);

	w[0] = bpf_htons(0x0100);
	w[1] = bpf_htons(0x5e00 | ((g >> 16) & 0x7f));
	w[2] = bpf_htons(g & 0xffff);
}

static __always_inline void ipv4_mcast_mac(__be32 group, __u8 mac[ETH_ALEN])
{
	ipv4_mcast_mac_words(group, (__be16 *)mac);
}

/* Is @mac @group's Ethernet address? */
static __always_inline bool ipv4_mcast_mac_is(const __u8 mac[ETH_ALEN], __be32 group)
{
	const __be16 *m = (const __be16 *)mac;
	__be16 w[3];

	ipv4_mcast_mac_words(group, w);
	return m[0] == w[0] && m[1] == w[1] && m[2] == w[2];
}

/* What the programs need to know about an IPv4 multicast packet. */
struct mcast_pkt {
	__be32 saddr;
	__be32 daddr;
	__u32 l4_off;		/* offset of the L4 header from the MAC header */
	__be16 frag_off;
	__u8 proto;
	__u8 ttl;
};

/*
 * Read the fixed IPv4 header behind the Ethernet header of an IPv4 frame
 * whose destination is known to be multicast. Makes the headers linear
 * first, so that later direct reads see them. Returns -1 only when the frame
 * cannot hold a fixed IPv4 header; whether the header is valid is
 * ipv4_mcast_validate()'s question, asked once the packet is known to be
 * ours.
 */
static __always_inline int ipv4_mcast_parse(struct __sk_buff *skb, struct mcast_pkt *pkt)
{
	void *data, *data_end;
	struct iphdr *ip4;
	__u32 len = skb->len;

	if (len > MCAST_MAX_HDR_LEN)
		len = MCAST_MAX_HDR_LEN;
	/* Only pulls when the headers are not already in the linear area. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + len > data_end && bpf_skb_pull_data(skb, len) < 0)
		return -1;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip4 = data + ETH_HLEN;
	if ((void *)(ip4 + 1) > data_end)
		return -1;

	pkt->saddr = ip4->saddr;
	pkt->daddr = ip4->daddr;
	pkt->proto = ip4->protocol;
	pkt->ttl = ip4->ttl;
	pkt->frag_off = ip4->frag_off;
	pkt->l4_off = ETH_HLEN + ip4->ihl * 4;
	return 0;
}

/*
 * IPv4 options we forward, word by word: Router Alert (RFC 2113, as Linux
 * and every IGMP/RSVP sender writes it: 94 04 00 00) and words of NOP or
 * End of List padding. A router processes or refuses the rest: source
 * routes (accept_source_route is off by default), record route and
 * timestamps it would write into, and we cannot; so they never leave with
 * our egress IP. Whole words keep the check a few compares (a byte-wise
 * walk of the list costs the verifier far more).
 */
static __always_inline bool ipv4_option_word_allowed(__u32 word)
{
	return word == bpf_htonl(0x94040000) || word == bpf_htonl(0x01010101) || word == 0;
}

/* Fold a sum of 32-bit words to the 16-bit one's complement sum. */
static __always_inline __u32 ipv4_csum_fold32(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/*
 * We bypass ip_rcv() and the forwarding path, so we check what a router
 * checks before it forwards (RFC 1812 5.2.2, ip_rcv_core()): version 4,
 * IHL >= 5, the header checksum, a total length that covers the header and
 * fits the frame; and, as the receivers would (udp_rcv()), that a first
 * fragment holds the UDP header and that its length is the datagram's:
 * equal to the IP payload when unfragmented, at least it when more
 * fragments follow. Link-layer bytes behind the total length are cut, as
 * ip_rcv() cuts them, so they never leave with our egress IP.
 *
 * Returns 0, or the drop reason. Runs only for packets a policy covers.
 */
static __always_inline int ipv4_mcast_validate(struct __sk_buff *skb, const struct mcast_pkt *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip4 = data + ETH_HLEN;
	__u32 ihl_len, tot_len, payload, ulen;
	struct udphdr *udp;
	__u32 *word;
	__u64 sum = 0;
	int i;

	if ((void *)(ip4 + 1) > data_end)
		return MCAST_DROP_MALFORMED;
	if (ip4->version != 4 || ip4->ihl < 5)
		return MCAST_DROP_MALFORMED;
	ihl_len = ip4->ihl * 4;
	tot_len = bpf_ntohs(ip4->tot_len);
	if (tot_len < ihl_len || tot_len > skb->len - ETH_HLEN)
		return MCAST_DROP_MALFORMED;

	/*
	 * RFC 1071: the header, options included, sums to all ones. Summed in
	 * 32-bit words (the sum is the same in any word size and byte order);
	 * options are copied out, into zeros that add nothing.
	 */
	word = (__u32 *)ip4;
	sum = (__u64)word[0] + word[1] + word[2] + word[3] + word[4];
	if (ihl_len > sizeof(*ip4)) {
		__u32 opts[10] = {};
		__u32 opts_len = (ihl_len - sizeof(*ip4)) & 0x3c;

		if (!opts_len ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(*ip4), opts, opts_len) < 0)
			return MCAST_DROP_MALFORMED;
		for (i = 0; i < 10; i++) {
			sum += opts[i];
			/* Words past the options are the zeros we started with. */
			if (!ipv4_option_word_allowed(opts[i]))
				return MCAST_DROP_MALFORMED;
		}
	}
	if (ipv4_csum_fold32(sum) != 0xffff)
		return MCAST_DROP_MALFORMED;

	if (pkt->proto == IPPROTO_UDP && !ipv4_is_later_fragment(pkt->frag_off)) {
		payload = tot_len - ihl_len;
		if (payload < sizeof(struct udphdr))
			return MCAST_DROP_MALFORMED;
		udp = (void *)ip4 + ihl_len;
		if ((void *)(udp + 1) > data_end)
			return MCAST_DROP_MALFORMED;
		ulen = bpf_ntohs(udp->len);
		if (ulen < sizeof(struct udphdr))
			return MCAST_DROP_MALFORMED;
		if (pkt->frag_off & bpf_htons(IP_MF) ? ulen < payload : ulen != payload)
			return MCAST_DROP_MALFORMED;
	}

	if (ETH_HLEN + tot_len < skb->len) {
		/*
		 * Cutting a GSO packet would linearise it into one packet of
		 * its whole size; a GSO packet has no such bytes to cut.
		 */
		if (skb->gso_size)
			return MCAST_DROP_MALFORMED;
		if (bpf_skb_change_tail(skb, ETH_HLEN + tot_len, 0) < 0)
			return MCAST_DROP_REWRITE;
	}
	return 0;
}

#endif /* MCAST_LIB_IPV4_H */
