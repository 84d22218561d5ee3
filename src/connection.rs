//! One TCP connection's lifecycle, driven by the event loop.
//!
//! ```text
//!   accept ──► Http: reading a request head ──► writing a static response ──► (keep-alive) reading …
//!                    │                                                    └─► closed
//!                    └─► /ws upgrade: writing the 101 ──► WebSocket: open ──► closing ──► closed
//! ```
//!
//! A [`Connection`] owns its socket and never touches the router or the poll registry: every
//! method returns an [`Outcome`] that tells the loop what to do next (nothing, admit a WebSocket
//! upgrade against the per-address limits, tell the router a WebSocket opened, read again later,
//! or drop the connection). Deadlines are checked by
//! [`Connection::tick`], called from the loop's periodic sweep.
//!
//! Memory per connection is bounded: the request head buffer by [`http::MAX_HEAD_BYTES`], static
//! bodies are `&'static` (shared), WebSocket input by [`ws_config`], WebSocket output by
//! [`outbox_ceiling`] (and freed whenever it is all sent, see [`crate::outbox`]), and TLS by
//! [`crate::tls::TLS_BUFFER_LIMIT`]. The socket is a [`Transport`] (plain TCP or TLS), so a TLS
//! handshake happens inside the first reads of the HTTP state, bounded by [`HEAD_DEADLINE`].

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message, Utf8Bytes, WebSocket};

use crate::address::ClientAddr;
use crate::assets::Assets;
use crate::http;
use crate::outbox::{BacklogTotal, Outbox};
use crate::protocol::ServerFrame;
use crate::tls::Transport;

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

/// The WebSocket configuration for a server whose largest message is `max_message_bytes`.
///
/// The read buffer is most of what an idle connection costs (its resident memory is about the
/// read buffer plus 0.6 KiB). Tungstenite writes only control frames, and straight into the [`Outbox`]: a write
/// buffer of 0 hands each one over at once.
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

/// What the loop must do after a call into a [`Connection`].
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing; wait for the next readiness event or deadline.
    Keep,
    /// A valid WebSocket upgrade arrived and its `101` is queued but not written: the loop
    /// admits it (the per-address socket limit, for the client [`Connection::client`] names)
    /// and drives the connection on, or refuses it with [`Connection::refuse_upgrade`] first.
    UpgradeRequested,
    /// The WebSocket handshake completed: tell the router.
    Opened,
    /// The read budget ran out with input possibly left: read again before polling.
    ReadAgain,
    /// Close the socket and forget the connection (and tell the router, if it was a WebSocket).
    Drop,
    /// A metrics connection asked for `/metrics`: render the page and hand it to
    /// [`Connection::send_response`].
    MetricsRequested,
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
    /// A frame arrived whose handling needs no router (ping, pong, close): the loop only needs to
    /// flush the automatic reply.
    Control,
    /// The connection failed at the WebSocket level and we started closing it with this code:
    /// the router must treat the session as dropped. Nothing more is read from it.
    Failed(u16),
    /// Nothing (more) for the router: what the loop should do with the connection. An HTTP
    /// connection always answers this.
    Done(Outcome),
}

/// Why a frame could not be queued for sending.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// Not an open WebSocket (closing, or still HTTP): the frame is dropped.
    NotOpen,
    /// The outbox is at its ceiling: the peer does not read. Drop the connection.
    Full,
}

/// The result of [`Connection::flush`].
#[derive(Debug, PartialEq, Eq)]
pub enum Flush {
    /// Everything is on the socket.
    Done,
    /// The socket is full; wait for a writable event.
    Blocked,
    /// The connection is finished (closed, or a write failed): drop it.
    Dead,
}

pub struct Connection {
    state: State,
    endpoint: Endpoint,
    /// The socket's peer address.
    pub peer: IpAddr,
    /// Who the per-address limits and the router count this connection against: the peer, or,
    /// from the upgrade on, the client a trusted proxy named in `X-Forwarded-For`.
    pub client: ClientAddr,
    /// The address whose open-socket budget this connection holds, released when it closes.
    /// `None` while a trusted proxy's connection is still HTTP (it may carry several clients'
    /// requests in turn) and when no budget was taken.
    pub holds_socket: Option<ClientAddr>,
    /// The address whose half-open budget this connection holds, released once its first
    /// request head is complete ([`Connection::half_open`]) or when it closes.
    pub holds_head: Option<ClientAddr>,
    /// Whether WRITABLE interest is registered; the loop re-registers only when this changes.
    pub registered_writable: bool,
    /// Whether the loop has this connection on its list to flush at the end of the iteration.
    pub dirty: bool,
    /// Whether a frame for it was refused (its outbox passed the ceiling) and the loop will drop
    /// it: nothing more is queued, so the client never sees a later frame without an earlier.
    pub doomed: bool,
}

// Nearly every connection spends its life as a WebSocket, so boxing that variant would only add
// an allocation and a pointer chase per connection; the HTTP state's slack is paid briefly.
#[allow(clippy::large_enum_variant)]
enum State {
    Http(HttpState),
    WebSocket(WsState),
    /// Between states while ownership of the socket moves; never observed outside a method.
    Moving,
}

struct HttpState {
    stream: Transport,
    input: Vec<u8>,
    output: Option<Pending>,
    /// When the current request head started (or the connection was accepted).
    head_started: Instant,
    /// Whether this connection already completed a request (then a silent keep-alive connection
    /// that times out is closed without a 408).
    served_one: bool,
    /// Whether its first request head ended (complete, refused, or timed out): from then on the
    /// connection is no longer half-open.
    head_seen: bool,
}

struct Pending {
    head: Vec<u8>,
    body: &'static [u8],
    written: usize,
    then: AfterResponse,
}

enum AfterResponse {
    KeepAlive,
    Close,
    /// The 101 was written: become a WebSocket, with these bytes already read after the head.
    Upgrade(Vec<u8>),
}

struct WsState {
    socket: WebSocket<Outbox>,
    /// [`Settings::outbox_ceiling`], kept here because sending needs no settings.
    outbox_ceiling: usize,
    opened: Instant,
    last_heard: Instant,
    pinged: bool,
    /// Set when we started closing: the connection is dropped once this passes.
    closing_deadline: Option<Instant>,
    /// False after a read error after which tungstenite must not be read again.
    readable: bool,
    /// A flush hit `WouldBlock`: data is still buffered.
    want_write: bool,
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
            holds_socket: None,
            holds_head: None,
            state: State::Http(HttpState {
                stream,
                input: Vec::new(),
                output: None,
                head_started: now,
                served_one: false,
                head_seen: false,
            }),
            registered_writable: false,
            dirty: false,
            doomed: false,
        }
    }

    pub fn is_websocket(&self) -> bool {
        matches!(self.state, State::WebSocket(_))
    }

    /// Accepted and still without a complete first request head (a TLS handshake included).
    pub fn half_open(&self) -> bool {
        matches!(&self.state, State::Http(http) if !http.head_seen)
    }

    /// Replaces the `101` of an [`Outcome::UpgradeRequested`] with an error `status` that closes
    /// the connection. Does nothing once the `101` has started going out.
    pub fn refuse_upgrade(&mut self, status: u16, tls: bool) {
        if let State::Http(http) = &mut self.state
            && let Some(pending) = &http.output
            && matches!(pending.then, AfterResponse::Upgrade(_))
            && pending.written == 0
        {
            http.respond(http::error_response(status, tls), AfterResponse::Close);
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
            State::Moving => false,
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
            State::Moving => None,
        }
    }

    /// The socket is readable: advance the HTTP exchange, or read one WebSocket message. The
    /// loop calls it again (up to [`READ_BUDGET`] times) until it answers [`Inbound::Done`] or
    /// [`Inbound::Failed`], handing each message to the router in between.
    pub fn read_next(&mut self, now: Instant, settings: &Settings<'_>) -> Inbound {
        match &mut self.state {
            State::Http(_) => Inbound::Done(self.drive_http(now, settings)),
            State::WebSocket(ws) => ws.read_next(now),
            State::Moving => Inbound::Done(Outcome::Drop),
        }
    }

    /// The socket is writable (or a deadline queued a response): continue the HTTP exchange.
    /// WebSocket output is not written here: the loop flushes it once per iteration.
    pub fn on_writable(&mut self, now: Instant, settings: &Settings<'_>) -> Outcome {
        match &mut self.state {
            State::Http(_) => self.drive_http(now, settings),
            State::WebSocket(_) => Outcome::Keep,
            State::Moving => Outcome::Drop,
        }
    }

    /// Sends `response` on an HTTP connection, then closes it (the metrics page).
    pub fn send_response(&mut self, response: http::Response) {
        if let State::Http(http) = &mut self.state {
            http.respond(response, AfterResponse::Close);
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

    /// WebSocket output queued and not yet on the socket.
    pub fn unsent(&self) -> usize {
        match &self.state {
            State::WebSocket(ws) => ws.socket.get_ref().unsent(),
            _ => 0,
        }
    }

    /// Writes buffered WebSocket output to the socket.
    pub fn flush(&mut self) -> Flush {
        match &mut self.state {
            State::WebSocket(ws) => ws.flush(),
            State::Http(http) if http.output.is_some() => Flush::Blocked,
            State::Http(_) => Flush::Done,
            State::Moving => Flush::Dead,
        }
    }

    /// Checks this connection's deadlines. `connected` says whether the router has a session for
    /// it (a WebSocket without one is closed after [`CONNECT_DEADLINE`]).
    pub fn tick(&mut self, now: Instant, connected: bool, settings: &Settings<'_>) -> Tick {
        match &mut self.state {
            State::Http(http) => {
                let waited = now.saturating_duration_since(http.head_started);
                if http.output.is_some() {
                    // A client that never reads its response must not hold the socket forever.
                    return if waited >= RESPONSE_DEADLINE {
                        Tick::Drop
                    } else {
                        Tick::Nothing
                    };
                }
                if waited < HEAD_DEADLINE {
                    return Tick::Nothing;
                }
                if http.served_one && http.input.is_empty() {
                    return Tick::Drop;
                }
                http.head_seen = true;
                http.respond(
                    http::error_response(408, settings.tls),
                    AfterResponse::Close,
                );
                Tick::Advance
            }
            State::WebSocket(ws) => ws.tick(now, connected, settings),
            State::Moving => Tick::Drop,
        }
    }

    fn drive_http(&mut self, now: Instant, settings: &Settings<'_>) -> Outcome {
        loop {
            let State::Http(http) = &mut self.state else {
                return Outcome::Drop;
            };
            if http.output.is_some() {
                match http.write_pending() {
                    Err(_) => return Outcome::Drop,
                    Ok(false) => return Outcome::Keep,
                    Ok(true) => {}
                }
                match http.output.take().map(|pending| pending.then) {
                    Some(AfterResponse::Close) | None => {
                        http.stream.finish();
                        return Outcome::Drop;
                    }
                    Some(AfterResponse::KeepAlive) => {
                        http.head_started = now;
                        http.served_one = true;
                        continue;
                    }
                    Some(AfterResponse::Upgrade(leftover)) => {
                        return self.become_websocket(leftover, now, settings);
                    }
                }
            }
            let head = http::parse_head(&http.input);
            if !matches!(head, http::Head::Partial) {
                http.head_seen = true;
            }
            match head {
                http::Head::Complete(request) => {
                    // What follows the head is the next request, or the WebSocket's first bytes.
                    http.input.drain(..request.head_len.min(http.input.len()));
                    if http.input.is_empty() {
                        // A keep-alive connection waiting for its next request holds no buffer.
                        http.input = Vec::new();
                    }
                    if self.endpoint == Endpoint::Metrics {
                        if request.method == "GET" && request.path() == "/metrics" {
                            return Outcome::MetricsRequested;
                        }
                        http.respond(
                            http::error_response(404, settings.tls),
                            AfterResponse::Close,
                        );
                        continue;
                    }
                    let (response, then) = answer(&request, settings);
                    if matches!(then, AfterResponse::Upgrade(_)) {
                        // Bytes after the head belong to the WebSocket.
                        let leftover = std::mem::take(&mut http.input);
                        http.respond(response, AfterResponse::Upgrade(leftover));
                        // The upgrade decides who the connection belongs to for its whole life:
                        // through a trusted proxy, the client of this request.
                        self.client = settings
                            .trusted_proxies
                            .client(self.peer, request.forwarded_for.as_deref());
                        return Outcome::UpgradeRequested;
                    } else {
                        http.respond(response, then);
                    }
                }
                http::Head::TooLarge => http.respond(
                    http::error_response(431, settings.tls),
                    AfterResponse::Close,
                ),
                http::Head::Bad => http.respond(
                    http::error_response(400, settings.tls),
                    AfterResponse::Close,
                ),
                http::Head::Partial => match http.read_more() {
                    Ok(true) => {}
                    Ok(false) => return Outcome::Keep,
                    Err(_) => return Outcome::Drop,
                },
            }
        }
    }

    fn become_websocket(
        &mut self,
        leftover: Vec<u8>,
        now: Instant,
        settings: &Settings<'_>,
    ) -> Outcome {
        let State::Http(http) = std::mem::replace(&mut self.state, State::Moving) else {
            return Outcome::Drop;
        };
        let socket = WebSocket::from_partially_read(
            Outbox::new(http.stream, settings.backlog_total.clone()),
            leftover,
            Role::Server,
            Some(settings.ws_config),
        );
        self.state = State::WebSocket(WsState {
            socket,
            outbox_ceiling: settings.outbox_ceiling,
            opened: now,
            last_heard: now,
            pinged: false,
            closing_deadline: None,
            readable: true,
            want_write: false,
        });
        Outcome::Opened
    }
}

/// What a deadline check asks of the loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Tick {
    Nothing,
    /// Output was queued (a ping, a 408, a close frame): flush or drive the connection.
    Advance,
    /// The WebSocket failed its deadline and is closing with this code: tell the router the
    /// session dropped, then flush.
    Closing(u16),
    /// Drop the connection now.
    Drop,
}

/// The response to a complete request head, and what happens after it is written.
fn answer(request: &http::Request, settings: &Settings<'_>) -> (http::Response, AfterResponse) {
    if request.path() == "/ws" && request.websocket_upgrade {
        return match upgrade(request, settings) {
            Ok(response) => (response, AfterResponse::Upgrade(Vec::new())),
            Err(status) => (
                http::error_response(status, settings.tls),
                AfterResponse::Close,
            ),
        };
    }
    let response = http::respond(request, settings.assets, settings.tls);
    let then = if response.keep_alive {
        AfterResponse::KeepAlive
    } else {
        AfterResponse::Close
    };
    (response, then)
}

/// Checks the Host and the Origin and builds the `101 Switching Protocols` response, or the HTTP
/// status that refuses the upgrade.
fn upgrade(request: &http::Request, settings: &Settings<'_>) -> Result<http::Response, u16> {
    if !settings.hosts.allows(request.host.as_deref()) {
        // The name is the client's text: not logged.
        log::debug!(
            "refusing a WebSocket upgrade (421): Host is not a name this server answers to"
        );
        return Err(421);
    }
    if !http::origin_allowed(
        request.origin.as_deref(),
        request.host.as_deref(),
        settings.allow_origins,
    ) {
        return Err(403);
    }
    if request.method != "GET" {
        return Err(405);
    }
    let head = http::switching_protocols(request).map_err(http::Refusal::status)?;
    Ok(http::Response {
        head,
        body: &[],
        keep_alive: true,
    })
}

impl HttpState {
    fn respond(&mut self, response: http::Response, then: AfterResponse) {
        self.output = Some(Pending {
            head: response.head,
            body: response.body,
            written: 0,
            then,
        });
    }

    /// Writes as much of the pending response as the socket takes; `Ok(true)` when all of it.
    fn write_pending(&mut self) -> io::Result<bool> {
        let Some(pending) = &mut self.output else {
            return Ok(true);
        };
        let total = pending.head.len() + pending.body.len();
        while pending.written < total {
            let chunk = if pending.written < pending.head.len() {
                pending.head.get(pending.written..).unwrap_or_default()
            } else {
                pending
                    .body
                    .get(pending.written - pending.head.len()..)
                    .unwrap_or_default()
            };
            match self.stream.write(chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => pending.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Over TLS, `write` only handed the bytes to rustls: the response is done once the
        // records are on the socket (the connection may be dropped right after).
        match self.stream.flush() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads more of a request head; `Ok(true)` when bytes arrived, `Ok(false)` on `WouldBlock`,
    /// an error when the peer closed or the socket failed.
    fn read_more(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    // One byte over the limit is enough for parse_head to say TooLarge.
                    let room = (http::MAX_HEAD_BYTES + 1).saturating_sub(self.input.len());
                    self.input
                        .extend_from_slice(chunk.get(..n.min(room)).unwrap_or_default());
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl WsState {
    fn read_next(&mut self, now: Instant) -> Inbound {
        if !self.readable {
            // After some errors tungstenite's state is undefined and it must not be read again;
            // wait for the close frame to flush and the grace to pass.
            return Inbound::Done(Outcome::Keep);
        }
        loop {
            match self.socket.read() {
                Ok(message) => {
                    self.last_heard = now;
                    self.pinged = false;
                    return match message {
                        Message::Text(text) => Inbound::Text(text),
                        Message::Binary(_) => Inbound::Binary,
                        // Tungstenite writes the pong for a ping into the outbox itself, where
                        // `send_frame`'s ceiling check never sees it: a peer streaming pings
                        // without reading would grow the outbox without limit.
                        _ if self.socket.get_ref().unsent() > self.outbox_ceiling => {
                            log::debug!("a connection does not read its pongs: dropped");
                            Inbound::Done(Outcome::Drop)
                        }
                        // The automatic pong or close echo goes out at the next flush.
                        Message::Ping(_)
                        | Message::Pong(_)
                        | Message::Close(_)
                        | Message::Frame(_) => Inbound::Control,
                    };
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Inbound::Done(Outcome::Keep);
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(WsError::Capacity(_)) => {
                    return self.fail(1009, "message too big", now);
                }
                Err(WsError::Utf8(_)) => {
                    return self.fail(1007, "invalid UTF-8 in a text message", now);
                }
                Err(WsError::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )) => {
                    return Inbound::Done(Outcome::Drop);
                }
                Err(WsError::Protocol(_)) => {
                    return self.fail(1002, "protocol error", now);
                }
                // ConnectionClosed (the closing handshake finished), a reset, or anything else.
                // The echo of a peer's close may still wait in the outbox: best effort, as the
                // socket is closed right after.
                Err(_) => {
                    let _ = self.socket.get_mut().flush_to_socket();
                    return Inbound::Done(Outcome::Drop);
                }
            }
        }
    }

    /// Stops reading and starts closing with `code` after an error tungstenite reported.
    fn fail(&mut self, code: u16, reason: &'static str, now: Instant) -> Inbound {
        self.readable = false;
        self.start_close(code, reason, now);
        Inbound::Failed(code)
    }

    fn start_close(&mut self, code: u16, reason: &'static str, now: Instant) {
        if self.closing_deadline.is_some() {
            return;
        }
        self.closing_deadline = Some(now + CLOSE_GRACE);
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        // The close frame joins the outbox behind every frame queued before it; the loop's
        // flush sends it, and the deadline drops the connection if that never happens.
        let _ = self.socket.close(Some(frame));
    }

    fn flush(&mut self) -> Flush {
        // Tungstenite's pending control frames join the outbox first. Its error after a finished
        // closing handshake still lets the outbox (the close echo) go out before the drop.
        let control = self.socket.flush();
        match self.socket.get_mut().flush_to_socket() {
            Ok(()) => {
                self.want_write = false;
                if control.is_ok() {
                    Flush::Done
                } else {
                    Flush::Dead
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.want_write = true;
                Flush::Blocked
            }
            Err(_) => Flush::Dead,
        }
    }

    fn tick(&mut self, now: Instant, connected: bool, settings: &Settings<'_>) -> Tick {
        if let Some(deadline) = self.closing_deadline {
            return if now >= deadline {
                Tick::Drop
            } else {
                Tick::Nothing
            };
        }
        let silent = now.saturating_duration_since(self.last_heard);
        if settings.idle_timeout.is_some_and(|idle| silent >= idle) {
            self.start_close(1001, "idle timeout", now);
            // The protocol does not wait for the closing handshake here (PROTOCOL.md §1).
            self.closing_deadline = Some(now);
            return Tick::Closing(1001);
        }
        if !connected && now.saturating_duration_since(self.opened) >= CONNECT_DEADLINE {
            self.start_close(1008, "no CONNECT within 10 s", now);
            return Tick::Closing(1008);
        }
        if !self.pinged && settings.ping_interval.is_some_and(|ping| silent >= ping) {
            self.pinged = true;
            // Queued in the outbox; the loop flushes it.
            return match self.socket.write(Message::Ping(Default::default())) {
                Ok(()) => Tick::Advance,
                Err(_) => Tick::Drop,
            };
        }
        Tick::Nothing
    }
}
