//! What a connection reads from and writes to: plain TCP, or TLS over TCP, behind one type with
//! the non-blocking contract of a bare `mio::net::TcpStream` (see the [module docs](super)).

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::stream::TlsStream;

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
            Transport::Tls(tls) => tls.wants_write(),
        }
    }

    /// Ends a TLS session politely before the connection is dropped: queues `close_notify` and
    /// writes what the socket takes without waiting. Nothing to do for plain TCP.
    pub fn finish(&mut self) {
        if let Transport::Tls(tls) = self {
            tls.finish();
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(plain) => &mut plain.tcp,
            Transport::Tls(tls) => tls.tcp_mut(),
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
