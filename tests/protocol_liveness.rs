//! PROTOCOL.md §1 liveness: server pings, the idle timeout (1001) and the resume window after it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Wait for the first WebSocket ping from the server, skipping nothing else.
fn wait_for_ping(raw: &mut RawClient, timeout: Duration) -> Instant {
    match raw.read_frame(timeout) {
        ReadOutcome::Frame(f) if f.opcode == OP_PING => Instant::now(),
        other => panic!("expected a ping, got {other:?}"),
    }
}

#[test]
fn server_pings_a_silent_connection() {
    let server = Server::start(&["--ping-interval", "0.3", "--idle-timeout", "30"]);
    let mut raw = RawClient::connect(&server);
    raw.connect_session();
    let quiet_since = Instant::now();
    let pinged_at = wait_for_ping(&mut raw, Duration::from_secs(3));
    assert!(
        pinged_at - quiet_since >= Duration::from_millis(200),
        "pinged before the connection was silent for ping_interval"
    );
    // Answering with a pong is activity: the next ping comes a ping interval later, not at once.
    raw.send_frame(true, OP_PONG, b"");
    let answered = Instant::now();
    let pinged_again = wait_for_ping(&mut raw, Duration::from_secs(3));
    assert!(pinged_again - answered >= Duration::from_millis(200));
}

#[test]
fn a_client_that_answers_pings_is_never_idle() {
    let server = Server::start(&["--ping-interval", "0.3", "--idle-timeout", "1"]);
    // tungstenite answers pings while it reads.
    let (mut client, _, _) = connect_session(&server);
    client.expect_silence(3000);
    client.expect_nothing_pending();
}

#[test]
fn any_frame_ends_silence() {
    let server = Server::start(&["--ping-interval", "0.3", "--idle-timeout", "1"]);
    let mut raw = RawClient::connect(&server);
    raw.connect_session();
    // No pongs, but a JSON PING every 250 ms: never idle for 1 s.
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        n += 1;
        let reference = format!("k{n}");
        raw.send_json(&json!({"type": "PING", "ref": reference}));
        assert_eq!(raw.recv_json(), json!({"type": "PONG", "ref": reference}));
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn idle_connection_is_closed_with_1001_and_its_session_can_resume() {
    let server = Server::start(&[
        "--ping-interval",
        "0.3",
        "--idle-timeout",
        "1",
        "--resume-grace",
        "30",
    ]);
    let mut idle = RawClient::connect(&server);
    idle.connect_session();
    let idle_id = idle.id.clone();
    let (mut friend, friend_id, _) = connect_session(&server);
    friend.send_json(&json!({"type": "FRIEND_REQUEST", "to": idle_id, "public_key": TEST_KEY}));
    assert_eq!(
        idle.expect_type("FRIEND_REQUEST")["from"],
        friend_id.as_str()
    );
    idle.send_json(&json!({"type": "FRIEND_ACCEPT", "to": friend_id, "public_key": TEST_KEY}));
    let last_activity = Instant::now();
    friend.expect_type("FRIEND_ACCEPT");

    // The idle client never answers the pings; the friend keeps reading (answering its pings).
    let mut friend_got = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(5);
    let code = loop {
        assert!(
            Instant::now() < give_up,
            "the idle connection was not closed"
        );
        match idle.read_frame(Duration::from_millis(50)) {
            ReadOutcome::Frame(f) if f.opcode == OP_CLOSE => {
                break f
                    .payload
                    .get(..2)
                    .map_or(1005, |b| u16::from_be_bytes([b[0], b[1]]));
            }
            ReadOutcome::Frame(f) if f.opcode == OP_PING => {}
            ReadOutcome::Timeout => {}
            other => panic!("expected pings then a close, got {other:?}"),
        }
        if let Some(text) = friend.try_recv_text(Duration::from_millis(50)) {
            friend_got.push(serde_json::from_str::<serde_json::Value>(&text).expect("JSON"));
        }
    };
    let elapsed = last_activity.elapsed();
    assert_eq!(code, 1001);
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed after {elapsed:?}, before the idle timeout"
    );
    // Without waiting for the closing handshake: the TCP connection ends promptly.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match idle.read_frame(Duration::from_millis(100)) {
            ReadOutcome::Ended => break,
            ReadOutcome::Timeout | ReadOutcome::Frame(_) if Instant::now() < deadline => {}
            other => panic!("the server waited for the closing handshake: {other:?}"),
        }
    }
    // The session is in its resume window.
    if friend_got.is_empty() {
        friend_got.push(friend.recv_json());
    }
    assert_eq!(
        friend_got,
        [json!({"type": "PRESENCE", "id": idle_id, "online": false})]
    );
    friend.send_json(&message(&idle_id, TEST_PAYLOAD, Some("q")));
    friend.expect_queued_ack("q");
    let (mut back, reply) = resume_session(&server, &idle_id, &idle.token);
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(back.expect_type("MESSAGE")["payload"], TEST_PAYLOAD);
}

#[test]
fn zero_turns_pings_and_the_idle_drop_off() {
    let server = Server::start(&["--ping-interval", "0", "--idle-timeout", "0"]);
    let mut raw = RawClient::connect(&server);
    raw.connect_session();
    match raw.read_frame(Duration::from_millis(2500)) {
        ReadOutcome::Timeout => {}
        other => panic!("expected no frame at all, got {other:?}"),
    }
    raw.send_json(&json!({"type": "PING", "ref": "still"}));
    assert_eq!(raw.recv_json(), json!({"type": "PONG", "ref": "still"}));
}
