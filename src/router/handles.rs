//! Who listens on which handle (PROTOCOL.md §10): handle → listening session, each session's
//! handles, and each address block's count, with blocks ranked by how many they hold.
//!
//! Handles are chosen by clients, so unlike the router's other keys they could be chosen to
//! collide: the maps keyed by handles (and by address blocks, which clients choose within what
//! they can route from) hash under secrets drawn from the router's entropy ([`KeyedBuild`]),
//! never with the unkeyed [`FastHasher`](super::fasthash::FastHasher).
//!
//! Fairness: no block has a fixed share. While there is room anyone may take it (many honest
//! users behind one address, as with carrier-grade NAT, are not held to a fraction of the table);
//! once all `max_total` handles are taken, a LISTEN from a block holding fewer than the fullest
//! takes room from the fullest ([`HandleTable::listen`]), so a few addresses that fill the table
//! cannot keep anyone else out.
//!
//! Invariants (checked by [`HandleTable::check`]): `listeners` and `by_session` are mirrors (a
//! handle sits at index `i` of a session's list exactly when `listeners` names that session and
//! `i`); a session has an entry in `by_session` only while it holds at least one handle, and its
//! `waiting` and `oldest` are the mailbox's count and oldest arrival for its handles (each
//! holder keeps what it was last told, which is what the mailbox holds); `per_block` holds, for
//! each block with at least one handle, the number of handles of the sessions created from it and those sessions
//! ranked by their counts, and `by_count` ranks exactly those blocks by those counts; and
//! `listeners.len()` is at most `max_total`, each session holds at most `max_per_session`.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};

use super::fasthash::FastMap;
use super::mailbox::Mail;
use crate::address::Block;
use crate::id::Id;
use crate::protocol::{HANDLE_LEN, Handle};

/// The hasher of the maps keyed by client-chosen handles: a folded 64×64→128-bit multiply per
/// 16 bytes, each word mixed with a secret drawn from the router's entropy (the construction of
/// foldhash and wyhash). Without the secrets a client cannot choose handles that collide; with
/// them it costs a few nanoseconds per handle where SipHash costs tens, on the MESSAGE path.
///
/// Every byte of a key is hashed: hashing a handle's first bytes only would be enough for
/// random handles, but clients choose them, and handles sharing their first bytes would all
/// collide whatever the secrets.
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
    /// Reads 16 bytes at a time; the last block, when short, is the last 16 bytes (overlapping
    /// the one before, as foldhash does), or zero-padded when there are fewer than 16 (the length
    /// goes into [`Hasher::finish`]).
    ///
    /// 33 to 48 bytes (a handle is 43) are three blocks folded independently, each with its own
    /// secrets, and combined once: the three multiplies run side by side, so the hash (which the
    /// map's probe waits for on the MESSAGE path) takes two multiplies' latency with `finish`,
    /// not four.
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let [s0, s1, s2, s3] = self.secrets;
        let word = |half: &[u8]| {
            let mut word = [0u8; 8];
            word.copy_from_slice(half);
            u64::from_le_bytes(word)
        };
        if let (33..=48, Some(first), Some(last)) = (
            bytes.len(),
            bytes.first_chunk::<32>(),
            bytes.last_chunk::<16>(),
        ) {
            let (a, b) = first.split_at(16);
            let lane = |block: &[u8], x: u64, y: u64| {
                let (low, high) = block.split_at(8);
                fold(word(low) ^ x, word(high) ^ y)
            };
            let one = lane(a, s1, s2);
            let two = lane(b, s3, s0);
            let three = lane(last, s1.rotate_left(32) ^ s3, s2.rotate_left(32) ^ s0);
            self.state = (self.state ^ one ^ two.rotate_left(21) ^ three.rotate_left(42)) ^ s0;
            self.written = self.written.wrapping_add(bytes.len() as u64);
            return;
        }
        let mix = |state: u64, block: &[u8; 16]| {
            let (low, high) = block.split_at(8);
            fold(state ^ word(low) ^ s1, word(high) ^ s2).rotate_left(23) ^ s3
        };
        let (blocks, rest) = bytes.as_chunks::<16>();
        let mut state = self.state;
        for block in blocks {
            state = mix(state, block);
        }
        if !rest.is_empty() {
            let last = bytes.last_chunk::<16>().copied().unwrap_or_else(|| {
                let mut padded = [0u8; 16];
                padded
                    .iter_mut()
                    .zip(rest)
                    .for_each(|(slot, &byte)| *slot = byte);
                padded
            });
            state = mix(state, &last);
        }
        self.written = self.written.wrapping_add(bytes.len() as u64);
        self.state = state ^ s0;
    }

    /// Only ever a length written before a key's bytes (a handle's, which is always 43): it
    /// goes into the count of bytes that [`Hasher::finish`] mixes in, with no multiply of its
    /// own.
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.written = self.written.rotate_left(32) ^ n as u64;
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.state ^ self.written, self.secrets[1] ^ self.secrets[3])
    }
}

pub type HandleMap<V> = HashMap<Handle, V, KeyedBuild>;
/// Address blocks are chosen by clients too (within what they can route from).
pub type BlockMap<V> = HashMap<Block, V, KeyedBuild>;

/// Who holds a handle: the listening session, where the handle sits in its list, and what the
/// mailbox holds for it as last told ([`HandleTable::mail`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holder {
    session: Id,
    index: u32,
    mail: Mail,
}

/// The handles of one session, and the block they count against.
#[derive(Debug)]
struct SessionHandles {
    block: Block,
    /// In no particular order: a handle leaves by a swap with the last, so that any one can go
    /// in O(1) and the last is always at hand to make room.
    handles: Vec<Handle>,
    /// Letters waiting in the mailbox for these handles, and each handle with mail by the
    /// arrival of its oldest letter: kept as letters come and go, so that LISTENING and FETCH
    /// never walk the list.
    waiting: usize,
    oldest: BTreeSet<(u64, Handle)>,
}

impl SessionHandles {
    fn new(block: Block) -> SessionHandles {
        SessionHandles {
            block,
            handles: Vec::new(),
            waiting: 0,
            oldest: BTreeSet::new(),
        }
    }

    /// `handle` of this session had `before` waiting and has `after`.
    fn refile(&mut self, handle: &Handle, before: Mail, after: Mail) {
        self.waiting = (self.waiting + after.letters()).saturating_sub(before.letters());
        if before.oldest() != after.oldest() {
            if let Some(arrival) = before.oldest() {
                self.oldest.remove(&(arrival, *handle));
            }
            if let Some(arrival) = after.oldest() {
                self.oldest.insert((arrival, *handle));
            }
        }
    }
}

/// The handles of one address block's sessions.
#[derive(Debug, Default)]
struct BlockHandles {
    count: usize,
    /// The block's sessions that hold handles, ranked by how many.
    sessions: BTreeSet<(usize, Id)>,
}

/// The limits of a [`HandleTable`].
#[derive(Clone, Copy, Debug)]
pub struct HandleLimits {
    pub max_total: usize,
    pub max_per_session: usize,
}

/// Why handles could not be added: the session holds too many, or the table is full and no
/// block holds more than the caller's would.
#[derive(Debug, PartialEq, Eq)]
pub struct NoRoom;

/// What a LISTEN did to other sessions: the handles it took from their listeners (HANDLE_TAKEN),
/// and the handles sessions of the fullest blocks gave up to make room (HANDLE_DROPPED).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub taken: Vec<(Id, Handle)>,
    pub dropped: Vec<(Id, Handle)>,
}

#[derive(Debug)]
pub struct HandleTable {
    limits: HandleLimits,
    listeners: HandleMap<Holder>,
    by_session: FastMap<Id, SessionHandles>,
    per_block: BlockMap<BlockHandles>,
    /// Every block in `per_block`, ranked by its count: the fullest is the last.
    by_count: BTreeSet<(usize, Block)>,
}

impl HandleTable {
    pub fn new(limits: HandleLimits, build: KeyedBuild) -> HandleTable {
        HandleTable {
            limits,
            listeners: HashMap::with_hasher(build.clone()),
            by_session: FastMap::default(),
            per_block: HashMap::with_hasher(build),
            by_count: BTreeSet::new(),
        }
    }

    /// The session listening on `handle`.
    #[inline]
    pub fn listener(&self, handle: &Handle) -> Option<Id> {
        self.listeners.get(handle).map(|holder| holder.session)
    }

    /// The handle spelled `text` and the session listening on it, if anyone does: the MESSAGE
    /// path's one lookup here, made with the frame's bytes before they are checked (a handle
    /// found is one).
    #[inline]
    pub fn listener_of_text(&self, text: &[u8; HANDLE_LEN]) -> Option<(&Handle, Id)> {
        self.listeners
            .get_key_value(text)
            .map(|(handle, holder)| (handle, holder.session))
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

    /// Letters waiting for the handles `session` listens on.
    pub fn waiting_of(&self, session: Id) -> usize {
        self.by_session
            .get(&session)
            .map_or(0, |entry| entry.waiting)
    }

    /// The handle of `session` whose oldest letter is the oldest of all its handles' letters.
    pub fn oldest_mail_of(&self, session: Id) -> Option<Handle> {
        let entry = self.by_session.get(&session)?;
        entry.oldest.first().map(|&(_, handle)| handle)
    }

    /// The mailbox now holds `mail` for `handle`: its listener's count of waiting letters and
    /// its ranking of handles by their oldest letter follow. Called after every change to the
    /// mailbox, for each handle it concerned.
    pub fn mail(&mut self, handle: &Handle, mail: Mail) {
        let Some(holder) = self.listeners.get_mut(handle) else {
            return;
        };
        let before = std::mem::replace(&mut holder.mail, mail);
        if let Some(entry) = self.by_session.get_mut(&holder.session) {
            entry.refile(handle, before, mail);
        }
    }

    /// `session` (created from `block`) listens on `new` from now on: distinct handles it does
    /// not listen on yet. All of them or none (`NoRoom`): at most `max_per_session` for the
    /// session, and at most `max_total` in all. `mail_of(handle)` is what the mailbox holds for
    /// a handle nobody listened on.
    ///
    /// When the table is full, the fullest blocks make room: a handle of the session holding
    /// the most in the block holding the most goes, one at a time, as long as that block still
    /// holds at least as many as the caller's block will. So blocks end up with equal shares
    /// under pressure (max-min fairness): a few addresses cannot keep anyone else out, and a
    /// block can never take from one that holds fewer than itself, so two blocks never take
    /// handles back and forth.
    pub fn listen(
        &mut self,
        session: Id,
        block: Block,
        new: &[Handle],
        mail_of: impl Fn(&Handle) -> Mail,
    ) -> Result<Changes, NoRoom> {
        // A session counts against the block it was created from, whatever the caller says.
        let block = self.block_of(session).unwrap_or(block);
        let mut unheld = 0;
        let mut moved_within_block = 0;
        for handle in new {
            match self.listeners.get(handle) {
                None => unheld += 1,
                Some(holder) if self.block_of(holder.session) == Some(block) => {
                    moved_within_block += 1;
                }
                Some(_) => {}
            }
        }
        let before = self.count_of(session);
        if before + new.len() > self.limits.max_per_session {
            return Err(NoRoom);
        }
        let excess = (self.listeners.len() + unheld).saturating_sub(self.limits.max_total);
        let target = self.block_count(block) + new.len() - moved_within_block;
        if excess > 0 && !self.can_make_room(block, new, excess, target) {
            return Err(NoRoom);
        }
        let mut changes = Changes::default();
        let mut joined = SessionHandles::new(block);
        for handle in new {
            let index = u32::try_from(before + joined.handles.len()).unwrap_or(u32::MAX);
            let fresh = Holder {
                session,
                index,
                mail: Mail::default(),
            };
            let mail = match self.listeners.insert(*handle, fresh) {
                // Not new after all: it stays where it is.
                Some(previous) if previous.session == session => {
                    self.listeners.insert(*handle, previous);
                    continue;
                }
                Some(previous) => {
                    self.detach(previous, handle);
                    changes.taken.push((previous.session, *handle));
                    previous.mail
                }
                None => mail_of(handle),
            };
            if let Some(holder) = self.listeners.get_mut(handle) {
                holder.mail = mail;
            }
            joined.refile(handle, Mail::default(), mail);
            joined.handles.push(*handle);
        }
        if joined.handles.is_empty() {
            return Ok(changes);
        }
        let entry = self
            .by_session
            .entry(session)
            .or_insert_with(|| SessionHandles::new(block));
        entry.handles.append(&mut joined.handles);
        entry.waiting += joined.waiting;
        entry.oldest.append(&mut joined.oldest);
        let after = entry.handles.len();
        self.recount(session, block, before, after);
        for _ in 0..excess {
            match self.drop_one(block, target) {
                Some(dropped) => changes.dropped.push(dropped),
                None => break,
            }
        }
        Ok(changes)
    }

    /// Whether blocks other than `block` hold `excess` handles above `target` once the handles
    /// in `new` they hold have moved to the caller. Visits the blocks from the fullest down and
    /// stops at the first that holds no more than `target`, or once enough is found: at most
    /// `excess` + (blocks `new` moves handles from) + 1 blocks.
    fn can_make_room(&self, block: Block, new: &[Handle], excess: usize, target: usize) -> bool {
        let mut moving: Vec<Block> = new
            .iter()
            .filter_map(|handle| self.block_of(self.listeners.get(handle)?.session))
            .collect();
        moving.sort_unstable();
        let moving_from = |from: Block| {
            let first = moving.partition_point(|&b| b < from);
            moving
                .get(first..)
                .map_or(0, |rest| rest.iter().take_while(|&&b| b == from).count())
        };
        let mut room = 0;
        for &(count, other) in self.by_count.iter().rev() {
            if count <= target {
                break;
            }
            if other == block {
                continue;
            }
            room += count
                .saturating_sub(moving_from(other))
                .saturating_sub(target);
            if room >= excess {
                return true;
            }
        }
        false
    }

    /// Drops one handle of the session holding the most in the fullest block other than
    /// `block`, if that block holds more than `target`; its former listener and the handle.
    fn drop_one(&mut self, block: Block, target: usize) -> Option<(Id, Handle)> {
        let &(count, victim_block) = self
            .by_count
            .iter()
            .rev()
            .find(|&&(_, other)| other != block)?;
        if count <= target {
            return None;
        }
        let &(_, victim) = self.per_block.get(&victim_block)?.sessions.last()?;
        let handle = *self.by_session.get(&victim)?.handles.last()?;
        let holder = self.listeners.remove(&handle)?;
        self.detach(holder, &handle);
        Some((victim, handle))
    }

    /// `session` stops listening on those of `gone` it listens on; how many that was.
    pub fn unlisten(&mut self, session: Id, gone: &[Handle]) -> usize {
        let mut removed = 0;
        for handle in gone {
            match self.listeners.get(handle) {
                Some(&holder) if holder.session == session => {
                    self.listeners.remove(handle);
                    self.detach(holder, handle);
                    removed += 1;
                }
                _ => {}
            }
        }
        removed
    }

    /// The handles `session` listens on.
    pub fn handles_of(&self, session: Id) -> Vec<Handle> {
        self.by_session
            .get(&session)
            .map(|entry| entry.handles.clone())
            .unwrap_or_default()
    }

    /// Forgets every handle of `session` (it ended, or a version-1 client took it over), and
    /// returns them.
    pub fn remove_session(&mut self, session: Id) -> Vec<Handle> {
        let Some(entry) = self.by_session.remove(&session) else {
            return Vec::new();
        };
        for handle in &entry.handles {
            self.listeners.remove(handle);
        }
        self.recount(session, entry.block, entry.handles.len(), 0);
        entry.handles
    }

    /// Takes `handle` out of the list (and the counts) of the session `holder` names, not out
    /// of `listeners`.
    fn detach(&mut self, holder: Holder, handle: &Handle) {
        let Some(entry) = self.by_session.get_mut(&holder.session) else {
            return;
        };
        let index = holder.index as usize;
        if entry.handles.get(index) != Some(handle) {
            return;
        }
        entry.handles.swap_remove(index);
        if let Some(moved) = entry.handles.get(index)
            && let Some(moved_holder) = self.listeners.get_mut(moved)
        {
            moved_holder.index = holder.index;
        }
        entry.refile(handle, holder.mail, Mail::default());
        let (after, block) = (entry.handles.len(), entry.block);
        if after == 0 {
            self.by_session.remove(&holder.session);
        }
        self.recount(holder.session, block, after + 1, after);
    }

    fn block_of(&self, session: Id) -> Option<Block> {
        self.by_session.get(&session).map(|entry| entry.block)
    }

    fn block_count(&self, block: Block) -> usize {
        self.per_block.get(&block).map_or(0, |entry| entry.count)
    }

    /// `session` of `block` went from holding `before` handles to `after`: its rank in its
    /// block, the block's count and the block's rank follow.
    fn recount(&mut self, session: Id, block: Block, before: usize, after: usize) {
        if before == after {
            return;
        }
        let entry = self.per_block.entry(block).or_default();
        if before > 0 {
            entry.sessions.remove(&(before, session));
        }
        if after > 0 {
            entry.sessions.insert((after, session));
        }
        let old = entry.count;
        entry.count = (old + after).saturating_sub(before);
        let new = entry.count;
        if old > 0 {
            self.by_count.remove(&(old, block));
        }
        if new > 0 {
            self.by_count.insert((new, block));
        } else {
            self.per_block.remove(&block);
        }
    }

    /// Checks the invariants of the module docs; `is_live(id)` says whether a session exists and
    /// may hold handles, `mail_of(handle)` what the mailbox holds. O(handles): for tests only.
    pub fn check(
        &self,
        is_live: impl Fn(Id) -> bool,
        mail_of: impl Fn(&Handle) -> Mail,
    ) -> Result<(), String> {
        let mut per_block: HashMap<Block, (usize, BTreeSet<(usize, Id)>)> = HashMap::new();
        let mut held = 0;
        for (session, entry) in &self.by_session {
            if !is_live(*session) {
                return Err(format!("{session:?} holds handles but may not"));
            }
            if entry.handles.is_empty() || entry.handles.len() > self.limits.max_per_session {
                return Err(format!("{session:?} holds {} handles", entry.handles.len()));
            }
            let mut expected = SessionHandles::new(entry.block);
            for (index, handle) in entry.handles.iter().enumerate() {
                let mail = mail_of(handle);
                let holder = Holder {
                    session: *session,
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    mail,
                };
                if self.listeners.get(handle) != Some(&holder) {
                    return Err(format!(
                        "a handle of {session:?} names another holder or other mail"
                    ));
                }
                expected.refile(handle, Mail::default(), mail);
            }
            if (expected.waiting, &expected.oldest) != (entry.waiting, &entry.oldest) {
                return Err(format!(
                    "{session:?} counts {} waiting letters, the mailbox {}, or ranks them otherwise",
                    entry.waiting, expected.waiting
                ));
            }
            held += entry.handles.len();
            let block = per_block.entry(entry.block).or_default();
            block.0 += entry.handles.len();
            block.1.insert((entry.handles.len(), *session));
        }
        if held != self.listeners.len() {
            return Err(format!(
                "sessions hold {held} handles, {} have listeners",
                self.listeners.len()
            ));
        }
        if per_block.len() != self.per_block.len() || per_block.len() != self.by_count.len() {
            return Err("a block without handles is counted".to_owned());
        }
        for (block, (count, sessions)) in &per_block {
            let entry = self.per_block.get(block);
            if entry.map(|e| (e.count, &e.sessions)) != Some((*count, sessions)) {
                return Err(format!(
                    "{block:?}'s count or ranking differs from its handles"
                ));
            }
            if !self.by_count.contains(&(*count, *block)) {
                return Err(format!("{block:?} is ranked by another count"));
            }
        }
        if held > self.limits.max_total {
            return Err(format!("{held} handles over the limit"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::ClientAddr;

    fn table(max_total: usize, max_per_session: usize) -> HandleTable {
        let limits = HandleLimits {
            max_total,
            max_per_session,
        };
        HandleTable::new(limits, KeyedBuild::new((1, 2)))
    }

    fn id(n: u32) -> Id {
        Id::from_bits(n).unwrap_or_else(|| Id::from_random_bytes([0; 4]))
    }

    fn block(text: &str) -> Block {
        ClientAddr::new(text.parse().expect("address")).largest_block()
    }

    fn handle(n: u16) -> Handle {
        let [high, low] = n.to_be_bytes();
        Handle::from_seed(&[high, low, 1])
    }

    fn handles(range: std::ops::Range<u16>) -> Vec<Handle> {
        range.map(handle).collect()
    }

    fn all_live(_: Id) -> bool {
        true
    }

    fn no_mail(_: &Handle) -> Mail {
        Mail::default()
    }

    fn ok(table: &HandleTable) {
        assert_eq!(table.check(all_live, no_mail), Ok(()));
    }

    #[test]
    fn listen_moves_a_handle_and_keeps_the_mirrors() {
        let mut table = table(100, 10);
        let (a, b, home) = (id(1), id(2), block("192.0.2.1"));
        let listen = |table: &mut HandleTable, session, block, new: &[Handle]| {
            table.listen(session, block, new, no_mail).map(|c| c.taken)
        };
        assert_eq!(listen(&mut table, a, home, &[handle(1)]), Ok(vec![]));
        assert_eq!(
            listen(&mut table, a, home, &[handle(1)]),
            Ok(vec![]),
            "already ours: no change"
        );
        assert_eq!(
            listen(&mut table, a, home, &[handle(2), handle(3)]),
            Ok(vec![])
        );
        assert_eq!(table.listener(&handle(1)), Some(a));
        assert_eq!(
            listen(&mut table, b, block("192.0.2.2"), &[handle(1)]),
            Ok(vec![(a, handle(1))])
        );
        assert_eq!(table.listener(&handle(1)), Some(b));
        assert_eq!(
            (table.count_of(a), table.count_of(b), table.len()),
            (2, 1, 3)
        );
        ok(&table);
        assert_eq!(table.unlisten(a, &[handle(1)]), 0, "not a's any more");
        assert_eq!(table.unlisten(b, &[handle(1), handle(9)]), 1);
        assert_eq!(table.listener(&handle(1)), None);
        ok(&table);
        table.remove_session(a);
        assert_eq!(table.len(), 0);
        ok(&table);
        assert!(table.per_block.is_empty() && table.by_session.is_empty());
        assert!(table.by_count.is_empty());
    }

    #[test]
    fn room_is_checked_per_session_and_server() {
        let mut table = table(4, 3);
        let (a, b) = (id(1), id(2));
        let home = block("192.0.2.1");
        assert_eq!(
            table.listen(a, home, &handles(1..5), no_mail),
            Err(NoRoom),
            "a session holds at most 3"
        );
        assert_eq!(table.len(), 0, "nothing changed");
        assert!(table.listen(a, home, &handles(1..4), no_mail).is_ok());
        assert!(table.listen(b, home, &handles(4..5), no_mail).is_ok());
        // Full, and the only block is the caller's own: nobody makes room.
        assert_eq!(table.listen(b, home, &handles(5..6), no_mail), Err(NoRoom));
        // Taking a handle moves it: the total does not grow.
        assert!(table.listen(b, home, &handles(1..2), no_mail).is_ok());
        ok(&table);
    }

    #[test]
    fn the_fullest_blocks_make_room_down_to_the_callers_share() {
        let mut table = table(12, 10);
        let (big, other, small) = (
            block("192.0.2.1"),
            block("198.51.100.1"),
            block("203.0.113.1"),
        );
        // Two sessions of one block hold 6 and 2, another block 4: the table is full.
        assert!(table.listen(id(1), big, &handles(0..6), no_mail).is_ok());
        assert!(table.listen(id(2), big, &handles(6..8), no_mail).is_ok());
        assert!(table.listen(id(3), other, &handles(8..12), no_mail).is_ok());
        // A newcomer takes 3: the fullest block gives, from its fullest session, while it holds
        // more than the newcomer will.
        let changes = table.listen(id(4), small, &handles(20..23), no_mail);
        let dropped = changes.map(|c| c.dropped.iter().map(|(id, _)| *id).collect::<Vec<_>>());
        assert_eq!(dropped, Ok(vec![id(1), id(1), id(1)]));
        assert_eq!(
            (
                table.count_of(id(1)),
                table.count_of(id(2)),
                table.count_of(id(3))
            ),
            (3, 2, 4)
        );
        ok(&table);
        // 5 + 4 + 3 held: taking 2 more, to 5, leaves nobody above 5 to give.
        assert_eq!(
            table.listen(id(4), small, &handles(23..25), no_mail),
            Err(NoRoom)
        );
        // One more, to 4: the block holding 5 gives one and still holds 4.
        let changes = table.listen(id(4), small, &handles(23..24), no_mail);
        assert_eq!(changes.map(|c| c.dropped.len()), Ok(1));
        assert_eq!(table.block_count(big), 4);
        // The fullest block cannot take back from the smaller ones: it would hold more.
        assert_eq!(
            table.listen(id(1), big, &handles(30..31), no_mail),
            Err(NoRoom)
        );
        assert_eq!(table.len(), 12);
        ok(&table);
    }

    #[test]
    fn handles_moved_out_of_a_full_block_count_before_it_gives() {
        let mut table = table(4, 10);
        let (one, two) = (block("192.0.2.1"), block("198.51.100.1"));
        assert!(table.listen(id(1), one, &handles(0..4), no_mail).is_ok());
        // Moving 2 of block one's handles and adding 1: block one holds 2, more than... the
        // caller's 3 after? No: block one would give from 2 down below 3. Refused.
        assert_eq!(
            table.listen(id(2), two, &[handle(0), handle(1), handle(9)], no_mail),
            Err(NoRoom)
        );
        // Moving 1 and adding 1: block one holds 3 after the move, gives 1 and holds 2 = the
        // caller's 2.
        let changes = table.listen(id(2), two, &[handle(0), handle(9)], no_mail);
        assert_eq!(
            changes.as_ref().map(|c| (c.taken.len(), c.dropped.len())),
            Ok((1, 1))
        );
        assert_eq!((table.block_count(one), table.block_count(two)), (2, 2));
        ok(&table);
    }

    #[test]
    fn waiting_letters_and_their_ranking_follow_their_handles() {
        let mut table = table(10, 10);
        // Handle 1 has three letters, the oldest arrived as number 7.
        let mail = |h: &Handle| {
            if *h == handle(1) {
                Mail::new(3, Some(7))
            } else {
                Mail::default()
            }
        };
        let home = block("192.0.2.1");
        assert!(table.listen(id(1), home, &handles(0..3), mail).is_ok());
        assert_eq!(table.waiting_of(id(1)), 3);
        assert_eq!(table.oldest_mail_of(id(1)), Some(handle(1)));
        // A letter for handle 2, older than handle 1's (arrival numbers are what rank).
        table.mail(&handle(2), Mail::new(1, Some(5)));
        assert_eq!(table.waiting_of(id(1)), 4);
        assert_eq!(table.oldest_mail_of(id(1)), Some(handle(2)));
        let with_more = |h: &Handle| {
            if *h == handle(2) {
                Mail::new(1, Some(5))
            } else {
                mail(h)
            }
        };
        assert_eq!(table.check(all_live, with_more), Ok(()));
        // Handle 1 moves to another session with its letters.
        assert!(table.listen(id(2), home, &handles(1..2), with_more).is_ok());
        assert_eq!((table.waiting_of(id(1)), table.waiting_of(id(2))), (1, 3));
        assert_eq!(table.oldest_mail_of(id(2)), Some(handle(1)));
        assert_eq!(table.check(all_live, with_more), Ok(()));
        table.unlisten(id(1), &handles(2..3));
        assert_eq!(table.waiting_of(id(1)), 0);
        assert_eq!(table.oldest_mail_of(id(1)), None);
        // Handle 2 has no listener now: what the mailbox holds for it is not counted anywhere.
        table.mail(&handle(2), Mail::new(2, Some(5)));
        assert_eq!(table.check(all_live, with_more), Ok(()));
    }

    #[test]
    fn the_check_finds_a_dead_listener() {
        let mut table = table(10, 10);
        assert!(
            table
                .listen(id(1), block("192.0.2.1"), &[handle(1)], no_mail)
                .is_ok()
        );
        assert!(table.check(|_| false, no_mail).is_err());
        assert!(
            table.check(all_live, |_| Mail::new(1, Some(0))).is_err(),
            "a waiting count that is off"
        );
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
