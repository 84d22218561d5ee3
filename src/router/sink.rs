//! The router's one interface to the outside: it writes frames and closes through a
//! [`FrameSink`], and asks the same sink how much it has not put on the sockets yet. The loop's
//! sink answers from the outboxes themselves, so the count of unsent bytes lives in one place.
//!
//! [`Recorder`] is the sink of unit tests, property tests and fuzzing: it records [`Action`]s
//! and counts every frame as unsent until the test says it was flushed ([`Recorder::flushed`]).

use super::ConnId;
use super::fasthash::FastMap;
use crate::address::Block;
use crate::id::Id;
use crate::protocol::Handle;
use crate::protocol::ServerFrame;

/// Where the router's frames and closes go, in the order it produces them, and how much of what
/// went there is still waiting for its socket.
pub trait FrameSink {
    /// Send `frame` on `conn`.
    fn send(&mut self, conn: ConnId, frame: ServerFrame<'_>);
    /// Send everything already sent to `conn`, then close it with this WebSocket close code.
    /// The router has already forgotten `conn`: a later [`Router::closed`](super::Router::closed)
    /// for it is a no-op.
    fn close(&mut self, conn: ConnId, code: u16, reason: &'static str);
    /// Bytes sent to `conn` that are not on its socket yet (0 for a connection it does not know).
    /// A MESSAGE, FRIEND_REQUEST or FRIEND_ACCEPT to a connection past the cap is `peer_busy`.
    fn backlog(&self, conn: ConnId) -> usize;
    /// The sum of [`FrameSink::backlog`] over every connection, in O(1): with the resume queues,
    /// what decides whether the per-recipient caps are squeezed.
    fn total_backlog(&self) -> usize;
    /// Hands `output` to the cluster's bus. Only a router with
    /// [`RouterConfig::cluster`](super::RouterConfig::cluster) calls it; a sink without a bus
    /// ignores it.
    fn bus(&mut self, output: BusOutput) {
        let _ = output;
    }
}

/// What the router asks of the bus (cluster mode).
#[derive(Debug, PartialEq, Eq)]
pub enum BusOutput {
    /// A session was made here with this ID: the directory must name this node for it (or
    /// the bus answers [`Router::claim_lost`](super::Router::claim_lost)).
    Claim(Id),
    /// The session with this ID ended here: its directory entry goes.
    Release(Id),
    /// Session `id`, held here, lost its connection and waits in its resume window: the letters
    /// the cluster's mailbox keeps for its handles stay there (a renewal does not collect them
    /// for it: the router could only keep them again) until it is [`BusOutput::Back`].
    Away(Id),
    /// Session `id`, held here, has a connection again (resumed here, or installed here for
    /// the connection that took it over): each renewal collects its handles' letters again.
    Back(Id),
    /// Session `id` listens on `handle` here: the directory names it for the handle, and letters
    /// kept for the handle come back through
    /// [`Router::stored_letters`](super::Router::stored_letters).
    Listen { handle: Handle, id: Id },
    /// Session `id` no longer listens on `handle` here: this node stops renewing the handle's
    /// directory entry, and deletes it if it still names the session here.
    Unlisten { handle: Handle, id: Id },
    /// Session `id` listens on `handle` here, but a record says another node's session took it
    /// since, and may be older than the session's last LISTEN: the directory's entry is checked
    /// now, as a renewal checks it, and if it names another listener the router hears
    /// [`Router::handle_lost`](super::Router::handle_lost).
    CheckHandle { handle: Handle, id: Id },
    /// A record for whoever listens on `handle`, wherever that is. When nobody does, `letter`
    /// (a MESSAGE to a handle that may wait in the mailbox) is kept for the next listener
    /// ([`Router::bus_stored`](super::Router::bus_stored)); without one, or when it cannot be
    /// kept, [`Router::bus_failed`](super::Router::bus_failed).
    ToHandle {
        handle: Handle,
        rid: Option<u64>,
        record: String,
        letter: Option<MailLetter>,
    },
    /// Copies of one MESSAGE to several handles whose listeners are not here, each with the
    /// request number its answer comes back under: the bus sends one record per node (the
    /// payload crosses to each node once), and keeps the letters of handles nobody listens on
    /// ([`Router::bus_stored`](super::Router::bus_stored)).
    ToHandles {
        handles: Vec<(Handle, u64)>,
        parts: super::remote_handles::FanoutParts,
    },
    /// Keep `letter` for whoever listens on `handle` next (it came for a listener that is gone
    /// from here).
    StoreLetter { handle: Handle, letter: MailLetter },
    /// Session `id` moves to node `node`: the directory names that node for it from now on,
    /// and this one stops renewing it.
    HandOver { id: Id, node: String },
    /// The resumable state of session `id` (JSON), saved so that another node can resume it
    /// if this one dies.
    Checkpoint { id: Id, text: String },
    /// A frame entered session `id`'s resume queue: appended to its saved queue (JSON).
    Queued { id: Id, entry: String },
    /// Session `id`'s resume queue was emptied (delivered on a resume).
    QueueCleared(Id),
    /// Read the saved state of session `id` for takeover `rid` (its node is gone):
    /// [`Router::checkpoint_loaded`](super::Router::checkpoint_loaded).
    LoadCheckpoint { id: Id, rid: u64 },
    /// The directory names this node for session `id`, whatever it named before (a session
    /// adopted from a node that is gone).
    Adopt(Id),
    /// A record for node `node` itself (the answer to a takeover).
    ToNode { node: String, text: String },
    /// A record (`remote.rs`) for session `to`, wherever it lives. `rid`: the request number
    /// its sender waits on, for [`Router::bus_failed`](super::Router::bus_failed) when the bus
    /// cannot deliver it.
    Record {
        to: Id,
        rid: Option<u64>,
        text: String,
    },
}

/// A MESSAGE to a handle as it may wait in the cluster's mailbox: the frame its listener gets,
/// and the address block whose share of the mailbox it counts against (its sender's).
#[derive(Debug, PartialEq, Eq)]
pub struct MailLetter {
    pub frame: String,
    pub block: Block,
}

/// What the router asked for, recorded: how tests see its output.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send one text frame (a complete JSON object) on `conn`.
    Send { conn: ConnId, frame: String },
    /// Send everything queued for `conn` so far, then close it with this WebSocket close code.
    /// The router has already forgotten `conn`: a later `closed` for it is a no-op.
    Close {
        conn: ConnId,
        code: u16,
        reason: &'static str,
    },
    /// Hand this to the cluster's bus.
    Bus(BusOutput),
}

/// Unsent bytes per connection and in total, for sinks without sockets: each frame sent counts
/// until its connection is reported flushed.
///
/// Invariant: `total` is the sum of `per_conn`'s values.
#[derive(Debug, Default)]
pub struct Backlogs {
    per_conn: FastMap<ConnId, usize>,
    total: usize,
}

impl Backlogs {
    /// `bytes` more were sent to `conn`.
    pub fn add(&mut self, conn: ConnId, bytes: usize) {
        *self.per_conn.entry(conn).or_insert(0) += bytes;
        self.total += bytes;
    }

    /// A flush of `conn` left `still_unsent` bytes of its output (0: all of it went).
    pub fn flushed(&mut self, conn: ConnId, still_unsent: usize) {
        let entry = self.per_conn.entry(conn).or_insert(0);
        self.total = self.total - *entry + still_unsent;
        *entry = still_unsent;
    }

    /// Every connection's output went out. Entries are kept, so that sending to the same
    /// connections again allocates nothing.
    pub fn flushed_all(&mut self) {
        self.per_conn.values_mut().for_each(|bytes| *bytes = 0);
        self.total = 0;
    }

    /// `conn`'s socket is gone, with whatever it still held.
    pub fn forget(&mut self, conn: ConnId) {
        self.total -= self.per_conn.remove(&conn).unwrap_or(0);
    }

    pub fn get(&self, conn: ConnId) -> usize {
        self.per_conn.get(&conn).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.total
    }
}

/// The sink of tests and fuzzing: records every frame as text and counts it as unsent until
/// [`Recorder::flushed`] says otherwise.
#[derive(Debug, Default)]
pub struct Recorder {
    actions: Vec<Action>,
    pub backlogs: Backlogs,
}

impl Recorder {
    /// The actions recorded since the last call.
    pub fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Forgets the recorded actions, keeping the space they took (for counting allocations).
    pub fn clear(&mut self) {
        self.actions.clear();
    }

    /// The actions recorded since the last [`Recorder::take`], left in place.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// See [`Backlogs::flushed`].
    pub fn flushed(&mut self, conn: ConnId, still_unsent: usize) {
        self.backlogs.flushed(conn, still_unsent);
    }
}

impl FrameSink for Recorder {
    fn send(&mut self, conn: ConnId, frame: ServerFrame<'_>) {
        self.backlogs.add(conn, frame.len());
        self.actions.push(Action::Send {
            conn,
            frame: frame.to_text(),
        });
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        self.actions.push(Action::Close { conn, code, reason });
    }

    fn backlog(&self, conn: ConnId) -> usize {
        self.backlogs.get(conn)
    }

    fn total_backlog(&self) -> usize {
        self.backlogs.total()
    }

    fn bus(&mut self, output: BusOutput) {
        self.actions.push(Action::Bus(output));
    }
}
