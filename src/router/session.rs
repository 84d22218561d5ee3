//! One session's state and its resume queue.

use std::collections::VecDeque;

use super::ConnId;
use super::fasthash::{FastMap, FastSet};
use super::limits::TokenBucket;
use crate::address::Block;
use crate::id::{Id, ResumeToken};

/// A live session: connected, or in its resume window (`conn == None`).
///
/// Bounds: `friends` names distinct other live sessions, so it holds fewer than `max_sessions`
/// entries; `pending_in` holds at most `max_pending_incoming`; `pending_out` and the targets of
/// `requests_in_flight` together name at most `max_pending_requests` sessions
/// ([`Session::requests_outstanding`]); the queue is bounded as [`ResumeQueue`] says.
pub struct Session {
    pub token: ResumeToken,
    /// The address whose live-session count this session holds on this node until it ends or
    /// leaves: the one that created it, wherever it is resumed from on this node. A session
    /// that came from another node (cluster mode) counts for the address that took it over or
    /// adopted it here, whatever that address's limit (it is never refused for it); one whose
    /// takeover had stopped waiting for it, for the address its old node counted it for.
    pub peer: crate::address::ClientAddr,
    pub conn: Option<ConnId>,
    /// Router-wide, rising, never reused: tells this session from a later one with the same ID
    /// (mail in the mailbox outlives its sender's session).
    pub serial: u64,
    /// The protocol version of the client holding the session (its last CONNECT).
    pub version: u8,
    /// Which resume-window timer entry is live for this session (see `timers.rs`).
    pub timer_generation: u64,
    /// Requests of this session waiting for another node's answer (cluster mode), at most
    /// [`MAX_AWAITING_PER_SESSION`](super::remote::MAX_AWAITING_PER_SESSION).
    pub awaiting: u32,
    /// Whether the cluster's directory names this node for the session's ID (cluster mode):
    /// released when the session ends, unless another node turned out to hold the ID.
    pub claimed: bool,
    pub friends: FastSet<Id>,
    /// Sessions this one sent a friend request that is still pending.
    pub pending_out: FastSet<Id>,
    /// Sessions on other nodes this one sent a FRIEND_REQUEST whose answer has not come back
    /// (cluster mode), each with how many of its records wait (a repeat sent while the first
    /// waits is one more record for the same target). A target here counts toward
    /// `max_pending_requests` like a pending request, from the moment the request is sent until
    /// its answer: a refusal, failure or timeout gives the place back, an acceptance hands it to
    /// `pending_out`. No entry holds 0.
    pub requests_in_flight: FastMap<Id, u32>,
    /// Sessions with a pending friend request to this one (on this node or, in a cluster,
    /// another), each with its arrival number and the requester's address block.
    pub pending_in: FastMap<Id, PendingIn>,
    pub queue: ResumeQueue,
    pub message_rate: TokenBucket,
    pub request_rate: TokenBucket,
    /// The address block and time of each FRIEND_REQUEST forwarded to this session in the last
    /// minute, oldest first: at most `rate_incoming_requests_per_min` entries, nothing
    /// allocated until the first request.
    pub recent_requests: VecDeque<(Block, u64)>,
}

impl Session {
    /// The sessions this one has a friend request out to: pending, or still waiting for another
    /// node's answer; each counted once. What `max_pending_requests` bounds.
    pub fn requests_outstanding(&self) -> usize {
        let in_flight_only = self
            .requests_in_flight
            .keys()
            .filter(|target| !self.pending_out.contains(target))
            .count();
        self.pending_out.len() + in_flight_only
    }
}

/// One pending friend request, as its target holds it.
#[derive(Clone, Copy, Debug)]
pub struct PendingIn {
    /// Router-wide, rising: tells the oldest request.
    pub arrival: u64,
    /// The requester's largest address block, kept so that the target's per-address shares
    /// never need the requester's session (which may live on another node).
    pub block: Block,
}

/// What a queued frame is, for the caps and for UNDELIVERED.
#[derive(Debug, PartialEq, Eq)]
pub enum QueuedKind {
    /// Refused with `peer_busy` when the queue is over its caps: MESSAGE, FRIEND_REQUEST and
    /// FRIEND_ACCEPT (the frames a peer can send at will, and the large ones).
    Capped,
    /// A control frame of version 2 (FRIEND_CANCEL, HANDLE_TAKEN, UNDELIVERED for a handle),
    /// dropped when the session is resumed by a version-1 client, which has no such frame.
    VersionTwo,
    /// A queued MESSAGE: capped, and reported to its sender with UNDELIVERED when dropped.
    Message {
        sender: Id,
        /// The raw JSON text of the MESSAGE's `ref`; `None` when it had none (no UNDELIVERED).
        reference: Option<Box<str>>,
    },
    /// Always queued: FRIEND_DECLINE, FRIEND_REMOVE, a friend's DISCONNECT, UNDELIVERED. Each is
    /// bounded by other bounded state of the session (see the module docs of `router`).
    Control,
}

impl QueuedKind {
    pub fn is_capped(&self) -> bool {
        !matches!(self, QueuedKind::Control | QueuedKind::VersionTwo)
    }
}

/// A server frame kept for a session in its resume window. Owned: never borrows the input.
#[derive(Debug)]
pub struct QueuedFrame {
    pub frame: String,
    pub kind: QueuedKind,
}

impl QueuedFrame {
    /// Bytes this entry holds, as counted against `max_queue_bytes`.
    pub fn bytes(&self) -> usize {
        let reference = match &self.kind {
            QueuedKind::Message {
                reference: Some(reference),
                ..
            } => reference.len(),
            _ => 0,
        };
        self.frame.len() + reference
    }
}

/// Frames waiting for a session in its resume window, in the order they must be delivered.
///
/// Bound: a capped frame is only added while the queue holds at most `max_queue_bytes` bytes and
/// at most `max_queue_len` frames, so capped frames never exceed `max_queue_len + 1` entries and
/// `max_queue_bytes` plus one frame (a frame is at most `max_message_bytes` + 1 KiB).
#[derive(Debug, Default)]
pub struct ResumeQueue {
    frames: VecDeque<QueuedFrame>,
    bytes: usize,
}

impl ResumeQueue {
    /// Whether a capped frame must be refused (`peer_busy`).
    pub fn is_over(&self, max_bytes: usize, max_len: usize) -> bool {
        self.bytes > max_bytes || self.frames.len() > max_len
    }

    /// Appends a frame; returns the bytes it added.
    pub fn push(&mut self, entry: QueuedFrame) -> usize {
        let bytes = entry.bytes();
        self.bytes += bytes;
        self.frames.push_back(entry);
        bytes
    }

    /// Empties the queue, oldest first.
    pub fn take_all(&mut self) -> VecDeque<QueuedFrame> {
        self.bytes = 0;
        std::mem::take(&mut self.frames)
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn iter(&self) -> impl Iterator<Item = &QueuedFrame> {
        self.frames.iter()
    }
}
