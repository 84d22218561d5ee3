//! The protocol decoder: `decode` on arbitrary text, then every server frame built from what it
//! accepted.
//!
//! Checked: nothing panics; a rejection is `bad_json` or `bad_request` and echoes a `ref` only
//! when it is a valid one; an accepted frame is a JSON object (when serde_json can build a tree
//! of it) whose `type` is a string; its `ref` is a string of at most 64 code points; a `to` ID
//! equals `Id::parse` of the decoded string; armored fields decode to strings with the right
//! header; and every server frame built from the accepted parts (MESSAGE, FRIEND_REQUEST,
//! FRIEND_ACCEPT, ACK, ERROR, PONG, UNDELIVERED) is valid JSON carrying those parts unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secchat::id::Id;
use secchat::protocol::{
    self, ErrorCode, FriendKeyFrame, Handle, InviteProof, MAX_INVITE_CHARS, MAX_REF_CHARS,
    MESSAGE_ARMOR, MessageTarget, PUBLIC_KEY_ARMOR, RawJson, Request, ServerFrame,
};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match protocol::decode(text) {
        Ok(frame) => {
            let reference = frame.reference.map(RawJson::get);
            if let Some(raw) = frame.reference {
                check_ref(raw);
            }
            check_tree(text);
            check_request(text, &frame.request, reference);
        }
        Err(rejected) => {
            assert!(
                matches!(rejected.code, ErrorCode::BadJson | ErrorCode::BadRequest),
                "decode rejected with {:?}",
                rejected.code
            );
            if let Some(raw) = rejected.reference {
                assert_eq!(rejected.code, ErrorCode::BadRequest);
                check_ref(raw);
            }
            let reply = parse(&protocol::error(
                rejected.code,
                rejected.reference.map(RawJson::get),
            ));
            assert_eq!(reply["code"], rejected.code.as_str());
        }
    }
});

/// A server frame's text, checked against the length outboxes size its header from.
fn encoded(frame: ServerFrame<'_>) -> String {
    let text = frame.to_text();
    assert_eq!(
        text.len(),
        frame.len(),
        "ServerFrame::len is not the written length"
    );
    text
}

fn parse(frame: &str) -> Value {
    match serde_json::from_str::<Value>(frame) {
        Ok(value) if value.is_object() => value,
        Ok(other) => panic!("server frame is not an object: {other}"),
        Err(error) => panic!("server frame is not JSON ({error}): {frame:?}"),
    }
}

fn decoded_string(raw: RawJson<'_>) -> String {
    serde_json::from_str::<String>(raw.get())
        .unwrap_or_else(|e| panic!("accepted field is not a string ({e}): {}", raw.get()))
}

/// An armored field's text, and whether it holds an escaped lone surrogate (`"\ud83d"`): valid
/// JSON, accepted and forwarded byte for byte as serde_json's parser accepts it, but no Rust
/// `String`. Such an escape is read as U+FFFD here, so the header is still checked; only the
/// checks that parse a forwarded frame into a serde_json tree are skipped for it.
fn decoded_armored(raw: RawJson<'_>) -> (String, bool) {
    let (literal, lone) = with_lone_surrogates_replaced(raw.get());
    let text = serde_json::from_str::<String>(&literal)
        .unwrap_or_else(|e| panic!("accepted field is not a string ({e}): {}", raw.get()));
    (text, lone)
}

/// The JSON string literal with each `\uXXXX` surrogate escape that is not half of a pair
/// replaced by `\ufffd`, and whether there was one.
fn with_lone_surrogates_replaced(literal: &str) -> (String, bool) {
    let bytes = literal.as_bytes();
    let unit_at = |i: usize| {
        let escape = bytes.get(i..i + 6)?;
        if escape.get(..2)? != b"\\u" {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(escape.get(2..)?).ok()?, 16).ok()
    };
    let mut out = String::with_capacity(literal.len());
    let mut lone = false;
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte != b'\\' {
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b'\\')
                .map_or(bytes.len(), |n| i + n);
            out.push_str(&literal[i..end]);
            i = end;
            continue;
        }
        let taken = match unit_at(i) {
            Some(0xD800..=0xDBFF) if matches!(unit_at(i + 6), Some(0xDC00..=0xDFFF)) => 12,
            Some(0xD800..=0xDFFF) => {
                lone = true;
                out.push_str("\\ufffd");
                i += 6;
                continue;
            }
            Some(_) => 6,
            None => 2,
        };
        let end = (i + taken).min(bytes.len());
        out.push_str(&literal[i..end]);
        i = end;
    }
    (out, lone)
}

fn check_ref(raw: RawJson<'_>) {
    let text = decoded_string(raw);
    assert!(
        text.chars().count() <= MAX_REF_CHARS,
        "ref too long: {text:?}"
    );
}

/// An accepted frame must be an object with a string `type`. serde_json's tree refuses a few
/// texts the raw decoder rightly passes over (numbers out of `f64` range in ignored fields),
/// so only a tree that builds is checked.
fn check_tree(text: &str) {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        assert!(value.is_object(), "accepted a non-object: {text:?}");
        assert!(value["type"].is_string(), "accepted a non-string type");
    }
}

fn check_request(text: &str, request: &Request<'_>, reference: Option<&str>) {
    let from = Id::parse("K7Q2ZD").unwrap_or_else(|| panic!("fixed ID"));
    match request {
        Request::FriendRequest { to, public_key, .. }
        | Request::FriendAccept { to, public_key } => {
            check_to(text, *to);
            let invite = match request {
                Request::FriendRequest {
                    invite: InviteProof::Valid(raw),
                    ..
                } => Some(*raw),
                _ => None,
            };
            if let Some(raw) = invite {
                // Forwarded unread: it must be plain base64url text that needs no decoding.
                let text = raw.get();
                assert!(text.len() >= 3 && text.len() <= MAX_INVITE_CHARS + 2);
                let inner = text.get(1..text.len() - 1).unwrap_or_default();
                assert!(
                    inner
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                );
            }
            if let Some(key) = *public_key {
                let (decoded, lone_surrogate) = decoded_armored(key);
                assert!(decoded.starts_with(PUBLIC_KEY_ARMOR));
                if !lone_surrogate {
                    let kind = match request {
                        Request::FriendRequest { .. } => FriendKeyFrame::Request,
                        _ => FriendKeyFrame::Accept,
                    };
                    let forwarded = parse(&encoded(ServerFrame::FriendKey {
                        kind,
                        from,
                        public_key: key,
                        invite,
                    }));
                    assert_eq!(forwarded["from"], "K7Q2ZD");
                    if let Some(raw) = invite {
                        assert_eq!(
                            forwarded["invite"].as_str(),
                            raw.get().get(1..raw.get().len() - 1)
                        );
                    }
                    assert_eq!(forwarded["public_key"].as_str(), Some(&*decoded));
                }
            }
        }
        Request::FriendDecline { to } | Request::FriendRemove { to } => check_to(text, *to),
        Request::Message {
            target, payload, ..
        } => {
            let to = match *target {
                MessageTarget::Id(to) | MessageTarget::IdAndHandle(to) => {
                    check_to(text, to);
                    to
                }
                MessageTarget::Handle(arg) => {
                    // The router looks a plain handle up by its text: the two must agree.
                    if let (Some(text), Some(handle)) = (arg.text(), arg.checked()) {
                        assert_eq!(text, handle.as_bytes());
                    }
                    if let Some(handle) = arg.checked() {
                        // A handle is 43 base64url characters, and its frames carry it as is.
                        assert_eq!(Handle::parse(handle.as_str()), Some(handle));
                        let taken = parse(&protocol::handle_taken(&handle));
                        assert_eq!(taken["handle"].as_str(), Some(handle.as_str()));
                    }
                    None
                }
                MessageTarget::Handles(list) => {
                    let count = list.iter().count();
                    assert!((1..=protocol::MAX_FANOUT_HANDLES).contains(&count));
                    if let Some(reference) = reference {
                        let ack = parse(&protocol::fanout_ack(reference, count, 0));
                        assert_eq!(ack["sent"].as_u64(), Some(count as u64));
                        assert_eq!(ack["ref"], parse_ref(reference));
                    }
                    None
                }
            };
            if let Some(payload) = *payload {
                let (decoded, lone_surrogate) = decoded_armored(payload);
                assert!(decoded.starts_with(MESSAGE_ARMOR));
                if !lone_surrogate {
                    let ts = u64::from(text.len() as u32).wrapping_mul(1_000_003);
                    let forwarded = parse(&encoded(ServerFrame::Message { from, payload, ts }));
                    assert_eq!(forwarded["type"], "MESSAGE");
                    assert_eq!(forwarded["payload"].as_str(), Some(&*decoded));
                    assert_eq!(forwarded["ts"].as_u64(), Some(ts));
                }
            }
            if let (Some(to), Some(reference)) = (to, reference) {
                let undelivered = parse(&protocol::undelivered(to, reference));
                assert_eq!(undelivered["to"], to.text().as_str());
                assert_eq!(undelivered["ref"], parse_ref(reference));
            }
        }
        Request::Listen { handles } | Request::Unlisten { handles } => {
            if let Some(list) = handles {
                let count = list.iter().count();
                assert!((1..=protocol::MAX_HANDLES_PER_REQUEST).contains(&count));
                for handle in list.iter().flatten() {
                    assert_eq!(Handle::parse(handle.as_str()), Some(handle));
                }
            }
        }
        Request::Connect { .. }
        | Request::Ping
        | Request::Disconnect
        | Request::Fetch
        | Request::Unknown => {}
    }
    if let Some(reference) = reference {
        let expected = parse_ref(reference);
        for queued in [false, true] {
            let ack = parse(&encoded(ServerFrame::Ack { reference, queued }));
            assert_eq!(ack["ref"], expected);
            assert_eq!(ack.get("queued").is_some(), queued);
        }
        assert_eq!(parse(&protocol::pong(Some(reference)))["ref"], expected);
        for code in ErrorCode::ALL {
            assert_eq!(
                parse(&protocol::error(code, Some(reference)))["ref"],
                expected
            );
        }
    }
}

fn parse_ref(reference: &str) -> Value {
    serde_json::from_str(reference).unwrap_or_else(|e| panic!("ref is not JSON ({e})"))
}

/// The decoded `to` must be what `Id::parse` makes of the string the client sent.
fn check_to(text: &str, to: Option<Id>) {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(Value::String(sent)) = fields.get("to") else {
        panic!("accepted a frame whose to is not a string");
    };
    assert_eq!(to, Id::parse(sent), "to {sent:?}");
    if let Some(id) = to {
        assert_eq!(Id::parse(id.text().as_str()), Some(id));
    }
}
