//! The resume window: queueing while away, resuming in order, takeover, expiry with
//! UNDELIVERED and DISCONNECT, the queue caps, and the timer heap.

use super::*;

#[test]
fn drop_queue_and_resume_delivers_in_order() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let mut b = h.connect(2);
    let c = h.connect(3);
    h.befriend(&a, &b);
    h.text(b.conn, &friend_request(&c.id, None));

    let actions = h.closed(b.conn);
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"PRESENCE","id":b.id,"online":false})
    );
    assert!(
        frames_to(&actions, c.conn).is_empty(),
        "c is no friend of b"
    );
    assert!(!h.router.is_connected(b.conn));
    assert_eq!(h.router.stats().sessions_resuming, 1);
    assert_eq!(h.router.next_deadline_ms(), Some(h.now.mono_ms + 30_000));

    let first = h.text(a.conn, &message(&b.id, Some("q1")));
    assert_eq!(
        first,
        vec![Action::Send {
            conn: a.conn,
            frame: r#"{"type":"ACK","ref":"q1","queued":true}"#.to_owned()
        }]
    );
    h.advance(5);
    assert!(h.text(a.conn, &message(&b.id, None)).is_empty());
    let declined = h.json(c.conn, json!({"type":"FRIEND_DECLINE","to":b.id,"ref":"d"}));
    assert_eq!(
        only_frame_to(&declined, c.conn),
        json!({"type":"ACK","ref":"d","queued":true})
    );
    let removal = h.json(a.conn, json!({"type":"FRIEND_REMOVE","to":b.id,"ref":"rm"}));
    assert_eq!(
        only_frame_to(&removal, a.conn),
        json!({"type":"ACK","ref":"rm","queued":true})
    );
    assert_eq!(h.router.stats().queued_frames, 4);

    h.advance(10_000);
    let actions = h.resume(7, &mut b);
    let to_b = frames_to(&actions, 7);
    assert_eq!(
        to_b[0]["friends"],
        json!([]),
        "a removed b while it was away"
    );
    let types: Vec<&str> = to_b
        .iter()
        .skip(1)
        .map(|f| f["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        ["MESSAGE", "MESSAGE", "FRIEND_DECLINE", "FRIEND_REMOVE"]
    );
    assert_eq!(
        to_b[1]["ts"].as_u64().map(|ts| ts + 5),
        to_b[2]["ts"].as_u64()
    );
    assert!(
        frames_to(&actions, a.conn).is_empty(),
        "no longer friends: no PRESENCE"
    );
    assert_eq!(h.router.stats().queued_frames, 0);
    assert_eq!(h.router.stats().queued_bytes, 0);
    assert_eq!(h.router.stats().sessions_resuming, 0);
    assert_eq!(h.router.next_deadline_ms(), None);
}

#[test]
fn resume_reports_friends_online_and_tells_them() {
    let mut h = Harness::new();
    let mut a = h.connect(1);
    let b = h.connect(2);
    let c = h.connect(3);
    h.befriend(&a, &b);
    h.befriend(&a, &c);
    h.closed(c.conn);
    h.closed(a.conn);
    let actions = h.resume(4, &mut a);
    let reply = &frames_to(&actions, 4)[0];
    let mut friends: Vec<(String, bool)> = reply["friends"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|f| {
                    (
                        f["id"].as_str().unwrap_or("").to_owned(),
                        f["online"].as_bool().unwrap_or(true),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    friends.sort();
    let mut expected = vec![(b.id.clone(), true), (c.id.clone(), false)];
    expected.sort();
    assert_eq!(friends, expected);
    assert_eq!(
        only_frame_to(&actions, b.conn),
        json!({"type":"PRESENCE","id":a.id,"online":true})
    );
    // c is in its window: PRESENCE is dropped, not queued.
    assert_eq!(h.router.stats().queued_frames, 0);
}

#[test]
fn tokens_are_single_use() {
    let mut h = Harness::new();
    let mut a = h.connect(1);
    let old_token = a.token.clone();
    h.closed(1);
    h.resume(2, &mut a);
    assert_ne!(a.token, old_token);
    h.open(3);
    let actions = h.json(
        3,
        json!({"type":"CONNECT","resume":{"id":a.id,"token":old_token}}),
    );
    assert_eq!(only_frame_to(&actions, 3)["resumed"], false);
}

#[test]
fn takeover_closes_the_old_connection_with_4001_and_no_presence() {
    let mut h = Harness::new();
    let mut a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    let actions = h.resume(3, &mut a);
    assert_eq!(closes(&actions), vec![(1, close_code::TAKEN_OVER)]);
    assert!(frames_to(&actions, b.conn).is_empty());
    let close_position = actions
        .iter()
        .position(|x| matches!(x, Action::Close { .. }));
    assert_eq!(close_position, Some(0));
    // The old connection is forgotten: its late close is a no-op and the session stays up.
    assert!(h.closed(1).is_empty());
    assert!(h.router.is_connected(3));
    assert_eq!(
        frames_to(&h.text(b.conn, &message(&a.id, None)), 3).len(),
        1
    );
}

#[test]
fn window_expiry_ends_the_session_with_undelivered_and_disconnect() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    let c = h.connect(3);
    h.befriend(&a, &b);
    h.befriend(&c, &b);
    let d = h.connect(4);
    h.text(b.conn, &friend_request(&d.id, None));
    h.closed(b.conn);
    h.text(a.conn, &message(&b.id, Some("a1")));
    h.text(a.conn, &message(&b.id, None));
    h.text(c.conn, &message(&b.id, Some("c1")));
    h.text(a.conn, &message(&b.id, Some("a2")));

    h.advance(29_999);
    assert!(h.tick().is_empty());
    h.advance(1);
    let actions = h.tick();
    let to_a = frames_to(&actions, a.conn);
    assert_eq!(
        to_a,
        vec![
            json!({"type":"UNDELIVERED","to":b.id,"ref":"a1"}),
            json!({"type":"UNDELIVERED","to":b.id,"ref":"a2"}),
            json!({"type":"DISCONNECT","id":b.id}),
        ]
    );
    assert_eq!(
        frames_to(&actions, c.conn),
        vec![
            json!({"type":"UNDELIVERED","to":b.id,"ref":"c1"}),
            json!({"type":"DISCONNECT","id":b.id})
        ]
    );
    // Pending requests vanish silently.
    assert!(frames_to(&actions, d.conn).is_empty());
    assert_eq!(
        error_code(&h.text(d.conn, &friend_accept(&b.id, None)), d.conn),
        "no_pending_request"
    );
    assert_eq!(
        error_code(&h.text(a.conn, &message(&b.id, None)), a.conn),
        "not_friends"
    );
    assert_eq!(h.router.stats().sessions, 3);
    assert_eq!(h.router.next_deadline_ms(), None);
}

#[test]
fn undelivered_is_queued_for_a_sender_in_its_own_window() {
    let mut h = Harness::new();
    let mut a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    h.closed(b.conn);
    h.text(a.conn, &message(&b.id, Some("late")));
    h.advance(20_000);
    h.closed(a.conn);
    h.advance(10_000);
    assert!(
        h.tick().is_empty(),
        "a is away: everything for it is queued"
    );
    let actions = h.resume(5, &mut a);
    let to_a = frames_to(&actions, 5);
    assert_eq!(
        to_a[1],
        json!({"type":"UNDELIVERED","to":b.id,"ref":"late"})
    );
    assert_eq!(to_a[2], json!({"type":"DISCONNECT","id":b.id}));
}

#[test]
fn a_window_resumed_then_dropped_again_expires_on_the_new_deadline() {
    let mut h = Harness::new();
    let mut a = h.connect(1);
    h.closed(1);
    h.advance(20_000);
    h.resume(2, &mut a);
    h.closed(2);
    h.advance(15_000);
    // The first window's deadline has passed, but it is stale.
    h.tick();
    assert_eq!(h.router.stats().sessions, 1);
    assert_eq!(h.router.next_deadline_ms(), Some(h.now.mono_ms + 15_000));
    h.advance(15_000);
    h.tick();
    assert_eq!(h.router.stats().sessions, 0);
}

#[test]
fn queue_caps_refuse_messages_but_not_control_frames() {
    let mut h = Harness::with(RouterConfig {
        max_queue_len: 2,
        rate_messages_per_sec: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    h.closed(b.conn);
    for n in 0..3 {
        let actions = h.text(a.conn, &message(&b.id, Some("q")));
        assert_eq!(
            only_frame_to(&actions, a.conn)["queued"],
            true,
            "message {n}"
        );
    }
    assert_eq!(
        error_code(&h.text(a.conn, &message(&b.id, Some("q"))), a.conn),
        "peer_busy"
    );
    // A removal is always queued.
    let actions = h.json(a.conn, json!({"type":"FRIEND_REMOVE","to":b.id,"ref":"rm"}));
    assert_eq!(only_frame_to(&actions, a.conn)["queued"], true);
    assert_eq!(h.router.stats().queued_frames, 4);

    let mut h = Harness::with(RouterConfig {
        max_queue_bytes: 200,
        rate_messages_per_sec: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    h.closed(b.conn);
    h.text(a.conn, &message(&b.id, None));
    h.text(a.conn, &message(&b.id, None));
    assert_eq!(
        error_code(&h.text(a.conn, &message(&b.id, None)), a.conn),
        "peer_busy"
    );
    assert!(h.router.stats().queued_bytes > 200);
}

#[test]
fn grace_zero_ends_sessions_at_once_and_never_resumes() {
    let mut h = Harness::with(RouterConfig {
        resume_grace_ms: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    let actions = h.closed(a.conn);
    assert_eq!(
        only_frame_to(&actions, b.conn),
        json!({"type":"DISCONNECT","id":a.id})
    );
    assert_eq!(h.router.stats().sessions, 1);
    assert_eq!(h.router.next_deadline_ms(), None);
    // Even a still-connected session cannot be taken over.
    h.open(3);
    let actions = h.json(
        3,
        json!({"type":"CONNECT","resume":{"id":b.id,"token":b.token}}),
    );
    assert_eq!(only_frame_to(&actions, 3)["resumed"], false);
    assert!(closes(&actions).is_empty());
}

#[test]
fn repeated_drops_and_resumes_keep_the_timer_heap_small() {
    let mut h = Harness::new();
    let mut a = h.connect(1);
    // b's window opens first, so its live deadline stays on top and a's stale ones pile up
    // behind it until compaction.
    let b = h.connect(2);
    h.closed(b.conn);
    let mut largest = 0;
    for round in 0..1_000 {
        h.closed(a.conn);
        h.resume(10 + round, &mut a);
        largest = largest.max(h.router.timers.len());
    }
    // Two sessions in the window at most: 2 × 2 + 32.
    assert!(largest <= 36, "{largest} timer entries");
    assert!(
        largest > 2,
        "stale entries never accumulated: compaction untested"
    );
    assert_eq!(h.router.next_deadline_ms(), Some(h.now.mono_ms + 30_000));
}
