//! LISTEN, UNLISTEN, HANDLE_TAKEN and MESSAGE to a connected listener (PROTOCOL.md §10).

use super::*;

pub(super) fn handle(n: u8) -> String {
    protocol::Handle::from_seed(&[n; 43]).as_str().to_owned()
}

pub(super) fn listen(handles: &[String], reference: Option<&str>) -> String {
    let mut frame = json!({"type":"LISTEN","handles":handles});
    if let Some(reference) = reference {
        frame["ref"] = json!(reference);
    }
    frame.to_string()
}

pub(super) fn to_handle(handle: &str, reference: Option<&str>) -> String {
    with_ref(
        format!(r#"{{"type":"MESSAGE","handle":"{handle}","payload":"{PAYLOAD}""#),
        reference,
    )
}

impl Harness {
    /// A new version-2 session on `conn`.
    pub(super) fn connect_v2(&mut self, conn: ConnId) -> Session {
        self.connect_v2_from(conn, ClientAddr::UNSPECIFIED)
    }

    pub(super) fn connect_v2_from(&mut self, conn: ConnId, peer: ClientAddr) -> Session {
        self.router.open_from(conn, peer, self.now);
        let actions = self.json(conn, json!({"type":"CONNECT","version":2}));
        let reply = only_frame_to(&actions, conn);
        assert_eq!(reply["version"], 2);
        Session {
            conn,
            id: reply["id"].as_str().unwrap_or_default().to_owned(),
            token: reply["token"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// LISTEN, expecting LISTENING: (handles, waiting).
    pub(super) fn listen_ok(&mut self, conn: ConnId, handles: &[String]) -> (u64, u64) {
        let actions = self.text(conn, &listen(handles, Some("l")));
        let reply = only_frame_to(&actions, conn);
        assert_eq!(reply["type"], "LISTENING", "{reply}");
        assert_eq!(reply["ref"], "l");
        (
            reply["handles"].as_u64().unwrap_or(u64::MAX),
            reply["waiting"].as_u64().unwrap_or(u64::MAX),
        )
    }
}

#[test]
fn listen_and_unlisten_answer_listening_with_counts() {
    let mut h = Harness::new();
    let a = h.connect_v2(1);
    assert_eq!(h.listen_ok(a.conn, &[handle(1), handle(2)]), (2, 0));
    // Already listened, and a repeat within the list: no change.
    assert_eq!(
        h.listen_ok(a.conn, &[handle(2), handle(3), handle(3)]),
        (3, 0)
    );
    let actions = h.json(
        a.conn,
        json!({"type":"UNLISTEN","handles":[handle(1), handle(9)],"ref":"u"}),
    );
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"LISTENING","handles":2,"waiting":0,"ref":"u"})
    );
    // Without a ref the answer still comes.
    let actions = h.text(a.conn, &listen(&[handle(4)], None));
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"LISTENING","handles":3,"waiting":0})
    );
    assert_eq!(h.router.stats().handles, 3);
}

#[test]
fn bad_lists_and_bad_handles_change_nothing() {
    let mut h = Harness::new();
    let a = h.connect_v2(1);
    h.listen_ok(a.conn, &[handle(1)]);
    let too_many: Vec<String> = (0..1025).map(|n| handle((n % 250) as u8)).collect();
    for frame in [
        json!({"type":"LISTEN"}),
        json!({"type":"LISTEN","handles":[]}),
        json!({"type":"LISTEN","handles":handle(2)}),
        json!({"type":"LISTEN","handles":[handle(2), 7]}),
        json!({"type":"LISTEN","handles":too_many}),
        json!({"type":"UNLISTEN","handles":null}),
    ] {
        let actions = h.json(a.conn, frame.clone());
        assert_eq!(error_code(&actions, a.conn), "bad_request", "{frame}");
    }
    for bad in [
        "short",
        &format!("{}=", &handle(2)[1..]),
        &format!("{}A", handle(2)),
    ] {
        let actions = h.json(a.conn, json!({"type":"LISTEN","handles":[handle(3), bad]}));
        assert_eq!(error_code(&actions, a.conn), "bad_handle", "{bad}");
        let actions = h.json(
            a.conn,
            json!({"type":"UNLISTEN","handles":[handle(1), bad]}),
        );
        assert_eq!(error_code(&actions, a.conn), "bad_handle", "{bad}");
    }
    assert_eq!(h.listen_ok(a.conn, &[handle(1)]), (1, 0));
}

#[test]
fn version_one_sessions_know_no_handle_frames() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    for frame in [
        listen(&[handle(1)], None),
        json!({"type":"UNLISTEN","handles":[handle(1)]}).to_string(),
        json!({"type":"FETCH"}).to_string(),
        // Its required fields are not looked at: the type is unknown to version 1.
        json!({"type":"LISTEN"}).to_string(),
    ] {
        assert_eq!(error_code(&h.text(a.conn, &frame), a.conn), "unknown_type");
    }
    // `handle` is an unknown field to version 1: without `to` the MESSAGE is bad_request ...
    let actions = h.text(a.conn, &to_handle(&handle(1), None));
    assert_eq!(error_code(&actions, a.conn), "bad_request");
    // ... and beside `to` it is ignored.
    let text = format!(
        r#"{{"type":"MESSAGE","to":"{}","handle":"{}","payload":"{PAYLOAD}"}}"#,
        b.id,
        handle(1)
    );
    let actions = h.text(a.conn, &text);
    assert_eq!(only_frame_to(&actions, b.conn)["from"], a.id.as_str());
    // Before CONNECT, every type is not_connected, as in version 1.
    h.open(9);
    let actions = h.text(9, &listen(&[handle(1)], None));
    assert_eq!(error_code(&actions, 9), "not_connected");
}

#[test]
fn a_version_two_message_names_to_or_handle_not_both() {
    let mut h = Harness::new();
    let a = h.connect_v2(1);
    let text = format!(
        r#"{{"type":"MESSAGE","to":"K7Q2ZD","handle":"{}","payload":"{PAYLOAD}"}}"#,
        handle(1)
    );
    assert_eq!(error_code(&h.text(a.conn, &text), a.conn), "bad_request");
    let actions = h.json(a.conn, json!({"type":"MESSAGE","payload":"x"}));
    assert_eq!(error_code(&actions, a.conn), "bad_request");
    let actions = h.json(a.conn, json!({"type":"MESSAGE","handle":7,"payload":"x"}));
    assert_eq!(error_code(&actions, a.conn), "bad_request");
    // bad_handle comes before not_encrypted; not_encrypted before anything about the handle.
    let actions = h.json(
        a.conn,
        json!({"type":"MESSAGE","handle":"nope","payload":"x"}),
    );
    assert_eq!(error_code(&actions, a.conn), "bad_handle");
    let actions = h.json(
        a.conn,
        json!({"type":"MESSAGE","handle":handle(1),"payload":"x"}),
    );
    assert_eq!(error_code(&actions, a.conn), "not_encrypted");
}

#[test]
fn a_message_to_a_connected_listener_is_forwarded_without_from() {
    let mut h = Harness::new();
    let a = h.connect_v2(1);
    let b = h.connect_v2(2);
    h.listen_ok(b.conn, &[handle(1)]);
    let actions = h.text(a.conn, &to_handle(&handle(1), Some("m1")));
    let forwarded = only_frame_to(&actions, b.conn);
    assert_eq!(forwarded["type"], "MESSAGE");
    assert_eq!(forwarded["handle"], handle(1));
    assert_eq!(forwarded["ts"], h.now.unix_ms);
    assert!(forwarded.get("from").is_none());
    assert!(
        forwarded["payload"]
            .as_str()
            .is_some_and(|p| p.starts_with("-----BEGIN PGP MESSAGE-----"))
    );
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"ACK","ref":"m1"})
    );
    // The payload is forwarded exactly as received, escapes included.
    let Some(Action::Send { frame, .. }) = actions
        .iter()
        .find(|a| matches!(a, Action::Send { conn: 2, .. }))
    else {
        panic!("no frame to b")
    };
    assert!(frame.contains(PAYLOAD));
    // A busy listener: peer_busy, nothing stored.
    let busy = RouterConfig {
        max_unsent_bytes: 10,
        ..RouterConfig::defaults()
    };
    let mut h = Harness::with(busy);
    let a = h.connect_v2(1);
    let b = h.connect_v2(2);
    h.listen_ok(b.conn, &[handle(1)]);
    h.text(a.conn, &to_handle(&handle(1), None));
    let actions = h.text(a.conn, &to_handle(&handle(1), Some("m2")));
    assert_eq!(error_code(&actions, a.conn), "peer_busy");
    assert_eq!(h.router.stats().mailbox_letters, 0);
}

#[test]
fn the_newest_listener_takes_a_handle_and_the_previous_one_is_told() {
    let mut h = Harness::new();
    let a = h.connect_v2(1);
    let b = h.connect_v2(2);
    let c = h.connect_v2(3);
    h.listen_ok(a.conn, &[handle(1), handle(2)]);
    let actions = h.text(b.conn, &listen(&[handle(1)], Some("l")));
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"HANDLE_TAKEN","handle":handle(1)})
    );
    assert_eq!(only_frame_to(&actions, b.conn)["handles"], 1);
    let actions = h.text(c.conn, &to_handle(&handle(1), None));
    assert_eq!(only_frame_to(&actions, b.conn)["handle"], handle(1));
    assert!(frames_to(&actions, a.conn).is_empty());
    // Taken while in the resume window: queued, delivered on resume.
    let mut b = b;
    h.closed(b.conn);
    let actions = h.text(a.conn, &listen(&[handle(1)], None));
    assert!(frames_to(&actions, b.conn).is_empty());
    h.open(4);
    let actions = h.json(
        4,
        json!({"type":"CONNECT","version":2,"resume":{"id":b.id,"token":b.token}}),
    );
    b.conn = 4;
    let frames = frames_to(&actions, b.conn);
    assert_eq!(
        frames.get(1),
        Some(&json!({"type":"HANDLE_TAKEN","handle":handle(1)}))
    );
}

#[test]
fn handles_last_through_the_window_and_go_with_the_session() {
    let mut h = Harness::new();
    let mut a = h.connect_v2(1);
    h.listen_ok(a.conn, &[handle(1), handle(2)]);
    h.closed(a.conn);
    assert_eq!(h.router.stats().handles, 2);
    h.open(5);
    h.json(
        5,
        json!({"type":"CONNECT","version":2,"resume":{"id":a.id,"token":a.token}}),
    );
    a.conn = 5;
    assert_eq!(h.listen_ok(a.conn, &[handle(1)]), (2, 0));
    h.json(a.conn, json!({"type":"DISCONNECT"}));
    assert_eq!(h.router.stats().handles, 0);
    // A version-1 client resuming a session leaves its handles behind.
    let mut b = h.connect_v2(6);
    h.listen_ok(b.conn, &[handle(3)]);
    h.closed(b.conn);
    h.resume(7, &mut b);
    assert_eq!(h.router.stats().handles, 0);
    // The window's end too.
    let c = h.connect_v2(8);
    h.listen_ok(c.conn, &[handle(4)]);
    h.closed(c.conn);
    h.advance(RouterConfig::defaults().resume_grace_ms);
    h.tick();
    assert_eq!(h.router.stats().handles, 0);
}

fn too_many(h: &mut Harness, conn: ConnId, handles: &[String]) {
    let actions = h.text(conn, &listen(handles, Some("x")));
    assert_eq!(error_code(&actions, conn), "too_many_handles");
}

#[test]
fn too_many_handles_per_session_and_server() {
    let mut h = Harness::with(RouterConfig {
        max_handles: 6,
        max_handles_per_session: 3,
        ..RouterConfig::defaults()
    });
    let a = h.connect_v2_from(1, addr("192.0.2.1"));
    let b = h.connect_v2_from(2, addr("192.0.2.1"));
    let c = h.connect_v2_from(3, addr("192.0.2.1"));
    let d = h.connect_v2_from(4, addr("198.51.100.1"));
    too_many(
        &mut h,
        a.conn,
        &[handle(1), handle(2), handle(3), handle(4)],
    );
    assert_eq!(h.router.stats().handles, 0, "nothing changed");
    h.listen_ok(a.conn, &[handle(1), handle(2), handle(3)]);
    h.listen_ok(b.conn, &[handle(4), handle(5), handle(6)]);
    // Full, and one block holds everything: its sessions get no more.
    too_many(&mut h, c.conn, &[handle(7)]);
    // Taking one within the block is fine.
    h.listen_ok(c.conn, &[handle(1)]);
    // Another block makes room for itself, down to its own share and no further.
    assert_eq!(
        h.listen_ok(d.conn, &[handle(7), handle(8), handle(9)]),
        (3, 0)
    );
    too_many(&mut h, d.conn, &[handle(10)]);
    // too_many_handles reports the server's state: it never floods.
    for _ in 0..150 {
        h.text(d.conn, &listen(&[handle(10)], None));
    }
    assert!(closes(&h.sink.take()).is_empty());
    assert_eq!(h.router.stats().handles, 6);
}

#[test]
fn addresses_that_fill_the_table_cannot_keep_another_out() {
    let mut h = Harness::with(RouterConfig {
        max_handles: 72,
        ..RouterConfig::defaults()
    });
    // Nine addresses take every handle there is.
    let flooders: Vec<Session> = (0..9u8)
        .map(|n| h.connect_v2_from(10 + u64::from(n), addr(&format!("198.51.100.{}", n + 1))))
        .collect();
    for (n, flooder) in flooders.iter().enumerate() {
        let theirs: Vec<String> = (0..8).map(|k| handle(n as u8 * 8 + k)).collect();
        assert_eq!(h.listen_ok(flooder.conn, &theirs), (8, 0));
    }
    assert_eq!(h.router.stats().handles, 72);
    too_many(&mut h, flooders[0].conn, &[handle(200)]);
    // An honest address listens all the same: three flooding sessions give one handle each.
    let honest = h.connect_v2_from(1, addr("192.0.2.1"));
    let mine = [handle(250), handle(251), handle(252)];
    let actions = h.text(honest.conn, &listen(&mine, Some("l")));
    assert_eq!(only_frame_to(&actions, honest.conn)["handles"], 3);
    let mut dropped = Vec::new();
    for (n, flooder) in flooders.iter().enumerate() {
        for frame in frames_to(&actions, flooder.conn) {
            assert_eq!(frame["type"], "HANDLE_DROPPED", "{frame}");
            let handle = frame["handle"].as_str().unwrap_or_default().to_owned();
            assert!((0..8).any(|k| super::handles::handle(n as u8 * 8 + k) == handle));
            dropped.push(n);
        }
    }
    assert_eq!(
        dropped.len(),
        3,
        "one each from three flooders: {dropped:?}"
    );
    dropped.dedup();
    assert_eq!(dropped.len(), 3);
    assert_eq!(h.router.stats().handles, 72);
    // The flooders cannot take it back: each holds at least as many as the honest address.
    for flooder in &flooders {
        too_many(&mut h, flooder.conn, &[handle(201)]);
    }
    // And mail to the honest handles reaches the honest session.
    let actions = h.text(flooders[0].conn, &to_handle(&handle(250), None));
    assert_eq!(only_frame_to(&actions, honest.conn)["handle"], handle(250));
}

#[test]
fn listen_and_unlisten_take_message_tokens() {
    let mut h = Harness::with(RouterConfig {
        rate_messages_per_sec: 2,
        ..RouterConfig::defaults()
    });
    let a = h.connect_v2(1);
    h.listen_ok(a.conn, &[handle(1)]);
    h.text(
        a.conn,
        &json!({"type":"UNLISTEN","handles":[handle(1)]}).to_string(),
    );
    let actions = h.text(a.conn, &listen(&[handle(1)], None));
    assert_eq!(error_code(&actions, a.conn), "rate_limited");
}

#[test]
fn debug_of_handle_requests_never_shows_a_handle() {
    let text = listen(&[handle(1)], None);
    let decoded = protocol::decode(&text).map(|frame| format!("{:?}", frame.request));
    assert!(decoded.is_ok_and(|debug| !debug.contains(&handle(1)[..20])));
    let text = to_handle(&handle(1), None);
    let decoded = protocol::decode(&text).map(|frame| format!("{:?}", frame.request));
    assert!(decoded.is_ok_and(|debug| !debug.contains(&handle(1)[..20])));
}

#[test]
fn a_handle_is_found_by_its_text_or_once_its_escapes_are_decoded() {
    let mut h = Harness::new();
    let a = h.connect_v2(1);
    let b = h.connect_v2(2);
    h.listen_ok(b.conn, &[handle(1)]);
    // Written with an escape: decoded, checked, then found.
    let plain = handle(1);
    assert!(plain.starts_with('A'));
    let escaped = format!("\\u0041{}", &plain[1..]);
    let actions = h.text(a.conn, &to_handle(&escaped, Some("e")));
    assert_eq!(only_frame_to(&actions, b.conn)["handle"], plain);
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"ACK","ref":"e"})
    );
    // 43 bytes that are not a handle are found by nobody, then refused before the payload is
    // looked at.
    let not_a_handle = format!("{}!", &plain[1..]);
    let text = format!(r#"{{"type":"MESSAGE","handle":"{not_a_handle}","payload":"x"}}"#);
    assert_eq!(error_code(&h.text(a.conn, &text), a.conn), "bad_handle");
}
