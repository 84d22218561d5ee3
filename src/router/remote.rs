//! Sessions on other nodes (cluster mode): the records that carry a request to the node of the
//! session it is for, and the answers that come back.
//!
//! In a cluster each node's router holds only the sessions whose clients are connected to that
//! node. A friendship or a pending request between sessions on two nodes is held in halves: each
//! node keeps its own session's side (`friends`, `pending_out`, `pending_in`), and every change
//! is told to the other node in a [`Record`]. A request whose outcome its client waits for
//! (MESSAGE, FRIEND_REQUEST, FRIEND_ACCEPT) is checked here for the sender's side (friendship,
//! rates, pending caps), then decided by the target's node, whose [`Record::Reply`] brings the
//! ACK or ERROR back: the client gets the answers it would get on one node, one bus round trip
//! later. Notices (FRIEND_DECLINE, FRIEND_REMOVE, DISCONNECT, PRESENCE, FRIEND_CANCEL, a
//! withdrawn request, UNDELIVERED) need no answer.
//!
//! Records leave through [`FrameSink::bus`], addressed to the session they are for; the loop's
//! bus finds that session's node (`crate::bus`). Records arrive through [`Router::from_bus`];
//! a record the bus could not deliver comes back through [`Router::bus_failed`].
//!
//! # Bounds
//! - Requests waiting for an answer: at most [`MAX_AWAITING_PER_SESSION`] per session
//!   (`peer_busy` beyond), each for at most [`REPLY_TIMEOUT_MS`], then ERROR `unavailable`;
//!   a FRIEND_REQUEST among them holds its target's place among the sender's pending requests
//!   (`Session::requests_in_flight`) until its answer;
//!   the deadline list holds at most what was awaited in the last [`REPLY_TIMEOUT_MS`] and is
//!   compacted when answered entries dominate it.
//! - Records from other nodes change only the halves of sessions here, under the same caps as a
//!   request from a client here (a request's per-address shares use the address block its
//!   sender's node names).
//!
//! # Trust
//! Other nodes and the bus are the operator's own: a record is believed about which session it
//! comes from (as the server is believed about frames on one node). Still, nothing a record says
//! is used without checking it against the halves here: a MESSAGE is delivered only to a session
//! that counts its sender as a friend, an acceptance only when the request is pending here.

use std::borrow::Cow;
use std::collections::VecDeque;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::fasthash::FastMap;
use super::remote_handles::RemoteLetter;
use super::session::QueuedKind;
use super::sink::BusOutput;
use super::{Caller, ConnId, Entropy, FrameSink, Now, Router};
use crate::address::Block;
use crate::id::Id;
use crate::protocol::{
    self, ErrorCode, FriendKeyFrame, Handle, RawJson, ServerFrame, UndeliveredReason,
};

/// How long a request waits for the other node's answer before its client gets ERROR
/// `unavailable`. Far above a bus round trip (well under a millisecond on a LAN), far below the
/// client's own patience.
pub const REPLY_TIMEOUT_MS: u64 = 5_000;
/// Requests of one session that may wait for another node's answer at once: a client sending
/// at the full message rate waits for far fewer in any healthy cluster.
pub const MAX_AWAITING_PER_SESSION: u32 = 256;

/// What one node tells another about a session there, as JSON: `{"<kind>":{fields}}`, IDs as
/// numbers, payloads and keys as the raw JSON the client sent. Written by [`Record::to_json`]
/// (raw text copied as is, which serde can only do through an allocated `RawValue`), read by
/// serde (externally tagged: serde_json borrows raw text only outside buffered enum forms).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record<'a> {
    /// A MESSAGE between friends; the answer is a [`Record::Reply`].
    Message {
        from: Id,
        to: Id,
        #[serde(borrow, deserialize_with = "raw")]
        payload: &'a str,
        ts: u64,
        rid: u64,
        /// The raw JSON of the MESSAGE's `ref`, for an UNDELIVERED if the frame is queued and
        /// then dropped.
        #[serde(borrow, default)]
        reference: Option<Cow<'a, str>>,
    },
    /// A FRIEND_REQUEST; the answer is a [`Record::Reply`].
    Request {
        from: Id,
        to: Id,
        #[serde(borrow, deserialize_with = "raw")]
        key: &'a str,
        #[serde(borrow, default, deserialize_with = "raw_option")]
        invite: Option<&'a str>,
        /// The requester's largest address block, for the target's per-address shares.
        block: Block,
        rid: u64,
    },
    /// A FRIEND_ACCEPT of `to`'s pending request; the answer is a [`Record::Reply`].
    Accept {
        from: Id,
        to: Id,
        #[serde(borrow, deserialize_with = "raw")]
        key: &'a str,
        rid: u64,
    },
    /// `from` declined `to`'s request.
    Decline { from: Id, to: Id },
    /// `from` ended its friendship with `to`.
    Remove { from: Id, to: Id },
    /// `from`'s session ended: its friend `to` gets DISCONNECT.
    Bye { from: Id, to: Id },
    /// `from`'s pending request to `to` is gone (its session ended, or its request was undone).
    Cancel { from: Id, to: Id },
    /// `to`'s pending request to `from` was withdrawn by `from`'s side (to make room, or `from`
    /// ended): `to` stops counting it.
    Withdrawn { from: Id, to: Id },
    /// `from` went offline or came back.
    Presence { from: Id, to: Id, online: bool },
    /// `to`'s MESSAGE (with this raw `ref`) waited for `from`, whose session ended.
    Undelivered {
        from: Id,
        to: Id,
        #[serde(borrow)]
        reference: Cow<'a, str>,
    },
    /// A MESSAGE to `handle` (one copy of a MESSAGE to several, or a single one), for the node
    /// of its listener; the answer is a [`Record::Reply`]. `serial`: the sender's session, for
    /// an UNDELIVERED if the letter is stored and dropped.
    HandleMessage {
        from: Id,
        #[serde(borrow)]
        handle: Cow<'a, str>,
        #[serde(borrow, deserialize_with = "raw")]
        payload: &'a str,
        ts: u64,
        rid: u64,
        may_store: bool,
        block: Block,
        serial: u64,
        #[serde(borrow, default)]
        reference: Option<Cow<'a, str>>,
    },
    /// Copies of one MESSAGE to several handles whose listeners are on the receiving node, each
    /// with its request number; each is answered by a [`Record::Reply`].
    HandleMessages {
        from: Id,
        #[serde(borrow)]
        handles: Vec<(Cow<'a, str>, u64)>,
        #[serde(borrow, deserialize_with = "raw")]
        payload: &'a str,
        ts: u64,
        may_store: bool,
        block: Block,
        serial: u64,
        #[serde(borrow, default)]
        reference: Option<Cow<'a, str>>,
    },
    /// A letter for `handle` that waited here for a listener who now listens elsewhere: the
    /// MESSAGE frame as its listener gets it. No answer.
    Letter {
        #[serde(borrow)]
        handle: Cow<'a, str>,
        #[serde(borrow)]
        frame: Cow<'a, str>,
        /// Its sender's address block, for the share of a mailbox it counts against.
        #[serde(default)]
        block: Option<Block>,
    },
    /// `from` listens on `handle` now, which `to` listened on: `to` gets HANDLE_TAKEN.
    HandleTaken {
        from: Id,
        to: Id,
        #[serde(borrow)]
        handle: Cow<'a, str>,
    },
    /// A letter `to` (session `serial`) sent to `handle` was dropped unread, for `reason`.
    HandleUndelivered {
        to: Id,
        serial: u64,
        #[serde(borrow)]
        handle: Cow<'a, str>,
        #[serde(borrow)]
        reference: Cow<'a, str>,
        #[serde(borrow)]
        reason: Cow<'a, str>,
    },
    /// A client asks node `node` to resume session `to` with `token`: hand it over
    /// (`remote_sessions.rs`). The answer is a [`Record::Handover`] to that node.
    Takeover {
        to: Id,
        #[serde(borrow)]
        token: Cow<'a, str>,
        rid: u64,
        #[serde(borrow)]
        node: Cow<'a, str>,
    },
    /// The answer to takeover `rid` of session `to`: its state (JSON), or none when refused.
    Handover {
        to: Id,
        rid: u64,
        #[serde(borrow, default, deserialize_with = "raw_option")]
        state: Option<&'a str>,
    },
    /// A record the node that held its session sent on after the session moved: handled where
    /// it arrives, and never sent on again (so that two nodes never pass one back and forth).
    Forwarded {
        #[serde(borrow, deserialize_with = "raw")]
        record: &'a str,
        /// The node that sent it first, where its answer goes.
        #[serde(borrow, default)]
        origin: Option<Cow<'a, str>>,
    },
    /// The answer to request `rid` of session `to`: `"sent"`, `"queued"` or an error code.
    Reply {
        to: Id,
        rid: u64,
        #[serde(borrow)]
        result: Cow<'a, str>,
    },
}

/// A raw JSON value's text, borrowed from the record.
fn raw<'de, D: Deserializer<'de>>(deserializer: D) -> Result<&'de str, D::Error> {
    <&RawValue>::deserialize(deserializer).map(RawValue::get)
}

fn raw_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de str>, D::Error> {
    Option::<&RawValue>::deserialize(deserializer).map(|raw| raw.map(RawValue::get))
}

impl Record<'_> {
    /// The record as JSON text, as [`Router::from_bus`] reads it.
    pub fn to_json(&self) -> String {
        let mut json = RecordJson(String::with_capacity(96));
        match self {
            Record::Message {
                from,
                to,
                payload,
                ts,
                rid,
                reference,
            } => {
                json.open("message", *from, *to);
                json.raw("payload", payload);
                json.number("ts", *ts);
                json.number("rid", *rid);
                if let Some(reference) = reference {
                    json.string("reference", reference);
                }
            }
            Record::Request {
                from,
                to,
                key,
                invite,
                block,
                rid,
            } => {
                json.open("request", *from, *to);
                json.raw("key", key);
                if let Some(invite) = invite {
                    json.raw("invite", invite);
                }
                json.block(block);
                json.number("rid", *rid);
            }
            Record::Accept { from, to, key, rid } => {
                json.open("accept", *from, *to);
                json.raw("key", key);
                json.number("rid", *rid);
            }
            Record::Decline { from, to } => json.open("decline", *from, *to),
            Record::Remove { from, to } => json.open("remove", *from, *to),
            Record::Bye { from, to } => json.open("bye", *from, *to),
            Record::Cancel { from, to } => json.open("cancel", *from, *to),
            Record::Withdrawn { from, to } => json.open("withdrawn", *from, *to),
            Record::Presence { from, to, online } => {
                json.open("presence", *from, *to);
                json.boolean("online", *online);
            }
            Record::Undelivered {
                from,
                to,
                reference,
            } => {
                json.open("undelivered", *from, *to);
                json.string("reference", reference);
            }
            Record::HandleMessage {
                from,
                handle,
                payload,
                ts,
                rid,
                may_store,
                block,
                serial,
                reference,
            } => {
                json.start_with_id("handle_message", "from", *from);
                json.string("handle", handle);
                json.raw("payload", payload);
                json.number("ts", *ts);
                json.number("rid", *rid);
                json.boolean("may_store", *may_store);
                json.block(block);
                json.number("serial", *serial);
                if let Some(reference) = reference {
                    json.string("reference", reference);
                }
            }
            Record::HandleMessages {
                from,
                handles,
                payload,
                ts,
                may_store,
                block,
                serial,
                reference,
            } => {
                json.start_with_id("handle_messages", "from", *from);
                let list: Vec<String> = handles
                    .iter()
                    .map(|(handle, rid)| format!("[{},{rid}]", quoted(handle)))
                    .collect();
                json.raw("handles", &format!("[{}]", list.join(",")));
                json.raw("payload", payload);
                json.number("ts", *ts);
                json.boolean("may_store", *may_store);
                json.block(block);
                json.number("serial", *serial);
                if let Some(reference) = reference {
                    json.string("reference", reference);
                }
            }
            Record::Letter {
                handle,
                frame,
                block,
            } => {
                json.start("letter", "handle", &quoted(handle));
                json.string("frame", frame);
                if let Some(block) = block {
                    json.block(block);
                }
            }
            Record::HandleTaken { from, to, handle } => {
                json.open("handle_taken", *from, *to);
                json.string("handle", handle);
            }
            Record::HandleUndelivered {
                to,
                serial,
                handle,
                reference,
                reason,
            } => {
                json.start_with_id("handle_undelivered", "to", *to);
                json.number("serial", *serial);
                json.string("handle", handle);
                json.string("reference", reference);
                json.string("reason", reason);
            }
            Record::Takeover {
                to,
                token,
                rid,
                node,
            } => {
                json.start_with_id("takeover", "to", *to);
                json.string("token", token);
                json.number("rid", *rid);
                json.string("node", node);
            }
            Record::Handover { to, rid, state } => {
                json.start_with_id("handover", "to", *to);
                json.number("rid", *rid);
                if let Some(state) = state {
                    json.raw("state", state);
                }
            }
            Record::Forwarded { record, origin } => {
                json.start("forwarded", "record", record);
                if let Some(origin) = origin {
                    json.string("origin", origin);
                }
            }
            Record::Reply { to, rid, result } => {
                json.start_with_id("reply", "to", *to);
                json.number("rid", *rid);
                json.string("result", result);
            }
        }
        json.0.push_str("}}");
        json.0
    }

    /// The session the record is for: the bus routes it to that session's node. `None` for
    /// the records addressed to a handle's listener (sent as [`BusOutput::ToHandle`]).
    pub fn to(&self) -> Option<Id> {
        Some(match self {
            Record::Message { to, .. }
            | Record::Request { to, .. }
            | Record::Accept { to, .. }
            | Record::Decline { to, .. }
            | Record::Remove { to, .. }
            | Record::Bye { to, .. }
            | Record::Cancel { to, .. }
            | Record::Withdrawn { to, .. }
            | Record::Presence { to, .. }
            | Record::Undelivered { to, .. }
            | Record::HandleTaken { to, .. }
            | Record::HandleUndelivered { to, .. }
            | Record::Takeover { to, .. }
            | Record::Reply { to, .. } => *to,
            Record::HandleMessage { .. }
            | Record::HandleMessages { .. }
            | Record::Letter { .. }
            | Record::Handover { .. }
            | Record::Forwarded { .. } => {
                return None;
            }
        })
    }

    /// The session the record comes from, when it names one.
    fn from(&self) -> Option<Id> {
        match self {
            Record::Message { from, .. }
            | Record::Request { from, .. }
            | Record::Accept { from, .. }
            | Record::Decline { from, .. }
            | Record::Remove { from, .. }
            | Record::Bye { from, .. }
            | Record::Cancel { from, .. }
            | Record::Withdrawn { from, .. }
            | Record::Presence { from, .. }
            | Record::Undelivered { from, .. }
            | Record::HandleMessage { from, .. }
            | Record::HandleMessages { from, .. }
            | Record::HandleTaken { from, .. } => Some(*from),
            _ => None,
        }
    }

    fn rid(&self) -> Option<u64> {
        match self {
            Record::Message { rid, .. }
            | Record::Request { rid, .. }
            | Record::Accept { rid, .. }
            | Record::HandleMessage { rid, .. }
            | Record::Takeover { rid, .. } => Some(*rid),
            _ => None,
        }
    }
}

/// Builds a record's JSON: fields after the first are appended with their comma.
struct RecordJson(String);

impl RecordJson {
    /// `{"<kind>":{"<name>":<value>` (`value` already JSON): the record's kind and first field.
    fn start(&mut self, kind: &str, name: &str, value: &str) {
        self.0.push_str("{\"");
        self.0.push_str(kind);
        self.0.push_str("\":{\"");
        self.0.push_str(name);
        self.0.push_str("\":");
        self.0.push_str(value);
    }

    /// The record's kind with its first field, a session ID.
    fn start_with_id(&mut self, kind: &str, name: &str, id: Id) {
        self.start(kind, name, &id.bits().to_string());
    }

    fn open(&mut self, kind: &str, from: Id, to: Id) {
        self.start_with_id(kind, "from", from);
        self.number("to", u64::from(to.bits()));
    }

    fn boolean(&mut self, name: &str, value: bool) {
        self.raw(name, if value { "true" } else { "false" });
    }

    fn block(&mut self, block: &Block) {
        let [high, low, len] = block.to_words();
        self.raw("block", &format!("[{high},{low},{len}]"));
    }

    fn number(&mut self, name: &str, value: u64) {
        self.0.push_str(",\"");
        self.0.push_str(name);
        self.0.push_str("\":");
        self.0.push_str(&value.to_string());
    }

    /// A JSON value received from a client and already checked to be one: copied as is.
    fn raw(&mut self, name: &str, value: &str) {
        self.0.push_str(",\"");
        self.0.push_str(name);
        self.0.push_str("\":");
        self.0.push_str(value);
    }

    fn string(&mut self, name: &str, value: &str) {
        self.0.push_str(",\"");
        self.0.push_str(name);
        self.0.push_str("\":");
        self.0.push_str(&quoted(value));
    }
}

/// `value` as a JSON string.
fn quoted(value: &str) -> String {
    // Writing a `str` into a `String` cannot fail; the empty string stands in all the same.
    serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_string())
}

/// Whether `text` is a server frame: a JSON object with a string `type`. Frames another node
/// or the cluster's mailbox hands over are checked before a client is sent them, so that a
/// confused node or a damaged entry never puts anything else on a client's connection.
pub(super) fn is_frame(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        _kind: Cow<'a, str>,
    }
    serde_json::from_str::<Typed<'_>>(text).is_ok()
}

/// Why the bus could not hand a record to the node it was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusFailure {
    /// No node holds the session (it ended, or its node is gone), or nobody listens on the
    /// handle and the record's letter could not be kept.
    NoSuchSession,
    /// The bus is down or refused the record.
    Unavailable,
    /// The node the directory names for the session heard nothing: it is gone (or not
    /// subscribed right now).
    NodeGone,
}

/// Gives back one record's wait for `to` in a session's `requests_in_flight`; the entry goes
/// with its last record.
fn release_in_flight(in_flight: &mut FastMap<Id, u32>, to: Id) {
    if let Some(count) = in_flight.get_mut(&to) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            in_flight.remove(&to);
        }
    }
}

/// What a session waits for another node to answer.
#[derive(Clone, Copy, Debug)]
pub(super) enum Waiting {
    Message {
        to: Id,
    },
    Request {
        to: Id,
    },
    Accept {
        to: Id,
    },
    /// A MESSAGE to one handle.
    Handle,
    /// One copy of MESSAGE to several handles: fan-out `fanout` of the same session.
    Copy {
        fanout: u64,
        handle: Handle,
    },
}

#[derive(Debug)]
pub(super) struct Awaiting {
    pub(super) by: Id,
    /// The serial of `by`'s session when it asked: a session that moved away and came back has
    /// another, and neither counts nor half of its own are changed by the old one's answers.
    pub(super) serial: u64,
    pub(super) conn: ConnId,
    /// The raw JSON of the request's `ref`.
    pub(super) reference: Option<Box<str>>,
    pub(super) what: Waiting,
}

/// A MESSAGE to several handles some of whose copies went to other nodes: its ACK waits for
/// their answers.
#[derive(Debug)]
pub(super) struct FanoutWait {
    pub(super) sent: usize,
    pub(super) queued: usize,
    /// Copies whose answer has not come yet.
    pub(super) pending: usize,
}

/// Requests waiting for another node's answer, by request number, and their deadlines in the
/// order they were made (one timeout for all, so that order is deadline order).
///
/// Invariant: every entry of `entries` has a deadline in `deadlines`; a deadline whose entry is
/// gone (answered) is skipped when it comes due.
#[derive(Debug, Default)]
pub(super) struct AwaitingReplies {
    entries: FastMap<u64, Awaiting>,
    deadlines: VecDeque<(u64, u64)>,
    next_rid: u64,
    /// Fan-outs waiting for copies' answers, each named by one number of `next_rid`'s; removed
    /// when the last copy is answered (each pending copy is an entry of `entries`).
    pub(super) fanouts: FastMap<u64, FanoutWait>,
}

impl AwaitingReplies {
    /// Starts request numbers at a random point, so that an answer meant for an earlier process
    /// on this node (same session ID, reclaimed) is not taken for one of ours.
    pub(super) fn starting_at(rid: u64) -> Self {
        AwaitingReplies {
            next_rid: rid >> 1,
            ..Default::default()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn earliest_ms(&self) -> Option<u64> {
        self.deadlines.front().map(|&(_, at)| at)
    }

    /// A fresh number for a fan-out's wait.
    pub(super) fn fanout_number(&mut self) -> u64 {
        self.next_rid = self.next_rid.wrapping_add(1);
        self.next_rid
    }

    fn insert(&mut self, entry: Awaiting, now: Now) -> u64 {
        self.next_rid = self.next_rid.wrapping_add(1);
        let rid = self.next_rid;
        self.entries.insert(rid, entry);
        self.deadlines
            .push_back((rid, now.mono_ms.saturating_add(REPLY_TIMEOUT_MS)));
        if self.deadlines.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.deadlines.retain(|(rid, _)| entries.contains_key(rid));
        }
        rid
    }

    /// Every request waiting for an answer (for invariant checks).
    pub(super) fn iter(&self) -> impl Iterator<Item = &Awaiting> {
        self.entries.values()
    }

    pub(super) fn take(&mut self, rid: u64) -> Option<Awaiting> {
        self.entries.remove(&rid)
    }

    /// The next request whose deadline passed, if any.
    fn pop_due(&mut self, now_ms: u64) -> Option<Awaiting> {
        while let Some(&(rid, at)) = self.deadlines.front() {
            if at > now_ms {
                return None;
            }
            self.deadlines.pop_front();
            if let Some(entry) = self.entries.remove(&rid) {
                return Some(entry);
            }
        }
        None
    }
}

impl<E: Entropy> Router<E> {
    /// A record from another node, as the bus delivered it. A record that does not parse is
    /// dropped (the nodes run the same build; this is a bug or a stranger on the bus).
    pub fn from_bus(&mut self, text: &str, now: Now, out: &mut impl FrameSink) {
        self.receive_record(text, None, true, now, out);
    }

    /// [`Router::from_bus`] for a record from node `origin` (a batch's header): answers to it
    /// go straight back to that node, wherever the asking session is by then known to be.
    pub fn from_node(
        &mut self,
        text: &str,
        origin: Option<&str>,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        self.receive_record(text, origin, true, now, out);
    }

    /// One record; `may_forward`: whether it may be sent on to the node its session moved to
    /// (not when it was forwarded here already).
    fn receive_record(
        &mut self,
        text: &str,
        origin: Option<&str>,
        may_forward: bool,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let record = match serde_json::from_str::<Record<'_>>(text) {
            Ok(record) => record,
            Err(error) => {
                // Only where: serde's message may quote a value (a token, a payload).
                log::warn!(
                    "bus: dropped a record that does not parse (line {}, column {})",
                    error.line(),
                    error.column()
                );
                return;
            }
        };
        self.bus_records_in += 1;
        if record
            .from()
            .is_some_and(|from| self.sessions.contains_key(&from))
        {
            // A session here is no other node's to speak for (a record from before it moved
            // here, or a confused node): its sender, if it waits, hears `unavailable`.
            log::debug!("bus: dropped a record from a session that lives here");
            return;
        }
        if may_forward
            && let Some(to) = record.to()
            && !self.sessions.contains_key(&to)
            && let Some(node) = self.takeovers.moved_to(to, now)
        {
            // Sent on a directory entry cached before the session moved: after it, once.
            self.bus_records_out += 1;
            let forwarded = Record::Forwarded {
                record: text,
                origin: origin.map(Cow::Borrowed),
            };
            out.bus(BusOutput::ToNode {
                node: node.to_owned(),
                text: forwarded.to_json(),
            });
            return;
        }
        match record {
            Record::Message {
                from,
                to,
                payload,
                ts,
                rid,
                reference,
            } => {
                let is_friend = self
                    .sessions
                    .get(&to)
                    .is_some_and(|session| session.friends.contains(&from));
                let result = if is_friend {
                    let payload = RawJson::from_record(payload);
                    self.receive_message(from, to, payload, ts, reference.as_deref(), out)
                } else {
                    Err(ErrorCode::NotFriends)
                };
                self.reply(from, rid, result, origin, out);
            }
            Record::Request {
                from,
                to,
                key,
                invite,
                block,
                rid,
            } => {
                let result = self.receive_remote_request(from, to, key, invite, block, now, out);
                self.reply(from, rid, result, origin, out);
            }
            Record::Accept { from, to, key, rid } => {
                let result = self.receive_remote_accept(from, to, key, out);
                self.reply(from, rid, result, origin, out);
            }
            Record::Decline { from, to } => {
                self.touch(to);
                if self
                    .sessions
                    .get_mut(&to)
                    .is_some_and(|session| session.pending_out.remove(&from))
                {
                    let frame = protocol::friend_decline(from);
                    self.deliver(to, ServerFrame::Encoded(&frame), QueuedKind::Control, out);
                }
            }
            Record::Remove { from, to } => {
                self.touch(to);
                if self
                    .sessions
                    .get_mut(&to)
                    .is_some_and(|session| session.friends.remove(&from))
                {
                    let frame = protocol::friend_remove(from);
                    self.deliver(to, ServerFrame::Encoded(&frame), QueuedKind::Control, out);
                }
            }
            Record::Bye { from, to } => self.forget_remote_friend(to, from, out),
            Record::Cancel { from, to } => {
                self.touch(to);
                let Some(session) = self.sessions.get_mut(&to) else {
                    return;
                };
                if session.pending_in.remove(&from).is_some() && session.version >= 2 {
                    let frame = protocol::friend_cancel(from);
                    self.deliver(
                        to,
                        ServerFrame::Encoded(&frame),
                        QueuedKind::VersionTwo,
                        out,
                    );
                }
            }
            Record::Withdrawn { from, to } => {
                self.touch(to);
                if let Some(session) = self.sessions.get_mut(&to) {
                    session.pending_out.remove(&from);
                }
            }
            Record::Presence { from, to, online } => {
                let conn = self
                    .sessions
                    .get(&to)
                    .filter(|session| session.friends.contains(&from))
                    .and_then(|session| session.conn);
                if let Some(conn) = conn {
                    let frame = protocol::presence(from, online);
                    out.send(conn, ServerFrame::Encoded(&frame));
                }
            }
            Record::Undelivered {
                from,
                to,
                reference,
            } => {
                let frame = protocol::undelivered(from, &reference);
                self.deliver(to, ServerFrame::Encoded(&frame), QueuedKind::Control, out);
            }
            Record::HandleMessage {
                from,
                handle,
                payload,
                ts,
                rid,
                may_store,
                block,
                serial,
                reference,
            } => {
                let letter = RemoteLetter {
                    from,
                    payload: RawJson::from_record(payload),
                    ts,
                    may_store,
                    block,
                    serial,
                    reference: reference.as_deref(),
                };
                self.receive_copy(letter, &handle, rid, origin, now, out);
            }
            Record::HandleMessages {
                from,
                handles,
                payload,
                ts,
                may_store,
                block,
                serial,
                reference,
            } => {
                let letter = RemoteLetter {
                    from,
                    payload: RawJson::from_record(payload),
                    ts,
                    may_store,
                    block,
                    serial,
                    reference: reference.as_deref(),
                };
                for (handle, rid) in handles {
                    self.receive_copy(letter, &handle, rid, origin, now, out);
                }
            }
            Record::Letter {
                handle,
                frame,
                block,
            } => {
                if let Some(handle) = Handle::parse(&handle) {
                    self.letter_arrived(handle, &frame, block, now, out);
                }
            }
            Record::HandleTaken { from, to, handle } => {
                if let Some(handle) = Handle::parse(&handle) {
                    self.handle_taken_record(from, to, handle, now, out);
                }
            }
            Record::HandleUndelivered {
                to,
                serial,
                handle,
                reference,
                reason,
            } => {
                let live = self
                    .sessions
                    .get(&to)
                    .is_some_and(|session| session.serial == serial && session.version >= 2);
                let handle = Handle::parse(&handle);
                let reason = UndeliveredReason::parse(&reason);
                if let (true, Some(handle), Some(reason)) = (live, handle, reason) {
                    let frame = protocol::undelivered_to_handle(&handle, &reference, reason);
                    self.deliver(
                        to,
                        ServerFrame::Encoded(&frame),
                        QueuedKind::VersionTwo,
                        out,
                    );
                }
            }
            Record::Takeover {
                to,
                token,
                rid,
                node,
            } => self.takeover_asked(to, &token, rid, &node, now, out),
            Record::Handover { to, rid, state } => {
                self.takeover_answered(rid, to, state, now, out);
            }
            Record::Forwarded { record, origin } => {
                self.receive_record(record, origin.as_deref(), false, now, out);
            }
            Record::Reply { to, rid, result } => {
                let result = match &*result {
                    "sent" => Ok(false),
                    "queued" => Ok(true),
                    code => Err(ErrorCode::parse(code).unwrap_or(ErrorCode::Unavailable)),
                };
                if let Some(entry) = self.awaiting.take(rid) {
                    if entry.by == to {
                        self.resolve(entry, result, now, out);
                    } else {
                        // Not ours after all: put it back for its own answer.
                        self.awaiting.entries.insert(rid, entry);
                    }
                }
            }
        }
    }

    /// The bus could not deliver the record with request number `rid`: its request is answered
    /// as the target's node would have (no such session), or with `unavailable`.
    pub fn bus_failed(
        &mut self,
        rid: u64,
        failure: BusFailure,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        if self.is_takeover(rid) {
            if failure == BusFailure::Unavailable {
                self.takeover_failed(rid, now, out);
            } else {
                // Its node heard nothing, or its directory entry expired: the node may be
                // gone, and the session may be adopted from its saved state (the bus checks
                // that the node is not alive).
                self.load_checkpoint(rid, out);
            }
            return;
        }
        let Some(entry) = self.awaiting.take(rid) else {
            return;
        };
        let code = match (failure, entry.what) {
            (BusFailure::Unavailable | BusFailure::NodeGone, _) => ErrorCode::Unavailable,
            (_, Waiting::Handle | Waiting::Copy { .. }) => ErrorCode::NoMailbox,
            (BusFailure::NoSuchSession, Waiting::Message { .. }) => ErrorCode::NotFriends,
            (BusFailure::NoSuchSession, Waiting::Request { .. }) => ErrorCode::UnknownPeer,
            (BusFailure::NoSuchSession, Waiting::Accept { .. }) => ErrorCode::NoPendingRequest,
        };
        self.resolve(entry, Err(code), now, out);
    }

    /// The bus found that another node already holds session `id`'s ID: the session made here
    /// with it ends at once (its client connects again and gets another ID), and the directory
    /// entry, which is the other node's, is left alone.
    ///
    /// It leaves quietly, telling no friend and withdrawing nothing: the node that holds the ID
    /// holds whatever the ID's friendships are (for a session adopted from a node thought dead
    /// that was not, the same session, live there).
    pub fn claim_lost(&mut self, id: Id, out: &mut impl FrameSink) {
        self.unannounced.remove(&id);
        self.checkpoint_due.remove(&id);
        if let Some(session) = self.detach_session(id, super::close_code::SERVER_FULL, out) {
            for entry in session.queue.iter() {
                self.queued_frames -= 1;
                self.queued_bytes -= entry.bytes();
            }
        }
    }

    /// Requests that waited for an answer past [`REPLY_TIMEOUT_MS`]: ERROR `unavailable`.
    pub(super) fn expire_awaiting(&mut self, now: Now, out: &mut impl FrameSink) {
        while let Some(entry) = self.awaiting.pop_due(now.mono_ms) {
            self.resolve(entry, Err(ErrorCode::Unavailable), now, out);
        }
    }

    pub(super) fn message_remotely(
        &mut self,
        caller: Caller<'_>,
        to: Id,
        payload: RawJson<'_>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let rid = self.await_reply(caller, Waiting::Message { to }, now)?;
        let record = Record::Message {
            from: caller.id,
            to,
            payload: payload.get(),
            ts: now.unix_ms,
            rid,
            reference: caller.reference.map(Cow::Borrowed),
        };
        self.send_record(&record, out);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn request_remotely(
        &mut self,
        caller: Caller<'_>,
        to: Id,
        key: RawJson<'_>,
        invite: Option<RawJson<'_>>,
        block: Block,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let rid = self.await_reply(caller, Waiting::Request { to }, now)?;
        if let Some(session) = self.sessions.get_mut(&caller.id) {
            *session.requests_in_flight.entry(to).or_insert(0) += 1;
        }
        let record = Record::Request {
            from: caller.id,
            to,
            key: key.get(),
            invite: invite.map(RawJson::get),
            block,
            rid,
        };
        self.send_record(&record, out);
        Ok(())
    }

    pub(super) fn accept_remotely(
        &mut self,
        caller: Caller<'_>,
        to: Id,
        key: RawJson<'_>,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<(), ErrorCode> {
        let rid = self.await_reply(caller, Waiting::Accept { to }, now)?;
        let record = Record::Accept {
            from: caller.id,
            to,
            key: key.get(),
            rid,
        };
        self.send_record(&record, out);
        Ok(())
    }

    /// Sends a notice that needs no answer.
    pub(super) fn tell_remote(&mut self, record: Record<'_>, out: &mut impl FrameSink) {
        self.send_record(&record, out);
    }

    pub(super) fn send_record(&mut self, record: &Record<'_>, out: &mut impl FrameSink) {
        let Some(to) = record.to() else {
            return;
        };
        self.bus_records_out += 1;
        out.bus(BusOutput::Record {
            to,
            rid: record.rid(),
            text: record.to_json(),
        });
    }

    /// Records that `caller` waits for another node's answer; `rate_limited` when it already
    /// waits for [`MAX_AWAITING_PER_SESSION`].
    pub(super) fn await_reply(
        &mut self,
        caller: Caller<'_>,
        what: Waiting,
        now: Now,
    ) -> Result<u64, ErrorCode> {
        let session = self
            .sessions
            .get_mut(&caller.id)
            .ok_or(ErrorCode::NotConnected)?;
        if session.awaiting >= MAX_AWAITING_PER_SESSION {
            // The bus is behind, not the client: `peer_busy` (retried, and not counted toward
            // the error flood), never `rate_limited`.
            return Err(ErrorCode::PeerBusy);
        }
        session.awaiting += 1;
        let entry = Awaiting {
            by: caller.id,
            serial: session.serial,
            conn: caller.conn,
            reference: caller.reference.map(Box::from),
            what,
        };
        Ok(self.awaiting.insert(entry, now))
    }

    /// Sends `result` of request `rid` back to session `to`'s node.
    fn reply(
        &mut self,
        to: Id,
        rid: u64,
        result: Result<bool, ErrorCode>,
        origin: Option<&str>,
        out: &mut impl FrameSink,
    ) {
        let result = match result {
            Ok(false) => "sent",
            Ok(true) => "queued",
            Err(code) => code.as_str(),
        };
        let record = Record::Reply {
            to,
            rid,
            result: Cow::Borrowed(result),
        };
        match origin {
            // Straight back to the node that waits for it.
            Some(node) if !node.is_empty() => {
                self.bus_records_out += 1;
                out.bus(BusOutput::ToNode {
                    node: node.to_owned(),
                    text: record.to_json(),
                });
            }
            _ => self.send_record(&record, out),
        }
    }

    /// Acts on the answer to a request that waited: the sender's half is updated, then its
    /// client gets the ACK or ERROR it would have got on one node. A session that ended
    /// meanwhile cannot take the outcome: what the other node did for it is undone.
    pub(super) fn resolve(
        &mut self,
        entry: Awaiting,
        result: Result<bool, ErrorCode>,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let by = entry.by;
        let alive = match self.sessions.get_mut(&by) {
            Some(session) if session.serial == entry.serial => {
                session.awaiting = session.awaiting.saturating_sub(1);
                if let Waiting::Request { to } = entry.what {
                    // Its place among the pending is given back here, and taken again below
                    // by `pending_out` if the request became pending: never counted twice.
                    release_in_flight(&mut session.requests_in_flight, to);
                }
                true
            }
            _ => false,
        };
        match (entry.what, result) {
            (Waiting::Request { to }, Ok(_)) if alive => {
                // The target may have moved here meanwhile: then its own half decides.
                let mirrored = self
                    .sessions
                    .get(&to)
                    .is_none_or(|target| target.pending_in.contains_key(&by));
                if mirrored && let Some(session) = self.sessions.get_mut(&by) {
                    session.pending_out.insert(to);
                }
                self.touch(by);
            }
            (Waiting::Request { to }, Ok(_)) => {
                self.tell_remote(Record::Cancel { from: by, to }, out);
            }
            (Waiting::Request { to }, Err(ErrorCode::Unavailable))
                if alive
                    && self
                        .sessions
                        .get(&by)
                        .is_some_and(|session| session.pending_out.contains(&to)) =>
            {
                // A repeat whose first record made the request pending: taking it back would
                // withdraw that one on the target's side only, leaving this half's place held.
            }
            (Waiting::Request { to }, Err(ErrorCode::Unavailable)) => {
                // The target's node may have recorded it: take it back.
                self.tell_remote(Record::Cancel { from: by, to }, out);
            }
            (Waiting::Accept { to }, Ok(_)) if alive => self.befriend(by, to),
            (Waiting::Accept { to }, Ok(_) | Err(ErrorCode::Unavailable)) => {
                self.tell_remote(Record::Bye { from: by, to }, out);
            }
            (Waiting::Accept { to }, Err(ErrorCode::NoPendingRequest)) => {
                // The request is gone on its sender's side: so it is here.
                if let Some(session) = self.sessions.get_mut(&by) {
                    session.pending_in.remove(&to);
                }
                self.touch(by);
            }
            (Waiting::Copy { fanout, handle }, result) => {
                self.copy_answered(&entry, fanout, handle, result, out);
                return;
            }
            (Waiting::Message { to }, Err(ErrorCode::NotFriends)) => {
                // The other half of the friendship is gone (its session ended, or it removed
                // us and the notice was lost): so it goes here, and the client is told.
                self.forget_remote_friend(by, to, out);
            }
            _ => {}
        }
        if !alive {
            return;
        }
        match result {
            Ok(queued) => {
                if let Some(reference) = entry.reference.as_deref()
                    && self.still_asking(&entry)
                {
                    out.send(entry.conn, ServerFrame::Ack { reference, queued });
                }
            }
            Err(code) => {
                if self.still_asking(&entry) {
                    self.refuse(entry.conn, code, entry.reference.as_deref(), now, out);
                }
            }
        }
    }

    /// One copy of `letter` for `handle` (its text, as the record carried it), answered under
    /// request number `rid`.
    fn receive_copy(
        &mut self,
        letter: RemoteLetter<'_>,
        handle: &str,
        rid: u64,
        origin: Option<&str>,
        now: Now,
        out: &mut impl FrameSink,
    ) {
        let result = match Handle::parse(handle) {
            Some(handle) => self.receive_remote_handle_message(handle, letter, now, out),
            None => Err(ErrorCode::BadHandle),
        };
        self.reply(letter.from, rid, result, origin, out);
    }

    /// Whether the connection that made the request still holds its session: the answer goes
    /// to it, as on one node (a connection that closed, or was taken over, hears nothing).
    pub(super) fn still_asking(&self, entry: &Awaiting) -> bool {
        self.conns
            .get(&entry.conn)
            .is_some_and(|conn| conn.session == Some(entry.by))
    }

    /// Session `id` (here) loses its friend `friend` (another node's): DISCONNECT, as when a
    /// friend's session ends.
    fn forget_remote_friend(&mut self, id: Id, friend: Id, out: &mut impl FrameSink) {
        self.touch(id);
        if self
            .sessions
            .get_mut(&id)
            .is_some_and(|session| session.friends.remove(&friend))
        {
            let frame = protocol::disconnect(friend);
            self.deliver(id, ServerFrame::Encoded(&frame), QueuedKind::Control, out);
        }
    }

    /// The target's half of a FRIEND_REQUEST from another node's session.
    #[allow(clippy::too_many_arguments)]
    fn receive_remote_request(
        &mut self,
        from: Id,
        to: Id,
        key: &str,
        invite: Option<&str>,
        block: Block,
        now: Now,
        out: &mut impl FrameSink,
    ) -> Result<bool, ErrorCode> {
        let target = self.sessions.get(&to).ok_or(ErrorCode::UnknownPeer)?;
        if target.friends.contains(&from) {
            return Err(ErrorCode::AlreadyFriends);
        }
        if target.pending_in.contains_key(&from) {
            // Already delivered once (an answer that was lost, a retry).
            return Ok(false);
        }
        let key = RawJson::from_record(key);
        let invite = invite.map(RawJson::from_record);
        self.receive_request(from, block, to, key, invite, now, out)
    }

    /// The requester's half of a FRIEND_ACCEPT from another node's session.
    fn receive_remote_accept(
        &mut self,
        from: Id,
        to: Id,
        key: &str,
        out: &mut impl FrameSink,
    ) -> Result<bool, ErrorCode> {
        let requester = self.sessions.get(&to).ok_or(ErrorCode::NoPendingRequest)?;
        if !requester.pending_out.contains(&from) {
            return Err(ErrorCode::NoPendingRequest);
        }
        if self.is_busy(to, 1, out) {
            return Err(ErrorCode::PeerBusy);
        }
        self.befriend(from, to);
        let frame = ServerFrame::FriendKey {
            kind: FriendKeyFrame::Accept,
            from,
            public_key: RawJson::from_record(key),
            invite: None,
        };
        Ok(self.deliver(to, frame, QueuedKind::Capped, out))
    }
}
