//! How a session ends: DISCONNECT, a lost connection (the resume window opens, or the session
//! ends at once when resuming is off), and the window's expiry; PRESENCE to friends as the
//! session goes away and comes back.
//!
//! An ending session leaves nothing behind: its friends are told (DISCONNECT), senders of its
//! queued messages get UNDELIVERED, and its pending requests are removed from both sides.

use super::session::QueuedKind;
use super::timers::Deadline;
use super::{Caller, Entropy, FrameSink, Now, Router, close_code, timer_is_live};
use crate::id::Id;
use crate::protocol::{self, ServerFrame};

impl<E: Entropy> Router<E> {
    pub(super) fn disconnect(&mut self, caller: Caller<'_>, out: &mut impl FrameSink) {
        self.ack(caller, false, out);
        self.conns.remove(&caller.conn);
        self.end_session(caller.id, out);
        out.close(caller.conn, close_code::DISCONNECT, "disconnected");
    }

    /// The session lost its connection: open its resume window (or end it when there is none).
    pub(super) fn session_dropped(&mut self, id: Id, now: Now, out: &mut impl FrameSink) {
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
    pub(super) fn tell_friends_presence(&mut self, id: Id, online: bool, out: &mut impl FrameSink) {
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
    pub(super) fn end_session(&mut self, id: Id, out: &mut impl FrameSink) {
        let Some(mut session) = self.sessions.remove(&id) else {
            return;
        };
        self.sessions_per_peer.release(session.peer);
        // Its mail stays in the mailbox for the next session that listens on its handles.
        self.handles.remove_session(id);
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
                    QueuedKind::VersionTwo,
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
}
