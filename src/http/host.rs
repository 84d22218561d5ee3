//! The `Host` check on the WebSocket upgrade, against DNS rebinding (docs/SECURITY.md,
//! "Addresses, proxies and Host").
//!
//! A page on a name the attacker controls (`evil.example`) can make a visitor's browser resolve
//! that name to this server (a loopback or LAN address) and then open `/ws` with
//! `Host: evil.example` and `Origin: http://evil.example`: the Origin check passes, since both
//! name the same site. Only the `Host` gives it away, so the upgrade is refused (421) unless
//! `Host` is a name this server answers to:
//!
//! - an IP address literal, always: rebinding needs a name, and a page's origin can be an
//!   address only when the browser really went to that address;
//! - `localhost` and `*.localhost`, always: browsers resolve them to loopback themselves
//!   (RFC 6761), so no page elsewhere can have them as its origin;
//! - the DNS names of the TLS certificate (wildcards match one label), and every
//!   `--public-host` name;
//! - when neither exists and the server listens beyond loopback (plain HTTP on a LAN), the
//!   machine's own host name and its `.local` (mDNS) name: the names a LAN gives this machine
//!   without anyone outside being able to point them elsewhere.
//!
//! `--public-host '*'` accepts every `Host` (DNS rebinding is then possible; `main` warns).
//! The port in `Host` is not compared: rebinding changes the name, not the port, and behind a
//! proxy the port the browser used is not the one the server listens on. Static files and
//! `/healthz` are served whatever the `Host`: they are the same for everyone and public.

use std::net::Ipv4Addr;

use super::origin::parse_authority;

/// The `--public-host` value that turns the check off: every `Host` opens `/ws`.
pub const ANY_HOST: &str = "*";

/// Which `Host` values may open `/ws`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostRule {
    /// Every `Host` is accepted (no names known; see the module's notes).
    any: bool,
    /// Lower-case names without a trailing dot; `*.example.org` matches one more label.
    names: Vec<String>,
}

impl HostRule {
    /// Accept every `Host`.
    pub fn any() -> HostRule {
        HostRule {
            any: true,
            names: Vec::new(),
        }
    }

    /// Accept IP literals, the `localhost` names and `names` (as [`host_name`] normalises them;
    /// others are left out, and so are those accepted anyway).
    pub fn names<'a>(names: impl IntoIterator<Item = &'a str>) -> HostRule {
        let mut kept: Vec<String> = names
            .into_iter()
            .filter_map(host_name)
            .filter(|name| {
                name.parse::<std::net::IpAddr>().is_err()
                    && name != "localhost"
                    && !name.ends_with(".localhost")
            })
            .collect();
        kept.sort();
        kept.dedup();
        HostRule {
            any: false,
            names: kept,
        }
    }

    pub fn accepts_any(&self) -> bool {
        self.any
    }

    /// The names accepted, for the start-up banner: configuration only, nothing a client sent.
    pub fn describe(&self) -> String {
        if self.any {
            return format!("any name (--public-host '{ANY_HOST}')");
        }
        let mut shown = String::from("IP addresses, localhost, *.localhost");
        for name in &self.names {
            shown.push_str(", ");
            shown.push_str(name);
        }
        shown
    }

    /// Whether an upgrade carrying `host` may proceed. A missing `Host` is left to the handshake
    /// check, which refuses it with 400 (RFC 6455 §4.2.1).
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return true;
        };
        if self.any {
            return true;
        }
        let Some((name, _port)) = parse_authority(host, 0) else {
            return false;
        };
        if name.starts_with('[') || name.parse::<Ipv4Addr>().is_ok() {
            return true;
        }
        let name = name.strip_suffix('.').unwrap_or(&name);
        name == "localhost"
            || name.ends_with(".localhost")
            || self.names.iter().any(|pattern| matches(pattern, name))
    }
}

/// `pattern` (a name, or `*.` and a name) against a lower-case `name`.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == name,
    }
}

/// A host name as `--public-host` takes it and [`HostRule`] keeps it: letters, digits, `-` and
/// `_` in dot-separated labels, optionally `*.` in front and one trailing dot (dropped), or an IP
/// address; lower-cased. No port, no scheme.
pub fn host_name(text: &str) -> Option<String> {
    let text = text.trim();
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Some(name.to_string());
    }
    let labels = name.strip_prefix("*.").unwrap_or(name);
    let valid = !labels.is_empty()
        && labels.len() <= 253
        && labels.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_ips_and_localhost_pass_others_do_not() {
        let rule = HostRule::names([]);
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "chat.localhost:8080",
            "127.0.0.1:8080",
            "127.0.0.2",
            "192.168.1.20:443",
            "[::1]:8080",
            "[2001:db8::1]",
        ] {
            assert!(rule.allows(Some(host)), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "evillocalhost",
            "127.0.0.1.evil.example",
            "2130706433",
            "",
            ":8080",
            "a b",
            "[::1",
            "localhost:99999",
        ] {
            assert!(!rule.allows(Some(host)), "{host}");
        }
        assert!(rule.allows(None), "left to the handshake check (400)");
    }

    #[test]
    fn listed_names_and_wildcards() {
        let rule = HostRule::names(["Chat.Example.org.", "*.pi.example", "bad name", "10.0.0.1"]);
        assert!(rule.allows(Some("chat.example.org")));
        assert!(rule.allows(Some("CHAT.example.org:443")));
        assert!(rule.allows(Some("chat.example.org.:8443")));
        assert!(rule.allows(Some("a.pi.example")));
        assert!(!rule.allows(Some("pi.example")), "a wildcard needs a label");
        assert!(!rule.allows(Some("a.b.pi.example")), "only one label");
        assert!(!rule.allows(Some("example.org")));
        assert!(!rule.allows(Some("xchat.example.org")));
        assert!(!rule.allows(Some("bad")));
        assert!(!HostRule::names(["chat.example.org"]).accepts_any());
        assert!(HostRule::any().allows(Some("evil.example")));
        assert!(HostRule::any().accepts_any());
    }

    #[test]
    fn the_description_lists_every_accepted_name() {
        assert_eq!(
            HostRule::names([
                "pi.local",
                "localhost",
                "pi",
                "::1",
                "10.0.0.1",
                "a.localhost"
            ])
            .describe(),
            "IP addresses, localhost, *.localhost, pi, pi.local"
        );
        assert_eq!(
            HostRule::names([]).describe(),
            "IP addresses, localhost, *.localhost"
        );
        assert_eq!(HostRule::any().describe(), "any name (--public-host '*')");
    }

    #[test]
    fn host_names_are_checked_and_normalised() {
        assert_eq!(
            host_name("Chat.Example.ORG").as_deref(),
            Some("chat.example.org")
        );
        assert_eq!(host_name("pi.local.").as_deref(), Some("pi.local"));
        assert_eq!(host_name("*.example.org").as_deref(), Some("*.example.org"));
        assert_eq!(host_name("::1").as_deref(), Some("::1"));
        for bad in [
            "",
            ".",
            "chat.example.org:443",
            "https://chat.example.org",
            "a..b",
            "*",
            "*.",
            "a.*.b",
            "chat example",
            "π.example",
            &"a".repeat(64),
        ] {
            assert_eq!(host_name(bad), None, "{bad:?}");
        }
    }
}
