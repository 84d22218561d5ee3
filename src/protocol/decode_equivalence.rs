//! The reference decoder (serde_json for every frame, and the checks after parsing in their
//! plainest form), and the differential tests that hold [`decode`] to it: for every input both
//! must give the same result, down to which bytes of the text a forwarded field borrows. The
//! fast path and the shortcuts for unescaped text exist for speed alone, so any difference is a
//! bug.

use std::fs;
use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::decode::{
    FrameType, KnownFields, MAX_TYPE_NAME_LEN, decode_resume, decode_version, invite_proof,
    is_json_whitespace, is_valid_ref, mailbox_choice, message_target,
};
use super::fast_path::flat_fields;
use super::json_string::{ascii_units, decoded_starts_with};
use super::{
    ErrorCode, Frame, Handle, HandleArg, HandleList, InviteProof, MESSAGE_ARMOR, PUBLIC_KEY_ARMOR,
    RawJson, Rejected, Request, decode,
};
use crate::id::Id;

// ---------------------------------------------------------------------------------------------
// The reference decoder: serde_json parses every frame, and `type` and `to` are read through
// `ascii_units` alone, without the shortcut for unescaped text. `KnownFields`, `is_valid_ref`,
// `decode_resume`, `decode_version`, `invite_proof`, `decoded_starts_with` and `ascii_units` are
// shared with `decode`: they have no fast variant to hold to anything.
// ---------------------------------------------------------------------------------------------

fn reference_decode(text: &str) -> Result<Frame<'_>, Rejected<'_>> {
    let rejected = |code, reference| Rejected { code, reference };
    if text
        .trim_start_matches(is_json_whitespace)
        .as_bytes()
        .first()
        != Some(&b'{')
    {
        return Err(rejected(ErrorCode::BadJson, None));
    }
    let fields: KnownFields<'_> = match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(error) if error.is_data() => return Err(rejected(ErrorCode::BadRequest, None)),
        Err(_) => return Err(rejected(ErrorCode::BadJson, None)),
    };
    let reference = match fields.reference {
        None => None,
        Some(raw) if is_valid_ref(raw) => Some(raw),
        Some(_) => return Err(rejected(ErrorCode::BadRequest, None)),
    };
    let bad_request = || rejected(ErrorCode::BadRequest, reference);
    let frame_type = fields
        .frame_type
        .and_then(reference_frame_type_of)
        .ok_or_else(bad_request)?;
    let request = match frame_type {
        FrameType::Connect => Request::Connect {
            resume: match fields.resume {
                None => None,
                Some(raw) => Some(decode_resume(raw).ok_or_else(bad_request)?),
            },
            version: decode_version(fields.version).ok_or_else(bad_request)?,
        },
        FrameType::FriendRequest => Request::FriendRequest {
            to: reference_target(fields.to).ok_or_else(bad_request)?,
            public_key: reference_armored(fields.public_key, PUBLIC_KEY_ARMOR),
            invite: invite_proof(fields.invite),
        },
        FrameType::FriendAccept => Request::FriendAccept {
            to: reference_target(fields.to).ok_or_else(bad_request)?,
            public_key: reference_armored(fields.public_key, PUBLIC_KEY_ARMOR),
        },
        FrameType::FriendDecline => Request::FriendDecline {
            to: reference_target(fields.to).ok_or_else(bad_request)?,
        },
        FrameType::FriendRemove => Request::FriendRemove {
            to: reference_target(fields.to).ok_or_else(bad_request)?,
        },
        FrameType::Message => Request::Message {
            target: message_target(
                [fields.to, fields.handle, fields.handles],
                reference_target,
                HandleArg::Other,
            )
            .ok_or_else(bad_request)?,
            payload: reference_armored(fields.payload, MESSAGE_ARMOR),
            mailbox: mailbox_choice(fields.mailbox),
        },
        FrameType::Ping => Request::Ping,
        FrameType::Disconnect => Request::Disconnect,
        FrameType::Listen => Request::Listen {
            handles: fields.handles.and_then(HandleList::new),
        },
        FrameType::Unlisten => Request::Unlisten {
            handles: fields.handles.and_then(HandleList::new),
        },
        FrameType::Fetch => Request::Fetch,
        FrameType::Unknown => Request::Unknown,
    };
    Ok(Frame { reference, request })
}

fn reference_frame_type_of(raw: RawJson<'_>) -> Option<FrameType> {
    if !raw.is_string() {
        return None;
    }
    let mut name = [0u8; MAX_TYPE_NAME_LEN];
    let mut len = 0;
    for unit in ascii_units(raw) {
        match (unit, name.get_mut(len)) {
            (Some(byte), Some(slot)) => *slot = byte,
            _ => return Some(FrameType::Unknown),
        }
        len += 1;
    }
    Some(match name.get(..len).unwrap_or(&[]) {
        b"CONNECT" => FrameType::Connect,
        b"FRIEND_REQUEST" => FrameType::FriendRequest,
        b"FRIEND_ACCEPT" => FrameType::FriendAccept,
        b"FRIEND_DECLINE" => FrameType::FriendDecline,
        b"FRIEND_REMOVE" => FrameType::FriendRemove,
        b"MESSAGE" => FrameType::Message,
        b"PING" => FrameType::Ping,
        b"DISCONNECT" => FrameType::Disconnect,
        b"LISTEN" => FrameType::Listen,
        b"UNLISTEN" => FrameType::Unlisten,
        b"FETCH" => FrameType::Fetch,
        _ => FrameType::Unknown,
    })
}

fn reference_handle(raw: RawJson<'_>) -> Option<Handle> {
    raw.is_string()
        .then(|| Handle::parse_units(ascii_units(raw)))
        .flatten()
}

fn reference_target(raw: Option<RawJson<'_>>) -> Option<Option<Id>> {
    let raw = raw.filter(|raw| raw.is_string())?;
    Some(Id::parse_units(ascii_units(raw)))
}

fn reference_armored<'a>(raw: Option<RawJson<'a>>, armor: &str) -> Option<RawJson<'a>> {
    let raw = raw?;
    let text = raw.get();
    let literal = text
        .strip_prefix('"')
        .is_some_and(|rest| rest.starts_with(armor));
    if literal || (raw.is_string() && decoded_starts_with(raw, armor)) {
        Some(raw)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing results
// ---------------------------------------------------------------------------------------------

/// Everything a decode result tells the router, with each raw field as the byte range of `text`
/// it borrows: equal outcomes mean equal frames, equal errors and byte-identical forwarding. A
/// MESSAGE's handle is what the router's check makes of it ([`HandleArg::checked`]); the
/// reference decoder's (always [`HandleArg::Other`]) is read by [`reference_handle`] instead.
fn outcome(text: &str, result: &Result<Frame<'_>, Rejected<'_>>, reference: bool) -> String {
    let span = |raw: Option<RawJson<'_>>| raw.map(|raw| borrowed_span(text, raw));
    match result {
        Err(rejected) => format!(
            "rejected {:?} ref {:?}",
            rejected.code,
            span(rejected.reference)
        ),
        Ok(frame) => {
            let request = match &frame.request {
                Request::Connect { resume, version } => format!(
                    "Connect {:?} v{version}",
                    resume.as_ref().map(|r| (r.id, r.token.map(|t| t.to_vec())))
                ),
                Request::FriendRequest {
                    to,
                    public_key,
                    invite,
                } => {
                    let invite = match invite {
                        InviteProof::Valid(raw) => format!("{:?}", span(Some(*raw))),
                        other => format!("{other:?}"),
                    };
                    format!("FriendRequest {to:?} {:?} {invite}", span(*public_key))
                }
                Request::FriendAccept { to, public_key } => {
                    format!("FriendAccept {to:?} {:?}", span(*public_key))
                }
                Request::FriendDecline { to } => format!("FriendDecline {to:?}"),
                Request::FriendRemove { to } => format!("FriendRemove {to:?}"),
                Request::Message {
                    target,
                    payload,
                    mailbox,
                } => {
                    // Handles are redacted in Debug; compare their text.
                    let target = match target {
                        super::MessageTarget::Handle(handle) => {
                            let checked = match handle {
                                HandleArg::Other(raw) if reference => reference_handle(*raw),
                                _ => handle.checked(),
                            };
                            format!("Handle {:?}", checked.map(|h| h.as_str().to_owned()))
                        }
                        super::MessageTarget::Handles(list) => {
                            let handles = list
                                .iter()
                                .map(|handle| handle.map(|h| h.as_str().to_owned()))
                                .collect::<Vec<_>>();
                            format!("Handles {handles:?}")
                        }
                        other => format!("{other:?}"),
                    };
                    format!("Message {target} {:?} {mailbox:?}", span(*payload))
                }
                Request::Listen { handles } | Request::Unlisten { handles } => {
                    let kind = if matches!(frame.request, Request::Listen { .. }) {
                        "Listen"
                    } else {
                        "Unlisten"
                    };
                    let handles = handles.map(|list| {
                        list.iter()
                            .map(|handle| handle.map(|h| h.as_str().to_owned()))
                            .collect::<Vec<_>>()
                    });
                    format!("{kind} {handles:?}")
                }
                other => format!("{other:?}"),
            };
            format!("accepted ref {:?} {request}", span(frame.reference))
        }
    }
}

/// Where in `text` the raw value lies; `usize::MAX` if it does not borrow from `text` at all.
fn borrowed_span(text: &str, raw: RawJson<'_>) -> (usize, usize) {
    let whole = text.as_bytes().as_ptr_range();
    let part = raw.get().as_bytes().as_ptr_range();
    if whole.start <= part.start && part.end <= whole.end {
        let start = part.start as usize - whole.start as usize;
        (start, start + raw.get().len())
    } else {
        (usize::MAX, usize::MAX)
    }
}

fn assert_same(text: &str) {
    let decoded = outcome(text, &decode(text), false);
    let reference = outcome(text, &reference_decode(text), true);
    assert_eq!(
        decoded, reference,
        "decode differs from the reference decoder for {text:?}"
    );
}

fn check_same(text: &str) -> Result<(), TestCaseError> {
    let decoded = outcome(text, &decode(text), false);
    let reference = outcome(text, &reference_decode(text), true);
    prop_assert_eq!(decoded, reference, "for {:?}", text);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The fast path is taken (else the tests below would only compare serde_json with itself)
// ---------------------------------------------------------------------------------------------

const PAYLOAD: &str =
    r#""-----BEGIN PGP MESSAGE-----\n\nwV4DAAAAAAAAAAASAQdA\n=abcd\n-----END PGP MESSAGE-----\n""#;
const KEY: &str =
    r#""-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxjMEZk9y\n-----END PGP PUBLIC KEY BLOCK-----\n""#;

fn client_frames() -> Vec<String> {
    vec![
        format!(r#"{{"type":"MESSAGE","to":"K7Q2ZD","payload":{PAYLOAD}}}"#),
        format!(r#"{{"type":"MESSAGE","to":"K7Q2ZD","payload":{PAYLOAD},"ref":"m12.0"}}"#),
        format!(r#"{{"type":"FRIEND_REQUEST","to":"X2M9QP","public_key":{KEY},"ref":"r1"}}"#),
        format!(r#"{{"type":"FRIEND_ACCEPT","to":"X2M9QP","public_key":{KEY},"ref":"r2"}}"#),
        r#"{"type":"FRIEND_DECLINE","to":"X2M9QP","ref":"r3"}"#.to_owned(),
        r#"{"type":"PING","ref":"p"}"#.to_owned(),
        r#"{"type":"CONNECT"}"#.to_owned(),
        r#"{"type":"DISCONNECT"}"#.to_owned(),
        format!(r#"{{"type":"MESSAGE","handle":"{HANDLE}","payload":{PAYLOAD},"ref":"h1"}}"#),
        r#"{"type":"FETCH","ref":"f1"}"#.to_owned(),
    ]
}

const HANDLE: &str = "q0Zb-_9xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[test]
fn client_frames_take_the_fast_path_and_borrow_from_the_text() {
    for text in client_frames() {
        let fields = flat_fields(&text);
        assert!(fields.is_some(), "fast path refused {text}");
        let parsed: Result<KnownFields<'_>, _> = serde_json::from_str(&text);
        let (Some(fast), Ok(parsed)) = (fields, parsed) else {
            panic!("{text}")
        };
        let span = |raw: Option<RawJson<'_>>| raw.map(|raw| borrowed_span(&text, raw));
        for (fast, parsed) in [
            (fast.frame_type, parsed.frame_type),
            (fast.reference, parsed.reference),
            (fast.to, parsed.to),
            (fast.public_key, parsed.public_key),
            (fast.payload, parsed.payload),
            (fast.resume, parsed.resume),
            (fast.version, parsed.version),
            (fast.invite, parsed.invite),
            (fast.handle, parsed.handle),
            (fast.handles, parsed.handles),
            (fast.mailbox, parsed.mailbox),
        ] {
            assert_eq!(span(fast), span(parsed), "{text}");
        }
        assert_same(&text);
    }
}

// ---------------------------------------------------------------------------------------------
// Differential tests
// ---------------------------------------------------------------------------------------------

/// Every file of the committed fuzz corpus and regressions, and of the fuzzer's scratch corpus
/// (`fuzz/work/`, not committed) when it is there; each also cut at every length.
#[test]
fn fuzz_inputs_decode_as_the_reference_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut committed = 0;
    for (directory, is_committed) in [
        ("corpus/protocol_decode", true),
        ("regressions/protocol_decode", true),
        ("work/protocol_decode", false),
    ] {
        let Ok(entries) = fs::read_dir(root.join(directory)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(bytes) = fs::read(entry.path()) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            assert_same(&text);
            if is_committed {
                committed += 1;
                for (cut, _) in text.char_indices() {
                    assert_same(&text[..cut]);
                }
            }
        }
    }
    assert!(committed >= 20, "the protocol_decode seeds are missing");
}

/// Characters that change how JSON is read, for the single-edit sweep and the mutations.
const INTERESTING: &[&str] = &[
    "\"", "\\", "{", "}", ",", ":", " ", "\n", "\u{1}", "\u{1f}", "\u{7f}", "é", "😀", "u", "0",
    "D", "8", "-", "n", "/", "[", "]", "x", "\\u", "\\\"", "\\\\",
];

/// Every deletion, replacement and insertion of one interesting character in client frames.
#[test]
fn every_single_edit_of_client_frames_decodes_as_the_reference_does() {
    let mut frames = client_frames();
    frames.push(r#"{"type":"MESSAGE","to":"\u004b7Q2ZD","payload":"\u002d----BEGIN PGP MESSAGE-----\n","ref":"\u00e9"}"#.to_owned());
    frames.push(r#"{"type":"CONNECT","resume":{"id":"K7Q2ZD","token":"x"},"ref":"c"}"#.to_owned());
    frames.push(format!(
        r#"{{"type":"LISTEN","handles":["{HANDLE}", "\u0041{}"],"ref":"l"}}"#,
        &HANDLE[1..]
    ));
    frames.push(format!(
        r#"{{"type":"MESSAGE","to":"K7Q2ZD","handle":"{HANDLE}","payload":"x"}}"#
    ));
    for frame in frames {
        let boundaries: Vec<usize> = frame
            .char_indices()
            .map(|(at, _)| at)
            .chain([frame.len()])
            .collect();
        for pair in boundaries.windows(2) {
            let &[at, next] = pair else { continue };
            assert_same(&format!("{}{}", &frame[..at], &frame[next..]));
            for insert in INTERESTING {
                assert_same(&format!("{}{insert}{}", &frame[..at], &frame[next..]));
                assert_same(&format!("{}{insert}{}", &frame[..at], &frame[at..]));
            }
        }
        for &cut in &boundaries {
            assert_same(&frame[..cut]);
        }
    }
}

/// Pieces of string contents: plain text, the armor headers (literal and escaped), IDs, type
/// names, every valid escape (lone surrogates included), and now and then something JSON
/// forbids: a bad escape, a raw control character or quote.
fn string_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec![
            "-----BEGIN PGP MESSAGE-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP MESSAGE----",
            "\\u002d----BEGIN PGP MESSAGE-----",
            "-----BEGIN PGP MESSAGE\\u002d----",
            "-----BEGIN PGP MESS\\u0041GE-----",
            "MESSAGE", "PING", "CONNECT", "FRIEND_REQUEST", "FRIEND_ACCEPT", "DISCONNECT",
            "LISTEN", "UNLISTEN", "FETCH", HANDLE, "\\u0071", "q0Zb-_9xAAAAAAAAAAAAAAAAAAAA",
            "M\\u0045SSAGE",
            "K7Q2ZD", "k7-q2-zd", " X2M9QP ", "K7Q2Z", "K7Q2ZDX", "\\u004b7Q2ZD", "K7Q2Z\\/",
            "\\n", "\\r\\n", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\t", "\\u00e9", "\\u0000",
            "\\u001F", "\\ud83d\\ude00", "\\ud800", "\\udc00", "\\uDBFF", "\\uD800\\u0041",
            "\u{7f}", "é", "😀", "\u{a0}",
        ]).prop_map(str::to_owned),
        1 => select(vec![
            "\\x", "\\u12", "\\u12G4", "\\U0041", "\\", "\\ ", "\u{1}", "\u{1f}", "\n", "\t",
            "\"",
        ]).prop_map(str::to_owned),
        4 => "[A-Za-z0-9+/=]{0,80}",
        1 => "[A-Za-z0-9_-]{0,70}",
        1 => "[A-Za-z0-9+/=]{100,700}",
        1 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

fn json_string() -> impl Strategy<Value = String> {
    vec(string_piece(), 0..6).prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => json_string(),
        1 => select(vec![
            "7", "-0.5e3", "1e999", "null", "true", "false", "tru", "01", "{}", "[]",
            r#"["-----BEGIN PGP MESSAGE-----"]"#,
            r#"["q0Zb-_9xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]"#,
            r#"[ "q0Zb-_9xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" , "x\"" ]"#,
            r#"["q0Zb-_9xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",7]"#,
            r#"{"id":"K7Q2ZD","token":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
            r#"{"id":"K7Q2ZD","token":"x","id":"K7Q2ZD"}"#,
            r#"{"a":[1,{"b":null}]}"#,
            "",
        ]).prop_map(str::to_owned),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => select(vec![
            "type", "ref", "to", "payload", "public_key", "resume", "invite", "handle", "handles",
            "mailbox",
        ])
            .prop_map(|k| format!("\"{k}\"")),
        1 => select(vec![
            "\"t\\u0079pe\"", "\"pay\\u006coad\"", "\"x\"", "\"\"", "\"typ\"", "\"types\"",
            "\"é\"", "\"a\u{1}\"", "\"\\x\"", "type", "7",
        ]).prop_map(str::to_owned),
        1 => json_string(),
    ]
}

/// White space where JSON allows it, and now and then something it does not.
fn gap() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        40 => Just(""),
        1 => select(vec![" ", "\n", "\t", "\r\n  ", "\u{a0}", "\u{1}"]),
    ]
}

fn member() -> impl Strategy<Value = String> {
    (gap(), key(), gap(), gap(), value(), gap())
        .prop_map(|(a, key, b, c, value, d)| format!("{a}{key}{b}:{c}{value}{d}"))
}

/// The members of a MESSAGE, each with a value that is often valid and sometimes not.
fn message_member() -> impl Strategy<Value = String> {
    let armor = select(vec![
        "-----BEGIN PGP MESSAGE-----",
        "\\u002d----BEGIN PGP MESSAGE-----",
        "-----BEGIN PGP MESSAGE----",
        "",
    ]);
    prop_oneof![
        (armor, json_string())
            .prop_map(|(armor, rest)| format!("\"payload\":\"{armor}{}", &rest[1..])),
        json_string().prop_map(|to| format!("\"to\":{to}")),
        select(vec!["K7Q2ZD", "k7q2-zd", "\\u004B7Q2ZD", "K7Q2Z\u{e9}"])
            .prop_map(|to| format!("\"to\":\"{to}\"")),
        select(vec![
            HANDLE,
            "\\u0071\\u0030Zb-_9xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "q0Zb",
            "q0Zb+_9xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        ])
        .prop_map(|handle| format!("\"handle\":\"{handle}\"")),
        json_string().prop_map(|handle| format!("\"handle\":{handle}")),
        json_string().prop_map(|reference| format!("\"ref\":{reference}")),
    ]
}

/// A MESSAGE as clients send it, its members in any order, some missing, their values often
/// valid and sometimes not; then and again with an unknown member.
fn message_object() -> impl Strategy<Value = String> {
    let armor = select(vec![
        "-----BEGIN PGP MESSAGE-----",
        "-----BEGIN PGP MESSAGE-----",
        "\\u002d----BEGIN PGP MESSAGE-----",
        "-----BEGIN PGP MESSAGE----",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    ]);
    let kind = select(vec![
        "MESSAGE",
        "MESSAGE",
        "MESSAGE",
        "FRIEND_REQUEST",
        "PING",
    ]);
    let to = prop_oneof![
        3 => select(vec!["K7Q2ZD", "k7q2-zd", "\\u004B7Q2ZD", "K7Q2Z\u{e9}", "K7Q2ZU", ""])
            .prop_map(|to| format!("\"{to}\"")),
        1 => json_string(),
    ];
    let members = (
        kind,
        to,
        (armor, json_string()).prop_map(|(armor, rest)| format!("\"{armor}{}", &rest[1..])),
        json_string(),
        member(),
    );
    (members, vec(any::<bool>(), 5), any::<u64>()).prop_map(
        |((kind, to, payload, reference, extra), present, order)| {
            let mut members = vec![
                format!("\"type\":\"{kind}\""),
                format!("\"to\":{to}"),
                format!("\"payload\":{payload}"),
                format!("\"ref\":{reference}"),
                extra,
            ];
            let mut kept: Vec<String> = members
                .drain(..)
                .zip(present.iter().zip([true, true, true, false, false]))
                .filter(|(_, (coin, usual))| **coin || *usual)
                .map(|(member, _)| member)
                .collect();
            let len = kept.len();
            kept.rotate_left(usize::try_from(order).unwrap_or(0) % len.max(1));
            if order & 1 == 1 && len > 1 {
                kept.swap(0, len - 1);
            }
            format!("{{{}}}", kept.join(","))
        },
    )
}

/// A client-like object: mostly well formed, with a MESSAGE `type` first half the time.
fn object() -> impl Strategy<Value = String> {
    (
        gap(),
        any::<bool>(),
        vec(prop_oneof![2 => message_member(), 1 => member()], 0..6),
        select(vec![",", ",", ",", ",", ",", ",", ",", ",", ";", ""]),
        select(vec![
            "}", "}", "}", "}", "}", "}", "}", "}", "", "},", "}}", "}x", "} ", "]",
        ]),
        gap(),
    )
        .prop_map(|(lead, message_first, members, separator, close, tail)| {
            let mut members = members;
            if message_first {
                members.insert(0, r#""type":"MESSAGE""#.to_owned());
            }
            format!("{lead}{{{}{close}{tail}", members.join(separator))
        })
}

/// Random edits of a realistic frame.
fn mutated_frame() -> impl Strategy<Value = String> {
    (
        select(client_frames()),
        vec(
            (
                any::<prop::sample::Index>(),
                0..3u8,
                select(INTERESTING.to_vec()),
            ),
            1..4,
        ),
    )
        .prop_map(|(frame, edits)| {
            let mut text = frame;
            for (index, action, piece) in edits {
                let boundaries: Vec<usize> = text
                    .char_indices()
                    .map(|(at, _)| at)
                    .chain([text.len()])
                    .collect();
                let at = boundaries[index.index(boundaries.len())];
                let next = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                text = match action {
                    0 => format!("{}{}", &text[..at], &text[next..]),
                    1 => format!("{}{piece}{}", &text[..at], &text[next..]),
                    _ => format!("{}{piece}{}", &text[..at], &text[at..]),
                };
            }
            text
        })
}

proptest! {
    // No regression files: a failure prints its minimal input, which is the thing to keep.
    #![proptest_config(ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_objects_decode_as_the_reference_does(text in object(), cut in any::<prop::sample::Index>()) {
        check_same(&text)?;
        let boundaries: Vec<usize> = text.char_indices().map(|(at, _)| at).collect();
        if !boundaries.is_empty() {
            check_same(&text[..boundaries[cut.index(boundaries.len())]])?;
        }
    }

    #[test]
    fn generated_messages_decode_as_the_reference_does(text in message_object()) {
        check_same(&text)?;
    }

    #[test]
    fn mutated_client_frames_decode_as_the_reference_does(text in mutated_frame()) {
        check_same(&text)?;
    }
}
