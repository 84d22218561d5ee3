//! PROTOCOL.md §10 over real sockets: LISTEN/UNLISTEN/LISTENING, HANDLE_TAKEN, MESSAGE to a
//! handle (a connected listener, or the mailbox), FETCH/FETCHED, the mailbox's TTL and caps with
//! UNDELIVERED, and the errors bad_handle, too_many_handles, no_mailbox. Version 1 is untouched.

mod common;

use std::net::Ipv4Addr;

use common::*;
use serde_json::{Value, json};

/// A version-2 session from the loopback address `127.0.0.<host>`.
fn connect_v2_from(server: &Server, host: u8) -> Client {
    let mut client =
        Client::try_connect_from(server, Ipv4Addr::new(127, 0, 0, host)).expect("connect");
    let reply = client.request(json!({"type": "CONNECT", "version": 2}));
    assert_eq!(reply["version"], 2, "{reply}");
    client
}

fn listen(client: &mut Client, handles: &[String], reference: &str) -> Value {
    let reply = client.request(json!({"type": "LISTEN", "handles": handles, "ref": reference}));
    assert_eq!(reply["type"], "LISTENING", "{reply}");
    assert_eq!(reply["ref"], reference);
    reply
}

fn to_handle(handle: &str, payload: &str, reference: &str) -> Value {
    json!({"type": "MESSAGE", "handle": handle, "payload": payload, "ref": reference})
}

#[test]
fn listen_unlisten_and_a_message_to_a_connected_listener() {
    let server = Server::start(&[]);
    let mut alice = connect_v2(&server);
    let mut bob = connect_v2(&server);
    let reply = listen(&mut bob, &[handle(1), handle(2)], "l1");
    assert_eq!(
        reply,
        json!({"type": "LISTENING", "handles": 2, "waiting": 0, "ref": "l1"})
    );
    alice.send_json(&to_handle(&handle(1), TEST_PAYLOAD, "m1"));
    assert_eq!(alice.recv_json(), json!({"type": "ACK", "ref": "m1"}));
    let forwarded = bob.expect_type("MESSAGE");
    let mut keys: Vec<&str> = forwarded
        .as_object()
        .map(|object| object.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["handle", "payload", "ts", "type"],
        "no from: {forwarded}"
    );
    assert_eq!(forwarded["handle"], handle(1));
    assert_eq!(forwarded["payload"], TEST_PAYLOAD);
    let reply = bob.request(json!({"type": "UNLISTEN", "handles": [handle(1)], "ref": "u1"}));
    assert_eq!(
        reply,
        json!({"type": "LISTENING", "handles": 1, "waiting": 0, "ref": "u1"})
    );
    alice.send_json(&to_handle(&handle(1), TEST_PAYLOAD, "m2"));
    alice.expect_queued_ack("m2");
    bob.expect_nothing_pending();
}

#[test]
fn the_newest_listener_takes_the_handle() {
    let server = Server::start(&[]);
    let mut first_tab = connect_v2(&server);
    let mut second_tab = connect_v2(&server);
    let mut alice = connect_v2(&server);
    listen(&mut first_tab, &[handle(7)], "a");
    listen(&mut second_tab, &[handle(7)], "b");
    assert_eq!(
        first_tab.recv_json(),
        json!({"type": "HANDLE_TAKEN", "handle": handle(7)})
    );
    alice.send_json(&to_handle(&handle(7), TEST_PAYLOAD, "m"));
    alice.expect_ack("m");
    assert_eq!(second_tab.expect_type("MESSAGE")["handle"], handle(7));
    first_tab.expect_nothing_pending();
}

#[test]
fn mail_waits_in_the_mailbox_until_the_listener_comes_back_and_fetches() {
    let server = Server::start(&["--resume-grace", "0"]);
    let mut alice = connect_v2(&server);
    let mut bob = connect_v2(&server);
    listen(&mut bob, &[handle(1)], "l");
    bob.close_gracefully();
    for n in 0..3 {
        let payload = payload_with(&format!("waiting-{n}"));
        alice.send_json(&to_handle(&handle(1), &payload, &format!("m{n}")));
        alice.expect_queued_ack(&format!("m{n}"));
    }
    // Bob reloads: a new session, the same handle.
    let mut bob = connect_v2(&server);
    let reply = listen(&mut bob, &[handle(1)], "l2");
    assert_eq!(reply["waiting"], 3);
    bob.send_json(&json!({"type": "FETCH", "ref": "f"}));
    for n in 0..3 {
        let letter = bob.expect_type("MESSAGE");
        assert_eq!(letter["handle"], handle(1));
        assert_eq!(letter["payload"], payload_with(&format!("waiting-{n}")));
        assert!(letter["ts"].as_u64().is_some());
        assert!(letter.get("from").is_none());
    }
    assert_eq!(
        bob.recv_json(),
        json!({"type": "FETCHED", "waiting": 0, "ref": "f"})
    );
    let again = bob.request(json!({"type": "FETCH", "ref": "f2"}));
    assert_eq!(again, json!({"type": "FETCHED", "waiting": 0, "ref": "f2"}));
}

#[test]
fn no_mailbox_when_it_is_off() {
    let server = Server::start(&["--mailbox-bytes", "0"]);
    let mut alice = connect_v2(&server);
    alice.send_json(&to_handle(&handle(1), TEST_PAYLOAD, "m"));
    alice.expect_error("no_mailbox", Some("m"));
}

#[test]
fn a_probe_with_mailbox_false_reaches_a_connected_listener_and_is_never_stored() {
    let server = Server::start(&[]);
    let mut alice = connect_v2(&server);
    let mut probe = to_handle(&handle(7), TEST_PAYLOAD, "p1");
    probe["mailbox"] = json!(false);
    alice.send_json(&probe);
    alice.expect_error("no_mailbox", Some("p1"));
    let mut bad = to_handle(&handle(7), TEST_PAYLOAD, "p2");
    bad["mailbox"] = json!("no");
    alice.send_json(&bad);
    alice.expect_error("bad_request", Some("p2"));

    let mut bob = connect_v2(&server);
    assert_eq!(
        listen(&mut bob, &[handle(7)], "l")["waiting"],
        0,
        "the refused probe was not stored"
    );
    probe["ref"] = json!("p3");
    alice.send_json(&probe);
    assert_eq!(alice.recv_json(), json!({"type": "ACK", "ref": "p3"}));
    assert_eq!(bob.expect_type("MESSAGE")["handle"], handle(7));
    // Beside `to`, `mailbox` is ignored like any field MESSAGE to an ID does not read.
    let (mut carol, _, _) = connect_session(&server);
    let mut by_id = message(&bob.id, TEST_PAYLOAD, Some("i1"));
    by_id["mailbox"] = json!("anything");
    carol.send_json(&by_id);
    carol.expect_error("not_friends", Some("i1"));
}

#[test]
fn expired_mail_is_reported_undelivered() {
    let server = Server::start(&["--mailbox-ttl", "0.2"]);
    let mut alice = connect_v2(&server);
    alice.send_json(&to_handle(&handle(1), TEST_PAYLOAD, "late"));
    alice.expect_queued_ack("late");
    assert_eq!(
        alice.recv_json(),
        json!({"type": "UNDELIVERED", "handle": handle(1), "ref": "late", "reason": "expired"})
    );
    let mut bob = connect_v2(&server);
    assert_eq!(listen(&mut bob, &[handle(1)], "l")["waiting"], 0);
}

#[test]
fn the_oldest_mail_is_evicted_when_the_mailbox_is_full() {
    // A few letters' worth; one address block may use all of it with per-address limits off.
    let server = Server::start(&["--mailbox-bytes", "2000", "--max-connections-per-ip", "0"]);
    let mut alice = connect_v2(&server);
    let mut evicted = Vec::new();
    let mut acked = 0;
    for n in 0..12 {
        alice.send_json(&to_handle(&handle(n), TEST_PAYLOAD, &format!("m{n}")));
        loop {
            let frame = alice.recv_json();
            match frame["type"].as_str() {
                Some("ACK") => {
                    assert_eq!(frame["queued"], true);
                    acked += 1;
                    break;
                }
                Some("UNDELIVERED") => {
                    assert_eq!(frame["reason"], "evicted", "{frame}");
                    evicted.push(frame["ref"].as_str().unwrap_or_default().to_owned());
                }
                _ => panic!("unexpected {frame}"),
            }
        }
    }
    assert_eq!(acked, 12);
    assert!(!evicted.is_empty());
    // Oldest first.
    let expected: Vec<String> = (0..evicted.len()).map(|n| format!("m{n}")).collect();
    assert_eq!(evicted, expected);
}

#[test]
fn too_many_handles_and_bad_handles() {
    let server = Server::start(&["--max-handles", "3"]);
    let mut bob = connect_v2(&server);
    bob.send_json(&json!({"type": "LISTEN", "handles": [handle(1), "not-a-handle"], "ref": "b"}));
    bob.expect_error("bad_handle", Some("b"));
    bob.send_json(&json!({"type": "LISTEN", "handles": [], "ref": "e"}));
    bob.expect_error("bad_request", Some("e"));
    bob.send_json(
        &json!({"type": "MESSAGE", "handle": "short", "payload": TEST_PAYLOAD, "ref": "m"}),
    );
    bob.expect_error("bad_handle", Some("m"));
    // The server's 3 handles: one address may take them all while nobody else wants any.
    let reply = listen(&mut bob, &[handle(1), handle(2), handle(3)], "l");
    assert_eq!(reply["handles"], 3);
    bob.send_json(&json!({"type": "LISTEN", "handles": [handle(4)], "ref": "t"}));
    bob.expect_error("too_many_handles", Some("t"));
    let reply = bob.request(json!({"type": "LISTEN", "handles": [handle(1)], "ref": "same"}));
    assert_eq!(reply["handles"], 3, "a handle already held costs nothing");
}

#[test]
fn a_version_one_session_is_unaffected() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    for frame in [
        json!({"type": "LISTEN", "handles": [handle(1)], "ref": "l"}),
        json!({"type": "UNLISTEN", "handles": [handle(1)], "ref": "l"}),
        json!({"type": "FETCH", "ref": "l"}),
    ] {
        a.send_json(&frame);
        a.expect_error("unknown_type", Some("l"));
    }
    a.send_json(&to_handle(&handle(1), TEST_PAYLOAD, "h"));
    a.expect_error("bad_request", Some("h"));
    // `handle` beside `to` is an unknown field to version 1: ignored.
    a.send_json(&json!({"type": "MESSAGE", "to": b_id, "handle": handle(1), "payload": TEST_PAYLOAD, "ref": "v1"}));
    a.expect_ack("v1");
    assert_eq!(b.expect_type("MESSAGE")["from"], a.id.as_str());
}

/// PROTOCOL.md §11: one upload, a copy to each handle: at once to connected listeners, into the
/// mailbox for the others, with one ACK that counts both and an UNDELIVERED for each refusal.
#[test]
fn a_message_to_several_handles_reaches_each_listener_once() {
    let server = Server::start(&["--resume-grace", "0"]);
    let mut alice = connect_v2(&server);
    let mut bob = connect_v2(&server);
    let mut carol = connect_v2(&server);
    listen(&mut bob, &[handle(1)], "l");
    listen(&mut carol, &[handle(2)], "l");
    let group_payload = payload_with("to the group");
    alice.send_json(&json!({
        "type": "MESSAGE",
        "handles": [handle(1), handle(2), handle(3)],
        "payload": group_payload,
        "ref": "g1",
    }));
    assert_eq!(
        alice.recv_json(),
        json!({"type": "ACK", "ref": "g1", "sent": 2, "queued": 1})
    );
    for (member, which) in [(&mut bob, 1), (&mut carol, 2)] {
        let copy = member.expect_type("MESSAGE");
        assert_eq!(copy["handle"], handle(which));
        assert_eq!(copy["payload"], group_payload);
        assert!(copy.get("from").is_none(), "{copy}");
        member.expect_nothing_pending();
    }
    // Dave was offline: his copy waits for him.
    let mut dave = connect_v2(&server);
    assert_eq!(listen(&mut dave, &[handle(3)], "l")["waiting"], 1);
    dave.send_json(&json!({"type": "FETCH", "ref": "f"}));
    assert_eq!(dave.expect_type("MESSAGE")["payload"], group_payload);
    // A handle named twice refuses the whole frame: nobody gets anything.
    alice.send_json(&json!({
        "type": "MESSAGE",
        "handles": [handle(1), handle(2), handle(1)],
        "payload": TEST_PAYLOAD,
        "ref": "g2",
    }));
    alice.expect_error("bad_request", Some("g2"));
    bob.expect_nothing_pending();
    carol.expect_nothing_pending();
}

#[test]
fn copies_that_cannot_be_stored_are_reported_one_by_one() {
    let server = Server::start(&["--mailbox-bytes", "0"]);
    let mut alice = connect_v2(&server);
    let mut bob = connect_v2(&server);
    listen(&mut bob, &[handle(1)], "l");
    alice.send_json(&json!({
        "type": "MESSAGE",
        "handles": [handle(4), handle(1)],
        "payload": TEST_PAYLOAD,
        "ref": "g",
    }));
    assert_eq!(
        alice.recv_json(),
        json!({"type": "UNDELIVERED", "handle": handle(4), "ref": "g", "reason": "no_mailbox"})
    );
    assert_eq!(
        alice.recv_json(),
        json!({"type": "ACK", "ref": "g", "sent": 1, "queued": 0})
    );
    assert_eq!(bob.expect_type("MESSAGE")["handle"], handle(1));
}

#[test]
fn flooding_addresses_keep_neither_an_honest_listener_out_nor_its_mail() {
    let server = Server::start(&["--max-handles", "64", "--mailbox-bytes", "20000"]);
    // An honest letter waits for a friend who is away.
    let mut alice = connect_v2_from(&server, 2);
    alice.send_json(&to_handle(&handle(1000), &payload_with("keep"), "keep"));
    alice.expect_queued_ack("keep");
    // Nine addresses take every handle and send far more mail than the mailbox holds.
    let mut flooders: Vec<Client> = (10..19)
        .map(|host| connect_v2_from(&server, host))
        .collect();
    for (n, flooder) in flooders.iter_mut().enumerate() {
        let theirs: Vec<String> = (0..8).map(|k| handle(100 + 8 * n as u32 + k)).collect();
        let reply = flooder.request(json!({"type": "LISTEN", "handles": theirs, "ref": "l"}));
        assert!(reply["type"] == "LISTENING" || reply["code"] == "too_many_handles");
    }
    let mut evicted = 0;
    for round in 0..20 {
        for (n, flooder) in flooders.iter_mut().enumerate() {
            let reference = format!("f{round}");
            let letter = to_handle(&handle(2000 + n as u32), TEST_PAYLOAD, &reference);
            flooder.send_json(&letter);
            loop {
                let frame = flooder.recv_json();
                match frame["type"].as_str() {
                    Some("ACK") if frame["ref"] == reference.as_str() => break,
                    Some("UNDELIVERED") if frame["reason"] == "evicted" => evicted += 1,
                    _ => panic!("unexpected {frame}"),
                }
            }
        }
    }
    assert!(evicted > 0, "the flooders' own letters made room");
    // The friend comes back: it may listen, and the honest letter is still there.
    let mut bob = connect_v2_from(&server, 3);
    let reply =
        bob.request(json!({"type": "LISTEN", "handles": [handle(1000), handle(1001)], "ref": "b"}));
    assert_eq!(
        reply,
        json!({"type": "LISTENING", "handles": 2, "waiting": 1, "ref": "b"})
    );
    bob.send_json(&json!({"type": "FETCH", "ref": "f"}));
    assert_eq!(bob.expect_type("MESSAGE")["payload"], payload_with("keep"));
    assert_eq!(bob.expect_type("FETCHED")["waiting"], 0);
    // Alice was told nothing: her letter was never dropped.
    alice.expect_nothing_pending();
    // Sessions of the fullest flooding blocks gave up the handles Bob took.
    let dropped: usize = flooders
        .iter_mut()
        .map(|flooder| {
            flooder.send_json(&json!({"type": "PING", "ref": "sync"}));
            let mut dropped = 0;
            loop {
                let frame = flooder.recv_json();
                match frame["type"].as_str() {
                    Some("HANDLE_DROPPED") => dropped += 1,
                    // Their letters pushed out each other's.
                    Some("UNDELIVERED") => assert_eq!(frame["reason"], "evicted"),
                    _ => {
                        assert_eq!(frame, json!({"type": "PONG", "ref": "sync"}));
                        break;
                    }
                }
            }
            dropped
        })
        .sum();
    assert_eq!(dropped, 2);
}
