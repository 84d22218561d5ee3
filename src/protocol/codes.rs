//! Every error code of PROTOCOL.md §5: its name and message on the wire.

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
    BadInvite,
    BadHandle,
    TooManyHandles,
    NoMailbox,
    Unavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 23] = [
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
        ErrorCode::BadInvite,
        ErrorCode::BadHandle,
        ErrorCode::TooManyHandles,
        ErrorCode::NoMailbox,
        ErrorCode::Unavailable,
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
            ErrorCode::BadInvite => "bad_invite",
            ErrorCode::BadHandle => "bad_handle",
            ErrorCode::TooManyHandles => "too_many_handles",
            ErrorCode::NoMailbox => "no_mailbox",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The code with this wire name (a cluster record's answer), if any.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|known| known.as_str() == code)
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
            ErrorCode::BadInvite => {
                "invite must be a string of 1 to 64 characters from A-Z, a-z, 0-9, - and _."
            }
            ErrorCode::BadHandle => {
                "A handle is exactly 43 characters from A-Z, a-z, 0-9, - and _ (32 bytes in base64url)."
            }
            ErrorCode::TooManyHandles => {
                "Too many handles are listened on (by this session, or by the server and no address holds more than yours would); unlisten some first."
            }
            ErrorCode::NoMailbox => {
                "Nobody listens on that handle and the server cannot keep the message; send it again later."
            }
            ErrorCode::Unavailable => {
                "The server cannot reach the part of the service your friend is connected to right now; try again in a moment."
            }
        }
    }

    /// Whether this error counts toward closing the connection for an error flood (§5). Not
    /// the ones that report someone else's state, which the sender cannot know in advance.
    pub fn counts_toward_flood(self) -> bool {
        !matches!(
            self,
            ErrorCode::PeerBusy
                | ErrorCode::ServerFull
                | ErrorCode::TooManyRequests
                | ErrorCode::TooManyHandles
                | ErrorCode::NoMailbox
                | ErrorCode::Unavailable
        )
    }
}
