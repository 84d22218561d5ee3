//! The part of the router model shared by `tests/router_props.rs` and the `router_events` fuzz
//! target: the ledger of every MESSAGE a harness sends and how the router resolved it, with the
//! checks both make on the MESSAGE and UNDELIVERED frames they observe, and the helpers both use
//! to drive a [`Router`](secchat::router::Router) directly.
//!
//! Checks return `Err` with a description; the property test turns it into a failed case, the
//! fuzz target into a panic.

use std::collections::HashMap;

use secchat::address::ClientAddr;
use secchat::router::{Action, ConnId, Now};
use serde_json::Value;

/// The armor a payload starts with; a harness follows it with the message's marker number.
pub const ARMOR: &str = "-----BEGIN PGP MESSAGE-----\n";

/// The clock both harnesses start from.
pub const START: Now = Now {
    mono_ms: 10_000,
    unix_ms: 1_795_000_000_000,
};

/// One MESSAGE a harness sent, with what it is owed; `extra` is the harness's own bookkeeping.
pub struct Entry<T> {
    pub sender: String,
    pub recipient: String,
    pub delivered: u32,
    pub undelivered: u32,
    pub extra: T,
}

/// Every MESSAGE sent, found by the marker in its payload and by its `ref`.
pub struct Ledger<T> {
    entries: Vec<Entry<T>>,
    by_marker: HashMap<u64, usize>,
    by_ref: HashMap<String, usize>,
}

impl<T> Ledger<T> {
    pub fn new() -> Ledger<T> {
        Ledger {
            entries: Vec::new(),
            by_marker: HashMap::new(),
            by_ref: HashMap::new(),
        }
    }

    /// Registers a MESSAGE before it is sent, so that a delivery in the same batch is recognised;
    /// its index.
    pub fn record(
        &mut self,
        marker: u64,
        reference: Option<&str>,
        sender: String,
        recipient: String,
        extra: T,
    ) -> usize {
        let index = self.entries.len();
        self.entries.push(Entry {
            sender,
            recipient,
            delivered: 0,
            undelivered: 0,
            extra,
        });
        self.by_marker.insert(marker, index);
        if let Some(reference) = reference {
            self.by_ref.insert(reference.to_owned(), index);
        }
        index
    }

    /// Stops recognising a refused MESSAGE's marker and ref (its entry stays, owed nothing).
    #[allow(dead_code, reason = "only the property test forgets refused MESSAGEs")]
    pub fn forget(&mut self, marker: u64, reference: Option<&str>) {
        self.by_marker.remove(&marker);
        if let Some(reference) = reference {
            self.by_ref.remove(reference);
        }
    }

    pub fn entry(&self, index: usize) -> &Entry<T> {
        &self.entries[index]
    }

    pub fn entry_mut(&mut self, index: usize) -> &mut Entry<T> {
        &mut self.entries[index]
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry<T>> {
        self.entries.iter()
    }

    /// A MESSAGE frame the session `receiver` got: one the harness sent, to its recipient, from
    /// its sender, and not resolved before.
    pub fn delivered(&mut self, value: &Value, receiver: Option<&String>) -> Result<(), String> {
        let marker = field(value, "payload")
            .strip_prefix(ARMOR)
            .and_then(|m| m.parse::<u64>().ok());
        let Some(&index) = marker.and_then(|m| self.by_marker.get(&m)) else {
            return Err(format!("unknown MESSAGE delivered: {value}"));
        };
        let entry = &mut self.entries[index];
        if receiver != Some(&entry.recipient) {
            return Err(format!(
                "delivered to the wrong session {receiver:?}: {value}"
            ));
        }
        if field(value, "from") != entry.sender {
            return Err(format!("wrong sender, not {}: {value}", entry.sender));
        }
        entry.delivered += 1;
        resolved_once(entry)
    }

    /// The entry an UNDELIVERED frame reports on, by its `ref`.
    pub fn undelivered_index(&self, value: &Value) -> Result<usize, String> {
        self.by_ref
            .get(field(value, "ref"))
            .copied()
            .ok_or_else(|| format!("UNDELIVERED for an unknown ref: {value}"))
    }

    /// An UNDELIVERED frame for entry `index` that the session `receiver` got: it goes to the
    /// sender, names the recipient, and the message was not resolved before.
    pub fn undelivered(
        &mut self,
        index: usize,
        value: &Value,
        receiver: Option<&String>,
    ) -> Result<(), String> {
        let entry = &mut self.entries[index];
        if receiver != Some(&entry.sender) {
            return Err(format!("UNDELIVERED to a non-sender {receiver:?}: {value}"));
        }
        if field(value, "to") != entry.recipient {
            return Err(format!(
                "UNDELIVERED names another recipient than {}: {value}",
                entry.recipient
            ));
        }
        entry.undelivered += 1;
        resolved_once(entry)
    }
}

fn resolved_once<T>(entry: &Entry<T>) -> Result<(), String> {
    if entry.delivered + entry.undelivered == 1 {
        Ok(())
    } else {
        Err(format!(
            "message resolved twice: delivered {}, undelivered {}",
            entry.delivered, entry.undelivered
        ))
    }
}

/// The string field `name` of a frame, or `""`.
pub fn field<'v>(value: &'v Value, name: &str) -> &'v str {
    value.get(name).and_then(Value::as_str).unwrap_or("")
}

/// The frames in `out` sent to `conn`, parsed (those that are not JSON skipped).
pub fn frames_to(out: &[Action], conn: ConnId) -> impl Iterator<Item = Value> + '_ {
    out.iter().filter_map(move |action| match action {
        Action::Send { conn: to, frame } if *to == conn => serde_json::from_str(frame).ok(),
        _ => None,
    })
}

/// Connections take turns among four client addresses, so per-address limits are exercised,
/// and connections of either parity come from two (sharing the handle table and the mailbox by
/// address block).
pub fn peer_of(conn: u64) -> ClientAddr {
    let host = [192, 0, 2, 1 + (conn % 4) as u8];
    ClientAddr::new(std::net::IpAddr::from(host))
}
