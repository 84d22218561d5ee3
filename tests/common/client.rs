//! The tungstenite WebSocket test [`Client`], sessions, friendships and message helpers.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::http::connect_tcp;
use super::load::connect_tcp_from;
use super::{RECV_TIMEOUT, Server, TEST_KEY};

/// A read that found nothing in time, or was interrupted before it did (a stopped and continued
/// test process sees EINTR even without signal handlers): tungstenite keeps what it had read, so
/// reading again is safe.
pub(super) fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted))
}

/// A blocking WebSocket client (tungstenite) with read timeouts.
pub struct Client {
    ws: WebSocket<TcpStream>,
    /// Filled in by [`connect_session`].
    pub id: String,
    pub token: String,
}

impl Client {
    pub fn connect(server: &Server) -> Client {
        Self::try_connect_url(&server.addr(), &server.ws_url())
            .unwrap_or_else(|e| panic!("WebSocket connect failed: {e}"))
    }

    /// A client with small buffers, for tests that open many connections.
    pub fn connect_small(server: &Server) -> Client {
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(4096);
        Self::try_connect_with(&server.addr(), &server.ws_url(), config)
            .unwrap_or_else(|e| panic!("WebSocket connect failed: {e}"))
    }

    pub fn try_connect_url(addr: &str, url: &str) -> Result<Client, String> {
        let config = WebSocketConfig::default().max_message_size(Some(16 << 20));
        Self::try_connect_with(addr, url, config)
    }

    pub fn try_connect_with(
        addr: &str,
        url: &str,
        config: WebSocketConfig,
    ) -> Result<Client, String> {
        // The handshake reads with the long timeout (a timeout there would abort it); afterwards
        // short reads let `try_recv_text` check its own deadline.
        let stream = connect_tcp(addr).map_err(|e| e.to_string())?;
        let (ws, _response) = tungstenite::client::client_with_config(url, stream, Some(config))
            .map_err(|e| e.to_string())?;
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        Ok(Client {
            ws,
            id: String::new(),
            token: String::new(),
        })
    }

    pub fn try_send_raw_text(&mut self, text: &str) -> tungstenite::Result<()> {
        self.ws.send(Message::text(text.to_string()))
    }

    pub fn send_raw_text(&mut self, text: &str) {
        self.try_send_raw_text(text)
            .unwrap_or_else(|e| panic!("send failed: {e}"));
    }

    pub fn send_json(&mut self, value: &Value) {
        self.send_raw_text(&value.to_string());
    }

    /// Queue a text message without flushing; [`Client::flush`] sends what is queued.
    pub fn write_raw_text(&mut self, text: &str) {
        match self.ws.write(Message::text(text.to_string())) {
            Ok(()) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("write failed: {e}"),
        }
    }

    pub fn flush(&mut self) {
        self.ws
            .flush()
            .unwrap_or_else(|e| panic!("flush failed: {e}"));
    }

    pub fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::binary(data.to_vec()))
            .unwrap_or_else(|e| panic!("send failed: {e}"));
    }

    /// The next text message within `timeout`, or `None`. Panics on a close or a dropped socket.
    pub fn try_recv_text(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => return Some(text.as_str().to_string()),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Binary(data)) => panic!("server sent a binary message: {data:?}"),
                Ok(Message::Close(frame)) => panic!("unexpected close: {frame:?}"),
                Err(e) if is_timeout(&e) => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    pub fn recv_text(&mut self) -> String {
        self.try_recv_text(RECV_TIMEOUT)
            .unwrap_or_else(|| panic!("no message within {RECV_TIMEOUT:?}"))
    }

    pub fn recv_json(&mut self) -> Value {
        let text = self.recv_text();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("server sent non-JSON {text:?}: {e}"))
    }

    /// The next message, which must have `type` = `kind`.
    pub fn expect_type(&mut self, kind: &str) -> Value {
        let value = self.recv_json();
        assert_eq!(value["type"], kind, "expected a {kind}, got {value}");
        value
    }

    /// The next message, which must be `ERROR` with `code` and the given `ref` (or none).
    pub fn expect_error(&mut self, code: &str, reference: Option<&str>) -> Value {
        let value = self.expect_type("ERROR");
        assert_error_shape(&value, code, reference);
        value
    }

    /// The next message, which must be a plain (not queued) `ACK` with `reference`.
    pub fn expect_ack(&mut self, reference: &str) -> Value {
        let value = self.expect_type("ACK");
        assert_eq!(value["ref"], reference, "ACK ref: {value}");
        assert!(value.get("queued").is_none(), "unexpected queued: {value}");
        value
    }

    /// The next message, which must be an `ACK` with `reference` and `"queued":true`.
    pub fn expect_queued_ack(&mut self, reference: &str) -> Value {
        let value = self.expect_type("ACK");
        assert_eq!(value["ref"], reference, "ACK ref: {value}");
        assert_eq!(value["queued"], true, "ACK not queued: {value}");
        value
    }

    /// Send `request` and return the next message.
    pub fn request(&mut self, request: Value) -> Value {
        self.send_json(&request);
        self.recv_json()
    }

    /// Nothing but control frames arrives for `ms` milliseconds.
    pub fn expect_silence(&mut self, ms: u64) {
        if let Some(text) = self.try_recv_text(Duration::from_millis(ms)) {
            panic!("expected silence, got {text}");
        }
    }

    /// Prove nothing is pending: a PING with a ref must be answered by the very next message.
    pub fn expect_nothing_pending(&mut self) {
        self.send_json(&json!({"type": "PING", "ref": "sync"}));
        let reply = self.recv_json();
        assert_eq!(
            reply,
            json!({"type": "PONG", "ref": "sync"}),
            "something was pending"
        );
    }

    /// The close code of the server's close frame; panics on a text message or a drop without
    /// a close frame. 1005 when the close frame has no code.
    pub fn expect_close(&mut self) -> u16 {
        self.expect_close_within(RECV_TIMEOUT)
    }

    pub fn expect_close_within(&mut self, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return close_code(frame),
                Ok(Message::Text(text)) => panic!("expected a close, got {text}"),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    if Instant::now() >= deadline {
                        panic!("no close frame within {timeout:?}");
                    }
                }
                Err(e) => panic!("connection ended without a close frame: {e}"),
            }
        }
    }

    /// Close the TCP connection without a WebSocket close frame (a dropped client).
    pub fn drop_connection(self) {
        let _ = self.ws.get_ref().shutdown(Shutdown::Both);
    }

    /// Send a WebSocket close frame and wait for the server's echo.
    pub fn close_gracefully(mut self) {
        let _ = self.ws.close(Some(CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        }));
        let deadline = Instant::now() + RECV_TIMEOUT;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => return,
            }
        }
        panic!("the server did not complete the closing handshake");
    }

    pub fn stream(&self) -> &TcpStream {
        self.ws.get_ref()
    }
}

fn close_code(frame: Option<CloseFrame>) -> u16 {
    frame.map(|f| u16::from(f.code)).unwrap_or(1005)
}

pub fn assert_error_shape(value: &Value, code: &str, reference: Option<&str>) {
    assert_eq!(value["type"], "ERROR", "not an ERROR: {value}");
    assert_eq!(value["code"], code, "wrong error code: {value}");
    assert!(
        value["message"].as_str().is_some_and(|m| !m.is_empty()),
        "ERROR without a human-readable message: {value}"
    );
    match reference {
        Some(r) => assert_eq!(value["ref"], r, "ERROR ref: {value}"),
        None => assert!(
            value.get("ref").is_none(),
            "ERROR should carry no ref: {value}"
        ),
    }
}

/// Connect and send `CONNECT`; returns the client with `id`/`token` filled in.
pub fn connect_session(server: &Server) -> (Client, String, String) {
    let mut client = Client::connect(server);
    let reply = client.request(json!({"type": "CONNECT"}));
    assert_eq!(reply["type"], "CONNECT", "CONNECT reply: {reply}");
    let id = reply["id"].as_str().expect("id").to_string();
    let token = reply["token"].as_str().expect("token").to_string();
    client.id = id.clone();
    client.token = token.clone();
    (client, id, token)
}

/// Connect and send a version-2 `CONNECT`; returns the client with `id`/`token` filled in.
pub fn connect_v2(server: &Server) -> Client {
    let mut client = Client::connect(server);
    let reply = client.request(json!({"type": "CONNECT", "version": 2}));
    assert_eq!(reply["version"], 2, "{reply}");
    client.id = reply["id"].as_str().unwrap_or_default().to_owned();
    client.token = reply["token"].as_str().unwrap_or_default().to_owned();
    client
}

/// A distinct handle per `n`: 43 base64url characters.
pub fn handle(n: u32) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text: Vec<u8> = vec![b'h'; 43];
    for (position, slot) in text.iter_mut().take(6).enumerate() {
        *slot = alphabet[((n >> (6 * position)) & 63) as usize];
    }
    String::from_utf8(text).unwrap_or_default()
}

/// Connect with a resume; returns the client and the CONNECT reply (id/token filled in).
pub fn resume_session(server: &Server, id: &str, token: &str) -> (Client, Value) {
    let mut client = Client::connect(server);
    let reply = client.request(json!({"type": "CONNECT", "resume": {"id": id, "token": token}}));
    assert_eq!(reply["type"], "CONNECT", "CONNECT reply: {reply}");
    client.id = reply["id"].as_str().unwrap_or_default().to_string();
    client.token = reply["token"].as_str().unwrap_or_default().to_string();
    (client, reply)
}

/// `a` requests, `b` accepts; both sides see every step.
pub fn make_friends(a: &mut Client, b: &mut Client) {
    a.send_json(
        &json!({"type": "FRIEND_REQUEST", "to": b.id, "public_key": TEST_KEY, "ref": "mf-req"}),
    );
    a.expect_ack("mf-req");
    let request = b.expect_type("FRIEND_REQUEST");
    assert_eq!(request["from"], a.id.as_str());
    b.send_json(
        &json!({"type": "FRIEND_ACCEPT", "to": a.id, "public_key": TEST_KEY, "ref": "mf-acc"}),
    );
    b.expect_ack("mf-acc");
    let accept = a.expect_type("FRIEND_ACCEPT");
    assert_eq!(accept["from"], b.id.as_str());
}

pub fn message(to: &str, payload: &str, reference: Option<&str>) -> Value {
    let mut value = json!({"type": "MESSAGE", "to": to, "payload": payload});
    if let Some(r) = reference {
        value["ref"] = json!(r);
    }
    value
}

/// `count` sessions connected at once; their IDs.
pub fn unique_ids(clients: &[Client]) -> HashSet<String> {
    clients.iter().map(|c| c.id.clone()).collect()
}

impl Client {
    /// A WebSocket client (small buffers) whose TCP source address is `source`.
    pub fn try_connect_from(server: &Server, source: Ipv4Addr) -> Result<Client, String> {
        let stream = connect_tcp_from(source, &server.addr()).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(RECV_TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(4096);
        let (ws, _response) =
            tungstenite::client::client_with_config(server.ws_url(), stream, Some(config))
                .map_err(|e| e.to_string())?;
        Ok(Self::with_short_reads(ws))
    }

    /// A client over an upgraded socket, with the short reads its receive loops poll with.
    pub(super) fn with_short_reads(ws: WebSocket<TcpStream>) -> Client {
        let _ = ws
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)));
        Client {
            ws,
            id: String::new(),
            token: String::new(),
        }
    }

    /// Drops the connection without DISCONNECT or close frame, but without losing what the
    /// server already sent: shut down our sending side (the server sees EOF, as from a
    /// dropped client), then read every text message until the server closes the socket.
    pub fn drop_and_drain(mut self) -> Vec<Value> {
        let _ = self.ws.get_ref().shutdown(Shutdown::Write);
        let mut frames = Vec::new();
        let deadline = Instant::now() + RECV_TIMEOUT;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(text)) => frames.push(
                    serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent non-JSON {text:?}: {e}")),
                ),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => return frames,
            }
        }
        panic!("the server did not close a connection that sent EOF");
    }

    /// Reads until the server's close frame, collecting the text messages before it; returns
    /// them and the close code (1005 when the frame has none).
    pub fn texts_until_close(&mut self) -> (Vec<Value>, u16) {
        let mut texts = Vec::new();
        let deadline = Instant::now() + RECV_TIMEOUT;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(text)) => texts.push(
                    serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent non-JSON {text:?}: {e}")),
                ),
                Ok(Message::Close(frame)) => {
                    return (texts, frame.map_or(1005, |f| u16::from(f.code)));
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => panic!("connection ended without a close frame: {e}"),
            }
        }
        panic!("no close frame within {RECV_TIMEOUT:?}");
    }
}
