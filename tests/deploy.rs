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
//!
//! This file holds the tests. What they read is in `deploy/`: the kit's files and the commands
//! and variables written in them (`docs.rs`), the binary's `--help` and whether it accepts a set
//! of settings (`binary.rs`), the unit under `systemd-analyze` (`unit.rs`), and the proxy
//! configurations (`proxy.rs`).

#[path = "deploy/binary.rs"]
mod binary;
#[path = "deploy/docs.rs"]
mod docs;
#[path = "deploy/proxy.rs"]
mod proxy;
#[path = "deploy/unit.rs"]
mod unit;

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use binary::{flag_name, help_default, help_flags, parses, server_liveness_seconds};
use docs::{documented_files, read, repo_file, secchat_invocations, secchat_variables};
use proxy::{
    block, directive_values, duration_seconds, env_setup_a, flag_value, flag_values,
    proxied_listen_address,
};
use unit::{
    TempDir, assert_verifies, copy_of_binary, setting, systemd_analyze, unit_for_verify,
    unit_settings,
};

// ---------------------------------------------------------------------------------------------
// The systemd unit
// ---------------------------------------------------------------------------------------------

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
    // The limit and the Host check are on in every set-up, docs included: nowhere is either
    // switched off.
    for (name, text) in documented_files() {
        for (variable, value) in secchat_variables(&text) {
            assert!(
                !(variable == "SECCHAT_MAX_CONNECTIONS_PER_IP" && value.as_deref() == Some("0")),
                "{name} turns the per-address limit off"
            );
            assert!(
                !(variable == "SECCHAT_PUBLIC_HOST"
                    && value.is_some_and(|v| v.split(',').any(|host| host.trim() == "*"))),
                "{name} turns the Host check off"
            );
        }
        for invocation in secchat_invocations(&text) {
            assert!(
                !flag_values(&invocation, "--public-host")
                    .any(|host| host.trim_matches(['\'', '"']) == "*"),
                "{name} turns the Host check off: secchat {}",
                invocation.join(" ")
            );
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
