//! Decoding one client frame: the fields the server looks at, then the checks that need nothing
//! but the frame.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::fast_path::flat_fields;
use super::json_string::{ascii_units, decoded_starts_with, string_inner, unescaped_text};
use super::{
    ErrorCode, Frame, MAX_REF_CHARS, MESSAGE_ARMOR, PROTOCOL_VERSION, PUBLIC_KEY_ARMOR, RawJson,
    Rejected, Request, Resume,
};
use crate::id::{Id, TOKEN_LEN};

/// Deserializes a field that is present as `Some(raw)`, also when it is `null`: the default
/// `Option` handling would turn `"ref":null` into an absent `ref` instead of a `bad_request`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<RawJson<'de>>, D::Error> {
    <&'de RawValue>::deserialize(deserializer).map(|raw| Some(RawJson::from_serde(raw)))
}

/// The top-level fields the server looks at; all others are skipped unparsed. serde's derive
/// reports a repeated known key as a data error, which [`decode`] turns into `bad_request`.
#[derive(Deserialize, Default)]
pub(super) struct Fields<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    pub(super) kind: Option<RawJson<'a>>,
    #[serde(rename = "ref", default, borrow, deserialize_with = "present")]
    pub(super) reference: Option<RawJson<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(super) to: Option<RawJson<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(super) public_key: Option<RawJson<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(super) payload: Option<RawJson<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(super) resume: Option<RawJson<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(super) version: Option<RawJson<'a>>,
}

#[derive(Deserialize)]
struct ResumeFields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<RawJson<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    token: Option<RawJson<'a>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Connect,
    FriendRequest,
    FriendAccept,
    FriendDecline,
    FriendRemove,
    Message,
    Ping,
    Disconnect,
    Unknown,
}

/// Decodes one text frame, applying the `bad_json` and `bad_request` checks.
pub fn decode(text: &str) -> Result<Frame<'_>, Rejected<'_>> {
    let fields = match flat_fields(text) {
        Some(fields) => fields,
        None => parsed_fields(text)?,
    };
    frame_from(fields)
}

/// The fields as serde_json parses them: any valid JSON object.
fn parsed_fields(text: &str) -> Result<Fields<'_>, Rejected<'_>> {
    let rejected = |code| Rejected {
        code,
        reference: None,
    };
    // serde would also accept a JSON array as a struct; only an object is a message.
    if text
        .trim_start_matches(is_json_whitespace)
        .as_bytes()
        .first()
        != Some(&b'{')
    {
        return Err(rejected(ErrorCode::BadJson));
    }
    match serde_json::from_str(text) {
        Ok(fields) => Ok(fields),
        // With every field kept raw, the only data error left is a repeated key.
        Err(error) if error.is_data() => Err(rejected(ErrorCode::BadRequest)),
        Err(_) => Err(rejected(ErrorCode::BadJson)),
    }
}

/// The checks of [`decode`] that come after parsing.
fn frame_from(fields: Fields<'_>) -> Result<Frame<'_>, Rejected<'_>> {
    let rejected = |code, reference| Rejected { code, reference };
    let reference = match fields.reference {
        None => None,
        Some(raw) if is_valid_ref(raw) => Some(raw),
        Some(_) => return Err(rejected(ErrorCode::BadRequest, None)),
    };
    let bad_request = || rejected(ErrorCode::BadRequest, reference);
    let kind = fields.kind.and_then(kind_of).ok_or_else(bad_request)?;
    let request = match kind {
        Kind::Connect => Request::Connect {
            resume: match fields.resume {
                None => None,
                Some(raw) => Some(decode_resume(raw).ok_or_else(bad_request)?),
            },
            version: decode_version(fields.version).ok_or_else(bad_request)?,
        },
        Kind::FriendRequest => Request::FriendRequest {
            to: target(fields.to).ok_or_else(bad_request)?,
            public_key: armored(fields.public_key, PUBLIC_KEY_ARMOR),
        },
        Kind::FriendAccept => Request::FriendAccept {
            to: target(fields.to).ok_or_else(bad_request)?,
            public_key: armored(fields.public_key, PUBLIC_KEY_ARMOR),
        },
        Kind::FriendDecline => Request::FriendDecline {
            to: target(fields.to).ok_or_else(bad_request)?,
        },
        Kind::FriendRemove => Request::FriendRemove {
            to: target(fields.to).ok_or_else(bad_request)?,
        },
        Kind::Message => Request::Message {
            to: target(fields.to).ok_or_else(bad_request)?,
            payload: armored(fields.payload, MESSAGE_ARMOR),
        },
        Kind::Ping => Request::Ping,
        Kind::Disconnect => Request::Disconnect,
        Kind::Unknown => Request::Unknown,
    };
    Ok(Frame { reference, request })
}

pub(super) fn is_json_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// A `ref` must be a JSON string of at most 64 code points. Lone surrogates (which JSON's
/// grammar allows in escapes) are refused too: echoing them would hand strict clients text they
/// cannot decode.
pub(super) fn is_valid_ref(raw: RawJson<'_>) -> bool {
    if !raw.is_string() {
        return false;
    }
    let inner = string_inner(raw);
    if !inner.contains('\\') {
        return inner.len() <= MAX_REF_CHARS || inner.chars().count() <= MAX_REF_CHARS;
    }
    // Escaped refs are rare: decoding them into a String is fine.
    serde_json::from_str::<String>(raw.get())
        .is_ok_and(|decoded| decoded.chars().count() <= MAX_REF_CHARS)
}

/// The longest type name a client sends.
pub(super) const MAX_KIND_LEN: usize = 16;

/// The message type, `None` when `type` is not a string.
fn kind_of(raw: RawJson<'_>) -> Option<Kind> {
    if !raw.is_string() {
        return None;
    }
    if let Some(name) = unescaped_text(raw) {
        return Some(kind_named(name));
    }
    let mut name = [0u8; MAX_KIND_LEN];
    let mut len = 0;
    for unit in ascii_units(raw) {
        match (unit, name.get_mut(len)) {
            (Some(byte), Some(slot)) => *slot = byte,
            // Non-ASCII or too long: no type has such a name.
            _ => return Some(Kind::Unknown),
        }
        len += 1;
    }
    Some(kind_named(name.get(..len).unwrap_or(&[])))
}

fn kind_named(name: &[u8]) -> Kind {
    match name {
        b"CONNECT" => Kind::Connect,
        b"FRIEND_REQUEST" => Kind::FriendRequest,
        b"FRIEND_ACCEPT" => Kind::FriendAccept,
        b"FRIEND_DECLINE" => Kind::FriendDecline,
        b"FRIEND_REMOVE" => Kind::FriendRemove,
        b"MESSAGE" => Kind::Message,
        b"PING" => Kind::Ping,
        b"DISCONNECT" => Kind::Disconnect,
        // Undefined types and the server-only ACK, ERROR, PONG, PRESENCE, UNDELIVERED.
        _ => Kind::Unknown,
    }
}

/// A required `to`: outer `None` when missing or not a string (`bad_request`), inner `None` when
/// it is not a valid ID (`bad_id`).
fn target(raw: Option<RawJson<'_>>) -> Option<Option<Id>> {
    let raw = raw.filter(|raw| raw.is_string())?;
    Some(match unescaped_text(raw) {
        Some(text) => Id::parse_units(text.iter().map(|&byte| byte.is_ascii().then_some(byte))),
        None => Id::parse_units(ascii_units(raw)),
    })
}

/// CONNECT's `version`: absent is 1; a positive integer is capped at [`PROTOCOL_VERSION`];
/// anything else (`None`) is `bad_request`.
pub(super) fn decode_version(raw: Option<RawJson<'_>>) -> Option<u8> {
    let Some(raw) = raw else {
        return Some(1);
    };
    let asked: u64 = serde_json::from_str(raw.get()).ok()?;
    (asked >= 1).then(|| u8::try_from(asked.min(u64::from(PROTOCOL_VERSION))).unwrap_or(1))
}

/// `None` when `resume` is not an object with string `id` and `token` (or repeats a key).
pub(super) fn decode_resume(raw: RawJson<'_>) -> Option<Resume> {
    if !raw.get().starts_with('{') {
        return None;
    }
    let fields: ResumeFields<'_> = serde_json::from_str(raw.get()).ok()?;
    let id = fields.id.filter(|raw| raw.is_string())?;
    let token = fields.token.filter(|raw| raw.is_string())?;
    Some(Resume {
        id: Id::parse_units(ascii_units(id)),
        token: token_text(token),
    })
}

fn token_text(raw: RawJson<'_>) -> Option<[u8; TOKEN_LEN]> {
    let mut text = [0u8; TOKEN_LEN];
    let mut len = 0;
    for unit in ascii_units(raw) {
        *text.get_mut(len)? = unit?;
        len += 1;
    }
    (len == TOKEN_LEN).then_some(text)
}

/// The raw field when it is a JSON string whose decoded text starts with `armor`.
fn armored<'a>(raw: Option<RawJson<'a>>, armor: &str) -> Option<RawJson<'a>> {
    let raw = raw?;
    if !raw.is_string() {
        return None;
    }
    let inner = string_inner(raw).as_bytes();
    let head = inner.get(..armor.len()).unwrap_or(inner);
    // Without a `\` among the first bytes, the decoded text starts with them: the header written
    // as every real client sends it needs no decoding.
    let armored = if head.contains(&b'\\') {
        decoded_starts_with(raw, armor)
    } else {
        head == armor.as_bytes()
    };
    armored.then_some(raw)
}
