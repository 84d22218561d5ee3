//! The model of version 2's handles and mailbox (PROTOCOL.md §10): who listens on which of a
//! few handles, and a ledger of every MESSAGE to a handle.
//!
//! The ledger's promise: a message to a handle is delivered at most once, or reported
//! UNDELIVERED at most once, or still waits in the mailbox; never two of these. A message refused
//! is never delivered; one acknowledged without `queued` was delivered in the same batch to the
//! handle's connected listener; one acknowledged as queued waits (a probe never does). At the
//! end, every message still waiting whose sender could be told of its loss (the same session,
//! alive, speaking version 2, with a `ref`) is in the mailbox.
//!
//! What the model knows of the listeners is exact for connected sessions: every change to a
//! connected session's handles reaches it in the batch that made it (LISTENING, HANDLE_TAKEN,
//! HANDLE_DROPPED). A session in its resume window learns of its handles taken or dropped only
//! when it comes back; until then the model may still name it as a listener, which predicts
//! the same thing (a listener that is not connected gets nothing at once).

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use secchat::protocol::Handle;
use secchat::router::{Action, ConnId};

use super::{Model, speaks_v2};
use crate::router_model::{ARMOR, field, frames_to};

/// How many distinct handles the operations name: few, so that they meet.
pub const HANDLES: usize = 5;

/// The text of handle `n` of the pool.
pub fn handle_text(n: usize) -> String {
    Handle::from_seed(&[n as u8 + 1; 43]).as_str().to_owned()
}

/// Which handle of the pool `text` is.
fn handle_index(text: &str) -> Option<usize> {
    (0..HANDLES).find(|&n| handle_text(n) == text)
}

/// Where a MESSAGE to the pool is addressed (indexes, modulo the pool's size).
#[derive(Clone, Copy)]
pub enum To<'a> {
    /// One handle (`"handle"`, PROTOCOL.md §10): its copy refused is the frame refused.
    Handle(usize),
    /// Several (`"handles"`, PROTOCOL.md §11): each copy is delivered, queued or refused on its
    /// own, and a handle named twice refuses the whole frame.
    Handles(&'a [usize]),
}

/// Where a MESSAGE to a handle stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Sent; the router's answer not seen yet (a delivery in the same batch is recognised).
    Sending,
    Refused,
    Waiting,
    Delivered,
    Undelivered,
    /// Past its TTL after a tick, its sender not (yet) told: certainly gone (expired then, or
    /// evicted before, the UNDELIVERED waiting for its sender to come back).
    Expired,
}

pub struct Letter {
    pub sender: String,
    /// The sender's life when it sent (see [`Handles::lives`]): only a session whose life is
    /// still the same is sure to hear of the letter's loss.
    pub life: (u32, u32),
    pub handle: usize,
    pub reference: Option<String>,
    pub stored_ms: u64,
    pub state: State,
}

#[derive(Default)]
pub struct HandleLedger {
    pub letters: Vec<Letter>,
    /// A letter by its payload's marker and its handle (a MESSAGE to several handles makes one
    /// letter per handle, all with one marker).
    by_marker: HashMap<(u64, usize), usize>,
    /// A letter by its `ref` and its handle, likewise.
    by_ref: HashMap<(String, usize), usize>,
}

/// What the model tracks of handles: the listener of each handle of the pool, by session ID.
#[derive(Default)]
pub struct Handles {
    pub listeners: HashMap<usize, String>,
    pub ledger: HandleLedger,
    /// Each session's version (its last CONNECT), and how many times an ID was handed to a new
    /// session and a session was taken over by a version-1 client: a message's sender is told of
    /// its loss only by the same session, while it speaks version 2.
    pub versions: HashMap<String, u8>,
    pub lives: HashMap<String, (u32, u32)>,
}

impl Model {
    fn connected(&self, id: &str) -> bool {
        self.conn_session.values().any(|other| other == id)
    }

    pub(super) fn life_of(&self, id: &str) -> (u32, u32) {
        self.handles.lives.get(id).copied().unwrap_or_default()
    }

    fn speaks_v2(&self, id: &str) -> bool {
        self.handles.versions.get(id) == Some(&2)
    }

    /// How many handles of the pool the model says `id` listens on.
    fn listened_by(&self, id: &str) -> usize {
        self.handles
            .listeners
            .values()
            .filter(|listener| *listener == id)
            .count()
    }

    /// At most how many letters wait for the handles `id` listens on.
    fn waiting_at_most(&self, id: &str) -> usize {
        self.handles
            .ledger
            .letters
            .iter()
            .filter(|letter| letter.state == State::Waiting)
            .filter(|letter| {
                self.handles
                    .listeners
                    .get(&letter.handle)
                    .map(String::as_str)
                    == Some(id)
            })
            .count()
    }

    /// LISTEN or UNLISTEN of handles of the pool.
    pub(super) fn handle_list_op(
        &mut self,
        slot: usize,
        kind: &str,
        handles: &[usize],
        with_ref: bool,
    ) -> Result<(), TestCaseError> {
        let Some(conn) = self.session_conn(slot)? else {
            return Ok(());
        };
        let me = self.conn_session.get(&conn).cloned().unwrap_or_default();
        let reference = self.fresh_ref(with_ref).unwrap_or_else(|| "l".to_owned());
        let mut handles: Vec<usize> = handles.iter().map(|n| n % HANDLES).collect();
        let texts: Vec<String> = handles.iter().map(|&n| handle_text(n)).collect();
        let frame = serde_json::json!({"type": kind, "handles": texts, "ref": reference});
        let actions = self.text(conn, &frame.to_string())?;
        let error = Self::error_to(&actions, conn);
        if !self.speaks_v2(&me) {
            prop_assert_eq!(
                error.as_deref(),
                Some("unknown_type"),
                "{} from version 1",
                kind
            );
            return Ok(());
        }
        match error.as_deref() {
            None => {}
            Some("rate_limited") => return Ok(()),
            Some("too_many_handles") if kind == "LISTEN" => return Ok(()),
            Some(other) => prop_assert!(false, "{} refused with {}", kind, other),
        }
        handles.sort_unstable();
        handles.dedup();
        for handle in handles {
            if kind == "UNLISTEN" {
                if self.handles.listeners.get(&handle) == Some(&me) {
                    self.handles.listeners.remove(&handle);
                }
                continue;
            }
            let previous = self.handles.listeners.insert(handle, me.clone());
            if let Some(previous) = previous.filter(|p| *p != me && self.connected(p)) {
                let told = actions.iter().any(|action| match action {
                    Action::Send { conn, frame } => {
                        self.conn_session.get(conn) == Some(&previous)
                            && frame.contains("HANDLE_TAKEN")
                            && frame.contains(&handle_text(handle))
                    }
                    Action::Close { .. } | Action::Bus(_) => false,
                });
                prop_assert!(told, "the connected listener was not told HANDLE_TAKEN");
            }
        }
        let answer = frames_to(&actions, conn)
            .find(|value| field(value, "type") == "LISTENING")
            .ok_or_else(|| TestCaseError::fail(format!("no LISTENING for {kind}")))?;
        prop_assert_eq!(field(&answer, "ref"), reference.as_str());
        prop_assert_eq!(
            answer["handles"].as_u64(),
            Some(self.listened_by(&me) as u64),
            "LISTENING counts other handles than the model"
        );
        let waiting = answer["waiting"].as_u64().unwrap_or(u64::MAX);
        prop_assert!(
            waiting <= self.waiting_at_most(&me) as u64,
            "LISTENING says {} letters wait, the model knows of at most {}",
            waiting,
            self.waiting_at_most(&me)
        );
        Ok(())
    }

    pub(super) fn fetch(&mut self, slot: usize) -> Result<(), TestCaseError> {
        let Some(conn) = self.session_conn(slot)? else {
            return Ok(());
        };
        let me = self.conn_session.get(&conn).cloned().unwrap_or_default();
        let actions = self.text(conn, r#"{"type":"FETCH","ref":"f"}"#)?;
        let error = Self::error_to(&actions, conn);
        if !self.speaks_v2(&me) {
            prop_assert_eq!(
                error.as_deref(),
                Some("unknown_type"),
                "FETCH from version 1"
            );
            return Ok(());
        }
        if error.as_deref() == Some("rate_limited") {
            return Ok(());
        }
        prop_assert_eq!(error, None, "FETCH refused");
        let frames: Vec<Value> = frames_to(&actions, conn).collect();
        // Oldest first: stored letters arrive in the order of their markers (copies of one MESSAGE
        // to several handles the session listens on share theirs).
        let markers: Vec<u64> = frames
            .iter()
            .filter(|frame| field(frame, "type") == "MESSAGE")
            .filter_map(marker_of)
            .collect();
        prop_assert!(
            markers.windows(2).all(|pair| pair[0] <= pair[1]),
            "FETCH not oldest first: {:?}",
            markers
        );
        let fetched = frames
            .iter()
            .find(|frame| field(frame, "type") == "FETCHED")
            .ok_or_else(|| TestCaseError::fail("no FETCHED".to_owned()))?;
        prop_assert_eq!(field(fetched, "ref"), "f");
        let waiting = fetched["waiting"].as_u64().unwrap_or(u64::MAX);
        prop_assert!(
            waiting <= self.waiting_at_most(&me) as u64,
            "FETCHED says {} wait, the model knows of at most {}",
            waiting,
            self.waiting_at_most(&me)
        );
        Ok(())
    }

    /// MESSAGE to handles of the pool; `probe`: with `"mailbox":false`. A letter per handle in
    /// the ledger, each held to what a MESSAGE to that one handle promises; the ACK accounts for
    /// every copy.
    pub(super) fn message_to_pool(
        &mut self,
        slot: usize,
        to: To<'_>,
        probe: bool,
        encrypted: bool,
        with_ref: bool,
    ) -> Result<(), TestCaseError> {
        let Some(conn) = self.session_conn(slot)? else {
            return Ok(());
        };
        let me = self.conn_session.get(&conn).cloned().unwrap_or_default();
        let several = matches!(to, To::Handles(_));
        let (handles, key, address): (Vec<usize>, &str, Value) = match to {
            To::Handle(handle) => {
                let handle = handle % HANDLES;
                (vec![handle], "handle", Value::String(handle_text(handle)))
            }
            To::Handles(handles) => {
                let handles: Vec<usize> = handles.iter().map(|handle| handle % HANDLES).collect();
                let texts = handles.iter().map(|&handle| handle_text(handle)).collect();
                (handles, "handles", texts)
            }
        };
        let repeated = (1..handles.len()).any(|at| handles[..at].contains(&handles[at]));
        let reference = self.fresh_ref(with_ref);
        let (marker, payload) = self.next_payload(encrypted);
        // Recorded before sending, so that a delivery in this very batch is recognised.
        let mut indexes = Vec::new();
        if !repeated {
            for &handle in &handles {
                indexes.push(self.record_letter(&me, handle, marker, reference.as_ref()));
            }
        }
        let mut frame = serde_json::json!({"type": "MESSAGE", key: address, "payload": payload});
        if probe {
            frame["mailbox"] = Value::Bool(false);
        }
        if let Some(reference) = &reference {
            frame["ref"] = Value::String(reference.clone());
        }
        let connected: Vec<bool> = handles
            .iter()
            .map(|&handle| self.listener_connected(handle))
            .collect();
        let actions = self.text(conn, &frame.to_string())?;
        if let Some(code) = Self::error_to(&actions, conn) {
            for (&index, &handle) in indexes.iter().zip(&handles) {
                let letter = &self.handles.ledger.letters[index];
                prop_assert_eq!(
                    letter.state,
                    State::Sending,
                    "refused ({}) but a copy went",
                    code
                );
                self.handles.ledger.letters[index].state = State::Refused;
                if let Some(reference) = &reference {
                    self.handles
                        .ledger
                        .by_ref
                        .remove(&(reference.clone(), handle));
                }
            }
            // A copy to one handle refused is the frame refused; copies to several are refused
            // one by one (UNDELIVERED), never by the frame's ERROR.
            let listener_connected = connected.contains(&true);
            match code.as_str() {
                "bad_request" => prop_assert!(!self.speaks_v2(&me) || repeated, "bad_request"),
                "not_encrypted" => prop_assert!(!encrypted),
                "rate_limited" => {}
                "peer_busy" if !several => {
                    prop_assert!(listener_connected, "peer_busy without a listener")
                }
                "no_mailbox" if !several => {
                    prop_assert!(!listener_connected, "no_mailbox with a connected listener")
                }
                other => prop_assert!(false, "MESSAGE to {} refused with {}", key, other),
            }
            return Ok(());
        }
        prop_assert!(
            self.speaks_v2(&me),
            "a version-1 MESSAGE to {} accepted",
            key
        );
        prop_assert!(!repeated, "a handle named twice accepted");
        prop_assert!(encrypted, "plain payload accepted");
        // Without a ref, a copy to several handles refused is silent: the model counts it as
        // waiting, an upper bound the end check allows for. A copy to one handle is never
        // refused silently (that is the frame's ERROR).
        let silent = several && reference.is_none();
        let (mut sent, mut queued) = (0, 0);
        for (&index, &listener_connected) in indexes.iter().zip(&connected) {
            match self.handles.ledger.letters[index].state {
                State::Delivered => {
                    prop_assert!(listener_connected, "delivered without a connected listener");
                    sent += 1;
                }
                // Told at once (with a ref): peer_busy or no_mailbox.
                State::Refused => {}
                // Stored, then evicted for a later copy in the same batch: it was queued.
                State::Undelivered => queued += 1,
                _ => {
                    prop_assert!(
                        !listener_connected || silent,
                        "a connected listener's copy neither delivered nor refused"
                    );
                    prop_assert!(!probe || silent, "a probe was stored");
                    self.handles.ledger.letters[index].state = State::Waiting;
                    queued += 1;
                }
            }
        }
        if let Some(reference) = &reference {
            let ack = Self::ack_to(&actions, conn, reference)
                .ok_or_else(|| TestCaseError::fail(format!("no ACK for a MESSAGE to {key}")))?;
            if several {
                prop_assert_eq!(ack.get("sent").and_then(Value::as_u64), Some(sent));
                prop_assert_eq!(ack.get("queued").and_then(Value::as_u64), Some(queued));
            } else {
                // One handle: `"queued":true` when the letter waits, no count when it went.
                let waits = (queued > 0).then_some(Value::Bool(true));
                prop_assert_eq!(ack.get("queued").cloned(), waits);
            }
        }
        Ok(())
    }

    /// Whether someone listens on `handle` and is connected (gets a message to it at once).
    fn listener_connected(&self, handle: usize) -> bool {
        self.handles
            .listeners
            .get(&handle)
            .is_some_and(|listener| self.connected(listener))
    }

    /// A fresh marker and the payload that carries it (a plain one refused as `not_encrypted`).
    fn next_payload(&mut self, encrypted: bool) -> (u64, String) {
        self.next_marker += 1;
        let marker = self.next_marker;
        let payload = if encrypted {
            format!("{ARMOR}{marker}")
        } else {
            "hi".to_owned()
        };
        (marker, payload)
    }

    /// A letter from `sender` to `handle` in the ledger, being sent; its index.
    fn record_letter(
        &mut self,
        sender: &str,
        handle: usize,
        marker: u64,
        reference: Option<&String>,
    ) -> usize {
        let index = self.handles.ledger.letters.len();
        self.handles.ledger.letters.push(Letter {
            sender: sender.to_owned(),
            life: self.life_of(sender),
            handle,
            reference: reference.cloned(),
            stored_ms: self.now.mono_ms,
            state: State::Sending,
        });
        self.handles
            .ledger
            .by_marker
            .insert((marker, handle), index);
        if let Some(reference) = reference {
            self.handles
                .ledger
                .by_ref
                .insert((reference.clone(), handle), index);
        }
        index
    }

    /// A frame of version 2 about handles, sent to `receiver` on `conn`.
    pub(super) fn observe_handle_frame(
        &mut self,
        conn: ConnId,
        receiver: Option<&String>,
        value: &Value,
    ) -> Result<(), TestCaseError> {
        prop_assert!(
            speaks_v2(conn),
            "a version-2 frame to a version-1 client: {}",
            value
        );
        let receiver = receiver.cloned().ok_or_else(|| {
            TestCaseError::fail(format!("{value} to a connection without a session"))
        })?;
        let handle = handle_index(field(value, "handle"));
        match field(value, "type") {
            "MESSAGE" => {
                prop_assert!(value.get("from").is_none(), "a `from` in {}", value);
                let index = marker_of(value)
                    .zip(handle)
                    .and_then(|key| self.handles.ledger.by_marker.get(&key).copied())
                    .ok_or_else(|| TestCaseError::fail(format!("unknown letter {value}")))?;
                let letter = &self.handles.ledger.letters[index];
                prop_assert_eq!(Some(letter.handle), handle, "delivered for another handle");
                prop_assert!(
                    matches!(letter.state, State::Sending | State::Waiting),
                    "letter delivered in state {:?}",
                    letter.state
                );
                prop_assert_eq!(
                    self.handles.listeners.get(&letter.handle),
                    Some(&receiver),
                    "delivered to a session that does not listen on the handle"
                );
                self.handles.ledger.letters[index].state = State::Delivered;
            }
            "UNDELIVERED" => {
                let index = handle
                    .and_then(|handle| {
                        let key = (field(value, "ref").to_owned(), handle);
                        self.handles.ledger.by_ref.get(&key).copied()
                    })
                    .ok_or_else(|| {
                        TestCaseError::fail(format!("UNDELIVERED for no ref: {value}"))
                    })?;
                let life = self.life_of(&receiver);
                let letter = &self.handles.ledger.letters[index];
                let reason = field(value, "reason");
                if reason == "peer_busy" || reason == "no_mailbox" {
                    // One copy of a MESSAGE to several handles, refused in the batch that sent it.
                    prop_assert_eq!(
                        letter.state,
                        State::Sending,
                        "{} for a letter sent before",
                        reason
                    );
                    prop_assert_eq!(&letter.sender, &receiver, "UNDELIVERED to another session");
                    self.handles.ledger.letters[index].state = State::Refused;
                    return Ok(());
                }
                // Sending: a copy of a MESSAGE to several handles, stored and then evicted to make
                // room for a later copy of the same message, in the batch that sent them.
                prop_assert!(
                    matches!(letter.state, State::Waiting | State::Expired)
                        || (letter.state == State::Sending && reason == "evicted"),
                    "UNDELIVERED for a letter in state {:?}",
                    letter.state
                );
                prop_assert_eq!(&letter.sender, &receiver, "UNDELIVERED to another session");
                // The same session (a version-1 client may have held it meanwhile: it is told
                // if it speaks version 2 when the letter is dropped).
                prop_assert_eq!(letter.life.0, life.0, "UNDELIVERED to a later session");
                prop_assert_eq!(Some(letter.handle), handle);
                prop_assert!(reason == "expired" || reason == "evicted", "{}", value);
                if reason == "expired" {
                    prop_assert!(
                        self.now.mono_ms >= letter.stored_ms + self.ttl,
                        "expired early"
                    );
                }
                self.handles.ledger.letters[index].state = State::Undelivered;
            }
            "HANDLE_TAKEN" => prop_assert!(handle.is_some(), "{}", value),
            "HANDLE_DROPPED" => {
                let handle = handle.ok_or_else(|| TestCaseError::fail(format!("{value}")))?;
                if self.handles.listeners.get(&handle) == Some(&receiver) {
                    self.handles.listeners.remove(&handle);
                }
            }
            other => prop_assert!(false, "unexpected {}", other),
        }
        Ok(())
    }

    /// A session created, resumed, or gone: what it listens on and whether it can be told.
    pub(super) fn session_began(&mut self, id: &str, resumed: bool, version: u8) {
        let life = self.handles.lives.entry(id.to_owned()).or_default();
        if !resumed {
            life.0 += 1;
        } else if version < 2 {
            // A version-1 client takes the session over: its handles go, and it hears of no
            // letter of version 2 any more.
            life.1 += 1;
        }
        if version < 2 {
            self.handles.listeners.retain(|_, listener| listener != id);
        }
        self.handles.versions.insert(id.to_owned(), version);
    }

    pub(super) fn session_ended(&mut self, id: &str) {
        self.handles.listeners.retain(|_, listener| listener != id);
    }

    /// After a tick: letters past their TTL are gone. Those of a connected sender that hears of
    /// it were reported in that tick.
    pub(super) fn letters_expired(&mut self) -> Result<(), TestCaseError> {
        let now = self.now.mono_ms;
        for index in 0..self.handles.ledger.letters.len() {
            let letter = &self.handles.ledger.letters[index];
            if letter.state != State::Waiting || letter.stored_ms + self.ttl > now {
                continue;
            }
            let told = letter.reference.is_some()
                && self.alive.contains(&letter.sender)
                && self.speaks_v2(&letter.sender)
                && self.life_of(&letter.sender) == letter.life
                && self.connected(&letter.sender);
            prop_assert!(!told, "an expired letter's connected sender was not told");
            self.handles.ledger.letters[index].state = State::Expired;
        }
        Ok(())
    }

    /// At the end, once every live session is back: the letters still waiting whose sender would
    /// have been told of their loss are all in the mailbox, and the mailbox holds no more than
    /// the letters still waiting.
    pub(super) fn check_handle_ledger(&self) -> Result<(), TestCaseError> {
        let waiting = self
            .handles
            .ledger
            .letters
            .iter()
            .filter(|letter| letter.state == State::Waiting);
        let (mut at_most, mut at_least) = (0, 0);
        for letter in waiting {
            at_most += 1;
            if letter.reference.is_some()
                && self.alive.contains(&letter.sender)
                && self.speaks_v2(&letter.sender)
                && self.life_of(&letter.sender) == letter.life
            {
                at_least += 1;
            }
        }
        let stored = self.router.stats().mailbox_letters;
        prop_assert!(
            at_least <= stored && stored <= at_most,
            "the mailbox holds {} letters; the model: between {} and {}",
            stored,
            at_least,
            at_most
        );
        Ok(())
    }
}

/// The marker number a harness payload carries after its armor line.
fn marker_of(value: &Value) -> Option<u64> {
    field(value, "payload").strip_prefix(ARMOR)?.parse().ok()
}
