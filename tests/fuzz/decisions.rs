//! Where the datapath is stricter than a Linux router, on purpose: the
//! rules under which a frame the kernel's input path forwards does not
//! leave through us. The fuzzer's kernel stage (tests/fuzz/kernel.rs)
//! names each frame that only the kernel forwarded by the rule of the
//! model that stops it, and every such rule must be one of these; the
//! README's "Stricter than a router" table lists the same names
//! (tests/contract.rs keeps the two in step).

/// (rule, why), rule as the model names it.
pub const STRICTER: &[(&str, &str)] = &[
    (
        "vlan_tag",
        "an 802.1Q or 802.1ad tag, VID 0 (priority-tagged) included, goes on to Cilium",
    ),
    (
        "never_egress",
        "224.0.0.0/24, IGMP and PIM: a multicast router never forwards them",
    ),
    (
        "never_egress_scope",
        "IPv6 groups of scope 0 to 2: never forwarded (RFC 4291 2.7)",
    ),
    (
        "never_egress_mld_pim",
        "MLD and PIM: a multicast router consumes them",
    ),
    (
        "ttl_exceeded",
        "TTL or hop limit of 1 or 0: a router's forwarding drops it",
    ),
    (
        "unsupported_proto",
        "only UDP leaves: TCP, ICMP, ESP, AH, and later fragments that name another header",
    ),
    (
        "dst_mac_mismatch",
        "a destination MAC other than the group's: broadcast, the node's, another group's",
    ),
    (
        "ipv4_options",
        "IPv4 options other than Router Alert and padding: record route, timestamp",
    ),
    (
        "udp_header_missing",
        "a first fragment without the whole UDP header (RFC 7112)",
    ),
    (
        "udp_length",
        "a UDP length other than the datagram's: receivers drop or trim it",
    ),
    (
        "udp6_zero_checksum",
        "a zero UDP checksum over IPv6 (RFC 8200 8.1): receivers drop it",
    ),
    (
        "ipv6_payload_length_zero",
        "IPv6 payload length 0: a jumbogram, or an empty packet",
    ),
    (
        "hbh_option",
        "hop-by-hop options other than padding and Router Alert that a router skips",
    ),
    (
        "hbh_not_first",
        "a hop-by-hop header behind another header (RFC 8200 4.1)",
    ),
    (
        "routing_segments_left",
        "a routing header with segments left: a router would act on it",
    ),
    (
        "second_fragment_header",
        "two fragment headers in one packet (RFC 8200 4.1)",
    ),
    ("ext_chain_too_long", "more than eight extension headers"),
    (
        "ext_past_payload",
        "an extension header that runs past the payload",
    ),
];

/// Whether `rule` is one of [`STRICTER`].
pub fn is_stricter(rule: &str) -> bool {
    STRICTER.iter().any(|(r, _)| *r == rule)
}
