//! Request heads: `parse_head` on arbitrary bytes, then `respond` with a small asset table.
//!
//! Checked: nothing panics; a complete head is found again when the buffer is cut right after it
//! (the server re-parses after every read, so the answer must not depend on what follows);
//! `TooLarge` only past the size or field-count limit; every response head is well-formed
//! HTTP/1.1 that ends at its blank line, carries the security headers and a truthful
//! `Content-Length`; and a 200 only ever serves a body from the table.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secchat::assets::Assets;
use secchat::http::{self, Head, MAX_HEAD_BYTES, MAX_HEADERS, parse_head, respond};

const INDEX: &[u8] = b"<!doctype html><title>SecChat</title>";
const APP: &[u8] = b"export const x = 1;\n";
const SPACED: &[u8] = b"spaced";
const UNICODE: &[u8] = b"unicode";

const TABLE: &[(&str, &[u8])] = &[
    ("/index.html", INDEX),
    ("/js/app.mjs", APP),
    ("/a b/c.js", SPACED),
    ("/caf\u{e9}.txt", UNICODE),
];

fuzz_target!(|data: &[u8]| {
    let tls = data.first().is_some_and(|byte| byte & 1 == 1);
    match parse_head(data) {
        Head::Complete(request) => check_complete(data, &request, tls),
        Head::TooLarge => {
            // httparse also ends lines at a bare LF, so LFs bound the number of fields.
            let lines = data.iter().filter(|&&byte| byte == b'\n').count();
            assert!(
                data.len() >= MAX_HEAD_BYTES || lines > MAX_HEADERS,
                "TooLarge for {} bytes with {lines} lines",
                data.len()
            );
        }
        Head::Partial => assert!(data.len() < MAX_HEAD_BYTES, "Partial at the size limit"),
        Head::Bad => {}
    }
});

fn check_complete(data: &[u8], request: &http::Request, tls: bool) {
    assert!(request.head_len > 0 && request.head_len <= data.len());
    assert!(request.head_len <= MAX_HEAD_BYTES);
    let cut = data.get(..request.head_len).unwrap_or_default();
    match parse_head(cut) {
        Head::Complete(again) => assert_eq!(&again, request, "cutting after the head changed it"),
        other => panic!("the head alone parses as {other:?}"),
    }
    let assets = Assets::from_static(TABLE);
    let response = respond(request, &assets, tls);
    check_response(&response, request, tls);
    let _ = http::origin_allowed(
        request.origin.as_deref(),
        request.host.as_deref(),
        &[
            "https://chat.example".to_owned(),
            "http://[::1]:8080".to_owned(),
        ],
    );
    if let Some(origin) = request.origin.as_deref() {
        let _ = http::is_valid_origin(origin);
    }
}

fn check_response(response: &http::Response, request: &http::Request, tls: bool) {
    let mut storage = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut storage);
    let status = parsed.parse(&response.head).expect("response head parses");
    assert_eq!(
        status,
        httparse::Status::Complete(response.head.len()),
        "the head ends exactly at its blank line"
    );
    let code = parsed.code.unwrap_or(0);
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    assert_eq!(
        header("Content-Security-Policy"),
        Some(http::CONTENT_SECURITY_POLICY)
    );
    assert_eq!(header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(header("Referrer-Policy"), Some("no-referrer"));
    assert_eq!(header("Strict-Transport-Security").is_some(), tls);
    let length: usize = header("Content-Length")
        .and_then(|v| v.parse().ok())
        .expect("numeric Content-Length");
    if request.method == "HEAD" {
        assert!(response.body.is_empty(), "HEAD got a body");
    } else if code != 304 {
        assert_eq!(length, response.body.len(), "Content-Length lies");
    }
    if code == 200 && request.path() != "/healthz" {
        let served = TABLE.iter().any(|(_, body)| {
            *body == response.body || (request.method == "HEAD" && body.len() == length)
        });
        assert!(served, "200 with a body that is not in the table");
    }
    if code >= 400 {
        assert!(!response.keep_alive, "an error keeps the connection");
    }
}
