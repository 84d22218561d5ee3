//! Parsing a request head with `httparse`, and finding the `Host` in the start of one.

/// A request head longer than this is refused with 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// More header fields than this is refused with 431.
pub const MAX_HEADERS: usize = 64;

/// The outcome of parsing the bytes received so far.
// Returned by value and matched at once, never stored: boxing `Complete` would only add an
// allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Head {
    /// No complete head yet and still under [`MAX_HEAD_BYTES`]: read more.
    Partial,
    /// The head is longer than [`MAX_HEAD_BYTES`] or has more than [`MAX_HEADERS`] fields (431).
    TooLarge,
    /// Not HTTP/1.x, or a header we rely on is malformed or repeated (400).
    Bad,
    Complete(Request),
}

/// The parts of a request head that routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request-target as sent (origin-form `/path?query` for anything we serve).
    pub target: String,
    /// Bytes of the buffer taken by the head; anything after belongs to the caller.
    pub head_len: usize,
    pub host: Option<String>,
    pub origin: Option<String>,
    /// `Upgrade` lists `websocket` (case-insensitive).
    pub websocket_upgrade: bool,
    /// HTTP/1.1 or later (a WebSocket upgrade needs it, RFC 6455 §4.1).
    pub http_1_1: bool,
    /// `Connection` lists `upgrade` (case-insensitive).
    pub connection_upgrade: bool,
    pub websocket_key: Option<String>,
    pub websocket_version: Option<String>,
    /// Whether the connection may serve another request after this one: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`, and never when the
    /// request declares a body (we do not read bodies, so its bytes would be taken for the
    /// next request).
    pub keep_alive: bool,
    /// `If-None-Match` values, joined with `, ` when the field is repeated.
    pub if_none_match: Option<String>,
    /// `X-Forwarded-For` values in order, joined with `, ` when the field is repeated; bytes
    /// that are not UTF-8 become U+FFFD, which no address parses as. Believed only from a
    /// trusted proxy (`http::TrustedProxies::client`).
    pub forwarded_for: Option<String>,
}

impl Request {
    /// The request-target without query or fragment.
    pub fn path(&self) -> &str {
        let end = self.target.find(['?', '#']).unwrap_or(self.target.len());
        self.target.get(..end).unwrap_or("")
    }
}

/// Parses the head at the start of `buf`. Only the first [`MAX_HEAD_BYTES`] are looked at, so
/// the cost of re-parsing after every read stays bounded.
pub fn parse_head(buf: &[u8]) -> Head {
    let window = buf.get(..MAX_HEAD_BYTES).unwrap_or(buf);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(window) {
        Ok(httparse::Status::Complete(head_len)) => request_from(&parsed, head_len),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => Head::TooLarge,
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(httparse::Error::TooManyHeaders) => Head::TooLarge,
        Err(_) => Head::Bad,
    }
}

fn request_from(parsed: &httparse::Request<'_, '_>, head_len: usize) -> Head {
    let (Some(method), Some(target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Head::Bad;
    };
    let fields = match HeaderFields::collect(parsed.headers) {
        Ok(fields) => fields,
        Err(Malformed) => return Head::Bad,
    };
    let keep_alive = if fields.declares_body {
        false
    } else if minor_version >= 1 {
        !fields.connection_close
    } else {
        fields.connection_keep_alive && !fields.connection_close
    };
    Head::Complete(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        head_len,
        host: fields.host,
        origin: fields.origin,
        websocket_upgrade: fields.websocket_upgrade,
        http_1_1: minor_version >= 1,
        connection_upgrade: fields.connection_upgrade,
        websocket_key: fields.websocket_key,
        websocket_version: fields.websocket_version,
        keep_alive,
        if_none_match: fields.if_none_match,
        forwarded_for: fields.forwarded_for,
    })
}

struct Malformed;

/// What the header fields say, collected in one pass.
#[derive(Default)]
struct HeaderFields {
    host: Option<String>,
    origin: Option<String>,
    if_none_match: Option<String>,
    forwarded_for: Option<String>,
    websocket_upgrade: bool,
    websocket_key: Option<String>,
    websocket_version: Option<String>,
    connection_upgrade: bool,
    connection_close: bool,
    connection_keep_alive: bool,
    declares_body: bool,
}

impl HeaderFields {
    fn collect(headers: &[httparse::Header<'_>]) -> Result<HeaderFields, Malformed> {
        let mut fields = HeaderFields::default();
        for header in headers {
            fields.add(header.name, header.value)?;
        }
        Ok(fields)
    }

    fn add(&mut self, name: &str, raw_value: &[u8]) -> Result<(), Malformed> {
        let is = |expected: &str| name.eq_ignore_ascii_case(expected);
        if is("host") {
            // Two Hosts (or two Origins) would make the Origin check ambiguous (RFC 9112 §3.2).
            set_once(&mut self.host, text(raw_value)?)
        } else if is("origin") {
            set_once(&mut self.origin, text(raw_value)?)
        } else if is("if-none-match") {
            let value = text(raw_value)?;
            self.if_none_match = Some(match self.if_none_match.take() {
                Some(earlier) => format!("{earlier}, {value}"),
                None => value,
            });
            Ok(())
        } else if is("x-forwarded-for") {
            // Not `text`: a header that is not UTF-8 must not make the request a 400 for a peer
            // whose header is ignored anyway.
            let value = String::from_utf8_lossy(raw_value.trim_ascii());
            self.forwarded_for = Some(match self.forwarded_for.take() {
                Some(earlier) => format!("{earlier}, {value}"),
                None => value.into_owned(),
            });
            Ok(())
        } else if is("connection") {
            for token in tokens(raw_value) {
                self.connection_close |= token.eq_ignore_ascii_case(b"close");
                self.connection_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                self.connection_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            }
            Ok(())
        } else if is("upgrade") {
            self.websocket_upgrade |=
                tokens(raw_value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
            Ok(())
        } else if is("sec-websocket-key") {
            set_once(&mut self.websocket_key, text(raw_value)?)
        } else if is("sec-websocket-version") {
            set_once(&mut self.websocket_version, text(raw_value)?)
        } else if is("content-length") {
            self.declares_body |= raw_value.trim_ascii() != b"0";
            Ok(())
        } else if is("transfer-encoding") {
            self.declares_body = true;
            Ok(())
        } else {
            Ok(())
        }
    }
}

fn set_once(slot: &mut Option<String>, value: String) -> Result<(), Malformed> {
    if slot.is_some() {
        return Err(Malformed);
    }
    *slot = Some(value);
    Ok(())
}

fn text(raw_value: &[u8]) -> Result<String, Malformed> {
    std::str::from_utf8(raw_value.trim_ascii())
        .map(str::to_owned)
        .map_err(|_| Malformed)
}

/// The comma-separated tokens of a list-valued field, trimmed, empty ones dropped.
fn tokens(raw_value: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw_value
        .split(|&byte| byte == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// The `Host` of a request head that may be cut short (the start of plain HTTP sent to the TLS
/// port, read once), lower-cased, when it is a plausible host: it is echoed in the answer
/// ([`https_required`](super::https_required)), so anything unusual is left out.
pub fn requested_host(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok().or_else(|| {
        // A cut in the middle of a character: the valid prefix still holds the early headers.
        let valid = std::str::from_utf8(head).err()?.valid_up_to();
        std::str::from_utf8(head.get(..valid)?).ok()
    })?;
    let value = text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("host")
            .then(|| value.trim())
    })?;
    let plausible = !value.is_empty()
        && value.len() <= 261
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plausible.then(|| value.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> Request {
        match parse_head(buf) {
            Head::Complete(request) => request,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    #[test]
    fn partial_until_blank_line() {
        let full = b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..full.len() {
            assert!(
                matches!(parse_head(&full[..cut]), Head::Partial),
                "prefix of {cut} bytes"
            );
        }
        assert_eq!(complete(full).head_len, full.len());
    }

    #[test]
    fn complete_head_leaves_following_bytes_to_the_caller() {
        let head = b"GET /ws?x=1 HTTP/1.1\r\nHost: chat.example:8080\r\nOrigin: http://chat.example:8080\r\n\
                     Upgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n";
        let mut buf = head.to_vec();
        buf.extend_from_slice(b"\x81\x85frame bytes");
        let request = complete(&buf);
        assert_eq!(request.head_len, head.len());
        assert_eq!(request.method, "GET");
        assert_eq!(request.target, "/ws?x=1");
        assert_eq!(request.path(), "/ws");
        assert_eq!(request.host.as_deref(), Some("chat.example:8080"));
        assert_eq!(request.origin.as_deref(), Some("http://chat.example:8080"));
        assert!(request.websocket_upgrade);
        assert!(request.keep_alive);
    }

    #[test]
    fn too_large_without_complete_head() {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        // Few long fields, so that the header count limit is not what triggers.
        let filler = format!("X-Filler: {}\r\n", "a".repeat(1000));
        while buf.len() < MAX_HEAD_BYTES {
            buf.extend_from_slice(filler.as_bytes());
        }
        assert!(matches!(parse_head(&buf), Head::TooLarge));
        // A head that completes only after the limit is still too large.
        buf.extend_from_slice(b"\r\n");
        assert!(matches!(parse_head(&buf), Head::TooLarge));
        // Just under the limit is still waiting for more.
        assert!(matches!(
            parse_head(&buf[..MAX_HEAD_BYTES - 1]),
            Head::Partial
        ));
    }

    #[test]
    fn small_head_followed_by_many_bytes_is_complete() {
        let head = b"GET / HTTP/1.1\r\n\r\n";
        let mut buf = head.to_vec();
        buf.resize(MAX_HEAD_BYTES * 2, b'x');
        assert_eq!(complete(&buf).head_len, head.len());
    }

    #[test]
    fn garbage_is_bad() {
        for garbage in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nOrigin: http://a\r\nOrigin: http://b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(garbage), Head::Bad),
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[test]
    fn header_count_limit() {
        let with_headers = |count: usize| {
            let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..count {
                buf.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            buf.extend_from_slice(b"\r\n");
            buf
        };
        assert!(matches!(
            parse_head(&with_headers(MAX_HEADERS)),
            Head::Complete(_)
        ));
        assert!(matches!(
            parse_head(&with_headers(MAX_HEADERS + 1)),
            Head::TooLarge
        ));
    }

    #[test]
    fn keep_alive_rules() {
        let table: [(&[u8], bool); 8] = [
            (b"GET / HTTP/1.1\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (
                b"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", false),
            (
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
            ),
        ];
        for (buf, expected) in table {
            assert_eq!(
                complete(buf).keep_alive,
                expected,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn upgrade_and_conditional_fields() {
        let request = complete(
            b"GET / HTTP/1.1\r\nUpgrade: h2c, websocket\r\nIf-None-Match: \"a\"\r\nIf-None-Match: W/\"b\"\r\n\r\n",
        );
        assert!(request.websocket_upgrade);
        assert_eq!(request.if_none_match.as_deref(), Some("\"a\", W/\"b\""));
        assert_eq!(request.host, None);
        assert_eq!(request.origin, None);
        assert_eq!(request.forwarded_for, None);

        let plain = complete(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n");
        assert!(!plain.websocket_upgrade);
    }

    #[test]
    fn forwarded_for_values_are_joined_in_order() {
        let request = complete(
            b"GET /ws HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7, 198.51.100.1\r\n\
              x-forwarded-for:  10.0.0.1 \r\nX-Forwarded-For: \xff\r\n\r\n",
        );
        assert_eq!(
            request.forwarded_for.as_deref(),
            Some("203.0.113.7, 198.51.100.1, 10.0.0.1, \u{fffd}")
        );
    }

    #[test]
    fn websocket_handshake_fields() {
        let request = complete(
            b"GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key:  k== \r\n\
              sec-websocket-version: 13\r\n\r\n",
        );
        assert!(request.http_1_1);
        assert!(request.connection_upgrade);
        assert_eq!(request.websocket_key.as_deref(), Some("k=="));
        assert_eq!(request.websocket_version.as_deref(), Some("13"));

        let old = complete(b"GET /ws HTTP/1.0\r\nConnection: close\r\n\r\n");
        assert!(!old.http_1_1);
        assert!(!old.connection_upgrade);
        assert_eq!(old.websocket_key, None);
        // A repeated key would leave the accept hash ambiguous.
        assert!(matches!(
            parse_head(b"GET /ws HTTP/1.1\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Key: b\r\n\r\n"),
            Head::Bad
        ));
    }

    #[test]
    fn path_strips_query_and_fragment() {
        let mut request = complete(b"GET /a/b.js?v=1#x HTTP/1.1\r\n\r\n");
        assert_eq!(request.path(), "/a/b.js");
        request.target = "/c#frag?not-query".to_owned();
        assert_eq!(request.path(), "/c");
        request.target = "?".to_owned();
        assert_eq!(request.path(), "");
    }

    #[test]
    fn host_is_taken_from_a_plain_request_only_when_plausible() {
        let request = b"GET / HTTP/1.1\r\nUser-Agent: x\r\nhOsT:  Pi.Local:8443 \r\n\r\n";
        assert_eq!(requested_host(request).as_deref(), Some("pi.local:8443"));
        let v6 = b"GET / HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n";
        assert_eq!(requested_host(v6).as_deref(), Some("[::1]:8443"));
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: <script>\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"Host: evil\r\n",
            b"",
        ] {
            assert_eq!(
                requested_host(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
