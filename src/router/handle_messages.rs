//! MESSAGE to a handle, the mailbox's side of the router, and FETCH (version 2).
//!
//! With a connected listener a MESSAGE to a handle takes the same path as one to a friend (see
//! "The MESSAGE path" in the `router` module docs): one lookup in the handle table in place of
//! the friendship check, the payload borrowed into a [`ServerFrame::HandleMessage`], nothing
//! allocated. Otherwise it becomes a letter in the mailbox (its frame text allocated once), and
//! letters the mailbox drops, now to make room or later at their TTL ([`Router::tick`]), are
//! reported to their senders with UNDELIVERED.

use std::borrow::Cow;

use super::mailbox::{Letter, Sender};
use super::remote::Record;
use super::session::QueuedKind;
use super::sink::{BusOutput, MailLetter};
use super::{Caller, Entropy, FrameSink, MS_PER_SECOND, Now, Router};
use crate::protocol::{
    self, ErrorCode, Handle, HandleArg, RawJson, ServerFrame, UndeliveredReason,
};

/// A FETCH answer stops once it holds this fraction of the caller's cap on unsent bytes.
const FETCH_SHARE_OF_UNSENT: usize = 2;

/// Letters one [`Router::tick`] expires at most. A second's worth of stored mail all expires in
/// the same second a week later; expiring it in one go (each letter an UNDELIVERED to build and
/// a few tree updates, about a microsecond) would stall the loop for as long. The rest stays
/// due: [`Router::next_deadline_ms`] is then in the past, so the loop serves its sockets once and
/// ticks again at once.
pub(super) const EXPIRY_CHUNK: usize = 256;

impl<E: Entropy> Router<E> {
    /// MESSAGE to a handle, `handle` as decoded (not checked yet) and `mailbox` as given
    /// (`None`: not a boolean). The handle's text is looked up first: one someone listens on is
    /// a handle, so the check (and the copy it makes) is only for handles nobody listens on. The
    /// sender's session is looked up once, for its version and its rate. The errors come in
    /// their order all the same (PROTOCOL.md §10).
    pub(super) fn message_to_handle(
        &mut self,
        caller: Caller<'_>,
        handle: HandleArg<'_>,
        payload: Option<RawJson<'_>>,
        mailbox: Option<bool>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let held = handle
            .text()
            .and_then(|text| self.handles.listener_of_text(text));
        let rate = self.config.rate_messages_per_sec;
        let sender = self
            .sessions
            .get_mut(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        if sender.version < 2 {
            // To version 1, `handle` is unknown: the MESSAGE lacks its `to`.
            return Err(ErrorCode::BadRequest);
        }
        let may_store = mailbox.ok_or(ErrorCode::BadRequest)?;
        let checked = match held {
            Some(_) => None,
            None => Some(handle.checked().ok_or(ErrorCode::BadHandle)?),
        };
        let payload = payload.ok_or(ErrorCode::NotEncrypted)?;
        if !sender
            .message_rate
            .try_take(rate, MS_PER_SECOND, now.mono_ms)
        {
            return Err(ErrorCode::RateLimited);
        }
        // A handle written with escapes is looked up once decoded.
        let held = held.or_else(|| {
            let checked = checked.as_ref()?;
            self.handles.listener_of_text(checked.as_bytes())
        });
        if held.is_none()
            && self.config.cluster
            && let Some(handle) = checked
        {
            // Nobody here listens on it: its listener may be another node's (`remote_handles.rs`).
            return self
                .handle_message_remotely(caller, handle, payload, may_store, None, now, out);
        }
        let listener_conn = held
            .and_then(|(_, listener)| self.sessions.get(&listener))
            .and_then(|listener| listener.conn);
        let queued = match (held, listener_conn) {
            (Some((handle, _)), Some(conn)) => {
                let (max_unsent, _) = self.recipient_caps(out);
                if out.backlog(conn) > max_unsent {
                    return Err(ErrorCode::PeerBusy);
                }
                let frame = ServerFrame::HandleMessage {
                    handle,
                    payload,
                    ts: now.unix_ms,
                };
                out.send(conn, frame);
                false
            }
            // A probe (`"mailbox":false`) is never stored: nobody connected listens.
            _ if !may_store => return Err(ErrorCode::NoMailbox),
            (held, _) => {
                let Some(handle) = held.map(|(handle, _)| *handle).or(checked) else {
                    return Err(ErrorCode::BadHandle);
                };
                let frame = ServerFrame::HandleMessage {
                    handle: &handle,
                    payload,
                    ts: now.unix_ms,
                };
                self.store_letter(caller, handle, frame, now, out)?;
                true
            }
        };
        self.messages_routed += 1;
        self.ack(caller, queued, out);
        Ok(())
    }

    /// One copy of a MESSAGE to several handles (PROTOCOL.md §11) for `handle`, already checked:
    /// to its connected listener (`Ok(false)`), else into the mailbox (`Ok(true)`); `peer_busy` or
    /// `no_mailbox` when neither can take it.
    pub(super) fn hand_over(
        &mut self,
        caller: Caller<'_>,
        handle: &Handle,
        payload: RawJson<'_>,
        may_store: bool,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<bool, ErrorCode> {
        let listener_conn = self
            .handles
            .listener(handle)
            .and_then(|listener| self.sessions.get(&listener))
            .and_then(|listener| listener.conn);
        let frame = ServerFrame::HandleMessage {
            handle,
            payload,
            ts: now.unix_ms,
        };
        match listener_conn {
            Some(conn) => {
                let (max_unsent, _) = self.recipient_caps(out);
                if out.backlog(conn) > max_unsent {
                    return Err(ErrorCode::PeerBusy);
                }
                out.send(conn, frame);
                Ok(false)
            }
            // A probe (`"mailbox":false`) is never stored: nobody connected listens.
            None if !may_store => Err(ErrorCode::NoMailbox),
            None => {
                self.store_letter(caller, *handle, frame, now, out)?;
                Ok(true)
            }
        }
    }

    /// Keeps `frame` in the mailbox for `handle`, from the caller's session; `no_mailbox` when
    /// it cannot be.
    fn store_letter(
        &mut self,
        caller: Caller<'_>,
        handle: Handle,
        frame: ServerFrame<'_>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let sender = self
            .sessions
            .get(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        let from = Sender {
            id: caller.id,
            serial: sender.serial,
        };
        let block = sender.peer.largest_block();
        let reference = caller.reference.map(Box::from);
        self.store_letter_from(handle, frame, from, reference, block, now, out)
    }

    /// Keeps `frame` for `handle`, from `sender` (here or, in a cluster, on another node)
    /// whose session was made from `block`; `no_mailbox` when it cannot be.
    ///
    /// In a cluster, a letter for a listener that is away (in its resume window) waits in the
    /// cluster's mailbox in Redis, not in this node's memory, so that it outlives this node and
    /// reaches the listener wherever it comes back (its client LISTENs again after its CONNECT,
    /// which takes the letters). Only letters for a connected listener that is behind wait here,
    /// for its FETCH, and letters Redis could not keep ([`Router::letter_unkept`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_letter_from(
        &mut self,
        handle: Handle,
        frame: ServerFrame<'_>,
        sender: Sender,
        reference: Option<Box<str>>,
        block: crate::address::Block,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        if !self.mailbox.is_on() {
            return Err(ErrorCode::NoMailbox);
        }
        let listener_away = self
            .handles
            .listener(&handle)
            .and_then(|listener| self.sessions.get(&listener))
            .is_some_and(|listener| listener.conn.is_none());
        if self.config.cluster && listener_away {
            out.bus(BusOutput::StoreLetter {
                handle,
                letter: MailLetter {
                    frame: frame.to_text(),
                    block,
                },
            });
            return Ok(());
        }
        self.keep_letter_here(handle, frame, sender, reference, block, now, out)
    }

    /// Keeps `frame` in this node's mailbox for `handle` (see [`Router::store_letter_from`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn keep_letter_here(
        &mut self,
        handle: Handle,
        frame: ServerFrame<'_>,
        sender: Sender,
        reference: Option<Box<str>>,
        block: crate::address::Block,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        if !self.mailbox.is_on() {
            return Err(ErrorCode::NoMailbox);
        }
        let letter = Letter {
            handle,
            frame: frame.to_text().into_boxed_str(),
            sender,
            reference,
            block,
            stored_ms: now.mono_ms,
        };
        let evicted = self
            .mailbox
            .store(letter)
            .map_err(|_| ErrorCode::NoMailbox)?;
        self.handles.mail(&handle, self.mailbox.mail_for(&handle));
        for letter in evicted {
            self.handles
                .mail(&letter.handle, self.mailbox.mail_for(&letter.handle));
            self.tell_undelivered(&letter, UndeliveredReason::Evicted, out);
        }
        Ok(())
    }

    /// Drops the letters whose TTL has passed, at most [`EXPIRY_CHUNK`] of them, telling their
    /// senders.
    pub(super) fn expire_letters(&mut self, now: Now, out: &mut impl FrameSink) {
        for _ in 0..EXPIRY_CHUNK {
            let Some(letter) = self.mailbox.pop_expired(now.mono_ms) else {
                break;
            };
            self.handles
                .mail(&letter.handle, self.mailbox.mail_for(&letter.handle));
            self.tell_undelivered(&letter, UndeliveredReason::Expired, out);
        }
    }

    /// UNDELIVERED to the sender of a letter dropped unread, if it had a `ref` and the session
    /// that stored it is still live and speaks version 2.
    fn tell_undelivered(
        &mut self,
        letter: &Letter,
        reason: UndeliveredReason,
        out: &mut impl FrameSink,
    ) {
        let Some(reference) = &letter.reference else {
            return;
        };
        let Sender { id, serial } = letter.sender;
        if self.config.cluster && !self.sessions.contains_key(&id) {
            // Stored for another node's session: its node checks the serial.
            let record = Record::HandleUndelivered {
                to: id,
                serial,
                handle: Cow::Borrowed(letter.handle.as_str()),
                reference: Cow::Borrowed(reference),
                reason: Cow::Borrowed(reason.as_str()),
            };
            self.tell_remote(record, out);
            return;
        }
        let live = self
            .sessions
            .get(&id)
            .is_some_and(|session| session.serial == serial && session.version >= 2);
        if live {
            let frame = protocol::undelivered_to_handle(&letter.handle, reference, reason);
            self.deliver(
                id,
                ServerFrame::Encoded(&frame),
                QueuedKind::VersionTwo,
                out,
            );
        }
    }

    /// FETCH: the letters for the caller's handles, oldest first across them, until the answer
    /// holds half the cap on the caller's unsent bytes (at least one letter), then FETCHED.
    /// The handle table ranks the caller's handles by their oldest letter, so each letter sent
    /// costs O(log n) and nothing walks the caller's handles.
    pub(super) fn fetch(
        &mut self,
        caller: Caller<'_>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        self.take_message_token(caller, now)?;
        let (max_unsent, _) = self.recipient_caps(out);
        let budget = max_unsent / FETCH_SHARE_OF_UNSENT;
        let mut sent = 0;
        while sent < budget
            && let Some(handle) = self.handles.oldest_mail_of(caller.id)
        {
            let letter = self.mailbox.take_oldest_for(&handle);
            // The ranking follows the mailbox after every change, so the letter is there; were
            // it not, refiling the handle still takes it out of the ranking.
            self.handles.mail(&handle, self.mailbox.mail_for(&handle));
            if let Some(letter) = letter {
                out.send(caller.conn, ServerFrame::Encoded(&letter.frame));
                sent += letter.frame.len();
            }
        }
        let waiting = self.handles.waiting_of(caller.id);
        out.send(
            caller.conn,
            ServerFrame::Encoded(&protocol::fetched(waiting, caller.reference)),
        );
        Ok(())
    }
}
