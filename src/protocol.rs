//! Decoding client frames and encoding server frames (PROTOCOL.md §2, §3, §5).
//!
//! Decoding borrows from the received text: every field is kept as a `&RawValue` (validated JSON
//! text, never a `Value` tree), so a field of the wrong JSON type is our error code rather than a
//! serde error, and keys and payloads are forwarded byte for byte, never re-escaped. [`decode`]
//! applies the checks that need nothing but the frame (`bad_json`, `bad_request`) and pre-parses
//! what later checks look at (`to` → [`Id`], armor headers); the router applies the rest in the
//! order of §2.
//!
//! Encoding: the frames that forward what a client sent are [`ServerFrame`]s, written once,
//! straight into the recipient's outbox; the rare control frames are built into one `String`
//! whose capacity is computed up front.

use std::fmt;

use serde::de::value::{BorrowedStrDeserializer, MapDeserializer};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::id::{ID_LEN, Id, ResumeToken, TOKEN_LEN};

/// The longest `ref` a client may send, in Unicode code points.
pub const MAX_REF_CHARS: usize = 64;
/// A `public_key` must start with this.
pub const PUBLIC_KEY_ARMOR: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
/// A `payload` must start with this.
pub const MESSAGE_ARMOR: &str = "-----BEGIN PGP MESSAGE-----";

/// Every error code of PROTOCOL.md §5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadJson,
    BadRequest,
    UnknownType,
    NotConnected,
    AlreadyConnected,
    ServerFull,
    BadId,
    SelfRequest,
    UnknownPeer,
    AlreadyFriends,
    NoPendingRequest,
    NotFriends,
    BadKey,
    NotEncrypted,
    RateLimited,
    PeerBusy,
    KeyTooLarge,
    TooManyRequests,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::BadJson,
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::NotConnected,
        ErrorCode::AlreadyConnected,
        ErrorCode::ServerFull,
        ErrorCode::BadId,
        ErrorCode::SelfRequest,
        ErrorCode::UnknownPeer,
        ErrorCode::AlreadyFriends,
        ErrorCode::NoPendingRequest,
        ErrorCode::NotFriends,
        ErrorCode::BadKey,
        ErrorCode::NotEncrypted,
        ErrorCode::RateLimited,
        ErrorCode::PeerBusy,
        ErrorCode::KeyTooLarge,
        ErrorCode::TooManyRequests,
    ];

    /// The `code` on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::NotConnected => "not_connected",
            ErrorCode::AlreadyConnected => "already_connected",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::BadId => "bad_id",
            ErrorCode::SelfRequest => "self_request",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::AlreadyFriends => "already_friends",
            ErrorCode::NoPendingRequest => "no_pending_request",
            ErrorCode::NotFriends => "not_friends",
            ErrorCode::BadKey => "bad_key",
            ErrorCode::NotEncrypted => "not_encrypted",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::PeerBusy => "peer_busy",
            ErrorCode::KeyTooLarge => "key_too_large",
            ErrorCode::TooManyRequests => "too_many_requests",
        }
    }

    /// The `message` on the wire: what went wrong and what to do about it. Plain ASCII without
    /// characters that JSON would escape, so it is copied into frames as is.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "Send each message as one text frame holding a JSON object.",
            ErrorCode::BadRequest => {
                "A field is missing or has the wrong JSON type: type must be a string, ref a string of at most 64 characters, to a string; no key may appear twice."
            }
            ErrorCode::UnknownType => {
                "This message type is not one a client may send; see the protocol."
            }
            ErrorCode::NotConnected => "Send CONNECT first.",
            ErrorCode::AlreadyConnected => {
                "This connection already has a session; do not send CONNECT again."
            }
            ErrorCode::ServerFull => "The server has no room for another session; try again later.",
            ErrorCode::BadId => {
                "An ID is 6 characters from 0-9 and A-Z without I, L, O and U; check it."
            }
            ErrorCode::SelfRequest => "You cannot send a friend request to yourself.",
            ErrorCode::UnknownPeer => {
                "No session has that ID; check it or ask your friend for the current one."
            }
            ErrorCode::AlreadyFriends => "You are already friends.",
            ErrorCode::NoPendingRequest => "There is no pending friend request from that ID.",
            ErrorCode::NotFriends => {
                "You are not friends with that ID; send a friend request first."
            }
            ErrorCode::BadKey => {
                "public_key must be an ASCII-armored OpenPGP public key block (-----BEGIN PGP PUBLIC KEY BLOCK-----)."
            }
            ErrorCode::NotEncrypted => {
                "payload must be an ASCII-armored OpenPGP message (-----BEGIN PGP MESSAGE-----)."
            }
            ErrorCode::RateLimited => "You are sending too fast; wait a moment and try again.",
            ErrorCode::PeerBusy => "The recipient is not keeping up; wait a moment and try again.",
            ErrorCode::KeyTooLarge => {
                "public_key is larger than 16384 bytes; export the key without third-party signatures and old user IDs."
            }
            ErrorCode::TooManyRequests => {
                "The recipient has too many pending friend requests or received too many recently; try again in a minute."
            }
        }
    }

    /// Whether this error counts toward closing the connection for an error flood (§5). Not
    /// the ones that report someone else's state, which the sender cannot know in advance.
    pub fn counts_toward_flood(self) -> bool {
        !matches!(
            self,
            ErrorCode::PeerBusy | ErrorCode::ServerFull | ErrorCode::TooManyRequests
        )
    }
}

/// A decoded client frame.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The valid `ref`, as its raw JSON text (already a JSON string, echoed unchanged).
    pub reference: Option<&'a RawValue>,
    pub request: Request<'a>,
}

/// What the client asks for. Fields the router checks later are pre-parsed here, with `None`
/// meaning "fails its check" (the router decides when that check's turn comes).
///
/// `Debug` shows whether a key or payload is present, never its text.
pub enum Request<'a> {
    Connect {
        resume: Option<Resume>,
        /// The protocol version both sides speak: the client's `version` (1 when absent),
        /// capped at [`PROTOCOL_VERSION`].
        version: u8,
    },
    FriendRequest {
        /// `None`: not a valid ID (`bad_id`).
        to: Option<Id>,
        /// The raw `public_key` when it is an armored public key, else `None` (`bad_key`).
        public_key: Option<&'a RawValue>,
    },
    FriendAccept {
        to: Option<Id>,
        public_key: Option<&'a RawValue>,
    },
    FriendDecline {
        to: Option<Id>,
    },
    FriendRemove {
        to: Option<Id>,
    },
    Message {
        to: Option<Id>,
        /// The raw `payload` when it is an armored message, else `None` (`not_encrypted`).
        payload: Option<&'a RawValue>,
    },
    Ping,
    Disconnect,
    /// A type a client may not send: undefined, or one only the server sends.
    Unknown,
}

/// `CONNECT`'s `resume` object. `Debug` never shows the token.
pub struct Resume {
    /// `None`: `resume.id` is not a valid ID (`bad_id`).
    pub id: Option<Id>,
    /// The token text when it is 43 ASCII characters; anything else can never match.
    pub token: Option<[u8; TOKEN_LEN]>,
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present = |raw: &Option<&RawValue>| raw.map(|_| "<present>");
        match self {
            Request::Connect { resume, version } => f
                .debug_struct("Connect")
                .field("resume", resume)
                .field("version", version)
                .finish(),
            Request::FriendRequest { to, public_key } => f
                .debug_struct("FriendRequest")
                .field("to", to)
                .field("public_key", &present(public_key))
                .finish(),
            Request::FriendAccept { to, public_key } => f
                .debug_struct("FriendAccept")
                .field("to", to)
                .field("public_key", &present(public_key))
                .finish(),
            Request::FriendDecline { to } => {
                f.debug_struct("FriendDecline").field("to", to).finish()
            }
            Request::FriendRemove { to } => f.debug_struct("FriendRemove").field("to", to).finish(),
            Request::Message { to, payload } => f
                .debug_struct("Message")
                .field("to", to)
                .field("payload", &present(payload))
                .finish(),
            Request::Ping => f.write_str("Ping"),
            Request::Disconnect => f.write_str("Disconnect"),
            Request::Unknown => f.write_str("Unknown"),
        }
    }
}

impl fmt::Debug for Resume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resume")
            .field("id", &self.id)
            .field("token", &self.token.map(|_| "<redacted>"))
            .finish()
    }
}

/// A frame that failed `bad_json` or `bad_request`.
#[derive(Debug)]
pub struct Rejected<'a> {
    pub code: ErrorCode,
    /// The `ref` to echo: only a valid one, and never for a `ref` that is itself the problem.
    pub reference: Option<&'a RawValue>,
}

/// Deserializes a field that is present as `Some(raw)`, also when it is `null`: the default
/// `Option` handling would turn `"ref":null` into an absent `ref` instead of a `bad_request`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(deserializer).map(Some)
}

/// The top-level fields the server looks at; all others are skipped unparsed. serde's derive
/// reports a repeated known key as a data error, which [`decode`] turns into `bad_request`.
#[derive(Deserialize, Default)]
struct Fields<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(rename = "ref", default, borrow, deserialize_with = "present")]
    reference: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    to: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    public_key: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    resume: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    version: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ResumeFields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    token: Option<&'a RawValue>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
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
        // With every field a RawValue, the only data error left is a repeated key.
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

// ---------------------------------------------------------------------------------------------
// The fast path for the frames clients send
// ---------------------------------------------------------------------------------------------
//
// serde_json scans a string 8 bytes per step (about 3 instructions per byte), which made the
// payload scan most of the cost of routing a MESSAGE (BENCHMARKS.md). Every client frame but
// CONNECT with `resume` is a flat object of strings, which is decoded here with a SIMD search
// instead. Anything else, including every invalid text, is left to serde_json: this path only
// ever answers for texts serde_json accepts, with the same fields, so no client can tell the two
// apart (src/protocol/decode_equivalence.rs checks that against the old decoder).

/// The fields of `{"key":"string",...}` with no white space, no escape in a key and no known key
/// twice: what `JSON.stringify` makes of every client frame but CONNECT with `resume`. `None`
/// for anything else, which [`parsed_fields`] then decodes or rejects.
fn flat_fields(text: &str) -> Option<Fields<'_>> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mut fields = Fields::default();
    let mut key_start = 1;
    loop {
        let rest = bytes.get(key_start..)?;
        let (value_start, slot) = match known_key(rest) {
            Some((prefix_len, key)) => (key_start + prefix_len, Some(fields.slot(key))),
            None => {
                // Not a known key as `JSON.stringify` writes it: an unknown key (serde skips it
                // after validating its value, as string_end does), or a known one spelled with
                // an escape, which serde_json decides.
                let (key_end, key_escaped) = string_end(bytes, key_start)?;
                if key_escaped || bytes.get(key_end) != Some(&b':') {
                    return None;
                }
                (key_end + 1, None)
            }
        };
        let (value_end, _) = string_end(bytes, value_start)?;
        if let Some(slot) = slot {
            // A repeated known key is a `bad_request` only if serde_json meets it before any
            // syntax error; serde_json decides.
            if slot.is_some() {
                return None;
            }
            *slot = Some(borrowed_raw_value(text.get(value_start..value_end)?)?);
        }
        match bytes.get(value_end) {
            Some(b',') => key_start = value_end + 1,
            Some(b'}') if value_end + 1 == bytes.len() => return Some(fields),
            _ => return None,
        }
    }
}

/// The keys a client frame may carry.
#[derive(Clone, Copy)]
enum KnownKey {
    Type,
    Ref,
    To,
    PublicKey,
    Payload,
    Resume,
    Version,
}

impl<'a> Fields<'a> {
    fn slot(&mut self, key: KnownKey) -> &mut Option<&'a RawValue> {
        match key {
            KnownKey::Type => &mut self.kind,
            KnownKey::Ref => &mut self.reference,
            KnownKey::To => &mut self.to,
            KnownKey::PublicKey => &mut self.public_key,
            KnownKey::Payload => &mut self.payload,
            KnownKey::Resume => &mut self.resume,
            KnownKey::Version => &mut self.version,
        }
    }
}

/// Whether `rest` starts with a known key, quoted and followed by `:`: its length with both, and
/// which key. Comparing the few possible spellings in place costs less than scanning the key as a
/// string (a `memchr2` call per key, four per MESSAGE).
fn known_key(rest: &[u8]) -> Option<(usize, KnownKey)> {
    let candidates: &[(&[u8], KnownKey)] = match rest.get(1)? {
        b't' => &[(b"\"type\":", KnownKey::Type), (b"\"to\":", KnownKey::To)],
        b'p' => &[
            (b"\"payload\":", KnownKey::Payload),
            (b"\"public_key\":", KnownKey::PublicKey),
        ],
        b'r' => &[
            (b"\"ref\":", KnownKey::Ref),
            (b"\"resume\":", KnownKey::Resume),
        ],
        b'v' => &[(b"\"version\":", KnownKey::Version)],
        _ => return None,
    };
    candidates
        .iter()
        .find(|(prefix, _)| rest.starts_with(prefix))
        .map(|&(prefix, key)| (prefix.len(), key))
}

/// For the JSON string whose opening quote is at `start`: the index just past its closing
/// quote, and whether it holds an escape. `None` unless it is a string serde_json's `RawValue`
/// accepts: no byte below 0x20, and after each `\` one of `" \ / b f n r t` or `u` and four
/// hex digits. Like serde_json, an escaped lone surrogate (`\ud800`) passes: the text is
/// forwarded as it came, and refusing it here would only send it to serde_json, which accepts it.
fn string_end(bytes: &[u8], start: usize) -> Option<(usize, bool)> {
    if bytes.get(start) != Some(&b'"') {
        return None;
    }
    let mut position = start + 1;
    let mut escaped = false;
    loop {
        position += next_quote_or_backslash(bytes.get(position..)?)?;
        if bytes.get(position) == Some(&b'"') {
            return Some((position + 1, escaped));
        }
        escaped = true;
        position += 1 + escape_len(bytes.get(position + 1..)?)?;
    }
}

/// Where the first `"` or `\` in `text` is; `None` when there is none or a byte below 0x20
/// comes first (an error either way).
fn next_quote_or_backslash(text: &[u8]) -> Option<usize> {
    let found = memchr::memchr2(b'"', b'\\', text)?;
    if has_control_byte(text.get(..found)?) {
        return None;
    }
    Some(found)
}

/// How many bytes follow the `\` of a valid JSON escape at the start of `after_backslash`.
fn escape_len(after_backslash: &[u8]) -> Option<usize> {
    match after_backslash {
        [b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't', ..] => Some(1),
        [b'u', digits @ ..] => {
            let digits = digits.get(..4)?;
            digits.iter().all(u8::is_ascii_hexdigit).then_some(5)
        }
        _ => None,
    }
}

/// Whether any byte is below 0x20, which JSON forbids unescaped in a string. A minimum per
/// lane over 16-byte blocks with one reduction at the end, so that LLVM makes it one `pminub`
/// per block; a control byte only ever ends in an error, so there is nothing to stop early for.
fn has_control_byte(bytes: &[u8]) -> bool {
    const BLOCK: usize = 16;
    // The last block overlaps the others when the length is not a multiple of 16: a minimum
    // does not mind.
    let Some(&last) = bytes.last_chunk::<BLOCK>() else {
        return bytes.iter().any(|&byte| byte < 0x20);
    };
    let (blocks, _) = bytes.as_chunks::<BLOCK>();
    let mut lowest = last;
    for block in blocks {
        for (low, &byte) in lowest.iter_mut().zip(block) {
            *low = (*low).min(byte);
        }
    }
    lowest.iter().any(|&low| low < 0x20)
}

/// `json`, a JSON value already validated as serde_json would, as the borrowed `RawValue`
/// serde_json would have made of it, without scanning it again.
///
/// serde_json has no public constructor for a borrowed `RawValue`; its `Deserialize` takes one
/// from a one-entry map keyed by its marker name, which is what its own parser hands it. If a
/// serde_json release changes that name this returns `None`, so [`flat_fields`] gives up and
/// serde_json parses the frame itself: slower, never different (a unit test catches it).
fn borrowed_raw_value(json: &str) -> Option<&RawValue> {
    const SERDE_JSON_RAW_VALUE_MARKER: &str = "$serde_json::private::RawValue";
    let entry = (
        BorrowedStrDeserializer::new(SERDE_JSON_RAW_VALUE_MARKER),
        BorrowedStrDeserializer::new(json),
    );
    let map = MapDeserializer::<_, serde::de::value::Error>::new(std::iter::once(entry));
    <&RawValue>::deserialize(map).ok()
}

fn is_json_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_json_string(raw: &RawValue) -> bool {
    raw.get().starts_with('"')
}

/// A `ref` must be a JSON string of at most 64 code points. Lone surrogates (which JSON's
/// grammar allows in escapes) are refused too: echoing them would hand strict clients text they
/// cannot decode.
fn is_valid_ref(raw: &RawValue) -> bool {
    if !is_json_string(raw) {
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
const MAX_KIND_LEN: usize = 16;

/// The message type, `None` when `type` is not a string.
fn kind_of(raw: &RawValue) -> Option<Kind> {
    if !is_json_string(raw) {
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

/// The text between the quotes of a short JSON string without escapes: then the raw bytes are
/// the decoded text, and [`ascii_units`] is not needed. `None` with a `\`, or when longer than
/// any type name (an ID that long is padded, and the slow path is fine for it).
fn unescaped_text(raw: &RawValue) -> Option<&[u8]> {
    let inner = string_inner(raw).as_bytes();
    (inner.len() <= MAX_KIND_LEN && !inner.contains(&b'\\')).then_some(inner)
}

/// The text between the quotes of a JSON string's raw text, escapes as written.
fn string_inner(raw: &RawValue) -> &str {
    let text = raw.get();
    text.get(1..text.len().saturating_sub(1)).unwrap_or("")
}

/// A required `to`: outer `None` when missing or not a string (`bad_request`), inner `None` when
/// it is not a valid ID (`bad_id`).
fn target(raw: Option<&RawValue>) -> Option<Option<Id>> {
    let raw = raw.filter(|raw| is_json_string(raw))?;
    Some(match unescaped_text(raw) {
        Some(text) => Id::parse_units(text.iter().map(|&byte| byte.is_ascii().then_some(byte))),
        None => Id::parse_units(ascii_units(raw)),
    })
}

/// The newest protocol version this server speaks (docs/PROTOCOL.md §9).
pub const PROTOCOL_VERSION: u8 = 2;

/// CONNECT's `version`: absent is 1; a positive integer is capped at [`PROTOCOL_VERSION`];
/// anything else (`None`) is `bad_request`.
fn decode_version(raw: Option<&RawValue>) -> Option<u8> {
    let Some(raw) = raw else {
        return Some(1);
    };
    let asked: u64 = serde_json::from_str(raw.get()).ok()?;
    (asked >= 1).then(|| u8::try_from(asked.min(u64::from(PROTOCOL_VERSION))).unwrap_or(1))
}

/// `None` when `resume` is not an object with string `id` and `token` (or repeats a key).
fn decode_resume(raw: &RawValue) -> Option<Resume> {
    if !raw.get().starts_with('{') {
        return None;
    }
    let fields: ResumeFields<'_> = serde_json::from_str(raw.get()).ok()?;
    let id = fields.id.filter(|raw| is_json_string(raw))?;
    let token = fields.token.filter(|raw| is_json_string(raw))?;
    Some(Resume {
        id: Id::parse_units(ascii_units(id)),
        token: token_text(token),
    })
}

fn token_text(raw: &RawValue) -> Option<[u8; TOKEN_LEN]> {
    let mut text = [0u8; TOKEN_LEN];
    let mut len = 0;
    for unit in ascii_units(raw) {
        *text.get_mut(len)? = unit?;
        len += 1;
    }
    (len == TOKEN_LEN).then_some(text)
}

/// The raw field when it is a JSON string whose decoded text starts with `armor`.
fn armored<'a>(raw: Option<&'a RawValue>, armor: &str) -> Option<&'a RawValue> {
    let raw = raw?;
    if !is_json_string(raw) {
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

/// Whether the decoded JSON string starts with the ASCII `prefix`, decoding only that far.
fn decoded_starts_with(raw: &RawValue, prefix: &str) -> bool {
    let mut units = ascii_units(raw);
    prefix
        .bytes()
        .all(|expected| units.next() == Some(Some(expected)))
}

/// Iterates the characters of a JSON string literal (its raw text, quotes included, already
/// validated by serde_json) as `Some(byte)` for ASCII and `None` for anything else. A non-ASCII
/// character yields at least one `None`, which is all that callers matching ASCII text need.
pub fn ascii_units(raw: &RawValue) -> AsciiUnits<'_> {
    AsciiUnits {
        bytes: string_inner(raw).as_bytes(),
        position: 0,
    }
}

pub struct AsciiUnits<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl AsciiUnits<'_> {
    fn take(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.position)?;
        self.position += 1;
        Some(byte)
    }

    fn escape(&mut self) -> Option<u8> {
        Some(match self.take()? {
            b'b' => 0x08,
            b'f' => 0x0C,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut code = 0u32;
                for _ in 0..4 {
                    code = (code << 4) | char::from(self.take()?).to_digit(16)?;
                }
                u8::try_from(code).ok().filter(u8::is_ascii)?
            }
            // `"`, `\` and `/` stand for themselves.
            other => other,
        })
    }
}

impl Iterator for AsciiUnits<'_> {
    type Item = Option<u8>;

    fn next(&mut self) -> Option<Option<u8>> {
        let byte = self.take()?;
        Some(match byte {
            b'\\' => self.escape(),
            byte if byte.is_ascii() => Some(byte),
            _ => None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Server frames
// ---------------------------------------------------------------------------------------------

/// Digits in `n`. A frame's length is asked for several times on its way to an outbox (the
/// router's unsent count, the outbox's ceiling, the header): `ilog10` is a few instructions where
/// dividing digit by digit was thirteen divisions for a timestamp.
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

/// Where a frame's JSON text is written: a `String`, or straight into a connection's outbox.
/// Only whole `str`s go in, so what is written stays UTF-8.
pub trait TextOut {
    fn push_str(&mut self, text: &str);
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
}

/// A server frame the router sends, not yet written anywhere. The frames that carry what a
/// client sent (a payload, a key, a `ref`) borrow it, so it is copied once: into the
/// recipient's outbox, or into a `String` when the recipient's session is waiting to resume.
#[derive(Clone, Copy, Debug)]
pub enum ServerFrame<'a> {
    /// `{"type":"MESSAGE","from":"K7Q2ZD","payload":<raw>,"ts":<ms>}`.
    Message {
        from: Id,
        payload: &'a RawValue,
        ts: u64,
    },
    /// `{"type":"FRIEND_REQUEST"|"FRIEND_ACCEPT","from":..,"public_key":<raw>}`.
    FriendKey {
        kind: FriendKeyFrame,
        from: Id,
        public_key: &'a RawValue,
    },
    /// `{"type":"ACK","ref":<raw>}`, plus `"queued":true` when the acknowledged frame was
    /// queued.
    Ack { reference: &'a str, queued: bool },
    /// A frame already encoded: a queued one, or one of the rare control frames.
    Encoded(&'a str),
}

const MESSAGE_HEAD: &str = r#"{"type":"MESSAGE","from":""#;
const MESSAGE_PAYLOAD: &str = r#"","payload":"#;
const MESSAGE_TS: &str = r#","ts":"#;
const FRIEND_HEAD: &str = r#"{"type":""#;
const FRIEND_FROM: &str = r#"","from":""#;
const FRIEND_KEY: &str = r#"","public_key":"#;
const ACK_HEAD: &str = r#"{"type":"ACK","ref":"#;
const ACK_QUEUED: &str = r#","queued":true"#;

impl ServerFrame<'_> {
    /// The frame's length in bytes, exactly: outboxes size the WebSocket header from it before
    /// the frame is written.
    // Nothing asks whether a frame is empty: every frame is a JSON object.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        match *self {
            ServerFrame::Message { payload, ts, .. } => {
                MESSAGE_HEAD.len()
                    + ID_LEN
                    + MESSAGE_PAYLOAD.len()
                    + payload.get().len()
                    + MESSAGE_TS.len()
                    + decimal_len(ts)
                    + 1
            }
            ServerFrame::FriendKey {
                kind, public_key, ..
            } => {
                FRIEND_HEAD.len()
                    + kind.as_str().len()
                    + FRIEND_FROM.len()
                    + ID_LEN
                    + FRIEND_KEY.len()
                    + public_key.get().len()
                    + 1
            }
            ServerFrame::Ack { reference, queued } => {
                ACK_HEAD.len() + reference.len() + if queued { ACK_QUEUED.len() } else { 0 } + 1
            }
            ServerFrame::Encoded(text) => text.len(),
        }
    }

    /// Writes the frame's JSON text, [`ServerFrame::len`] bytes of it.
    pub fn write(&self, out: &mut impl TextOut) {
        match *self {
            ServerFrame::Message { from, payload, ts } => {
                out.push_str(MESSAGE_HEAD);
                out.push_str(from.text().as_str());
                out.push_str(MESSAGE_PAYLOAD);
                out.push_str(payload.get());
                out.push_str(MESSAGE_TS);
                push_decimal(out, ts);
                out.push_str("}");
            }
            ServerFrame::FriendKey {
                kind,
                from,
                public_key,
            } => {
                out.push_str(FRIEND_HEAD);
                out.push_str(kind.as_str());
                out.push_str(FRIEND_FROM);
                out.push_str(from.text().as_str());
                out.push_str(FRIEND_KEY);
                out.push_str(public_key.get());
                out.push_str("}");
            }
            ServerFrame::Ack { reference, queued } => {
                out.push_str(ACK_HEAD);
                out.push_str(reference);
                if queued {
                    out.push_str(ACK_QUEUED);
                }
                out.push_str("}");
            }
            ServerFrame::Encoded(text) => out.push_str(text),
        }
    }

    /// The frame as a `String` of its own, for a queue or a test.
    pub fn to_text(&self) -> String {
        let mut text = String::with_capacity(self.len());
        self.write(&mut text);
        debug_assert_eq!(text.len(), self.len());
        text
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

/// `{"type":"FRIEND_DECLINE","from":..}`.
pub fn friend_decline(from: Id) -> String {
    format!(r#"{{"type":"FRIEND_DECLINE","from":"{from}"}}"#)
}

/// `{"type":"FRIEND_CANCEL","from":..}`: a pending request from `from` is gone (version 2).
pub fn friend_cancel(from: Id) -> String {
    format!(r#"{{"type":"FRIEND_CANCEL","from":"{from}"}}"#)
}

/// `{"type":"FRIEND_REMOVE","from":..}`.
pub fn friend_remove(from: Id) -> String {
    format!(r#"{{"type":"FRIEND_REMOVE","from":"{from}"}}"#)
}

/// `{"type":"ERROR","code":..,"message":..}` plus `"ref"` when the request had a valid one.
pub fn error(code: ErrorCode, reference: Option<&str>) -> String {
    match reference {
        Some(reference) => format!(
            r#"{{"type":"ERROR","code":"{}","message":"{}","ref":{reference}}}"#,
            code.as_str(),
            code.message()
        ),
        None => format!(
            r#"{{"type":"ERROR","code":"{}","message":"{}"}}"#,
            code.as_str(),
            code.message()
        ),
    }
}

/// `{"type":"PONG"}`, echoing the PING's `ref` when it had one.
pub fn pong(reference: Option<&str>) -> String {
    match reference {
        Some(reference) => format!(r#"{{"type":"PONG","ref":{reference}}}"#),
        None => r#"{"type":"PONG"}"#.to_owned(),
    }
}

/// The reply to a successful CONNECT. `friends` yields each friend's ID and whether it is online.
pub fn connect_reply(
    id: Id,
    token: &ResumeToken,
    resumed: bool,
    friends: impl ExactSizeIterator<Item = (Id, bool)>,
    max_message_bytes: usize,
    version: u8,
) -> String {
    const FRIEND_ENTRY_MAX: usize = r#"{"id":"XXXXXX","online":false},"#.len();
    let mut frame = String::with_capacity(160 + friends.len() * FRIEND_ENTRY_MAX);
    frame.push_str(r#"{"type":"CONNECT","id":""#);
    frame.push_str(id.text().as_str());
    frame.push_str(r#"","token":""#);
    frame.push_str(token.as_str());
    frame.push_str(if resumed {
        r#"","resumed":true,"friends":["#
    } else {
        r#"","resumed":false,"friends":["#
    });
    for (index, (friend, online)) in friends.enumerate() {
        if index > 0 {
            frame.push(',');
        }
        frame.push_str(r#"{"id":""#);
        frame.push_str(friend.text().as_str());
        frame.push_str(if online {
            r#"","online":true}"#
        } else {
            r#"","online":false}"#
        });
    }
    frame.push_str(r#"],"limits":{"max_message_bytes":"#);
    push_decimal(&mut frame, max_message_bytes as u64);
    frame.push('}');
    // A version-1 reply stays exactly as version 1 defined it.
    if version >= 2 {
        frame.push_str(r#","version":"#);
        push_decimal(&mut frame, u64::from(version));
    }
    frame.push('}');
    frame
}

/// `{"type":"PRESENCE","id":..,"online":bool}`.
pub fn presence(id: Id, online: bool) -> String {
    format!(r#"{{"type":"PRESENCE","id":"{id}","online":{online}}}"#)
}

/// `{"type":"DISCONNECT","id":..}`: a friend's session ended.
pub fn disconnect(id: Id) -> String {
    format!(r#"{{"type":"DISCONNECT","id":"{id}"}}"#)
}

/// `{"type":"UNDELIVERED","to":..,"ref":<raw>}`.
pub fn undelivered(to: Id, reference: &str) -> String {
    format!(r#"{{"type":"UNDELIVERED","to":"{to}","ref":{reference}}}"#)
}

#[cfg(test)]
mod decode_equivalence;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\\nabc";
    const PAYLOAD: &str = "-----BEGIN PGP MESSAGE-----\\nabc";

    fn code_of(text: &str) -> Option<ErrorCode> {
        decode(text).err().map(|rejected| rejected.code)
    }

    fn ref_of_rejection(text: &str) -> Option<String> {
        decode(text)
            .err()
            .and_then(|r| r.reference)
            .map(|r| r.get().to_owned())
    }

    #[test]
    fn bad_json_for_invalid_json_and_non_objects() {
        for text in [
            "",
            "   ",
            "nope",
            "{",
            "{\"type\":}",
            "[]",
            "[\"CONNECT\"]",
            "\"CONNECT\"",
            "42",
            "null",
            "{\"type\":\"PING\"} x",
            "{\"type\":\"PING\"}{}",
            "{\"type\":\"PING\",}",
        ] {
            assert_eq!(code_of(text), Some(ErrorCode::BadJson), "{text:?}");
        }
    }

    #[test]
    fn whitespace_around_the_object_is_fine() {
        assert!(matches!(
            decode(" \n\t{\"type\":\"PING\"} \n").map(|f| f.request),
            Ok(Request::Ping)
        ));
    }

    #[test]
    fn bad_request_for_type_problems() {
        for text in [
            "{}",
            "{\"type\":null}",
            "{\"type\":7}",
            "{\"type\":[\"PING\"]}",
            "{\"type\":\"PING\",\"type\":\"PING\"}",
            "{\"to\":\"K7Q2ZD\"}",
        ] {
            assert_eq!(code_of(text), Some(ErrorCode::BadRequest), "{text:?}");
        }
    }

    #[test]
    fn duplicate_known_keys_are_bad_request_and_unknown_ones_ignored() {
        assert_eq!(
            code_of(r#"{"type":"MESSAGE","to":"K7Q2ZD","to":"X2M9QP","payload":"x"}"#),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(
            code_of(r#"{"type":"PING","ref":"a","ref":"a"}"#),
            Some(ErrorCode::BadRequest)
        );
        assert!(decode(r#"{"type":"PING","x":1,"x":2}"#).is_ok());
    }

    #[test]
    fn ref_must_be_a_short_string_and_its_error_has_no_ref() {
        let sixty_four = "é".repeat(64);
        let sixty_five = "é".repeat(65);
        let ok = format!(r#"{{"type":"PING","ref":"{sixty_four}"}}"#);
        assert!(decode(&ok).is_ok());
        let emoji_escapes = "\\ud83d\\ude00".repeat(64);
        assert!(decode(&format!(r#"{{"type":"PING","ref":"{emoji_escapes}"}}"#)).is_ok());
        for text in [
            format!(r#"{{"type":"PING","ref":"{sixty_five}"}}"#),
            format!(r#"{{"type":"PING","ref":"{}"}}"#, "a".repeat(65)),
            format!(r#"{{"type":"PING","ref":"{}"}}"#, "\\u0041".repeat(65)),
            r#"{"type":"PING","ref":17}"#.to_owned(),
            r#"{"type":"PING","ref":null}"#.to_owned(),
            r#"{"type":"PING","ref":{"a":1}}"#.to_owned(),
            r#"{"type":"PING","ref":"\ud800"}"#.to_owned(),
        ] {
            assert_eq!(code_of(&text), Some(ErrorCode::BadRequest), "{text}");
            assert_eq!(ref_of_rejection(&text), None, "{text}");
        }
    }

    #[test]
    fn valid_ref_is_kept_raw_and_echoed_on_bad_request() {
        let frame = decode(r#"{"type":"PING","ref":"a\"b\u00e9"}"#);
        let reference = frame
            .ok()
            .and_then(|f| f.reference)
            .map(|r| r.get().to_owned());
        assert_eq!(reference.as_deref(), Some(r#""a\"b\u00e9""#));
        assert_eq!(ref_of_rejection(r#"{"ref":"7"}"#).as_deref(), Some("\"7\""));
        assert_eq!(
            ref_of_rejection(r#"{"type":"MESSAGE","ref":"7"}"#).as_deref(),
            Some("\"7\"")
        );
    }

    #[test]
    fn to_must_be_a_string_for_friend_and_message_types() {
        for kind in [
            "FRIEND_REQUEST",
            "FRIEND_ACCEPT",
            "FRIEND_DECLINE",
            "FRIEND_REMOVE",
            "MESSAGE",
        ] {
            for to in ["", r#","to":7"#, r#","to":null"#, r#","to":["K7Q2ZD"]"#] {
                let text = format!(r#"{{"type":"{kind}"{to}}}"#);
                assert_eq!(code_of(&text), Some(ErrorCode::BadRequest), "{text}");
            }
            let text = format!(r#"{{"type":"{kind}","to":"??"}}"#);
            assert!(decode(&text).is_ok(), "{text}");
        }
        // Other types do not need `to`.
        assert!(decode(r#"{"type":"PING","to":7}"#).is_ok());
        assert!(decode(r#"{"type":"DISCONNECT"}"#).is_ok());
    }

    #[test]
    fn to_is_normalized_through_json_escapes() {
        let expected = Id::parse("K7Q2ZD");
        for to in [
            r#""K7Q2ZD""#,
            r#"" k7-q2-zd ""#,
            r#""\u004b7Q2ZD""#,
            r#""K7Q2ZD\n""#,
            r#""K7Q2Z\/""#,
        ] {
            let text = format!(r#"{{"type":"FRIEND_REMOVE","to":{to}}}"#);
            let parsed = match decode(&text).map(|f| f.request) {
                Ok(Request::FriendRemove { to }) => to,
                other => panic!("{text}: {other:?}"),
            };
            let wanted = if to.contains("\\/") { None } else { expected };
            assert_eq!(parsed, wanted, "{text}");
        }
        let text = r#"{"type":"FRIEND_REMOVE","to":"K7Q2Z\u00c9"}"#;
        assert!(matches!(
            decode(text).map(|f| f.request),
            Ok(Request::FriendRemove { to: None })
        ));
    }

    #[test]
    fn type_names_are_exact() {
        let kinds = [
            ("CONNECT", true),
            ("PING", true),
            ("DISCONNECT", true),
            ("connect", false),
            ("Ping", false),
            ("PING ", false),
            ("ACK", false),
            ("ERROR", false),
            ("PONG", false),
            ("PRESENCE", false),
            ("UNDELIVERED", false),
            ("HELLO", false),
            ("A_VERY_LONG_UNKNOWN_TYPE_NAME", false),
            ("PIN\u{00C9}", false),
        ];
        for (name, known) in kinds {
            let text = format!(r#"{{"type":"{name}"}}"#);
            let request = decode(&text).map(|f| f.request);
            assert_eq!(!matches!(request, Ok(Request::Unknown)), known, "{name}");
        }
        assert!(matches!(
            decode(r#"{"type":"P\u0049NG"}"#).map(|f| f.request),
            Ok(Request::Ping)
        ));
    }

    #[test]
    fn connect_resume_must_be_an_object_with_string_id_and_token() {
        for resume in [
            "null",
            "7",
            r#""K7Q2ZD""#,
            "{}",
            r#"{"id":"K7Q2ZD"}"#,
            r#"{"token":"x"}"#,
            r#"{"id":7,"token":"x"}"#,
            r#"{"id":"K7Q2ZD","token":null}"#,
            r#"{"id":"K7Q2ZD","token":"x","id":"K7Q2ZD"}"#,
        ] {
            let text = format!(r#"{{"type":"CONNECT","resume":{resume}}}"#);
            assert_eq!(code_of(&text), Some(ErrorCode::BadRequest), "{text}");
        }
        let token = "A".repeat(TOKEN_LEN);
        let text =
            format!(r#"{{"type":"CONNECT","resume":{{"id":"k7q2zd","token":"{token}","x":1}}}}"#);
        match decode(&text).map(|f| f.request) {
            Ok(Request::Connect {
                resume: Some(resume),
                ..
            }) => {
                assert_eq!(resume.id, Id::parse("K7Q2ZD"));
                assert_eq!(
                    resume.token.as_ref().map(|t| t.as_slice()),
                    Some(token.as_bytes())
                );
            }
            other => panic!("{other:?}"),
        }
        let text = r#"{"type":"CONNECT","resume":{"id":"bad","token":"short"}}"#;
        match decode(text).map(|f| f.request) {
            Ok(Request::Connect {
                resume: Some(resume),
                ..
            }) => {
                assert_eq!(resume.id, None);
                assert_eq!(resume.token, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn armor_checks_accept_literal_and_escaped_headers_and_keep_raw_text() {
        let literal = format!(r#"{{"type":"MESSAGE","to":"K7Q2ZD","payload":"{PAYLOAD}"}}"#);
        let escaped =
            r#"{"type":"MESSAGE","to":"K7Q2ZD","payload":"\u002d----BEGIN PGP MESSAGE-----\nabc"}"#;
        for text in [literal.as_str(), escaped] {
            match decode(text).map(|f| f.request) {
                Ok(Request::Message {
                    payload: Some(raw), ..
                }) => assert!(text.contains(raw.get())),
                other => panic!("{text}: {other:?}"),
            }
        }
        for payload in [
            "7",
            "null",
            r#""hello""#,
            r#""-----BEGIN PGP MESSAGE----""#,
            r#"" -----BEGIN PGP MESSAGE-----""#,
            r#""-----BEGIN PGP PUBLIC KEY BLOCK-----""#,
            r#"["-----BEGIN PGP MESSAGE-----"]"#,
        ] {
            let text = format!(r#"{{"type":"MESSAGE","to":"K7Q2ZD","payload":{payload}}}"#);
            assert!(
                matches!(
                    decode(&text).map(|f| f.request),
                    Ok(Request::Message { payload: None, .. })
                ),
                "{text}"
            );
        }
        let missing = decode(r#"{"type":"MESSAGE","to":"K7Q2ZD"}"#).map(|f| f.request);
        assert!(matches!(
            missing,
            Ok(Request::Message { payload: None, .. })
        ));
        let key = format!(r#"{{"type":"FRIEND_ACCEPT","to":"K7Q2ZD","public_key":"{KEY}"}}"#);
        assert!(matches!(
            decode(&key).map(|f| f.request),
            Ok(Request::FriendAccept {
                public_key: Some(_),
                ..
            })
        ));
        let wrong =
            format!(r#"{{"type":"FRIEND_REQUEST","to":"K7Q2ZD","public_key":"{PAYLOAD}"}}"#);
        assert!(matches!(
            decode(&wrong).map(|f| f.request),
            Ok(Request::FriendRequest {
                public_key: None,
                ..
            })
        ));
    }

    #[test]
    fn bad_request_comes_before_later_checks() {
        // A missing `to` is reported even though payload is also wrong.
        assert_eq!(
            code_of(r#"{"type":"MESSAGE","payload":7}"#),
            Some(ErrorCode::BadRequest)
        );
        // A bad ref wins over a bad type, and that error has no ref.
        assert_eq!(
            code_of(r#"{"type":7,"ref":7}"#),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(ref_of_rejection(r#"{"type":7,"ref":7}"#), None);
        // Bad JSON wins over everything.
        assert_eq!(code_of(r#"{"type":7,"ref":7"#), Some(ErrorCode::BadJson));
    }

    fn parse(frame: &str) -> Value {
        serde_json::from_str(frame).unwrap_or(Value::Null)
    }

    #[test]
    fn server_frames_are_valid_json_with_the_right_fields() {
        let id = Id::parse("K7Q2ZD").unwrap_or_else(|| Id::from_random_bytes([0; 4]));
        let friend = Id::from_random_bytes([1, 2, 3, 4]);
        let raw_payload = format!("\"{PAYLOAD}\\u00e9\"");
        let payload = RawValue::from_string(raw_payload.clone()).ok();
        let Some(payload) = payload else {
            panic!("raw value")
        };
        let message = |ts| {
            ServerFrame::Message {
                from: id,
                payload: &payload,
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

        let key = RawValue::from_string(format!("\"{KEY}\"")).ok();
        let Some(key) = key else { panic!("raw value") };
        let friend_with_key = |kind| {
            ServerFrame::FriendKey {
                kind,
                from: id,
                public_key: &key,
            }
            .to_text()
        };
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
    fn connect_version_is_a_positive_integer_capped_at_ours() {
        let version = |text: &str| match decode(text).map(|frame| frame.request) {
            Ok(Request::Connect { version, .. }) => Ok(version),
            Ok(other) => panic!("not a CONNECT: {other:?}"),
            Err(rejected) => Err(rejected.code),
        };
        assert_eq!(version(r#"{"type":"CONNECT"}"#), Ok(1));
        assert_eq!(version(r#"{"type":"CONNECT","version":1}"#), Ok(1));
        assert_eq!(version(r#"{"type":"CONNECT","version":2}"#), Ok(2));
        assert_eq!(version(r#"{"type":"CONNECT","version":99}"#), Ok(2));
        for bad in ["0", "-1", "1.5", "\"2\"", "null", "[2]", "1e400"] {
            let text = format!(r#"{{"type":"CONNECT","version":{bad}}}"#);
            assert_eq!(version(&text), Err(ErrorCode::BadRequest), "{text}");
        }
        assert_eq!(
            version(r#"{"type":"CONNECT","version":2,"version":2}"#),
            Err(ErrorCode::BadRequest),
            "a repeated known key"
        );
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
    fn debug_output_never_shows_keys_payloads_or_tokens() {
        let token = "T".repeat(TOKEN_LEN);
        let texts = [
            format!(r#"{{"type":"MESSAGE","to":"K7Q2ZD","payload":"{PAYLOAD}secret"}}"#),
            format!(r#"{{"type":"FRIEND_REQUEST","to":"K7Q2ZD","public_key":"{KEY}secret"}}"#),
            format!(r#"{{"type":"CONNECT","resume":{{"id":"K7Q2ZD","token":"{token}"}}}}"#),
        ];
        for text in texts {
            let shown = format!("{:?}", decode(&text).map(|frame| frame.request));
            assert!(
                !shown.contains("secret") && !shown.contains(&token),
                "{shown}"
            );
            assert!(!shown.contains("BEGIN PGP"), "{shown}");
        }
    }

    #[test]
    fn a_server_frame_is_as_long_as_it_says() {
        // Outboxes write the WebSocket header from `len` before the text: one byte off and the
        // client reads a broken frame. Lengths around the header's size classes (126, 65,536)
        // and multi-byte text included.
        let from = Id::from_random_bytes([9, 8, 7, 6]);
        for body_len in [0, 1, 60, 126, 200, 65_400, 65_536, 70_000] {
            let raw = format!("\"{PAYLOAD}{}é\"", "x".repeat(body_len));
            let Ok(raw) = RawValue::from_string(raw) else {
                panic!("raw value")
            };
            for ts in [0, 9, 10, 1_795_000_000_000, u64::MAX] {
                let payload = &*raw;
                let frame = ServerFrame::Message { from, payload, ts };
                assert_eq!(frame.to_text().len(), frame.len(), "{body_len} {ts}");
            }
            for kind in [FriendKeyFrame::Request, FriendKeyFrame::Accept] {
                let public_key = &*raw;
                let frame = ServerFrame::FriendKey {
                    kind,
                    from,
                    public_key,
                };
                assert_eq!(frame.to_text().len(), frame.len(), "{body_len}");
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
