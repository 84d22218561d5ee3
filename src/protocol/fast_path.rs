//! The fast path for the frames clients send.

use super::RawJson;
use super::decode::Fields;

//
// serde_json scans a string 8 bytes per step (about 3 instructions per byte), which made the
// payload scan most of the cost of routing a MESSAGE (BENCHMARKS.md). Every client frame but
// CONNECT with `resume` is a flat object of strings, which is decoded here with a SIMD search
// instead. Anything else, including every invalid text, is left to serde_json: this path only
// ever answers for texts serde_json accepts, with the same fields, so no client can tell the two
// apart (src/protocol/decode_equivalence.rs checks that against the old decoder).

/// The fields of `{"key":"string",...}` with no white space, no escape in a key and no known key
/// twice: what `JSON.stringify` makes of every client frame but CONNECT with `resume`. `None`
/// for anything else, which [`parsed_fields`] then decodes or rejects.
pub(super) fn flat_fields(text: &str) -> Option<Fields<'_>> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mut fields = Fields::default();
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
}

impl<'a> Fields<'a> {
    fn slot(&mut self, key: KnownKey) -> &mut Option<RawJson<'a>> {
        match key {
            KnownKey::Type => &mut self.kind,
            KnownKey::Ref => &mut self.reference,
            KnownKey::To => &mut self.to,
            KnownKey::PublicKey => &mut self.public_key,
            KnownKey::Payload => &mut self.payload,
            KnownKey::Resume => &mut self.resume,
            KnownKey::Version => &mut self.version,
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
        _ => return None,
    };
    candidates
        .iter()
        .find(|(prefix, _)| rest.starts_with(prefix))
        .map(|&(prefix, key)| (prefix.len(), key))
}

/// For the JSON string whose opening quote is at `start`: the index just past its closing
/// quote, and whether it holds an escape. `None` unless it is a string serde_json's `RawValue`
/// accepts: no byte below 0x20, and after each `\` one of `" \ / b f n r t` or `u` and four
/// hex digits. Like serde_json, an escaped lone surrogate (`\ud800`) passes: the text is
/// forwarded as it came, and refusing it here would only send it to serde_json, which accepts it.
pub(super) fn string_end(bytes: &[u8], start: usize) -> Option<(usize, bool)> {
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
pub(super) fn has_control_byte(bytes: &[u8]) -> bool {
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
