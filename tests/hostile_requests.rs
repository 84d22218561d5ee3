//! Friend-request floods aimed at one user: a hostile address that churns sessions (CONNECT,
//! FRIEND_REQUEST, DISCONNECT, over and over) to get past the per-session limits. The victim
//! must receive no more requests than docs/SECURITY.md promises per address, be told when each
//! one goes away (FRIEND_CANCEL), and keep chatting with its friend meanwhile.

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const FLOOD_FOR: Duration = Duration::from_secs(10);
/// docs/SECURITY.md: one user receives at most 10 requests a minute from one address (its
/// sessions together), whatever the address's own budget (40 a minute) would allow.
const ADDRESS_REQUESTS_PER_MINUTE: f64 = 10.0;

/// A public key nearly as large as the server accepts (16 KiB as sent, escapes included), to
/// press on the victim's buffers too.
fn large_key() -> String {
    format!(
        "{KEY_HEADER}\n{}",
        "A".repeat(16 * 1024 - KEY_HEADER.len() - 64)
    )
}

/// One round of churn: a new session from the flood address asks `victim` to be friends and
/// leaves. Whether the request was acknowledged (forwarded).
fn churn_once(server: &Server, victim: &str, key: &str) -> Option<bool> {
    let mut client = Client::try_connect_from(server, FLOOD_SOURCE).ok()?;
    let reply = client.request(json!({"type": "CONNECT"}));
    if reply["type"] != "CONNECT" {
        return None;
    }
    let reply = client
        .request(json!({"type": "FRIEND_REQUEST", "to": victim, "public_key": key, "ref": "f"}));
    client.send_json(&json!({"type": "DISCONNECT"}));
    Some(reply["type"] == "ACK")
}

#[test]
fn a_churning_address_reaches_a_victim_only_within_its_budget_and_the_victims_chat_goes_on() {
    let server = Server::start(&[]);
    let mut victim = connect_v2(&server);
    let (mut friend, _, _) = connect_session(&server);
    make_friends(&mut friend, &mut victim);
    let key = large_key();
    let victim_id = victim.id.clone();

    let stop = AtomicBool::new(false);
    let (forwarded, attempts) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (mut requests, mut cancels, mut latencies) = (0usize, 0usize, Vec::new());
    let mut flood_lasted = Duration::ZERO;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                attempts.fetch_add(1, Ordering::Relaxed);
                if churn_once(&server, &victim_id, &key) == Some(true) {
                    forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < FLOOD_FOR {
            sent += 1;
            let marker = format!("chat-{sent}");
            let sent_at = Instant::now();
            friend.send_json(&message(&victim.id, &payload_with(&marker), Some(&marker)));
            loop {
                let frame = victim.recv_json();
                match frame["type"].as_str() {
                    Some("FRIEND_REQUEST") => requests += 1,
                    Some("FRIEND_CANCEL") => cancels += 1,
                    Some("MESSAGE") => {
                        let payload = frame["payload"].as_str().unwrap_or("");
                        assert!(payload.contains(&marker), "out of order: {frame}");
                        latencies.push(sent_at.elapsed());
                        break;
                    }
                    _ => panic!("unexpected frame to the victim: {frame}"),
                }
            }
            friend.expect_ack(&marker);
            std::thread::sleep(Duration::from_millis(50));
        }
        flood_lasted = started.elapsed();
        stop.store(true, Ordering::Relaxed);
    });
    // What was forwarded before the flood stopped, and each request's cancel.
    while let Some(text) = victim.try_recv_text(Duration::from_millis(500)) {
        let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match frame["type"].as_str() {
            Some("FRIEND_REQUEST") => requests += 1,
            Some("FRIEND_CANCEL") => cancels += 1,
            _ => panic!("unexpected frame to the victim: {frame}"),
        }
    }

    let attempts = attempts.load(Ordering::Relaxed);
    let bound = ADDRESS_REQUESTS_PER_MINUTE
        + (ADDRESS_REQUESTS_PER_MINUTE * flood_lasted.as_secs_f64() / 60.0).ceil()
        + 1.0;
    assert!(
        attempts > 2 * bound as usize,
        "the flood made only {attempts} attempts: it tested nothing"
    );
    assert_eq!(requests, forwarded.load(Ordering::Relaxed));
    assert!(
        requests as f64 <= bound,
        "{requests} requests reached the victim in {flood_lasted:?} ({attempts} attempts); bound {bound}"
    );
    assert!(
        requests >= 10,
        "the budget let too little through: {requests}"
    );
    assert_eq!(cancels, requests, "every vanished request is cancelled");
    let rtt = RttStats { samples: latencies };
    rtt.assert_healthy(
        "the friend's messages during the flood",
        50,
        Duration::from_millis(500),
    );
}

/// With `--max-connections-per-ip 0` every client may share one address (a proxy that is not
/// trusted), so the per-address shares of what one recipient may be sent are off like the other
/// per-address limits: requests from one address are bounded only by the recipient's totals
/// (32 pending). A hole this test keeps closed: the 9th request from the shared address was
/// `too_many_requests`, whoever sent it.
#[test]
fn without_per_address_limits_one_address_is_bounded_only_by_the_recipient_s_totals() {
    let server = Server::start(&["--max-connections-per-ip", "0"]);
    let mut victim = connect_v2(&server);
    let mut senders = Vec::new();
    let mut answers = Vec::new();
    for n in 0..33 {
        let mut sender = Client::connect(&server);
        assert_eq!(
            sender.request(json!({"type": "CONNECT"}))["type"],
            "CONNECT"
        );
        let reference = format!("r{n}");
        let reply = sender.request(json!({
            "type": "FRIEND_REQUEST", "to": victim.id, "public_key": TEST_KEY, "ref": reference
        }));
        answers.push(reply["code"].as_str().unwrap_or("ack").to_owned());
        senders.push(sender);
    }
    let acked = answers.iter().take_while(|a| *a == "ack").count();
    assert_eq!(acked, 32, "{answers:?}");
    assert_eq!(
        answers[32], "too_many_requests",
        "the recipient's 32 in all"
    );
    for _ in 0..32 {
        assert_eq!(victim.recv_json()["type"], "FRIEND_REQUEST");
    }
}
