//! Raw HTTP over TCP: requests written verbatim, responses parsed, and the security-header checks.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use secchat::http::SECURITY_HEADERS;

use super::{RECV_TIMEOUT, Server};

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The security headers every response must carry (PROTOCOL.md §7): each of
    /// [`SECURITY_HEADERS`] with its value (case-insensitive), and a CSP that is at least strict.
    pub fn assert_security_headers(&self) {
        for (name, expected) in SECURITY_HEADERS {
            let value = self
                .header(name)
                .unwrap_or_else(|| panic!("no {name} on {}: {self:?}", self.status));
            if name.eq_ignore_ascii_case("Content-Security-Policy") {
                assert_csp_is_strict(value);
            } else {
                assert!(
                    value.eq_ignore_ascii_case(expected),
                    "{name} on {} is {value:?}, not {expected:?}",
                    self.status
                );
            }
        }
    }
}

/// A CSP with `frame-ancestors 'none'` and no source that lets in a third-party origin: only
/// quoted keywords/hashes/nonces and the `data:`/`blob:` schemes (which name no origin).
pub fn assert_csp_is_strict(csp: &str) {
    let mut has_frame_ancestors_none = false;
    for directive in csp.split(';') {
        let mut words = directive.split_ascii_whitespace();
        let Some(name) = words.next() else { continue };
        let sources: Vec<&str> = words.collect();
        if name.eq_ignore_ascii_case("frame-ancestors") {
            has_frame_ancestors_none = sources == ["'none'"];
        }
        if name.eq_ignore_ascii_case("report-uri") || name.eq_ignore_ascii_case("report-to") {
            panic!("CSP reports to somewhere: {csp}");
        }
        for source in sources {
            let allowed = (source.starts_with('\'') && source.ends_with('\''))
                || source.eq_ignore_ascii_case("data:")
                || source.eq_ignore_ascii_case("blob:");
            assert!(
                allowed,
                "CSP source {source:?} in {name} may allow a third-party origin: {csp}"
            );
        }
    }
    assert!(
        has_frame_ancestors_none,
        "CSP lacks frame-ancestors 'none': {csp}"
    );
}

/// Read one response from `stream`. `no_body` for HEAD requests and upgrade responses. Bytes
/// after the response stay in `body` (for an upgrade: the first WebSocket frames).
pub fn read_http_response(stream: &mut TcpStream, no_body: bool) -> io::Result<HttpResponse> {
    let mut buf = Vec::new();
    let mut response = read_response_from(stream, &mut buf, no_body)?;
    response.body.extend_from_slice(&buf);
    Ok(response)
}

/// Read one response from `stream`, starting with the bytes already in `buf`; what follows the
/// response is left in `buf` (pipelining).
pub fn read_response_from(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    no_body: bool,
) -> io::Result<HttpResponse> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF before end of head: {:?}", String::from_utf8_lossy(buf)),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut header_slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut header_slots);
    parsed
        .parse(&buf[..head_end])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let status = parsed.code.unwrap_or(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    buf.drain(..head_end);
    let content_length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    if no_body || status == 101 || status == 204 || status == 304 {
        return Ok(HttpResponse {
            status,
            headers,
            body: Vec::new(),
        });
    }
    let body = match content_length {
        Some(len) => {
            while buf.len() < len {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let take = len.min(buf.len());
            buf.drain(..take).collect()
        }
        None => {
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                    Err(e) => return Err(e),
                }
            }
            std::mem::take(buf)
        }
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn connect_tcp(addr: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(RECV_TIMEOUT))?;
    stream.set_write_timeout(Some(RECV_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Send `request` verbatim and read one response.
pub fn try_http_raw(addr: &str, request: &[u8], no_body: bool) -> io::Result<HttpResponse> {
    let mut stream = connect_tcp(addr)?;
    stream.write_all(request)?;
    read_http_response(&mut stream, no_body)
}

pub fn http_raw(addr: &str, request: &[u8], no_body: bool) -> HttpResponse {
    try_http_raw(addr, request, no_body).unwrap_or_else(|e| {
        panic!(
            "HTTP request {:?} failed: {e}",
            String::from_utf8_lossy(request)
        )
    })
}

pub(super) fn try_http_get(addr: &str, path: &str) -> io::Result<HttpResponse> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    try_http_raw(addr, request.as_bytes(), false)
}

pub fn http_request(server: &Server, method: &str, path: &str) -> HttpResponse {
    let addr = server.addr();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http_raw(&addr, request.as_bytes(), method == "HEAD")
}

pub fn http_get(server: &Server, path: &str) -> HttpResponse {
    http_request(server, "GET", path)
}

/// A WebSocket upgrade request for `/ws` with the given `Host` and optional `Origin`.
pub fn upgrade_request(host: &str, origin: Option<&str>) -> String {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\n{origin}Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}
