//! Many concurrent WebSocket connections (1,000+), each with its own session.
//!
//! The test process and the server each hold one descriptor per connection: 1,200 stays well
//! below the usual `ulimit -n` (20,000 on the machine this was written on; 1,024 is the common
//! soft default elsewhere, so raise it with `ulimit -n 4096` if the test fails with EMFILE).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const CONNECTIONS: usize = 1_200;
const THREADS: usize = 4;

#[test]
fn twelve_hundred_concurrent_sessions_get_unique_ids_and_all_close() {
    let server = Server::start(&["--max-connections", "2000", "--max-connections-per-ip", "0"]);
    let started = Instant::now();
    let clients: Vec<Client> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    (0..CONNECTIONS / THREADS)
                        .map(|_| {
                            let mut client = Client::connect_small(&server);
                            let reply = client.request(json!({"type": "CONNECT"}));
                            assert_eq!(reply["type"], "CONNECT", "{reply}");
                            client.id = reply["id"].as_str().unwrap_or_default().to_string();
                            client.token = reply["token"].as_str().unwrap_or_default().to_string();
                            client
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let connect_time = started.elapsed();
    assert_eq!(clients.len(), CONNECTIONS);
    let ids: HashSet<&str> = clients.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), CONNECTIONS, "duplicate IDs among live sessions");
    assert!(ids.iter().all(|id| is_valid_id(id)));
    assert_ids_look_uniform(&ids);
    let tokens: HashSet<&str> = clients.iter().map(|c| c.token.as_str()).collect();
    assert_eq!(tokens.len(), CONNECTIONS, "duplicate tokens");

    // Every connection is still served while all are open; the first and the last route a message.
    let mut clients = clients;
    for client in clients.iter_mut().step_by(97) {
        client.expect_nothing_pending();
    }
    let last = clients.len() - 1;
    let (head, tail) = clients.split_at_mut(last);
    let first = &mut head[0];
    let final_client = &mut tail[0];
    make_friends(first, final_client);
    first.send_json(&message(&final_client.id, TEST_PAYLOAD, Some("across")));
    first.expect_ack("across");
    final_client.expect_type("MESSAGE");
    first.send_json(&json!({"type": "FRIEND_REMOVE", "to": final_client.id, "ref": "rm"}));
    first.expect_ack("rm");
    final_client.expect_type("FRIEND_REMOVE");
    // The healthz endpoint answers quickly with 1,200 sockets open.
    let t = Instant::now();
    assert_eq!(http_get(&server, "/healthz").body, b"ok");
    assert!(t.elapsed() < Duration::from_secs(1));

    // Half leave with DISCONNECT (close 1000), half just drop.
    let mut leaving = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            leaving.push(client);
        } else {
            client.drop_connection();
        }
    }
    for client in &mut leaving {
        client.send_json(&json!({"type": "DISCONNECT"}));
    }
    for client in &mut leaving {
        assert_eq!(client.expect_close(), 1000);
    }
    drop(leaving);
    // The server is fine afterwards.
    let (mut after, _, _) = connect_session(&server);
    after.expect_nothing_pending();
    eprintln!("{CONNECTIONS} sessions connected in {connect_time:?}");
}

/// A chi-square test over the 7,200 characters of the IDs: each of the 32 should appear about
/// 225 times. The threshold (31 degrees of freedom) fails a fair generator about once in 10^7 runs.
fn assert_ids_look_uniform(ids: &HashSet<&str>) {
    let mut counts = [0u32; 32];
    let mut total = 0u32;
    for id in ids {
        for c in id.chars() {
            let index = CROCKFORD.find(c).expect("alphabet character");
            counts[index] += 1;
            total += 1;
        }
    }
    let expected = f64::from(total) / 32.0;
    let chi_square: f64 = counts
        .iter()
        .map(|&n| (f64::from(n) - expected).powi(2) / expected)
        .sum();
    assert!(
        chi_square < 90.0,
        "ID characters are not uniform (chi-square {chi_square:.1}): {counts:?}"
    );
}

/// docs/PROTOCOL.md §8: sockets over `--max-connections-per-ip` are accepted and closed at once.
#[test]
fn sockets_over_the_per_address_limit_are_closed_at_once() {
    let server = Server::start(&["--max-connections-per-ip", "3"]);
    let mut open: Vec<Client> = (0..3).map(|_| connect_session(&server).0).collect();
    let refused = Client::try_connect_url(&server.addr(), &server.ws_url());
    assert!(
        refused.is_err(),
        "a fourth socket from one address was served"
    );
    for client in &mut open {
        client.expect_nothing_pending();
    }
    // A freed slot can be used again. The session must end too (DISCONNECT): a session in its
    // resume window still counts against its address (docs/PROTOCOL.md §8).
    let Some(mut first) = open.pop() else { return };
    first.send_json(&json!({"type": "DISCONNECT"}));
    assert_eq!(first.expect_close(), 1000);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut again = loop {
        match Client::try_connect_url(&server.addr(), &server.ws_url()) {
            Ok(client) => break client,
            Err(e) if Instant::now() >= deadline => panic!("slot not freed: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(again.request(json!({"type": "CONNECT"}))["type"], "CONNECT");
}
