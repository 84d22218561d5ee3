//! The HTTP side of a connection: reading request heads, writing responses (static files,
//! errors, the metrics page, the `101` of a WebSocket upgrade), keep-alive, and the deadlines of
//! a head and of a response.

use std::io::{self, Read, Write};
use std::time::Instant;

use tungstenite::WebSocket;
use tungstenite::protocol::Role;

use super::websocket::WsState;
use super::{
    Connection, Context, Endpoint, HEAD_DEADLINE, MetricsPage, Outcome, RESPONSE_DEADLINE,
    Settings, State,
};
use crate::http;
use crate::outbox::Outbox;
use crate::tls::Transport;

pub(super) struct HttpState {
    pub(super) stream: Transport,
    input: Vec<u8>,
    pub(super) output: Option<Pending>,
    /// When the current request head started (or the connection was accepted).
    head_started: Instant,
    /// Whether this connection already completed a request (then a silent keep-alive connection
    /// that times out is closed without a 408).
    served_one: bool,
    /// Whether its first request head ended (complete, refused, or timed out): from then on the
    /// connection is no longer half-open.
    pub(super) head_seen: bool,
}

pub(super) struct Pending {
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

impl HttpState {
    pub(super) fn new(stream: Transport, now: Instant) -> HttpState {
        HttpState {
            stream,
            input: Vec::new(),
            output: None,
            head_started: now,
            served_one: false,
            head_seen: false,
        }
    }

    /// Whether the `101` of an upgrade is queued and not one byte of it written yet.
    pub(super) fn upgrade_unanswered(&self) -> bool {
        self.output.as_ref().is_some_and(|pending| {
            matches!(pending.then, AfterResponse::Upgrade(_)) && pending.written == 0
        })
    }

    /// Replaces whatever is queued with `status`, and closes after it.
    pub(super) fn respond_and_close(&mut self, status: u16, tls: bool) {
        self.respond(http::error_response(status, tls), AfterResponse::Close);
    }

    fn respond(&mut self, response: http::Response, then: AfterResponse) {
        self.output = Some(Pending {
            head: response.head,
            body: response.body,
            written: 0,
            then,
        });
    }

    /// The deadlines of a head (408) and of a response nobody reads. `Outcome::Flush` when a
    /// 408 was queued and the exchange must be driven to write it.
    pub(super) fn tick(&mut self, now: Instant, settings: &Settings<'_>) -> Outcome {
        let waited = now.saturating_duration_since(self.head_started);
        if self.output.is_some() {
            // A client that never reads its response must not hold the socket forever.
            return if waited >= RESPONSE_DEADLINE {
                Outcome::Drop
            } else {
                Outcome::Wait
            };
        }
        if waited < HEAD_DEADLINE {
            return Outcome::Wait;
        }
        if self.served_one && self.input.is_empty() {
            return Outcome::Drop;
        }
        self.head_seen = true;
        self.respond_and_close(408, settings.tls);
        Outcome::Flush
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

impl Connection {
    /// Writes what is pending, then reads and answers request heads, until the socket would
    /// block or the exchange ends.
    pub(super) fn drive_http(&mut self, context: &Context<'_, impl MetricsPage>) -> Outcome {
        let settings = context.settings;
        loop {
            let State::Http(http) = &mut self.state else {
                return Outcome::Drop;
            };
            if http.output.is_some() {
                match http.write_pending() {
                    Err(_) => return Outcome::Drop,
                    Ok(false) => return Outcome::Wait,
                    Ok(true) => {}
                }
                match http.output.take().map(|pending| pending.then) {
                    Some(AfterResponse::Close) | None => {
                        http.stream.finish();
                        return Outcome::Drop;
                    }
                    Some(AfterResponse::KeepAlive) => {
                        http.head_started = context.now;
                        http.served_one = true;
                        continue;
                    }
                    Some(AfterResponse::Upgrade(leftover)) => {
                        return self.become_websocket(leftover, context.now, settings);
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
                        let response = if request.method == "GET" && request.path() == "/metrics" {
                            http::generated_response(
                                "text/plain; version=0.0.4; charset=utf-8",
                                &context.metrics.render(),
                                false,
                            )
                        } else {
                            http::error_response(404, settings.tls)
                        };
                        http.respond(response, AfterResponse::Close);
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
                http::Head::TooLarge => http.respond_and_close(431, settings.tls),
                http::Head::Bad => http.respond_and_close(400, settings.tls),
                http::Head::Partial => match http.read_more() {
                    Ok(true) => {}
                    Ok(false) => return Outcome::Wait,
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
        let State::Http(http) = std::mem::replace(&mut self.state, State::Upgrading) else {
            return Outcome::Drop;
        };
        let socket = WebSocket::from_partially_read(
            Outbox::new(http.stream, settings.backlog_total.clone()),
            leftover,
            Role::Server,
            Some(settings.ws_config),
        );
        self.state = State::WebSocket(WsState::new(socket, settings.outbox_ceiling, now));
        Outcome::Opened
    }
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
        // The name is the client's text: not logged. The accepted ones are in the banner.
        log::debug!(
            "refusing a WebSocket upgrade (421): Host is not an IP address, a localhost name or \
             a name this server answers to (listed at start-up; add one with --public-host)"
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
