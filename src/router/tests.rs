//! Every message flow of the core, driven through the public API with a seeded entropy source.

use serde_json::{Value, json};

use super::*;

const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\\n\\nxsBNBGabc\\u003d\\n-----END PGP PUBLIC KEY BLOCK-----";
const PAYLOAD: &str = "-----BEGIN PGP MESSAGE-----\\n\\nwcBMA\\u002b\\n-----END PGP MESSAGE-----";

struct Harness {
    router: Router<SeededEntropy>,
    /// Every frame counts as unsent until a test says it was flushed.
    sink: Recorder,
    now: Now,
}

struct Session {
    conn: ConnId,
    id: String,
    token: String,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(RouterConfig::defaults())
    }

    fn with(config: RouterConfig) -> Harness {
        Harness {
            router: Router::new(config, SeededEntropy(0x2545_F491_4F6C_DD1D)),
            sink: Recorder::default(),
            now: Now {
                mono_ms: 1_000_000,
                unix_ms: 1_795_000_000_000,
            },
        }
    }

    fn checked(&self, actions: Vec<Action>) -> Vec<Action> {
        if let Err(broken) = self.router.check_invariants() {
            panic!("invariant broken: {broken}");
        }
        actions
    }

    fn open(&mut self, conn: ConnId) {
        self.router.open(conn, self.now);
    }

    fn text(&mut self, conn: ConnId, text: &str) -> Vec<Action> {
        self.router.text(conn, text, self.now, &mut self.sink);
        let actions = self.sink.take();
        self.checked(actions)
    }

    fn json(&mut self, conn: ConnId, value: Value) -> Vec<Action> {
        self.text(conn, &value.to_string())
    }

    /// The loop dropped `conn`'s socket, and its backlog with it.
    fn closed(&mut self, conn: ConnId) -> Vec<Action> {
        self.sink.backlogs.forget(conn);
        self.router.closed(conn, self.now, &mut self.sink);
        let actions = self.sink.take();
        self.checked(actions)
    }

    fn advance(&mut self, ms: u64) {
        self.now.mono_ms += ms;
        self.now.unix_ms += ms;
    }

    fn tick(&mut self) -> Vec<Action> {
        self.router.tick(self.now, &mut self.sink);
        let actions = self.sink.take();
        self.checked(actions)
    }

    fn connect(&mut self, conn: ConnId) -> Session {
        self.open(conn);
        let actions = self.json(conn, json!({"type":"CONNECT"}));
        let reply = only_frame_to(&actions, conn);
        assert_eq!(reply["type"], "CONNECT");
        assert_eq!(reply["resumed"], false);
        Session {
            conn,
            id: reply["id"].as_str().unwrap_or_default().to_owned(),
            token: reply["token"].as_str().unwrap_or_default().to_owned(),
        }
    }

    fn resume(&mut self, conn: ConnId, session: &mut Session) -> Vec<Action> {
        self.open(conn);
        let actions = self.json(
            conn,
            json!({"type":"CONNECT","resume":{"id":session.id,"token":session.token}}),
        );
        let reply = frames_to(&actions, conn)
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
        assert_eq!(reply["type"], "CONNECT");
        assert_eq!(reply["resumed"], true, "{reply}");
        assert_eq!(reply["id"], session.id.as_str());
        session.token = reply["token"].as_str().unwrap_or_default().to_owned();
        session.conn = conn;
        actions
    }

    /// Makes `a` and `b` friends through the real handshake.
    fn befriend(&mut self, a: &Session, b: &Session) {
        // Small unsent caps in some tests must not turn the handshake into peer_busy.
        self.sink.flushed(b.conn, 0);
        self.text(a.conn, &friend_request(&b.id, None));
        self.sink.flushed(a.conn, 0);
        let actions = self.text(b.conn, &friend_accept(&a.id, None));
        assert_eq!(only_frame_to(&actions, a.conn)["type"], "FRIEND_ACCEPT");
    }
}

fn friend_request(to: &str, reference: Option<&str>) -> String {
    with_ref(
        format!(r#"{{"type":"FRIEND_REQUEST","to":"{to}","public_key":"{KEY}""#),
        reference,
    )
}

fn friend_accept(to: &str, reference: Option<&str>) -> String {
    with_ref(
        format!(r#"{{"type":"FRIEND_ACCEPT","to":"{to}","public_key":"{KEY}""#),
        reference,
    )
}

fn message(to: &str, reference: Option<&str>) -> String {
    with_ref(
        format!(r#"{{"type":"MESSAGE","to":"{to}","payload":"{PAYLOAD}""#),
        reference,
    )
}

fn with_ref(mut head: String, reference: Option<&str>) -> String {
    if let Some(reference) = reference {
        head.push_str(&format!(r#","ref":"{reference}""#));
    }
    head.push('}');
    head
}

fn frames_to(actions: &[Action], conn: ConnId) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send { conn: to, frame } if *to == conn => serde_json::from_str(frame).ok(),
            _ => None,
        })
        .collect()
}

fn only_frame_to(actions: &[Action], conn: ConnId) -> Value {
    let frames = frames_to(actions, conn);
    assert_eq!(
        frames.len(),
        1,
        "expected one frame to {conn}, got {frames:?}"
    );
    frames.into_iter().next().unwrap_or(Value::Null)
}

fn error_code(actions: &[Action], conn: ConnId) -> String {
    let frame = only_frame_to(actions, conn);
    assert_eq!(frame["type"], "ERROR", "{frame}");
    frame["code"].as_str().unwrap_or_default().to_owned()
}

fn closes(actions: &[Action]) -> Vec<(ConnId, u16)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Close { conn, code, .. } => Some((*conn, *code)),
            _ => None,
        })
        .collect()
}

/// An ID no session has (IDs come from the seeded generator, which never yields all zeros).
const NOBODY: &str = "000000";

// ---------------------------------------------------------------------------------------------
// Before CONNECT
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Friendship
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// MESSAGE
// ---------------------------------------------------------------------------------------------

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

/// Two friends on a router that refuses a recipient with more than 300 bytes unsent, and no rate
/// limit.
fn friends_with_a_300_byte_unsent_cap() -> (Harness, Session, Session) {
    let mut h = Harness::with(RouterConfig {
        max_unsent_bytes: 300,
        rate_messages_per_sec: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    (h, a, b)
}

#[test]
fn peer_busy_via_unsent_bytes_until_flushed() {
    let (mut h, a, b) = friends_with_a_300_byte_unsent_cap();
    h.sink.flushed(b.conn, 0);
    let mut delivered = 0;
    loop {
        let actions = h.text(a.conn, &message(&b.id, Some("m")));
        if !frames_to(&actions, b.conn).is_empty() {
            delivered += 1;
            continue;
        }
        let refusal = only_frame_to(&actions, a.conn);
        assert_eq!(refusal["code"], "peer_busy");
        assert_eq!(refusal["ref"], "m");
        break;
    }
    // Each forwarded frame is ~140 bytes: delivered while unsent <= 300, i.e. three of them.
    assert_eq!(delivered, 3);
    h.sink.flushed(b.conn, 0);
    assert_eq!(
        frames_to(&h.text(a.conn, &message(&b.id, None)), b.conn).len(),
        1
    );
}

#[test]
fn a_partial_flush_counts_only_what_the_socket_did_not_take() {
    let (mut h, a, b) = friends_with_a_300_byte_unsent_cap();
    let forwarded = |h: &mut Harness| {
        let actions = h.text(a.conn, &message(&b.id, None));
        frames_to(&actions, b.conn).len()
    };
    // Over the cap until the loop reports how much is really left.
    h.sink.flushed(b.conn, 301);
    assert_eq!(
        forwarded(&mut h),
        0,
        "301 bytes unsent is over a 300-byte cap"
    );
    // The socket took most of it: 100 bytes left, so the peer is not busy.
    h.sink.flushed(b.conn, 100);
    assert_eq!(forwarded(&mut h), 1);
    // Each frame is ~140 bytes: at ~240 one more is taken (the check comes before the frame),
    // at ~380 the peer is busy.
    assert_eq!(forwarded(&mut h), 1);
    assert_eq!(forwarded(&mut h), 0);
}

/// Messages from `a` to `to` until one is refused; returns how many were forwarded or queued.
/// Without `ref`: no ACKs, so only the forwarded or queued frames count toward the cap.
fn send_until_refused(h: &mut Harness, a: &Session, to: &Session) -> usize {
    for sent in 0..100 {
        let actions = h.text(a.conn, &message(&to.id, None));
        let reply = frames_to(&actions, a.conn);
        if let Some(refusal) = reply.iter().find(|frame| frame["type"] == "ERROR") {
            assert_eq!(refusal["code"], "peer_busy");
            return sent;
        }
    }
    panic!("100 messages and no refusal");
}

/// A router whose per-recipient caps are 1,600 bytes (100 while over budget) and whose budget for
/// all output together is 1,000 bytes; `a` is friends with `b` and `c`, and nothing is unsent.
fn friends_on_a_1000_byte_budget() -> (Harness, Session, Session, Session) {
    let mut h = Harness::with(RouterConfig {
        max_unsent_bytes: 1_600,
        max_queue_bytes: 1_600,
        max_buffered_bytes: 1_000,
        rate_messages_per_sec: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let b = h.connect(2);
    let c = h.connect(3);
    h.befriend(&a, &b);
    h.befriend(&a, &c);
    for conn in [a.conn, b.conn, c.conn] {
        h.sink.flushed(conn, 0);
    }
    (h, a, b, c)
}

#[test]
fn over_the_budget_only_recipients_that_are_behind_are_refused() {
    let (mut h, a, b, c) = friends_on_a_1000_byte_budget();
    // b never reads: it takes messages (~140 bytes each) until all output passes 1,000 bytes,
    // then its cap is 100 bytes and it is refused, long before its own 1,600.
    let forwarded = send_until_refused(&mut h, &a, &b);
    h.sink.flushed(a.conn, 0);
    let unsent = h.sink.backlogs.total();
    let frame_len = unsent / forwarded;
    assert!(
        unsent > 1_000 && unsent - frame_len <= 1_000,
        "{forwarded} frames, {unsent} bytes"
    );
    // c keeps up: it still gets a message, and is refused only while that one is unsent.
    let to_c = |h: &mut Harness| frames_to(&h.text(a.conn, &message(&c.id, None)), c.conn).len();
    assert_eq!(to_c(&mut h), 1);
    assert_eq!(to_c(&mut h), 0);
    h.sink.flushed(c.conn, 0);
    h.sink.flushed(a.conn, 0);
    assert_eq!(to_c(&mut h), 1);
    // A friend request to a session with nothing unsent goes through too.
    let d = h.connect(4);
    h.sink.flushed(d.conn, 0);
    let actions = h.text(a.conn, &friend_request(&d.id, Some("f")));
    assert_eq!(only_frame_to(&actions, d.conn)["type"], "FRIEND_REQUEST");
    // Once every socket took its output, b gets as much as at first again.
    for conn in [a.conn, b.conn, c.conn, d.conn] {
        h.sink.flushed(conn, 0);
    }
    assert_eq!(send_until_refused(&mut h, &a, &b), forwarded);
}

#[test]
fn resume_queues_count_toward_the_budget_and_shrink_with_it() {
    let (mut h, a, b, c) = friends_on_a_1000_byte_budget();
    h.closed(b.conn);
    h.sink.flushed(a.conn, 0);
    // b waits to resume: its queue takes messages until all output passes 1,000 bytes.
    send_until_refused(&mut h, &a, &b);
    let queued = h.router.stats().queued_bytes;
    assert!((1_000..1_600).contains(&queued), "{queued} bytes queued");
    // c, also away, may queue only 100 bytes now: one message, then peer_busy.
    h.closed(c.conn);
    h.sink.flushed(a.conn, 0);
    assert_eq!(send_until_refused(&mut h, &a, &c), 1);
}

#[test]
fn peer_busy_does_not_count_toward_the_error_flood() {
    let mut h = Harness::with(RouterConfig {
        max_unsent_bytes: 0,
        rate_messages_per_sec: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    for _ in 0..300 {
        let actions = h.text(a.conn, &message(&b.id, None));
        assert_eq!(error_code(&actions, a.conn), "peer_busy");
        assert!(closes(&actions).is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Resume window
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// DISCONNECT, rate limits, error flood
// ---------------------------------------------------------------------------------------------

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

fn addr(text: &str) -> ClientAddr {
    ClientAddr::new(text.parse().expect("a test address"))
}

mod request_bounds;
