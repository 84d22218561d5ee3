//! The pure routing core: sessions, friendships, pending requests, resume queues, rate limits.
//!
//! It owns no socket, reads no clock and draws no randomness of its own: the event loop hands it
//! decoded events, the current time ([`Now`]) and an [`Entropy`] source, and it hands what must be
//! sent or closed to a [`FrameSink`]: the loop's outboxes, or a [`Recorder`] in unit tests,
//! property tests and fuzzing, which drive it directly. The sink is also what the router asks
//! how many bytes each connection has not sent yet ([`FrameSink::backlog`]): the router keeps no
//! count of its own.
//!
//! # The MESSAGE path
//! Decoding borrows from the frame ([`crate::protocol`]); then one lookup for the connection, one
//! for the sender's session (friendship check, rate limit), one for the recipient's session, and
//! the sink's for the recipient's connection (its backlog, then the write). The forwarded frame and the ACK are
//! [`ServerFrame`]s that borrow the payload and the `ref` from the received text: the sink writes
//! them where they go, so the payload is copied once and the router allocates nothing (a
//! `String` only when the recipient's session waits to resume and the frame must be queued).
//! Nothing depends on the number of sessions.
//!
//! # Memory bounds
//! - Per connection ([`Conn`]): a few words, plus the error window (at most 101 timestamps, only
//!   after the first ERROR; `limits.rs`). A MESSAGE, FRIEND_REQUEST or FRIEND_ACCEPT to a
//!   connection whose sink backlog is over `max_unsent_bytes` is refused with `peer_busy`,
//!   so a peer can push at most
//!   `max_unsent_bytes` + one frame into a connection that does not read (over TLS, plus what
//!   `tls.rs` lets rustls hold). Frames a connection causes itself (replies) and small control
//!   frames are bounded by its outbox ceiling.
//! - Per session ([`Session`]): `friends` and `pending_in` name distinct live sessions (fewer than
//!   `max_sessions`); `pending_out` holds at most `max_pending_requests` (beyond: `rate_limited`).
//! - Resume queue: capped frames (MESSAGE, FRIEND_REQUEST, FRIEND_ACCEPT) enter only while the
//!   queue holds at most `max_queue_bytes` and `max_queue_len` frames. Control frames are always
//!   queued, each bounded by other bounded state: a FRIEND_DECLINE answers one of the session's
//!   own pending requests (≤ `max_pending_requests`, and an absent session makes no new ones); a
//!   FRIEND_REMOVE or DISCONNECT ends one friendship, and friendships made while away need one of
//!   those pending requests, so these are ≤ friends + `max_pending_requests`; an UNDELIVERED
//!   reports one of the session's own messages that sat in another session's (capped) queue.
//! - Timers: at most `2 × sessions in the window + 32` heap entries (`timers.rs`).
//! - Per client address: live sessions per address block (three blocks per session at most,
//!   dropped with the session), and two tables of rate buckets (new sessions, friend requests)
//!   holding only blocks active within the last minute, at most
//!   [`crate::address::BlockRates::MAX_BLOCKS`] each.
//! - Per session that received friend requests in the last minute: one (address block, time)
//!   pair per request, at most `rate_incoming_requests_per_min`, dropped as they age past a
//!   minute.
//! - FRIEND_CANCEL frames queued for a session in its window: one per pending request it held,
//!   and requests reach it at most `rate_incoming_requests_per_min` a minute (or, unlimited,
//!   each one took a capped queue place first).
//! - All of it together: every connection's backlog ([`FrameSink::total_backlog`]) plus every
//!   resume queue. While that
//!   is over `max_buffered_bytes`, the two per-recipient caps above shrink to a sixteenth
//!   ([`BUDGET_SQUEEZE`]): enough connections that stop reading (from enough addresses) would
//!   otherwise hold `max_unsent_bytes` each until the process runs out of memory. Only recipients
//!   that are behind are refused: one that keeps up (its output leaves at every flush) still
//!   gets everything, so filling the budget does not stop anyone else's conversations. Refusing
//!   everyone instead would hand a few non-reading connections a switch that stops the server.

pub(crate) mod fasthash;
mod invariants;
mod limits;
mod session;
mod sink;
mod timers;

#[cfg(test)]
mod tests;

use crate::address::{Block, BlockCounts, BlockRates, ClientAddr};
use crate::id::{Id, ResumeToken, TOKEN_BYTES, TOKEN_LEN};
use crate::protocol::{
    self, ErrorCode, FriendKeyFrame, InviteProof, RawJson, Request, Resume, ServerFrame,
};
use fasthash::FastMap;
use limits::{ErrorWindow, TokenBucket};
use session::{QueuedFrame, QueuedKind, Session};
pub use sink::{Action, Backlogs, FrameSink, Recorder};
use timers::{Deadline, ResumeTimers};

/// The event loop's handle for one WebSocket connection. Never reused within a process.
pub type ConnId = u64;

/// The current time, read once per loop iteration by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (any origin): deadlines, rate limits, the error window.
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch: the `ts` of forwarded messages.
    pub unix_ms: u64,
}

/// Where session IDs and resume tokens come from: the OS CSPRNG in the server, a seeded
/// generator in tests.
pub trait Entropy {
    fn fill(&mut self, buf: &mut [u8]);
}

/// A deterministic [`Entropy`] (splitmix64) for tests, benchmarks and fuzzing, where IDs and
/// tokens must be reproducible from a seed. Never for a server: it is predictable by design.
#[derive(Clone, Debug)]
pub struct SeededEntropy(pub u64);

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            // splitmix64: every seed, zero included, gives a full-period stream.
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *byte = (z ^ (z >> 31)) as u8;
        }
    }
}

/// Limits of the routing core. See `docs/PROTOCOL.md` for what each means on the wire.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Sessions at once (connected or in the resume window); `CONNECT` beyond it is `server_full`.
    pub max_sessions: usize,
    /// Length of the resume window; 0 turns resuming off.
    pub resume_grace_ms: u64,
    /// MESSAGEs per second per session (token bucket, burst = rate); 0 = unlimited.
    pub rate_messages_per_sec: u32,
    /// FRIEND_REQUESTs per minute per session (token bucket, burst = rate); 0 = unlimited.
    pub rate_friend_requests_per_min: u32,
    /// Largest client message, reported to clients in the CONNECT reply's `limits`.
    pub max_message_bytes: usize,
    /// A connected recipient with more bytes than this not yet on its socket is `peer_busy`.
    pub max_unsent_bytes: usize,
    /// A recipient in its resume window whose queue holds more bytes than this is `peer_busy`.
    pub max_queue_bytes: usize,
    /// ... or more frames than this.
    pub max_queue_len: usize,
    /// Unsent bytes of all connections plus all resume queues together, past which the two caps
    /// above shrink to a sixteenth (see the module docs).
    pub max_buffered_bytes: usize,
    /// Outgoing friend requests one session may have pending at once (beyond: `rate_limited`).
    pub max_pending_requests: usize,
    /// Sessions (connected or in their resume window) created from one client address (an IPv4
    /// address or an IPv6 /64; its /56 and /48 hold [`crate::address::BLOCK_SHARES`] times as
    /// many); beyond it a new session is refused like a full server. 0 = unlimited. Without it,
    /// one address could fill the server by connecting and dropping: sessions outlive their
    /// sockets.
    pub max_sessions_per_peer: u32,
    /// New sessions per minute created from one client address (burst the same; nested blocks
    /// as above). 0 = unlimited. Bounds churn: sessions that connect, act and leave at once.
    pub rate_sessions_per_address_per_min: u32,
    /// FRIEND_REQUESTs per minute from one client address across all its sessions (burst the
    /// same; nested blocks). 0 = unlimited. Without it, a new session per request would bypass
    /// the per-session rate.
    pub rate_friend_requests_per_address_per_min: u32,
    /// Largest `public_key` in FRIEND_REQUEST and FRIEND_ACCEPT: the JSON string as received,
    /// without its quotes (beyond: `key_too_large`).
    pub max_public_key_bytes: usize,
    /// Pending friend requests one session may have received at once (beyond:
    /// `too_many_requests` to the sender).
    pub max_pending_incoming: usize,
    /// ... of which at most this many from sessions created by one address (an IPv4 address or
    /// an IPv6 /48), so one address cannot take all of them.
    pub max_pending_incoming_per_address: usize,
    /// FRIEND_REQUESTs one session may receive within a minute. 0 = unlimited.
    pub rate_incoming_requests_per_min: u32,
    /// ... of which at most this many from sessions created by one address (IPv4 address or
    /// IPv6 /48), so a few addresses cannot spend the whole minute's budget.
    pub rate_incoming_requests_per_address_per_min: u32,
}

impl RouterConfig {
    /// Defaults matching PROTOCOL.md §7 and docs/PROTOCOL.md.
    pub fn defaults() -> Self {
        RouterConfig {
            max_sessions: 10_000,
            resume_grace_ms: 30_000,
            rate_messages_per_sec: 50,
            rate_friend_requests_per_min: 20,
            max_message_bytes: 65_536,
            max_unsent_bytes: 256 * 1024,
            max_queue_bytes: 256 * 1024,
            max_queue_len: 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            max_pending_requests: 256,
            max_sessions_per_peer: 0,
            rate_sessions_per_address_per_min: 0,
            rate_friend_requests_per_address_per_min: 0,
            max_public_key_bytes: 16 * 1024,
            max_pending_incoming: 32,
            max_pending_incoming_per_address: 8,
            rate_incoming_requests_per_min: 120,
            rate_incoming_requests_per_address_per_min: 10,
        }
    }
}

/// Counters for logs and metrics. Never an ID, key or payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub connections: usize,
    pub sessions: usize,
    pub sessions_resuming: usize,
    pub queued_frames: usize,
    pub queued_bytes: usize,
    pub messages_routed: u64,
    /// ERRORs sent, indexed like [`ErrorCode::ALL`].
    pub errors_sent: [u64; ErrorCode::ALL.len()],
}

/// Close codes the router asks for (PROTOCOL.md §5).
pub mod close_code {
    pub const DISCONNECT: u16 = 1000;
    pub const POLICY: u16 = 1008;
    pub const SERVER_FULL: u16 = 1013;
    pub const TAKEN_OVER: u16 = 4001;
}

/// While all output together is over `max_buffered_bytes`, the per-recipient caps are divided
/// by this (16 KiB of unsent output and of resume queue with the defaults).
const BUDGET_SQUEEZE: usize = 16;

/// A FRIEND_REQUEST may fill only this fraction of a recipient's caps (unsent bytes, resume
/// queue): the rest stays for its friends' messages, whoever sends requests.
const REQUEST_ROOM_SHARE: usize = 4;

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60_000;

/// What the router knows about one open WebSocket connection.
#[derive(Debug)]
struct Conn {
    session: Option<Id>,
    peer: ClientAddr,
    errors: ErrorWindow,
}

/// The client request being handled: who sent it, on which connection, with which `ref`.
#[derive(Clone, Copy)]
struct Caller<'r> {
    id: Id,
    conn: ConnId,
    reference: Option<&'r str>,
}

/// The routing core. One per server; driven by one thread (see the module docs).
///
/// Events for a connection the router does not know (never opened, or already closed by an
/// [`FrameSink::close`]) are ignored.
pub struct Router<E: Entropy> {
    config: RouterConfig,
    entropy: E,
    conns: FastMap<ConnId, Conn>,
    sessions: FastMap<Id, Session>,
    /// Live sessions per block of the creating client's address (nothing while
    /// `max_sessions_per_peer` is 0).
    sessions_per_peer: BlockCounts,
    /// New sessions per address block over time.
    session_starts: BlockRates,
    /// Friend requests per address block over time.
    requests_per_address: BlockRates,
    timers: ResumeTimers,
    sessions_resuming: usize,
    queued_frames: usize,
    queued_bytes: usize,
    messages_routed: u64,
    /// FRIEND_REQUESTs forwarded so far: the arrival number of each pending request.
    requests_forwarded: u64,
    errors_sent: [u64; ErrorCode::ALL.len()],
}

impl<E: Entropy> Router<E> {
    pub fn new(config: RouterConfig, entropy: E) -> Self {
        Router {
            sessions_per_peer: BlockCounts::new(config.max_sessions_per_peer),
            session_starts: BlockRates::new(
                config.rate_sessions_per_address_per_min,
                MS_PER_MINUTE,
            ),
            requests_per_address: BlockRates::new(
                config.rate_friend_requests_per_address_per_min,
                MS_PER_MINUTE,
            ),
            config,
            entropy,
            conns: FastMap::default(),
            sessions: FastMap::default(),
            timers: ResumeTimers::default(),
            sessions_resuming: 0,
            queued_frames: 0,
            queued_bytes: 0,
            messages_routed: 0,
            requests_forwarded: 0,
            errors_sent: [0; ErrorCode::ALL.len()],
        }
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// A WebSocket connection finished its handshake.
    pub fn open(&mut self, conn: ConnId, now: Now) {
        self.open_from(conn, ClientAddr::UNSPECIFIED, now);
    }

    /// Like [`Router::open`], for a connection from the client at `peer` (see
    /// [`RouterConfig::max_sessions_per_peer`]).
    pub fn open_from(&mut self, conn: ConnId, peer: ClientAddr, now: Now) {
        let _ = now;
        self.conns
            .entry(conn)
            .or_insert_with(|| Conn {
                session: None,
                peer,
                errors: ErrorWindow::default(),
            })
            .peer = peer;
    }

    /// A complete text message arrived on `conn`.
    pub fn text(&mut self, conn: ConnId, text: &str, now: Now, out: &mut impl FrameSink) {
        let Some(state) = self.conns.get(&conn) else {
            return;
        };
        let session = state.session;
        let frame = match protocol::decode(text) {
            Ok(frame) => frame,
            Err(rejected) => {
                let reference = rejected.reference.map(RawJson::get);
                self.refuse(conn, rejected.code, reference, now, out);
                return;
            }
        };
        let reference = frame.reference.map(RawJson::get);
        let outcome = match (frame.request, session) {
            (Request::Ping, _) => {
                out.send(conn, ServerFrame::Encoded(&protocol::pong(reference)));
                Ok(())
            }
            (Request::Connect { resume, version }, None) => {
                self.connect(conn, resume, version, reference, now, out)
            }
            (Request::Connect { .. }, Some(_)) => Err(ErrorCode::AlreadyConnected),
            (_, None) => Err(ErrorCode::NotConnected),
            (request, Some(id)) => {
                let caller = Caller {
                    id,
                    conn,
                    reference,
                };
                self.request(caller, request, now, out)
            }
        };
        if let Err(code) = outcome {
            self.refuse(conn, code, reference, now, out);
        }
    }

    /// A complete binary message arrived on `conn` (always `bad_json`).
    pub fn binary(&mut self, conn: ConnId, now: Now, out: &mut impl FrameSink) {
        if self.conns.contains_key(&conn) {
            self.refuse(conn, ErrorCode::BadJson, None, now, out);
        }
    }

    /// `conn` is gone without DISCONNECT (dropped, idle, protocol error): its session, if any,
    /// enters the resume window. A no-op for a connection the router does not know.
    pub fn closed(&mut self, conn: ConnId, now: Now, out: &mut impl FrameSink) {
        let Some(state) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(id) = state.session {
            self.session_dropped(id, now, out);
        }
    }

    /// Expire resume windows whose deadline passed.
    pub fn tick(&mut self, now: Now, out: &mut impl FrameSink) {
        while let Some(deadline) = self.timers.pop_due(now.mono_ms) {
            if timer_is_live(&self.sessions, &deadline) {
                self.end_session(deadline.id, out);
            }
        }
        self.drop_stale_timers();
    }

    /// The earliest monotonic deadline [`Router::tick`] must run at, if any.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.timers.earliest().map(|deadline| deadline.at_ms)
    }

    /// Whether `conn` has a session (sent a successful CONNECT).
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|state| state.session.is_some())
    }

    pub fn stats(&self) -> RouterStats {
        RouterStats {
            connections: self.conns.len(),
            sessions: self.sessions.len(),
            sessions_resuming: self.sessions_resuming,
            queued_frames: self.queued_frames,
            queued_bytes: self.queued_bytes,
            messages_routed: self.messages_routed,
            errors_sent: self.errors_sent,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Requests
    // -----------------------------------------------------------------------------------------

    fn request(
        &mut self,
        caller: Caller<'_>,
        request: Request<'_>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        match request {
            Request::Message { to, payload } => {
                self.message(caller, to.ok_or(ErrorCode::BadId)?, payload, now, out)
            }
            Request::FriendRequest {
                to,
                public_key,
                invite,
            } => {
                let key = FriendRequestKey { public_key, invite };
                self.friend_request(caller, to.ok_or(ErrorCode::BadId)?, key, now, out)
            }
            Request::FriendAccept { to, public_key } => {
                self.friend_accept(caller, to.ok_or(ErrorCode::BadId)?, public_key, out)
            }
            Request::FriendDecline { to } => {
                self.friend_decline(caller, to.ok_or(ErrorCode::BadId)?, out)
            }
            Request::FriendRemove { to } => {
                self.friend_remove(caller, to.ok_or(ErrorCode::BadId)?, out)
            }
            Request::Disconnect => {
                self.disconnect(caller, out);
                Ok(())
            }
            Request::Unknown => Err(ErrorCode::UnknownType),
            // `text` answers these itself, before a session is required.
            Request::Ping | Request::Connect { .. } => Ok(()),
        }
    }

    /// The hot path: see the module docs.
    fn message(
        &mut self,
        caller: Caller<'_>,
        to: Id,
        payload: Option<RawJson<'_>>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let payload = payload.ok_or(ErrorCode::NotEncrypted)?;
        let rate = self.config.rate_messages_per_sec;
        let sender = self
            .sessions
            .get_mut(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        if !sender.friends.contains(&to) {
            return Err(ErrorCode::NotFriends);
        }
        if !sender
            .message_rate
            .try_take(rate, MS_PER_SECOND, now.mono_ms)
        {
            return Err(ErrorCode::RateLimited);
        }
        let (max_unsent, max_queue_bytes) = self.recipient_caps(out);
        // Friendships only name live sessions, so the recipient exists.
        let recipient = self.sessions.get_mut(&to).ok_or(ErrorCode::NotFriends)?;
        let queued = match recipient.conn {
            Some(recipient_conn) => {
                if out.backlog(recipient_conn) > max_unsent {
                    return Err(ErrorCode::PeerBusy);
                }
                let frame = ServerFrame::Message {
                    from: caller.id,
                    payload,
                    ts: now.unix_ms,
                };
                out.send(recipient_conn, frame);
                false
            }
            None => {
                if recipient
                    .queue
                    .is_over(max_queue_bytes, self.config.max_queue_len)
                {
                    return Err(ErrorCode::PeerBusy);
                }
                let frame = ServerFrame::Message {
                    from: caller.id,
                    payload,
                    ts: now.unix_ms,
                }
                .to_text();
                let kind = QueuedKind::Message {
                    sender: caller.id,
                    reference: caller.reference.map(Box::from),
                };
                self.queued_bytes += recipient.queue.push(QueuedFrame { frame, kind });
                self.queued_frames += 1;
                true
            }
        };
        self.messages_routed += 1;
        self.ack(caller, queued, out);
        Ok(())
    }

    fn friend_request(
        &mut self,
        caller: Caller<'_>,
        to: Id,
        key: FriendRequestKey<'_>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        if to == caller.id {
            return Err(ErrorCode::SelfRequest);
        }
        if !self.sessions.contains_key(&to) {
            return Err(ErrorCode::UnknownPeer);
        }
        let rate = self.config.rate_friend_requests_per_min;
        let max_pending = self.config.max_pending_requests;
        let max_key = self.config.max_public_key_bytes;
        let sender = self
            .sessions
            .get_mut(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        if sender.friends.contains(&to) {
            return Err(ErrorCode::AlreadyFriends);
        }
        let public_key = checked_key(key.public_key, max_key)?;
        let invite = match key.invite {
            InviteProof::Absent => None,
            InviteProof::Valid(raw) => Some(raw),
            InviteProof::Invalid => return Err(ErrorCode::BadInvite),
        };
        let repeated = sender.pending_out.contains(&to);
        if !repeated && sender.pending_out.len() >= max_pending {
            return Err(ErrorCode::RateLimited);
        }
        if !sender
            .request_rate
            .try_take(rate, MS_PER_MINUTE, now.mono_ms)
        {
            return Err(ErrorCode::RateLimited);
        }
        if repeated {
            // Already forwarded once; the target has it (or has it queued).
            self.ack(caller, false, out);
            return Ok(());
        }
        let address = self
            .conns
            .get(&caller.conn)
            .map_or(ClientAddr::UNSPECIFIED, |state| state.peer);
        if !self.requests_per_address.try_take(address, now.mono_ms) {
            return Err(ErrorCode::RateLimited);
        }
        self.check_room_for_request(caller.id, to, now, out)?;
        if self.is_busy(to, REQUEST_ROOM_SHARE, out) {
            return Err(ErrorCode::PeerBusy);
        }
        if let Some(sender) = self.sessions.get_mut(&caller.id) {
            sender.pending_out.insert(to);
        }
        let mut target_version = 1;
        if let Some(target) = self.sessions.get_mut(&to) {
            self.requests_forwarded += 1;
            target.pending_in.insert(caller.id, self.requests_forwarded);
            target_version = target.version;
        }
        let frame = ServerFrame::FriendKey {
            kind: FriendKeyFrame::Request,
            from: caller.id,
            public_key,
            // A version-1 client knows no such field.
            invite: invite.filter(|_| target_version >= 2),
        };
        let queued = self.deliver(to, frame, QueuedKind::Capped, out);
        self.ack(caller, queued, out);
        Ok(())
    }

    /// What one recipient may be sent (see the module docs): `too_many_requests` when the
    /// sender's address already has `max_pending_incoming_per_address` requests pending there,
    /// or sent `rate_incoming_requests_per_address_per_min` in the last minute, or the recipient
    /// received `rate_incoming_requests_per_min`. When the recipient holds
    /// `max_pending_incoming` requests, the oldest of the address with the most is withdrawn to
    /// make room, if that address has at least two more than the sender's: so that a few
    /// addresses cannot fill the list and keep everyone else out.
    fn check_room_for_request(
        &mut self,
        from: Id,
        to: Id,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let sender_block = self
            .sessions
            .get(&from)
            .map_or(ClientAddr::UNSPECIFIED, |sender| sender.peer)
            .largest_block();
        let target = self.sessions.get(&to).ok_or(ErrorCode::UnknownPeer)?;
        // Per block: how many pending, and the oldest of them.
        let mut pending_by_block: Vec<(Block, usize, u64, Id)> = Vec::new();
        for (requester, &arrival) in &target.pending_in {
            let block = self
                .sessions
                .get(requester)
                .map_or(ClientAddr::UNSPECIFIED, |session| session.peer)
                .largest_block();
            match pending_by_block.iter_mut().find(|entry| entry.0 == block) {
                Some(entry) => {
                    entry.1 += 1;
                    if arrival < entry.2 {
                        (entry.2, entry.3) = (arrival, *requester);
                    }
                }
                None => pending_by_block.push((block, 1, arrival, *requester)),
            }
        }
        let from_sender_block = pending_by_block
            .iter()
            .find(|entry| entry.0 == sender_block)
            .map_or(0, |entry| entry.1);
        if from_sender_block >= self.config.max_pending_incoming_per_address {
            return Err(ErrorCode::TooManyRequests);
        }
        let full = target.pending_in.len() >= self.config.max_pending_incoming;
        let evict = match pending_by_block
            .iter()
            .max_by_key(|entry| (entry.1, std::cmp::Reverse(entry.2)))
        {
            Some(&(_, most, _, oldest)) if full && most >= from_sender_block + 2 => Some(oldest),
            _ if full => return Err(ErrorCode::TooManyRequests),
            _ => None,
        };
        let (total_rate, block_rate) = (
            self.config.rate_incoming_requests_per_min as usize,
            self.config.rate_incoming_requests_per_address_per_min as usize,
        );
        let target = self.sessions.get_mut(&to).ok_or(ErrorCode::UnknownPeer)?;
        if total_rate != 0 {
            let recent = &mut target.recent_requests;
            while recent
                .front()
                .is_some_and(|&(_, at)| now.mono_ms.saturating_sub(at) >= MS_PER_MINUTE)
            {
                recent.pop_front();
            }
            if recent.is_empty() {
                // A deque keeps its capacity: give back what a past flood made it hold.
                *recent = Default::default();
            }
            let from_block = recent.iter().filter(|(block, _)| *block == sender_block);
            if recent.len() >= total_rate || (block_rate != 0 && from_block.count() >= block_rate) {
                return Err(ErrorCode::TooManyRequests);
            }
            recent.push_back((sender_block, now.mono_ms));
        }
        if let Some(oldest) = evict {
            self.withdraw_request(oldest, to, out);
        }
        Ok(())
    }

    /// Removes the pending request of `requester` to `target`; a version-2 target is told. The
    /// requester is not: its request simply never gets an answer, as when the target leaves.
    fn withdraw_request(&mut self, requester: Id, target: Id, out: &mut impl FrameSink) {
        if let Some(session) = self.sessions.get_mut(&requester) {
            session.pending_out.remove(&target);
        }
        let Some(target_session) = self.sessions.get_mut(&target) else {
            return;
        };
        target_session.pending_in.remove(&requester);
        if target_session.version >= 2 {
            self.deliver(
                target,
                ServerFrame::Encoded(&protocol::friend_cancel(requester)),
                QueuedKind::Cancel,
                out,
            );
        }
    }

    fn friend_accept(
        &mut self,
        caller: Caller<'_>,
        to: Id,
        public_key: Option<RawJson<'_>>,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let accepter = self
            .sessions
            .get(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        if !accepter.pending_in.contains_key(&to) {
            return Err(ErrorCode::NoPendingRequest);
        }
        let public_key = checked_key(public_key, self.config.max_public_key_bytes)?;
        if self.is_busy(to, 1, out) {
            return Err(ErrorCode::PeerBusy);
        }
        self.befriend(caller.id, to);
        let frame = ServerFrame::FriendKey {
            kind: FriendKeyFrame::Accept,
            from: caller.id,
            public_key,
            invite: None,
        };
        let queued = self.deliver(to, frame, QueuedKind::Capped, out);
        self.ack(caller, queued, out);
        Ok(())
    }

    fn friend_decline(
        &mut self,
        caller: Caller<'_>,
        to: Id,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let decliner = self
            .sessions
            .get_mut(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        if decliner.pending_in.remove(&to).is_none() {
            return Err(ErrorCode::NoPendingRequest);
        }
        if let Some(requester) = self.sessions.get_mut(&to) {
            requester.pending_out.remove(&caller.id);
        }
        let queued = self.deliver(
            to,
            ServerFrame::Encoded(&protocol::friend_decline(caller.id)),
            QueuedKind::Control,
            out,
        );
        self.ack(caller, queued, out);
        Ok(())
    }

    fn friend_remove(
        &mut self,
        caller: Caller<'_>,
        to: Id,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let remover = self
            .sessions
            .get_mut(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        if !remover.friends.remove(&to) {
            return Err(ErrorCode::NotFriends);
        }
        if let Some(former) = self.sessions.get_mut(&to) {
            former.friends.remove(&caller.id);
        }
        let queued = self.deliver(
            to,
            ServerFrame::Encoded(&protocol::friend_remove(caller.id)),
            QueuedKind::Control,
            out,
        );
        self.ack(caller, queued, out);
        Ok(())
    }

    fn disconnect(&mut self, caller: Caller<'_>, out: &mut impl FrameSink) {
        self.ack(caller, false, out);
        self.conns.remove(&caller.conn);
        self.end_session(caller.id, out);
        out.close(caller.conn, close_code::DISCONNECT, "disconnected");
    }

    // -----------------------------------------------------------------------------------------
    // CONNECT and the session lifecycle
    // -----------------------------------------------------------------------------------------

    fn connect(
        &mut self,
        conn: ConnId,
        resume: Option<Resume>,
        version: u8,
        reference: Option<&str>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        if let Some(resume) = resume {
            let id = resume.id.ok_or(ErrorCode::BadId)?;
            if self.resume_matches(id, resume.token.as_ref()) {
                self.resume(conn, id, version, out);
                return Ok(());
            }
        }
        let peer = self
            .conns
            .get(&conn)
            .map_or(ClientAddr::UNSPECIFIED, |state| state.peer);
        // The rate is checked last: a CONNECT refused for another reason costs no token.
        if self.sessions.len() >= self.config.max_sessions
            || !self.sessions_per_peer.try_acquire(peer)
            || !self.start_allowed(peer, now)
        {
            self.count_error(ErrorCode::ServerFull);
            let refusal = protocol::error(ErrorCode::ServerFull, reference);
            out.send(conn, ServerFrame::Encoded(&refusal));
            self.conns.remove(&conn);
            out.close(conn, close_code::SERVER_FULL, "server full");
            return Ok(());
        }
        let id = self.fresh_id();
        let token = self.fresh_token();
        let session = Session {
            token,
            peer,
            conn: Some(conn),
            version,
            timer_generation: 0,
            friends: Default::default(),
            pending_out: Default::default(),
            pending_in: Default::default(),
            queue: Default::default(),
            message_rate: TokenBucket::full(
                self.config.rate_messages_per_sec,
                MS_PER_SECOND,
                now.mono_ms,
            ),
            request_rate: TokenBucket::full(
                self.config.rate_friend_requests_per_min,
                MS_PER_MINUTE,
                now.mono_ms,
            ),
            recent_requests: Default::default(),
        };
        self.sessions.insert(id, session);
        if let Some(state) = self.conns.get_mut(&conn) {
            state.session = Some(id);
        }
        let reply = protocol::connect_reply(
            id,
            &token,
            false,
            std::iter::empty(),
            self.config.max_message_bytes,
            version,
        );
        out.send(conn, ServerFrame::Encoded(&reply));
        Ok(())
    }

    fn resume_matches(&self, id: Id, token: Option<&[u8; TOKEN_LEN]>) -> bool {
        if self.config.resume_grace_ms == 0 {
            return false;
        }
        match (self.sessions.get(&id), token) {
            (Some(session), Some(token)) => session.token.matches(token),
            _ => false,
        }
    }

    /// Hands session `id` to `conn`: new token, the reply, then everything queued, in order.
    fn resume(&mut self, conn: ConnId, id: Id, version: u8, out: &mut impl FrameSink) {
        let token = self.fresh_token();
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.token = token;
        // The resuming client may be newer (a reload): it speaks what its CONNECT said.
        session.version = version;
        session.timer_generation = 0;
        let previous_conn = session.conn.replace(conn);
        let queued = session.queue.take_all();
        match previous_conn {
            Some(old_conn) => {
                self.conns.remove(&old_conn);
                out.close(old_conn, close_code::TAKEN_OVER, "session taken over");
            }
            None => self.sessions_resuming -= 1,
        }
        if let Some(state) = self.conns.get_mut(&conn) {
            state.session = Some(id);
        }
        let reply = self.resume_reply(id, &token);
        out.send(conn, ServerFrame::Encoded(&reply));
        for entry in queued {
            self.queued_frames -= 1;
            self.queued_bytes -= entry.bytes();
            if entry.kind == QueuedKind::Cancel && version < 2 {
                continue;
            }
            out.send(conn, ServerFrame::Encoded(&entry.frame));
        }
        // A takeover never looked offline to friends, so it gets no PRESENCE.
        if previous_conn.is_none() {
            self.tell_friends_presence(id, true, out);
        }
        self.drop_stale_timers();
    }

    fn resume_reply(&self, id: Id, token: &ResumeToken) -> String {
        let is_online = |friend: &Id| self.sessions.get(friend).is_some_and(|f| f.conn.is_some());
        let session = self.sessions.get(&id);
        let friends: Vec<(Id, bool)> = session
            .map(|session| {
                session
                    .friends
                    .iter()
                    .map(|friend| (*friend, is_online(friend)))
                    .collect()
            })
            .unwrap_or_default();
        protocol::connect_reply(
            id,
            token,
            true,
            friends.iter().copied(),
            self.config.max_message_bytes,
            session.map_or(1, |session| session.version),
        )
    }

    /// The session lost its connection: open its resume window (or end it when there is none).
    fn session_dropped(&mut self, id: Id, now: Now, out: &mut impl FrameSink) {
        if self.config.resume_grace_ms == 0 {
            self.end_session(id, out);
            return;
        }
        let generation = self.timers.new_generation();
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.conn = None;
        session.timer_generation = generation;
        self.sessions_resuming += 1;
        self.timers.push(Deadline {
            at_ms: now.mono_ms.saturating_add(self.config.resume_grace_ms),
            generation,
            id,
        });
        if self.timers.needs_compaction(self.sessions_resuming) {
            let sessions = &self.sessions;
            self.timers
                .compact(|deadline| timer_is_live(sessions, deadline));
        }
        self.tell_friends_presence(id, false, out);
    }

    /// Sends PRESENCE to every connected friend; friends in their window miss it by design.
    fn tell_friends_presence(&mut self, id: Id, online: bool, out: &mut impl FrameSink) {
        let Some(session) = self.sessions.get(&id) else {
            return;
        };
        let presence = protocol::presence(id, online);
        for friend in &session.friends {
            let friend_conn = self.sessions.get(friend).and_then(|f| f.conn);
            if let Some(friend_conn) = friend_conn {
                out.send(friend_conn, ServerFrame::Encoded(&presence));
            }
        }
    }

    /// Ends session `id` (window expired, or DISCONNECT): see PROTOCOL.md §4.
    fn end_session(&mut self, id: Id, out: &mut impl FrameSink) {
        let Some(mut session) = self.sessions.remove(&id) else {
            return;
        };
        self.sessions_per_peer.release(session.peer);
        match session.conn {
            None => self.sessions_resuming -= 1,
            Some(conn) => {
                if let Some(state) = self.conns.get_mut(&conn) {
                    state.session = None;
                }
            }
        }
        for entry in session.queue.take_all() {
            self.queued_frames -= 1;
            self.queued_bytes -= entry.bytes();
            if let QueuedKind::Message {
                sender,
                reference: Some(reference),
            } = entry.kind
            {
                // A sender whose own session ended has no one left to tell.
                if self.sessions.contains_key(&sender) {
                    self.deliver(
                        sender,
                        ServerFrame::Encoded(&protocol::undelivered(id, &reference)),
                        QueuedKind::Control,
                        out,
                    );
                }
            }
        }
        for friend in session.friends {
            if let Some(friend_session) = self.sessions.get_mut(&friend) {
                friend_session.friends.remove(&id);
            }
            let farewell = protocol::disconnect(id);
            self.deliver(
                friend,
                ServerFrame::Encoded(&farewell),
                QueuedKind::Control,
                out,
            );
        }
        // A pending request the session made is gone: a version-2 target is told, so its card
        // goes away (version 1 defined no frame for it). The requester of a pending request the
        // session received is not told: its own request simply never gets an answer.
        for target in session.pending_out {
            let Some(target_session) = self.sessions.get_mut(&target) else {
                continue;
            };
            target_session.pending_in.remove(&id);
            if target_session.version >= 2 {
                self.deliver(
                    target,
                    ServerFrame::Encoded(&protocol::friend_cancel(id)),
                    QueuedKind::Cancel,
                    out,
                );
            }
        }
        for requester in session.pending_in.into_keys() {
            if let Some(requester_session) = self.sessions.get_mut(&requester) {
                requester_session.pending_out.remove(&id);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Helpers
    // -----------------------------------------------------------------------------------------

    /// Makes `a` and `b` friends and clears the pending requests in both directions.
    fn befriend(&mut self, a: Id, b: Id) {
        for (this, other) in [(a, b), (b, a)] {
            if let Some(session) = self.sessions.get_mut(&this) {
                session.pending_out.remove(&other);
                session.pending_in.remove(&other);
                session.friends.insert(other);
            }
        }
    }

    /// Whether a capped frame to `target` must be refused with `peer_busy`, with the
    /// recipient caps divided by `share` (1 for the full caps).
    fn is_busy(&self, target: Id, share: usize, out: &impl FrameSink) -> bool {
        let Some(session) = self.sessions.get(&target) else {
            return false;
        };
        let (max_unsent, max_queue_bytes) = self.recipient_caps(out);
        match session.conn {
            Some(conn) => out.backlog(conn) > max_unsent / share,
            None => session
                .queue
                .is_over(max_queue_bytes / share, self.config.max_queue_len / share),
        }
    }

    /// Whether `peer` may start a new session now (its address blocks' rates).
    fn start_allowed(&mut self, peer: ClientAddr, now: Now) -> bool {
        if self.session_starts.try_take(peer, now.mono_ms) {
            return true;
        }
        // The live count was taken just before; give it back.
        self.sessions_per_peer.release(peer);
        false
    }

    /// The caps on one recipient's unsent bytes and resume-queue bytes in force now: a sixteenth
    /// of the configured ones while the server as a whole holds more than `max_buffered_bytes`
    /// (see the module docs).
    fn recipient_caps(&self, out: &impl FrameSink) -> (usize, usize) {
        let (unsent, queue) = (self.config.max_unsent_bytes, self.config.max_queue_bytes);
        if out.total_backlog() + self.queued_bytes > self.config.max_buffered_bytes {
            (unsent / BUDGET_SQUEEZE, queue / BUDGET_SQUEEZE)
        } else {
            (unsent, queue)
        }
    }

    /// Sends `frame` to session `target`, or queues it when the session is in its window.
    /// Returns whether it was queued. A frame for a session that no longer exists is dropped.
    fn deliver(
        &mut self,
        target: Id,
        frame: ServerFrame<'_>,
        kind: QueuedKind,
        out: &mut impl FrameSink,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(&target) else {
            return false;
        };
        match session.conn {
            Some(conn) => {
                out.send(conn, frame);
                false
            }
            None => {
                let frame = frame.to_text();
                self.queued_bytes += session.queue.push(QueuedFrame { frame, kind });
                self.queued_frames += 1;
                true
            }
        }
    }

    fn ack(&mut self, caller: Caller<'_>, queued: bool, out: &mut impl FrameSink) {
        if let Some(reference) = caller.reference {
            out.send(caller.conn, ServerFrame::Ack { reference, queued });
        }
    }

    /// Answers with ERROR `code`; closes the connection (1008) on the error that floods.
    fn count_error(&mut self, code: ErrorCode) {
        if let Some(count) = self.errors_sent.get_mut(code as usize) {
            *count += 1;
        }
    }

    fn refuse(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        reference: Option<&str>,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        self.count_error(code);
        out.send(
            conn,
            ServerFrame::Encoded(&protocol::error(code, reference)),
        );
        if !code.counts_toward_flood() {
            return;
        }
        let flooded = self
            .conns
            .get_mut(&conn)
            .is_some_and(|state| state.errors.record(now.mono_ms));
        if !flooded {
            return;
        }
        out.close(conn, close_code::POLICY, "too many errors");
        // Like a dropped connection: the session may still be resumed from a well-behaved one.
        if let Some(state) = self.conns.remove(&conn)
            && let Some(id) = state.session
        {
            self.session_dropped(id, now, out);
        }
    }

    /// A new ID no live session has. Collisions are rare while sessions are far fewer than the
    /// 2^30 possible IDs, so the loop almost always runs once.
    fn fresh_id(&mut self) -> Id {
        loop {
            let mut bytes = [0u8; 4];
            self.entropy.fill(&mut bytes);
            let id = Id::from_random_bytes(bytes);
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    fn fresh_token(&mut self) -> ResumeToken {
        let mut bytes = [0u8; TOKEN_BYTES];
        self.entropy.fill(&mut bytes);
        ResumeToken::from_random_bytes(&bytes)
    }

    fn drop_stale_timers(&mut self) {
        let sessions = &self.sessions;
        self.timers
            .drop_stale_top(|deadline| timer_is_live(sessions, deadline));
    }
}

/// What a FRIEND_REQUEST carries besides its target, as decoded.
struct FriendRequestKey<'a> {
    public_key: Option<RawJson<'a>>,
    invite: InviteProof<'a>,
}

/// The `public_key` of FRIEND_REQUEST / FRIEND_ACCEPT: `bad_key` when absent or not armored,
/// `key_too_large` past `max_bytes`.
fn checked_key(
    public_key: Option<RawJson<'_>>,
    max_bytes: usize,
) -> Result<RawJson<'_>, ErrorCode> {
    let public_key = public_key.ok_or(ErrorCode::BadKey)?;
    // The raw value is the JSON string with its two quotes.
    if public_key.get().len().saturating_sub(2) > max_bytes {
        return Err(ErrorCode::KeyTooLarge);
    }
    Ok(public_key)
}

/// A timer entry is live while its session is still in the window it was made for.
fn timer_is_live(sessions: &FastMap<Id, Session>, deadline: &Deadline) -> bool {
    sessions.get(&deadline.id).is_some_and(|session| {
        session.conn.is_none() && session.timer_generation == deadline.generation
    })
}
