//! Encoding server frames.
//!
//! Each frame is described once, as the pieces of its JSON text in order: a frame's
//! [`Describe::describe`] hands each piece to a [`PieceSink`]. Its length is that description
//! read by [`Measure`], its bytes the same description read by [`WriteTo`], so the two cannot
//! disagree. They must not: an outbox writes the WebSocket header from the length before the
//! text, and one byte off breaks the client's stream.
//!
//! The frames that forward what a client sent are [`ServerFrame`]s, written once, straight into
//! the recipient's outbox. The rare control frames (`control`) are built into a `String` of
//! exactly their length.

use super::{HANDLE_LEN, Handle, RawJson};
use crate::id::{ID_LEN, Id, ResumeToken, TOKEN_LEN};

/// Where a frame's JSON text is written: a `String`, or straight into a connection's outbox.
/// Only whole `str`s go in, so what is written stays UTF-8.
pub trait TextOut {
    fn push_str(&mut self, text: &str);

    /// Bytes that are ASCII by their type's invariant (a handle's characters). A byte buffer
    /// copies them as they are, where a `&str` would first be checked to be UTF-8.
    fn push_ascii(&mut self, text: &[u8]) {
        self.push_str(std::str::from_utf8(text).unwrap_or(""));
    }
}

impl TextOut for String {
    fn push_str(&mut self, text: &str) {
        String::push_str(self, text);
    }
}

/// An outbox's queue: WebSocket headers are bytes, so it is not a `String`.
impl TextOut for Vec<u8> {
    fn push_str(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }

    #[inline]
    fn push_ascii(&mut self, text: &[u8]) {
        self.extend_from_slice(text);
    }
}

/// Reads a frame's description: one call per piece of its text, in order. Each kind of piece is
/// its own method, so a description read for its length does no formatting, and one read for its
/// text compiles to the writes alone (one method per kind, not a piece value matched at run time).
pub(super) trait PieceSink {
    /// Copied as is: JSON syntax, a name, or JSON text a client sent.
    fn text(&mut self, text: &str);
    /// An ID's 6 characters (the quotes around it are `text`).
    fn id(&mut self, id: Id);
    /// A resume token's characters (the quotes around it are `text`).
    fn token(&mut self, token: &ResumeToken);
    /// A number in decimal.
    fn decimal(&mut self, n: u64);
    /// A handle's 43 characters (the quotes around it are `text`).
    fn handle(&mut self, handle: &Handle);
}

/// Reads a description for its length in bytes.
#[derive(Default)]
pub(super) struct Measure(usize);

impl PieceSink for Measure {
    #[inline(always)]
    fn text(&mut self, text: &str) {
        self.0 += text.len();
    }

    #[inline(always)]
    fn id(&mut self, _: Id) {
        self.0 += ID_LEN;
    }

    #[inline(always)]
    fn token(&mut self, _: &ResumeToken) {
        self.0 += TOKEN_LEN;
    }

    #[inline(always)]
    fn decimal(&mut self, n: u64) {
        self.0 += decimal_len(n);
    }

    #[inline(always)]
    fn handle(&mut self, _: &Handle) {
        self.0 += HANDLE_LEN;
    }
}

/// Reads a description into its text.
pub(super) struct WriteTo<'o, O: TextOut>(&'o mut O);

impl<O: TextOut> PieceSink for WriteTo<'_, O> {
    #[inline(always)]
    fn text(&mut self, text: &str) {
        self.0.push_str(text);
    }

    #[inline(always)]
    fn id(&mut self, id: Id) {
        self.0.push_str(id.text().as_str());
    }

    #[inline(always)]
    fn token(&mut self, token: &ResumeToken) {
        self.0.push_str(token.as_str());
    }

    #[inline(always)]
    fn decimal(&mut self, n: u64) {
        push_decimal(self.0, n);
    }

    #[inline(always)]
    fn handle(&mut self, handle: &Handle) {
        self.0.push_ascii(handle.as_bytes());
    }
}

/// A frame that describes its text once, piece by piece, in order: its length and its text are
/// both read off that one description.
pub(super) trait Describe {
    fn describe(&self, out: &mut impl PieceSink);

    /// The text's length in bytes.
    #[inline(always)]
    fn text_len(&self) -> usize {
        let mut measure = Measure::default();
        self.describe(&mut measure);
        measure.0
    }

    /// The text, in a `String` of exactly its length: the description is read twice, once to
    /// measure and once to write.
    fn to_exact_string(&self) -> String {
        let len = self.text_len();
        let mut text = String::with_capacity(len);
        self.describe(&mut WriteTo(&mut text));
        debug_assert_eq!(text.len(), len);
        text
    }
}

/// Digits in `n`. A frame's length is asked for several times on its way to an outbox (the
/// router's unsent count, the outbox's ceiling, the header): `ilog10` is a few instructions,
/// where dividing digit by digit is thirteen divisions for a timestamp.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

fn push_decimal(out: &mut impl TextOut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        if let Some(slot) = digits.get_mut(start) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(digits.get(start..).unwrap_or(b"0")).unwrap_or("0"));
}

/// A server frame the router sends, not yet written anywhere. The frames that carry what a
/// client sent (a payload, a key, a `ref`) borrow it, so it is copied once: into the
/// recipient's outbox, or into a `String` when the recipient's session is waiting to resume.
#[derive(Clone, Copy, Debug)]
pub enum ServerFrame<'a> {
    /// `{"type":"MESSAGE","from":"K7Q2ZD","payload":<raw>,"ts":<ms>}`.
    Message {
        from: Id,
        payload: RawJson<'a>,
        ts: u64,
    },
    /// `{"type":"MESSAGE","handle":"..","payload":<raw>,"ts":<ms>}`: a MESSAGE to a handle, as
    /// its listener gets it (version 2). The handle is borrowed: the frame stays small.
    HandleMessage {
        handle: &'a Handle,
        payload: RawJson<'a>,
        ts: u64,
    },
    /// `{"type":"FRIEND_REQUEST"|"FRIEND_ACCEPT","from":..,"public_key":<raw>}`.
    /// Plus `"invite":<raw>` when given: only for a FRIEND_REQUEST to a version-2 session.
    FriendKey {
        kind: FriendKeyFrame,
        from: Id,
        public_key: RawJson<'a>,
        invite: Option<RawJson<'a>>,
    },
    /// `{"type":"ACK","ref":<raw>}`, plus `"queued":true` when the acknowledged frame was
    /// queued.
    Ack { reference: &'a str, queued: bool },
    /// A frame already encoded: a queued one, or one of the rare control frames.
    Encoded(&'a str),
}

impl Describe for ServerFrame<'_> {
    /// The frame's text, piece by piece: the one description that [`ServerFrame::len`] and
    /// [`ServerFrame::write`] both read. Always inlined, and so are the sinks' methods: `len` is
    /// asked several times per routed frame, and inlined, [`Measure`] folds into the sum of a
    /// few constants and the payload's length.
    #[inline(always)]
    fn describe(&self, out: &mut impl PieceSink) {
        match *self {
            ServerFrame::Message { from, payload, ts } => {
                out.text(r#"{"type":"MESSAGE","from":""#);
                out.id(from);
                out.text(r#"","payload":"#);
                out.text(payload.get());
                out.text(r#","ts":"#);
                out.decimal(ts);
                out.text("}");
            }
            ServerFrame::HandleMessage {
                handle,
                payload,
                ts,
            } => {
                out.text(r#"{"type":"MESSAGE","handle":""#);
                out.handle(handle);
                out.text(r#"","payload":"#);
                out.text(payload.get());
                out.text(r#","ts":"#);
                out.decimal(ts);
                out.text("}");
            }
            ServerFrame::FriendKey {
                kind,
                from,
                public_key,
                invite,
            } => {
                out.text(r#"{"type":""#);
                out.text(kind.as_str());
                out.text(r#"","from":""#);
                out.id(from);
                out.text(r#"","public_key":"#);
                out.text(public_key.get());
                if let Some(invite) = invite {
                    out.text(r#","invite":"#);
                    out.text(invite.get());
                }
                out.text("}");
            }
            ServerFrame::Ack { reference, queued } => {
                out.text(r#"{"type":"ACK","ref":"#);
                out.text(reference);
                if queued {
                    out.text(r#","queued":true"#);
                }
                out.text("}");
            }
            ServerFrame::Encoded(text) => out.text(text),
        }
    }
}

impl ServerFrame<'_> {
    /// The frame's length in bytes, exactly: outboxes size the WebSocket header from it before
    /// the frame is written.
    // Nothing asks whether a frame is empty: every frame is a JSON object.
    #[allow(clippy::len_without_is_empty)]
    #[inline]
    pub fn len(&self) -> usize {
        self.text_len()
    }

    /// Writes the frame's JSON text, [`ServerFrame::len`] bytes of it.
    #[inline]
    pub fn write(&self, out: &mut impl TextOut) {
        self.describe(&mut WriteTo(out));
    }

    /// The frame as a `String` of its own, for a queue or a test.
    pub fn to_text(&self) -> String {
        self.to_exact_string()
    }
}

/// The two forwarded frames that carry a public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FriendKeyFrame {
    Request,
    Accept,
}

impl FriendKeyFrame {
    fn as_str(self) -> &'static str {
        match self {
            FriendKeyFrame::Request => "FRIEND_REQUEST",
            FriendKeyFrame::Accept => "FRIEND_ACCEPT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ResumeToken;
    use crate::protocol::{
        connect_reply, disconnect, friend_decline, friend_remove, pong, presence, undelivered,
    };
    use serde_json::Value;

    const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\\nabc";
    const PAYLOAD: &str = "-----BEGIN PGP MESSAGE-----\\nabc";

    fn parse(frame: &str) -> Value {
        serde_json::from_str(frame).unwrap_or(Value::Null)
    }

    #[test]
    fn server_frames_are_valid_json_with_the_right_fields() {
        let id = Id::parse("K7Q2ZD").unwrap_or_else(|| Id::from_random_bytes([0; 4]));
        let friend = Id::from_random_bytes([1, 2, 3, 4]);
        let raw_payload = format!("\"{PAYLOAD}\\u00e9\"");
        let payload = RawJson::parse(&raw_payload);
        let Some(payload) = payload else {
            panic!("raw value")
        };
        let message = |ts| {
            ServerFrame::Message {
                from: id,
                payload,
                ts,
            }
            .to_text()
        };
        let frame = message(1_795_000_000_000);
        assert_eq!(
            frame,
            format!(
                r#"{{"type":"MESSAGE","from":"K7Q2ZD","payload":{raw_payload},"ts":1795000000000}}"#
            )
        );
        assert_eq!(message(0).len(), frame.len() - 12);

        let key_text = format!("\"{KEY}\"");
        let Some(key) = RawJson::parse(&key_text) else {
            panic!("raw value")
        };
        let friend_with_key = |kind| {
            ServerFrame::FriendKey {
                kind,
                from: id,
                public_key: key,
                invite: None,
            }
            .to_text()
        };
        let Some(invite) = RawJson::parse("\"Ab-_9\"") else {
            panic!("raw value")
        };
        let with_invite = ServerFrame::FriendKey {
            kind: FriendKeyFrame::Request,
            from: id,
            public_key: key,
            invite: Some(invite),
        };
        let request_with_invite = parse(&with_invite.to_text());
        assert_eq!(request_with_invite["invite"], "Ab-_9");
        assert_eq!(
            request_with_invite["public_key"],
            parse(&friend_with_key(FriendKeyFrame::Request))["public_key"]
        );
        assert_eq!(with_invite.to_text().len(), with_invite.len());
        let request = parse(&friend_with_key(FriendKeyFrame::Request));
        assert_eq!(request["type"], "FRIEND_REQUEST");
        assert_eq!(request["from"], "K7Q2ZD");
        assert_eq!(
            request["public_key"],
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\nabc"
        );
        assert_eq!(
            parse(&friend_with_key(FriendKeyFrame::Accept))["type"],
            "FRIEND_ACCEPT"
        );
        assert_eq!(
            parse(&friend_decline(id)),
            serde_json::json!({"type":"FRIEND_DECLINE","from":"K7Q2ZD"})
        );
        assert_eq!(
            parse(&friend_remove(id)),
            serde_json::json!({"type":"FRIEND_REMOVE","from":"K7Q2ZD"})
        );
        let ack = |reference, queued| ServerFrame::Ack { reference, queued }.to_text();
        assert_eq!(ack("\"17\"", false), r#"{"type":"ACK","ref":"17"}"#);
        assert_eq!(
            ack("\"17\"", true),
            r#"{"type":"ACK","ref":"17","queued":true}"#
        );
        assert_eq!(pong(None), r#"{"type":"PONG"}"#);
        assert_eq!(pong(Some("\"p\"")), r#"{"type":"PONG","ref":"p"}"#);
        assert_eq!(
            parse(&presence(id, false)),
            serde_json::json!({"type":"PRESENCE","id":"K7Q2ZD","online":false})
        );
        assert_eq!(
            parse(&disconnect(id)),
            serde_json::json!({"type":"DISCONNECT","id":"K7Q2ZD"})
        );
        assert_eq!(
            parse(&undelivered(id, "\"r\\\"1\"")),
            serde_json::json!({"type":"UNDELIVERED","to":"K7Q2ZD","ref":"r\"1"})
        );
        let token = ResumeToken::from_random_bytes(&[0; 32]);
        let reply = parse(&connect_reply(
            id,
            &token,
            true,
            [(friend, true), (id, false)].into_iter(),
            65536,
            1,
        ));
        assert_eq!(
            reply,
            serde_json::json!({"type":"CONNECT","id":"K7Q2ZD","token":token.as_str(),"resumed":true,
                "friends":[{"id":friend.to_string(),"online":true},{"id":"K7Q2ZD","online":false}],
                "limits":{"max_message_bytes":65536}})
        );
        let empty = parse(&connect_reply(id, &token, false, std::iter::empty(), 1, 2));
        assert_eq!(empty["friends"], serde_json::json!([]));
        assert_eq!(empty["resumed"], false);
        assert_eq!(empty["version"], 2, "a version-2 reply says so");
        assert_eq!(
            reply.get("version"),
            None,
            "a version-1 reply is as v1 defined it"
        );
    }

    #[test]
    fn a_server_frame_is_as_long_as_it_says() {
        // Outboxes write the WebSocket header from `len` before the text: one byte off and the
        // client reads a broken frame. Lengths around the header's size classes (126, 65,536)
        // and multi-byte text included.
        let from = Id::from_random_bytes([9, 8, 7, 6]);
        for body_len in [0, 1, 60, 126, 200, 65_400, 65_536, 70_000] {
            let raw = format!("\"{PAYLOAD}{}é\"", "x".repeat(body_len));
            let Some(raw) = RawJson::parse(&raw) else {
                panic!("raw value")
            };
            for ts in [0, 9, 10, 1_795_000_000_000, u64::MAX] {
                let payload = raw;
                let frame = ServerFrame::Message { from, payload, ts };
                assert_eq!(frame.to_text().len(), frame.len(), "{body_len} {ts}");
                let handle = &Handle::from_seed(&[7; 43]);
                let frame = ServerFrame::HandleMessage {
                    handle,
                    payload,
                    ts,
                };
                assert_eq!(frame.to_text().len(), frame.len(), "{body_len} {ts}");
            }
            for kind in [FriendKeyFrame::Request, FriendKeyFrame::Accept] {
                for invite in [None, RawJson::parse("\"0123456789abcdef\"")] {
                    let public_key = raw;
                    let frame = ServerFrame::FriendKey {
                        kind,
                        from,
                        public_key,
                        invite,
                    };
                    assert_eq!(frame.to_text().len(), frame.len(), "{body_len}");
                }
            }
        }
        for reference in ["\"\"", "\"17\"", "\"ü-€-😀\""] {
            for queued in [false, true] {
                let frame = ServerFrame::Ack { reference, queued };
                assert_eq!(frame.to_text().len(), frame.len());
            }
        }
        let encoded = ServerFrame::Encoded("{\"type\":\"PONG\"}");
        assert_eq!(encoded.to_text(), "{\"type\":\"PONG\"}");
        assert_eq!(encoded.len(), 15);
    }

    #[test]
    fn decimal_formatting() {
        let powers = (0..20).map(|e| 10u64.pow(e));
        let around = powers.flat_map(|p| [p - 1, p, p + 1]);
        for n in around.chain([12345, 1_795_000_000_000, u64::MAX]) {
            let mut text = String::new();
            push_decimal(&mut text, n);
            assert_eq!(text, n.to_string());
            assert_eq!(decimal_len(n), text.len());
        }
    }
}
