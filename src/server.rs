//! The single-threaded mio poll loop: it moves bytes between sockets and the router.
//!
//! One iteration, always in this order:
//! 1. **poll** for readiness (the timeout is the nearest deadline; zero when a connection still
//!    has unread input);
//! 2. **dispatch**: accept new sockets; read each ready connection (up to its read budget),
//!    handing each complete message to the router, whose frames are written at once into the
//!    recipients' outboxes (`deliver.rs`), not flushed;
//! 3. **read again** the connections whose budget ran out;
//! 4. **timers**: the router's resume windows, then (once per sweep period) every connection's
//!    head, CONNECT, ping and idle deadlines;
//! 5. **flush** every connection written to in this iteration, once; a flush that would block
//!    registers WRITABLE interest until a later flush succeeds.
//!
//! Time is read once per iteration. Tokens come from a counter and are never reused, so a late
//! event for a closed connection finds nothing. The routing core sees connections only as
//! [`ConnId`]s (the token's number).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::address::{BlockCounts, ClientAddr};
use crate::assets::Assets;
use crate::config::Config;
use crate::connection::{
    self, Connection, Endpoint, Flush, Inbound, Outcome, READ_BUDGET, Settings, Tick,
};
use crate::http::{self, HostRule};
use crate::memory::{self, Trimmer};
use crate::metrics::{self, LoopCounters};
use crate::outbox::BacklogTotal;
use crate::router::fasthash::FastMap;
use crate::router::{ConnId, Entropy, Now, Router, RouterConfig};
use crate::socket_options;
use crate::tls::{TlsAcceptor, Transport};

mod deliver;

use deliver::{Deliver, Owed, mark_dirty};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const METRICS: Token = Token(2);
const FIRST_CONNECTION: usize = 3;

/// How long a shutdown waits for close frames to reach the peers.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long to wait before accepting again after running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Half-open connections (accepted, first request head not complete yet: a TLS handshake
/// included) that one IPv4 address or IPv6 /64 may hold, when per-address limits are on; its
/// /56 may hold twice and its /48 four times as many (`address::BLOCK_SHARES`). A browser opens
/// about six connections to a site at once, so a few people behind one NAT address loading the
/// page at the same moment fit; `connection::HEAD_DEADLINE` (10 s) frees what a slow client
/// holds. Without this, heads that never complete hold sockets the server-wide cap counts.
pub const HALF_OPEN_PER_ADDRESS: u32 = 16;

/// IDs and tokens come from the operating system's CSPRNG, drawn 4 KiB at a time: each CONNECT
/// needs two draws, and one system call per draw was a tenth of the cost of setting up a session.
pub struct OsEntropy {
    pool: Box<[u8; ENTROPY_POOL_BYTES]>,
    /// Bytes of `pool` before this index have been handed out.
    used: usize,
}

const ENTROPY_POOL_BYTES: usize = 4096;

impl OsEntropy {
    pub fn new() -> OsEntropy {
        OsEntropy {
            pool: Box::new([0; ENTROPY_POOL_BYTES]),
            used: ENTROPY_POOL_BYTES,
        }
    }

    fn refill(&mut self) {
        if let Err(error) = getrandom::fill(&mut self.pool[..]) {
            // Predictable IDs or tokens would let anyone take over sessions: stop instead.
            log::error!("the operating system's random number generator failed: {error}");
            std::process::abort();
        }
        self.used = 0;
    }
}

impl Default for OsEntropy {
    fn default() -> Self {
        OsEntropy::new()
    }
}

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        let mut filled = 0;
        while filled < buf.len() {
            if self.used == ENTROPY_POOL_BYTES {
                self.refill();
            }
            let take = (buf.len() - filled).min(ENTROPY_POOL_BYTES - self.used);
            buf[filled..filled + take].copy_from_slice(&self.pool[self.used..self.used + take]);
            // Handed-out bytes are wiped so the pool never holds a token that is in use.
            self.pool[self.used..self.used + take].fill(0);
            self.used += take;
            filled += take;
        }
    }
}

pub struct Server {
    poll: Poll,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    counters: LoopCounters,
    /// With TLS, every accepted socket is wrapped by this; SIGHUP re-reads its certificate.
    tls: Option<TlsAcceptor>,
    signals: Signals,
    conns: FastMap<Token, Connection>,
    router: Router<OsEntropy>,
    settings: Settings<'static>,
    owed: Owed,
    read_again: Vec<Token>,
    next_token: usize,
    started: Instant,
    sweep_every: Duration,
    next_sweep: Instant,
    accept_paused_until: Option<Instant>,
    max_open_sockets: usize,
    /// Accepted sockets already have `TCP_NODELAY` from the listener (Linux): one system call
    /// fewer per connection.
    nodelay_inherited: bool,
    /// Open sockets per client address block (`--max-connections-per-ip` per /64 or IPv4
    /// address, nested), so one address or one /48 cannot take the whole server. A connection
    /// holds its place from `accept` (or, through a trusted proxy, from its upgrade) until it
    /// closes: [`Connection::holds_socket`].
    sockets: BlockCounts,
    /// Half-open connections per client address block ([`HALF_OPEN_PER_ADDRESS`], nested),
    /// from `accept` until the first request head is complete: [`Connection::holds_head`].
    heads: BlockCounts,
    /// `--public-host`, kept to rebuild the Host rule when SIGHUP brings a certificate with
    /// other names.
    public_hosts: Vec<String>,
    /// `--listen`: without names, a loopback address still checks `Host`, another does not.
    listen: SocketAddr,
    shutdown_deadline: Option<Instant>,
    /// When freed memory goes back to the system.
    trimmer: Trimmer,
}

/// Both clocks, read once per iteration.
#[derive(Clone, Copy)]
struct Clock {
    instant: Instant,
    router: Now,
}

impl Server {
    /// Binds the listening socket and prepares the loop; nothing is served until [`Server::run`].
    /// With `tls`, the port speaks HTTPS and WSS only.
    pub fn bind(config: &Config, assets: Assets, tls: Option<TlsAcceptor>) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        socket_options::deepen_backlog(&listener);
        let nodelay_inherited = socket_options::set_nodelay_for_accepted(&listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let mut listener = TcpListener::bind(addr)?;
                poll.registry()
                    .register(&mut listener, METRICS, Interest::READABLE)?;
                Some(listener)
            }
            None => None,
        };
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;

        let router_config = RouterConfig {
            max_sessions: config.max_connections,
            resume_grace_ms: duration_ms(config.resume_grace),
            rate_messages_per_sec: config.rate_messages,
            rate_friend_requests_per_min: config.rate_friend_requests,
            max_message_bytes: config.max_message_bytes,
            // The same per-address bound for sessions as for sockets: sessions outlive sockets.
            max_sessions_per_peer: config.max_connections_per_ip,
            // Over time, one address may start twice as many sessions per minute as it may
            // hold, and send twice one session's friend requests; `--max-connections-per-ip 0`
            // turns every per-address limit off.
            rate_sessions_per_address_per_min: config.max_connections_per_ip.saturating_mul(2),
            rate_friend_requests_per_address_per_min: if config.max_connections_per_ip == 0 {
                0
            } else {
                config.rate_friend_requests.saturating_mul(2)
            },
            ..RouterConfig::defaults()
        };
        let ws_config = connection::ws_config(config.max_message_bytes);
        let outbox_ceiling = connection::outbox_ceiling(
            config.max_message_bytes,
            router_config.max_unsent_bytes,
            router_config.max_queue_bytes,
        );
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        let settings = Settings {
            assets: Box::leak(Box::new(assets)),
            allow_origins: Box::leak(config.allow_origins.clone().into_boxed_slice()),
            hosts: host_rule(&config.public_hosts, config.listen, tls.as_ref()),
            trusted_proxies: config.trusted_proxies.clone(),
            ws_config,
            outbox_ceiling,
            tls: tls.is_some(),
            backlog_total: BacklogTotal::default(),
            ping_interval: nonzero(config.ping_interval),
            idle_timeout: nonzero(config.idle_timeout),
        };
        let sweep_every = [
            Some(Duration::from_secs(1)),
            settings.ping_interval.map(|d| d / 4),
            settings.idle_timeout.map(|d| d / 4),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(20));
        let started = Instant::now();
        Ok(Server {
            poll,
            listener,
            metrics_listener,
            counters: LoopCounters::default(),
            tls,
            signals,
            conns: FastMap::default(),
            router: Router::new(router_config, OsEntropy::new()),
            settings,
            owed: Owed::default(),
            read_again: Vec::new(),
            next_token: FIRST_CONNECTION,
            started,
            sweep_every,
            next_sweep: started + sweep_every,
            accept_paused_until: None,
            // Room for every session plus HTTP requests and connections not yet CONNECTed.
            max_open_sockets: config.max_connections.saturating_mul(2).saturating_add(64),
            sockets: BlockCounts::new(config.max_connections_per_ip),
            heads: BlockCounts::new(if config.max_connections_per_ip == 0 {
                0
            } else {
                HALF_OPEN_PER_ADDRESS
            }),
            public_hosts: config.public_hosts.clone(),
            listen: config.listen,
            nodelay_inherited,
            shutdown_deadline: None,
            trimmer: Trimmer::new(Instant::now()),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether `/ws` opens for any `Host` (no names known: see [`HostRule`]); `main` warns then.
    pub fn accepts_any_host(&self) -> bool {
        self.settings.hosts.accepts_any()
    }

    /// Serves until SIGINT or SIGTERM, then closes every WebSocket with 1001 and returns.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_TURN);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let clock = self.clock();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(Endpoint::Public, clock),
                    METRICS => self.accept(Endpoint::Metrics, clock),
                    SIGNALS => self.on_signals(clock),
                    token => {
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        if readable && let Some(conn) = self.conns.get_mut(&token) {
                            conn.readable_again();
                        }
                        if event.is_writable() {
                            self.on_writable(token, clock);
                        }
                        if readable {
                            self.on_readable(token, clock);
                        }
                    }
                }
            }
            for token in std::mem::take(&mut self.read_again) {
                self.on_readable(token, clock);
            }
            self.run_timers(clock);
            self.flush_dirty();
            if let Some(deadline) = self.shutdown_deadline
                && (self.conns.is_empty() || clock.instant >= deadline)
            {
                log::info!("stopped");
                return Ok(());
            }
        }
    }

    fn clock(&self) -> Clock {
        let instant = Instant::now();
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(duration_ms)
            .unwrap_or(0);
        Clock {
            instant,
            router: Now {
                mono_ms: duration_ms(instant.saturating_duration_since(self.started)),
                unix_ms,
            },
        }
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        if !self.read_again.is_empty() {
            return Duration::ZERO;
        }
        let mut wake = self.next_sweep;
        if let Some(ms) = self.router.next_deadline_ms() {
            wake = wake.min(self.started + Duration::from_millis(ms));
        }
        for deadline in [self.accept_paused_until, self.shutdown_deadline]
            .into_iter()
            .flatten()
        {
            wake = wake.min(deadline);
        }
        wake.saturating_duration_since(now)
    }

    fn accept(&mut self, endpoint: Endpoint, clock: Clock) {
        if self.accept_paused_until.is_some() || self.shutdown_deadline.is_some() {
            return;
        }
        loop {
            let listener = match endpoint {
                Endpoint::Public => &self.listener,
                Endpoint::Metrics => match &self.metrics_listener {
                    Some(listener) => listener,
                    None => return,
                },
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer.ip(), endpoint, clock),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors (EMFILE/ENFILE) and the like: the listener will not
                    // be reported again while its queue stays non-empty, so retry from a timer.
                    log::warn!("accept failed: {e}; retrying shortly");
                    self.accept_paused_until = Some(clock.instant + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Registers an accepted socket, or closes it at once when a connection limit says no.
    fn admit(&mut self, mut stream: TcpStream, ip: IpAddr, endpoint: Endpoint, clock: Clock) {
        self.counters.accepted += 1;
        if self.conns.len() >= self.max_open_sockets {
            self.counters.refused += 1;
            // Debug, not warn: a flood would write one line per refused socket (see the metrics).
            log::debug!("refusing a connection: {} sockets open", self.conns.len());
            return;
        }
        // A trusted proxy's connections to the public port carry many clients' requests: each
        // is counted against its client once one is known (the upgrade), never against the
        // proxy, which would otherwise throttle everyone behind it. Every count held here is
        // given back in `forget_connection`, so the tables hold at most three blocks per open
        // socket.
        let addr = ClientAddr::new(ip);
        let counted = endpoint == Endpoint::Metrics || !self.settings.trusted_proxies.contains(ip);
        if counted {
            if !self.sockets.try_acquire(addr) {
                self.counters.refused += 1;
                log::debug!("refusing a connection: its address is at its socket limit");
                return;
            }
            if !self.heads.try_acquire(addr) {
                self.sockets.release(addr);
                self.counters.refused += 1;
                log::debug!("refusing a connection: its address is at its half-open limit");
                return;
            }
        }
        if !self.nodelay_inherited {
            // Chat frames are small and latency matters more than packet count.
            let _ = stream.set_nodelay(true);
        }
        socket_options::delay_first_acks(&stream);
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            log::warn!("cannot register a connection: {error}");
            if counted {
                self.sockets.release(addr);
                self.heads.release(addr);
            }
            return;
        }
        log::debug!("connection {} accepted from {ip}", token.0);
        let transport = match (&self.tls, endpoint) {
            (Some(acceptor), Endpoint::Public) => acceptor.accept(stream),
            _ => Transport::plain(stream),
        };
        let mut conn = Connection::accepted(transport, ip, endpoint, clock.instant);
        if counted {
            conn.holds_socket = Some(addr);
            conn.holds_head = Some(addr);
        }
        self.conns.insert(token, conn);
    }

    fn on_signals(&mut self, clock: Clock) {
        let received: Vec<i32> = self.signals.pending().collect();
        for signal in received {
            match signal {
                SIGINT | SIGTERM => self.begin_shutdown(clock),
                SIGHUP => self.reload_certificate(),
                _ => {}
            }
        }
    }

    /// Re-reads the certificate and key (after a renewal). New connections get the new ones;
    /// open connections keep theirs; on error the old ones stay in use.
    fn reload_certificate(&mut self) {
        let Some(acceptor) = &mut self.tls else {
            log::info!("SIGHUP: nothing to reload without TLS");
            return;
        };
        match acceptor.reload() {
            Ok(()) => {
                log::info!(
                    "SIGHUP: reloaded {} (SHA-256 {})",
                    acceptor.cert_path().display(),
                    acceptor.fingerprint()
                );
                self.settings.hosts = host_rule(&self.public_hosts, self.listen, Some(acceptor));
            }
            Err(error) => log::error!("SIGHUP: keeping the current certificate: {error}"),
        }
    }

    fn begin_shutdown(&mut self, clock: Clock) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        log::info!("shutting down: closing {} connections", self.conns.len());
        self.shutdown_deadline = Some(clock.instant + SHUTDOWN_GRACE);
        let _ = self.poll.registry().deregister(&mut self.listener);
        if let Some(listener) = &mut self.metrics_listener {
            let _ = self.poll.registry().deregister(listener);
        }
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            if conn.is_websocket() {
                conn.close_websocket(1001, "server shutting down", clock.instant);
                mark_dirty(&mut self.owed.dirty, token, conn);
            } else {
                self.drop_connection(token, clock);
            }
        }
    }

    /// Reads up to [`READ_BUDGET`] messages from `token`, routing each as it comes: the router
    /// writes what it forwards straight into the recipients' outboxes. A connection with more
    /// to read after its budget is read again later in the turn.
    fn on_readable(&mut self, token: Token, clock: Clock) {
        let id = token.0 as ConnId;
        let mut outcome = Outcome::ReadAgain;
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            let inbound = conn.read_next(clock.instant, &self.settings);
            let done = self.call_router(clock, |router, out| match inbound {
                Inbound::Text(text) => {
                    out.counters.frames_in += 1;
                    out.counters.bytes_in += text.len() as u64;
                    router.text(id, text.as_str(), clock.router, out);
                    None
                }
                Inbound::Binary => {
                    out.counters.frames_in += 1;
                    router.binary(id, clock.router, out);
                    None
                }
                Inbound::Control => None,
                Inbound::Failed(code) => {
                    log::debug!("connection {id} failed with close code {code}");
                    router.closed(id, clock.router, out);
                    Some(Outcome::Keep)
                }
                Inbound::Done(outcome) => Some(outcome),
            });
            if let Some(done) = done {
                outcome = done;
                break;
            }
        }
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.is_websocket() {
            // Pongs and close echoes are queued by reading; the end-of-iteration flush sends them.
            mark_dirty(&mut self.owed.dirty, token, conn);
        } else {
            release_finished_head(&mut self.heads, conn);
        }
        self.after(token, outcome, clock);
    }

    fn on_writable(&mut self, token: Token, clock: Clock) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.is_websocket() {
            mark_dirty(&mut self.owed.dirty, token, conn);
            return;
        }
        let outcome = conn.on_writable(clock.instant, &self.settings);
        release_finished_head(&mut self.heads, conn);
        self.after(token, outcome, clock);
    }

    /// Carries out what a connection asked for after it was driven.
    fn after(&mut self, token: Token, outcome: Outcome, clock: Clock) {
        match outcome {
            Outcome::Keep => self.sync_interest(token),
            Outcome::ReadAgain => {
                self.read_again.push(token);
                self.sync_interest(token);
            }
            Outcome::UpgradeRequested => self.admit_upgrade(token, clock),
            Outcome::Opened => {
                log::debug!("connection {} opened a WebSocket", token.0);
                let client = self
                    .conns
                    .get(&token)
                    .map_or(ClientAddr::UNSPECIFIED, |conn| conn.client);
                self.router
                    .open_from(token.0 as ConnId, client, clock.router);
                self.counters.websockets += 1;
                self.sync_interest(token);
                // Frames may have arrived with the upgrade or while the 101 was written; with
                // edge-triggered readiness no new event would report them.
                self.read_again.push(token);
            }
            Outcome::Drop => self.drop_connection(token, clock),
            Outcome::MetricsRequested => {
                let page = self.metrics_page();
                let Some(conn) = self.conns.get_mut(&token) else {
                    return;
                };
                conn.send_response(http::generated_response(
                    "text/plain; version=0.0.4; charset=utf-8",
                    &page,
                    false,
                ));
                let outcome = conn.on_writable(clock.instant, &self.settings);
                self.after(token, outcome, clock);
            }
        }
    }

    /// A valid upgrade is about to be answered with `101`. A connection that holds no socket
    /// budget yet (a trusted proxy's) now takes its client's, or gets `429 Too Many Requests`
    /// when that client is at its limit; then the answer goes out.
    fn admit_upgrade(&mut self, token: Token, clock: Clock) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.holds_socket.is_none() {
            let client = conn.client;
            log::debug!(
                "connection {} is for client {} (forwarded by {})",
                token.0,
                client.ip(),
                conn.peer
            );
            if self.sockets.try_acquire(client) {
                conn.holds_socket = Some(client);
            } else {
                self.counters.refused += 1;
                log::debug!("refusing a WebSocket (429): its client is at its socket limit");
                conn.refuse_upgrade(429, self.settings.tls);
            }
        }
        let outcome = conn.on_writable(clock.instant, &self.settings);
        self.after(token, outcome, clock);
    }

    fn metrics_page(&self) -> String {
        let counters = LoopCounters {
            open_sockets: self.conns.len(),
            unsent_bytes: self.settings.backlog_total.get(),
            ..self.counters
        };
        metrics::render(
            &self.router.stats(),
            &counters,
            metrics::process_rss_bytes(),
        )
    }

    /// The router with a sink over the connections: split borrows of `self`.
    fn router_and_sink(&mut self, clock: Clock) -> (&mut Router<OsEntropy>, Deliver<'_>) {
        let out = Deliver {
            conns: &mut self.conns,
            owed: &mut self.owed,
            counters: &mut self.counters,
            backlog_total: &self.settings.backlog_total,
            now: clock.instant,
        };
        (&mut self.router, out)
    }

    /// Calls the router with a sink over the connections, then settles what the call left owed.
    fn call_router<R>(
        &mut self,
        clock: Clock,
        call: impl FnOnce(&mut Router<OsEntropy>, &mut Deliver<'_>) -> R,
    ) -> R {
        let (router, mut out) = self.router_and_sink(clock);
        let result = call(router, &mut out);
        self.settle(clock);
        result
    }

    /// Settles what a router call left owed: drops the connections whose outbox passed its
    /// ceiling (which can make the router speak again: PRESENCE to friends), then corrects the
    /// router's count of unsent bytes where an outbox went to the socket early. Only then is
    /// every frame the router counted in an outbox, so what is left there is exactly what it
    /// should count.
    fn settle(&mut self, clock: Clock) {
        while let Some(token) = self.owed.doomed.pop() {
            self.forget_connection(token, clock);
        }
    }

    /// Closes `token`'s socket and tells the router, then settles what that owes.
    fn drop_connection(&mut self, token: Token, clock: Clock) {
        self.forget_connection(token, clock);
        self.settle(clock);
    }

    /// Closes `token`'s socket and tells the router; what the router's answer owes other
    /// connections (dropping those it pushed past their ceiling) is left to [`Server::settle`],
    /// whose loop keeps a cascade of drops iterative rather than one stack frame per drop.
    fn forget_connection(&mut self, token: Token, clock: Clock) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        if let Some(addr) = conn.holds_socket.take() {
            self.sockets.release(addr);
        }
        if let Some(addr) = conn.holds_head.take() {
            self.heads.release(addr);
        }
        if let Some(source) = conn.source() {
            let _ = self.poll.registry().deregister(source);
        }
        log::debug!("connection {} closed", token.0);
        if conn.is_websocket() {
            self.counters.websockets = self.counters.websockets.saturating_sub(1);
            let (router, mut out) = self.router_and_sink(clock);
            router.closed(token.0 as ConnId, clock.router, &mut out);
        }
    }

    fn run_timers(&mut self, clock: Clock) {
        if self
            .router
            .next_deadline_ms()
            .is_some_and(|ms| ms <= clock.router.mono_ms)
        {
            self.call_router(clock, |router, out| router.tick(clock.router, out));
        }
        if self
            .accept_paused_until
            .is_some_and(|until| clock.instant >= until)
        {
            self.accept_paused_until = None;
            self.accept(Endpoint::Public, clock);
            self.accept(Endpoint::Metrics, clock);
        }
        if clock.instant >= self.next_sweep {
            self.next_sweep = clock.instant + self.sweep_every;
            self.sweep(clock);
        }
    }

    /// Checks every connection's deadlines: O(connections) once per sweep period, never per
    /// event.
    fn sweep(&mut self, clock: Clock) {
        if self
            .trimmer
            .should_trim(self.conns.len(), self.counters.frames_out, clock.instant)
        {
            memory::trim();
        }
        let mut advance = Vec::new();
        let mut closing = Vec::new();
        let mut expired = Vec::new();
        for (&token, conn) in self.conns.iter_mut() {
            let connected = self.router.is_connected(token.0 as ConnId);
            match conn.tick(clock.instant, connected, &self.settings) {
                Tick::Nothing => {}
                Tick::Advance => advance.push(token),
                Tick::Closing(code) => closing.push((token, code)),
                Tick::Drop => expired.push(token),
            }
        }
        for token in expired {
            self.drop_connection(token, clock);
        }
        for (token, code) in closing {
            log::debug!("connection {} timed out: closing with {code}", token.0);
            self.call_router(clock, |router, out| {
                router.closed(token.0 as ConnId, clock.router, out)
            });
            if let Some(conn) = self.conns.get_mut(&token) {
                mark_dirty(&mut self.owed.dirty, token, conn);
            }
        }
        for token in advance {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            if conn.is_websocket() {
                mark_dirty(&mut self.owed.dirty, token, conn);
            } else {
                let outcome = conn.on_writable(clock.instant, &self.settings);
                release_finished_head(&mut self.heads, conn);
                self.after(token, outcome, clock);
            }
        }
    }

    /// Flushes each connection written to in this iteration, once.
    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.owed.dirty);
        let mut dead = Vec::new();
        for &token in &dirty {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            conn.dirty = false;
            if conn.flush() == Flush::Dead {
                dead.push(token);
            }
            self.sync_interest(token);
        }
        self.owed.dirty = dirty;
        self.owed.dirty.clear();
        if !dead.is_empty() {
            let clock = self.clock();
            for token in dead {
                self.drop_connection(token, clock);
            }
            // Dropping may have produced frames for other connections (PRESENCE).
            if !self.owed.dirty.is_empty() {
                self.flush_dirty();
            }
        }
    }

    /// Registers WRITABLE interest exactly while a connection has output the socket refused.
    fn sync_interest(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let want = conn.wants_write();
        if want == conn.registered_writable {
            return;
        }
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        conn.registered_writable = want;
        if let Some(source) = conn.source() {
            let _ = self.poll.registry().reregister(source, token, interest);
        }
    }
}

/// The most readiness events one loop turn takes from `epoll_wait`; the rest wait for the next
/// turn, a few microseconds later.
///
/// Each turn reads what its connections sent, routes it into their partners' outboxes and
/// flushes those at its end, so a turn's data is live all at once: about 36 KiB per busy
/// connection (32 messages of 512 B read, as many written). 64 connections keep that within the
/// core's 1 MiB L2 cache and the outboxes the allocator hands out turn after turn stay warm; at
/// 1024, with all 10,000 connections busy, a turn's 37 MB missed every cache. Measured
/// (BENCHMARKS.md): all 10,000 active +9 % (median of 12 alternating rounds), 100 connections
/// unchanged, as are their system calls: a turn rarely has more than 64 events there.
const EVENTS_PER_TURN: usize = 64;

/// Gives back `conn`'s half-open place once its first request head has ended. Called after each
/// drive of an HTTP connection that can end a head (a read, a write that continues a keep-alive
/// exchange, a deadline's 408), before its outcome is carried out; closing gives back whatever is
/// still held. Not on the WebSocket path, which holds none.
fn release_finished_head(heads: &mut BlockCounts, conn: &mut Connection) {
    if !conn.half_open()
        && let Some(addr) = conn.holds_head.take()
    {
        heads.release(addr);
    }
}

/// Which `Host` values open `/ws` (see [`HostRule`]): the `--public-host` names and the
/// certificate's; every `Host` when neither exists and the server listens beyond loopback
/// without TLS (its names are unknown; `main` warns).
fn host_rule(public_hosts: &[String], listen: SocketAddr, tls: Option<&TlsAcceptor>) -> HostRule {
    if tls.is_none() && public_hosts.is_empty() && !listen.ip().is_loopback() {
        return HostRule::any();
    }
    let certificate_names = tls.into_iter().flat_map(|acceptor| acceptor.dns_names());
    HostRule::names(
        public_hosts
            .iter()
            .chain(certificate_names)
            .map(String::as_str),
    )
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_check_is_off_only_beyond_loopback_without_tls_or_names() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let named = ["chat.example.org".to_string()];
        assert!(!host_rule(&[], loopback, None).accepts_any());
        assert!(host_rule(&[], everywhere, None).accepts_any());
        let rule = host_rule(&named, everywhere, None);
        assert!(!rule.accepts_any());
        assert!(rule.allows(Some("chat.example.org:443")));
        assert!(!rule.allows(Some("evil.example")));
    }

    #[test]
    fn entropy_is_handed_out_once_and_refilled() {
        let mut entropy = OsEntropy::new();
        let mut seen = std::collections::HashSet::new();
        // Several refills, with draws that straddle the pool's end.
        for _ in 0..(3 * ENTROPY_POOL_BYTES / 36) {
            let mut draw = [0u8; 36];
            entropy.fill(&mut draw);
            assert!(seen.insert(draw), "the same 36 random bytes twice");
        }
        let mut big = vec![0u8; ENTROPY_POOL_BYTES * 2 + 5];
        entropy.fill(&mut big);
        assert!(big.iter().filter(|&&b| b == 0).count() < big.len() / 64);
    }
}
