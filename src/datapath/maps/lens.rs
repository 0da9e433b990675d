//! The prefix lengths the datapath probes, for both families: each policy
//! map is a hash of exact keys `{saddr bits + len, pod, group prefix /len}`,
//! and a lookup finds the longest match by probing, longest first, the
//! lengths its group's bucket lists (`mcast_egw_policy_lens_v4`,
//! `mcast_egw_policy_lens_v6`). One implementation; what differs per family
//! (the address width, which bits make the bucket, how a bucket's set is
//! stored, which maps) is [`PolicyFamily`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::typed::{Codec, TypedMap};
use super::{Maps, PolicyKeyOf, PolicyValueOf};
use crate::bpf_intf as intf;
use crate::datapath::bytes::Plain;
use crate::datapath::Result;

/// An address family of the policy maps, named by its address type.
pub trait PolicyFamily: Copy + Ord + fmt::Debug + 'static {
    /// Its destination prefixes.
    type Network: Copy + Ord + fmt::Debug;
    /// A bucket's length set as `include/mcast_egress.h` stores it.
    type LensRaw: Plain;
    /// Bits of an address: the longest prefix length.
    const MAX_LEN: u8;
    /// Buckets of the length map (a power of two).
    const BUCKETS: u32;
    /// Where the bucket's bits end, counted from the address's most
    /// significant bit: a prefix at least this long lies in one bucket, one
    /// `log2(BUCKETS)` bits shorter or more in all of them.
    const BUCKET_END: u8;

    /// The bucket of `group`, as the datapath computes it.
    fn bucket(group: Self) -> u32;
    fn network(net: &Self::Network) -> Self;
    fn prefix(net: &Self::Network) -> u8;
    fn contains(net: &Self::Network, addr: Self) -> bool;
    /// The stored form of a set (bit `MAX_LEN - len` for `/len`), and back.
    fn encode_lens(bits: u128) -> Self::LensRaw;
    fn decode_lens(raw: &Self::LensRaw) -> u128;
    /// This family's policy map and length map.
    fn policy_map(maps: &Maps) -> &TypedMap<PolicyKeyOf<Self, Self::Network>, PolicyValueOf<Self>>;
    fn lens_map(maps: &Maps) -> &TypedMap<u32, PrefixLens<Self>>;
}

/// IPv4: a bucket per /16 of 224.0.0.0/4, bits 4 to 15 of the group.
impl PolicyFamily for Ipv4Addr {
    type Network = Ipv4Network;
    type LensRaw = intf::mcast_policy_lens;
    const MAX_LEN: u8 = 32;
    const BUCKETS: u32 = intf::MCAST_POLICY_LENS_BUCKETS;
    const BUCKET_END: u8 = 16;

    fn bucket(group: Ipv4Addr) -> u32 {
        (u32::from(group) >> 16) & (Self::BUCKETS - 1)
    }
    fn network(net: &Ipv4Network) -> Ipv4Addr {
        net.network()
    }
    fn prefix(net: &Ipv4Network) -> u8 {
        net.prefix()
    }
    fn contains(net: &Ipv4Network, addr: Ipv4Addr) -> bool {
        net.contains(addr)
    }
    fn encode_lens(bits: u128) -> intf::mcast_policy_lens {
        intf::mcast_policy_lens {
            // An IPv4 set has no bit above 31 (see PrefixLens::bit).
            dst_lens: bits as u32,
            ..Default::default()
        }
    }
    fn decode_lens(raw: &intf::mcast_policy_lens) -> u128 {
        u128::from(raw.dst_lens)
    }
    fn policy_map(maps: &Maps) -> &TypedMap<PolicyKeyOf<Self, Ipv4Network>, PolicyValueOf<Self>> {
        &maps.policy
    }
    fn lens_map(maps: &Maps) -> &TypedMap<u32, PrefixLens<Self>> {
        &maps.policy_lens
    }
}

/// IPv6: a bucket per value of bits 100 to 111 of the group. SSM groups
/// (ff3x::/96, RFC 4607) and RFC 3306 groups carve their 32-bit group ID
/// out of the last 32 bits, so that is where policies and exclusions tell
/// groups apart: a /112 or longer is in one bucket, a /100 or shorter in
/// all 4096, one in between in 2^(112 - len) consecutive ones. The other
/// bits only decide how many lengths a group probes: a bucket holds every
/// length that can match its groups, so a lookup never misses an entry.
impl PolicyFamily for Ipv6Addr {
    type Network = Ipv6Network;
    type LensRaw = intf::mcast_policy_lens6;
    const MAX_LEN: u8 = 128;
    const BUCKETS: u32 = intf::MCAST_POLICY6_LENS_BUCKETS;
    const BUCKET_END: u8 = 112;

    fn bucket(group: Ipv6Addr) -> u32 {
        ((u128::from(group) >> 16) as u32) & (Self::BUCKETS - 1)
    }
    fn network(net: &Ipv6Network) -> Ipv6Addr {
        net.network()
    }
    fn prefix(net: &Ipv6Network) -> u8 {
        net.prefix()
    }
    fn contains(net: &Ipv6Network, addr: Ipv6Addr) -> bool {
        net.contains(addr)
    }
    fn encode_lens(bits: u128) -> intf::mcast_policy_lens6 {
        let mut dst_lens = [0u32; 4];
        for (i, w) in dst_lens.iter_mut().enumerate() {
            *w = (bits >> (32 * i)) as u32;
        }
        intf::mcast_policy_lens6 { dst_lens }
    }
    fn decode_lens(raw: &intf::mcast_policy_lens6) -> u128 {
        (0..4).fold(0, |bits, i| bits | u128::from(raw.dst_lens[i]) << (32 * i))
    }
    fn policy_map(maps: &Maps) -> &TypedMap<PolicyKeyOf<Self, Ipv6Network>, PolicyValueOf<Self>> {
        &maps.policy_v6
    }
    fn lens_map(maps: &Maps) -> &TypedMap<u32, PrefixLens<Self>> {
        &maps.policy_lens_v6
    }
}

/// A set of destination prefix lengths of family `A`: those the datapath
/// probes for a group, longest first. A length stands for the keys
/// `{A::MAX_LEN + len, pod, group prefix /len}`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrefixLens<A> {
    /// Bit `A::MAX_LEN - len` for `/len`, as `include/mcast_egress.h`
    /// stores it.
    bits: u128,
    family: PhantomData<fn() -> A>,
}

/// The lengths, longest first.
impl<A: PolicyFamily> fmt::Debug for PrefixLens<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PrefixLens").field(&self.lens()).finish()
    }
}

impl<A> Default for PrefixLens<A> {
    fn default() -> Self {
        PrefixLens {
            bits: 0,
            family: PhantomData,
        }
    }
}

impl<A: PolicyFamily> PrefixLens<A> {
    /// The one length `len`.
    pub fn single(len: u8) -> Self {
        PrefixLens::from_bits(Self::bit(len))
    }

    /// The lengths of `keys`' destinations.
    pub fn of<'a>(keys: impl IntoIterator<Item = &'a PolicyKeyOf<A, A::Network>>) -> Self {
        keys.into_iter()
            .map(|k| PrefixLens::single(A::prefix(&k.destination)))
            .fold(PrefixLens::default(), PrefixLens::union)
    }

    pub fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// Raw bits as stored; bits of lengths the controller never writes are
    /// kept, so that nothing read is lost on a write back.
    pub fn from_bits(bits: u128) -> Self {
        PrefixLens {
            bits,
            family: PhantomData,
        }
    }

    pub fn bits(self) -> u128 {
        self.bits
    }

    /// A /0 has no bit (none is ever written), nor has a length beyond the
    /// address.
    fn bit(len: u8) -> u128 {
        match A::MAX_LEN.checked_sub(len) {
            Some(host) if len > 0 => 1 << host,
            _ => 0,
        }
    }

    pub fn contains(self, len: u8) -> bool {
        self.bits & Self::bit(len) != 0
    }

    pub fn union(self, o: Self) -> Self {
        PrefixLens::from_bits(self.bits | o.bits)
    }

    pub fn intersection(self, o: Self) -> Self {
        PrefixLens::from_bits(self.bits & o.bits)
    }

    /// The lengths, longest first: the order the datapath probes them in.
    pub fn lens(self) -> Vec<u8> {
        (0..=A::MAX_LEN)
            .rev()
            .filter(|len| self.contains(*len))
            .collect()
    }
}

impl<A: PolicyFamily> Codec for PrefixLens<A> {
    type Raw = A::LensRaw;
    fn encode(&self) -> A::LensRaw {
        A::encode_lens(self.bits)
    }
    fn decode(raw: &A::LensRaw) -> Result<Self> {
        Ok(PrefixLens::from_bits(A::decode_lens(raw)))
    }
}

/// The prefix lengths the datapath probes, per bucket of family `A` (see
/// [`PolicyFamily`]). A bucket holds the lengths of the entries that can
/// match a group in it: those whose prefix covers the bucket's groups, and
/// those inside it. Buckets not listed have none.
#[derive(Clone, PartialEq, Eq)]
pub struct PolicyLens<A>(BTreeMap<u32, PrefixLens<A>>);

impl<A: PolicyFamily> fmt::Debug for PolicyLens<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PolicyLens").field(&self.0).finish()
    }
}

impl<A> Default for PolicyLens<A> {
    fn default() -> Self {
        PolicyLens(BTreeMap::new())
    }
}

impl<A: PolicyFamily> PolicyLens<A> {
    /// Buckets in all.
    pub const BUCKETS: u32 = A::BUCKETS;

    /// The bucket of `group`, as the datapath computes it.
    pub fn bucket(group: A) -> u32 {
        A::bucket(group)
    }

    /// The buckets a destination prefix can match groups of: its own for a
    /// prefix as long as the bucket bits reach or longer, every bucket
    /// inside it for a shorter one.
    pub fn buckets(dest: A::Network) -> Range<u32> {
        let first = A::bucket(A::network(&dest));
        let width = A::BUCKETS.trailing_zeros();
        match u32::from(A::BUCKET_END).checked_sub(u32::from(A::prefix(&dest))) {
            None | Some(0) => first..first + 1,
            Some(host) if host >= width => 0..A::BUCKETS,
            Some(host) => first..first + (1 << host),
        }
    }

    /// The lengths `keys` need probed. Destinations repeat across pods, so
    /// each distinct one is spread over its buckets once.
    pub fn of<'a>(keys: impl IntoIterator<Item = &'a PolicyKeyOf<A, A::Network>>) -> Self {
        let dests: BTreeSet<A::Network> = keys.into_iter().map(|k| k.destination).collect();
        let mut out = PolicyLens::default();
        for dest in dests {
            let len = PrefixLens::single(A::prefix(&dest));
            for b in Self::buckets(dest) {
                out.add(b, len);
            }
        }
        out
    }

    fn add(&mut self, bucket: u32, lens: PrefixLens<A>) {
        let e = self.0.entry(bucket).or_default();
        *e = e.union(lens);
    }

    /// The lengths of `bucket` (none when it is not listed).
    pub fn get(&self, bucket: u32) -> PrefixLens<A> {
        self.0.get(&bucket).copied().unwrap_or_default()
    }

    /// The lengths probed for `group`.
    pub fn for_group(&self, group: A) -> PrefixLens<A> {
        self.get(A::bucket(group))
    }

    /// The buckets where `self` has lengths `other` lacks, with all of
    /// `self`'s lengths there.
    pub fn beyond(&self, other: &Self) -> Self {
        PolicyLens(
            self.iter()
                .filter(|(b, l)| l.intersection(other.get(*b)) != *l)
                .collect(),
        )
    }

    /// The buckets with lengths, and theirs.
    pub fn iter(&self) -> impl Iterator<Item = (u32, PrefixLens<A>)> + '_ {
        self.0.iter().map(|(b, l)| (*b, *l))
    }
}

/// The policy entries and their lengths, of either family: the family is
/// that of the key, the group or the lengths passed.
impl Maps {
    /// Insert or replace an entry: its prefix length goes into the lengths
    /// the datapath probes first, so the entry is found from the moment it
    /// is in.
    pub fn policy_insert<A: PolicyFamily>(
        &self,
        key: &PolicyKeyOf<A, A::Network>,
        value: &PolicyValueOf<A>,
    ) -> Result<()>
    where
        PolicyKeyOf<A, A::Network>: Codec,
        PolicyValueOf<A>: Codec,
    {
        self.policy_lens_add(&PolicyLens::of([key]))?;
        A::policy_map(self).put(key, value)
    }

    /// Remove an entry; returns whether it existed. Its prefix length stays
    /// probed (a probe too many, never a miss) until
    /// [`Maps::policy_lens_retain`] takes it out.
    pub fn policy_delete<A: PolicyFamily>(&self, key: &PolicyKeyOf<A, A::Network>) -> Result<bool>
    where
        PolicyKeyOf<A, A::Network>: Codec,
        PolicyValueOf<A>: Codec,
    {
        A::policy_map(self).delete(key)
    }

    pub fn policy_get<A: PolicyFamily>(
        &self,
        key: &PolicyKeyOf<A, A::Network>,
    ) -> Result<Option<PolicyValueOf<A>>>
    where
        PolicyKeyOf<A, A::Network>: Codec,
        PolicyValueOf<A>: Codec,
    {
        A::policy_map(self).get(key)
    }

    /// The prefix lengths the datapath probes for `group`.
    pub fn policy_lens_for<A: PolicyFamily>(&self, group: A) -> Result<PrefixLens<A>> {
        self.policy_lens_of(A::bucket(group))
    }

    fn policy_lens_of<A: PolicyFamily>(&self, bucket: u32) -> Result<PrefixLens<A>> {
        Ok(A::lens_map(self).get(&bucket)?.unwrap_or_default())
    }

    /// Add `lens` to the probed lengths, before entries of those lengths
    /// are written. Writes that only add: a reader that sees one half done
    /// still sees every length it saw before. Returns the buckets written.
    pub fn policy_lens_add<A: PolicyFamily>(&self, lens: &PolicyLens<A>) -> Result<usize> {
        self.policy_lens_rewrite(lens, |b, now| now.union(lens.get(b)))
    }

    /// Bring each bucket listed in `buckets` from what it holds (`now`) to
    /// `next(b, now)`: a few read one by one, more in one batch (an IPv4 /8
    /// spans 256 buckets, a /4 all of them); those that change written in
    /// one.
    fn policy_lens_rewrite<A: PolicyFamily>(
        &self,
        buckets: &PolicyLens<A>,
        next: impl Fn(u32, PrefixLens<A>) -> PrefixLens<A>,
    ) -> Result<usize> {
        let map = A::lens_map(self);
        let all = if buckets.0.len() > 64 {
            Some(map.array_values()?)
        } else {
            None
        };
        let mut writes = Vec::new();
        for (b, _) in buckets.iter() {
            let now = match all.as_ref().and_then(|v| v.get(b as usize)) {
                Some(now) => *now,
                None => self.policy_lens_of(b)?,
            };
            let next = next(b, now);
            if next != now {
                writes.push((b, next));
            }
        }
        map.put_all(&writes)?;
        Ok(writes.len())
    }

    /// [`Maps::policy_lens_retain`] for `buckets` only: those where the
    /// entries just deleted had lengths the remaining ones (`keep`) lack.
    pub fn policy_lens_retain_in<A: PolicyFamily>(
        &self,
        buckets: &PolicyLens<A>,
        keep: &PolicyLens<A>,
    ) -> Result<usize> {
        self.policy_lens_rewrite(buckets, |b, now| now.intersection(keep.get(b)))
    }

    /// Keep only `keep` of the probed lengths, once the entries of every
    /// other length are deleted. Writes that only remove: a reader that
    /// sees one half done still sees every length in `keep`. One writer at
    /// a time (the controller), like every make-before-break change of the
    /// maps. Reads every bucket. Returns the buckets written.
    pub fn policy_lens_retain<A: PolicyFamily>(&self, keep: &PolicyLens<A>) -> Result<usize> {
        let map = A::lens_map(self);
        let mut writes = Vec::new();
        for (b, now) in (0..).zip(map.array_values()?) {
            let next = now.intersection(keep.get(b));
            if next != now {
                writes.push((b, next));
            }
        }
        map.put_all(&writes)?;
        Ok(writes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::maps::PolicyKey6;
    use crate::datapath::Plain;

    fn key6(src: &str, dst: &str) -> PolicyKey6 {
        PolicyKey6 {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    fn buckets6(dst: &str) -> Range<u32> {
        PolicyLens::<Ipv6Addr>::buckets(dst.parse().unwrap())
    }

    #[test]
    fn ipv6_buckets_are_bits_100_to_111() {
        let bucket = |g: &str| PolicyLens::<Ipv6Addr>::bucket(g.parse().unwrap());
        assert_eq!(bucket("ff3e::1"), 0);
        assert_eq!(bucket("ff3e::abc:1"), 0xabc);
        assert_eq!(bucket("ff3e::1abc:ffff"), 0xabc, "bits 96-99 are not in it");
        assert_eq!(bucket("ff3e:ffff::fff:0"), 0xfff);
    }

    #[test]
    fn ipv6_bucket_ranges_by_prefix_length() {
        // /100 and shorter: every bucket; /112 and longer: one; between,
        // 2^(112 - len) consecutive ones from the prefix's own.
        assert_eq!(buckets6("ff3e::/100"), 0..4096);
        assert_eq!(buckets6("ff00::/8"), 0..4096);
        assert_eq!(buckets6("ff3e::1800:0/101"), 0x800..0x1000);
        assert_eq!(buckets6("ff3e::0:0/101"), 0..0x800);
        assert_eq!(buckets6("ff3e::abe:0/111"), 0xabe..0xac0);
        assert_eq!(buckets6("ff3e::abc:0/112"), 0xabc..0xabd);
        assert_eq!(buckets6("ff3e::abc:1/128"), 0xabc..0xabd);
        assert_eq!(buckets6("ff3e::abc:100/120"), 0xabc..0xabd);
        // A prefix's groups are all in its buckets.
        let net: Ipv6Network = "ff3e::abe:0/111".parse().unwrap();
        for g in ["ff3e::abe:0", "ff3e::abf:ffff"] {
            let g: Ipv6Addr = g.parse().unwrap();
            assert!(net.contains(g));
            assert!(buckets6("ff3e::abe:0/111").contains(&Ipv6Addr::bucket(g)));
        }
    }

    #[test]
    fn ipv6_lens_are_128_bits_longest_lowest() {
        let keys = [
            key6("2001:db8::1", "ff3e::/96"),
            key6("2001:db8::1", "ff3e::1:0/112"),
            key6("2001:db8::2", "ff3e::1:ff00/120"),
            key6("2001:db8::2", "ff3e::1:1/128"),
            key6("2001:db8::2", "ff00::/8"),
            key6("2001:db8::2", "ff3e::/64"),
        ];
        let lens = PrefixLens::<Ipv6Addr>::of(&keys);
        assert_eq!(lens.lens(), vec![128, 120, 112, 96, 64, 8]);
        let raw = lens.encode();
        // Bit 128 - len: /128 bit 0 of word 0, /120 bit 8, /112 bit 16,
        // /96 bit 0 of word 1, /64 bit 0 of word 2, /8 bit 24 of word 3.
        assert_eq!(raw.dst_lens, [1 | 1 << 8 | 1 << 16, 1, 1, 1 << 24]);
        assert_eq!(raw.as_bytes().len(), 16);
        assert_eq!(PrefixLens::decode(&raw).unwrap(), lens);
        assert!(lens.contains(112) && !lens.contains(111) && !lens.contains(0));

        let all = PolicyLens::of(&keys);
        let at = |g: &str| all.for_group(g.parse().unwrap()).lens();
        assert_eq!(at("ff3e::1:1"), vec![128, 120, 112, 96, 64, 8]);
        assert_eq!(at("ff3e::1:ff01"), vec![128, 120, 112, 96, 64, 8]);
        assert_eq!(at("ff3e::2:1"), vec![96, 64, 8], "another bucket");
        assert_eq!(
            at("ff05::2:1"),
            vec![96, 64, 8],
            "bucket only: over, never under"
        );
        assert_eq!(all.iter().count(), 4096);
    }
}
