//! Decoding one client frame: find the fields the server looks at (the fast path, else
//! serde_json), then apply the checks that need nothing but the frame, in the order of
//! PROTOCOL.md §2: the JSON itself (`bad_json`), a repeated known key, the `ref`, the `type`,
//! then the fields that type requires (`bad_request`). Checks that need the router's state come
//! later, in the router; for them this pre-parses what they look at (`None` = fails).

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::fast_path::flat_fields;
use super::json_string::{ascii_units, decoded_starts_with, string_inner, unescaped_text};
use super::{
    ErrorCode, Frame, HandleArg, HandleList, InviteProof, MAX_INVITE_CHARS, MAX_REF_CHARS,
    MESSAGE_ARMOR, MessageTarget, PROTOCOL_VERSION, PUBLIC_KEY_ARMOR, RawJson, Rejected, Request,
    Resume,
};
use crate::id::{Id, TOKEN_LEN};

/// Deserializes a field that is present as `Some(raw)`, also when it is `null`: the default
/// `Option` handling would turn `"ref":null` into an absent `ref` instead of a `bad_request`.
/// Kept out of line: it is the serde path's, and inlined seven times it would make [`decode`]
/// a third larger around the fast path that nearly every frame takes.
#[inline(never)]
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<RawJson<'de>>, D::Error> {
    <&'de RawValue>::deserialize(deserializer).map(|raw| Some(RawJson::from_serde(raw)))
}

/// The top-level fields the server looks at; all others are skipped unparsed. serde's derive
/// reports a repeated known key as a data error, which [`decode`] turns into `bad_request`.
#[derive(Deserialize, Default)]
pub(super) struct KnownFields<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    pub(super) frame_type: Option<RawJson<'a>>,
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
    #[serde(default, borrow, deserialize_with = "present")]
    pub(super) invite: Option<RawJson<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(super) handle: Option<RawJson<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(super) handles: Option<RawJson<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(super) mailbox: Option<RawJson<'a>>,
}

/// The fields of CONNECT's `resume` object.
#[derive(Deserialize)]
struct ResumeFields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<RawJson<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    token: Option<RawJson<'a>>,
}

/// The `type` of a client frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameType {
    Connect,
    FriendRequest,
    FriendAccept,
    FriendDecline,
    FriendRemove,
    Message,
    Ping,
    Disconnect,
    Listen,
    Unlisten,
    Fetch,
    Unknown,
}

/// Decodes one text frame, applying the `bad_json` and `bad_request` checks.
pub fn decode(text: &str) -> Result<Frame<'_>, Rejected<'_>> {
    let fields = match flat_fields(text) {
        Some(fields) => fields,
        None => serde_fields(text)?,
    };
    checked_frame(fields)
}

/// The serde path: the fields as serde_json parses them, from any valid JSON object.
fn serde_fields(text: &str) -> Result<KnownFields<'_>, Rejected<'_>> {
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

/// The checks of [`decode`] that come after either path has found the fields.
fn checked_frame(fields: KnownFields<'_>) -> Result<Frame<'_>, Rejected<'_>> {
    let rejected = |code, reference| Rejected { code, reference };
    let reference = match fields.reference {
        None => None,
        Some(raw) if is_valid_ref(raw) => Some(raw),
        Some(_) => return Err(rejected(ErrorCode::BadRequest, None)),
    };
    let bad_request = || rejected(ErrorCode::BadRequest, reference);
    let frame_type = fields
        .frame_type
        .and_then(frame_type_of)
        .ok_or_else(bad_request)?;
    let request = match frame_type {
        FrameType::Connect => Request::Connect {
            resume: match fields.resume {
                None => None,
                Some(raw) => Some(decode_resume(raw).ok_or_else(bad_request)?),
            },
            version: decode_version(fields.version).ok_or_else(bad_request)?,
        },
        FrameType::FriendRequest => Request::FriendRequest {
            to: target(fields.to).ok_or_else(bad_request)?,
            public_key: armored(fields.public_key, PUBLIC_KEY_ARMOR),
            invite: invite_proof(fields.invite),
        },
        FrameType::FriendAccept => Request::FriendAccept {
            to: target(fields.to).ok_or_else(bad_request)?,
            public_key: armored(fields.public_key, PUBLIC_KEY_ARMOR),
        },
        FrameType::FriendDecline => Request::FriendDecline {
            to: target(fields.to).ok_or_else(bad_request)?,
        },
        FrameType::FriendRemove => Request::FriendRemove {
            to: target(fields.to).ok_or_else(bad_request)?,
        },
        FrameType::Message => Request::Message {
            target: message_target(
                [fields.to, fields.handle, fields.handles],
                target,
                HandleArg::new,
            )
            .ok_or_else(bad_request)?,
            payload: armored(fields.payload, MESSAGE_ARMOR),
            mailbox: mailbox_choice(fields.mailbox),
        },
        FrameType::Ping => Request::Ping,
        FrameType::Disconnect => Request::Disconnect,
        FrameType::Listen => Request::Listen {
            handles: fields.handles.and_then(HandleList::new),
        },
        FrameType::Unlisten => Request::Unlisten {
            handles: fields.handles.and_then(HandleList::new),
        },
        FrameType::Fetch => Request::Fetch,
        FrameType::Unknown => Request::Unknown,
    };
    Ok(Frame { reference, request })
}

/// The white space JSON allows around values.
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
pub(super) const MAX_TYPE_NAME_LEN: usize = 16;

/// The message type, `None` when `type` is not a string.
fn frame_type_of(raw: RawJson<'_>) -> Option<FrameType> {
    if !raw.is_string() {
        return None;
    }
    if let Some(name) = unescaped_text(raw) {
        return Some(frame_type_named(name));
    }
    let mut name = [0u8; MAX_TYPE_NAME_LEN];
    let mut len = 0;
    for unit in ascii_units(raw) {
        match (unit, name.get_mut(len)) {
            (Some(byte), Some(slot)) => *slot = byte,
            // Non-ASCII or too long: no type has such a name.
            _ => return Some(FrameType::Unknown),
        }
        len += 1;
    }
    Some(frame_type_named(name.get(..len).unwrap_or(&[])))
}

fn frame_type_named(name: &[u8]) -> FrameType {
    match name {
        b"CONNECT" => FrameType::Connect,
        b"FRIEND_REQUEST" => FrameType::FriendRequest,
        b"FRIEND_ACCEPT" => FrameType::FriendAccept,
        b"FRIEND_DECLINE" => FrameType::FriendDecline,
        b"FRIEND_REMOVE" => FrameType::FriendRemove,
        b"MESSAGE" => FrameType::Message,
        b"PING" => FrameType::Ping,
        b"DISCONNECT" => FrameType::Disconnect,
        b"LISTEN" => FrameType::Listen,
        b"UNLISTEN" => FrameType::Unlisten,
        b"FETCH" => FrameType::Fetch,
        // Undefined types and the server-only ACK, ERROR, PONG, PRESENCE, UNDELIVERED.
        _ => FrameType::Unknown,
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

/// MESSAGE's target (see [`MessageTarget`]) from its `to`, `handle` and `handles`; `None` for
/// `bad_request` in every version: `to` present but not a string, or no `to` and neither a
/// string `handle` alone nor a well-formed `handles` alone. `id_of` and `handle_of` read the
/// first two fields (the reference decoder passes its own).
pub(super) fn message_target<'a>(
    [to, handle, handles]: [Option<RawJson<'a>>; 3],
    id_of: impl Fn(Option<RawJson<'a>>) -> Option<Option<Id>>,
    handle_of: impl Fn(RawJson<'a>) -> HandleArg<'a>,
) -> Option<MessageTarget<'a>> {
    match (to, handle, handles) {
        (Some(_), None, None) => Some(MessageTarget::Id(id_of(to)?)),
        (Some(_), _, _) => Some(MessageTarget::IdAndHandle(id_of(to)?)),
        (None, Some(handle), None) if handle.is_string() => {
            Some(MessageTarget::Handle(handle_of(handle)))
        }
        (None, None, Some(handles)) => Some(MessageTarget::Handles(HandleList::fanout(handles)?)),
        (None, _, _) => None,
    }
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
        token: resume_token_text(token),
    })
}

/// The token text when it is [`TOKEN_LEN`] ASCII characters (escapes decoded), else `None`: no
/// token could match it.
fn resume_token_text(raw: RawJson<'_>) -> Option<[u8; TOKEN_LEN]> {
    let mut text = [0u8; TOKEN_LEN];
    let mut len = 0;
    for unit in ascii_units(raw) {
        *text.get_mut(len)? = unit?;
        len += 1;
    }
    (len == TOKEN_LEN).then_some(text)
}

/// MESSAGE's `mailbox`: true when absent, the boolean when it is one, else `None`.
pub(super) fn mailbox_choice(raw: Option<RawJson<'_>>) -> Option<bool> {
    match raw.map(RawJson::get) {
        None | Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => None,
    }
}

/// FRIEND_REQUEST's `invite`: valid when a JSON string of 1 to [`MAX_INVITE_CHARS`] characters
/// of the base64url alphabet, written without escapes (a client has no reason to escape them).
pub(super) fn invite_proof(raw: Option<RawJson<'_>>) -> InviteProof<'_> {
    let Some(raw) = raw else {
        return InviteProof::Absent;
    };
    let is_base64url = |byte: &u8| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_');
    match raw.is_string().then(|| string_inner(raw).as_bytes()) {
        Some(text)
            if (1..=MAX_INVITE_CHARS).contains(&text.len()) && text.iter().all(is_base64url) =>
        {
            InviteProof::Valid(raw)
        }
        _ => InviteProof::Invalid,
    }
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
