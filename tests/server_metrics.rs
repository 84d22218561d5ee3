//! `/metrics` on `--metrics-listen`: Prometheus text, real counts, never an ID, key or payload.

mod common;

use common::*;
use serde_json::json;

fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{page}"))
}

#[test]
fn metrics_count_sessions_messages_and_errors_without_naming_anyone() {
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(&["--metrics-listen", &metrics_addr]);
    let (mut a, a_id, a_token) = connect_session(&server);
    let (mut b, b_id, _) = connect_session(&server);
    make_friends(&mut a, &mut b);
    let secret = "METRICSPAYLOADz9Q";
    a.send_json(&message(&b_id, &payload_with(secret), Some("m")));
    a.expect_ack("m");
    b.expect_type("MESSAGE");
    a.send_raw_text("not json");
    a.expect_error("bad_json", None);
    a.send_json(&json!({"type": "MESSAGE", "to": b_id, "payload": "plain", "ref": "x"}));
    a.expect_error("not_encrypted", Some("x"));

    let response = http_raw(
        &metrics_addr,
        b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n",
        false,
    );
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4"))
    );
    let page = response.body_text();
    assert_eq!(metric(&page, "secchat_sessions"), 2);
    assert_eq!(metric(&page, "secchat_websocket_connections"), 2);
    assert_eq!(metric(&page, "secchat_messages_routed_total"), 1);
    assert_eq!(metric(&page, "secchat_errors_total{code=\"bad_json\"}"), 1);
    assert_eq!(
        metric(&page, "secchat_errors_total{code=\"not_encrypted\"}"),
        1
    );
    assert_eq!(metric(&page, "secchat_errors_total{code=\"peer_busy\"}"), 0);
    // Both clients read everything they were sent.
    assert_eq!(metric(&page, "secchat_unsent_bytes"), 0);
    assert!(metric(&page, "secchat_process_resident_memory_bytes") > 0);
    assert!(metric(&page, "secchat_received_bytes_total") > secret.len() as u64);
    for private in [
        a_id.as_str(),
        b_id.as_str(),
        a_token.as_str(),
        secret,
        "127.0.0.1",
    ] {
        assert!(
            !page.contains(private),
            "the metrics page contains {private:?}"
        );
    }

    // A dropped session shows as resuming.
    drop(b);
    a.expect_type("PRESENCE");
    let page = http_raw(
        &metrics_addr,
        b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n",
        false,
    )
    .body_text();
    assert_eq!(metric(&page, "secchat_sessions_resuming"), 1);
    assert_eq!(metric(&page, "secchat_websocket_connections"), 1);
}

#[test]
fn metrics_are_only_on_their_own_address() {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start(&["--metrics-listen", &metrics_addr]);
    assert_eq!(http_get(&server, "/metrics").status, 404);
    let other = http_raw(&metrics_addr, b"GET / HTTP/1.1\r\nHost: m\r\n\r\n", false);
    assert_eq!(other.status, 404);
    other.assert_security_headers();
    // Off by default: nothing listens anywhere else.
    let plain = Server::start(&[]);
    assert_eq!(http_get(&plain, "/metrics").status, 404);
}
