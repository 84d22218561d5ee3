//! The cluster's mailbox: letters (MESSAGEs to handles) that wait in Redis for a handle nobody
//! listens on, or whose listener is away, with the same bounds as one node's mailbox
//! (`router/mailbox.rs`): letters and bytes per handle, bytes in all, and, when full, the oldest
//! letter of the sender block that holds the most bytes goes, so that a few addresses cannot
//! push out everyone else's mail.
//!
//! Everything happens in Lua scripts (STORE, LISTEN, COLLECT), each one atomic step in Redis,
//! so that nodes storing and listening at once never see half a change. Keys (`P` = `secchat:mb:`):
//!
//! | key | what |
//! |-----|------|
//! | `P l:<n>` | letter `n`'s frame, expiring `ttl` after it was kept |
//! | `P meta` | hash: `n` → "`<bytes> <block> <handle>`" for every letter kept |
//! | `P times` | sorted set: `n` by the time it was kept (Redis's clock, ms) |
//! | `P h:<handle>` | sorted set: the handle's letter numbers (oldest first) |
//! | `P b:<block>` | sorted set: the block's letter numbers (oldest first) |
//! | `P rank` | sorted set: block by the bytes its letters count |
//! | `P hbytes` | hash: handle → bytes |
//! | `P bytes` | the bytes every letter counts, in all |
//! | `P seq` | the last letter number given |
//!
//! Invariants, kept by every script: `meta` names exactly the letters kept; `times`, the
//! handles' and blocks' sets, `rank`, `hbytes` and `bytes` are exactly the entries and sums
//! over `meta`. A letter leaves all of them at once (`drop`), each in O(log n): no STORE ever
//! scans a list, so its cost is a constant number of calls plus the letters it pushes out,
//! each of which was stored once.
//!
//! Expiry: each letter's frame expires by itself (`PX`), so no frame outlives the TTL even if
//! nothing else happens. Its index entries go when a later STORE finds it expired (up to 64 per
//! STORE, oldest first, and before any live letter is pushed out for room), or when the index
//! keys expire. A handle's and a block's set get the letters' TTL at each letter added to
//! them. The other index keys get 9/8 of it only when less than the letters' TTL is left of
//! `meta`'s (an eighth has passed since it was set, or the keys were just made), not at every
//! STORE: they outlive every letter kept since by at most an eighth of the TTL. They are all
//! empty, hence all absent, exactly when `meta` is (each is a sum over it), so they are made
//! again together and `meta`'s TTL speaks for them; `rank` alone may also be emptied by the
//! repair of a block whose set expired first, so a `rank` without a TTL is extended too. Were an
//! index entry to outlive its letter, `drop` finds nothing and the entry is skipped.
//!
//! Letters an older version kept (frames in a list, `secchat:mail:<handle>`) are taken by a
//! LISTEN too (DEPLOY.md §4 says what a rolling upgrade across the two layouts does).
//!
//! Every node passes its own `--mailbox-bytes`, `--mailbox-ttl` and per-handle caps with each
//! STORE: the nodes of one cluster are meant to run with the same ones (DEPLOY.md §4).

use std::time::Duration;

use crate::address::Block;

/// What a kept letter counts beyond its frame: its entries in the two sets and the indexes
/// and its own key, somewhat more than Redis spends on them (BENCHMARKS.md) (the same unit as one node's mailbox, so
/// that `--mailbox-bytes` means about the same in both).
pub const LETTER_OVERHEAD: usize = 512;

/// How the cluster's mailbox keeps letters for handles nobody listens on.
#[derive(Clone, Copy, Debug)]
pub struct MailboxRules {
    /// Letters kept per handle (the oldest dropped beyond).
    pub letters_per_handle: usize,
    /// Bytes kept per handle (the oldest dropped beyond).
    pub bytes_per_handle: usize,
    /// Bytes kept in all, counting [`LETTER_OVERHEAD`] per letter.
    pub bytes: usize,
    /// How long a letter waits.
    pub ttl: Duration,
}

/// What a STORE answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Kept,
    /// Somebody listens on the handle (a STORE only if nobody does).
    Listened,
    /// The letter alone is larger than a cap.
    TooLarge,
}

impl Stored {
    pub fn from_reply(value: i64) -> Option<Stored> {
        match value {
            1 => Some(Stored::Kept),
            0 => Some(Stored::Listened),
            -1 => Some(Stored::TooLarge),
            _ => None,
        }
    }
}

/// The Lua the scripts share: `drop(n)` removes letter `n` and its index entries (0 if it was
/// gone already, else its bytes); `drop_oldest(set)` drops the oldest letter a handle's or
/// block's set names (false when it names none); `take(set, mail, budget)` appends the
/// letters a handle's set names to `mail`, oldest first, each followed by its sender's block
/// ("" if unknown), and drops them, stopping before the frames taken would pass `budget` bytes
/// (at least one is taken); it answers `mail` and the bytes taken. Numbers are written with `%d`: Lua's own
/// conversion writes large ones as `1e+14`.
macro_rules! mailbox_lua_functions {
    () => {
        "local P = 'secchat:mb:' \
local function int(x) return string.format('%d', x) end \
local function drop(n) \
  local m = redis.call('HGET', P .. 'meta', n) \
  redis.call('ZREM', P .. 'times', n) \
  if not m then \
    redis.call('DEL', P .. 'l:' .. n) \
    return 0 \
  end \
  local bytes, block, handle = string.match(m, '^(%d+) (%S+) (.+)$') \
  bytes = tonumber(bytes) \
  redis.call('HDEL', P .. 'meta', n) \
  redis.call('DEL', P .. 'l:' .. n) \
  if redis.call('DECRBY', P .. 'bytes', bytes) <= 0 then redis.call('DEL', P .. 'bytes') end \
  if tonumber(redis.call('ZINCRBY', P .. 'rank', -bytes, block)) <= 0 then \
    redis.call('ZREM', P .. 'rank', block) \
  end \
  redis.call('ZREM', P .. 'b:' .. block, n) \
  redis.call('ZREM', P .. 'h:' .. handle, n) \
  if redis.call('HINCRBY', P .. 'hbytes', handle, -bytes) <= 0 then \
    redis.call('HDEL', P .. 'hbytes', handle) \
  end \
  return bytes \
end \
local function drop_oldest(set) \
  while true do \
    local n = redis.call('ZRANGE', set, 0, 0)[1] \
    if not n then return false end \
    if drop(n) > 0 then return true end \
    redis.call('ZREM', set, n) \
  end \
end \
local function take(set, mail, budget) \
  local used = 0 \
  for _, n in ipairs(redis.call('ZRANGE', set, 0, -1)) do \
    local letter = redis.call('GET', P .. 'l:' .. n) \
    if letter and used > 0 and used + #letter > budget then return mail, used end \
    local m = redis.call('HGET', P .. 'meta', n) \
    if letter then \
      table.insert(mail, letter) \
      table.insert(mail, m and string.match(m, '^%d+ (%S+) ') or '') \
      used = used + #letter \
    end \
    drop(n) \
    redis.call('ZREM', set, n) \
  end \
  return mail, used \
end "
    };
}

/// Keeps a letter for a handle. `KEYS[1]`: the handle's directory entry; `KEYS[2]`: its set
/// of letters (`P h:<handle>`). `ARGV`: 1 the letter, 2 letters per handle, 3 TTL (ms), 4 "1"
/// to keep it only while nobody listens on the handle, 5 the sender's block, 6 bytes per
/// handle, 7 bytes in all, 8 [`LETTER_OVERHEAD`], 9 the handle. Answers 1 (kept), 0 (somebody
/// listens) or -1 (larger than a cap).
pub const STORE: &str = concat!(
    mailbox_lua_functions!(),
    "if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
local ttl, handle, block = tonumber(ARGV[3]), ARGV[9], ARGV[5] \
local per_handle, per_handle_bytes, cap = tonumber(ARGV[2]), tonumber(ARGV[6]), tonumber(ARGV[7]) \
local size = #ARGV[1] + tonumber(ARGV[8]) \
if size > per_handle_bytes or size > cap then return -1 end \
local t = redis.call('TIME') \
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
for _, n in ipairs(redis.call('ZRANGEBYSCORE', P .. 'times', '-inf', int(now - ttl), 'LIMIT', 0, 64)) do \
  drop(n) \
end \
local mine = P .. 'b:' .. block \
while redis.call('ZCARD', KEYS[2]) >= per_handle \
  or (tonumber(redis.call('HGET', P .. 'hbytes', handle)) or 0) + size > per_handle_bytes do \
  if not drop_oldest(KEYS[2]) then break end \
end \
while (tonumber(redis.call('GET', P .. 'bytes')) or 0) + size > cap do \
  local expired = redis.call('ZRANGEBYSCORE', P .. 'times', '-inf', int(now - ttl), 'LIMIT', 0, 1)[1] \
  if expired then \
    drop(expired) \
  else \
    local top = redis.call('ZREVRANGE', P .. 'rank', 0, 0, 'WITHSCORES') \
    if not top[1] then break end \
    local held = (tonumber(redis.call('ZSCORE', P .. 'rank', block)) or 0) \
    local victim = top[1] \
    if held > 0 and held + size >= tonumber(top[2]) then victim = block end \
    if not drop_oldest(P .. 'b:' .. victim) then redis.call('ZREM', P .. 'rank', victim) end \
  end \
end \
local n = int(redis.call('INCR', P .. 'seq')) \
redis.call('SET', P .. 'l:' .. n, ARGV[1], 'PX', int(ttl)) \
redis.call('HSET', P .. 'meta', n, int(size) .. ' ' .. block .. ' ' .. handle) \
redis.call('ZADD', P .. 'times', int(now), n) \
redis.call('ZADD', KEYS[2], n, n) \
redis.call('ZADD', mine, n, n) \
redis.call('ZINCRBY', P .. 'rank', int(size), block) \
redis.call('INCRBY', P .. 'bytes', int(size)) \
redis.call('HINCRBY', P .. 'hbytes', handle, int(size)) \
redis.call('PEXPIRE', KEYS[2], int(ttl)) \
redis.call('PEXPIRE', mine, int(ttl)) \
if redis.call('PTTL', P .. 'meta') < ttl or redis.call('PTTL', P .. 'rank') == -1 then \
  for _, k in ipairs({'meta', 'times', 'rank', 'bytes', 'hbytes'}) do \
    redis.call('PEXPIRE', P .. k, int(ttl + math.floor(ttl / 8))) \
  end \
end \
return 1"
);

/// LISTEN: `KEYS[1]` (a handle's directory entry) names session `ARGV[1]` for `ARGV[2]` ms;
/// answers the session it named before (or "") and the letters kept for the handle
/// (`KEYS[2]`, its set; `KEYS[3]`, the list an older version kept), oldest first, each
/// followed by its sender's block ("" if unknown); they leave the mailbox.
pub const LISTEN: &str = concat!(
    mailbox_lua_functions!(),
    "local prev = redis.call('GET', KEYS[1]) \
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
local mail = {} \
for _, letter in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do \
  table.insert(mail, letter) \
  table.insert(mail, '') \
end \
redis.call('DEL', KEYS[3]) \
return {prev or '', (take(KEYS[2], mail, math.huge))}"
);

/// Letters that wait for handles whose listener is connected here: for each handle entry
/// `KEYS[i]` that still names `ARGV[i]` (a session here) and whose set holds letters, answers
/// `i` and the letters as LISTEN does, which leave the mailbox. Run with every renewal, so
/// that a letter kept while its listener was already back (its LISTEN made while Redis was
/// unreachable, a STORE from a node that did not know it was back) waits at most one
/// renewal period. One answer stops taking letters once its frames reach 8 MiB (so it carries
/// at most 8 MiB plus one letter); the rest wait for the next renewal, so that an answer stays
/// far below what a node reads in one reply (`MAX_REPLY_BYTES`).
pub const COLLECT: &str = concat!(
    mailbox_lua_functions!(),
    "local found, budget = {}, 8388608 \
for i, k in ipairs(KEYS) do \
  if budget <= 0 then break end \
  local set = P .. 'h:' .. string.sub(k, 11) \
  if redis.call('EXISTS', set) == 1 and redis.call('GET', k) == ARGV[i] then \
    local mail, used = take(set, {}, budget) \
    budget = budget - used \
    table.insert(found, i) \
    table.insert(found, mail) \
  end \
end \
return found"
);

/// A block as the mailbox's keys name it: its three words, with no space (a meta entry is
/// split on spaces).
pub fn block_name(block: Block) -> String {
    let [high, low, len] = block.to_words();
    format!("{high:x}.{low:x}.{len}")
}

/// The key of the set of letters kept for the handle written `handle`.
pub fn letters_key(handle: &str) -> Vec<u8> {
    format!("secchat:mb:h:{handle}").into_bytes()
}

/// The key of the list of letters an older version kept for the handle written `handle`.
pub fn legacy_letters_key(handle: &str) -> Vec<u8> {
    format!("secchat:mail:{handle}").into_bytes()
}

/// The block [`block_name`] wrote; `None` for anything else.
pub fn parse_block_name(name: &[u8]) -> Option<Block> {
    let text = std::str::from_utf8(name).ok()?;
    let mut words = text.split('.');
    let high = u64::from_str_radix(words.next()?, 16).ok()?;
    let low = u64::from_str_radix(words.next()?, 16).ok()?;
    let len = words.next()?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    Block::from_words([high, low, len])
}
