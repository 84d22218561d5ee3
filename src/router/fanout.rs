//! MESSAGE to several handles (PROTOCOL.md §11): one upload, one copy per handle.
//!
//! Each copy takes the path of a MESSAGE to that one handle ([`Router::hand_over`]): to its
//! connected listener, or into the mailbox. What the whole frame is refused for (its shape, a
//! string that is not a handle, a handle named twice, the payload, the rate) is checked before
//! any copy leaves, so a refused frame delivers nothing; after that each copy succeeds or fails
//! on its own, and the sender learns which failed.

use super::remote::FanoutWait;
use super::{Caller, Entropy, FrameSink, MS_PER_SECOND, Now, Router};
use crate::protocol::{
    self, ErrorCode, Handle, HandleList, MAX_FANOUT_HANDLES, RawJson, ServerFrame,
    UndeliveredReason,
};

/// Copies one MESSAGE-rate token pays for: a session delivers at most this many times
/// `--rate-messages` copies a second, however large its groups.
pub const COPIES_PER_TOKEN: usize = 4;

/// The rate tokens a MESSAGE to `copies` handles costs: one per [`COPIES_PER_TOKEN`], rounded up.
pub fn tokens_for(copies: usize) -> u32 {
    u32::try_from(copies.div_ceil(COPIES_PER_TOKEN)).unwrap_or(u32::MAX)
}

impl<E: Entropy> Router<E> {
    pub(super) fn message_to_handles(
        &mut self,
        caller: Caller<'_>,
        list: HandleList<'_>,
        payload: Option<RawJson<'_>>,
        may_store: bool,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        // Read in place, on the stack: at most 64 handles, never an allocation.
        let mut targets = [Handle::from_seed(&[]); MAX_FANOUT_HANDLES];
        let mut count = 0;
        for (slot, handle) in targets.iter_mut().zip(list.iter()) {
            *slot = handle.ok_or(ErrorCode::BadHandle)?;
            count += 1;
        }
        let targets = targets.get(..count).unwrap_or(&[]);
        if has_repeat(targets) {
            return Err(ErrorCode::BadRequest);
        }
        let payload = payload.ok_or(ErrorCode::NotEncrypted)?;
        self.take_message_tokens(caller, tokens_for(targets.len()), now)?;
        let (mut sent, mut queued) = (0, 0);
        // In a cluster, copies for handles nobody here listens on go to other nodes: the ACK
        // then waits for their answers (`remote_handles.rs`).
        let mut fanout = None;
        let mut remote = Vec::new();
        for handle in targets {
            if self.config.cluster && self.handles.listener(handle).is_none() {
                let number = *fanout.get_or_insert_with(|| self.awaiting.fanout_number());
                match self.await_copy(caller, number, *handle, now) {
                    Ok(rid) => {
                        remote.push((*handle, rid));
                        let wait = self.awaiting.fanouts.entry(number).or_insert(FanoutWait {
                            sent: 0,
                            queued: 0,
                            pending: 0,
                        });
                        wait.pending += 1;
                    }
                    Err(_) => {
                        // Too many answers awaited already: this copy cannot go now.
                        if let Some(reference) = caller.reference {
                            let reason = UndeliveredReason::PeerBusy;
                            let frame = protocol::undelivered_to_handle(handle, reference, reason);
                            out.send(caller.conn, ServerFrame::Encoded(&frame));
                        }
                    }
                }
                continue;
            }
            let reason = match self.hand_over(caller, handle, payload, may_store, now, out) {
                Ok(false) => {
                    sent += 1;
                    continue;
                }
                Ok(true) => {
                    queued += 1;
                    continue;
                }
                Err(ErrorCode::PeerBusy) => UndeliveredReason::PeerBusy,
                Err(_) => UndeliveredReason::NoMailbox,
            };
            if let Some(reference) = caller.reference {
                let frame = protocol::undelivered_to_handle(handle, reference, reason);
                out.send(caller.conn, ServerFrame::Encoded(&frame));
            }
        }
        if !remote.is_empty() {
            self.send_copies(caller, remote, payload, may_store, now, out);
        }
        if let Some(wait) = fanout.and_then(|number| self.awaiting.fanouts.get_mut(&number)) {
            // The last copy's answer sends the ACK, with these counted in.
            wait.sent += sent;
            wait.queued += queued;
            return Ok(());
        }
        self.messages_routed += (sent + queued) as u64;
        if let Some(reference) = caller.reference {
            let frame = protocol::fanout_ack(reference, sent, queued);
            out.send(caller.conn, ServerFrame::Encoded(&frame));
        }
        Ok(())
    }

    /// Takes `tokens` MESSAGE-rate tokens from the caller's bucket, all or none.
    pub(super) fn take_message_tokens(
        &mut self,
        caller: Caller<'_>,
        tokens: u32,
        now: Now,
    ) -> Result<(), ErrorCode> {
        let rate = self.config.rate_messages_per_sec;
        let session = self
            .sessions
            .get_mut(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        if session
            .message_rate
            .try_take_many(tokens, rate, MS_PER_SECOND, now.mono_ms)
        {
            Ok(())
        } else {
            Err(ErrorCode::RateLimited)
        }
    }
}

/// Whether a handle appears twice: at most 64 of them, so comparing each pair (2,016 compares
/// of 43 bytes at most) is cheaper than sorting a copy.
fn has_repeat(handles: &[Handle]) -> bool {
    handles
        .iter()
        .enumerate()
        .any(|(at, handle)| handles.get(at + 1..).unwrap_or(&[]).contains(handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_token_per_four_copies() {
        assert_eq!(tokens_for(1), 1);
        assert_eq!(tokens_for(4), 1);
        assert_eq!(tokens_for(5), 2);
        assert_eq!(tokens_for(64), 16);
    }

    #[test]
    fn repeats_found_wherever_they_are() {
        let a = Handle::from_seed(b"a");
        let b = Handle::from_seed(b"b");
        let c = Handle::from_seed(b"c");
        assert!(!has_repeat(&[a, b, c]));
        assert!(has_repeat(&[a, b, a]));
        assert!(has_repeat(&[c, b, b]));
        assert!(!has_repeat(&[a]));
    }
}
