//! A tiny multiply-rotate hasher (the FxHash idea) for the router's maps and sets.
//!
//! HashDoS is not a concern here: every key is chosen by the server, never by a client. Session
//! IDs come from the CSPRNG and connection ids (and the event loop's tokens) from a counter; a client can only
//! *name* an existing ID, which it cannot make collide with anything. SipHash would cost more than
//! the rest of the MESSAGE path's lookups together.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// The 64-bit multiplier of rustc-hash 2 (odd, with well spread bits).
const MULTIPLIER: u64 = 0xf135_7aea_2e62_a9c5;

/// Multiplication moves entropy into the high bits, while hashbrown picks buckets with the low
/// bits: rotating at the end brings the well-mixed bits down.
const FINISH_ROTATION: u32 = 26;

#[derive(Clone, Copy, Default)]
pub struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = self.hash.wrapping_add(word).wrapping_mul(MULTIPLIER);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // Mixing in the length keeps "ab" and "ab\0" apart.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash.rotate_left(FINISH_ROTATION)
    }
}

pub type FastBuild = BuildHasherDefault<FastHasher>;
pub type FastMap<K, V> = HashMap<K, V, FastBuild>;
pub type FastSet<T> = HashSet<T, FastBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn hash_of(n: u64) -> u64 {
        FastBuild::default().hash_one(n)
    }

    #[test]
    fn sequential_keys_spread_over_low_bits() {
        // hashbrown indexes buckets by the low bits: 1024 sequential conn ids over 1024 buckets
        // must not pile up.
        let mut buckets = vec![0u32; 1024];
        for n in 0..1024u64 {
            let slot = (hash_of(n) & 1023) as usize;
            buckets[slot] += 1;
        }
        let fullest = buckets.iter().copied().max().unwrap_or(0);
        assert!(fullest <= 8, "fullest bucket holds {fullest}");
    }

    #[test]
    fn different_byte_strings_hash_differently() {
        let build = FastBuild::default();
        assert_ne!(
            build.hash_one(b"ab".as_slice()),
            build.hash_one(b"ab\0".as_slice())
        );
        assert_ne!(build.hash_one(1u32), build.hash_one(2u32));
    }

    #[test]
    fn maps_work_with_the_hasher() {
        let mut map: FastMap<u64, u64> = FastMap::default();
        for n in 0..10_000 {
            map.insert(n, n * 2);
        }
        assert_eq!(map.get(&4321), Some(&8642));
        assert_eq!(map.len(), 10_000);
    }
}
