//! ID normalization: `Id::parse` on arbitrary text, against a model written from PROTOCOL.md §3,
//! and the same text sent as a MESSAGE's `to` with every character JSON-escaped.
//!
//! Checked: a parsed ID's text is always 6 alphabet characters and parses back to the same ID
//! (idempotent on its own output, also lower-cased and dashed); the result equals the model's
//! (trim ASCII white space, drop `-`, upper-case ASCII, `O`→`0`, `I`/`L`→`1`, then exactly 6
//! alphabet characters; any non-ASCII character is `bad_id`); and the decoder, which reads IDs
//! straight from JSON escapes, finds the same ID.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secchat::id::{ALPHABET, ID_LEN, Id};
use secchat::protocol::{self, MessageTarget, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Id::parse(text);
    assert_eq!(
        parsed,
        model(text),
        "Id::parse({text:?}) differs from the spec"
    );
    if let Some(id) = parsed {
        check_text(id);
    }
    for frame in [plain_frame(text), escaped_frame(text)] {
        match protocol::decode(&frame) {
            Ok(decoded) => match decoded.request {
                Request::Message {
                    target: MessageTarget::Id(to),
                    ..
                } => assert_eq!(to, parsed, "decoded from {frame:?}"),
                other => panic!("{frame:?} decoded as {other:?}"),
            },
            Err(rejected) => panic!("{frame:?} rejected with {:?}", rejected.code),
        }
    }
});

fn check_text(id: Id) {
    let text = id.text();
    let text = text.as_str();
    assert_eq!(text.len(), ID_LEN);
    assert!(text.bytes().all(|b| ALPHABET.contains(&b)), "{text:?}");
    assert_eq!(Id::parse(text), Some(id), "not idempotent on {text:?}");
    assert_eq!(Id::parse(&text.to_ascii_lowercase()), Some(id));
    let dashed = format!(
        "{}-{}",
        text.get(..3).unwrap_or(""),
        text.get(3..).unwrap_or("")
    );
    assert_eq!(Id::parse(&dashed), Some(id));
    assert_eq!(Id::from_bits(id.bits()), Some(id));
}

/// PROTOCOL.md §3, step by step, on owned strings.
fn model(text: &str) -> Option<Id> {
    if !text.is_ascii() {
        return None;
    }
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let normalized: String = trimmed
        .chars()
        .filter(|&c| c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    if normalized.len() != ID_LEN {
        return None;
    }
    let mut bits = 0u32;
    for byte in normalized.bytes() {
        let value = ALPHABET.iter().position(|&a| a == byte)?;
        bits = (bits << 5) | value as u32;
    }
    Id::from_bits(bits)
}

fn frame_with_to(to_json: &str) -> String {
    format!(r#"{{"type":"MESSAGE","to":{to_json},"payload":"-----BEGIN PGP MESSAGE-----"}}"#)
}

/// The text as serde_json escapes it (only quotes, backslashes and control characters).
fn plain_frame(text: &str) -> String {
    let to = serde_json::to_string(text).unwrap_or_else(|e| panic!("{e}"));
    frame_with_to(&to)
}

/// Every UTF-16 unit as `\uXXXX`, so the decoder's escape handling is what reads the ID.
fn escaped_frame(text: &str) -> String {
    let mut to = String::from("\"");
    for unit in text.encode_utf16() {
        to.push_str(&format!("\\u{unit:04x}"));
    }
    to.push('"');
    frame_with_to(&to)
}
