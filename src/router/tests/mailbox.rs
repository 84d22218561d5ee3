//! The mailbox: MESSAGE to a handle nobody connected listens on, FETCH, the TTL, the caps and
//! UNDELIVERED for dropped letters (PROTOCOL.md §10).

use super::handles::{handle, listen, to_handle};
use super::*;

fn fetch(h: &mut Harness, conn: ConnId) -> Vec<Value> {
    let actions = h.json(conn, json!({"type":"FETCH","ref":"f"}));
    frames_to(&actions, conn)
}

#[test]
fn mail_waits_for_a_listener_and_is_fetched_oldest_first() {
    let mut h = Harness::new();
    let a = h.connect_v2(1);
    let actions = h.text(a.conn, &to_handle(&handle(1), Some("m1")));
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"ACK","ref":"m1","queued":true})
    );
    h.advance(5);
    h.text(a.conn, &to_handle(&handle(2), None));
    h.advance(5);
    h.text(a.conn, &to_handle(&handle(1), None));
    h.text(a.conn, &to_handle(&handle(3), None));
    assert_eq!(h.router.stats().mailbox_letters, 4);
    // A new session, as after a reload, listens and fetches.
    let b = h.connect_v2(2);
    assert_eq!(h.listen_ok(b.conn, &[handle(1), handle(2)]), (2, 3));
    let frames = fetch(&mut h, b.conn);
    let handles: Vec<&str> = frames.iter().filter_map(|f| f["handle"].as_str()).collect();
    assert_eq!(handles, [handle(1), handle(2), handle(1)]);
    let times: Vec<u64> = frames.iter().filter_map(|f| f["ts"].as_u64()).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
    assert_eq!(
        frames.last(),
        Some(&json!({"type":"FETCHED","waiting":0,"ref":"f"}))
    );
    assert_eq!(
        h.router.stats().mailbox_letters,
        1,
        "handle 3's letter waits"
    );
    // Nothing left: FETCHED alone.
    assert_eq!(
        fetch(&mut h, b.conn),
        vec![json!({"type":"FETCHED","waiting":0,"ref":"f"})]
    );
}

#[test]
fn a_listener_in_its_resume_window_gets_mail_in_the_mailbox() {
    let mut h = Harness::new();
    let a = h.connect_v2(1);
    let mut b = h.connect_v2(2);
    h.listen_ok(b.conn, &[handle(1)]);
    h.closed(b.conn);
    let actions = h.text(a.conn, &to_handle(&handle(1), Some("m")));
    assert_eq!(only_frame_to(&actions, a.conn)["queued"], true);
    h.open(3);
    h.json(
        3,
        json!({"type":"CONNECT","version":2,"resume":{"id":b.id,"token":b.token}}),
    );
    b.conn = 3;
    assert_eq!(h.listen_ok(b.conn, &[handle(1)]), (1, 1));
    let frames = fetch(&mut h, b.conn);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0]["handle"], handle(1));
}

#[test]
fn a_fetch_answer_stops_at_half_the_unsent_cap() {
    let mut h = Harness::with(RouterConfig {
        max_unsent_bytes: 250,
        ..RouterConfig::defaults()
    });
    let a = h.connect_v2(1);
    for _ in 0..5 {
        h.text(a.conn, &to_handle(&handle(1), None));
    }
    let b = h.connect_v2(2);
    h.listen_ok(b.conn, &[handle(1)]);
    // Each letter is over 125 bytes, half the cap: one per answer.
    let frames = fetch(&mut h, b.conn);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[1], json!({"type":"FETCHED","waiting":4,"ref":"f"}));
    h.sink.flushed(b.conn, 0);
    let frames = fetch(&mut h, b.conn);
    assert_eq!(frames[1]["waiting"], 3);
}

#[test]
fn no_mailbox_when_it_is_off_or_the_letter_cannot_fit() {
    let mut h = Harness::with(RouterConfig {
        mailbox_bytes: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect_v2(1);
    let actions = h.text(a.conn, &to_handle(&handle(1), Some("m")));
    assert_eq!(error_code(&actions, a.conn), "no_mailbox");
    // It reports the server's state: never a flood.
    for _ in 0..150 {
        h.text(a.conn, &to_handle(&handle(1), None));
    }
    assert!(closes(&h.sink.take()).is_empty());
    let mut h = Harness::with(RouterConfig {
        mailbox_bytes_per_handle: 200,
        ..RouterConfig::defaults()
    });
    let a = h.connect_v2(1);
    let actions = h.text(a.conn, &to_handle(&handle(1), Some("m")));
    assert_eq!(error_code(&actions, a.conn), "no_mailbox");
    assert_eq!(h.router.stats().mailbox_letters, 0);
}

#[test]
fn expired_mail_is_reported_to_a_live_sender_with_a_ref() {
    let mut h = Harness::with(RouterConfig {
        mailbox_ttl_ms: 10_000,
        resume_grace_ms: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect_v2(1);
    h.text(a.conn, &to_handle(&handle(1), Some("m1")));
    h.text(a.conn, &to_handle(&handle(1), None));
    assert_eq!(h.router.next_deadline_ms(), Some(h.now.mono_ms + 10_000));
    h.advance(9_999);
    assert!(h.tick().is_empty());
    h.advance(1);
    let actions = h.tick();
    assert_eq!(
        only_frame_to(&actions, a.conn),
        json!({"type":"UNDELIVERED","handle":handle(1),"ref":"m1","reason":"expired"})
    );
    assert_eq!(h.router.stats().mailbox_letters, 0);
    assert_eq!(h.router.next_deadline_ms(), None);
    // A sender whose session ended is not told; nor is a later session with another serial.
    let b = h.connect_v2(2);
    h.text(b.conn, &to_handle(&handle(1), Some("m2")));
    h.json(b.conn, json!({"type":"DISCONNECT"}));
    h.advance(10_000);
    assert!(h.tick().is_empty());
}

#[test]
fn evicted_mail_is_reported_as_evicted() {
    let mut h = Harness::with(RouterConfig {
        mailbox_letters_per_handle: 2,
        ..RouterConfig::defaults()
    });
    let a = h.connect_v2(1);
    h.text(a.conn, &to_handle(&handle(1), Some("m1")));
    h.text(a.conn, &to_handle(&handle(1), Some("m2")));
    let actions = h.text(a.conn, &to_handle(&handle(1), Some("m3")));
    let frames = frames_to(&actions, a.conn);
    assert_eq!(
        frames,
        vec![
            json!({"type":"UNDELIVERED","handle":handle(1),"ref":"m1","reason":"evicted"}),
            json!({"type":"ACK","ref":"m3","queued":true}),
        ]
    );
    // The sender in its resume window gets it queued.
    // Both from one address: their block's oldest letter goes first.
    let mut h = Harness::with(RouterConfig {
        mailbox_bytes: 2_000,
        ..RouterConfig::defaults()
    });
    let mut a = h.connect_v2(1);
    let b = h.connect_v2(2);
    h.text(a.conn, &to_handle(&handle(1), Some("old")));
    h.closed(a.conn);
    let mut dropped = 0;
    for _ in 0..10 {
        let actions = h.text(b.conn, &to_handle(&handle(2), None));
        dropped += actions.len();
    }
    assert!(h.router.stats().mailbox_bytes <= 2_000);
    let _ = dropped;
    h.open(3);
    let actions = h.json(
        3,
        json!({"type":"CONNECT","version":2,"resume":{"id":a.id,"token":a.token}}),
    );
    a.conn = 3;
    let frames = frames_to(&actions, a.conn);
    assert_eq!(
        frames.get(1),
        Some(&json!({"type":"UNDELIVERED","handle":handle(1),"ref":"old","reason":"evicted"}))
    );
}

#[test]
fn flooding_addresses_never_evict_a_quieter_senders_letter() {
    let mut h = Harness::with(RouterConfig {
        mailbox_bytes: 20_000,
        ..RouterConfig::defaults()
    });
    let honest = h.connect_v2_from(1, addr("192.0.2.1"));
    h.text(honest.conn, &to_handle(&handle(1), Some("keep")));
    // Nine addresses send far more than the mailbox holds, each to handles of its own.
    let flooders: Vec<Session> = (0..9u8)
        .map(|n| h.connect_v2_from(10 + u64::from(n), addr(&format!("198.51.100.{}", n + 1))))
        .collect();
    let mut evicted = 0;
    for round in 0..20u8 {
        for (n, flooder) in flooders.iter().enumerate() {
            let text = to_handle(&handle(100 + n as u8), Some(&format!("f{round}")));
            let actions = h.text(flooder.conn, &text);
            assert!(frames_to(&actions, honest.conn).is_empty(), "{actions:?}");
            evicted += frames_to(&actions, flooder.conn)
                .iter()
                .filter(|frame| frame["reason"] == "evicted")
                .count();
        }
    }
    assert!(
        evicted > 50,
        "the flooders' own letters made room: {evicted}"
    );
    let stats = h.router.stats();
    assert!(stats.mailbox_bytes <= 20_000 && stats.mailbox_bytes > 15_000);
    let listener = h.connect_v2(3);
    assert_eq!(
        h.listen_ok(listener.conn, &[handle(1)]),
        (1, 1),
        "the honest letter stays"
    );
    // The flooding blocks end up with equal shares, give or take a letter.
    let mut before = 1;
    let mut shares = Vec::new();
    for n in 0..9u8 {
        let waiting = h.listen_ok(listener.conn, &[handle(100 + n)]).1;
        shares.push(waiting - before);
        before = waiting;
    }
    let (least, most) = (shares.iter().min(), shares.iter().max());
    assert!(
        least.zip(most).is_some_and(|(l, m)| m - l <= 1 && *l > 0),
        "{shares:?}"
    );
}

#[test]
fn fetch_is_version_two_and_rate_limited() {
    let mut h = Harness::with(RouterConfig {
        rate_messages_per_sec: 1,
        ..RouterConfig::defaults()
    });
    let a = h.connect_v2(1);
    assert_eq!(fetch(&mut h, a.conn).len(), 1);
    let actions = h.json(a.conn, json!({"type":"FETCH","ref":"f"}));
    assert_eq!(error_code(&actions, a.conn), "rate_limited");
    let _ = listen(&[], None);
}

#[test]
fn counts_and_fetch_order_follow_letters_through_moves_evictions_and_expiry() {
    let mut h = Harness::with(RouterConfig {
        mailbox_letters_per_handle: 2,
        mailbox_ttl_ms: 10_000,
        resume_grace_ms: 60_000,
        ..RouterConfig::defaults()
    });
    let a = h.connect_v2(1);
    let mut b = h.connect_v2(2);
    h.listen_ok(b.conn, &[handle(1), handle(2), handle(3)]);
    h.closed(b.conn);
    // Stored a second apart while b is away: the third for handle 2 evicts its first.
    let start = h.now.unix_ms;
    for n in [2, 1, 2, 2, 3] {
        h.text(a.conn, &to_handle(&handle(n), None));
        h.advance(1_000);
    }
    // Another session takes handle 3, and its letter with it.
    let c = h.connect_v2(3);
    assert_eq!(h.listen_ok(c.conn, &[handle(3)]), (1, 1));
    // Handle 1's letter (stored at +1 s) expires at +11 s.
    h.advance(start + 11_000 - h.now.unix_ms);
    h.tick();
    h.open(4);
    h.json(
        4,
        json!({"type":"CONNECT","version":2,"resume":{"id":b.id,"token":b.token}}),
    );
    b.conn = 4;
    assert_eq!(h.listen_ok(b.conn, &[handle(1), handle(2)]), (2, 2));
    let frames = fetch(&mut h, b.conn);
    let stamps: Vec<u64> = frames.iter().filter_map(|f| f["ts"].as_u64()).collect();
    assert_eq!(stamps, [start + 2_000, start + 3_000]);
    assert_eq!(frames.last().map(|f| &f["waiting"]), Some(&json!(0)));
    let frames = fetch(&mut h, c.conn);
    assert_eq!(frames[0]["ts"], start + 4_000);
    assert_eq!(h.router.stats().mailbox_letters, 0);
}

#[test]
fn letters_due_at_once_expire_a_chunk_per_tick() {
    let mut h = Harness::with(RouterConfig {
        mailbox_ttl_ms: 10_000,
        rate_messages_per_sec: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect_v2(1);
    for n in 0..600 {
        h.text(
            a.conn,
            &to_handle(&handle((n % 200) as u8), Some(&format!("m{n}"))),
        );
        h.sink.flushed(a.conn, 0);
    }
    h.advance(10_000);
    let chunk = super::super::handle_messages::EXPIRY_CHUNK;
    for expected in [chunk, chunk, 600 - 2 * chunk] {
        assert!(
            h.router
                .next_deadline_ms()
                .is_some_and(|at| at <= h.now.mono_ms)
        );
        let actions = h.tick();
        let told = frames_to(&actions, a.conn);
        assert_eq!(told.len(), expected);
        assert!(told.iter().all(|frame| frame["reason"] == "expired"));
        h.sink.flushed(a.conn, 0);
    }
    assert_eq!(h.router.stats().mailbox_letters, 0);
    assert_eq!(h.router.next_deadline_ms(), None);
}
