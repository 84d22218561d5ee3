//! `peer_busy`: a recipient's unsent bytes, the shared budget that shrinks every recipient's
//! caps, and that refusals for being busy never count toward the error flood.

use super::*;

/// Two friends on a router that refuses a recipient with more than 300 bytes unsent, and no rate
/// limit.
fn friends_with_a_300_byte_unsent_cap() -> (Harness, Session, Session) {
    let mut h = Harness::with(RouterConfig {
        max_unsent_bytes: 300,
        rate_messages_per_sec: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    (h, a, b)
}

#[test]
fn peer_busy_via_unsent_bytes_until_flushed() {
    let (mut h, a, b) = friends_with_a_300_byte_unsent_cap();
    h.sink.flushed(b.conn, 0);
    let mut delivered = 0;
    loop {
        let actions = h.text(a.conn, &message(&b.id, Some("m")));
        if !frames_to(&actions, b.conn).is_empty() {
            delivered += 1;
            continue;
        }
        let refusal = only_frame_to(&actions, a.conn);
        assert_eq!(refusal["code"], "peer_busy");
        assert_eq!(refusal["ref"], "m");
        break;
    }
    // Each forwarded frame is ~140 bytes: delivered while unsent <= 300, i.e. three of them.
    assert_eq!(delivered, 3);
    h.sink.flushed(b.conn, 0);
    assert_eq!(
        frames_to(&h.text(a.conn, &message(&b.id, None)), b.conn).len(),
        1
    );
}

#[test]
fn a_partial_flush_counts_only_what_the_socket_did_not_take() {
    let (mut h, a, b) = friends_with_a_300_byte_unsent_cap();
    let forwarded = |h: &mut Harness| {
        let actions = h.text(a.conn, &message(&b.id, None));
        frames_to(&actions, b.conn).len()
    };
    // Over the cap until the loop reports how much is really left.
    h.sink.flushed(b.conn, 301);
    assert_eq!(
        forwarded(&mut h),
        0,
        "301 bytes unsent is over a 300-byte cap"
    );
    // The socket took most of it: 100 bytes left, so the peer is not busy.
    h.sink.flushed(b.conn, 100);
    assert_eq!(forwarded(&mut h), 1);
    // Each frame is ~140 bytes: at ~240 one more is taken (the check comes before the frame),
    // at ~380 the peer is busy.
    assert_eq!(forwarded(&mut h), 1);
    assert_eq!(forwarded(&mut h), 0);
}

/// Messages from `a` to `to` until one is refused; returns how many were forwarded or queued.
/// Without `ref`: no ACKs, so only the forwarded or queued frames count toward the cap.
fn send_until_refused(h: &mut Harness, a: &Session, to: &Session) -> usize {
    for sent in 0..100 {
        let actions = h.text(a.conn, &message(&to.id, None));
        let reply = frames_to(&actions, a.conn);
        if let Some(refusal) = reply.iter().find(|frame| frame["type"] == "ERROR") {
            assert_eq!(refusal["code"], "peer_busy");
            return sent;
        }
    }
    panic!("100 messages and no refusal");
}

/// A router whose per-recipient caps are 1,600 bytes (100 while over budget) and whose budget for
/// all output together is 1,000 bytes; `a` is friends with `b` and `c`, and nothing is unsent.
fn friends_on_a_1000_byte_budget() -> (Harness, Session, Session, Session) {
    let mut h = Harness::with(RouterConfig {
        max_unsent_bytes: 1_600,
        max_queue_bytes: 1_600,
        max_buffered_bytes: 1_000,
        rate_messages_per_sec: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let b = h.connect(2);
    let c = h.connect(3);
    h.befriend(&a, &b);
    h.befriend(&a, &c);
    for conn in [a.conn, b.conn, c.conn] {
        h.sink.flushed(conn, 0);
    }
    (h, a, b, c)
}

#[test]
fn over_the_budget_only_recipients_that_are_behind_are_refused() {
    let (mut h, a, b, c) = friends_on_a_1000_byte_budget();
    // b never reads: it takes messages (~140 bytes each) until all output passes 1,000 bytes,
    // then its cap is 100 bytes and it is refused, long before its own 1,600.
    let forwarded = send_until_refused(&mut h, &a, &b);
    h.sink.flushed(a.conn, 0);
    let unsent = h.sink.backlogs.total();
    let frame_len = unsent / forwarded;
    assert!(
        unsent > 1_000 && unsent - frame_len <= 1_000,
        "{forwarded} frames, {unsent} bytes"
    );
    // c keeps up: it still gets a message, and is refused only while that one is unsent.
    let to_c = |h: &mut Harness| frames_to(&h.text(a.conn, &message(&c.id, None)), c.conn).len();
    assert_eq!(to_c(&mut h), 1);
    assert_eq!(to_c(&mut h), 0);
    h.sink.flushed(c.conn, 0);
    h.sink.flushed(a.conn, 0);
    assert_eq!(to_c(&mut h), 1);
    // A friend request to a session with nothing unsent goes through too.
    let d = h.connect(4);
    h.sink.flushed(d.conn, 0);
    let actions = h.text(a.conn, &friend_request(&d.id, Some("f")));
    assert_eq!(only_frame_to(&actions, d.conn)["type"], "FRIEND_REQUEST");
    // Once every socket took its output, b gets as much as at first again.
    for conn in [a.conn, b.conn, c.conn, d.conn] {
        h.sink.flushed(conn, 0);
    }
    assert_eq!(send_until_refused(&mut h, &a, &b), forwarded);
}

#[test]
fn resume_queues_count_toward_the_budget_and_shrink_with_it() {
    let (mut h, a, b, c) = friends_on_a_1000_byte_budget();
    h.closed(b.conn);
    h.sink.flushed(a.conn, 0);
    // b waits to resume: its queue takes messages until all output passes 1,000 bytes.
    send_until_refused(&mut h, &a, &b);
    let queued = h.router.stats().queued_bytes;
    assert!((1_000..1_600).contains(&queued), "{queued} bytes queued");
    // c, also away, may queue only 100 bytes now: one message, then peer_busy.
    h.closed(c.conn);
    h.sink.flushed(a.conn, 0);
    assert_eq!(send_until_refused(&mut h, &a, &c), 1);
}

#[test]
fn peer_busy_does_not_count_toward_the_error_flood() {
    let mut h = Harness::with(RouterConfig {
        max_unsent_bytes: 0,
        rate_messages_per_sec: 0,
        ..RouterConfig::defaults()
    });
    let a = h.connect(1);
    let b = h.connect(2);
    h.befriend(&a, &b);
    for _ in 0..300 {
        let actions = h.text(a.conn, &message(&b.id, None));
        assert_eq!(error_code(&actions, a.conn), "peer_busy");
        assert!(closes(&actions).is_empty());
    }
}
