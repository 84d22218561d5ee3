//! The loop's slot for one connection: the [`Connection`] (which knows its socket and protocol)
//! and what the loop alone keeps about it (interest registered, flush list, address budgets,
//! whether the router knows it). The connection never sees these; only the loop changes them.

use mio::Token;

use crate::address::ClientAddr;
use crate::connection::Connection;

pub struct Slot {
    pub conn: Connection,
    /// Whether WRITABLE interest is registered; the loop re-registers only when
    /// [`Connection::wants_write`] differs.
    pub writable_registered: bool,
    /// Whether the connection is on this turn's [`FlushList`].
    pub flush_listed: bool,
    /// A frame for it was refused (its outbox passed the ceiling) and the loop drops it when the
    /// router call returns; nothing more is queued meanwhile, so the client never sees a later
    /// frame without an earlier one.
    pub doomed: bool,
    /// The router was told its WebSocket opened: dropping it tells the router it closed.
    pub in_router: bool,
    /// The address whose open-socket budget this connection holds, released when it closes.
    /// `None` while a trusted proxy's connection is still HTTP (it may carry several clients'
    /// requests in turn) and when no budget was taken.
    pub holds_socket: Option<ClientAddr>,
    /// The address whose half-open budget this connection holds, released once its first
    /// request head is complete ([`Connection::half_open`]) or when it closes.
    pub holds_head: Option<ClientAddr>,
}

impl Slot {
    /// A freshly accepted connection holding `budget`'s socket and half-open places, if any.
    pub fn new(conn: Connection, budget: Option<ClientAddr>) -> Slot {
        Slot {
            conn,
            writable_registered: false,
            flush_listed: false,
            doomed: false,
            in_router: false,
            holds_socket: budget,
            holds_head: budget,
        }
    }

    /// Whether what the loop keeps about the connection no longer matches it: WRITABLE interest
    /// that should change, or a half-open place held for a head that ended. Carrying out
    /// `Outcome::Wait` brings both up to date.
    pub fn out_of_date(&self) -> bool {
        self.conn.wants_write() != self.writable_registered
            || (self.holds_head.is_some() && !self.conn.half_open())
    }
}

/// The connections to flush at the end of this turn, each listed once.
#[derive(Default)]
pub struct FlushList(Vec<Token>);

impl FlushList {
    pub fn add(&mut self, token: Token, slot: &mut Slot) {
        if !slot.flush_listed {
            slot.flush_listed = true;
            self.0.push(token);
        }
    }

    /// The list, emptied; hand it back with [`FlushList::reuse`] to keep its capacity.
    pub fn take(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.0)
    }

    /// Gives back the vector [`FlushList::take`] returned, if nothing was listed since.
    pub fn reuse(&mut self, mut tokens: Vec<Token>) {
        if self.0.is_empty() {
            tokens.clear();
            self.0 = tokens;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
