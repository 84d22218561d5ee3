//! Static path resolution: `resolve_path` on arbitrary text.
//!
//! Checked: a resolved key never holds `..` or `.` segments, NUL, a backslash, another control
//! character or an empty segment, and joined under a root directory it stays under it; escaping
//! every byte of the key and resolving again gives the same key; a path without `%` resolves to
//! itself; only a path ending in `/` is a directory.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use secchat::http::{PathError, resolve_path};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    match resolve_path(path) {
        Ok(key) => check_key(path, &key),
        Err(PathError::Directory) => assert!(path.ends_with('/'), "{path:?} is no directory"),
        Err(PathError::Bad) => {}
    }
});

fn check_key(path: &str, key: &str) {
    let Some(relative) = key.strip_prefix('/') else {
        panic!("key {key:?} does not start with /");
    };
    for segment in relative.split('/') {
        assert!(
            !segment.is_empty() && segment != "." && segment != "..",
            "{path:?} resolved to {key:?} with segment {segment:?}"
        );
        assert!(
            !segment.contains(|c: char| c == '\\' || c.is_control()),
            "{path:?} resolved to {key:?} with a forbidden character"
        );
    }
    let root = Path::new("/srv/secchat-public");
    let joined = root.join(relative);
    assert!(joined.starts_with(root), "{key:?} leaves the root");
    assert!(
        joined
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
        "{key:?} joins to {joined:?}"
    );
    let escaped = escape_every_byte(key);
    assert_eq!(
        resolve_path(&escaped).as_deref(),
        Ok(key),
        "the escaped key {escaped:?} resolves differently"
    );
    if !path.contains('%') && path != "/" {
        assert_eq!(path, key, "a path without escapes changed");
    }
}

/// `/` between segments kept, every other byte as `%XX`.
fn escape_every_byte(key: &str) -> String {
    key.split('/')
        .map(|segment| segment.bytes().map(|b| format!("%{b:02X}")).collect())
        .collect::<Vec<String>>()
        .join("/")
}
