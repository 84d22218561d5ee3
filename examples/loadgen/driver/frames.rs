//! What the server sends, parsed: the upgrade response, then WebSocket frames, each text frame
//! handed to the handler for its type (the fast path for MESSAGE and its ACK, JSON for the rest).

use std::time::Instant;

use super::{Driver, Phase, kill, mark_dirty, next_mask};
use crate::payload::{Incoming, classify};
use crate::ws::{self, Parsed, Upgrade};

impl Driver {
    /// Handles the bytes read so far; returns how many were used (the rest is an incomplete
    /// frame).
    pub(super) fn input(&mut self, index: usize, input: &[u8], now: Instant) -> usize {
        let mut position = 0;
        if self.clients[index].phase == Phase::Upgrading {
            match ws::parse_upgrade_response(input) {
                Upgrade::Partial => return 0,
                Upgrade::Refused(why) => {
                    self.faults.note(why);
                    kill(&mut self.clients[index]);
                    return input.len();
                }
                Upgrade::Accepted(head_len) => {
                    position = head_len;
                    self.send_frame(index, br#"{"type":"CONNECT"}"#);
                    self.clients[index].phase = Phase::AwaitingConnect;
                }
            }
        }
        while let Some(rest) = input.get(position..) {
            match ws::parse_server_frame(rest) {
                Parsed::Partial => break,
                Parsed::Invalid(why) => {
                    self.faults.note(why);
                    kill(&mut self.clients[index]);
                    return input.len();
                }
                Parsed::Frame(frame) => {
                    position += frame.len;
                    if !frame.fin || frame.opcode == 0 {
                        self.faults.note("a fragmented server frame");
                        continue;
                    }
                    self.frame(index, frame.opcode, frame.payload, now);
                }
            }
        }
        position
    }

    fn frame(&mut self, index: usize, opcode: u8, payload: &[u8], now: Instant) {
        match opcode {
            ws::OPCODE_TEXT => {}
            ws::OPCODE_PING => {
                let mask = next_mask(&mut self.clients[index].mask_state);
                ws::push_frame(&mut self.clients[index].out, ws::OPCODE_PONG, payload, mask);
                mark_dirty(&mut self.dirty, &mut self.clients[index], index);
                return;
            }
            ws::OPCODE_PONG => return,
            ws::OPCODE_CLOSE => {
                let code = payload
                    .get(..2)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                self.faults.note(format!("the server closed with {code}"));
                kill(&mut self.clients[index]);
                return;
            }
            other => {
                self.faults.note(format!("opcode {other}"));
                return;
            }
        }
        match classify(payload) {
            Incoming::Message { from, payload } => self.message(index, from, payload, now),
            Incoming::MessageAck { seq } => self.message_ack(index, seq),
            Incoming::Other => self.other_frame(index, payload, now),
        }
    }

    /// A text frame off the fast path: setup traffic, errors, or a layout we do not expect.
    fn other_frame(&mut self, index: usize, text: &[u8], now: Instant) {
        let value: serde_json::Value = match serde_json::from_slice(text) {
            Ok(value) => value,
            Err(_) => {
                self.faults.note("a frame that is not JSON");
                return;
            }
        };
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("");
        match field("type") {
            "CONNECT" => self.connected(index, field("id")),
            "FRIEND_REQUEST" => self.friend_request(index, field("from")),
            "FRIEND_ACCEPT" => self.friend_accept(index, field("from")),
            "ACK" => match field("ref") {
                "request" | "accept" => self.setup_ack(index),
                other => match other.parse::<u64>() {
                    Ok(seq) => self.message_ack(index, seq),
                    Err(_) => self.faults.note("an ACK for nothing we sent"),
                },
            },
            "MESSAGE" => {
                // Same checks as the fast path, for a server that orders fields differently.
                let payload = field("payload").replace('\n', "\\n");
                let from = field("from").as_bytes().to_vec();
                self.message(index, &from, payload.as_bytes(), now);
            }
            "ERROR" => {
                *self
                    .faults
                    .error_frames
                    .entry(field("code").to_owned())
                    .or_default() += 1;
            }
            other => self.faults.note(format!("an unexpected {other} frame")),
        }
    }
}
