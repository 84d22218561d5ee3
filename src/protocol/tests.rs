//! The checks of [`decode`], frame by frame.

use super::{ErrorCode, Request, decode};
use crate::id::{Id, TOKEN_LEN};

const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\\nabc";
const PAYLOAD: &str = "-----BEGIN PGP MESSAGE-----\\nabc";

fn code_of(text: &str) -> Option<ErrorCode> {
    decode(text).err().map(|rejected| rejected.code)
}

fn ref_of_rejection(text: &str) -> Option<String> {
    decode(text)
        .err()
        .and_then(|r| r.reference)
        .map(|r| r.get().to_owned())
}

#[test]
fn bad_json_for_invalid_json_and_non_objects() {
    for text in [
        "",
        "   ",
        "nope",
        "{",
        "{\"type\":}",
        "[]",
        "[\"CONNECT\"]",
        "\"CONNECT\"",
        "42",
        "null",
        "{\"type\":\"PING\"} x",
        "{\"type\":\"PING\"}{}",
        "{\"type\":\"PING\",}",
    ] {
        assert_eq!(code_of(text), Some(ErrorCode::BadJson), "{text:?}");
    }
}

#[test]
fn whitespace_around_the_object_is_fine() {
    assert!(matches!(
        decode(" \n\t{\"type\":\"PING\"} \n").map(|f| f.request),
        Ok(Request::Ping)
    ));
}

#[test]
fn bad_request_for_type_problems() {
    for text in [
        "{}",
        "{\"type\":null}",
        "{\"type\":7}",
        "{\"type\":[\"PING\"]}",
        "{\"type\":\"PING\",\"type\":\"PING\"}",
        "{\"to\":\"K7Q2ZD\"}",
    ] {
        assert_eq!(code_of(text), Some(ErrorCode::BadRequest), "{text:?}");
    }
}

#[test]
fn duplicate_known_keys_are_bad_request_and_unknown_ones_ignored() {
    assert_eq!(
        code_of(r#"{"type":"MESSAGE","to":"K7Q2ZD","to":"X2M9QP","payload":"x"}"#),
        Some(ErrorCode::BadRequest)
    );
    assert_eq!(
        code_of(r#"{"type":"PING","ref":"a","ref":"a"}"#),
        Some(ErrorCode::BadRequest)
    );
    assert!(decode(r#"{"type":"PING","x":1,"x":2}"#).is_ok());
}

#[test]
fn ref_must_be_a_short_string_and_its_error_has_no_ref() {
    let sixty_four = "é".repeat(64);
    let sixty_five = "é".repeat(65);
    let ok = format!(r#"{{"type":"PING","ref":"{sixty_four}"}}"#);
    assert!(decode(&ok).is_ok());
    let emoji_escapes = "\\ud83d\\ude00".repeat(64);
    assert!(decode(&format!(r#"{{"type":"PING","ref":"{emoji_escapes}"}}"#)).is_ok());
    for text in [
        format!(r#"{{"type":"PING","ref":"{sixty_five}"}}"#),
        format!(r#"{{"type":"PING","ref":"{}"}}"#, "a".repeat(65)),
        format!(r#"{{"type":"PING","ref":"{}"}}"#, "\\u0041".repeat(65)),
        r#"{"type":"PING","ref":17}"#.to_owned(),
        r#"{"type":"PING","ref":null}"#.to_owned(),
        r#"{"type":"PING","ref":{"a":1}}"#.to_owned(),
        r#"{"type":"PING","ref":"\ud800"}"#.to_owned(),
    ] {
        assert_eq!(code_of(&text), Some(ErrorCode::BadRequest), "{text}");
        assert_eq!(ref_of_rejection(&text), None, "{text}");
    }
}

#[test]
fn valid_ref_is_kept_raw_and_echoed_on_bad_request() {
    let frame = decode(r#"{"type":"PING","ref":"a\"b\u00e9"}"#);
    let reference = frame
        .ok()
        .and_then(|f| f.reference)
        .map(|r| r.get().to_owned());
    assert_eq!(reference.as_deref(), Some(r#""a\"b\u00e9""#));
    assert_eq!(ref_of_rejection(r#"{"ref":"7"}"#).as_deref(), Some("\"7\""));
    assert_eq!(
        ref_of_rejection(r#"{"type":"MESSAGE","ref":"7"}"#).as_deref(),
        Some("\"7\"")
    );
}

#[test]
fn to_must_be_a_string_for_friend_and_message_types() {
    for kind in [
        "FRIEND_REQUEST",
        "FRIEND_ACCEPT",
        "FRIEND_DECLINE",
        "FRIEND_REMOVE",
        "MESSAGE",
    ] {
        for to in ["", r#","to":7"#, r#","to":null"#, r#","to":["K7Q2ZD"]"#] {
            let text = format!(r#"{{"type":"{kind}"{to}}}"#);
            assert_eq!(code_of(&text), Some(ErrorCode::BadRequest), "{text}");
        }
        let text = format!(r#"{{"type":"{kind}","to":"??"}}"#);
        assert!(decode(&text).is_ok(), "{text}");
    }
    // Other types do not need `to`.
    assert!(decode(r#"{"type":"PING","to":7}"#).is_ok());
    assert!(decode(r#"{"type":"DISCONNECT"}"#).is_ok());
}

#[test]
fn to_is_normalized_through_json_escapes() {
    let expected = Id::parse("K7Q2ZD");
    for to in [
        r#""K7Q2ZD""#,
        r#"" k7-q2-zd ""#,
        r#""\u004b7Q2ZD""#,
        r#""K7Q2ZD\n""#,
        r#""K7Q2Z\/""#,
    ] {
        let text = format!(r#"{{"type":"FRIEND_REMOVE","to":{to}}}"#);
        let parsed = match decode(&text).map(|f| f.request) {
            Ok(Request::FriendRemove { to }) => to,
            other => panic!("{text}: {other:?}"),
        };
        let wanted = if to.contains("\\/") { None } else { expected };
        assert_eq!(parsed, wanted, "{text}");
    }
    let text = r#"{"type":"FRIEND_REMOVE","to":"K7Q2Z\u00c9"}"#;
    assert!(matches!(
        decode(text).map(|f| f.request),
        Ok(Request::FriendRemove { to: None })
    ));
}

#[test]
fn type_names_are_exact() {
    let kinds = [
        ("CONNECT", true),
        ("PING", true),
        ("DISCONNECT", true),
        ("connect", false),
        ("Ping", false),
        ("PING ", false),
        ("ACK", false),
        ("ERROR", false),
        ("PONG", false),
        ("PRESENCE", false),
        ("UNDELIVERED", false),
        ("HELLO", false),
        ("A_VERY_LONG_UNKNOWN_TYPE_NAME", false),
        ("PIN\u{00C9}", false),
    ];
    for (name, known) in kinds {
        let text = format!(r#"{{"type":"{name}"}}"#);
        let request = decode(&text).map(|f| f.request);
        assert_eq!(!matches!(request, Ok(Request::Unknown)), known, "{name}");
    }
    assert!(matches!(
        decode(r#"{"type":"P\u0049NG"}"#).map(|f| f.request),
        Ok(Request::Ping)
    ));
}

#[test]
fn connect_resume_must_be_an_object_with_string_id_and_token() {
    for resume in [
        "null",
        "7",
        r#""K7Q2ZD""#,
        "{}",
        r#"{"id":"K7Q2ZD"}"#,
        r#"{"token":"x"}"#,
        r#"{"id":7,"token":"x"}"#,
        r#"{"id":"K7Q2ZD","token":null}"#,
        r#"{"id":"K7Q2ZD","token":"x","id":"K7Q2ZD"}"#,
    ] {
        let text = format!(r#"{{"type":"CONNECT","resume":{resume}}}"#);
        assert_eq!(code_of(&text), Some(ErrorCode::BadRequest), "{text}");
    }
    let token = "A".repeat(TOKEN_LEN);
    let text =
        format!(r#"{{"type":"CONNECT","resume":{{"id":"k7q2zd","token":"{token}","x":1}}}}"#);
    match decode(&text).map(|f| f.request) {
        Ok(Request::Connect {
            resume: Some(resume),
            ..
        }) => {
            assert_eq!(resume.id, Id::parse("K7Q2ZD"));
            assert_eq!(
                resume.token.as_ref().map(|t| t.as_slice()),
                Some(token.as_bytes())
            );
        }
        other => panic!("{other:?}"),
    }
    let text = r#"{"type":"CONNECT","resume":{"id":"bad","token":"short"}}"#;
    match decode(text).map(|f| f.request) {
        Ok(Request::Connect {
            resume: Some(resume),
            ..
        }) => {
            assert_eq!(resume.id, None);
            assert_eq!(resume.token, None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn armor_checks_accept_literal_and_escaped_headers_and_keep_raw_text() {
    let literal = format!(r#"{{"type":"MESSAGE","to":"K7Q2ZD","payload":"{PAYLOAD}"}}"#);
    let escaped =
        r#"{"type":"MESSAGE","to":"K7Q2ZD","payload":"\u002d----BEGIN PGP MESSAGE-----\nabc"}"#;
    for text in [literal.as_str(), escaped] {
        match decode(text).map(|f| f.request) {
            Ok(Request::Message {
                payload: Some(raw), ..
            }) => assert!(text.contains(raw.get())),
            other => panic!("{text}: {other:?}"),
        }
    }
    for payload in [
        "7",
        "null",
        r#""hello""#,
        r#""-----BEGIN PGP MESSAGE----""#,
        r#"" -----BEGIN PGP MESSAGE-----""#,
        r#""-----BEGIN PGP PUBLIC KEY BLOCK-----""#,
        r#"["-----BEGIN PGP MESSAGE-----"]"#,
    ] {
        let text = format!(r#"{{"type":"MESSAGE","to":"K7Q2ZD","payload":{payload}}}"#);
        assert!(
            matches!(
                decode(&text).map(|f| f.request),
                Ok(Request::Message { payload: None, .. })
            ),
            "{text}"
        );
    }
    let missing = decode(r#"{"type":"MESSAGE","to":"K7Q2ZD"}"#).map(|f| f.request);
    assert!(matches!(
        missing,
        Ok(Request::Message { payload: None, .. })
    ));
    let key = format!(r#"{{"type":"FRIEND_ACCEPT","to":"K7Q2ZD","public_key":"{KEY}"}}"#);
    assert!(matches!(
        decode(&key).map(|f| f.request),
        Ok(Request::FriendAccept {
            public_key: Some(_),
            ..
        })
    ));
    let wrong = format!(r#"{{"type":"FRIEND_REQUEST","to":"K7Q2ZD","public_key":"{PAYLOAD}"}}"#);
    assert!(matches!(
        decode(&wrong).map(|f| f.request),
        Ok(Request::FriendRequest {
            public_key: None,
            ..
        })
    ));
}

#[test]
fn debug_of_a_request_never_shows_key_payload_or_invite_text() {
    let text = format!(
        r#"{{"type":"FRIEND_REQUEST","to":"K7Q2ZD","public_key":"{KEY}","invite":"SecretProof123"}}"#
    );
    let Ok(frame) = decode(&text) else {
        panic!("valid request")
    };
    assert!(matches!(
        frame.request,
        Request::FriendRequest {
            invite: super::InviteProof::Valid(_),
            ..
        }
    ));
    let shown = format!("{frame:?}");
    assert!(!shown.contains("SecretProof123"), "{shown}");
    assert!(!shown.contains("BEGIN PGP"), "{shown}");
    assert!(shown.contains("K7Q2ZD"), "{shown}");
}

#[test]
fn bad_request_comes_before_later_checks() {
    // A missing `to` is reported even though payload is also wrong.
    assert_eq!(
        code_of(r#"{"type":"MESSAGE","payload":7}"#),
        Some(ErrorCode::BadRequest)
    );
    // A bad ref wins over a bad type, and that error has no ref.
    assert_eq!(
        code_of(r#"{"type":7,"ref":7}"#),
        Some(ErrorCode::BadRequest)
    );
    assert_eq!(ref_of_rejection(r#"{"type":7,"ref":7}"#), None);
    // Bad JSON wins over everything.
    assert_eq!(code_of(r#"{"type":7,"ref":7"#), Some(ErrorCode::BadJson));
}

#[test]
fn connect_version_is_a_positive_integer_capped_at_ours() {
    let version = |text: &str| match decode(text).map(|frame| frame.request) {
        Ok(Request::Connect { version, .. }) => Ok(version),
        Ok(other) => panic!("not a CONNECT: {other:?}"),
        Err(rejected) => Err(rejected.code),
    };
    assert_eq!(version(r#"{"type":"CONNECT"}"#), Ok(1));
    assert_eq!(version(r#"{"type":"CONNECT","version":1}"#), Ok(1));
    assert_eq!(version(r#"{"type":"CONNECT","version":2}"#), Ok(2));
    assert_eq!(version(r#"{"type":"CONNECT","version":99}"#), Ok(2));
    for bad in ["0", "-1", "1.5", "\"2\"", "null", "[2]", "1e400"] {
        let text = format!(r#"{{"type":"CONNECT","version":{bad}}}"#);
        assert_eq!(version(&text), Err(ErrorCode::BadRequest), "{text}");
    }
    assert_eq!(
        version(r#"{"type":"CONNECT","version":2,"version":2}"#),
        Err(ErrorCode::BadRequest),
        "a repeated known key"
    );
}

#[test]
fn debug_output_never_shows_keys_payloads_or_tokens() {
    let token = "T".repeat(TOKEN_LEN);
    let texts = [
        format!(r#"{{"type":"MESSAGE","to":"K7Q2ZD","payload":"{PAYLOAD}secret"}}"#),
        format!(r#"{{"type":"FRIEND_REQUEST","to":"K7Q2ZD","public_key":"{KEY}secret"}}"#),
        format!(r#"{{"type":"CONNECT","resume":{{"id":"K7Q2ZD","token":"{token}"}}}}"#),
    ];
    for text in texts {
        let shown = format!("{:?}", decode(&text).map(|frame| frame.request));
        assert!(
            !shown.contains("secret") && !shown.contains(&token),
            "{shown}"
        );
        assert!(!shown.contains("BEGIN PGP"), "{shown}");
    }
}
