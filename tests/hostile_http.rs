//! Hostile clients before a session exists: slowloris on HTTP and during the WebSocket
//! handshake, a WebSocket that never sends CONNECT, a frame trickled byte by byte, and
//! cross-site WebSocket attempts from foreign Origins. Each has its expected outcome, and a
//! healthy pair of friends on the same server keeps its round trips fast meanwhile.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Generous: round trips take about a millisecond when the machine is idle.
const RTT_BOUND: Duration = Duration::from_millis(500);

/// A complete upgrade request up to its last header, whose value then never ends.
const SLOW_UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Slow: ";

/// What a slow client saw: the status of the response it finally got, and when.
struct SlowOutcome {
    status: u16,
    after: Duration,
    bytes_sent: usize,
}

/// Sends `head` one byte every `interval` (then `filler` bytes, forever), never finishing the
/// head, until the server answers; returns that answer. Panics if nothing comes within 20 s.
fn trickle_head(addr: String, head: &'static [u8], interval: Duration) -> SlowOutcome {
    let mut stream = TcpStream::connect(&addr).expect("connect");
    let started = Instant::now();
    stream
        .set_read_timeout(Some(interval))
        .expect("read timeout");
    let filler = b"abcdefghij";
    let mut sent = 0;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(20) {
        let byte = head
            .get(sent)
            .copied()
            .unwrap_or(filler[sent % filler.len()]);
        if stream.write_all(&[byte]).is_ok() {
            sent += 1;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                received.extend_from_slice(&chunk[..n]);
                if find(&received, b"\r\n\r\n").is_some() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let after = started.elapsed();
    let text = String::from_utf8_lossy(&received);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response after {after:?}: {text:?}"));
    SlowOutcome {
        status,
        after,
        bytes_sent: sent,
    }
}

fn assert_cut_off_at_10_s(what: &str, outcome: &SlowOutcome, expected_status: u16) {
    eprintln!(
        "{what}: {} after {:?} ({} bytes sent)",
        outcome.status, outcome.after, outcome.bytes_sent
    );
    assert_eq!(outcome.status, expected_status, "{what}");
    // The head deadline is 10 s, checked once per 1 s sweep.
    assert!(
        outcome.after >= Duration::from_millis(9_500) && outcome.after <= Duration::from_secs(13),
        "{what}: cut off after {:?}, expected about 10 s",
        outcome.after
    );
}

#[test]
fn slowloris_heads_and_silent_websockets_are_cut_off_at_10_s_while_a_pair_chats() {
    let server = Server::start(&[]);
    let mut pair = HealthyPair::new(&server);
    let before = RttStats {
        samples: (0..10).map(|_| pair.round_trip()).collect(),
    };
    let monitor = pair.monitor();

    let tick = Duration::from_millis(250);
    let http = {
        let addr = server.addr();
        thread::spawn(move || {
            trickle_head(
                addr,
                b"GET /index.html HTTP/1.1\r\nHost: a\r\nX-Slow: ",
                tick,
            )
        })
    };
    let handshake = {
        let addr = server.addr();
        thread::spawn(move || {
            trickle_head(
                addr,
                SLOW_UPGRADE,
                // Faster, so that the whole upgrade request but its blank line gets out.
                tick / 5,
            )
        })
    };
    // A handshake that completes, then pings but never sends CONNECT: pings do not count.
    let mut silent = RawClient::connect(&server);
    let opened = Instant::now();
    let no_connect_code = loop {
        silent.send_frame(true, OP_PING, b"still here");
        match silent.read_frame(Duration::from_secs(1)) {
            ReadOutcome::Frame(frame) if frame.opcode == OP_CLOSE => {
                break frame
                    .payload
                    .get(..2)
                    .map(|code| u16::from_be_bytes([code[0], code[1]]));
            }
            ReadOutcome::Frame(frame) => assert_eq!(frame.opcode, OP_PONG, "{frame:?}"),
            ReadOutcome::Timeout => {}
            ReadOutcome::Ended => panic!("dropped without a close frame"),
        }
        assert!(opened.elapsed() < Duration::from_secs(15), "never closed");
    };
    let no_connect_after = opened.elapsed();

    let http = http.join().expect("slow HTTP client");
    let handshake = handshake.join().expect("slow handshake client");
    let (during, mut pair) = monitor.stop();

    assert_cut_off_at_10_s("slow HTTP head", &http, 408);
    assert_cut_off_at_10_s("slow WebSocket handshake", &handshake, 408);
    assert!(
        handshake.bytes_sent > SLOW_UPGRADE.len(),
        "the upgrade did not get out"
    );
    eprintln!("WebSocket without CONNECT: {no_connect_code:?} after {no_connect_after:?}");
    assert_eq!(no_connect_code, Some(1008), "no CONNECT in time");
    assert!(
        no_connect_after >= Duration::from_millis(9_500)
            && no_connect_after <= Duration::from_secs(13),
        "closed after {no_connect_after:?}, expected about 10 s"
    );
    before.assert_healthy("before the slow clients", 10, RTT_BOUND);
    during.assert_healthy("during the slow clients", 20, RTT_BOUND);
    pair.round_trip();
}

#[test]
fn a_frame_trickled_byte_by_byte_does_not_keep_a_connection_alive() {
    // Only complete messages end silence: a client trickling one frame is idle.
    let server = Server::start(&["--idle-timeout", "3", "--ping-interval", "1"]);
    let mut pair = HealthyPair::new(&server);
    let mut slow = RawClient::connect(&server);
    slow.connect_session();
    let frame = encode_frame(
        true,
        OP_TEXT,
        json!({"type": "PING", "ref": "never finished"})
            .to_string()
            .as_bytes(),
        Some([1, 2, 3, 4]),
    );
    let started = Instant::now();
    let mut sent = 0;
    let code = loop {
        if let Some(byte) = frame.get(sent)
            && slow.send_bytes(&[*byte]).is_ok()
        {
            sent += 1;
        }
        // The server's pings go unanswered: that is what a stuck client does.
        match slow.read_frame(Duration::from_millis(400)) {
            ReadOutcome::Frame(f) if f.opcode == OP_CLOSE => {
                break f.payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
            ReadOutcome::Frame(f) => assert_eq!(f.opcode, OP_PING, "{f:?}"),
            ReadOutcome::Timeout => {}
            ReadOutcome::Ended => break None,
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never closed");
        pair.round_trip();
    };
    let after = started.elapsed();
    eprintln!(
        "trickled frame: {code:?} after {after:?}, {sent} of {} bytes",
        frame.len()
    );
    assert!(sent < frame.len(), "the frame was finished after all");
    // Closed for idleness (1001), without waiting for the closing handshake (the close frame
    // may or may not make it out first).
    assert!(matches!(code, Some(1001) | None), "{code:?}");
    assert!(
        after >= Duration::from_millis(2_500) && after <= Duration::from_secs(6),
        "closed after {after:?}, expected about 3 s"
    );
    // The session entered its resume window like any dropped one.
    let (_resumed, reply) = resume_session(&server, &slow.id, &slow.token);
    assert_eq!(reply["resumed"], true, "{reply}");
}

#[test]
fn cross_site_websocket_attempts_are_refused_with_403_while_a_pair_chats() {
    let server = Server::start(&["--allow-origin", "https://chat.example"]);
    let mut pair = HealthyPair::new(&server);
    let mut during = RttStats {
        samples: Vec::new(),
    };
    let host = server.addr();
    let foreign = [
        "https://evil.example",
        "http://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
        "https://chat.example.evil.example",
        "http://localhost:1",
        "file://",
        "chrome-extension://abcdef",
    ];
    for round in 0..25 {
        for origin in foreign {
            let request = upgrade_request(&host, Some(origin));
            let response = http_raw(&host, request.as_bytes(), false);
            assert_eq!(response.status, 403, "Origin {origin} (round {round})");
            response.assert_security_headers();
            assert!(response.header("Sec-WebSocket-Accept").is_none());
        }
        during.samples.push(pair.round_trip());
    }
    // The same origin and the listed one still get a WebSocket.
    for origin in [format!("http://{host}"), "https://chat.example".to_owned()] {
        let request = upgrade_request(&host, Some(&origin));
        let mut client = RawClient::connect_with_request(&server, &request);
        client.send_json(&json!({"type": "PING", "ref": "ok"}));
        assert_eq!(client.expect_type("PONG")["ref"], "ok");
    }
    during.assert_healthy("between cross-site attempts", 25, RTT_BOUND);
}
