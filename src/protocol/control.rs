//! The control frames: the rare server frames that carry nothing a client sent but a `ref`.
//! Each is built into a `String` of its own, which the router sends as `ServerFrame::Encoded` or
//! keeps in a resume queue; described once ([`Describe`]), it is allocated at exactly its length.

use super::encode::{Describe, PieceSink};
use super::{ErrorCode, Handle};
use crate::id::{Id, ResumeToken};

/// The control frames whose pieces are all known up front (CONNECT's reply, with its list of
/// friends, is [`ConnectReply`]).
enum Control<'a> {
    /// `{"type":<kind>,"from":<id>}`: the friendship frames that name only the other side.
    From { kind: &'static str, from: Id },
    /// `{"type":"ERROR","code":..,"message":..}`, plus `"ref"` when the request had a valid one.
    Error {
        code: ErrorCode,
        reference: Option<&'a str>,
    },
    /// `{"type":"PONG"}`, plus the PING's `ref` when it had one.
    Pong { reference: Option<&'a str> },
    /// `{"type":"PRESENCE","id":..,"online":bool}`.
    Presence { id: Id, online: bool },
    /// `{"type":"DISCONNECT","id":..}`.
    Disconnect { id: Id },
    /// `{"type":"UNDELIVERED","to":..,"ref":<raw>}`.
    Undelivered { to: Id, reference: &'a str },
    /// `{"type":"UNDELIVERED","handle":..,"ref":<raw>,"reason":..}` (version 2).
    UndeliveredToHandle {
        handle: &'a Handle,
        reference: &'a str,
        reason: UndeliveredReason,
    },
    /// `{"type":<kind>,<count_name>:n,"waiting":n}` plus `"ref"`: LISTENING and FETCHED.
    Counts {
        kind: &'static str,
        handles: Option<usize>,
        waiting: usize,
        reference: Option<&'a str>,
    },
    /// `{"type":<kind>,"handle":..}` (version 2): HANDLE_TAKEN and HANDLE_DROPPED.
    AboutHandle {
        kind: &'static str,
        handle: &'a Handle,
    },
    /// `{"type":"ACK","ref":<raw>,"sent":n,"queued":n}`: a MESSAGE to several handles.
    FanoutAck {
        reference: &'a str,
        sent: usize,
        queued: usize,
    },
}

/// Why mail to a handle was dropped unread (UNDELIVERED's `reason`, PROTOCOL.md §10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UndeliveredReason {
    /// Older than `--mailbox-ttl`.
    Expired,
    /// Made room under one of the mailbox's caps.
    Evicted,
    /// One handle of a MESSAGE to several: its listener's buffers were full.
    PeerBusy,
    /// One handle of a MESSAGE to several: nobody connected there, and it could not be stored.
    NoMailbox,
    /// One handle of a MESSAGE to several: its listener is on another node, which could not be
    /// reached (cluster mode).
    Unavailable,
}

impl UndeliveredReason {
    /// The reason with this wire name, if any (a cluster record's).
    pub fn parse(text: &str) -> Option<UndeliveredReason> {
        [
            UndeliveredReason::Expired,
            UndeliveredReason::Evicted,
            UndeliveredReason::PeerBusy,
            UndeliveredReason::NoMailbox,
            UndeliveredReason::Unavailable,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UndeliveredReason::Expired => "expired",
            UndeliveredReason::Evicted => "evicted",
            UndeliveredReason::PeerBusy => "peer_busy",
            UndeliveredReason::NoMailbox => "no_mailbox",
            UndeliveredReason::Unavailable => "unavailable",
        }
    }
}

impl Describe for Control<'_> {
    fn describe(&self, out: &mut impl PieceSink) {
        match *self {
            Control::From { kind, from } => {
                out.text(r#"{"type":""#);
                out.text(kind);
                out.text(r#"","from":""#);
                out.id(from);
                out.text(r#""}"#);
            }
            Control::Error { code, reference } => {
                out.text(r#"{"type":"ERROR","code":""#);
                out.text(code.as_str());
                out.text(r#"","message":""#);
                // Plain ASCII that JSON does not escape (ErrorCode::message), so copied as is.
                out.text(code.message());
                out.text("\"");
                if let Some(reference) = reference {
                    out.text(r#","ref":"#);
                    out.text(reference);
                }
                out.text("}");
            }
            Control::Pong { reference } => {
                out.text(r#"{"type":"PONG""#);
                if let Some(reference) = reference {
                    out.text(r#","ref":"#);
                    out.text(reference);
                }
                out.text("}");
            }
            Control::Presence { id, online } => {
                out.text(r#"{"type":"PRESENCE","id":""#);
                out.id(id);
                out.text(if online {
                    r#"","online":true}"#
                } else {
                    r#"","online":false}"#
                });
            }
            Control::Disconnect { id } => {
                out.text(r#"{"type":"DISCONNECT","id":""#);
                out.id(id);
                out.text(r#""}"#);
            }
            Control::Undelivered { to, reference } => {
                out.text(r#"{"type":"UNDELIVERED","to":""#);
                out.id(to);
                out.text(r#"","ref":"#);
                out.text(reference);
                out.text("}");
            }
            Control::UndeliveredToHandle {
                handle,
                reference,
                reason,
            } => {
                out.text(r#"{"type":"UNDELIVERED","handle":""#);
                out.handle(handle);
                out.text(r#"","ref":"#);
                out.text(reference);
                out.text(r#","reason":""#);
                out.text(reason.as_str());
                out.text(r#""}"#);
            }
            Control::Counts {
                kind,
                handles,
                waiting,
                reference,
            } => {
                out.text(r#"{"type":""#);
                out.text(kind);
                out.text("\"");
                if let Some(handles) = handles {
                    out.text(r#","handles":"#);
                    out.decimal(handles as u64);
                }
                out.text(r#","waiting":"#);
                out.decimal(waiting as u64);
                if let Some(reference) = reference {
                    out.text(r#","ref":"#);
                    out.text(reference);
                }
                out.text("}");
            }
            Control::AboutHandle { kind, handle } => {
                out.text(r#"{"type":""#);
                out.text(kind);
                out.text(r#"","handle":""#);
                out.handle(handle);
                out.text(r#""}"#);
            }
            Control::FanoutAck {
                reference,
                sent,
                queued,
            } => {
                out.text(r#"{"type":"ACK","ref":"#);
                out.text(reference);
                out.text(r#","sent":"#);
                out.decimal(sent as u64);
                out.text(r#","queued":"#);
                out.decimal(queued as u64);
                out.text("}");
            }
        }
    }
}

/// The reply to a successful CONNECT. `friends` is walked once per reading of the description
/// (measure, then write), hence `Clone`.
struct ConnectReply<'a, F> {
    id: Id,
    token: &'a ResumeToken,
    resumed: bool,
    friends: F,
    max_message_bytes: usize,
    version: u8,
}

impl<F: Iterator<Item = (Id, bool)> + Clone> Describe for ConnectReply<'_, F> {
    fn describe(&self, out: &mut impl PieceSink) {
        out.text(r#"{"type":"CONNECT","id":""#);
        out.id(self.id);
        out.text(r#"","token":""#);
        out.token(self.token);
        out.text(if self.resumed {
            r#"","resumed":true,"friends":["#
        } else {
            r#"","resumed":false,"friends":["#
        });
        for (index, (friend, online)) in self.friends.clone().enumerate() {
            if index > 0 {
                out.text(",");
            }
            out.text(r#"{"id":""#);
            out.id(friend);
            out.text(if online {
                r#"","online":true}"#
            } else {
                r#"","online":false}"#
            });
        }
        out.text(r#"],"limits":{"max_message_bytes":"#);
        out.decimal(self.max_message_bytes as u64);
        out.text("}");
        // A version-1 reply stays exactly as version 1 defined it.
        if self.version >= 2 {
            out.text(r#","version":"#);
            out.decimal(u64::from(self.version));
        }
        out.text("}");
    }
}

/// `{"type":"FRIEND_DECLINE","from":..}`.
pub fn friend_decline(from: Id) -> String {
    let kind = "FRIEND_DECLINE";
    Control::From { kind, from }.to_exact_string()
}

/// `{"type":"FRIEND_CANCEL","from":..}`: a pending request from `from` is gone (version 2).
pub fn friend_cancel(from: Id) -> String {
    let kind = "FRIEND_CANCEL";
    Control::From { kind, from }.to_exact_string()
}

/// `{"type":"FRIEND_REMOVE","from":..}`.
pub fn friend_remove(from: Id) -> String {
    let kind = "FRIEND_REMOVE";
    Control::From { kind, from }.to_exact_string()
}

/// `{"type":"ERROR","code":..,"message":..}` plus `"ref"` when the request had a valid one.
pub fn error(code: ErrorCode, reference: Option<&str>) -> String {
    Control::Error { code, reference }.to_exact_string()
}

/// `{"type":"PONG"}`, echoing the PING's `ref` when it had one.
pub fn pong(reference: Option<&str>) -> String {
    Control::Pong { reference }.to_exact_string()
}

/// The reply to a successful CONNECT. `friends` yields each friend's ID and whether it is
/// online; it is walked twice (once to measure, once to write), hence `Clone`.
pub fn connect_reply(
    id: Id,
    token: &ResumeToken,
    resumed: bool,
    friends: impl Iterator<Item = (Id, bool)> + Clone,
    max_message_bytes: usize,
    version: u8,
) -> String {
    ConnectReply {
        id,
        token,
        resumed,
        friends,
        max_message_bytes,
        version,
    }
    .to_exact_string()
}

/// `{"type":"PRESENCE","id":..,"online":bool}`.
pub fn presence(id: Id, online: bool) -> String {
    Control::Presence { id, online }.to_exact_string()
}

/// `{"type":"DISCONNECT","id":..}`: a friend's session ended.
pub fn disconnect(id: Id) -> String {
    Control::Disconnect { id }.to_exact_string()
}

/// `{"type":"UNDELIVERED","to":..,"ref":<raw>}`.
pub fn undelivered(to: Id, reference: &str) -> String {
    Control::Undelivered { to, reference }.to_exact_string()
}

/// `{"type":"UNDELIVERED","handle":..,"ref":<raw>,"reason":..}`: mail to a handle was dropped
/// unread (version 2).
pub fn undelivered_to_handle(
    handle: &Handle,
    reference: &str,
    reason: UndeliveredReason,
) -> String {
    Control::UndeliveredToHandle {
        handle,
        reference,
        reason,
    }
    .to_exact_string()
}

/// `{"type":"ACK","ref":<raw>,"sent":n,"queued":n}`: the answer to a MESSAGE to several handles
/// (PROTOCOL.md §11).
pub fn fanout_ack(reference: &str, sent: usize, queued: usize) -> String {
    Control::FanoutAck {
        reference,
        sent,
        queued,
    }
    .to_exact_string()
}

/// `{"type":"LISTENING","handles":n,"waiting":n}` plus `"ref"`: the answer to LISTEN and
/// UNLISTEN.
pub fn listening(handles: usize, waiting: usize, reference: Option<&str>) -> String {
    let kind = "LISTENING";
    let handles = Some(handles);
    Control::Counts {
        kind,
        handles,
        waiting,
        reference,
    }
    .to_exact_string()
}

/// `{"type":"FETCHED","waiting":n}` plus `"ref"`: the end of FETCH's answer.
pub fn fetched(waiting: usize, reference: Option<&str>) -> String {
    let kind = "FETCHED";
    let handles = None;
    Control::Counts {
        kind,
        handles,
        waiting,
        reference,
    }
    .to_exact_string()
}

/// `{"type":"HANDLE_TAKEN","handle":..}`: another session now listens on the handle.
pub fn handle_taken(handle: &Handle) -> String {
    let kind = "HANDLE_TAKEN";
    Control::AboutHandle { kind, handle }.to_exact_string()
}

/// `{"type":"HANDLE_DROPPED","handle":..}`: the session no longer listens on the handle; it made
/// room for a LISTEN from an address block holding fewer handles.
pub fn handle_dropped(handle: &Handle) -> String {
    let kind = "HANDLE_DROPPED";
    Control::AboutHandle { kind, handle }.to_exact_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(frame: &str) -> Value {
        serde_json::from_str(frame).unwrap_or(Value::Null)
    }

    #[test]
    fn every_error_frame_is_valid_json() {
        for code in ErrorCode::ALL {
            let with_ref = parse(&error(code, Some("\"x\"")));
            assert_eq!(with_ref["type"], "ERROR");
            assert_eq!(with_ref["code"], code.as_str());
            assert_eq!(with_ref["ref"], "x");
            assert!(with_ref["message"].as_str().is_some_and(|m| m.len() > 10));
            let without = parse(&error(code, None));
            assert_eq!(without["code"], code.as_str());
            assert!(without.get("ref").is_none());
        }
    }

    #[test]
    fn control_frames_are_spelled_exactly_and_built_at_their_length() {
        let id = Id::parse("K7Q2ZD").unwrap_or_else(|| Id::from_random_bytes([0; 4]));
        let token = ResumeToken::from_random_bytes(&[0; 32]);
        let a_token = "A".repeat(43);
        let exact = [
            (friend_decline(id), r#"{"type":"FRIEND_DECLINE","from":"K7Q2ZD"}"#.to_owned()),
            (friend_cancel(id), r#"{"type":"FRIEND_CANCEL","from":"K7Q2ZD"}"#.to_owned()),
            (friend_remove(id), r#"{"type":"FRIEND_REMOVE","from":"K7Q2ZD"}"#.to_owned()),
            (pong(None), r#"{"type":"PONG"}"#.to_owned()),
            (pong(Some(r#""p""#)), r#"{"type":"PONG","ref":"p"}"#.to_owned()),
            (presence(id, true), r#"{"type":"PRESENCE","id":"K7Q2ZD","online":true}"#.to_owned()),
            (disconnect(id), r#"{"type":"DISCONNECT","id":"K7Q2ZD"}"#.to_owned()),
            (
                undelivered(id, r#""r""#),
                r#"{"type":"UNDELIVERED","to":"K7Q2ZD","ref":"r"}"#.to_owned(),
            ),
            (
                error(ErrorCode::BadJson, Some(r#""x""#)),
                r#"{"type":"ERROR","code":"bad_json","message":"Send each message as one text frame holding a JSON object.","ref":"x"}"#.to_owned(),
            ),
            (
                connect_reply(id, &token, false, std::iter::empty(), 65536, 2),
                format!(
                    r#"{{"type":"CONNECT","id":"K7Q2ZD","token":"{a_token}","resumed":false,"friends":[],"limits":{{"max_message_bytes":65536}},"version":2}}"#
                ),
            ),
            (
                connect_reply(id, &token, true, [(id, true), (id, false)].into_iter(), 7, 1),
                format!(
                    r#"{{"type":"CONNECT","id":"K7Q2ZD","token":"{a_token}","resumed":true,"friends":[{{"id":"K7Q2ZD","online":true}},{{"id":"K7Q2ZD","online":false}}],"limits":{{"max_message_bytes":7}}}}"#
                ),
            ),
        ];
        let handle = Handle::from_seed(&[0; 43]);
        let h = handle.as_str();
        let exact_v2 = [
            (
                undelivered_to_handle(&handle, r#""r""#, UndeliveredReason::Expired),
                format!(r#"{{"type":"UNDELIVERED","handle":"{h}","ref":"r","reason":"expired"}}"#),
            ),
            (
                undelivered_to_handle(&handle, r#""r""#, UndeliveredReason::Evicted),
                format!(r#"{{"type":"UNDELIVERED","handle":"{h}","ref":"r","reason":"evicted"}}"#),
            ),
            (
                listening(12, 3, Some(r#""l1""#)),
                r#"{"type":"LISTENING","handles":12,"waiting":3,"ref":"l1"}"#.to_owned(),
            ),
            (
                listening(0, 0, None),
                r#"{"type":"LISTENING","handles":0,"waiting":0}"#.to_owned(),
            ),
            (
                fetched(0, Some(r#""f1""#)),
                r#"{"type":"FETCHED","waiting":0,"ref":"f1"}"#.to_owned(),
            ),
            (
                fetched(7, None),
                r#"{"type":"FETCHED","waiting":7}"#.to_owned(),
            ),
            (
                handle_taken(&handle),
                format!(r#"{{"type":"HANDLE_TAKEN","handle":"{h}"}}"#),
            ),
            (
                handle_dropped(&handle),
                format!(r#"{{"type":"HANDLE_DROPPED","handle":"{h}"}}"#),
            ),
        ];
        let mut built = Vec::new();
        for (frame, expected) in exact.into_iter().chain(exact_v2) {
            assert_eq!(frame, expected);
            built.push(frame);
        }
        for code in ErrorCode::ALL {
            built.push(error(code, None));
            built.push(error(code, Some(r#""ü-€-😀""#)));
        }
        for friends in [0u8, 1, 2, 9] {
            for version in [1, 2] {
                let list = (0..friends).map(|n| (Id::from_random_bytes([n; 4]), n % 3 == 0));
                built.push(connect_reply(id, &token, true, list, 65536, version));
            }
        }
        for frame in built {
            // `with_capacity` gives exactly what it is asked for, and a frame that outgrew its
            // measured length would have reallocated.
            assert_eq!(frame.capacity(), frame.len(), "{frame}");
        }
    }
}
