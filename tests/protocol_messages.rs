//! PROTOCOL.md §3 MESSAGE: forwarding, byte-identical payloads, ACKs, ordering, peer_busy.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

#[test]
fn message_is_forwarded_with_from_and_ts_and_acknowledged() {
    let server = Server::start(&[]);
    let (mut a, a_id, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    let before = now_unix_ms();
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("17")));
    assert_eq!(a.recv_json(), json!({"type": "ACK", "ref": "17"}));
    let forwarded = b.expect_type("MESSAGE");
    let after = now_unix_ms();
    let object = forwarded.as_object().expect("object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["from", "payload", "ts", "type"], "{forwarded}");
    assert_eq!(forwarded["from"], a_id.as_str());
    assert_eq!(forwarded["payload"], TEST_PAYLOAD);
    let ts = forwarded["ts"].as_u64().expect("ts is an integer");
    // The server's clock is this machine's clock; allow a little slack for rounding.
    assert!(
        ts + 5 >= before && ts <= after + 5,
        "ts {ts} not within [{before}, {after}]"
    );
}

#[test]
fn payload_is_forwarded_byte_identical_with_its_escapes() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    // The JSON text of the payload string, escapes included, exactly as the client wrote it.
    let raw_payload = r#""-----BEGIN PGP MESSAGE-----\n\nwcBM\u002dA\/B\\C \"q\" \u00e9\u00E9 é 😀 \ud83d\ude00\t\r\n=AbC\/\n-----END PGP MESSAGE-----\n""#;
    let frame =
        format!(r#"{{"type":"MESSAGE","to":"{b_id}","payload":{raw_payload},"ref":"esc"}}"#);
    a.send_raw_text(&frame);
    a.expect_ack("esc");
    let received = b.recv_text();
    assert!(
        received.contains(&format!("\"payload\":{raw_payload}")),
        "payload was re-escaped: sent {raw_payload}, got {received}"
    );
    // And it is still valid JSON that decodes to the same string.
    let value: Value = serde_json::from_str(&received).expect("JSON");
    let expected: String = serde_json::from_str(raw_payload).expect("payload decodes");
    assert_eq!(value["payload"], expected);
}

#[test]
fn forwarded_frames_of_every_header_size_arrive_whole() {
    // The server writes a forwarded frame's WebSocket header before its text, from the length
    // it computes: frames whose length straddles 125/126 and 65,535/65,536 (7-bit, 16-bit and
    // 64-bit lengths) must still reach the client whole and in order.
    let server = Server::start(&["--max-message-bytes", "70000", "--rate-messages", "0"]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    let small = 0..60;
    let large = 65_420..65_520;
    let mut lengths = Vec::new();
    // One at a time: 100 frames of 64 KiB unread would make the sender peer_busy.
    for padding in small.chain(large) {
        let payload = format!("{PAYLOAD_HEADER}{}", "q".repeat(padding));
        a.send_json(&message(&b_id, &payload, None));
        let text = b.recv_text();
        lengths.push(text.len());
        let forwarded: Value = serde_json::from_str(&text).expect("a whole JSON frame");
        assert_eq!(forwarded["payload"].as_str(), Some(payload.as_str()));
    }
    a.expect_nothing_pending();
    for boundary in [125, 126, 65_535, 65_536] {
        assert!(
            lengths.iter().any(|&len| len <= boundary) && lengths.iter().any(|&len| len > boundary),
            "no frames on both sides of {boundary}: {lengths:?}"
        );
    }
    b.expect_nothing_pending();
}

#[test]
fn message_without_ref_is_not_acknowledged() {
    let server = Server::start(&[]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    a.send_json(&message(&b_id, TEST_PAYLOAD, None));
    a.expect_nothing_pending();
    assert_eq!(b.expect_type("MESSAGE")["payload"], TEST_PAYLOAD);
}

#[test]
fn a_thousand_messages_arrive_in_order() {
    const COUNT: usize = 1000;
    let server = Server::start(&["--rate-messages", "0"]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    let reader = std::thread::spawn(move || {
        let mut payloads = Vec::with_capacity(COUNT);
        for _ in 0..COUNT {
            let value = b.expect_type("MESSAGE");
            payloads.push(value["payload"].as_str().unwrap_or_default().to_string());
        }
        b.expect_nothing_pending();
        // `b` goes back to the main thread: dropping it here would tell `a` it went away.
        (payloads, b)
    });
    for i in 0..COUNT {
        // Every other message carries a ref: ACKs for those, silence for the rest.
        let reference = (i % 2 == 0).then(|| format!("m{i}"));
        a.write_raw_text(
            &message(
                &b_id,
                &payload_with(&format!("seq {i}")),
                reference.as_deref(),
            )
            .to_string(),
        );
        if i % 50 == 49 {
            a.flush();
        }
    }
    a.flush();
    for i in (0..COUNT).step_by(2) {
        a.expect_ack(&format!("m{i}"));
    }
    a.expect_nothing_pending();
    let (payloads, _b) = reader.join().expect("reader thread");
    for (i, payload) in payloads.iter().enumerate() {
        assert_eq!(
            payload,
            &payload_with(&format!("seq {i}")),
            "message {i} out of order"
        );
    }
}

#[test]
fn message_of_exactly_max_message_bytes_is_accepted_and_one_more_byte_closes_with_1009() {
    let limit = 2048;
    let server = Server::start(&[
        "--max-message-bytes",
        &limit.to_string(),
        "--rate-messages",
        "0",
    ]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    let frame_of_len = |len: usize| {
        let empty = message(&b_id, PAYLOAD_HEADER, Some("big")).to_string();
        let padding = "x".repeat(len - empty.len());
        let frame = message(&b_id, &format!("{PAYLOAD_HEADER}{padding}"), Some("big")).to_string();
        assert_eq!(frame.len(), len);
        frame
    };
    a.send_raw_text(&frame_of_len(limit));
    a.expect_ack("big");
    let forwarded = b.expect_type("MESSAGE");
    assert!(
        forwarded["payload"]
            .as_str()
            .is_some_and(|p| p.len() > limit - 100)
    );
    a.send_raw_text(&frame_of_len(limit + 1));
    assert_eq!(a.expect_close(), 1009);
    // Nothing of it was forwarded; A's session is merely in its resume window.
    assert_eq!(
        b.recv_json(),
        json!({"type": "PRESENCE", "id": a.id, "online": false})
    );
    b.expect_nothing_pending();
}

#[test]
fn a_never_reading_recipient_makes_its_senders_peer_busy_while_others_are_unaffected() {
    let server = Server::start(&["--rate-messages", "0"]);
    let (mut sender, _, _) = connect_session(&server);
    let (mut sink, sink_id, _) = connect_session(&server);
    make_friends(&mut sender, &mut sink);
    // From here on `sink` reads nothing: its socket fills up.
    let (mut h1, _, _) = connect_session(&server);
    let (mut h2, h2_id, _) = connect_session(&server);
    make_friends(&mut h1, &mut h2);

    let chunk = "A".repeat(60_000);
    let mut acked = 0usize;
    let mut busy = false;
    let mut worst_latency = Duration::ZERO;
    for i in 0..2_000 {
        let reference = format!("f{i}");
        let reply = sender.request(message(
            &sink_id,
            &payload_with(&format!("{i} {chunk}")),
            Some(&reference),
        ));
        match reply["type"].as_str() {
            Some("ACK") => {
                assert_eq!(reply, json!({"type": "ACK", "ref": reference}));
                acked += 1;
            }
            Some("ERROR") => {
                assert_error_shape(&reply, "peer_busy", Some(&reference));
                busy = true;
                break;
            }
            _ => panic!("unexpected reply {reply}"),
        }
        if i % 10 == 0 {
            let started = Instant::now();
            h1.send_json(&message(&h2_id, TEST_PAYLOAD, Some("h")));
            h1.expect_ack("h");
            h2.expect_type("MESSAGE");
            worst_latency = worst_latency.max(started.elapsed());
        }
    }
    assert!(
        busy,
        "2,000 messages of 60 kB to a reader that never reads were all accepted"
    );
    assert!(acked > 0, "the very first message was refused");
    eprintln!(
        "peer_busy after {acked} acknowledged messages of 60 kB; worst healthy latency {worst_latency:?}"
    );
    assert!(
        worst_latency < Duration::from_millis(500),
        "the healthy pair slowed down: {worst_latency:?}"
    );
    // The server's memory stays bounded however much the sender pushes.
    let rss_kib = server_rss_kib(&server);
    assert!(
        rss_kib < 64 * 1024,
        "server RSS {rss_kib} KiB after filling one reader"
    );
    // Still busy, and the healthy pair still fine.
    let reply = sender.request(message(&sink_id, &payload_with(&chunk), Some("again")));
    assert_error_shape(&reply, "peer_busy", Some("again"));
    h1.send_json(&message(&h2_id, TEST_PAYLOAD, Some("h")));
    h1.expect_ack("h");
    h2.expect_type("MESSAGE");

    // The sink now reads: exactly the acknowledged messages arrive, in order, and nothing refused.
    for i in 0..acked {
        let value = sink.expect_type("MESSAGE");
        let payload = value["payload"].as_str().unwrap_or_default();
        assert!(
            payload.starts_with(&format!("{PAYLOAD_HEADER}\n\n{i} ")),
            "message {i} missing or out of order"
        );
    }
    sink.expect_nothing_pending();
    // Once drained, the sink is no longer busy.
    sender.send_json(&message(&sink_id, TEST_PAYLOAD, Some("after")));
    sender.expect_ack("after");
    assert_eq!(sink.expect_type("MESSAGE")["payload"], TEST_PAYLOAD);
}

#[test]
fn peer_busy_does_not_count_towards_the_error_flood() {
    let server = Server::start(&["--rate-messages", "0", "--max-message-bytes", "65536"]);
    let (mut sender, _, _) = connect_session(&server);
    let (mut sink, sink_id, _) = connect_session(&server);
    make_friends(&mut sender, &mut sink);
    let chunk = "B".repeat(60_000);
    let mut busy_count = 0;
    let mut sent = 0;
    while busy_count < 110 {
        sent += 1;
        assert!(sent < 3_000, "never became busy");
        let reply = sender.request(message(&sink_id, &payload_with(&chunk), Some("p")));
        if reply["type"] == "ERROR" {
            assert_error_shape(&reply, "peer_busy", Some("p"));
            busy_count += 1;
        }
    }
    // 110 peer_busy errors later the connection is still open.
    sender.expect_nothing_pending();
}

#[test]
fn a_full_resume_queue_makes_senders_peer_busy_and_keeps_what_it_acknowledged() {
    let server = Server::start(&["--rate-messages", "0", "--resume-grace", "30"]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, b_id, b_token) = connect_session(&server);
    make_friends(&mut a, &mut b);
    b.drop_connection();
    a.expect_type("PRESENCE");
    let chunk = "Q".repeat(60_000);
    let mut queued = 0usize;
    loop {
        assert!(queued < 2_000, "the resume queue is unbounded");
        let reference = format!("q{queued}");
        let reply = a.request(message(
            &b_id,
            &payload_with(&format!("{queued} {chunk}")),
            Some(&reference),
        ));
        if reply["type"] == "ERROR" {
            assert_error_shape(&reply, "peer_busy", Some(&reference));
            break;
        }
        assert_eq!(
            reply,
            json!({"type": "ACK", "ref": reference, "queued": true})
        );
        queued += 1;
    }
    assert!(queued > 0, "not even one message was queued");
    // Small messages are refused too while the queue is full.
    let reply = a.request(message(&b_id, TEST_PAYLOAD, Some("small")));
    assert_error_shape(&reply, "peer_busy", Some("small"));
    let (mut b2, reply) = resume_session(&server, &b_id, &b_token);
    assert_eq!(reply["resumed"], true);
    for i in 0..queued {
        let value = b2.expect_type("MESSAGE");
        let payload = value["payload"].as_str().unwrap_or_default();
        assert!(
            payload.starts_with(&format!("{PAYLOAD_HEADER}\n\n{i} ")),
            "queued message {i} missing or out of order"
        );
    }
    b2.expect_nothing_pending();
    assert_eq!(a.expect_type("PRESENCE")["online"], true);
    a.expect_nothing_pending();
}

#[test]
fn messages_to_oneself_are_not_friends() {
    let server = Server::start(&[]);
    let (mut a, a_id, _) = connect_session(&server);
    let reply = a.request(message(&a_id, TEST_PAYLOAD, Some("me")));
    assert_error_shape(&reply, "not_friends", Some("me"));
    let reply = a.request(json!({"type": "FRIEND_REMOVE", "to": a_id, "ref": "me"}));
    assert_error_shape(&reply, "not_friends", Some("me"));
    let reply = a
        .request(json!({"type": "FRIEND_ACCEPT", "to": a_id, "public_key": TEST_KEY, "ref": "me"}));
    assert_error_shape(&reply, "no_pending_request", Some("me"));
}

/// The server's resident set size in KiB, from /proc.
fn server_rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}
