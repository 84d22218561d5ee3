//! PROTOCOL.md §2 check order, §3 IDs, §5 error codes, rate limits and the error flood.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn code_of(reply: &Value) -> &str {
    assert_eq!(reply["type"], "ERROR", "not an ERROR: {reply}");
    reply["code"].as_str().unwrap_or("")
}

#[test]
fn bad_json_for_non_objects_and_binary_frames_and_the_connection_stays_open() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    for text in [
        "",
        "nope",
        "[]",
        "null",
        "3.5",
        "\"MESSAGE\"",
        "{\"type\":",
        "{} {}",
    ] {
        a.send_raw_text(text);
        a.expect_error("bad_json", None);
    }
    a.send_binary(br#"{"type":"PING","ref":"bin"}"#);
    a.expect_error("bad_json", None);
    a.expect_nothing_pending();
}

#[test]
fn bad_request_for_missing_or_mistyped_fields() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let (_b, b_id, _) = connect_session(&server);
    for request in [
        json!({"ref": "q"}),
        json!({"type": 1, "ref": "q"}),
        json!({"type": ["MESSAGE"], "ref": "q"}),
        json!({"type": "MESSAGE", "payload": TEST_PAYLOAD, "ref": "q"}),
        json!({"type": "MESSAGE", "to": 123456, "payload": TEST_PAYLOAD, "ref": "q"}),
        json!({"type": "MESSAGE", "to": [b_id], "payload": TEST_PAYLOAD, "ref": "q"}),
        json!({"type": "FRIEND_REQUEST", "public_key": TEST_KEY, "ref": "q"}),
        json!({"type": "FRIEND_REQUEST", "to": null, "public_key": TEST_KEY, "ref": "q"}),
        json!({"type": "FRIEND_ACCEPT", "public_key": TEST_KEY, "ref": "q"}),
        json!({"type": "FRIEND_DECLINE", "to": {"id": b_id}, "ref": "q"}),
        json!({"type": "FRIEND_REMOVE", "to": true, "ref": "q"}),
    ] {
        let reply = a.request(request.clone());
        assert_eq!(code_of(&reply), "bad_request", "{request} -> {reply}");
        assert_eq!(reply["ref"], "q", "{request} -> {reply}");
    }
}

#[test]
fn server_only_and_unknown_types_are_unknown_type() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    for kind in [
        "ACK",
        "ERROR",
        "PONG",
        "PRESENCE",
        "UNDELIVERED",
        "HELLO",
        "connect",
        "",
    ] {
        let reply = a.request(json!({"type": kind, "ref": "u"}));
        assert_error_shape(&reply, "unknown_type", Some("u"));
    }
}

#[test]
fn message_check_order() {
    let server = Server::start(&["--rate-messages", "1"]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    let cases = [
        // bad_request (type of `to`) before bad_id and not_encrypted.
        (
            json!({"type": "MESSAGE", "to": 5, "payload": 5}),
            "bad_request",
        ),
        // bad_id before not_encrypted.
        (
            json!({"type": "MESSAGE", "to": "??", "payload": "plain"}),
            "bad_id",
        ),
        // not_encrypted before not_friends: a non-friend with a bad payload.
        (
            json!({"type": "MESSAGE", "to": b_id, "payload": "hello"}),
            "not_encrypted",
        ),
        (json!({"type": "MESSAGE", "to": b_id}), "not_encrypted"),
        (
            json!({"type": "MESSAGE", "to": b_id, "payload": 5}),
            "not_encrypted",
        ),
        (
            json!({"type": "MESSAGE", "to": b_id, "payload": TEST_KEY}),
            "not_encrypted",
        ),
        (
            json!({"type": "MESSAGE", "to": b_id, "payload": format!(" {TEST_PAYLOAD}")}),
            "not_encrypted",
        ),
        // not_friends, also for an ID no session has.
        (message(&b_id, TEST_PAYLOAD, None), "not_friends"),
        (message("ZZZZZZ", TEST_PAYLOAD, None), "not_friends"),
    ];
    for (request, code) in cases {
        let reply = a.request(request.clone());
        assert_eq!(code_of(&reply), code, "{request} -> {reply}");
    }
    make_friends(&mut a, &mut b);
    // Burst of 1: the first message passes, the second is rate limited...
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("m1")));
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("m2")));
    a.expect_ack("m1");
    a.expect_error("rate_limited", Some("m2"));
    // ...but the earlier checks still win while the bucket is empty.
    let reply = a.request(json!({"type": "MESSAGE", "to": b_id, "payload": "plain"}));
    assert_eq!(code_of(&reply), "not_encrypted", "{reply}");
    let reply = a.request(message("ZZZZZZ", TEST_PAYLOAD, None));
    assert_eq!(code_of(&reply), "not_friends", "{reply}");
    assert_eq!(b.expect_type("MESSAGE")["payload"], TEST_PAYLOAD);
    b.expect_nothing_pending();
}

#[test]
fn friend_request_check_order() {
    let server = Server::start(&["--rate-friend-requests", "1"]);
    let (mut a, a_id, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    let (mut c, c_id, _) = connect_session(&server);
    let (_d, d_id, _) = connect_session(&server);
    let fr = |to: &str, key: Value| json!({"type": "FRIEND_REQUEST", "to": to, "public_key": key});
    let cases = [
        (
            json!({"type": "FRIEND_REQUEST", "to": 1, "public_key": 1}),
            "bad_request",
        ),
        (fr("U-U-U-U-U-U", json!(1)), "bad_id"),
        (fr(&a_id, json!("junk")), "self_request"),
        (fr("ZZZZZZ", json!("junk")), "unknown_peer"),
        (fr(&b_id, json!("junk")), "bad_key"),
        (json!({"type": "FRIEND_REQUEST", "to": b_id}), "bad_key"),
        (fr(&b_id, json!(42)), "bad_key"),
        (fr(&b_id, json!(TEST_PAYLOAD)), "bad_key"),
        (fr(&b_id, json!(format!("\n{TEST_KEY}"))), "bad_key"),
    ];
    for (request, code) in cases {
        let reply = a.request(request.clone());
        assert_eq!(code_of(&reply), code, "{request} -> {reply}");
    }
    // Failed requests did not use the (burst 1) rate: this one passes.
    make_friends(&mut a, &mut b);
    // Now the bucket is empty: a valid request to someone new is rate limited...
    let reply = a.request(
        json!({"type": "FRIEND_REQUEST", "to": c_id, "public_key": TEST_KEY, "ref": "rl"}),
    );
    assert_error_shape(&reply, "rate_limited", Some("rl"));
    // ...and was not forwarded.
    c.expect_nothing_pending();
    // The earlier checks still win.
    let reply = a.request(fr(&b_id, json!(TEST_KEY)));
    assert_eq!(code_of(&reply), "already_friends", "{reply}");
    let reply = a.request(fr(&d_id, json!("junk")));
    assert_eq!(code_of(&reply), "bad_key", "{reply}");
    let reply = a.request(fr("ZZZZZZ", json!(TEST_KEY)));
    assert_eq!(code_of(&reply), "unknown_peer", "{reply}");
    b.expect_nothing_pending();
}

#[test]
fn friend_requests_are_rate_limited_per_minute() {
    let server = Server::start(&["--rate-friend-requests", "3"]);
    let (mut a, _, _) = connect_session(&server);
    let mut peers: Vec<Client> = (0..4).map(|_| connect_session(&server).0).collect();
    for (i, peer) in peers.iter_mut().enumerate() {
        let reference = format!("r{i}");
        let reply = a.request(json!({"type": "FRIEND_REQUEST", "to": peer.id, "public_key": TEST_KEY, "ref": reference}));
        if i < 3 {
            assert_eq!(reply, json!({"type": "ACK", "ref": reference}));
            assert_eq!(peer.expect_type("FRIEND_REQUEST")["from"], a.id.as_str());
        } else {
            assert_error_shape(&reply, "rate_limited", Some(&reference));
            peer.expect_nothing_pending();
        }
    }
}

#[test]
fn messages_are_rate_limited_per_second_and_the_bucket_refills() {
    let server = Server::start(&["--rate-messages", "3"]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    // Written back to back so that the bucket cannot refill in between.
    for i in 0..5 {
        a.write_raw_text(
            &message(
                &b_id,
                &payload_with(&format!("n{i}")),
                Some(&format!("m{i}")),
            )
            .to_string(),
        );
    }
    a.flush();
    for i in 0..3 {
        a.expect_ack(&format!("m{i}"));
    }
    a.expect_error("rate_limited", Some("m3"));
    a.expect_error("rate_limited", Some("m4"));
    for i in 0..3 {
        assert_eq!(
            b.expect_type("MESSAGE")["payload"],
            payload_with(&format!("n{i}"))
        );
    }
    b.expect_nothing_pending();
    // After a second the bucket is full again.
    std::thread::sleep(Duration::from_millis(1100));
    let reply = a.request(message(&b_id, TEST_PAYLOAD, Some("later")));
    assert_eq!(reply, json!({"type": "ACK", "ref": "later"}));
}

#[test]
fn id_normalization_lower_case_spaces_and_dashes() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    let spelled = format!(
        " \t{}-{}-{}\n ",
        b_id[..2].to_lowercase(),
        &b_id[2..4],
        b_id[4..].to_lowercase()
    );
    let reply = a.request(
        json!({"type": "FRIEND_REQUEST", "to": spelled, "public_key": TEST_KEY, "ref": "n"}),
    );
    assert_eq!(reply, json!({"type": "ACK", "ref": "n"}));
    assert_eq!(b.expect_type("FRIEND_REQUEST")["from"], a.id.as_str());
}

#[test]
fn id_normalization_maps_o_i_l_to_digits() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    // IDs that map to all-digit IDs no session has: unknown_peer, not bad_id.
    for spelled in [
        "OOOOOO",
        "oooooo",
        "IIILLL",
        "iiilll",
        "O1I0L0",
        "o-o-o-i-i-l",
    ] {
        let reply =
            a.request(json!({"type": "FRIEND_REQUEST", "to": spelled, "public_key": TEST_KEY}));
        assert_eq!(code_of(&reply), "unknown_peer", "{spelled} -> {reply}");
    }
    // A real session whose ID holds a 0 or a 1, written with O / I / L.
    let mut target = None;
    for _ in 0..40 {
        let (client, id, _) = connect_session(&server);
        if id.contains('0') || id.contains('1') {
            target = Some(client);
            break;
        }
    }
    let Some(mut target) = target else {
        panic!("40 sessions without a 0 or 1 in their ID: IDs are not uniform");
    };
    let spelled: String = target
        .id
        .chars()
        .enumerate()
        .map(|(i, c)| match (c, i % 2) {
            ('0', _) => 'o',
            ('1', 0) => 'I',
            ('1', _) => 'l',
            (c, _) => c,
        })
        .collect();
    let reply = a.request(
        json!({"type": "FRIEND_REQUEST", "to": spelled, "public_key": TEST_KEY, "ref": "oil"}),
    );
    assert_eq!(reply, json!({"type": "ACK", "ref": "oil"}), "{spelled}");
    assert_eq!(target.expect_type("FRIEND_REQUEST")["from"], a.id.as_str());
}

#[test]
fn malformed_ids_are_bad_id() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let (_b, b_id, _) = connect_session(&server);
    let fullwidth_last: String = b_id[..5].chars().chain(std::iter::once('Ｚ')).collect();
    for spelled in [
        String::new(),
        "ABCDE".to_string(),
        "ABCDEFG".to_string(),
        "ABC DEF".to_string(),
        "ABCDE_".to_string(),
        "UUUUUU".to_string(),
        "ABCDE!".to_string(),
        // Non-ASCII: a full-width letter, an accented letter, non-ASCII white space.
        fullwidth_last,
        "ABCDÉF".to_string(),
        format!("\u{a0}{b_id}"),
        format!("{b_id}\u{2003}"),
        "ſſſſſſ".to_string(),
    ] {
        for kind in [
            "FRIEND_REQUEST",
            "MESSAGE",
            "FRIEND_ACCEPT",
            "FRIEND_DECLINE",
            "FRIEND_REMOVE",
        ] {
            let request = json!({"type": kind, "to": spelled, "public_key": TEST_KEY, "payload": TEST_PAYLOAD, "ref": "id"});
            let reply = a.request(request);
            assert_eq!(
                code_of(&reply),
                "bad_id",
                "{kind} to {spelled:?} -> {reply}"
            );
            assert_eq!(reply["ref"], "id");
        }
    }
}

#[test]
fn error_flood_closes_with_1008_after_the_101st_error() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let (mut witness, _, _) = connect_session(&server);
    for i in 0..100 {
        a.send_raw_text("not json");
        a.expect_error("bad_json", None);
        if i == 50 {
            a.expect_nothing_pending();
        }
    }
    // 100 errors (the PING in between was no error): still open.
    a.expect_nothing_pending();
    a.send_json(&json!({"type": "NOPE", "ref": "last"}));
    a.expect_error("unknown_type", Some("last"));
    assert_eq!(a.expect_close(), 1008);
    // Nobody else is disturbed.
    witness.expect_nothing_pending();
}

#[test]
fn error_flood_counts_errors_before_connect_too() {
    let server = Server::start(&[]);
    let mut a = Client::connect(&server);
    for _ in 0..100 {
        a.send_json(&json!({"type": "MESSAGE", "to": "ABCDEF", "payload": TEST_PAYLOAD}));
        a.expect_error("not_connected", None);
    }
    a.send_json(&json!({"type": "FRIEND_REMOVE", "to": "ABCDEF"}));
    a.expect_error("not_connected", None);
    assert_eq!(a.expect_close(), 1008);
}

#[test]
fn fields_a_type_does_not_define_are_ignored_whatever_their_json_type() {
    let server = Server::start(&[]);
    let mut client = Client::connect(&server);
    let reply = client
        .request(json!({"type": "PING", "to": 5, "payload": 7, "public_key": [], "ref": "p"}));
    assert_eq!(reply, json!({"type": "PONG", "ref": "p"}));
    let reply =
        client.request(json!({"type": "CONNECT", "to": 5, "payload": {}, "public_key": null}));
    assert_eq!(reply["type"], "CONNECT", "{reply}");
    let client_id = reply["id"].as_str().unwrap_or_default().to_string();
    let (mut b, b_id, _) = connect_session(&server);
    let reply = client.request(json!({"type": "FRIEND_REQUEST", "to": b_id, "public_key": TEST_KEY, "payload": 1, "resume": 2, "ref": "r"}));
    assert_eq!(reply, json!({"type": "ACK", "ref": "r"}));
    b.expect_type("FRIEND_REQUEST");
    let reply = b.request(json!({"type": "FRIEND_DECLINE", "to": client_id, "public_key": 5, "payload": false, "ref": "d"}));
    assert_eq!(reply, json!({"type": "ACK", "ref": "d"}));
    client.expect_type("FRIEND_DECLINE");
    client.send_json(&json!({"type": "DISCONNECT", "to": 5, "public_key": 1, "ref": "bye"}));
    assert_eq!(client.recv_json(), json!({"type": "ACK", "ref": "bye"}));
    assert_eq!(client.expect_close(), 1000);
}

#[test]
fn disconnect_with_a_bad_ref_is_bad_request_and_keeps_the_session() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let reply = a.request(json!({"type": "DISCONNECT", "ref": 99}));
    assert_error_shape(&reply, "bad_request", None);
    a.expect_nothing_pending();
    a.send_json(&json!({"type": "DISCONNECT", "ref": "now"}));
    assert_eq!(a.recv_json(), json!({"type": "ACK", "ref": "now"}));
    assert_eq!(a.expect_close(), 1000);
}
