//! A storm of oversized and malformed WebSocket frames from many clients at once. Each kind has
//! the outcome docs/PROTOCOL.md §1 and §5 give it; the server's memory stays bounded; the
//! sessions of clients closed for bad frames can be resumed; and a healthy pair keeps fast
//! round trips throughout.

mod common;

use std::thread;
use std::time::Duration;

use common::*;
use serde_json::json;

const RTT_BOUND: Duration = Duration::from_millis(500);
const MAX_MESSAGE_BYTES: usize = 65_536;
/// Clients of each kind, all running at once.
const PER_KIND: usize = 8;

#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// One text frame one byte over `max_message_bytes`: 1009.
    Oversized,
    /// A header claiming 2^62 bytes, and no payload: 1009 at once, nothing allocated.
    HugeHeader,
    /// Continuation frames of 1 KiB adding up past the limit: 1009.
    Fragments,
    /// An unmasked client frame: 1002.
    Unmasked,
    /// Invalid UTF-8 in a text frame: 1007.
    BadUtf8,
    /// A control frame over 125 bytes: 1002.
    LongPing,
    /// Binary frames: `bad_json`, and the connection stays open.
    Binary,
    /// 101 malformed JSON texts: 100 errors, the 101st error, then 1008.
    BadJson,
}

const KINDS: [Hostile; 8] = [
    Hostile::Oversized,
    Hostile::HugeHeader,
    Hostile::Fragments,
    Hostile::Unmasked,
    Hostile::BadUtf8,
    Hostile::LongPing,
    Hostile::Binary,
    Hostile::BadJson,
];

const MASK: Option<[u8; 4]> = Some([0xa1, 0xb2, 0xc3, 0xd4]);

/// Plays one hostile client and checks its outcome; returns its session (id, token).
fn play(server: &Server, kind: Hostile) -> (String, String) {
    let mut client = RawClient::connect(server);
    client.connect_session();
    let session = (client.id.clone(), client.token.clone());
    let expected_close = match kind {
        Hostile::Oversized => {
            client.send_text(&"x".repeat(MAX_MESSAGE_BYTES + 1));
            Some(1009)
        }
        Hostile::HugeHeader => {
            client
                .send_bytes(&encode_frame_header(true, OP_TEXT, 1 << 62, MASK))
                .expect("send header");
            Some(1009)
        }
        Hostile::Fragments => {
            let chunk = vec![b'a'; 1024];
            client.send_frame(false, OP_TEXT, &chunk);
            for _ in 0..MAX_MESSAGE_BYTES / 1024 + 1 {
                // The server may close and stop reading before the last fragments.
                if client
                    .send_bytes(&encode_frame(false, OP_CONTINUATION, &chunk, MASK))
                    .is_err()
                {
                    break;
                }
            }
            Some(1009)
        }
        Hostile::Unmasked => {
            client
                .send_bytes(&encode_frame(true, OP_TEXT, br#"{"type":"PING"}"#, None))
                .expect("send");
            Some(1002)
        }
        Hostile::BadUtf8 => {
            client.send_frame(true, OP_TEXT, b"{\"type\":\"PING\",\"ref\":\"\xff\xfe\"}");
            Some(1007)
        }
        Hostile::LongPing => {
            client.send_frame(true, OP_PING, &[b'p'; 126]);
            Some(1002)
        }
        Hostile::Binary => {
            for n in 0..20 {
                client.send_frame(true, OP_BINARY, &vec![n as u8; 60 * 1024]);
                assert_eq!(client.expect_type("ERROR")["code"], "bad_json");
            }
            client.send_json(&json!({"type": "PING", "ref": "alive"}));
            assert_eq!(client.expect_type("PONG")["ref"], "alive");
            None
        }
        Hostile::BadJson => {
            let garbage = [
                "{",
                "[]",
                "{\"type\":",
                "nul",
                "\"text\"",
                "{\"a\":1,}",
                "{}}",
            ];
            for n in 0..101 {
                client.send_text(garbage[n % garbage.len()]);
            }
            for n in 0..101 {
                let reply = client.expect_type("ERROR");
                let code = reply["code"].as_str().unwrap_or_default();
                assert!(
                    code == "bad_json" || code == "bad_request",
                    "{kind:?} {n}: {reply}"
                );
            }
            Some(1008)
        }
    };
    if let Some(code) = expected_close {
        assert_eq!(client.expect_close(), code, "{kind:?}");
    }
    session
}

/// Every kind of hostile client, [`PER_KIND`] of each, all at once; their sessions.
fn storm(server: &Server) -> Vec<(Hostile, (String, String))> {
    thread::scope(|scope| {
        let players: Vec<_> = KINDS
            .iter()
            .flat_map(|&kind| std::iter::repeat_n(kind, PER_KIND))
            .map(|kind| scope.spawn(move || (kind, play(server, kind))))
            .collect();
        players
            .into_iter()
            .map(|p| p.join().expect("hostile client"))
            .collect()
    })
}

#[test]
fn a_storm_of_malformed_frames_gets_its_close_codes_and_leaves_the_server_healthy() {
    // Storms follow each other faster than closed sockets are reaped: no per-address limit.
    let server = Server::start(&["--max-connections-per-ip", "0"]);
    let mut pair = HealthyPair::new(&server);
    for _ in 0..5 {
        pair.round_trip();
    }
    let rss_before = rss_kib(server.pid());
    let monitor = pair.monitor();

    // Storm after storm, until the healthy pair has measured enough round trips during them.
    let mut sessions: Vec<(Hostile, (String, String))> = Vec::new();
    let mut storms = 0;
    while storms < 2 || monitor.samples() < 5 {
        sessions.extend(storm(&server));
        storms += 1;
        assert!(storms <= 50, "the healthy pair made no progress");
    }
    let rss_after = rss_kib(server.pid());
    let (during, mut pair) = monitor.stop();

    eprintln!(
        "{storms} storms, {} hostile clients; RSS {rss_before} KiB before, {rss_after} KiB after",
        sessions.len()
    );
    // Clients that each pushed up to 64 KiB: no per-client state survives them but sessions in
    // their resume window (a few hundred bytes each) and allocator slack.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "the storm left {} KiB behind",
        rss_after - rss_before
    );
    during.assert_healthy("during the frame storms", 5, RTT_BOUND);

    // A bad frame drops the connection, not the session: every one of them can be resumed.
    for (kind, (id, token)) in &sessions {
        if matches!(kind, Hostile::Binary) {
            continue; // still connected: a resume would be a takeover, also fine, not tested here
        }
        let (mut back, reply) = resume_session(&server, id, token);
        assert_eq!(reply["resumed"], true, "{kind:?}: {reply}");
        back.expect_nothing_pending();
    }
    pair.round_trip();
}
