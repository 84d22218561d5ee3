//! CONNECT: a new session, or an existing one resumed with its token (from its resume window,
//! or taken over from the connection that holds it).
//!
//! A new session counts against its address's session limit and start rate, checked last so that
//! a CONNECT refused for another reason costs no token. A resume never does: on one node it is
//! never refused for those, and in a cluster a resume of a session another node holds (a
//! takeover) is refused only when the server is full. It takes one of its address's session
//! starts when there is one (each attempt costs a record, a handover and Redis work whether or
//! not its token is right), but is never refused for lack of one, nor for the address's live
//! sessions: many clients behind one NAT address come back at once when their node dies or is
//! upgraded, and have no other node to go to (`remote_sessions.rs`). A resume hands out a new
//! token (tokens are single-use), then the reply, then everything queued for the session, in
//! order.

use super::limits::TokenBucket;
use super::session::{QueuedKind, Session};
use super::sink::BusOutput;
use super::{ConnId, Entropy, FrameSink, MS_PER_MINUTE, MS_PER_SECOND, Now, Router, close_code};
use crate::address::ClientAddr;
use crate::id::{Id, ResumeToken, TOKEN_LEN};
use crate::protocol::{self, ErrorCode, Resume, ServerFrame};

impl<E: Entropy> Router<E> {
    pub(super) fn connect(
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
            if let Some(token) = resume.token
                && self.config.cluster
                && self.config.resume_grace_ms > 0
                && !self.sessions.contains_key(&id)
            {
                // Perhaps another node's session: it is asked to hand it over
                // (`remote_sessions.rs`); a new session is made if it does not. Refused, before
                // anything is asked, only when there is no room here. The start it takes (if
                // its address has one left) pays for a new session made instead.
                if self.sessions.len() >= self.config.max_sessions {
                    self.refuse_session(conn, reference, out);
                    return Ok(());
                }
                let peer = self.peer_of(conn);
                let charged = self.session_starts.try_take(peer, now.mono_ms);
                self.resume_remotely(
                    conn, id, &token, version, reference, peer, charged, now, out,
                );
                return Ok(());
            }
        }
        self.start_session(conn, version, reference, now, out);
        Ok(())
    }

    fn peer_of(&self, conn: ConnId) -> ClientAddr {
        self.conns
            .get(&conn)
            .map_or(ClientAddr::UNSPECIFIED, |state| state.peer)
    }

    /// Whether a session may start here for `peer`: room on the server, `peer`'s blocks below
    /// their live-session count, and a token of their start rate (checked last: a CONNECT
    /// refused for another reason costs none), unless `charged` (this CONNECT took its token
    /// already). When true, one count of `peer` is held: the caller hands it to a session.
    fn admit(&mut self, peer: ClientAddr, charged: bool, now: Now) -> bool {
        self.sessions.len() < self.config.max_sessions
            && self.sessions_per_peer.try_acquire(peer)
            && (charged || self.start_allowed(peer, now))
    }

    /// No room for a session of `conn`: ERROR `server_full`, then a close with 1013.
    pub(super) fn refuse_session(
        &mut self,
        conn: ConnId,
        reference: Option<&str>,
        out: &mut impl FrameSink,
    ) {
        self.count_error(ErrorCode::ServerFull);
        let refusal = protocol::error(ErrorCode::ServerFull, reference);
        out.send(conn, ServerFrame::Encoded(&refusal));
        self.conns.remove(&conn);
        out.close(conn, close_code::SERVER_FULL, "server full");
    }

    /// A new session for `conn`, or `server_full` and a close when there is no room for it.
    pub(super) fn start_session(
        &mut self,
        conn: ConnId,
        version: u8,
        reference: Option<&str>,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let peer = self.peer_of(conn);
        self.start_session_charged(conn, peer, false, version, reference, now, out);
    }

    /// [`Router::start_session`] for `conn` from `peer`, whose CONNECT took a session start
    /// already if `charged` (a takeover that did not bring its session: the new session made
    /// instead is admitted as any, but not charged twice). Nothing if `conn` is gone.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_session_charged(
        &mut self,
        conn: ConnId,
        peer: ClientAddr,
        charged: bool,
        version: u8,
        reference: Option<&str>,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        if !self.admit(peer, charged, now) {
            self.refuse_session(conn, reference, out);
            return;
        }
        self.create_session(conn, peer, version, now, out);
    }

    /// Makes a session for `conn`, counted for `peer`, whose count the caller holds.
    fn create_session(
        &mut self,
        conn: ConnId,
        peer: ClientAddr,
        version: u8,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let id = self.fresh_id();
        let token = self.fresh_token();
        self.sessions_created += 1;
        let session = Session {
            token,
            peer,
            conn: Some(conn),
            serial: self.sessions_created,
            version,
            timer_generation: 0,
            awaiting: 0,
            claimed: self.config.cluster,
            friends: Default::default(),
            pending_out: Default::default(),
            requests_in_flight: Default::default(),
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
        self.touch(id);
        if let Some(state) = self.conns.get_mut(&conn) {
            state.session = Some(id);
            state.listened = false;
        }
        if self.config.cluster {
            // The client learns its ID once the directory holds it for this node
            // ([`Router::claim_confirmed`]): before, another node could not reach it yet, and
            // the ID might turn out to be another node's.
            self.unannounced.insert(id, conn);
            out.bus(BusOutput::Claim(id));
            return;
        }
        self.announce(id, conn, out);
    }

    /// The CONNECT reply of the new session `id` on `conn`.
    fn announce(&mut self, id: Id, conn: ConnId, out: &mut impl FrameSink) {
        let Some(session) = self.sessions.get(&id) else {
            return;
        };
        let reply = protocol::connect_reply(
            id,
            &session.token,
            false,
            std::iter::empty(),
            self.config.max_message_bytes,
            session.version,
        );
        out.send(conn, ServerFrame::Encoded(&reply));
    }

    /// The directory holds the new session `id` for this node (or the bus is down, and it will
    /// be claimed when the bus is back): its client gets the CONNECT reply, if its connection
    /// still holds it.
    pub fn claim_confirmed(&mut self, id: Id, out: &mut impl FrameSink) {
        let Some(conn) = self.unannounced.remove(&id) else {
            return;
        };
        if self.sessions.get(&id).and_then(|session| session.conn) == Some(conn) {
            self.announce(id, conn, out);
        }
    }

    pub(super) fn resume_matches(&self, id: Id, token: Option<&[u8; TOKEN_LEN]>) -> bool {
        if self.config.resume_grace_ms == 0 {
            return false;
        }
        match (self.sessions.get(&id), token) {
            (Some(session), Some(token)) => session.token.matches(token),
            _ => false,
        }
    }

    /// Hands session `id` to `conn`: new token, the reply, then everything queued, in order.
    pub(super) fn resume(&mut self, conn: ConnId, id: Id, version: u8, out: &mut impl FrameSink) {
        self.resume_telling_friends(conn, id, version, true, out);
    }

    /// [`Router::resume`], with PRESENCE to the friends when the session was away only if
    /// `tell_friends` (a session another node handed over from a live connection never looked
    /// away to them).
    pub(super) fn resume_telling_friends(
        &mut self,
        conn: ConnId,
        id: Id,
        version: u8,
        tell_friends: bool,
        out: &mut impl FrameSink,
    ) {
        let token = self.fresh_token();
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.token = token;
        // The resuming client may be newer (a reload): it speaks what its CONNECT said.
        session.version = version;
        let drop_handles = version < 2;
        session.timer_generation = 0;
        let previous_conn = session.conn.replace(conn);
        let queued = session.queue.take_all();
        self.touch(id);
        if self.config.cluster && !queued.is_empty() {
            out.bus(BusOutput::QueueCleared(id));
        }
        match previous_conn {
            Some(old_conn) => {
                self.conns.remove(&old_conn);
                out.close(old_conn, close_code::TAKEN_OVER, "session taken over");
            }
            None => {
                self.sessions_resuming -= 1;
                if self.config.cluster {
                    out.bus(BusOutput::Back(id));
                }
            }
        }
        if let Some(state) = self.conns.get_mut(&conn) {
            state.session = Some(id);
            state.listened = false;
        }
        if drop_handles {
            // A version-1 client can neither hear MESSAGEs to handles nor FETCH them.
            let handles = self.handles.remove_session(id);
            if self.config.cluster {
                self.stopped_listening(id, handles, out);
            }
        }
        let reply = self.resume_reply(id, &token);
        out.send(conn, ServerFrame::Encoded(&reply));
        for entry in queued {
            self.queued_frames -= 1;
            self.queued_bytes -= entry.bytes();
            if entry.kind == QueuedKind::VersionTwo && version < 2 {
                continue;
            }
            out.send(conn, ServerFrame::Encoded(&entry.frame));
        }
        // A takeover never looked offline to friends, so it gets no PRESENCE.
        if previous_conn.is_none() && tell_friends {
            self.tell_friends_presence(id, true, out);
        }
        self.drop_stale_timers();
    }

    pub(super) fn resume_reply(&self, id: Id, token: &ResumeToken) -> String {
        // Another node's session counts as online: the friendship names a live session, and
        // its PRESENCE records say when it goes and comes back.
        let is_online = |friend: &Id| {
            self.sessions
                .get(friend)
                .is_none_or(|friend| friend.conn.is_some())
        };
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

    /// Whether `peer` may start a new session now (its address blocks' rates).
    pub(super) fn start_allowed(&mut self, peer: ClientAddr, now: Now) -> bool {
        if self.session_starts.try_take(peer, now.mono_ms) {
            return true;
        }
        // The live count was taken just before; give it back.
        self.sessions_per_peer.release(peer);
        false
    }
}
