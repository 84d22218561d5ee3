//! This node's side of the cluster: the directory of session IDs, and the records the router
//! sends to sessions on other nodes, batched one PUBLISH per node per loop turn.
//!
//! # What lives in Redis
//! - `secchat:id:<ID>` → the name of the node holding that session, with a TTL of
//!   [`DIRECTORY_TTL`], renewed every [`REFRESH_EVERY`] while the session lives. A claim is
//!   atomic (a script): it succeeds when the ID is free or already this node's, so an ID is
//!   never held by two nodes at once ([`Router::claim_lost`](crate::router::Router::claim_lost)
//!   ends a session whose ID turned out to be taken). A node that dies leaves its entries to
//!   expire within [`DIRECTORY_TTL`].
//! - Channel `secchat:node:<name>`: what other nodes send this one, each message a batch of
//!   records (JSON objects, one after another). Nothing is stored.
//!
//! # Order and batching
//! Records for one node leave in the order the router made them, in one PUBLISH per loop turn
//! (split past [`MAX_BATCH_BYTES`]). A record for an ID whose node is not in the cache waits for
//! one GET (at most [`MAX_PARKED_BYTES`] wait in all; beyond, `unavailable`), and records made
//! after it for the same ID wait behind it, so a session's records never overtake each other.
//! The cache keeps a node for [`DIRECTORY_CACHE`]: a session that ends meanwhile is answered
//! for by the node that held it (no such session there), so a stale entry costs nothing worse.
//!
//! # When Redis is unreachable
//! A record that waits for an answer fails at once with `unavailable` (the router tells the
//! client); notices are dropped. Sessions made meanwhile are claimed when the link is back.
//! A PUBLISH that no node received (the target node is gone or not subscribed right now) fails
//! its records with `unavailable` too: a session whose node died disappears from the directory
//! within [`DIRECTORY_TTL`], and then its friends are told it is gone.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::Registry;
use mio::event::Event;

use super::mailbox::{self, MailboxRules, Stored};
use super::{LinkEvent, LinkState, RedisLink, Reply};
use crate::address::Block;
use crate::id::Id;
use crate::protocol::Handle;
use crate::router::fasthash::{FastMap, FastSet};
use crate::router::{BusFailure, BusOutput, FanoutParts, MailLetter};

/// How long the directory names a node for an ID without a renewal.
pub const DIRECTORY_TTL: Duration = Duration::from_secs(30);
/// How long a node counts as alive after it last said so (every second): a node whose
/// sessions' clients come back through another sooner is not taken from; one that has been
/// silent longer is dead, and its sessions may be adopted.
pub const ALIVE_TTL: Duration = Duration::from_secs(5);
/// How often a node says it is alive.
const ALIVE_EVERY: Duration = Duration::from_secs(1);
/// How often a takeover whose session's node still counts as alive checks again (until the
/// router gives up on it, `TAKEOVER_TIMEOUT_MS`).
const ADOPT_RETRY: Duration = Duration::from_millis(500);
/// Takeovers checked again at most at once (more are answered: nothing to adopt).
const MAX_ADOPT_RETRIES: usize = 4_096;
/// How often this node renews the directory entries of its sessions.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// How long a looked-up node is believed for an ID.
pub const DIRECTORY_CACHE: Duration = Duration::from_secs(5);
/// Record bytes waiting for a directory lookup, in all.
pub const MAX_PARKED_BYTES: usize = 16 * 1024 * 1024;
/// The largest PUBLISH this node makes (a batch is split beyond it).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// How long a looked-up listener is believed for a handle: short, since handles move between
/// sessions (a record that reaches a node where the listener is gone is kept in the cluster's
/// mailbox there).
pub const HANDLE_CACHE: Duration = Duration::from_secs(1);
/// Directory entries cached: when full, the cache is emptied (it refills by lookups).
const MAX_CACHED: usize = 65_536;
/// IDs renewed per EVAL when refreshing (one command per batch of sessions).
const REFRESH_CHUNK: usize = 512;

/// Claims `KEYS[1]` for node `ARGV[1]` for `ARGV[2]` ms: 1 when it was free or already ours
/// (its TTL renewed), 0 when another node holds it.
const CLAIM: &[u8] = b"local v = redis.call('GET', KEYS[1]) \
if v == false then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end \
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end \
return 0";
/// Renews every key in `KEYS` that names node `ARGV[1]`, for `ARGV[2]` ms, and the saved state
/// of its session (`secchat:s:<ID>`) for `ARGV[3]` ms; returns the indexes (1-based) of those
/// another node holds now.
const RENEW: &[u8] = b"local lost = {} \
for i, k in ipairs(KEYS) do \
local v = redis.call('GET', k) \
if v == false then redis.call('SET', k, ARGV[1], 'PX', ARGV[2]) \
elseif v == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) \
else table.insert(lost, i) end \
if v == false or v == ARGV[1] then \
redis.call('PEXPIRE', 'secchat:s:' .. string.sub(k, 12), ARGV[3]) \
redis.call('PEXPIRE', 'secchat:q:' .. string.sub(k, 12), ARGV[3]) end end \
return lost";
/// Renews each handle entry `KEYS[i]` that names session `ARGV[i]` (or sets it again if it
/// is gone: Redis restarted empty, refused the LISTEN, or was out of reach past the entry's
/// TTL), for `ARGV[#KEYS + 1]` ms; returns the indexes (1-based) of those that name another
/// listener now (a LISTEN elsewhere took them, and its notice may never have come). Setting a
/// gone entry again is right because a node renews only the handles its sessions listen on now:
/// it forgets one as soon as its session stops listening on it, however that happens
/// (`BusOutput::Unlisten`).
const RENEW_HANDLES: &[u8] = b"local ttl = ARGV[#KEYS + 1] \
local lost = {} \
for i, k in ipairs(KEYS) do \
local v = redis.call('GET', k) \
if v == false then redis.call('SET', k, ARGV[i], 'PX', ttl) \
elseif v == ARGV[i] then redis.call('PEXPIRE', k, ttl) \
else table.insert(lost, i) end end \
return lost";
/// A takeover found the session's node silent: returns `{1, state, owner, queue}` (the saved
/// state `KEYS[2]`, "" if none; the node `KEYS[1]` names, "" if none; the saved resume queue
/// `KEYS[3]`) when that node is not alive (its
/// `secchat:alive:` key expired) or is `ARGV[1]` itself, `{0}` when it is alive (only its
/// subscriber is away: the session is not taken from a live node).
const ADOPT_CHECK: &[u8] = b"local owner = redis.call('GET', KEYS[1]) \
if owner and owner ~= ARGV[1] and redis.call('EXISTS', 'secchat:alive:' .. owner) == 1 then \
return {0} end \
return {1, redis.call('GET', KEYS[2]) or '', owner or '', redis.call('LRANGE', KEYS[3], 0, -1)}";
/// Adopts `KEYS[1]` for node `ARGV[1]` (`ARGV[3]` ms) if it still names `ARGV[2]` (the dead
/// node the check saw), or nothing, or this node: 1 when adopted, 0 when another node took it.
const ADOPT: &[u8] = b"local owner = redis.call('GET', KEYS[1]) \
if owner and owner ~= ARGV[1] and owner ~= ARGV[2] then return 0 end \
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) \
return 1";
/// Deletes `KEYS[1]` if it still names node `ARGV[1]`.
const RELEASE: &[u8] = b"if redis.call('GET', KEYS[1]) == ARGV[1] then \
return redis.call('DEL', KEYS[1]) end return 0";

/// A letter the cluster's mailbox handed back: its frame, and its sender's block when known.
pub type StoredLetter = (Vec<u8>, Option<Block>);

/// A saved session read for a takeover: (request number, its state if any, its resume queue).
pub type SavedSession = (u64, Option<Vec<u8>>, Vec<Vec<u8>>);

/// What the router must hear from the bus after a turn.
#[derive(Debug, Default)]
pub struct BusNews {
    /// Sessions whose directory claim holds (or that go on unclaimed while the bus is down).
    pub claimed: Vec<Id>,
    /// Saved session states read for takeovers: (request number, the state if any, its saved
    /// resume queue).
    pub checkpoints: Vec<SavedSession>,
    /// Requests whose letter the cluster's mailbox kept (queued).
    pub stored: Vec<u64>,
    /// Handles a LISTEN here took from another session: (handle, that session).
    pub moved: Vec<(Handle, Id)>,
    /// Handles whose directory entry a renewal found naming another listener, and not listened
    /// on here again since that renewal was sent: (handle, the session here that listened on
    /// it). Their HandleTaken record may never have come; this node no longer renews them.
    pub handles_lost: Vec<(Handle, Id)>,
    /// Letters the cluster's mailbox kept for a handle a session here now listens on, each
    /// with its sender's block when known.
    pub letters: Vec<(Handle, Vec<StoredLetter>)>,
    /// Letters the cluster's mailbox could not keep (Redis unreachable or refusing writes),
    /// back to the router, which keeps them here.
    pub unkept: Vec<(Handle, MailLetter)>,
    /// Batches other nodes sent this one (each: records one after another).
    pub batches: Vec<Vec<u8>>,
    /// Records the bus could not deliver, by the request number their sender waits on.
    pub failures: Vec<(u64, BusFailure)>,
    /// Sessions made here whose ID another node holds.
    pub lost_claims: Vec<Id>,
}

impl BusNews {
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
            && self.claimed.is_empty()
            && self.checkpoints.is_empty()
            && self.failures.is_empty()
            && self.lost_claims.is_empty()
            && self.stored.is_empty()
            && self.moved.is_empty()
            && self.handles_lost.is_empty()
            && self.letters.is_empty()
            && self.unkept.is_empty()
    }
}

/// Counters for `/metrics`. Never an ID or a payload.
#[derive(Clone, Copy, Debug, Default)]
pub struct BusCounters {
    pub publishes: u64,
    pub records_published: u64,
    pub batches_received: u64,
    pub lookups: u64,
    pub failures: u64,
}

/// What each command on the commands link was for, in order.
enum Sent {
    Claim(Id),
    /// A renewal of these IDs (in `KEYS` order).
    Renew(Vec<Id>),
    Release,
    Lookup(Id),
    Publish {
        rids: Vec<u64>,
    },
    Listen(Handle, Id),
    /// Who listens on this handle, for the records parked for it.
    HandleLookup(Handle),
    /// A letter for a handle nobody listened on; `record` goes to the listener if one appeared.
    Store(Box<ToHandle>),
    /// A letter kept, or an entry written, whatever happens (nothing waits on the answer).
    Kept,
    /// A letter for a handle whose listener here is away: back to the router if not kept.
    KeepLetter(Handle, Box<MailLetter>),
    /// Letters waiting for these handles, listened on here (in `KEYS` order).
    Collect(Vec<Handle>),
    /// A renewal of these handle entries (in `KEYS` order), each with the session here that
    /// listened on it and the number of that LISTEN.
    RenewHandles(Vec<(Handle, Id, u64)>),
    /// The saved state of session `.1`, for takeover `.0`.
    Checkpoint(u64, Id),
    /// Who listens on the handle of copy `index` of job `job`.
    CopyLookup {
        job: u64,
        index: usize,
    },
}

/// Copies of one MESSAGE to several handles waiting for their handles' nodes.
struct CopiesJob {
    parts: FanoutParts,
    copies: Vec<(Handle, u64, Slot)>,
    /// Lookups not answered yet.
    pending: usize,
}

/// Copies for one node: each handle with its request number.
type Copies = Vec<(Handle, u64)>;

/// Where one copy goes.
enum Slot {
    Waiting,
    Node(Rc<str>),
    /// Nobody listens on the handle.
    Nobody,
    Failed,
}

/// A record for whoever listens on a handle, as the router made it.
struct ToHandle {
    handle: Handle,
    rid: Option<u64>,
    record: String,
    letter: Option<MailLetter>,
    /// The handle was looked up again once already (a listener appeared as the letter was
    /// about to be kept).
    retried: bool,
}

/// Records for one node, in order (after a header naming this node), and the request numbers
/// among them.
#[derive(Default)]
struct Batch {
    text: Vec<u8>,
    rids: Vec<u64>,
    records: usize,
}

/// Records for one ID that wait for its lookup.
struct Parked {
    records: Vec<(Option<u64>, String)>,
}

pub struct ClusterBus {
    name: Rc<str>,
    commands: RedisLink,
    subscriber: RedisLink,
    sent: VecDeque<Sent>,
    cache: FastMap<Id, (Rc<str>, Instant)>,
    /// Who listens on a handle, as last looked up, for [`HANDLE_CACHE`].
    handle_cache: FastMap<Handle, (Rc<str>, Instant)>,
    parked: FastMap<Id, Parked>,
    parked_bytes: usize,
    /// Batches being made this turn, by node, in the order the nodes were first named.
    batches: Vec<(Rc<str>, Batch)>,
    /// Sessions held here, whose directory entries are renewed.
    local: FastSet<Id>,
    /// Sessions made while the link was down, or whose claim went unanswered: claimed when up.
    unclaimed: FastSet<Id>,
    /// Sessions here in their resume window (`BusOutput::Away`): no renewal collects the
    /// letters kept for their handles, which the router could only keep again. Invariant: a
    /// subset of `local`, so bounded by it.
    away: FastSet<Id>,
    /// Handles listened on here, by which session, and the number of that LISTEN: renewed with
    /// the IDs, set again when the link comes back.
    local_handles: FastMap<Handle, (Id, u64)>,
    /// The number of the last LISTEN made here: a renewal's answer that a handle is lost applies only
    /// if the handle was not listened on here again after the renewal was sent (Redis answers in
    /// order, but the router's table changes when the LISTEN is made, before its answer).
    listens: u64,
    /// Records for handles that wait for their listener's lookup, in order per handle.
    parked_handles: FastMap<Handle, Vec<ToHandle>>,
    /// MESSAGEs to several handles waiting for their handles' nodes (their payloads counted in
    /// `parked_bytes`).
    jobs: FastMap<u64, CopiesJob>,
    next_job: u64,
    mailbox: MailboxRules,
    /// `{"node":"<name>"}` and a newline: what every batch this node publishes starts with.
    header: String,
    resume_window: Duration,
    /// Takeovers to check again for adoption, when: (time, request number, session).
    adopt_retries: VecDeque<(Instant, u64, Id)>,
    next_alive: Instant,
    /// For sessions about to be adopted: the node the directory named when the adoption was
    /// checked (the adoption holds only if it still does).
    adopted_from: FastMap<Id, String>,
    /// When the commands link last came back after being down (not its first start).
    up_since: Option<Instant>,
    /// The commands link has been down since the node started.
    was_down: bool,
    next_refresh: Instant,
    news: BusNews,
    events: Vec<LinkEvent>,
    counters: BusCounters,
}

impl ClusterBus {
    /// A bus for the node called `name` over these two links (a commands link and a
    /// subscriber to `channel(name)`); nothing connects until the first [`ClusterBus::drive`].
    pub fn new(
        name: &str,
        commands: RedisLink,
        subscriber: RedisLink,
        mailbox: MailboxRules,
    ) -> ClusterBus {
        ClusterBus {
            name: Rc::from(name),
            commands,
            subscriber,
            sent: VecDeque::new(),
            cache: FastMap::default(),
            handle_cache: FastMap::default(),
            parked: FastMap::default(),
            parked_bytes: 0,
            batches: Vec::new(),
            local: FastSet::default(),
            unclaimed: FastSet::default(),
            away: FastSet::default(),
            local_handles: FastMap::default(),
            listens: 0,
            parked_handles: FastMap::default(),
            jobs: FastMap::default(),
            next_job: 0,
            mailbox,
            header: format!("{{\"node\":{}}}\n", serde_json::Value::from(name)),
            resume_window: Duration::from_secs(30),
            up_since: None,
            adopted_from: FastMap::default(),
            adopt_retries: VecDeque::new(),
            next_alive: Instant::now(),
            was_down: false,
            next_refresh: Instant::now() + REFRESH_EVERY,
            news: BusNews::default(),
            events: Vec::new(),
            counters: BusCounters::default(),
        }
    }

    /// The channel the node called `name` listens on.
    pub fn channel(name: &str) -> Vec<u8> {
        format!("secchat:node:{name}").into_bytes()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn counters(&self) -> BusCounters {
        self.counters
    }

    /// Both links are ready.
    pub fn is_up(&self) -> bool {
        self.commands.state() == LinkState::Ready && self.subscriber.state() == LinkState::Ready
    }

    pub fn commands_link(&self) -> &RedisLink {
        &self.commands
    }

    pub fn subscriber_link(&self) -> &RedisLink {
        &self.subscriber
    }

    /// How long a session's saved state outlives the last renewal: the resume window, plus the
    /// directory's TTL (a client may come back at the end of its window just as its node died).
    fn session_ttl(&self) -> Duration {
        self.resume_window + DIRECTORY_TTL
    }

    /// The resume window sessions have (`--resume-grace`): how long saved states are kept.
    pub fn with_resume_window(mut self, window: Duration) -> ClusterBus {
        self.resume_window = window;
        self
    }

    /// What `/metrics` shows of the bus.
    pub fn figures(&self) -> crate::metrics::ClusterFigures {
        let latency = self.commands.latency();
        crate::metrics::ClusterFigures {
            up: self.is_up(),
            round_trip_p50: latency.quantile(0.5),
            round_trip_p99: latency.quantile(0.99),
            local_sessions: self.local.len(),
            publishes: self.counters.publishes,
            batches_received: self.counters.batches_received,
            lookups: self.counters.lookups,
            failures: self.counters.failures,
        }
    }

    /// One output of the router.
    pub fn push(&mut self, output: BusOutput) {
        match output {
            BusOutput::Claim(id) => {
                // A session made here is connected, or said `Away` right after its claim.
                self.away.remove(&id);
                self.local.insert(id);
                if self.is_up() {
                    self.claim(id);
                } else {
                    // Served locally meanwhile; claimed when the bus is back.
                    self.unclaimed.insert(id);
                    self.news.claimed.push(id);
                }
            }
            BusOutput::Away(id) => {
                if self.local.contains(&id) {
                    self.away.insert(id);
                }
            }
            BusOutput::Back(id) => {
                self.away.remove(&id);
            }
            BusOutput::Release(id) => {
                self.local.remove(&id);
                self.away.remove(&id);
                self.unclaimed.remove(&id);
                let key = directory_key(id);
                if self
                    .commands
                    .command(&[b"EVAL", RELEASE, b"1", &key, self.name.as_bytes()])
                    .is_ok()
                {
                    self.sent.push_back(Sent::Release);
                }
                // The session ended: nothing is left to resume.
                if self
                    .commands
                    .command(&[b"DEL", &state_key(id), &queue_key(id)])
                    .is_ok()
                {
                    self.sent.push_back(Sent::Kept);
                }
            }
            BusOutput::Checkpoint { id, text } => {
                let ttl = self.session_ttl().as_millis().to_string();
                let args: [&[u8]; 5] = [
                    b"SET",
                    &state_key(id),
                    text.as_bytes(),
                    b"PX",
                    ttl.as_bytes(),
                ];
                if self.commands.command(&args).is_ok() {
                    self.sent.push_back(Sent::Kept);
                }
            }
            BusOutput::LoadCheckpoint { id, rid } => {
                let keys = (directory_key(id), state_key(id), queue_key(id));
                let args: [&[u8]; 7] = [
                    b"EVAL",
                    ADOPT_CHECK,
                    b"3",
                    &keys.0,
                    &keys.1,
                    &keys.2,
                    self.name.as_bytes(),
                ];
                if self.commands.command(&args).is_ok() {
                    self.sent.push_back(Sent::Checkpoint(rid, id));
                } else {
                    self.news.checkpoints.push((rid, None, Vec::new()));
                }
            }
            BusOutput::Queued { id, entry } => {
                let key = queue_key(id);
                let ttl = self.session_ttl().as_millis().to_string();
                if self
                    .commands
                    .command(&[b"RPUSH", &key, entry.as_bytes()])
                    .is_ok()
                {
                    self.sent.push_back(Sent::Kept);
                }
                if self
                    .commands
                    .command(&[b"PEXPIRE", &key, ttl.as_bytes()])
                    .is_ok()
                {
                    self.sent.push_back(Sent::Kept);
                }
            }
            BusOutput::QueueCleared(id) => {
                if self.commands.command(&[b"DEL", &queue_key(id)]).is_ok() {
                    self.sent.push_back(Sent::Kept);
                }
            }
            BusOutput::Adopt(id) => {
                self.local.insert(id);
                let ttl = DIRECTORY_TTL.as_millis().to_string();
                let dead = self.adopted_from.remove(&id).unwrap_or_default();
                let args: [&[u8]; 7] = [
                    b"EVAL",
                    ADOPT,
                    b"1",
                    &directory_key(id),
                    self.name.as_bytes(),
                    dead.as_bytes(),
                    ttl.as_bytes(),
                ];
                if self.commands.command(&args).is_ok() {
                    self.sent.push_back(Sent::Claim(id));
                }
            }
            BusOutput::Record { to, rid, text } => self.send_record(to, rid, text),
            BusOutput::Listen { handle, id } => {
                self.listens = self.listens.wrapping_add(1);
                self.local_handles.insert(handle, (id, self.listens));
                self.handle_cache_forget(&handle);
                self.listen(handle, id);
            }
            BusOutput::CheckHandle { handle, id } => {
                // Only the LISTEN the router means: one made here since answers for itself.
                if let Some(&(listener, listen)) = self.local_handles.get(&handle)
                    && listener == id
                {
                    self.renew_handle_entries(&[(handle, id, listen)]);
                }
            }
            BusOutput::Unlisten { handle, id } => {
                // Outputs come in the router's order, so an entry naming `id` is that session's
                // latest LISTEN here, which the router has just ended.
                if self
                    .local_handles
                    .get(&handle)
                    .map(|&(listener, _)| listener)
                    == Some(id)
                {
                    self.local_handles.remove(&handle);
                }
                let key = handle_key(&handle);
                let value = self.listener_value(id);
                if self
                    .commands
                    .command(&[b"EVAL", RELEASE, b"1", &key, value.as_bytes()])
                    .is_ok()
                {
                    self.sent.push_back(Sent::Release);
                }
            }
            BusOutput::ToHandle {
                handle,
                rid,
                record,
                letter,
            } => self.route_to_handle(ToHandle {
                handle,
                rid,
                record,
                letter,
                retried: false,
            }),
            BusOutput::HandOver { id, node } => {
                self.local.remove(&id);
                self.away.remove(&id);
                self.unclaimed.remove(&id);
                let key = directory_key(id);
                let ttl = DIRECTORY_TTL.as_millis().to_string();
                let args: [&[u8]; 5] = [b"SET", &key, node.as_bytes(), b"PX", ttl.as_bytes()];
                if self.commands.command(&args).is_ok() {
                    self.sent.push_back(Sent::Kept);
                }
            }
            BusOutput::ToNode { node, text } => {
                if !self.is_up() {
                    return;
                }
                self.batch_for(Rc::from(node.as_str()), None, &text);
            }
            BusOutput::ToHandles { handles, parts } => self.send_copies(handles, parts),
            BusOutput::StoreLetter { handle, letter } => {
                if self.is_up() && self.store(&handle, &letter, false) {
                    self.sent
                        .push_back(Sent::KeepLetter(handle, Box::new(letter)));
                } else {
                    self.news.unkept.push((handle, letter));
                }
            }
        }
    }

    /// What the directory holds for a handle session `id` here listens on: the session and
    /// this node, so that a sender finds the node with one lookup.
    fn listener_value(&self, id: Id) -> String {
        format!("{} {}", id.text().as_str(), self.name)
    }

    fn listen(&mut self, handle: Handle, id: Id) {
        let keys = (
            handle_key(&handle),
            mailbox::letters_key(handle.as_str()),
            mailbox::legacy_letters_key(handle.as_str()),
        );
        let ttl = DIRECTORY_TTL.as_millis().to_string();
        let value = self.listener_value(id);
        let args: [&[u8]; 8] = [
            b"EVAL",
            mailbox::LISTEN.as_bytes(),
            b"3",
            &keys.0,
            &keys.1,
            &keys.2,
            value.as_bytes(),
            ttl.as_bytes(),
        ];
        if self.commands.command(&args).is_ok() {
            self.sent.push_back(Sent::Listen(handle, id));
        }
    }

    /// Queues a STORE of `letter` for `handle` (`mailbox.rs`); whether it was queued.
    fn store(
        &mut self,
        handle: &Handle,
        letter: &MailLetter,
        only_if_nobody_listens: bool,
    ) -> bool {
        let keys = (handle_key(handle), mailbox::letters_key(handle.as_str()));
        let rules = &self.mailbox;
        let numbers = [
            rules.letters_per_handle.max(1),
            rules.ttl.as_millis().clamp(1, u64::MAX.into()) as usize,
            rules.bytes_per_handle,
            rules.bytes,
            mailbox::LETTER_OVERHEAD,
        ]
        .map(|number| number.to_string());
        let [per_handle, ttl, bytes_per_handle, bytes, overhead] = &numbers;
        let check: &[u8] = if only_if_nobody_listens { b"1" } else { b"0" };
        let block = mailbox::block_name(letter.block);
        let args: [&[u8]; 14] = [
            b"EVAL",
            mailbox::STORE.as_bytes(),
            b"2",
            &keys.0,
            &keys.1,
            letter.frame.as_bytes(),
            per_handle.as_bytes(),
            ttl.as_bytes(),
            check,
            block.as_bytes(),
            bytes_per_handle.as_bytes(),
            bytes.as_bytes(),
            overhead.as_bytes(),
            handle.as_str().as_bytes(),
        ];
        self.commands.command(&args).is_ok()
    }

    /// A record for whoever listens on a handle: to that session's node, or (nobody listening)
    /// its letter into the cluster's mailbox.
    fn route_to_handle(&mut self, message: ToHandle) {
        if !self.is_up() {
            self.fail(message.rid, BusFailure::Unavailable);
            return;
        }
        if let Some(parked) = self.parked_handles.get_mut(&message.handle) {
            if self.parked_bytes + message.record.len() > MAX_PARKED_BYTES {
                self.fail(message.rid, BusFailure::Unavailable);
                return;
            }
            self.parked_bytes += message.record.len();
            parked.push(message);
            return;
        }
        let now = Instant::now();
        if let Some((node, until)) = self.handle_cache.get(&message.handle)
            && *until > now
        {
            let node = node.clone();
            self.batch_for(node, message.rid, &message.record);
            return;
        }
        if self.parked_bytes + message.record.len() > MAX_PARKED_BYTES {
            self.fail(message.rid, BusFailure::Unavailable);
            return;
        }
        let key = handle_key(&message.handle);
        if self.commands.command(&[b"GET", &key]).is_err() {
            self.fail(message.rid, BusFailure::Unavailable);
            return;
        }
        self.counters.lookups += 1;
        self.sent.push_back(Sent::HandleLookup(message.handle));
        self.parked_bytes += message.record.len();
        self.parked_handles.insert(message.handle, vec![message]);
    }

    fn handle_cache_forget(&mut self, handle: &Handle) {
        self.handle_cache.remove(handle);
    }

    fn cache_listener(&mut self, handle: Handle, node: Rc<str>, now: Instant) {
        if self.handle_cache.len() >= MAX_CACHED {
            self.handle_cache.clear();
        }
        self.handle_cache.insert(handle, (node, now + HANDLE_CACHE));
    }

    /// Copies of one MESSAGE to several handles: each handle's node found (from the cache, or
    /// one GET each), then one record per node; the letters of handles nobody listens on kept.
    fn send_copies(&mut self, handles: Vec<(Handle, u64)>, parts: FanoutParts) {
        if !self.is_up() || self.parked_bytes + parts.payload.len() > MAX_PARKED_BYTES {
            for (_, rid) in handles {
                self.fail(Some(rid), BusFailure::Unavailable);
            }
            return;
        }
        let now = Instant::now();
        self.next_job = self.next_job.wrapping_add(1);
        let job = self.next_job;
        let mut copies = Vec::with_capacity(handles.len());
        let mut pending = 0;
        for (index, (handle, rid)) in handles.into_iter().enumerate() {
            let cached = self
                .handle_cache
                .get(&handle)
                .filter(|(_, until)| *until > now)
                .map(|(node, _)| node.clone());
            let slot = match cached {
                Some(node) => Slot::Node(node),
                None => {
                    let key = handle_key(&handle);
                    if self.commands.command(&[b"GET", &key]).is_ok() {
                        self.counters.lookups += 1;
                        self.sent.push_back(Sent::CopyLookup { job, index });
                        pending += 1;
                        Slot::Waiting
                    } else {
                        Slot::Failed
                    }
                }
            };
            copies.push((handle, rid, slot));
        }
        self.parked_bytes += parts.payload.len();
        self.jobs.insert(
            job,
            CopiesJob {
                parts,
                copies,
                pending,
            },
        );
        if pending == 0 {
            self.finish_copies(job);
        }
    }

    /// The answer to the lookup of copy `index` of job `job`.
    fn copy_found(&mut self, job: u64, index: usize, reply: Option<Reply>, now: Instant) {
        let listener = match &reply {
            Some(Reply::Bulk(Some(text))) => parse_listener(text),
            _ => None,
        };
        let Some(entry) = self.jobs.get_mut(&job) else {
            return;
        };
        let Some((handle, _, slot)) = entry.copies.get_mut(index) else {
            return;
        };
        let handle = *handle;
        *slot = match (&reply, &listener) {
            (_, Some((_, node))) => Slot::Node(node.clone()),
            (Some(Reply::Bulk(None)), None) => Slot::Nobody,
            _ => Slot::Failed,
        };
        entry.pending = entry.pending.saturating_sub(1);
        let done = entry.pending == 0;
        if let Some((_, node)) = listener {
            self.cache_listener(handle, node, now);
        }
        if done {
            self.finish_copies(job);
        }
    }

    /// Every copy of job `job` has its node: one record per node, the rest kept or failed.
    fn finish_copies(&mut self, job: u64) {
        let Some(CopiesJob { parts, copies, .. }) = self.jobs.remove(&job) else {
            return;
        };
        self.parked_bytes -= parts.payload.len();
        let mut by_node: Vec<(Rc<str>, Copies)> = Vec::new();
        for (handle, rid, slot) in copies {
            match slot {
                Slot::Node(node) => match by_node.iter_mut().find(|(name, _)| *name == node) {
                    Some((_, list)) => list.push((handle, rid)),
                    None => by_node.push((node, vec![(handle, rid)])),
                },
                Slot::Nobody if parts.may_store => {
                    let message = ToHandle {
                        handle,
                        rid: Some(rid),
                        record: parts.record(&[(handle, rid)]),
                        letter: Some(parts.letter(&handle)),
                        retried: false,
                    };
                    let stored = message
                        .letter
                        .as_ref()
                        .is_some_and(|letter| self.store(&handle, letter, true));
                    if stored {
                        self.sent.push_back(Sent::Store(Box::new(message)));
                    } else {
                        self.fail(Some(rid), BusFailure::Unavailable);
                    }
                }
                Slot::Nobody => self.fail(Some(rid), BusFailure::NoSuchSession),
                Slot::Waiting | Slot::Failed => self.fail(Some(rid), BusFailure::Unavailable),
            }
        }
        for (node, handles) in by_node {
            let record = parts.record(&handles);
            let rids: Vec<u64> = handles.iter().map(|(_, rid)| *rid).collect();
            self.batch_many(node, &rids, &record);
        }
    }

    fn send_record(&mut self, to: Id, rid: Option<u64>, text: String) {
        if !self.is_up() {
            self.fail(rid, BusFailure::Unavailable);
            return;
        }
        if let Some(parked) = self.parked.get_mut(&to) {
            // Behind the records already waiting for this ID: order is kept.
            if self.parked_bytes + text.len() > MAX_PARKED_BYTES {
                self.fail(rid, BusFailure::Unavailable);
                return;
            }
            self.parked_bytes += text.len();
            parked.records.push((rid, text));
            return;
        }
        let now = Instant::now();
        if let Some((node, until)) = self.cache.get(&to)
            && *until > now
        {
            let node = node.clone();
            self.batch_for(node, rid, &text);
            return;
        }
        if self.parked_bytes + text.len() > MAX_PARKED_BYTES {
            self.fail(rid, BusFailure::Unavailable);
            return;
        }
        let key = directory_key(to);
        if self.commands.command(&[b"GET", &key]).is_err() {
            self.fail(rid, BusFailure::Unavailable);
            return;
        }
        self.counters.lookups += 1;
        self.sent.push_back(Sent::Lookup(to));
        self.parked_bytes += text.len();
        self.parked.insert(
            to,
            Parked {
                records: vec![(rid, text)],
            },
        );
    }

    fn batch_many(&mut self, node: Rc<str>, rids: &[u64], text: &str) {
        let Some((&last, earlier)) = rids.split_last() else {
            return;
        };
        self.batch_for(node.clone(), Some(last), text);
        // The record is in the batch once; the other copies' numbers fail with it.
        if let Some((_, batch)) = self.batches.iter_mut().find(|(name, _)| *name == node) {
            batch.rids.extend_from_slice(earlier);
        }
    }

    fn batch_for(&mut self, node: Rc<str>, rid: Option<u64>, text: &str) {
        let index = match self.batches.iter().position(|(name, _)| *name == node) {
            Some(index) => index,
            None => {
                self.batches.push((node, Batch::default()));
                self.batches.len() - 1
            }
        };
        let Some((node, batch)) = self.batches.get_mut(index) else {
            return;
        };
        if batch.records > 0 && batch.text.len() + text.len() > MAX_BATCH_BYTES {
            let full = std::mem::take(batch);
            let node = node.clone();
            self.publish(&node, full);
            return self.batch_for(node, rid, text);
        }
        if batch.text.is_empty() {
            // Every batch names the node it comes from, so that answers go straight back to
            // it (not to wherever the asking session is by then).
            batch.text.extend_from_slice(self.header.as_bytes());
        }
        batch.text.extend_from_slice(text.as_bytes());
        batch.text.push(b'\n');
        batch.rids.extend(rid);
        batch.records += 1;
    }

    fn publish(&mut self, node: &str, batch: Batch) {
        let channel = ClusterBus::channel(node);
        match self.commands.command(&[b"PUBLISH", &channel, &batch.text]) {
            Ok(()) => {
                self.counters.publishes += 1;
                self.sent.push_back(Sent::Publish { rids: batch.rids });
            }
            Err(_) => {
                for rid in batch.rids {
                    self.fail(Some(rid), BusFailure::Unavailable);
                }
            }
        }
    }

    fn claim(&mut self, id: Id) {
        let key = directory_key(id);
        let ttl = DIRECTORY_TTL.as_millis().to_string();
        let args: [&[u8]; 6] = [
            b"EVAL",
            CLAIM,
            b"1",
            &key,
            self.name.as_bytes(),
            ttl.as_bytes(),
        ];
        if self.commands.command(&args).is_ok() {
            self.sent.push_back(Sent::Claim(id));
        } else {
            self.unclaimed.insert(id);
            self.news.claimed.push(id);
        }
    }

    /// What an ID the directory does not name means: that session is gone, except just after
    /// the link came back, when Redis may have restarted empty and the nodes are still
    /// claiming their sessions again (then the request is only `unavailable`, and a friendship
    /// is not ended for it).
    fn absent_session(&self) -> BusFailure {
        match self.up_since {
            Some(since) if since.elapsed() < DIRECTORY_TTL => BusFailure::Unavailable,
            _ => BusFailure::NoSuchSession,
        }
    }

    fn fail(&mut self, rid: Option<u64>, failure: BusFailure) {
        if let Some(rid) = rid {
            self.counters.failures += 1;
            self.news.failures.push((rid, failure));
        }
    }

    /// A readiness event for one of the links' tokens.
    pub fn ready(&mut self, registry: &Registry, event: &Event, now: Instant) {
        self.commands.ready(registry, event, now);
        self.subscriber.ready(registry, event, now);
    }

    /// Whether `token` is one of the links'.
    pub fn owns(&self, token: mio::Token) -> bool {
        token == self.commands.token() || token == self.subscriber.token()
    }

    /// Time-driven work and everything the links reported: replies matched to what they
    /// answer, messages from other nodes, links going down and coming back. Returns what the
    /// router must hear.
    pub fn exchange(&mut self, registry: &Registry, now: Instant) -> BusNews {
        self.commands.drive(registry, now);
        self.subscriber.drive(registry, now);
        let mut events = std::mem::take(&mut self.events);
        self.commands.take_events(&mut events);
        for event in events.drain(..) {
            match event {
                LinkEvent::Up => {
                    log::info!("cluster: the commands link to Redis is up");
                    if self.was_down {
                        self.up_since = Some(now);
                    }
                    let pending: Vec<Id> = self.unclaimed.drain().collect();
                    for id in pending {
                        if self.local.contains(&id) {
                            self.claim(id);
                        }
                    }
                    self.renew_handles();
                    self.collect_waiting();
                    self.say_alive();
                }
                LinkEvent::Reply(reply) => self.answered(reply, now),
                LinkEvent::Down { .. } => self.commands_down(),
                LinkEvent::Message { .. } => {}
            }
        }
        self.subscriber.take_events(&mut events);
        for event in events.drain(..) {
            match event {
                LinkEvent::Message { payload, .. } => {
                    self.counters.batches_received += 1;
                    self.news.batches.push(payload);
                }
                LinkEvent::Up => log::info!("cluster: subscribed to this node's channel"),
                LinkEvent::Down { .. } | LinkEvent::Reply(_) => {}
            }
        }
        self.events = events;
        if now >= self.next_refresh {
            self.next_refresh = now + REFRESH_EVERY;
            self.renew_all();
            self.renew_handles();
            self.collect_waiting();
        }
        if now >= self.next_alive {
            self.next_alive = now + ALIVE_EVERY;
            self.say_alive();
        }
        while let Some(&(at, rid, id)) = self.adopt_retries.front()
            && at <= now
        {
            self.adopt_retries.pop_front();
            self.push(BusOutput::LoadCheckpoint { id, rid });
        }
        std::mem::take(&mut self.news)
    }

    /// Publishes this turn's batches and writes what the links hold.
    pub fn flush(&mut self, registry: &Registry) {
        for (node, batch) in std::mem::take(&mut self.batches) {
            if batch.records > 0 {
                self.counters.records_published +=
                    batch.text.iter().filter(|&&b| b == b'\n').count() as u64;
                self.publish(&node, batch);
            }
        }
        self.commands.flush(registry);
        self.subscriber.flush(registry);
    }

    /// The earliest time [`ClusterBus::exchange`] has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.commands.next_deadline(),
            self.subscriber.next_deadline(),
            Some(self.next_refresh),
            Some(self.next_alive),
            self.adopt_retries.front().map(|&(at, _, _)| at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Renews the directory entries of the handles listened on here (sets those that expired).
    fn renew_handles(&mut self) {
        if self.commands.state() != LinkState::Ready {
            return;
        }
        let handles: Vec<(Handle, Id, u64)> = self
            .local_handles
            .iter()
            .map(|(handle, &(id, listen))| (*handle, id, listen))
            .collect();
        for chunk in handles.chunks(REFRESH_CHUNK) {
            self.renew_handle_entries(chunk);
        }
    }

    /// One RENEW_HANDLES of `entries` (each handle with the session here that listens on it and
    /// the number of that LISTEN), answered in [`ClusterBus::handles_renewed`].
    fn renew_handle_entries(&mut self, entries: &[(Handle, Id, u64)]) {
        let ttl = DIRECTORY_TTL.as_millis().to_string();
        let keys: Vec<Vec<u8>> = entries
            .iter()
            .map(|(handle, _, _)| handle_key(handle))
            .collect();
        let values: Vec<String> = entries
            .iter()
            .map(|(_, id, _)| self.listener_value(*id))
            .collect();
        let count = keys.len().to_string();
        let mut args: Vec<&[u8]> = vec![b"EVAL", RENEW_HANDLES, count.as_bytes()];
        args.extend(keys.iter().map(Vec::as_slice));
        args.extend(values.iter().map(|value| value.as_bytes()));
        args.push(ttl.as_bytes());
        if self.commands.command(&args).is_ok() {
            self.sent.push_back(Sent::RenewHandles(entries.to_vec()));
        }
    }

    /// The answer to a renewal of handle entries: each one another listener holds now is
    /// forgotten here and told to the router, unless it was listened on here again since the
    /// renewal was sent (that LISTEN, answered after it, holds the entry now). A handle lost
    /// is reported once: it is no longer renewed, so no later renewal names it.
    fn handles_renewed(&mut self, entries: &[(Handle, Id, u64)], reply: Reply) {
        if matches!(reply, Reply::Error(_)) {
            log::warn!(
                "cluster: Redis refused to renew handle entries; tried again at the next renewal"
            );
        }
        for &(handle, id, listen) in lost_entries(&reply, entries) {
            if self.local_handles.get(&handle) == Some(&(id, listen)) {
                self.local_handles.remove(&handle);
                self.news.handles_lost.push((handle, id));
            }
        }
    }

    /// Asks for the letters the cluster's mailbox keeps for handles listened on here by
    /// connected sessions (`mailbox::COLLECT`). A session away is skipped: its letters would
    /// only come back to be kept again, as new letters with new TTLs at every renewal (never
    /// expiring), and lost if the link dropped between the two; its client's LISTEN after it
    /// resumes takes them.
    fn collect_waiting(&mut self) {
        if self.commands.state() != LinkState::Ready {
            return;
        }
        let away = &self.away;
        let handles: Vec<(Handle, Id)> = self
            .local_handles
            .iter()
            .filter(|(_, (id, _))| !away.contains(id))
            .map(|(handle, &(id, _))| (*handle, id))
            .collect();
        for chunk in handles.chunks(REFRESH_CHUNK) {
            let keys: Vec<Vec<u8>> = chunk.iter().map(|(handle, _)| handle_key(handle)).collect();
            let values: Vec<String> = chunk
                .iter()
                .map(|(_, id)| self.listener_value(*id))
                .collect();
            let count = keys.len().to_string();
            let mut args: Vec<&[u8]> = vec![b"EVAL", mailbox::COLLECT.as_bytes(), count.as_bytes()];
            args.extend(keys.iter().map(Vec::as_slice));
            args.extend(values.iter().map(|value| value.as_bytes()));
            if self.commands.command(&args).is_ok() {
                let handles = chunk.iter().map(|(handle, _)| *handle).collect();
                self.sent.push_back(Sent::Collect(handles));
            }
        }
    }

    /// The letters found waiting for handles listened on here go to the router, which hands
    /// them to their listeners (or keeps them again if a listener left meanwhile).
    fn collected(&mut self, handles: &[Handle], reply: Reply) {
        let Reply::Array(Some(found)) = reply else {
            return;
        };
        let mut found = found.into_iter();
        while let (Some(Reply::Integer(index)), Some(Reply::Array(Some(mail)))) =
            (found.next(), found.next())
        {
            let handle = usize::try_from(index)
                .ok()
                .and_then(|index| index.checked_sub(1))
                .and_then(|index| handles.get(index));
            let letters = mail_letters(mail);
            if let Some(&handle) = handle
                && !letters.is_empty()
            {
                self.news.letters.push((handle, letters));
            }
        }
    }

    /// This node is alive for [`ALIVE_TTL`]: while it is, no other node adopts its sessions.
    fn say_alive(&mut self) {
        let key = format!("secchat:alive:{}", self.name).into_bytes();
        let ttl = ALIVE_TTL.as_millis().to_string();
        let args: [&[u8]; 5] = [b"SET", &key, b"1", b"PX", ttl.as_bytes()];
        if self.commands.command(&args).is_ok() {
            self.sent.push_back(Sent::Kept);
        }
    }

    fn renew_all(&mut self) {
        if self.commands.state() != LinkState::Ready {
            return;
        }
        let ids: Vec<Id> = self.local.iter().copied().collect();
        let ttl = DIRECTORY_TTL.as_millis().to_string();
        let session_ttl = self.session_ttl().as_millis().to_string();
        for chunk in ids.chunks(REFRESH_CHUNK) {
            let keys: Vec<Vec<u8>> = chunk.iter().map(|id| directory_key(*id)).collect();
            let count = keys.len().to_string();
            let mut args: Vec<&[u8]> = vec![b"EVAL", RENEW, count.as_bytes()];
            args.extend(keys.iter().map(Vec::as_slice));
            args.push(self.name.as_bytes());
            args.push(ttl.as_bytes());
            args.push(session_ttl.as_bytes());
            if self.commands.command(&args).is_ok() {
                self.sent.push_back(Sent::Renew(chunk.to_vec()));
            }
        }
    }

    fn answered(&mut self, reply: Reply, now: Instant) {
        let Some(sent) = self.sent.pop_front() else {
            log::warn!("cluster: a reply from Redis that answers nothing");
            return;
        };
        match sent {
            Sent::Claim(id) => match reply {
                Reply::Integer(1) => self.news.claimed.push(id),
                Reply::Integer(_) => {
                    self.away.remove(&id);
                    if self.local.remove(&id) {
                        self.news.lost_claims.push(id);
                    }
                }
                _ => {
                    log::warn!(
                        "cluster: Redis refused a directory claim; retried at the next renewal"
                    );
                    self.unclaimed.insert(id);
                    self.news.claimed.push(id);
                }
            },
            Sent::Renew(ids) => {
                for id in lost_entries(&reply, &ids) {
                    self.away.remove(id);
                    if self.local.remove(id) {
                        self.news.lost_claims.push(*id);
                    }
                }
            }
            Sent::RenewHandles(entries) => self.handles_renewed(&entries, reply),
            Sent::Collect(handles) => self.collected(&handles, reply),
            Sent::Release => {}
            Sent::Lookup(id) => {
                let Some(parked) = self.parked.remove(&id) else {
                    return;
                };
                let bytes: usize = parked.records.iter().map(|(_, text)| text.len()).sum();
                self.parked_bytes -= bytes;
                match reply {
                    Reply::Bulk(Some(node)) => {
                        let node: Rc<str> = Rc::from(String::from_utf8_lossy(&node).as_ref());
                        if self.cache.len() >= MAX_CACHED {
                            self.cache.clear();
                        }
                        self.cache.insert(id, (node.clone(), now + DIRECTORY_CACHE));
                        for (rid, text) in parked.records {
                            self.batch_for(node.clone(), rid, &text);
                        }
                    }
                    Reply::Bulk(None) => {
                        let failure = self.absent_session();
                        for (rid, _) in parked.records {
                            self.fail(rid, failure);
                        }
                    }
                    _ => {
                        for (rid, _) in parked.records {
                            self.fail(rid, BusFailure::Unavailable);
                        }
                    }
                }
            }
            Sent::Listen(handle, id) => self.listened(handle, id, reply),
            Sent::HandleLookup(handle) => self.listener_found(handle, reply, now),
            Sent::CopyLookup { job, index } => self.copy_found(job, index, Some(reply), now),
            Sent::Store(message) => match reply {
                Reply::Integer(value) if Stored::from_reply(value) == Some(Stored::Kept) => {
                    if let Some(rid) = message.rid {
                        self.news.stored.push(rid);
                    }
                }
                Reply::Integer(value)
                    if Stored::from_reply(value) == Some(Stored::Listened) && !message.retried =>
                {
                    // Somebody listens now: to them instead.
                    self.route_to_handle(ToHandle {
                        retried: true,
                        ..*message
                    });
                }
                _ => self.fail(message.rid, BusFailure::Unavailable),
            },
            Sent::Checkpoint(rid, id) => {
                let mut parts = match reply {
                    Reply::Array(Some(parts)) => parts.into_iter(),
                    _ => Vec::new().into_iter(),
                };
                let adoptable = match parts.next() {
                    Some(Reply::Integer(1)) => true,
                    Some(Reply::Integer(0)) => {
                        // Its node still says it is alive: ask again shortly, until it is
                        // not (it died) or the session answers (only its subscriber was away).
                        if self.adopt_retries.len() < MAX_ADOPT_RETRIES {
                            self.adopt_retries.push_back((now + ADOPT_RETRY, rid, id));
                            return;
                        }
                        false
                    }
                    _ => false,
                };
                let state = match parts.next() {
                    Some(Reply::Bulk(Some(state))) if adoptable && !state.is_empty() => Some(state),
                    _ => None,
                };
                if let Some(Reply::Bulk(Some(owner))) = parts.next()
                    && state.is_some()
                {
                    if self.adopted_from.len() >= MAX_CACHED {
                        self.adopted_from.clear();
                    }
                    self.adopted_from
                        .insert(id, String::from_utf8_lossy(&owner).into_owned());
                }
                let queue = match parts.next() {
                    Some(Reply::Array(Some(entries))) => entries
                        .into_iter()
                        .filter_map(|entry| match entry {
                            Reply::Bulk(Some(bytes)) => Some(bytes),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                self.news.checkpoints.push((rid, state, queue));
            }
            Sent::KeepLetter(handle, letter) => match reply {
                Reply::Integer(value) if Stored::from_reply(value) == Some(Stored::Kept) => {}
                _ => self.news.unkept.push((handle, *letter)),
            },
            Sent::Kept => {
                if matches!(reply, Reply::Error(_)) {
                    log::warn!(
                        "cluster: Redis refused a write (a letter, a saved session or a directory \
                         entry; is it out of memory?)"
                    );
                }
            }
            Sent::Publish { rids } => {
                let failure = match reply {
                    Reply::Integer(n) if n > 0 => return,
                    // Nobody heard it: the node is gone (or not subscribed right now).
                    Reply::Integer(_) => BusFailure::NodeGone,
                    _ => BusFailure::Unavailable,
                };
                for rid in rids {
                    self.fail(Some(rid), failure);
                }
            }
        }
    }

    /// The answer to a LISTEN: who listened before (told, if another session), and the letters
    /// kept for the handle.
    fn listened(&mut self, handle: Handle, id: Id, reply: Reply) {
        let Reply::Array(Some(parts)) = reply else {
            log::warn!("cluster: Redis refused a LISTEN; set again at the next renewal");
            return;
        };
        let mut parts = parts.into_iter();
        if let Some(Reply::Bulk(Some(previous))) = parts.next()
            && let Some((previous, _)) = parse_listener(&previous)
            && previous != id
        {
            self.news.moved.push((handle, previous));
        }
        if let Some(Reply::Array(Some(mail))) = parts.next() {
            let letters = mail_letters(mail);
            if !letters.is_empty() {
                self.news.letters.push((handle, letters));
            }
        }
    }

    /// The answer to who listens on `handle`: the records parked for it go to that session, or
    /// (nobody) their letters into the cluster's mailbox.
    fn listener_found(&mut self, handle: Handle, reply: Reply, now: Instant) {
        let Some(parked) = self.parked_handles.remove(&handle) else {
            return;
        };
        let bytes: usize = parked.iter().map(|message| message.record.len()).sum();
        self.parked_bytes -= bytes;
        let listener = match &reply {
            Reply::Bulk(Some(text)) => parse_listener(text),
            _ => None,
        };
        if let Some((_, node)) = &listener {
            self.cache_listener(handle, node.clone(), now);
        }
        for message in parked {
            match (&reply, &listener) {
                (_, Some((_, node))) => {
                    self.batch_for(node.clone(), message.rid, &message.record);
                }
                (Reply::Bulk(None), None) => match &message.letter {
                    Some(letter) => {
                        if self.store(&handle, letter, true) {
                            self.sent.push_back(Sent::Store(Box::new(message)));
                        } else {
                            self.fail(message.rid, BusFailure::Unavailable);
                        }
                    }
                    None => self.fail(message.rid, BusFailure::NoSuchSession),
                },
                _ => self.fail(message.rid, BusFailure::Unavailable),
            }
        }
    }

    /// The commands link went down: what it sent will never be answered.
    fn commands_down(&mut self) {
        self.was_down = true;
        log::warn!(
            "cluster: the commands link to Redis is down; cross-node requests fail until it is back"
        );
        for sent in std::mem::take(&mut self.sent) {
            match sent {
                Sent::Claim(id) => {
                    self.unclaimed.insert(id);
                    self.news.claimed.push(id);
                }
                Sent::Renew(_)
                | Sent::RenewHandles(_)
                | Sent::Collect(_)
                | Sent::Release
                | Sent::Kept
                | Sent::Listen(..) => {}
                Sent::HandleLookup(handle) => {
                    for message in self.parked_handles.remove(&handle).unwrap_or_default() {
                        self.parked_bytes -= message.record.len();
                        self.fail(message.rid, BusFailure::Unavailable);
                    }
                }
                Sent::Store(message) => self.fail(message.rid, BusFailure::Unavailable),
                Sent::KeepLetter(handle, letter) => self.news.unkept.push((handle, *letter)),
                Sent::Checkpoint(rid, _) => self.news.checkpoints.push((rid, None, Vec::new())),
                Sent::CopyLookup { job, index } => {
                    self.copy_found(job, index, None, Instant::now())
                }
                Sent::Lookup(id) => {
                    if let Some(parked) = self.parked.remove(&id) {
                        for (rid, text) in parked.records {
                            self.parked_bytes -= text.len();
                            self.fail(rid, BusFailure::Unavailable);
                        }
                    }
                }
                Sent::Publish { rids } => {
                    for rid in rids {
                        self.fail(Some(rid), BusFailure::Unavailable);
                    }
                }
            }
        }
        // Every session here is claimed again once the link is back, and every handle set again
        // at the first renewal then.
        self.unclaimed.extend(self.local.iter().copied());
        self.cache.clear();
        self.handle_cache.clear();
    }
}

/// Those of `entries` (what a renewal, RENEW or RENEW_HANDLES, was sent, in `KEYS` order) that
/// its reply says another holds now: the reply lists their indexes, from 1. Anything else in
/// it (an index out of range, not a number, an error) names nothing.
fn lost_entries<'a, T>(reply: &Reply, entries: &'a [T]) -> impl Iterator<Item = &'a T> {
    let indexes = match reply {
        Reply::Array(Some(indexes)) => indexes.as_slice(),
        _ => &[],
    };
    indexes.iter().filter_map(|index| match index {
        Reply::Integer(index) => usize::try_from(*index)
            .ok()
            .and_then(|index| index.checked_sub(1))
            .and_then(|index| entries.get(index)),
        _ => None,
    })
}

/// Letters as LISTEN and COLLECT answer them: each frame followed by its sender's block.
fn mail_letters(mail: Vec<Reply>) -> Vec<StoredLetter> {
    let mut letters = Vec::new();
    let mut mail = mail.into_iter();
    while let Some(letter) = mail.next() {
        let block = mail.next();
        if let Reply::Bulk(Some(frame)) = letter {
            let block = match block {
                Some(Reply::Bulk(Some(name))) => mailbox::parse_block_name(&name),
                _ => None,
            };
            letters.push((frame, block));
        }
    }
    letters
}

/// The directory key of the listener of `handle`.
fn handle_key(handle: &Handle) -> Vec<u8> {
    format!("secchat:h:{}", handle.as_str()).into_bytes()
}

/// A session ID as the directory holds it (its text).
fn parse_id(text: &[u8]) -> Option<Id> {
    Id::parse_units(text.iter().map(|&byte| byte.is_ascii().then_some(byte)))
}

/// A handle's listener as the directory holds it: the session's ID and its node's name.
fn parse_listener(text: &[u8]) -> Option<(Id, Rc<str>)> {
    let space = text.iter().position(|&byte| byte == b' ')?;
    let (id, node) = text.split_at(space);
    let node = std::str::from_utf8(node.get(1..)?).ok()?;
    Some((parse_id(id)?, Rc::from(node)))
}

/// Where the resume queue of session `id` is saved, one entry per frame.
fn queue_key(id: Id) -> Vec<u8> {
    format!("secchat:q:{}", id.text().as_str()).into_bytes()
}

/// Where the resumable state of session `id` is saved.
fn state_key(id: Id) -> Vec<u8> {
    format!("secchat:s:{}", id.text().as_str()).into_bytes()
}

/// The directory key of session `id`.
fn directory_key(id: Id) -> Vec<u8> {
    format!("secchat:id:{}", id.text().as_str()).into_bytes()
}

/// The node a batch comes from (its header) and its records, in order. A batch that is not
/// UTF-8, or a record that does not parse, ends it there (the rest of a damaged batch is not
/// guessed at).
pub fn records(batch: &[u8]) -> (Option<String>, Vec<&str>) {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Header {
        node: String,
    }
    let text = std::str::from_utf8(batch).unwrap_or_default();
    let mut values = serde_json::Deserializer::from_str(text)
        .into_iter::<&serde_json::value::RawValue>()
        .map_while(Result::ok)
        .map(serde_json::value::RawValue::get)
        .peekable();
    let origin = values
        .peek()
        .and_then(|first| serde_json::from_str::<Header>(first).ok())
        .map(|header| header.node);
    if origin.is_some() {
        values.next();
    }
    (origin, values.collect())
}
