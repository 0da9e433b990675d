//! FNV-1a, 32 bits: the hash Cilium uses to pin an endpoint to one of a
//! policy's `egressGateways`, and ours for policy ids.

/// FNV-32 offset basis.
const OFFSET_BASIS: u32 = 0x811c_9dc5;
/// FNV-32 prime (2^24 + 2^8 + 0x93).
const PRIME: u32 = 0x0100_0193;

/// FNV-1a over `bytes`, as Go's `hash/fnv.New32a`: xor each byte in, then
/// multiply (the "a" variant; FNV-1 multiplies first).
pub fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(PRIME)
    })
}
