//! Replays the fuzzers' committed inputs through the public API on stable Rust, as part of
//! `cargo test`: the seed corpus (`fuzz/corpus/<target>/`) and every crash kept as a regression
//! (`fuzz/regressions/<target>/`). A crash found by `scripts/fuzz` is kept by copying its input
//! into `fuzz/regressions/<target>/`; this test then fails until the bug is fixed.
//!
//! The checks are the cheap core of each fuzz target (fuzz/fuzz_targets/): no panic, and the
//! properties that need no model. `router_events` inputs are decisions for the fuzz harness,
//! not data, and are replayed by `scripts/fuzz` only.

use std::fs;
use std::path::{Path, PathBuf};

use secchat::assets::Assets;
use secchat::http::{Head, PathError, parse_head, resolve_path, respond};
use secchat::id::{ALPHABET, Id};
use secchat::protocol::{self, ErrorCode, ServerFrame};

/// Every file under `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file()
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                found.push((path, bytes));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn http_head_inputs() {
    let assets = Assets::from_static(&[("/index.html", b"<p>hi</p>"), ("/js/app.mjs", b"x")]);
    let inputs = inputs("http_head");
    assert!(inputs.len() >= 10, "the http_head seeds are missing");
    for (path, bytes) in inputs {
        if let Head::Complete(request) = parse_head(&bytes) {
            assert!(request.head_len <= bytes.len(), "{}", path.display());
            let response = respond(&request, &assets, false);
            let head = String::from_utf8_lossy(&response.head);
            assert!(head.ends_with("\r\n\r\n"), "{}", path.display());
            assert!(
                head.contains("\r\nContent-Security-Policy: "),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn static_path_inputs() {
    let inputs = inputs("static_path");
    assert!(inputs.len() >= 10, "the static_path seeds are missing");
    for (path, bytes) in inputs {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        match resolve_path(text) {
            Ok(key) => {
                let segments: Vec<&str> = key.split('/').skip(1).collect();
                assert!(key.starts_with('/'), "{}", path.display());
                assert!(
                    segments
                        .iter()
                        .all(|s| !s.is_empty() && *s != "." && *s != ".."),
                    "{} resolved to {key:?}",
                    path.display()
                );
                assert!(!key.contains(['\\', '\0']), "{}", path.display());
            }
            Err(PathError::Directory) => assert!(text.ends_with('/'), "{}", path.display()),
            Err(PathError::Bad) => {}
        }
    }
}

#[test]
fn protocol_decode_inputs() {
    let inputs = inputs("protocol_decode");
    assert!(inputs.len() >= 10, "the protocol_decode seeds are missing");
    for (path, bytes) in inputs {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        match protocol::decode(text) {
            Ok(frame) => {
                if let Some(reference) = frame.reference {
                    let ack = ServerFrame::Ack {
                        reference: reference.get(),
                        queued: true,
                    }
                    .to_text();
                    serde_json::from_str::<serde_json::Value>(&ack)
                        .unwrap_or_else(|e| panic!("{}: ACK is not JSON: {e}", path.display()));
                }
            }
            Err(rejected) => assert!(
                matches!(rejected.code, ErrorCode::BadJson | ErrorCode::BadRequest),
                "{}: {:?}",
                path.display(),
                rejected.code
            ),
        }
    }
}

#[test]
fn id_normalize_inputs() {
    let inputs = inputs("id_normalize");
    assert!(inputs.len() >= 10, "the id_normalize seeds are missing");
    for (path, bytes) in inputs {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Some(id) = Id::parse(text) {
            let normal = id.text();
            let normal = normal.as_str();
            assert!(
                normal.bytes().all(|b| ALPHABET.contains(&b)),
                "{}",
                path.display()
            );
            assert_eq!(Id::parse(normal), Some(id), "{}", path.display());
        }
    }
}
