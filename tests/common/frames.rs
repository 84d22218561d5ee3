//! Hand-made WebSocket frames and [`RawClient`], for what a well-behaved client library refuses to send.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::http::{connect_tcp, find, upgrade_request};
use super::{RECV_TIMEOUT, Server};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

const MASK_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Encode one frame; `mask` is `None` for an (illegal, client-side) unmasked frame.
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = encode_frame_header(fin, opcode, payload.len() as u64, mask);
    match mask {
        Some(key) => out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4])),
        None => out.extend_from_slice(payload),
    }
    out
}

/// Only the header of a frame that claims `len` payload bytes.
pub fn encode_frame_header(fin: bool, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | (opcode & 0x0f)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub enum ReadOutcome {
    Frame(Frame),
    Timeout,
    /// EOF or reset: the server went away without (further) frames.
    Ended,
}

/// A WebSocket client that writes its own frames and never answers pings on its own.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pub id: String,
    pub token: String,
}

impl RawClient {
    pub fn connect(server: &Server) -> RawClient {
        let request = upgrade_request(&server.addr(), None);
        Self::connect_with_request(server, &request)
    }

    pub fn connect_with_request(server: &Server, request: &str) -> RawClient {
        let mut stream = connect_tcp(&server.addr()).expect("connect");
        stream.write_all(request.as_bytes()).expect("send upgrade");
        // Read byte-wise up to the end of the head so no frame bytes are swallowed.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while find(&head, b"\r\n\r\n").is_none() {
            let n = stream.read(&mut byte).expect("read upgrade response");
            assert!(
                n == 1,
                "EOF during upgrade: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        let head_text = String::from_utf8_lossy(&head);
        assert!(
            head_text.starts_with("HTTP/1.1 101"),
            "upgrade refused: {head_text}"
        );
        RawClient {
            stream,
            buf: Vec::new(),
            id: String::new(),
            token: String::new(),
        }
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let frame = encode_frame(fin, opcode, payload, Some(MASK_KEY));
        self.send_bytes(&frame).expect("send frame");
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, OP_TEXT, text.as_bytes());
    }

    pub fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    pub fn read_frame(&mut self, timeout: Duration) -> ReadOutcome {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return ReadOutcome::Frame(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ReadOutcome::Timeout;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return ReadOutcome::Ended,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return ReadOutcome::Ended,
            }
        }
    }

    /// The next data frame (pings and pongs skipped, not answered).
    pub fn recv_data_frame(&mut self) -> Frame {
        let deadline = Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                ReadOutcome::Frame(f) if f.opcode == OP_PING || f.opcode == OP_PONG => {}
                ReadOutcome::Frame(f) => return f,
                other => panic!("no frame: {other:?}"),
            }
        }
    }

    pub fn recv_json(&mut self) -> Value {
        let frame = self.recv_data_frame();
        assert_eq!(
            frame.opcode, OP_TEXT,
            "expected a text frame, got {frame:?}"
        );
        assert!(frame.fin, "the server fragmented a message");
        serde_json::from_slice(&frame.payload).expect("server sent non-JSON")
    }

    pub fn expect_type(&mut self, kind: &str) -> Value {
        let value = self.recv_json();
        assert_eq!(value["type"], kind, "expected a {kind}, got {value}");
        value
    }

    /// The close code of the server's close frame (skipping pings); panics on data frames.
    pub fn expect_close(&mut self) -> u16 {
        self.expect_close_within(RECV_TIMEOUT)
    }

    pub fn expect_close_within(&mut self, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                ReadOutcome::Frame(f) if f.opcode == OP_CLOSE => {
                    return match f.payload.get(..2) {
                        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
                        _ => 1005,
                    };
                }
                ReadOutcome::Frame(f) if f.opcode == OP_PING || f.opcode == OP_PONG => {}
                ReadOutcome::Frame(f) => panic!(
                    "expected a close, got {f:?} ({})",
                    String::from_utf8_lossy(&f.payload)
                ),
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// CONNECT with this raw client; fills in `id` and `token`.
    pub fn connect_session(&mut self) {
        self.send_json(&json!({"type": "CONNECT"}));
        let reply = self.expect_type("CONNECT");
        self.id = reply["id"].as_str().expect("id").to_string();
        self.token = reply["token"].as_str().expect("token").to_string();
    }
}

/// One complete server frame at the start of `buf`, and how many bytes it used.
fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let b0 = *buf.first()?;
    let b1 = *buf.get(1)?;
    let masked = b1 & 0x80 != 0;
    let (len, mut pos) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(bytes), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask: Option<[u8; 4]> = if masked {
        let key = buf.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(key)
    } else {
        None
    };
    let len = usize::try_from(len).ok()?;
    let data = buf.get(pos..pos + len)?;
    let payload = match mask {
        Some(key) => data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect(),
        None => data.to_vec(),
    };
    Some((
        Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            payload,
        },
        pos + len,
    ))
}
