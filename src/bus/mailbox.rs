//! The cluster's mailbox: letters (MESSAGEs to handles) that wait in Redis for a handle nobody
//! listens on, with the same bounds as one node's mailbox (`router/mailbox.rs`): letters and
//! bytes per handle, bytes in all, and, when full, the oldest letter of the sender block that
//! holds the most bytes goes, so that a few addresses cannot push out everyone else's mail.
//!
//! Everything happens in two Lua scripts, each one atomic step in Redis, so that nodes storing
//! and listening at once never see half a change. Keys (`P` = `secchat:mb:`):
//!
//! | key | what |
//! |-----|------|
//! | `P l:<n>` | letter `n`'s frame, expiring `ttl` after it was kept |
//! | `P meta` | hash: `n` → "`<bytes> <block> <handle>`" for every letter kept |
//! | `P times` | sorted set: `n` by the time it was kept (Redis's clock, ms) |
//! | `secchat:mail:<handle>` | list: the handle's letter numbers, oldest first |
//! | `P b:<block>` | list: the block's letter numbers, oldest first |
//! | `P rank` | sorted set: block by the bytes its letters count |
//! | `P hcount`, `P hbytes` | hashes: handle → letters, bytes |
//! | `P bcount` | hash: block → letters |
//! | `P bytes` | the bytes every letter counts, in all |
//! | `P seq` | the last letter number given |
//!
//! Invariants, kept by every script: `meta` names exactly the letters kept; `times`, the
//! counts, `rank` and `bytes` are the sums over `meta`; a letter's number is in its handle's
//! and its block's list. The lists may also hold numbers of letters gone (taken out of the
//! middle by another list's rule): they are skipped when met, and a push that leaves a list
//! longer than twice its letters plus 16 rebuilds it, so a handle's list is never longer than
//! 2 × its letter cap + 16 and a block's than twice the letters the mailbox has room for plus
//! 16, and rebuilding costs O(1) per push, amortised.
//!
//! Expiry: each letter's frame expires by itself (`PX`), so no frame outlives the TTL even if
//! nothing else happens. Its entries in the indexes go when a later STORE finds it expired (up
//! to 64 per STORE, oldest first), or when every index key expires. The index keys' TTL is
//! set to 9/8 of the letters' only when less than the letters' TTL is left of it (an eighth
//! has passed since it was set, or the keys were just made), not at every STORE: so they
//! outlive every letter kept since by at most an eighth of the TTL, and a STORE makes about 20
//! calls rather than 27. The index keys are all empty, hence all absent, exactly when `meta`
//! is (each is a sum over it), so they are made again together and `meta`'s TTL speaks for
//! all of them.
//! The cost of a STORE is therefore bounded by a constant amount of work plus the letters it
//! pushes out, each of which was stored once.
//!
//! Every node passes its own `--mailbox-bytes`, `--mailbox-ttl` and per-handle caps with each
//! STORE: the nodes of one cluster are meant to run with the same ones (DEPLOY.md §4).

use std::time::Duration;

use crate::address::Block;

/// What a kept letter counts beyond its frame: its number in two lists and four indexes and
/// its own key, roughly what Redis spends on them (the same unit as one node's mailbox, so
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

/// The Lua both scripts share: `drop(n)` removes letter `n` and its counts (0 if it was gone
/// already, else its bytes); `drop_oldest(list)` drops the oldest letter still named by a list,
/// popping the numbers of letters gone before it (false when the list names none).
macro_rules! mailbox_lua_functions {
    () => {
        "local P = 'secchat:mb:' \
local function drop(n) \
  local m = redis.call('HGET', P .. 'meta', n) \
  if not m then return 0 end \
  local bytes, block, handle = string.match(m, '^(%d+) (%S+) (.+)$') \
  bytes = tonumber(bytes) \
  redis.call('HDEL', P .. 'meta', n) \
  redis.call('ZREM', P .. 'times', n) \
  redis.call('DEL', P .. 'l:' .. n) \
  if redis.call('DECRBY', P .. 'bytes', bytes) <= 0 then redis.call('DEL', P .. 'bytes') end \
  if tonumber(redis.call('ZINCRBY', P .. 'rank', -bytes, block)) <= 0 then \
    redis.call('ZREM', P .. 'rank', block) \
  end \
  if redis.call('HINCRBY', P .. 'bcount', block, -1) <= 0 then \
    redis.call('HDEL', P .. 'bcount', block) \
    redis.call('DEL', P .. 'b:' .. block) \
  end \
  redis.call('HINCRBY', P .. 'hbytes', handle, -bytes) \
  if redis.call('HINCRBY', P .. 'hcount', handle, -1) <= 0 then \
    redis.call('HDEL', P .. 'hcount', handle) \
    redis.call('HDEL', P .. 'hbytes', handle) \
    redis.call('DEL', 'secchat:mail:' .. handle) \
  end \
  return bytes \
end \
local function drop_oldest(list) \
  while true do \
    local n = redis.call('LPOP', list) \
    if not n then return false end \
    if drop(n) > 0 then return true end \
  end \
end "
    };
}

/// Keeps a letter for a handle. `KEYS[1]`: the handle's directory entry; `KEYS[2]`: its letter
/// list. `ARGV`: 1 the letter, 2 letters per handle, 3 TTL (ms), 4 "1" to keep it only while
/// nobody listens on the handle, 5 the sender's block, 6 bytes per handle, 7 bytes in all,
/// 8 [`LETTER_OVERHEAD`], 9 the handle. Answers 1 (kept), 0 (somebody listens) or -1 (larger
/// than a cap).
pub const STORE: &str = concat!(
    mailbox_lua_functions!(),
    "if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
local ttl, handle, block = tonumber(ARGV[3]), ARGV[9], ARGV[5] \
local per_handle, per_handle_bytes, cap = tonumber(ARGV[2]), tonumber(ARGV[6]), tonumber(ARGV[7]) \
local size = #ARGV[1] + tonumber(ARGV[8]) \
if size > per_handle_bytes or size > cap then return -1 end \
local t = redis.call('TIME') \
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
for _, n in ipairs(redis.call('ZRANGEBYSCORE', P .. 'times', '-inf', now - ttl, 'LIMIT', 0, 64)) do \
  drop(n) \
end \
while (tonumber(redis.call('HGET', P .. 'hcount', handle)) or 0) >= per_handle \
  or (tonumber(redis.call('HGET', P .. 'hbytes', handle)) or 0) + size > per_handle_bytes do \
  if not drop_oldest(KEYS[2]) then break end \
end \
while (tonumber(redis.call('GET', P .. 'bytes')) or 0) + size > cap do \
  local top = redis.call('ZREVRANGE', P .. 'rank', 0, 0, 'WITHSCORES') \
  if not top[1] then break end \
  local mine = (tonumber(redis.call('ZSCORE', P .. 'rank', block)) or 0) \
  local victim = top[1] \
  if mine > 0 and mine + size >= tonumber(top[2]) then victim = block end \
  if not drop_oldest(P .. 'b:' .. victim) then \
    redis.call('ZREM', P .. 'rank', victim) \
  end \
end \
local n = tostring(redis.call('INCR', P .. 'seq')) \
redis.call('SET', P .. 'l:' .. n, ARGV[1], 'PX', ttl) \
redis.call('HSET', P .. 'meta', n, size .. ' ' .. block .. ' ' .. handle) \
redis.call('ZADD', P .. 'times', now, n) \
redis.call('ZINCRBY', P .. 'rank', size, block) \
redis.call('INCRBY', P .. 'bytes', size) \
redis.call('HINCRBY', P .. 'hbytes', handle, size) \
local lists = { \
  {KEYS[2], redis.call('HINCRBY', P .. 'hcount', handle, 1)}, \
  {P .. 'b:' .. block, redis.call('HINCRBY', P .. 'bcount', block, 1)}} \
for _, entry in ipairs(lists) do \
  local list, live = entry[1], entry[2] \
  if redis.call('RPUSH', list, n) > 2 * live + 16 then \
    local kept = {} \
    for _, m in ipairs(redis.call('LRANGE', list, 0, -1)) do \
      if redis.call('HEXISTS', P .. 'meta', m) == 1 then table.insert(kept, m) end \
    end \
    redis.call('DEL', list) \
    for i = 1, #kept, 1000 do \
      redis.call('RPUSH', list, unpack(kept, i, math.min(i + 999, #kept))) \
    end \
  end \
  redis.call('PEXPIRE', list, ttl) \
end \
if redis.call('PTTL', P .. 'meta') < ttl then \
  for _, k in ipairs({'meta', 'times', 'rank', 'bytes', 'hcount', 'hbytes', 'bcount'}) do \
    redis.call('PEXPIRE', P .. k, ttl + math.floor(ttl / 8)) \
  end \
end \
return 1"
);

/// LISTEN: `KEYS[1]` (a handle's directory entry) names session `ARGV[1]` for `ARGV[2]` ms;
/// answers the session it named before (or "") and the letters kept for the handle
/// (`KEYS[2]`, its letter list), oldest first, which leave the mailbox.
pub const LISTEN: &str = concat!(
    mailbox_lua_functions!(),
    "local prev = redis.call('GET', KEYS[1]) \
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
local mail = {} \
for _, n in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do \
  local letter = redis.call('GET', P .. 'l:' .. n) \
  if letter then table.insert(mail, letter) end \
  drop(n) \
  redis.call('DEL', P .. 'l:' .. n) \
end \
redis.call('DEL', KEYS[2]) \
return {prev or '', mail}"
);

/// A block as the mailbox's keys name it: its three words, with no space (a meta entry is
/// split on spaces).
pub fn block_name(block: Block) -> String {
    let [high, low, len] = block.to_words();
    format!("{high:x}.{low:x}.{len}")
}

/// The key of the letter list of the handle written `handle`.
pub fn letters_key(handle: &str) -> Vec<u8> {
    format!("secchat:mail:{handle}").into_bytes()
}
