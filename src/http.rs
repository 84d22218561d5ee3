//! HTTP/1.1 for the web client: request heads, static responses, security headers, the Origin
//! and Host checks for `/ws` (docs/PROTOCOL.md §1 and §7), and who a request forwarded by a
//! trusted proxy comes from.
//!
//! Everything here is pure: bytes or a parsed request in, bytes out. The connection state
//! machine owns the socket, the timers (408) and what happens after the WebSocket upgrade.

mod forwarded;
mod head;
mod host;
mod origin;
mod path;
mod response;
mod upgrade;

pub use forwarded::{Cidr, TrustedProxies};
pub use head::{Head, MAX_HEAD_BYTES, MAX_HEADERS, Request, parse_head, requested_host};
pub use host::{ANY_HOST, HostRule, host_name};
pub use origin::{is_valid_origin, origin_allowed};
pub use path::{PathError, resolve_path};
pub use response::{
    CONTENT_SECURITY_POLICY, Response, SECURITY_HEADERS, error_response, generated_response,
    https_required, respond,
};
pub use upgrade::{Refusal, WEBSOCKET_VERSION, switching_protocols};

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::assets::Assets;
    use proptest::prelude::*;

    fn assets() -> Assets {
        Assets::from_static(&[("/index.html", b"<p>hi</p>"), ("/a b/c.js", b"x")])
    }

    /// Runs the whole request path on `buf`; it must never panic and whatever it answers
    /// must carry the security headers.
    fn exercise(buf: &[u8]) {
        if let Head::Complete(request) = parse_head(buf) {
            assert!(request.head_len <= buf.len());
            let response = respond(&request, &assets(), false);
            let head = String::from_utf8_lossy(&response.head);
            assert!(head.contains("\r\nContent-Security-Policy: "));
            assert!(head.ends_with("\r\n\r\n"));
            let _ = origin_allowed(
                request.origin.as_deref(),
                request.host.as_deref(),
                &["https://x.example".to_owned()],
            );
            let _ = HostRule::names(["x.example", "*.y.example"]).allows(request.host.as_deref());
            let peer = std::net::IpAddr::from([127, 0, 0, 1]);
            let _ = proxies().client(peer, request.forwarded_for.as_deref());
        }
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(
            ["127.0.0.1", "10.0.0.0/8", "::1"]
                .iter()
                .filter_map(|block| Cidr::parse(block))
                .collect(),
        )
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            exercise(&buf);
        }

        #[test]
        fn arbitrary_targets_never_panic(
            method in "(GET|HEAD|POST)",
            target in "[/%.a-zA-Z0-9\\\\?#:@]{0,40}",
            origin in proptest::option::of("[a-z:/\\[\\]0-9.]{0,30}"),
            host in proptest::option::of("[a-z:\\[\\]0-9.]{0,20}"),
        ) {
            let mut raw = format!("{method} {target} HTTP/1.1\r\n");
            if let Some(origin) = &origin {
                raw.push_str(&format!("Origin: {origin}\r\n"));
            }
            if let Some(host) = &host {
                raw.push_str(&format!("Host: {host}\r\n"));
            }
            raw.push_str("\r\n");
            exercise(raw.as_bytes());
            let _ = resolve_path(&target);
        }

        #[test]
        fn resolved_keys_never_climb(target in "[/%.a-zA-Z0-9\\\\]{0,40}") {
            if let Ok(key) = resolve_path(&target) {
                prop_assert!(key.starts_with('/'));
                prop_assert!(!key.split('/').skip(1).any(|s| s.is_empty() || s == "." || s == ".."));
                prop_assert!(!key.contains('\\') && !key.contains('\0'));
            }
        }
    }
}
