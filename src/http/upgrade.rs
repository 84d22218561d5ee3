//! The server's side of the WebSocket opening handshake (RFC 6455 §4.2) on a head `head.rs`
//! already parsed.
//!
//! Why not tungstenite's `handshake` feature: it parses the head a second time into an
//! `http::Request` (a header map, several allocations) and builds an `http::Response` to print
//! it, a measurable share of the CPU each connection set-up costs (BENCHMARKS.md), for four
//! header checks and one SHA-1.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::head::Request;

/// The GUID every accept key is derived with (RFC 6455 §1.3).
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The only protocol version there is (RFC 6455 §4.1).
pub const WEBSOCKET_VERSION: &str = "13";
/// A key is 16 random bytes (RFC 6455 §4.1), sent as 24 characters of padded base64.
const KEY_BYTES: usize = 16;
const KEY_LEN: usize = 24;
/// SHA-1's output in bytes, and its padded base64.
const SHA1_BYTES: usize = 20;
const ACCEPT_LEN: usize = 28;

/// Why an upgrade request was refused, as the HTTP status to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: not HTTP/1.1, no `Host`, no `Connection: upgrade`, no `Upgrade: websocket`, or no
    /// valid key.
    BadRequest,
    /// 426 with `Sec-WebSocket-Version: 13`: a version we do not speak (RFC 6455 §4.4).
    UnsupportedVersion,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest => 400,
            Refusal::UnsupportedVersion => 426,
        }
    }
}

/// The `101 Switching Protocols` head for a valid upgrade request (the method, path and Origin
/// are the caller's to check).
pub fn switching_protocols(request: &Request) -> Result<Vec<u8>, Refusal> {
    // RFC 6455 §4.2.1 lists what an opening handshake must carry, `Host` included.
    let carries_the_basics = request.http_1_1
        && request.host.is_some()
        && request.connection_upgrade
        && request.websocket_upgrade;
    if !carries_the_basics {
        return Err(Refusal::BadRequest);
    }
    if request.websocket_version.as_deref() != Some(WEBSOCKET_VERSION) {
        return Err(Refusal::UnsupportedVersion);
    }
    let key = request.websocket_key.as_deref().unwrap_or_default();
    if !is_valid_key(key.as_bytes()) {
        return Err(Refusal::BadRequest);
    }
    let accept = accept_key(key.as_bytes());
    let mut head = Vec::with_capacity(160);
    head.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    head.extend_from_slice(&accept);
    head.extend_from_slice(b"\r\n\r\n");
    Ok(head)
}

/// Whether `key` is the canonical base64 of exactly [`KEY_BYTES`] bytes: standard alphabet,
/// padded, unused trailing bits zero. That is the one spelling of 16 bytes, so no two keys a
/// client may send decode alike.
fn is_valid_key(key: &[u8]) -> bool {
    // The decoder wants room for 3 bytes per 4 characters; padding makes the last group 1 byte.
    let mut decoded = [0u8; KEY_LEN / 4 * 3];
    key.len() == KEY_LEN && matches!(STANDARD.decode_slice(key, &mut decoded), Ok(KEY_BYTES))
}

/// `Sec-WebSocket-Accept` for `key`: base64 of SHA-1 over the key and the GUID.
fn accept_key(key: &[u8]) -> [u8; ACCEPT_LEN] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(key);
    context.update(WEBSOCKET_GUID);
    let digest = context.finish();
    let mut accept = [0u8; ACCEPT_LEN];
    let hash = digest.as_ref().get(..SHA1_BYTES).unwrap_or_default();
    // ACCEPT_LEN is exactly the padded length of SHA1_BYTES: the buffer is never too small.
    let _ = STANDARD.encode_slice(hash, &mut accept);
    accept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Head, parse_head};

    const SAMPLE: &str = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn answer(head: &str) -> Result<String, Refusal> {
        let Head::Complete(request) = parse_head(head.as_bytes()) else {
            panic!("not a complete head: {head:?}");
        };
        switching_protocols(&request).map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn the_rfc_sample_key_gets_the_rfc_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(
            answer(SAMPLE).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn what_browsers_send_is_accepted() {
        // Firefox: several Connection tokens, capitalised Upgrade; header names in any case.
        let firefox = SAMPLE
            .replace("Connection: Upgrade", "Connection: keep-alive, Upgrade")
            .replace("Upgrade: websocket", "Upgrade: WebSocket")
            .replace("Sec-WebSocket-Version", "sec-websocket-version");
        assert!(answer(&firefox).is_ok());
    }

    #[test]
    fn each_missing_or_wrong_field_is_refused_with_its_status() {
        for (from, to, refusal) in [
            ("HTTP/1.1\r\n", "HTTP/1.0\r\n", Refusal::BadRequest),
            ("Host: a\r\n", "", Refusal::BadRequest),
            (
                "Connection: Upgrade",
                "Connection: keep-alive",
                Refusal::BadRequest,
            ),
            ("Upgrade: websocket", "Upgrade: h2c", Refusal::BadRequest),
            (
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Version: 8",
                Refusal::UnsupportedVersion,
            ),
            (
                "Sec-WebSocket-Version: 13",
                "X-Version: 13",
                Refusal::UnsupportedVersion,
            ),
            ("Sec-WebSocket-Key", "X-Key", Refusal::BadRequest),
            (
                "dGhlIHNhbXBsZSBub25jZQ==",
                "dGhlIHNhbXBsZSBub25jZQ",
                Refusal::BadRequest,
            ),
            (
                "dGhlIHNhbXBsZSBub25jZQ==",
                "dGhlIHNhbXBsZSBub25jZR==",
                Refusal::BadRequest,
            ),
            (
                "dGhlIHNhbXBsZSBub25jZQ==",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                Refusal::BadRequest,
            ),
        ] {
            let head = SAMPLE.replace(from, to);
            assert_ne!(head, SAMPLE, "{from:?} is not in the sample");
            assert_eq!(answer(&head), Err(refusal), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn keys_must_be_the_canonical_base64_of_16_bytes() {
        // RFC 6455 §1.3's sample key, and the extremes.
        for good in [
            &b"dGhlIHNhbXBsZSBub25jZQ=="[..],
            b"AAAAAAAAAAAAAAAAAAAAAA==",
            b"/////////////////////w==",
        ] {
            assert!(is_valid_key(good), "{}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"dGhlIHNhbXBsZSBub25jZQ="[..], // one padding character short
            b"dGhlIHNhbXBsZSBub25jZQ===",    // one too many
            b"dGhlIHNhbXBsZSBub25jZR==",     // non-zero trailing bits
            b"dGhlIHNhbXBsZSBub25jZQAA",     // no padding: 18 bytes
            b"dGhlIHNhbXBsZSBub25jZ-==",     // URL-safe character
            b"dGhlIHNhbXBsZSBub25j ZQ=",     // space
            b"dGhlIHNhbXBsZSBub25jZQ=A",     // data after padding
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAA=", // 20 bytes
            b"AAAAAAAAAAAAAAAAAAAAAAA=",     // 17 bytes
            b"",
        ] {
            assert!(!is_valid_key(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
