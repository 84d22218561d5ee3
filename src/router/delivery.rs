//! What goes out to one session or connection, and whether it may: `deliver` (sent
//! now, or queued while the session is in its resume window), ACK, ERROR with the flood count,
//! and the per-recipient caps that turn a capped frame into `peer_busy`.
//!
//! Every byte queued here is counted in `queued_frames`/`queued_bytes`, and a capped frame is
//! refused while its recipient is behind (see "Memory bounds" in the `router` module docs).

use super::session::{QueuedFrame, QueuedKind};
use super::{Caller, ConnId, Entropy, FrameSink, Now, Router, close_code};
use crate::id::Id;
use crate::protocol::{self, ErrorCode, ServerFrame};

/// While all output together is over `max_buffered_bytes`, the per-recipient caps are divided
/// by this (16 KiB of unsent output and of resume queue with the defaults).
pub(super) const BUDGET_SQUEEZE: usize = 16;

impl<E: Entropy> Router<E> {
    /// Whether a capped frame to `target` must be refused with `peer_busy`, with the
    /// recipient caps divided by `share` (1 for the full caps).
    pub(super) fn is_busy(&self, target: Id, share: usize, out: &impl FrameSink) -> bool {
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

    /// The caps on one recipient's unsent bytes and resume-queue bytes in force now: a sixteenth
    /// of the configured ones while the server as a whole holds more than `max_buffered_bytes`
    /// (see the `router` module docs).
    pub(super) fn recipient_caps(&self, out: &impl FrameSink) -> (usize, usize) {
        let (unsent, queue) = (self.config.max_unsent_bytes, self.config.max_queue_bytes);
        if out.total_backlog() + self.queued_bytes > self.config.max_buffered_bytes {
            (unsent / BUDGET_SQUEEZE, queue / BUDGET_SQUEEZE)
        } else {
            (unsent, queue)
        }
    }

    /// Sends `frame` to session `target`, or queues it when the session is in its window.
    /// Returns whether it was queued. A frame for a session that no longer exists is dropped.
    pub(super) fn deliver(
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
                let entry = QueuedFrame {
                    frame: frame.to_text(),
                    kind,
                };
                self.save_queued(target, &entry, out);
                if let Some(session) = self.sessions.get_mut(&target) {
                    self.queued_bytes += session.queue.push(entry);
                    self.queued_frames += 1;
                }
                true
            }
        }
    }

    pub(super) fn ack(&mut self, caller: Caller<'_>, queued: bool, out: &mut impl FrameSink) {
        if let Some(reference) = caller.reference {
            out.send(caller.conn, ServerFrame::Ack { reference, queued });
        }
    }

    /// Counts one ERROR `code` sent, for [`RouterStats::errors_sent`](super::RouterStats::errors_sent).
    pub(super) fn count_error(&mut self, code: ErrorCode) {
        if let Some(count) = self.errors_sent.get_mut(code as usize) {
            *count += 1;
        }
    }

    /// Answers with ERROR `code`; closes the connection (1008) on the error that floods.
    pub(super) fn refuse(
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
}
