//! The wire protocol of docs/PROTOCOL.md (§2 requests, §3 IDs, §5 errors): decoding what
//! clients send, encoding what the server sends.
//!
//! # Decoding
//! [`decode`] turns one text frame into a [`Frame`] (the [`Request`] and its `ref`), or into a
//! [`Rejected`] with `bad_json` or `bad_request`: the checks that need nothing but the frame. It
//! borrows from the text: every field the server looks at is kept as a [`RawJson`], the raw text
//! of one validated JSON value, never a `Value` tree. So a field of the wrong JSON type is our
//! error code rather than a serde error, and keys, payloads and `ref`s are forwarded byte for
//! byte, never re-escaped. What later checks look at is pre-parsed (`to` into an
//! [`Id`](crate::id::Id), the armor headers); the router applies the rest, in the order of §2.
//!
//! Two paths find the fields, and for every text they find the same ones:
//! - `fast_path`: the flat object of strings that `JSON.stringify` makes of every frame a client
//!   sends but CONNECT with `resume`, scanned with a SIMD search. It answers only for texts
//!   serde_json accepts, and gives up on anything else.
//! - the serde path in `decode`: serde_json, for everything the fast path gives up on, every
//!   invalid text included.
//!
//! `decode_equivalence` (tests) holds [`decode`] to a reference decoder that uses serde_json for
//! every frame: same result for every input, down to which bytes a forwarded field borrows.
//!
//! # Encoding
//! Each server frame is described once, as the pieces of its text in order (`encode`); its exact
//! length and its bytes both follow that one description. The frames that forward what a client
//! sent are [`ServerFrame`]s, written once, straight into the recipient's outbox; the rare
//! control frames ([`error`], [`connect_reply`], [`presence`], ...) are `String`s built at
//! exactly their length.
//!
//! # Modules
//! - `codes`: [`ErrorCode`], with its name and message on the wire.
//! - `request`: [`Frame`], [`Request`], [`Resume`], [`Rejected`]: what decoding hands the router.
//! - `raw_json`: [`RawJson`].
//! - `handle`: [`Handle`] and LISTEN's [`HandleList`], read in place (version 2).
//! - `decode`: [`decode`], the serde path, and the checks after either path has found the fields.
//! - `fast_path`: the fields of a flat object of strings, without serde_json.
//! - `json_string`: reading a JSON string's raw text (its decoded ASCII, its start) without
//!   decoding it into a `String`.
//! - `encode`: how a frame describes its text once for both its length and its bytes;
//!   [`ServerFrame`] and [`TextOut`].
//! - `control`: the control frames ([`error`], [`connect_reply`], ...).

mod codes;
mod control;
mod decode;
mod encode;
mod fast_path;
mod handle;
mod json_string;
mod raw_json;
mod request;

pub use codes::ErrorCode;
pub use control::{
    UndeliveredReason, connect_reply, disconnect, error, fanout_ack, fetched, friend_cancel,
    friend_decline, friend_remove, handle_dropped, handle_taken, listening, pong, presence,
    undelivered, undelivered_to_handle,
};
pub use decode::decode;
pub use encode::{FriendKeyFrame, ServerFrame, TextOut};
pub use handle::{
    HANDLE_LEN, Handle, HandleArg, HandleList, MAX_FANOUT_HANDLES, MAX_HANDLES_PER_REQUEST,
};
pub use json_string::{AsciiUnits, ascii_units};
pub use raw_json::RawJson;
pub use request::{Frame, InviteProof, MAX_INVITE_CHARS, MessageTarget, Rejected, Request, Resume};

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
