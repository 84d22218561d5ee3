//! The mailbox (PROTOCOL.md §10): MESSAGEs to handles nobody connected listens on, kept in
//! memory until fetched, expired or evicted.
//!
//! Letters are numbered by arrival; `letters` holds them in that order, so the oldest (the next
//! to expire) is the first entry. Each handle and each sender address block keeps the arrival
//! numbers of its letters in order too, so its oldest is found in O(log n) and a letter leaves
//! all three in O(log n) wherever it sits; blocks are also ranked by the bytes they hold. Nothing
//! is ever scanned.
//!
//! Bounds, each kept by dropping letters before a new one is stored: at most `max_per_handle`
//! letters and `max_bytes_per_handle` bytes per handle (its oldest go), and `max_bytes` in all.
//! When the whole mailbox is full, the letter that goes is the oldest of the sender block that
//! holds the most bytes, counting the new letter with its sender's block (see
//! [`Mailbox::store`]): blocks end up with equal shares under pressure, so a few addresses
//! cannot push out everyone else's mail, and a block that holds little loses nothing while
//! fuller ones exist. A letter counts [`Letter::bytes`]. Invariants (checked by
//! [`Mailbox::check`]): the indexes name exactly the stored letters, every byte count is the sum
//! it stands for, the ranking matches the blocks' bytes, and every cap holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::handles::{BlockMap, HandleMap, KeyedBuild};
use crate::address::Block;
use crate::id::Id;
use crate::protocol::Handle;

/// What a stored letter costs beyond its frame and `ref`: the letter's own fields, its entries
/// in the indexes, its handle's and its block's entries, and the allocator's rounding. The cap on
/// the mailbox is a cap on memory only if this is no less than what they really take: up to
/// about 490 bytes when every letter goes to a handle of its own, about 270 when handles hold
/// many (`tests/alloc_count.rs` checks it; BENCHMARKS.md has the figures).
pub const LETTER_OVERHEAD: usize = 512;

/// The session that stored a letter: its ID and its serial number, so that a later session with
/// the same ID is never taken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    pub id: Id,
    pub serial: u64,
}

/// One stored MESSAGE.
#[derive(Debug)]
pub struct Letter {
    pub handle: Handle,
    /// The MESSAGE exactly as the listener gets it.
    pub frame: Box<str>,
    pub sender: Sender,
    /// The raw JSON text of the MESSAGE's `ref`, for UNDELIVERED; `None` without one.
    pub reference: Option<Box<str>>,
    /// The block of the address that created the sender's session.
    pub block: Block,
    /// When it was stored (monotonic milliseconds): it expires `ttl_ms` later.
    pub stored_ms: u64,
}

impl Letter {
    /// What the letter counts against the caps.
    pub fn bytes(&self) -> usize {
        self.frame.len() + self.reference.as_ref().map_or(0, |r| r.len()) + LETTER_OVERHEAD
    }
}

/// What the mailbox holds for one handle: how many letters, and the arrival number of the
/// oldest. Kept by the handle table for each handle with a listener, hence compact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mail {
    letters: u32,
    /// [`Mail::NONE`] without letters.
    oldest: u64,
}

impl Mail {
    const NONE: u64 = u64::MAX;

    /// Arrival numbers count up from 0 by one per letter, so they never reach `NONE`; a handle
    /// holds at most `max_per_handle` letters, far below `u32::MAX`.
    pub fn new(letters: usize, oldest: Option<u64>) -> Mail {
        Mail {
            letters: u32::try_from(letters).unwrap_or(u32::MAX),
            oldest: oldest.unwrap_or(Mail::NONE),
        }
    }

    pub fn letters(self) -> usize {
        self.letters as usize
    }

    pub fn oldest(self) -> Option<u64> {
        (self.oldest != Mail::NONE).then_some(self.oldest)
    }
}

impl Default for Mail {
    fn default() -> Mail {
        Mail::new(0, None)
    }
}

/// The caps of a [`Mailbox`]; `max_bytes == 0` turns it off.
#[derive(Clone, Copy, Debug)]
pub struct MailboxLimits {
    pub max_bytes: usize,
    pub max_per_handle: usize,
    pub max_bytes_per_handle: usize,
    pub ttl_ms: u64,
}

/// Arrival numbers kept in order.
trait Arrivals: Default {
    fn add(&mut self, arrival: u64);
    fn forget(&mut self, arrival: u64);
    fn oldest(&self) -> Option<u64>;
    fn count(&self) -> usize;
}

impl Arrivals for BTreeSet<u64> {
    fn add(&mut self, arrival: u64) {
        self.insert(arrival);
    }

    fn forget(&mut self, arrival: u64) {
        self.remove(&arrival);
    }

    fn oldest(&self) -> Option<u64> {
        self.first().copied()
    }

    fn count(&self) -> usize {
        self.len()
    }
}

/// A handle's arrivals: at most `max_per_handle` (256 by default), and most handles with mail
/// hold one or a few, for which a B-tree's node (over 100 bytes) would cost more than the
/// letters' own bookkeeping. Sorted; a new letter's number is the largest so far, so inserting is
/// a push, and removing shifts at most `max_per_handle` numbers.
#[derive(Debug, Default, PartialEq, Eq)]
struct FewArrivals(Vec<u64>);

impl Arrivals for FewArrivals {
    fn add(&mut self, arrival: u64) {
        let at = self.0.partition_point(|&a| a < arrival);
        if self.0.get(at) != Some(&arrival) {
            self.0.insert(at, arrival);
        }
    }

    fn forget(&mut self, arrival: u64) {
        if let Ok(at) = self.0.binary_search(&arrival) {
            self.0.remove(at);
        }
    }

    fn oldest(&self) -> Option<u64> {
        self.0.first().copied()
    }

    fn count(&self) -> usize {
        self.0.len()
    }
}

/// A letter's arrival numbers in order, and their bytes: one handle's or one block's.
#[derive(Debug, Default, PartialEq, Eq)]
struct Shelf<A> {
    arrivals: A,
    bytes: usize,
}

/// The letter is larger than a cap that concerns it: it could never be stored.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

#[derive(Debug)]
pub struct Mailbox {
    limits: MailboxLimits,
    /// Boxed: a B-tree filled in order leaves its nodes about half full, and a node holds 11
    /// entries, so unboxed letters would cost twice their size each.
    letters: BTreeMap<u64, Box<Letter>>,
    by_handle: HandleMap<Shelf<FewArrivals>>,
    by_block: BlockMap<Shelf<BTreeSet<u64>>>,
    /// Every block in `by_block`, ranked by its bytes: the fullest is the last.
    by_bytes: BTreeSet<(usize, Block)>,
    bytes: usize,
    next_arrival: u64,
}

impl Mailbox {
    pub fn new(limits: MailboxLimits, build: KeyedBuild) -> Mailbox {
        Mailbox {
            limits,
            letters: BTreeMap::new(),
            by_handle: HashMap::with_hasher(build.clone()),
            by_block: HashMap::with_hasher(build),
            by_bytes: BTreeSet::new(),
            bytes: 0,
            next_arrival: 0,
        }
    }

    /// Whether letters can be stored at all (`--mailbox-bytes` is not 0).
    pub fn is_on(&self) -> bool {
        self.limits.max_bytes > 0
    }

    pub fn len(&self) -> usize {
        self.letters.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The arrival number of the oldest letter for `handle`.
    pub fn oldest_for(&self, handle: &Handle) -> Option<u64> {
        self.by_handle.get(handle)?.arrivals.oldest()
    }

    /// What the mailbox holds for `handle`.
    pub fn mail_for(&self, handle: &Handle) -> Mail {
        self.by_handle.get(handle).map_or(Mail::default(), |shelf| {
            Mail::new(shelf.arrivals.count(), shelf.arrivals.oldest())
        })
    }

    /// Stores `letter`, first dropping what the caps need: the oldest letters of its handle,
    /// then, while the mailbox is full, the oldest letter of the fullest block ([`Mailbox::
    /// fullest_block`]). The dropped letters are returned, in the order they went, for their
    /// senders to be told. `TooLarge` (nothing dropped) when the letter alone is over a cap, or
    /// the mailbox is off.
    pub fn store(&mut self, letter: Letter) -> Result<Vec<Letter>, TooLarge> {
        let size = letter.bytes();
        let limits = self.limits;
        if size > limits.max_bytes
            || size > limits.max_bytes_per_handle
            || limits.max_per_handle == 0
        {
            return Err(TooLarge);
        }
        let mut evicted = Vec::new();
        while let Some(shelf) = self.by_handle.get(&letter.handle)
            && (shelf.arrivals.count() >= limits.max_per_handle
                || shelf.bytes + size > limits.max_bytes_per_handle)
        {
            let Some(oldest) = shelf.arrivals.oldest() else {
                break;
            };
            evicted.extend(self.remove(oldest));
        }
        while self.bytes + size > limits.max_bytes {
            let oldest = self
                .fullest_block(letter.block, size)
                .and_then(|block| self.by_block.get(&block)?.arrivals.oldest());
            let Some(oldest) = oldest else {
                break;
            };
            evicted.extend(self.remove(oldest));
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        let handle_shelf = self.by_handle.entry(letter.handle).or_default();
        handle_shelf.arrivals.add(arrival);
        handle_shelf.bytes += size;
        let block_shelf = self.by_block.entry(letter.block).or_default();
        let before = block_shelf.bytes;
        block_shelf.arrivals.add(arrival);
        block_shelf.bytes += size;
        self.rerank(letter.block, before, before + size);
        self.bytes += size;
        self.letters.insert(arrival, Box::new(letter));
        Ok(evicted)
    }

    /// The block whose oldest letter makes room for a letter of `size` bytes from `sender`:
    /// the block holding the most bytes, the sender's counted with the new letter. On a tie,
    /// or when the sender's block holds nothing yet, another block's: a block is never turned
    /// away for lack of room while another holds at least as much as it would. `None` only for
    /// an empty mailbox.
    fn fullest_block(&self, sender: Block, size: usize) -> Option<Block> {
        let own = self.by_block.get(&sender).map_or(0, |shelf| shelf.bytes);
        let other = self
            .by_bytes
            .iter()
            .rev()
            .find(|&&(_, block)| block != sender);
        match other {
            Some(&(bytes, block)) if own == 0 || own + size <= bytes => Some(block),
            _ if own > 0 => Some(sender),
            _ => None,
        }
    }

    /// `block` went from holding `before` bytes to `after`: its rank follows.
    fn rerank(&mut self, block: Block, before: usize, after: usize) {
        if before > 0 {
            self.by_bytes.remove(&(before, block));
        }
        if after > 0 {
            self.by_bytes.insert((after, block));
        }
    }

    /// When the oldest letter expires (monotonic milliseconds).
    pub fn next_expiry_ms(&self) -> Option<u64> {
        let (_, oldest) = self.letters.first_key_value()?;
        Some(oldest.stored_ms.saturating_add(self.limits.ttl_ms))
    }

    /// Removes and returns the oldest letter if it has expired at `now_ms`.
    pub fn pop_expired(&mut self, now_ms: u64) -> Option<Letter> {
        if self.next_expiry_ms()? > now_ms {
            return None;
        }
        let arrival = *self.letters.first_key_value()?.0;
        self.remove(arrival)
    }

    /// Removes and returns the oldest letter for `handle`.
    pub fn take_oldest_for(&mut self, handle: &Handle) -> Option<Letter> {
        let arrival = self.oldest_for(handle)?;
        self.remove(arrival)
    }

    /// Takes letter `arrival` out of the mailbox and all its indexes.
    fn remove(&mut self, arrival: u64) -> Option<Letter> {
        let letter = *self.letters.remove(&arrival)?;
        let size = letter.bytes();
        self.bytes -= size;
        if let Some(shelf) = self.by_handle.get_mut(&letter.handle) {
            shelf.arrivals.forget(arrival);
            shelf.bytes -= size;
            if shelf.arrivals.count() == 0 {
                self.by_handle.remove(&letter.handle);
            }
        }
        if let Some(shelf) = self.by_block.get_mut(&letter.block) {
            shelf.arrivals.forget(arrival);
            let before = shelf.bytes;
            shelf.bytes -= size;
            let after = shelf.bytes;
            if shelf.arrivals.count() == 0 {
                self.by_block.remove(&letter.block);
            }
            self.rerank(letter.block, before, after);
        }
        Some(letter)
    }

    /// Checks the invariants of the module docs. O(letters): for tests only.
    pub fn check(&self) -> Result<(), String> {
        let mut by_handle: HashMap<Handle, Shelf<FewArrivals>> = HashMap::new();
        let mut by_block: HashMap<Block, Shelf<BTreeSet<u64>>> = HashMap::new();
        let mut bytes = 0;
        let mut previous_ms = 0;
        for (&arrival, letter) in &self.letters {
            if letter.stored_ms < previous_ms {
                return Err(format!("letter {arrival} is older than the one before it"));
            }
            previous_ms = letter.stored_ms;
            let size = letter.bytes();
            bytes += size;
            let shelf = by_handle.entry(letter.handle).or_default();
            shelf.arrivals.add(arrival);
            shelf.bytes += size;
            let shelf = by_block.entry(letter.block).or_default();
            shelf.arrivals.add(arrival);
            shelf.bytes += size;
        }
        if bytes != self.bytes {
            return Err(format!(
                "letters hold {bytes} bytes, counted {}",
                self.bytes
            ));
        }
        if self.limits.max_bytes == 0 && !self.letters.is_empty() {
            return Err("letters in a mailbox that is off".to_owned());
        }
        if bytes > self.limits.max_bytes {
            return Err(format!("{bytes} bytes over the mailbox's cap"));
        }
        if by_handle.len() != self.by_handle.len() || by_block.len() != self.by_block.len() {
            return Err("an index names a handle or block without letters".to_owned());
        }
        for (handle, shelf) in &by_handle {
            if self.by_handle.get(handle) != Some(shelf) {
                return Err("a handle's index differs from its letters".to_owned());
            }
            if shelf.arrivals.count() > self.limits.max_per_handle
                || shelf.bytes > self.limits.max_bytes_per_handle
            {
                return Err(format!(
                    "a handle holds {} letters, {} bytes",
                    shelf.arrivals.count(),
                    shelf.bytes
                ));
            }
        }
        if by_block.len() != self.by_bytes.len() {
            return Err("the ranking names a block without letters".to_owned());
        }
        for (block, shelf) in &by_block {
            if self.by_block.get(block) != Some(shelf) {
                return Err(format!("{block:?}'s index differs from its letters"));
            }
            if !self.by_bytes.contains(&(shelf.bytes, *block)) {
                return Err(format!("{block:?} is ranked by other bytes"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::ClientAddr;

    const LIMITS: MailboxLimits = MailboxLimits {
        max_bytes: 100_000,
        max_per_handle: 3,
        max_bytes_per_handle: 20_000,
        ttl_ms: 1_000,
    };

    fn mailbox(limits: MailboxLimits) -> Mailbox {
        Mailbox::new(limits, KeyedBuild::new((5, 6)))
    }

    fn block(text: &str) -> Block {
        ClientAddr::new(text.parse().expect("address")).largest_block()
    }

    /// A letter of exactly `bytes` counted bytes.
    fn letter(handle: u8, from: &str, bytes: usize, stored_ms: u64) -> Letter {
        Letter {
            handle: Handle::from_seed(&[handle; 43]),
            frame: "x".repeat(bytes - LETTER_OVERHEAD).into(),
            sender: Sender {
                id: Id::from_random_bytes([handle; 4]),
                serial: u64::from(handle),
            },
            reference: None,
            block: block(from),
            stored_ms,
        }
    }

    fn stored_ms(letters: &[Letter]) -> Vec<u64> {
        letters.iter().map(|letter| letter.stored_ms).collect()
    }

    #[test]
    fn letters_leave_oldest_first_by_handle_and_by_expiry() {
        let mut mailbox = mailbox(LIMITS);
        let ok = |result: Result<Vec<Letter>, TooLarge>| result.map(|e| e.len());
        assert_eq!(ok(mailbox.store(letter(1, "192.0.2.1", 2_000, 10))), Ok(0));
        assert_eq!(ok(mailbox.store(letter(2, "192.0.2.1", 2_000, 20))), Ok(0));
        assert_eq!(ok(mailbox.store(letter(1, "192.0.2.1", 2_000, 30))), Ok(0));
        assert_eq!((mailbox.len(), mailbox.bytes()), (3, 6_000));
        let one = Handle::from_seed(&[1; 43]);
        assert_eq!(mailbox.mail_for(&one).letters(), 2);
        assert_eq!(mailbox.next_expiry_ms(), Some(1_010));
        assert_eq!(mailbox.pop_expired(1_009).map(|l| l.stored_ms), None);
        assert_eq!(mailbox.take_oldest_for(&one).map(|l| l.stored_ms), Some(10));
        assert_eq!(mailbox.next_expiry_ms(), Some(1_020));
        assert_eq!(mailbox.pop_expired(5_000).map(|l| l.stored_ms), Some(20));
        assert_eq!(mailbox.pop_expired(5_000).map(|l| l.stored_ms), Some(30));
        assert_eq!(mailbox.pop_expired(5_000).map(|l| l.stored_ms), None);
        assert_eq!((mailbox.len(), mailbox.bytes()), (0, 0));
        assert_eq!(mailbox.check(), Ok(()));
    }

    #[test]
    fn a_handles_caps_evict_its_own_oldest() {
        let mut mailbox = mailbox(LIMITS);
        // A handle holds 3 letters: the fourth drops its oldest.
        for ms in 0..3 {
            assert!(mailbox.store(letter(1, "192.0.2.1", 2_000, ms)).is_ok());
        }
        assert!(mailbox.store(letter(2, "192.0.2.1", 2_000, 3)).is_ok());
        let evicted = mailbox.store(letter(1, "198.51.100.1", 2_000, 4));
        assert_eq!(evicted.map(|e| stored_ms(&e)), Ok(vec![0]));
        // ... and 20,000 bytes.
        let evicted = mailbox.store(letter(1, "192.0.2.1", 17_000, 5));
        assert_eq!(evicted.map(|e| stored_ms(&e)), Ok(vec![1, 2]));
        assert_eq!(mailbox.check(), Ok(()));
    }

    #[test]
    fn a_full_mailbox_evicts_from_the_fullest_sender_block() {
        let mut mailbox = mailbox(LIMITS);
        let ok = |result: Result<Vec<Letter>, TooLarge>| result.map(|e| stored_ms(&e));
        // An honest block's one letter, then two blocks fill the rest.
        assert_eq!(
            ok(mailbox.store(letter(1, "192.0.2.1", 10_000, 0))),
            Ok(vec![])
        );
        for ms in 1..=3 {
            assert!(
                mailbox
                    .store(letter(10 + ms as u8, "198.51.100.1", 15_000, ms))
                    .is_ok()
            );
            assert!(
                mailbox
                    .store(letter(20 + ms as u8, "203.0.113.1", 15_000, ms))
                    .is_ok()
            );
        }
        assert_eq!(mailbox.bytes(), 100_000);
        // Each flooding block's letter pushes out the oldest of the fullest block counting the
        // new letter: its own, as both hold as much. Never the honest letter, which is older.
        assert_eq!(
            ok(mailbox.store(letter(30, "198.51.100.1", 15_000, 4))),
            Ok(vec![1])
        );
        assert_eq!(
            ok(mailbox.store(letter(31, "203.0.113.1", 15_000, 5))),
            Ok(vec![1])
        );
        // A third block with nothing stored takes from the fullest.
        let evicted = mailbox.store(letter(32, "233.252.0.1", 15_000, 6));
        assert_eq!(evicted.map(|e| e.len()), Ok(1));
        // A letter from the honest block: it holds the least, so another block gives.
        let evicted = mailbox.store(letter(2, "192.0.2.1", 10_000, 7));
        assert!(evicted.is_ok_and(|e| e.iter().all(|l| l.block != block("192.0.2.1"))));
        assert_eq!(mailbox.mail_for(&Handle::from_seed(&[1; 43])).letters(), 1);
        assert!(mailbox.bytes() <= LIMITS.max_bytes);
        assert_eq!(mailbox.check(), Ok(()));
        // Once the honest block holds the most, its own oldest go.
        let mut evicted = Vec::new();
        for ms in 8..20 {
            let next = letter(40 + ms as u8, "192.0.2.1", 10_000, ms);
            evicted.extend(mailbox.store(next).unwrap_or_default());
        }
        assert!(
            evicted.iter().any(|l| l.stored_ms == 0),
            "{:?}",
            stored_ms(&evicted)
        );
        assert_eq!(mailbox.check(), Ok(()));
    }

    #[test]
    fn a_letter_over_a_cap_or_a_mailbox_off_stores_nothing() {
        let mut mailbox = mailbox(LIMITS);
        assert_eq!(
            mailbox
                .store(letter(1, "192.0.2.1", 20_010, 0))
                .map(|e| e.len()),
            Err(TooLarge)
        );
        let mut off = self::mailbox(MailboxLimits {
            max_bytes: 0,
            ..LIMITS
        });
        assert!(!off.is_on());
        assert_eq!(
            off.store(letter(1, "192.0.2.1", 2_000, 0)).map(|e| e.len()),
            Err(TooLarge)
        );
        assert_eq!(off.check(), Ok(()));
        assert_eq!(mailbox.len(), 0);
    }
}
