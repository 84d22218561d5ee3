//! Reading the reverse proxy examples: directives, blocks and durations in the nginx and Caddy
//! configurations, the secchat command each one fronts, and set-up A of `deploy/secchat.env`.

use crate::docs::{read, secchat_invocations};

/// Seconds in an nginx or Caddy duration such as `75s`, `2m` or `90`.
pub fn duration_seconds(text: &str) -> Option<u64> {
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
pub fn directive_values<'a>(config: &'a str, directive: &str) -> Vec<&'a str> {
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
pub fn block<'a>(config: &'a str, header: &str) -> &'a str {
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
pub fn flag_value<'a>(invocation: &'a [String], flag: &str) -> Option<&'a str> {
    invocation
        .windows(2)
        .find(|pair| pair[0] == flag)
        .map(|pair| pair[1].as_str())
}

/// Every value `flag` is given in `invocation`, as `--flag VALUE` or `--flag=VALUE`.
pub fn flag_values<'a>(invocation: &'a [String], flag: &'a str) -> impl Iterator<Item = &'a str> {
    let separate = invocation
        .windows(2)
        .filter(move |pair| pair[0] == flag)
        .map(|pair| pair[1].as_str());
    let joined = invocation.iter().filter_map(move |arg| {
        arg.strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
    });
    separate.chain(joined)
}

/// The `--listen` address in the example's `secchat ...` command line, which must trust the
/// proxy on loopback (so that the per-address limits count the clients it forwards), keep those
/// limits on and name `public_name` with `--public-host` (the proxy passes Host on).
pub fn proxied_listen_address(config: &str, public_name: &str) -> String {
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

/// The active (uncommented) `SECCHAT_*` settings of set-up A in `deploy/secchat.env`.
pub fn env_setup_a() -> Vec<(String, String)> {
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
