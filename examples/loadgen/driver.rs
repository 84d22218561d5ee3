//! The clients: many non-blocking WebSocket connections driven by one mio loop on one core.
//!
//! One thread with `epoll` rather than a thread per connection: the load generator owns a single
//! core, and on one core every extra thread only adds context switches. Writes are batched (each
//! connection's frames of one loop turn go out in one `write`), reads take whatever the socket
//! holds in one `read` into a shared buffer.
//!
//! Phases: [`Driver::establish`] opens connections (at most `connect_concurrency` between `connect`
//! and the CONNECT reply, so the server's listen backlog never overflows), sends CONNECT, and makes
//! each pair friends (FRIEND_REQUEST from the pair's first client, FRIEND_ACCEPT from the second).
//! [`Driver::run_load`] then has every client of the active pairs send MESSAGEs to its friend:
//! closed-loop with a window of messages in flight, or open-loop at a fixed rate where latency is
//! measured from each message's *scheduled* send time.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::payload::{Incoming, Payloads, classify};
use crate::ws::{self, Parsed, Upgrade};

/// Bytes asked of the kernel per `read`.
const READ_CHUNK: usize = 256 * 1024;
/// A run that receives nothing for this long has stalled: it ends with a fault.
const STALL: Duration = Duration::from_secs(10);
/// A public key of realistic size (an Ed25519 + Cv25519 key is about 650 bytes armored).
const PUBLIC_KEY_BODY: usize = 600;

pub struct DriverOptions {
    pub addr: SocketAddr,
    /// Connections between `connect` and their CONNECT reply, at most.
    pub connect_concurrency: usize,
    /// Source addresses to spread connections over (empty: let the kernel choose).
    pub source_ips: Vec<Ipv4Addr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not opened yet.
    Queued,
    /// TCP connect and the upgrade request under way.
    Upgrading,
    /// The WebSocket is open and CONNECT was sent.
    AwaitingConnect,
    /// Has its session ID.
    Ready,
    Dead,
}

struct Client {
    stream: Option<TcpStream>,
    phase: Phase,
    id: [u8; 6],
    /// The friend, for clients in a pair.
    partner: Option<usize>,
    pair: Option<usize>,
    /// An incomplete frame (or response head) carried over to the next read.
    partial: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    dirty: bool,
    mask_state: u64,
    /// Messages sent to the partner in this run, ACKs for them, and messages received from the
    /// partner (the highest sequence number seen).
    sent: u64,
    acked: u64,
    received: u64,
    /// Position among the run's senders, for the open-loop schedule.
    sender_slot: Option<usize>,
    wants_topup: bool,
}

struct Pair {
    first: usize,
    second: usize,
    requested: bool,
    friends: bool,
    /// ACKs for the FRIEND_REQUEST and the FRIEND_ACCEPT.
    acks: u8,
}

impl Pair {
    fn done(&self) -> bool {
        self.friends && self.acks == 2
    }
}

/// Everything that went wrong, counted. A run with any fault fails its check.
#[derive(Default, Debug, Clone)]
pub struct Faults {
    pub corrupt: u64,
    pub duplicated: u64,
    pub missing: u64,
    pub wrong_sender: u64,
    pub acks_out_of_order: u64,
    pub error_frames: BTreeMap<String, u64>,
    pub other: BTreeMap<String, u64>,
}

impl Faults {
    pub fn total(&self) -> u64 {
        self.corrupt
            + self.duplicated
            + self.missing
            + self.wrong_sender
            + self.acks_out_of_order
            + self.error_frames.values().sum::<u64>()
            + self.other.values().sum::<u64>()
    }

    fn note(&mut self, what: impl Into<String>) {
        *self.other.entry(what.into()).or_default() += 1;
    }

    pub fn describe(&self) -> String {
        if self.total() == 0 {
            return "ok".into();
        }
        let mut parts = Vec::new();
        for (name, count) in [
            ("corrupt", self.corrupt),
            ("duplicated", self.duplicated),
            ("missing", self.missing),
            ("wrong sender", self.wrong_sender),
            ("ACKs out of order", self.acks_out_of_order),
        ] {
            if count > 0 {
                parts.push(format!("{count} {name}"));
            }
        }
        for (code, count) in &self.error_frames {
            parts.push(format!("{count} ERROR {code}"));
        }
        for (what, count) in &self.other {
            parts.push(format!("{count}× {what}"));
        }
        parts.join(", ")
    }
}

pub struct SetupReport {
    pub connections: usize,
    pub pairs: usize,
    pub elapsed: Duration,
}

#[derive(Clone, Copy)]
pub enum Mode {
    /// Each sender keeps `window` messages in flight.
    Closed { window: u64 },
    /// `rate` messages per second in total, spread evenly over the senders.
    Open { rate: f64 },
}

pub struct LoadSpec {
    pub active_pairs: usize,
    /// Per sender (both clients of an active pair send to each other).
    pub messages: u64,
    pub payload_size: usize,
    pub with_ref: bool,
    pub mode: Mode,
}

pub struct LoadReport {
    /// Messages delivered (and checked).
    pub messages: u64,
    pub acks: u64,
    pub elapsed: Duration,
    /// Open loop only: receive time minus scheduled send time, per message.
    pub latencies_ns: Vec<u64>,
    pub faults: Faults,
}

/// State of the run in progress.
struct Load {
    payloads: Payloads,
    with_ref: bool,
    mode: Mode,
    messages: u64,
    senders: Vec<usize>,
    started: Instant,
    delivered: u64,
    acks: u64,
    /// Open loop: messages handed out so far (across all senders).
    scheduled: u64,
    latencies_ns: Vec<u64>,
}

impl Load {
    fn total(&self) -> u64 {
        self.messages * self.senders.len() as u64
    }

    fn finished(&self) -> bool {
        self.delivered == self.total() && (!self.with_ref || self.acks == self.total())
    }

    /// When the open-loop schedule sends message `seq` (1-based) of the sender in `slot`.
    fn scheduled_at(&self, slot: usize, seq: u64, rate: f64) -> Instant {
        let index = (seq - 1) * self.senders.len() as u64 + slot as u64;
        self.started + Duration::from_secs_f64(index as f64 / rate)
    }
}

pub struct Driver {
    options: DriverOptions,
    poll: Poll,
    events: Events,
    ready_events: Vec<(usize, bool, bool)>,
    clients: Vec<Client>,
    pairs: Vec<Pair>,
    queued: std::collections::VecDeque<usize>,
    /// Clients between `connect` and their CONNECT reply.
    connecting: usize,
    dirty: Vec<usize>,
    topups: Vec<usize>,
    scratch: Vec<u8>,
    upgrade_request: Vec<u8>,
    public_key: String,
    faults: Faults,
    load: Option<Load>,
    last_progress: Instant,
    /// Lone clients without their CONNECT reply plus pairs not yet friends with both ACKs: a
    /// count kept up to date, so a loop turn never walks every client.
    setup_unfinished: usize,
}

impl Driver {
    pub fn new(options: DriverOptions) -> io::Result<Driver> {
        let upgrade_request = ws::upgrade_request(&options.addr.to_string());
        let body: String = (0..PUBLIC_KEY_BODY)
            .map(|i| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"[i % 42]))
            .collect();
        Ok(Driver {
            options,
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            ready_events: Vec::with_capacity(1024),
            clients: Vec::new(),
            pairs: Vec::new(),
            queued: Default::default(),
            connecting: 0,
            dirty: Vec::new(),
            topups: Vec::new(),
            scratch: vec![0; 2 * READ_CHUNK],
            upgrade_request,
            public_key: format!(
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\\n\\n{body}\\n-----END PGP PUBLIC KEY BLOCK-----"
            ),
            faults: Faults::default(),
            load: None,
            last_progress: Instant::now(),
            setup_unfinished: 0,
        })
    }

    fn add_client(&mut self) -> usize {
        let index = self.clients.len();
        self.clients.push(Client {
            stream: None,
            phase: Phase::Queued,
            id: [0; 6],
            partner: None,
            pair: None,
            partial: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            dirty: false,
            mask_state: 0x9E37_79B9_7F4A_7C15 ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
            sent: 0,
            acked: 0,
            received: 0,
            sender_slot: None,
            wants_topup: false,
        });
        self.queued.push_back(index);
        index
    }

    /// Queues `count` pairs of clients that will become friends.
    pub fn add_pairs(&mut self, count: usize) {
        for _ in 0..count {
            let first = self.add_client();
            let second = self.add_client();
            let pair = self.pairs.len();
            self.setup_unfinished += 1;
            self.pairs.push(Pair {
                first,
                second,
                requested: false,
                friends: false,
                acks: 0,
            });
            for (me, friend) in [(first, second), (second, first)] {
                self.clients[me].partner = Some(friend);
                self.clients[me].pair = Some(pair);
            }
        }
    }

    /// Queues `count` clients that only CONNECT and then stay idle.
    pub fn add_lone(&mut self, count: usize) {
        for _ in 0..count {
            self.add_client();
            self.setup_unfinished += 1;
        }
    }

    /// Applies `change` to a pair and counts it finished when this change finished it.
    fn advance_pair(&mut self, pair: usize, change: impl FnOnce(&mut Pair)) {
        let was_done = self.pairs[pair].done();
        change(&mut self.pairs[pair]);
        if !was_done && self.pairs[pair].done() {
            self.setup_unfinished -= 1;
        }
    }

    /// Opens every queued client and makes every pair friends.
    pub fn establish(&mut self, limit: Duration) -> Result<SetupReport, String> {
        let started = Instant::now();
        let connections_before = self.clients.len() - self.queued.len();
        let pairs_before = self.pairs.iter().filter(|p| p.done()).count();
        self.last_progress = started;
        loop {
            self.open_queued();
            let pending = self.setup_unfinished;
            if pending == 0 {
                break;
            }
            if self.faults.total() > 0 {
                return Err(format!("setup failed: {}", self.faults.describe()));
            }
            let now = Instant::now();
            if now.duration_since(self.last_progress) > STALL || now.duration_since(started) > limit
            {
                return Err(format!(
                    "setup stalled with {pending} clients or pairs unfinished"
                ));
            }
            self.turn(Some(Duration::from_millis(10)))
                .map_err(|e| format!("poll: {e}"))?;
        }
        Ok(SetupReport {
            connections: self.clients.len() - connections_before,
            pairs: self.pairs.iter().filter(|p| p.done()).count() - pairs_before,
            elapsed: started.elapsed(),
        })
    }

    fn open_queued(&mut self) {
        while self.connecting < self.options.connect_concurrency {
            let Some(index) = self.queued.pop_front() else {
                return;
            };
            let source = match self.options.source_ips.as_slice() {
                [] => None,
                ips => Some(ips[index % ips.len()]),
            };
            match connect(self.options.addr, source) {
                Ok(mut stream) => {
                    let registered = self.poll.registry().register(
                        &mut stream,
                        Token(index),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if let Err(e) = registered {
                        self.faults.note(format!("register: {e}"));
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let client = &mut self.clients[index];
                    client.stream = Some(stream);
                    client.phase = Phase::Upgrading;
                    client.out.extend_from_slice(&self.upgrade_request);
                    mark_dirty(&mut self.dirty, client, index);
                    self.connecting += 1;
                }
                Err(e) => self.faults.note(format!("connect: {e}")),
            }
        }
    }

    /// One loop turn: poll, read and handle everything ready, top up senders, flush.
    fn turn(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if let Err(e) = self.poll.poll(&mut self.events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        self.ready_events.clear();
        for event in self.events.iter() {
            self.ready_events.push((
                event.token().0,
                event.is_readable() || event.is_read_closed() || event.is_error(),
                event.is_writable(),
            ));
        }
        let mut ready = std::mem::take(&mut self.ready_events);
        for &(index, readable, writable) in &ready {
            if writable {
                self.flush(index);
            }
            if readable {
                self.read(index);
            }
        }
        ready.clear();
        self.ready_events = ready;
        self.top_up();
        for index in std::mem::take(&mut self.dirty) {
            self.clients[index].dirty = false;
            self.flush(index);
        }
        Ok(())
    }

    fn flush(&mut self, index: usize) {
        let client = &mut self.clients[index];
        let Some(stream) = client.stream.as_mut() else {
            return;
        };
        while client.out_pos < client.out.len() {
            match stream.write(&client.out[client.out_pos..]) {
                Ok(0) => {
                    self.faults.note("write returned 0");
                    kill(client);
                    return;
                }
                Ok(n) => client.out_pos += n,
                // Still connecting, or the socket is full: the next writable event continues.
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::NotConnected =>
                {
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.faults.note(format!("write: {}", e.kind()));
                    kill(client);
                    return;
                }
            }
        }
        client.out.clear();
        client.out_pos = 0;
    }

    fn read(&mut self, index: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        loop {
            let client = &mut self.clients[index];
            let Some(stream) = client.stream.as_mut() else {
                break;
            };
            let kept = client.partial.len();
            if scratch.len() < kept + READ_CHUNK {
                scratch.resize(kept + READ_CHUNK, 0);
            }
            scratch[..kept].copy_from_slice(&client.partial);
            client.partial.clear();
            let result = stream.read(&mut scratch[kept..kept + READ_CHUNK]);
            let now = Instant::now();
            match result {
                Ok(0) => {
                    self.faults.note("the server closed a connection");
                    kill(&mut self.clients[index]);
                    break;
                }
                Ok(n) => {
                    let filled = kept + n;
                    let consumed = self.input(index, &scratch[..filled], now);
                    self.clients[index]
                        .partial
                        .extend_from_slice(&scratch[consumed..filled]);
                    self.last_progress = now;
                    // A short read emptied the socket; edge-triggered readiness reports any
                    // later data, so the extra `read` that would return WouldBlock is skipped.
                    if n < READ_CHUNK {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    client.partial.extend_from_slice(&scratch[..kept]);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    client.partial.extend_from_slice(&scratch[..kept]);
                }
                Err(e) => {
                    self.faults.note(format!("read: {}", e.kind()));
                    kill(client);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// Handles the bytes read so far; returns how many were used (the rest is an incomplete
    /// frame).
    fn input(&mut self, index: usize, input: &[u8], now: Instant) -> usize {
        let mut position = 0;
        if self.clients[index].phase == Phase::Upgrading {
            match ws::parse_upgrade_response(input) {
                Upgrade::Partial => return 0,
                Upgrade::Refused(why) => {
                    self.faults.note(why);
                    kill(&mut self.clients[index]);
                    return input.len();
                }
                Upgrade::Accepted(head_len) => {
                    position = head_len;
                    self.send_frame(index, br#"{"type":"CONNECT"}"#);
                    self.clients[index].phase = Phase::AwaitingConnect;
                }
            }
        }
        while let Some(rest) = input.get(position..) {
            match ws::parse_server_frame(rest) {
                Parsed::Partial => break,
                Parsed::Invalid(why) => {
                    self.faults.note(why);
                    kill(&mut self.clients[index]);
                    return input.len();
                }
                Parsed::Frame(frame) => {
                    position += frame.len;
                    if !frame.fin || frame.opcode == 0 {
                        self.faults.note("a fragmented server frame");
                        continue;
                    }
                    self.frame(index, frame.opcode, frame.payload, now);
                }
            }
        }
        position
    }

    fn frame(&mut self, index: usize, opcode: u8, payload: &[u8], now: Instant) {
        match opcode {
            ws::OPCODE_TEXT => {}
            ws::OPCODE_PING => {
                let mask = next_mask(&mut self.clients[index].mask_state);
                ws::push_frame(&mut self.clients[index].out, ws::OPCODE_PONG, payload, mask);
                mark_dirty(&mut self.dirty, &mut self.clients[index], index);
                return;
            }
            ws::OPCODE_PONG => return,
            ws::OPCODE_CLOSE => {
                let code = payload
                    .get(..2)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                self.faults.note(format!("the server closed with {code}"));
                kill(&mut self.clients[index]);
                return;
            }
            other => {
                self.faults.note(format!("opcode {other}"));
                return;
            }
        }
        match classify(payload) {
            Incoming::Message { from, payload } => self.message(index, from, payload, now),
            Incoming::MessageAck { seq } => self.message_ack(index, seq),
            Incoming::Other => self.other_frame(index, payload, now),
        }
    }

    /// A text frame off the fast path: setup traffic, errors, or a layout we do not expect.
    fn other_frame(&mut self, index: usize, text: &[u8], now: Instant) {
        let value: serde_json::Value = match serde_json::from_slice(text) {
            Ok(value) => value,
            Err(_) => {
                self.faults.note("a frame that is not JSON");
                return;
            }
        };
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("");
        match field("type") {
            "CONNECT" => self.connected(index, field("id")),
            "FRIEND_REQUEST" => self.friend_request(index, field("from")),
            "FRIEND_ACCEPT" => self.friend_accept(index, field("from")),
            "ACK" => match field("ref") {
                "request" | "accept" => self.setup_ack(index),
                other => match other.parse::<u64>() {
                    Ok(seq) => self.message_ack(index, seq),
                    Err(_) => self.faults.note("an ACK for nothing we sent"),
                },
            },
            "MESSAGE" => {
                // Same checks as the fast path, for a server that orders fields differently.
                let payload = field("payload").replace('\n', "\\n");
                let from = field("from").as_bytes().to_vec();
                self.message(index, &from, payload.as_bytes(), now);
            }
            "ERROR" => {
                *self
                    .faults
                    .error_frames
                    .entry(field("code").to_owned())
                    .or_default() += 1;
            }
            other => self.faults.note(format!("an unexpected {other} frame")),
        }
    }

    fn connected(&mut self, index: usize, id: &str) {
        let client = &mut self.clients[index];
        let Ok(id) = <[u8; 6]>::try_from(id.as_bytes()) else {
            self.faults.note("a CONNECT reply without a 6-character id");
            return;
        };
        if client.phase != Phase::AwaitingConnect {
            self.faults.note("a second CONNECT reply");
            return;
        }
        client.id = id;
        client.phase = Phase::Ready;
        self.connecting -= 1;
        self.last_progress = Instant::now();
        let Some(pair) = client.pair else {
            self.setup_unfinished -= 1;
            return;
        };
        let (first, second) = (self.pairs[pair].first, self.pairs[pair].second);
        if self.clients[first].phase == Phase::Ready && self.clients[second].phase == Phase::Ready {
            let to = String::from_utf8_lossy(&self.clients[second].id).into_owned();
            let request = format!(
                r#"{{"type":"FRIEND_REQUEST","to":"{to}","public_key":"{}","ref":"request"}}"#,
                self.public_key
            );
            self.send_frame(first, request.as_bytes());
            self.pairs[pair].requested = true;
        }
    }

    fn friend_request(&mut self, index: usize, from: &str) {
        let Some(partner) = self.clients[index].partner else {
            self.faults.note("a FRIEND_REQUEST for a lone client");
            return;
        };
        if from.as_bytes() != self.clients[partner].id {
            self.faults.note("a FRIEND_REQUEST from a stranger");
            return;
        }
        let accept = format!(
            r#"{{"type":"FRIEND_ACCEPT","to":"{from}","public_key":"{}","ref":"accept"}}"#,
            self.public_key
        );
        self.send_frame(index, accept.as_bytes());
    }

    fn friend_accept(&mut self, index: usize, from: &str) {
        let (Some(partner), Some(pair)) = (self.clients[index].partner, self.clients[index].pair)
        else {
            self.faults.note("a FRIEND_ACCEPT for a lone client");
            return;
        };
        if from.as_bytes() != self.clients[partner].id || !self.pairs[pair].requested {
            self.faults.note("an unexpected FRIEND_ACCEPT");
            return;
        }
        self.advance_pair(pair, |pair| pair.friends = true);
        self.last_progress = Instant::now();
    }

    fn setup_ack(&mut self, index: usize) {
        if let Some(pair) = self.clients[index].pair {
            self.advance_pair(pair, |pair| pair.acks += 1);
        }
    }

    fn send_frame(&mut self, index: usize, text: &[u8]) {
        let client = &mut self.clients[index];
        let mask = next_mask(&mut client.mask_state);
        ws::push_frame(&mut client.out, ws::OPCODE_TEXT, text, mask);
        mark_dirty(&mut self.dirty, client, index);
    }

    fn message(&mut self, index: usize, from: &[u8], payload: &[u8], now: Instant) {
        let Some(load) = self.load.as_mut() else {
            self.faults.note("a MESSAGE outside a run");
            return;
        };
        let Some(sender) = self.clients[index].partner else {
            self.faults.note("a MESSAGE for a lone client");
            return;
        };
        if from != self.clients[sender].id {
            self.faults.wrong_sender += 1;
            return;
        }
        let seq = match load.payloads.check(payload) {
            Ok(seq) => seq,
            Err(_) => {
                self.faults.corrupt += 1;
                return;
            }
        };
        let receiver = &mut self.clients[index];
        let expected = receiver.received + 1;
        if seq < expected {
            self.faults.duplicated += 1;
            return;
        }
        if seq > expected {
            self.faults.missing += seq - expected;
        }
        load.delivered += seq - receiver.received;
        receiver.received = seq;
        match load.mode {
            Mode::Open { rate } => {
                if let Some(slot) = self.clients[sender].sender_slot {
                    let scheduled = load.scheduled_at(slot, seq, rate);
                    let latency = now.saturating_duration_since(scheduled);
                    load.latencies_ns.push(latency.as_nanos() as u64);
                }
            }
            Mode::Closed { .. } => {
                let sender_client = &mut self.clients[sender];
                if !sender_client.wants_topup {
                    sender_client.wants_topup = true;
                    self.topups.push(sender);
                }
            }
        }
    }

    fn message_ack(&mut self, index: usize, seq: u64) {
        let Some(load) = self.load.as_mut() else {
            self.faults.note("an ACK outside a run");
            return;
        };
        let client = &mut self.clients[index];
        if seq != client.acked + 1 {
            self.faults.acks_out_of_order += 1;
        }
        client.acked = client.acked.max(seq);
        load.acks += 1;
    }

    /// Sends up to `count` more messages from `index` to its friend.
    fn send_messages(&mut self, index: usize, count: u64) {
        let Some(load) = self.load.as_ref() else {
            return;
        };
        let Some(partner) = self.clients[index].partner else {
            return;
        };
        let to = self.clients[partner].id;
        let client = &mut self.clients[index];
        let count = count.min(load.messages - client.sent);
        let len = load.payloads.message_len(load.with_ref);
        for _ in 0..count {
            client.sent += 1;
            let seq = client.sent;
            let mask = next_mask(&mut client.mask_state);
            ws::push_frame_with(&mut client.out, ws::OPCODE_TEXT, len, mask, |out| {
                load.payloads.push_message(out, &to, seq, load.with_ref)
            });
        }
        if count > 0 {
            mark_dirty(&mut self.dirty, client, index);
        }
    }

    /// Closed loop: refills the window of each sender whose friend received something.
    fn top_up(&mut self) {
        let Some(Mode::Closed { window }) = self.load.as_ref().map(|load| load.mode) else {
            return;
        };
        for index in std::mem::take(&mut self.topups) {
            self.clients[index].wants_topup = false;
            let Some(partner) = self.clients[index].partner else {
                continue;
            };
            let in_flight = self.clients[index].sent - self.clients[partner].received;
            self.send_messages(index, window.saturating_sub(in_flight));
        }
    }

    /// Open loop: hands out every message whose scheduled time has come.
    fn send_due(&mut self, rate: f64) {
        let Some(load) = self.load.as_ref() else {
            return;
        };
        let elapsed = load.started.elapsed().as_secs_f64();
        let due = ((elapsed * rate) as u64 + 1).min(load.total());
        let senders = load.senders.len() as u64;
        let from = load.scheduled;
        for k in from..due {
            let Some(&sender) = self
                .load
                .as_ref()
                .and_then(|load| load.senders.get((k % senders) as usize))
            else {
                break;
            };
            self.send_messages(sender, 1);
        }
        if let Some(load) = self.load.as_mut() {
            load.scheduled = load.scheduled.max(due);
        }
    }

    /// Runs one load on the first `spec.active_pairs` pairs and checks every message.
    pub fn run_load(&mut self, spec: &LoadSpec) -> Result<LoadReport, String> {
        let active = spec.active_pairs.min(self.pairs.len());
        let mut senders = Vec::with_capacity(2 * active);
        for pair in &self.pairs[..active] {
            senders.push(pair.first);
            senders.push(pair.second);
        }
        for client in &mut self.clients {
            client.sent = 0;
            client.acked = 0;
            client.received = 0;
            client.sender_slot = None;
        }
        for (slot, &index) in senders.iter().enumerate() {
            self.clients[index].sender_slot = Some(slot);
        }
        self.faults = Faults::default();
        let started = Instant::now();
        let mut load = Load {
            payloads: Payloads::new(spec.payload_size),
            with_ref: spec.with_ref,
            mode: spec.mode,
            messages: spec.messages,
            senders,
            started,
            delivered: 0,
            acks: 0,
            scheduled: 0,
            latencies_ns: Vec::new(),
        };
        if let Mode::Open { .. } = spec.mode {
            load.latencies_ns.reserve(load.total() as usize);
        }
        let senders = load.senders.clone();
        self.load = Some(load);
        if let Mode::Closed { window } = spec.mode {
            for &index in &senders {
                self.send_messages(index, window);
            }
        }
        self.last_progress = started;
        let outcome = loop {
            let Some(load) = self.load.as_ref() else {
                break Err("the run vanished".to_owned());
            };
            if load.finished() {
                break Ok(());
            }
            if self.last_progress.elapsed() > STALL {
                break Err(format!(
                    "stalled: {} of {} messages delivered, {} ACKs; faults: {}",
                    load.delivered,
                    load.total(),
                    load.acks,
                    self.faults.describe()
                ));
            }
            let timeout = match spec.mode {
                Mode::Open { rate } => {
                    self.send_due(rate);
                    // Spin: sub-millisecond send times need a zero timeout (epoll's resolution is
                    // 1 ms); the load generator has its core to itself.
                    Some(Duration::ZERO)
                }
                Mode::Closed { .. } => Some(Duration::from_millis(100)),
            };
            if let Err(e) = self.turn(timeout) {
                break Err(format!("poll: {e}"));
            }
        };
        let elapsed = started.elapsed();
        let load = self.load.take().ok_or("the run vanished")?;
        outcome?;
        Ok(LoadReport {
            messages: load.delivered,
            acks: load.acks,
            elapsed,
            latencies_ns: load.latencies_ns,
            faults: std::mem::take(&mut self.faults),
        })
    }
}

fn mark_dirty(dirty: &mut Vec<usize>, client: &mut Client, index: usize) {
    if !client.dirty {
        client.dirty = true;
        dirty.push(index);
    }
}

fn kill(client: &mut Client) {
    client.phase = Phase::Dead;
    client.stream = None;
    client.out.clear();
    client.out_pos = 0;
}

/// A fresh masking key (xorshift64): RFC 6455 wants unpredictable keys from browsers; for a load
/// generator only the cost matters, and the server unmasks whatever the key.
fn next_mask(state: &mut u64) -> [u8; 4] {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state as u32).to_ne_bytes()
}

/// A non-blocking connect, from `source` when given (several loopback source addresses give
/// more ephemeral ports than one).
fn connect(addr: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let (Some(source), SocketAddr::V4(target)) = (source, addr) else {
        return TcpStream::connect(addr);
    };
    // SAFETY: plain socket calls on a descriptor we own; it is closed on every error path and
    // handed to a TcpStream (which closes it on drop) on success.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fail = |fd| {
            let error = io::Error::last_os_error();
            libc::close(fd);
            Err(error)
        };
        let one: libc::c_int = 1;
        // The port is picked at connect time, per destination: far more ports to go round.
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let local = sockaddr(SocketAddrV4::new(source, 0));
        if libc::bind(
            fd,
            (&local as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            return fail(fd);
        }
        let remote = sockaddr(target);
        if libc::connect(
            fd,
            (&remote as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
            && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS)
        {
            return fail(fd);
        }
        Ok(TcpStream::from_std(std::net::TcpStream::from_raw_fd(fd)))
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}
