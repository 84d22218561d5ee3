//! Property tests for the routing core: arbitrary event sequences over several connections.
//!
//! After every event the router's own structural invariants must hold
//! ([`Router::check_invariants`]), and an independent model of what clients can observe must
//! agree with it: which sessions are alive or in their resume window, who is friends with whom
//! (from accepted FRIEND_ACCEPT / FRIEND_REMOVE), and a ledger of every accepted MESSAGE. The
//! ledger demands that a message is delivered at most once and only to its recipient, that
//! UNDELIVERED goes only to the sender and only after the recipient's session ended, and, at the
//! end, that every acknowledged message whose sender is still alive was either delivered or
//! reported UNDELIVERED exactly once.

use std::collections::{HashMap, HashSet};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use secchat::router::{Action, ConnId, Now, Recorder, Router, RouterConfig, SeededEntropy};

mod router_model;
use router_model::{ARMOR, Ledger, START, field, frames_to, peer_of};

const SLOTS: usize = 4;
const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\\nkey";

#[derive(Clone, Debug)]
enum Target {
    /// The session last seen on this slot (connected now, or away, or ended), in some spelling.
    Slot(usize, Spelling),
    /// The n-th session ID ever issued (modulo how many there are), spelled in a normalized form.
    Known(usize, Spelling),
    /// The n-th session with a pending friend request to the acting session (per the model).
    Requester(usize),
    /// The n-th friend of the acting session (per the model).
    Friend(usize),
    /// This exact ID.
    Id(String),
    /// Not an ID at all.
    Invalid,
    /// A valid ID that (almost surely) no session has.
    Nobody,
}

#[derive(Clone, Copy, Debug)]
enum Spelling {
    Exact,
    Lower,
    Dashed,
}

#[derive(Clone, Debug)]
enum Op {
    Connect {
        slot: usize,
        with_ref: bool,
    },
    Resume {
        slot: usize,
        who: usize,
        corrupt: bool,
    },
    FriendRequest {
        slot: usize,
        to: Target,
        good_key: bool,
        with_ref: bool,
    },
    FriendAccept {
        slot: usize,
        to: Target,
        with_ref: bool,
    },
    FriendDecline {
        slot: usize,
        to: Target,
        with_ref: bool,
    },
    FriendRemove {
        slot: usize,
        to: Target,
        with_ref: bool,
    },
    Message {
        slot: usize,
        to: Target,
        encrypted: bool,
        with_ref: bool,
    },
    Disconnect {
        slot: usize,
        with_ref: bool,
    },
    Ping {
        slot: usize,
    },
    Garbage {
        slot: usize,
        which: usize,
    },
    GarbageBurst {
        slot: usize,
    },
    Binary {
        slot: usize,
    },
    Closed {
        slot: usize,
    },
    /// The loop flushed the slot's connection, leaving `left` bytes the socket did not take.
    Flushed {
        slot: usize,
        left: usize,
    },
    /// The usual handshake in one step: `a` requests, `b` accepts.
    Befriend {
        a: usize,
        b: usize,
    },
    Advance {
        ms: u64,
    },
}

fn target() -> impl Strategy<Value = Target> {
    let spelling = prop_oneof![
        Just(Spelling::Exact),
        Just(Spelling::Lower),
        Just(Spelling::Dashed)
    ];
    prop_oneof![
        12 => (0..SLOTS, spelling.clone()).prop_map(|(n, s)| Target::Slot(n, s)),
        2 => (0..12usize, spelling).prop_map(|(n, s)| Target::Known(n, s)),
        1 => Just(Target::Invalid),
        1 => Just(Target::Nobody),
    ]
}

fn message_target() -> impl Strategy<Value = Target> {
    prop_oneof![4 => (0..4usize).prop_map(Target::Friend), 1 => target()]
}

fn accept_target() -> impl Strategy<Value = Target> {
    prop_oneof![4 => (0..4usize).prop_map(Target::Requester), 1 => target()]
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        4 => (slot.clone(), any::<bool>()).prop_map(|(slot, with_ref)| Op::Connect { slot, with_ref }),
        6 => (slot.clone(), 0..12usize, prop::bool::weighted(0.2))
            .prop_map(|(slot, who, corrupt)| Op::Resume { slot, who, corrupt }),
        6 => (slot.clone(), target(), prop::bool::weighted(0.9), any::<bool>())
            .prop_map(|(slot, to, good_key, with_ref)| Op::FriendRequest { slot, to, good_key, with_ref }),
        4 => (slot.clone(), accept_target(), any::<bool>())
            .prop_map(|(slot, to, with_ref)| Op::FriendAccept { slot, to, with_ref }),
        2 => (slot.clone(), accept_target(), any::<bool>())
            .prop_map(|(slot, to, with_ref)| Op::FriendDecline { slot, to, with_ref }),
        2 => (slot.clone(), target(), any::<bool>())
            .prop_map(|(slot, to, with_ref)| Op::FriendRemove { slot, to, with_ref }),
        36 => (slot.clone(), message_target(), prop::bool::weighted(0.95), prop::bool::weighted(0.8))
            .prop_map(|(slot, to, encrypted, with_ref)| Op::Message { slot, to, encrypted, with_ref }),
        1 => (slot.clone(), any::<bool>()).prop_map(|(slot, with_ref)| Op::Disconnect { slot, with_ref }),
        2 => slot.clone().prop_map(|slot| Op::Ping { slot }),
        4 => (slot.clone(), 0..GARBAGE.len()).prop_map(|(slot, which)| Op::Garbage { slot, which }),
        1 => slot.clone().prop_map(|slot| Op::GarbageBurst { slot }),
        2 => slot.clone().prop_map(|slot| Op::Binary { slot }),
        5 => slot.clone().prop_map(|slot| Op::Closed { slot }),
        14 => (slot.clone(), slot.clone()).prop_map(|(a, b)| Op::Befriend { a, b }),
        10 => (slot, prop_oneof![Just(0usize), 0..4_096usize])
            .prop_map(|(slot, left)| Op::Flushed { slot, left }),
        8 => prop_oneof![0..50u64, 0..1_500u64, 0..70_000u64].prop_map(|ms| Op::Advance { ms }),
    ]
}

const GARBAGE: &[&str] = &[
    "nope",
    "[]",
    "{\"type\":7}",
    "{\"type\":\"ACK\",\"ref\":\"g\"}",
    "{\"type\":\"MESSAGE\"}",
    "{\"type\":\"PING\",\"ref\":7}",
    "{\"type\":\"CONNECT\",\"resume\":7}",
    "{\"type\":\"WHAT\",\"ref\":\"g\"}",
    "{\"type\":\"FRIEND_REQUEST\",\"to\":\"K7Q2ZD\",\"to\":\"K7Q2ZD\"}",
    "{\"type\":\"CONNECT\",\"resume\":{\"id\":\"??\",\"token\":\"x\"}}",
];

fn config() -> impl Strategy<Value = RouterConfig> {
    (
        prop_oneof![Just(0u64), Just(500), Just(3_000)],
        2..6usize,
        prop_oneof![Just(0u32), Just(5)],
        prop_oneof![Just(0u32), Just(10)],
        prop_oneof![1 => Just(0usize), 2 => Just(400), 3 => Just(100_000)],
        prop_oneof![Just(300usize), Just(700), Just(100_000)],
        1..4usize,
        1..4usize,
        prop_oneof![Just(0usize), Just(1), Just(2)],
        prop_oneof![Just(1_000usize), Just(64 << 20)],
        (
            prop_oneof![Just(0u32), Just(3)],
            prop_oneof![Just(0u32), Just(3)],
            prop_oneof![Just(40usize), Just(16_384)],
            1..4usize,
            1..3usize,
            prop_oneof![Just(0u32), Just(2)],
        ),
    )
        .prop_map(
            |(
                grace,
                sessions,
                msg_rate,
                req_rate,
                unsent,
                queue_bytes,
                queue_len,
                pending,
                per_peer,
                buffered,
                (
                    session_rate,
                    request_rate,
                    max_key,
                    pending_in,
                    pending_in_per_address,
                    incoming_rate,
                ),
            )| {
                RouterConfig {
                    max_sessions: sessions,
                    resume_grace_ms: grace,
                    rate_messages_per_sec: msg_rate,
                    rate_friend_requests_per_min: req_rate,
                    max_message_bytes: 65_536,
                    max_unsent_bytes: unsent,
                    max_queue_bytes: queue_bytes,
                    max_queue_len: queue_len,
                    max_buffered_bytes: buffered,
                    max_pending_requests: pending,
                    max_sessions_per_peer: per_peer as u32,
                    rate_sessions_per_address_per_min: session_rate,
                    rate_friend_requests_per_address_per_min: request_rate,
                    max_public_key_bytes: max_key,
                    max_pending_incoming: pending_in,
                    max_pending_incoming_per_address: pending_in_per_address,
                    rate_incoming_requests_per_min: incoming_rate,
                    rate_incoming_requests_per_address_per_min: incoming_rate / 2,
                }
            },
        )
}

/// What the property test adds to a ledger entry: only accepted MESSAGEs are owed anything.
struct Owed {
    accepted: bool,
    reference: Option<String>,
}

/// What clients can observe, tracked independently of the router.
struct Model {
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
    fn new(config: RouterConfig, seed: u64) -> Model {
        Model {
            grace: config.resume_grace_ms,
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

    /// Checks and records one batch of actions.
    fn observe(&mut self, actions: &[Action]) -> Result<(), TestCaseError> {
        let mut closed_now = Vec::new();
        for action in actions {
            match action {
                Action::Send { conn, frame } => {
                    prop_assert!(
                        self.open.contains(conn),
                        "frame to a connection that is not open: {frame}"
                    );
                    let value: Value = serde_json::from_str(frame)
                        .map_err(|e| TestCaseError::fail(format!("invalid JSON {frame}: {e}")))?;
                    self.observe_frame(*conn, &value)?;
                }
                Action::Close { conn, code, .. } => {
                    prop_assert!(
                        self.open.remove(conn),
                        "close of a connection that is not open"
                    );
                    closed_now.push(*conn);
                    for slot in self.slots.iter_mut() {
                        if *slot == Some(*conn) {
                            *slot = None;
                        }
                    }
                    let session = self.conn_session.remove(conn);
                    match (*code, session) {
                        (1000, Some(id)) => self.die(&id),
                        (1008, Some(id)) => self.session_lost_conn(id),
                        (1000, None) => prop_assert!(false, "1000 without a session"),
                        (4001, None) => prop_assert!(false, "4001 without a session"),
                        (1013, Some(_)) => prop_assert!(false, "1013 with a session"),
                        (1008 | 1013 | 4001, _) => {}
                        (other, _) => prop_assert!(false, "unexpected close code {other}"),
                    }
                }
            }
        }
        // The loop reports every connection the router closed; that must change nothing.
        for conn in closed_now {
            self.sink.backlogs.forget(conn);
            self.router.closed(conn, self.now, &mut self.sink);
            let out = self.sink.take();
            prop_assert!(
                out.is_empty(),
                "closed() after Close did something: {out:?}"
            );
        }
        Ok(())
    }

    fn observe_frame(&mut self, conn: ConnId, value: &Value) -> Result<(), TestCaseError> {
        let receiver = self.conn_session.get(&conn).cloned();
        match field(value, "type") {
            "CONNECT" => self.observe_connect(conn, value)?,
            "MESSAGE" => self
                .ledger
                .delivered(value, receiver.as_ref())
                .map_err(TestCaseError::fail)?,
            "UNDELIVERED" => {
                let index = self
                    .ledger
                    .undelivered_index(value)
                    .map_err(TestCaseError::fail)?;
                prop_assert!(
                    !self.alive.contains(&self.ledger.entry(index).recipient),
                    "UNDELIVERED while the recipient lives"
                );
                self.ledger
                    .undelivered(index, value, receiver.as_ref())
                    .map_err(TestCaseError::fail)?;
            }
            "PRESENCE" => {
                let id = field(value, "id");
                let receiver = receiver.unwrap_or_default();
                prop_assert!(
                    self.friends.contains(&pair(id, &receiver)),
                    "PRESENCE about a non-friend"
                );
                prop_assert!(
                    !self.window.contains_key(&receiver),
                    "PRESENCE sent to a session that is away"
                );
                if value["online"] == Value::Bool(false) {
                    prop_assert!(
                        self.window.contains_key(id),
                        "offline PRESENCE for a connected session"
                    );
                } else {
                    // Sent after the resume reply, which took the session out of the window.
                    prop_assert!(
                        self.alive.contains(id),
                        "online PRESENCE for a dead session"
                    );
                    prop_assert!(
                        !self.window.contains_key(id),
                        "online PRESENCE for an absent session"
                    );
                }
            }
            "FRIEND_CANCEL" => {
                prop_assert!(
                    conn.is_multiple_of(2),
                    "FRIEND_CANCEL to a version-1 client"
                );
                // Sent while the requester's session ends, before the model sees it end.
                let request = (
                    field(value, "from").to_owned(),
                    receiver.unwrap_or_default(),
                );
                prop_assert!(
                    self.pending.remove(&request) || self.cancelled.remove(&request),
                    "FRIEND_CANCEL for no pending request"
                );
            }
            "DISCONNECT" | "ACK" | "ERROR" | "PONG" | "FRIEND_REQUEST" | "FRIEND_ACCEPT"
            | "FRIEND_DECLINE" | "FRIEND_REMOVE" => {}
            other => prop_assert!(false, "unexpected frame type {other}"),
        }
        Ok(())
    }

    fn observe_connect(&mut self, conn: ConnId, value: &Value) -> Result<(), TestCaseError> {
        let id = field(value, "id").to_owned();
        let token = field(value, "token").to_owned();
        prop_assert_eq!(token.len(), 43);
        if value.get("resumed") == Some(&Value::Bool(true)) {
            prop_assert!(self.alive.contains(&id), "resumed a dead session");
            self.window.remove(&id);
            let mut reported: Vec<(String, bool)> = value["friends"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|f| (field(f, "id").to_owned(), f["online"] == Value::Bool(true)))
                        .collect()
                })
                .unwrap_or_default();
            reported.sort();
            let mut expected: Vec<(String, bool)> = self
                .friends
                .iter()
                .filter_map(|(a, b)| {
                    let other = if *a == id {
                        b
                    } else if *b == id {
                        a
                    } else {
                        return None;
                    };
                    Some((other.clone(), !self.window.contains_key(other)))
                })
                .collect();
            expected.sort();
            prop_assert_eq!(reported, expected, "friends in the resume reply");
        } else {
            prop_assert!(!self.alive.contains(&id), "a new session got a live ID");
            self.alive.insert(id.clone());
            self.issued.push(id.clone());
        }
        self.tokens.insert(id.clone(), token);
        if let Some(slot) = self.slots.iter().position(|slot| *slot == Some(conn)) {
            self.slot_ids[slot] = Some(id.clone());
        }
        self.conn_session.insert(conn, id);
        Ok(())
    }

    fn error_to(actions: &[Action], conn: ConnId) -> Option<String> {
        frames_to(actions, conn).find_map(|value| {
            (field(&value, "type") == "ERROR").then(|| field(&value, "code").to_owned())
        })
    }

    fn ack_to(actions: &[Action], conn: ConnId, reference: &str) -> Option<Value> {
        frames_to(actions, conn)
            .find(|value| field(value, "type") == "ACK" && field(value, "ref") == reference)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Connect { slot, with_ref } => {
                let conn = self.conn_of(*slot);
                let reference = self.fresh_ref(*with_ref);
                let connect = connect_of(conn);
                let text = with(
                    connect[..connect.len() - 1].to_owned(),
                    reference.as_deref(),
                );
                self.text(conn, &text)?;
            }
            Op::Resume { slot, who, corrupt } => {
                if self.issued.is_empty() {
                    return Ok(());
                }
                let id = self.issued[who % self.issued.len()].clone();
                let mut token = self.tokens.get(&id).cloned().unwrap_or_default();
                if *corrupt {
                    token = token.chars().rev().collect();
                }
                let conn = self.conn_of(*slot);
                let text =
                    format!(r#"{{"type":"CONNECT","resume":{{"id":"{id}","token":"{token}"}}}}"#);
                self.text(conn, &text)?;
            }
            Op::FriendRequest {
                slot,
                to,
                good_key,
                with_ref,
            } => {
                let key = if *good_key { KEY } else { "not a key" };
                self.friend_op(*slot, "FRIEND_REQUEST", to, Some(key), *with_ref)?;
            }
            Op::FriendAccept { slot, to, with_ref } => {
                self.friend_op(*slot, "FRIEND_ACCEPT", to, Some(KEY), *with_ref)?
            }
            Op::FriendDecline { slot, to, with_ref } => {
                self.friend_op(*slot, "FRIEND_DECLINE", to, None, *with_ref)?
            }
            Op::FriendRemove { slot, to, with_ref } => {
                self.friend_op(*slot, "FRIEND_REMOVE", to, None, *with_ref)?
            }
            Op::Message {
                slot,
                to,
                encrypted,
                with_ref,
            } => self.message(*slot, to, *encrypted, *with_ref)?,
            Op::Disconnect { slot, with_ref } => {
                let conn = self.conn_of(*slot);
                let reference = self.fresh_ref(*with_ref);
                let had_session = self.conn_session.contains_key(&conn);
                let actions = self.text(
                    conn,
                    &with(r#"{"type":"DISCONNECT""#.to_owned(), reference.as_deref()),
                )?;
                let closed = actions
                    .iter()
                    .any(|a| matches!(a, Action::Close { conn: c, code: 1000, .. } if *c == conn));
                prop_assert_eq!(closed, had_session);
            }
            Op::Ping { slot } => {
                let conn = self.conn_of(*slot);
                let actions = self.text(conn, r#"{"type":"PING","ref":"p"}"#)?;
                let expected = r#"{"type":"PONG","ref":"p"}"#;
                let pong =
                    matches!(&actions[..], [Action::Send { frame, .. }] if frame == expected);
                prop_assert!(pong, "PING got {:?}", actions);
            }
            Op::Garbage { slot, which } => {
                let conn = self.conn_of(*slot);
                let actions = self.text(conn, GARBAGE[*which])?;
                prop_assert!(
                    Self::error_to(&actions, conn).is_some(),
                    "garbage accepted: {}",
                    GARBAGE[*which]
                );
            }
            Op::GarbageBurst { slot } => {
                let conn = self.conn_of(*slot);
                for _ in 0..101 {
                    if self.slots[*slot] != Some(conn) {
                        break;
                    }
                    self.text(conn, "garbage")?;
                }
                prop_assert!(
                    self.slots[*slot] != Some(conn),
                    "101 errors did not close the connection"
                );
            }
            Op::Binary { slot } => {
                let conn = self.conn_of(*slot);
                self.router.binary(conn, self.now, &mut self.sink);
                let out = self.sink.take();
                self.observe(&out)?;
                let code = Self::error_to(&out, conn);
                prop_assert_eq!(code.as_deref(), Some("bad_json"));
            }
            Op::Closed { slot } => {
                if let Some(conn) = self.slots[*slot].take() {
                    self.open.remove(&conn);
                    self.sink.backlogs.forget(conn);
                    self.router.closed(conn, self.now, &mut self.sink);
                    let out = self.sink.take();
                    if let Some(id) = self.conn_session.remove(&conn) {
                        self.session_lost_conn(id);
                    }
                    self.observe(&out)?;
                    self.router.closed(conn, self.now, &mut self.sink);
                    let again = self.sink.take();
                    prop_assert!(again.is_empty(), "closed() is not idempotent");
                }
            }
            Op::Befriend { a, b } => {
                let (Some(_), Some(_)) = (self.session_conn(*a)?, self.session_conn(*b)?) else {
                    return Ok(());
                };
                // a's CONNECT may have been refused after b's succeeded (or the reverse).
                let (Some(requester), Some(_)) =
                    (self.slot_ids[*a].clone(), self.slot_ids[*b].clone())
                else {
                    return Ok(());
                };
                self.friend_op(
                    *a,
                    "FRIEND_REQUEST",
                    &Target::Slot(*b, Spelling::Exact),
                    Some(KEY),
                    false,
                )?;
                self.friend_op(*b, "FRIEND_ACCEPT", &Target::Id(requester), Some(KEY), true)?;
            }
            Op::Flushed { slot, left } => {
                if let Some(conn) = self.slots[*slot] {
                    self.sink.flushed(conn, *left);
                }
            }
            Op::Advance { ms } => {
                self.now.mono_ms += ms;
                self.now.unix_ms += ms;
                let now = self.now.mono_ms;
                let expired: Vec<String> = self
                    .window
                    .iter()
                    .filter(|(_, deadline)| **deadline <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &expired {
                    self.die(id);
                }
                self.router.tick(self.now, &mut self.sink);
                let out = self.sink.take();
                self.observe(&out)?;
            }
        }
        Ok(())
    }

    fn friend_op(
        &mut self,
        slot: usize,
        kind: &str,
        to: &Target,
        key: Option<&str>,
        with_ref: bool,
    ) -> Result<(), TestCaseError> {
        let Some(conn) = self.session_conn(slot)? else {
            return Ok(());
        };
        let reference = self.fresh_ref(with_ref);
        let sender = self.conn_session.get(&conn).cloned().unwrap_or_default();
        let (to_text, target) = self.resolve(to, Some(&sender));
        let mut text = format!(r#"{{"type":"{kind}","to":"{to_text}""#);
        if let Some(key) = key {
            text.push_str(&format!(r#","public_key":"{key}""#));
        }
        let actions = self.text(conn, &with(text, reference.as_deref()))?;
        let error = Self::error_to(&actions, conn);
        let Some(target) = target else {
            prop_assert!(error.is_some(), "{} to an unknown ID accepted", kind);
            return Ok(());
        };
        let friends = pair(&sender, &target);
        let request = (sender.clone(), target.clone());
        let reverse = (target.clone(), sender.clone());
        match (kind, error.as_deref()) {
            ("FRIEND_REQUEST", None) => {
                prop_assert!(
                    !self.friends.contains(&friends),
                    "request to a friend accepted"
                );
                let forwarded = !frames_to_session(&actions, self, &target).is_empty();
                let repeated = !self.pending.insert(request);
                prop_assert!(
                    !(repeated && forwarded),
                    "a repeated request was forwarded again"
                );
            }
            ("FRIEND_REQUEST", Some("already_friends")) => {
                prop_assert!(self.friends.contains(&friends))
            }
            ("FRIEND_ACCEPT", None) => {
                prop_assert!(
                    self.pending.remove(&reverse),
                    "accepted without a pending request"
                );
                self.pending.remove(&request);
                self.friends.insert(friends);
            }
            ("FRIEND_DECLINE", None) => {
                prop_assert!(self.pending.remove(&reverse), "declined nothing")
            }
            ("FRIEND_ACCEPT" | "FRIEND_DECLINE", Some("no_pending_request")) => {
                prop_assert!(
                    !self.pending.contains(&reverse),
                    "pending request not found"
                );
            }
            ("FRIEND_REMOVE", None) => {
                prop_assert!(self.friends.remove(&friends), "removed a non-friend")
            }
            ("FRIEND_REMOVE", Some("not_friends")) => {
                prop_assert!(!self.friends.contains(&friends))
            }
            _ => {}
        }
        if error.is_some() {
            return Ok(());
        }
        if let Some(reference) = reference {
            prop_assert!(
                Self::ack_to(&actions, conn, &reference).is_some(),
                "no ACK for {kind}"
            );
        }
        Ok(())
    }

    fn message(
        &mut self,
        slot: usize,
        to: &Target,
        encrypted: bool,
        with_ref: bool,
    ) -> Result<(), TestCaseError> {
        let Some(conn) = self.session_conn(slot)? else {
            return Ok(());
        };
        let reference = self.fresh_ref(with_ref);
        let me = self.conn_session.get(&conn).cloned();
        let (to_text, target) = self.resolve(to, me.as_deref());
        self.next_marker += 1;
        let marker = self.next_marker;
        let payload = if encrypted {
            format!("{}{marker}", ARMOR.replace('\n', "\\n"))
        } else {
            "hi".to_owned()
        };
        let sender = self.conn_session.get(&conn).cloned();
        // Registered before sending, so a delivery in this very batch is recognised.
        let index = self.ledger.record(
            marker,
            reference.as_deref(),
            sender.clone().unwrap_or_default(),
            target.clone().unwrap_or_default(),
            Owed {
                accepted: false,
                reference: reference.clone(),
            },
        );
        let text = format!(r#"{{"type":"MESSAGE","to":"{to_text}","payload":"{payload}""#);
        let actions = self.text(conn, &with(text, reference.as_deref()))?;
        if let Some(code) = Self::error_to(&actions, conn) {
            if let (Some(sender), Some(target), "not_friends") = (&sender, &target, code.as_str()) {
                prop_assert!(
                    !self.friends.contains(&pair(sender, target)),
                    "friends refused as not_friends"
                );
            }
            prop_assert_eq!(
                self.ledger.entry(index).delivered,
                0,
                "refused but delivered"
            );
            self.ledger.forget(marker, reference.as_deref());
            return Ok(());
        }
        let (Some(sender), Some(target)) = (sender, target) else {
            return Err(TestCaseError::fail(
                "MESSAGE accepted without a session or known target".to_owned(),
            ));
        };
        prop_assert!(encrypted, "plain payload accepted");
        self.ledger.entry_mut(index).extra.accepted = true;
        prop_assert!(
            self.friends.contains(&pair(&sender, &target)),
            "MESSAGE accepted between non-friends"
        );
        let delivered_now = self.ledger.entry(index).delivered == 1;
        let recipient_away = self.window.contains_key(&target);
        prop_assert_eq!(
            delivered_now,
            !recipient_away,
            "delivered now iff the recipient is connected"
        );
        if let Some(reference) = &reference {
            let ack = Self::ack_to(&actions, conn, reference);
            prop_assert!(ack.is_some(), "no ACK for an accepted MESSAGE");
            let queued = ack.and_then(|a| a.get("queued").cloned());
            prop_assert_eq!(queued, recipient_away.then_some(Value::Bool(true)));
        }
        Ok(())
    }

    fn check_agreement(&self) -> Result<(), TestCaseError> {
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
    fn finish(&mut self) -> Result<(), TestCaseError> {
        if self.grace == 0 {
            // Nothing is ever queued, and sessions cannot be resumed.
            prop_assert_eq!(self.router.stats().queued_frames, 0);
            return self.check_ledger();
        }
        let mut live: Vec<String> = self.alive.iter().cloned().collect();
        live.sort();
        for id in live {
            let conn = self.next_conn;
            self.next_conn += 1;
            self.router.open_from(conn, peer_of(conn), self.now);
            self.open.insert(conn);
            let token = self.tokens.get(&id).cloned().unwrap_or_default();
            let text =
                format!(r#"{{"type":"CONNECT","resume":{{"id":"{id}","token":"{token}"}}}}"#);
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

/// Frames in `actions` sent to the connection of session `id`.
fn frames_to_session(actions: &[Action], model: &Model, id: &str) -> Vec<String> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send { conn, frame }
                if model.conn_session.get(conn).map(String::as_str) == Some(id) =>
            {
                Some(frame.clone())
            }
            _ => None,
        })
        .collect()
}

fn with(mut head: String, reference: Option<&str>) -> String {
    if let Some(reference) = reference {
        head.push_str(&format!(r#","ref":"{reference}""#));
    }
    head.push('}');
    head
}

proptest! {
    // No regression files: a failure prints its minimal input, which is the thing to keep.
    #![proptest_config(ProptestConfig {
        cases: 160,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn router_keeps_its_invariants_and_its_promises(
        config in config(),
        seed in any::<u64>(),
        ops in vec(op(), 1..160),
    ) {
        let mut model = Model::new(config, seed);
        for op in &ops {
            model.apply(op)?;
            model.check_agreement()?;
        }
        model.finish()?;
    }
}

/// Even connections speak version 2 (and get FRIEND_CANCEL), odd ones version 1.
fn connect_of(conn: ConnId) -> &'static str {
    if conn.is_multiple_of(2) {
        r#"{"type":"CONNECT","version":2}"#
    } else {
        r#"{"type":"CONNECT"}"#
    }
}
