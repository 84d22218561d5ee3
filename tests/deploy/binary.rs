//! What the binary says about itself (`secchat --help`: its flags and their defaults), and
//! whether it accepts a set of flags and environment variables without starting a server.

use std::collections::BTreeSet;
use std::process::Command;

fn secchat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_secchat"))
}

fn help_text() -> String {
    let output = secchat().arg("--help").output().unwrap();
    assert!(output.status.success(), "secchat --help failed");
    String::from_utf8(output.stdout).unwrap()
}

/// Every `--flag` that `secchat --help` lists.
pub fn help_flags() -> BTreeSet<String> {
    let flags: BTreeSet<String> = help_text()
        .split_whitespace()
        .filter_map(|word| flag_name(word.trim_end_matches(',')))
        .collect();
    assert!(flags.contains("--listen") && flags.contains("--tls-self-signed"));
    flags
}

/// `--name` of a word that is a long flag (`--name` or `--name=value`), else `None`.
pub fn flag_name(word: &str) -> Option<String> {
    let body = word.strip_prefix("--")?;
    let name = body.split('=').next().unwrap_or_default();
    let well_formed = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    well_formed.then(|| format!("--{name}"))
}

/// The number after "(default " on the help line of `flag`.
pub fn help_default(flag: &str) -> u64 {
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
pub fn server_liveness_seconds() -> u64 {
    help_default("--ping-interval").max(help_default("--idle-timeout"))
}

/// Runs secchat with `args` and `env`, followed by a setting that is always invalid. Settings are
/// applied in order (environment, then flags) and the first bad one is reported, so a message
/// about the sentinel means every setting before it parsed. The server never starts.
pub fn parses(args: &[String], env: &[(String, String)]) -> Result<(), String> {
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
