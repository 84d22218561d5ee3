//! One TCP connection's lifecycle, driven by the event loop.
//!
//! ```text
//!   accept ──► Http: reading a request head ──► writing a static response ──► (keep-alive) reading …
//!                    │                                                    └─► closed
//!                    └─► /ws upgrade: writing the 101 ──► WebSocket: open ──► closing ──► closed
//! ```
//!
//! A [`Connection`] owns its socket and never touches the router or the poll registry. The loop
//! drives it four ways, and every one answers with the same [`Outcome`]: what the loop must do
//! next (wait, flush at the end of the turn, read again, admit an upgrade, tell the router a
//! WebSocket opened or is closing, drop it).
//! - [`Connection::read_next`]: the socket is readable. Yields one WebSocket message at a time
//!   ([`Inbound`]) for the router, then the outcome.
//! - [`Connection::on_writable`]: the socket is writable again.
//! - [`Connection::tick`]: the periodic sweep checks its deadlines.
//! - [`Connection::flush`]: the end of the loop turn puts queued WebSocket output on the socket.
//!
//! HTTP output is written as soon as it exists (a response to a request just read); WebSocket
//! output waits in its [`Outbox`](crate::outbox::Outbox) for the turn's one flush, so a burst of frames to one
//! connection costs one `write`.
//!
//! Memory per connection is bounded: the request head buffer by [`http::MAX_HEAD_BYTES`], static
//! bodies are `&'static` (shared), WebSocket input by [`ws_config`], WebSocket output by
//! [`outbox_ceiling`] (and freed whenever it is all sent, see [`crate::outbox`]), and TLS by
//! [`crate::tls::TLS_BUFFER_LIMIT`]. The socket is a [`Transport`] (plain TCP or TLS), so a TLS
//! handshake happens inside the first reads of the HTTP state, bounded by [`HEAD_DEADLINE`].

mod http_exchange;
mod websocket;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tungstenite::Utf8Bytes;
use tungstenite::protocol::WebSocketConfig;

use crate::address::ClientAddr;
use crate::assets::Assets;
use crate::http;
use crate::outbox::BacklogTotal;
use crate::protocol::ServerFrame;
use crate::tls::Transport;
use http_exchange::HttpState;
use websocket::WsState;

/// A request head must arrive complete within this time (PROTOCOL.md §7: 408).
pub const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// A response (static files are at most a few hundred KiB) must be read within this time.
pub const RESPONSE_DEADLINE: Duration = Duration::from_secs(60);
/// A WebSocket must send CONNECT within this time (PROTOCOL.md §3: close 1008).
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// How long a closing WebSocket may take to echo our close frame before we drop it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Messages read from one connection per readiness event, so one busy client cannot starve the
/// others; the loop comes back to it in the same iteration's second pass.
pub const READ_BUDGET: usize = 64;

/// Settings the connection needs from the server's configuration.
pub struct Settings<'a> {
    pub assets: &'a Assets,
    pub allow_origins: &'a [String],
    /// Which `Host` values may open `/ws` (DNS rebinding).
    pub hosts: http::HostRule,
    /// Peers whose `X-Forwarded-For` names the client of a WebSocket.
    pub trusted_proxies: http::TrustedProxies,
    pub ws_config: WebSocketConfig,
    /// Unsent output bytes past which a WebSocket is dropped ([`outbox_ceiling`]).
    pub outbox_ceiling: usize,
    pub tls: bool,
    /// Shared by every WebSocket's outbox: their unsent bytes together.
    pub backlog_total: BacklogTotal,
    pub ping_interval: Option<Duration>,
    pub idle_timeout: Option<Duration>,
}

/// The metrics page, rendered on request from what the loop and the router count.
pub trait MetricsPage {
    fn render(&self) -> String;
}

/// What a connection needs from the loop while it is driven.
pub struct Context<'a, M> {
    pub settings: &'a Settings<'a>,
    /// Only a connection on the metrics listener asks for it.
    pub metrics: M,
    /// The loop turn's time.
    pub now: Instant,
}

/// The WebSocket configuration for a server whose largest message is `max_message_bytes`.
///
/// The read buffer is most of what an idle connection costs (its resident memory is about the
/// read buffer plus 0.6 KiB). Tungstenite writes only control frames, and straight into the
/// [`Outbox`](crate::outbox::Outbox): a write buffer of 0 hands each one over at once.
pub fn ws_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// The unsent output a WebSocket may hold, for a server whose router may leave
/// `max_unsent_bytes` unflushed plus a resume queue of `max_queue_bytes`: only a client that does
/// not read its own replies gets past it, and the loop then drops it.
pub fn outbox_ceiling(
    max_message_bytes: usize,
    max_unsent_bytes: usize,
    max_queue_bytes: usize,
) -> usize {
    let frame_overhead = 1024 + 14;
    max_unsent_bytes + max_queue_bytes + 2 * (max_message_bytes + frame_overhead) + 64 * 1024
}

/// What the loop must do after it drove a [`Connection`]: the one answer of every method that
/// drives one.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing until the next readiness event or deadline (with WRITABLE interest registered
    /// exactly while [`Connection::wants_write`]).
    Wait,
    /// WebSocket output was queued: put the connection on the turn's flush list.
    Flush,
    /// The read budget ran out with input possibly left: read again before polling.
    ReadAgain,
    /// A valid WebSocket upgrade arrived and its `101` is queued but not written: the loop
    /// admits it (the per-address socket limit, for the client [`Connection::client`] names)
    /// and drives the connection on with [`Connection::on_writable`], or refuses it with
    /// [`Connection::refuse_upgrade`] first.
    UpgradeRequested,
    /// The WebSocket handshake completed: tell the router, and read what came with it.
    Opened,
    /// The WebSocket failed (a protocol error or a deadline) and its close frame with this code
    /// is queued: tell the router the session dropped, then flush.
    Closing(u16),
    /// Close the socket and forget the connection (and tell the router, if it knew it).
    Drop,
}

/// Which listener accepted a connection: they serve different things.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The web client, `/healthz` and `/ws`.
    Public,
    /// `GET /metrics` only (`--metrics-listen`).
    Metrics,
}

/// What one read of a connection gave the loop.
pub enum Inbound {
    /// A complete text message on an open WebSocket. It shares tungstenite's read buffer, so
    /// routing it copies nothing until the payload is written into the recipient's outbox.
    Text(Utf8Bytes),
    Binary,
    /// A control frame (ping, pong, close) was handled; an automatic reply may wait for the
    /// flush. Reading goes on.
    Control,
    /// Nothing more to read now: what the loop should do with the connection. An HTTP
    /// connection always answers this.
    Then(Outcome),
}

/// Why a frame could not be queued for sending.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// Not an open WebSocket (closing, or still HTTP): the frame is dropped.
    NotOpen,
    /// The outbox is at its ceiling: the peer does not read. Drop the connection.
    Full,
}

pub struct Connection {
    state: State,
    endpoint: Endpoint,
    /// The socket's peer address.
    peer: IpAddr,
    /// Who the per-address limits and the router count this connection against: the peer, or,
    /// from the upgrade on, the client a trusted proxy named in `X-Forwarded-For`.
    client: ClientAddr,
}

// Nearly every connection spends its life as a WebSocket, so boxing that variant would only add
// an allocation and a pointer chase per connection; the HTTP state's slack is paid briefly.
#[allow(clippy::large_enum_variant)]
enum State {
    Http(HttpState),
    WebSocket(WsState),
    /// Only inside the upgrade, while the socket moves from the HTTP state to the WebSocket;
    /// never observed outside it.
    Upgrading,
}

impl Connection {
    pub fn accepted(
        stream: Transport,
        peer: IpAddr,
        endpoint: Endpoint,
        now: Instant,
    ) -> Connection {
        Connection {
            endpoint,
            peer,
            client: ClientAddr::new(peer),
            state: State::Http(HttpState::new(stream, now)),
        }
    }

    /// The socket's peer address.
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// Who this connection counts against (see [`Outcome::UpgradeRequested`]).
    pub fn client(&self) -> ClientAddr {
        self.client
    }

    /// Accepted and still without a complete first request head (a TLS handshake included).
    pub fn half_open(&self) -> bool {
        matches!(&self.state, State::Http(http) if !http.head_seen)
    }

    /// Replaces the `101` of an [`Outcome::UpgradeRequested`] with an error `status` that closes
    /// the connection. Does nothing once the `101` has started going out.
    pub fn refuse_upgrade(&mut self, status: u16, tls: bool) {
        if let State::Http(http) = &mut self.state
            && http.upgrade_unanswered()
        {
            http.respond_and_close(status, tls);
        }
    }

    /// Whether the loop should keep WRITABLE interest registered.
    pub fn wants_write(&self) -> bool {
        match &self.state {
            // TLS records (a handshake reply, the end of a response) may wait with no response
            // pending.
            State::Http(http) => http.output.is_some() || http.stream.wants_write(),
            // Not merely queued output: a queue the socket has not refused yet is flushed at the
            // end of the loop turn, and WRITABLE interest for it would cost two `epoll_ctl`.
            State::WebSocket(ws) => ws.want_write || ws.socket.get_ref().transport().wants_write(),
            State::Upgrading => false,
        }
    }

    /// A readiness event arrived: reads must ask the socket again (see `tls::PlainStream`).
    pub fn readable_again(&mut self) {
        if let Some(transport) = self.source() {
            transport.readable_again();
        }
    }

    pub fn source(&mut self) -> Option<&mut Transport> {
        match &mut self.state {
            State::Http(http) => Some(&mut http.stream),
            State::WebSocket(ws) => Some(ws.socket.get_mut().transport_mut()),
            State::Upgrading => None,
        }
    }

    /// The socket is readable: advance the HTTP exchange, or read one WebSocket message. The
    /// loop calls it again (up to [`READ_BUDGET`] times) until it answers [`Inbound::Then`],
    /// handing each message to the router in between.
    pub fn read_next(&mut self, context: &Context<'_, impl MetricsPage>) -> Inbound {
        match &mut self.state {
            State::Http(_) => Inbound::Then(self.drive_http(context)),
            State::WebSocket(ws) => ws.read_next(context.now),
            State::Upgrading => Inbound::Then(Outcome::Drop),
        }
    }

    /// The socket is writable (or an upgrade was admitted): continue the HTTP exchange. A
    /// WebSocket's output goes out with the turn's flush.
    pub fn on_writable(&mut self, context: &Context<'_, impl MetricsPage>) -> Outcome {
        match &mut self.state {
            State::Http(_) => self.drive_http(context),
            State::WebSocket(_) => Outcome::Flush,
            State::Upgrading => Outcome::Drop,
        }
    }

    /// Queues one text frame; it reaches the socket at the next [`Connection::flush`], or sooner
    /// when 64 KiB wait (see [`crate::outbox`]).
    pub fn send_frame(&mut self, frame: &ServerFrame<'_>) -> Result<(), SendError> {
        let State::WebSocket(ws) = &mut self.state else {
            return Err(SendError::NotOpen);
        };
        // Nothing may follow a close frame (RFC 6455 §5.5.1), ours or the echo of the peer's.
        if ws.closing_deadline.is_some() || !ws.socket.can_write() {
            return Err(SendError::NotOpen);
        }
        let outbox = ws.socket.get_mut();
        if outbox.unsent() + frame.len() > ws.outbox_ceiling {
            return Err(SendError::Full);
        }
        outbox.push_frame(frame);
        Ok(())
    }

    /// Starts the closing handshake with `code`; the connection is dropped once the peer answers
    /// or [`CLOSE_GRACE`] passes.
    pub fn close_websocket(&mut self, code: u16, reason: &'static str, now: Instant) {
        if let State::WebSocket(ws) = &mut self.state {
            ws.start_close(code, reason, now);
        }
    }

    /// The server is shutting down: a WebSocket starts closing with 1001 (and is flushed), an
    /// HTTP exchange is dropped.
    pub fn shut_down(&mut self, now: Instant) -> Outcome {
        match &mut self.state {
            State::WebSocket(ws) => {
                ws.start_close(1001, "server shutting down", now);
                Outcome::Flush
            }
            State::Http(_) | State::Upgrading => Outcome::Drop,
        }
    }

    /// WebSocket output queued and not yet on the socket.
    pub fn unsent(&self) -> usize {
        match &self.state {
            State::WebSocket(ws) => ws.socket.get_ref().unsent(),
            _ => 0,
        }
    }

    /// Puts buffered WebSocket output on the socket: [`Outcome::Wait`], or [`Outcome::Drop`]
    /// when the connection is finished (closed, or a write failed).
    pub fn flush(&mut self) -> Outcome {
        match &mut self.state {
            State::WebSocket(ws) => ws.flush(),
            // HTTP output is written as it is made; what the socket refused waits for WRITABLE.
            State::Http(_) => Outcome::Wait,
            State::Upgrading => Outcome::Drop,
        }
    }

    /// Checks this connection's deadlines. `connected` says whether the router has a session for
    /// it (a WebSocket without one is closed after [`CONNECT_DEADLINE`]).
    pub fn tick(&mut self, connected: bool, context: &Context<'_, impl MetricsPage>) -> Outcome {
        match &mut self.state {
            State::Http(http) => match http.tick(context.now, context.settings) {
                // A 408 was queued: write it now.
                Outcome::Flush => self.drive_http(context),
                other => other,
            },
            State::WebSocket(ws) => ws.tick(context.now, connected, context.settings),
            State::Upgrading => Outcome::Drop,
        }
    }
}
