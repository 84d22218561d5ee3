//! PROTOCOL.md §3 CONNECT and PING/PONG, §2 `ref` rules.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn connect_reply_has_every_field() {
    let server = Server::start(&[]);
    let mut client = Client::connect(&server);
    let reply = client.request(json!({"type": "CONNECT"}));
    assert_eq!(reply["type"], "CONNECT");
    let id = reply["id"].as_str().expect("id is a string");
    assert!(is_valid_id(id), "bad id {id:?}");
    let token = reply["token"].as_str().expect("token is a string");
    assert!(is_valid_token(token), "bad token {token:?}");
    assert_eq!(reply["resumed"], false);
    assert_eq!(reply["friends"], json!([]));
    assert_eq!(reply["limits"]["max_message_bytes"], 65536);
    client.expect_nothing_pending();
}

#[test]
fn connect_reports_the_configured_message_limit() {
    let server = Server::start(&["--max-message-bytes", "4096"]);
    let mut client = Client::connect(&server);
    let reply = client.request(json!({"type": "CONNECT"}));
    assert_eq!(reply["limits"]["max_message_bytes"], 4096);
}

#[test]
fn ids_and_tokens_are_unique_across_many_live_sessions() {
    // All from 127.0.0.1: lift the per-address socket limit (docs/PROTOCOL.md §8).
    let server = Server::start(&["--max-connections-per-ip", "0"]);
    let mut clients = Vec::new();
    let mut ids = HashSet::new();
    let mut tokens = HashSet::new();
    // Spread over the alphabet: with 300 IDs every one of the 32 characters should appear.
    let mut seen_chars = HashSet::new();
    for _ in 0..300 {
        let (client, id, token) = connect_session(&server);
        assert!(is_valid_id(&id), "bad id {id:?}");
        assert!(is_valid_token(&token), "bad token {token:?}");
        seen_chars.extend(id.chars());
        assert!(ids.insert(id.clone()), "duplicate id {id}");
        assert!(tokens.insert(token), "duplicate token");
        clients.push(client);
    }
    assert_eq!(
        seen_chars.len(),
        32,
        "IDs do not use the whole alphabet: {seen_chars:?}"
    );
}

#[test]
fn ping_before_connect_gets_pong_with_the_ref_echoed() {
    let server = Server::start(&[]);
    let mut client = Client::connect(&server);
    assert_eq!(
        client.request(json!({"type": "PING", "ref": "p1"})),
        json!({"type": "PONG", "ref": "p1"})
    );
    assert_eq!(
        client.request(json!({"type": "PING"})),
        json!({"type": "PONG"})
    );
    // PING does not count as CONNECT: the connection can still CONNECT afterwards.
    let reply = client.request(json!({"type": "CONNECT"}));
    assert_eq!(reply["type"], "CONNECT");
    assert_eq!(
        client.request(json!({"type": "PING", "ref": "p2"})),
        json!({"type": "PONG", "ref": "p2"})
    );
}

#[test]
fn everything_else_before_connect_is_not_connected() {
    let server = Server::start(&[]);
    let mut client = Client::connect(&server);
    let peer = "ABCDEF";
    let requests = [
        json!({"type": "FRIEND_REQUEST", "to": peer, "public_key": TEST_KEY, "ref": "r"}),
        json!({"type": "FRIEND_ACCEPT", "to": peer, "public_key": TEST_KEY, "ref": "r"}),
        json!({"type": "FRIEND_DECLINE", "to": peer, "ref": "r"}),
        json!({"type": "FRIEND_REMOVE", "to": peer, "ref": "r"}),
        json!({"type": "MESSAGE", "to": peer, "payload": TEST_PAYLOAD, "ref": "r"}),
        json!({"type": "DISCONNECT", "ref": "r"}),
        json!({"type": "NO_SUCH_TYPE", "ref": "r"}),
        json!({"type": "ACK", "ref": "r"}),
        json!({"type": "PONG", "ref": "r"}),
        // not_connected comes before bad_id and the per-type checks.
        json!({"type": "MESSAGE", "to": "!!", "payload": "plain", "ref": "r"}),
    ];
    for request in requests {
        let reply = client.request(request.clone());
        assert_error_shape(&reply, "not_connected", Some("r"));
    }
    // Without a ref the ERROR carries none.
    let reply = client.request(json!({"type": "DISCONNECT"}));
    assert_error_shape(&reply, "not_connected", None);
    // Still open and able to CONNECT.
    assert_eq!(
        client.request(json!({"type": "CONNECT"}))["type"],
        "CONNECT"
    );
}

#[test]
fn bad_json_and_bad_request_win_over_not_connected() {
    let server = Server::start(&[]);
    let mut client = Client::connect(&server);
    for text in ["not json", "[1,2]", "\"CONNECT\"", "42", "{"] {
        client.send_raw_text(text);
        client.expect_error("bad_json", None);
    }
    for request in [
        json!({}),
        json!({"type": 5}),
        json!({"type": null, "ref": "x"}),
        json!({"type": "PING", "ref": 7}),
        // `to` missing / of the wrong type is a malformed request, reported before not_connected.
        json!({"type": "FRIEND_REMOVE"}),
        json!({"type": "FRIEND_DECLINE", "to": 12}),
    ] {
        let reply = client.request(request.clone());
        assert_eq!(reply["type"], "ERROR", "{request} -> {reply}");
        assert_eq!(reply["code"], "bad_request", "{request} -> {reply}");
    }
    // A bad_request with a valid ref carries it.
    let reply = client.request(json!({"type": "FRIEND_REMOVE", "ref": "br"}));
    assert_error_shape(&reply, "bad_request", Some("br"));
}

#[test]
fn second_connect_is_already_connected() {
    let server = Server::start(&[]);
    let (mut client, id, token) = connect_session(&server);
    let reply = client.request(json!({"type": "CONNECT", "ref": "again"}));
    assert_error_shape(&reply, "already_connected", Some("again"));
    // A second CONNECT with resume is refused the same way and changes nothing.
    let reply = client.request(json!({"type": "CONNECT", "resume": {"id": id, "token": token}}));
    assert_error_shape(&reply, "already_connected", None);
    // The session is unchanged: a friend request to ourselves is still self_request.
    let reply = client
        .request(json!({"type": "FRIEND_REQUEST", "to": id, "public_key": TEST_KEY, "ref": "s"}));
    assert_error_shape(&reply, "self_request", Some("s"));
}

#[test]
fn malformed_resume_is_bad_request_and_the_connection_can_still_connect() {
    let server = Server::start(&[]);
    let mut client = Client::connect(&server);
    for resume in [
        json!("K7Q2ZD"),
        json!(42),
        json!([]),
        json!({"id": "K7Q2ZD"}),
        json!({"token": "abc"}),
        json!({"id": 5, "token": "abc"}),
        json!({"id": "K7Q2ZD", "token": 5}),
        json!({"id": null, "token": "abc"}),
    ] {
        let reply = client.request(json!({"type": "CONNECT", "resume": resume, "ref": "m"}));
        assert_error_shape(&reply, "bad_request", Some("m"));
    }
    let reply = client.request(json!({"type": "CONNECT"}));
    assert_eq!(reply["type"], "CONNECT");
    assert_eq!(reply["resumed"], false);
}

#[test]
fn resume_that_does_not_match_creates_a_new_session() {
    let server = Server::start(&[]);
    let (mut owner, id, token) = connect_session(&server);
    // Same length and alphabet, one character different.
    let first = if token.starts_with('A') { "B" } else { "A" };
    let wrong_token = format!("{first}{}", &token[1..]);
    for (resume_id, resume_token) in [
        (id.as_str(), wrong_token.as_str()),
        (id.as_str(), ""),
        (id.as_str(), "short"),
        ("ZZZZZZ", token.as_str()),
    ] {
        let mut client = Client::connect(&server);
        let reply = client.request(
            json!({"type": "CONNECT", "resume": {"id": resume_id, "token": resume_token}}),
        );
        assert_eq!(reply["type"], "CONNECT", "{reply}");
        assert_eq!(reply["resumed"], false, "{reply}");
        assert_eq!(reply["friends"], json!([]));
        let new_id = reply["id"].as_str().expect("id");
        assert!(is_valid_id(new_id));
        assert_ne!(new_id, id, "a wrong token took over the session");
        assert_ne!(reply["token"], token.as_str());
    }
    // The owner was not disturbed.
    owner.expect_nothing_pending();
}

#[test]
fn resume_id_is_normalized_and_an_invalid_one_is_bad_id() {
    let server = Server::start(&[]);
    let (owner, id, token) = connect_session(&server);
    owner.drop_connection();
    let mut client = Client::connect(&server);
    let reply = client.request(
        json!({"type": "CONNECT", "resume": {"id": "not an id", "token": token}, "ref": "b"}),
    );
    assert_error_shape(&reply, "bad_id", Some("b"));
    // Lower case, a dash and surrounding white space name the same ID.
    let spelled = format!(" {}-{}\t", id[..3].to_lowercase(), id[3..].to_lowercase());
    let reply =
        client.request(json!({"type": "CONNECT", "resume": {"id": spelled, "token": token}}));
    assert_eq!(reply["type"], "CONNECT", "{reply}");
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["id"], id.as_str());
}

#[test]
fn server_full_refuses_connect_with_1013() {
    let server = Server::start(&["--max-connections", "2"]);
    let (_a, _, _) = connect_session(&server);
    let (_b, _, _) = connect_session(&server);
    let mut c = Client::connect(&server);
    // A connection that has not CONNECTed is not a session: PING still works.
    assert_eq!(c.request(json!({"type": "PING"})), json!({"type": "PONG"}));
    c.send_json(&json!({"type": "CONNECT", "ref": "full"}));
    c.expect_error("server_full", Some("full"));
    assert_eq!(c.expect_close(), 1013);
}

#[test]
fn a_session_in_its_resume_window_counts_but_its_resume_is_never_refused() {
    let server = Server::start(&["--max-connections", "2", "--resume-grace", "30"]);
    let (_a, _, _) = connect_session(&server);
    let (b, b_id, b_token) = connect_session(&server);
    b.drop_connection();
    // B's session is still alive in its window: a new session does not fit.
    let mut c = Client::connect(&server);
    c.send_json(&json!({"type": "CONNECT"}));
    c.expect_error("server_full", None);
    assert_eq!(c.expect_close(), 1013);
    // B's resume does.
    let (mut b2, reply) = resume_session(&server, &b_id, &b_token);
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["id"], b_id.as_str());
    // And a takeover while full works too (the old connection is closed with 4001).
    let (mut b3, reply) = resume_session(&server, &b_id, &b2.token);
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(b2.expect_close(), 4001);
    b3.expect_nothing_pending();
}

#[test]
fn connection_without_connect_is_closed_after_10_seconds_with_1008() {
    let server = Server::start(&[]);
    let started = Instant::now();
    let mut silent = RawClient::connect(&server);
    let mut pinging = Client::connect(&server);
    // PINGs are answered but do not count as CONNECT.
    assert_eq!(
        pinging.request(json!({"type": "PING", "ref": "k"})),
        json!({"type": "PONG", "ref": "k"})
    );
    let code = silent.expect_close_within(Duration::from_secs(14));
    let elapsed = started.elapsed();
    assert_eq!(code, 1008);
    assert!(
        elapsed >= Duration::from_millis(9500),
        "closed too early: {elapsed:?}"
    );
    assert_eq!(pinging.expect_close_within(Duration::from_secs(4)), 1008);
    // A connection that did CONNECT in time is not affected.
    let (mut connected, _, _) = connect_session(&server);
    connected.expect_nothing_pending();
}

#[test]
fn connected_session_outlives_the_connect_deadline() {
    let server = Server::start(&[]);
    let (mut client, _, _) = connect_session(&server);
    // Wait past the 10 s CONNECT deadline (in parallel with the test above).
    client.expect_silence(11_000);
    client.expect_nothing_pending();
}

#[test]
fn ref_is_echoed_in_ack_and_error() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let (b, b_id, _) = connect_session(&server);
    let reply = a.request(
        json!({"type": "FRIEND_REQUEST", "to": b_id, "public_key": TEST_KEY, "ref": "ack-me"}),
    );
    assert_eq!(reply, json!({"type": "ACK", "ref": "ack-me"}));
    let reply = a.request(json!({"type": "FRIEND_REMOVE", "to": b_id, "ref": "err-me"}));
    assert_error_shape(&reply, "not_friends", Some("err-me"));
    // The empty string is a valid ref.
    let reply = a.request(json!({"type": "FRIEND_REMOVE", "to": b_id, "ref": ""}));
    assert_error_shape(&reply, "not_friends", Some(""));
    drop(b);
}

#[test]
fn ref_of_64_multibyte_code_points_is_accepted() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    // 64 code points; the emoji need two UTF-16 units and four bytes each.
    for reference in ["é".repeat(64), "😀".repeat(64), "x".repeat(64)] {
        let reply = a.request(json!({"type": "PING", "ref": reference}));
        assert_eq!(reply, json!({"type": "PONG", "ref": reference}));
        let reply = a.request(json!({"type": "FRIEND_REMOVE", "to": "ZZZZZZ", "ref": reference}));
        assert_eq!(reply["type"], "ERROR");
        assert_eq!(reply["ref"], reference.as_str(), "{reply}");
    }
}

#[test]
fn ref_that_is_too_long_or_not_a_string_is_bad_request_without_ref() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let bad_refs = [
        json!("x".repeat(65)),
        json!("😀".repeat(65)),
        json!(17),
        json!(["r"]),
        json!({"r": 1}),
        json!(true),
    ];
    for reference in bad_refs {
        for request in [
            json!({"type": "PING", "ref": reference}),
            json!({"type": "FRIEND_REMOVE", "to": "ZZZZZZ", "ref": reference}),
            json!({"type": "NO_SUCH_TYPE", "ref": reference}),
        ] {
            let reply = a.request(request.clone());
            assert_eq!(reply["type"], "ERROR", "{request} -> {reply}");
            assert_eq!(reply["code"], "bad_request", "{request} -> {reply}");
            assert!(reply.get("ref").is_none(), "{request} -> {reply}");
        }
    }
}

#[test]
fn ref_null_is_not_a_string() {
    let server = Server::start(&[]);
    let mut client = Client::connect(&server);
    let reply = client.request(json!({"type": "PING", "ref": null}));
    assert_eq!(reply["type"], "ERROR", "{reply}");
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(reply.get("ref").is_none(), "{reply}");
}

#[test]
fn unknown_extra_fields_are_ignored() {
    let server = Server::start(&[]);
    let mut client = Client::connect(&server);
    let reply = client.request(json!({"type": "CONNECT", "extra": {"x": [1, 2]}, "v": 9}));
    assert_eq!(reply["type"], "CONNECT", "{reply}");
    let reply = client.request(json!({"type": "PING", "ref": "e", "junk": null}));
    assert_eq!(reply, json!({"type": "PONG", "ref": "e"}));
}
