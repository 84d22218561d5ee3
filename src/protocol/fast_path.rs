//! The fast path: the fields of a client frame found without serde_json.
//!
//! Every frame a client sends but CONNECT with `resume` is a flat object of strings as
//! `JSON.stringify` writes it. The cost of routing a MESSAGE is mostly the scan of its payload
//! for the closing quote; serde_json scans a string 8 bytes per step, this path with a SIMD
//! search (`memchr2`) and a 16-byte-block check for control bytes.
//!
//! Invariant: this path answers only for texts serde_json accepts, with the same fields, and
//! gives up (`None`) on everything else, every invalid text included, which the serde path then
//! decodes or rejects. No client can tell the two paths apart; `decode_equivalence` checks that
//! against the reference decoder.

use super::RawJson;
use super::decode::KnownFields;

/// The fields of `{"key":"string",...}` with no white space, no escape in a key and no known key
/// twice: what `JSON.stringify` makes of every client frame but CONNECT with `resume`. `None`
/// for anything else, which the serde path then decodes or rejects.
pub(super) fn flat_fields(text: &str) -> Option<KnownFields<'_>> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mut fields = KnownFields::default();
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
            *slot = Some(RawJson::validated(text.get(value_start..value_end)?));
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
    Invite,
    Handle,
    Handles,
    Mailbox,
}

impl<'a> KnownFields<'a> {
    fn slot(&mut self, key: KnownKey) -> &mut Option<RawJson<'a>> {
        match key {
            KnownKey::Type => &mut self.frame_type,
            KnownKey::Ref => &mut self.reference,
            KnownKey::To => &mut self.to,
            KnownKey::PublicKey => &mut self.public_key,
            KnownKey::Payload => &mut self.payload,
            KnownKey::Resume => &mut self.resume,
            KnownKey::Version => &mut self.version,
            KnownKey::Invite => &mut self.invite,
            KnownKey::Handle => &mut self.handle,
            KnownKey::Handles => &mut self.handles,
            KnownKey::Mailbox => &mut self.mailbox,
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
        b'i' => &[(b"\"invite\":", KnownKey::Invite)],
        b'h' => &[
            (b"\"handle\":", KnownKey::Handle),
            (b"\"handles\":", KnownKey::Handles),
        ],
        b'm' => &[(b"\"mailbox\":", KnownKey::Mailbox)],
        _ => return None,
    };
    candidates
        .iter()
        .find(|(prefix, _)| rest.starts_with(prefix))
        .map(|&(prefix, key)| (prefix.len(), key))
}

/// For the JSON string whose opening quote is at `start`: the index just past its closing
/// quote, and whether it holds an escape. `None` unless it is a string serde_json accepts: no
/// byte below 0x20, and after each `\` one of `" \ / b f n r t` or `u` and four hex digits.
/// Like serde_json, an escaped lone surrogate (`\ud800`) passes: the text is forwarded as it
/// came, and refusing it here would only send it to serde_json, which accepts it.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_end_follows_json_string_rules() {
        let end = |text: &str| string_end(text.as_bytes(), 0);
        assert_eq!(end(r#""""#), Some((2, false)));
        assert_eq!(end(r#""abc"x"#), Some((5, false)));
        assert_eq!(end(r#""a\"b"x"#), Some((6, true)));
        assert_eq!(end(r#""\\""#), Some((4, true)));
        for escape in [
            "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u00aF",
        ] {
            assert!(end(&format!("\"x{escape}y\"")).is_some(), "{escape}");
        }
        // Lone surrogates pass, as serde_json accepts them.
        assert!(end(r#""\ud800""#).is_some());
        assert!(end(r#""\udc00\ud800""#).is_some());
        for bad in [
            "\"",
            "\"abc",
            "\"a\\\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "\"\\U0041\"",
            "\"\\",
            "abc\"",
            "\"a\u{1}b\"",
            "\"a\nb\"",
            "\"a\tb\"",
            "\"\u{1f}\"",
        ] {
            assert_eq!(end(bad), None, "{bad:?}");
        }
        // A control byte is found anywhere in a long run, including the overlapping last block.
        for length in [15, 16, 17, 31, 32, 33, 100] {
            for at in 0..length {
                let mut bytes = vec![b'a'; length];
                bytes[at] = 0x1F;
                assert!(has_control_byte(&bytes), "{length} {at}");
                bytes[at] = 0x20;
                assert!(!has_control_byte(&bytes), "{length} {at}");
            }
        }
    }
}
