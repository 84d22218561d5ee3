//! Flags and `SECCHAT_*` environment variables (PROTOCOL.md §7).
//!
//! Every flag `--some-flag` can also be given as `SECCHAT_SOME_FLAG`; the flag wins. Errors name
//! the flag or variable and the value that was wrong, so `main` can print them on one line and
//! exit with status 2.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::http::{Cidr, TrustedProxies};

/// Everything the server can be told at start-up.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_dir: Option<PathBuf>,
    pub max_message_bytes: usize,
    pub max_connections: usize,
    /// Open sockets, half-open request heads and sessions per client address (an IPv6 /64, with
    /// its /56 and /48 allowed twice and four times as many: `address::BLOCK_SHARES`);
    /// 0 = unlimited.
    pub max_connections_per_ip: u32,
    pub resume_grace: Duration,
    /// Zero turns server pings off.
    pub ping_interval: Duration,
    /// Zero turns the idle drop off.
    pub idle_timeout: Duration,
    pub rate_messages: u32,
    pub rate_friend_requests: u32,
    pub allow_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` names the client (`--trusted-proxy`, repeatable).
    pub trusted_proxies: TrustedProxies,
    /// Names `/ws` answers to besides IP literals, `localhost` and the certificate's names
    /// (`--public-host`, repeatable; normalised by `http::host_name`), or `http::ANY_HOST`.
    pub public_hosts: Vec<String>,
    pub log_level: log::LevelFilter,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate kept in this directory (made on first start).
    pub tls_self_signed: Option<PathBuf>,
    /// Where `/metrics` is served; `None` = off.
    pub metrics_listen: Option<SocketAddr>,
    /// Bytes the mailbox of version 2 may hold in all; 0 turns it off.
    pub mailbox_bytes: usize,
    /// How long a letter waits in the mailbox; never zero (`--mailbox-bytes 0` turns it off).
    pub mailbox_ttl: Duration,
    /// Handles all sessions together may listen on.
    pub max_handles: usize,
    /// `--cluster`: the Redis/Valkey this node shares with the others; `None` = one node.
    pub cluster: Option<crate::bus::ClusterUrl>,
    /// `--cluster-ca`: the CA certificates a `rediss://` server is checked against (default:
    /// the system's bundle).
    pub cluster_ca: Option<PathBuf>,
    /// `--reuse-port`: several processes on this machine may listen on the same port, the
    /// kernel spreading new connections among them (`SO_REUSEPORT`).
    pub reuse_port: bool,
}

/// Why the command line or environment could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `--help` was asked for: print [`USAGE`] and exit 0.
    Help,
    /// `--version` was asked for.
    Version,
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Help => f.write_str(USAGE),
            ConfigError::Version => write!(f, "secchat {}", env!("CARGO_PKG_VERSION")),
            ConfigError::Invalid(message) => f.write_str(message),
        }
    }
}

/// Default open sockets (and sessions) per client address: a household or office behind one NAT
/// address fits, one host cannot take the whole server. Behind a reverse proxy, name it with
/// `--trusted-proxy` so that the limit applies to the client addresses it forwards.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 64;
/// Default MESSAGEs per second per session: far above human typing, low enough that one client
/// cannot keep the single routing thread busy on its own.
pub const DEFAULT_RATE_MESSAGES: u32 = 50;
/// Default FRIEND_REQUESTs per minute per session: enough to add a room of people, too few to
/// enumerate the 2^30 ID space.
pub const DEFAULT_RATE_FRIEND_REQUESTS: u32 = 20;

pub const USAGE: &str = "\
secchat: a zero-knowledge router for end-to-end encrypted chat

Usage: secchat [FLAGS]

  --listen ADDR:PORT           where HTTP and /ws are served (default 127.0.0.1:8080)
  --public DIR                 serve the web client from DIR instead of the built-in files
  --max-message-bytes N        largest WebSocket message (default 65536)
  --max-connections N          sessions at once (default 10000)
  --max-connections-per-ip N   sockets and sessions per address (default 64; IPv6: per /64,
                               a /56 twice and a /48 four times as many); 0 = unlimited
  --resume-grace SECS          resume window after a dropped connection; 0 = off (default 30)
  --ping-interval SECS         ping a silent connection after SECS; 0 = off (default 20)
  --idle-timeout SECS          close a connection silent for SECS; 0 = off (default 60)
  --rate-messages N            MESSAGEs per second per session; 0 = unlimited (default 50)
  --rate-friend-requests N     FRIEND_REQUESTs per minute per session; 0 = unlimited (default 20)
  --allow-origin ORIGIN        another origin allowed to open /ws (repeatable)
  --public-host NAME           a name /ws answers to besides IP addresses, localhost and the
                               TLS certificate's names (without TLS beyond loopback: the
                               machine's host name); needed behind a proxy (repeatable);
                               '*' = any name, which allows DNS rebinding
  --trusted-proxy CIDR         a reverse proxy (address or block) whose X-Forwarded-For names
                               the client for the per-address limits (repeatable)
  --mailbox-bytes N            bytes of MESSAGEs to handles kept for absent listeners
                               (default 67108864, 64 MiB); 0 = no mailbox
  --mailbox-ttl SECS           how long such a message waits (default 604800, 7 days; > 0)
  --max-handles N              rendezvous handles all sessions may listen on (default 262144)
  --log-level LEVEL            error, warn, info, debug, trace (default info)
  --metrics-listen ADDR:PORT   serve Prometheus metrics at /metrics there (default: off)
  --tls-cert FILE              PEM certificate chain: serve HTTPS and WSS (needs --tls-key)
  --tls-key FILE               PEM private key (needs --tls-cert)
  --tls-self-signed DIR        serve HTTPS and WSS with a self-signed certificate for this
                               machine, made once in DIR and reused (not with --tls-cert)
  --cluster URL                join the nodes sharing this Redis or Valkey:
                               redis://[user:password@]host[:port][/db], rediss:// for TLS
                               (default: off, one node)
  --cluster-ca FILE            PEM CA certificates for a rediss:// server (default: the
                               system's bundle)
  --reuse-port on|off          let several secchat processes on this machine listen on the
                               same port, new connections spread among them (default off)
  -h, --help                   print this help
  -V, --version                print the version

Every flag can also be set as an environment variable: SECCHAT_ and the flag's name upper-cased
with '-' as '_' (SECCHAT_LISTEN=0.0.0.0:8080); SECCHAT_ALLOW_ORIGIN, SECCHAT_PUBLIC_HOST and
SECCHAT_TRUSTED_PROXY are comma-separated. Flags win.
";

/// How the server gets its certificate: `tls-cert` with `tls-key`, or `tls-self-signed`.
const TLS_SETTINGS: [&str; 3] = ["tls-cert", "tls-key", "tls-self-signed"];

/// The flags that take a value, in the order of USAGE. [`LIST_FLAGS`] may repeat.
const VALUE_FLAGS: &[&str] = &[
    "listen",
    "public",
    "max-message-bytes",
    "max-connections",
    "max-connections-per-ip",
    "resume-grace",
    "ping-interval",
    "idle-timeout",
    "rate-messages",
    "rate-friend-requests",
    "allow-origin",
    "public-host",
    "trusted-proxy",
    "mailbox-bytes",
    "mailbox-ttl",
    "max-handles",
    "log-level",
    "metrics-listen",
    "tls-cert",
    "tls-key",
    "tls-self-signed",
    "cluster",
    "cluster-ca",
    "reuse-port",
];

/// The flags that may repeat, each adding to a list; their variables are comma-separated.
const LIST_FLAGS: [&str; 3] = ["allow-origin", "public-host", "trusted-proxy"];

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_dir: None,
            max_message_bytes: 65_536,
            max_connections: 10_000,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            resume_grace: Duration::from_secs(30),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            rate_messages: DEFAULT_RATE_MESSAGES,
            rate_friend_requests: DEFAULT_RATE_FRIEND_REQUESTS,
            allow_origins: Vec::new(),
            trusted_proxies: TrustedProxies::default(),
            public_hosts: Vec::new(),
            log_level: log::LevelFilter::Info,
            tls_cert: None,
            tls_key: None,
            tls_self_signed: None,
            metrics_listen: None,
            mailbox_bytes: crate::router::DEFAULT_MAILBOX_BYTES,
            mailbox_ttl: Duration::from_secs(DEFAULT_MAILBOX_TTL_SECS),
            max_handles: crate::router::DEFAULT_MAX_HANDLES,
            cluster: None,
            cluster_ca: None,
            reuse_port: false,
        }
    }
}

impl Config {
    /// Reads the process's arguments (without the program name) and environment.
    pub fn from_args_and_env<I, E>(args: I, env: E) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = String>,
        E: IntoIterator<Item = (String, String)>,
    {
        let mut config = Config::default();
        let from_env = collect_env(env);
        let from_args = collect_args(args)?;
        // A setting given as a flag ignores its variable altogether, so a stale or mistyped
        // variable cannot stop a command line that corrects it, and a repeated flag
        // (`--allow-origin` and the other LIST_FLAGS) replaces the variable's list instead of
        // adding to it. The three TLS
        // settings are one choice: a flag for any of them ignores the variables of all three.
        let flagged: Vec<&str> = from_args.iter().map(|(name, _, _)| name.as_str()).collect();
        let tls_flagged = flagged.iter().any(|name| TLS_SETTINGS.contains(name));
        let overridden =
            |name: &str| flagged.contains(&name) || (tls_flagged && TLS_SETTINGS.contains(&name));
        let from_env = from_env.iter().filter(|(name, _, _)| !overridden(name));
        for (name, value, source) in from_env.chain(from_args.iter()) {
            config.set(name, value, source)?;
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "--tls-cert and --tls-key must be given together".to_string(),
            ));
        }
        if config.tls_self_signed.is_some() && config.tls_cert.is_some() {
            return Err(ConfigError::Invalid(
                "--tls-self-signed cannot be combined with --tls-cert/--tls-key".to_string(),
            ));
        }
        Ok(config)
    }

    fn set(&mut self, name: &str, value: &str, source: &str) -> Result<(), ConfigError> {
        let bad = |what: &str| ConfigError::Invalid(format!("{source}: {what}, got {value:?}"));
        match name {
            "listen" => {
                self.listen = value
                    .parse()
                    .map_err(|_| bad("expected ADDR:PORT such as 127.0.0.1:8080"))?
            }
            "public" => self.public_dir = Some(PathBuf::from(value)),
            "max-message-bytes" => {
                self.max_message_bytes = parse_count(value).ok_or_else(|| {
                    bad("expected a positive whole number of bytes (at most 16777216)")
                })?;
                if self.max_message_bytes > 16 * 1024 * 1024 {
                    return Err(bad("expected at most 16777216 bytes"));
                }
            }
            "max-connections" => {
                self.max_connections =
                    parse_count(value).ok_or_else(|| bad("expected a positive whole number"))?
            }
            "max-connections-per-ip" => {
                self.max_connections_per_ip = parse_rate(value)
                    .ok_or_else(|| bad("expected a non-negative whole number (0 = unlimited)"))?
            }
            "resume-grace" => self.resume_grace = parse_seconds(value).ok_or_else(|| bad(SECS))?,
            // The URL may hold a password: the error names what is wrong, never the value.
            "cluster" => {
                self.cluster = Some(
                    crate::bus::ClusterUrl::parse(value)
                        .map_err(|error| ConfigError::Invalid(format!("{source}: {error}")))?,
                )
            }
            "cluster-ca" => self.cluster_ca = Some(PathBuf::from(value)),
            "reuse-port" => {
                self.reuse_port = match value.trim() {
                    "on" | "true" | "1" | "yes" => true,
                    "off" | "false" | "0" | "no" => false,
                    _ => return Err(bad("expected on or off")),
                }
            }
            "mailbox-bytes" => {
                self.mailbox_bytes = value.trim().parse().map_err(|_| {
                    bad("expected a non-negative whole number of bytes (0 = no mailbox)")
                })?
            }
            "mailbox-ttl" => {
                self.mailbox_ttl = parse_seconds(value)
                    .filter(|ttl| !ttl.is_zero())
                    .ok_or_else(|| {
                        bad("expected seconds above 0 and at most a year (--mailbox-bytes 0 turns the mailbox off)")
                    })?
            }
            "max-handles" => {
                self.max_handles =
                    parse_count(value).ok_or_else(|| bad("expected a positive whole number"))?
            }
            "ping-interval" => {
                self.ping_interval = parse_seconds(value).ok_or_else(|| bad(SECS))?
            }
            "idle-timeout" => self.idle_timeout = parse_seconds(value).ok_or_else(|| bad(SECS))?,
            "rate-messages" => self.rate_messages = parse_rate(value).ok_or_else(|| bad(RATE))?,
            "rate-friend-requests" => {
                self.rate_friend_requests = parse_rate(value).ok_or_else(|| bad(RATE))?
            }
            "allow-origin" => {
                let origin = value.trim();
                if !crate::http::is_valid_origin(origin) {
                    return Err(bad("expected an origin such as https://chat.example.org"));
                }
                self.allow_origins
                    .push(origin.trim_end_matches('/').to_string());
            }
            "public-host" => {
                let name = if value.trim() == crate::http::ANY_HOST {
                    crate::http::ANY_HOST.to_string()
                } else {
                    crate::http::host_name(value).ok_or_else(|| {
                        bad("expected a host name such as chat.example.org (no scheme, no port), \
                             or '*'")
                    })?
                };
                self.public_hosts.push(name);
            }
            "trusted-proxy" => {
                let block = Cidr::parse(value).ok_or_else(|| {
                    bad("expected an address or CIDR block such as 127.0.0.1 or 10.0.0.0/8")
                })?;
                let mut blocks = self.trusted_proxies.blocks().to_vec();
                blocks.push(block);
                self.trusted_proxies = TrustedProxies::new(blocks);
            }
            "log-level" => {
                self.log_level = value
                    .parse()
                    .map_err(|_| bad("expected error, warn, info, debug or trace"))?
            }
            "tls-cert" => self.tls_cert = Some(PathBuf::from(value)),
            "tls-key" => self.tls_key = Some(PathBuf::from(value)),
            "metrics-listen" => {
                self.metrics_listen = Some(
                    value
                        .parse()
                        .map_err(|_| bad("expected ADDR:PORT such as 127.0.0.1:9090"))?,
                )
            }
            "tls-self-signed" => self.tls_self_signed = Some(PathBuf::from(value)),
            _ => return Err(ConfigError::Invalid(format!("{source}: unknown setting"))),
        }
        Ok(())
    }
}

const SECS: &str = "expected a non-negative number of seconds";
const RATE: &str = "expected a non-negative whole number (0 = unlimited)";

/// `(flag name, value, where it came from)` from `SECCHAT_*` variables. The variables of
/// [`LIST_FLAGS`] are comma-separated lists.
fn collect_env<E>(env: E) -> Vec<(String, String, String)>
where
    E: IntoIterator<Item = (String, String)>,
{
    let mut found = Vec::new();
    for &flag in VALUE_FLAGS {
        let var = format!("SECCHAT_{}", flag.to_ascii_uppercase().replace('-', "_"));
        found.push((flag, var));
    }
    let mut settings = Vec::new();
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort();
    for (key, value) in env {
        let Some((flag, var)) = found.iter().find(|(_, var)| *var == key) else {
            continue;
        };
        if LIST_FLAGS.contains(flag) {
            for item in value.split(',').filter(|item| !item.trim().is_empty()) {
                settings.push((flag.to_string(), item.to_string(), var.clone()));
            }
        } else {
            settings.push((flag.to_string(), value, var.clone()));
        }
    }
    settings
}

/// `(flag name, value, flag as written)` from the command line; accepts `--flag value` and
/// `--flag=value`.
fn collect_args<I>(args: I) -> Result<Vec<(String, String, String)>, ConfigError>
where
    I: IntoIterator<Item = String>,
{
    let mut settings = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(ConfigError::Help),
            "-V" | "--version" => return Err(ConfigError::Version),
            _ => {}
        }
        let Some(body) = arg.strip_prefix("--") else {
            return Err(ConfigError::Invalid(format!(
                "unexpected argument {arg:?}: flags start with -- (see --help)"
            )));
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        if !VALUE_FLAGS.contains(&name) {
            return Err(ConfigError::Invalid(format!(
                "unknown flag --{name} (see --help)"
            )));
        }
        let value = match inline_value {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| ConfigError::Invalid(format!("--{name}: missing value")))?,
        };
        settings.push((name.to_string(), value, format!("--{name}")));
    }
    Ok(settings)
}

/// `--mailbox-ttl`'s default: 7 days.
const DEFAULT_MAILBOX_TTL_SECS: u64 = 7 * 24 * 60 * 60;

fn parse_count(value: &str) -> Option<usize> {
    value.trim().parse::<usize>().ok().filter(|&n| n > 0)
}

fn parse_rate(value: &str) -> Option<u32> {
    value.trim().parse::<u32>().ok()
}

fn parse_seconds(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    // One year is far beyond any sensible timeout and keeps Duration arithmetic from overflowing.
    if !seconds.is_finite() || !(0.0..=31_536_000.0).contains(&seconds) {
        return None;
    }
    Some(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_args_and_env(
            args.iter().map(|s| s.to_string()),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_match_the_protocol() {
        let config = parse(&[], &[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.max_message_bytes, 65_536);
        assert_eq!(config.resume_grace, Duration::from_secs(30));
    }

    #[test]
    fn mailbox_and_handle_flags() {
        let config = parse(&[], &[]).unwrap();
        assert_eq!(config.mailbox_bytes, 64 * 1024 * 1024);
        assert_eq!(config.mailbox_ttl, Duration::from_secs(604_800));
        assert_eq!(config.max_handles, 262_144);
        let config = parse(
            &["--mailbox-bytes", "0", "--mailbox-ttl", "0.25"],
            &[
                ("SECCHAT_MAX_HANDLES", "16"),
                ("SECCHAT_MAILBOX_BYTES", "5"),
            ],
        )
        .unwrap();
        assert_eq!(config.mailbox_bytes, 0);
        assert_eq!(config.mailbox_ttl, Duration::from_millis(250));
        assert_eq!(config.max_handles, 16);
        for (args, flag) in [
            (&["--mailbox-bytes", "-1"][..], "--mailbox-bytes"),
            (&["--mailbox-bytes", "lots"][..], "--mailbox-bytes"),
            (&["--mailbox-ttl", "0"][..], "--mailbox-ttl"),
            (&["--mailbox-ttl", "-3"][..], "--mailbox-ttl"),
            (&["--mailbox-ttl", "31536001"][..], "--mailbox-ttl"),
            (&["--max-handles", "0"][..], "--max-handles"),
            (&["--max-handles", "x"][..], "--max-handles"),
        ] {
            match parse(args, &[]) {
                Err(ConfigError::Invalid(message)) => {
                    assert!(message.starts_with(flag), "{message}");
                    assert!(!message.contains('\n'), "{message}");
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
        match parse(&[], &[("SECCHAT_MAILBOX_TTL", "0")]) {
            Err(ConfigError::Invalid(message)) => {
                assert!(message.starts_with("SECCHAT_MAILBOX_TTL"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_win_over_environment() {
        let config = parse(
            &["--listen", "0.0.0.0:9000", "--rate-messages=7"],
            &[
                ("SECCHAT_LISTEN", "127.0.0.1:1"),
                ("SECCHAT_MAX_CONNECTIONS", "5"),
                (
                    "SECCHAT_ALLOW_ORIGIN",
                    "https://a.example, https://b.example",
                ),
            ],
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.max_connections, 5);
        assert_eq!(config.rate_messages, 7);
        assert_eq!(
            config.allow_origins,
            vec!["https://a.example", "https://b.example"]
        );
    }

    #[test]
    fn a_flag_overrides_a_bad_or_listed_variable_entirely() {
        let config = parse(
            &[
                "--listen",
                "127.0.0.1:9000",
                "--allow-origin",
                "https://c.example",
            ],
            &[
                ("SECCHAT_LISTEN", "bogus"),
                ("SECCHAT_ALLOW_ORIGIN", "https://a.example"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.allow_origins, vec!["https://c.example"]);
        // A certificate on the command line replaces a self-signed one from the environment.
        let config = parse(
            &["--tls-cert", "c.pem", "--tls-key", "k.pem"],
            &[("SECCHAT_TLS_SELF_SIGNED", "/var/lib/secchat")],
        )
        .unwrap();
        assert_eq!(config.tls_self_signed, None);
        assert!(config.tls_cert.is_some());
        // Without the flag the bad variable is still an error that names it.
        match parse(&[], &[("SECCHAT_LISTEN", "bogus")]) {
            Err(ConfigError::Invalid(message)) => assert!(message.contains("SECCHAT_LISTEN")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn seconds_accept_fractions_and_zero() {
        let config = parse(&["--resume-grace", "0.5", "--ping-interval", "0"], &[]).unwrap();
        assert_eq!(config.resume_grace, Duration::from_millis(500));
        assert_eq!(config.ping_interval, Duration::ZERO);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, needle) in [
            (&["--max-connections", "0"][..], "--max-connections"),
            (&["--resume-grace", "-1"][..], "--resume-grace"),
            (&["--resume-grace", "NaN"][..], "--resume-grace"),
            (&["--rate-messages", "1.5"][..], "--rate-messages"),
            (&["--listen", "nowhere"][..], "--listen"),
            (&["--log-level", "loud"][..], "--log-level"),
            (&["--bogus"][..], "--bogus"),
            (&["--listen"][..], "--listen"),
            (&["--tls-cert", "a.pem"][..], "--tls-key"),
            (
                &[
                    "--tls-self-signed",
                    "d",
                    "--tls-cert",
                    "c",
                    "--tls-key",
                    "k",
                ][..],
                "--tls-self-signed",
            ),
            (&["--allow-origin", "evil"][..], "--allow-origin"),
            (&["--trusted-proxy", "localhost"][..], "--trusted-proxy"),
            (&["--trusted-proxy", "10.0.0.0/33"][..], "--trusted-proxy"),
            (
                &["--public-host", "chat.example.org:443"][..],
                "--public-host",
            ),
            (
                &["--public-host", "https://chat.example.org"][..],
                "--public-host",
            ),
        ] {
            match parse(args, &[]) {
                Err(ConfigError::Invalid(message)) => {
                    assert!(message.contains(needle), "{message:?} lacks {needle}");
                    assert!(!message.contains('\n'));
                }
                other => panic!("{args:?} gave {other:?}"),
            }
        }
        match parse(&[], &[("SECCHAT_MAX_MESSAGE_BYTES", "x")]) {
            Err(ConfigError::Invalid(message)) => {
                assert!(message.contains("SECCHAT_MAX_MESSAGE_BYTES"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn proxies_and_public_hosts_repeat_and_come_from_comma_separated_variables() {
        let config = parse(
            &[],
            &[
                ("SECCHAT_TRUSTED_PROXY", "127.0.0.1, ::1,10.0.0.0/8"),
                ("SECCHAT_PUBLIC_HOST", "Chat.Example.org,pi.local."),
            ],
        )
        .unwrap();
        let shown: Vec<String> = config
            .trusted_proxies
            .blocks()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]);
        assert_eq!(config.public_hosts, ["chat.example.org", "pi.local"]);
        let any = parse(&["--public-host", " * "], &[]).unwrap();
        assert_eq!(any.public_hosts, ["*"]);
        let any = parse(&[], &[("SECCHAT_PUBLIC_HOST", "chat.example.org,*")]).unwrap();
        assert_eq!(any.public_hosts, ["chat.example.org", "*"]);
        let config = parse(
            &[
                "--trusted-proxy",
                "192.0.2.1",
                "--trusted-proxy=2001:db8::/48",
            ],
            &[("SECCHAT_TRUSTED_PROXY", "bogus")],
        )
        .unwrap();
        assert_eq!(config.trusted_proxies.blocks().len(), 2);
        match parse(&[], &[("SECCHAT_TRUSTED_PROXY", "127.0.0.1,nope")]) {
            Err(ConfigError::Invalid(message)) => {
                assert!(message.contains("SECCHAT_TRUSTED_PROXY") && message.contains("nope"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["--help"], &[]), Err(ConfigError::Help));
        assert_eq!(parse(&["-V"], &[]), Err(ConfigError::Version));
    }
}
