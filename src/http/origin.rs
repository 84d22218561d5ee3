//! The Origin check for `/ws` (docs/PROTOCOL.md §1).

use std::net::Ipv6Addr;

#[derive(Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(&self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// `scheme://host[:port]` with the host lower-cased (IPv6 in canonical form) and the port made
/// explicit.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: Scheme,
    host: String,
    port: u16,
}

/// Whether a WebSocket upgrade carrying `origin` may proceed.
///
/// No `Origin` (not a browser): allowed. Otherwise allowed when its host and port equal those
/// of the `Host` header (scheme not compared, so TLS-terminating proxies work; a port missing
/// from `Host` is the default port of the Origin's scheme), or when it equals an entry of
/// `allowed` (scheme, host and port). `null`, non-http(s) or unparsable origins are refused.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Some(origin) = parse_origin(origin) else {
        return false;
    };
    let same_as_host = host
        .and_then(|host| parse_authority(host, origin.scheme.default_port()))
        .is_some_and(|(host, port)| host == origin.host && port == origin.port);
    same_as_host
        || allowed
            .iter()
            .any(|entry| parse_allow_entry(entry).as_ref() == Some(&origin))
}

/// Whether `origin` is something [`origin_allowed`] can match, for validating `--allow-origin`.
/// A single trailing `/` is tolerated there, as people copy origins from the address bar.
pub fn is_valid_origin(origin: &str) -> bool {
    parse_allow_entry(origin).is_some()
}

fn parse_allow_entry(entry: &str) -> Option<Origin> {
    let entry = entry.trim();
    parse_origin(entry.strip_suffix('/').unwrap_or(entry))
}

fn parse_origin(origin: &str) -> Option<Origin> {
    let (scheme, authority) = origin.split_once("://")?;
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else {
        return None;
    };
    let (host, port) = parse_authority(authority, scheme.default_port())?;
    Some(Origin { scheme, host, port })
}

/// `host[:port]` or `[ipv6][:port]` → (normalised host, port). No userinfo, path or spaces.
pub(super) fn parse_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (literal, after) = bracketed.split_once(']')?;
        let address: Ipv6Addr = literal.parse().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (format!("[{address}]"), port)
    } else {
        let (name, port) = match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        };
        if name.is_empty() || !name.bytes().all(is_host_byte) {
            return None;
        }
        (name.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => default_port,
        Some(digits) => parse_port(digits)?,
    };
    Some((host, port))
}

/// Letters, digits and `-._~` (RFC 3986 unreserved): DNS names, IPv4 and the occasional `_`.
fn is_host_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn parse_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (origin, host, allow-list, expected)
    type Case<'a> = (Option<&'a str>, Option<&'a str>, &'a [String], bool);

    #[test]
    fn origin_table() {
        let allow = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let none = allow(&[]);
        let partner = allow(&["https://App.Partner.example/", "http://[::1]:9000"]);
        let table: &[Case] = &[
            (None, None, &none, true),
            (None, Some("chat.example"), &none, true),
            (
                Some("http://chat.example"),
                Some("chat.example"),
                &none,
                true,
            ),
            (
                Some("HTTP://Chat.Example"),
                Some("chat.EXAMPLE"),
                &none,
                true,
            ),
            (
                Some("http://chat.example:8080"),
                Some("chat.example:8080"),
                &none,
                true,
            ),
            (
                Some("http://chat.example:8080"),
                Some("chat.example:8081"),
                &none,
                false,
            ),
            (
                Some("http://chat.example:8080"),
                Some("chat.example"),
                &none,
                false,
            ),
            (
                Some("http://chat.example"),
                Some("chat.example:80"),
                &none,
                true,
            ),
            (
                Some("https://chat.example"),
                Some("chat.example:443"),
                &none,
                true,
            ),
            (
                Some("https://chat.example"),
                Some("chat.example"),
                &none,
                true,
            ),
            (
                Some("https://chat.example:443"),
                Some("chat.example"),
                &none,
                true,
            ),
            (
                Some("https://chat.example"),
                Some("chat.example:80"),
                &none,
                false,
            ),
            // Scheme is not compared with Host: a TLS-terminating proxy forwarding to :443.
            (
                Some("http://chat.example:443"),
                Some("chat.example:443"),
                &none,
                true,
            ),
            (
                Some("http://evil.example"),
                Some("chat.example"),
                &none,
                false,
            ),
            (
                Some("http://chat.example.evil"),
                Some("chat.example"),
                &none,
                false,
            ),
            (
                Some("http://127.0.0.1:8080"),
                Some("127.0.0.1:8080"),
                &none,
                true,
            ),
            (
                Some("http://localhost:8080"),
                Some("127.0.0.1:8080"),
                &none,
                false,
            ),
            (Some("http://[::1]:8080"), Some("[::1]:8080"), &none, true),
            (
                Some("http://[0:0:0:0:0:0:0:1]:8080"),
                Some("[::1]:8080"),
                &none,
                true,
            ),
            (Some("http://[::1]"), Some("[::1]:80"), &none, true),
            (Some("http://[::1]:8080"), Some("[::2]:8080"), &none, false),
            (Some("http://[::1]:8080"), Some("::1:8080"), &none, false),
            (Some("null"), Some("chat.example"), &none, false),
            (Some(""), Some("chat.example"), &none, false),
            (Some("chat.example"), Some("chat.example"), &none, false),
            (
                Some("file://chat.example"),
                Some("chat.example"),
                &none,
                false,
            ),
            (
                Some("http://chat.example/"),
                Some("chat.example"),
                &none,
                false,
            ),
            (
                Some("http://user@chat.example"),
                Some("chat.example"),
                &none,
                false,
            ),
            (
                Some("http://chat.example:"),
                Some("chat.example"),
                &none,
                false,
            ),
            (
                Some("http://chat.example:99999"),
                Some("chat.example:99999"),
                &none,
                false,
            ),
            (
                Some("http://chat.example:+80"),
                Some("chat.example"),
                &none,
                false,
            ),
            (Some("http://[::1"), Some("[::1"), &none, false),
            (Some("http://chat.example"), None, &none, false),
            (Some("http://chat.example"), Some(""), &none, false),
            (
                Some("https://app.partner.example"),
                Some("chat.example"),
                &partner,
                true,
            ),
            (
                Some("https://app.partner.example:443"),
                None,
                &partner,
                true,
            ),
            (
                Some("http://app.partner.example"),
                Some("chat.example"),
                &partner,
                false,
            ),
            (
                Some("http://[::1]:9000"),
                Some("chat.example"),
                &partner,
                true,
            ),
            (
                Some("https://[::1]:9000"),
                Some("chat.example"),
                &partner,
                false,
            ),
            (Some("null"), Some("chat.example"), &allow(&["null"]), false),
        ];
        for (origin, host, allowed, expected) in table {
            assert_eq!(
                origin_allowed(*origin, *host, allowed),
                *expected,
                "origin {origin:?}, host {host:?}, allowed {allowed:?}"
            );
        }
    }

    #[test]
    fn validates_allow_list_entries() {
        assert!(is_valid_origin("https://app.example"));
        assert!(is_valid_origin("https://app.example/"));
        assert!(is_valid_origin("http://[::1]:8080"));
        assert!(!is_valid_origin("app.example"));
        assert!(!is_valid_origin("null"));
        assert!(!is_valid_origin("https://app.example/path"));
        assert!(!is_valid_origin("ftp://app.example"));
    }
}
