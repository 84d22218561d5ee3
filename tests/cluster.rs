//! Several `secchat` nodes sharing one real `redis-server` (`--cluster`): users connected to
//! different nodes befriend and message one another as on one node; Redis going away fails the
//! cross-node part clearly while each node's own chats go on, and everything recovers by itself.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use serde_json::json;

/// How long a node may take to log that both its links to Redis are up.
const BUS_UP: Duration = Duration::from_secs(15);

/// `count` nodes on the same Redis, each with both links up.
fn nodes(redis: &RedisServer, count: usize) -> Vec<Server> {
    nodes_at(&redis.url(), count)
}

/// `count` nodes on the Redis at `url`, each with both links up.
fn nodes_at(url: &str, count: usize) -> Vec<Server> {
    (0..count)
        .map(|_| {
            let mut node = ServerBuilder::new()
                .flags(&["--cluster", url, "--log-level", "info"])
                .start();
            assert!(
                node.wait_for_log("cluster: the commands link to Redis is up", BUS_UP),
                "the commands link did not come up: {}",
                node.logs()
            );
            assert!(
                node.wait_for_log("cluster: subscribed to this node's channel", BUS_UP),
                "the subscriber did not come up: {}",
                node.logs()
            );
            node
        })
        .collect()
}

/// Sends `request` until its answer is not `unavailable` (a node whose claims are still on
/// their way), for at most `within`; returns the answer.
fn until_available(
    client: &mut Client,
    request: serde_json::Value,
    within: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let answer = client.request(request.clone());
        if answer["code"] != "unavailable" || Instant::now() >= deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn users_on_different_nodes_befriend_message_and_part_as_on_one_node() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 3);
    let (mut a, a_id, _) = connect_session(&nodes[0]);
    let (mut b, b_id, _) = connect_session(&nodes[2]);
    let (mut c, _, _) = connect_session(&nodes[1]);
    assert_ne!(a_id, b_id);

    make_friends(&mut a, &mut b);
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("m1")));
    a.expect_ack("m1");
    let got = b.expect_type("MESSAGE");
    assert_eq!(got["from"], a_id.as_str());
    assert_eq!(got["payload"], TEST_PAYLOAD);
    b.send_json(&message(&a_id, TEST_PAYLOAD, Some("m2")));
    b.expect_ack("m2");
    assert_eq!(a.expect_type("MESSAGE")["from"], b_id.as_str());

    // A third user, on a third node, is neither friend: refused on the friends' nodes.
    c.send_json(&message(&a_id, TEST_PAYLOAD, Some("stranger")));
    c.expect_error("not_friends", Some("stranger"));
    // An ID no node holds is unknown everywhere.
    c.send_json(
        &json!({"type": "FRIEND_REQUEST", "to": "000000", "public_key": TEST_KEY, "ref": "nobody"}),
    );
    c.expect_error("unknown_peer", Some("nobody"));

    // B leaves: A is told at once, and B is no friend any more.
    b.send_json(&json!({"type": "DISCONNECT", "ref": "bye"}));
    b.expect_ack("bye");
    assert_eq!(a.expect_type("DISCONNECT")["id"], b_id.as_str());
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("late")));
    a.expect_error("not_friends", Some("late"));
}

#[test]
fn a_friend_in_its_resume_window_on_another_node_gets_what_was_queued_when_it_comes_back() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let (mut a, a_id, _) = connect_session(&nodes[0]);
    let (mut b, b_id, b_token) = connect_session(&nodes[1]);
    make_friends(&mut a, &mut b);
    b.drop_connection();
    let presence = a.expect_type("PRESENCE");
    assert_eq!(
        presence,
        json!({"type": "PRESENCE", "id": b_id, "online": false})
    );
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("q")));
    a.expect_queued_ack("q");
    let (mut back, reply) = resume_session(&nodes[1], &b_id, &b_token);
    assert_eq!(reply["resumed"], true, "{reply}");
    let queued = back.expect_type("MESSAGE");
    assert_eq!(queued["from"], a_id.as_str());
    assert_eq!(
        a.expect_type("PRESENCE"),
        json!({"type": "PRESENCE", "id": b_id, "online": true})
    );
}

#[test]
fn without_redis_cross_node_requests_fail_clearly_local_chats_go_on_and_all_recovers() {
    let mut redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let (mut a, a_id, _) = connect_session(&nodes[0]);
    let (mut near, near_id, _) = connect_session(&nodes[0]);
    let (mut far, far_id, _) = connect_session(&nodes[1]);
    make_friends(&mut a, &mut near);
    make_friends(&mut a, &mut far);

    redis.stop();
    // Ten seconds without Redis: the links notice (a closed socket at once, a silent one within
    // 15 s) and retry with backoff meanwhile.
    std::thread::sleep(Duration::from_secs(10));
    let refused = a.request(message(&far_id, TEST_PAYLOAD, Some("far")));
    assert_eq!(refused["type"], "ERROR", "{refused}");
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert!(refused["message"].as_str().is_some_and(|m| !m.is_empty()));
    // On the same node, nothing changed, and newcomers still get a session.
    let (_, newcomer, _) = connect_session(&nodes[1]);
    assert_eq!(newcomer.len(), 6);
    a.send_json(&message(&near_id, TEST_PAYLOAD, Some("near")));
    a.expect_ack("near");
    assert_eq!(near.expect_type("MESSAGE")["from"], a_id.as_str());

    redis.restart();
    // Redis came back empty: each node claims its sessions again, and the friendship held on
    // both nodes carries on.
    let answer = until_available(
        &mut a,
        message(&far_id, TEST_PAYLOAD, Some("again")),
        Duration::from_secs(20),
    );
    assert_eq!(answer, json!({"type": "ACK", "ref": "again"}));
    assert_eq!(far.expect_type("MESSAGE")["from"], a_id.as_str());
    far.send_json(&message(&a_id, TEST_PAYLOAD, Some("back")));
    far.expect_ack("back");
    assert_eq!(a.expect_type("MESSAGE")["from"], far_id.as_str());
}

fn listen(client: &mut Client, handles: &[&str]) {
    let reply = client.request(json!({"type": "LISTEN", "handles": handles, "ref": "l"}));
    assert_eq!(reply["type"], "LISTENING", "{reply}");
}

fn to_handle(handle: &str, mailbox: bool, reference: &str) -> serde_json::Value {
    json!({"type": "MESSAGE", "handle": handle, "payload": TEST_PAYLOAD, "mailbox": mailbox, "ref": reference})
}

#[test]
fn handles_work_across_nodes_live_kept_for_the_next_listener_and_taken_over() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let mut alice = connect_v2(&nodes[0]);
    let mut bob = connect_v2(&nodes[1]);
    let (bobs, nobodys) = (handle(1), handle(2));
    listen(&mut bob, &[&bobs]);

    // Live, to a listener on the other node.
    let answer = until_available(&mut alice, to_handle(&bobs, true, "live"), BUS_UP);
    assert_eq!(answer, json!({"type": "ACK", "ref": "live"}));
    let got = bob.expect_type("MESSAGE");
    assert_eq!(got["handle"], bobs.as_str());
    assert_eq!(got["payload"], TEST_PAYLOAD);

    // Nobody listens anywhere: a probe is refused, a letter waits in Redis for the next
    // listener, who may connect to any node.
    alice.send_json(&to_handle(&nobodys, false, "probe"));
    alice.expect_error("no_mailbox", Some("probe"));
    alice.send_json(&to_handle(&nobodys, true, "kept"));
    alice.expect_queued_ack("kept");
    let mut carol = connect_v2(&nodes[1]);
    listen(&mut carol, &[&nobodys]);
    let letter = carol.expect_type("MESSAGE");
    assert_eq!(letter["handle"], nobodys.as_str());
    assert_eq!(letter["payload"], TEST_PAYLOAD);

    // One upload to listeners on both nodes (two on the other one): one ACK with all counted,
    // and the payload crosses to the other node in one PUBLISH (the answers in one more).
    let mut dave = connect_v2(&nodes[0]);
    let daves = handle(3);
    listen(&mut dave, &[&daves]);
    let erins = handle(4);
    let mut erin = connect_v2(&nodes[1]);
    listen(&mut erin, &[&erins]);
    let published = publishes(&redis);
    alice.send_json(&json!({
        "type": "MESSAGE", "handles": [bobs, daves, erins], "payload": TEST_PAYLOAD,
        "mailbox": true, "ref": "group",
    }));
    let ack = alice.expect_type("ACK");
    assert_eq!(
        ack,
        json!({"type": "ACK", "ref": "group", "sent": 3, "queued": 0})
    );
    assert_eq!(bob.expect_type("MESSAGE")["handle"], bobs.as_str());
    assert_eq!(dave.expect_type("MESSAGE")["handle"], daves.as_str());
    assert_eq!(erin.expect_type("MESSAGE")["handle"], erins.as_str());
    assert_eq!(publishes(&redis) - published, 2);

    // Dave, on the other node, takes Bob's handle: Bob is told, and the next message to it
    // goes to Dave.
    listen(&mut dave, &[&bobs]);
    let taken = bob.expect_type("HANDLE_TAKEN");
    assert_eq!(taken["handle"], bobs.as_str());
    let answer = until_available(&mut alice, to_handle(&bobs, true, "moved"), BUS_UP);
    assert_eq!(answer["type"], "ACK", "{answer}");
    assert_eq!(dave.expect_type("MESSAGE")["handle"], bobs.as_str());
    bob.expect_nothing_pending();
}

#[test]
fn a_session_resumes_through_any_node_with_its_id_friends_and_what_waited() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 3);
    let (mut a, a_id, _) = connect_session(&nodes[0]);
    let (mut b, b_id, b_token) = connect_session(&nodes[1]);
    make_friends(&mut a, &mut b);
    b.drop_connection();
    assert_eq!(a.expect_type("PRESENCE")["online"], false);
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("q")));
    a.expect_queued_ack("q");

    // Back through a third node: same ID, a new token, the queued message, PRESENCE to A.
    let (mut back, reply) = resume_session(&nodes[2], &b_id, &b_token);
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["id"], b_id.as_str());
    assert_ne!(reply["token"], b_token.as_str());
    assert_eq!(back.expect_type("MESSAGE")["from"], a_id.as_str());
    assert_eq!(
        a.expect_type("PRESENCE"),
        json!({"type": "PRESENCE", "id": b_id, "online": true})
    );
    back.send_json(&message(&a_id, TEST_PAYLOAD, Some("r")));
    back.expect_ack("r");
    assert_eq!(a.expect_type("MESSAGE")["from"], b_id.as_str());

    // Taken over again, from its live connection, through the first node: the old
    // connection is closed with 4001, and the token is single-use.
    let token = back.token.clone();
    let (mut again, reply) = resume_session(&nodes[0], &b_id, &token);
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(back.expect_close(), 4001);
    again.send_json(&message(&a_id, TEST_PAYLOAD, Some("s")));
    again.expect_ack("s");
    assert_eq!(a.expect_type("MESSAGE")["from"], b_id.as_str());
    let (_, stale) = resume_session(&nodes[1], &b_id, &token);
    assert_eq!(stale["resumed"], false, "{stale}");
}

#[test]
fn after_kill_9_of_its_node_a_session_resumes_on_another_with_what_was_acknowledged() {
    let redis = RedisServer::start();
    let mut nodes = nodes(&redis, 2);
    let (mut a, a_id, _) = connect_session(&nodes[0]);
    let (mut b, b_id, b_token) = connect_session(&nodes[1]);
    make_friends(&mut a, &mut b);
    b.drop_connection();
    assert_eq!(a.expect_type("PRESENCE")["online"], false);
    a.send_json(&message(&b_id, TEST_PAYLOAD, Some("acked")));
    a.expect_queued_ack("acked");

    nodes[1].signal("KILL");
    assert!(nodes[1].wait_exit(Duration::from_secs(5)).is_some());

    // The dead node still counts as alive for a few seconds (its last word to Redis): the
    // resume waits for that, then adopts the session.
    let mut back = Client::connect(&nodes[0]);
    back.send_json(&json!({"type": "CONNECT", "resume": {"id": b_id, "token": b_token}}));
    let reply = back
        .try_recv_text(Duration::from_secs(15))
        .map(|text| serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["id"], b_id.as_str());
    let waited = back.expect_type("MESSAGE");
    assert_eq!(waited["from"], a_id.as_str());
    assert_eq!(waited["payload"], TEST_PAYLOAD);
    back.send_json(&message(&a_id, TEST_PAYLOAD, Some("alive")));
    back.expect_ack("alive");
    let got = a.recv_json();
    let got = if got["type"] == "PRESENCE" {
        a.expect_type("MESSAGE")
    } else {
        got
    };
    assert_eq!(got["from"], b_id.as_str());
}

/// A letter for a listener away in its resume window waits in Redis, not in its node's memory:
/// after kill -9 of that node the listener resumes through another node, LISTENs again as
/// every client does after its CONNECT, and gets it.
#[test]
fn a_letter_for_a_listener_away_outlives_the_listeners_node() {
    let redis = RedisServer::start();
    let mut nodes = nodes(&redis, 2);
    let mut alice = connect_v2(&nodes[0]);
    let mut bob = connect_v2(&nodes[1]);
    let (bob_id, bob_token) = (bob.id.clone(), bob.token.clone());
    make_friends(&mut alice, &mut bob);
    let bobs = handle(1);
    listen(&mut bob, &[&bobs]);
    bob.drop_connection();
    assert_eq!(alice.expect_type("PRESENCE")["online"], false);
    let answer = until_available(&mut alice, to_handle(&bobs, true, "kept"), BUS_UP);
    assert_eq!(
        answer,
        json!({"type": "ACK", "ref": "kept", "queued": true})
    );

    nodes[1].signal("KILL");
    assert!(nodes[1].wait_exit(Duration::from_secs(5)).is_some());

    let mut back = Client::connect(&nodes[0]);
    back.send_json(&json!({
        "type": "CONNECT", "version": 2, "resume": {"id": bob_id, "token": bob_token},
    }));
    let reply = back
        .try_recv_text(Duration::from_secs(15))
        .map(|text| serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(reply["resumed"], true, "{reply}");
    listen(&mut back, &[&bobs]);
    let letter = back.expect_type("MESSAGE");
    assert_eq!(letter["handle"], bobs.as_str());
    assert_eq!(letter["payload"], TEST_PAYLOAD);
}

/// A letter kept for a listener away on its own node comes back when it resumes there and
/// LISTENs again; so does one kept while Redis was down (in the node's memory then).
#[test]
fn a_listener_back_on_its_node_gets_the_letters_kept_while_it_was_away() {
    let mut redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let mut alice = connect_v2(&nodes[1]);
    let mut bob = connect_v2(&nodes[1]);
    make_friends(&mut alice, &mut bob);
    let bobs = handle(2);
    listen(&mut bob, &[&bobs]);
    let (bob_id, bob_token) = (bob.id.clone(), bob.token.clone());
    bob.drop_connection();
    assert_eq!(alice.expect_type("PRESENCE")["online"], false);
    redis.stop();
    alice.send_json(&to_handle(&bobs, true, "in-memory"));
    alice.expect_queued_ack("in-memory");
    redis.restart();
    // A probe to a handle nobody listens on needs the bus: refused as such once it is back.
    let probe = to_handle(&handle(3), false, "probe");
    let answer = until_available(&mut alice, probe, Duration::from_secs(20));
    assert_eq!(answer["code"], "no_mailbox", "{answer}");
    alice.send_json(&to_handle(&bobs, true, "in-redis"));
    alice.expect_queued_ack("in-redis");
    let key = format!("secchat:mb:h:{bobs}");
    wait_until("the letter in Redis", Duration::from_secs(10), || {
        redis_command(&redis, &["ZCARD", &key]) == "1"
    });

    let mut back = Client::connect(&nodes[1]);
    back.send_json(&json!({
        "type": "CONNECT", "version": 2, "resume": {"id": bob_id, "token": bob_token},
    }));
    assert_eq!(back.expect_type("CONNECT")["resumed"], true);
    // The letter kept in the node's memory is counted by LISTENING and fetched; the one in
    // Redis follows the LISTEN once the link is back.
    let mut got = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got < 2 && std::time::Instant::now() < deadline {
        back.send_json(&json!({"type": "LISTEN", "handles": [bobs], "ref": "l"}));
        back.send_json(&json!({"type": "FETCH", "ref": "f"}));
        while let Some(text) = back.try_recv_text(Duration::from_millis(500)) {
            let frame: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if frame["type"] == "MESSAGE" {
                assert_eq!(frame["handle"], bobs.as_str());
                got += 1;
            }
        }
    }
    assert_eq!(got, 2, "both letters, once each");
    back.expect_nothing_pending();
}

/// A letter that reached the cluster's mailbox although its listener is connected (kept by a
/// node that did not know the listener was back, or while its LISTEN could not reach Redis)
/// is handed to the listener at its node's next renewal, not left for its next reconnect.
#[test]
fn a_letter_kept_for_a_connected_listener_reaches_it_at_the_next_renewal() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 1);
    let mut bob = connect_v2(&nodes[0]);
    let bobs = handle(6);
    listen(&mut bob, &[&bobs]);
    let frame = json!({"type": "MESSAGE", "handle": bobs, "payload": TEST_PAYLOAD, "ts": 1});
    let numbers = ["256", "600000", "0", "1.0.24", "1048576", "67108864", "512"];
    let stored = redis_command(
        &redis,
        &[
            "EVAL",
            secchat::bus::MAILBOX_STORE,
            "2",
            &format!("secchat:h:{bobs}"),
            &format!("secchat:mb:h:{bobs}"),
            &frame.to_string(),
            numbers[0],
            numbers[1],
            numbers[2],
            numbers[3],
            numbers[4],
            numbers[5],
            numbers[6],
            &bobs,
        ],
    );
    assert_eq!(stored, "1");
    let letter = bob
        .try_recv_text(secchat::bus::REFRESH_EVERY + Duration::from_secs(5))
        .map(|text| serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(letter, frame);
    assert_eq!(
        redis_command(&redis, &["EXISTS", &format!("secchat:mb:h:{bobs}")]),
        "0"
    );
}

/// A letter kept in the cluster's mailbox for a listener away in its resume window stays there,
/// untouched, while its node renews: the node does not collect it only to keep it again (a new
/// number and a new TTL at every renewal, so it would never expire, and a link drop between the
/// two would lose it). The listener gets it once when it resumes and LISTENs.
#[test]
fn a_letter_for_a_listener_away_is_not_collected_until_it_is_back() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 1);
    let mut alice = connect_v2(&nodes[0]);
    let mut bob = connect_v2(&nodes[0]);
    make_friends(&mut alice, &mut bob);
    let bobs = handle(13);
    listen(&mut bob, &[&bobs]);
    let (bob_id, bob_token) = (bob.id.clone(), bob.token.clone());
    bob.drop_connection();
    assert_eq!(alice.expect_type("PRESENCE")["online"], false);
    let answer = until_available(&mut alice, to_handle(&bobs, true, "kept"), BUS_UP);
    assert_eq!(
        answer,
        json!({"type": "ACK", "ref": "kept", "queued": true})
    );
    let key = format!("secchat:mb:h:{bobs}");
    // The handle's letter numbers, as one bulk string.
    let numbers = || {
        let script = "return table.concat(redis.call('ZRANGE', KEYS[1], 0, -1), ' ')";
        redis_command(&redis, &["EVAL", script, "1", &key])
    };
    wait_until("the letter in Redis", BUS_UP, || !numbers().is_empty());
    let kept = numbers();

    // At least one renewal runs meanwhile, and whatever it took would be back by then.
    std::thread::sleep(secchat::bus::REFRESH_EVERY + Duration::from_secs(2));
    assert_eq!(numbers(), kept, "the letter stayed where it was, as it was");

    let mut back = Client::connect(&nodes[0]);
    back.send_json(&json!({
        "type": "CONNECT", "version": 2, "resume": {"id": bob_id, "token": bob_token},
    }));
    assert_eq!(back.expect_type("CONNECT")["resumed"], true);
    listen(&mut back, &[&bobs]);
    let letter = back.expect_type("MESSAGE");
    assert_eq!(letter["handle"], bobs.as_str());
    assert_eq!(letter["payload"], TEST_PAYLOAD);
    back.expect_nothing_pending();
    assert_eq!(numbers(), "", "taken out of Redis");
}

/// The Redis user DEPLOY.md tells operators to make can run everything the nodes do: two
/// nodes connect as a user made from exactly that ACL line, every kind of command and script
/// runs (claims, renewals, records, handles, the cluster's mailbox, a takeover), and Redis
/// refuses nothing (`ACL LOG` stays empty).
#[test]
fn the_redis_user_deploy_md_describes_runs_every_command_the_nodes_send() {
    let deploy = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/DEPLOY.md"))
        .expect("docs/DEPLOY.md");
    let line = deploy
        .lines()
        .find(|line| line.starts_with("user secchat on "))
        .expect("DEPLOY.md's user secchat line");
    let redis = RedisServer::start();
    let mut setuser = vec!["ACL", "SETUSER"];
    setuser.extend(line.split_whitespace().skip(1));
    assert_eq!(redis_command(&redis, &setuser), "OK");
    let url = format!("redis://secchat:CHANGE-ME@127.0.0.1:{}", redis.port());
    let nodes = nodes_at(&url, 2);

    let mut alice = connect_v2(&nodes[0]);
    let mut bob = connect_v2(&nodes[1]);
    make_friends(&mut alice, &mut bob);
    let answer = until_available(
        &mut alice,
        message(&bob.id, TEST_PAYLOAD, Some("m")),
        BUS_UP,
    );
    assert_eq!(answer["type"], "ACK", "{answer}");
    assert_eq!(bob.expect_type("MESSAGE")["payload"], TEST_PAYLOAD);
    // A letter for a handle nobody listens on, then its listener on the other node.
    let nobodys = handle(5);
    alice.send_json(&to_handle(&nobodys, true, "kept"));
    alice.expect_queued_ack("kept");
    listen(&mut bob, &[&nobodys]);
    assert_eq!(bob.expect_type("MESSAGE")["handle"], nobodys.as_str());
    // A letter for a listener away, which comes back through the other node (a takeover).
    let (bob_id, bob_token) = (bob.id.clone(), bob.token.clone());
    bob.drop_connection();
    assert_eq!(alice.expect_type("PRESENCE")["online"], false);
    alice.send_json(&to_handle(&nobodys, true, "away"));
    alice.expect_queued_ack("away");
    // Renewals of IDs and handles, and the liveness key, run meanwhile.
    std::thread::sleep(secchat::bus::REFRESH_EVERY + Duration::from_secs(1));
    let mut back = Client::connect(&nodes[0]);
    back.send_json(&json!({
        "type": "CONNECT", "version": 2, "resume": {"id": bob_id, "token": bob_token},
    }));
    assert_eq!(back.expect_type("CONNECT")["resumed"], true);
    listen(&mut back, &[&nobodys]);
    assert_eq!(back.expect_type("MESSAGE")["handle"], nobodys.as_str());

    let log = redis_command(&redis, &["ACL", "LOG"]);
    assert_eq!(log, "", "Redis refused something the nodes sent");
}

/// PUBLISH commands Redis has run so far (`INFO commandstats`).
fn publishes(redis: &RedisServer) -> u64 {
    redis_command(redis, &["INFO", "commandstats"])
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_publish:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// Runs one command on its own connection, behind the nodes' backs; its reply as text: a
/// bulk string's contents ("" for none), a status or an integer. Panics on an error reply.
fn redis_command(redis: &RedisServer, args: &[&str]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", redis.port())).expect("Redis");
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream
        .write_all(request.as_bytes())
        .expect("write a command");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(reply) = whole_reply(&bytes) {
            return reply;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => panic!(
                "Redis did not answer {args:?} whole: {}",
                String::from_utf8_lossy(&bytes)
            ),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// One reply, if all of it is in `bytes`.
fn whole_reply(bytes: &[u8]) -> Option<String> {
    let end = bytes.windows(2).position(|pair| pair == b"\r\n")?;
    let line = String::from_utf8_lossy(&bytes[..end]);
    let rest = &bytes[end + 2..];
    match line.split_at_checked(1)? {
        ("$", "-1") => Some(String::new()),
        ("$", length) => {
            let length: usize = length.parse().expect("a bulk length");
            (rest.len() >= length + 2).then(|| String::from_utf8_lossy(&rest[..length]).into())
        }
        ("+" | ":", value) => Some(value.to_owned()),
        // Only an empty array is read whole; any other is shown as far as it arrived.
        ("*", "0") => Some(String::new()),
        ("*", _) => Some(String::from_utf8_lossy(bytes).into()),
        _ => panic!("Redis answered {line}"),
    }
}

/// Each client LISTENs on its handle, then waits until Redis's directory names it for it;
/// answers the handles' directory keys.
fn listen_each_in_redis<const N: usize>(
    redis: &RedisServer,
    listeners: [(&mut Client, &String); N],
) -> [String; N] {
    let mut named = Vec::new();
    for (client, handle) in listeners {
        listen(client, &[handle]);
        named.push((format!("secchat:h:{handle}"), client.id.clone()));
    }
    wait_until("the LISTENs to reach Redis", BUS_UP, || {
        named
            .iter()
            .all(|(key, id)| redis_command(redis, &["GET", key]).starts_with(id.as_str()))
    });
    std::array::from_fn(|index| named[index].0.clone())
}

/// Polls `what` every 100 ms until it holds, for at most `within`.
fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A LISTEN on another node took Bob's handle, but its HandleTaken record never reached Bob's
/// node (Redis briefly down, that node gone right after, a PUBLISH nobody heard): the directory
/// entry names the other session, written here behind the nodes' backs. Bob's node finds it at
/// its next renewal of its handle entries (every 10 s) and tells Bob once; from then on its own
/// sessions' messages to the handle go to the listener the directory names.
#[test]
fn a_handle_whose_taken_record_was_lost_is_given_up_at_its_nodes_next_renewal() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let mut bob = connect_v2(&nodes[0]);
    let mut alice = connect_v2(&nodes[0]);
    let mut carol = connect_v2(&nodes[1]);
    let (bobs, alices) = (handle(11), handle(12));
    // Alice's own handle shows when Bob's node renews its entries (its TTL goes back up).
    let [bobs_key, alices_key] =
        listen_each_in_redis(&redis, [(&mut bob, &bobs), (&mut alice, &alices)]);
    let carols_node = redis_command(&redis, &["GET", &format!("secchat:id:{}", carol.id)]);
    assert!(!carols_node.is_empty(), "Carol's node is in the directory");
    let carols_entry = format!("{} {carols_node}", carol.id);
    redis_command(&redis, &["SET", &bobs_key, &carols_entry, "PX", "60000"]);

    // Within one renewal period (10 s; 25 s allowed).
    let taken = bob
        .try_recv_text(Duration::from_secs(25))
        .expect("HANDLE_TAKEN within a renewal period");
    let taken: serde_json::Value = serde_json::from_str(&taken).unwrap_or_default();
    assert_eq!(taken, json!({"type": "HANDLE_TAKEN", "handle": bobs}));
    assert_eq!(
        redis_command(&redis, &["GET", &bobs_key]),
        carols_entry,
        "the new listener's entry stays"
    );

    // Alice, on Bob's node, now reaches the handle's listener in the directory: Carol's node,
    // which keeps the letter in the cluster's mailbox (Carol has not listened there yet) and
    // hands it to Carol when she does. Bob gets nothing.
    alice.send_json(&to_handle(&bobs, true, "after"));
    alice.expect_queued_ack("after");
    listen(&mut carol, &[&bobs]);
    let letter = carol.expect_type("MESSAGE");
    assert_eq!(letter["handle"], bobs.as_str());
    assert_eq!(letter["payload"], TEST_PAYLOAD);

    // Bob's node renews again: Bob hears nothing more.
    next_renewal(&redis, &alices_key);
    bob.expect_silence(1_000);
    bob.expect_nothing_pending();
}

/// Waits until the node that renews `witness` (a handle entry one of its sessions holds) has
/// renewed its handle entries once more: the entry's TTL (30 s) falls below 25 s, then goes
/// back up. Every handle entry a node renews goes in that same renewal.
fn next_renewal(redis: &RedisServer, witness: &str) {
    let ttl = || {
        redis_command(redis, &["PTTL", witness])
            .parse::<i64>()
            .unwrap_or(-1)
    };
    wait_until("half a renewal period", BUS_UP, || {
        (0..25_000).contains(&ttl())
    });
    wait_until("the next renewal", BUS_UP, || ttl() > 25_000);
}

/// A session on another node takes Bob's handle, then lets it go: nobody listens on it, and
/// Bob's node, which stopped renewing the entry when it told Bob, does not write it back (it
/// would name Bob for ever, renewed every 10 s, even after Bob's session ended).
#[test]
fn a_handle_taken_on_another_node_and_let_go_there_is_not_written_back_by_the_old_node() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let mut bob = connect_v2(&nodes[0]);
    let mut alice = connect_v2(&nodes[0]);
    let mut dave = connect_v2(&nodes[1]);
    let (bobs, alices) = (handle(21), handle(22));
    let [bobs_key, alices_key] =
        listen_each_in_redis(&redis, [(&mut bob, &bobs), (&mut alice, &alices)]);

    listen(&mut dave, &[&bobs]);
    assert_eq!(
        bob.expect_type("HANDLE_TAKEN"),
        json!({"type": "HANDLE_TAKEN", "handle": bobs})
    );
    let reply = dave.request(json!({"type": "UNLISTEN", "handles": [bobs], "ref": "u"}));
    assert_eq!(reply["type"], "LISTENING", "{reply}");
    wait_until("Dave's entry to go", BUS_UP, || {
        redis_command(&redis, &["EXISTS", &bobs_key]) == "0"
    });
    next_renewal(&redis, &alices_key);
    assert_eq!(
        redis_command(&redis, &["GET", &bobs_key]),
        "",
        "Bob's node wrote Bob's entry back"
    );
    alice.send_json(&to_handle(&bobs, true, "kept"));
    alice.expect_queued_ack("kept");
    bob.expect_nothing_pending();
}

/// Bob's session moves to another node (a resume there) and its client does not LISTEN there:
/// its old node deletes its handle's entry at once and renews it no more, so the entry does
/// not name Bob for ever. A letter meanwhile waits in the cluster's mailbox; Bob's next LISTEN,
/// on the new node, names that node and gets it.
#[test]
fn a_session_taken_over_by_another_node_leaves_no_handle_entry_on_its_old_node() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let mut bob = connect_v2(&nodes[0]);
    let mut alice = connect_v2(&nodes[0]);
    let (bobs, alices) = (handle(23), handle(24));
    let [bobs_key, alices_key] =
        listen_each_in_redis(&redis, [(&mut bob, &bobs), (&mut alice, &alices)]);

    let mut moved = Client::connect(&nodes[1]);
    let reply = moved.request(json!({
        "type": "CONNECT", "version": 2, "resume": {"id": bob.id, "token": bob.token},
    }));
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(bob.expect_close(), 4001);
    // Deleted with the hand-over; kept, it would be renewed before its TTL (30 s) ran out.
    wait_until("Bob's entry to go", BUS_UP, || {
        redis_command(&redis, &["EXISTS", &bobs_key]) == "0"
    });
    next_renewal(&redis, &alices_key);
    assert_eq!(redis_command(&redis, &["GET", &bobs_key]), "");

    alice.send_json(&to_handle(&bobs, true, "kept"));
    alice.expect_queued_ack("kept");
    listen(&mut moved, &[&bobs]);
    assert_eq!(moved.expect_type("MESSAGE")["handle"], bobs.as_str());
    let new_node = redis_command(&redis, &["GET", &format!("secchat:id:{}", bob.id)]);
    assert_eq!(
        redis_command(&redis, &["GET", &bobs_key]),
        format!("{} {new_node}", bob.id)
    );
}

/// Redis orders commands per connection only, so another node's lookup could be served before
/// a node's claim of a new ID. The client therefore learns its ID only once the claim holds:
/// with Redis paused, no CONNECT reply comes; once it runs again, the ID is at once reachable
/// from another node.
#[test]
fn a_new_session_learns_its_id_only_once_the_directory_holds_it() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let (mut a, _, _) = connect_session(&nodes[0]);
    redis.pause();
    let mut b = Client::connect(&nodes[1]);
    b.send_json(&json!({"type": "CONNECT"}));
    assert!(
        b.try_recv_text(Duration::from_millis(500)).is_none(),
        "the CONNECT reply came before the claim"
    );
    redis.resume();
    let reply: serde_json::Value = serde_json::from_str(
        &b.try_recv_text(Duration::from_secs(10))
            .expect("the CONNECT reply once Redis runs"),
    )
    .unwrap_or_default();
    let b_id = reply["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(b_id.len(), 6, "{reply}");
    a.send_json(&json!({"type": "FRIEND_REQUEST", "to": b_id, "public_key": TEST_KEY, "ref": "b"}));
    assert_eq!(a.recv_json(), json!({"type": "ACK", "ref": "b"}));
    assert_eq!(b.expect_type("FRIEND_REQUEST")["public_key"], TEST_KEY);
}
