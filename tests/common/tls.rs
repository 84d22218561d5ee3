//! HTTPS and WSS clients for the TLS tests: a CA made at test time that only the test trusts,
//! servers started with its certificates, a rustls client, requests over it and a blocking WSS
//! client. Not re-exported at the top of `common`: `make_friends` here is for [`WssClient`]s.

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use super::{HttpResponse, RECV_TIMEOUT, Server, ServerBuilder, TEST_KEY};

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

// ---------------------------------------------------------------------------------------------
// Certificates made at test time
// ---------------------------------------------------------------------------------------------

/// A fresh directory for one test's certificates and keys, removed with them when the guard is
/// dropped. Keep the guard itself (not only a path joined to it) for as long as the files are used.
pub fn fresh_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("secchat-tls-{what}-"))
        .tempdir()
        .expect("create temp dir")
}

/// A CA that only this test trusts, issuing server certificates for `localhost` and 127.0.0.1.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub der: CertificateDer<'static>,
    /// The CA certificate as PEM, for peers that read their trust anchors from a file.
    pub pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "SecChat test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A new key and certificate for `localhost` and 127.0.0.1 written as `cert.pem`/`key.pem`
    /// (atomically, as certbot does) in `dir`; returns the certificate.
    pub fn issue_into(&self, dir: &Path) -> CertificateDer<'static> {
        self.issue_for_into(&["localhost", "127.0.0.1"], dir)
    }

    /// Like [`TestCa::issue_into`], for `names` (DNS names or IP addresses).
    pub fn issue_for_into(&self, names: &[&str], dir: &Path) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        replace_file(&dir.join("cert.pem"), cert.pem().as_bytes());
        replace_file(&dir.join("key.pem"), key.serialize_pem().as_bytes());
        cert.der().clone()
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        client_config_trusting(self.der.clone(), None)
    }
}

pub fn replace_file(path: &Path, contents: &[u8]) {
    let temporary = path.with_extension("new");
    fs::write(&temporary, contents).expect("write file");
    fs::rename(&temporary, path).expect("rename file");
}

pub fn client_config_trusting(
    anchor: CertificateDer<'static>,
    only: Option<&'static rustls::SupportedProtocolVersion>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(anchor).expect("trust anchor");
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()));
    let builder = match only {
        Some(version) => builder.with_protocol_versions(&[version]),
        None => builder.with_safe_default_protocol_versions(),
    }
    .expect("protocol versions");
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// Starts `secchat --listen 127.0.0.1:PORT FLAGS`; ready once it logs its banner (the port
/// speaks TLS, so plain `/healthz` cannot tell).
pub fn start_server(flags: &[&str]) -> Server {
    ServerBuilder::new().flags(flags).ready_on_banner().start()
}

/// Starts a server with a fresh certificate from `ca` in a fresh directory (removed when the
/// returned guard is dropped).
pub fn start_tls_server(
    ca: &TestCa,
    extra: &[&str],
) -> (Server, tempfile::TempDir, CertificateDer<'static>) {
    let dir = fresh_dir("pki");
    let served = ca.issue_into(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let mut flags = vec![
        "--tls-cert",
        cert.to_str().expect("utf-8 path"),
        "--tls-key",
        key.to_str().expect("utf-8 path"),
    ];
    flags.extend_from_slice(extra);
    (start_server(&flags), dir, served)
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// A TCP connection with a completed TLS handshake to `localhost`.
pub fn tls_connect(server: &Server, config: &Arc<ClientConfig>) -> TlsStream {
    let tcp = TcpStream::connect(server.addr()).expect("TCP connect");
    tcp.set_read_timeout(Some(RECV_TIMEOUT)).expect("timeout");
    tcp.set_write_timeout(Some(RECV_TIMEOUT)).expect("timeout");
    tcp.set_nodelay(true).expect("nodelay");
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = ClientConnection::new(Arc::clone(config), name).expect("client connection");
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .unwrap_or_else(|e| panic!("TLS handshake failed: {e}; logs: {}", server.logs()));
    }
    stream
}

pub fn peer_certificate(stream: &TlsStream) -> CertificateDer<'static> {
    stream
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

/// Reads one response up to the end of the stream (the requests say `Connection: close`).
pub fn read_response(stream: &mut impl Read) -> HttpResponse {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the response failed after {} bytes: {e}", raw.len()),
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut slots);
    let head_len = match parsed.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!(
            "no complete response head ({other:?}): {:?}",
            String::from_utf8_lossy(raw)
        ),
    };
    HttpResponse {
        status: parsed.code.unwrap_or(0),
        headers: parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: raw[head_len..].to_vec(),
    }
}

pub fn https_get(server: &Server, config: &Arc<ClientConfig>, path: &str) -> HttpResponse {
    let mut stream = tls_connect(server, config);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        server.port
    );
    stream.write_all(request.as_bytes()).expect("send request");
    stream.flush().expect("flush request");
    // Reading to a clean end also checks that the server sent close_notify.
    read_response(&mut stream)
}

/// The status of a `/ws` upgrade over TLS with `Host: host` (the certificate is checked for
/// `localhost`: the TLS name and the HTTP one are independent).
pub fn wss_upgrade_status(server: &Server, config: &Arc<ClientConfig>, host: &str) -> u16 {
    let mut stream = tls_connect(server, config);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: https://{host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send upgrade");
    stream.flush().expect("flush upgrade");
    // A 101 leaves the connection open: read up to the end of the head only.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "no complete answer for Host {host} ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    parse_response(&head).status
}

/// A blocking WSS client: tungstenite over rustls.
pub struct WssClient {
    pub ws: WebSocket<TlsStream>,
    pub id: String,
}

impl WssClient {
    pub fn connect(server: &Server, config: &Arc<ClientConfig>) -> WssClient {
        let stream = tls_connect(server, config);
        let url = format!("wss://localhost:{}/ws", server.port);
        let (ws, response) = tungstenite::client::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("WSS upgrade failed: {e}; logs: {}", server.logs()));
        assert_eq!(response.status().as_u16(), 101);
        // Short reads from now on, so receiving can poll against its own deadline.
        ws.get_ref()
            .sock
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        WssClient {
            ws,
            id: String::new(),
        }
    }

    pub fn send_json(&mut self, value: &Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .unwrap_or_else(|e| panic!("send failed: {e}"));
    }

    /// The next text message as JSON, or `None` if none arrives within `timeout`.
    pub fn try_recv_json(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(text.as_str()).expect("server sent JSON"));
                }
                Ok(Message::Close(frame)) => panic!("server closed the WebSocket: {frame:?}"),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(e) => panic!("WSS read failed: {e}"),
            }
        }
    }

    pub fn expect_type(&mut self, kind: &str) -> Value {
        let value = self
            .try_recv_json(RECV_TIMEOUT)
            .unwrap_or_else(|| panic!("no {kind} within {RECV_TIMEOUT:?}"));
        assert_eq!(value["type"], kind, "expected {kind}, got {value}");
        value
    }

    pub fn expect_ack(&mut self, reference: &str) {
        let ack = self.expect_type("ACK");
        assert_eq!(ack["ref"], reference, "{ack}");
    }

    pub fn connect_session(&mut self) {
        self.send_json(&json!({"type": "CONNECT"}));
        let reply = self.expect_type("CONNECT");
        self.id = reply["id"].as_str().expect("id").to_string();
    }

    pub fn ping(&mut self, reference: &str) {
        self.send_json(&json!({"type": "PING", "ref": reference}));
        let pong = self.expect_type("PONG");
        assert_eq!(pong["ref"], reference, "{pong}");
    }
}

pub fn make_friends(a: &mut WssClient, b: &mut WssClient) {
    a.send_json(
        &json!({"type": "FRIEND_REQUEST", "to": b.id, "public_key": TEST_KEY, "ref": "req"}),
    );
    a.expect_ack("req");
    let request = b.expect_type("FRIEND_REQUEST");
    assert_eq!(request["from"], a.id.as_str());
    assert_eq!(request["public_key"], TEST_KEY);
    b.send_json(
        &json!({"type": "FRIEND_ACCEPT", "to": a.id, "public_key": TEST_KEY, "ref": "acc"}),
    );
    b.expect_ack("acc");
    let accept = a.expect_type("FRIEND_ACCEPT");
    assert_eq!(accept["from"], b.id.as_str());
}
