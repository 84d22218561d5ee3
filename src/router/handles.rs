//! Who listens on which handle (PROTOCOL.md §10): handle → listening session, each session's
//! handles, and how many handles each address block's sessions hold.
//!
//! Handles are chosen by clients, so unlike the router's other keys they could be chosen to
//! collide: the maps keyed by handles hash under secrets drawn from the router's entropy
//! ([`KeyedBuild`]), never with the unkeyed [`FastHasher`](super::fasthash::FastHasher).
//!
//! Invariants (checked by [`HandleTable::check`]): `listeners` and `by_session` are mirrors (a
//! handle is in a session's set exactly when `listeners` names that session); a session has an
//! entry in `by_session` only while it holds at least one handle; `per_block` holds, for each
//! block with at least one handle, the number of handles of the sessions created from it; and
//! `listeners.len()` is at most `max_total`, each session holds at most `max_per_session`, each
//! block at most `max_per_block`.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

use super::fasthash::FastMap;
use crate::address::Block;
use crate::id::Id;
use crate::protocol::Handle;

/// The hasher of the maps keyed by client-chosen handles: a folded 64×64→128-bit multiply per
/// 16 bytes, each word mixed with a secret drawn from the router's entropy (the construction of
/// foldhash and wyhash). Without the secrets a client cannot choose handles that collide; with
/// them it costs a few nanoseconds per handle where SipHash costs tens, on the MESSAGE path.
#[derive(Clone, Debug)]
pub struct KeyedBuild {
    secrets: [u64; 4],
}

impl KeyedBuild {
    pub fn new(keys: (u64, u64)) -> KeyedBuild {
        // Two more secrets derived from the two drawn, so that no word is mixed with the same one
        // as its neighbour.
        let spread = |key: u64, odd: u64| fold(key ^ odd, odd.rotate_left(29) | 1);
        KeyedBuild {
            secrets: [
                keys.0,
                keys.1,
                spread(keys.0, 0x9E37_79B9_7F4A_7C15),
                spread(keys.1, 0xD6E8_FEB8_6659_FD93),
            ],
        }
    }
}

impl BuildHasher for KeyedBuild {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher {
            secrets: self.secrets,
            state: self.secrets[0],
            written: 0,
        }
    }
}

/// The product of `a` and `b` with its high half folded onto its low half.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// See [`KeyedBuild`].
#[derive(Clone, Debug)]
pub struct KeyedHasher {
    secrets: [u64; 4],
    state: u64,
    written: u64,
}

impl Hasher for KeyedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let word = |chunk: &[u8]| {
            let mut padded = [0u8; 8];
            padded
                .iter_mut()
                .zip(chunk)
                .for_each(|(slot, &byte)| *slot = byte);
            u64::from_le_bytes(padded)
        };
        let [s0, s1, s2, s3] = self.secrets;
        for pair in bytes.chunks(16) {
            let (low, high) = pair.split_at(pair.len().min(8));
            self.state = fold(self.state ^ word(low) ^ s1, word(high) ^ s2);
            self.state = self.state.rotate_left(23) ^ s3;
        }
        self.written = self.written.wrapping_add(bytes.len() as u64);
        self.state ^= s0;
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write(&n.to_le_bytes());
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.state ^ self.written, self.secrets[1] ^ self.secrets[3])
    }
}

pub type HandleMap<V> = HashMap<Handle, V, KeyedBuild>;
pub type HandleSet = HashSet<Handle, KeyedBuild>;

/// The handles of one session, and the block they count against.
#[derive(Debug)]
struct SessionHandles {
    block: Block,
    handles: HandleSet,
}

/// The limits of a [`HandleTable`].
#[derive(Clone, Copy, Debug)]
pub struct HandleLimits {
    pub max_total: usize,
    pub max_per_session: usize,
    pub max_per_block: usize,
}

/// Why handles could not be added: the session, its block or the server holds too many.
#[derive(Debug, PartialEq, Eq)]
pub struct NoRoom;

#[derive(Debug)]
pub struct HandleTable {
    limits: HandleLimits,
    build: KeyedBuild,
    listeners: HandleMap<Id>,
    by_session: FastMap<Id, SessionHandles>,
    per_block: FastMap<Block, usize>,
}

impl HandleTable {
    pub fn new(limits: HandleLimits, build: KeyedBuild) -> HandleTable {
        HandleTable {
            limits,
            listeners: HashMap::with_hasher(build.clone()),
            build,
            by_session: FastMap::default(),
            per_block: FastMap::default(),
        }
    }

    /// The session listening on `handle`: the MESSAGE path's one lookup here.
    #[inline]
    pub fn listener(&self, handle: &Handle) -> Option<Id> {
        self.listeners.get(handle).copied()
    }

    /// Handles held by all sessions together.
    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    /// Handles `session` listens on.
    pub fn count_of(&self, session: Id) -> usize {
        self.by_session
            .get(&session)
            .map_or(0, |entry| entry.handles.len())
    }

    /// The handles `session` listens on, in no particular order.
    pub fn handles_of(&self, session: Id) -> impl Iterator<Item = &Handle> {
        self.by_session
            .get(&session)
            .into_iter()
            .flat_map(|entry| entry.handles.iter())
    }

    /// Whether `session` may take all of `new` (distinct handles it does not listen on yet),
    /// counting it against `block`: the session's, the block's and the server's limits.
    pub fn check_room(&self, session: Id, block: Block, new: &[Handle]) -> Result<(), NoRoom> {
        let (mut unheld, mut from_own_block) = (0, 0);
        for handle in new {
            match self.listeners.get(handle) {
                None => unheld += 1,
                Some(other) => {
                    let other_block = self.by_session.get(other).map(|entry| entry.block);
                    if other_block == Some(block) {
                        from_own_block += 1;
                    }
                }
            }
        }
        let session_after = self.count_of(session) + new.len();
        let block_after =
            self.per_block.get(&block).copied().unwrap_or(0) + new.len() - from_own_block;
        let total_after = self.listeners.len() + unheld;
        if session_after > self.limits.max_per_session
            || block_after > self.limits.max_per_block
            || total_after > self.limits.max_total
        {
            return Err(NoRoom);
        }
        Ok(())
    }

    /// `session` (created from `block`) listens on `handle` from now on. Returns the session
    /// that listened on it before, if another one did. The caller has checked the room
    /// ([`HandleTable::check_room`]).
    pub fn listen(&mut self, session: Id, block: Block, handle: Handle) -> Option<Id> {
        let previous = self.listeners.insert(handle, session);
        if previous == Some(session) {
            return None;
        }
        if let Some(previous) = previous {
            self.drop_from_session(previous, &handle);
        }
        let build = &self.build;
        let entry = self
            .by_session
            .entry(session)
            .or_insert_with(|| SessionHandles {
                block,
                handles: HashSet::with_hasher(build.clone()),
            });
        entry.handles.insert(handle);
        *self.per_block.entry(entry.block).or_insert(0) += 1;
        previous
    }

    /// `session` stops listening on `handle`; false when it did not listen on it.
    pub fn unlisten(&mut self, session: Id, handle: &Handle) -> bool {
        if self.listeners.get(handle) != Some(&session) {
            return false;
        }
        self.listeners.remove(handle);
        self.drop_from_session(session, handle);
        true
    }

    /// Forgets every handle of `session` (it ended, or a version-1 client took it over).
    pub fn remove_session(&mut self, session: Id) {
        let Some(entry) = self.by_session.remove(&session) else {
            return;
        };
        for handle in &entry.handles {
            self.listeners.remove(handle);
        }
        self.release_block(entry.block, entry.handles.len());
    }

    /// Takes `handle` out of `session`'s set (not out of `listeners`).
    fn drop_from_session(&mut self, session: Id, handle: &Handle) {
        let Some(entry) = self.by_session.get_mut(&session) else {
            return;
        };
        entry.handles.remove(handle);
        let block = entry.block;
        if entry.handles.is_empty() {
            self.by_session.remove(&session);
        }
        self.release_block(block, 1);
    }

    fn release_block(&mut self, block: Block, handles: usize) {
        if let Some(count) = self.per_block.get_mut(&block) {
            *count = count.saturating_sub(handles);
            if *count == 0 {
                self.per_block.remove(&block);
            }
        }
    }

    /// Checks the invariants of the module docs; `is_live(id)` says whether a session exists and
    /// may hold handles. O(handles): for tests only.
    pub fn check(&self, is_live: impl Fn(Id) -> bool) -> Result<(), String> {
        let mut per_block: FastMap<Block, usize> = FastMap::default();
        let mut held = 0;
        for (session, entry) in &self.by_session {
            if !is_live(*session) {
                return Err(format!("{session:?} holds handles but may not"));
            }
            if entry.handles.is_empty() || entry.handles.len() > self.limits.max_per_session {
                return Err(format!("{session:?} holds {} handles", entry.handles.len()));
            }
            for handle in &entry.handles {
                if self.listeners.get(handle) != Some(session) {
                    return Err(format!("a handle of {session:?} names another listener"));
                }
            }
            held += entry.handles.len();
            *per_block.entry(entry.block).or_insert(0) += entry.handles.len();
        }
        if held != self.listeners.len() {
            return Err(format!(
                "sessions hold {held} handles, {} have listeners",
                self.listeners.len()
            ));
        }
        if per_block != self.per_block {
            return Err(format!(
                "block counts {:?}, handles say {per_block:?}",
                self.per_block
            ));
        }
        if held > self.limits.max_total {
            return Err(format!("{held} handles over the limit"));
        }
        if let Some(count) = per_block.values().find(|&&n| n > self.limits.max_per_block) {
            return Err(format!("a block holds {count} handles"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::ClientAddr;

    fn table(max_total: usize, max_per_session: usize, max_per_block: usize) -> HandleTable {
        let limits = HandleLimits {
            max_total,
            max_per_session,
            max_per_block,
        };
        HandleTable::new(limits, KeyedBuild::new((1, 2)))
    }

    fn id(n: u32) -> Id {
        Id::from_bits(n).unwrap_or_else(|| Id::from_random_bytes([0; 4]))
    }

    fn block(text: &str) -> Block {
        ClientAddr::new(text.parse().expect("address")).largest_block()
    }

    fn handle(n: u8) -> Handle {
        Handle::from_seed(&[n; 43])
    }

    fn all_live(_: Id) -> bool {
        true
    }

    #[test]
    fn listen_moves_a_handle_and_keeps_the_mirrors() {
        let mut table = table(100, 10, 10);
        let (a, b, home) = (id(1), id(2), block("192.0.2.1"));
        assert_eq!(table.listen(a, home, handle(1)), None);
        assert_eq!(
            table.listen(a, home, handle(1)),
            None,
            "already ours: no change"
        );
        assert_eq!(table.listen(a, home, handle(2)), None);
        assert_eq!(table.listener(&handle(1)), Some(a));
        assert_eq!(table.listen(b, block("192.0.2.2"), handle(1)), Some(a));
        assert_eq!(table.listener(&handle(1)), Some(b));
        assert_eq!(
            (table.count_of(a), table.count_of(b), table.len()),
            (1, 1, 2)
        );
        assert_eq!(table.check(all_live), Ok(()));
        assert!(!table.unlisten(a, &handle(1)), "not a's any more");
        assert!(table.unlisten(b, &handle(1)));
        assert_eq!(table.listener(&handle(1)), None);
        table.remove_session(a);
        assert_eq!(table.len(), 0);
        assert_eq!(table.check(all_live), Ok(()));
        assert!(table.per_block.is_empty() && table.by_session.is_empty());
    }

    #[test]
    fn room_is_checked_per_session_block_and_server() {
        let mut table = table(4, 3, 2);
        let (a, b, c) = (id(1), id(2), id(3));
        let (one, two) = (block("192.0.2.1"), block("198.51.100.1"));
        assert_eq!(table.check_room(a, one, &[handle(1), handle(2)]), Ok(()));
        assert_eq!(
            table.check_room(a, one, &[handle(1), handle(2), handle(3)]),
            Err(NoRoom),
            "a block holds at most 2"
        );
        table.listen(a, one, handle(1));
        table.listen(a, one, handle(2));
        // Taking a handle from a session of the same block does not grow the block.
        assert_eq!(table.check_room(b, one, &[handle(1)]), Ok(()));
        assert_eq!(table.check_room(b, one, &[handle(3)]), Err(NoRoom));
        table.listen(c, two, handle(3));
        table.listen(c, two, handle(4));
        assert_eq!(
            table.check_room(c, two, &[handle(5)]),
            Err(NoRoom),
            "the server holds at most 4"
        );
        // Moving a handle does not grow the server's total, but does grow c's block.
        assert_eq!(table.check_room(c, two, &[handle(1)]), Err(NoRoom));
        table.unlisten(c, &handle(4));
        assert_eq!(table.check_room(c, two, &[handle(1)]), Ok(()));
        assert_eq!(table.check(all_live), Ok(()));
    }

    #[test]
    fn the_check_finds_a_dead_listener() {
        let mut table = table(10, 10, 10);
        table.listen(id(1), block("192.0.2.1"), handle(1));
        assert!(table.check(|_| false).is_err());
    }

    #[test]
    fn different_keys_hash_a_handle_differently() {
        let one = KeyedBuild::new((1, 2)).hash_one(handle(1));
        let other = KeyedBuild::new((3, 4)).hash_one(handle(1));
        assert_ne!(one, other);
    }

    #[test]
    fn handles_differing_in_one_character_spread_over_the_low_bits() {
        // hashbrown picks buckets with the low bits: 4,096 handles that differ in one position
        // only must not pile up in 4,096 buckets.
        let build = KeyedBuild::new((0x1234, 0x5678));
        for position in [0, 7, 8, 15, 16, 31, 42] {
            let mut buckets = vec![0u32; 4096];
            const ALPHABET: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            for n in 0..4096usize {
                let mut text = [b'A'; 43];
                text[position] = ALPHABET[n % 64];
                text[(position + 1) % 43] = ALPHABET[n / 64];
                let handle = std::str::from_utf8(&text).ok().and_then(Handle::parse);
                let Some(handle) = handle else {
                    panic!("a handle")
                };
                let slot = (build.hash_one(handle) & 4095) as usize;
                buckets[slot] += 1;
            }
            let fullest = buckets.iter().copied().max().unwrap_or(0);
            assert!(
                fullest <= 12,
                "position {position}: fullest bucket holds {fullest}"
            );
        }
    }
}
