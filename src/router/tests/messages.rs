//! MESSAGE: forwarding, the order of the checks, and the counters it moves.

use super::*;

#[test]
fn message_is_forwarded_exactly_and_acked_only_with_ref() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    let actions = h.text(a.conn, &message(&b.id, None));
    let expected = format!(
        r#"{{"type":"MESSAGE","from":"{}","payload":"{PAYLOAD}","ts":{}}}"#,
        a.id, h.now.unix_ms
    );
    assert_eq!(
        actions,
        vec![Action::Send {
            conn: b.conn,
            frame: expected
        }]
    );
    let actions = h.text(a.conn, &message(&b.id, Some("m1")));
    assert_eq!(frames_to(&actions, b.conn).len(), 1);
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"ACK","ref":"m1"})
    );
    assert_eq!(h.router.stats().messages_routed, 2);
}

#[test]
fn message_check_order() {
    let mut h = Harness::with(RouterConfig {
        rate_messages_per_sec: 1,
        max_unsent_bytes: 10,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let b = h.connect(2);
    let c = h.connect(3);
    h.befriend(&a, &b);
    h.sink.flushed(a.conn, 0);
    h.sink.flushed(b.conn, 0);
    let plain = |to: &str| format!(r#"{{"type":"MESSAGE","to":"{to}","payload":"hello"}}"#);
    assert_eq!(error_code(&h.text(a.conn, &plain("bad")), a.conn), "bad_id");
    assert_eq!(
        error_code(&h.text(a.conn, &plain(&c.id)), a.conn),
        "not_encrypted"
    );
    assert_eq!(
        error_code(
            &h.text(a.conn, r#"{"type":"MESSAGE","to":"K7Q2ZD"}"#),
            a.conn
        ),
        "not_encrypted"
    );
    assert_eq!(
        error_code(&h.text(a.conn, &message(&c.id, None)), a.conn),
        "not_friends"
    );
    assert_eq!(
        error_code(&h.text(a.conn, &message(NOBODY, None)), a.conn),
        "not_friends"
    );
    assert_eq!(
        error_code(&h.text(a.conn, &message(&a.id, None)), a.conn),
        "not_friends"
    );
    // None of the invalid ones consumed the single token.
    assert_eq!(
        frames_to(&h.text(a.conn, &message(&b.id, None)), b.conn).len(),
        1
    );
    assert_eq!(
        error_code(&h.text(a.conn, &message(&b.id, None)), a.conn),
        "rate_limited"
    );
    h.advance(1_000);
    // b now has unsent bytes over its cap.
    assert_eq!(
        error_code(&h.text(a.conn, &message(&b.id, None)), a.conn),
        "peer_busy"
    );
}

#[test]
fn stats_track_connections_and_queues() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    h.open(3);
    h.befriend(&a, &b);
    h.closed(b.conn);
    h.text(a.conn, &message(&b.id, Some("s")));
    let stats = h.router.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.sessions, 2);
    assert_eq!(stats.sessions_resuming, 1);
    assert_eq!(stats.queued_frames, 1);
    assert!(stats.queued_bytes > PAYLOAD.len());
    assert_eq!(stats.messages_routed, 1);
}
