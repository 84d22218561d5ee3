//! `--cluster redis://[user[:password]@]host[:port][/db]`, and `rediss://…` for TLS.
//!
//! The password is kept out of every rendering: `Display` and `Debug` show `***` in its place,
//! and [`UrlError`] names what is wrong without repeating the value when the value is a secret.

use std::fmt;
use std::net::Ipv6Addr;

/// Redis's port when the URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// Longest host name (DNS: 253 characters written out).
const MAX_HOST_LEN: usize = 253;

/// Where the bus is and how to log in: a parsed `redis://` or `rediss://` URL.
///
/// Invariants: `host` is non-empty (an IPv6 literal is kept without its brackets); `port` is not
/// zero; `password` is `Some` whenever `username` is (Redis's `AUTH user pass` needs both; a
/// password alone is `AUTH pass`); for `rediss://` the host is a valid TLS server name.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    tls: bool,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: u32,
}

/// Why a `--cluster` URL could not be used. The `Display` text names the part that is wrong; it
/// never contains the password, percent-decoded or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Not `redis://` or `rediss://`.
    Scheme,
    /// No host between `//` (or `@`) and the port, path or end.
    MissingHost,
    /// The host has characters no host name or address has.
    BadHost(String),
    /// `[…]` does not hold an IPv6 address, or the bracket is not closed.
    BadIpv6(String),
    /// The port is not a number from 1 to 65535.
    BadPort(String),
    /// The path is not `/` followed by a database number.
    BadDb(String),
    /// `?…` or `#…`: no query options are understood, and ignoring them silently could hide
    /// a setting the operator relies on.
    QueryOrFragment,
    /// A user name without a password: Redis cannot log in with a name alone.
    UserWithoutPassword,
    /// `user:@host` or `:@host`.
    EmptyPassword,
    /// A `%` escape in the user name is malformed, or the decoded name is not UTF-8.
    BadUserEncoding,
    /// A `%` escape in the password is malformed, or the decoded password is not UTF-8. The
    /// password itself is not repeated.
    BadPasswordEncoding,
    /// `rediss://` with a host rustls cannot check a certificate against.
    BadTlsServerName(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Scheme => f.write_str("the URL must start with redis:// or rediss://"),
            UrlError::MissingHost => f.write_str("the URL names no host"),
            UrlError::BadHost(host) => write!(f, "{host:?} is not a host name or address"),
            UrlError::BadIpv6(host) => write!(f, "{host:?} is not a bracketed IPv6 address"),
            UrlError::BadPort(port) => write!(f, "{port:?} is not a port from 1 to 65535"),
            UrlError::BadDb(path) => write!(
                f,
                "the path {path:?} is not /DB with DB a database number (0, 1, …)"
            ),
            UrlError::QueryOrFragment => {
                f.write_str("the URL has a ?query or #fragment; no options are understood there")
            }
            UrlError::UserWithoutPassword => f.write_str(
                "a user name without a password: write redis://USER:PASSWORD@HOST, or \
                 redis://:PASSWORD@HOST for a password alone",
            ),
            UrlError::EmptyPassword => f.write_str("the password is empty"),
            UrlError::BadUserEncoding => {
                f.write_str("the user name has a malformed %-escape or is not UTF-8 once decoded")
            }
            UrlError::BadPasswordEncoding => f.write_str(
                "the password has a malformed %-escape or is not UTF-8 once decoded \
                 (the password is not shown)",
            ),
            UrlError::BadTlsServerName(host) => write!(
                f,
                "{host:?} cannot be checked against a TLS certificate (rediss://)"
            ),
        }
    }
}

impl std::error::Error for UrlError {}

impl ClusterUrl {
    /// Parses `redis://[user[:password]@]host[:port][/db]` or `rediss://…`.
    ///
    /// User name and password are percent-decoded (`%40` for `@`, `%3A` for `:`); the host is a
    /// name, an IPv4 address or a bracketed IPv6 address; the port defaults to 6379 and the
    /// database to 0.
    pub fn parse(text: &str) -> Result<ClusterUrl, UrlError> {
        let (tls, rest) = split_scheme(text).ok_or(UrlError::Scheme)?;
        if rest.contains(['?', '#']) {
            return Err(UrlError::QueryOrFragment);
        }
        // The authority ends at the first '/' after the userinfo; a password may hold a raw '/'
        // only percent-encoded, as in any URL, but '@' is looked for from the right so that a
        // raw '@' in a password still parses the way its writer meant.
        let (userinfo, host_and_path) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (authority, path) = match host_and_path.find('/') {
            Some(slash) => (&host_and_path[..slash], &host_and_path[slash..]),
            None => (host_and_path, ""),
        };
        let (username, password) = match userinfo {
            Some(userinfo) => parse_userinfo(userinfo)?,
            None => (None, None),
        };
        let (host, port) = parse_host_port(authority)?;
        let db = parse_db(path)?;
        if tls && rustls::pki_types::ServerName::try_from(host.as_str()).is_err() {
            return Err(UrlError::BadTlsServerName(host));
        }
        Ok(ClusterUrl {
            tls,
            host,
            port,
            username,
            password,
            db,
        })
    }

    /// Whether the URL is `rediss://`: the connection speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The host name or address, IPv6 without brackets; also the TLS server name.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The ACL user name (`AUTH user pass`); `None` with a password alone (`AUTH pass`).
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password, percent-decoded. Never log it.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The database number (`SELECT db` when not 0).
    pub fn db(&self) -> u32 {
        self.db
    }
}

/// `redis://user:***@host:port/db`, the password replaced: safe for logs.
impl fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "rediss://" } else { "redis://" })?;
        match (&self.username, &self.password) {
            (Some(user), Some(_)) => write!(f, "{}:***@", percent_encode(user))?,
            (None, Some(_)) => f.write_str(":***@")?,
            // Not built by `parse`: a user always comes with a password.
            (Some(user), None) => write!(f, "{}@", percent_encode(user))?,
            (None, None) => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        write!(f, ":{}/{}", self.port, self.db)
    }
}

/// Same as `Display`: the password never reaches a `{:?}` either.
impl fmt::Debug for ClusterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterUrl({self})")
    }
}

fn split_scheme(text: &str) -> Option<(bool, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    if scheme.eq_ignore_ascii_case("redis") {
        Some((false, rest))
    } else if scheme.eq_ignore_ascii_case("rediss") {
        Some((true, rest))
    } else {
        None
    }
}

type Credentials = (Option<String>, Option<String>);

fn parse_userinfo(userinfo: &str) -> Result<Credentials, UrlError> {
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let user = percent_decode(user).ok_or(UrlError::BadUserEncoding)?;
    let password = match password {
        Some(password) => Some(percent_decode(password).ok_or(UrlError::BadPasswordEncoding)?),
        None => None,
    };
    match (user.is_empty(), password) {
        // `redis://@host`: an empty userinfo says nothing.
        (true, None) => Ok((None, None)),
        (false, None) => Err(UrlError::UserWithoutPassword),
        (_, Some(password)) if password.is_empty() => Err(UrlError::EmptyPassword),
        (true, Some(password)) => Ok((None, Some(password))),
        (false, Some(password)) => Ok((Some(user), Some(password))),
    }
}

fn parse_host_port(authority: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err(UrlError::BadIpv6(authority.to_string()));
        };
        let address: Ipv6Addr = inside
            .parse()
            .map_err(|_| UrlError::BadIpv6(authority.to_string()))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| UrlError::BadPort(after.to_string()))?,
            ),
        };
        (address.to_string(), port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::MissingHost);
    }
    if !host.contains(':') && !is_host_name(&host) {
        return Err(UrlError::BadHost(host));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => parse_port(port)?,
    };
    Ok((host, port))
}

/// Letters, digits, `-`, `.` and `_` (container service names have underscores): every DNS
/// name and IPv4 address, and nothing that could smuggle a path, a space or a control byte.
fn is_host_name(host: &str) -> bool {
    host.len() <= MAX_HOST_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn parse_port(port: &str) -> Result<u16, UrlError> {
    let bad = || UrlError::BadPort(port.to_string());
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(port) => Ok(port),
    }
}

fn parse_db(path: &str) -> Result<u32, UrlError> {
    let digits = match path {
        "" | "/" => return Ok(0),
        _ => path.strip_prefix('/').unwrap_or(path),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::BadDb(path.to_string()));
    }
    digits
        .parse::<u32>()
        .map_err(|_| UrlError::BadDb(path.to_string()))
}

/// Decodes `%XX` escapes; `None` when one is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let high = hex_value(*bytes.get(i + 1)?)?;
            let low = hex_value(*bytes.get(i + 2)?)?;
            decoded.push(high << 4 | low);
            i += 3;
        } else {
            decoded.push(byte);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Escapes what would not read back as a user name: the URL's own delimiters, `%`, and every
/// byte outside printable ASCII.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ClusterUrl {
        ClusterUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn defaults_are_port_6379_and_db_0_without_credentials() {
        let url = parse("redis://localhost");
        assert!(!url.tls());
        assert_eq!(url.host(), "localhost");
        assert_eq!(url.port(), 6379);
        assert_eq!(url.db(), 0);
        assert_eq!(url.username(), None);
        assert_eq!(url.password(), None);
        assert_eq!(url.to_string(), "redis://localhost:6379/0");
        assert_eq!(parse("redis://localhost/").db(), 0);
        assert_eq!(parse("redis://@localhost").password(), None);
    }

    #[test]
    fn every_part_is_read() {
        let url = parse("rediss://bus:s3cret@redis.internal:6380/3");
        assert!(url.tls());
        assert_eq!(url.host(), "redis.internal");
        assert_eq!(url.port(), 6380);
        assert_eq!(url.db(), 3);
        assert_eq!(url.username(), Some("bus"));
        assert_eq!(url.password(), Some("s3cret"));

        let url = parse("REDIS://:only-a-password@10.0.0.7:7000");
        assert_eq!(url.username(), None);
        assert_eq!(url.password(), Some("only-a-password"));
        assert_eq!(url.host(), "10.0.0.7");
        assert_eq!(parse("redis://redis_1:6379/0").host(), "redis_1");
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let url = parse("redis://us%3Aer:p%40ss%2Fw%3Ard%25@h");
        assert_eq!(url.username(), Some("us:er"));
        assert_eq!(url.password(), Some("p@ss/w:rd%"));
        // A raw '@' in the password: the last '@' ends the userinfo.
        assert_eq!(parse("redis://:a@b@h").password(), Some("a@b"));
        assert_eq!(parse("redis://u:%C3%A9t%C3%A9@h").password(), Some("été"));
    }

    #[test]
    fn ipv6_literals_are_bracketed() {
        let url = parse("redis://[::1]:6390/2");
        assert_eq!(url.host(), "::1");
        assert_eq!(url.port(), 6390);
        assert_eq!(url.db(), 2);
        assert_eq!(url.to_string(), "redis://[::1]:6390/2");
        assert_eq!(parse("rediss://[2001:db8::5]").port(), 6379);
        assert_eq!(parse("rediss://[2001:db8::5]").host(), "2001:db8::5");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases: &[(&str, UrlError)] = &[
            ("http://localhost", UrlError::Scheme),
            ("localhost:6379", UrlError::Scheme),
            ("redis:/localhost", UrlError::Scheme),
            ("redis://", UrlError::MissingHost),
            ("redis://:6379", UrlError::MissingHost),
            ("redis://u:p@/1", UrlError::MissingHost),
            ("redis://lo cal", UrlError::BadHost("lo cal".into())),
            ("redis://[::1", UrlError::BadIpv6("[::1".into())),
            ("redis://[nope]:1", UrlError::BadIpv6("[nope]:1".into())),
            ("redis://[::1]6379", UrlError::BadPort("6379".into())),
            ("redis://h:0", UrlError::BadPort("0".into())),
            ("redis://h:65536", UrlError::BadPort("65536".into())),
            ("redis://h:", UrlError::BadPort("".into())),
            ("redis://h:+1", UrlError::BadPort("+1".into())),
            ("redis://::1", UrlError::MissingHost),
            ("redis://h/x", UrlError::BadDb("/x".into())),
            ("redis://h/1/2", UrlError::BadDb("/1/2".into())),
            ("redis://h/-1", UrlError::BadDb("/-1".into())),
            (
                "redis://h/99999999999",
                UrlError::BadDb("/99999999999".into()),
            ),
            ("redis://h?db=1", UrlError::QueryOrFragment),
            ("redis://h#x", UrlError::QueryOrFragment),
            ("redis://user@h", UrlError::UserWithoutPassword),
            ("redis://user:@h", UrlError::EmptyPassword),
            ("redis://u%zz:p@h", UrlError::BadUserEncoding),
            ("redis://u:p%4@h", UrlError::BadPasswordEncoding),
            ("redis://u:%ff@h", UrlError::BadPasswordEncoding),
            ("rediss://-bad-", UrlError::BadTlsServerName("-bad-".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(ClusterUrl::parse(text).as_ref(), Err(expected), "{text}");
            assert!(!expected.to_string().is_empty());
        }
    }

    #[test]
    fn the_password_never_appears_in_display_debug_or_errors() {
        let password = "hunter2-SECRET";
        let url = parse(&format!("redis://alice:{password}@h:1/5"));
        for shown in [url.to_string(), format!("{url:?}"), format!("{url:#?}")] {
            assert!(!shown.contains(password), "{shown}");
            assert!(shown.contains("***"), "{shown}");
            assert!(shown.contains("alice"), "{shown}");
        }
        assert_eq!(url.to_string(), "redis://alice:***@h:1/5");
        assert_eq!(
            parse(&format!("rediss://:{password}@h")).to_string(),
            "rediss://:***@h:6379/0"
        );
        // A password with a bad escape: the error does not repeat it.
        let error = ClusterUrl::parse("redis://alice:hunter2-SECRET%G@h").unwrap_err();
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        // A password that makes the host unparseable: neither is it in that error.
        let error = ClusterUrl::parse("redis://alice:hunter2-SECRET@h:x").unwrap_err();
        assert!(!format!("{error} {error:?}").contains("hunter2"));
    }

    #[test]
    fn a_user_name_that_needs_escaping_is_shown_escaped() {
        let url = parse("redis://a%3Ab%40c:pw@h");
        assert_eq!(url.to_string(), "redis://a%3Ab%40c:***@h:6379/0");
        assert_eq!(ClusterUrl::parse("redis://a%3Ab%40c:pw@h"), Ok(url));
    }
}
