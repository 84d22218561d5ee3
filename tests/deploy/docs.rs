//! The deployment kit's files (`docs/DEPLOY.md` and `deploy/`), and the `secchat` commands and
//! `SECCHAT_*` variables written in them.

use std::fs;
use std::path::{Path, PathBuf};

pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn read(relative: &str) -> String {
    let path = repo_file(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `docs/DEPLOY.md` and every file in `deploy/`, as (name, text).
pub fn documented_files() -> Vec<(String, String)> {
    let mut files = vec![("docs/DEPLOY.md".to_string(), read("docs/DEPLOY.md"))];
    let mut entries: Vec<PathBuf> = fs::read_dir(repo_file("deploy"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = format!("deploy/{}", path.file_name().unwrap().to_string_lossy());
        files.push((name.clone(), read(&name)));
    }
    files
}

/// Lines with shell continuations (`\` at the end) joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        match line.strip_suffix('\\') {
            Some(continued) => {
                current.push_str(continued);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// The arguments of every command that runs the binary: a word whose last path segment is
/// `secchat` followed by `--flag value` pairs (or `--flag=value`). Quotes and backticks around
/// words are dropped; a closing backtick ends the command.
pub fn secchat_invocations(text: &str) -> Vec<Vec<String>> {
    let mut invocations = Vec::new();
    for line in logical_lines(text) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (at, word) in words.iter().enumerate() {
            let program = word.trim_matches(|c| c == '`' || c == '"' || c == '\'' || c == '(');
            // `systemctl reload secchat`: the unit's name at the end of a code span.
            if program.rsplit('/').next() != Some("secchat") || word.ends_with('`') {
                continue;
            }
            let args = flags_after(&words[at + 1..]);
            if !args.is_empty() {
                invocations.push(args);
            }
        }
    }
    invocations
}

fn flags_after(words: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    let mut expecting_value = false;
    for word in words {
        // A backtick after the first character closes the Markdown code span: the command ends.
        let (word, closes) = match word.char_indices().skip(1).find(|&(_, c)| c == '`') {
            Some((at, _)) => (&word[..at], true),
            None => (*word, false),
        };
        let clean = word.trim_matches(|c| c == '`' || c == '"' || c == '\'' || c == ')');
        if expecting_value {
            args.push(clean.to_string());
            expecting_value = false;
        } else if clean.starts_with("--") {
            args.push(clean.to_string());
            expecting_value = !clean.contains('=');
        } else {
            break;
        }
        if closes {
            break;
        }
    }
    args
}

/// `SECCHAT_NAME=value` assignments (commented ones too) and bare `SECCHAT_NAME` mentions.
pub fn secchat_variables(text: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("SECCHAT_") {
        let tail = &rest[at..];
        let name_len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..name_len];
        let after = &tail[name_len..];
        let value = after.strip_prefix('=').map(|v| {
            v.split(|c: char| c.is_whitespace() || c == '`')
                .next()
                .unwrap_or_default()
                // Sentence punctuation after a value in prose.
                .trim_end_matches(['.', ',', ';', ')'])
                .to_string()
        });
        // `SECCHAT_*` names the pattern, not a variable.
        if name != "SECCHAT_" {
            found.push((name.to_string(), value));
        }
        rest = after;
    }
    found
}
