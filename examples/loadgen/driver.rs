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
//!
//! The driver's state and its loop turn are here; what it does with them, by job:
//!
//! - `setup`: queueing clients and pairs, opening connections, the friend handshake
//! - `load`: a run's load specification, the closed- and open-loop senders, and its report
//! - `checks`: every message received checked against what was sent, and the faults counted
//! - `frames`: server frames parsed and handed to the handler for their type
//! - `socket`: the non-blocking connect, batched writes, reads into the shared buffer

mod checks;
mod frames;
mod load;
mod setup;
mod socket;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Poll};

use crate::payload::Payloads;
use crate::ws;

use checks::Faults;
pub use load::{LoadReport, LoadSpec, Mode};
pub use setup::SetupReport;

/// Bytes asked of the kernel per `read`.
const READ_CHUNK: usize = 256 * 1024;
/// A run that receives nothing for this long has stalled: it ends with a fault.
const STALL: Duration = Duration::from_secs(10);
/// A public key of realistic size (an Ed25519 + Cv25519 key is about 650 bytes armored).
const PUBLIC_KEY_BODY: usize = 600;

pub struct DriverOptions {
    /// The address of each node (one for a single server, or for nodes sharing a port).
    pub addrs: Vec<SocketAddr>,
    /// Which node each client of a pair connects to, when there are several addresses.
    pub placement: Placement,
    /// Connections between `connect` and their CONNECT reply, at most.
    pub connect_concurrency: usize,
    /// Source addresses to spread connections over (empty: let the kernel choose).
    pub source_ips: Vec<Ipv4Addr>,
}

/// Where the two clients of a pair connect, among several nodes' addresses. Pair `p`'s first
/// client goes to node `p mod N`; lone clients are spread the same way by their index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Both on the first client's node: every message stays within one node.
    Same,
    /// The second on the next node: every message crosses the bus.
    Cross,
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
    /// Index into the nodes' addresses.
    node: usize,
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
    /// Per node: its Host header differs by port.
    upgrade_requests: Vec<Vec<u8>>,
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
        if options.addrs.is_empty() {
            return Err(io::Error::other("no server address"));
        }
        let upgrade_requests = options
            .addrs
            .iter()
            .map(|addr| ws::upgrade_request(&addr.to_string()))
            .collect();
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
            upgrade_requests,
            public_key: format!(
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\\n\\n{body}\\n-----END PGP PUBLIC KEY BLOCK-----"
            ),
            faults: Faults::default(),
            load: None,
            last_progress: Instant::now(),
            setup_unfinished: 0,
        })
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

    fn send_frame(&mut self, index: usize, text: &[u8]) {
        let client = &mut self.clients[index];
        let mask = next_mask(&mut client.mask_state);
        ws::push_frame(&mut client.out, ws::OPCODE_TEXT, text, mask);
        mark_dirty(&mut self.dirty, client, index);
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
