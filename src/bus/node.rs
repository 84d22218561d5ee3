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

use super::{LinkEvent, LinkState, RedisLink, Reply};
use crate::id::Id;
use crate::router::fasthash::{FastMap, FastSet};
use crate::router::{BusFailure, BusOutput};

/// How long the directory names a node for an ID without a renewal.
pub const DIRECTORY_TTL: Duration = Duration::from_secs(30);
/// How often this node renews the directory entries of its sessions.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// How long a looked-up node is believed for an ID.
pub const DIRECTORY_CACHE: Duration = Duration::from_secs(5);
/// Record bytes waiting for a directory lookup, in all.
pub const MAX_PARKED_BYTES: usize = 16 * 1024 * 1024;
/// The largest PUBLISH this node makes (a batch is split beyond it).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
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
/// Renews every key in `KEYS` that names node `ARGV[1]`, for `ARGV[2]` ms; returns the indexes
/// (1-based) of those another node holds now.
const RENEW: &[u8] = b"local lost = {} \
for i, k in ipairs(KEYS) do \
local v = redis.call('GET', k) \
if v == false then redis.call('SET', k, ARGV[1], 'PX', ARGV[2]) \
elseif v == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) \
else table.insert(lost, i) end end \
return lost";
/// Deletes `KEYS[1]` if it still names node `ARGV[1]`.
const RELEASE: &[u8] = b"if redis.call('GET', KEYS[1]) == ARGV[1] then \
return redis.call('DEL', KEYS[1]) end return 0";

/// What the router must hear from the bus after a turn.
#[derive(Debug, Default)]
pub struct BusNews {
    /// Batches other nodes sent this one (each: records one after another).
    pub batches: Vec<Vec<u8>>,
    /// Records the bus could not deliver, by the request number their sender waits on.
    pub failures: Vec<(u64, BusFailure)>,
    /// Sessions made here whose ID another node holds.
    pub lost_claims: Vec<Id>,
}

impl BusNews {
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.failures.is_empty() && self.lost_claims.is_empty()
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
}

/// Records for one node, in order, and the request numbers among them.
#[derive(Default)]
struct Batch {
    text: Vec<u8>,
    rids: Vec<u64>,
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
    parked: FastMap<Id, Parked>,
    parked_bytes: usize,
    /// Batches being made this turn, by node, in the order the nodes were first named.
    batches: Vec<(Rc<str>, Batch)>,
    /// Sessions held here, whose directory entries are renewed.
    local: FastSet<Id>,
    /// Sessions made while the link was down, or whose claim went unanswered: claimed when up.
    unclaimed: FastSet<Id>,
    next_refresh: Instant,
    news: BusNews,
    events: Vec<LinkEvent>,
    counters: BusCounters,
}

impl ClusterBus {
    /// A bus for the node called `name` over these two links (a commands link and a
    /// subscriber to `channel(name)`); nothing connects until the first [`ClusterBus::drive`].
    pub fn new(name: &str, commands: RedisLink, subscriber: RedisLink) -> ClusterBus {
        ClusterBus {
            name: Rc::from(name),
            commands,
            subscriber,
            sent: VecDeque::new(),
            cache: FastMap::default(),
            parked: FastMap::default(),
            parked_bytes: 0,
            batches: Vec::new(),
            local: FastSet::default(),
            unclaimed: FastSet::default(),
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
                self.local.insert(id);
                if self.is_up() {
                    self.claim(id);
                } else {
                    self.unclaimed.insert(id);
                }
            }
            BusOutput::Release(id) => {
                self.local.remove(&id);
                self.unclaimed.remove(&id);
                let key = directory_key(id);
                if self
                    .commands
                    .command(&[b"EVAL", RELEASE, b"1", &key, self.name.as_bytes()])
                    .is_ok()
                {
                    self.sent.push_back(Sent::Release);
                }
            }
            BusOutput::Record { to, rid, text } => self.send_record(to, rid, text),
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
        if !batch.text.is_empty() && batch.text.len() + text.len() > MAX_BATCH_BYTES {
            let full = std::mem::take(batch);
            let node = node.clone();
            self.publish(&node, full);
            return self.batch_for(node, rid, text);
        }
        batch.text.extend_from_slice(text.as_bytes());
        batch.text.push(b'\n');
        batch.rids.extend(rid);
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
                    let pending: Vec<Id> = self.unclaimed.drain().collect();
                    for id in pending {
                        if self.local.contains(&id) {
                            self.claim(id);
                        }
                    }
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
        }
        std::mem::take(&mut self.news)
    }

    /// Publishes this turn's batches and writes what the links hold.
    pub fn flush(&mut self, registry: &Registry) {
        for (node, batch) in std::mem::take(&mut self.batches) {
            if !batch.text.is_empty() {
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
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn renew_all(&mut self) {
        if self.commands.state() != LinkState::Ready {
            return;
        }
        let ids: Vec<Id> = self.local.iter().copied().collect();
        let ttl = DIRECTORY_TTL.as_millis().to_string();
        for chunk in ids.chunks(REFRESH_CHUNK) {
            let keys: Vec<Vec<u8>> = chunk.iter().map(|id| directory_key(*id)).collect();
            let count = keys.len().to_string();
            let mut args: Vec<&[u8]> = vec![b"EVAL", RENEW, count.as_bytes()];
            args.extend(keys.iter().map(Vec::as_slice));
            args.push(self.name.as_bytes());
            args.push(ttl.as_bytes());
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
                Reply::Integer(1) => {}
                Reply::Integer(_) => {
                    if self.local.remove(&id) {
                        self.news.lost_claims.push(id);
                    }
                }
                _ => {
                    log::warn!(
                        "cluster: Redis refused a directory claim; retried when the link is back"
                    );
                    self.unclaimed.insert(id);
                }
            },
            Sent::Renew(ids) => {
                if let Reply::Array(Some(lost)) = reply {
                    for index in lost {
                        let Reply::Integer(index) = index else {
                            continue;
                        };
                        let Some(id) = usize::try_from(index - 1).ok().and_then(|i| ids.get(i))
                        else {
                            continue;
                        };
                        if self.local.remove(id) {
                            self.news.lost_claims.push(*id);
                        }
                    }
                }
            }
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
                        for (rid, _) in parked.records {
                            self.fail(rid, BusFailure::NoSuchSession);
                        }
                    }
                    _ => {
                        for (rid, _) in parked.records {
                            self.fail(rid, BusFailure::Unavailable);
                        }
                    }
                }
            }
            Sent::Publish { rids } => {
                if !matches!(reply, Reply::Integer(n) if n > 0) {
                    // Nobody heard it: the node is gone or not subscribed right now.
                    for rid in rids {
                        self.fail(Some(rid), BusFailure::Unavailable);
                    }
                }
            }
        }
    }

    /// The commands link went down: what it sent will never be answered.
    fn commands_down(&mut self) {
        log::warn!(
            "cluster: the commands link to Redis is down; cross-node requests fail until it is back"
        );
        for sent in std::mem::take(&mut self.sent) {
            match sent {
                Sent::Claim(id) => {
                    self.unclaimed.insert(id);
                }
                Sent::Renew(_) | Sent::Release => {}
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
        // Every session here is claimed again once the link is back.
        self.unclaimed.extend(self.local.iter().copied());
        self.cache.clear();
    }
}

/// The directory key of session `id`.
fn directory_key(id: Id) -> Vec<u8> {
    format!("secchat:id:{}", id.text().as_str()).into_bytes()
}

/// The records of a batch another node published, in order. A batch that is not UTF-8, or a
/// record that does not parse, ends it there (the rest of a damaged batch is not guessed at).
pub fn records(batch: &[u8]) -> impl Iterator<Item = &str> {
    let text = std::str::from_utf8(batch).unwrap_or_default();
    serde_json::Deserializer::from_str(text)
        .into_iter::<&serde_json::value::RawValue>()
        .map_while(Result::ok)
        .map(serde_json::value::RawValue::get)
}
