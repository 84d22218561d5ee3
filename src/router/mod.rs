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
//! A MESSAGE to a handle (version 2, `handle_messages.rs`) takes the same path with one lookup
//! in the handle table in place of the friendship check, made with the frame's 43 bytes as they
//! lie in the text (a handle someone listens on needs no check, so only a miss is checked); to a listener that is not connected it
//! becomes a letter in the mailbox, which allocates its frame text. Nothing depends on the number
//! of handles or letters. Nor do LISTENING and FETCH walk a session's handles: the handle table
//! keeps each session's count of waiting letters and its handles ranked by their oldest letter,
//! told of every change to the mailbox ([`handles::HandleTable::mail`]).
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
//!   `max_sessions`); `pending_out` holds at most `max_pending_requests` (beyond: `rate_limited`),
//!   counted with the requests still waiting for another node's answer in a cluster.
//! - Resume queue: capped frames (MESSAGE, FRIEND_REQUEST, FRIEND_ACCEPT) enter only while the
//!   queue holds at most `max_queue_bytes` and `max_queue_len` frames. Control frames are always
//!   queued, each bounded by other bounded state: a FRIEND_DECLINE answers one of the session's
//!   own pending requests (≤ `max_pending_requests`, and an absent session makes no new ones); a
//!   FRIEND_REMOVE or DISCONNECT ends one friendship, and friendships made while away need one of
//!   those pending requests, so these are ≤ friends + `max_pending_requests`; an UNDELIVERED
//!   reports one of the session's own messages that sat in another session's (capped) queue.
//! - Timers: at most `2 × sessions in the window + 32` heap entries (`timers.rs`).
//! - Per client address: live sessions per address block (three blocks per session at most,
//!   dropped with the session), and three tables of rate buckets (new sessions, friend requests,
//!   and in a cluster takeovers that failed) holding only blocks active within the last minute,
//!   at most [`crate::address::BlockRates::MAX_BLOCKS`] each.
//! - Per session that received friend requests in the last minute: one (address block, time)
//!   pair per request, at most `rate_incoming_requests_per_min`, dropped as they age past a
//!   minute.
//! - FRIEND_CANCEL frames queued for a session in its window: one per pending request it held,
//!   and requests reach it at most `rate_incoming_requests_per_min` a minute (or, unlimited,
//!   each one took a capped queue place first).
//! - Handles (`handles.rs`): handle → listening session, each session's handles, and each
//!   address block's count and sessions, mirrored and ranked; at most `max_handles` in all and
//!   `max_handles_per_session` per session (`too_many_handles` beyond, nothing changed). When
//!   all `max_handles` are taken, the block of the creating address holding the most gives way
//!   to a LISTEN from a block holding fewer (HANDLE_DROPPED to each session that gave one). A
//!   session's handles go when it ends or a version-1 client resumes it. HANDLE_TAKEN and
//!   HANDLE_DROPPED queued for a session in its window: one per handle it held, at most
//!   `max_handles_per_session` (it cannot listen on new ones while away).
//! - The mailbox (`mailbox.rs`): letters in arrival order, each also indexed by handle and by the
//!   sender's address block, blocks ranked by their bytes; at most `mailbox_letters_per_handle`
//!   and `mailbox_bytes_per_handle` per handle (its oldest dropped) and `mailbox_bytes` in all
//!   (the oldest letter of the fullest sender block dropped); every letter expires
//!   `mailbox_ttl_ms` after it was stored ([`Router::tick`], at most
//!   [`EXPIRY_CHUNK`](handle_messages::EXPIRY_CHUNK) letters per tick, the oldest letter's expiry
//!   counted in [`Router::next_deadline_ms`]). UNDELIVERED for a dropped letter: one per letter.
//! - All of it together: every connection's backlog ([`FrameSink::total_backlog`]) plus every
//!   resume queue. While that is over `max_buffered_bytes`, the two per-recipient caps above shrink
//!   to a sixteenth ([`BUDGET_SQUEEZE`](delivery::BUDGET_SQUEEZE)): enough connections that stop
//!   reading (from enough addresses) would otherwise hold `max_unsent_bytes` each until the process
//!   runs out of memory. Only recipients that are behind are refused: one that keeps up (its output
//!   leaves at every flush) still gets everything, so filling the budget does not stop anyone
//!   else's conversations. Refusing everyone instead would hand a few non-reading connections a
//!   switch that stops the server.

mod config;
mod connect;
mod delivery;
mod fanout;
pub(crate) mod fasthash;
mod friend_requests;
mod handle_messages;
mod handles;
mod invariants;
mod lifecycle;
mod limits;
mod listening;
mod mailbox;
mod messages;
mod remote;
pub(crate) mod remote_handles;
mod remote_sessions;
mod session;
mod sink;
mod timers;

#[cfg(test)]
mod tests;

use crate::address::{BlockCounts, BlockRates, ClientAddr};
use crate::id::{Id, ResumeToken, TOKEN_BYTES};
use crate::protocol::{self, ErrorCode, MessageTarget, RawJson, Request, ServerFrame};
pub use config::{
    DEFAULT_MAILBOX_BYTES, DEFAULT_MAX_HANDLES, Entropy, Now, RouterConfig, SeededEntropy,
};
use fasthash::FastMap;
use friend_requests::FriendRequestKey;
use handles::{HandleLimits, HandleTable, KeyedBuild};
use limits::ErrorWindow;
use mailbox::{Mailbox, MailboxLimits};
pub use remote::{BusFailure, MAX_AWAITING_PER_SESSION, REPLY_TIMEOUT_MS};
pub use remote_handles::FanoutParts;
use session::Session;
pub use sink::{Action, Backlogs, BusOutput, FrameSink, MailLetter, Recorder};
use timers::{Deadline, ResumeTimers};

/// The event loop's handle for one WebSocket connection. Never reused within a process.
pub type ConnId = u64;

/// Counters for logs and metrics. Never an ID, key or payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub connections: usize,
    pub sessions: usize,
    pub sessions_resuming: usize,
    pub queued_frames: usize,
    pub queued_bytes: usize,
    pub messages_routed: u64,
    /// Handles listened on, by all sessions.
    pub handles: usize,
    /// Letters waiting in the mailbox, and the bytes they count.
    pub mailbox_letters: usize,
    pub mailbox_bytes: usize,
    /// ERRORs sent, indexed like [`ErrorCode::ALL`].
    pub errors_sent: [u64; ErrorCode::ALL.len()],
    /// Cluster mode: records sent to and received from other nodes, and requests waiting for
    /// another node's answer.
    pub bus_records_out: u64,
    pub bus_records_in: u64,
    pub awaiting_replies: usize,
}

/// Close codes the router asks for (PROTOCOL.md §5).
pub mod close_code {
    pub const DISCONNECT: u16 = 1000;
    pub const POLICY: u16 = 1008;
    pub const SERVER_FULL: u16 = 1013;
    pub const TAKEN_OVER: u16 = 4001;
}

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60_000;

/// What the router knows about one open WebSocket connection.
#[derive(Debug)]
struct Conn {
    session: Option<Id>,
    peer: ClientAddr,
    errors: ErrorWindow,
    /// A CONNECT with a resume waits for another node to hand the session over (cluster).
    taking_over: bool,
    /// A LISTEN succeeded since this connection took its session (a CONNECT, new or resumed):
    /// in a cluster, only the first asserts again the handles the session holds already
    /// (`listening.rs`).
    listened: bool,
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
    /// Takeovers per address block whose token turned out wrong (or whose session was
    /// unknown), over time (cluster mode, `remote_sessions.rs`).
    takeover_failures: BlockRates,
    timers: ResumeTimers,
    sessions_resuming: usize,
    queued_frames: usize,
    queued_bytes: usize,
    messages_routed: u64,
    /// FRIEND_REQUESTs forwarded so far: the arrival number of each pending request.
    requests_forwarded: u64,
    /// Sessions created so far: the serial number of each session.
    sessions_created: u64,
    /// Who listens on which handle (version 2).
    handles: HandleTable,
    /// MESSAGEs to handles that wait for their listener (version 2).
    mailbox: Mailbox,
    /// Requests waiting for another node's answer (cluster mode, `remote.rs`).
    awaiting: remote::AwaitingReplies,
    /// New sessions whose CONNECT reply waits for the directory's confirmation (cluster mode):
    /// at most one per session.
    unannounced: FastMap<Id, ConnId>,
    /// Sessions whose resumable state changed since the last [`Router::checkpoint`] (cluster
    /// mode): at most every session.
    checkpoint_due: fasthash::FastSet<Id>,
    /// Connections waiting for another node to hand their session over (`remote_sessions.rs`).
    takeovers: remote_sessions::Takeovers,
    /// Handles LISTENs here took from other nodes' sessions lately (`remote_handles.rs`).
    taken_back: remote_handles::TakenBack,
    bus_records_out: u64,
    bus_records_in: u64,
    errors_sent: [u64; ErrorCode::ALL.len()],
}

impl<E: Entropy> Router<E> {
    pub fn new(config: RouterConfig, mut entropy: E) -> Self {
        // Handles are chosen by clients: the maps keyed by them hash under a secret key.
        let mut key = [0u8; 16];
        entropy.fill(&mut key);
        let (low, high) = key.split_at(8);
        let word = |half: &[u8]| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(half);
            u64::from_le_bytes(bytes)
        };
        let build = KeyedBuild::new((word(low), word(high)));
        let mut rid = [0u8; 8];
        if config.cluster {
            entropy.fill(&mut rid);
        }
        let handle_limits = HandleLimits {
            max_total: config.max_handles,
            max_per_session: config.max_handles_per_session,
        };
        let mailbox_limits = MailboxLimits {
            max_bytes: config.mailbox_bytes,
            max_per_handle: config.mailbox_letters_per_handle,
            max_bytes_per_handle: config.mailbox_bytes_per_handle,
            ttl_ms: config.mailbox_ttl_ms,
        };
        Router {
            handles: HandleTable::new(handle_limits, build.clone()),
            taken_back: remote_handles::TakenBack::new(build.clone()),
            mailbox: Mailbox::new(mailbox_limits, build),
            sessions_created: 0,
            sessions_per_peer: BlockCounts::new(config.max_sessions_per_peer),
            session_starts: BlockRates::new(
                config.rate_sessions_per_address_per_min,
                MS_PER_MINUTE,
            ),
            requests_per_address: BlockRates::new(
                config.rate_friend_requests_per_address_per_min,
                MS_PER_MINUTE,
            ),
            takeover_failures: BlockRates::new(
                config.rate_sessions_per_address_per_min,
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
            awaiting: remote::AwaitingReplies::starting_at(u64::from_le_bytes(rid)),
            takeovers: remote_sessions::Takeovers::default(),
            unannounced: FastMap::default(),
            checkpoint_due: Default::default(),
            bus_records_out: 0,
            bus_records_in: 0,
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
                taking_over: false,
                listened: false,
            })
            .peer = peer;
    }

    /// A complete text message arrived on `conn`.
    pub fn text(&mut self, conn: ConnId, text: &str, now: Now, out: &mut impl FrameSink) {
        let Some(state) = self.conns.get(&conn) else {
            return;
        };
        let session = state.session;
        let taking_over = state.taking_over;
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
            (Request::Connect { .. }, None) if taking_over => Err(ErrorCode::AlreadyConnected),
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

    /// Expire resume windows whose deadline passed, and letters older than the mailbox's TTL (at
    /// most [`EXPIRY_CHUNK`](handle_messages::EXPIRY_CHUNK) of those per call: while more are
    /// due, [`Router::next_deadline_ms`] stays in the past, and the caller ticks again).
    pub fn tick(&mut self, now: Now, out: &mut impl FrameSink) {
        while let Some(deadline) = self.timers.pop_due(now.mono_ms) {
            if timer_is_live(&self.sessions, &deadline) {
                self.end_session(deadline.id, out);
            }
        }
        self.drop_stale_timers();
        self.expire_letters(now, out);
        self.expire_awaiting(now, out);
        self.expire_takeovers(now, out);
    }

    /// The earliest monotonic deadline [`Router::tick`] must run at, if any: a resume window's
    /// end or the oldest letter's expiry.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let window = self.timers.earliest().map(|deadline| deadline.at_ms);
        let letter = self.mailbox.next_expiry_ms();
        let answer = self.awaiting.earliest_ms();
        let takeover = self.takeovers.earliest_ms();
        [window, letter, answer, takeover]
            .into_iter()
            .flatten()
            .min()
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
            handles: self.handles.len(),
            mailbox_letters: self.mailbox.len(),
            mailbox_bytes: self.mailbox.bytes(),
            errors_sent: self.errors_sent,
            bus_records_out: self.bus_records_out,
            bus_records_in: self.bus_records_in,
            awaiting_replies: self.awaiting.len(),
        }
    }

    fn request(
        &mut self,
        caller: Caller<'_>,
        request: Request<'_>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        match request {
            Request::Message {
                target: MessageTarget::Id(to),
                payload,
                ..
            } => self.message(caller, to.ok_or(ErrorCode::BadId)?, payload, now, out),
            // Version 1 ignores `handle` as an unknown field; version 2 wants one of the two.
            Request::Message {
                target: MessageTarget::IdAndHandle(to),
                payload,
                ..
            } => {
                if self.speaks_v2(caller.id) {
                    return Err(ErrorCode::BadRequest);
                }
                self.message(caller, to.ok_or(ErrorCode::BadId)?, payload, now, out)
            }
            Request::Message {
                target: MessageTarget::Handle(handle),
                payload,
                mailbox,
            } => self.message_to_handle(caller, handle, payload, mailbox, now, out),
            Request::Message {
                target: MessageTarget::Handles(list),
                payload,
                mailbox,
            } => {
                if !self.speaks_v2(caller.id) {
                    // To version 1, `handles` is unknown: the MESSAGE lacks its `to`.
                    return Err(ErrorCode::BadRequest);
                }
                let may_store = mailbox.ok_or(ErrorCode::BadRequest)?;
                self.message_to_handles(caller, list, payload, may_store, now, out)
            }
            Request::Listen { handles } => {
                self.version_two_only(caller)?;
                self.listen(caller, handles.ok_or(ErrorCode::BadRequest)?, now, out)
            }
            Request::Unlisten { handles } => {
                self.version_two_only(caller)?;
                self.unlisten(caller, handles.ok_or(ErrorCode::BadRequest)?, now, out)
            }
            Request::Fetch => {
                self.version_two_only(caller)?;
                self.fetch(caller, now, out)
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
                self.friend_accept(caller, to.ok_or(ErrorCode::BadId)?, public_key, now, out)
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

    /// Whether session `id` speaks version 2 (its last CONNECT asked for it).
    fn speaks_v2(&self, id: Id) -> bool {
        self.sessions
            .get(&id)
            .is_some_and(|session| session.version >= 2)
    }

    /// `unknown_type` for a version-1 session: the frames of version 2 are not defined for it.
    fn version_two_only(&self, caller: Caller<'_>) -> Result<(), ErrorCode> {
        if self.speaks_v2(caller.id) {
            Ok(())
        } else {
            Err(ErrorCode::UnknownType)
        }
    }

    /// A new ID no live session has. Collisions are rare while sessions are far fewer than the
    /// 2^30 possible IDs, so the loop almost always runs once.
    pub(super) fn fresh_id(&mut self) -> Id {
        loop {
            let mut bytes = [0u8; 4];
            self.entropy.fill(&mut bytes);
            let id = Id::from_random_bytes(bytes);
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    pub(super) fn fresh_token(&mut self) -> ResumeToken {
        let mut bytes = [0u8; TOKEN_BYTES];
        self.entropy.fill(&mut bytes);
        ResumeToken::from_random_bytes(&bytes)
    }

    /// Session `id`'s resumable state changed (cluster mode: it is saved at the next
    /// [`Router::checkpoint`], so that another node can resume it if this one dies).
    #[inline]
    pub(super) fn touch(&mut self, id: Id) {
        if self.config.cluster {
            self.checkpoint_due.insert(id);
        }
    }

    pub(super) fn drop_stale_timers(&mut self) {
        let sessions = &self.sessions;
        self.timers
            .drop_stale_top(|deadline| timer_is_live(sessions, deadline));
    }
}

/// A timer entry is live while its session is still in the window it was made for.
fn timer_is_live(sessions: &FastMap<Id, Session>, deadline: &Deadline) -> bool {
    sessions.get(&deadline.id).is_some_and(|session| {
        session.conn.is_none() && session.timer_generation == deadline.generation
    })
}
