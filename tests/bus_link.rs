//! The cluster bus's Redis link against a real `redis-server` (and against fake servers that
//! speak junk), driven by a small mio loop in the test as the server's loop drives it; and a
//! node's bus on top of it where what Redis answers decides what the router hears.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::redis::{RedisServer, RedisTls, require_redis};
use common::tls::TestCa;
use mio::{Events, Poll, Token};
use secchat::bus::{
    BACKOFF_MAX, BusNews, ClusterBus, ClusterUrl, LinkError, LinkEvent, LinkState, MailboxRules,
    RedisLink, Reply, Role, tls_client_config,
};
use secchat::id::Id;
use secchat::protocol::Handle;
use secchat::router::BusOutput;

/// How long a test waits for something that should happen within a second or two.
const WAIT: Duration = Duration::from_secs(10);

/// A mio loop with some links, in the order the server's loop runs them: poll until the
/// nearest deadline, readiness to each link, then `drive` and `flush` every link and take its
/// events.
struct Loop {
    poll: Poll,
    events: Events,
    links: Vec<RedisLink>,
    /// Every event each link reported, in order.
    seen: Vec<Vec<LinkEvent>>,
    /// Turns in which each link was seen connecting after being down: its attempts.
    attempts: Vec<usize>,
    last_state: Vec<LinkState>,
}

impl Loop {
    fn new() -> Loop {
        Loop {
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(64),
            links: Vec::new(),
            seen: Vec::new(),
            attempts: Vec::new(),
            last_state: Vec::new(),
        }
    }

    /// Adds a link for `url` (parsed) and returns its index, which is also its token.
    fn add(&mut self, url: &str, role: Role) -> usize {
        let url = ClusterUrl::parse(url).unwrap();
        self.add_link(|token| RedisLink::new(url, role, token))
    }

    fn add_link(&mut self, make: impl FnOnce(Token) -> RedisLink) -> usize {
        let index = self.links.len();
        self.links.push(make(Token(index)));
        self.seen.push(Vec::new());
        self.attempts.push(0);
        self.last_state.push(LinkState::Down);
        index
    }

    fn link(&mut self, index: usize) -> &mut RedisLink {
        &mut self.links[index]
    }

    fn turn(&mut self) {
        let deadline = self.links.iter().filter_map(RedisLink::next_deadline).min();
        poll_until(&mut self.poll, &mut self.events, deadline);
        let now = Instant::now();
        let registry = self.poll.registry();
        for event in self.events.iter() {
            if let Some(link) = self.links.get_mut(event.token().0) {
                link.ready(registry, event, now);
            }
        }
        for (index, link) in self.links.iter_mut().enumerate() {
            link.drive(registry, now);
            link.flush(registry);
            link.take_events(&mut self.seen[index]);
            let state = link.state();
            if state == LinkState::Connecting && self.last_state[index] == LinkState::Down {
                self.attempts[index] += 1;
            }
            self.last_state[index] = state;
        }
    }

    /// Turns until `done` holds; panics with `what` after `limit`.
    fn until(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&mut Loop) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.turn();
        }
    }

    /// Turns for `time`, whatever happens.
    fn run_for(&mut self, time: Duration) {
        let deadline = Instant::now() + time;
        while Instant::now() < deadline {
            self.turn();
        }
    }

    fn until_up(&mut self, index: usize) {
        self.until("the link to come up", WAIT, |l| {
            l.links[index].state() == LinkState::Ready
        });
        assert!(matches!(self.seen[index].last(), Some(LinkEvent::Up)));
        self.seen[index].clear();
    }

    fn replies(&self, index: usize) -> Vec<Reply> {
        self.seen[index]
            .iter()
            .filter_map(|event| match event {
                LinkEvent::Reply(reply) => Some(reply.clone()),
                _ => None,
            })
            .collect()
    }

    /// Sends one command, waits for its reply and returns it.
    fn ask(&mut self, index: usize, args: &[&[u8]]) -> Reply {
        self.seen[index].clear();
        self.links[index].command(args).unwrap();
        self.links[index].flush(self.poll.registry());
        self.until("a reply", WAIT, |l| !l.seen[index].is_empty());
        match self.seen[index].remove(0) {
            LinkEvent::Reply(reply) => reply,
            other => panic!("expected a reply, got {other:?}"),
        }
    }
}

/// One poll, until `deadline` or 20 ms, whichever is nearer (as the server's loop, with a
/// short cap so that tests notice what they wait for soon).
fn poll_until(poll: &mut Poll, events: &mut Events, deadline: Option<Instant>) {
    let timeout = deadline
        .map_or(Duration::from_millis(20), |deadline| {
            deadline.saturating_duration_since(Instant::now())
        })
        .min(Duration::from_millis(20));
    match poll.poll(events, Some(timeout)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
        Err(e) => panic!("poll: {e}"),
    }
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn bulk(bytes: &[u8]) -> Reply {
    Reply::Bulk(Some(bytes.to_vec()))
}

fn subscriber(channels: &[&[u8]]) -> Role {
    Role::Subscriber {
        channels: channels.iter().map(|c| c.to_vec()).collect(),
    }
}

#[test]
fn a_thousand_sets_and_gets_are_pipelined_and_answered_in_order() {
    require_redis();
    let redis = RedisServer::start();
    let mut lp = Loop::new();
    let link = lp.add(&redis.url(), Role::Commands);
    lp.until_up(link);

    let keys: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();
    let values: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| [format!("value {i} ").as_bytes(), &[0, 13, 10, 255]].concat())
        .collect();
    // All 2000 commands are queued before the first write: one pipeline.
    for (key, value) in keys.iter().zip(&values) {
        lp.link(link)
            .command(&[b"SET", key.as_bytes(), value])
            .unwrap();
    }
    for key in &keys {
        lp.link(link).command(&[b"GET", key.as_bytes()]).unwrap();
    }
    assert_eq!(lp.link(link).in_flight(), 2000);
    lp.until("2000 replies", WAIT, |l| l.replies(link).len() == 2000);

    let replies = lp.replies(link);
    assert!(replies[..1000].iter().all(|reply| *reply == ok()));
    for (reply, value) in replies[1000..].iter().zip(&values) {
        assert_eq!(*reply, bulk(value));
    }
    let link = lp.link(link);
    assert_eq!(link.in_flight(), 0);
    assert_eq!(link.unsent_bytes(), 0);
    assert!(link.latency().count() >= 2000);
    assert!(link.latency().quantile(0.99).is_some());
    assert!(link.latency().last().is_some());
}

#[test]
fn publish_from_the_command_link_reaches_a_subscriber_on_two_channels() {
    require_redis();
    let redis = RedisServer::start();
    let mut lp = Loop::new();
    let commands = lp.add(&redis.url(), Role::Commands);
    let sub = lp.add(&redis.url(), subscriber(&[b"node:a", b"node:b"]));
    lp.until_up(commands);
    lp.until_up(sub);
    assert_eq!(
        lp.link(sub).command(&[b"PING"]),
        Err(LinkError::NotCommands)
    );

    let binary: Vec<u8> = (0..=255u8).chain(*b"\r\n*3\r\n").collect();
    assert_eq!(
        lp.ask(commands, &[b"PUBLISH", b"node:a", b"first"]),
        Reply::Integer(1)
    );
    assert_eq!(
        lp.ask(commands, &[b"PUBLISH", b"node:b", &binary]),
        Reply::Integer(1)
    );
    assert_eq!(
        lp.ask(commands, &[b"PUBLISH", b"node:c", b"nobody"]),
        Reply::Integer(0)
    );
    lp.until("two messages", WAIT, |l| l.seen[sub].len() == 2);
    assert_eq!(
        lp.seen[sub],
        vec![
            LinkEvent::Message {
                channel: b"node:a".to_vec(),
                payload: b"first".to_vec()
            },
            LinkEvent::Message {
                channel: b"node:b".to_vec(),
                payload: binary
            },
        ]
    );
}

#[test]
fn the_right_password_logs_in_with_or_without_a_user_name() {
    require_redis();
    let redis = RedisServer::builder().password("p@ss:word/1").start();
    let mut lp = Loop::new();
    let port = redis.port();
    let alone = lp.add(
        &format!("redis://:p%40ss%3Aword%2F1@127.0.0.1:{port}"),
        Role::Commands,
    );
    let with_user = lp.add(
        &format!("redis://default:p%40ss%3Aword%2F1@127.0.0.1:{port}"),
        subscriber(&[b"ch"]),
    );
    lp.until_up(alone);
    lp.until_up(with_user);
    assert_eq!(
        lp.ask(alone, &[b"PUBLISH", b"ch", b"hi"]),
        Reply::Integer(1)
    );
}

#[test]
fn a_wrong_password_stays_down_and_keeps_retrying() {
    require_redis();
    let redis = RedisServer::builder().password("right").start();
    let mut lp = Loop::new();
    let port = redis.port();
    let wrong = lp.add(&format!("redis://:wrong@127.0.0.1:{port}"), Role::Commands);
    let missing = lp.add(&redis.url(), Role::Commands);
    let wrong_sub = lp.add(
        &format!("redis://default:wrong@127.0.0.1:{port}"),
        subscriber(&[b"ch"]),
    );
    // Backoff from 100 ms: 100 + 200 + 400 + 800 ms fit in 2 s with room for jitter.
    lp.run_for(Duration::from_secs(2));
    for link in [wrong, missing, wrong_sub] {
        assert!(lp.seen[link].is_empty(), "{:?}", lp.seen[link]);
        assert_ne!(lp.link(link).state(), LinkState::Ready);
        assert!(lp.attempts[link] >= 3, "attempts: {}", lp.attempts[link]);
        assert!(lp.link(link).command(&[b"PING"]).is_err());
    }
}

#[test]
fn select_picks_the_database_in_the_url() {
    require_redis();
    let redis = RedisServer::start();
    let mut lp = Loop::new();
    let db0 = lp.add(&redis.url(), Role::Commands);
    let db3 = lp.add(&format!("{}/3", redis.url()), Role::Commands);
    lp.until_up(db0);
    lp.until_up(db3);
    assert_eq!(lp.ask(db3, &[b"SET", b"where", b"three"]), ok());
    assert_eq!(lp.ask(db0, &[b"GET", b"where"]), Reply::Bulk(None));
    assert_eq!(lp.ask(db3, &[b"GET", b"where"]), bulk(b"three"));
    // The server says which database each connection is on.
    let Reply::Bulk(Some(list)) = lp.ask(db0, &[b"CLIENT", b"LIST"]) else {
        panic!("CLIENT LIST")
    };
    let list = String::from_utf8(list).unwrap();
    assert!(list.lines().any(|line| line.contains(" db=3 ")), "{list}");
}

#[test]
fn a_killed_redis_fails_what_was_unanswered_and_the_links_come_back_by_themselves() {
    require_redis();
    let mut redis = RedisServer::start();
    let mut lp = Loop::new();
    let commands = lp.add(&redis.url(), Role::Commands);
    let sub = lp.add(&redis.url(), subscriber(&[b"ch"]));
    lp.until_up(commands);
    lp.until_up(sub);

    // One command answered, then one that blocks the connection for good, and five behind it.
    lp.link(commands).command(&[b"PING"]).unwrap();
    lp.link(commands)
        .command(&[b"BLPOP", b"never", b"0"])
        .unwrap();
    for i in 0..5 {
        lp.link(commands)
            .command(&[b"SET", format!("k{i}").as_bytes(), b"v"])
            .unwrap();
    }
    lp.until("the PONG", WAIT, |l| l.replies(commands).len() == 1);
    lp.run_for(Duration::from_millis(200));
    assert_eq!(lp.replies(commands), vec![Reply::Simple("PONG".into())]);
    assert_eq!(lp.link(commands).in_flight(), 6);
    lp.seen[commands].clear();

    redis.stop();
    lp.until("both links down", WAIT, |l| {
        l.seen[commands].len() == 1 && l.seen[sub].len() == 1
    });
    assert_eq!(lp.seen[commands], vec![LinkEvent::Down { unanswered: 6 }]);
    assert_eq!(lp.seen[sub], vec![LinkEvent::Down { unanswered: 0 }]);
    assert_eq!(lp.link(commands).command(&[b"PING"]), Err(LinkError::Down));
    assert_eq!(lp.link(commands).in_flight(), 0);

    // Long enough for the backoff to reach its ceiling.
    lp.run_for(Duration::from_secs(6));
    assert!(lp.attempts[commands] >= 4, "{}", lp.attempts[commands]);
    assert!(lp.seen[commands].len() == 1 && lp.seen[sub].len() == 1);
    redis.restart();
    let back = BACKOFF_MAX + Duration::from_secs(3);
    lp.until("both links up again", back, |l| {
        l.links[commands].state() == LinkState::Ready && l.links[sub].state() == LinkState::Ready
    });
    assert_eq!(lp.seen[commands].last(), Some(&LinkEvent::Up));
    assert_eq!(lp.seen[sub].last(), Some(&LinkEvent::Up));
    // The subscriber subscribed again on its new connection.
    lp.seen[sub].clear();
    assert_eq!(
        lp.ask(commands, &[b"PUBLISH", b"ch", b"again"]),
        Reply::Integer(1)
    );
    lp.until("the message", WAIT, |l| !l.seen[sub].is_empty());
    assert_eq!(
        lp.seen[sub],
        vec![LinkEvent::Message {
            channel: b"ch".to_vec(),
            payload: b"again".to_vec()
        }]
    );
}

#[test]
fn nothing_listening_means_down_and_retrying() {
    let port = common::redis::free_port();
    let mut lp = Loop::new();
    let link = lp.add(&format!("redis://127.0.0.1:{port}"), Role::Commands);
    lp.run_for(Duration::from_millis(1200));
    assert!(lp.seen[link].is_empty());
    assert_eq!(lp.link(link).state(), LinkState::Down);
    assert!(lp.attempts[link] >= 3, "{}", lp.attempts[link]);
}

/// A fake server on a thread: each accepted connection gets the next of `scripts`, a function
/// of what it reads and writes.
fn fake_server(
    scripts: Vec<fn(&mut std::net::TcpStream)>,
) -> (String, Arc<AtomicUsize>, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "redis://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let thread = std::thread::spawn(move || {
        for script in scripts {
            let Ok((mut tcp, _)) = listener.accept() else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            script(&mut tcp);
        }
    });
    (url, accepted, thread)
}

/// Reads at least one byte, so that the link's handshake was sent before the answer.
fn read_some(tcp: &mut std::net::TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = tcp.read(&mut buf);
}

#[test]
fn a_server_speaking_junk_brings_the_link_down_without_a_panic() {
    let scripts: Vec<fn(&mut std::net::TcpStream)> = vec![
        |tcp| {
            read_some(tcp);
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        },
        |tcp| {
            read_some(tcp);
            let _ = tcp.write_all(&b"*1\r\n".repeat(100_000));
        },
        |tcp| {
            read_some(tcp);
            let _ = tcp.write_all(b"$99999999999\r\n");
        },
        |tcp| {
            read_some(tcp);
            let _ = tcp.write_all(b"$3\r\nabcdef\r\n");
        },
        |tcp| {
            read_some(tcp);
            let _ = tcp.write_all(b"+OK\r\n"); // OK is not PONG
        },
        |tcp| {
            read_some(tcp);
            let junk: Vec<u8> = (0..65_536u32).map(|i| (i * 7919 % 251) as u8).collect();
            let _ = tcp.write_all(&junk);
        },
        |tcp| {
            // Says nothing and closes.
            read_some(tcp);
        },
    ];
    let expected = scripts.len();
    let (url, accepted, thread) = fake_server(scripts);
    let mut lp = Loop::new();
    let link = lp.add(&url, Role::Commands);
    lp.until("every fake connection", Duration::from_secs(30), |l| {
        accepted.load(Ordering::SeqCst) == expected && l.links[link].state() == LinkState::Down
    });
    thread.join().unwrap();
    assert!(lp.seen[link].is_empty(), "{:?}", lp.seen[link]);
}

#[test]
fn junk_after_the_handshake_fails_the_commands_in_flight() {
    let scripts: Vec<fn(&mut std::net::TcpStream)> = vec![|tcp| {
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        // The handshake is one PING; answer it, then wait for the two commands.
        while !seen.ends_with(b"$4\r\nPING\r\n") {
            let n = tcp.read(&mut buf).unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        tcp.write_all(b"+PONG\r\n").unwrap();
        let mut commands = Vec::new();
        while commands.windows(4).filter(|w| w == b"$3\r\n").count() < 2 {
            let n = tcp.read(&mut buf).unwrap();
            assert!(n > 0);
            commands.extend_from_slice(&buf[..n]);
        }
        // One good reply, then a frame type that does not exist.
        tcp.write_all(b":1\r\n%junk\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }];
    let (url, _, thread) = fake_server(scripts);
    let mut lp = Loop::new();
    let link = lp.add(&url, Role::Commands);
    lp.until_up(link);
    lp.link(link).command(&[b"GET", b"a"]).unwrap();
    lp.link(link).command(&[b"GET", b"b"]).unwrap();
    lp.until("down", WAIT, |l| l.seen[link].len() == 2);
    assert_eq!(
        lp.seen[link],
        vec![
            LinkEvent::Reply(Reply::Integer(1)),
            LinkEvent::Down { unanswered: 1 }
        ]
    );
    thread.join().unwrap();
}

/// `redis-server --tls-port` with a certificate for localhost and 127.0.0.1 from `ca`; the CA's
/// certificate is `dir/ca.pem`.
fn start_tls_redis(ca: &TestCa, dir: &std::path::Path) -> RedisServer {
    ca.issue_for_into(&["localhost", "127.0.0.1"], dir);
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    RedisServer::builder()
        .password("tls-secret")
        .tls(RedisTls {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: ca_file,
        })
        .start()
}

#[test]
fn rediss_speaks_tls_with_the_given_ca() {
    require_redis();
    let ca = TestCa::new();
    let dir = common::tls::fresh_dir("redis");
    let redis = start_tls_redis(&ca, dir.path());
    let config = tls_client_config(Some(&dir.path().join("ca.pem"))).unwrap();
    let url = format!("rediss://:tls-secret@127.0.0.1:{}/2", redis.port());
    let mut lp = Loop::new();
    // A small read budget: plaintext rustls has decrypted but not handed over yet must be
    // read at the next drive, with no readiness event to say so.
    let commands = lp.add_link(|token| {
        RedisLink::new(ClusterUrl::parse(&url).unwrap(), Role::Commands, token)
            .with_tls_config(Arc::clone(&config))
            .with_read_budget(4096)
    });
    let sub = lp.add_link(|token| {
        RedisLink::new(ClusterUrl::parse(&url).unwrap(), subscriber(&[b"t"]), token)
            .with_tls_config(Arc::clone(&config))
    });
    lp.until_up(commands);
    lp.until_up(sub);

    // More than one TLS record each way.
    let big = vec![b'x'; 100_000];
    assert_eq!(lp.ask(commands, &[b"SET", b"big", &big]), ok());
    assert_eq!(lp.ask(commands, &[b"GET", b"big"]), bulk(&big));
    assert_eq!(
        lp.ask(commands, &[b"PUBLISH", b"t", b"over tls"]),
        Reply::Integer(1)
    );
    lp.until("the message", WAIT, |l| !l.seen[sub].is_empty());
    assert_eq!(
        lp.seen[sub],
        vec![LinkEvent::Message {
            channel: b"t".to_vec(),
            payload: b"over tls".to_vec()
        }]
    );
}

#[test]
fn rediss_refuses_a_certificate_from_another_ca() {
    require_redis();
    let ca = TestCa::new();
    let dir = common::tls::fresh_dir("redis-other-ca");
    let redis = start_tls_redis(&ca, dir.path());
    let other = TestCa::new();
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_file, &other.pem).unwrap();
    let config = tls_client_config(Some(&other_file)).unwrap();
    let url = format!("rediss://:tls-secret@127.0.0.1:{}", redis.port());
    let mut lp = Loop::new();
    let link = lp.add_link(|token| {
        RedisLink::new(ClusterUrl::parse(&url).unwrap(), Role::Commands, token)
            .with_tls_config(config)
    });
    lp.run_for(Duration::from_millis(1500));
    assert!(lp.seen[link].is_empty());
    assert_ne!(lp.link(link).state(), LinkState::Ready);
    assert!(lp.attempts[link] >= 2);
    // A plain link to the TLS port gets nowhere either.
    let plain = lp.add(
        &format!("redis://127.0.0.1:{}", redis.port()),
        Role::Commands,
    );
    lp.run_for(Duration::from_millis(500));
    assert!(lp.seen[plain].is_empty());
}

#[test]
fn a_ca_file_that_is_missing_or_empty_is_an_error_that_names_it() {
    let dir = common::tls::fresh_dir("redis-ca-files");
    let missing = dir.path().join("missing.pem");
    assert!(
        tls_client_config(Some(&missing))
            .unwrap_err()
            .contains("missing.pem")
    );
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate").unwrap();
    assert!(
        tls_client_config(Some(&empty))
            .unwrap_err()
            .contains("empty.pem")
    );
}

#[test]
fn idle_links_ping_and_stay_up() {
    require_redis();
    let redis = RedisServer::start();
    let mut lp = Loop::new();
    let commands = lp.add(&redis.url(), Role::Commands);
    let sub = lp.add(&redis.url(), subscriber(&[b"quiet"]));
    lp.until_up(commands);
    lp.until_up(sub);
    lp.run_for(secchat::bus::IDLE_PING + Duration::from_secs(1));
    for link in [commands, sub] {
        assert!(lp.seen[link].is_empty(), "{:?}", lp.seen[link]);
        assert_eq!(lp.link(link).state(), LinkState::Ready);
        // The keep-alive's round trip is the only one recorded.
        assert_eq!(lp.link(link).latency().count(), 1);
    }
}

#[test]
fn the_output_buffer_is_bounded() {
    require_redis();
    let redis = RedisServer::start();
    let mut lp = Loop::new();
    let link = lp.add(&redis.url(), Role::Commands);
    lp.until_up(link);
    let value = vec![b'v'; 1024 * 1024];
    let mut accepted = 0;
    // Nothing is written between these calls: the buffer only fills.
    let refused = loop {
        match lp.link(link).command(&[b"SET", b"big", &value]) {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted <= 64, "more than the bound was accepted");
    };
    assert_eq!(refused, LinkError::Full);
    assert_eq!(accepted, secchat::bus::MAX_OUTPUT_BYTES / value.len() - 1);
    lp.until("every reply", WAIT, |l| l.replies(link).len() == accepted);
    assert_eq!(lp.link(link).unsent_bytes(), 0);
    assert_eq!(
        lp.ask(link, &[b"STRLEN", b"big"]),
        Reply::Integer(1024 * 1024)
    );
}

#[test]
fn a_reply_larger_than_one_read_pass_arrives_whole() {
    require_redis();
    let redis = RedisServer::start();
    let mut lp = Loop::new();
    let url = ClusterUrl::parse(&redis.url()).unwrap();
    // A small budget, so that a reply fitting in the socket's first receive window (64 KiB)
    // takes several passes.
    let link =
        lp.add_link(|token| RedisLink::new(url, Role::Commands, token).with_read_budget(4096));
    lp.until_up(link);
    let value: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(lp.ask(link, &[b"SET", b"v", &value]), ok());
    lp.link(link).command(&[b"GET", b"v"]).unwrap();
    lp.links[link].flush(lp.poll.registry());
    // The whole reply waits in the socket before the loop reads: one readiness edge, ten
    // passes' worth, and no later edge. Only the link asking to be driven again gets the rest.
    std::thread::sleep(Duration::from_millis(200));
    lp.until("the reply", WAIT, |l| l.replies(link).len() == 1);
    assert!(lp.replies(link)[0] == bulk(&value), "altered");
    // A large reply through the default budget, for good measure.
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let other = lp.add(&redis.url(), Role::Commands);
    lp.until_up(other);
    assert_eq!(lp.ask(other, &[b"SET", b"big", &big]), ok());
    assert!(lp.ask(other, &[b"GET", b"big"]) == bulk(&big), "altered");
}

/// A node's [`ClusterBus`] on a real Redis, driven as the server's loop drives it (without a
/// router: the test plays its part), with what it reported to the router so far.
struct Node {
    poll: Poll,
    events: Events,
    bus: ClusterBus,
    news: Vec<BusNews>,
}

impl Node {
    /// A node called `name`, nothing connected yet.
    fn new(url: &str, name: &str) -> Node {
        let url = ClusterUrl::parse(url).unwrap();
        let commands = RedisLink::new(url.clone(), Role::Commands, Token(0));
        let channel = ClusterBus::channel(name);
        let subscriber = RedisLink::new(url, subscriber(&[&channel]), Token(1));
        let mailbox = MailboxRules {
            letters_per_handle: 16,
            bytes_per_handle: 1 << 20,
            bytes: 16 << 20,
            ttl: Duration::from_secs(60),
        };
        Node {
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(64),
            bus: ClusterBus::new(name, commands, subscriber, mailbox),
            news: Vec::new(),
        }
    }

    /// One turn: readiness, then the bus's exchange (its news kept), then its flush unless
    /// `before_flush` says otherwise; `before_flush` sees the bus between the two, as the router
    /// does.
    fn turn(&mut self, before_flush: impl FnOnce(&mut ClusterBus)) {
        poll_until(&mut self.poll, &mut self.events, self.bus.next_deadline());
        let now = Instant::now();
        let registry = self.poll.registry();
        for event in self.events.iter() {
            self.bus.ready(registry, event, now);
        }
        self.news.push(self.bus.exchange(registry, now));
        before_flush(&mut self.bus);
        self.bus.flush(registry);
    }

    fn until(&mut self, what: &str, mut done: impl FnMut(&Node) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.turn(|_| {});
        }
    }

    fn moved(&self) -> Vec<(Handle, Id)> {
        self.news
            .iter()
            .flat_map(|news| news.moved.clone())
            .collect()
    }

    fn handles_lost(&self) -> Vec<(Handle, Id)> {
        let lost = self.news.iter().flat_map(|news| news.handles_lost.clone());
        lost.collect()
    }
}

/// A handle whose directory entry names another node's session: the node that listened on it
/// learns so from its renewal (the other node's notice may never come), except when one of its
/// sessions listened on it again after the renewal left: that LISTEN, answered after the
/// renewal, holds the entry, and nothing is lost.
#[test]
fn a_renewal_reports_a_handle_another_node_holds_unless_it_was_listened_on_again_since() {
    require_redis();
    let redis = RedisServer::start();
    let mut lp = Loop::new();
    let raw = lp.add(&redis.url(), Role::Commands);
    lp.until_up(raw);
    let handle = Handle::from_seed(b"a handle");
    let key = format!("secchat:h:{}", handle.as_str());
    let (here, there) = (Id::from_random_bytes([1; 4]), Id::from_random_bytes([2; 4]));
    let theirs = format!("{} other-node", there.text().as_str());
    let ours = format!("{} this-node", here.text().as_str());

    // The other node's session holds the handle. A LISTEN here made while Redis was out of
    // reach is renewed (set again) once the link is up: with the entry taken, it is lost.
    assert_eq!(
        lp.ask(raw, &[b"SET", key.as_bytes(), theirs.as_bytes()]),
        ok()
    );
    let mut node = Node::new(&redis.url(), "this-node");
    node.bus.push(BusOutput::Listen { handle, id: here });
    node.until("the renewal's answer", |node| {
        !node.handles_lost().is_empty()
    });
    assert_eq!(node.handles_lost(), [(handle, here)]);
    assert!(node.moved().is_empty());
    assert_eq!(
        lp.ask(raw, &[b"GET", key.as_bytes()]),
        bulk(theirs.as_bytes())
    );

    // The same, but the session here listens on the handle again right after the renewal left
    // (the link came up this turn), before its answer: the LISTEN takes the handle (the other
    // node's session is told), and the renewal's finding is stale.
    let mut node = Node::new(&redis.url(), "this-node");
    node.bus.push(BusOutput::Listen { handle, id: here });
    while node.bus.commands_link().state() != LinkState::Ready {
        node.turn(|bus| {
            // The exchange that saw the link come up sent the renewal.
            if bus.commands_link().state() == LinkState::Ready {
                bus.push(BusOutput::Listen { handle, id: here });
            }
        });
    }
    node.until("the LISTEN's answer", |node| !node.moved().is_empty());
    assert_eq!(node.moved(), [(handle, there)]);
    assert!(node.handles_lost().is_empty(), "{:?}", node.handles_lost());
    assert_eq!(
        lp.ask(raw, &[b"GET", key.as_bytes()]),
        bulk(ours.as_bytes())
    );
}

/// A check of handle entries (the router doubts a HandleTaken record) is a renewal of those
/// entries alone, sent at once: an entry another listener holds is reported lost, one naming
/// the session here is renewed, and a handle that session does not listen on here is not
/// checked.
#[test]
fn a_handle_check_reports_an_entry_lost_only_if_another_listener_holds_it() {
    require_redis();
    let redis = RedisServer::start();
    let mut lp = Loop::new();
    let raw = lp.add(&redis.url(), Role::Commands);
    lp.until_up(raw);
    let (kept, taken) = (Handle::from_seed(b"kept"), Handle::from_seed(b"taken"));
    let key = |handle: Handle| format!("secchat:h:{}", handle.as_str());
    let (here, there) = (Id::from_random_bytes([1; 4]), Id::from_random_bytes([2; 4]));
    let theirs = format!("{} other-node", there.text().as_str());
    let ours = format!("{} this-node", here.text().as_str());

    let mut node = Node::new(&redis.url(), "this-node");
    node.until("the links", |node| node.bus.is_up());
    node.bus.push(BusOutput::Listen {
        handle: kept,
        id: here,
    });
    node.bus.push(BusOutput::Listen {
        handle: taken,
        id: here,
    });
    node.until("the LISTENs", |_| {
        [kept, taken]
            .iter()
            .all(|&handle| lp.ask(raw, &[b"GET", key(handle).as_bytes()]) == bulk(ours.as_bytes()))
    });
    // Another node's session takes one of them; its record is doubted here.
    assert_eq!(
        lp.ask(raw, &[b"SET", key(taken).as_bytes(), theirs.as_bytes()]),
        ok()
    );
    node.bus.push(BusOutput::CheckHandle {
        handle: kept,
        id: there,
    });
    node.bus.push(BusOutput::CheckHandle {
        handle: kept,
        id: here,
    });
    node.bus.push(BusOutput::CheckHandle {
        handle: taken,
        id: here,
    });
    // A LISTEN sent after the checks: Redis answers in order, so once it is answered (it took
    // a third handle from the other node's session), so are they.
    let last = Handle::from_seed(b"last");
    assert_eq!(
        lp.ask(raw, &[b"SET", key(last).as_bytes(), theirs.as_bytes()]),
        ok()
    );
    node.bus.push(BusOutput::Listen {
        handle: last,
        id: here,
    });
    node.until("the LISTEN's answer", |node| !node.moved().is_empty());
    assert_eq!(node.handles_lost(), [(taken, here)]);
    assert_eq!(
        lp.ask(raw, &[b"GET", key(kept).as_bytes()]),
        bulk(ours.as_bytes())
    );
    assert_eq!(
        lp.ask(raw, &[b"GET", key(taken).as_bytes()]),
        bulk(theirs.as_bytes())
    );
}
