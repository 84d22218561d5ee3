//! Reading the raw text of a JSON string (a [`RawJson`] that starts with a quote) without
//! decoding it into a `String`: the text between its quotes, whether its decoded text starts
//! with a prefix, its decoded ASCII characters one by one. IDs, type names, tokens and armor
//! headers are all ASCII, so nothing here needs more than ASCII.

use super::RawJson;
use super::decode::MAX_TYPE_NAME_LEN;

/// The text between the quotes of a short JSON string without escapes: then the raw bytes are
/// the decoded text, and [`ascii_units`] is not needed. `None` with a `\`, or when longer than
/// any type name (an ID that long is padded, and the slow path is fine for it).
pub(super) fn unescaped_text(raw: RawJson<'_>) -> Option<&[u8]> {
    let inner = string_inner(raw).as_bytes();
    (inner.len() <= MAX_TYPE_NAME_LEN && !inner.contains(&b'\\')).then_some(inner)
}

/// The text between the quotes of a JSON string's raw text, escapes as written; empty for a
/// value that is not a string (callers check [`RawJson::is_string`] first).
pub(super) fn string_inner(raw: RawJson<'_>) -> &str {
    let text = raw.get();
    text.get(1..text.len().saturating_sub(1)).unwrap_or("")
}

/// Whether the decoded JSON string starts with the ASCII `prefix`, decoding only that far.
pub(super) fn decoded_starts_with(raw: RawJson<'_>, prefix: &str) -> bool {
    let mut units = ascii_units(raw);
    prefix
        .bytes()
        .all(|expected| units.next() == Some(Some(expected)))
}

/// Iterates the characters of a JSON string (its validated raw text, quotes included) as
/// `Some(byte)` for ASCII and `None` for anything else. A non-ASCII character yields at least one
/// `None`, which is all that callers matching ASCII text need.
pub fn ascii_units(raw: RawJson<'_>) -> AsciiUnits<'_> {
    AsciiUnits {
        bytes: string_inner(raw).as_bytes(),
        position: 0,
    }
}

/// The iterator of [`ascii_units`]: escapes decoded, each non-ASCII character as `None`.
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
