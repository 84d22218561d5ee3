//! The model: what clients can observe, tracked independently of the router (live sessions,
//! resume windows, tokens, friendships, pending requests, the message ledger), and the checks
//! that it agrees with the router after every event and that every promise was kept at the end.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use secchat::router::{Action, ConnId, Now, Recorder, Router, RouterConfig, SeededEntropy};

use crate::router_model::{Ledger, START, peer_of};
use crate::{SLOTS, Spelling, Target};

mod apply;
mod handles;
mod observe;

pub use handles::HANDLES;

/// What the property test adds to a ledger entry: only accepted MESSAGEs are owed anything.
struct Owed {
    accepted: bool,
    reference: Option<String>,
}

/// What clients can observe, tracked independently of the router.
pub struct Model {
    router: Router<SeededEntropy>,
    /// Counts every frame as unsent until an `Op::Flushed` says what the socket took.
    sink: Recorder,
    grace: u64,
    now: Now,
    next_conn: ConnId,
    slots: [Option<ConnId>; SLOTS],
    /// The session each slot's connection last had.
    slot_ids: [Option<String>; SLOTS],
    open: HashSet<ConnId>,
    conn_session: HashMap<ConnId, String>,
    alive: HashSet<String>,
    /// Sessions in their resume window, with the deadline.
    window: HashMap<String, u64>,
    tokens: HashMap<String, String>,
    issued: Vec<String>,
    friends: HashSet<(String, String)>,
    /// Pending friend requests as (requester, target).
    pending: HashSet<(String, String)>,
    /// Pending requests whose requester the model saw die, until their FRIEND_CANCEL arrives
    /// (the model may learn of a death before it observes the frames it caused).
    cancelled: HashSet<(String, String)>,
    ledger: Ledger<Owed>,
    /// Handles and the mailbox (version 2): see `handles.rs`.
    handles: handles::Handles,
    /// How long a letter waits in the mailbox.
    ttl: u64,
    next_ref: u64,
    next_marker: u64,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

impl Model {
    pub fn new(config: RouterConfig, seed: u64) -> Model {
        Model {
            grace: config.resume_grace_ms,
            ttl: config.mailbox_ttl_ms,
            router: Router::new(config, SeededEntropy(seed)),
            sink: Recorder::default(),
            now: START,
            next_conn: 1,
            slots: [None; SLOTS],
            slot_ids: Default::default(),
            open: HashSet::new(),
            conn_session: HashMap::new(),
            alive: HashSet::new(),
            window: HashMap::new(),
            tokens: HashMap::new(),
            issued: Vec::new(),
            friends: HashSet::new(),
            pending: HashSet::new(),
            cancelled: HashSet::new(),
            ledger: Ledger::new(),
            handles: handles::Handles::default(),
            next_ref: 0,
            next_marker: 0,
        }
    }

    fn conn_of(&mut self, slot: usize) -> ConnId {
        if let Some(conn) = self.slots[slot] {
            return conn;
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        self.router.open_from(conn, peer_of(conn), self.now);
        self.open.insert(conn);
        self.slots[slot] = Some(conn);
        conn
    }

    /// The slot's connection, sending CONNECT first when it has no session (as a client would).
    /// `None` when that CONNECT failed (server full).
    fn session_conn(&mut self, slot: usize) -> Result<Option<ConnId>, TestCaseError> {
        let conn = self.conn_of(slot);
        if !self.conn_session.contains_key(&conn) {
            self.text(conn, connect_of(conn))?;
        }
        Ok(self.conn_session.contains_key(&conn).then_some(conn))
    }

    fn fresh_ref(&mut self, with_ref: bool) -> Option<String> {
        with_ref.then(|| {
            self.next_ref += 1;
            format!("r{}", self.next_ref)
        })
    }

    /// The `to` text and, for a known session, its ID.
    fn resolve(&self, target: &Target, me: Option<&str>) -> (String, Option<String>) {
        let (id, spelling) = match target {
            Target::Requester(n) => {
                let mut requesters: Vec<&String> = self
                    .pending
                    .iter()
                    .filter(|(_, to)| Some(to.as_str()) == me)
                    .map(|(from, _)| from)
                    .collect();
                requesters.sort();
                match requesters.get(n % requesters.len().max(1)) {
                    Some(id) => ((*id).clone(), Spelling::Exact),
                    None => return ("000000".to_owned(), None),
                }
            }
            Target::Friend(n) => {
                let mut friends: Vec<&String> = self
                    .friends
                    .iter()
                    .filter_map(|(a, b)| match me {
                        Some(me) if a == me => Some(b),
                        Some(me) if b == me => Some(a),
                        _ => None,
                    })
                    .collect();
                friends.sort();
                match friends.get(n % friends.len().max(1)) {
                    Some(id) => ((*id).clone(), Spelling::Exact),
                    None => return ("000000".to_owned(), None),
                }
            }
            Target::Slot(slot, spelling) => match &self.slot_ids[*slot] {
                Some(id) => (id.clone(), *spelling),
                None => return ("000000".to_owned(), None),
            },
            Target::Known(n, spelling) if !self.issued.is_empty() => {
                (self.issued[n % self.issued.len()].clone(), *spelling)
            }
            Target::Id(id) => (id.clone(), Spelling::Exact),
            Target::Invalid => return ("not-an-id!".to_owned(), None),
            _ => return ("000000".to_owned(), None),
        };
        let text = match spelling {
            Spelling::Exact => id.clone(),
            Spelling::Lower => format!(" {} ", id.to_lowercase()),
            Spelling::Dashed => format!("{}-{}", &id[..3], &id[3..]),
        };
        (text, Some(id))
    }

    fn text(&mut self, conn: ConnId, text: &str) -> Result<Vec<Action>, TestCaseError> {
        self.router.text(conn, text, self.now, &mut self.sink);
        let out = self.sink.take();
        self.observe(&out)?;
        Ok(out)
    }

    fn die(&mut self, id: &str) {
        self.session_ended(id);
        self.alive.remove(id);
        self.window.remove(id);
        self.friends.retain(|(a, b)| a != id && b != id);
        for request in &self.pending {
            if request.0 == id {
                self.cancelled.insert(request.clone());
            }
        }
        self.pending.retain(|(a, b)| a != id && b != id);
    }

    fn session_lost_conn(&mut self, id: String) {
        if self.grace == 0 {
            self.die(&id);
        } else {
            self.window.insert(id, self.now.mono_ms + self.grace);
        }
    }

    pub fn check_agreement(&self) -> Result<(), TestCaseError> {
        self.router
            .check_invariants()
            .map_err(TestCaseError::fail)?;
        let stats = self.router.stats();
        prop_assert_eq!(stats.sessions, self.alive.len(), "live sessions");
        prop_assert_eq!(
            stats.sessions_resuming,
            self.window.len(),
            "sessions in the window"
        );
        prop_assert_eq!(stats.connections, self.open.len(), "open connections");
        for (conn, id) in &self.conn_session {
            prop_assert!(
                self.router.is_connected(*conn),
                "conn {} of {} not connected",
                conn,
                id
            );
        }
        Ok(())
    }

    /// Takes every live session back on a fresh connection (delivering all queues), then
    /// checks the ledger is complete.
    pub fn finish(&mut self) -> Result<(), TestCaseError> {
        if self.grace == 0 {
            // Nothing is ever queued, and sessions cannot be resumed.
            prop_assert_eq!(self.router.stats().queued_frames, 0);
            return self.check_ledger();
        }
        let mut live: Vec<String> = self.alive.iter().cloned().collect();
        live.sort();
        for id in live {
            // Back with the version it speaks, on a connection of that parity (even ones speak
            // version 2), so that what waits for it of version 2 is delivered, not dropped.
            let v2 = self.handles.versions.get(&id) == Some(&2);
            let mut conn = self.next_conn;
            while speaks_v2(conn) != v2 {
                conn += 1;
            }
            self.next_conn = conn + 1;
            self.router.open_from(conn, peer_of(conn), self.now);
            self.open.insert(conn);
            let token = self.tokens.get(&id).cloned().unwrap_or_default();
            let text = resume_of(conn, &id, &token);
            let actions = self.text(conn, &text)?;
            prop_assert!(
                self.conn_session.get(&conn) == Some(&id),
                "live {} did not resume: {:?}",
                id,
                actions
            );
            self.check_agreement()?;
        }
        self.check_ledger()
    }

    fn check_ledger(&self) -> Result<(), TestCaseError> {
        self.check_handle_ledger()?;
        for entry in self.ledger.entries().filter(|entry| entry.extra.accepted) {
            let resolved = entry.delivered + entry.undelivered;
            if self.alive.contains(&entry.recipient) {
                prop_assert_eq!(
                    entry.delivered,
                    1,
                    "message to a live recipient not delivered"
                );
            } else if entry.extra.reference.is_some() && self.alive.contains(&entry.sender) {
                prop_assert_eq!(
                    resolved,
                    1,
                    "acknowledged message neither delivered nor UNDELIVERED"
                );
            }
        }
        Ok(())
    }
}

/// CONNECT with `resume`, in the version of `conn` (see [`speaks_v2`]).
fn resume_of(conn: ConnId, id: &str, token: &str) -> String {
    let version = if speaks_v2(conn) {
        r#","version":2"#
    } else {
        ""
    };
    format!(r#"{{"type":"CONNECT","resume":{{"id":"{id}","token":"{token}"}}{version}}}"#)
}

/// Whether the client on `conn` speaks version 2: three connections in four do (and get
/// FRIEND_CANCEL, handles and the mailbox), every fourth version 1.
pub(super) fn speaks_v2(conn: ConnId) -> bool {
    conn % 4 != 3
}

/// CONNECT in the version of `conn` (see [`speaks_v2`]).
fn connect_of(conn: ConnId) -> &'static str {
    if speaks_v2(conn) {
        r#"{"type":"CONNECT","version":2}"#
    } else {
        r#"{"type":"CONNECT"}"#
    }
}
