//! Base64 (RFC 4648) for the two places that need it: resume tokens (base64url, `id.rs`) and
//! the WebSocket accept key (standard alphabet, `http/upgrade.rs`). Both encode a few dozen
//! bytes into a buffer on the stack; a crate would bring decoding modes we never use.

/// The standard alphabet (RFC 4648 §4).
pub const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// The URL- and file-name-safe alphabet (RFC 4648 §5).
pub const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Characters `len` bytes encode to without padding.
pub const fn unpadded_len(len: usize) -> usize {
    (len * 4).div_ceil(3)
}

/// Writes `bytes` into the start of `out` without padding and returns how many characters that
/// took ([`unpadded_len`]); characters beyond the end of `out` are dropped.
pub fn encode_unpadded(alphabet: &[u8; 64], bytes: &[u8], out: &mut [u8]) -> usize {
    let mut written = 0;
    for group in bytes.chunks(3) {
        let b0 = group.first().copied().unwrap_or(0);
        let b1 = group.get(1).copied().unwrap_or(0);
        let b2 = group.get(2).copied().unwrap_or(0);
        let triple = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        // A group of n bytes gives n + 1 characters when padding is left out.
        for index in 0..=group.len() {
            let sextet = (triple >> (18 - 6 * index)) & 63;
            if let Some(slot) = out.get_mut(written) {
                *slot = alphabet[sextet as usize];
            }
            written += 1;
        }
    }
    written
}

/// Whether `text` is the canonical standard-alphabet, padded encoding of exactly `len` bytes:
/// the one text a decoder that checks trailing bits accepts.
pub fn is_canonical_standard(text: &[u8], len: usize) -> bool {
    let characters = unpadded_len(len);
    let padded = characters.div_ceil(4) * 4;
    if text.len() != padded {
        return false;
    }
    let (data, padding) = text.split_at(characters);
    if !padding.iter().all(|&byte| byte == b'=') {
        return false;
    }
    let sextet = |byte: u8| STANDARD.iter().position(|&c| c == byte);
    if !data.iter().all(|&byte| sextet(byte).is_some()) {
        return false;
    }
    // The last character carries bits past the end of the bytes; they must be zero.
    let unused_bits = characters * 6 - len * 8;
    let last = data.last().and_then(|&byte| sextet(byte)).unwrap_or(0);
    last & ((1 << unused_bits) - 1) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(alphabet: &[u8; 64], bytes: &[u8]) -> String {
        let mut out = vec![0u8; unpadded_len(bytes.len())];
        let written = encode_unpadded(alphabet, bytes, &mut out);
        assert_eq!(written, out.len());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc4648_test_vectors() {
        // RFC 4648 §10, padding left out.
        for (input, expected) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(STANDARD, input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn the_alphabets_differ_only_in_the_last_two_characters() {
        let bytes = [0xfb, 0xff, 0xbf];
        assert_eq!(encode(STANDARD, &bytes), "+/+/");
        assert_eq!(encode(URL_SAFE, &bytes), "-_-_");
    }

    #[test]
    fn canonical_16_byte_encodings_are_recognised() {
        // RFC 6455 §1.3's sample key, and the extremes.
        assert!(is_canonical_standard(b"dGhlIHNhbXBsZSBub25jZQ==", 16));
        assert!(is_canonical_standard(b"AAAAAAAAAAAAAAAAAAAAAA==", 16));
        assert!(is_canonical_standard(b"/////////////////////w==", 16));
        for bad in [
            &b"dGhlIHNhbXBsZSBub25jZQ="[..], // one padding character short
            b"dGhlIHNhbXBsZSBub25jZQ===",    // one too many
            b"dGhlIHNhbXBsZSBub25jZR==",     // non-zero trailing bits
            b"dGhlIHNhbXBsZSBub25jZQAA",     // no padding
            b"dGhlIHNhbXBsZSBub25jZ-==",     // URL-safe character
            b"dGhlIHNhbXBsZSBub25j ZQ=",     // space
            b"dGhlIHNhbXBsZSBub25jZQ=A",     // data after padding
            b"",
        ] {
            assert!(
                !is_canonical_standard(bad, 16),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn trailing_bits_must_be_zero_for_one_and_two_leftover_bytes() {
        // One leftover byte leaves 4 unused bits, two leave 2.
        assert!(is_canonical_standard(b"Zg==", 1));
        assert!(!is_canonical_standard(b"Zh==", 1));
        assert!(is_canonical_standard(b"Zm8=", 2));
        assert!(!is_canonical_standard(b"Zm9=", 2));
    }

    #[test]
    fn canonical_checks_agree_with_encoding_for_every_length() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut text = encode(STANDARD, &bytes).into_bytes();
            while !text.len().is_multiple_of(4) {
                text.push(b'=');
            }
            assert!(is_canonical_standard(&text, len), "length {len}");
            assert!(!is_canonical_standard(&text, len + 1), "length {len} + 1");
        }
    }
}
