//! [`RawJson`]: the text of one JSON value exactly as the client wrote it.

use std::fmt;

use serde_json::value::RawValue;

/// The raw text of one JSON value, validated, borrowed from the text it was found in.
///
/// Invariant: the text is exactly one JSON value as serde_json's parser accepts it (an escaped
/// lone surrogate such as `"\ud800"` passes, as JSON's grammar allows), with no white space
/// around it. Decoding keeps every field the server looks at as one, never as a `Value` tree,
/// so a field of the wrong JSON type is answered with our error code rather than a serde error,
/// and keys, payloads and `ref`s are forwarded byte for byte, never re-escaped.
///
/// Only this module's decoders make one from unchecked text: the fast path from a string it has
/// just scanned, the serde path from serde_json's `RawValue`, and [`RawJson::parse`] for
/// everyone else.
#[derive(Clone, Copy)]
pub struct RawJson<'a>(&'a str);

impl<'a> RawJson<'a> {
    /// The JSON value that `text` holds, white space around it left out; `None` unless `text`
    /// is exactly one JSON value. For tests, benches and fuzz targets that need one.
    pub fn parse(text: &'a str) -> Option<RawJson<'a>> {
        serde_json::from_str::<&RawValue>(text)
            .ok()
            .map(RawJson::from_serde)
    }

    /// The value's text, as it was received.
    #[inline]
    pub fn get(self) -> &'a str {
        self.0
    }

    /// Whether the value is a JSON string (its text starts with a quote).
    #[inline]
    pub fn is_string(self) -> bool {
        self.0.starts_with('"')
    }

    /// A value serde_json has parsed.
    #[inline]
    pub(super) fn from_serde(raw: &'a RawValue) -> RawJson<'a> {
        RawJson(raw.get())
    }

    /// A value another node's record carried: serde_json read it as one JSON value (the
    /// record's reader, `router::remote`).
    #[inline]
    pub fn from_record(text: &'a str) -> RawJson<'a> {
        RawJson(text)
    }

    /// `text`, which the caller has checked is one JSON value (the fast path: a string that
    /// `string_end` accepted, quotes included).
    #[inline]
    pub(super) fn validated(text: &'a str) -> RawJson<'a> {
        RawJson(text)
    }
}

/// Shows the text, as serde_json's `RawValue` does: [`super::Request`]'s `Debug` is what keeps
/// keys and payloads out of logs.
impl fmt::Debug for RawJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawJson").field(&self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_takes_exactly_one_value_and_borrows_it() {
        let json = r#""a\"b""#;
        let raw = RawJson::parse(json).map(RawJson::get);
        assert_eq!(raw.map(str::as_ptr), Some(json.as_ptr()));
        assert_eq!(raw, Some(json));
        assert_eq!(RawJson::parse(" 7 ").map(RawJson::get), Some("7"));
        for bad in ["", "7 8", "\"a", "{", "nul", "\"\u{1}\""] {
            assert!(RawJson::parse(bad).is_none(), "{bad:?}");
        }
        assert!(RawJson::parse(r#""\ud800""#).is_some_and(RawJson::is_string));
        assert!(!RawJson::parse("[\"x\"]").is_some_and(RawJson::is_string));
    }
}
