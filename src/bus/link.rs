//! [`RedisLink`]: one connection to Redis, as a state machine the mio loop drives.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use super::latency::Latency;
use super::resp::{self, Decoder, ProtocolError, Reply};
use super::stream::{ReadEnd, Stream, tls_client_config};
use super::url::ClusterUrl;

/// Bytes of commands waiting to be written; [`RedisLink::command`] refuses more with
/// [`LinkError::Full`]. Redis reading slower than the chat produces is a reason to shed load,
/// not to grow without end.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024 * 1024;
/// Commands written and not answered yet; more are refused with [`LinkError::Full`].
pub const MAX_IN_FLIGHT: usize = 1 << 20;
/// The first retry after a failure waits about this long; each failure doubles it.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// From the start of a connection to its last handshake reply: TCP, TLS, AUTH, SELECT, SUBSCRIBE.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The oldest command without a reply for this long means Redis is gone or stuck: the link
/// goes down so that the caller hears about it, rather than waiting on a dead TCP connection.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// A link that heard nothing for this long sends a `PING`, so that a peer that vanished without
/// closing (host down, network cut) is noticed within `IDLE_PING + REPLY_TIMEOUT`.
pub const IDLE_PING: Duration = Duration::from_secs(5);
/// Bytes read per [`RedisLink::ready`] or [`RedisLink::drive`] call unless
/// [`RedisLink::with_read_budget`] says otherwise; a link with more to read says so through
/// [`RedisLink::next_deadline`] (a deadline already passed). 1 MiB keeps one busy link from
/// holding the loop for more than a millisecond or so.
pub const READ_BUDGET: usize = 1024 * 1024;
/// How much of Redis's error text a log line shows.
const LOGGED_ERROR_CHARS: usize = 200;

/// What the link is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Pipelined commands; replies come back in order as [`LinkEvent::Reply`]. No blocking
    /// commands (`BLPOP`, `WAIT`, …): a reply that takes longer than [`REPLY_TIMEOUT`] is taken
    /// for a dead Redis, and everything behind it on the connection waits for it too.
    Commands,
    /// `SUBSCRIBE`s to `channels` on every connection; pushes come as [`LinkEvent::Message`].
    /// [`RedisLink::command`] is refused: in subscribed mode Redis accepts only pub/sub
    /// commands, whose replies look like pushes.
    ///
    /// Pub/sub is at most once: what is published while the link is down (and what Redis
    /// drops when this subscriber reads slower than `client-output-buffer-limit pubsub`
    /// allows, which closes the connection) is lost; a [`LinkEvent::Down`] marks the gap.
    Subscriber { channels: Vec<Vec<u8>> },
}

/// Where a link stands, for logs and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No connection; the next attempt is at [`RedisLink::next_deadline`].
    Down,
    /// TCP, TLS or the handshake commands are under way.
    Connecting,
    /// Commands are accepted (or, for a subscriber, messages arrive).
    Ready,
}

/// What happened on a link since the events were last taken.
#[derive(Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The link is ready: the handshake's replies were all OK.
    Up,
    /// The reply to the oldest command not yet answered.
    Reply(Reply),
    /// A `message` push on a subscribed channel.
    Message { channel: Vec<u8>, payload: Vec<u8> },
    /// The connection ended; `unanswered` commands will never be answered (the oldest ones
    /// were answered by `Reply`s before this).
    Down { unanswered: usize },
}

/// Sizes only: payloads stay out of logs.
impl fmt::Debug for LinkEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkEvent::Up => f.write_str("Up"),
            LinkEvent::Reply(reply) => write!(f, "Reply({reply:?})"),
            LinkEvent::Message { channel, payload } => write!(
                f,
                "Message {{ channel: {} bytes, payload: {} bytes }}",
                channel.len(),
                payload.len()
            ),
            LinkEvent::Down { unanswered } => write!(f, "Down {{ unanswered: {unanswered} }}"),
        }
    }
}

/// Why [`RedisLink::command`] refused a command; nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// The link is not [`LinkState::Ready`].
    Down,
    /// The output buffer or the commands in flight are at their bound.
    Full,
    /// A subscriber link takes no commands.
    NotCommands,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkError::Down => "the Redis link is down",
            LinkError::Full => "the Redis link's output buffer is full",
            LinkError::NotCommands => "a subscriber link takes no commands",
        })
    }
}

impl std::error::Error for LinkError {}

/// One connection to Redis, reconnecting with backoff: a state machine the mio loop drives.
///
/// ```text
///            drive: retry time came                 all handshake replies OK
///   Down ───────────────────────────▶ Connecting ───────────────────────────▶ Ready
///    ▲   connect / TLS / refused / junk /   │                                   │
///    └──────────── timeout ─────────────────┘◀──── closed / junk / timeout ─────┘
/// ```
///
/// The link owns one socket (registered under the caller's token), its output and input
/// buffers and the queue of commands waiting for replies. It does no I/O of its own accord:
/// the loop calls [`RedisLink::drive`] once per turn, [`RedisLink::ready`] on the token's
/// readiness events and [`RedisLink::flush`] after queueing commands, and takes what happened
/// with [`RedisLink::take_events`].
///
/// Invariants the caller can build on:
/// - Every `Ok` from [`RedisLink::command`] is answered by exactly one [`LinkEvent::Reply`], in
///   the order the commands were given, or counted in the `unanswered` of the one
///   [`LinkEvent::Down`] that ends the connection. Unanswered commands may or may not have run
///   in Redis.
/// - [`LinkEvent::Up`] and [`LinkEvent::Down`] alternate, starting with `Up`: failed attempts to
///   connect report nothing (they are logged).
/// - On a subscriber link, `Message`s come only between an `Up` and the next `Down`.
/// - Handshake replies (`AUTH`, `SELECT`, `SUBSCRIBE`, `PING`) and keep-alive `PING`s are
///   consumed by the link and never reported.
/// - Memory is bounded: output by [`MAX_OUTPUT_BYTES`], commands awaiting replies by
///   [`MAX_IN_FLIGHT`], input by the largest reply
///   ([`MAX_REPLY_BYTES`](super::MAX_REPLY_BYTES)) plus one read pass.
///
/// Logs name the link by its role and URL (password shown as `***`) and say why it went down;
/// they never contain payloads, and Redis's error text is logged with the password masked.
pub struct RedisLink {
    url: ClusterUrl,
    role: Role,
    token: Token,
    /// For `rediss://`: given by the caller, or the system bundle loaded at the first attempt.
    tls_config: Option<Arc<ClientConfig>>,
    phase: Phase,
    /// Attempts that failed since the link was last ready; sets the backoff.
    failures: u32,
    /// Jitter for the backoff (splitmix64).
    rng: u64,
    /// Addresses the host resolved to, tried in turn on successive attempts.
    next_address: usize,
    /// Encoded commands; bytes before `out_pos` are written.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes read; those before `in_pos` are decoded. `decoder`'s offsets count from `in_pos`.
    input: Vec<u8>,
    in_pos: usize,
    decoder: Decoder,
    /// What each reply still to come answers, oldest first.
    pending: VecDeque<Pending>,
    /// Commands in `pending` (not handshake or keep-alive entries): `unanswered` on Down.
    in_flight: usize,
    events: Vec<LinkEvent>,
    /// Messages pushed before the last SUBSCRIBE confirmation: reported right after `Up`.
    early: Vec<LinkEvent>,
    /// Bytes one read pass takes at most.
    read_budget: usize,
    /// The budget ran out in the last read pass: read again at the next `drive`.
    read_more: bool,
    /// The loop's time at the last `drive` or `ready`; a past deadline when `read_more`.
    clock: Instant,
    /// When bytes last arrived (or the connection became ready).
    last_heard: Instant,
    latency: Latency,
}

enum Phase {
    Down { retry_at: Instant },
    Connecting { conn: Conn, deadline: Instant },
    Ready { conn: Conn },
}

struct Conn {
    stream: Stream,
    /// The non-blocking `connect` has completed (and TLS, if any, has started).
    connected: bool,
    /// Whether WRITABLE interest is registered: while connecting, and while output waits.
    writable_registered: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Auth,
    Select,
    /// The last handshake command of a command link: proves the peer speaks Redis.
    HandshakePing,
    /// One `subscribe` confirmation (one per channel).
    Subscribed,
    KeepAlive,
    Command,
}

struct Pending {
    expect: Expect,
    sent_at: Instant,
}

/// Why a connection ended or never became ready. Its `Display` is a log line's reason: no
/// payloads, no password.
enum Failure {
    Resolve(io::Error),
    NoAddress,
    Io(io::Error),
    Closed,
    Tls(String),
    Protocol(ProtocolError),
    /// Redis answered a handshake command with an error (text already masked and shortened).
    Refused {
        command: &'static str,
        error: String,
    },
    Timeout(&'static str),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Resolve(e) => write!(f, "cannot resolve the host: {e}"),
            Failure::NoAddress => f.write_str("the host resolved to no address"),
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Closed => f.write_str("Redis closed the connection"),
            Failure::Tls(e) => write!(f, "TLS: {e}"),
            Failure::Protocol(e) => write!(f, "protocol error: {e}"),
            Failure::Refused { command, error } => write!(f, "Redis refused {command}: {error}"),
            Failure::Timeout(what) => write!(f, "timed out {what}"),
        }
    }
}

impl RedisLink {
    /// A link that is down and connects at its first [`RedisLink::drive`]. No I/O happens here.
    ///
    /// A `Subscriber` link with no channels only logs in (and pings).
    pub fn new(url: ClusterUrl, role: Role, token: Token) -> RedisLink {
        let now = Instant::now();
        let seed = getrandom::u64().unwrap_or_else(|_| {
            // Jitter only spreads reconnections out; any varying seed does.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            nanos ^ (token.0 as u64).rotate_left(32)
        });
        RedisLink {
            url,
            role,
            token,
            tls_config: None,
            phase: Phase::Down { retry_at: now },
            failures: 0,
            rng: seed,
            next_address: 0,
            out: Vec::new(),
            out_pos: 0,
            input: Vec::new(),
            in_pos: 0,
            decoder: Decoder::default(),
            pending: VecDeque::new(),
            in_flight: 0,
            events: Vec::new(),
            early: Vec::new(),
            read_budget: READ_BUDGET,
            read_more: false,
            clock: now,
            last_heard: now,
            latency: Latency::default(),
        }
    }

    /// The TLS configuration for `rediss://` (its roots decide which certificates are trusted;
    /// see [`tls_client_config`]). Without it, the system bundle is loaded at the first attempt.
    pub fn with_tls_config(mut self, config: Arc<ClientConfig>) -> RedisLink {
        self.tls_config = Some(config);
        self
    }

    /// A fixed seed for the backoff's jitter, for reproducible tests; otherwise `getrandom`.
    pub fn with_jitter_seed(mut self, seed: u64) -> RedisLink {
        self.rng = seed;
        self
    }

    /// Bytes one read pass takes at most (default [`READ_BUDGET`], at least 1): how long one
    /// readiness event may hold the loop against how many turns a large reply takes.
    pub fn with_read_budget(mut self, bytes: usize) -> RedisLink {
        self.read_budget = bytes.max(1);
        self
    }

    pub fn url(&self) -> &ClusterUrl {
        &self.url
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn token(&self) -> Token {
        self.token
    }

    pub fn state(&self) -> LinkState {
        match self.phase {
            Phase::Down { .. } => LinkState::Down,
            Phase::Connecting { .. } => LinkState::Connecting,
            Phase::Ready { .. } => LinkState::Ready,
        }
    }

    /// Round trips of commands and keep-alive pings (from [`RedisLink::command`] to the reply).
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    /// Commands accepted and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Bytes of commands not written to the socket yet.
    pub fn unsent_bytes(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// When [`RedisLink::drive`] has something to do: the next attempt, the handshake's
    /// deadline, the oldest command's reply deadline or the next keep-alive ping. A time
    /// already passed means "at once" (the last read pass ran out of budget).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.read_more {
            return Some(self.clock);
        }
        match &self.phase {
            Phase::Down { retry_at } => Some(*retry_at),
            Phase::Connecting { deadline, .. } => Some(*deadline),
            Phase::Ready { .. } => Some(match self.pending.front() {
                Some(oldest) => oldest.sent_at + REPLY_TIMEOUT,
                None => self.last_heard + IDLE_PING,
            }),
        }
    }

    /// Moves everything that happened since the last call to the end of `into`, in order.
    pub fn take_events(&mut self, into: &mut Vec<LinkEvent>) {
        into.append(&mut self.events);
    }

    /// Time-driven work: connects when down and the retry time has come; goes down when the
    /// handshake or a reply is overdue; pings an idle link; reads on when the last read pass
    /// ran out of budget. Call once per loop turn (and at [`RedisLink::next_deadline`]).
    pub fn drive(&mut self, registry: &Registry, now: Instant) {
        self.clock = now;
        match &self.phase {
            Phase::Down { retry_at } => {
                if now >= *retry_at {
                    self.connect(registry, now);
                }
                return;
            }
            Phase::Connecting { deadline, .. } => {
                if now >= *deadline {
                    self.go_down(registry, now, Failure::Timeout("connecting"));
                    return;
                }
            }
            Phase::Ready { .. } => {
                if let Some(oldest) = self.pending.front() {
                    if now >= oldest.sent_at + REPLY_TIMEOUT {
                        self.go_down(registry, now, Failure::Timeout("waiting for a reply"));
                        return;
                    }
                } else if now >= self.last_heard + IDLE_PING {
                    self.queue(&[b"PING"], Expect::KeepAlive, Instant::now());
                    self.flush(registry);
                }
            }
        }
        if self.read_more {
            self.pump(registry, now);
        }
    }

    /// A readiness event for this link's token: completes the connection, reads until the
    /// socket would block (or the budget runs out: see [`RedisLink::next_deadline`]), handles
    /// the replies and writes what waits. Events for a connection already closed are ignored.
    pub fn ready(&mut self, registry: &Registry, event: &Event, now: Instant) {
        self.clock = now;
        if event.token() != self.token {
            return;
        }
        self.pump(registry, now);
    }

    /// Queues one command (a RESP array of bulk strings); it is written at the next
    /// [`RedisLink::flush`] and answered by one [`LinkEvent::Reply`] or counted in a
    /// [`LinkEvent::Down`].
    pub fn command(&mut self, args: &[&[u8]]) -> Result<(), LinkError> {
        if let Role::Subscriber { .. } = self.role {
            return Err(LinkError::NotCommands);
        }
        if !matches!(self.phase, Phase::Ready { .. }) {
            return Err(LinkError::Down);
        }
        if self.unsent_bytes() + resp::command_len(args) > MAX_OUTPUT_BYTES
            || self.pending.len() >= MAX_IN_FLIGHT
        {
            return Err(LinkError::Full);
        }
        self.queue(args, Expect::Command, Instant::now());
        Ok(())
    }

    /// Writes what is queued, as far as the socket takes it; registers WRITABLE interest only
    /// while the socket refused bytes, and drops it once everything is out.
    pub fn flush(&mut self, registry: &Registry) {
        let now = self.clock;
        let (Phase::Connecting { conn, .. } | Phase::Ready { conn }) = &mut self.phase else {
            return;
        };
        if conn.connected {
            let unsent = self.out.get(self.out_pos..).unwrap_or_default();
            match conn.stream.write(unsent) {
                Ok(n) => self.out_pos += n,
                Err(e) => {
                    self.go_down(registry, now, Failure::Io(e));
                    return;
                }
            }
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
            } else if self.out_pos > self.out.len() / 2 {
                self.out.drain(..self.out_pos);
                self.out_pos = 0;
            }
        }
        let want_writable =
            !conn.connected || self.out_pos < self.out.len() || conn.stream.wants_write();
        if want_writable != conn.writable_registered {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            match registry.reregister(&mut conn.stream.tcp, self.token, interest) {
                Ok(()) => conn.writable_registered = want_writable,
                Err(e) => self.go_down(registry, now, Failure::Io(e)),
            }
        }
    }

    // -----------------------------------------------------------------------------------------

    fn queue(&mut self, args: &[&[u8]], expect: Expect, sent_at: Instant) {
        resp::encode_command(&mut self.out, args);
        self.pending.push_back(Pending { expect, sent_at });
        if expect == Expect::Command {
            self.in_flight += 1;
        }
    }

    /// Starts a connection: resolves the host, starts a non-blocking `connect` and queues the
    /// handshake commands, which go out once it completes.
    fn connect(&mut self, registry: &Registry, now: Instant) {
        // Name resolution blocks (getaddrinfo); an IP literal or a name in /etc/hosts answers
        // at once. It runs once per attempt, so a moved Redis is found again.
        let addresses: Vec<SocketAddr> = match (self.url.host(), self.url.port()).to_socket_addrs()
        {
            Ok(addresses) => addresses.collect(),
            Err(e) => return self.go_down(registry, now, Failure::Resolve(e)),
        };
        let Some(&address) = addresses.get(self.next_address % addresses.len().max(1)) else {
            return self.go_down(registry, now, Failure::NoAddress);
        };
        self.next_address = self.next_address.wrapping_add(1);
        let mut tcp = match TcpStream::connect(address) {
            Ok(tcp) => tcp,
            Err(e) => return self.go_down(registry, now, Failure::Io(e)),
        };
        // Commands are small and latency-bound; Nagle would hold them back.
        let _ = tcp.set_nodelay(true);
        if let Err(e) = registry.register(
            &mut tcp,
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.go_down(registry, now, Failure::Io(e));
        }
        log::debug!("{}: connecting to {address}", self.name());
        self.phase = Phase::Connecting {
            conn: Conn {
                stream: Stream::plain(tcp),
                connected: false,
                writable_registered: true,
            },
            deadline: now + CONNECT_TIMEOUT,
        };
        self.queue_handshake(now);
    }

    fn queue_handshake(&mut self, now: Instant) {
        let url = self.url.clone();
        match (url.username(), url.password()) {
            (Some(user), Some(password)) => self.queue(
                &[b"AUTH", user.as_bytes(), password.as_bytes()],
                Expect::Auth,
                now,
            ),
            (None, Some(password)) => {
                self.queue(&[b"AUTH", password.as_bytes()], Expect::Auth, now)
            }
            _ => {}
        }
        if url.db() != 0 {
            let db = url.db().to_string();
            self.queue(&[b"SELECT", db.as_bytes()], Expect::Select, now);
        }
        match &self.role {
            Role::Subscriber { channels } if !channels.is_empty() => {
                let mut args: Vec<&[u8]> = Vec::with_capacity(channels.len() + 1);
                args.push(b"SUBSCRIBE");
                args.extend(channels.iter().map(Vec::as_slice));
                resp::encode_command(&mut self.out, &args);
                for _ in channels {
                    self.pending.push_back(Pending {
                        expect: Expect::Subscribed,
                        sent_at: now,
                    });
                }
            }
            _ => self.queue(&[b"PING"], Expect::HandshakePing, now),
        }
    }

    /// Completes the connection, reads, handles replies, writes.
    fn pump(&mut self, registry: &Registry, now: Instant) {
        if let Err(failure) = self.complete_connection() {
            return self.go_down(registry, now, failure);
        }
        let (Phase::Connecting { conn, .. } | Phase::Ready { conn }) = &mut self.phase else {
            return;
        };
        if !conn.connected {
            return;
        }
        let before = self.input.len();
        let read = conn.stream.read(&mut self.input, self.read_budget);
        if self.input.len() > before {
            self.last_heard = now;
        }
        self.read_more = matches!(read, Ok(ReadEnd::Budget));
        // Replies that arrived before the end of the stream are delivered first.
        if let Err(failure) = self.decode_replies() {
            return self.go_down(registry, now, failure);
        }
        match read {
            Ok(ReadEnd::Closed) => return self.go_down(registry, now, Failure::Closed),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return self.go_down(registry, now, Failure::Tls(e.to_string()));
            }
            Err(e) => return self.go_down(registry, now, Failure::Io(e)),
            Ok(ReadEnd::Drained | ReadEnd::Budget) => {}
        }
        self.flush(registry);
    }

    /// While connecting: whether the non-blocking `connect` finished; if it did, starts TLS
    /// for `rediss://`.
    fn complete_connection(&mut self) -> Result<(), Failure> {
        let Phase::Connecting { conn, .. } = &mut self.phase else {
            return Ok(());
        };
        if conn.connected {
            return Ok(());
        }
        let tcp = &conn.stream.tcp;
        match tcp.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Err(Failure::Io(e)),
        }
        match tcp.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(Failure::Io(e)),
        }
        conn.connected = true;
        if self.url.tls() {
            let config = match &self.tls_config {
                Some(config) => Arc::clone(config),
                None => {
                    let config = tls_client_config(None).map_err(Failure::Tls)?;
                    self.tls_config = Some(Arc::clone(&config));
                    config
                }
            };
            let name = ServerName::try_from(self.url.host().to_string())
                .map_err(|e| Failure::Tls(e.to_string()))?;
            let Phase::Connecting { conn, .. } = &mut self.phase else {
                return Ok(());
            };
            conn.stream
                .start_tls(config, name)
                .map_err(|e| Failure::Tls(e.to_string()))?;
        }
        Ok(())
    }

    fn decode_replies(&mut self) -> Result<(), Failure> {
        let mut received = None;
        loop {
            let unread = self.input.get(self.in_pos..).unwrap_or_default();
            let Some((reply, used)) = self.decoder.next(unread).map_err(Failure::Protocol)? else {
                break;
            };
            self.in_pos += used;
            let at = *received.get_or_insert_with(Instant::now);
            self.on_reply(reply, at)?;
        }
        if self.in_pos == self.input.len() {
            self.input.clear();
            self.in_pos = 0;
        } else if self.in_pos > 0 && self.in_pos >= self.input.len() / 2 {
            self.input.drain(..self.in_pos);
            self.in_pos = 0;
        }
        Ok(())
    }

    fn on_reply(&mut self, reply: Reply, received: Instant) -> Result<(), Failure> {
        if let Role::Subscriber { .. } = self.role
            && let Some(message) = as_message(&reply)
        {
            if matches!(self.phase, Phase::Ready { .. }) {
                self.events.push(message);
            } else {
                self.early.push(message);
            }
            return Ok(());
        }
        let Some(pending) = self.pending.pop_front() else {
            return Err(Failure::Protocol(ProtocolError("a reply to no command")));
        };
        match pending.expect {
            Expect::Command => {
                self.in_flight -= 1;
                self.latency
                    .record(received.saturating_duration_since(pending.sent_at));
                self.events.push(LinkEvent::Reply(reply));
            }
            Expect::KeepAlive => {
                self.check_pong(reply)?;
                self.latency
                    .record(received.saturating_duration_since(pending.sent_at));
            }
            Expect::HandshakePing => self.check_pong(reply)?,
            Expect::Auth => self.check_ok(reply, "AUTH")?,
            Expect::Select => self.check_ok(reply, "SELECT")?,
            Expect::Subscribed => match reply {
                Reply::Array(Some(items))
                    if items.first().and_then(Reply::as_bytes) == Some(b"subscribe") => {}
                Reply::Error(error) => {
                    return Err(Failure::Refused {
                        command: "SUBSCRIBE",
                        error: self.masked(&error),
                    });
                }
                _ => {
                    return Err(Failure::Protocol(ProtocolError(
                        "not a SUBSCRIBE confirmation",
                    )));
                }
            },
        }
        if self.pending.is_empty() && matches!(self.phase, Phase::Connecting { .. }) {
            self.become_ready(received);
        }
        Ok(())
    }

    fn check_ok(&self, reply: Reply, command: &'static str) -> Result<(), Failure> {
        match reply {
            Reply::Simple(text) if text == "OK" => Ok(()),
            Reply::Error(error) => Err(Failure::Refused {
                command,
                error: self.masked(&error),
            }),
            _ => Err(Failure::Protocol(ProtocolError(
                "an unexpected handshake reply",
            ))),
        }
    }

    /// `+PONG`, or in subscribed mode `["pong", ""]`.
    fn check_pong(&self, reply: Reply) -> Result<(), Failure> {
        match reply {
            Reply::Simple(text) if text == "PONG" => Ok(()),
            Reply::Array(Some(items))
                if items.first().and_then(Reply::as_bytes) == Some(b"pong") =>
            {
                Ok(())
            }
            Reply::Error(error) => Err(Failure::Refused {
                command: "PING",
                error: self.masked(&error),
            }),
            _ => Err(Failure::Protocol(ProtocolError("not a PING reply"))),
        }
    }

    fn become_ready(&mut self, now: Instant) {
        let Phase::Connecting { conn, .. } = std::mem::replace(
            &mut self.phase,
            Phase::Down {
                retry_at: self.clock,
            },
        ) else {
            return;
        };
        self.phase = Phase::Ready { conn };
        self.failures = 0;
        self.last_heard = now.max(self.clock);
        log::info!("{}: ready", self.name());
        self.events.push(LinkEvent::Up);
        self.events.append(&mut self.early);
    }

    /// Ends the connection (if any), forgets what it carried and schedules the next attempt.
    fn go_down(&mut self, registry: &Registry, now: Instant, failure: Failure) {
        let was_ready = matches!(self.phase, Phase::Ready { .. });
        let delay = self.backoff();
        let phase = std::mem::replace(
            &mut self.phase,
            Phase::Down {
                retry_at: now + delay,
            },
        );
        if let Phase::Connecting { mut conn, .. } | Phase::Ready { mut conn } = phase {
            let _ = registry.deregister(&mut conn.stream.tcp);
        }
        let unanswered = self.in_flight;
        self.pending.clear();
        self.in_flight = 0;
        self.out.clear();
        self.out_pos = 0;
        self.input.clear();
        self.in_pos = 0;
        self.decoder = Decoder::default();
        self.early.clear();
        self.read_more = false;
        let name = self.name();
        if was_ready {
            log::warn!(
                "{name}: down ({failure}); unanswered commands: {unanswered}; reconnecting in {} ms",
                delay.as_millis()
            );
            self.events.push(LinkEvent::Down { unanswered });
        } else if matches!(failure, Failure::Refused { .. }) || self.failures.is_power_of_two() {
            // Every refusal (a configuration error), and failures 1, 2, 4, 8, … of a row.
            log::warn!(
                "{name}: cannot connect ({failure}); failures in a row: {}; next attempt in {} ms",
                self.failures,
                delay.as_millis()
            );
        } else {
            log::debug!(
                "{name}: cannot connect ({failure}); next attempt in {} ms",
                delay.as_millis()
            );
        }
    }

    /// The wait before the next attempt: `BACKOFF_MIN · 2^failures`, at most `BACKOFF_MAX`,
    /// then a random point in its upper half, so that nodes that lost Redis together do not
    /// come back in step. Counts the failure.
    fn backoff(&mut self) -> Duration {
        let doublings = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let ceiling = BACKOFF_MIN
            .saturating_mul(1u32 << doublings)
            .min(BACKOFF_MAX);
        let half = ceiling / 2;
        let jitter_ns = self.next_random() % (half.as_nanos() as u64 + 1);
        (half + Duration::from_nanos(jitter_ns)).max(BACKOFF_MIN)
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Redis's error text for a log line: the password masked (a server may echo a command's
    /// arguments), control characters dropped, at most [`LOGGED_ERROR_CHARS`] characters.
    fn masked(&self, error: &str) -> String {
        let mut text = error.to_string();
        if let Some(password) = self.url.password() {
            text = text.replace(password, "***");
        }
        text.chars()
            .filter(|c| !c.is_control())
            .take(LOGGED_ERROR_CHARS)
            .collect()
    }

    fn name(&self) -> String {
        let role = match self.role {
            Role::Commands => "commands",
            Role::Subscriber { .. } => "subscriber",
        };
        format!("bus {role} link to {}", self.url)
    }
}

/// A `message` push as an event; `None` for anything else.
fn as_message(reply: &Reply) -> Option<LinkEvent> {
    let Reply::Array(Some(items)) = reply else {
        return None;
    };
    match items.as_slice() {
        [kind, channel, payload] if kind.as_bytes() == Some(b"message") => {
            Some(LinkEvent::Message {
                channel: channel.as_bytes()?.to_vec(),
                payload: payload.as_bytes()?.to_vec(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unconnected() -> RedisLink {
        let url = ClusterUrl::parse("redis://127.0.0.1:1").unwrap();
        RedisLink::new(url, Role::Commands, Token(7)).with_jitter_seed(42)
    }

    #[test]
    fn backoff_doubles_from_100_ms_to_5_s_with_jitter_in_the_upper_half() {
        let mut link = unconnected();
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            let ceiling = BACKOFF_MIN
                .saturating_mul(1u32 << link.failures.min(16))
                .min(BACKOFF_MAX);
            let delay = link.backoff();
            assert!(
                delay >= BACKOFF_MIN && delay <= ceiling,
                "{delay:?} {ceiling:?}"
            );
            assert!(delay >= ceiling / 2, "{delay:?} {ceiling:?}");
            ceilings.push(ceiling);
        }
        assert_eq!(ceilings[0], BACKOFF_MIN);
        assert_eq!(ceilings[1], BACKOFF_MIN * 2);
        assert_eq!(*ceilings.last().unwrap(), BACKOFF_MAX);
        // Two links with other seeds wait for different times.
        let mut a = unconnected().with_jitter_seed(1);
        let mut b = unconnected().with_jitter_seed(2);
        a.failures = 10;
        b.failures = 10;
        assert_ne!(a.backoff(), b.backoff());
    }

    #[test]
    fn commands_are_refused_while_down_and_on_a_subscriber() {
        let mut commands = unconnected();
        assert_eq!(commands.state(), LinkState::Down);
        assert_eq!(commands.command(&[b"PING"]), Err(LinkError::Down));
        let url = ClusterUrl::parse("redis://127.0.0.1:1").unwrap();
        let mut subscriber = RedisLink::new(
            url,
            Role::Subscriber {
                channels: vec![b"a".to_vec()],
            },
            Token(8),
        );
        assert_eq!(subscriber.command(&[b"PING"]), Err(LinkError::NotCommands));
        // A new link is due at once.
        assert!(commands.next_deadline().unwrap() <= Instant::now());
    }

    #[test]
    fn redis_error_text_is_logged_with_the_password_masked() {
        let url = ClusterUrl::parse("redis://u:topsecret@127.0.0.1:1").unwrap();
        let link = RedisLink::new(url, Role::Commands, Token(1));
        let masked = link
            .masked("ERR unknown command 'AUTH', with args beginning with: 'u' 'topsecret'\r\n");
        assert!(!masked.contains("topsecret"), "{masked}");
        assert!(masked.contains("***"));
        assert!(!masked.contains('\r'));
        assert!(link.masked(&"x".repeat(1000)).len() <= LOGGED_ERROR_CHARS);
        assert!(!link.name().contains("topsecret"));
    }

    #[test]
    fn events_show_no_payload() {
        let event = LinkEvent::Message {
            channel: b"node:1".to_vec(),
            payload: b"secret".to_vec(),
        };
        let shown = format!("{event:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("node"),
            "{shown}"
        );
    }
}
