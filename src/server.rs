//! The single-threaded mio poll loop: it moves bytes between sockets and the router.
//!
//! One iteration, always in this order:
//! 1. **poll** for readiness (the timeout is the nearest deadline; zero when a connection still
//!    has unread input);
//! 2. **dispatch**: accept new sockets; read each ready connection (up to its read budget),
//!    handing each complete message to the router, whose frames are written at once into the
//!    recipients' outboxes (`deliver.rs`) and put them on the flush list;
//! 3. **read again** the connections whose budget ran out;
//! 4. **timers**: the router's resume windows, then (once per sweep period) every connection's
//!    head, CONNECT, ping and idle deadlines;
//! 5. **bus** (`--cluster` only): what the Redis links brought goes to the router (records from
//!    other nodes, answers, failures), the sessions changed this turn are saved, and this turn's
//!    records leave, one PUBLISH per node;
//! 6. **flush** every connection on the list, once; a flush that would block registers WRITABLE
//!    interest until a later flush succeeds.
//!
//! Every call that drives a connection answers with one [`Outcome`], and
//! [`Server::carry_out`] is the one place that acts on it. The loop's own facts about a
//! connection (interest, flush list, budgets held, whether the router knows it) live in its
//! [`Slot`], never in the connection.
//!
//! Time is read once per iteration. Tokens come from a counter and are never reused, so a late
//! event for a closed connection finds nothing. The routing core sees connections only as
//! [`ConnId`]s (the token's number).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;

use crate::address::BlockCounts;
use crate::bus::ClusterBus;
use crate::connection::{Context, Endpoint, Inbound, MetricsPage, Outcome, READ_BUDGET, Settings};
use crate::http::HostRule;
use crate::memory::{self, Trimmer};
use crate::metrics::{self, LoopCounters};
use crate::outbox::BacklogTotal;
use crate::router::fasthash::FastMap;
use crate::router::{ConnId, Now, Router};
use crate::tls::TlsAcceptor;

mod admission;
mod deliver;
mod entropy;
mod setup;
mod signals;
mod slot;

use deliver::Deliver;
pub use entropy::OsEntropy;
use slot::{FlushList, Slot};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const METRICS: Token = Token(2);
/// The cluster bus's two Redis links (`--cluster`).
const BUS_COMMANDS: Token = Token(3);
const BUS_SUBSCRIBER: Token = Token(4);
const FIRST_CONNECTION: usize = 5;
/// How many times one turn hands the router what the bus brought and the bus what the router
/// answered: each round's replies and records may bring more (a reply's failure, a lookup's
/// batch), which the next turn handles if these run out.
const BUS_ROUNDS: usize = 4;

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

pub struct Server {
    poll: Poll,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    counters: LoopCounters,
    /// With TLS, every accepted socket is wrapped by this; SIGHUP re-reads its certificate.
    tls: Option<TlsAcceptor>,
    signals: Signals,
    slots: FastMap<Token, Slot>,
    router: Router<OsEntropy>,
    settings: Settings<'static>,
    /// Connections written to in this turn, flushed once at its end.
    flush_list: FlushList,
    /// Connections whose outbox passed its ceiling during a router call: dropped right after it.
    doomed: Vec<Token>,
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
    /// closes: [`Slot::holds_socket`].
    sockets: BlockCounts,
    /// Half-open connections per client address block ([`HALF_OPEN_PER_ADDRESS`], nested),
    /// from `accept` until the first request head is complete: [`Slot::holds_head`].
    heads: BlockCounts,
    /// `--public-host`, kept to rebuild the Host rule when SIGHUP brings a certificate with
    /// other names.
    public_hosts: Vec<String>,
    /// `--listen`, which decides the names `/ws` answers to when none are given ([`host_rule`]).
    listen: SocketAddr,
    shutdown_deadline: Option<Instant>,
    /// When freed memory goes back to the system.
    trimmer: Trimmer,
    /// `--cluster`: the links to the other nodes through Redis.
    bus: Option<ClusterBus>,
}

/// Both clocks, read once per iteration.
#[derive(Clone, Copy)]
struct Clock {
    instant: Instant,
    router: Now,
}

/// The metrics page as a connection on the metrics listener asks for it: rendered from the
/// router's stats and the loop's counters at that moment.
struct LoopMetrics<'a> {
    router: &'a Router<OsEntropy>,
    bus: Option<&'a ClusterBus>,
    counters: &'a LoopCounters,
    open_sockets: usize,
    backlog_total: &'a BacklogTotal,
}

impl MetricsPage for LoopMetrics<'_> {
    fn render(&self) -> String {
        let counters = LoopCounters {
            open_sockets: self.open_sockets,
            unsent_bytes: self.backlog_total.get(),
            ..*self.counters
        };
        let stats = self.router.stats();
        let mut page = metrics::render(&stats, &counters, metrics::process_rss_bytes());
        if let Some(bus) = self.bus {
            metrics::render_cluster(&mut page, &stats, &bus.figures());
        }
        page
    }
}

impl Server {
    /// The slots, and the context a connection is driven in: split borrows of `self`.
    fn slots_in_context(
        &mut self,
        now: Instant,
    ) -> (&mut FastMap<Token, Slot>, Context<'_, LoopMetrics<'_>>) {
        let metrics = LoopMetrics {
            router: &self.router,
            bus: self.bus.as_ref(),
            counters: &self.counters,
            open_sockets: self.slots.len(),
            backlog_total: &self.settings.backlog_total,
        };
        let context = Context {
            settings: &self.settings,
            metrics,
            now,
        };
        (&mut self.slots, context)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether `/ws` opens for any `Host` (`--public-host '*'`); `main` warns then.
    pub fn accepts_any_host(&self) -> bool {
        self.settings.hosts.accepts_any()
    }

    /// The `Host` names `/ws` opens for, as `main` prints them at start-up.
    pub fn accepted_hosts(&self) -> String {
        self.settings.hosts.describe()
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
                    BUS_COMMANDS | BUS_SUBSCRIBER => {
                        if let Some(bus) = self.bus.as_mut() {
                            bus.ready(self.poll.registry(), event, clock.instant);
                        }
                    }
                    token => {
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        if readable && let Some(slot) = self.slots.get_mut(&token) {
                            slot.conn.readable_again();
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
            self.run_bus(clock);
            self.flush(clock);
            if let Some(deadline) = self.shutdown_deadline
                && (self.slots.is_empty() || clock.instant >= deadline)
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
        let bus = self.bus.as_ref().and_then(ClusterBus::next_deadline);
        for deadline in [self.accept_paused_until, self.shutdown_deadline, bus]
            .into_iter()
            .flatten()
        {
            wake = wake.min(deadline);
        }
        wake.saturating_duration_since(now)
    }

    /// Reads up to [`READ_BUDGET`] messages from `token`, routing each as it comes: the router
    /// writes what it forwards straight into the recipients' outboxes. A connection with more
    /// to read after its budget is read again later in the turn.
    fn on_readable(&mut self, token: Token, clock: Clock) {
        let id = token.0 as ConnId;
        let mut outcome = Outcome::ReadAgain;
        let mut replies_queued = false;
        for _ in 0..READ_BUDGET {
            let (slots, context) = self.slots_in_context(clock.instant);
            let Some(slot) = slots.get_mut(&token) else {
                return;
            };
            let inbound = slot.conn.read_next(&context);
            match inbound {
                Inbound::Text(text) => {
                    self.counters.frames_in += 1;
                    self.counters.bytes_in += text.len() as u64;
                    self.call_router(clock, |router, out| {
                        router.text(id, text.as_str(), clock.router, out)
                    });
                }
                Inbound::Binary => {
                    self.counters.frames_in += 1;
                    self.call_router(clock, |router, out| router.binary(id, clock.router, out));
                }
                // Pongs and close echoes wait in the outbox for the turn's flush.
                Inbound::Control => replies_queued = true,
                Inbound::Then(done) => {
                    outcome = done;
                    break;
                }
            }
        }
        if replies_queued && let Some(slot) = self.slots.get_mut(&token) {
            self.flush_list.add(token, slot);
        }
        self.carry_out(token, outcome, clock);
    }

    fn on_writable(&mut self, token: Token, clock: Clock) {
        let (slots, context) = self.slots_in_context(clock.instant);
        if let Some(slot) = slots.get_mut(&token) {
            let outcome = slot.conn.on_writable(&context);
            self.carry_out(token, outcome, clock);
        }
    }

    /// Does what a connection answered. The one place that acts on an [`Outcome`]; an admitted
    /// upgrade drives the connection on, and what that answers is carried out in turn.
    fn carry_out(&mut self, token: Token, mut outcome: Outcome, clock: Clock) {
        loop {
            let Some(slot) = self.slots.get_mut(&token) else {
                return;
            };
            // Any drive may have ended the first request head: its half-open place goes back.
            if !slot.conn.half_open()
                && let Some(addr) = slot.holds_head.take()
            {
                self.heads.release(addr);
            }
            match outcome {
                Outcome::Wait => self.sync_interest(token),
                Outcome::Flush => self.flush_list.add(token, slot),
                Outcome::ReadAgain => {
                    self.read_again.push(token);
                    self.sync_interest(token);
                }
                Outcome::UpgradeRequested => {
                    self.admit_upgrade(token);
                    let (slots, context) = self.slots_in_context(clock.instant);
                    let Some(slot) = slots.get_mut(&token) else {
                        return;
                    };
                    outcome = slot.conn.on_writable(&context);
                    continue;
                }
                Outcome::Opened => {
                    log::debug!("connection {} opened a WebSocket", token.0);
                    slot.in_router = true;
                    let client = slot.conn.client();
                    self.router
                        .open_from(token.0 as ConnId, client, clock.router);
                    self.counters.websockets += 1;
                    self.sync_interest(token);
                    // Frames may have arrived with the upgrade or while the 101 was written;
                    // with edge-triggered readiness no new event would report them.
                    self.read_again.push(token);
                }
                Outcome::Closing(code) => {
                    log::debug!("connection {} is closing with {code}", token.0);
                    self.flush_list.add(token, slot);
                    self.call_router(clock, |router, out| {
                        router.closed(token.0 as ConnId, clock.router, out)
                    });
                }
                Outcome::Drop => self.drop_connection(token, clock),
            }
            return;
        }
    }

    /// What the bus brought goes to the router, what the router answered goes to the bus, then
    /// this turn's records leave: one PUBLISH per node.
    fn run_bus(&mut self, clock: Clock) {
        for _ in 0..BUS_ROUNDS {
            let Some(bus) = self.bus.as_mut() else {
                return;
            };
            let news = bus.exchange(self.poll.registry(), clock.instant);
            if news.is_empty() {
                break;
            }
            self.call_router(clock, |router, out| {
                for batch in &news.batches {
                    let (origin, records) = crate::bus::records(batch);
                    for record in records {
                        router.from_node(record, origin.as_deref(), clock.router, out);
                    }
                }
                for &(rid, failure) in &news.failures {
                    router.bus_failed(rid, failure, clock.router, out);
                }
                for &id in &news.lost_claims {
                    router.claim_lost(id, out);
                }
                for &id in &news.claimed {
                    router.claim_confirmed(id, out);
                }
                for (rid, state, queue) in &news.checkpoints {
                    router.checkpoint_loaded(*rid, state.as_deref(), queue, clock.router, out);
                }
                for &rid in &news.stored {
                    router.bus_stored(rid, clock.router, out);
                }
                for &(handle, previous) in &news.moved {
                    router.handle_moved(handle, previous, clock.router, out);
                }
                for &(handle, listener) in &news.handles_lost {
                    router.handle_lost(handle, listener, out);
                }
                for (handle, letters) in &news.letters {
                    router.stored_letters(*handle, letters, clock.router, out);
                }
                for (handle, letter) in &news.unkept {
                    router.letter_unkept(*handle, letter, clock.router, out);
                }
            });
        }
        // What changed this turn is saved once, then everything leaves.
        self.call_router(clock, |router, out| router.checkpoint(clock.router, out));
        if let Some(bus) = self.bus.as_mut() {
            bus.flush(self.poll.registry());
        }
    }

    /// The router with a sink over the slots: split borrows of `self`.
    fn router_and_sink(&mut self, clock: Clock) -> (&mut Router<OsEntropy>, Deliver<'_>) {
        let out = Deliver {
            bus: self.bus.as_mut(),
            slots: &mut self.slots,
            flush_list: &mut self.flush_list,
            doomed: &mut self.doomed,
            counters: &mut self.counters,
            backlog_total: &self.settings.backlog_total,
            now: clock.instant,
        };
        (&mut self.router, out)
    }

    /// Calls the router with a sink over the slots, then drops the connections the call pushed
    /// past their outbox ceiling.
    fn call_router<R>(
        &mut self,
        clock: Clock,
        call: impl FnOnce(&mut Router<OsEntropy>, &mut Deliver<'_>) -> R,
    ) -> R {
        let (router, mut out) = self.router_and_sink(clock);
        let result = call(router, &mut out);
        self.drop_doomed(clock);
        result
    }

    /// Drops the connections whose outbox passed its ceiling. Dropping one can make the router
    /// speak again (PRESENCE to its friends) and doom more: the loop keeps such a cascade
    /// iterative rather than one stack frame per drop.
    fn drop_doomed(&mut self, clock: Clock) {
        while let Some(token) = self.doomed.pop() {
            self.forget_connection(token, clock);
        }
    }

    /// Closes `token`'s socket and tells the router, then drops what that doomed.
    fn drop_connection(&mut self, token: Token, clock: Clock) {
        self.forget_connection(token, clock);
        self.drop_doomed(clock);
    }

    /// Closes `token`'s socket, gives back its address budgets and tells the router if it knew
    /// the connection; connections the router's answer doomed are left to
    /// [`Server::drop_doomed`].
    fn forget_connection(&mut self, token: Token, clock: Clock) {
        let Some(mut slot) = self.slots.remove(&token) else {
            return;
        };
        if let Some(addr) = slot.holds_socket.take() {
            self.sockets.release(addr);
        }
        if let Some(addr) = slot.holds_head.take() {
            self.heads.release(addr);
        }
        if let Some(source) = slot.conn.source() {
            let _ = self.poll.registry().deregister(source);
        }
        log::debug!("connection {} closed", token.0);
        let in_router = slot.in_router;
        // The socket closes and the outbox's backlog leaves the total before the router hears.
        drop(slot);
        if in_router {
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
            .should_trim(self.slots.len(), self.counters.frames_out, clock.instant)
        {
            memory::trim();
        }
        let (slots, context) = self.slots_in_context(clock.instant);
        let mut due = Vec::new();
        for (&token, slot) in slots.iter_mut() {
            // The router is borrowed through the context while the slots are borrowed mutably.
            let connected = context.metrics.router.is_connected(token.0 as ConnId);
            match slot.conn.tick(connected, &context) {
                // A deadline may have changed the loop's facts without asking for more: a 408
                // the socket refused wants WRITABLE, and the head it ended frees its place.
                Outcome::Wait if !slot.out_of_date() => {}
                outcome => due.push((token, outcome)),
            }
        }
        for (token, outcome) in due {
            self.carry_out(token, outcome, clock);
        }
    }

    /// Flushes each connection on the list, once. Dropping a dead one may put others on the
    /// list (PRESENCE to its friends): they are flushed in the same turn.
    fn flush(&mut self, clock: Clock) {
        while !self.flush_list.is_empty() {
            let listed = self.flush_list.take();
            let mut dead = Vec::new();
            for &token in &listed {
                let Some(slot) = self.slots.get_mut(&token) else {
                    continue;
                };
                slot.flush_listed = false;
                match slot.conn.flush() {
                    Outcome::Drop => dead.push(token),
                    _ => self.sync_interest(token),
                }
            }
            self.flush_list.reuse(listed);
            for token in dead {
                self.drop_connection(token, clock);
            }
        }
    }

    /// Registers WRITABLE interest exactly while a connection has output the socket refused.
    fn sync_interest(&mut self, token: Token) {
        let Some(slot) = self.slots.get_mut(&token) else {
            return;
        };
        let want = slot.conn.wants_write();
        if want == slot.writable_registered {
            return;
        }
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        slot.writable_registered = want;
        if let Some(source) = slot.conn.source() {
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
/// core's 1 MiB L2 cache and the outboxes the allocator hands out turn after turn stay warm; a
/// batch of a thousand busy connections would be tens of MB, beyond every cache. With few
/// connections a turn rarely has 64 events, so the cap costs them nothing (BENCHMARKS.md).
const EVENTS_PER_TURN: usize = 64;

/// Which `Host` values open `/ws` (see [`HostRule`]): every one with `--public-host '*'`;
/// else the `--public-host` names and the certificate's; when neither exists and the server
/// listens beyond loopback without TLS, this machine's own names (`own_names`, read only then).
fn host_rule(
    public_hosts: &[String],
    listen: SocketAddr,
    tls: Option<&TlsAcceptor>,
    own_names: impl FnOnce() -> Vec<String>,
) -> HostRule {
    if public_hosts
        .iter()
        .any(|name| name == crate::http::ANY_HOST)
    {
        return HostRule::any();
    }
    let own_names = if tls.is_none() && public_hosts.is_empty() && !listen.ip().is_loopback() {
        own_names()
    } else {
        Vec::new()
    };
    let certificate_names = tls.into_iter().flat_map(|acceptor| acceptor.dns_names());
    HostRule::names(
        public_hosts
            .iter()
            .chain(&own_names)
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
    fn beyond_loopback_without_tls_or_names_only_the_machine_s_own_names_open_ws() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let own = || vec!["pi".to_string(), "pi.local".to_string()];
        let unused = || -> Vec<String> { panic!("the machine's names are not needed here") };

        let lan = host_rule(&[], everywhere, None, own);
        assert!(!lan.accepts_any());
        for host in [
            "pi:8080",
            "PI.local",
            "192.168.1.20:8080",
            "[fe80::1]",
            "localhost",
        ] {
            assert!(lan.allows(Some(host)), "{host}");
        }
        for host in ["evil.example", "pi.evil.example", "local"] {
            assert!(!lan.allows(Some(host)), "{host}");
        }

        let on_loopback = host_rule(&[], loopback, None, unused);
        assert!(on_loopback.allows(Some("localhost:8080")));
        assert!(!on_loopback.allows(Some("pi")));

        let named = ["chat.example.org".to_string()];
        let rule = host_rule(&named, everywhere, None, unused);
        assert!(!rule.accepts_any());
        assert!(rule.allows(Some("chat.example.org:443")));
        assert!(!rule.allows(Some("pi")));
        assert!(!rule.allows(Some("evil.example")));

        let any = ["chat.example.org".to_string(), "*".to_string()];
        assert!(host_rule(&any, loopback, None, unused).accepts_any());
        assert!(host_rule(&any[1..], everywhere, None, unused).allows(Some("evil.example")));
    }
}
