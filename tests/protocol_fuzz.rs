//! Property tests over the wire: random client messages never crash the server, never close the
//! connection, and are answered per PROTOCOL.md §2 (at most one ACK or ERROR with a known code,
//! the `ref` echoed exactly when it is a valid one).

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

const ERROR_CODES: [&str; 16] = [
    "bad_json",
    "bad_request",
    "unknown_type",
    "not_connected",
    "already_connected",
    "server_full",
    "bad_id",
    "self_request",
    "unknown_peer",
    "already_friends",
    "no_pending_request",
    "not_friends",
    "bad_key",
    "not_encrypted",
    "rate_limited",
    "peer_busy",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn plausible_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9A-Za-z -]{0,8}",
        Just(TEST_KEY.to_string()),
        Just(TEST_PAYLOAD.to_string()),
        Just("ZZZZZZ".to_string()),
        "\\PC{0,70}",
    ]
}

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => plausible_string().prop_map(Value::from),
        1 => any_json(),
    ]
}

fn message_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "CONNECT",
            "FRIEND_REQUEST",
            "FRIEND_ACCEPT",
            "FRIEND_DECLINE",
            "FRIEND_REMOVE",
            "MESSAGE",
            "PING",
            "ACK",
            "ERROR",
            "PRESENCE",
            "UNDELIVERED",
            "PONG",
        ])
        .prop_map(Value::from),
        1 => "[A-Za-z_]{0,12}".prop_map(Value::from),
        1 => any_json(),
    ]
}

/// A client message: an object with a random type and a random subset of the known fields.
fn client_message() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(0.95, message_type()),
        prop::option::of(field_value()),
        prop::option::of(field_value()),
        prop::option::of(field_value()),
        prop::option::of(field_value()),
        prop::option::of(prop_oneof![
            3 => "\\PC{0,70}".prop_map(Value::from),
            1 => any_json(),
        ]),
        prop::option::of(any_json()),
    )
        .prop_map(|(kind, to, key, payload, resume, reference, extra)| {
            let mut object = Map::new();
            let fields = [
                ("type", kind),
                ("to", to),
                ("public_key", key),
                ("payload", payload),
                ("resume", resume),
                ("ref", reference),
                ("extra", extra),
            ];
            for (name, value) in fields {
                if let Some(v) = value {
                    object.insert(name.to_string(), v);
                }
            }
            Value::Object(object)
        })
        .prop_filter("DISCONNECT closes the connection", |m| {
            m["type"] != "DISCONNECT"
        })
}

fn valid_ref(value: &Value) -> Option<&str> {
    value.as_str().filter(|r| r.chars().count() <= 64)
}

/// Send `text` on a fresh connection (CONNECTed first when `connected`) and check the answer.
fn check_one(
    server: &Server,
    text: &str,
    parsed: Option<&Value>,
    connected: bool,
) -> Result<(), TestCaseError> {
    let mut client = Client::connect(server);
    if connected {
        let reply = client.request(json!({"type": "CONNECT"}));
        prop_assert_eq!(&reply["type"], "CONNECT");
    }
    client.send_raw_text(text);
    client.send_json(&json!({"type": "PING", "ref": "fuzz-sync"}));
    let mut replies = Vec::new();
    loop {
        let text = client
            .try_recv_text(Duration::from_secs(5))
            .ok_or_else(|| TestCaseError::fail("no reply at all"))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("non-JSON reply {text}: {e}")))?;
        if value == json!({"type": "PONG", "ref": "fuzz-sync"}) {
            break;
        }
        replies.push(value);
    }
    prop_assert!(
        replies.len() <= 1,
        "several replies to one message: {:?}",
        replies
    );
    let Some(reply) = replies.first() else {
        // Silence is only right for a success without a ref.
        let has_ref = parsed.and_then(|p| p.get("ref")).is_some();
        prop_assert!(!has_ref, "a message with a ref got no ACK or ERROR");
        return Ok(());
    };
    let kind = reply["type"].as_str().unwrap_or_default();
    let sent_ref = parsed.and_then(|p| p.get("ref"));
    match kind {
        "ERROR" => {
            let code = reply["code"].as_str().unwrap_or_default();
            prop_assert!(ERROR_CODES.contains(&code), "unknown code in {}", reply);
            prop_assert!(
                reply["message"].is_string(),
                "ERROR without message: {}",
                reply
            );
            match sent_ref {
                Some(r) if valid_ref(r).is_none() => {
                    prop_assert_eq!(code, "bad_request", "invalid ref {} -> {}", r, reply);
                    prop_assert!(reply.get("ref").is_none());
                }
                Some(r) if code != "bad_json" => prop_assert_eq!(reply.get("ref"), Some(r)),
                _ => prop_assert!(reply.get("ref").is_none(), "ref out of nowhere: {}", reply),
            }
        }
        "ACK" => {
            prop_assert!(
                sent_ref.is_some_and(|r| valid_ref(r).is_some()),
                "ACK without a valid ref: {}",
                reply
            );
            prop_assert_eq!(reply.get("ref"), sent_ref);
        }
        "PONG" => {
            prop_assert_eq!(parsed.map(|p| &p["type"]), Some(&json!("PING")));
            prop_assert_eq!(reply.get("ref"), sent_ref);
        }
        "CONNECT" => {
            prop_assert!(!connected, "a second CONNECT succeeded");
            prop_assert!(is_valid_id(reply["id"].as_str().unwrap_or_default()));
        }
        _ => prop_assert!(false, "unexpected reply {}", reply),
    }
    Ok(())
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn random_messages_after_connect_get_at_most_one_well_formed_reply() {
    let server = Server::start(&[
        "--rate-messages",
        "0",
        "--rate-friend-requests",
        "0",
        "--max-connections-per-ip",
        "0",
    ]);
    runner(150)
        .run(&client_message(), |message| {
            check_one(&server, &message.to_string(), Some(&message), true)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // And the server is still fine.
    assert_eq!(http_get(&server, "/healthz").body, b"ok");
}

#[test]
fn random_messages_before_connect_get_at_most_one_well_formed_reply() {
    let server = Server::start(&["--max-connections-per-ip", "0"]);
    runner(150)
        .run(&client_message(), |message| {
            check_one(&server, &message.to_string(), Some(&message), false)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(http_get(&server, "/healthz").body, b"ok");
}

#[test]
fn random_text_is_bad_json_unless_it_is_an_object() {
    let server = Server::start(&["--max-connections-per-ip", "0"]);
    runner(100)
        .run(&"\\PC{0,200}", |text| {
            let parsed: Option<Value> = serde_json::from_str(&text).ok();
            let object = parsed.as_ref().filter(|v| v.is_object());
            check_one(&server, &text, object, true)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn deeply_nested_json_does_not_crash_the_server() {
    let server = Server::start(&[]);
    let (mut client, _, _) = connect_session(&server);
    let depth = 20_000;
    let nested = format!(
        r#"{{"type":"PING","ref":"deep","x":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    client.send_raw_text(&nested);
    let reply = client.recv_json();
    assert!(
        reply == json!({"type": "PONG", "ref": "deep"}) || reply["code"] == "bad_json",
        "{reply}"
    );
    client.expect_nothing_pending();
    assert_eq!(http_get(&server, "/healthz").body, b"ok");
}

#[test]
fn armor_headers_are_checked_on_the_decoded_string() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    // Escapes that decode to the armor header are still the armor header.
    let key = r#""\u002d----BEGIN\u0020PGP PUBLIC KEY BLOCK-----\n""#;
    a.send_raw_text(&format!(
        r#"{{"type":"FRIEND_REQUEST","to":"{b_id}","public_key":{key},"ref":"k"}}"#
    ));
    a.expect_ack("k");
    b.expect_type("FRIEND_REQUEST");
    b.send_json(&json!({"type": "FRIEND_ACCEPT", "to": a.id, "public_key": TEST_KEY}));
    a.expect_type("FRIEND_ACCEPT");
    let payload = r#""\u002D----BEGIN PGP\u0020MESSAGE-----\nxyz""#;
    a.send_raw_text(&format!(
        r#"{{"type":"MESSAGE","to":"{b_id}","payload":{payload},"ref":"p"}}"#
    ));
    a.expect_ack("p");
    let received = b.recv_text();
    assert!(
        received.contains(&format!("\"payload\":{payload}")),
        "payload re-escaped: {received}"
    );
}
