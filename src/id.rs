//! Session IDs (6 Crockford base32 characters) and resume tokens (32 random bytes, base64url).
//!
//! Both are made from bytes the caller draws from its entropy source, so tests stay deterministic.
//! An [`Id`] is 30 random bits kept in a `u32`: hashing and comparing it is one machine word, and
//! its text form is built on the stack ([`IdText`]).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The Crockford base32 alphabet (no I, L, O, U).
pub const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in an ID.
pub const ID_LEN: usize = 6;
/// Six base32 characters hold exactly 30 bits.
const ID_BITS: u32 = 30;
const ID_MASK: u32 = (1 << ID_BITS) - 1;
/// Characters in a resume token: 32 bytes in base64url without padding.
pub const TOKEN_LEN: usize = match base64::encoded_len(TOKEN_BYTES, false) {
    Some(len) => len,
    None => panic!("a token's text length overflows"),
};
/// Random bytes behind a token.
pub const TOKEN_BYTES: usize = 32;

/// A session ID. Always below 2^30, so its text is always 6 alphabet characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(u32);

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.0)
    }
}

/// Between nodes (cluster records) an ID travels as its number; one that does not fit is
/// refused.
impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bits = u32::deserialize(deserializer)?;
        Id::from_bits(bits).ok_or_else(|| serde::de::Error::custom("an ID beyond 30 bits"))
    }
}

impl Id {
    /// Masking 32 uniform bits down to 30 keeps them uniform: no modulo bias.
    pub fn from_random_bytes(bytes: [u8; 4]) -> Id {
        Id(u32::from_le_bytes(bytes) & ID_MASK)
    }

    /// The ID with these 30 bits, `None` when `bits` does not fit.
    pub fn from_bits(bits: u32) -> Option<Id> {
        (bits <= ID_MASK).then_some(Id(bits))
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn text(self) -> IdText {
        let mut text = [0u8; ID_LEN];
        for (position, slot) in text.iter_mut().enumerate() {
            let shift = 5 * (ID_LEN - 1 - position) as u32;
            *slot = ALPHABET[((self.0 >> shift) & 31) as usize];
        }
        IdText(text)
    }

    /// Parses an ID a client named, normalized as PROTOCOL.md §3 says: trim ASCII white space,
    /// drop every `-`, upper-case ASCII letters, read `O` as `0` and `I`/`L` as `1`; then it must
    /// be exactly 6 alphabet characters.
    ///
    /// `units` yields each character of the text as `Some(ascii byte)`, or `None` for any
    /// non-ASCII character (which makes the ID invalid). Working on a stream lets the caller
    /// decode JSON escapes without allocating.
    pub fn parse_units(units: impl IntoIterator<Item = Option<u8>>) -> Option<Id> {
        let mut bits = 0u32;
        let mut digits = 0usize;
        // Trimming happens before `-` is removed, so a `-` ends the leading white space too.
        let mut started = false;
        // White space after the start can only be the trimmed tail: nothing else may follow it.
        let mut in_trailing_space = false;
        for unit in units {
            let byte = unit?;
            if byte.is_ascii_whitespace() {
                in_trailing_space = started;
                continue;
            }
            started = true;
            if in_trailing_space {
                return None;
            }
            if byte == b'-' {
                continue;
            }
            let value = decode_digit(byte)?;
            if digits == ID_LEN {
                return None;
            }
            bits = (bits << 5) | u32::from(value);
            digits += 1;
        }
        (digits == ID_LEN).then_some(Id(bits))
    }

    /// [`Id::parse_units`] over plain text.
    pub fn parse(text: &str) -> Option<Id> {
        Id::parse_units(text.bytes().map(|b| b.is_ascii().then_some(b)))
    }
}

const INVALID_DIGIT: u8 = 0xFF;

/// Maps an ASCII byte to its base32 value, folding case and the look-alikes O, I and L.
const DIGIT_VALUES: [u8; 128] = {
    let mut table = [INVALID_DIGIT; 128];
    let mut value = 0;
    while value < 32 {
        let upper = ALPHABET[value];
        table[upper as usize] = value as u8;
        table[upper.to_ascii_lowercase() as usize] = value as u8;
        value += 1;
    }
    table[b'O' as usize] = 0;
    table[b'o' as usize] = 0;
    table[b'I' as usize] = 1;
    table[b'i' as usize] = 1;
    table[b'L' as usize] = 1;
    table[b'l' as usize] = 1;
    table
};

fn decode_digit(byte: u8) -> Option<u8> {
    let value = *DIGIT_VALUES.get(usize::from(byte))?;
    (value != INVALID_DIGIT).then_some(value)
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.text().as_str())
    }
}

/// The 6-character text of an [`Id`], on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdText([u8; ID_LEN]);

impl IdText {
    pub fn as_str(&self) -> &str {
        // Always alphabet bytes, so always ASCII; the fallback is never taken.
        std::str::from_utf8(&self.0).unwrap_or("??????")
    }
}

/// A resume token in its text form. `Debug` never shows it: tokens must not reach logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ResumeToken([u8; TOKEN_LEN]);

impl ResumeToken {
    pub fn from_random_bytes(bytes: &[u8; TOKEN_BYTES]) -> ResumeToken {
        ResumeToken(base64url_encode(bytes))
    }

    /// A token a client holds, as checked by the node that issued it (a session moving
    /// between nodes of a cluster keeps it while no connection took the new one).
    pub fn from_checked_text(text: [u8; TOKEN_LEN]) -> ResumeToken {
        ResumeToken(text)
    }

    pub fn as_str(&self) -> &str {
        // Always base64url bytes, so always ASCII; the fallback is never taken.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// Whether a client's token text equals this one, in time independent of where they differ.
    /// A wrong length is answered at once: the length of a token is public.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(&self.0, candidate)
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(<redacted>)")
    }
}

/// Compares every byte and folds the differences, so the time does not reveal how long a prefix
/// matched. Different lengths return early (lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimizer from turning the fold into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

fn base64url_encode(bytes: &[u8; TOKEN_BYTES]) -> [u8; TOKEN_LEN] {
    let mut text = [0u8; TOKEN_LEN];
    // TOKEN_LEN is exactly the encoded length: the buffer is never too small.
    let _ = URL_SAFE_NO_PAD.encode_slice(bytes, &mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_through_parse() {
        for bits in [0, 1, 31, 32, 0x1234_5678 & ID_MASK, ID_MASK] {
            let id = Id(bits);
            let text = id.text();
            assert_eq!(text.as_str().len(), ID_LEN);
            assert_eq!(Id::parse(text.as_str()), Some(id));
        }
        assert_eq!(Id(0).text().as_str(), "000000");
        assert_eq!(Id(ID_MASK).text().as_str(), "ZZZZZZ");
        assert_eq!(Id(32 + 2).text().as_str(), "000012");
    }

    #[test]
    fn random_bytes_are_masked_to_30_bits() {
        assert_eq!(Id::from_random_bytes([0xFF; 4]).bits(), ID_MASK);
        assert_eq!(Id::from_random_bytes([0x01, 0, 0, 0xC0]).bits(), 1);
        assert_eq!(Id::from_bits(ID_MASK + 1), None);
    }

    #[test]
    fn generated_ids_use_every_character_evenly() {
        // 4000 ids from a xorshift stream: each of the 32 characters in each of the 6 positions
        // is expected 125 times; a biased mapping (e.g. modulo) would skew some far outside.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut counts = [[0u32; 32]; ID_LEN];
        for _ in 0..4000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let id = Id::from_random_bytes((state as u32).to_le_bytes());
            for (position, byte) in id.text().as_str().bytes().enumerate() {
                let value = ALPHABET.iter().position(|&c| c == byte).unwrap_or(99);
                counts[position][value] += 1;
            }
        }
        for position in counts {
            for count in position {
                assert!((70..=180).contains(&count), "count {count} is far from 125");
            }
        }
    }

    #[test]
    fn normalization_table() {
        let k7 = Id::parse("K7Q2ZD");
        assert!(k7.is_some());
        let cases: &[(&str, Option<Id>)] = &[
            ("K7Q2ZD", k7),
            ("k7q2zd", k7),
            ("  K7Q2ZD\t\n", k7),
            ("K7-Q2-ZD", k7),
            ("-K7Q2ZD-", k7),
            ("K7Q2ZD-  ", k7),
            ("  -K7Q2ZD", k7),
            ("OIL000", Id::parse("011000")),
            ("oil000", Id::parse("011000")),
            ("K7Q2Z", None),
            ("K7Q2ZDX", None),
            ("K7 Q2ZD", None),
            ("K7Q2ZD -", None),
            ("- K7Q2ZD", None),
            ("K7Q2ZU", None),
            ("K7Q2Z!", None),
            ("K7Q2Z\u{00C9}", None),
            ("K7Q2ZD\u{00A0}", None),
            ("\u{FF2B}7Q2ZD", None),
            ("", None),
            ("------", None),
            ("K7Q2ZD\u{000B}", None),
        ];
        for (text, expected) in cases {
            assert_eq!(Id::parse(text), *expected, "parsing {text:?}");
        }
        assert_eq!(
            Id::parse("OIL000")
                .map(|id| id.text().as_str().to_owned())
                .as_deref(),
            Some("011000")
        );
    }

    #[test]
    fn token_encoding_matches_rfc4648_base64url() {
        let zeros = ResumeToken::from_random_bytes(&[0; TOKEN_BYTES]);
        assert_eq!(zeros.as_str(), "A".repeat(TOKEN_LEN));
        let ones = ResumeToken::from_random_bytes(&[0xFF; TOKEN_BYTES]);
        // 256 one-bits: 42 full sextets of '_' and a last one holding 4 bits: 0b111100 = '8'.
        assert_eq!(ones.as_str(), format!("{}8", "_".repeat(42)));
        let mut counting = [0u8; TOKEN_BYTES];
        for (index, byte) in counting.iter_mut().enumerate() {
            *byte = (index as u8).wrapping_mul(37).wrapping_add(11);
        }
        let token = ResumeToken::from_random_bytes(&counting);
        assert_eq!(token.as_str(), reference_base64url(&counting));
    }

    /// A plain bit-by-bit encoder to check the crate's against.
    fn reference_base64url(bytes: &[u8]) -> String {
        const URL_SAFE: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bits: Vec<u8> = bytes
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
            .collect();
        bits.chunks(6)
            .map(|chunk| {
                let value = chunk
                    .iter()
                    .fold(0usize, |acc, bit| (acc << 1) | usize::from(*bit))
                    << (6 - chunk.len());
                URL_SAFE[value] as char
            })
            .collect()
    }

    #[test]
    fn token_debug_hides_the_token() {
        let token = ResumeToken::from_random_bytes(&[7; TOKEN_BYTES]);
        assert!(!format!("{token:?}").contains(token.as_str()));
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"xbc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
        let token = ResumeToken::from_random_bytes(&[9; TOKEN_BYTES]);
        assert!(token.matches(token.as_str().as_bytes()));
        let mut wrong = token.as_str().as_bytes().to_vec();
        wrong[TOKEN_LEN - 1] ^= 1;
        assert!(!token.matches(&wrong));
    }
}
