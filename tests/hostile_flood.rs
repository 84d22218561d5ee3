//! Floods of connections: half-open TCP connections that send nothing, with and without the
//! per-address limits, and `--max-connections-per-ip` itself. The hostile sockets come from
//! other loopback addresses (127.0.0.2, 127.0.0.3: Linux routes all of 127/8 to `lo`) than the
//! healthy pair (127.0.0.1), which keeps chatting with fast round trips throughout.

mod common;

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const RTT_BOUND: Duration = Duration::from_millis(500);
const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const LIMITED_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// Whether the server has closed `stream`: EOF or a reset within `wait`, without sending a byte.
fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).expect("read timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the server sent bytes to a silent connection"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) => panic!("unexpected read error: {e}"),
    }
}

/// Counts how many of `streams` the server closed at once, how many it kept open.
fn closed_and_open(streams: &[TcpStream]) -> (usize, usize) {
    let closed = streams.iter().filter(|s| closed_already(s)).count();
    (closed, streams.len() - closed)
}

fn healthz_from(server: &Server, source: Ipv4Addr) -> std::io::Result<HttpResponse> {
    let mut stream = connect_tcp_from(source, &server.addr())?;
    stream.set_read_timeout(Some(RECV_TIMEOUT))?;
    std::io::Write::write_all(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )?;
    read_http_response(&mut stream, false)
}

/// A socket that sent nothing, or not a complete request head, is half-open: one address may
/// hold 16 of them (`server::HALF_OPEN_PER_ADDRESS`) within its 64 sockets.
const HALF_OPEN_PER_ADDRESS: usize = 16;

/// A keep-alive connection from `source` that has been served once: no longer half-open.
fn served_keep_alive_from(server: &Server, source: Ipv4Addr) -> TcpStream {
    let mut stream = connect_tcp_from(source, &server.addr()).expect("connect");
    std::io::Write::write_all(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("send");
    stream
        .set_read_timeout(Some(RECV_TIMEOUT))
        .expect("timeout");
    // The whole response, body included: nothing may be left to read on the socket.
    let response = read_http_response(&mut stream, false).expect("response");
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, &b"ok"[..])
    );
    stream
}

#[test]
fn a_half_open_flood_from_one_address_is_capped_per_address() {
    // The default limit: 64 sockets per address, 16 of them half-open.
    let server = Server::start(&[]);
    let mut pair = HealthyPair::new(&server);
    let before = RttStats {
        samples: (0..10).map(|_| pair.round_trip()).collect(),
    };
    let monitor = pair.monitor();

    // 48 sockets that were served and wait, keep-alive, for their next request.
    let mut served: Vec<TcpStream> = (0..48)
        .map(|_| served_keep_alive_from(&server, FLOOD_SOURCE))
        .collect();
    let flood: Vec<TcpStream> = (0..300)
        .map(|_| connect_tcp_from(FLOOD_SOURCE, &server.addr()).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (closed, open) = closed_and_open(&flood);
    assert_eq!(
        (closed, open),
        (300 - HALF_OPEN_PER_ADDRESS, HALF_OPEN_PER_ADDRESS),
        "(closed at once, kept) of 300 silent sockets"
    );
    let kept: Vec<TcpStream> = flood.into_iter().filter(|s| !closed_already(s)).collect();
    assert_eq!(kept.len(), HALF_OPEN_PER_ADDRESS);
    for stream in &served {
        assert!(
            !closed_already(stream),
            "a served keep-alive socket was closed"
        );
    }

    // Other addresses are served at once.
    let started = Instant::now();
    assert_eq!(http_get(&server, "/healthz").body, b"ok");
    assert!(started.elapsed() < Duration::from_secs(1));

    // A closed socket frees its place: ten half-open ones close, ten new ones are served, and
    // the eleventh finds the address at its 64 sockets.
    let mut kept = kept;
    kept.truncate(HALF_OPEN_PER_ADDRESS - 10);
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..10 {
        served.push(served_keep_alive_from(&server, FLOOD_SOURCE));
    }
    let mut eleventh = connect_tcp_from(FLOOD_SOURCE, &server.addr()).expect("connect");
    assert!(
        closed_by_server(&mut eleventh, Duration::from_secs(2)),
        "the 65th socket was kept"
    );

    let (during, mut pair) = monitor.stop();
    before.assert_healthy("before the flood", 10, RTT_BOUND);
    during.assert_healthy("during the flood", 5, RTT_BOUND);
    pair.round_trip();
}

#[test]
fn a_half_open_flood_without_a_per_address_limit_does_not_stall_the_loop() {
    let server = Server::start(&["--max-connections-per-ip", "0"]);
    let mut pair = HealthyPair::new(&server);
    for _ in 0..5 {
        pair.round_trip();
    }
    let rss_before = rss_kib(server.pid());
    let monitor = pair.monitor();

    let mut flood = Vec::new();
    for n in 0..600 {
        let mut stream = connect_tcp_from(FLOOD_SOURCE, &server.addr()).expect("connect");
        // Half send nothing at all, half the start of a head.
        if n % 2 == 1 {
            std::io::Write::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: a\r\n").expect("send");
        }
        flood.push(stream);
    }
    std::thread::sleep(Duration::from_millis(1_500));
    let (closed, open) = closed_and_open(&flood);
    assert_eq!(
        (closed, open),
        (0, 600),
        "without a limit every socket is kept"
    );
    let rss_during = rss_kib(server.pid());
    let started = Instant::now();
    assert_eq!(
        healthz_from(&server, FLOOD_SOURCE).expect("healthz").status,
        200
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    let (during, mut pair) = monitor.stop();
    eprintln!("RSS {rss_before} KiB before, {rss_during} KiB with 600 half-open sockets");
    // A waiting head costs its read buffer and a little state: far below 16 MiB for 600.
    assert!(
        rss_during < rss_before + 16 * 1024,
        "600 half-open sockets took {} KiB",
        rss_during - rss_before
    );
    during.assert_healthy("during 600 half-open sockets", 10, RTT_BOUND);
    drop(flood);
    pair.round_trip();
}

#[test]
fn the_fourth_socket_from_an_address_limited_to_three_is_closed_at_once() {
    let server = Server::start(&["--max-connections-per-ip", "3"]);
    // Two sockets from 127.0.0.1: under its own limit of three.
    let mut pair = HealthyPair::new(&server);
    let mut three: Vec<Client> = (0..3)
        .map(|_| {
            let mut client = Client::try_connect_from(&server, LIMITED_SOURCE).expect("connect");
            let reply = client.request(json!({"type": "CONNECT"}));
            assert_eq!(reply["type"], "CONNECT", "{reply}");
            client
        })
        .collect();

    let mut fourth = connect_tcp_from(LIMITED_SOURCE, &server.addr()).expect("TCP connect");
    let started = Instant::now();
    assert!(
        closed_by_server(&mut fourth, Duration::from_secs(2)),
        "the fourth socket was kept"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "not closed at once"
    );
    assert!(Client::try_connect_from(&server, LIMITED_SOURCE).is_err());

    // The three still work, and so does everyone else.
    for client in &mut three {
        client.expect_nothing_pending();
    }
    let rtt = RttStats {
        samples: (0..10).map(|_| pair.round_trip()).collect(),
    };
    rtt.assert_healthy("beside the limited address", 10, RTT_BOUND);

    // One leaves (DISCONNECT: a session in its resume window would still count against the
    // address); its place is free again once the server has seen it go.
    if let Some(mut leaving) = three.pop() {
        leaving.send_json(&json!({"type": "DISCONNECT"}));
        assert_eq!(leaving.expect_close(), 1000);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut replacement = loop {
        if let Ok(client) = Client::try_connect_from(&server, LIMITED_SOURCE) {
            break client;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was not given back"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let reply = replacement.request(json!({"type": "CONNECT"}));
    assert_eq!(reply["type"], "CONNECT", "{reply}");
}

/// Found by this work and fixed: `--max-connections-per-ip` counted only open sockets, but a
/// session outlives its socket for `--resume-grace` (30 s by default). One address that
/// connected, sent CONNECT and dropped, over and over, never held more than one socket, yet
/// filled `--max-connections` with sessions in their resume window: every other
/// client then gets `server_full` and close 1013, for as long as the churn goes on (about a
/// millisecond per session on loopback). Sessions now count against the address (IPv6: /64)
/// that created them, with the same limit.
#[test]
fn one_address_cannot_fill_the_server_with_sessions_in_their_resume_window() {
    let server = Server::start(&["--max-connections", "50", "--max-connections-per-ip", "8"]);
    for _ in 0..60 {
        let Ok(mut client) = Client::try_connect_from(&server, FLOOD_SOURCE) else {
            continue;
        };
        let reply = client.request(json!({"type": "CONNECT"}));
        if reply["type"] != "CONNECT" {
            break;
        }
        client.drop_connection();
    }
    // Another address, with no socket open at all, must still get a session.
    let mut other = Client::connect(&server);
    let reply = other.request(json!({"type": "CONNECT"}));
    assert_eq!(
        reply["type"], "CONNECT",
        "another address was refused: {reply}"
    );
}
