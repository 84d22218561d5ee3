//! Before CONNECT, CONNECT (new sessions, IDs and tokens, the server's and one address's
//! limits) and DISCONNECT.

use super::*;

#[test]
fn ping_is_answered_before_connect_with_its_ref() {
    let mut h = Harness::new();
    h.open(1);
    assert_eq!(
        only_frame_to(&h.text(1, r#"{"type":"PING"}"#), 1),
        json!({"type":"PONG"})
    );
    assert_eq!(
        only_frame_to(&h.text(1, r#"{"type":"PING","ref":"p1"}"#), 1),
        json!({"type":"PONG","ref":"p1"})
    );
    assert!(!h.router.is_connected(1));
}

#[test]
fn everything_but_connect_and_ping_is_not_connected_before_connect() {
    let mut h = Harness::new();
    h.open(1);
    for text in [
        message("K7Q2ZD", Some("r")),
        friend_request("K7Q2ZD", None),
        r#"{"type":"DISCONNECT"}"#.to_owned(),
        r#"{"type":"ACK","ref":"r"}"#.to_owned(),
        r#"{"type":"PONG"}"#.to_owned(),
        r#"{"type":"WHATEVER"}"#.to_owned(),
        r#"{"type":"FRIEND_REMOVE","to":"not an id"}"#.to_owned(),
    ] {
        let actions = h.text(1, &text);
        assert_eq!(error_code(&actions, 1), "not_connected", "{text}");
    }
    // bad_json and bad_request come first.
    assert_eq!(error_code(&h.text(1, "nope"), 1), "bad_json");
    assert_eq!(
        error_code(&h.text(1, r#"{"type":"MESSAGE"}"#), 1),
        "bad_request"
    );
    let mut out = Recorder::default();
    h.router.binary(1, h.now, &mut out);
    assert_eq!(error_code(out.actions(), 1), "bad_json");
}

#[test]
fn errors_echo_a_valid_ref_exactly() {
    let mut h = Harness::new();
    h.open(1);
    let actions = h.text(1, r#"{"type":"DISCONNECT","ref":"x\"\u00e9"}"#);
    let expected = r#","ref":"x\"\u00e9"}"#;
    assert!(
        matches!(&actions[..], [Action::Send { frame, .. }] if frame.ends_with(expected)),
        "{actions:?}"
    );
}

#[test]
fn events_for_unknown_connections_are_ignored() {
    let mut h = Harness::new();
    assert!(h.text(9, r#"{"type":"PING"}"#).is_empty());
    assert!(h.closed(9).is_empty());
    let mut out = Recorder::default();
    h.router.binary(9, h.now, &mut out);
    h.sink.flushed(9, 0);
    assert!(out.actions().is_empty());
}

#[test]
fn connect_creates_a_session_with_id_token_and_limits() {
    let mut h = Harness::new();
    h.open(1);
    let reply = only_frame_to(&h.json(1, json!({"type":"CONNECT","ref":"ignored"})), 1);
    let id = reply["id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 6);
    assert!(id.bytes().all(|b| crate::id::ALPHABET.contains(&b)));
    assert_eq!(reply["token"].as_str().map(str::len), Some(43));
    assert_eq!(reply["friends"], json!([]));
    assert_eq!(reply["limits"], json!({"max_message_bytes": 65536}));
    assert!(reply.get("ref").is_none());
    assert!(h.router.is_connected(1));
    assert_eq!(h.router.stats().sessions, 1);

    let actions = h.json(1, json!({"type":"CONNECT"}));
    assert_eq!(error_code(&actions, 1), "already_connected");
}

#[test]
fn sessions_get_distinct_ids_and_tokens() {
    let mut h = Harness::new();
    let sessions: Vec<Session> = (1..=50).map(|conn| h.connect(conn)).collect();
    let ids: std::collections::HashSet<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    let tokens: std::collections::HashSet<&str> =
        sessions.iter().map(|s| s.token.as_str()).collect();
    assert_eq!(ids.len(), 50);
    assert_eq!(tokens.len(), 50);
}

#[test]
fn server_types_sent_by_a_client_are_unknown_type() {
    let mut h = Harness::new();
    let a = h.connect(1);
    for kind in [
        "ACK",
        "ERROR",
        "PONG",
        "PRESENCE",
        "UNDELIVERED",
        "HELLO",
        "message",
    ] {
        let actions = h.json(a.conn, json!({"type": kind, "to": "nonsense"}));
        assert_eq!(error_code(&actions, a.conn), "unknown_type", "{kind}");
    }
}

#[test]
fn server_full_answers_then_closes_with_1013() {
    let mut h = Harness::with(RouterConfig {
        max_sessions: 2,
        ..RouterConfig::defaults()
    });
    let mut a = h.connect(1);
    h.connect(2);
    h.open(3);
    let actions = h.json(3, json!({"type":"CONNECT","ref":"c"}));
    assert_eq!(error_code(&actions, 3), "server_full");
    assert_eq!(only_frame_to(&actions, 3)["ref"], "c");
    assert_eq!(closes(&actions), vec![(3, close_code::SERVER_FULL)]);
    assert!(h.closed(3).is_empty());
    // A session in its resume window still counts...
    h.closed(1);
    h.open(4);
    assert_eq!(
        error_code(&h.json(4, json!({"type":"CONNECT"})), 4),
        "server_full"
    );
    // ...but its own resume is never refused.
    h.resume(5, &mut a);
    assert_eq!(h.router.stats().sessions, 2);
}

#[test]
fn one_peer_cannot_fill_the_server_with_sessions_in_their_resume_window() {
    let mut h = Harness::with(RouterConfig {
        max_sessions_per_peer: 2,
        ..RouterConfig::defaults()
    });
    let peer_a = addr("192.0.2.7");
    let mut first = None;
    // Connect and drop twice: both sessions wait in their resume window, still counted.
    for conn in 1..=2 {
        h.router.open_from(conn, peer_a, h.now);
        let reply = only_frame_to(&h.json(conn, json!({"type":"CONNECT"})), conn);
        assert_eq!(reply["type"], "CONNECT");
        first.get_or_insert(reply);
        h.closed(conn);
    }
    h.router.open_from(3, peer_a, h.now);
    let actions = h.json(3, json!({"type":"CONNECT"}));
    assert_eq!(error_code(&actions, 3), "server_full");
    assert_eq!(closes(&actions), vec![(3, close_code::SERVER_FULL)]);
    // Another peer is not affected.
    h.router.open_from(4, addr("192.0.2.8"), h.now);
    assert_eq!(
        only_frame_to(&h.json(4, json!({"type":"CONNECT"})), 4)["type"],
        "CONNECT"
    );
    // Resuming is never refused, from anywhere; it stays counted for its creator.
    let first = first.unwrap();
    h.router.open_from(5, addr("192.0.2.9"), h.now);
    let resumed = only_frame_to(
        &h.json(
            5,
            json!({"type":"CONNECT","resume":{"id":first["id"],"token":first["token"]}}),
        ),
        5,
    );
    assert_eq!(resumed["resumed"], true);
    h.router.open_from(6, peer_a, h.now);
    assert_eq!(
        error_code(&h.json(6, json!({"type":"CONNECT"})), 6),
        "server_full"
    );
    // Once a session ends, its peer may create one again.
    h.json(5, json!({"type":"DISCONNECT"}));
    h.router.open_from(10, peer_a, h.now);
    assert_eq!(
        only_frame_to(&h.json(10, json!({"type":"CONNECT"})), 10)["type"],
        "CONNECT"
    );
}

#[test]
fn resume_with_bad_id_is_bad_id_and_a_wrong_token_gets_a_new_session() {
    let mut h = Harness::new();
    let a = h.connect(1);
    h.open(2);
    let actions = h.json(
        2,
        json!({"type":"CONNECT","resume":{"id":"NOT-AN-ID","token":a.token}}),
    );
    assert_eq!(error_code(&actions, 2), "bad_id");
    assert!(!h.router.is_connected(2));

    let mut wrong = a.token.clone().into_bytes();
    wrong[42] = if wrong[42] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap_or_default();
    let actions = h.json(
        2,
        json!({"type":"CONNECT","resume":{"id":a.id.to_lowercase(),"token":wrong}}),
    );
    let reply = only_frame_to(&actions, 2);
    assert_eq!(reply["resumed"], false);
    assert_ne!(reply["id"], a.id.as_str());
    assert!(
        h.router.is_connected(1),
        "a failed resume must not touch the session"
    );
}

/// Hands out a fixed byte stream, to force ID collisions.
struct Scripted(std::collections::VecDeque<u8>);

impl Entropy for Scripted {
    fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            *byte = self.0.pop_front().unwrap_or(0x55);
        }
    }
}

#[test]
fn an_id_colliding_with_a_live_session_is_drawn_again() {
    let mut stream = Vec::new();
    stream.extend([0; 16]); // the key the handle tables hash with, drawn first
    stream.extend([7, 0, 0, 0]);
    stream.extend([1; 32]);
    stream.extend([7, 0, 0, 0xC0]); // the same 30 bits once masked
    stream.extend([9, 0, 0, 0]);
    stream.extend([2; 32]);
    let mut router = Router::new(RouterConfig::defaults(), Scripted(stream.into()));
    let now = Now {
        mono_ms: 0,
        unix_ms: 0,
    };
    let mut ids = Vec::new();
    for conn in [1, 2] {
        router.open(conn, now);
        let mut out = Recorder::default();
        router.text(conn, r#"{"type":"CONNECT"}"#, now, &mut out);
        ids.push(
            only_frame_to(out.actions(), conn)["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(ids, ["000007", "000009"]);
    assert!(router.check_invariants().is_ok());
}

#[test]
fn disconnect_acks_closes_1000_and_ends_the_session() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    let c = h.connect(3);
    h.befriend(&a, &b);
    h.text(a.conn, &friend_request(&c.id, None));
    let actions = h.json(a.conn, json!({"type":"DISCONNECT","ref":"bye"}));
    assert_eq!(
        actions.first(),
        Some(&Action::Send {
            conn: a.conn,
            frame: r#"{"type":"ACK","ref":"bye"}"#.to_owned()
        })
    );
    assert_eq!(closes(&actions), vec![(a.conn, close_code::DISCONNECT)]);
    assert!(matches!(actions.last(), Some(Action::Close { .. })));
    assert_eq!(
        only_frame_to(&actions, b.conn),
        json!({"type":"DISCONNECT","id":a.id})
    );
    assert!(frames_to(&actions, c.conn).is_empty());
    assert!(h.closed(a.conn).is_empty());
    assert_eq!(h.router.stats().sessions, 2);
    assert_eq!(h.router.stats().sessions_resuming, 0);
    // No ref: no ACK, still the close.
    let actions = h.json(b.conn, json!({"type":"DISCONNECT"}));
    assert_eq!(
        actions,
        vec![Action::Close {
            conn: b.conn,
            code: 1000,
            reason: "disconnected"
        }]
    );
}
