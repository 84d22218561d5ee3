//! The deployment kit: `deploy/` and `docs/DEPLOY.md` checked against the real binary.
//!
//! - the systemd unit passes `systemd-analyze verify`, alone and with each drop-in, and keeps the
//!   sandboxing and limits the docs promise;
//! - the Caddy and nginx examples forward the WebSocket upgrade on `/ws`, keep `Host`, time out
//!   later than the server's ping interval and idle timeout, and pass the client's address in
//!   `X-Forwarded-For` to a secchat that trusts the proxy and keeps its per-address limits on
//!   as well; nginx limits connections and requests per client itself;
//! - every `secchat --flag value` and every `SECCHAT_*` variable written in the docs and examples
//!   is one the binary accepts, with that value: the docs' commands are the tested ones.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

const UNIT_EXEC_START: &str = "ExecStart=/usr/local/bin/secchat";

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_file(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn secchat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_secchat"))
}

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "secchat-deploy-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// What the binary says about itself
// ---------------------------------------------------------------------------------------------

fn help_text() -> String {
    let output = secchat().arg("--help").output().unwrap();
    assert!(output.status.success(), "secchat --help failed");
    String::from_utf8(output.stdout).unwrap()
}

/// Every `--flag` that `secchat --help` lists.
fn help_flags() -> BTreeSet<String> {
    let flags: BTreeSet<String> = help_text()
        .split_whitespace()
        .filter_map(|word| flag_name(word.trim_end_matches(',')))
        .collect();
    assert!(flags.contains("--listen") && flags.contains("--tls-self-signed"));
    flags
}

/// `--name` of a word that is a long flag (`--name` or `--name=value`), else `None`.
fn flag_name(word: &str) -> Option<String> {
    let body = word.strip_prefix("--")?;
    let name = body.split('=').next().unwrap_or_default();
    let well_formed = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    well_formed.then(|| format!("--{name}"))
}

/// The number after "(default " on the help line of `flag`.
fn help_default(flag: &str) -> u64 {
    let help = help_text();
    let line = help
        .lines()
        .find(|line| line.trim_start().starts_with(flag))
        .unwrap_or_else(|| panic!("{flag} is not in --help"));
    let after = line
        .split("(default ")
        .nth(1)
        .unwrap_or_else(|| panic!("no default on {line:?}"));
    after
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number default on {line:?}"))
}

/// The longest a proxy may leave a WebSocket silent without cutting a healthy one: the server
/// pings after the ping interval and gives up after the idle timeout.
fn server_liveness_seconds() -> u64 {
    help_default("--ping-interval").max(help_default("--idle-timeout"))
}

/// Runs secchat with `args` and `env`, followed by a setting that is always invalid. Settings are
/// applied in order (environment, then flags) and the first bad one is reported, so a message
/// about the sentinel means every setting before it parsed. The server never starts.
fn parses(args: &[String], env: &[(String, String)]) -> Result<(), String> {
    let mut command = secchat();
    command
        .env_clear()
        .args(args)
        .args(["--max-connections", "0"]);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    if output.status.code() == Some(2) && stderr.contains("--max-connections: expected") {
        Ok(())
    } else {
        Err(format!(
            "exit {:?}: {}",
            output.status.code(),
            stderr.trim()
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// The systemd unit
// ---------------------------------------------------------------------------------------------

fn systemd_analyze(args: &[&str]) -> Output {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "systemd-analyze is not installed: install the `systemd` package (apt-get install \
             systemd); this test verifies deploy/secchat.service with it"
        ),
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

/// The unit text with ExecStart pointing at a copy of the binary under test (verify needs the
/// program to exist); everything else byte for byte as shipped.
fn unit_for_verify(unit: &str, binary: &Path) -> String {
    let lines: Vec<&str> = unit.lines().collect();
    let exec_starts = lines.iter().filter(|l| l.starts_with("ExecStart=")).count();
    assert_eq!(exec_starts, 1, "the unit must have exactly one ExecStart=");
    assert!(
        lines.contains(&UNIT_EXEC_START),
        "the unit must run {UNIT_EXEC_START:?} (docs/DEPLOY.md installs the binary there)"
    );
    let replaced = format!("ExecStart={}", binary.display());
    let mut text = unit.replacen(UNIT_EXEC_START, &replaced, 1);
    assert_ne!(text, unit);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// `systemd-analyze verify` on `text` saved as `secchat.service`: it must succeed and say
/// nothing, since unknown keys and bad specifiers are only warnings with exit status 0.
fn assert_verifies(dir: &Path, text: &str, what: &str) {
    let unit_path = dir.join("secchat.service");
    fs::write(&unit_path, text).unwrap();
    let output = systemd_analyze(&["verify", unit_path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "systemd-analyze verify {what}: exit {:?}\n{stdout}{stderr}",
        output.status.code()
    );
}

fn copy_of_binary(dir: &Path) -> PathBuf {
    let binary = dir.join("secchat");
    fs::copy(env!("CARGO_BIN_EXE_secchat"), &binary).unwrap();
    binary
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = TempDir::new("verify");
    let binary = copy_of_binary(&dir.0);
    let unit = read("deploy/secchat.service");
    assert_verifies(
        &dir.0,
        &unit_for_verify(&unit, &binary),
        "deploy/secchat.service",
    );
    // A drop-in only adds lines to [Service]: the same as appending it to the unit.
    for drop_in in [
        "deploy/letsencrypt.conf",
        "deploy/letsencrypt-credentials.conf",
    ] {
        let combined = unit_for_verify(&unit, &binary) + &read(drop_in);
        assert_verifies(&dir.0, &combined, &format!("secchat.service + {drop_in}"));
    }
}

#[test]
fn verify_catches_a_broken_unit() {
    // The check above means something only if verify fails on a unit that cannot run.
    let dir = TempDir::new("verify-broken");
    let missing = dir.0.join("not-there");
    let unit = unit_for_verify(&read("deploy/secchat.service"), &missing);
    let unit_path = dir.0.join("secchat.service");
    fs::write(&unit_path, unit).unwrap();
    let output = systemd_analyze(&["verify", unit_path.to_str().unwrap()]);
    assert!(
        !output.status.success(),
        "verify passed a missing ExecStart"
    );
}

#[test]
fn unit_sandbox_exposure_stays_low() {
    let dir = TempDir::new("security");
    let binary = copy_of_binary(&dir.0);
    let unit_path = dir.0.join("secchat.service");
    let unit = unit_for_verify(&read("deploy/secchat.service"), &binary);
    fs::write(&unit_path, unit).unwrap();
    let output = systemd_analyze(&["security", "--offline=yes", unit_path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    let level: f64 = text
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for secchat.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    // docs/DEPLOY.md quotes 1.7 with systemd 252; 10 is a unit without any sandboxing.
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{text}");
}

/// `Key=value` lines of a unit (comments and sections left out).
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#') && !line.starts_with('['))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect()
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> &'a str {
    let values: Vec<&str> = settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(values.len(), 1, "{key}= should appear once, got {values:?}");
    values[0]
}

#[test]
fn unit_keeps_the_sandbox_and_limits_the_docs_promise() {
    let settings = unit_settings(&read("deploy/secchat.service"));
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("SystemCallFilter", "@system-service"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("EnvironmentFile", "-/etc/secchat.env"),
        ("StateDirectory", "secchat"),
    ] {
        assert_eq!(setting(&settings, key), value, "{key}=");
    }
    let families: BTreeSet<&str> = setting(&settings, "RestrictAddressFamilies")
        .split_whitespace()
        .collect();
    for family in ["AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(families.contains(family), "{family} missing");
    }
    assert!(setting(&settings, "MemoryMax").ends_with('M'));
    // Up to 2 x --max-connections + 64 sockets (docs/LIFECYCLE.md) plus a few files.
    let nofile: u64 = setting(&settings, "LimitNOFILE").parse().unwrap();
    let sockets = 2 * help_default("--max-connections") + 64;
    assert!(
        nofile > sockets,
        "LimitNOFILE={nofile} is not above {sockets}"
    );
}

#[test]
fn self_signed_directory_is_inside_the_state_directory() {
    let settings = unit_settings(&read("deploy/secchat.service"));
    let state = format!("/var/lib/{}/", setting(&settings, "StateDirectory"));
    let env_file = read("deploy/secchat.env");
    let dir = env_file
        .lines()
        .filter_map(|line| {
            line.trim_start_matches('#')
                .strip_prefix("SECCHAT_TLS_SELF_SIGNED=")
        })
        .next()
        .expect("deploy/secchat.env shows SECCHAT_TLS_SELF_SIGNED");
    // Everything else is read-only (ProtectSystem=strict) or private to the service.
    assert!(dir.starts_with(&state), "{dir} is not under {state}");
}

// ---------------------------------------------------------------------------------------------
// The reverse proxy examples
// ---------------------------------------------------------------------------------------------

/// Seconds in an nginx or Caddy duration such as `75s`, `2m` or `90`.
fn duration_seconds(text: &str) -> Option<u64> {
    let text = text.trim().trim_end_matches(';');
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let number: u64 = digits.parse().ok()?;
    match &text[digits.len()..] {
        "" | "s" => Some(number),
        "m" => Some(number * 60),
        "h" => Some(number * 3600),
        _ => None,
    }
}

/// The values of every `directive value...` line (first word matched exactly).
fn directive_values<'a>(config: &'a str, directive: &str) -> Vec<&'a str> {
    config
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (first, rest) = line.split_once(char::is_whitespace)?;
            (first == directive).then_some(rest.trim())
        })
        .collect()
}

/// The text between `header {` and its matching `}`.
fn block<'a>(config: &'a str, header: &str) -> &'a str {
    let start = config
        .find(header)
        .unwrap_or_else(|| panic!("no {header:?} block"));
    let body = &config[start + header.len()..];
    let mut depth = 1;
    for (at, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &body[..at];
                }
            }
            _ => {}
        }
    }
    panic!("{header:?} block is not closed")
}

/// The value after `flag` in `invocation`, if any.
fn flag_value<'a>(invocation: &'a [String], flag: &str) -> Option<&'a str> {
    invocation
        .windows(2)
        .find(|pair| pair[0] == flag)
        .map(|pair| pair[1].as_str())
}

/// The `--listen` address in the example's `secchat ...` command line, which must trust the
/// proxy on loopback (so that the per-address limits count the clients it forwards), keep those
/// limits on and name `public_name` with `--public-host` (the proxy passes Host on).
fn proxied_listen_address(config: &str, public_name: &str) -> String {
    let invocation = secchat_invocations(config)
        .into_iter()
        .next()
        .expect("the example shows the secchat command it fronts");
    assert_eq!(
        flag_value(&invocation, "--max-connections-per-ip"),
        None,
        "behind a trusted proxy the per-address limits stay on: {invocation:?}"
    );
    let trusted = flag_value(&invocation, "--trusted-proxy")
        .expect("the command trusts the proxy's X-Forwarded-For: --trusted-proxy");
    assert!(
        trusted.split(',').any(|block| block.trim() == "127.0.0.1"),
        "--trusted-proxy {trusted} does not cover the proxy on 127.0.0.1"
    );
    assert_eq!(
        flag_value(&invocation, "--public-host"),
        Some(public_name),
        "the /ws Host check needs the site's name"
    );
    flag_value(&invocation, "--listen")
        .expect("the command has --listen")
        .to_string()
}

/// The domain the examples use, to be replaced by the operator's everywhere.
const EXAMPLE_DOMAIN: &str = "chat.example.org";

#[test]
fn nginx_example_upgrades_ws_keeps_host_and_outlasts_the_ping() {
    let config = read("deploy/nginx.conf");
    let liveness = server_liveness_seconds();
    let listen = proxied_listen_address(&config, EXAMPLE_DOMAIN);
    let ws = block(&config, "location = /ws {");
    assert_eq!(
        directive_values(ws, "proxy_pass"),
        [format!("http://{listen};")]
    );
    let headers = directive_values(ws, "proxy_set_header");
    assert!(headers.contains(&"Upgrade $http_upgrade;"), "{headers:?}");
    assert!(
        headers.contains(&"Connection $secchat_connection;"),
        "{headers:?}"
    );
    let map = block(&config, "map $http_upgrade $secchat_connection {");
    assert!(map.contains("default upgrade;"));
    assert_eq!(directive_values(&config, "proxy_http_version"), ["1.1;"]);
    assert_eq!(directive_values(ws, "proxy_buffering"), ["off;"]);
    for timeout in ["proxy_read_timeout", "proxy_send_timeout"] {
        let values = directive_values(ws, timeout);
        assert_eq!(values.len(), 1, "{timeout} in location = /ws");
        let seconds = duration_seconds(values[0]).unwrap();
        assert!(seconds > liveness, "{timeout} {seconds}s <= {liveness}s");
    }
    // A location with its own proxy_set_header inherits none, so every proxied location must
    // pass Host itself, port included, for the Origin check.
    let proxied = config.matches("proxy_pass ").count();
    let host_lines = config.matches("proxy_set_header Host $http_host;").count();
    assert!(proxied >= 2);
    assert_eq!(proxied, host_lines, "each proxy_pass needs Host $http_host");
    // And X-Forwarded-For, which secchat believes from the proxy: the client's address last.
    let forwarded = config
        .matches("proxy_set_header X-Forwarded-For $remote_addr;")
        .count()
        + config
            .matches("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
            .count();
    assert_eq!(proxied, forwarded, "each proxy_pass needs X-Forwarded-For");
}

#[test]
fn nginx_example_limits_connections_and_requests_per_client() {
    let config = read("deploy/nginx.conf");
    let zone_of = |directive: &str| -> String {
        let values = directive_values(&config, directive);
        assert_eq!(values.len(), 1, "one {directive}: {values:?}");
        assert!(
            values[0].starts_with("$binary_remote_addr "),
            "{directive} keys on the client's address: {values:?}"
        );
        values[0]
            .split_whitespace()
            .find_map(|word| word.strip_prefix("zone="))
            .and_then(|zone| zone.split(':').next())
            .unwrap_or_else(|| panic!("{directive} names no zone"))
            .to_string()
    };
    let conn_zone = zone_of("limit_conn_zone");
    let req_zone = zone_of("limit_req_zone");
    let tls_server = block(&config, "listen 443 ssl;");
    let limit_conn = directive_values(tls_server, "limit_conn");
    assert_eq!(limit_conn.len(), 1, "{limit_conn:?}");
    let per_client: u64 = limit_conn[0]
        .trim_end_matches(';')
        .strip_prefix(&format!("{conn_zone} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("limit_conn {conn_zone} N: {limit_conn:?}"));
    // Not below secchat's own default, or honest browsers behind one address hit nginx first.
    assert!(per_client >= help_default("--max-connections-per-ip"));
    let limit_req = directive_values(tls_server, "limit_req");
    assert_eq!(limit_req.len(), 1, "{limit_req:?}");
    assert!(
        limit_req[0].starts_with(&format!("zone={req_zone} ")) && limit_req[0].contains("burst="),
        "limit_req with the zone and a burst for the page's files: {limit_req:?}"
    );
}

#[test]
fn caddy_example_proxies_ws_keeps_host_and_outlasts_the_ping() {
    let config = read("deploy/Caddyfile");
    let liveness = server_liveness_seconds();
    let listen = proxied_listen_address(&config, EXAMPLE_DOMAIN);
    assert!(
        config.contains(&format!("{EXAMPLE_DOMAIN} {{")),
        "the site is {EXAMPLE_DOMAIN}"
    );
    let proxy = block(&config, &format!("reverse_proxy {listen} {{"));
    // Caddy forwards upgrades on every path by itself; the comment must say /ws is covered.
    assert!(config.contains("/ws") && config.contains("Upgrade: websocket"));
    let transport = block(proxy, "transport http {");
    for timeout in ["read_timeout", "write_timeout"] {
        let values = directive_values(transport, timeout);
        assert_eq!(values.len(), 1, "{timeout} in transport http");
        let seconds = duration_seconds(values[0]).unwrap();
        assert!(seconds > liveness, "{timeout} {seconds}s <= {liveness}s");
    }
    // Caddy sets X-Forwarded-For itself: nothing may rewrite or drop it, nor Host.
    assert!(
        directive_values(&config, "header_up").is_empty(),
        "Host and X-Forwarded-For must reach secchat as Caddy sets them"
    );
    assert!(
        config.contains("X-Forwarded-For"),
        "the comment says who sets it"
    );
}

/// The active (uncommented) `SECCHAT_*` settings of set-up A in `deploy/secchat.env`.
fn env_setup_a() -> Vec<(String, String)> {
    let env = read("deploy/secchat.env");
    let start = env.find("# --- A.").expect("set-up A");
    let end = env.find("# --- B.").expect("set-up B");
    env[start..end]
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[test]
fn the_shipped_proxy_setup_trusts_the_proxy_and_keeps_per_address_limits_on() {
    let setup = env_setup_a();
    let value = |name: &str| {
        setup
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(value("SECCHAT_LISTEN"), Some("127.0.0.1:8080"), "{setup:?}");
    let trusted = value("SECCHAT_TRUSTED_PROXY").expect("set-up A trusts the proxy");
    let blocks: Vec<&str> = trusted.split(',').map(str::trim).collect();
    assert!(
        blocks.contains(&"127.0.0.1") && blocks.contains(&"::1"),
        "the proxy connects from loopback: {trusted}"
    );
    assert_eq!(value("SECCHAT_PUBLIC_HOST"), Some(EXAMPLE_DOMAIN));
    // The limit is on in every set-up, docs included: nowhere is it switched off.
    for (name, text) in documented_files() {
        for (variable, value) in secchat_variables(&text) {
            assert!(
                !(variable == "SECCHAT_MAX_CONNECTIONS_PER_IP" && value.as_deref() == Some("0")),
                "{name} turns the per-address limit off"
            );
        }
        for invocation in secchat_invocations(&text) {
            assert_ne!(
                flag_value(&invocation, "--max-connections-per-ip"),
                Some("0"),
                "{name}: secchat {}",
                invocation.join(" ")
            );
        }
    }
    // And the binary takes set-up A as it stands.
    parses(&[], &setup).unwrap_or_else(|e| panic!("set-up A is refused: {e}"));
}

// ---------------------------------------------------------------------------------------------
// The docs' commands and variables
// ---------------------------------------------------------------------------------------------

/// `docs/DEPLOY.md` and every file in `deploy/`, as (name, text).
fn documented_files() -> Vec<(String, String)> {
    let mut files = vec![("docs/DEPLOY.md".to_string(), read("docs/DEPLOY.md"))];
    let mut entries: Vec<PathBuf> = fs::read_dir(repo_file("deploy"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = format!("deploy/{}", path.file_name().unwrap().to_string_lossy());
        files.push((name.clone(), read(&name)));
    }
    files
}

/// Lines with shell continuations (`\` at the end) joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        match line.strip_suffix('\\') {
            Some(continued) => {
                current.push_str(continued);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// The arguments of every command that runs the binary: a word whose last path segment is
/// `secchat` followed by `--flag value` pairs (or `--flag=value`). Quotes and backticks around
/// words are dropped; a closing backtick ends the command.
fn secchat_invocations(text: &str) -> Vec<Vec<String>> {
    let mut invocations = Vec::new();
    for line in logical_lines(text) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (at, word) in words.iter().enumerate() {
            let program = word.trim_matches(|c| c == '`' || c == '"' || c == '\'' || c == '(');
            // `systemctl reload secchat`: the unit's name at the end of a code span.
            if program.rsplit('/').next() != Some("secchat") || word.ends_with('`') {
                continue;
            }
            let args = flags_after(&words[at + 1..]);
            if !args.is_empty() {
                invocations.push(args);
            }
        }
    }
    invocations
}

fn flags_after(words: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    let mut expecting_value = false;
    for word in words {
        // A backtick after the first character closes the Markdown code span: the command ends.
        let (word, closes) = match word.char_indices().skip(1).find(|&(_, c)| c == '`') {
            Some((at, _)) => (&word[..at], true),
            None => (*word, false),
        };
        let clean = word.trim_matches(|c| c == '`' || c == '"' || c == '\'' || c == ')');
        if expecting_value {
            args.push(clean.to_string());
            expecting_value = false;
        } else if clean.starts_with("--") {
            args.push(clean.to_string());
            expecting_value = !clean.contains('=');
        } else {
            break;
        }
        if closes {
            break;
        }
    }
    args
}

#[test]
fn invocation_parser_reads_commands_the_way_a_shell_would() {
    let text = "Run `secchat --listen 0.0.0.0:443 --tls-self-signed /var/lib/secchat/tls`, then\n\
                `systemctl reload secchat` and `certbot --deploy-hook x`.\n\
                $ ./target/release/secchat --listen=127.0.0.1:8080 \\\n  --max-connections-per-ip 0 | tee log\n\
                secchat pings a connection after 20 s; --allow-origin is another flag.";
    assert_eq!(
        secchat_invocations(text),
        vec![
            vec![
                "--listen",
                "0.0.0.0:443",
                "--tls-self-signed",
                "/var/lib/secchat/tls"
            ],
            vec!["--listen=127.0.0.1:8080", "--max-connections-per-ip", "0"],
        ]
    );
}

#[test]
fn every_documented_secchat_command_is_accepted_by_the_binary() {
    let known = help_flags();
    let mut checked = 0;
    for (name, text) in documented_files() {
        for args in secchat_invocations(&text) {
            for arg in &args {
                if let Some(flag) = flag_name(arg) {
                    assert!(known.contains(&flag), "{name}: {flag} is not in --help");
                }
            }
            checked += 1;
            if args.iter().any(|arg| arg == "--help" || arg == "--version") {
                continue;
            }
            parses(&args, &[])
                .unwrap_or_else(|e| panic!("{name}: `secchat {}` is refused: {e}", args.join(" ")));
        }
    }
    // DEPLOY.md and the two proxy examples show commands at least; an empty scan proves nothing.
    assert!(checked >= 5, "only {checked} secchat commands found");
}

/// `SECCHAT_NAME=value` assignments (commented ones too) and bare `SECCHAT_NAME` mentions.
fn secchat_variables(text: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("SECCHAT_") {
        let tail = &rest[at..];
        let name_len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..name_len];
        let after = &tail[name_len..];
        let value = after.strip_prefix('=').map(|v| {
            v.split(|c: char| c.is_whitespace() || c == '`')
                .next()
                .unwrap_or_default()
                // Sentence punctuation after a value in prose.
                .trim_end_matches(['.', ',', ';', ')'])
                .to_string()
        });
        // `SECCHAT_*` names the pattern, not a variable.
        if name != "SECCHAT_" {
            found.push((name.to_string(), value));
        }
        rest = after;
    }
    found
}

#[test]
fn every_documented_variable_is_a_flag_and_its_value_parses() {
    let known = help_flags();
    let mut assignments = 0;
    for (name, text) in documented_files() {
        for (variable, value) in secchat_variables(&text) {
            let flag = format!(
                "--{}",
                variable
                    .trim_start_matches("SECCHAT_")
                    .to_ascii_lowercase()
                    .replace('_', "-")
            );
            assert!(
                known.contains(&flag),
                "{name}: {variable} is not a flag ({flag})"
            );
            let Some(value) = value.filter(|v| !v.is_empty() && !v.contains('%')) else {
                // A bare mention, or a systemd specifier (%d) only systemd expands.
                continue;
            };
            parses(&[], &[(variable.clone(), value.clone())])
                .unwrap_or_else(|e| panic!("{name}: {variable}={value} is refused: {e}"));
            assignments += 1;
        }
    }
    assert!(assignments >= 5, "only {assignments} assignments found");
}

#[test]
fn certbot_hook_is_valid_shell_and_refuses_to_run_outside_certbot() {
    let hook = repo_file("deploy/certbot-deploy-hook");
    let syntax = Command::new("sh").arg("-n").arg(&hook).output().unwrap();
    assert!(syntax.status.success(), "{:?}", syntax);
    // Without certbot's RENEWED_LINEAGE it must stop before touching anything.
    let output = Command::new("sh")
        .arg(&hook)
        .env_remove("RENEWED_LINEAGE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("RENEWED_LINEAGE"));
}
