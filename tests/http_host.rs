//! The `Host` check on the WebSocket upgrade against DNS rebinding (the TLS
//! certificate's names are in tests/tls_wss.rs).
//!
//! A page on `evil.example` whose DNS answer changes to this server's address reaches `/ws` with
//! `Host: evil.example` and a matching `Origin`, which the Origin check alone lets through.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The status a `/ws` upgrade with `host` (and the same-site `Origin`) gets.
fn upgrade_status(server: &Server, host: &str) -> u16 {
    let origin = format!("http://{host}");
    // A 101 is read up to its head only; a refusal with its body (Content-Length).
    let response = http_raw(
        &server.addr(),
        upgrade_request(host, Some(&origin)).as_bytes(),
        false,
    );
    if response.status != 101 {
        response.assert_security_headers();
    }
    response.status
}

fn assert_opens(server: &Server, host: &str) {
    assert_eq!(upgrade_status(server, host), 101, "Host {host}");
}

fn assert_misdirected(server: &Server, host: &str) {
    assert_eq!(upgrade_status(server, host), 421, "Host {host}");
}

/// A hole this test keeps closed: `Host: evil.example:PORT` with
/// `Origin: http://evil.example:PORT` got `101`.
#[test]
fn a_rebinding_name_is_refused_on_a_loopback_server_and_its_own_names_are_not() {
    let server = Server::start(&[]);
    let port = server.port;
    assert_misdirected(&server, &format!("evil.example:{port}"));
    assert_misdirected(&server, "evil.example");
    assert_misdirected(&server, &format!("localhost.evil.example:{port}"));
    let without_origin = http_raw(
        &server.addr(),
        upgrade_request(&format!("evil.example:{port}"), None).as_bytes(),
        false,
    );
    assert_eq!(without_origin.status, 421, "without an Origin");
    assert!(without_origin.body_text().contains("Misdirected"));

    // The loopback names and any IP literal, with any port.
    for host in [
        format!("localhost:{port}"),
        format!("chat.localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost:80".to_string(),
    ] {
        assert_opens(&server, &host);
    }
    // And such an upgrade is a working WebSocket.
    let host = format!("localhost:{port}");
    let origin = format!("http://{host}");
    let mut raw = RawClient::connect_with_request(&server, &upgrade_request(&host, Some(&origin)));
    raw.send_json(&json!({"type": "PING", "ref": "h"}));
    assert_eq!(raw.recv_json(), json!({"type": "PONG", "ref": "h"}));

    // Static files are public and the same for every name: served whatever the Host.
    let page = http_raw(
        &server.addr(),
        format!("GET /healthz HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
        false,
    );
    assert_eq!(page.status, 200);
}

#[test]
fn public_host_names_open_ws_whatever_the_port() {
    let server = Server::start(&[
        "--public-host",
        "Chat.Example",
        "--public-host",
        "*.pi.example",
    ]);
    assert_opens(&server, "chat.example");
    assert_opens(&server, "chat.example:8443");
    assert_opens(&server, "CHAT.EXAMPLE.:443");
    assert_opens(&server, "a.pi.example");
    assert_misdirected(&server, "pi.example");
    assert_misdirected(&server, "a.b.pi.example");
    assert_misdirected(&server, "evil.example");
    assert_misdirected(&server, "chat.example.evil.example");

    let from_env = ServerBuilder::new()
        .env("SECCHAT_PUBLIC_HOST", "chat.example, other.example")
        .start();
    assert_opens(&from_env, "other.example:8080");
    assert_opens(&from_env, "chat.example");
    assert_misdirected(&from_env, "evil.example");
}

/// This machine's host name as the server reads it (`/etc/hostname`, else the kernel's).
fn machine_host_name() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|name| name.trim().to_ascii_lowercase())
            .unwrap_or_default()
    };
    let name = read("/etc/hostname");
    if name.is_empty() {
        read("/proc/sys/kernel/hostname")
    } else {
        name
    }
}

/// Plain HTTP on a LAN address without `--public-host`: a rebinding name is refused like on
/// loopback, while the machine's own names and its addresses open `/ws`, and the banner lists
/// what is accepted. A hole this test keeps closed: every `Host` got `101` there.
#[test]
fn beyond_loopback_without_names_only_the_machine_s_own_names_and_addresses_open_ws() {
    let lan = ServerBuilder::new().listen_on("0.0.0.0").start();
    let port = lan.port;
    assert_misdirected(&lan, &format!("evil.example:{port}"));
    assert_misdirected(&lan, "evil.example");
    let host = machine_host_name();
    assert!(!host.is_empty(), "this machine has no host name");
    // A one-label name also has its mDNS name.
    let mut own = vec![host.clone()];
    if !host.contains('.') {
        own.push(format!("{host}.local"));
    }
    for name in &own {
        assert_opens(&lan, name);
        assert_opens(&lan, &format!("{}:{port}", name.to_ascii_uppercase()));
        assert_misdirected(&lan, &format!("{name}.evil.example"));
    }
    for name in ["192.168.1.20", "[fe80::1]", "localhost"] {
        assert_opens(&lan, &format!("{name}:{port}"));
    }
    let logs = lan.logs();
    assert!(
        logs.contains(&format!(
            "/ws answers to Host: IP addresses, localhost, *.localhost, {}",
            own.join(", ")
        )),
        "{logs}"
    );
    assert!(!logs.contains("DNS rebinding"), "{logs}");

    // --public-host replaces the machine's names.
    let named = ServerBuilder::new()
        .listen_on("0.0.0.0")
        .flags(&["--public-host", "chat.example"])
        .start();
    assert_opens(&named, "chat.example");
    assert_misdirected(&named, &host);
    assert_misdirected(&named, "evil.example");
    assert!(!named.logs().contains("DNS rebinding"));
}

/// `--public-host '*'` is the explicit way to accept every name, with a warning.
#[test]
fn public_host_star_opens_ws_for_every_name_and_warns() {
    let flagged = ServerBuilder::new()
        .listen_on("0.0.0.0")
        .flags(&["--public-host", "*"])
        .start();
    let from_env = ServerBuilder::new().env("SECCHAT_PUBLIC_HOST", "*").start();
    for server in [&flagged, &from_env] {
        assert_opens(server, "evil.example");
        assert_opens(server, &format!("evil.example:{}", server.port));
        let logs = server.logs();
        assert!(
            logs.contains("/ws answers to Host: any name (--public-host '*')"),
            "{logs}"
        );
        assert!(
            logs.contains("--public-host '*'") && logs.contains("DNS rebinding"),
            "no warning: {logs}"
        );
    }
}

#[test]
fn a_trusted_proxy_without_a_public_host_is_warned_about() {
    let server = Server::start(&["--trusted-proxy", "127.0.0.1"]);
    assert!(
        server
            .logs()
            .contains("--trusted-proxy without --public-host"),
        "no warning: {}",
        server.logs()
    );
    let named = Server::start(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--public-host",
        "chat.example",
    ]);
    assert!(!named.logs().contains("without --public-host"));
}

#[test]
fn bad_public_hosts_and_proxies_exit_2_naming_the_setting() {
    for (args, env, needle) in [
        (
            &["--public-host", "https://chat.example"][..],
            &[][..],
            "--public-host: expected a host name",
        ),
        (
            &["--public-host", "chat.example:443"][..],
            &[][..],
            "--public-host: expected a host name",
        ),
        (
            &["--trusted-proxy", "proxy.local"][..],
            &[][..],
            "--trusted-proxy: expected an address or CIDR block",
        ),
        (
            &["--trusted-proxy", "10.0.0.0/40"][..],
            &[][..],
            "--trusted-proxy: expected an address or CIDR block",
        ),
        (
            &[][..],
            &[("SECCHAT_TRUSTED_PROXY", "127.0.0.1,nonsense")][..],
            "SECCHAT_TRUSTED_PROXY: expected an address or CIDR block",
        ),
    ] {
        let (code, stderr) = run_until_exit(args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(needle), "{stderr:?} lacks {needle:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
    }
}

/// Runs secchat with `args` and `env` until it exits; one that is still running after 10 s (it
/// took a bad setting) is killed and reported as `None`.
fn run_until_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let stderr_path = std::env::temp_dir().join(format!(
        "secchat-host-{}-{}",
        std::process::id(),
        free_port()
    ));
    let stderr_file = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_secchat"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SECCHAT_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr_file))
        .spawn()
        .expect("run secchat");
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    (code, stderr)
}
