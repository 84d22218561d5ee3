//! Client addresses for the per-address limits: IPv6 sources in a network namespace of the
//! test's own, and WebSocket upgrades that carry extra headers (`X-Forwarded-For`).

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream};
use std::os::fd::FromRawFd;
use std::process::Command;

use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::protocol::WebSocketConfig;

use super::{Client, RECV_TIMEOUT, Server, connect_tcp_from};

/// The block every address of which is local inside [`in_network_namespace`]: the IPv6
/// documentation prefix (RFC 3849), so no real host is ever reached.
pub const LOCAL_IPV6_BLOCK: &str = "2001:db8::/32";

/// Runs `test` on a thread of its own that first moves into a new network namespace
/// (`unshare(CLONE_NEWNET)`, which only this thread and the processes it starts share), brings
/// its loopback interface up and routes all of [`LOCAL_IPV6_BLOCK`] to it as local
/// (`ip -6 route add local … dev lo`). There a socket with [`connect_tcp_from_v6`] can use any
/// address of the block as its source, and servers started by `test` see those addresses. The
/// namespace, its routes and its processes' sockets vanish with the thread; the host's network is
/// not touched.
///
/// Needs root (CAP_SYS_ADMIN) and `ip` (iproute2). Without root it returns `None` after printing
/// why the test was skipped; as root any failure to set the namespace up fails the test (CI runs
/// as root, so there a skip would hide a broken test).
pub fn in_network_namespace<T: Send + 'static>(
    test: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let thread = std::thread::spawn(move || -> Result<T, String> {
        // SAFETY: unshare changes only the calling thread's namespaces; no memory is involved.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET) failed: {}",
                io::Error::last_os_error()
            ));
        }
        run_ip(&["link", "set", "lo", "up"])?;
        run_ip(&["-6", "route", "add", "local", LOCAL_IPV6_BLOCK, "dev", "lo"])?;
        Ok(test())
    });
    match thread.join() {
        Ok(Ok(result)) => Some(result),
        Ok(Err(why)) => {
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            assert!(!root, "cannot set up a network namespace as root: {why}");
            eprintln!("SKIPPED: this test needs root for a network namespace ({why})");
            None
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn run_ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn sockaddr_in6(address: SocketAddrV6) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: address.port().to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: address.ip().octets(),
        },
        sin6_scope_id: 0,
    }
}

/// A TCP connection to `remote` whose source is `source`, which need not be an address of an
/// interface (`IPV6_FREEBIND`), only routed here as local, as in [`in_network_namespace`]. No
/// timeouts are set.
pub fn connect_tcp_from_v6(source: Ipv6Addr, remote: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V6(remote) = remote else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "IPv6 only"));
    };
    let local = sockaddr_in6(SocketAddrV6::new(source, 0, 0, 0));
    let remote = sockaddr_in6(remote);
    let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is fresh and handed to a TcpStream at once, which owns and closes
    // it on every path; setsockopt, bind and connect only read the values passed to them.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let as_sockaddr = |a: &libc::sockaddr_in6| (a as *const libc::sockaddr_in6).cast();
        if libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_FREEBIND,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
            || libc::bind(fd, as_sockaddr(&local), len) != 0
            || libc::connect(fd, as_sockaddr(&remote), len) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// A TCP connection to `server` from `source` (IPv4 from 127/8, IPv6 as [`connect_tcp_from_v6`]).
pub fn connect_tcp_from_ip(source: IpAddr, server: &Server) -> io::Result<TcpStream> {
    match source {
        IpAddr::V4(v4) => connect_tcp_from(v4, &server.addr()),
        IpAddr::V6(v6) => {
            let remote = server
                .addr()
                .parse()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))?;
            connect_tcp_from_v6(v6, remote)
        }
    }
}

/// How a WebSocket upgrade ended.
pub enum Upgrade {
    Opened(Box<Client>),
    /// The server answered with this HTTP status instead of 101.
    Refused(u16),
    /// The connection ended without an answer (closed at `accept`, for instance).
    Closed(String),
}

impl Upgrade {
    pub fn opened(self) -> Option<Client> {
        match self {
            Upgrade::Opened(client) => Some(*client),
            _ => None,
        }
    }

    /// What happened, for assertion messages.
    pub fn describe(&self) -> String {
        match self {
            Upgrade::Opened(_) => "opened".to_string(),
            Upgrade::Refused(status) => format!("refused with {status}"),
            Upgrade::Closed(why) => format!("closed: {why}"),
        }
    }
}

/// A WebSocket upgrade to `server` from `source`, with `headers` added to the request.
pub fn websocket_from(server: &Server, source: IpAddr, headers: &[(&str, &str)]) -> Upgrade {
    match connect_tcp_from_ip(source, server) {
        Ok(stream) => upgrade_on(stream, server, headers),
        Err(e) => Upgrade::Closed(format!("TCP connect: {e}")),
    }
}

/// Upgrades `stream` (connected to `server`) to a WebSocket client with small buffers, with
/// `headers` added to the request.
pub fn upgrade_on(stream: TcpStream, server: &Server, headers: &[(&str, &str)]) -> Upgrade {
    let mut request = match server.ws_url().into_client_request() {
        Ok(request) => request,
        Err(e) => panic!("bad URL {}: {e}", server.ws_url()),
    };
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        let value = HeaderValue::from_str(value).expect("a header value");
        request.headers_mut().append(name, value);
    }
    let ready = stream
        .set_read_timeout(Some(RECV_TIMEOUT))
        .and_then(|()| stream.set_nodelay(true));
    if let Err(e) = ready {
        return Upgrade::Closed(e.to_string());
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096);
    match tungstenite::client::client_with_config(request, stream, Some(config)) {
        Ok((ws, _response)) => Upgrade::Opened(Box::new(Client::with_short_reads(ws))),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Upgrade::Refused(response.status().as_u16())
        }
        Err(e) => Upgrade::Closed(e.to_string()),
    }
}
