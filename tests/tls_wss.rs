//! WSS built into `secchat` (docs/PROTOCOL.md §7): the protocol end to end over TLS, and the
//! Host names `/ws` opens for.
//!
//! The real binary with a certificate made at test time, driven by a rustls client that trusts
//! only the test's own CA (`common/tls.rs`).

use serde_json::json;
use tungstenite::Message;

mod common;
use common::tls::{
    TestCa, WssClient, fresh_dir, make_friends, start_server, start_tls_server, wss_upgrade_status,
};
use common::{RECV_TIMEOUT, payload_with};

#[test]
fn wss_carries_the_protocol_end_to_end() {
    let ca = TestCa::new();
    let (server, _dir, _) = start_tls_server(&ca, &["--rate-messages", "0"]);
    let config = ca.client_config();
    let mut a = WssClient::connect(&server, &config);
    let mut b = WssClient::connect(&server, &config);
    assert_eq!(a.ws.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    a.connect_session();
    b.connect_session();
    make_friends(&mut a, &mut b);

    a.send_json(
        &json!({"type": "MESSAGE", "to": b.id, "payload": payload_with("hello"), "ref": "m1"}),
    );
    a.expect_ack("m1");
    let message = b.expect_type("MESSAGE");
    assert_eq!(message["from"], a.id.as_str());
    assert_eq!(message["payload"], payload_with("hello"));
    assert!(message["ts"].as_u64().is_some(), "{message}");

    // Larger than one TLS record (16 KiB): the server must reassemble it from several.
    let big = payload_with(&"Q".repeat(50_000));
    a.send_json(&json!({"type": "MESSAGE", "to": b.id, "payload": big, "ref": "big"}));
    a.expect_ack("big");
    assert_eq!(b.expect_type("MESSAGE")["payload"], big.as_str());

    // A burst written at once arrives as many records in few reads: every one of them must be
    // routed even though the socket reports readable only once (edge-triggered).
    let count = 300;
    for n in 0..count {
        let frame =
            json!({"type": "MESSAGE", "to": b.id, "payload": payload_with(&format!("n{n}"))});
        a.ws.write(Message::text(frame.to_string()))
            .expect("queue message");
    }
    a.ws.flush().expect("flush burst");
    for n in 0..count {
        let message = b.expect_type("MESSAGE");
        assert_eq!(
            message["payload"],
            payload_with(&format!("n{n}")),
            "message {n}"
        );
    }
    b.ping("still-there");
}

/// With TLS, `/ws` opens for the certificate's DNS names (wildcards for one label),
/// `--public-host` names, `localhost` and IP literals, with any port; other names get 421 (DNS
/// rebinding). A renewed certificate's names replace the old ones on SIGHUP.
#[test]
fn wss_opens_for_the_certificate_s_names_and_public_hosts_only() {
    let ca = TestCa::new();
    let dir = fresh_dir("names");
    ca.issue_for_into(
        &["localhost", "127.0.0.1", "chat.test", "*.pi.test"],
        dir.path(),
    );
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let mut server = start_server(&[
        "--tls-cert",
        cert.to_str().expect("utf-8 path"),
        "--tls-key",
        key.to_str().expect("utf-8 path"),
        "--public-host",
        "proxy.test",
    ]);
    let config = ca.client_config();
    let port = server.port;
    let status = |host: &str| wss_upgrade_status(&server, &config, host);
    for host in [
        format!("chat.test:{port}"),
        "chat.test".to_string(),
        "a.pi.test".to_string(),
        "proxy.test:443".to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "192.0.2.1".to_string(),
    ] {
        assert_eq!(status(&host), 101, "Host {host}");
    }
    for host in [
        format!("evil.example:{port}"),
        "pi.test".to_string(),
        "b.a.pi.test".to_string(),
        "renamed.test".to_string(),
    ] {
        assert_eq!(status(&host), 421, "Host {host}");
    }

    ca.issue_for_into(&["localhost", "renamed.test"], dir.path());
    server.signal("HUP");
    assert!(
        server.wait_for_log("reloaded", RECV_TIMEOUT),
        "no reload logged: {}",
        server.logs()
    );
    let status = |host: &str| wss_upgrade_status(&server, &config, host);
    assert_eq!(status("renamed.test"), 101);
    assert_eq!(status("proxy.test"), 101, "--public-host stays");
    assert_eq!(status("chat.test"), 421, "the old certificate's name");
}
