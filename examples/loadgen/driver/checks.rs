//! The receiving side of a run: every MESSAGE checked to come from the friend, intact and in
//! order, every ACK to come in order, and everything that went wrong counted as a fault.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Driver, Mode};

/// Everything that went wrong, counted. A run with any fault fails its check.
#[derive(Default, Debug, Clone)]
pub struct Faults {
    pub corrupt: u64,
    pub duplicated: u64,
    pub missing: u64,
    pub wrong_sender: u64,
    pub acks_out_of_order: u64,
    pub error_frames: BTreeMap<String, u64>,
    pub other: BTreeMap<String, u64>,
}

impl Faults {
    pub fn total(&self) -> u64 {
        self.corrupt
            + self.duplicated
            + self.missing
            + self.wrong_sender
            + self.acks_out_of_order
            + self.error_frames.values().sum::<u64>()
            + self.other.values().sum::<u64>()
    }

    pub(super) fn note(&mut self, what: impl Into<String>) {
        *self.other.entry(what.into()).or_default() += 1;
    }

    pub fn describe(&self) -> String {
        if self.total() == 0 {
            return "ok".into();
        }
        let mut parts = Vec::new();
        for (name, count) in [
            ("corrupt", self.corrupt),
            ("duplicated", self.duplicated),
            ("missing", self.missing),
            ("wrong sender", self.wrong_sender),
            ("ACKs out of order", self.acks_out_of_order),
        ] {
            if count > 0 {
                parts.push(format!("{count} {name}"));
            }
        }
        for (code, count) in &self.error_frames {
            parts.push(format!("{count} ERROR {code}"));
        }
        for (what, count) in &self.other {
            parts.push(format!("{count}× {what}"));
        }
        parts.join(", ")
    }
}

impl Driver {
    pub(super) fn message(&mut self, index: usize, from: &[u8], payload: &[u8], now: Instant) {
        let Some(load) = self.load.as_mut() else {
            self.faults.note("a MESSAGE outside a run");
            return;
        };
        let Some(sender) = self.clients[index].partner else {
            self.faults.note("a MESSAGE for a lone client");
            return;
        };
        if from != self.clients[sender].id {
            self.faults.wrong_sender += 1;
            return;
        }
        let seq = match load.payloads.check(payload) {
            Ok(seq) => seq,
            Err(_) => {
                self.faults.corrupt += 1;
                return;
            }
        };
        let receiver = &mut self.clients[index];
        let expected = receiver.received + 1;
        if seq < expected {
            self.faults.duplicated += 1;
            return;
        }
        if seq > expected {
            self.faults.missing += seq - expected;
        }
        load.delivered += seq - receiver.received;
        receiver.received = seq;
        match load.mode {
            Mode::Open { rate } => {
                if let Some(slot) = self.clients[sender].sender_slot {
                    let scheduled = load.scheduled_at(slot, seq, rate);
                    let latency = now.saturating_duration_since(scheduled);
                    load.latencies_ns.push(latency.as_nanos() as u64);
                }
            }
            Mode::Closed { .. } => {
                let sender_client = &mut self.clients[sender];
                if !sender_client.wants_topup {
                    sender_client.wants_topup = true;
                    self.topups.push(sender);
                }
            }
        }
    }

    pub(super) fn message_ack(&mut self, index: usize, seq: u64) {
        let Some(load) = self.load.as_mut() else {
            self.faults.note("an ACK outside a run");
            return;
        };
        let client = &mut self.clients[index];
        if seq != client.acked + 1 {
            self.faults.acks_out_of_order += 1;
        }
        client.acked = client.acked.max(seq);
        load.acks += 1;
    }
}
