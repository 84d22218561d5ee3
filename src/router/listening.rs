//! LISTEN and UNLISTEN (version 2): a session's set of handles, answered with LISTENING.
//!
//! A request changes everything it names or nothing: every string is checked to be a handle
//! (`bad_handle`), then the room for the new ones (`too_many_handles`), before any handle moves.
//! A handle another session listened on moves to the caller, and that session is told
//! (HANDLE_TAKEN); a handle a session gave up to make room in a full table is gone from it, and
//! it is told too (HANDLE_DROPPED). Both frames take a token of the MESSAGE rate.

use super::session::QueuedKind;
use super::sink::BusOutput;
use super::{Caller, Entropy, FrameSink, Now, Router};
use crate::protocol::{self, ErrorCode, Handle, HandleList, ServerFrame};

impl<E: Entropy> Router<E> {
    pub(super) fn listen(
        &mut self,
        caller: Caller<'_>,
        list: HandleList<'_>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let mut new = checked_handles(list)?;
        self.take_message_token(caller, now)?;
        let block = self
            .sessions
            .get(&caller.id)
            .ok_or(ErrorCode::NotConnected)?
            .peer
            .largest_block();
        new.sort_unstable();
        new.dedup();
        // In a cluster the first LISTEN of a connection tells the directory every handle asked
        // for, those the caller holds already included: its client LISTENs again after each
        // CONNECT, and that is when the letters the cluster's mailbox kept for it while it was
        // away come back. Later LISTENs tell it only the handles new to the caller: each one
        // told costs a Redis script, and a client may send LISTENs at its MESSAGE rate.
        let first = self
            .conns
            .get(&caller.conn)
            .is_some_and(|state| !state.listened);
        let again = if self.config.cluster && first {
            new.clone()
        } else {
            Vec::new()
        };
        new.retain(|handle| self.handles.listener(handle) != Some(caller.id));
        let mailbox = &self.mailbox;
        let changes = self
            .handles
            .listen(caller.id, block, &new, |handle| mailbox.mail_for(handle))
            .map_err(|_| ErrorCode::TooManyHandles)?;
        if let Some(state) = self.conns.get_mut(&caller.conn) {
            state.listened = true;
        }
        if self.config.cluster {
            let asked = if first { again } else { new };
            for handle in asked {
                out.bus(BusOutput::Listen {
                    handle,
                    id: caller.id,
                });
            }
            for &(id, handle) in &changes.dropped {
                self.stopped_listening(id, [handle], out);
            }
        }
        let taken = changes
            .taken
            .into_iter()
            .map(|(previous, handle)| (previous, protocol::handle_taken(&handle)));
        let dropped = changes
            .dropped
            .into_iter()
            .map(|(session, handle)| (session, protocol::handle_dropped(&handle)));
        for (session, frame) in taken.chain(dropped) {
            self.deliver(
                session,
                ServerFrame::Encoded(&frame),
                QueuedKind::VersionTwo,
                out,
            );
        }
        self.answer_listening(caller, out);
        Ok(())
    }

    pub(super) fn unlisten(
        &mut self,
        caller: Caller<'_>,
        list: HandleList<'_>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let gone = checked_handles(list)?;
        self.take_message_token(caller, now)?;
        self.handles.unlisten(caller.id, &gone);
        if self.config.cluster {
            // The directory forgets only the entries that still name the caller.
            self.stopped_listening(caller.id, gone, out);
        }
        self.answer_listening(caller, out);
        Ok(())
    }

    /// One token of the caller's MESSAGE rate, or `rate_limited`.
    pub(super) fn take_message_token(
        &mut self,
        caller: Caller<'_>,
        now: Now,
    ) -> Result<(), ErrorCode> {
        self.take_message_tokens(caller, 1, now)
    }

    /// LISTENING: how many handles the caller listens on, and how many letters wait for them
    /// (both kept as counts: nothing is walked).
    fn answer_listening(&mut self, caller: Caller<'_>, out: &mut impl FrameSink) {
        let handles = self.handles.count_of(caller.id);
        let waiting = self.handles.waiting_of(caller.id);
        out.send(
            caller.conn,
            ServerFrame::Encoded(&protocol::listening(handles, waiting, caller.reference)),
        );
    }
}

/// Every string of the list as a handle, or `bad_handle` for the first one that is not.
fn checked_handles(list: HandleList<'_>) -> Result<Vec<Handle>, ErrorCode> {
    list.iter()
        .map(|handle| handle.ok_or(ErrorCode::BadHandle))
        .collect()
}
