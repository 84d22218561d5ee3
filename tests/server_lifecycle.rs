//! PROTOCOL.md §7 running the server: signals, flags, environment variables, logs.

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

fn shutdown_closes_every_websocket_with_1001(signal: &str) {
    let mut server = Server::start(&["--resume-grace", "30"]);
    let (mut a, _, _) = connect_session(&server);
    let (mut b, _, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    let mut not_connected = Client::connect(&server);
    let mut raw = RawClient::connect(&server);
    raw.connect_session();
    assert_eq!(
        not_connected.request(json!({"type": "PING"})),
        json!({"type": "PONG"})
    );
    server.signal(signal);
    assert_eq!(a.expect_close(), 1001);
    assert_eq!(b.expect_close(), 1001);
    assert_eq!(not_connected.expect_close(), 1001);
    assert_eq!(raw.expect_close(), 1001);
    let status = server
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running 5 s after SIG{signal}"));
    assert_eq!(status.code(), Some(0), "exit status after SIG{signal}");
}

#[test]
fn sigterm_closes_every_websocket_with_1001_and_exits_0() {
    shutdown_closes_every_websocket_with_1001("TERM");
}

#[test]
fn sigint_closes_every_websocket_with_1001_and_exits_0() {
    shutdown_closes_every_websocket_with_1001("INT");
}

#[test]
fn shutdown_is_not_held_up_by_stuck_clients() {
    let mut server = Server::start(&["--rate-messages", "0"]);
    let (mut sender, _, _) = connect_session(&server);
    let (mut sink, sink_id, _) = connect_session(&server);
    make_friends(&mut sender, &mut sink);
    // The sink never reads again; fill its socket until the server says it is busy.
    let chunk = "S".repeat(60_000);
    let mut busy = false;
    for i in 0..2_000 {
        let reference = format!("s{i}");
        let reply = sender.request(message(&sink_id, &payload_with(&chunk), Some(&reference)));
        if reply["type"] == "ERROR" {
            assert_error_shape(&reply, "peer_busy", Some(&reference));
            busy = true;
            break;
        }
    }
    assert!(busy, "the sink never became busy");
    // A client stuck in the middle of its HTTP head.
    let mut half_head = connect_tcp(&server.addr()).expect("connect");
    std::io::Write::write_all(&mut half_head, b"GET / HTTP/1.1\r\nHost: x\r\n").expect("write");
    let (mut bystander, _, _) = connect_session(&server);
    bystander.expect_nothing_pending();

    server.signal("TERM");
    assert_eq!(sender.expect_close(), 1001);
    assert_eq!(bystander.expect_close(), 1001);
    let status = server
        .wait_exit(Duration::from_secs(8))
        .expect("still running 8 s after SIGTERM with a stuck client");
    assert_eq!(status.code(), Some(0));
    drop(sink);
}

#[test]
fn sigterm_with_no_connections_exits_0_promptly() {
    let mut server = Server::start(&[]);
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(3)).expect("exited");
    assert_eq!(status.code(), Some(0));
    assert!(
        TcpStream::connect(server.addr()).is_err(),
        "still listening"
    );
}

/// Run the binary to completion with `args` (and `env`); (exit code, stderr).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_secchat"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SECCHAT_") {
            command.env_remove(key);
        }
    }
    // An unused port, in case a bad flag is not detected and the server starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    command
        .env("SECCHAT_LISTEN", format!("127.0.0.1:{port}"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "secchat {args:?} {env:?} kept running; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_bad_usage(args: &[&str], env: &[(&str, &str)], names: &[&str]) {
    let (code, stderr) = run_to_exit(args, env);
    assert_eq!(code, Some(2), "{args:?} {env:?}: stderr {stderr:?}");
    let message = stderr.trim_end_matches('\n');
    assert!(!message.is_empty(), "{args:?}: empty stderr");
    assert!(
        !message.contains('\n'),
        "{args:?}: more than one line on stderr: {stderr:?}"
    );
    assert!(
        names.iter().any(|n| message.contains(n)),
        "{args:?} {env:?}: {message:?} names none of {names:?}"
    );
}

#[test]
fn bad_flags_and_values_exit_2_with_one_line_naming_them() {
    assert_bad_usage(&["--no-such-flag"], &[], &["--no-such-flag"]);
    assert_bad_usage(&["--max-connections", "0"], &[], &["max-connections"]);
    assert_bad_usage(&["--max-connections", "-3"], &[], &["max-connections"]);
    assert_bad_usage(&["--max-connections", "ten"], &[], &["max-connections"]);
    assert_bad_usage(&["--max-message-bytes", "0"], &[], &["max-message-bytes"]);
    assert_bad_usage(&["--resume-grace", "-1"], &[], &["resume-grace"]);
    assert_bad_usage(&["--resume-grace", "soon"], &[], &["resume-grace"]);
    assert_bad_usage(&["--resume-grace", "NaN"], &[], &["resume-grace"]);
    assert_bad_usage(&["--ping-interval", "-0.5"], &[], &["ping-interval"]);
    assert_bad_usage(&["--idle-timeout", "inf"], &[], &["idle-timeout"]);
    assert_bad_usage(&["--rate-messages", "1.5"], &[], &["rate-messages"]);
    assert_bad_usage(&["--rate-messages", "-1"], &[], &["rate-messages"]);
    assert_bad_usage(
        &["--rate-friend-requests", "x"],
        &[],
        &["rate-friend-requests"],
    );
    assert_bad_usage(&["--log-level", "loud"], &[], &["log-level"]);
    assert_bad_usage(&["--listen", "not-an-address"], &[], &["listen"]);
    assert_bad_usage(&["--listen"], &[], &["listen"]);
    assert_bad_usage(
        &["--tls-cert", "/nonexistent/cert.pem"],
        &[],
        &["tls-key", "tls-cert"],
    );
    assert_bad_usage(
        &["--tls-key", "/nonexistent/key.pem"],
        &[],
        &["tls-key", "tls-cert"],
    );
    assert_bad_usage(
        &[],
        &[("SECCHAT_MAX_CONNECTIONS", "lots")],
        &["SECCHAT_MAX_CONNECTIONS", "max-connections"],
    );
    assert_bad_usage(
        &[],
        &[("SECCHAT_RESUME_GRACE", "-2")],
        &["SECCHAT_RESUME_GRACE", "resume-grace"],
    );
}

#[test]
fn a_public_dir_that_does_not_exist_is_a_bad_value() {
    assert_bad_usage(
        &["--public", "/nonexistent/secchat-public"],
        &[],
        &["--public"],
    );
}

#[test]
fn environment_variables_configure_the_server() {
    let server = ServerBuilder::new()
        .listen_via_env()
        .env("SECCHAT_MAX_MESSAGE_BYTES", "2048")
        .env("SECCHAT_MAX_CONNECTIONS", "1")
        .env(
            "SECCHAT_ALLOW_ORIGIN",
            "https://a.example,https://b.example",
        )
        .start();
    // SECCHAT_LISTEN: the server answers where the environment said.
    assert_eq!(http_get(&server, "/healthz").body, b"ok");
    let (mut a, _, _) = connect_session(&server);
    let reply = a.request(json!({"type": "PING"}));
    assert_eq!(reply, json!({"type": "PONG"}));
    let mut b = Client::connect(&server);
    b.send_json(&json!({"type": "CONNECT"}));
    b.expect_error("server_full", None);
    assert_eq!(b.expect_close(), 1013);
    a.send_json(&json!({"type": "DISCONNECT"}));
    assert_eq!(a.expect_close(), 1000);
    let mut c = Client::connect(&server);
    let reply = c.request(json!({"type": "CONNECT"}));
    assert_eq!(reply["limits"]["max_message_bytes"], 2048);
    for origin in ["https://a.example", "https://b.example"] {
        let response = http_raw(
            &server.addr(),
            upgrade_request(&server.addr(), Some(origin)).as_bytes(),
            true,
        );
        assert_eq!(response.status, 101, "{origin}");
    }
    let response = http_raw(
        &server.addr(),
        upgrade_request(&server.addr(), Some("https://c.example")).as_bytes(),
        true,
    );
    assert_eq!(response.status, 403);
}

#[test]
fn flags_win_over_environment_variables() {
    let decoy_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let server = ServerBuilder::new()
        .env("SECCHAT_LISTEN", &format!("127.0.0.1:{decoy_port}"))
        .env("SECCHAT_MAX_MESSAGE_BYTES", "2048")
        .flags(&["--max-message-bytes", "4096"])
        .start();
    // Started with --listen (the builder's default): that is where it answers.
    assert_eq!(http_get(&server, "/healthz").body, b"ok");
    assert!(
        TcpStream::connect(("127.0.0.1", decoy_port)).is_err(),
        "also listening on SECCHAT_LISTEN"
    );
    let mut client = Client::connect(&server);
    let reply = client.request(json!({"type": "CONNECT"}));
    assert_eq!(reply["limits"]["max_message_bytes"], 4096);
}

#[test]
fn trace_logs_never_contain_payloads_keys_or_tokens() {
    let mut server = Server::start(&["--log-level", "trace", "--resume-grace", "30"]);
    let key_marker = "KEYMATERIALq8Zr2Lw";
    let payload_marker = "PAYLOADSECRETx7Vn3Kp";
    let (mut a, a_id, a_token) = connect_session(&server);
    let (mut b, b_id, b_token) = connect_session(&server);
    a.send_json(&json!({"type": "FRIEND_REQUEST", "to": b_id, "public_key": key_with(key_marker), "ref": "r"}));
    a.expect_ack("r");
    b.expect_type("FRIEND_REQUEST");
    b.send_json(&json!({"type": "FRIEND_ACCEPT", "to": a_id, "public_key": key_with(key_marker), "ref": "r"}));
    b.expect_ack("r");
    a.expect_type("FRIEND_ACCEPT");
    a.send_json(&message(&b_id, &payload_with(payload_marker), Some("m")));
    a.expect_ack("m");
    b.expect_type("MESSAGE");
    // A payload the server refuses, and one queued for a resume.
    a.send_json(
        &json!({"type": "MESSAGE", "to": b_id, "payload": format!("plain {payload_marker}")}),
    );
    a.expect_error("not_encrypted", None);
    b.drop_connection();
    a.expect_type("PRESENCE");
    a.send_json(&message(&b_id, &payload_with(payload_marker), Some("q")));
    a.expect_queued_ack("q");
    let (mut b2, reply) = resume_session(&server, &b_id, &b_token);
    assert_eq!(reply["resumed"], true);
    b2.expect_type("MESSAGE");
    assert_eq!(a.expect_type("PRESENCE")["online"], true);
    // A failed resume with a made-up token.
    let fake_token = "T".repeat(43);
    let _ = resume_session(&server, &a_id, &fake_token);
    server.signal("TERM");
    let _ = a.expect_close();
    assert!(server.wait_exit(Duration::from_secs(5)).is_some());
    let logs = server.logs();
    assert!(
        !logs.trim().is_empty(),
        "no logs at all at --log-level trace"
    );
    for secret in [
        key_marker,
        payload_marker,
        a_token.as_str(),
        b_token.as_str(),
        b2.token.as_str(),
        fake_token.as_str(),
    ] {
        assert!(!logs.contains(secret), "the logs contain {secret:?}");
    }
    // Not even in part.
    assert!(
        !logs.contains(&a_token[..16]),
        "the logs contain part of a token"
    );
    assert!(
        !logs.contains(&b2.token[..16]),
        "the logs contain part of a token"
    );
}
