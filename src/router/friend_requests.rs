//! FRIEND_REQUEST, FRIEND_ACCEPT, FRIEND_DECLINE and FRIEND_REMOVE: pending requests and
//! friendships.
//!
//! Friendships are symmetric, pending requests are mirrored (`pending_out` of the requester,
//! `pending_in` of the target), and all of them name other live sessions (checked by
//! `invariants.rs`). What one recipient may be sent is bounded per sender address and per
//! minute, and a request may fill only [`REQUEST_ROOM_SHARE`] of its caps (see "Memory bounds"
//! in the `router` module docs).

use super::remote::Record;
use super::session::{PendingIn, QueuedKind};
use super::{Caller, Entropy, FrameSink, MS_PER_MINUTE, Now, Router};
use crate::address::{Block, ClientAddr};
use crate::id::Id;
use crate::protocol::{self, ErrorCode, FriendKeyFrame, InviteProof, RawJson, ServerFrame};

/// A FRIEND_REQUEST may fill only this fraction of a recipient's caps (unsent bytes, resume
/// queue): the rest stays for its friends' messages, whoever sends requests.
const REQUEST_ROOM_SHARE: usize = 4;

impl<E: Entropy> Router<E> {
    pub(super) fn friend_request(
        &mut self,
        caller: Caller<'_>,
        to: Id,
        key: FriendRequestKey<'_>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        if to == caller.id {
            return Err(ErrorCode::SelfRequest);
        }
        let remote = !self.sessions.contains_key(&to);
        if remote && !self.config.cluster {
            return Err(ErrorCode::UnknownPeer);
        }
        let rate = self.config.rate_friend_requests_per_min;
        let max_pending = self.config.max_pending_requests;
        let max_key = self.config.max_public_key_bytes;
        let sender = self
            .sessions
            .get_mut(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        if sender.friends.contains(&to) {
            return Err(ErrorCode::AlreadyFriends);
        }
        let public_key = checked_key(key.public_key, max_key)?;
        let invite = match key.invite {
            InviteProof::Absent => None,
            InviteProof::Valid(raw) => Some(raw),
            InviteProof::Invalid => return Err(ErrorCode::BadInvite),
        };
        let repeated = sender.pending_out.contains(&to);
        // A request to another node's session takes its place when it is sent, not when the
        // answer comes: else any number sent within one bus round trip would all fit. A repeat
        // of one still in flight takes no second place (it is sent on, and the target's node
        // answers it as a repeat if the first arrived).
        let in_flight = sender.requests_in_flight.contains_key(&to);
        if !repeated && !in_flight && sender.requests_outstanding() >= max_pending {
            return Err(ErrorCode::RateLimited);
        }
        if !sender
            .request_rate
            .try_take(rate, MS_PER_MINUTE, now.mono_ms)
        {
            return Err(ErrorCode::RateLimited);
        }
        if repeated {
            // Already forwarded once; the target has it (or has it queued).
            self.ack(caller, false, out);
            return Ok(());
        }
        let address = self
            .conns
            .get(&caller.conn)
            .map_or(ClientAddr::UNSPECIFIED, |state| state.peer);
        if !self.requests_per_address.try_take(address, now.mono_ms) {
            return Err(ErrorCode::RateLimited);
        }
        let sender_block = self
            .sessions
            .get(&caller.id)
            .map_or(ClientAddr::UNSPECIFIED, |sender| sender.peer)
            .largest_block();
        if remote {
            // The target's node decides the rest and answers; the sender records its pending
            // request only then, holding its place among the pending meanwhile (`remote.rs`).
            return self.request_remotely(caller, to, public_key, invite, sender_block, now, out);
        }
        let queued =
            self.receive_request(caller.id, sender_block, to, public_key, invite, now, out)?;
        if let Some(sender) = self.sessions.get_mut(&caller.id) {
            sender.pending_out.insert(to);
        }
        self.touch(caller.id);
        self.ack(caller, queued, out);
        Ok(())
    }

    /// The target's half of a FRIEND_REQUEST from `from` (a session here or on another node):
    /// the target's per-address shares and caps, then the request recorded and delivered.
    /// Returns whether it was queued.
    ///
    /// Decide first, record only what is delivered: a request refused as `peer_busy` spends
    /// none of the recipient's minute and withdraws nobody's pending request.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn receive_request(
        &mut self,
        from: Id,
        sender_block: Block,
        to: Id,
        public_key: RawJson<'_>,
        invite: Option<RawJson<'_>>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<bool, ErrorCode> {
        let room = self.room_for_request(sender_block, to, now)?;
        if self.is_busy(to, REQUEST_ROOM_SHARE, out) {
            return Err(ErrorCode::PeerBusy);
        }
        self.take_room(to, room, now, out);
        let mut target_version = 1;
        if let Some(target) = self.sessions.get_mut(&to) {
            self.requests_forwarded += 1;
            let pending = PendingIn {
                arrival: self.requests_forwarded,
                block: sender_block,
            };
            target.pending_in.insert(from, pending);
            target_version = target.version;
            self.touch(to);
        }
        let frame = ServerFrame::FriendKey {
            kind: FriendKeyFrame::Request,
            from,
            public_key,
            // A version-1 client knows no such field.
            invite: invite.filter(|_| target_version >= 2),
        };
        Ok(self.deliver(to, frame, QueuedKind::Capped, out))
    }

    /// What one recipient may be sent (see the `router` module docs): `too_many_requests` when the
    /// sender's address already has `max_pending_incoming_per_address` requests pending there,
    /// or sent `rate_incoming_requests_per_address_per_min` in the last minute, or the recipient
    /// received `rate_incoming_requests_per_min`. When the recipient holds
    /// `max_pending_incoming` requests, the oldest of the address with the most is to be
    /// withdrawn to make room, if that address has at least two more than the sender's: so that
    /// a few addresses cannot fill the list and keep everyone else out.
    ///
    /// Only decides: nothing is counted or withdrawn until [`Router::take_room`], once the
    /// request is certain to be delivered. (Entries older than a minute are dropped here; that
    /// changes no decision.)
    fn room_for_request(
        &mut self,
        sender_block: Block,
        to: Id,
        now: Now,
    ) -> Result<Room, ErrorCode> {
        let target = self.sessions.get(&to).ok_or(ErrorCode::UnknownPeer)?;
        // Per block: how many pending, and the oldest of them.
        let mut pending_by_block: Vec<(Block, usize, u64, Id)> = Vec::new();
        for (requester, pending) in &target.pending_in {
            let (block, arrival) = (pending.block, pending.arrival);
            match pending_by_block.iter_mut().find(|entry| entry.0 == block) {
                Some(entry) => {
                    entry.1 += 1;
                    if arrival < entry.2 {
                        (entry.2, entry.3) = (arrival, *requester);
                    }
                }
                None => pending_by_block.push((block, 1, arrival, *requester)),
            }
        }
        let from_sender_block = pending_by_block
            .iter()
            .find(|entry| entry.0 == sender_block)
            .map_or(0, |entry| entry.1);
        if from_sender_block >= self.config.max_pending_incoming_per_address {
            return Err(ErrorCode::TooManyRequests);
        }
        let full = target.pending_in.len() >= self.config.max_pending_incoming;
        let evict = match pending_by_block
            .iter()
            .max_by_key(|entry| (entry.1, std::cmp::Reverse(entry.2)))
        {
            Some(&(_, most, _, oldest)) if full && most >= from_sender_block + 2 => Some(oldest),
            _ if full => return Err(ErrorCode::TooManyRequests),
            _ => None,
        };
        let (total_rate, block_rate) = (
            self.config.rate_incoming_requests_per_min as usize,
            self.config.rate_incoming_requests_per_address_per_min as usize,
        );
        let target = self.sessions.get_mut(&to).ok_or(ErrorCode::UnknownPeer)?;
        if total_rate != 0 {
            let recent = &mut target.recent_requests;
            while recent
                .front()
                .is_some_and(|&(_, at)| now.mono_ms.saturating_sub(at) >= MS_PER_MINUTE)
            {
                recent.pop_front();
            }
            if recent.is_empty() {
                // A deque keeps its capacity: give back what a past flood made it hold.
                *recent = Default::default();
            }
            let from_block = recent.iter().filter(|(block, _)| *block == sender_block);
            if recent.len() >= total_rate || (block_rate != 0 && from_block.count() >= block_rate) {
                return Err(ErrorCode::TooManyRequests);
            }
        }
        Ok(Room {
            sender_block,
            counted: total_rate != 0,
            evict,
        })
    }

    /// Records a request [`Router::room_for_request`] allowed and that is now being delivered:
    /// it counts toward the recipient's minute, and the request chosen to make room goes.
    fn take_room(&mut self, to: Id, room: Room, now: Now, out: &mut impl FrameSink) {
        if room.counted
            && let Some(target) = self.sessions.get_mut(&to)
        {
            target
                .recent_requests
                .push_back((room.sender_block, now.mono_ms));
        }
        if let Some(oldest) = room.evict {
            self.withdraw_request(oldest, to, out);
        }
    }

    /// Removes the pending request of `requester` to `target`; a version-2 target is told. The
    /// requester is not: its request simply never gets an answer, as when the target leaves.
    fn withdraw_request(&mut self, requester: Id, target: Id, out: &mut impl FrameSink) {
        match self.sessions.get_mut(&requester) {
            Some(session) => {
                session.pending_out.remove(&target);
                self.touch(requester);
            }
            None => self.tell_remote(
                Record::Withdrawn {
                    from: target,
                    to: requester,
                },
                out,
            ),
        }
        let Some(target_session) = self.sessions.get_mut(&target) else {
            return;
        };
        target_session.pending_in.remove(&requester);
        let version = target_session.version;
        self.touch(target);
        if version >= 2 {
            self.deliver(
                target,
                ServerFrame::Encoded(&protocol::friend_cancel(requester)),
                QueuedKind::VersionTwo,
                out,
            );
        }
    }

    pub(super) fn friend_accept(
        &mut self,
        caller: Caller<'_>,
        to: Id,
        public_key: Option<RawJson<'_>>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let accepter = self
            .sessions
            .get(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        if !accepter.pending_in.contains_key(&to) {
            return Err(ErrorCode::NoPendingRequest);
        }
        let public_key = checked_key(public_key, self.config.max_public_key_bytes)?;
        if !self.sessions.contains_key(&to) {
            // Pending requests name live sessions: `to` lives on another node.
            return self.accept_remotely(caller, to, public_key, now, out);
        }
        if self.is_busy(to, 1, out) {
            return Err(ErrorCode::PeerBusy);
        }
        self.befriend(caller.id, to);
        let frame = ServerFrame::FriendKey {
            kind: FriendKeyFrame::Accept,
            from: caller.id,
            public_key,
            invite: None,
        };
        let queued = self.deliver(to, frame, QueuedKind::Capped, out);
        self.ack(caller, queued, out);
        Ok(())
    }

    pub(super) fn friend_decline(
        &mut self,
        caller: Caller<'_>,
        to: Id,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let decliner = self
            .sessions
            .get_mut(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        if decliner.pending_in.remove(&to).is_none() {
            return Err(ErrorCode::NoPendingRequest);
        }
        match self.sessions.get_mut(&to) {
            Some(requester) => {
                requester.pending_out.remove(&caller.id);
            }
            None => self.tell_remote(
                Record::Decline {
                    from: caller.id,
                    to,
                },
                out,
            ),
        }
        self.touch(caller.id);
        self.touch(to);
        let queued = self.deliver(
            to,
            ServerFrame::Encoded(&protocol::friend_decline(caller.id)),
            QueuedKind::Control,
            out,
        );
        self.ack(caller, queued, out);
        Ok(())
    }

    pub(super) fn friend_remove(
        &mut self,
        caller: Caller<'_>,
        to: Id,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let remover = self
            .sessions
            .get_mut(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        if !remover.friends.remove(&to) {
            return Err(ErrorCode::NotFriends);
        }
        match self.sessions.get_mut(&to) {
            Some(former) => {
                former.friends.remove(&caller.id);
            }
            None => self.tell_remote(
                Record::Remove {
                    from: caller.id,
                    to,
                },
                out,
            ),
        }
        self.touch(caller.id);
        self.touch(to);
        let queued = self.deliver(
            to,
            ServerFrame::Encoded(&protocol::friend_remove(caller.id)),
            QueuedKind::Control,
            out,
        );
        self.ack(caller, queued, out);
        Ok(())
    }

    /// Makes `a` and `b` friends and clears the pending requests in both directions (the
    /// halves of whichever of them live here).
    pub(super) fn befriend(&mut self, a: Id, b: Id) {
        for (this, other) in [(a, b), (b, a)] {
            if let Some(session) = self.sessions.get_mut(&this) {
                session.pending_out.remove(&other);
                session.pending_in.remove(&other);
                session.friends.insert(other);
                self.touch(this);
            }
        }
    }
}

/// What [`Router::room_for_request`] decided for a request it allows.
struct Room {
    /// The sender's address block, as the recipient's minute counts it.
    sender_block: Block,
    /// Whether the recipient's minute is counted at all (`rate_incoming_requests_per_min` > 0).
    counted: bool,
    /// The pending request to withdraw to make room, when the list is full.
    evict: Option<Id>,
}

/// What a FRIEND_REQUEST carries besides its target, as decoded.
pub(super) struct FriendRequestKey<'a> {
    pub(super) public_key: Option<RawJson<'a>>,
    pub(super) invite: InviteProof<'a>,
}

/// The `public_key` of FRIEND_REQUEST / FRIEND_ACCEPT: `bad_key` when absent or not armored,
/// `key_too_large` past `max_bytes`.
fn checked_key(
    public_key: Option<RawJson<'_>>,
    max_bytes: usize,
) -> Result<RawJson<'_>, ErrorCode> {
    let public_key = public_key.ok_or(ErrorCode::BadKey)?;
    // The raw value is the JSON string with its two quotes.
    if public_key.get().len().saturating_sub(2) > max_bytes {
        return Err(ErrorCode::KeyTooLarge);
    }
    Ok(public_key)
}
