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
//! the handshake; anything else is plain HTTP sent to the TLS port, answered with a short
//! `400 Bad Request` that says to use `https://`, and then closed.
//!
//! Memory per TLS connection is bounded: rustls's incoming buffer by rustls itself (one record,
//! at most 64 KiB while joining a handshake message), its outgoing record buffer by
//! [`TLS_BUFFER_LIMIT`] (set in [`TlsStream::start_handshake`]); the handshake's time is bounded
//! by the connection's request-head deadline, which runs from the moment of `accept`.
//!
//! [`TlsAcceptor`] holds the server configuration (TLS 1.2 and 1.3, ALPN `http/1.1`, no client
//! certificates) and re-reads the certificate and key on SIGHUP; [`self_signed`] makes and keeps
//! the certificate for `--tls-self-signed DIR`.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// Bytes of outgoing TLS records (and of plaintext written before the handshake ends) that rustls
/// may hold per connection: one full record. Anything more waits in the WebSocket's own write
/// buffer, which has its own ceiling, so a slow reader costs at most that ceiling plus this.
pub const TLS_BUFFER_LIMIT: usize = 16 * 1024;

/// The first byte of a TLS record that carries a handshake message (every ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How much of a plain-HTTP request we read to find its `Host` for the refusal.
const REFUSAL_READ: usize = 4096;
/// How much a refused plain-HTTP client may send before we stop waiting for it to close.
const REFUSED_DRAIN_LIMIT: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Transport: what a connection reads from and writes to
// ---------------------------------------------------------------------------------------------

/// A connection's byte stream: plain TCP, or TLS over TCP.
pub enum Transport {
    Plain(PlainStream),
    Tls(Box<TlsStream>),
}

/// Plain TCP that skips the `read` system call it knows would fail.
///
/// Readiness is edge-triggered: the loop reads until `WouldBlock`, which costs one failing
/// `recv` per readiness event (a third of all `recv`s under load). A read that returned less
/// than it asked for emptied the socket's receive queue, and any byte arriving later raises a
/// new readiness event; so until that event ([`Transport::readable_again`]) a read can answer
/// `WouldBlock` without asking the kernel.
pub struct PlainStream {
    tcp: TcpStream,
    drained: bool,
}

/// TLS over one TCP connection, from the first byte on.
pub struct TlsStream {
    tcp: TcpStream,
    phase: Phase,
}

enum Phase {
    /// Nothing received yet: the first byte decides between TLS and a plain-HTTP refusal.
    Sniffing(Arc<ServerConfig>),
    /// The peer spoke plain HTTP and got its 400; we wait for it to close.
    Refused,
    /// The handshake or the encrypted session.
    Tls(Box<ServerConnection>),
}

impl Transport {
    pub fn plain(tcp: TcpStream) -> Transport {
        Transport::Plain(PlainStream {
            tcp,
            drained: false,
        })
    }

    /// The loop saw a readiness event for this socket: bytes may have arrived.
    pub fn readable_again(&mut self) {
        if let Transport::Plain(plain) = self {
            plain.drained = false;
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Whether TLS records are waiting for the socket to become writable.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => match &tls.phase {
                Phase::Tls(conn) => conn.wants_write(),
                Phase::Sniffing(_) | Phase::Refused => false,
            },
        }
    }

    /// Ends a TLS session politely before the connection is dropped: queues `close_notify` and
    /// writes what the socket takes without waiting. Nothing to do for plain TCP.
    pub fn finish(&mut self) {
        if let Transport::Tls(tls) = self
            && let Phase::Tls(conn) = &mut tls.phase
        {
            conn.send_close_notify();
            let _ = write_records(&mut tls.tcp, conn);
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(plain) => &mut plain.tcp,
            Transport::Tls(tls) => &mut tls.tcp,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(plain) => plain.read(buf),
            Transport::Tls(tls) => tls.read(buf),
        }
    }
}

impl Read for PlainStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.tcp.read(buf)?;
        // Zero is the end of the stream: never hide it behind WouldBlock.
        self.drained = n > 0 && n < buf.len();
        Ok(n)
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(plain) => plain.tcp.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(plain) => plain.tcp.flush(),
            Transport::Tls(tls) => tls.flush(),
        }
    }
}

impl mio::event::Source for Transport {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp_mut().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp_mut().deregister(registry)
    }
}

impl TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Phase::Sniffing(config) = &self.phase {
            let config = Arc::clone(config);
            self.sniff(config)?;
        }
        match &mut self.phase {
            // Not reached: `sniff` either left this phase or returned its error (WouldBlock).
            Phase::Sniffing(_) => Err(io::ErrorKind::WouldBlock.into()),
            Phase::Refused => drain_refused(&mut self.tcp),
            Phase::Tls(conn) => read_plaintext(&mut self.tcp, conn, buf),
        }
    }

    /// Looks at the first byte without consuming it and picks the phase that handles it.
    fn sniff(&mut self, config: Arc<ServerConfig>) -> io::Result<()> {
        let mut first = [0u8; 1];
        let peeked = loop {
            match self.tcp.peek(&mut first) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if peeked == 0 {
            // Closed before saying anything: the Refused phase reports the end of the stream.
            self.phase = Phase::Refused;
            return Ok(());
        }
        if first[0] == TLS_HANDSHAKE_RECORD {
            self.start_handshake(config)
        } else {
            log::debug!("plain HTTP on the TLS port: answered 400");
            refuse_plain_http(&mut self.tcp);
            self.phase = Phase::Refused;
            Ok(())
        }
    }

    fn start_handshake(&mut self, config: Arc<ServerConfig>) -> io::Result<()> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        self.phase = Phase::Tls(Box::new(conn));
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.phase {
            Phase::Tls(conn) => write_plaintext(&mut self.tcp, conn, buf),
            // Only a deadline's error response (408) is written before a session exists, and it
            // can reach no one: refusing it makes the caller drop the connection.
            Phase::Sniffing(_) | Phase::Refused => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.phase {
            Phase::Tls(conn) => {
                if write_records(&mut self.tcp, conn)? {
                    Ok(())
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                }
            }
            Phase::Sniffing(_) | Phase::Refused => Ok(()),
        }
    }
}

/// Reads plaintext: rustls's buffered plaintext first, then TLS records from the socket until a
/// record yields plaintext, the peer closes, or the socket would block. Handshake replies go out
/// on the way.
fn read_plaintext(
    tcp: &mut TcpStream,
    conn: &mut ServerConnection,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        match conn.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // The peer closed TCP without close_notify. HTTP and WebSocket frame their own data,
            // so a truncation cannot go unnoticed: report a plain end of stream, as TCP would.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        let received = match conn.read_tls(tcp) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Before waiting for the peer, make sure it has everything it is waiting for.
                write_records(tcp, conn)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if let Err(error) = conn.process_new_packets() {
            // rustls queued an alert that tells the peer why; sending it is best effort.
            let _ = write_records(tcp, conn);
            log::debug!("TLS failed: {error}");
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
        write_records(tcp, conn)?;
        if received == 0 {
            // End of stream: hand over what the last records held, then the end itself.
            return match conn.reader().read(buf) {
                Ok(n) => Ok(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    Ok(0)
                }
                Err(e) => Err(e),
            };
        }
    }
}

/// Encrypts as much of `buf` as rustls's buffer takes and pushes records to the socket.
fn write_plaintext(
    tcp: &mut TcpStream,
    conn: &mut ServerConnection,
    buf: &[u8],
) -> io::Result<usize> {
    if conn.is_handshaking() {
        // Responses only follow requests, which only arrive after the handshake: this is a
        // deadline's error response for a handshake that never finished.
        return Err(io::ErrorKind::NotConnected.into());
    }
    if buf.is_empty() {
        return Ok(0);
    }
    // Two rounds: if rustls's buffer was full, the first round's socket write made room.
    for _ in 0..2 {
        let accepted = conn.writer().write(buf)?;
        let drained = write_records(tcp, conn)?;
        if accepted > 0 {
            return Ok(accepted);
        }
        if !drained {
            return Err(io::ErrorKind::WouldBlock.into());
        }
    }
    Err(io::ErrorKind::WriteZero.into())
}

/// Writes queued TLS records until none are left (`Ok(true)`) or the socket would block
/// (`Ok(false)`).
fn write_records(tcp: &mut TcpStream, conn: &mut ServerConnection) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(tcp) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP on the TLS port
// ---------------------------------------------------------------------------------------------

/// Answers a plain-HTTP request with a 400 that names the `https://` URL, and half-closes.
///
/// The request is read (not only peeked) so that closing the socket later does not turn into a
/// reset that could destroy the answer before the client reads it.
fn refuse_plain_http(tcp: &mut TcpStream) {
    let mut head = [0u8; REFUSAL_READ];
    let received = tcp.read(&mut head).unwrap_or(0);
    let host = requested_host(head.get(..received).unwrap_or_default());
    let response = plain_http_refusal(host.as_deref());
    // A fresh socket's send buffer is empty, so this small answer fits in one write; if it does
    // not, the client gets a truncated answer and the connection still closes.
    let _ = tcp.write(response.as_bytes());
    let _ = tcp.shutdown(Shutdown::Write);
}

/// Discards what a refused client still sends until it closes (`Ok(0)`) or would block.
fn drain_refused(tcp: &mut TcpStream) -> io::Result<usize> {
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    while drained < REFUSED_DRAIN_LIMIT {
        match tcp.read(&mut sink) {
            Ok(0) => return Ok(0),
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::ErrorKind::ConnectionAborted.into())
}

/// The `Host` header of a plain-HTTP request head (or its start), when it is a plausible host:
/// the value is echoed in the answer, so anything unusual is left out.
fn requested_host(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok().or_else(|| {
        // A cut in the middle of a character: the valid prefix still holds the early headers.
        let valid = std::str::from_utf8(head).err()?.valid_up_to();
        std::str::from_utf8(head.get(..valid)?).ok()
    })?;
    let value = text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("host")
            .then(|| value.trim())
    })?;
    let plausible = !value.is_empty()
        && value.len() <= 261
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plausible.then(|| value.to_ascii_lowercase())
}

/// The complete `400 Bad Request` for plain HTTP on the TLS port.
fn plain_http_refusal(host: Option<&str>) -> String {
    let body = match host {
        Some(host) => format!("This port speaks HTTPS: use https://{host}/\n"),
        None => "This port speaks HTTPS: use https://HOST/ (this server's name or address)\n"
            .to_string(),
    };
    format!(
        "HTTP/1.1 400 Bad Request\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Cache-Control: no-store\r\n\
         Connection: close\r\n\
         Content-Security-Policy: {}\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n\
         \r\n\
         {body}",
        body.len(),
        crate::http::CONTENT_SECURITY_POLICY,
    )
}

// ---------------------------------------------------------------------------------------------
// Certificates and the server configuration
// ---------------------------------------------------------------------------------------------

/// The TLS configuration new connections get; replaced as a whole on [`TlsAcceptor::reload`].
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    cert_path: PathBuf,
    key_path: PathBuf,
    fingerprint: String,
    /// The DNS names (wildcards included) of the end-entity certificate's subjectAltName.
    dns_names: Vec<String>,
}

impl TlsAcceptor {
    /// Reads a PEM certificate chain (end-entity first) and its PEM private key (PKCS#8, PKCS#1
    /// or SEC1; RSA, ECDSA or Ed25519). Errors name the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
        let (config, fingerprint, dns_names) = server_config(cert, key)?;
        Ok(TlsAcceptor {
            config: Arc::new(config),
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            fingerprint,
            dns_names,
        })
    }

    /// Re-reads both files (SIGHUP after a renewal). On error the old configuration stays in
    /// use. Connections that exist keep the configuration they started with; new ones get the
    /// new one.
    pub fn reload(&mut self) -> Result<(), String> {
        let (config, fingerprint, dns_names) = server_config(&self.cert_path, &self.key_path)?;
        self.config = Arc::new(config);
        self.fingerprint = fingerprint;
        self.dns_names = dns_names;
        Ok(())
    }

    /// Wraps a freshly accepted socket; nothing is read until the loop says it is readable.
    pub fn accept(&self, tcp: TcpStream) -> Transport {
        Transport::Tls(Box::new(TlsStream {
            tcp,
            phase: Phase::Sniffing(Arc::clone(&self.config)),
        }))
    }

    /// The SHA-256 fingerprint of the certificate being served, as browsers show it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The DNS names the certificate being served is for (its IP addresses are left out: the
    /// Host check accepts every IP literal anyway).
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }
}

/// The DNS names in the subjectAltName of `cert`, lower-cased; none when it cannot be parsed
/// (rustls then refuses it anyway, or the Host check falls back to `--public-host`).
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(parsed) => parsed
            .valid_dns_names()
            .map(str::to_ascii_lowercase)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The server configuration for a certificate chain and key, with the end-entity certificate's
/// fingerprint and DNS names.
fn server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(ServerConfig, String, Vec<String>), String> {
    let chain = read_certificates(cert_path)?;
    let key = read_private_key(key_path)?;
    let fingerprint = chain
        .first()
        .map(|cert| fingerprint(cert.as_ref()))
        .unwrap_or_default();
    let names = chain.first().map(dns_names).unwrap_or_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| describe_key_error(&e, cert_path, key_path))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, fingerprint, names))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = fs::read(path).map_err(|e| format!("certificate file {shown}: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate file {shown}: unreadable PEM: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "certificate file {shown}: no certificate in it (expected PEM \
             -----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(chain)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let shown = path.display();
    let pem = fs::read(path).map_err(|e| format!("key file {shown}: {e}"))?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if CertificateDer::from_pem_slice(&pem).is_ok() => Err(
            format!("key file {shown}: holds a certificate, not a private key (swapped files?)"),
        ),
        Err(pem::Error::NoItemsFound) => Err(format!(
            "key file {shown}: no private key in it (expected PEM -----BEGIN PRIVATE KEY-----, \
             RSA PRIVATE KEY or EC PRIVATE KEY)"
        )),
        Err(e) => Err(format!("key file {shown}: unreadable PEM: {e}")),
    }
}

fn describe_key_error(error: &rustls::Error, cert_path: &Path, key_path: &Path) -> String {
    match error {
        rustls::Error::InconsistentKeys(_) => format!(
            "key file {} does not match the certificate in {}",
            key_path.display(),
            cert_path.display()
        ),
        rustls::Error::InvalidCertificate(_) => {
            format!(
                "certificate file {}: not a usable X.509 certificate ({error})",
                cert_path.display()
            )
        }
        rustls::Error::General(_) => format!(
            "key file {}: unsupported private key ({error}); use RSA, ECDSA P-256/P-384 or Ed25519",
            key_path.display()
        ),
        other => format!(
            "certificate {} with key {}: {other}",
            cert_path.display(),
            key_path.display()
        ),
    }
}

/// SHA-256 of a DER certificate as colon-separated upper-case hex, the way browsers show it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

// ---------------------------------------------------------------------------------------------
// --tls-self-signed DIR
// ---------------------------------------------------------------------------------------------

/// The certificate `--tls-self-signed` serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfSigned {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 of the certificate, colon-separated upper-case hex.
    pub fingerprint: String,
    /// Whether this start made the certificate (false: an earlier one is reused).
    pub created: bool,
    /// The names and addresses a new certificate was made for (empty when reused).
    pub names: Vec<String>,
}

/// Valid for about ten years: a LAN server's users check the fingerprint once, so renewing it
/// would only make them check again.
const SELF_SIGNED_YEARS: i32 = 10;

/// Makes `DIR/cert.pem` and `DIR/key.pem` (DIR 0700, key 0600) for this machine's names and
/// addresses on the first start; later starts reuse them, so the fingerprint users checked
/// stays the same.
pub fn self_signed(dir: &Path) -> Result<SelfSigned, String> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let names = match (cert.exists(), key.exists()) {
        (true, true) => Vec::new(),
        (false, false) => create_self_signed(dir, &cert, &key)?,
        (has_cert, _) => {
            let (present, missing) = if has_cert {
                (&cert, &key)
            } else {
                (&key, &cert)
            };
            return Err(format!(
                "{} exists but {} does not: remove it to make a new certificate",
                present.display(),
                missing.display()
            ));
        }
    };
    let chain = read_certificates(&cert)?;
    let fingerprint = chain
        .first()
        .map(|der| fingerprint(der.as_ref()))
        .unwrap_or_default();
    Ok(SelfSigned {
        cert,
        key,
        fingerprint,
        created: !names.is_empty(),
        names,
    })
}

fn create_self_signed(dir: &Path, cert: &Path, key: &Path) -> Result<Vec<String>, String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let names = machine_names();
    let failed = |e: rcgen::Error| format!("cannot make a self-signed certificate: {e}");
    let mut params = rcgen::CertificateParams::new(names.clone()).map_err(failed)?;
    let mut subject = rcgen::DistinguishedName::new();
    let host = names.first().map_or("localhost", String::as_str);
    subject.push(rcgen::DnType::CommonName, format!("SecChat on {host}"));
    params.distinguished_name = subject;
    // A day back, so a browser whose clock is a little behind still accepts it.
    let (year, month, day) = civil_date(unix_days_now() - 1);
    params.not_before = rcgen::date_time_ymd(year, month, day);
    params.not_after = rcgen::date_time_ymd(year + SELF_SIGNED_YEARS, month, day.min(28));
    let key_pair = rcgen::KeyPair::generate().map_err(failed)?;
    let certificate = params.self_signed(&key_pair).map_err(failed)?;
    // The key first: a crash in between leaves a key without a certificate, which the next
    // start reports instead of silently serving a certificate without its key.
    write_file_atomically(key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_file_atomically(cert, certificate.pem().as_bytes(), 0o644)?;
    Ok(names)
}

fn write_file_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    let temporary = path.with_extension("pem.tmp");
    let failed = |e: io::Error| format!("cannot write {}: {e}", path.display());
    // A leftover from a crash may have other permissions; the mode applies only on creation.
    let _ = fs::remove_file(&temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(failed)?;
    file.write_all(contents).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    fs::rename(&temporary, path).map_err(failed)
}

/// The names and addresses browsers may use to reach this machine: its host name (and
/// `NAME.local` for mDNS, as on a Raspberry Pi), `localhost`, the loopback addresses and every
/// interface address except link-local ones.
pub fn machine_names() -> Vec<String> {
    let mut names = Vec::new();
    if let Some(host) = host_name() {
        if !host.contains('.') {
            names.push(format!("{host}.local"));
        }
        names.insert(0, host);
    }
    names.push("localhost".to_string());
    names.push(Ipv4Addr::LOCALHOST.to_string());
    names.push(Ipv6Addr::LOCALHOST.to_string());
    names.extend(interface_addresses().iter().map(IpAddr::to_string));
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.clone()));
    names
}

fn host_name() -> Option<String> {
    let from_file = fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| is_dns_name(name));
    from_file.or_else(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
        let status = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if status != 0 {
            return None;
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = std::str::from_utf8(buf.get(..end)?)
            .ok()?
            .to_ascii_lowercase();
        is_dns_name(&name).then_some(name)
    })
}

/// Letters, digits and inner hyphens in dot-separated labels of at most 63 characters.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The machine's interface addresses that other machines could use.
fn interface_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that we only read and then free once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut entry = list;
        while let Some(ifaddr) = entry.as_ref() {
            if let Some(ip) = socket_address(ifaddr.ifa_addr) {
                found.push(ip);
            }
            entry = ifaddr.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.retain(is_reachable_address);
    found
}

/// The IP address in a `sockaddr` from getifaddrs, if it is IPv4 or IPv6.
///
/// # Safety
/// `addr` is null or points to a valid `sockaddr` whose real size matches its family.
unsafe fn socket_address(addr: *const libc::sockaddr) -> Option<IpAddr> {
    // SAFETY: the caller guarantees `addr` is null or valid for its family's struct.
    unsafe {
        let family = i32::from(addr.as_ref()?.sa_family);
        match family {
            libc::AF_INET => {
                let v4 = &*addr.cast::<libc::sockaddr_in>();
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let v6 = &*addr.cast::<libc::sockaddr_in6>();
                Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// Not loopback (named separately), unspecified, multicast or link-local (a browser cannot put
/// an IPv6 zone in a URL, and 169.254/16 is not a place anyone serves from).
fn is_reachable_address(ip: &IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

fn unix_days_now() -> i64 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(seconds / 86_400).unwrap_or(0)
}

/// (year, month 1–12, day 1–31) of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_date(days_since_epoch: i64) -> (i32, u8, u8) {
    let z = days_since_epoch + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).unwrap_or(i32::MAX),
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::ClientConnection;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("secchat-tls-unit-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_pair(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let made = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        fs::write(&cert, made.cert.pem()).unwrap();
        fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn loads_a_matching_pair_and_reports_its_fingerprint() {
        let dir = temp_dir("good");
        let (cert, key) = write_pair(&dir, &["localhost"]);
        let acceptor = TlsAcceptor::load(&cert, &key).unwrap();
        let der = CertificateDer::from_pem_file(&cert).unwrap();
        assert_eq!(acceptor.fingerprint(), fingerprint(der.as_ref()));
        assert_eq!(acceptor.fingerprint().len(), 32 * 3 - 1);
    }

    #[test]
    fn load_errors_name_the_file_and_the_problem() {
        let dir = temp_dir("bad");
        let (cert, key) = write_pair(&dir, &["localhost"]);
        let other = temp_dir("bad-other");
        let (_, other_key) = write_pair(&other, &["localhost"]);
        let missing = dir.join("missing.pem");
        let empty = dir.join("empty.pem");
        fs::write(&empty, "not PEM at all\n").unwrap();
        let cases: [(&Path, &Path, &[&str]); 6] = [
            (&missing, &key, &["missing.pem", "certificate file"]),
            (&cert, &missing, &["missing.pem", "key file"]),
            (&empty, &key, &["empty.pem", "no certificate"]),
            (&cert, &empty, &["empty.pem", "no private key"]),
            (&cert, &cert, &["cert.pem", "swapped"]),
            (&cert, &other_key, &["does not match", "cert.pem"]),
        ];
        for (cert_path, key_path, needles) in cases {
            let error = TlsAcceptor::load(cert_path, key_path)
                .err()
                .unwrap_or_else(|| panic!("{cert_path:?} + {key_path:?} loaded"));
            for needle in needles {
                assert!(error.contains(needle), "{error:?} lacks {needle:?}");
            }
            assert!(!error.contains('\n'), "{error:?}");
        }
    }

    #[test]
    fn the_certificate_s_dns_names_are_known_and_follow_a_reload() {
        let dir = temp_dir("names");
        let (cert, key) = write_pair(&dir, &["Chat.Example.org", "*.pi.example", "192.0.2.1"]);
        let mut acceptor = TlsAcceptor::load(&cert, &key).unwrap();
        assert_eq!(acceptor.dns_names(), ["chat.example.org", "*.pi.example"]);
        write_pair(&dir, &["other.example"]);
        acceptor.reload().unwrap();
        assert_eq!(acceptor.dns_names(), ["other.example"]);
    }

    #[test]
    fn reload_keeps_the_old_configuration_on_error() {
        let dir = temp_dir("reload");
        let (cert, key) = write_pair(&dir, &["localhost"]);
        let mut acceptor = TlsAcceptor::load(&cert, &key).unwrap();
        let before = acceptor.fingerprint().to_string();
        fs::write(&key, "garbage").unwrap();
        assert!(acceptor.reload().is_err());
        assert_eq!(acceptor.fingerprint(), before);
        write_pair(&dir, &["localhost"]);
        acceptor.reload().unwrap();
        assert_ne!(acceptor.fingerprint(), before);
    }

    /// A server [`Transport`] and a rustls client over a real loopback connection, both
    /// non-blocking, with the handshake done.
    fn connected_pair() -> (Transport, ClientConnection, std::net::TcpStream) {
        let dir = temp_dir(&format!("pair-{:?}", std::thread::current().id()));
        let (cert, key) = write_pair(&dir, &["localhost"]);
        let acceptor = TlsAcceptor::load(&cert, &key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&cert).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(Arc::new(config), name).unwrap();
        client.set_buffer_limit(None);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client_tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_tcp, _) = listener.accept().unwrap();
        server_tcp.set_nonblocking(true).unwrap();
        client_tcp.set_nonblocking(true).unwrap();
        let mut server = acceptor.accept(TcpStream::from_std(server_tcp));
        let mut scratch = [0u8; 1024];
        for _ in 0..1000 {
            if !client.is_handshaking() && !server.is_handshaking() {
                return (server, client, client_tcp);
            }
            pump_client(&mut client, &mut client_tcp, &mut Vec::new());
            match server.read(&mut scratch) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => panic!("server read during the handshake: {other:?}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("no handshake");
    }

    impl Transport {
        fn is_handshaking(&self) -> bool {
            match self {
                Transport::Tls(tls) => match &tls.phase {
                    Phase::Tls(conn) => conn.is_handshaking(),
                    _ => true,
                },
                Transport::Plain(_) => false,
            }
        }
    }

    /// Moves the client's records to the socket, and the socket's records through the client
    /// into `plaintext`.
    fn pump_client(
        client: &mut ClientConnection,
        tcp: &mut std::net::TcpStream,
        plaintext: &mut Vec<u8>,
    ) {
        while client.wants_write() {
            match client.write_tls(tcp) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                other => {
                    other.unwrap();
                }
            }
        }
        loop {
            match client.read_tls(tcp) {
                Ok(0) => break,
                Ok(_) => {
                    client.process_new_packets().unwrap();
                    let _ = client.reader().read_to_end(plaintext);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("client read: {e}"),
            }
        }
    }

    #[test]
    fn one_read_pass_returns_every_record_that_arrived() {
        let (mut server, mut client, mut client_tcp) = connected_pair();
        // Many records at once, then one readiness edge: reading until WouldBlock must get all,
        // also when a read from the socket ends in the middle of a record.
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in sent.chunks(16_000) {
            client.writer().write_all(chunk).unwrap();
        }
        client_tcp.set_nonblocking(false).unwrap();
        while client.wants_write() {
            client.write_tls(&mut client_tcp).unwrap();
        }
        client_tcp.set_nonblocking(true).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match server.read(&mut buf) {
                Ok(0) => panic!("unexpected end"),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(received.len(), sent.len());
        assert!(received == sent);
    }

    #[test]
    fn written_plaintext_waits_in_rustls_until_the_socket_takes_it() {
        let (mut server, mut client, mut client_tcp) = connected_pair();
        let sent: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        let mut offset = 0;
        // The client does not read: the socket fills, then rustls's bounded buffer.
        loop {
            match server.write(&sent[offset..]) {
                Ok(n) => offset += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(offset < sent.len(), "16 MiB fitted in the buffers");
        }
        assert!(server.wants_write());
        assert_eq!(
            server.flush().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // Now the client reads; the server resumes as the loop would on writable events.
        let mut received = Vec::new();
        while received.len() < sent.len() {
            pump_client(&mut client, &mut client_tcp, &mut received);
            if offset < sent.len() {
                match server.write(&sent[offset..]) {
                    Ok(n) => offset += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            } else {
                match server.flush() {
                    Ok(()) => assert!(!server.wants_write()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert!(received == sent, "the stream was altered");
    }

    #[test]
    fn host_is_taken_from_a_plain_request_only_when_plausible() {
        let request = b"GET / HTTP/1.1\r\nUser-Agent: x\r\nhOsT:  Pi.Local:8443 \r\n\r\n";
        assert_eq!(requested_host(request).as_deref(), Some("pi.local:8443"));
        let v6 = b"GET / HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n";
        assert_eq!(requested_host(v6).as_deref(), Some("[::1]:8443"));
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: <script>\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"Host: evil\r\n",
            b"",
        ] {
            assert_eq!(
                requested_host(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn refusal_is_a_complete_400_with_the_https_url() {
        let response = plain_http_refusal(Some("chat.example:8443"));
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert_eq!(
            body,
            "This port speaks HTTPS: use https://chat.example:8443/\n"
        );
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains("\r\nX-Content-Type-Options: nosniff"));
        assert!(head.contains("frame-ancestors 'none'"));
        assert!(plain_http_refusal(None).contains("use https://HOST/"));
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(20_453), (2025, 12, 31));
        assert_eq!(civil_date(20_454), (2026, 1, 1));
    }

    #[test]
    fn dns_names_are_checked() {
        assert!(is_dns_name("raspberrypi"));
        assert!(is_dns_name("chat-1.example.org"));
        for bad in ["", "-pi", "pi-", "a..b", "pi_1", "π", &"a".repeat(64)] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn machine_names_include_loopback_and_no_link_local() {
        let names = machine_names();
        for expected in ["localhost", "127.0.0.1", "::1"] {
            assert!(names.iter().any(|n| n == expected), "{names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("fe80") || n.starts_with("169.254."))
        );
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    #[test]
    fn self_signed_is_made_once_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("self-signed").join("tls");
        let first = self_signed(&dir).unwrap();
        assert!(first.created);
        assert!(first.names.iter().any(|n| n == "localhost"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&first.key), 0o600);
        TlsAcceptor::load(&first.cert, &first.key).unwrap();
        let second = self_signed(&dir).unwrap();
        assert!(!second.created);
        assert_eq!(second.fingerprint, first.fingerprint);
        fs::remove_file(&second.cert).unwrap();
        let error = self_signed(&dir).unwrap_err();
        assert!(
            error.contains("key.pem") && error.contains("cert.pem"),
            "{error}"
        );
    }
}
