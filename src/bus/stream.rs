//! The link's socket: plain TCP or rustls's client side over it, both non-blocking, both read
//! until `WouldBlock` and written until the socket refuses (see `tls::stream` for the server
//! side of the same contract).

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::tls::write_records;

/// The CA bundle used for `rediss://` when no CA file is given (Debian's `ca-certificates`).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Plaintext rustls holds before it is encrypted and written: one full record. The rest waits
/// in the link's own output buffer, which has its own bound.
const TLS_BUFFER_LIMIT: usize = 16 * 1024;

/// A rustls client configuration trusting the certificates in `ca_file` (PEM), or the system
/// bundle ([`SYSTEM_CA_BUNDLE`]) when `None`. TLS 1.2 and 1.3, ring, no client certificate.
/// The error names the file and what was wrong with it.
pub fn tls_client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
    let pem = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        // A bundle may hold certificates rustls cannot use as anchors; the others still count.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("{}: no usable CA certificate", path.display()));
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One connection's bytes, plain or TLS. `tcp` is registered with mio by the link.
pub(super) struct Stream {
    pub tcp: TcpStream,
    tls: Option<Box<ClientConnection>>,
}

/// What one read pass found.
pub(super) enum ReadEnd {
    /// The socket would block: every byte available was read.
    Drained,
    /// The budget ran out first: more may be waiting, and no new readiness event will say so.
    Budget,
    /// The peer closed the connection.
    Closed,
}

impl Stream {
    pub fn plain(tcp: TcpStream) -> Stream {
        Stream { tcp, tls: None }
    }

    /// Starts the TLS handshake over the now connected socket; the ClientHello goes out with
    /// the next [`Stream::write`].
    pub fn start_tls(
        &mut self,
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Result<(), rustls::Error> {
        let mut conn = ClientConnection::new(config, server_name)?;
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        self.tls = Some(Box::new(conn));
        Ok(())
    }

    /// Appends what is available to `into`, at most `budget` bytes.
    pub fn read(&mut self, into: &mut Vec<u8>, budget: usize) -> io::Result<ReadEnd> {
        let mut buf = [0u8; 16 * 1024];
        let mut taken = 0;
        while taken < budget {
            let want = (budget - taken).min(buf.len());
            let chunk = buf.get_mut(..want).unwrap_or_default();
            let n = match &mut self.tls {
                None => match self.tcp.read(chunk) {
                    Ok(0) => return Ok(ReadEnd::Closed),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(ReadEnd::Drained);
                    }
                    Err(e) => return Err(e),
                },
                Some(conn) => match read_tls(&mut self.tcp, conn, chunk)? {
                    TlsRead::Plaintext(n) => n,
                    TlsRead::WouldBlock => return Ok(ReadEnd::Drained),
                    TlsRead::Closed => return Ok(ReadEnd::Closed),
                },
            };
            into.extend_from_slice(chunk.get(..n).unwrap_or_default());
            taken += n;
        }
        Ok(ReadEnd::Budget)
    }

    /// Writes from `out` what the socket (and rustls's bounded buffer) takes; returns how many
    /// bytes of `out` are gone. Handshake records rustls has queued go out too.
    pub fn write(&mut self, out: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => {
                let mut written = 0;
                while let Some(rest) = out.get(written..).filter(|r| !r.is_empty()) {
                    match self.tcp.write(rest) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => written += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(written)
            }
            Some(conn) => {
                let mut written = 0;
                loop {
                    let accepted = match out.get(written..).filter(|r| !r.is_empty()) {
                        Some(rest) => conn.writer().write(rest)?,
                        None => 0,
                    };
                    written += accepted;
                    let drained = write_records(&mut self.tcp, conn)?;
                    // Nothing accepted with nothing left to write: rustls holds plaintext until
                    // its handshake is over; the handshake's replies make room.
                    if !drained || written >= out.len() || accepted == 0 {
                        return Ok(written);
                    }
                }
            }
        }
    }

    /// Whether bytes the link counts as written still wait inside rustls.
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|conn| conn.wants_write())
    }
}

enum TlsRead {
    Plaintext(usize),
    WouldBlock,
    Closed,
}

/// Plaintext rustls holds, else records from the socket until one yields plaintext, the peer
/// closes or the socket would block. Handshake replies are written on the way.
fn read_tls(
    tcp: &mut TcpStream,
    conn: &mut ClientConnection,
    buf: &mut [u8],
) -> io::Result<TlsRead> {
    loop {
        match conn.reader().read(buf) {
            Ok(0) => return Ok(TlsRead::Closed),
            Ok(n) => return Ok(TlsRead::Plaintext(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // Closed without close_notify: RESP frames itself, so a cut reply is noticed as
            // one that never completes.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(TlsRead::Closed),
            Err(e) => return Err(e),
        }
        let received = match conn.read_tls(tcp) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                write_records(tcp, conn)?;
                return Ok(TlsRead::WouldBlock);
            }
            Err(e) => return Err(e),
        };
        if let Err(error) = conn.process_new_packets() {
            // The alert rustls queued tells Redis why; sending it is best effort.
            let _ = write_records(tcp, conn);
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
        write_records(tcp, conn)?;
        if received == 0 {
            return match conn.reader().read(buf) {
                Ok(n) if n > 0 => Ok(TlsRead::Plaintext(n)),
                _ => Ok(TlsRead::Closed),
            };
        }
    }
}
