//! Hostile sessions: a peer that never reads what it is sent, and a client enumerating IDs with
//! 10,000 friend requests. Each outcome is the one docs/PROTOCOL.md gives, the server's memory
//! stays bounded, and a healthy pair keeps fast round trips meanwhile.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const RTT_BOUND: Duration = Duration::from_millis(500);

/// A deterministic stream of IDs (xorshift), none of them in `avoid`.
fn random_ids(count: usize, seed: u64, avoid: &HashSet<String>) -> Vec<String> {
    let mut state = seed | 1;
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let id: String = (0..6)
            .map(|i| {
                let index = ((state >> (5 * i)) & 31) as usize;
                CROCKFORD.as_bytes()[index] as char
            })
            .collect();
        if !avoid.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

#[test]
fn a_peer_that_never_reads_makes_its_senders_busy_and_costs_bounded_memory() {
    let server = Server::start(&["--rate-messages", "0"]);
    let (mut sender, _, _) = connect_session(&server);
    let (mut stuck, _, _) = connect_session(&server);
    make_friends(&mut sender, &mut stuck);
    let monitor = HealthyPair::new(&server).monitor();
    let rss_before = rss_kib(server.pid());

    // 32 KiB messages until the server says the peer is busy (the kernel's socket buffers
    // absorb a few MiB first; the server's own share is capped at 256 KiB unsent).
    let body = "x".repeat(32 * 1024);
    let mut acked = Vec::new();
    let first_busy = loop {
        let reference = format!("n{}", acked.len());
        let payload = payload_with(&format!("{reference} {body}"));
        sender.send_json(&message(&stuck.id, &payload, Some(&reference)));
        let reply = sender.recv_json();
        match reply["type"].as_str() {
            Some("ACK") => acked.push(reference),
            Some("ERROR") => {
                assert_error_shape(&reply, "peer_busy", Some(&reference));
                break acked.len();
            }
            _ => panic!("unexpected reply {reply}"),
        }
        assert!(
            acked.len() < 3_000,
            "3,000 messages and the peer is never busy"
        );
    };
    let rss_stuck = rss_kib(server.pid());

    // While the peer does not read, every further MESSAGE is refused, nothing is buffered, and
    // peer_busy does not count toward the error flood (200 > 101).
    for n in 0..200 {
        let reference = format!("busy{n}");
        sender.send_json(&message(&stuck.id, TEST_PAYLOAD, Some(&reference)));
        sender.expect_error("peer_busy", Some(&reference));
    }
    sender.expect_nothing_pending();
    let rss_after_refusals = rss_kib(server.pid());
    // The peer is still stuck: measure for long enough.
    monitor.wait_for_samples(5);
    let (during, _pair) = monitor.stop();

    eprintln!(
        "peer_busy after {first_busy} messages of 32 KiB; RSS {rss_before} KiB before, \
         {rss_stuck} KiB stuck, {rss_after_refusals} KiB after 200 refusals"
    );
    assert!(
        first_busy >= 8,
        "busy after only {first_busy} messages (256 KiB is 8)"
    );
    // What the server holds for the stuck peer: 256 KiB unsent plus one message, and buffers.
    assert!(
        rss_stuck < rss_before + 8 * 1024,
        "a stuck peer cost {} KiB",
        rss_stuck - rss_before
    );
    assert!(
        rss_after_refusals <= rss_stuck + 1024,
        "refused messages were buffered after all"
    );
    during.assert_healthy("while a peer does not read", 5, RTT_BOUND);

    // Once it reads, it gets every acknowledged message, in order, and nothing else.
    for expected in &acked {
        let received = stuck.expect_type("MESSAGE");
        let payload = received["payload"].as_str().unwrap_or_default();
        assert!(
            payload.contains(&format!("\n{expected} ")),
            "expected {expected}, got another message"
        );
    }
    stuck.expect_nothing_pending();
    sender.send_json(&message(&stuck.id, TEST_PAYLOAD, Some("again")));
    sender.expect_ack("again");
    stuck.expect_type("MESSAGE");
}

/// Reads from `client` until its close frame; returns the text messages before it and the code.
fn replies_until_close(client: &mut RawClient) -> (Vec<Value>, u16) {
    let mut replies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.read_frame(left) {
            ReadOutcome::Frame(frame) if frame.opcode == OP_TEXT => {
                replies.push(serde_json::from_slice(&frame.payload).expect("server sent non-JSON"))
            }
            ReadOutcome::Frame(frame) if frame.opcode == OP_CLOSE => {
                let code = frame
                    .payload
                    .get(..2)
                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                return (replies, code);
            }
            ReadOutcome::Frame(_) => {}
            other => panic!("no close frame: {other:?} after {} replies", replies.len()),
        }
    }
}

/// 10,000 FRIEND_REQUESTs to random IDs, written at once without reading.
fn probe_frames(ids: &[String]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let request = json!({"type": "FRIEND_REQUEST", "to": id, "public_key": TEST_KEY, "ref": format!("e{n}")});
        bytes.extend(encode_frame(
            true,
            OP_TEXT,
            request.to_string().as_bytes(),
            Some([9, 8, 7, 6]),
        ));
    }
    bytes
}

#[test]
fn ten_thousand_friend_requests_to_random_ids_get_101_unknown_peer_then_close_1008() {
    let server = Server::start(&[]);
    let monitor = HealthyPair::new(&server).monitor();
    let victims: Vec<(Client, String, String)> =
        (0..25).map(|_| connect_session(&server)).collect();
    let mut spammer = RawClient::connect(&server);
    spammer.connect_session();
    let mut taken: HashSet<String> = victims.iter().map(|(_, id, _)| id.clone()).collect();
    taken.insert(spammer.id.clone());

    // PROTOCOL.md §2: unknown_peer is checked before rate_limited, and only valid requests
    // count toward the rate, so random IDs only ever get unknown_peer; §5: the 101st ERROR
    // within 60 s is sent, then the connection is closed with 1008. The rest go unanswered.
    let ids = random_ids(10_000, 0x5eed, &taken);
    let frames = probe_frames(&ids);
    let mut writer = spammer.stream.try_clone().expect("clone");
    let writing = std::thread::spawn(move || {
        // The server stops reading once it has closed: a failed write is expected.
        let _ = std::io::Write::write_all(&mut writer, &frames);
    });
    let started = Instant::now();
    let (replies, code) = replies_until_close(&mut spammer);
    let took = started.elapsed();
    writing.join().expect("writer");
    assert_eq!(code, 1008, "close code after the flood");
    assert_eq!(replies.len(), 101, "replies before the close");
    for (n, reply) in replies.iter().enumerate() {
        assert_error_shape(reply, "unknown_peer", Some(&format!("e{n}")));
    }
    eprintln!("101 probes answered and closed in {took:?}");

    // The session itself survives (1008 drops the connection, not the session) ...
    let (mut resumed, reply) = resume_session(&server, &spammer.id, &spammer.token);
    assert_eq!(reply["resumed"], true, "{reply}");
    // ... and its valid requests are rate limited: 20 per minute (burst 20), the rest refused,
    // and the refused ones never reach their targets.
    for (n, (_, victim, _)) in victims.iter().enumerate() {
        let reference = format!("v{n}");
        resumed.send_json(&json!({"type": "FRIEND_REQUEST", "to": victim, "public_key": TEST_KEY, "ref": reference}));
        if n < 20 {
            resumed.expect_ack(&reference);
        } else {
            resumed.expect_error("rate_limited", Some(&reference));
        }
    }
    for (n, (mut victim, _, _)) in victims.into_iter().enumerate() {
        if n < 20 {
            assert_eq!(victim.expect_type("FRIEND_REQUEST")["from"], spammer.id);
        }
        victim.expect_nothing_pending();
    }
    let (during, _pair) = monitor.stop();
    during.assert_healthy("during the enumeration", 1, RTT_BOUND);
}

/// How fast one client can probe IDs by reconnecting after each 1008, the number SECURITY.md
/// reasons with (printed; only a sanity floor is asserted), while a healthy pair chats.
#[test]
fn probing_with_reconnects_runs_at_connection_setup_speed_and_others_are_unaffected() {
    let server = Server::start(&[]);
    let pair = HealthyPair::new(&server);
    let mut taken = HashSet::from([pair.a.id.clone(), pair.b.id.clone()]);
    let monitor = pair.monitor();
    let mut spammer = RawClient::connect(&server);
    spammer.connect_session();
    let (id, mut token) = (spammer.id.clone(), spammer.token.clone());
    taken.insert(id.clone());
    let frames = probe_frames(&random_ids(101, 0xfeed, &taken));
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(1) || monitor.samples() < 10 {
        let mut client = RawClient::connect(&server);
        client.send_json(&json!({"type": "CONNECT", "resume": {"id": id, "token": token}}));
        let reply = client.expect_type("CONNECT");
        assert_eq!(reply["resumed"], true, "{reply}");
        token = reply["token"].as_str().unwrap_or_default().to_owned();
        client.send_bytes(&frames).expect("send probes");
        let (replies, code) = replies_until_close(&mut client);
        assert_eq!((replies.len(), code), (101, 1008));
        rounds += 1;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the pair stalled"
        );
    }
    let elapsed = started.elapsed();
    let (during, _pair) = monitor.stop();
    let rate = (rounds * 101) as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{} probes in {elapsed:?}: {rate:.0} probes/s from one client",
        rounds * 101
    );
    assert!(rate > 10.0, "probing is slower than expected: {rate:.1}/s");
    during.assert_healthy("while a client probes at full speed", 10, RTT_BOUND);
}

/// Streams `batch` from a client that never reads, after `greeting` if given, until the server
/// drops it (or 30 s or 512 MiB pass), then checks that it was dropped, that it cost the server
/// under 8 MiB, and that a healthy pair kept its round trips meanwhile.
fn assert_a_non_reader_is_dropped(greeting: Option<Value>, batch: &[u8], what: &str) {
    let server = Server::start(&[]);
    let monitor = HealthyPair::new(&server).monitor();
    let rss_before = rss_kib(server.pid());
    let mut greedy = RawClient::connect(&server);
    if let Some(greeting) = greeting {
        greedy.send_json(&greeting);
    }
    let started = Instant::now();
    let mut sent_bytes = 0usize;
    let dropped = loop {
        if greedy.send_bytes(batch).is_err() {
            break true;
        }
        sent_bytes += batch.len();
        if started.elapsed() > Duration::from_secs(30) || sent_bytes > 512 << 20 {
            break false;
        }
    };
    let took = started.elapsed();
    let rss_after = rss_kib(server.pid());
    let (during, _pair) = monitor.stop();
    eprintln!(
        "dropped: {dropped} after {} MiB of {what} in {took:?}; RSS {rss_before} -> {rss_after} KiB",
        sent_bytes >> 20
    );
    assert!(
        dropped,
        "a client that never reads its {what} was kept for {took:?}"
    );
    assert!(
        rss_after < rss_before + 8 * 1024,
        "it cost {} KiB",
        rss_after - rss_before
    );
    during.assert_healthy(
        &format!("while a client does not read its {what}"),
        1,
        RTT_BOUND,
    );
}

#[test]
fn a_client_that_never_reads_its_own_replies_is_dropped_with_bounded_memory() {
    // Each PING gets a PONG echoing its 64-character ref; the client never reads one. Once the
    // socket buffers are full, the server's write buffer for it grows to its ceiling
    // (connection::outbox_ceiling) and the connection is dropped.
    let ping = json!({"type": "PING", "ref": "r".repeat(64)}).to_string();
    let batch = encode_frame(true, OP_TEXT, ping.as_bytes(), Some([1, 2, 3, 4])).repeat(1_000);
    assert_a_non_reader_is_dropped(None, &batch, "PONGs");
}

/// The same greed with WebSocket pings: tungstenite answers each with a pong it writes into the
/// outbox itself, past the router's ceiling check, so the ceiling must hold for those too.
#[test]
fn a_client_that_never_reads_its_pongs_is_dropped_with_bounded_memory() {
    let batch = encode_frame(true, OP_PING, &[b'p'; 125], Some([1, 2, 3, 4])).repeat(1_000);
    assert_a_non_reader_is_dropped(Some(json!({"type": "CONNECT"})), &batch, "WebSocket pongs");
}
