//! PROTOCOL.md §1 at the WebSocket level, with hand-made frames: fragmentation, invalid UTF-8,
//! unmasked and oversized frames, control frames.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn fragmented_text_message_is_reassembled_with_a_ping_in_between() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(&server);
    raw.send_frame(false, OP_TEXT, br#"{"type":"#);
    raw.send_frame(false, OP_CONTINUATION, br#""CONN"#);
    // Control frames may come between fragments.
    raw.send_frame(true, OP_PING, b"hey");
    raw.send_frame(true, OP_CONTINUATION, br#"ECT"}"#);
    let mut got_pong = false;
    let reply = loop {
        match raw.read_frame(RECV_TIMEOUT) {
            ReadOutcome::Frame(f) if f.opcode == OP_PONG => {
                assert_eq!(f.payload, b"hey", "pong must echo the ping's payload");
                got_pong = true;
            }
            ReadOutcome::Frame(f) if f.opcode == OP_TEXT => {
                break serde_json::from_slice::<serde_json::Value>(&f.payload).expect("JSON");
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(reply["type"], "CONNECT", "{reply}");
    assert!(is_valid_id(reply["id"].as_str().unwrap_or_default()));
    if !got_pong {
        let frame = raw.read_frame(RECV_TIMEOUT);
        assert!(
            matches!(&frame, ReadOutcome::Frame(f) if f.opcode == OP_PONG && f.payload == b"hey"),
            "no pong: {frame:?}"
        );
    }
}

#[test]
fn a_character_split_across_fragments_is_fine() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(&server);
    let text = r#"{"type":"PING","ref":"é😀"}"#.as_bytes();
    // Split inside the four bytes of the emoji.
    let split = text.len() - 5;
    raw.send_frame(false, OP_TEXT, &text[..split]);
    raw.send_frame(true, OP_CONTINUATION, &text[split..]);
    assert_eq!(raw.recv_json(), json!({"type": "PONG", "ref": "é😀"}));
}

#[test]
fn invalid_utf8_closes_with_1007() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(&server);
    raw.connect_session();
    raw.send_frame(true, OP_TEXT, b"{\"type\":\"PING\",\"ref\":\"\xff\xfe\"}");
    assert_eq!(raw.expect_close(), 1007);
}

#[test]
fn invalid_utf8_in_a_later_fragment_closes_with_1007() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(&server);
    raw.send_frame(false, OP_TEXT, b"{\"type\":\"PING\",");
    raw.send_frame(true, OP_CONTINUATION, b"\"ref\":\"\xc3\x28\"}");
    assert_eq!(raw.expect_close(), 1007);
}

#[test]
fn binary_frames_are_bad_json_and_the_connection_stays_open() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(&server);
    raw.send_frame(true, OP_BINARY, br#"{"type":"CONNECT"}"#);
    let reply = raw.recv_json();
    assert_error_shape(&reply, "bad_json", None);
    raw.send_frame(false, OP_BINARY, b"\x00\x01");
    raw.send_frame(true, OP_CONTINUATION, b"\xff");
    let reply = raw.recv_json();
    assert_error_shape(&reply, "bad_json", None);
    raw.connect_session();
    raw.send_frame(true, OP_BINARY, b"");
    assert_error_shape(&raw.recv_json(), "bad_json", None);
    raw.send_json(&json!({"type": "PING", "ref": "alive"}));
    assert_eq!(raw.recv_json(), json!({"type": "PONG", "ref": "alive"}));
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(&server);
    raw.connect_session();
    let frame = encode_frame(true, OP_TEXT, br#"{"type":"PING"}"#, None);
    raw.send_bytes(&frame).expect("send");
    assert_eq!(raw.expect_close(), 1002);
}

#[test]
fn reserved_opcodes_rsv_bits_and_stray_continuations_close_with_1002() {
    let server = Server::start(&[]);
    let mut cases: Vec<Vec<u8>> = Vec::new();
    cases.push(encode_frame(true, 0x3, b"x", Some([1, 2, 3, 4])));
    let mut rsv1 = encode_frame(true, OP_TEXT, br#"{"type":"PING"}"#, Some([1, 2, 3, 4]));
    rsv1[0] |= 0x40; // permessage-deflate was not negotiated
    cases.push(rsv1);
    cases.push(encode_frame(
        true,
        OP_CONTINUATION,
        b"x",
        Some([1, 2, 3, 4]),
    ));
    // A fragmented control frame.
    cases.push(encode_frame(false, OP_PING, b"x", Some([1, 2, 3, 4])));
    for bytes in cases {
        let mut raw = RawClient::connect(&server);
        raw.send_bytes(&bytes).expect("send");
        assert_eq!(raw.expect_close(), 1002, "frame {bytes:02x?}");
    }
}

#[test]
fn huge_frame_header_closes_with_1009_without_waiting_for_the_payload() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(&server);
    raw.connect_session();
    let started = Instant::now();
    raw.send_bytes(&encode_frame_header(
        true,
        OP_TEXT,
        1 << 40,
        Some([9, 9, 9, 9]),
    ))
    .expect("send");
    assert_eq!(raw.expect_close(), 1009);
    assert!(started.elapsed() < Duration::from_secs(3));
    // The server is fine.
    let (mut other, _, _) = connect_session(&server);
    other.expect_nothing_pending();
}

#[test]
fn fragments_adding_up_to_more_than_max_message_bytes_close_with_1009() {
    let server = Server::start(&["--max-message-bytes", "1000"]);
    let mut raw = RawClient::connect(&server);
    raw.connect_session();
    let part = vec![b' '; 400];
    raw.send_frame(false, OP_TEXT, b"{\"type\":\"PING\"");
    raw.send_frame(false, OP_CONTINUATION, &part);
    raw.send_frame(false, OP_CONTINUATION, &part);
    // The connection may be closed by now; a write error is fine.
    let _ = raw.send_bytes(&encode_frame(
        false,
        OP_CONTINUATION,
        &part,
        Some([1, 1, 1, 1]),
    ));
    let _ = raw.send_bytes(&encode_frame(
        true,
        OP_CONTINUATION,
        b"}",
        Some([1, 1, 1, 1]),
    ));
    assert_eq!(raw.expect_close(), 1009);
}

#[test]
fn single_frame_over_max_message_bytes_closes_with_1009() {
    let server = Server::start(&["--max-message-bytes", "1000"]);
    let mut raw = RawClient::connect(&server);
    raw.connect_session();
    let text = format!(r#"{{"type":"PING","x":"{}"}}"#, "y".repeat(1000));
    let _ = raw.send_bytes(&encode_frame(
        true,
        OP_TEXT,
        text.as_bytes(),
        Some([5, 6, 7, 8]),
    ));
    assert_eq!(raw.expect_close(), 1009);
}

#[test]
fn websocket_ping_gets_a_pong_with_the_same_payload() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(&server);
    raw.send_frame(true, OP_PING, b"before-connect");
    match raw.read_frame(RECV_TIMEOUT) {
        ReadOutcome::Frame(f) => {
            assert_eq!(f.opcode, OP_PONG);
            assert_eq!(f.payload, b"before-connect");
        }
        other => panic!("no pong: {other:?}"),
    }
    raw.connect_session();
    raw.send_frame(true, OP_PING, b"");
    match raw.read_frame(RECV_TIMEOUT) {
        ReadOutcome::Frame(f) => {
            assert_eq!(f.opcode, OP_PONG);
            assert!(f.payload.is_empty());
        }
        other => panic!("no pong: {other:?}"),
    }
}

#[test]
fn client_close_is_echoed_and_the_tcp_connection_ends() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(&server);
    raw.connect_session();
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    raw.send_frame(true, OP_CLOSE, &payload);
    assert_eq!(raw.expect_close(), 1000);
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        match raw.read_frame(Duration::from_millis(200)) {
            ReadOutcome::Ended => break,
            ReadOutcome::Timeout if Instant::now() < deadline => {}
            other => panic!("the server kept the connection open: {other:?}"),
        }
    }
}

#[test]
fn server_frames_are_unmasked_and_unfragmented() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(&server);
    raw.send_json(&json!({"type": "CONNECT"}));
    // Read the raw bytes of the reply header: the mask bit must be clear.
    let mut first = [0u8; 2];
    std::io::Read::read_exact(&mut raw.stream, &mut first).expect("read");
    assert_eq!(first[0], 0x81, "FIN + text expected, got {:02x}", first[0]);
    assert_eq!(first[1] & 0x80, 0, "server frames must not be masked");
}

#[test]
fn frames_sent_with_the_upgrade_request_are_not_lost() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut stream = connect_tcp(&addr).expect("connect");
    let mut bytes = upgrade_request(&addr, None).into_bytes();
    bytes.extend(encode_frame(
        true,
        OP_TEXT,
        br#"{"type":"PING","ref":"early"}"#,
        Some([3, 1, 4, 1]),
    ));
    std::io::Write::write_all(&mut stream, &bytes).expect("send");
    let head = read_http_response(&mut stream, true).expect("upgrade response");
    assert_eq!(head.status, 101);
    // Whatever followed the head in the same read is the start of the frame stream.
    let mut rest = head.body;
    let mut chunk = [0u8; 256];
    while rest.len() < 2 || rest.len() < 2 + usize::from(rest[1] & 0x7f) {
        let n = std::io::Read::read(&mut stream, &mut chunk).expect("read");
        assert!(n > 0, "connection closed");
        rest.extend_from_slice(&chunk[..n]);
    }
    let text = &rest[2..2 + usize::from(rest[1] & 0x7f)];
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(text).expect("JSON"),
        json!({"type": "PONG", "ref": "early"})
    );
}

#[test]
fn upgrade_accepts_a_connection_header_with_several_tokens() {
    let server = Server::start(&[]);
    let addr = server.addr();
    // What Firefox sends.
    let request = upgrade_request(&addr, None)
        .replace("Connection: Upgrade", "Connection: keep-alive, Upgrade")
        .replace("Upgrade: websocket", "Upgrade: WebSocket");
    let mut raw = RawClient::connect_with_request(&server, &request);
    raw.send_json(&json!({"type": "PING"}));
    assert_eq!(raw.recv_json(), json!({"type": "PONG"}));
}

#[test]
fn upgrade_with_a_wrong_version_is_refused() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let request = upgrade_request(&addr, None)
        .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let response = http_raw(&addr, request.as_bytes(), false);
    // RFC 6455 §4.4: 426, naming the version we speak.
    assert_eq!(response.status, 426);
    assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
    response.assert_security_headers();
}

#[test]
fn upgrade_without_a_valid_key_is_refused_and_the_server_keeps_serving() {
    let server = Server::start(&[]);
    let addr = server.addr();
    for (from, to) in [
        ("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ"),
        ("dGhlIHNhbXBsZSBub25jZQ==", "not base64 at all!!!!!!="),
        ("Sec-WebSocket-Key", "X-Not-The-Key"),
        ("HTTP/1.1", "HTTP/1.0"),
    ] {
        let request = upgrade_request(&addr, None).replacen(from, to, 1);
        let response = http_raw(&addr, request.as_bytes(), false);
        assert_eq!(response.status, 400, "{from:?} -> {to:?}");
        response.assert_security_headers();
    }
    // RFC 6455 §4.2.1: the opening handshake carries a Host.
    let without_host = upgrade_request(&addr, None).replacen(&format!("Host: {addr}\r\n"), "", 1);
    assert!(!without_host.contains("Host:"));
    let response = http_raw(&addr, without_host.as_bytes(), false);
    assert_eq!(response.status, 400, "no Host");
    let mut client = Client::connect(&server);
    client.send_json(&json!({"type": "PING"}));
    assert_eq!(client.recv_json(), json!({"type": "PONG"}));
}
