//! HTTPS and WSS built into `secchat` (docs/PROTOCOL.md §7): the real binary with a
//! certificate made at test time, driven by a rustls client that trusts only the test's own CA.

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ProtocolVersion, RootCertStore, StreamOwned};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

mod common;
use common::{
    HttpResponse, RECV_TIMEOUT, Server, ServerBuilder, TEST_KEY, payload_with, run_to_exit,
};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

// ---------------------------------------------------------------------------------------------
// Certificates made at test time
// ---------------------------------------------------------------------------------------------

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

fn fresh_dir(what: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("secchat-tls-{}-{what}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A CA that only this test trusts, issuing server certificates for `localhost` and 127.0.0.1.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "SecChat test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A new key and certificate for `localhost` and 127.0.0.1 written as `cert.pem`/`key.pem`
    /// (atomically, as certbot does) in `dir`; returns the certificate.
    fn issue_into(&self, dir: &Path) -> CertificateDer<'static> {
        self.issue_for_into(&["localhost", "127.0.0.1"], dir)
    }

    /// Like [`TestCa::issue_into`], for `names` (DNS names or IP addresses).
    fn issue_for_into(&self, names: &[&str], dir: &Path) -> CertificateDer<'static> {
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

    fn client_config(&self) -> Arc<ClientConfig> {
        client_config_trusting(self.der.clone(), None)
    }
}

fn replace_file(path: &Path, contents: &[u8]) {
    let temporary = path.with_extension("new");
    fs::write(&temporary, contents).expect("write file");
    fs::rename(&temporary, path).expect("rename file");
}

fn client_config_trusting(
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

fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// Starts `secchat --listen 127.0.0.1:PORT FLAGS`; ready once it logs its banner (the port
/// speaks TLS, so plain `/healthz` cannot tell).
fn start_server(flags: &[&str]) -> Server {
    ServerBuilder::new().flags(flags).ready_on_banner().start()
}

/// Starts a server with a fresh certificate from `ca` in a fresh directory.
fn start_tls_server(ca: &TestCa, extra: &[&str]) -> (Server, PathBuf, CertificateDer<'static>) {
    let dir = fresh_dir("pki");
    let served = ca.issue_into(&dir);
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
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
fn tls_connect(server: &Server, config: &Arc<ClientConfig>) -> TlsStream {
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

fn peer_certificate(stream: &TlsStream) -> CertificateDer<'static> {
    stream
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

/// Reads one response up to the end of the stream (the requests say `Connection: close`).
fn read_response(stream: &mut impl Read) -> HttpResponse {
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

fn https_get(server: &Server, config: &Arc<ClientConfig>, path: &str) -> HttpResponse {
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
fn wss_upgrade_status(server: &Server, config: &Arc<ClientConfig>, host: &str) -> u16 {
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
struct WssClient {
    ws: WebSocket<TlsStream>,
    id: String,
}

impl WssClient {
    fn connect(server: &Server, config: &Arc<ClientConfig>) -> WssClient {
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

    fn send_json(&mut self, value: &Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .unwrap_or_else(|e| panic!("send failed: {e}"));
    }

    /// The next text message as JSON, or `None` if none arrives within `timeout`.
    fn try_recv_json(&mut self, timeout: Duration) -> Option<Value> {
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

    fn expect_type(&mut self, kind: &str) -> Value {
        let value = self
            .try_recv_json(RECV_TIMEOUT)
            .unwrap_or_else(|| panic!("no {kind} within {RECV_TIMEOUT:?}"));
        assert_eq!(value["type"], kind, "expected {kind}, got {value}");
        value
    }

    fn expect_ack(&mut self, reference: &str) {
        let ack = self.expect_type("ACK");
        assert_eq!(ack["ref"], reference, "{ack}");
    }

    fn connect_session(&mut self) {
        self.send_json(&json!({"type": "CONNECT"}));
        let reply = self.expect_type("CONNECT");
        self.id = reply["id"].as_str().expect("id").to_string();
    }

    fn ping(&mut self, reference: &str) {
        self.send_json(&json!({"type": "PING", "ref": reference}));
        let pong = self.expect_type("PONG");
        assert_eq!(pong["ref"], reference, "{pong}");
    }
}

fn make_friends(a: &mut WssClient, b: &mut WssClient) {
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

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn wss_carries_the_protocol_end_to_end() {
    let ca = TestCa::new();
    let (server, _dir, _) = start_tls_server(&ca, &["--rate-messages", "0"]);
    let config = ca.client_config();
    let mut a = WssClient::connect(&server, &config);
    let mut b = WssClient::connect(&server, &config);
    assert_eq!(a.ws.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    a.connect_session();
    b.connect_session();
    make_friends(&mut a, &mut b);

    a.send_json(
        &json!({"type": "MESSAGE", "to": b.id, "payload": payload_with("hello"), "ref": "m1"}),
    );
    a.expect_ack("m1");
    let message = b.expect_type("MESSAGE");
    assert_eq!(message["from"], a.id.as_str());
    assert_eq!(message["payload"], payload_with("hello"));
    assert!(message["ts"].as_u64().is_some(), "{message}");

    // Larger than one TLS record (16 KiB): the server must reassemble it from several.
    let big = payload_with(&"Q".repeat(50_000));
    a.send_json(&json!({"type": "MESSAGE", "to": b.id, "payload": big, "ref": "big"}));
    a.expect_ack("big");
    assert_eq!(b.expect_type("MESSAGE")["payload"], big.as_str());

    // A burst written at once arrives as many records in few reads: every one of them must be
    // routed even though the socket reports readable only once (edge-triggered).
    let count = 300;
    for n in 0..count {
        let frame =
            json!({"type": "MESSAGE", "to": b.id, "payload": payload_with(&format!("n{n}"))});
        a.ws.write(Message::text(frame.to_string()))
            .expect("queue message");
    }
    a.ws.flush().expect("flush burst");
    for n in 0..count {
        let message = b.expect_type("MESSAGE");
        assert_eq!(
            message["payload"],
            payload_with(&format!("n{n}")),
            "message {n}"
        );
    }
    b.ping("still-there");
}

#[test]
fn https_serves_static_files_with_hsts_and_csp_over_tls_1_2_and_1_3() {
    let ca = TestCa::new();
    let (server, _dir, served) = start_tls_server(&ca, &[]);
    for (version, expected) in [
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
    ] {
        let config = client_config_trusting(ca.der.clone(), Some(version));
        let stream = tls_connect(&server, &config);
        assert_eq!(stream.conn.protocol_version(), Some(expected));
        assert_eq!(peer_certificate(&stream), served);

        let page = https_get(&server, &config, "/");
        assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
        assert!(
            String::from_utf8_lossy(&page.body).contains("<"),
            "not HTML: {:?}",
            String::from_utf8_lossy(&page.body)
        );
        let hsts = page
            .header("Strict-Transport-Security")
            .expect("HSTS header over HTTPS");
        assert!(hsts.contains("max-age="), "{hsts}");
        let csp = page.header("Content-Security-Policy").expect("CSP header");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(page.header("X-Content-Type-Options"), Some("nosniff"));

        let health = https_get(&server, &config, "/healthz");
        assert_eq!(health.status, 200);
        assert_eq!(health.body, b"ok");
    }
}

#[test]
fn a_large_file_reaches_a_slow_reader_completely() {
    // Far more than the socket buffers hold: the server's writes block, resume on writable
    // events, and the last TLS records must still leave before the connection closes.
    let public = fresh_dir("public");
    let content: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789\n"[(i % 37) as usize])
        .collect();
    fs::write(public.join("index.html"), "<!doctype html>").expect("index");
    fs::write(public.join("big.js"), &content).expect("big file");
    let ca = TestCa::new();
    let (server, _dir, _) =
        start_tls_server(&ca, &["--public", public.to_str().expect("utf-8 path")]);
    let mut stream = tls_connect(&server, &ca.client_config());
    let request = format!(
        "GET /big.js HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        server.port
    );
    stream.write_all(request.as_bytes()).expect("send request");
    std::thread::sleep(Duration::from_millis(500));
    let response = read_response(&mut stream);
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), content.len());
    assert!(response.body == content, "the body differs from the file");
}

#[test]
fn sighup_reload_serves_the_new_certificate_to_new_connections_only() {
    let ca = TestCa::new();
    let (mut server, dir, first) = start_tls_server(&ca, &[]);
    let config = ca.client_config();
    let mut old = WssClient::connect(&server, &config);
    old.connect_session();
    assert_eq!(peer_certificate(old.ws.get_ref()), first);

    let second = ca.issue_into(&dir);
    assert_ne!(first, second);
    server.signal("HUP");
    assert!(
        server.wait_for_log("reloaded", RECV_TIMEOUT),
        "no reload logged: {}",
        server.logs()
    );
    let fresh = tls_connect(&server, &config);
    assert_eq!(
        peer_certificate(&fresh),
        second,
        "a new connection got the old certificate"
    );

    // The connection made before the reload is still up and still routed.
    old.ping("after-reload");
    let mut newcomer = WssClient::connect(&server, &config);
    newcomer.connect_session();
    make_friends(&mut old, &mut newcomer);
    old.send_json(
        &json!({"type": "MESSAGE", "to": newcomer.id, "payload": payload_with("x"), "ref": "o"}),
    );
    old.expect_ack("o");
    assert_eq!(newcomer.expect_type("MESSAGE")["from"], old.id.as_str());

    // A broken renewal is refused and the last good certificate stays in use.
    replace_file(&dir.join("key.pem"), b"not a key\n");
    server.signal("HUP");
    assert!(
        server.wait_for_log("keeping the current certificate", RECV_TIMEOUT),
        "no reload error logged: {}",
        server.logs()
    );
    let after_bad = tls_connect(&server, &config);
    assert_eq!(peer_certificate(&after_bad), second);
    old.ping("after-bad-reload");
}

/// With TLS, `/ws` opens for the certificate's DNS names (wildcards for one label),
/// `--public-host` names, `localhost` and IP literals, with any port; other names get 421 (DNS
/// rebinding). A renewed certificate's names replace the old ones on SIGHUP.
#[test]
fn wss_opens_for_the_certificate_s_names_and_public_hosts_only() {
    let ca = TestCa::new();
    let dir = fresh_dir("names");
    ca.issue_for_into(&["localhost", "127.0.0.1", "chat.test", "*.pi.test"], &dir);
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let mut server = start_server(&[
        "--tls-cert",
        cert.to_str().expect("utf-8 path"),
        "--tls-key",
        key.to_str().expect("utf-8 path"),
        "--public-host",
        "proxy.test",
    ]);
    let config = ca.client_config();
    let port = server.port;
    let status = |host: &str| wss_upgrade_status(&server, &config, host);
    for host in [
        format!("chat.test:{port}"),
        "chat.test".to_string(),
        "a.pi.test".to_string(),
        "proxy.test:443".to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "192.0.2.1".to_string(),
    ] {
        assert_eq!(status(&host), 101, "Host {host}");
    }
    for host in [
        format!("evil.example:{port}"),
        "pi.test".to_string(),
        "b.a.pi.test".to_string(),
        "renamed.test".to_string(),
    ] {
        assert_eq!(status(&host), 421, "Host {host}");
    }

    ca.issue_for_into(&["localhost", "renamed.test"], &dir);
    server.signal("HUP");
    assert!(
        server.wait_for_log("reloaded", RECV_TIMEOUT),
        "no reload logged: {}",
        server.logs()
    );
    let status = |host: &str| wss_upgrade_status(&server, &config, host);
    assert_eq!(status("renamed.test"), 101);
    assert_eq!(status("proxy.test"), 101, "--public-host stays");
    assert_eq!(status("chat.test"), 421, "the old certificate's name");
}

#[test]
fn plain_http_to_the_tls_port_gets_a_400_that_names_the_https_url() {
    let ca = TestCa::new();
    let (server, _dir, _) = start_tls_server(&ca, &[]);
    let mut tcp = TcpStream::connect(server.addr()).expect("connect");
    tcp.set_read_timeout(Some(RECV_TIMEOUT)).expect("timeout");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: curl/8\r\n\r\n",
        server.addr()
    );
    let started = Instant::now();
    tcp.write_all(request.as_bytes())
        .expect("send plain request");
    let response = read_response(&mut tcp);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the refused connection was not closed promptly"
    );
    assert_eq!(response.status, 400);
    assert_eq!(
        String::from_utf8_lossy(&response.body),
        format!("This port speaks HTTPS: use https://{}/\n", server.addr())
    );
    assert_eq!(response.header("Connection"), Some("close"));
    // Every header the server promises on every response; HSTS is ignored over plain HTTP.
    for (name, value) in secchat::http::SECURITY_HEADERS {
        assert_eq!(response.header(name), Some(*value), "{name} on the refusal");
    }
    assert_eq!(response.header("Strict-Transport-Security"), None);
    // The port still speaks TLS to everyone else.
    let health = https_get(&server, &ca.client_config(), "/healthz");
    assert_eq!(health.status, 200);
}

#[test]
fn a_stalled_tls_handshake_is_cut_off_by_the_head_deadline() {
    let ca = TestCa::new();
    let (server, _dir, _) = start_tls_server(&ca, &[]);
    let config = ca.client_config();

    // Half of a real ClientHello.
    let name = ServerName::try_from("localhost").expect("server name");
    let mut hello_maker = ClientConnection::new(Arc::clone(&config), name).expect("client");
    let mut hello = Vec::new();
    hello_maker.write_tls(&mut hello).expect("ClientHello");
    assert_eq!(hello.first(), Some(&0x16));
    let half = hello[..hello.len() / 2].to_vec();

    let started = Instant::now();
    let stalls: Vec<_> = [Vec::new(), half]
        .into_iter()
        .map(|sent| {
            let mut tcp = TcpStream::connect(server.addr()).expect("connect");
            tcp.write_all(&sent).expect("send");
            tcp.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                // Only the end of the stream (or a reset) may come back.
                let outcome = match tcp.read(&mut buf) {
                    Ok(0) => "closed".to_string(),
                    Ok(n) => format!("{n} unexpected bytes"),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => "closed".to_string(),
                    Err(e) => format!("{e}"),
                };
                (outcome, started.elapsed())
            })
        })
        .collect();

    // The single-threaded loop keeps serving others while those two stall.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(https_get(&server, &config, "/healthz").status, 200);

    for (which, stall) in ["silent", "half ClientHello"].iter().zip(stalls) {
        let (outcome, after) = stall.join().expect("reader thread");
        assert_eq!(outcome, "closed", "{which}");
        assert!(
            after >= Duration::from_secs(9) && after <= Duration::from_secs(12),
            "{which} connection cut after {after:?}, expected about 10 s"
        );
    }
}

#[test]
fn self_signed_certificate_is_made_once_reused_and_its_fingerprint_printed() {
    use std::os::unix::fs::PermissionsExt;

    let dir = fresh_dir("self-signed").join("tls");
    let dir_arg = dir.to_str().expect("utf-8 path").to_string();

    let server = start_server(&["--tls-self-signed", &dir_arg]);
    let cert_pem = fs::read(dir.join("cert.pem")).expect("cert.pem made");
    let key_pem = fs::read(dir.join("key.pem")).expect("key.pem made");
    let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("key.pem")), 0o600);
    let der = CertificateDer::from_pem_slice(&cert_pem).expect("a PEM certificate");
    let fingerprint = sha256_fingerprint(der.as_ref());
    let banner = server.logs();
    assert!(
        banner.contains(&format!("SHA-256 fingerprint: {fingerprint}")),
        "fingerprint {fingerprint} not printed: {banner}"
    );
    assert!(banner.contains("open https://127.0.0.1:"), "{banner}");

    // The certificate it serves is that one, valid for localhost.
    let config = client_config_trusting(der.clone(), None);
    let stream = tls_connect(&server, &config);
    assert_eq!(peer_certificate(&stream), der);
    assert_eq!(https_get(&server, &config, "/healthz").body, b"ok");
    drop(stream);
    server.stop();

    // A second start reuses both files: same certificate, same fingerprint.
    let again = start_server(&["--tls-self-signed", &dir_arg]);
    assert_eq!(fs::read(dir.join("cert.pem")).expect("cert.pem"), cert_pem);
    assert_eq!(fs::read(dir.join("key.pem")).expect("key.pem"), key_pem);
    let banner = again.logs();
    assert!(
        banner.contains(&format!("SHA-256 fingerprint: {fingerprint}")),
        "{banner}"
    );
    assert!(banner.contains("earlier start"), "{banner}");
    assert_eq!(peer_certificate(&tls_connect(&again, &config)), der);
}

#[test]
fn bad_tls_flags_exit_2_with_a_message_naming_the_file() {
    let dir = fresh_dir("bad-flags");
    let missing = dir.join("nowhere.pem");
    let missing = missing.to_str().expect("utf-8 path");
    let (status, stderr) = run_to_exit(&["--tls-cert", missing, "--tls-key", missing]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nowhere.pem"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let ca = TestCa::new();
    ca.issue_into(&dir);
    let cert = dir.join("cert.pem");
    let cert = cert.to_str().expect("utf-8 path");
    let (status, stderr) = run_to_exit(&["--tls-cert", cert, "--tls-key", cert]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a private key"), "{stderr}");

    let (status, stderr) = run_to_exit(&[
        "--tls-self-signed",
        dir.to_str().expect("utf-8 path"),
        "--tls-cert",
        cert,
        "--tls-key",
        cert,
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--tls-self-signed"), "{stderr}");
}
