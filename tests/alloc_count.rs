//! Allocations on the routing hot path, counted by a global allocator.
//!
//! Routing one MESSAGE after warm-up allocates nothing, with or without `ref`: the router hands
//! the forwarded frame and the ACK to its sink as [`ServerFrame`]s that borrow from the received
//! text, and the server's sink writes them into the recipients' outboxes, buffers that keep their
//! capacity (the sink here works like them). Anything more (a parsed `Value`, a copied payload,
//! a formatted ID, a growing map, a frame built into a `String`) shows up here as a failure.
//!
//! It also keeps the heap bytes each thread holds, which checks that a letter waiting in the
//! mailbox costs no more than the mailbox counts for it (its cap is then a cap on memory).
//!
//! The counters are per thread, so the test harness's other threads do not disturb them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use secchat::id::Id;
use secchat::outbox::{BacklogTotal, Outbox};
use secchat::protocol::{RawJson, ServerFrame};
use secchat::router::{
    Action, Backlogs, ConnId, Entropy, FrameSink, Now, Recorder, Router, RouterConfig,
};
use secchat::tls::Transport;

struct CountingAllocator;

thread_local! {
    /// Allocations (including reallocations) made by this thread while counting is on.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Bytes of the heap chunks this thread allocated and has not freed (freed by this thread
    /// when they were allocated by another: the tests below measure differences on one thread).
    static LIVE_CHUNK_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: during thread teardown the thread-locals may already be gone.
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if counting {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

/// What a block really takes from the heap: glibc's usable size plus its 8-byte chunk header
/// (the system allocator is `malloc` for the alignments used here).
fn chunk_bytes(ptr: *mut u8) -> isize {
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: `ptr` is a live block from the system allocator (malloc family).
    let usable = unsafe { libc::malloc_usable_size(ptr.cast()) };
    usable as isize + 8
}

fn note_chunk(delta: isize) {
    let _ = LIVE_CHUNK_BYTES.try_with(|n| n.set(n.get() + delta));
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only
// const-initialised thread-locals, which never allocate, and reads the size of live blocks.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        let ptr = unsafe { System.alloc(layout) };
        note_chunk(chunk_bytes(ptr));
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        note_chunk(chunk_bytes(ptr));
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        let before = chunk_bytes(ptr);
        // SAFETY: same contract as ours.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            note_chunk(chunk_bytes(moved) - before);
        }
        moved
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_chunk(-chunk_bytes(ptr));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Heap bytes this thread holds now (see `LIVE_CHUNK_BYTES`).
fn live_chunk_bytes() -> isize {
    LIVE_CHUNK_BYTES.with(Cell::get)
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// How many allocations `f` makes on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

const NOW: Now = Now {
    mono_ms: 5_000,
    unix_ms: 1_795_000_000_000,
};

struct Counter(u64);

impl Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            *byte = (self.0 >> 56) as u8;
        }
    }
}

const PUBLIC_KEY: &str =
    r#""-----BEGIN PGP PUBLIC KEY BLOCK-----\nxjMEZ0bench\n-----END PGP PUBLIC KEY BLOCK-----""#;

/// A sink like the server's outboxes: frame texts are written one after another into one buffer
/// that keeps its capacity when cleared.
#[derive(Default)]
struct Outboxes {
    bytes: Vec<u8>,
    /// Each frame's connection and where its text ends in `bytes`.
    frames: Vec<(ConnId, usize)>,
    backlogs: Backlogs,
}

impl FrameSink for Outboxes {
    fn send(&mut self, conn: ConnId, frame: ServerFrame<'_>) {
        self.backlogs.add(conn, frame.len());
        frame.write(&mut self.bytes);
        self.frames.push((conn, self.bytes.len()));
    }

    fn close(&mut self, conn: ConnId, code: u16, _reason: &'static str) {
        panic!("the router closed connection {conn} with {code}");
    }

    fn backlog(&self, conn: ConnId) -> usize {
        self.backlogs.get(conn)
    }

    fn total_backlog(&self) -> usize {
        self.backlogs.total()
    }
}

impl Outboxes {
    /// The frames written, as (connection, text).
    fn frames(&self) -> Vec<(ConnId, &str)> {
        let mut start = 0;
        self.frames
            .iter()
            .map(|&(conn, end)| {
                let text = std::str::from_utf8(&self.bytes[start..end]).expect("UTF-8 frame");
                start = end;
                (conn, text)
            })
            .collect()
    }

    /// The loop's flush: every frame went to its socket.
    fn clear(&mut self) {
        self.bytes.clear();
        self.frames.clear();
        self.backlogs.flushed_all();
    }
}

struct Pair {
    router: Router<Counter>,
    out: Outboxes,
    sender: ConnId,
    recipient: ConnId,
    recipient_id: String,
}

fn connect(router: &mut Router<Counter>, conn: ConnId, out: &mut Recorder) -> String {
    router.open(conn, NOW);
    router.text(conn, r#"{"type":"CONNECT"}"#, NOW, out);
    let reply = match out.take().as_slice() {
        [Action::Send { conn: to, frame }] if *to == conn => frame.clone(),
        other => panic!("expected one CONNECT reply, got {other:?}"),
    };
    let value: serde_json::Value = serde_json::from_str(&reply).expect("reply is JSON");
    value["id"].as_str().expect("reply has an id").to_owned()
}

/// Sends `text` and returns the frames produced, as (connection, type).
fn route(router: &mut Router<Counter>, from: ConnId, text: &str) -> Vec<(ConnId, String)> {
    let mut out = Recorder::default();
    router.text(from, text, NOW, &mut out);
    out.take()
        .iter()
        .map(|action| match action {
            Action::Send { conn, frame } => {
                let value: serde_json::Value = serde_json::from_str(frame).expect("JSON frame");
                (*conn, value["type"].as_str().unwrap_or("?").to_owned())
            }
            Action::Close { conn, code, .. } => (*conn, format!("CLOSE {code}")),
            Action::Bus(output) => panic!("a router outside a cluster used the bus: {output:?}"),
        })
        .collect()
}

/// Two friends among `background` other connected sessions.
fn friends_among(background: usize) -> Pair {
    let config = RouterConfig {
        rate_messages_per_sec: 0,
        rate_friend_requests_per_min: 0,
        ..RouterConfig::defaults()
    };
    let mut router = Router::new(config, Counter(7));
    let mut out = Recorder::default();
    for conn in 100..100 + background as ConnId {
        connect(&mut router, conn, &mut out);
    }
    let (sender, recipient) = (1, 2);
    let sender_id = connect(&mut router, sender, &mut out);
    let recipient_id = connect(&mut router, recipient, &mut out);
    let request =
        format!(r#"{{"type":"FRIEND_REQUEST","to":"{recipient_id}","public_key":{PUBLIC_KEY}}}"#);
    assert_eq!(
        route(&mut router, sender, &request),
        [(recipient, "FRIEND_REQUEST".to_owned())]
    );
    let accept =
        format!(r#"{{"type":"FRIEND_ACCEPT","to":"{sender_id}","public_key":{PUBLIC_KEY}}}"#);
    assert_eq!(
        route(&mut router, recipient, &accept),
        [(sender, "FRIEND_ACCEPT".to_owned())]
    );
    Pair {
        router,
        out: Outboxes::default(),
        sender,
        recipient,
        recipient_id,
    }
}

/// A version-2 listener on `HANDLE` and a version-2 sender, among `background` other sessions.
fn listener_among(background: usize) -> Pair {
    let config = RouterConfig {
        rate_messages_per_sec: 0,
        ..RouterConfig::defaults()
    };
    let mut router = Router::new(config, Counter(7));
    let mut out = Recorder::default();
    for conn in 100..100 + background as ConnId {
        connect(&mut router, conn, &mut out);
    }
    let (sender, recipient) = (1, 2);
    for conn in [sender, recipient] {
        router.open(conn, NOW);
        router.text(conn, r#"{"type":"CONNECT","version":2}"#, NOW, &mut out);
    }
    let listen = format!(r#"{{"type":"LISTEN","handles":["{HANDLE}"]}}"#);
    assert_eq!(
        route(&mut router, recipient, &listen),
        [(recipient, "LISTENING".to_owned())]
    );
    Pair {
        router,
        out: Outboxes::default(),
        sender,
        recipient,
        recipient_id: String::new(),
    }
}

const HANDLE: &str = "q0Zb-_9xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn message_to_handle(payload_len: usize, reference: Option<&str>) -> String {
    message("", payload_len, reference).replace(r#""to":"""#, &format!(r#""handle":"{HANDLE}""#))
}

fn message(to: &str, payload_len: usize, reference: Option<&str>) -> String {
    let body = "Q".repeat(payload_len);
    let reference = reference
        .map(|r| format!(r#","ref":"{r}""#))
        .unwrap_or_default();
    format!(
        r#"{{"type":"MESSAGE","to":"{to}","payload":"-----BEGIN PGP MESSAGE-----\n{body}\n-----END PGP MESSAGE-----"{reference}}}"#
    )
}

/// Routes `text` many times (so every map, buffer and queue has reached its working size), then
/// counts the allocations of routing it once more. Checks what came out, too.
fn allocations_for_one(pair: &mut Pair, text: &str, expect_ack: bool) -> usize {
    let Pair {
        router,
        out,
        sender,
        recipient,
        ..
    } = pair;
    for _ in 0..1_000 {
        router.text(*sender, text, NOW, out);
        out.clear();
    }
    let count = allocations_in(|| router.text(*sender, text, NOW, out));
    let mut expected_frames = vec![(*recipient, "MESSAGE")];
    if expect_ack {
        expected_frames.push((*sender, "ACK"));
    }
    let got: Vec<(ConnId, &str)> = out
        .frames()
        .into_iter()
        .map(|(conn, frame)| {
            let value: serde_json::Value = serde_json::from_str(frame).expect("JSON frame");
            if value["type"] == "MESSAGE" {
                let payload = value["payload"].as_str().unwrap_or_default();
                assert!(
                    text.contains(&payload.replace('\n', "\\n")),
                    "payload forwarded intact"
                );
                (conn, "MESSAGE")
            } else if value["type"] == "ACK" {
                (conn, "ACK")
            } else {
                panic!("unexpected frame {frame}")
            }
        })
        .collect();
    assert_eq!(got, expected_frames);
    out.clear();
    count
}

#[test]
fn routing_a_message_without_ref_allocates_nothing() {
    let mut pair = friends_among(0);
    let text = message(&pair.recipient_id, 512, None);
    let count = allocations_for_one(&mut pair, &text, false);
    assert_eq!(count, 0, "allocations for one MESSAGE without ref");
}

#[test]
fn routing_a_message_to_a_connected_listeners_handle_allocates_nothing() {
    for background in [0, 1_000] {
        let mut pair = listener_among(background);
        for reference in [None, Some("17")] {
            let text = message_to_handle(512, reference);
            let count = allocations_for_one(&mut pair, &text, reference.is_some());
            assert_eq!(
                count, 0,
                "allocations for one MESSAGE to a handle ({reference:?})"
            );
        }
    }
}

/// PROTOCOL.md §11: the list of handles is read in place and the copies go out as a single
/// handle's would; only the ACK with its counts, a control frame, is built into a string.
#[test]
fn a_message_to_several_handles_allocates_only_its_counted_ack() {
    let mut pair = listener_among(0);
    let to_list = |reference| {
        message_to_handle(512, reference).replace(
            &format!(r#""handle":"{HANDLE}""#),
            &format!(r#""handles":["{HANDLE}"]"#),
        )
    };
    let count = allocations_for_one(&mut pair, &to_list(None), false);
    assert_eq!(count, 0, "allocations for one MESSAGE to a list of handles");
    let count = allocations_for_one(&mut pair, &to_list(Some("17")), true);
    assert_eq!(
        count, 1,
        "allocations for one MESSAGE to a list, with its ACK"
    );
}

#[test]
fn routing_a_message_with_ref_and_its_ack_allocates_nothing() {
    let mut pair = friends_among(0);
    let text = message(&pair.recipient_id, 512, Some("17"));
    let count = allocations_for_one(&mut pair, &text, true);
    assert_eq!(count, 0, "allocations for one MESSAGE with ref");
}

#[test]
fn a_sink_that_records_actions_builds_each_frame_into_a_string() {
    // The recording sink tests and benches use allocates one String per frame: the counter
    // must see exactly those, or the zero above would prove nothing.
    let mut pair = friends_among(0);
    let text = message(&pair.recipient_id, 512, Some("17"));
    let Pair { router, sender, .. } = &mut pair;
    let mut out = Recorder::default();
    router.text(*sender, &text, NOW, &mut out);
    out.clear();
    let count = allocations_in(|| router.text(*sender, &text, NOW, &mut out));
    assert_eq!(out.actions().len(), 2, "{out:?}");
    assert_eq!(count, 2, "one String for the MESSAGE, one for the ACK");
}

#[test]
fn allocations_do_not_grow_with_sessions_or_payload_size() {
    let mut pair = friends_among(2_000);
    for payload_len in [16, 4096, 60_000] {
        let plain = message(&pair.recipient_id, payload_len, None);
        let count = allocations_for_one(&mut pair, &plain, false);
        assert_eq!(count, 0, "allocations, {payload_len} B payload");
        let with_ref = message(&pair.recipient_id, payload_len, Some("a-longer-ref-4711"));
        let count = allocations_for_one(&mut pair, &with_ref, true);
        assert_eq!(count, 0, "allocations, {payload_len} B payload, ref");
    }
}

#[test]
fn frames_written_into_an_outbox_allocate_nothing_after_its_first() {
    // The server's side of the sink: each ServerFrame is written into the recipient's outbox.
    // One block per loop turn, sized from the turn before; nothing per frame.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let _client = std::net::TcpStream::connect(listener.local_addr().expect("address"));
    let (socket, _) = listener.accept().expect("accept");
    socket.set_nonblocking(true).expect("non-blocking");
    let mut outbox = Outbox::new(
        Transport::plain(mio::net::TcpStream::from_std(socket)),
        BacklogTotal::default(),
    );
    let raw = format!(r#""-----BEGIN PGP MESSAGE-----\n{}""#, "Q".repeat(512));
    let payload = RawJson::parse(&raw).expect("JSON string");
    let from = Id::parse("K7Q2ZD").expect("an ID");
    let message = ServerFrame::Message {
        from,
        payload,
        ts: NOW.unix_ms,
    };
    let ack = ServerFrame::Ack {
        reference: r#""17""#,
        queued: false,
    };
    let turn = |outbox: &mut Outbox| {
        for _ in 0..20 {
            outbox.push_frame(&message);
            outbox.push_frame(&ack);
        }
    };
    turn(&mut outbox);
    outbox
        .flush_to_socket()
        .expect("12 KB fit in the socket buffer");
    assert_eq!(outbox.unsent(), 0);
    outbox.push_frame(&message);
    let count = allocations_in(|| turn(&mut outbox));
    assert_eq!(count, 0, "allocations for 40 more frames in the same turn");
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test itself: a counter that never counts would pass everything above.
    let count = allocations_in(|| {
        let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(64));
        std::hint::black_box(v);
    });
    assert_eq!(count, 1);
}

/// What `letters` letters of a `payload`-byte payload (with a `ref` when `with_ref`), sent to
/// `handles` distinct handles nobody listens on, really take from the heap, against what the
/// mailbox counts for them: (heap bytes per letter, counted bytes per letter).
fn letter_cost(letters: usize, handles: usize, payload: usize, with_ref: bool) -> (usize, usize) {
    let config = RouterConfig {
        rate_messages_per_sec: 0,
        ..RouterConfig::defaults()
    };
    let mut router = Router::new(config, Counter(7));
    let mut out = Outboxes::default();
    let sender = 1;
    router.open(sender, NOW);
    router.text(sender, r#"{"type":"CONNECT","version":2}"#, NOW, &mut out);
    let texts: Vec<String> = (0..letters)
        .map(|n| {
            let handle = secchat::protocol::Handle::from_seed(&(n % handles).to_le_bytes());
            let reference = with_ref.then(|| format!("m{n}"));
            message_to_handle(payload, reference.as_deref()).replace(HANDLE, handle.as_str())
        })
        .collect();
    // The sink's buffer reaches its working size first.
    router.text(sender, &texts[0], NOW, &mut out);
    out.clear();
    let before = live_chunk_bytes();
    let counted_before = router.stats().mailbox_bytes;
    for text in &texts[1..] {
        router.text(sender, text, NOW, &mut out);
        out.clear();
    }
    let heap = (live_chunk_bytes() - before).max(0) as usize;
    let stats = router.stats();
    assert_eq!(stats.mailbox_letters, letters, "every letter stored");
    let counted = stats.mailbox_bytes - counted_before;
    (heap / (letters - 1), counted / (letters - 1))
}

/// The mailbox's cap is on what its letters really cost: a letter counts its frame, its `ref`
/// and `LETTER_OVERHEAD` for everything else (its entry in three indexes, a handle's and a
/// block's entry, the allocator's rounding), and that must be no less than the heap it takes,
/// however letters spread over handles. The figures printed are in BENCHMARKS.md.
#[test]
fn a_stored_letter_costs_no_more_than_the_mailbox_counts() {
    let cases = [
        (10_000, 10_000, 512, true),
        (10_000, 100, 512, true),
        (10_000, 400, 4_096, true),
        (7_200, 7_200, 512, true),
        (7_200, 7_200, 32, true),
        (7_200, 7_200, 32, false),
        (29_000, 29_000, 512, true),
    ];
    let costs: Vec<_> = cases
        .into_iter()
        .map(|(letters, handles, payload, with_ref)| {
            let (heap, counted) = letter_cost(letters, handles, payload, with_ref);
            let case =
                format!("{letters} letters of {payload} B (ref: {with_ref}) to {handles} handles");
            println!("{case}: {heap} heap bytes, {counted} counted, per letter");
            (case, heap, counted)
        })
        .collect();
    for (case, heap, counted) in costs {
        assert!(
            heap <= counted,
            "{case}: {heap} heap bytes per letter, {counted} counted"
        );
    }
}
