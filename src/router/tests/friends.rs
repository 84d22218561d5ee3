//! FRIEND_REQUEST, FRIEND_ACCEPT, FRIEND_DECLINE and FRIEND_REMOVE: forwarding, the order of
//! the checks, and the pending requests on both sides.

use super::*;

#[test]
fn friend_handshake_forwards_keys_raw_and_acks() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    let actions = h.text(a.conn, &friend_request(&b.id.to_lowercase(), Some("fr")));
    let expected = format!(
        r#"{{"type":"FRIEND_REQUEST","from":"{}","public_key":"{KEY}"}}"#,
        a.id
    );
    assert!(
        actions.contains(&Action::Send {
            conn: b.conn,
            frame: expected
        }),
        "{actions:?}"
    );
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"ACK","ref":"fr"})
    );

    let actions = h.text(b.conn, &friend_accept(&a.id, Some("fa")));
    let expected = format!(
        r#"{{"type":"FRIEND_ACCEPT","from":"{}","public_key":"{KEY}"}}"#,
        b.id
    );
    assert!(
        actions.contains(&Action::Send {
            conn: a.conn,
            frame: expected
        }),
        "{actions:?}"
    );
    assert_eq!(
        only_frame_to(&actions, b.conn),
        json!({"type":"ACK","ref":"fa"})
    );

    // Friends both ways: messages flow in both directions; further requests are already_friends.
    assert_eq!(
        frames_to(&h.text(a.conn, &message(&b.id, None)), b.conn).len(),
        1
    );
    assert_eq!(
        frames_to(&h.text(b.conn, &message(&a.id, None)), a.conn).len(),
        1
    );
    assert_eq!(
        error_code(&h.text(b.conn, &friend_request(&a.id, None)), b.conn),
        "already_friends"
    );
    assert_eq!(
        error_code(&h.text(b.conn, &friend_accept(&a.id, None)), b.conn),
        "no_pending_request"
    );
}

#[test]
fn friend_request_check_order() {
    let mut h = Harness::with(RouterConfig {
        rate_friend_requests_per_min: 1,
        max_unsent_bytes: 10,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let b = h.connect(2);
    let c = h.connect(3);
    h.befriend(&a, &b);
    let bad_key =
        |to: &str| format!(r#"{{"type":"FRIEND_REQUEST","to":"{to}","public_key":"nope"}}"#);
    let cases = [
        (bad_key("??"), "bad_id"),
        (bad_key(&a.id), "self_request"),
        (bad_key(NOBODY), "unknown_peer"),
        (bad_key(&b.id), "already_friends"),
        (bad_key(&c.id), "bad_key"),
    ];
    for (text, code) in cases {
        assert_eq!(error_code(&h.text(a.conn, &text), a.conn), code, "{text}");
    }
    // The befriending request used a's only token: invalid requests above consumed none.
    assert_eq!(
        error_code(&h.text(a.conn, &friend_request(&c.id, None)), a.conn),
        "rate_limited"
    );
    h.advance(60_000);
    // c has unflushed bytes over its cap: peer_busy, after every other check passed.
    h.text(c.conn, r#"{"type":"PING"}"#);
    assert_eq!(
        error_code(&h.text(a.conn, &friend_request(&c.id, None)), a.conn),
        "peer_busy"
    );
    h.sink.flushed(c.conn, 0);
    h.advance(60_000);
    let actions = h.text(a.conn, &friend_request(&c.id, None));
    assert_eq!(only_frame_to(&actions, c.conn)["type"], "FRIEND_REQUEST");
}

#[test]
fn a_repeated_request_is_acked_but_not_forwarded_again() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    assert_eq!(
        frames_to(&h.text(a.conn, &friend_request(&b.id, None)), b.conn).len(),
        1
    );
    let actions = h.text(a.conn, &friend_request(&b.id, Some("again")));
    assert!(frames_to(&actions, b.conn).is_empty());
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"ACK","ref":"again"})
    );
}

#[test]
fn crossing_requests_are_separate_and_one_accept_clears_both() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    assert_eq!(
        frames_to(&h.text(a.conn, &friend_request(&b.id, None)), b.conn).len(),
        1
    );
    let actions = h.text(b.conn, &friend_request(&a.id, None));
    assert_eq!(only_frame_to(&actions, a.conn)["type"], "FRIEND_REQUEST");
    h.text(a.conn, &friend_accept(&b.id, None));
    // Both directions are cleared: the other accept has nothing left to accept.
    assert_eq!(
        error_code(&h.text(b.conn, &friend_accept(&a.id, None)), b.conn),
        "no_pending_request"
    );
    assert_eq!(
        frames_to(&h.text(b.conn, &message(&a.id, None)), a.conn).len(),
        1
    );
}

#[test]
fn accept_and_decline_check_order() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    let accept_bad_key =
        |to: &str| format!(r#"{{"type":"FRIEND_ACCEPT","to":"{to}","public_key":7}}"#);
    assert_eq!(
        error_code(&h.text(b.conn, &accept_bad_key("x")), b.conn),
        "bad_id"
    );
    assert_eq!(
        error_code(&h.text(b.conn, &accept_bad_key(NOBODY)), b.conn),
        "no_pending_request"
    );
    assert_eq!(
        error_code(&h.text(b.conn, &accept_bad_key(&a.id)), b.conn),
        "no_pending_request"
    );
    let decline = |to: &str| format!(r#"{{"type":"FRIEND_DECLINE","to":"{to}"}}"#);
    assert_eq!(error_code(&h.text(b.conn, &decline("x")), b.conn), "bad_id");
    assert_eq!(
        error_code(&h.text(b.conn, &decline(&a.id)), b.conn),
        "no_pending_request"
    );
    h.text(a.conn, &friend_request(&b.id, None));
    assert_eq!(
        error_code(&h.text(b.conn, &accept_bad_key(&a.id)), b.conn),
        "bad_key"
    );
    // The requester cannot accept its own request.
    assert_eq!(
        error_code(&h.text(a.conn, &friend_accept(&b.id, None)), a.conn),
        "no_pending_request"
    );
}

#[test]
fn decline_forwards_and_removes_the_request() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    h.text(a.conn, &friend_request(&b.id, None));
    let actions = h.json(b.conn, json!({"type":"FRIEND_DECLINE","to":a.id,"ref":"d"}));
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"FRIEND_DECLINE","from":b.id})
    );
    assert_eq!(
        only_frame_to(&actions, b.conn),
        json!({"type":"ACK","ref":"d"})
    );
    assert_eq!(
        error_code(&h.text(b.conn, &friend_accept(&a.id, None)), b.conn),
        "no_pending_request"
    );
    // The request can be made again and is forwarded again.
    assert_eq!(
        frames_to(&h.text(a.conn, &friend_request(&b.id, None)), b.conn).len(),
        1
    );
}

#[test]
fn remove_ends_the_friendship_both_ways() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    let remove = |to: &str| format!(r#"{{"type":"FRIEND_REMOVE","to":"{to}","ref":"rm"}}"#);
    assert_eq!(
        error_code(&h.text(a.conn, &remove("bad")), a.conn),
        "bad_id"
    );
    assert_eq!(
        error_code(&h.text(a.conn, &remove(&b.id)), a.conn),
        "not_friends"
    );
    h.befriend(&a, &b);
    let actions = h.text(a.conn, &remove(&b.id));
    assert_eq!(
        only_frame_to(&actions, b.conn),
        json!({"type":"FRIEND_REMOVE","from":a.id})
    );
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"ACK","ref":"rm"})
    );
    assert_eq!(
        error_code(&h.text(b.conn, &message(&a.id, None)), b.conn),
        "not_friends"
    );
    assert_eq!(
        error_code(&h.text(b.conn, &remove(&a.id)), b.conn),
        "not_friends"
    );
}

#[test]
fn too_many_pending_requests_is_rate_limited() {
    let mut h = Harness::with(RouterConfig {
        max_pending_requests: 2,
        rate_friend_requests_per_min: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let targets: Vec<Session> = (2..=4).map(|conn| h.connect(conn)).collect();
    h.text(a.conn, &friend_request(&targets[0].id, None));
    h.text(a.conn, &friend_request(&targets[1].id, None));
    assert_eq!(
        error_code(
            &h.text(a.conn, &friend_request(&targets[2].id, None)),
            a.conn
        ),
        "rate_limited"
    );
    // Repeating a pending one is still fine; a decline frees a slot.
    assert_eq!(
        only_frame_to(
            &h.text(a.conn, &friend_request(&targets[0].id, Some("r"))),
            a.conn
        )["type"],
        "ACK"
    );
    h.json(targets[0].conn, json!({"type":"FRIEND_DECLINE","to":a.id}));
    assert_eq!(
        frames_to(
            &h.text(a.conn, &friend_request(&targets[2].id, None)),
            targets[2].conn
        )
        .len(),
        1
    );
}
