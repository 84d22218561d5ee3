//! PROTOCOL.md §7 static files: methods, /healthz, traversal, head limits, security headers.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

/// A `--public` folder with an index, a script, a subfolder, and a secret next to the folder.
struct PublicDir {
    root: PathBuf,
    public: PathBuf,
}

const INDEX_MARKER: &str = "index-from-public-dir-7f3a";
const SECRET: &str = "TOP-SECRET-OUTSIDE-PUBLIC-91c2";

impl PublicDir {
    fn new(name: &str) -> PublicDir {
        let root = std::env::temp_dir().join(format!(
            "secchat-itest-public-{}-{name}",
            std::process::id()
        ));
        let public = root.join("public");
        std::fs::create_dir_all(public.join("sub")).expect("mkdir");
        std::fs::write(
            public.join("index.html"),
            format!("<!doctype html><html><body>{INDEX_MARKER}</body></html>"),
        )
        .expect("write index");
        std::fs::write(public.join("app.js"), "export const x = 1;\n").expect("write js");
        std::fs::write(public.join("style.css"), "body { color: red }\n").expect("write css");
        std::fs::write(public.join("sub").join("hidden-name.txt"), "in sub\n").expect("write");
        std::fs::write(root.join("secret.txt"), SECRET).expect("write secret");
        PublicDir { root, public }
    }

    fn flag(&self) -> String {
        self.public.to_string_lossy().into_owned()
    }
}

impl Drop for PublicDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn root_serves_the_web_client_with_security_headers() {
    let server = Server::start(&[]);
    let response = http_get(&server, "/");
    assert_eq!(response.status, 200);
    let content_type = response.header("Content-Type").unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        response.body_text().to_lowercase().contains("<html"),
        "not HTML"
    );
    response.assert_security_headers();
    assert_eq!(
        response
            .header("Content-Length")
            .and_then(|v| v.parse::<usize>().ok()),
        Some(response.body.len())
    );
}

#[test]
fn head_has_the_headers_of_get_and_no_body() {
    let server = Server::start(&[]);
    let get = http_get(&server, "/");
    let addr = server.addr();
    let mut stream = connect_tcp(&addr).expect("connect");
    stream
        .write_all(
            format!("HEAD / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("send");
    let head = read_http_response(&mut stream, true).expect("response");
    assert_eq!(head.status, 200);
    head.assert_security_headers();
    assert_eq!(head.header("Content-Length"), get.header("Content-Length"));
    assert_eq!(head.header("Content-Type"), get.header("Content-Type"));
    assert!(head.body.is_empty(), "HEAD sent a body");
    // And nothing follows the head.
    let mut rest = Vec::new();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "HEAD sent a body: {} bytes", rest.len());
}

#[test]
fn other_methods_are_405_with_allow() {
    let server = Server::start(&[]);
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let addr = server.addr();
        let request = format!(
            "{method} / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let response = http_raw(&addr, request.as_bytes(), false);
        assert_eq!(response.status, 405, "{method}");
        let allow: Vec<String> = response
            .header("Allow")
            .unwrap_or_default()
            .split(',')
            .map(|m| m.trim().to_ascii_uppercase())
            .collect();
        assert_eq!(allow, ["GET", "HEAD"], "{method}: Allow");
        response.assert_security_headers();
    }
}

#[test]
fn healthz_is_exactly_ok() {
    let server = Server::start(&[]);
    let response = http_get(&server, "/healthz");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"ok");
    assert!(
        response
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        response.header("Content-Type")
    );
    response.assert_security_headers();
}

#[test]
fn missing_file_is_404_with_security_headers() {
    let server = Server::start(&[]);
    let response = http_get(&server, "/no-such-file.html");
    assert_eq!(response.status, 404);
    response.assert_security_headers();
}

#[test]
fn built_in_assets_have_their_content_types() {
    let server = Server::start(&[]);
    let js = http_get(&server, "/js/ids.js");
    assert_eq!(js.status, 200);
    let js_type = js.header("Content-Type").unwrap_or_default();
    assert!(js_type.contains("javascript"), "{js_type}");
    js.assert_security_headers();
    let module = http_get(&server, "/vendor/openpgp.min.mjs");
    assert_eq!(module.status, 200);
    let module_type = module.header("Content-Type").unwrap_or_default();
    assert!(module_type.contains("javascript"), "{module_type}");
    let font = http_get(&server, "/vendor/jetbrains-mono-latin-400-normal.woff2");
    assert_eq!(font.status, 200);
    assert_eq!(font.header("Content-Type"), Some("font/woff2"));
    assert_eq!(
        font.body,
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/public/vendor/jetbrains-mono-latin-400-normal.woff2"
        ))
        .expect("font file"),
        "served bytes differ from the file"
    );
}

#[test]
fn public_dir_is_served_with_content_types_and_no_listing() {
    let dir = PublicDir::new("serve");
    let server = Server::start(&["--public", &dir.flag()]);
    let index = http_get(&server, "/");
    assert_eq!(index.status, 200);
    assert!(index.body_text().contains(INDEX_MARKER));
    let index2 = http_get(&server, "/index.html");
    assert_eq!(index2.status, 200);
    assert_eq!(index2.body, index.body);
    let js = http_get(&server, "/app.js");
    assert_eq!(js.status, 200);
    assert!(
        js.header("Content-Type")
            .unwrap_or_default()
            .contains("javascript")
    );
    assert_eq!(js.body, b"export const x = 1;\n");
    let css = http_get(&server, "/style.css");
    assert!(
        css.header("Content-Type")
            .unwrap_or_default()
            .starts_with("text/css")
    );
    for path in ["/sub", "/sub/"] {
        let listing = http_get(&server, path);
        assert_ne!(listing.status, 200, "{path} served a listing");
        assert!(
            !listing.body_text().contains("hidden-name"),
            "{path} lists files"
        );
        listing.assert_security_headers();
    }
}

fn assert_no_traversal(server: &Server, secrets: &[&str]) {
    let addr = server.addr();
    let targets = [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2E%2E/Cargo.toml",
        "/..%2fCargo.toml",
        "/..%2FCargo.toml",
        "/%2e%2e%2fCargo.toml",
        "/js/../../Cargo.toml",
        "/js/%2e%2e/%2e%2e/Cargo.toml",
        "/..\\Cargo.toml",
        "/..%5cCargo.toml",
        "/%00",
        "/index.html%00.js",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/sub/../../secret.txt",
        "/.%2e/secret.txt",
        "/%252e%252e/secret.txt",
        "//etc/passwd",
        "/../../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "../secret.txt",
        "/....//secret.txt",
    ];
    for target in targets {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let response = try_http_raw(&addr, request.as_bytes(), false)
            .unwrap_or_else(|e| panic!("{target}: no 400/404 response: {e}"));
        assert!(
            response.status == 400 || response.status == 404,
            "{target}: status {}",
            response.status
        );
        let body = response.body_text();
        for secret in secrets {
            assert!(!body.contains(secret), "{target} leaked {secret}");
        }
        assert!(!body.contains("root:"), "{target} leaked /etc/passwd");
        response.assert_security_headers();
    }
}

#[test]
fn traversal_never_leaves_the_built_in_assets() {
    let server = Server::start(&[]);
    assert_no_traversal(&server, &["[package]", "edition = "]);
}

#[test]
fn traversal_never_leaves_the_public_dir() {
    let dir = PublicDir::new("traversal");
    let server = Server::start(&["--public", &dir.flag()]);
    assert_no_traversal(&server, &[SECRET]);
}

#[test]
fn head_over_16_kib_is_431() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let mut stream = connect_tcp(&addr).expect("connect");
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request.as_bytes());
    let response = read_http_response(&mut stream, false).expect("a 431 response");
    assert_eq!(response.status, 431);
    response.assert_security_headers();
}

#[test]
fn head_under_16_kib_is_served() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(15 * 1024)
    );
    let response = http_raw(&addr, request.as_bytes(), false);
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"ok");
}

#[test]
fn head_split_over_many_writes_is_assembled() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut stream = connect_tcp(&addr).expect("connect");
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    for byte in request.as_bytes() {
        stream.write_all(&[*byte]).expect("write");
        std::thread::sleep(Duration::from_millis(2));
    }
    let response = read_http_response(&mut stream, false).expect("response");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"ok");
}

#[test]
fn slowloris_is_cut_off_with_408_while_others_are_served() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut slow = connect_tcp(&addr).expect("connect");
    let started = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\n").expect("write");
    let mut writer = slow.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        // One header byte every 300 ms, never finishing the head; stop when the server hangs up.
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(300));
            if writer.write_all(b"X").is_err() {
                return;
            }
        }
    });
    // Meanwhile other clients are served at once.
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        let response = http_get(&server, "/healthz");
        assert_eq!(response.status, 200);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        worst < Duration::from_millis(500),
        "others waited {worst:?}"
    );
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let response = read_http_response(&mut slow, false).expect("a 408 response");
    let elapsed = started.elapsed();
    assert_eq!(response.status, 408);
    response.assert_security_headers();
    assert!(
        elapsed >= Duration::from_millis(9500) && elapsed <= Duration::from_secs(13),
        "cut off after {elapsed:?}"
    );
    let _ = trickle.join();
}

#[test]
fn ws_path_without_upgrade_is_a_client_error() {
    let server = Server::start(&[]);
    let response = http_get(&server, "/ws");
    assert!(
        (400..500).contains(&response.status),
        "status {}",
        response.status
    );
    response.assert_security_headers();
}

#[test]
fn garbage_request_line_is_400() {
    let server = Server::start(&[]);
    let addr = server.addr();
    if let Ok(response) = try_http_raw(&addr, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n", false) {
        assert_eq!(response.status, 400);
        response.assert_security_headers();
    }
    // Whatever happened, the server still serves.
    assert_eq!(http_get(&server, "/healthz").status, 200);
}

#[test]
fn request_target_over_16_kib_is_431() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let request = format!(
        "GET /{} HTTP/1.1\r\nHost: {addr}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let mut stream = connect_tcp(&addr).expect("connect");
    let _ = stream.write_all(request.as_bytes());
    let response = read_http_response(&mut stream, false).expect("a 431 response");
    assert_eq!(response.status, 431);
}

#[test]
fn query_strings_are_ignored() {
    let server = Server::start(&[]);
    let plain = http_get(&server, "/");
    let with_query = http_get(&server, "/?v=2");
    assert_eq!(with_query.status, 200);
    assert_eq!(with_query.body, plain.body);
    let health = http_get(&server, "/healthz?probe=1");
    assert_eq!(health.status, 200);
    assert_eq!(health.body, b"ok");
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut stream = connect_tcp(&addr).expect("connect");
    let mut buf = Vec::new();
    let one = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(one.as_bytes()).expect("send");
    let first = read_response_from(&mut stream, &mut buf, false).expect("first");
    assert_eq!((first.status, first.body.as_slice()), (200, &b"ok"[..]));
    // Two more in one write.
    let two = format!(
        "GET /js/ids.js HTTP/1.1\r\nHost: {addr}\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    );
    stream.write_all(two.as_bytes()).expect("send");
    let second = read_response_from(&mut stream, &mut buf, false).expect("second");
    assert_eq!(second.status, 200);
    assert!(
        second
            .header("Content-Type")
            .unwrap_or_default()
            .contains("javascript")
    );
    let third = read_response_from(&mut stream, &mut buf, true).expect("third");
    assert_eq!(third.status, 200);
    assert_eq!(third.header("Content-Length"), Some("2"));
}
