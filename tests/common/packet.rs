//! A small frame builder and an independent checksum verifier (RFC 1071),
//! sharing no code with the datapath.

use std::net::Ipv4Addr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const PROTO_IGMP: u8 = 2;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_PIM: u8 = 103;
pub const IP_MF: u16 = 0x2000;

/// RFC 1071 Internet checksum of `data` added to `initial` (unfolded).
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

pub fn checksum(data: &[u8]) -> u16 {
    !fold(ones_complement_sum(data, 0))
}

/// UDP checksum over the pseudo-header and `segment` (header with a zero
/// checksum field, and the payload). 0 is sent as 0xffff (RFC 768).
pub fn udp_checksum(saddr: Ipv4Addr, daddr: Ipv4Addr, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&saddr.octets());
    pseudo.extend_from_slice(&daddr.octets());
    pseudo.extend_from_slice(&[0, PROTO_UDP]);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    let sum = ones_complement_sum(segment, ones_complement_sum(&pseudo, 0));
    match !fold(sum) {
        0 => 0xffff,
        c => c,
    }
}

/// How the builder fills the UDP checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpCsum {
    /// Computed over the whole datagram (all fragments' payload).
    Computed,
    /// 0: the sender chose "no checksum".
    Zero,
}

/// An Ethernet + IPv4 (+ UDP) frame, described field by field.
#[derive(Debug, Clone)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    pub id: u16,
    pub tos: u8,
    /// Options, padded by the caller to a multiple of 4 bytes.
    pub options: Vec<u8>,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    pub more_fragments: bool,
    pub sport: u16,
    pub dport: u16,
    /// The whole UDP payload of the datagram.
    pub payload: Vec<u8>,
    pub udp_csum: UdpCsum,
    /// For fragments: which bytes of the UDP datagram (header included)
    /// this frame carries; None for the whole datagram.
    pub carry: Option<(usize, usize)>,
}

pub const POD_MAC: [u8; 6] = [0x0a, 0x58, 0xc6, 0x33, 0x64, 0x0b];
pub const HOST_MAC: [u8; 6] = [0x0a, 0x58, 0x00, 0x00, 0x00, 0x01];

/// The Ethernet address of an IPv4 group, worked out here from RFC 1112
/// section 6.4 (not taken from the datapath).
pub fn group_mac(group: Ipv4Addr) -> [u8; 6] {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

impl Frame {
    /// A UDP datagram from `saddr` to `daddr`, as a pod would send it.
    pub fn udp(saddr: Ipv4Addr, daddr: Ipv4Addr, payload: &[u8]) -> Frame {
        Frame {
            dst_mac: if daddr.is_multicast() {
                group_mac(daddr)
            } else {
                HOST_MAC
            },
            src_mac: POD_MAC,
            saddr,
            daddr,
            ttl: 8,
            proto: PROTO_UDP,
            id: 0x1234,
            tos: 0,
            options: Vec::new(),
            frag_offset: 0,
            more_fragments: false,
            sport: 40000,
            dport: 5001,
            payload: payload.to_vec(),
            udp_csum: UdpCsum::Computed,
            carry: None,
        }
    }

    pub fn ttl(mut self, ttl: u8) -> Frame {
        self.ttl = ttl;
        self
    }

    pub fn proto(mut self, proto: u8) -> Frame {
        self.proto = proto;
        self
    }

    pub fn options(mut self, options: &[u8]) -> Frame {
        assert_eq!(options.len() % 4, 0);
        self.options = options.to_vec();
        self
    }

    pub fn zero_udp_checksum(mut self) -> Frame {
        self.udp_csum = UdpCsum::Zero;
        self
    }

    /// Carry bytes [start, end) of the UDP datagram in this frame, with the
    /// matching fragment offset and MF flag.
    pub fn fragment(mut self, start: usize, end: usize) -> Frame {
        assert_eq!(start % 8, 0);
        let total = 8 + self.payload.len();
        self.frag_offset = (start / 8) as u16;
        self.more_fragments = end < total;
        self.carry = Some((start, end));
        self
    }

    /// The rewrite a gateway performs, applied to the description: what the
    /// upstream network must see.
    pub fn as_emitted(&self, egress_ip: Ipv4Addr, uplink_mac: [u8; 6]) -> Frame {
        let mut f = self.clone();
        f.saddr = egress_ip;
        f.ttl -= 1;
        f.dst_mac = group_mac(self.daddr);
        f.src_mac = uplink_mac;
        f
    }

    /// The UDP datagram (header and payload), checksum filled in.
    pub fn udp_datagram(&self) -> Vec<u8> {
        let len = (8 + self.payload.len()) as u16;
        let mut d = Vec::with_capacity(len as usize);
        d.extend_from_slice(&self.sport.to_be_bytes());
        d.extend_from_slice(&self.dport.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&self.payload);
        if self.udp_csum == UdpCsum::Computed {
            let c = udp_checksum(self.saddr, self.daddr, &d);
            d[6..8].copy_from_slice(&c.to_be_bytes());
        }
        d
    }

    pub fn bytes(&self) -> Vec<u8> {
        let l4 = if self.proto == PROTO_UDP {
            let d = self.udp_datagram();
            match self.carry {
                Some((s, e)) => d[s..e].to_vec(),
                None => d,
            }
        } else {
            self.payload.clone()
        };
        let ihl = 5 + self.options.len() / 4;
        let total = (ihl * 4 + l4.len()) as u16;
        let mut flags_frag = self.frag_offset;
        if self.more_fragments {
            flags_frag |= IP_MF;
        }
        let mut ip = Vec::with_capacity(ihl * 4);
        ip.push(0x40 | ihl as u8);
        ip.push(self.tos);
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&self.id.to_be_bytes());
        ip.extend_from_slice(&flags_frag.to_be_bytes());
        ip.push(self.ttl);
        ip.push(self.proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.saddr.octets());
        ip.extend_from_slice(&self.daddr.octets());
        ip.extend_from_slice(&self.options);
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());

        let mut f = Vec::with_capacity(14 + ip.len() + l4.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

/// A frame of another protocol: Ethernet header and raw payload.
pub fn raw_frame(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&POD_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A parsed view of a frame, for assertions.
pub struct View<'a>(pub &'a [u8]);

impl View<'_> {
    pub fn dst_mac(&self) -> [u8; 6] {
        self.0[0..6].try_into().unwrap()
    }
    pub fn src_mac(&self) -> [u8; 6] {
        self.0[6..12].try_into().unwrap()
    }
    pub fn ethertype(&self) -> u16 {
        u16::from_be_bytes([self.0[12], self.0[13]])
    }
    fn ip(&self) -> &[u8] {
        &self.0[14..]
    }
    pub fn ihl_len(&self) -> usize {
        usize::from(self.ip()[0] & 0x0f) * 4
    }
    pub fn ttl(&self) -> u8 {
        self.ip()[8]
    }
    pub fn proto(&self) -> u8 {
        self.ip()[9]
    }
    pub fn saddr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.ip()[12], self.ip()[13], self.ip()[14], self.ip()[15])
    }
    pub fn daddr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.ip()[16], self.ip()[17], self.ip()[18], self.ip()[19])
    }
    pub fn total_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.ip()[2], self.ip()[3]]))
    }
    pub fn is_fragmented(&self) -> bool {
        let ff = u16::from_be_bytes([self.ip()[6], self.ip()[7]]);
        ff & (IP_MF | 0x1fff) != 0
    }
    /// The IPv4 header sums to 0xffff, checksum included.
    pub fn ipv4_checksum_ok(&self) -> bool {
        fold(ones_complement_sum(&self.ip()[..self.ihl_len()], 0)) == 0xffff
    }
    pub fn udp(&self) -> &[u8] {
        &self.ip()[self.ihl_len()..self.total_len()]
    }
    pub fn udp_checksum_field(&self) -> u16 {
        u16::from_be_bytes([self.udp()[6], self.udp()[7]])
    }
    /// Verify the UDP checksum of an unfragmented datagram from scratch.
    pub fn udp_checksum_ok(&self) -> bool {
        assert!(!self.is_fragmented(), "a fragment cannot be verified alone");
        let mut seg = self.udp().to_vec();
        let field = u16::from_be_bytes([seg[6], seg[7]]);
        seg[6] = 0;
        seg[7] = 0;
        udp_checksum(self.saddr(), self.daddr(), &seg) == field
    }
}
