//! Turning a request path into a key of the asset table.
//!
//! The table lookup is what keeps requests inside the web client (only names in it can be
//! served); this step only refuses paths that are malformed or try to climb, so that such
//! requests get a clear 400 instead of a 404 and never reach a lookup with odd bytes.

/// Why a path cannot name an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Malformed or an attempt to leave the web client's files: 400.
    Bad,
    /// Well-formed but names a directory: 404.
    Directory,
}

/// Decodes `path` (the request-target without query) into an asset-table key such as
/// `/index.html`.
///
/// `/` means `/index.html`. Refused as [`PathError::Bad`]: anything not starting with `/`
/// (absolute-form, asterisk-form), empty segments (`//`), `.` or `..` segments (also when
/// percent-encoded), invalid percent escapes, decoded bytes that are `/`, `\`, NUL or other
/// control characters, and non-UTF-8. A trailing `/` names a directory: [`PathError::Directory`].
pub fn resolve_path(path: &str) -> Result<String, PathError> {
    if path == "/" {
        return Ok("/index.html".to_owned());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::Bad);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let (last, parents) = segments.split_last().ok_or(PathError::Bad)?;
    let mut key = String::with_capacity(path.len());
    for raw_segment in parents {
        key.push('/');
        key.push_str(&decode_segment(raw_segment)?);
    }
    if last.is_empty() {
        return Err(PathError::Directory);
    }
    key.push('/');
    key.push_str(&decode_segment(last)?);
    Ok(key)
}

fn decode_segment(raw_segment: &str) -> Result<String, PathError> {
    let bytes = percent_decode(raw_segment.as_bytes())?;
    let segment = String::from_utf8(bytes).map_err(|_| PathError::Bad)?;
    let forbidden_char = |c: char| c == '/' || c == '\\' || c.is_control();
    if segment.is_empty() || segment == "." || segment == ".." || segment.contains(forbidden_char) {
        return Err(PathError::Bad);
    }
    Ok(segment)
}

fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut decoded = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let (high, low) = match tail {
                [high, low, ..] => (hex_value(*high)?, hex_value(*low)?),
                _ => return Err(PathError::Bad),
            };
            decoded.push(high << 4 | low);
            rest = tail.get(2..).unwrap_or_default();
        } else {
            decoded.push(byte);
            rest = tail;
        }
    }
    Ok(decoded)
}

fn hex_value(digit: u8) -> Result<u8, PathError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(PathError::Bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_plain_and_encoded_names() {
        let table = [
            ("/", "/index.html"),
            ("/index.html", "/index.html"),
            ("/js/app.mjs", "/js/app.mjs"),
            ("/my%20file.txt", "/my file.txt"),
            ("/%69ndex.html", "/index.html"),
            ("/caf%C3%A9.txt", "/café.txt"),
            ("/a+b", "/a+b"),
            ("/...", "/..."),
            ("/.well-known/x", "/.well-known/x"),
        ];
        for (path, key) in table {
            assert_eq!(resolve_path(path), Ok(key.to_owned()), "{path}");
        }
    }

    #[test]
    fn refuses_traversal_and_malformed_paths() {
        let table = [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/..",
            "/.",
            "/./index.html",
            "/%2e%2e/x",
            "/%2E%2E%2Fx",
            "/%2e./x",
            "/.%2E/x",
            "/a/..%2f..",
            "/a/%2f",
            "/%00",
            "/index.html%00.js",
            "/a\\b",
            "/a%5cb",
            "/..%5c..%5cwindows",
            "//etc/passwd",
            "/a//b",
            "/%0a",
            "/%",
            "/%4",
            "/%zz",
            "/%ff",
            "/%c0%ae%c0%ae/x",
            "http://evil/x",
            "*",
            "",
            "index.html",
        ];
        for path in table {
            assert_eq!(resolve_path(path), Err(PathError::Bad), "{path:?}");
        }
    }

    #[test]
    fn trailing_slash_is_a_directory() {
        assert_eq!(resolve_path("/js/"), Err(PathError::Directory));
        assert_eq!(resolve_path("/a/b/"), Err(PathError::Directory));
        // Malformed parents are still reported as malformed.
        assert_eq!(resolve_path("/../"), Err(PathError::Bad));
    }
}
