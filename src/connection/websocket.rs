//! An open WebSocket: reading one message at a time through tungstenite, its deadlines (CONNECT,
//! ping, idle, closing grace), and putting its outbox on the socket.

use std::io;
use std::time::Instant;

use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Error as WsError, Message, WebSocket};

use super::{CLOSE_GRACE, CONNECT_DEADLINE, Inbound, Outcome, Settings};
use crate::outbox::Outbox;

pub(super) struct WsState {
    pub(super) socket: WebSocket<Outbox>,
    /// [`Settings::outbox_ceiling`], kept here because sending needs no settings.
    pub(super) outbox_ceiling: usize,
    pub(super) opened: Instant,
    last_heard: Instant,
    pinged: bool,
    /// Set when we started closing: the connection is dropped once this passes.
    pub(super) closing_deadline: Option<Instant>,
    /// False after a read error after which tungstenite must not be read again.
    readable: bool,
    /// A flush hit `WouldBlock`: data is still buffered.
    pub(super) want_write: bool,
}

impl WsState {
    pub(super) fn new(socket: WebSocket<Outbox>, outbox_ceiling: usize, now: Instant) -> WsState {
        WsState {
            socket,
            outbox_ceiling,
            opened: now,
            last_heard: now,
            pinged: false,
            closing_deadline: None,
            readable: true,
            want_write: false,
        }
    }

    pub(super) fn read_next(&mut self, now: Instant) -> Inbound {
        if !self.readable {
            // After some errors tungstenite's state is undefined and it must not be read again;
            // wait for the close frame to flush and the grace to pass.
            return Inbound::Then(Outcome::Wait);
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
                            Inbound::Then(Outcome::Drop)
                        }
                        // The automatic pong or close echo goes out at the next flush.
                        Message::Ping(_)
                        | Message::Pong(_)
                        | Message::Close(_)
                        | Message::Frame(_) => Inbound::Control,
                    };
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Inbound::Then(Outcome::Wait);
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
                    return Inbound::Then(Outcome::Drop);
                }
                Err(WsError::Protocol(_)) => {
                    return self.fail(1002, "protocol error", now);
                }
                // ConnectionClosed (the closing handshake finished), a reset, or anything else.
                // The echo of a peer's close may still wait in the outbox: best effort, as the
                // socket is closed right after.
                Err(_) => {
                    let _ = self.socket.get_mut().flush_to_socket();
                    return Inbound::Then(Outcome::Drop);
                }
            }
        }
    }

    /// Stops reading and starts closing with `code` after an error tungstenite reported.
    fn fail(&mut self, code: u16, reason: &'static str, now: Instant) -> Inbound {
        self.readable = false;
        self.start_close(code, reason, now);
        Inbound::Then(Outcome::Closing(code))
    }

    pub(super) fn start_close(&mut self, code: u16, reason: &'static str, now: Instant) {
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

    /// [`Outcome::Wait`] when everything is on the socket or the socket is full (the loop then
    /// registers WRITABLE interest: [`super::Connection::wants_write`]); [`Outcome::Drop`] when
    /// the connection is finished.
    pub(super) fn flush(&mut self) -> Outcome {
        // Tungstenite's pending control frames join the outbox first. Its error after a finished
        // closing handshake still lets the outbox (the close echo) go out before the drop.
        let control = self.socket.flush();
        match self.socket.get_mut().flush_to_socket() {
            Ok(()) => {
                self.want_write = false;
                if control.is_ok() {
                    Outcome::Wait
                } else {
                    Outcome::Drop
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.want_write = true;
                Outcome::Wait
            }
            Err(_) => Outcome::Drop,
        }
    }

    pub(super) fn tick(
        &mut self,
        now: Instant,
        connected: bool,
        settings: &Settings<'_>,
    ) -> Outcome {
        if let Some(deadline) = self.closing_deadline {
            return if now >= deadline {
                Outcome::Drop
            } else {
                Outcome::Wait
            };
        }
        let silent = now.saturating_duration_since(self.last_heard);
        if settings.idle_timeout.is_some_and(|idle| silent >= idle) {
            self.start_close(1001, "idle timeout", now);
            // The protocol does not wait for the closing handshake here (PROTOCOL.md §1).
            self.closing_deadline = Some(now);
            return Outcome::Closing(1001);
        }
        if !connected && now.saturating_duration_since(self.opened) >= CONNECT_DEADLINE {
            self.start_close(1008, "no CONNECT within 10 s", now);
            return Outcome::Closing(1008);
        }
        if !self.pinged && settings.ping_interval.is_some_and(|ping| silent >= ping) {
            self.pinged = true;
            // Queued in the outbox; the loop flushes it.
            return match self.socket.write(Message::Ping(Default::default())) {
                Ok(()) => Outcome::Flush,
                Err(_) => Outcome::Drop,
            };
        }
        Outcome::Wait
    }
}
