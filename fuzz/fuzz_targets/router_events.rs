//! The routing core driven by arbitrary sequences of events over several connections: open,
//! text (from a small grammar of valid-ish frames naming IDs the router handed out, plus raw
//! fuzzer text), binary, closed, flushed, and ticks with advancing time.
//!
//! After every event: `Router::check_invariants()` holds, every frame goes to an open connection
//! and is a JSON object with a string `type`, and `closed()` after the router's own `Close` does
//! nothing. The ledger: a MESSAGE is delivered at most once, only to its recipient and from its
//! sender; a plain ACK means it was delivered in the same batch, a queued ACK that it was not; an
//! UNDELIVERED goes only to its sender and never while the recipient's session is connected; and
//! at the end, after every session still alive is resumed, each MESSAGE acknowledged as queued
//! whose sender is alive was delivered or reported UNDELIVERED exactly once.
#![no_main]

use std::collections::{HashMap, HashSet};

use libfuzzer_sys::arbitrary::{Result as ArbitraryResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use secchat::protocol::{self, Handle, Request};
use secchat::router::{Action, ConnId, Now, Recorder, Router, RouterConfig, SeededEntropy};
use serde_json::{Value, json};

#[path = "../../tests/router_model/mod.rs"]
mod router_model;
use router_model::{ARMOR, Ledger, START, frames_to, peer_of};

const SLOTS: usize = 6;
const MAX_EVENTS: usize = 400;
const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nfuzz";

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(mut harness) = Harness::new(&mut input) else {
        return;
    };
    for _ in 0..MAX_EVENTS {
        if input.is_empty() || harness.step(&mut input).is_err() {
            break;
        }
        harness.check();
    }
    harness.finish();
});

/// What the fuzz harness adds to a ledger entry: which sessions (by epoch) sent and were to
/// receive it, and whether its ACK said queued.
struct Owed {
    sender_epoch: u32,
    recipient_epoch: u32,
    queued_ack: bool,
}

struct Harness {
    router: Router<SeededEntropy>,
    /// Counts every frame as unsent until a flush op says what the socket took.
    sink: Recorder,
    now: Now,
    next_conn: ConnId,
    slots: [Option<ConnId>; SLOTS],
    /// The session each slot's connection last had (kept after the connection closes, so that
    /// sessions in their resume window can be named and resumed).
    slot_ids: [Option<String>; SLOTS],
    open: HashSet<ConnId>,
    conn_session: HashMap<ConnId, String>,
    /// Every ID handed out, in order (targets are drawn from it).
    issued: Vec<String>,
    tokens: HashMap<String, String>,
    /// Bumped each time an ID is handed to a new session, so a reused ID is a different session.
    epochs: HashMap<String, u32>,
    /// Pairs the harness made friends (a successful FRIEND_ACCEPT), for choosing targets only:
    /// it goes stale when sessions end, and the router is never checked against it.
    friend_hints: HashSet<(String, String)>,
    ledger: Ledger<Owed>,
    next_number: u64,
}

/// Who a frame names in `to`.
enum Target {
    Slot(usize),
    Friend(usize),
    Issued(usize),
    Id(String),
    Garbage(String),
}

impl Harness {
    fn new(input: &mut Unstructured<'_>) -> ArbitraryResult<Harness> {
        let config = RouterConfig {
            max_sessions: input.int_in_range(2..=8)?,
            resume_grace_ms: *input.choose(&[0, 500, 3_000, 30_000])?,
            rate_messages_per_sec: *input.choose(&[0, 3, 50])?,
            rate_friend_requests_per_min: *input.choose(&[0, 4, 20])?,
            max_message_bytes: 65_536,
            max_unsent_bytes: *input.choose(&[0, 400, 262_144])?,
            max_queue_bytes: *input.choose(&[300, 700, 262_144])?,
            max_queue_len: input.int_in_range(1..=5)?,
            max_pending_requests: input.int_in_range(1..=4)?,
            max_sessions_per_peer: *input.choose(&[0, 1, 3])?,
            max_buffered_bytes: *input.choose(&[1_000, 64 << 20])?,
            rate_sessions_per_address_per_min: *input.choose(&[0, 3])?,
            rate_friend_requests_per_address_per_min: *input.choose(&[0, 3])?,
            max_public_key_bytes: *input.choose(&[40, 16_384])?,
            max_pending_incoming: input.int_in_range(1..=3)?,
            max_pending_incoming_per_address: input.int_in_range(1..=2)?,
            rate_incoming_requests_per_min: *input.choose(&[0, 2, 4])?,
            rate_incoming_requests_per_address_per_min: *input.choose(&[0, 1, 3])?,
            max_handles: input.int_in_range(1..=8)?,
            max_handles_per_session: input.int_in_range(1..=4)?,
            mailbox_bytes: *input.choose(&[0, 600, 2_000, 64 << 20])?,
            mailbox_letters_per_handle: input.int_in_range(1..=3)?,
            mailbox_bytes_per_handle: *input.choose(&[300, 700, 1 << 20])?,
            mailbox_ttl_ms: *input.choose(&[1, 1_000, 60_000])?,
            cluster: false,
            node_name: String::new(),
        };
        let seed = input.arbitrary::<u64>()?;
        Ok(Harness {
            router: Router::new(config, SeededEntropy(seed)),
            sink: Recorder::default(),
            now: START,
            next_conn: 1,
            slots: [None; SLOTS],
            slot_ids: Default::default(),
            open: HashSet::new(),
            conn_session: HashMap::new(),
            issued: Vec::new(),
            tokens: HashMap::new(),
            epochs: HashMap::new(),
            friend_hints: HashSet::new(),
            ledger: Ledger::new(),
            next_number: 0,
        })
    }

    fn number(&mut self) -> u64 {
        self.next_number += 1;
        self.next_number
    }

    fn step(&mut self, input: &mut Unstructured<'_>) -> ArbitraryResult<()> {
        let slot = input.choose_index(SLOTS)?;
        match input.int_in_range(0..=46u8)? {
            0 => {
                self.conn(slot);
            }
            1 => {
                let with_ref = input.arbitrary()?;
                let mut frame = json!({"type": "CONNECT"});
                if input.arbitrary()? {
                    frame["version"] = json!(2);
                }
                if with_ref {
                    frame["ref"] = json!("c");
                }
                let conn = self.conn(slot);
                self.text(conn, &frame.to_string());
            }
            2..=4 => {
                let who = if input.ratio(3, 4)? {
                    self.slot_ids[slot].clone()
                } else {
                    let n = input.arbitrary::<usize>()?;
                    self.issued.get(n % self.issued.len().max(1)).cloned()
                };
                let corrupt = input.ratio(1, 8)?;
                if let Some(who) = who {
                    self.resume(slot, &who, corrupt);
                }
            }
            5..=8 => {
                let other = input.choose_index(SLOTS)?;
                self.befriend(slot, other);
            }
            9 | 10 => {
                let target = self.target(input)?;
                let good_key = !input.ratio(1, 10)?;
                self.friend(slot, "FRIEND_REQUEST", target, good_key.then_some(KEY));
            }
            11 => {
                let target = self.target(input)?;
                let good_key = !input.ratio(1, 10)?;
                self.friend(slot, "FRIEND_ACCEPT", target, good_key.then_some(KEY));
            }
            12 => {
                let target = self.target(input)?;
                let kind = *input.choose(&["FRIEND_DECLINE", "FRIEND_REMOVE"])?;
                self.friend(slot, kind, target, None);
            }
            13..=22 => {
                let target = if input.ratio(3, 4)? {
                    Target::Friend(input.arbitrary()?)
                } else {
                    self.target(input)?
                };
                let encrypted = !input.ratio(1, 20)?;
                let with_ref = !input.ratio(1, 5)?;
                self.message(slot, target, encrypted, with_ref);
            }
            23 => {
                let with_ref = input.arbitrary()?;
                let frame = if with_ref {
                    r#"{"type":"DISCONNECT","ref":"d"}"#
                } else {
                    r#"{"type":"DISCONNECT"}"#
                };
                let conn = self.conn(slot);
                self.text(conn, frame);
            }
            24 | 25 => {
                let raw = input.arbitrary::<&str>()?;
                self.raw(slot, raw);
            }
            26 => {
                let conn = self.conn(slot);
                self.router.binary(conn, self.now, &mut self.sink);
                let out = self.sink.take();
                self.observe(&out);
            }
            27..=30 => self.close(slot),
            31..=34 => {
                // A complete flush, or a partial one leaving up to 512 KiB (twice the cap).
                let still_unsent = if input.arbitrary()? {
                    0
                } else {
                    input.int_in_range(0..=512 * 1024)?
                };
                if let Some(conn) = self.slots[slot] {
                    self.sink.flushed(conn, still_unsent);
                }
            }
            35..=39 => {
                let ms = match input.int_in_range(0..=2u8)? {
                    0 => input.int_in_range(0..=50u64)?,
                    1 => input.int_in_range(0..=2_000u64)?,
                    _ => input.int_in_range(0..=70_000u64)?,
                };
                self.advance(ms);
            }
            41..=42 => {
                let kind = *input.choose(&["LISTEN", "UNLISTEN"])?;
                let count = input.int_in_range(1..=3usize)?;
                let mut handles = Vec::new();
                for _ in 0..count {
                    handles.push(self.handle(input)?);
                }
                let mut frame = json!({"type": kind, "handles": handles});
                if input.arbitrary()? {
                    frame["ref"] = json!("l");
                }
                if let Some(conn) = self.session_conn_v2(slot, input.ratio(7, 8)?) {
                    self.text(conn, &frame.to_string());
                }
            }
            43..=45 => {
                let payload = if input.ratio(1, 20)? { "plain" } else { ARMOR };
                // A single handle, or several (PROTOCOL.md §11), now and then one named twice.
                let fanout = input.ratio(1, 3)?;
                let mut frame = if fanout {
                    let count = input.int_in_range(1..=4usize)?;
                    let mut handles = Vec::new();
                    for _ in 0..count {
                        handles.push(self.handle(input)?);
                    }
                    json!({"type": "MESSAGE", "handles": handles, "payload": payload})
                } else {
                    let handle = self.handle(input)?;
                    json!({"type": "MESSAGE", "handle": handle, "payload": payload})
                };
                if input.ratio(1, 10)? {
                    frame["mailbox"] = json!(false);
                }
                let reference = (!input.ratio(1, 5)?).then(|| format!("h{}", self.number()));
                if let Some(reference) = &reference {
                    frame["ref"] = json!(reference);
                }
                if let Some(conn) = self.session_conn_v2(slot, input.ratio(7, 8)?) {
                    let out = self.text(conn, &frame.to_string());
                    if fanout && let Some(reference) = reference {
                        check_fanout_replies(&frame, &reference, frames_to(&out, conn).collect());
                    }
                }
            }
            46 => {
                if let Some(conn) = self.session_conn_v2(slot, input.ratio(7, 8)?) {
                    self.text(conn, r#"{"type":"FETCH","ref":"f"}"#);
                }
            }
            _ => {
                // An error flood: the connection must be closed within 101 errors.
                let conn = self.conn(slot);
                for _ in 0..101 {
                    if !self.open.contains(&conn) {
                        break;
                    }
                    self.text(conn, "not json");
                }
                assert!(!self.open.contains(&conn), "101 errors did not close");
            }
        }
        Ok(())
    }

    /// The connection on `slot`, opened when there is none.
    fn conn(&mut self, slot: usize) -> ConnId {
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

    /// The slot's connection with a session, sending CONNECT first when it has none (as a client
    /// would); `None` when that CONNECT was refused (server full).
    fn session_conn(&mut self, slot: usize) -> Option<ConnId> {
        let conn = self.conn(slot);
        if !self.conn_session.contains_key(&conn) {
            self.text(conn, r#"{"type":"CONNECT"}"#);
        }
        self.conn_session.contains_key(&conn).then_some(conn)
    }

    /// Like `session_conn`, with a version-2 CONNECT when `v2`.
    fn session_conn_v2(&mut self, slot: usize, v2: bool) -> Option<ConnId> {
        let conn = self.conn(slot);
        if !self.conn_session.contains_key(&conn) {
            let connect = if v2 {
                r#"{"type":"CONNECT","version":2}"#
            } else {
                r#"{"type":"CONNECT"}"#
            };
            self.text(conn, connect);
        }
        self.conn_session.contains_key(&conn).then_some(conn)
    }

    /// One of a few handles (so that they meet), or now and then a string that is not one.
    fn handle(&mut self, input: &mut Unstructured<'_>) -> ArbitraryResult<String> {
        Ok(if input.ratio(1, 16)? {
            input.arbitrary::<String>()?
        } else {
            let n = input.int_in_range(0..=5u8)?;
            Handle::from_seed(&[n; 43]).as_str().to_owned()
        })
    }

    fn target(&mut self, input: &mut Unstructured<'_>) -> ArbitraryResult<Target> {
        Ok(match input.int_in_range(0..=9u8)? {
            0..=5 => Target::Slot(input.choose_index(SLOTS)?),
            6..=8 => Target::Issued(input.arbitrary()?),
            _ => Target::Garbage(input.arbitrary::<String>()?),
        })
    }

    /// The `to` text and, when it names an issued ID, that ID. Spelled as clients may.
    fn resolve(&self, target: Target, me: Option<&str>, spelling: u64) -> (String, Option<String>) {
        let id = match target {
            Target::Slot(slot) => self.slot_ids[slot].as_ref(),
            Target::Friend(n) => {
                let me = me.unwrap_or_default();
                let mut friends: Vec<&String> = self
                    .friend_hints
                    .iter()
                    .filter_map(|(a, b)| (a == me).then_some(b).or((b == me).then_some(a)))
                    .collect();
                friends.sort();
                friends.get(n % friends.len().max(1)).copied()
            }
            Target::Issued(n) if !self.issued.is_empty() => self.issued.get(n % self.issued.len()),
            Target::Issued(_) => None,
            Target::Id(id) => return (id.clone(), Some(id)),
            Target::Garbage(text) => return (text, None),
        };
        let Some(id) = id else {
            return ("000000".to_owned(), None);
        };
        let text = match spelling % 3 {
            0 => id.clone(),
            1 => format!(" {} ", id.to_lowercase()),
            _ => format!(
                "{}-{}",
                id.get(..3).unwrap_or(""),
                id.get(3..).unwrap_or("")
            ),
        };
        (text, Some(id.clone()))
    }

    fn resume(&mut self, slot: usize, id: &str, corrupt: bool) {
        let mut token = self.tokens.get(id).cloned().unwrap_or_default();
        if corrupt {
            token = token.chars().rev().collect();
        }
        let frame = json!({"type": "CONNECT", "resume": {"id": id, "token": token}});
        let conn = self.conn(slot);
        self.text(conn, &frame.to_string());
    }

    /// The usual handshake in one go: `a` requests, `b` accepts.
    fn befriend(&mut self, a: usize, b: usize) {
        if self.session_conn(a).is_none() || self.session_conn(b).is_none() {
            return;
        }
        // b's CONNECT may have been refused after a's succeeded.
        let Some(requester) = self.slot_ids[a].clone() else {
            return;
        };
        self.friend(a, "FRIEND_REQUEST", Target::Slot(b), Some(KEY));
        self.friend(b, "FRIEND_ACCEPT", Target::Id(requester), Some(KEY));
    }

    fn friend(&mut self, slot: usize, kind: &str, target: Target, key: Option<&str>) {
        let Some(conn) = self.session_conn(slot) else {
            return;
        };
        let me = self.conn_session.get(&conn).cloned();
        let spelling = self.next_number;
        let (to, target_id) = self.resolve(target, me.as_deref(), spelling);
        let reference = format!("f{}", self.number());
        let mut frame = json!({"type": kind, "to": to, "ref": reference});
        if let Some(key) = key {
            frame["public_key"] = json!(key);
        }
        let out = self.text(conn, &frame.to_string());
        let refused = frames_to(&out, conn).any(|reply| reply["type"] == "ERROR");
        if let (false, Some(me), Some(other)) = (refused, me, target_id) {
            let pair = if me <= other {
                (me, other)
            } else {
                (other, me)
            };
            match kind {
                "FRIEND_ACCEPT" => {
                    self.friend_hints.insert(pair);
                }
                "FRIEND_REMOVE" => {
                    self.friend_hints.remove(&pair);
                }
                _ => {}
            }
        }
    }

    fn message(&mut self, slot: usize, target: Target, encrypted: bool, with_ref: bool) {
        let Some(conn) = self.session_conn(slot) else {
            return;
        };
        let marker = self.number();
        let me = self.conn_session.get(&conn).cloned();
        let (to, recipient) = self.resolve(target, me.as_deref(), marker);
        let reference = with_ref.then(|| format!("m{marker}"));
        let payload = if encrypted {
            format!("{ARMOR}{marker}")
        } else {
            format!("plain {marker}")
        };
        let mut frame = json!({"type": "MESSAGE", "to": to, "payload": payload});
        if let Some(reference) = &reference {
            frame["ref"] = json!(reference);
        }
        let sender = self.conn_session.get(&conn).cloned();
        // Registered before sending: delivery happens within the same batch.
        let owed = Owed {
            sender_epoch: self.epoch(sender.as_deref()),
            recipient_epoch: self.epoch(recipient.as_deref()),
            queued_ack: false,
        };
        let index = self.ledger.record(
            marker,
            reference.as_deref(),
            sender.unwrap_or_default(),
            recipient.unwrap_or_default(),
            owed,
        );
        let out = self.text(conn, &frame.to_string());
        let replies: Vec<Value> = frames_to(&out, conn).collect();
        let refused = replies.iter().any(|r| r["type"] == "ERROR");
        let entry = self.ledger.entry_mut(index);
        if refused {
            assert_eq!(entry.delivered, 0, "a refused MESSAGE was delivered");
            assert!(
                !replies.iter().any(|r| r["type"] == "ACK"),
                "a MESSAGE got both ACK and ERROR"
            );
            return;
        }
        assert!(encrypted, "a plain payload was accepted");
        let Some(reference) = &reference else {
            return;
        };
        let ack = replies
            .iter()
            .find(|r| r["type"] == "ACK" && r["ref"] == reference.as_str());
        let Some(ack) = ack else {
            panic!("MESSAGE {reference} got neither ACK nor ERROR: {replies:?}");
        };
        if ack["queued"] == true {
            entry.extra.queued_ack = true;
            assert_eq!(entry.delivered, 0, "queued and delivered at once");
        } else {
            assert!(ack.get("queued").is_none(), "queued other than true: {ack}");
            assert_eq!(entry.delivered, 1, "a plain ACK without delivery");
        }
    }

    /// Fuzzer text as a frame, except a MESSAGE with a payload: it could mimic the harness's
    /// markers and refs and confuse the ledger (the grammar covers MESSAGEs).
    fn raw(&mut self, slot: usize, raw: &str) {
        if let Ok(frame) = protocol::decode(raw)
            && let Request::Message {
                payload: Some(_), ..
            } = frame.request
        {
            return;
        }
        let conn = self.conn(slot);
        let out = self.text(conn, raw);
        for reply in frames_to(&out, conn) {
            if reply["type"] == "ERROR" {
                let code = reply["code"].as_str().unwrap_or("");
                assert!(!code.is_empty(), "ERROR without code");
            }
        }
    }

    fn close(&mut self, slot: usize) {
        let Some(conn) = self.slots[slot].take() else {
            return;
        };
        self.open.remove(&conn);
        self.conn_session.remove(&conn);
        self.sink.backlogs.forget(conn);
        self.router.closed(conn, self.now, &mut self.sink);
        let out = self.sink.take();
        self.observe(&out);
        self.router.closed(conn, self.now, &mut self.sink);
        let again = self.sink.take();
        assert!(again.is_empty(), "closed() twice did something: {again:?}");
    }

    fn advance(&mut self, ms: u64) {
        self.now.mono_ms += ms;
        self.now.unix_ms += ms;
        // As the event loop does: tick while something is due (expiry goes in chunks).
        for _ in 0..64 {
            self.router.tick(self.now, &mut self.sink);
            let out = self.sink.take();
            self.observe(&out);
            if self
                .router
                .next_deadline_ms()
                .is_none_or(|deadline| deadline > self.now.mono_ms)
            {
                return;
            }
        }
        panic!("64 ticks left a due deadline");
    }

    fn epoch(&self, id: Option<&str>) -> u32 {
        id.and_then(|id| self.epochs.get(id)).copied().unwrap_or(0)
    }

    fn text(&mut self, conn: ConnId, text: &str) -> Vec<Action> {
        self.router.text(conn, text, self.now, &mut self.sink);
        let out = self.sink.take();
        self.observe(&out);
        out
    }

    /// Checks and records one batch of actions, in order.
    fn observe(&mut self, actions: &[Action]) {
        let mut closed_now = Vec::new();
        for action in actions {
            match action {
                Action::Send { conn, frame } => {
                    assert!(self.open.contains(conn), "frame to a closed conn: {frame}");
                    let value: Value = serde_json::from_str(frame)
                        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {frame}"));
                    assert!(value["type"].is_string(), "frame without type: {frame}");
                    self.observe_frame(*conn, &value);
                }
                Action::Close { conn, code, .. } => {
                    assert!(self.open.remove(conn), "close of a conn that is not open");
                    let had_session = self.conn_session.remove(conn).is_some();
                    match code {
                        1000 | 4001 => assert!(had_session, "{code} without a session"),
                        1013 => assert!(!had_session, "1013 with a session"),
                        1008 => {}
                        other => panic!("unexpected close code {other}"),
                    }
                    for slot in &mut self.slots {
                        if *slot == Some(*conn) {
                            *slot = None;
                        }
                    }
                    closed_now.push(*conn);
                }
                Action::Bus(output) => {
                    panic!("a router outside a cluster used the bus: {output:?}")
                }
            }
        }
        // The loop reports every connection the router closed: that must change nothing.
        for conn in closed_now {
            self.sink.backlogs.forget(conn);
            self.router.closed(conn, self.now, &mut self.sink);
            let out = self.sink.take();
            assert!(
                out.is_empty(),
                "closed() after Close did something: {out:?}"
            );
        }
    }

    fn observe_frame(&mut self, conn: ConnId, value: &Value) {
        let receiver = self.conn_session.get(&conn).cloned();
        match value["type"].as_str().unwrap_or("") {
            "CONNECT" => self.observe_connect(conn, value),
            "FRIEND_CANCEL" => {
                // Sent when the requester's session ends, or when a full list of pending
                // requests makes room (the requester may then still be connected).
                let from = value["from"].as_str().unwrap_or("");
                assert!(
                    self.issued.iter().any(|id| id == from),
                    "FRIEND_CANCEL naming an ID never issued: {value}"
                );
                assert!(
                    receiver.is_some(),
                    "FRIEND_CANCEL to a connection without a session"
                );
            }
            // Mail to a handle carries no `from`: the ledger of friends' messages knows nothing
            // of it. What holds: it goes to a session, and an UNDELIVERED says why.
            "MESSAGE" | "HANDLE_TAKEN" | "HANDLE_DROPPED" if value.get("handle").is_some() => {
                assert!(
                    receiver.is_some(),
                    "{value} to a connection without a session"
                );
            }
            "UNDELIVERED" if value.get("handle").is_some() => {
                assert!(
                    receiver.is_some(),
                    "{value} to a connection without a session"
                );
                assert!(
                    ["expired", "evicted", "peer_busy", "no_mailbox"]
                        .iter()
                        .any(|reason| value["reason"] == *reason),
                    "{value}"
                );
                assert!(
                    value["ref"].is_string(),
                    "UNDELIVERED without its ref: {value}"
                );
            }
            "MESSAGE" => {
                if let Err(broken) = self.ledger.delivered(value, receiver.as_ref()) {
                    panic!("{broken}");
                }
            }
            "UNDELIVERED" => {
                let index = self
                    .ledger
                    .undelivered_index(value)
                    .unwrap_or_else(|broken| panic!("{broken}"));
                let entry = self.ledger.entry(index);
                let recipient_connected =
                    self.conn_session.values().any(|id| *id == entry.recipient)
                        && self.epochs.get(&entry.recipient) == Some(&entry.extra.recipient_epoch);
                assert!(
                    entry.extra.queued_ack,
                    "UNDELIVERED for a MESSAGE never queued"
                );
                assert!(
                    !recipient_connected,
                    "UNDELIVERED while the recipient is here"
                );
                if let Err(broken) = self.ledger.undelivered(index, value, receiver.as_ref()) {
                    panic!("{broken}");
                }
            }
            _ => {}
        }
    }

    fn observe_connect(&mut self, conn: ConnId, value: &Value) {
        let id = value["id"].as_str().unwrap_or_default().to_owned();
        let token = value["token"].as_str().unwrap_or_default().to_owned();
        assert_eq!(id.len(), 6, "CONNECT reply without an ID: {value}");
        assert_eq!(token.len(), 43, "CONNECT reply without a token");
        assert!(
            !self.conn_session.contains_key(&conn),
            "a second session on one conn"
        );
        if value["resumed"] == false {
            assert!(
                !self.conn_session.values().any(|other| *other == id),
                "a new session got a connected session's ID"
            );
            *self.epochs.entry(id.clone()).or_insert(0) += 1;
            self.issued.push(id.clone());
        } else {
            assert_eq!(value["resumed"], true);
        }
        self.tokens.insert(id.clone(), token);
        for (slot, slot_id) in self.slots.iter().zip(self.slot_ids.iter_mut()) {
            if *slot == Some(conn) {
                *slot_id = Some(id.clone());
            }
        }
        self.conn_session.insert(conn, id);
    }

    fn check(&self) {
        if let Err(broken) = self.router.check_invariants() {
            panic!("invariant broken: {broken}");
        }
        let stats = self.router.stats();
        assert_eq!(stats.connections, self.open.len(), "open connections");
        for conn in self.conn_session.keys() {
            assert!(
                self.router.is_connected(*conn),
                "conn {conn} lost its session"
            );
        }
    }

    /// Resumes every session still alive on a fresh connection (delivering every queue), then
    /// settles the ledger.
    fn finish(&mut self) {
        let mut candidates: Vec<String> = self.tokens.keys().cloned().collect();
        candidates.sort();
        let mut alive = HashSet::new();
        for id in candidates {
            let token = self.tokens.get(&id).cloned().unwrap_or_default();
            let conn = self.next_conn;
            self.next_conn += 1;
            self.router.open_from(conn, peer_of(conn), self.now);
            self.open.insert(conn);
            let frame = json!({"type": "CONNECT", "resume": {"id": id, "token": token}});
            let out = self.text(conn, &frame.to_string());
            let resumed = frames_to(&out, conn)
                .any(|r| r["type"] == "CONNECT" && r["resumed"] == true && r["id"] == id.as_str());
            if resumed {
                alive.insert((id.clone(), self.epoch(Some(&id))));
            }
            self.check();
        }
        for entry in self.ledger.entries().filter(|e| e.extra.queued_ack) {
            let resolved = entry.delivered + entry.undelivered;
            if alive.contains(&(entry.recipient.clone(), entry.extra.recipient_epoch)) {
                assert_eq!(
                    entry.delivered, 1,
                    "queued for a live recipient, not delivered"
                );
            }
            if alive.contains(&(entry.sender.clone(), entry.extra.sender_epoch)) {
                assert_eq!(
                    resolved, 1,
                    "acknowledged as queued, then lost without a word"
                );
            }
        }
    }
}

/// The replies to a MESSAGE to several handles with `reference`: one ERROR and nothing else, or
/// an UNDELIVERED for each handle that got no copy and then one ACK whose `sent` and `queued`
/// account for every other handle. (A copy stored and then evicted to make room for a later copy
/// is queued, and its eviction reported on its own: those UNDELIVEREDs are left out here.)
fn check_fanout_replies(frame: &Value, reference: &str, replies: Vec<Value>) {
    let dropped_later = |r: &Value| r["reason"] == "evicted" || r["reason"] == "expired";
    let mine: Vec<&Value> = replies
        .iter()
        .filter(|r| r["ref"] == reference && !dropped_later(r))
        .collect();
    if mine.iter().any(|r| r["type"] == "ERROR") {
        assert_eq!(mine.len(), 1, "an ERROR and more: {mine:?}");
        return;
    }
    let handles = frame["handles"].as_array().map_or(0, Vec::len) as u64;
    let (last, refusals) = mine
        .split_last()
        .unwrap_or_else(|| panic!("no answer: {replies:?}"));
    assert_eq!(last["type"], "ACK", "{mine:?}");
    for refusal in refusals {
        assert_eq!(refusal["type"], "UNDELIVERED", "{mine:?}");
        assert!(
            refusal["reason"] == "peer_busy" || refusal["reason"] == "no_mailbox",
            "{refusal}"
        );
    }
    let sent = last["sent"].as_u64().unwrap_or(u64::MAX);
    let queued = last["queued"].as_u64().unwrap_or(u64::MAX);
    assert_eq!(sent + queued + refusals.len() as u64, handles, "{mine:?}");
    if frame["mailbox"] == false {
        assert_eq!(queued, 0, "a probe was stored: {mine:?}");
    }
}
