//! One [`Op`] applied to the router and to the model, with what the router's answer to each
//! client request must be given what the model knows.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use secchat::router::Action;

use super::handles::To;
use super::{Model, Owed, connect_of, pair, resume_of};
use crate::router_model::ARMOR;
use crate::{GARBAGE, KEY, Op, Spelling, Target};

impl Model {
    pub fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
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
                self.text(conn, &resume_of(conn, &id, &token))?;
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
                // As the event loop does: tick while something is due (expiry goes in chunks).
                loop {
                    self.router.tick(self.now, &mut self.sink);
                    let out = self.sink.take();
                    self.observe(&out)?;
                    if self
                        .router
                        .next_deadline_ms()
                        .is_none_or(|deadline| deadline > self.now.mono_ms)
                    {
                        break;
                    }
                }
                self.letters_expired()?;
            }
            Op::Listen {
                slot,
                handles,
                with_ref,
            } => self.handle_list_op(*slot, "LISTEN", handles, *with_ref)?,
            Op::Unlisten {
                slot,
                handles,
                with_ref,
            } => self.handle_list_op(*slot, "UNLISTEN", handles, *with_ref)?,
            Op::Fetch { slot } => self.fetch(*slot)?,
            Op::ToHandle {
                slot,
                handle,
                probe,
                encrypted,
                with_ref,
            } => self.message_to_pool(*slot, To::Handle(*handle), *probe, *encrypted, *with_ref)?,
            Op::ToHandles {
                slot,
                handles,
                probe,
                encrypted,
                with_ref,
            } => {
                self.message_to_pool(*slot, To::Handles(handles), *probe, *encrypted, *with_ref)?
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
