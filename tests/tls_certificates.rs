//! The certificates of `secchat`'s TLS (docs/PROTOCOL.md §7): reloaded on SIGHUP for new
//! connections only, self-signed ones made once and reused, and bad TLS flags refused at start.
//!
//! The real binary with a certificate made at test time, driven by a rustls client that trusts
//! only the test's own CA (`common/tls.rs`).

use std::fs;
use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

mod common;
use common::tls::{
    TestCa, WssClient, client_config_trusting, fresh_dir, https_get, make_friends,
    peer_certificate, replace_file, sha256_fingerprint, start_server, start_tls_server,
    tls_connect,
};
use common::{RECV_TIMEOUT, payload_with, run_to_exit};

#[test]
fn sighup_reload_serves_the_new_certificate_to_new_connections_only() {
    let ca = TestCa::new();
    let (mut server, dir, first) = start_tls_server(&ca, &[]);
    let config = ca.client_config();
    let mut old = WssClient::connect(&server, &config);
    old.connect_session();
    assert_eq!(peer_certificate(old.ws.get_ref()), first);

    let second = ca.issue_into(dir.path());
    assert_ne!(first, second);
    server.signal("HUP");
    assert!(
        server.wait_for_log("reloaded", RECV_TIMEOUT),
        "no reload logged: {}",
        server.logs()
    );
    let fresh = tls_connect(&server, &config);
    assert_eq!(
        peer_certificate(&fresh),
        second,
        "a new connection got the old certificate"
    );

    // The connection made before the reload is still up and still routed.
    old.ping("after-reload");
    let mut newcomer = WssClient::connect(&server, &config);
    newcomer.connect_session();
    make_friends(&mut old, &mut newcomer);
    old.send_json(
        &json!({"type": "MESSAGE", "to": newcomer.id, "payload": payload_with("x"), "ref": "o"}),
    );
    old.expect_ack("o");
    assert_eq!(newcomer.expect_type("MESSAGE")["from"], old.id.as_str());

    // A broken renewal is refused and the last good certificate stays in use.
    replace_file(&dir.path().join("key.pem"), b"not a key\n");
    server.signal("HUP");
    assert!(
        server.wait_for_log("keeping the current certificate", RECV_TIMEOUT),
        "no reload error logged: {}",
        server.logs()
    );
    let after_bad = tls_connect(&server, &config);
    assert_eq!(peer_certificate(&after_bad), second);
    old.ping("after-bad-reload");
}

#[test]
fn self_signed_certificate_is_made_once_reused_and_its_fingerprint_printed() {
    use std::os::unix::fs::PermissionsExt;

    let base = fresh_dir("self-signed");
    let dir = base.path().join("tls");
    let dir_arg = dir.to_str().expect("utf-8 path").to_string();

    let server = start_server(&["--tls-self-signed", &dir_arg]);
    let cert_pem = fs::read(dir.join("cert.pem")).expect("cert.pem made");
    let key_pem = fs::read(dir.join("key.pem")).expect("key.pem made");
    let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("key.pem")), 0o600);
    let der = CertificateDer::from_pem_slice(&cert_pem).expect("a PEM certificate");
    let fingerprint = sha256_fingerprint(der.as_ref());
    let banner = server.logs();
    assert!(
        banner.contains(&format!("SHA-256 fingerprint: {fingerprint}")),
        "fingerprint {fingerprint} not printed: {banner}"
    );
    assert!(banner.contains("open https://127.0.0.1:"), "{banner}");

    // The certificate it serves is that one, valid for localhost.
    let config = client_config_trusting(der.clone(), None);
    let stream = tls_connect(&server, &config);
    assert_eq!(peer_certificate(&stream), der);
    assert_eq!(https_get(&server, &config, "/healthz").body, b"ok");
    drop(stream);
    server.stop();

    // A second start reuses both files: same certificate, same fingerprint.
    let again = start_server(&["--tls-self-signed", &dir_arg]);
    assert_eq!(fs::read(dir.join("cert.pem")).expect("cert.pem"), cert_pem);
    assert_eq!(fs::read(dir.join("key.pem")).expect("key.pem"), key_pem);
    let banner = again.logs();
    assert!(
        banner.contains(&format!("SHA-256 fingerprint: {fingerprint}")),
        "{banner}"
    );
    assert!(banner.contains("earlier start"), "{banner}");
    assert_eq!(peer_certificate(&tls_connect(&again, &config)), der);
}

#[test]
fn bad_tls_flags_exit_2_with_a_message_naming_the_file() {
    let dir = fresh_dir("bad-flags");
    let missing = dir.path().join("nowhere.pem");
    let missing = missing.to_str().expect("utf-8 path");
    let (status, stderr) = run_to_exit(&["--tls-cert", missing, "--tls-key", missing]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nowhere.pem"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let ca = TestCa::new();
    ca.issue_into(dir.path());
    let cert = dir.path().join("cert.pem");
    let cert = cert.to_str().expect("utf-8 path");
    let (status, stderr) = run_to_exit(&["--tls-cert", cert, "--tls-key", cert]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a private key"), "{stderr}");

    let (status, stderr) = run_to_exit(&[
        "--tls-self-signed",
        dir.path().to_str().expect("utf-8 path"),
        "--tls-cert",
        cert,
        "--tls-key",
        cert,
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--tls-self-signed"), "{stderr}");
}
