//! Admitting connections: accepting sockets against the open-socket ceiling and the per-address
//! budgets (open sockets, half-open heads), and admitting a WebSocket upgrade that comes through
//! a trusted proxy against its client's budget.

use std::io;
use std::net::IpAddr;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::slot::Slot;
use super::{ACCEPT_BACKOFF, Clock, Server};
use crate::address::ClientAddr;
use crate::connection::{Connection, Endpoint};
use crate::socket_options;
use crate::tls::Transport;

impl Server {
    /// Takes every pending connection from `endpoint`'s listener.
    pub(super) fn accept(&mut self, endpoint: Endpoint, clock: Clock) {
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
        if self.slots.len() >= self.max_open_sockets {
            self.counters.refused += 1;
            // Debug, not warn: a flood would write one line per refused socket (see the metrics).
            log::debug!("refusing a connection: {} sockets open", self.slots.len());
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
        let conn = Connection::accepted(transport, ip, endpoint, clock.instant);
        self.slots
            .insert(token, Slot::new(conn, counted.then_some(addr)));
    }

    /// A valid upgrade is about to be answered with `101`. A connection that holds no socket
    /// budget yet (a trusted proxy's) now takes its client's, or gets `429 Too Many Requests`
    /// when that client is at its limit. The caller then drives the connection on.
    pub(super) fn admit_upgrade(&mut self, token: Token) {
        let Some(slot) = self.slots.get_mut(&token) else {
            return;
        };
        if slot.holds_socket.is_some() {
            return;
        }
        let client = slot.conn.client();
        log::debug!(
            "connection {} is for client {} (forwarded by {})",
            token.0,
            client.ip(),
            slot.conn.peer()
        );
        if self.sockets.try_acquire(client) {
            slot.holds_socket = Some(client);
        } else {
            self.counters.refused += 1;
            log::debug!("refusing a WebSocket (429): its client is at its socket limit");
            slot.conn.refuse_upgrade(429, self.settings.tls);
        }
    }
}
