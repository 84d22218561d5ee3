//! Benches of the pure routing core: no sockets, no event loop, just [`Router`] calls as the
//! server makes them.
//!
//! - `route/...`: MESSAGE routing with 2, 1,000 and 10,000 connected sessions (all paired as
//!   friends), 512 B and 4 KiB payloads, without and with `ref` (then an ACK is built too). One
//!   iteration routes a batch of [`BATCH`] messages and then reports each recipient flushed,
//!   as the event loop does once per poll iteration; throughput is in messages.
//! - `friends/handshake`: FRIEND_REQUEST + FRIEND_ACCEPT between two sessions, plus the
//!   FRIEND_REMOVE that resets them for the next iteration (three routed frames).
//! - `friends/pair_lifecycle`: two connections opened, two CONNECTs, request, accept, and two
//!   DISCONNECTs: what setting up (and tearing down) one pair of friends costs the router.
//! - `fanout/50/...`: one MESSAGE to 50 handles against 50 MESSAGEs to one handle each (a group
//!   message to 50 members, or writing to each of them); throughput is in copies.
//! - `handles/listen/1000`: one LISTEN of 1,000 handles, as a client sends after a reload.
//! - `handles/mailbox_round/N`: a letter stored for a handle nobody listens on, then a session
//!   already holding N - 1 handles LISTENs on it, FETCHes it and UNLISTENs it (four frames):
//!   nothing of that may grow with N.
//! - `frame/decode` and `frame/encode`: one client MESSAGE decoded, one server MESSAGE written
//!   into a buffer with room for it (as into an outbox).
//!
//! Every setup checks that the router answers what the bench assumes (a MESSAGE to the friend,
//! an ACK to the sender): a bench that silently measured `peer_busy` errors would be worthless.
//!
//! Run: `cargo bench --bench routing` (a subset: `cargo bench --bench routing -- route/10000`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use secchat::id::Id;
use secchat::protocol::{self, Handle, RawJson, ServerFrame};
use secchat::router::{
    Action, Backlogs, ConnId, FrameSink, Now, Recorder, Router, RouterConfig, SeededEntropy,
};

/// Messages routed per iteration before the recipients are reported flushed.
const BATCH: usize = 64;
const NOW: Now = Now {
    mono_ms: 1_000,
    unix_ms: 1_795_000_000_000,
};
/// An armored public key of realistic size (an Ed25519 + Cv25519 key is about 650 bytes).
const PUBLIC_KEY_BODY_LEN: usize = 600;
/// Where the 6 characters of `to` start in [`message_text`]'s output.
const TO_OFFSET: usize = r#"{"type":"MESSAGE","to":""#.len();

fn config() -> RouterConfig {
    RouterConfig {
        max_sessions: 20_000,
        rate_messages_per_sec: 0,
        rate_friend_requests_per_min: 0,
        // The clock stands still in a bench: a per-minute budget would run out after a few
        // iterations and time refusals instead of routing.
        rate_incoming_requests_per_min: 0,
        ..RouterConfig::defaults()
    }
}

/// A JSON string literal (quotes included) holding an armored block of `len` bytes as sent
/// on the wire, its line breaks escaped as `\n`.
fn armored(header: &str, footer: &str, len: usize) -> String {
    let overhead = header.len() + footer.len() + 2 + 4; // 2 quotes, 2 × `\n`
    let body_len = len.saturating_sub(overhead).max(1);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let body: String = (0..body_len)
        .map(|i| char::from(alphabet[i % alphabet.len()]))
        .collect();
    format!(r#""{header}\n{body}\n{footer}""#)
}

fn payload_json(len: usize) -> String {
    armored(
        "-----BEGIN PGP MESSAGE-----",
        "-----END PGP MESSAGE-----",
        len,
    )
}

fn public_key_json() -> String {
    armored(
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        "-----END PGP PUBLIC KEY BLOCK-----",
        PUBLIC_KEY_BODY_LEN,
    )
}

const HANDLE_OFFSET: usize = r#"{"type":"MESSAGE","handle":""#.len();

/// The handle the recipient of pair `n` listens on.
fn handle_of(n: usize) -> String {
    Handle::from_seed(&(n as u64).to_le_bytes())
        .as_str()
        .to_owned()
}

fn handle_message_text(handle: &str, payload: &str, with_ref: bool) -> String {
    let reference = if with_ref { r#","ref":"4711""# } else { "" };
    let text =
        format!(r#"{{"type":"MESSAGE","handle":"{handle}","payload":{payload}{reference}}}"#);
    assert_eq!(text.get(HANDLE_OFFSET..HANDLE_OFFSET + 43), Some(handle));
    text
}

fn message_text(to: &str, payload: &str, with_ref: bool) -> String {
    let reference = if with_ref { r#","ref":"4711""# } else { "" };
    let text = format!(r#"{{"type":"MESSAGE","to":"{to}","payload":{payload}{reference}}}"#);
    assert_eq!(text.get(TO_OFFSET..TO_OFFSET + 6), Some(to));
    text
}

/// The frames in `out`, as (connection, text); Close actions are returned as "CLOSE". The
/// benches' routers are not in a cluster: they never use the bus.
fn frames(out: &[Action]) -> Vec<(ConnId, &str)> {
    out.iter()
        .filter_map(|action| match action {
            Action::Send { conn, frame } => Some((*conn, frame.as_str())),
            Action::Close { conn, .. } => Some((*conn, "CLOSE")),
            Action::Bus(_) => None,
        })
        .collect()
}

fn frame_type(frame: &str) -> String {
    serde_json::from_str::<serde_json::Value>(frame)
        .ok()
        .and_then(|value| value.get("type")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("not a JSON frame: {frame}"))
}

/// A sink like the server's outboxes, for the measured loops: frame texts are written into one
/// buffer, emptied after each batch as the loop's flush empties the outboxes, and each
/// connection's backlog is counted until then. (The harness's [`Recorder`] would build every
/// frame into a `String` of its own, which the server does not.)
#[derive(Default)]
struct Outboxes {
    bytes: Vec<u8>,
    backlogs: Backlogs,
}

impl FrameSink for Outboxes {
    fn send(&mut self, conn: ConnId, frame: ServerFrame<'_>) {
        self.backlogs.add(conn, frame.len());
        frame.write(&mut self.bytes);
    }

    // The measured loops close nothing: the harness checks their frames before and after.
    fn close(&mut self, _conn: ConnId, _code: u16, _reason: &'static str) {}

    fn backlog(&self, conn: ConnId) -> usize {
        self.backlogs.get(conn)
    }

    fn total_backlog(&self) -> usize {
        self.backlogs.total()
    }
}

impl Outboxes {
    /// The loop's flush of `conns`: all they were sent is on their sockets.
    fn flushed(&mut self, conns: impl IntoIterator<Item = ConnId>) {
        self.bytes.clear();
        for conn in conns {
            self.backlogs.flushed(conn, 0);
        }
    }
}

/// A router driven by connection IDs 1, 2, 3, … with helpers that check every answer.
struct Harness {
    router: Router<SeededEntropy>,
    out: Recorder,
    next_conn: ConnId,
}

impl Harness {
    fn new() -> Self {
        Harness {
            router: Router::new(config(), SeededEntropy(0x9E37_79B9_7F4A_7C15)),
            out: Recorder::default(),
            next_conn: 1,
        }
    }

    /// Opens a connection and sends CONNECT; returns the connection and its session ID.
    fn connect(&mut self) -> (ConnId, String) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.router.open(conn, NOW);
        self.router.text(
            conn,
            r#"{"type":"CONNECT","version":2}"#,
            NOW,
            &mut self.out,
        );
        let reply = frames(self.out.actions())
            .first()
            .map(|(to, frame)| (*to, frame.to_string()));
        self.flush();
        let Some((to, frame)) = reply.filter(|(to, _)| *to == conn) else {
            panic!("no CONNECT reply for connection {conn}");
        };
        let value: serde_json::Value = serde_json::from_str(&frame).expect("CONNECT reply is JSON");
        let id = value["id"]
            .as_str()
            .unwrap_or_else(|| panic!("CONNECT reply without id on {to}: {frame}"));
        (conn, id.to_owned())
    }

    /// Sends `text` from `from` and checks the router answered exactly `expected`
    /// (recipient, frame type) pairs, in order.
    fn expect(&mut self, from: ConnId, text: &str, expected: &[(ConnId, &str)]) {
        self.router.text(from, text, NOW, &mut self.out);
        let got: Vec<(ConnId, String)> = frames(self.out.actions())
            .into_iter()
            .map(|(conn, frame)| (conn, frame_type(frame)))
            .collect();
        let want: Vec<(ConnId, String)> = expected
            .iter()
            .map(|(conn, kind)| (*conn, kind.to_string()))
            .collect();
        assert_eq!(got, want, "after {from} sent {}", frame_type(text));
        self.flush();
    }

    /// Every frame went to its socket: the recorded actions and their connections' backlogs are
    /// forgotten (so the recorder does not grow with the connections a bench goes through).
    fn flush(&mut self) {
        for action in self.out.take() {
            if let Action::Send { conn, .. } | Action::Close { conn, .. } = action {
                self.out.backlogs.forget(conn);
            }
        }
    }

    fn befriend(&mut self, a: (ConnId, &str), b: (ConnId, &str), key: &str) {
        let request = format!(
            r#"{{"type":"FRIEND_REQUEST","to":"{}","public_key":{key}}}"#,
            b.1
        );
        self.expect(a.0, &request, &[(b.0, "FRIEND_REQUEST")]);
        let accept = format!(
            r#"{{"type":"FRIEND_ACCEPT","to":"{}","public_key":{key}}}"#,
            a.1
        );
        self.expect(b.0, &accept, &[(a.0, "FRIEND_ACCEPT")]);
    }
}

/// `sessions` connected sessions in pairs of friends: (sender, recipient, recipient's ID).
fn paired_sessions(harness: &mut Harness, sessions: usize) -> Vec<(ConnId, ConnId, String)> {
    let key = public_key_json();
    (0..sessions / 2)
        .map(|_| {
            let a = harness.connect();
            let b = harness.connect();
            harness.befriend((a.0, &a.1), (b.0, &b.1), &key);
            (a.0, b.0, b.1)
        })
        .collect()
}

fn bench_routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(BATCH as u64));
    for sessions in [2usize, 1_000, 10_000] {
        let mut harness = Harness::new();
        let pairs = paired_sessions(&mut harness, sessions);
        for payload_len in [512usize, 4096] {
            let payload = payload_json(payload_len);
            for with_ref in [false, true] {
                let name = format!(
                    "{sessions}/{}{}",
                    if payload_len == 512 { "512B" } else { "4KiB" },
                    if with_ref { "+ref" } else { "" }
                );
                // One reusable text per batch slot, its `to` rewritten before each call: like
                // the server's read buffer, the bytes routed are hot in cache.
                let mut texts: Vec<String> = (0..BATCH)
                    .map(|_| message_text(&pairs[0].2, &payload, with_ref))
                    .collect();
                let expected: &[(ConnId, &str)] = if with_ref {
                    &[(pairs[0].1, "MESSAGE"), (pairs[0].0, "ACK")]
                } else {
                    &[(pairs[0].1, "MESSAGE")]
                };
                harness.expect(pairs[0].0, &texts[0], expected);
                let next_pair = route_in_turn(
                    &mut group,
                    &name,
                    &mut harness,
                    &pairs,
                    &mut texts,
                    with_ref,
                    |text, (_, _, to_id)| text.replace_range(TO_OFFSET..TO_OFFSET + 6, to_id),
                );
                // The same check after the run: nothing turned into peer_busy or an error.
                let (from, to, to_id) = &pairs[next_pair];
                let text = message_text(to_id, &payload, with_ref);
                let expected: Vec<(ConnId, &str)> = if with_ref {
                    vec![(*to, "MESSAGE"), (*from, "ACK")]
                } else {
                    vec![(*to, "MESSAGE")]
                };
                harness.expect(*from, &text, &expected);
            }
        }
        bench_routing_by_handle(&mut group, &mut harness, &pairs, sessions);
    }
    group.finish();
}

/// Benches routing `texts` as one batch per iteration, pair after pair in turn (`target` writes
/// the pair's recipient into a text), then reports the batch's recipients (and its senders, with
/// `ref`) flushed, as the event loop does once per poll iteration. Returns the next pair's index.
fn route_in_turn(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    harness: &mut Harness,
    pairs: &[(ConnId, ConnId, String)],
    texts: &mut [String],
    with_ref: bool,
    target: impl Fn(&mut String, &(ConnId, ConnId, String)),
) -> usize {
    let distinct_recipients = BATCH.min(pairs.len());
    let mut next_pair = 0usize;
    let router = &mut harness.router;
    let mut out = Outboxes::default();
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter(|| {
            let first = next_pair;
            for text in texts.iter_mut() {
                let pair = &pairs[next_pair];
                target(text, pair);
                router.text(pair.0, black_box(text.as_str()), NOW, &mut out);
                next_pair = (next_pair + 1) % pairs.len();
            }
            out.flushed((0..distinct_recipients).flat_map(|k| {
                let (sender, recipient, _) = &pairs[(first + k) % pairs.len()];
                [Some(*recipient), with_ref.then_some(*sender)]
                    .into_iter()
                    .flatten()
            }));
        })
    });
    next_pair
}

/// The same scenario as routing by ID (512-byte payloads, recipients in turn), each recipient
/// listening on a handle of its own and the sender naming it instead of the recipient's ID.
fn bench_routing_by_handle(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    harness: &mut Harness,
    pairs: &[(ConnId, ConnId, String)],
    sessions: usize,
) {
    let handles: Vec<String> = (0..pairs.len()).map(handle_of).collect();
    for ((_, recipient, _), handle) in pairs.iter().zip(&handles) {
        let listen = format!(r#"{{"type":"LISTEN","handles":["{handle}"]}}"#);
        harness.expect(*recipient, &listen, &[(*recipient, "LISTENING")]);
    }
    // The pairs with each recipient's handle where its ID was, for `route_in_turn`.
    let listeners: Vec<(ConnId, ConnId, String)> = pairs
        .iter()
        .zip(&handles)
        .map(|((from, to, _), handle)| (*from, *to, handle.clone()))
        .collect();
    let payload = payload_json(512);
    for with_ref in [false, true] {
        let name = format!(
            "{sessions}/512B{}/handle",
            if with_ref { "+ref" } else { "" }
        );
        let mut texts: Vec<String> = (0..BATCH)
            .map(|_| handle_message_text(&handles[0], &payload, with_ref))
            .collect();
        let next_pair = route_in_turn(
            group,
            &name,
            harness,
            &listeners,
            &mut texts,
            with_ref,
            |text, (_, _, handle)| text.replace_range(HANDLE_OFFSET..HANDLE_OFFSET + 43, handle),
        );
        let (from, to, _) = &pairs[next_pair];
        let text = handle_message_text(&handles[next_pair], &payload, with_ref);
        let expected: Vec<(ConnId, &str)> = if with_ref {
            vec![(*to, "MESSAGE"), (*from, "ACK")]
        } else {
            vec![(*to, "MESSAGE")]
        };
        harness.expect(*from, &text, &expected);
    }
}

/// One MESSAGE to 50 handles against 50 MESSAGEs to one handle each, 512-byte payloads with
/// `ref`: what a group message to 50 members costs the router against writing to each member
/// separately. Throughput is in copies delivered (50 per iteration either way).
fn bench_fanout(c: &mut Criterion) {
    const MEMBERS: usize = 50;
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    let mut harness = Harness::new();
    let (sender, _) = harness.connect();
    let handles: Vec<String> = (0..MEMBERS).map(|n| handle_of(n + 1_000_000)).collect();
    let members: Vec<ConnId> = handles
        .iter()
        .map(|handle| {
            let (member, _) = harness.connect();
            let listen = format!(r#"{{"type":"LISTEN","handles":["{handle}"]}}"#);
            harness.expect(member, &listen, &[(member, "LISTENING")]);
            member
        })
        .collect();
    let payload = payload_json(512);
    let list = serde_json::to_string(&handles).unwrap_or_default();
    let fanout =
        format!(r#"{{"type":"MESSAGE","handles":{list},"payload":{payload},"ref":"4711"}}"#);
    let mut expected: Vec<(ConnId, &str)> = members.iter().map(|&m| (m, "MESSAGE")).collect();
    expected.push((sender, "ACK"));
    harness.expect(sender, &fanout, &expected);
    let singles: Vec<String> = handles
        .iter()
        .map(|handle| handle_message_text(handle, &payload, true))
        .collect();
    let flushed: Vec<ConnId> = members.iter().copied().chain([sender]).collect();
    let router = &mut harness.router;
    let mut out = Outboxes::default();
    group.bench_function("50/one_message_to_50_handles", |b| {
        b.iter(|| {
            router.text(sender, black_box(fanout.as_str()), NOW, &mut out);
            out.flushed(flushed.iter().copied());
        })
    });
    group.bench_function("50/50_messages_to_one_handle", |b| {
        b.iter(|| {
            for text in &singles {
                router.text(sender, black_box(text.as_str()), NOW, &mut out);
            }
            out.flushed(flushed.iter().copied());
        })
    });
    group.finish();
    // After the runs: still delivered everywhere, nothing turned into an error.
    harness.expect(sender, &fanout, &expected);
}

/// `{"type":<kind>,"handles":[...]}` naming `handles`.
fn handle_list_text(kind: &str, handles: &[String]) -> String {
    let list = serde_json::to_string(handles).expect("a list of strings");
    format!(r#"{{"type":"{kind}","handles":{list}}}"#)
}

/// The handle frames whose cost could grow with the number of handles a session holds.
fn bench_handles(c: &mut Criterion) {
    let mut group = c.benchmark_group("handles");
    let mut harness = Harness::new();

    // A client after a reload: one LISTEN of 1,000 handles. Timed alone; an UNLISTEN of the same
    // handles (not timed) resets the session for the next iteration.
    let thousand: Vec<String> = (0..1_000).map(|n| handle_of(1_000_000 + n)).collect();
    let listen = handle_list_text("LISTEN", &thousand);
    let unlisten = handle_list_text("UNLISTEN", &thousand);
    println!(
        "handles/listen/1000: the LISTEN frame is {} bytes",
        listen.len()
    );
    let (conn, _) = harness.connect();
    harness.expect(conn, &listen, &[(conn, "LISTENING")]);
    harness.expect(conn, &unlisten, &[(conn, "LISTENING")]);
    {
        let router = &mut harness.router;
        let mut out = Outboxes::default();
        group.bench_function("listen/1000", |b| {
            b.iter_custom(|iterations| {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    let start = Instant::now();
                    router.text(conn, black_box(listen.as_str()), NOW, &mut out);
                    timed += start.elapsed();
                    router.text(conn, &unlisten, NOW, &mut out);
                    out.flushed([conn]);
                }
                timed
            })
        });
    }

    // One letter through the mailbox to a session holding `held` handles: stored for a handle
    // nobody listens on, the session LISTENs on it (LISTENING with the waiting count), FETCHes
    // it (the letter, FETCHED) and UNLISTENs it again (LISTENING): four frames.
    let (sender, _) = harness.connect();
    let payload = payload_json(512);
    for held in [1usize, 4_095] {
        let (listener, _) = harness.connect();
        let own: Vec<String> = (0..held)
            .map(|n| handle_of(2_000_000 + 10_000 * held + n))
            .collect();
        for chunk in own.chunks(1_024) {
            let text = handle_list_text("LISTEN", chunk);
            harness.expect(listener, &text, &[(listener, "LISTENING")]);
        }
        let mailbox = handle_of(3_000_000 + held);
        let store = handle_message_text(&mailbox, &payload, true);
        let take = handle_list_text("LISTEN", std::slice::from_ref(&mailbox));
        let give_back = handle_list_text("UNLISTEN", std::slice::from_ref(&mailbox));
        let fetch = r#"{"type":"FETCH"}"#;
        let round = |harness: &mut Harness| {
            harness.expect(sender, &store, &[(sender, "ACK")]);
            harness.expect(listener, &take, &[(listener, "LISTENING")]);
            harness.expect(
                listener,
                fetch,
                &[(listener, "MESSAGE"), (listener, "FETCHED")],
            );
            harness.expect(listener, &give_back, &[(listener, "LISTENING")]);
        };
        round(&mut harness);
        {
            let router = &mut harness.router;
            let mut out = Outboxes::default();
            let name = format!("mailbox_round/{}", held + 1);
            group.bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter(|| {
                    router.text(sender, black_box(store.as_str()), NOW, &mut out);
                    router.text(listener, &take, NOW, &mut out);
                    router.text(listener, fetch, NOW, &mut out);
                    router.text(listener, &give_back, NOW, &mut out);
                    out.flushed([sender, listener]);
                })
            });
        }
        round(&mut harness);
    }
    group.finish();
}

fn bench_friends(c: &mut Criterion) {
    let mut group = c.benchmark_group("friends");
    let key = public_key_json();

    let mut harness = Harness::new();
    let a = harness.connect();
    let b = harness.connect();
    let request = format!(
        r#"{{"type":"FRIEND_REQUEST","to":"{}","public_key":{key}}}"#,
        b.1
    );
    let accept = format!(
        r#"{{"type":"FRIEND_ACCEPT","to":"{}","public_key":{key}}}"#,
        a.1
    );
    let remove = format!(r#"{{"type":"FRIEND_REMOVE","to":"{}"}}"#, b.1);
    // Checked once: each of the three frames is forwarded to the other side.
    harness.expect(a.0, &request, &[(b.0, "FRIEND_REQUEST")]);
    harness.expect(b.0, &accept, &[(a.0, "FRIEND_ACCEPT")]);
    harness.expect(a.0, &remove, &[(b.0, "FRIEND_REMOVE")]);
    {
        let router = &mut harness.router;
        let mut out = Outboxes::default();
        group.bench_function("handshake", |bench| {
            bench.iter(|| {
                router.text(a.0, black_box(&request), NOW, &mut out);
                router.text(b.0, black_box(&accept), NOW, &mut out);
                router.text(a.0, black_box(&remove), NOW, &mut out);
                out.flushed([a.0, b.0]);
            })
        });
    }
    harness.expect(a.0, &request, &[(b.0, "FRIEND_REQUEST")]);

    let mut harness = Harness::new();
    // Sessions stay around as background, as in a busy server.
    paired_sessions(&mut harness, 1_000);
    let disconnect = r#"{"type":"DISCONNECT"}"#;
    group.bench_function("pair_lifecycle", |bench| {
        bench.iter(|| {
            let a = harness.connect();
            let b = harness.connect();
            harness.befriend((a.0, &a.1), (b.0, &b.1), &key);
            harness.router.text(a.0, disconnect, NOW, &mut harness.out);
            harness.router.text(b.0, disconnect, NOW, &mut harness.out);
            harness.flush();
        })
    });
    assert_eq!(harness.router.stats().sessions, 1_000);
    group.finish();
}

fn bench_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(1));
    let payload = payload_json(512);
    let text = message_text("X2M9QP", &payload, false);
    assert!(
        protocol::decode(&text).is_ok(),
        "the bench frame must decode"
    );
    group.bench_function("decode/512B", |b| {
        b.iter(|| protocol::decode(black_box(&text)).is_ok())
    });
    let raw = RawJson::parse(&payload).expect("payload literal is JSON");
    let from = Id::parse("K7Q2ZD").expect("a valid ID");
    // As the server encodes: into a buffer that already has room (an outbox).
    let mut encoded = String::with_capacity(1024);
    group.bench_function("encode/512B", |b| {
        b.iter(|| {
            encoded.clear();
            let frame = ServerFrame::Message {
                from,
                payload: black_box(raw),
                ts: NOW.unix_ms,
            };
            frame.write(&mut encoded);
            encoded.len()
        })
    });
    group.finish();
}

fn configured() -> Criterion {
    // Short runs: the machine is shared; the confidence intervals show when that was too short.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = configured();
    targets = bench_routing, bench_fanout, bench_handles, bench_friends, bench_frames
}
criterion_main!(benches);
