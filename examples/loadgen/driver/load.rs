//! One load run: what it sends, the closed loop (a window of messages in flight per sender) and
//! the open loop (messages handed out at their scheduled times), and what it reports.

use std::time::{Duration, Instant};

use super::checks::Faults;
use super::{Driver, Load, STALL, mark_dirty, next_mask};
use crate::payload::Payloads;
use crate::ws;

#[derive(Clone, Copy)]
pub enum Mode {
    /// Each sender keeps `window` messages in flight.
    Closed { window: u64 },
    /// `rate` messages per second in total, spread evenly over the senders.
    Open { rate: f64 },
}

pub struct LoadSpec {
    pub active_pairs: usize,
    /// Per sender (both clients of an active pair send to each other).
    pub messages: u64,
    pub payload_size: usize,
    pub with_ref: bool,
    pub mode: Mode,
}

pub struct LoadReport {
    /// Messages delivered (and checked).
    pub messages: u64,
    pub acks: u64,
    pub elapsed: Duration,
    /// Open loop only: receive time minus scheduled send time, per message.
    pub latencies_ns: Vec<u64>,
    pub faults: Faults,
}

impl Driver {
    /// Sends up to `count` more messages from `index` to its friend.
    fn send_messages(&mut self, index: usize, count: u64) {
        let Some(load) = self.load.as_ref() else {
            return;
        };
        let Some(partner) = self.clients[index].partner else {
            return;
        };
        let to = self.clients[partner].id;
        let client = &mut self.clients[index];
        let count = count.min(load.messages - client.sent);
        let len = load.payloads.message_len(load.with_ref);
        for _ in 0..count {
            client.sent += 1;
            let seq = client.sent;
            let mask = next_mask(&mut client.mask_state);
            ws::push_frame_with(&mut client.out, ws::OPCODE_TEXT, len, mask, |out| {
                load.payloads.push_message(out, &to, seq, load.with_ref)
            });
        }
        if count > 0 {
            mark_dirty(&mut self.dirty, client, index);
        }
    }

    /// Closed loop: refills the window of each sender whose friend received something.
    pub(super) fn top_up(&mut self) {
        let Some(Mode::Closed { window }) = self.load.as_ref().map(|load| load.mode) else {
            return;
        };
        for index in std::mem::take(&mut self.topups) {
            self.clients[index].wants_topup = false;
            let Some(partner) = self.clients[index].partner else {
                continue;
            };
            let in_flight = self.clients[index].sent - self.clients[partner].received;
            self.send_messages(index, window.saturating_sub(in_flight));
        }
    }

    /// Open loop: hands out every message whose scheduled time has come.
    fn send_due(&mut self, rate: f64) {
        let Some(load) = self.load.as_ref() else {
            return;
        };
        let elapsed = load.started.elapsed().as_secs_f64();
        let due = ((elapsed * rate) as u64 + 1).min(load.total());
        let senders = load.senders.len() as u64;
        let from = load.scheduled;
        for k in from..due {
            let Some(&sender) = self
                .load
                .as_ref()
                .and_then(|load| load.senders.get((k % senders) as usize))
            else {
                break;
            };
            self.send_messages(sender, 1);
        }
        if let Some(load) = self.load.as_mut() {
            load.scheduled = load.scheduled.max(due);
        }
    }

    /// Runs one load on the first `spec.active_pairs` pairs and checks every message.
    pub fn run_load(&mut self, spec: &LoadSpec) -> Result<LoadReport, String> {
        let active = spec.active_pairs.min(self.pairs.len());
        let mut senders = Vec::with_capacity(2 * active);
        for pair in &self.pairs[..active] {
            senders.push(pair.first);
            senders.push(pair.second);
        }
        for client in &mut self.clients {
            client.sent = 0;
            client.acked = 0;
            client.received = 0;
            client.sender_slot = None;
        }
        for (slot, &index) in senders.iter().enumerate() {
            self.clients[index].sender_slot = Some(slot);
        }
        self.faults = Faults::default();
        let started = Instant::now();
        let mut load = Load {
            payloads: Payloads::new(spec.payload_size),
            with_ref: spec.with_ref,
            mode: spec.mode,
            messages: spec.messages,
            senders,
            started,
            delivered: 0,
            acks: 0,
            scheduled: 0,
            latencies_ns: Vec::new(),
        };
        if let Mode::Open { .. } = spec.mode {
            load.latencies_ns.reserve(load.total() as usize);
        }
        let senders = load.senders.clone();
        self.load = Some(load);
        if let Mode::Closed { window } = spec.mode {
            for &index in &senders {
                self.send_messages(index, window);
            }
        }
        self.last_progress = started;
        let outcome = loop {
            let Some(load) = self.load.as_ref() else {
                break Err("the run vanished".to_owned());
            };
            if load.finished() {
                break Ok(());
            }
            if self.last_progress.elapsed() > STALL {
                break Err(format!(
                    "stalled: {} of {} messages delivered, {} ACKs; faults: {}",
                    load.delivered,
                    load.total(),
                    load.acks,
                    self.faults.describe()
                ));
            }
            let timeout = match spec.mode {
                Mode::Open { rate } => {
                    self.send_due(rate);
                    // Spin: sub-millisecond send times need a zero timeout (epoll's resolution is
                    // 1 ms); the load generator has its core to itself.
                    Some(Duration::ZERO)
                }
                Mode::Closed { .. } => Some(Duration::from_millis(100)),
            };
            if let Err(e) = self.turn(timeout) {
                break Err(format!("poll: {e}"));
            }
        };
        let elapsed = started.elapsed();
        let load = self.load.take().ok_or("the run vanished")?;
        outcome?;
        Ok(LoadReport {
            messages: load.delivered,
            acks: load.acks,
            elapsed,
            latencies_ns: load.latencies_ns,
            faults: std::mem::take(&mut self.faults),
        })
    }
}
