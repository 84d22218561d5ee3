//! What [`decode`](super::decode) makes of a client frame: the request, or why it was refused.

use std::fmt;

use super::{ErrorCode, HandleArg, HandleList, RawJson};
use crate::id::{Id, TOKEN_LEN};

/// A decoded client frame.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The valid `ref`, as its raw JSON text (already a JSON string, echoed unchanged).
    pub reference: Option<RawJson<'a>>,
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
        /// capped at [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).
        version: u8,
    },
    FriendRequest {
        /// `None`: not a valid ID (`bad_id`).
        to: Option<Id>,
        /// The raw `public_key` when it is an armored public key, else `None` (`bad_key`).
        public_key: Option<RawJson<'a>>,
        /// The optional proof that the sender opened the target's invite link.
        invite: InviteProof<'a>,
    },
    FriendAccept {
        to: Option<Id>,
        public_key: Option<RawJson<'a>>,
    },
    FriendDecline {
        to: Option<Id>,
    },
    FriendRemove {
        to: Option<Id>,
    },
    Message {
        /// Where it goes: an ID (`to`) or, in version 2, a handle or several.
        target: MessageTarget<'a>,
        /// The raw `payload` when it is an armored message, else `None` (`not_encrypted`).
        payload: Option<RawJson<'a>>,
        /// `mailbox` (version 2, MESSAGE to a handle): whether the message may be stored when no
        /// listener is connected; true when absent. `None`: not a boolean (`bad_request` for a
        /// message to a handle; ignored beside `to`).
        mailbox: Option<bool>,
    },
    /// LISTEN (version 2). `None`: `handles` is not an array of 1 to 1,024 strings
    /// (`bad_request`, once the session is known to speak version 2).
    Listen {
        handles: Option<HandleList<'a>>,
    },
    /// UNLISTEN (version 2), like LISTEN.
    Unlisten {
        handles: Option<HandleList<'a>>,
    },
    /// FETCH (version 2).
    Fetch,
    Ping,
    Disconnect,
    /// A type a client may not send: undefined, or one only the server sends.
    Unknown,
}

/// MESSAGE's `to`, `handle` and `handles`, as far as they can be judged without the session's
/// version: a version-1 session ignores `handle` and `handles` (unknown fields to it), a
/// version-2 one needs exactly one of the three. Frames that fail in every version (`to` not a
/// string; no `to` and neither a string `handle` alone nor a well-formed `handles` alone) are
/// `bad_request` at decoding already.
#[derive(Clone, Copy, Debug)]
pub enum MessageTarget<'a> {
    /// `to` alone. `None`: not a valid ID (`bad_id`).
    Id(Option<Id>),
    /// A string `handle` alone: `bad_request` for version 1; checked to be a handle
    /// (`bad_handle`) by the router, after it looked the text up.
    Handle(HandleArg<'a>),
    /// `handles` alone, an array of 1 to 64 strings (PROTOCOL.md §11): `bad_request` for
    /// version 1. Whether each string is a handle, and whether one is named twice, is the
    /// router's check.
    Handles(HandleList<'a>),
    /// `to` with `handle` or `handles` (of any JSON type): `bad_request` for version 2; version
    /// 1 reads `to`.
    IdAndHandle(Option<Id>),
}

/// FRIEND_REQUEST's optional `invite` (PROTOCOL.md §3): a string the server forwards unread to
/// version-2 targets, so that its checks are about shape only. `Debug` never shows its text.
#[derive(Clone, Copy)]
pub enum InviteProof<'a> {
    Absent,
    /// A JSON string of 1 to [`MAX_INVITE_CHARS`] base64url characters, raw (with its quotes).
    Valid(RawJson<'a>),
    /// Present but not such a string (`bad_invite`).
    Invalid,
}

/// The longest `invite`: a base64url HMAC-SHA256 is 43 characters; room for a longer one later.
pub const MAX_INVITE_CHARS: usize = 64;

impl fmt::Debug for InviteProof<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InviteProof::Absent => "Absent",
            InviteProof::Valid(_) => "Valid(<present>)",
            InviteProof::Invalid => "Invalid",
        })
    }
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
        let present = |raw: &Option<RawJson<'_>>| raw.map(|_| "<present>");
        match self {
            Request::Connect { resume, version } => f
                .debug_struct("Connect")
                .field("resume", resume)
                .field("version", version)
                .finish(),
            Request::FriendRequest {
                to,
                public_key,
                invite,
            } => f
                .debug_struct("FriendRequest")
                .field("to", to)
                .field("public_key", &present(public_key))
                .field("invite", invite)
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
            Request::Message {
                target,
                payload,
                mailbox,
            } => f
                .debug_struct("Message")
                .field("target", target)
                .field("payload", &present(payload))
                .field("mailbox", mailbox)
                .finish(),
            Request::Listen { handles } => {
                f.debug_struct("Listen").field("handles", handles).finish()
            }
            Request::Unlisten { handles } => f
                .debug_struct("Unlisten")
                .field("handles", handles)
                .finish(),
            Request::Fetch => f.write_str("Fetch"),
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
    pub reference: Option<RawJson<'a>>,
}
