//! PROTOCOL.md §3 CONNECT with resume, PRESENCE, UNDELIVERED, DISCONNECT; §4 the resume window.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn presence(id: &str, online: bool) -> Value {
    json!({"type": "PRESENCE", "id": id, "online": online})
}

/// Collect messages until `wanted` have arrived (in any order) or `timeout` passes.
fn collect(client: &mut Client, count: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.try_recv_text(left) {
            Some(text) => got.push(serde_json::from_str(&text).expect("JSON")),
            None => panic!("only {} of {count} messages arrived: {got:?}", got.len()),
        }
    }
    got
}

#[test]
fn dropped_connection_enters_the_resume_window_and_resumes_with_its_queue() {
    let server = Server::start(&["--resume-grace", "30"]);
    let (mut a, a_id, a_token) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    a.drop_connection();
    assert_eq!(b.recv_json(), presence(&a_id, false));

    // Messages to A while it is away are queued: ACK with queued:true (and none without ref).
    for i in 0..5 {
        let reference = (i != 2).then(|| format!("q{i}"));
        b.send_json(&message(
            &a_id,
            &payload_with(&format!("queued {i}")),
            reference.as_deref(),
        ));
        if let Some(r) = reference {
            assert_eq!(
                b.recv_json(),
                json!({"type": "ACK", "ref": r, "queued": true})
            );
        }
    }
    b.expect_nothing_pending();

    let (mut a2, reply) = resume_session(&server, &a_id, &a_token);
    assert_eq!(reply["type"], "CONNECT");
    assert_eq!(reply["id"], a_id.as_str());
    assert_eq!(reply["resumed"], true);
    let new_token = reply["token"].as_str().expect("token");
    assert!(is_valid_token(new_token));
    assert_ne!(new_token, a_token, "tokens are single use");
    assert_eq!(reply["friends"], json!([{"id": b_id, "online": true}]));
    assert_eq!(reply["limits"]["max_message_bytes"], 65536);
    // The queue, in order, right after the reply.
    for i in 0..5 {
        let value = a2.expect_type("MESSAGE");
        assert_eq!(value["from"], b_id.as_str());
        assert_eq!(value["payload"], payload_with(&format!("queued {i}")));
        assert!(value["ts"].as_u64().is_some());
    }
    a2.expect_nothing_pending();
    assert_eq!(b.recv_json(), presence(&a_id, true));
    // Back to normal delivery.
    b.send_json(&message(&a_id, TEST_PAYLOAD, Some("live")));
    b.expect_ack("live");
    a2.expect_type("MESSAGE");
}

#[test]
fn a_websocket_close_without_disconnect_also_enters_the_resume_window() {
    let server = Server::start(&["--resume-grace", "30"]);
    let (mut a, a_id, a_token) = connect_session(&server);
    let (mut b, _, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    a.close_gracefully();
    assert_eq!(b.recv_json(), presence(&a_id, false));
    let (_a2, reply) = resume_session(&server, &a_id, &a_token);
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(b.recv_json(), presence(&a_id, true));
}

#[test]
fn tokens_are_single_use() {
    let server = Server::start(&["--resume-grace", "30"]);
    let (a, a_id, a_token) = connect_session(&server);
    a.drop_connection();
    let (mut a2, reply) = resume_session(&server, &a_id, &a_token);
    assert_eq!(reply["resumed"], true);
    // The old token opens a new session and leaves the resumed one alone.
    let (mut c, reply) = resume_session(&server, &a_id, &a_token);
    assert_eq!(reply["resumed"], false, "{reply}");
    assert_ne!(reply["id"], a_id.as_str());
    a2.expect_nothing_pending();
    c.expect_nothing_pending();
    // The new token works (here as a takeover).
    let (_a3, reply) = resume_session(&server, &a_id, &a2.token);
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(a2.expect_close(), 4001);
}

#[test]
fn takeover_closes_the_old_connection_with_4001_and_sends_no_presence() {
    let server = Server::start(&["--resume-grace", "30"]);
    let (mut a, a_id, a_token) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    let (mut a2, reply) = resume_session(&server, &a_id, &a_token);
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["id"], a_id.as_str());
    assert_eq!(reply["friends"], json!([{"id": b_id, "online": true}]));
    assert_eq!(a.expect_close(), 4001);
    // B saw nothing: its next message is the ACK of a message that reaches the new connection.
    b.send_json(&message(&a_id, TEST_PAYLOAD, Some("to-new")));
    assert_eq!(b.recv_json(), json!({"type": "ACK", "ref": "to-new"}));
    assert_eq!(a2.expect_type("MESSAGE")["from"], b_id.as_str());
    b.expect_nothing_pending();
}

#[test]
fn friends_list_reports_who_is_online() {
    let server = Server::start(&["--resume-grace", "30"]);
    let (mut a, a_id, a_token) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    let (mut c, c_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    make_friends(&mut c, &mut a);
    a.drop_connection();
    assert_eq!(b.recv_json(), presence(&a_id, false));
    assert_eq!(c.recv_json(), presence(&a_id, false));
    // C's only friend (A) is away: nobody is told, and B never was C's friend.
    c.drop_connection();
    b.expect_nothing_pending();
    let (mut a2, reply) = resume_session(&server, &a_id, &a_token);
    assert_eq!(reply["resumed"], true);
    let friends: HashSet<(String, bool)> = reply["friends"]
        .as_array()
        .expect("friends array")
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap_or_default().to_string(),
                f["online"].as_bool().expect("online flag"),
            )
        })
        .collect();
    assert_eq!(
        friends,
        HashSet::from([(b_id.clone(), true), (c_id.clone(), false)])
    );
    // PRESENCE is never queued: C going away while A was away is not replayed.
    a2.expect_nothing_pending();
}

#[test]
fn friend_events_are_queued_in_order_for_a_session_in_its_window() {
    let server = Server::start(&["--resume-grace", "30"]);
    let (mut a, a_id, a_token) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    let (mut c, c_id, _) = connect_session(&server);
    let (mut d, d_id, _) = connect_session(&server);
    let (mut e, e_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    make_friends(&mut a, &mut d);
    // A asked E before leaving.
    a.send_json(&json!({"type": "FRIEND_REQUEST", "to": e_id, "public_key": TEST_KEY}));
    e.expect_type("FRIEND_REQUEST");
    a.drop_connection();
    b.expect_type("PRESENCE");
    d.expect_type("PRESENCE");

    b.send_json(&message(&a_id, &payload_with("one"), Some("1")));
    b.expect_queued_ack("1");
    let c_key = key_with("cee");
    c.send_json(&json!({"type": "FRIEND_REQUEST", "to": a_id, "public_key": c_key, "ref": "c"}));
    c.expect_queued_ack("c");
    b.send_json(&message(&a_id, &payload_with("two"), Some("2")));
    b.expect_queued_ack("2");
    b.send_json(&json!({"type": "FRIEND_REMOVE", "to": a_id, "ref": "rm"}));
    b.expect_queued_ack("rm");
    e.send_json(&json!({"type": "FRIEND_DECLINE", "to": a_id, "ref": "no"}));
    e.expect_queued_ack("no");
    d.send_json(&json!({"type": "DISCONNECT"}));
    assert_eq!(d.expect_close(), 1000);

    let (mut a2, reply) = resume_session(&server, &a_id, &a_token);
    assert_eq!(reply["resumed"], true);
    // B removed A and D is gone: no friends left.
    assert_eq!(reply["friends"], json!([]), "{reply}");
    let expected = [
        json!({"type": "MESSAGE", "from": b_id, "payload": payload_with("one")}),
        json!({"type": "FRIEND_REQUEST", "from": c_id, "public_key": c_key}),
        json!({"type": "MESSAGE", "from": b_id, "payload": payload_with("two")}),
        json!({"type": "FRIEND_REMOVE", "from": b_id}),
        json!({"type": "FRIEND_DECLINE", "from": e_id}),
        json!({"type": "DISCONNECT", "id": d_id}),
    ];
    for want in expected {
        let mut got = a2.recv_json();
        if let Some(object) = got.as_object_mut() {
            object.remove("ts");
        }
        assert_eq!(got, want);
    }
    a2.expect_nothing_pending();
    // B removed the friendship, so no PRESENCE online:true for B; nobody else is a friend.
    b.expect_nothing_pending();
    // C's queued request can be accepted.
    a2.send_json(
        &json!({"type": "FRIEND_ACCEPT", "to": c_id, "public_key": TEST_KEY, "ref": "ok"}),
    );
    a2.expect_ack("ok");
    c.expect_type("FRIEND_ACCEPT");
}

#[test]
fn expiry_sends_disconnect_and_undelivered_for_each_queued_message_with_a_ref() {
    let server = Server::start(&["--resume-grace", "0.5"]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, b_token) = connect_session(&server);
    make_friends(&mut a, &mut b);
    b.drop_connection();
    assert_eq!(a.recv_json(), presence(&b_id, false));
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("u1")));
    a.expect_queued_ack("u1");
    a.send_json(&message(&b_id, TEST_PAYLOAD, None));
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("u2")));
    a.expect_queued_ack("u2");
    let got = collect(&mut a, 3, Duration::from_secs(5));
    let want = [
        json!({"type": "DISCONNECT", "id": b_id}),
        json!({"type": "UNDELIVERED", "to": b_id, "ref": "u1"}),
        json!({"type": "UNDELIVERED", "to": b_id, "ref": "u2"}),
    ];
    for w in &want {
        assert!(got.contains(w), "missing {w} in {got:?}");
    }
    let u1 = got.iter().position(|v| v == &want[1]);
    let u2 = got.iter().position(|v| v == &want[2]);
    assert!(u1 < u2, "UNDELIVERED out of order: {got:?}");
    a.expect_nothing_pending();
    // The session is over: not friends, the ID is free, the token is dead.
    let reply = a.request(message(&b_id, TEST_PAYLOAD, Some("gone")));
    assert_error_shape(&reply, "not_friends", Some("gone"));
    let reply = a.request(
        json!({"type": "FRIEND_REQUEST", "to": b_id, "public_key": TEST_KEY, "ref": "who"}),
    );
    assert_error_shape(&reply, "unknown_peer", Some("who"));
    let (_b2, reply) = resume_session(&server, &b_id, &b_token);
    assert_eq!(reply["resumed"], false, "{reply}");
}

#[test]
fn undelivered_is_queued_for_a_sender_that_is_itself_away() {
    // Windows of 4 s: B leaves at 0, A at 2 s; B's window ends at 4 s, A resumes at 4.6 s,
    // 1.4 s before its own window would end.
    let server = Server::start(&["--resume-grace", "4"]);
    let (mut a, a_id, a_token) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    let b_left = Instant::now();
    b.drop_connection();
    assert_eq!(a.recv_json(), presence(&b_id, false));
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("lost")));
    a.expect_queued_ack("lost");
    // A leaves later than B, so B's window ends while A is away...
    std::thread::sleep(Duration::from_millis(2000));
    a.drop_connection();
    // ...and A resumes after B's window but within its own.
    let resume_at = b_left + Duration::from_millis(4600);
    std::thread::sleep(resume_at.saturating_duration_since(Instant::now()));
    let (mut a2, reply) = resume_session(&server, &a_id, &a_token);
    assert_eq!(reply["resumed"], true, "{reply}");
    let got = collect(&mut a2, 2, Duration::from_secs(5));
    assert!(
        got.contains(&json!({"type": "DISCONNECT", "id": b_id})),
        "{got:?}"
    );
    assert!(
        got.contains(&json!({"type": "UNDELIVERED", "to": b_id, "ref": "lost"})),
        "{got:?}"
    );
    a2.expect_nothing_pending();
}

#[test]
fn resume_grace_zero_never_resumes() {
    let server = Server::start(&["--resume-grace", "0"]);
    let (mut a, a_id, a_token) = connect_session(&server);
    let (mut b, _, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    // Even while A is connected, its token does not take over.
    let (mut other, reply) = resume_session(&server, &a_id, &a_token);
    assert_eq!(reply["resumed"], false, "{reply}");
    assert_ne!(reply["id"], a_id.as_str());
    a.expect_nothing_pending();
    other.expect_nothing_pending();
    // A drop ends the session at once: B learns that A is gone.
    a.drop_connection();
    let mut saw_disconnect = false;
    for _ in 0..2 {
        let value = b.recv_json();
        if value == json!({"type": "DISCONNECT", "id": a_id}) {
            saw_disconnect = true;
            break;
        }
        assert_eq!(value, presence(&a_id, false), "unexpected {value}");
    }
    assert!(saw_disconnect);
    let reply = b.request(message(&a_id, TEST_PAYLOAD, Some("m")));
    assert_error_shape(&reply, "not_friends", Some("m"));
    let (_a2, reply) = resume_session(&server, &a_id, &a_token);
    assert_eq!(reply["resumed"], false, "{reply}");
}

#[test]
fn disconnect_acks_then_closes_with_1000_and_frees_the_id() {
    let server = Server::start(&["--resume-grace", "30"]);
    let (mut a, a_id, a_token) = connect_session(&server);
    let (mut b, _, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    a.send_json(&json!({"type": "DISCONNECT", "ref": "bye"}));
    assert_eq!(a.recv_json(), json!({"type": "ACK", "ref": "bye"}));
    assert_eq!(a.expect_close(), 1000);
    // Friends get DISCONNECT, not PRESENCE.
    assert_eq!(b.recv_json(), json!({"type": "DISCONNECT", "id": a_id}));
    b.expect_nothing_pending();
    let reply = b.request(message(&a_id, TEST_PAYLOAD, Some("m")));
    assert_error_shape(&reply, "not_friends", Some("m"));
    let reply = b
        .request(json!({"type": "FRIEND_REQUEST", "to": a_id, "public_key": TEST_KEY, "ref": "r"}));
    assert_error_shape(&reply, "unknown_peer", Some("r"));
    // No resume window after DISCONNECT.
    let (_a2, reply) = resume_session(&server, &a_id, &a_token);
    assert_eq!(reply["resumed"], false, "{reply}");
}

#[test]
fn disconnect_without_ref_closes_with_1000_at_once() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    a.send_json(&json!({"type": "DISCONNECT"}));
    assert_eq!(a.expect_close(), 1000);
}

#[test]
fn a_disconnecting_friend_is_removed_from_the_friends_list() {
    let server = Server::start(&["--resume-grace", "30"]);
    let (mut a, a_id, _) = connect_session(&server);
    let (mut b, _, b_token) = connect_session(&server);
    make_friends(&mut a, &mut b);
    let b_id = b.id.clone();
    b.drop_connection();
    assert_eq!(a.recv_json(), presence(&b_id, false));
    let (mut b2, reply) = resume_session(&server, &b_id, &b_token);
    assert_eq!(reply["friends"], json!([{"id": a_id, "online": true}]));
    assert_eq!(a.recv_json(), presence(&b_id, true));
    a.send_json(&json!({"type": "DISCONNECT"}));
    assert_eq!(a.expect_close(), 1000);
    assert_eq!(b2.recv_json(), json!({"type": "DISCONNECT", "id": a_id}));
    let b2_token = b2.token.clone();
    b2.drop_connection();
    let (_b3, reply) = resume_session(&server, &b_id, &b2_token);
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["friends"], json!([]), "{reply}");
}

#[test]
fn queued_messages_keep_the_time_the_server_received_them() {
    let server = Server::start(&["--resume-grace", "30"]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, b_token) = connect_session(&server);
    make_friends(&mut a, &mut b);
    b.drop_connection();
    a.expect_type("PRESENCE");
    let sent_at = now_unix_ms();
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("t")));
    a.expect_queued_ack("t");
    let acked_at = now_unix_ms();
    std::thread::sleep(Duration::from_millis(800));
    let resumed_at = now_unix_ms();
    let (mut b2, _) = resume_session(&server, &b_id, &b_token);
    let ts = b2.expect_type("MESSAGE")["ts"].as_u64().expect("ts");
    // Received between sending and the ACK; delivered at least 800 ms later.
    assert!(
        ts + 5 >= sent_at && ts <= acked_at + 5,
        "ts {ts} is not the receive time, in [{sent_at}, {acked_at}] (resumed at {resumed_at})"
    );
}

#[test]
fn an_accept_to_a_requester_in_its_window_is_queued_and_makes_friends_at_once() {
    let server = Server::start(&["--resume-grace", "30"]);
    let (mut a, a_id, a_token) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    a.send_json(&json!({"type": "FRIEND_REQUEST", "to": b_id, "public_key": TEST_KEY}));
    b.expect_type("FRIEND_REQUEST");
    a.drop_connection();
    // Not friends yet: B is not told about A leaving.
    b.expect_nothing_pending();
    b.send_json(
        &json!({"type": "FRIEND_ACCEPT", "to": a_id, "public_key": key_with("b"), "ref": "acc"}),
    );
    b.expect_queued_ack("acc");
    b.send_json(&message(&a_id, TEST_PAYLOAD, Some("m")));
    b.expect_queued_ack("m");
    let (mut a2, reply) = resume_session(&server, &a_id, &a_token);
    assert_eq!(reply["friends"], json!([{"id": b_id, "online": true}]));
    assert_eq!(
        a2.recv_json(),
        json!({"type": "FRIEND_ACCEPT", "from": b_id, "public_key": key_with("b")})
    );
    assert_eq!(a2.expect_type("MESSAGE")["from"], b_id.as_str());
    assert_eq!(b.recv_json(), presence(&a_id, true));
}
