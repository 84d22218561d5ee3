//! The rate limits (messages per second, friend requests per minute) and the error flood
//! (the 101st ERROR within a minute closes the connection with 1008).

use super::*;

#[test]
fn message_rate_limit_refills_with_time() {
    let mut h = Harness::with(RouterConfig {
        rate_messages_per_sec: 4,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    for _ in 0..4 {
        assert_eq!(
            frames_to(&h.text(a.conn, &message(&b.id, None)), b.conn).len(),
            1
        );
        h.sink.flushed(b.conn, 0);
    }
    assert_eq!(
        error_code(&h.text(a.conn, &message(&b.id, Some("r"))), a.conn),
        "rate_limited"
    );
    h.advance(249);
    assert_eq!(
        error_code(&h.text(a.conn, &message(&b.id, None)), a.conn),
        "rate_limited"
    );
    h.advance(1);
    assert_eq!(
        frames_to(&h.text(a.conn, &message(&b.id, None)), b.conn).len(),
        1
    );
    // The rate is per session: b's bucket is untouched.
    assert_eq!(
        frames_to(&h.text(b.conn, &message(&a.id, None)), a.conn).len(),
        1
    );
}

#[test]
fn friend_request_rate_is_per_minute() {
    let mut h = Harness::with(RouterConfig {
        rate_friend_requests_per_min: 2,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let others: Vec<Session> = (2..=5).map(|conn| h.connect(conn)).collect();
    h.text(a.conn, &friend_request(&others[0].id, None));
    h.text(a.conn, &friend_request(&others[1].id, None));
    assert_eq!(
        error_code(
            &h.text(a.conn, &friend_request(&others[2].id, None)),
            a.conn
        ),
        "rate_limited"
    );
    h.advance(29_999);
    assert_eq!(
        error_code(
            &h.text(a.conn, &friend_request(&others[2].id, None)),
            a.conn
        ),
        "rate_limited"
    );
    h.advance(1);
    assert_eq!(
        frames_to(
            &h.text(a.conn, &friend_request(&others[2].id, None)),
            others[2].conn
        )
        .len(),
        1
    );
}

#[test]
fn the_101st_error_within_a_minute_is_sent_then_closes_1008() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    for n in 0..100 {
        let actions = h.text(a.conn, "garbage");
        assert_eq!(error_code(&actions, a.conn), "bad_json");
        assert!(closes(&actions).is_empty(), "closed at error {}", n + 1);
        h.advance(500);
    }
    let actions = h.text(a.conn, r#"{"type":"NOPE","ref":"last"}"#);
    assert_eq!(error_code(&actions, a.conn), "unknown_type");
    assert_eq!(closes(&actions), vec![(a.conn, close_code::POLICY)]);
    let error_position = actions
        .iter()
        .position(|x| matches!(x, Action::Send { conn: 1, .. }));
    let close_position = actions
        .iter()
        .position(|x| matches!(x, Action::Close { .. }));
    assert!(error_position < close_position);
    // The session is treated as dropped: resume window, PRESENCE to friends.
    assert_eq!(only_frame_to(&actions, b.conn)["online"], false);
    assert_eq!(h.router.stats().sessions_resuming, 1);
    assert!(h.closed(a.conn).is_empty());
}

#[test]
fn errors_spread_over_more_than_a_minute_do_not_flood() {
    let mut h = Harness::new();
    h.open(1);
    for _ in 0..300 {
        let actions = h.text(1, "[]");
        assert!(closes(&actions).is_empty());
        h.advance(601);
    }
}

#[test]
fn binary_frames_count_toward_the_flood_before_connect_too() {
    let mut h = Harness::new();
    h.open(1);
    let mut out = Recorder::default();
    for _ in 0..101 {
        out.take();
        h.router.binary(1, h.now, &mut out);
    }
    assert_eq!(closes(out.actions()), vec![(1, close_code::POLICY)]);
    assert_eq!(h.router.stats().connections, 0);
}
