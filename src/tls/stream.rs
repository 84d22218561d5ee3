//! The TLS side of a [`Transport`](super::Transport): the first byte picks TLS or a plain-HTTP refusal, then
//! rustls runs the handshake and the session over the non-blocking socket.
//!
//! Memory per connection is bounded: rustls's incoming buffer by rustls itself (one record, at
//! most 64 KiB while joining a handshake message), its outgoing record buffer by
//! [`TLS_BUFFER_LIMIT`]; the handshake's time is bounded by the connection's request-head
//! deadline, which runs from the moment of `accept`.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use crate::http;

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

impl TlsStream {
    /// A freshly accepted socket that will speak TLS with `config`; nothing is read until the
    /// loop says it is readable.
    pub(super) fn new(tcp: TcpStream, config: Arc<ServerConfig>) -> TlsStream {
        TlsStream {
            tcp,
            phase: Phase::Sniffing(config),
        }
    }

    pub(super) fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// Whether TLS records are waiting for the socket to become writable.
    pub(super) fn wants_write(&self) -> bool {
        match &self.phase {
            Phase::Tls(conn) => conn.wants_write(),
            Phase::Sniffing(_) | Phase::Refused => false,
        }
    }

    /// Queues `close_notify` and writes what the socket takes without waiting.
    pub(super) fn finish(&mut self) {
        if let Phase::Tls(conn) = &mut self.phase {
            conn.send_close_notify();
            let _ = write_records(&mut self.tcp, conn);
        }
    }

    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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

    pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.phase {
            Phase::Tls(conn) => write_plaintext(&mut self.tcp, conn, buf),
            // Only a deadline's error response (408) is written before a session exists, and it
            // can reach no one: refusing it makes the caller drop the connection.
            Phase::Sniffing(_) | Phase::Refused => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
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
/// (`Ok(false)`). Either side of a connection: the server's here, the cluster bus's client
/// links (`crate::bus`).
pub fn write_records<Side>(
    tcp: &mut TcpStream,
    conn: &mut rustls::ConnectionCommon<Side>,
) -> io::Result<bool> {
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

/// Answers a plain-HTTP request with the 400 that names the `https://` URL
/// ([`http::https_required`]), and half-closes.
///
/// The request is read (not only peeked) so that closing the socket later does not turn into a
/// reset that could destroy the answer before the client reads it.
fn refuse_plain_http(tcp: &mut TcpStream) {
    let mut head = [0u8; REFUSAL_READ];
    let received = tcp.read(&mut head).unwrap_or(0);
    let host = http::requested_host(head.get(..received).unwrap_or_default());
    let response = http::https_required(host.as_deref());
    // A fresh socket's send buffer is empty, so this small answer fits in one write; if it does
    // not, the client gets a truncated answer and the connection still closes.
    let _ = tcp.write(&[response.head.as_slice(), response.body].concat());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_files::{temp_dir, write_pair};
    use crate::tls::{TlsAcceptor, Transport};
    use rustls::ClientConnection;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    /// A server [`Transport`] and a rustls client over a real loopback connection, both
    /// non-blocking, with the handshake done.
    fn connected_pair() -> (Transport, ClientConnection, std::net::TcpStream) {
        let dir = temp_dir(&format!("pair-{:?}", std::thread::current().id()));
        let (cert, key) = write_pair(dir.path(), &["localhost"]);
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
}
