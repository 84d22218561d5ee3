//! The sockets: a non-blocking connect from a chosen source address, each connection's pending
//! frames written in one go, and reads into the shared buffer with any incomplete frame carried
//! over.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::FromRawFd;
use std::time::Instant;

use mio::net::TcpStream;

use super::{Driver, READ_CHUNK, kill};

impl Driver {
    pub(super) fn flush(&mut self, index: usize) {
        let client = &mut self.clients[index];
        let Some(stream) = client.stream.as_mut() else {
            return;
        };
        while client.out_pos < client.out.len() {
            match stream.write(&client.out[client.out_pos..]) {
                Ok(0) => {
                    self.faults.note("write returned 0");
                    kill(client);
                    return;
                }
                Ok(n) => client.out_pos += n,
                // Still connecting, or the socket is full: the next writable event continues.
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::NotConnected =>
                {
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.faults.note(format!("write: {}", e.kind()));
                    kill(client);
                    return;
                }
            }
        }
        client.out.clear();
        client.out_pos = 0;
    }

    pub(super) fn read(&mut self, index: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        loop {
            let client = &mut self.clients[index];
            let Some(stream) = client.stream.as_mut() else {
                break;
            };
            let kept = client.partial.len();
            if scratch.len() < kept + READ_CHUNK {
                scratch.resize(kept + READ_CHUNK, 0);
            }
            scratch[..kept].copy_from_slice(&client.partial);
            client.partial.clear();
            let result = stream.read(&mut scratch[kept..kept + READ_CHUNK]);
            let now = Instant::now();
            match result {
                Ok(0) => {
                    self.faults.note("the server closed a connection");
                    kill(&mut self.clients[index]);
                    break;
                }
                Ok(n) => {
                    let filled = kept + n;
                    let consumed = self.input(index, &scratch[..filled], now);
                    self.clients[index]
                        .partial
                        .extend_from_slice(&scratch[consumed..filled]);
                    self.last_progress = now;
                    // A short read emptied the socket; edge-triggered readiness reports any
                    // later data, so the extra `read` that would return WouldBlock is skipped.
                    if n < READ_CHUNK {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    client.partial.extend_from_slice(&scratch[..kept]);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    client.partial.extend_from_slice(&scratch[..kept]);
                }
                Err(e) => {
                    self.faults.note(format!("read: {}", e.kind()));
                    kill(client);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }
}

/// A non-blocking connect, from `source` when given (several loopback source addresses give
/// more ephemeral ports than one).
pub(super) fn connect(addr: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let (Some(source), SocketAddr::V4(target)) = (source, addr) else {
        return TcpStream::connect(addr);
    };
    // SAFETY: plain socket calls on a descriptor we own; it is closed on every error path and
    // handed to a TcpStream (which closes it on drop) on success.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fail = |fd| {
            let error = io::Error::last_os_error();
            libc::close(fd);
            Err(error)
        };
        let one: libc::c_int = 1;
        // The port is picked at connect time, per destination: far more ports to go round.
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let local = sockaddr(SocketAddrV4::new(source, 0));
        if libc::bind(
            fd,
            (&local as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            return fail(fd);
        }
        let remote = sockaddr(target);
        if libc::connect(
            fd,
            (&remote as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
            && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS)
        {
            return fail(fd);
        }
        Ok(TcpStream::from_std(std::net::TcpStream::from_raw_fd(fd)))
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}
