//! TLS for HTTPS and WSS, driven by the mio loop (rustls with the ring provider, no async
//! runtime).
//!
//! A connection's socket is a [`Transport`]: plain TCP, or TCP with TLS on top. Both implement
//! `Read`, `Write` and mio's `Source` with the same non-blocking contract as a bare
//! `mio::net::TcpStream`, so the HTTP and WebSocket code above does not know which one it has:
//!
//! - `read` returns `WouldBlock` only when the socket itself did and rustls holds no plaintext,
//!   so the edge-triggered loop may keep reading until `WouldBlock` exactly as it does on TCP;
//! - `write` hands plaintext to rustls and pushes records to the socket until it would block;
//!   `Ok(n)` means rustls has those bytes (not lost, not to be sent again);
//! - `flush` writes the records rustls still holds, `WouldBlock` while some remain; the loop
//!   registers WRITABLE interest while [`Transport::wants_write`] says so.
//!
//! A TLS connection starts by looking at its first byte: a TLS handshake record (0x16) starts
//! the handshake; anything else is plain HTTP sent to the TLS port, answered with
//! [`http::https_required`](crate::http::https_required) (a `400 Bad Request` that names the
//! `https://` URL), and then closed.
//!
//! One job per module:
//! - `transport`: [`Transport`], the byte stream a connection sees, plain or TLS;
//! - `stream`: [`TlsStream`], the first-byte check, the handshake and the session over a
//!   non-blocking socket, with memory bounded by [`TLS_BUFFER_LIMIT`];
//! - `certificates`: [`TlsAcceptor`], the certificate and key being served (TLS 1.2 and 1.3,
//!   ALPN `http/1.1`, no client certificates), read again on SIGHUP, with their fingerprint and
//!   the DNS names the `/ws` Host check accepts;
//! - `self_signed`: [`self_signed`] makes and keeps the certificate for `--tls-self-signed DIR`
//!   from this machine's names and addresses ([`machine_names`]).

mod certificates;
mod self_signed;
mod stream;
mod transport;

pub use certificates::{TlsAcceptor, fingerprint};
pub use self_signed::{SelfSigned, machine_host_names, machine_names, self_signed};
pub use stream::{TLS_BUFFER_LIMIT, TlsStream, write_records};
pub use transport::{PlainStream, Transport};

/// Certificate files made at test time, for the unit tests of the modules above.
#[cfg(test)]
mod test_files {
    use std::fs;
    use std::path::{Path, PathBuf};

    /// A fresh directory for one test, removed with its certificates and keys when the guard is
    /// dropped (keep it, not only a path joined to it, for as long as the files are used).
    pub fn temp_dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("secchat-tls-unit-{name}-"))
            .tempdir()
            .unwrap()
    }

    /// A self-signed certificate for `names` and its key, as `dir/cert.pem` and `dir/key.pem`.
    pub fn write_pair(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let made = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        fs::write(&cert, made.cert.pem()).unwrap();
        fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }
}
