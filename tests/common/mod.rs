//! Support for the integration tests: start the real `secchat` binary on a free port and drive it
//! over real TCP sockets, with tungstenite as the WebSocket client ([`Client`]) or with hand-made
//! frames ([`RawClient`]) where a test needs what a well-behaved client library refuses to send.
//!
//! Each test binary uses only part of this module.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, WebSocket};

/// How long a test waits for a frame it expects before failing. Generous: the machine is shared.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// An armored public key as far as the server can tell (it only checks the armor header).
pub const TEST_KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxjMEZk9yXBYJKwYBBAHaRw8BAQdAintegrationtestkeymaterialAAAA\n=AbCd\n-----END PGP PUBLIC KEY BLOCK-----\n";

/// An armored message as far as the server can tell.
pub const TEST_PAYLOAD: &str = "-----BEGIN PGP MESSAGE-----\n\nwV4DintegrationtestpayloadAAAA\n=XyZw\n-----END PGP MESSAGE-----\n";

pub const PAYLOAD_HEADER: &str = "-----BEGIN PGP MESSAGE-----";
pub const KEY_HEADER: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";

/// A payload that carries `marker`, so a test can tell messages apart.
pub fn payload_with(marker: &str) -> String {
    format!("{PAYLOAD_HEADER}\n\n{marker}\n=XyZw\n-----END PGP MESSAGE-----\n")
}

/// A public key that carries `marker`.
pub fn key_with(marker: &str) -> String {
    format!("{KEY_HEADER}\n\n{marker}\n=AbCd\n-----END PGP PUBLIC KEY BLOCK-----\n")
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

pub fn is_valid_id(id: &str) -> bool {
    id.len() == 6 && id.chars().all(|c| CROCKFORD.contains(c))
}

pub fn is_valid_token(token: &str) -> bool {
    token.len() == 43
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

static NEXT_LOG_DIR: AtomicU64 = AtomicU64::new(0);

pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port free on `host` now (for `0.0.0.0`, free on every address, which a port free on
/// 127.0.0.1 need not be).
pub fn free_port_on(host: &str) -> u16 {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let listener = TcpListener::bind((host, 0)).expect("bind a free port");
    listener.local_addr().expect("local_addr").port()
}

fn fresh_log_dir() -> PathBuf {
    let n = NEXT_LOG_DIR.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("secchat-itest-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create log dir");
    dir
}

/// How to start a server: flags, environment, and whether `--listen` is passed as a flag.
#[derive(Clone, Default)]
pub struct ServerBuilder {
    flags: Vec<String>,
    env: Vec<(String, String)>,
    listen_via_env: bool,
    /// The host part of `--listen` (default `127.0.0.1`), e.g. `[::1]` or `0.0.0.0`.
    listen_host: Option<String>,
}

impl ServerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Pass the listen address as `SECCHAT_LISTEN` instead of `--listen`.
    pub fn listen_via_env(mut self) -> Self {
        self.listen_via_env = true;
        self
    }

    /// Listen on `host` (an IPv4 address or a bracketed IPv6 one) instead of 127.0.0.1; clients
    /// connect to the same address (`0.0.0.0` reaches this machine on Linux).
    pub fn listen_on(mut self, host: &str) -> Self {
        self.listen_host = Some(host.to_string());
        self
    }

    pub fn start(self) -> Server {
        let mut last_logs = String::new();
        // A port found free can be taken by someone else before the server binds it (our own
        // clients' ephemeral ports included), so a failed start is retried on another port.
        for _ in 0..4 {
            let port = free_port_on(self.listen_host.as_deref().unwrap_or("127.0.0.1"));
            let mut server = self.spawn(port);
            match server.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return server,
                Err(why) => {
                    last_logs = format!("{why}\n{}", server.logs());
                }
            }
        }
        panic!("secchat did not become ready: {last_logs}");
    }

    fn spawn(&self, port: u16) -> Server {
        let log_dir = fresh_log_dir();
        let stdout = File::create(log_dir.join("stdout")).expect("stdout file");
        let stderr = File::create(log_dir.join("stderr")).expect("stderr file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_secchat"));
        for (key, _) in std::env::vars() {
            if key.starts_with("SECCHAT_") {
                command.env_remove(key);
            }
        }
        let host = self
            .listen_host
            .clone()
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let listen = format!("{host}:{port}");
        if self.listen_via_env {
            command.env("SECCHAT_LISTEN", &listen);
        } else {
            command.arg("--listen").arg(&listen);
        }
        command.args(&self.flags);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn secchat");
        Server {
            child,
            host,
            port,
            log_dir,
            exit: None,
        }
    }
}

/// A running `secchat` process, killed on drop.
pub struct Server {
    child: Child,
    host: String,
    pub port: u16,
    log_dir: PathBuf,
    exit: Option<ExitStatus>,
}

impl Server {
    /// Start the binary with `flags` (plus `--listen 127.0.0.1:PORT`) and wait for `/healthz`.
    pub fn start(flags: &[&str]) -> Server {
        ServerBuilder::new().flags(flags).start()
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}:{}/ws", self.host, self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name (`TERM`, `INT`) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return self.exit;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.log_dir.join(name)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return Err(format!("secchat exited early with {status}"));
            }
            if let Ok(response) = try_http_get(&self.addr(), "/healthz")
                && response.status == 200
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("no 200 from /healthz in time".to_string());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        } else {
            eprintln!("server logs kept in {}", self.log_dir.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The security headers every response must carry (PROTOCOL.md §7).
    pub fn assert_security_headers(&self) {
        let csp = self
            .header("Content-Security-Policy")
            .unwrap_or_else(|| panic!("no Content-Security-Policy on {}: {self:?}", self.status));
        assert_csp_is_strict(csp);
        assert_eq!(
            self.header("X-Content-Type-Options")
                .map(str::to_ascii_lowercase),
            Some("nosniff".to_string()),
            "X-Content-Type-Options on {}",
            self.status
        );
        assert_eq!(
            self.header("Referrer-Policy").map(str::to_ascii_lowercase),
            Some("no-referrer".to_string()),
            "Referrer-Policy on {}",
            self.status
        );
    }
}

/// A CSP with `frame-ancestors 'none'` and no source that lets in a third-party origin: only
/// quoted keywords/hashes/nonces and the `data:`/`blob:` schemes (which name no origin).
pub fn assert_csp_is_strict(csp: &str) {
    let mut has_frame_ancestors_none = false;
    for directive in csp.split(';') {
        let mut words = directive.split_ascii_whitespace();
        let Some(name) = words.next() else { continue };
        let sources: Vec<&str> = words.collect();
        if name.eq_ignore_ascii_case("frame-ancestors") {
            has_frame_ancestors_none = sources == ["'none'"];
        }
        if name.eq_ignore_ascii_case("report-uri") || name.eq_ignore_ascii_case("report-to") {
            panic!("CSP reports to somewhere: {csp}");
        }
        for source in sources {
            let allowed = (source.starts_with('\'') && source.ends_with('\''))
                || source.eq_ignore_ascii_case("data:")
                || source.eq_ignore_ascii_case("blob:");
            assert!(
                allowed,
                "CSP source {source:?} in {name} may allow a third-party origin: {csp}"
            );
        }
    }
    assert!(
        has_frame_ancestors_none,
        "CSP lacks frame-ancestors 'none': {csp}"
    );
}

/// Read one response from `stream`. `no_body` for HEAD requests and upgrade responses. Bytes
/// after the response stay in `body` (for an upgrade: the first WebSocket frames).
pub fn read_http_response(stream: &mut TcpStream, no_body: bool) -> io::Result<HttpResponse> {
    let mut buf = Vec::new();
    let mut response = read_response_from(stream, &mut buf, no_body)?;
    response.body.extend_from_slice(&buf);
    Ok(response)
}

/// Read one response from `stream`, starting with the bytes already in `buf`; what follows the
/// response is left in `buf` (pipelining).
pub fn read_response_from(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    no_body: bool,
) -> io::Result<HttpResponse> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF before end of head: {:?}", String::from_utf8_lossy(buf)),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut header_slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut header_slots);
    parsed
        .parse(&buf[..head_end])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let status = parsed.code.unwrap_or(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    buf.drain(..head_end);
    let content_length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    if no_body || status == 101 || status == 204 || status == 304 {
        return Ok(HttpResponse {
            status,
            headers,
            body: Vec::new(),
        });
    }
    let body = match content_length {
        Some(len) => {
            while buf.len() < len {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let take = len.min(buf.len());
            buf.drain(..take).collect()
        }
        None => {
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                    Err(e) => return Err(e),
                }
            }
            std::mem::take(buf)
        }
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn connect_tcp(addr: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(RECV_TIMEOUT))?;
    stream.set_write_timeout(Some(RECV_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Send `request` verbatim and read one response.
pub fn try_http_raw(addr: &str, request: &[u8], no_body: bool) -> io::Result<HttpResponse> {
    let mut stream = connect_tcp(addr)?;
    stream.write_all(request)?;
    read_http_response(&mut stream, no_body)
}

pub fn http_raw(addr: &str, request: &[u8], no_body: bool) -> HttpResponse {
    try_http_raw(addr, request, no_body).unwrap_or_else(|e| {
        panic!(
            "HTTP request {:?} failed: {e}",
            String::from_utf8_lossy(request)
        )
    })
}

fn try_http_get(addr: &str, path: &str) -> io::Result<HttpResponse> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    try_http_raw(addr, request.as_bytes(), false)
}

pub fn http_request(server: &Server, method: &str, path: &str) -> HttpResponse {
    let addr = server.addr();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http_raw(&addr, request.as_bytes(), method == "HEAD")
}

pub fn http_get(server: &Server, path: &str) -> HttpResponse {
    http_request(server, "GET", path)
}

/// A WebSocket upgrade request for `/ws` with the given `Host` and optional `Origin`.
pub fn upgrade_request(host: &str, origin: Option<&str>) -> String {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\n{origin}Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

// ---------------------------------------------------------------------------------------------
// tungstenite client
// ---------------------------------------------------------------------------------------------

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
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

// ---------------------------------------------------------------------------------------------
// Raw WebSocket client: hand-made frames
// ---------------------------------------------------------------------------------------------

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

// =============================================================================================
// Hostile clients and soak (tests/hostile_*.rs, tests/soak.rs): added by the hardening work of
// issue 5. Everything above is unchanged.
// =============================================================================================

// Each test binary uses only part of this module (see the top), re-exports included.
#[allow(unused_imports)]
pub use hostile::*;

mod hostile {
    use std::io;
    use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
    use std::os::fd::FromRawFd;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use serde_json::Value;
    use tungstenite::protocol::WebSocketConfig;
    use tungstenite::{Message, WebSocket};

    use super::{
        Client, RECV_TIMEOUT, Server, connect_session, is_timeout, make_friends, message,
        payload_with,
    };

    /// The server's resident memory in KiB (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_kib(pid: u32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
    }

    /// Lifts this process's open-file soft limit to the hard limit (tests holding thousands of
    /// sockets).
    pub fn raise_open_file_limit() {
        secchat::process_limits::raise_open_file_limit();
    }

    fn sockaddr_in(address: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: address.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*address.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }

    /// A TCP connection to `addr` whose source is the loopback address `source`. Linux routes
    /// all of 127.0.0.0/8 to the loopback interface, so one test can be several "addresses"
    /// for the server's per-address limit. No timeouts are set.
    pub fn connect_tcp_from(source: Ipv4Addr, addr: &str) -> io::Result<TcpStream> {
        let remote: SocketAddr = addr
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        let SocketAddr::V4(remote) = remote else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "IPv4 only"));
        };
        let local = sockaddr_in(SocketAddrV4::new(source, 0));
        let remote = sockaddr_in(remote);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: the descriptor is fresh and handed to a TcpStream at once, which owns and
        // closes it on every path; bind and connect only read the sockaddr_in structs above.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let stream = TcpStream::from_raw_fd(fd);
            let as_sockaddr = |a: &libc::sockaddr_in| (a as *const libc::sockaddr_in).cast();
            if libc::bind(fd, as_sockaddr(&local), len) != 0
                || libc::connect(fd, as_sockaddr(&remote), len) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(stream)
        }
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

        fn with_short_reads(ws: WebSocket<TcpStream>) -> Client {
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

    /// Two friends on one server, for measuring round trips while something hostile happens.
    pub struct HealthyPair {
        pub a: Client,
        pub b: Client,
        count: u64,
    }

    impl HealthyPair {
        pub fn new(server: &Server) -> HealthyPair {
            let (mut a, _, _) = connect_session(server);
            let (mut b, _, _) = connect_session(server);
            make_friends(&mut a, &mut b);
            HealthyPair { a, b, count: 0 }
        }

        /// A MESSAGE from a to b and one back, each acknowledged: the time until a has b's.
        pub fn round_trip(&mut self) -> Duration {
            self.count += 1;
            let marker = format!("rtt-{}", self.count);
            let started = Instant::now();
            self.a
                .send_json(&message(&self.b.id, &payload_with(&marker), Some(&marker)));
            self.a.expect_ack(&marker);
            let there = self.b.expect_type("MESSAGE");
            assert!(there["payload"].as_str().unwrap_or("").contains(&marker));
            self.b
                .send_json(&message(&self.a.id, &payload_with(&marker), Some(&marker)));
            self.b.expect_ack(&marker);
            let back = self.a.expect_type("MESSAGE");
            assert!(back["payload"].as_str().unwrap_or("").contains(&marker));
            started.elapsed()
        }

        /// Round trips every 50 ms on a thread of their own until [`RttMonitor::stop`].
        pub fn monitor(mut self) -> RttMonitor {
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicUsize::new(0));
            let (stop_seen, counted) = (Arc::clone(&stop), Arc::clone(&count));
            let handle = std::thread::spawn(move || {
                let mut samples = Vec::new();
                while !stop_seen.load(Ordering::Relaxed) {
                    samples.push(self.round_trip());
                    counted.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
                (samples, self)
            });
            RttMonitor {
                stop,
                count,
                handle,
            }
        }
    }

    /// A [`HealthyPair`] measuring round trips in the background.
    pub struct RttMonitor {
        stop: Arc<AtomicBool>,
        count: Arc<AtomicUsize>,
        handle: JoinHandle<(Vec<Duration>, HealthyPair)>,
    }

    impl RttMonitor {
        /// Round trips completed so far.
        pub fn samples(&self) -> usize {
            self.count.load(Ordering::Relaxed)
        }

        /// Blocks until `n` round trips have completed (so that a hostile condition the caller
        /// keeps up is measured long enough); panics after 30 s.
        pub fn wait_for_samples(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.samples() < n {
                assert!(
                    Instant::now() < deadline && !self.handle.is_finished(),
                    "the healthy pair stalled after {} round trips",
                    self.samples()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// Stops measuring; panics if a round trip failed (the pair's expectations panicked).
        pub fn stop(self) -> (RttStats, HealthyPair) {
            self.stop.store(true, Ordering::Relaxed);
            match self.handle.join() {
                Ok((samples, pair)) => (RttStats { samples }, pair),
                Err(_) => panic!("the healthy pair's round trip failed (see its panic above)"),
            }
        }
    }

    /// Round-trip times of a [`HealthyPair`].
    pub struct RttStats {
        pub samples: Vec<Duration>,
    }

    impl RttStats {
        pub fn percentile(&self, p: f64) -> Duration {
            let mut sorted = self.samples.clone();
            sorted.sort();
            let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
            sorted.get(rank).copied().unwrap_or_default()
        }

        /// At least `min_samples` round trips, and 95 % of them within `bound`. A sanity bound on
        /// a shared machine, not a benchmark: a starved or blocked server fails it by seconds,
        /// while one scheduling hiccup does not.
        pub fn assert_healthy(&self, what: &str, min_samples: usize, bound: Duration) {
            let p50 = self.percentile(0.5);
            let p95 = self.percentile(0.95);
            let max = self.samples.iter().max().copied().unwrap_or_default();
            eprintln!(
                "{what}: {} round trips, p50 {p50:?}, p95 {p95:?}, max {max:?}",
                self.samples.len()
            );
            assert!(
                self.samples.len() >= min_samples,
                "{what}: only {} round trips",
                self.samples.len()
            );
            assert!(
                p95 <= bound,
                "{what}: p95 round trip {p95:?} over {bound:?}"
            );
        }
    }
}

// =============================================================================================
// Client addresses (tests/hostile_addresses.rs, tests/http_host.rs): IPv6 sources in a network
// namespace of the test's own, and WebSocket upgrades with extra headers (X-Forwarded-For).
// =============================================================================================

#[allow(unused_imports)]
pub use addresses::*;

mod addresses;
