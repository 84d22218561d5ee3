//! Address tricks against the per-address limits:
//!
//! - one IPv6 /48 spread over many /64s holds only four /64s' worth of sockets, sessions and
//!   half-open connections (its /56s twice), while another /48 and `::1` are still served. These
//!   tests run in a network namespace of their own where all of 2001:db8::/32 is local
//!   (`common::in_network_namespace`), so the server sees real IPv6 sources;
//! - behind a trusted reverse proxy (`--trusted-proxy`), each client the proxy names in
//!   `X-Forwarded-For` has its own limits and the proxy has none; from any other peer the header
//!   changes nothing.
//!
//! Nothing here depends on timing except waiting for what must eventually happen (a refused
//! socket's close reaching the client).

mod common;

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// `server::HALF_OPEN_PER_ADDRESS`: half-open connections per /64 (or IPv4 address).
const HALF_OPEN_PER_64: usize = 16;

/// An address of the IPv6 documentation block: `2001:db8:<site>:<subnet>::<host>`. With
/// `subnet` a multiple of 0x100, each subnet is the only /64 of its /56.
fn v6(site: u16, subnet: u16, host: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, site, subnet, 0, 0, 0, host))
}

fn connect_reply(client: &mut Client) -> Value {
    client.request(json!({"type": "CONNECT"}))
}

fn assert_gets_a_session(client: &mut Client, what: &str) {
    let reply = connect_reply(client);
    assert_eq!(reply["type"], "CONNECT", "{what}: {reply}");
}

fn assert_server_full(client: &mut Client, what: &str) {
    let reply = connect_reply(client);
    assert_eq!(
        (&reply["type"], &reply["code"]),
        (&json!("ERROR"), &json!("server_full")),
        "{what}: {reply}"
    );
}

/// WebSockets from each of `sources` that the server lets open, each with a session.
fn sessions_from(server: &Server, sources: &[IpAddr]) -> Vec<Client> {
    let mut opened = Vec::new();
    for &source in sources {
        if let Some(mut client) = websocket_from(server, source, &[]).opened() {
            assert_gets_a_session(&mut client, &format!("a WebSocket from {source}"));
            opened.push(client);
        }
    }
    opened
}

/// How many of `streams` the server keeps open, once it has dealt with all of them: a request
/// answered afterwards from `barrier` proves every earlier connection was accepted (and each
/// refused one closed); the closes are then waited for (at most a few seconds).
fn kept_open(server: &Server, streams: &[TcpStream], barrier: IpAddr, expected: usize) -> usize {
    let mut probe = connect_tcp_from_ip(barrier, server).expect("connect the barrier");
    probe.set_read_timeout(Some(RECV_TIMEOUT)).expect("timeout");
    std::io::Write::write_all(
        &mut probe,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .expect("send");
    assert_eq!(
        read_http_response(&mut probe, false)
            .expect("healthz")
            .status,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = streams.iter().filter(|s| !closed_already(s)).count();
        if open == expected || Instant::now() >= deadline {
            return open;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Closes our side of `stream` and waits until the server has closed its side: by then it has
/// given back whatever the connection held.
fn close_and_wait(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(RECV_TIMEOUT));
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the server did not close a connection we closed: {e}"),
        }
    }
}

fn healthz_from(server: &Server, source: IpAddr) -> u16 {
    let mut stream = connect_tcp_from_ip(source, server).expect("connect");
    stream
        .set_read_timeout(Some(RECV_TIMEOUT))
        .expect("timeout");
    std::io::Write::write_all(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .expect("send");
    read_http_response(&mut stream, false)
        .expect("healthz")
        .status
}

/// A hole this test keeps closed: sockets were counted per /64 only, so 157 /64s of
/// one /48 (tunnel brokers hand out /48s for free) opened as many WebSockets as they liked.
/// Sockets now count in the /64, /56 and /48 at once (`--max-connections-per-ip` per /64, twice
/// that per /56, four times per /48), like the sessions the router counts.
#[test]
fn one_ipv6_48_holds_four_64s_worth_of_websockets_and_sessions() {
    in_network_namespace(|| {
        let server = ServerBuilder::new()
            .listen_on("[::1]")
            .flags(&["--max-connections-per-ip", "4"])
            .start();

        // 32 /64s of 2001:db8:1::/48, each in a /56 of its own, one WebSocket each: the /48
        // holds 4 × 4.
        let spread: Vec<IpAddr> = (0..32).map(|n| v6(1, n << 8, 1)).collect();
        let held = sessions_from(&server, &spread);
        assert_eq!(held.len(), 16, "WebSockets one /48 holds over 32 /64s");

        // 16 /64s of one /56 of another /48: it holds 2 × 4.
        let one_56: Vec<IpAddr> = (0..16).map(|n| v6(2, 0x100 + n, 1)).collect();
        let held_56 = sessions_from(&server, &one_56);
        assert_eq!(held_56.len(), 8, "WebSockets one /56 holds over 16 /64s");

        // Another /48, and ::1, are served.
        let mut other = websocket_from(&server, v6(3, 0, 1), &[])
            .opened()
            .expect("another /48 opens a WebSocket");
        assert_gets_a_session(&mut other, "another /48");
        let mut local = websocket_from(&server, IpAddr::V6(Ipv6Addr::LOCALHOST), &[])
            .opened()
            .expect("::1 opens a WebSocket");
        assert_gets_a_session(&mut local, "::1");

        // Sessions outlive their sockets: the 16 drop without DISCONNECT and wait in their
        // resume window. New /64s of the same /48 get sockets again, but no session.
        for client in held {
            client.drop_and_drain();
        }
        let fresh: Vec<IpAddr> = (32..36).map(|n| v6(1, n << 8, 1)).collect();
        for &source in &fresh {
            let upgrade = websocket_from(&server, source, &[]);
            let what = upgrade.describe();
            let mut client = upgrade
                .opened()
                .unwrap_or_else(|| panic!("the /48's sockets were freed, yet {what}"));
            assert_server_full(&mut client, "a new session in a /48 at its session limit");
        }
        let mut other_session = websocket_from(&server, v6(3, 0x100, 1), &[])
            .opened()
            .expect("another /48 opens a WebSocket");
        assert_gets_a_session(&mut other_session, "another /48, after the churn");
    });
}

/// A hole this test keeps closed: connections that never complete a request head
/// were limited only by the per-/64 socket count, so 384 of them from 6 /64s starved the
/// server-wide socket cap. Half-open connections now have their own nested budget: 16 per /64,
/// 32 per /56, 64 per /48.
#[test]
fn half_open_connections_of_one_ipv6_48_are_capped_at_64() {
    in_network_namespace(|| {
        // A socket limit high enough that only the half-open budget can refuse.
        let server = ServerBuilder::new()
            .listen_on("[::1]")
            .flags(&["--max-connections-per-ip", "1000"])
            .start();
        let remote: SocketAddr = server.addr().parse().expect("server address");
        let barrier = IpAddr::V6(Ipv6Addr::LOCALHOST);

        // 8 silent connections from each of 16 /64s (each the only one of its /56).
        let mut flood = Vec::new();
        for subnet in 0..16u16 {
            for host in 1..=8 {
                let IpAddr::V6(source) = v6(1, subnet << 8, host) else {
                    unreachable!()
                };
                flood.push(connect_tcp_from_v6(source, remote).expect("connect"));
            }
        }
        let kept = kept_open(&server, &flood, barrier, 4 * HALF_OPEN_PER_64);
        assert_eq!(
            kept,
            4 * HALF_OPEN_PER_64,
            "half-open sockets one /48 holds of 128"
        );

        // One /64 alone: 16.
        let one_64: Vec<TcpStream> = (1..=24)
            .map(|host| {
                let IpAddr::V6(source) = v6(2, 0, host) else {
                    unreachable!()
                };
                connect_tcp_from_v6(source, remote).expect("connect")
            })
            .collect();
        let kept_64 = kept_open(&server, &one_64, barrier, HALF_OPEN_PER_64);
        assert_eq!(
            kept_64, HALF_OPEN_PER_64,
            "half-open sockets one /64 holds of 24"
        );

        // Others are served; the full /48 gets no new connection until one of its own goes.
        assert_eq!(healthz_from(&server, v6(3, 0, 1)), 200, "another /48");
        assert_eq!(healthz_from(&server, barrier), 200, "::1");
        for stream in flood {
            close_and_wait(stream);
        }
        assert_eq!(
            healthz_from(&server, v6(1, 0, 9)),
            200,
            "the /48 after its half-open sockets closed"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Behind a trusted reverse proxy
// ---------------------------------------------------------------------------------------------

const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn forwarded(server: &Server, from: IpAddr, forwarded_for: &str) -> Upgrade {
    websocket_from(server, from, &[("X-Forwarded-For", forwarded_for)])
}

fn open_with_session(server: &Server, from: IpAddr, forwarded_for: &str) -> Client {
    let upgrade = forwarded(server, from, forwarded_for);
    let what = upgrade.describe();
    let mut client = upgrade.opened().unwrap_or_else(|| {
        panic!("from {from}, X-Forwarded-For {forwarded_for:?}: {what}");
    });
    assert_gets_a_session(&mut client, forwarded_for);
    client
}

/// A hole this test keeps closed: behind the shipped reverse proxy every connection
/// came from the proxy's address, so per-address limits had to be off and one client filled
/// all 10,000 sessions. With `--trusted-proxy`, the client the proxy names is what the socket
/// and session limits count; the proxy itself is not limited.
#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limits() {
    let server = Server::start(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--max-connections-per-ip",
        "3",
    ]);

    // Client 198.51.100.1: three WebSockets with sessions, then 429.
    let ones: Vec<Client> = (0..3)
        .map(|_| open_with_session(&server, PROXY, "198.51.100.1"))
        .collect();
    let fourth = forwarded(&server, PROXY, "198.51.100.1");
    assert!(
        matches!(fourth, Upgrade::Refused(429)),
        "the fourth WebSocket of one forwarded client: {}",
        fourth.describe()
    );
    // What the client wrote itself, left of the address the proxy appended, changes nothing.
    let disguised = forwarded(&server, PROXY, "198.51.100.9, 198.51.100.1");
    assert!(
        matches!(disguised, Upgrade::Refused(429)),
        "a client prepending another address: {}",
        disguised.describe()
    );

    // Other clients behind the same proxy are served: the proxy's own address holds 3 + 4
    // WebSockets, past the limit of 3, and more half-open connections than an address may hold.
    let mut others: Vec<Client> = [
        "198.51.100.2",
        "198.51.100.9, 198.51.100.3",
        "198.51.100.1, 198.51.100.4",
        "2001:db8::5",
    ]
    .iter()
    .map(|xff| open_with_session(&server, PROXY, xff))
    .collect();
    let silent: Vec<TcpStream> = (0..HALF_OPEN_PER_64 + 4)
        .map(|_| connect_tcp_from_ip(PROXY, &server).expect("connect"))
        .collect();
    let kept = kept_open(&server, &silent, PROXY, silent.len());
    assert_eq!(kept, silent.len(), "the proxy's half-open connections");

    // Sessions follow the client too: 198.51.100.1's sockets drop and its three sessions wait
    // in their resume window. It gets a socket again, but no fourth session; .2 still does.
    for client in ones {
        client.drop_and_drain();
    }
    let mut again = forwarded(&server, PROXY, "198.51.100.1")
        .opened()
        .expect("198.51.100.1's sockets were freed");
    assert_server_full(&mut again, "a fourth session of 198.51.100.1");
    let mut two = open_with_session(&server, PROXY, "198.51.100.2");
    two.expect_nothing_pending();
    if let Some(first) = others.first_mut() {
        first.expect_nothing_pending();
    }
}

/// `X-Forwarded-For` from a peer that is not a trusted proxy is ignored: the connections count
/// against the peer, whatever each claims. (Without `--trusted-proxy` this held before the fix
/// too; it guards the header against being believed from anyone.)
#[test]
fn a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let untrusted_setups: [(&[&str], Ipv4Addr); 2] = [
        (
            &["--max-connections-per-ip", "3"],
            Ipv4Addr::new(127, 0, 0, 2),
        ),
        (
            &[
                "--trusted-proxy",
                "127.0.0.1",
                "--max-connections-per-ip",
                "3",
            ],
            Ipv4Addr::new(127, 0, 0, 3),
        ),
    ];
    for (flags, peer) in untrusted_setups {
        let server = Server::start(flags);
        let peer = IpAddr::V4(peer);
        let held: Vec<Client> = (10..13)
            .map(|n| open_with_session(&server, peer, &format!("198.51.100.{n}")))
            .collect();
        let fourth = forwarded(&server, peer, "198.51.100.13");
        assert!(
            matches!(fourth, Upgrade::Closed(_)),
            "{flags:?}: a fourth socket from {peer} with another forged client was {}",
            fourth.describe()
        );
        // The sessions were counted against the peer as well.
        for client in held {
            client.drop_and_drain();
        }
        let mut again = forwarded(&server, peer, "198.51.100.14")
            .opened()
            .expect("the peer's sockets were freed");
        assert_server_full(&mut again, "a fourth session from one untrusted peer");
        // Someone else is served.
        let mut other = Client::connect(&server);
        assert_gets_a_session(&mut other, "127.0.0.1 without a header");
    }
}
