//! The loop's side of [`FrameSink`]: the router's output is applied as it is produced. Frames
//! are written straight into the outboxes of the connections they are for (the one copy of a
//! forwarded payload) and reach the sockets with the turn's flush; the router's questions about
//! backlog are answered from those same outboxes.

use std::time::Instant;

use mio::Token;

use super::slot::{FlushList, Slot};
use crate::bus::ClusterBus;
use crate::connection::SendError;
use crate::metrics::LoopCounters;
use crate::outbox::BacklogTotal;
use crate::protocol::ServerFrame;
use crate::router::fasthash::FastMap;
use crate::router::{BusOutput, ConnId, FrameSink};

/// The router's sink for one call: borrows the loop's slots and lists.
pub struct Deliver<'a> {
    /// The cluster's bus, which takes the router's records for other nodes (`--cluster`).
    pub bus: Option<&'a mut ClusterBus>,
    pub slots: &'a mut FastMap<Token, Slot>,
    pub flush_list: &'a mut FlushList,
    /// Connections that stopped reading until their outbox passed its ceiling: the loop drops
    /// them as soon as the router call returns.
    pub doomed: &'a mut Vec<Token>,
    pub counters: &'a mut LoopCounters,
    pub backlog_total: &'a BacklogTotal,
    pub now: Instant,
}

impl FrameSink for Deliver<'_> {
    fn send(&mut self, conn: ConnId, frame: ServerFrame<'_>) {
        let token = Token(conn as usize);
        let Some(slot) = self.slots.get_mut(&token) else {
            return;
        };
        if slot.doomed {
            return;
        }
        match slot.conn.send_frame(&frame) {
            Ok(()) => {
                self.counters.frames_out += 1;
                self.counters.bytes_out += frame.len() as u64;
                self.flush_list.add(token, slot);
            }
            Err(SendError::NotOpen) => {}
            Err(SendError::Full) => {
                log::debug!("connection {conn} does not read its replies: dropped");
                slot.doomed = true;
                self.doomed.push(token);
            }
        }
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        let token = Token(conn as usize);
        if let Some(slot) = self.slots.get_mut(&token) {
            log::debug!("closing connection {conn} with {code}");
            slot.conn.close_websocket(code, reason, self.now);
            self.flush_list.add(token, slot);
        }
    }

    fn backlog(&self, conn: ConnId) -> usize {
        self.slots
            .get(&Token(conn as usize))
            .map_or(0, |slot| slot.conn.unsent())
    }

    fn total_backlog(&self) -> usize {
        self.backlog_total.get()
    }

    fn bus(&mut self, output: BusOutput) {
        if let Some(bus) = self.bus.as_deref_mut() {
            bus.push(output);
        }
    }
}
