//! Building responses: static files, `/healthz`, errors, and the headers every one carries.

use std::fmt::Write as _;

use super::head::Request;
use super::path::{PathError, resolve_path};
use crate::assets::{Asset, Assets};

/// Same-origin scripts, styles, images, fonts, workers, manifest and WebSocket; nothing inline,
/// no eval, no framing, no plugins, no forms.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
    worker-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'; object-src 'none'";

/// Headers sent on every response, errors included (`Strict-Transport-Security` too over TLS).
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    (
        "Permissions-Policy",
        "camera=(), microphone=(), geolocation=()",
    ),
];

const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";
const HEALTHZ_BODY: &[u8] = b"ok";

/// A complete response: write `head`, then `body`. After that, close the connection unless
/// `keep_alive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub head: Vec<u8>,
    pub body: &'static [u8],
    pub keep_alive: bool,
}

/// Answers every request except a real `/ws` upgrade (the caller handles that one itself).
/// A `HEAD` request gets the same head and an empty body.
pub fn respond(req: &Request, assets: &Assets, tls: bool) -> Response {
    let mut response = route(req, assets, tls);
    if req.method == "HEAD" {
        response.body = &[];
    }
    response
}

fn route(req: &Request, assets: &Assets, tls: bool) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return error_response(405, tls);
    }
    match req.path() {
        "/healthz" => healthz(req.keep_alive, tls),
        "/ws" => error_response(426, tls),
        path => match resolve_path(path) {
            Err(PathError::Bad) => error_response(400, tls),
            Err(PathError::Directory) => error_response(404, tls),
            Ok(key) => match assets.get(&key) {
                None => error_response(404, tls),
                Some(asset) => file(asset, req, tls),
            },
        },
    }
}

/// A tiny `text/plain` error; the connection is closed after it. The body is sent even for
/// `HEAD` here; [`respond`] strips it for its own errors.
pub fn error_response(status: u16, tls: bool) -> Response {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    let reason = reason_phrase(status);
    let body = error_body(status);
    let mut head = HeadBuilder::new(status, reason);
    head.header("Content-Type", "text/plain; charset=utf-8");
    head.header("Content-Length", body.len());
    head.header("Cache-Control", "no-store");
    if status == 405 {
        head.header("Allow", "GET, HEAD");
    }
    if status == 426 {
        head.header("Upgrade", "websocket");
        // The versions we speak, for a client that offered another (RFC 6455 §4.4).
        head.header("Sec-WebSocket-Version", super::upgrade::WEBSOCKET_VERSION);
        // A sender of Upgrade must list it in Connection (RFC 9110 §7.8).
        head.header("Connection", "upgrade, close");
    } else {
        head.header("Connection", "close");
    }
    head.finish(body, false, tls)
}

/// A `200` with a body made at request time (the metrics page): the body is appended to `head`
/// and the connection closes after it.
pub fn generated_response(content_type: &str, body: &str, tls: bool) -> Response {
    generated(200, content_type, body, tls)
}

/// The `400 Bad Request` for plain HTTP sent to the TLS port: its body names the `https://` URL
/// of `host` (from [`requested_host`](super::requested_host)), it is appended to `head`, and the
/// connection closes after it. It travels in plain text, so it carries no
/// `Strict-Transport-Security` (RFC 6797 §7.2).
pub fn https_required(host: Option<&str>) -> Response {
    let body = match host {
        Some(host) => format!("This port speaks HTTPS: use https://{host}/\n"),
        None => "This port speaks HTTPS: use https://HOST/ (this server's name or address)\n"
            .to_string(),
    };
    generated(400, "text/plain; charset=utf-8", &body, false)
}

/// A response whose body is made at request time, appended to `head`; the connection closes
/// after it.
fn generated(status: u16, content_type: &str, body: &str, tls: bool) -> Response {
    let mut head = HeadBuilder::new(status, reason_phrase(status));
    head.header("Content-Type", content_type);
    head.header("Content-Length", body.len());
    head.header("Cache-Control", "no-store");
    head.header("Connection", "close");
    let mut response = head.finish(&[], false, tls);
    response.head.extend_from_slice(body.as_bytes());
    response
}

fn healthz(keep_alive: bool, tls: bool) -> Response {
    let mut head = HeadBuilder::new(200, "OK");
    head.header("Content-Type", "text/plain");
    head.header("Content-Length", HEALTHZ_BODY.len());
    head.header("Cache-Control", "no-store");
    head.connection(keep_alive);
    head.finish(HEALTHZ_BODY, keep_alive, tls)
}

fn file(asset: &Asset, req: &Request, tls: bool) -> Response {
    let not_modified = req
        .if_none_match
        .as_deref()
        .is_some_and(|condition| etag_matches(condition, &asset.etag));
    let (status, reason) = if not_modified {
        (304, "Not Modified")
    } else {
        (200, "OK")
    };
    let mut head = HeadBuilder::new(status, reason);
    if !not_modified {
        head.header("Content-Type", asset.content_type);
    }
    // On a 304 this is the length a 200 would have, which RFC 9110 §8.6 allows.
    head.header("Content-Length", asset.body.len());
    head.header("ETag", &asset.etag);
    head.header("Cache-Control", "no-cache");
    head.connection(req.keep_alive);
    let body = if not_modified { &[][..] } else { asset.body };
    head.finish(body, req.keep_alive, tls)
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `W/` is ignored.
fn etag_matches(condition: &str, etag: &str) -> bool {
    condition.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn error_body(status: u16) -> &'static [u8] {
    match status {
        400 => b"400 Bad Request\n",
        403 => b"403 Forbidden\n",
        404 => b"404 Not Found\n",
        405 => b"405 Method Not Allowed\n",
        408 => b"408 Request Timeout\n",
        413 => b"413 Content Too Large\n",
        421 => b"421 Misdirected Request: this server does not answer to that host name\n",
        426 => b"426 Upgrade Required: use a WebSocket client\n",
        429 => b"429 Too Many Requests\n",
        431 => b"431 Request Header Fields Too Large\n",
        500 => b"500 Internal Server Error\n",
        501 => b"501 Not Implemented\n",
        503 => b"503 Service Unavailable\n",
        _ => b"Error\n",
    }
}

struct HeadBuilder {
    head: String,
}

impl HeadBuilder {
    fn new(status: u16, reason: &str) -> HeadBuilder {
        let mut head = String::with_capacity(1024);
        let _ = write!(head, "HTTP/1.1 {status} {reason}\r\nServer: secchat\r\n");
        HeadBuilder { head }
    }

    fn header(&mut self, name: &str, value: impl std::fmt::Display) {
        // Writing to a String cannot fail.
        let _ = write!(self.head, "{name}: {value}\r\n");
    }

    fn connection(&mut self, keep_alive: bool) {
        self.header(
            "Connection",
            if keep_alive { "keep-alive" } else { "close" },
        );
    }

    fn finish(mut self, body: &'static [u8], keep_alive: bool, tls: bool) -> Response {
        for (name, value) in SECURITY_HEADERS {
            self.header(name, value);
        }
        if tls {
            self.header("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY);
        }
        self.head.push_str("\r\n");
        Response {
            head: self.head.into_bytes(),
            body,
            keep_alive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Head, parse_head};

    const INDEX: &[u8] = b"<!doctype html><title>SecChat</title>";
    const APP: &[u8] = b"export const x = 1;\n";

    fn assets() -> Assets {
        Assets::from_static(&[
            ("/index.html", INDEX),
            ("/js/app.mjs", APP),
            ("/logo.png", b"\x89PNG"),
        ])
    }

    fn request(method: &str, target: &str, extra_headers: &str) -> Request {
        let raw =
            format!("{method} {target} HTTP/1.1\r\nHost: chat.example\r\n{extra_headers}\r\n");
        match parse_head(raw.as_bytes()) {
            Head::Complete(request) => request,
            other => panic!("{raw:?} did not parse: {other:?}"),
        }
    }

    /// The response head parsed back: it must be well-formed HTTP/1.1.
    struct Parsed {
        status: u16,
        headers: Vec<(String, String)>,
    }

    impl Parsed {
        fn of(response: &Response) -> Parsed {
            let mut storage = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut storage);
            let status = parsed.parse(&response.head).expect("response head parses");
            assert_eq!(
                status,
                httparse::Status::Complete(response.head.len()),
                "head ends exactly at the blank line"
            );
            assert_eq!(parsed.version, Some(1));
            let headers = parsed
                .headers
                .iter()
                .map(|h| {
                    let value = std::str::from_utf8(h.value).expect("ASCII value");
                    (h.name.to_ascii_lowercase(), value.to_owned())
                })
                .collect();
            Parsed {
                status: parsed.code.expect("status code"),
                headers,
            }
        }

        /// A response whose body was made at request time and appended to its head.
        fn of_generated(response: &Response) -> (Parsed, String) {
            assert!(response.body.is_empty(), "the body is part of the head");
            let blank_line = response.head.windows(4).position(|w| w == b"\r\n\r\n");
            let (head, body) = response
                .head
                .split_at(blank_line.expect("a blank line") + 4);
            let head_only = Response {
                head: head.to_vec(),
                body: &[],
                keep_alive: response.keep_alive,
            };
            let body = String::from_utf8(body.to_vec()).expect("UTF-8 body");
            (Parsed::of(&head_only), body)
        }

        fn get(&self, name: &str) -> Option<&str> {
            let mut values = self.headers.iter().filter(|(n, _)| n == name);
            let first = values.next().map(|(_, v)| v.as_str());
            assert!(values.next().is_none(), "{name} appears twice");
            first
        }

        fn assert_security_headers(&self, tls: bool) {
            let csp = self.get("content-security-policy").expect("CSP");
            assert_eq!(csp, CONTENT_SECURITY_POLICY);
            assert!(csp.contains("frame-ancestors 'none'"));
            assert!(!csp.contains("unsafe-"));
            assert!(!csp.contains("http"), "no third-party origin in {csp}");
            assert_eq!(self.get("x-content-type-options"), Some("nosniff"));
            assert_eq!(self.get("referrer-policy"), Some("no-referrer"));
            assert_eq!(self.get("x-frame-options"), Some("DENY"));
            assert_eq!(self.get("cross-origin-opener-policy"), Some("same-origin"));
            assert_eq!(
                self.get("cross-origin-resource-policy"),
                Some("same-origin")
            );
            assert_eq!(
                self.get("permissions-policy"),
                Some("camera=(), microphone=(), geolocation=()")
            );
            assert_eq!(self.get("server"), Some("secchat"));
            let hsts = self.get("strict-transport-security");
            assert_eq!(hsts, tls.then_some("max-age=31536000"));
        }

        fn content_length(&self) -> usize {
            self.get("content-length")
                .expect("Content-Length")
                .parse()
                .expect("numeric Content-Length")
        }
    }

    #[test]
    fn every_error_status_closes_and_carries_security_headers() {
        for status in [400, 403, 404, 405, 408, 421, 426, 429, 431, 500, 503] {
            for tls in [false, true] {
                let response = error_response(status, tls);
                let parsed = Parsed::of(&response);
                assert_eq!(parsed.status, status);
                assert!(!response.keep_alive);
                assert!(!response.body.is_empty());
                assert_eq!(parsed.content_length(), response.body.len());
                assert_eq!(
                    parsed.get("content-type"),
                    Some("text/plain; charset=utf-8")
                );
                let connection = parsed.get("connection").expect("Connection");
                assert!(connection.split(", ").any(|t| t == "close"), "{connection}");
                parsed.assert_security_headers(tls);
                assert_eq!(parsed.get("allow"), (status == 405).then_some("GET, HEAD"));
                assert_eq!(
                    parsed.get("upgrade"),
                    (status == 426).then_some("websocket")
                );
            }
        }
    }

    #[test]
    fn out_of_range_status_becomes_500() {
        assert_eq!(Parsed::of(&error_response(42, false)).status, 500);
        assert_eq!(Parsed::of(&error_response(1000, false)).status, 500);
    }

    #[test]
    fn serves_index_for_root() {
        let assets = assets();
        for tls in [false, true] {
            let response = respond(&request("GET", "/", ""), &assets, tls);
            let parsed = Parsed::of(&response);
            assert_eq!(parsed.status, 200);
            assert_eq!(response.body, INDEX);
            assert!(response.keep_alive);
            assert_eq!(parsed.get("connection"), Some("keep-alive"));
            assert_eq!(parsed.content_length(), INDEX.len());
            assert_eq!(parsed.get("content-type"), Some("text/html; charset=utf-8"));
            assert_eq!(parsed.get("cache-control"), Some("no-cache"));
            assert_eq!(
                parsed.get("etag"),
                assets.get("/index.html").map(|a| a.etag.as_str())
            );
            parsed.assert_security_headers(tls);
        }
    }

    #[test]
    fn content_type_follows_extension() {
        let assets = assets();
        for (target, expected) in [
            ("/js/app.mjs", "text/javascript; charset=utf-8"),
            ("/logo.png", "image/png"),
            ("/index.html?v=2", "text/html; charset=utf-8"),
        ] {
            let parsed = Parsed::of(&respond(&request("GET", target, ""), &assets, false));
            assert_eq!(parsed.status, 200, "{target}");
            assert_eq!(parsed.get("content-type"), Some(expected), "{target}");
        }
    }

    #[test]
    fn head_has_full_length_and_no_body() {
        let assets = assets();
        let get = respond(&request("GET", "/js/app.mjs", ""), &assets, false);
        let head = respond(&request("HEAD", "/js/app.mjs", ""), &assets, false);
        assert_eq!(head.head, get.head);
        assert!(head.body.is_empty());
        assert_eq!(Parsed::of(&head).content_length(), APP.len());

        let missing = respond(&request("HEAD", "/nope", ""), &assets, false);
        assert_eq!(Parsed::of(&missing).status, 404);
        assert!(missing.body.is_empty());
    }

    #[test]
    fn if_none_match_gives_304() {
        let assets = assets();
        let etag = assets
            .get("/js/app.mjs")
            .map(|a| a.etag.clone())
            .unwrap_or_default();
        for condition in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
            "*".to_owned(),
        ] {
            let req = request(
                "GET",
                "/js/app.mjs",
                &format!("If-None-Match: {condition}\r\n"),
            );
            let response = respond(&req, &assets, true);
            let parsed = Parsed::of(&response);
            assert_eq!(parsed.status, 304, "{condition}");
            assert!(response.body.is_empty());
            assert!(response.keep_alive);
            assert_eq!(parsed.get("etag"), Some(etag.as_str()));
            assert_eq!(parsed.content_length(), APP.len());
            parsed.assert_security_headers(true);
        }
        let stale = request("GET", "/js/app.mjs", "If-None-Match: \"stale\"\r\n");
        let response = respond(&stale, &assets, false);
        assert_eq!(Parsed::of(&response).status, 200);
        assert_eq!(response.body, APP);
    }

    #[test]
    fn healthz_is_exactly_ok() {
        let response = respond(&request("GET", "/healthz", ""), &assets(), false);
        let parsed = Parsed::of(&response);
        assert_eq!(parsed.status, 200);
        assert_eq!(response.body, b"ok");
        assert_eq!(parsed.content_length(), 2);
        assert_eq!(parsed.get("content-type"), Some("text/plain"));
        assert!(response.keep_alive);
        parsed.assert_security_headers(false);
        // Works with an empty asset table too.
        let empty = respond(&request("HEAD", "/healthz", ""), &Assets::default(), false);
        assert_eq!(Parsed::of(&empty).status, 200);
        assert!(empty.body.is_empty());
    }

    #[test]
    fn status_table() {
        let assets = assets();
        let table = [
            ("GET", "/", "", 200),
            ("POST", "/", "", 405),
            ("PUT", "/index.html", "", 405),
            ("OPTIONS", "*", "", 405),
            ("get", "/", "", 405),
            ("POST", "/healthz", "", 405),
            ("GET", "/ws", "", 426),
            ("GET", "/ws", "Connection: Upgrade\r\n", 426),
            ("GET", "/missing.js", "", 404),
            ("GET", "/js/", "", 404),
            ("GET", "/js", "", 404),
            ("GET", "/.env", "", 404),
            ("GET", "/../etc/passwd", "", 400),
            ("GET", "/%2e%2e/x", "", 400),
            ("GET", "/%2E%2E%2Fx", "", 400),
            ("GET", "/a/..%2f..", "", 400),
            ("GET", "/%00", "", 400),
            ("GET", "/a\\b", "", 400),
            ("GET", "//etc/passwd", "", 400),
            ("GET", "/index.html%00.js", "", 400),
            ("GET", "/%zz", "", 400),
            ("GET", "/%ff", "", 400),
            ("GET", "http://evil/x", "", 400),
            ("GET", "http://chat.example/index.html", "", 400),
        ];
        for (method, target, extra, expected) in table {
            let response = respond(&request(method, target, extra), &assets, false);
            let parsed = Parsed::of(&response);
            assert_eq!(parsed.status, expected, "{method} {target}");
            parsed.assert_security_headers(false);
            assert_eq!(response.keep_alive, expected == 200, "{method} {target}");
        }
    }

    #[test]
    fn connection_close_is_honoured() {
        let req = request("GET", "/", "Connection: close\r\n");
        let response = respond(&req, &assets(), false);
        assert!(!response.keep_alive);
        assert_eq!(Parsed::of(&response).get("connection"), Some("close"));
    }

    #[test]
    fn https_required_is_a_complete_400_with_the_https_url_and_every_security_header() {
        let response = https_required(Some("chat.example:8443"));
        let (parsed, body) = Parsed::of_generated(&response);
        assert_eq!(parsed.status, 400);
        assert_eq!(
            body,
            "This port speaks HTTPS: use https://chat.example:8443/\n"
        );
        assert_eq!(parsed.content_length(), body.len());
        assert_eq!(
            parsed.get("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(parsed.get("connection"), Some("close"));
        assert!(!response.keep_alive);
        // Sent in plain text: no HSTS.
        parsed.assert_security_headers(false);
        let (unnamed, body) = Parsed::of_generated(&https_required(None));
        assert!(body.contains("use https://HOST/"), "{body}");
        unnamed.assert_security_headers(false);
    }
}
