//! The systemd unit checked with `systemd-analyze`: a copy of the unit that runs the binary under
//! test, in a scratch directory, and the unit's `Key=value` settings.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

const UNIT_EXEC_START: &str = "ExecStart=/usr/local/bin/secchat";

/// A fresh directory for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "secchat-deploy-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn systemd_analyze(args: &[&str]) -> Output {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "systemd-analyze is not installed: install the `systemd` package (apt-get install \
             systemd); this test verifies deploy/secchat.service with it"
        ),
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

/// The unit text with ExecStart pointing at a copy of the binary under test (verify needs the
/// program to exist); everything else byte for byte as shipped.
pub fn unit_for_verify(unit: &str, binary: &Path) -> String {
    let lines: Vec<&str> = unit.lines().collect();
    let exec_starts = lines.iter().filter(|l| l.starts_with("ExecStart=")).count();
    assert_eq!(exec_starts, 1, "the unit must have exactly one ExecStart=");
    assert!(
        lines.contains(&UNIT_EXEC_START),
        "the unit must run {UNIT_EXEC_START:?} (docs/DEPLOY.md installs the binary there)"
    );
    let replaced = format!("ExecStart={}", binary.display());
    let mut text = unit.replacen(UNIT_EXEC_START, &replaced, 1);
    assert_ne!(text, unit);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// `systemd-analyze verify` on `text` saved as `secchat.service`: it must succeed and say
/// nothing, since unknown keys and bad specifiers are only warnings with exit status 0.
pub fn assert_verifies(dir: &Path, text: &str, what: &str) {
    let unit_path = dir.join("secchat.service");
    fs::write(&unit_path, text).unwrap();
    let output = systemd_analyze(&["verify", unit_path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "systemd-analyze verify {what}: exit {:?}\n{stdout}{stderr}",
        output.status.code()
    );
}

pub fn copy_of_binary(dir: &Path) -> PathBuf {
    let binary = dir.join("secchat");
    fs::copy(env!("CARGO_BIN_EXE_secchat"), &binary).unwrap();
    binary
}

/// `Key=value` lines of a unit (comments and sections left out).
pub fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#') && !line.starts_with('['))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect()
}

pub fn setting<'a>(settings: &'a [(String, String)], key: &str) -> &'a str {
    let values: Vec<&str> = settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(values.len(), 1, "{key}= should appear once, got {values:?}");
    values[0]
}
