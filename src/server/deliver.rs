//! The loop's side of [`FrameSink`]: the router's output is applied as it is produced. Frames
//! are written straight into the outboxes of the connections they are for (the one copy of a
//! forwarded payload); they reach the sockets at the end of the loop turn.

use std::time::Instant;

use mio::Token;

use crate::connection::{Connection, SendError};
use crate::metrics::LoopCounters;
use crate::outbox::BacklogTotal;
use crate::protocol::ServerFrame;
use crate::router::fasthash::FastMap;
use crate::router::{ConnId, FrameSink};

/// What the loop owes connections after the router spoke; the loop drops the doomed ones as
/// soon as the router call returns (see `Server::settle`).
#[derive(Default)]
pub struct Owed {
    /// Connections written to in this turn, flushed once at its end.
    pub dirty: Vec<Token>,
    /// Connections that stopped reading their replies until their outbox passed its ceiling:
    /// dropped.
    pub doomed: Vec<Token>,
}

/// The router's sink for one call: borrows the connections and what is owed them.
pub struct Deliver<'a> {
    pub conns: &'a mut FastMap<Token, Connection>,
    pub owed: &'a mut Owed,
    pub counters: &'a mut LoopCounters,
    pub backlog_total: &'a BacklogTotal,
    pub now: Instant,
}

impl FrameSink for Deliver<'_> {
    fn send(&mut self, conn: ConnId, frame: ServerFrame<'_>) {
        let token = Token(conn as usize);
        let Some(connection) = self.conns.get_mut(&token) else {
            return;
        };
        if connection.doomed {
            return;
        }
        match connection.send_frame(&frame) {
            Ok(()) => {
                self.counters.frames_out += 1;
                self.counters.bytes_out += frame.len() as u64;
                mark_dirty(&mut self.owed.dirty, token, connection);
            }
            Err(SendError::NotOpen) => {}
            Err(SendError::Full) => {
                log::debug!("connection {conn} does not read its replies: dropped");
                connection.doomed = true;
                self.owed.doomed.push(token);
            }
        }
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        let token = Token(conn as usize);
        if let Some(connection) = self.conns.get_mut(&token) {
            log::debug!("closing connection {conn} with {code}");
            connection.close_websocket(code, reason, self.now);
            mark_dirty(&mut self.owed.dirty, token, connection);
        }
    }

    fn backlog(&self, conn: ConnId) -> usize {
        self.conns
            .get(&Token(conn as usize))
            .map_or(0, Connection::unsent)
    }

    fn total_backlog(&self) -> usize {
        self.backlog_total.get()
    }
}

/// Adds `token` to the turn's flush list, once.
pub fn mark_dirty(dirty: &mut Vec<Token>, token: Token, conn: &mut Connection) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(token);
    }
}
