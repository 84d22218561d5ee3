//! How a session ends: DISCONNECT, a lost connection (the resume window opens, or the session
//! ends at once when resuming is off), and the window's expiry; PRESENCE to friends as the
//! session goes away and comes back.
//!
//! An ending session leaves nothing behind: its friends are told (DISCONNECT), senders of its
//! queued messages get UNDELIVERED, and its pending requests are removed from both sides.

use super::remote::Record;
use super::session::QueuedKind;
use super::sink::BusOutput;
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
        if self.config.cluster {
            out.bus(BusOutput::Away(id));
        }
        self.tell_friends_presence(id, false, out);
    }

    /// Sends PRESENCE to every connected friend; friends in their window miss it by design.
    pub(super) fn tell_friends_presence(&mut self, id: Id, online: bool, out: &mut impl FrameSink) {
        let Some(session) = self.sessions.get(&id) else {
            return;
        };
        let presence = protocol::presence(id, online);
        let mut remote = Vec::new();
        for friend in &session.friends {
            match self.sessions.get(friend) {
                Some(friend_session) => {
                    if let Some(friend_conn) = friend_session.conn {
                        out.send(friend_conn, ServerFrame::Encoded(&presence));
                    }
                }
                None => remote.push(*friend),
            }
        }
        for friend in remote {
            let record = Record::Presence {
                from: id,
                to: friend,
                online,
            };
            self.tell_remote(record, out);
        }
    }

    /// Ends session `id` (window expired, or DISCONNECT): see PROTOCOL.md §4.
    pub(super) fn end_session(&mut self, id: Id, out: &mut impl FrameSink) {
        let Some(mut session) = self.sessions.remove(&id) else {
            return;
        };
        self.sessions_per_peer.release(session.peer);
        self.unannounced.remove(&id);
        self.checkpoint_due.remove(&id);
        if session.claimed {
            out.bus(BusOutput::Release(id));
        }
        // Its mail stays in the mailbox for the next session that listens on its handles (in a
        // cluster, the cluster's mailbox).
        let handles = self.handles.remove_session(id);
        if self.config.cluster {
            self.stopped_listening(id, handles, out);
        }
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
                } else if self.config.cluster {
                    let record = Record::Undelivered {
                        from: id,
                        to: sender,
                        reference: reference.into_string().into(),
                    };
                    self.tell_remote(record, out);
                }
            }
        }
        for friend in session.friends {
            match self.sessions.get_mut(&friend) {
                Some(friend_session) => {
                    friend_session.friends.remove(&id);
                    self.touch(friend);
                }
                None => {
                    self.tell_remote(
                        Record::Bye {
                            from: id,
                            to: friend,
                        },
                        out,
                    );
                    continue;
                }
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
                self.tell_remote(
                    Record::Cancel {
                        from: id,
                        to: target,
                    },
                    out,
                );
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
            match self.sessions.get_mut(&requester) {
                Some(requester_session) => {
                    requester_session.pending_out.remove(&id);
                }
                None => {
                    let record = Record::Withdrawn {
                        from: id,
                        to: requester,
                    };
                    self.tell_remote(record, out);
                }
            }
        }
    }
}
