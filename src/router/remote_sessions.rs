//! A session that moves between nodes (cluster mode). A client whose connection dropped may
//! come back through any node (a load balancer needs no stickiness): that node asks the node
//! holding the session to hand it over, and carries on with it, with the same ID, a new token,
//! and everything that waited for it.
//!
//! The resume goes as on one node, one bus round trip later: the CONNECT with `resume` waits
//! while the session's node checks the token ([`Record::Takeover`]). If it matches, that node
//! takes the session out of its tables without ending it (its friends are not told it left;
//! a connection still holding it is closed with 4001, as a takeover on one node), moves the
//! directory entry to the new node, and answers with the session's state ([`Record::Handover`]):
//! its friends and pending requests, its resume queue, and the letters its own mailbox held for
//! the session's handles. The new node installs it, answers the CONNECT (`resumed: true`), sends
//! the queue, and tells the friends it is back if it was away. If the token does not match, the
//! session is unknown, or no answer comes within [`TAKEOVER_TIMEOUT_MS`], the client gets a new
//! session, exactly as a resume that fails on one node.
//!
//! Handles are not moved: every version-2 client LISTENs again after its CONNECT, which names
//! the same session for them; the letters moved with the session wait in this node's mailbox
//! for that LISTEN.
//!
//! A takeover is refused (`server_full` and 1013, before anything is asked of another node) only
//! when this node holds `max_sessions`. It is never refused for its address's live sessions or
//! session starts: after a node dies or during a rolling upgrade, all the clients behind one NAT
//! address or /48 that were on the node come back at once through the others, and a resume
//! refused there has nowhere else to go; its session would end with its resume window. Each
//! attempt still takes one of its address's session starts when there is one
//! ([`Pending::charged`]): that start pays for the new session made if the resume fails, which
//! is otherwise admitted as any new session (live sessions and start rate included). The session
//! it brings counts for the connecting address here, whatever that address's limit.
//!
//! Bounds: one takeover per connection (a second CONNECT while it waits is `already_connected`;
//! after it the connection holds a session or is closed); each waits at most
//! [`TAKEOVER_TIMEOUT_MS`]. An address's connections are bounded at any one time (its open and
//! half-open sockets), not over time, so what bounds its takeovers over time is this: an address
//! block whose takeovers failed (token wrong, session unknown) more often than its session-start
//! rate within a minute has each further takeover held [`TAKEOVER_HOLD_MS`] before anything is
//! asked, and dropped unasked if its connection closes meanwhile. Such a block makes at most one
//! takeover per open socket every [`TAKEOVER_HOLD_MS`]. A takeover with the right token from it
//! is delayed as long, never refused: before asking, nothing tells it from a wrong one, and a
//! neighbour's wrong tokens must not end anyone's session. A handover is as large as the
//! session's state, which the caps on friends, pending requests, the resume queue and the
//! mailbox bound.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::fasthash::FastMap;
use super::limits::TokenBucket;
use super::mailbox::Sender;
use super::remote::{Record, is_frame};
use super::session::{PendingIn, QueuedFrame, QueuedKind, Session};
use super::sink::BusOutput;
use super::{ConnId, Entropy, FrameSink, MS_PER_MINUTE, MS_PER_SECOND, Now, Router, close_code};
use crate::address::{Block, ClientAddr};
use crate::id::{Id, TOKEN_LEN};
use crate::protocol::{Handle, ServerFrame};

/// How long a resume waits for another node to hand the session over before the client gets
/// a new session instead: longer than a dead node takes to stop counting as alive
/// (`crate::bus::ALIVE_TTL`, 5 s), so that a client coming back at once after its node died is
/// adopted rather than given a new session.
pub const TAKEOVER_TIMEOUT_MS: u64 = 8_000;

/// How long a takeover from an address block past its budget of failed takeovers waits before
/// its session's node is asked: each such attempt then holds one of the block's sockets this
/// long (its takeover is dropped unasked when it closes), while a client with the right token
/// loses nothing but the wait.
pub const TAKEOVER_HOLD_MS: u64 = 5_000;

/// A connection whose CONNECT waits for a handover.
#[derive(Debug)]
struct Pending {
    conn: ConnId,
    id: Id,
    /// The client's token: checked against the saved state if the session's node is gone.
    token: [u8; TOKEN_LEN],
    version: u8,
    reference: Option<Box<str>>,
    /// The connecting address: the session, if it comes, counts for it here.
    peer: ClientAddr,
    /// Whether the CONNECT took one of `peer`'s session starts: if so, a new session made
    /// instead of the resume is not charged another.
    charged: bool,
}

/// A session's resumable state as saved in the cluster (cluster mode): what another node needs
/// to resume it if the node holding it dies.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    token: String,
    session: SessionState,
}

/// How long records for a session handed over to another node are sent after it: longer than
/// any node caches a directory entry (`crate::bus::DIRECTORY_CACHE`).
pub const FORWARD_MS: u64 = 10_000;
/// Sessions handed over within [`FORWARD_MS`] that are remembered at most (the oldest are
/// forgotten first; a record for one forgotten is answered as for a session that is gone).
const MAX_MOVED: usize = 4_096;

/// Takeovers in flight, by request number, with their deadlines in order (one timeout for all),
/// and those held before they are asked, with the times they are asked at (in order too: one
/// hold for all); and the sessions recently handed over to other nodes, so that records still
/// sent here for them follow them. A takeover is in `deadlines` or in `held`, not both.
#[derive(Debug, Default)]
pub(super) struct Takeovers {
    pending: FastMap<u64, Pending>,
    deadlines: VecDeque<(u64, u64)>,
    held: VecDeque<(u64, u64)>,
    moved: FastMap<Id, (String, u64)>,
    moved_order: VecDeque<(Id, u64)>,
}

impl Takeovers {
    /// The node session `id` was handed over to, if that was within [`FORWARD_MS`].
    pub(super) fn moved_to(&mut self, id: Id, now: Now) -> Option<&str> {
        while let Some(&(old, until)) = self.moved_order.front() {
            if until > now.mono_ms && self.moved_order.len() <= MAX_MOVED {
                break;
            }
            self.moved_order.pop_front();
            if self.moved.get(&old).is_some_and(|entry| entry.1 == until) {
                self.moved.remove(&old);
            }
        }
        self.moved.get(&id).map(|(node, _)| node.as_str())
    }

    fn remember_move(&mut self, id: Id, node: &str, now: Now) {
        let until = now.mono_ms.saturating_add(FORWARD_MS);
        self.moved.insert(id, (node.to_owned(), until));
        self.moved_order.push_back((id, until));
    }

    pub(super) fn earliest_ms(&self) -> Option<u64> {
        let deadline = self.deadlines.front().map(|&(_, at)| at);
        let held = self.held.front().map(|&(_, at)| at);
        deadline.into_iter().chain(held).min()
    }

    /// Takeovers held before they are asked (for tests).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// Each takeover waiting is in exactly one of the two queues, once (for invariant checks);
    /// the connections they wait for.
    pub(super) fn check(&self) -> Result<Vec<ConnId>, String> {
        for rid in self.pending.keys() {
            let queued = self
                .deadlines
                .iter()
                .chain(&self.held)
                .filter(|(queued, _)| queued == rid)
                .count();
            if queued != 1 {
                return Err(format!("takeover {rid} is queued {queued} times"));
            }
        }
        Ok(self.pending.values().map(|pending| pending.conn).collect())
    }
}

/// What a session is, as one node hands it to another.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SessionState {
    /// The address it is counted for on the node holding it ([`Session::peer`]).
    peer: IpAddr,
    friends: Vec<Id>,
    pending_out: Vec<Id>,
    pending_in: Vec<(Id, Block)>,
    /// The resume queue, oldest first.
    queue: Vec<(String, QueuedState)>,
    /// Letters this node's mailbox held for the session's handles: (handle, frame).
    letters: Vec<(String, String)>,
    /// Whether a connection held it (its friends never saw it leave).
    connected: bool,
    /// What its rate buckets held (MESSAGE, FRIEND_REQUEST): the rates survive a move as they
    /// survive a resume on one node. Absent: full.
    #[serde(default)]
    rates: Option<(u64, u64)>,
    /// The friend requests it received in the last minute: (sender's block, age in ms).
    #[serde(default)]
    recent_requests: Vec<(Block, u64)>,
    /// The protocol version its client spoke.
    #[serde(default = "version_two")]
    version: u8,
    /// In a handover only: the token the client resumed with (checked), for when the node it
    /// goes to no longer waits for it.
    #[serde(default)]
    token: Option<String>,
}

fn version_two() -> u8 {
    2
}

#[derive(Debug, Serialize, Deserialize)]
enum QueuedState {
    Capped,
    VersionTwo,
    Control,
    Message {
        sender: Id,
        reference: Option<String>,
    },
}

impl<E: Entropy> Router<E> {
    /// Session `id`'s resume queue got `entry` (cluster mode): saved, so that a node adopting
    /// the session finds what was ACKed as queued. One append per frame, never the whole queue.
    pub(super) fn save_queued(&mut self, id: Id, entry: &QueuedFrame, out: &mut impl FrameSink) {
        if !self.config.cluster {
            return;
        }
        if let Ok(text) = serde_json::to_string(&(&entry.frame, QueuedState::of(&entry.kind))) {
            out.bus(BusOutput::Queued { id, entry: text });
        }
    }
}

impl SessionState {
    /// The state of a live session, as saved (its letters stay in this node's mailbox).
    fn of(session: &Session, config: &super::RouterConfig, now: Now) -> SessionState {
        SessionState {
            rates: Some(rates_of(session, config, now)),
            recent_requests: recent_of(session, now),
            version: session.version,
            token: None,
            peer: session.peer.ip(),
            friends: session.friends.iter().copied().collect(),
            pending_out: session.pending_out.iter().copied().collect(),
            pending_in: session
                .pending_in
                .iter()
                .map(|(requester, pending)| (*requester, pending.block))
                .collect(),
            // Saved frame by frame as it fills (`save_queued`), not with the rest.
            queue: Vec::new(),
            letters: Vec::new(),
            connected: session.conn.is_some(),
        }
    }
}

/// What a session's two rate buckets hold now.
fn rates_of(session: &Session, config: &super::RouterConfig, now: Now) -> (u64, u64) {
    (
        session
            .message_rate
            .units_at(config.rate_messages_per_sec, MS_PER_SECOND, now.mono_ms),
        session.request_rate.units_at(
            config.rate_friend_requests_per_min,
            MS_PER_MINUTE,
            now.mono_ms,
        ),
    )
}

/// The friend requests a session received in the last minute, with their ages.
fn recent_of(session: &Session, now: Now) -> Vec<(Block, u64)> {
    session
        .recent_requests
        .iter()
        .map(|&(block, at)| (block, now.mono_ms.saturating_sub(at)))
        .collect()
}

/// Whether two tokens are equal, in time independent of where they differ.
fn same_token(saved: &[u8], given: &[u8; TOKEN_LEN]) -> bool {
    saved.len() == given.len()
        && saved
            .iter()
            .zip(given.iter())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

impl QueuedState {
    fn of(kind: &QueuedKind) -> QueuedState {
        match kind {
            QueuedKind::Capped => QueuedState::Capped,
            QueuedKind::VersionTwo => QueuedState::VersionTwo,
            QueuedKind::Control => QueuedState::Control,
            QueuedKind::Message { sender, reference } => QueuedState::Message {
                sender: *sender,
                reference: reference.as_deref().map(str::to_owned),
            },
        }
    }

    fn kind(self) -> QueuedKind {
        match self {
            QueuedState::Capped => QueuedKind::Capped,
            QueuedState::VersionTwo => QueuedKind::VersionTwo,
            QueuedState::Control => QueuedKind::Control,
            QueuedState::Message { sender, reference } => QueuedKind::Message {
                sender,
                reference: reference.map(String::into_boxed_str),
            },
        }
    }
}

impl<E: Entropy> Router<E> {
    /// Asks the node holding session `id` to hand it over to `conn` (the CONNECT's `resume`)
    /// from `peer`, at once or, when `peer`'s takeovers failed too often lately, after
    /// [`TAKEOVER_HOLD_MS`]. `charged`: the CONNECT took one of `peer`'s session starts.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn resume_remotely(
        &mut self,
        conn: ConnId,
        id: Id,
        token: &[u8; TOKEN_LEN],
        version: u8,
        reference: Option<&str>,
        peer: ClientAddr,
        charged: bool,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        state.taking_over = true;
        let rid = self.awaiting.fanout_number();
        self.takeovers.pending.insert(
            rid,
            Pending {
                conn,
                id,
                token: *token,
                version,
                reference: reference.map(Box::from),
                peer,
                charged,
            },
        );
        if self.takeover_failures.allows(peer, now.mono_ms) {
            self.ask_takeover(rid, now, out);
        } else {
            // This block's takeovers failed more often than it may start sessions within a
            // minute: this one costs the cluster nothing until it has held its socket a while.
            self.takeovers
                .held
                .push_back((rid, now.mono_ms.saturating_add(TAKEOVER_HOLD_MS)));
        }
    }

    /// Sends takeover `rid`'s record to the node holding its session, and starts its wait.
    fn ask_takeover(&mut self, rid: u64, now: Now, out: &mut impl FrameSink) {
        let Some((id, token)) = self
            .takeovers
            .pending
            .get(&rid)
            .map(|pending| (pending.id, pending.token))
        else {
            return;
        };
        self.takeovers
            .deadlines
            .push_back((rid, now.mono_ms.saturating_add(TAKEOVER_TIMEOUT_MS)));
        let node = self.config.node_name.clone();
        let record = Record::Takeover {
            to: id,
            token: Cow::Borrowed(std::str::from_utf8(&token).unwrap_or_default()),
            rid,
            node: Cow::Borrowed(&node),
        };
        self.send_record(&record, out);
    }

    /// Whether request `rid` is a takeover (the bus reports failures by request number).
    pub(super) fn is_takeover(&self, rid: u64) -> bool {
        self.takeovers.pending.contains_key(&rid)
    }

    /// Another node asks for session `id` (`token` from the client's CONNECT) for a connection
    /// of node `node`: handed over if the token matches, refused otherwise.
    pub(super) fn takeover_asked(
        &mut self,
        id: Id,
        token: &str,
        rid: u64,
        node: &str,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let token_text = token;
        let token: Option<[u8; TOKEN_LEN]> = token.as_bytes().try_into().ok();
        let state = if self.resume_matches(id, token.as_ref()) {
            self.takeovers.remember_move(id, node, now);
            self.hand_over_session(id, token_text, node, now, out)
        } else {
            None
        };
        let state = state.and_then(|state| serde_json::to_string(&state).ok());
        let record = Record::Handover {
            to: id,
            rid,
            state: state.as_deref(),
        };
        self.bus_records_out += 1;
        out.bus(BusOutput::ToNode {
            node: node.to_owned(),
            text: record.to_json(),
        });
    }

    /// Takes session `id` out of this node's tables without ending it (its friends are not
    /// told, nothing is withdrawn), closing a connection that holds it with `code`; returns it
    /// with its queue still counted in `queued_frames`/`queued_bytes`, and its handles gone
    /// from the table (their letters stay in the mailbox) and from the directory.
    pub(super) fn detach_session(
        &mut self,
        id: Id,
        code: u16,
        out: &mut impl FrameSink,
    ) -> Option<Session> {
        let session = self.sessions.remove(&id)?;
        self.sessions_per_peer.release(session.peer);
        match session.conn {
            Some(conn) => {
                self.conns.remove(&conn);
                let reason = if code == close_code::TAKEN_OVER {
                    "session taken over"
                } else {
                    "try again"
                };
                out.close(conn, code, reason);
            }
            None => self.sessions_resuming -= 1,
        }
        for handle in self.handles.remove_session(id) {
            // This node no longer renews the entry, which names this node: it goes now, and
            // letters for the handle wait in the cluster's mailbox until the session's client
            // listens again, wherever the session is by then.
            out.bus(BusOutput::Unlisten { handle, id });
        }
        self.drop_stale_timers();
        Some(session)
    }

    fn hand_over_session(
        &mut self,
        id: Id,
        token: &str,
        node: &str,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Option<SessionState> {
        let handles = self.handles.handles_of(id);
        let mut session = self.detach_session(id, close_code::TAKEN_OVER, out)?;
        let state = SessionState::of(&session, &self.config, now);
        let mut letters = Vec::new();
        for handle in handles {
            while let Some(letter) = self.mailbox.take_oldest_for(&handle) {
                letters.push((handle.as_str().to_owned(), letter.frame.into_string()));
            }
            self.handles.mail(&handle, self.mailbox.mail_for(&handle));
        }
        let mut queue = Vec::new();
        for entry in session.queue.take_all() {
            self.queued_frames -= 1;
            self.queued_bytes -= entry.bytes();
            queue.push((entry.frame, QueuedState::of(&entry.kind)));
        }
        out.bus(BusOutput::HandOver {
            id,
            node: node.to_owned(),
        });
        // What is saved of it, plus what only a handover carries.
        Some(SessionState {
            queue,
            letters,
            token: Some(token.to_owned()),
            ..state
        })
    }

    /// Saves the state of every session touched since the last call (cluster mode); the loop
    /// calls it once per turn, so a session changed many times in a turn is saved once.
    pub fn checkpoint(&mut self, now: Now, out: &mut impl FrameSink) {
        if self.checkpoint_due.is_empty() {
            return;
        }
        for id in std::mem::take(&mut self.checkpoint_due) {
            let Some(session) = self.sessions.get(&id) else {
                continue;
            };
            let saved = Saved {
                token: session.token.as_str().to_owned(),
                session: SessionState::of(session, &self.config, now),
            };
            if let Ok(text) = serde_json::to_string(&saved) {
                out.bus(BusOutput::Checkpoint { id, text });
            }
        }
    }

    /// Takeover `rid` found the session's node gone: its saved state is read.
    pub(super) fn load_checkpoint(&mut self, rid: u64, out: &mut impl FrameSink) {
        if let Some(pending) = self.takeovers.pending.get(&rid) {
            out.bus(BusOutput::LoadCheckpoint {
                id: pending.id,
                rid,
            });
        }
    }

    /// The saved state for takeover `rid` (`None`: nothing saved): adopted if the client's
    /// token matches it, else a new session, as a failed resume on one node.
    pub fn checkpoint_loaded(
        &mut self,
        rid: u64,
        saved: Option<&[u8]>,
        queue: &[Vec<u8>],
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let Some(pending) = self.takeovers.pending.get(&rid) else {
            return;
        };
        let saved = saved.and_then(|text| serde_json::from_slice::<Saved>(text).ok());
        let adopted = saved.filter(|saved| same_token(saved.token.as_bytes(), &pending.token));
        match adopted {
            Some(saved) => {
                let id = pending.id;
                out.bus(BusOutput::Adopt(id));
                let queue = queue
                    .iter()
                    .filter_map(|entry| serde_json::from_slice::<(String, QueuedState)>(entry).ok())
                    .collect();
                let state = SessionState {
                    // Its friends were never told it left (its node died): PRESENCE on
                    // return only confirms what they believe.
                    connected: false,
                    queue,
                    ..saved.session
                };
                let Some(pending) = self.takeovers.pending.remove(&rid) else {
                    return;
                };
                let conn_open = self.conns.get_mut(&pending.conn).map(|conn| {
                    conn.taking_over = false;
                });
                self.install_session(pending, state, conn_open.is_some(), now, out);
            }
            None => self.finish_takeover(rid, None, true, now, out),
        }
    }

    /// The answer to takeover `rid`: the session installed for its connection, or (`None`:
    /// refused, its token wrong or the session unknown there) a new session, as a failed resume
    /// on one node.
    pub(super) fn takeover_answered(
        &mut self,
        rid: u64,
        id: Id,
        state: Option<&str>,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let refused = state.is_none();
        let state = state.and_then(|text| match serde_json::from_str::<SessionState>(text) {
            Ok(state) => Some(state),
            Err(error) => {
                log::warn!(
                    "cluster: a handed-over session did not parse (line {}, column {})",
                    error.line(),
                    error.column()
                );
                None
            }
        });
        if self.takeovers.pending.contains_key(&rid) {
            self.finish_takeover(rid, state, refused, now, out);
            return;
        }
        // The wait here ended (it timed out) but the session was handed over all the same: it
        // is installed in its resume window, with the token its client resumed with, so that
        // nothing handed over is lost. With no connection here, it counts for the address its
        // old node counted it for.
        if let Some(state) = state
            && let Some(token) = state
                .token
                .as_deref()
                .and_then(|t| t.as_bytes().try_into().ok())
        {
            let orphan = Pending {
                conn: 0,
                id,
                token,
                version: state.version,
                reference: None,
                peer: ClientAddr::new(state.peer),
                charged: false,
            };
            self.install_session(orphan, state, false, now, out);
        }
    }

    /// Ends takeover `rid` (waiting here) with the session's `state`, installed for its
    /// connection, or without (`None`) with a new session, admitted as any new session from its
    /// address but not charged a second start. `wrong`: its token did not match, or nothing is
    /// known of its session (not a failure of the bus or a timeout); counted against its address
    /// block's budget of failed takeovers.
    fn finish_takeover(
        &mut self,
        rid: u64,
        state: Option<SessionState>,
        wrong: bool,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let Some(pending) = self.takeovers.pending.remove(&rid) else {
            return;
        };
        let conn_open = self.conns.get_mut(&pending.conn).map(|conn| {
            conn.taking_over = false;
        });
        match state {
            Some(state) => self.install_session(pending, state, conn_open.is_some(), now, out),
            None => {
                if wrong {
                    // Empty already: nothing more to take, the block is held as it is.
                    let _ = self.takeover_failures.try_take(pending.peer, now.mono_ms);
                }
                let reference = pending.reference.as_deref();
                let (conn, peer, version) = (pending.conn, pending.peer, pending.version);
                self.start_session_charged(
                    conn,
                    peer,
                    pending.charged,
                    version,
                    reference,
                    now,
                    out,
                );
            }
        }
    }

    /// A takeover the bus could not carry, or that waited too long: a new session instead.
    pub(super) fn takeover_failed(&mut self, rid: u64, now: Now, out: &mut impl FrameSink) {
        self.finish_takeover(rid, None, false, now, out);
    }

    pub(super) fn expire_takeovers(&mut self, now: Now, out: &mut impl FrameSink) {
        while let Some(&(rid, at)) = self.takeovers.held.front() {
            if at > now.mono_ms {
                break;
            }
            self.takeovers.held.pop_front();
            let Some(conn) = self.takeovers.pending.get(&rid).map(|pending| pending.conn) else {
                continue;
            };
            if self.conns.contains_key(&conn) {
                self.ask_takeover(rid, now, out);
            } else {
                // Nobody waits for it any more: nothing is asked, the session stays where it is.
                self.takeovers.pending.remove(&rid);
            }
        }
        while let Some(&(rid, at)) = self.takeovers.deadlines.front() {
            if at > now.mono_ms {
                break;
            }
            self.takeovers.deadlines.pop_front();
            if self.takeovers.pending.contains_key(&rid) {
                self.takeover_failed(rid, now, out);
            }
        }
    }

    /// Makes the handed-over session live here, for `pending.conn` if it is still open (else in
    /// its resume window, as if it had just dropped), counted for `pending.peer` whatever that
    /// address's live-session limit (released once, when it ends or leaves).
    fn install_session(
        &mut self,
        pending: Pending,
        state: SessionState,
        conn_open: bool,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let id = pending.id;
        let peer = pending.peer;
        if self.sessions.contains_key(&id) {
            // Made here meanwhile (a second resume through this node won, and the token this
            // one holds is spent): a new session, as a resume with a spent token gets on one
            // node.
            if conn_open {
                let reference = pending.reference.as_deref();
                let (conn, charged, version) = (pending.conn, pending.charged, pending.version);
                self.start_session_charged(conn, peer, charged, version, reference, now, out);
            }
            return;
        }
        // Back here after moving away: records are no longer sent on.
        self.takeovers.moved.remove(&id);
        if self.sessions.len() >= self.config.max_sessions {
            // No room here (filled within the wait; there was room when it was asked): the
            // client is told so, as a new session would be (`server_full`). The session handed
            // over is lost: its old node let it go.
            if conn_open {
                self.refuse_session(pending.conn, pending.reference.as_deref(), out);
            }
            return;
        }
        // A connection gets a new token with its reply; without one (it closed meanwhile) the
        // client still holds only the token it resumed with, which stays valid.
        let token = if conn_open {
            self.fresh_token()
        } else {
            crate::id::ResumeToken::from_checked_text(pending.token)
        };
        self.sessions_created += 1;
        let mut pending_in = FastMap::default();
        // A session is never its own friend or requester, and a relation with a session here
        // holds only if that session's half says so too, whatever a confused node says.
        let sessions = &self.sessions;
        let local = |other: &Id| sessions.get(other);
        let friend_ok = |f: &Id| *f != id && local(f).is_none_or(|s| s.friends.contains(&id));
        let target_ok =
            |t: &Id| *t != id && local(t).is_none_or(|s| s.pending_in.contains_key(&id));
        let requester_ok =
            |r: &Id| *r != id && local(r).is_none_or(|s| s.pending_out.contains(&id));
        let friends: super::fasthash::FastSet<Id> =
            state.friends.into_iter().filter(friend_ok).collect();
        let pending_out: super::fasthash::FastSet<Id> =
            state.pending_out.into_iter().filter(target_ok).collect();
        let requests: Vec<(Id, Block)> = state
            .pending_in
            .into_iter()
            .filter(|(r, _)| requester_ok(r))
            .collect();
        for (requester, block) in requests {
            self.requests_forwarded += 1;
            let arrival = self.requests_forwarded;
            pending_in.insert(requester, PendingIn { arrival, block });
        }
        let session = Session {
            token,
            peer,
            conn: None,
            serial: self.sessions_created,
            version: pending.version,
            timer_generation: 0,
            awaiting: 0,
            claimed: true,
            friends,
            pending_out,
            requests_in_flight: Default::default(),
            pending_in,
            queue: Default::default(),
            message_rate: match state.rates {
                Some((units, _)) => TokenBucket::holding(
                    units,
                    self.config.rate_messages_per_sec,
                    MS_PER_SECOND,
                    now.mono_ms,
                ),
                None => TokenBucket::full(
                    self.config.rate_messages_per_sec,
                    MS_PER_SECOND,
                    now.mono_ms,
                ),
            },
            request_rate: match state.rates {
                Some((_, units)) => TokenBucket::holding(
                    units,
                    self.config.rate_friend_requests_per_min,
                    MS_PER_MINUTE,
                    now.mono_ms,
                ),
                None => TokenBucket::full(
                    self.config.rate_friend_requests_per_min,
                    MS_PER_MINUTE,
                    now.mono_ms,
                ),
            },
            recent_requests: state
                .recent_requests
                .iter()
                .filter(|(_, age)| *age < MS_PER_MINUTE)
                .map(|&(block, age)| (block, now.mono_ms.saturating_sub(age)))
                .collect(),
        };
        let mut session = session;
        // And the halves here that name it: what a session here holds about it is made true of
        // it as well (one pass over this node's sessions; a move is rare).
        for (other, half) in &self.sessions {
            if half.friends.contains(&id) {
                session.friends.insert(*other);
            }
            if half.pending_out.contains(&id) && !session.pending_in.contains_key(other) {
                self.requests_forwarded += 1;
                let pending = PendingIn {
                    arrival: self.requests_forwarded,
                    block: half.peer.largest_block(),
                };
                session.pending_in.insert(*other, pending);
            }
            if half.pending_in.contains_key(&id) {
                session.pending_out.insert(*other);
            }
        }
        // A relation cannot be a friendship and a pending request at once.
        let friends = session.friends.clone();
        session.pending_out.retain(|other| !friends.contains(other));
        session
            .pending_in
            .retain(|other, _| !friends.contains(other));
        // It exists in the cluster already: refusing it here for its address's count would end
        // a live session (many clients behind one NAT address come back together when a node
        // dies or is upgraded). Only new sessions are refused for that count.
        self.sessions_per_peer.acquire_regardless(peer);
        self.sessions.insert(id, session);
        self.sessions_resuming += 1;
        self.touch(id);
        out.bus(BusOutput::Claim(id));
        for (handle, frame) in state.letters {
            let Some(handle) = Handle::parse(&handle).filter(|_| is_frame(&frame)) else {
                continue;
            };
            let nobody = Sender {
                id,
                serial: u64::MAX,
            };
            let block = peer.largest_block();
            let frame = ServerFrame::Encoded(&frame);
            if self
                .store_letter_from(handle, frame, nobody, None, block, now, out)
                .is_err()
            {
                log::debug!("cluster: a letter that followed its session found no room here");
            }
        }
        if !state.queue.is_empty() {
            // Saved again here from scratch: the old node's copy is not this node's to append to.
            out.bus(BusOutput::QueueCleared(id));
        }
        for (frame, kind) in state.queue {
            if !is_frame(&frame) {
                continue;
            }
            let entry = QueuedFrame {
                frame,
                kind: kind.kind(),
            };
            if !conn_open {
                self.save_queued(id, &entry, out);
            }
            if let Some(session) = self.sessions.get_mut(&id) {
                self.queued_bytes += session.queue.push(entry);
                self.queued_frames += 1;
            }
        }
        if conn_open {
            // As a resume on one node: new token, reply, the queue; PRESENCE to its friends
            // only if it was away (a takeover from a live connection never looked away).
            let was_away = !state.connected;
            self.resume_telling_friends(pending.conn, id, pending.version, was_away, out);
        } else {
            self.sessions_resuming -= 1;
            self.session_dropped(id, now, out);
        }
    }
}
