//! What one recipient can be sent, what one address can start and send, and FRIEND_CANCEL
//! (docs/PROTOCOL.md §9, docs/SECURITY.md "Friend requests").

use super::*;
use crate::protocol::MAX_INVITE_CHARS;

fn connect_v2(h: &mut Harness, conn: ConnId) -> Session {
    h.open(conn);
    let reply = only_frame_to(&h.json(conn, json!({"type":"CONNECT","version":2})), conn);
    assert_eq!(reply["version"], 2, "{reply}");
    Session {
        conn,
        id: reply["id"].as_str().unwrap_or_default().to_owned(),
        token: reply["token"].as_str().unwrap_or_default().to_owned(),
    }
}

fn connect_from(h: &mut Harness, conn: ConnId, address: &str) -> Option<Session> {
    h.router.open_from(conn, addr(address), h.now);
    let reply = frames_to(&h.json(conn, json!({"type":"CONNECT","version":2})), conn)
        .into_iter()
        .next()?;
    (reply["type"] == "CONNECT").then(|| Session {
        conn,
        id: reply["id"].as_str().unwrap_or_default().to_owned(),
        token: reply["token"].as_str().unwrap_or_default().to_owned(),
    })
}

fn key_of_len(len: usize) -> String {
    let header = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
    format!("{header}{}", "A".repeat(len - header.len()))
}

#[test]
fn a_version_1_connect_reply_is_unchanged_and_version_2_is_announced() {
    let mut h = Harness::new();
    h.open(1);
    let v1 = only_frame_to(&h.json(1, json!({"type":"CONNECT"})), 1);
    assert_eq!(v1.get("version"), None);
    let mut b = connect_v2(&mut h, 2);
    h.closed(2);
    h.open(3);
    let resumed = only_frame_to(
        &h.json(
            3,
            json!({"type":"CONNECT","version":2,"resume":{"id":b.id,"token":b.token}}),
        ),
        3,
    );
    assert_eq!(
        (resumed["resumed"].clone(), resumed["version"].clone()),
        (json!(true), json!(2))
    );
    b.conn = 3;
}

#[test]
fn a_public_key_over_the_cap_is_key_too_large_in_request_and_accept() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    let max = RouterConfig::defaults().max_public_key_bytes;
    let request =
        |key: &str| json!({"type":"FRIEND_REQUEST","to":b.id,"public_key":key}).to_string();
    assert_eq!(
        error_code(&h.text(1, &request(&key_of_len(max + 1))), 1),
        "key_too_large"
    );
    let fits = h.text(1, &request(&key_of_len(max)));
    assert_eq!(only_frame_to(&fits, 2)["type"], "FRIEND_REQUEST");
    let accept = json!({"type":"FRIEND_ACCEPT","to":a.id,"public_key":key_of_len(max + 1)});
    assert_eq!(error_code(&h.json(2, accept), 2), "key_too_large");
    let accept = json!({"type":"FRIEND_ACCEPT","to":a.id,"public_key":key_of_len(max)});
    assert_eq!(
        only_frame_to(&h.json(2, accept), 1)["type"],
        "FRIEND_ACCEPT"
    );
}

/// Sends a request from a new session at `address`: whether it reached the victim, the answer
/// (`ack` or the error code), and the IDs the victim was told withdrew theirs.
fn request_from(
    h: &mut Harness,
    conn: ConnId,
    address: &str,
    victim: &Session,
) -> (bool, String, Vec<String>) {
    let sender = connect_from(h, conn, address).expect("sender");
    let actions = h.text(sender.conn, &friend_request(&victim.id, Some("r")));
    let to_victim = frames_to(&actions, victim.conn);
    let cancelled = to_victim
        .iter()
        .filter(|frame| frame["type"] == "FRIEND_CANCEL")
        .map(|frame| frame["from"].as_str().unwrap_or_default().to_owned())
        .collect();
    let reached = to_victim
        .iter()
        .any(|frame| frame["type"] == "FRIEND_REQUEST");
    let answer = only_frame_to(&actions, sender.conn);
    let answer = answer["code"].as_str().unwrap_or("ack").to_owned();
    (reached, answer, cancelled)
}

#[test]
fn one_recipient_holds_a_bounded_number_of_pending_requests_and_few_addresses_cannot_fill_them() {
    let mut h = Harness::with(RouterConfig {
        max_pending_incoming: 3,
        max_pending_incoming_per_address: 2,
        ..RouterConfig::defaults()
    });
    let victim = connect_v2(&mut h, 1);
    let ok = |cancelled: Vec<String>| (true, "ack".to_owned(), cancelled);
    let first = connect_from(&mut h, 11, "192.0.2.1").expect("first");
    let actions = h.text(first.conn, &friend_request(&victim.id, None));
    assert_eq!(frames_to(&actions, victim.conn).len(), 1);
    assert_eq!(request_from(&mut h, 12, "192.0.2.1", &victim), ok(vec![]));
    assert_eq!(
        request_from(&mut h, 13, "192.0.2.1", &victim),
        (false, "too_many_requests".to_owned(), vec![]),
        "a third from one address"
    );
    // One IPv6 /48 is one address here, however many /64s it uses.
    assert_eq!(
        request_from(&mut h, 14, "2001:db8:9:100::1", &victim),
        ok(vec![])
    );
    assert_eq!(
        request_from(&mut h, 17, "2001:db8:9:200::1", &victim),
        (false, "too_many_requests".to_owned(), vec![]),
        "the list is full, and this /48 has as many as any other"
    );
    assert_eq!(
        request_from(&mut h, 15, "198.51.100.1", &victim),
        ok(vec![first.id.clone()]),
        "the list is full: the oldest request of the address with the most makes room"
    );
    let accept = h.text(victim.conn, &friend_accept(&first.id, None));
    assert_eq!(error_code(&accept, victim.conn), "no_pending_request");
    // Now every address holds one: nobody has more to give up.
    assert_eq!(
        request_from(&mut h, 16, "192.0.2.9", &victim),
        (false, "too_many_requests".to_owned(), vec![]),
    );
}

#[test]
fn one_recipient_receives_a_bounded_number_of_requests_per_minute_and_per_address() {
    let mut h = Harness::with(RouterConfig {
        rate_incoming_requests_per_min: 5,
        rate_incoming_requests_per_address_per_min: 3,
        max_pending_incoming_per_address: 100,
        ..RouterConfig::defaults()
    });
    let victim = h.connect(1);
    let mut conn = 10;
    let mut outcomes = |h: &mut Harness, address: &str, count: usize| -> Vec<String> {
        (0..count)
            .map(|_| {
                conn += 1;
                let (reached, answer, _) = request_from(h, conn, address, &victim);
                assert_eq!(reached, answer == "ack");
                // The sender leaves: its request goes, but it was received this minute.
                h.json(conn, json!({"type":"DISCONNECT"}));
                answer
            })
            .collect()
    };
    let refused = |answers: &[String]| answers.iter().filter(|a| *a != "ack").count();
    let from_one = outcomes(&mut h, "192.0.2.1", 5);
    assert_eq!(
        refused(&from_one),
        2,
        "3 a minute from one address: {from_one:?}"
    );
    assert!(
        from_one
            .iter()
            .all(|a| a == "ack" || a == "too_many_requests")
    );
    let from_others = outcomes(&mut h, "192.0.2.2", 1);
    assert_eq!(refused(&from_others), 0, "another address still gets in");
    let more = outcomes(&mut h, "192.0.2.3", 2);
    assert_eq!(refused(&more), 1, "5 a minute in all: {more:?}");
    h.advance(30_000);
    assert_eq!(
        refused(&outcomes(&mut h, "192.0.2.3", 1)),
        1,
        "a minute is not over"
    );
    h.advance(30_000);
    assert_eq!(
        refused(&outcomes(&mut h, "192.0.2.1", 3)),
        0,
        "the minute has passed"
    );
}

/// A request refused with `peer_busy` was never delivered: it must not spend the recipient's
/// budget for the minute, nor withdraw someone else's pending request to make room for itself.
#[test]
fn a_request_refused_as_peer_busy_takes_no_room_and_no_budget() {
    let mut h = Harness::with(RouterConfig {
        max_pending_incoming: 2,
        max_pending_incoming_per_address: 2,
        rate_incoming_requests_per_min: 3,
        rate_incoming_requests_per_address_per_min: 0,
        ..RouterConfig::defaults()
    });
    let victim = connect_v2(&mut h, 1);
    let ok = |cancelled: Vec<String>| (true, "ack".to_owned(), cancelled);
    let first = connect_from(&mut h, 11, "192.0.2.1").expect("first");
    let actions = h.text(first.conn, &friend_request(&victim.id, None));
    assert_eq!(frames_to(&actions, victim.conn).len(), 1);
    assert_eq!(request_from(&mut h, 12, "192.0.2.1", &victim), ok(vec![]));
    // The list is full, and the victim's socket holds more than a request may fill.
    let quarter = RouterConfig::defaults().max_unsent_bytes / 4;
    h.sink.flushed(victim.conn, quarter + 1);
    for (conn, address) in [
        (13, "198.51.100.1"),
        (14, "198.51.100.2"),
        (15, "203.0.113.1"),
    ] {
        assert_eq!(
            request_from(&mut h, conn, address, &victim),
            (false, "peer_busy".to_owned(), vec![]),
            "a busy recipient: nothing delivered, nothing withdrawn"
        );
    }
    // Once the victim reads, the minute still has room for one more request (3 a minute, 2
    // used), and `first` is still pending: it is the one withdrawn to make room.
    h.sink.flushed(victim.conn, 0);
    assert_eq!(
        request_from(&mut h, 16, "203.0.113.2", &victim),
        ok(vec![first.id.clone()])
    );
    assert_eq!(
        request_from(&mut h, 17, "203.0.113.3", &victim),
        (false, "too_many_requests".to_owned(), vec![]),
        "the minute's three"
    );
}

#[test]
fn too_many_requests_does_not_count_toward_the_error_flood() {
    assert!(!ErrorCode::TooManyRequests.counts_toward_flood());
    assert!(ErrorCode::KeyTooLarge.counts_toward_flood());
}

#[test]
fn requests_fill_only_a_quarter_of_a_recipients_room_messages_the_rest() {
    let mut h = Harness::with(RouterConfig {
        max_unsent_bytes: 4_000,
        max_pending_incoming: 100,
        max_pending_incoming_per_address: 100,
        ..RouterConfig::defaults()
    });
    let victim = h.connect(1);
    let friend = h.connect(2);
    h.befriend(&friend, &victim);
    // The victim stops reading: unsent bytes grow with every frame it is sent.
    let mut requests = 0;
    for conn in 10..40 {
        let sender = h.connect(conn);
        let actions = h.text(sender.conn, &friend_request(&victim.id, Some("r")));
        if frames_to(&actions, victim.conn).is_empty() {
            assert_eq!(error_code(&actions, sender.conn), "peer_busy");
            break;
        }
        requests += 1;
    }
    let request_len = friend_request(&victim.id, None).len();
    assert!(
        requests <= 4_000 / 4 / request_len + 1,
        "{requests} requests of about {request_len} bytes reached a quarter of 4,000"
    );
    // The friend's messages still go through, up to the full cap.
    let mut delivered = 0;
    while frames_to(
        &h.text(friend.conn, &message(&victim.id, None)),
        victim.conn,
    )
    .len()
        == 1
    {
        delivered += 1;
        assert!(delivered < 100);
    }
    assert!(
        delivered >= 10,
        "only {delivered} messages fit after the requests"
    );
}

#[test]
fn a_version_2_recipient_is_told_when_a_pending_request_goes() {
    let mut h = Harness::new();
    let v2 = connect_v2(&mut h, 1);
    let v1 = h.connect(2);
    let requester = h.connect(3);
    h.text(3, &friend_request(&v2.id, None));
    h.text(3, &friend_request(&v1.id, None));
    let actions = h.json(3, json!({"type":"DISCONNECT"}));
    assert_eq!(
        only_frame_to(&actions, 1),
        json!({"type":"FRIEND_CANCEL","from":requester.id})
    );
    assert!(
        frames_to(&actions, 2).is_empty(),
        "version 1 has no FRIEND_CANCEL"
    );
    // After the cancel, the ID's old request cannot be accepted.
    let accept = h.text(1, &friend_accept(&requester.id, None));
    assert_eq!(error_code(&accept, 1), "no_pending_request");
}

#[test]
fn a_queued_cancel_is_delivered_on_a_version_2_resume_and_dropped_on_a_version_1_one() {
    for (resume_version, expected) in [(2, 1), (1, 0)] {
        let mut h = Harness::new();
        let away = connect_v2(&mut h, 1);
        let requester = h.connect(2);
        h.closed(1);
        h.text(2, &friend_request(&away.id, None));
        h.json(2, json!({"type":"DISCONNECT"}));
        assert_eq!(
            h.router.stats().queued_frames,
            2,
            "request and cancel queued"
        );
        h.open(5);
        let mut connect = json!({"type":"CONNECT","resume":{"id":away.id,"token":away.token}});
        if resume_version == 2 {
            connect["version"] = json!(2);
        }
        let frames = frames_to(&h.json(5, connect), 5);
        let cancels = frames
            .iter()
            .filter(|frame| {
                frame["type"] == "FRIEND_CANCEL" && frame["from"] == requester.id.as_str()
            })
            .count();
        assert_eq!(
            cancels, expected,
            "resumed as version {resume_version}: {frames:?}"
        );
        assert_eq!(h.router.stats().queued_frames, 0);
    }
}

#[test]
fn one_address_has_a_budget_of_requests_across_its_sessions() {
    let mut h = Harness::with(RouterConfig {
        rate_friend_requests_per_address_per_min: 4,
        max_pending_incoming_per_address: 100,
        ..RouterConfig::defaults()
    });
    let mut targets = Vec::new();
    for conn in 1..=6 {
        targets.push(connect_from(&mut h, conn, "203.0.113.9").expect("target"));
    }
    let mut sent = 0;
    for conn in 10..20 {
        let sender = connect_from(&mut h, conn, "192.0.2.50").expect("sender");
        let target = &targets[conn as usize % targets.len()];
        let actions = h.text(sender.conn, &friend_request(&target.id, Some("r")));
        match frames_to(&actions, target.conn).len() {
            1 => sent += 1,
            _ => assert_eq!(error_code(&actions, sender.conn), "rate_limited"),
        }
        h.json(sender.conn, json!({"type":"DISCONNECT"}));
    }
    assert_eq!(
        sent, 4,
        "a new session per request does not reset the budget"
    );
    let other = connect_from(&mut h, 30, "192.0.2.51").expect("another address");
    let actions = h.text(other.conn, &friend_request(&targets[0].id, None));
    assert_eq!(frames_to(&actions, targets[0].conn).len(), 1);
}

#[test]
fn one_address_starts_a_bounded_number_of_sessions_per_minute() {
    let mut h = Harness::with(RouterConfig {
        rate_sessions_per_address_per_min: 3,
        ..RouterConfig::defaults()
    });
    let mut started = 0;
    for conn in 1..=10 {
        if let Some(session) = connect_from(&mut h, conn, "2001:db8:5:1::1") {
            started += 1;
            h.json(session.conn, json!({"type":"DISCONNECT"}));
        }
    }
    assert_eq!(started, 3);
    // Another /64 of the same /48 shares the /48's budget (four /64s' worth)...
    let others = (0..20u32)
        .filter(|n| {
            connect_from(
                &mut h,
                100 + u64::from(*n),
                &format!("2001:db8:5:{n:x}00::1"),
            )
            .is_some()
        })
        .count();
    assert_eq!(others, 12 - 3, "the /48 holds 4 × 3 starts a minute");
    // ...and a minute later the budget is back.
    h.advance(60_000);
    assert!(connect_from(&mut h, 200, "2001:db8:5:1::1").is_some());
}

/// [`KEY`] as the text it encodes, for frames built with `json!`.
const KEY_TEXT: &str =
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxsBNBGabc=\n-----END PGP PUBLIC KEY BLOCK-----";

#[test]
fn an_invite_proof_reaches_version_2_targets_unchanged_and_a_malformed_one_is_bad_invite() {
    let mut h = Harness::new();
    let v2 = connect_v2(&mut h, 1);
    let v1 = h.connect(2);
    let requester = h.connect(3);
    let proof = "q0-_Zz9".repeat(6);
    let with_proof =
        |to: &str| json!({"type":"FRIEND_REQUEST","to":to,"public_key":KEY_TEXT,"invite":proof});
    let to_v2 = only_frame_to(&h.json(3, with_proof(&v2.id)), 1);
    assert_eq!(to_v2["invite"], proof.as_str(), "{to_v2}");
    assert_eq!(to_v2["from"], requester.id.as_str());
    let to_v1 = only_frame_to(&h.json(3, with_proof(&v1.id)), 2);
    assert_eq!(
        to_v1.get("invite"),
        None,
        "version 1 knows no invite: {to_v1}"
    );
    assert_eq!(to_v1["public_key"], to_v2["public_key"]);

    let other = connect_v2(&mut h, 4);
    let too_long = "A".repeat(MAX_INVITE_CHARS + 1);
    for bad in [
        json!(""),
        json!("has space"),
        json!("plus+slash/"),
        json!("\u{e9}t\u{e9}"),
        json!(too_long),
        json!(7),
        json!(null),
        json!(["a"]),
    ] {
        let frame = json!({"type":"FRIEND_REQUEST","to":other.id,"public_key":KEY_TEXT,"invite":bad,"ref":"r"});
        let actions = h.json(3, frame);
        assert_eq!(error_code(&actions, 3), "bad_invite", "{bad}");
        assert_eq!(only_frame_to(&actions, 3)["ref"], "r");
        assert!(
            frames_to(&actions, 4).is_empty(),
            "nothing reaches the target"
        );
    }
    // Escaped characters are refused too: a client has no reason to escape base64url.
    let escaped = format!(
        r#"{{"type":"FRIEND_REQUEST","to":"{}","public_key":"{KEY}","invite":"\u0041bc"}}"#,
        other.id
    );
    assert_eq!(error_code(&h.text(3, &escaped), 3), "bad_invite");
    let longest = "A".repeat(MAX_INVITE_CHARS);
    let frame =
        json!({"type":"FRIEND_REQUEST","to":other.id,"public_key":KEY_TEXT,"invite":longest});
    assert_eq!(
        only_frame_to(&h.json(3, frame), 4)["invite"],
        longest.as_str()
    );
}
