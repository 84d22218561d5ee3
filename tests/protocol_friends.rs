//! PROTOCOL.md §3 FRIEND_REQUEST / FRIEND_ACCEPT / FRIEND_DECLINE / FRIEND_REMOVE.

mod common;

use common::*;
use serde_json::json;

fn request(to: &str, key: &str, reference: Option<&str>) -> serde_json::Value {
    let mut value = json!({"type": "FRIEND_REQUEST", "to": to, "public_key": key});
    if let Some(r) = reference {
        value["ref"] = json!(r);
    }
    value
}

fn accept(to: &str, key: &str, reference: &str) -> serde_json::Value {
    json!({"type": "FRIEND_ACCEPT", "to": to, "public_key": key, "ref": reference})
}

#[test]
fn friend_request_is_forwarded_with_from_and_the_exact_key() {
    let server = Server::start(&[]);
    let (mut a, a_id, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    let key = key_with("line with \"quotes\", / slashes \\ and ünïcödé");
    let reply = a.request(request(&b_id, &key, Some("fr1")));
    assert_eq!(reply, json!({"type": "ACK", "ref": "fr1"}));
    let forwarded = b.recv_json();
    assert_eq!(
        forwarded,
        json!({"type": "FRIEND_REQUEST", "from": a_id, "public_key": key})
    );
}

#[test]
fn success_without_ref_is_silent() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    a.send_json(&request(&b_id, TEST_KEY, None));
    // The next message is the PONG: no ACK came first.
    a.expect_nothing_pending();
    assert_eq!(b.expect_type("FRIEND_REQUEST")["from"], a.id.as_str());
}

#[test]
fn repeated_pending_request_is_acknowledged_but_not_forwarded_again() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    assert_eq!(
        a.request(request(&b_id, TEST_KEY, Some("1")))["type"],
        "ACK"
    );
    assert_eq!(
        a.request(request(&b_id, TEST_KEY, Some("2"))),
        json!({"type": "ACK", "ref": "2"})
    );
    assert_eq!(
        a.request(request(&b_id, TEST_KEY, Some("3"))),
        json!({"type": "ACK", "ref": "3"})
    );
    b.expect_type("FRIEND_REQUEST");
    b.expect_nothing_pending();
    // One accept settles it.
    b.send_json(&accept(&a.id, TEST_KEY, "ok"));
    b.expect_ack("ok");
    a.expect_type("FRIEND_ACCEPT");
}

#[test]
fn accept_is_forwarded_and_makes_friends_both_ways() {
    let server = Server::start(&[]);
    let (mut a, a_id, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    a.send_json(&request(&b_id, TEST_KEY, Some("r")));
    a.expect_ack("r");
    b.expect_type("FRIEND_REQUEST");
    let b_key = key_with("bee");
    b.send_json(&accept(&a_id, &b_key, "acc"));
    b.expect_ack("acc");
    assert_eq!(
        a.recv_json(),
        json!({"type": "FRIEND_ACCEPT", "from": b_id, "public_key": b_key})
    );
    // Friends both ways.
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("ab")));
    a.expect_ack("ab");
    assert_eq!(b.expect_type("MESSAGE")["from"], a_id.as_str());
    b.send_json(&message(&a_id, TEST_PAYLOAD, Some("ba")));
    b.expect_ack("ba");
    assert_eq!(a.expect_type("MESSAGE")["from"], b_id.as_str());
    // The request is used up.
    let reply = b.request(accept(&a_id, TEST_KEY, "again"));
    assert_error_shape(&reply, "no_pending_request", Some("again"));
    // And further requests are already_friends, both ways.
    let reply = a.request(request(&b_id, TEST_KEY, Some("x")));
    assert_error_shape(&reply, "already_friends", Some("x"));
    let reply = b.request(request(&a_id, TEST_KEY, Some("y")));
    assert_error_shape(&reply, "already_friends", Some("y"));
}

#[test]
fn crossing_requests_are_both_forwarded_and_one_accept_clears_both() {
    let server = Server::start(&[]);
    let (mut a, a_id, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    a.send_json(&request(&b_id, &key_with("a"), Some("ra")));
    a.expect_ack("ra");
    assert_eq!(
        b.recv_json(),
        json!({"type": "FRIEND_REQUEST", "from": a_id, "public_key": key_with("a")})
    );
    b.send_json(&request(&a_id, &key_with("b"), Some("rb")));
    b.expect_ack("rb");
    assert_eq!(
        a.recv_json(),
        json!({"type": "FRIEND_REQUEST", "from": b_id, "public_key": key_with("b")})
    );
    b.send_json(&accept(&a_id, TEST_KEY, "acc"));
    b.expect_ack("acc");
    a.expect_type("FRIEND_ACCEPT");
    // A's own pending request to B was cleared too.
    let reply = a.request(accept(&b_id, TEST_KEY, "late"));
    assert_error_shape(&reply, "no_pending_request", Some("late"));
    let reply = a.request(json!({"type": "FRIEND_DECLINE", "to": b_id, "ref": "late2"}));
    assert_error_shape(&reply, "no_pending_request", Some("late2"));
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("m")));
    a.expect_ack("m");
    b.expect_type("MESSAGE");
}

#[test]
fn decline_is_forwarded_and_removes_the_request() {
    let server = Server::start(&[]);
    let (mut a, a_id, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    a.send_json(&request(&b_id, TEST_KEY, Some("r")));
    a.expect_ack("r");
    b.expect_type("FRIEND_REQUEST");
    let reply = b.request(json!({"type": "FRIEND_DECLINE", "to": a_id, "ref": "no"}));
    assert_eq!(reply, json!({"type": "ACK", "ref": "no"}));
    assert_eq!(
        a.recv_json(),
        json!({"type": "FRIEND_DECLINE", "from": b_id})
    );
    let reply = b.request(accept(&a_id, TEST_KEY, "acc"));
    assert_error_shape(&reply, "no_pending_request", Some("acc"));
    let reply = b.request(json!({"type": "FRIEND_DECLINE", "to": a_id, "ref": "no2"}));
    assert_error_shape(&reply, "no_pending_request", Some("no2"));
    let reply = a.request(message(&b_id, TEST_PAYLOAD, Some("m")));
    assert_error_shape(&reply, "not_friends", Some("m"));
    // A may ask again, and this time it is forwarded.
    a.send_json(&request(&b_id, TEST_KEY, Some("again")));
    a.expect_ack("again");
    b.expect_type("FRIEND_REQUEST");
}

#[test]
fn remove_is_forwarded_and_ends_the_friendship_both_ways() {
    let server = Server::start(&[]);
    let (mut a, a_id, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    let reply = b.request(json!({"type": "FRIEND_REMOVE", "to": a_id, "ref": "bye"}));
    assert_eq!(reply, json!({"type": "ACK", "ref": "bye"}));
    assert_eq!(
        a.recv_json(),
        json!({"type": "FRIEND_REMOVE", "from": b_id})
    );
    let reply = a.request(message(&b_id, TEST_PAYLOAD, Some("m1")));
    assert_error_shape(&reply, "not_friends", Some("m1"));
    let reply = b.request(message(&a_id, TEST_PAYLOAD, Some("m2")));
    assert_error_shape(&reply, "not_friends", Some("m2"));
    let reply = a.request(json!({"type": "FRIEND_REMOVE", "to": b_id, "ref": "r"}));
    assert_error_shape(&reply, "not_friends", Some("r"));
    // They can become friends again.
    make_friends(&mut b, &mut a);
}

#[test]
fn self_request_unknown_peer_and_bad_key() {
    let server = Server::start(&[]);
    let (mut a, a_id, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    let reply = a.request(request(&a_id, TEST_KEY, Some("s")));
    assert_error_shape(&reply, "self_request", Some("s"));
    let reply = a.request(request(&a_id.to_lowercase(), TEST_KEY, Some("s2")));
    assert_error_shape(&reply, "self_request", Some("s2"));
    let reply = a.request(request("ZZZZZZ", TEST_KEY, Some("u")));
    assert_error_shape(&reply, "unknown_peer", Some("u"));
    for key in [
        json!(null),
        json!(""),
        json!("-----BEGIN PGP PUBLIC KEY BLOCK----"),
        json!("-----BEGIN PGP PRIVATE KEY BLOCK-----\n"),
        json!("-----begin pgp public key block-----\n"),
        json!(["-----BEGIN PGP PUBLIC KEY BLOCK-----"]),
    ] {
        let reply =
            a.request(json!({"type": "FRIEND_REQUEST", "to": b_id, "public_key": key, "ref": "k"}));
        assert_error_shape(&reply, "bad_key", Some("k"));
    }
    let reply = a.request(json!({"type": "FRIEND_REQUEST", "to": b_id, "ref": "k"}));
    assert_error_shape(&reply, "bad_key", Some("k"));
    // None of it reached B.
    b.expect_nothing_pending();
}

#[test]
fn accept_errors_no_pending_request_and_bad_key() {
    let server = Server::start(&[]);
    let (mut a, a_id, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    // Nothing pending yet, also to an ID no session has.
    let reply = b.request(accept(&a_id, TEST_KEY, "x"));
    assert_error_shape(&reply, "no_pending_request", Some("x"));
    let reply = b.request(accept("ZZZZZZ", TEST_KEY, "x2"));
    assert_error_shape(&reply, "no_pending_request", Some("x2"));
    let reply = b.request(json!({"type": "FRIEND_DECLINE", "to": a_id, "ref": "d"}));
    assert_error_shape(&reply, "no_pending_request", Some("d"));
    a.send_json(&request(&b_id, TEST_KEY, Some("r")));
    a.expect_ack("r");
    b.expect_type("FRIEND_REQUEST");
    // The requester cannot accept its own request.
    let reply = a.request(accept(&b_id, TEST_KEY, "own"));
    assert_error_shape(&reply, "no_pending_request", Some("own"));
    // A bad key is refused and the request stays pending.
    let reply = b.request(accept(&a_id, "not a key", "bk"));
    assert_error_shape(&reply, "bad_key", Some("bk"));
    let reply = b.request(json!({"type": "FRIEND_ACCEPT", "to": a_id, "ref": "bk2"}));
    assert_error_shape(&reply, "bad_key", Some("bk2"));
    a.expect_nothing_pending();
    b.send_json(&accept(&a_id, TEST_KEY, "good"));
    b.expect_ack("good");
    a.expect_type("FRIEND_ACCEPT");
}

#[test]
fn pending_requests_end_silently_with_the_requester() {
    let server = Server::start(&[]);
    let (mut a, a_id, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    a.send_json(&request(&b_id, TEST_KEY, Some("r")));
    a.expect_ack("r");
    b.expect_type("FRIEND_REQUEST");
    a.send_json(&json!({"type": "DISCONNECT"}));
    assert_eq!(a.expect_close(), 1000);
    // B is not told (they were not friends), and the request is gone.
    b.expect_nothing_pending();
    let reply = b.request(accept(&a_id, TEST_KEY, "late"));
    assert_error_shape(&reply, "no_pending_request", Some("late"));
}

#[test]
fn an_invite_proof_is_forwarded_to_a_version_2_target_and_a_malformed_one_is_bad_invite() {
    let server = Server::start(&[]);
    let (mut a, a_id, _) = connect_session(&server);
    let mut b = Client::connect(&server);
    let reply = b.request(json!({"type": "CONNECT", "version": 2}));
    let b_id = reply["id"].as_str().unwrap_or_default().to_owned();
    let proof = "Zm9vYmFyLWJhel9xdXV4LTAxMjM0NTY3ODlhYmNkZWY";

    let mut malformed = request(&b_id, TEST_KEY, Some("bad"));
    malformed["invite"] = json!("not base64url!");
    assert_error_shape(&a.request(malformed), "bad_invite", Some("bad"));

    let mut with_proof = request(&b_id, TEST_KEY, Some("ok"));
    with_proof["invite"] = json!(proof);
    assert_eq!(a.request(with_proof), json!({"type": "ACK", "ref": "ok"}));
    assert_eq!(
        b.recv_json(),
        json!({"type": "FRIEND_REQUEST", "from": a_id, "public_key": TEST_KEY, "invite": proof})
    );
}
