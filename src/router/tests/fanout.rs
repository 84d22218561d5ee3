//! MESSAGE to several handles (PROTOCOL.md §11): one copy per handle, to its listener or into the
//! mailbox; the frame's own checks before any copy; the rate in tokens per four copies.

use super::handles::handle;
use super::*;

fn to_handles(handles: &[String], reference: Option<&str>) -> String {
    let list = serde_json::to_string(handles).unwrap_or_default();
    with_ref(
        format!(r#"{{"type":"MESSAGE","handles":{list},"payload":"{PAYLOAD}""#),
        reference,
    )
}

#[test]
fn each_handle_gets_one_copy_from_its_listener_or_the_mailbox() {
    let mut h = Harness::new();
    let sender = h.connect_v2(1);
    let b = h.connect_v2(2);
    let c = h.connect_v2(3);
    h.listen_ok(b.conn, &[handle(1)]);
    h.listen_ok(c.conn, &[handle(2)]);
    let actions = h.text(
        sender.conn,
        &to_handles(&[handle(1), handle(2), handle(3)], Some("g")),
    );
    for (conn, which) in [(b.conn, 1), (c.conn, 2)] {
        let copy = only_frame_to(&actions, conn);
        assert_eq!(copy["type"], "MESSAGE");
        assert_eq!(copy["handle"], handle(which));
        assert!(copy.get("from").is_none(), "sealed sender: {copy}");
        assert!(
            copy["payload"]
                .as_str()
                .is_some_and(|p| p.starts_with("-----BEGIN PGP MESSAGE"))
        );
    }
    assert_eq!(
        only_frame_to(&actions, sender.conn),
        json!({"type":"ACK","ref":"g","sent":2,"queued":1})
    );
    // The third copy waits for whoever listens on handle 3.
    assert_eq!(h.router.stats().mailbox_letters, 1);
    let d = h.connect_v2(4);
    assert_eq!(h.listen_ok(d.conn, &[handle(3)]), (1, 1));
}

#[test]
fn the_frame_is_refused_whole_before_any_copy_leaves() {
    let mut h = Harness::new();
    let sender = h.connect_v2(1);
    let b = h.connect_v2(2);
    h.listen_ok(b.conn, &[handle(1)]);
    let too_many: Vec<String> = (0..65).map(handle).collect();
    let cases = [
        (
            json!({"type":"MESSAGE","handles":[],"payload":"x","ref":"r"}),
            "bad_request",
        ),
        (
            json!({"type":"MESSAGE","handles":too_many,"payload":"x","ref":"r"}),
            "bad_request",
        ),
        (
            json!({"type":"MESSAGE","handles":[handle(1), 7],"payload":"x","ref":"r"}),
            "bad_request",
        ),
        (
            json!({"type":"MESSAGE","handles":handle(1),"payload":"x","ref":"r"}),
            "bad_request",
        ),
        (
            json!({"type":"MESSAGE","handles":[handle(1)],"handle":handle(1),"payload":"x","ref":"r"}),
            "bad_request",
        ),
        (
            json!({"type":"MESSAGE","handles":[handle(1)],"to":sender.id,"payload":"x","ref":"r"}),
            "bad_request",
        ),
        (
            json!({"type":"MESSAGE","handles":[handle(1)],"payload":"x","mailbox":1,"ref":"r"}),
            "bad_request",
        ),
        (
            json!({"type":"MESSAGE","handles":[handle(1), "short"],"payload":"x","ref":"r"}),
            "bad_handle",
        ),
        (
            json!({"type":"MESSAGE","handles":[handle(1), handle(2), handle(1)],"payload":"x","ref":"r"}),
            "bad_request",
        ),
        (
            json!({"type":"MESSAGE","handles":[handle(1)],"payload":"not armored","ref":"r"}),
            "not_encrypted",
        ),
    ];
    for (frame, code) in cases {
        let actions = h.json(sender.conn, frame.clone());
        assert_eq!(error_code(&actions, sender.conn), code, "{frame}");
        assert!(frames_to(&actions, b.conn).is_empty(), "{frame}");
    }
    assert_eq!(h.router.stats().mailbox_letters, 0);
}

#[test]
fn version_one_sessions_have_no_handles_field() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let actions = h.text(a.conn, &to_handles(&[handle(1)], Some("r")));
    assert_eq!(error_code(&actions, a.conn), "bad_request");
}

#[test]
fn copies_cost_one_token_per_four_and_all_or_nothing() {
    let mut config = RouterConfig::defaults();
    config.rate_messages_per_sec = 10;
    let mut h = Harness::with(config);
    let sender = h.connect_v2(1);
    let b = h.connect_v2(2);
    let handles: Vec<String> = (0..40).map(handle).collect();
    h.listen_ok(b.conn, &handles);
    // 40 copies cost all 10 tokens (the bucket's burst); the LISTEN above was another session's.
    let actions = h.text(sender.conn, &to_handles(&handles, Some("a")));
    assert_eq!(only_frame_to(&actions, sender.conn)["sent"], 40);
    assert_eq!(frames_to(&actions, b.conn).len(), 40);
    // Refused whole: nothing delivered, not even the first copies.
    h.advance(500);
    let actions = h.text(sender.conn, &to_handles(&handles, Some("b")));
    assert_eq!(error_code(&actions, sender.conn), "rate_limited");
    assert!(frames_to(&actions, b.conn).is_empty());
    // Half a second later five tokens are back: 20 copies, then not one more.
    let actions = h.text(sender.conn, &to_handles(&handles[..20], Some("c")));
    assert_eq!(only_frame_to(&actions, sender.conn)["sent"], 20);
    let actions = h.text(sender.conn, &to_handles(&handles[..1], Some("d")));
    assert_eq!(error_code(&actions, sender.conn), "rate_limited");
}

#[test]
fn refused_copies_are_each_reported_and_the_rest_delivered() {
    let mut config = RouterConfig::defaults();
    config.mailbox_bytes = 0;
    let mut h = Harness::with(config);
    let sender = h.connect_v2(1);
    let b = h.connect_v2(2);
    h.listen_ok(b.conn, &[handle(1)]);
    let actions = h.text(
        sender.conn,
        &to_handles(&[handle(2), handle(1), handle(3)], Some("g")),
    );
    let replies = frames_to(&actions, sender.conn);
    assert_eq!(
        replies,
        vec![
            json!({"type":"UNDELIVERED","handle":handle(2),"ref":"g","reason":"no_mailbox"}),
            json!({"type":"UNDELIVERED","handle":handle(3),"ref":"g","reason":"no_mailbox"}),
            json!({"type":"ACK","ref":"g","sent":1,"queued":0}),
        ]
    );
    assert_eq!(frames_to(&actions, b.conn).len(), 1);
    // Without a ref, nothing is reported, and the copy that can go still goes.
    let actions = h.text(sender.conn, &to_handles(&[handle(2), handle(1)], None));
    assert!(frames_to(&actions, sender.conn).is_empty());
    assert_eq!(frames_to(&actions, b.conn).len(), 1);
}

#[test]
fn a_probe_to_several_handles_is_never_stored() {
    let mut h = Harness::new();
    let sender = h.connect_v2(1);
    let b = h.connect_v2(2);
    h.listen_ok(b.conn, &[handle(1)]);
    let actions = h.json(
        sender.conn,
        json!({"type":"MESSAGE","handles":[handle(1), handle(2)],"payload":PAYLOAD.replace("\\n", "\n").replace("\\u002b", "+"),"mailbox":false,"ref":"p"}),
    );
    let replies = frames_to(&actions, sender.conn);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0]["reason"], "no_mailbox");
    assert_eq!(
        replies[1],
        json!({"type":"ACK","ref":"p","sent":1,"queued":0})
    );
    assert_eq!(h.router.stats().mailbox_letters, 0);
}

#[test]
fn a_busy_listener_loses_only_its_own_copy() {
    let mut h = Harness::with(RouterConfig {
        max_unsent_bytes: 300,
        rate_messages_per_sec: 0,
        ..RouterConfig::defaults()
    });
    let sender = h.connect_v2(1);
    let slow = h.connect_v2(2);
    let quick = h.connect_v2(3);
    h.listen_ok(slow.conn, &[handle(1)]);
    h.listen_ok(quick.conn, &[handle(2)]);
    h.sink.flushed(slow.conn, 0);
    let mut refused = None;
    for round in 0..10 {
        h.sink.flushed(quick.conn, 0);
        let actions = h.text(sender.conn, &to_handles(&[handle(1), handle(2)], Some("g")));
        assert_eq!(frames_to(&actions, quick.conn).len(), 1, "round {round}");
        let replies = frames_to(&actions, sender.conn);
        if replies.len() == 2 {
            refused = Some(replies);
            break;
        }
    }
    let replies = refused.unwrap_or_default();
    assert_eq!(
        replies,
        vec![
            json!({"type":"UNDELIVERED","handle":handle(1),"ref":"g","reason":"peer_busy"}),
            json!({"type":"ACK","ref":"g","sent":1,"queued":0}),
        ]
    );
    // peer_busy is someone else's state: the sender is never closed for it.
    assert!(closes(&h.text(sender.conn, &to_handles(&[handle(1)], None))).is_empty());
}
