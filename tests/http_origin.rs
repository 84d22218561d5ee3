//! PROTOCOL.md §1 Origin check at the WebSocket upgrade.

mod common;

use common::*;
use serde_json::json;

fn upgrade_status(server: &Server, host: &str, origin: Option<&str>) -> HttpResponse {
    http_raw(
        &server.addr(),
        upgrade_request(host, origin).as_bytes(),
        true,
    )
}

fn assert_forbidden(server: &Server, host: &str, origin: &str) {
    let response = upgrade_status(server, host, Some(origin));
    assert_eq!(response.status, 403, "Host {host}, Origin {origin}");
    response.assert_security_headers();
}

fn assert_allowed(server: &Server, host: &str, origin: Option<&str>) {
    let response = upgrade_status(server, host, origin);
    assert_eq!(response.status, 101, "Host {host}, Origin {origin:?}");
}

#[test]
fn foreign_origin_is_403_at_the_upgrade() {
    let server = Server::start(&[]);
    let host = server.addr();
    let port = server.port;
    assert_forbidden(&server, &host, "http://evil.example");
    assert_forbidden(&server, &host, &format!("http://evil.example:{port}"));
    assert_forbidden(&server, &host, &format!("http://127.0.0.2:{port}"));
    assert_forbidden(
        &server,
        &host,
        &format!("http://127.0.0.1:{}", port.wrapping_add(1)),
    );
    assert_forbidden(&server, &host, "http://127.0.0.1");
    assert_forbidden(&server, &host, "null");
    // A suffix or prefix of the host is not the host.
    assert_forbidden(&server, &host, &format!("http://x127.0.0.1:{port}"));
    assert_forbidden(&server, "localhost:80", "https://localhost");
    assert_forbidden(&server, "localhost:443", "http://localhost");
}

#[test]
fn same_origin_is_allowed_whatever_the_scheme() {
    // chat.example is a name the server answers to (the Host check, tests/http_host.rs).
    let server = Server::start(&["--public-host", "chat.example"]);
    let host = server.addr();
    let port = server.port;
    assert_allowed(&server, &host, Some(&format!("http://127.0.0.1:{port}")));
    assert_allowed(&server, &host, Some(&format!("https://127.0.0.1:{port}")));
    // Behind a proxy the Host may be anything: default ports compare equal to absent ones.
    assert_allowed(&server, "localhost:80", Some("http://localhost"));
    assert_allowed(&server, "localhost:443", Some("https://localhost"));
    assert_allowed(
        &server,
        "chat.example:8443",
        Some("https://chat.example:8443"),
    );
    assert_allowed(&server, "localhost", Some("http://localhost"));
    assert_allowed(&server, "localhost:80", Some("http://localhost:80"));
}

#[test]
fn absent_origin_is_allowed() {
    let server = Server::start(&[]);
    assert_allowed(&server, &server.addr(), None);
}

#[test]
fn allow_origin_flag_allows_listed_origins_only() {
    let server = Server::start(&[
        "--allow-origin",
        "https://app.example",
        "--allow-origin",
        "http://other.example:8080",
    ]);
    let host = server.addr();
    assert_allowed(&server, &host, Some("https://app.example"));
    assert_allowed(&server, &host, Some("http://other.example:8080"));
    assert_forbidden(&server, &host, "https://evil.example");
    assert_forbidden(&server, &host, "http://other.example:8081");
}

#[test]
fn an_allowed_upgrade_is_a_working_websocket() {
    let server = Server::start(&[]);
    let host = server.addr();
    let origin = format!("http://{host}");
    let mut raw = RawClient::connect_with_request(&server, &upgrade_request(&host, Some(&origin)));
    raw.send_json(&json!({"type": "PING", "ref": "o"}));
    assert_eq!(raw.recv_json(), json!({"type": "PONG", "ref": "o"}));
}
