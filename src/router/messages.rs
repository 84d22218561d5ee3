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
}
