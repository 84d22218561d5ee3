//! Socket options the loop sets on the listener and on each accepted socket, with the kernel
//! behaviour each one relies on. Linux only; elsewhere every function is a harmless no-op.

use std::io;
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};

/// A listening socket that other processes may bind to the same address too (`--reuse-port`):
/// with `SO_REUSEPORT`, Linux hands each new connection to one of the listeners, so several
/// single-threaded nodes on one machine share a port, one core each. As `TcpListener::bind`,
/// plus that option (`SO_REUSEADDR` as mio sets it), with the deeper backlog.
pub fn bind_shared(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Raises the listen backlog (connections the kernel holds completed but not yet accepted) from
/// mio's 128, the same as std's, to 1024.
///
/// When a restarted server is met by every client reconnecting at once, or a busy one turns slow
/// for a moment, a full queue drops SYNs and each dropped client waits a whole second to
/// retransmit. The kernel clamps the value to `net.core.somaxconn` (4096 by default since Linux
/// 5.4), and the queue costs memory only while it holds connections. Linux takes a second
/// `listen()` on a listening socket as a change of backlog; best effort, as 128 still works.
pub fn deepen_backlog(listener: &TcpListener) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        const LISTEN_BACKLOG: libc::c_int = 1024;
        // SAFETY: a valid listening socket descriptor; listen() reads nothing from our memory.
        if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
            log::debug!(
                "cannot raise the listen backlog: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = listener;
}

/// Sets `TCP_NODELAY` on the listening socket, which Linux copies to every accepted socket;
/// `false` where that is not so (then each accepted socket gets it itself).
pub fn set_nodelay_for_accepted(listener: &TcpListener) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        set_int_option(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            1,
        )
        .is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = listener;
        false
    }
}

/// Lets an accepted socket's first ACKs ride on the server's answers instead of going out alone.
///
/// Linux starts every connection in quick-ACK mode: each of the first segments from the client
/// is acknowledged at once by a pure ACK, although the server answers every segment of the
/// opening within microseconds (the 101, the CONNECT reply, an ACK frame), and that answer
/// carries the acknowledgement anyway. `TCP_QUICKACK` = 0 starts the socket in the delayed-ACK
/// ("ping-pong") mode the kernel would reach on its own after the first exchanges; where no
/// answer follows within the delayed-ACK timeout (40 ms or less), the kernel sends the ACK and
/// returns to its usual adaptation. A client with `TCP_NODELAY` (Chromium sets it) never waits
/// for an ACK to send; one without it meets the Nagle/delayed-ACK wait it would meet anyway once
/// the kernel had switched modes on its own. It saves two segments per pair of friends set up,
/// which shows in the setup rate (BENCHMARKS.md).
/// Best effort: a failure changes only the packet count.
pub fn delay_first_acks(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Err(error) =
            set_int_option(stream.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_QUICKACK, 0)
        {
            log::debug!("cannot delay a connection's first ACKs: {error}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

#[cfg(target_os = "linux")]
fn set_int_option(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a socket descriptor the caller owns and a pointer to a c_int of the given size.
    let result = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::time::Duration;

    fn accept_one(listener: &TcpListener) -> TcpStream {
        loop {
            match listener.accept() {
                Ok((stream, _)) => return stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn accepted_sockets_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let inherited = set_nodelay_for_accepted(&listener);
        assert_eq!(inherited, cfg!(target_os = "linux"));
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let accepted = accept_one(&listener);
        if inherited {
            assert!(accepted.nodelay().unwrap());
        }
    }

    /// Fills the accept queue of a listener nobody accepts on: with mio's backlog of 128 the
    /// 130th connection would hang in SYN retransmits; with the deeper one all of them complete.
    #[test]
    #[cfg(target_os = "linux")]
    fn the_listen_backlog_holds_a_reconnection_burst() {
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        if somaxconn < 400 {
            eprintln!("net.core.somaxconn is {somaxconn}: the kernel caps any backlog below 400");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        deepen_backlog(&listener);
        let addr = listener.local_addr().unwrap();
        let waiting: Vec<_> = (0..400)
            .map(|n| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                    .unwrap_or_else(|e| panic!("connection {n} was not queued: {e}"))
            })
            .collect();
        assert_eq!(waiting.len(), 400);
    }

    /// `getsockopt(TCP_QUICKACK)` reads 1 while the socket is in quick-ACK mode.
    #[cfg(target_os = "linux")]
    fn quick_acks(stream: &TcpStream) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket and an out-pointer to a c_int whose size is passed along.
        let result = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(result, 0, "{}", io::Error::last_os_error());
        value
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn accepted_sockets_leave_quick_ack_mode() {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _clients = [
            std::net::TcpStream::connect(addr).unwrap(),
            std::net::TcpStream::connect(addr).unwrap(),
        ];
        let untouched = accept_one(&listener);
        let delayed = accept_one(&listener);
        delay_first_acks(&delayed);
        assert_eq!(
            quick_acks(&untouched),
            1,
            "a new connection starts in quick-ACK mode"
        );
        assert_eq!(quick_acks(&delayed), 0);
    }
}
