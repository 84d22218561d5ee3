//! MESSAGE, the hot path: a friendship check, the sender's rate, the recipient's caps, then
//! the frame straight to the recipient's connection or into its resume queue.
//!
//! See "The MESSAGE path" in the `router` module docs: the payload and the `ref` are borrowed
//! from the received text, so nothing is allocated unless the frame must be queued.

use super::session::{QueuedFrame, QueuedKind};
use super::{Caller, Entropy, FrameSink, MS_PER_SECOND, Now, Router};
use crate::id::Id;
use crate::protocol::{ErrorCode, RawJson, ServerFrame};

impl<E: Entropy> Router<E> {
    /// The hot path: see the `router` module docs.
    pub(super) fn message(
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
        if self.config.cluster && !self.sessions.contains_key(&to) {
            // A friend that is not here lives on another node (`remote.rs`).
            return self.message_remotely(caller, to, payload, now, out);
        }
        let queued =
            self.receive_message(caller.id, to, payload, now.unix_ms, caller.reference, out)?;
        self.ack(caller, queued, out);
        Ok(())
    }

    /// The recipient's half of a MESSAGE between friends (the sender here or on another node):
    /// the recipient's caps, then the frame to its connection or into its resume queue. Returns
    /// whether it was queued.
    pub(super) fn receive_message(
        &mut self,
        from: Id,
        to: Id,
        payload: RawJson<'_>,
        ts: u64,
        reference: Option<&str>,
        out: &mut impl FrameSink,
    ) -> Result<bool, ErrorCode> {
        let (max_unsent, max_queue_bytes) = self.recipient_caps(out);
        // Friendships name live sessions: one that is gone (another node's, ended meanwhile) is
        // no friend.
        let recipient = self.sessions.get_mut(&to).ok_or(ErrorCode::NotFriends)?;
        let queued = match recipient.conn {
            Some(recipient_conn) => {
                if out.backlog(recipient_conn) > max_unsent {
                    return Err(ErrorCode::PeerBusy);
                }
                let frame = ServerFrame::Message { from, payload, ts };
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
                let frame = ServerFrame::Message { from, payload, ts }.to_text();
                let kind = QueuedKind::Message {
                    sender: from,
                    reference: reference.map(Box::from),
                };
                let entry = QueuedFrame { frame, kind };
                if self.config.cluster {
                    self.save_queued(to, &entry, out);
                }
                if let Some(recipient) = self.sessions.get_mut(&to) {
                    self.queued_bytes += recipient.queue.push(entry);
                    self.queued_frames += 1;
                }
                true
            }
        };
        self.messages_routed += 1;
        Ok(queued)
    }
}
