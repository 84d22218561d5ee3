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

mod codes;
mod decode;
mod encode;
mod fast_path;
mod json_string;
mod raw_json;
mod request;

pub use codes::ErrorCode;
pub use decode::decode;
pub use encode::{
    FriendKeyFrame, ServerFrame, TextOut, connect_reply, disconnect, error, friend_cancel,
    friend_decline, friend_remove, pong, presence, undelivered,
};
pub use json_string::{AsciiUnits, ascii_units};
pub use raw_json::RawJson;
pub use request::{Frame, Rejected, Request, Resume};

/// The longest `ref` a client may send, in Unicode code points.
pub const MAX_REF_CHARS: usize = 64;
/// A `public_key` must start with this.
pub const PUBLIC_KEY_ARMOR: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
/// A `payload` must start with this.
pub const MESSAGE_ARMOR: &str = "-----BEGIN PGP MESSAGE-----";

/// The newest protocol version this server speaks (docs/PROTOCOL.md §9).
pub const PROTOCOL_VERSION: u8 = 2;

#[cfg(test)]
mod decode_equivalence;

#[cfg(test)]
mod tests;
