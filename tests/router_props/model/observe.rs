//! What the model learns from, and checks in, every action the router hands its sink: each
//! frame's type and addressee (MESSAGE and UNDELIVERED against the ledger, PRESENCE, FRIEND_CANCEL,
//! the CONNECT reply) and every Close code.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use secchat::router::{Action, ConnId};

use super::{Model, pair, speaks_v2};
use crate::router_model::{field, frames_to};

impl Model {
    /// Checks and records one batch of actions.
    pub(super) fn observe(&mut self, actions: &[Action]) -> Result<(), TestCaseError> {
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
                Action::Bus(output) => {
                    prop_assert!(false, "a router outside a cluster used the bus: {output:?}")
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
        let kind = field(value, "type");
        // Mail to a handle names the handle, never `from`; the ID ledger knows nothing of it.
        if value.get("handle").is_some()
            && matches!(
                kind,
                "MESSAGE" | "UNDELIVERED" | "HANDLE_TAKEN" | "HANDLE_DROPPED"
            )
        {
            return self.observe_handle_frame(conn, receiver.as_ref(), value);
        }
        match kind {
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
                prop_assert!(speaks_v2(conn), "FRIEND_CANCEL to a version-1 client");
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
            "LISTENING" | "FETCHED" => {
                prop_assert!(speaks_v2(conn), "{} to a version-1 client", kind)
            }
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
        let resumed = value.get("resumed") == Some(&Value::Bool(true));
        let version = if value["version"] == 2 { 2 } else { 1 };
        self.session_began(&id, resumed, version);
        self.tokens.insert(id.clone(), token);
        if let Some(slot) = self.slots.iter().position(|slot| *slot == Some(conn)) {
            self.slot_ids[slot] = Some(id.clone());
        }
        self.conn_session.insert(conn, id);
        Ok(())
    }

    pub(super) fn error_to(actions: &[Action], conn: ConnId) -> Option<String> {
        frames_to(actions, conn).find_map(|value| {
            (field(&value, "type") == "ERROR").then(|| field(&value, "code").to_owned())
        })
    }

    pub(super) fn ack_to(actions: &[Action], conn: ConnId, reference: &str) -> Option<Value> {
        frames_to(actions, conn)
            .find(|value| field(value, "type") == "ACK" && field(value, "ref") == reference)
    }
}
