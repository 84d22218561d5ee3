//! The web client's files: built into the binary by `build.rs`, or read once from `--public DIR`.
//!
//! Only names present in the table can ever be served, so the HTTP layer cannot reach a file
//! outside the web client whatever the request path says. Bodies are `&'static` and shared by
//! every connection.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// One servable file.
#[derive(Debug, Clone)]
pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// Strong validator, quoted as it appears in the `ETag` header.
    pub etag: String,
}

/// The table of servable files, keyed by decoded URL path (`/index.html`, `/js/app.js`).
#[derive(Debug, Default)]
pub struct Assets {
    files: HashMap<String, Asset>,
}

impl Assets {
    /// The files that were under `public/` when the binary was built.
    pub fn embedded() -> Assets {
        Assets::from_static(generated::EMBEDDED)
    }

    /// Builds a table from (URL path, contents) pairs; a path must start with `/`.
    pub fn from_static(entries: &[(&str, &'static [u8])]) -> Assets {
        let files = entries
            .iter()
            .map(|&(url_path, body)| (url_path.to_owned(), Asset::new(url_path, body)))
            .collect();
        Assets { files }
    }

    /// Reads every servable file under `dir` once, at start-up, and keeps it for the life of
    /// the process. Skips dotfiles and dot-directories, special files, names that are not
    /// UTF-8, symlinked directories (no loops) and symlinked files resolving outside `dir`.
    pub fn from_dir(dir: &Path) -> io::Result<Assets> {
        let root = dir.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        let mut files = HashMap::new();
        collect_dir(&root, &root, "", &mut files)?;
        Ok(Assets { files })
    }

    /// The file at a decoded URL path, exactly as stored (no normalisation happens here).
    pub fn get(&self, url_path: &str) -> Option<&Asset> {
        self.files.get(url_path)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The URL paths in the table, in no particular order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }
}

impl Asset {
    fn new(url_path: &str, body: &'static [u8]) -> Asset {
        Asset {
            body,
            content_type: content_type_for(url_path),
            etag: etag_for(body),
        }
    }
}

fn collect_dir(
    root: &Path,
    dir: &Path,
    url_prefix: &str,
    files: &mut HashMap<String, Asset>,
) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            log::warn!(
                "skipping a file name that is not UTF-8 in {}",
                dir.display()
            );
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let url_path = format!("{url_prefix}/{name}");
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            collect_dir(root, &path, &url_path, files)?;
        } else if file_type.is_file() || (file_type.is_symlink() && is_file_inside(root, &path)) {
            // Leaked on purpose: the table lives as long as the process and bodies are shared.
            let body: &'static [u8] = Box::leak(fs::read(&path)?.into_boxed_slice());
            files.insert(url_path.clone(), Asset::new(&url_path, body));
        } else if file_type.is_symlink() {
            log::warn!(
                "skipping {}: symlink to a directory or outside",
                path.display()
            );
        }
    }
    Ok(())
}

fn is_file_inside(root: &Path, link: &Path) -> bool {
    match link.canonicalize() {
        Ok(target) => target.starts_with(root) && target.is_file(),
        Err(_) => false,
    }
}

/// The `Content-Type` for a file, from its extension (case-insensitive).
pub fn content_type_for(url_path: &str) -> &'static str {
    let file_name = url_path.rsplit('/').next().unwrap_or(url_path);
    let extension = match file_name.rsplit_once('.') {
        Some((_, extension)) => extension.to_ascii_lowercase(),
        None => String::new(),
    };
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// A strong entity tag: body length and 64-bit FNV-1a of the body. Not a security boundary, only
/// a cache validator, so a fast non-cryptographic hash is enough.
pub fn etag_for(body: &[u8]) -> String {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = body.iter().fold(FNV_OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    format!("\"{:x}-{hash:016x}\"", body.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("secchat-assets-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write(path: &Path, contents: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent");
        }
        fs::write(path, contents).expect("write file");
    }

    fn sorted_paths(assets: &Assets) -> Vec<&str> {
        let mut paths: Vec<&str> = assets.paths().collect();
        paths.sort_unstable();
        paths
    }

    #[test]
    fn from_dir_reads_nested_files_and_skips_dotfiles() {
        let tmp = TempDir::new("nested");
        let public = tmp.0.join("public");
        write(&public.join("index.html"), "<h1>hi</h1>");
        write(&public.join("js/app.mjs"), "export {}");
        write(&public.join(".env"), "SECRET=1");
        write(&public.join(".git/config"), "[core]");
        write(&public.join("js/.hidden.js"), "x");

        let assets = Assets::from_dir(&public).expect("from_dir");
        assert_eq!(sorted_paths(&assets), ["/index.html", "/js/app.mjs"]);
        let index = assets.get("/index.html").expect("index");
        assert_eq!(index.body, b"<h1>hi</h1>");
        assert_eq!(index.content_type, "text/html; charset=utf-8");
        assert_eq!(
            assets.get("/js/app.mjs").map(|a| a.content_type),
            Some("text/javascript; charset=utf-8")
        );
        assert!(assets.get("/.env").is_none());
        assert!(assets.get("/js").is_none(), "directories are not assets");
    }

    #[cfg(unix)]
    #[test]
    fn from_dir_keeps_inside_symlinks_and_skips_escaping_ones() {
        use std::os::unix::fs::symlink;
        let tmp = TempDir::new("symlinks");
        let public = tmp.0.join("public");
        write(&public.join("real.txt"), "inside");
        write(&tmp.0.join("secret.txt"), "outside");
        write(&tmp.0.join("outside_dir/passwd"), "root:x");
        symlink(public.join("real.txt"), public.join("alias.txt")).expect("symlink");
        symlink(tmp.0.join("secret.txt"), public.join("leak.txt")).expect("symlink");
        symlink(tmp.0.join("outside_dir"), public.join("etc")).expect("symlink");
        symlink(&public, public.join("loop")).expect("symlink");
        symlink(tmp.0.join("missing"), public.join("dangling.txt")).expect("symlink");

        let assets = Assets::from_dir(&public).expect("from_dir");
        assert_eq!(sorted_paths(&assets), ["/alias.txt", "/real.txt"]);
        assert_eq!(
            assets.get("/alias.txt").map(|a| a.body),
            Some(&b"inside"[..])
        );
    }

    #[test]
    fn from_dir_fails_for_missing_dir() {
        let tmp = TempDir::new("missing");
        assert!(Assets::from_dir(&tmp.0.join("nope")).is_err());
        write(&tmp.0.join("file"), "x");
        assert!(Assets::from_dir(&tmp.0.join("file")).is_err());
    }

    #[test]
    fn embedded_matches_public_dir_at_build_time() {
        let public = Path::new(env!("CARGO_MANIFEST_DIR")).join("public");
        let embedded = Assets::embedded();
        match Assets::from_dir(&public) {
            Ok(from_disk) => {
                assert_eq!(sorted_paths(&embedded), sorted_paths(&from_disk));
                for path in from_disk.paths() {
                    let (a, b) = (embedded.get(path), from_disk.get(path));
                    assert_eq!(a.map(|a| a.body), b.map(|b| b.body), "{path}");
                    assert_eq!(a.map(|a| &a.etag), b.map(|b| &b.etag), "{path}");
                }
            }
            Err(_) => assert!(embedded.is_empty()),
        }
    }

    #[test]
    fn content_types_by_extension() {
        let table = [
            ("/index.html", "text/html; charset=utf-8"),
            ("/a/B.HTML", "text/html; charset=utf-8"),
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/vendor/openpgp.min.mjs", "text/javascript; charset=utf-8"),
            ("/style.css", "text/css; charset=utf-8"),
            ("/data.json", "application/json"),
            ("/app.js.map", "application/json"),
            ("/logo.svg", "image/svg+xml"),
            ("/logo.png", "image/png"),
            ("/favicon.ico", "image/x-icon"),
            ("/font.woff2", "font/woff2"),
            ("/robots.txt", "text/plain; charset=utf-8"),
            ("/site.webmanifest", "application/manifest+json"),
            ("/binary.bin", "application/octet-stream"),
            ("/Makefile", "application/octet-stream"),
            ("/dir.js/noext", "application/octet-stream"),
        ];
        for (path, expected) in table {
            assert_eq!(content_type_for(path), expected, "{path}");
        }
    }

    #[test]
    fn etag_is_quoted_and_changes_with_content() {
        let a = etag_for(b"hello");
        assert!(a.starts_with('"') && a.ends_with('"'), "{a}");
        assert!(!a.starts_with("W/"));
        assert_eq!(a, etag_for(b"hello"));
        assert_ne!(a, etag_for(b"hellp"));
        assert_ne!(etag_for(b""), etag_for(b"\0"));
    }
}
