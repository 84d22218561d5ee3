//! Handles across nodes (cluster mode): a MESSAGE to a handle whose listener is on another node,
//! the letters kept in the cluster's mailbox for handles nobody listens on, and a handle that
//! moves from one node's session to another's.
//!
//! The directory names each handle's listener (a session ID); the bus routes a record for a
//! handle to that session's node. Where nobody listens on a handle, the bus keeps the letter
//! in the shared mailbox, and hands every kept letter to the node of the next session that
//! listens on it ([`Router::stored_letters`]). A listener in its resume window keeps its
//! letters in its own node's mailbox, as on one node. When another node's session takes a
//! handle over, the letters waiting here for it follow it there.
//!
//! Redis orders the LISTENs of a handle, and its directory entry names the last listener: that
//! one keeps the handle. So a node gives up a session's entry the moment the session stops
//! listening, however that happens (`BusOutput::Unlisten`: no entry outlives its listener), and
//! a HandleTaken record that may be older than a LISTEN here is checked against the directory
//! before it is believed ([`Router::handle_taken_record`]).
//!
//! A MESSAGE to several handles sends one record per copy whose listener is elsewhere, all of a
//! turn's records for a node in one PUBLISH; its ACK (`sent`, `queued`) waits until every copy
//! is answered, and each copy that fails gets its UNDELIVERED, as on one node.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use super::handles::KeyedBuild;
use super::mailbox::Sender;
use super::remote::{Awaiting, FanoutWait, Record, Waiting};
use super::session::QueuedKind;
use super::sink::{BusOutput, MailLetter};
use super::{Caller, Entropy, FrameSink, Now, Router};
use crate::address::Block;
use crate::id::Id;
use crate::protocol::{self, ErrorCode, Handle, RawJson, ServerFrame, UndeliveredReason};

/// How long after a LISTEN here took a handle from another node's session a HandleTaken record
/// from that session for the handle may be one made before that LISTEN, and is checked against
/// the directory before it is believed: longer than a record takes between nodes (one PUBLISH,
/// behind at most one directory lookup).
pub const TAKEN_BACK_MS: u64 = 10_000;
/// Handles taken back ([`TAKEN_BACK_MS`]) remembered at most; the oldest are forgotten first (a
/// record for one forgotten is believed at once: if it was the older of two crossing LISTENs',
/// nobody listens on the handle until its client LISTENs again).
pub const MAX_TAKEN_BACK: usize = 4_096;

/// The handles LISTENs here took from other nodes' sessions in the last [`TAKEN_BACK_MS`], with
/// the session each was taken from, in the order they were taken (one deadline for all).
#[derive(Debug)]
pub(super) struct TakenBack {
    until: HashMap<(Handle, Id), u64, KeyedBuild>,
    order: VecDeque<(Handle, Id, u64)>,
}

impl TakenBack {
    pub(super) fn new(build: KeyedBuild) -> TakenBack {
        TakenBack {
            until: HashMap::with_hasher(build),
            order: VecDeque::new(),
        }
    }

    fn remember(&mut self, handle: Handle, from: Id, now: Now) {
        let until = now.mono_ms.saturating_add(TAKEN_BACK_MS);
        self.until.insert((handle, from), until);
        self.order.push_back((handle, from, until));
        self.forget_old(now);
    }

    /// Whether a LISTEN here took `handle` from `from` within the last [`TAKEN_BACK_MS`].
    fn holds(&mut self, handle: Handle, from: Id, now: Now) -> bool {
        self.forget_old(now);
        self.until.contains_key(&(handle, from))
    }

    /// Forgets what is older than [`TAKEN_BACK_MS`], and the oldest beyond [`MAX_TAKEN_BACK`].
    fn forget_old(&mut self, now: Now) {
        while let Some(&(handle, from, until)) = self.order.front() {
            if until > now.mono_ms && self.order.len() <= MAX_TAKEN_BACK {
                break;
            }
            self.order.pop_front();
            // A later take of the same pair has its own place further on.
            if self.until.get(&(handle, from)) == Some(&until) {
                self.until.remove(&(handle, from));
            }
        }
    }

    /// Within its bound, and every pair remembered has its place in the order.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.order.len() > MAX_TAKEN_BACK {
            return Err(format!(
                "{} handles taken back remembered",
                self.order.len()
            ));
        }
        let order: std::collections::HashSet<&(Handle, Id, u64)> = self.order.iter().collect();
        let placed = |(&(handle, from), &until): (&(Handle, Id), &u64)| {
            order.contains(&(handle, from, until))
        };
        if !self.until.iter().all(placed) {
            return Err("a handle taken back has no place in the order".to_owned());
        }
        Ok(())
    }
}

/// A letter with no sender to tell: one the cluster's mailbox kept (it keeps no sender), or one
/// that followed its handle from another node.
fn nobody() -> Sender {
    Sender {
        id: Id::from_random_bytes([0; 4]),
        // No session has this serial (they count up from 1), so no UNDELIVERED is ever sent.
        serial: u64::MAX,
    }
}

/// What the copies of one MESSAGE to several handles share, as the bus needs it to make one
/// record per node and the letters of handles nobody listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FanoutParts {
    pub from: Id,
    /// The payload's raw JSON, as the client sent it.
    pub payload: String,
    pub ts: u64,
    pub may_store: bool,
    pub block: Block,
    pub serial: u64,
    /// The raw JSON of the MESSAGE's `ref`.
    pub reference: Option<String>,
}

impl FanoutParts {
    /// The record for the copies to `handles` (with their request numbers), all on one node.
    pub fn record(&self, handles: &[(Handle, u64)]) -> String {
        Record::HandleMessages {
            from: self.from,
            handles: handles
                .iter()
                .map(|(handle, rid)| (Cow::Borrowed(handle.as_str()), *rid))
                .collect(),
            payload: &self.payload,
            ts: self.ts,
            may_store: self.may_store,
            block: self.block,
            serial: self.serial,
            reference: self.reference.as_deref().map(Cow::Borrowed),
        }
        .to_json()
    }

    /// The MESSAGE frame the listener of `handle` gets, with its sender's block: what the
    /// mailbox keeps for it.
    pub fn letter(&self, handle: &Handle) -> MailLetter {
        MailLetter {
            frame: ServerFrame::HandleMessage {
                handle,
                payload: RawJson::from_record(&self.payload),
                ts: self.ts,
            }
            .to_text(),
            block: self.block,
        }
    }
}

/// A MESSAGE to handles that came from another node's session: what its copies share.
#[derive(Clone, Copy)]
pub(super) struct RemoteLetter<'a> {
    pub(super) from: Id,
    pub(super) payload: RawJson<'a>,
    pub(super) ts: u64,
    pub(super) may_store: bool,
    pub(super) block: Block,
    pub(super) serial: u64,
    pub(super) reference: Option<&'a str>,
}

impl<E: Entropy> Router<E> {
    /// A MESSAGE to `handle`, which no session here listens on: to its listener's node, or into
    /// the cluster's mailbox. `fanout`: the MESSAGE to several handles this copy belongs to.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_message_remotely(
        &mut self,
        caller: Caller<'_>,
        handle: Handle,
        payload: RawJson<'_>,
        may_store: bool,
        fanout: Option<u64>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let what = match fanout {
            Some(fanout) => Waiting::Copy { fanout, handle },
            None => Waiting::Handle,
        };
        let (serial, block) = self
            .sessions
            .get(&caller.id)
            .map(|session| (session.serial, session.peer.largest_block()))
            .ok_or(ErrorCode::NotConnected)?;
        let rid = self.await_reply(caller, what, now)?;
        let record = Record::HandleMessage {
            from: caller.id,
            handle: Cow::Borrowed(handle.as_str()),
            payload: payload.get(),
            ts: now.unix_ms,
            rid,
            may_store,
            block,
            serial,
            reference: caller.reference.map(Cow::Borrowed),
        };
        // With the mailbox off (`--mailbox-bytes 0`) no node keeps letters, the cluster's included.
        let letter = (may_store && self.mailbox.is_on()).then(|| MailLetter {
            frame: ServerFrame::HandleMessage {
                handle: &handle,
                payload,
                ts: now.unix_ms,
            }
            .to_text(),
            block,
        });
        self.bus_records_out += 1;
        out.bus(BusOutput::ToHandle {
            handle,
            rid: Some(rid),
            record: record.to_json(),
            letter,
        });
        Ok(())
    }

    /// The copies of a MESSAGE to several handles whose listeners are not here (`handles`, with
    /// the numbers of their waits, already counted in fan-out `fanout`): one output, which the
    /// bus splits by node.
    pub(super) fn send_copies(
        &mut self,
        caller: Caller<'_>,
        handles: Vec<(Handle, u64)>,
        payload: RawJson<'_>,
        may_store: bool,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let Some((serial, block)) = self
            .sessions
            .get(&caller.id)
            .map(|session| (session.serial, session.peer.largest_block()))
        else {
            return;
        };
        let parts = FanoutParts {
            from: caller.id,
            payload: payload.get().to_owned(),
            ts: now.unix_ms,
            may_store,
            block,
            serial,
            reference: caller.reference.map(str::to_owned),
        };
        self.bus_records_out += 1;
        out.bus(BusOutput::ToHandles { handles, parts });
    }

    /// Records the wait for one copy of fan-out `fanout` to `handle` (not sent yet: see
    /// [`Router::send_copies`]); its request number.
    pub(super) fn await_copy(
        &mut self,
        caller: Caller<'_>,
        fanout: u64,
        handle: Handle,
        now: Now,
    ) -> Result<u64, ErrorCode> {
        self.await_reply(caller, Waiting::Copy { fanout, handle }, now)
    }

    /// The bus kept the letter of request `rid` in the cluster's mailbox: it is queued.
    pub fn bus_stored(&mut self, rid: u64, now: Now, out: &mut impl FrameSink) {
        if let Some(entry) = self.awaiting.take(rid) {
            self.resolve(entry, Ok(true), now, out);
        }
    }

    /// A LISTEN here took `handle` from `previous`, another node's session: it is told, and for
    /// `TAKEN_BACK_MS` a HandleTaken record from `previous` for the handle is believed here
    /// only once the directory confirms it (`Router::handle_taken_record`).
    pub fn handle_moved(
        &mut self,
        handle: Handle,
        previous: Id,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let Some(listener) = self.handles.listener(&handle) else {
            return;
        };
        if listener == previous || self.sessions.contains_key(&previous) {
            return;
        }
        self.taken_back.remember(handle, previous, now);
        let record = Record::HandleTaken {
            from: listener,
            to: previous,
            handle: Cow::Borrowed(handle.as_str()),
        };
        self.send_record(&record, out);
    }

    /// Letters the cluster's mailbox kept for `handle`, handed over as a session here listens on
    /// it: each MESSAGE frame as its listener gets it.
    pub fn stored_letters(
        &mut self,
        handle: Handle,
        letters: &[(Vec<u8>, Option<Block>)],
        now: Now,
        out: &mut impl FrameSink,
    ) {
        for (letter, block) in letters {
            if let Ok(frame) = std::str::from_utf8(letter) {
                self.letter_arrived(handle, frame, *block, now, out);
            }
        }
    }

    /// One letter for `handle`, from the cluster's mailbox or from the node it waited on: to
    /// the listener here if connected, else where [`Router::store_letter_from`] keeps letters
    /// for it, or back to the cluster's mailbox if nobody here listens any more.
    pub(super) fn letter_arrived(
        &mut self,
        handle: Handle,
        frame: &str,
        block: Option<Block>,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        self.place_letter(handle, frame, block, true, now, out);
    }

    /// A letter the bus could not put in the cluster's mailbox (Redis unreachable, or refusing
    /// writes): to the listener here if connected, else into this node's mailbox, as on one
    /// node, rather than lost.
    pub fn letter_unkept(
        &mut self,
        handle: Handle,
        letter: &MailLetter,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        self.place_letter(handle, &letter.frame, Some(letter.block), false, now, out);
    }

    /// See [`Router::letter_arrived`]; `to_cluster`: whether the letter may go (back) to the
    /// cluster's mailbox.
    fn place_letter(
        &mut self,
        handle: Handle,
        frame: &str,
        block: Option<Block>,
        to_cluster: bool,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        if !super::remote::is_frame(frame) {
            log::warn!("cluster: dropped a letter that is not a frame");
            return;
        }
        let listener = self.handles.listener(&handle);
        let conn = listener
            .and_then(|listener| self.sessions.get(&listener))
            .and_then(|session| session.conn);
        // A connected listener gets it at once while it keeps up; one that is behind finds it
        // in this node's mailbox at its next FETCH, so that letters handed over in bulk never
        // push it past its outbox's ceiling.
        let (max_unsent, _) = self.recipient_caps(out);
        let conn = conn.filter(|&conn| out.backlog(conn) <= max_unsent / 2);
        // Counted against its sender's block, or, when the record does not name it, against
        // the listener's own.
        let block = block
            .or_else(|| {
                listener
                    .and_then(|listener| self.sessions.get(&listener))
                    .map(|session| session.peer.largest_block())
            })
            .unwrap_or_else(|| crate::address::ClientAddr::UNSPECIFIED.largest_block());
        let stored = match (listener, conn) {
            (Some(_), Some(conn)) => {
                out.send(conn, ServerFrame::Encoded(frame));
                return;
            }
            (None, _) if !self.mailbox.is_on() => return,
            (None, _) if to_cluster => {
                out.bus(BusOutput::StoreLetter {
                    handle,
                    letter: MailLetter {
                        frame: frame.to_owned(),
                        block,
                    },
                });
                return;
            }
            _ => {
                let keep = if to_cluster {
                    Self::store_letter_from
                } else {
                    Self::keep_letter_here
                };
                let frame = ServerFrame::Encoded(frame);
                keep(self, handle, frame, nobody(), None, block, now, out)
            }
        };
        if stored.is_err() {
            log::debug!("cluster: a letter for a handle here found no room");
        }
    }

    /// Session `id` here no longer listens on `handles` (cluster mode): the directory forgets
    /// the entries that still name it, and the letters this node keeps for a handle nobody
    /// here listens on now go to the cluster's mailbox, where the next listener finds them on
    /// whichever node it is (back here if Redis cannot keep them).
    pub(super) fn stopped_listening(
        &mut self,
        id: Id,
        handles: impl IntoIterator<Item = Handle>,
        out: &mut impl FrameSink,
    ) {
        for handle in handles {
            out.bus(BusOutput::Unlisten { handle, id });
            if self.handles.listener(&handle).is_some() {
                continue;
            }
            while let Some(letter) = self.mailbox.take_oldest_for(&handle) {
                self.handles.mail(&handle, self.mailbox.mail_for(&handle));
                out.bus(BusOutput::StoreLetter {
                    handle,
                    letter: MailLetter {
                        frame: letter.frame.into_string(),
                        block: letter.block,
                    },
                });
            }
        }
    }

    /// A HandleTaken record: `from`, on another node, took `handle` from `to` here. Believed at
    /// once, unless a LISTEN here took the handle from `from` less than [`TAKEN_BACK_MS`] ago:
    /// then the two LISTENs may have crossed, each node telling the other's session, and only
    /// the one Redis ran last may keep the handle, as on one node. Which one that was, only the
    /// directory knows: the bus checks its entry now, and `to` is told only if it names another
    /// listener ([`Router::handle_lost`]).
    pub(super) fn handle_taken_record(
        &mut self,
        from: Id,
        to: Id,
        handle: Handle,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        if !self.taken_back.holds(handle, from, now) {
            self.handle_taken_elsewhere(to, handle, out);
        } else if self.handles.listener(&handle) == Some(to) {
            out.bus(BusOutput::CheckHandle { handle, id: to });
        }
    }

    /// Another node's session listens on `handle` now: `to` here is told HANDLE_TAKEN, and
    /// the letters waiting here for the handle follow it.
    pub(super) fn handle_taken_elsewhere(
        &mut self,
        to: Id,
        handle: Handle,
        out: &mut impl FrameSink,
    ) {
        if self.handles.listener(&handle) != Some(to) {
            return;
        }
        self.handles.unlisten(to, &[handle]);
        // This node stops renewing the entry (it would otherwise write it back, for ever, once
        // the new listener lets the handle go); the entry goes only if it still names `to`.
        out.bus(BusOutput::Unlisten { handle, id: to });
        let frame = protocol::handle_taken(&handle);
        self.deliver(
            to,
            ServerFrame::Encoded(&frame),
            QueuedKind::VersionTwo,
            out,
        );
        while let Some(letter) = self.mailbox.take_oldest_for(&handle) {
            self.handles.mail(&handle, self.mailbox.mail_for(&handle));
            let record = Record::Letter {
                handle: Cow::Borrowed(handle.as_str()),
                frame: Cow::Borrowed(&letter.frame),
                block: Some(letter.block),
            };
            self.bus_records_out += 1;
            out.bus(BusOutput::ToHandle {
                handle,
                rid: None,
                record: record.to_json(),
                letter: Some(MailLetter {
                    frame: letter.frame.into_string(),
                    block: letter.block,
                }),
            });
        }
    }

    /// The listener's half of a MESSAGE to a handle from another node's session: to the
    /// connected listener, into this node's mailbox while it is in its window, or, when nobody
    /// here listens (the handle moved meanwhile), to the cluster's mailbox. Returns whether it
    /// was queued.
    pub(super) fn receive_remote_handle_message(
        &mut self,
        handle: Handle,
        letter: RemoteLetter<'_>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<bool, ErrorCode> {
        let RemoteLetter {
            from,
            payload,
            ts,
            may_store,
            block,
            serial,
            reference,
        } = letter;
        let listener = self.handles.listener(&handle);
        let conn = listener
            .and_then(|listener| self.sessions.get(&listener))
            .and_then(|session| session.conn);
        let frame = ServerFrame::HandleMessage {
            handle: &handle,
            payload,
            ts,
        };
        let queued = match (listener, conn) {
            (Some(_), Some(conn)) => {
                let (max_unsent, _) = self.recipient_caps(out);
                if out.backlog(conn) > max_unsent {
                    return Err(ErrorCode::PeerBusy);
                }
                out.send(conn, frame);
                false
            }
            _ if !may_store => return Err(ErrorCode::NoMailbox),
            (Some(_), None) => {
                let sender = Sender { id: from, serial };
                let reference = reference.map(Box::from);
                self.store_letter_from(handle, frame, sender, reference, block, now, out)?;
                true
            }
            (None, _) if !self.mailbox.is_on() => return Err(ErrorCode::NoMailbox),
            (None, _) => {
                out.bus(BusOutput::StoreLetter {
                    handle,
                    letter: MailLetter {
                        frame: frame.to_text(),
                        block,
                    },
                });
                true
            }
        };
        self.messages_routed += 1;
        Ok(queued)
    }

    /// One remote copy of a MESSAGE to several handles was answered: counted, UNDELIVERED when
    /// it failed, and the ACK once the last copy is in.
    pub(super) fn copy_answered(
        &mut self,
        entry: &Awaiting,
        fanout: u64,
        handle: Handle,
        result: Result<bool, ErrorCode>,
        out: &mut impl FrameSink,
    ) {
        let asking = self.still_asking(entry);
        let Some(wait) = self.awaiting.fanouts.get_mut(&fanout) else {
            return;
        };
        wait.pending = wait.pending.saturating_sub(1);
        match result {
            Ok(false) => wait.sent += 1,
            Ok(true) => wait.queued += 1,
            Err(code) => {
                let reason = match code {
                    ErrorCode::PeerBusy => UndeliveredReason::PeerBusy,
                    ErrorCode::Unavailable => UndeliveredReason::Unavailable,
                    _ => UndeliveredReason::NoMailbox,
                };
                if let Some(reference) = entry.reference.as_deref()
                    && asking
                {
                    let frame = protocol::undelivered_to_handle(&handle, reference, reason);
                    out.send(entry.conn, ServerFrame::Encoded(&frame));
                }
            }
        }
        if wait.pending > 0 {
            return;
        }
        let FanoutWait { sent, queued, .. } = *wait;
        self.awaiting.fanouts.remove(&fanout);
        self.messages_routed += (sent + queued) as u64;
        if let Some(reference) = entry.reference.as_deref()
            && asking
        {
            let frame = protocol::fanout_ack(reference, sent, queued);
            out.send(entry.conn, ServerFrame::Encoded(&frame));
        }
    }

    /// The directory names another listener for `handle`, which `listener` here was the last to
    /// listen on (its node's renewal found it so): another node's session took it and its
    /// HandleTaken record never came. As if it had come; nothing if `listener` no longer
    /// listens on it (told already, or the handle moved here since): whichever of the record
    /// and this finding comes second changes nothing, so the client hears HANDLE_TAKEN once.
    pub fn handle_lost(&mut self, handle: Handle, listener: Id, out: &mut impl FrameSink) {
        self.handle_taken_elsewhere(listener, handle, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(mono_ms: u64) -> Now {
        Now {
            mono_ms,
            unix_ms: 0,
        }
    }

    fn handle(n: u8) -> Handle {
        Handle::from_seed(&[n; 8])
    }

    #[test]
    fn a_handle_taken_back_is_remembered_for_its_time_and_within_its_bound() {
        let mut taken = TakenBack::new(KeyedBuild::new((1, 2)));
        let a = Id::from_random_bytes([1; 4]);
        let b = Id::from_random_bytes([2; 4]);
        taken.remember(handle(1), a, at(1_000));
        assert!(taken.holds(handle(1), a, at(1_000 + TAKEN_BACK_MS - 1)));
        assert!(!taken.holds(handle(1), b, at(1_000)));
        assert!(!taken.holds(handle(2), a, at(1_000)));
        // Taken again later: the later time counts, not the first one's end.
        taken.remember(handle(1), a, at(5_000));
        assert!(taken.holds(handle(1), a, at(1_000 + TAKEN_BACK_MS)));
        assert!(!taken.holds(handle(1), a, at(5_000 + TAKEN_BACK_MS)));
        assert_eq!(taken.check(), Ok(()));

        // Past the bound, the oldest are forgotten first.
        let ids = (0..=MAX_TAKEN_BACK as u32).map(|n| Id::from_random_bytes(n.to_le_bytes()));
        for id in ids.clone() {
            taken.remember(handle(3), id, at(20_000));
        }
        assert_eq!(taken.check(), Ok(()));
        let held: Vec<bool> = ids
            .map(|id| taken.holds(handle(3), id, at(20_000)))
            .collect();
        assert_eq!(held.iter().filter(|&&held| held).count(), MAX_TAKEN_BACK);
        assert_eq!(held.first(), Some(&false));
        assert_eq!(held.last(), Some(&true));
    }
}
