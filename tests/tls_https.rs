//! HTTPS built into `secchat` (docs/PROTOCOL.md §7): static files and their headers over TLS 1.2
//! and 1.3, a large file to a slow reader, plain HTTP on the TLS port, and stalled handshakes.
//!
//! The real binary with a certificate made at test time, driven by a rustls client that trusts
//! only the test's own CA (`common/tls.rs`).

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ProtocolVersion};

mod common;
use common::RECV_TIMEOUT;
use common::tls::{
    TestCa, client_config_trusting, fresh_dir, https_get, peer_certificate, read_response,
    start_tls_server, tls_connect,
};

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
    fs::write(public.path().join("index.html"), "<!doctype html>").expect("index");
    fs::write(public.path().join("big.js"), &content).expect("big file");
    let ca = TestCa::new();
    let (server, _dir, _) = start_tls_server(
        &ca,
        &["--public", public.path().to_str().expect("utf-8 path")],
    );
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
