//! Client addresses as the per-address limits see them, and budgets over nested address blocks.
//!
//! One attacker rarely holds one IPv6 address: a home or a server is given a /64, and tunnel
//! brokers hand out a /48 (65,536 /64s) for free. So an IPv6 address counts in three nested
//! blocks, its /64, /56 and /48, and each block has its own limit: the /64 the configured one,
//! the /56 twice it and the /48 four times it ([`BLOCK_SHARES`]). A /48 can then hold at most four
//! /64s' worth, however many /64s it spreads over. An IPv4 address is one block of its own (/32).
//!
//! Both budgets here are plain data driven by the caller's clock: [`BlockCounts`] for things
//! held (open sockets, half-open request heads, live sessions) and [`BlockRates`] for things done
//! over time (new sessions, friend requests).

use std::collections::HashMap;
use std::net::IpAddr;

/// The blocks an IPv6 address counts in, smallest first, as prefix lengths.
const IPV6_BLOCKS: [u8; 3] = [64, 56, 48];

/// How many times the configured limit each nesting level may hold: a /64 (or an IPv4 address)
/// 1×, its /56 2×, its /48 4×.
pub const BLOCK_SHARES: [u32; 3] = [1, 2, 4];

/// A client's address, IPv4 kept apart from IPv6 (an IPv4-mapped IPv6 address is the IPv4 one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(IpAddr);

/// One address block: the address's leading `len` bits. IPv4 blocks are kept in the
/// `::ffff:0:0/96` range so that they never equal an IPv6 block. Ordered (by bits, then length)
/// only so that tables can rank blocks by what they hold and break ties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Block {
    bits: u128,
    len: u8,
}

impl Block {
    /// The block as three numbers (high and low 64 bits, length), as cluster records carry it.
    pub fn to_words(self) -> [u64; 3] {
        [
            (self.bits >> 64) as u64,
            self.bits as u64,
            u64::from(self.len),
        ]
    }

    /// The block [`Block::to_words`] made; `None` for a length beyond 128.
    pub fn from_words([high, low, len]: [u64; 3]) -> Option<Block> {
        let len = u8::try_from(len).ok().filter(|len| *len <= 128)?;
        Some(Block {
            bits: (u128::from(high) << 64) | u128::from(low),
            len,
        })
    }
}

impl serde::Serialize for Block {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_words().serialize(serializer)
    }
}

/// Read from a cluster record: `[high, low, len]`; a length beyond 128 is refused.
impl<'de> serde::Deserialize<'de> for Block {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let words = <[u64; 3]>::deserialize(deserializer)?;
        Block::from_words(words)
            .ok_or_else(|| serde::de::Error::custom("a block longer than 128 bits"))
    }
}

impl ClientAddr {
    pub fn new(ip: IpAddr) -> ClientAddr {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientAddr(IpAddr::V4(v4)),
                None => ClientAddr(IpAddr::V6(v6)),
            },
            v4 => ClientAddr(v4),
        }
    }

    /// The address callers use when nothing is grouped (unit tests, benches): `0.0.0.0`.
    pub const UNSPECIFIED: ClientAddr = ClientAddr(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));

    pub fn ip(self) -> IpAddr {
        self.0
    }

    /// The blocks this address counts in, smallest first, paired with their level (an index
    /// into [`BLOCK_SHARES`]).
    pub fn blocks(self) -> impl Iterator<Item = (usize, Block)> {
        let (bits, lens): (u128, &'static [u8]) = match self.0 {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped().to_bits(), &[128]),
            IpAddr::V6(v6) => (v6.to_bits(), &IPV6_BLOCKS),
        };
        lens.iter().enumerate().map(move |(level, &len)| {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            (
                level,
                Block {
                    bits: bits & mask,
                    len,
                },
            )
        })
    }

    /// The largest block: the one IPv4 address, or the IPv6 /48.
    pub fn largest_block(self) -> Block {
        self.blocks()
            .last()
            .map_or(Block { bits: 0, len: 0 }, |(_, block)| block)
    }

    /// The smallest block: the one address, or the /64.
    pub fn smallest_block(self) -> Block {
        self.blocks()
            .next()
            .map_or(Block { bits: 0, len: 0 }, |(_, block)| block)
    }
}

/// A limit for one level: `limit × share`, saturating.
fn level_limit(limit: u32, level: usize) -> u32 {
    limit.saturating_mul(BLOCK_SHARES.get(level).copied().unwrap_or(1))
}

/// How many of something each block holds now, against a limit per block.
///
/// Invariant: a block is in the map exactly while its count is above zero, so the map holds at
/// most three entries per thing held, and the counts of an address's blocks are always equal to
/// or greater than its own.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BlockCounts {
    /// The /64's (or IPv4 address's) limit; 0 = unlimited (nothing is counted).
    limit: u32,
    /// SipHash: clients choose their addresses.
    counts: HashMap<Block, u32>,
}

impl BlockCounts {
    pub fn new(limit: u32) -> BlockCounts {
        BlockCounts {
            limit,
            counts: HashMap::new(),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.limit == 0
    }

    /// Counts one more for `addr` when every block it is in is below its limit; false (and
    /// nothing counted) otherwise. Every `true` must be matched by one [`BlockCounts::release`].
    pub fn try_acquire(&mut self, addr: ClientAddr) -> bool {
        if self.limit == 0 {
            return true;
        }
        let full = addr.blocks().any(|(level, block)| {
            self.counts.get(&block).copied().unwrap_or(0) >= level_limit(self.limit, level)
        });
        if full {
            return false;
        }
        for (_, block) in addr.blocks() {
            *self.counts.entry(block).or_insert(0) += 1;
        }
        true
    }

    /// Counts one more for `addr` whatever the limit: for a session that already exists and
    /// arrives from another node of a cluster (taken over or adopted through a connection here,
    /// or handed over after its takeover stopped waiting). Refusing it would end a live session
    /// that no other node may still hold, and many clients behind one NAT address come back
    /// together when a node dies or is upgraded.
    /// Matched by one [`BlockCounts::release`] like [`BlockCounts::try_acquire`].
    pub fn acquire_regardless(&mut self, addr: ClientAddr) {
        if self.limit == 0 {
            return;
        }
        for (_, block) in addr.blocks() {
            *self.counts.entry(block).or_insert(0) += 1;
        }
    }

    /// Gives back one [`BlockCounts::try_acquire`] of `addr`.
    pub fn release(&mut self, addr: ClientAddr) {
        if self.limit == 0 {
            return;
        }
        for (_, block) in addr.blocks() {
            if let Some(count) = self.counts.get_mut(&block) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.counts.remove(&block);
                }
            }
        }
    }

    /// What `addr`'s smallest block holds now.
    pub fn held(&self, addr: ClientAddr) -> u32 {
        self.counts
            .get(&addr.smallest_block())
            .copied()
            .unwrap_or(0)
    }

    /// The counts `addrs` make, without refusing any: what a [`BlockCounts`] that acquired
    /// each of them and released nothing must equal (for invariant checks).
    pub fn recount(limit: u32, addrs: impl Iterator<Item = ClientAddr>) -> BlockCounts {
        let mut counts = BlockCounts::new(limit);
        if limit != 0 {
            for addr in addrs {
                for (_, block) in addr.blocks() {
                    *counts.counts.entry(block).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    /// Whether every block is within its level's limit.
    pub fn within_limits(&self) -> bool {
        self.limit == 0
            || self
                .counts
                .iter()
                .all(|(block, &count)| count <= level_limit(self.limit, level_of(block)))
    }

    /// Blocks with something held (for invariants and tests).
    pub fn blocks_in_use(&self) -> usize {
        self.counts.len()
    }
}

/// Token buckets per block: at most `rate` per `period_ms` for a /64 (or IPv4 address), with a
/// burst of `rate`, and [`BLOCK_SHARES`] times that for its /56 and /48.
///
/// Memory: a block has an entry only while its bucket is not full; full ones are dropped by a
/// sweep that runs whenever the table doubles, so its size follows the number of blocks active
/// in the last `period_ms`. At [`BlockRates::MAX_BLOCKS`] entries new blocks are let through
/// untracked (fail open): reaching it takes tens of thousands of addresses acting within one
/// period, a botnet the per-address limits do not claim to bound, and refusing instead would
/// let such a botnet lock every new address out.
#[derive(Debug)]
pub struct BlockRates {
    rate: u32,
    period_ms: u64,
    buckets: HashMap<Block, Bucket>,
    sweep_at_len: usize,
}

/// A token bucket in units of `1 / period_ms` token, exact in integers (see
/// `router::limits::TokenBucket`, which this mirrors with a capacity per level).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    units: u64,
    updated_ms: u64,
}

impl BlockRates {
    /// Bound on tracked blocks (about 64 bytes each).
    pub const MAX_BLOCKS: usize = 65_536;
    const FIRST_SWEEP_AT: usize = 1_024;

    /// `rate` 0 = unlimited.
    pub fn new(rate: u32, period_ms: u64) -> BlockRates {
        BlockRates {
            rate,
            period_ms: period_ms.max(1),
            buckets: HashMap::new(),
            sweep_at_len: Self::FIRST_SWEEP_AT,
        }
    }

    fn capacity(&self, level: usize) -> u64 {
        u64::from(level_limit(self.rate, level)).saturating_mul(self.period_ms)
    }

    /// Takes one token from every block `addr` is in, when each has one; false (and nothing
    /// taken) otherwise.
    pub fn try_take(&mut self, addr: ClientAddr, now_ms: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let mut allowed = true;
        for (level, block) in addr.blocks() {
            let capacity = self.capacity(level);
            let units = match self.buckets.get(&block) {
                Some(bucket) => self.refilled(*bucket, level, now_ms),
                None => capacity,
            };
            allowed &= units >= self.period_ms;
        }
        if !allowed {
            return false;
        }
        if self.buckets.len() >= self.sweep_at_len {
            self.sweep(now_ms);
        }
        for (level, block) in addr.blocks() {
            let units = match self.buckets.get(&block) {
                Some(bucket) => self.refilled(*bucket, level, now_ms),
                None if self.buckets.len() >= Self::MAX_BLOCKS => continue,
                None => self.capacity(level),
            };
            self.buckets.insert(
                block,
                Bucket {
                    units: units - self.period_ms,
                    updated_ms: now_ms,
                },
            );
        }
        true
    }

    /// Whether every block `addr` is in holds a token at `now_ms` (nothing is taken).
    pub fn allows(&self, addr: ClientAddr, now_ms: u64) -> bool {
        self.rate == 0
            || addr
                .blocks()
                .all(|(level, block)| match self.buckets.get(&block) {
                    Some(bucket) => self.refilled(*bucket, level, now_ms) >= self.period_ms,
                    None => true,
                })
    }

    /// The bucket's units at `now_ms`, capped at its level's capacity. A level's bucket also
    /// refills at its level's rate (a /48 gains four /64s' worth a period), so burst and
    /// sustained rate are nested alike.
    fn refilled(&self, bucket: Bucket, level: usize, now_ms: u64) -> u64 {
        refilled_units(
            bucket,
            level_limit(self.rate, level),
            self.period_ms,
            now_ms,
        )
    }

    /// Drops every bucket that has refilled completely: it behaves exactly like an absent one.
    pub fn sweep(&mut self, now_ms: u64) {
        let (rate, period_ms) = (self.rate, self.period_ms);
        self.buckets.retain(|block, bucket| {
            let level_rate = level_limit(rate, level_of(block));
            refilled_units(*bucket, level_rate, period_ms, now_ms)
                < u64::from(level_rate).saturating_mul(period_ms)
        });
        self.sweep_at_len = (self.buckets.len() * 2).max(Self::FIRST_SWEEP_AT);
    }

    /// Blocks tracked now (for metrics, invariants and tests).
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// A bucket of `rate` tokens per `period_ms` (in units of `1 / period_ms` token), refilled up to
/// `now_ms` and capped at its capacity, `rate` tokens.
fn refilled_units(bucket: Bucket, rate: u32, period_ms: u64, now_ms: u64) -> u64 {
    let elapsed = now_ms.saturating_sub(bucket.updated_ms);
    bucket
        .units
        .saturating_add(elapsed.saturating_mul(u64::from(rate)))
        .min(u64::from(rate).saturating_mul(period_ms))
}

/// The nesting level of a block from its prefix length.
fn level_of(block: &Block) -> usize {
    IPV6_BLOCKS
        .iter()
        .position(|&len| len == block.len)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> ClientAddr {
        ClientAddr::new(text.parse().unwrap())
    }

    #[test]
    fn ipv4_mapped_addresses_are_the_ipv4_address() {
        assert_eq!(addr("192.0.2.7"), addr("::ffff:192.0.2.7"));
        assert_eq!(addr("192.0.2.7").blocks().count(), 1);
        assert_ne!(
            addr("192.0.2.7").smallest_block(),
            addr("192.0.2.8").smallest_block()
        );
    }

    #[test]
    fn an_ipv6_address_counts_in_its_64_56_and_48() {
        let blocks: Vec<_> = addr("2001:db8:aa:bb01:1:2:3:4").blocks().collect();
        assert_eq!(blocks.len(), 3);
        assert_eq!(
            blocks[0].1,
            addr("2001:db8:aa:bb01::9").smallest_block(),
            "same /64"
        );
        assert_ne!(blocks[0].1, addr("2001:db8:aa:bb02::1").smallest_block());
        let other_56: Vec<_> = addr("2001:db8:aa:bb02::1").blocks().collect();
        assert_eq!(blocks[1].1, other_56[1].1, "bb01 and bb02 share a /56");
        let other_48: Vec<_> = addr("2001:db8:aa:cc00::1").blocks().collect();
        assert_ne!(blocks[1].1, other_48[1].1);
        assert_eq!(blocks[2].1, other_48[2].1);
    }

    #[test]
    fn one_48_holds_four_times_the_limit_however_many_64s_it_uses() {
        let mut counts = BlockCounts::new(2);
        let mut held = 0;
        for subnet in 0..64u32 {
            for host in 1..=4u32 {
                let a = addr(&format!("2001:db8:1:{subnet:x}00::{host}"));
                if counts.try_acquire(a) {
                    held += 1;
                }
            }
        }
        assert_eq!(held, 8, "2 per /64, 4 per /56, 8 per /48");
        assert!(counts.try_acquire(addr("2001:db8:2::1")), "another /48");
    }

    #[test]
    fn releasing_gives_the_room_back_and_leaves_no_entry() {
        let mut counts = BlockCounts::new(1);
        let a = addr("2001:db8::1");
        assert!(counts.try_acquire(a));
        assert!(!counts.try_acquire(addr("2001:db8::2")), "same /64");
        counts.release(a);
        assert_eq!(counts.blocks_in_use(), 0);
        assert!(counts.try_acquire(addr("2001:db8::2")));
    }

    #[test]
    fn unlimited_counts_nothing() {
        let mut counts = BlockCounts::new(0);
        for _ in 0..1000 {
            assert!(counts.try_acquire(addr("192.0.2.1")));
        }
        assert_eq!(counts.blocks_in_use(), 0);
    }

    #[test]
    fn rates_refill_and_nest() {
        let mut rates = BlockRates::new(2, 60_000);
        let a = addr("192.0.2.1");
        assert!(rates.try_take(a, 0));
        assert!(rates.try_take(a, 0));
        assert!(!rates.try_take(a, 0), "burst of 2");
        assert!(rates.try_take(addr("192.0.2.2"), 0), "another address");
        assert!(
            rates.try_take(a, 30_000),
            "one token back after half a period"
        );
        assert!(!rates.try_take(a, 30_000));

        assert!(
            !rates.allows(a, 30_000),
            "asking takes nothing and finds none"
        );
        assert!(rates.allows(a, 60_000));
        assert!(rates.allows(a, 60_000), "asking took nothing");
        assert!(BlockRates::new(0, 60_000).allows(a, 0), "0 is unlimited");

        let mut v6 = BlockRates::new(1, 60_000);
        let taken = (0..16u32)
            .filter(|subnet| v6.try_take(addr(&format!("2001:db8:1:{subnet:x}00::1")), 0))
            .count();
        assert_eq!(taken, 4, "a /48 gets four /64s' worth");
    }

    #[test]
    fn a_48_refills_at_four_times_the_rate_of_a_64() {
        let mut rates = BlockRates::new(1, 60_000);
        let subnet = |n: u32| addr(&format!("2001:db8:7:{n:x}00::1"));
        let takes = |rates: &mut BlockRates, now| {
            (0..16u32)
                .filter(|&n| rates.try_take(subnet(n), now))
                .count()
        };
        assert_eq!(takes(&mut rates, 0), 4, "the burst");
        for minute in 1..=3 {
            assert_eq!(
                takes(&mut rates, minute * 60_000),
                4,
                "minute {minute}: the /48 gains four a minute, not one"
            );
        }
    }

    #[test]
    fn full_buckets_are_swept() {
        let mut rates = BlockRates::new(1, 1_000);
        for host in 0..2_000u32 {
            let ip = std::net::Ipv4Addr::from_bits(0x0a00_0000 + host);
            assert!(rates.try_take(ClientAddr::new(ip.into()), 0));
        }
        rates.sweep(1_000);
        assert_eq!(rates.tracked(), 0);
    }
}
